/*
 * wire.c - encoding and validation of PROTOCOL.md's fixed structures.
 *
 * Every multi-byte field is big-endian on the wire and read through
 * mfd__get_be*(), never through a cast of the buffer, so a hostile peer
 * cannot cause an unaligned access or depend on host byte order.
 */
#include "protocol/wire.h"

#include <stdio.h>
#include <string.h>

#include "common/util.h"

void mfd__preamble_encode(uint8_t out[MFD_PREAMBLE_LEN], uint32_t version)
{
    memset(out, 0, MFD_PREAMBLE_LEN);
    mfd__put_be32(out, MFD_MAIN_MAGIC);
    mfd__put_be32(out + 4, version);
}

bool mfd__preamble_decode(const uint8_t in[MFD_PREAMBLE_LEN], uint32_t *version)
{
    if (mfd__get_be32(in) != MFD_MAIN_MAGIC)
        return false;
    *version = mfd__get_be32(in + 4);
    return true;
}

void mfd__rec_hdr_encode(uint8_t out[8], uint32_t type, uint32_t len)
{
    mfd__put_be32(out, type);
    mfd__put_be32(out + 4, len);
}

void mfd__hello_encode(uint8_t out[MFD_HELLO_LEN], const mfd_hello *h)
{
    memcpy(out, h->uuid, 16);
    mfd__put_be32(out + 16, h->page_size);
    mfd__put_be32(out + 20, h->pages_per_packet);
    mfd__put_be32(out + 24, h->channels);
    mfd__put_be32(out + 28, h->method);
    mfd__put_be32(out + 32, (uint32_t)h->level);
    mfd__put_be32(out + 36, h->zero_page_detection);
    mfd__put_be64(out + 40, h->features);
    mfd__put_be32(out + 48, h->block_count);
    mfd__put_be32(out + 52, 0);
}

#define HELLO_FAIL(...)                                                        \
    do {                                                                       \
        snprintf(err, errlen, __VA_ARGS__);                                    \
        return false;                                                          \
    } while (0)

bool mfd__hello_decode(const uint8_t *body, uint32_t len, mfd_hello *h,
                       char *err, size_t errlen)
{
    if (len != MFD_HELLO_LEN)
        HELLO_FAIL("HELLO: body length %u, expected %u", len, MFD_HELLO_LEN);
    memcpy(h->uuid, body, 16);
    h->page_size = mfd__get_be32(body + 16);
    h->pages_per_packet = mfd__get_be32(body + 20);
    h->channels = mfd__get_be32(body + 24);
    h->method = mfd__get_be32(body + 28);
    h->level = (int32_t)mfd__get_be32(body + 32);
    h->zero_page_detection = mfd__get_be32(body + 36);
    h->features = mfd__get_be64(body + 40);
    h->block_count = mfd__get_be32(body + 48);

    if (h->page_size < 4096 || h->page_size > 65536 ||
        (h->page_size & (h->page_size - 1)))
        HELLO_FAIL("HELLO: page_size %u is not a power of two in 4096..65536",
                   h->page_size);
    if (h->pages_per_packet != MFD_PACKET_BYTES / h->page_size)
        HELLO_FAIL("HELLO: pages_per_packet %u, expected %u for page size %u",
                   h->pages_per_packet, MFD_PACKET_BYTES / h->page_size,
                   h->page_size);
    if (h->channels < 1 || h->channels > 255)
        HELLO_FAIL("HELLO: channels %u outside 1..255", h->channels);
    if (h->zero_page_detection > 2)
        HELLO_FAIL("HELLO: zero_page_detection %u unknown",
                   h->zero_page_detection);
    if (h->block_count < 1 || h->block_count > MFD_MAX_BLOCKS)
        HELLO_FAIL("HELLO: block_count %u outside 1..%u", h->block_count,
                   MFD_MAX_BLOCKS);
    if (mfd__get_be32(body + 52) != 0)
        HELLO_FAIL("HELLO: reserved field is not zero");
    return true;
}

void mfd__init_encode(uint8_t out[MFD_INIT_LEN], const uint8_t uuid[16],
                      uint8_t id)
{
    memset(out, 0, MFD_INIT_LEN);
    mfd__put_be32(out, MFD_DATA_MAGIC);
    mfd__put_be32(out + 4, MFD_PROTO_VERSION);
    memcpy(out + 8, uuid, 16);
    out[24] = id;
}

