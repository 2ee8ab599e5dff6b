/*
 * restore.c - reading a snapshot file into memory with N threads.
 *
 * Everything in the file is validated (snap.c) before anything is sized
 * by it or mapped. The pages are then split into work units of up to
 * pages_per_packet pages; each thread takes the next unit and reads the
 * runs of present pages into place. Absent pages are never touched: in
 * fresh memory they stay unallocated.
 *
 * Placement follows the destination's memory (mfd_block.place): fresh
 * anonymous memory gets a read into the thread's buffer and UFFDIO_COPY
 * (no fault, no zeroing); populated or caller memory a read straight into
 * place; a file of the incoming directory copy_file_range from the
 * snapshot (the kernel moves the bytes; pread + pwrite where it cannot).
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
#include "protocol/wire.h"
#include "ram/bitmap.h"
#include "transport/transport.h"

static int open_snapshot(mfd_session *s, const char *path)
{
    char err[600];
    mfd_snap *f = calloc(1, sizeof(*f));
    if (!f)
        return mfd__fail(s, MFD_ENOMEM, "out of memory");
    f->fd = f->dfd = -1;
    s->snap = f;
    if (!(f->path = strdup(path)))
        return mfd__fail(s, MFD_ENOMEM, "out of memory");
    f->fd = open(path, O_RDONLY | O_CLOEXEC);
    struct stat st;
    if (f->fd < 0 || fstat(f->fd, &st))
        return mfd__fail(s, MFD_ESYS, "snapshot %s: %s", path,
                         strerror(errno));
    if (!S_ISREG(st.st_mode))
        return mfd__fail(s, MFD_EINVAL, "snapshot %s: not a regular file",
                         path);
    uint64_t size = (uint64_t)st.st_size;

    uint8_t hdr[MFD_SNAP_HEADER] = {0};
    mfd_snap_info *h = &f->info;
    if (mfd__pread_full(f->fd, hdr, MFD_MIN(size, sizeof(hdr)), 0) < 0)
        return mfd__fail(s, MFD_ESYS, "snapshot %s: read: %s", path,
                         strerror(errno));
    if (mfd__snap_decode_header(hdr, size, 4096, 65536, h, err, sizeof(err)))
        return mfd__fail(s, MFD_EPROTO, "snapshot %s: %s", path, err);
    /* Bounded by block_count <= 1024 and checked against the size. */
    size_t tlen = (size_t)MFD_SNAP_ENTRY * h->block_count;
    uint8_t *table = malloc(tlen);
    if (!table || !(h->blocks = calloc(h->block_count, sizeof(*h->blocks)))) {
        free(table);
        return mfd__fail(s, MFD_ENOMEM, "out of memory");
    }
    int rc = mfd__pread_full(f->fd, table, tlen, h->table_offset);
    if (rc)
        rc = mfd__fail(s, rc < 0 ? MFD_ESYS : MFD_EPROTO,
                       "snapshot %s: read block table: %s", path,
                       rc < 0 ? strerror(errno) : "truncated");
    else if (mfd__snap_decode_table(hdr, table, size, h, err, sizeof(err)))
        rc = mfd__fail(s, MFD_EPROTO, "snapshot %s: %s", path, err);
    free(table);
    if (rc)
        return rc;

    if (s->direct_io) {
        f->dfd = open(path, O_RDONLY | O_DIRECT | O_CLOEXEC);
        if (f->dfd < 0)
            return mfd__fail(s, errno == EINVAL ? MFD_EUNSUPPORTED : MFD_ESYS,
                             "direct-io: %s: %s", path,
                             errno == EINVAL ? "the file system refuses "
                                               "O_DIRECT (tmpfs, ramfs?)"
                                             : strerror(errno));
    }
    MFD_STAT_SET(s->page_size, h->page_size);
    s->ppp = MFD_PACKET_BYTES / h->page_size;
    memcpy(s->uuid, h->uuid, 16);
    return 0;
}

