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

/* ---- read-ahead --------------------------------------------------------- */

/*
 * GnuTLS reads a record's header and then its body, each with a read of
 * the socket that returns as soon as any of it is there: about two reads
 * and a wake-up per 16 KiB record. A destination's data channel knows how
 * many plaintext bytes its peer owes it next (the rest of a header or of
 * a payload), so it waits with the receive low-water mark of sock.c until
 * the ciphertext of nearly all of them is there, takes it in one read into
 * a buffer of its own, and hands it to GnuTLS from there.
 *
 * The mark never asks for more than the peer must send: GnuTLS asks the
 * transport only for bytes of the record it is reading, and of the bytes
 * promised, those of that record may already be with GnuTLS (at most one
 * record's plaintext: RA_SLACK). A session with read-ahead has this as its
 * receive pointer and the fd as its send pointer (gnutls_transport_set_ptr2).
 */
#define RA_BYTES (1u << 20)
#define RA_SLACK 16384u

typedef struct {
    int fd;
    int mark;        /* SO_RCVLOWAT now on fd */
    size_t promised; /* plaintext bytes the reader is owed next */
    size_t head, tail;
    uint8_t buf[RA_BYTES];
} tls_ra;

static tls_ra *ra_of(gnutls_session_t sess)
{
    gnutls_transport_ptr_t r, w;
    gnutls_transport_get_ptr2(sess, &r, &w);
    return r != w ? r : NULL;
}

static int ra_fd(gnutls_session_t sess)
{
    gnutls_transport_ptr_t r, w;
    gnutls_transport_get_ptr2(sess, &r, &w);
    return (int)(intptr_t)w;
}

/* Fills the empty buffer with what is there, or waits for `need` bytes. */
static ssize_t ra_fill(tls_ra *ra, size_t need)
{
    ra->head = ra->tail = 0;
    ssize_t n;
    do
        n = mfd__sock_read_lowat(ra->fd, &ra->mark, ra->buf, RA_BYTES, need);
    while (n < 0 && errno == EINTR);
    if (n > 0)
        ra->tail = (size_t)n;
    return n;
}

