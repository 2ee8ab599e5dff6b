/*
 * demo.c - `multifd demo`: a destination process and a source process on
 * loopback move a synthetic guest of mixed content over 4 channels; the
 * run shows progress and a summary, and every byte is verified.
 */
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <pthread.h>
#include <signal.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
#include <xxhash.h>

#include "cli.h"

#define MFD_DEMO_MAX(a, b) ((a) > (b) ? (a) : (b))

/* ---- the destination child --------------------------------------------- */

/*
 * The live demo's check table, shared with the child (MAP_SHARED): for
 * every page of the guest, in block order, the destination's XXH3-64 of the
 * page and its write counter.
 */
static struct page_check {
    uint64_t hash, counter;
} *g_table;
static uint64_t g_table_pages;

/* Fills g_table from the received blocks; reports torn pages. */
static void child_check_pages(FILE *out, mfd_session *s)
{
    uint64_t index = 0, torn = 0;
    for (int i = 0; i < mfd_block_count(s); i++) {
        mfd_block_info b;
        mfd_block_get(s, i, &b);
        for (uint64_t off = 0; off + 4096 <= b.length && index < g_table_pages;
             off += 4096, index++) {
            const uint8_t *page = (const uint8_t *)b.host + off;
            g_table[index].hash = XXH3_64bits(page, 4096);
            if (guest_page_check(page, index, &g_table[index].counter) &&
                torn++ < 5)
                fprintf(out, "torn %s 0x%" PRIx64 "\n", b.name, off);
        }
    }
    fprintf(out, "checked %" PRIu64 " %" PRIu64 "\n", index, torn);
}

static void child_main(int wfd, const char *listen_uri, bool prealloc,
                       bool print_stats)
{
    FILE *out = fdopen(wfd, "w");
    mfd_session *s = mfd_session_new();
    if (!out || !s)
        _exit(3);
    if ((prealloc && mfd_set_param(s, MFD_PARAM_PREALLOC, 1)) ||
        cli_tls_apply(s) || mfd_listen(s, listen_uri)) {
        fprintf(out, "error %s\n", mfd_last_error(s));
        fclose(out);
        _exit(1);
    }
    fprintf(out, "uri %s\n", mfd_listen_uri(s));
    fflush(out);
    if (mfd_incoming(s)) {
        fprintf(out, "error %s\n", mfd_last_error(s));
        fclose(out);
        _exit(1);
    }
    if (print_stats)
        cli_print_stats(stdout, s, "destination: migration completed");
    fflush(stdout);
    for (int i = 0; i < mfd_block_count(s); i++) {
        mfd_block_info b;
        mfd_block_get(s, i, &b);
        uint64_t h;
        mfd_block_digest(s, i, &h);
        fprintf(out, "digest %016llx %s\n", (unsigned long long)h, b.name);
    }
    const void *dev;
    size_t dev_len;
    if (!mfd_get_device_state(s, &dev, &dev_len))
        fprintf(out, "device %zu %016llx\n", dev_len,
                (unsigned long long)XXH3_64bits(dev, dev_len));
    if (g_table)
        child_check_pages(out, s);
    fprintf(out, "ok\n");
    fclose(out);
    mfd_session_free(s);
    _exit(0);
}

int dest_child_start(dest_child *d, const char *listen_uri, int channels,
                     bool prealloc, bool print_stats)
{
    (void)channels; /* the source decides; the destination follows HELLO */
    int p[2];
    if (pipe(p))
        return -1;
    fflush(NULL);
    pid_t pid = fork();
    if (pid < 0) {
        close(p[0]);
        close(p[1]);
        return -1;
    }
    if (pid == 0) {
        close(p[0]);
        child_main(p[1], listen_uri, prealloc, print_stats);
    }
    close(p[1]);
    d->pid = pid;
    d->fd = p[0];
    /* The first line is the resolved URI, or an error. */
    char line[400];
    size_t n = 0;
    while (n < sizeof(line) - 1) {
        ssize_t r = read(d->fd, line + n, 1);
        if (r <= 0 || line[n] == '\n')
            break;
        n++;
    }
    line[n] = 0;
    if (strncmp(line, "uri ", 4)) {
        fprintf(stderr, "multifd: destination process: %s\n",
                n ? line : "exited");
        return -1;
    }
    snprintf(d->uri, sizeof(d->uri), "%.300s", line + 4);
    return 0;
}

/* The child's report beyond the digests (live demo). */
static struct {
    char torn[5][300];
    int ntorn_lines;
    uint64_t checked, torn_pages;
    bool have_checked, have_device;
    uint64_t device_len, device_hash;
} g_report;

int dest_child_finish(dest_child *d, uint64_t *digests, int n, char *err,
                      size_t errlen)
{
    FILE *in = fdopen(d->fd, "r");
    char line[1400];
    int got = 0, ok = 0;
    snprintf(err, errlen, "destination process ended without a report");
    while (in && fgets(line, sizeof(line), in)) {
        line[strcspn(line, "\n")] = 0;
        if (!strncmp(line, "digest ", 7) && got < n)
            digests[got++] = strtoull(line + 7, NULL, 16);
        else if (!strcmp(line, "ok"))
            ok = 1;
        else if (!strncmp(line, "torn ", 5) && g_report.ntorn_lines < 5)
            snprintf(g_report.torn[g_report.ntorn_lines++],
                     sizeof(g_report.torn[0]), "%.290s", line + 5);
        else if (sscanf(line, "checked %" SCNu64 " %" SCNu64,
                        &g_report.checked, &g_report.torn_pages) == 2)
            g_report.have_checked = true;
        else if (sscanf(line, "device %" SCNu64 " %" SCNx64,
                        &g_report.device_len, &g_report.device_hash) == 2)
            g_report.have_device = true;
        else if (!strncmp(line, "error ", 6))
            snprintf(err, errlen, "%s", line + 6);
    }
    if (in)
        fclose(in);
    int status = 0;
    while (waitpid(d->pid, &status, 0) < 0 && errno == EINTR)
        ;
    if (!ok || got != n || !WIFEXITED(status) || WEXITSTATUS(status)) {
        if (ok)
            snprintf(err, errlen, "destination reported %d of %d digests, "
                     "exit status %d", got, n, status);
        return -1;
    }
    return 0;
}

/* ---- the live guest's writers ------------------------------------------- */

/*
 * Writer threads rewrite random pages at a combined --dirty-rate, as a
 * running guest's vCPUs do. The library's pause callback stops them (each
 * finishes the page it is writing), resume restarts them, and its throttle
 * callback slows them as QEMU's CPU throttle slows vCPUs.
 */
