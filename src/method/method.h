/*
 * method.h - send-path methods (PROTOCOL.md 2.3): how the normal pages of a
 * packet travel. One ops table per method, the shape of QEMU's
 * MultiFDMethods (setup, cleanup, prepare on the source; setup, cleanup,
 * recv on the destination); the channel loops call the table and know no
 * method.
 *
 * Each channel owns its method state (one compression stream per channel
 * for the whole migration), so compression runs on the channel threads in
 * parallel and needs no lock.
 */
#ifndef MFD_METHOD_METHOD_H
#define MFD_METHOD_METHOD_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "protocol/wire.h"

struct mfd_send_chan;
struct mfd_recv_chan;
struct mfd_block;

/* Per-channel method state and buffers, inside each channel struct. */
typedef struct mfd_method_chan {
    void *state;    /* the method's stream */
    uint8_t *buf;   /* compressed payload (source: output; destination: input) */
    size_t buf_len; /* the method's bound for a full packet */
    uint8_t *page;  /* zlib source: the page being deflated, copied */
    int level;      /* source: level or acceleration */
    uint32_t page_size;
    bool started;   /* zlib destination: the stream header was read */
} mfd_method_chan;

typedef struct mfd_method_ops {
    const char *name;
    uint32_t wire; /* MFD_METHOD_*: the flags bits of its packets */
    /*
     * Largest payload `pages` normal pages may take. The destination
     * refuses a larger next_packet_size before it reads a byte.
     */
    uint64_t (*bound)(uint32_t pages, uint32_t page_size);

    /* Source. Failures fail the session with a message. */
    int (*send_setup)(struct mfd_send_chan *ch);
    void (*send_cleanup)(struct mfd_send_chan *ch);
    /*
     * Prepares the payload of the `normal` pages at host + off[i]: fills
     * ch->iov[1..] and returns the number of iovecs, the payload length in
     * *len; or -1.
     */
    int (*send_prepare)(struct mfd_send_chan *ch, uint8_t *host,
                        const uint64_t *off, uint32_t normal, uint32_t *len);

    /* Destination. */
    int (*recv_setup)(struct mfd_recv_chan *ch);
    void (*recv_cleanup)(struct mfd_recv_chan *ch);
    /*
     * Reads the payload of a packet with normal pages (h->next_size bytes,
     * already checked against bound): raw pages either straight into place
     * in block b (*buffered false) or into ch->bounce (*buffered true);
     * compressed ones into ch->m.buf. ch->iov[0..*nsent) then describe the
     * bytes as they were sent, for the CRC. Returns 0, 1 when the session
     * is ending anyway, or -1 after failing it.
     */
    int (*recv)(struct mfd_recv_chan *ch, struct mfd_block *b,
                const mfd_packet_hdr *h, uint64_t num, int *nsent,
                bool *buffered);
    /*
     * Compressing methods (NULL for none): decodes `len` bytes at `in`
     * into exactly `out_len` bytes at `out`. Anything else (a broken
     * stream, less output, input left once the output is full) fails with
     * a message in err.
     */
    int (*decode)(mfd_method_chan *m, const uint8_t *in, uint32_t len,
                  uint8_t *out, uint64_t out_len, char *err, size_t errlen);
} mfd_method_ops;

/* The method with wire value `wire` built into this library, or NULL. */
const mfd_method_ops *mfd__method_find(uint32_t wire);
/* Its MFD_COMPRESSION_* value, or -1. */
int mfd__method_index(uint32_t wire);
/* The method of an MFD_COMPRESSION_* value (0..3). */
const mfd_method_ops *mfd__method_of(int compression);
/* Name of a wire value ("zstd"), whether built in or not. */
const char *mfd__method_name(uint32_t wire);

/*
 * The compressing methods' recv: reads the payload into ch->m.buf (and sets
 * *buffered: the decoded pages will be in ch->bounce).
 */
int mfd__method_recv_buf(struct mfd_recv_chan *ch, struct mfd_block *b,
                         const mfd_packet_hdr *h, uint64_t num, int *nsent,
                         bool *buffered);
/*
 * Shared by the compressing methods' send_prepare: points ch->iov[1] at
 * the `len` bytes the method wrote into ch->m.buf and counts the stats.
 */
int mfd__method_sent_buf(struct mfd_send_chan *ch, uint32_t normal,
                         int64_t len, uint64_t t0, uint32_t *out_len);

/*
 * Whether a page is not worth compressing: the order-0 entropy of 1024
 * bytes sampled across it is above 7.2 bits per byte (random data shows
 * about 7.8, text 4 to 5). Costs about a microsecond.
 */
bool mfd__page_incompressible(const uint8_t *p, uint32_t page_size);

extern const mfd_method_ops mfd__method_none;
extern const mfd_method_ops mfd__method_zlib;
extern const mfd_method_ops mfd__method_zstd;
extern const mfd_method_ops mfd__method_lz4;

#endif
