/*
 * test_tls_readahead.c - the destination's TLS read-ahead (transport/tls.c:
 * mfd__tls_readahead, mfd__tls_promise and the pull function that fills its
 * buffer; transport/sock.c: mfd__sock_lowat_init and the *_lowat reads)
 * against a scripted GnuTLS peer on loopback TCP.
 *
 * Why: the read-ahead waits, with SO_RCVLOWAT, until nearly all the
 * ciphertext of what its reader was promised is there. Asking for one byte
 * more than the peer must send is a hang, and a migration hides it as long
 * as the source keeps sending: the next packet's bytes meet the mark. So
 * the peer here sends one read unit (the init message, a packet header, a
 * payload; in the sizes and with the calls recv.c and method.c use) and
 * then waits until the reader has all of it: at every wait the peer has
 * sent what the reader is owed and (but for merged) not a byte more. Every
 * byte read is compared with what the peer sent.
 *
 * The records of a case follow one pattern: normal (full 16 KiB records),
 * byte (one byte each), tiny (1-7 bytes), random sizes, padded (1-200
 * bytes padded to nearly a full record), empty (an empty record with
 * padding before each random one), keyupdate (random records with a few
 * KeyUpdates, half of them asking the reader for its own: GnuTLS refuses
 * more than 8 a second), merged (full records that run across unit ends,
 * as when a header and its payload leave in one write) and paced (full
 * records, each in two writes 300 us apart). Each runs on TLS 1.2 and 1.3;
 * padding, empty records and KeyUpdates are TLS 1.3's, so the 1.2 cases of
 * those send the same sizes without them. The split cases send every
 * record in two writes as paced does, so that the reader's reads end inside
 * records with the socket empty: the case RA_SLACK covers. Records one or
 * a few bytes long make a case slow, so those cases carry smaller packets.
 *
 * The watchdog: the peer waits at most HANG_MS for the reader to finish a
 * unit it has sent in full. If the reader is still reading, it waits for
 * bytes it is not owed: the peer shuts the reader's socket down, which
 * ends the read, and the case fails naming the unit and the mark the
 * reader waited on. An alarm ends the process if a case hangs elsewhere.
 *
 * Sensitivity, checked by hand: built from a copy of the sources with
 * RA_SLACK 0 in tls.c, the paced and split cases fail, each after HANG_MS
 * ("packet 1 header (1344 bytes): the reader still waits (SO_RCVLOWAT
 * 1344) 3000 ms after the peer sent all of it: it waits for bytes not
 * owed"; 9 or 10 of those 10 cases in each of six runs, as the timing
 * puts a read's end inside a record or not) and the process exits
 * non-zero. The other cases, whose reads end at record ends, pass; with
 * the real RA_SLACK every case passes.
 */
#include <errno.h>
#include <gnutls/crypto.h>
#include <gnutls/gnutls.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include "multifd.h"
#include "tls_support.h"
#include "protocol/wire.h"
#include "transport/tls.h"
#include "transport/transport.h"

#define PAGE 4096u
#define MAX_PAGES 128u     /* pages per packet: the receiver's default */
#define MAX_UNITS 32
#define FULL_RECORD 16384u /* TLS's largest plaintext record */
#define HANG_MS 3000       /* a unit sent in full and still not read */
#define CASE_LIMIT_S 30    /* the alarm: a case that never ends */
#define KU_EVERY 48        /* records between two KeyUpdates */
#define KU_MAX 4           /* KeyUpdates per connection */
#define SPLIT_GAP_US 300   /* between the two writes of a split record */

/* The PSK identity the peer presents; the key is made by group_setup. */
#define PSK_NAME "src1"

typedef enum {
    P_NORMAL,
    P_BYTE,
    P_TINY,
    P_RANDOM,
    P_PADDED,
    P_EMPTY,
    P_KEYUPDATE,
    P_MERGED,
} pattern;

typedef struct {
    const char *name;
    pattern pat;
    bool tls13;
    bool split;     /* every record in two writes */
    uint32_t pages; /* pages per packet (full payloads) */
    int npkt;       /* packets after the init message */
} ra_case;

