/*
 * dirty.c - the dirty page trackers behind dirty.h.
 *
 * manual: the embedder marks written pages (mfd_mark_dirty sets bits of the
 * block's `marked` bitmap atomically, from any thread) and may hand a whole
 * bitmap at each sync (the dirty_log callback, the shape of KVM's dirty
 * log). A sync moves `marked` into `dirty` a word at a time with an atomic
 * exchange, so a write marked during the sync is either taken now or left
 * for the next one, never lost.
 *
 * uffd-wp: the blocks are registered with a userfaultfd in write-protect
 * mode with UFFD_FEATURE_WP_ASYNC: a write to a protected page is resolved
 * by the kernel itself (no fault message, no thread to serve it), which
 * only drops the protection of that page. PAGEMAP_SCAN with
 * PM_SCAN_WP_MATCHING then returns the written pages and protects them
 * again, in one call per block. UFFD_FEATURE_WP_UNPOPULATED protects pages
 * that were never touched too, so a first write to them is seen as well.
 */
#include "ram/dirty.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <linux/userfaultfd.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "common/util.h"
#include "core/session.h"
#include "ram/bitmap.h"
#include "ram/pagemap.h"

/* Newer than the installed kernel headers (Linux 6.4 and 6.7). */
#ifndef UFFD_FEATURE_WP_HUGETLBFS_SHMEM
#define UFFD_FEATURE_WP_HUGETLBFS_SHMEM (1 << 12)
#endif
#ifndef UFFD_FEATURE_WP_UNPOPULATED
#define UFFD_FEATURE_WP_UNPOPULATED (1 << 13)
#endif
#ifndef UFFD_FEATURE_WP_ASYNC
#define UFFD_FEATURE_WP_ASYNC (1 << 15)
#endif

#define SCAN_REGIONS 1024

typedef struct mfd_tracker_ops {
    const char *name;
    int (*start)(mfd_session *s);
    /* ORs the pages written since the last sync into b->dirty. */
    int (*sync_block)(mfd_session *s, int index);
    void (*stop)(mfd_session *s);
} mfd_tracker_ops;

struct mfd_tracker {
    const mfd_tracker_ops *ops;
    int uffd;
    int pagemap_fd;
    struct page_region *vec;
};

/* ---- manual ------------------------------------------------------------ */

static int manual_start(mfd_session *s)
{
    for (int i = 0; i < s->nblocks; i++) {
        mfd_block *b = &s->blocks[i];
        if (b->marked)
            continue;
        uint64_t *m = mfd__bitmap_new(b->pages);
        if (!m)
            return mfd__fail(s, MFD_ENOMEM, "out of memory");
        /* mfd_mark_dirty may already run on the writers' threads. */
        __atomic_store_n(&b->marked, m, __ATOMIC_RELEASE);
    }
    return 0;
}

static int manual_sync_block(mfd_session *s, int index)
{
    mfd_block *b = &s->blocks[index];
    uint64_t words = (b->pages + 63) / 64;
    for (uint64_t w = 0; w < words; w++)
        if (__atomic_load_n(&b->marked[w], __ATOMIC_RELAXED))
            b->dirty[w] |=
                __atomic_exchange_n(&b->marked[w], 0, __ATOMIC_ACQ_REL);
    if (s->live.dirty_log) {
        s->live.dirty_log(s->live_opaque, index, b->dirty, b->pages);
        /* Bits past the last page are not pages. */
        if (b->pages % 64)
            b->dirty[words - 1] &= (UINT64_C(1) << (b->pages % 64)) - 1;
    }
    return 0;
}

static void manual_stop(mfd_session *s)
{
    (void)s; /* `marked` stays until the session is freed: writers may mark */
}

static const mfd_tracker_ops manual_ops = {
    .name = "manual",
    .start = manual_start,
    .sync_block = manual_sync_block,
    .stop = manual_stop,
};

/* ---- uffd-wp ----------------------------------------------------------- */

