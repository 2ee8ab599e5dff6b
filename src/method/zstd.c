/*
 * zstd.c - method zstd (PROTOCOL.md 2.3): one zstd stream per channel for
 * the whole migration; a packet's pages are fed in order and the packet
 * ends with a flush, so its payload decodes on its own given the stream's
 * history. zstd buffers its input, so pages are read straight from the
 * blocks even while the guest writes them (a page changed meanwhile is
 * dirty and is sent again).
 */
#include <stdio.h>
#include <stdlib.h>
#include <zstd.h>
#include <zstd_errors.h>

#include "common/util.h"
#include "core/session.h"
#include "method/method.h"

/* Flushes and block headers on top of zstd's own bound. */
static uint64_t zstd_bound(uint32_t pages, uint32_t ps)
{
    return ZSTD_compressBound((size_t)pages * ps) + 64;
}

static int zstd_send_setup(mfd_send_chan *ch)
{
    mfd_session *s = ch->s;
    ZSTD_CCtx *c = ZSTD_createCCtx();
    ch->m.buf_len = zstd_bound(s->ppp, (uint32_t)s->page_size);
    ch->m.buf = malloc(ch->m.buf_len);
    ch->m.state = c;
    if (!c || !ch->m.buf)
        return mfd__fail(s, MFD_ENOMEM, "channel %u: zstd: out of memory",
                         ch->id);
    size_t r = ZSTD_CCtx_setParameter(c, ZSTD_c_compressionLevel,
                                      (int)s->zstd_level);
    if (ZSTD_isError(r))
        return mfd__fail(s, MFD_EINVAL, "channel %u: zstd level %d: %s",
                         ch->id, (int)s->zstd_level, ZSTD_getErrorName(r));
    return 0;
}

static void zstd_send_cleanup(mfd_send_chan *ch)
{
    ZSTD_freeCCtx(ch->m.state);
    free(ch->m.buf);
    ch->m.state = NULL;
    ch->m.buf = NULL;
}

static int zstd_send_prepare(mfd_send_chan *ch, uint8_t *host,
                             const uint64_t *off, uint32_t normal,
                             uint32_t *len)
{
    mfd_session *s = ch->s;
    uint32_t ps = (uint32_t)s->page_size;
    uint64_t t0 = mfd__now_us();
    ZSTD_outBuffer out = {ch->m.buf, ch->m.buf_len, 0};
    int64_t rc = 0;
    for (uint32_t i = 0; i <= normal && rc >= 0; i++) {
        /* The last round flushes: the packet's bytes all come out. */
        ZSTD_EndDirective end = i < normal ? ZSTD_e_continue : ZSTD_e_flush;
        ZSTD_inBuffer in = {i < normal ? host + off[i] : NULL,
                            i < normal ? ps : 0, 0};
        size_t left;
        do {
            left = ZSTD_compressStream2(ch->m.state, &out, &in, end);
            if (ZSTD_isError(left)) {
                rc = mfd__fail(s, MFD_ESYS, "channel %u: zstd: %s", ch->id,
                               ZSTD_getErrorName(left));
                break;
            }
            if (out.pos == out.size && (left || in.pos < in.size)) {
                rc = mfd__fail(s, MFD_ESYS,
                               "channel %u: zstd output exceeds its bound",
                               ch->id);
                break;
            }
        } while (end == ZSTD_e_flush ? left != 0 : in.pos < in.size);
    }
    return mfd__method_sent_buf(ch, normal, rc < 0 ? -1 : (int64_t)out.pos,
                                t0, len);
}

/*
 * The largest window a frame may ask of a channel's decoder: 2^25 bytes
 * (32 MiB), what zstd's level 20 (the highest multifd-zstd-level) takes.
 * zstd's own default, 2^27, let a peer make every channel allocate 128 MiB
 * with a few bytes of frame header.
 */
#define ZSTD_WINDOW_LOG_MAX 25

