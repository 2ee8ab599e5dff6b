/*
 * zero.c - buffer_is_zero: are all bytes of a buffer zero?
 *
 * Every page of every pass goes through here, so the common case decides the
 * shape. A page is 4096 bytes, page-aligned, and either all zero (then every
 * byte must be read) or non-zero within its first cache line (then the test
 * should cost almost nothing). Each variant therefore looks at the first 64
 * bytes on their own and returns at once if they are not zero; then it ORs
 * several vectors together per iteration and branches once per iteration, so
 * the loop is bound by loads rather than by branches.
 *
 * Heads and tails that are not a whole aligned vector are covered by
 * unaligned loads that may overlap bytes already tested. No load ever touches
 * a byte outside [buf, buf + len): a buffer may end at the last byte of a
 * mapping.
 *
 * The SIMD variants carry their own target attributes, so the file builds
 * with plain -O2 and the CPU decides, once, which of them may run.
 */
#include "ram/zero.h"

#include <pthread.h>
#include <stdint.h>
#include <string.h>
#include <xxhash.h>

#include "ram/bitmap.h"

#if defined(__x86_64__)
#include <immintrin.h>
#endif

/* memcpy compiles to one plain load and keeps unaligned access defined. */
static inline uint64_t load64(const unsigned char *p)
{
    uint64_t v;
    memcpy(&v, p, sizeof(v));
    return v;
}

static inline uint32_t load32(const unsigned char *p)
{
    uint32_t v;
    memcpy(&v, p, sizeof(v));
    return v;
}

/*
 * Fewer than 16 bytes. Two overlapping loads cover any length from one load
 * size up to twice it, which avoids a loop; below 4 bytes, the first, middle
 * and last byte together cover lengths 1 to 3.
 */
static inline bool small_is_zero(const unsigned char *p, size_t len)
{
    if (len >= 8)
        return (load64(p) | load64(p + len - 8)) == 0;
    if (len >= 4)
        return (load32(p) | load32(p + len - 4)) == 0;
    if (len == 0)
        return true;
    return (p[0] | p[len / 2] | p[len - 1]) == 0;
}

/*
 * The portable variant, and the only one off x86-64. Loads are 64-bit
 * words, four per iteration.
 */
static bool is_zero_scalar(const void *buf, size_t len)
{
    const unsigned char *p = buf, *end, *a;
    uint64_t acc;

    if (len < 16)
        return small_is_zero(p, len);
    end = p + len;
    if (len <= 64) {
        for (acc = 0, a = p; end - a >= 8; a += 8)
            acc |= load64(a);
        return (acc | load64(end - 8)) == 0;
    }

    acc = load64(p) | load64(p + 8) | load64(p + 16) | load64(p + 24) |
          load64(p + 32) | load64(p + 40) | load64(p + 48) | load64(p + 56);
    if (acc)
        return false;

    /*
     * Go on from the last word boundary at or before p + 64; for a page
     * that leaves 4032 bytes, a whole number of iterations.
     */
    a = p + 64 - ((uintptr_t)p & 7);
    for (; end - a >= 32; a += 32) {
        if (load64(a) | load64(a + 8) | load64(a + 16) | load64(a + 24))
            return false;
    }
    for (; end - a >= 8; a += 8)
        acc |= load64(a);
    if (a < end)
        acc |= load64(end - 8);
    return acc == 0;
}

#if defined(__x86_64__)

/*
 * SSE2 is part of x86-64 itself; the attribute only says so next to the
 * others. SSE2 has no PTEST, so a vector is zero when all 16 byte compares
 * with zero succeed.
 */
__attribute__((target("sse2")))
static inline bool sse2_zero(__m128i v)
{
    return _mm_movemask_epi8(_mm_cmpeq_epi8(v, _mm_setzero_si128())) == 0xffff;
}

/* Lengths 0 to 63, for every variant: at most four overlapping loads. */
__attribute__((target("sse2")))
static inline bool sse2_lt64(const unsigned char *p, size_t len)
{
    __m128i v;

    if (len < 16)
        return small_is_zero(p, len);
    v = _mm_or_si128(_mm_loadu_si128((const __m128i *)p),
                     _mm_loadu_si128((const __m128i *)(p + len - 16)));
    if (len > 32)
        v = _mm_or_si128(v, _mm_loadu_si128((const __m128i *)(p + 16)));
    if (len > 48)
        v = _mm_or_si128(v, _mm_loadu_si128((const __m128i *)(p + 32)));
    return sse2_zero(v);
}