static int uffd_wp_start(mfd_session *s)
{
    struct mfd_tracker *t = s->tracker;
    long sys_ps = sysconf(_SC_PAGESIZE);
    for (int i = 0; i < s->nblocks; i++)
        if ((uintptr_t)s->blocks[i].host % (uintptr_t)sys_ps)
            return mfd__fail(s, MFD_EINVAL,
                             "dirty tracker uffd-wp: block '%s' does not "
                             "start on a %ld-byte page boundary",
                             s->blocks[i].name, sys_ps);

    t->uffd = (int)syscall(SYS_userfaultfd, O_CLOEXEC | O_NONBLOCK);
    if (t->uffd < 0)
        return mfd__fail(s, MFD_ESYS,
                         "dirty tracker uffd-wp: userfaultfd: %s%s",
                         strerror(errno),
                         errno == EPERM ? " (vm.unprivileged_userfaultfd is "
                                          "0 and the process lacks "
                                          "CAP_SYS_PTRACE)"
                                        : "");
    /* What the kernel offers decides what to ask for (one API call only). */
    int probe = (int)syscall(SYS_userfaultfd, O_CLOEXEC | O_NONBLOCK);
    struct uffdio_api api = {.api = UFFD_API};
    uint64_t have = 0;
    if (probe >= 0 && ioctl(probe, UFFDIO_API, &api) == 0)
        have = api.features;
    if (probe >= 0)
        close(probe);
    static const struct {
        uint64_t bit;
        const char *name;
    } need[] = {
        {UFFD_FEATURE_WP_ASYNC, "UFFD_FEATURE_WP_ASYNC (Linux 6.7)"},
        {UFFD_FEATURE_WP_UNPOPULATED, "UFFD_FEATURE_WP_UNPOPULATED (Linux 6.5)"},
    };
    for (size_t i = 0; i < MFD_ARRAY_SIZE(need); i++)
        if (!(have & need[i].bit))
            return mfd__fail(s, MFD_ESYS,
                             "dirty tracker uffd-wp: this kernel lacks %s; "
                             "use the manual tracker",
                             need[i].name);
    api.api = UFFD_API;
    api.features = UFFD_FEATURE_WP_ASYNC | UFFD_FEATURE_WP_UNPOPULATED |
                   (have & UFFD_FEATURE_WP_HUGETLBFS_SHMEM);
    if (ioctl(t->uffd, UFFDIO_API, &api))
        return mfd__fail(s, MFD_ESYS, "dirty tracker uffd-wp: UFFDIO_API: %s",
                         strerror(errno));

    t->pagemap_fd = open("/proc/self/pagemap", O_RDONLY | O_CLOEXEC);
    if (t->pagemap_fd < 0)
        return mfd__fail(s, MFD_ESYS,
                         "dirty tracker uffd-wp: /proc/self/pagemap: %s",
                         strerror(errno));
    if (!(t->vec = calloc(SCAN_REGIONS, sizeof(*t->vec))))
        return mfd__fail(s, MFD_ENOMEM, "out of memory");
    /* An empty scan tells whether the kernel has PAGEMAP_SCAN at all. */
    struct pm_scan_arg a = {.size = sizeof(a),
                            .start = (uintptr_t)s->blocks[0].host,
                            .end = (uintptr_t)s->blocks[0].host,
                            .vec = (uintptr_t)t->vec,
                            .vec_len = SCAN_REGIONS};
    if (ioctl(t->pagemap_fd, PAGEMAP_SCAN, &a) < 0 && errno == ENOTTY)
        return mfd__fail(s, MFD_ESYS,
                         "dirty tracker uffd-wp: this kernel lacks the "
                         "PAGEMAP_SCAN ioctl (Linux 6.7); use the manual "
                         "tracker");

    for (int i = 0; i < s->nblocks; i++) {
        mfd_block *b = &s->blocks[i];
        uint64_t len = (b->length + (uint64_t)sys_ps - 1) &
                       ~((uint64_t)sys_ps - 1);
        struct uffdio_register r = {
            .range = {.start = (uintptr_t)b->host, .len = len},
            .mode = UFFDIO_REGISTER_MODE_WP};
        if (ioctl(t->uffd, UFFDIO_REGISTER, &r))
            return mfd__fail(s, MFD_ESYS,
                             "dirty tracker uffd-wp: block '%s': cannot "
                             "write-protect this memory (%s); it must be a "
                             "writable private or shared mapping%s",
                             b->name, strerror(errno),
                             (have & UFFD_FEATURE_WP_HUGETLBFS_SHMEM)
                                 ? ""
                                 : " (this kernel: anonymous memory only)");
        struct uffdio_writeprotect wp = {
            .range = {.start = (uintptr_t)b->host, .len = len},
            .mode = UFFDIO_WRITEPROTECT_MODE_WP};
        if (ioctl(t->uffd, UFFDIO_WRITEPROTECT, &wp))
            return mfd__fail(s, MFD_ESYS,
                             "dirty tracker uffd-wp: block '%s': "
                             "UFFDIO_WRITEPROTECT: %s",
                             b->name, strerror(errno));
    }
    return 0;
}

