/*
 * test_bitmap.c - every inline function of ram/bitmap.h against a bool
 * array, with emphasis on word boundaries and on the bits past nbits that
 * the last word carries.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <pthread.h>

#include <cmocka.h>

#include "ram/bitmap.h"

#define NBITS 333 /* Not a multiple of 64: the last word is partial. */
#define WORDS 8   /* Room for NBITS and a spare word to detect overruns. */

static uint64_t rng = 0x2545f4914f6cdd1du;

static uint64_t next_random(void)
{
    rng ^= rng >> 12;
    rng ^= rng << 25;
    rng ^= rng >> 27;
    return rng * 0x9e3779b97f4a7c15u;
}

/* The whole map against `ref`, for every bit of every word, not only nbits. */
static void check_map(const uint64_t *map, const bool *ref, uint64_t bits)
{
    uint64_t b;

    for (b = 0; b < bits; b++)
        if (mfd__bitmap_test(map, b) != ref[b])
            fail_msg("bit %llu: got %d, want %d", (unsigned long long)b,
                     mfd__bitmap_test(map, b), ref[b]);
}

static void test_new(void **state)
{
    uint64_t *map;
    uint64_t nbits;

    (void)state;
    assert_int_equal(MFD_BITMAP_WORDS(0), 0);
    assert_int_equal(MFD_BITMAP_WORDS(1), 1);
    assert_int_equal(MFD_BITMAP_WORDS(64), 1);
    assert_int_equal(MFD_BITMAP_WORDS(65), 2);
    /* Even an empty map is a valid pointer with one zero word. */
    map = mfd__bitmap_new(0);
    assert_non_null(map);
    assert_int_equal(map[0], 0);
    free(map);
    for (nbits = 1; nbits <= 200; nbits += 13) {
        uint64_t w;

        map = mfd__bitmap_new(nbits);
        assert_non_null(map);
        for (w = 0; w < MFD_BITMAP_WORDS(nbits); w++)
            assert_int_equal(map[w], 0);
        free(map);
    }
}

static void test_set_test_clear(void **state)
{
    uint64_t map[WORDS] = { 0 };
    bool ref[WORDS * 64] = { false };
    static const uint64_t edges[] = { 0, 1, 62, 63, 64, 65, 127, 128, 332 };
    int i;

    (void)state;
    /* Word edges first, then random bits, set and cleared in turn. */
    for (i = 0; i < (int)(sizeof(edges) / sizeof(edges[0])); i++) {
        mfd__bitmap_set(map, edges[i]);
        ref[edges[i]] = true;
        check_map(map, ref, WORDS * 64);
    }
    for (i = 0; i < 5000; i++) {
        uint64_t b = next_random() % NBITS;

        if (next_random() & 1) {
            mfd__bitmap_set(map, b);
            ref[b] = true;
        } else {
            mfd__bitmap_clear(map, b);
            ref[b] = false;
        }
        assert_int_equal(mfd__bitmap_test(map, b), ref[b]);
    }
    check_map(map, ref, WORDS * 64);
    /* Clearing a clear bit and setting a set bit change nothing. */
    mfd__bitmap_clear(map, 200);
    mfd__bitmap_clear(map, 200);
    ref[200] = false;
    mfd__bitmap_set(map, 63);
    mfd__bitmap_set(map, 63);
    ref[63] = true;
    check_map(map, ref, WORDS * 64);
}

static void test_atomic_single(void **state)
{
    uint64_t map[WORDS] = { 0 };
    bool ref[WORDS * 64] = { false };
    uint64_t b;

    (void)state;
    for (b = 0; b < NBITS; b += 3) {
        assert_false(mfd__bitmap_test_and_set_atomic(map, b));
        assert_true(mfd__bitmap_test_and_set_atomic(map, b));
        ref[b] = true;
    }
    check_map(map, ref, WORDS * 64);
    for (b = 1; b < NBITS; b += 5) {
        mfd__bitmap_set_atomic(map, b);
        mfd__bitmap_set_atomic(map, b);
        ref[b] = true;
    }
    check_map(map, ref, WORDS * 64);
}

/* Every (start, n) that stays in the map, including n = 0 and whole words. */
static void test_set_range_atomic(void **state)
{
    uint64_t start, n, b;

    (void)state;
    for (start = 0; start < 200; start++) {
        for (n = 0; start + n <= 5 * 64; n++) {
            uint64_t map[WORDS];
            bool ref[WORDS * 64] = { false };

            memset(map, 0, sizeof(map));
            /* A bit already set inside the range must stay set. */
            if (n) {
                mfd__bitmap_set(map, start + n / 2);
                ref[start + n / 2] = true;
            }
            mfd__bitmap_set_range_atomic(map, start, n);
            for (b = start; b < start + n; b++)
                ref[b] = true;
            check_map(map, ref, WORDS * 64);
        }
    }
}

/* The naive count of set bits below nbits. */
static uint64_t ref_count(const bool *ref, uint64_t nbits)
{
    uint64_t b, c = 0;

    for (b = 0; b < nbits; b++)
        c += ref[b];
    return c;
}

