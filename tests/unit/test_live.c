/*
 * test_live.c - live pre-copy end to end in one process: a source and a
 * destination session on two threads over a Unix socket, as test_api.c, with
 * a dirty tracker on the source and writers changing its memory while it
 * migrates. Every test compares every block of the destination byte for byte
 * with the source as it was at the pause, and the stats of both sides with
 * what was sent (pass by pass where the test controls the passes).
 *
 * Passes are steered through the callbacks, which run on the migration
 * thread between passes (no send channel reads memory then):
 *   pass N ends -> dirty sync (dirty_log) -> progress(N) -> switchover?
 *     no:  pass N+1 sends what the sync collected
 *     yes: pause -> last sync -> final pass
 * A page written inside dirty_log with its bit set is sent in the very next
 * pass; one written inside progress and marked is collected by the next
 * sync, so it only goes in the next pass if that is the final one.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE /* memfd_create */
#endif
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <pthread.h>
#include <time.h>
#include <linux/magic.h>
#include <sys/mman.h>
#include <sys/statfs.h>
#include <unistd.h>

#include <cmocka.h>

#include "multifd.h"
#include "protocol/wire.h" /* MFD_INIT_LEN: data bytes outside any pass */
#include "support.h"

#define PS TS_PAGE

static uint64_t now_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000u + (uint64_t)ts.tv_nsec / 1000u;
}

static void sleep_us(uint64_t us)
{
    struct timespec ts = {(time_t)(us / 1000000u),
                          (long)(us % 1000000u) * 1000L};
    while (nanosleep(&ts, &ts) && errno == EINTR)
        ;
}

/*
 * A destination on a fresh Unix socket (ts_sock_path), given the caller's
 * own (zero-filled) memory when blocks is not NULL, mfd_incoming() on its
 * own thread.
 */
static void dest_start(ts_dest *ds, uint8_t **blocks, const char **names,
                       const size_t *lens, int n)
{
    mfd_session *d = ts_listening_dest("live");
    for (int i = 0; blocks && i < n; i++)
        assert_int_equal(mfd_add_block(d, names[i], blocks[i], lens[i]), 0);
    ts_dest_start(ds, d);
}

/* ---- a writer thread: the guest ---------------------------------------- */

typedef struct {
    mfd_session *s; /* manual tracker: mfd_mark_dirty after each write */
    uint8_t *mem[2];
    size_t len[2];
    int nblocks;
    unsigned pages_per_ms;
    uint64_t rng;
    pthread_mutex_t lock;
    pthread_cond_t cond;
    bool run, stopped, quit;
    uint64_t writes; /* atomic */
    int sync_fd;     /* >= 0: fdatasync it every 4 ms (writeback) */
    pthread_t thread;
} writer;

static uint64_t rnd(uint64_t *x)
{
    *x ^= *x << 13;
    *x ^= *x >> 7;
    *x ^= *x << 17;
    return *x;
}

/*
 * One write of the guest: a page of random data, or zeros. It races with
 * the source's reads by design - that is live migration - so
 * ThreadSanitizer (make check-tsan) is kept from instrumenting it: plain
 * volatile stores (no memset/memcpy interceptors), no instrumentation.
 */
__attribute__((no_sanitize("thread"), noinline)) static void
guest_write(uint8_t *p, uint64_t seed, bool zero)
{
    volatile uint64_t *q = (volatile uint64_t *)(void *)p;
    uint64_t x = seed * 0x9e3779b97f4a7c15ull + 1;
    for (size_t i = 0; i < PS / 8; i++) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        q[i] = zero ? 0 : x;
    }
}

static void *writer_main(void *arg)
{
    writer *w = arg;
    unsigned ticks = 0;
    size_t total = 0;
    for (int i = 0; i < w->nblocks; i++)
        total += w->len[i] / PS;
    for (;;) {
        pthread_mutex_lock(&w->lock);
        while (!w->run && !w->quit) {
            w->stopped = true;
            pthread_cond_broadcast(&w->cond);
            pthread_cond_wait(&w->cond, &w->lock);
        }
        if (w->quit) {
            w->stopped = true;
            pthread_cond_broadcast(&w->cond);
            pthread_mutex_unlock(&w->lock);
            return NULL;
        }
        w->stopped = false;
        pthread_mutex_unlock(&w->lock);

        for (unsigned k = 0; k < w->pages_per_ms; k++) {
            size_t page = rnd(&w->rng) % total;
            int b = 0;
            while (page >= w->len[b] / PS)
                page -= w->len[b++] / PS;
            uint8_t *p = w->mem[b] + page * PS;
            /* One write in eight makes a zero page, the others data. */
            bool zero = rnd(&w->rng) % 8 == 0;
            guest_write(p, rnd(&w->rng), zero);
            if (w->s)
                mfd_mark_dirty(w->s, b, page * PS, PS);
            __atomic_fetch_add(&w->writes, 1, __ATOMIC_RELAXED);
        }
        if (w->sync_fd >= 0 && ++ticks % 4 == 0)
            fdatasync(w->sync_fd);
        sleep_us(1000);
    }
}

static void writer_init(writer *w, mfd_session *s, uint8_t **mem,
                        const size_t *len, int n, unsigned pages_per_ms,
                        uint64_t seed, int sync_fd)
{
    memset(w, 0, sizeof(*w));
    w->s = s;
    for (int i = 0; i < n; i++) {
        w->mem[i] = mem[i];
        w->len[i] = len[i];
    }
    w->nblocks = n;
    w->sync_fd = sync_fd;
    w->pages_per_ms = pages_per_ms;
    w->rng = seed | 1;
    pthread_mutex_init(&w->lock, NULL);
    pthread_cond_init(&w->cond, NULL);
    w->run = true;
    assert_int_equal(pthread_create(&w->thread, NULL, writer_main, w), 0);
}

