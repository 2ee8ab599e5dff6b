/*
 * crc32c.c - CRC32C (Castagnoli, reflected polynomial 0x82f63b78).
 *
 * Two implementations compute the same function. With SSE4.2 the crc32
 * instruction folds 8 bytes per step; its latency is three cycles but it can
 * start one per cycle, so long buffers are cut into three blocks checksummed
 * as interleaved streams and the three results are then combined. Without
 * it, slice-by-8 folds 8 bytes per step through eight 256-entry tables.
 *
 * Internally both work on the raw register: the public calls invert it on
 * entry and on exit, which is what makes chaining calls equal one call.
 *
 * Combining streams rests on the CRC register being linear over GF(2):
 * running register x over block B gives crc(x, 0^|B|) ^ crc(0, B), and
 * crc(x, 0^n), "x shifted by n zero bytes", is a fixed linear map of x. For
 * the two block sizes used, that map is stored as four 256-entry tables, one
 * per byte of x, so a shift costs four lookups.
 */
#include "protocol/crc32c.h"

#include <pthread.h>
#include <stdint.h>
#include <string.h>

#if defined(__x86_64__)
#include <immintrin.h>
#endif

#define POLY UINT32_C(0x82f63b78)

/*
 * Block sizes of the three streams. A long round covers 24 KiB and a short
 * round 768 bytes; each round ends with two shifts (eight lookups), small
 * next to the 96 or 3072 crc32 steps of the round.
 */
#define LONG_BLOCK 8192
#define SHORT_BLOCK 256

/* sw[k][b]: the register after byte b followed by k zero bytes. */
static uint32_t sw[8][256];

/*
 * A shift by a fixed number of zero bytes, one table per byte of x. It is a
 * struct so that it can be passed as const without a pedantic warning.
 */
struct shift_table {
    uint32_t t[4][256];
};

static struct shift_table shift_long, shift_short;

static pthread_once_t crc_once = PTHREAD_ONCE_INIT;

/* The register is little-endian in memory whatever the host's byte order. */
static inline uint64_t load64le(const unsigned char *p)
{
    uint64_t v;
    memcpy(&v, p, sizeof(v));
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_BIG_ENDIAN__
    v = __builtin_bswap64(v);
#endif
    return v;
}

/*
 * The high half of each word is split off before the register is mixed in,
 * and its four lookups are XORed first, so they do not wait for the
 * previous step: only the four of the low half are on the loop-carried
 * path. Mixing the register into the whole 64-bit word let the compiler
 * chain all eight behind it, about 1.3x slower.
 */
static uint32_t sw_raw(uint32_t c, const unsigned char *p, size_t len)
{
    while (len >= 8) {
        uint64_t w = load64le(p);
        uint32_t lo = (uint32_t)w ^ c, hi = (uint32_t)(w >> 32);
        uint32_t h = (sw[3][hi & 0xff] ^ sw[2][(hi >> 8) & 0xff]) ^
                     (sw[1][(hi >> 16) & 0xff] ^ sw[0][hi >> 24]);

        c = h ^ ((sw[7][lo & 0xff] ^ sw[6][(lo >> 8) & 0xff]) ^
                 (sw[5][(lo >> 16) & 0xff] ^ sw[4][lo >> 24]));
        p += 8;
        len -= 8;
    }
    while (len--)
        c = (c >> 8) ^ sw[0][(c ^ *p++) & 0xff];
    return c;
}

/*
 * A linear map of 32-bit registers, given by the images of its 32 unit
 * vectors: applying it XORs the columns selected by the bits of x.
 */
static uint32_t map_apply(const uint32_t col[32], uint32_t x)
{
    uint32_t r = 0;
    int j;

    for (j = 0; x; j++, x >>= 1)
        if (x & 1)
            r ^= col[j];
    return r;
}

/*
 * Builds the shift tables for LONG_BLOCK and SHORT_BLOCK zero bytes by
 * squaring the one-byte shift; both sizes are powers of two.
 */
static void shift_tables_init(void)
{
    uint32_t col[32], sq[32];
    size_t n;
    int j, k, b;

    /* One zero byte moves the register down 8 bits through table 0. */
    for (j = 0; j < 32; j++) {
        uint32_t x = UINT32_C(1) << j;
        col[j] = (x >> 8) ^ sw[0][x & 0xff];
    }
    for (n = 1; n < LONG_BLOCK; n *= 2) {
        if (n == SHORT_BLOCK)
            for (k = 0; k < 4; k++)
                for (b = 0; b < 256; b++)
                    shift_short.t[k][b] = map_apply(col, (uint32_t)b << 8 * k);
        for (j = 0; j < 32; j++)
            sq[j] = map_apply(col, col[j]);
        memcpy(col, sq, sizeof(col));
    }
    for (k = 0; k < 4; k++)
        for (b = 0; b < 256; b++)
            shift_long.t[k][b] = map_apply(col, (uint32_t)b << 8 * k);
}

