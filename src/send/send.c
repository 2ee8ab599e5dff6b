/*
 * send.c - the source: session setup, the migration thread's page walk, the
 * send channel threads, and the return path that waits for DONE.
 *
 * The data path allocates nothing per batch: the migration thread fills its
 * batch of offsets and swaps it with an idle channel's empty one; the
 * channel thread detects zero pages in place, writes the packet header and
 * the page payload with one sendmsg straight from block memory.
 */
#include <errno.h>
#include <inttypes.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/random.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

#include "common/util.h"
#include "colo/colo.h"
#include "core/session.h"
#include "file/file.h"
#include "protocol/crc32c.h"
#include "ram/bitmap.h"
#include "ram/dirty.h"
#include "ram/untouched.h"
#include "ram/zero.h"
#include "transport/transport.h"
#include "transport/tls.h"

/* ---- channel thread ---------------------------------------------------- */

/*
 * Zero detection of mode multifd: partitions the batch in place so normal
 * pages come first, keeping their order (so adjacent pages still coalesce
 * into one iovec), and zero pages last. Returns the number of normal pages;
 * *unread counts the zero pages the untouched map vouched for unread.
 */
static uint32_t partition_zero(const uint8_t *host, uint64_t *off, uint32_t num,
                               uint32_t ps, const uint64_t *untouched,
                               uint32_t *unread)
{
    uint32_t w = 0;
    *unread = 0;
    for (uint32_t i = 0; i < num; i++) {
        if (untouched && mfd__bitmap_test(untouched, off[i] / ps)) {
            ++*unread;
            continue;
        }
        if (mfd__buffer_is_zero(host + off[i], ps))
            continue;
        if (w != i) {
            uint64_t t = off[w];
            off[w] = off[i];
            off[i] = t;
        }
        w++;
    }
    return w;
}

/*
 * max-bandwidth: every packet takes its slot on one timeline shared by all
 * channels (bytes / rate long) and waits for the slot's start, so over any
 * interval the channels together send at most the rate, plus one packet,
 * plus what they fell behind in the last 20 ms: a channel held up (two busy
 * cores) may catch up that much, no more, so idle time is not saved up.
 */
#define MFD_PACE_SLACK_US 20000
static void pace(mfd_session *s, uint64_t bytes)
{
    uint64_t rate = __atomic_load_n(&s->rl_rate, __ATOMIC_RELAXED);
    if (!rate)
        return;
    uint64_t now = mfd__now_us();
    pthread_mutex_lock(&s->rl_lock);
    uint64_t start = MFD_MAX(s->rl_next_us, now - MFD_PACE_SLACK_US);
    s->rl_next_us = start + bytes * 1000000 / rate;
    pthread_mutex_unlock(&s->rl_lock);
    /* The wake eventfd turns readable on any failure: no long sleep then. */
    while (start > now && !mfd__failed(s)) {
        struct pollfd p = {.fd = s->wake_fd, .events = POLLIN};
        poll(&p, 1, (int)((start - now + 999) / 1000));
        now = mfd__now_us();
    }
}

/* ---- zero-copy send ------------------------------------------------------ */

/* Takes the completions the kernel reported; timeout_ms 0: no waiting. */
static int zc_reap(mfd_send_chan *ch, int timeout_ms)
{
    mfd_session *s = ch->s;
    uint64_t done = 0, copied = 0;
    int rc = mfd__zc_reap(ch->fd, s->wake_fd, timeout_ms, &done, &copied);
    ch->zc_done += done;
    MFD_STAT_ADD(ch->st.zerocopy_notifications, done);
    if (copied) {
        MFD_STAT_ADD(ch->st.zerocopy_copied, copied);
        __atomic_store_n(&ch->zc_copied, true, __ATOMIC_RELAXED);
    }
    if (rc && errno == ECANCELED)
        return -1;
    if (rc)
        return mfd__fail(s, MFD_ESYS, "channel %u: zero-copy completions: %s",
                         ch->id, strerror(errno));
    return 0;
}

/*
 * Waits until the kernel is done with every page this channel handed it.
 * Called before each SYNC, so every pass ends with nothing in flight (seed
 * 004: a page changed after its zero-copy send is dirty and goes again in
 * the next pass, so flushing once per pass is enough; and the last flush
 * means DONE can only come after all of the final pass really left).
 */
static int zc_flush(mfd_send_chan *ch)
{
    mfd_session *s = ch->s;
    uint64_t last = mfd__now_us(), seen = ch->zc_done;
    while (ch->zc_done < ch->zc_sent) {
        if (mfd__failed(s) || zc_reap(ch, 1000))
            return -1;
        if (ch->zc_done != seen) {
            seen = ch->zc_done;
            last = mfd__now_us();
        } else if (s->network_timeout > 0 &&
                   mfd__us_since(&last) / 1000 >= (uint64_t)s->network_timeout)
            return mfd__fail(s, MFD_ETIMEDOUT,
                             "channel %u: zero-copy: %" PRIu64 " sends not "
                             "completed within network-timeout %" PRId64
                             " ms",
                             ch->id, ch->zc_sent - ch->zc_done,
                             s->network_timeout);
    }
    return 0;
}

/* The payload with MSG_ZEROCOPY, the header before it copied. */
static int zc_write(mfd_send_chan *ch, int iovcnt)
{
    mfd_session *s = ch->s;
    int rc = mfd__writev_full_flags(ch->fd, ch->iov, 1, MSG_MORE);
    int pos = 1;
    while (rc == MFD_IO_OK) {
        uint64_t calls = 0;
        rc = mfd__zc_writev(ch->fd, ch->iov, iovcnt, &pos, &calls);
        ch->zc_sent += calls;
        MFD_STAT_ADD(ch->st.zerocopy_sends, calls);
        if (rc != MFD_IO_ERROR || errno != ENOBUFS)
            break;
        /* Too much pinned: wait for completions, then go on. */
        if (ch->zc_done == ch->zc_sent)
            return mfd__fail(s, MFD_ESYS,
                             "channel %u: MSG_ZEROCOPY: no buffer space with "
                             "nothing in flight (net.core.optmem_max, "
                             "RLIMIT_MEMLOCK)",
                             ch->id);
        if (zc_reap(ch, 1000))
            return -1;
        rc = MFD_IO_OK;
    }
    if (rc == MFD_IO_OK && zc_reap(ch, 0))
        return -1;
    return rc;
}

static int write_packet(mfd_send_chan *ch, uint32_t flags, uint32_t normal,
                        uint32_t zero, const char *name, int iovcnt,
                        uint32_t next, bool more)
{
    mfd_session *s = ch->s;
    size_t plen = mfd__packet_len(s->ppp);
    uint64_t num = __atomic_fetch_add(&s->packet_num, 1, __ATOMIC_RELAXED);
    /*
     * Raw pages read from live memory may change between checksum and
     * send: their CRC covers the payload only in the final pass; a
     * compressed payload is a buffer of our own (PROTOCOL.md 2.2).
     */
    uint8_t scope = 0;
    if (s->features & MFD_FEAT_CRC)
        scope = s->method != MFD_METHOD_NONE ||
                __atomic_load_n(&s->crc_scope, __ATOMIC_RELAXED);

    mfd__packet_fill(ch->packet, s->ppp, flags, normal, zero, next, num, scope,
                     name);
    if (s->features & MFD_FEAT_CRC) {
        uint32_t c = mfd__crc32c(0, ch->packet, plen);
        for (int i = 1; scope && i < iovcnt; i++)
            c = mfd__crc32c(c, ch->iov[i].iov_base, ch->iov[i].iov_len);
        mfd__put_be32(ch->packet + MFD_PKT_CRC, c);
    }
    ch->iov[0].iov_base = ch->packet;
    ch->iov[0].iov_len = plen;
    pace(s, plen + next);
    /*
     * A packet without payload is 1344 bytes. With another batch already
     * queued behind it, MSG_MORE lets the kernel send it together with the
     * next packet rather than alone, waking the receiver once for both
     * (measured: +15% on an all-zero guest).
     */
    int rc = s->zero_copy_send && iovcnt > 1
                 ? zc_write(ch, iovcnt)
                 : mfd__writev_full_flags(ch->fd, ch->iov, iovcnt,
                                          more && !normal ? MSG_MORE : 0);
    if (rc < 0 && mfd__failed(s))
        return -1;
    if (rc != MFD_IO_OK && rc == MFD_IO_ERROR && errno == ETIMEDOUT)
        return mfd__fail(s, MFD_ETIMEDOUT,
                         "channel %u: packet %" PRIu64 ": the destination "
                         "stopped reading or acknowledging (network-timeout "
                         "%" PRId64 " ms)",
                         ch->id, num, s->network_timeout);
    if (rc != MFD_IO_OK)
        return mfd__fail(s, errno == EPIPE || errno == ECONNRESET ? MFD_ECLOSED
                                                                  : MFD_ESYS,
                         "channel %u: packet %" PRIu64 ": %s", ch->id, num,
                         mfd__io_strerror(rc));
    MFD_STAT_ADD(ch->st.packets, 1);
    MFD_STAT_ADD(ch->st.normal_pages, normal);
    MFD_STAT_ADD(ch->st.zero_pages, zero);
    MFD_STAT_ADD(ch->st.bytes, plen + next);
    if (normal + zero)
        MFD_STAT_ADD(s->data_packets, 1);
    if (flags & MFD_FLAG_SYNC)
        MFD_STAT_ADD(ch->st.sync_packets, 1);
    return 0;
}