static uint64_t writer_count(writer *w)
{
    return __atomic_load_n(&w->writes, __ATOMIC_RELAXED);
}

/* Returns once the writer is parked: no write is in progress. */
static void writer_stop(writer *w)
{
    pthread_mutex_lock(&w->lock);
    w->run = false;
    while (!w->stopped)
        pthread_cond_wait(&w->cond, &w->lock);
    pthread_mutex_unlock(&w->lock);
}

static void writer_start(writer *w)
{
    pthread_mutex_lock(&w->lock);
    w->run = true;
    pthread_cond_broadcast(&w->cond);
    pthread_mutex_unlock(&w->lock);
}

static void writer_destroy(writer *w)
{
    pthread_mutex_lock(&w->lock);
    w->quit = true;
    pthread_cond_broadcast(&w->cond);
    pthread_mutex_unlock(&w->lock);
    pthread_join(w->thread, NULL);
    pthread_mutex_destroy(&w->lock);
    pthread_cond_destroy(&w->cond);
}

/* ---- the live callbacks: they record, the test thread asserts ----------- */

#define MAX_PASSES 16

typedef struct {
    uint64_t normal, zero, legacy_zero;
    uint64_t chan_normal[2], chan_zero[2];
} snap;

typedef struct live_ctx live_ctx;
struct live_ctx {
    mfd_session *s;
    writer *w;          /* NULL: no writer thread */
    uint64_t min_writes; /* writes the pause awaits after the last pass */
    int pauses, resumes; /* atomic */
    int syncs;           /* dirty_log calls for block 0 */
    int npass;
    bool too_many;
    mfd_pass_info pass[MAX_PASSES];
    snap after[MAX_PASSES];
    uint64_t writes_at_last; /* writer's count at the latest progress() */
    uint64_t writes_live;    /* ... at the last live pass's progress() */
    uint64_t writes_paused;  /* ... once the pause stopped it */
    mfd_stats *st;
    void (*on_sync)(live_ctx *c, uint64_t *bitmap, uint64_t pages);
    void (*on_pause)(live_ctx *c);
    void *user;
};

static void cb_pause(void *opaque)
{
    live_ctx *c = opaque;
    __atomic_fetch_add(&c->pauses, 1, __ATOMIC_RELAXED);
    if (c->on_pause)
        c->on_pause(c);
    if (c->w) {
        /*
         * Not vacuous: the writer must write after the last progress()
         * (so after the tracker started, after the last live pass read
         * those pages and after its sync) before it stops. Only the last
         * sync, after this pause, collects those pages: the final pass
         * must carry them.
         */
        c->writes_live = c->writes_at_last;
        uint64_t want = c->writes_live + c->min_writes;
        for (int i = 0; i < 5000 && writer_count(c->w) < want; i++)
            sleep_us(1000);
        writer_stop(c->w);
        c->writes_paused = writer_count(c->w);
    }
}

static void cb_resume(void *opaque)
{
    live_ctx *c = opaque;
    __atomic_fetch_add(&c->resumes, 1, __ATOMIC_RELAXED);
    if (c->w)
        writer_start(c->w);
}

static void cb_progress(void *opaque, const mfd_pass_info *p)
{
    live_ctx *c = opaque;
    if (c->npass >= MAX_PASSES) {
        c->too_many = true;
        return;
    }
    if (c->w)
        c->writes_at_last = writer_count(c->w);
    c->pass[c->npass] = *p;
    mfd_get_stats(c->s, c->st);
    snap *n = &c->after[c->npass];
    n->normal = c->st->normal_pages;
    n->zero = c->st->zero_pages;
    n->legacy_zero = c->st->legacy_zero_pages;
    for (int i = 0; i < 2; i++) {
        n->chan_normal[i] = c->st->channel[i].normal_pages;
        n->chan_zero[i] = c->st->channel[i].zero_pages;
    }
    c->npass++;
}

static void cb_dirty_log(void *opaque, int block, uint64_t *bitmap,
                         uint64_t pages)
{
    live_ctx *c = opaque;
    if (block != 0)
        return;
    c->syncs++;
    if (c->on_sync)
        c->on_sync(c, bitmap, pages);
}

static void live_init(live_ctx *c, mfd_session *s, writer *w)
{
    memset(c, 0, sizeof(*c));
    c->s = s;
    c->w = w;
    c->min_writes = 8;
    c->st = malloc(sizeof(*c->st));
    assert_non_null(c->st);
    mfd_live_ops ops = {
        .pause = cb_pause,
        .resume = cb_resume,
        .progress = cb_progress,
        .dirty_log = cb_dirty_log,
    };
    assert_int_equal(mfd_set_live_ops(s, &ops, c), 0);
}

static void live_free(live_ctx *c)
{
    free(c->st);
    c->st = NULL;
}

static void set_bit(uint64_t *bitmap, uint64_t page)
{
    bitmap[page / 64] |= UINT64_C(1) << (page % 64);
}

/*
 * The stats of a successful live migration against each other, against
 * what the progress callback saw, and against the destination's.
 */
