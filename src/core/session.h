/*
 * session.h - the session object shared by the source (send/) and the
 * destination (recv/) rooms, its channels, and the failure protocol.
 *
 * Threads and ownership
 * ---------------------
 * Source: the caller's thread of mfd_migrate() is the migration thread. It
 * owns the main channel for writing and `cur`, the batch it fills. Each
 * send channel thread owns its socket, packet buffer and iovec array. A
 * batch changes hands by pointer swap under the channel's lock with a free
 * slot of the channel's queue (see mfd_send_chan). The return-path thread owns
 * reading the main channel after READY.
 *
 * Destination: the caller's thread of mfd_incoming() is the main thread. It
 * owns the listener and the main channel. Each recv channel thread owns its
 * socket and buffers and writes pages into the blocks; pages of one pass
 * are disjoint, and the per-iteration barrier (sync_lock / sync_cond)
 * orders passes. receivedmap bits are set with atomic operations.
 *
 * Failure: whichever thread sees an error calls mfd__fail(), which records
 * the first error only, shuts the data sockets down so blocked threads
 * return, and wakes every waiter (semaphores, condition variables, the
 * destination's wake eventfd). Sockets are closed only after every thread
 * that could use them has been joined.
 */
#ifndef MFD_CORE_SESSION_H
#define MFD_CORE_SESSION_H

#include <pthread.h>
#include <semaphore.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/uio.h>

#include "multifd.h"
#include "method/method.h"
#include "protocol/wire.h"

typedef struct mfd_block {
    char *name;
    uint32_t name_len;
    uint8_t *host;
    uint64_t length;
    uint64_t pages;
    /*
     * Destination: pages whose memory holds received data (set when a
     * normal page is placed). A zero page whose bit is clear needs nothing:
     * the memory is still the fresh, zero-filled memory it was mapped as.
     */
    uint64_t *receivedmap;
    bool mapped; /* mapped by the library, unmapped at free */
    int place;   /* destination: MFD_PLACE_*, how normal pages are written */
    int fd;      /* destination file (MFD_PLACE_PWRITE), else -1 */
    /* Source: pages to send in the current or next pass. */
    uint64_t *dirty;
    /*
     * Source: where the channel threads read pages: host, or during a COLO
     * checkpoint with staging the staging copy `shadow` (same offsets).
     */
    uint8_t *src;
    uint8_t *shadow;
    /*
     * COLO secondary: host is the COLO cache the channels write into;
     * replica the committed memory; ckpt_map the pages the current
     * checkpoint carried, ckpt_zero those of them it carried as zero;
     * replica_map the replica's pages that hold data.
     */
    uint8_t *replica;
    uint64_t *ckpt_map, *ckpt_zero, *replica_map;
    /* Source, manual tracker: pages marked by mfd_mark_dirty (atomic). */
    uint64_t *marked;
    /*
     * Source: pages that read as zero by their page table entries alone
     * when the first pass began (ram/untouched.h), or NULL. Only that pass
     * may use it: any later write makes the page dirty again.
     */
    uint64_t *untouched;
    /* Source: pages the caller said read as zero (mfd_block_zero_hint). */
    uint64_t *zero_hint;
} mfd_block;

/*
 * How the destination writes normal pages into a block:
 * - READV: readv from the socket straight into the mapping (memory that is
 *   already populated: preallocated, or the caller's);
 * - UFFD: fresh anonymous memory registered with userfaultfd; a page never
 *   written is placed with UFFDIO_COPY from the channel's buffer, which
 *   allocates it without a page fault and without zeroing it first;
 * - PWRITE: a file: full-page writes into its page cache, which skip the
 *   zeroing a fault on the shared mapping would do.
 */
enum { MFD_PLACE_READV = 0, MFD_PLACE_UFFD = 1, MFD_PLACE_PWRITE = 2 };

/* A batch of pages of one block, handed from the migration thread. */
/*
 * XXH3-64 of block `index` as feature VERIFY computes it (known_zero):
 * a destination's never-placed pages of memory it mapped, and a source's
 * untouched and hinted pages without a tracker, are hashed as zeros unread;
 * known_zero false reads every byte. The caller knows the memory is as the
 * migration left it.
 */
uint64_t mfd__block_digest(const struct mfd_session *s, int index,
                           bool known_zero);

typedef struct mfd_batch {
    uint32_t block;
    uint32_t num;
    uint64_t *offset; /* pages_per_packet entries */
    /* The block's untouched map in the first pass, else NULL. */
    const uint64_t *untouched;
} mfd_batch;

