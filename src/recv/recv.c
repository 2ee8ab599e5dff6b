/*
 * recv.c - the destination: listener, main-channel handshake, block
 * mapping, channel matching, the recv channel threads and completion.
 *
 * Every byte that arrives is validated before it is used: counts against
 * pages_per_packet, names against the block table, offsets against block
 * lengths, sizes against what the counts imply. Normal pages are read with
 * readv straight into their final place; a zero page that was never
 * received is not touched at all (fresh memory is already zero, and
 * touching it would allocate it).
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <linux/userfaultfd.h>
#include <sys/eventfd.h>
#include <sys/ioctl.h>
#include <sys/syscall.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/socket.h>
#include <sys/statvfs.h>
#include <unistd.h>

#include "common/util.h"
#include "colo/colo.h"
#include "core/session.h"
#include "method/method.h"
#include "protocol/crc32c.h"
#include "ram/bitmap.h"
#include "transport/transport.h"
#include "transport/tls.h"

#ifndef MADV_POPULATE_WRITE
#define MADV_POPULATE_WRITE 23
#endif
#ifndef UFFD_FEATURE_SIGBUS
#define UFFD_FEATURE_SIGBUS (1 << 7)
#endif

/* ---- recv channel thread ----------------------------------------------- */

#define CH_FAIL(ch, num, ...)                                                  \
    mfd__fail((ch)->s, MFD_EPROTO, "channel %u: packet %" PRIu64 ": %s",        \
              (ch)->id, (num), (snprintf(msgbuf, sizeof(msgbuf), __VA_ARGS__), \
                                msgbuf))

static int find_block(mfd_recv_chan *ch, const char *name)
{
    mfd_session *s = ch->s;
    if (ch->cached_block >= 0 && !strcmp(s->blocks[ch->cached_block].name, name))
        return ch->cached_block;
    for (int i = 0; i < s->nblocks; i++)
        if (!strcmp(s->blocks[i].name, name))
            return ch->cached_block = i;
    return -1;
}

/*
 * The iteration barrier: after a SYNC packet this channel reads nothing
 * more until the main thread has seen ITERATION_END for the pass and every
 * channel has reached its SYNC.
 */
static void wait_release(mfd_recv_chan *ch)
{
    mfd_session *s = ch->s;
    pthread_mutex_lock(&s->sync_lock);
    uint64_t mine = ++ch->synced;
    __atomic_store_n(&ch->since_sync, 0, __ATOMIC_RELAXED);
    pthread_cond_broadcast(&s->sync_cond);
    while (s->released_iter < mine && !mfd__failed(s) && !s->quit)
        pthread_cond_wait(&s->sync_cond, &s->sync_lock);
    pthread_mutex_unlock(&s->sync_lock);
}

/*
 * Zero pages: a page whose memory never received data is left untouched
 * (fresh memory is zero, and touching it would allocate it); a page that
 * holds data from an earlier pass is cleared - in a file by punching a
 * hole, so the file stays sparse.
 */
static void apply_zero_page(mfd_block *b, uint64_t off, uint32_t ps)
{
    if (!mfd__bitmap_test_atomic(b->receivedmap, off / ps))
        return;
    if (b->fd >= 0 && fallocate(b->fd, FALLOC_FL_PUNCH_HOLE |
                                           FALLOC_FL_KEEP_SIZE,
                                (off_t)off, ps) == 0)
        return;
    memset(b->host + off, 0, ps);
}

/*
 * Places `len` bytes from the channel's buffer at `off` in a UFFD block.
 * UFFDIO_COPY fails with EEXIST on a host page that is already there; such
 * a page is simply copied into. The unit is the host page, not the
 * migration's: a peer that sends one 64 KiB page on two channels at once
 * may have had only part of it placed by the other channel so far, and a
 * host page not yet placed must never be touched (it would fault).
 */
int mfd__uffd_place(mfd_session *s, mfd_block *b, uint64_t off,
                    const uint8_t *src, uint64_t len)
{
    while (len) {
        struct uffdio_copy c = {.dst = (uintptr_t)(b->host + off),
                                .src = (uintptr_t)src,
                                .len = len};
        if (ioctl(s->uffd, UFFDIO_COPY, &c) == 0)
            return 0;
        uint64_t done = c.copy > 0 ? (uint64_t)c.copy : 0;
        if (errno == EEXIST && !done) {
            done = (uint64_t)sysconf(_SC_PAGESIZE);
            memcpy(b->host + off, src, done);
        } else if (errno != EAGAIN && errno != EEXIST && !done) {
            return -1;
        }
        off += done;
        src += done;
        len -= done;
    }
    return 0;
}

/*
 * Writes the normal pages of a packet from the channel's buffer into their
 * places, a run of adjacent pages at a time.
 */
static int place_pages(mfd_recv_chan *ch, mfd_block *b, uint32_t normal,
                       uint64_t num)
{
    mfd_session *s = ch->s;
    uint32_t ps = (uint32_t)s->page_size;
    const uint8_t *offs = ch->packet + MFD_PKT_OFFSETS;
    uint32_t i = 0;
    while (i < normal) {
        uint64_t off = mfd__get_be64(offs + 8 * (size_t)i);
        bool had = mfd__bitmap_test_atomic(b->receivedmap, off / ps);
        uint32_t j = i + 1;
        while (j < normal &&
               mfd__get_be64(offs + 8 * (size_t)j) == off + (uint64_t)(j - i) * ps &&
               mfd__bitmap_test_atomic(b->receivedmap, off / ps + (j - i)) == had)
            j++;
        const uint8_t *src = ch->bounce + (size_t)i * ps;
        uint64_t len = (uint64_t)(j - i) * ps;
        if (b->place == MFD_PLACE_PWRITE) {
            uint64_t done = 0;
            while (done < len) {
                ssize_t n = pwrite(b->fd, src + done, len - done,
                                   (off_t)(off + done));
                if (n < 0 && errno == EINTR)
                    continue;
                if (n <= 0)
                    return mfd__fail(s, MFD_ESYS,
                                     "channel %u: packet %" PRIu64
                                     ": write to block '%s' at 0x%" PRIx64
                                     ": %s",
                                     ch->id, num, b->name, off + done,
                                     n < 0 ? strerror(errno) : "no space");
                done += (uint64_t)n;
            }
        } else if (!had && b->place == MFD_PLACE_UFFD) {
            if (mfd__uffd_place(s, b, off, src, len))
                return mfd__fail(s, MFD_ESYS,
                                 "channel %u: packet %" PRIu64
                                 ": UFFDIO_COPY into block '%s' at 0x%" PRIx64
                                 ": %s",
                                 ch->id, num, b->name, off, strerror(errno));
        } else {
            memcpy(b->host + off, src, len);
        }
        if (!had)
            mfd__bitmap_set_range_atomic(b->receivedmap, off / ps, j - i);
        i = j;
    }
    return 0;
}

