/*
 * test_api.c - the public API end to end in one process: a source and a
 * destination session on two threads over a Unix socket; every block is
 * compared byte for byte and the stats of both sides against what was sent.
 * Also: the caller's own destination blocks, cancellation from a third
 * thread on either side, and the API's argument checks.
 */
#include <fcntl.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <pthread.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>
#include <xxhash.h>

#include <cmocka.h>

#include "core/session.h"
#include "multifd.h"
#include "support.h"

/* A destination listening on a fresh Unix socket, at ts_sock_path. */
static mfd_session *listening_dest(void)
{
    mfd_session *d = ts_listening_dest("api");
    assert_string_equal(mfd_listen_uri(d), ts_sock_path);
    return d;
}

static void check_stats_agree(mfd_session *src, mfd_session *dst,
                              uint64_t pages, uint64_t zeros)
{
    mfd_stats *a, *b;
    ts_stats_completed(src, dst, &a, &b);
    assert_int_equal(a->normal_pages + a->zero_pages, pages);
    assert_int_equal(a->zero_pages, zeros);
    assert_int_equal(a->ram_bytes, pages * 4096);
    assert_int_equal(a->iterations, 1);
    /* One pass: one sync a channel; the channels sent every zero page. */
    assert_int_equal(ts_check_received(a, b, 1), a->zero_pages);
    char *j = mfd_stats_json(src);
    assert_non_null(j);
    assert_non_null(strstr(j, "\"role\": \"source\""));
    free(j);
    free(a);
    free(b);
}

static void test_migrate_and_compare(void **state)
{
    (void)state;
    static const size_t lens[3] = {3 * 4096, 1000 * 4096, 8u << 20};
    static const char *names[3] = {"tiny", "odd", "big"};
    uint8_t *blk[3];
    uint64_t pages = 0, zeros = 0;

    mfd_session *d = listening_dest();
    ts_dest dt;
    ts_dest_start(&dt, d);

    mfd_session *s = mfd_session_new();
    assert_int_equal(mfd_set_param(s, MFD_PARAM_CHANNELS, 3), 0);
    assert_int_equal(mfd_set_param(s, MFD_PARAM_VERIFY, 1), 0);
    assert_int_equal(mfd_set_param(s, MFD_PARAM_CRC, 1), 0);
    for (int i = 0; i < 3; i++) {
        blk[i] = ts_make_block(lens[i], (unsigned)i + 1, true);
        pages += lens[i] / 4096;
        zeros += ts_zero_pages(blk[i], lens[i]);
        assert_int_equal(mfd_add_block(s, names[i], blk[i], lens[i]), 0);
    }
    /* A device state of more than one chunk (1 MiB) travels whole. */
    size_t dlen = (3u << 20) / 2 + 7;
    uint8_t *dev = ts_make_block((dlen + 4095) & ~(size_t)4095, 99, false);
    assert_int_equal(mfd_set_device_state(s, dev, dlen), 0);
    const void *got;
    size_t glen;
    assert_int_equal(mfd_get_device_state(d, &got, &glen), -MFD_ESTATE);
    int rc = mfd_migrate(s, ts_sock_path);
    if (rc)
        fail_msg("migrate: %s", mfd_last_error(s));
    if (ts_dest_join(&dt))
        fail_msg("incoming: %s", mfd_last_error(d));
    assert_int_equal(mfd_get_device_state(d, &got, &glen), 0);
    assert_int_equal(glen, dlen);
    assert_memory_equal(got, dev, dlen);
    munmap(dev, (dlen + 4095) & ~(size_t)4095);

    ts_compare_blocks(d, blk, names, lens, 3);
    check_stats_agree(s, d, pages, zeros);
    /* A session is used once. */
    assert_int_equal(mfd_migrate(s, ts_sock_path), -MFD_ESTATE);
    mfd_session_free(s);
    mfd_session_free(d);
    for (int i = 0; i < 3; i++)
        munmap(blk[i], lens[i]);
}

