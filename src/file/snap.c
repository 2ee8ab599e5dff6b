/*
 * snap.c - encoding and validation of the snapshot file's header and block
 * table (PROTOCOL.md 5). Every field of a file is hostile until checked
 * here: sizes are compared against the file's size before anything is
 * allocated or read by them.
 */
#include "file/snap.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/util.h"
#include "protocol/crc32c.h"
#include "protocol/wire.h"

#include <unistd.h>

static uint64_t align_up(uint64_t v, uint64_t a)
{
    return (v + a - 1) / a * a;
}

uint64_t mfd__snap_layout(mfd_snap_info *h)
{
    h->table_offset = MFD_SNAP_HEADER;
    uint64_t pos = align_up(mfd__snap_meta_len(h->block_count), 4096);
    for (uint32_t i = 0; i < h->block_count; i++) {
        mfd_snap_block *b = &h->blocks[i];
        b->bitmap_offset = pos;
        pos = align_up(pos + mfd__snap_bitmap_len(b->length / h->page_size),
                       4096);
    }
    pos = align_up(pos, MFD_SNAP_PAGES_ALIGN);
    for (uint32_t i = 0; i < h->block_count; i++) {
        h->blocks[i].pages_offset = pos;
        pos += align_up(h->blocks[i].length, MFD_SNAP_PAGES_ALIGN);
    }
    return pos;
}

static uint32_t meta_crc(const uint8_t *hdr, const uint8_t *table,
                         uint32_t block_count)
{
    uint32_t c = mfd__crc32c(0, hdr, MFD_SNAP_OFF_CRC);
    return mfd__crc32c(c, table, (size_t)MFD_SNAP_ENTRY * block_count);
}

void mfd__snap_encode(uint8_t *meta, const mfd_snap_info *h)
{
    memset(meta, 0, mfd__snap_meta_len(h->block_count));
    memcpy(meta + MFD_SNAP_OFF_MAGIC, MFD_SNAP_MAGIC, 8);
    mfd__put_le32(meta + MFD_SNAP_OFF_VERSION, h->version);
    mfd__put_le32(meta + MFD_SNAP_OFF_PAGE_SIZE, h->page_size);
    mfd__put_le32(meta + MFD_SNAP_OFF_BLOCKS, h->block_count);
    mfd__put_le32(meta + MFD_SNAP_OFF_FLAGS, h->flags);
    memcpy(meta + MFD_SNAP_OFF_UUID, h->uuid, 16);
    mfd__put_le64(meta + MFD_SNAP_OFF_TABLE, h->table_offset);
    mfd__put_le64(meta + MFD_SNAP_OFF_DEV, h->dev_offset);
    mfd__put_le64(meta + MFD_SNAP_OFF_DEV_LEN, h->dev_len);
    uint8_t *table = meta + MFD_SNAP_HEADER;
    for (uint32_t i = 0; i < h->block_count; i++) {
        uint8_t *e = table + (size_t)MFD_SNAP_ENTRY * i;
        const mfd_snap_block *b = &h->blocks[i];
        memcpy(e, b->name, strnlen(b->name, MFD_SNAP_NAME - 1));
        mfd__put_le64(e + 256, b->length);
        mfd__put_le64(e + 264, b->bitmap_offset);
        mfd__put_le64(e + 272, b->pages_offset);
    }
    mfd__put_le32(meta + MFD_SNAP_OFF_CRC,
                  meta_crc(meta, table, h->block_count));
}

#define SNAP_FAIL(...)                                                         \
    do {                                                                       \
        snprintf(err, errlen, __VA_ARGS__);                                    \
        return -1;                                                             \
    } while (0)

