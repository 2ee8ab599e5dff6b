/*
 * test_colo.c - the COLO API in one process: a primary (manual tracker, no
 * writer threads: the test writes between checkpoints it asks for with
 * mfd_colo_checkpoint) and a secondary on its own thread.
 *
 * Checked: after every committed checkpoint the replica equals the
 * primary's memory at that checkpoint's pause (a page written, a page
 * turned zero and back, a checkpoint with nothing dirty); the device state
 * of each checkpoint; mfd_colo_stop ends both sides with COMPLETE/DONE and
 * the secondary's blocks are then the replica; the stats count the
 * checkpoints.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include <cmocka.h>
#include <xxhash.h>

#include "multifd.h"
#include "support.h"

#define LEN (4u << 20)
#define MAXCK 16

static struct {
    pthread_mutex_t lock;
    pthread_cond_t cond;
    uint8_t *mem;          /* the primary's block */
    mfd_session *s, *d;
    uint64_t pauses;
    uint64_t want[MAXCK];  /* digest of mem at pause k (checkpoint k) */
    uint64_t got[MAXCK];   /* digest of the replica after commit k */
    uint64_t committed;    /* commits seen */
    uint64_t acked;        /* last acknowledged id */
    uint64_t resumes;      /* resume callbacks (the first: after checkpoint 0) */
    char dev[32];
} g = {PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER};

static void on_pause(void *opaque)
{
    (void)opaque;
    uint64_t k = g.pauses++;
    if (k < MAXCK)
        g.want[k] = XXH3_64bits(g.mem, LEN);
    snprintf(g.dev, sizeof(g.dev), "device state %" PRIu64, k);
    mfd_set_device_state(g.s, g.dev, strlen(g.dev) + 1);
}

static void on_resume(void *opaque)
{
    (void)opaque;
    pthread_mutex_lock(&g.lock);
    g.resumes++;
    pthread_cond_broadcast(&g.cond);
    pthread_mutex_unlock(&g.lock);
}

static void on_checkpoint(void *opaque, const mfd_checkpoint_info *c)
{
    (void)opaque;
    pthread_mutex_lock(&g.lock);
    g.acked = c->id;
    pthread_cond_broadcast(&g.cond);
    pthread_mutex_unlock(&g.lock);
}

static void on_committed(void *opaque, uint64_t id)
{
    mfd_session *d = opaque;
    mfd_block_info b;
    if (id < MAXCK && mfd_block_get(d, 0, &b) == 0)
        g.got[id] = XXH3_64bits(b.host, b.length);
    g.committed++;
}

static void *secondary_main(void *arg)
{
    mfd_session *d = arg;
    return (void *)(intptr_t)mfd_incoming(d);
}

static void *primary_main(void *arg)
{
    mfd_session *s = arg;
    return (void *)(intptr_t)mfd_migrate(s, ts_sock_path);
}

/* Asks for checkpoint `id` and waits for its ACK. */
static void checkpoint(uint64_t id)
{
    assert_int_equal(mfd_colo_checkpoint(g.s), 0);
    pthread_mutex_lock(&g.lock);
    while (g.acked < id)
        pthread_cond_wait(&g.cond, &g.lock);
    pthread_mutex_unlock(&g.lock);
}

static void write_page(uint64_t page, uint8_t v)
{
    memset(g.mem + page * TS_PAGE, v, TS_PAGE);
    assert_int_equal(mfd_mark_dirty(g.s, 0, page * TS_PAGE, TS_PAGE), 0);
}

