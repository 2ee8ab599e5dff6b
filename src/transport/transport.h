/*
 * transport.h - URIs, sockets and whole-buffer I/O for the channels.
 *
 * A channel is a connected stream socket (TCP or Unix). Everything above
 * this room sees file descriptors and the *_full calls, which either move
 * every byte or say why not.
 */
#ifndef MFD_TRANSPORT_H
#define MFD_TRANSPORT_H

#include <poll.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/uio.h>

typedef enum { MFD_URI_TCP = 1, MFD_URI_UNIX = 2, MFD_URI_FILE = 3 } mfd_uri_kind;

typedef struct {
    mfd_uri_kind kind;
    char host[256]; /* TCP: name or address, brackets removed */
    char port[8];   /* TCP: decimal 0..65535 */
    char path[108]; /* Unix: socket path */
    char file[4096]; /* file: a snapshot file's path */
} mfd_uri;

/*
 * Parses "tcp:HOST:PORT", "tcp:[V6]:PORT", "unix:PATH" or "file:PATH" (a
 * snapshot file, PROTOCOL.md 5; never a socket).
 */
int mfd__uri_parse(const char *text, mfd_uri *u, char *err, size_t errlen);

/*
 * Connects to `u` (TCP_NODELAY on TCP), giving up after timeout_ms (< 0:
 * never; errno ETIMEDOUT) or once wake_fd (an eventfd, -1: none) is
 * readable (errno ECANCELED). Returns the fd, or -1 with a message in err.
 */
int mfd__sock_connect(const mfd_uri *u, int wake_fd, int timeout_ms,
                      char *err, size_t errlen);

/*
 * Binds and listens on `u`. Writes the resolved URI (ephemeral port filled
 * in) to `bound`. Returns the fd, or -1 with a message in err. A Unix socket
 * path that exists as a socket is replaced.
 */
int mfd__sock_listen(const mfd_uri *u, char *bound, size_t boundlen,
                     char *err, size_t errlen);

/*
 * TCP: fail the connection when the peer has not acknowledged data, or not
 * answered keepalive probes, for timeout_ms (TCP_USER_TIMEOUT, keepalive),
 * so a cut network is noticed. Nothing for Unix sockets or timeout_ms <= 0.
 */
void mfd__sock_set_timeout(int fd, int timeout_ms);

/* Closes a channel socket, ending its TLS session (close_notify) first. */
void mfd__sock_close(int fd);

/* Accepts one connection (TCP_NODELAY, close-on-exec); -1 on error. */
int mfd__sock_accept(int lfd);

/*
 * The mark a socket's *_lowat reads start from (its reader keeps it, one
 * int beside the fd): 1 for a TCP socket, whose *_lowat reads then wait
 * until all they need is there and take it in one call (SO_RCVLOWAT;
 * sock.c says why; with TLS, through the session's read-ahead, tls.h), 0
 * for any other, read plainly. Nothing but *_lowat reads may wait on a
 * socket whose mark is not 0: the mark stays on it between reads.
 */
int mfd__sock_lowat_init(int fd);
/*
 * One read of up to len bytes of a socket with a mark (*lowat as above):
 * what is there now, or else, after one wake-up, at least `need` bytes
 * (need <= what the peer must still send). Returns as read() does.
 */
ssize_t mfd__sock_read_lowat(int fd, int *lowat, void *buf, size_t len,
                             size_t need);

/* Results of the *_full calls. */
enum {
    MFD_IO_OK = 0,
    MFD_IO_EOF = 1,       /* the peer closed before the first byte */
    MFD_IO_TRUNCATED = 2, /* the peer closed part-way */
    MFD_IO_ERROR = -1,    /* errno says why */
    MFD_IO_TIMEOUT = -2,  /* timeout_ms passed before all bytes came */
    MFD_IO_WOKEN = -3,    /* wake_fd became readable first */
};

