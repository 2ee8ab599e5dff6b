/*
 * colo.h - the COLO room's interface to send.c and recv.c (colo.c says
 * how a checkpoint travels and is committed).
 */
#ifndef MFD_COLO_COLO_H
#define MFD_COLO_COLO_H

#include <stdbool.h>
#include <stdint.h>

#include "core/session.h"
#include "ram/bitmap.h"

/* Both sides: a thread sending HEARTBEAT every heartbeat-interval. */
int mfd__colo_hb_start(mfd_session *s);
void mfd__colo_hb_stop(mfd_session *s);

/*
 * Both sides: a private anonymous copy of block b (mmap `flags` added), or
 * NULL with the session failed, the error naming `what` and the block.
 */
void *mfd__colo_map(mfd_session *s, const mfd_block *b, int flags,
                    const char *what);

/* Secondary: maps the replicas and the checkpoint bitmaps. */
int mfd__colo_secondary_setup(mfd_session *s);

/* Secondary, channel threads: page `off` of block b arrived (zero or not). */
static inline void mfd__colo_record(mfd_block *b, uint64_t page, bool zero)
{
    mfd__bitmap_set_atomic(b->ckpt_map, page);
    uint64_t mask = UINT64_C(1) << (page % 64);
    if (zero)
        __atomic_fetch_or(&b->ckpt_zero[page / 64], mask, __ATOMIC_RELAXED);
    else if (__atomic_load_n(&b->ckpt_zero[page / 64], __ATOMIC_RELAXED) & mask)
        __atomic_fetch_and(&b->ckpt_zero[page / 64], ~mask, __ATOMIC_RELAXED);
}

/* Secondary, main thread: CHECKPOINT_BEGIN and CHECKPOINT_END (commit, ACK). */
int mfd__colo_begin(mfd_session *s, const uint8_t *body, uint32_t len);
int mfd__colo_end(mfd_session *s, const uint8_t *body, uint32_t len);

/*
 * Both sides, a checkpoint's copy (the primary's staging, the secondary's
 * commit): calls fn(s, b, from, to) over every block's bitmap words
 * [from, to), the words split in contiguous shares over up to as many
 * threads as the session has channels (its share of the cores), no more
 * than the CPUs or 8, and at least 8 MiB of `bytes` a thread; the caller's
 * thread takes one share. Returns when every share is done.
 */
typedef void mfd__colo_words_fn(mfd_session *s, mfd_block *b, uint64_t from,
                                uint64_t to);
void mfd__colo_parallel(mfd_session *s, uint64_t bytes, mfd__colo_words_fn *fn);

/* Secondary: a failure now promotes the replica instead of failing. */
bool mfd__colo_can_promote(const mfd_session *s);
/*
 * Secondary, at the end (promotion or the primary's COMPLETE): the replica
 * becomes the blocks' memory, the committed device state the session's.
 */
void mfd__colo_finish(mfd_session *s, int state);

#endif
