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

#include <stdint.h>

/*
 * Sets in `map` (one bit per page of `page_size` bytes from `host`, `len`
 * bytes in all; the caller clears it) every page that reads as zero
 * because the page tables hold nothing for it, or the zero page. Returns
 * the number of pages set: 0 too when fewer than 1/32 of the pages would
 * be (checking the mappings would cost more than reading them); or -1
 * when this memory cannot be judged so:
 * the kernel lacks PAGEMAP_SCAN, or some of the range is not private
 * anonymous memory (a file's or a shared mapping's pages may hold data
 * the page table does not show), or is registered with userfaultfd for
 * missing or minor faults (its pages arrive when first touched).
 *
 * Only writes the caller sees afterwards can change the answer, so a
 * caller whose memory may change must start tracking writes first.
 */
int64_t mfd__untouched_scan(const uint8_t *host, uint64_t len,
                            uint32_t page_size, uint64_t *map);

#endif