static int recv_one(mfd_recv_chan *ch)
{
    mfd_session *s = ch->s;
    uint32_t ps = (uint32_t)s->page_size;
    size_t plen = mfd__packet_len(s->ppp);
    char msgbuf[400], err[300];
    mfd_packet_hdr h;

    int rc = mfd__read_full_lowat(ch->fd, &ch->lowat, ch->packet, plen);
    if (rc != MFD_IO_EOF)
        __atomic_fetch_add(&ch->since_sync, 1, __ATOMIC_RELAXED);
    if (rc != MFD_IO_OK) {
        if (__atomic_load_n(&s->quit, __ATOMIC_ACQUIRE) || mfd__failed(s))
            return 1;
        return mfd__fail(s, MFD_ECLOSED, "channel %u: %s%s", ch->id,
                         rc == MFD_IO_TRUNCATED ? "truncated packet: " : "",
                         mfd__io_strerror(rc));
    }
    MFD_STAT_SET(s->last_rx_us, mfd__now_us());
    uint64_t num = mfd__get_be64(ch->packet + MFD_PKT_NUM);
    if (!mfd__packet_decode(ch->packet, s->ppp, &h, err, sizeof(err)))
        return CH_FAIL(ch, num, "%s", err);

    uint32_t count = h.normal + h.zero;
    mfd_block *b = NULL;
    if (count) {
        if ((h.flags & MFD_FLAG_METHOD_MASK) != s->method)
            return CH_FAIL(ch, num, "flags method bits 0x%x, negotiated 0x%x",
                           h.flags & MFD_FLAG_METHOD_MASK, s->method);
        int bi = find_block(ch, h.name);
        if (bi < 0)
            return CH_FAIL(ch, num, "unknown block '%.255s'", h.name);
        b = &s->blocks[bi];
        const uint8_t *offs = ch->packet + MFD_PKT_OFFSETS;
        for (uint32_t i = 0; i < count; i++) {
            uint64_t off = mfd__get_be64(offs + 8 * (size_t)i);
            const char *kind = i < h.normal ? "normal" : "zero";
            if (off % ps)
                return CH_FAIL(ch, num,
                               "%s page offset 0x%" PRIx64
                               " not aligned to page size %u",
                               kind, off, ps);
            if (off > b->length - ps)
                return CH_FAIL(ch, num,
                               "%s page offset 0x%" PRIx64
                               " beyond block '%s' (length 0x%" PRIx64 ")",
                               kind, off, b->name, b->length);
        }
    }
    /* Raw pages: exactly their size; compressed: within the bound. */
    const mfd_method_ops *mops = s->mops;
    uint64_t raw = (uint64_t)h.normal * ps;
    if (!mops->decode && (uint64_t)h.next_size != raw)
        return CH_FAIL(ch, num, "next_packet_size %u, expected %" PRIu64
                       " for %u normal pages",
                       h.next_size, raw, h.normal);
    /* PROTOCOL.md 2.2: the bound for a full packet, whatever it holds. */
    if (mops->decode && (!h.normal != !h.next_size ||
                         h.next_size > mops->bound(s->ppp, ps)))
        return CH_FAIL(ch, num,
                       "next_packet_size %u for %u normal pages (%s: %s%" PRIu64
                       ")",
                       h.next_size, h.normal, mops->name,
                       h.normal ? "at most " : "0 without pages, not ",
                       h.normal ? mops->bound(s->ppp, ps) : (uint64_t)h.next_size);

    uint32_t crc = 0;
    bool check_crc = s->features & MFD_FEAT_CRC;
    if (check_crc) {
        mfd__put_be32(ch->packet + MFD_PKT_CRC, 0);
        crc = mfd__crc32c(0, ch->packet, plen);
        if (!h.crc_scope && crc != h.crc)
            return CH_FAIL(ch, num, "CRC mismatch: packet says 0x%08x, "
                           "computed 0x%08x", h.crc, crc);
    }

    /* The payload: in place, or in the channel's buffers (method.h). */
    int nsent = 0;
    bool buffered = false;
    if (h.normal) {
        rc = mops->recv(ch, b, &h, num, &nsent, &buffered);
        if (rc)
            return rc > 0 ? 1 : -1;
    }
    if (check_crc && h.crc_scope) {
        for (int i = 0; i < nsent; i++)
            crc = mfd__crc32c(crc, ch->iov[i].iov_base, ch->iov[i].iov_len);
        if (crc != h.crc)
            return CH_FAIL(ch, num, "CRC mismatch over packet and payload: "
                           "packet says 0x%08x, computed 0x%08x", h.crc, crc);
    }
    if (h.normal && mops->decode) {
        char derr[256];
        uint64_t t0 = mfd__now_us();
        int dr = mops->decode(&ch->m, ch->m.buf, h.next_size, ch->bounce, raw,
                              derr, sizeof(derr));
        MFD_STAT_ADD(ch->st.compress_us, mfd__now_us() - t0);
        if (dr)
            return CH_FAIL(ch, num, "%s payload: %s", mops->name, derr);
        MFD_STAT_ADD(ch->st.raw_bytes, raw);
        MFD_STAT_ADD(ch->st.compressed_bytes, h.next_size);
    }
    if (buffered && place_pages(ch, b, h.normal, num))
        return -1;
    const uint8_t *offs = ch->packet + MFD_PKT_OFFSETS;
    for (uint32_t i = 0; !buffered && i < h.normal; i++)
        mfd__bitmap_set_atomic(b->receivedmap,
                               mfd__get_be64(offs + 8 * (size_t)i) / ps);

    for (uint32_t i = h.normal; i < count; i++)
        apply_zero_page(b, mfd__get_be64(ch->packet + MFD_PKT_OFFSETS + 8 * i),
                        ps);
    for (uint32_t i = 0; b && b->ckpt_map && i < count; i++)
        mfd__colo_record(b, mfd__get_be64(offs + 8 * (size_t)i) / ps,
                         i >= h.normal);

    MFD_STAT_ADD(ch->st.packets, 1);
    MFD_STAT_ADD(ch->st.normal_pages, h.normal);
    MFD_STAT_ADD(ch->st.zero_pages, h.zero);
    MFD_STAT_ADD(ch->st.bytes, plen + h.next_size);
    if (count)
        MFD_STAT_ADD(s->data_packets, 1);
    /* An older peer may send SYNC on a packet that also carries pages. */
    if (h.flags & MFD_FLAG_SYNC) {
        MFD_STAT_ADD(ch->st.sync_packets, 1);
        wait_release(ch);
    }
    return 0;
}

static void *recv_thread(void *arg)
{
    mfd_recv_chan *ch = arg;
    char name[16];
    snprintf(name, sizeof(name), "mfd-recv/%u", ch->id);
    pthread_setname_np(pthread_self(), name);
    while (!recv_one(ch))
        ;
    return NULL;
}

/* ---- listener and main channel ----------------------------------------- */

MFD_API int mfd_listen(mfd_session *s, const char *uri)
{
    char err[512];
    mfd_uri u;
    if (s->used || s->listen_fd >= 0)
        return mfd__set_error(s, MFD_ESTATE, "session already used");
    if (mfd__uri_parse(uri, &u, err, sizeof(err)))
        return mfd__set_error(s, MFD_EURI, "%s", err);
    if (u.kind == MFD_URI_FILE)
        return mfd__set_error(s, MFD_EURI,
                              "URI '%s': a snapshot file is read with "
                              "mfd_restore (multifd restore), not listened on",
                              uri);
    const char *unused = mfd__tls_priority_unused(s);
    if (unused)
        return mfd__set_error(s, MFD_EINVAL, "%s", unused);
    if (mfd__tls_enabled(s) && mfd__tls_setup(s, true))
        return -mfd__error_code(s);
    s->listen_fd = mfd__sock_listen(&u, s->listen_uri, sizeof(s->listen_uri),
                                    err, sizeof(err));
    if (s->listen_fd < 0)
        return mfd__set_error(s, MFD_ESYS, "%s", err);
    if (s->wake_fd < 0)
        return mfd__set_error(s, MFD_ESYS, "eventfd: %s", strerror(errno));
    /* Parameters and blocks may still be set until mfd_incoming(). */
    MFD_STAT_SET(s->role, 2);
    MFD_STAT_SET(s->status, 1);
    return 0;
}

/*
 * Accepts one connection. Returns its fd, -2 for a connection that vanished
 * before it was accepted (try again), or -1 after failing the session: a
 * listener that keeps failing (out of file descriptors) must not spin.
 */
static int accept_one(mfd_session *s)
{
    int fd = mfd__sock_accept(s->listen_fd);
    if (fd >= 0) {
        mfd__sock_set_timeout(fd, (int)s->network_timeout);
        return fd;
    }
    if (errno == EINTR || errno == ECONNABORTED || errno == EAGAIN ||
        errno == EPROTO)
        return -2;
    return mfd__fail(s, MFD_ESYS, "accept on %s: %s", s->listen_uri,
                     strerror(errno));
}

/*
 * Incoming connections are vetted side by side, each on a thread of its
 * own: the TLS handshake, then the first bytes (a main channel's preamble,
 * a data channel's init message), all within handshake-timeout of the
 * accept. A peer that connects and stalls costs one thread for that long,
 * never the accepting loop: the connections behind it are vetted at once.
 * With VET_MAX connections in vetting, a new one evicts the oldest (a real
 * peer finishes its handshake in milliseconds; the oldest is the likeliest
 * to be stalled), so a crowd of strangers cannot keep a source out.
 */
#define VET_MAX 16
/*
 * During channel setup the channels still missing may be in vetting on top
 * of VET_MAX: a source may connect all its channels at once (255 at most),
 * and evicting one of them would fail the session.
 */
#define VET_ALL (VET_MAX + 255)