typedef struct {
    uint8_t *guest;
    uint64_t pages;
    uint64_t ram_pages; /* pages of pc.ram; vga.vram follows */
    uint64_t rate;      /* bytes per second, per writer */
    mfd_session *s;     /* manual tracker: mark written pages */
    bool manual;
    int nwriters;
    pthread_mutex_t lock;
    pthread_cond_t cond;
    bool pause, stop;
    int paused;
    int throttle;         /* percent, atomic */
    uint64_t writes;      /* pages written, atomic */
    uint64_t device_blob[64]; /* the "device state": writer counters */
} writers;

static uint64_t now_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000 + (uint64_t)ts.tv_nsec / 1000;
}

/* Returns false once the writers are told to stop. */
static bool writer_wait_if_paused(writers *w)
{
    if (!__atomic_load_n(&w->pause, __ATOMIC_ACQUIRE) &&
        !__atomic_load_n(&w->stop, __ATOMIC_ACQUIRE))
        return true;
    pthread_mutex_lock(&w->lock);
    w->paused++;
    pthread_cond_broadcast(&w->cond);
    while (w->pause && !w->stop)
        pthread_cond_wait(&w->cond, &w->lock);
    w->paused--;
    bool go = !w->stop;
    pthread_mutex_unlock(&w->lock);
    return go;
}

typedef struct {
    writers *w;
    int id;
    pthread_t thread;
} writer_arg;

static void *writer_main(void *arg)
{
    writer_arg *a = arg;
    writers *w = a->w;
    uint64_t rng = 0x5eed + (uint64_t)a->id * 7919;
    double allowance = 0;
    uint64_t last = now_us();
    while (writer_wait_if_paused(w)) {
        uint64_t now = now_us();
        int thr = __atomic_load_n(&w->throttle, __ATOMIC_RELAXED);
        /* Throttled writers get (100 - throttle)% of their time. */
        double rate = (double)w->rate * (100 - thr) / 100.0;
        allowance += (double)(now - last) * rate / 1e6;
        if (allowance > rate / 100)
            allowance = rate / 100; /* at most a 10 ms burst */
        last = now;
        if (allowance < 4096 || rate <= 0) {
            double wait = rate > 0 ? (4096 - allowance) * 1e6 / rate : 10000;
            /*
             * At most 1 ms asleep: a pause request must not wait for a slow
             * writer's next page (a vCPU stops within microseconds).
             */
            if (wait > 1000)
                wait = 1000;
            struct timespec ts = {0, (long)(MFD_DEMO_MAX(wait, 200.0) * 1000)};
            if (ts.tv_nsec >= 1000000000L)
                ts.tv_nsec = 999999999L;
            nanosleep(&ts, NULL);
            continue;
        }
        allowance -= 4096;
        uint64_t x = rng += UINT64_C(0x9e3779b97f4a7c15);
        x = (x ^ (x >> 31)) * UINT64_C(0xbf58476d1ce4e5b9);
        /* Each writer owns the pages p % nwriters == id: no two writers
         * ever write one page at once (that would tear it). */
        uint64_t n = (uint64_t)w->nwriters;
        uint64_t p = (x ^ (x >> 29)) % w->pages;
        p = p - p % n + (uint64_t)a->id;
        if (p >= w->pages)
            continue;
        guest_rewrite(w->guest + p * 4096, p, &rng);
        if (w->manual) {
            int block = p < w->ram_pages ? 0 : 1;
            uint64_t off = (block ? p - w->ram_pages : p) * 4096;
            mfd_mark_dirty(w->s, block, off, 4096);
        }
        __atomic_fetch_add(&w->writes, 1, __ATOMIC_RELAXED);
    }
    return NULL;
}

static void writers_pause(void *opaque)
{
    writers *w = opaque;
    pthread_mutex_lock(&w->lock);
    __atomic_store_n(&w->pause, true, __ATOMIC_RELEASE);
    while (w->paused < w->nwriters)
        pthread_cond_wait(&w->cond, &w->lock);
    pthread_mutex_unlock(&w->lock);
    /* The device state as of the pause: what the writers did. */
    w->device_blob[0] = __atomic_load_n(&w->writes, __ATOMIC_RELAXED);
    w->device_blob[1] = now_us();
    mfd_set_device_state(w->s, w->device_blob, sizeof(w->device_blob));
}

static void writers_resume(void *opaque)
{
    writers *w = opaque;
    pthread_mutex_lock(&w->lock);
    __atomic_store_n(&w->pause, false, __ATOMIC_RELEASE);
    pthread_cond_broadcast(&w->cond);
    pthread_mutex_unlock(&w->lock);
}

static void writers_throttle(void *opaque, int pct)
{
    writers *w = opaque;
    __atomic_store_n(&w->throttle, pct, __ATOMIC_RELAXED);
}

typedef struct {
    writers *w;
    cli_progress_kind kind;
} demo_ctx;

static demo_ctx *g_demo_ctx;

static void demo_progress(void *opaque, const mfd_pass_info *p)
{
    (void)opaque;
    cli_print_pass(stdout, g_demo_ctx->kind, p, 4096);
}

/*
 * After a failed migration the library resumed the writers: show that they
 * run again (give them 200 ms) before the demo stops them.
 */
static void writers_check_resumed(writers *w)
{
    uint64_t before = __atomic_load_n(&w->writes, __ATOMIC_RELAXED);
    struct timespec ts = {0, 200 * 1000000L};
    nanosleep(&ts, NULL);
    uint64_t after = __atomic_load_n(&w->writes, __ATOMIC_RELAXED);
    fprintf(stderr,
            "multifd demo: source: writers %s after the failure (%" PRIu64
            " pages written in 200 ms)\n",
            after > before ? "resumed" : "NOT running", after - before);
}

/* After a failure: every page of the source must still check out. */
static void guest_check_intact(const uint8_t *guest, uint64_t pages)
{
    uint64_t torn = 0, counter;
    for (uint64_t i = 0; i < pages; i++)
        torn += guest_page_check(guest + i * 4096, i, &counter) != 0;
    fprintf(stderr,
            "multifd demo: source: %s (%" PRIu64 " of %" PRIu64
            " pages fail their checksum)\n",
            torn ? "guest memory DAMAGED" : "guest memory intact", torn, pages);
}

/* ---- demo -------------------------------------------------------------- */