static int send_batch(mfd_send_chan *ch, mfd_batch *b, bool more)
{
    mfd_session *s = ch->s;
    mfd_block *blk = &s->blocks[b->block];
    uint32_t ps = (uint32_t)s->page_size;
    uint32_t normal = b->num;

    if (s->zpd == MFD_ZPD_MULTIFD) {
        uint32_t unread;
        normal = partition_zero(blk->src, b->offset, b->num, ps, b->untouched,
                                &unread);
        if (unread)
            MFD_STAT_ADD(s->untouched_pages, unread);
    }
    if (s->snap) {
        pace(s, (uint64_t)normal * ps);
        return mfd__snap_write_batch(ch, b, normal);
    }

    uint8_t *offs = ch->packet + MFD_PKT_OFFSETS;
    for (uint32_t i = 0; i < b->num; i++)
        mfd__put_be64(offs + 8 * (size_t)i, b->offset[i]);
    /* Entries past the listed ones must read as zero. */
    if (ch->prev_listed > b->num)
        memset(offs + 8 * (size_t)b->num, 0,
               8 * (size_t)(ch->prev_listed - b->num));
    ch->prev_listed = b->num;

    uint32_t next = 0;
    int n = normal ? s->mops->send_prepare(ch, blk->src, b->offset, normal,
                                           &next)
                   : 0;
    if (n < 0)
        return -1;
    return write_packet(ch, s->method, normal, b->num - normal, blk->name,
                        1 + n, next, more);
}

static int send_sync(mfd_send_chan *ch)
{
    /* A snapshot's pass ends with every write returned; nothing to send. */
    if (ch->s->snap)
        return 0;
    if (ch->s->zero_copy_send && zc_flush(ch))
        return -1;
    if (ch->prev_listed) {
        memset(ch->packet + MFD_PKT_OFFSETS, 0, 8 * (size_t)ch->prev_listed);
        ch->prev_listed = 0;
    }
    return write_packet(ch, MFD_FLAG_SYNC, 0, 0, "", 1, 0, false);
}

static void *send_thread(void *arg)
{
    mfd_send_chan *ch = arg;
    mfd_session *s = ch->s;
    char name[16];
    snprintf(name, sizeof(name), "mfd-send/%u", ch->id);
    pthread_setname_np(pthread_self(), name);

    for (;;) {
        pthread_mutex_lock(&ch->lock);
        while (!ch->queued && !ch->sync && !ch->quit && !mfd__failed(s))
            pthread_cond_wait(&ch->cond, &ch->lock);
        mfd_batch *b = ch->queued ? ch->slot[ch->head] : NULL;
        bool sync = !b && ch->sync, more = ch->queued > 1;
        pthread_mutex_unlock(&ch->lock);
        if ((!b && !sync) || mfd__failed(s))
            break;

        if (b) {
            int rc = send_batch(ch, b, more);
            pthread_mutex_lock(&ch->lock);
            ch->head = (ch->head + 1) % MFD_CHAN_DEPTH;
            ch->queued--;
            pthread_mutex_unlock(&ch->lock);
            if (rc)
                break;
            sem_post(&s->channels_ready);
        } else {
            /* Every batch handed before the SYNC request is on the wire. */
            int rc = send_sync(ch);
            pthread_mutex_lock(&ch->lock);
            ch->sync = false;
            pthread_mutex_unlock(&ch->lock);
            if (rc)
                break;
            sem_post(&ch->sem_sync);
        }
    }
    return NULL;
}

/* ---- migration thread -------------------------------------------------- */

/*
 * Hands s->cur to a channel by pointer swap: the next idle channel in round
 * robin order, or failing that the next one with a free queue slot.
 * channels_ready counts free slots, so one of them exists.
 */
static int queue_batch(mfd_session *s)
{
    while (sem_wait(&s->channels_ready) && errno == EINTR)
        ;
    for (uint32_t depth = 0; !mfd__failed(s); depth = (depth + 1) % MFD_CHAN_DEPTH) {
        for (uint32_t k = 0; k < s->nchan; k++) {
            uint32_t i = (s->next_chan + k) % s->nchan;
            mfd_send_chan *ch = &s->sc[i];
            pthread_mutex_lock(&ch->lock);
            if (ch->queued <= depth) {
                uint32_t free_slot = (ch->head + ch->queued) % MFD_CHAN_DEPTH;
                mfd_batch *t = ch->slot[free_slot];
                ch->slot[free_slot] = s->cur;
                s->cur = t;
                if (!ch->queued++)
                    pthread_cond_signal(&ch->cond);
                pthread_mutex_unlock(&ch->lock);
                s->next_chan = i + 1;
                s->cur->num = 0;
                return 0;
            }
            pthread_mutex_unlock(&ch->lock);
        }
    }
    return -1;
}

/*
 * A main-channel record could not be written. A peer that closed the
 * connection may have said why first (its ERROR, read by the return path
 * or at setup): report that as a closed connection so the reason can
 * replace it, and a TCP user timeout as a timeout.
 */
static int main_write_failed(mfd_session *s, const char *what)
{
    int e = errno;
    if (e == ETIMEDOUT)
        return mfd__fail(s, MFD_ETIMEDOUT,
                         "main channel: %s: the destination took nothing "
                         "for network-timeout %" PRId64 " ms",
                         what, s->network_timeout);
    int code = e == EPIPE || e == ECONNRESET ? MFD_ECLOSED : MFD_ESYS;
    return mfd__fail(s, code, "main channel: %s: %s", what, strerror(e));
}

/* Ends a pass: SYNC on every channel, then ITERATION_END on main. */
static int sync_channels(mfd_session *s, uint64_t iteration)
{
    for (uint32_t i = 0; i < s->nchan; i++) {
        mfd_send_chan *ch = &s->sc[i];
        pthread_mutex_lock(&ch->lock);
        ch->sync = true;
        pthread_cond_signal(&ch->cond);
        pthread_mutex_unlock(&ch->lock);
    }
    for (uint32_t i = 0; i < s->nchan; i++) {
        while (sem_wait(&s->sc[i].sem_sync) && errno == EINTR)
            ;
        if (mfd__failed(s))
            return -1;
    }
    uint8_t body[8];
    mfd__put_be64(body, iteration);
    if (s->snap) {
        MFD_STAT_ADD(s->iterations, 1);
        return 0;
    }
    if (mfd__send_record(s, MFD_REC_ITERATION_END, body, 8) != MFD_IO_OK)
        return main_write_failed(s, "ITERATION_END");
    MFD_STAT_ADD(s->iterations, 1);
    return 0;
}

typedef struct {
    uint32_t block;
    uint32_t count;
    uint8_t body[8 + 8 * MFD_LEGACY_ZERO_MAX];
} legacy_zero_buf;

static int legacy_flush(mfd_session *s, legacy_zero_buf *z)
{
    if (!z->count)
        return 0;
    mfd__put_be32(z->body, z->block);
    mfd__put_be32(z->body + 4, z->count);
    if (mfd__send_record(s, MFD_REC_ZERO_PAGES, z->body, 8 + 8 * z->count) !=
        MFD_IO_OK)
        return main_write_failed(s, "ZERO_PAGES");
    MFD_STAT_ADD(s->legacy_zero_pages, z->count);
    z->count = 0;
    return 0;
}

static int legacy_add(mfd_session *s, legacy_zero_buf *z, uint32_t block,
                      uint64_t off)
{
    if (z->count && (z->block != block || z->count == MFD_LEGACY_ZERO_MAX))
        if (legacy_flush(s, z))
            return -1;
    z->block = block;
    mfd__put_be64(z->body + 8 + 8 * (size_t)z->count, off);
    z->count++;
    return 0;
}

/* ---- passes ------------------------------------------------------------ */

/* Bytes on the wire and normal pages sent, over all channels. */
static uint64_t channel_bytes(mfd_session *s, uint64_t *normal)
{
    uint64_t n = 0, p = 0;
    for (uint32_t i = 0; i < s->nchan; i++) {
        n += MFD_STAT_GET(s->sc[i].st.bytes);
        p += MFD_STAT_GET(s->sc[i].st.normal_pages);
    }
    if (normal)
        *normal = p;
    return n;
}

/*
 * The migration thread's measurements over 100 ms windows (closed as
 * batches are queued, and at the end of a pass): the send rate on the wire
 * (what max-bandwidth caps) and the rate of normal pages (guest bytes of
 * data pages moved per second, before compression) - the one that predicts
 * how long the dirty pages will take, since they are written pages; zero
 * pages, which cost next to nothing, do not inflate it. Also the progress
 * figure.
 */
