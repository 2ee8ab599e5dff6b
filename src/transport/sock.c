/*
 * sock.c - URI parsing, TCP/Unix sockets, and the whole-buffer I/O loops.
 */
#include "transport/transport.h"
#include "transport/tls.h"

#include "common/util.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#define MFD_IOV_BATCH(n) ((n) < IOV_MAX ? (n) : IOV_MAX)

/* Writes the message, keeping errno for the caller. */
#define URI_FAIL(...)                                                          \
    do {                                                                       \
        int uri_fail_errno = errno;                                            \
        snprintf(err, errlen, __VA_ARGS__);                                    \
        errno = uri_fail_errno;                                                \
        return -1;                                                             \
    } while (0)

int mfd__uri_parse(const char *text, mfd_uri *u, char *err, size_t errlen)
{
    memset(u, 0, sizeof(*u));
    if (!text)
        URI_FAIL("no URI given");
    if (!strncmp(text, "unix:", 5)) {
        const char *path = text + 5;
        if (!*path)
            URI_FAIL("URI '%s': empty socket path", text);
        if (strlen(path) >= sizeof(u->path))
            URI_FAIL("URI '%s': socket path longer than %zu bytes", text,
                     sizeof(u->path) - 1);
        u->kind = MFD_URI_UNIX;
        strcpy(u->path, path);
        return 0;
    }
    if (!strncmp(text, "file:", 5)) {
        const char *path = text + 5;
        if (!*path)
            URI_FAIL("URI '%s': empty file path", text);
        if (strlen(path) >= sizeof(u->file))
            URI_FAIL("URI '%s': file path longer than %zu bytes", text,
                     sizeof(u->file) - 1);
        u->kind = MFD_URI_FILE;
        strcpy(u->file, path);
        return 0;
    }
    if (strncmp(text, "tcp:", 4))
        URI_FAIL("URI '%s': expected tcp:HOST:PORT, unix:PATH or file:PATH",
                 text);

    const char *host = text + 4, *colon;
    size_t hlen;
    if (*host == '[') {
        const char *close = strchr(host, ']');
        if (!close || close[1] != ':')
            URI_FAIL("URI '%s': expected tcp:[ADDRESS]:PORT", text);
        host++;
        hlen = (size_t)(close - host);
        colon = close + 1;
    } else {
        colon = strrchr(host, ':');
        if (!colon)
            URI_FAIL("URI '%s': missing :PORT", text);
        hlen = (size_t)(colon - host);
        if (memchr(host, ':', hlen))
            URI_FAIL("URI '%s': IPv6 addresses need brackets", text);
    }
    if (hlen == 0)
        URI_FAIL("URI '%s': empty host", text);
    if (hlen >= sizeof(u->host))
        URI_FAIL("URI '%s': host name too long", text);

    const char *port = colon + 1;
    char *end;
    errno = 0;
    long p = strtol(port, &end, 10);
    if (!*port || *end || errno || p < 0 || p > 65535 || *port == '-' ||
        *port == '+' || *port == ' ')
        URI_FAIL("URI '%s': port must be a number in 0..65535", text);
    u->kind = MFD_URI_TCP;
    memcpy(u->host, host, hlen);
    snprintf(u->port, sizeof(u->port), "%ld", p);
    return 0;
}

/* ---- receive low-water marks ------------------------------------------ */

/*
 * A blocking read of a TCP socket that finds part of what it needs copies
 * that part and then waits inside the kernel for each further segment,
 * owning the socket while it copies, so the segments that arrive meanwhile
 * go to the socket's backlog for the reader to process. A reader that
 * needs n more bytes instead sets SO_RCVLOWAT to n and polls: the kernel
 * wakes it when all n are there (or the peer closed, or the receive buffer
 * filled, whatever the mark), and one recvmsg copies them. The mark is
 * always exactly what the peer must send next, never more, so a peer
 * waiting for an answer is never held. (Raising the mark also grows the
 * receive buffer to hold it; the kernel caps the mark at half the largest
 * buffer, so a longer read is woken once per cap.) Measured in
 * docs/benchmarks.md: reads and wake-ups per packet stay about one either
 * way, and a preallocated destination takes random pages 20% faster.
 *
 * The mark outlives the read and would hold back any other wait on the
 * socket (a poll for the next record, a read with a deadline), so only a
 * socket read by nothing but the *_lowat calls takes part, and its reader
 * keeps the mark it last gave (*lowat) beside the fd: a destination's
 * plaintext TCP data channel.
 */