static void test_colo_checkpoints(void **state)
{
    (void)state;
    g.mem = ts_make_block(LEN, 3, true);
    mfd_session *d = ts_listening_dest("colo");
    mfd_colo_ops dops = {.committed = on_committed};
    assert_int_equal(mfd_set_param(d, MFD_PARAM_COLO, 1), 0);
    assert_int_equal(mfd_set_colo_ops(d, &dops, d), 0);
    pthread_t dt, st;
    assert_int_equal(pthread_create(&dt, NULL, secondary_main, d), 0);

    mfd_session *s = mfd_session_new();
    g.s = s;
    mfd_set_log(s, ts_quiet, NULL);
    mfd_live_ops lops = {.pause = on_pause, .resume = on_resume};
    mfd_colo_ops cops = {.checkpoint = on_checkpoint};
    assert_int_equal(mfd_set_param(s, MFD_PARAM_COLO, 1), 0);
    assert_int_equal(mfd_set_param(s, MFD_PARAM_CHANNELS, 3), 0);
    /* Checkpoints only when asked. */
    assert_int_equal(mfd_set_param(s, MFD_PARAM_CHECKPOINT_INTERVAL, 3600000), 0);
    assert_int_equal(mfd_set_param_by_name(s, "dirty-tracker", "manual"), 0);
    assert_int_equal(mfd_set_live_ops(s, &lops, NULL), 0);
    assert_int_equal(mfd_set_colo_ops(s, &cops, NULL), 0);
    assert_int_equal(mfd_add_block(s, "ram", g.mem, LEN), 0);
    assert_int_equal(pthread_create(&st, NULL, primary_main, s), 0);

    /*
     * Checkpoint 0 is committed and the "writers" (this thread) resumed:
     * waiting on the resume callback orders these writes after the
     * channels' reads of the migration.
     */
    pthread_mutex_lock(&g.lock);
    while (!g.resumes)
        pthread_cond_wait(&g.cond, &g.lock);
    pthread_mutex_unlock(&g.lock);
    assert_int_equal(mfd_colo_state_get(s), MFD_COLO_PROTECTED);
    write_page(5, 0xaa);              /* a page written */
    write_page(6, 0);                 /* a data page turned zero */
    checkpoint(1);
    write_page(6, 0x55);              /* and back */
    write_page(1000, 0x11);
    checkpoint(2);
    checkpoint(3);                    /* nothing dirty */
    write_page(7, 0);
    write_page(8, 0x77);
    checkpoint(4);
    assert_int_equal(mfd_colo_stop(s), 0);

    void *rs, *rd;
    pthread_join(st, &rs);
    pthread_join(dt, &rd);
    assert_int_equal((int)(intptr_t)rs, 0);
    assert_int_equal((int)(intptr_t)rd, 0);
    assert_int_equal(mfd_colo_state_get(s), MFD_COLO_STOPPED);
    assert_int_equal(mfd_colo_state_get(d), MFD_COLO_STOPPED);

    /* Every commit equalled the memory at its pause. */
    assert_int_equal(g.committed, 5);
    for (int k = 0; k <= 4; k++)
        assert_true(g.got[k] == g.want[k]);
    /* The blocks are the replica: the last checkpoint's memory. */
    mfd_block_info b;
    assert_int_equal(mfd_block_get(d, 0, &b), 0);
    assert_memory_equal(b.host, g.mem, LEN);
    const void *dev;
    size_t dev_len;
    assert_int_equal(mfd_get_device_state(d, &dev, &dev_len), 0);
    assert_string_equal((const char *)dev, "device state 4");

    mfd_stats ss, ds;
    mfd_get_stats(s, &ss);
    mfd_get_stats(d, &ds);
    assert_int_equal(ss.colo_checkpoints, 4);
    assert_int_equal(ds.colo_checkpoints, 4);
    assert_int_equal(ds.colo_last_id, 4);
    mfd_session_free(s);
    mfd_session_free(d);
    munmap(g.mem, LEN);
}

/* Refusals: COLO needs a tracker, a network URI, no verify; both sides. */
static void test_colo_refusals(void **state)
{
    (void)state;
    uint8_t *mem = ts_make_block(LEN, 4, false);
    mfd_session *s = mfd_session_new();
    mfd_set_log(s, ts_quiet, NULL);
    assert_int_equal(mfd_set_param(s, MFD_PARAM_COLO, 1), 0);
    assert_int_equal(mfd_add_block(s, "ram", mem, LEN), 0);
    assert_int_equal(mfd_migrate(s, "tcp:127.0.0.1:1"), -MFD_EINVAL);
    assert_non_null(strstr(mfd_last_error(s), "x-colo"));
    mfd_session_free(s);

    /* A destination without x-colo refuses a COLO source by name. */
    mfd_session *d = ts_listening_dest("colo-refuse");
    ts_dest dt;
    ts_dest_start(&dt, d);
    s = mfd_session_new();
    mfd_set_log(s, ts_quiet, NULL);
    mfd_live_ops lops = {.pause = on_pause, .resume = on_resume};
    g.s = s;
    g.mem = mem;
    assert_int_equal(mfd_set_param(s, MFD_PARAM_COLO, 1), 0);
    assert_int_equal(mfd_set_param_by_name(s, "dirty-tracker", "manual"), 0);
    assert_int_equal(mfd_set_live_ops(s, &lops, NULL), 0);
    assert_int_equal(mfd_add_block(s, "ram", mem, LEN), 0);
    assert_int_equal(mfd_migrate(s, ts_sock_path), -MFD_EREFUSED);
    assert_non_null(strstr(mfd_last_error(s), "COLO"));
    assert_true(ts_dest_join(&dt) < 0);
    mfd_session_free(s);
    mfd_session_free(d);
    munmap(mem, LEN);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_colo_checkpoints),
        cmocka_unit_test(test_colo_refusals),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
