/*
 * test_tls_record.c - our own TLS 1.3 record layer (transport/tls_record.c)
 * and the data channels that run on it (transport/tls.c: the records a
 * destination opens itself behind mfd__sock_lowat_init, the records a
 * source seals itself after mfd__tls_direct_send), each against a raw
 * GnuTLS peer on loopback TCP.
 *
 * Why: these records replace GnuTLS's on the wire, so the only proof that
 * they are TLS 1.3 is a real TLS implementation reading and writing them,
 * and the only proof that the opening side is safe is a peer that sends
 * what GnuTLS never would. The cases:
 *
 *   - send: our sealing side (TLS 1.3) to a peer that reads with
 *     gnutls_record_recv: 1 byte, 16383/16384/16385 bytes, iovecs of zero
 *     length, 1 MiB in iovecs of random sizes; KeyUpdates every few
 *     records (mfd__tls_set_rekey), each counted as GnuTLS takes it; and
 *     mfd__sock_close's close_notify, which the peer must read as a clean
 *     end. On TLS 1.2 (and on a server, whose keys are not the client's
 *     secret) GnuTLS keeps the channel, and the same bytes must arrive.
 *   - recv: GnuTLS's records (with KeyUpdates, one asking for ours, and an
 *     empty padded record) to our opening side through the *_lowat reads,
 *     ending in close_notify (MFD_IO_EOF), a TCP close in the middle of a
 *     record (MFD_IO_ERROR, as GnuTLS's reader on TLS 1.2 gives)
 *     or a fatal alert (MFD_IO_ERROR, EPROTO, a reason in
 *     mfd__tls_strerror). The peer sends the ending only once the
 *     reader has read all data, and keeps the connection open, so that the
 *     reader must notice the record itself.
 *   - hostile: records the peer builds itself between two good ones, with
 *     its own mfd_tls_rec on its own session (the peer knows the keys):
 *     bad tags, replays, outer types other than 23, lengths outside
 *     17..16640, no inner type, unknown inner types, handshake messages
 *     other than one whole KeyUpdate, 16385 bytes of content, records
 *     after a KeyUpdate still under the old keys. Each must fail with
 *     EPROTO and a reason naming it, and stay failed (the valid record
 *     after it is not delivered). Padding, empty records and a KeyUpdate
 *     asking for ours must be read as nothing.
 *   - rec: an mfd_tls_rec alone: framing checks, seal and open round trips
 *     (content types, 0..16384 bytes), a failed open leaves the sequence
 *     number alone, two KeyUpdates on both ends still interoperate while
 *     an end that missed one does not, and init refuses keys that are not
 *     the session's.
 *
 * Every byte read on either side is compared with what was sent. Nothing
 * may hang: a peer that waits for the reader gives up after HANG_MS, names
 * what the reader still waited for and shuts its socket down, and an alarm
 * ends the process if a case hangs anywhere else.
 *
 * One limit of the code under test is stepped around, not tested. The
 * read after all data asks for RECV_END_LEN bytes, no more than an alert
 * record's 24 on the wire: our reader's mark waits for all the plaintext
 * it was promised, so a longer read waits behind a close_notify or an
 * alert until the peer's FIN or its idle timeout (GnuTLS's reader, on TLS
 * 1.2, does not; build with -DRECV_END_LEN=1000 to see the TLS 1.3 cases
 * wait about half the time). A peer that ends early owes the bytes it
 * promised, as one that stalls does.
 *
 * Sensitivity, checked by hand: built from a copy of the sources with one
 * change each, cases fail (and the process exits non-zero) when rx_read
 * skips the new keys of a KeyUpdate, takes request_update 2, forgets an
 * error or the end (not sticky), ignores inner types it does not know, or
 * reads any alert as the end; when tls_record.c accepts a length of 16641,
 * an outer type 22, 16385 bytes of content, keeps the padding, does not
 * count a record it opened, or derives the next keys with a wrong label;
 * when the sealing side sends no KeyUpdates or no close_notify. The real
 * sources pass, 40 runs in a row, and 8 processes at once under ASan.
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
#include "transport/tls.h"
#include "transport/tls_record.h"
#include "transport/transport.h"

#define PAGE 4096u
#define MIB (1u << 20)
#define INIT_LEN 64u     /* what a source sends through GnuTLS first */
#define GOOD_LEN 1000u   /* the good records around a hostile one */
#define HANG_MS 3000     /* the reader still reads what was all sent */
#define CASE_LIMIT_S 20  /* the alarm: a case that never ends */
#define REKEY_SMALL 5    /* records per key while the shapes go out */
/*
 * And while the MiB goes out: GnuTLS takes at most 8 KeyUpdates a second
 * (GNUTLS_E_TOO_MANY_HANDSHAKE_PACKETS after that), so a KeyUpdate every 5
 * records for 1 MiB would fail on the peer, not on us.
 */
#define REKEY_BULK 24

/* The PSK identity both sides use; the key is made by group_setup. */
#define PSK_NAME "src1"

#define PRIO(vers, ciphers)                                                   \
    "NORMAL:-VERS-ALL:+VERS-TLS" vers ":-CIPHER-ALL:" ciphers                 \
    ":+ECDHE-PSK:+DHE-PSK:+PSK"
#define ALL_AEAD "+AES-128-GCM:+AES-256-GCM:+CHACHA20-POLY1305"

static gnutls_datum_t psk_key;
static uint8_t psk_bytes[32];

/* ---- a connection: our side and a scripted GnuTLS peer ----------------- */

typedef struct pair pair;
typedef void peer_script(pair *p);

/*
 * The peer thread owns s, its credentials and pfd from its start until it
 * ends (or, with no script, until the handshake is done: the test's thread
 * then takes the session over). The test's thread owns ofd. lock protects
 * ours, theirs, stop and why, which both sides touch.
 */
struct pair {
    const char *prio;    /* the peer's priority string */
    bool peer_server;    /* the peer is the TLS server, we the client */
    size_t max_recv;     /* the peer's record size limit (0: none set) */
    peer_script *script; /* what the peer does after its handshake */
    const void *arg;     /* the case, for the script */
    int pfd, ofd;        /* the peer's socket, ours */
    gnutls_session_t s;
    gnutls_psk_client_credentials_t ccred;
    gnutls_psk_server_credentials_t scred;
    uint8_t secret[64]; /* the peer's CLIENT_TRAFFIC_SECRET_0 */
    size_t secret_len;
    unsigned ku_in; /* KeyUpdates the peer received */
    const uint8_t *stream;
    size_t total; /* bytes of stream the data carries */
    pthread_t thread;
    pthread_mutex_t lock;
    pthread_cond_t cond;
    int ours, theirs; /* how far each side got */
    bool stop;        /* a side failed: nobody waits any more */
    char why[400];    /* the first failure, either side's */
};

static void pair_fail(pair *p, const char *fmt, ...)
{
    pthread_mutex_lock(&p->lock);
    if (!p->why[0]) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(p->why, sizeof(p->why), fmt, ap);
        va_end(ap);
    }
    p->stop = true;
    pthread_cond_broadcast(&p->cond);
    pthread_mutex_unlock(&p->lock);
}

/* Our side's checks while the peer runs: no cmocka longjmp past it. */
#define CHECK(p, cond, ...)                                                   \
    ((cond) ? true : (pair_fail(p, __VA_ARGS__), false))

static void step(pair *p, int *side, int k)
{
    pthread_mutex_lock(&p->lock);
    *side = k;
    pthread_cond_broadcast(&p->cond);
    pthread_mutex_unlock(&p->lock);
}

