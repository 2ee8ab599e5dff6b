/*
 * hostile.c - an independent multifd peer, written from shared/PROTOCOL.md
 * alone, used to test the real implementation from the outside.
 *
 *   hostile CASE URI [DIR]
 *   hostile gen DIR
 *   hostile selftest
 *   hostile list
 *
 * Most cases play a SOURCE against a destination (`multifd recv`) listening
 * at URI; DIR, when given, receives one file per block holding what the
 * destination must end up with, so the driver can compare byte for byte.
 * Cases named `dest-*` play a DESTINATION listening at URI for a real
 * `multifd send`; DIR then receives the blocks as this peer rebuilt them.
 * `gen DIR` writes the block files a `multifd send` run migrates.
 *
 * The program speaks the wire format byte for byte by hand, on purpose: it
 * shares no code with the library, so a misreading of the protocol on either
 * side shows up as a disagreement instead of cancelling out. Compressed
 * payloads (PROTOCOL.md 2.3) are made with zlib, libzstd and liblz4 called
 * directly, framed here as the protocol says.
 *
 * Output is line oriented on stdout so that the driver can grep it:
 *   DONE                       the destination sent DONE
 *   ERROR-RECORD code=N msg=M  the peer sent an ERROR record
 *   NO-ERROR-RECORD: why       the peer closed (or stayed silent) without one
 *   NOTE: text                 something worth reporting that is not a failure
 *   HOSTILE-FAIL: why          this peer saw a deviation; exit status 1
 * Exit status: 0 when the scenario ran as the case expects, 1 on a detected
 * deviation, 2 on a usage or local error.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <netdb.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include <lz4.h>
#include <xxhash.h>
#include <zlib.h>
#include <zstd.h>

#define MAIN_MAGIC 0x4D464443u
#define DATA_MAGIC 0x11223344u
#define PROTO_VERSION 1u

#define REC_HELLO 0x0001u
#define REC_BLOCK 0x0002u
#define REC_SETUP_END 0x0003u
#define REC_ZERO_PAGES 0x0010u
#define REC_ITER_END 0x0011u
#define REC_DEVICE_STATE 0x0020u
#define REC_DIGESTS 0x0021u
#define REC_COMPLETE 0x0022u
#define REC_CKPT_BEGIN 0x0030u
#define REC_CKPT_END 0x0031u
#define REC_CANCEL 0x0040u
#define REC_HEARTBEAT 0x80000050u
#define REC_READY 0x1001u
#define REC_DONE 0x1002u
#define REC_CKPT_ACK 0x1003u
#define REC_ERROR 0x2000u
#define REC_OPTIONAL 0x80000000u
#define REC_MAX_LEN (16u << 20)

#define FEAT_CRC 1ull
#define FEAT_VERIFY 2ull
#define FEAT_COLO 4ull

#define FLAG_SYNC 1u
#define FLAG_METHOD_MASK 0x3eu

/* Compression methods (PROTOCOL.md 2.3), in HELLO.method and flags bits 1..5. */
#define M_NONE 0x00u
#define M_ZLIB 0x02u
#define M_ZSTD 0x04u
#define M_LZ4 0x06u

#define ZPD_NONE 0u
#define ZPD_LEGACY 1u
#define ZPD_MULTIFD 2u

#define PACKET_BYTES 524288u
#define HDR_FIXED 320u
#define MAX_PPP 128u /* 524288 / 4096 */
#define MAX_CHANNELS 255
#define MAX_BLOCKS 8
/*
 * Room for one packet's payload: raw pages (512 KiB) or their compressed
 * chunk, which may grow a little on incompressible pages, with margin.
 */
#define PAYLOAD_CAP (2u * PACKET_BYTES + 65536u)

/* Timeouts in milliseconds: generous, the driver bounds every run anyway. */
#define IO_TIMEOUT 15000
#define ERROR_WAIT 8000

static const char *g_case = "?";

/* Set once a case has misbehaved on purpose: the peer may hang up on us. */
static bool g_tolerant;

/* ---------------------------------------------------------------------- */
/* Reporting */

static void hfail(const char *fmt, ...) __attribute__((noreturn, format(printf, 1, 2)));
static void hfail(const char *fmt, ...)
{
    va_list ap;

    va_start(ap, fmt);
    printf("HOSTILE-FAIL: ");
    vprintf(fmt, ap);
    printf("\n");
    va_end(ap);
    fflush(stdout);
    exit(1);
}