int mfd__snap_decode_header(const uint8_t *hdr, uint64_t file_size,
                            uint32_t page_min, uint32_t page_max,
                            mfd_snap_info *h, char *err, size_t errlen)
{
    memset(h, 0, sizeof(*h));
    if (file_size < MFD_SNAP_HEADER)
        SNAP_FAIL("truncated file: %" PRIu64 " bytes, shorter than the "
                  "%u-byte header",
                  file_size, MFD_SNAP_HEADER);
    if (memcmp(hdr + MFD_SNAP_OFF_MAGIC, MFD_SNAP_MAGIC, 8))
        SNAP_FAIL("not a multifd snapshot (bad magic)");
    h->version = mfd__get_le32(hdr + MFD_SNAP_OFF_VERSION);
    if (h->version != MFD_SNAP_VERSION)
        SNAP_FAIL("unknown snapshot version %" PRIu32 " (this build reads "
                  "version %u)",
                  h->version, MFD_SNAP_VERSION);
    h->page_size = mfd__get_le32(hdr + MFD_SNAP_OFF_PAGE_SIZE);
    if (h->page_size < page_min || h->page_size > page_max ||
        (h->page_size & (h->page_size - 1)))
        SNAP_FAIL("page size %" PRIu32 " cannot be used here (a power of "
                  "two from %" PRIu32 " to %" PRIu32 ")",
                  h->page_size, page_min, page_max);
    h->block_count = mfd__get_le32(hdr + MFD_SNAP_OFF_BLOCKS);
    if (h->block_count < 1 || h->block_count > MFD_MAX_BLOCKS)
        SNAP_FAIL("block_count %" PRIu32 " out of range (1..%u)",
                  h->block_count, MFD_MAX_BLOCKS);
    h->flags = mfd__get_le32(hdr + MFD_SNAP_OFF_FLAGS);
    memcpy(h->uuid, hdr + MFD_SNAP_OFF_UUID, 16);
    h->table_offset = mfd__get_le64(hdr + MFD_SNAP_OFF_TABLE);
    h->dev_offset = mfd__get_le64(hdr + MFD_SNAP_OFF_DEV);
    h->dev_len = mfd__get_le64(hdr + MFD_SNAP_OFF_DEV_LEN);
    if (h->table_offset != MFD_SNAP_HEADER)
        SNAP_FAIL("block table offset %" PRIu64 " (must be %u)",
                  h->table_offset, MFD_SNAP_HEADER);
    uint64_t meta = mfd__snap_meta_len(h->block_count);
    if (meta > file_size)
        SNAP_FAIL("truncated file: %" PRIu64 " bytes, the block table of "
                  "%" PRIu32 " blocks ends at %" PRIu64,
                  file_size, h->block_count, meta);
    return 0;
}

/* A region of the file, for the overlap check. */
typedef struct {
    uint64_t start, end;
    const char *what;
    const char *block;
} region;

static int region_cmp(const void *a, const void *b)
{
    const region *x = a, *y = b;
    return x->start < y->start ? -1 : x->start > y->start;
}

/* Checks [start, start + len) lies in the file; adds it to r. */
static int add_region(region *r, uint32_t *n, uint64_t start, uint64_t len,
                      uint64_t file_size, const char *what, const char *block,
                      char *err, size_t errlen)
{
    if (start > file_size || len > file_size - start)
        SNAP_FAIL("%s%s%s%s region [%" PRIu64 ", +%" PRIu64 ") lies outside "
                  "the file (%" PRIu64 " bytes)",
                  block ? "block '" : "", block ? block : "",
                  block ? "': " : "", what, start, len, file_size);
    if (len)
        r[(*n)++] = (region){start, start + len, what, block};
    return 0;
}

