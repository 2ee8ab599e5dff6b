/*
 * multifd.c - the command-line tool: send, recv, save, restore, demo, bench.
 *
 * The tool uses nothing but the public API (include/multifd.h); the bench
 * additionally measures its reference figures with bench/refs.c.
 */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <linux/fs.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "cli.h"

/* ---- shared helpers ---------------------------------------------------- */

bool cli_parse_size(const char *text, uint64_t *out)
{
    char *end;
    errno = 0;
    unsigned long long v = strtoull(text, &end, 10);
    if (errno || end == text || text[0] == '-')
        return false;
    int shift = 0;
    switch (*end) {
    case 'k': case 'K': shift = 10; end++; break;
    case 'm': case 'M': shift = 20; end++; break;
    case 'g': case 'G': shift = 30; end++; break;
    case 't': case 'T': shift = 40; end++; break;
    default: break;
    }
    if (*end == 'i' && shift)
        end++;
    if ((*end == 'b' || *end == 'B') && shift)
        end++;
    if (*end || (shift && v > (UINT64_MAX >> shift)))
        return false;
    *out = (uint64_t)v << shift;
    return true;
}

void cli_print_stats(FILE *f, const mfd_session *s, const char *what)
{
    mfd_stats *st = malloc(sizeof(*st));
    if (!st)
        return;
    mfd_get_stats(s, st);
    fprintf(f,
            "%s: %.3f s (setup %.3f s), %.3f GB of guest memory, %.2f GB/s\n",
            what, st->total_time_us / 1e6, st->setup_time_us / 1e6,
            (st->normal_pages + st->zero_pages) * (double)st->page_size / 1e9,
            st->throughput_gbps);
    char unread[48] = "";
    if (st->untouched_pages)
        snprintf(unread, sizeof(unread), ", %" PRIu64 " never read",
                 st->untouched_pages);
    fprintf(f,
            "  pages: %" PRIu64 " normal, %" PRIu64 " zero (%" PRIu64
            " as legacy records%s); %" PRIu64 " data packets, %" PRIu64
            " SYNC packets, %" PRIu64 " pass(es)\n",
            st->normal_pages, st->zero_pages, st->legacy_zero_pages, unread,
            st->data_packets, st->sync_packets, st->iterations);
    fprintf(f, "  wire: main channel %" PRIu64 " bytes, data channels %" PRIu64
               " bytes\n",
            st->main_bytes, st->data_bytes);
    if (st->dirty_sync_count)
        fprintf(f,
                "  live: %" PRIu64 " dirty syncs, downtime %.1f ms, last "
                "dirty rate %.0f MiB/s, bandwidth %.2f GB/s, throttle %d%%\n",
                st->dirty_sync_count, st->downtime_us / 1e3,
                st->dirty_rate_bps / 1048576.0, st->bandwidth_bps / 1e9,
                st->throttle_pct);
    for (uint32_t i = 0; i < st->channels && i < MFD_MAX_CHANNELS; i++) {
        const mfd_channel_stats *c = &st->channel[i];
        fprintf(f,
                "  channel %u: %" PRIu64 " packets, %" PRIu64
                " normal / %" PRIu64 " zero pages, %" PRIu64 " bytes\n",
                i, c->packets, c->normal_pages, c->zero_pages, c->bytes);
    }
    free(st);
}

static struct {
    pthread_t thread;
    pthread_mutex_t lock;
    pthread_cond_t cond;
    bool running, stop, tty;
    mfd_session *s;
    uint64_t total;
    int ms;
} progress = {.lock = PTHREAD_MUTEX_INITIALIZER,
              .cond = PTHREAD_COND_INITIALIZER};

static void print_progress(void)
{
    mfd_stats *st = malloc(sizeof(*st));
    if (!st)
        return;
    mfd_get_stats(progress.s, st);
    double done = (double)(st->normal_pages + st->zero_pages) * st->page_size;
    /* A source knows what is left, passes included; a destination does not. */
    double pct = st->role == 1 ? st->progress_pct
                 : progress.total ? 100.0 * done / (double)progress.total
                                  : 0;
    /* One line rewritten in place on a terminal, a line each in a log. */
    fprintf(stderr,
            "%s  progress: %5.1f%%  %.2f / %.2f GB  %.2f GB/s  normal %" PRIu64
            " zero %" PRIu64 " pages%s",
            progress.tty ? "\r" : "", pct, done / 1e9, progress.total / 1e9,
            st->throughput_gbps, st->normal_pages, st->zero_pages,
            progress.tty ? "   " : "\n");
    fflush(stderr);
    free(st);
}

