/*
 * snap.h - the snapshot file (PROTOCOL.md 5, QEMU's mapped-ram layout):
 * a header, a block table, and per block a page-presence bitmap and the
 * pages at fixed offsets.
 *
 * The layout functions here are pure (bytes in, bytes out) so every
 * validation can be tested without a file. save.c writes snapshots from
 * the source's channel threads; restore.c reads them with N threads.
 *
 * Layout written by this implementation (a reader accepts any layout that
 * validates):
 *   [0, 4096)                header
 *   [4096, 4096 + 288 n)     block table
 *   then per block           bitmap, 4096-aligned
 *   then per block           pages region, 1 MiB-aligned, its length
 *                            rounded up to 1 MiB
 *   then                     device state, 4096-aligned (if any)
 */
#ifndef MFD_FILE_SNAP_H
#define MFD_FILE_SNAP_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define MFD_SNAP_MAGIC "MFDSNAP" /* 8 bytes with its NUL */
#define MFD_SNAP_VERSION 1u
#define MFD_SNAP_HEADER 4096u
#define MFD_SNAP_ENTRY 288u
#define MFD_SNAP_NAME 256u
#define MFD_SNAP_PAGES_ALIGN (UINT64_C(1) << 20)
#define MFD_SNAP_COMPLETE 1u

/* Header field offsets. */
enum {
    MFD_SNAP_OFF_MAGIC = 0,
    MFD_SNAP_OFF_VERSION = 8,
    MFD_SNAP_OFF_PAGE_SIZE = 12,
    MFD_SNAP_OFF_BLOCKS = 16,
    MFD_SNAP_OFF_FLAGS = 20,
    MFD_SNAP_OFF_UUID = 24,
    MFD_SNAP_OFF_TABLE = 40,
    MFD_SNAP_OFF_DEV = 48,
    MFD_SNAP_OFF_DEV_LEN = 56,
    MFD_SNAP_OFF_CRC = 4092,
};

typedef struct {
    char name[MFD_SNAP_NAME]; /* NUL-terminated */
    uint64_t length;
    uint64_t bitmap_offset;
    uint64_t pages_offset;
} mfd_snap_block;

typedef struct {
    uint32_t version;
    uint32_t page_size;
    uint32_t block_count;
    uint32_t flags;
    uint8_t uuid[16];
    uint64_t table_offset;
    uint64_t dev_offset;
    uint64_t dev_len;
    mfd_snap_block *blocks; /* block_count entries */
} mfd_snap_info;

/* A session's open snapshot (s->snap), saving or restoring. */
struct mfd_snap {
    int fd;  /* header, bitmaps, device state; page I/O without direct-io */
    int dfd; /* page I/O with O_DIRECT, or -1 */
    char *path;
    mfd_snap_info info;
    uint64_t data_end; /* save: end of the last pages region */
    uint64_t **map;    /* per block: pages present in the file (atomic) */
    /* Restore: work units of up to pages_per_packet pages, over blocks. */
    uint64_t *unit_first; /* per block: its first unit's index */
    uint64_t units;
    uint64_t next_unit;   /* atomic: the next unit a thread takes */
    uint64_t done_units;  /* atomic: for the progress figure */
};
typedef struct mfd_snap mfd_snap;

/* Bytes of header and block table together. */
static inline size_t mfd__snap_meta_len(uint32_t block_count)
{
    return MFD_SNAP_HEADER + (size_t)MFD_SNAP_ENTRY * block_count;
}

/* Bytes of a block's bitmap. */
static inline uint64_t mfd__snap_bitmap_len(uint64_t pages)
{
    return (pages + 63) / 64 * 8;
}

/*
 * Places the bitmaps and pages regions of h->blocks (names and lengths
 * set) after the header and table; sets table_offset. Returns the end of
 * the last pages region: the file's size before any device state.
 */
uint64_t mfd__snap_layout(mfd_snap_info *h);

/*
 * Encodes header and block table into `meta` (mfd__snap_meta_len bytes),
 * with the CRC over both.
 */
void mfd__snap_encode(uint8_t *meta, const mfd_snap_info *h);

/*
 * Validates the header (the first 4096 bytes of a file of `file_size`
 * bytes) and fills the fixed fields of *h (not the blocks). Checks magic,
 * version, page size (a power of two in [page_min, page_max]), block
 * count, and that the block table lies inside the file. On failure
 * returns -1 with a message in err.
 */
int mfd__snap_decode_header(const uint8_t *hdr, uint64_t file_size,
                            uint32_t page_min, uint32_t page_max,
                            mfd_snap_info *h, char *err, size_t errlen);

/*
 * Validates header and block table together (`meta`, read from
 * h->table_offset on after the header's 4096 bytes; see restore.c): CRC,
 * the COMPLETE flag, every entry (name, length, reserved), every region
 * inside the file and no two regions overlapping. Fills h->blocks, which
 * the caller allocated with h->block_count entries.
 */
int mfd__snap_decode_table(const uint8_t *hdr, const uint8_t *table,
                           uint64_t file_size, mfd_snap_info *h, char *err,
                           size_t errlen);

/*
 * Whole-range positioned I/O: 0 when every byte moved, -1 on error (errno
 * set), 1 when a read met the end of the file first.
 */
int mfd__pwrite_full(int fd, const void *buf, size_t len, uint64_t off);
int mfd__pread_full(int fd, void *buf, size_t len, uint64_t off);

#endif