static void test_count(void **state)
{
    uint64_t map[WORDS];
    bool ref[WORDS * 64];
    uint64_t nbits, b;
    int round;

    (void)state;
    for (round = 0; round < 20; round++) {
        /* Round 0 all zero, round 1 all ones, then random densities. */
        for (b = 0; b < WORDS * 64; b++)
            ref[b] = round == 1 ||
                     (round > 1 && next_random() % 20 < (uint64_t)round);
        memset(map, 0, sizeof(map));
        for (b = 0; b < WORDS * 64; b++)
            if (ref[b])
                mfd__bitmap_set(map, b);
        /* Bits past nbits are set in the map and must not be counted. */
        for (nbits = 0; nbits <= (WORDS - 1) * 64; nbits++)
            assert_int_equal(mfd__bitmap_count(map, nbits),
                             ref_count(ref, nbits));
    }
}

/* The naive next set bit at or after `from` below nbits, else nbits. */
static uint64_t ref_next(const bool *ref, uint64_t nbits, uint64_t from)
{
    for (; from < nbits; from++)
        if (ref[from])
            return from;
    return nbits;
}

static void test_next_set(void **state)
{
    static const uint64_t sizes[] = { 1, 63, 64, 65, 127, 128, 129, 333, 448 };
    uint64_t map[WORDS];
    bool ref[WORDS * 64];
    uint64_t from, b;
    size_t s;
    int round;

    (void)state;
    for (round = 0; round < 30; round++) {
        for (b = 0; b < WORDS * 64; b++)
            ref[b] = round == 1 ||
                     (round > 1 && next_random() % 64 < (uint64_t)round);
        memset(map, 0, sizeof(map));
        for (b = 0; b < WORDS * 64; b++)
            if (ref[b])
                mfd__bitmap_set(map, b);
        for (s = 0; s < sizeof(sizes) / sizeof(sizes[0]); s++) {
            uint64_t nbits = sizes[s];

            /* from >= nbits, far beyond included, always gives nbits. */
            for (from = 0; from <= nbits + 70; from++)
                assert_int_equal(mfd__bitmap_next_set(map, nbits, from),
                                 ref_next(ref, nbits, from));
            assert_int_equal(mfd__bitmap_next_set(map, nbits, UINT64_MAX),
                             nbits);
        }
    }
}

/*
 * Bits set only past nbits, in the last partial word, are never found or
 * counted. The maps come from mfd__bitmap_new at their exact size, so ASan
 * and valgrind report any read of the word after the last.
 */
static void test_next_set_ignores_tail(void **state)
{
    uint64_t *map = mfd__bitmap_new(100), *full = mfd__bitmap_new(128);
    uint64_t from;

    (void)state;
    assert_non_null(map);
    assert_non_null(full);
    mfd__bitmap_set(map, 100);
    mfd__bitmap_set(map, 127);
    for (from = 0; from <= 130; from++)
        assert_int_equal(mfd__bitmap_next_set(map, 100, from), 100);
    assert_int_equal(mfd__bitmap_count(map, 100), 0);
    assert_int_equal(mfd__bitmap_count(map, 101), 1);
    assert_int_equal(mfd__bitmap_next_set(map, 101, 0), 100);

    /* A whole last word: the search ends without a word past it. */
    for (from = 0; from <= 130; from++)
        assert_int_equal(mfd__bitmap_next_set(full, 128, from), 128);
    assert_int_equal(mfd__bitmap_count(full, 128), 0);
    mfd__bitmap_set(full, 127);
    assert_int_equal(mfd__bitmap_next_set(full, 128, 0), 127);
    assert_int_equal(mfd__bitmap_next_set(full, 128, 127), 127);
    assert_int_equal(mfd__bitmap_next_set(full, 127, 0), 127);
    assert_int_equal(mfd__bitmap_count(full, 128), 1);
    free(map);
    free(full);
}

#define THREADS 4
#define CONTENDED 4096

struct claim_arg {
    uint64_t *map;
    uint64_t won;
};

/* Every thread tries to claim every bit; each bit must be won once. */
static void *claim_all(void *p)
{
    struct claim_arg *a = p;
    uint64_t b;

    for (b = 0; b < CONTENDED; b++)
        if (!mfd__bitmap_test_and_set_atomic(a->map, b))
            a->won++;
    return NULL;
}

static void test_test_and_set_threads(void **state)
{
    uint64_t *map = mfd__bitmap_new(CONTENDED);
    struct claim_arg args[THREADS];
    pthread_t tid[THREADS];
    uint64_t total = 0;
    int i;

    (void)state;
    assert_non_null(map);
    for (i = 0; i < THREADS; i++) {
        args[i].map = map;
        args[i].won = 0;
        assert_int_equal(pthread_create(&tid[i], NULL, claim_all, &args[i]), 0);
    }
    for (i = 0; i < THREADS; i++) {
        assert_int_equal(pthread_join(tid[i], NULL), 0);
        total += args[i].won;
    }
    assert_int_equal(total, CONTENDED);
    assert_int_equal(mfd__bitmap_count(map, CONTENDED), CONTENDED);
    free(map);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_new),
        cmocka_unit_test(test_set_test_clear),
        cmocka_unit_test(test_atomic_single),
        cmocka_unit_test(test_set_range_atomic),
        cmocka_unit_test(test_count),
        cmocka_unit_test(test_next_set),
        cmocka_unit_test(test_next_set_ignores_tail),
        cmocka_unit_test(test_test_and_set_threads),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
