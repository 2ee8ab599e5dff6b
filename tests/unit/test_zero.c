/*
 * test_zero.c - every buffer_is_zero variant the CPU can run, at every
 * alignment within a cache line and every length up to 1024, plus a page.
 *
 * The bytes around the tested range are non-zero, so a variant that reads
 * outside [buf, buf + len) answers "not zero" and fails. Exact-size heap
 * buffers let ASan and valgrind report over-reads past the end directly.
 */
#include <errno.h>
#include <fcntl.h>
#include <linux/userfaultfd.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/auxv.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <cmocka.h>

#include "ram/bitmap.h"
#include "ram/pagemap.h"
#include "ram/untouched.h"
#include "ram/zero.h"

#define PAGE 4096
#define GUARD 0xa5

static const mfd__zero_variant *vars;
static int nvars;

static int setup(void **state)
{
    (void)state;
    nvars = mfd__zero_variants(&vars);
    return nvars >= 1 ? 0 : -1;
}

/* Checks every usable variant, and the dispatcher, against `expect`. */
static void check_all(const unsigned char *p, size_t len, bool expect,
                      size_t align)
{
    int i;

    for (i = 0; i < nvars; i++) {
        if (!vars[i].usable)
            continue;
        if (vars[i].fn(p, len) != expect)
            fail_msg("%s: align %zu len %zu: got %d, want %d", vars[i].name,
                     align, len, !expect, expect);
    }
    if (mfd__buffer_is_zero(p, len) != expect)
        fail_msg("dispatch: align %zu len %zu: got %d, want %d", align, len,
                 !expect, expect);
}

static void test_variants_listed(void **state)
{
    int i, best = -1;

    (void)state;
    assert_string_equal(vars[nvars - 1].name, "scalar");
    assert_true(vars[nvars - 1].usable);
    for (i = 0; i < nvars; i++) {
        assert_non_null(vars[i].fn);
        if (vars[i].usable && best < 0)
            best = i;
    }
    assert_string_equal(mfd__zero_variant_name(), vars[best].name);
    print_message("variants:");
    for (i = 0; i < nvars; i++)
        print_message(" %s%s", vars[i].name, vars[i].usable ? "" : "(no)");
    print_message("; dispatch uses %s\n", mfd__zero_variant_name());
}

static void test_len0(void **state)
{
    unsigned char b = 0xff;

    (void)state;
    check_all(&b, 0, true, 0);
}

/* One non-zero byte at `pos` of an otherwise zero range. */
static void check_one_byte(unsigned char *p, size_t len, size_t pos,
                           size_t align)
{
    p[pos] = 1;
    check_all(p, len, false, align);
    p[pos] = 0;
}

/*
 * Alignments 0..63 relative to a page and lengths 1..1024 and 4096, with
 * guard bytes before and after: all zero, then one non-zero byte. Up to 320
 * bytes (the small-length paths and every tail shape of a 256-byte loop)
 * the byte goes to every position; beyond, to the first, middle and last,
 * and to a spread of positions in the tail, where the loads change shape.
 */
static void test_alignments_lengths(void **state)
{
    size_t total = 3 * PAGE, align, len, pos;
    unsigned char *mem = aligned_alloc(PAGE, total);

    (void)state;
    assert_non_null(mem);
    memset(mem, GUARD, total);
    for (align = 0; align < 64; align++) {
        for (len = 1; len <= PAGE; len = len == 1024 ? PAGE : len + 1) {
            unsigned char *p = mem + PAGE + align;

            memset(p, 0, len);
            check_all(p, len, true, align);
            if (len <= 320) {
                for (pos = 0; pos < len; pos++)
                    check_one_byte(p, len, pos, align);
            } else {
                check_one_byte(p, len, 0, align);
                check_one_byte(p, len, len / 2, align);
                for (pos = len - 257; pos < len; pos += 32)
                    check_one_byte(p, len, pos, align);
            }
            memset(p, GUARD, len);
        }
    }
    free(mem);
}