static void check_live_stats(mfd_session *src, mfd_session *dst,
                             const live_ctx *c, uint64_t total_pages)
{
    mfd_stats *a, *b;
    ts_stats_completed(src, dst, &a, &b);
    assert_int_equal(a->ram_bytes, total_pages * PS);

    assert_true(a->iterations >= 2);
    assert_true(a->iterations <= MAX_PASSES);
    assert_int_equal(b->iterations, a->iterations);
    /* One sync after each live pass, and the last one after the pause. */
    assert_true(a->dirty_sync_count >= 1);
    assert_int_equal(a->dirty_sync_count, a->iterations);
    assert_true(a->downtime_us > 0);
    assert_true(a->downtime_us <= a->total_time_us);
    assert_int_equal(a->progress_pct, 100);
    assert_int_equal(a->throttle_pct, 0);

    /* Every page in pass 1; the passes add up to what was sent. */
    assert_int_equal(a->pass_pages[0], total_pages);
    uint64_t pages = 0, bytes = 0;
    for (uint64_t i = 0; i < a->iterations; i++) {
        pages += a->pass_pages[i];
        bytes += a->pass_bytes[i];
    }
    for (uint64_t i = a->iterations; i < MFD_PASS_STATS; i++) {
        assert_int_equal(a->pass_pages[i], 0);
        assert_int_equal(a->pass_bytes[i], 0);
    }
    assert_int_equal(pages, a->normal_pages + a->zero_pages);
    assert_int_equal(bytes + (uint64_t)a->channels * MFD_INIT_LEN,
                     a->data_bytes);

    /* The destination received exactly what was sent; a sync a pass. */
    assert_int_equal(b->normal_pages + b->zero_pages,
                     a->normal_pages + a->zero_pages);
    assert_int_equal(a->legacy_zero_pages, b->legacy_zero_pages);
    uint64_t z = ts_check_received(a, b, a->iterations);
    assert_int_equal(z + a->legacy_zero_pages, a->zero_pages);

    /* The progress callback saw every pass, the last one final. */
    assert_false(c->too_many);
    assert_int_equal(c->npass, a->iterations);
    for (int i = 0; i < c->npass; i++) {
        assert_int_equal(c->pass[i].pass, i + 1);
        assert_int_equal(c->pass[i].final, i == c->npass - 1);
        assert_int_equal(c->pass[i].pages, a->pass_pages[i]);
        assert_int_equal(c->pass[i].bytes, a->pass_bytes[i]);
    }
    assert_int_equal(__atomic_load_n(&c->pauses, __ATOMIC_RELAXED), 1);
    assert_int_equal(__atomic_load_n(&c->resumes, __ATOMIC_RELAXED), 0);
    free(a);
    free(b);
}

/* A quiet source session: the tracker, on `channels` channels. */
static mfd_session *src_new(int tracker, int channels)
{
    mfd_session *s = mfd_session_new();
    mfd_set_log(s, ts_quiet, NULL);
    assert_int_equal(mfd_set_param(s, MFD_PARAM_CHANNELS, channels), 0);
    assert_int_equal(mfd_set_param(s, MFD_PARAM_DIRTY_TRACKER, tracker), 0);
    return s;
}

/* The source's stats now (malloc'ed: the caller frees them). */
static mfd_stats *src_stats(mfd_session *s)
{
    mfd_stats *st = malloc(sizeof(*st));
    assert_non_null(st);
    mfd_get_stats(s, st);
    return st;
}

/* The pages the passes after pass 1 sent. */
static uint64_t pages_after_pass1(const mfd_stats *st)
{
    uint64_t later = 0;
    for (uint64_t i = 1; i < st->iterations; i++)
        later += st->pass_pages[i];
    return later;
}

/* After a migration: the callbacks' context (when c is given), both sides. */
static void end_migration(live_ctx *c, mfd_session *s, ts_dest *ds)
{
    if (c)
        live_free(c);
    mfd_session_free(s);
    mfd_session_free(ds->d);
}

/* mfd_migrate() to the destination: its result; *drc mfd_incoming()'s. */
static int migrate_both(mfd_session *s, ts_dest *ds, int *drc)
{
    int rc = mfd_migrate(s, ts_sock_path);
    *drc = ts_dest_join(ds);
    return rc;
}

static void migrate_ok(mfd_session *s, ts_dest *ds)
{
    int drc, rc = migrate_both(s, ds, &drc);
    if (rc)
        fail_msg("migrate: %s (%s); incoming: %s", mfd_last_error(s),
                 mfd_err_name(rc), mfd_last_error(ds->d));
    if (drc)
        fail_msg("incoming: %s", mfd_last_error(ds->d));
}

/* ---- 1. manual tracker, a slow writer: converges ------------------------ */

static void test_live_manual_converges(void **state)
{
    (void)state;
    static const char *names[2] = {"ram0", "rom"};
    const size_t lens[2] = {16u << 20, 1u << 20};
    /* ram0's zero pages are untouched: sent unread in pass 1, and the
     * writer's later writes to them sent after. */
    uint8_t *blk[2] = {ts_make_sparse_block(lens[0], 1),
                       ts_make_block(lens[1], 2, true)};
    uint64_t pages = (lens[0] + lens[1]) / PS;

    ts_dest ds;
    dest_start(&ds, NULL, NULL, NULL, 0);
    mfd_session *s = src_new(MFD_TRACKER_MANUAL, 2);
    for (int i = 0; i < 2; i++)
        assert_int_equal(mfd_add_block(s, names[i], blk[i], lens[i]), 0);
    writer w;
    live_ctx c;
    live_init(&c, s, &w);
    /* 5 pages a millisecond: about 20 MiB/s. */
    writer_init(&w, s, blk, lens, 2, 5, 42, -1);
    migrate_ok(s, &ds);

    /* The writer stays paused after success: the memory is the pause's. */
    uint64_t frozen = writer_count(&w);
    sleep_us(5000);
    assert_int_equal(frozen, c.writes_paused);
    assert_true(c.writes_paused >= c.writes_live + c.min_writes);
    ts_compare_blocks(ds.d, blk, names, lens, 2);
    check_live_stats(s, ds.d, &c, pages);

    /* The writer's pages went after pass 1: not a one-pass migration. */
    mfd_stats *st = src_stats(s);
    assert_true(pages_after_pass1(st) > 0);
    assert_true(st->pass_pages[st->iterations - 1] > 0);
    /* Most of ram0's zero pages were still untouched when pass 1 began. */
    assert_true(st->untouched_pages > (lens[0] / PS) / 4);
    print_message("manual: %" PRIu64 " passes, pages per pass 1..: %" PRIu64
                  " %" PRIu64 " %" PRIu64 ", downtime %" PRIu64 " us, "
                  "%" PRIu64 " writes, %" PRIu64 " untouched\n",
                  st->iterations, st->pass_pages[0], st->pass_pages[1],
                  st->pass_pages[2], st->downtime_us, frozen,
                  st->untouched_pages);
    free(st);

    writer_destroy(&w);
    end_migration(&c, s, &ds);
    for (int i = 0; i < 2; i++)
        munmap(blk[i], lens[i]);
}

