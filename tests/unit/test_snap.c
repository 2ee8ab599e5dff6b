/*
 * test_snap.c - file/snap.c: the snapshot header and block table
 * (PROTOCOL.md 5) are laid out, encoded at the documented offsets and
 * decode back field by field; every validation failure of a hostile file
 * is caught with a message naming what is wrong.
 *
 * Each failure case starts from a valid encoding, changes one thing and
 * recomputes the CRC (except for the CRC case itself), so it reaches the
 * check it is meant for rather than failing earlier on the CRC.
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
#include "file/snap.h"
#include "protocol/crc32c.h"
#include "protocol/wire.h"

#define PS 4096u
#define PMIN 4096u
#define PMAX 65536u
#define MIB (UINT64_C(1) << 20)

/* A valid snapshot's metadata, with the file size it lays out. */
typedef struct {
    mfd_snap_info info;
    mfd_snap_block blocks[3];
    uint8_t meta[MFD_SNAP_HEADER + 3 * MFD_SNAP_ENTRY];
    uint64_t size; /* end of the last pages region (+ device state) */
    char err[600];
} snap_fx;

/* Lengths of the three test blocks: not multiples of 1 MiB nor of 64 pages. */
static const uint64_t LENGTHS[3] = {
    3 * MIB + 5 * PS, /* 773 pages */
    PS,               /* 1 page */
    100 * PS,         /* 100 pages */
};
static const char *const NAMES[3] = {"pc.ram", "vga.vram", "rom@0xfffc0000"};

static void fx_init(snap_fx *f, uint32_t n)
{
    memset(f, 0, sizeof(*f));
    f->info.version = MFD_SNAP_VERSION;
    f->info.page_size = PS;
    f->info.block_count = n;
    f->info.flags = MFD_SNAP_COMPLETE;
    for (int i = 0; i < 16; i++)
        f->info.uuid[i] = (uint8_t)(0xA0 + i * 7);
    f->info.blocks = f->blocks;
    for (uint32_t i = 0; i < n; i++) {
        snprintf(f->blocks[i].name, MFD_SNAP_NAME, "%s", NAMES[i]);
        f->blocks[i].length = LENGTHS[i];
    }
    f->size = mfd__snap_layout(&f->info);
    mfd__snap_encode(f->meta, &f->info);
}

/* Re-encodes from f->info (CRC recomputed). */
static void fx_encode(snap_fx *f)
{
    mfd__snap_encode(f->meta, &f->info);
}

/* Recomputes the CRC by hand after a byte-level change. */
static void fx_fix_crc(snap_fx *f, uint32_t n)
{
    uint32_t c = mfd__crc32c(0, f->meta, MFD_SNAP_OFF_CRC);
    c = mfd__crc32c(c, f->meta + MFD_SNAP_HEADER, (size_t)MFD_SNAP_ENTRY * n);
    mfd__put_le32(f->meta + MFD_SNAP_OFF_CRC, c);
}

static uint8_t *entry(snap_fx *f, uint32_t i)
{
    return f->meta + MFD_SNAP_HEADER + (size_t)MFD_SNAP_ENTRY * i;
}

/*
 * Decodes f->meta as a file of `size` bytes: header, then table. Returns 0
 * when both pass, 1 when the header fails, 2 when the table fails; fills
 * *out (its blocks in `blocks`).
 */
static int fx_decode(snap_fx *f, uint64_t size, mfd_snap_info *out,
                     mfd_snap_block *blocks)
{
    f->err[0] = 0;
    if (mfd__snap_decode_header(f->meta, size, PMIN, PMAX, out, f->err,
                                sizeof(f->err)))
        return 1;
    assert_true(out->block_count <= 3);
    memset(blocks, 0x5a, sizeof(mfd_snap_block) * out->block_count);
    out->blocks = blocks;
    if (mfd__snap_decode_table(f->meta, f->meta + MFD_SNAP_HEADER, size, out,
                               f->err, sizeof(f->err)))
        return 2;
    return 0;
}

/* Expects f->meta of `size` bytes to fail at `stage` (1 header, 2 table)
 * with a message containing every one of the given words. */
#define REFUSED(f, size, stage, ...)                                           \
    refused(f, size, stage, __LINE__, (const char *[]){__VA_ARGS__, NULL})