static void note(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void note(const char *fmt, ...)
{
    va_list ap;

    va_start(ap, fmt);
    printf("NOTE: ");
    vprintf(fmt, ap);
    printf("\n");
    va_end(ap);
    fflush(stdout);
}

static void die(const char *fmt, ...) __attribute__((noreturn, format(printf, 1, 2)));
static void die(const char *fmt, ...)
{
    va_list ap;

    va_start(ap, fmt);
    fprintf(stderr, "hostile: %s: ", g_case);
    vfprintf(stderr, fmt, ap);
    fprintf(stderr, "\n");
    va_end(ap);
    exit(2);
}

static void *xcalloc(size_t n, size_t sz)
{
    void *p = calloc(n ? n : 1, sz ? sz : 1);

    if (!p)
        die("out of memory");
    return p;
}

/* ---------------------------------------------------------------------- */
/* Big-endian helpers */

static void put32(uint8_t *p, uint32_t v)
{
    p[0] = v >> 24;
    p[1] = v >> 16;
    p[2] = v >> 8;
    p[3] = v;
}

static void put64(uint8_t *p, uint64_t v)
{
    put32(p, v >> 32);
    put32(p + 4, (uint32_t)v);
}

static uint32_t get32(const uint8_t *p)
{
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

static uint64_t get64(const uint8_t *p)
{
    return (uint64_t)get32(p) << 32 | get32(p + 4);
}

/* A growable byte buffer for building record bodies. */
struct buf {
    uint8_t *p;
    size_t len, cap;
};

static uint8_t *buf_grow(struct buf *b, size_t n)
{
    if (b->len + n > b->cap) {
        b->cap = (b->len + n) * 2 + 64;
        b->p = realloc(b->p, b->cap);
        if (!b->p)
            die("out of memory");
    }
    b->len += n;
    return b->p + b->len - n;
}

static void buf_32(struct buf *b, uint32_t v) { put32(buf_grow(b, 4), v); }
static void buf_64(struct buf *b, uint64_t v) { put64(buf_grow(b, 8), v); }
static void buf_mem(struct buf *b, const void *p, size_t n) { memcpy(buf_grow(b, n), p, n); }
static void buf_free(struct buf *b) { free(b->p); memset(b, 0, sizeof(*b)); }

/* ---------------------------------------------------------------------- */
/* CRC32C (Castagnoli, reflected polynomial 0x82F63B78), table driven. */

static uint32_t crc_table[256];

static void crc_init(void)
{
    for (uint32_t i = 0; i < 256; i++) {
        uint32_t c = i;

        for (int k = 0; k < 8; k++)
            c = (c & 1) ? (c >> 1) ^ 0x82F63B78u : c >> 1;
        crc_table[i] = c;
    }
}

/* Runs the register over more bytes; start with ~0 and invert at the end. */
static uint32_t crc_update(uint32_t c, const void *data, size_t n)
{
    const uint8_t *p = data;

    while (n--)
        c = crc_table[(c ^ *p++) & 0xff] ^ (c >> 8);
    return c;
}

static uint32_t crc32c(const void *data, size_t n)
{
    return ~crc_update(~0u, data, n);
}

/* ---------------------------------------------------------------------- */
/* Deterministic test data (xorshift64*), so runs are reproducible. */

static uint64_t rng = 0x9E3779B97F4A7C15ull;

static uint64_t rnd(void)
{
    rng ^= rng >> 12;
    rng ^= rng << 25;
    rng ^= rng >> 27;
    return rng * 0x2545F4914F6CDD1Dull;
}

static void fill_random(uint8_t *p, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        if ((i & 7) == 0) {
            uint64_t v = rnd();

            for (size_t k = 0; k < 8 && i + k < n; k++)
                p[i + k] = (uint8_t)(v >> (8 * k));
            i += 7;
        }
    }
}

/*
 * Fills a page with text that compresses well but not to nothing, so that
 * every method emits real compressed data (Huffman codes, zstd sequences,
 * LZ4 sequences), not the stored or raw blocks random pages give, in which
 * a flipped byte decodes to a page of the right size that nothing can fault.
 */
static void fill_text(uint8_t *p, uint32_t ps, unsigned page)
{
    char line[128];
    uint32_t o = 0;

    for (unsigned k = 0; o < ps; k++) {
        int n = snprintf(line, sizeof(line),
                         "page %04u line %03u: the quick brown fox jumps over the lazy dog %u\n",
                         page, k, (page * 7919u + k * 104729u) % 1000003u);
        uint32_t take = (uint32_t)n < ps - o ? (uint32_t)n : ps - o;

        memcpy(p + o, line, take);
        o += take;
    }
}

static bool page_is_zero(const uint8_t *p, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (p[i])
            return false;
    return true;
}

/* ---------------------------------------------------------------------- */
/* I/O with deadlines */

enum { IO_OK = 0, IO_EOF = 1, IO_TIMEDOUT = 2, IO_ERR = 3 };

static const char *rstr(int r)
{
    switch (r) {
    case IO_OK: return "ok";
    case IO_EOF: return "connection closed";
    case IO_TIMEDOUT: return "timeout";
    default: return "read error";
    }
}

static int64_t now_ms(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static int read_full(int fd, void *buf, size_t n, int timeout_ms)
{
    int64_t deadline = now_ms() + timeout_ms;
    size_t got = 0;

    while (got < n) {
        int64_t left = deadline - now_ms();
        struct pollfd p = { .fd = fd, .events = POLLIN };
        int r;
        ssize_t k;

        if (left <= 0)
            return IO_TIMEDOUT;
        r = poll(&p, 1, (int)left);
        if (r < 0 && errno == EINTR)
            continue;
        if (r < 0)
            return IO_ERR;
        if (r == 0)
            return IO_TIMEDOUT;
        k = read(fd, (char *)buf + got, n - got);
        if (k < 0 && (errno == EINTR || errno == EAGAIN))
            continue;
        if (k < 0)
            return (errno == ECONNRESET || errno == EPIPE) ? IO_EOF : IO_ERR;
        if (k == 0)
            return IO_EOF;
        got += (size_t)k;
    }
    return IO_OK;
}

/* Returns 0, or -1 with errno set (EPIPE when the peer is gone). */
static int write_all(int fd, const void *buf, size_t n)
{
    const char *p = buf;

    while (n) {
        ssize_t k = write(fd, p, n);

        if (k < 0 && errno == EINTR)
            continue;
        if (k < 0)
            return -1;
        p += k;
        n -= (size_t)k;
    }
    return 0;
}

/* Writes that must succeed in a well-behaved scenario. */
static void xwrite(int fd, const void *buf, size_t n, const char *what)
{
    if (write_all(fd, buf, n) < 0 && !g_tolerant)
        hfail("writing %s: %s", what, strerror(errno));
}

/*
 * Waits until the peer closes fd, discarding what it sends. Returns true on
 * EOF within the time, so callers can say whether a stray was closed.
 */
static bool wait_closed(int fd, int timeout_ms)
{
    int64_t deadline = now_ms() + timeout_ms;
    char junk[4096];

    for (;;) {
        int64_t left = deadline - now_ms();
        struct pollfd p = { .fd = fd, .events = POLLIN };
        ssize_t k;

        if (left <= 0 || poll(&p, 1, (int)left) <= 0)
            return false;
        k = read(fd, junk, sizeof(junk));
        if (k == 0 || (k < 0 && errno != EINTR && errno != EAGAIN))
            return true;
    }
}

/* ---------------------------------------------------------------------- */
/* Addresses */

static socklen_t parse_uri(const char *uri, struct sockaddr_storage *ss)
{
    memset(ss, 0, sizeof(*ss));
    if (strncmp(uri, "unix:", 5) == 0) {
        struct sockaddr_un *un = (struct sockaddr_un *)ss;

        if (strlen(uri + 5) >= sizeof(un->sun_path) || !uri[5])
            die("bad unix path in %s", uri);
        un->sun_family = AF_UNIX;
        strcpy(un->sun_path, uri + 5);
        return sizeof(*un);
    }
    if (strncmp(uri, "tcp:", 4) == 0) {
        char host[256];
        const char *colon = strrchr(uri + 4, ':');
        struct addrinfo hints = { .ai_socktype = SOCK_STREAM }, *ai;
        size_t hl;
        socklen_t len;
        int rc;

        if (!colon)
            die("bad tcp uri %s", uri);
        hl = (size_t)(colon - (uri + 4));
        if (hl >= sizeof(host))
            die("bad tcp uri %s", uri);
        memcpy(host, uri + 4, hl);
        host[hl] = 0;
        if (host[0] == '[' && hl >= 2 && host[hl - 1] == ']') {
            memmove(host, host + 1, hl - 2);
            host[hl - 2] = 0;
        }
        rc = getaddrinfo(host[0] ? host : NULL, colon + 1, &hints, &ai);
        if (rc)
            die("resolving %s: %s", uri, gai_strerror(rc));
        memcpy(ss, ai->ai_addr, ai->ai_addrlen);
        len = ai->ai_addrlen;
        freeaddrinfo(ai);
        return len;
    }
    die("unsupported uri %s (want unix:PATH or tcp:HOST:PORT)", uri);
}

static void set_send_timeout(int fd)
{
    struct timeval tv = { .tv_sec = IO_TIMEOUT / 1000 };

    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
}

/* Connects to uri; retries briefly in case the listener is still starting. */
static int connect_uri(const char *uri)
{
    struct sockaddr_storage ss;
    socklen_t len = parse_uri(uri, &ss);
    int64_t deadline = now_ms() + 5000;

    for (;;) {
        int fd = socket(ss.ss_family, SOCK_STREAM | SOCK_CLOEXEC, 0);

        if (fd < 0)
            die("socket: %s", strerror(errno));
        if (connect(fd, (struct sockaddr *)&ss, len) == 0) {
            set_send_timeout(fd);
            return fd;
        }
        if ((errno != ECONNREFUSED && errno != ENOENT) || now_ms() > deadline)
            hfail("connect %s: %s", uri, strerror(errno));
        close(fd);
        usleep(50000);
    }
}

static int listen_uri(const char *uri)
{
    struct sockaddr_storage ss;
    socklen_t len = parse_uri(uri, &ss);
    int one = 1;
    int fd = socket(ss.ss_family, SOCK_STREAM | SOCK_CLOEXEC, 0);

    if (fd < 0)
        die("socket: %s", strerror(errno));
    if (ss.ss_family == AF_UNIX)
        unlink(((struct sockaddr_un *)&ss)->sun_path);
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    if (bind(fd, (struct sockaddr *)&ss, len) < 0)
        die("bind %s: %s", uri, strerror(errno));
    if (listen(fd, 64) < 0)
        die("listen %s: %s", uri, strerror(errno));
    return fd;
}

/* Accepts one connection; gives up early if watch (when >= 0) hangs up. */
static int accept_timeout(int lfd, int timeout_ms, int watch)
{
    struct pollfd p[2] = { { .fd = lfd, .events = POLLIN }, { .fd = watch, .events = POLLRDHUP } };
    int fd;

    if (poll(p, watch >= 0 ? 2 : 1, timeout_ms) <= 0 || !(p[0].revents & POLLIN))
        return -1;
    fd = accept4(lfd, NULL, NULL, SOCK_CLOEXEC);
    if (fd >= 0)
        set_send_timeout(fd);
    return fd;
}

/* ---------------------------------------------------------------------- */
/* Records */

struct rec {
    uint32_t type, len;
    uint8_t *body;
};

static size_t pad8(size_t n) { return (8 - (n & 7)) & 7; }

static int send_record(int fd, uint32_t type, const void *body, uint32_t len)
{
    struct buf b = { 0 };
    int rc;

    buf_32(&b, type);
    buf_32(&b, len);
    if (len)
        buf_mem(&b, body, len);
    memset(buf_grow(&b, pad8(len)), 0, pad8(len));
    rc = write_all(fd, b.p, b.len);
    buf_free(&b);
    return rc;
}

static void xsend_record(int fd, uint32_t type, const void *body, uint32_t len, const char *what)
{
    if (send_record(fd, type, body, len) < 0 && !g_tolerant)
        hfail("sending %s: %s", what, strerror(errno));
}

/* Reads one record; *err describes a framing problem when IO_ERR is returned. */
static int read_record(int fd, struct rec *r, int timeout_ms, const char **err)
{
    uint8_t h[8], padb[8];
    int rc;

    memset(r, 0, sizeof(*r));
    *err = NULL;
    rc = read_full(fd, h, 8, timeout_ms);
    if (rc)
        return rc;
    r->type = get32(h);
    r->len = get32(h + 4);
    if (r->len > REC_MAX_LEN) {
        *err = "record length above 16 MiB";
        return IO_ERR;
    }
    r->body = xcalloc(1, r->len + 1);
    rc = read_full(fd, r->body, r->len, timeout_ms);
    if (rc == IO_OK && pad8(r->len)) {
        rc = read_full(fd, padb, pad8(r->len), timeout_ms);
        if (rc == IO_OK && !page_is_zero(padb, pad8(r->len))) {
            *err = "record padding not zero";
            return IO_ERR;
        }
    }
    return rc;
}

static void print_error_record(const struct rec *r)
{
    uint32_t code = r->len >= 4 ? get32(r->body) : 0;
    int mlen = r->len >= 4 ? (int)(r->len - 4) : 0;

    printf("ERROR-RECORD code=%" PRIu32 " msg=%.*s\n", code, mlen, (const char *)r->body + 4);
    if (r->len < 4)
        note("ERROR record body of %" PRIu32 " bytes is shorter than its u32 code", r->len);
    else if (code == 0)
        note("ERROR record code is 0, PROTOCOL.md says positive");
    if (r->len > 4 + 1024)
        note("ERROR message of %d bytes exceeds 1024", mlen);
    fflush(stdout);
}

/* ---------------------------------------------------------------------- */
/* Source side */

struct blk {
    char name[256];
    uint64_t len;
    uint8_t *mem; /* what the source has now, so what the destination must end with */
};

enum stray {
    STRAY_NONE,
    STRAY_BEFORE_MAGIC, /* wrong main magic before the session */
    STRAY_BEFORE_SHORT, /* closes before 4 bytes */
    STRAY_FOREIGN_UUID, /* data init with another UUID, mid channel setup */
    STRAY_DATA_VERSION, /* data init with version 2, mid channel setup */
    STRAY_LATE_GARBAGE, /* garbage connection after all channels are set up */
    STRAY_LATE_FOREIGN, /* foreign-UUID data init after all channels are set up */
    STRAY_LATE_IDLE,    /* connection that says nothing, held open until DONE */
};

struct src {
    const char *uri, *outdir;
    int main_fd;
    int nch;
    int dfd[MAX_CHANNELS];
    uint8_t uuid[16];
    uint32_t ps, ppp, zpd, method;
    int32_t level;     /* HELLO.level, and the level this peer's encoders use */
    uint64_t feat, acc;
    int nb;
    struct blk b[MAX_BLOCKS];
    uint64_t pkt_num;
    uint64_t n_normal, n_zero, n_packets;
    unsigned rr;       /* round-robin cursor over channels */
    uint64_t iter;     /* last ITERATION_END sent */
    int stray_fd[4];
    int nstray;
    /* Per channel, one compression stream for the whole migration (2.3). */
    z_stream *zs[MAX_CHANNELS];
    ZSTD_CCtx *zc[MAX_CHANNELS];
};

static size_t hdr_len(uint32_t ppp) { return HDR_FIXED + 8u * ppp; }

static void src_init(struct src *s, const char *uri, const char *outdir, uint32_t ps, int nch,
                     uint32_t zpd, uint64_t feat)
{
    int fd;

    memset(s, 0, sizeof(*s));
    s->uri = uri;
    s->outdir = outdir;
    s->main_fd = -1;
    s->ps = ps;
    s->ppp = PACKET_BYTES / ps;
    s->nch = nch;
    s->zpd = zpd;
    s->feat = feat;
    fd = open("/dev/urandom", O_RDONLY | O_CLOEXEC);
    if (fd < 0 || read(fd, s->uuid, 16) != 16)
        die("cannot read /dev/urandom");
    close(fd);
    for (int i = 0; i < MAX_CHANNELS; i++)
        s->dfd[i] = -1;
}

/*
 * The standard data set: ram0 has 3 random pages; ram1 has 300 pages mixing
 * zero pages, random pages and a page whose only non-zero byte is its last
 * one (a destination or source that looks at too few bytes gets it wrong).
 */
static void gen_blocks(struct blk *b, int *nb, uint32_t ps, bool big)
{
    rng = 0x9E3779B97F4A7C15ull;
    memset(b, 0, sizeof(*b) * 2);
    strcpy(b[0].name, "ram0");
    b[0].len = 3ull * ps;
    b[0].mem = xcalloc(1, b[0].len);
    fill_random(b[0].mem, b[0].len);
    strcpy(b[1].name, "ram1");
    b[1].len = 300ull * ps;
    b[1].mem = xcalloc(1, b[1].len);
    for (uint64_t i = 0; i < 300; i++) {
        uint8_t *p = b[1].mem + i * ps;

        if (i == 17)
            p[ps - 1] = 0x5a;
        else if (i % 5 == 0 || i % 7 == 3 || (i >= 200 && i < 240))
            continue;
        else
            fill_random(p, ps);
    }
    *nb = 2;
    if (big) {
        /*
         * ram2: 8192 pages (32 MiB at 4 KiB), long zero runs and scattered
         * zero pages: many packets per channel, and in legacy mode more
         * zero pages than one ZERO_PAGES record may carry.
         */
        memset(&b[2], 0, sizeof(b[2]));
        strcpy(b[2].name, "ram2");
        b[2].len = 8192ull * ps;
        b[2].mem = xcalloc(1, b[2].len);
        for (uint64_t i = 0; i < 8192; i++)
            if ((i / 97) % 3 == 0 && i % 13 != 6)
                fill_random(b[2].mem + i * ps, ps);
        *nb = 3;
    }
}

static void write_blocks(const char *dir, const struct blk *b, int nb)
{
    char path[4096];

    if (!dir)
        return;
    for (int i = 0; i < nb; i++) {
        FILE *f;

        snprintf(path, sizeof(path), "%s/%s", dir, b[i].name);
        f = fopen(path, "wb");
        if (!f || fwrite(b[i].mem, 1, b[i].len, f) != b[i].len || fclose(f))
            die("writing %s: %s", path, strerror(errno));
    }
}

static void src_connect_main(struct src *s, uint32_t version)
{
    uint8_t p[16] = { 0 };

    s->main_fd = connect_uri(s->uri);
    put32(p, MAIN_MAGIC);
    put32(p + 4, version);
    xwrite(s->main_fd, p, 16, "main preamble");
}

static void src_read_preamble(struct src *s, uint32_t want_version)
{
    uint8_t p[16];
    int r = read_full(s->main_fd, p, 16, IO_TIMEOUT);

    if (r)
        hfail("reading destination preamble: %s", rstr(r));
    if (get32(p) != MAIN_MAGIC)
        hfail("destination preamble magic 0x%08" PRIx32 ", want 0x%08x", get32(p), MAIN_MAGIC);
    if (want_version && get32(p + 4) != want_version)
        hfail("destination preamble version %" PRIu32 ", want %" PRIu32, get32(p + 4),
              want_version);
    if (!page_is_zero(p + 8, 8))
        hfail("destination preamble reserved bytes not zero");
}

static void src_hello(struct src *s, uint32_t ps, uint32_t ppp, uint32_t nch, uint32_t method,
                      uint32_t nb, uint32_t body_len)
{
    struct buf b = { 0 };

    buf_mem(&b, s->uuid, 16);
    buf_32(&b, ps);
    buf_32(&b, ppp);
    buf_32(&b, nch);
    buf_32(&b, method);
    buf_32(&b, (uint32_t)s->level);
    buf_32(&b, s->zpd);
    buf_64(&b, s->feat);
    buf_32(&b, nb);
    buf_32(&b, 0);
    while (b.len < body_len)
        buf_32(&b, 0);
    xsend_record(s->main_fd, REC_HELLO, b.p, body_len, "HELLO");
    buf_free(&b);
}

static void src_block(struct src *s, uint64_t len, uint32_t index, const char *name)
{
    struct buf b = { 0 };

    buf_64(&b, len);
    buf_32(&b, index);
    buf_32(&b, (uint32_t)strlen(name));
    buf_mem(&b, name, strlen(name));
    xsend_record(s->main_fd, REC_BLOCK, b.p, (uint32_t)b.len, "BLOCK");
    buf_free(&b);
}

/* Set: the optional records of g_optional go out with an empty body (HEARTBEAT's). */
static bool g_optional_empty;

static void src_optional(struct src *s, uint32_t type)
{
    static const char junk[13] = "optional junk";

    if (g_optional_empty)
        xsend_record(s->main_fd, REC_OPTIONAL | type, NULL, 0, "optional record");
    else
        xsend_record(s->main_fd, REC_OPTIONAL | type, junk, sizeof(junk), "optional record");
}

/*
 * When non-zero, the low bits of an optional record type sent at every point
 * of the main stream where a record may go: between BLOCKs, before
 * SETUP_END, mid pass, before ITERATION_END, before DIGESTS.
 */
static uint32_t g_optional;

/*
 * Set: src_pass sends its packets but neither the SYNC packets nor the
 * ITERATION_END: a pass cut off in the middle.
 */
static bool g_pass_no_end;

/*
 * Set: the first packet with pages of the last pass goes out with 16 bytes
 * in the middle of its payload XORed with 0xA5 (after its CRC, if any).
 */
static bool g_flip;

static void src_setup(struct src *s)
{
    src_hello(s, s->ps, s->ppp, (uint32_t)s->nch, s->method, (uint32_t)s->nb, 56);
    for (int i = 0; i < s->nb; i++) {
        if (g_optional)
            src_optional(s, g_optional);
        src_block(s, s->b[i].len, (uint32_t)i, s->b[i].name);
    }
    if (g_optional)
        src_optional(s, g_optional);
    xsend_record(s->main_fd, REC_SETUP_END, NULL, 0, "SETUP_END");
}

/* Reads READY; an ERROR here fails the case with the destination's message. */
static void src_ready(struct src *s)
{
    struct rec r;
    const char *err;
    int rc;

    for (;;) {
        rc = read_record(s->main_fd, &r, IO_TIMEOUT, &err);
        if (rc)
            hfail("waiting for READY: %s", err ? err : rstr(rc));
        if (r.type & REC_OPTIONAL) {
            free(r.body);
            continue;
        }
        break;
    }
    if (r.type == REC_ERROR) {
        print_error_record(&r);
        hfail("destination answered ERROR instead of READY");
    }
    if (r.type != REC_READY || r.len != 8)
        hfail("want READY (len 8), got type 0x%" PRIx32 " len %" PRIu32, r.type, r.len);
    s->acc = get64(r.body);
    free(r.body);
    if (s->acc & ~s->feat)
        hfail("READY accepts features 0x%" PRIx64 " not offered in HELLO (0x%" PRIx64 ")",
              s->acc, s->feat);
    printf("READY features=0x%" PRIx64 "\n", s->acc);
}

/* Opens a data connection; a stray's init may meet a closed door (EPIPE). */
static int open_data(struct src *s, uint32_t magic, uint32_t version, const uint8_t *uuid, int id,
                     bool stray)
{
    uint8_t init[64] = { 0 };
    int fd = connect_uri(s->uri);

    put32(init, magic);
    put32(init + 4, version);
    memcpy(init + 8, uuid, 16);
    init[24] = (uint8_t)id;
    if (write_all(fd, init, sizeof(init)) < 0 && !g_tolerant && !stray)
        hfail("writing data channel init: %s", strerror(errno));
    return fd;
}

static void stray_keep(struct src *s, int fd)
{
    if (s->nstray < 4)
        s->stray_fd[s->nstray++] = fd;
    else
        close(fd);
}

/* Connects a stray the session must shrug off; waits a little for its close. */
static void stray_data(struct src *s, const char *what, uint32_t magic, uint32_t version,
                       bool foreign, int id)
{
    uint8_t uuid[16];
    int fd;

    memcpy(uuid, s->uuid, 16);
    if (foreign)
        for (int i = 0; i < 16; i++)
            uuid[i] ^= 0xa5;
    fd = open_data(s, magic, version, uuid, id, true);
    if (wait_closed(fd, 2000)) {
        printf("STRAY-CLOSED %s\n", what);
        close(fd);
    } else {
        note("stray %s was not closed within 2 s (kept open)", what);
        stray_keep(s, fd);
    }
}

static void src_channels(struct src *s, bool reverse, enum stray stray)
{
    for (int k = 0; k < s->nch; k++) {
        int id = reverse ? s->nch - 1 - k : k;

        s->dfd[id] = open_data(s, DATA_MAGIC, 1, s->uuid, id, false);
        if (k == 0 && stray == STRAY_FOREIGN_UUID)
            stray_data(s, "foreign-uuid", DATA_MAGIC, 1, true, s->nch > 1 ? 1 : 0);
        if (k == 0 && stray == STRAY_DATA_VERSION)
            stray_data(s, "data-version-2", DATA_MAGIC, 2, false, s->nch > 1 ? 1 : 0);
    }
    if (stray == STRAY_LATE_GARBAGE) {
        int fd = connect_uri(s->uri);
        uint8_t junk[256];

        fill_random(junk, sizeof(junk));
        junk[0] = 0xde; /* neither magic */
        write_all(fd, junk, sizeof(junk));
        if (wait_closed(fd, 2000)) {
            printf("STRAY-CLOSED late-garbage\n");
            close(fd);
        } else {
            note("late garbage connection not closed within 2 s");
            stray_keep(s, fd);
        }
    }
    if (stray == STRAY_LATE_FOREIGN)
        stray_data(s, "late-foreign-uuid", DATA_MAGIC, 1, true, 0);
    if (stray == STRAY_LATE_IDLE)
        stray_keep(s, connect_uri(s->uri));
}

/* One RAM packet as the source plans it. */
struct pkt {
    int bi;
    uint32_t nn, nz, flags;
    uint64_t off[MAX_PPP]; /* nn normal offsets, then nz zero offsets */
};

/* Encodes p; returns the payload length (normal pages, raw). */
static size_t pkt_encode(struct src *s, const struct pkt *p, uint8_t *hdr, uint8_t *payload)
{
    uint32_t flags = p->flags;

    memset(hdr, 0, hdr_len(s->ppp));
    if (p->nn + p->nz)
        flags |= s->method;
    put32(hdr, DATA_MAGIC);
    put32(hdr + 4, 1);
    put32(hdr + 8, flags);
    put32(hdr + 12, s->ppp);
    put32(hdr + 16, p->nn);
    put32(hdr + 20, p->nn * s->ps);
    put64(hdr + 24, s->pkt_num++);
    put32(hdr + 32, p->nz);
    if (p->nn + p->nz)
        strcpy((char *)hdr + 64, s->b[p->bi].name);
    for (uint32_t i = 0; i < p->nn + p->nz; i++)
        put64(hdr + HDR_FIXED + 8 * i, p->off[i]);
    for (uint32_t i = 0; i < p->nn; i++)
        memcpy(payload + (size_t)i * s->ps, s->b[p->bi].mem + p->off[i], s->ps);
    return (size_t)p->nn * s->ps;
}

/* Fills the CRC field when CRC was accepted: field zero, header, then payload if scope 1. */
static void pkt_crc(struct src *s, uint8_t *hdr, const uint8_t *payload, size_t plen, int scope)
{
    uint32_t c;

    if (!(s->acc & FEAT_CRC))
        return;
    hdr[40] = (uint8_t)scope;
    memset(hdr + 36, 0, 4);
    c = crc_update(~0u, hdr, hdr_len(s->ppp));
    if (scope == 1)
        c = crc_update(c, payload, plen);
    put32(hdr + 36, ~c);
}

/* ---------------------------------------------------------------------- */
/* Compression (PROTOCOL.md 2.3), with zlib, libzstd and liblz4 directly. */

static const char *method_name(uint32_t m)
{
    switch (m) {
    case M_NONE: return "none";
    case M_ZLIB: return "zlib";
    case M_ZSTD: return "zstd";
    case M_LZ4: return "lz4";
    default: return "unknown";
    }
}

/*
 * Set: zlib and zstd also flush after every page, not only at the end of
 * the packet. 2.3 asks for a flush at the end of each packet and does not
 * forbid more; each flush costs bytes (zlib: about 10 bytes per random
 * page, the stored block's header and the flush's empty stored block),
 * which the destination's bound for the packet must allow.
 */
static bool g_page_flush;

/*
 * Compresses n bytes (whole pages, in order) as the next chunk of channel
 * ch's stream for method m, into out (cap bytes); returns the chunk's
 * length, the packet's next_packet_size.
 *   zlib: one stream per channel for the whole migration; the pages are
 *         deflated in order and the chunk ends with a sync flush (with
 *         finish: Z_FINISH instead, a stream that ends, which 2.3 rules out).
 *   zstd: one stream per channel; pages fed in order; the chunk ends with a
 *         flush (ZSTD_e_flush).
 *   lz4:  per page a u32 big-endian length c and c bytes of LZ4 block;
 *         c == page size: the page raw (it did not shrink).
 */
static size_t comp_chunk(struct src *s, int ch, uint32_t m, const uint8_t *raw, size_t n,
                         uint8_t *out, size_t cap, bool finish)
{
    uint32_t ps = s->ps;

    if (n % ps)
        die("internal: compressing %zu bytes, not whole pages", n);
    if (m == M_ZLIB) {
        z_stream *z = s->zs[ch];

        if (!z) {
            z = s->zs[ch] = xcalloc(1, sizeof(*z));
            if (deflateInit(z, s->level >= 0 && s->level <= 9 ? s->level
                                                              : Z_DEFAULT_COMPRESSION) != Z_OK)
                die("deflateInit failed");
        }
        z->next_out = out;
        z->avail_out = (uInt)cap;
        for (size_t o = 0; o < n; o += ps) {
            int flush = o + ps < n ? (g_page_flush ? Z_SYNC_FLUSH : Z_NO_FLUSH)
                        : finish     ? Z_FINISH
                                     : Z_SYNC_FLUSH;
            int r;

            z->next_in = (Bytef *)raw + o;
            z->avail_in = ps;
            do {
                r = deflate(z, flush);
                if (r != Z_OK && r != Z_STREAM_END && r != Z_BUF_ERROR)
                    die("deflate: %d", r);
                /* Never out of room: then the flush is complete when deflate returns. */
                if (!z->avail_out)
                    die("deflate: chunk larger than %zu bytes", cap);
            } while (z->avail_in || (flush == Z_FINISH && r != Z_STREAM_END));
        }
        return cap - z->avail_out;
    }
    if (m == M_ZSTD) {
        ZSTD_CCtx *c = s->zc[ch];
        ZSTD_outBuffer ob = { out, cap, 0 };
        size_t r;

        if (!c) {
            c = s->zc[ch] = ZSTD_createCCtx();
            if (!c || ZSTD_isError(ZSTD_CCtx_setParameter(c, ZSTD_c_compressionLevel,
                                                          s->level)))
                die("zstd: cannot set up a context at level %" PRId32, s->level);
        }
        for (size_t o = 0; o < n; o += ps) {
            ZSTD_inBuffer ib = { raw + o, ps, 0 };
            ZSTD_EndDirective e = g_page_flush ? ZSTD_e_flush : ZSTD_e_continue;

            do {
                r = ZSTD_compressStream2(c, &ob, &ib, e);
                if (ZSTD_isError(r))
                    die("zstd: %s", ZSTD_getErrorName(r));
                if (ob.pos == ob.size)
                    die("zstd: chunk larger than %zu bytes", cap);
            } while (ib.pos < ib.size || (e == ZSTD_e_flush && r));
        }
        do {
            ZSTD_inBuffer ib = { NULL, 0, 0 };

            r = ZSTD_compressStream2(c, &ob, &ib, ZSTD_e_flush);
            if (ZSTD_isError(r))
                die("zstd flush: %s", ZSTD_getErrorName(r));
            if (r && ob.pos == ob.size)
                die("zstd: chunk larger than %zu bytes", cap);
        } while (r);
        return ob.pos;
    }
    if (m == M_LZ4) {
        size_t pos = 0;

        for (size_t o = 0; o < n; o += ps) {
            int c;

            if (pos + 4 + ps > cap)
                die("lz4: chunk larger than %zu bytes", cap);
            /* At most page size - 1: what does not shrink goes raw. */
            c = LZ4_compress_fast((const char *)raw + o, (char *)out + pos + 4, (int)ps,
                                  (int)ps - 1, s->level > 0 ? s->level : 1);
            if (c <= 0) {
                memcpy(out + pos + 4, raw + o, ps);
                c = (int)ps;
            }
            put32(out + pos, (uint32_t)c);
            pos += 4 + (size_t)c;
        }
        return pos;
    }
    if (m == M_NONE) {
        if (n > cap)
            die("raw chunk larger than %zu bytes", cap);
        memcpy(out, raw, n);
        return n;
    }
    die("internal: no encoder for method 0x%" PRIx32, m);
}

/*
 * Replaces a packet's raw payload (payload has PAYLOAD_CAP bytes) by its
 * compressed chunk on channel ch, and next_packet_size by the chunk's
 * length. A packet without normal pages has no payload in any method.
 */
static size_t pkt_compress(struct src *s, int ch, uint8_t *hdr, uint8_t *payload, size_t rawlen)
{
    static uint8_t *tmp;
    size_t n;

    if (s->method == M_NONE || !rawlen)
        return rawlen;
    if (!tmp)
        tmp = xcalloc(1, PAYLOAD_CAP);
    n = comp_chunk(s, ch, s->method, payload, rawlen, tmp, PAYLOAD_CAP, false);
    memcpy(payload, tmp, n);
    put32(hdr + 20, (uint32_t)n);
    return n;
}

static void pkt_count(struct src *s, const struct pkt *p)
{
    s->n_normal += p->nn;
    s->n_zero += p->nz;
    if (p->nn + p->nz)
        s->n_packets++;
}

static void send_packet(struct src *s, int ch, const uint8_t *hdr, const uint8_t *payload,
                        size_t plen)
{
    if (write_all(s->dfd[ch], hdr, hdr_len(s->ppp)) < 0 ||
        (plen && write_all(s->dfd[ch], payload, plen) < 0)) {
        if (!g_tolerant)
            hfail("writing packet on channel %d: %s", ch, strerror(errno));
    }
}

static void send_sync(struct src *s, int ch)
{
    struct pkt p = { .flags = FLAG_SYNC };
    uint8_t hdr[HDR_FIXED + 8 * MAX_PPP];

    pkt_encode(s, &p, hdr, NULL);
    pkt_crc(s, hdr, NULL, 0, 1);
    send_packet(s, ch, hdr, NULL, 0);
}

static void send_zero_record(struct src *s, int bi, const uint64_t *off, uint32_t n)
{
    struct buf b = { 0 };

    buf_32(&b, (uint32_t)bi);
    buf_32(&b, n);
    for (uint32_t i = 0; i < n; i++)
        buf_64(&b, off[i]);
    xsend_record(s->main_fd, REC_ZERO_PAGES, b.p, (uint32_t)b.len, "ZERO_PAGES");
    buf_free(&b);
    s->n_zero += n;
}

/*
 * Sends one pass: every page whose act[] byte is set, in block order. Zero
 * pages follow the negotiated detection: in packets (multifd), in ZERO_PAGES
 * records (legacy) or as plain normal pages (none). Packets go round robin
 * over the channels; with sync_with_pages the last packet of each channel
 * also carries the SYNC flag, as older peers did. Ends with SYNC on every
 * channel and ITERATION_END.
 */
static void src_pass(struct src *s, uint8_t *const *act, int scope, bool sync_with_pages)
{
    size_t np = 0, cap = 16;
    struct pkt *pk = xcalloc(cap, sizeof(*pk));
    uint64_t *zrec = xcalloc(4096, sizeof(*zrec));
    uint8_t hdr[HDR_FIXED + 8 * MAX_PPP];
    uint8_t *payload = xcalloc(1, PAYLOAD_CAP);
    int *last = xcalloc((size_t)s->nch, sizeof(int));

    for (int bi = 0; bi < s->nb; bi++) {
        uint64_t pages = s->b[bi].len / s->ps;
        uint64_t norm[MAX_PPP], zero[MAX_PPP];
        uint32_t nn = 0, nz = 0, nzr = 0;

        for (uint64_t pg = 0; pg <= pages; pg++) {
            bool flush = pg == pages || nn + nz == s->ppp;

            if (flush && nn + nz) {
                if (np == cap) {
                    cap *= 2;
                    pk = realloc(pk, cap * sizeof(*pk));
                    if (!pk)
                        die("out of memory");
                }
                memset(&pk[np], 0, sizeof(pk[np]));
                pk[np].bi = bi;
                pk[np].nn = nn;
                pk[np].nz = nz;
                memcpy(pk[np].off, norm, nn * sizeof(uint64_t));
                memcpy(pk[np].off + nn, zero, nz * sizeof(uint64_t));
                np++;
                nn = nz = 0;
            }
            if (pg == pages)
                break;
            if (!act[bi][pg])
                continue;
            if (s->zpd != ZPD_NONE && page_is_zero(s->b[bi].mem + pg * s->ps, s->ps)) {
                if (s->zpd == ZPD_MULTIFD) {
                    zero[nz++] = pg * s->ps;
                } else {
                    zrec[nzr++] = pg * s->ps;
                    if (nzr == 4096) {
                        send_zero_record(s, bi, zrec, nzr);
                        nzr = 0;
                    }
                }
            } else {
                norm[nn++] = pg * s->ps;
            }
        }
        if (nzr)
            send_zero_record(s, bi, zrec, nzr);
    }
    for (int c = 0; c < s->nch; c++)
        last[c] = -1;
    for (size_t i = 0; i < np; i++)
        last[(s->rr + i) % (unsigned)s->nch] = (int)i;
    for (size_t i = 0; i < np; i++) {
        int ch = (int)((s->rr + i) % (unsigned)s->nch);
        size_t plen;

        if (sync_with_pages && last[ch] == (int)i)
            pk[i].flags |= FLAG_SYNC;
        plen = pkt_encode(s, &pk[i], hdr, payload);
        plen = pkt_compress(s, ch, hdr, payload, plen);
        pkt_crc(s, hdr, payload, plen, scope);
        if (g_flip && plen >= 16) {
            for (size_t k = plen / 2 - 8; k < plen / 2 + 8; k++)
                payload[k] ^= 0xA5;
            printf("FLIPPED packet %zu of the pass: 16 of its %zu payload bytes\n", i, plen);
            g_flip = false;
        }
        send_packet(s, ch, hdr, payload, plen);
        pkt_count(s, &pk[i]);
        if (g_optional && i == np / 2)
            src_optional(s, g_optional);
    }
    s->rr = (unsigned)((s->rr + np) % (unsigned)s->nch);
    if (g_pass_no_end) {
        free(pk);
        free(zrec);
        free(payload);
        free(last);
        return;
    }
    for (int c = 0; c < s->nch; c++)
        if (!sync_with_pages || last[c] < 0)
            send_sync(s, c);
    if (g_optional)
        src_optional(s, g_optional);
    {
        uint8_t it[8];

        put64(it, ++s->iter);
        xsend_record(s->main_fd, REC_ITER_END, it, 8, "ITERATION_END");
    }
    free(pk);
    free(zrec);
    free(payload);
    free(last);
}

static void src_device_state(struct src *s, bool chunks)
{
    uint8_t b[8];

    if (chunks) {
        put32(b, 0);
        memcpy(b + 4, "dev0", 4);
        xsend_record(s->main_fd, REC_DEVICE_STATE, b, 8, "DEVICE_STATE");
        put32(b, 1);
        memcpy(b + 4, "dev1", 4);
        xsend_record(s->main_fd, REC_DEVICE_STATE, b, 8, "DEVICE_STATE");
    } else {
        put32(b, 1);
        xsend_record(s->main_fd, REC_DEVICE_STATE, b, 4, "DEVICE_STATE");
    }
}

static void src_digests(struct src *s, bool corrupt)
{
    struct buf b = { 0 };

    for (int i = 0; i < s->nb; i++) {
        uint64_t h = XXH3_64bits(s->b[i].mem, s->b[i].len);

        if (corrupt && i == s->nb - 1)
            h ^= 1;
        buf_64(&b, h);
    }
    xsend_record(s->main_fd, REC_DIGESTS, b.p, (uint32_t)b.len, "DIGESTS");
    buf_free(&b);
}

static void src_complete(struct src *s, int64_t delta)
{
    uint8_t b[24];

    put64(b, s->n_normal + (uint64_t)delta);
    put64(b + 8, s->n_zero);
    put64(b + 16, s->n_packets);
    xsend_record(s->main_fd, REC_COMPLETE, b, 24, "COMPLETE");
}

static void src_close(struct src *s)
{
    for (int i = 0; i < s->nch; i++)
        if (s->dfd[i] >= 0)
            close(s->dfd[i]);
    for (int i = 0; i < s->nstray; i++)
        close(s->stray_fd[i]);
    if (s->main_fd >= 0)
        close(s->main_fd);
    for (int i = 0; i < MAX_CHANNELS; i++) {
        if (s->zs[i]) {
            deflateEnd(s->zs[i]);
            free(s->zs[i]);
            s->zs[i] = NULL;
        }
        ZSTD_freeCCtx(s->zc[i]);
        s->zc[i] = NULL;
    }
}

static void src_wait_done(struct src *s)
{
    for (;;) {
        struct rec r;
        const char *err;
        int rc = read_record(s->main_fd, &r, IO_TIMEOUT, &err);

        if (rc)
            hfail("waiting for DONE: %s", err ? err : rstr(rc));
        if (r.type == REC_DONE) {
            if (r.len != 0)
                hfail("DONE with a %" PRIu32 "-byte body", r.len);
            printf("DONE\n");
            free(r.body);
            return;
        }
        if (r.type == REC_ERROR) {
            print_error_record(&r);
            hfail("destination sent ERROR instead of DONE");
        }
        if (!(r.type & REC_OPTIONAL))
            hfail("unexpected record 0x%" PRIx32 " while waiting for DONE", r.type);
        free(r.body);
    }
}

/*
 * After a hostile act: waits for the destination's ERROR record on the main
 * channel. A plain close is reported, not failed, unless the case requires
 * the record. DONE here is always a failure.
 */
static void src_expect_error(struct src *s, bool required)
{
    int64_t deadline = now_ms() + ERROR_WAIT;

    for (;;) {
        struct rec r;
        const char *err;
        int64_t left = deadline - now_ms();
        int rc = read_record(s->main_fd, &r, left > 0 ? (int)left : 0, &err);

        if (rc) {
            if (required)
                hfail("no ERROR record from the destination (%s)", err ? err : rstr(rc));
            printf("NO-ERROR-RECORD: %s\n", err ? err : rstr(rc));
            return;
        }
        if (r.type == REC_ERROR) {
            print_error_record(&r);
            if (wait_closed(s->main_fd, 3000))
                printf("MAIN-CLOSED-AFTER-ERROR\n");
            else
                note("main channel still open 3 s after the ERROR record");
            free(r.body);
            return;
        }
        if (r.type == REC_DONE)
            hfail("destination sent DONE after a protocol violation");
        free(r.body);
    }
}

/* ---------------------------------------------------------------------- */
/* Source scenarios */

struct vopt {
    uint32_t zpd, ps, preamble_version, want_version, method;
    int32_t level;
    uint64_t feat;
    int nch, passes, scope_first;
    bool sync_with_pages, reverse, dev_chunks, big;
    enum stray stray;
    int64_t complete_delta;
    bool bad_digest;
    bool flip; /* ram0 as text; its packet's payload flipped in the middle (g_flip) */
};

static void vopt_default(struct vopt *o)
{
    memset(o, 0, sizeof(*o));
    o->zpd = ZPD_MULTIFD;
    o->ps = 4096;
    o->preamble_version = 1;
    o->want_version = 1;
    o->nch = 3;
    o->passes = 1;
    o->scope_first = 1;
}

/* Connects, negotiates and sets up channels; returns ready to send passes. */
static void src_start(struct src *s, const struct vopt *o)
{
    if (o->stray == STRAY_BEFORE_MAGIC) {
        int fd = connect_uri(s->uri);
        static const char junk[16] = "GET / HTTP/1.0\r\n";

        write_all(fd, junk, sizeof(junk));
        if (wait_closed(fd, 3000))
            printf("STRAY-CLOSED wrong-magic\n");
        else
            note("wrong-magic connection not closed within 3 s");
        close(fd);
    }
    if (o->stray == STRAY_BEFORE_SHORT) {
        int fd = connect_uri(s->uri);

        write_all(fd, "\x4d\x46", 2);
        close(fd);
        usleep(100000);
    }
    src_connect_main(s, o->preamble_version);
    src_read_preamble(s, o->want_version);
    src_setup(s);
    src_ready(s);
    src_channels(s, o->reverse, o->stray);
}

static void src_finish(struct src *s, const struct vopt *o, bool negative)
{
    /* A bad DIGESTS may be refused before COMPLETE is written. */
    if (negative)
        g_tolerant = true;
    src_device_state(s, o->dev_chunks);
    if (g_optional)
        src_optional(s, g_optional);
    if (s->acc & FEAT_VERIFY)
        src_digests(s, o->bad_digest);
    src_complete(s, o->complete_delta);
    if (negative)
        src_expect_error(s, false);
    else
        src_wait_done(s);
}

static int run_valid(const char *uri, const char *outdir, const struct vopt *o)
{
    struct src s;
    uint8_t *act[MAX_BLOCKS];
    bool negative = o->complete_delta || o->bad_digest || o->flip;

    src_init(&s, uri, outdir, o->ps, o->nch, o->zpd, o->feat);
    s.method = o->method;
    s.level = o->level;
    gen_blocks(s.b, &s.nb, s.ps, o->big);
    if (o->flip) {
        for (unsigned pg = 0; pg < s.b[0].len / s.ps; pg++)
            fill_text(s.b[0].mem + (size_t)pg * s.ps, s.ps, pg);
        /* The destination may hang up at the flipped packet. */
        g_tolerant = true;
    }
    src_start(&s, o);
    if ((o->feat & (FEAT_CRC | FEAT_VERIFY)) && s.acc != o->feat)
        hfail("READY accepted features 0x%" PRIx64 ", want 0x%" PRIx64, s.acc, o->feat);
    for (int i = 0; i < s.nb; i++) {
        act[i] = xcalloc(1, s.b[i].len / s.ps);
        memset(act[i], 1, s.b[i].len / s.ps);
    }
    if (o->passes == 2) {
        /*
         * Pass 1 sends everything; then the "guest" dirties some pages:
         * new random content, and previously random pages now zero (which
         * the destination must clear, having received them before).
         */
        src_pass(&s, act, o->scope_first, false);
        for (int i = 0; i < s.nb; i++) {
            uint64_t pages = s.b[i].len / s.ps;

            memset(act[i], 0, pages);
            for (uint64_t pg = 0; pg < pages; pg++) {
                uint8_t *p = s.b[i].mem + pg * s.ps;

                if (pg % 3 == 1) {
                    act[i][pg] = 1;
                    if (pg % 2)
                        memset(p, 0, s.ps);
                    else
                        fill_random(p, s.ps);
                }
            }
        }
    }
    g_flip = o->flip;
    src_pass(&s, act, 1, o->sync_with_pages);
    write_blocks(outdir, s.b, s.nb);
    printf("SENT normal=%" PRIu64 " zero=%" PRIu64 " packets=%" PRIu64 "\n", s.n_normal,
           s.n_zero, s.n_packets);
    src_finish(&s, o, negative);
    for (int i = 0; i < s.nstray; i++)
        if (wait_closed(s.stray_fd[i], 200))
            printf("STRAY-CLOSED kept-stray-%d\n", i);
    src_close(&s);
    return 0;
}

/*
 * A session set up for a hostile act: standard blocks, the given method
 * negotiated, channels connected.
 */
static void hostile_start_m(struct src *s, const char *uri, int nch, uint32_t zpd, uint64_t feat,
                            uint32_t method, bool connect_channels)
{
    src_init(s, uri, NULL, 4096, nch, zpd, feat);
    s->method = method;
    s->level = method == M_NONE ? 0 : 1;
    gen_blocks(s->b, &s->nb, s->ps, false);
    src_connect_main(s, 1);
    src_read_preamble(s, 1);
    src_setup(s);
    src_ready(s);
    g_tolerant = true;
    if (connect_channels)
        src_channels(s, false, STRAY_NONE);
}

static void hostile_start(struct src *s, const char *uri, int nch, uint32_t zpd, uint64_t feat,
                          bool connect_channels)
{
    hostile_start_m(s, uri, nch, zpd, feat, M_NONE, connect_channels);
}

/* Plans the probe packet the packet mutations start from: ram1, 3 normal + 1 zero. */
static void probe_packet(struct src *s, uint8_t *hdr, uint8_t *payload, size_t *plen)
{
    struct pkt p = { .bi = 1, .nn = 3, .nz = 1 };

    p.off[0] = 1ull * s->ps;
    p.off[1] = 2ull * s->ps;
    p.off[2] = 4ull * s->ps;
    p.off[3] = 5ull * s->ps;
    *plen = pkt_encode(s, &p, hdr, payload);
}

enum pmut {
    PM_MAGIC, PM_VERSION, PM_FLAGS, PM_PAGES_ALLOC, PM_NORMAL, PM_ZERO, PM_BLOCK,
    PM_UNALIGNED, PM_BEYOND, PM_ZERO_BEYOND, PM_ZERO_UNALIGNED, PM_NEXT_SIZE, PM_METHOD,
    PM_NAME_NONUL, PM_CRC_HEADER, PM_CRC_PAYLOAD, PM_CRC_SCOPE, PM_TRUNC_HEADER,
    PM_TRUNC_PAYLOAD,
};

static int run_packet_mutation(const char *uri, enum pmut m)
{
    struct src s;
    uint8_t hdr[HDR_FIXED + 8 * MAX_PPP];
    uint8_t *payload;
    size_t plen, hl;
    bool crc = m == PM_CRC_HEADER || m == PM_CRC_PAYLOAD || m == PM_CRC_SCOPE;

    hostile_start(&s, uri, 3, ZPD_MULTIFD, crc ? FEAT_CRC : 0, true);
    if (crc && !(s.acc & FEAT_CRC))
        hfail("destination did not accept CRC; cannot test a bad CRC");
    hl = hdr_len(s.ppp);
    payload = xcalloc(MAX_PPP + 1, s.ps);
    probe_packet(&s, hdr, payload, &plen);
    switch (m) {
    case PM_MAGIC: put32(hdr, DATA_MAGIC + 1); break;
    case PM_VERSION: put32(hdr + 4, 2); break;
    case PM_FLAGS: put32(hdr + 8, get32(hdr + 8) | 0x80); break;
    case PM_PAGES_ALLOC: put32(hdr + 12, s.ppp - 1); break;
    case PM_NORMAL:
        /* Consistent except for the count; the payload is never sent. */
        put32(hdr + 16, s.ppp + 1);
        put32(hdr + 20, (s.ppp + 1) * s.ps);
        put32(hdr + 32, 0);
        plen = 0;
        break;
    case PM_ZERO: put32(hdr + 32, s.ppp - 2); break;
    case PM_BLOCK:
        memset(hdr + 64, 0, 256);
        strcpy((char *)hdr + 64, "nosuchblock");
        break;
    case PM_UNALIGNED: put64(hdr + HDR_FIXED + 8, 2ull * s.ps + 8); break;
    case PM_BEYOND: put64(hdr + HDR_FIXED + 16, s.b[1].len); break;
    case PM_ZERO_BEYOND: put64(hdr + HDR_FIXED + 24, s.b[1].len + 16ull * s.ps); break;
    case PM_ZERO_UNALIGNED: put64(hdr + HDR_FIXED + 24, 5ull * s.ps + 512); break;
    case PM_NEXT_SIZE:
        put32(hdr + 20, 3 * s.ps - 1);
        plen = 3 * s.ps - 1;
        break;
    case PM_METHOD: put32(hdr + 8, get32(hdr + 8) | 0x02); break;
    case PM_NAME_NONUL: memset(hdr + 64, 'A', 256); break;
    default: break;
    }
    if (crc) {
        pkt_crc(&s, hdr, payload, plen, 1);
        if (m == PM_CRC_HEADER)
            put32(hdr + 36, get32(hdr + 36) ^ 0x10000);
        if (m == PM_CRC_PAYLOAD)
            payload[plen / 2] ^= 0x01;
        if (m == PM_CRC_SCOPE)
            hdr[40] = 2;
    }
    if (m == PM_TRUNC_HEADER) {
        write_all(s.dfd[0], hdr, hl / 2);
        usleep(200000);
        close(s.dfd[0]);
        s.dfd[0] = -1;
    } else if (m == PM_TRUNC_PAYLOAD) {
        write_all(s.dfd[0], hdr, hl);
        write_all(s.dfd[0], payload, plen - 1000);
        usleep(200000);
        close(s.dfd[0]);
        s.dfd[0] = -1;
    } else {
        send_packet(&s, 0, hdr, payload, plen);
    }
    src_expect_error(&s, false);
    src_close(&s);
    free(payload);
    return 0;
}

/* ---------------------------------------------------------------------- */
/* Compressed payloads (PROTOCOL.md 2.2, 2.3) */

/* Offset of page i's length field in an lz4 chunk. */
static size_t lz4_field(const uint8_t *pay, unsigned i)
{
    size_t pos = 0;

    while (i--)
        pos += 4 + get32(pay + pos);
    return pos;
}

/* Replaces page 0 of an lz4 chunk of plen bytes by length c and block blk. */
static size_t lz4_put_first(uint8_t *pay, size_t plen, uint32_t c, const uint8_t *blk)
{
    size_t old = 4 + get32(pay);

    memmove(pay + 4 + c, pay + old, plen - old);
    put32(pay, c);
    memcpy(pay + 4, blk, c);
    return plen - old + 4 + c;
}

/*
 * CASE = METHOD-WHAT: the destination negotiated METHOD (zlib, zstd, lz4);
 * channel 0 then sends the probe packet (ram1: 3 normal pages of text, 1
 * zero page) with its payload compressed and then broken as WHAT says:
 *   flip          (zlib, lz4) 16 bytes in the middle of the chunk XORed with
 *                 0xA5: for this data both decoders see the damage. Not zstd:
 *                 there the same flip decodes to 3 pages of wrong bytes, which
 *                 the format cannot tell (METHOD-flip-verify covers that)
 *   flip-head     the chunk's first 16 bytes XORed with 0xA5: the zlib header,
 *                 the zstd frame header, page 0's lz4 length
 *   trunc         half the chunk, then the channel closes
 *   short         next_packet_size 10 bytes short of the chunk; the whole
 *                 chunk and garbage follow (read as the next packet)
 *   bound         pages_per_packet normal pages, next_packet_size 1 MiB + 1:
 *                 above any bound for 512 KiB of pages (only the small
 *                 chunk follows: it must be refused before it is read)
 *   bound-huge    next_packet_size 0xFFFFFFFF
 *   bomb          a chunk of a few KiB that decodes to 2 MiB (lz4: page 0's
 *                 block decodes to 8 pages), for 3 normal pages (12 KiB)
 *   nopages       normal_pages 0 (1 zero page) but the chunk as payload
 *   method-other  flags carry another compressing method (its chunk follows)
 *   method-none   flags carry none (0), the raw pages follow
 *   empty         normal_pages 3, next_packet_size 0
 *   shared-stream (zlib, zstd) a valid packet on channel 0, then the next
 *                 chunk of channel 0's stream on channel 1
 *   finish        (zlib) the chunk ends the stream (Z_FINISH), not a sync flush
 *   lz4 only: len0 (page 0's length 0), len-big (raw pages, page 0's length
 *   page size + 1), len-past (page 2's length runs 1 byte past the chunk),
 *   len-cut (the chunk ends 2 bytes into page 2's length field), trailing
 *   (16 bytes after the last page), short-page (page 0's block decodes to
 *   half a page).
 */
static int run_comp_case(const char *uri, const char *name)
{
    static const struct {
        const char *pfx;
        uint32_t m, other;
    } ms[] = { { "zlib-", M_ZLIB, M_ZSTD }, { "zstd-", M_ZSTD, M_LZ4 }, { "lz4-", M_LZ4, M_ZLIB } };
    struct src s;
    uint8_t hdr[HDR_FIXED + 8 * MAX_PPP];
    uint8_t *raw = xcalloc(1, PAYLOAD_CAP), *pay = xcalloc(1, PAYLOAD_CAP);
    uint8_t *tmp = xcalloc(1, PAYLOAD_CAP);
    uint32_t m = 0, other = 0, ps;
    uint64_t next;
    size_t rawlen, plen = 0, sent, garbage = 0, hl;
    const char *what = NULL;
    bool trunc = false, lz4 = false;
    int target = 0; /* the channel the broken packet goes on */

    for (size_t i = 0; i < sizeof(ms) / sizeof(ms[0]); i++)
        if (!strncmp(name, ms[i].pfx, strlen(ms[i].pfx))) {
            m = ms[i].m;
            other = ms[i].other;
            what = name + strlen(ms[i].pfx);
        }
    if (!what)
        die("internal: %s is not a compression case", name);
    lz4 = m == M_LZ4;
    hostile_start_m(&s, uri, 3, ZPD_MULTIFD, 0, m, true);
    ps = s.ps;
    hl = hdr_len(s.ppp);
    if (strcmp(what, "len-big"))
        for (unsigned pg = 1; pg <= 4; pg++)
            fill_text(s.b[1].mem + (size_t)pg * ps, ps, pg);
    probe_packet(&s, hdr, raw, &rawlen);
    /*
     * The probe's chunk, on channel 0's stream, unless the case sends another
     * chunk on that stream instead: the stream must hold only what is sent.
     */
    if (lz4 || (strcmp(what, "bomb") && strcmp(what, "method-none")))
        plen = comp_chunk(&s, 0, m, raw, rawlen, pay, PAYLOAD_CAP, !strcmp(what, "finish"));

    if (!strcmp(what, "flip") && m != M_ZSTD) {
        size_t at = plen / 2 >= 8 ? plen / 2 - 8 : 0;

        for (size_t i = at; i < at + 16 && i < plen; i++)
            pay[i] ^= 0xA5;
    } else if (!strcmp(what, "flip-head")) {
        for (size_t i = 0; i < 16 && i < plen; i++)
            pay[i] ^= 0xA5;
    } else if (!strcmp(what, "trunc")) {
        trunc = true;
    } else if (!strcmp(what, "short")) {
        garbage = 4096;
    } else if (!strcmp(what, "bound")) {
        put32(hdr + 16, s.ppp);
        put32(hdr + 32, 0);
        for (uint32_t i = 0; i < s.ppp; i++)
            put64(hdr + HDR_FIXED + 8 * i, (uint64_t)i * ps);
    } else if (!strcmp(what, "bound-huge") || !strcmp(what, "empty")) {
        /* next_packet_size alone, below. */
    } else if (!strcmp(what, "shared-stream") && !lz4) {
        /*
         * A valid packet on channel 0, then the next chunk of channel 0's
         * stream sent on channel 1, whose stream has not begun: as a source
         * sharing one stream among its channels would.
         */
        uint8_t hdr2[HDR_FIXED + 8 * MAX_PPP];
        size_t n2;

        write_all(s.dfd[0], hdr, hl);
        write_all(s.dfd[0], pay, plen);
        probe_packet(&s, hdr2, raw, &rawlen);
        n2 = comp_chunk(&s, 0, m, raw, rawlen, pay, PAYLOAD_CAP, false);
        put32(hdr2 + 20, (uint32_t)n2);
        memcpy(hdr, hdr2, hl);
        plen = n2;
        target = 1;
    } else if (!strcmp(what, "bomb")) {
        if (lz4) {
            uint8_t *z = xcalloc(8, ps);
            int c = LZ4_compress_default((const char *)z, (char *)tmp, (int)(8 * ps),
                                         (int)PAYLOAD_CAP);

            if (c <= 0 || (uint32_t)c >= ps)
                die("lz4: 8 zero pages compress to %d bytes", c);
            plen = lz4_put_first(pay, plen, (uint32_t)c, tmp);
            free(z);
        } else {
            uint8_t *z = xcalloc(512, ps);

            plen = comp_chunk(&s, 0, m, z, 512ull * ps, pay, PAYLOAD_CAP, false);
            free(z);
        }
        if (plen >= rawlen)
            die("bomb chunk of %zu bytes is not small", plen);
        note("bomb: %zu payload bytes for %zu bytes of pages", plen, rawlen);
    } else if (!strcmp(what, "nopages")) {
        memset(hdr + HDR_FIXED, 0, 8ull * s.ppp);
        put32(hdr + 16, 0);
        put32(hdr + 32, 1);
        put64(hdr + HDR_FIXED, 5ull * ps);
    } else if (!strcmp(what, "method-other")) {
        put32(hdr + 8, (get32(hdr + 8) & ~FLAG_METHOD_MASK) | other);
        plen = comp_chunk(&s, 0, other, raw, rawlen, pay, PAYLOAD_CAP, false);
    } else if (!strcmp(what, "method-none")) {
        put32(hdr + 8, get32(hdr + 8) & ~FLAG_METHOD_MASK);
        memcpy(pay, raw, rawlen);
        plen = rawlen;
    } else if (!strcmp(what, "finish") && m == M_ZLIB) {
        /* The chunk as comp_chunk made it. */
    } else if (lz4 && !strcmp(what, "len0")) {
        put32(pay, 0);
    } else if (lz4 && !strcmp(what, "len-big")) {
        if (get32(pay) != ps)
            die("lz4: a random page was not stored raw (length %" PRIu32 ")", get32(pay));
        put32(pay, ps + 1);
    } else if (lz4 && !strcmp(what, "len-past")) {
        size_t f = lz4_field(pay, 2);

        put32(pay + f, (uint32_t)(plen - f - 4) + 1);
    } else if (lz4 && !strcmp(what, "len-cut")) {
        plen = lz4_field(pay, 2) + 2;
    } else if (lz4 && !strcmp(what, "trailing")) {
        memset(pay + plen, 0xEE, 16);
        plen += 16;
    } else if (lz4 && !strcmp(what, "short-page")) {
        int c = LZ4_compress_default((const char *)raw, (char *)tmp, (int)ps / 2, (int)ps - 1);

        if (c <= 0)
            die("lz4: half a text page did not compress");
        plen = lz4_put_first(pay, plen, (uint32_t)c, tmp);
    } else {
        die("unknown compression case '%s'", name);
    }

    sent = plen;
    next = plen;
    if (!strcmp(what, "trunc"))
        sent = plen / 2;
    if (!strcmp(what, "short"))
        next = plen - 10;
    if (!strcmp(what, "bound"))
        next = 2ull * PACKET_BYTES + 1;
    if (!strcmp(what, "bound-huge"))
        next = 0xFFFFFFFFu;
    if (!strcmp(what, "empty"))
        next = sent = 0;
    put32(hdr + 20, (uint32_t)next);
    printf("SENDING %s packet: next_packet_size %" PRIu64 ", %zu payload bytes%s\n",
           method_name(get32(hdr + 8) & FLAG_METHOD_MASK), next, sent,
           trunc ? ", then close" : garbage ? ", then garbage" : "");
    write_all(s.dfd[target], hdr, hl);
    write_all(s.dfd[target], pay, sent);
    if (garbage) {
        uint8_t junk[4096];

        fill_random(junk, sizeof(junk));
        write_all(s.dfd[target], junk, garbage);
    }
    if (trunc) {
        usleep(200000);
        close(s.dfd[0]);
        s.dfd[0] = -1;
    }
    src_expect_error(&s, false);
    src_close(&s);
    free(raw);
    free(pay);
    free(tmp);
    return 0;
}

/* Main-channel hostilities after READY and channel setup. */
static int run_record_case(const char *uri, const char *name)
{
    struct src s;

    hostile_start(&s, uri, 2, strstr(name, "legacy") ? ZPD_LEGACY : ZPD_MULTIFD, 0, true);
    if (!strcmp(name, "rec-unknown-type")) {
        uint8_t b[8] = { 0 };

        send_record(s.main_fd, 0x0077, b, 8);
    } else if (!strcmp(name, "rec-oversize")) {
        uint8_t h[8];

        put32(h, REC_DEVICE_STATE);
        put32(h + 4, REC_MAX_LEN + 1);
        write_all(s.main_fd, h, 8);
    } else if (!strcmp(name, "rec-short-body")) {
        uint8_t b[8] = { 0 };

        send_record(s.main_fd, REC_ITER_END, b, 4);
    } else if (!strcmp(name, "rec-trailing-body")) {
        uint8_t b[16] = { 0 };

        put64(b, 1);
        send_record(s.main_fd, REC_ITER_END, b, 16);
    } else if (!strcmp(name, "legacy-zero-beyond")) {
        uint64_t off = s.b[1].len;

        send_zero_record(&s, 1, &off, 1);
    } else if (!strcmp(name, "legacy-zero-unaligned")) {
        uint64_t off = 4096 + 64;

        send_zero_record(&s, 1, &off, 1);
    } else if (!strcmp(name, "legacy-zero-block")) {
        uint64_t off = 0;

        send_zero_record(&s, 7, &off, 1);
    } else if (!strcmp(name, "legacy-zero-count0")) {
        send_zero_record(&s, 1, NULL, 0);
    } else if (!strcmp(name, "legacy-zero-count-len")) {
        uint8_t b[16];

        put32(b, 1);
        put32(b + 4, 2); /* says two offsets, carries one */
        put64(b + 8, 0);
        send_record(s.main_fd, REC_ZERO_PAGES, b, 16);
    } else if (!strcmp(name, "source-cancel")) {
        static const char why[] = "hostile-cancel-reason";

        send_record(s.main_fd, REC_CANCEL, why, sizeof(why) - 1);
    } else if (!strcmp(name, "source-error")) {
        uint8_t b[64];
        /* An escape and a NUL: shown as '?', nothing after the NUL lost;
         * CSI as a C1 control, UTF-8 encoded and as the raw byte. */
        static const char why[] = "hostile-source\x1b[0m\0gives-up\xc2\x9b"
                                  "1m\x9b"
                                  "end";

        put32(b, 5);
        memcpy(b + 4, why, sizeof(why) - 1);
        send_record(s.main_fd, REC_ERROR, b, (uint32_t)(4 + sizeof(why) - 1));
    } else if (!strcmp(name, "main-garbage")) {
        uint8_t junk[4096];

        rng = 0x1234567;
        fill_random(junk, sizeof(junk));
        write_all(s.main_fd, junk, sizeof(junk));
    } else if (!strcmp(name, "main-closed")) {
        close(s.main_fd);
        s.main_fd = -1;
        usleep(300000);
        src_close(&s);
        return 0;
    } else if (!strcmp(name, "data-closed")) {
        uint8_t hdr[HDR_FIXED + 8 * MAX_PPP];
        uint8_t *payload = xcalloc(MAX_PPP, s.ps);
        size_t plen;

        /* A whole valid packet, then channel 1 goes away between packets. */
        probe_packet(&s, hdr, payload, &plen);
        send_packet(&s, 0, hdr, payload, plen);
        close(s.dfd[1]);
        s.dfd[1] = -1;
        free(payload);
    } else {
        die("internal: unknown record case %s", name);
    }
    src_expect_error(&s, false);
    src_close(&s);
    return 0;
}

/* Setup-phase hostilities: bad HELLO or BLOCK records. */
static int run_setup_case(const char *uri, const char *name)
{
    struct src s;
    uint32_t ps = 4096, ppp = 128, nch = 2, method = 0, nb = 2, hl = 56;
    bool blocks = true;

    src_init(&s, uri, NULL, 4096, 2, ZPD_MULTIFD, 0);
    gen_blocks(s.b, &s.nb, s.ps, false);
    g_tolerant = true;
    if (!strcmp(name, "hello-short"))
        hl = 52;
    else if (!strcmp(name, "hello-trailing"))
        hl = 60;
    else if (!strcmp(name, "hello-pagesize"))
        ps = 3000, ppp = PACKET_BYTES / 3000;
    else if (!strcmp(name, "hello-ppp"))
        ppp = 64;
    else if (!strcmp(name, "hello-channels0"))
        nch = 0;
    else if (!strcmp(name, "hello-channels256"))
        nch = 256;
    else if (!strcmp(name, "hello-method"))
        method = 0x20;
    else if (!strncmp(name, "hello-method-0x", 15))
        /* An unknown value, or a method the destination is told to refuse. */
        method = (uint32_t)strtoul(name + 13, NULL, 16);
    else if (!strcmp(name, "hello-blocks0"))
        nb = 0, blocks = false;
    src_connect_main(&s, 1);
    src_read_preamble(&s, 1);
    src_hello(&s, ps, ppp, nch, method, nb, hl);
    if (blocks) {
        if (!strcmp(name, "block-index")) {
            src_block(&s, s.b[1].len, 1, "ram1");
            src_block(&s, s.b[0].len, 0, "ram0");
        } else if (!strcmp(name, "block-dupname")) {
            src_block(&s, s.b[0].len, 0, "ram0");
            src_block(&s, s.b[1].len, 1, "ram0");
        } else if (!strcmp(name, "block-unaligned")) {
            src_block(&s, s.b[0].len, 0, "ram0");
            src_block(&s, s.b[1].len + 100, 1, "ram1");
        } else if (!strcmp(name, "block-zero-len")) {
            src_block(&s, s.b[0].len, 0, "ram0");
            src_block(&s, 0, 1, "ram1");
        } else if (!strcmp(name, "block-name-slash")) {
            /* Printable, but a path separator: must not escape --into. */
            src_block(&s, s.b[0].len, 0, "ram0");
            src_block(&s, s.b[1].len, 1, "../escape");
        } else if (!strcmp(name, "block-missing")) {
            src_block(&s, s.b[0].len, 0, "ram0");
        } else {
            src_block(&s, s.b[0].len, 0, "ram0");
            src_block(&s, s.b[1].len, 1, "ram1");
        }
    }
    send_record(s.main_fd, REC_SETUP_END, NULL, 0);
    src_expect_error(&s, false);
    src_close(&s);
    return 0;
}

static int run_channel_case(const char *uri, const char *name)
{
    struct src s;

    hostile_start(&s, uri, 3, ZPD_MULTIFD, 0, false);
    s.dfd[0] = open_data(&s, DATA_MAGIC, 1, s.uuid, 0, false);
    s.dfd[1] = open_data(&s, DATA_MAGIC, 1, s.uuid, 1, false);
    if (!strcmp(name, "chan-id-range"))
        s.dfd[2] = open_data(&s, DATA_MAGIC, 1, s.uuid, 3, false);
    else
        s.dfd[2] = open_data(&s, DATA_MAGIC, 1, s.uuid, 1, false);
    src_expect_error(&s, false);
    src_close(&s);
    return 0;
}

static int run_version_zero(const char *uri)
{
    struct src s;

    src_init(&s, uri, NULL, 4096, 1, ZPD_MULTIFD, 0);
    src_connect_main(&s, 0);
    src_read_preamble(&s, 0);
    src_expect_error(&s, true);
    src_close(&s);
    return 0;
}

/*
 * Sends a whole first pass (its 1.2 MiB cannot all sit in socket buffers, so
 * the destination is reading channels by then), starts the second pass, and
 * dies in the middle of a payload without a word.
 */
static int run_source_killed(const char *uri)
{
    struct src s;
    uint8_t hdr[HDR_FIXED + 8 * MAX_PPP];
    uint8_t *payload, *act[MAX_BLOCKS];
    size_t plen;

    hostile_start(&s, uri, 3, ZPD_MULTIFD, 0, true);
    for (int i = 0; i < s.nb; i++) {
        act[i] = xcalloc(1, s.b[i].len / s.ps);
        memset(act[i], 1, s.b[i].len / s.ps);
    }
    src_pass(&s, act, 1, false);
    payload = xcalloc(MAX_PPP, s.ps);
    probe_packet(&s, hdr, payload, &plen);
    send_packet(&s, 1, hdr, payload, plen);
    probe_packet(&s, hdr, payload, &plen);
    write_all(s.dfd[2], hdr, hdr_len(s.ppp));
    write_all(s.dfd[2], payload, plen / 2);
    usleep(100000);
    printf("KILLED\n");
    fflush(stdout);
    _exit(0);
}

/* ---------------------------------------------------------------------- */
/* COLO sessions (PROTOCOL.md 4), and checkpoint records where COLO is off */

/*
 * A COLO case is a script of steps this source plays, in order, after the
 * setup (HELLO, BLOCKs, SETUP_END, READY, every data channel connected):
 *   M      the migration's passes over every page (with CF_2PASS a second
 *          pass of pages the "guest" dirtied), each with SYNC + ITERATION_END
 *   m      a migration pass cut off: its packets, no SYNC, no ITERATION_END
 *   D      DEVICE_STATE, the last chunk (flags 1, no bytes)
 *   d      DEVICE_STATE, a chunk that is not the last (flags 0, 4 bytes)
 *   P      the guest dirties pages (new data, data turned zero, zero pages
 *          turned data, a page whose only non-zero byte is its last), then
 *          a pass of exactly those pages, SYNC, ITERATION_END
 *   p      as P, cut off: the packets only
 *   Z      a pass with nothing dirty: SYNC on every channel, ITERATION_END
 *   Bn En  CHECKPOINT_BEGIN / CHECKPOINT_END n; Bn/L, En/L: a body of L
 *          bytes instead of 8 (the id's first L bytes, or the id and zeros)
 *   An     wait for CHECKPOINT_ACK n: committed. The blocks as they are now
 *          are the replica (written to DIR, which a promotion must give)
 *   H      HEARTBEAT (empty body)
 *   C      DIGESTS (with VERIFY), COMPLETE, wait for DONE: the session ends
 *          well; the blocks as they are now are written to DIR
 *   c      COMPLETE, as a violation (inside a checkpoint, say)
 *   I      DIGESTS of the blocks as they are now, as a violation
 *   K      a packet with a wrong magic on data channel 0
 *   k      a valid packet (4 pages of ram1, as they are) on data channel 0
 *          outside any pass, then 300 ms for the destination to read it
 *   Q      data channel 1 closes
 *   R      an ERROR record from the source
 *   N      a CANCEL record from the source
 *   X      every connection closes: the source is gone
 *   S      silence: nothing more is sent, every connection stays open
 * A script that does not end in C (or X) ends waiting for the destination
 * to close the main channel, an ERROR record first or not (a promoted
 * secondary need not send one); DONE or a CHECKPOINT_ACK then is a failure.
 * The driver checks the destination's exit, its error or "promoted" line,
 * and for a promotion the replica's digests against DIR.
 */
enum {
    CF_ASK = 1,      /* HELLO asks for COLO */
    CF_COLO = 2,     /* READY must accept COLO (else it must not) */
    CF_EITHER = 4,   /* READY may accept COLO or not; declined: B, E, A skipped */
    CF_LEGACY = 8,   /* zero_page_detection legacy (ZERO_PAGES records) */
    CF_NOZPD = 16,   /* zero_page_detection none */
    CF_ZSTD = 32,    /* method zstd */
    CF_CRC = 64,     /* feature CRC */
    CF_VERIFY = 128, /* feature VERIFY */
    CF_2PASS = 256,  /* the migration in two passes */
    CF_HB = 512,     /* an empty HEARTBEAT at every point of the stream */
};

static const struct colo_case {
    const char *name;
    unsigned flags;
    const char *script;
} colo_cases[] = {
    /* (A) Against a destination without COLO: checkpoint records are refused. */
    { "nocolo-begin", 0, "M D B0" },
    { "nocolo-end", 0, "M D E0" },
    { "nocolo-begin-midpass", 0, "m B0" },
    { "nocolo-end-midpass", 0, "m E0" },
    { "nocolo-asked-begin", CF_ASK, "M D B0" },
    { "nocolo-asked-end", CF_ASK, "M D E0" },
    { "nocolo-asked-begin-hb", CF_ASK | CF_HB, "H M H D H B0 E0" },
    /* (A) HEARTBEAT is optional: skipped in a plain migration, which succeeds. */
    { "heartbeat-mid", CF_HB, "H M H D H C" },
    { "heartbeat-mid-2pass-legacy", CF_HB | CF_2PASS | CF_LEGACY, "H M H D H C" },
    { "heartbeat-mid-crc-verify", CF_HB | CF_CRC | CF_VERIFY, "H M H D H C" },
    { "heartbeat-mid-zstd", CF_HB | CF_ZSTD, "H M H D H C" },
    { "heartbeat-mid-asked", CF_ASK | CF_HB, "H M H D H C" },

    /* (B) Against a COLO destination: whole sessions. */
    { "colo-valid", CF_ASK | CF_COLO,
      "M D B0 E0 A0 B1 P D E1 A1 B2 P D E2 A2 B3 Z D E3 A3 B4 P D E4 A4 C" },
    { "colo-valid-hb", CF_ASK | CF_COLO | CF_HB,
      "H M H D H B0 H E0 A0 H B1 H P H D H E1 A1 B2 P D E2 A2 H C" },
    { "colo-valid-2pass-crc", CF_ASK | CF_COLO | CF_2PASS | CF_CRC,
      "M D B0 E0 A0 B1 P D E1 A1 B2 P D E2 A2 B3 P D E3 A3 C" },
    { "colo-valid-verify", CF_ASK | CF_COLO | CF_VERIFY, "M D B0 E0 A0 B1 P D E1 A1 C" },
    { "colo-valid-legacy", CF_ASK | CF_COLO | CF_LEGACY,
      "M D B0 E0 A0 B1 P D E1 A1 B2 P D E2 A2 B3 P D E3 A3 C" },
    { "colo-valid-nozpd", CF_ASK | CF_COLO | CF_NOZPD,
      "M D B0 E0 A0 B1 P D E1 A1 B2 P D E2 A2 C" },
    { "colo-valid-zstd", CF_ASK | CF_COLO | CF_ZSTD,
      "M D B0 E0 A0 B1 P D E1 A1 B2 P D E2 A2 B3 P D E3 A3 C" },
    { "colo-valid-devchunks", CF_ASK | CF_COLO, "M d D B0 E0 A0 B1 P d d D E1 A1 C" },
    { "colo-stop-after-ckpt0", CF_ASK | CF_COLO, "M D B0 E0 A0 C" },
    { "colo-plain-source", 0, "M D C" },
    /* --x-colo with --into DIR: COLO declined, or the session refused. */
    { "colo-into-dir", CF_ASK | CF_EITHER, "M D B0 E0 A0 C" },

    /* (B) Before checkpoint 0 is committed: no replica, the session fails. */
    { "colo-begin-wrong-id", CF_ASK | CF_COLO, "M D B1" },
    { "colo-end-nobegin", CF_ASK | CF_COLO, "M D E0" },
    { "colo-end-id", CF_ASK | CF_COLO, "M D B0 E1" },
    { "colo-complete-in-ckpt", CF_ASK | CF_COLO, "M D B0 c" },
    { "colo-begin-nodev", CF_ASK | CF_COLO, "M B0" },
    { "colo-begin-devpart", CF_ASK | CF_COLO, "M d B0" },
    { "colo-begin-midpass", CF_ASK | CF_COLO, "m B0" },
    { "colo-ckpt0-pages", CF_ASK | CF_COLO, "M D B0 P D E0" },
    { "colo-begin-len0", CF_ASK | CF_COLO, "M D B0/0" },
    { "colo-begin-len4", CF_ASK | CF_COLO, "M D B0/4" },
    { "colo-begin-len16", CF_ASK | CF_COLO, "M D B0/16" },
    { "colo-end-len4", CF_ASK | CF_COLO, "M D B0 E0/4" },
    { "colo-end-len16", CF_ASK | CF_COLO, "M D B0 E0/16" },
    { "colo-lost-before-ckpt0", CF_ASK | CF_COLO, "M D X" },
    { "colo-lost-in-ckpt0", CF_ASK | CF_COLO, "M D B0 X" },
    { "colo-silent-before-ckpt0", CF_ASK | CF_COLO, "M D S" },

    /* (B) After a committed checkpoint: the secondary promotes its replica. */
    { "colo-lost-after-ckpt0", CF_ASK | CF_COLO, "M D B0 E0 A0 X" },
    { "colo-lost-mid-ckpt", CF_ASK | CF_COLO, "M D B0 E0 A0 B1 P D E1 A1 B2 p X" },
    { "colo-lost-before-end", CF_ASK | CF_COLO, "M D B0 E0 A0 B1 P D E1 A1 B2 P D X" },
    { "colo-silent-after-ckpt0", CF_ASK | CF_COLO, "M D B0 E0 A0 S" },
    { "colo-silent-mid-ckpt", CF_ASK | CF_COLO, "M D B0 E0 A0 B1 p S" },
    { "colo-bad-packet-mid-ckpt", CF_ASK | CF_COLO, "M D B0 E0 A0 B1 p K" },
    { "colo-data-closed-mid-ckpt", CF_ASK | CF_COLO, "M D B0 E0 A0 B1 p Q" },
    { "colo-source-error-after", CF_ASK | CF_COLO, "M D B0 E0 A0 B1 p R" },
    { "colo-begin-wrong-id-after", CF_ASK | CF_COLO, "M D B0 E0 A0 B2" },
    { "colo-begin-repeat-after", CF_ASK | CF_COLO, "M D B0 E0 A0 B1 P D E1 A1 B1" },
    { "colo-begin-nested-after", CF_ASK | CF_COLO, "M D B0 E0 A0 B1 P D B2" },
    { "colo-end-nobegin-after", CF_ASK | CF_COLO, "M D B0 E0 A0 E1" },
    { "colo-end-id-after", CF_ASK | CF_COLO, "M D B0 E0 A0 B1 P D E1 A1 B2 P D E3" },
    { "colo-end-nodev-after", CF_ASK | CF_COLO, "M D B0 E0 A0 B1 P E1" },
    { "colo-end-devpart-after", CF_ASK | CF_COLO, "M D B0 E0 A0 B1 P d E1" },
    { "colo-end-midpass-after", CF_ASK | CF_COLO, "M D B0 E0 A0 B1 p E1" },
    { "colo-complete-in-ckpt-after", CF_ASK | CF_COLO, "M D B0 E0 A0 B1 P D c" },
    { "colo-begin-len0-after", CF_ASK | CF_COLO, "M D B0 E0 A0 B1/0" },
    { "colo-begin-len4-after", CF_ASK | CF_COLO, "M D B0 E0 A0 B1/4" },
    { "colo-begin-len16-after", CF_ASK | CF_COLO, "M D B0 E0 A0 B1/16" },
    { "colo-end-len4-after", CF_ASK | CF_COLO, "M D B0 E0 A0 B1 P D E1/4" },
    { "colo-end-len16-after", CF_ASK | CF_COLO, "M D B0 E0 A0 B1 P D E1/16" },
    /* Pages after a pass's last SYNC, outside any pass. */
    { "data-after-last-sync", 0, "M D k c" },
    { "data-after-last-sync-verify", CF_VERIFY, "M D k I c" },
    { "colo-data-after-sync", CF_ASK | CF_COLO, "M D k B0 E0" },
    { "colo-data-after-sync-after", CF_ASK | CF_COLO, "M D B0 E0 A0 B1 P D k E1" },
    /* A CANCEL after a commit: PROTOCOL.md does not say promote or fail. */
    { "colo-cancel-after", CF_ASK | CF_COLO, "M D B0 E0 A0 B1 p N" },
};

static const struct colo_case *colo_case_find(const char *name)
{
    for (size_t i = 0; i < sizeof(colo_cases) / sizeof(colo_cases[0]); i++)
        if (!strcmp(colo_cases[i].name, name))
            return &colo_cases[i];
    return NULL;
}

/* HEARTBEATs the destination sent us, and whether one had a body. */
static unsigned g_hb_seen;

static bool colo_skip_optional(const struct rec *r)
{
    if (r->type == REC_HEARTBEAT) {
        if (r->len && !g_hb_seen)
            note("destination HEARTBEAT with a %" PRIu32 "-byte body (PROTOCOL.md: empty)",
                 r->len);
        g_hb_seen++;
        return true;
    }
    return (r->type & REC_OPTIONAL) != 0;
}

/* CHECKPOINT_BEGIN / CHECKPOINT_END id with a body of len bytes (8 is right). */
static void colo_ckpt_record(struct src *s, uint32_t type, uint64_t id, uint32_t len)
{
    uint8_t b[32] = { 0 };

    put64(b, id);
    if (len > sizeof(b))
        die("internal: checkpoint body of %" PRIu32 " bytes", len);
    xsend_record(s->main_fd, type, b, len,
                 type == REC_CKPT_BEGIN ? "CHECKPOINT_BEGIN" : "CHECKPOINT_END");
}

static void colo_wait_ack(struct src *s, uint64_t id)
{
    for (;;) {
        struct rec r;
        const char *err;
        int rc = read_record(s->main_fd, &r, IO_TIMEOUT, &err);

        if (rc)
            hfail("waiting for CHECKPOINT_ACK %" PRIu64 ": %s", id, err ? err : rstr(rc));
        if (colo_skip_optional(&r)) {
            free(r.body);
            continue;
        }
        if (r.type == REC_ERROR) {
            print_error_record(&r);
            hfail("destination sent ERROR instead of CHECKPOINT_ACK %" PRIu64, id);
        }
        if (r.type != REC_CKPT_ACK)
            hfail("record 0x%" PRIx32 " (%" PRIu32 " bytes) while waiting for CHECKPOINT_ACK "
                  "%" PRIu64,
                  r.type, r.len, id);
        if (r.len != 8)
            hfail("CHECKPOINT_ACK with a %" PRIu32 "-byte body, want 8", r.len);
        if (get64(r.body) != id)
            hfail("CHECKPOINT_ACK %" PRIu64 ", want %" PRIu64, get64(r.body), id);
        printf("CHECKPOINT_ACK %" PRIu64 "\n", id);
        free(r.body);
        return;
    }
}

/*
 * After a violation, or the source's silence: waits for the destination to
 * close the main channel. An ERROR record is printed; DONE or an ACK fail.
 */
static void colo_expect_end(struct src *s)
{
    int64_t deadline = now_ms() + ERROR_WAIT;

    for (;;) {
        struct rec r;
        const char *err;
        int64_t left = deadline - now_ms();
        int rc = read_record(s->main_fd, &r, left > 0 ? (int)left : 0, &err);

        if (rc) {
            printf("NO-ERROR-RECORD: %s\n", err ? err : rstr(rc));
            return;
        }
        if (colo_skip_optional(&r)) {
            free(r.body);
            continue;
        }
        if (r.type == REC_ERROR) {
            print_error_record(&r);
            if (wait_closed(s->main_fd, 3000))
                printf("MAIN-CLOSED-AFTER-ERROR\n");
            else
                note("main channel still open 3 s after the ERROR record");
            free(r.body);
            return;
        }
        if (r.type == REC_DONE)
            hfail("destination sent DONE after a violation");
        if (r.type == REC_CKPT_ACK)
            hfail("destination acknowledged checkpoint %" PRIu64 " after a violation",
                  r.len == 8 ? get64(r.body) : UINT64_MAX);
        hfail("record 0x%" PRIx32 " (%" PRIu32 " bytes) after a violation", r.type, r.len);
    }
}

/*
 * The guest dirties pages for checkpoint round r (1, 2, ...): in ram0 one
 * page gets new data; in ram1 the pages of class r (mod 11) get new data
 * (zero pages among them turn to data), even pages of the previous class
 * turn zero (data of the last checkpoint cleared), one page keeps only its
 * last byte, and a zero page is sent again as zero. act[] marks them.
 */
static void colo_dirty(struct src *s, uint8_t **act, unsigned r)
{
    uint32_t ps = s->ps;

    for (int i = 0; i < s->nb; i++)
        memset(act[i], 0, s->b[i].len / ps);
    fill_random(s->b[0].mem + (size_t)(r % 3) * ps, ps);
    act[0][r % 3] = 1;
    for (uint64_t pg = 0; pg < s->b[1].len / ps; pg++) {
        uint8_t *p = s->b[1].mem + pg * ps;

        if (pg % 11 == r % 11) {
            fill_random(p, ps);
            act[1][pg] = 1;
        } else if (pg % 11 == (r + 10) % 11 && pg % 2 == 0) {
            memset(p, 0, ps);
            act[1][pg] = 1;
        } else if (pg % 23 == r % 23) {
            memset(p, 0, ps);
            p[ps - 1] = (uint8_t)(r | 1);
            act[1][pg] = 1;
        } else if (pg % 29 == r % 29 && page_is_zero(p, ps)) {
            act[1][pg] = 1;
        }
    }
}

/* The migration's passes: everything, then (two passes) what the guest dirtied. */
static void colo_migrate(struct src *s, uint8_t **act, bool two, int scope_first)
{
    for (int i = 0; i < s->nb; i++)
        memset(act[i], 1, s->b[i].len / s->ps);
    if (!two) {
        src_pass(s, act, 1, false);
        return;
    }
    src_pass(s, act, scope_first, false);
    for (int i = 0; i < s->nb; i++) {
        uint64_t pages = s->b[i].len / s->ps;

        memset(act[i], 0, pages);
        for (uint64_t pg = 0; pg < pages; pg++) {
            uint8_t *p = s->b[i].mem + pg * s->ps;

            if (pg % 3 == 1) {
                act[i][pg] = 1;
                if (pg % 2)
                    memset(p, 0, s->ps);
                else
                    fill_random(p, s->ps);
            }
        }
    }
    src_pass(s, act, 1, false);
}

static int run_colo_case(const char *uri, const char *dir, const struct colo_case *cc)
{
    struct src s;
    uint8_t *act[MAX_BLOCKS];
    unsigned fl = cc->flags, round = 0;
    uint64_t feat = (fl & CF_ASK ? FEAT_COLO : 0) | (fl & CF_CRC ? FEAT_CRC : 0) |
                    (fl & CF_VERIFY ? FEAT_VERIFY : 0);
    uint32_t zpd = fl & CF_LEGACY ? ZPD_LEGACY : fl & CF_NOZPD ? ZPD_NONE : ZPD_MULTIFD;
    bool colo, ended = false, good;
    char script[512], *save = NULL;

    /* A script that ends in C is a session that must end well. */
    {
        size_t n = strlen(cc->script);

        good = n && cc->script[n - 1] == 'C';
    }
    if (fl & CF_HB) {
        g_optional = REC_HEARTBEAT & ~REC_OPTIONAL;
        g_optional_empty = true;
    }
    src_init(&s, uri, dir, 4096, 3, zpd, feat);
    s.method = fl & CF_ZSTD ? M_ZSTD : M_NONE;
    s.level = fl & CF_ZSTD ? 3 : 0;
    gen_blocks(s.b, &s.nb, s.ps, false);
    for (int i = 0; i < s.nb; i++)
        act[i] = xcalloc(1, s.b[i].len / s.ps);
    src_connect_main(&s, 1);
    src_read_preamble(&s, 1);
    src_setup(&s);
    src_ready(&s);
    colo = (s.acc & FEAT_COLO) != 0;
    if ((fl & CF_COLO) && !colo)
        hfail("READY features 0x%" PRIx64 " without COLO, which HELLO asked for and this "
              "destination was started to accept",
              s.acc);
    if (!(fl & (CF_COLO | CF_EITHER)) && colo)
        hfail("READY accepts COLO (features 0x%" PRIx64 ") on a destination not started "
              "for COLO",
              s.acc);
    if (fl & CF_EITHER)
        note("the destination %s COLO", colo ? "accepted" : "declined");
    if ((feat & (FEAT_CRC | FEAT_VERIFY)) != (s.acc & (FEAT_CRC | FEAT_VERIFY)))
        hfail("READY accepted features 0x%" PRIx64 ", want CRC/VERIFY of 0x%" PRIx64, s.acc,
              feat);
    src_channels(&s, false, STRAY_NONE);
    if (!good)
        g_tolerant = true;

    snprintf(script, sizeof(script), "%s", cc->script);
    for (char *t = strtok_r(script, " ", &save); t; t = strtok_r(NULL, " ", &save)) {
        char op = t[0];
        uint64_t id = 0;
        uint32_t len = 8;

        if (op == 'B' || op == 'E' || op == 'A') {
            char *end;

            id = strtoull(t + 1, &end, 10);
            if (*end == '/')
                len = (uint32_t)strtoul(end + 1, NULL, 10);
            if (!colo && (fl & CF_EITHER))
                continue;
        }
        printf("STEP %s\n", t);
        switch (op) {
        case 'M': colo_migrate(&s, act, fl & CF_2PASS, fl & CF_CRC ? 0 : 1); break;
        case 'm':
        case 'p':
            if (op == 'm')
                for (int i = 0; i < s.nb; i++)
                    memset(act[i], 1, s.b[i].len / s.ps);
            else
                colo_dirty(&s, act, ++round);
            g_pass_no_end = true;
            src_pass(&s, act, 1, false);
            g_pass_no_end = false;
            break;
        case 'P':
            colo_dirty(&s, act, ++round);
            src_pass(&s, act, 1, false);
            break;
        case 'Z':
            for (int i = 0; i < s.nb; i++)
                memset(act[i], 0, s.b[i].len / s.ps);
            src_pass(&s, act, 1, false);
            break;
        case 'D': src_device_state(&s, false); break;
        case 'd': {
            uint8_t b[8];

            put32(b, 0);
            memcpy(b + 4, "devX", 4);
            xsend_record(s.main_fd, REC_DEVICE_STATE, b, 8, "DEVICE_STATE");
            break;
        }
        case 'B': colo_ckpt_record(&s, REC_CKPT_BEGIN, id, len); break;
        case 'E': colo_ckpt_record(&s, REC_CKPT_END, id, len); break;
        case 'A':
            colo_wait_ack(&s, id);
            write_blocks(dir, s.b, s.nb);
            break;
        case 'H': xsend_record(s.main_fd, REC_HEARTBEAT, NULL, 0, "HEARTBEAT"); break;
        case 'C':
            if (s.acc & FEAT_VERIFY)
                src_digests(&s, false);
            write_blocks(dir, s.b, s.nb);
            printf("SENT normal=%" PRIu64 " zero=%" PRIu64 " packets=%" PRIu64 "\n", s.n_normal,
                   s.n_zero, s.n_packets);
            src_complete(&s, 0);
            src_wait_done(&s);
            ended = true;
            break;
        case 'c': src_complete(&s, 0); break;
        case 'I': src_digests(&s, false); break;
        case 'K': {
            uint8_t hdr[HDR_FIXED + 8 * MAX_PPP];
            uint8_t *payload = xcalloc(MAX_PPP, s.ps);
            size_t plen;

            probe_packet(&s, hdr, payload, &plen);
            put32(hdr, DATA_MAGIC + 1);
            send_packet(&s, 0, hdr, payload, plen);
            free(payload);
            break;
        }
        case 'k': {
            uint8_t hdr[HDR_FIXED + 8 * MAX_PPP];
            uint8_t *payload = xcalloc(MAX_PPP + 1, s.ps);
            size_t plen;

            probe_packet(&s, hdr, payload, &plen);
            plen = pkt_compress(&s, 0, hdr, payload, plen);
            pkt_crc(&s, hdr, payload, plen, 1);
            send_packet(&s, 0, hdr, payload, plen);
            free(payload);
            usleep(300000);
            break;
        }
        case 'Q':
            close(s.dfd[1]);
            s.dfd[1] = -1;
            break;
        case 'R': {
            static const char why[] = "hostile-colo-primary-gives-up";
            uint8_t b[64];

            put32(b, 5);
            memcpy(b + 4, why, sizeof(why) - 1);
            send_record(s.main_fd, REC_ERROR, b, (uint32_t)(4 + sizeof(why) - 1));
            break;
        }
        case 'N': {
            static const char why[] = "hostile-colo-primary-cancels";

            send_record(s.main_fd, REC_CANCEL, why, sizeof(why) - 1);
            break;
        }
        case 'X':
            usleep(100000);
            src_close(&s);
            printf("SOURCE-GONE\n");
            return 0;
        case 'S': break;
        default: die("internal: bad step '%s' in case %s", t, cc->name);
        }
    }
    if (!ended)
        colo_expect_end(&s);
    if (g_hb_seen)
        printf("HEARTBEATS-RECEIVED %u\n", g_hb_seen);
    src_close(&s);
    return 0;
}

/* ---------------------------------------------------------------------- */
/* Destination side */

struct dblk {
    char name[256];
    uint64_t len;
    uint8_t *mem;
};

struct dst {
    const char *mode, *outdir;
    int lfd, main_fd, nch;
    int dfd[MAX_CHANNELS];
    bool synced[MAX_CHANNELS];
    uint64_t last_num[MAX_CHANNELS];
    bool have_num[MAX_CHANNELS];
    uint8_t uuid[16];
    uint32_t ps, ppp, method, zpd, nb;
    uint64_t feat, acc;
    struct dblk *b;
    uint8_t *hdr, *payload;
    uint64_t n_normal, n_zero, n_packets, n_zero_rec, n_zero_pkt, n_sync;
    uint64_t iter, scope0_pass, scope0_last;
    uint64_t *nums;
    size_t nnums, capnums;
    bool dev_last, digests;
};

static void dst_read_main(struct dst *d, struct rec *r, const char *what)
{
    const char *err;
    int rc = read_record(d->main_fd, r, IO_TIMEOUT, &err);

    if (rc)
        hfail("reading %s on main: %s", what, err ? err : rstr(rc));
    if (r->type == REC_ERROR || r->type == REC_CANCEL) {
        if (r->type == REC_ERROR)
            print_error_record(r);
        hfail("source sent %s while we wanted %s",
              r->type == REC_ERROR ? "ERROR" : "CANCEL", what);
    }
}

static void dst_hello(struct dst *d)
{
    struct rec r;
    const uint8_t *p;

    do
        dst_read_main(d, &r, "HELLO");
    while ((r.type & REC_OPTIONAL) && (free(r.body), 1));
    if (r.type != REC_HELLO || r.len != 56)
        hfail("want HELLO (56 bytes), got type 0x%" PRIx32 " len %" PRIu32, r.type, r.len);
    p = r.body;
    memcpy(d->uuid, p, 16);
    d->ps = get32(p + 16);
    d->ppp = get32(p + 20);
    d->nch = (int)get32(p + 24);
    d->method = get32(p + 28);
    d->zpd = get32(p + 36);
    d->feat = get64(p + 40);
    d->nb = get32(p + 48);
    printf("HELLO page_size=%" PRIu32 " ppp=%" PRIu32 " channels=%d method=%" PRIu32
           " level=%" PRId32 " zpd=%" PRIu32 " features=0x%" PRIx64 " blocks=%" PRIu32 "\n",
           d->ps, d->ppp, d->nch, d->method, (int32_t)get32(p + 32), d->zpd, d->feat, d->nb);
    if (d->ps < 4096 || d->ps > 65536 || (d->ps & (d->ps - 1)))
        hfail("HELLO page_size %" PRIu32 " invalid", d->ps);
    if (d->ppp != PACKET_BYTES / d->ps)
        hfail("HELLO pages_per_packet %" PRIu32 " != 524288/page_size", d->ppp);
    if (d->nch < 1 || d->nch > 255)
        hfail("HELLO channels %d invalid", d->nch);
    if (d->method != 0)
        hfail("HELLO method %" PRIu32 ": this peer only speaks none (0)", d->method);
    if (get32(p + 32) != 0)
        note("HELLO level %" PRId32 " with method none", (int32_t)get32(p + 32));
    if (d->zpd > 2)
        hfail("HELLO zero_page_detection %" PRIu32 " invalid", d->zpd);
    if (d->feat & ~(FEAT_CRC | FEAT_VERIFY | FEAT_COLO))
        hfail("HELLO features 0x%" PRIx64 " has unknown bits", d->feat);
    if (d->nb < 1 || d->nb > 1024)
        hfail("HELLO block_count %" PRIu32 " invalid", d->nb);
    if (get32(p + 52) != 0)
        hfail("HELLO reserved field not zero");
    free(r.body);
}

static void dst_blocks(struct dst *d)
{
    struct rec r;

    d->b = xcalloc(d->nb, sizeof(*d->b));
    for (uint32_t i = 0; i < d->nb; i++) {
        uint32_t nl;

        dst_read_main(d, &r, "BLOCK");
        if (r.type & REC_OPTIONAL) {
            free(r.body);
            i--;
            continue;
        }
        if (r.type != REC_BLOCK || r.len < 16)
            hfail("want BLOCK %" PRIu32 ", got type 0x%" PRIx32 " len %" PRIu32, i, r.type,
                  r.len);
        d->b[i].len = get64(r.body);
        nl = get32(r.body + 12);
        if (get32(r.body + 8) != i)
            hfail("BLOCK index %" PRIu32 ", want %" PRIu32, get32(r.body + 8), i);
        if (nl < 1 || nl > 255 || r.len != 16 + nl)
            hfail("BLOCK name_len %" PRIu32 " vs body %" PRIu32, nl, r.len);
        memcpy(d->b[i].name, r.body + 16, nl);
        for (uint32_t k = 0; k < nl; k++)
            if (d->b[i].name[k] < 0x20 || d->b[i].name[k] > 0x7e)
                hfail("BLOCK name has a non-printable byte");
        for (uint32_t k = 0; k < i; k++)
            if (!strcmp(d->b[k].name, d->b[i].name))
                hfail("BLOCK name '%s' repeated", d->b[i].name);
        if (!d->b[i].len || d->b[i].len % d->ps)
            hfail("BLOCK '%s' length %" PRIu64 " not a positive multiple of the page size",
                  d->b[i].name, d->b[i].len);
        d->b[i].mem = xcalloc(1, d->b[i].len);
        printf("BLOCK %s length=%" PRIu64 "\n", d->b[i].name, d->b[i].len);
        free(r.body);
    }
    do
        dst_read_main(d, &r, "SETUP_END");
    while ((r.type & REC_OPTIONAL) && (free(r.body), 1));
    if (r.type != REC_SETUP_END || r.len != 0)
        hfail("want SETUP_END, got type 0x%" PRIx32 " len %" PRIu32, r.type, r.len);
    free(r.body);
}

static void dst_accept_channels(struct dst *d)
{
    for (int k = 0; k < d->nch; k++) {
        uint8_t init[64];
        int fd = accept_timeout(d->lfd, IO_TIMEOUT, d->main_fd), rc, id;

        if (fd < 0)
            hfail("only %d of %d data channels connected (main channel %s)", k, d->nch,
                  wait_closed(d->main_fd, 200) ? "closed by the source" : "open");
        rc = read_full(fd, init, 64, IO_TIMEOUT);
        if (rc)
            hfail("data channel init: %s", rstr(rc));
        id = init[24];
        if (get32(init) != DATA_MAGIC || get32(init + 4) != 1)
            hfail("data channel init magic 0x%08" PRIx32 " version %" PRIu32, get32(init),
                  get32(init + 4));
        if (memcmp(init + 8, d->uuid, 16))
            hfail("data channel init carries another UUID");
        if (id >= d->nch || d->dfd[id] >= 0)
            hfail("data channel id %d out of range or repeated", id);
        if (!page_is_zero(init + 25, 39))
            hfail("data channel %d init bytes 25..63 not zero", id);
        d->dfd[id] = fd;
    }
    printf("CHANNELS %d connected\n", d->nch);
}

static struct dblk *dst_find(struct dst *d, const char *name)
{
    for (uint32_t i = 0; i < d->nb; i++)
        if (!strcmp(d->b[i].name, name))
            return &d->b[i];
    return NULL;
}

/* Reads and checks one RAM packet on channel c; returns true for SYNC. */
static bool dst_packet(struct dst *d, int c)
{
    size_t hl = hdr_len(d->ppp);
    uint8_t *h = d->hdr;
    uint32_t flags, nn, nz, next, crc, n;
    uint64_t num;
    struct dblk *b = NULL;
    int rc = read_full(d->dfd[c], h, hl, IO_TIMEOUT);
    bool sync;

    if (rc)
        hfail("channel %d: reading packet header: %s", c, rstr(rc));
    flags = get32(h + 8);
    nn = get32(h + 16);
    next = get32(h + 20);
    num = get64(h + 24);
    nz = get32(h + 32);
    crc = get32(h + 36);
    sync = flags & FLAG_SYNC;
#define PFAIL(...)                                                                         \
    do {                                                                                   \
        printf("HOSTILE-FAIL: channel %d packet %" PRIu64 ": ", c, num);                   \
        printf(__VA_ARGS__);                                                               \
        printf("\n");                                                                      \
        exit(1);                                                                           \
    } while (0)
    if (get32(h) != DATA_MAGIC)
        PFAIL("magic 0x%08" PRIx32, get32(h));
    if (get32(h + 4) != 1)
        PFAIL("version %" PRIu32, get32(h + 4));
    if (flags & ~(FLAG_SYNC | FLAG_METHOD_MASK))
        PFAIL("flags 0x%" PRIx32 " has bits outside SYNC|method", flags);
    if (get32(h + 12) != d->ppp)
        PFAIL("pages_alloc %" PRIu32 " != %" PRIu32, get32(h + 12), d->ppp);
    if (nn > d->ppp || nz > d->ppp - nn)
        PFAIL("normal_pages %" PRIu32 " zero_pages %" PRIu32 " exceed %" PRIu32, nn, nz,
              d->ppp);
    if (h[40] > 1)
        PFAIL("CRC scope %u", h[40]);
    if (!page_is_zero(h + 41, 23))
        PFAIL("reserved bytes 41..63 not zero");
    if (!memchr(h + 64, 0, 256))
        PFAIL("block name not NUL-terminated");
    n = (uint32_t)strlen((char *)h + 64);
    if (!page_is_zero(h + 64 + n, 256 - n))
        PFAIL("block name not zero-padded");
    if (d->have_num[c] && num <= d->last_num[c])
        PFAIL("packet_num not increasing on the channel (previous %" PRIu64 ")",
              d->last_num[c]);
    d->have_num[c] = true;
    d->last_num[c] = num;
    if (d->nnums == d->capnums) {
        d->capnums = d->capnums * 2 + 64;
        d->nums = realloc(d->nums, d->capnums * sizeof(uint64_t));
        if (!d->nums)
            die("out of memory");
    }
    d->nums[d->nnums++] = num;
    if (sync && (flags != FLAG_SYNC || nn || nz || next || n))
        PFAIL("SYNC packet is not bare (flags 0x%" PRIx32 " normal %" PRIu32 " zero %" PRIu32
              " next %" PRIu32 " name '%s')",
              flags, nn, nz, next, (char *)h + 64);
    if (nn + nz) {
        if ((flags & FLAG_METHOD_MASK) != d->method)
            PFAIL("method bits 0x%" PRIx32 " != negotiated", flags & FLAG_METHOD_MASK);
        b = dst_find(d, (char *)h + 64);
        if (!b)
            PFAIL("unknown block '%s'", (char *)h + 64);
    }
    for (uint32_t i = 0; i < d->ppp; i++) {
        uint64_t off = get64(h + HDR_FIXED + 8 * i);

        if (i >= nn + nz) {
            if (off)
                PFAIL("offset slot %" PRIu32 " beyond the listed pages is not zero", i);
            continue;
        }
        if (off % d->ps)
            PFAIL("offset 0x%" PRIx64 " not page aligned", off);
        if (off > b->len - d->ps)
            PFAIL("offset 0x%" PRIx64 " beyond block '%s'", off, b->name);
    }
    if (next != nn * d->ps)
        PFAIL("next_packet_size %" PRIu32 " != %" PRIu32 " x page size", next, nn);
    rc = read_full(d->dfd[c], d->payload, next, IO_TIMEOUT);
    if (rc)
        PFAIL("reading %" PRIu32 "-byte payload: %s", next, rstr(rc));
    if (d->acc & FEAT_CRC) {
        uint32_t cc;

        put32(h + 36, 0);
        cc = crc_update(~0u, h, hl);
        if (h[40] == 1)
            cc = crc_update(cc, d->payload, next);
        if (~cc != crc)
            PFAIL("CRC32C 0x%08" PRIx32 ", computed 0x%08" PRIx32 " (scope %u)", crc, ~cc,
                  h[40]);
        if (h[40] == 0 && nn)
            d->scope0_pass++;
    } else if (crc || h[40]) {
        PFAIL("CRC field 0x%08" PRIx32 " / scope %u set without the CRC feature", crc, h[40]);
    }
    if (nz && d->zpd != ZPD_MULTIFD)
        PFAIL("%" PRIu32 " zero pages in a packet with zero_page_detection %" PRIu32, nz,
              d->zpd);
    for (uint32_t i = 0; i < nn; i++)
        memcpy(b->mem + get64(h + HDR_FIXED + 8 * i), d->payload + (size_t)i * d->ps, d->ps);
    for (uint32_t i = nn; i < nn + nz; i++)
        memset(b->mem + get64(h + HDR_FIXED + 8 * i), 0, d->ps);
#undef PFAIL
    d->n_normal += nn;
    d->n_zero += nz;
    d->n_zero_pkt += nz;
    if (nn + nz)
        d->n_packets++;
    if (sync)
        d->n_sync++;
    return sync;
}

/* ITERATION_END: every channel has written its SYNC; drain each up to it. */
static void dst_iteration_end(struct dst *d, const struct rec *r)
{
    if (r->len != 8)
        hfail("ITERATION_END body %" PRIu32 " bytes", r->len);
    if (get64(r->body) != d->iter + 1)
        hfail("ITERATION_END %" PRIu64 ", want %" PRIu64, get64(r->body), d->iter + 1);
    for (int c = 0; c < d->nch; c++) {
        while (!d->synced[c])
            d->synced[c] = dst_packet(d, c);
        d->synced[c] = false;
    }
    d->iter++;
    d->scope0_last = d->scope0_pass;
    d->scope0_pass = 0;
}

static void dst_zero_pages(struct dst *d, const struct rec *r)
{
    uint32_t bi, n;

    if (d->zpd != ZPD_LEGACY)
        hfail("ZERO_PAGES record with zero_page_detection %" PRIu32, d->zpd);
    if (r->len < 8)
        hfail("ZERO_PAGES body %" PRIu32 " bytes", r->len);
    bi = get32(r->body);
    n = get32(r->body + 4);
    if (bi >= d->nb || n < 1 || n > 4096 || r->len != 8 + 8 * n)
        hfail("ZERO_PAGES block %" PRIu32 " count %" PRIu32 " len %" PRIu32, bi, n, r->len);
    for (uint32_t i = 0; i < n; i++) {
        uint64_t off = get64(r->body + 8 + 8 * i);

        if (off % d->ps || off > d->b[bi].len - d->ps)
            hfail("ZERO_PAGES offset 0x%" PRIx64 " invalid for block '%s'", off, d->b[bi].name);
        memset(d->b[bi].mem + off, 0, d->ps);
    }
    d->n_zero += n;
    d->n_zero_rec += n;
}

static int cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;

    return x < y ? -1 : x > y;
}

/* COMPLETE: cross-check everything this peer counted and rebuilt. */
static void dst_complete(struct dst *d, const struct rec *r)
{
    uint64_t zero_pages_seen = 0;

    if (r->len != 24)
        hfail("COMPLETE body %" PRIu32 " bytes", r->len);
    printf("STATS normal=%" PRIu64 " zero=%" PRIu64 " (in packets %" PRIu64
           ", in ZERO_PAGES %" PRIu64 ") packets=%" PRIu64 " syncs=%" PRIu64
           " iterations=%" PRIu64 "\n",
           d->n_normal, d->n_zero, d->n_zero_pkt, d->n_zero_rec, d->n_packets, d->n_sync,
           d->iter);
    if (get64(r->body) != d->n_normal || get64(r->body + 8) != d->n_zero ||
        get64(r->body + 16) != d->n_packets)
        hfail("COMPLETE says normal=%" PRIu64 " zero=%" PRIu64 " packets=%" PRIu64
              ", this peer counted %" PRIu64 "/%" PRIu64 "/%" PRIu64,
              get64(r->body), get64(r->body + 8), get64(r->body + 16), d->n_normal, d->n_zero,
              d->n_packets);
    if (!d->iter)
        hfail("COMPLETE before any ITERATION_END");
    if (!d->dev_last)
        hfail("COMPLETE before the last DEVICE_STATE chunk");
    if ((d->acc & FEAT_VERIFY) && !d->digests)
        hfail("VERIFY accepted but no DIGESTS before COMPLETE");
    if (d->scope0_last)
        hfail("%" PRIu64 " packets of the final pass used CRC scope 0", d->scope0_last);
    qsort(d->nums, d->nnums, sizeof(uint64_t), cmp_u64);
    for (size_t i = 1; i < d->nnums; i++)
        if (d->nums[i] == d->nums[i - 1])
            hfail("packet_num %" PRIu64 " used twice", d->nums[i]);
    for (int c = 0; c < d->nch; c++) {
        struct pollfd p = { .fd = d->dfd[c], .events = POLLIN };
        char x;

        if (poll(&p, 1, 0) > 0 && recv(d->dfd[c], &x, 1, MSG_PEEK | MSG_DONTWAIT) == 1)
            hfail("channel %d has bytes after its final SYNC", c);
    }
    for (uint32_t i = 0; i < d->nb; i++)
        for (uint64_t o = 0; o < d->b[i].len; o += d->ps)
            zero_pages_seen += page_is_zero(d->b[i].mem + o, d->ps);
    if (d->zpd == ZPD_NONE && d->n_zero)
        hfail("zero pages sent with zero_page_detection none");
    if (d->zpd != ZPD_NONE && zero_pages_seen && !d->n_zero)
        note("%" PRIu64 " zero pages in memory but none sent as zero (detection %" PRIu32 ")",
             zero_pages_seen, d->zpd);
    if (d->zpd == ZPD_LEGACY && d->n_zero_pkt)
        hfail("legacy detection but zero pages in packets");
}

static void dst_digests(struct dst *d, const struct rec *r)
{
    if (!(d->acc & FEAT_VERIFY))
        hfail("DIGESTS although VERIFY was not accepted");
    if (r->len != 8 * d->nb)
        hfail("DIGESTS body %" PRIu32 " bytes for %" PRIu32 " blocks", r->len, d->nb);
    for (uint32_t i = 0; i < d->nb; i++) {
        uint64_t want = XXH3_64bits(d->b[i].mem, d->b[i].len);

        if (get64(r->body + 8 * i) != want)
            hfail("DIGESTS block '%s': source says 0x%016" PRIx64 ", received bytes hash to "
                  "0x%016" PRIx64,
                  d->b[i].name, get64(r->body + 8 * i), want);
    }
    d->digests = true;
}

static void dst_send_error(struct dst *d, const char *msg)
{
    struct buf b = { 0 };

    buf_32(&b, 9);
    buf_mem(&b, msg, strlen(msg));
    send_record(d->main_fd, REC_ERROR, b.p, (uint32_t)b.len);
    buf_free(&b);
}

/*
 * An optional record the source must skip: an unknown type for the
 * dest-optional-* cases, a HEARTBEAT for dest-heartbeat.
 */
static void dst_optional(struct dst *d)
{
    static const char junk[11] = "skip me ok!";

    if (!strcmp(d->mode, "dest-heartbeat"))
        xsend_record(d->main_fd, REC_HEARTBEAT, NULL, 0, "HEARTBEAT");
    else
        xsend_record(d->main_fd, REC_OPTIONAL | 0x6123, junk, sizeof(junk), "optional record");
}

/* Closes our sending side but keeps reading, so nothing we sent is lost to a reset. */
static void dst_linger(struct dst *d, int ms)
{
    shutdown(d->main_fd, SHUT_WR);
    if (wait_closed(d->main_fd, ms))
        printf("SOURCE-CLOSED-MAIN\n");
    else
        note("source kept the main channel open %d ms after our ERROR/close", ms);
}

static int run_dest(const char *uri, const char *mode, const char *outdir)
{
    struct dst d;
    uint8_t pre[16];
    int rc;
    bool done = false;

    memset(&d, 0, sizeof(d));
    d.mode = mode;
    d.outdir = outdir;
    for (int i = 0; i < MAX_CHANNELS; i++)
        d.dfd[i] = -1;
    d.lfd = listen_uri(uri);
    if (!strncmp(uri, "tcp:", 4)) {
        /* Port 0 picks a free port: tell the driver which one. */
        struct sockaddr_storage ss;
        socklen_t sl = sizeof(ss);
        const char *colon = strrchr(uri, ':');
        uint16_t port = 0;

        getsockname(d.lfd, (struct sockaddr *)&ss, &sl);
        if (ss.ss_family == AF_INET)
            port = ntohs(((struct sockaddr_in *)&ss)->sin_port);
        else if (ss.ss_family == AF_INET6)
            port = ntohs(((struct sockaddr_in6 *)&ss)->sin6_port);
        printf("LISTENING %.*s:%u\n", (int)(colon - uri), uri, port);
    } else {
        printf("LISTENING %s\n", uri);
    }
    fflush(stdout);
    d.main_fd = accept_timeout(d.lfd, 30000, -1);
    if (d.main_fd < 0)
        hfail("no source connected within 30 s");
    rc = read_full(d.main_fd, pre, 16, IO_TIMEOUT);
    if (rc)
        hfail("reading source preamble: %s", rstr(rc));
    if (get32(pre) != MAIN_MAGIC || !page_is_zero(pre + 8, 8))
        hfail("source preamble magic 0x%08" PRIx32 " or reserved bytes wrong", get32(pre));
    if (get32(pre + 4) < 1)
        hfail("source preamble version %" PRIu32, get32(pre + 4));
    if (get32(pre + 4) != 1)
        note("source speaks version %" PRIu32, get32(pre + 4));
    memset(pre, 0, 16);
    put32(pre, MAIN_MAGIC);
    put32(pre + 4, 1);
    if (!strcmp(mode, "dest-bad-preamble"))
        put32(pre, 0x4D464444);
    if (!strcmp(mode, "dest-version-high"))
        put32(pre + 4, 2);
    xwrite(d.main_fd, pre, 16, "preamble");
    if (!strcmp(mode, "dest-bad-preamble") || !strcmp(mode, "dest-version-high")) {
        dst_linger(&d, 10000);
        return 0;
    }
    dst_hello(&d);
    dst_blocks(&d);
    if (!strcmp(mode, "dest-valid-none") && d.zpd != ZPD_NONE)
        hfail("HELLO zero_page_detection %" PRIu32 ", want 0 (none)", d.zpd);
    if (!strcmp(mode, "dest-valid-legacy") && d.zpd != ZPD_LEGACY)
        hfail("HELLO zero_page_detection %" PRIu32 ", want 1 (legacy)", d.zpd);
    if (!strcmp(mode, "dest-valid-multifd") && d.zpd != ZPD_MULTIFD)
        hfail("HELLO zero_page_detection %" PRIu32 ", want 2 (multifd)", d.zpd);
    if ((!strcmp(mode, "dest-crc-verify") || !strcmp(mode, "dest-subset")) &&
        d.feat != (FEAT_CRC | FEAT_VERIFY))
        hfail("HELLO features 0x%" PRIx64 ", want CRC|VERIFY (0x3)", d.feat);
    if (!strcmp(mode, "dest-garbage")) {
        uint8_t junk[64];

        rng = 99;
        fill_random(junk, sizeof(junk));
        write_all(d.main_fd, junk, sizeof(junk));
        dst_linger(&d, 10000);
        return 0;
    }
    d.acc = d.feat & (FEAT_CRC | FEAT_VERIFY);
    if (!strcmp(mode, "dest-subset"))
        d.acc = 0;
    /* The source may hang up on what follows; report that, not our EPIPE. */
    if (!strcmp(mode, "dest-heartbeat") || !strcmp(mode, "dest-optional-ready"))
        g_tolerant = true;
    if (!strcmp(mode, "dest-optional-ready") || !strcmp(mode, "dest-heartbeat"))
        dst_optional(&d);
    {
        uint8_t f[8];

        put64(f, d.acc);
        xsend_record(d.main_fd, REC_READY, f, 8, "READY");
    }
    if (!strcmp(mode, "dest-error")) {
        dst_send_error(&d, "hostile destination refuses: disk on fire");
        dst_linger(&d, 10000);
        return 0;
    }
    d.hdr = xcalloc(1, hdr_len(d.ppp));
    d.payload = xcalloc(d.ppp, d.ps);
    dst_accept_channels(&d);
    if (!strcmp(mode, "dest-killed")) {
        /* Read a few MiB off the channels, then vanish without a word. */
        size_t total = 0;
        char junk[65536];

        while (total < (8u << 20)) {
            for (int c = 0; c < d.nch; c++) {
                rc = read_full(d.dfd[c], junk, sizeof(junk), IO_TIMEOUT);
                if (rc)
                    hfail("dest-killed: channel %d: %s", c, rstr(rc));
                total += sizeof(junk);
            }
        }
        printf("KILLED after %zu bytes\n", total);
        fflush(stdout);
        _exit(0);
    }
    while (!done) {
        struct pollfd p[MAX_CHANNELS + 1];
        int map[MAX_CHANNELS + 1], n = 0;

        p[n].fd = d.main_fd;
        p[n].events = POLLIN;
        map[n++] = -1;
        for (int c = 0; c < d.nch; c++) {
            if (d.synced[c])
                continue;
            p[n].fd = d.dfd[c];
            p[n].events = POLLIN;
            map[n++] = c;
        }
        rc = poll(p, (nfds_t)n, IO_TIMEOUT);
        if (rc == 0)
            hfail("source silent for %d ms", IO_TIMEOUT);
        if (rc < 0 && errno != EINTR)
            die("poll: %s", strerror(errno));
        for (int i = 1; i < n; i++)
            if (p[i].revents)
                d.synced[map[i]] = dst_packet(&d, map[i]);
        if (p[0].revents) {
            struct rec r;

            dst_read_main(&d, &r, "a main-channel record");
            switch (r.type) {
            case REC_ZERO_PAGES: dst_zero_pages(&d, &r); break;
            case REC_ITER_END: dst_iteration_end(&d, &r); break;
            case REC_DEVICE_STATE:
                if (r.len < 4 || (get32(r.body) & ~1u))
                    hfail("DEVICE_STATE body %" PRIu32 " flags bad", r.len);
                if (d.dev_last)
                    hfail("DEVICE_STATE after the last chunk");
                d.dev_last = get32(r.body) & 1;
                printf("DEVICE_STATE %" PRIu32 " bytes last=%d\n", r.len - 4, d.dev_last);
                break;
            case REC_DIGESTS: dst_digests(&d, &r); break;
            case REC_COMPLETE:
                dst_complete(&d, &r);
                done = true;
                break;
            default:
                if (!(r.type & REC_OPTIONAL))
                    hfail("unknown mandatory record type 0x%" PRIx32, r.type);
            }
            free(r.body);
        }
    }
    if (!strcmp(mode, "dest-no-done")) {
        printf("CLOSING without DONE\n");
        fflush(stdout);
        _exit(0);
    }
    if (!strcmp(mode, "dest-error-complete")) {
        dst_send_error(&d, "hostile destination rejects the switchover");
        dst_linger(&d, 10000);
        return 0;
    }
    if (!strcmp(mode, "dest-optional-done") || !strcmp(mode, "dest-heartbeat"))
        dst_optional(&d);
    xsend_record(d.main_fd, REC_DONE, NULL, 0, "DONE");
    if (outdir) {
        struct blk w;

        for (uint32_t i = 0; i < d.nb; i++) {
            memset(&w, 0, sizeof(w));
            strcpy(w.name, d.b[i].name);
            w.len = d.b[i].len;
            w.mem = d.b[i].mem;
            write_blocks(outdir, &w, 1);
        }
    }
    printf("DONE-SENT\n");
    if (!wait_closed(d.main_fd, 5000))
        note("source did not close the main channel within 5 s after DONE");
    return 0;
}

/* ---------------------------------------------------------------------- */
/* Case table */

static int run_case(const char *name, const char *uri, const char *dir)
{
    struct vopt o;
    static const struct {
        const char *name;
        enum pmut m;
    } pm[] = {
        { "pkt-magic", PM_MAGIC },
        { "pkt-version", PM_VERSION },
        { "pkt-flags", PM_FLAGS },
        { "pkt-pages-alloc", PM_PAGES_ALLOC },
        { "pkt-normal-pages", PM_NORMAL },
        { "pkt-zero-pages", PM_ZERO },
        { "pkt-unknown-block", PM_BLOCK },
        { "pkt-unaligned", PM_UNALIGNED },
        { "pkt-beyond", PM_BEYOND },
        { "pkt-zero-beyond", PM_ZERO_BEYOND },
        { "pkt-zero-unaligned", PM_ZERO_UNALIGNED },
        { "pkt-next-size", PM_NEXT_SIZE },
        { "pkt-method", PM_METHOD },
        { "pkt-name-nonul", PM_NAME_NONUL },
        { "pkt-crc-header", PM_CRC_HEADER },
        { "pkt-crc-payload", PM_CRC_PAYLOAD },
        { "pkt-crc-scope", PM_CRC_SCOPE },
        { "pkt-trunc-header", PM_TRUNC_HEADER },
        { "pkt-trunc-payload", PM_TRUNC_PAYLOAD },
    };

    vopt_default(&o);
    if (!strncmp(name, "dest-", 5))
        return run_dest(uri, name, dir);
    if (colo_case_find(name))
        return run_colo_case(uri, dir, colo_case_find(name));
    for (size_t i = 0; i < sizeof(pm) / sizeof(pm[0]); i++)
        if (!strcmp(name, pm[i].name))
            return run_packet_mutation(uri, pm[i].m);
    if (!strncmp(name, "rec-", 4) || !strncmp(name, "legacy-zero-", 12) ||
        !strcmp(name, "source-cancel") || !strcmp(name, "source-error") ||
        !strcmp(name, "main-garbage") || !strcmp(name, "main-closed") ||
        !strcmp(name, "data-closed"))
        return run_record_case(uri, name);
    if (!strncmp(name, "hello-", 6) || !strncmp(name, "block-", 6))
        return run_setup_case(uri, name);
    if (!strcmp(name, "chan-id-range") || !strcmp(name, "chan-dup"))
        return run_channel_case(uri, name);
    if (!strcmp(name, "version-zero"))
        return run_version_zero(uri);
    if (!strcmp(name, "source-killed"))
        return run_source_killed(uri);
    /*
     * METHOD-flip-verify: a whole compressed migration with VERIFY, ram0 as
     * text, and one packet's payload flipped in the middle: the decoder may
     * see the damage or not (a flip can decode to pages of the right size),
     * but the session must fail, by the decoder or by the digests.
     */
    if (strstr(name, "-flip-verify")) {
        if (!strcmp(name, "zlib-flip-verify"))
            o.method = M_ZLIB;
        else if (!strcmp(name, "zstd-flip-verify"))
            o.method = M_ZSTD;
        else if (!strcmp(name, "lz4-flip-verify"))
            o.method = M_LZ4;
        else
            die("unknown case '%s' (try: hostile list)", name);
        o.level = 1;
        o.feat = FEAT_VERIFY;
        o.flip = true;
        return run_valid(uri, dir, &o);
    }
    if (!strncmp(name, "zlib-", 5) || !strncmp(name, "zstd-", 5) || !strncmp(name, "lz4-", 4))
        return run_comp_case(uri, name);
    /*
     * valid-METHOD[-VARIANT]: a whole migration compressed by this peer's
     * own encoders; every byte compared. Variants: big (32 MiB more, two
     * passes, 5 channels, CRC and VERIFY: many packets per stream), nozpd
     * (zero pages compressed as normal pages), legacy (zero pages in
     * ZERO_PAGES records), 16k (16 KiB pages).
     */
    if (!strncmp(name, "valid-", 6)) {
        static const struct {
            const char *n;
            uint32_t m;
            int32_t level;
        } vm[] = { { "zlib", M_ZLIB, 1 }, { "zstd", M_ZSTD, 3 }, { "lz4", M_LZ4, 1 } };

        for (size_t i = 0; i < sizeof(vm) / sizeof(vm[0]); i++) {
            size_t l = strlen(vm[i].n);
            const char *v = name + 6 + l;

            if (strncmp(name + 6, vm[i].n, l) || (*v && *v != '-'))
                continue;
            o.method = vm[i].m;
            o.level = vm[i].level;
            if (!strcmp(v, "-big")) {
                o.big = true;
                o.passes = 2;
                o.nch = 5;
                o.feat = FEAT_CRC | FEAT_VERIFY;
            } else if (!strcmp(v, "-nozpd")) {
                o.zpd = ZPD_NONE;
            } else if (!strcmp(v, "-legacy")) {
                o.zpd = ZPD_LEGACY;
            } else if (!strcmp(v, "-16k")) {
                o.ps = 16384;
            } else if (!strcmp(v, "-pageflush") && vm[i].m != M_LZ4) {
                g_page_flush = true;
            } else if (*v) {
                die("unknown case '%s' (try: hostile list)", name);
            }
            return run_valid(uri, dir, &o);
        }
    }

    if (!strcmp(name, "valid-multifd")) {
    } else if (!strcmp(name, "valid-legacy")) {
        o.zpd = ZPD_LEGACY;
    } else if (!strcmp(name, "valid-none")) {
        o.zpd = ZPD_NONE;
    } else if (!strcmp(name, "valid-crc-verify")) {
        o.feat = FEAT_CRC | FEAT_VERIFY;
    } else if (!strcmp(name, "valid-crc-2pass")) {
        o.feat = FEAT_CRC | FEAT_VERIFY;
        o.passes = 2;
        o.scope_first = 0;
    } else if (!strcmp(name, "valid-2pass")) {
        o.passes = 2;
    } else if (!strcmp(name, "valid-2pass-legacy")) {
        o.passes = 2;
        o.zpd = ZPD_LEGACY;
    } else if (!strcmp(name, "valid-sync-with-pages")) {
        o.sync_with_pages = true;
    } else if (!strcmp(name, "valid-reverse-channels")) {
        o.reverse = true;
    } else if (!strcmp(name, "valid-1-channel")) {
        o.nch = 1;
    } else if (!strcmp(name, "valid-16k-pages")) {
        o.ps = 16384;
    } else if (!strcmp(name, "valid-version-future")) {
        o.preamble_version = 9;
    } else if (!strcmp(name, "valid-device-chunks")) {
        o.dev_chunks = true;
    } else if (!strcmp(name, "optional-record")) {
        g_optional = 0x7001;
    } else if (!strcmp(name, "optional-heartbeat")) {
        /* The destination may refuse a HEARTBEAT outside COLO: let it hang up. */
        g_optional = REC_HEARTBEAT & ~REC_OPTIONAL;
        g_tolerant = true;
    } else if (!strcmp(name, "valid-big")) {
        o.big = true;
        o.nch = 4;
    } else if (!strcmp(name, "valid-big-legacy")) {
        o.big = true;
        o.zpd = ZPD_LEGACY;
    } else if (!strcmp(name, "valid-big-2pass")) {
        o.big = true;
        o.passes = 2;
        o.nch = 5;
        o.feat = FEAT_CRC | FEAT_VERIFY;
        o.scope_first = 0;
    } else if (!strcmp(name, "stray-magic")) {
        o.stray = STRAY_BEFORE_MAGIC;
    } else if (!strcmp(name, "stray-short")) {
        o.stray = STRAY_BEFORE_SHORT;
    } else if (!strcmp(name, "stray-foreign-uuid")) {
        o.stray = STRAY_FOREIGN_UUID;
    } else if (!strcmp(name, "stray-data-version")) {
        o.stray = STRAY_DATA_VERSION;
    } else if (!strcmp(name, "stray-late-garbage")) {
        o.stray = STRAY_LATE_GARBAGE;
    } else if (!strcmp(name, "stray-late-foreign")) {
        o.stray = STRAY_LATE_FOREIGN;
    } else if (!strcmp(name, "stray-late-idle")) {
        o.stray = STRAY_LATE_IDLE;
    } else if (!strcmp(name, "complete-mismatch")) {
        o.complete_delta = 1;
    } else if (!strcmp(name, "digest-mismatch")) {
        o.feat = FEAT_VERIFY;
        o.bad_digest = true;
    } else {
        die("unknown case '%s' (try: hostile list)", name);
    }
    return run_valid(uri, dir, &o);
}

/* `gen DIR`: the files a real `multifd send` migrates to a hostile destination. */
static int run_gen(const char *dir)
{
    struct blk b[3];
    int nb;

    gen_blocks(b, &nb, 4096, false);
    strcpy(b[2].name, "ram2");
    b[2].len = 2048ull * 4096; /* 8 MiB: many packets per channel */
    b[2].mem = xcalloc(1, b[2].len);
    for (uint64_t i = 0; i < 2048; i++)
        if ((i / 37) % 3 != 1 && i % 11 != 4)
            fill_random(b[2].mem + i * 4096, 4096);
    write_blocks(dir, b, 3);
    return 0;
}

/*
 * Decodes one chunk the way PROTOCOL.md 2.3 reads it, with the reference
 * decoders: the chunk must give exactly want bytes, no more, and be used up.
 */
static bool selftest_decode(uint32_t m, z_stream *zi, ZSTD_DCtx *zd, const uint8_t *in,
                            size_t n, uint8_t *out, size_t want, uint32_t ps)
{
    if (m == M_ZLIB) {
        int r;

        zi->next_in = (Bytef *)in;
        zi->avail_in = (uInt)n;
        zi->next_out = out;
        zi->avail_out = (uInt)want + 1;
        r = inflate(zi, Z_SYNC_FLUSH);
        return (r == Z_OK || r == Z_BUF_ERROR) && !zi->avail_in && zi->avail_out == 1;
    }
    if (m == M_ZSTD) {
        ZSTD_inBuffer ib = { in, n, 0 };
        ZSTD_outBuffer ob = { out, want + 1, 0 };

        while (ib.pos < ib.size) {
            size_t r = ZSTD_decompressStream(zd, &ob, &ib);

            if (ZSTD_isError(r) || ob.pos > want)
                return false;
        }
        return ob.pos == want;
    }
    if (m == M_LZ4) {
        size_t pos = 0;

        for (size_t o = 0; o < want; o += ps) {
            uint32_t c;

            if (n - pos < 4)
                return false;
            c = get32(in + pos);
            pos += 4;
            if (!c || c > ps || c > n - pos)
                return false;
            if (c == ps)
                memcpy(out + o, in + pos, ps);
            else if (LZ4_decompress_safe((const char *)in + pos, (char *)out + o, (int)c,
                                         (int)ps) != (int)ps)
                return false;
            pos += c;
        }
        return pos == n;
    }
    return false;
}

/* This peer's encoders against the reference decoders: three chunks per stream. */
static void selftest_codecs(void)
{
    static const uint32_t ms[] = { M_ZLIB, M_ZSTD, M_LZ4 };
    struct src *s = xcalloc(1, sizeof(*s));
    uint8_t *raw = xcalloc(8, 4096), *chunk = xcalloc(1, PAYLOAD_CAP);
    uint8_t *back = xcalloc(9, 4096);

    s->ps = 4096;
    s->level = 1;
    for (size_t k = 0; k < sizeof(ms) / sizeof(ms[0]); k++) {
        z_stream zi;
        ZSTD_DCtx *zd = ZSTD_createDCtx();

        memset(&zi, 0, sizeof(zi));
        if (inflateInit(&zi) != Z_OK || !zd)
            die("selftest: decoder setup");
        for (int round = 0; round < 3; round++) {
            size_t np = round == 2 ? 1 : 8, n;

            /* Text, random and zero pages; the same text again in round 1. */
            for (size_t i = 0; i < np; i++) {
                uint8_t *p = raw + i * 4096;

                if (i % 3 == 0)
                    fill_text(p, 4096, (unsigned)i);
                else if (i % 3 == 1)
                    fill_random(p, 4096);
                else
                    memset(p, 0, 4096);
            }
            n = comp_chunk(s, 0, ms[k], raw, np * 4096, chunk, PAYLOAD_CAP, false);
            if (!selftest_decode(ms[k], &zi, zd, chunk, n, back, np * 4096, 4096) ||
                memcmp(back, raw, np * 4096))
                hfail("%s: chunk %d (%zu pages, %zu bytes) does not decode to its pages",
                      method_name(ms[k]), round, np, n);
        }
        inflateEnd(&zi);
        ZSTD_freeDCtx(zd);
    }
    if (s->zs[0]) {
        deflateEnd(s->zs[0]);
        free(s->zs[0]);
    }
    ZSTD_freeCCtx(s->zc[0]);
    free(s);
    free(raw);
    free(chunk);
    free(back);
}

static void selftest_colo_list(void);

/* Checks this file's own codecs where a known answer exists. */
static int run_selftest(void)
{
    uint8_t b[16];
    uint8_t zero32[32] = { 0 };
    uint8_t inc32[32];

    for (int i = 0; i < 32; i++)
        inc32[i] = (uint8_t)i;
    if (crc32c("123456789", 9) != 0xE3069283u)
        hfail("crc32c check value 0x%08" PRIx32, crc32c("123456789", 9));
    /* RFC 3720 B.4 vectors. */
    if (crc32c(zero32, 32) != 0x8A9136AAu)
        hfail("crc32c of 32 zero bytes 0x%08" PRIx32, crc32c(zero32, 32));
    if (crc32c(inc32, 32) != 0x46DD794Eu)
        hfail("crc32c of 0..31 0x%08" PRIx32, crc32c(inc32, 32));
    put64(b, 0x0102030405060708ull);
    put32(b + 8, 0x11223344u);
    if (b[0] != 1 || b[7] != 8 || b[8] != 0x11 || get64(b) != 0x0102030405060708ull ||
        get32(b + 8) != 0x11223344u)
        hfail("big-endian helpers");
    if (hdr_len(PACKET_BYTES / 4096) != 1344)
        hfail("packet header length %zu", hdr_len(PACKET_BYTES / 4096));
    if (XXH3_64bits("", 0) != 0x2D06800538D394C2ull)
        hfail("XXH3_64bits of empty input 0x%016" PRIx64, (uint64_t)XXH3_64bits("", 0));
    selftest_codecs();
    selftest_colo_list();
    printf("SELFTEST OK\n");
    return 0;
}

static const char *const all_cases[] = {
    "valid-multifd", "valid-legacy", "valid-none", "valid-crc-verify", "valid-crc-2pass",
    "valid-2pass", "valid-2pass-legacy", "valid-sync-with-pages", "valid-reverse-channels",
    "valid-1-channel", "valid-16k-pages", "valid-version-future", "valid-device-chunks",
    "optional-record", "stray-magic", "stray-short", "stray-foreign-uuid",
    "stray-data-version", "stray-late-garbage", "stray-late-foreign", "stray-late-idle",
    "complete-mismatch", "digest-mismatch", "version-zero", "chan-id-range", "chan-dup",
    "pkt-magic", "pkt-version", "pkt-flags", "pkt-pages-alloc", "pkt-normal-pages",
    "pkt-zero-pages", "pkt-unknown-block", "pkt-unaligned", "pkt-beyond", "pkt-zero-beyond",
    "pkt-zero-unaligned", "pkt-next-size", "pkt-method", "pkt-name-nonul", "pkt-crc-header",
    "pkt-crc-payload", "pkt-crc-scope", "pkt-trunc-header", "pkt-trunc-payload",
    "rec-unknown-type", "rec-oversize", "rec-short-body", "rec-trailing-body",
    "legacy-zero-beyond", "legacy-zero-unaligned", "legacy-zero-block", "legacy-zero-count0",
    "legacy-zero-count-len", "source-cancel", "source-error", "main-garbage", "main-closed",
    "data-closed", "hello-short", "hello-trailing", "hello-pagesize", "hello-ppp",
    "hello-channels0", "hello-channels256", "hello-method", "hello-blocks0", "block-index",
    "block-dupname", "block-unaligned", "block-zero-len", "block-name-slash", "block-missing",
    "source-killed", "dest-valid", "dest-valid-none", "dest-valid-legacy",
    "dest-valid-multifd", "dest-crc-verify", "dest-subset", "dest-error", "dest-killed",
    "dest-no-done", "dest-bad-preamble", "dest-version-high", "dest-garbage",
    "dest-optional-ready", "dest-optional-done", "dest-heartbeat", "dest-error-complete", "optional-heartbeat", "valid-big",
    "valid-big-legacy", "valid-big-2pass",
    "valid-zlib", "valid-zstd", "valid-lz4", "valid-zlib-big", "valid-zstd-big", "valid-lz4-big",
    "valid-zlib-nozpd", "valid-zstd-nozpd", "valid-lz4-nozpd", "valid-zstd-legacy",
    "valid-lz4-16k", "zlib-flip", "zlib-flip-head", "zlib-flip-verify", "zstd-flip-head",
    "zstd-flip-verify", "lz4-flip-head", "lz4-flip-verify", "zlib-trunc", "zlib-short", "zlib-bound", "zlib-bound-huge",
    "zlib-bomb", "zlib-nopages", "zlib-method-other", "zlib-method-none", "zlib-finish",
    "zstd-trunc", "zstd-short", "zstd-bound", "zstd-bound-huge", "zstd-bomb",
    "zstd-nopages", "zstd-method-other", "zstd-method-none", "lz4-flip", "lz4-trunc",
    "lz4-short", "lz4-bound", "lz4-bound-huge", "lz4-bomb", "lz4-nopages", "lz4-method-other",
    "lz4-method-none", "lz4-len0", "lz4-len-big", "lz4-len-past", "lz4-len-cut", "lz4-trailing",
    "lz4-short-page", "zlib-empty", "zstd-empty", "lz4-empty", "zlib-shared-stream",
    "zstd-shared-stream", "valid-zlib-pageflush", "valid-zstd-pageflush", "hello-method-0x01", "hello-method-0x08", "hello-method-0x3e",
    "hello-method-0x02", "hello-method-0x04", "hello-method-0x06", "hello-method-0x00",
    /* COLO and checkpoint records (colo_cases[] has their scripts). */
    "nocolo-begin", "nocolo-end", "nocolo-begin-midpass", "nocolo-end-midpass",
    "nocolo-asked-begin", "nocolo-asked-end", "nocolo-asked-begin-hb", "heartbeat-mid",
    "heartbeat-mid-2pass-legacy", "heartbeat-mid-crc-verify", "heartbeat-mid-zstd",
    "heartbeat-mid-asked", "colo-valid", "colo-valid-hb", "colo-valid-2pass-crc",
    "colo-valid-verify", "colo-valid-legacy", "colo-valid-nozpd", "colo-valid-zstd",
    "colo-valid-devchunks", "colo-stop-after-ckpt0", "colo-plain-source", "colo-into-dir",
    "colo-begin-wrong-id", "colo-end-nobegin", "colo-end-id", "colo-complete-in-ckpt",
    "colo-begin-nodev", "colo-begin-devpart", "colo-begin-midpass", "colo-ckpt0-pages",
    "colo-begin-len0", "colo-begin-len4", "colo-begin-len16", "colo-end-len4", "colo-end-len16",
    "colo-lost-before-ckpt0", "colo-lost-in-ckpt0", "colo-silent-before-ckpt0",
    "colo-lost-after-ckpt0", "colo-lost-mid-ckpt", "colo-lost-before-end",
    "colo-silent-after-ckpt0", "colo-silent-mid-ckpt", "colo-bad-packet-mid-ckpt",
    "colo-data-closed-mid-ckpt", "colo-source-error-after", "colo-begin-wrong-id-after",
    "colo-begin-repeat-after", "colo-begin-nested-after", "colo-end-nobegin-after",
    "colo-end-id-after", "colo-end-nodev-after", "colo-end-devpart-after",
    "colo-end-midpass-after", "colo-complete-in-ckpt-after", "colo-begin-len0-after",
    "colo-begin-len4-after", "colo-begin-len16-after", "colo-end-len4-after",
    "colo-end-len16-after", "data-after-last-sync", "data-after-last-sync-verify",
    "colo-data-after-sync", "colo-data-after-sync-after", "colo-cancel-after",
};

/* Every scripted COLO case is listed, and every script uses known steps. */
static void selftest_colo_list(void)
{
    for (size_t i = 0; i < sizeof(colo_cases) / sizeof(colo_cases[0]); i++) {
        bool listed = false;

        for (size_t k = 0; k < sizeof(all_cases) / sizeof(all_cases[0]); k++)
            listed = listed || !strcmp(all_cases[k], colo_cases[i].name);
        if (!listed)
            hfail("COLO case %s is missing from all_cases[]", colo_cases[i].name);
        for (const char *t = colo_cases[i].script; *t; t++)
            if (!strchr("MmDdPpZBEAHCcIKkQRNXS0123456789/ ", *t))
                hfail("COLO case %s: bad step character '%c'", colo_cases[i].name, *t);
    }
}

int main(int argc, char **argv)
{
    setvbuf(stdout, NULL, _IOLBF, 0);
    signal(SIGPIPE, SIG_IGN);
    crc_init();
    if (argc >= 2)
        g_case = argv[1];
    if (argc == 2 && !strcmp(argv[1], "selftest"))
        return run_selftest();
    if (argc == 2 && !strcmp(argv[1], "list")) {
        for (size_t i = 0; i < sizeof(all_cases) / sizeof(all_cases[0]); i++)
            printf("%s\n", all_cases[i]);
        return 0;
    }
    if (argc == 3 && !strcmp(argv[1], "gen"))
        return run_gen(argv[2]);
    if (argc != 3 && argc != 4) {
        fprintf(stderr, "usage: hostile CASE URI [DIR] | hostile gen DIR | hostile selftest | "
                        "hostile list\n");
        return 2;
    }
    return run_case(argv[1], argv[2], argc == 4 ? argv[3] : NULL);
}