/* ---- 2. uffd-wp, a writer faster than the cap: max-iterations ------------ */

/*
 * A destination started, and a source of one block with the uffd-wp
 * tracker on two channels.
 */
static mfd_session *wp_pair(ts_dest *ds, const char *name, uint8_t *mem,
                            size_t len)
{
    dest_start(ds, NULL, NULL, NULL, 0);
    mfd_session *s = src_new(MFD_TRACKER_UFFD_WP, 2);
    assert_int_equal(mfd_add_block(s, name, mem, len), 0);
    return s;
}

/* The tracker failed for want of a kernel feature: skip, saying so. */
static bool tracker_unavailable(mfd_session *s, int rc)
{
    return rc && strstr(mfd_last_error(s), "uffd-wp") &&
           strstr(mfd_last_error(s), "lacks");
}

static void test_live_uffd_wp_max_iterations(void **state)
{
    (void)state;
    static const char *names[1] = {"ram0"};
    const size_t lens[1] = {16u << 20};
    const int64_t cap = 32 << 20;
    uint8_t *blk[1] = {ts_make_sparse_block(lens[0], 3)};
    uint64_t pages = lens[0] / PS;

    ts_dest ds;
    mfd_session *s = wp_pair(&ds, names[0], blk[0], lens[0]);
    assert_int_equal(mfd_set_param(s, MFD_PARAM_MAX_BANDWIDTH, cap), 0);
    assert_int_equal(mfd_set_param(s, MFD_PARAM_MAX_ITERATIONS, 3), 0);
    assert_int_equal(mfd_set_param(s, MFD_PARAM_DOWNTIME_LIMIT, 1), 0);
    writer w;
    live_ctx c;
    live_init(&c, s, &w);
    /* 16 pages a millisecond: about 64 MiB/s, twice the cap. No marking:
     * the tracker sees the writes itself. */
    writer_init(&w, NULL, blk, lens, 1, 16, 7, -1);
    int drc, rc = migrate_both(s, &ds, &drc);
    if (tracker_unavailable(s, rc)) {
        char why[300];
        snprintf(why, sizeof(why), "%s", mfd_last_error(s));
        writer_destroy(&w);
        end_migration(&c, s, &ds);
        munmap(blk[0], lens[0]);
        print_message("skipped: %s\n", why);
        skip();
    }
    if (rc || drc)
        fail_msg("migrate: %s; incoming: %s", mfd_last_error(s),
                 mfd_last_error(ds.d));

    ts_compare_blocks(ds.d, blk, names, lens, 1);
    check_live_stats(s, ds.d, &c, pages);
    mfd_stats *st = src_stats(s);
    /* 3 live passes, then the forced switchover and the final pass. */
    assert_int_equal(st->iterations, 4);
    assert_int_equal(c.npass, 4);
    for (int i = 0; i < 3; i++) {
        /* It could not converge: the switchover was max-iterations'. */
        assert_false(c.pass[i].final);
        assert_true(c.pass[i].dirty_pages > 0);
        assert_true(c.pass[i].expected_downtime_ms > 1);
    }
    for (int i = 1; i < 4; i++)
        assert_true(st->pass_pages[i] > 0);
    assert_true(c.pass[3].final);
    print_message("uffd-wp: pages per pass %" PRIu64 " %" PRIu64 " %" PRIu64
                  " %" PRIu64 ", expected downtime %" PRIu64 " %" PRIu64
                  " %" PRIu64 " ms\n",
                  st->pass_pages[0], st->pass_pages[1], st->pass_pages[2],
                  st->pass_pages[3], c.pass[0].expected_downtime_ms,
                  c.pass[1].expected_downtime_ms,
                  c.pass[2].expected_downtime_ms);
    free(st);

    writer_destroy(&w);
    end_migration(&c, s, &ds);
    munmap(blk[0], lens[0]);
}

/* ---- 3. one page rewritten, its passes on different channels ------------ */

/*
 * 16 pages at 512 KiB/s: pass 1 takes ~130 ms, so the measured bandwidth is
 * ~0.5 MB/s and one dirty page (4 KiB) is ~8 ms of expected downtime, more
 * than downtime-limit 1: pass 2 runs live. After it nothing is dirty, the
 * migration converges, and the pause writes the page once more.
 */
#define SMALL_PAGES 16
#define SMALL_LEN (SMALL_PAGES * PS)
#define SMALL_CAP (512 << 10)

typedef struct {
    uint64_t page;
    uint8_t *mem;
} rewrite_ctx;

static void rewrite_sync(live_ctx *c, uint64_t *bitmap, uint64_t pages)
{
    rewrite_ctx *r = c->user;
    if (c->syncs != 1 || pages != SMALL_PAGES)
        return;
    memset(r->mem + r->page * PS, 0xa5, PS); /* content A */
    set_bit(bitmap, r->page);
}

static void rewrite_pause(live_ctx *c)
{
    rewrite_ctx *r = c->user;
    ts_fill_random(r->mem + r->page * PS, PS, 0xb); /* content B */
    mfd_mark_dirty(c->s, 0, r->page * PS, PS);
}

