/*
 * support.h - what the in-process API tests (test_api.c, test_live.c) share:
 * a destination session listening on a fresh Unix socket, mfd_incoming() on
 * its own thread, blocks of test content, and comparing what arrived.
 */
#ifndef MFD_TESTS_SUPPORT_H
#define MFD_TESTS_SUPPORT_H

#include <pthread.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "multifd.h"

#define TS_PAGE 4096u

/* The URI the latest ts_listening_dest() listens on. */
extern char ts_sock_path[64];

/* A log callback that drops every line. */
void ts_quiet(void *opaque, const char *line);

/*
 * A destination session with a quiet log, listening on a fresh Unix socket,
 * unix:/tmp/mfd-<tag>-<pid>.sock (the URI left in ts_sock_path).
 */
mfd_session *ts_listening_dest(const char *tag);

/* A destination session running mfd_incoming() on its own thread. */
typedef struct {
    mfd_session *d;
    int rc; /* mfd_incoming()'s, once joined */
    pthread_t t;
} ts_dest;

void ts_dest_start(ts_dest *ds, mfd_session *d);
/* Waits for mfd_incoming() to return; returns what it returned. */
int ts_dest_join(ts_dest *ds);

/* Private anonymous memory (zero-filled), asserted mapped. */
uint8_t *ts_map_anon(size_t len);
/* Pseudo-random content from a seed (len a multiple of 8). */
void ts_fill_random(uint8_t *p, size_t len, uint64_t seed);
/* Random pages, and with zero_runs every third page and 1 MiB zero. */
void ts_fill_block(uint8_t *p, size_t len, unsigned seed, bool zero_runs);
/* ts_map_anon() filled by ts_fill_block(). */
uint8_t *ts_make_block(size_t len, unsigned seed, bool zero_runs);
/*
 * ts_make_block() with zero runs, whose zero pages are then dropped
 * (MADV_DONTNEED): untouched memory, as a guest's never-used pages are.
 */
uint8_t *ts_make_sparse_block(size_t len, unsigned seed);

bool ts_page_is_zero(const uint8_t *p);
/* The zero pages in [p, p + len). */
uint64_t ts_zero_pages(const uint8_t *p, size_t len);

/*
 * The destination has exactly the n blocks, by name and length, each the
 * same bytes as src[i]; a failure names the first page that differs.
 */
void ts_compare_blocks(mfd_session *d, uint8_t *const *src,
                       const char *const *names, const size_t *lens, int n);

/*
 * The stats of both sides of a completed migration (malloc'ed into *a and
 * *b, for the caller to free): roles source and destination, status 3.
 */
void ts_stats_completed(mfd_session *src, mfd_session *dst, mfd_stats **a,
                        mfd_stats **b);

/*
 * The destination (b) received what the source (a) sent: its normal and
 * zero pages, data packets and bytes, main channel bytes; the source's
 * channels each sent sync_packets syncs and add up to its normal pages.
 * Returns the zero pages the channels sent.
 */
uint64_t ts_check_received(const mfd_stats *a, const mfd_stats *b,
                           uint64_t sync_packets);

#endif