/* A VMM hands its own (zero-filled) guest memory to the destination. */
static void test_caller_blocks(void **state)
{
    (void)state;
    size_t len = 4u << 20;
    uint8_t *src = ts_make_block(len, 7, true);
    uint8_t *dst = ts_map_anon(len);

    mfd_session *d = listening_dest();
    assert_int_equal(mfd_add_block(d, "ram0", dst, len), 0);
    ts_dest dt;
    ts_dest_start(&dt, d);
    mfd_session *s = mfd_session_new();
    assert_int_equal(mfd_set_param_by_name(s, "zero-page-detection", "legacy"),
                     0);
    assert_int_equal(mfd_add_block(s, "ram0", src, len), 0);
    assert_int_equal(mfd_migrate(s, ts_sock_path), 0);
    assert_int_equal(ts_dest_join(&dt), 0);
    assert_memory_equal(dst, src, len);
    mfd_session_free(s);
    mfd_session_free(d);

    /* A block the destination does not have is refused by name. */
    d = listening_dest();
    assert_int_equal(mfd_add_block(d, "ram0", dst, len), 0);
    ts_dest_start(&dt, d);
    s = mfd_session_new();
    assert_int_equal(mfd_add_block(s, "ram1", src, len), 0);
    assert_int_equal(mfd_migrate(s, ts_sock_path), -MFD_EREFUSED);
    assert_non_null(strstr(mfd_last_error(s), "ram1"));
    assert_int_equal(ts_dest_join(&dt), -MFD_EREFUSED);
    mfd_session_free(s);
    mfd_session_free(d);
    munmap(src, len);
    munmap(dst, len);
}

/* A block received into a file the caller names; the others anonymous. */
static void test_named_file(void **state)
{
    (void)state;
    size_t len = 2u << 20;
    uint8_t *a = ts_make_block(len, 11, true);
    uint8_t *b = ts_make_block(len, 12, true);
    char path[64];
    snprintf(path, sizeof(path), "/tmp/mfd-api-%d.img", (int)getpid());

    mfd_session *d = listening_dest();
    assert_int_equal(mfd_set_incoming_file(d, "disk", path), 0);
    assert_int_equal(mfd_set_incoming_file(d, "disk", path), -MFD_EINVAL);
    ts_dest dt;
    ts_dest_start(&dt, d);
    mfd_session *s = mfd_session_new();
    assert_int_equal(mfd_add_block(s, "ram", a, len), 0);
    assert_int_equal(mfd_add_block(s, "disk", b, len), 0);
    assert_int_equal(mfd_migrate(s, ts_sock_path), 0);
    assert_int_equal(ts_dest_join(&dt), 0);
    mfd_block_info bi;
    assert_int_equal(mfd_block_get(d, 0, &bi), 0);
    assert_memory_equal(bi.host, a, len);
    mfd_session_free(s);
    mfd_session_free(d);

    /* The file holds the block after the session is gone. */
    FILE *f = fopen(path, "rb");
    assert_non_null(f);
    uint8_t *got = malloc(len);
    assert_int_equal(fread(got, 1, len, f), len);
    assert_int_equal(fgetc(f), EOF);
    fclose(f);
    assert_memory_equal(got, b, len);
    free(got);

    /* Two blocks named into one file would write over each other. */
    d = listening_dest();
    assert_int_equal(mfd_set_incoming_file(d, "ram", path), 0);
    assert_int_equal(mfd_set_incoming_file(d, "disk", path), 0);
    ts_dest_start(&dt, d);
    s = mfd_session_new();
    assert_int_equal(mfd_set_param(s, MFD_PARAM_VERIFY, 1), 0);
    assert_int_equal(mfd_add_block(s, "ram", a, len), 0);
    assert_int_equal(mfd_add_block(s, "disk", b, len), 0);
    assert_int_equal(mfd_migrate(s, ts_sock_path), -MFD_EREFUSED);
    assert_int_equal(ts_dest_join(&dt), -MFD_EREFUSED);
    assert_non_null(strstr(mfd_last_error(d), "already holds block 'ram'"));
    uint64_t h;
    assert_int_equal(mfd_block_digest(d, 1, &h), -MFD_ESTATE);
    mfd_session_free(s);
    mfd_session_free(d);
    unlink(path);
    munmap(a, len);
    munmap(b, len);
}

typedef struct {
    mfd_session *watch, *cancel;
} canceller;

/* Cancels `cancel` as soon as `watch` has moved some pages. */
static void *cancel_main(void *arg)
{
    canceller *c = arg;
    mfd_stats *st = malloc(sizeof(*st));
    for (int i = 0; i < 20000; i++) {
        mfd_get_stats(c->watch, st);
        if (st->normal_pages > 0 || st->status >= 3)
            break;
        usleep(100);
    }
    free(st);
    mfd_cancel(c->cancel);
    return NULL;
}