/* The one channel whose normal pages grew by one in pass i (0-based). */
static int channel_of_pass(const live_ctx *c, int i)
{
    int ch = -1;
    for (int k = 0; k < 2; k++) {
        const snap *now = &c->after[i], *before = &c->after[i - 1];
        uint64_t d = now->chan_normal[k] - before->chan_normal[k];
        assert_int_equal(now->chan_zero[k], before->chan_zero[k]);
        if (d == 0)
            continue;
        assert_int_equal(d, 1);
        assert_int_equal(ch, -1);
        ch = k;
    }
    assert_int_not_equal(ch, -1);
    return ch;
}

/* A small migration steered pass by pass, and what it needs at the end. */
typedef struct {
    ts_dest ds;
    mfd_session *s;
    live_ctx c;
} small_run;

/*
 * One block "ram0" of SMALL_PAGES pages (blk[0]; dmem[0], when dmem is not
 * NULL, the destination's own memory), the manual tracker on two channels at
 * SMALL_CAP, downtime-limit 1, at most 10 passes, and `param` set to
 * `value`; the callbacks steered by on_sync and on_pause with `user`. It
 * must succeed in three passes, the block arrive whole and the stats agree.
 */
static void small_migrate(small_run *m, uint8_t **blk, uint8_t **dmem,
                          mfd_param param, int64_t value, void *user,
                          void (*on_sync)(live_ctx *, uint64_t *, uint64_t),
                          void (*on_pause)(live_ctx *))
{
    static const char *names[1] = {"ram0"};
    static const size_t lens[1] = {SMALL_LEN};
    dest_start(&m->ds, dmem, names, lens, 1);
    m->s = src_new(MFD_TRACKER_MANUAL, 2);
    assert_int_equal(mfd_set_param(m->s, param, value), 0);
    assert_int_equal(mfd_set_param(m->s, MFD_PARAM_MAX_BANDWIDTH, SMALL_CAP),
                     0);
    assert_int_equal(mfd_set_param(m->s, MFD_PARAM_DOWNTIME_LIMIT, 1), 0);
    assert_int_equal(mfd_set_param(m->s, MFD_PARAM_MAX_ITERATIONS, 10), 0);
    assert_int_equal(mfd_add_block(m->s, names[0], blk[0], lens[0]), 0);
    live_init(&m->c, m->s, NULL);
    m->c.user = user;
    m->c.on_sync = on_sync;
    m->c.on_pause = on_pause;
    migrate_ok(m->s, &m->ds);

    ts_compare_blocks(m->ds.d, blk, names, lens, 1);
    check_live_stats(m->s, m->ds.d, &m->c, SMALL_PAGES);
    assert_int_equal(m->c.npass, 3);
}

static void test_page_rewritten_across_channels(void **state)
{
    (void)state;
    uint8_t *blk[1] = {ts_make_block(SMALL_LEN, 5, true)};
    uint64_t P = 7;
    rewrite_ctx r = {P, blk[0]};
    small_run m;
    /* The destination checks the digest of the memory at the pause. (CRC:
     * see test_live_crc, a known bug.) */
    small_migrate(&m, blk, NULL, MFD_PARAM_VERIFY, 1, &r, rewrite_sync,
                  rewrite_pause);
    const live_ctx *c = &m.c;
    /* pass 1: everything; pass 2: P with A (live); pass 3: P with B. */
    assert_int_equal(c->syncs, 3);
    assert_int_equal(c->pass[0].dirty_pages, 1);
    assert_true(c->pass[0].expected_downtime_ms > 1);
    assert_int_equal(c->pass[1].pages, 1);
    assert_false(c->pass[1].final);
    assert_int_equal(c->pass[1].dirty_pages, 0);
    assert_int_equal(c->pass[2].pages, 1);
    assert_true(c->pass[2].final);
    int ch2 = channel_of_pass(c, 1), ch3 = channel_of_pass(c, 2);
    assert_int_not_equal(ch2, ch3);

    mfd_block_info bi;
    assert_int_equal(mfd_block_get(m.ds.d, 0, &bi), 0);
    uint8_t b[PS];
    ts_fill_random(b, PS, 0xb);
    assert_memory_equal((uint8_t *)bi.host + P * PS, b, PS);

    end_migration(&m.c, m.s, &m.ds);
    munmap(blk[0], SMALL_LEN);
}

/* ---- 4. pages flipping between zero and data, pass after pass ----------- */

typedef struct {
    uint64_t x, y;
    uint8_t *mem;
} flip_ctx;

/* After pass 1: X (data) becomes zero, Y (zero) becomes data. */
static void flip_sync(live_ctx *c, uint64_t *bitmap, uint64_t pages)
{
    flip_ctx *f = c->user;
    if (c->syncs != 1 || pages != SMALL_PAGES)
        return;
    memset(f->mem + f->x * PS, 0, PS);
    ts_fill_random(f->mem + f->y * PS, PS, 0x59);
    set_bit(bitmap, f->x);
    set_bit(bitmap, f->y);
}

/* At the pause: X data again (new content), Y zero again. */
static void flip_pause(live_ctx *c)
{
    flip_ctx *f = c->user;
    ts_fill_random(f->mem + f->x * PS, PS, 0x58);
    memset(f->mem + f->y * PS, 0, PS);
    mfd_mark_dirty(c->s, 0, f->x * PS, PS);
    mfd_mark_dirty(c->s, 0, f->y * PS, PS);
}