/* A case on TLS 1.2 and on TLS 1.3. */
#define BOTH(name, pat, split, pages, npkt)                                   \
    {name " TLS1.2", pat, false, split, pages, npkt},                         \
    {name " TLS1.3", pat, true, split, pages, npkt}

static const ra_case cases[] = {
    BOTH("normal", P_NORMAL, false, 128, 5),
    BOTH("byte", P_BYTE, false, 8, 4),
    BOTH("tiny", P_TINY, false, 32, 4),
    BOTH("random", P_RANDOM, false, 128, 5),
    BOTH("padded", P_PADDED, false, 32, 4),
    BOTH("empty", P_EMPTY, false, 128, 5),
    BOTH("keyupdate", P_KEYUPDATE, false, 128, 5),
    BOTH("merged", P_MERGED, false, 128, 5),
    BOTH("paced", P_NORMAL, true, 128, 5),
    BOTH("random split", P_RANDOM, true, 128, 5),
    BOTH("empty split", P_EMPTY, true, 128, 5),
    BOTH("keyupdate split", P_KEYUPDATE, true, 128, 5),
    BOTH("merged split", P_MERGED, true, 128, 5),
};
#define NCASES (sizeof(cases) / sizeof(cases[0]))

/* How the receiver reads a unit. */
typedef enum {
    U_PLAIN, /* the init message: mfd__read_full, before the mark is set */
    U_FULL,  /* a header, or a payload into a buffer: mfd__read_full_lowat */
    U_PAGES, /* a payload into place: mfd__readv_full_lowat, a page each */
} unit_how;

typedef struct {
    size_t off, len; /* in the stream */
    unit_how how;
    const char *what; /* for messages */
    int pkt;
} unit;

/*
 * One case's connection. The peer thread owns pfd and the stream (written
 * before it starts, then only read); the test's thread owns rfd and got.
 * lock protects units_read, stop and why, which both sides touch.
 */
typedef struct {
    const ra_case *c;
    unit units[MAX_UNITS];
    int nunits;
    size_t total;
    uint8_t *stream; /* what the peer sends */
    uint8_t *got;    /* what the reader read, at the same offsets */
    int pfd, rfd;    /* the peer's and the reader's socket */
    pthread_mutex_t lock;
    pthread_cond_t cond;
    int units_read; /* units the reader has read and checked */
    bool stop;      /* the reader gave up: the peer stops waiting */
    char why[320];  /* the first failure, either side's */
} ra_run;

static gnutls_datum_t psk_key;
static uint8_t psk_bytes[32];

static void run_fail(ra_run *r, const char *fmt, ...)
{
    pthread_mutex_lock(&r->lock);
    if (!r->why[0]) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(r->why, sizeof(r->why), fmt, ap);
        va_end(ap);
    }
    pthread_mutex_unlock(&r->lock);
}

/* "packet 3 header", or "init message". */
static const char *label(const unit *u, char *buf, size_t len)
{
    if (u->pkt < 0)
        return u->what;
    snprintf(buf, len, "packet %d %s", u->pkt, u->what);
    return buf;
}

/* ---- the stream --------------------------------------------------------- */

static void add_unit(ra_run *r, int pkt, const char *what, size_t len,
                     unit_how how)
{
    assert_true(r->nunits < MAX_UNITS);
    r->units[r->nunits++] = (unit){r->total, len, how, what, pkt};
    r->total += len;
}

/*
 * The init message, then per packet a header and (as the packet's number
 * modulo 4 says) a payload read into pages, a compressed payload of any
 * length, none (a packet of zero pages) or a payload read into a buffer.
 */
static void plan(ra_run *r, uint64_t seed)
{
    const ra_case *c = r->c;
    size_t pay = (size_t)c->pages * PAGE;
    assert_true(c->pages <= MAX_PAGES);
    add_unit(r, -1, "init message", MFD_INIT_LEN, U_PLAIN);
    for (int i = 0; i < c->npkt; i++) {
        add_unit(r, i, "header", mfd__packet_len(c->pages), U_FULL);
        if (i % 4 == 0)
            add_unit(r, i, "payload into pages", pay, U_PAGES);
        else if (i % 4 == 1)
            add_unit(r, i, "compressed payload", pay * 3 / 8 + 5, U_FULL);
        else if (i % 4 == 3)
            add_unit(r, i, "payload", pay, U_FULL);
    }
    r->stream = malloc(r->total);
    r->got = calloc(1, r->total);
    assert_non_null(r->stream);
    assert_non_null(r->got);
    uint64_t x = seed * 0x9e3779b97f4a7c15ull + 1;
    for (size_t i = 0; i < r->total; i += 8) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        memcpy(r->stream + i, &x, r->total - i < 8 ? r->total - i : 8);
    }
}

