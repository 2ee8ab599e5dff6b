/*
 * session.c - the session object: parameters, blocks, errors, the main
 * channel's record I/O, and statistics. Everything here is shared by the
 * source and the destination.
 */
#include "core/session.h"
#include "file/file.h"

#include <ctype.h>
#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#include "common/util.h"
#include "ram/bitmap.h"
#include "ram/zero.h"
#include "transport/transport.h"
#include "transport/tls.h"

/* ---- versions and error codes ---------------------------------------- */

MFD_API unsigned mfd_version_number(void)
{
    return MFD_VERSION_NUMBER;
}

#define STR2(x) #x
#define STR(x) STR2(x)
MFD_API const char *mfd_version_string(void)
{
    return STR(MFD_VERSION_MAJOR) "." STR(MFD_VERSION_MINOR) "." STR(
        MFD_VERSION_PATCH);
}

MFD_API const char *mfd_strerror(int err)
{
    if (err < 0)
        err = -err;
    switch (err) {
    case 0:
        return "success";
#define ERR_MSG(name, val, msg)                                                \
    case val:                                                                  \
        return msg;
        MFD_ERRNO_MAP(ERR_MSG)
#undef ERR_MSG
    default:
        return "unknown error";
    }
}

MFD_API const char *mfd_err_name(int err)
{
    if (err < 0)
        err = -err;
    switch (err) {
    case 0:
        return "MFD_OK";
#define ERR_NAME(name, val, msg)                                               \
    case val:                                                                  \
        return "MFD_E" #name;
        MFD_ERRNO_MAP(ERR_NAME)
#undef ERR_NAME
    default:
        return "MFD_E?";
    }
}

/* ---- session ----------------------------------------------------------- */

MFD_API mfd_session *mfd_session_new(void)
{
    mfd_session *s = calloc(1, sizeof(*s));
    if (!s)
        return NULL;
    s->channels = 2;
    s->zpd = MFD_ZPD_MULTIFD;
    s->page_size = 4096;
    s->handshake_timeout = 10000;
    s->downtime_limit = 300;
    s->throttle_initial = 20;
    s->throttle_increment = 10;
    s->throttle_max = 99;
    s->network_timeout = 10000;
    s->zlib_level = 1;
    s->zstd_level = 1;
    s->lz4_accel = 1;
    s->accept_compression = 0xF; /* every method built in */
    s->ckpt_interval = 600;
    s->hb_interval = 100;
    s->hb_timeout = 2000;
    s->colo_staging = 1;
    s->idle_timeout = 60000;
    s->tls_verify_peer = 1;
    pthread_mutex_init(&s->main_wlock, NULL);
    mfd__cond_init(&s->hb_cond);
    pthread_mutex_init(&s->rl_lock, NULL);
    s->main_fd = s->listen_fd = s->wake_fd = s->uffd = -1;
    s->log_fn = NULL;
    s->log_opaque = s; /* marks "default logger": see mfd__log */
    pthread_mutex_init(&s->err_lock, NULL);
    pthread_mutex_init(&s->lock, NULL);
    mfd__cond_init(&s->cond);
    pthread_mutex_init(&s->sync_lock, NULL);
    mfd__cond_init(&s->sync_cond);
    /* Lets mfd_cancel() and failures interrupt waits on the main channel. */
    s->wake_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    return s;
}

static void free_blocks(mfd_session *s)
{
    for (int i = 0; i < s->nblocks; i++) {
        mfd_block *b = &s->blocks[i];
        if (b->mapped && b->host)
            munmap(b->host, b->length);
        if (b->fd >= 0)
            close(b->fd);
        free(b->receivedmap);
        free(b->dirty);
        free(b->marked);
        free(b->untouched);
        free(b->zero_hint);
        if (b->shadow)
            munmap(b->shadow, b->length);
        if (b->replica)
            munmap(b->replica, b->length);
        free(b->ckpt_map);
        free(b->ckpt_zero);
        free(b->replica_map);
        free(b->name);
    }
    free(s->blocks);
    s->blocks = NULL;
    s->nblocks = 0;
}

MFD_API void mfd_session_free(mfd_session *s)
{
    if (!s)
        return;
    mfd__session_release_runtime(s);
    for (uint32_t i = 0; s->sc && i < s->nchan; i++) {
        pthread_mutex_destroy(&s->sc[i].lock);
        pthread_cond_destroy(&s->sc[i].cond);
        sem_destroy(&s->sc[i].sem_sync);
    }
    if (s->sem_inited)
        sem_destroy(&s->channels_ready);
    free(s->sc);
    free(s->rc);
    free_blocks(s);
    if (s->uffd >= 0)
        close(s->uffd);
    if (s->listen_fd >= 0) {
        close(s->listen_fd);
        if (!strncmp(s->listen_uri, "unix:", 5))
            unlink(s->listen_uri + 5);
    }
    if (s->wake_fd >= 0)
        close(s->wake_fd);
    free(s->incoming_dir);
    for (int i = 0; i < s->nfiles; i++) {
        free(s->files[i].block);
        free(s->files[i].path);
    }
    free(s->files);
    if (!s->device_state_borrowed)
        free(s->device_state);
    free(s->colo_dev);
    mfd__tls_free(s);
    free(s->tls_x509_dir);
    free(s->tls_psk_file);
    free(s->tls_hostname);
    free(s->tls_priority);
    for (int i = 0; i < s->tls_nauthz; i++)
        free(s->tls_authz[i]);
    free(s->tls_authz);
    pthread_mutex_destroy(&s->main_wlock);
    pthread_cond_destroy(&s->hb_cond);
    pthread_mutex_destroy(&s->err_lock);
    pthread_mutex_destroy(&s->lock);
    pthread_cond_destroy(&s->cond);
    pthread_mutex_destroy(&s->sync_lock);
    pthread_cond_destroy(&s->sync_cond);
    free(s);
}

MFD_API const char *mfd_last_error(const mfd_session *s)
{
    return s ? s->err_msg : "no session";
}

MFD_API void mfd_set_log(mfd_session *s, mfd_log_fn fn, void *opaque)
{
    s->log_fn = fn;
    s->log_opaque = fn ? opaque : NULL;
}

/*
 * The UTF-8 sequence at m: its length, its code point in *cp; 0 if the
 * bytes are not a valid, shortest-form sequence (a stray continuation
 * byte, a truncated sequence, a surrogate, beyond U+10FFFF).
 */
static size_t utf8_seq(const unsigned char *m, uint32_t *cp)
{
    static const uint32_t min[5] = {0, 0, 0x80, 0x800, 0x10000};
    size_t n = m[0] >= 0xf0 ? 4 : m[0] >= 0xe0 ? 3 : m[0] >= 0xc0 ? 2 : 0;
    if (!n || m[0] > 0xf4)
        return 0;
    uint32_t c = m[0] & (0x7f >> n);
    for (size_t i = 1; i < n; i++) {
        if ((m[i] & 0xc0) != 0x80) /* the terminating NUL stops here too */
            return 0;
        c = c << 6 | (m[i] & 0x3f);
    }
    if (c < min[n] || c > 0x10ffff || (c >= 0xd800 && c <= 0xdfff))
        return 0;
    *cp = c;
    return n;
}

