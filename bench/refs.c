/*
 * refs.c - the reference measurements of refs.h.
 *
 * Each figure here is a ceiling: how fast this machine copies memory, scans
 * it for zeros and moves it over loopback TCP when nothing of multifd is in
 * the way. They are measured in the same run as the benchmark they sit
 * beside, because a ceiling remembered from another machine or another day
 * says nothing about the figure next to it.
 *
 * Nothing here allocates or makes a system call per page while the clock
 * runs: buffers are mapped and faulted in beforehand (except the fresh TCP
 * destination, whose faults are the very thing measured), and the I/O moves
 * 512 KiB to 4 MiB per call.
 */
#include "refs.h"

#include "ram/zero.h"
#include "transport/transport.h"

#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

enum {
    REF_PAGE = 4096,
    /* The sender's write size, as refs.h promises. */
    REF_SEND_CHUNK = 512 * 1024,
    /*
     * The reused per-stream buffers, and the most one recv asks for. Several
     * sends' worth, so that the sender cycles through more than one chunk and
     * the receiver's MSG_WAITALL wakes up rarely.
     */
    REF_STREAM_BUF = 4 * 1024 * 1024,
    /* No wait in this file may block longer than this. */
    REF_TIMEOUT_MS = 30 * 1000,
    /* Far more than a benchmark wants, and well below the listen backlog. */
    REF_MAX_STREAMS = 256,
    REF_MAX_THREADS = 1024,
};

