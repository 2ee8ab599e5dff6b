/*
 * demo.c - `multifd demo`: a destination process and a source process on
 * loopback move a synthetic guest of mixed content over 4 channels; the
 * run shows progress and a summary, and every byte is verified.
 */
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>
#include <xxhash.h>

#include "cli.h"

/* ---- the destination child --------------------------------------------- */

static void child_main(int wfd, const char *listen_uri, bool prealloc,
                       bool print_stats)
{
    FILE *out = fdopen(wfd, "w");
    mfd_session *s = mfd_session_new();
    if (!out || !s)
        _exit(3);
    if ((prealloc && mfd_set_param(s, MFD_PARAM_PREALLOC, 1)) ||
        mfd_listen(s, listen_uri)) {
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
        fprintf(out, "digest %016llx %s\n",
                (unsigned long long)XXH3_64bits(b.host, b.length), b.name);
    }
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

/* ---- demo -------------------------------------------------------------- */

static const char demo_usage[] =
    "usage: multifd demo [options]\n"
    "\n"
    "Starts a destination process and migrates a synthetic guest (zero,\n"
    "random and text-like pages) to it over loopback TCP, showing progress,\n"
    "then verifies every byte: the destination's XXH3-64 of every block must\n"
    "equal the source's (feature VERIFY checks the same inside the protocol).\n"
    "\n"
    "options:\n"
    "  --size S                    guest size (default 1G; K/M/G suffixes)\n"
    "  --channels N                multifd-channels (default 4)\n"
    "  --zero-page-detection M     none | legacy | multifd (default multifd)\n"
    "  --json                      print the source's stats as JSON too\n"
    "  -h, --help                  this text\n";

int cmd_demo(int argc, char **argv)
{
    static const struct option opts[] = {
        {"size", required_argument, 0, 's'},
        {"channels", required_argument, 0, 'c'},
        {"zero-page-detection", required_argument, 0, 'z'},
        {"json", no_argument, 0, 'j'},
        {"help", no_argument, 0, 'h'},
        {0, 0, 0, 0},
    };
    uint64_t size = UINT64_C(1) << 30;
    const char *channels = "4", *zpd = "multifd";
    bool json = false;
    int c;
    optind = 1;
    while ((c = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
        switch (c) {
        case 's':
            if (!cli_parse_size(optarg, &size) || size < (UINT64_C(32) << 20)) {
                fprintf(stderr, "multifd demo: --size must be at least 32M\n");
                return 2;
            }
            break;
        case 'c': channels = optarg; break;
        case 'z': zpd = optarg; break;
        case 'j': json = true; break;
        case 'h': fputs(demo_usage, stdout); return 0;
        default: fputs(demo_usage, stderr); return 2;
        }
    }
    size &= ~(uint64_t)4095;

    /* A guest of two blocks, as a VMM has: main RAM and a small VRAM. */
    uint64_t vram = UINT64_C(16) << 20, ram = size - vram;
    printf("multifd demo: generating a %.2f GiB guest of mixed content "
           "(blocks pc.ram %" PRIu64 " MiB, vga.vram %" PRIu64 " MiB)\n",
           size / 1073741824.0, ram >> 20, vram >> 20);
    uint8_t *guest = mmap(NULL, size, PROT_READ | PROT_WRITE,
                          MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (guest == MAP_FAILED) {
        fprintf(stderr, "multifd demo: error: mmap %" PRIu64 " bytes: %s\n",
                size, strerror(errno));
        return 1;
    }
    guest_fill(guest, size, GUEST_MIXED, 42);
    uint64_t zero_pages = guest_zero_pages(guest, size);

    dest_child d;
    if (dest_child_start(&d, "tcp:127.0.0.1:0", 0, false, true)) {
        fprintf(stderr, "multifd demo: error: could not start the "
                        "destination process\n");
        return 1;
    }
    printf("multifd demo: destination process %d listening on %s\n", d.pid,
           d.uri);

    mfd_session *s = mfd_session_new();
    int rc = s ? 0 : -1;
    if (!rc)
        rc = mfd_set_param_by_name(s, "multifd-channels", channels);
    if (!rc)
        rc = mfd_set_param_by_name(s, "zero-page-detection", zpd);
    if (!rc)
        rc = mfd_set_param(s, MFD_PARAM_VERIFY, 1);
    if (!rc)
        rc = mfd_add_block(s, "pc.ram", guest, ram);
    if (!rc)
        rc = mfd_add_block(s, "vga.vram", guest + ram, vram);
    if (!rc) {
        printf("multifd demo: migrating over %s channels, zero-page-detection "
               "%s\n", channels, zpd);
        fflush(stdout);
        cli_progress_start(s, size, 250);
        rc = mfd_migrate(s, d.uri);
        cli_progress_stop();
    }
    if (rc) {
        fprintf(stderr, "multifd demo: error: %s\n",
                s ? mfd_last_error(s) : "out of memory");
        kill(d.pid, SIGTERM);
        char err[256];
        uint64_t dg[2];
        dest_child_finish(&d, dg, 2, err, sizeof(err));
        mfd_session_free(s);
        return 1;
    }

    uint64_t digests[2], want[2] = {XXH3_64bits(guest, ram),
                                    XXH3_64bits(guest + ram, vram)};
    char err[1400];
    int vrc = dest_child_finish(&d, digests, 2, err, sizeof(err));
    cli_print_stats(stdout, s, "source: migration completed");
    if (json) {
        char *j = mfd_stats_json(s);
        printf("%s\n", j ? j : "{}");
        free(j);
    }
    mfd_stats *st = malloc(sizeof(*st));
    bool counts_ok = false;
    if (st) {
        mfd_get_stats(s, st);
        counts_ok = st->normal_pages + st->zero_pages == size / 4096 &&
                    (strcmp(zpd, "none") ? st->zero_pages == zero_pages
                                         : st->zero_pages == 0);
        free(st);
    }
    mfd_session_free(s);
    munmap(guest, size);
    if (vrc) {
        fprintf(stderr, "multifd demo: error: %s\n", err);
        return 1;
    }
    if (digests[0] != want[0] || digests[1] != want[1]) {
        fprintf(stderr,
                "multifd demo: error: verification failed: destination "
                "digests %016" PRIx64 " %016" PRIx64 ", source %016" PRIx64
                " %016" PRIx64 "\n",
                digests[0], digests[1], want[0], want[1]);
        return 1;
    }
    if (!counts_ok) {
        fprintf(stderr, "multifd demo: error: page counts do not match the "
                        "generated guest (%" PRIu64 " zero pages)\n",
                zero_pages);
        return 1;
    }
    printf("multifd demo: verified: every byte of both blocks matches "
           "(XXH3-64 pc.ram %016" PRIx64 ", vga.vram %016" PRIx64
           "); %" PRIu64 " zero pages counted as generated\n",
           want[0], want[1], zero_pages);
    return 0;
}
