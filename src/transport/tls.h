/*
 * tls.h - TLS on every channel (PROTOCOL.md 6) with GnuTLS.
 *
 * A channel that completed a TLS handshake is registered by its fd; the
 * whole-buffer I/O calls of sock.c look the fd up and go through its GnuTLS
 * session, so the rooms above keep speaking fds, and each channel's crypto
 * runs on the thread that owns the channel.
 */
#ifndef MFD_TRANSPORT_TLS_H
#define MFD_TRANSPORT_TLS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/uio.h>
#include <sys/types.h>

struct mfd_session;

/* The session's TLS settings and loaded credentials (tls.c). */
typedef struct mfd_tls mfd_tls;

/* True when the session has TLS configured (x509 or PSK). */
bool mfd__tls_enabled(const struct mfd_session *s);
/*
 * Loads the credentials for the given side (once). Fails the session with
 * a message naming the file on error.
 */
int mfd__tls_setup(struct mfd_session *s, bool server);
/*
 * Handshakes on a connected socket, as the client (hostname: the name the
 * server's certificate must carry, NULL for none) or the server; the
 * socket is registered on success. On failure returns -1 with the cause
 * in err (unknown CA, name mismatch, no client certificate, PSK mismatch,
 * expired...), the socket unregistered.
 */
int mfd__tls_client(struct mfd_session *s, int fd, const char *hostname,
                    char *err, size_t errlen);
int mfd__tls_server(struct mfd_session *s, int fd, char *err, size_t errlen);
/*
 * Sends close_notify (if `bye`, and only if the socket takes it at once: a
 * peer that stopped reading never holds a close) and forgets the fd's
 * session.
 */
void mfd__tls_forget(int fd, bool bye);
/*
 * 0 when GnuTLS can parse the priority string, else -1 with where it
 * stopped in err.
 */
int mfd__tls_priority_check(const char *priority, char *err, size_t errlen);
/*
 * A tls-priority with no TLS credentials to use it: the message to fail
 * with, else NULL (one check for both sides).
 */
const char *mfd__tls_priority_unused(const struct mfd_session *s);
/* Frees the session's credentials. */
void mfd__tls_free(struct mfd_session *s);

/* For sock.c: the fd's TLS session or NULL, and its I/O. */
void *mfd__tls_of(int fd);
ssize_t mfd__tls_read(void *t, void *buf, size_t len);
/* Writes every iovec (blocking); MFD_IO_OK or MFD_IO_ERROR with errno. */
int mfd__tls_writev(void *t, struct iovec *iov, int iovcnt);
/*
 * The same without blocking, one buffer: -1 with errno EAGAIN when the
 * socket is full; call again with the same buffer and length once it is
 * writable. Not on a session that seals its own records.
 */
ssize_t mfd__tls_write_nb(void *t, const void *buf, size_t len);
/* Decrypted bytes, or read-ahead ciphertext, wait to be read. */
bool mfd__tls_pending(void *t);
/*
 * Why the calling thread's last TLS read or write that failed with EPROTO
 * failed (a TLS alert, a record that failed authentication...), or NULL.
 */
const char *mfd__tls_strerror(void);
/*
 * A destination's data channel: reads go through a read-ahead buffer that
 * waits, with the receive low-water mark, for what the reader promised
 * (mfd__tls_promise) instead of reading record by record; with TLS 1.3 the
 * records are then opened by our own record layer (tls_record.h) straight
 * into the reader's buffer. Only for a socket that nothing polls or reads
 * but the *_lowat calls of sock.c (transport.h). 1 when on, 0 when it
 * could not be set up (plain reads).
 */
int mfd__tls_readahead(void *t);
/* The plaintext bytes the reader is owed next (0: none promised). */
void mfd__tls_promise(void *t, size_t plaintext);
/*
 * A source's data channel, once its init message is out: with TLS 1.3 its
 * records are sealed by our own record layer, a buffer of them per send,
 * instead of by GnuTLS one send each. Only for a socket written by nothing
 * but blocking writes and never read. 1 when on, 0 when GnuTLS keeps it.
 */
int mfd__tls_direct_send(void *t);
/* Which directions our own record layer runs: 1 reading, 2 writing. */
int mfd__tls_direct(void *t);
/*
 * Tests: the records sealed under one key before a KeyUpdate (2^24). Set
 * before any channel starts.
 */
void mfd__tls_set_rekey(uint64_t records);

#endif
