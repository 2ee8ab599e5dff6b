/*
 * method.c - the methods' registry, the raw method (none), and what the
 * compressing methods share.
 */
#include "method/method.h"

#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>

#include "common/util.h"
#include "core/session.h"
#include "transport/transport.h"

/* Indexed by MFD_COMPRESSION_* (the public parameter's values). */
static const mfd_method_ops *const all[] = {
    &mfd__method_none, &mfd__method_zlib, &mfd__method_zstd,
    &mfd__method_lz4};

int mfd__method_index(uint32_t wire)
{
    for (size_t i = 0; i < MFD_ARRAY_SIZE(all); i++)
        if (all[i]->wire == wire)
            return (int)i;
    return -1;
}

const mfd_method_ops *mfd__method_find(uint32_t wire)
{
    int i = mfd__method_index(wire);
    return i < 0 ? NULL : all[i];
}

const mfd_method_ops *mfd__method_of(int compression)
{
    return all[compression];
}

const char *mfd__method_name(uint32_t wire)
{
    switch (wire) {
    case MFD_METHOD_NONE: return "none";
    case MFD_METHOD_ZLIB: return "zlib";
    case MFD_METHOD_ZSTD: return "zstd";
    case MFD_METHOD_LZ4: return "lz4";
    default: return "unknown";
    }
}

/* ---- none: raw pages, written and read in place ------------------------ */

static uint64_t none_bound(uint32_t pages, uint32_t ps)
{
    return (uint64_t)pages * ps;
}

static int none_send_setup(mfd_send_chan *ch)
{
    (void)ch;
    return 0;
}

static void none_send_cleanup(mfd_send_chan *ch)
{
    (void)ch;
}

/* The payload iovecs point into the block, adjacent pages merged. */
static int none_send_prepare(mfd_send_chan *ch, uint8_t *host,
                             const uint64_t *off, uint32_t normal,
                             uint32_t *len)
{
    uint32_t ps = (uint32_t)ch->s->page_size;
    struct iovec *iov = ch->iov + 1;
    int n = 0;
    for (uint32_t i = 0; i < normal; i++) {
        uint8_t *p = host + off[i];
        if (n && (uint8_t *)iov[n - 1].iov_base + iov[n - 1].iov_len == p) {
            iov[n - 1].iov_len += ps;
        } else {
            iov[n].iov_base = p;
            iov[n].iov_len = ps;
            n++;
        }
    }
    *len = normal * ps;
    return n;
}

static int none_recv_setup(mfd_recv_chan *ch)
{
    (void)ch;
    return 0;
}

static void none_recv_cleanup(mfd_recv_chan *ch)
{
    (void)ch;
}

static int read_failed(mfd_recv_chan *ch, uint64_t num, int rc)
{
    mfd_session *s = ch->s;
    if (__atomic_load_n(&s->quit, __ATOMIC_ACQUIRE) || mfd__failed(s))
        return 1;
    return mfd__fail(s, MFD_ECLOSED,
                     "channel %u: packet %" PRIu64 ": truncated payload: %s",
                     ch->id, num,
                     rc == MFD_IO_ERROR ? strerror(errno)
                                        : "connection closed by peer");
}

/*
 * Memory that is already there (READV placement) takes the pages straight
 * from the socket; the others go through the channel's buffer.
 */
static int none_recv(mfd_recv_chan *ch, mfd_block *b, const mfd_packet_hdr *h,
                     uint64_t num, int *nsent, bool *buffered)
{
    mfd_session *s = ch->s;
    uint32_t ps = (uint32_t)s->page_size;
    int rc, n = 0;
    *buffered = b->place != MFD_PLACE_READV;
    if (*buffered) {
        rc = mfd__read_full_lowat(ch->fd, &ch->lowat, ch->bounce,
                                  h->next_size);
        ch->iov[0] = (struct iovec){ch->bounce, h->next_size};
        n = 1;
    } else {
        const uint8_t *offs = ch->packet + MFD_PKT_OFFSETS;
        for (uint32_t i = 0; i < h->normal; i++) {
            uint8_t *p = b->host + mfd__get_be64(offs + 8 * (size_t)i);
            if (n && (uint8_t *)ch->iov[n - 1].iov_base +
                             ch->iov[n - 1].iov_len == p)
                ch->iov[n - 1].iov_len += ps;
            else
                ch->iov[n++] = (struct iovec){p, ps};
        }
        /* readv consumes the array; keep the bases for the CRC. */
        struct iovec *work = ch->iov + s->ppp;
        memcpy(work, ch->iov, sizeof(*work) * (size_t)n);
        rc = mfd__readv_full_lowat(ch->fd, &ch->lowat, work, n);
    }
    *nsent = n;
    return rc == MFD_IO_OK ? 0 : read_failed(ch, num, rc);
}

const mfd_method_ops mfd__method_none = {
    .name = "none",
    .wire = MFD_METHOD_NONE,
    .bound = none_bound,
    .send_setup = none_send_setup,
    .send_cleanup = none_send_cleanup,
    .send_prepare = none_send_prepare,
    .recv_setup = none_recv_setup,
    .recv_cleanup = none_recv_cleanup,
    .recv = none_recv,
};

/* ---- shared by the compressing methods --------------------------------- */

/* c * log2(c) for the byte counts of a 1024-byte sample. */
#define SAMPLE 1024
static float clog2c[SAMPLE + 1];
static pthread_once_t clog2c_once = PTHREAD_ONCE_INIT;

static void clog2c_init(void)
{
    for (int c = 1; c <= SAMPLE; c++)
        clog2c[c] = (float)(c * log2((double)c));
}

/* See method.h. Above 7.2 bits per byte neither deflate nor LZ4 gains. */
bool mfd__page_incompressible(const uint8_t *p, uint32_t ps)
{
    pthread_once(&clog2c_once, clog2c_init);
    uint16_t h[256] = {0};
    uint32_t step = ps / SAMPLE;
    for (uint32_t i = 0; i < SAMPLE; i++)
        h[p[i * step]]++;
    float sum = 0;
    for (int i = 0; i < 256; i++)
        sum += clog2c[h[i]];
    return 10.0f - sum / SAMPLE > 7.2f; /* log2(SAMPLE) = 10 */
}

int mfd__method_sent_buf(mfd_send_chan *ch, uint32_t normal, int64_t len,
                         uint64_t t0, uint32_t *out_len)
{
    uint32_t ps = (uint32_t)ch->s->page_size;
    MFD_STAT_ADD(ch->st.compress_us, mfd__now_us() - t0);
    if (len < 0)
        return -1;
    MFD_STAT_ADD(ch->st.raw_bytes, (uint64_t)normal * ps);
    MFD_STAT_ADD(ch->st.compressed_bytes, (uint64_t)len);
    *out_len = (uint32_t)len;
    if (!len)
        return 0;
    ch->iov[1] = (struct iovec){ch->m.buf, (size_t)len};
    return 1;
}

int mfd__method_recv_buf(mfd_recv_chan *ch, mfd_block *b,
                         const mfd_packet_hdr *h, uint64_t num, int *nsent,
                         bool *buffered)
{
    (void)b;
    int rc = mfd__read_full_lowat(ch->fd, &ch->lowat, ch->m.buf,
                                  h->next_size);
    if (rc != MFD_IO_OK)
        return read_failed(ch, num, rc);
    ch->iov[0] = (struct iovec){ch->m.buf, h->next_size};
    *nsent = 1;
    *buffered = true;
    return 0;
}