typedef struct vet {
    mfd_session *s;
    int fd;
    int efd;         /* the vetting's eventfd: written when done */
    pthread_t thread;
    uint64_t t0;     /* accepted, mfd__now_us() */
    int rc;          /* MFD_IO_* of the reads */
    bool refused;    /* the TLS handshake failed (why says why) */
    bool evicted;    /* shut down to make room for a newer connection */
    bool done;       /* atomic */
    uint8_t first[MFD_INIT_LEN]; /* MFD_PREAMBLE_LEN or MFD_INIT_LEN bytes */
    char why[512];   /* a failure, in the vetting thread's words */
} vet;

typedef struct vetting {
    vet *v[2 * VET_ALL]; /* evicted ones stay until their thread is done */
    int n, live;         /* all, and those not evicted */
    int cap;             /* live ones before the oldest is evicted */
    int efd;
} vetting;

static void *vet_main(void *arg)
{
    vet *v = arg;
    mfd_session *s = v->s;
    int rc = MFD_IO_OK;
    if (mfd__tls_enabled(s) &&
        mfd__tls_server(s, v->fd, v->why, sizeof(v->why)))
        v->refused = true;
    size_t got = 0, want = 4;
    while (!v->refused && rc == MFD_IO_OK && got < want) {
        uint64_t spent = (mfd__now_us() - v->t0) / 1000;
        int left = spent >= (uint64_t)s->handshake_timeout
                       ? 0
                       : (int)(s->handshake_timeout - (int64_t)spent);
        rc = mfd__read_full_timeout(v->fd, v->first + got, want - got, left);
        /* The health check that sends "MFDC" and leaves: incomplete. */
        if (rc == MFD_IO_EOF && got)
            rc = MFD_IO_TRUNCATED;
        got = want;
        if (rc == MFD_IO_OK && want == 4) {
            uint32_t magic = mfd__get_be32(v->first);
            want = magic == MFD_MAIN_MAGIC   ? MFD_PREAMBLE_LEN
                   : magic == MFD_DATA_MAGIC ? MFD_INIT_LEN
                                             : 4;
        }
    }
    v->rc = rc;
    if (!v->refused && rc != MFD_IO_OK) /* errno is this thread's */
        snprintf(v->why, sizeof(v->why), "%s", mfd__io_strerror(rc));
    __atomic_store_n(&v->done, true, __ATOMIC_RELEASE);
    uint64_t one = 1;
    if (write(v->efd, &one, sizeof(one)) < 0) {
        /* The counter cannot overflow with 2 * VET_ALL writers. */
    }
    return NULL;
}

static int vetting_start(mfd_session *s, vetting *vt)
{
    memset(vt, 0, sizeof(*vt));
    vt->cap = VET_MAX;
    vt->efd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    if (vt->efd < 0)
        return mfd__fail(s, MFD_ESYS, "eventfd: %s", strerror(errno));
    return 0;
}

/*
 * Stops the vetting: connections still in it are closed (`when` says why);
 * one may be a data channel of the session whose preamble had not come.
 */
static void vetting_end(mfd_session *s, vetting *vt, const char *when)
{
    for (int i = 0; i < vt->n; i++)
        shutdown(vt->v[i]->fd, SHUT_RDWR);
    for (int i = 0; i < vt->n; i++) {
        pthread_join(vt->v[i]->thread, NULL);
        if (!vt->v[i]->evicted)
            mfd__log(s, "closed a connection whose preamble had not come "
                        "when %s",
                     when);
        mfd__sock_close(vt->v[i]->fd);
        free(vt->v[i]);
    }
    vt->n = vt->live = 0;
    if (vt->efd >= 0)
        close(vt->efd);
    vt->efd = -1;
}

/* Starts vetting a connection just accepted; evicts the oldest if full. */
static void vet_begin(mfd_session *s, vetting *vt, int fd)
{
    if (vt->live >= vt->cap) {
        vet *old = NULL;
        for (int i = 0; i < vt->n; i++)
            if (!vt->v[i]->evicted && (!old || vt->v[i]->t0 < old->t0))
                old = vt->v[i];
        old->evicted = true;
        vt->live--;
        shutdown(old->fd, SHUT_RDWR);
    }
    vet *v = calloc(1, sizeof(*v));
    if (v) {
        *v = (vet){.s = s, .fd = fd, .efd = vt->efd, .t0 = mfd__now_us()};
        if (pthread_create(&v->thread, NULL, vet_main, v)) {
            free(v);
            v = NULL;
        }
    }
    if (!v) {
        mfd__log(s, "closed connection: no memory or thread to vet it");
        mfd__sock_close(fd);
        return;
    }
    vt->v[vt->n++] = v;
    vt->live++;
}

/*
 * Returns the next connection whose vetting is done (the caller owns it:
 * its fd and the struct), or NULL after failing the session, being woken
 * or reaching deadline_us (0: none; `what` then names the wait in the
 * error). main_fd >= 0: the session's main channel closing fails it.
 */
static vet *vetted_next(mfd_session *s, vetting *vt, int main_fd,
                        uint64_t deadline_us, const char *what)
{
    for (;;) {
        if (mfd__failed(s))
            return NULL;
        int tmo = -1;
        if (deadline_us) {
            uint64_t now = mfd__now_us();
            if (now >= deadline_us) {
                mfd__fail(s, MFD_ETIMEDOUT, "%s", what);
                return NULL;
            }
            tmo = (int)((deadline_us - now + 999) / 1000);
        }
        for (int i = 0; i < vt->n; i++) {
            vet *v = vt->v[i];
            if (!__atomic_load_n(&v->done, __ATOMIC_ACQUIRE))
                continue;
            pthread_join(v->thread, NULL);
            vt->v[i] = vt->v[--vt->n];
            if (!v->evicted)
                vt->live--;
            return v;
        }
        struct pollfd p[4] = {
            {.fd = s->wake_fd, .events = POLLIN},
            {.fd = vt->efd, .events = POLLIN},
            {.fd = vt->n < 2 * vt->cap ? s->listen_fd : -1, .events = POLLIN},
            {.fd = main_fd, .events = POLLRDHUP},
        };
        int rc = poll(p, 4, tmo);
        if (rc < 0 && errno == EINTR)
            continue;
        if (rc < 0) {
            mfd__fail(s, MFD_ESYS, "poll: %s", strerror(errno));
            return NULL;
        }
        if (mfd__failed(s) || (p[0].revents & POLLIN))
            return NULL;
        if (main_fd >= 0 && p[3].revents) {
            mfd__fail(s, MFD_ECLOSED,
                      "source closed the main channel during channel setup");
            return NULL;
        }
        if (p[1].revents & POLLIN) {
            uint64_t c;
            if (read(vt->efd, &c, sizeof(c)) < 0) {
                /* EAGAIN: drained already; the done flags tell. */
            }
        }
        if (!(p[2].revents & POLLIN))
            continue;
        int fd = accept_one(s);
        if (fd == -1)
            return NULL;
        if (fd >= 0)
            vet_begin(s, vt, fd);
    }
}

/* Logs and closes a connection that did not pass its vetting. */
static bool vet_refused(mfd_session *s, vet *v, const char *when)
{
    if (v->rc == MFD_IO_OK && !v->refused && !v->evicted)
        return false;
    uint32_t magic = mfd__get_be32(v->first);
    if (v->evicted)
        mfd__log(s, "closed stray connection%s: evicted after %" PRIu64
                    " ms of vetting, the oldest of %d, for a newer one",
                 when, (mfd__now_us() - v->t0) / 1000, VET_MAX);
    else if (v->refused)
        mfd__log(s, "closed connection%s: %s", when, v->why);
    else
        mfd__log(s, "closed stray connection%s: %s%s", when,
                 magic == MFD_MAIN_MAGIC   ? "incomplete preamble: "
                 : magic == MFD_DATA_MAGIC ? "incomplete init message: "
                                           : "",
                 v->why);
    mfd__sock_close(v->fd);
    free(v);
    return true;
}