static ssize_t ra_pull(gnutls_transport_ptr_t p, void *data, size_t len)
{
    tls_ra *ra = p;
    if (ra->head == ra->tail) {
        size_t need = ra->promised > RA_SLACK ? ra->promised - RA_SLACK : 0;
        need = need > len ? need : len;
        ssize_t n = ra_fill(ra, need < RA_BYTES ? need : RA_BYTES);
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

int mfd__tls_readahead(void *t)
{
    gnutls_session_t sess = t;
    if (ra_of(sess))
        return 1;
    /* Kernel TLS reads the socket itself, by the receive pointer. */
    if (gnutls_transport_is_ktls_enabled(sess) & GNUTLS_KTLS_RECV)
        return 0;
    tls_ra *ra = malloc(sizeof(*ra));
    if (!ra)
        return 0;
    ra->fd = ra_fd(sess);
    ra->mark = 1;
    ra->promised = 0;
    ra->head = ra->tail = 0;
    if (setsockopt(ra->fd, SOL_SOCKET, SO_RCVLOWAT, &ra->mark,
                   sizeof(ra->mark))) {
        free(ra);
        return 0;
    }
    gnutls_transport_set_ptr2(sess, ra,
                              (gnutls_transport_ptr_t)(intptr_t)ra->fd);
    gnutls_transport_set_pull_function(sess, ra_pull);
    gnutls_transport_set_pull_timeout_function(sess, ra_pull_timeout);
    return 1;
}

void mfd__tls_promise(void *t, size_t plaintext)
{
    tls_ra *ra = ra_of(t);
    if (ra)
        ra->promised = plaintext;
}

void mfd__tls_forget(int fd, bool bye)
{
    gnutls_session_t sess = mfd__tls_of(fd);
    if (!sess)
        return;
    __atomic_store_n(&by_fd[fd], NULL, __ATOMIC_RELEASE);
    if (bye) {
        /* close_notify if the socket takes it now: never wait for a peer. */
        push_flags = MSG_DONTWAIT;
        gnutls_bye(sess, GNUTLS_SHUT_WR);
        push_flags = 0;
    }
    tls_ra *ra = ra_of(sess);
    gnutls_deinit(sess);
    free(ra);
}

ssize_t mfd__tls_read(void *t, void *buf, size_t len)
{
    for (;;) {
        ssize_t n = gnutls_record_recv(t, buf, len);
        if (n >= 0)
            return n;
        if (n == GNUTLS_E_AGAIN || n == GNUTLS_E_INTERRUPTED)
            continue;
        /* A peer gone without close_notify reads as the end. */
        if (n == GNUTLS_E_PREMATURE_TERMINATION)
            return 0;
        errno = n == GNUTLS_E_PULL_ERROR ? ECONNRESET : EPROTO;
        return -1;
    }
}

/* gnutls_record_send; blocking, or (nb) -1 with errno EAGAIN when full. */
static ssize_t tls_send(void *t, const void *buf, size_t len, bool nb)
{
    int fd = ra_fd(t);
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
        else
            errno = n == GNUTLS_E_PUSH_ERROR ? EPIPE : EPROTO;
        return -1;
    }
}

ssize_t mfd__tls_write(void *t, const void *buf, size_t len)
{
    return tls_send(t, buf, len, false);
}

ssize_t mfd__tls_write_nb(void *t, const void *buf, size_t len)
{
    return tls_send(t, buf, len, true);
}

bool mfd__tls_pending(void *t)
{
    tls_ra *ra = ra_of(t);
    return gnutls_record_check_pending(t) > 0 || (ra && ra->head != ra->tail);
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
    mfd_session *s = gnutls_session_get_ptr(sess);
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

static gnutls_session_t new_session(mfd_session *s, int fd, bool server,
                                    char *err, size_t errlen)
{
    gnutls_session_t sess;
    if (gnutls_init(&sess, (server ? GNUTLS_SERVER : GNUTLS_CLIENT) |
                             GNUTLS_NO_SIGNAL)) {
        snprintf(err, errlen, "TLS: out of memory");
        return NULL;
    }
    const char *where;
    int rc = gnutls_priority_set_direct(sess, MFD_TLS_PRIORITY, &where);
    if (!rc && s->tls->x509)
        rc = gnutls_credentials_set(sess, GNUTLS_CRD_CERTIFICATE,
                                    s->tls->x509);
    else if (!rc)
        rc = gnutls_credentials_set(sess, GNUTLS_CRD_PSK,
                                    server ? (void *)s->tls->psk_server
                                           : (void *)s->tls->psk_client);
    if (rc) {
        snprintf(err, errlen, "TLS: %s", gnutls_strerror(rc));
        gnutls_deinit(sess);
        return NULL;
    }
    gnutls_session_set_ptr(sess, s);
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
    if (rc < 0) {
        if (rc == GNUTLS_E_DECRYPTION_FAILED || rc == GNUTLS_E_MAC_VERIFY_FAILED)
            snprintf(err, errlen, "TLS handshake failed: %s (PSK mismatch?)",
                     gnutls_strerror(rc));
        else
            verify_reason(sess, "server", rc, err, errlen);
        gnutls_deinit(sess);
        return -1;
    }
    if (register_fd(fd, sess)) {
        snprintf(err, errlen, "TLS: descriptor %d out of range", fd);
        gnutls_deinit(sess);
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
        gnutls_deinit(sess);
        return -1;
    }
    bool refused = check_authz(s, sess, err, errlen) != 0;
    if (!refused && register_fd(fd, sess)) {
        snprintf(err, errlen, "TLS: descriptor %d out of range", fd);
        refused = true;
    }
    if (refused) {
        gnutls_bye(sess, GNUTLS_SHUT_WR);
        gnutls_deinit(sess);
        return -1;
    }
    return 0;
}