static void cancel_case(bool cancel_source)
{
    size_t len = 256u << 20;
    uint8_t *src = ts_map_anon(len);
    memset(src, 0x5a, len);

    mfd_session *d = listening_dest();
    ts_dest dt;
    pthread_t c;
    ts_dest_start(&dt, d);
    mfd_session *s = mfd_session_new();
    assert_int_equal(mfd_set_param(s, MFD_PARAM_CHANNELS, 1), 0);
    assert_int_equal(mfd_add_block(s, "ram0", src, len), 0);
    canceller cc = {s, cancel_source ? s : d};
    assert_int_equal(pthread_create(&c, NULL, cancel_main, &cc), 0);
    int rc = mfd_migrate(s, ts_sock_path);
    pthread_join(c, NULL);
    int drc = ts_dest_join(&dt);
    if (!rc && !drc) {
        /* The whole migration beat the canceller: nothing to check. */
        print_message("migration finished before the cancel; skipped\n");
    } else {
        assert_int_not_equal(rc, 0);
        assert_int_not_equal(drc, 0);
        if (cancel_source) {
            assert_int_equal(rc, -MFD_ECANCELED);
            assert_int_equal(drc, -MFD_ECANCELED);
            assert_non_null(strstr(mfd_last_error(d), "cancelled"));
        } else {
            assert_int_equal(drc, -MFD_ECANCELED);
            assert_non_null(strstr(mfd_last_error(s), "cancelled"));
        }
    }
    /* The source's memory is never modified. */
    for (size_t o = 0; o < len; o += 4096)
        if (src[o] != 0x5a || src[o + 4095] != 0x5a)
            fail_msg("source memory changed at 0x%zx", o);
    mfd_session_free(s);
    mfd_session_free(d);
    munmap(src, len);
}

static void test_cancel_source(void **state)
{
    (void)state;
    cancel_case(true);
}

static void test_cancel_destination(void **state)
{
    (void)state;
    cancel_case(false);
}

static void test_argument_checks(void **state)
{
    (void)state;
    static uint8_t mem[8192] __attribute__((aligned(4096)));
    mfd_session *s = mfd_session_new();
    mfd_set_log(s, ts_quiet, NULL);
    assert_int_equal(mfd_migrate(s, "unix:/nonexistent"), -MFD_EINVAL);
    assert_int_equal(mfd_add_block(s, "", mem, 4096), -MFD_EINVAL);
    assert_int_equal(mfd_add_block(s, "a", mem, 100), -MFD_EINVAL);
    assert_int_equal(mfd_add_block(s, "a", NULL, 4096), -MFD_EINVAL);
    assert_int_equal(mfd_add_block(s, "a", mem, 4096), 0);
    assert_int_equal(mfd_add_block(s, "a", mem + 4096, 4096), -MFD_EINVAL);
    assert_non_null(strstr(mfd_last_error(s), "twice"));
    assert_int_equal(mfd_set_param(s, MFD_PARAM_PAGE_SIZE, 8192), -MFD_ESTATE);
    assert_int_equal(mfd_incoming(s), -MFD_ESTATE);
    int64_t lo, hi;
    assert_int_equal(mfd_param_bounds(MFD_PARAM_CHANNELS, &lo, &hi), 0);
    assert_int_equal(lo, 1);
    assert_int_equal(hi, 255);
    assert_int_equal(mfd_migrate(s, "bogus:uri"), -MFD_EURI);
    assert_non_null(strstr(mfd_last_error(s), "bogus:uri"));
    mfd_session_free(s);

    /* Nobody listening: a clear error, not a hang. */
    s = mfd_session_new();
    assert_int_equal(mfd_add_block(s, "a", mem, 4096), 0);
    assert_int_equal(mfd_migrate(s, "unix:/tmp/mfd-api-nobody.sock"),
                     -MFD_ESYS);
    assert_non_null(strstr(mfd_last_error(s), "connect"));
    mfd_session_free(s);
    mfd_session_free(NULL);
    assert_true(mfd_version_number() == MFD_VERSION_NUMBER);
}

