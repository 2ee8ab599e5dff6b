/*
 * colo.c - COLO sessions (PROTOCOL.md 4, seed 003): heartbeats on both
 * sides, and the secondary's COLO cache, per-checkpoint record and commit.
 *
 * The primary's checkpoint loop is the pre-copy loop continued (send.c,
 * colo_run). The secondary receives every page - of the initial migration
 * and of each checkpoint - into the COLO cache (the block's `host`, filled
 * by the ordinary channel threads), and records it in the checkpoint's
 * bitmaps (ckpt_map, and ckpt_zero for a page that came as zero). On
 * CHECKPOINT_END, with every channel parked at the checkpoint's SYNC, the
 * main thread (helped by a thread per further channel when the checkpoint
 * is large) copies the recorded pages into the replica: normal pages from
 * the cache, zero pages as zero (only where the replica held data), then
 * acknowledges. So the replica only ever holds complete checkpoints: the
 * first commit (checkpoint 0) copies the whole migrated state, and a
 * checkpoint cut off midway never reaches it.
 */
#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <sys/mman.h>
#include <time.h>

#include "colo/colo.h"
#include "common/util.h"
#include "protocol/wire.h"
#include "ram/bitmap.h"
#include "transport/transport.h"

/* ---- API ----------------------------------------------------------------- */

MFD_API int mfd_set_colo_ops(mfd_session *s, const mfd_colo_ops *ops,
                             void *opaque)
{
    if (!s || !ops)
        return -MFD_EINVAL;
    if (s->used)
        return mfd__set_error(s, MFD_ESTATE, "session already used");
    s->colo_ops = *ops;
    s->colo_opaque = opaque;
    return 0;
}

static int colo_request(mfd_session *s, int *flag)
{
    if (!s)
        return -MFD_EINVAL;
    __atomic_store_n(flag, 1, __ATOMIC_RELEASE);
    pthread_mutex_lock(&s->lock);
    pthread_cond_broadcast(&s->cond);
    pthread_mutex_unlock(&s->lock);
    return 0;
}

MFD_API int mfd_colo_checkpoint(mfd_session *s)
{
    return colo_request(s, s ? &s->colo_now : NULL);
}

MFD_API int mfd_colo_stop(mfd_session *s)
{
    return colo_request(s, s ? &s->colo_stop : NULL);
}

MFD_API mfd_colo_state mfd_colo_state_get(const mfd_session *s)
{
    return s ? (mfd_colo_state)MFD_STAT_GET(s->colo_state) : MFD_COLO_OFF;
}

/* ---- heartbeats ------------------------------------------------------------ */

static void *heartbeat_main(void *arg)
{
    mfd_session *s = arg;
    pthread_setname_np(pthread_self(), "mfd-heartbeat");
    pthread_mutex_lock(&s->lock);
    while (!s->hb_quit && !mfd__failed(s)) {
        struct timespec ts = mfd__cond_deadline((uint64_t)s->hb_interval * 1000);
        pthread_cond_timedwait(&s->hb_cond, &s->lock, &ts);
        if (s->hb_quit || mfd__failed(s))
            break;
        pthread_mutex_unlock(&s->lock);
        /* A failed write is the other threads' to notice and report. */
        mfd__send_record(s, MFD_REC_HEARTBEAT, NULL, 0);
        pthread_mutex_lock(&s->lock);
    }
    pthread_mutex_unlock(&s->lock);
    return NULL;
}

int mfd__colo_hb_start(mfd_session *s)
{
    s->hb_quit = false;
    if (pthread_create(&s->hb_thread, NULL, heartbeat_main, s))
        return mfd__fail(s, MFD_ESYS, "pthread_create failed");
    s->hb_started = true;
    return 0;
}

void mfd__colo_hb_stop(mfd_session *s)
{
    if (!s->hb_started)
        return;
    pthread_mutex_lock(&s->lock);
    s->hb_quit = true;
    pthread_cond_broadcast(&s->hb_cond);
    pthread_mutex_unlock(&s->lock);
    pthread_join(s->hb_thread, NULL);
    s->hb_started = false;
}

/* ---- secondary --------------------------------------------------------------- */

void *mfd__colo_map(mfd_session *s, const mfd_block *b, int flags,
                    const char *what)
{
    void *p = mmap(NULL, b->length, PROT_READ | PROT_WRITE,
                   MAP_PRIVATE | MAP_ANONYMOUS | flags, -1, 0);
    if (p != MAP_FAILED)
        return p;
    mfd__fail(s, MFD_ENOMEM, "%s of block '%s': mmap of %" PRIu64 " bytes: %s",
              what, b->name, b->length, strerror(errno));
    return NULL;
}

