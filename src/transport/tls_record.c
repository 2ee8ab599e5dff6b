/*
 * tls_record.c - TLS 1.3 records sealed and opened by us (tls_record.h).
 *
 * Only the framing and the key schedule's last steps are ours; the AEAD
 * and HKDF are GnuTLS's. Before taking a direction over, the keys derived
 * here from the logged traffic secret must equal those GnuTLS holds, so a
 * derivation that went wrong, or a secret that is not the one in use,
 * leaves the channel to GnuTLS instead of breaking it.
 */
#include "transport/tls_record.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#ifdef MFD_HAVE_IPSEC_MB
/* The library is built with LINUX on Linux, which gives gcm_key_data its
 * 64-byte alignment (and a size that aligned_alloc takes). */
#ifndef LINUX
#define LINUX 1
#endif
#include <intel-ipsec-mb.h>

_Static_assert(sizeof(struct gcm_key_data) % 64 == 0,
               "gcm_key_data without its alignment");

/*
 * ipsec-mb's manager, for its direct AES-GCM calls only: those read its
 * function pointers and keep their state in the key and context data we
 * pass, so one manager serves every thread. (Each call also stores 0 in
 * the library's process-wide error number, which only imb_start reads,
 * before any call.) NULL: GnuTLS's AEAD for all.
 */
static IMB_MGR *imb;
static pthread_once_t imb_once = PTHREAD_ONCE_INIT;

static void imb_start(void)
{
    IMB_MGR *m = alloc_mb_mgr(0);
    if (!m)
        return;
    /*
     * The library reads CPUID alone; the compiler's check also asks the
     * kernel (XGETBV) whether the AVX registers are enabled, so a machine
     * that announces AVX-512 without enabling it gets AVX2's code.
     */
    __builtin_cpu_init();
    if (__builtin_cpu_supports("avx512f"))
        init_mb_mgr_auto(m, NULL);
    else if (__builtin_cpu_supports("avx2"))
        init_mb_mgr_avx2(m);
    else if (__builtin_cpu_supports("avx"))
        init_mb_mgr_avx(m);
    else
        init_mb_mgr_sse(m);
    if (imb_get_errno(m)) {
        free_mb_mgr(m);
        return;
    }
    imb = m;
}

static bool imb_takes(gnutls_cipher_algorithm_t c)
{
    if (c != GNUTLS_CIPHER_AES_128_GCM && c != GNUTLS_CIPHER_AES_256_GCM)
        return false;
    pthread_once(&imb_once, imb_start);
    return imb != NULL;
}
#endif

bool mfd__tlsrec_ipsec_mb(void)
{
#ifdef MFD_HAVE_IPSEC_MB
    return imb_takes(GNUTLS_CIPHER_AES_128_GCM);
#else
    return false;
#endif
}

/*
 * Makes the AEAD for key: ipsec-mb's expanded AES-GCM keys where it takes
 * the cipher, else a GnuTLS handle. Nothing changes in r on failure.
 */
static int aead_set(mfd_tls_rec *r, gnutls_cipher_algorithm_t c,
                    const uint8_t *key)
{
#ifdef MFD_HAVE_IPSEC_MB
    if (!r->gnutls_only && imb_takes(c)) {
        struct gcm_key_data *g = aligned_alloc(64, sizeof(*g));
        if (!g)
            return -1;
        if (c == GNUTLS_CIPHER_AES_128_GCM)
            IMB_AES128_GCM_PRE(imb, key, g);
        else
            IMB_AES256_GCM_PRE(imb, key, g);
        if (r->gcm) {
            gnutls_memset(r->gcm, 0, sizeof(*r->gcm));
            free(r->gcm);
        }
        r->gcm = g;
        r->cipher = c;
        return 0;
    }
#endif
    /* A new handle each time: gnutls_aead_cipher_set_key left the old key
     * in place here (GnuTLS 3.7.9, AES-GCM). */
    gnutls_aead_cipher_hd_t h;
    gnutls_datum_t k = {(unsigned char *)key,
                        (unsigned)gnutls_cipher_get_key_size(c)};
    if (gnutls_aead_cipher_init(&h, c, &k))
        return -1;
    if (r->aead)
        gnutls_aead_cipher_deinit(r->aead);
    r->aead = h;
    r->cipher = c;
    return 0;
}