/*
 * Waits until the other side reached step k. The peer waits for us at
 * most HANG_MS: a reader still reading then waits for bytes it was never
 * sent, and shutting its socket down ends the read. We wait for the peer
 * as long as the alarm lets us. False unless it got there.
 */
static bool await_step(pair *p, bool peer_waits, int k, const char *what)
{
    const int *side = peer_waits ? &p->ours : &p->theirs;
    struct timespec t;
    tt_deadline(&t, HANG_MS);
    int rc = 0;
    pthread_mutex_lock(&p->lock);
    while (*side < k && !p->stop && rc != ETIMEDOUT)
        rc = peer_waits ? pthread_cond_timedwait(&p->cond, &p->lock, &t)
                        : pthread_cond_wait(&p->cond, &p->lock);
    bool ok = *side >= k, hang = !ok && !p->stop;
    pthread_mutex_unlock(&p->lock);
    if (hang) {
        pair_fail(p, "%s: still not done %d ms after the peer sent all it "
                     "needs: it hangs",
                  what, HANG_MS);
        shutdown(p->ofd, SHUT_RDWR);
    }
    return ok;
}

static int keylog_cb(gnutls_session_t s, const char *label,
                     const gnutls_datum_t *secret)
{
    pair *p = gnutls_session_get_ptr(s);
    if (!strcmp(label, "CLIENT_TRAFFIC_SECRET_0") &&
        secret->size <= sizeof(p->secret)) {
        memcpy(p->secret, secret->data, secret->size);
        p->secret_len = secret->size;
    }
    return 0;
}

static int ku_hook(gnutls_session_t s, unsigned htype, unsigned when,
                   unsigned incoming, const gnutls_datum_t *msg)
{
    (void)htype;
    (void)when;
    (void)msg;
    pair *p = gnutls_session_get_ptr(s);
    if (incoming)
        p->ku_in++;
    return 0;
}

static int psk_server_cb(gnutls_session_t s, const char *name,
                         gnutls_datum_t *key)
{
    (void)s;
    if (strcmp(name, PSK_NAME) || !(key->data = gnutls_malloc(psk_key.size)))
        return -1;
    memcpy(key->data, psk_key.data, psk_key.size);
    key->size = psk_key.size;
    return 0;
}

/* The peer's transport while it cuts a record: half of it goes out. */
static ssize_t half_push(gnutls_transport_ptr_t t, const void *d, size_t n)
{
    ssize_t k = send((int)(intptr_t)t, d, n / 2, MSG_NOSIGNAL);
    return k < 0 ? k : (ssize_t)n;
}

static int peer_handshake(pair *p)
{
    int rc;
    if (p->peer_server) {
        rc = gnutls_psk_allocate_server_credentials(&p->scred);
        if (!rc)
            gnutls_psk_set_server_credentials_function(p->scred,
                                                       psk_server_cb);
        if (!rc)
            rc = gnutls_init(&p->s, GNUTLS_SERVER | GNUTLS_NO_SIGNAL);
    } else {
        rc = gnutls_psk_allocate_client_credentials(&p->ccred);
        if (!rc)
            rc = gnutls_psk_set_client_credentials(p->ccred, PSK_NAME,
                                                   &psk_key,
                                                   GNUTLS_PSK_KEY_RAW);
        if (!rc)
            rc = gnutls_init(&p->s, GNUTLS_CLIENT | GNUTLS_NO_SIGNAL);
    }
    if (!rc)
        rc = gnutls_priority_set_direct(p->s, p->prio, NULL);
    if (!rc)
        rc = gnutls_credentials_set(p->s, GNUTLS_CRD_PSK,
                                    p->peer_server ? (void *)p->scred
                                                   : (void *)p->ccred);
    if (rc)
        return rc;
    if (!rc && p->max_recv)
        rc = (int)gnutls_record_set_max_recv_size(p->s, p->max_recv);
    if (rc < 0)
        return rc;
    gnutls_session_set_ptr(p->s, p);
    gnutls_session_set_keylog_function(p->s, keylog_cb);
    gnutls_handshake_set_hook_function(p->s, GNUTLS_HANDSHAKE_KEY_UPDATE,
                                       GNUTLS_HOOK_POST, ku_hook);
    gnutls_transport_set_int(p->s, p->pfd);
    do
        rc = gnutls_handshake(p->s);
    while (rc < 0 && !gnutls_error_is_fatal(rc));
    return rc;
}

static void *peer_main(void *arg)
{
    pair *p = arg;
    int rc = peer_handshake(p);
    if (rc < 0) {
        pair_fail(p, "peer: handshake: %s", gnutls_strerror(rc));
        /* Our handshake then ends too. */
        shutdown(p->pfd, SHUT_RDWR);
        return NULL;
    }
    step(p, &p->theirs, 1);
    if (p->script)
        p->script(p);
    return NULL;
}



/*
 * Connects our side to a peer running p's script and handshakes (we are
 * the server unless the peer is). The session stays in *ms. False (in
 * p->why) when our handshake failed.
 */
static bool pair_start(pair *p, mfd_session **ms, const char *name)
{
    tt_cond_init(&p->cond);
    pthread_mutex_init(&p->lock, NULL);
    *ms = mfd_session_new();
    assert_non_null(*ms);
    tt_load_psk(*ms, PSK_NAME, psk_bytes, sizeof(psk_bytes), !p->peer_server);
    tt_tcp_pair(&p->pfd, &p->ofd);
    tt_running = name;
    alarm(CASE_LIMIT_S);
    assert_int_equal(pthread_create(&p->thread, NULL, peer_main, p), 0);
    char err[256];
    int rc = p->peer_server ? mfd__tls_client(*ms, p->ofd, NULL, err,
                                              sizeof(err))
                            : mfd__tls_server(*ms, p->ofd, err, sizeof(err));
    if (rc)
        pair_fail(p, "our handshake: %s", err);
    return !rc;
}

/* Ends the connection and the peer, then fails the case if a side did. */
static void pair_end(pair *p, mfd_session *ms, const char *name)
{
    pthread_mutex_lock(&p->lock);
    bool failed = p->why[0] != 0;
    pthread_mutex_unlock(&p->lock);
    if (failed) {
        /* Ends whatever the peer still waits on. */
        shutdown(p->ofd, SHUT_RDWR);
        shutdown(p->pfd, SHUT_RDWR);
    }
    pthread_join(p->thread, NULL);
    alarm(0);
    mfd__sock_close(p->ofd);
    close(p->pfd);
    if (p->s)
        gnutls_deinit(p->s);
    if (p->ccred)
        gnutls_psk_free_client_credentials(p->ccred);
    if (p->scred)
        gnutls_psk_free_server_credentials(p->scred);
    mfd_session_free(ms);
    pthread_cond_destroy(&p->cond);
    pthread_mutex_destroy(&p->lock);
    if (p->why[0])
        fail_msg("%s: %s", name, p->why);
}

/* ---- data ---------------------------------------------------------------- */

static uint8_t *random_bytes(size_t n, uint64_t seed)
{
    uint8_t *b = malloc(n ? n : 1);
    assert_non_null(b);
    uint64_t x = seed * 0x9e3779b97f4a7c15ull + 1;
    for (size_t i = 0; i < n; i += 8) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        memcpy(b + i, &x, n - i < 8 ? n - i : 8);
    }
    return b;
}

/* Where two buffers first differ, for the message; they must differ. */
static size_t first_diff(const uint8_t *a, const uint8_t *b)
{
    size_t i = 0;
    while (a[i] == b[i])
        i++;
    return i;
}