/* Accepts connections until one is a main channel with a valid preamble. */
static int accept_main(mfd_session *s)
{
    vetting vt;
    if (vetting_start(s, &vt))
        return -1;
    for (;;) {
        vet *v = vetted_next(s, &vt, -1, 0, NULL);
        if (!v) {
            vetting_end(s, &vt, "the session failed");
            return -1;
        }
        /*
         * Only a complete, valid preamble within the handshake timeout
         * starts a session (a health check that sends "MFDC" and leaves
         * does not).
         */
        if (vet_refused(s, v, ""))
            continue;
        uint32_t magic = mfd__get_be32(v->first);
        if (magic != MFD_MAIN_MAGIC) {
            mfd__log(s, "closed stray connection: %s 0x%08x before any "
                        "session",
                     magic == MFD_DATA_MAGIC ? "data channel magic"
                                             : "unknown magic",
                     magic);
            mfd__sock_close(v->fd);
            free(v);
            continue;
        }
        /* From here on this connection is the session's main channel. */
        vetting_end(s, &vt, "a main channel started the session");
        int fd = s->main_fd = v->fd;
        uint32_t version = mfd__get_be32(v->first + 4);
        free(v);
        MFD_STAT_SET(s->t_start, mfd__now_us());
        uint8_t answer[MFD_PREAMBLE_LEN];
        mfd__preamble_encode(answer, MFD_PROTO_VERSION);
        MFD_STAT_ADD(s->main_bytes, 2 * MFD_PREAMBLE_LEN);
        if (version < MFD_PROTO_VERSION) {
            mfd__write_full(fd, answer, sizeof(answer));
            return mfd__fail(s, MFD_EUNSUPPORTED,
                             "main channel: source speaks protocol version "
                             "%u, older than any this destination speaks "
                             "(%u)",
                             version, MFD_PROTO_VERSION);
        }
        if (mfd__write_full(fd, answer, sizeof(answer)) != MFD_IO_OK)
            return mfd__fail(s, MFD_ECLOSED, "main channel preamble: %s",
                             strerror(errno));
        return 0;
    }
}

/* Reads one record of the setup phase, which must be of type `want`. */
static int setup_record(mfd_session *s, uint32_t want, const char *what,
                        uint8_t **body, uint32_t *len)
{
    char err[300];
    uint32_t type;
    for (int skipped = 0;; skipped++) {
        int rc = mfd__recv_record(s, (int)s->handshake_timeout, &type, body, len,
                                  err, sizeof(err));
        if (rc < 0 && rc != MFD_IO_ERROR && rc != MFD_IO_TIMEOUT &&
            rc != MFD_IO_WOKEN)
            return mfd__fail(s, -rc, "%s", err);
        if (rc != MFD_IO_OK)
            return mfd__fail(s, rc == MFD_IO_TIMEOUT ? MFD_ETIMEDOUT : MFD_ECLOSED,
                             "main channel: waiting for %s: %s", what,
                             mfd__io_strerror(rc));
        if (type == MFD_REC_CANCEL || type == MFD_REC_ERROR) {
            free(*body);
            return mfd__fail_peer(s, MFD_EPEER,
                                  "source ended the session during setup");
        }
        if (type != want) {
            free(*body);
            *body = NULL;
            if (!(type & MFD_REC_OPTIONAL))
                return mfd__fail(s, MFD_EPROTO,
                                 "main channel: expected %s, got record type "
                                 "0x%x",
                                 what, type);
            if (mfd__skip_optional(s, skipped, what))
                return -1;
            continue;
        }
        return 0;
    }
}

/*
 * Registers fresh anonymous memory with userfaultfd so pages can be placed
 * with UFFDIO_COPY. With UFFD_FEATURE_SIGBUS nothing has to serve faults:
 * an access to a page that was never placed would raise SIGBUS instead of
 * waiting, and none happens before the registration ends (placement_done).
 * Any failure here just means the block is written with readv.
 */
static int uffd_register(mfd_session *s, mfd_block *b)
{
    if (s->uffd < 0) {
        int fd = (int)syscall(SYS_userfaultfd, O_CLOEXEC | O_NONBLOCK);
        if (fd < 0)
            return -1;
        struct uffdio_api api = {.api = UFFD_API,
                                 .features = UFFD_FEATURE_SIGBUS};
        if (ioctl(fd, UFFDIO_API, &api)) {
            mfd__sock_close(fd);
            return -1;
        }
        s->uffd = fd;
    }
    struct uffdio_register r = {
        .range = {.start = (uintptr_t)b->host, .len = b->length},
        .mode = UFFDIO_REGISTER_MODE_MISSING};
    return ioctl(s->uffd, UFFDIO_REGISTER, &r) ? -1 : 0;
}

/* Ends userfaultfd placement: the memory becomes ordinary memory again. */
void mfd__placement_done(mfd_session *s)
{
    if (s->uffd >= 0) {
        close(s->uffd);
        s->uffd = -1;
    }
}

/* The file the caller named for a block (mfd_set_incoming_file), or NULL. */
static const char *named_file(const mfd_session *s, const char *block)
{
    for (int i = 0; i < s->nfiles; i++)
        if (!strcmp(s->files[i].block, block))
            return s->files[i].path;
    return NULL;
}

/*
 * Opens (creating) the file a block is received into; the caller empties
 * it once it knows no other block is in it.
 */
static int open_block_file(mfd_session *s, mfd_block *b, const char *path)
{
    int fd;
    if (path) {
        fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0644);
        if (fd < 0)
            return mfd__fail(s, MFD_ESYS, "block '%s': create %s: %s",
                             b->name, path, strerror(errno));
        return fd;
    }
    /* A peer's name becomes a file name: never a path out of the dir. */
    if (strchr(b->name, '/') || !strcmp(b->name, ".") ||
        !strcmp(b->name, ".."))
        return mfd__fail(s, MFD_EREFUSED,
                         "block '%s': name cannot be a file name in the "
                         "incoming directory",
                         b->name);
    int dfd = open(s->incoming_dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dfd < 0)
        return mfd__fail(s, MFD_ESYS, "incoming directory '%s': %s",
                         s->incoming_dir, strerror(errno));
    fd = openat(dfd, b->name, O_RDWR | O_CREAT | O_NOFOLLOW | O_CLOEXEC, 0644);
    int e = errno;
    close(dfd);
    if (fd < 0)
        return mfd__fail(s, MFD_ESYS, "block '%s': create %s/%s: %s", b->name,
                         s->incoming_dir, b->name, strerror(e));
    return fd;
}