static void refused(snap_fx *f, uint64_t size, int stage, int line,
                    const char *const *words)
{
    mfd_snap_info d;
    mfd_snap_block b[3];
    int rc = fx_decode(f, size, &d, b);
    if (rc != stage) {
        print_error("line %d: decode gave %d, expected stage %d (err '%s')\n",
                    line, rc, stage, f->err);
        fail();
    }
    for (const char *const *w = words; *w; w++)
        if (!strstr(f->err, *w)) {
            print_error("line %d: message '%s' does not mention '%s'\n", line,
                        f->err, *w);
            fail();
        }
}

static void accepted(snap_fx *f, uint64_t size, int line)
{
    mfd_snap_info d;
    mfd_snap_block b[3];
    int rc = fx_decode(f, size, &d, b);
    if (rc) {
        print_error("line %d: refused at stage %d: %s\n", line, rc, f->err);
        fail();
    }
}
#define ACCEPTED(f, size) accepted(f, size, __LINE__)

/* --- layout, encoding, round trip ------------------------------------- */

static void check_layout(const snap_fx *f, uint32_t n)
{
    const mfd_snap_info *h = &f->info;
    assert_int_equal(h->table_offset, MFD_SNAP_HEADER);
    uint64_t prev_end = mfd__snap_meta_len(n);
    for (uint32_t i = 0; i < n; i++) {
        const mfd_snap_block *b = &h->blocks[i];
        assert_int_equal(b->bitmap_offset % 4096, 0);
        assert_true(b->bitmap_offset >= prev_end);
        prev_end = b->bitmap_offset + mfd__snap_bitmap_len(b->length / PS);
    }
    for (uint32_t i = 0; i < n; i++) {
        const mfd_snap_block *b = &h->blocks[i];
        assert_int_equal(b->pages_offset % MIB, 0);
        assert_true(b->pages_offset >= prev_end);
        prev_end = b->pages_offset + b->length;
    }
    assert_true(f->size >= prev_end);
    assert_int_equal(f->size % MIB, 0);
}

/* The bytes at the offsets of PROTOCOL.md 5, little-endian. */
static void check_bytes(const snap_fx *f, uint32_t n)
{
    const uint8_t *m = f->meta;
    static const uint8_t magic[8] = {'M', 'F', 'D', 'S', 'N', 'A', 'P', 0};
    assert_memory_equal(m, magic, 8);
    static const uint8_t ver[4] = {1, 0, 0, 0};
    assert_memory_equal(m + 8, ver, 4);
    static const uint8_t ps[4] = {0x00, 0x10, 0, 0};
    assert_memory_equal(m + 12, ps, 4);
    assert_int_equal(m[16], n);
    assert_int_equal(m[17] | m[18] | m[19], 0);
    assert_int_equal(m[20], 1);
    assert_int_equal(m[21] | m[22] | m[23], 0);
    assert_memory_equal(m + 24, f->info.uuid, 16);
    assert_int_equal(mfd__get_le64(m + 40), 4096);
    assert_int_equal(m[41], 0x10);
    assert_int_equal(mfd__get_le64(m + 48), f->info.dev_offset);
    assert_int_equal(mfd__get_le64(m + 56), f->info.dev_len);
    for (size_t i = 64; i < 4092; i++)
        assert_int_equal(m[i], 0);
    uint32_t c = mfd__crc32c(0, m, 4092);
    c = mfd__crc32c(c, m + 4096, (size_t)288 * n);
    assert_int_equal(mfd__get_le32(m + 4092), c);
    for (uint32_t i = 0; i < n; i++) {
        const uint8_t *e = m + 4096 + 288 * i;
        const mfd_snap_block *b = &f->info.blocks[i];
        size_t len = strlen(NAMES[i]);
        assert_memory_equal(e, NAMES[i], len);
        for (size_t k = len; k < 256; k++)
            assert_int_equal(e[k], 0);
        assert_int_equal(mfd__get_le64(e + 256), b->length);
        assert_int_equal(mfd__get_le64(e + 264), b->bitmap_offset);
        assert_int_equal(mfd__get_le64(e + 272), b->pages_offset);
        assert_int_equal(mfd__get_le64(e + 280), 0);
    }
}