int mfd__colo_secondary_setup(mfd_session *s)
{
    if (s->blocks_from_caller || s->incoming_dir || s->nfiles)
        return mfd__fail(s, MFD_EREFUSED,
                         "x-colo: the secondary maps its own COLO cache and "
                         "replica (no caller blocks or incoming files)");
    for (int i = 0; i < s->nblocks; i++) {
        mfd_block *b = &s->blocks[i];
        if (!(b->replica = mfd__colo_map(s, b, MAP_NORESERVE,
                                         "x-colo: the replica")))
            return -1;
        if (!(b->ckpt_map = mfd__bitmap_new(b->pages)) ||
            !(b->ckpt_zero = mfd__bitmap_new(b->pages)) ||
            !(b->replica_map = mfd__bitmap_new(b->pages)))
            return mfd__fail(s, MFD_ENOMEM, "out of memory");
    }
    MFD_STAT_SET(s->colo_state, MFD_COLO_MIGRATING);
    return 0;
}

int mfd__colo_begin(mfd_session *s, const uint8_t *body, uint32_t len)
{
    if (!(s->features & MFD_FEAT_COLO))
        return mfd__fail(s, MFD_EPROTO,
                         "CHECKPOINT_BEGIN without feature COLO negotiated");
    if (len != 8)
        return mfd__fail(s, MFD_EPROTO,
                         "CHECKPOINT_BEGIN: body length %u (must be 8)", len);
    uint64_t id = mfd__get_be64(body);
    if (id != s->colo_next_id || s->colo_in_ckpt)
        return mfd__fail(s, MFD_EPROTO,
                         "CHECKPOINT_BEGIN %" PRIu64 ": expected %s%" PRIu64,
                         id, s->colo_in_ckpt ? "CHECKPOINT_END " : "",
                         s->colo_next_id);
    if (!s->device_state_done)
        return mfd__fail(s, MFD_EPROTO,
                         "CHECKPOINT_BEGIN %" PRIu64 " before the last "
                         "DEVICE_STATE chunk",
                         id);
    s->colo_in_ckpt = true;
    /* Checkpoint 0 is the migration just done, with its device state. */
    if (id) {
        free(s->device_state);
        s->device_state = NULL;
        s->device_state_len = 0;
        s->device_state_done = false;
    }
    return 0;
}

/*
 * Copies the recorded pages of block b's bitmap words [from, to) from the
 * cache to the replica, and clears their record.
 */
static void commit_words(mfd_session *s, mfd_block *b, uint64_t from,
                         uint64_t to)
{
    uint32_t ps = (uint32_t)s->page_size;
    for (uint64_t w = from; w < to; w++) {
        uint64_t rec = __atomic_exchange_n(&b->ckpt_map[w], 0,
                                           __ATOMIC_RELAXED);
        if (!rec)
            continue;
        uint64_t zero = __atomic_exchange_n(&b->ckpt_zero[w], 0,
                                            __ATOMIC_RELAXED) & rec;
        uint64_t data = rec & ~zero;
        while (data) {
            uint64_t first, run = mfd__bits_take_run(&data, &first);
            uint64_t off = (w * 64 + first) * ps;
            memcpy(b->replica + off, b->host + off, run * ps);
        }
        /* A zero page needs work only where the replica held data. */
        for (uint64_t z = zero & b->replica_map[w]; z; z &= z - 1)
            memset(b->replica + (w * 64 + (uint64_t)__builtin_ctzll(z)) * ps,
                   0, ps);
        b->replica_map[w] = (b->replica_map[w] | rec) & ~zero;
    }
}

/* The most threads a checkpoint copy uses, and the least it gives each. */
#define COPY_THREADS_MAX 8
#define COPY_BYTES_PER_THREAD (8u << 20)

typedef struct {
    mfd_session *s;
    mfd__colo_words_fn *fn;
    uint64_t from, to; /* bitmap words, counted across the blocks in order */
    pthread_t thread;
} copy_part;

static void copy_share(const copy_part *p)
{
    uint64_t base = 0;
    for (int i = 0; i < p->s->nblocks && base < p->to; i++) {
        mfd_block *b = &p->s->blocks[i];
        uint64_t words = (b->pages + 63) / 64;
        uint64_t from = p->from > base ? p->from - base : 0;
        uint64_t to = MFD_MIN(words, p->to - base);
        base += words;
        if (from < to)
            p->fn(p->s, b, from, to);
    }
}

static void *copy_main(void *arg)
{
    copy_share(arg);
    return NULL;
}