static void *progress_main(void *arg)
{
    (void)arg;
    pthread_mutex_lock(&progress.lock);
    while (!progress.stop) {
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        ts.tv_nsec += (long)progress.ms * 1000000L;
        ts.tv_sec += ts.tv_nsec / 1000000000L;
        ts.tv_nsec %= 1000000000L;
        pthread_cond_timedwait(&progress.cond, &progress.lock, &ts);
        if (!progress.stop)
            print_progress();
    }
    pthread_mutex_unlock(&progress.lock);
    return NULL;
}

void cli_progress_start(mfd_session *s, uint64_t total, int ms)
{
    progress.s = s;
    progress.total = total;
    progress.ms = ms;
    progress.stop = false;
    progress.tty = isatty(STDERR_FILENO);
    progress.running =
        pthread_create(&progress.thread, NULL, progress_main, NULL) == 0;
}

void cli_progress_stop(void)
{
    if (!progress.running)
        return;
    pthread_mutex_lock(&progress.lock);
    progress.stop = true;
    pthread_cond_signal(&progress.cond);
    pthread_mutex_unlock(&progress.lock);
    pthread_join(progress.thread, NULL);
    progress.running = false;
    print_progress();
    if (progress.tty)
        fputc('\n', stderr);
}

/* ---- send -------------------------------------------------------------- */

static const char send_usage[] =
    "usage: multifd send --to URI [options] FILE...\n"
    "\n"
    "Migrates each FILE as one RAM block named after its base name to a\n"
    "destination listening at URI (tcp:HOST:PORT or unix:PATH). FILE sizes\n"
    "must be non-zero multiples of the page size. Exits 0 only after the\n"
    "destination answered DONE. Holes of sparse FILEs (SEEK_HOLE) go as\n"
    "zero pages without being read (with zero-page detection on).\n"
    "\n"
    "The files' writers are expected to be stopped (one pass); the live\n"
    "parameters below apply to a live source such as `multifd demo`, and\n"
    "--max-bandwidth applies here too.\n"
    "\n"
    "options:\n"
    "  --to URI                    destination (required)\n"
    "  --progress[=json]           a progress line while running and one\n"
    "                              line per pass (json: one object per pass\n"
    "                              on stdout)\n"
    "  --json                      print the final stats as one JSON object\n"
    "  -h, --help                  this text\n";

static void usage_error(const char *cmd, const char *usage, const char *msg)
{
    fprintf(stderr, "multifd %s: %s\n%s", cmd, msg, usage);
}

static int fail_line(const char *cmd, const char *msg)
{
    fprintf(stderr, "multifd %s: error: %s\n", cmd, msg);
    return 1;
}

typedef struct {
    cli_progress_kind kind;
    uint32_t page_size;
} pass_printer;

static void print_pass_cb(void *opaque, const mfd_pass_info *p)
{
    pass_printer *pp = opaque;
    cli_print_pass(pp->kind == CLI_PROGRESS_JSON ? stdout : stderr, pp->kind,
                   p, pp->page_size);
}

static const char save_usage[] =
    "usage: multifd save --to file:PATH [options] FILE...\n"
    "\n"
    "Saves each FILE as one RAM block named after its base name into the\n"
    "snapshot file PATH (mapped-ram layout, PROTOCOL.md 5): the channel\n"
    "threads write their pages in parallel at fixed offsets, zero pages are\n"
    "never written (the file stays sparse), and the COMPLETE flag is set\n"
    "last, once everything is on disk. Exits 0 only then. Holes of sparse\n"
    "FILEs are zero pages, not read. Restore with `multifd restore`.\n"
    "\n"
    "options:\n"
    "  --to file:PATH              the snapshot file (required; replaced)\n"
    "  --progress[=json]           a progress line while running\n"
    "  --json                      print the final stats as one JSON object\n"
    "  -h, --help                  this text\n";

/*
 * Tells the session which ranges of block `block` are holes of its file
 * (SEEK_HOLE / SEEK_DATA): they read as zero, and reading them through the
 * shared mapping would only fill the page cache (tmpfs memory) with zeros.
 * A file system without hole support reports none, and any other failure
 * ends the hints there: every page not hinted is read.
 */
static int hint_holes(mfd_session *s, int block, int fd, uint64_t len)
{
    uint64_t at = 0;
    while (at < len) {
        off_t hole = lseek(fd, (off_t)at, SEEK_HOLE);
        if (hole < 0 || (uint64_t)hole >= len)
            return 0;
        off_t data = lseek(fd, hole, SEEK_DATA);
        if (data < 0 && errno != ENXIO)
            return 0; /* not known where data starts: read the rest */
        /* ENXIO: no data after the hole. */
        uint64_t end = data < 0 || (uint64_t)data > len ? len : (uint64_t)data;
        if (mfd_block_zero_hint(s, block, (uint64_t)hole, end - (uint64_t)hole))
            return -1;
        at = end;
    }
    return 0;
}