__attribute__((target("sse2")))
static bool is_zero_sse2(const void *buf, size_t len)
{
    const unsigned char *p = buf, *end, *a;
    __m128i v;

    if (len < 64)
        return sse2_lt64(p, len);
    end = p + len;

    v = _mm_or_si128(
        _mm_or_si128(_mm_loadu_si128((const __m128i *)p),
                     _mm_loadu_si128((const __m128i *)(p + 16))),
        _mm_or_si128(_mm_loadu_si128((const __m128i *)(p + 32)),
                     _mm_loadu_si128((const __m128i *)(p + 48))));
    if (!sse2_zero(v))
        return false;

    /*
     * Restart at the first aligned vector rather than after the 64 bytes
     * just tested. Re-reading them costs a few L1 loads; in exchange an
     * aligned page is a whole number of iterations in every variant, with
     * no tail.
     */
    a = p + (-(uintptr_t)p & 15);
    for (; end - a >= 64; a += 64) {
        v = _mm_or_si128(
            _mm_or_si128(_mm_load_si128((const __m128i *)a),
                         _mm_load_si128((const __m128i *)(a + 16))),
            _mm_or_si128(_mm_load_si128((const __m128i *)(a + 32)),
                         _mm_load_si128((const __m128i *)(a + 48))));
        if (!sse2_zero(v))
            return false;
    }
    for (; end - a >= 16; a += 16)
        v = _mm_or_si128(v, _mm_load_si128((const __m128i *)a));
    if (a < end)
        v = _mm_or_si128(v, _mm_loadu_si128((const __m128i *)(end - 16)));
    return sse2_zero(v);
}

__attribute__((target("avx2")))
static inline bool avx2_lt64(const unsigned char *p, size_t len)
{
    __m256i v;

    if (len < 32)
        return sse2_lt64(p, len);
    v = _mm256_or_si256(_mm256_loadu_si256((const __m256i *)p),
                        _mm256_loadu_si256((const __m256i *)(p + len - 32)));
    return _mm256_testz_si256(v, v);
}

/*
 * Eight vectors (256 bytes) per iteration: on an L1-resident page that is
 * two loads per cycle, the limit; four vectors ran about 8% slower.
 */
__attribute__((target("avx2")))
static bool is_zero_avx2(const void *buf, size_t len)
{
    const unsigned char *p = buf, *end, *a;
    __m256i v, w;

    if (len < 64)
        return avx2_lt64(p, len);
    end = p + len;

    v = _mm256_or_si256(_mm256_loadu_si256((const __m256i *)p),
                        _mm256_loadu_si256((const __m256i *)(p + 32)));
    if (!_mm256_testz_si256(v, v))
        return false;

    /* As in SSE2, so an aligned page is exactly 16 iterations. */
    a = p + (-(uintptr_t)p & 31);
    for (; end - a >= 256; a += 256) {
        v = _mm256_or_si256(
            _mm256_or_si256(_mm256_load_si256((const __m256i *)a),
                            _mm256_load_si256((const __m256i *)(a + 32))),
            _mm256_or_si256(_mm256_load_si256((const __m256i *)(a + 64)),
                            _mm256_load_si256((const __m256i *)(a + 96))));
        w = _mm256_or_si256(
            _mm256_or_si256(_mm256_load_si256((const __m256i *)(a + 128)),
                            _mm256_load_si256((const __m256i *)(a + 160))),
            _mm256_or_si256(_mm256_load_si256((const __m256i *)(a + 192)),
                            _mm256_load_si256((const __m256i *)(a + 224))));
        v = _mm256_or_si256(v, w);
        if (!_mm256_testz_si256(v, v))
            return false;
    }
    for (; end - a >= 32; a += 32)
        v = _mm256_or_si256(v, _mm256_load_si256((const __m256i *)a));
    if (a < end)
        v = _mm256_or_si256(v,
                            _mm256_loadu_si256((const __m256i *)(end - 32)));
    return _mm256_testz_si256(v, v);
}

/*
 * AVX-512F alone is enough: OR and test-into-mask on 64-bit lanes. One
 * vector is the whole first cache line. Eight vectors (512 bytes) per
 * iteration reach two loads per cycle on an L1-resident page; four left
 * about 15% on the table.
 */
