/*
 * multifd.h - the public interface of libmultifd.
 *
 * libmultifd migrates memory - one or more named RAM blocks - from a source
 * process to a destination process over one main (control) channel and N
 * parallel data channels, the design of QEMU's multifd migration made into a
 * standalone engine. The wire format is described in PROTOCOL.md; this header
 * is the manual of the library.
 *
 * Lifecycle of a session
 * ----------------------
 *   Source:
 *     s = mfd_session_new();
 *     mfd_set_param(s, MFD_PARAM_CHANNELS, 4);            (optional)
 *     mfd_add_block(s, "ram0", host, length);             (one or more)
 *     rc = mfd_migrate(s, "tcp:10.0.0.2:4444");           (blocks until done)
 *     mfd_get_stats(s, &st);
 *     mfd_session_free(s);
 *
 *   Destination:
 *     s = mfd_session_new();
 *     mfd_set_incoming_dir(s, "/var/lib/images");         (optional: files)
 *     mfd_listen(s, "tcp:0.0.0.0:4444");
 *     rc = mfd_incoming(s);                               (blocks until done)
 *     for each i < mfd_block_count(s): mfd_block_get(s, i, &info);
 *     mfd_session_free(s);                                (unmaps the blocks)
 *
 * A session is used for one migration, by one thread at a time, with two
 * exceptions that are safe from any thread while a migration runs:
 * mfd_get_stats() and mfd_cancel().
 *
 * Errors
 * ------
 * Functions that can fail return an int: 0 on success, a negative error code
 * (-MFD_E...) on failure; functions returning a pointer return NULL on
 * failure. The session keeps a one-line message describing its last error,
 * for example "channel 3: packet 17: zero page offset 0x7f000 beyond block
 * 'ram0' (length 0x40000)"; read it with mfd_last_error(). Error codes are
 * stable: they are part of the ABI and travel on the wire in ERROR records.
 */
#ifndef MULTIFD_H
#define MULTIFD_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#if defined(MFD_BUILDING_LIBRARY) && defined(__GNUC__)
#define MFD_API __attribute__((visibility("default")))
#else
#define MFD_API
#endif

/* Version of the library. The wire protocol has its own version (1). */
#define MFD_VERSION_MAJOR 0
#define MFD_VERSION_MINOR 1
#define MFD_VERSION_PATCH 0
#define MFD_VERSION_NUMBER                                                     \
    (MFD_VERSION_MAJOR * 10000 + MFD_VERSION_MINOR * 100 + MFD_VERSION_PATCH)

/** Returns MFD_VERSION_NUMBER of the library actually linked. */
MFD_API unsigned mfd_version_number(void);
/** Returns the library version as a string, e.g. "0.1.0". */
MFD_API const char *mfd_version_string(void);

/* ------------------------------------------------------------------------ */
/* Error codes                                                              */
/* ------------------------------------------------------------------------ */

/*
 * The list of error codes. Values are pinned forever; new codes are only
 * appended. Functions return the negative value.
 */
#define MFD_ERRNO_MAP(X)                                                       \
    X(INVAL, 1, "invalid argument")                                            \
    X(NOMEM, 2, "out of memory")                                               \
    X(SYS, 3, "system call failed")                                            \
    X(PROTO, 4, "protocol error")                                              \
    X(CLOSED, 5, "connection closed by peer")                                  \
    X(PEER, 6, "peer reported an error")                                       \
    X(CANCELED, 7, "migration cancelled")                                      \
    X(VERIFY, 8, "verification failed")                                        \
    X(UNSUPPORTED, 9, "not supported")                                         \
    X(URI, 10, "invalid URI")                                                  \
    X(STATE, 11, "call not valid in this session state")                       \
    X(TIMEDOUT, 12, "timed out")                                               \
    X(REFUSED, 13, "setting refused by the destination")

typedef enum {
    MFD_OK = 0,
#define MFD__ERR_ENUM(name, val, msg) MFD_E##name = val,
    MFD_ERRNO_MAP(MFD__ERR_ENUM)
#undef MFD__ERR_ENUM
} mfd_errno;

/** Returns a static description of an error code (positive or negative). */
MFD_API const char *mfd_strerror(int err);
/** Returns the static name of an error code, e.g. "MFD_EPROTO". */
MFD_API const char *mfd_err_name(int err);

/* ------------------------------------------------------------------------ */
/* Sessions                                                                 */
/* ------------------------------------------------------------------------ */

typedef struct mfd_session mfd_session;

/** Creates a session with default parameters. Returns NULL if out of memory. */
MFD_API mfd_session *mfd_session_new(void);

/**
 * Frees a session: joins its threads, closes its sockets and unmaps the
 * blocks the library mapped (destination). Memory added with mfd_add_block()
 * belongs to the caller and is left alone. NULL is accepted.
 */
MFD_API void mfd_session_free(mfd_session *s);

/**
 * Returns the message of the session's last error, or "" if there was none.
 * The string belongs to the session and stays valid until the next call on
 * the session that can fail.
 */
MFD_API const char *mfd_last_error(const mfd_session *s);