/* A code point above ASCII that may be shown as it is (mfd__sanitize). */
static bool shown_safely(uint32_t cp)
{
    return cp > 0x9f && cp != 0x61c && !(cp >= 0x200b && cp <= 0x200f) &&
           !(cp >= 0x2028 && cp <= 0x202e) &&
           !(cp >= 0x2060 && cp <= 0x2069) && cp != 0xfeff;
}

/*
 * Messages may quote a peer's bytes (its ERROR text, a block name): control
 * characters become '?', so a hostile peer can neither forge lines of our
 * log nor drive the terminal it is printed on. That takes the C0 controls
 * and DEL, the C1 controls (U+0080..U+009F: a terminal may take U+009B as
 * CSI, whether it comes UTF-8 encoded or as the raw byte 0x9b), the
 * invisible characters that reorder or break a line as it is shown (the
 * bidirectional marks, embeddings, overrides and isolates, the line and
 * paragraph separators, zero-width spaces and the BOM), and any byte
 * that is not part of valid UTF-8; other UTF-8 text is kept.
 */
void mfd__sanitize(char *msg)
{
    unsigned char *r = (unsigned char *)msg, *w = r;
    while (*r) {
        uint32_t cp = 0;
        size_t n = *r < 0x80 ? 1 : utf8_seq(r, &cp);
        bool ok = n == 1 ? *r >= 0x20 && *r != 0x7f : n && shown_safely(cp);
        if (ok)
            memmove(w, r, n); /* w <= r: never ahead of what it reads */
        else
            *w = '?';
        w += ok ? n : 1;
        r += n ? n : 1;
    }
    *w = '\0';
}

const char *mfd__peer_text(char *buf, const uint8_t *p, uint32_t n)
{
    uint32_t k = MFD_MIN(n, MFD_MSG_MAX);
    for (uint32_t i = 0; i < k; i++)
        buf[i] = p[i] ? (char)p[i] : '?';
    buf[k] = '\0';
    return buf;
}

void mfd__log(mfd_session *s, const char *fmt, ...)
{
    char line[1200];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(line, sizeof(line), fmt, ap);
    va_end(ap);
    mfd__sanitize(line);
    if (s->log_fn)
        s->log_fn(s->log_opaque, line);
    else if (s->log_opaque == s)
        fprintf(stderr, "multifd: %s\n", line);
}

static void set_error_v(mfd_session *s, int code, const char *fmt, va_list ap)
{
    s->err_code = code;
    vsnprintf(s->err_msg, sizeof(s->err_msg), fmt, ap);
    mfd__sanitize(s->err_msg);
}

int mfd__set_error(mfd_session *s, int code, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    pthread_mutex_lock(&s->err_lock);
    set_error_v(s, code, fmt, ap);
    pthread_mutex_unlock(&s->err_lock);
    va_end(ap);
    return -code;
}

void mfd__set_chan_fd(mfd_session *s, int *slot, int fd)
{
    pthread_mutex_lock(&s->lock);
    *slot = fd;
    bool failed = mfd__failed(s);
    pthread_mutex_unlock(&s->lock);
    /* A failure that came first found no socket here to shut down. */
    if (failed)
        shutdown(fd, SHUT_RDWR);
}

void mfd__close_chan_fd(mfd_session *s, int *slot)
{
    /* Unpublished first, so a late mfd_cancel never shuts a reused fd. */
    pthread_mutex_lock(&s->lock);
    int fd = *slot;
    *slot = -1;
    pthread_mutex_unlock(&s->lock);
    mfd__sock_close(fd);
}

/* Unblocks every thread that may be waiting on the session. */
static void wake_all(mfd_session *s)
{
    /* The channel arrays and sockets are published under s->lock. */
    pthread_mutex_lock(&s->lock);
    mfd_send_chan *sc = s->sc;
    mfd_recv_chan *rc = s->rc;
    uint32_t n = s->nchan;
    bool sem = s->sem_inited;
    for (uint32_t i = 0; sc && i < n; i++)
        if (sc[i].fd >= 0)
            shutdown(sc[i].fd, SHUT_RDWR);
    for (uint32_t i = 0; rc && i < n; i++)
        if (rc[i].fd >= 0)
            shutdown(rc[i].fd, SHUT_RDWR);
    pthread_mutex_unlock(&s->lock);
    for (uint32_t i = 0; sc && i < n; i++) {
        sem_post(&sc[i].sem_sync);
        pthread_mutex_lock(&sc[i].lock);
        pthread_cond_broadcast(&sc[i].cond);
        pthread_mutex_unlock(&sc[i].lock);
    }
    if (sem)
        sem_post(&s->channels_ready);
    pthread_mutex_lock(&s->lock);
    pthread_cond_broadcast(&s->cond);
    pthread_mutex_unlock(&s->lock);
    pthread_mutex_lock(&s->sync_lock);
    pthread_cond_broadcast(&s->sync_cond);
    pthread_mutex_unlock(&s->sync_lock);
    if (s->wake_fd >= 0) {
        uint64_t one = 1;
        if (write(s->wake_fd, &one, sizeof(one)) < 0) {
            /* The eventfd only fails when its counter would overflow. */
        }
    }
}

static int fail_v(mfd_session *s, bool from_peer, int code, const char *fmt,
                  va_list ap)
{
    pthread_mutex_lock(&s->err_lock);
    bool first = !s->failed;
    /*
     * The first error wins, with one exception: a peer that cancels or
     * fails closes its channels, and a channel may see that close before
     * the main channel delivers the reason. The reason replaces the close.
     */
    if (first || (from_peer && s->err_code == MFD_ECLOSED)) {
        set_error_v(s, code, fmt, ap);
        s->err_from_peer = from_peer;
        MFD_STAT_SET(s->status, 4);
        __atomic_store_n(&s->failed, 1, __ATOMIC_RELEASE);
    }
    pthread_mutex_unlock(&s->err_lock);
    if (first)
        wake_all(s);
    return -code;
}

int mfd__error_code(mfd_session *s)
{
    pthread_mutex_lock(&s->err_lock);
    int code = s->err_code;
    pthread_mutex_unlock(&s->err_lock);
    return code;
}

int mfd__fail(mfd_session *s, int code, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int rc = fail_v(s, false, code, fmt, ap);
    va_end(ap);
    return rc;
}

int mfd__fail_peer(mfd_session *s, int code, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int rc = fail_v(s, true, code, fmt, ap);
    va_end(ap);
    return rc;
}