/* HKDF-Expand-Label(secret, label, "", len) (RFC 8446 7.1). */
static int expand_label(const mfd_tls_rec *r, const uint8_t *secret,
                        const char *label, uint8_t *out, size_t len)
{
    uint8_t info[2 + 1 + 6 + 32 + 1];
    size_t ll = strlen(label);
    info[0] = (uint8_t)(len >> 8);
    info[1] = (uint8_t)len;
    info[2] = (uint8_t)(6 + ll);
    memcpy(info + 3, "tls13 ", 6);
    memcpy(info + 9, label, ll);
    info[9 + ll] = 0; /* no context */
    gnutls_datum_t k = {(unsigned char *)secret, r->secret_len};
    gnutls_datum_t i = {info, (unsigned)(10 + ll)};
    return gnutls_hkdf_expand(r->hash, &k, &i, out, len) ? -1 : 0;
}

/* The key and IV of the current traffic secret (RFC 8446 7.3). */
static int derive(mfd_tls_rec *r, uint8_t *key)
{
    return expand_label(r, r->secret, "key", key, r->key_len) ||
                   expand_label(r, r->secret, "iv", r->iv, sizeof(r->iv))
               ? -1
               : 0;
}

static uint64_t get_be64(const uint8_t *p)
{
    uint64_t v = 0;
    for (int i = 0; i < 8; i++)
        v = v << 8 | p[i];
    return v;
}

/*
 * r for cipher c and the suite's hash d from a traffic secret: its key
 * (into key) and IV. -1 for a cipher or hash this does not know.
 */
static int setup(mfd_tls_rec *r, gnutls_cipher_algorithm_t c,
                 gnutls_digest_algorithm_t d, const uint8_t *secret,
                 size_t secret_len, uint8_t key[32])
{
    if (c != GNUTLS_CIPHER_AES_128_GCM && c != GNUTLS_CIPHER_AES_256_GCM &&
        c != GNUTLS_CIPHER_CHACHA20_POLY1305)
        return -1;
    size_t hl = gnutls_hash_get_len(d);
    if (!hl || hl != secret_len || hl > sizeof(r->secret) ||
        gnutls_cipher_get_key_size(c) > 32 ||
        gnutls_cipher_get_iv_size(c) != sizeof(r->iv) ||
        gnutls_cipher_get_tag_size(c) != MFD_TLS_TAG)
        return -1;
    /* GnuTLS numbers each MAC as its digest. */
    r->hash = (gnutls_mac_algorithm_t)d;
    r->key_len = (unsigned)gnutls_cipher_get_key_size(c);
    r->secret_len = (unsigned)hl;
    memcpy(r->secret, secret, hl);
    return derive(r, key);
}

int mfd__tlsrec_init(mfd_tls_rec *r, gnutls_session_t sess, bool read,
                     const uint8_t *secret, size_t secret_len)
{
    memset(r, 0, sizeof(*r));
    if (gnutls_protocol_get_version(sess) != GNUTLS_TLS1_3)
        return -1;
    gnutls_cipher_algorithm_t c = gnutls_cipher_get(sess);
    uint8_t key[32];
    gnutls_datum_t mk, iv, ck;
    unsigned char seq[8];
    int rc = -1;
    if (!setup(r, c, gnutls_prf_hash_get(sess), secret, secret_len, key) &&
        !gnutls_record_get_state(sess, read, &mk, &iv, &ck, seq) &&
        ck.size == r->key_len && !memcmp(ck.data, key, r->key_len) &&
        iv.size == sizeof(r->iv) && !memcmp(iv.data, r->iv, sizeof(r->iv))) {
        r->seq = get_be64(seq);
        rc = aead_set(r, c, key);
    }
    gnutls_memset(key, 0, sizeof(key));
    if (rc)
        mfd__tlsrec_free(r);
    return rc;
}

