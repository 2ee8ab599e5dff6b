/*
 * tls_support.h - what the TLS channel tests (test_tls_readahead.c,
 * test_tls_record.c) share: a loopback TCP pair and a session given a PSK.
 */
#ifndef MFD_TESTS_TLS_SUPPORT_H
#define MFD_TESTS_TLS_SUPPORT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

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

#endif
