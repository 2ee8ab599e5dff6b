/*
 * bitmap.h - page bitmaps (received, dirty) as arrays of 64-bit words.
 *
 * The atomic variants are for bitmaps written by several channel threads at
 * once (the destination's receivedmap); the plain ones for a bitmap owned by
 * one thread.
 */
#ifndef MFD_RAM_BITMAP_H
#define MFD_RAM_BITMAP_H

#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>

#define MFD_BITMAP_WORDS(nbits) (((nbits) + 63) / 64)

static inline uint64_t *mfd__bitmap_new(uint64_t nbits)
{
    return calloc(MFD_BITMAP_WORDS(nbits) ? MFD_BITMAP_WORDS(nbits) : 1,
                  sizeof(uint64_t));
}

static inline bool mfd__bitmap_test(const uint64_t *map, uint64_t bit)
{
    return (map[bit / 64] >> (bit % 64)) & 1;
}

static inline void mfd__bitmap_set(uint64_t *map, uint64_t bit)
{
    map[bit / 64] |= UINT64_C(1) << (bit % 64);
}

static inline void mfd__bitmap_clear(uint64_t *map, uint64_t bit)
{
    map[bit / 64] &= ~(UINT64_C(1) << (bit % 64));
}

/* Tests a bit that other threads may be setting in the same word. */
static inline bool mfd__bitmap_test_atomic(const uint64_t *map, uint64_t bit)
{
    return (__atomic_load_n(&map[bit / 64], __ATOMIC_RELAXED) >> (bit % 64)) &
           1;
}

/* Sets the bit atomically; returns whether it was already set. */
static inline bool mfd__bitmap_test_and_set_atomic(uint64_t *map, uint64_t bit)
{
    uint64_t mask = UINT64_C(1) << (bit % 64);
    return __atomic_fetch_or(&map[bit / 64], mask, __ATOMIC_RELAXED) & mask;
}

static inline void mfd__bitmap_set_atomic(uint64_t *map, uint64_t bit)
{
    uint64_t mask = UINT64_C(1) << (bit % 64);
    /* Skip the locked instruction when the bit is already there. */
    if (!(__atomic_load_n(&map[bit / 64], __ATOMIC_RELAXED) & mask))
        __atomic_fetch_or(&map[bit / 64], mask, __ATOMIC_RELAXED);
}

/* Clears the bit atomically; returns whether it was set. */
static inline bool mfd__bitmap_test_and_clear_atomic(uint64_t *map,
                                                     uint64_t bit)
{
    uint64_t mask = UINT64_C(1) << (bit % 64);
    if (!(__atomic_load_n(&map[bit / 64], __ATOMIC_RELAXED) & mask))
        return false;
    return __atomic_fetch_and(&map[bit / 64], ~mask, __ATOMIC_RELAXED) & mask;
}

/* Sets bits [start, start + n) atomically, a word at a time. */
static inline void mfd__bitmap_set_range_atomic(uint64_t *map, uint64_t start,
                                                uint64_t n)
{
    while (n) {
        uint64_t w = start / 64, b = start % 64;
        uint64_t take = 64 - b < n ? 64 - b : n;
        uint64_t mask = take == 64 ? ~UINT64_C(0)
                                   : ((UINT64_C(1) << take) - 1) << b;
        __atomic_fetch_or(&map[w], mask, __ATOMIC_RELAXED);
        start += take;
        n -= take;
    }
}

/*
 * Takes the lowest run of set bits out of *bits (non-zero): returns its
 * length and its first bit's index in *first. Pages to copy come in runs.
 */
static inline uint64_t mfd__bits_take_run(uint64_t *bits, uint64_t *first)
{
    uint64_t f = (uint64_t)__builtin_ctzll(*bits);
    uint64_t x = *bits >> f;
    uint64_t run = ~x ? (uint64_t)__builtin_ctzll(~x) : 64;
    *bits = f + run >= 64 ? 0 : *bits & (~UINT64_C(0) << (f + run));
    *first = f;
    return run;
}

/* Number of set bits among the first nbits. */
static inline uint64_t mfd__bitmap_count(const uint64_t *map, uint64_t nbits)
{
    uint64_t n = 0, w, words = nbits / 64;
    for (w = 0; w < words; w++)
        n += (uint64_t)__builtin_popcountll(map[w]);
    if (nbits % 64)
        n += (uint64_t)__builtin_popcountll(
            map[words] & ((UINT64_C(1) << (nbits % 64)) - 1));
    return n;
}

/*
 * Index of the first set bit at or after `from`, or nbits if none. The
 * migration thread walks the dirty bitmap with this.
 */
static inline uint64_t mfd__bitmap_next_set(const uint64_t *map,
                                            uint64_t nbits, uint64_t from)
{
    if (from >= nbits)
        return nbits;
    uint64_t w = from / 64;
    uint64_t word = map[w] & (~UINT64_C(0) << (from % 64));
    for (;;) {
        if (word) {
            uint64_t bit = w * 64 + (uint64_t)__builtin_ctzll(word);
            return bit < nbits ? bit : nbits;
        }
        if (++w >= MFD_BITMAP_WORDS(nbits))
            return nbits;
        word = map[w];
    }
}

#endif