/* ------------------------------------------------------------------------ */
/* Parameters                                                               */
/* ------------------------------------------------------------------------ */

/*
 * Parameters are set by number (mfd_set_param) or by QEMU-style name
 * (mfd_set_param_by_name). Numbers are spaced so new knobs never shift old
 * ones. Parameters must be set before mfd_migrate() / mfd_incoming().
 */
typedef enum {
    /* "multifd-channels": number of data channels, 1..255, default 2. */
    MFD_PARAM_CHANNELS = 100,
    /*
     * "zero-page-detection": MFD_ZPD_NONE, MFD_ZPD_LEGACY or MFD_ZPD_MULTIFD
     * (default). Names: "none", "legacy", "multifd". With legacy or
     * multifd, the first pass takes pages of private anonymous memory that
     * the page tables show were never written as zero pages without
     * reading them (PAGEMAP_SCAN, Linux 6.7; stats: untouched_pages).
     */
    MFD_PARAM_ZERO_PAGE_DETECTION = 101,
    /* "page-size": bytes, a power of two in 4096..65536, default 4096. */
    MFD_PARAM_PAGE_SIZE = 102,
    /* "crc": 1 = data packets carry CRC32C (feature CRC). Default 0. */
    MFD_PARAM_CRC = 103,
    /*
     * "verify": 1 = the source sends an XXH3-64 digest of every block and
     * the destination checks it before it reports success (feature VERIFY).
     * Default 0.
     */
    MFD_PARAM_VERIFY = 104,
    /*
     * "prealloc": destination only; 1 = populate the memory the library
     * maps for each block before the data channels connect, as a VMM that
     * preallocates guest RAM does. Default 0 (fresh memory, faulted in on
     * first write; zero pages are never touched).
     */
    MFD_PARAM_PREALLOC = 105,
    /*
     * "max-total-size": destination only; the largest total size of all
     * blocks it accepts, in bytes. 0 (the default) means what this host can
     * hold: its physical memory for anonymous memory, the free space of the
     * filesystem for mfd_set_incoming_dir(). A source offering more is
     * refused with an ERROR naming the total size.
     */
    MFD_PARAM_MAX_TOTAL_SIZE = 106,
    /*
     * "handshake-timeout": milliseconds within which a connection must send
     * its whole preamble or channel init, and a destination the whole of
     * each setup record (HELLO, BLOCK, SETUP_END); a source waits that long
     * for the preamble answer, and at most that long for each connect.
     * After READY a destination waits at most that long for all its data
     * channels. READY is awaited without limit (mapping or preallocating
     * large memory takes time); mfd_cancel() ends any wait.
     * Default 10000.
     */
    MFD_PARAM_HANDSHAKE_TIMEOUT = 107,
    /*
     * "dirty-tracker": how the source learns which pages changed while it
     * migrates (see "Live migration" below). MFD_TRACKER_NONE (default): the
     * memory does not change during mfd_migrate(), one pass is enough.
     * MFD_TRACKER_MANUAL: the embedder reports writes (mfd_mark_dirty, or
     * the dirty_log callback at each sync). MFD_TRACKER_UFFD_WP: the library
     * write-protects the blocks with asynchronous userfaultfd write-protect
     * and collects written pages with the PAGEMAP_SCAN ioctl; it sees the
     * writes this process makes through the blocks' mapping only (not
     * write(2) into a shared file or memfd, nor other processes' writes:
     * report those with the manual tracker). Names: "none", "manual",
     * "uffd-wp".
     */
    MFD_PARAM_DIRTY_TRACKER = 108,
    /*
     * "downtime-limit": milliseconds. Live migration switches over once the
     * dirty bytes left, at the measured rate of data pages, would take no
     * longer.
     * 1..2000000, default 300.
     */
    MFD_PARAM_DOWNTIME_LIMIT = 109,
    /*
     * "max-bandwidth": bytes per second over all data channels together
     * (headers and payload), 0 = unlimited (the default). In a live
     * migration it is lifted for the final pass, which runs while the
     * writers are paused; without a tracker the one pass is capped.
     */
    MFD_PARAM_MAX_BANDWIDTH = 110,
    /*
     * "max-iterations": the most passes run while the writers run; the
     * switchover is forced after that many. 0 (default) = no limit.
     */
    MFD_PARAM_MAX_ITERATIONS = 111,
    /*
     * "auto-converge": 1 = when the writers dirty more than half of what a
     * pass sent, twice in a row, ask the embedder's throttle callback for
     * more throttle (cpu-throttle-initial, then +cpu-throttle-increment up
     * to max-cpu-throttle). Default 0.
     */
    MFD_PARAM_AUTO_CONVERGE = 112,
    /* "cpu-throttle-initial": percent, 1..99, default 20. */
    MFD_PARAM_CPU_THROTTLE_INITIAL = 113,
    /* "cpu-throttle-increment": percent, 1..99, default 10. */
    MFD_PARAM_CPU_THROTTLE_INCREMENT = 114,
    /* "max-cpu-throttle": percent, 1..99, default 99. */
    MFD_PARAM_MAX_CPU_THROTTLE = 115,
    /*
     * "network-timeout": milliseconds after which a TCP peer that stopped
     * acknowledging data (TCP_USER_TIMEOUT) or answering keepalive probes
     * fails the migration: a cut network is noticed in bounded time. Also
     * any peer (TCP or Unix) that took nothing written to it for that long:
     * the main channel's records, and the data channels' packets on a Unix
     * socket (SO_SNDTIMEO); and the bound on zero-copy completions. COLO:
     * CHECKPOINT_ACK must come within it plus 1 s per 256 MiB of the
     * checkpoint. 0 leaves the kernel's defaults (many minutes) and no
     * bound of ours. Default 10000.
     */
    MFD_PARAM_NETWORK_TIMEOUT = 116,
    /*
     * "multifd-compression": MFD_COMPRESSION_NONE (default), _ZLIB, _ZSTD
     * or _LZ4 (names "none", "zlib", "zstd", "lz4"): each channel compresses
     * its packets' normal pages as one stream for the whole migration
     * (lz4: page by page). The destination follows HELLO.
     */
    MFD_PARAM_COMPRESSION = 117,
    /* "multifd-zlib-level": 0..9, default 1. */
    MFD_PARAM_ZLIB_LEVEL = 118,
    /* "multifd-zstd-level": 1..20, default 1. */
    MFD_PARAM_ZSTD_LEVEL = 119,
    /* "multifd-lz4-acceleration": 1..65537, default 1 (higher: faster). */
    MFD_PARAM_LZ4_ACCELERATION = 120,
    /*
     * "accept-compression": destination only; the methods it accepts, one
     * bit per MFD_COMPRESSION_* value (by name: a comma-separated list such
     * as "none,zstd"). A source asking for another is refused at HELLO with
     * an error naming the method. Default: every method built in.
     */
    MFD_PARAM_ACCEPT_COMPRESSION = 121,
    /*
     * "zero-copy-send": 1 = send raw page payloads with MSG_ZEROCOPY (the
     * kernel reads them straight from the blocks); completions are reaped
     * from the socket error queue, and every outstanding send is waited
     * for at each SYNC and at the end. Refused together with compression,
     * and when RLIMIT_MEMLOCK is too low for the data in flight (the error
     * says how much is needed). Default 0.
     */
    MFD_PARAM_ZERO_COPY_SEND = 122,
    /*
     * "direct-io": snapshot files only (file: URIs): page I/O with
     * O_DIRECT, bypassing the page cache (header, bitmaps and device
     * state stay buffered). The blocks' memory must be 4096-aligned. A
     * file system that refuses O_DIRECT (tmpfs before Linux 6.6, ramfs)
     * fails the save or restore with a message saying so; there is no
     * silent fallback. Default 0.
     */
    MFD_PARAM_DIRECT_IO = 123,
    /*
     * "x-colo": 1 = a COLO session (see "COLO"): on the source, the live
     * migration turns into continuous checkpoints; on the destination, the
     * session keeps a replica. Both sides must set it. Default 0.
     */
    MFD_PARAM_COLO = 124,
    /* "checkpoint-interval": ms between checkpoint starts. Default 600. */
    MFD_PARAM_CHECKPOINT_INTERVAL = 125,
    /* "heartbeat-interval": ms between HEARTBEAT records. Default 100. */
    MFD_PARAM_HEARTBEAT_INTERVAL = 126,
    /*
     * "heartbeat-timeout": ms of silence on the main channel after which
     * the peer is lost: the secondary promotes its replica, the primary
     * goes on unprotected. Default 2000.
     */
    MFD_PARAM_HEARTBEAT_TIMEOUT = 127,
    /*
     * "colo-staging": 1 = at a checkpoint, copy the dirty pages to a
     * staging copy and resume the writers before the transfer (the Remus
     * way; the copy costs the blocks' size in memory, populated before
     * checkpoint 1 so that pauses never fault it in); 0 = the
     * writers stay paused through the transfer. Default 1 (shorter pauses:
     * docs/colo.md has the numbers).
     */
    MFD_PARAM_COLO_STAGING = 128,
    /*
     * "idle-timeout": destination: fail the migration when no complete
     * record or packet arrived from the source for this many ms (a source
     * that stalls, or feeds a record or packet a byte at a time, cannot
     * hold the destination). 0 = never. Default 60000.
     */
    MFD_PARAM_IDLE_TIMEOUT = 129,
    /*
     * "tls-verify-peer": destination with x509 credentials: 1 = require a
     * client certificate signed by the CA (QEMU's verify-peer, default 1);
     * 0 = anonymous clients allowed.
     */
    MFD_PARAM_TLS_VERIFY_PEER = 130,
} mfd_param;

