/*
 * tls.c - GnuTLS sessions for the channels (PROTOCOL.md 6).
 *
 * Credentials follow QEMU's layouts: an x509 directory with ca-cert.pem,
 * server-cert.pem / server-key.pem and client-cert.pem / client-key.pem
 * (tls-creds-x509), or a PSK keys file of `name:hexkey` lines
 * (tls-creds-psk; the client uses the first line). TLS 1.3, or 1.2 with
 * AEAD ciphers only. The server verifies client certificates when
 * tls-verify-peer is on (the default, as QEMU's verify-peer) and checks the
 * client's distinguished name against the tls-authz list when one is set.
 */
#include "transport/tls.h"

#include <errno.h>
#include <gnutls/gnutls.h>
#include <gnutls/socket.h>
#include <gnutls/x509.h>
#include <inttypes.h>
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "common/util.h"
#include "core/session.h"
#include "transport/tls_record.h"
#include "transport/transport.h"

#define MFD_TLS_PRIORITY                                                        \
    "NORMAL:-VERS-ALL:+VERS-TLS1.3:+VERS-TLS1.2:-CIPHER-ALL:+AES-128-GCM:"       \
    "+AES-256-GCM:+CHACHA20-POLY1305:+ECDHE-PSK:+DHE-PSK:+PSK"

/* ---- sessions by fd ---------------------------------------------------- */

#define TLS_FDS 65536
static gnutls_session_t *by_fd; /* allocated on the first handshake */
static pthread_mutex_t by_fd_lock = PTHREAD_MUTEX_INITIALIZER;

void *mfd__tls_of(int fd)
{
    gnutls_session_t *t = __atomic_load_n(&by_fd, __ATOMIC_ACQUIRE);
    if (!t || fd < 0 || fd >= TLS_FDS)
        return NULL;
    return __atomic_load_n(&t[fd], __ATOMIC_ACQUIRE);
}

static int register_fd(int fd, gnutls_session_t sess)
{
    if (fd >= TLS_FDS)
        return -1;
    pthread_mutex_lock(&by_fd_lock);
    if (!by_fd)
        by_fd = calloc(TLS_FDS, sizeof(*by_fd));
    gnutls_session_t *t = by_fd;
    pthread_mutex_unlock(&by_fd_lock);
    if (!t)
        return -1;
    __atomic_store_n(&t[fd], sess, __ATOMIC_RELEASE);
    return 0;
}

/*
 * The sessions' transport: sendmsg on the socket, with MSG_DONTWAIT added
 * while the calling thread asks for it (mfd__tls_write_nb, the goodbye), so
 * that a write to a peer that stopped reading can give way to a wake-up or
 * a deadline instead of blocking.
 */
static __thread int push_flags;

static ssize_t push_vec(gnutls_transport_ptr_t p, const giovec_t *iov,
                        int iovcnt)
{
    struct msghdr m = {.msg_iov = (struct iovec *)iov,
                       .msg_iovlen = (size_t)iovcnt};
    return sendmsg((int)(intptr_t)p, &m, MSG_NOSIGNAL | push_flags);
}

/* ---- a channel's state beside its session ------------------------------ */

typedef struct tls_ra tls_ra;
typedef struct tls_rx tls_rx;
typedef struct tls_tx tls_tx;

/*
 * What a session carries besides GnuTLS's state (as its session pointer):
 * the client's application traffic secret as the handshake logged it (kept
 * while a direction may still be taken over by our own record layer), the
 * destination's read-ahead, and the directions taken over. Owned by the
 * thread that owns the channel.
 */
typedef struct {
    mfd_session *s;
    gnutls_keylog_func keylog; /* GnuTLS's own (SSLKEYLOGFILE), still called */
    uint8_t secret[64];
    size_t secret_len;
    size_t peer_limit; /* content per record the server takes (0: 16384) */
    tls_ra *ra;
    tls_rx *rx; /* the peer's records, opened by us */
    tls_tx *tx; /* ours, sealed by us */
} tls_chan;

static tls_chan *chan_of(gnutls_session_t sess)
{
    return gnutls_session_get_ptr(sess);
}

/* The fd is the session's send pointer (a read-ahead is its receive one). */
static int sess_fd(gnutls_session_t sess)
{
    gnutls_transport_ptr_t r, w;
    gnutls_transport_get_ptr2(sess, &r, &w);
    return (int)(intptr_t)w;
}

/* Once a channel's directions are settled, its secret is not needed. */
static void wipe_secret(tls_chan *c)
{
    gnutls_memset(c->secret, 0, sizeof(c->secret));
    c->secret_len = 0;
}

static int keylog(gnutls_session_t sess, const char *label,
                  const gnutls_datum_t *secret)
{
    tls_chan *c = chan_of(sess);
    if (!strcmp(label, "CLIENT_TRAFFIC_SECRET_0") &&
        secret->size <= sizeof(c->secret)) {
        memcpy(c->secret, secret->data, secret->size);
        c->secret_len = secret->size;
    }
    return c->keylog ? c->keylog(sess, label, secret) : 0;
}

/*
 * Why the calling thread's last TLS read or write failed with EPROTO
 * (mfd__tls_strerror), so the channel's error line can name it.
 */
static __thread const char *last_why;
static __thread char why_text[160];