int mfd__tlsrec_init_raw(mfd_tls_rec *r, gnutls_cipher_algorithm_t c,
                         gnutls_digest_algorithm_t d, const uint8_t *secret,
                         size_t secret_len, bool gnutls_only)
{
    memset(r, 0, sizeof(*r));
    r->gnutls_only = gnutls_only;
    uint8_t key[32];
    int rc = setup(r, c, d, secret, secret_len, key) ? -1
                                                     : aead_set(r, c, key);
    gnutls_memset(key, 0, sizeof(key));
    if (rc)
        mfd__tlsrec_free(r);
    return rc;
}

void mfd__tlsrec_free(mfd_tls_rec *r)
{
    if (r->aead)
        gnutls_aead_cipher_deinit(r->aead);
#ifdef MFD_HAVE_IPSEC_MB
    if (r->gcm)
        gnutls_memset(r->gcm, 0, sizeof(*r->gcm));
#endif
    free(r->gcm);
    gnutls_memset(r, 0, sizeof(*r));
}

int mfd__tlsrec_update(mfd_tls_rec *r)
{
    /* All or nothing: the next secret and keys replace the current ones
     * only once they all exist (aead_set changes nothing on failure). */
    mfd_tls_rec next = *r;
    uint8_t key[32];
    int rc = -1;
    if (!expand_label(r, r->secret, "traffic upd", next.secret,
                      r->secret_len) &&
        !derive(&next, key) && !aead_set(r, r->cipher, key)) {
        memcpy(r->secret, next.secret, sizeof(r->secret));
        memcpy(r->iv, next.iv, sizeof(r->iv));
        r->seq = 0;
        rc = 0;
    }
    gnutls_memset(&next, 0, sizeof(next));
    gnutls_memset(key, 0, sizeof(key));
    return rc;
}

/* The per-record nonce: the IV with the sequence number XORed in. */
static void nonce(const mfd_tls_rec *r, uint8_t n[12])
{
    memcpy(n, r->iv, 12);
    for (int i = 0; i < 8; i++)
        n[11 - i] ^= (uint8_t)(r->seq >> (8 * i));
}

size_t mfd__tlsrec_seal(mfd_tls_rec *r, uint8_t type, const void *p,
                        size_t len, uint8_t *out)
{
    size_t body = len + 1 + MFD_TLS_TAG, clen = body;
    uint8_t n[12];
    out[0] = MFD_TLS_DATA;
    out[1] = 3;
    out[2] = 3;
    out[3] = (uint8_t)(body >> 8);
    out[4] = (uint8_t)body;
    nonce(r, n);
#ifdef MFD_HAVE_IPSEC_MB
    if (r->gcm) {
        /* The content and its type byte, streamed into one ciphertext. */
        struct gcm_context_data ctx;
        uint8_t *c = out + MFD_TLS_HDR;
        bool aes128 = r->cipher == GNUTLS_CIPHER_AES_128_GCM;
        if (aes128)
            IMB_AES128_GCM_INIT(imb, r->gcm, &ctx, n, out, MFD_TLS_HDR);
        else
            IMB_AES256_GCM_INIT(imb, r->gcm, &ctx, n, out, MFD_TLS_HDR);
        for (int i = 0; i < 2; i++) {
            const uint8_t *src = i ? &type : p;
            uint64_t sl = i ? 1 : len;
            if (!sl)
                continue;
            if (aes128)
                IMB_AES128_GCM_ENC_UPDATE(imb, r->gcm, &ctx, c, src, sl);
            else
                IMB_AES256_GCM_ENC_UPDATE(imb, r->gcm, &ctx, c, src, sl);
            c += sl;
        }
        if (aes128)
            IMB_AES128_GCM_ENC_FINALIZE(imb, r->gcm, &ctx, c, MFD_TLS_TAG);
        else
            IMB_AES256_GCM_ENC_FINALIZE(imb, r->gcm, &ctx, c, MFD_TLS_TAG);
        gnutls_memset(&ctx, 0, sizeof(ctx));
        r->seq++;
        return MFD_TLS_HDR + body;
    }
#endif
    giovec_t in[2] = {{(void *)p, len}, {&type, 1}};
    giovec_t aad = {out, MFD_TLS_HDR};
    if (gnutls_aead_cipher_encryptv(r->aead, n, sizeof(n), &aad, 1,
                                    MFD_TLS_TAG, in, 2, out + MFD_TLS_HDR,
                                    &clen) ||
        clen != body)
        return 0;
    r->seq++;
    return MFD_TLS_HDR + body;
}