static void roundtrip(uint32_t n, bool with_dev)
{
    snap_fx f;
    fx_init(&f, n);
    check_layout(&f, n);
    if (with_dev) {
        f.info.dev_offset = f.size;
        f.info.dev_len = 12345;
        f.size += 16384;
        fx_encode(&f);
    }
    check_bytes(&f, n);

    mfd_snap_info d;
    mfd_snap_block b[3];
    int rc = fx_decode(&f, f.size, &d, b);
    if (rc)
        print_error("refused: %s\n", f.err);
    assert_int_equal(rc, 0);
    assert_int_equal(d.version, 1);
    assert_int_equal(d.page_size, PS);
    assert_int_equal(d.block_count, n);
    assert_int_equal(d.flags, MFD_SNAP_COMPLETE);
    assert_memory_equal(d.uuid, f.info.uuid, 16);
    assert_int_equal(d.table_offset, 4096);
    assert_int_equal(d.dev_offset, f.info.dev_offset);
    assert_int_equal(d.dev_len, f.info.dev_len);
    for (uint32_t i = 0; i < n; i++) {
        assert_string_equal(d.blocks[i].name, NAMES[i]);
        assert_int_equal(d.blocks[i].length, LENGTHS[i]);
        assert_int_equal(d.blocks[i].bitmap_offset,
                         f.info.blocks[i].bitmap_offset);
        assert_int_equal(d.blocks[i].pages_offset,
                         f.info.blocks[i].pages_offset);
    }
}

static void test_roundtrip_1(void **state)
{
    (void)state;
    roundtrip(1, false);
    roundtrip(1, true);
}

static void test_roundtrip_3(void **state)
{
    (void)state;
    roundtrip(3, false);
    roundtrip(3, true);
}

/* Boundaries that are valid. */
static void test_valid_edges(void **state)
{
    (void)state;
    snap_fx f;

    /* A file larger than the layout (trailing bytes) is fine. */
    fx_init(&f, 3);
    ACCEPTED(&f, f.size + 12345);

    /* Page sizes at both bounds. */
    for (uint32_t ps = PMIN; ps <= PMAX; ps *= 2) {
        fx_init(&f, 1);
        f.info.page_size = ps;
        f.blocks[0].length = 16 * (uint64_t)ps;
        f.size = mfd__snap_layout(&f.info);
        fx_encode(&f);
        ACCEPTED(&f, f.size);
    }

    /* A 255-character name, NUL-terminated by the last byte. */
    fx_init(&f, 1);
    memset(f.blocks[0].name, 'n', 255);
    f.blocks[0].name[255] = 0;
    fx_encode(&f);
    mfd_snap_info d;
    mfd_snap_block b[3];
    assert_int_equal(fx_decode(&f, f.size, &d, b), 0);
    assert_int_equal(strlen(d.blocks[0].name), 255);

    /* Device state right after the header and table, before the bitmaps
     * (they start at the next 4096 boundary). */
    fx_init(&f, 3);
    f.info.dev_offset = mfd__snap_meta_len(3);
    f.info.dev_len = f.blocks[0].bitmap_offset - f.info.dev_offset;
    fx_encode(&f);
    ACCEPTED(&f, f.size);

    /* Device state of exactly 256 MiB at the end. */
    fx_init(&f, 1);
    f.info.dev_offset = f.size;
    f.info.dev_len = MFD_DEVICE_STATE_MAX;
    fx_encode(&f);
    ACCEPTED(&f, f.size + MFD_DEVICE_STATE_MAX);

    /* 1024 blocks: the header alone passes (the table is not here). */
    fx_init(&f, 1);
    mfd__put_le32(f.meta + MFD_SNAP_OFF_BLOCKS, 1024);
    assert_int_equal(mfd__snap_decode_header(f.meta, mfd__snap_meta_len(1024),
                                             PMIN, PMAX, &d, f.err,
                                             sizeof(f.err)),
                     0);
    assert_int_equal(d.block_count, 1024);
}

/* --- header ----------------------------------------------------------- */

static void test_header_short_file(void **state)
{
    (void)state;
    snap_fx f;
    fx_init(&f, 1);
    REFUSED(&f, 4095, 1, "truncated", "4095");
    REFUSED(&f, 0, 1, "truncated");
    REFUSED(&f, 100, 1, "truncated", "header");
}

static void test_header_magic(void **state)
{
    (void)state;
    snap_fx f;
    fx_init(&f, 1);
    f.meta[0] = 'X';
    fx_fix_crc(&f, 1);
    REFUSED(&f, f.size, 1, "magic");

    /* The NUL is part of the magic. */
    fx_init(&f, 1);
    f.meta[7] = '!';
    fx_fix_crc(&f, 1);
    REFUSED(&f, f.size, 1, "magic");
}