/* Each variant must find one 0x01 or 0x80 byte at any offset of a page. */
static void test_single_byte_in_page(void **state)
{
    unsigned char *page = aligned_alloc(PAGE, PAGE);
    static const unsigned char vals[2] = { 0x01, 0x80 };
    size_t pos;
    int v;

    (void)state;
    assert_non_null(page);
    memset(page, 0, PAGE);
    check_all(page, PAGE, true, 0);
    for (v = 0; v < 2; v++) {
        for (pos = 0; pos < PAGE; pos++) {
            page[pos] = vals[v];
            check_all(page, PAGE, false, 0);
            page[pos] = 0;
        }
    }
    free(page);
}

/*
 * Buffers allocated at exactly their length, so that ASan or valgrind
 * flags any load past the end even where the guard test cannot see it.
 */
static void exact_one(size_t len)
{
    size_t align;

    for (align = 0; align < 16; align++) {
        unsigned char *mem = malloc(align + len ? align + len : 1);

        assert_non_null(mem);
        memset(mem, 0, align + len);
        check_all(mem + align, len, true, align);
        if (len) {
            mem[align + len - 1] = 0x80;
            check_all(mem + align, len, false, align);
        }
        free(mem);
    }
}

static void test_exact_allocation(void **state)
{
    size_t len;

    (void)state;
    for (len = 0; len <= 300; len++)
        exact_one(len);
    exact_one(PAGE);
    exact_one(PAGE + 1);
}

/* ---- untouched pages (ram/untouched.h) --------------------------------- */

#define MIB (1u << 20)