MFD_API int mfd_cancel(mfd_session *s)
{
    if (!s)
        return -MFD_EINVAL;
    /*
     * A finished migration stays finished, and so does one whose DONE
     * arrived: the destination owns the memory from then on.
     */
    if (MFD_STAT_GET(s->status) == 3)
        return 0;
    pthread_mutex_lock(&s->lock);
    bool done = s->done_received;
    pthread_mutex_unlock(&s->lock);
    if (done)
        return 0;
    mfd__fail(s, MFD_ECANCELED, "migration cancelled");
    return 0;
}

/* ---- parameters -------------------------------------------------------- */

typedef struct {
    mfd_param id;
    const char *name;
    int64_t min, max;
    size_t field;
} param_desc;

#define PF(f) offsetof(struct mfd_session, f)
static const param_desc params[] = {
    {MFD_PARAM_CHANNELS, "multifd-channels", 1, 255, PF(channels)},
    {MFD_PARAM_ZERO_PAGE_DETECTION, "zero-page-detection", 0, 2, PF(zpd)},
    {MFD_PARAM_PAGE_SIZE, "page-size", 4096, 65536, PF(page_size)},
    {MFD_PARAM_CRC, "crc", 0, 1, PF(crc)},
    {MFD_PARAM_VERIFY, "verify", 0, 1, PF(verify)},
    {MFD_PARAM_PREALLOC, "prealloc", 0, 1, PF(prealloc)},
    {MFD_PARAM_MAX_TOTAL_SIZE, "max-total-size", 0, INT64_C(1) << 60,
     PF(max_total_size)},
    {MFD_PARAM_DIRTY_TRACKER, "dirty-tracker", 0, 2, PF(dirty_tracker)},
    {MFD_PARAM_DOWNTIME_LIMIT, "downtime-limit", 1, 2000000,
     PF(downtime_limit)},
    {MFD_PARAM_MAX_BANDWIDTH, "max-bandwidth", 0, INT64_C(1) << 50,
     PF(max_bandwidth)},
    {MFD_PARAM_MAX_ITERATIONS, "max-iterations", 0, 1000000,
     PF(max_iterations)},
    {MFD_PARAM_AUTO_CONVERGE, "auto-converge", 0, 1, PF(auto_converge)},
    {MFD_PARAM_CPU_THROTTLE_INITIAL, "cpu-throttle-initial", 1, 99,
     PF(throttle_initial)},
    {MFD_PARAM_CPU_THROTTLE_INCREMENT, "cpu-throttle-increment", 1, 99,
     PF(throttle_increment)},
    {MFD_PARAM_MAX_CPU_THROTTLE, "max-cpu-throttle", 1, 99, PF(throttle_max)},
    {MFD_PARAM_NETWORK_TIMEOUT, "network-timeout", 0, 3600000,
     PF(network_timeout)},
    {MFD_PARAM_COMPRESSION, "multifd-compression", 0, 3, PF(compression)},
    {MFD_PARAM_ZLIB_LEVEL, "multifd-zlib-level", 0, 9, PF(zlib_level)},
    {MFD_PARAM_ZSTD_LEVEL, "multifd-zstd-level", 1, 20, PF(zstd_level)},
    {MFD_PARAM_LZ4_ACCELERATION, "multifd-lz4-acceleration", 1, 65537,
     PF(lz4_accel)},
    {MFD_PARAM_ACCEPT_COMPRESSION, "accept-compression", 1, 0xF,
     PF(accept_compression)},
    {MFD_PARAM_ZERO_COPY_SEND, "zero-copy-send", 0, 1, PF(zero_copy_send)},
    {MFD_PARAM_DIRECT_IO, "direct-io", 0, 1, PF(direct_io)},
    {MFD_PARAM_COLO, "x-colo", 0, 1, PF(colo)},
    {MFD_PARAM_CHECKPOINT_INTERVAL, "checkpoint-interval", 1, 3600000,
     PF(ckpt_interval)},
    {MFD_PARAM_HEARTBEAT_INTERVAL, "heartbeat-interval", 1, 60000,
     PF(hb_interval)},
    {MFD_PARAM_HEARTBEAT_TIMEOUT, "heartbeat-timeout", 1, 3600000,
     PF(hb_timeout)},
    {MFD_PARAM_COLO_STAGING, "colo-staging", 0, 1, PF(colo_staging)},
    {MFD_PARAM_IDLE_TIMEOUT, "idle-timeout", 0, 86400000, PF(idle_timeout)},
    {MFD_PARAM_TLS_VERIFY_PEER, "tls-verify-peer", 0, 1, PF(tls_verify_peer)},
    {MFD_PARAM_HANDSHAKE_TIMEOUT, "handshake-timeout", 1, 3600000,
     PF(handshake_timeout)},
};

static const param_desc *param_find(mfd_param p)
{
    for (size_t i = 0; i < MFD_ARRAY_SIZE(params); i++)
        if (params[i].id == p)
            return &params[i];
    return NULL;
}

MFD_API int mfd_param_bounds(mfd_param p, int64_t *min, int64_t *max)
{
    const param_desc *d = param_find(p);
    if (!d)
        return -MFD_EINVAL;
    *min = d->min;
    *max = d->max;
    return 0;
}

MFD_API int mfd_set_param(mfd_session *s, mfd_param p, int64_t value)
{
    const param_desc *d = param_find(p);
    if (!d)
        return mfd__set_error(s, MFD_EINVAL, "unknown parameter %d", (int)p);
    if (s->used)
        return mfd__set_error(s, MFD_ESTATE,
                              "parameter '%s' set after the session started",
                              d->name);
    if (value < d->min || value > d->max)
        return mfd__set_error(s, MFD_EINVAL,
                              "parameter '%s': %" PRId64 " outside %" PRId64
                              "..%" PRId64,
                              d->name, value, d->min, d->max);
    if (p == MFD_PARAM_PAGE_SIZE && s->nblocks)
        return mfd__set_error(s, MFD_ESTATE,
                              "parameter 'page-size' set after blocks were "
                              "added");
    if (p == MFD_PARAM_PAGE_SIZE && (value & (value - 1)))
        return mfd__set_error(s, MFD_EINVAL,
                              "parameter 'page-size': %" PRId64
                              " is not a power of two",
                              value);
    *(int64_t *)((char *)s + d->field) = value;
    return 0;
}

MFD_API int mfd_get_param(const mfd_session *s, mfd_param p, int64_t *value)
{
    const param_desc *d = param_find(p);
    if (!d)
        return -MFD_EINVAL;
    *value = *(const int64_t *)((const char *)s + d->field);
    return 0;
}