#define LOWAT_MAX (2 << 20)

int mfd__sock_lowat_init(int fd)
{
    struct sockaddr_storage ss;
    socklen_t sl = sizeof(ss);
    int one = 1;
    if (fd < 0 || getsockname(fd, (struct sockaddr *)&ss, &sl) ||
        (ss.ss_family != AF_INET && ss.ss_family != AF_INET6))
        return 0;
    void *tls = mfd__tls_of(fd);
    if (tls) /* the mark is the read-ahead's (tls.c) */
        return mfd__tls_readahead(tls);
    return !setsockopt(fd, SOL_SOCKET, SO_RCVLOWAT, &one, sizeof(one));
}

/* Gives fd the mark want (> 0); false if fd is read plainly (*lowat 0). */
static bool lowat_set(int fd, int *lowat, size_t want)
{
    if (!lowat || !*lowat)
        return false;
    int v = want > LOWAT_MAX ? LOWAT_MAX : want < 1 ? 1 : (int)want;
    if (v != *lowat) {
        if (setsockopt(fd, SOL_SOCKET, SO_RCVLOWAT, &v, sizeof(v))) {
            *lowat = 0;
            return false;
        }
        *lowat = v;
    }
    return true;
}

/*
 * One read of a marked socket: what is there now, or else, after one
 * wake-up, all that its mark asked for. Returns as readv does.
 */
static ssize_t read_marked(int fd, struct iovec *iov, int iovcnt)
{
    struct msghdr m = {.msg_iov = iov, .msg_iovlen = (size_t)iovcnt};
    for (;;) {
        ssize_t n = recvmsg(fd, &m, MSG_DONTWAIT);
        if (n >= 0 || errno != EAGAIN)
            return n;
        struct pollfd p = {.fd = fd, .events = POLLIN};
        if (poll(&p, 1, -1) < 0 && errno != EINTR)
            return -1;
        if (p.revents & POLLNVAL) {
            errno = EBADF;
            return -1;
        }
    }
}

ssize_t mfd__sock_read_lowat(int fd, int *lowat, void *buf, size_t len,
                             size_t need)
{
    struct iovec v = {buf, len};
    if (lowat_set(fd, lowat, need))
        return read_marked(fd, &v, 1);
    /* A mark that could not be set may leave an older one: wait for no more. */
    return read(fd, buf, need && need < len ? need : len);
}

static void sock_tune(int fd, int family)
{
    int one = 1;
    if (family != AF_UNIX)
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
}

void mfd__sock_set_timeout(int fd, int timeout_ms)
{
    struct sockaddr_storage ss;
    socklen_t sl = sizeof(ss);
    if (timeout_ms <= 0 || getsockname(fd, (struct sockaddr *)&ss, &sl))
        return;
    if (ss.ss_family == AF_UNIX) {
        /*
         * No acknowledgements to time: a send that makes no progress for
         * the timeout (a peer that stopped reading) fails instead.
         */
        struct timeval tv = {.tv_sec = timeout_ms / 1000,
                             .tv_usec = (timeout_ms % 1000) * 1000};
        setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
        return;
    }
    /*
     * Unacknowledged data older than the timeout ends the connection; an
     * idle one is probed from a third of it on, every third of it.
     */
    unsigned ut = (unsigned)timeout_ms;
    int one = 1, probe = MFD_MAX(1, timeout_ms / 3000), cnt = 3;
    setsockopt(fd, IPPROTO_TCP, TCP_USER_TIMEOUT, &ut, sizeof(ut));
    setsockopt(fd, SOL_SOCKET, SO_KEEPALIVE, &one, sizeof(one));
    setsockopt(fd, IPPROTO_TCP, TCP_KEEPIDLE, &probe, sizeof(probe));
    setsockopt(fd, IPPROTO_TCP, TCP_KEEPINTVL, &probe, sizeof(probe));
    setsockopt(fd, IPPROTO_TCP, TCP_KEEPCNT, &cnt, sizeof(cnt));
}

/*
 * connect() that gives up after timeout_ms (< 0: never) or as soon as
 * wake_fd turns readable (errno ECANCELED): a destination whose address
 * swallows SYNs must not hold mfd_migrate() for minutes past a cancel.
 */