size_t mfd__tlsrec_body_len(const uint8_t h[MFD_TLS_HDR], const char **why)
{
    /* legacy_record_version is ignored, as RFC 8446 5.1 asks. */
    size_t len = (size_t)h[3] << 8 | h[4];
    if (h[0] != MFD_TLS_DATA) {
        *why = "a record of type other than application_data after the "
               "handshake (TLS 1.3 protects every record)";
        return 0;
    }
    if (len < 1 + MFD_TLS_TAG || len > MFD_TLS_MAX_CIPHER) {
        *why = "a record length outside 17..16640 (record_overflow)";
        return 0;
    }
    return len;
}

/* Decrypts and authenticates a record's body; -1 when the tag is wrong. */
static int open_body(mfd_tls_rec *r, const uint8_t n[12], const uint8_t *rec,
                     uint8_t *out, size_t *k)
{
    size_t body = (size_t)rec[3] << 8 | rec[4];
#ifdef MFD_HAVE_IPSEC_MB
    if (r->gcm) {
        struct gcm_context_data ctx;
        const uint8_t *c = rec + MFD_TLS_HDR, *tag = c + *k;
        uint8_t mine[MFD_TLS_TAG], diff = 0;
        if (r->cipher == GNUTLS_CIPHER_AES_128_GCM)
            IMB_AES128_GCM_DEC(imb, r->gcm, &ctx, out, c, *k, n, rec,
                               MFD_TLS_HDR, mine, MFD_TLS_TAG);
        else
            IMB_AES256_GCM_DEC(imb, r->gcm, &ctx, out, c, *k, n, rec,
                               MFD_TLS_HDR, mine, MFD_TLS_TAG);
        gnutls_memset(&ctx, 0, sizeof(ctx));
        /* In constant time. */
        for (int i = 0; i < MFD_TLS_TAG; i++)
            diff |= mine[i] ^ tag[i];
        gnutls_memset(mine, 0, sizeof(mine));
        return diff ? -1 : 0;
    }
#endif
    return gnutls_aead_cipher_decrypt(r->aead, n, 12, rec, MFD_TLS_HDR,
                                      MFD_TLS_TAG, rec + MFD_TLS_HDR, body,
                                      out, k) < 0
               ? -1
               : 0;
}

int mfd__tlsrec_open(mfd_tls_rec *r, const uint8_t *rec, uint8_t *out,
                     size_t *len, uint8_t *type, const char **why)
{
    size_t body = (size_t)rec[3] << 8 | rec[4], k = body - MFD_TLS_TAG;
    uint8_t n[12];
    nonce(r, n);
    if (open_body(r, n, rec, out, &k)) {
        /* GnuTLS leaves the forged plaintext there: none of it may stay
         * (out may be guest memory). */
        gnutls_memset(out, 0, body - MFD_TLS_TAG);
        *why = "a record failed authentication (bad_record_mac)";
        return -1;
    }
    r->seq++;
    if (k > MFD_TLS_MAX_PLAIN + 1) {
        *why = "a record with more than 16385 bytes of inner plaintext "
               "(record_overflow)";
        return -1;
    }
    while (k && !out[k - 1])
        k--;
    if (!k) {
        *why = "a record without a content type (all padding)";
        return -1;
    }
    *type = out[--k];
    *len = k;
    return 0;
}