/*
 * Batches a channel holds at once: the one it is sending and up to seven
 * queued behind it. A channel never sleeps waiting for the migration
 * thread, which on two busy cores may not run for a while after it is
 * woken; with a deep queue it refills several slots each time it runs.
 * (All-zero 4 GiB guest, 2 channels: depth 2 gives 15.8-17.4 GB/s, depth 8
 * 20.5-21.8; data-bound content is unchanged.)
 */
#define MFD_CHAN_DEPTH 8

typedef struct mfd_send_chan {
    struct mfd_session *s;
    uint32_t id;
    int fd;
    pthread_t thread;
    bool started;
    pthread_mutex_t lock; /* protects queued, head, sync, quit, slot swaps */
    pthread_cond_t cond;
    /*
     * slot[(head + k) % DEPTH] for k < queued are batches handed to the
     * channel, slot[head] the one being sent; the channel thread owns them.
     * The other slots hold empty batches the migration thread swaps with
     * its filled one.
     */
    mfd_batch *slot[MFD_CHAN_DEPTH];
    uint32_t head, queued;
    bool sync; /* a SYNC packet is due once the queue is empty */
    bool quit;
    sem_t sem_sync;       /* posted when the SYNC packet is written */
    uint8_t *packet;      /* packet_len bytes, reused */
    uint32_t prev_listed; /* offsets written last time, to zero the tail */
    struct iovec *iov;    /* 1 + pages_per_packet entries */
    mfd_method_chan m;    /* the method's stream and buffer */
    /* Zero-copy send: sends not yet reported complete by the kernel. */
    uint64_t zc_sent, zc_done;
    bool zc_copied;       /* the kernel copied since the last flush */
    mfd_channel_stats st;
} mfd_send_chan;

typedef struct mfd_recv_chan {
    struct mfd_session *s;
    uint32_t id;
    int fd;
    int lowat; /* fd's receive mark (mfd__sock_lowat_init); reader's own */
    pthread_t thread;
    bool started;
    uint64_t synced; /* SYNC packets seen; under s->sync_lock */
    uint64_t since_sync; /* packets read since the last SYNC (atomic) */
    uint8_t *packet;
    struct iovec *iov;
    int cached_block; /* index of the last block named, or -1 */
    uint8_t *bounce;  /* one packet's pages, for UFFD, PWRITE and methods */
    mfd_method_chan m; /* the method's stream and input buffer */
    mfd_channel_stats st;
} mfd_recv_chan;

struct mfd_session {
    /* Parameters. */
    int64_t channels;
    int64_t zpd;
    int64_t page_size;
    int64_t crc;
    int64_t verify;
    int64_t prealloc;
    int64_t max_total_size;
    int64_t handshake_timeout;
    int64_t dirty_tracker;
    int64_t downtime_limit;
    int64_t max_bandwidth;
    int64_t max_iterations;
    int64_t auto_converge;
    int64_t throttle_initial;
    int64_t throttle_increment;
    int64_t throttle_max;
    int64_t network_timeout;
    int64_t compression; /* MFD_COMPRESSION_* */
    int64_t zlib_level;
    int64_t zstd_level;
    int64_t lz4_accel;
    int64_t accept_compression; /* destination: bit per MFD_COMPRESSION_* */
    int64_t zero_copy_send;
    int64_t direct_io;
    int64_t colo;
    int64_t ckpt_interval;
    int64_t hb_interval;
    int64_t hb_timeout;
    int64_t colo_staging;
    int64_t idle_timeout;
    /* TLS (transport/tls.c): settings, and credentials once loaded. */
    char *tls_x509_dir, *tls_psk_file, *tls_hostname, *tls_priority;
    char **tls_authz;
    int tls_nauthz;
    int64_t tls_verify_peer;
    struct mfd_tls *tls;
    uint64_t last_rx_us; /* destination: last complete record or packet */
    uint64_t last_main_us; /* destination: last complete main record */
    mfd_colo_ops colo_ops;
    void *colo_opaque;
    mfd_live_ops live;
    void *live_opaque;
    char *incoming_dir;
    struct {
        char *block, *path;
    } *files; /* mfd_set_incoming_file */
    int nfiles;
    mfd_log_fn log_fn;
    void *log_opaque;

    /* Blocks: added by the caller (source) or declared by the peer. */
    mfd_block *blocks;
    int nblocks;
    bool blocks_from_caller;