/* Values of MFD_PARAM_COMPRESSION. */
typedef enum {
    MFD_COMPRESSION_NONE = 0,
    MFD_COMPRESSION_ZLIB = 1,
    MFD_COMPRESSION_ZSTD = 2,
    MFD_COMPRESSION_LZ4 = 3,
} mfd_compression;

/* Values of MFD_PARAM_DIRTY_TRACKER. */
typedef enum {
    MFD_TRACKER_NONE = 0,
    MFD_TRACKER_MANUAL = 1,
    MFD_TRACKER_UFFD_WP = 2,
} mfd_dirty_tracker;

/* Values of MFD_PARAM_ZERO_PAGE_DETECTION (wire values of HELLO). */
typedef enum {
    MFD_ZPD_NONE = 0,
    MFD_ZPD_LEGACY = 1,
    MFD_ZPD_MULTIFD = 2,
} mfd_zero_page_detection;

/** Sets a parameter. Returns -MFD_EINVAL if out of bounds, -MFD_ESTATE late. */
MFD_API int mfd_set_param(mfd_session *s, mfd_param p, int64_t value);
/** Reads a parameter's current value into *value. */
MFD_API int mfd_get_param(const mfd_session *s, mfd_param p, int64_t *value);
/** Reads the bounds of a parameter. Returns -MFD_EINVAL for an unknown one. */
MFD_API int mfd_param_bounds(mfd_param p, int64_t *min, int64_t *max);
/**
 * Sets a parameter by its QEMU-style name (as in the comments above) from
 * a string: a decimal number, "on"/"off", for zero-page-detection
 * "none"/"legacy"/"multifd", for dirty-tracker "none"/"manual"/"uffd-wp".
 * Sizes accept K, M, G, T suffixes (powers of 1024). The TLS settings
 * take strings by name too: "tls-creds" (mfd_set_tls_x509), "tls-psk",
 * "tls-hostname", "tls-priority", "tls-authz" (adds one).
 */