/*
 * The library's snapshot API: save with mfd_migrate(file:), restore into
 * library-mapped memory (the device state with it), into the caller's
 * blocks, a mismatched caller block refused; a second save overwrites the
 * file in place; sessions are single-use.
 */
/* Whether page i of p is in the page table (/proc/self/pagemap bit 63). */
static bool page_present(const uint8_t *p, size_t i)
{
    int fd = open("/proc/self/pagemap", O_RDONLY | O_CLOEXEC);
    assert_true(fd >= 0);
    uint64_t e = 0;
    off_t at = (off_t)(((uintptr_t)p / 4096 + i) * 8);
    assert_int_equal(pread(fd, &e, 8, at), 8);
    close(fd);
    return e >> 63;
}

static void test_snapshot(void **state)
{
    (void)state;
    char path[64];
    snprintf(path, sizeof(path), "file:/tmp/mfd-api-%d.snap", (int)getpid());
    size_t len0 = 4u << 20, len1 = 3 * TS_PAGE;
    uint8_t *a = ts_make_block(len0, 11, true), *b = ts_make_block(len1, 12, false);
    static const char dev[] = "cpu registers and devices";

    mfd_session *s = mfd_session_new();
    mfd_set_param(s, MFD_PARAM_CHANNELS, 3);
    assert_int_equal(mfd_add_block(s, "ram0", a, len0), 0);
    assert_int_equal(mfd_add_block(s, "rom", b, len1), 0);
    assert_int_equal(mfd_set_device_state(s, dev, sizeof(dev)), 0);
    assert_int_equal(mfd_migrate(s, path), 0);
    mfd_stats st;
    mfd_get_stats(s, &st);
    assert_int_equal(st.normal_pages + st.zero_pages, (len0 + len1) / TS_PAGE);
    assert_int_equal(st.zero_pages, ts_zero_pages(a, len0) + ts_zero_pages(b, len1));
    assert_int_equal(mfd_migrate(s, path), -MFD_ESTATE);
    mfd_session_free(s);

    /* Into library-mapped memory. */
    mfd_session *r = mfd_session_new();
    mfd_set_param(r, MFD_PARAM_CHANNELS, 2);
    assert_int_equal(mfd_restore(r, path), 0);
    /* Its digest takes pages the file did not hold (page 0 is zero) as
     * zeros, unread, and is the source's. */
    mfd_block_info ri;
    uint64_t h;
    assert_int_equal(mfd_block_get(r, 0, &ri), 0);
    assert_int_equal(mfd_block_digest(r, 0, &h), 0);
    assert_false(page_present(ri.host, 0));
    assert_true(h == XXH3_64bits(a, len0));
    uint8_t *const srcs[2] = {a, b};
    const char *const names[2] = {"ram0", "rom"};
    const size_t lens[2] = {len0, len1};
    ts_compare_blocks(r, srcs, names, lens, 2);
    const void *got;
    size_t glen;
    assert_int_equal(mfd_get_device_state(r, &got, &glen), 0);
    assert_int_equal(glen, sizeof(dev));
    assert_memory_equal(got, dev, sizeof(dev));
    mfd_get_stats(r, &st);
    assert_int_equal(st.normal_pages, (len0 + len1) / TS_PAGE -
                                          ts_zero_pages(a, len0) -
                                          ts_zero_pages(b, len1));
    assert_int_equal(mfd_restore(r, path), -MFD_ESTATE);
    mfd_session_free(r);

    /* Into the caller's memory, as a VMM's; a mismatch is refused. */
    uint8_t *d0 = ts_map_anon(len0), *d1 = ts_map_anon(len1);
    r = mfd_session_new();
    assert_int_equal(mfd_add_block(r, "ram0", d0, len0), 0);
    assert_int_equal(mfd_add_block(r, "rom", d1, len1), 0);
    assert_int_equal(mfd_restore(r, path), 0);
    assert_memory_equal(d0, a, len0);
    assert_memory_equal(d1, b, len1);
    mfd_session_free(r);
    r = mfd_session_new();
    assert_int_equal(mfd_add_block(r, "ram0", d0, len0), 0);
    assert_int_equal(mfd_add_block(r, "rom", d1, len1 - TS_PAGE), 0);
    assert_int_equal(mfd_restore(r, path), -MFD_EREFUSED);
    assert_non_null(strstr(mfd_last_error(r), "rom"));
    mfd_session_free(r);

    /* Not a file URI; compression refused for a snapshot. */
    r = mfd_session_new();
    assert_int_equal(mfd_restore(r, "unix:/tmp/x"), -MFD_EURI);
    mfd_session_free(r);
    s = mfd_session_new();
    assert_int_equal(mfd_add_block(s, "ram0", a, len0), 0);
    assert_int_equal(mfd_set_param_by_name(s, "multifd-compression", "zlib"), 0);
    assert_int_equal(mfd_migrate(s, path), -MFD_EINVAL);
    mfd_session_free(s);

    unlink(path + 5);
    munmap(a, len0);
    munmap(b, len1);
    munmap(d0, len0);
    munmap(d1, len1);
}

