/*
 * source_harness.c - a small embedder of the library's source side, for
 * the source-fault tests (source_faults.py), which play a fake destination
 * against it. It exists for what the CLI cannot do: cancel a migration
 * from another thread (mfd_cancel), run a COLO primary with a device state
 * of a chosen size, and count the live-migration callbacks.
 *
 *   source_harness [OPTIONS] URI [NAME=VALUE ...]
 *
 *   --ram-mib N         the one block, "ram0", is N MiB of anonymous
 *                       memory (default 64); every 16th page is filled with
 *                       0xab, the others stay zero (legacy zero-page
 *                       detection sends them as ZERO_PAGES on the main
 *                       channel)
 *   --device-state N    hand a zeroed device state of N bytes to the
 *                       library at each pause (default: none)
 *   NAME=VALUE          mfd_set_param_by_name(), in order
 *
 * SIGUSR1 makes the harness call mfd_cancel(), as an operator would.
 *
 * The manual dirty tracker has no writers to report: a live or COLO
 * session then sends the block once and every later pass or checkpoint is
 * empty. The pause callback counts, sets the device state and returns;
 * resume only counts.
 *
 * Events go to stderr as they happen ("harness: +MS ms: what"), next to the
 * library's own log lines. Once mfd_migrate() returns, stdout gets exactly
 * these lines, for the driver to parse:
 *   rc N NAME            mfd_migrate()'s result and its error name
 *   error TEXT           mfd_last_error() (empty after success)
 *   migrate_ms N         how long mfd_migrate() took
 *   cancel_ms N          when mfd_cancel() was called (-1: never)
 *   pauses N resumes N   the live callbacks' counts
 *   unprotected N        calls of the COLO unprotected callback
 *   colo_state N         mfd_colo_state_get() at the end
 * Exit status: 0 when mfd_migrate() returned 0, 1 when it failed, 2 on a
 * usage or setup error.
 */
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <pthread.h>
#include <signal.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>

#include <multifd.h>

#define PAGE 4096u

static struct timespec t_start; /* mfd_migrate() is called */

static int64_t elapsed_ms(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (int64_t)(t.tv_sec - t_start.tv_sec) * 1000 +
           (t.tv_nsec - t_start.tv_nsec) / 1000000;
}

/*
 * The callbacks run on the migration thread; main() reads the counts only
 * after mfd_migrate() returned (the thread is then done with them).
 */
typedef struct {
    mfd_session *s;
    void *dev;
    size_t dev_len;
    int pauses, resumes, unprotected;
} harness;

static void on_pause(void *opaque)
{
    harness *h = opaque;
    h->pauses++;
    if (h->dev_len && mfd_set_device_state(h->s, h->dev, h->dev_len))
        fprintf(stderr, "harness: mfd_set_device_state: %s\n",
                mfd_last_error(h->s));
    fprintf(stderr, "harness: +%" PRId64 " ms: pause %d\n", elapsed_ms(),
            h->pauses);
}

static void on_resume(void *opaque)
{
    harness *h = opaque;
    h->resumes++;
    fprintf(stderr, "harness: +%" PRId64 " ms: resume %d\n", elapsed_ms(),
            h->resumes);
}

static void on_unprotected(void *opaque, const char *reason)
{
    harness *h = opaque;
    h->unprotected++;
    fprintf(stderr, "harness: +%" PRId64 " ms: unprotected: %s\n",
            elapsed_ms(), reason);
}

/*
 * SIGUSR1 is the operator's cancel: a thread of its own waits for it (the
 * signal is blocked everywhere else, so no handler runs library code) and
 * calls mfd_cancel(). The driver sends it once it has seen the stall it
 * wants cancelled, so the cancel never lands earlier by chance. Once
 * mfd_migrate() has returned, main() sends the thread SIGUSR1 itself with
 * `done` set, and it exits without cancelling.
 */
typedef struct {
    mfd_session *s;
    sigset_t set;
    pthread_t thread;
    pthread_mutex_t lock;
    bool done;        /* under lock */
    int64_t fired_ms; /* when mfd_cancel() was called, -1: never */
} canceller;

static void *cancel_main(void *arg)
{
    canceller *c = arg;
    int sig;
    while (sigwait(&c->set, &sig) == 0) {
        pthread_mutex_lock(&c->lock);
        bool done = c->done;
        if (!done && c->fired_ms < 0)
            c->fired_ms = elapsed_ms();
        pthread_mutex_unlock(&c->lock);
        if (done)
            break;
        fprintf(stderr, "harness: +%" PRId64 " ms: SIGUSR1: mfd_cancel\n",
                elapsed_ms());
        int r = mfd_cancel(c->s);
        if (r)
            fprintf(stderr, "harness: mfd_cancel returned %d\n", r);
    }
    return NULL;
}

