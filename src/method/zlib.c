/*
 * zlib.c - method zlib (PROTOCOL.md 2.3): one deflate stream (zlib wrapper)
 * per channel for the whole migration; a packet's pages are deflated in
 * order and the packet ends with a sync flush, so its payload inflates on
 * its own given the stream's history. Each page is copied before it is
 * deflated: deflate reads its input more than once, and the guest may
 * change the page meanwhile.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <zlib.h>

#include "common/util.h"
#include "core/session.h"
#include "method/method.h"

/* zlib's bound, plus the stream header and one sync flush marker. */
static uint64_t zlib_bound(uint32_t pages, uint32_t ps)
{
    return compressBound((uLong)pages * ps) + 64;
}

static int zlib_send_setup(mfd_send_chan *ch)
{
    mfd_session *s = ch->s;
    z_stream *z = calloc(1, sizeof(*z));
    ch->m.state = z;
    ch->m.buf_len = zlib_bound(s->ppp, (uint32_t)s->page_size);
    ch->m.buf = malloc(ch->m.buf_len);
    ch->m.page = malloc((size_t)s->page_size);
    if (!z || !ch->m.buf || !ch->m.page)
        return mfd__fail(s, MFD_ENOMEM, "channel %u: zlib: out of memory",
                         ch->id);
    int rc = deflateInit(z, (int)s->zlib_level);
    if (rc != Z_OK) {
        free(z);
        ch->m.state = NULL;
        return mfd__fail(s, MFD_ESYS, "channel %u: zlib: deflateInit: %d",
                         ch->id, rc);
    }
    return 0;
}

static void zlib_send_cleanup(mfd_send_chan *ch)
{
    if (ch->m.state)
        deflateEnd(ch->m.state);
    free(ch->m.state);
    free(ch->m.buf);
    free(ch->m.page);
    ch->m.state = NULL;
    ch->m.buf = ch->m.page = NULL;
}

static int zlib_send_prepare(mfd_send_chan *ch, uint8_t *host,
                             const uint64_t *off, uint32_t normal,
                             uint32_t *len)
{
    mfd_session *s = ch->s;
    uint32_t ps = (uint32_t)s->page_size;
    z_stream *z = ch->m.state;
    uint64_t t0 = mfd__now_us();
    z->next_out = ch->m.buf;
    z->avail_out = (uInt)ch->m.buf_len;
    int64_t rc = 0;
    for (uint32_t i = 0; i < normal; i++) {
        memcpy(ch->m.page, host + off[i], ps);
        z->next_in = ch->m.page;
        z->avail_in = ps;
        int flush = i + 1 < normal ? Z_NO_FLUSH : Z_SYNC_FLUSH;
        int r = deflate(z, flush);
        /* All input taken and, at the flush, all output out. */
        if ((r != Z_OK && r != Z_BUF_ERROR) || z->avail_in ||
            (flush == Z_SYNC_FLUSH && !z->avail_out)) {
            rc = mfd__fail(s, MFD_ESYS,
                           "channel %u: zlib: deflate %d (output %s)", ch->id,
                           r, z->avail_out ? "ok" : "exceeds its bound");
            break;
        }
    }
    int64_t n = rc < 0 ? -1 : (int64_t)(ch->m.buf_len - z->avail_out);
    return mfd__method_sent_buf(ch, normal, n, t0, len);
}

static int zlib_recv_setup(mfd_recv_chan *ch)
{
    mfd_session *s = ch->s;
    z_stream *z = calloc(1, sizeof(*z));
    ch->m.state = z;
    ch->m.buf_len = zlib_bound(s->ppp, (uint32_t)s->page_size);
    ch->m.buf = malloc(ch->m.buf_len);
    if (!z || !ch->m.buf)
        return mfd__fail(s, MFD_ENOMEM, "channel %u: zlib: out of memory",
                         ch->id);
    if (inflateInit(z) != Z_OK) {
        free(z);
        ch->m.state = NULL;
        return mfd__fail(s, MFD_ESYS, "channel %u: zlib: inflateInit failed",
                         ch->id);
    }
    return 0;
}

static void zlib_recv_cleanup(mfd_recv_chan *ch)
{
    if (ch->m.state)
        inflateEnd(ch->m.state);
    free(ch->m.state);
    free(ch->m.buf);
    ch->m.state = NULL;
    ch->m.buf = NULL;
}

static int zlib_decode(mfd_method_chan *m, const uint8_t *src, uint32_t len,
                       uint8_t *dst, uint64_t out_len, char *err,
                       size_t errlen)
{
    z_stream *z = m->state;
    uint8_t spare;
    z->next_in = (Bytef *)src;
    z->avail_in = len;
    z->next_out = dst;
    z->avail_out = (uInt)out_len;
    for (;;) {
        uInt in0 = z->avail_in, out0 = z->avail_out;
        bool full = !z->avail_out;
        if (full) {
            if (!z->avail_in)
                break;
            /* Full: what is left may only be the sync flush marker. */
            z->next_out = &spare;
            z->avail_out = 1;
        }
        int r = inflate(z, Z_SYNC_FLUSH);
        if (full && !z->avail_out) {
            snprintf(err, errlen,
                     "inflates to more than %llu bytes (normal pages x page "
                     "size)",
                     (unsigned long long)out_len);
            return -1;
        }
        if (full)
            z->avail_out = 0;
        if (r == Z_STREAM_END) {
            snprintf(err, errlen, "the zlib stream ended (a channel's "
                                  "stream lasts the whole migration)");
            return -1;
        }
        if (r != Z_OK && r != Z_BUF_ERROR) {
            snprintf(err, errlen, "inflate: %s",
                     z->msg ? z->msg : "error");
            return -1;
        }
        if (z->avail_in == in0 && (full || z->avail_out == out0))
            break;
    }
    /*
     * A packet ends byte-aligned at a block boundary (after its sync flush
     * or a stored block): inflate then waits for a block header with no
     * bits left over (data_type 128). Anything else is a cut payload.
     */
    if (!z->avail_in && !z->avail_out && z->data_type != 128) {
        snprintf(err, errlen, "ends inside a block (the packet must end with "
                              "a sync flush)");
        return -1;
    }
    if (z->avail_in || z->avail_out) {
        snprintf(err, errlen,
                 "inflates to %llu bytes, expected %llu (normal pages x page "
                 "size)%s",
                 (unsigned long long)(out_len - z->avail_out),
                 (unsigned long long)out_len,
                 z->avail_in ? " with input left over" : "");
        return -1;
    }
    return 0;
}

const mfd_method_ops mfd__method_zlib = {
    .name = "zlib",
    .wire = MFD_METHOD_ZLIB,
    .bound = zlib_bound,
    .send_setup = zlib_send_setup,
    .send_cleanup = zlib_send_cleanup,
    .send_prepare = zlib_send_prepare,
    .recv_setup = zlib_recv_setup,
    .recv_cleanup = zlib_recv_cleanup,
    .recv = mfd__method_recv_buf,
    .decode = zlib_decode,
};