static void test_header_version(void **state)
{
    (void)state;
    snap_fx f;
    fx_init(&f, 1);
    f.info.version = 2;
    fx_encode(&f);
    REFUSED(&f, f.size, 1, "version 2");

    fx_init(&f, 1);
    f.info.version = 0;
    fx_encode(&f);
    REFUSED(&f, f.size, 1, "version 0");
}

static void test_header_page_size(void **state)
{
    (void)state;
    static const uint32_t bad[] = {1000, 2048, 131072, 0, 4097, 12288,
                                   0x80000000u};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        snap_fx f;
        char want[32];
        fx_init(&f, 1);
        f.info.page_size = bad[i];
        fx_encode(&f);
        snprintf(want, sizeof(want), "page size %u", bad[i]);
        REFUSED(&f, f.size, 1, want);
    }
}

static void test_header_block_count(void **state)
{
    (void)state;
    static const uint32_t bad[] = {0, 1025, 0xffffffffu};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        snap_fx f;
        fx_init(&f, 1);
        mfd__put_le32(f.meta + MFD_SNAP_OFF_BLOCKS, bad[i]);
        fx_fix_crc(&f, 1);
        REFUSED(&f, f.size, 1, "block_count");
    }
}

static void test_header_table_offset(void **state)
{
    (void)state;
    static const uint64_t bad[] = {0, 4095, 8192, UINT64_MAX};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        snap_fx f;
        fx_init(&f, 1);
        mfd__put_le64(f.meta + MFD_SNAP_OFF_TABLE, bad[i]);
        fx_fix_crc(&f, 1);
        REFUSED(&f, f.size, 1, "table offset");
    }
}

static void test_header_table_past_end(void **state)
{
    (void)state;
    snap_fx f;
    fx_init(&f, 3);
    /* Header complete, the third entry cut by one byte. */
    REFUSED(&f, mfd__snap_meta_len(3) - 1, 1, "truncated", "block table");
    /* Exactly the header, no table. */
    REFUSED(&f, 4096, 1, "truncated", "block table");
    /* The table just fits: the header passes (the table fails later, its
     * regions being outside such a small file). */
    REFUSED(&f, mfd__snap_meta_len(3), 2, "outside");

    /* A block count larger than the file could hold. */
    fx_init(&f, 1);
    mfd__put_le32(f.meta + MFD_SNAP_OFF_BLOCKS, 1024);
    fx_fix_crc(&f, 1);
    REFUSED(&f, mfd__snap_meta_len(1024) - 1, 1, "truncated", "1024 blocks");
}

/* --- header checks made with the table --------------------------------- */

static void test_crc(void **state)
{
    (void)state;
    snap_fx f;
    /* A byte of the table: name padding, then length. */
    fx_init(&f, 3);
    entry(&f, 2)[200] ^= 0x01;
    REFUSED(&f, f.size, 2, "CRC");
    fx_init(&f, 3);
    entry(&f, 1)[256] ^= 0x80;
    REFUSED(&f, f.size, 2, "CRC");
    /* A byte of the header (the UUID: nothing else checks it). */
    fx_init(&f, 1);
    f.meta[30] ^= 0xff;
    REFUSED(&f, f.size, 2, "CRC");
    /* The CRC field itself. */
    fx_init(&f, 1);
    f.meta[4095] ^= 0x10;
    REFUSED(&f, f.size, 2, "CRC");
    /* The CRC covers the whole table: the last byte of the last entry. */
    fx_init(&f, 3);
    entry(&f, 2)[287] ^= 0x04;
    REFUSED(&f, f.size, 2, "CRC");
}

static void test_flags(void **state)
{
    (void)state;
    snap_fx f;
    /* An interrupted save: everything but the flag. */
    fx_init(&f, 3);
    f.info.flags = 0;
    fx_encode(&f);
    REFUSED(&f, f.size, 2, "COMPLETE");

    /* An unknown flag next to COMPLETE. */
    static const uint32_t unknown[] = {2, 0x80000000u, 0xfffffffeu};
    for (size_t i = 0; i < sizeof(unknown) / sizeof(unknown[0]); i++) {
        fx_init(&f, 1);
        f.info.flags = MFD_SNAP_COMPLETE | unknown[i];
        fx_encode(&f);
        REFUSED(&f, f.size, 2, "unknown flags");
    }
    /* Unknown flags without COMPLETE: refused either way. */
    fx_init(&f, 1);
    f.info.flags = 4;
    fx_encode(&f);
    REFUSED(&f, f.size, 2, "COMPLETE");
}