static int usage(void)
{
    fprintf(stderr, "usage: source_harness [--ram-mib N] [--device-state "
                    "BYTES] URI [NAME=VALUE ...]\n");
    return 2;
}

/* A non-negative integer option, or -1 when it is not one. */
static int64_t number(const char *arg)
{
    char *end;
    errno = 0;
    long long v = strtoll(arg, &end, 10);
    if (errno || end == arg || *end || v < 0)
        return -1;
    return (int64_t)v;
}

int main(int argc, char **argv)
{
    static const struct option longopts[] = {
        {"ram-mib", required_argument, NULL, 'r'},
        {"device-state", required_argument, NULL, 'd'},
        {NULL, 0, NULL, 0},
    };
    int64_t ram_mib = 64, dev_len = 0;
    int opt;
    while ((opt = getopt_long(argc, argv, "", longopts, NULL)) != -1) {
        int64_t v = optarg ? number(optarg) : -1;
        if (opt == 'r' && v >= 1 && v <= 4096)
            ram_mib = v;
        else if (opt == 'd' && v >= 0)
            dev_len = v;
        else
            return usage();
    }
    if (optind >= argc)
        return usage();
    const char *uri = argv[optind++];

    /* Before any thread exists, so that every thread inherits the mask. */
    canceller c = {.fired_ms = -1};
    sigemptyset(&c.set);
    sigaddset(&c.set, SIGUSR1);
    pthread_sigmask(SIG_BLOCK, &c.set, NULL);
    pthread_mutex_init(&c.lock, NULL);

    harness h = {.dev_len = (size_t)dev_len};
    size_t len = (size_t)ram_mib << 20;
    uint8_t *mem = mmap(NULL, len, PROT_READ | PROT_WRITE,
                        MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (mem == MAP_FAILED) {
        perror("source_harness: mmap");
        return 2;
    }
    for (size_t off = 0; off < len; off += 16 * PAGE)
        memset(mem + off, 0xab, PAGE);
    if (dev_len && !(h.dev = calloc(1, (size_t)dev_len))) {
        fprintf(stderr, "source_harness: out of memory\n");
        return 2;
    }

    if (!(h.s = mfd_session_new())) {
        fprintf(stderr, "source_harness: out of memory\n");
        return 2;
    }
    for (int i = optind; i < argc; i++) {
        char *eq = strchr(argv[i], '=');
        if (!eq)
            return usage();
        *eq = '\0';
        if (mfd_set_param_by_name(h.s, argv[i], eq + 1)) {
            fprintf(stderr, "source_harness: %s=%s: %s\n", argv[i], eq + 1,
                    mfd_last_error(h.s));
            return 2;
        }
    }
    mfd_live_ops live = {.pause = on_pause, .resume = on_resume};
    mfd_colo_ops colo = {.unprotected = on_unprotected};
    if (mfd_set_live_ops(h.s, &live, &h) || mfd_set_colo_ops(h.s, &colo, &h) ||
        mfd_add_block(h.s, "ram0", mem, len)) {
        fprintf(stderr, "source_harness: %s\n", mfd_last_error(h.s));
        return 2;
    }

    c.s = h.s;
    clock_gettime(CLOCK_MONOTONIC, &t_start);
    if (pthread_create(&c.thread, NULL, cancel_main, &c)) {
        fprintf(stderr, "source_harness: pthread_create failed\n");
        return 2;
    }
    int rc = mfd_migrate(h.s, uri);
    int64_t took = elapsed_ms();
    pthread_mutex_lock(&c.lock);
    c.done = true;
    pthread_mutex_unlock(&c.lock);
    pthread_kill(c.thread, SIGUSR1);
    pthread_join(c.thread, NULL);
    pthread_mutex_destroy(&c.lock);

    printf("rc %d %s\n", rc, rc ? mfd_err_name(rc) : "MFD_OK");
    printf("error %s\n", rc ? mfd_last_error(h.s) : "");
    printf("migrate_ms %" PRId64 "\n", took);
    printf("cancel_ms %" PRId64 "\n", c.fired_ms);
    printf("pauses %d resumes %d\n", h.pauses, h.resumes);
    printf("unprotected %d\n", h.unprotected);
    printf("colo_state %d\n", (int)mfd_colo_state_get(h.s));
    fflush(stdout);

    mfd_session_free(h.s);
    free(h.dev);
    munmap(mem, len);
    return rc ? 1 : 0;
}
