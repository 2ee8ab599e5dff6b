/*
 * zlib.c - method zlib (PROTOCOL.md 2.3): one deflate stream (zlib wrapper)
 * per channel for the whole migration; a packet's pages are deflated in
 * order and the packet ends byte-aligned at a block boundary, so its
 * payload inflates on its own given the stream's history.
 *
 * The source deflates with ISA-L (igzip level 1), not zlib: on this machine
 * zlib-1 deflates random pages at 38 MB/s and text at 527 MB/s per core,
 * igzip-1 at 395 and 3347 MB/s (docs/benchmarks.md). A page that will not
 * compress (its sampled byte entropy above 7.2 bits) is written as a stored
 * block instead, at memcpy speed on both ends. Each run of compressible
 * pages ends in igzip's FULL_FLUSH, which byte-aligns the stream and keeps
 * later matches from reaching back past stored data igzip did not see; the
 * zlib header is written here. The result is an ordinary zlib stream that
 * plain zlib inflates (a QEMU destination). The destination inflates with
 * ISA-L too, which takes any deflate stream, a QEMU source's included.
 */
#include <isa-l/igzip_lib.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/util.h"
#include "core/session.h"
#include "method/method.h"

/*
 * The largest payload: stored blocks (5 bytes per 64 KiB) or igzip's
 * Huffman blocks, which may exceed the input slightly on data that only
 * looks compressible (0.07% seen on random pages); the stream header and
 * the flush markers.
 */
static uint64_t zlib_bound(uint32_t pages, uint32_t ps)
{
    uint64_t n = (uint64_t)pages * ps;
    return n + n / 64 + 1024;
}

/* ---- source --------------------------------------------------------------- */

typedef struct {
    struct isal_zstream s;
    bool header_out; /* the stream's 2-byte zlib header */
    bool store_all;  /* multifd-zlib-level 0: no compression */
} zlib_tx;

static int zlib_send_setup(mfd_send_chan *ch)
{
    mfd_session *s = ch->s;
    zlib_tx *z = calloc(1, sizeof(*z));
    ch->m.state = z;
    ch->m.buf_len = zlib_bound(s->ppp, (uint32_t)s->page_size);
    ch->m.buf = malloc(ch->m.buf_len);
    ch->m.page = malloc((size_t)s->ppp * s->page_size); /* staging */
    if (z) {
        isal_deflate_init(&z->s);
        z->s.gzip_flag = IGZIP_DEFLATE; /* raw: the header is ours */
        z->s.end_of_stream = 0;
        /*
         * zlib's 0 stores every page; its fastest level, 1, is igzip's
         * fastest, 0; then 2..5 -> 1, 6..7 -> 2, 8..9 -> 3.
         */
        static const uint8_t level[10] = {0, 0, 1, 1, 1, 1, 2, 2, 3, 3};
        static const uint32_t buf[] = {0, ISAL_DEF_LVL1_DEFAULT,
                                       ISAL_DEF_LVL2_DEFAULT,
                                       ISAL_DEF_LVL3_DEFAULT};
        z->store_all = s->zlib_level == 0;
        z->s.level = level[s->zlib_level];
        z->s.level_buf_size = buf[z->s.level];
        z->s.level_buf = z->s.level ? malloc(z->s.level_buf_size) : NULL;
    }
    if (!z || !ch->m.buf || !ch->m.page || (z->s.level && !z->s.level_buf))
        return mfd__fail(s, MFD_ENOMEM, "channel %u: zlib: out of memory",
                         ch->id);
    return 0;
}

static void zlib_send_cleanup(mfd_send_chan *ch)
{
    zlib_tx *z = ch->m.state;
    if (z)
        free(z->s.level_buf);
    free(z);
    free(ch->m.buf);
    free(ch->m.page);
    ch->m.state = NULL;
    ch->m.buf = ch->m.page = NULL;
}

/* Runs igzip over `len` bytes (0 to flush) into [*o, end). */
static int igzip(zlib_tx *z, uint8_t **o, uint8_t *end, uint8_t *in,
                 uint32_t len, uint16_t flush)
{
    z->s.next_in = in;
    z->s.avail_in = len;
    z->s.flush = flush;
    z->s.next_out = *o;
    z->s.avail_out = (uint32_t)(end - *o);
    do {
        if (isal_deflate(&z->s) != COMP_OK)
            return -1;
        /* A flush is complete once igzip waits for a new block again. */
    } while (z->s.avail_out &&
             (z->s.avail_in ||
              (flush != NO_FLUSH &&
               z->s.internal_state.state != ZSTATE_NEW_HDR)));
    *o = z->s.next_out;
    return z->s.avail_in || !z->s.avail_out ? -1 : 0;
}