static uint64_t now_ns(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

/* Bytes per nanosecond is 10^9 bytes per second, the unit refs.h reports. */
static double gbps(uint64_t bytes, uint64_t ns)
{
    return ns ? (double)bytes / (double)ns : -1.0;
}

static void *map_anon(size_t len, int extra_flags)
{
    void *p = mmap(NULL, len, PROT_READ | PROT_WRITE,
                   MAP_PRIVATE | MAP_ANONYMOUS | extra_flags, -1, 0);

    return p == MAP_FAILED ? NULL : p;
}

/*
 * A start gate, so that every worker thread exists before the clock starts
 * and so that a failed pthread_create can send the ones already running home
 * instead of leaving them waiting on a barrier that will never fill.
 * The mutex protects `state`: 0 while closed, 1 to go, -1 to abort.
 */
struct gate {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int state;
};

static void gate_init(struct gate *g)
{
    pthread_mutex_init(&g->mu, NULL);
    pthread_cond_init(&g->cv, NULL);
    g->state = 0;
}

static void gate_destroy(struct gate *g)
{
    pthread_cond_destroy(&g->cv);
    pthread_mutex_destroy(&g->mu);
}

static void gate_open(struct gate *g, int state)
{
    pthread_mutex_lock(&g->mu);
    g->state = state;
    pthread_cond_broadcast(&g->cv);
    pthread_mutex_unlock(&g->mu);
}

/* Returns 1 to go, -1 to abort. */
static int gate_wait(struct gate *g)
{
    int state;

    pthread_mutex_lock(&g->mu);
    while (g->state == 0)
        pthread_cond_wait(&g->cv, &g->mu);
    state = g->state;
    pthread_mutex_unlock(&g->mu);
    return state;
}

double mfd_ref_memcpy_gbps(size_t bytes, int reps)
{
    unsigned char *src, *dst;
    uint64_t best = UINT64_MAX;

    if (bytes == 0)
        return -1.0;
    if (reps < 1)
        reps = 1;
    src = map_anon(bytes, 0);
    dst = map_anon(bytes, 0);
    if (!src || !dst) {
        if (src)
            munmap(src, bytes);
        if (dst)
            munmap(dst, bytes);
        return -1.0;
    }
    /*
     * Fault both in first, and the source with non-zero bytes so that it is
     * backed by real pages rather than the shared zero page, which would sit
     * in cache and flatter the copy.
     */
    memset(src, 0x5a, bytes);
    memset(dst, 0, bytes);
    for (int i = 0; i < reps; i++) {
        uint64_t t0 = now_ns();

        memcpy(dst, src, bytes);
        /* The copied bytes must count as used, or the copy may be dropped. */
        __asm__ __volatile__("" : : "r"(dst) : "memory");
        uint64_t dt = now_ns() - t0;
        if (dt < best)
            best = dt;
    }
    munmap(src, bytes);
    munmap(dst, bytes);
    return gbps(bytes, best);
}

/* One zero-scan thread's share; `nonzero` keeps the result observable. */
struct scan_job {
    pthread_t tid;
    struct gate *gate;
    const unsigned char *p;
    size_t len;
    size_t nonzero;
};

static void *scan_main(void *arg)
{
    struct scan_job *job = arg;
    size_t nonzero = 0;

    if (gate_wait(job->gate) < 0)
        return NULL;
    /* Page by page, as the sender tests pages, not one call over the lot. */
    for (size_t off = 0; off < job->len; off += REF_PAGE) {
        size_t n = job->len - off < REF_PAGE ? job->len - off : REF_PAGE;

        if (!mfd__buffer_is_zero(job->p + off, n))
            nonzero++;
    }
    job->nonzero = nonzero;
    return NULL;
}

double mfd_ref_zero_scan_gbps(const void *buf, size_t len, int threads)
{
    struct scan_job *jobs;
    struct gate gate;
    size_t pages, each;
    uint64_t t0, t1;
    int started = 0;

    if (!buf || len == 0 || threads < 1 || threads > REF_MAX_THREADS)
        return -1.0;
    jobs = calloc((size_t)threads, sizeof(*jobs));
    if (!jobs)
        return -1.0;
    gate_init(&gate);
    /* Whole pages per thread, so that no page is split between two. */
    pages = (len + REF_PAGE - 1) / REF_PAGE;
    each = pages / (size_t)threads * REF_PAGE;
    for (int i = 0; i < threads; i++) {
        jobs[i].gate = &gate;
        jobs[i].p = (const unsigned char *)buf + each * (size_t)i;
        jobs[i].len = i == threads - 1 ? len - each * (size_t)i : each;
    }
    for (; started < threads; started++)
        if (pthread_create(&jobs[started].tid, NULL, scan_main,
                           &jobs[started]) != 0)
            break;
    if (started < threads) {
        gate_open(&gate, -1);
        for (int i = 0; i < started; i++)
            pthread_join(jobs[i].tid, NULL);
        gate_destroy(&gate);
        free(jobs);
        return -1.0;
    }
    t0 = now_ns();
    gate_open(&gate, 1);
    for (int i = 0; i < threads; i++)
        pthread_join(jobs[i].tid, NULL);
    t1 = now_ns();
    gate_destroy(&gate);
    free(jobs);
    return gbps(len, t1 - t0);
}

/*
 * One TCP stream, on either side. The sender's fields live in the parent,
 * the receiver's in the child's copy of the same array; each is written by
 * the main thread before its worker starts and read back after the join.
 */
struct tcp_stream {
    pthread_t tid;
    struct gate *gate; /* sender only */
    int fd;
    bool claimed;      /* parent: the child has named this stream's index */
    uint64_t share;
    unsigned char *buf;
    size_t buf_len;
    int err;           /* errno of the failure, 0 if none */
};

/* Equal page-aligned shares; the last stream takes the remainder. */
static uint64_t tcp_share(uint64_t bytes, int streams, int i)
{
    uint64_t each = bytes / (uint64_t)streams / REF_PAGE * REF_PAGE;

    return i == streams - 1 ? bytes - each * (uint64_t)(streams - 1) : each;
}

static void set_timeouts(int fd)
{
    struct timeval tv = { .tv_sec = REF_TIMEOUT_MS / 1000 };

    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
}

/*
 * Reads exactly `len` bytes before `deadline` (now_ns time), for the small
 * control messages: the child's stream index and its acknowledgement.
 */
static int recv_by(int fd, void *p, size_t len, uint64_t deadline)
{
    unsigned char *b = p;

    while (len > 0) {
        uint64_t now = now_ns();
        struct pollfd pfd = { .fd = fd, .events = POLLIN };
        ssize_t n;
        int r;

        if (now >= deadline)
            return -1;
        r = poll(&pfd, 1, (int)((deadline - now) / 1000000 + 1));
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0)
            return -1;
        n = recv(fd, b, len, MSG_DONTWAIT);
        if (n < 0 && (errno == EINTR || errno == EAGAIN))
            continue;
        if (n <= 0)
            return -1;
        b += n;
        len -= (size_t)n;
    }
    return 0;
}

/*
 * Moves the stream's share through its buffer, `chunk` bytes at a time at
 * most: sends it, or receives it. The buffer position wraps round a reused
 * buffer; a fresh receive buffer is exactly the share, so it never wraps and
 * every page is first touched by the kernel's copy.
 */