static bool same(pair *p, const char *what, const uint8_t *got,
                 const uint8_t *sent, size_t len, size_t at)
{
    if (!memcmp(got, sent, len))
        return true;
    size_t i = first_diff(got, sent);
    pair_fail(p, "%s: byte %zu of the stream is 0x%02x, the peer sent 0x%02x",
              what, at + i, got[i], sent[i]);
    return false;
}

static const char *io_name(int rc)
{
    switch (rc) {
    case MFD_IO_OK:
        return "OK";
    case MFD_IO_EOF:
        return "EOF";
    case MFD_IO_TRUNCATED:
        return "TRUNCATED";
    case MFD_IO_ERROR:
        return "ERROR";
    default:
        return "other";
    }
}

/*
 * Reads len bytes as the destination does: into one buffer, or (pages)
 * into an iovec a page each, the rest last, after an empty one (an array
 * that started with one read as the end through TLS until 2026-12-06).
 */
static int read_unit(int fd, int *lowat, uint8_t *dst, size_t len,
                     bool pages)
{
    if (!pages)
        return mfd__read_full_lowat(fd, lowat, dst, len);
    struct iovec iov[2 + MIB / PAGE];
    int n = 0;
    iov[n++] = (struct iovec){dst, 0};
    for (size_t off = 0; off < len; off += PAGE) {
        assert_true(n + 1 < (int)(sizeof(iov) / sizeof(iov[0])));
        iov[n++] = (struct iovec){dst + off, len - off < PAGE ? len - off
                                                              : PAGE};
    }
    return mfd__readv_full_lowat(fd, lowat, iov, n);
}

/* Our side after its handshake: the destination's read-ahead is on. */
static bool start_reading(pair *p, int *lowat, int want_direct)
{
    *lowat = mfd__sock_lowat_init(p->ofd);
    void *t = mfd__tls_of(p->ofd);
    return CHECK(p, *lowat == 1, "mfd__sock_lowat_init: %d, not 1", *lowat) &&
           CHECK(p, t, "the socket has no TLS session") &&
           CHECK(p, mfd__tls_direct(t) == want_direct,
                 "mfd__tls_direct: %d, expected %d", mfd__tls_direct(t),
                 want_direct);
}

/* A read that must fail with EPROTO and a reason that names `why`. */
static bool expect_eproto(pair *p, const char *what, int rc, const char *why)
{
    int e = errno;
    const char *reason = mfd__tls_strerror();
    if (!CHECK(p, rc == MFD_IO_ERROR, "%s: read gave %s, not ERROR", what,
               io_name(rc)) ||
        !CHECK(p, e == EPROTO, "%s: errno %s, not EPROTO", what,
               strerror(e)) ||
        !CHECK(p, reason, "%s: no reason in mfd__tls_strerror", what))
        return false;
    errno = e;
    const char *text = mfd__io_strerror(rc);
    return CHECK(p, !strcmp(text, reason),
                 "%s: mfd__io_strerror says '%s', not the reason '%s'", what,
                 text, reason) &&
           CHECK(p, !why || strstr(reason, why),
                 "%s: the reason '%s' does not name '%s'", what, reason,
                 why);
}

/* ---- send: our records to GnuTLS ---------------------------------------- */

typedef struct {
    const char *name;
    const char *prio; /* the peer's */
    bool peer_server; /* false: we are the server, GnuTLS keeps our sends */
    int direct;       /* mfd__tls_direct after mfd__tls_direct_send */
    size_t max_recv;  /* the peer's record size limit (RFC 8449; 0: none) */
} send_case;

static const send_case send_cases[] = {
    {"send TLS1.3", PRIO("1.3", ALL_AEAD), true, 2},
    {"send TLS1.3 CHACHA20", PRIO("1.3", "+CHACHA20-POLY1305"), true, 2},
    {"send TLS1.2", PRIO("1.2", ALL_AEAD), true, 0},
    {"send TLS1.3 from a server", PRIO("1.3", ALL_AEAD), false, 0},
    /* Our records must fit the peer's limit, not ours. */
    {"send TLS1.3 to a record size limit", PRIO("1.3", ALL_AEAD), true, 2,
     4096},
};

/* The iovecs of one write; lens 0 are empty iovecs. */
typedef struct {
    size_t n;
    size_t lens[128];
} shape;

/* The writes after the init message, and the first one in bulk. */
static const shape shapes[] = {
    {1, {1}},
    {1, {16383}},
    {1, {16384}},
    {1, {16385}},
    {5, {0, 100, 0, 2 * 16384 + 5, 0}},
};
#define NSHAPES (sizeof(shapes) / sizeof(shapes[0]))

/* 1 MiB in iovecs of 1..48 KiB, every fifth one empty. */
static shape bulk_shape(void)
{
    shape s = {0};
    size_t left = MIB;
    unsigned x = 7;
    while (left) {
        assert_true(s.n < sizeof(s.lens) / sizeof(s.lens[0]));
        x = x * 1103515245u + 12345u;
        size_t n = 1 + (x >> 8) % (48 * 1024);
        if (s.n % 5 == 4)
            n = 0;
        s.lens[s.n++] = n < left ? n : left;
        left -= s.lens[s.n - 1];
    }
    return s;
}

static size_t shape_len(const shape *s)
{
    size_t n = 0;
    for (size_t i = 0; i < s->n; i++)
        n += s->lens[i];
    return n;
}

/*
 * The KeyUpdates our sealing side sends for a shape: every `rekey`
 * records sealed under one key (*seq of them so far).
 */
static unsigned shape_kus(const shape *s, uint64_t *seq, uint64_t rekey,
                          size_t record)
{
    unsigned kus = 0;
    for (size_t i = 0; i < s->n; i++)
        for (size_t n = 0; n < s->lens[i]; n += record)
            if (++*seq >= rekey) {
                kus++;
                *seq = 0;
            }
    return kus;
}

/*
 * The peer reads the whole stream with gnutls_record_recv and then one
 * more time: that must be the clean end close_notify makes.
 */
static void peer_recv(pair *p)
{
    uint8_t *got = malloc(p->total + MFD_TLS_MAX_PLAIN), end[1];
    if (!got)
        abort();
    size_t have = 0;
    ssize_t n = 0;
    while (have < p->total) {
        n = gnutls_record_recv(p->s, got + have, MFD_TLS_MAX_PLAIN);
        if (n == GNUTLS_E_AGAIN || n == GNUTLS_E_INTERRUPTED)
            continue;
        if (n <= 0)
            break;
        have += (size_t)n;
    }
    bool ok = false;
    if (have < p->total)
        pair_fail(p, "peer: after %zu of %zu bytes: %s", have, p->total,
                  n == 0 ? "end of stream" : gnutls_strerror((int)n));
    else if (have > p->total)
        pair_fail(p, "peer: %zu bytes, %zu were sent", have, p->total);
    else
        ok = same(p, "peer", got, p->stream, p->total, 0);
    free(got);
    if (!ok)
        return;
    step(p, &p->theirs, 2);
    do
        n = gnutls_record_recv(p->s, end, sizeof(end));
    while (n == GNUTLS_E_AGAIN || n == GNUTLS_E_INTERRUPTED);
    if (n != 0)
        pair_fail(p, "peer: after all the data: %s, not the clean end of "
                     "close_notify",
                  n > 0 ? "more data" : gnutls_strerror((int)n));
}