typedef struct {
    uint64_t pass_t0, pass_b0;        /* start of the pass */
    uint64_t win_t0, win_b0, win_p0;  /* start of the open window */
    uint64_t win_us, win_bytes, win_pages; /* closed windows of this pass */
    uint64_t queued;                  /* pages queued over all passes */
} meter;

static void meter_window(mfd_session *s, meter *m, bool force)
{
    uint64_t now = mfd__now_us();
    if (!force && now - m->win_t0 < 100000)
        return;
    uint64_t p, b = channel_bytes(s, &p);
    m->win_us += now - m->win_t0;
    m->win_bytes += b - m->win_b0;
    m->win_pages += p - m->win_p0;
    m->win_t0 = now;
    m->win_b0 = b;
    m->win_p0 = p;
}

static void meter_pass_begin(mfd_session *s, meter *m)
{
    m->pass_t0 = m->win_t0 = mfd__now_us();
    m->pass_b0 = m->win_b0 = channel_bytes(s, &m->win_p0);
    m->win_us = m->win_bytes = m->win_pages = 0;
}

/* After each queued batch: the windows and the progress figure. */
static void meter_tick(mfd_session *s, meter *m, uint32_t pages)
{
    m->queued += pages;
    uint64_t left = MFD_STAT_GET(s->dirty_pages);
    int pct = (int)(m->queued * 100 / (m->queued + left));
    if (pct > MFD_STAT_GET(s->progress_pct))
        MFD_STAT_SET(s->progress_pct, pct);
    meter_window(s, m, false);
}

/*
 * Hands the filled batch to a channel, and keeps the measurements. A page
 * that is queued is no longer dirty.
 */
static int queue_counted(mfd_session *s, meter *m)
{
    uint32_t pages = s->cur->num;
    if (queue_batch(s))
        return -1;
    meter_tick(s, m, pages);
    return 0;
}

/*
 * One pass: every page set in the blocks' dirty bitmaps, which it clears.
 * In legacy mode zero pages go to the main channel as ZERO_PAGES. The
 * first pass (`first`) may take the blocks' untouched maps as zero tests.
 */
static int walk_dirty(mfd_session *s, meter *m, bool first)
{
    uint32_t ps = (uint32_t)s->page_size;
    bool legacy = s->zpd == MFD_ZPD_LEGACY;
    legacy_zero_buf *z = NULL;
    if (legacy && !(z = calloc(1, sizeof(*z))))
        return mfd__fail(s, MFD_ENOMEM, "out of memory");

    int rc = 0;
    uint64_t nunread = 0;
    for (int bi = 0; bi < s->nblocks && !rc; bi++) {
        mfd_block *b = &s->blocks[bi];
        const uint64_t *umap = first ? b->untouched : NULL;
        uint64_t words = (b->pages + 63) / 64;
        for (uint64_t w = 0; w < words && !rc; w++) {
            uint64_t bits = b->dirty[w];
            if (!bits)
                continue;
            if (mfd__failed(s)) {
                rc = -1;
                break;
            }
            b->dirty[w] = 0;
            MFD_STAT_ADD(s->dirty_pages,
                         -(uint64_t)__builtin_popcountll(bits));
            for (; bits; bits &= bits - 1) {
                uint64_t page = w * 64 + (uint64_t)__builtin_ctzll(bits);
                uint64_t off = page * ps;
                bool unread = umap && mfd__bitmap_test(umap, page);
                if (legacy &&
                    (unread || mfd__buffer_is_zero(b->src + off, ps))) {
                    nunread += unread;
                    rc = s->snap ? mfd__snap_zero_page(s, (uint32_t)bi, off)
                                 : legacy_add(s, z, (uint32_t)bi, off);
                    if (rc)
                        break;
                    m->queued++;
                    continue;
                }
                if (s->cur->num && s->cur->block != (uint32_t)bi &&
                    (rc = queue_counted(s, m)))
                    break;
                s->cur->block = (uint32_t)bi;
                s->cur->untouched = umap;
                s->cur->offset[s->cur->num++] = off;
                if (s->cur->num == s->ppp && (rc = queue_counted(s, m)))
                    break;
            }
        }
    }
    if (!rc && s->cur->num)
        rc = queue_counted(s, m);
    if (!rc && legacy)
        rc = legacy_flush(s, z);
    free(z);
    MFD_STAT_ADD(s->untouched_pages, nunread);
    return rc;
}

/* Marks every page dirty: the first pass sends them all. */
static int dirty_all(mfd_session *s)
{
    uint64_t n = 0;
    for (int i = 0; i < s->nblocks; i++) {
        mfd_block *b = &s->blocks[i];
        if (!b->dirty && !(b->dirty = mfd__bitmap_new(b->pages)))
            return mfd__fail(s, MFD_ENOMEM, "out of memory");
        uint64_t words = (b->pages + 63) / 64;
        memset(b->dirty, 0xff, words * 8);
        if (b->pages % 64)
            b->dirty[words - 1] = (UINT64_C(1) << (b->pages % 64)) - 1;
        n += b->pages;
    }
    MFD_STAT_SET(s->dirty_pages, n);
    return 0;
}

/*
 * Finds, for the first pass, the pages whose page table entries alone say
 * they are zero (ram/untouched.h), and adds those the caller hinted at
 * (mfd_block_zero_hint). After the tracker started, so a write
 * that comes later is seen by it and the page is sent again; without a
 * tracker, after the pause, when the memory no longer changes. Not with
 * zero-page-detection none, which sends every page as data.
 */
static void drop_untouched(mfd_block *b)
{
    free(b->untouched);
    b->untouched = NULL;
}

static int scan_untouched(mfd_session *s)
{
    if (s->zpd == MFD_ZPD_NONE)
        return 0;
    mfd__range *r = calloc((size_t)s->nblocks, sizeof(*r));
    bool *plain = calloc((size_t)s->nblocks, sizeof(*plain));
    int *idx = calloc((size_t)s->nblocks, sizeof(*idx));
    int n = 0;
    if (!r || !plain || !idx) {
        free(r);
        free(plain);
        free(idx);
        return mfd__fail(s, MFD_ENOMEM, "out of memory");
    }
    for (int i = 0; i < s->nblocks; i++) {
        mfd_block *b = &s->blocks[i];
        drop_untouched(b);
        if (b->src != b->host || !(b->untouched = mfd__bitmap_new(b->pages)))
            continue; /* out of memory: the pages are read, that is all */
        int64_t found = mfd__untouched_pages(b->host, b->length,
                                             (uint32_t)s->page_size,
                                             b->untouched);
        if (!mfd__untouched_worth(found, b->pages)) {
            drop_untouched(b);
            continue;
        }
        r[n] = (mfd__range){(uintptr_t)b->host, (uintptr_t)b->host + b->length};
        idx[n++] = i;
    }
    /* One read of /proc/self/smaps for all the blocks that need it. */
    if (n)
        mfd__untouched_plain(r, n, plain);
    for (int k = 0; k < n; k++)
        if (!plain[k])
            drop_untouched(&s->blocks[idx[k]]);
    /* And the caller's word (mfd_block_zero_hint): holes of a file, say. */
    for (int i = 0; i < s->nblocks; i++) {
        mfd_block *b = &s->blocks[i];
        uint64_t words = (b->pages + 63) / 64;
        if (!b->zero_hint || b->src != b->host)
            continue;
        if (!b->untouched)
            b->untouched = mfd__bitmap_new(b->pages);
        for (uint64_t w = 0; b->untouched && w < words; w++)
            b->untouched[w] |= b->zero_hint[w];
    }
    free(r);
    free(plain);
    free(idx);
    return 0;
}

static void pause_writers(mfd_session *s)
{
    if (s->live.pause) {
        s->in_pause = true;
        s->live.pause(s->live_opaque);
        s->in_pause = false;
    }
    s->paused = true;
    MFD_STAT_SET(s->t_pause, mfd__now_us());
}

static void set_throttle(mfd_session *s, int pct)
{
    if (pct == MFD_STAT_GET(s->throttle_pct))
        return;
    MFD_STAT_SET(s->throttle_pct, pct);
    if (s->live.throttle)
        s->live.throttle(s->live_opaque, pct);
}

/*
 * auto-converge, QEMU's rule: when the pages dirtied during a pass exceed
 * half of the bytes the pass sent, twice, throttle the writers harder.
 */
static void auto_converge(mfd_session *s, const mfd_pass_info *p, int *high)
{
    if (!s->auto_converge || p->dirty_pages * (uint64_t)s->page_size <=
                                 p->bytes / 2)
        return;
    if (++*high < 2)
        return;
    *high = 0;
    int cur = MFD_STAT_GET(s->throttle_pct);
    int next = cur ? cur + (int)s->throttle_increment
                   : (int)s->throttle_initial;
    set_throttle(s, (int)MFD_MIN(next, s->throttle_max));
}

