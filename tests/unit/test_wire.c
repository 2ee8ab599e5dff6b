/*
 * test_wire.c - protocol/wire.c: every fixed structure of PROTOCOL.md is
 * encoded at the documented offsets, decodes back, and every validation
 * failure is caught with a message naming the field.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "common/util.h"
#include "protocol/wire.h"

#define PPP 128
static uint8_t pkt[MFD_PACKET_FIXED + 8 * PPP];

static void test_preamble(void **state)
{
    (void)state;
    uint8_t b[16];
    uint32_t v = 0;
    mfd__preamble_encode(b, 1);
    static const uint8_t want[16] = {0x4D, 0x46, 0x44, 0x43, 0, 0, 0, 1};
    assert_memory_equal(b, want, 16);
    assert_true(mfd__preamble_decode(b, &v));
    assert_int_equal(v, 1);
    b[0] = 0x11;
    assert_false(mfd__preamble_decode(b, &v));
}

static void test_record_header_and_padding(void **state)
{
    (void)state;
    uint8_t h[8];
    mfd__rec_hdr_encode(h, MFD_REC_HEARTBEAT, 5);
    static const uint8_t want[8] = {0x80, 0, 0, 0x50, 0, 0, 0, 5};
    assert_memory_equal(h, want, 8);
    assert_int_equal(mfd__record_padded(0), 0);
    assert_int_equal(mfd__record_padded(1), 8);
    assert_int_equal(mfd__record_padded(8), 8);
    assert_int_equal(mfd__record_padded(13), 16);
}

static mfd_hello good_hello(void)
{
    mfd_hello h = {.page_size = 4096,
                   .pages_per_packet = 128,
                   .channels = 4,
                   .method = 0,
                   .level = -1,
                   .zero_page_detection = 2,
                   .features = 3,
                   .block_count = 2};
    for (int i = 0; i < 16; i++)
        h.uuid[i] = (uint8_t)(i * 17);
    return h;
}

static void test_hello_roundtrip(void **state)
{
    (void)state;
    uint8_t b[MFD_HELLO_LEN];
    char err[200];
    mfd_hello h = good_hello(), d;
    mfd__hello_encode(b, &h);
    /* Offsets of PROTOCOL.md 1.3. */
    assert_int_equal(mfd__get_be32(b + 16), 4096);
    assert_int_equal(mfd__get_be32(b + 20), 128);
    assert_int_equal(mfd__get_be32(b + 24), 4);
    assert_int_equal(mfd__get_be32(b + 32), 0xffffffffu);
    assert_int_equal(mfd__get_be32(b + 36), 2);
    assert_int_equal(mfd__get_be64(b + 40), 3);
    assert_int_equal(mfd__get_be32(b + 48), 2);
    assert_int_equal(mfd__get_be32(b + 52), 0);
    assert_true(mfd__hello_decode(b, sizeof(b), &d, err, sizeof(err)));
    assert_memory_equal(d.uuid, h.uuid, 16);
    assert_int_equal(d.level, -1);
    assert_int_equal(d.features, 3);
}

/* Each bad HELLO is refused with a message containing `field`. */
static void hello_refused(void (*mutate)(uint8_t *b, uint32_t *len),
                          const char *field)
{
    uint8_t b[MFD_HELLO_LEN + 8] = {0};
    uint32_t len = MFD_HELLO_LEN;
    char err[200] = "";
    mfd_hello h = good_hello(), d;
    mfd__hello_encode(b, &h);
    mutate(b, &len);
    assert_false(mfd__hello_decode(b, len, &d, err, sizeof(err)));
    if (!strstr(err, field))
        fail_msg("HELLO error '%s' does not name '%s'", err, field);
}