int mfd__map_block(mfd_session *s, mfd_block *b)
{
    const char *path = named_file(s, b->name);
    if (path || s->incoming_dir) {
        int fd = open_block_file(s, b, path);
        int e;
        if (fd < 0)
            return -1;
        /* Two blocks in one file would write over each other. */
        struct stat st, ot;
        bool known = fstat(fd, &st) == 0;
        for (mfd_block *o = s->blocks; known && o < b; o++)
            if (o->fd >= 0 && !fstat(o->fd, &ot) && ot.st_dev == st.st_dev &&
                ot.st_ino == st.st_ino) {
                mfd__sock_close(fd);
                return mfd__fail(s, MFD_EREFUSED,
                                 "block '%s': its file already holds block "
                                 "'%s'",
                                 b->name, o->name);
            }
        if (ftruncate(fd, 0) < 0 || ftruncate(fd, (off_t)b->length) < 0) {
            e = errno;
            mfd__sock_close(fd);
            return mfd__fail(s, MFD_ESYS, "block '%s': size file to %" PRIu64
                             ": %s", b->name, b->length, strerror(e));
        }
        void *p = mmap(NULL, b->length, PROT_READ | PROT_WRITE, MAP_SHARED,
                       fd, 0);
        if (p == MAP_FAILED) {
            e = errno;
            mfd__sock_close(fd);
            return mfd__fail(s, MFD_ESYS, "block '%s': mmap: %s", b->name,
                             strerror(e));
        }
        b->host = p;
        b->fd = fd;
        b->place = MFD_PLACE_PWRITE;
    } else {
        void *p = mmap(NULL, b->length, PROT_READ | PROT_WRITE,
                       MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
        if (p == MAP_FAILED)
            return mfd__fail(s, MFD_ESYS, "block '%s': mmap of %" PRIu64
                             " bytes: %s", b->name, b->length,
                             strerror(errno));
        b->host = p;
        b->place = MFD_PLACE_READV;
    }
    b->mapped = true;
    if (s->prealloc) {
        if (madvise(b->host, b->length, MADV_POPULATE_WRITE) < 0)
            /* Kernels before 5.14: touch each page instead. */
            for (uint64_t o = 0; o < b->length; o += (uint64_t)s->page_size)
                ((volatile uint8_t *)b->host)[o] = 0;
        b->place = MFD_PLACE_READV;
        return 0;
    }
    /* UFFDIO_COPY places whole host pages: smaller pages use readv. */
    if (b->place == MFD_PLACE_READV &&
        s->page_size % sysconf(_SC_PAGESIZE) == 0 && uffd_register(s, b) == 0)
        b->place = MFD_PLACE_UFFD;
    return 0;
}

/*
 * The most this destination accepts before it maps anything: every length
 * is a peer's claim, and nothing is sized by it until it passed this bound.
 */
uint64_t mfd__total_size_limit(const mfd_session *s)
{
    if (s->max_total_size)
        return (uint64_t)s->max_total_size;
    if (s->incoming_dir) {
        struct statvfs v;
        if (statvfs(s->incoming_dir, &v) == 0)
            return (uint64_t)v.f_bavail * v.f_frsize;
        return 0;
    }
    long pages = sysconf(_SC_PHYS_PAGES), psz = sysconf(_SC_PAGESIZE);
    return pages > 0 && psz > 0 ? (uint64_t)pages * (uint64_t)psz : 0;
}

static int read_setup(mfd_session *s)
{
    uint8_t *body;
    uint32_t len;
    char err[300];
    mfd_hello h;

    if (setup_record(s, MFD_REC_HELLO, "HELLO", &body, &len))
        return -1;
    bool ok = mfd__hello_decode(body, len, &h, err, sizeof(err));
    free(body);
    if (!ok)
        return mfd__fail(s, MFD_EPROTO, "main channel: %s", err);
    int index = mfd__method_index(h.method);
    if (index < 0)
        return mfd__fail(s, MFD_EREFUSED,
                         "HELLO: compression method %s (0x%x) is not built "
                         "into this destination",
                         mfd__method_name(h.method), h.method);
    if (!((s->accept_compression >> index) & 1))
        return mfd__fail(s, MFD_EREFUSED,
                         "HELLO: compression method %s is not accepted by "
                         "this destination (accept-compression)",
                         mfd__method_name(h.method));
    s->mops = mfd__method_of(index);
    memcpy(s->uuid, h.uuid, 16);
    /* Read by mfd_get_stats on other threads. */
    MFD_STAT_SET(s->page_size, h.page_size);
    s->ppp = h.pages_per_packet;
    MFD_STAT_SET(s->channels, h.channels);
    s->zpd = h.zero_page_detection;
    s->method = h.method;
    s->features = h.features & (MFD_FEAT_CRC | MFD_FEAT_VERIFY |
                                (s->colo ? MFD_FEAT_COLO : 0));

    bool have = s->blocks_from_caller;
    if (have && s->nblocks != (int)h.block_count)
        return mfd__fail(s, MFD_EREFUSED,
                         "HELLO: %u blocks offered, this destination has %d",
                         h.block_count, s->nblocks);
    if (!have && !(s->blocks = calloc(h.block_count, sizeof(mfd_block))))
        return mfd__fail(s, MFD_ENOMEM, "out of memory");

    uint64_t total = 0, limit = mfd__total_size_limit(s);
    for (uint32_t i = 0; i < h.block_count; i++) {
        if (setup_record(s, MFD_REC_BLOCK, "BLOCK", &body, &len))
            return -1;
        uint64_t blen = len >= 16 ? mfd__get_be64(body) : 0;
        uint32_t idx = len >= 16 ? mfd__get_be32(body + 8) : 0;
        uint32_t nlen = len >= 16 ? mfd__get_be32(body + 12) : 0;
        const char *fail = NULL;
        if (len < 16 || nlen < 1 || nlen > MFD_BLOCK_NAME_MAX ||
            len != 16 + nlen)
            fail = "body length does not match name_len (1..255)";
        else if (idx != i)
            fail = "index out of order";
        else if (!mfd__block_name_valid((const char *)body + 16, nlen))
            fail = "name is not printable ASCII";
        else if (blen == 0 || blen % h.page_size)
            fail = "length is not a non-zero multiple of the page size";
        if (fail) {
            free(body);
            return mfd__fail(s, MFD_EPROTO, "main channel: BLOCK %u: %s", i,
                             fail);
        }
        char name[MFD_BLOCK_NAME_MAX + 1];
        memcpy(name, body + 16, nlen);
        name[nlen] = 0;
        free(body);
        for (uint32_t j = 0; j < i; j++)
            if (!strcmp(s->blocks[j].name, name))
                return mfd__fail(s, MFD_EPROTO,
                                 "main channel: BLOCK %u: duplicate name "
                                 "'%s'",
                                 i, name);
        if (total + blen < total || total + blen > limit)
            return mfd__fail(s, MFD_EREFUSED,
                             "main channel: BLOCK %u: total size of blocks "
                             "exceeds %" PRIu64 " bytes (%s)",
                             i, limit,
                             s->max_total_size ? "max-total-size"
                             : s->incoming_dir ? "free space in the incoming "
                                                 "directory"
                                               : "physical memory");
        total += blen;
        mfd_block *b = &s->blocks[i];
        if (have) {
            if (strcmp(b->name, name) || b->length != blen)
                return mfd__fail(s, MFD_EREFUSED,
                                 "BLOCK %u: '%s' of %" PRIu64
                                 " bytes does not match this destination's "
                                 "block '%s' of %" PRIu64 " bytes",
                                 i, name, blen, b->name, b->length);
        } else {
            if (!(b->name = strdup(name)))
                return mfd__fail(s, MFD_ENOMEM, "out of memory");
            b->name_len = nlen;
            b->length = blen;
            b->fd = -1;
            s->nblocks++;
        }
        b->pages = blen / h.page_size;
        if (!have)
            MFD_STAT_ADD(s->ram_bytes, blen);
    }
    if (setup_record(s, MFD_REC_SETUP_END, "SETUP_END", &body, &len))
        return -1;
    free(body);
    if (len)
        return mfd__fail(s, MFD_EPROTO, "main channel: SETUP_END has a body");

    for (int i = 0; i < s->nblocks; i++) {
        mfd_block *b = &s->blocks[i];
        if (!(b->receivedmap = mfd__bitmap_new(b->pages)))
            return mfd__fail(s, MFD_ENOMEM, "out of memory");
        if (!have && mfd__map_block(s, b))
            return -1;
    }
    if ((s->features & MFD_FEAT_COLO) && mfd__colo_secondary_setup(s))
        return -1;

    uint8_t ready[8];
    mfd__put_be64(ready, s->features);
    if (mfd__send_record(s, MFD_REC_READY, ready, 8) != MFD_IO_OK)
        return mfd__fail(s, MFD_ECLOSED, "main channel: READY: %s",
                         strerror(errno));
    return 0;
}

/* Matches vetted data connections to channel ids and starts their threads. */
static int accept_data(mfd_session *s, vetting *vt, uint32_t n, size_t plen)
{
    uint32_t connected = 0;
    /* The source connects its channels as soon as READY is out. */
    uint64_t deadline = mfd__now_us() + (uint64_t)s->handshake_timeout * 1000;
    char what[160];
    while (connected < n) {
        vt->cap = VET_MAX + (int)(n - connected);
        snprintf(what, sizeof(what),
                 "data channels: %u of %u connected within %" PRId64
                 " ms of READY (handshake-timeout)",
                 connected, n, s->handshake_timeout);
        vet *v = vetted_next(s, vt, s->main_fd, deadline, what);
        if (!v)
            return -1;
        if (vet_refused(s, v, " during channel setup"))
            continue;
        int fd = v->fd;
        uint8_t init[MFD_INIT_LEN];
        memcpy(init, v->first, sizeof(init));
        free(v);
        uint32_t magic = mfd__get_be32(init);
        uint32_t version = mfd__get_be32(init + 4);
        const char *why = NULL;
        if (magic != MFD_DATA_MAGIC)
            why = "not a data channel (bad magic)";
        else if (version != MFD_PROTO_VERSION)
            why = "unsupported data channel version";
        else if (memcmp(init + 8, s->uuid, 16))
            why = "foreign session UUID";
        if (why) {
            mfd__log(s, "closed stray connection during channel setup: %s",
                     why);
            mfd__sock_close(fd);
            continue;
        }
        uint32_t id = init[24];
        if (id >= n) {
            mfd__sock_close(fd);
            return mfd__fail(s, MFD_EPROTO,
                             "data channel init: channel id %u >= channels "
                             "%u",
                             id, n);
        }
        mfd_recv_chan *ch = &s->rc[id];
        if (ch->fd >= 0) {
            mfd__sock_close(fd);
            return mfd__fail(s, MFD_EPROTO,
                             "data channel init: duplicate channel id %u", id);
        }
        ch->packet = malloc(plen);
        /* Entries [0, ppp) build the iovecs, [ppp, 2 ppp) are consumed. */
        ch->iov = calloc(2 * (size_t)s->ppp, sizeof(struct iovec));
        ch->lowat = mfd__sock_lowat_init(fd);
        mfd__set_chan_fd(s, &ch->fd, fd);
        ch->bounce = malloc(MFD_PACKET_BYTES);
        if (!ch->packet || !ch->iov || !ch->bounce)
            return mfd__fail(s, MFD_ENOMEM, "out of memory");
        if (s->mops->recv_setup(ch))
            return -1;
        MFD_STAT_ADD(ch->st.bytes, MFD_INIT_LEN);
        if (pthread_create(&ch->thread, NULL, recv_thread, ch))
            return mfd__fail(s, MFD_ESYS, "pthread_create failed");
        ch->started = true;
        connected++;
    }
    return 0;
}

/* Accepts data channels until all are connected, matching them by id. */
static int accept_channels(mfd_session *s)
{
    uint32_t n = (uint32_t)s->channels;
    size_t plen = mfd__packet_len(s->ppp);
    mfd_recv_chan *chans = calloc(n, sizeof(*chans));
    if (!chans)
        return mfd__fail(s, MFD_ENOMEM, "out of memory");
    for (uint32_t i = 0; i < n; i++) {
        chans[i].s = s;
        chans[i].id = i;
        chans[i].fd = -1;
        chans[i].cached_block = -1;
    }
    /* Published whole, under s->lock, for a failure on another thread. */
    pthread_mutex_lock(&s->lock);
    s->rc = chans;
    s->nchan = n;
    pthread_mutex_unlock(&s->lock);

    vetting vt;
    if (vetting_start(s, &vt))
        return -1;
    int rc = accept_data(s, &vt, n, plen);
    vetting_end(s, &vt,
                rc ? "the session failed" : "every channel was connected");
    return rc;
}


/* ---- main-channel records after setup ---------------------------------- */

static int on_zero_pages(mfd_session *s, const uint8_t *body, uint32_t len)
{
    if (len < 8)
        return mfd__fail(s, MFD_EPROTO, "ZERO_PAGES: body length %u", len);
    uint32_t bi = mfd__get_be32(body), count = mfd__get_be32(body + 4);
    if (count < 1 || count > MFD_LEGACY_ZERO_MAX)
        return mfd__fail(s, MFD_EPROTO, "ZERO_PAGES: count %u outside 1..%u",
                         count, MFD_LEGACY_ZERO_MAX);
    if (len != 8 + 8 * (uint64_t)count)
        return mfd__fail(s, MFD_EPROTO,
                         "ZERO_PAGES: body length %u for %u offsets", len,
                         count);
    if (bi >= (uint32_t)s->nblocks)
        return mfd__fail(s, MFD_EPROTO,
                         "ZERO_PAGES: unknown block index %u (%d blocks)", bi,
                         s->nblocks);
    mfd_block *b = &s->blocks[bi];
    uint32_t ps = (uint32_t)s->page_size;
    for (uint32_t i = 0; i < count; i++) {
        uint64_t off = mfd__get_be64(body + 8 + 8 * (size_t)i);
        if (off % ps)
            return mfd__fail(s, MFD_EPROTO,
                             "ZERO_PAGES: offset 0x%" PRIx64
                             " not aligned to page size %u",
                             off, ps);
        if (off > b->length - ps)
            return mfd__fail(s, MFD_EPROTO,
                             "ZERO_PAGES: offset 0x%" PRIx64
                             " beyond block '%s' (length 0x%" PRIx64 ")",
                             off, b->name, b->length);
    }
    for (uint32_t i = 0; i < count; i++) {
        uint64_t off = mfd__get_be64(body + 8 + 8 * (size_t)i);
        apply_zero_page(b, off, ps);
        if (b->ckpt_map)
            mfd__colo_record(b, off / ps, true);
    }
    MFD_STAT_ADD(s->legacy_zero_pages, count);
    return 0;
}

/* COLO: the primary is lost (PROTOCOL.md 4); the replica gets promoted. */
static int colo_primary_lost(mfd_session *s)
{
    return mfd__fail(s, MFD_ETIMEDOUT,
                     "COLO: primary lost: nothing from it for %" PRId64
                     " ms (heartbeat-timeout)",
                     s->hb_timeout);
}

/*
 * COLO, while the main thread is not reading the main channel: has the
 * primary been silent for the heartbeat timeout? Data on any channel, or
 * bytes piling up unread on the main channel (its heartbeats; *pending
 * holds the count seen last), are signs of life.
 */
static bool colo_primary_silent(mfd_session *s, int *pending)
{
    int n = 0;
    if (ioctl(s->main_fd, FIONREAD, &n) == 0 && n > *pending)
        MFD_STAT_SET(s->last_main_us, mfd__now_us());
    *pending = n;
    uint64_t quiet = MFD_MIN(mfd__us_since(&s->last_main_us),
                             mfd__us_since(&s->last_rx_us));
    return quiet >= (uint64_t)s->hb_timeout * 1000;
}

static int on_iteration_end(mfd_session *s, const uint8_t *body, uint32_t len)
{
    if (len != 8)
        return mfd__fail(s, MFD_EPROTO, "ITERATION_END: body length %u", len);
    uint64_t it = mfd__get_be64(body);
    if (it != s->released_iter + 1)
        return mfd__fail(s, MFD_EPROTO,
                         "ITERATION_END: iteration %" PRIu64
                         ", expected %" PRIu64,
                         it, s->released_iter + 1);
    /* COLO: heartbeats pile up unread meanwhile; they count as life. */
    bool colo = s->features & MFD_FEAT_COLO;
    int main_pending = 0;
    pthread_mutex_lock(&s->sync_lock);
    for (;;) {
        uint32_t behind = 0;
        for (uint32_t i = 0; i < s->nchan; i++)
            behind += s->rc[i].synced < it;
        if (!behind || mfd__failed(s))
            break;
        /* A channel fed a byte at a time must not hold us: idle-timeout. */
        uint64_t since = mfd__us_since(&s->last_rx_us);
        if (colo && colo_primary_silent(s, &main_pending)) {
            pthread_mutex_unlock(&s->sync_lock);
            return colo_primary_lost(s);
        }
        if (s->idle_timeout && since >= (uint64_t)s->idle_timeout * 1000) {
            pthread_mutex_unlock(&s->sync_lock);
            return mfd__fail(s, MFD_ETIMEDOUT,
                             "ITERATION_END %" PRIu64 ": %u channel(s) sent "
                             "no complete packet for %" PRId64
                             " ms (idle-timeout)",
                             it, behind, s->idle_timeout);
        }
        struct timespec ts = mfd__cond_deadline(100000);
        pthread_cond_timedwait(&s->sync_cond, &s->sync_lock, &ts);
    }
    s->released_iter = it;
    pthread_cond_broadcast(&s->sync_cond);
    pthread_mutex_unlock(&s->sync_lock);
    if (mfd__failed(s))
        return -1;
    MFD_STAT_ADD(s->iterations, 1);
    return 0;
}

static int on_digests(mfd_session *s, const uint8_t *body, uint32_t len)
{
    if (!(s->features & MFD_FEAT_VERIFY))
        return mfd__fail(s, MFD_EPROTO,
                         "DIGESTS received but feature VERIFY was not "
                         "negotiated");
    if (len != 8 * (uint32_t)s->nblocks)
        return mfd__fail(s, MFD_EPROTO, "DIGESTS: body length %u for %d blocks",
                         len, s->nblocks);
    /* Every pass is applied; reading never-placed pages must not SIGBUS. */
    mfd__placement_done(s);
    for (int i = 0; i < s->nblocks; i++) {
        uint64_t want = mfd__get_be64(body + 8 * i), got;
        /*
         * Memory the library mapped (fresh, or a new file) is zero where no
         * data was ever placed, and is hashed so, unread: reading it would
         * fault it all in. The caller's memory is read whole: it is meant
         * to be zero-filled, and this checks it.
         */
        got = mfd__block_digest(s, i, true);
        if (want != got)
            return mfd__fail(s, MFD_EVERIFY,
                             "block '%s': digest mismatch (source %016" PRIx64
                             ", destination %016" PRIx64 ")",
                             s->blocks[i].name, want, got);
    }
    s->digests_ok = true;
    return 0;
}

static int on_complete(mfd_session *s, const uint8_t *body, uint32_t len)
{
    if (len != 24)
        return mfd__fail(s, MFD_EPROTO, "COMPLETE: body length %u", len);
    if ((s->features & MFD_FEAT_VERIFY) && !s->digests_ok)
        return mfd__fail(s, MFD_EPROTO,
                         "COMPLETE before DIGESTS with feature VERIFY");
    if (!s->released_iter)
        return mfd__fail(s, MFD_EPROTO, "COMPLETE before any ITERATION_END");
    /* The memory a COLO session ends with is the replica: never empty. */
    if ((s->features & MFD_FEAT_COLO) &&
        MFD_STAT_GET(s->colo_state) != MFD_COLO_PROTECTED)
        return mfd__fail(s, MFD_EPROTO,
                         "COLO: COMPLETE before checkpoint 0 was committed "
                         "(PROTOCOL.md 4: the migrated state is checkpoint 0)");
    mfd_stats *st = malloc(sizeof(*st));
    if (!st)
        return mfd__fail(s, MFD_ENOMEM, "out of memory");
    mfd_get_stats(s, st);
    uint64_t n = mfd__get_be64(body), z = mfd__get_be64(body + 8),
             p = mfd__get_be64(body + 16);
    int rc = 0;
    if (n != st->normal_pages || z != st->zero_pages || p != st->data_packets)
        rc = mfd__fail(s, MFD_EVERIFY,
                       "COMPLETE mismatch: source sent %" PRIu64
                       " normal, %" PRIu64 " zero pages in %" PRIu64
                       " packets; received %" PRIu64 ", %" PRIu64
                       " in %" PRIu64,
                       n, z, p, st->normal_pages, st->zero_pages,
                       st->data_packets);
    free(st);
    return rc;
}

static int on_device_state(mfd_session *s, const uint8_t *body, uint32_t len)
{
    if (len < 4)
        return mfd__fail(s, MFD_EPROTO, "DEVICE_STATE: body length %u", len);
    uint32_t chunk = len - 4;
    if (s->device_state_len + chunk > MFD_DEVICE_STATE_MAX)
        return mfd__fail(s, MFD_EREFUSED,
                         "DEVICE_STATE: more than 256 MiB of device state");
    if (chunk) {
        uint8_t *p = realloc(s->device_state, s->device_state_len + chunk);
        if (!p)
            return mfd__fail(s, MFD_ENOMEM, "out of memory");
        memcpy(p + s->device_state_len, body + 4, chunk);
        s->device_state = p;
        s->device_state_len += chunk;
    }
    if (mfd__get_be32(body) & 1)
        s->device_state_done = true;
    return 0;
}

/*
 * DIGESTS and COMPLETE speak for everything applied: every channel must be
 * at the last released SYNC with nothing read after it. (A packet that
 * arrives after this check is a source's protocol violation; it can only
 * race with the end of the session, whose result is then not trusted by
 * the source either.)
 */
static int channels_parked(mfd_session *s, const char *what)
{
    int bad = -1;
    pthread_mutex_lock(&s->sync_lock);
    for (uint32_t i = 0; i < s->nchan && bad < 0; i++) {
        mfd_recv_chan *ch = &s->rc[i];
        if (ch->synced != s->released_iter ||
            __atomic_load_n(&ch->since_sync, __ATOMIC_RELAXED))
            bad = (int)i;
    }
    pthread_mutex_unlock(&s->sync_lock);
    /* Failing wakes the sync_cond waiters: never with sync_lock held. */
    if (bad >= 0)
        return mfd__fail(s, MFD_EPROTO,
                         "main channel: %s while channel %d still has data "
                         "after its last SYNC",
                         what, bad);
    return 0;
}

/* Handles one record; returns 1 when the migration is complete. */
static int on_record(mfd_session *s, uint32_t type, const uint8_t *body,
                     uint32_t len)
{
    /*
     * The order of PROTOCOL.md 1.5: passes (ZERO_PAGES, ITERATION_END), then
     * DEVICE_STATE up to its last chunk, then DIGESTS, then COMPLETE.
     */
    bool pass_record = type == MFD_REC_ZERO_PAGES ||
                       type == MFD_REC_ITERATION_END ||
                       type == MFD_REC_DEVICE_STATE;
    bool end_record = type == MFD_REC_DIGESTS || type == MFD_REC_COMPLETE ||
                      type == MFD_REC_CHECKPOINT_END;
    if (s->colo_in_ckpt && type == MFD_REC_COMPLETE)
        return mfd__fail(s, MFD_EPROTO,
                         "main channel: COMPLETE inside checkpoint %" PRIu64,
                         s->colo_next_id);
    if (pass_record && s->device_state_done)
        return mfd__fail(s, MFD_EPROTO,
                         "main channel: record type 0x%x after the last "
                         "DEVICE_STATE chunk",
                         type);
    const char *end_name = type == MFD_REC_DIGESTS    ? "DIGESTS"
                           : type == MFD_REC_COMPLETE ? "COMPLETE"
                                                      : "CHECKPOINT_END";
    if (end_record && !s->device_state_done)
        return mfd__fail(s, MFD_EPROTO,
                         "main channel: %s before the last DEVICE_STATE chunk",
                         end_name);
    if (end_record && channels_parked(s, end_name))
        return -1;
    switch (type) {
    case MFD_REC_ZERO_PAGES:
        return on_zero_pages(s, body, len);
    case MFD_REC_ITERATION_END:
        return on_iteration_end(s, body, len);
    case MFD_REC_DEVICE_STATE:
        return on_device_state(s, body, len);
    case MFD_REC_DIGESTS:
        return on_digests(s, body, len);
    case MFD_REC_COMPLETE:
        return on_complete(s, body, len) ? -1 : 1;
    case MFD_REC_CHECKPOINT_BEGIN:
        return mfd__colo_begin(s, body, len);
    case MFD_REC_CHECKPOINT_END:
        return mfd__colo_end(s, body, len);
    case MFD_REC_CANCEL: {
        char text[MFD_MSG_MAX + 1];
        return mfd__fail_peer(s, MFD_ECANCELED,
                              "source cancelled the migration: %s",
                              mfd__peer_text(text, body, len));
    }
    case MFD_REC_ERROR: {
        char text[MFD_MSG_MAX + 1];
        return mfd__fail_peer(s, MFD_EPEER, "source reported: %s",
                              len >= 4 ? mfd__peer_text(text, body + 4, len - 4)
                                       : "");
    }
    default:
        if (type & MFD_REC_OPTIONAL)
            return 0;
        return mfd__fail(s, MFD_EPROTO,
                         "main channel: unknown or unexpected record type "
                         "0x%x",
                         type);
    }
}

static int main_loop(mfd_session *s)
{
    char err[300];
    struct pollfd p[3] = {
        {.fd = s->main_fd, .events = POLLIN},
        {.fd = s->listen_fd, .events = POLLIN},
        {.fd = s->wake_fd, .events = POLLIN},
    };
    /* COLO: the primary's heartbeats keep the main channel busy. */
    bool colo = s->features & MFD_FEAT_COLO;
    uint64_t idle_us = (uint64_t)s->idle_timeout * 1000;
    MFD_STAT_SET(s->last_rx_us, mfd__now_us());
    MFD_STAT_SET(s->last_main_us, mfd__now_us());
    for (;;) {
        /* Wake for the idle check too: channels count as activity. */
        int tmo = colo ? (int)s->hb_timeout : -1;
        if (idle_us) {
            uint64_t since = mfd__us_since(&s->last_rx_us);
            int left = since >= idle_us ? 0 : (int)((idle_us - since) / 1000) + 1;
            if (!since || since < idle_us)
                tmo = tmo < 0 || left < tmo ? left : tmo;
            else
                return mfd__fail(s, MFD_ETIMEDOUT,
                                 "no complete record or packet from the "
                                 "source for %" PRId64
                                 " ms (idle-timeout): it stalled",
                                 s->idle_timeout);
        }
        /*
         * A peer that puts several of our records into one TLS record
         * (ours never do) leaves them decrypted in the session, where
         * plain poll would not see them until the idle timeout.
         */
        int rc = mfd__poll_readable(p, 3, tmo);
        if (rc < 0 && errno == EINTR)
            continue;
        if (rc < 0)
            return mfd__fail(s, MFD_ESYS, "poll: %s", strerror(errno));
        /*
         * Whatever woke us (a stray connecting every so often too), a
         * main channel with nothing to read for heartbeat-timeout is a
         * lost primary.
         */
        if (colo && !p[0].revents &&
            mfd__us_since(&s->last_main_us) >=
                (uint64_t)s->hb_timeout * 1000)
            return colo_primary_lost(s);
        if (rc == 0)
            continue;
        if (mfd__failed(s))
            return -1;
        if (p[1].revents & POLLIN) {
            int fd = accept_one(s);
            if (fd == -1)
                return -1;
            if (fd >= 0) {
                mfd__log(s, "closed stray connection: all %u channels are "
                            "already set up",
                         s->nchan);
                mfd__sock_close(fd);
            }
        }
        if (!p[0].revents)
            continue;
        uint32_t type, len;
        uint8_t *body;
        /* A record must arrive whole within idle-timeout (COLO: within
         * heartbeat-timeout, if that is shorter). */
        int rec_tmo = idle_us ? (int)s->idle_timeout : -1;
        bool hb_first = colo && (rec_tmo < 0 || s->hb_timeout < rec_tmo);
        if (hb_first)
            rec_tmo = (int)s->hb_timeout;
        rc = mfd__recv_record(s, rec_tmo, &type, &body, &len, err,
                              sizeof(err));
        if (rc == MFD_IO_TIMEOUT && hb_first)
            return colo_primary_lost(s);
        if (rc == MFD_IO_TIMEOUT)
            return mfd__fail(s, MFD_ETIMEDOUT,
                             "main channel: a record did not arrive whole "
                             "within %" PRId64 " ms (idle-timeout)",
                             s->idle_timeout);
        if (rc < 0 && rc != MFD_IO_ERROR && rc != MFD_IO_TIMEOUT)
            return mfd__fail(s, -rc, "%s", err);
        if (rc != MFD_IO_OK)
            return mfd__fail(s, MFD_ECLOSED, "main channel: %s%s",
                             rc == MFD_IO_TRUNCATED ? "truncated record: "
                                                    : "",
                             mfd__io_strerror(rc));
        uint64_t now = mfd__now_us();
        MFD_STAT_SET(s->last_rx_us, now);
        MFD_STAT_SET(s->last_main_us, now);
        rc = on_record(s, type, body, len);
        free(body);
        if (rc)
            return rc < 0 ? -1 : 0;
    }
}

/*
 * A failure seen as a closed channel may have its reason still in flight:
 * the source's CANCEL or ERROR record. Read the main channel for a moment
 * to report that reason instead of the symptom: as long as the source may
 * take to send it (it shuts its data channels down at once, and sends the
 * record once its migration thread has unwound, which on two loaded cores
 * took more than the half second this waited before). A source that is
 * gone closes the main channel too, which ends the wait at once.
 */
static void drain_reason(mfd_session *s)
{
    uint64_t deadline = mfd__now_us() + 2000000;
    char err[300];
    while (mfd__error_code(s) == MFD_ECLOSED && s->main_fd >= 0) {
        uint64_t now = mfd__now_us();
        if (now >= deadline)
            return;
        uint32_t type, len;
        uint8_t *body;
        int rc = mfd__recv_record_ex(s, false, (int)((deadline - now) / 1000),
                                     &type, &body, &len, err, sizeof(err));
        if (rc != MFD_IO_OK)
            return;
        if (type == MFD_REC_CANCEL || type == MFD_REC_ERROR)
            on_record(s, type, body, len);
        free(body);
    }
}

/*
 * After an ERROR, closing a socket that still holds unread bytes from the
 * source would reset the connection, and a TCP reset can destroy the
 * ERROR record before the source reads it. So: end our direction, then
 * read and drop what the source still sends until it closes (it does once
 * it has read the ERROR), for half a second at most.
 */
static void linger_close(mfd_session *s)
{
    if (s->main_fd < 0)
        return;
    shutdown(s->main_fd, SHUT_WR);
    uint64_t deadline = mfd__now_us() + 500000;
    char buf[4096];
    for (;;) {
        uint64_t now = mfd__now_us();
        struct pollfd p = {.fd = s->main_fd, .events = POLLIN};
        if (now >= deadline || poll(&p, 1, (int)((deadline - now) / 1000)) <= 0)
            return;
        if (read(s->main_fd, buf, sizeof(buf)) <= 0)
            return;
    }
}

/* Joins the recv channel threads and frees their buffers. */
void mfd__recv_release(mfd_session *s)
{
    for (uint32_t i = 0; s->rc && i < s->nchan; i++) {
        mfd_recv_chan *ch = &s->rc[i];
        if (ch->started) {
            pthread_join(ch->thread, NULL);
            ch->started = false;
        }
        mfd__close_chan_fd(s, &ch->fd);
        if (s->mops)
            s->mops->recv_cleanup(ch);
        free(ch->packet);
        free(ch->iov);
        free(ch->bounce);
        ch->packet = NULL;
        ch->iov = NULL;
        ch->bounce = NULL;
    }
}

int mfd__incoming(mfd_session *s)
{
    int rc = mfd__failed(s) ? -1 : accept_main(s);
    if (!rc)
        rc = read_setup(s);
    if (!rc && (s->features & MFD_FEAT_COLO))
        rc = mfd__colo_hb_start(s);
    if (!rc)
        rc = accept_channels(s);
    if (!rc) {
        MFD_STAT_SET(s->t_setup, mfd__now_us());
        __atomic_store_n(&s->status, 2, __ATOMIC_RELAXED);
        rc = main_loop(s);
    }
    /*
     * Park the channel threads before DONE goes out: the source closes the
     * data channels when it reads DONE, and that EOF is not an error.
     */
    pthread_mutex_lock(&s->sync_lock);
    __atomic_store_n(&s->quit, true, __ATOMIC_RELEASE);
    pthread_cond_broadcast(&s->sync_cond);
    pthread_mutex_unlock(&s->sync_lock);
    if (!rc && !mfd__failed(s)) {
        if (mfd__send_record(s, MFD_REC_DONE, NULL, 0) != MFD_IO_OK)
            rc = mfd__fail(s, MFD_ECLOSED, "main channel: DONE: %s",
                           strerror(errno));
    }
    for (uint32_t i = 0; s->rc && i < s->nchan; i++)
        if (s->rc[i].fd >= 0)
            shutdown(s->rc[i].fd, SHUT_RDWR);
    mfd__colo_hb_stop(s);

    if ((rc || mfd__failed(s)) && mfd__colo_can_promote(s)) {
        /* The primary is lost: the replica (last commit) is the embedder's. */
        if (s->main_fd >= 0)
            shutdown(s->main_fd, SHUT_RDWR);
        mfd__session_release_runtime(s);
        mfd__placement_done(s);
        mfd__colo_finish(s, MFD_COLO_PROMOTED);
        mfd__log(s, "COLO: primary lost (%s): replica of checkpoint %" PRIu64
                    " promoted",
                 mfd_last_error(s), MFD_STAT_GET(s->colo_last_id));
        MFD_STAT_SET(s->t_end, mfd__now_us());
        __atomic_store_n(&s->status, 3, __ATOMIC_RELAXED);
        if (s->colo_ops.promoted)
            s->colo_ops.promoted(s->colo_opaque, MFD_STAT_GET(s->colo_last_id),
                                 mfd_last_error(s));
        return 0;
    }
    if (rc || mfd__failed(s)) {
        drain_reason(s);
        mfd__send_error_record(s);
        linger_close(s);
        mfd__session_release_runtime(s);
        mfd__placement_done(s);
        MFD_STAT_SET(s->t_end, mfd__now_us());
        return -mfd__error_code(s);
    }
    MFD_STAT_SET(s->t_end, mfd__now_us());
    __atomic_store_n(&s->status, 3, __ATOMIC_RELAXED);
    mfd__session_release_runtime(s);
    mfd__placement_done(s);
    if (s->features & MFD_FEAT_COLO)
        mfd__colo_finish(s, MFD_COLO_STOPPED);
    return 0;
}