/* Ends a pass: SYNC and ITERATION_END, then its figures. */
static int end_pass(mfd_session *s, meter *m, uint64_t pass, bool final,
                    mfd_pass_info *p)
{
    if (sync_channels(s, pass))
        return -1;
    meter_window(s, m, true);
    uint64_t now = mfd__now_us();
    memset(p, 0, sizeof(*p));
    p->pass = pass;
    p->final = final;
    p->bytes = channel_bytes(s, NULL) - m->pass_b0;
    p->time_us = now - m->pass_t0;
    if (m->win_us)
        MFD_STAT_SET(s->bandwidth_bps,
                     (uint64_t)((unsigned __int128)m->win_bytes * 1000000 /
                                m->win_us));
    /* A pass of zero pages alone says nothing of the data rate. */
    if (m->win_us && m->win_pages)
        MFD_STAT_SET(s->memory_rate_bps,
                     (uint64_t)((unsigned __int128)m->win_pages *
                                (uint64_t)s->page_size * 1000000 / m->win_us));
    p->bandwidth_bps = MFD_STAT_GET(s->bandwidth_bps);
    p->memory_rate_bps = MFD_STAT_GET(s->memory_rate_bps);
    p->throttle_pct = MFD_STAT_GET(s->throttle_pct);
    bool copied = false;
    for (uint32_t i = 0; i < s->nchan; i++)
        copied |= __atomic_exchange_n(&s->sc[i].zc_copied, false,
                                      __ATOMIC_RELAXED);
    if (copied)
        MFD_STAT_ADD(s->zc_copied_passes, 1);
    if (pass <= MFD_PASS_STATS)
        MFD_STAT_SET(s->pass_bytes[pass - 1], p->bytes);
    return 0;
}

/*
 * Pre-copy (DESIGN.md 5): passes while the writers run, each followed by a
 * dirty sync, until the expected downtime fits the limit (or max-iterations,
 * or mfd_switchover()); then pause, the last sync and the final pass. With
 * no tracker the memory is not changing: pause and one pass.
 */
static int precopy(mfd_session *s)
{
    bool live = s->dirty_tracker != MFD_TRACKER_NONE;
    uint32_t ps = (uint32_t)s->page_size;
    meter m = {0};
    int high = 0;
    uint64_t last_sync = mfd__now_us();

    if (dirty_all(s))
        return -1;
    if (live && mfd__tracker_start(s))
        return -1;
    if (!live)
        pause_writers(s);
    if (scan_untouched(s))
        return -1;
    pthread_mutex_lock(&s->rl_lock);
    s->rl_next_us = mfd__now_us(); /* no burst at the start */
    pthread_mutex_unlock(&s->rl_lock);
    __atomic_store_n(&s->rl_rate, (uint64_t)s->max_bandwidth,
                     __ATOMIC_RELAXED);

    for (uint64_t pass = 1;; pass++) {
        bool final = s->paused;
        /* Memory no longer changes: the CRC may cover the payload. */
        __atomic_store_n(&s->crc_scope, final ? 1 : 0, __ATOMIC_RELAXED);
        meter_pass_begin(s, &m);
        uint64_t q0 = m.queued;
        if (walk_dirty(s, &m, pass == 1))
            return -1;
        mfd_pass_info p;
        if (end_pass(s, &m, pass, final, &p))
            return -1;
        p.pages = m.queued - q0;
        if (pass <= MFD_PASS_STATS)
            MFD_STAT_SET(s->pass_pages[pass - 1], p.pages);
        if (final) {
            if (s->live.progress)
                s->live.progress(s->live_opaque, &p);
            return 0;
        }

        uint64_t dirty;
        if (mfd__tracker_sync(s, &dirty))
            return -1;
        uint64_t now = mfd__now_us();
        MFD_STAT_ADD(s->dirty_sync_count, 1);
        MFD_STAT_SET(s->dirty_pages, dirty);
        p.dirty_pages = dirty;
        unsigned __int128 dirty_bytes = (unsigned __int128)dirty * ps;
        p.dirty_rate_bps =
            (uint64_t)(dirty_bytes * 1000000 / MFD_MAX(now - last_sync, 1));
        last_sync = now;
        p.expected_downtime_ms =
            p.memory_rate_bps
                ? (uint64_t)(dirty_bytes * 1000 / p.memory_rate_bps)
                : (dirty ? UINT64_MAX : 0);
        MFD_STAT_SET(s->dirty_rate_bps, p.dirty_rate_bps);
        MFD_STAT_SET(s->expected_downtime_ms, p.expected_downtime_ms);
        if (s->live.progress)
            s->live.progress(s->live_opaque, &p);

        bool converged = p.expected_downtime_ms <= (uint64_t)s->downtime_limit;
        bool capped = s->max_iterations && pass >= (uint64_t)s->max_iterations;
        bool asked = __atomic_load_n(&s->switchover_requested,
                                     __ATOMIC_ACQUIRE);
        if (converged || capped || asked) {
            pause_writers(s);
            if (mfd__tracker_sync(s, &dirty))
                return -1;
            MFD_STAT_ADD(s->dirty_sync_count, 1);
            MFD_STAT_SET(s->dirty_pages, dirty);
            /* The writers wait: the final pass goes at full speed. */
            __atomic_store_n(&s->rl_rate, 0, __ATOMIC_RELAXED);
        } else {
            auto_converge(s, &p, &high);
        }
    }
}

/* ---- setup ------------------------------------------------------------- */

static mfd_batch *batch_new(uint32_t ppp)
{
    mfd_batch *b = calloc(1, sizeof(*b));
    if (b && !(b->offset = calloc(ppp, sizeof(uint64_t)))) {
        free(b);
        b = NULL;
    }
    return b;
}

static void batch_free(mfd_batch *b)
{
    if (b) {
        free(b->offset);
        free(b);
    }
}

/* A random (version 4) UUID for the session. */
static int new_uuid(mfd_session *s)
{
    if (getrandom(s->uuid, sizeof(s->uuid), 0) != sizeof(s->uuid))
        return mfd__fail(s, MFD_ESYS, "getrandom: %s", strerror(errno));
    s->uuid[6] = (uint8_t)((s->uuid[6] & 0x0f) | 0x40);
    s->uuid[8] = (uint8_t)((s->uuid[8] & 0x3f) | 0x80);
    return 0;
}

/* Reads the destination's answer to the setup; expects `want`. */
static int expect_record(mfd_session *s, uint32_t want, const char *what,
                         int timeout_ms, uint8_t **body, uint32_t *len)
{
    char err[256];
    uint32_t type;
    for (int skipped = 0;; skipped++) {
        int rc = mfd__recv_record(s, timeout_ms, &type, body, len, err,
                                  sizeof(err));
        if (rc < 0 && rc != MFD_IO_ERROR && rc != MFD_IO_TIMEOUT &&
            rc != MFD_IO_WOKEN)
            return mfd__fail(s, -rc, "%s", err);
        if (rc != MFD_IO_OK)
            return mfd__fail(s, rc == MFD_IO_TIMEOUT ? MFD_ETIMEDOUT : MFD_ECLOSED,
                             "waiting for %s: %s", what, mfd__io_strerror(rc));
        if (type == MFD_REC_ERROR && *len >= 4) {
            uint32_t code = mfd__get_be32(*body);
            char text[MFD_MSG_MAX + 1];
            int r = mfd__fail_peer(s,
                                   code == MFD_EREFUSED ? MFD_EREFUSED : MFD_EPEER,
                                   "destination refused: %s",
                                   mfd__peer_text(text, *body + 4, *len - 4));
            free(*body);
            *body = NULL;
            return r;
        }
        if (type != want && (type & MFD_REC_OPTIONAL)) {
            free(*body);
            *body = NULL;
            if (mfd__skip_optional(s, skipped, what))
                return -1;
            continue;
        }
        if (type != want) {
            free(*body);
            *body = NULL;
            return mfd__fail(s, MFD_EPROTO,
                             "main channel: expected %s, got record type 0x%x",
                             what, type);
        }
        return 0;
    }
}

/* TLS on a new connection (never plaintext once TLS is configured). */
static int tls_connect(mfd_session *s, const mfd_uri *u, int fd,
                       const char *what)
{
    if (!mfd__tls_enabled(s))
        return 0;
    char err[512];
    const char *host = s->tls_hostname ? s->tls_hostname
                       : u->kind == MFD_URI_TCP ? u->host
                                                : NULL;
    if (mfd__tls_setup(s, false))
        return -1;
    if (mfd__tls_client(s, fd, host, err, sizeof(err)))
        return mfd__fail(s, MFD_EREFUSED, "%s: %s", what, err);
    return 0;
}