MFD_API int mfd_set_param_by_name(mfd_session *s, const char *name,
                                  const char *value)
{
    const param_desc *d = NULL;
    for (size_t i = 0; i < MFD_ARRAY_SIZE(params); i++)
        if (!strcmp(params[i].name, name))
            d = &params[i];
    /* The TLS settings are strings (QEMU: tls-creds objects, tls-hostname). */
    if (!d && !strcmp(name, "tls-creds"))
        return mfd_set_tls_x509(s, value);
    if (!d && !strcmp(name, "tls-psk"))
        return mfd_set_tls_psk(s, value);
    if (!d && !strcmp(name, "tls-hostname"))
        return mfd_set_tls_hostname(s, value);
    if (!d && !strcmp(name, "tls-authz"))
        return mfd_add_tls_authz(s, value);
    if (!d && !strcmp(name, "tls-priority"))
        return mfd_set_tls_priority(s, value);
    if (!d)
        return mfd__set_error(s, MFD_EINVAL, "unknown parameter '%s'", name);

    int64_t v;
    static const char *const methods[] = {"none", "zlib", "zstd", "lz4"};
    int method = -1;
    for (int i = 0; i < 4; i++)
        if (!strcmp(value, methods[i]))
            method = i;
    if (d->id == MFD_PARAM_COMPRESSION && method >= 0)
        return mfd_set_param(s, d->id, method);
    if (d->id == MFD_PARAM_ACCEPT_COMPRESSION && !isdigit((unsigned char)*value)) {
        /* A list of names: "none,zstd". */
        char list[64];
        int64_t mask = 0;
        snprintf(list, sizeof(list), "%s", value);
        for (char *save, *w = strtok_r(list, ",", &save); w;
             w = strtok_r(NULL, ",", &save)) {
            int m = -1;
            for (int i = 0; i < 4; i++)
                if (!strcmp(w, methods[i]))
                    m = i;
            if (m < 0)
                return mfd__set_error(s, MFD_EINVAL,
                                      "parameter '%s': unknown method '%s' "
                                      "(none, zlib, zstd, lz4)",
                                      name, w);
            mask |= INT64_C(1) << m;
        }
        return mfd_set_param(s, d->id, mask);
    }
    if (d->id == MFD_PARAM_ZERO_PAGE_DETECTION && !strcmp(value, "none"))
        v = MFD_ZPD_NONE;
    else if (d->id == MFD_PARAM_ZERO_PAGE_DETECTION && !strcmp(value, "legacy"))
        v = MFD_ZPD_LEGACY;
    else if (d->id == MFD_PARAM_ZERO_PAGE_DETECTION &&
             !strcmp(value, "multifd"))
        v = MFD_ZPD_MULTIFD;
    else if (d->id == MFD_PARAM_DIRTY_TRACKER && !strcmp(value, "none"))
        v = MFD_TRACKER_NONE;
    else if (d->id == MFD_PARAM_DIRTY_TRACKER && !strcmp(value, "manual"))
        v = MFD_TRACKER_MANUAL;
    else if (d->id == MFD_PARAM_DIRTY_TRACKER && !strcmp(value, "uffd-wp"))
        v = MFD_TRACKER_UFFD_WP;
    else if (!strcmp(value, "on") || !strcmp(value, "true"))
        v = 1;
    else if (!strcmp(value, "off") || !strcmp(value, "false"))
        v = 0;
    else {
        char *end;
        errno = 0;
        long long n = strtoll(value, &end, 10);
        int shift = 0;
        switch (*end) {
        case 'k': case 'K': shift = 10; end++; break;
        case 'm': case 'M': shift = 20; end++; break;
        case 'g': case 'G': shift = 30; end++; break;
        case 't': case 'T': shift = 40; end++; break;
        default: break;
        }
        if (errno || end == value || *end || n < 0 ||
            (shift && n > (INT64_MAX >> shift)))
            return mfd__set_error(s, MFD_EINVAL,
                                  "parameter '%s': invalid value '%s'", name,
                                  value);
        v = (int64_t)n << shift;
    }
    return mfd_set_param(s, d->id, v);
}

MFD_API int mfd_set_incoming_dir(mfd_session *s, const char *dir)
{
    if (s->used)
        return mfd__set_error(s, MFD_ESTATE,
                              "incoming directory set after the session "
                              "started");
    char *copy = NULL;
    if (dir && !(copy = strdup(dir)))
        return mfd__set_error(s, MFD_ENOMEM, "out of memory");
    free(s->incoming_dir);
    s->incoming_dir = copy;
    return 0;
}

MFD_API int mfd_set_incoming_file(mfd_session *s, const char *block,
                                  const char *path)
{
    if (s->used)
        return mfd__set_error(s, MFD_ESTATE,
                              "incoming file set after the session started");
    if (!block || !mfd__block_name_valid(block, strlen(block)) || !path ||
        !*path)
        return mfd__set_error(s, MFD_EINVAL,
                              "incoming file: a block name (printable "
                              "ASCII) and a path are required");
    for (int i = 0; i < s->nfiles; i++)
        if (!strcmp(s->files[i].block, block))
            return mfd__set_error(s, MFD_EINVAL,
                                  "incoming file for block '%s' set twice",
                                  block);
    if (s->nfiles >= MFD_MAX_BLOCKS)
        return mfd__set_error(s, MFD_EINVAL, "more than %d incoming files",
                              MFD_MAX_BLOCKS);
    void *nf = realloc(s->files, sizeof(*s->files) * (size_t)(s->nfiles + 1));
    if (!nf)
        return mfd__set_error(s, MFD_ENOMEM, "out of memory");
    s->files = nf;
    s->files[s->nfiles].block = strdup(block);
    s->files[s->nfiles].path = strdup(path);
    if (!s->files[s->nfiles].block || !s->files[s->nfiles].path) {
        free(s->files[s->nfiles].block);
        free(s->files[s->nfiles].path);
        return mfd__set_error(s, MFD_ENOMEM, "out of memory");
    }
    s->nfiles++;
    return 0;
}

MFD_API int mfd_set_live_ops(mfd_session *s, const mfd_live_ops *ops,
                             void *opaque)
{
    if (s->used)
        return mfd__set_error(s, MFD_ESTATE,
                              "live callbacks set after the session started");
    if (ops)
        s->live = *ops;
    else
        memset(&s->live, 0, sizeof(s->live));
    s->live_opaque = opaque;
    return 0;
}

/* Block `block` when [offset, offset + length) lies inside it, else NULL. */
static mfd_block *block_range(mfd_session *s, int block, uint64_t offset,
                              uint64_t length)
{
    if (!s || block < 0 || block >= s->nblocks)
        return NULL;
    mfd_block *b = &s->blocks[block];
    return offset <= b->length && length <= b->length - offset ? b : NULL;
}

MFD_API int mfd_mark_dirty(mfd_session *s, int block, uint64_t offset,
                           uint64_t length)
{
    mfd_block *b = block_range(s, block, offset, length);
    if (!b)
        return -MFD_EINVAL;
    /* Before the migration starts every page is dirty anyway. */
    uint64_t *m = __atomic_load_n(&b->marked, __ATOMIC_ACQUIRE);
    if (!m || !length)
        return 0;
    uint64_t ps = (uint64_t)s->page_size;
    uint64_t first = offset / ps, last = (offset + length - 1) / ps;
    for (uint64_t p = first; p <= last; p++)
        if (!mfd__bitmap_test_atomic(m, p))
            mfd__bitmap_set_atomic(m, p);
    return 0;
}

