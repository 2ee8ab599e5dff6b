/*
 * test_zero.c - every buffer_is_zero variant the CPU can run, at every
 * alignment within a cache line and every length up to 1024, plus a page.
 *
 * The bytes around the tested range are non-zero, so a variant that reads
 * outside [buf, buf + len) answers "not zero" and fails. Exact-size heap
 * buffers let ASan and valgrind report over-reads past the end directly.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

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

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_variants_listed),
        cmocka_unit_test(test_len0),
        cmocka_unit_test(test_alignments_lengths),
        cmocka_unit_test(test_single_byte_in_page),
        cmocka_unit_test(test_exact_allocation),
    };

    return cmocka_run_group_tests(tests, setup, NULL);
}