MFD_API int mfd_set_param_by_name(mfd_session *s, const char *name,
                                  const char *value);

/* ------------------------------------------------------------------------ */
/* RAM blocks                                                               */
/* ------------------------------------------------------------------------ */

/**
 * Adds a RAM block: `length` bytes at `host`, a multiple of the page size.
 * `name` is 1..255 printable ASCII characters, unique in the session. At
 * most 1024 blocks. The memory stays the caller's.
 *
 * On a source, the memory must remain mapped and readable until
 * mfd_migrate() returns; the library never writes it. Without a dirty
 * tracker (MFD_PARAM_DIRTY_TRACKER) it makes one pass over every page: the
 * memory must not change while it runs (a paused guest), or the destination
 * may receive a mix of old and new contents (feature VERIFY would then fail
 * the migration). With a tracker the memory may change until the pause
 * callback returns (see "Live migration").
 *
 * On a destination (before mfd_incoming()), the caller provides the memory
 * to receive into instead of the library mapping it, as a VMM that has
 * already allocated its guest RAM does: the source must then offer exactly
 * these blocks (same names, lengths and order), or it is refused. The
 * memory must be zero-filled, like fresh guest RAM, because zero pages that
 * were never received are not written.
 */
MFD_API int mfd_add_block(mfd_session *s, const char *name, void *host,
                          uint64_t length);

/**
 * Source: tells the library that `length` bytes at `offset` of block
 * `block` (its index in mfd_add_block() order) read as zero, as the holes
 * of a sparse file the block maps do (SEEK_HOLE). With zero-page-detection
 * legacy or multifd, the first pass lists the pages wholly inside as zero
 * pages without reading them (stats: untouched_pages): reading a hole of a
 * shared file mapping would allocate a page of page cache (of tmpfs
 * memory) for it. The caller vouches for the zeros: they must hold from
 * the first pass until the pause callback returns, or, with a dirty
 * tracker, until it has started, after which writes are tracked. Before
 * mfd_migrate(), from the thread setting the session up; may be called
 * many times. Feature VERIFY hashes these pages as zeros too (without a
 * tracker), so it does not read them either, nor catch a wrong hint.
 */
MFD_API int mfd_block_zero_hint(mfd_session *s, int block, uint64_t offset,
                                uint64_t length);

/**
 * Destination: map each incoming block as the file DIR/NAME (created or
 * truncated, sparse, mapped shared, so zero pages stay holes) instead of
 * fresh anonymous memory. NULL restores anonymous memory. Names containing
 * '/' or equal to "." or ".." are refused in this mode.
 */
MFD_API int mfd_set_incoming_dir(mfd_session *s, const char *dir);

/**
 * Destination: receive block `block` into the file `path` (created or
 * truncated, sparse, mapped shared) instead of anonymous memory or
 * DIR/NAME. Takes precedence over mfd_set_incoming_dir() for that block;
 * blocks without a named file use the directory, or anonymous memory.
 * Set before mfd_incoming().
 */
MFD_API int mfd_set_incoming_file(mfd_session *s, const char *block,
                                  const char *path);

typedef struct {
    const char *name; /* NUL-terminated, owned by the session */
    void *host;       /* the block's memory */
    uint64_t length;  /* bytes */
} mfd_block_info;

/**
 * Source: the opaque device state (a VMM's CPU and device registers) sent
 * after the last pass, up to 256 MiB. The buffer stays the caller's and must
 * remain valid until mfd_migrate() returns. Default: none (empty).
 */
MFD_API int mfd_set_device_state(mfd_session *s, const void *data,
                                 size_t len);

/**
 * Destination, after mfd_incoming() returned 0: the device state the source
 * sent. The buffer belongs to the session (valid until mfd_session_free).
 * Returns -MFD_ESTATE before a successful migration.
 */