/*
 * poll(2) whose first entry is a channel's socket: a TLS channel whose
 * session already holds decrypted bytes (which the socket no longer shows)
 * is readable at once, the other entries then reported idle.
 */
int mfd__poll_readable(struct pollfd *p, nfds_t n, int timeout_ms);
/* Reads exactly len bytes. */
int mfd__read_full(int fd, void *buf, size_t len);
/* Same, giving up when all bytes have not come within timeout_ms (< 0: no
 * limit). */
int mfd__read_full_timeout(int fd, void *buf, size_t len, int timeout_ms);
/* Same, also giving up as soon as wake_fd (an eventfd; -1: none) is
 * readable, so another thread can interrupt the read. */
int mfd__read_full_wake(int fd, int wake_fd, void *buf, size_t len,
                        int timeout_ms);
/* Reads until every iovec is full; the array is consumed (modified). */
int mfd__readv_full(int fd, struct iovec *iov, int iovcnt);
/* mfd__read_full and mfd__readv_full with the socket's mark (above). */
int mfd__read_full_lowat(int fd, int *lowat, void *buf, size_t len);
int mfd__readv_full_lowat(int fd, int *lowat, struct iovec *iov, int iovcnt);
/* Writes every iovec (MSG_NOSIGNAL); the array is consumed (modified). */
int mfd__writev_full(int fd, struct iovec *iov, int iovcnt);
/* Same with extra sendmsg flags (MSG_MORE when another write follows). */
int mfd__writev_full_flags(int fd, struct iovec *iov, int iovcnt, int flags);
/* The same on the socket itself, never through its TLS session. */
int mfd__sock_writev(int fd, struct iovec *iov, int iovcnt, int flags);
/*
 * A blocking send on fd, started at t0_us (mfd__now_us), came back short or
 * with EAGAIN: true if that was its send timeout (SO_SNDTIMEO, set by
 * mfd__sock_set_timeout on Unix sockets) running out, false if a signal cut
 * it short (retry it) or fd has no send timeout.
 */
bool mfd__send_timed_out(int fd, uint64_t t0_us);
int mfd__write_full(int fd, const void *buf, size_t len);
/*
 * Writes every iovec without ever blocking past a wake-up: gives up with
 * MFD_IO_WOKEN as soon as wake_fd (-1: none) is readable while the socket
 * is full, and with MFD_IO_TIMEOUT when the peer took nothing for
 * timeout_ms (< 0: no limit). *torn is set when part of the array went
 * out (or sits in the TLS session): the stream is then cut mid-record. For
 * the main channel, which any thread may be writing when a failure or a
 * cancel has to reach it.
 */
int mfd__writev_full_wake(int fd, int wake_fd, struct iovec *iov, int iovcnt,
                          int timeout_ms, bool *torn);

/* ---- zero-copy send (zerocopy.c) ---- */

#include <stdint.h>

/* Sets SO_ZEROCOPY on a TCP socket; -1 with errno where unsupported. */
int mfd__zc_enable(int fd);
/*
 * Writes iov[*pos..iovcnt) with MSG_ZEROCOPY; *calls counts the sendmsg
 * calls that queued data (the kernel numbers its completions by call). On
 * MFD_IO_ERROR (errno ENOBUFS: too much pinned; reap and call again)
 * *pos is where to resume.
 */
int mfd__zc_writev(int fd, struct iovec *iov, int iovcnt, int *pos,
                   uint64_t *calls);
/*
 * Reaps completions from the error queue: adds the completed calls to
 * *done and those the kernel copied anyway to *copied. timeout_ms 0 only
 * takes what is there; otherwise waits up to that long (or until wake_fd is
 * readable: -1 with errno ECANCELED) for the queue to have something.
 */
int mfd__zc_reap(int fd, int wake_fd, int timeout_ms, uint64_t *done,
                 uint64_t *copied);

/* Human text for a non-OK result of the calls above ("connection closed"). */
const char *mfd__io_strerror(int rc);

#endif
