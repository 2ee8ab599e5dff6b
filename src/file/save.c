/*
 * save.c - writing a snapshot file from the source's channel threads.
 *
 * The file is created at the start with its final layout: header and
 * block table (without COMPLETE), and its size set to the end of the last
 * pages region, so every page slot is a hole until written. A save that
 * dies midway leaves a file that restore refuses (no COMPLETE flag).
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common/util.h"
#include "file/file.h"
#include "file/snap.h"
#include "ram/bitmap.h"

/* The I/O error of a snapshot write, with what was being written. */
static int write_failed(mfd_session *s, const char *what, uint64_t off)
{
    int e = errno;
    return mfd__fail(s, MFD_ESYS,
                     "snapshot %s: write of %s at offset %" PRIu64 ": %s",
                     s->snap->path, what, off, strerror(e));
}

static int open_direct(mfd_session *s, mfd_snap *f)
{
    for (int i = 0; i < s->nblocks; i++)
        if ((uintptr_t)s->blocks[i].host % 4096)
            return mfd__fail(s, MFD_EINVAL,
                             "direct-io: block '%s' is not 4096-byte "
                             "aligned in memory (O_DIRECT needs it)",
                             s->blocks[i].name);
    f->dfd = open(f->path, O_RDWR | O_DIRECT | O_CLOEXEC);
    if (f->dfd >= 0)
        return 0;
    if (errno == EINVAL)
        return mfd__fail(s, MFD_EUNSUPPORTED,
                         "direct-io: the file system of %s refuses O_DIRECT "
                         "(tmpfs, ramfs?); save without direct-io or to "
                         "another file system",
                         f->path);
    return mfd__fail(s, MFD_ESYS, "direct-io: open %s: %s", f->path,
                     strerror(errno));
}