static const char demo_usage[] =
    "usage: multifd demo [options]\n"
    "\n"
    "Live-migrates a synthetic guest (zero, random and text-like pages) to a\n"
    "destination process over loopback TCP while writer threads keep\n"
    "rewriting its pages, as a running VM's vCPUs do. Pre-copy passes run\n"
    "until the expected downtime fits --downtime-limit; then the writers are\n"
    "paused and the rest is sent. Verified: the destination's memory equals\n"
    "the source's at the pause (XXH3-64 of every page), no page is torn (each\n"
    "page carries a checksum of itself and a write counter), and the device\n"
    "state arrived intact.\n"
    "\n"
    "options:\n"
    "  --size S                    guest size (default 1G; K/M/G suffixes)\n"
    "  --writers N                 writer threads (default 2; 0 = paused\n"
    "                              guest)\n"
    "  --dirty-rate RATE           bytes/s all writers together write\n"
    "                              (default 256M)\n"
    "  --dirty-tracker T           uffd-wp (default) | manual\n"
    "  --to URI                    migrate to a destination already listening\n"
    "                              there (`multifd recv`) instead of a child\n"
    "                              process; verified with feature VERIFY.\n"
    "                              --to file:PATH saves a live snapshot, then\n"
    "                              restores it and compares every page\n"
    "  --progress[=json]           pass lines as JSON objects on stdout\n"
    "  --json                      print the source's final stats as JSON\n"
    "  -h, --help                  this text\n"
    "\n"
    "The demo uses 4 channels unless --channels says otherwise.\n";

/* Compares the source (paused) with the destination's table, page by page. */
static uint64_t compare_pages(const uint8_t *guest, uint64_t pages,
                              uint64_t ram_pages)
{
    uint64_t bad = 0;
    for (uint64_t i = 0; i < pages; i++) {
        const uint8_t *page = guest + i * 4096;
        if (XXH3_64bits(page, 4096) == g_table[i].hash)
            continue;
        uint64_t counter;
        guest_page_check(page, i, &counter);
        if (bad++ < 5)
            fprintf(stderr,
                    "multifd demo: page %s+0x%" PRIx64
                    " differs: source write counter %" PRIu64
                    ", destination %" PRIu64 " (%s)\n",
                    i < ram_pages ? "pc.ram" : "vga.vram",
                    (i < ram_pages ? i : i - ram_pages) * 4096, counter,
                    g_table[i].counter,
                    g_table[i].counter < counter ? "stale" : "wrong");
    }
    return bad;
}

/*
 * --to file:PATH: restores the snapshot just saved into fresh memory and
 * compares it with the guest as it was at the pause, block by block and
 * page by page; checks no page is torn and the device state.
 */
static int verify_snapshot(FILE *out, const char *uri, const uint8_t *guest,
                           const uint64_t *lens, const char *const *names,
                           const void *dev, size_t dev_len)
{
    mfd_session *r = mfd_session_new();
    int64_t ch = 4;
    if (!r || mfd_set_param(r, MFD_PARAM_CHANNELS, ch) || mfd_restore(r, uri)) {
        fprintf(stderr, "multifd demo: error: restore: %s\n",
                r ? mfd_last_error(r) : "out of memory");
        mfd_session_free(r);
        return 1;
    }
    int bad = 0;
    uint64_t base = 0, differ = 0, torn = 0;
    for (int i = 0; i < 2; i++) {
        mfd_block_info b;
        if (mfd_block_count(r) != 2 || mfd_block_get(r, i, &b) ||
            strcmp(b.name, names[i]) || b.length != lens[i]) {
            fprintf(stderr, "multifd demo: error: restored blocks differ "
                            "from the guest's\n");
            bad = 1;
            break;
        }
        for (uint64_t o = 0; o < b.length; o += 4096) {
            const uint8_t *page = (const uint8_t *)b.host + o;
            uint64_t counter;
            if (guest_page_check(page, (base + o) / 4096, &counter))
                torn++;
            if (memcmp(page, guest + base + o, 4096) && differ++ < 5)
                fprintf(stderr, "multifd demo: page %s+0x%" PRIx64
                                " differs from the source at the pause\n",
                        names[i], o);
        }
        base += lens[i];
    }
    const void *rdev;
    size_t rlen;
    if (!bad && (mfd_get_device_state(r, &rdev, &rlen) || rlen != dev_len ||
                 memcmp(rdev, dev, dev_len))) {
        fprintf(stderr, "multifd demo: error: device state did not survive "
                        "the snapshot\n");
        bad = 1;
    }
    if (differ || torn) {
        fprintf(stderr, "multifd demo: error: %" PRIu64 " page(s) differ, %"
                        PRIu64 " torn\n", differ, torn);
        bad = 1;
    }
    if (!bad) {
        mfd_stats st;
        mfd_get_stats(r, &st);
        fprintf(out, "multifd demo: restored %s in %.3f s (%.2f GB/s, %"
                     PRIu64 " pages read, %" PRIu64 " absent): every page "
                     "equals the source's at the pause, none torn, device "
                     "state intact\n",
                uri, st.total_time_us / 1e6, st.throughput_gbps,
                st.normal_pages, st.zero_pages);
    }
    mfd_session_free(r);
    return bad;
}

