/*
 * test_crc32c.c - CRC32C against published vectors, against a bit-at-a-time
 * reference, hardware against software, and chaining.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "protocol/crc32c.h"

/* Lengths reaching the 24 KiB rounds of the three-stream path and beyond. */
#define BIG (1u << 20)

static uint64_t rng = 0x9e3779b97f4a7c15u;

/* xorshift64*: reproducible data without depending on rand()'s quality. */
static uint64_t next_random(void)
{
    rng ^= rng >> 12;
    rng ^= rng << 25;
    rng ^= rng >> 27;
    return rng * 0x2545f4914f6cdd1du;
}

static void fill_random(unsigned char *p, size_t n)
{
    while (n--)
        *p++ = (unsigned char)(next_random() >> 56);
}

/* The definition itself, one bit at a time; shares no code or table. */
static uint32_t crc_bitwise(uint32_t crc, const unsigned char *p, size_t n)
{
    int k;

    crc = ~crc;
    while (n--) {
        crc ^= *p++;
        for (k = 0; k < 8; k++)
            crc = crc & 1 ? (crc >> 1) ^ 0x82f63b78u : crc >> 1;
    }
    return ~crc;
}

static void test_impl_name(void **state)
{
    const char *name = mfd__crc32c_impl();

    (void)state;
    assert_true(strcmp(name, "sse4.2") == 0 || strcmp(name, "slice-by-8") == 0);
    print_message("crc32c uses %s\n", name);
}

static void check_vector(const void *buf, size_t len, uint32_t want)
{
    assert_int_equal(mfd__crc32c(0, buf, len), want);
    assert_int_equal(mfd__crc32c_sw(0, buf, len), want);
    assert_int_equal(crc_bitwise(0, buf, len), want);
}

static void test_known_vectors(void **state)
{
    unsigned char b[32];
    int i;

    (void)state;
    check_vector("123456789", 9, 0xe3069283u);
    memset(b, 0, sizeof(b));
    check_vector(b, sizeof(b), 0x8a9136aau);
    memset(b, 0xff, sizeof(b));
    check_vector(b, sizeof(b), 0x62a8ab43u);
    for (i = 0; i < 32; i++)
        b[i] = (unsigned char)i;
    check_vector(b, sizeof(b), 0x46dd794eu);
    check_vector(b, 0, 0);
    /* The empty buffer leaves any running value unchanged. */
    assert_int_equal(mfd__crc32c(0x12345678u, b, 0), 0x12345678u);
    assert_int_equal(mfd__crc32c_sw(0x12345678u, b, 0), 0x12345678u);
}

/* Software against the bitwise definition, every length to 300, all shifts. */
static void test_sw_vs_bitwise(void **state)
{
    unsigned char buf[300 + 8];
    size_t len, align;

    (void)state;
    fill_random(buf, sizeof(buf));
    for (align = 0; align < 8; align++)
        for (len = 0; len <= 300; len++)
            assert_int_equal(mfd__crc32c_sw(0, buf + align, len),
                             crc_bitwise(0, buf + align, len));
}

/*
 * The dispatcher against software, every length 0..4200 at every alignment
 * 0..15, fresh random data and a random starting value each time.
 */
static void test_hw_vs_sw(void **state)
{
    unsigned char *buf = malloc(4200 + 16);
    size_t len, align;

    (void)state;
    assert_non_null(buf);
    for (len = 0; len <= 4200; len++) {
        for (align = 0; align < 16; align++) {
            uint32_t seed = (uint32_t)next_random();

            fill_random(buf + align, len);
            assert_int_equal(mfd__crc32c(seed, buf + align, len),
                             mfd__crc32c_sw(seed, buf + align, len));
        }
    }
    free(buf);
}

/* Around the 3 x 8192-byte rounds, up to a megabyte, and vs the definition. */
static void test_hw_vs_sw_big(void **state)
{
    static const size_t lens[] = { 24575, 24576, 24577, 24576 + 768,
                                   24576 + 767, 2 * 24576 + 769, 100003, BIG };
    unsigned char *buf = malloc(BIG + 3);
    size_t i;

    (void)state;
    assert_non_null(buf);
    fill_random(buf, BIG + 3);
    for (i = 0; i < sizeof(lens) / sizeof(lens[0]); i++) {
        uint32_t want = crc_bitwise(0, buf + 3, lens[i]);

        assert_int_equal(mfd__crc32c(0, buf + 3, lens[i]), want);
        assert_int_equal(mfd__crc32c_sw(0, buf + 3, lens[i]), want);
    }
    free(buf);
}

/* crc(crc(0, a[0..k)), a[k..n)) == crc(0, a) for every split point k. */
static void test_chaining(void **state)
{
    unsigned char buf[1000];
    uint32_t whole, whole_sw;
    size_t k;

    (void)state;
    fill_random(buf, sizeof(buf));
    whole = mfd__crc32c(0, buf, sizeof(buf));
    whole_sw = mfd__crc32c_sw(0, buf, sizeof(buf));
    assert_int_equal(whole, whole_sw);
    for (k = 0; k <= sizeof(buf); k++) {
        assert_int_equal(
            mfd__crc32c(mfd__crc32c(0, buf, k), buf + k, sizeof(buf) - k),
            whole);
        assert_int_equal(mfd__crc32c_sw(mfd__crc32c_sw(0, buf, k), buf + k,
                                        sizeof(buf) - k),
                         whole);
        /* Mixed: the two implementations share one convention. */
        assert_int_equal(
            mfd__crc32c_sw(mfd__crc32c(0, buf, k), buf + k, sizeof(buf) - k),
            whole);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_impl_name),
        cmocka_unit_test(test_known_vectors),
        cmocka_unit_test(test_sw_vs_bitwise),
        cmocka_unit_test(test_hw_vs_sw),
        cmocka_unit_test(test_hw_vs_sw_big),
        cmocka_unit_test(test_chaining),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