const char *mfd__tls_strerror(void)
{
    return last_why;
}

static ssize_t fail_why(int err, const char *why)
{
    last_why = NULL;
    if (why) {
        snprintf(why_text, sizeof(why_text), "TLS: %s", why);
        last_why = why_text;
    }
    errno = err;
    return -1;
}

/* ---- read-ahead --------------------------------------------------------- */

/*
 * GnuTLS reads a record's header and then its body, each with a read of
 * the socket that returns as soon as any of it is there: about two reads
 * and a wake-up per 16 KiB record. A destination's data channel knows how
 * many plaintext bytes its peer owes it next (the rest of a header or of
 * a payload), so it waits with the receive low-water mark of sock.c until
 * the ciphertext of nearly all of them is there and takes it in one read
 * into a buffer of its own. With TLS 1.3 our own record layer then opens
 * the records from there (below); otherwise GnuTLS pulls them from it.
 *
 * The mark never asks for more than the peer must send. GnuTLS asks the
 * transport only for bytes of the record it is reading, and of the bytes
 * promised, those of that record may already be with GnuTLS (at most one
 * record's plaintext: RA_SLACK). Our own record layer holds nothing back:
 * when it needs more, the buffer holds part of one record and no plaintext
 * waits, and a record is longer on the wire than its content. A session
 * with read-ahead has it as its receive pointer and the fd as its send
 * pointer (gnutls_transport_set_ptr2).
 */
#define RA_BYTES (1u << 20)
#define RA_SLACK 16384u

struct tls_ra {
    int fd;
    int mark;        /* SO_RCVLOWAT now on fd */
    size_t promised; /* plaintext bytes the reader is owed next */
    size_t head, tail;
    uint8_t buf[RA_BYTES];
};

static tls_ra *ra_of(gnutls_session_t sess)
{
    return chan_of(sess)->ra;
}

/*
 * Reads into the buffer's free end what is there now, or else waits for
 * `need` bytes (at most the free space).
 */
static ssize_t ra_fill(tls_ra *ra, size_t need)
{
    size_t room = RA_BYTES - ra->tail;
    ssize_t n;
    do
        n = mfd__sock_read_lowat(ra->fd, &ra->mark, ra->buf + ra->tail, room,
                                 need < room ? need : room);
    while (n < 0 && errno == EINTR);
    if (n > 0)
        ra->tail += (size_t)n;
    return n;
}

static ssize_t ra_pull(gnutls_transport_ptr_t p, void *data, size_t len)
{
    tls_ra *ra = p;
    if (ra->head == ra->tail) {
        size_t need = ra->promised > RA_SLACK ? ra->promised - RA_SLACK : 0;
        ra->head = ra->tail = 0;
        ssize_t n = ra_fill(ra, need > len ? need : len);
        if (n <= 0)
            return n;
    }
    size_t n = ra->tail - ra->head < len ? ra->tail - ra->head : len;
    memcpy(data, ra->buf + ra->head, n);
    ra->head += n;
    return (ssize_t)n;
}

static int ra_pull_timeout(gnutls_transport_ptr_t p, unsigned int ms)
{
    tls_ra *ra = p;
    if (ra->head != ra->tail)
        return 1;
    /* The mark is the reader's: any byte counts here. */
    int one = 1;
    if (ra->mark != 1 &&
        !setsockopt(ra->fd, SOL_SOCKET, SO_RCVLOWAT, &one, sizeof(one)))
        ra->mark = 1;
    struct pollfd pf = {.fd = ra->fd, .events = POLLIN};
    return poll(&pf, 1, ms == GNUTLS_INDEFINITE_TIMEOUT ? -1 : (int)ms);
}

void mfd__tls_promise(void *t, size_t plaintext)
{
    tls_ra *ra = ra_of(t);
    if (ra)
        ra->promised = plaintext;
}

/* ---- our own records: reading ------------------------------------------ */

/*
 * A record is opened from the read-ahead buffer straight into the reader's
 * buffer when all its plaintext fits there (its content type byte and any
 * padding land past the content, on bytes the reader fills next), else
 * into `plain`, from which the reader takes it in parts.
 */
struct tls_rx {
    mfd_tls_rec r;
    size_t at, left; /* content in `plain` not yet read */
    int done;        /* sticky: 0, EOF_DONE, or the errno of the failure */
    const char *why;
    uint8_t plain[MFD_TLS_MAX_CIPHER];
};

#define EOF_DONE (-1)

static ssize_t rx_fail(tls_rx *x, const char *why)
{
    x->done = EPROTO;
    x->why = why;
    return fail_why(EPROTO, why);
}

/* After a record of type other than data: 0 to go on, or rx_fail. */
static ssize_t rx_control(tls_rx *x, uint8_t type, const uint8_t *p,
                          size_t n)
{
    if (type == MFD_TLS_ALERT && n == 2 && p[1] == GNUTLS_A_CLOSE_NOTIFY) {
        x->done = EOF_DONE;
        return 0;
    }
    if (type == MFD_TLS_ALERT)
        return rx_fail(x, "the peer sent a TLS alert (it gave up on the "
                          "channel)");
    /*
     * KeyUpdate, whole and alone at the end of its record (RFC 8446 4.6.3).
     * One asking for ours needs nothing now: the reader sends no data.
     */
    if (type == MFD_TLS_HANDSHAKE && n == 5 && p[0] == 24 && !p[1] &&
        !p[2] && p[3] == 1 && p[4] <= 1)
        return mfd__tlsrec_update(&x->r)
                   ? rx_fail(x, "KeyUpdate: deriving the next keys failed")
                   : 0;
    if (type == MFD_TLS_HANDSHAKE)
        return rx_fail(x, "a handshake message other than one whole "
                          "KeyUpdate on a data channel");
    return rx_fail(x, "a record of unknown content type");
}

