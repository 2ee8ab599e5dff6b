# The README's commands. CMake does the building; this file only wraps it.
BUILD      ?= build
ASAN_BUILD ?= build-asan
JOBS       ?= $(shell nproc)
CTEST_ARGS ?= --output-on-failure -j$(JOBS)
BENCH_ARGS ?= --size 1G --content random --channels 2 --runs 3

.PHONY: all deps build demo check check-asan check-tsan test bench bench-live bench-methods bench-snapshot bench-colo bench-tls bench-qemu fuzz tsan install clean

all: build

deps:
	@sh scripts/install-deps.sh

$(BUILD)/build.ninja: CMakeLists.txt | deps
	cmake -S . -B $(BUILD) -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo

build: deps $(BUILD)/build.ninja
	cmake --build $(BUILD) -j$(JOBS)

demo: build
	$(BUILD)/tools/multifd demo

# All tests, on the normal build and on the ASan+UBSan build, then a short
# run of every fuzz target.
check: build
	cd $(BUILD) && ctest $(CTEST_ARGS)
	$(MAKE) --no-print-directory check-asan
	sh scripts/fuzz.sh $(FUZZ_SMOKE)

check-asan: deps
	cmake -S . -B $(ASAN_BUILD) -G Ninja -DCMAKE_BUILD_TYPE=Debug -DMFD_SANITIZE=ON
	cmake --build $(ASAN_BUILD) -j$(JOBS)
	cd $(ASAN_BUILD) && ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 \
	  UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 ctest $(CTEST_ARGS)

# libFuzzer targets (fuzz/, clang): FUZZ_TIME seconds each; `make check`
# runs them for FUZZ_SMOKE seconds.
FUZZ_TIME  ?= 300
FUZZ_SMOKE ?= 10
fuzz: build
	sh scripts/fuzz.sh $(FUZZ_TIME)

# ThreadSanitizer, run by hand (not part of check: slow, and it needs the
# whole address space layout TSan wants).
check-tsan: deps
	cmake -S . -B build-tsan -G Ninja -DCMAKE_BUILD_TYPE=Debug -DMFD_TSAN=ON
	cmake --build build-tsan -j$(JOBS)
	# source-killed and the uffd-race cases send one page on several
	# channels in one pass: the peer's race on that page's memory, which
	# ThreadSanitizer rightly reports.
	cd build-tsan && TSAN_OPTIONS=halt_on_error=1:suppressions=$(CURDIR)/tests/tsan.supp \
	  HOSTILE_SKIP='^source-killed' PEER_SKIP='^uffd-race' ctest $(CTEST_ARGS)

test: check

tsan: check-tsan

bench: build
	$(BUILD)/tools/multifd bench $(BENCH_ARGS)

# Live pre-copy: downtime and total time against dirty rate and channels.
bench-live: build
	bash bench/live.sh $(BUILD)/tools/multifd

# Compression methods and zero-copy: GB/s and ratio per content and channels.
bench-methods: build
	bash bench/methods.sh $(BUILD)/tools/multifd

# Snapshot files: save/restore GB/s per channels and direct-io, against dd
# (root: it drops the page cache before cold restores).
bench-snapshot: build
	bash bench/snapshot.sh $(BUILD)/tools/multifd

# COLO checkpoints: transfer and pause times, idle and under load, 1 vs 4
# channels, staging on and off (about 15 minutes).
bench-colo: build
	bash bench/colo.sh $(BUILD)/tools/multifd

# TLS vs plaintext GB/s for 1, 2, 4 channels (random content).
bench-tls: build
	bash bench/tls.sh $(BUILD)/tools/multifd

# Side by side with QEMU 7.2 and 10.0.2 (fetched by the script); QUICK=1 for
# the 1 GiB subset. Writes docs/benchmarks/qemu.md and qemu.png.
bench-qemu: build
	QUICK=$(QUICK) bash bench/qemu/bench-qemu.sh $(BUILD)/tools/multifd

install: build
	cmake --install $(BUILD)

clean:
	rm -rf $(BUILD) $(ASAN_BUILD) build-tsan