static void flip_case(int zpd, bool caller_blocks)
{
    uint8_t *blk[1] = {ts_make_block(SMALL_LEN, 9, true)};
    flip_ctx f = {4, 6, blk[0]};
    /* ts_make_block zeroes every third page: 0, 3, 6, ... */
    assert_false(ts_page_is_zero(blk[0] + f.x * PS));
    assert_true(ts_page_is_zero(blk[0] + f.y * PS));
    uint64_t z1 = ts_zero_pages(blk[0], SMALL_LEN);
    uint8_t *dmem[1] = {caller_blocks ? ts_map_anon(SMALL_LEN) : NULL};

    small_run m;
    small_migrate(&m, blk, caller_blocks ? dmem : NULL,
                  MFD_PARAM_ZERO_PAGE_DETECTION, zpd, &f, flip_sync,
                  flip_pause);
    const live_ctx *c = &m.c;
    assert_int_equal(c->pass[1].pages, 2);
    assert_false(c->pass[1].final);
    assert_int_equal(c->pass[2].pages, 2);
    /* Each later pass: one zero page (X, then Y) and one data page. */
    assert_int_equal(c->after[0].zero, z1);
    assert_int_equal(c->after[0].normal, SMALL_PAGES - z1);
    for (int i = 1; i < 3; i++) {
        assert_int_equal(c->after[i].zero - c->after[i - 1].zero, 1);
        assert_int_equal(c->after[i].normal - c->after[i - 1].normal, 1);
        assert_int_equal(c->after[i].legacy_zero - c->after[i - 1].legacy_zero,
                         zpd == MFD_ZPD_LEGACY ? 1 : 0);
    }
    assert_int_equal(c->after[2].legacy_zero,
                     zpd == MFD_ZPD_LEGACY ? z1 + 2 : 0);

    mfd_block_info bi;
    assert_int_equal(mfd_block_get(m.ds.d, 0, &bi), 0);
    if (caller_blocks)
        assert_ptr_equal(bi.host, dmem[0]);
    uint8_t want[PS];
    ts_fill_random(want, PS, 0x58);
    assert_memory_equal((uint8_t *)bi.host + f.x * PS, want, PS);
    assert_true(ts_page_is_zero((uint8_t *)bi.host + f.y * PS));

    end_migration(&m.c, m.s, &m.ds);
    munmap(blk[0], SMALL_LEN);
    if (dmem[0])
        munmap(dmem[0], SMALL_LEN);
}

static void test_legacy_zero_flip(void **state)
{
    (void)state;
    static const int modes[2] = {MFD_ZPD_LEGACY, MFD_ZPD_MULTIFD};
    for (int m = 0; m < 2; m++)
        for (int caller = 0; caller < 2; caller++)
            flip_case(modes[m], caller);
}

/* ---- 4b. feature CRC in a live migration -------------------------------- */

/*
 * Live passes carry a CRC over the packet alone (crc_scope 0: the pages may
 * change under the checksum), the final pass over packet and payload.
 *
 * (A first version summed the payload into every CRC while the destination
 * checks a scope-0 CRC over the packet alone: every live migration with
 * crc on failed at its first data packet. This test caught it.)
 */
static void test_live_crc(void **state)
{
    (void)state;
    uint8_t *blk[1] = {ts_make_block(SMALL_LEN, 21, true)};
    rewrite_ctx r = {7, blk[0]};
    small_run m;
    small_migrate(&m, blk, NULL, MFD_PARAM_CRC, 1, &r, rewrite_sync,
                  rewrite_pause);
    /* A live pass and the final pass carried data under the CRC. */
    assert_int_equal(m.c.pass[1].pages, 1);
    assert_int_equal(m.c.pass[2].pages, 1);
    end_migration(&m.c, m.s, &m.ds);
    munmap(blk[0], SMALL_LEN);
}

/* ---- 5. cancel in the middle of a pass, or in pause; then again --------- */

typedef struct {
    mfd_session *s;
    uint64_t delay_us;
    uint64_t t_cancel;
    mfd_stats *st; /* the source at the cancel */
} canceller;

static void *cancel_main(void *arg)
{
    canceller *k = arg;
    sleep_us(k->delay_us);
    mfd_get_stats(k->s, k->st);
    k->t_cancel = now_us();
    mfd_cancel(k->s);
    return NULL;
}

static void cancel_in_pause(live_ctx *c)
{
    mfd_cancel(c->s);
}

/* A fresh pair of sessions migrates the same memory, which must arrive. */
static void migrate_again(uint8_t *mem, size_t len)
{
    static const char *names[1] = {"ram0"};
    uint8_t *blk[1] = {mem};
    ts_dest ds;
    dest_start(&ds, NULL, NULL, NULL, 0);
    mfd_session *s = src_new(MFD_TRACKER_MANUAL, 2);
    assert_int_equal(mfd_add_block(s, names[0], mem, len), 0);
    live_ctx c;
    live_init(&c, s, NULL);
    migrate_ok(s, &ds);
    ts_compare_blocks(ds.d, blk, names, &len, 1);
    check_live_stats(s, ds.d, &c, len / PS);
    end_migration(&c, s, &ds);
}