static void m_short(uint8_t *b, uint32_t *l) { (void)b; *l -= 4; }
static void m_long(uint8_t *b, uint32_t *l) { (void)b; *l += 8; }
static void m_ps_small(uint8_t *b, uint32_t *l) { (void)l; mfd__put_be32(b + 16, 2048); }
static void m_ps_pow2(uint8_t *b, uint32_t *l) { (void)l; mfd__put_be32(b + 16, 12288); }
static void m_ps_big(uint8_t *b, uint32_t *l) { (void)l; mfd__put_be32(b + 16, 131072); }
static void m_ppp(uint8_t *b, uint32_t *l) { (void)l; mfd__put_be32(b + 20, 64); }
static void m_ch0(uint8_t *b, uint32_t *l) { (void)l; mfd__put_be32(b + 24, 0); }
static void m_ch256(uint8_t *b, uint32_t *l) { (void)l; mfd__put_be32(b + 24, 256); }
static void m_zpd(uint8_t *b, uint32_t *l) { (void)l; mfd__put_be32(b + 36, 3); }
static void m_bc0(uint8_t *b, uint32_t *l) { (void)l; mfd__put_be32(b + 48, 0); }
static void m_bc_big(uint8_t *b, uint32_t *l) { (void)l; mfd__put_be32(b + 48, 1025); }
static void m_resv(uint8_t *b, uint32_t *l) { (void)l; b[55] = 1; }

static void test_hello_validation(void **state)
{
    (void)state;
    hello_refused(m_short, "length");
    hello_refused(m_long, "length");
    hello_refused(m_ps_small, "page_size");
    hello_refused(m_ps_pow2, "page_size");
    hello_refused(m_ps_big, "page_size");
    hello_refused(m_ppp, "pages_per_packet");
    hello_refused(m_ch0, "channels");
    hello_refused(m_ch256, "channels");
    hello_refused(m_zpd, "zero_page_detection");
    hello_refused(m_bc0, "block_count");
    hello_refused(m_bc_big, "block_count");
    hello_refused(m_resv, "reserved");
}

static void test_init_layout(void **state)
{
    (void)state;
    uint8_t b[MFD_INIT_LEN], uuid[16], zero[39] = {0};
    memset(uuid, 0xab, 16);
    mfd__init_encode(b, uuid, 7);
    assert_int_equal(mfd__get_be32(b), 0x11223344u);
    assert_int_equal(mfd__get_be32(b + 4), 1);
    assert_memory_equal(b + 8, uuid, 16);
    assert_int_equal(b[24], 7);
    assert_memory_equal(b + 25, zero, 39);
}

static void test_block_names(void **state)
{
    (void)state;
    char name[300];
    assert_true(mfd__block_name_valid("pc.ram", 6));
    assert_false(mfd__block_name_valid("", 0));
    assert_false(mfd__block_name_valid("a\0b", 3));
    assert_false(mfd__block_name_valid("tab\there", 8));
    assert_false(mfd__block_name_valid("\x7f", 1));
    assert_false(mfd__block_name_valid("\xc3\xa9", 2));
    memset(name, 'x', sizeof(name));
    assert_true(mfd__block_name_valid(name, 255));
    assert_false(mfd__block_name_valid(name, 256));
}

static void fill_good(void)
{
    memset(pkt, 0, sizeof(pkt));
    mfd__packet_fill(pkt, PPP, 0, 3, 2, 3 * 4096, 77, 1, "ram0");
}