static int connect_wait(int fd, const struct sockaddr *sa, socklen_t len,
                        int wake_fd, int timeout_ms)
{
    int fl = fcntl(fd, F_GETFL);
    if (fl < 0 || fcntl(fd, F_SETFL, fl | O_NONBLOCK) < 0)
        return -1;
    int rc = connect(fd, sa, len);
    if (rc < 0 && errno == EINPROGRESS) {
        struct pollfd p[2] = {{.fd = fd, .events = POLLOUT},
                              {.fd = wake_fd, .events = POLLIN}};
        int n;
        do
            n = poll(p, wake_fd >= 0 ? 2 : 1, timeout_ms);
        while (n < 0 && errno == EINTR);
        int soerr = 0;
        socklen_t sl = sizeof(soerr);
        if (n == 0) {
            errno = ETIMEDOUT;
        } else if (n > 0 && wake_fd >= 0 && (p[1].revents & POLLIN)) {
            errno = ECANCELED;
        } else if (n > 0 &&
                   getsockopt(fd, SOL_SOCKET, SO_ERROR, &soerr, &sl) == 0) {
            rc = soerr ? -1 : 0;
            errno = soerr;
        }
    }
    int e = errno;
    if (fcntl(fd, F_SETFL, fl) < 0 && rc == 0)
        return -1;
    errno = e;
    return rc;
}

int mfd__sock_connect(const mfd_uri *u, int wake_fd, int timeout_ms,
                      char *err, size_t errlen)
{
    if (u->kind == MFD_URI_UNIX) {
        struct sockaddr_un sa = {.sun_family = AF_UNIX};
        strcpy(sa.sun_path, u->path);
        int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
        if (fd < 0)
            URI_FAIL("socket: %s", strerror(errno));
        if (connect_wait(fd, (struct sockaddr *)&sa, sizeof(sa), wake_fd,
                         timeout_ms) < 0) {
            int e = errno;
            close(fd);
            errno = e;
            URI_FAIL("connect to unix:%s: %s", u->path, strerror(e));
        }
        return fd;
    }

    struct addrinfo hints = {.ai_socktype = SOCK_STREAM}, *res, *ai;
    int rc = getaddrinfo(u->host, u->port, &hints, &res);
    if (rc)
        URI_FAIL("resolve %s: %s", u->host, gai_strerror(rc));
    int fd = -1, e = 0;
    for (ai = res; ai; ai = ai->ai_next) {
        fd = socket(ai->ai_family, ai->ai_socktype | SOCK_CLOEXEC,
                    ai->ai_protocol);
        if (fd < 0) {
            e = errno;
            continue;
        }
        if (connect_wait(fd, ai->ai_addr, ai->ai_addrlen, wake_fd,
                         timeout_ms) == 0) {
            sock_tune(fd, ai->ai_family);
            break;
        }
        e = errno;
        close(fd);
        fd = -1;
        if (e == ECANCELED)
            break;
    }
    freeaddrinfo(res);
    errno = e;
    if (fd < 0)
        URI_FAIL("connect to tcp:%s:%s: %s", u->host, u->port, strerror(e));
    return fd;
}