static void *tcp_pump(struct tcp_stream *s, bool sending, size_t chunk)
{
    uint64_t left = s->share;
    size_t pos = 0;

    while (left > 0) {
        size_t want = s->buf_len - pos;
        ssize_t n;

        if (want > chunk)
            want = chunk;
        if (want > left)
            want = (size_t)left;
        n = sending ? send(s->fd, s->buf + pos, want, MSG_NOSIGNAL)
                    : recv(s->fd, s->buf + pos, want, MSG_WAITALL);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0) {
            /* A timeout or an early EOF: the peer is gone or stuck. */
            s->err = n < 0 ? errno : EPIPE;
            return NULL;
        }
        pos += (size_t)n;
        if (pos == s->buf_len)
            pos = 0;
        left -= (uint64_t)n;
    }
    return NULL;
}

static void *tcp_send_main(void *arg)
{
    struct tcp_stream *s = arg;

    if (gate_wait(s->gate) < 0)
        return NULL;
    return tcp_pump(s, true, REF_SEND_CHUNK);
}

static void *tcp_recv_main(void *arg)
{
    return tcp_pump(arg, false, REF_STREAM_BUF);
}

/*
 * The receiving process. Besides plain system calls it uses only pthreads,
 * which glibc supports in the child of a fork, and no malloc; callers should
 * still measure before they start threads of their own. Returns the exit
 * status. Any failure exits without acknowledging, which the parent sees as
 * EOF.
 */
static int tcp_child(int lfd, struct tcp_stream *st, int streams,
                     uint64_t bytes, int fresh_dest)
{
    int started = 0, ok = 1;

    for (int i = 0; i < streams; i++) {
        struct pollfd pfd = { .fd = lfd, .events = POLLIN };
        int r;

        /* Polled first, so that a parent that never connects cannot hang us. */
        while ((r = poll(&pfd, 1, REF_TIMEOUT_MS)) < 0 && errno == EINTR)
            ;
        if (r <= 0)
            return 1;
        st[i].fd = accept(lfd, NULL, NULL);
        if (st[i].fd < 0)
            return 1;
        set_timeouts(st[i].fd);
        st[i].share = tcp_share(bytes, streams, i);
    }
    close(lfd);

    for (int i = 0; i < streams; i++) {
        if (st[i].share == 0)
            continue;
        if (fresh_dest) {
            /*
             * Like a destination's guest RAM: reserved but untouched, so the
             * receive pays for populating every page.
             */
            st[i].buf_len = (size_t)st[i].share;
            st[i].buf = map_anon(st[i].buf_len, MAP_NORESERVE);
        } else {
            st[i].buf_len = REF_STREAM_BUF;
            st[i].buf = map_anon(st[i].buf_len, 0);
            if (st[i].buf)
                memset(st[i].buf, 0, st[i].buf_len);
        }
        if (!st[i].buf)
            return 1;
    }

    for (; started < streams; started++)
        if (pthread_create(&st[started].tid, NULL, tcp_recv_main,
                           &st[started]) != 0)
            return 1;

    /* The index tells the parent which share to send on this connection. */
    for (int i = 0; i < streams; i++) {
        uint32_t idx = (uint32_t)i;

        if (mfd__write_full(st[i].fd, &idx, sizeof(idx)) != MFD_IO_OK)
            return 1;
    }

    for (int i = 0; i < streams; i++) {
        pthread_join(st[i].tid, NULL);
        if (st[i].err)
            ok = 0;
    }
    if (!ok)
        return 1;
    for (int i = 0; i < streams; i++) {
        unsigned char ack = 'K';

        if (mfd__write_full(st[i].fd, &ack, 1) != MFD_IO_OK)
            return 1;
    }
    return 0;
}

/*
 * Waits for the child, killing it first if the run failed (our ends are
 * already closed by then, so it would exit on its own, but not before a
 * timeout if it is stuck elsewhere). True if it exited cleanly.
 */
static bool tcp_reap(pid_t pid, bool kill_it)
{
    int status;

    if (kill_it)
        kill(pid, SIGKILL);
    /*
     * ECHILD means the caller ignores SIGCHLD and the kernel reaped the
     * child; the acknowledgements have then already said how it went.
     */
    while (waitpid(pid, &status, 0) < 0)
        if (errno != EINTR)
            return errno == ECHILD;
    return WIFEXITED(status) && WEXITSTATUS(status) == 0;
}

