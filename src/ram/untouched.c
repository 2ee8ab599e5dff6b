/*
 * untouched.c - finds the pages of a range that read as zero by their page
 * table entries alone (untouched.h).
 *
 * Two checks, both needed:
 * - the mappings (/proc/self/smaps): every byte of the range lies in a
 *   private anonymous mapping (no file behind it: inode 0) that no
 *   userfaultfd serves missing or minor faults for, and that is not I/O or
 *   raw PFN memory. Only there is a page with nothing in the page table a
 *   page of zeros: a file's page may sit in the page cache unmapped, and a
 *   userfaultfd may supply any content on first touch;
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
#include <string.h>
#include <sys/ioctl.h>
#include <unistd.h>

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
 * Whether [start, end) is covered, without a gap, by private anonymous
 * mappings that hold zeros wherever their page tables hold nothing.
 */
static bool range_is_plain_anon(uint64_t start, uint64_t end)
{
    /* um/ui: userfaultfd missing/minor; io: VM_IO; pf: VM_PFNMAP. */
    static const char *const bad[] = {"um", "ui", "io", "pf", NULL};
    FILE *f = fopen("/proc/self/smaps", "re");
    if (!f)
        return false;
    char line[512];
    uint64_t covered = start; /* [start, covered) is vetted */
    bool in_range = false, ok = true, done = false;
    while (ok && !done && fgets(line, sizeof(line), f)) {
        if (!strchr(line, '\n')) {
            /* Longer than any field: a long path. The rest is not needed. */
            int c;
            while ((c = fgetc(f)) != EOF && c != '\n')
                ;
        }
        uint64_t lo, hi, inode;
        char perms[8];
        if (sscanf(line, "%" SCNx64 "-%" SCNx64 " %7s %*s %*s %" SCNu64, &lo,
                   &hi, perms, &inode) == 4) {
            if (in_range) /* the previous mapping's VmFlags never came */
                ok = false;
            in_range = hi > covered && lo < end;
            if (!in_range)
                continue;
            if (lo > covered || strlen(perms) < 4 || perms[3] != 'p' ||
                inode != 0)
                ok = false;
            covered = hi;
        } else if (in_range && !strncmp(line, "VmFlags:", 8)) {
            if (has_flag(line, bad))
                ok = false;
            in_range = false;
            done = covered >= end;
        }
    }
    fclose(f);
    return ok && done;
}

int64_t mfd__untouched_scan(const uint8_t *host, uint64_t len,
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
    if (found <= 0)
        return found;
    /*
     * Reading smaps costs about 30 ns per page present (the kernel counts
     * them), 30 ms for 4 GiB of small pages; a page never touched costs
     * about 0.75 us to read (a fault). Below 1/32 of the pages the check
     * would cost more than the faults it spares, so the pages are read.
     */
    int64_t rc = (uint64_t)found < pages / 32         ? 0
                 : !range_is_plain_anon(start, end) ? -1
                                                    : found;
    if (rc != found)
        memset(map, 0, (pages + 63) / 64 * 8);
    return rc;
}