int mfd__sock_listen(const mfd_uri *u, char *bound, size_t boundlen,
                     char *err, size_t errlen)
{
    int one = 1;
    if (u->kind == MFD_URI_UNIX) {
        struct sockaddr_un sa = {.sun_family = AF_UNIX};
        struct stat st;
        strcpy(sa.sun_path, u->path);
        /* Replace a stale socket left by an earlier run, nothing else. */
        if (lstat(u->path, &st) == 0 && S_ISSOCK(st.st_mode))
            unlink(u->path);
        int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
        if (fd < 0)
            URI_FAIL("socket: %s", strerror(errno));
        if (bind(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0 ||
            listen(fd, 512) < 0) {
            int e = errno;
            close(fd);
            URI_FAIL("listen on unix:%s: %s", u->path, strerror(e));
        }
        snprintf(bound, boundlen, "unix:%s", u->path);
        return fd;
    }

    struct addrinfo hints = {.ai_socktype = SOCK_STREAM,
                             .ai_flags = AI_PASSIVE},
                    *res;
    int rc = getaddrinfo(u->host, u->port, &hints, &res);
    if (rc)
        URI_FAIL("resolve %s: %s", u->host, gai_strerror(rc));
    int fd = socket(res->ai_family, res->ai_socktype | SOCK_CLOEXEC,
                    res->ai_protocol);
    if (fd < 0) {
        int e = errno;
        freeaddrinfo(res);
        URI_FAIL("socket: %s", strerror(e));
    }
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    if (bind(fd, res->ai_addr, res->ai_addrlen) < 0 || listen(fd, 512) < 0) {
        int e = errno;
        close(fd);
        freeaddrinfo(res);
        URI_FAIL("listen on tcp:%s:%s: %s", u->host, u->port, strerror(e));
    }
    int family = res->ai_family;
    freeaddrinfo(res);

    struct sockaddr_storage ss;
    socklen_t sl = sizeof(ss);
    char hbuf[NI_MAXHOST], pbuf[NI_MAXSERV];
    if (getsockname(fd, (struct sockaddr *)&ss, &sl) == 0 &&
        getnameinfo((struct sockaddr *)&ss, sl, hbuf, sizeof(hbuf), pbuf,
                    sizeof(pbuf), NI_NUMERICHOST | NI_NUMERICSERV) == 0) {
        if (family == AF_INET6)
            snprintf(bound, boundlen, "tcp:[%s]:%s", hbuf, pbuf);
        else
            snprintf(bound, boundlen, "tcp:%s:%s", hbuf, pbuf);
    } else {
        snprintf(bound, boundlen, "tcp:%s:%s", u->host, u->port);
    }
    return fd;
}

int mfd__sock_accept(int lfd)
{
    struct sockaddr_storage ss;
    socklen_t sl = sizeof(ss);
    int fd = accept4(lfd, (struct sockaddr *)&ss, &sl, SOCK_CLOEXEC);
    if (fd >= 0)
        sock_tune(fd, ss.ss_family);
    return fd;
}

static uint64_t now_ms(void)
{
    return mfd__now_us() / 1000;
}

int mfd__poll_readable(struct pollfd *p, nfds_t n, int timeout_ms)
{
    void *tls = mfd__tls_of(p[0].fd);
    if (tls && mfd__tls_pending(tls)) {
        p[0].revents = POLLIN;
        for (nfds_t i = 1; i < n; i++)
            p[i].revents = 0;
        return 1;
    }
    return poll(p, n, timeout_ms);
}

/*
 * Waits for fd to be readable (POLLIN: a TLS session's decrypted bytes
 * count) or writable (POLLOUT), or for wake_fd, until the absolute
 * deadline (0: none). 0 when fd is ready (or has an error the next call
 * reports).
 */
static int wait_io(int fd, short events, int wake_fd, uint64_t deadline)
{
    struct pollfd p[2] = {{.fd = fd, .events = events},
                          {.fd = wake_fd, .events = POLLIN}};
    nfds_t n = wake_fd >= 0 ? 2 : 1;
    for (;;) {
        int left = -1;
        if (deadline) {
            uint64_t now = now_ms();
            left = now >= deadline ? 0 : (int)(deadline - now);
        }
        int rc = events == POLLIN ? mfd__poll_readable(p, n, left)
                                  : poll(p, n, left);
        if (rc > 0 && wake_fd >= 0 && (p[1].revents & POLLIN))
            return MFD_IO_WOKEN;
        if (rc > 0)
            return 0;
        if (rc == 0)
            return MFD_IO_TIMEOUT;
        if (errno != EINTR)
            return MFD_IO_ERROR;
    }
}

void mfd__sock_close(int fd)
{
    if (fd < 0)
        return;
    mfd__tls_forget(fd, true);
    close(fd);
}

int mfd__read_full_timeout(int fd, void *buf, size_t len, int timeout_ms)
{
    return mfd__read_full_wake(fd, -1, buf, len, timeout_ms);
}

/* The read loop of all the *_full reads; lowat NULL, or no deadline. */
static int read_full(int fd, int *lowat, int wake_fd, void *buf, size_t len,
                     int timeout_ms)
{
    size_t done = 0;
    uint64_t deadline = timeout_ms >= 0 ? now_ms() + (uint64_t)timeout_ms : 0;
    if (timeout_ms == 0)
        deadline = 1; /* already passed */
    void *tls = mfd__tls_of(fd);
    bool promise = tls && lowat && *lowat;
    int rc = MFD_IO_OK;
    while (done < len) {
        bool marked = !tls && lowat_set(fd, lowat, len - done);
        if (promise)
            mfd__tls_promise(tls, len - done);
        if (deadline || wake_fd >= 0) {
            int w = wait_io(fd, POLLIN, wake_fd, deadline);
            if (w) {
                rc = w;
                break;
            }
        }
        struct iovec v = {(char *)buf + done, len - done};
        ssize_t n = tls      ? mfd__tls_read(tls, v.iov_base, v.iov_len)
                    : marked ? read_marked(fd, &v, 1)
                             : read(fd, v.iov_base, v.iov_len);
        if (n > 0) {
            done += (size_t)n;
        } else if (n == 0) {
            rc = done ? MFD_IO_TRUNCATED : MFD_IO_EOF;
            break;
        } else if (errno != EINTR) {
            rc = MFD_IO_ERROR;
            break;
        }
    }
    if (promise)
        mfd__tls_promise(tls, 0);
    return rc;
}

int mfd__read_full_wake(int fd, int wake_fd, void *buf, size_t len,
                        int timeout_ms)
{
    return read_full(fd, NULL, wake_fd, buf, len, timeout_ms);
}

int mfd__read_full(int fd, void *buf, size_t len)
{
    return read_full(fd, NULL, -1, buf, len, -1);
}

int mfd__read_full_lowat(int fd, int *lowat, void *buf, size_t len)
{
    return read_full(fd, lowat, -1, buf, len, -1);
}

/* Advances an iovec array past n bytes; returns the new start index. */
static int iov_advance(struct iovec *iov, int iovcnt, int i, size_t n)
{
    while (i < iovcnt && n >= iov[i].iov_len) {
        n -= iov[i].iov_len;
        i++;
    }
    if (i < iovcnt) {
        iov[i].iov_base = (char *)iov[i].iov_base + n;
        iov[i].iov_len -= n;
    }
    return i;
}

int mfd__readv_full(int fd, struct iovec *iov, int iovcnt)
{
    return mfd__readv_full_lowat(fd, NULL, iov, iovcnt);
}

int mfd__readv_full_lowat(int fd, int *lowat, struct iovec *iov, int iovcnt)
{
    int i = 0;
    size_t got = 0, want = 0;
    void *tls = mfd__tls_of(fd);
    int rc = MFD_IO_OK;
    for (int k = 0; lowat && *lowat && k < iovcnt; k++)
        want += iov[k].iov_len; /* only a marked read needs the total */
    /* A TLS read fills iov[i] alone, and reads nothing into an empty one. */
    while (i < iovcnt && iov[i].iov_len == 0)
        i++;
    while (i < iovcnt) {
        int cnt = MFD_IOV_BATCH(iovcnt - i);
        if (tls && want)
            mfd__tls_promise(tls, want - got);
        ssize_t n = tls ? mfd__tls_read(tls, iov[i].iov_base, iov[i].iov_len)
                    : lowat_set(fd, lowat, want - got)
                        ? read_marked(fd, iov + i, cnt)
                        : readv(fd, iov + i, cnt);
        if (n > 0) {
            got += (size_t)n;
            i = iov_advance(iov, iovcnt, i, (size_t)n);
        } else if (n == 0) {
            rc = got ? MFD_IO_TRUNCATED : MFD_IO_EOF;
            break;
        } else if (errno != EINTR) {
            rc = MFD_IO_ERROR;
            break;
        }
        /* Skip empty entries so readv never returns 0 for a full array. */
        while (i < iovcnt && iov[i].iov_len == 0)
            i++;
    }
    if (tls && want)
        mfd__tls_promise(tls, 0);
    return rc;
}

int mfd__writev_full(int fd, struct iovec *iov, int iovcnt)
{
    return mfd__writev_full_flags(fd, iov, iovcnt, 0);
}

/*
 * The kernel gives each wait for buffer space the whole send timeout, so a
 * send cut short by it has already waited that long without progress;
 * counting the part as progress would let the next send wait the whole
 * timeout again.
 */
bool mfd__send_timed_out(int fd, uint64_t t0_us)
{
    struct timeval tv;
    socklen_t l = sizeof(tv);
    if (getsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, &l) ||
        (!tv.tv_sec && !tv.tv_usec))
        return false;
    uint64_t limit_us = (uint64_t)tv.tv_sec * 1000000u + (uint64_t)tv.tv_usec;
    return mfd__now_us() - t0_us >= limit_us;
}