static ssize_t rx_read(tls_chan *c, uint8_t *buf, size_t len)
{
    tls_rx *x = c->rx;
    tls_ra *ra = c->ra;
    for (;;) {
        if (x->left) {
            size_t n = x->left < len ? x->left : len;
            memcpy(buf, x->plain + x->at, n);
            x->at += n;
            x->left -= n;
            return (ssize_t)n;
        }
        if (x->done == EOF_DONE)
            return 0;
        if (x->done)
            return fail_why(x->done, x->why);

        size_t have = ra->tail - ra->head, want = MFD_TLS_HDR;
        const char *why;
        if (have >= MFD_TLS_HDR) {
            size_t body = mfd__tlsrec_body_len(ra->buf + ra->head, &why);
            if (!body)
                return rx_fail(x, why);
            want += body;
        }
        if (have < want) {
            if (ra->head) {
                memmove(ra->buf, ra->buf + ra->head, have);
                ra->head = 0;
                ra->tail = have;
            }
            /* The rest of the record, or of what the reader was promised. */
            size_t need = want - have;
            if (ra->promised > have && ra->promised - have > need)
                need = ra->promised - have;
            ssize_t n = ra_fill(ra, need);
            if (n == 0 && have)
                return rx_fail(x, "the connection ended in the middle of "
                                  "a record");
            if (n == 0) /* gone without close_notify: read as the end */
                x->done = EOF_DONE;
            if (n <= 0)
                return n;
            continue;
        }

        const uint8_t *rec = ra->buf + ra->head;
        uint8_t *out = want - MFD_TLS_HDR - MFD_TLS_TAG <= len ? buf : x->plain;
        size_t n;
        uint8_t type;
        if (mfd__tlsrec_open(&x->r, rec, out, &n, &type, &why))
            return rx_fail(x, why);
        ra->head += want;
        if (type != MFD_TLS_DATA) {
            if (rx_control(x, type, out, n))
                return -1;
            if (x->done == EOF_DONE)
                return 0;
        } else if (out == buf && n) {
            return (ssize_t)n;
        } else {
            x->at = 0;
            x->left = n;
        }
    }
}

/*
 * Our own records from here, once GnuTLS holds no plaintext (a peer may
 * send the init message and the first packet in one record: then at the
 * next read that ends on a record's end). Decided for good, but for that.
 */
static void rx_take_over(gnutls_session_t sess, tls_chan *c)
{
    if (!c->secret_len || gnutls_record_check_pending(sess))
        return;
    tls_rx *x = malloc(sizeof(*x));
    if (x && !mfd__tlsrec_init(&x->r, sess, true, c->secret, c->secret_len)) {
        x->at = x->left = 0;
        x->done = 0;
        x->why = NULL;
        c->rx = x;
    } else {
        free(x);
    }
    wipe_secret(c);
}

int mfd__tls_readahead(void *t)
{
    gnutls_session_t sess = t;
    tls_chan *c = chan_of(sess);
    if (c->ra)
        return 1;
    /* Kernel TLS reads the socket itself, by the receive pointer. */
    if (gnutls_transport_is_ktls_enabled(sess) & GNUTLS_KTLS_RECV)
        return 0;
    tls_ra *ra = malloc(sizeof(*ra));
    if (!ra)
        return 0;
    ra->fd = sess_fd(sess);
    ra->mark = 1;
    ra->promised = 0;
    ra->head = ra->tail = 0;
    if (setsockopt(ra->fd, SOL_SOCKET, SO_RCVLOWAT, &ra->mark,
                   sizeof(ra->mark))) {
        free(ra);
        return 0;
    }
    c->ra = ra;
    gnutls_transport_set_ptr2(sess, ra,
                              (gnutls_transport_ptr_t)(intptr_t)ra->fd);
    gnutls_transport_set_pull_function(sess, ra_pull);
    gnutls_transport_set_pull_timeout_function(sess, ra_pull_timeout);
    rx_take_over(sess, c);
    return 1;
}

/* ---- our own records: writing ------------------------------------------ */

/*
 * A source's data channel seals its records into `out` and sends them a
 * buffer at a time. Like GnuTLS it moves to new keys (KeyUpdate) after
 * 2^24 records, well inside AES-GCM's limit (RFC 8446 5.5).
 */
#define TX_RECORDS 8
#define KU_LEN 5
#define TX_BYTES                                                                \
    (TX_RECORDS * (MFD_TLS_MAX_PLAIN + MFD_TLS_OVERHEAD) + KU_LEN +            \
     MFD_TLS_OVERHEAD)

struct tls_tx {
    mfd_tls_rec r;
    size_t max;  /* content per record: the peer's record size limit */
    size_t used; /* bytes of sealed records in out */
    bool torn;   /* a send failed part-way: no close_notify */
    uint8_t out[TX_BYTES];
};