static int zstd_recv_setup(mfd_recv_chan *ch)
{
    mfd_session *s = ch->s;
    ch->m.state = ZSTD_createDCtx();
    ch->m.buf_len = zstd_bound(s->ppp, (uint32_t)s->page_size);
    ch->m.buf = malloc(ch->m.buf_len);
    if (!ch->m.state || !ch->m.buf)
        return mfd__fail(s, MFD_ENOMEM, "channel %u: zstd: out of memory",
                         ch->id);
    size_t r = ZSTD_DCtx_setParameter(ch->m.state, ZSTD_d_windowLogMax,
                                      ZSTD_WINDOW_LOG_MAX);
    if (ZSTD_isError(r))
        return mfd__fail(s, MFD_EINVAL, "channel %u: zstd window limit: %s",
                         ch->id, ZSTD_getErrorName(r));
    return 0;
}

static void zstd_recv_cleanup(mfd_recv_chan *ch)
{
    ZSTD_freeDCtx(ch->m.state);
    free(ch->m.buf);
    ch->m.state = NULL;
    ch->m.buf = NULL;
}

/*
 * A packet must decode to exactly out_len bytes and end where a flush ends:
 * at a block boundary (the decoder then wants a 3-byte block header next,
 * or 0 at the end of a frame). Surplus output the decoder still holds once
 * `out` is full is a bomb, even when all input was taken.
 */
static int zstd_decode(mfd_method_chan *m, const uint8_t *src, uint32_t len,
                       uint8_t *dst, uint64_t out_len, char *err,
                       size_t errlen)
{
    ZSTD_inBuffer in = {src, len, 0};
    ZSTD_outBuffer out = {dst, out_len, 0};
    size_t hint = 0;
    for (;;) {
        size_t before_in = in.pos, before_out = out.pos;
        if (out.pos == out.size) {
            uint8_t spare;
            ZSTD_outBuffer more = {&spare, 1, 0};
            hint = ZSTD_decompressStream(m->state, &more, &in);
            if (!ZSTD_isError(hint) && more.pos) {
                snprintf(err, errlen,
                         "decodes to more than %llu bytes (normal pages x "
                         "page size)",
                         (unsigned long long)out_len);
                return -1;
            }
        } else {
            hint = ZSTD_decompressStream(m->state, &out, &in);
        }
        if (ZSTD_isError(hint) &&
            ZSTD_getErrorCode(hint) == ZSTD_error_frameParameter_windowTooLarge) {
            snprintf(err, errlen,
                     "a frame's window is larger than 2^%d bytes, the most "
                     "the destination decodes (zstd level 20 needs 2^25)",
                     ZSTD_WINDOW_LOG_MAX);
            return -1;
        }
        if (ZSTD_isError(hint)) {
            snprintf(err, errlen, "%s", ZSTD_getErrorName(hint));
            return -1;
        }
        if (in.pos == before_in && out.pos == before_out)
            break;
    }
    if (in.pos < in.size || out.pos < out.size) {
        snprintf(err, errlen,
                 "decodes to %zu bytes, expected %llu (normal pages x page "
                 "size)%s",
                 out.pos, (unsigned long long)out_len,
                 in.pos < in.size ? " with input left over" : "");
        return -1;
    }
    if (hint != 0 && hint != 3) {
        snprintf(err, errlen,
                 "ends inside a block (the packet must end with a flush)");
        return -1;
    }
    return 0;
}

const mfd_method_ops mfd__method_zstd = {
    .name = "zstd",
    .wire = MFD_METHOD_ZSTD,
    .bound = zstd_bound,
    .send_setup = zstd_send_setup,
    .send_cleanup = zstd_send_cleanup,
    .send_prepare = zstd_send_prepare,
    .recv_setup = zstd_recv_setup,
    .recv_cleanup = zstd_recv_cleanup,
    .recv = mfd__method_recv_buf,
    .decode = zstd_decode,
};