MFD_API int mfd_get_device_state(const mfd_session *s, const void **data,
                                 size_t *len);

/** Number of blocks in the session (added, or received on a destination). */
MFD_API int mfd_block_count(const mfd_session *s);
/**
 * Fills *info for block `index`. The memory stays valid until free. On a
 * COLO secondary it is the replica (the last committed checkpoint).
 */
MFD_API int mfd_block_get(const mfd_session *s, int index, mfd_block_info *info);

/**
 * XXH3-64 of block `index`'s memory (what mfd_block_get() shows). On a
 * destination whose migration (or mfd_restore()) completed, pages of
 * memory the library mapped that it never placed data in are hashed as
 * the zeros they were mapped as, without being read (as VERIFY does), so
 * hashing a large, mostly empty block does not fault it all in: call it
 * before anything else writes the memory (before the guest resumes), or
 * writes into such pages go unseen. Otherwise (a source, a failed
 * migration, a COLO replica, the caller's own memory) every byte is read.
 * -MFD_ESTATE when the block has no memory (a setup that failed).
 */
MFD_API int mfd_block_digest(const mfd_session *s, int index,
                             uint64_t *digest);

/* ------------------------------------------------------------------------ */
/* Migration                                                                */
/* ------------------------------------------------------------------------ */

/*
 * URIs follow QEMU's forms: "tcp:HOST:PORT" (HOST a name, an IPv4 address or
 * a bracketed IPv6 address; PORT may be 0 for mfd_listen, which then binds an
 * ephemeral port) and "unix:PATH"; "file:PATH" saves to a snapshot file
 * (see "Snapshot files").
 */

/**
 * Source: migrates every block to the destination listening at `uri` and
 * returns 0 only after the destination answered DONE (everything applied
 * and verified). On failure returns a negative code, and mfd_last_error()
 * says what went wrong; the blocks are never modified. Blocks the caller.
 * With "file:PATH" it saves a snapshot instead and returns 0 once the file
 * is complete and durable. After COMPLETE the wait for DONE has no time
 * limit of its own (the destination may be verifying or flushing a large
 * guest; a peer that vanishes fails it at once, a cut network within
 * network-timeout): mfd_cancel() ends it.
 */
MFD_API int mfd_migrate(mfd_session *s, const char *uri);

/**
 * Destination: binds and listens on `uri`. Returns once the socket listens,
 * so a caller can learn the address (mfd_listen_uri) before the source
 * connects. Parameters and blocks may still be set until mfd_incoming().
 * A listening session cannot be used with mfd_migrate().
 */
MFD_API int mfd_listen(mfd_session *s, const char *uri);

/**
 * Returns the URI the session listens on, with an ephemeral port resolved
 * ("tcp:127.0.0.1:40123"), or NULL before mfd_listen().
 */
MFD_API const char *mfd_listen_uri(const mfd_session *s);

/**
 * Destination: accepts one migration on the listening socket, maps its
 * blocks (or uses the caller's, see mfd_add_block), receives every page and
 * returns 0 only after DONE was sent. Stray connections (wrong magic,
 * foreign session) are closed and logged without affecting the migration.
 * On failure returns a negative code; the received data must be considered
 * garbage.
 *
 * Fresh anonymous memory is filled with UFFDIO_COPY (userfaultfd): until
 * this call returns, the blocks must not be touched by anyone else.
 */
MFD_API int mfd_incoming(mfd_session *s);

/* ------------------------------------------------------------------------ */
/* TLS (PROTOCOL.md 6)                                                      */
/* ------------------------------------------------------------------------ */

/*
 * With TLS configured, every connection - main and data - starts with a
 * TLS handshake (GnuTLS; TLS 1.3, or 1.2 with AEAD ciphers only), each
 * channel its own session, its crypto on the channel's thread. A
 * destination with TLS closes any connection whose handshake fails, as it
 * would a stray plaintext one; a source with TLS never falls back to
 * plaintext. Both sides need the same kind of credentials. Zero-copy send
 * is refused with TLS (the payload is encrypted into a copy anyway).
 */

/**
 * x509 credentials: `dir` holds ca-cert.pem, and server-cert.pem /
 * server-key.pem (destination) or client-cert.pem / client-key.pem (source;
 * optional: without them the source connects anonymously), QEMU's
 * tls-creds-x509 layout. The source checks the destination's certificate
 * against the CA and its name against the URI's host, or the name set with
 * mfd_set_tls_hostname().
 */
MFD_API int mfd_set_tls_x509(mfd_session *s, const char *dir);
/**
 * PSK credentials: a file of `name:hexkey` lines (QEMU's tls-creds-psk);
 * the source uses the first line, the destination accepts any.
 */