static uint64_t rekey_after = 1ull << 24;

void mfd__tls_set_rekey(uint64_t records)
{
    rekey_after = records;
}

/* A sealing failure ends the channel's writing for good. */
static int tx_fail(tls_tx *w, const char *why)
{
    w->torn = true;
    return (int)fail_why(EPROTO, why);
}

static int tx_seal(tls_tx *w, uint8_t type, const void *p, size_t n)
{
    size_t len = mfd__tlsrec_seal(&w->r, type, p, n, w->out + w->used);
    if (!len)
        return tx_fail(w, "sealing a record failed");
    w->used += len;
    if (w->r.seq < rekey_after || type != MFD_TLS_DATA)
        return 0;
    static const uint8_t ku[KU_LEN] = {24, 0, 0, 1, 0};
    len = mfd__tlsrec_seal(&w->r, MFD_TLS_HANDSHAKE, ku, KU_LEN,
                           w->out + w->used);
    if (!len || mfd__tlsrec_update(&w->r))
        return tx_fail(w, "KeyUpdate: moving to new keys failed");
    w->used += len;
    return 0;
}

static int tx_flush(int fd, tls_tx *w)
{
    struct iovec v = {w->out, w->used};
    int rc = mfd__sock_writev(fd, &v, 1, 0);
    w->torn = rc != MFD_IO_OK;
    w->used = 0;
    return rc;
}

static int tx_writev(gnutls_session_t sess, tls_tx *w, struct iovec *iov,
                     int iovcnt)
{
    int fd = sess_fd(sess);
    last_why = NULL;
    if (w->torn)
        return (int)fail_why(EPIPE, NULL);
    for (int i = 0; i < iovcnt; i++) {
        const uint8_t *p = iov[i].iov_base;
        size_t left = iov[i].iov_len;
        while (left) {
            size_t n = left < w->max ? left : w->max;
            if (w->used + n + 2 * MFD_TLS_OVERHEAD + KU_LEN > TX_BYTES &&
                tx_flush(fd, w))
                return MFD_IO_ERROR;
            if (tx_seal(w, MFD_TLS_DATA, p, n))
                return MFD_IO_ERROR;
            p += n;
            left -= n;
        }
    }
    return w->used ? tx_flush(fd, w) : MFD_IO_OK;
}

int mfd__tls_direct_send(void *t)
{
    gnutls_session_t sess = t;
    tls_chan *c = chan_of(sess);
    if (c->tx)
        return 1;
    /* Kernel TLS would seal our records once more. */
    tls_tx *w = gnutls_transport_is_ktls_enabled(sess) & GNUTLS_KTLS_SEND
                    ? NULL
                    : malloc(sizeof(*w));
    if (!w || mfd__tlsrec_init(&w->r, sess, false, c->secret, c->secret_len)) {
        free(w);
        wipe_secret(c);
        return 0;
    }
    wipe_secret(c);
    w->max = c->peer_limit ? c->peer_limit : MFD_TLS_MAX_PLAIN;
    w->used = 0;
    w->torn = false;
    c->tx = w;
    return 1;
}

int mfd__tls_direct(void *t)
{
    tls_chan *c = chan_of(t);
    return (c->rx ? 1 : 0) | (c->tx ? 2 : 0);
}

/* close_notify from our own records, if the socket takes it now. */
static void tx_bye(gnutls_session_t sess, tls_tx *w)
{
    static const uint8_t alert[2] = {1, GNUTLS_A_CLOSE_NOTIFY};
    if (w->torn || w->used)
        return;
    size_t len = mfd__tlsrec_seal(&w->r, MFD_TLS_ALERT, alert, 2, w->out);
    if (len) {
        ssize_t n = send(sess_fd(sess), w->out, len, MSG_DONTWAIT | MSG_NOSIGNAL);
        (void)n;
    }
}

/* ---- sessions: end, read, write ---------------------------------------- */

/*
 * The server's record size limit (RFC 8449), from its EncryptedExtensions:
 * what our own records may carry. With TLS 1.3 it counts the content type
 * byte. (gnutls_record_get_max_size gives our own limit, not the peer's.)
 */
static int ee_ext(void *ctx, unsigned tls_id, const unsigned char *data,
                  unsigned size)
{
    tls_chan *c = ctx;
    if (tls_id == 28 && size == 2) {
        size_t limit = (size_t)data[0] << 8 | data[1];
        c->peer_limit = limit > 1 && limit - 1 < MFD_TLS_MAX_PLAIN ? limit - 1
                                                                   : 0;
    }
    return 0;
}

static int ee_hook(gnutls_session_t sess, unsigned htype, unsigned when,
                   unsigned incoming, const gnutls_datum_t *msg)
{
    (void)when;
    if (htype == GNUTLS_HANDSHAKE_ENCRYPTED_EXTENSIONS && incoming && msg)
        gnutls_ext_raw_parse(chan_of(sess), ee_ext, msg, 0);
    return 0;
}

static void session_free(gnutls_session_t sess)
{
    tls_chan *c = chan_of(sess);
    gnutls_deinit(sess);
    if (!c)
        return;
    if (c->rx)
        mfd__tlsrec_free(&c->rx->r);
    if (c->tx)
        mfd__tlsrec_free(&c->tx->r);
    free(c->rx);
    free(c->tx);
    free(c->ra);
    gnutls_memset(c, 0, sizeof(*c));
    free(c);
}