int mfd__snap_create(mfd_session *s, const char *path)
{
    mfd_snap *f = calloc(1, sizeof(*f));
    if (!f)
        return mfd__fail(s, MFD_ENOMEM, "out of memory");
    f->fd = f->dfd = -1;
    s->snap = f;
    f->info.version = MFD_SNAP_VERSION;
    f->info.page_size = (uint32_t)s->page_size;
    f->info.block_count = (uint32_t)s->nblocks;
    memcpy(f->info.uuid, s->uuid, 16);
    f->info.blocks = calloc((size_t)s->nblocks, sizeof(mfd_snap_block));
    f->map = calloc((size_t)s->nblocks, sizeof(uint64_t *));
    f->path = strdup(path);
    if (!f->info.blocks || !f->map || !f->path)
        return mfd__fail(s, MFD_ENOMEM, "out of memory");
    for (int i = 0; i < s->nblocks; i++) {
        mfd_block *b = &s->blocks[i];
        snprintf(f->info.blocks[i].name, MFD_SNAP_NAME, "%s", b->name);
        f->info.blocks[i].length = b->length;
        if (!(f->map[i] = mfd__bitmap_new(b->pages)))
            return mfd__fail(s, MFD_ENOMEM, "out of memory");
    }
    f->data_end = mfd__snap_layout(&f->info);

    f->fd = open(path, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (f->fd < 0)
        return mfd__fail(s, MFD_ESYS, "snapshot %s: create: %s", path,
                         strerror(errno));
    struct stat st;
    if (fstat(f->fd, &st) == 0 && !S_ISREG(st.st_mode))
        return mfd__fail(s, MFD_EINVAL, "snapshot %s: not a regular file",
                         path);
    if (s->direct_io && open_direct(s, f))
        return -1;

    size_t mlen = mfd__snap_meta_len(f->info.block_count);
    uint8_t *meta = malloc(mlen);
    if (!meta)
        return mfd__fail(s, MFD_ENOMEM, "out of memory");
    mfd__snap_encode(meta, &f->info);
    int rc = mfd__pwrite_full(f->fd, meta, mlen, 0);
    free(meta);
    if (rc)
        return write_failed(s, "the header", 0);
    if (ftruncate(f->fd, (off_t)f->data_end))
        return mfd__fail(s, MFD_ESYS,
                         "snapshot %s: size the file to %" PRIu64 ": %s",
                         path, f->data_end, strerror(errno));
    return 0;
}

int mfd__snap_write_batch(mfd_send_chan *ch, const mfd_batch *b,
                          uint32_t normal)
{
    mfd_session *s = ch->s;
    mfd_snap *f = s->snap;
    mfd_block *blk = &s->blocks[b->block];
    uint64_t *map = f->map[b->block];
    uint64_t base = f->info.blocks[b->block].pages_offset;
    uint32_t ps = (uint32_t)s->page_size;
    int fd = f->dfd >= 0 ? f->dfd : f->fd;

    /* Normal pages keep their order: adjacent ones are one write. */
    for (uint32_t i = 0, j; i < normal; i = j) {
        uint64_t off = b->offset[i], len = ps;
        for (j = i + 1; j < normal && b->offset[j] == off + len; j++)
            len += ps;
        if (mfd__pwrite_full(fd, blk->host + off, len, base + off))
            return write_failed(s, "pages", base + off);
        mfd__bitmap_set_range_atomic(map, off / ps, len / ps);
    }
    /*
     * A zero page is not in the file. One saved in an earlier pass, since
     * zeroed, loses its bit and its slot becomes a hole again.
     */
    for (uint32_t i = normal; i < b->num; i++)
        if (mfd__bitmap_test_and_clear_atomic(map, b->offset[i] / ps))
            fallocate(f->fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE,
                      (off_t)(base + b->offset[i]), ps);
    MFD_STAT_ADD(ch->st.packets, 1);
    MFD_STAT_ADD(ch->st.normal_pages, normal);
    MFD_STAT_ADD(ch->st.zero_pages, b->num - normal);
    MFD_STAT_ADD(ch->st.bytes, (uint64_t)normal * ps);
    MFD_STAT_ADD(s->data_packets, 1);
    return 0;
}

int mfd__snap_zero_page(mfd_session *s, uint32_t block, uint64_t off)
{
    mfd_snap *f = s->snap;
    uint32_t ps = (uint32_t)s->page_size;
    if (mfd__bitmap_test_and_clear_atomic(f->map[block], off / ps))
        fallocate(f->fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE,
                  (off_t)(f->info.blocks[block].pages_offset + off), ps);
    MFD_STAT_ADD(s->legacy_zero_pages, 1);
    return 0;
}

static int sync_file(mfd_session *s, const char *what)
{
    if (fdatasync(s->snap->fd) == 0)
        return 0;
    return mfd__fail(s, MFD_ESYS,
                     "snapshot %s: fdatasync (%s): %s", s->snap->path, what,
                     strerror(errno));
}

int mfd__snap_finish(mfd_session *s)
{
    mfd_snap *f = s->snap;
    mfd_snap_info *h = &f->info;
    if (s->device_state_len) {
        h->dev_offset = f->data_end;
        h->dev_len = s->device_state_len;
        if (mfd__pwrite_full(f->fd, s->device_state, h->dev_len,
                             h->dev_offset))
            return write_failed(s, "the device state", h->dev_offset);
    }
    for (int i = 0; i < s->nblocks; i++) {
        uint64_t words = (s->blocks[i].pages + 63) / 64;
        uint8_t *le = malloc(words * 8);
        if (!le)
            return mfd__fail(s, MFD_ENOMEM, "out of memory");
        for (uint64_t w = 0; w < words; w++)
            mfd__put_le64(le + 8 * w, f->map[i][w]);
        int rc = mfd__pwrite_full(f->fd, le, words * 8,
                                  h->blocks[i].bitmap_offset);
        free(le);
        if (rc)
            return write_failed(s, "a bitmap", h->blocks[i].bitmap_offset);
    }
    size_t mlen = mfd__snap_meta_len(h->block_count);
    uint8_t *meta = malloc(mlen);
    if (!meta)
        return mfd__fail(s, MFD_ENOMEM, "out of memory");
    /* Everything but the flag, durable; then the flag, durable. */
    h->flags = 0;
    mfd__snap_encode(meta, h);
    int rc = mfd__pwrite_full(f->fd, meta, mlen, 0)
                 ? write_failed(s, "the header", 0)
                 : sync_file(s, "data, bitmaps and header");
    if (!rc) {
        h->flags = MFD_SNAP_COMPLETE;
        mfd__snap_encode(meta, h);
        rc = mfd__pwrite_full(f->fd, meta, MFD_SNAP_HEADER, 0)
                 ? write_failed(s, "the COMPLETE flag", 0)
                 : sync_file(s, "COMPLETE flag");
    }
    free(meta);
    return rc;
}

void mfd__snap_free(mfd_session *s)
{
    mfd_snap *f = s->snap;
    if (!f)
        return;
    if (f->fd >= 0)
        close(f->fd);
    if (f->dfd >= 0)
        close(f->dfd);
    for (uint32_t i = 0; f->map && i < f->info.block_count; i++)
        free(f->map[i]);
    free(f->map);
    free(f->unit_first);
    free(f->info.blocks);
    free(f->path);
    free(f);
    s->snap = NULL;
}
