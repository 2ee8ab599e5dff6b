/*
 * untouched.c - finds the pages of a range that read as zero by their page
 * table entries alone (untouched.h).
 *
 * Two checks, both needed:
 * - the mappings (/proc/self/smaps): every byte of the range lies in a
 *   plain private anonymous mapping (no file behind it: inode 0; no special
 *   mapping such as [vdso]) that no userfaultfd serves missing or minor
 *   faults for, and that is not I/O or raw PFN memory. Only there is a
 *   page with nothing in the page table a page of zeros: a file's page may
 *   sit in the page cache unmapped, a special mapping fills itself in, and
 *   a userfaultfd may supply any content on first touch;
 * - the page tables (PAGEMAP_SCAN): pages neither present nor swapped
 *   (nothing there: never written, or dropped by MADV_DONTNEED), and
 *   present pages that map the zero page (read, never written). A swap
 *   entry of any kind (swapped data, a migration entry, a userfaultfd
 *   write-protect marker, a guard page) counts as not zero.
 */
#include "ram/untouched.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <unistd.h>

#include "common/util.h"
#include "ram/bitmap.h"
#include "ram/pagemap.h"

/* Whether a VmFlags line of smaps names one of the two-letter flags. */
static bool has_flag(const char *line, const char *const *flags)
{
    const char *p = line + strlen("VmFlags:");
    while (*p) {
        while (*p == ' ')
            p++;
        for (const char *const *f = flags; *f; f++)
            if (p[0] == (*f)[0] && p[1] == (*f)[1] &&
                (p[2] == ' ' || p[2] == '\n' || !p[2]))
                return true;
        while (*p && *p != ' ')
            p++;
    }
    return false;
}

/*
 * Whether a mapping's name (what smaps shows after the inode) is one of
 * plain anonymous memory: none, the heap, a stack, or a name given with
 * PR_SET_VMA_ANON_NAME. Special mappings ([vdso], [vvar]...) are private
 * with inode 0 too, but fill in their content when touched.
 */
static bool plain_name(const char *name)
{
    while (*name == ' ')
        name++;
    return !*name || *name == '\n' || !strncmp(name, "[heap]", 6) ||
           !strncmp(name, "[stack", 6) || !strncmp(name, "[anon:", 6);
}

int mfd__untouched_plain(const mfd__range *r, int n, bool *plain)
{
    /* um/ui: userfaultfd missing/minor; io: VM_IO; pf: VM_PFNMAP. */
    static const char *const bad[] = {"um", "ui", "io", "pf", NULL};
    uint64_t lowest = UINT64_MAX, highest = 0;
    uint64_t *covered = calloc((size_t)n + 1, sizeof(*covered));
    for (int i = 0; i < n; i++) {
        plain[i] = covered != NULL;
        if (covered)
            covered[i] = r[i].start; /* [start, covered) is vetted */
        lowest = MFD_MIN(lowest, r[i].start);
        highest = MFD_MAX(highest, r[i].end);
    }
    FILE *f = covered ? fopen("/proc/self/smaps", "re") : NULL;
    if (!f) {
        free(covered);
        memset(plain, 0, (size_t)n);
        return -1;
    }
    char line[512];
    uint64_t lo = 0, hi = 0;
    bool header_ok = false, in_range = false;
    while (fgets(line, sizeof(line), f)) {
        if (!strchr(line, '\n')) {
            /* Longer than any field: a long path. The rest is not needed. */
            int c;
            while ((c = fgetc(f)) != EOF && c != '\n')
                ;
        }
        /* Other lines may match a part ("AnonHugePages" starts with a hex
         * digit): only a whole header moves lo and hi. */
        uint64_t l, h, inode;
        char perms[8];
        int name_at = 0;
        if (sscanf(line, "%" SCNx64 "-%" SCNx64 " %7s %*s %*s %" SCNu64 "%n",
                   &l, &h, perms, &inode, &name_at) == 4 && name_at > 0) {
            lo = l;
            hi = h;
            if (in_range) /* the previous mapping's VmFlags never came */
                break;
            if (lo >= highest)
                break;
            in_range = hi > lowest;
            header_ok = strlen(perms) >= 4 && perms[3] == 'p' && !inode &&
                        plain_name(line + name_at);
        } else if (in_range && !strncmp(line, "VmFlags:", 8)) {
            bool ok = header_ok && !has_flag(line, bad);
            for (int i = 0; i < n; i++) {
                if (hi <= covered[i] || lo >= r[i].end)
                    continue;
                if (lo > covered[i] || !ok)
                    plain[i] = false;
                covered[i] = hi;
            }
            in_range = false;
        }
    }
    fclose(f);
    for (int i = 0; i < n; i++)
        plain[i] = plain[i] && covered[i] >= r[i].end;
    free(covered);
    return 0;
}