static void test_header_zero_area(void **state)
{
    (void)state;
    static const size_t pos[] = {64, 65, 1000, 4091};
    for (size_t i = 0; i < sizeof(pos) / sizeof(pos[0]); i++) {
        snap_fx f;
        char want[40];
        fx_init(&f, 1);
        f.meta[pos[i]] = 0x01;
        fx_fix_crc(&f, 1);
        snprintf(want, sizeof(want), "header byte %zu", pos[i]);
        REFUSED(&f, f.size, 2, want, "not zero");
    }
}

static void test_device_state(void **state)
{
    (void)state;
    snap_fx f;
    /* Larger than 256 MiB, even in a file big enough to hold it. */
    fx_init(&f, 1);
    f.info.dev_offset = f.size;
    f.info.dev_len = MFD_DEVICE_STATE_MAX + 1;
    fx_encode(&f);
    REFUSED(&f, f.size + MFD_DEVICE_STATE_MAX + 4096, 2, "device state",
            "exceeds");
    fx_init(&f, 1);
    f.info.dev_offset = f.size;
    f.info.dev_len = UINT64_MAX;
    fx_encode(&f);
    REFUSED(&f, UINT64_MAX, 2, "device state", "exceeds");

    /* An offset without a length, and a length without an offset. */
    fx_init(&f, 1);
    f.info.dev_offset = f.size;
    f.info.dev_len = 0;
    fx_encode(&f);
    REFUSED(&f, f.size + 4096, 2, "device state offset");
    fx_init(&f, 1);
    f.info.dev_offset = 0;
    f.info.dev_len = 100;
    fx_encode(&f);
    REFUSED(&f, f.size, 2, "device state offset");

    /* Outside the file: past its end, and wrapping around. */
    fx_init(&f, 1);
    f.info.dev_offset = f.size;
    f.info.dev_len = 4096;
    fx_encode(&f);
    REFUSED(&f, f.size + 4095, 2, "device state", "outside");
    fx_init(&f, 1);
    f.info.dev_offset = UINT64_MAX - 10;
    f.info.dev_len = 100;
    fx_encode(&f);
    REFUSED(&f, f.size, 2, "device state", "outside");

    /* Overlapping the header. */
    fx_init(&f, 1);
    f.info.dev_offset = 4000;
    f.info.dev_len = 200;
    fx_encode(&f);
    REFUSED(&f, f.size, 2, "device state", "overlaps",
            "header and block table");
    /* Overlapping the table (the header's region includes it). */
    fx_init(&f, 3);
    f.info.dev_offset = mfd__snap_meta_len(3) - 1;
    f.info.dev_len = 1;
    fx_encode(&f);
    REFUSED(&f, f.size, 2, "device state", "overlaps",
            "header and block table");
    /* Overlapping a pages region. */
    fx_init(&f, 3);
    f.info.dev_offset = f.blocks[2].pages_offset + 8;
    f.info.dev_len = 8;
    fx_encode(&f);
    REFUSED(&f, f.size, 2, "device state", "overlaps", "pages");
}

/* --- block table entries ---------------------------------------------- */