static bool write_shape(pair *p, const shape *s, size_t *off)
{
    struct iovec iov[128];
    for (size_t i = 0; i < s->n; i++) {
        iov[i] = (struct iovec){(void *)(p->stream + *off), s->lens[i]};
        *off += s->lens[i];
    }
    int rc = s->n == 1 ? mfd__write_full(p->ofd, iov[0].iov_base,
                                         iov[0].iov_len)
                       : mfd__writev_full(p->ofd, iov, (int)s->n);
    return CHECK(p, rc == MFD_IO_OK, "write of %zu bytes in %zu iovecs: %s: %s",
                 shape_len(s), s->n, io_name(rc), mfd__io_strerror(rc));
}

static void test_send(void **state)
{
    const send_case *c = *state;
    shape bulk = bulk_shape();
    pair p = {.prio = c->prio, .peer_server = c->peer_server,
              .max_recv = c->max_recv, .script = peer_recv, .arg = c};
    /*
     * Records of the peer's limit (the content type byte counted) are 4x
     * as many: no KeyUpdates then, as GnuTLS takes at most 8 a second.
     */
    size_t record = c->max_recv ? c->max_recv - 1 : MFD_TLS_MAX_PLAIN;
    uint64_t rekey_small = c->max_recv ? 1ull << 24 : REKEY_SMALL;
    uint64_t rekey_bulk = c->max_recv ? 1ull << 24 : REKEY_BULK;
    p.total = INIT_LEN + shape_len(&bulk);
    for (size_t i = 0; i < NSHAPES; i++)
        p.total += shape_len(&shapes[i]);
    uint8_t *stream = random_bytes(p.total, 1);
    p.stream = stream;
    /* GnuTLS sent the init message: the first record of ours is seq 1. */
    uint64_t seq = 1;
    unsigned kus = 0;

    mfd_session *ms;
    mfd__tls_set_rekey(rekey_small);
    if (pair_start(&p, &ms, c->name)) {
        void *t = mfd__tls_of(p.ofd);
        size_t off = INIT_LEN;
        bool ok = CHECK(&p, t && mfd__tls_direct(t) == 0,
                        "a fresh session already runs records of ours") &&
                  CHECK(&p, !mfd__write_full(p.ofd, p.stream, INIT_LEN),
                        "the init message: %s", strerror(errno)) &&
                  CHECK(&p, mfd__tls_direct_send(t) == (c->direct != 0),
                        "mfd__tls_direct_send: not %d", c->direct != 0) &&
                  CHECK(&p, mfd__tls_direct(t) == c->direct,
                        "mfd__tls_direct: %d, expected %d",
                        mfd__tls_direct(t), c->direct);
        for (size_t i = 0; ok && i < NSHAPES; i++) {
            kus += shape_kus(&shapes[i], &seq, rekey_small, record);
            ok = write_shape(&p, &shapes[i], &off);
        }
        mfd__tls_set_rekey(rekey_bulk);
        kus += shape_kus(&bulk, &seq, rekey_bulk, record);
        ok = ok && write_shape(&p, &bulk, &off);
        /*
         * close_notify goes out only if the socket takes it at once: wait
         * until the peer has read everything.
         */
        if (ok && await_step(&p, false, 2, "the peer's read")) {
            mfd__sock_close(p.ofd);
            p.ofd = -1;
        }
    }
    pair_end(&p, ms, c->name);
    mfd__tls_set_rekey(1ull << 24);
    free(stream);
    /* Several KeyUpdates, each taken by GnuTLS; none from GnuTLS's sends. */
    assert_true(c->max_recv || kus >= 4);
    assert_int_equal(p.ku_in, c->direct ? kus : 0);
}

/* ---- recv: GnuTLS's records to ours -------------------------------------- */

typedef enum { END_CLOSE_NOTIFY, END_CUT, END_ALERT } ending;

typedef struct {
    const char *name;
    const char *prio;
    int direct; /* mfd__tls_direct after mfd__sock_lowat_init */
    ending end;
} recv_case;

static const recv_case recv_cases[] = {
    {"recv TLS1.3 close_notify", PRIO("1.3", ALL_AEAD), 1, END_CLOSE_NOTIFY},
    {"recv TLS1.3 CHACHA20", PRIO("1.3", "+CHACHA20-POLY1305"), 1,
     END_CLOSE_NOTIFY},
    {"recv TLS1.3 cut mid-record", PRIO("1.3", ALL_AEAD), 1, END_CUT},
    {"recv TLS1.3 fatal alert", PRIO("1.3", ALL_AEAD), 1, END_ALERT},
    {"recv TLS1.2 close_notify", PRIO("1.2", ALL_AEAD), 0, END_CLOSE_NOTIFY},
    {"recv TLS1.2 cut mid-record", PRIO("1.2", ALL_AEAD), 0, END_CUT},
    {"recv TLS1.2 fatal alert", PRIO("1.2", ALL_AEAD), 0, END_ALERT},
};

/* The units the reader reads, in order; the peer sends them as records. */
static const size_t units[] = {1, 16383, 16384, 16385, 300000, 5, 65536};
#define NUNITS (sizeof(units) / sizeof(units[0]))
/*
 * The read after all data, at a unit boundary: no longer than the record
 * that ends the stream (an alert is 24 bytes on the wire), as the top of
 * the file says.
 */
#ifndef RECV_END_LEN
#define RECV_END_LEN 16
#endif
/* The last unit of a cut: one whole record, then half of the next. */
#define CUT_HALF 600u

static bool peer_send(pair *p, const uint8_t *b, size_t n, size_t pad)
{
    int rc = tt_record_send(p->s, b, n, pad);
    if (rc)
        pair_fail(p, "peer: send: %s", gnutls_strerror(rc));
    return !rc;
}

static void peer_send_units(pair *p)
{
    const recv_case *c = p->arg;
    bool tls13 = c->direct != 0;
    size_t off = 0;
    bool ok = true;
    for (size_t i = 0; ok && i < NUNITS; i++) {
        /* KeyUpdates (one asking for ours) and an empty record. */
        int rc = 0;
        if (tls13 && (i == 2 || i == 4))
            rc = gnutls_session_key_update(p->s, i == 4 ? GNUTLS_KU_PEER : 0);
        if (rc < 0) {
            pair_fail(p, "peer: key update: %s", gnutls_strerror(rc));
            ok = false;
        }
        if (ok && tls13 && i == 3)
            ok = peer_send(p, p->stream + off, 0, 300);
        ok = ok && peer_send(p, p->stream + off, units[i], 0);
        off += units[i];
    }
    /* The end goes out once the reader has read all data. */
    if (!ok || !await_step(p, true, 1, "our read of the data"))
        goto out;
    if (c->end == END_CUT) {
        ok = peer_send(p, p->stream + off, CUT_HALF, 0);
        gnutls_transport_set_push_function(p->s, half_push);
        ok = ok && peer_send(p, p->stream + off + CUT_HALF, CUT_HALF, 0);
        shutdown(p->pfd, SHUT_WR);
    } else if (c->end == END_ALERT) {
        int rc = gnutls_alert_send(p->s, GNUTLS_AL_FATAL,
                                   GNUTLS_A_INTERNAL_ERROR);
        if (rc < 0)
            pair_fail(p, "peer: alert: %s", gnutls_strerror(rc));
    } else {
        int rc = gnutls_bye(p->s, GNUTLS_SHUT_WR);
        if (rc < 0)
            pair_fail(p, "peer: bye: %s", gnutls_strerror(rc));
    }
    /* The connection stays open: the reader must see the record itself. */
    await_step(p, true, 2, "our read of the end");
out:
    if (!ok)
        shutdown(p->pfd, SHUT_RDWR);
}