/* Reads block i's bitmap; bits past its last page make the file invalid. */
static int read_bitmap(mfd_session *s, int i)
{
    mfd_snap *f = s->snap;
    mfd_block *b = &s->blocks[i];
    uint64_t words = (b->pages + 63) / 64;
    uint64_t *map = mfd__bitmap_new(b->pages);
    if (!map)
        return mfd__fail(s, MFD_ENOMEM, "out of memory");
    f->map[i] = map;
    int rc = mfd__pread_full(f->fd, map, words * 8,
                             f->info.blocks[i].bitmap_offset);
    if (rc)
        return mfd__fail(s, rc < 0 ? MFD_ESYS : MFD_EPROTO,
                         "snapshot %s: block '%s': read bitmap: %s", f->path,
                         b->name, rc < 0 ? strerror(errno) : "truncated");
    for (uint64_t w = 0; w < words; w++)
        map[w] = mfd__get_le64((const uint8_t *)&map[w]);
    if (b->pages % 64 && map[words - 1] >> (b->pages % 64))
        return mfd__fail(s, MFD_EPROTO,
                         "snapshot %s: block '%s': bitmap has bits set past "
                         "its %" PRIu64 " pages",
                         f->path, b->name, b->pages);
    return 0;
}

/*
 * The blocks: the caller's (which must match the file's names, lengths
 * and order) or mapped here once the total passed the destination's bound.
 */
static int setup_blocks(mfd_session *s)
{
    mfd_snap *f = s->snap;
    mfd_snap_info *h = &f->info;
    bool have = s->blocks_from_caller;
    uint32_t ps = h->page_size;

    if (have && s->nblocks != (int)h->block_count)
        return mfd__fail(s, MFD_EREFUSED,
                         "snapshot %s has %" PRIu32 " blocks, this "
                         "destination has %d",
                         f->path, h->block_count, s->nblocks);
    uint64_t total = 0, limit = mfd__total_size_limit(s);
    for (uint32_t i = 0; i < h->block_count; i++) {
        total += h->blocks[i].length; /* each fits in the file: no wrap */
        if (total > limit)
            return mfd__fail(s, MFD_EREFUSED,
                             "snapshot %s: total size of blocks exceeds "
                             "%" PRIu64 " bytes (%s)",
                             f->path, limit,
                             s->max_total_size ? "max-total-size"
                             : s->incoming_dir ? "free space in the incoming "
                                                 "directory"
                                               : "physical memory");
    }
    f->map = calloc(h->block_count, sizeof(*f->map));
    f->unit_first = calloc(h->block_count, sizeof(*f->unit_first));
    if (!f->map || !f->unit_first ||
        (!have && !(s->blocks = calloc(h->block_count, sizeof(mfd_block)))))
        return mfd__fail(s, MFD_ENOMEM, "out of memory");

    for (uint32_t i = 0; i < h->block_count; i++) {
        const mfd_snap_block *e = &h->blocks[i];
        mfd_block *b = &s->blocks[i];
        if (have && (strcmp(b->name, e->name) || b->length != e->length))
            return mfd__fail(s, MFD_EREFUSED,
                             "snapshot %s: block %" PRIu32 " '%s' of %" PRIu64
                             " bytes does not match this destination's block "
                             "'%s' of %" PRIu64 " bytes",
                             f->path, i, e->name, e->length, b->name,
                             b->length);
        if (have && f->dfd >= 0 && (uintptr_t)b->host % 4096)
            return mfd__fail(s, MFD_EINVAL,
                             "direct-io: block '%s' is not 4096-byte aligned "
                             "in memory (O_DIRECT needs it)",
                             b->name);
        if (!have) {
            if (!(b->name = strdup(e->name)))
                return mfd__fail(s, MFD_ENOMEM, "out of memory");
            b->name_len = (uint32_t)strlen(e->name);
            b->length = e->length;
            b->fd = -1;
            s->nblocks++;
            MFD_STAT_ADD(s->ram_bytes, e->length);
        }
        b->pages = e->length / ps;
        if (read_bitmap(s, (int)i))
            return -1;
        f->unit_first[i] = f->units;
        f->units += (b->pages + s->ppp - 1) / s->ppp;
    }
    /* Every byte of the file that says what to map is checked: map. */
    for (uint32_t i = 0; i < h->block_count && !have; i++)
        if (mfd__map_block(s, &s->blocks[i]))
            return -1;
    return 0;
}

