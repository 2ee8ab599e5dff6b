/*
 * guest.c - synthetic guest memory for the demo and the bench: zero pages,
 * random pages (incompressible) and text-like pages (compressible, like a
 * page cache full of logs), generated fast enough not to dominate a run.
 */
#include <pthread.h>
#include <stdint.h>
#include <string.h>

#include "cli.h"

#define PAGE 4096u

bool guest_content_parse(const char *name, guest_content *out)
{
    static const struct {
        const char *name;
        guest_content c;
    } names[] = {{"zero", GUEST_ZERO},
                 {"random", GUEST_RANDOM},
                 {"half", GUEST_HALF},
                 {"text", GUEST_TEXT},
                 {"mixed", GUEST_MIXED},
                 {"untouched", GUEST_UNTOUCHED}};
    for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++)
        if (!strcmp(name, names[i].name)) {
            *out = names[i].c;
            return true;
        }
    return false;
}

static inline uint64_t splitmix(uint64_t *x)
{
    uint64_t z = (*x += UINT64_C(0x9e3779b97f4a7c15));
    z = (z ^ (z >> 30)) * UINT64_C(0xbf58476d1ce4e5b9);
    z = (z ^ (z >> 27)) * UINT64_C(0x94d049bb133111eb);
    return z ^ (z >> 31);
}

/*
 * The live demo's writers race with the migration reading guest memory by
 * design: that is live migration (a page written while it is read is dirty
 * and is sent again). Their writes are kept from ThreadSanitizer (make
 * check-tsan): not instrumented, and no memcpy/memset it intercepts.
 */
#define GUEST_WRITE __attribute__((no_sanitize("thread"), noinline))

GUEST_WRITE static void copy_page(uint8_t *dst, const uint8_t *src)
{
    volatile uint64_t *d = (volatile uint64_t *)(void *)dst;
    for (unsigned i = 0; i < PAGE / 8; i++) {
        uint64_t v;
        memcpy(&v, src + 8 * i, 8);
        d[i] = v;
    }
}

GUEST_WRITE static void zero_page(uint8_t *dst)
{
    volatile uint64_t *d = (volatile uint64_t *)(void *)dst;
    for (unsigned i = 0; i < PAGE / 8; i++)
        d[i] = 0;
}

GUEST_WRITE static void fill_random(uint8_t *p, uint64_t *rng)
{
    uint64_t x = splitmix(rng), y = splitmix(rng);
    for (unsigned i = 0; i < PAGE; i += 8) {
        /* xorshift128+: fast and plenty random for incompressibility. */
        uint64_t t = x;
        const uint64_t s0 = y;
        x = s0;
        t ^= t << 23;
        t ^= t >> 17;
        t ^= s0 ^ (s0 >> 26);
        y = t;
        uint64_t v = t + s0;
        memcpy(p + i, &v, 8);
    }
}

static const char *const words[] = {
    "the ", "migration ", "channel ", "page ", "kernel: ", "INFO ",
    "qemu ", "dirty ", "bitmap ", "zero ", "packet ", "sync ",
    "2026-11-21 ", "10:42:17 ", "[ok] ", "memory ", "block ", "ram0 ",
    "request ", "GET /index.html ", "HTTP/1.1 ", "200 ", "\n", "user=",
    "latency_ms=", "42 ", "1337 ", "error ", "retry ", "=> "};

/*
 * Text pages are windows of a 64 KiB corpus of log-like lines built once:
 * as compressible as real text, and a plain memcpy to produce.
 */
#define CORPUS (64u * 1024)
static char corpus[CORPUS + PAGE];
static pthread_once_t corpus_once = PTHREAD_ONCE_INIT;

static void corpus_build(void)
{
    uint64_t rng = 7;
    unsigned i = 0;
    while (i < sizeof(corpus)) {
        const char *w = words[splitmix(&rng) % (sizeof(words) / sizeof(words[0]))];
        size_t n = strlen(w);
        if (n > sizeof(corpus) - i)
            n = sizeof(corpus) - i;
        memcpy(corpus + i, w, n);
        i += (unsigned)n;
    }
}

static void fill_text(uint8_t *p, uint64_t *rng)
{
    copy_page(p, (const uint8_t *)corpus + splitmix(rng) % CORPUS);
}