MFD_API int mfd_set_tls_psk(mfd_session *s, const char *keys_file);
/** Source: the name the destination's certificate must carry. */
MFD_API int mfd_set_tls_hostname(mfd_session *s, const char *name);
/**
 * Either side: the GnuTLS priority string of every channel's handshake
 * (QEMU's tls-creds `priority`), e.g. "NORMAL:-CIPHER-ALL:+AES-256-GCM"
 * to allow that cipher alone; with PSK, the PSK key exchanges it does not
 * name are added. Checked here (-MFD_EINVAL): a string GnuTLS cannot parse
 * (naming where), an empty one, and keywords that weaken how peers are
 * authenticated (%VERIFY_ALLOW_*, %VERIFY_DISABLE_*, %PROFILE_LOW,
 * %PROFILE_VERY_WEAK, %NO_SESSION_HASH). Without TLS credentials the
 * migration or listen fails. A handshake that ends on anything but TLS
 * 1.3 or 1.2 with an AEAD cipher of a 16-byte tag fails the channel.
 * Default: TLS 1.3 and 1.2, AES-128-GCM, AES-256-GCM, ChaCha20-Poly1305.
 */
MFD_API int mfd_set_tls_priority(mfd_session *s, const char *priority);
/**
 * Destination, x509: accept only clients whose certificate's distinguished
 * name (RFC 4514, e.g. "CN=source1,O=Example") is one of those added.
 * Implies a client certificate is required.
 */
MFD_API int mfd_add_tls_authz(mfd_session *s, const char *dn);

/* ------------------------------------------------------------------------ */
/* Snapshot files                                                           */
/* ------------------------------------------------------------------------ */

/*
 * A snapshot file (PROTOCOL.md 5, QEMU's mapped-ram layout) holds every
 * block's non-zero pages at fixed offsets, a page-presence bitmap per
 * block, and the device state. Save with mfd_migrate(s, "file:PATH"): the
 * channel threads write their batches in place with pwrite (N writers in
 * parallel, multifd-channels), zero pages are never written (the file
 * stays sparse), and a live save (dirty tracker) overwrites re-dirtied
 * pages in place in later passes. The bitmaps, the header and the
 * device state are written at the end; the COMPLETE flag last, once
 * everything else is durable (fdatasync). A save that fails or is killed
 * leaves a file without COMPLETE, which mfd_restore() refuses.
 * Compression and zero-copy-send are refused with file: URIs;
 * MFD_PARAM_DIRECT_IO selects O_DIRECT page I/O.
 */

/**
 * Destination: restores the snapshot at `uri` ("file:PATH") with
 * multifd-channels reader threads into blocks the library maps (fresh
 * anonymous memory, or files of mfd_set_incoming_dir() /
 * mfd_set_incoming_file(), or populated memory with MFD_PARAM_PREALLOC),
 * or into the caller's blocks (mfd_add_block before this call; names,
 * lengths and order must match the file's, and the memory must be
 * zero-filled). Pages absent from the file are never touched. The file
 * is validated before anything is mapped: a truncated file, a missing
 * COMPLETE flag, a bad CRC, a region outside the file or overlapping
 * another, an unknown version or an unusable page size fail with a
 * message saying which. Returns 0 only when every present page was
 * read; afterwards mfd_block_get() and mfd_get_device_state() give the
 * result. A session is used for one restore (not with mfd_listen).
 */
MFD_API int mfd_restore(mfd_session *s, const char *uri);

/**
 * Cancels a running mfd_migrate() or mfd_incoming() from any thread. The
 * peer is told (CANCEL or ERROR record) and the call returns -MFD_ECANCELED.
 */
MFD_API int mfd_cancel(mfd_session *s);

/**
 * Log callback: receives one line (no trailing newline) for events an
 * operator should see, such as a stray connection being closed. By default
 * lines go to stderr prefixed with "multifd: ". `fn` NULL silences them.
 */
typedef void (*mfd_log_fn)(void *opaque, const char *line);
MFD_API void mfd_set_log(mfd_session *s, mfd_log_fn fn, void *opaque);

/* ------------------------------------------------------------------------ */
/* Live migration                                                           */
/* ------------------------------------------------------------------------ */

/*
 * With a dirty tracker, mfd_migrate() runs QEMU's pre-copy: the first pass
 * sends every page while the embedder's writers keep running; each later
 * pass sends the pages written meanwhile. After each pass it measures, over
 * 100 ms windows across all channels, the send rate and the rate at which
 * data pages move (their bytes before compression), and the dirty rate; it
 * switches over once the dirty bytes left / that rate <= downtime-limit,
 * after max-iterations passes, or when mfd_switchover() asks: it calls
 * `pause`, collects the last dirty pages, sends them in a final pass, then
 * the device state, and waits for DONE. The writers stay paused after a
 * successful migration (the destination owns the memory now). On any
 * failure the source calls `resume` if it had paused, and its memory is as
 * the writers left it.
 */

/* What one pass did, for the progress callback. */
typedef struct {
    uint64_t pass;               /* 1, 2, ... */
    bool final;                  /* the pass after the pause */
    uint64_t pages;              /* pages sent in this pass */
    uint64_t bytes;              /* data-channel bytes of this pass */
    uint64_t time_us;            /* duration of this pass */
    uint64_t dirty_pages;        /* pages written meanwhile, to send next */
    uint64_t dirty_rate_bps;     /* bytes dirtied per second during the pass */
    uint64_t bandwidth_bps;      /* measured send rate, bytes per second */
    /* Guest bytes of normal pages moved per second (before compression). */
    uint64_t memory_rate_bps;
    uint64_t expected_downtime_ms; /* dirty bytes / memory_rate_bps */
    int throttle_pct;            /* auto-converge throttle in effect */
} mfd_pass_info;