/* ---- the peer ----------------------------------------------------------- */

/* The plaintext bytes of the next record, and (*pad) its TLS 1.3 padding. */
static size_t record_len(pattern p, unsigned *rnd, bool tls13, size_t *pad)
{
    *rnd = *rnd * 1103515245u + 12345u;
    unsigned x = *rnd >> 8;
    *pad = 0;
    switch (p) {
    case P_BYTE:
        return 1;
    case P_TINY:
        return 1 + x % 7;
    case P_PADDED: {
        size_t n = 1 + x % 200;
        *pad = tls13 ? 16000 - n : 0;
        return n;
    }
    case P_RANDOM:
    case P_EMPTY:
    case P_KEYUPDATE:
        return 1 + x % FULL_RECORD;
    default:
        return FULL_RECORD;
    }
}

/* One record (with n 0 and pad > 0, an empty one); false on failure. */
static bool peer_send(ra_run *r, gnutls_session_t s, const uint8_t *p,
                      size_t n, size_t pad)
{
    int rc = tt_record_send(s, p, n, pad);
    if (rc)
        run_fail(r, "peer: send: %s", gnutls_strerror(rc));
    return !rc;
}

/*
 * The transport of the split cases: each record leaves in two writes a
 * moment apart, so the reader's fills can end inside a record with the
 * socket empty. The pause makes that likely; no outcome depends on it.
 */
static ssize_t split_push(gnutls_transport_ptr_t p, const void *d, size_t n)
{
    int fd = (int)(intptr_t)p;
    size_t h = n > 64 ? n / 2 : n;
    ssize_t a = send(fd, d, h, MSG_NOSIGNAL);
    if (a < (ssize_t)h || h == n)
        return a;
    usleep(SPLIT_GAP_US);
    ssize_t b = send(fd, (const char *)d + h, n - h, MSG_NOSIGNAL);
    return b < 0 ? a : a + b;
}

/*
 * The watchdog: waits until the reader has unit k, which the peer sent in
 * full. After HANG_MS the reader waits for bytes not owed: the case fails,
 * and shutting the reader's socket down ends its read. False unless the
 * reader has the unit.
 */
static bool peer_wait(ra_run *r, int k)
{
    struct timespec t;
    tt_deadline(&t, HANG_MS);
    int rc = 0;
    pthread_mutex_lock(&r->lock);
    while (r->units_read <= k && !r->stop && rc != ETIMEDOUT)
        rc = pthread_cond_timedwait(&r->cond, &r->lock, &t);
    bool ok = r->units_read > k, hang = !ok && !r->stop;
    pthread_mutex_unlock(&r->lock);
    if (hang) {
        int mark = 0;
        socklen_t l = sizeof(mark);
        getsockopt(r->rfd, SOL_SOCKET, SO_RCVLOWAT, &mark, &l);
        char b[64];
        run_fail(r, "%s (%zu bytes): the reader still waits (SO_RCVLOWAT "
                 "%d) %d ms after the peer sent all of it: it waits for "
                 "bytes not owed",
                 label(&r->units[k], b, sizeof(b)), r->units[k].len, mark,
                 HANG_MS);
        shutdown(r->rfd, SHUT_RDWR);
    }
    return ok;
}