/* Whether the kernel has PAGEMAP_SCAN (Linux 6.7): an empty scan answers. */
static bool have_pagemap_scan(void)
{
    struct pm_scan_arg arg = {.size = sizeof(arg)};
    int fd = open("/proc/self/pagemap", O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return false;
    int rc = ioctl(fd, PAGEMAP_SCAN, &arg);
    int e = errno;
    close(fd);
    return rc >= 0 || e != ENOTTY;
}

#define NEED_PAGEMAP_SCAN()                                                     \
    do {                                                                        \
        if (!have_pagemap_scan()) {                                             \
            print_message("SKIP: no PAGEMAP_SCAN (Linux 6.7) in this kernel\n"); \
            skip();                                                             \
        }                                                                       \
    } while (0)

/* len bytes of private anonymous memory aligned to 2 MiB. */
static uint8_t *map_aligned(size_t len, int advice)
{
    uint8_t *p = mmap(NULL, len + 2 * MIB, PROT_READ | PROT_WRITE,
                      MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    assert_true(p != MAP_FAILED);
    uint8_t *a = (uint8_t *)(((uintptr_t)p + 2 * MIB - 1) & ~(uintptr_t)(2 * MIB - 1));
    if (a > p)
        munmap(p, (size_t)(a - p));
    munmap(a + len, (size_t)(p + 2 * MIB - a));
    assert_int_equal(madvise(a, len, advice), 0);
    return a;
}

/* The scan of [p, p + len) in pages of ps, checked page by page. */
static void expect_scan(const uint8_t *p, size_t len, uint32_t ps,
                        const bool *want)
{
    uint64_t pages = len / ps;
    uint64_t *map = mfd__bitmap_new(pages);
    assert_non_null(map);
    int64_t n = mfd__untouched_scan(p, len, ps, map);
    int64_t expect = 0;
    for (uint64_t i = 0; i < pages; i++) {
        expect += want[i];
        if (mfd__bitmap_test(map, i) != want[i])
            fail_msg("page size %u: page %llu: untouched %d, want %d", ps,
                     (unsigned long long)i, mfd__bitmap_test(map, i), want[i]);
    }
    assert_int_equal(n, expect);
    free(map);
}

/*
 * 4 KiB pages: never-touched, read-only (the zero page) and MADV_DONTNEED
 * pages are untouched; written pages are not, even one written with zeros
 * (it has a page of its own, which must be read).
 */
static void test_untouched_small_pages(void **state)
{
    (void)state;
    NEED_PAGEMAP_SCAN();
    size_t len = 4 * MIB, pages = len / PAGE;
    uint8_t *p = map_aligned(len, MADV_NOHUGEPAGE);
    bool *want = malloc(pages);
    assert_non_null(want);
    memset(want, 1, pages);
    p[0] = 1;
    want[0] = 0;
    p[5 * PAGE + 4095] = 1;
    want[5] = 0;
    memset(p + 6 * PAGE, 0, PAGE); /* zeros, but a page of its own */
    want[6] = 0;
    volatile uint8_t sink = p[10 * PAGE]; /* read: maps the zero page */
    (void)sink;
    for (size_t i = 100; i < 200; i++) {
        p[i * PAGE] = 7;
        want[i] = 0;
    }
    assert_int_equal(madvise(p + 150 * PAGE, 10 * PAGE, MADV_DONTNEED), 0);
    for (size_t i = 150; i < 160; i++)
        want[i] = 1;
    expect_scan(p, len, PAGE, want);

    /* 16 KiB pages: untouched only when all four small pages are. */
    bool want16[256];
    for (size_t i = 0; i < len / (4 * PAGE); i++)
        want16[i] = want[4 * i] && want[4 * i + 1] && want[4 * i + 2] &&
                    want[4 * i + 3];
    expect_scan(p, len, 4 * PAGE, want16);

    /* A range that starts and ends inside the mapping. */
    expect_scan(p + 96 * PAGE, 128 * PAGE, PAGE, want + 96);

    /* Three mappings after an mprotect in the middle: one range still. */
    assert_int_equal(mprotect(p + MIB, MIB, PROT_READ), 0);
    expect_scan(p, len, PAGE, want);
    /* Under 1/32 of the pages untouched: not worth judging, all read. */
    uint8_t *q = map_aligned(MIB, MADV_NOHUGEPAGE);
    memset(q, 1, MIB - 7 * PAGE);
    bool none[256] = {false};
    expect_scan(q, MIB, PAGE, none);
    q[MIB - 7 * PAGE] = 1; /* 6 of 256 untouched: still under */
    expect_scan(q, MIB, PAGE, none);
    munmap(q, MIB);
    memset(q = map_aligned(MIB, MADV_NOHUGEPAGE), 1, MIB - 8 * PAGE);
    bool last8[256] = {false};
    for (int i = 248; i < 256; i++)
        last8[i] = true; /* 8 of 256: judged */
    expect_scan(q, MIB, PAGE, last8);
    munmap(q, MIB);

    /* A hole in the range: not judged. */
    munmap(p + 2 * MIB, PAGE);
    uint64_t *map = mfd__bitmap_new(pages);
    assert_int_equal(mfd__untouched_scan(p, len, PAGE, map), -1);
    free(map);
    free(want);
    munmap(p, len);
}

/* Huge pages: the huge zero page of a read-only 2 MiB counts, data not. */
static void test_untouched_huge_pages(void **state)
{
    (void)state;
    NEED_PAGEMAP_SCAN();
    size_t len = 8 * MIB, pages = len / PAGE;
    uint8_t *p = map_aligned(len, MADV_HUGEPAGE);
    volatile uint8_t sink = p[0]; /* the huge zero page, if THP is on */
    (void)sink;
    p[2 * MIB + 12345] = 1; /* a whole huge page, or one small page */
    uint64_t *map = mfd__bitmap_new(pages);
    assert_non_null(map);
    int64_t n = mfd__untouched_scan(p, len, PAGE, map);
    /* The written page is never untouched; the last 4 MiB always are. */
    assert_false(mfd__bitmap_test(map, (2 * MIB + 12345) / PAGE));
    for (size_t i = 4 * MIB / PAGE; i < pages; i++)
        assert_true(mfd__bitmap_test(map, i));
    for (size_t i = 0; i < 2 * MIB / PAGE; i++)
        assert_true(mfd__bitmap_test(map, i));
    assert_true(n >= (int64_t)(pages - 2 * MIB / PAGE));
    assert_true(n <= (int64_t)(pages - 1));
    free(map);
    munmap(p, len);
}

/* Memory whose empty page table entries may stand for data: not judged. */
static void test_untouched_refused(void **state)
{
    (void)state;
    NEED_PAGEMAP_SCAN();
    size_t len = MIB;
    uint64_t *map = mfd__bitmap_new(len / PAGE);
    assert_non_null(map);

    /* Shared anonymous memory (shmem behind it). */
    uint8_t *p = mmap(NULL, len, PROT_READ | PROT_WRITE,
                      MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    assert_true(p != MAP_FAILED);
    assert_int_equal(mfd__untouched_scan(p, len, PAGE, map), -1);
    munmap(p, len);

    /* A memfd with data, mapped private and never touched: a file's pages. */
    int fd = memfd_create("mfd-untouched", MFD_CLOEXEC);
    assert_true(fd >= 0);
    uint8_t buf[PAGE];
    memset(buf, 0x5a, sizeof(buf));
    for (size_t o = 0; o < len; o += PAGE)
        assert_int_equal(pwrite(fd, buf, PAGE, (off_t)o), PAGE);
    p = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE, fd, 0);
    assert_true(p != MAP_FAILED);
    assert_int_equal(mfd__untouched_scan(p, len, PAGE, map), -1);
    assert_int_equal(p[len - 1], 0x5a);
    munmap(p, len);
    close(fd);

    /* Anonymous memory a userfaultfd serves missing pages for. */
    p = map_aligned(len, MADV_NOHUGEPAGE);
    int ufd = (int)syscall(SYS_userfaultfd, O_CLOEXEC | O_NONBLOCK);
    if (ufd >= 0) {
        struct uffdio_api api = {.api = UFFD_API};
        struct uffdio_register r = {
            .range = {.start = (uintptr_t)p, .len = len},
            .mode = UFFDIO_REGISTER_MODE_MISSING};
        assert_int_equal(ioctl(ufd, UFFDIO_API, &api), 0);
        assert_int_equal(ioctl(ufd, UFFDIO_REGISTER, &r), 0);
        assert_int_equal(mfd__untouched_scan(p, len, PAGE, map), -1);
        close(ufd);
        /* The registration ends with the userfaultfd: judged again. */
        assert_int_equal(mfd__untouched_scan(p, len, PAGE, map),
                         (int64_t)(len / PAGE));
    } else {
        print_message("note: no userfaultfd here (%s): that case not run\n",
                      strerror(errno));
    }
    munmap(p, len);

    /* A special mapping: private, no file, but filled in when touched. */
    uintptr_t vdso = (uintptr_t)getauxval(AT_SYSINFO_EHDR);
    if (vdso) {
        mfd__range r = {vdso, vdso + PAGE};
        bool plain = true;
        assert_int_equal(mfd__untouched_plain(&r, 1, &plain), 0);
        assert_false(plain);
    }

    /* Several ranges in one reading: each judged on its own. */
    uint8_t *a = map_aligned(MIB, MADV_NOHUGEPAGE);
    uint8_t *sh = mmap(NULL, MIB, PROT_READ | PROT_WRITE,
                       MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    uint8_t *c = map_aligned(2 * MIB, MADV_NOHUGEPAGE);
    assert_true(sh != MAP_FAILED);
    assert_int_equal(mprotect(c + MIB, PAGE, PROT_READ), 0);
    mfd__range rs[4] = {{(uintptr_t)c, (uintptr_t)c + 2 * MIB},
                        {(uintptr_t)sh, (uintptr_t)sh + MIB},
                        {(uintptr_t)a, (uintptr_t)a + MIB},
                        {(uintptr_t)a + PAGE, (uintptr_t)a + 2 * PAGE}};
    bool plain[4];
    assert_int_equal(mfd__untouched_plain(rs, 4, plain), 0);
    assert_true(plain[0]);
    assert_false(plain[1]);
    assert_true(plain[2]);
    assert_true(plain[3]);
    munmap(a, MIB);
    munmap(sh, MIB);
    munmap(c, 2 * MIB);
    free(map);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_untouched_small_pages),
        cmocka_unit_test(test_untouched_huge_pages),
        cmocka_unit_test(test_untouched_refused),
        cmocka_unit_test(test_variants_listed),
        cmocka_unit_test(test_len0),
        cmocka_unit_test(test_alignments_lengths),
        cmocka_unit_test(test_single_byte_in_page),
        cmocka_unit_test(test_exact_allocation),
    };

    return cmocka_run_group_tests(tests, setup, NULL);
}