typedef struct {
    /*
     * Stops every writer of the blocks and returns when they are stopped.
     * Called once, from the migration thread, before the final pass. It may
     * call mfd_set_device_state() to hand over the device state as it is
     * now. Required with a dirty tracker.
     */
    void (*pause)(void *opaque);
    /* Restarts the writers after a failed migration that had paused them. */
    void (*resume)(void *opaque);
    /*
     * auto-converge: make the writers spend `percent` of their time asleep
     * (QEMU's CPU throttle). Called with 0 when the migration ends.
     */
    void (*throttle)(void *opaque, int percent);
    /*
     * Manual tracker, optional: set the bit of every page written since the
     * previous call (bit i of word i / 64 = page i of block `block`; bits
     * already set must stay set), as KVM_GET_DIRTY_LOG hands a VMM its dirty
     * log. Called at each dirty sync for every block.
     */
    void (*dirty_log)(void *opaque, int block, uint64_t *bitmap,
                      uint64_t pages);
    /* After each pass, from the migration thread. Optional. */
    void (*progress)(void *opaque, const mfd_pass_info *pass);
} mfd_live_ops;

/** Sets the live-migration callbacks; `ops` is copied. Before migrate. */
MFD_API int mfd_set_live_ops(mfd_session *s, const mfd_live_ops *ops,
                             void *opaque);

/**
 * Manual tracker: marks `length` bytes at `offset` of block `block` (its
 * index in mfd_add_block() order) written. Safe from any thread, at any
 * time during mfd_migrate(); cheap (an atomic OR per page).
 */
MFD_API int mfd_mark_dirty(mfd_session *s, int block, uint64_t offset,
                           uint64_t length);

/**
 * Asks a running live migration to switch over at the end of its current
 * pass, whatever the expected downtime. Safe from any thread.
 */
MFD_API int mfd_switchover(mfd_session *s);

/* ------------------------------------------------------------------------ */
/* COLO: continuous checkpoints to a hot standby                            */
/* ------------------------------------------------------------------------ */

/*
 * With MFD_PARAM_COLO on both sides (PROTOCOL.md 4), mfd_migrate() on the
 * primary first migrates live as usual (a dirty tracker is required), then
 * does not end: it commits checkpoint 0 (the state just migrated), resumes
 * the writers, and every checkpoint-interval ms pauses them, collects the
 * dirty pages, and ships them with the device state (set from the pause
 * callback with mfd_set_device_state) as a checkpoint, which the secondary
 * acknowledges once committed. mfd_migrate() returns 0 after mfd_colo_stop()
 * (COMPLETE and DONE end the session; the writers keep running), or a
 * negative code when the secondary is lost (no heartbeat for
 * heartbeat-timeout, or the connection failed): the writers are running
 * then too - the primary goes on unprotected.
 *
 * The secondary's mfd_incoming() receives every checkpoint into a COLO
 * cache, never into the replica; on the checkpoint's end it copies the
 * pages the checkpoint recorded into the replica and acknowledges. It
 * returns 0 when the primary ends the session, and also when the primary
 * is lost after at least one committed checkpoint: the replica is then
 * promoted (mfd_colo_state says which). mfd_block_get() gives the replica.
 */

/* What one checkpoint cost, for the primary's checkpoint callback. */
typedef struct {
    uint64_t id;          /* 1, 2, ... (0 is the initial migration) */
    uint64_t pause_us;    /* writers paused: pause callback to resume */
    uint64_t transfer_us; /* CHECKPOINT_BEGIN to CHECKPOINT_ACK */
    uint64_t dirty_pages; /* pages the checkpoint carried */
    uint64_t bytes;       /* data-channel bytes of the checkpoint */
} mfd_checkpoint_info;

typedef struct {
    /* Primary: after each acknowledged checkpoint (migration thread). */
    void (*checkpoint)(void *opaque, const mfd_checkpoint_info *c);
    /* Primary: the secondary is lost; the writers keep running. */
    void (*unprotected)(void *opaque, const char *reason);
    /*
     * Secondary: the replica is now checkpoint `id` (main thread; the
     * replica may be read, not written, until the callback returns).
     */
    void (*committed)(void *opaque, uint64_t id);
    /* Secondary: the primary is lost; the replica (checkpoint `id`) is yours. */
    void (*promoted)(void *opaque, uint64_t id, const char *reason);
} mfd_colo_ops;

/** Sets the COLO callbacks; `ops` is copied. Before migrate / incoming. */
MFD_API int mfd_set_colo_ops(mfd_session *s, const mfd_colo_ops *ops,
                             void *opaque);
/** Primary: take a checkpoint now rather than at the interval. Any thread. */
MFD_API int mfd_colo_checkpoint(mfd_session *s);
/**
 * Primary: end the COLO session after the checkpoint in progress (COMPLETE,
 * DONE); mfd_migrate() then returns 0. Any thread.
 */