static int read_device_state(mfd_session *s)
{
    mfd_snap *f = s->snap;
    if (!f->info.dev_len)
        return 0;
    /* At most MFD_DEVICE_STATE_MAX, and inside the file (snap.c). */
    if (!(s->device_state = malloc(f->info.dev_len)))
        return mfd__fail(s, MFD_ENOMEM, "out of memory");
    s->device_state_len = f->info.dev_len;
    int rc = mfd__pread_full(f->fd, s->device_state, f->info.dev_len,
                             f->info.dev_offset);
    if (rc)
        return mfd__fail(s, rc < 0 ? MFD_ESYS : MFD_EPROTO,
                         "snapshot %s: read device state: %s", f->path,
                         rc < 0 ? strerror(errno) : "truncated");
    return 0;
}

/* The block a work unit belongs to: the last whose first unit is <= u. */
static uint32_t unit_block(const mfd_snap *f, uint64_t u)
{
    uint32_t lo = 0, hi = f->info.block_count - 1;
    while (lo < hi) {
        uint32_t mid = lo + (hi - lo + 1) / 2;
        if (f->unit_first[mid] <= u)
            lo = mid;
        else
            hi = mid - 1;
    }
    return lo;
}

/* Copies file range to file range in the kernel; false: not possible. */
static bool copy_range(int in, uint64_t src, int out, uint64_t dst,
                       uint64_t len, int *err)
{
    loff_t i = (loff_t)src, o = (loff_t)dst;
    while (len) {
        ssize_t n = copy_file_range(in, &i, out, &o, len, 0);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0) {
            *err = n == 0 ? 0 : errno;
            return false;
        }
        len -= (uint64_t)n;
    }
    return true;
}

/*
 * Places `len` bytes of present pages at `off` of block `bi`. *kernel_copy
 * goes false once copy_file_range proves impossible between these files.
 */
static int place_run(mfd_recv_chan *ch, uint32_t bi, uint64_t off,
                     uint64_t len, bool *kernel_copy)
{
    mfd_session *s = ch->s;
    mfd_snap *f = s->snap;
    mfd_block *b = &s->blocks[bi];
    uint64_t src = f->info.blocks[bi].pages_offset + off;
    int fd = f->dfd >= 0 ? f->dfd : f->fd;
    int rc;

    if (b->place == MFD_PLACE_READV) {
        rc = mfd__pread_full(fd, b->host + off, len, src);
    } else {
        if (b->place == MFD_PLACE_PWRITE && f->dfd < 0 && *kernel_copy) {
            int e;
            if (copy_range(f->fd, src, b->fd, off, len, &e))
                return 0;
            /* Not between these file systems: read and write instead. */
            if (e && e != EXDEV && e != EINVAL && e != EOPNOTSUPP &&
                e != ENOSYS)
                return mfd__fail(s, MFD_ESYS,
                                 "block '%s': copy from snapshot offset %" PRIu64
                                 ": %s",
                                 b->name, src, strerror(e));
            *kernel_copy = false;
        }
        rc = mfd__pread_full(fd, ch->bounce, len, src);
        if (!rc && b->place == MFD_PLACE_UFFD &&
            mfd__uffd_place(s, b, off, ch->bounce, len))
            return mfd__fail(s, MFD_ESYS,
                             "block '%s': UFFDIO_COPY at 0x%" PRIx64 ": %s",
                             b->name, off, strerror(errno));
        if (!rc && b->place == MFD_PLACE_PWRITE &&
            mfd__pwrite_full(b->fd, ch->bounce, len, off))
            return mfd__fail(s, MFD_ESYS, "block '%s': write at 0x%" PRIx64
                             ": %s",
                             b->name, off, strerror(errno));
    }
    if (rc)
        return mfd__fail(s, rc < 0 ? MFD_ESYS : MFD_EPROTO,
                         "snapshot %s: block '%s': read pages at offset "
                         "%" PRIu64 ": %s",
                         f->path, b->name, src,
                         rc < 0 ? strerror(errno) : "the file is truncated");
    return 0;
}