bool mfd__block_name_valid(const char *name, size_t len)
{
    if (len < 1 || len > MFD_BLOCK_NAME_MAX)
        return false;
    for (size_t i = 0; i < len; i++)
        if ((unsigned char)name[i] < 0x20 || (unsigned char)name[i] > 0x7e)
            return false;
    return true;
}

#define PKT_FAIL(...)                                                          \
    do {                                                                       \
        snprintf(err, errlen, __VA_ARGS__);                                    \
        return false;                                                          \
    } while (0)

bool mfd__packet_decode(const uint8_t *pkt, uint32_t pages_per_packet,
                        mfd_packet_hdr *hdr, char *err, size_t errlen)
{
    uint32_t magic = mfd__get_be32(pkt + MFD_PKT_MAGIC);
    uint32_t version = mfd__get_be32(pkt + MFD_PKT_VERSION);
    uint32_t alloc = mfd__get_be32(pkt + MFD_PKT_PAGES_ALLOC);

    if (magic != MFD_DATA_MAGIC)
        PKT_FAIL("bad magic 0x%08x", magic);
    if (version != MFD_PROTO_VERSION)
        PKT_FAIL("unsupported version %u", version);
    hdr->flags = mfd__get_be32(pkt + MFD_PKT_FLAGS);
    if (hdr->flags & ~(MFD_FLAG_SYNC | MFD_FLAG_METHOD_MASK))
        PKT_FAIL("unknown flags bits 0x%x",
                 hdr->flags & ~(MFD_FLAG_SYNC | MFD_FLAG_METHOD_MASK));
    if (alloc != pages_per_packet)
        PKT_FAIL("pages_alloc %u, expected %u", alloc, pages_per_packet);
    hdr->normal = mfd__get_be32(pkt + MFD_PKT_NORMAL);
    if (hdr->normal > alloc)
        PKT_FAIL("normal_pages %u exceeds pages_alloc %u", hdr->normal, alloc);
    hdr->zero = mfd__get_be32(pkt + MFD_PKT_ZERO);
    if (hdr->zero > alloc - hdr->normal)
        PKT_FAIL("zero_pages %u exceeds the %u entries left after %u normal "
                 "pages",
                 hdr->zero, alloc - hdr->normal, hdr->normal);
    hdr->next_size = mfd__get_be32(pkt + MFD_PKT_NEXT_SIZE);
    hdr->packet_num = mfd__get_be64(pkt + MFD_PKT_NUM);
    hdr->crc = mfd__get_be32(pkt + MFD_PKT_CRC);
    hdr->crc_scope = pkt[MFD_PKT_CRC_SCOPE];
    if (hdr->crc_scope > 1)
        PKT_FAIL("CRC scope %u is neither 0 nor 1", hdr->crc_scope);
    if (!memchr(pkt + MFD_PKT_NAME, 0, 256))
        PKT_FAIL("block name is not NUL-terminated");
    hdr->name = (const char *)pkt + MFD_PKT_NAME;
    return true;
}

void mfd__packet_fill(uint8_t *pkt, uint32_t pages_per_packet, uint32_t flags,
                      uint32_t normal, uint32_t zero, uint32_t next_size,
                      uint64_t packet_num, uint8_t crc_scope, const char *name)
{
    mfd__put_be32(pkt + MFD_PKT_MAGIC, MFD_DATA_MAGIC);
    mfd__put_be32(pkt + MFD_PKT_VERSION, MFD_PROTO_VERSION);
    mfd__put_be32(pkt + MFD_PKT_FLAGS, flags);
    mfd__put_be32(pkt + MFD_PKT_PAGES_ALLOC, pages_per_packet);
    mfd__put_be32(pkt + MFD_PKT_NORMAL, normal);
    mfd__put_be32(pkt + MFD_PKT_NEXT_SIZE, next_size);
    mfd__put_be64(pkt + MFD_PKT_NUM, packet_num);
    mfd__put_be32(pkt + MFD_PKT_ZERO, zero);
    mfd__put_be32(pkt + MFD_PKT_CRC, 0);
    memset(pkt + MFD_PKT_CRC_SCOPE, 0, MFD_PKT_NAME - MFD_PKT_CRC_SCOPE);
    pkt[MFD_PKT_CRC_SCOPE] = crc_scope;
    /* strncpy zero-pads the rest of the 256-byte name field. */
    strncpy((char *)pkt + MFD_PKT_NAME, name ? name : "", 256);
}