MFD_API int mfd_colo_stop(mfd_session *s);

typedef enum {
    MFD_COLO_OFF = 0,         /* not a COLO session */
    MFD_COLO_MIGRATING = 1,   /* the initial live migration */
    MFD_COLO_PROTECTED = 2,   /* checkpoints running */
    MFD_COLO_UNPROTECTED = 3, /* primary: the secondary was lost */
    MFD_COLO_PROMOTED = 4,    /* secondary: the replica was promoted */
    MFD_COLO_STOPPED = 5,     /* the primary ended the session */
} mfd_colo_state;

/** The session's COLO state. */
MFD_API mfd_colo_state mfd_colo_state_get(const mfd_session *s);

/* ------------------------------------------------------------------------ */
/* Statistics                                                               */
/* ------------------------------------------------------------------------ */

#define MFD_MAX_CHANNELS 255

typedef struct {
    uint64_t packets;      /* RAM packets, SYNC packets included */
    uint64_t sync_packets; /* SYNC packets */
    uint64_t normal_pages; /* pages carried as data */
    uint64_t zero_pages;   /* pages listed as zero */
    uint64_t bytes;        /* bytes on the wire: init, headers, payload */
    /* Compression: pages' bytes before and after, time in the (de)compressor. */
    uint64_t raw_bytes;
    uint64_t compressed_bytes;
    uint64_t compress_us;
    /* Zero-copy send. */
    uint64_t zerocopy_sends;         /* payloads sent with MSG_ZEROCOPY */
    uint64_t zerocopy_notifications; /* completions reaped */
    uint64_t zerocopy_copied;        /* completions where the kernel copied */
} mfd_channel_stats;

typedef struct {
    int role;               /* 0 none yet, 1 source, 2 destination */
    int status;             /* 0 idle, 1 setup, 2 active, 3 completed, 4 failed */
    uint32_t channels;      /* data channels in use */
    uint32_t page_size;
    uint64_t total_time_us; /* start to DONE (so far, while running) */
    uint64_t setup_time_us; /* start until all data channels are up */
    uint64_t ram_bytes;     /* total size of all blocks */
    uint64_t main_bytes;    /* bytes on the main channel (both directions) */
    uint64_t data_bytes;    /* bytes on all data channels */
    uint64_t normal_pages;  /* over all channels (and passes) */
    uint64_t zero_pages;    /* multifd-mode and legacy zero pages */
    uint64_t legacy_zero_pages; /* zero pages sent as ZERO_PAGES records */
    /*
     * Source: zero pages known as such without reading them, from the page
     * tables (never written, or only read), in the first pass; included in
     * zero_pages.
     */
    uint64_t untouched_pages;
    uint64_t data_packets;  /* RAM packets listing at least one page */
    uint64_t sync_packets;
    uint64_t iterations;    /* completed passes */
    double throughput_gbps; /* guest memory moved, 10^9 bytes per second */
    /* Compression, summed over channels; ratio = raw / compressed. */
    uint64_t raw_bytes;
    uint64_t compressed_bytes;
    uint64_t compress_us;
    double compression_ratio;
    /* Zero-copy send, summed; passes in which the kernel copied anyway. */
    uint64_t zerocopy_sends;
    uint64_t zerocopy_notifications;
    uint64_t zerocopy_copied;
    uint64_t zerocopy_copied_passes;
    /* Live migration (source). */
    uint64_t dirty_sync_count;     /* dirty syncs (QEMU's name) */
    uint64_t dirty_pages;          /* pages left to send after the last sync */
    uint64_t dirty_rate_bps;       /* bytes dirtied per second, last pass */
    uint64_t bandwidth_bps;        /* measured send rate, last pass */
    uint64_t memory_rate_bps;      /* normal pages' bytes moved per second */
    uint64_t expected_downtime_ms; /* dirty bytes / memory_rate_bps */
    uint64_t downtime_us;          /* pause to DONE */
    int throttle_pct;              /* auto-converge throttle in effect */
    int progress_pct;              /* 0..100, never goes backwards */
#define MFD_PASS_STATS 64
    uint64_t pass_bytes[MFD_PASS_STATS]; /* data bytes of pass i+1 */
    uint64_t pass_pages[MFD_PASS_STATS]; /* pages sent in pass i+1 */
    /* COLO: checkpoints acknowledged (primary) or committed (secondary),
     * and the last one's id. */
    uint64_t colo_checkpoints;
    uint64_t colo_last_id;
    int colo_state; /* mfd_colo_state */
    mfd_channel_stats channel[MFD_MAX_CHANNELS];
} mfd_stats;

/**
 * Fills *st with a snapshot of the session's counters. Safe to call from
 * any thread while a migration runs (counters are read atomically one by
 * one; the snapshot as a whole is not a single instant).
 */
MFD_API int mfd_get_stats(const mfd_session *s, mfd_stats *st);

/**
 * Returns the stats as a JSON object in a buffer the caller frees with
 * free(), or NULL if out of memory.
 */
MFD_API char *mfd_stats_json(const mfd_session *s);

#ifdef __cplusplus
}
#endif

#endif /* MULTIFD_H */