static void fill_page(uint8_t *p, uint64_t index, guest_content c,
                      uint64_t seed)
{
    uint64_t rng = seed ^ (index * UINT64_C(0x2545f4914f6cdd1d));
    guest_content kind = c;
    if (c == GUEST_HALF) {
        /* 2 MiB runs alternate, as a half-used guest's memory does. */
        kind = ((index / 512) & 1) ? GUEST_RANDOM : GUEST_ZERO;
    } else if (c == GUEST_MIXED) {
        uint64_t h = splitmix(&rng) % 100;
        /* Mostly runs, with isolated pages of each kind mixed in. */
        uint64_t run = (index / 64) * UINT64_C(0x9e3779b97f4a7c15) >> 59;
        kind = run < 13 ? GUEST_ZERO : run < 24 ? GUEST_RANDOM : GUEST_TEXT;
        if (h < 5)
            kind = GUEST_ZERO;
        else if (h < 8)
            kind = GUEST_RANDOM;
    }
    switch (kind) {
    case GUEST_ZERO:
        memset(p, 0, PAGE);
        break;
    case GUEST_TEXT:
        fill_text(p, &rng);
        break;
    default:
        fill_random(p, &rng);
        break;
    }
}

typedef struct {
    uint8_t *buf;
    uint64_t first, last;
    guest_content c;
    uint64_t seed;
} fill_job;

static void *fill_main(void *arg)
{
    fill_job *j = arg;
    for (uint64_t i = j->first; i < j->last; i++)
        fill_page(j->buf + i * PAGE, i, j->c, j->seed);
    return NULL;
}

void guest_fill(uint8_t *buf, uint64_t len, guest_content c, uint64_t seed)
{
    if (c == GUEST_UNTOUCHED)
        return;
    pthread_once(&corpus_once, corpus_build);
    uint64_t pages = len / PAGE;
    fill_job jobs[2] = {{buf, 0, pages / 2, c, seed},
                        {buf, pages / 2, pages, c, seed}};
    pthread_t t;
    bool threaded = pthread_create(&t, NULL, fill_main, &jobs[1]) == 0;
    fill_main(&jobs[0]);
    if (threaded)
        pthread_join(t, NULL);
    else
        fill_main(&jobs[1]);
}

uint64_t guest_zero_pages(const uint8_t *buf, uint64_t len)
{
    static const uint8_t zero[PAGE];
    uint64_t n = 0;
    for (uint64_t o = 0; o + PAGE <= len; o += PAGE)
        n += !memcmp(buf + o, zero, PAGE);
    return n;
}

/*
 * Self-checking pages for the live demo: a non-zero page starts with an
 * XXH3-64 (seeded with the page's index in the guest) of the rest of the
 * page, then a u64 write counter. A page torn by a write racing the
 * migration, or put at the wrong place, fails its check; a stale page
 * passes it but carries an older counter than the source's.
 */
#include <xxhash.h>

static uint64_t page_hash(const uint8_t *page, uint64_t index)
{
    return XXH3_64bits_withSeed(page + 8, PAGE - 8, index);
}

GUEST_WRITE void guest_stamp(uint8_t *page, uint64_t index, uint64_t counter)
{
    memcpy(page + 8, &counter, 8);
    uint64_t h = page_hash(page, index);
    memcpy(page, &h, 8);
}

int guest_page_check(const uint8_t *page, uint64_t index, uint64_t *counter)
{
    uint64_t h, c;
    memcpy(&h, page, 8);
    memcpy(&c, page + 8, 8);
    *counter = c;
    if (h == page_hash(page, index))
        return 0;
    /* Zero pages carry no stamp. */
    static const uint8_t zero[PAGE];
    *counter = 0;
    return memcmp(page, zero, PAGE) ? -1 : 0;
}

typedef struct {
    uint8_t *buf;
    uint64_t first, last;
} stamp_job;

static void *stamp_main(void *arg)
{
    stamp_job *j = arg;
    static const uint8_t zero[PAGE];
    for (uint64_t i = j->first; i < j->last; i++)
        if (memcmp(j->buf + i * PAGE, zero, PAGE))
            guest_stamp(j->buf + i * PAGE, i, 1);
    return NULL;
}

void guest_stamp_all(uint8_t *buf, uint64_t len)
{
    uint64_t pages = len / PAGE;
    stamp_job jobs[2] = {{buf, 0, pages / 2}, {buf, pages / 2, pages}};
    pthread_t t;
    bool threaded = pthread_create(&t, NULL, stamp_main, &jobs[1]) == 0;
    stamp_main(&jobs[0]);
    if (threaded)
        pthread_join(t, NULL);
    else
        stamp_main(&jobs[1]);
}

void guest_rewrite(uint8_t *page, uint64_t index, uint64_t *rng)
{
    pthread_once(&corpus_once, corpus_build);
    uint64_t counter, r = splitmix(rng);
    if (guest_page_check(page, index, &counter))
        counter = 0;
    /* One write in eight leaves the page all zero again. */
    if ((r & 7) == 0) {
        zero_page(page);
        return;
    }
    if (r & 8)
        fill_text(page, rng);
    else
        fill_random(page, rng);
    guest_stamp(page, index, counter + 1);
}