MFD_API int mfd_block_zero_hint(mfd_session *s, int block, uint64_t offset,
                                uint64_t length)
{
    if (!s)
        return -MFD_EINVAL;
    if (block < 0 || block >= s->nblocks)
        return mfd__set_error(s, MFD_EINVAL, "zero hint for block %d: no "
                              "such block (%d added)", block, s->nblocks);
    mfd_block *b = block_range(s, block, offset, length);
    if (!b)
        return mfd__set_error(s, MFD_EINVAL,
                              "zero hint of %" PRIu64 " bytes at %" PRIu64
                              " outside block '%s' (%" PRIu64 " bytes)",
                              length, offset, s->blocks[block].name,
                              s->blocks[block].length);
    if (s->used)
        return mfd__set_error(s, MFD_ESTATE,
                              "zero hint after the migration started");
    uint64_t ps = (uint64_t)s->page_size;
    uint64_t first = (offset + ps - 1) / ps, end = (offset + length) / ps;
    if (end <= first)
        return 0; /* no whole page inside */
    if (!b->zero_hint && !(b->zero_hint = mfd__bitmap_new(b->pages)))
        return mfd__set_error(s, MFD_ENOMEM, "out of memory");
    mfd__bitmap_set_range_atomic(b->zero_hint, first, end - first);
    return 0;
}

MFD_API int mfd_switchover(mfd_session *s)
{
    if (!s)
        return -MFD_EINVAL;
    __atomic_store_n(&s->switchover_requested, 1, __ATOMIC_RELEASE);
    return 0;
}

MFD_API int mfd_set_device_state(mfd_session *s, const void *data,
                                 size_t len)
{
    if ((s->used && !s->in_pause) || MFD_STAT_GET(s->role) == 2)
        return mfd__set_error(s, MFD_ESTATE,
                              "device state set on a destination or after "
                              "the migration started");
    if (len > MFD_DEVICE_STATE_MAX || (len && !data))
        return mfd__set_error(s, MFD_EINVAL,
                              "device state of %zu bytes (at most %" PRIu64
                              ")",
                              len, MFD_DEVICE_STATE_MAX);
    if (!s->device_state_borrowed)
        free(s->device_state);
    s->device_state = (uint8_t *)data;
    s->device_state_len = len;
    s->device_state_borrowed = true;
    return 0;
}

MFD_API int mfd_get_device_state(const mfd_session *s, const void **data,
                                 size_t *len)
{
    if (MFD_STAT_GET(s->role) != 2 || MFD_STAT_GET(s->status) != 3)
        return -MFD_ESTATE;
    *data = s->device_state;
    *len = (size_t)s->device_state_len;
    return 0;
}

/* ---- blocks ------------------------------------------------------------ */

MFD_API int mfd_add_block(mfd_session *s, const char *name, void *host,
                          uint64_t length)
{
    if (s->used)
        return mfd__set_error(s, MFD_ESTATE,
                              "block added after the session started");
    if (!name || !mfd__block_name_valid(name, strlen(name)))
        return mfd__set_error(s, MFD_EINVAL,
                              "block name must be 1..255 printable ASCII "
                              "characters");
    if (!host || length == 0 || length % (uint64_t)s->page_size)
        return mfd__set_error(s, MFD_EINVAL,
                              "block '%s': length %" PRIu64
                              " is not a non-zero multiple of the page size "
                              "%" PRId64,
                              name, length, s->page_size);
    if (s->nblocks >= MFD_MAX_BLOCKS)
        return mfd__set_error(s, MFD_EINVAL, "more than %d blocks",
                              MFD_MAX_BLOCKS);
    for (int i = 0; i < s->nblocks; i++)
        if (!strcmp(s->blocks[i].name, name))
            return mfd__set_error(s, MFD_EINVAL, "block '%s' added twice",
                                  name);
    mfd_block *nb = realloc(s->blocks, sizeof(*nb) * (size_t)(s->nblocks + 1));
    if (!nb)
        return mfd__set_error(s, MFD_ENOMEM, "out of memory");
    s->blocks = nb;
    mfd_block *b = &nb[s->nblocks];
    memset(b, 0, sizeof(*b));
    b->fd = -1;
    if (!(b->name = strdup(name)))
        return mfd__set_error(s, MFD_ENOMEM, "out of memory");
    b->name_len = (uint32_t)strlen(name);
    b->host = host;
    b->length = length;
    b->pages = length / (uint64_t)s->page_size;
    s->nblocks++;
    MFD_STAT_ADD(s->ram_bytes, length);
    s->blocks_from_caller = true;
    return 0;
}

MFD_API int mfd_block_count(const mfd_session *s)
{
    return s->nblocks;
}

MFD_API int mfd_block_get(const mfd_session *s, int index, mfd_block_info *info)
{
    if (index < 0 || index >= s->nblocks)
        return -MFD_EINVAL;
    info->name = s->blocks[index].name;
    info->host = s->blocks[index].replica ? s->blocks[index].replica
                                          : s->blocks[index].host;
    info->length = s->blocks[index].length;
    return 0;
}

uint64_t mfd__block_digest(const mfd_session *s, int index, bool known_zero)
{
    const mfd_block *b = &s->blocks[index];
    const uint64_t *map = NULL;
    bool set_is_zero = false;
    if (!known_zero || b->replica) {
        /* Read whole (a COLO secondary's replica always). */
    } else if (MFD_STAT_GET(s->role) == 2 && b->mapped) {
        map = b->receivedmap; /* clear: never written since it was mapped */
    } else if (MFD_STAT_GET(s->role) == 1 &&
               s->dirty_tracker == MFD_TRACKER_NONE) {
        map = b->untouched; /* unchanged since the scan (after the pause) */
        set_is_zero = true;
    }
    mfd_block_info info;
    mfd_block_get(s, index, &info);
    return mfd__digest_known_zero(info.host, info.length,
                                  (uint64_t)s->page_size, map, set_is_zero);
}

MFD_API int mfd_block_digest(const mfd_session *s, int index,
                             uint64_t *digest)
{
    if (!s || !digest || index < 0 || index >= s->nblocks)
        return -MFD_EINVAL;
    if (!s->blocks[index].host)
        return -MFD_ESTATE; /* a destination that failed before mapping */
    /*
     * Only a destination that completed knows which of its pages were
     * never written by the migration; a source's memory may have changed
     * since its scan (a failed migration resumes the writers).
     */
    bool completed = MFD_STAT_GET(s->role) == 2 &&
                     __atomic_load_n(&s->status, __ATOMIC_RELAXED) == 3;
    *digest = mfd__block_digest(s, index, completed);
    return 0;
}

/* ---- main channel records ---------------------------------------------- */