static int handshake(mfd_session *s, const mfd_uri *u)
{
    char err[512];
    s->main_fd = mfd__sock_connect(u, s->wake_fd, (int)s->handshake_timeout,
                                   err, sizeof(err));
    if (s->main_fd < 0)
        return mfd__fail(s, errno == ETIMEDOUT ? MFD_ETIMEDOUT : MFD_ESYS,
                         "%s", err);
    mfd__sock_set_timeout(s->main_fd, (int)s->network_timeout);
    if (tls_connect(s, u, s->main_fd, "main channel"))
        return -1;

    uint8_t pre[MFD_PREAMBLE_LEN];
    uint32_t version;
    mfd__preamble_encode(pre, MFD_PROTO_VERSION);
    int rc = mfd__write_full(s->main_fd, pre, sizeof(pre));
    if (rc == MFD_IO_OK)
        rc = mfd__read_full_timeout(s->main_fd, pre, sizeof(pre),
                                    (int)s->handshake_timeout);
    /*
     * With TLS 1.3 the server checks our certificate after our side of the
     * handshake is done: its refusal shows up here as a closed connection.
     */
    if (rc != MFD_IO_OK)
        return mfd__fail(s, rc == MFD_IO_TIMEOUT ? MFD_ETIMEDOUT : MFD_ECLOSED,
                         "main channel preamble: %s%s", mfd__io_strerror(rc),
                         mfd__tls_enabled(s) && rc != MFD_IO_TIMEOUT
                             ? " (after the TLS handshake: the destination "
                               "may have refused this source's certificate; "
                               "its log says why)"
                             : "");
    MFD_STAT_ADD(s->main_bytes, 2 * MFD_PREAMBLE_LEN);
    if (!mfd__preamble_decode(pre, &version))
        return mfd__fail(s, MFD_EPROTO,
                         "main channel: the peer's preamble has bad magic "
                         "0x%08x",
                         mfd__get_be32(pre));
    if (version != MFD_PROTO_VERSION)
        return mfd__fail(s, MFD_EPROTO,
                         "main channel: destination answered protocol "
                         "version %u, this source speaks %u",
                         version, MFD_PROTO_VERSION);

    if (new_uuid(s))
        return -1;

    uint64_t want = (s->crc ? MFD_FEAT_CRC : 0) |
                    (s->verify ? MFD_FEAT_VERIFY : 0) |
                    (s->colo ? MFD_FEAT_COLO : 0);
    mfd_hello h = {
        .page_size = (uint32_t)s->page_size,
        .pages_per_packet = s->ppp,
        .channels = (uint32_t)s->channels,
        .method = s->method,
        .level = s->method == MFD_METHOD_ZLIB   ? (int32_t)s->zlib_level
                 : s->method == MFD_METHOD_ZSTD ? (int32_t)s->zstd_level
                 : s->method == MFD_METHOD_LZ4  ? (int32_t)s->lz4_accel
                                                : 0,
        .zero_page_detection = (uint32_t)s->zpd,
        .features = want,
        .block_count = (uint32_t)s->nblocks,
    };
    memcpy(h.uuid, s->uuid, 16);
    uint8_t hb[MFD_HELLO_LEN];
    mfd__hello_encode(hb, &h);
    if (mfd__send_record(s, MFD_REC_HELLO, hb, sizeof(hb)) != MFD_IO_OK)
        return main_write_failed(s, "HELLO");
    for (int i = 0; i < s->nblocks; i++) {
        mfd_block *b = &s->blocks[i];
        uint8_t bb[16 + MFD_BLOCK_NAME_MAX];
        mfd__put_be64(bb, b->length);
        mfd__put_be32(bb + 8, (uint32_t)i);
        mfd__put_be32(bb + 12, b->name_len);
        memcpy(bb + 16, b->name, b->name_len);
        if (mfd__send_record(s, MFD_REC_BLOCK, bb, 16 + b->name_len) !=
            MFD_IO_OK)
            return main_write_failed(s, "BLOCK");
    }
    if (mfd__send_record(s, MFD_REC_SETUP_END, NULL, 0) != MFD_IO_OK)
        return main_write_failed(s, "SETUP_END");

    /* Mapping (and preallocating) the blocks may take a while: no limit. */
    uint8_t *body;
    uint32_t len;
    if (expect_record(s, MFD_REC_READY, "READY", -1, &body, &len))
        return -1;
    uint64_t accepted = len == 8 ? mfd__get_be64(body) : ~UINT64_C(0);
    free(body);
    if (len != 8)
        return mfd__fail(s, MFD_EPROTO, "main channel: READY body length %u",
                         len);
    if (accepted & ~want)
        return mfd__fail(s, MFD_EPROTO,
                         "main channel: READY accepts features 0x%" PRIx64
                         " that were not offered (0x%" PRIx64 ")",
                         accepted, want);
    if ((want & MFD_FEAT_COLO) && !(accepted & MFD_FEAT_COLO))
        return mfd__fail(s, MFD_EREFUSED,
                         "the destination does not accept a COLO session "
                         "(x-colo)");
    s->features = accepted;
    return 0;
}

/* At most this many data channels connect at a time (see below). */
#define CONNECT_WORKERS 8

typedef struct {
    mfd_session *s;
    const mfd_uri *u;
    uint32_t next; /* atomic: the next channel to connect */
} chan_connect;

/* One data channel: the connection, TLS, the init message. */
static void connect_channel(mfd_session *s, const mfd_uri *u,
                            mfd_send_chan *ch)
{
    char err[512], what[32];
    int fd = mfd__sock_connect(u, s->wake_fd, (int)s->handshake_timeout, err,
                               sizeof(err));
    if (fd < 0) {
        mfd__fail(s, errno == ETIMEDOUT ? MFD_ETIMEDOUT : MFD_ESYS,
                  "channel %u: %s", ch->id, err);
        return;
    }
    mfd__sock_set_timeout(fd, (int)s->network_timeout);
    mfd__set_chan_fd(s, &ch->fd, fd);
    snprintf(what, sizeof(what), "channel %u", ch->id);
    if (tls_connect(s, u, fd, what))
        return;
    if (s->zero_copy_send && mfd__zc_enable(fd)) {
        mfd__fail(s, MFD_EUNSUPPORTED,
                  "channel %u: zero-copy-send: SO_ZEROCOPY: %s (it needs a "
                  "TCP connection)",
                  ch->id, strerror(errno));
        return;
    }
    uint8_t init[MFD_INIT_LEN];
    mfd__init_encode(init, s->uuid, (uint8_t)ch->id);
    int rc = mfd__write_full(fd, init, sizeof(init));
    if (rc != MFD_IO_OK) {
        mfd__fail(s, MFD_ESYS, "channel %u: init: %s", ch->id,
                  mfd__io_strerror(rc));
        return;
    }
    /*
     * From here the channel is only written, a packet at a time and with
     * blocking writes, by its own thread: our own records (tls.h).
     */
    void *tls = mfd__tls_of(fd);
    if (tls)
        mfd__tls_direct_send(tls);
    MFD_STAT_ADD(ch->st.bytes, MFD_INIT_LEN);
}

/* A worker: connects the next channel nobody took, until none is left. */
static void *connect_worker(void *arg)
{
    chan_connect *c = arg;
    for (;;) {
        uint32_t i = __atomic_fetch_add(&c->next, 1, __ATOMIC_RELAXED);
        if (i >= c->s->nchan || mfd__failed(c->s))
            return NULL;
        connect_channel(c->s, c->u, &c->s->sc[i]);
    }
}

/*
 * Connects the data channels side by side, as QEMU's multifd does: each
 * TLS handshake costs round trips and public-key operations, so one after
 * another they add up (8 channels with TLS over a 20 ms round trip: 545
 * against 239 ms of setup). At most CONNECT_WORKERS at a time: a
 * destination vets a bounded number of connections at once (ours 16, and
 * an older one evicts the oldest beyond that), and beyond the cores the
 * handshakes only queue for the CPU. Without a thread, this one connects.
 */
static int connect_channels(mfd_session *s, const mfd_uri *u)
{
    chan_connect c = {.s = s, .u = u};
    pthread_t t[CONNECT_WORKERS];
    uint32_t workers = s->nchan < CONNECT_WORKERS ? s->nchan : CONNECT_WORKERS;
    uint32_t started = 0;
    while (workers > 1 && started < workers &&
           !pthread_create(&t[started], NULL, connect_worker, &c))
        started++;
    if (!started)
        connect_worker(&c);
    for (uint32_t i = 0; i < started; i++)
        pthread_join(t[i], NULL);
    return mfd__failed(s) ? -1 : 0;
}