static inline uint32_t shift(const struct shift_table *s, uint32_t x)
{
    return s->t[0][x & 0xff] ^ s->t[1][(x >> 8) & 0xff] ^
           s->t[2][(x >> 16) & 0xff] ^ s->t[3][x >> 24];
}

#if defined(__x86_64__)

/*
 * One round: three blocks of `block` bytes as three independent chains,
 * then block 0's register is shifted over block 1 and the result over
 * block 2. Blocks 1 and 2 start from 0, since the shift adds the rest.
 */
__attribute__((target("sse4.2")))
static inline uint32_t hw_round(uint32_t c, const unsigned char *p,
                                size_t block, const struct shift_table *t)
{
    uint64_t c0 = c, c1 = 0, c2 = 0;
    size_t i;

    for (i = 0; i < block; i += 8) {
        c0 = _mm_crc32_u64(c0, load64le(p + i));
        c1 = _mm_crc32_u64(c1, load64le(p + block + i));
        c2 = _mm_crc32_u64(c2, load64le(p + 2 * block + i));
    }
    return shift(t, shift(t, (uint32_t)c0) ^ (uint32_t)c1) ^ (uint32_t)c2;
}

__attribute__((target("sse4.2")))
static uint32_t crc_hw(uint32_t crc, const void *buf, size_t len)
{
    const unsigned char *p = buf;
    uint64_t c = ~crc;

    for (; len >= 3 * LONG_BLOCK; p += 3 * LONG_BLOCK, len -= 3 * LONG_BLOCK)
        c = hw_round((uint32_t)c, p, LONG_BLOCK, &shift_long);
    for (; len >= 3 * SHORT_BLOCK; p += 3 * SHORT_BLOCK,
                                   len -= 3 * SHORT_BLOCK)
        c = hw_round((uint32_t)c, p, SHORT_BLOCK, &shift_short);
    for (; len >= 8; p += 8, len -= 8)
        c = _mm_crc32_u64(c, load64le(p));
    while (len--)
        c = _mm_crc32_u8((uint32_t)c, *p++);
    return ~(uint32_t)c;
}

#endif /* __x86_64__ */

static uint32_t crc_sw(uint32_t crc, const void *buf, size_t len)
{
    return ~sw_raw(~crc, buf, len);
}

static uint32_t resolve_and_run(uint32_t crc, const void *buf, size_t len);

/*
 * The implementation in use; see zero.c for why it starts as the resolver
 * and why relaxed atomics suffice.
 */
static uint32_t (*crc_fn)(uint32_t, const void *, size_t) = resolve_and_run;
static const char *crc_name = "slice-by-8";

static void crc_init(void)
{
    uint32_t c;
    int b, k;

    for (b = 0; b < 256; b++) {
        c = (uint32_t)b;
        for (k = 0; k < 8; k++)
            c = c & 1 ? (c >> 1) ^ POLY : c >> 1;
        sw[0][b] = c;
    }
    for (k = 1; k < 8; k++)
        for (b = 0; b < 256; b++)
            sw[k][b] = (sw[k - 1][b] >> 8) ^ sw[0][sw[k - 1][b] & 0xff];
    shift_tables_init();

#if defined(__x86_64__)
    /* Needed when this runs in a constructor before libgcc's own. */
    __builtin_cpu_init();
    if (__builtin_cpu_supports("sse4.2")) {
        crc_name = "sse4.2";
        __atomic_store_n(&crc_fn, crc_hw, __ATOMIC_RELAXED);
        return;
    }
#endif
    __atomic_store_n(&crc_fn, crc_sw, __ATOMIC_RELAXED);
}

__attribute__((constructor))
static void crc_ctor(void)
{
    pthread_once(&crc_once, crc_init);
}

static uint32_t resolve_and_run(uint32_t crc, const void *buf, size_t len)
{
    pthread_once(&crc_once, crc_init);
    return __atomic_load_n(&crc_fn, __ATOMIC_RELAXED)(crc, buf, len);
}

uint32_t mfd__crc32c(uint32_t crc, const void *buf, size_t len)
{
    return __atomic_load_n(&crc_fn, __ATOMIC_RELAXED)(crc, buf, len);
}

/*
 * Not a hot path (the CPU in use has SSE4.2 or the dispatcher already
 * chose this), so the once-check per call costs nothing that matters.
 */
uint32_t mfd__crc32c_sw(uint32_t crc, const void *buf, size_t len)
{
    pthread_once(&crc_once, crc_init);
    return crc_sw(crc, buf, len);
}

const char *mfd__crc32c_impl(void)
{
    pthread_once(&crc_once, crc_init);
    return crc_name;
}