/*
 * One record on the main channel. The write never blocks past a failure or
 * a cancel (wake_fd), nor past timeout_ms without the peer taking a byte;
 * one cut off part-way leaves the channel torn, and nothing more is
 * written on it (the peer could not tell the next record's start).
 * Non-OK results set errno: ETIMEDOUT, ECANCELED (woken), or the errno of
 * the write that tore the channel (so a record after a heartbeat that
 * timed out part-way fails as a timeout too, not as a broken pipe).
 */
static int send_record_ex(mfd_session *s, uint32_t type, const void *body,
                          uint32_t len, int wake_fd, int timeout_ms)
{
    static const uint8_t pad[8];
    uint8_t hdr[8];
    mfd__rec_hdr_encode(hdr, type, len);
    struct iovec iov[3] = {
        {hdr, 8},
        {(void *)body, len},
        {(void *)pad, mfd__record_padded(len) - len},
    };
    int rc = MFD_IO_ERROR, e;
    pthread_mutex_lock(&s->main_wlock);
    e = s->main_torn;
    if (!e) {
        bool torn;
        rc = mfd__writev_full_wake(s->main_fd, wake_fd, iov, 3, timeout_ms,
                                   &torn);
        e = rc == MFD_IO_TIMEOUT ? ETIMEDOUT
            : rc == MFD_IO_WOKEN ? ECANCELED
                                 : errno;
        if (rc != MFD_IO_OK && torn)
            s->main_torn = e ? e : EPIPE;
    }
    pthread_mutex_unlock(&s->main_wlock);
    errno = e;
    if (rc == MFD_IO_OK)
        MFD_STAT_ADD(s->main_bytes, 8 + mfd__record_padded(len));
    return rc;
}

int mfd__send_record(mfd_session *s, uint32_t type, const void *body,
                     uint32_t len)
{
    /* network-timeout: a peer that reads nothing for that long is gone. */
    return send_record_ex(s, type, body, len, s->wake_fd,
                          s->network_timeout > 0 ? (int)s->network_timeout
                                                 : -1);
}

int mfd__recv_record(mfd_session *s, int timeout_ms, uint32_t *type,
                     uint8_t **body, uint32_t *len, char *err, size_t errlen)
{
    return mfd__recv_record_ex(s, true, timeout_ms, type, body, len, err,
                               errlen);
}

int mfd__recv_record_ex(mfd_session *s, bool wake, int timeout_ms,
                        uint32_t *type, uint8_t **body, uint32_t *len,
                        char *err, size_t errlen)
{
    int wake_fd = wake ? s->wake_fd : -1;
    uint8_t hdr[8];
    *body = NULL;
    *len = 0;
    /* One deadline for the whole record; a failure elsewhere interrupts. */
    uint64_t start = mfd__now_us();
    int rc = mfd__read_full_wake(s->main_fd, wake_fd, hdr, 8, timeout_ms);
    if (rc != MFD_IO_OK)
        return rc;
    *type = mfd__get_be32(hdr);
    uint32_t l = mfd__get_be32(hdr + 4);
    if (l > MFD_RECORD_MAX) {
        snprintf(err, errlen,
                 "main channel: record type 0x%x: body length %u exceeds "
                 "%u",
                 *type, l, MFD_RECORD_MAX);
        return -MFD_EPROTO;
    }
    size_t padded = mfd__record_padded(l);
    uint8_t *b = NULL;
    if (padded) {
        if (!(b = malloc(padded))) {
            /*
             * -MFD_ENOMEM would read as MFD_IO_TIMEOUT (both -2): fail the
             * session here (the first error wins) and report an I/O error.
             */
            snprintf(err, errlen, "out of memory");
            mfd__fail(s, MFD_ENOMEM, "main channel: out of memory for a "
                      "%u-byte record", l);
            errno = ENOMEM;
            return MFD_IO_ERROR;
        }
        int left = timeout_ms;
        if (timeout_ms >= 0) {
            uint64_t spent = (mfd__now_us() - start) / 1000;
            left = spent >= (uint64_t)timeout_ms ? 0
                                                 : timeout_ms - (int)spent;
        }
        rc = mfd__read_full_wake(s->main_fd, wake_fd, b, padded, left);
        if (rc != MFD_IO_OK) {
            free(b);
            return rc == MFD_IO_EOF ? MFD_IO_TRUNCATED : rc;
        }
        for (size_t i = l; i < padded; i++)
            if (b[i]) {
                free(b);
                snprintf(err, errlen,
                         "main channel: record type 0x%x: non-zero padding",
                         *type);
                return -MFD_EPROTO;
            }
    }
    MFD_STAT_ADD(s->main_bytes, 8 + padded);
    *body = b;
    *len = l;
    return MFD_IO_OK;
}

int mfd__skip_optional(mfd_session *s, int skipped, const char *what)
{
    if (skipped < MFD_SETUP_OPTIONAL_MAX)
        return 0;
    return mfd__fail(s, MFD_EPROTO,
                     "main channel: more than %d optional records while "
                     "waiting for %s",
                     MFD_SETUP_OPTIONAL_MAX, what);
}

/* How long the ERROR (or CANCEL) record may wait for the peer to read. */
#define ERROR_SEND_MS 2000

void mfd__send_error_record(mfd_session *s)
{
    uint8_t body[4 + MFD_MSG_MAX];
    pthread_mutex_lock(&s->err_lock);
    bool from_peer = s->err_from_peer;
    int code = s->err_code;
    size_t n = strnlen(s->err_msg, MFD_MSG_MAX);
    memcpy(body + 4, s->err_msg, n);
    pthread_mutex_unlock(&s->err_lock);
    if (s->main_fd < 0 || from_peer)
        return;
    /*
     * The session has failed, so its wake-up has fired: a bounded send
     * instead, never held by a stalled peer (nor sent after a torn record).
     */
    if (s->role == 1 && code == MFD_ECANCELED) {
        send_record_ex(s, MFD_REC_CANCEL, body + 4, (uint32_t)n, -1,
                       ERROR_SEND_MS);
        return;
    }
    mfd__put_be32(body, (uint32_t)code);
    send_record_ex(s, MFD_REC_ERROR, body, (uint32_t)(4 + n), -1,
                   ERROR_SEND_MS);
}

/* ---- statistics -------------------------------------------------------- */