static int channels_setup(mfd_session *s, const mfd_uri *u)
{
    uint32_t n = (uint32_t)s->channels;
    size_t plen = mfd__packet_len(s->ppp);

    mfd_send_chan *sc = calloc(n, sizeof(*sc));
    if (!sc)
        return mfd__fail(s, MFD_ENOMEM, "out of memory");
    for (uint32_t i = 0; i < n; i++) {
        mfd_send_chan *ch = &sc[i];
        ch->s = s;
        ch->id = i;
        ch->fd = -1;
        pthread_mutex_init(&ch->lock, NULL);
        mfd__cond_init(&ch->cond);
        sem_init(&ch->sem_sync, 0, 0);
    }
    sem_init(&s->channels_ready, 0, n * MFD_CHAN_DEPTH);
    /* Published whole, under s->lock, for a failure on another thread. */
    pthread_mutex_lock(&s->lock);
    s->sc = sc;
    s->nchan = n;
    s->sem_inited = true;
    pthread_mutex_unlock(&s->lock);
    if (!(s->cur = batch_new(s->ppp)))
        return mfd__fail(s, MFD_ENOMEM, "out of memory");

    for (uint32_t i = 0; i < n; i++) {
        mfd_send_chan *ch = &s->sc[i];
        ch->packet = calloc(1, plen);
        ch->iov = calloc(1 + s->ppp, sizeof(struct iovec));
        for (int k = 0; k < MFD_CHAN_DEPTH; k++)
            ch->slot[k] = batch_new(s->ppp);
        bool slots_ok = true;
        for (int k = 0; k < MFD_CHAN_DEPTH; k++)
            slots_ok = slots_ok && ch->slot[k];
        if (!ch->packet || !ch->iov || !slots_ok)
            return mfd__fail(s, MFD_ENOMEM, "out of memory");
        if (s->mops->send_setup(ch))
            return -1;
    }
    if (!s->snap && connect_channels(s, u))
        return -1;
    for (uint32_t i = 0; i < n; i++) {
        if (pthread_create(&s->sc[i].thread, NULL, send_thread, &s->sc[i]))
            return mfd__fail(s, MFD_ESYS, "pthread_create failed");
        s->sc[i].started = true;
    }
    return 0;
}

/* ---- return path ------------------------------------------------------- */

/*
 * Reads the destination's records after READY: DONE ends the migration,
 * ERROR fails it; anything else is a protocol error. EOF before DONE means
 * the destination is gone.
 */
static void *return_path(void *arg)
{
    mfd_session *s = arg;
    char err[256];
    pthread_setname_np(pthread_self(), "mfd-return");
    for (;;) {
        uint32_t type, len;
        uint8_t *body;
        /*
         * Not interrupted by failures: it may still read the reason. In a
         * COLO session the secondary's heartbeats keep it talking.
         */
        int rc = mfd__recv_record_ex(s, false,
                                     s->colo ? (int)s->hb_timeout : -1, &type,
                                     &body, &len, err, sizeof(err));
        if (rc == MFD_IO_TIMEOUT) {
            mfd__fail(s, MFD_ETIMEDOUT,
                      "COLO: secondary lost: nothing from it for %" PRId64
                      " ms (heartbeat-timeout)",
                      s->hb_timeout);
            break;
        }
        if (rc < 0 && rc != MFD_IO_ERROR && rc != MFD_IO_TIMEOUT) {
            mfd__fail(s, -rc, "%s", err);
            break;
        }
        if (rc != MFD_IO_OK) {
            int e = errno;
            if (mfd__failed(s))
                break;
            if (rc == MFD_IO_ERROR && e == ETIMEDOUT)
                mfd__fail(s, MFD_ETIMEDOUT,
                          "main channel: the destination stopped answering "
                          "(no acknowledgement within network-timeout %" PRId64
                          " ms)",
                          s->network_timeout);
            else
                mfd__fail(s, MFD_ECLOSED,
                          "destination closed the main channel: %s",
                          mfd__io_strerror(rc));
            break;
        }
        if (type == MFD_REC_DONE) {
            free(body);
            pthread_mutex_lock(&s->lock);
            bool early = !s->complete_sent;
            pthread_mutex_unlock(&s->lock);
            if (early || len) {
                mfd__fail(s, MFD_EPROTO,
                          "main channel: DONE %s",
                          early ? "before COMPLETE was sent" : "with a body");
                break;
            }
            pthread_mutex_lock(&s->lock);
            s->done_received = true;
            pthread_cond_broadcast(&s->cond);
            pthread_mutex_unlock(&s->lock);
            break;
        }
        if (type == MFD_REC_CHECKPOINT_ACK && s->colo) {
            uint64_t id = len == 8 ? mfd__get_be64(body) : UINT64_MAX;
            free(body);
            pthread_mutex_lock(&s->lock);
            bool ok = id == s->colo_acked && s->colo_acked < s->colo_sent;
            if (ok)
                s->colo_acked++;
            pthread_cond_broadcast(&s->cond);
            pthread_mutex_unlock(&s->lock);
            if (!ok) {
                mfd__fail(s, MFD_EPROTO,
                          "main channel: CHECKPOINT_ACK %" PRIu64
                          " (body %u bytes) while checkpoint %" PRIu64
                          " is the one in flight",
                          id, len, s->colo_acked);
                break;
            }
            continue;
        }
        if (type == MFD_REC_ERROR && len >= 4) {
            uint32_t code = mfd__get_be32(body);
            char text[MFD_MSG_MAX + 1];
            mfd__fail_peer(s, code == MFD_EVERIFY ? MFD_EVERIFY : MFD_EPEER,
                           "destination reported: %s",
                           mfd__peer_text(text, body + 4, len - 4));
            free(body);
            break;
        }
        free(body);
        if (type & MFD_REC_OPTIONAL)
            continue;
        mfd__fail(s, MFD_EPROTO,
                  "main channel: unexpected record type 0x%x from the "
                  "destination",
                  type);
        break;
    }
    pthread_mutex_lock(&s->lock);
    s->rp_done = true;
    pthread_cond_broadcast(&s->cond);
    pthread_mutex_unlock(&s->lock);
    return NULL;
}

/* ---- the end of a migration ---------------------------------------------- */

/* The embedder's device state, in chunks; the last one flagged. */
static int send_device_state(mfd_session *s)
{
    uint64_t left = s->device_state_len, sent = 0;
    uint8_t *chunk = malloc(4 + MFD_MIN(left, MFD_DEVICE_CHUNK));
    if (!chunk)
        return mfd__fail(s, MFD_ENOMEM, "out of memory");
    do {
        uint32_t n = (uint32_t)MFD_MIN(left, MFD_DEVICE_CHUNK);
        mfd__put_be32(chunk, n == left ? 1 : 0);
        if (n)
            memcpy(chunk + 4, s->device_state + sent, n);
        if (mfd__send_record(s, MFD_REC_DEVICE_STATE, chunk, 4 + n) !=
            MFD_IO_OK) {
            free(chunk);
            return main_write_failed(s, "DEVICE_STATE");
        }
        sent += n;
        left -= n;
    } while (left);
    free(chunk);
    return 0;
}

/* DIGESTS (VERIFY), COMPLETE, then DONE from the destination. */
static int send_complete(mfd_session *s)
{
    if (s->features & MFD_FEAT_VERIFY) {
        uint8_t *d = malloc(8 * (size_t)s->nblocks);
        if (!d)
            return mfd__fail(s, MFD_ENOMEM, "out of memory");
        /* Untouched pages (no tracker: unchanged since) hash as zeros. */
        for (int i = 0; i < s->nblocks; i++)
            mfd__put_be64(d + 8 * i, mfd__block_digest(s, i, true));
        int rc = mfd__send_record(s, MFD_REC_DIGESTS, d,
                                  8 * (uint32_t)s->nblocks);
        free(d);
        if (rc != MFD_IO_OK)
            return main_write_failed(s, "DIGESTS");
    }

    mfd_stats *st = malloc(sizeof(*st));
    if (!st)
        return mfd__fail(s, MFD_ENOMEM, "out of memory");
    mfd_get_stats(s, st);
    uint8_t c[24];
    mfd__put_be64(c, st->normal_pages);
    mfd__put_be64(c + 8, st->zero_pages);
    mfd__put_be64(c + 16, st->data_packets);
    free(st);
    /* Marked before the write: DONE may come back before send returns. */
    pthread_mutex_lock(&s->lock);
    s->complete_sent = true;
    pthread_mutex_unlock(&s->lock);
    if (mfd__send_record(s, MFD_REC_COMPLETE, c, 24) != MFD_IO_OK)
        return main_write_failed(s, "COMPLETE");

    pthread_mutex_lock(&s->lock);
    while (!s->done_received && !mfd__failed(s))
        pthread_cond_wait(&s->cond, &s->lock);
    bool done = s->done_received;
    pthread_mutex_unlock(&s->lock);
    return done ? 0 : -1;
}

static int send_completion(mfd_session *s)
{
    return send_device_state(s) || send_complete(s) ? -1 : 0;
}

/* ---- COLO: checkpoints after the migration ------------------------------- */

static int send_id_record(mfd_session *s, uint32_t type, uint64_t id,
                          const char *what)
{
    uint8_t body[8];
    mfd__put_be64(body, id);
    if (type == MFD_REC_CHECKPOINT_END) {
        pthread_mutex_lock(&s->lock);
        s->colo_sent = id + 1; /* its ACK may come before the write returns */
        pthread_mutex_unlock(&s->lock);
    }
    if (mfd__send_record(s, type, body, 8) != MFD_IO_OK)
        return main_write_failed(s, what);
    return 0;
}