int64_t mfd__untouched_pages(const uint8_t *host, uint64_t len,
                             uint32_t page_size, uint64_t *map)
{
    uint64_t start = (uintptr_t)host, end = start + len;
    uint64_t pages = len / page_size;
    if (!pages)
        return -1;
    int fd = open("/proc/self/pagemap", O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return -1;

    struct page_region vec[256];
    struct pm_scan_arg a = {
        .size = sizeof(a),
        .start = start,
        .end = end,
        .vec = (uintptr_t)vec,
        .vec_len = sizeof(vec) / sizeof(vec[0]),
        /* Not swapped, and not present or the zero page. */
        .category_inverted = PAGE_IS_PRESENT | PAGE_IS_SWAPPED,
        .category_mask = PAGE_IS_SWAPPED,
        .category_anyof_mask = PAGE_IS_PRESENT | PAGE_IS_PFNZERO,
        .return_mask = PAGE_IS_PRESENT | PAGE_IS_PFNZERO,
    };
    int64_t found = 0;
    uint64_t run_lo = 0, run_hi = 0; /* regions merged until a gap */
    for (;;) {
        int n = ioctl(fd, PAGEMAP_SCAN, &a);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0) {
            found = -1;
            break;
        }
        /* A final empty region flushes the last run. */
        bool last = a.walk_end >= end || n == 0;
        for (int i = 0; i <= n; i++) {
            bool flush = i == n ? last : vec[i].start != run_hi;
            if (flush && run_hi > run_lo) {
                uint64_t first = (run_lo - start + page_size - 1) / page_size;
                uint64_t stop = (run_hi - start) / page_size;
                if (stop > pages)
                    stop = pages;
                if (stop > first) {
                    mfd__bitmap_set_range_atomic(map, first, stop - first);
                    found += (int64_t)(stop - first);
                }
                run_lo = run_hi = 0;
            }
            if (i == n)
                break;
            if (run_hi != vec[i].start)
                run_lo = vec[i].start;
            run_hi = vec[i].end;
        }
        if (last)
            break;
        a.start = a.walk_end;
    }
    close(fd);
    if (found < 0)
        memset(map, 0, (pages + 63) / 64 * 8);
    return found;
}

bool mfd__untouched_worth(int64_t found, uint64_t pages)
{
    return found > 0 && (uint64_t)found >= pages / 32;
}

int64_t mfd__untouched_scan(const uint8_t *host, uint64_t len,
                            uint32_t page_size, uint64_t *map)
{
    uint64_t pages = len / page_size;
    int64_t found = mfd__untouched_pages(host, len, page_size, map);
    if (found <= 0)
        return found;
    mfd__range r = {(uintptr_t)host, (uintptr_t)host + len};
    bool plain = false;
    int64_t rc = !mfd__untouched_worth(found, pages)                 ? 0
                 : mfd__untouched_plain(&r, 1, &plain) || !plain ? -1
                                                                   : found;
    if (rc != found)
        memset(map, 0, (pages + 63) / 64 * 8);
    return rc;
}