MFD_API int mfd_get_stats(const mfd_session *s, mfd_stats *st)
{
    memset(st, 0, sizeof(*st));
    st->role = MFD_STAT_GET(s->role);
    st->status = __atomic_load_n(&s->status, __ATOMIC_RELAXED);
    st->channels = (uint32_t)MFD_STAT_GET(s->channels);
    st->page_size = (uint32_t)MFD_STAT_GET(s->page_size);
    uint64_t start = MFD_STAT_GET(s->t_start), end = MFD_STAT_GET(s->t_end),
             setup = MFD_STAT_GET(s->t_setup);
    if (start) {
        st->total_time_us = (end ? end : mfd__now_us()) - start;
        st->setup_time_us = setup ? setup - start : 0;
    }
    st->ram_bytes = MFD_STAT_GET(s->ram_bytes);
    st->main_bytes = MFD_STAT_GET(s->main_bytes);
    st->legacy_zero_pages = MFD_STAT_GET(s->legacy_zero_pages);
    st->untouched_pages = MFD_STAT_GET(s->untouched_pages);
    st->zero_pages = st->legacy_zero_pages;
    st->iterations = MFD_STAT_GET(s->iterations);
    st->data_packets = MFD_STAT_GET(s->data_packets);
    st->dirty_sync_count = MFD_STAT_GET(s->dirty_sync_count);
    st->dirty_pages = MFD_STAT_GET(s->dirty_pages);
    st->dirty_rate_bps = MFD_STAT_GET(s->dirty_rate_bps);
    st->bandwidth_bps = MFD_STAT_GET(s->bandwidth_bps);
    st->memory_rate_bps = MFD_STAT_GET(s->memory_rate_bps);
    st->expected_downtime_ms = MFD_STAT_GET(s->expected_downtime_ms);
    st->downtime_us = MFD_STAT_GET(s->downtime_us);
    st->throttle_pct = MFD_STAT_GET(s->throttle_pct);
    st->progress_pct = MFD_STAT_GET(s->progress_pct);
    st->colo_checkpoints = MFD_STAT_GET(s->colo_ckpts);
    st->colo_last_id = MFD_STAT_GET(s->colo_last_id);
    st->colo_state = MFD_STAT_GET(s->colo_state);
    for (int i = 0; i < MFD_PASS_STATS; i++) {
        st->pass_bytes[i] = MFD_STAT_GET(s->pass_bytes[i]);
        st->pass_pages[i] = MFD_STAT_GET(s->pass_pages[i]);
    }
    /* The channel arrays are published under the lock (wake_all). */
    pthread_mutex_lock((pthread_mutex_t *)&s->lock);
    const mfd_send_chan *sc = s->sc;
    const mfd_recv_chan *rc = s->rc;
    uint32_t nchan = s->nchan;
    pthread_mutex_unlock((pthread_mutex_t *)&s->lock);
    if (nchan)
        st->channels = nchan;
    for (uint32_t i = 0; i < nchan && i < MFD_MAX_CHANNELS; i++) {
        const mfd_channel_stats *c = sc   ? &sc[i].st
                                     : rc ? &rc[i].st
                                          : NULL;
        if (!c)
            break;
        mfd_channel_stats *o = &st->channel[i];
        o->packets = MFD_STAT_GET(c->packets);
        o->sync_packets = MFD_STAT_GET(c->sync_packets);
        o->normal_pages = MFD_STAT_GET(c->normal_pages);
        o->zero_pages = MFD_STAT_GET(c->zero_pages);
        o->bytes = MFD_STAT_GET(c->bytes);
        o->raw_bytes = MFD_STAT_GET(c->raw_bytes);
        o->compressed_bytes = MFD_STAT_GET(c->compressed_bytes);
        o->compress_us = MFD_STAT_GET(c->compress_us);
        o->zerocopy_sends = MFD_STAT_GET(c->zerocopy_sends);
        o->zerocopy_notifications = MFD_STAT_GET(c->zerocopy_notifications);
        o->zerocopy_copied = MFD_STAT_GET(c->zerocopy_copied);
        st->raw_bytes += o->raw_bytes;
        st->compressed_bytes += o->compressed_bytes;
        st->compress_us += o->compress_us;
        st->zerocopy_sends += o->zerocopy_sends;
        st->zerocopy_notifications += o->zerocopy_notifications;
        st->zerocopy_copied += o->zerocopy_copied;
        st->data_bytes += o->bytes;
        st->normal_pages += o->normal_pages;
        st->zero_pages += o->zero_pages;
        st->sync_packets += o->sync_packets;
    }
    st->zerocopy_copied_passes = MFD_STAT_GET(s->zc_copied_passes);
    if (st->compressed_bytes)
        st->compression_ratio =
            (double)st->raw_bytes / (double)st->compressed_bytes;
    if (st->total_time_us)
        st->throughput_gbps =
            (double)((st->normal_pages + st->zero_pages) * st->page_size) /
            ((double)st->total_time_us * 1e3);
    return 0;
}