static gnutls_session_t peer_handshake(ra_run *r,
                                       gnutls_psk_client_credentials_t *cred)
{
    char prio[256];
    snprintf(prio, sizeof(prio),
             "NORMAL:-VERS-ALL:+VERS-TLS%s:-CIPHER-ALL:+AES-128-GCM:"
             "+AES-256-GCM:+CHACHA20-POLY1305:+ECDHE-PSK:+DHE-PSK:+PSK",
             r->c->tls13 ? "1.3" : "1.2");
    gnutls_session_t s = NULL;
    int rc = gnutls_psk_allocate_client_credentials(cred);
    if (!rc)
        rc = gnutls_psk_set_client_credentials(*cred, PSK_NAME, &psk_key,
                                               GNUTLS_PSK_KEY_RAW);
    if (!rc)
        rc = gnutls_init(&s, GNUTLS_CLIENT | GNUTLS_NO_SIGNAL);
    if (!rc)
        rc = gnutls_priority_set_direct(s, prio, NULL);
    if (!rc)
        rc = gnutls_credentials_set(s, GNUTLS_CRD_PSK, *cred);
    if (!rc) {
        gnutls_transport_set_int(s, r->pfd);
        do
            rc = gnutls_handshake(s);
        while (rc < 0 && !gnutls_error_is_fatal(rc));
    }
    if (rc < 0) {
        run_fail(r, "peer: handshake: %s", gnutls_strerror(rc));
        /* The reader's handshake then ends too. */
        shutdown(r->pfd, SHUT_RDWR);
        if (s)
            gnutls_deinit(s);
        return NULL;
    }
    return s;
}

/*
 * Sends the stream in the case's records. A record ends at the end of the
 * unit it is in (but for merged), and whenever the bytes sent complete a
 * unit, the peer waits for the reader to have it before sending more. The
 * connection stays open (no close_notify, no FIN) until the reader has
 * read it all.
 */
static void *peer_main(void *arg)
{
    ra_run *r = arg;
    const ra_case *c = r->c;
    gnutls_psk_client_credentials_t cred = NULL;
    gnutls_session_t s = peer_handshake(r, &cred);
    if (s && c->split)
        gnutls_transport_set_push_function(s, split_push);
    size_t off = 0;
    unsigned rnd = 12345, recs = 0, kus = 0;
    bool go = s != NULL;
    for (int k = 0; go && off < r->total;) {
        size_t pad, n = record_len(c->pat, &rnd, c->tls13, &pad);
        size_t end = c->pat == P_MERGED ? r->total
                                        : r->units[k].off + r->units[k].len;
        if (n > end - off)
            n = end - off;
        if (c->tls13 && c->pat == P_EMPTY)
            go = peer_send(r, s, r->stream + off, 0, 100 + rnd % 1000);
        if (c->tls13 && c->pat == P_KEYUPDATE && ++recs % KU_EVERY == 0 &&
            kus < KU_MAX) {
            int rc = gnutls_session_key_update(s, kus++ % 2 ? GNUTLS_KU_PEER
                                                            : 0);
            if (rc < 0) {
                run_fail(r, "peer: key update: %s", gnutls_strerror(rc));
                go = false;
            }
        }
        go = go && peer_send(r, s, r->stream + off, n, pad);
        off += go ? n : 0;
        while (go && k < r->nunits &&
               r->units[k].off + r->units[k].len <= off)
            go = peer_wait(r, k++);
    }
    /* A peer that gave up ends the reader's read with the stream. */
    if (!go)
        shutdown(r->pfd, SHUT_RDWR);
    if (s)
        gnutls_deinit(s);
    if (cred)
        gnutls_psk_free_client_credentials(cred);
    return NULL;
}

/* ---- the reader --------------------------------------------------------- */

static void unit_read(ra_run *r)
{
    pthread_mutex_lock(&r->lock);
    r->units_read++;
    pthread_cond_broadcast(&r->cond);
    pthread_mutex_unlock(&r->lock);
}

/* Unit k as the receiver reads it; an MFD_IO_ result. */
static int read_unit(ra_run *r, int k, int *lowat)
{
    const unit *u = &r->units[k];
    uint8_t *dst = r->got + u->off;
    if (u->how == U_PLAIN)
        return mfd__read_full(r->rfd, dst, u->len);
    if (u->how == U_FULL)
        return mfd__read_full_lowat(r->rfd, lowat, dst, u->len);
    struct iovec iov[MAX_PAGES];
    int n = (int)(u->len / PAGE);
    for (int i = 0; i < n; i++)
        iov[i] = (struct iovec){dst + (size_t)i * PAGE, PAGE};
    return mfd__readv_full_lowat(r->rfd, lowat, iov, n);
}