static void test_recv(void **state)
{
    const recv_case *c = *state;
    size_t total = 0;
    for (size_t i = 0; i < NUNITS; i++)
        total += units[i];
    uint8_t *stream = random_bytes(total + 2 * CUT_HALF, 2);
    uint8_t *got = calloc(1, total + 2 * CUT_HALF);
    assert_non_null(got);
    pair p = {.prio = c->prio, .script = peer_send_units, .arg = c,
              .stream = stream, .total = total};
    mfd_session *ms;
    int lowat = 0;
    if (pair_start(&p, &ms, c->name) && start_reading(&p, &lowat, c->direct)) {
        size_t off = 0;
        bool ok = true;
        for (size_t i = 0; ok && i < NUNITS; i++) {
            int rc = read_unit(p.ofd, &lowat, got + off, units[i], i % 2);
            ok = CHECK(&p, rc == MFD_IO_OK, "unit %zu (%zu bytes): %s: %s",
                       i, units[i], io_name(rc), mfd__io_strerror(rc)) &&
                 same(&p, "data", got + off, stream + off, units[i], off);
            off += units[i];
        }
        if (ok)
            step(&p, &p.ours, 1);
        int rc = MFD_IO_OK;
        if (ok && c->end == END_CUT) {
            /*
             * A record cut short is an error, ours (naming it) as
             * GnuTLS's (TLS 1.2): not the data, not a clean end, no wait.
             */
            rc = read_unit(p.ofd, &lowat, got + off, 2 * CUT_HALF, false);
            ok = CHECK(&p, rc == MFD_IO_ERROR && errno == EPROTO,
                       "a record cut by a TCP close: %s (%s), not an error",
                       io_name(rc), mfd__io_strerror(rc)) &&
                 CHECK(&p, !c->direct ||
                               strstr(mfd__io_strerror(rc), "middle of a record"),
                       "the reason '%s' does not name the cut record",
                       mfd__io_strerror(rc)) &&
                 same(&p, "before the cut", got + off, stream + off,
                      CUT_HALF, off);
            rc = read_unit(p.ofd, &lowat, got + off, RECV_END_LEN, false);
            ok = ok && CHECK(&p, rc != MFD_IO_OK,
                             "the read after a cut: %s", io_name(rc));
        } else if (ok && c->end == END_ALERT) {
            rc = read_unit(p.ofd, &lowat, got + off, RECV_END_LEN, false);
            ok = expect_eproto(&p, "a fatal alert", rc,
                               c->direct ? "alert" : NULL);
            rc = read_unit(p.ofd, &lowat, got + off, RECV_END_LEN, false);
            ok = ok && CHECK(&p, rc == MFD_IO_ERROR,
                             "the read after an alert: %s, not ERROR",
                             io_name(rc));
        } else if (ok) {
            for (int k = 0; ok && k < 2; k++) {
                rc = read_unit(p.ofd, &lowat, got + off, RECV_END_LEN, k);
                ok = CHECK(&p, rc == MFD_IO_EOF,
                           "read %d after close_notify: %s, not EOF", k + 1,
                           io_name(rc));
            }
        }
        if (ok)
            step(&p, &p.ours, 2);
    }
    pair_end(&p, ms, c->name);
    free(stream);
    free(got);
}

/* ---- hostile: records the peer builds itself ---------------------------- */

typedef enum {
    H_TAG,
    H_BODY,
    H_REPLAY,
    H_OUTER_22,
    H_OUTER_21,
    H_LEN_16,
    H_LEN_16641,
    H_ZEROS,
    H_TYPE_99,
    H_TICKET,
    H_KU_2,
    H_KU_TWO,
    H_OVERSIZE,
    H_OVERPADDED,
    H_ALERT_WARN,
    H_KU_OLD_KEYS,
    H_PAD_200,
    H_EMPTY,
    H_EMPTY_PADDED,
    H_KU_0,
    H_KU_1,
    H_MAX_CONTENT,
} hostile_kind;

typedef struct {
    const char *name;
    hostile_kind kind;
    const char *why; /* in the reason; NULL: the records read fine */
} hostile_case;

static const hostile_case hostile_cases[] = {
    {"hostile: tag byte flipped", H_TAG, "bad_record_mac"},
    {"hostile: ciphertext byte flipped", H_BODY, "bad_record_mac"},
    {"hostile: record replayed", H_REPLAY, "bad_record_mac"},
    {"hostile: outer type 22", H_OUTER_22, "type other than application"},
    {"hostile: outer type 21", H_OUTER_21, "type other than application"},
    {"hostile: length 16", H_LEN_16, "record_overflow"},
    {"hostile: length 16641", H_LEN_16641, "record_overflow"},
    {"hostile: inner plaintext all zeros", H_ZEROS, "without a content type"},
    {"hostile: inner content type 99", H_TYPE_99, "unknown content type"},
    {"hostile: NewSessionTicket", H_TICKET, "other than one whole KeyUpdate"},
    {"hostile: KeyUpdate request_update 2", H_KU_2,
     "other than one whole KeyUpdate"},
    {"hostile: two KeyUpdates in a record", H_KU_TWO,
     "other than one whole KeyUpdate"},
    {"hostile: 16385 bytes of content", H_OVERSIZE, "record_overflow"},
    {"hostile: 16384 bytes of content, 200 of padding", H_OVERPADDED,
     "record_overflow"},
    {"hostile: warning alert user_canceled", H_ALERT_WARN, "alert"},
    {"hostile: old keys after a KeyUpdate", H_KU_OLD_KEYS, "bad_record_mac"},
    {"hostile: 200 bytes of padding", H_PAD_200, NULL},
    {"hostile: empty data record", H_EMPTY, NULL},
    {"hostile: empty padded record", H_EMPTY_PADDED, NULL},
    {"hostile: KeyUpdate", H_KU_0, NULL},
    {"hostile: KeyUpdate asking for ours", H_KU_1, NULL},
    {"hostile: 16384 bytes of content", H_MAX_CONTENT, NULL},
};

/* What the hostile part carries as data when it reads fine. */
static size_t hostile_content(hostile_kind k)
{
    return k == H_PAD_200 ? 500 : k == H_MAX_CONTENT ? MFD_TLS_MAX_PLAIN : 0;
}

/*
 * The hostile part, sealed by the peer's own record layer (w, on its
 * session's keys) at out: data from d (of hostile_content bytes). Returns
 * its length on the wire; moves w to new keys where the case says.
 */