MFD_API char *mfd_stats_json(const mfd_session *s)
{
    static const char *roles[] = {"none", "source", "destination"};
    static const char *statuses[] = {"idle", "setup", "active", "completed",
                                     "failed"};
    mfd_stats *st = malloc(sizeof(*st));
    if (!st)
        return NULL;
    mfd_get_stats(s, st);
    size_t cap = 2048 + (size_t)st->channels * 400 + MFD_PASS_STATS * 64;
    char *out = malloc(cap);
    if (!out) {
        free(st);
        return NULL;
    }
    size_t n = (size_t)snprintf(
        out, cap,
        "{\"role\": \"%s\", \"status\": \"%s\", \"channels\": %u, "
        "\"page_size\": %u, \"total_time_us\": %" PRIu64
        ", \"setup_time_us\": %" PRIu64 ", \"ram_bytes\": %" PRIu64
        ", \"main_bytes\": %" PRIu64 ", \"data_bytes\": %" PRIu64
        ", \"normal_pages\": %" PRIu64 ", \"zero_pages\": %" PRIu64
        ", \"legacy_zero_pages\": %" PRIu64 ", \"untouched_pages\": %" PRIu64
        ", \"data_packets\": %" PRIu64
        ", \"sync_packets\": %" PRIu64 ", \"iterations\": %" PRIu64
        ", \"throughput_gbps\": %.3f, \"dirty_sync_count\": %" PRIu64
        ", \"dirty_pages\": %" PRIu64 ", \"dirty_rate_bps\": %" PRIu64
        ", \"bandwidth_bps\": %" PRIu64 ", \"memory_rate_bps\": %" PRIu64
        ", \"expected_downtime_ms\": %" PRIu64 ", \"downtime_us\": %" PRIu64
        ", \"throttle_pct\": %d, \"progress_pct\": %d"
        ", \"raw_bytes\": %" PRIu64 ", \"compressed_bytes\": %" PRIu64
        ", \"compress_us\": %" PRIu64 ", \"compression_ratio\": %.3f"
        ", \"zerocopy_sends\": %" PRIu64
        ", \"zerocopy_notifications\": %" PRIu64
        ", \"zerocopy_copied\": %" PRIu64
        ", \"zerocopy_copied_passes\": %" PRIu64
        ", \"colo_state\": %d, \"colo_checkpoints\": %" PRIu64
        ", \"colo_last_id\": %" PRIu64 ", \"passes\": [",
        roles[st->role % 3], statuses[st->status % 5], st->channels,
        st->page_size, st->total_time_us, st->setup_time_us, st->ram_bytes,
        st->main_bytes, st->data_bytes, st->normal_pages, st->zero_pages,
        st->legacy_zero_pages, st->untouched_pages, st->data_packets,
        st->sync_packets,
        st->iterations, st->throughput_gbps, st->dirty_sync_count,
        st->dirty_pages, st->dirty_rate_bps, st->bandwidth_bps,
        st->memory_rate_bps, st->expected_downtime_ms, st->downtime_us, st->throttle_pct,
        st->progress_pct, st->raw_bytes, st->compressed_bytes,
        st->compress_us, st->compression_ratio, st->zerocopy_sends,
        st->zerocopy_notifications, st->zerocopy_copied,
        st->zerocopy_copied_passes, st->colo_state, st->colo_checkpoints,
        st->colo_last_id);
    /* Source passes; the destination counts iterations only. */
    for (uint64_t i = 0; st->role == 1 && i < st->iterations &&
                         i < MFD_PASS_STATS && n < cap;
         i++)
        n += (size_t)snprintf(out + n, cap - n,
                              "%s{\"bytes\": %" PRIu64 ", \"pages\": %" PRIu64
                              "}",
                              i ? ", " : "", st->pass_bytes[i],
                              st->pass_pages[i]);
    if (n < cap)
        n += (size_t)snprintf(out + n, cap - n, "], \"channel\": [");
    for (uint32_t i = 0; i < st->channels && i < MFD_MAX_CHANNELS && n < cap;
         i++) {
        const mfd_channel_stats *c = &st->channel[i];
        n += (size_t)snprintf(out + n, cap - n,
                              "%s{\"id\": %u, \"packets\": %" PRIu64
                              ", \"sync_packets\": %" PRIu64
                              ", \"normal_pages\": %" PRIu64
                              ", \"zero_pages\": %" PRIu64
                              ", \"bytes\": %" PRIu64
                              ", \"raw_bytes\": %" PRIu64
                              ", \"compressed_bytes\": %" PRIu64
                              ", \"compress_us\": %" PRIu64
                              ", \"zerocopy_sends\": %" PRIu64
                              ", \"zerocopy_notifications\": %" PRIu64
                              ", \"zerocopy_copied\": %" PRIu64 "}",
                              i ? ", " : "", i, c->packets, c->sync_packets,
                              c->normal_pages, c->zero_pages, c->bytes,
                              c->raw_bytes, c->compressed_bytes,
                              c->compress_us, c->zerocopy_sends,
                              c->zerocopy_notifications, c->zerocopy_copied);
    }
    if (n < cap)
        snprintf(out + n, cap - n, "]}");
    free(st);
    return out;
}

/* ---- entry points ------------------------------------------------------ */

void mfd__session_release_runtime(mfd_session *s)
{
    /* Each room joins its own threads; then the main channel can close. */
    mfd__send_release(s);
    mfd__recv_release(s);
    mfd__sock_close(s->main_fd);
    s->main_fd = -1;
}

MFD_API int mfd_migrate(mfd_session *s, const char *uri)
{
    if (s->used || s->listen_fd >= 0)
        return mfd__set_error(s, MFD_ESTATE,
                              "session already used (or listening)");
    if (s->nblocks == 0)
        return mfd__set_error(s, MFD_EINVAL, "no blocks to migrate");
    s->used = true;
    MFD_STAT_SET(s->role, 1);
    return mfd__migrate(s, uri);
}

MFD_API int mfd_incoming(mfd_session *s)
{
    if (s->listen_fd < 0)
        return mfd__set_error(s, MFD_ESTATE, "mfd_incoming before mfd_listen");
    if (s->used)
        return mfd__set_error(s, MFD_ESTATE, "session already used");
    s->used = true;
    return mfd__incoming(s);
}

/* Replaces a string setting; before the session is used. */
static int set_string(mfd_session *s, char **slot, const char *v,
                      const char *what)
{
    if (!s || !v || !*v)
        return s ? mfd__set_error(s, MFD_EINVAL, "%s: empty", what)
                 : -MFD_EINVAL;
    if (s->used || s->listen_fd >= 0)
        return mfd__set_error(s, MFD_ESTATE, "%s: session already used",
                              what);
    char *c = strdup(v);
    if (!c)
        return mfd__set_error(s, MFD_ENOMEM, "out of memory");
    free(*slot);
    *slot = c;
    return 0;
}

MFD_API int mfd_set_tls_x509(mfd_session *s, const char *dir)
{
    if (s && s->tls_psk_file)
        return mfd__set_error(s, MFD_EINVAL, "tls-creds: PSK already set");
    return set_string(s, s ? &s->tls_x509_dir : NULL, dir, "tls-creds");
}

MFD_API int mfd_set_tls_psk(mfd_session *s, const char *keys_file)
{
    if (s && s->tls_x509_dir)
        return mfd__set_error(s, MFD_EINVAL, "tls-psk: x509 already set");
    return set_string(s, s ? &s->tls_psk_file : NULL, keys_file, "tls-psk");
}

MFD_API int mfd_set_tls_hostname(mfd_session *s, const char *name)
{
    return set_string(s, s ? &s->tls_hostname : NULL, name, "tls-hostname");
}

MFD_API int mfd_set_tls_priority(mfd_session *s, const char *priority)
{
    char err[300];
    if (s && priority && strlen(priority) > 1000)
        return mfd__set_error(s, MFD_EINVAL, "tls-priority: longer than "
                                             "1000 characters");
    if (s && priority && mfd__tls_priority_check(priority, err, sizeof(err)))
        return mfd__set_error(s, MFD_EINVAL, "tls-priority: %s", err);
    return set_string(s, s ? &s->tls_priority : NULL, priority,
                      "tls-priority");
}

MFD_API int mfd_add_tls_authz(mfd_session *s, const char *dn)
{
    if (!s || !dn || !*dn)
        return s ? mfd__set_error(s, MFD_EINVAL, "tls-authz: empty")
                 : -MFD_EINVAL;
    char **a = realloc(s->tls_authz, (size_t)(s->tls_nauthz + 1) * sizeof(*a));
    if (!a)
        return mfd__set_error(s, MFD_ENOMEM, "out of memory");
    s->tls_authz = a;
    if (!(a[s->tls_nauthz] = strdup(dn)))
        return mfd__set_error(s, MFD_ENOMEM, "out of memory");
    s->tls_nauthz++;
    return 0;
}

MFD_API int mfd_restore(mfd_session *s, const char *uri)
{
    if (s->used || s->listen_fd >= 0)
        return mfd__set_error(s, MFD_ESTATE,
                              "session already used (or listening)");
    s->used = true;
    MFD_STAT_SET(s->role, 2);
    return mfd__restore(s, uri);
}

MFD_API const char *mfd_listen_uri(const mfd_session *s)
{
    return s->listen_fd >= 0 ? s->listen_uri : NULL;
}