static void *restore_thread(void *arg)
{
    mfd_recv_chan *ch = arg;
    mfd_session *s = ch->s;
    mfd_snap *f = s->snap;
    uint32_t ps = f->info.page_size;
    bool kernel_copy = true;
    char name[16];
    snprintf(name, sizeof(name), "mfd-restore/%u", ch->id);
    pthread_setname_np(pthread_self(), name);

    while (!mfd__failed(s)) {
        uint64_t u = __atomic_fetch_add(&f->next_unit, 1, __ATOMIC_RELAXED);
        if (u >= f->units)
            break;
        uint32_t bi = unit_block(f, u);
        mfd_block *b = &s->blocks[bi];
        const uint64_t *map = f->map[bi];
        uint64_t p = (u - f->unit_first[bi]) * s->ppp;
        uint64_t end = MFD_MIN(p + s->ppp, b->pages);
        uint64_t present = 0, runs = 0, absent = 0;
        while (p < end) {
            if (!mfd__bitmap_test(map, p)) {
                p++;
                absent++;
                continue;
            }
            uint64_t q = p + 1;
            while (q < end && mfd__bitmap_test(map, q))
                q++;
            if (place_run(ch, bi, p * ps, (q - p) * ps, &kernel_copy))
                return NULL;
            present += q - p;
            runs++;
            p = q;
        }
        MFD_STAT_ADD(ch->st.packets, runs);
        MFD_STAT_ADD(ch->st.normal_pages, present);
        MFD_STAT_ADD(ch->st.zero_pages, absent);
        MFD_STAT_ADD(ch->st.bytes, present * ps);
        uint64_t done = __atomic_add_fetch(&f->done_units, 1,
                                           __ATOMIC_RELAXED);
        MFD_STAT_SET(s->progress_pct, (int)(done * 100 / f->units));
    }
    return NULL;
}

static int run_threads(mfd_session *s)
{
    uint32_t n = (uint32_t)s->channels;
    size_t buf = (size_t)s->ppp * s->snap->info.page_size;
    mfd_recv_chan *rc = calloc(n, sizeof(*rc));
    if (!rc)
        return mfd__fail(s, MFD_ENOMEM, "out of memory");
    /* Published whole, under s->lock, for the stats and a failure. */
    pthread_mutex_lock(&s->lock);
    s->rc = rc;
    s->nchan = n;
    pthread_mutex_unlock(&s->lock);
    for (uint32_t i = 0; i < n; i++) {
        mfd_recv_chan *ch = &rc[i];
        ch->s = s;
        ch->id = i;
        ch->fd = -1;
        void *p;
        if (posix_memalign(&p, 4096, buf))
            return mfd__fail(s, MFD_ENOMEM, "out of memory");
        ch->bounce = p;
    }
    for (uint32_t i = 0; i < n; i++) {
        if (pthread_create(&rc[i].thread, NULL, restore_thread, &rc[i]))
            return mfd__fail(s, MFD_ESYS, "pthread_create failed");
        rc[i].started = true;
    }
    for (uint32_t i = 0; i < n; i++) {
        pthread_join(rc[i].thread, NULL);
        rc[i].started = false;
    }
    return mfd__failed(s) ? -1 : 0;
}

int mfd__restore(mfd_session *s, const char *uri)
{
    char err[512];
    mfd_uri u;
    MFD_STAT_SET(s->t_start, mfd__now_us());
    MFD_STAT_SET(s->status, 1);
    int rc = 0;
    if (mfd__uri_parse(uri, &u, err, sizeof(err)))
        rc = mfd__fail(s, MFD_EURI, "%s", err);
    else if (u.kind != MFD_URI_FILE)
        rc = mfd__fail(s, MFD_EURI,
                       "URI '%s': restore reads a snapshot file (file:PATH)",
                       uri);
    if (!rc)
        rc = open_snapshot(s, u.file);
    if (!rc)
        rc = setup_blocks(s);
    if (!rc)
        rc = read_device_state(s);
    if (!rc) {
        MFD_STAT_SET(s->t_setup, mfd__now_us());
        __atomic_store_n(&s->status, 2, __ATOMIC_RELAXED);
        rc = run_threads(s);
    }
    /*
     * The file's bitmaps say which pages were written: in memory this
     * session mapped, the rest are still the zeros they were mapped as,
     * which mfd_block_digest() then need not read (as after a migration).
     */
    for (int i = 0; !rc && !mfd__failed(s) && i < s->nblocks; i++) {
        mfd_block *b = &s->blocks[i];
        if (b->mapped && !b->receivedmap) {
            b->receivedmap = s->snap->map[i];
            s->snap->map[i] = NULL;
        }
    }
    mfd__session_release_runtime(s);
    mfd__placement_done(s);
    mfd__snap_free(s);
    MFD_STAT_SET(s->t_end, mfd__now_us());
    if (rc || mfd__failed(s))
        return -mfd__error_code(s);
    MFD_STAT_SET(s->progress_pct, 100);
    __atomic_store_n(&s->status, 3, __ATOMIC_RELAXED);
    return 0;
}
