/*
 * bench.c - `multifd bench`: repeated loopback migrations between two
 * processes, reported as the median GB/s of guest memory, beside reference
 * figures measured in the same run (memcpy, zero scan, raw TCP into reused
 * and into fresh memory) so that a result is always read against what the
 * machine can do.
 */
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/utsname.h>
#include <unistd.h>
#include <xxhash.h>

#include "cli.h"
#include "refs.h"

#ifndef MADV_POPULATE_WRITE
#define MADV_POPULATE_WRITE 23
#endif

static const char bench_usage[] =
    "usage: multifd bench [options]\n"
    "\n"
    "Migrates a synthetic paused guest between two processes over loopback\n"
    "R times, each into a fresh destination process, and prints the median\n"
    "throughput in GB/s of guest memory (GB = 10^9 bytes), with reference\n"
    "figures measured in the same run. Every run is verified (XXH3-64 of the\n"
    "destination's memory against the source's).\n"
    "\n"
    "options:\n"
    "  --size S                    guest size (default 1G; K/M/G suffixes)\n"
    "  --content C                 zero | random | half | text | mixed |\n"
    "                              untouched (default random); untouched:\n"
    "                              all zero, never written, small pages\n"
    "                              (a guest's unused memory in a VMM\n"
    "                              without huge pages)\n"
    "  --channels N                multifd-channels (default 2)\n"
    "  --runs R                    migrations to run (default 3)\n"
    "  --zero-page-detection M     none | legacy | multifd (default multifd)\n"
    "  --prealloc                  destination populates its memory first\n"
    "  --transport T               tcp | unix (default tcp)\n"
    "  --no-refs                   skip the reference measurements\n"
    "  -h, --help                  this text\n"
    "and the migration parameters of `multifd send` (below).\n";

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

/* XXH3-64 of `size` zero bytes, without reading (touching) the guest. */
static uint64_t zeros_digest(uint64_t size)
{
    static const uint8_t zero[1 << 16];
    XXH3_state_t *st = XXH3_createState();
    if (!st)
        return 0;
    XXH3_64bits_reset(st);
    for (uint64_t o = 0; o < size; o += sizeof(zero))
        XXH3_64bits_update(st, zero, size - o < sizeof(zero) ? size - o
                                                             : sizeof(zero));
    uint64_t h = XXH3_64bits_digest(st);
    XXH3_freeState(st);
    return h;
}

static void print_machine(void)
{
    char model[256] = "unknown CPU";
    FILE *f = fopen("/proc/cpuinfo", "r");
    char line[512];
    while (f && fgets(line, sizeof(line), f))
        if (!strncmp(line, "model name", 10)) {
            char *p = strchr(line, ':');
            if (p) {
                snprintf(model, sizeof(model), "%s", p + 2);
                model[strcspn(model, "\n")] = 0;
            }
            break;
        }
    if (f)
        fclose(f);
    struct utsname u;
    uname(&u);
    printf("machine: %ld cores, %s, Linux %s\n", sysconf(_SC_NPROCESSORS_ONLN),
           model, u.release);
}