static void test_cancel_mid_pass_then_retry(void **state)
{
    (void)state;
    for (int in_pause = 0; in_pause < 2; in_pause++) {
        /* Mid-pass: 8 MiB at 8 MiB/s, pass 1 takes a second. */
        size_t len = in_pause ? 4u << 20 : 8u << 20;
        uint8_t *mem = ts_make_block(len, 11, in_pause);
        uint8_t *copy = malloc(len);
        assert_non_null(copy);
        memcpy(copy, mem, len);

        ts_dest ds;
        dest_start(&ds, NULL, NULL, NULL, 0);
        mfd_session *s = src_new(MFD_TRACKER_MANUAL, 2);
        if (!in_pause)
            assert_int_equal(
                mfd_set_param(s, MFD_PARAM_MAX_BANDWIDTH, 8 << 20), 0);
        assert_int_equal(mfd_add_block(s, "ram0", mem, len), 0);
        live_ctx c;
        live_init(&c, s, NULL);
        canceller k = {s, 200000, 0, malloc(sizeof(mfd_stats))};
        assert_non_null(k.st);
        pthread_t t;
        if (in_pause)
            c.on_pause = cancel_in_pause;
        else
            assert_int_equal(pthread_create(&t, NULL, cancel_main, &k), 0);
        uint64_t t0 = now_us();
        int rc = mfd_migrate(s, ts_sock_path);
        uint64_t t1 = now_us();
        if (!in_pause)
            pthread_join(t, NULL);
        int drc = ts_dest_join(&ds);

        assert_int_equal(rc, -MFD_ECANCELED);
        assert_non_null(strstr(mfd_last_error(s), "cancelled"));
        assert_int_equal(drc, -MFD_ECANCELED);
        assert_non_null(strstr(mfd_last_error(ds.d), "cancelled"));
        assert_true(t1 - t0 < 5000000);
        mfd_stats *st = src_stats(s);
        assert_int_equal(st->status, 4);
        if (in_pause) {
            /* Paused, so resumed: once each. */
            assert_int_equal(c.pauses, 1);
            assert_int_equal(c.resumes, 1);
            assert_int_equal(c.npass, 1);
        } else {
            /* Cancelled inside pass 1: never paused, never resumed. */
            assert_int_equal(c.pauses, 0);
            assert_int_equal(c.resumes, 0);
            assert_int_equal(c.npass, 0);
            assert_int_equal(k.st->iterations, 0);
            assert_true(k.st->normal_pages > 0);
            assert_true(k.st->normal_pages < len / PS);
            assert_true(t1 - k.t_cancel < 1000000);
            assert_int_equal(st->iterations, 0);
            print_message("cancel: %" PRIu64 " of %zu pages sent, returned "
                          "%" PRIu64 " us after the cancel\n",
                          k.st->normal_pages, len / PS, t1 - k.t_cancel);
        }
        free(st);
        free(k.st);
        end_migration(&c, s, &ds);

        /* The source's memory is as it was, and it can be migrated again. */
        assert_true(memcmp(mem, copy, len) == 0);
        migrate_again(mem, len);
        assert_true(memcmp(mem, copy, len) == 0);
        free(copy);
        munmap(mem, len);
    }
}

/* ---- 6. max-bandwidth holds --------------------------------------------- */

static void test_max_bandwidth_holds(void **state)
{
    (void)state;
    static const char *names[1] = {"ram0"};
    const size_t lens[1] = {32u << 20};
    const int64_t cap = 64 << 20;
    uint8_t *blk[1] = {ts_make_block(lens[0], 13, false)};
    assert_int_equal(ts_zero_pages(blk[0], lens[0]), 0);

    ts_dest ds;
    dest_start(&ds, NULL, NULL, NULL, 0);
    mfd_session *s = src_new(MFD_TRACKER_NONE, 2);
    assert_int_equal(mfd_set_param(s, MFD_PARAM_MAX_BANDWIDTH, cap), 0);
    assert_int_equal(mfd_add_block(s, names[0], blk[0], lens[0]), 0);
    migrate_ok(s, &ds);
    ts_compare_blocks(ds.d, blk, names, lens, 1);

    mfd_stats *st = src_stats(s);
    assert_int_equal(st->iterations, 1);
    assert_int_equal(st->normal_pages, lens[0] / PS);
    assert_true(st->data_bytes > lens[0]);
    assert_true(st->total_time_us > st->setup_time_us);
    double rate = (double)st->data_bytes * 1e6 /
                  (double)(st->total_time_us - st->setup_time_us);
    double ratio = rate / (double)cap;
    print_message("max-bandwidth %" PRId64 " B/s: sent %" PRIu64 " bytes in "
                  "%" PRIu64 " us: %.0f B/s, ratio %.3f\n",
                  cap, st->data_bytes, st->total_time_us - st->setup_time_us,
                  rate, ratio);
    if (ratio < 0.80 || ratio > 1.05)
        fail_msg("rate %.0f B/s is %.3f of max-bandwidth %" PRId64, rate,
                 ratio, cap);
    free(st);
    end_migration(NULL, s, &ds);
    munmap(blk[0], lens[0]);
}

/* ---- 7. uffd-wp on shared memory; what it must refuse -------------------- */

/*
 * uffd-wp refused the block (named, quoted, in the error) before the first
 * pass: the migration failed on both sides, never paused nor resumed.
 */
static void check_wp_refused(mfd_session *s, int rc, int drc,
                             const live_ctx *c, const char *quoted_name)
{
    assert_int_equal(rc, -MFD_ESYS);
    assert_int_not_equal(drc, 0);
    assert_non_null(strstr(mfd_last_error(s), quoted_name));
    assert_non_null(strstr(mfd_last_error(s), "cannot write-protect"));
    assert_int_equal(c->pauses, 0);
    assert_int_equal(c->resumes, 0);
}