static int uffd_wp_sync_block(mfd_session *s, int index)
{
    struct mfd_tracker *t = s->tracker;
    mfd_block *b = &s->blocks[index];
    uint64_t ps = (uint64_t)s->page_size;
    uintptr_t base = (uintptr_t)b->host, end = base + b->length;
    struct pm_scan_arg a = {.size = sizeof(a),
                            .flags = PM_SCAN_WP_MATCHING |
                                     PM_SCAN_CHECK_WPASYNC,
                            .start = base,
                            .end = end,
                            .vec = (uintptr_t)t->vec,
                            .vec_len = SCAN_REGIONS,
                            .category_mask = PAGE_IS_WRITTEN,
                            .return_mask = PAGE_IS_WRITTEN};
    while (a.start < end) {
        int n = ioctl(t->pagemap_fd, PAGEMAP_SCAN, &a);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0)
            return mfd__fail(s, MFD_ESYS,
                             "dirty tracker uffd-wp: block '%s': "
                             "PAGEMAP_SCAN: %s",
                             b->name, strerror(errno));
        for (int i = 0; i < n; i++) {
            uint64_t first = (t->vec[i].start - base) / ps;
            uint64_t last = (t->vec[i].end - base + ps - 1) / ps;
            for (uint64_t p = first; p < last && p < b->pages; p++)
                mfd__bitmap_set(b->dirty, p);
        }
        if (a.walk_end <= a.start)
            break;
        a.start = a.walk_end;
    }
    return 0;
}

static void uffd_wp_stop(mfd_session *s)
{
    struct mfd_tracker *t = s->tracker;
    long sys_ps = sysconf(_SC_PAGESIZE);
    if (t->uffd >= 0) {
        /* Unregistering drops the protection of every page. */
        for (int i = 0; i < s->nblocks; i++) {
            mfd_block *b = &s->blocks[i];
            struct uffdio_range r = {
                .start = (uintptr_t)b->host,
                .len = (b->length + (uint64_t)sys_ps - 1) &
                       ~((uint64_t)sys_ps - 1)};
            ioctl(t->uffd, UFFDIO_UNREGISTER, &r);
        }
        close(t->uffd);
    }
    if (t->pagemap_fd >= 0)
        close(t->pagemap_fd);
    free(t->vec);
    t->uffd = t->pagemap_fd = -1;
    t->vec = NULL;
}

static const mfd_tracker_ops uffd_wp_ops = {
    .name = "uffd-wp",
    .start = uffd_wp_start,
    .sync_block = uffd_wp_sync_block,
    .stop = uffd_wp_stop,
};

/* ---- the interface ------------------------------------------------------ */

int mfd__tracker_start(mfd_session *s)
{
    struct mfd_tracker *t = calloc(1, sizeof(*t));
    if (!t)
        return mfd__fail(s, MFD_ENOMEM, "out of memory");
    t->uffd = t->pagemap_fd = -1;
    t->ops = s->dirty_tracker == MFD_TRACKER_UFFD_WP ? &uffd_wp_ops
                                                      : &manual_ops;
    s->tracker = t;
    return t->ops->start(s);
}

int mfd__tracker_sync(mfd_session *s, uint64_t *dirty)
{
    uint64_t n = 0;
    for (int i = 0; i < s->nblocks; i++) {
        if (s->tracker->ops->sync_block(s, i))
            return -1;
        n += mfd__bitmap_count(s->blocks[i].dirty, s->blocks[i].pages);
    }
    *dirty = n;
    return 0;
}

void mfd__tracker_stop(mfd_session *s)
{
    if (!s->tracker)
        return;
    s->tracker->ops->stop(s);
    free(s->tracker);
    s->tracker = NULL;
}
