/*
 * file.h - the file room: save to and restore from a snapshot file
 * (PROTOCOL.md 5, QEMU's mapped-ram) on the same channel threads, zero-page
 * detection and dirty trackers as a network migration.
 *
 * Save: mfd_migrate() with a file: URI. The migration thread's passes are
 * the network's (send.c), and each send channel thread, instead of
 * writing a packet, writes its batch's normal pages with pwrite at their
 * fixed offsets and clears the presence bit of its zero pages; a page
 * saved again in a later pass overwrites its slot. After the final pass
 * come the device state, the bitmaps, the header, an fdatasync, and only
 * then the COMPLETE flag (and another fdatasync).
 *
 * Restore: mfd_restore(). N threads read the present pages into place;
 * absent pages are never touched.
 */
#ifndef MFD_FILE_FILE_H
#define MFD_FILE_FILE_H

#include <stdint.h>

#include "core/session.h"

/*
 * Source: creates the snapshot file at `path` for the session's blocks
 * (layout, a header without COMPLETE, the file sized so pages fall into
 * holes) and stores its state in s->snap. Fails the session on error.
 */
int mfd__snap_create(mfd_session *s, const char *path);

/*
 * Channel thread: writes the batch's first `normal` pages (adjacent ones
 * in one write) and forgets its zero pages (offsets normal..num-1).
 */
int mfd__snap_write_batch(mfd_send_chan *ch, const mfd_batch *b,
                          uint32_t normal);

/* Migration thread, zero-page-detection legacy: a zero page found. */
int mfd__snap_zero_page(mfd_session *s, uint32_t block, uint64_t off);

/* After the final pass: device state, bitmaps, header, COMPLETE. */
int mfd__snap_finish(mfd_session *s);

/* Closes the file and frees s->snap (safe to call more than once). */
void mfd__snap_free(mfd_session *s);

/* mfd_restore(): reads the snapshot at `uri` (file:PATH). */
int mfd__restore(mfd_session *s, const char *uri);

#endif