/*
 * Waits for the CHECKPOINT_ACK of checkpoint `id` (read by the return
 * path), which carried `bytes`. A secondary that keeps its heartbeat but
 * never acknowledges is lost all the same: the ACK must come within
 * network-timeout (or heartbeat-timeout when that is 0) plus a second per
 * 256 MiB of the checkpoint, time for the secondary to commit it.
 */
static int wait_ack(mfd_session *s, uint64_t id, uint64_t bytes)
{
    uint64_t base = s->network_timeout > 0 ? (uint64_t)s->network_timeout
                                           : (uint64_t)s->hb_timeout;
    uint64_t limit_ms = base + bytes / (256u << 20) * 1000;
    struct timespec ts = mfd__cond_deadline(limit_ms * 1000);
    bool late = false;
    pthread_mutex_lock(&s->lock);
    while (s->colo_acked <= id && !mfd__failed(s) && !late)
        late = pthread_cond_timedwait(&s->cond, &s->lock, &ts) == ETIMEDOUT;
    bool ok = s->colo_acked > id;
    pthread_mutex_unlock(&s->lock);
    if (!ok && late)
        return mfd__fail(s, MFD_ETIMEDOUT,
                         "COLO: secondary lost: no CHECKPOINT_ACK %" PRIu64
                         " within %" PRIu64 " ms of its END",
                         id, limit_ms);
    return ok ? 0 : -1;
}

static void resume_writers(mfd_session *s)
{
    if (s->live.resume)
        s->live.resume(s->live_opaque);
    s->paused = false;
}

/*
 * Staging (the Remus way): at every checkpoint the dirty pages are copied to
 * a copy of each block at the same offsets, from which the channel threads
 * send, so the writers can run again before the transfer. The copy is
 * mapped and populated once, before the first checkpoint and while the
 * writers run: a page touched for the first time inside a pause would cost
 * a fault and its zeroing there (on this machine's lazily backed memory,
 * more than the copy itself). It costs the blocks' size in memory.
 */
static int stage_map(mfd_session *s)
{
    for (int i = 0; i < s->nblocks; i++) {
        mfd_block *b = &s->blocks[i];
        if (!b->shadow && !(b->shadow = mfd__colo_map(s, b, MAP_POPULATE,
                                                      "colo-staging: the copy")))
            return -1;
    }
    return 0;
}

/* Copies the dirty pages of block b's bitmap words [from, to) to its copy. */
static void stage_words(mfd_session *s, mfd_block *b, uint64_t from,
                        uint64_t to)
{
    uint32_t ps = (uint32_t)s->page_size;
    for (uint64_t w = from; w < to; w++) {
        uint64_t bits = b->dirty[w];
        while (bits) {
            /* A run of set bits: one copy. */
            uint64_t first, run = mfd__bits_take_run(&bits, &first);
            uint64_t off = (w * 64 + first) * ps;
            memcpy(b->shadow + off, b->host + off, run * ps);
        }
    }
}

/*
 * In the pause: the checkpoint's `dirty` pages to the copy, on the cores
 * the paused writers left (mfd__colo_parallel).
 */
static void stage_dirty(mfd_session *s, uint64_t dirty)
{
    mfd__colo_parallel(s, dirty * s->page_size, stage_words);
    for (int i = 0; i < s->nblocks; i++)
        s->blocks[i].src = s->blocks[i].shadow;
}

/*
 * Until the next checkpoint is due (or asked for with mfd_colo_checkpoint):
 * true to take it, false when the session ends (mfd_colo_stop, a failure).
 */
static bool colo_wait(mfd_session *s, uint64_t due_us)
{
    bool take = false;
    pthread_mutex_lock(&s->lock);
    for (;;) {
        if (mfd__failed(s) || __atomic_load_n(&s->colo_stop, __ATOMIC_ACQUIRE))
            break;
        uint64_t now = mfd__now_us();
        if (__atomic_exchange_n(&s->colo_now, 0, __ATOMIC_ACQ_REL) ||
            now >= due_us) {
            take = true;
            break;
        }
        struct timespec ts = mfd__cond_deadline(due_us - now);
        pthread_cond_timedwait(&s->cond, &s->lock, &ts);
    }
    pthread_mutex_unlock(&s->lock);
    return take;
}

/*
 * PROTOCOL.md 4, after the migration's last pass (the writers paused):
 * the device state, checkpoint 0, the writers resumed; then a checkpoint
 * every checkpoint-interval: pause, dirty sync, (staging: copy and resume),
 * CHECKPOINT_BEGIN, the dirty pages as a pass, (no staging: resume),
 * DEVICE_STATE, CHECKPOINT_END, and the secondary's ACK. mfd_colo_stop
 * ends it with COMPLETE and DONE; the writers keep running.
 */
static int colo_run(mfd_session *s)
{
    meter mt = {0}, *m = &mt;
    if (send_device_state(s) ||
        send_id_record(s, MFD_REC_CHECKPOINT_BEGIN, 0, "CHECKPOINT_BEGIN") ||
        send_id_record(s, MFD_REC_CHECKPOINT_END, 0, "CHECKPOINT_END") ||
        wait_ack(s, 0, MFD_STAT_GET(s->ram_bytes)))
        return -1;
    MFD_STAT_SET(s->colo_state, MFD_COLO_PROTECTED);
    resume_writers(s);
    mfd__log(s, "COLO: checkpoint 0 committed on the secondary: protected");

    if (s->colo_staging && stage_map(s))
        return -1;
    uint64_t start = mfd__now_us();
    for (uint64_t id = 1;; id++) {
        if (!colo_wait(s, start + (uint64_t)s->ckpt_interval * 1000))
            break;
        uint64_t t0 = start = mfd__now_us();
        pause_writers(s);
        uint64_t dirty;
        if (mfd__tracker_sync(s, &dirty))
            return -1;
        MFD_STAT_ADD(s->dirty_sync_count, 1);
        MFD_STAT_SET(s->dirty_pages, dirty);
        uint64_t t_resume = 0;
        if (s->colo_staging) {
            stage_dirty(s, dirty);
            resume_writers(s);
            t_resume = mfd__now_us();
        }
        uint64_t b0 = channel_bytes(s, NULL), t1 = mfd__now_us();
        if (send_id_record(s, MFD_REC_CHECKPOINT_BEGIN, id,
                           "CHECKPOINT_BEGIN"))
            return -1;
        meter_pass_begin(s, m);
        uint64_t q0 = m->queued;
        if (walk_dirty(s, m, false) ||
            sync_channels(s, MFD_STAT_GET(s->iterations) + 1))
            return -1;
        for (int i = 0; i < s->nblocks; i++)
            s->blocks[i].src = s->blocks[i].host;
        if (!s->colo_staging) {
            resume_writers(s);
            t_resume = mfd__now_us();
        }
        if (s->live.progress) {
            mfd_pass_info p = {.pass = MFD_STAT_GET(s->iterations),
                               .pages = m->queued - q0,
                               .bytes = channel_bytes(s, NULL) - b0,
                               .time_us = mfd__now_us() - t1};
            s->live.progress(s->live_opaque, &p);
        }
        if (send_device_state(s) ||
            send_id_record(s, MFD_REC_CHECKPOINT_END, id, "CHECKPOINT_END") ||
            wait_ack(s, id, channel_bytes(s, NULL) - b0))
            return -1;
        mfd_checkpoint_info c = {.id = id,
                                 .pause_us = t_resume - t0,
                                 .transfer_us = mfd__now_us() - t1,
                                 .dirty_pages = dirty,
                                 .bytes = channel_bytes(s, NULL) - b0};
        MFD_STAT_ADD(s->colo_ckpts, 1);
        MFD_STAT_SET(s->colo_last_id, id);
        if (s->colo_ops.checkpoint)
            s->colo_ops.checkpoint(s->colo_opaque, &c);
    }
    if (mfd__failed(s))
        return -1;
    if (send_complete(s))
        return -1;
    MFD_STAT_SET(s->colo_state, MFD_COLO_STOPPED);
    return 0;
}

/*
 * A failure seen as a closed channel may have a reason on its way: the
 * destination's ERROR record. Give the return path a moment to read it
 * before the main channel is shut down.
 */
static void wait_for_reason(mfd_session *s)
{
    if (!s->rp_started || mfd__error_code(s) != MFD_ECLOSED)
        return;
    struct timespec ts = mfd__cond_deadline(500000);
    pthread_mutex_lock(&s->lock);
    while (!s->rp_done &&
           pthread_cond_timedwait(&s->cond, &s->lock, &ts) == 0)
        ;
    pthread_mutex_unlock(&s->lock);
}

/*
 * Joins the source's threads (channels, then the return path, which the
 * main channel's shutdown releases) and frees their resources. The channel
 * array stays: it carries the final stats.
 */