int cmd_demo(int argc, char **argv)
{
    static const struct option own[] = {
        {"size", required_argument, 0, 's'},
        {"writers", required_argument, 0, 'w'},
        {"dirty-rate", required_argument, 0, 'd'},
        {"dirty-tracker", required_argument, 0, 'T'},
        {"to", required_argument, 0, 't'},
        {"progress", optional_argument, 0, 'P'},
        {"json", no_argument, 0, 'j'},
        {"help", no_argument, 0, 'h'},
        {0, 0, 0, 0},
    };
    struct option opts[64];
    cli_options_build(own, opts, 64);
    uint64_t size = UINT64_C(1) << 30, rate = UINT64_C(256) << 20;
    long nwriters = 2;
    const char *tracker = "uffd-wp", *to = NULL;
    bool json = false;
    demo_ctx ctx = {NULL, CLI_PROGRESS_HUMAN};
    mfd_session *s = mfd_session_new();
    if (!s) {
        fprintf(stderr, "multifd demo: error: out of memory\n");
        return 1;
    }
    mfd_set_param(s, MFD_PARAM_CHANNELS, 4);
    int c, rc = 0;
    optind = 1;
    while ((c = getopt_long(argc, argv, "h", opts, NULL)) != -1 && !rc) {
        char *end;
        switch (c) {
        case 's':
            if (!cli_parse_size(optarg, &size) || size < (UINT64_C(32) << 20)) {
                fprintf(stderr, "multifd demo: --size must be at least 32M\n");
                rc = 2;
            }
            break;
        case 'w':
            nwriters = strtol(optarg, &end, 10);
            if (*end || nwriters < 0 || nwriters > 64) {
                fprintf(stderr, "multifd demo: --writers must be 0..64\n");
                rc = 2;
            }
            break;
        case 'd':
            if (!cli_parse_size(optarg, &rate)) {
                fprintf(stderr, "multifd demo: --dirty-rate: bad rate '%s'\n",
                        optarg);
                rc = 2;
            }
            break;
        case 'T': tracker = optarg; break;
        case 't': to = optarg; break;
        case 'P':
            if (!cli_progress_mode(optarg, argc, argv, &ctx.kind)) {
                fprintf(stderr, "multifd demo: --progress: human or json\n");
                rc = 2;
            }
            break;
        case 'j': json = true; break;
        case 'h':
            fputs(demo_usage, stdout);
            fputs(cli_migration_usage, stdout);
            mfd_session_free(s);
            return 0;
        default:
            rc = cli_migration_option(s, c, optarg);
            if (rc < 0)
                fprintf(stderr, "multifd demo: %s\n", mfd_last_error(s));
            rc = rc ? 2 : 0;
            if (rc)
                fputs(demo_usage, stderr);
        }
    }
    if (!rc && (strcmp(tracker, "uffd-wp") && strcmp(tracker, "manual"))) {
        fprintf(stderr, "multifd demo: --dirty-tracker: uffd-wp or manual\n");
        rc = 2;
    }
    if (rc) {
        mfd_session_free(s);
        return rc;
    }
    size &= ~(uint64_t)4095;
    bool live = nwriters > 0;
    FILE *out = ctx.kind == CLI_PROGRESS_JSON ? stderr : stdout;

    /* A guest of two blocks, as a VMM has: main RAM and a small VRAM. */
    uint64_t vram = UINT64_C(16) << 20, ram = size - vram;
    uint64_t pages = size / 4096;
    fprintf(out,
            "multifd demo: generating a %.2f GiB guest of mixed content "
            "(blocks pc.ram %" PRIu64 " MiB, vga.vram %" PRIu64 " MiB)\n",
            size / 1073741824.0, ram >> 20, vram >> 20);
    uint8_t *guest = mmap(NULL, size, PROT_READ | PROT_WRITE,
                          MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    g_table = to ? NULL
                 : mmap(NULL, pages * sizeof(*g_table), PROT_READ | PROT_WRITE,
                        MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    if (guest == MAP_FAILED || g_table == MAP_FAILED) {
        fprintf(stderr, "multifd demo: error: mmap %" PRIu64 " bytes: %s\n",
                size, strerror(errno));
        mfd_session_free(s);
        return 1;
    }
    g_table_pages = pages;
    guest_fill(guest, size, GUEST_MIXED, 42);
    guest_stamp_all(guest, size);

    /* The destination is forked before any thread exists. */
    dest_child d = {0};
    if (to) {
        snprintf(d.uri, sizeof(d.uri), "%s", to);
        if (strncmp(to, "file:", 5))
            mfd_set_param(s, MFD_PARAM_VERIFY, 1);
    } else if (dest_child_start(&d, "tcp:127.0.0.1:0", 0, false, true)) {
        fprintf(stderr, "multifd demo: error: could not start the "
                        "destination process\n");
        mfd_session_free(s);
        return 1;
    } else {
        fprintf(out, "multifd demo: destination process %d listening on %s\n",
                d.pid, d.uri);
    }

    writers w = {.guest = guest,
                 .pages = pages,
                 .ram_pages = ram / 4096,
                 .rate = live ? rate / (uint64_t)nwriters : 0,
                 .s = s,
                 .manual = !strcmp(tracker, "manual"),
                 .nwriters = (int)nwriters,
                 .lock = PTHREAD_MUTEX_INITIALIZER,
                 .cond = PTHREAD_COND_INITIALIZER};
    ctx.w = &w;
    mfd_live_ops ops = {.pause = writers_pause,
                        .resume = writers_resume,
                        .throttle = writers_throttle,
                        .progress = demo_progress};
    mfd_set_live_ops(s, &ops, &w);
    rc = mfd_set_param_by_name(s, "dirty-tracker", live ? tracker : "none");
    if (!rc)
        rc = mfd_add_block(s, "pc.ram", guest, ram);
    if (!rc)
        rc = mfd_add_block(s, "vga.vram", guest + ram, vram);

    writer_arg *wa = calloc((size_t)MFD_DEMO_MAX(nwriters, 1), sizeof(*wa));
    int started = 0;
    for (long i = 0; !rc && wa && i < nwriters; i++) {
        wa[i] = (writer_arg){&w, (int)i, 0};
        if (pthread_create(&wa[i].thread, NULL, writer_main, &wa[i]))
            break;
        started++;
    }
    if (!rc && started != nwriters) {
        fprintf(stderr, "multifd demo: error: could not start %ld writer "
                        "threads\n", nwriters);
        rc = -1;
    }
    int64_t ch, dl;
    mfd_get_param(s, MFD_PARAM_CHANNELS, &ch);
    mfd_get_param(s, MFD_PARAM_DOWNTIME_LIMIT, &dl);
    if (!rc) {
        if (live)
            fprintf(out,
                    "multifd demo: live migration over %" PRId64
                    " channels while %d writer(s) dirty %.0f MiB/s "
                    "(tracker %s, downtime-limit %" PRId64 " ms)\n",
                    ch, started, rate / 1048576.0, tracker, dl);
        else
            fprintf(out, "multifd demo: migrating a paused guest over %" PRId64
                         " channels\n", ch);
        fflush(out);
        g_demo_ctx = &ctx;
        rc = mfd_migrate(s, to ? to : d.uri);
    }

    /* Success leaves the writers paused: the memory is as at the pause. */
    char err[1400];
    uint64_t digests[2];
    bool failed = rc != 0;
    if (failed) {
        fprintf(stderr, "multifd demo: error: %s\n", mfd_last_error(s));
        if (d.pid)
            kill(d.pid, SIGTERM);
        if (started)
            writers_check_resumed(&w);
    }
    int vrc = d.pid ? dest_child_finish(&d, digests, 2, err, sizeof(err)) : 0;
    pthread_mutex_lock(&w.lock);
    __atomic_store_n(&w.stop, true, __ATOMIC_RELEASE);
    pthread_cond_broadcast(&w.cond);
    pthread_mutex_unlock(&w.lock);
    for (int i = 0; i < started; i++)
        pthread_join(wa[i].thread, NULL);
    free(wa);
    if (failed) {
        guest_check_intact(guest, pages);
        mfd_session_free(s);
        return 1;
    }

    mfd_stats *st = malloc(sizeof(*st));
    if (st)
        mfd_get_stats(s, st);
    cli_print_stats(out, s, "source: migration completed");
    if (st)
        fprintf(out,
                "multifd demo: total %.3f s, downtime %.1f ms (pause to "
                "DONE), %" PRIu64 " passes, %" PRIu64 " pages written by "
                "the guest meanwhile\n",
                st->total_time_us / 1e6, st->downtime_us / 1e3,
                st->iterations, w.writes);
    if (json) {
        char *j = mfd_stats_json(s);
        printf("%s\n", j ? j : "{}");
        free(j);
    }

    int bad = 0;
    uint64_t want[2] = {XXH3_64bits(guest, ram), XXH3_64bits(guest + ram, vram)};
    if (to && !strncmp(to, "file:", 5)) {
        const uint64_t lens[2] = {ram, vram};
        const char *const names[2] = {"pc.ram", "vga.vram"};
        bad = verify_snapshot(out, to, guest, lens, names, w.device_blob,
                              sizeof(w.device_blob));
    } else if (to) {
        /* The destination checked every block's digest (VERIFY). */
        if (st && st->normal_pages + st->zero_pages < pages) {
            fprintf(stderr, "multifd demo: error: %" PRIu64 " pages sent "
                            "for a guest of %" PRIu64 "\n",
                    st->normal_pages + st->zero_pages, pages);
            bad = 1;
        } else {
            fprintf(out, "multifd demo: verified by the destination: "
                         "XXH3-64 of both blocks matched (pc.ram %016" PRIx64
                         ", vga.vram %016" PRIx64 ")\n", want[0], want[1]);
        }
    } else if (vrc) {
        fprintf(stderr, "multifd demo: error: %s\n", err);
        bad = 1;
    } else {
        uint64_t differ = compare_pages(guest, pages, ram / 4096);
        for (int i = 0; i < g_report.ntorn_lines; i++)
            fprintf(stderr, "multifd demo: torn page at %s\n",
                    g_report.torn[i]);
        if (!g_report.have_checked || g_report.checked != pages ||
            g_report.torn_pages) {
            fprintf(stderr,
                    "multifd demo: error: %" PRIu64 " torn page(s) of %" PRIu64
                    " checked\n",
                    g_report.torn_pages, g_report.checked);
            bad = 1;
        }
        if (differ || digests[0] != want[0] || digests[1] != want[1]) {
            fprintf(stderr,
                    "multifd demo: error: verification failed: %" PRIu64
                    " page(s) differ from the source at the pause\n",
                    differ);
            bad = 1;
        }
        if (!g_report.have_device ||
            g_report.device_len != sizeof(w.device_blob) ||
            g_report.device_hash !=
                XXH3_64bits(w.device_blob, sizeof(w.device_blob))) {
            fprintf(stderr, "multifd demo: error: device state did not "
                            "arrive intact\n");
            bad = 1;
        }
        if (st && (st->normal_pages + st->zero_pages < pages ||
                   (!live && st->normal_pages + st->zero_pages != pages))) {
            fprintf(stderr, "multifd demo: error: %" PRIu64 " pages sent for "
                            "a guest of %" PRIu64 "\n",
                    st->normal_pages + st->zero_pages, pages);
            bad = 1;
        }
    }
    if (!bad && !to)
        fprintf(out,
                "multifd demo: verified: all %" PRIu64 " pages equal the "
                "source's at the pause (XXH3-64 per page; pc.ram %016" PRIx64
                ", vga.vram %016" PRIx64 "), none torn, device state intact\n",
                pages, want[0], want[1]);
    free(st);
    mfd_session_free(s);
    munmap(guest, size);
    if (g_table)
        munmap(g_table, pages * sizeof(*g_table));
    return bad;
}

/* ---- colo -------------------------------------------------------------- */

/*
 * `multifd colo`: three processes. The secondary (a child) keeps the
 * replica; the primary (another child) runs the guest and its writers and
 * takes checkpoints; this process waits for both and reads what they
 * wrote into a shared table: per checkpoint the primary's digest of its
 * memory at the pause and the secondary's digest of its replica after the
 * commit, and the checkpoint's costs.
 */
typedef struct {
    uint64_t prim, sec; /* XXH3-64 of the guest at the pause / the replica */
    uint64_t pause_us, transfer_us, dirty, bytes;
} colo_ck;

typedef struct {
    uint64_t max;            /* entries in ck[] */
    uint64_t pauses;         /* primary: pause callbacks so far */
    uint64_t acked;          /* primary: checkpoints acknowledged (id >= 1) */
    int64_t last_committed;  /* secondary */
    int64_t promoted_id;     /* secondary: -1 until promoted */
    uint64_t promoted_digest;
    uint64_t mismatches, first_bad;
    int unprotected;         /* primary: the secondary was lost */
    uint64_t detect_ms;      /* last ACK to the primary noticing */
    uint64_t last_ack_us;
    int writers_ran, intact; /* primary, after losing the secondary */
    colo_ck ck[];
} colo_table;

typedef struct {
    colo_table *t;
    writers *w;
    mfd_session *s;
    uint8_t *guest;
    uint64_t size;
    bool verify;
    uint64_t checkpoints, duration_ms, kill_primary, kill_secondary;
    uint64_t stop_secondary;
    uint64_t t0;
} colo_ctx;

static colo_ctx g_colo;

static void colo_pause(void *opaque)
{
    writers_pause(opaque);
    colo_table *t = g_colo.t;
    uint64_t id = t->pauses++;
    if (g_colo.verify && id < t->max)
        t->ck[id].prim = XXH3_64bits(g_colo.guest, g_colo.size);
}

/* Called after a checkpoint's pages went out, before its END. */
static void colo_pass(void *opaque, const mfd_pass_info *p)
{
    (void)opaque;
    (void)p;
    if (g_colo.kill_primary &&
        mfd_colo_state_get(g_colo.s) == MFD_COLO_PROTECTED &&
        g_colo.t->pauses - 1 == g_colo.kill_primary + 1) {
        printf("multifd colo: primary: killing itself in the middle of "
               "checkpoint %" PRIu64 " (pages sent, no CHECKPOINT_END)\n",
               g_colo.kill_primary + 1);
        fflush(stdout);
        raise(SIGKILL);
    }
}

static void colo_checkpoint_cb(void *opaque, const mfd_checkpoint_info *c)
{
    (void)opaque;
    colo_table *t = g_colo.t;
    if (c->id < t->max) {
        t->ck[c->id].pause_us = c->pause_us;
        t->ck[c->id].transfer_us = c->transfer_us;
        t->ck[c->id].dirty = c->dirty_pages;
        t->ck[c->id].bytes = c->bytes;
    }
    t->acked = c->id;
    t->last_ack_us = now_us();
    printf("  checkpoint %" PRIu64 ": pause %.2f ms, transfer %.2f ms, %" PRIu64
           " dirty pages, %.1f MiB\n",
           c->id, c->pause_us / 1e3, c->transfer_us / 1e3, c->dirty_pages,
           c->bytes / 1048576.0);
    fflush(stdout);
    bool done = (g_colo.checkpoints && c->id >= g_colo.checkpoints) ||
                (g_colo.duration_ms &&
                 now_us() - g_colo.t0 >= g_colo.duration_ms * 1000);
    if (done && !g_colo.kill_primary && !g_colo.kill_secondary &&
        !g_colo.stop_secondary)
        mfd_colo_stop(g_colo.s);
}

static void colo_unprotected_cb(void *opaque, const char *reason)
{
    (void)opaque;
    colo_table *t = g_colo.t;
    t->unprotected = 1;
    t->detect_ms = (now_us() - t->last_ack_us) / 1000;
    printf("multifd colo: primary: secondary lost %" PRIu64 " ms after the "
           "last acknowledged checkpoint: %s\n",
           t->detect_ms, reason);
    fflush(stdout);
}

static uint64_t replica_digest(mfd_session *s)
{
    mfd_block_info b;
    if (mfd_block_get(s, 0, &b))
        return 0;
    return XXH3_64bits(b.host, b.length);
}

static void colo_committed_cb(void *opaque, uint64_t id)
{
    mfd_session *s = opaque;
    colo_table *t = g_colo.t;
    t->last_committed = (int64_t)id;
    if (g_colo.verify && id < t->max) {
        t->ck[id].sec = replica_digest(s);
        if (t->ck[id].sec != t->ck[id].prim && !t->mismatches++)
            t->first_bad = id;
    }
    if (g_colo.kill_secondary && id == g_colo.kill_secondary)
        raise(SIGKILL);
    if (g_colo.stop_secondary && id == g_colo.stop_secondary)
        raise(SIGSTOP); /* silent, connections open: only heartbeats tell */
}

static void colo_promoted_cb(void *opaque, uint64_t id, const char *reason)
{
    mfd_session *s = opaque;
    colo_table *t = g_colo.t;
    t->promoted_digest = replica_digest(s);
    t->promoted_id = (int64_t)id;
    printf("multifd colo: secondary: primary lost (%s); promoted the replica "
           "of checkpoint %" PRIu64 "\n",
           reason, id);
    fflush(stdout);
}

static int colo_secondary(int wfd, const char *hb_interval,
                          const char *hb_timeout)
{
    mfd_session *s = mfd_session_new();
    mfd_colo_ops ops = {.committed = colo_committed_cb,
                        .promoted = colo_promoted_cb};
    if (!s || mfd_set_param(s, MFD_PARAM_COLO, 1) ||
        mfd_set_param_by_name(s, "heartbeat-interval", hb_interval) ||
        mfd_set_param_by_name(s, "heartbeat-timeout", hb_timeout) ||
        mfd_set_colo_ops(s, &ops, s) || cli_tls_apply(s) ||
        mfd_listen(s, "tcp:127.0.0.1:0")) {
        fprintf(stderr, "multifd colo: secondary: %s\n",
                s ? mfd_last_error(s) : "out of memory");
        return 1;
    }
    mfd_set_log(s, NULL, NULL);
    dprintf(wfd, "%s\n", mfd_listen_uri(s));
    close(wfd);
    int rc = mfd_incoming(s);
    if (rc)
        fprintf(stderr, "multifd colo: secondary: error: %s\n",
                mfd_last_error(s));
    mfd_session_free(s);
    return rc ? 1 : 0;
}

static int cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

/* Mean and p99 of ck[1..n].field (microseconds) in ms. */
static void colo_summary(FILE *out, const colo_table *t, uint64_t n,
                         size_t field, const char *what)
{
    uint64_t *v = calloc(n ? n : 1, sizeof(*v));
    double sum = 0;
    for (uint64_t i = 0; v && i < n; i++) {
        v[i] = *(const uint64_t *)((const uint8_t *)&t->ck[i + 1] + field);
        sum += (double)v[i];
    }
    if (!v || !n) {
        free(v);
        return;
    }
    qsort(v, n, sizeof(*v), cmp_u64);
    uint64_t p99 = v[(n * 99 + 99) / 100 - 1 < n ? (n * 99 + 99) / 100 - 1 : n - 1];
    fprintf(out, "  %-9s mean %7.2f ms   p99 %7.2f ms   max %7.2f ms\n", what,
            sum / (double)n / 1e3, p99 / 1e3, v[n - 1] / 1e3);
    free(v);
}

static const char colo_usage[] =
    "usage: multifd colo [options]\n"
    "\n"
    "COLO replication (continuous checkpoints) of a synthetic guest whose\n"
    "writers keep running: a secondary process keeps a replica, the primary\n"
    "process checkpoints every --checkpoint-interval ms. Prints each\n"
    "checkpoint's pause and transfer times, dirty pages and bytes, and at\n"
    "the end mean and p99. With --verify the replica is compared with the\n"
    "primary's memory at every checkpoint's pause (XXH3-64 of the guest).\n"
    "\n"
    "options:\n"
    "  --size S                  guest size (default 256M)\n"
    "  --writers N               writer threads (default 2)\n"
    "  --dirty-rate RATE         bytes/s all writers together (default 64M)\n"
    "  --dirty-tracker T         uffd-wp (default) | manual\n"
    "  --channels N              multifd-channels (default 4)\n"
    "  --checkpoints N           stop after N checkpoints (default 20)\n"
    "  --duration S              or after S seconds\n"
    "  --checkpoint-interval MS  (default 600)\n"
    "  --heartbeat-interval MS   (default 100)\n"
    "  --heartbeat-timeout MS    (default 2000)\n"
    "  --colo-staging on|off     copy dirty pages and resume before the\n"
    "                            transfer (default on)\n"
    "  --verify                  compare replica and primary at every\n"
    "                            checkpoint\n"
    "  --kill-primary-after N    kill the primary in the middle of checkpoint\n"
    "                            N+1; the secondary must promote checkpoint N\n"
    "  --kill-secondary-after N  kill the secondary after committing\n"
    "                            checkpoint N; the primary must go on\n"
    "  --stop-secondary-after N  stop (SIGSTOP) the secondary after\n"
    "                            checkpoint N: only the heartbeat timeout\n"
    "                            can tell the primary\n"
    "  --tls-creds DIR           TLS with x509 on every channel (DIR in\n"
    "                            QEMU's tls-creds-x509 layout, used by both\n"
    "                            sides)\n"
    "  --tls-psk FILE            TLS with a pre-shared key (NAME:HEXKEY lines)\n"
    "  --tls-hostname NAME       the name the secondary's certificate must\n"
    "                            carry (default: the address)\n"
    "  --tls-priority STRING     GnuTLS priority string of the handshakes\n"
    "  -h, --help                this text\n";

int cmd_colo(int argc, char **argv)
{
    static const struct option opts[] = {
        {"size", required_argument, 0, 's'},
        {"writers", required_argument, 0, 'w'},
        {"dirty-rate", required_argument, 0, 'd'},
        {"dirty-tracker", required_argument, 0, 'T'},
        {"channels", required_argument, 0, 'c'},
        {"checkpoints", required_argument, 0, 'n'},
        {"duration", required_argument, 0, 'D'},
        {"checkpoint-interval", required_argument, 0, 'i'},
        {"heartbeat-interval", required_argument, 0, 'H'},
        {"heartbeat-timeout", required_argument, 0, 'O'},
        {"colo-staging", required_argument, 0, 'S'},
        {"verify", no_argument, 0, 'v'},
        {"kill-primary-after", required_argument, 0, 'K'},
        {"kill-secondary-after", required_argument, 0, 'k'},
        {"stop-secondary-after", required_argument, 0, 'x'},
        {"tls-creds", required_argument, 0, 'C'},
        {"tls-psk", required_argument, 0, 'P'},
        {"tls-hostname", required_argument, 0, 'N'},
        {"tls-priority", required_argument, 0, 'R'},
        {"help", no_argument, 0, 'h'},
        {0, 0, 0, 0},
    };
    uint64_t size = UINT64_C(256) << 20, rate = UINT64_C(64) << 20;
    const char *tracker = "uffd-wp", *channels = "4", *interval = "600",
               *hb_interval = "100", *hb_timeout = "2000", *staging = "on",
               *tls_hostname = NULL;
    long nwriters = 2;
    colo_ctx *g = &g_colo;
    memset(g, 0, sizeof(*g));
    g->checkpoints = 20;
    int c;
    optind = 1;
    while ((c = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
        char *end = NULL;
        bool bad = false;
        switch (c) {
        case 's': bad = !cli_parse_size(optarg, &size) || size < (4u << 20); break;
        case 'w': nwriters = strtol(optarg, &end, 10); bad = *end || nwriters < 0 || nwriters > 64; break;
        case 'd': bad = !cli_parse_size(optarg, &rate); break;
        case 'T': tracker = optarg; break;
        case 'c': channels = optarg; break;
        case 'n': g->checkpoints = strtoull(optarg, &end, 10); bad = *end; g->duration_ms = 0; break;
        case 'D': g->duration_ms = strtoull(optarg, &end, 10) * 1000; bad = *end; g->checkpoints = 0; break;
        case 'i': interval = optarg; break;
        case 'H': hb_interval = optarg; break;
        case 'O': hb_timeout = optarg; break;
        case 'S': staging = optarg; break;
        case 'v': g->verify = true; break;
        case 'K': g->kill_primary = strtoull(optarg, &end, 10); bad = *end || !g->kill_primary; break;
        case 'k': g->kill_secondary = strtoull(optarg, &end, 10); bad = *end || !g->kill_secondary; break;
        case 'x': g->stop_secondary = strtoull(optarg, &end, 10); bad = *end || !g->stop_secondary; break;
        case 'C': cli_tls_remember("tls-creds", optarg); break;
        case 'P': cli_tls_remember("tls-psk", optarg); break;
        case 'N': tls_hostname = optarg; break;
        case 'R': cli_tls_remember("tls-priority", optarg); break;
        case 'h': fputs(colo_usage, stdout); return 0;
        default: bad = true;
        }
        if (bad) {
            fprintf(stderr, "multifd colo: bad option or value\n%s", colo_usage);
            return 2;
        }
    }
    if (strcmp(staging, "on") && strcmp(staging, "off")) {
        fprintf(stderr, "multifd colo: --colo-staging: on or off\n");
        return 2;
    }
    size &= ~(uint64_t)4095;
    uint64_t max = (g->checkpoints ? g->checkpoints : 100000) + 4;
    if (g->kill_primary && g->kill_primary + 4 > max)
        max = g->kill_primary + 4;
    if (g->kill_secondary && g->kill_secondary + 4 > max)
        max = g->kill_secondary + 4;
    if (g->stop_secondary && g->stop_secondary + 4 > max)
        max = g->stop_secondary + 4;
    size_t tlen = sizeof(colo_table) + max * sizeof(colo_ck);
    colo_table *t = mmap(NULL, tlen, PROT_READ | PROT_WRITE,
                         MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    if (t == MAP_FAILED) {
        fprintf(stderr, "multifd colo: error: mmap: %s\n", strerror(errno));
        return 1;
    }
    t->max = max;
    t->last_committed = t->promoted_id = -1;
    g->t = t;
    fflush(stdout);

    /* The secondary, then the primary: both forked before any thread. */
    int pfd[2];
    if (pipe(pfd)) {
        fprintf(stderr, "multifd colo: error: pipe: %s\n", strerror(errno));
        return 1;
    }
    pid_t sec = fork();
    if (sec == 0) {
        close(pfd[0]);
        _exit(colo_secondary(pfd[1], hb_interval, hb_timeout));
    }
    close(pfd[1]);
    char uri[320] = "";
    FILE *rf = fdopen(pfd[0], "r");
    if (sec < 0 || !rf || !fgets(uri, sizeof(uri), rf)) {
        fprintf(stderr, "multifd colo: error: the secondary did not start\n");
        if (sec > 0)
            kill(sec, SIGKILL);
        return 1;
    }
    fclose(rf);
    uri[strcspn(uri, "\n")] = 0;
    printf("multifd colo: secondary process %d on %s; %.0f MiB guest, %ld "
           "writer(s) at %.0f MiB/s, %s channels, checkpoint every %s ms, "
           "staging %s%s\n",
           (int)sec, uri, size / 1048576.0, nwriters, rate / 1048576.0,
           channels, interval, staging,
           cli_tls_creds ? ", TLS x509" : cli_tls_psk ? ", TLS PSK" : "");
    fflush(stdout);

    pid_t prim = fork();
    if (prim == 0) {
        uint8_t *guest = mmap(NULL, size, PROT_READ | PROT_WRITE,
                              MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1,
                              0);
        mfd_session *s = mfd_session_new();
        if (guest == MAP_FAILED || !s)
            _exit(1);
        guest_fill(guest, size, GUEST_MIXED, 7);
        guest_stamp_all(guest, size);
        writers w = {.guest = guest,
                     .pages = size / 4096,
                     .ram_pages = size / 4096,
                     .rate = nwriters ? rate / (uint64_t)nwriters : 0,
                     .s = s,
                     .manual = !strcmp(tracker, "manual"),
                     .nwriters = (int)nwriters,
                     .lock = PTHREAD_MUTEX_INITIALIZER,
                     .cond = PTHREAD_COND_INITIALIZER};
        g->w = &w;
        g->s = s;
        g->guest = guest;
        g->size = size;
        mfd_live_ops lops = {.pause = colo_pause,
                             .resume = writers_resume,
                             .progress = colo_pass};
        mfd_colo_ops cops = {.checkpoint = colo_checkpoint_cb,
                             .unprotected = colo_unprotected_cb};
        mfd_set_log(s, NULL, NULL);
        if (mfd_set_param(s, MFD_PARAM_COLO, 1) ||
            mfd_set_param_by_name(s, "multifd-channels", channels) ||
            mfd_set_param_by_name(s, "dirty-tracker", tracker) ||
            mfd_set_param_by_name(s, "checkpoint-interval", interval) ||
            mfd_set_param_by_name(s, "heartbeat-interval", hb_interval) ||
            mfd_set_param_by_name(s, "heartbeat-timeout", hb_timeout) ||
            mfd_set_param_by_name(s, "colo-staging", staging) ||
            mfd_set_live_ops(s, &lops, &w) ||
            mfd_set_colo_ops(s, &cops, NULL) || cli_tls_apply(s) ||
            (tls_hostname &&
             mfd_set_param_by_name(s, "tls-hostname", tls_hostname)) ||
            mfd_add_block(s, "pc.ram", guest, size)) {
            fprintf(stderr, "multifd colo: primary: %s\n", mfd_last_error(s));
            _exit(1);
        }
        writer_arg *wa = calloc((size_t)MFD_DEMO_MAX(nwriters, 1), sizeof(*wa));
        for (long i = 0; wa && i < nwriters; i++) {
            wa[i] = (writer_arg){&w, (int)i, 0};
            pthread_create(&wa[i].thread, NULL, writer_main, &wa[i]);
        }
        g->t0 = now_us();
        int rc = mfd_migrate(s, uri);
        if (rc && !t->unprotected)
            fprintf(stderr, "multifd colo: primary: error: %s\n",
                    mfd_last_error(s));
        if (t->unprotected) {
            /* The writers must be running, the memory untouched. */
            uint64_t before = __atomic_load_n(&w.writes, __ATOMIC_RELAXED);
            struct timespec ts = {0, 300 * 1000000L};
            nanosleep(&ts, NULL);
            t->writers_ran = __atomic_load_n(&w.writes, __ATOMIC_RELAXED) > before;
        }
        pthread_mutex_lock(&w.lock);
        __atomic_store_n(&w.stop, true, __ATOMIC_RELEASE);
        pthread_cond_broadcast(&w.cond);
        pthread_mutex_unlock(&w.lock);
        for (long i = 0; wa && i < nwriters; i++)
            pthread_join(wa[i].thread, NULL);
        uint64_t torn = 0, counter;
        for (uint64_t i = 0; i < size / 4096; i++)
            torn += guest_page_check(guest + i * 4096, i, &counter) != 0;
        t->intact = torn == 0;
        mfd_session_free(s);
        _exit(rc && !t->unprotected ? 1 : 0);
    }
    int st_prim = 0, st_sec = 0;
    if (prim > 0)
        waitpid(prim, &st_prim, 0);
    /*
     * The secondary exits on its own: stopped, promoted, killed or failed;
     * but a primary that failed before its first checkpoint (a refused TLS
     * handshake, say) may never have reached it: it is still listening.
     */
    if (g->stop_secondary)
        kill(sec, SIGKILL);
    bool prim_failed = !(WIFEXITED(st_prim) && !WEXITSTATUS(st_prim)) &&
                       !g->kill_primary;
    bool reaped = false;
    for (int i = 0; prim_failed && t->last_committed < 0 && !reaped; i++) {
        reaped = waitpid(sec, &st_sec, WNOHANG) == sec;
        if (!reaped && i == 20) {
            kill(sec, SIGKILL);
            printf("multifd colo: the primary failed before checkpoint 0; "
                   "stopped the secondary\n");
            break;
        }
        struct timespec ts = {0, 100 * 1000000L};
        nanosleep(&ts, NULL);
    }
    if (!reaped)
        waitpid(sec, &st_sec, 0);

    /* The verdict. */
    int bad = 0;
    uint64_t n = t->acked;
    printf("multifd colo: %" PRIu64 " checkpoints acknowledged, %" PRId64
           " committed last\n",
           n, t->last_committed);
    colo_summary(stdout, t, n, offsetof(colo_ck, pause_us), "pause");
    colo_summary(stdout, t, n, offsetof(colo_ck, transfer_us), "transfer");
    if (g->verify) {
        if (t->mismatches) {
            printf("multifd colo: error: %" PRIu64 " checkpoint(s) committed a "
                   "replica different from the primary at the pause (first: "
                   "%" PRIu64 ")\n",
                   t->mismatches, t->first_bad);
            bad = 1;
        } else {
            printf("multifd colo: verified: after each of checkpoints 0..%"
                   PRId64 " the replica equalled the primary's memory at the "
                   "pause (XXH3-64)\n",
                   t->last_committed);
        }
    }
    if (g->kill_primary) {
        bool killed = WIFSIGNALED(st_prim) && WTERMSIG(st_prim) == SIGKILL;
        bool ok = killed && t->promoted_id == (int64_t)g->kill_primary &&
                  WIFEXITED(st_sec) && !WEXITSTATUS(st_sec) &&
                  (!g->verify ||
                   t->promoted_digest == t->ck[g->kill_primary].prim);
        printf("multifd colo: failover: primary %s, secondary promoted "
               "checkpoint %" PRId64 " (expected %" PRIu64 ")%s: %s\n",
               killed ? "killed" : "NOT killed", t->promoted_id,
               g->kill_primary,
               g->verify ? ", replica compared with the primary's memory at "
                           "that checkpoint"
                         : "",
               ok ? "ok" : "FAILED");
        bad |= !ok;
    } else if (g->kill_secondary || g->stop_secondary) {
        bool ok = t->unprotected && t->writers_ran && t->intact &&
                  WIFEXITED(st_prim) && !WEXITSTATUS(st_prim);
        printf("multifd colo: secondary %s after checkpoint %" PRIu64
               ": primary %s in %" PRIu64 " ms, writers %s, memory %s: %s\n",
               g->kill_secondary ? "killed" : "stopped",
               g->kill_secondary ? g->kill_secondary : g->stop_secondary,
               t->unprotected ? "went on unprotected" : "did NOT notice",
               t->detect_ms, t->writers_ran ? "running" : "NOT running",
               t->intact ? "intact" : "DAMAGED", ok ? "ok" : "FAILED");
        bad |= !ok;
    } else {
        bool ok = WIFEXITED(st_prim) && !WEXITSTATUS(st_prim) &&
                  WIFEXITED(st_sec) && !WEXITSTATUS(st_sec) && t->intact;
        if (!ok)
            printf("multifd colo: error: primary status %d, secondary status "
                   "%d\n",
                   st_prim, st_sec);
        bad |= !ok;
    }
    munmap(t, tlen);
    return bad;
}