/* What a peer's text becomes in our messages (mfd__sanitize). */
static void sanitized_is(const char *in, const char *want)
{
    char buf[256];
    snprintf(buf, sizeof(buf), "%s", in);
    mfd__sanitize(buf);
    assert_string_equal(buf, want);
}

static void test_sanitize(void **state)
{
    (void)state;
    sanitized_is("plain text, kept", "plain text, kept");
    /* C0 controls and DEL: a forged line, an SGR escape, a backspace. */
    sanitized_is("a\nb\rc\x1b[31md\x7f\be\t", "a?b?c?[31md??e?");
    /* C1: CSI as UTF-8 (U+009B) and as the raw byte; U+0080 and U+009F. */
    sanitized_is("x\xc2\x9b" "31my", "x?31my");
    sanitized_is("x\x9b" "31my", "x?31my");
    sanitized_is("\xc2\x80\xc2\x9f", "??");
    /* Valid UTF-8 above the C1 range is kept: U+00A0, U+00E9, U+20AC,
     * U+1F600. */
    sanitized_is("\xc2\xa0" "caf\xc3\xa9 \xe2\x82\xac \xf0\x9f\x98\x80",
                 "\xc2\xa0" "caf\xc3\xa9 \xe2\x82\xac \xf0\x9f\x98\x80");
    /* Invisible reordering and line breaking: RLO (U+202E), LRI
     * (U+2066), the line separator (U+2028), a zero-width space
     * (U+200B), the BOM (U+FEFF) and the Arabic letter mark (U+061C). */
    sanitized_is("a\xe2\x80\xae" "b\xe2\x81\xa6" "c\xe2\x80\xa8" "d",
                 "a?b?c?d");
    sanitized_is("\xe2\x80\x8b" "e\xef\xbb\xbf" "f\xd8\x9c", "?e?f?");
    /* Malformed: overlong forms (of '/' and of CSI), a surrogate, beyond
     * U+10FFFF, stray continuation bytes, 0xff, and sequences cut short
     * by the next character or by the end of the string. */
    sanitized_is("\xc0\xaf|\xe0\x82\x9b|\xed\xa0\x80|\xf4\x90\x80\x80",
                 "??|???|???|????");
    sanitized_is("\x80\xbf\xff", "???");
    sanitized_is("\xe2\x82x", "??x");
    sanitized_is("end\xe2\x82", "end??");
    sanitized_is("", "");
}


/* Migrates s to the destination running in dt, both succeeding. */
static void migrate_joined(mfd_session *s, ts_dest *dt, const char *what)
{
    if (mfd_migrate(s, ts_sock_path))
        fail_msg("%s: migrate: %s", what, mfd_last_error(s));
    if (ts_dest_join(dt))
        fail_msg("%s: incoming: %s", what, mfd_last_error(dt->d));
}

/* The destination's one block "ram0" equals src. */
static void compare_ram0(mfd_session *d, uint8_t *src, size_t len)
{
    uint8_t *const blocks[1] = {src};
    const char *const names[1] = {"ram0"};
    const size_t lens[1] = {len};
    ts_compare_blocks(d, blocks, names, lens, 1);
}

/*
 * A guest that never touched most of its memory: those pages arrive as zero
 * pages without the source reading them (and so without a page fault that
 * maps the zero page there), counted in untouched_pages; with detection
 * none every page is read and sent as data.
 */