static size_t build_hostile(hostile_kind k, mfd_tls_rec *w, const uint8_t *d,
                            uint8_t *out)
{
    /* lifetime 7200, age_add, no nonce, a 2-byte ticket, no extensions */
    static const uint8_t ticket[] = {4, 0, 0, 15, 0, 0, 0x1c, 0x20, 1, 2,
                                     3, 4, 0, 0, 2, 0xab, 0xcd, 0, 0};
    static const uint8_t ku2[] = {24, 0, 0, 1, 2};
    static const uint8_t ku_two[] = {24, 0, 0, 1, 0, 24, 0, 0, 1, 0};
    static const uint8_t warn[] = {1, 90}; /* user_canceled */
    uint8_t buf[MFD_TLS_MAX_PLAIN + 256] = {0};
    size_t n;
    switch (k) {
    case H_TAG:
    case H_BODY:
    case H_OUTER_22:
    case H_OUTER_21:
        n = mfd__tlsrec_seal(w, MFD_TLS_DATA, d, GOOD_LEN, out);
        if (k == H_TAG)
            out[n - 1] ^= 1;
        else if (k == H_BODY)
            out[MFD_TLS_HDR + 10] ^= 0x80;
        else
            out[0] = k == H_OUTER_22 ? MFD_TLS_HANDSHAKE : MFD_TLS_ALERT;
        return n;
    case H_REPLAY:
        n = mfd__tlsrec_seal(w, MFD_TLS_DATA, d, 10, out);
        memcpy(out + n, out, n);
        return 2 * n;
    case H_LEN_16:
    case H_LEN_16641:
        n = k == H_LEN_16 ? 16 : MFD_TLS_MAX_CIPHER + 1;
        out[0] = MFD_TLS_DATA;
        out[1] = out[2] = 3;
        out[3] = (uint8_t)(n >> 8);
        out[4] = (uint8_t)n;
        memset(out + MFD_TLS_HDR, 0x5a, 2 * GOOD_LEN);
        return MFD_TLS_HDR + (n < 2 * GOOD_LEN ? n : 2 * GOOD_LEN);
    case H_ZEROS:
        return mfd__tlsrec_seal(w, 0, buf, 100, out);
    case H_TYPE_99:
        return mfd__tlsrec_seal(w, 99, d, 100, out);
    case H_TICKET:
        return mfd__tlsrec_seal(w, MFD_TLS_HANDSHAKE, ticket, sizeof(ticket),
                                out);
    case H_KU_2:
        return mfd__tlsrec_seal(w, MFD_TLS_HANDSHAKE, ku2, sizeof(ku2), out);
    case H_KU_TWO:
        return mfd__tlsrec_seal(w, MFD_TLS_HANDSHAKE, ku_two, sizeof(ku_two),
                                out);
    case H_OVERSIZE:
        return mfd__tlsrec_seal(w, MFD_TLS_DATA, d, MFD_TLS_MAX_PLAIN + 1,
                                out);
    case H_OVERPADDED:
        /* RFC 8446 5.4: the inner plaintext, padding too, <= 2^14 + 1. */
        memcpy(buf, d, MFD_TLS_MAX_PLAIN);
        buf[MFD_TLS_MAX_PLAIN] = MFD_TLS_DATA;
        return mfd__tlsrec_seal(w, 0, buf, MFD_TLS_MAX_PLAIN + 1 + 199, out);
    case H_ALERT_WARN:
        return mfd__tlsrec_seal(w, MFD_TLS_ALERT, warn, sizeof(warn), out);
    case H_KU_OLD_KEYS:
    case H_KU_0:
    case H_KU_1: {
        const uint8_t ku[] = {24, 0, 0, 1, k == H_KU_1};
        n = mfd__tlsrec_seal(w, MFD_TLS_HANDSHAKE, ku, sizeof(ku), out);
        if (k != H_KU_OLD_KEYS && mfd__tlsrec_update(w))
            return 0;
        return n;
    }
    case H_PAD_200:
        /* content, its type, 199 zeros; sealed as "type" 0: 200 zeros. */
        memcpy(buf, d, 500);
        buf[500] = MFD_TLS_DATA;
        return mfd__tlsrec_seal(w, 0, buf, 500 + 1 + 199, out);
    case H_EMPTY:
        return mfd__tlsrec_seal(w, MFD_TLS_DATA, d, 0, out);
    case H_EMPTY_PADDED:
        buf[0] = MFD_TLS_DATA;
        return mfd__tlsrec_seal(w, 0, buf, 1 + 99, out);
    case H_MAX_CONTENT:
        return mfd__tlsrec_seal(w, MFD_TLS_DATA, d, MFD_TLS_MAX_PLAIN, out);
    }
    return 0;
}

/*
 * The peer takes its direction over with the record layer under test (a
 * test may: the layer is not what checks the records here, our reader
 * is), then sends a good record, the hostile part and a good record in
 * one go, and keeps the connection open until the reader is done.
 */
static void peer_hostile(pair *p)
{
    const hostile_case *c = p->arg;
    mfd_tls_rec w;
    if (mfd__tlsrec_init(&w, p->s, false, p->secret, p->secret_len)) {
        pair_fail(p, "peer: mfd__tlsrec_init on its own session failed");
        shutdown(p->pfd, SHUT_RDWR);
        return;
    }
    size_t cap = 2 * (MFD_TLS_MAX_CIPHER + MFD_TLS_HDR) + 4 * GOOD_LEN;
    uint8_t *out = malloc(cap);
    if (!out)
        abort();
    const uint8_t *d = p->stream;
    size_t n = mfd__tlsrec_seal(&w, MFD_TLS_DATA, d, GOOD_LEN, out);
    d += GOOD_LEN;
    size_t h = build_hostile(c->kind, &w, d, out + n);
    d += hostile_content(c->kind);
    size_t b = h ? mfd__tlsrec_seal(&w, MFD_TLS_DATA, d, GOOD_LEN,
                                    out + n + h)
                 : 0;
    if (!n || !h || !b) {
        pair_fail(p, "peer: sealing failed");
    } else {
        n += h + b;
        for (size_t off = 0; off < n;) {
            ssize_t k = send(p->pfd, out + off, n - off, MSG_NOSIGNAL);
            if (k <= 0) {
                pair_fail(p, "peer: send: %s", strerror(errno));
                break;
            }
            off += (size_t)k;
        }
        await_step(p, true, 1, "our read of the hostile records");
    }
    free(out);
    mfd__tlsrec_free(&w);
}

static void test_hostile(void **state)
{
    const hostile_case *c = *state;
    size_t content = hostile_content(c->kind), total = 2 * GOOD_LEN + content;
    /* The oversized record's 16385 bytes come from the stream too. */
    uint8_t *stream = random_bytes(total + MFD_TLS_MAX_PLAIN + 1, 3);
    uint8_t *got = calloc(1, total + MFD_TLS_MAX_PLAIN);
    assert_non_null(got);
    pair p = {.prio = PRIO("1.3", ALL_AEAD), .script = peer_hostile,
              .arg = c, .stream = stream, .total = total};
    mfd_session *ms;
    int lowat = 0;
    if (pair_start(&p, &ms, c->name) && start_reading(&p, &lowat, 1)) {
        int rc = read_unit(p.ofd, &lowat, got, GOOD_LEN, false);
        bool ok = CHECK(&p, rc == MFD_IO_OK, "the good record before: %s: %s",
                        io_name(rc), mfd__io_strerror(rc)) &&
                  same(&p, "the good record before", got, stream, GOOD_LEN,
                       0);
        if (ok && c->why) {
            /* The valid record after it must not come through either. */
            /*
             * A forged record is opened into the reader's buffer when its
             * plaintext fits: a read that could take all of it must find
             * none of the forged plaintext there (GnuTLS writes it out
             * before it checks the tag). The peer sent that much.
             */
            bool forged = c->kind == H_TAG || c->kind == H_BODY;
            for (int k = 0; ok && k < 2; k++) {
                rc = read_unit(p.ofd, &lowat, got + GOOD_LEN,
                               k ? 1 : forged ? 2 * GOOD_LEN : GOOD_LEN, k);
                ok = expect_eproto(&p, k ? "the read after the failure"
                                         : "the hostile record",
                                   rc, c->why);
            }
            for (size_t i = 0; ok && forged && i < 2 * GOOD_LEN; i++)
                ok = CHECK(&p, !got[GOOD_LEN + i],
                           "byte %zu of a forged record reached the "
                           "reader's buffer",
                           i);
        } else if (ok) {
            /* One read for all the rest: records open into it directly. */
            rc = read_unit(p.ofd, &lowat, got + GOOD_LEN, total - GOOD_LEN,
                           false);
            ok = CHECK(&p, rc == MFD_IO_OK, "the records after: %s: %s",
                       io_name(rc), mfd__io_strerror(rc)) &&
                 same(&p, "the records after", got + GOOD_LEN,
                      stream + GOOD_LEN, total - GOOD_LEN, GOOD_LEN);
        }
        if (ok)
            step(&p, &p.ours, 1);
    }
    pair_end(&p, ms, c->name);
    free(stream);
    free(got);
}

