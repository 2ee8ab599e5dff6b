/*
 * dirty.h - dirty page trackers: how a live migration's source learns which
 * pages were written since the previous pass.
 *
 * One small interface, one implementation per tracker (MFD_TRACKER_*):
 * start() begins tracking every block, sync() ORs the pages written since
 * the previous sync (or since start) into each block's `dirty` bitmap, and
 * stop() ends tracking. The migration thread alone calls them.
 */
#ifndef MFD_RAM_DIRTY_H
#define MFD_RAM_DIRTY_H

#include <stdint.h>

struct mfd_session;

/*
 * Starts the session's tracker (s->dirty_tracker) over every block. Fails
 * with the session's error set, naming what the kernel or a block lacks.
 */
int mfd__tracker_start(struct mfd_session *s);
/*
 * Adds the pages written since the previous sync to the blocks' dirty
 * bitmaps; *dirty receives the number of pages now set in them.
 */
int mfd__tracker_sync(struct mfd_session *s, uint64_t *dirty);
/* Ends tracking (safe when never started, and more than once). */
void mfd__tracker_stop(struct mfd_session *s);

#endif