static void untouched_case(const char *zpd)
{
    size_t len = 16u << 20, pages = len / 4096;
    uint8_t *src = ts_map_anon(len);
    madvise(src, len, MADV_NOHUGEPAGE);
    size_t written = 0;
    for (size_t i = 0; i < pages; i += 7) { /* every 7th page: data */
        ts_fill_random(src + i * 4096, 4096, i + 1);
        written++;
    }
    memset(src + 3 * 4096, 0, 4096); /* zeros, but written: must be read */
    volatile uint8_t sink = src[5 * 4096]; /* read only: the zero page */
    (void)sink;
    uint64_t untouched = pages - written - 1; /* page 3 is not */
    bool none = !strcmp(zpd, "none");

    mfd_session *d = listening_dest();
    ts_dest dt;
    ts_dest_start(&dt, d);
    mfd_session *s = mfd_session_new();
    assert_int_equal(mfd_set_param(s, MFD_PARAM_CHANNELS, 2), 0);
    assert_int_equal(mfd_set_param_by_name(s, "zero-page-detection", zpd), 0);
    /* VERIFY's digest takes untouched pages as zeros, unread, too. */
    assert_int_equal(mfd_set_param(s, MFD_PARAM_VERIFY, 1), 0);
    assert_int_equal(mfd_add_block(s, "ram0", src, len), 0);
    migrate_joined(s, &dt, zpd);
    /* Page 1 was never touched: still not in the page table, unless read
     * (before the comparison below reads it). */
    assert_int_equal(page_present(src, 1), none);
    assert_true(page_present(src, 5));
    /* Nor did the destination's VERIFY digest read its never-written
     * pages (in memory it mapped itself). */
    mfd_block_info bi;
    assert_int_equal(mfd_block_get(d, 0, &bi), 0);
    assert_int_equal(page_present(bi.host, 1), none);
    /* mfd_block_digest: the completed destination's does not read its
     * never-written pages; the source's reads everything (its memory is
     * the caller's again); both agree. */
    uint64_t hs, hd;
    assert_int_equal(mfd_block_digest(d, 0, &hd), 0);
    assert_int_equal(page_present(bi.host, 1), none);
    assert_int_equal(mfd_block_digest(s, 0, &hs), 0);
    assert_true(hs == hd);
    assert_int_equal(mfd_block_digest(d, 1, &hd), -MFD_EINVAL);
    compare_ram0(d, src, len);
    assert_true(hs == XXH3_64bits(src, len));

    mfd_stats *a, *b;
    ts_stats_completed(s, d, &a, &b);
    assert_int_equal(a->untouched_pages, none ? 0 : untouched);
    assert_int_equal(a->zero_pages, none ? 0 : pages - written);
    assert_int_equal(a->normal_pages, none ? pages : written);
    assert_int_equal(b->zero_pages, a->zero_pages);
    char *j = mfd_stats_json(s);
    char want[64];
    snprintf(want, sizeof(want), "\"untouched_pages\": %llu",
             (unsigned long long)a->untouched_pages);
    assert_non_null(strstr(j, want));
    free(j);
    free(a);
    free(b);
    mfd_session_free(s);
    mfd_session_free(d);
    munmap(src, len);
}

/*
 * Without a tracker the memory may still change until the pause callback
 * returns (a VMM's vCPUs finishing, in-flight I/O into guest RAM): a write
 * made there into a page never touched before must arrive.
 */
static uint8_t *late_page;

static void write_in_pause(void *opaque)
{
    (void)opaque;
    memset(late_page, 0xcd, 4096);
}

static void untouched_pause_case(const char *zpd)
{
    size_t len = 16u << 20;
    uint8_t *src = ts_map_anon(len);
    madvise(src, len, MADV_NOHUGEPAGE);
    ts_fill_random(src, 64 * 4096, 5); /* some data; the rest untouched */
    late_page = src + 4000 * 4096;

    mfd_session *d = listening_dest();
    ts_dest dt;
    ts_dest_start(&dt, d);
    mfd_session *s = mfd_session_new();
    assert_int_equal(mfd_set_param_by_name(s, "zero-page-detection", zpd), 0);
    mfd_live_ops ops = {.pause = write_in_pause};
    assert_int_equal(mfd_set_live_ops(s, &ops, NULL), 0);
    assert_int_equal(mfd_add_block(s, "ram0", src, len), 0);
    migrate_joined(s, &dt, zpd);
    compare_ram0(d, src, len);
    mfd_stats *a, *b;
    ts_stats_completed(s, d, &a, &b);
    assert_int_equal(a->normal_pages, 65);
    assert_int_equal(a->untouched_pages, len / 4096 - 65);
    free(a);
    free(b);
    mfd_session_free(s);
    mfd_session_free(d);
    munmap(src, len);
}