/* ---- rec: an mfd_tls_rec alone ------------------------------------------ */

/* Seals with a, opens with b: the same bytes and type come back. */
static void round_trip(mfd_tls_rec *a, mfd_tls_rec *b, uint8_t type,
                       const uint8_t *d, size_t n)
{
    static uint8_t rec[MFD_TLS_MAX_PLAIN + MFD_TLS_OVERHEAD];
    static uint8_t out[MFD_TLS_MAX_CIPHER];
    uint64_t seq = a->seq;
    size_t len = mfd__tlsrec_seal(a, type, d, n, rec);
    assert_int_equal(len, n + MFD_TLS_OVERHEAD);
    assert_int_equal(a->seq, seq + 1);
    const char *why = NULL;
    assert_int_equal(mfd__tlsrec_body_len(rec, &why), len - MFD_TLS_HDR);
    size_t got = 0;
    uint8_t t = 0;
    int rc = mfd__tlsrec_open(b, rec, out, &got, &t, &why);
    if (rc)
        fail_msg("open of %zu bytes, type %u: %s", n, type, why);
    assert_int_equal(got, n);
    assert_int_equal(t, type);
    assert_memory_equal(out, d, n);
    assert_int_equal(b->seq, a->seq);
}

/* Opens rec (sealed elsewhere) with r: must fail as a bad MAC. */
static void open_fails(mfd_tls_rec *r, const uint8_t *rec)
{
    static uint8_t out[MFD_TLS_MAX_CIPHER];
    uint64_t seq = r->seq;
    size_t n;
    uint8_t t;
    const char *why = NULL;
    assert_int_equal(mfd__tlsrec_open(r, rec, out, &n, &t, &why), -1);
    assert_non_null(why);
    assert_non_null(strstr(why, "bad_record_mac"));
    assert_int_equal(r->seq, seq);
}

static void test_rec(void **state)
{
    (void)state;
    static const char name[] = "rec";
    pair p = {.prio = PRIO("1.3", ALL_AEAD)};
    mfd_session *ms;
    if (!pair_start(&p, &ms, name)) {
        pair_end(&p, ms, name);
        return;
    }
    /* With no script the peer leaves its session to this thread. */
    pthread_join(p.thread, NULL);
    assert_false(p.why[0]);
    assert_true(p.secret_len == 32 || p.secret_len == 48);

    /* The framing of the header alone. */
    const char *why;
    uint8_t h[MFD_TLS_HDR] = {MFD_TLS_DATA, 3, 3, 0, 17};
    assert_int_equal(mfd__tlsrec_body_len(h, &why), 17);
    h[3] = (uint8_t)(MFD_TLS_MAX_CIPHER >> 8);
    h[4] = (uint8_t)MFD_TLS_MAX_CIPHER;
    assert_int_equal(mfd__tlsrec_body_len(h, &why), MFD_TLS_MAX_CIPHER);
    h[1] = h[2] = 0; /* legacy_record_version is ignored */
    assert_int_equal(mfd__tlsrec_body_len(h, &why), MFD_TLS_MAX_CIPHER);
    h[4]++;
    why = NULL;
    assert_int_equal(mfd__tlsrec_body_len(h, &why), 0);
    assert_non_null(strstr(why, "record_overflow"));
    h[3] = 0;
    h[4] = 16;
    assert_int_equal(mfd__tlsrec_body_len(h, &why), 0);
    h[4] = 17;
    for (unsigned type = 0; type < 256; type++) {
        h[0] = (uint8_t)type;
        why = NULL;
        size_t n = mfd__tlsrec_body_len(h, &why);
        assert_int_equal(n, type == MFD_TLS_DATA ? 17 : 0);
        assert_true(type == MFD_TLS_DATA || why);
    }

    /* Keys that are not the session's are refused. */
    mfd_tls_rec a, b, c, d;
    assert_int_equal(mfd__tlsrec_init(&c, p.s, true, p.secret, p.secret_len),
                     -1);
    assert_null(c.aead);
    uint8_t bad[64];
    memcpy(bad, p.secret, p.secret_len);
    bad[0] ^= 1;
    assert_int_equal(mfd__tlsrec_init(&c, p.s, false, bad, p.secret_len), -1);
    assert_int_equal(mfd__tlsrec_init(&c, p.s, false, p.secret, 20), -1);

    /* One sealing, three opening, on the same keys. */
    assert_int_equal(mfd__tlsrec_init(&a, p.s, false, p.secret, p.secret_len),
                     0);
    assert_int_equal(mfd__tlsrec_init(&b, p.s, false, p.secret, p.secret_len),
                     0);
    assert_int_equal(mfd__tlsrec_init(&c, p.s, false, p.secret, p.secret_len),
                     0);
    assert_int_equal(mfd__tlsrec_init(&d, p.s, false, p.secret, p.secret_len),
                     0);
    uint8_t *data = random_bytes(MFD_TLS_MAX_PLAIN, 4);
    static const size_t sizes[] = {0, 1, 100, 4096, 16383, MFD_TLS_MAX_PLAIN};
    static const uint8_t types[] = {MFD_TLS_DATA, MFD_TLS_HANDSHAKE,
                                    MFD_TLS_ALERT, 1, 255};
    for (size_t i = 0; i < sizeof(sizes) / sizeof(sizes[0]); i++)
        round_trip(&a, &b, types[i % sizeof(types)], data, sizes[i]);
    c.seq = d.seq = a.seq;

    /* A failed open leaves the sequence number: the next record opens. */
    static uint8_t rec[MFD_TLS_MAX_PLAIN + MFD_TLS_OVERHEAD];
    size_t len = mfd__tlsrec_seal(&a, MFD_TLS_DATA, data, 1000, rec);
    rec[len - 1] ^= 1;
    open_fails(&b, rec);
    rec[len - 1] ^= 1;
    a.seq--;
    round_trip(&a, &b, MFD_TLS_DATA, data, 1000);
    c.seq = d.seq = a.seq;

    /* Two KeyUpdates on both ends; c misses the second, d both. */
    uint8_t s0[64], s1[64];
    memcpy(s0, a.secret, a.secret_len);
    assert_int_equal(mfd__tlsrec_update(&a), 0);
    assert_int_equal(mfd__tlsrec_update(&b), 0);
    assert_int_equal(mfd__tlsrec_update(&c), 0);
    memcpy(s1, a.secret, a.secret_len);
    assert_memory_not_equal(s0, s1, a.secret_len);
    assert_memory_equal(a.secret, b.secret, a.secret_len);
    assert_int_equal(a.seq, 0);
    round_trip(&a, &b, MFD_TLS_DATA, data, 5000);
    assert_int_equal(mfd__tlsrec_update(&a), 0);
    assert_int_equal(mfd__tlsrec_update(&b), 0);
    assert_memory_not_equal(s1, a.secret, a.secret_len);
    assert_memory_equal(a.secret, b.secret, a.secret_len);
    assert_int_equal(a.seq, 0);
    assert_int_equal(b.seq, 0);
    len = mfd__tlsrec_seal(&a, MFD_TLS_DATA, data, MFD_TLS_MAX_PLAIN, rec);
    assert_int_equal(len, MFD_TLS_MAX_PLAIN + MFD_TLS_OVERHEAD);
    c.seq = d.seq = 0;
    open_fails(&c, rec);
    open_fails(&d, rec);
    a.seq--;
    for (size_t i = 0; i < sizeof(sizes) / sizeof(sizes[0]); i++)
        round_trip(&a, &b, types[i % sizeof(types)], data, sizes[i]);

    mfd__tlsrec_free(&a);
    mfd__tlsrec_free(&b);
    mfd__tlsrec_free(&c);
    mfd__tlsrec_free(&d);
    assert_null(a.aead);
    free(data);
    alarm(0);
    mfd__sock_close(p.ofd);
    close(p.pfd);
    gnutls_deinit(p.s);
    gnutls_psk_free_client_credentials(p.ccred);
    mfd_session_free(ms);
    pthread_cond_destroy(&p.cond);
    pthread_mutex_destroy(&p.lock);
}