static void test_uffd_wp_shm_and_refusals(void **state)
{
    (void)state;
    static const char *names[1] = {"shm"};
    const size_t lens[1] = {8u << 20};

    /* (a) A MAP_SHARED memfd block, a writer, uffd-wp: migrates whole. */
    int mfd = memfd_create("mfd-live", MFD_CLOEXEC);
    assert_true(mfd >= 0);
    assert_int_equal(ftruncate(mfd, (off_t)lens[0]), 0);
    uint8_t *blk[1];
    blk[0] = mmap(NULL, lens[0], PROT_READ | PROT_WRITE, MAP_SHARED, mfd, 0);
    assert_true(blk[0] != MAP_FAILED);
    ts_fill_block(blk[0], lens[0], 17, true);

    ts_dest ds;
    mfd_session *s = wp_pair(&ds, names[0], blk[0], lens[0]);
    writer w;
    live_ctx c;
    live_init(&c, s, &w);
    writer_init(&w, NULL, blk, lens, 1, 8, 99, -1);
    int drc, rc = migrate_both(s, &ds, &drc);
    bool skipped = tracker_unavailable(s, rc);
    if (skipped) {
        print_message("uffd-wp on shmem skipped: %s\n", mfd_last_error(s));
    } else {
        if (rc || drc)
            fail_msg("migrate: %s; incoming: %s", mfd_last_error(s),
                     mfd_last_error(ds.d));
        ts_compare_blocks(ds.d, blk, names, lens, 1);
        check_live_stats(s, ds.d, &c, lens[0] / PS);
        mfd_stats *st = src_stats(s);
        assert_true(pages_after_pass1(st) > 0);
        free(st);
    }
    writer_destroy(&w);
    end_migration(&c, s, &ds);
    munmap(blk[0], lens[0]);
    close(mfd);

    /*
     * (b) Regular files on a disk filesystem (not tmpfs), mapped shared.
     *
     * (b1) Read-only (the vma cannot become writable): no kernel lets
     * userfaultfd write-protect it; the refusal names the block.
     *
     * (b2) Read-write. Expected refused by the library's own account ("it
     * tracks anonymous, shmem/tmpfs and hugetlbfs mappings"), but since
     * Linux 6.7 UFFDIO_REGISTER accepts a WP-only registration of any memory
     * once UFFD_FEATURE_WP_ASYNC is on - the very feature the tracker
     * requires - so on such kernels it is not refused (reported). Either
     * way must be right: a refusal names the block; an acceptance tracks
     * every write (a writer running, and writeback cleaning the pages under
     * it) and the memory arrives whole.
     */
    char path[PATH_MAX];
    const char *dirs[2] = {".", "/var/tmp"};
    int fd = -1;
    for (int i = 0; i < 2 && fd < 0; i++) {
        struct statfs sf;
        if (statfs(dirs[i], &sf) || sf.f_type == TMPFS_MAGIC ||
            sf.f_type == RAMFS_MAGIC)
            continue;
        snprintf(path, sizeof(path), "%s/mfd-live-%d.img", dirs[i],
                 (int)getpid());
        fd = open(path, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
        if (fd >= 0)
            unlink(path);
    }
    if (fd < 0) {
        print_message("no disk filesystem at . or /var/tmp: file cases "
                      "skipped\n");
    } else if (!skipped) {
        const char *fnames[1] = {"disk-file"};
        size_t flen[1] = {2u << 20};
        assert_int_equal(ftruncate(fd, (off_t)flen[0]), 0);
        uint8_t *fm[1];
        fm[0] = mmap(NULL, flen[0], PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
        assert_true(fm[0] != MAP_FAILED);
        ts_fill_block(fm[0], flen[0], 19, true);

        /* (b1) */
        char self[64];
        snprintf(self, sizeof(self), "/proc/self/fd/%d", fd);
        int rfd = open(self, O_RDONLY | O_CLOEXEC);
        assert_true(rfd >= 0);
        uint8_t *ro = mmap(NULL, flen[0], PROT_READ, MAP_SHARED, rfd, 0);
        assert_true(ro != MAP_FAILED);
        s = wp_pair(&ds, "rom-file", ro, flen[0]);
        live_init(&c, s, NULL);
        rc = migrate_both(s, &ds, &drc);
        print_message("uffd-wp on a read-only file mapping: %s: %s\n",
                      mfd_err_name(rc), mfd_last_error(s));
        check_wp_refused(s, rc, drc, &c, "'rom-file'");
        end_migration(&c, s, &ds);
        munmap(ro, flen[0]);
        close(rfd);

        /* (b2) */
        s = wp_pair(&ds, fnames[0], fm[0], flen[0]);
        live_init(&c, s, &w);
        writer_init(&w, NULL, fm, flen, 1, 4, 1234, fd);
        rc = migrate_both(s, &ds, &drc);
        print_message("uffd-wp on a read-write disk file mapping: %s%s%s\n",
                      mfd_err_name(rc), rc ? ": " : " (not refused: tracked)",
                      mfd_last_error(s));
        if (rc) {
            check_wp_refused(s, rc, drc, &c, "'disk-file'");
        } else {
            if (drc)
                fail_msg("incoming: %s", mfd_last_error(ds.d));
            ts_compare_blocks(ds.d, fm, fnames, flen, 1);
            check_live_stats(s, ds.d, &c, flen[0] / PS);
            assert_true(c.pass[c.npass - 1].pages > 0);
        }
        writer_destroy(&w);
        end_migration(&c, s, &ds);
        munmap(fm[0], flen[0]);
    }
    if (fd >= 0)
        close(fd);

    /* (c) A live tracker needs a pause callback: refused before connecting. */
    static uint8_t mem[8192] __attribute__((aligned(4096)));
    static const int trackers[2] = {MFD_TRACKER_MANUAL, MFD_TRACKER_UFFD_WP};
    for (int i = 0; i < 2; i++)
        for (int with_ops = 0; with_ops < 2; with_ops++) {
            s = src_new(trackers[i], 1);
            assert_int_equal(mfd_add_block(s, "a", mem, sizeof(mem)), 0);
            if (with_ops) {
                mfd_live_ops ops = {.resume = cb_resume,
                                    .progress = cb_progress};
                assert_int_equal(mfd_set_live_ops(s, &ops, NULL), 0);
            }
            assert_int_equal(mfd_migrate(s, "unix:/tmp/mfd-live-nobody.sock"),
                             -MFD_EINVAL);
            assert_non_null(strstr(mfd_last_error(s), "pause"));
            mfd_session_free(s);
        }
    if (skipped)
        skip();
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_live_manual_converges),
        cmocka_unit_test(test_live_uffd_wp_max_iterations),
        cmocka_unit_test(test_page_rewritten_across_channels),
        cmocka_unit_test(test_legacy_zero_flip),
        cmocka_unit_test(test_live_crc),
        cmocka_unit_test(test_cancel_mid_pass_then_retry),
        cmocka_unit_test(test_max_bandwidth_holds),
        cmocka_unit_test(test_uffd_wp_shm_and_refusals),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
