/*
 * tls_support.h - what the TLS channel tests (test_tls_readahead.c,
 * test_tls_record.c) share: a loopback TCP pair and a session given a PSK.
 */
#ifndef MFD_TESTS_TLS_SUPPORT_H
#define MFD_TESTS_TLS_SUPPORT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <gnutls/gnutls.h>
#include <pthread.h>
#include <time.h>

#include "multifd.h"

/*
 * A connected loopback TCP pair (the port from a bind to 0): *pfd the
 * peer's end (TCP_NODELAY), *ofd ours, accepted as the destination accepts
 * its channels (mfd__sock_accept).
 */
void tt_tcp_pair(int *pfd, int *ofd);
/*
 * Gives the session the key `name`:`key` and loads it for the given side:
 * a keys file in a directory of its own, removed again once the session
 * has loaded it. Fails the test on error.
 */
void tt_load_psk(mfd_session *ms, const char *name, const uint8_t *key,
                 size_t len, bool server);

/*
 * The group setup both tests share: a random PSK into bytes (len) and
 * *key, and the alarm's handler, which names `test` and the case in
 * tt_running (set before each case's alarm()) and ends the process: a
 * case that hangs where no watchdog looks. 0, or -1.
 */
extern const char *volatile tt_running;
int tt_group_setup(const char *test, uint8_t *bytes, size_t len,
                   gnutls_datum_t *key);
/*
 * A peer's gnutls_record_send2 of all n bytes (pad: TLS 1.3 padding; with
 * n 0 and pad > 0, one empty record): 0, or GnuTLS's error.
 */
int tt_record_send(gnutls_session_t s, const uint8_t *p, size_t n,
                   size_t pad);
/* A condition variable on CLOCK_MONOTONIC (for timed waits), and the
 * absolute time ms from now on that clock. */
void tt_cond_init(pthread_cond_t *c);
void tt_deadline(struct timespec *t, int ms);

#endif