    /* Lifecycle. */
    int role;   /* 0, 1 source, 2 destination */
    int status; /* as mfd_stats.status */
    bool used;
    uint8_t uuid[16];
    uint32_t ppp;      /* pages per packet */
    uint64_t features; /* negotiated */
    uint32_t method;               /* wire value */
    const mfd_method_ops *mops;    /* its ops */

    /* Error: first one wins. */
    pthread_mutex_t err_lock;
    int err_code;
    bool err_from_peer; /* the peer told us; do not answer with ERROR */
    int failed;         /* atomic flag */
    char err_msg[1024];

    /* Serialises main-channel writers (COLO: heartbeats on their thread). */
    pthread_mutex_t main_wlock;
    /* Under main_wlock: 0, or the errno of the write that cut a record off
     * part-way (ETIMEDOUT, ECANCELED, EPIPE...), which every later record
     * on the torn channel fails with. */
    int main_torn;

    /* COLO (src/colo/): state, requests, acknowledgements, heartbeats. */
    int colo_state;           /* atomic: mfd_colo_state */
    int colo_stop, colo_now;  /* atomic: mfd_colo_stop / _checkpoint */
    uint64_t colo_ckpts;      /* acknowledged / committed */
    uint64_t colo_last_id;
    uint64_t colo_acked;      /* primary: last CHECKPOINT_ACK + 1 (s->lock) */
    uint64_t colo_sent;       /* primary: last CHECKPOINT_END + 1 (s->lock) */
    bool colo_in_ckpt;        /* secondary: between BEGIN and END */
    uint64_t colo_next_id;    /* secondary: the id BEGIN must carry */
    uint8_t *colo_dev;        /* secondary: the committed device state */
    uint64_t colo_dev_len;
    pthread_t hb_thread;
    bool hb_started, hb_quit; /* hb_quit under s->lock */
    pthread_cond_t hb_cond;

    /* Snapshot file (file: URI): the file room's state, else NULL. */
    struct mfd_snap *snap;

    /* Sockets. */
    int main_fd;
    int listen_fd;
    int wake_fd; /* destination: eventfd the main thread polls */
    char listen_uri[320];

    /* Channels. */
    uint32_t nchan;
    mfd_send_chan *sc;
    mfd_recv_chan *rc;
    sem_t channels_ready; /* source: free queue slots over all channels */
    bool sem_inited;
    uint32_t next_chan;
    mfd_batch *cur; /* source: the batch being filled */
    uint64_t packet_num;

    /* Source: completion, signalled by the return path. */
    pthread_mutex_t lock;
    pthread_cond_t cond;
    bool done_received;
    bool complete_sent; /* DONE is only valid after COMPLETE */
    bool rp_done; /* the return path has stopped reading */
    pthread_t rp_thread;
    bool rp_started;

    /* Destination: the iteration barrier. */
    pthread_mutex_t sync_lock;
    pthread_cond_t sync_cond;
    uint64_t released_iter;
    bool quit;
    int uffd; /* userfaultfd of the UFFD blocks, or -1 */
    uint8_t *device_state; /* source: the caller's; destination: ours */
    bool device_state_borrowed;
    uint64_t device_state_len;
    bool digests_ok;
    bool device_state_done; /* the last DEVICE_STATE chunk arrived */

    /* Source, live migration. */
    int switchover_requested; /* atomic: mfd_switchover() */
    bool paused;              /* the pause callback ran */
    bool in_pause;            /* inside the pause callback */
    struct mfd_tracker *tracker;
    uint8_t crc_scope;        /* atomic: 1 in the final pass */
    /* max-bandwidth: packets are paced on one timeline (rl_lock). */
    pthread_mutex_t rl_lock;
    uint64_t rl_rate;         /* atomic: bytes per second, 0 = off */
    uint64_t rl_next_us;      /* when the next packet may start */

    /* Counters (atomic where threads share them). */
    uint64_t t_start, t_setup, t_end;
    uint64_t main_bytes;
    uint64_t ram_bytes; /* total length of the blocks */
    uint64_t legacy_zero_pages;
    uint64_t untouched_pages; /* zero pages known unread (ram/untouched.h) */
    uint64_t data_packets; /* packets listing pages (COMPLETE's count) */
    uint64_t iterations;
    uint64_t zc_copied_passes; /* zero-copy passes the kernel copied anyway */
    uint64_t t_pause;
    uint64_t dirty_sync_count;
    uint64_t dirty_pages; /* left to send: set in the dirty bitmaps */
    uint64_t dirty_rate_bps;
    uint64_t bandwidth_bps;
    uint64_t memory_rate_bps;
    uint64_t expected_downtime_ms;
    uint64_t downtime_us;
    int throttle_pct;
    int progress_pct;
    uint64_t pass_bytes[MFD_PASS_STATS];
    uint64_t pass_pages[MFD_PASS_STATS];
};