/* ---- main ---------------------------------------------------------------- */


/* The key the peer and every session share; the alarm's handler. */
static int group_setup(void **state)
{
    (void)state;
    return tt_group_setup("test_tls_record", psk_bytes, sizeof(psk_bytes), &psk_key);
}

#define NSEND (sizeof(send_cases) / sizeof(send_cases[0]))
#define NRECV (sizeof(recv_cases) / sizeof(recv_cases[0]))
#define NHOSTILE (sizeof(hostile_cases) / sizeof(hostile_cases[0]))

/*
 * The two AEADs (ipsec-mb's AES-GCM where built in, GnuTLS's) held against
 * each other on the same secrets: the same records byte for byte (AES-GCM
 * and ChaCha20-Poly1305 are deterministic given key and nonce), each
 * opening the other's, through a KeyUpdate; and a forged record fails on
 * both, leaving no plaintext. Without ipsec-mb both sides are GnuTLS's and
 * this still checks the framing. The handshakes above, with a PSK,
 * negotiate SHA-256 suites only: AES-256-GCM meets a real handshake in
 * e2e_tls (x509-aes256, with --tls-priority).
 */
static void test_aeads(void **state)
{
    (void)state;
    if (!mfd__tlsrec_ipsec_mb())
        print_message("ipsec-mb is not in use here: GnuTLS's AEAD on both "
                      "sides\n");
    static const struct {
        gnutls_cipher_algorithm_t c;
        gnutls_digest_algorithm_t d;
    } suites[] = {
        {GNUTLS_CIPHER_AES_128_GCM, GNUTLS_DIG_SHA256},
        {GNUTLS_CIPHER_AES_256_GCM, GNUTLS_DIG_SHA384},
        {GNUTLS_CIPHER_CHACHA20_POLY1305, GNUTLS_DIG_SHA256},
    };
    static const size_t lens[] = {0, 1, 15, 16, 17, 100, 4096, 16383, 16384};
    uint8_t secret[48];
    uint8_t *plain = random_bytes(MFD_TLS_MAX_PLAIN, 5);
    uint8_t *a = malloc(MFD_TLS_MAX_CIPHER + MFD_TLS_HDR);
    uint8_t *b = malloc(MFD_TLS_MAX_CIPHER + MFD_TLS_HDR);
    uint8_t *out = malloc(MFD_TLS_MAX_CIPHER);
    assert_non_null(a);
    assert_non_null(b);
    assert_non_null(out);
    for (size_t i = 0; i < sizeof(suites) / sizeof(suites[0]); i++) {
        size_t sl = gnutls_hash_get_len(suites[i].d);
        assert_int_equal(gnutls_rnd(GNUTLS_RND_NONCE, secret, sl), 0);
        mfd_tls_rec fast, gnu;
        assert_int_equal(mfd__tlsrec_init_raw(&fast, suites[i].c, suites[i].d,
                                              secret, sl, false),
                         0);
        assert_int_equal(mfd__tlsrec_init_raw(&gnu, suites[i].c, suites[i].d,
                                              secret, sl, true),
                         0);
        assert_null(gnu.gcm);
        /* ipsec-mb's for AES-GCM where it runs (not without AES-NI). */
        assert_true((fast.gcm != NULL) ==
                    (mfd__tlsrec_ipsec_mb() &&
                     suites[i].c != GNUTLS_CIPHER_CHACHA20_POLY1305));
        for (int round = 0; round < 2; round++) {
            for (size_t k = 0; k < sizeof(lens) / sizeof(lens[0]); k++) {
                uint8_t type = k % 3 ? MFD_TLS_DATA
                                     : k % 2 ? MFD_TLS_ALERT
                                             : MFD_TLS_HANDSHAKE;
                size_t na = mfd__tlsrec_seal(&fast, type, plain, lens[k], a);
                size_t nb = mfd__tlsrec_seal(&gnu, type, plain, lens[k], b);
                assert_int_equal(na, lens[k] + MFD_TLS_OVERHEAD);
                assert_int_equal(na, nb);
                assert_memory_equal(a, b, na);
                /* Each opens the other's (the sequence numbers move on). */
                for (int w = 0; w < 2; w++) {
                    mfd_tls_rec *r = w ? &gnu : &fast;
                    const char *why = NULL;
                    size_t len = 0;
                    uint8_t t = 0;
                    r->seq--;
                    assert_int_equal(
                        mfd__tlsrec_open(r, w ? a : b, out, &len, &t, &why),
                        0);
                    assert_int_equal(len, lens[k]);
                    assert_int_equal(t, type);
                    assert_memory_equal(out, plain, len);
                }
            }
            /* A forged tag: refused by both, no plaintext left behind. */
            size_t n = mfd__tlsrec_seal(&fast, MFD_TLS_DATA, plain, 4096, a);
            a[n - 1] ^= 1;
            for (int w = 0; w < 2; w++) {
                mfd_tls_rec *r = w ? &gnu : &fast;
                const char *why = NULL;
                size_t len = 0;
                uint8_t t = 0;
                r->seq -= !w;
                memset(out, 0xee, 4096 + 1);
                assert_int_equal(mfd__tlsrec_open(r, a, out, &len, &t, &why),
                                 -1);
                assert_non_null(strstr(why, "bad_record_mac"));
                for (size_t j = 0; j < 4096 + 1; j++)
                    assert_int_equal(out[j], 0);
            }
            gnu.seq = fast.seq;
            assert_int_equal(mfd__tlsrec_update(&fast), 0);
            assert_int_equal(mfd__tlsrec_update(&gnu), 0);
            assert_int_equal(fast.seq, 0);
            assert_memory_equal(fast.secret, gnu.secret, sl);
        }
        mfd__tlsrec_free(&fast);
        mfd__tlsrec_free(&gnu);
    }
    free(plain);
    free(a);
    free(b);
    free(out);
}

int main(void)
{
    struct CMUnitTest tests[NSEND + NRECV + NHOSTILE + 2];
    size_t n = 0;
    for (size_t i = 0; i < NSEND; i++)
        tests[n++] = (struct CMUnitTest){.name = send_cases[i].name,
                                         .test_func = test_send,
                                         .initial_state =
                                             (void *)&send_cases[i]};
    for (size_t i = 0; i < NRECV; i++)
        tests[n++] = (struct CMUnitTest){.name = recv_cases[i].name,
                                         .test_func = test_recv,
                                         .initial_state =
                                             (void *)&recv_cases[i]};
    for (size_t i = 0; i < NHOSTILE; i++)
        tests[n++] = (struct CMUnitTest){.name = hostile_cases[i].name,
                                         .test_func = test_hostile,
                                         .initial_state =
                                             (void *)&hostile_cases[i]};
    tests[n++] = (struct CMUnitTest){.name = "rec", .test_func = test_rec};
    tests[n++] = (struct CMUnitTest){.name = "rec: the two AEADs agree",
                                     .test_func = test_aeads};
    return cmocka_run_group_tests(tests, group_setup, NULL);
}