void mfd__colo_parallel(mfd_session *s, uint64_t bytes, mfd__colo_words_fn *fn)
{
    uint64_t words = 0;
    for (int i = 0; i < s->nblocks; i++)
        words += (s->blocks[i].pages + 63) / 64;
    long cpus = sysconf(_SC_NPROCESSORS_ONLN);
    uint64_t nt = MFD_MIN((uint64_t)s->nchan, (uint64_t)COPY_THREADS_MAX);
    nt = MFD_MIN(nt, cpus > 0 ? (uint64_t)cpus : 1);
    nt = MFD_MIN(nt, bytes / COPY_BYTES_PER_THREAD + 1);
    copy_part part[COPY_THREADS_MAX];
    uint64_t started = 0;
    for (uint64_t t = 0; t < nt; t++)
        part[t] = (copy_part){.s = s, .fn = fn, .from = words * t / nt,
                              .to = words * (t + 1) / nt};
    for (uint64_t t = 1; t < nt; t++) {
        if (pthread_create(&part[t].thread, NULL, copy_main, &part[t]))
            break;
        started = t;
    }
    /* This thread takes the first share, and those no thread took. */
    copy_share(&part[0]);
    if (started + 1 < nt) {
        part[0].from = part[started + 1].from;
        part[0].to = words;
        copy_share(&part[0]);
    }
    for (uint64_t t = 1; t <= started; t++)
        pthread_join(part[t].thread, NULL);
}

/*
 * Copies the recorded pages of the checkpoint from the cache to the
 * replica, in parallel (mfd__colo_parallel: the secondary's share of cores
 * is its channel count). The channels are parked at their SYNC meanwhile,
 * so nothing else touches the cache or the record.
 */
static void commit(mfd_session *s)
{
    uint64_t pages = 0;
    for (int i = 0; i < s->nblocks; i++) {
        mfd_block *b = &s->blocks[i];
        uint64_t n = (b->pages + 63) / 64;
        for (uint64_t w = 0; w < n; w++)
            pages += (uint64_t)__builtin_popcountll(b->ckpt_map[w]);
    }
    mfd__colo_parallel(s, pages * s->page_size, commit_words);
}

int mfd__colo_end(mfd_session *s, const uint8_t *body, uint32_t len)
{
    if (len != 8)
        return mfd__fail(s, MFD_EPROTO,
                         "CHECKPOINT_END: body length %u (must be 8)", len);
    uint64_t id = mfd__get_be64(body);
    if (!s->colo_in_ckpt || id != s->colo_next_id)
        return mfd__fail(s, MFD_EPROTO, "CHECKPOINT_END %" PRIu64 " %s",
                         id,
                         s->colo_in_ckpt ? "does not match its BEGIN"
                                         : "without CHECKPOINT_BEGIN");
    if (!s->device_state_done)
        return mfd__fail(s, MFD_EPROTO,
                         "CHECKPOINT_END %" PRIu64 " before the last "
                         "DEVICE_STATE chunk",
                         id);
    commit(s);
    free(s->colo_dev);
    s->colo_dev = s->device_state;
    s->colo_dev_len = s->device_state_len;
    s->device_state = NULL;
    s->device_state_len = 0;
    s->colo_in_ckpt = false;
    s->colo_next_id = id + 1;
    uint8_t ack[8];
    mfd__put_be64(ack, id);
    if (mfd__send_record(s, MFD_REC_CHECKPOINT_ACK, ack, 8) != MFD_IO_OK)
        return mfd__fail(s, MFD_ECLOSED, "main channel: CHECKPOINT_ACK: %s",
                         strerror(errno));
    if (id)
        MFD_STAT_ADD(s->colo_ckpts, 1);
    MFD_STAT_SET(s->colo_last_id, id);
    MFD_STAT_SET(s->colo_state, MFD_COLO_PROTECTED);
    if (s->colo_ops.committed)
        s->colo_ops.committed(s->colo_opaque, id);
    return 0;
}

bool mfd__colo_can_promote(const mfd_session *s)
{
    return MFD_STAT_GET(s->colo_state) == MFD_COLO_PROTECTED &&
           mfd__error_code((mfd_session *)s) != MFD_ECANCELED;
}

void mfd__colo_finish(mfd_session *s, int state)
{
    for (int i = 0; i < s->nblocks; i++) {
        mfd_block *b = &s->blocks[i];
        if (!b->replica)
            continue;
        if (b->mapped)
            munmap(b->host, b->length);
        b->host = b->replica;
        b->replica = NULL;
        b->mapped = true;
        free(b->receivedmap);
        b->receivedmap = b->replica_map;
        b->replica_map = NULL;
    }
    free(s->device_state);
    s->device_state = s->colo_dev;
    s->device_state_len = s->colo_dev_len;
    s->colo_dev = NULL;
    s->colo_dev_len = 0;
    MFD_STAT_SET(s->colo_state, state);
}