/*
 * send and save: each FILE, mapped read-only, becomes a block; migrate to
 * the URI (a socket for send, file: for save).
 */
static int migrate_files(int argc, char **argv, const char *cmd,
                         const char *usage)
{
    static const struct option own[] = {
        {"to", required_argument, 0, 't'},
        {"progress", optional_argument, 0, 'P'},
        {"json", no_argument, 0, 'j'},
        {"help", no_argument, 0, 'h'},
        {0, 0, 0, 0},
    };
    struct option opts[64];
    cli_options_build(own, opts, 64);
    const char *to = NULL;
    bool json = false, show_progress = false;
    pass_printer pp = {CLI_PROGRESS_HUMAN, 4096};
    char msg[1300];
    mfd_session *s = mfd_session_new();
    if (!s)
        return fail_line(cmd, "out of memory");

    int c;
    optind = 1;
    while ((c = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
        int rc = 0;
        switch (c) {
        case 't': to = optarg; break;
        case 'P':
            show_progress = true;
            if (!cli_progress_mode(optarg, argc, argv, &pp.kind)) {
                usage_error(cmd, usage, "--progress: human or json");
                mfd_session_free(s);
                return 2;
            }
            break;
        case 'j': json = true; break;
        case 'h':
            fputs(usage, stdout);
            fputs(cli_migration_usage, stdout);
            mfd_session_free(s);
            return 0;
        default:
            rc = cli_migration_option(s, c, optarg);
            if (rc > 0) {
                usage_error(cmd, usage, "invalid option");
                mfd_session_free(s);
                return 2;
            }
        }
        if (rc) {
            usage_error(cmd, usage, mfd_last_error(s));
            mfd_session_free(s);
            return 2;
        }
    }
    if (!to || optind >= argc) {
        usage_error(cmd, usage,
                    !to ? "--to URI is required" : "no FILE given");
        mfd_session_free(s);
        return 2;
    }
    if (!strcmp(cmd, "save") && strncmp(to, "file:", 5)) {
        usage_error(cmd, usage, "--to wants file:PATH");
        mfd_session_free(s);
        return 2;
    }

    int64_t ps;
    mfd_get_param(s, MFD_PARAM_PAGE_SIZE, &ps);
    int nfiles = argc - optind, rc = 0;
    void **maps = calloc((size_t)nfiles, sizeof(void *));
    uint64_t *lens = calloc((size_t)nfiles, sizeof(uint64_t));
    uint64_t total = 0;
    for (int i = 0; i < nfiles && !rc && maps && lens; i++) {
        const char *path = argv[optind + i];
        const char *base = strrchr(path, '/') ? strrchr(path, '/') + 1 : path;
        struct stat st;
        int fd = open(path, O_RDONLY | O_CLOEXEC);
        uint64_t size = 0; /* a block device's st_size is 0: ask it */
        if (fd < 0 || fstat(fd, &st) < 0 ||
            (S_ISBLK(st.st_mode) && ioctl(fd, BLKGETSIZE64, &size) < 0)) {
            snprintf(msg, sizeof(msg), "%s: %s", path, strerror(errno));
            rc = fail_line(cmd, msg);
        } else if (!S_ISREG(st.st_mode) && !S_ISBLK(st.st_mode)) {
            snprintf(msg, sizeof(msg),
                     "%s: not a regular file or block device", path);
            rc = fail_line(cmd, msg);
        } else if ((size = S_ISBLK(st.st_mode) ? size : (uint64_t)st.st_size) ==
                       0 ||
                   size % (uint64_t)ps) {
            snprintf(msg, sizeof(msg),
                     "%s: size %" PRIu64 " is not a non-zero multiple of the "
                     "page size %" PRId64,
                     path, size, ps);
            rc = fail_line(cmd, msg);
        } else {
            lens[i] = size;
            maps[i] = mmap(NULL, lens[i], PROT_READ, MAP_SHARED, fd, 0);
            if (maps[i] == MAP_FAILED) {
                maps[i] = NULL;
                snprintf(msg, sizeof(msg), "%s: mmap: %s", path,
                         strerror(errno));
                rc = fail_line(cmd, msg);
            } else if (mfd_add_block(s, base, maps[i], lens[i]) ||
                       hint_holes(s, i, fd, lens[i])) {
                snprintf(msg, sizeof(msg), "%s: %s", path, mfd_last_error(s));
                rc = fail_line(cmd, msg);
            }
            total += lens[i];
        }
        if (fd >= 0)
            close(fd);
    }
    if (!maps || !lens)
        rc = fail_line(cmd, "out of memory");

    if (!rc) {
        int64_t v;
        mfd_get_param(s, MFD_PARAM_PAGE_SIZE, &v);
        pp.page_size = (uint32_t)v;
        mfd_live_ops ops = {.progress = show_progress ? print_pass_cb : NULL};
        mfd_set_live_ops(s, &ops, &pp);
        if (show_progress && pp.kind == CLI_PROGRESS_HUMAN)
            cli_progress_start(s, total, 500);
        int mrc = mfd_migrate(s, to);
        if (show_progress && pp.kind == CLI_PROGRESS_HUMAN)
            cli_progress_stop();
        if (mrc) {
            rc = fail_line(cmd, mfd_last_error(s));
        } else if (json) {
            char *j = mfd_stats_json(s);
            printf("%s\n", j ? j : "{}");
            free(j);
        } else {
            snprintf(msg, sizeof(msg), "multifd %s: %s completed", cmd,
                     strcmp(cmd, "save") ? "migration" : "snapshot");
            cli_print_stats(stdout, s, msg);
        }
    }
    for (int i = 0; maps && lens && i < nfiles; i++)
        if (maps[i])
            munmap(maps[i], lens[i]);
    free(maps);
    free(lens);
    mfd_session_free(s);
    return rc;
}

static int cmd_send(int argc, char **argv)
{
    return migrate_files(argc, argv, "send", send_usage);
}

static int cmd_save(int argc, char **argv)
{
    return migrate_files(argc, argv, "save", save_usage);
}

/* ---- recv -------------------------------------------------------------- */

static const char recv_usage[] =
    "usage: multifd recv --listen URI --into DIR|anon: [options]\n"
    "\n"
    "Accepts one migration on URI (tcp:HOST:PORT, port 0 = ephemeral, or\n"
    "unix:PATH). With --into DIR each block becomes the sparse file\n"
    "DIR/NAME (zero pages stay holes); with --into anon: blocks are\n"
    "received into fresh anonymous memory, as a VMM's destination, and each\n"
    "block's XXH3-64 digest is printed at the end. Exits 0 only after DONE\n"
    "was sent to the source.\n"
    "\n"
    "options:\n"
    "  --listen URI        address to listen on (required)\n"
    "  --into DIR|anon:    where blocks go (required)\n"
    "  --prealloc          populate the memory before the migration starts\n"
    "  --file NAME=PATH    receive block NAME into the file PATH (repeatable;\n"
    "                      other blocks go where --into says)\n"
    "  --max-total-size S  refuse a migration larger than S bytes (K/M/G/T);\n"
    "                      default: physical memory, or the directory's\n"
    "                      free space (--max-size is the same option)\n"
    "  --handshake-timeout MS  a connection must finish its TLS handshake\n"
    "                      and preamble, the source its setup and then\n"
    "                      connect every data channel, within MS\n"
    "                      (default 10000)\n"
    "  --idle-timeout MS   fail when no complete record or packet came for that\n"
    "                      long (default 60000; 0: never)\n"
    "  --network-timeout MS  fail when the source stops acknowledging for that\n"
    "                      long (default 10000; 0: the kernel's minutes)\n"
    "  --block NAME=SIZE   (with --into anon:, repeatable) the destination's\n"
    "                      memory exists before the source connects, as a\n"
    "                      VMM's guest RAM (populated now with --prealloc);\n"
    "                      the source must offer exactly these blocks\n"
    "  --accept-compression LIST  methods a source may use, e.g. none,zstd\n"
    "                      (default: all built in: none,zlib,zstd,lz4)\n"
    "  --tls-creds DIR     TLS with x509: DIR/ca-cert.pem, server-cert.pem,\n"
    "                      server-key.pem (QEMU's tls-creds-x509 layout)\n"
    "  --tls-psk FILE      TLS with pre-shared keys: NAME:HEXKEY lines\n"
    "  --tls-verify-peer on|off  x509: require a client certificate signed\n"
    "                      by the CA (default on)\n"
    "  --tls-authz DN      x509: accept only this client certificate\n"
    "                      subject (repeatable), e.g. CN=src1,O=Example\n"
    "  --tls-priority STRING  GnuTLS priority string of the handshakes\n"
    "                      (QEMU's tls-creds priority)\n"
    "  --x-colo            accept a COLO session: keep a replica of the\n"
    "                      source's checkpoints, promote it when the source\n"
    "                      is lost (see `multifd colo`)\n"
    "  --heartbeat-timeout MS  COLO: the source is lost after MS of silence\n"
    "  --uri-file F        write the resolved listen URI to F once listening\n"
    "  --progress          print a progress line while running\n"
    "  --json              print the stats (and digests) as one JSON object\n"
    "  -h, --help          this text\n";

static int write_uri_file(const char *path, const char *uri)
{
    char tmp[4200];
    snprintf(tmp, sizeof(tmp), "%s.tmp.%d", path, (int)getpid());
    FILE *f = fopen(tmp, "w");
    if (!f)
        return -1;
    fprintf(f, "%s\n", uri);
    if (fclose(f) || rename(tmp, path)) {
        unlink(tmp);
        return -1;
    }
    return 0;
}

/* recv --block memory: freed at exit, after the session that uses it. */
static struct {
    void **maps;
    uint64_t *lens;
    int n;
} recv_blocks;

static void recv_blocks_free(void)
{
    for (int i = 0; recv_blocks.maps && i < recv_blocks.n; i++)
        if (recv_blocks.maps[i])
            munmap(recv_blocks.maps[i], recv_blocks.lens[i]);
    free(recv_blocks.maps);
    free(recv_blocks.lens);
    recv_blocks.maps = NULL;
    recv_blocks.lens = NULL;
}

/*
 * A destination's result: stats (human or JSON) and, for anonymous memory,
 * each block's XXH3-64 digest.
 */
/* This process's resident memory (VmRSS), KiB; -1 if unknown. */
static long rss_kb(void)
{
    FILE *f = fopen("/proc/self/status", "r");
    char line[256];
    long kb = -1;
    while (f && fgets(line, sizeof(line), f))
        if (sscanf(line, "VmRSS: %ld kB", &kb) == 1)
            break;
    if (f)
        fclose(f);
    return kb;
}

static void print_received(mfd_session *s, bool json, bool anon,
                           const char *what)
{
    int n = mfd_block_count(s);
    /* Before the digests read the memory: what the transfer populated. */
    long rss = rss_kb();
    if (json) {
        char *j = mfd_stats_json(s);
        if (j) {
            /* Splice more fields into the object before its closing brace. */
            j[strlen(j) - 1] = 0;
            printf("%s, \"rss_kb\": %ld", j, rss);
        }
        if (j && anon) {
            printf(", \"digests\": {");
            for (int i = 0; i < n; i++) {
                mfd_block_info b;
                mfd_block_get(s, i, &b);
                /* Names are printable ASCII; only " and \ need escaping. */
                printf("%s\"", i ? ", " : "");
                for (const char *ch = b.name; *ch; ch++)
                    printf(*ch == '"' || *ch == '\\' ? "\\%c" : "%c", *ch);
                uint64_t h;
                mfd_block_digest(s, i, &h);
                printf("\": \"%016llx\"", (unsigned long long)h);
            }
            printf("}}\n");
        } else {
            printf("%s\n", j ? "}" : "{}");
        }
        free(j);
    } else {
        cli_print_stats(stdout, s, what);
        printf("  memory: %.1f MiB resident in this process\n", rss / 1024.0);
        for (int i = 0; anon && i < n; i++) {
            mfd_block_info b;
            mfd_block_get(s, i, &b);
            uint64_t h;
            mfd_block_digest(s, i, &h);
            printf("digest %s %016llx\n", b.name, (unsigned long long)h);
        }
    }
}

/* recv --tls-authz DN, repeatable. */
static int recv_authz(mfd_session *s, int argc, char **argv,
                      const struct option *opts)
{
    int c;
    optind = 1;
    while ((c = getopt_long(argc, argv, "h", opts, NULL)) != -1)
        if (c == 'Z' && mfd_add_tls_authz(s, optarg))
            return -1;
    return 0;
}

static int cmd_recv(int argc, char **argv)
{
    static const struct option opts[] = {
        {"listen", required_argument, 0, 'l'},
        {"into", required_argument, 0, 'i'},
        {"prealloc", no_argument, 0, 'a'},
        {"max-total-size", required_argument, 0, 'm'},
        {"max-size", required_argument, 0, 'm'},
        {"network-timeout", required_argument, 0, 'n'},
        {"accept-compression", required_argument, 0, 'C'},
        {"block", required_argument, 0, 'b'},
        {"file", required_argument, 0, 'f'},
        {"uri-file", required_argument, 0, 'u'},
        {"x-colo", no_argument, 0, 'X'},
        {"idle-timeout", required_argument, 0, 'I'},
        {"handshake-timeout", required_argument, 0, 'W'},
        {"tls-creds", required_argument, 0, 'T'},
        {"tls-psk", required_argument, 0, 'K'},
        {"tls-verify-peer", required_argument, 0, 'V'},
        {"tls-authz", required_argument, 0, 'Z'},
        {"tls-priority", required_argument, 0, 'R'},
        {"heartbeat-timeout", required_argument, 0, 'H'},
        {"progress", no_argument, 0, 'P'},
        {"json", no_argument, 0, 'j'},
        {"help", no_argument, 0, 'h'},
        {0, 0, 0, 0},
    };
    const char *listen = NULL, *into = NULL, *uri_file = NULL, *max = NULL,
               *net_timeout = NULL, *accept = NULL, *hb_timeout = NULL,
               *idle = NULL, *tls_creds = NULL, *tls_psk = NULL,
               *tls_verify = NULL, *hs_timeout = NULL, *tls_prio = NULL;
    bool colo = false;
    bool json = false, prealloc = false, show_progress = false;
    char msg[1300];
    int c;
    optind = 1;
    while ((c = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
        switch (c) {
        case 'l': listen = optarg; break;
        case 'i': into = optarg; break;
        case 'a': prealloc = true; break;
        case 'm': max = optarg; break;
        case 'n': net_timeout = optarg; break;
        case 'C': accept = optarg; break;
        case 'b':
            if (!strchr(optarg, '=') || optarg[0] == '=') {
                usage_error("recv", recv_usage, "--block wants NAME=SIZE");
                return 2;
            }
            break;
        case 'f':
            if (!strchr(optarg, '=') || optarg[0] == '=') {
                usage_error("recv", recv_usage, "--file wants NAME=PATH");
                return 2;
            }
            break;
        case 'u': uri_file = optarg; break;
        case 'X': colo = true; break;
        case 'I': idle = optarg; break;
        case 'W': hs_timeout = optarg; break;
        case 'T': tls_creds = optarg; break;
        case 'K': tls_psk = optarg; break;
        case 'V': tls_verify = optarg; break;
        case 'R': tls_prio = optarg; break;
        case 'Z': break; /* applied below, once the session exists */
        case 'H': hb_timeout = optarg; break;
        case 'P': show_progress = true; break;
        case 'j': json = true; break;
        case 'h': fputs(recv_usage, stdout); return 0;
        default:
            usage_error("recv", recv_usage, "invalid option");
            return 2;
        }
    }
    if (!listen || !into || optind != argc) {
        usage_error("recv", recv_usage,
                    optind != argc ? "unexpected argument"
                                   : "--listen and --into are required");
        return 2;
    }
    bool anon = !strcmp(into, "anon:");
    /* --file and --block options, applied once the session exists. */
    char **files = calloc((size_t)argc, sizeof(char *));
    char **blocks = calloc((size_t)argc, sizeof(char *));
    int nfiles = 0, nblocks = 0;
    optind = 1;
    while (files && blocks &&
           (c = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
        if (c == 'f')
            files[nfiles++] = optarg;
        if (c == 'b')
            blocks[nblocks++] = optarg;
    }
    if (nblocks && !anon) {
        free(files);
        free(blocks);
        usage_error("recv", recv_usage, "--block needs --into anon:");
        return 2;
    }
    if (!anon) {
        struct stat st;
        if (stat(into, &st) || !S_ISDIR(st.st_mode)) {
            snprintf(msg, sizeof(msg), "--into %s: not a directory", into);
            return fail_line("recv", msg);
        }
    }

    mfd_session *s = mfd_session_new();
    if (!s || !files) {
        free(files);
        mfd_session_free(s);
        return fail_line("recv", "out of memory");
    }
    int rc = 0;
    for (int i = 0; i < nfiles; i++) {
        char *eq = strchr(files[i], '=');
        *eq = 0;
        int frc = mfd_set_incoming_file(s, files[i], eq + 1);
        *eq = '=';
        if (frc) {
            free(files);
            rc = fail_line("recv", mfd_last_error(s));
            mfd_session_free(s);
            return rc;
        }
    }
    free(files);
    /*
     * --block: the destination's memory exists before the source connects,
     * as a VMM's guest RAM does (and with --prealloc it is populated now,
     * outside the migration, as QEMU's prealloc=on).
     */
    void **maps = calloc((size_t)nblocks + 1, sizeof(void *));
    uint64_t *lens = calloc((size_t)nblocks + 1, sizeof(uint64_t));
    recv_blocks.maps = maps;
    recv_blocks.lens = lens;
    recv_blocks.n = nblocks;
    atexit(recv_blocks_free);
    for (int i = 0; i < nblocks && !rc && maps && lens; i++) {
        char *eq = strchr(blocks[i], '=');
        *eq = 0;
        if (!cli_parse_size(eq + 1, &lens[i]) || !lens[i]) {
            snprintf(msg, sizeof(msg), "--block %s: bad size '%s'", blocks[i],
                     eq + 1);
            rc = fail_line("recv", msg);
        } else {
            maps[i] = mmap(NULL, lens[i], PROT_READ | PROT_WRITE,
                           MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE |
                               (prealloc ? MAP_POPULATE : 0),
                           -1, 0);
            if (maps[i] == MAP_FAILED) {
                maps[i] = NULL;
                snprintf(msg, sizeof(msg), "--block %s: mmap: %s", blocks[i],
                         strerror(errno));
                rc = fail_line("recv", msg);
            } else if (mfd_add_block(s, blocks[i], maps[i], lens[i])) {
                rc = fail_line("recv", mfd_last_error(s));
            }
        }
        *eq = '=';
    }
    free(blocks);
    if (rc || !maps || !lens) {
        mfd_session_free(s);
        return rc ? rc : fail_line("recv", "out of memory");
    }
    if ((!anon && mfd_set_incoming_dir(s, into)) ||
        (prealloc && mfd_set_param(s, MFD_PARAM_PREALLOC, 1)) ||
        (max && mfd_set_param_by_name(s, "max-total-size", max)) ||
        (net_timeout &&
         mfd_set_param_by_name(s, "network-timeout", net_timeout)) ||
        (accept && mfd_set_param_by_name(s, "accept-compression", accept)) ||
        (colo && mfd_set_param(s, MFD_PARAM_COLO, 1)) ||
        (idle && mfd_set_param_by_name(s, "idle-timeout", idle)) ||
        (hs_timeout &&
         mfd_set_param_by_name(s, "handshake-timeout", hs_timeout)) ||
        (tls_creds && mfd_set_tls_x509(s, tls_creds)) ||
        (tls_psk && mfd_set_tls_psk(s, tls_psk)) ||
        (tls_verify &&
         mfd_set_param_by_name(s, "tls-verify-peer", tls_verify)) ||
        (tls_prio && mfd_set_tls_priority(s, tls_prio)) ||
        recv_authz(s, argc, argv, opts) ||
        (hb_timeout &&
         mfd_set_param_by_name(s, "heartbeat-timeout", hb_timeout)) ||
        mfd_listen(s, listen)) {
        rc = fail_line("recv", mfd_last_error(s));
        mfd_session_free(s);
        return rc;
    }
    fprintf(stderr, "multifd: listening on %s\n", mfd_listen_uri(s));
    if (uri_file && write_uri_file(uri_file, mfd_listen_uri(s))) {
        snprintf(msg, sizeof(msg), "--uri-file %s: %s", uri_file,
                 strerror(errno));
        rc = fail_line("recv", msg);
        mfd_session_free(s);
        return rc;
    }

    if (show_progress)
        cli_progress_start(s, 0, 500);
    int mrc = mfd_incoming(s);
    if (show_progress)
        cli_progress_stop();
    if (mrc) {
        rc = fail_line("recv", mfd_last_error(s));
        mfd_session_free(s);
        return rc;
    }

    if (colo && mfd_colo_state_get(s) == MFD_COLO_PROMOTED)
        fprintf(stderr, "multifd recv: COLO: the source was lost (%s); the "
                        "replica of the last committed checkpoint was "
                        "promoted\n",
                mfd_last_error(s));
    print_received(s, json, anon, "multifd recv: migration completed");
    mfd_session_free(s);
    return 0;
}

/* ---- restore ----------------------------------------------------------- */

static const char restore_usage[] =
    "usage: multifd restore --from file:PATH --into DIR|anon: [options]\n"
    "\n"
    "Restores a snapshot written by `multifd save`. The file is validated\n"
    "first (header CRC, COMPLETE flag, every region inside the file and\n"
    "none overlapping); then N threads read the present pages into place.\n"
    "Absent (zero) pages are never touched: with --into DIR each block\n"
    "becomes the sparse file DIR/NAME; with --into anon: fresh anonymous\n"
    "memory, and each block's XXH3-64 digest is printed. Exits 0 only when\n"
    "every page was read.\n"
    "\n"
    "options:\n"
    "  --from file:PATH    the snapshot (required)\n"
    "  --into DIR|anon:    where blocks go (required)\n"
    "  --channels N        reader threads (multifd-channels, default 2)\n"
    "  --direct-io         read pages with O_DIRECT\n"
    "  --prealloc          populate the memory before reading\n"
    "  --file NAME=PATH    restore block NAME into the file PATH (repeatable)\n"
    "  --max-total-size S  refuse a snapshot larger than S bytes (K/M/G/T;\n"
    "                      --max-size is the same option)\n"
    "  --progress          print a progress line while running\n"
    "  --json              print the stats (and digests) as one JSON object\n"
    "  -h, --help          this text\n";

static int cmd_restore(int argc, char **argv)
{
    static const struct option opts[] = {
        {"from", required_argument, 0, 'F'},
        {"into", required_argument, 0, 'i'},
        {"channels", required_argument, 0, 'c'},
        {"multifd-channels", required_argument, 0, 'c'},
        {"direct-io", no_argument, 0, 'd'},
        {"prealloc", no_argument, 0, 'a'},
        {"file", required_argument, 0, 'f'},
        {"max-total-size", required_argument, 0, 'm'},
        {"max-size", required_argument, 0, 'm'},
        {"progress", no_argument, 0, 'P'},
        {"json", no_argument, 0, 'j'},
        {"help", no_argument, 0, 'h'},
        {0, 0, 0, 0},
    };
    const char *from = NULL, *into = NULL;
    bool json = false, show_progress = false;
    char msg[1300];
    mfd_session *s = mfd_session_new();
    if (!s)
        return fail_line("restore", "out of memory");
    int c, rc = 0;
    optind = 1;
    while (!rc && (c = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
        int prc = 0;
        switch (c) {
        case 'F': from = optarg; break;
        case 'i': into = optarg; break;
        case 'c': prc = mfd_set_param_by_name(s, "multifd-channels", optarg); break;
        case 'd': prc = mfd_set_param(s, MFD_PARAM_DIRECT_IO, 1); break;
        case 'a': prc = mfd_set_param(s, MFD_PARAM_PREALLOC, 1); break;
        case 'm': prc = mfd_set_param_by_name(s, "max-total-size", optarg); break;
        case 'f': {
            char *eq = strchr(optarg, '=');
            if (!eq || eq == optarg) {
                usage_error("restore", restore_usage, "--file wants NAME=PATH");
                rc = 2;
                break;
            }
            *eq = 0;
            prc = mfd_set_incoming_file(s, optarg, eq + 1);
            *eq = '=';
            break;
        }
        case 'P': show_progress = true; break;
        case 'j': json = true; break;
        case 'h':
            fputs(restore_usage, stdout);
            mfd_session_free(s);
            return 0;
        default:
            usage_error("restore", restore_usage, "invalid option");
            rc = 2;
        }
        if (prc) {
            usage_error("restore", restore_usage, mfd_last_error(s));
            rc = 2;
        }
    }
    if (!rc && (!from || !into || optind != argc)) {
        usage_error("restore", restore_usage,
                    optind != argc ? "unexpected argument"
                                   : "--from and --into are required");
        rc = 2;
    }
    bool anon = into && !strcmp(into, "anon:");
    if (!rc && !anon) {
        struct stat st;
        if (stat(into, &st) || !S_ISDIR(st.st_mode)) {
            snprintf(msg, sizeof(msg), "--into %s: not a directory", into);
            rc = fail_line("restore", msg);
        } else if (mfd_set_incoming_dir(s, into)) {
            rc = fail_line("restore", mfd_last_error(s));
        }
    }
    if (!rc) {
        if (show_progress)
            cli_progress_start(s, 0, 500);
        int mrc = mfd_restore(s, from);
        if (show_progress)
            cli_progress_stop();
        if (mrc)
            rc = fail_line("restore", mfd_last_error(s));
        else
            print_received(s, json, anon,
                           "multifd restore: snapshot restored");
    }
    mfd_session_free(s);
    return rc;
}

/* ---- main -------------------------------------------------------------- */

static const char main_usage[] =
    "usage: multifd COMMAND [options]\n"
    "\n"
    "Live migration of memory over parallel channels (QEMU multifd design).\n"
    "\n"
    "commands:\n"
    "  send     migrate files as RAM blocks to a destination\n"
    "  recv     receive one migration into files or anonymous memory\n"
    "  save     save files as RAM blocks to a snapshot file (file:PATH)\n"
    "  restore  restore a snapshot file into files or anonymous memory\n"
    "  demo     a verified migration of a synthetic 1 GiB guest on loopback\n"
    "  colo     COLO checkpoint replication of a running synthetic guest\n"
    "  bench    measure migration throughput against reference figures\n"
    "\n"
    "Run 'multifd COMMAND --help' for the options of a command.\n";

int main(int argc, char **argv)
{
    if (argc < 2) {
        fputs(main_usage, stderr);
        return 2;
    }
    const char *cmd = argv[1];
    if (!strcmp(cmd, "-h") || !strcmp(cmd, "--help") || !strcmp(cmd, "help")) {
        fputs(main_usage, stdout);
        return 0;
    }
    if (!strcmp(cmd, "--version") || !strcmp(cmd, "version")) {
        printf("multifd %s\n", mfd_version_string());
        return 0;
    }
    if (!strcmp(cmd, "send"))
        return cmd_send(argc - 1, argv + 1);
    if (!strcmp(cmd, "recv"))
        return cmd_recv(argc - 1, argv + 1);
    if (!strcmp(cmd, "save"))
        return cmd_save(argc - 1, argv + 1);
    if (!strcmp(cmd, "restore"))
        return cmd_restore(argc - 1, argv + 1);
    if (!strcmp(cmd, "demo"))
        return cmd_demo(argc - 1, argv + 1);
    if (!strcmp(cmd, "colo"))
        return cmd_colo(argc - 1, argv + 1);
    if (!strcmp(cmd, "bench"))
        return cmd_bench(argc - 1, argv + 1);
    fprintf(stderr, "multifd: unknown command '%s'\n%s", cmd, main_usage);
    return 2;
}