void mfd__tls_forget(int fd, bool bye)
{
    gnutls_session_t sess = mfd__tls_of(fd);
    if (!sess)
        return;
    __atomic_store_n(&by_fd[fd], NULL, __ATOMIC_RELEASE);
    tls_chan *c = chan_of(sess);
    if (bye && c->tx) {
        tx_bye(sess, c->tx);
    } else if (bye) {
        /* close_notify if the socket takes it now: never wait for a peer. */
        push_flags = MSG_DONTWAIT;
        gnutls_bye(sess, GNUTLS_SHUT_WR);
        push_flags = 0;
    }
    session_free(sess);
}

ssize_t mfd__tls_read(void *t, void *buf, size_t len)
{
    tls_chan *c = chan_of(t);
    last_why = NULL;
    if (c->rx)
        return rx_read(c, buf, len);
    for (;;) {
        ssize_t n = gnutls_record_recv(t, buf, len);
        if (n > 0 && c->ra)
            rx_take_over(t, c);
        if (n >= 0)
            return n;
        if (n == GNUTLS_E_AGAIN || n == GNUTLS_E_INTERRUPTED)
            continue;
        /* A peer gone without close_notify reads as the end. */
        if (n == GNUTLS_E_PREMATURE_TERMINATION)
            return 0;
        if (n == GNUTLS_E_PULL_ERROR)
            return fail_why(ECONNRESET, NULL);
        return fail_why(EPROTO, gnutls_strerror((int)n));
    }
}

/* gnutls_record_send; blocking, or (nb) -1 with errno EAGAIN when full. */
static ssize_t tls_send(void *t, const void *buf, size_t len, bool nb)
{
    int fd = sess_fd(t);
    last_why = NULL;
    for (;;) {
        uint64_t t0 = mfd__now_us();
        push_flags = nb ? MSG_DONTWAIT : 0;
        ssize_t n = gnutls_record_send(t, buf, len);
        push_flags = 0;
        if (n >= 0)
            return n;
        if (n == GNUTLS_E_INTERRUPTED)
            continue;
        /*
         * Blocking: GnuTLS says AGAIN when a send came back short, which a
         * signal does too (a stop and continue of the process); only the
         * send timeout running out (network-timeout on a Unix socket) is a
         * timeout. Otherwise retry with the same data, as GnuTLS requires.
         */
        if (n == GNUTLS_E_AGAIN && !nb && !mfd__send_timed_out(fd, t0))
            continue;
        if (n == GNUTLS_E_AGAIN)
            errno = nb ? EAGAIN : ETIMEDOUT;
        else if (n == GNUTLS_E_PUSH_ERROR)
            errno = EPIPE;
        else
            return fail_why(EPROTO, gnutls_strerror((int)n));
        return -1;
    }
}

/*
 * Each iovec as records of its own (a packet header, then its pages).
 * (Measured and dropped: GnuTLS corking, which copies everything into its
 * buffer first, 0.90 against 1.03 GB/s on 2 channels; TCP_CORK around a
 * packet's records, within the noise.)
 */
int mfd__tls_writev(void *t, struct iovec *iov, int iovcnt)
{
    tls_chan *c = chan_of(t);
    if (c->tx)
        return tx_writev(t, c->tx, iov, iovcnt);
    for (int i = 0; i < iovcnt; i++) {
        const char *p = iov[i].iov_base;
        size_t left = iov[i].iov_len;
        while (left) {
            ssize_t n = tls_send(t, p, left, false);
            if (n < 0)
                return MFD_IO_ERROR;
            p += n;
            left -= (size_t)n;
        }
    }
    return MFD_IO_OK;
}

ssize_t mfd__tls_write_nb(void *t, const void *buf, size_t len)
{
    if (chan_of(t)->tx) /* only blocking writes: a source's data channel */
        return fail_why(EINVAL, NULL);
    return tls_send(t, buf, len, true);
}

bool mfd__tls_pending(void *t)
{
    tls_chan *c = chan_of(t);
    return gnutls_record_check_pending(t) > 0 ||
           (c->ra && c->ra->head != c->ra->tail) || (c->rx && c->rx->left);
}

/* ---- credentials -------------------------------------------------------- */

struct mfd_tls {
    gnutls_certificate_credentials_t x509;
    gnutls_psk_client_credentials_t psk_client;
    gnutls_psk_server_credentials_t psk_server;
    char *psk_lines; /* the keys file, for the server's lookup */
    bool loaded;
};

bool mfd__tls_enabled(const mfd_session *s)
{
    return s->tls_x509_dir || s->tls_psk_file;
}

static char *read_file(const char *path, size_t max)
{
    FILE *f = fopen(path, "r");
    if (!f)
        return NULL;
    char *buf = calloc(1, max + 1);
    size_t n = buf ? fread(buf, 1, max, f) : 0;
    fclose(f);
    if (buf)
        buf[n] = 0;
    return buf;
}