/*
 * Reads every unit as recv.c does (the init message plainly, then the
 * mark of mfd__sock_lowat_init: here the read-ahead) and compares each
 * with what the peer sent. False at the first failure (in r->why).
 */
static bool read_stream(ra_run *r)
{
    int lowat = 0;
    for (int k = 0; k < r->nunits; k++) {
        const unit *u = &r->units[k];
        char b[64];
        int rc = read_unit(r, k, &lowat);
        if (rc) {
            run_fail(r, "%s (%zu bytes): read: %s", label(u, b, sizeof(b)),
                     u->len,
                     rc == MFD_IO_EOF         ? "end of stream"
                     : rc == MFD_IO_TRUNCATED ? "truncated"
                                              : strerror(errno));
            return false;
        }
        const uint8_t *got = r->got + u->off, *sent = r->stream + u->off;
        if (memcmp(got, sent, u->len)) {
            size_t i = 0;
            while (got[i] == sent[i])
                i++;
            run_fail(r, "%s: byte %zu of the stream is 0x%02x, the peer "
                     "sent 0x%02x",
                     label(u, b, sizeof(b)), u->off + i, got[i], sent[i]);
            return false;
        }
        if (k == 0 && (lowat = mfd__sock_lowat_init(r->rfd)) != 1) {
            run_fail(r, "the read-ahead was not installed (mark %d)", lowat);
            return false;
        }
        /*
         * TLS 1.3's records are then opened by ours (test_tls_record.c);
         * merged, from the first read that ends where a record ends.
         */
        int direct = mfd__tls_direct(mfd__tls_of(r->rfd));
        bool now = k == r->nunits - 1 || (k == 0 && r->c->pat != P_MERGED);
        if (now && direct != r->c->tls13) {
            run_fail(r, "mfd__tls_direct: %d, expected %d", direct,
                     r->c->tls13);
            return false;
        }
        unit_read(r);
    }
    return true;
}

/* ---- the cases ---------------------------------------------------------- */

static void run_case(void **state)
{
    const ra_case *c = *state;
    ra_run r = {.c = c, .pfd = -1, .rfd = -1};
    tt_cond_init(&r.cond);
    pthread_mutex_init(&r.lock, NULL);
    plan(&r, (uint64_t)(c - cases) + 1);

    mfd_session *ms = mfd_session_new();
    assert_non_null(ms);
    tt_load_psk(ms, PSK_NAME, psk_bytes, sizeof(psk_bytes), true);
    tt_tcp_pair(&r.pfd, &r.rfd);

    tt_running = c->name;
    alarm(CASE_LIMIT_S);
    pthread_t peer;
    assert_int_equal(pthread_create(&peer, NULL, peer_main, &r), 0);
    char err[256];
    bool ok = mfd__tls_server(ms, r.rfd, err, sizeof(err)) == 0;
    if (!ok)
        run_fail(&r, "handshake: %s", err);
    if (ok && !read_stream(&r)) {
        /* Ends the peer's wait, or its send to a reader that stopped. */
        pthread_mutex_lock(&r.lock);
        r.stop = true;
        pthread_cond_broadcast(&r.cond);
        pthread_mutex_unlock(&r.lock);
        shutdown(r.pfd, SHUT_RDWR);
    }
    pthread_join(peer, NULL);
    alarm(0);

    mfd__sock_close(r.rfd);
    close(r.pfd);
    mfd_session_free(ms);
    free(r.stream);
    free(r.got);
    pthread_cond_destroy(&r.cond);
    pthread_mutex_destroy(&r.lock);
    if (r.why[0])
        fail_msg("%s: %s", c->name, r.why);
}

/* The key the peer and every session share; the alarm's handler. */
static int group_setup(void **state)
{
    (void)state;
    return tt_group_setup("test_tls_readahead", psk_bytes, sizeof(psk_bytes), &psk_key);
}

int main(void)
{
    struct CMUnitTest tests[NCASES];
    for (size_t i = 0; i < NCASES; i++)
        tests[i] = (struct CMUnitTest){.name = cases[i].name,
                                       .test_func = run_case,
                                       .initial_state = (void *)&cases[i]};
    return cmocka_run_group_tests(tests, group_setup, NULL);
}
