/*
 * support.c - the helpers test_api.c and test_live.c share (support.h).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <pthread.h>
#include <sys/mman.h>
#include <unistd.h>

#include <cmocka.h>

#include "multifd.h"
#include "support.h"

char ts_sock_path[64];

void ts_quiet(void *opaque, const char *line)
{
    (void)opaque;
    (void)line;
}

mfd_session *ts_listening_dest(const char *tag)
{
    snprintf(ts_sock_path, sizeof(ts_sock_path), "unix:/tmp/mfd-%s-%d.sock",
             tag, (int)getpid());
    mfd_session *d = mfd_session_new();
    assert_non_null(d);
    mfd_set_log(d, ts_quiet, NULL);
    assert_int_equal(mfd_listen(d, ts_sock_path), 0);
    return d;
}

static void *dest_main(void *arg)
{
    ts_dest *ds = arg;
    ds->rc = mfd_incoming(ds->d);
    return NULL;
}

void ts_dest_start(ts_dest *ds, mfd_session *d)
{
    ds->d = d;
    ds->rc = -1;
    assert_int_equal(pthread_create(&ds->t, NULL, dest_main, ds), 0);
}

int ts_dest_join(ts_dest *ds)
{
    pthread_join(ds->t, NULL);
    return ds->rc;
}

uint8_t *ts_map_anon(size_t len)
{
    uint8_t *p = mmap(NULL, len, PROT_READ | PROT_WRITE,
                      MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    assert_true(p != MAP_FAILED);
    return p;
}

void ts_fill_random(uint8_t *p, size_t len, uint64_t seed)
{
    uint64_t x = seed * 0x9e3779b97f4a7c15ull + 1;
    for (size_t i = 0; i < len; i += 8) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        memcpy(p + i, &x, 8);
    }
}

void ts_fill_block(uint8_t *p, size_t len, unsigned seed, bool zero_runs)
{
    ts_fill_random(p, len, seed);
    for (size_t o = 0; zero_runs && o < len; o += 3 * TS_PAGE)
        memset(p + o, 0, TS_PAGE);
    if (zero_runs && len > (2u << 20))
        memset(p + (1u << 20), 0, 1u << 20);
}

uint8_t *ts_make_block(size_t len, unsigned seed, bool zero_runs)
{
    uint8_t *p = ts_map_anon(len);
    ts_fill_block(p, len, seed, zero_runs);
    return p;
}

uint8_t *ts_make_sparse_block(size_t len, unsigned seed)
{
    uint8_t *p = ts_make_block(len, seed, true);
    for (size_t o = 0; o < len; o += TS_PAGE)
        if (ts_page_is_zero(p + o))
            assert_int_equal(madvise(p + o, TS_PAGE, MADV_DONTNEED), 0);
    return p;
}

bool ts_page_is_zero(const uint8_t *p)
{
    static const uint8_t z[TS_PAGE];
    return !memcmp(p, z, TS_PAGE);
}

uint64_t ts_zero_pages(const uint8_t *p, size_t len)
{
    uint64_t n = 0;
    for (size_t o = 0; o < len; o += TS_PAGE)
        n += ts_page_is_zero(p + o);
    return n;
}

void ts_compare_blocks(mfd_session *d, uint8_t *const *src,
                       const char *const *names, const size_t *lens, int n)
{
    assert_int_equal(mfd_block_count(d), n);
    for (int i = 0; i < n; i++) {
        mfd_block_info bi;
        assert_int_equal(mfd_block_get(d, i, &bi), 0);
        assert_string_equal(bi.name, names[i]);
        assert_int_equal(bi.length, lens[i]);
        if (!memcmp(bi.host, src[i], lens[i]))
            continue;
        for (size_t o = 0; o < lens[i]; o += TS_PAGE)
            if (memcmp((uint8_t *)bi.host + o, src[i] + o, TS_PAGE))
                fail_msg("block '%s' page %zu (offset 0x%zx) differs from "
                         "the source (source %s, destination %s)",
                         names[i], o / TS_PAGE, o,
                         ts_page_is_zero(src[i] + o) ? "zero" : "data",
                         ts_page_is_zero((uint8_t *)bi.host + o) ? "zero"
                                                                 : "data");
    }
}

void ts_stats_completed(mfd_session *src, mfd_session *dst, mfd_stats **a,
                        mfd_stats **b)
{
    *a = malloc(sizeof(**a));
    *b = malloc(sizeof(**b));
    assert_non_null(*a);
    assert_non_null(*b);
    assert_int_equal(mfd_get_stats(src, *a), 0);
    assert_int_equal(mfd_get_stats(dst, *b), 0);
    assert_int_equal((*a)->role, 1);
    assert_int_equal((*b)->role, 2);
    assert_int_equal((*a)->status, 3);
    assert_int_equal((*b)->status, 3);
}

uint64_t ts_check_received(const mfd_stats *a, const mfd_stats *b,
                           uint64_t sync_packets)
{
    assert_int_equal(a->normal_pages, b->normal_pages);
    assert_int_equal(a->zero_pages, b->zero_pages);
    assert_int_equal(a->data_packets, b->data_packets);
    assert_int_equal(a->data_bytes, b->data_bytes);
    assert_int_equal(a->main_bytes, b->main_bytes);
    uint64_t n = 0, z = 0;
    for (uint32_t i = 0; i < a->channels; i++) {
        n += a->channel[i].normal_pages;
        z += a->channel[i].zero_pages;
        assert_int_equal(a->channel[i].sync_packets, sync_packets);
    }
    assert_int_equal(n, a->normal_pages);
    return z;
}