void mfd__send_release(mfd_session *s)
{
    for (uint32_t i = 0; s->sc && i < s->nchan; i++) {
        mfd_send_chan *ch = &s->sc[i];
        pthread_mutex_lock(&ch->lock);
        ch->quit = true;
        pthread_cond_signal(&ch->cond);
        pthread_mutex_unlock(&ch->lock);
    }
    for (uint32_t i = 0; s->sc && i < s->nchan; i++)
        if (s->sc[i].started) {
            pthread_join(s->sc[i].thread, NULL);
            s->sc[i].started = false;
        }
    if (s->main_fd >= 0)
        shutdown(s->main_fd, SHUT_RDWR);
    if (s->rp_started) {
        pthread_join(s->rp_thread, NULL);
        s->rp_started = false;
    }
    for (uint32_t i = 0; s->sc && i < s->nchan; i++) {
        mfd_send_chan *ch = &s->sc[i];
        mfd__close_chan_fd(s, &ch->fd);
        s->mops->send_cleanup(ch);
        free(ch->packet);
        free(ch->iov);
        for (int k = 0; k < MFD_CHAN_DEPTH; k++) {
            batch_free(ch->slot[k]);
            ch->slot[k] = NULL;
        }
        ch->packet = NULL;
        ch->iov = NULL;
    }
    batch_free(s->cur);
    s->cur = NULL;
}

/* CAP_IPC_LOCK lifts RLIMIT_MEMLOCK for pinned pages. */
static bool has_ipc_lock(void)
{
    FILE *f = fopen("/proc/self/status", "r");
    char line[256];
    unsigned long long eff = 0;
    while (f && fgets(line, sizeof(line), f))
        if (sscanf(line, "CapEff: %llx", &eff) == 1)
            break;
    if (f)
        fclose(f);
    return (eff >> 14) & 1;
}

/*
 * Zero-copy send is refused with compression (the payload is a copy
 * anyway), and when the pages it may pin at once exceed RLIMIT_MEMLOCK:
 * up to a socket send buffer's worth per channel, plus a packet.
 */
static int zc_refused(mfd_session *s)
{
    if (s->compression)
        return mfd__fail(s, MFD_EINVAL,
                         "zero-copy-send cannot be combined with "
                         "multifd-compression %s: a compressed payload is "
                         "a copy already",
                         mfd__method_name(s->method));
    uint64_t wmem = 4 << 20, a, b, c;
    FILE *f = fopen("/proc/sys/net/ipv4/tcp_wmem", "r");
    if (f && fscanf(f, "%" SCNu64 " %" SCNu64 " %" SCNu64, &a, &b, &c) == 3)
        wmem = c;
    if (f)
        fclose(f);
    uint64_t need = (uint64_t)s->channels * (wmem + MFD_PACKET_BYTES);
    struct rlimit rl;
    if (getrlimit(RLIMIT_MEMLOCK, &rl) || rl.rlim_cur == RLIM_INFINITY ||
        rl.rlim_cur >= need || has_ipc_lock())
        return 0;
    return mfd__fail(s, MFD_EINVAL,
                     "zero-copy-send: RLIMIT_MEMLOCK is %" PRIu64
                     " KiB; %" PRId64 " channels may pin up to %" PRIu64
                     " KiB (a %" PRIu64
                     " KiB socket send buffer and a packet each): raise it "
                     "(ulimit -l %" PRIu64 ") or run with CAP_IPC_LOCK",
                     (uint64_t)rl.rlim_cur >> 10, s->channels, need >> 10,
                     wmem >> 10, need >> 10);
}

/*
 * A snapshot file (file: URI) takes raw pages at fixed offsets: no
 * compression and no zero-copy (QEMU's mapped-ram refuses both too); and
 * direct-io means nothing to a socket.
 */
static int file_refused(mfd_session *s, bool file)
{
    if (!file)
        return s->direct_io ? mfd__fail(s, MFD_EINVAL,
                                        "direct-io applies to snapshot "
                                        "files (file:PATH) only")
                            : 0;
    if (s->compression)
        return mfd__fail(s, MFD_EINVAL,
                         "a snapshot file stores raw pages at fixed offsets: "
                         "multifd-compression %s cannot be used with file:",
                         mfd__method_name(s->method));
    if (s->zero_copy_send)
        return mfd__fail(s, MFD_EINVAL,
                         "zero-copy-send applies to TCP channels, not to a "
                         "snapshot file");
    return 0;
}

/* Zero-copy sends the pages as they are; TLS must encrypt them first. */
static int tls_refused(mfd_session *s)
{
    const char *unused = mfd__tls_priority_unused(s);
    if (unused)
        return mfd__fail(s, MFD_EINVAL, "%s", unused);
    if (mfd__tls_enabled(s) && s->zero_copy_send)
        return mfd__fail(s, MFD_EINVAL,
                         "zero-copy-send cannot be combined with TLS: the "
                         "payload is encrypted into a copy anyway");
    return 0;
}

int mfd__migrate(mfd_session *s, const char *uri)
{
    char err[512];
    mfd_uri u;
    MFD_STAT_SET(s->t_start, mfd__now_us());
    MFD_STAT_SET(s->status, 1);
    s->ppp = MFD_PACKET_BYTES / (uint32_t)s->page_size;
    s->mops = mfd__method_of((int)s->compression);
    s->method = s->mops->wire;
    if (mfd__uri_parse(uri, &u, err, sizeof(err)))
        return mfd__fail(s, MFD_EURI, "%s", err);
    bool file = u.kind == MFD_URI_FILE;
    int refused = file_refused(s, file);
    if (!refused)
        refused = tls_refused(s);
    if (!refused && s->zero_copy_send)
        refused = zc_refused(s);
    if (refused)
        return refused;
    if (s->colo && (file || s->verify || s->dirty_tracker == MFD_TRACKER_NONE))
        return mfd__fail(s, MFD_EINVAL,
                         "x-colo needs a network URI and a dirty tracker, "
                         "and excludes verify (the memory keeps changing)");
    for (int i = 0; i < s->nblocks; i++)
        s->blocks[i].src = s->blocks[i].host;
    if (s->colo)
        MFD_STAT_SET(s->colo_state, MFD_COLO_MIGRATING);
    if (s->dirty_tracker != MFD_TRACKER_NONE && !s->live.pause)
        return mfd__fail(s, MFD_EINVAL,
                         "a live migration (dirty tracker) needs a pause "
                         "callback (mfd_set_live_ops)");

    int rc = mfd__failed(s) ? -1 : 0;
    if (!rc)
        rc = file ? (new_uuid(s) ? -1 : mfd__snap_create(s, u.file))
                  : handshake(s, &u);
    if (!rc && s->colo)
        rc = mfd__colo_hb_start(s);
    if (!rc)
        rc = channels_setup(s, &u);
    if (!rc && !file) {
        if (pthread_create(&s->rp_thread, NULL, return_path, s))
            rc = mfd__fail(s, MFD_ESYS, "pthread_create failed");
        else
            s->rp_started = true;
    }
    if (!rc) {
        MFD_STAT_SET(s->t_setup, mfd__now_us());
        __atomic_store_n(&s->status, 2, __ATOMIC_RELAXED);
        rc = precopy(s);
    }
    if (!rc)
        rc = file     ? mfd__snap_finish(s)
             : s->colo ? colo_run(s)
                       : send_completion(s);

    /*
     * DONE means the destination owns the memory now: whatever fails
     * afterwards (a late mfd_cancel, a close while tearing down) must not
     * resume the writers, or both sides would run the guest.
     */
    pthread_mutex_lock(&s->lock);
    bool done = s->done_received;
    pthread_mutex_unlock(&s->lock);
    bool ok = done || (!rc && !mfd__failed(s));
    if (!ok) {
        mfd__send_error_record(s);
        wait_for_reason(s);
    }
    uint64_t end = mfd__now_us();
    mfd__colo_hb_stop(s);
    if (!ok && MFD_STAT_GET(s->colo_state) == MFD_COLO_PROTECTED) {
        /* The secondary is lost: the primary goes on, unprotected. */
        MFD_STAT_SET(s->colo_state, MFD_COLO_UNPROTECTED);
        mfd__log(s, "COLO: secondary lost (%s): running unprotected",
                 mfd_last_error(s));
        if (s->colo_ops.unprotected)
            s->colo_ops.unprotected(s->colo_opaque, mfd_last_error(s));
    }
    mfd__session_release_runtime(s);
    mfd__snap_free(s);
    mfd__tracker_stop(s);
    set_throttle(s, 0);
    MFD_STAT_SET(s->t_end, end);
    if (!ok) {
        /* The memory is the writers' again. */
        if (s->paused && s->live.resume)
            s->live.resume(s->live_opaque);
        s->paused = false;
        return -mfd__error_code(s);
    }
    MFD_STAT_SET(s->downtime_us, end - MFD_STAT_GET(s->t_pause));
    MFD_STAT_SET(s->progress_pct, 100);
    __atomic_store_n(&s->status, 3, __ATOMIC_RELAXED);
    return 0;
}