int cmd_bench(int argc, char **argv)
{
    static const struct option own[] = {
        {"size", required_argument, 0, 's'},
        {"content", required_argument, 0, 'C'},
        {"runs", required_argument, 0, 'r'},
        {"prealloc", no_argument, 0, 'a'},
        {"transport", required_argument, 0, 't'},
        {"no-refs", no_argument, 0, 'n'},
        {"help", no_argument, 0, 'h'},
        {0, 0, 0, 0},
    };
    struct option opts[64];
    cli_options_build(own, opts, 64);
    /* Shared migration parameters, applied to every run's session. */
    struct {
        const char *name, *value;
    } set[32];
    int nset = 0;
    uint64_t size = UINT64_C(1) << 30;
    guest_content content = GUEST_RANDOM;
    const char *content_name = "random", *zpd = "multifd", *transport = "tcp";
    int channels = 2, runs = 3;
    bool prealloc = false, refs = true;
    int c;
    optind = 1;
    while ((c = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
        switch (c) {
        case 's':
            if (!cli_parse_size(optarg, &size) || size < (UINT64_C(1) << 20)) {
                fprintf(stderr, "multifd bench: --size must be at least 1M\n");
                return 2;
            }
            break;
        case 'C':
            if (!guest_content_parse(optarg, &content)) {
                fprintf(stderr, "multifd bench: unknown --content '%s'\n%s",
                        optarg, bench_usage);
                return 2;
            }
            content_name = optarg;
            break;
        case 'r':
            runs = atoi(optarg);
            if (runs < 1 || runs > 1000) {
                fprintf(stderr, "multifd bench: --runs must be 1..1000\n");
                return 2;
            }
            break;
        case 'a': prealloc = true; break;
        case 't':
            transport = optarg;
            if (strcmp(transport, "tcp") && strcmp(transport, "unix")) {
                fprintf(stderr, "multifd bench: --transport tcp|unix\n");
                return 2;
            }
            break;
        case 'n': refs = false; break;
        case 'h':
            fputs(bench_usage, stdout);
            fputs(cli_migration_usage, stdout);
            return 0;
        default: {
            const char *v, *name = cli_migration_param(c, optarg, &v);
            if (!name || nset == 32) {
                fputs(bench_usage, stderr);
                return 2;
            }
            cli_tls_remember(name, v);
            if (!strcmp(name, "multifd-channels")) {
                channels = atoi(v);
                if (channels < 1 || channels > 255) {
                    fprintf(stderr, "multifd bench: --channels must be "
                                    "1..255\n");
                    return 2;
                }
            } else if (!strcmp(name, "zero-page-detection")) {
                zpd = v;
            } else {
                set[nset].name = name;
                set[nset++].value = v;
            }
        }
        }
    }
    size &= ~(uint64_t)4095;

    print_machine();
    printf("guest: %.2f GiB %s, %d channel(s), method none, "
           "zero-page-detection %s, %s loopback, destination %s\n",
           size / 1073741824.0, content_name, channels, zpd, transport,
           prealloc ? "preallocated" : "fresh anonymous memory");
    fflush(stdout);

    uint8_t *guest = mmap(NULL, size, PROT_READ | PROT_WRITE,
                          MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (guest == MAP_FAILED) {
        fprintf(stderr, "multifd bench: error: mmap: %s\n", strerror(errno));
        return 1;
    }
    /* The source guest is the bench's own: huge pages make it quick to build. */
    madvise(guest, size, content == GUEST_UNTOUCHED ? MADV_NOHUGEPAGE
                                                    : MADV_HUGEPAGE);
    guest_fill(guest, size, content, 1);
    uint64_t want = content == GUEST_UNTOUCHED ? zeros_digest(size)
                                               : XXH3_64bits(guest, size);

    if (refs) {
        uint64_t rsize = size < (UINT64_C(1) << 30) ? size : UINT64_C(1) << 30;
        double mc = mfd_ref_memcpy_gbps(rsize, 3);
        /* Scan real zero pages, not the shared zero page of untouched memory. */
        uint8_t *z = mmap(NULL, rsize, PROT_READ | PROT_WRITE,
                          MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        double zs = -1;
        if (z != MAP_FAILED) {
            madvise(z, rsize, MADV_HUGEPAGE);
            memset(z, 0, rsize);
            zs = mfd_ref_zero_scan_gbps(z, rsize, 2);
            munmap(z, rsize);
        }
        double tr = mfd_ref_tcp_gbps(channels, size, 0);
        double tf = mfd_ref_tcp_gbps(channels, size, 1);
        printf("reference: memcpy %.2f GB/s (1 thread); zero scan %.2f GB/s "
               "(2 threads)\n",
               mc, zs);
        printf("reference: raw TCP, %d stream(s): %.2f GB/s between reused "
               "buffers, %.2f GB/s into fresh memory\n",
               channels, tr, tf);
        fflush(stdout);
    }

    /*
     * Two figures per run: over the whole migration (connect to DONE), and
     * over the transfer alone (all channels up to DONE), which leaves out
     * the destination mapping - or preallocating - its memory, as a VMM
     * destination that starts before the migration has done already.
     */
    double *gbps = calloc(2 * (size_t)runs, sizeof(double));
    double *xfer = gbps ? gbps + runs : NULL;
    char listen_uri[128], err[1400];
    int failures = 0;
    for (int r = 0; r < runs && gbps; r++) {
        if (!strcmp(transport, "unix"))
            snprintf(listen_uri, sizeof(listen_uri),
                     "unix:/tmp/multifd-bench-%d.sock", (int)getpid());
        else
            snprintf(listen_uri, sizeof(listen_uri), "tcp:127.0.0.1:0");
        dest_child d;
        if (dest_child_start(&d, listen_uri, channels, prealloc, false)) {
            failures++;
            break;
        }
        mfd_session *s = mfd_session_new();
        char ch[16];
        snprintf(ch, sizeof(ch), "%d", channels);
        int rc = !s || mfd_set_param_by_name(s, "multifd-channels", ch) ||
                 mfd_set_param_by_name(s, "zero-page-detection", zpd);
        for (int i = 0; !rc && i < nset; i++)
            rc = mfd_set_param_by_name(s, set[i].name, set[i].value);
        if (!rc)
            rc = mfd_add_block(s, "ram0", guest, size) ||
                 mfd_migrate(s, d.uri);
        if (rc) {
            fprintf(stderr, "multifd bench: run %d: error: %s\n", r + 1,
                    s ? mfd_last_error(s) : "out of memory");
            kill(d.pid, SIGTERM);
        }
        uint64_t got = 0;
        int vrc = dest_child_finish(&d, &got, 1, err, sizeof(err));
        if (!rc && (vrc || got != want)) {
            fprintf(stderr, "multifd bench: run %d: error: %s\n", r + 1,
                    vrc ? err : "destination memory differs from the source");
            rc = 1;
        }
        if (!rc) {
            mfd_stats *st = malloc(sizeof(*st));
            if (st) {
                mfd_get_stats(s, st);
                uint64_t t = st->total_time_us - st->setup_time_us;
                gbps[r] = (double)size / ((double)st->total_time_us * 1e3);
                xfer[r] = (double)size / ((double)(t ? t : 1) * 1e3);
                printf("run %d: %.3f s, %.2f GB/s; setup %.3f s, transfer "
                       "%.2f GB/s (%" PRIu64 " normal, %" PRIu64
                       " zero pages), verified",
                       r + 1, st->total_time_us / 1e6, gbps[r],
                       st->setup_time_us / 1e6, xfer[r], st->normal_pages,
                       st->zero_pages);
                if (st->compressed_bytes)
                    printf("; compression ratio %.2f, %.2f s compressing",
                           st->compression_ratio, st->compress_us / 1e6);
                if (st->untouched_pages)
                    printf("; %" PRIu64 " zero pages never read (untouched)",
                           st->untouched_pages);
                if (st->zerocopy_sends)
                    printf("; %" PRIu64 " zero-copy sends, %" PRIu64
                           " copied by the kernel",
                           st->zerocopy_sends, st->zerocopy_copied);
                printf("\n");
                fflush(stdout);
                free(st);
            }
        } else {
            failures++;
        }
        mfd_session_free(s);
    }
    int rc = 0;
    if (!failures && gbps) {
        qsort(gbps, (size_t)runs, sizeof(double), cmp_double);
        qsort(xfer, (size_t)runs, sizeof(double), cmp_double);
        printf("result: median %.2f GB/s of guest memory over %d run(s) "
               "(min %.2f, max %.2f); transfer alone: median %.2f GB/s\n",
               gbps[runs / 2], runs, gbps[0], gbps[runs - 1], xfer[runs / 2]);
    } else {
        fprintf(stderr, "multifd bench: error: %d run(s) failed\n", failures);
        rc = 1;
    }
    free(gbps);
    munmap(guest, size);
    return rc;
}