/* Finds `name` in the keys file; the key as bytes (gnutls_malloc'ed). */
static int psk_lookup(const char *lines, const char *name,
                      gnutls_datum_t *key)
{
    size_t nlen = strlen(name);
    for (const char *l = lines; l && *l;) {
        const char *end = strchr(l, '\n');
        size_t len = end ? (size_t)(end - l) : strlen(l);
        if (len > nlen && !strncmp(l, name, nlen) && l[nlen] == ':') {
            gnutls_datum_t hex = {(unsigned char *)l + nlen + 1,
                                  (unsigned)(len - nlen - 1)};
            while (hex.size && (hex.data[hex.size - 1] == '\r' ||
                                hex.data[hex.size - 1] == ' '))
                hex.size--;
            return gnutls_hex_decode2(&hex, key) ? -1 : 0;
        }
        l = end ? end + 1 : NULL;
    }
    return -1;
}

static int psk_server_cb(gnutls_session_t sess, const char *name,
                         gnutls_datum_t *key)
{
    mfd_session *s = chan_of(sess)->s;
    return psk_lookup(s->tls->psk_lines, name, key);
}

static int load_x509(mfd_session *s, bool server)
{
    mfd_tls *t = s->tls;
    char ca[4200], cert[4200], key[4200];
    const char *dir = s->tls_x509_dir, *who = server ? "server" : "client";
    snprintf(ca, sizeof(ca), "%s/ca-cert.pem", dir);
    snprintf(cert, sizeof(cert), "%s/%s-cert.pem", dir, who);
    snprintf(key, sizeof(key), "%s/%s-key.pem", dir, who);
    if (gnutls_certificate_allocate_credentials(&t->x509))
        return mfd__fail(s, MFD_ENOMEM, "out of memory");
    int rc = gnutls_certificate_set_x509_trust_file(t->x509, ca,
                                                     GNUTLS_X509_FMT_PEM);
    if (rc <= 0)
        return mfd__fail(s, MFD_EINVAL, "tls-creds: %s: %s", ca,
                         rc == 0 ? "no certificate in it"
                                 : gnutls_strerror(rc));
    /* A client without a certificate connects anonymously. */
    bool need = server || access(cert, F_OK) == 0;
    if (need && (rc = gnutls_certificate_set_x509_key_file(
                     t->x509, cert, key, GNUTLS_X509_FMT_PEM)) < 0)
        return mfd__fail(s, MFD_EINVAL, "tls-creds: %s / %s: %s", cert, key,
                         gnutls_strerror(rc));
    return 0;
}

static int load_psk(mfd_session *s, bool server)
{
    mfd_tls *t = s->tls;
    if (!(t->psk_lines = read_file(s->tls_psk_file, 1 << 20)))
        return mfd__fail(s, MFD_EINVAL, "tls-psk: %s: %s", s->tls_psk_file,
                         strerror(errno));
    if (server) {
        if (gnutls_psk_allocate_server_credentials(&t->psk_server))
            return mfd__fail(s, MFD_ENOMEM, "out of memory");
        gnutls_psk_set_server_credentials_function(t->psk_server,
                                                   psk_server_cb);
        return 0;
    }
    char name[256];
    const char *colon = strchr(t->psk_lines, ':');
    size_t nlen = colon ? (size_t)(colon - t->psk_lines) : 0;
    gnutls_datum_t key = {0};
    if (!colon || !nlen || nlen >= sizeof(name))
        return mfd__fail(s, MFD_EINVAL,
                         "tls-psk: %s: the first line is not NAME:HEXKEY",
                         s->tls_psk_file);
    memcpy(name, t->psk_lines, nlen);
    name[nlen] = 0;
    if (psk_lookup(t->psk_lines, name, &key))
        return mfd__fail(s, MFD_EINVAL, "tls-psk: %s: key of '%s' is not hex",
                         s->tls_psk_file, name);
    int rc = gnutls_psk_allocate_client_credentials(&t->psk_client);
    if (!rc)
        rc = gnutls_psk_set_client_credentials(t->psk_client, name, &key,
                                               GNUTLS_PSK_KEY_RAW);
    gnutls_free(key.data);
    if (rc)
        return mfd__fail(s, MFD_EINVAL, "tls-psk: %s", gnutls_strerror(rc));
    return 0;
}

const char *mfd__tls_priority_unused(const mfd_session *s)
{
    return s->tls_priority && !mfd__tls_enabled(s)
               ? "tls-priority without tls-creds or tls-psk: there is no TLS "
                 "to use it"
               : NULL;
}

int mfd__tls_setup(mfd_session *s, bool server)
{
    if (s->tls && s->tls->loaded)
        return 0;
    if (!s->tls && !(s->tls = calloc(1, sizeof(*s->tls))))
        return mfd__fail(s, MFD_ENOMEM, "out of memory");
    int rc = s->tls_x509_dir ? load_x509(s, server) : load_psk(s, server);
    if (!rc)
        s->tls->loaded = true;
    return rc;
}

void mfd__tls_free(mfd_session *s)
{
    mfd_tls *t = s->tls;
    if (!t)
        return;
    if (t->x509)
        gnutls_certificate_free_credentials(t->x509);
    if (t->psk_client)
        gnutls_psk_free_client_credentials(t->psk_client);
    if (t->psk_server)
        gnutls_psk_free_server_credentials(t->psk_server);
    free(t->psk_lines);
    free(t);
    s->tls = NULL;
}

/* ---- handshakes -------------------------------------------------------------- */

