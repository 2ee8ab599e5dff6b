/*
 * util.h - small helpers shared by every room: big-endian access to wire
 * bytes, little-endian access to snapshot files, monotonic time, and the
 * one-line error macros.
 */
#ifndef MFD_COMMON_UTIL_H
#define MFD_COMMON_UTIL_H

#include <pthread.h>
#include <stdint.h>
#include <string.h>
#include <time.h>

static inline void mfd__put_be32(uint8_t *p, uint32_t v)
{
    v = __builtin_bswap32(v);
    memcpy(p, &v, 4);
}

static inline void mfd__put_be64(uint8_t *p, uint64_t v)
{
    v = __builtin_bswap64(v);
    memcpy(p, &v, 8);
}

static inline uint32_t mfd__get_be32(const uint8_t *p)
{
    uint32_t v;
    memcpy(&v, p, 4);
    return __builtin_bswap32(v);
}

static inline uint64_t mfd__get_be64(const uint8_t *p)
{
    uint64_t v;
    memcpy(&v, p, 8);
    return __builtin_bswap64(v);
}

/* Little-endian access: the snapshot file (PROTOCOL.md 5). */
static inline void mfd__put_le32(uint8_t *p, uint32_t v)
{
#if __BYTE_ORDER__ == __ORDER_BIG_ENDIAN__
    v = __builtin_bswap32(v);
#endif
    memcpy(p, &v, 4);
}

static inline void mfd__put_le64(uint8_t *p, uint64_t v)
{
#if __BYTE_ORDER__ == __ORDER_BIG_ENDIAN__
    v = __builtin_bswap64(v);
#endif
    memcpy(p, &v, 8);
}

static inline uint32_t mfd__get_le32(const uint8_t *p)
{
    uint32_t v;
    memcpy(&v, p, 4);
#if __BYTE_ORDER__ == __ORDER_BIG_ENDIAN__
    v = __builtin_bswap32(v);
#endif
    return v;
}

static inline uint64_t mfd__get_le64(const uint8_t *p)
{
    uint64_t v;
    memcpy(&v, p, 8);
#if __BYTE_ORDER__ == __ORDER_BIG_ENDIAN__
    v = __builtin_bswap64(v);
#endif
    return v;
}

static inline uint64_t mfd__now_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000u + (uint64_t)ts.tv_nsec / 1000u;
}

/*
 * A condition variable whose timed waits run on CLOCK_MONOTONIC, so that a
 * step of the wall clock neither fires nor stretches a timeout.
 */
static inline void mfd__cond_init(pthread_cond_t *c)
{
    pthread_condattr_t a;
    pthread_condattr_init(&a);
    pthread_condattr_setclock(&a, CLOCK_MONOTONIC);
    pthread_cond_init(c, &a);
    pthread_condattr_destroy(&a);
}

/* The instant `us` from now, for pthread_cond_timedwait on mfd__cond_init's. */
static inline struct timespec mfd__cond_deadline(uint64_t us)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    uint64_t ns = (uint64_t)ts.tv_nsec + us % 1000000u * 1000u;
    ts.tv_sec += (time_t)(us / 1000000u + ns / 1000000000u);
    ts.tv_nsec = (long)(ns % 1000000000u);
    return ts;
}

#define MFD_MIN(a, b) ((a) < (b) ? (a) : (b))
#define MFD_MAX(a, b) ((a) > (b) ? (a) : (b))
#define MFD_ARRAY_SIZE(a) (sizeof(a) / sizeof((a)[0]))

/* Relaxed atomic counters: statistics read by other threads. */
#define MFD_STAT_ADD(var, n) __atomic_fetch_add(&(var), (n), __ATOMIC_RELAXED)
#define MFD_STAT_GET(var) __atomic_load_n(&(var), __ATOMIC_RELAXED)
#define MFD_STAT_SET(var, v) __atomic_store_n(&(var), (v), __ATOMIC_RELAXED)

/*
 * Microseconds since a time stamp (mfd__now_us) that other threads move
 * forward: the stamp is read before the clock, and a stamp newer than the
 * clock reading counts as now (an unsigned now - stamp would wrap).
 */
static inline uint64_t mfd__us_since(const uint64_t *stamp)
{
    uint64_t t = __atomic_load_n(stamp, __ATOMIC_RELAXED);
    uint64_t now = mfd__now_us();
    return now > t ? now - t : 0;
}

#endif