/* The bytes one page takes as stored blocks (5 bytes per 64 KiB). */
static uint64_t stored_size(uint32_t ps)
{
    return ps + 5 * (ps / 65535 + 1);
}

/* A stored block: byte-aligned header, LEN and NLEN little-endian, bytes. */
static uint8_t *stored(uint8_t *o, const uint8_t *p, uint32_t len)
{
    while (len) {
        uint32_t n = MFD_MIN(len, 65535u);
        o[0] = 0x00; /* BFINAL 0, BTYPE 00 */
        o[1] = (uint8_t)n;
        o[2] = (uint8_t)(n >> 8);
        o[3] = (uint8_t)~n;
        o[4] = (uint8_t)(~n >> 8);
        memcpy(o + 5, p, n);
        o += 5 + n;
        p += n;
        len -= n;
    }
    return o;
}

/*
 * The packet as stored blocks only, from the guest's memory (a page torn
 * by a writer is dirty and sent again). igzip is reset first: every
 * packet starts where the previous one's full flush left the stream, with
 * no history, so dropping this packet's deflate output loses nothing the
 * destination has seen.
 */
static uint8_t *packet_stored(zlib_tx *z, uint8_t *o, const uint8_t *host,
                              const uint64_t *off, uint32_t normal,
                              uint32_t ps)
{
    isal_deflate_reset(&z->s);
    for (uint32_t i = 0; i < normal; i++)
        o = stored(o, host + off[i], ps);
    return o;
}

static int zlib_send_prepare(mfd_send_chan *ch, uint8_t *host,
                             const uint64_t *off, uint32_t normal,
                             uint32_t *len)
{
    mfd_session *s = ch->s;
    uint32_t ps = (uint32_t)s->page_size;
    zlib_tx *z = ch->m.state;
    uint64_t t0 = mfd__now_us();
    uint8_t *o = ch->m.buf, *end = ch->m.buf + ch->m.buf_len;
    if (!z->header_out) {
        o[0] = 0x78; /* deflate, 32 KiB window */
        o[1] = 0x01; /* check bits: 0x7801 % 31 == 0, no dictionary */
        o += 2;
        z->header_out = true;
    }
    /*
     * Deflate may not exceed the packet as stored blocks; igzip's fastest
     * level, whose Huffman table is fixed, expands some pages that look
     * compressible (arrays of kernel pointers: 123% seen in a real
     * guest's RAM), and then the packet goes out stored.
     */
    uint8_t *start = o;
    uint64_t as_stored = normal * stored_size(ps);
    /*
     * Each run of compressible pages is copied into the staging buffer
     * (the guest may change a page while igzip reads it, twice where it
     * matches) and deflated in one call ending in a full flush: igzip
     * called a page at a time ran at half the speed (336 vs 602 MB/s on
     * text), moving its history buffer at every call.
     */
    uint8_t *run = ch->m.page;
    uint32_t nrun = 0;
    int rc = 0;
    for (uint32_t i = 0; i < normal && !rc; i++) {
        const uint8_t *page = host + off[i];
        if (!z->store_all && !mfd__page_incompressible(page, ps)) {
            memcpy(run + (size_t)nrun++ * ps, page, ps);
            continue;
        }
        if (nrun)
            rc = igzip(z, &o, end, run, nrun * ps, FULL_FLUSH);
        nrun = 0;
        if (!rc && (uint64_t)(end - o) < stored_size(ps))
            rc = -1;
        if (!rc)
            o = stored(o, page, ps);
    }
    if (!rc && nrun)
        rc = igzip(z, &o, end, run, nrun * ps, FULL_FLUSH);
    if (rc || (uint64_t)(o - start) > as_stored)
        o = packet_stored(z, start, host, off, normal, ps);
    return mfd__method_sent_buf(ch, normal, (int64_t)(o - ch->m.buf), t0,
                                len);
}

/* ---- destination: ISA-L's inflate ------------------------------------- */

/*
 * Any deflate stream is inflated, not only ours: a QEMU source's zlib
 * stream refers back across packets, and ISA-L's stateful inflate keeps
 * the 32 KiB history in its own state between calls. It inflated this
 * machine's text corpus at 838 MB/s per core, zlib at 356. The stream's
 * 2-byte zlib header is checked here and the rest inflated raw: the
 * adler32 a zlib stream carries only at its end is never reached (a
 * channel's stream lasts the whole migration).
 */