/*
 * The PSK key exchanges a PSK session adds to a tls-priority string, as
 * QEMU's tls-creds-psk does: each one the string does not name itself
 * (so that "-PSK", say, stays).
 */
static void psk_suffix(const char *priority, char *out, size_t outlen)
{
    static const char *const kx[] = {"ECDHE-PSK", "DHE-PSK", "PSK"};
    size_t n = 0;
    out[0] = 0;
    for (size_t i = 0; i < sizeof(kx) / sizeof(kx[0]); i++) {
        bool named = false;
        for (const char *t = priority; t && *t && !named;) {
            size_t len = strcspn(t, ":");
            named = len == strlen(kx[i]) + 1 && strchr("+-!", *t) &&
                    !strncmp(t + 1, kx[i], len - 1);
            t = t[len] ? t + len + 1 : NULL;
        }
        if (!named && n < outlen)
            n += (size_t)snprintf(out + n, outlen - n, ":+%s", kx[i]);
    }
}

static gnutls_session_t new_session(mfd_session *s, int fd, bool server,
                                    char *err, size_t errlen)
{
    gnutls_session_t sess;
    tls_chan *c = calloc(1, sizeof(*c));
    if (!c || gnutls_init(&sess, (server ? GNUTLS_SERVER : GNUTLS_CLIENT) |
                                     GNUTLS_NO_SIGNAL)) {
        free(c);
        snprintf(err, errlen, "TLS: out of memory");
        return NULL;
    }
    c->s = s;
    gnutls_session_set_ptr(sess, c);
    char prio[1200], psk[64] = "";
    if (s->tls_priority && !s->tls->x509)
        psk_suffix(s->tls_priority, psk, sizeof(psk));
    snprintf(prio, sizeof(prio), "%s%s",
             s->tls_priority ? s->tls_priority : MFD_TLS_PRIORITY, psk);
    const char *where;
    int rc = gnutls_priority_set_direct(sess, prio, &where);
    if (!rc && s->tls->x509)
        rc = gnutls_credentials_set(sess, GNUTLS_CRD_CERTIFICATE,
                                    s->tls->x509);
    else if (!rc)
        rc = gnutls_credentials_set(sess, GNUTLS_CRD_PSK,
                                    server ? (void *)s->tls->psk_server
                                           : (void *)s->tls->psk_client);
    if (rc) {
        snprintf(err, errlen, "TLS: %s", gnutls_strerror(rc));
        session_free(sess);
        return NULL;
    }
    c->keylog = gnutls_session_get_keylog_function(sess);
    gnutls_session_set_keylog_function(sess, keylog);
    if (!server)
        gnutls_handshake_set_hook_function(
            sess, GNUTLS_HANDSHAKE_ENCRYPTED_EXTENSIONS, GNUTLS_HOOK_POST,
            ee_hook);
    gnutls_transport_set_int(sess, fd);
    gnutls_transport_set_vec_push_function(sess, push_vec);
    gnutls_handshake_set_timeout(sess, (unsigned)s->handshake_timeout);
    return sess;
}

static int handshake(gnutls_session_t sess)
{
    int rc;
    do
        rc = gnutls_handshake(sess);
    while (rc < 0 && !gnutls_error_is_fatal(rc));
    return rc;
}

/*
 * PROTOCOL.md 6: TLS 1.3, or 1.2 with an AEAD cipher, whatever a
 * tls-priority string let through. 0, or -1 with why in err.
 */
static int check_negotiated(gnutls_session_t sess, char *err, size_t errlen)
{
    gnutls_protocol_t v = gnutls_protocol_get_version(sess);
    gnutls_cipher_algorithm_t c = gnutls_cipher_get(sess);
    /* An AEAD with a full tag: not CBC, not CCM-8's 8 bytes. */
    if ((v == GNUTLS_TLS1_3 || v == GNUTLS_TLS1_2) &&
        gnutls_cipher_get_tag_size(c) >= 16)
        return 0;
    snprintf(err, errlen,
             "TLS: the handshake agreed on %s with %s; multifd takes TLS 1.3, "
             "or TLS 1.2, with an AEAD cipher of a 16-byte tag "
             "(tls-priority)",
             gnutls_protocol_get_name(v), gnutls_cipher_get_name(c));
    return -1;
}

/*
 * Keywords of a priority string that weaken how certificates are checked
 * (an older signature algorithm, a broken one, no CRL checks, a low
 * security profile): the channel's authentication is not the string's to
 * lower.
 */
static const char *const weakening[] = {
    "%VERIFY_ALLOW", "%VERIFY_DISABLE", "%PROFILE_VERY_WEAK", "%PROFILE_LOW",
    "%NO_SESSION_HASH",
};

int mfd__tls_priority_check(const char *priority, char *err, size_t errlen)
{
    if (!*priority) {
        snprintf(err, errlen, "empty");
        return -1;
    }
    for (size_t i = 0; i < sizeof(weakening) / sizeof(weakening[0]); i++) {
        const char *w = strstr(priority, weakening[i]);
        if (w) {
            snprintf(err, errlen,
                     "'%.*s' weakens how peers are authenticated; multifd "
                     "does not take it",
                     (int)strcspn(w, ":"), w);
            return -1;
        }
    }
    gnutls_priority_t p;
    const char *where = NULL;
    int rc = gnutls_priority_init2(&p, priority, &where, 0);
    if (!rc) {
        gnutls_priority_deinit(p);
        return 0;
    }
    /* GnuTLS points at the keyword it could not take. */
    if (rc == GNUTLS_E_INVALID_REQUEST && where && where > priority &&
        where < priority + strlen(priority))
        snprintf(err, errlen, "'%s': GnuTLS stops at '%.*s'", priority,
                 (int)strcspn(where, ":"), where);
    else
        snprintf(err, errlen, "'%s': %s", priority, gnutls_strerror(rc));
    return -1;
}