double mfd_ref_tcp_gbps(int streams, uint64_t bytes, int fresh_dest)
{
    struct sockaddr_in addr = { .sin_family = AF_INET };
    socklen_t alen = sizeof(addr);
    struct tcp_stream *st;
    struct gate gate;
    int lfd, started = 0, one = 1;
    bool gate_live = false, failed = true;
    uint64_t t0 = 0, t1 = 0;
    pid_t pid;

    if (streams < 1 || streams > REF_MAX_STREAMS || bytes == 0 ||
        (uint64_t)(size_t)bytes != bytes)
        return -1.0;
    /* Allocated before fork so that the child needs no malloc of its own. */
    st = calloc((size_t)streams, sizeof(*st));
    if (!st)
        return -1.0;
    for (int i = 0; i < streams; i++)
        st[i].fd = -1;

    /* Listening before fork, so that the parent's connects cannot race it. */
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    lfd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (lfd < 0)
        goto out_free;
    if (bind(lfd, (struct sockaddr *)&addr, sizeof(addr)) < 0 ||
        listen(lfd, streams) < 0 ||
        getsockname(lfd, (struct sockaddr *)&addr, &alen) < 0) {
        close(lfd);
        goto out_free;
    }

    pid = fork();
    if (pid < 0) {
        close(lfd);
        goto out_free;
    }
    if (pid == 0)
        _exit(tcp_child(lfd, st, streams, bytes, fresh_dest));
    close(lfd);

    /*
     * Connect in order; the child numbers the connections in the order it
     * accepts them and sends each its number, so no assumption is made about
     * the accept queue's order.
     */
    for (int i = 0; i < streams; i++) {
        int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);

        if (fd < 0)
            goto out_kill;
        st[i].fd = fd;
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
        set_timeouts(fd);
        if (connect(fd, (struct sockaddr *)&addr, sizeof(addr)) < 0)
            goto out_kill;
    }
    {
        uint64_t deadline = now_ns() + (uint64_t)REF_TIMEOUT_MS * 1000000u;

        for (int i = 0; i < streams; i++) {
            uint32_t idx;

            if (recv_by(st[i].fd, &idx, sizeof(idx), deadline) < 0 ||
                idx >= (uint32_t)streams || st[idx].claimed)
                goto out_kill;
            /* Claims mark indices seen; the share belongs to connection i. */
            st[idx].claimed = true;
            st[i].share = tcp_share(bytes, streams, (int)idx);
        }
    }

    /* Non-zero bytes, so that the source pages are real and faulted in. */
    for (int i = 0; i < streams; i++) {
        st[i].buf_len = REF_STREAM_BUF;
        st[i].buf = map_anon(st[i].buf_len, 0);
        if (!st[i].buf)
            goto out_kill;
        memset(st[i].buf, 0xa5, st[i].buf_len);
    }

    gate_init(&gate);
    gate_live = true;
    for (; started < streams; started++) {
        st[started].gate = &gate;
        if (pthread_create(&st[started].tid, NULL, tcp_send_main,
                           &st[started]) != 0)
            goto out_kill;
    }
    t0 = now_ns();
    gate_open(&gate, 1);
    for (int i = 0; i < streams; i++)
        pthread_join(st[i].tid, NULL);
    started = 0;
    for (int i = 0; i < streams; i++)
        if (st[i].err)
            goto out_kill;
    {
        uint64_t deadline = now_ns() + (uint64_t)REF_TIMEOUT_MS * 1000000u;

        for (int i = 0; i < streams; i++) {
            unsigned char ack;

            if (recv_by(st[i].fd, &ack, 1, deadline) < 0 || ack != 'K')
                goto out_kill;
        }
    }
    t1 = now_ns();
    failed = false;

out_kill:
    if (started > 0) {
        gate_open(&gate, -1);
        for (int i = 0; i < started; i++)
            pthread_join(st[i].tid, NULL);
    }
    if (gate_live)
        gate_destroy(&gate);
    for (int i = 0; i < streams; i++) {
        if (st[i].fd >= 0)
            close(st[i].fd);
        if (st[i].buf)
            munmap(st[i].buf, st[i].buf_len);
    }
    if (!tcp_reap(pid, failed))
        failed = true;
out_free:
    free(st);
    return failed ? -1.0 : gbps(bytes, t1 - t0);
}
