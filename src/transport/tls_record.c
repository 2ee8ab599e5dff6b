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

#include <string.h>

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

int mfd__tlsrec_init(mfd_tls_rec *r, gnutls_session_t sess, bool read,
                     const uint8_t *secret, size_t secret_len)
{
    memset(r, 0, sizeof(*r));
    if (gnutls_protocol_get_version(sess) != GNUTLS_TLS1_3)
        return -1;
    gnutls_cipher_algorithm_t c = gnutls_cipher_get(sess);
    if (c != GNUTLS_CIPHER_AES_128_GCM && c != GNUTLS_CIPHER_AES_256_GCM &&
        c != GNUTLS_CIPHER_CHACHA20_POLY1305)
        return -1;
    gnutls_digest_algorithm_t d = gnutls_prf_hash_get(sess);
    size_t hl = gnutls_hash_get_len(d);
    if (!hl || hl != secret_len || hl > sizeof(r->secret) ||
        gnutls_cipher_get_iv_size(c) != sizeof(r->iv) ||
        gnutls_cipher_get_tag_size(c) != MFD_TLS_TAG)
        return -1;
    /* GnuTLS numbers each MAC as its digest. */
    r->hash = (gnutls_mac_algorithm_t)d;
    r->key_len = (unsigned)gnutls_cipher_get_key_size(c);
    r->secret_len = (unsigned)hl;
    memcpy(r->secret, secret, hl);

    uint8_t key[32];
    gnutls_datum_t mk, iv, ck;
    unsigned char seq[8];
    int rc = -1;
    if (r->key_len <= sizeof(key) && !derive(r, key) &&
        !gnutls_record_get_state(sess, read, &mk, &iv, &ck, seq) &&
        ck.size == r->key_len && !memcmp(ck.data, key, r->key_len) &&
        iv.size == sizeof(r->iv) && !memcmp(iv.data, r->iv, sizeof(r->iv))) {
        gnutls_datum_t k = {key, r->key_len};
        r->seq = get_be64(seq);
        r->cipher = c;
        rc = gnutls_aead_cipher_init(&r->aead, c, &k) ? -1 : 0;
    }
    gnutls_memset(key, 0, sizeof(key));
    if (rc) {
        r->aead = NULL;
        mfd__tlsrec_free(r);
    }
    return rc;
}

void mfd__tlsrec_free(mfd_tls_rec *r)
{
    if (r->aead)
        gnutls_aead_cipher_deinit(r->aead);
    gnutls_memset(r, 0, sizeof(*r));
}

int mfd__tlsrec_update(mfd_tls_rec *r)
{
    /* All or nothing: the next secret and keys replace the current ones
     * only once they all exist. */
    mfd_tls_rec next = *r;
    uint8_t key[32];
    gnutls_datum_t k = {key, r->key_len};
    int rc = -1;
    if (!expand_label(r, r->secret, "traffic upd", next.secret,
                      r->secret_len) &&
        !derive(&next, key) &&
        /* A new handle: gnutls_aead_cipher_set_key left the old key in
         * place here (GnuTLS 3.7.9, AES-GCM). */
        !gnutls_aead_cipher_init(&next.aead, r->cipher, &k)) {
        gnutls_aead_cipher_deinit(r->aead);
        next.seq = 0;
        *r = next;
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

int mfd__tlsrec_open(mfd_tls_rec *r, const uint8_t *rec, uint8_t *out,
                     size_t *len, uint8_t *type, const char **why)
{
    size_t body = (size_t)rec[3] << 8 | rec[4], k = body - MFD_TLS_TAG;
    uint8_t n[12];
    nonce(r, n);
    if (gnutls_aead_cipher_decrypt(r->aead, n, sizeof(n), rec, MFD_TLS_HDR,
                                   MFD_TLS_TAG, rec + MFD_TLS_HDR, body, out,
                                   &k) < 0) {
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