/* Records the first error and wakes every waiter. Always returns -code. */
int mfd__fail(struct mfd_session *s, int code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
/* Records an error that the peer reported (no ERROR is sent back). */
int mfd__fail_peer(struct mfd_session *s, int code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
/*
 * Replaces in place, by '?', what must not reach a log or a terminal from
 * a peer: control characters (C0, DEL, C1), the invisible characters that
 * reorder or break a line (bidi controls, line and paragraph separators,
 * zero-width spaces, the BOM) and bytes that are not valid UTF-8. Every
 * recorded error and log line goes through it.
 */
void mfd__sanitize(char *msg);
/*
 * A peer's ERROR or CANCEL text as a C string in buf (MFD_MSG_MAX + 1 bytes):
 * at most MFD_MSG_MAX bytes of it, a NUL inside it shown as '?' so that
 * nothing after it is hidden (control characters are replaced when the
 * message is recorded).
 */
const char *mfd__peer_text(char *buf, const uint8_t *p, uint32_t n);
static inline bool mfd__failed(const struct mfd_session *s)
{
    return __atomic_load_n(&s->failed, __ATOMIC_ACQUIRE);
}
/* The code of the session's error, read under its lock. */
int mfd__error_code(struct mfd_session *s);
/* Sets the last error without the failure machinery (API misuse). */
int mfd__set_error(struct mfd_session *s, int code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
void mfd__log(struct mfd_session *s, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

/*
 * Publishes a channel's socket so a failure from any thread can shut it
 * down; shuts it down at once if the session already failed.
 */
void mfd__set_chan_fd(struct mfd_session *s, int *slot, int fd);
/* Unpublishes and closes a channel's socket (after its thread is joined). */
void mfd__close_chan_fd(struct mfd_session *s, int *slot);

/* Writes one main-channel record (header, body, padding). */
int mfd__send_record(struct mfd_session *s, uint32_t type, const void *body,
                     uint32_t len);
/*
 * Reads one main-channel record. The body is malloc'ed into *body (NULL if
 * empty), at most MFD_RECORD_MAX bytes; *len its length. Returns MFD_IO_*
 * results, or -MFD_EPROTO for an oversize length (message in err). Out of
 * memory for the body fails the session with MFD_ENOMEM and returns
 * MFD_IO_ERROR.
 */
int mfd__recv_record(struct mfd_session *s, int timeout_ms, uint32_t *type,
                     uint8_t **body, uint32_t *len, char *err, size_t errlen);
/*
 * The same; with wake false a session failure does not interrupt the read
 * (for reading the peer's reason after a failure).
 */
int mfd__recv_record_ex(struct mfd_session *s, bool wake, int timeout_ms,
                        uint32_t *type, uint8_t **body, uint32_t *len,
                        char *err, size_t errlen);
/*
 * An unknown optional record was skipped while waiting for `what` during
 * setup: fine `MFD_SETUP_OPTIONAL_MAX` times, then a protocol error (an
 * endless stream of them must not hold the handshake).
 */
int mfd__skip_optional(struct mfd_session *s, int skipped, const char *what);
/* Sends an ERROR record for the session's error, best effort. */
void mfd__send_error_record(struct mfd_session *s);

/*
 * Joins every thread of a run and frees its channel resources and sockets
 * (the channel arrays stay for the stats). Safe to call more than once.
 */
void mfd__session_release_runtime(struct mfd_session *s);
void mfd__send_release(struct mfd_session *s);
void mfd__recv_release(struct mfd_session *s);

/*
 * Destination memory, shared by the network (recv/) and snapshot restore
 * (file/): maps a block the library owns (anonymous memory registered for
 * UFFDIO_COPY, or a file of the incoming directory) and sets b->place;
 * places `len` bytes at `off` of a UFFD block from `src`; ends userfaultfd
 * placement; the most the destination accepts in all (max-total-size,
 * free space of the incoming directory, or physical memory).
 */
int mfd__map_block(struct mfd_session *s, mfd_block *b);
int mfd__uffd_place(struct mfd_session *s, mfd_block *b, uint64_t off,
                    const uint8_t *src, uint64_t len);
void mfd__placement_done(struct mfd_session *s);
uint64_t mfd__total_size_limit(const struct mfd_session *s);

int mfd__migrate(struct mfd_session *s, const char *uri);
int mfd__incoming(struct mfd_session *s);

#endif