int mfd__writev_full_flags(int fd, struct iovec *iov, int iovcnt, int flags)
{
    void *tls = mfd__tls_of(fd);
    return tls ? mfd__tls_writev(tls, iov, iovcnt)
               : mfd__sock_writev(fd, iov, iovcnt, flags);
}

int mfd__sock_writev(int fd, struct iovec *iov, int iovcnt, int flags)
{
    int i = 0;
    while (i < iovcnt && iov[i].iov_len == 0)
        i++;
    while (i < iovcnt) {
        int cnt = MFD_IOV_BATCH(iovcnt - i);
        struct msghdr msg = {.msg_iov = iov + i, .msg_iovlen = (size_t)cnt};
        uint64_t t0 = mfd__now_us();
        ssize_t n = sendmsg(fd, &msg, MSG_NOSIGNAL | flags);
        if (n > 0) {
            bool whole_batch = cnt == iovcnt - i;
            i = iov_advance(iov, iovcnt, i, (size_t)n);
            while (i < iovcnt && iov[i].iov_len == 0)
                i++;
            if (i < iovcnt && whole_batch && mfd__send_timed_out(fd, t0)) {
                errno = ETIMEDOUT;
                return MFD_IO_ERROR;
            }
        } else if (n < 0 && errno != EINTR) {
            /* A blocking socket: its send timeout passed without progress. */
            if (errno == EAGAIN || errno == EWOULDBLOCK)
                errno = ETIMEDOUT;
            return MFD_IO_ERROR;
        }
    }
    return MFD_IO_OK;
}

