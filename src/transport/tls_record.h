/*
 * tls_record.h - TLS 1.3 records sealed and opened by us, on the keys of a
 * session GnuTLS negotiated (RFC 8446 5.2-5.3, 7.1-7.3).
 *
 * A data channel's bulk goes through this instead of gnutls_record_send /
 * gnutls_record_recv: the same records on the wire, but opened straight
 * into the reader's buffer and sealed many at a time into one buffer for
 * one send, where GnuTLS copies each record through buffers of its own and
 * sends each with a system call of its own. It is what kernel TLS does
 * with the same keys, in user space. AES-GCM is Intel's multi-buffer
 * crypto library's where it was built in (2-3x GnuTLS's with AVX-512),
 * the rest GnuTLS's AEAD. One direction per mfd_tls_rec; the thread that
 * owns the channel owns it.
 */
#ifndef MFD_TRANSPORT_TLS_RECORD_H
#define MFD_TRANSPORT_TLS_RECORD_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <gnutls/crypto.h>
#include <gnutls/gnutls.h>

#define MFD_TLS_HDR 5
#define MFD_TLS_TAG 16
/* The largest plaintext of a record, and of a record on the wire. */
#define MFD_TLS_MAX_PLAIN 16384u
#define MFD_TLS_MAX_CIPHER (MFD_TLS_MAX_PLAIN + 256u)
/* What sealing adds to a plaintext: header, content type, tag. */
#define MFD_TLS_OVERHEAD (MFD_TLS_HDR + 1 + MFD_TLS_TAG)

/* Record content types (RFC 8446 5.1). */
enum { MFD_TLS_ALERT = 21, MFD_TLS_HANDSHAKE = 22, MFD_TLS_DATA = 23 };

struct gcm_key_data; /* intel-ipsec-mb.h */

typedef struct {
    /* The AEAD: ipsec-mb's AES-GCM keys where it runs, else GnuTLS's. */
    struct gcm_key_data *gcm;
    gnutls_aead_cipher_hd_t aead;
    gnutls_cipher_algorithm_t cipher;
    bool gnutls_only; /* tests: GnuTLS's AEAD even for AES-GCM */
    gnutls_mac_algorithm_t hash; /* the suite's, for HKDF */
    unsigned key_len, secret_len;
    uint8_t secret[64]; /* the traffic secret of the current keys */
    uint8_t iv[12];
    uint64_t seq; /* of the next record */
} mfd_tls_rec;

/*
 * Takes over one direction (read: the peer's records, else ours) of a TLS
 * 1.3 session whose traffic secret for it is `secret` (the client's
 * application traffic secret, as the handshake logged it): derives its key
 * and IV, checks them against the session's own (gnutls_record_get_state)
 * and starts at the session's sequence number. From then on GnuTLS must
 * not touch that direction. -1 (nothing held) when the session is not TLS
 * 1.3 with an AEAD this knows, or the keys differ.
 */
int mfd__tlsrec_init(mfd_tls_rec *r, gnutls_session_t sess, bool read,
                     const uint8_t *secret, size_t secret_len);
/*
 * Tests: the same from a cipher, the suite's hash and a traffic secret
 * alone (nothing to check them against; seq 0), with GnuTLS's AEAD when
 * gnutls_only, so that the two AEADs can be held against each other.
 */
int mfd__tlsrec_init_raw(mfd_tls_rec *r, gnutls_cipher_algorithm_t c,
                         gnutls_digest_algorithm_t d, const uint8_t *secret,
                         size_t secret_len, bool gnutls_only);
void mfd__tlsrec_free(mfd_tls_rec *r);
/* AES-GCM is ipsec-mb's here (built in, and this CPU has what it needs). */
bool mfd__tlsrec_ipsec_mb(void);
/*
 * Moves to the next traffic secret and its keys (KeyUpdate); seq 0. On
 * failure nothing changed.
 */
int mfd__tlsrec_update(mfd_tls_rec *r);
/*
 * Seals len (<= MFD_TLS_MAX_PLAIN) bytes of content type `type` as one
 * record at out (room for len + MFD_TLS_OVERHEAD). Returns the record's
 * length, 0 on a cipher failure.
 */
size_t mfd__tlsrec_seal(mfd_tls_rec *r, uint8_t type, const void *p,
                        size_t len, uint8_t *out);
/*
 * The length of the record body that follows header h, or 0 when the
 * header is not that of a TLS 1.3 protected record (why says what).
 */
size_t mfd__tlsrec_body_len(const uint8_t h[MFD_TLS_HDR], const char **why);
/*
 * Opens the record at rec (header and body of mfd__tlsrec_body_len's
 * length) into out, which has room for the body's length - MFD_TLS_TAG
 * bytes. Sets *len and *type to its content's; padding is dropped. -1
 * with *why on a record that fails authentication (out then zeroed: no
 * forged plaintext stays) or is malformed.
 */
int mfd__tlsrec_open(mfd_tls_rec *r, const uint8_t *rec, uint8_t *out,
                     size_t *len, uint8_t *type, const char **why);

#endif