/* Why a certificate check failed, in GnuTLS's words. */
static void verify_reason(gnutls_session_t sess, const char *who, int rc,
                          char *err, size_t errlen)
{
    unsigned status = gnutls_session_get_verify_cert_status(sess);
    gnutls_datum_t out = {0};
    if (rc == GNUTLS_E_CERTIFICATE_VERIFICATION_ERROR && status &&
        gnutls_certificate_verification_status_print(
            status, GNUTLS_CRT_X509, &out, 0) == 0) {
        snprintf(err, errlen, "TLS: the %s's certificate was refused: %s",
                 who, out.data);
        gnutls_free(out.data);
        return;
    }
    snprintf(err, errlen, "TLS handshake failed: %s", gnutls_strerror(rc));
}

int mfd__tls_client(mfd_session *s, int fd, const char *hostname, char *err,
                    size_t errlen)
{
    gnutls_session_t sess = new_session(s, fd, false, err, errlen);
    if (!sess)
        return -1;
    if (s->tls->x509) {
        if (hostname)
            gnutls_server_name_set(sess, GNUTLS_NAME_DNS, hostname,
                                   strlen(hostname));
        gnutls_session_set_verify_cert(sess, hostname, 0);
    }
    int rc = handshake(sess);
    if (rc >= 0 && check_negotiated(sess, err, errlen)) {
        gnutls_bye(sess, GNUTLS_SHUT_WR);
        session_free(sess);
        return -1;
    }
    if (rc < 0) {
        if (rc == GNUTLS_E_DECRYPTION_FAILED || rc == GNUTLS_E_MAC_VERIFY_FAILED)
            snprintf(err, errlen, "TLS handshake failed: %s (PSK mismatch?)",
                     gnutls_strerror(rc));
        else
            verify_reason(sess, "server", rc, err, errlen);
        session_free(sess);
        return -1;
    }
    if (register_fd(fd, sess)) {
        snprintf(err, errlen, "TLS: descriptor %d out of range", fd);
        session_free(sess);
        return -1;
    }
    return 0;
}

/* The client's DN must be in the tls-authz list (when there is one). */
static int check_authz(mfd_session *s, gnutls_session_t sess, char *err,
                       size_t errlen)
{
    if (!s->tls_nauthz)
        return 0;
    unsigned n = 0;
    const gnutls_datum_t *certs = gnutls_certificate_get_peers(sess, &n);
    gnutls_x509_crt_t crt;
    gnutls_datum_t dn = {0};
    if (!certs || !n || gnutls_x509_crt_init(&crt)) {
        snprintf(err, errlen, "TLS: tls-authz: the client sent no certificate");
        return -1;
    }
    int rc = gnutls_x509_crt_import(crt, &certs[0], GNUTLS_X509_FMT_DER);
    if (!rc)
        rc = gnutls_x509_crt_get_dn3(crt, &dn, 0);
    gnutls_x509_crt_deinit(crt);
    if (rc) {
        snprintf(err, errlen, "TLS: tls-authz: %s", gnutls_strerror(rc));
        return -1;
    }
    bool ok = false;
    for (int i = 0; i < s->tls_nauthz && !ok; i++)
        ok = !strcmp(s->tls_authz[i], (const char *)dn.data);
    if (!ok)
        snprintf(err, errlen, "TLS: client '%s' is not in the tls-authz list",
                 dn.data);
    gnutls_free(dn.data);
    return ok ? 0 : -1;
}

int mfd__tls_server(mfd_session *s, int fd, char *err, size_t errlen)
{
    gnutls_session_t sess = new_session(s, fd, true, err, errlen);
    if (!sess)
        return -1;
    if (s->tls->x509 && (s->tls_verify_peer || s->tls_nauthz)) {
        gnutls_certificate_server_set_request(sess, GNUTLS_CERT_REQUIRE);
        gnutls_session_set_verify_cert(sess, NULL, 0);
    }
    int rc = handshake(sess);
    if (rc < 0) {
        if (rc == GNUTLS_E_NO_CERTIFICATE_FOUND ||
            rc == GNUTLS_E_CERTIFICATE_REQUIRED)
            snprintf(err, errlen, "TLS: the client sent no certificate "
                     "(tls-verify-peer requires one)");
        else
            verify_reason(sess, "client", rc, err, errlen);
        session_free(sess);
        return -1;
    }
    bool refused = check_negotiated(sess, err, errlen) != 0 ||
                   check_authz(s, sess, err, errlen) != 0;
    if (!refused && register_fd(fd, sess)) {
        snprintf(err, errlen, "TLS: descriptor %d out of range", fd);
        refused = true;
    }
    if (refused) {
        gnutls_bye(sess, GNUTLS_SHUT_WR);
        session_free(sess);
        return -1;
    }
    return 0;
}