static void test_entry_names(void **state)
{
    (void)state;
    snap_fx f;

    /* Not NUL-terminated: 256 printable bytes. */
    fx_init(&f, 3);
    memset(entry(&f, 1), 'x', 256);
    fx_fix_crc(&f, 3);
    REFUSED(&f, f.size, 2, "block 1", "name", "NUL");

    /* Empty. */
    fx_init(&f, 3);
    memset(entry(&f, 0), 0, 256);
    fx_fix_crc(&f, 3);
    REFUSED(&f, f.size, 2, "block 0", "name");

    /* Non-printable characters: a control byte, DEL, a high byte. */
    static const uint8_t bad[] = {0x01, 0x0a, 0x1f, 0x7f, 0x80, 0xff};
    for (size_t i = 0; i < sizeof(bad); i++) {
        fx_init(&f, 3);
        entry(&f, 2)[1] = bad[i];
        fx_fix_crc(&f, 3);
        REFUSED(&f, f.size, 2, "block 2", "printable");
    }

    /* Not NUL-padded: a byte after the terminating NUL, near and far. */
    fx_init(&f, 3);
    entry(&f, 0)[strlen(NAMES[0]) + 1] = 'z';
    fx_fix_crc(&f, 3);
    REFUSED(&f, f.size, 2, "pc.ram", "NUL-padded");
    fx_init(&f, 3);
    entry(&f, 1)[255] = 0x01;
    fx_fix_crc(&f, 3);
    REFUSED(&f, f.size, 2, "vga.vram", "NUL-padded");

    /* The same name twice. */
    fx_init(&f, 3);
    snprintf(f.blocks[2].name, MFD_SNAP_NAME, "%s", NAMES[0]);
    fx_encode(&f);
    REFUSED(&f, f.size, 2, "pc.ram", "twice");
}

static void test_entry_length(void **state)
{
    (void)state;
    static const uint64_t bad[] = {0, 1, PS - 1, PS + 1, 3 * MIB + 5 * PS + 512};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        snap_fx f;
        fx_init(&f, 3);
        mfd__put_le64(entry(&f, 0) + 256, bad[i]);
        fx_fix_crc(&f, 3);
        REFUSED(&f, f.size, 2, "pc.ram", "length", "multiple of the page size");
    }
    /* With a larger page size, a 4096 multiple that is not a page multiple. */
    snap_fx f;
    fx_init(&f, 1);
    f.info.page_size = 16384;
    f.blocks[0].length = 64 * 16384;
    f.size = mfd__snap_layout(&f.info);
    f.blocks[0].length += 4096;
    fx_encode(&f);
    REFUSED(&f, f.size, 2, "length", "page size 16384");
}

static void test_entry_reserved(void **state)
{
    (void)state;
    static const size_t pos[] = {280, 287};
    for (size_t i = 0; i < 2; i++) {
        snap_fx f;
        fx_init(&f, 3);
        entry(&f, 1)[pos[i]] = 0x40;
        fx_fix_crc(&f, 3);
        REFUSED(&f, f.size, 2, "vga.vram", "reserved");
    }
}

static void test_entry_alignment(void **state)
{
    (void)state;
    snap_fx f;
    /* Pages offset not 1 MiB aligned (still 4096-aligned, inside). */
    fx_init(&f, 3);
    f.blocks[1].pages_offset += 4096;
    fx_encode(&f);
    REFUSED(&f, f.size, 2, "vga.vram", "pages offset", "1 MiB");
    fx_init(&f, 3);
    f.blocks[0].pages_offset = MIB / 2;
    fx_encode(&f);
    REFUSED(&f, f.size, 2, "pc.ram", "pages offset", "1 MiB");

    /* Bitmap offset not 8-aligned. */
    static const uint64_t off[] = {1, 4, 7};
    for (size_t i = 0; i < 3; i++) {
        fx_init(&f, 3);
        f.blocks[2].bitmap_offset += off[i];
        fx_encode(&f);
        REFUSED(&f, f.size, 2, "rom@0xfffc0000", "bitmap offset", "8-byte");
    }
}

static void test_regions_outside(void **state)
{
    (void)state;
    snap_fx f;

    /* Bitmap at the end of the file, and crossing it. */
    fx_init(&f, 3);
    f.blocks[1].bitmap_offset = f.size;
    fx_encode(&f);
    REFUSED(&f, f.size, 2, "vga.vram", "bitmap region", "outside");
    fx_init(&f, 3);
    f.blocks[0].bitmap_offset = f.size - 8; /* 773 pages: 104 bytes */
    fx_encode(&f);
    REFUSED(&f, f.size, 2, "pc.ram", "bitmap region", "outside");
    /* Far past it: no wrap-around. */
    fx_init(&f, 3);
    f.blocks[2].bitmap_offset = UINT64_MAX - 7;
    fx_encode(&f);
    REFUSED(&f, f.size, 2, "rom@0xfffc0000", "bitmap region", "outside");

    /* Pages region: the file cut short by one page, by one byte. */
    fx_init(&f, 1);
    uint64_t end = f.blocks[0].pages_offset + f.blocks[0].length;
    REFUSED(&f, end - PS, 2, "pc.ram", "pages region", "outside");
    REFUSED(&f, end - 1, 2, "pc.ram", "pages region", "outside");
    ACCEPTED(&f, end); /* exactly the pages: fine */
    /* The middle block of three, moved past the end. */
    fx_init(&f, 3);
    f.blocks[1].pages_offset = f.size;
    fx_encode(&f);
    REFUSED(&f, f.size, 2, "vga.vram", "pages region", "outside");
    /* An offset whose sum with the length wraps around. */
    fx_init(&f, 3);
    f.blocks[0].pages_offset = UINT64_MAX & ~(MIB - 1);
    fx_encode(&f);
    REFUSED(&f, f.size, 2, "pc.ram", "pages region", "outside");
    /* A huge length (a page multiple) at a valid offset. */
    fx_init(&f, 3);
    f.blocks[2].length = UINT64_MAX & ~(uint64_t)(PS - 1);
    fx_encode(&f);
    REFUSED(&f, f.size, 2, "rom@0xfffc0000", "outside");
}