static void test_packet_roundtrip(void **state)
{
    (void)state;
    char err[200];
    mfd_packet_hdr h;
    fill_good();
    assert_int_equal(mfd__packet_len(PPP), 1344);
    assert_int_equal(mfd__get_be32(pkt + 12), PPP);
    assert_int_equal(mfd__get_be32(pkt + 16), 3);
    assert_int_equal(mfd__get_be32(pkt + 20), 3 * 4096);
    assert_int_equal(mfd__get_be64(pkt + 24), 77);
    assert_int_equal(mfd__get_be32(pkt + 32), 2);
    assert_int_equal(pkt[40], 1);
    assert_string_equal((char *)pkt + 64, "ram0");
    assert_true(mfd__packet_decode(pkt, PPP, &h, err, sizeof(err)));
    assert_int_equal(h.normal, 3);
    assert_int_equal(h.zero, 2);
    assert_int_equal(h.next_size, 3 * 4096);
    assert_int_equal(h.packet_num, 77);
    assert_int_equal(h.crc_scope, 1);
    assert_string_equal(h.name, "ram0");

    /* A SYNC packet: flags SYNC only, counts 0, empty name. */
    mfd__packet_fill(pkt, PPP, MFD_FLAG_SYNC, 0, 0, 0, 78, 0, "");
    assert_true(mfd__packet_decode(pkt, PPP, &h, err, sizeof(err)));
    assert_int_equal(h.flags, MFD_FLAG_SYNC);
    /* Every method value is accepted by the fixed-part check. */
    for (uint32_t m = 0; m <= MFD_FLAG_METHOD_MASK; m += 2) {
        mfd__packet_fill(pkt, PPP, m | MFD_FLAG_SYNC, 0, 0, 0, 1, 0, "");
        assert_true(mfd__packet_decode(pkt, PPP, &h, err, sizeof(err)));
    }
}

static void packet_refused(size_t off, uint32_t be32, const char *field)
{
    char err[200] = "";
    mfd_packet_hdr h;
    fill_good();
    mfd__put_be32(pkt + off, be32);
    assert_false(mfd__packet_decode(pkt, PPP, &h, err, sizeof(err)));
    if (!strstr(err, field))
        fail_msg("packet error '%s' does not name '%s'", err, field);
}

static void test_packet_validation(void **state)
{
    (void)state;
    char err[200] = "";
    mfd_packet_hdr h;
    packet_refused(MFD_PKT_MAGIC, 0x11223345, "magic");
    packet_refused(MFD_PKT_VERSION, 2, "version");
    packet_refused(MFD_PKT_VERSION, 0, "version");
    packet_refused(MFD_PKT_FLAGS, 0x40, "flags");
    packet_refused(MFD_PKT_FLAGS, 0x80000000u, "flags");
    packet_refused(MFD_PKT_PAGES_ALLOC, 64, "pages_alloc");
    packet_refused(MFD_PKT_PAGES_ALLOC, 0, "pages_alloc");
    packet_refused(MFD_PKT_NORMAL, PPP + 1, "normal_pages");
    packet_refused(MFD_PKT_NORMAL, 0xffffffffu, "normal_pages");
    /* 3 normal + 126 zero = 129 entries > 128. */
    packet_refused(MFD_PKT_ZERO, PPP - 2, "zero_pages");
    packet_refused(MFD_PKT_ZERO, 0xffffffffu, "zero_pages");

    fill_good();
    pkt[MFD_PKT_CRC_SCOPE] = 2;
    assert_false(mfd__packet_decode(pkt, PPP, &h, err, sizeof(err)));
    assert_non_null(strstr(err, "CRC scope"));

    fill_good();
    memset(pkt + MFD_PKT_NAME, 'x', 256);
    assert_false(mfd__packet_decode(pkt, PPP, &h, err, sizeof(err)));
    assert_non_null(strstr(err, "NUL"));

    /* Boundaries that are valid: all normal, all zero. */
    fill_good();
    mfd__put_be32(pkt + MFD_PKT_NORMAL, PPP);
    mfd__put_be32(pkt + MFD_PKT_ZERO, 0);
    assert_true(mfd__packet_decode(pkt, PPP, &h, err, sizeof(err)));
    mfd__put_be32(pkt + MFD_PKT_NORMAL, 0);
    mfd__put_be32(pkt + MFD_PKT_ZERO, PPP);
    assert_true(mfd__packet_decode(pkt, PPP, &h, err, sizeof(err)));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_preamble),
        cmocka_unit_test(test_record_header_and_padding),
        cmocka_unit_test(test_hello_roundtrip),
        cmocka_unit_test(test_hello_validation),
        cmocka_unit_test(test_init_layout),
        cmocka_unit_test(test_block_names),
        cmocka_unit_test(test_packet_roundtrip),
        cmocka_unit_test(test_packet_validation),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
