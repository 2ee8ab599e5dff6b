/*
 * zerocopy.c - MSG_ZEROCOPY sends and their completions.
 *
 * A zero-copy sendmsg pins the pages it points at and returns at once; the
 * kernel reports each call's completion (a numbered range of calls) on the
 * socket's error queue once the data left, and whether it had to copy the
 * data after all (loopback always does). Until then the pages must stay
 * mapped - they may change: such a page is dirty and is sent again.
 */
#include <errno.h>
#include <stdbool.h>
#include <time.h>
#include <linux/errqueue.h>
#include <netinet/in.h>
#include <poll.h>
#include <string.h>
#include <sys/socket.h>

#include "common/util.h"
#include "transport/transport.h"

#ifndef SO_ZEROCOPY
#define SO_ZEROCOPY 60
#endif
#ifndef MSG_ZEROCOPY
#define MSG_ZEROCOPY 0x4000000
#endif
#ifndef SO_EE_ORIGIN_ZEROCOPY
#define SO_EE_ORIGIN_ZEROCOPY 5
#endif
#ifndef SO_EE_CODE_ZEROCOPY_COPIED
#define SO_EE_CODE_ZEROCOPY_COPIED 1
#endif

int mfd__zc_enable(int fd)
{
    int one = 1;
    return setsockopt(fd, SOL_SOCKET, SO_ZEROCOPY, &one, sizeof(one));
}

int mfd__zc_writev(int fd, struct iovec *iov, int iovcnt, int *pos,
                   uint64_t *calls)
{
    int i = *pos;
    while (i < iovcnt && iov[i].iov_len == 0)
        i++;
    while (i < iovcnt) {
        int batch = iovcnt - i < 1024 ? iovcnt - i : 1024;
        struct msghdr msg = {.msg_iov = iov + i, .msg_iovlen = (size_t)batch};
        ssize_t n = sendmsg(fd, &msg, MSG_NOSIGNAL | MSG_ZEROCOPY);
        if (n > 0) {
            (*calls)++;
            size_t left = (size_t)n;
            while (i < iovcnt && left >= iov[i].iov_len) {
                left -= iov[i].iov_len;
                iov[i].iov_len = 0;
                i++;
            }
            if (left) {
                iov[i].iov_base = (uint8_t *)iov[i].iov_base + left;
                iov[i].iov_len -= left;
            }
            while (i < iovcnt && iov[i].iov_len == 0)
                i++;
        } else if (n < 0 && errno != EINTR) {
            *pos = i;
            return MFD_IO_ERROR;
        }
    }
    *pos = i;
    return MFD_IO_OK;
}

int mfd__zc_reap(int fd, int wake_fd, int timeout_ms, uint64_t *done,
                 uint64_t *copied)
{
    bool waited = false, reaped = false;
    for (;;) {
        char control[128];
        struct msghdr msg = {.msg_control = control,
                             .msg_controllen = sizeof(control)};
        ssize_t n = recvmsg(fd, &msg, MSG_ERRQUEUE | MSG_DONTWAIT);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
            /* Waits only while nothing came: the caller counts again. */
            if (timeout_ms == 0 || waited || reaped)
                return 0;
            /* POLLERR is reported whatever the events asked for. */
            struct pollfd p[2] = {{.fd = fd, .events = 0},
                                  {.fd = wake_fd, .events = POLLIN}};
            int r = poll(p, wake_fd >= 0 ? 2 : 1, timeout_ms);
            if (r < 0 && errno != EINTR)
                return -1;
            if (r > 0 && wake_fd >= 0 && (p[1].revents & POLLIN)) {
                errno = ECANCELED;
                return -1;
            }
            /* POLLERR with an empty queue: the socket's own error. */
            int err = 0;
            socklen_t el = sizeof(err);
            if (r > 0 && (p[0].revents & (POLLERR | POLLHUP)) &&
                !getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &el) && err) {
                errno = err;
                return -1;
            }
            waited = true;
            continue;
        }
        if (n < 0)
            return -1;
        for (struct cmsghdr *c = CMSG_FIRSTHDR(&msg); c;
             c = CMSG_NXTHDR(&msg, c)) {
            if (!((c->cmsg_level == SOL_IP && c->cmsg_type == IP_RECVERR) ||
                  (c->cmsg_level == SOL_IPV6 &&
                   c->cmsg_type == IPV6_RECVERR)))
                continue;
            struct sock_extended_err e;
            memcpy(&e, CMSG_DATA(c), sizeof(e));
            if (e.ee_origin != SO_EE_ORIGIN_ZEROCOPY || e.ee_errno) {
                errno = e.ee_errno ? (int)e.ee_errno : EIO;
                return -1;
            }
            uint64_t count = (uint32_t)(e.ee_data - e.ee_info) + 1u;
            *done += count;
            reaped = true;
            if (e.ee_code & SO_EE_CODE_ZEROCOPY_COPIED)
                *copied += count;
        }
    }
}
