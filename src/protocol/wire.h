/*
 * wire.h - the bytes of PROTOCOL.md: preamble, main-channel records, the
 * data-channel init message and the RAM packet. Encoding and validation
 * only; nothing here does I/O or keeps state.
 */
#ifndef MFD_PROTOCOL_WIRE_H
#define MFD_PROTOCOL_WIRE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define MFD_MAIN_MAGIC 0x4D464443u /* "MFDC" */
#define MFD_DATA_MAGIC 0x11223344u
#define MFD_PROTO_VERSION 1u
#define MFD_PREAMBLE_LEN 16
#define MFD_INIT_LEN 64
#define MFD_PACKET_BYTES 524288u /* pages_per_packet * page_size */
#define MFD_PACKET_FIXED 320u    /* header bytes before the offsets */
#define MFD_BLOCK_NAME_MAX 255
#define MFD_MAX_BLOCKS 1024
#define MFD_RECORD_MAX (16u << 20)
#define MFD_LEGACY_ZERO_MAX 4096
#define MFD_MSG_MAX 1024 /* ERROR and CANCEL text */
/* DEVICE_STATE: bytes per record, and in all (the destination's limit). */
#define MFD_DEVICE_CHUNK (1u << 20)
#define MFD_DEVICE_STATE_MAX (UINT64_C(256) << 20)
/* Optional records skipped while waiting for one setup record, at most. */
#define MFD_SETUP_OPTIONAL_MAX 64

/* Record types (section 1.3). Bit 31 marks an optional record. */
enum {
    MFD_REC_HELLO = 0x0001,
    MFD_REC_BLOCK = 0x0002,
    MFD_REC_SETUP_END = 0x0003,
    MFD_REC_ZERO_PAGES = 0x0010,
    MFD_REC_ITERATION_END = 0x0011,
    MFD_REC_DEVICE_STATE = 0x0020,
    MFD_REC_DIGESTS = 0x0021,
    MFD_REC_COMPLETE = 0x0022,
    MFD_REC_CHECKPOINT_BEGIN = 0x0030,
    MFD_REC_CHECKPOINT_END = 0x0031,
    MFD_REC_CANCEL = 0x0040,
    MFD_REC_HEARTBEAT = 0x80000050u,
    MFD_REC_READY = 0x1001,
    MFD_REC_DONE = 0x1002,
    MFD_REC_CHECKPOINT_ACK = 0x1003,
    MFD_REC_ERROR = 0x2000,
};
#define MFD_REC_OPTIONAL 0x80000000u

/* Feature bits (section 1.4). */
#define MFD_FEAT_CRC (UINT64_C(1) << 0)
#define MFD_FEAT_VERIFY (UINT64_C(1) << 1)
#define MFD_FEAT_COLO (UINT64_C(1) << 2)

/* RAM packet flags (section 2.2) and methods (section 2.3). */
#define MFD_FLAG_SYNC 0x1u
#define MFD_FLAG_METHOD_MASK 0x3Eu
enum { MFD_METHOD_NONE = 0x00, MFD_METHOD_ZLIB = 0x02, MFD_METHOD_ZSTD = 0x04,
       MFD_METHOD_LZ4 = 0x06 };

/* Packet header field offsets. */
enum {
    MFD_PKT_MAGIC = 0,
    MFD_PKT_VERSION = 4,
    MFD_PKT_FLAGS = 8,
    MFD_PKT_PAGES_ALLOC = 12,
    MFD_PKT_NORMAL = 16,
    MFD_PKT_NEXT_SIZE = 20,
    MFD_PKT_NUM = 24,
    MFD_PKT_ZERO = 32,
    MFD_PKT_CRC = 36,
    MFD_PKT_CRC_SCOPE = 40,
    MFD_PKT_NAME = 64,
    MFD_PKT_OFFSETS = 320,
};

#define MFD_HELLO_LEN 56

typedef struct {
    uint8_t uuid[16];
    uint32_t page_size;
    uint32_t pages_per_packet;
    uint32_t channels;
    uint32_t method;
    int32_t level;
    uint32_t zero_page_detection;
    uint64_t features;
    uint32_t block_count;
} mfd_hello;

/* A RAM packet header as decoded; offsets stay in the packet buffer (BE). */
typedef struct {
    uint32_t flags;
    uint32_t normal;
    uint32_t zero;
    uint32_t next_size;
    uint64_t packet_num;
    uint32_t crc;
    uint8_t crc_scope;
    const char *name; /* NUL-terminated inside the packet buffer */
} mfd_packet_hdr;

static inline size_t mfd__packet_len(uint32_t pages_per_packet)
{
    return MFD_PACKET_FIXED + 8u * (size_t)pages_per_packet;
}

static inline size_t mfd__record_padded(uint32_t body_len)
{
    return (body_len + 7u) & ~(size_t)7;
}

/* Preamble: writes 16 bytes; parses one (returns false if magic differs). */
void mfd__preamble_encode(uint8_t out[MFD_PREAMBLE_LEN], uint32_t version);
bool mfd__preamble_decode(const uint8_t in[MFD_PREAMBLE_LEN],
                          uint32_t *version);

/* Record header: 8 bytes {type, len}. */
void mfd__rec_hdr_encode(uint8_t out[8], uint32_t type, uint32_t len);

void mfd__hello_encode(uint8_t out[MFD_HELLO_LEN], const mfd_hello *h);
/*
 * Decodes and validates a HELLO body. On failure returns false and writes a
 * message naming the field into err.
 */
bool mfd__hello_decode(const uint8_t *body, uint32_t len, mfd_hello *h,
                       char *err, size_t errlen);

/* Data-channel init message. */
void mfd__init_encode(uint8_t out[MFD_INIT_LEN], const uint8_t uuid[16],
                      uint8_t id);

/* Validates a block name: 1..255 printable ASCII bytes, no NUL. */
bool mfd__block_name_valid(const char *name, size_t len);

/*
 * Validates the fixed part of a RAM packet (everything but block name and
 * offsets, which need the session's block table): magic, version, flags,
 * pages_alloc, counts, CRC scope, and the NUL in the name field. Fills
 * *hdr. On failure writes the field's complaint into err.
 */
bool mfd__packet_decode(const uint8_t *pkt, uint32_t pages_per_packet,
                        mfd_packet_hdr *hdr, char *err, size_t errlen);

/*
 * Fills the header of a RAM packet. `offsets_be` entries are already
 * written at MFD_PKT_OFFSETS by the caller. The CRC field is left 0.
 */
void mfd__packet_fill(uint8_t *pkt, uint32_t pages_per_packet, uint32_t flags,
                      uint32_t normal, uint32_t zero, uint32_t next_size,
                      uint64_t packet_num, uint8_t crc_scope,
                      const char *name);

#endif
