/*
 * fuzz_wire.c - libFuzzer target: the wire decoders a destination runs on
 * a peer's bytes before trusting any of them (PROTOCOL.md 1-2): preamble,
 * HELLO, the fixed part of a RAM packet, and each compression method's
 * payload decoder, fed a stream of packets as one channel would receive.
 *
 * Input: byte 0 picks the decoder; the rest is its input. For a method,
 * the rest is a sequence of packets: u8 pages - 1 (taken modulo 128), u24
 * length (little-endian), that many payload bytes (skipped when above the
 * method's bound), each decoded into
 * pages x 4096 bytes with the channel's stream state carried over, as on a
 * real channel.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "core/session.h"
#include "method/method.h"
#include "protocol/wire.h"

static void fuzz_methods(const uint8_t *d, size_t n, int method)
{
    mfd_session *s = mfd_session_new();
    if (!s)
        return;
    mfd_set_log(s, NULL, NULL);
    s->ppp = MFD_PACKET_BYTES / 4096;
    mfd_recv_chan ch = {.s = s, .fd = -1};
    const mfd_method_ops *m = mfd__method_of(method);
    uint8_t *out = malloc(MFD_PACKET_BYTES);
    if (out && m->decode && m->recv_setup(&ch) == 0) {
        ch.m.page_size = 4096;
        while (n >= 4) {
            uint32_t pages = d[0] % s->ppp + 1;
            size_t len = (size_t)d[1] | (size_t)d[2] << 8 | (size_t)d[3] << 16;
            d += 4;
            n -= 4;
            len = len < n ? len : n;
            uint64_t bound = m->bound(pages, 4096);
            char err[256];
            if (len <= bound)
                m->decode(&ch.m, d, (uint32_t)len, out,
                          (uint64_t)pages * 4096, err, sizeof(err));
            d += len;
            n -= len;
        }
    }
    if (m->recv_cleanup)
        m->recv_cleanup(&ch);
    free(out);
    mfd_session_free(s);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    uint8_t sel = data[0];
    data++;
    size--;
    char err[300];
    switch (sel % 6) {
    case 0: {
        uint8_t pre[MFD_PREAMBLE_LEN] = {0};
        uint32_t v;
        memcpy(pre, data, size < sizeof(pre) ? size : sizeof(pre));
        mfd__preamble_decode(pre, &v);
        break;
    }
    case 1: {
        mfd_hello h;
        mfd__hello_decode(data, (uint32_t)size, &h, err, sizeof(err));
        break;
    }
    case 2: {
        uint32_t ppp = MFD_PACKET_BYTES / 4096;
        size_t len = mfd__packet_len(ppp);
        uint8_t *pkt = calloc(1, len);
        mfd_packet_hdr h;
        if (pkt) {
            memcpy(pkt, data, size < len ? size : len);
            mfd__packet_decode(pkt, ppp, &h, err, sizeof(err));
        }
        free(pkt);
        break;
    }
    default:
        fuzz_methods(data, size, MFD_COMPRESSION_ZLIB + sel % 6 - 3);
    }
    return 0;
}