static int zlib_recv_setup(mfd_recv_chan *ch)
{
    mfd_session *s = ch->s;
    struct inflate_state *z = malloc(sizeof(*z));
    ch->m.state = z;
    ch->m.buf_len = zlib_bound(s->ppp, (uint32_t)s->page_size);
    ch->m.buf = malloc(ch->m.buf_len);
    if (!z || !ch->m.buf)
        return mfd__fail(s, MFD_ENOMEM, "channel %u: zlib: out of memory",
                         ch->id);
    isal_inflate_init(z);
    z->crc_flag = ISAL_DEFLATE; /* raw deflate: the header is ours */
    return 0;
}

static void zlib_recv_cleanup(mfd_recv_chan *ch)
{
    free(ch->m.state);
    free(ch->m.buf);
    ch->m.state = NULL;
    ch->m.buf = NULL;
}

/* Output inflate produced but could not hand out (`out` was full). */
static bool inflate_holds_output(const struct inflate_state *z)
{
    return z->tmp_out_valid > z->tmp_out_processed;
}

static int too_much(char *err, size_t errlen, uint64_t out_len)
{
    snprintf(err, errlen, "inflates to more than %llu bytes (normal pages x "
             "page size)", (unsigned long long)out_len);
    return -1;
}

static int zlib_decode(mfd_method_chan *m, const uint8_t *src, uint32_t len,
                       uint8_t *dst, uint64_t out_len, char *err,
                       size_t errlen)
{
    struct inflate_state *z = m->state;
    uint8_t spare;
    if (!m->started) {
        /* CMF: deflate, window <= 32 KiB; FLG: check bits, no dictionary. */
        if (len < 2 || (src[0] & 0x0f) != 8 || (src[0] >> 4) > 7 ||
            ((src[0] << 8) | src[1]) % 31 || (src[1] & 0x20)) {
            snprintf(err, errlen, "%s",
                     len < 2 ? "no zlib stream header"
                     : (src[1] & 0x20) && (src[0] & 0x0f) == 8 &&
                             !(((src[0] << 8) | src[1]) % 31)
                         ? "zlib header asks for a preset dictionary"
                         : "incorrect zlib stream header");
            return -1;
        }
        src += 2;
        len -= 2;
        m->started = true;
    }
    z->next_in = (uint8_t *)src;
    z->avail_in = len;
    z->next_out = dst;
    z->avail_out = (uint32_t)out_len;
    int r = isal_inflate(z);
    /*
     * `out` is full: what is left of the input may only be the sync flush
     * marker (an empty stored block). One spare byte of output lets
     * inflate take it; a byte written there, or output inflate still
     * holds, is more than the packet's pages.
     */
    if (r >= 0 && !z->avail_out &&
        (z->avail_in || z->read_in_length) && !inflate_holds_output(z)) {
        z->next_out = &spare;
        z->avail_out = 1;
        r = isal_inflate(z);
        if (!z->avail_out)
            return too_much(err, errlen, out_len);
        z->avail_out = 0;
    }
    if (r < 0) {
        snprintf(err, errlen, "inflate: %s",
                 r == ISAL_INVALID_BLOCK    ? "invalid block"
                 : r == ISAL_INVALID_SYMBOL ? "invalid symbol"
                 : r == ISAL_INVALID_LOOKBACK
                     ? "distance too far back"
                     : "error");
        return -1;
    }
    if (z->block_state == ISAL_BLOCK_INPUT_DONE ||
        z->block_state == ISAL_BLOCK_FINISH) {
        snprintf(err, errlen, "the zlib stream ended (a channel's stream "
                              "lasts the whole migration)");
        return -1;
    }
    if (!z->avail_out && inflate_holds_output(z))
        return too_much(err, errlen, out_len);
    if (z->avail_in || z->avail_out) {
        snprintf(err, errlen,
                 "inflates to %llu bytes, expected %llu (normal pages x page "
                 "size)%s",
                 (unsigned long long)(out_len - z->avail_out),
                 (unsigned long long)out_len,
                 z->avail_in ? " with input left over" : "");
        return -1;
    }
    /*
     * A packet ends byte-aligned at a block boundary (after its sync flush
     * or a stored block): inflate then waits for a new block header (in
     * state NEW_HDR, or HDR with none of it read yet) with no bits left
     * over. Anything else is a cut payload, or the start of
     * a block the next packet would finish.
     */
    bool boundary = z->block_state == ISAL_BLOCK_NEW_HDR ||
                    (z->block_state == ISAL_BLOCK_HDR && !z->tmp_in_size);
    if (!boundary || z->read_in_length) {
        snprintf(err, errlen, "ends inside a block (the packet must end with "
                              "a sync flush)");
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