static void test_untouched_written_in_pause(void **state)
{
    (void)state;
    untouched_pause_case("multifd");
    untouched_pause_case("legacy");
}

/*
 * The caller's word: a shared memfd with holes (shared memory is never
 * judged from the page tables), hinted with mfd_block_zero_hint. The holes
 * go unread (the memfd allocates nothing for them); the data arrives.
 */
static void test_zero_hint(void **state)
{
    (void)state;
    size_t len = 8u << 20, pages = len / 4096;
    int fd = memfd_create("mfd-hint", MFD_CLOEXEC);
    assert_true(fd >= 0);
    assert_int_equal(ftruncate(fd, (off_t)len), 0);
    uint8_t *src = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    assert_true(src != MAP_FAILED);
    ts_fill_random(src, 16 * 4096, 3);             /* pages 0..15 */
    ts_fill_random(src + 1000 * 4096, 4096, 4);    /* page 1000 */
    struct stat st0, st1;
    assert_int_equal(fstat(fd, &st0), 0);

    mfd_session *d = listening_dest();
    ts_dest dt;
    mfd_session *s = mfd_session_new();
    assert_int_equal(mfd_set_param(s, MFD_PARAM_VERIFY, 1), 0);
    assert_int_equal(mfd_add_block(s, "ram0", src, len), 0);
    /* Out of the block, or no such block: refused. */
    assert_int_equal(mfd_block_zero_hint(s, 0, len - 4096, 8192), -MFD_EINVAL);
    assert_non_null(strstr(mfd_last_error(s), "outside block 'ram0'"));
    assert_int_equal(mfd_block_zero_hint(s, 1, 0, 4096), -MFD_EINVAL);
    assert_non_null(strstr(mfd_last_error(s), "no such block"));
    /* The holes, as SEEK_HOLE gives them; partial pages count for nothing
     * (page 15 holds data: a hint from its middle leaves it alone). */
    assert_int_equal(mfd_block_zero_hint(s, 0, 15 * 4096 + 100, 4000), 0);
    assert_int_equal(mfd_block_zero_hint(s, 0, 15 * 4096 + 100,
                                         (1000 - 15) * 4096 - 100), 0);
    assert_int_equal(mfd_block_zero_hint(s, 0, 1001 * 4096,
                                         len - 1001 * 4096), 0);
    ts_dest_start(&dt, d);
    migrate_joined(s, &dt, "hint");
    assert_int_equal(fstat(fd, &st1), 0);
    assert_int_equal(st1.st_blocks, st0.st_blocks);
    compare_ram0(d, src, len);
    mfd_stats *a, *b;
    ts_stats_completed(s, d, &a, &b);
    assert_int_equal(a->untouched_pages, pages - 17);
    assert_int_equal(a->normal_pages, 17);
    free(a);
    free(b);
    /* Once the migration started, too late. */
    assert_int_equal(mfd_block_zero_hint(s, 0, 0, 4096), -MFD_ESTATE);
    mfd_session_free(s);
    mfd_session_free(d);
    munmap(src, len);
    close(fd);
}

static void test_untouched_multifd(void **state)
{
    (void)state;
    untouched_case("multifd");
}

static void test_untouched_legacy(void **state)
{
    (void)state;
    untouched_case("legacy");
}

static void test_untouched_none(void **state)
{
    (void)state;
    untouched_case("none");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_migrate_and_compare),
        cmocka_unit_test(test_caller_blocks),
        cmocka_unit_test(test_named_file),
        cmocka_unit_test(test_cancel_source),
        cmocka_unit_test(test_cancel_destination),
        cmocka_unit_test(test_argument_checks),
        cmocka_unit_test(test_snapshot),
        cmocka_unit_test(test_sanitize),
        cmocka_unit_test(test_untouched_multifd),
        cmocka_unit_test(test_untouched_legacy),
        cmocka_unit_test(test_untouched_none),
        cmocka_unit_test(test_untouched_written_in_pause),
        cmocka_unit_test(test_zero_hint),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
