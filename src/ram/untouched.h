/*
 * untouched.h - source memory that is zero without being read: pages of a
 * private anonymous mapping that were never written (no page in the page
 * table, nothing swapped) or only read (they map the kernel's zero page).
 *
 * A zero test reads every byte of such a page, and reading a page that was
 * never touched costs a page fault that maps the zero page (about 0.75 us
 * per 4 KiB page here, and page tables the process did not need). The
 * page tables say the same without either: PAGEMAP_SCAN (Linux 6.7) lists
 * them in one call per range.
 */
#ifndef MFD_RAM_UNTOUCHED_H
#define MFD_RAM_UNTOUCHED_H

#include <stdbool.h>
#include <stdint.h>

/*
 * Sets in `map` (one bit per page of `page_size` bytes from `host`, `len`
 * bytes in all; the caller clears it) every page whose page table entries
 * hold nothing (and no swap entry of any kind) or the zero page, and
 * returns how many; -1, with `map` clear, when the kernel lacks
 * PAGEMAP_SCAN. Such a page reads as zero only in plain anonymous memory:
 * see mfd__untouched_plain().
 */
int64_t mfd__untouched_pages(const uint8_t *host, uint64_t len,
                             uint32_t page_size, uint64_t *map);

/*
 * Whether `found` such pages of `pages` are worth checking the mappings
 * for: at least 1/32 of them. Reading /proc/self/smaps costs about 30 ns
 * per present page of the process (the kernel counts them: 30 ms for
 * 4 GiB of small pages), reading a page never touched about 0.75 us (a
 * fault); below that share the pages are simply read.
 */
bool mfd__untouched_worth(int64_t found, uint64_t pages);

typedef struct {
    uint64_t start, end; /* addresses, end exclusive */
} mfd__range;

/*
 * Sets plain[i] for each of the n ranges that is covered, without a gap,
 * by plain private anonymous mappings (no file behind them: inode 0; no
 * name but [heap], [stack] or [anon:...], so no special mapping like
 * [vdso]), none of them registered with a userfaultfd for missing or
 * minor faults (their pages arrive when first touched) nor I/O or raw PFN
 * memory. Reads /proc/self/smaps once for all the ranges. -1 (every
 * plain[i] false) when it cannot be read.
 */
int mfd__untouched_plain(const mfd__range *r, int n, bool *plain);

/*
 * Both for one range: mfd__untouched_pages(), then, when worth it,
 * mfd__untouched_plain(). Returns the number of pages set; 0 (map clear)
 * when not worth it; -1 (map clear) when the kernel lacks PAGEMAP_SCAN or
 * the range is not plain anonymous memory.
 *
 * Only writes the caller sees afterwards can change the answer, so a
 * caller whose memory may change must start tracking writes (or stop the
 * writers) first.
 */
int64_t mfd__untouched_scan(const uint8_t *host, uint64_t len,
                            uint32_t page_size, uint64_t *map);

#endif