static void test_regions_overlap(void **state)
{
    (void)state;
    snap_fx f;

    /* Two pages regions: the same offset, then a partial overlap. */
    fx_init(&f, 3);
    f.blocks[2].pages_offset = f.blocks[0].pages_offset;
    fx_encode(&f);
    REFUSED(&f, f.size, 2, "pages region", "overlaps", "pages");
    fx_init(&f, 3);
    /* Block 0 is 3 MiB + 20 KiB: its last MiB overlaps block 1's start. */
    f.blocks[1].pages_offset = f.blocks[0].pages_offset + 3 * MIB;
    fx_encode(&f);
    REFUSED(&f, f.size, 2, "pages region", "overlaps", "pc.ram",
            "vga.vram");

    /* A bitmap inside another block's pages region. */
    fx_init(&f, 3);
    f.blocks[0].bitmap_offset = f.blocks[1].pages_offset;
    fx_encode(&f);
    REFUSED(&f, f.size, 2, "bitmap region", "overlaps", "pages region");
    /* A bitmap inside its own pages region. */
    fx_init(&f, 3);
    f.blocks[2].bitmap_offset = f.blocks[2].pages_offset + 64;
    fx_encode(&f);
    REFUSED(&f, f.size, 2, "bitmap region", "overlaps", "pages region");

    /* Two bitmaps at the same offset. */
    fx_init(&f, 3);
    f.blocks[1].bitmap_offset = f.blocks[0].bitmap_offset;
    fx_encode(&f);
    REFUSED(&f, f.size, 2, "bitmap region", "overlaps");
    /* A bitmap over the header and table. */
    fx_init(&f, 3);
    f.blocks[1].bitmap_offset = 4096 + 8;
    fx_encode(&f);
    REFUSED(&f, f.size, 2, "bitmap region", "overlaps",
            "header and block table");
    /* A bitmap over the end of the previous one (block 0 has 104 bytes). */
    fx_init(&f, 3);
    f.blocks[1].bitmap_offset = f.blocks[0].bitmap_offset + 96;
    fx_encode(&f);
    REFUSED(&f, f.size, 2, "bitmap region", "overlaps");
    /* Adjacent but disjoint: fine. */
    fx_init(&f, 3);
    f.blocks[1].bitmap_offset = f.blocks[0].bitmap_offset + 104;
    fx_encode(&f);
    ACCEPTED(&f, f.size);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_roundtrip_1),
        cmocka_unit_test(test_roundtrip_3),
        cmocka_unit_test(test_valid_edges),
        cmocka_unit_test(test_header_short_file),
        cmocka_unit_test(test_header_magic),
        cmocka_unit_test(test_header_version),
        cmocka_unit_test(test_header_page_size),
        cmocka_unit_test(test_header_block_count),
        cmocka_unit_test(test_header_table_offset),
        cmocka_unit_test(test_header_table_past_end),
        cmocka_unit_test(test_crc),
        cmocka_unit_test(test_flags),
        cmocka_unit_test(test_header_zero_area),
        cmocka_unit_test(test_device_state),
        cmocka_unit_test(test_entry_names),
        cmocka_unit_test(test_entry_length),
        cmocka_unit_test(test_entry_reserved),
        cmocka_unit_test(test_entry_alignment),
        cmocka_unit_test(test_regions_outside),
        cmocka_unit_test(test_regions_overlap),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