__attribute__((target("avx512f")))
static bool is_zero_avx512(const void *buf, size_t len)
{
    const unsigned char *p = buf, *end, *a;
    __m512i v, w;

    if (len < 64)
        return avx2_lt64(p, len);
    end = p + len;

    v = _mm512_loadu_si512(p);
    if (_mm512_test_epi64_mask(v, v))
        return false;

    a = p + (-(uintptr_t)p & 63);
    for (; end - a >= 512; a += 512) {
        v = _mm512_or_si512(
            _mm512_or_si512(_mm512_load_si512(a), _mm512_load_si512(a + 64)),
            _mm512_or_si512(_mm512_load_si512(a + 128),
                            _mm512_load_si512(a + 192)));
        w = _mm512_or_si512(
            _mm512_or_si512(_mm512_load_si512(a + 256),
                            _mm512_load_si512(a + 320)),
            _mm512_or_si512(_mm512_load_si512(a + 384),
                            _mm512_load_si512(a + 448)));
        v = _mm512_or_si512(v, w);
        if (_mm512_test_epi64_mask(v, v))
            return false;
    }
    for (; end - a >= 64; a += 64)
        v = _mm512_or_si512(v, _mm512_load_si512(a));
    if (a < end)
        v = _mm512_or_si512(v, _mm512_loadu_si512(end - 64));
    return _mm512_test_epi64_mask(v, v) == 0;
}

#endif /* __x86_64__ */

/* Best first, scalar last; `usable` is filled in by select_variant. */
static mfd__zero_variant variants[] = {
#if defined(__x86_64__)
    { "avx512", is_zero_avx512, false },
    { "avx2", is_zero_avx2, false },
    { "sse2", is_zero_sse2, false },
#endif
    { "scalar", is_zero_scalar, true },
};

#define NVARIANTS ((int)(sizeof(variants) / sizeof(variants[0])))

static bool resolve_and_run(const void *buf, size_t len);

/*
 * The variant in use. It starts as the resolver so that a call made before
 * the constructor (from another constructor) still works; afterwards it only
 * ever holds the one best variant. Relaxed atomics suffice: every value it
 * can hold is a complete function, and the variants read nothing else.
 */
static mfd__is_zero_fn zero_fn = resolve_and_run;
static const char *zero_name = "scalar";
static pthread_once_t zero_once = PTHREAD_ONCE_INIT;

static void select_variant(void)
{
    int i;

#if defined(__x86_64__)
    /* Needed when this runs in a constructor before libgcc's own. */
    __builtin_cpu_init();
    variants[0].usable = __builtin_cpu_supports("avx512f");
    variants[1].usable = __builtin_cpu_supports("avx2");
    variants[2].usable = __builtin_cpu_supports("sse2");
#endif
    for (i = 0; !variants[i].usable; i++)
        ;
    zero_name = variants[i].name;
    __atomic_store_n(&zero_fn, variants[i].fn, __ATOMIC_RELAXED);
}

__attribute__((constructor))
static void zero_init(void)
{
    pthread_once(&zero_once, select_variant);
}

static bool resolve_and_run(const void *buf, size_t len)
{
    pthread_once(&zero_once, select_variant);
    return __atomic_load_n(&zero_fn, __ATOMIC_RELAXED)(buf, len);
}

bool mfd__buffer_is_zero(const void *buf, size_t len)
{
    return __atomic_load_n(&zero_fn, __ATOMIC_RELAXED)(buf, len);
}

const char *mfd__zero_variant_name(void)
{
    pthread_once(&zero_once, select_variant);
    return zero_name;
}

int mfd__zero_variants(const mfd__zero_variant **out)
{
    pthread_once(&zero_once, select_variant);
    *out = variants;
    return NVARIANTS;
}

uint64_t mfd__digest_known_zero(const uint8_t *host, uint64_t len,
                                uint64_t page_size, const uint64_t *map,
                                bool set_is_zero)
{
    static const uint8_t zero[65536];
    XXH3_state_t *st;
    if (!map || page_size > sizeof(zero) || !(st = XXH3_createState()))
        return XXH3_64bits(host, len);
    uint64_t pages = len / page_size, chunk = sizeof(zero) / page_size;
    XXH3_64bits_reset(st);
    for (uint64_t p = 0; p < pages;) {
        bool z = mfd__bitmap_test(map, p) == set_is_zero;
        uint64_t q = p + 1;
        while (q < pages && (mfd__bitmap_test(map, q) == set_is_zero) == z &&
               (!z || q - p < chunk))
            q++;
        XXH3_64bits_update(st, z ? zero : host + p * page_size,
                           (q - p) * page_size);
        p = q;
    }
    if (len > pages * page_size) /* a tail shorter than a page */
        XXH3_64bits_update(st, host + pages * page_size,
                           len - pages * page_size);
    uint64_t h = XXH3_64bits_digest(st);
    XXH3_freeState(st);
    return h;
}
