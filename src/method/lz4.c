/*
 * lz4.c - method lz4 (PROTOCOL.md 2.3, a multifd extension): each normal
 * page is one LZ4 block behind a u32 big-endian length c; c == page size
 * means the page is stored raw (it did not shrink). Pages are independent,
 * so there is no stream to keep, and a page is compressed straight from
 * the block (the output stays decodable if the guest writes meanwhile; the
 * page is then dirty and sent again).
 */
#include <inttypes.h>
#include <lz4.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/util.h"
#include "core/session.h"
#include "method/method.h"

static uint64_t lz4_bound(uint32_t pages, uint32_t ps)
{
    return (uint64_t)pages * (4 + ps);
}

static int lz4_send_setup(mfd_send_chan *ch)
{
    mfd_session *s = ch->s;
    ch->m.buf_len = lz4_bound(s->ppp, (uint32_t)s->page_size);
    ch->m.buf = malloc(ch->m.buf_len);
    /* Initialized once; each page then starts a fresh stream cheaply. */
    ch->m.state = LZ4_createStream();
    ch->m.level = (int)s->lz4_accel;
    if (!ch->m.buf || !ch->m.state)
        return mfd__fail(s, MFD_ENOMEM, "channel %u: lz4: out of memory",
                         ch->id);
    return 0;
}

static void lz4_send_cleanup(mfd_send_chan *ch)
{
    free(ch->m.buf);
    LZ4_freeStream(ch->m.state);
    ch->m.buf = NULL;
    ch->m.state = NULL;
}

static int lz4_send_prepare(mfd_send_chan *ch, uint8_t *host,
                            const uint64_t *off, uint32_t normal,
                            uint32_t *len)
{
    uint32_t ps = (uint32_t)ch->s->page_size;
    uint64_t t0 = mfd__now_us();
    uint8_t *o = ch->m.buf;
    for (uint32_t i = 0; i < normal; i++) {
        const char *page = (const char *)host + off[i];
        /*
         * Pages are independent: a fast reset (not the 16 KiB memset of
         * LZ4_compress_fast_extState, 4x the page) drops the history.
         * Pages that look random, or do not shrink, are stored raw.
         */
        int c = 0;
        if (!mfd__page_incompressible((const uint8_t *)page, ps)) {
            LZ4_resetStream_fast(ch->m.state);
            c = LZ4_compress_fast_continue(ch->m.state, page, (char *)o + 4,
                                           (int)ps, (int)ps - 1, ch->m.level);
        }
        if (c <= 0) {
            memcpy(o + 4, page, ps);
            c = (int)ps;
        }
        mfd__put_be32(o, (uint32_t)c);
        o += 4 + (uint32_t)c;
    }
    return mfd__method_sent_buf(ch, normal, (int64_t)(o - ch->m.buf), t0, len);
}

static int lz4_recv_setup(mfd_recv_chan *ch)
{
    mfd_session *s = ch->s;
    ch->m.buf_len = lz4_bound(s->ppp, (uint32_t)s->page_size);
    ch->m.buf = malloc(ch->m.buf_len);
    ch->m.page_size = (uint32_t)s->page_size;
    if (!ch->m.buf)
        return mfd__fail(s, MFD_ENOMEM, "channel %u: lz4: out of memory",
                         ch->id);
    return 0;
}

static void lz4_recv_cleanup(mfd_recv_chan *ch)
{
    free(ch->m.buf);
    ch->m.buf = NULL;
}

static int lz4_decode(mfd_method_chan *m, const uint8_t *src, uint32_t len,
                      uint8_t *dst, uint64_t out_len, char *err, size_t errlen)
{
    uint32_t ps = m->page_size;
    uint64_t pos = 0, pages = out_len / ps;
    for (uint64_t i = 0; i < pages; i++) {
        if (len - pos < 4) {
            snprintf(err, errlen,
                     "page %" PRIu64 " of %" PRIu64 ": the payload ends "
                     "before its length field",
                     i, pages);
            return -1;
        }
        uint32_t c = mfd__get_be32(src + pos);
        pos += 4;
        if (c == 0 || c > ps || c > len - pos) {
            snprintf(err, errlen,
                     "page %" PRIu64 ": length %u outside 1..%u or past the "
                     "payload's end (%" PRIu64 " bytes left)",
                     i, c, ps, len - pos);
            return -1;
        }
        char *out = (char *)dst + i * ps;
        if (c == ps) {
            memcpy(out, src + pos, ps);
        } else {
            int n = LZ4_decompress_safe((const char *)src + pos, out, (int)c,
                                        (int)ps);
            if (n != (int)ps) {
                snprintf(err, errlen,
                         "page %" PRIu64 ": LZ4 block of %u bytes %s", i, c,
                         n < 0 ? "is corrupt" : "does not decode to a page");
                return -1;
            }
        }
        pos += c;
    }
    if (pos != len) {
        snprintf(err, errlen,
                 "%" PRIu64 " bytes left over after %" PRIu64 " pages",
                 len - pos, pages);
        return -1;
    }
    return 0;
}

const mfd_method_ops mfd__method_lz4 = {
    .name = "lz4",
    .wire = MFD_METHOD_LZ4,
    .bound = lz4_bound,
    .send_setup = lz4_send_setup,
    .send_cleanup = lz4_send_cleanup,
    .send_prepare = lz4_send_prepare,
    .recv_setup = lz4_recv_setup,
    .recv_cleanup = lz4_recv_cleanup,
    .recv = mfd__method_recv_buf,
    .decode = lz4_decode,
};