/* One non-blocking step of a wake-aware write: bytes taken, or -1. */
static ssize_t write_step(int fd, void *tls, struct iovec *iov, int iovcnt)
{
    if (tls)
        return mfd__tls_write_nb(tls, iov[0].iov_base, iov[0].iov_len);
    struct msghdr msg = {.msg_iov = iov,
                         .msg_iovlen = (size_t)MFD_IOV_BATCH(iovcnt)};
    return sendmsg(fd, &msg, MSG_NOSIGNAL | MSG_DONTWAIT);
}

int mfd__writev_full_wake(int fd, int wake_fd, struct iovec *iov, int iovcnt,
                          int timeout_ms, bool *torn)
{
    void *tls = mfd__tls_of(fd);
    uint64_t deadline = 0;
    int i = 0;
    *torn = false;
    while (i < iovcnt && iov[i].iov_len == 0)
        i++;
    while (i < iovcnt) {
        ssize_t n = write_step(fd, tls, iov + i, iovcnt - i);
        if (n > 0) {
            *torn = true;
            deadline = 0; /* the peer is reading: a new deadline */
            i = iov_advance(iov, iovcnt, i, (size_t)n);
            while (i < iovcnt && iov[i].iov_len == 0)
                i++;
            continue;
        }
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK)
            return MFD_IO_ERROR;
        /* TLS: the record is half in GnuTLS's hands until it goes out. */
        if (tls)
            *torn = true;
        if (!deadline && timeout_ms >= 0)
            deadline = now_ms() + (uint64_t)timeout_ms + (timeout_ms == 0);
        int w = wait_io(fd, POLLOUT, wake_fd, deadline);
        if (w)
            return w;
    }
    return MFD_IO_OK;
}

int mfd__write_full(int fd, const void *buf, size_t len)
{
    struct iovec iov = {.iov_base = (void *)buf, .iov_len = len};
    return mfd__writev_full(fd, &iov, 1);
}

const char *mfd__io_strerror(int rc)
{
    switch (rc) {
    case MFD_IO_OK:
        return "success";
    case MFD_IO_EOF:
        return "connection closed by peer";
    case MFD_IO_TRUNCATED:
        return "connection closed by peer in the middle of a message";
    case MFD_IO_TIMEOUT:
        return "timed out waiting for the peer";
    case MFD_IO_WOKEN:
        return "interrupted: the session failed or was cancelled";
    default:
        if (errno == EPROTO && mfd__tls_strerror())
            return mfd__tls_strerror();
        return strerror(errno);
    }
}
