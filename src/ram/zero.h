/*
 * zero.h - buffer_is_zero with SIMD variants chosen once at start-up.
 *
 * The hottest loop of a sender: every page of every pass is tested here in
 * mode multifd (on the channel threads) and legacy (on the migration thread).
 */
#ifndef MFD_RAM_ZERO_H
#define MFD_RAM_ZERO_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef bool (*mfd__is_zero_fn)(const void *buf, size_t len);

/* A variant of the test; `usable` is false when the CPU lacks it. */
typedef struct {
    const char *name; /* "avx512", "avx2", "sse2", "scalar" */
    mfd__is_zero_fn fn;
    bool usable;
} mfd__zero_variant;

/*
 * True when all `len` bytes at `buf` are zero. Any alignment and any length
 * (0 returns true). Dispatches to the best variant the CPU supports; the
 * choice is made once, on first use or by a constructor, thread-safely.
 */
bool mfd__buffer_is_zero(const void *buf, size_t len);

/* Name of the variant mfd__buffer_is_zero uses. */
const char *mfd__zero_variant_name(void);

/*
 * All variants, best first, scalar last; for tests and benchmarks.
 * Returns the count and sets *out to a static array.
 */
int mfd__zero_variants(const mfd__zero_variant **out);

/*
 * XXH3-64 of `len` bytes at `host` (feature VERIFY), taking the pages of
 * `page_size` bytes that `map` marks as zero (bit set when `set_is_zero`,
 * clear otherwise; `map` may be NULL: read everything) as the zeros they
 * are instead of reading them: reading memory never written faults it in
 * (or fills a sparse file's holes with page cache). page_size at most
 * 65536.
 */
uint64_t mfd__digest_known_zero(const uint8_t *host, uint64_t len,
                                uint64_t page_size, const uint64_t *map,
                                bool set_is_zero);

#endif