int mfd__snap_decode_table(const uint8_t *hdr, const uint8_t *table,
                           uint64_t file_size, mfd_snap_info *h, char *err,
                           size_t errlen)
{
    uint32_t want = mfd__get_le32(hdr + MFD_SNAP_OFF_CRC);
    uint32_t got = meta_crc(hdr, table, h->block_count);
    if (want != got)
        SNAP_FAIL("header CRC mismatch (file says 0x%08" PRIx32 ", header "
                  "and block table give 0x%08" PRIx32 ")",
                  want, got);
    if (!(h->flags & MFD_SNAP_COMPLETE))
        SNAP_FAIL("no COMPLETE flag: the save that wrote this file did not "
                  "finish");
    if (h->flags & ~MFD_SNAP_COMPLETE)
        SNAP_FAIL("unknown flags 0x%" PRIx32, h->flags & ~MFD_SNAP_COMPLETE);
    for (size_t i = 64; i < MFD_SNAP_OFF_CRC; i++)
        if (hdr[i])
            SNAP_FAIL("header byte %zu is not zero", i);
    if (h->dev_len > MFD_DEVICE_STATE_MAX)
        SNAP_FAIL("device state of %" PRIu64 " bytes exceeds %" PRIu64,
                  h->dev_len, MFD_DEVICE_STATE_MAX);
    if (!h->dev_len != !h->dev_offset)
        SNAP_FAIL("device state offset %" PRIu64 " with length %" PRIu64,
                  h->dev_offset, h->dev_len);

    /* Header and table, a bitmap and pages per block, the device state. */
    region *r = calloc(2 + 2 * (size_t)h->block_count, sizeof(*r));
    if (!r)
        SNAP_FAIL("out of memory");
    uint32_t n = 0;
    int rc = add_region(r, &n, 0, mfd__snap_meta_len(h->block_count),
                        file_size, "header and block table", NULL, err,
                        errlen);
    if (!rc)
        rc = add_region(r, &n, h->dev_offset, h->dev_len, file_size,
                        "device state", NULL, err, errlen);
    for (uint32_t i = 0; i < h->block_count && !rc; i++) {
        const uint8_t *e = table + (size_t)MFD_SNAP_ENTRY * i;
        mfd_snap_block *b = &h->blocks[i];
        size_t nlen = strnlen((const char *)e, MFD_SNAP_NAME);
        rc = -1;
        if (nlen == MFD_SNAP_NAME || !mfd__block_name_valid((const char *)e,
                                                            nlen)) {
            snprintf(err, errlen, "block %" PRIu32 ": name is not 1..255 "
                     "printable ASCII characters followed by NUL", i);
            break;
        }
        memcpy(b->name, e, nlen);
        b->name[nlen] = 0;
        size_t k = nlen;
        while (k < MFD_SNAP_NAME && !e[k])
            k++;
        b->length = mfd__get_le64(e + 256);
        b->bitmap_offset = mfd__get_le64(e + 264);
        b->pages_offset = mfd__get_le64(e + 272);
        uint64_t reserved = mfd__get_le64(e + 280);
        if (k != MFD_SNAP_NAME) {
            snprintf(err, errlen, "block '%s': name is not NUL-padded",
                     b->name);
            break;
        }
        if (reserved) {
            snprintf(err, errlen, "block '%s': reserved field is not zero",
                     b->name);
            break;
        }
        if (!b->length || b->length % h->page_size) {
            snprintf(err, errlen, "block '%s': length %" PRIu64 " is not a "
                     "non-zero multiple of the page size %" PRIu32,
                     b->name, b->length, h->page_size);
            break;
        }
        if (b->pages_offset % MFD_SNAP_PAGES_ALIGN) {
            snprintf(err, errlen, "block '%s': pages offset %" PRIu64
                     " is not a multiple of 1 MiB",
                     b->name, b->pages_offset);
            break;
        }
        if (b->bitmap_offset % 8) {
            snprintf(err, errlen, "block '%s': bitmap offset %" PRIu64
                     " is not 8-byte aligned",
                     b->name, b->bitmap_offset);
            break;
        }
        bool dup = false;
        for (uint32_t j = 0; j < i && !dup; j++)
            dup = !strcmp(h->blocks[j].name, b->name);
        if (dup) {
            snprintf(err, errlen, "block '%s': name appears twice", b->name);
            break;
        }
        rc = add_region(r, &n, b->bitmap_offset,
                        mfd__snap_bitmap_len(b->length / h->page_size),
                        file_size, "bitmap", b->name, err, errlen);
        if (!rc)
            rc = add_region(r, &n, b->pages_offset, b->length, file_size,
                            "pages", b->name, err, errlen);
    }
    if (!rc) {
        qsort(r, n, sizeof(*r), region_cmp);
        for (uint32_t i = 1; i < n && !rc; i++) {
            if (r[i].start >= r[i - 1].end)
                continue;
            snprintf(err, errlen,
                     "%s%s%s%s region [%" PRIu64 ", %" PRIu64 ") overlaps "
                     "%s%s%s%s region [%" PRIu64 ", %" PRIu64 ")",
                     r[i].block ? "block '" : "", r[i].block ? r[i].block : "",
                     r[i].block ? "' " : "", r[i].what, r[i].start, r[i].end,
                     r[i - 1].block ? "block '" : "",
                     r[i - 1].block ? r[i - 1].block : "",
                     r[i - 1].block ? "' " : "", r[i - 1].what,
                     r[i - 1].start, r[i - 1].end);
            rc = -1;
        }
    }
    free(r);
    return rc;
}

int mfd__pwrite_full(int fd, const void *buf, size_t len, uint64_t off)
{
    const uint8_t *p = buf;
    while (len) {
        ssize_t n = pwrite(fd, p, len, (off_t)off);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0) {
            if (n == 0)
                errno = EIO;
            return -1;
        }
        p += n;
        off += (uint64_t)n;
        len -= (size_t)n;
    }
    return 0;
}

int mfd__pread_full(int fd, void *buf, size_t len, uint64_t off)
{
    uint8_t *p = buf;
    while (len) {
        ssize_t n = pread(fd, p, len, (off_t)off);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0)
            return -1;
        if (n == 0)
            return 1;
        p += n;
        off += (uint64_t)n;
        len -= (size_t)n;
    }
    return 0;
}
