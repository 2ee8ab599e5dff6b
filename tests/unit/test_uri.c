/*
 * test_uri.c - URI parsing (QEMU's forms) and the whole-buffer I/O loops of
 * transport/sock.c over socketpairs, including the main channel's record
 * reader against oversize lengths, bad padding and truncation.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <pthread.h>
#include <time.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cmocka.h>

#include "common/util.h"
#include "core/session.h"
#include "transport/transport.h"

static void ok(const char *text, mfd_uri_kind kind, const char *host,
               const char *port, const char *path)
{
    mfd_uri u;
    char err[300] = "";
    if (mfd__uri_parse(text, &u, err, sizeof(err)))
        fail_msg("'%s' refused: %s", text, err);
    assert_int_equal(u.kind, kind);
    if (host)
        assert_string_equal(u.host, host);
    if (port)
        assert_string_equal(u.port, port);
    if (path)
        assert_string_equal(u.path, path);
}

static void bad(const char *text)
{
    mfd_uri u;
    char err[300] = "";
    if (!mfd__uri_parse(text, &u, err, sizeof(err)))
        fail_msg("'%s' accepted", text);
    assert_true(strlen(err) > 0);
}

static void test_uri_forms(void **state)
{
    (void)state;
    ok("tcp:127.0.0.1:4444", MFD_URI_TCP, "127.0.0.1", "4444", NULL);
    ok("tcp:localhost:0", MFD_URI_TCP, "localhost", "0", NULL);
    ok("tcp:[::1]:65535", MFD_URI_TCP, "::1", "65535", NULL);
    ok("tcp:host.example:80", MFD_URI_TCP, "host.example", "80", NULL);
    ok("unix:/tmp/x.sock", MFD_URI_UNIX, NULL, NULL, "/tmp/x.sock");
    ok("unix:rel/path", MFD_URI_UNIX, NULL, NULL, "rel/path");
    bad(NULL);
    bad("");
    bad("tcp:");
    bad("tcp:host");
    bad("tcp::4444");
    bad("tcp:host:");
    bad("tcp:host:65536");
    bad("tcp:host:-1");
    bad("tcp:host:+1");
    bad("tcp:host:12ab");
    bad("tcp:::1:44");
    bad("tcp:[::1]44");
    bad("tcp:[::1");
    bad("unix:");
    bad("file:");
    bad("exec:cat");
    {
        mfd_uri u;
        char err[300] = "";
        assert_int_equal(mfd__uri_parse("file:/var/snap/a b.img", &u, err,
                                        sizeof(err)), 0);
        assert_int_equal(u.kind, MFD_URI_FILE);
        assert_string_equal(u.file, "/var/snap/a b.img");
        char longfile[5000];
        memset(longfile, 'a', sizeof(longfile));
        memcpy(longfile, "file:", 5);
        longfile[sizeof(longfile) - 1] = 0;
        bad(longfile);
    }
    char longpath[200];
    memset(longpath, 'a', sizeof(longpath));
    memcpy(longpath, "unix:", 5);
    longpath[sizeof(longpath) - 1] = 0;
    bad(longpath);
}

static void test_io_full(void **state)
{
    (void)state;
    int sv[2];
    assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM, 0, sv), 0);
    char a[10] = "abcdefghi", b[10] = {0};
    assert_int_equal(mfd__write_full(sv[0], a, 10), MFD_IO_OK);
    assert_int_equal(mfd__read_full(sv[1], b, 10), MFD_IO_OK);
    assert_memory_equal(a, b, 10);

    /* A scattered read whose pieces are filled across several writes. */
    char x[3], y[5];
    struct iovec iov[3] = {{x, 3}, {NULL, 0}, {y, 5}};
    assert_int_equal(mfd__write_full(sv[0], "12", 2), MFD_IO_OK);
    assert_int_equal(mfd__write_full(sv[0], "345678", 6), MFD_IO_OK);
    assert_int_equal(mfd__readv_full(sv[1], iov, 3), MFD_IO_OK);
    assert_memory_equal(x, "123", 3);
    assert_memory_equal(y, "45678", 5);

    /* Nothing arrives: the timeout, then a close part-way, then EOF. */
    assert_int_equal(mfd__read_full_timeout(sv[1], b, 4, 50), MFD_IO_TIMEOUT);
    assert_int_equal(mfd__write_full(sv[0], "zz", 2), MFD_IO_OK);
    close(sv[0]);
    assert_int_equal(mfd__read_full(sv[1], b, 4), MFD_IO_TRUNCATED);
    assert_int_equal(mfd__read_full(sv[1], b, 4), MFD_IO_EOF);
    close(sv[1]);
}

/* The sender of test_io_lowat: 1 MiB in 1000-byte pieces, then 3 + 5. */
static void *trickle(void *arg)
{
    int fd = *(int *)arg;
    static char big[1 << 20];
    for (size_t i = 0; i < sizeof(big); i++)
        big[i] = (char)(i * 7);
    for (size_t off = 0; off < sizeof(big); off += 1000) {
        size_t n = sizeof(big) - off < 1000 ? sizeof(big) - off : 1000;
        assert_int_equal(mfd__write_full(fd, big + off, n), MFD_IO_OK);
        if (off % 64000 == 0)
            nanosleep(&(struct timespec){0, 1000000}, NULL);
    }
    assert_int_equal(mfd__write_full(fd, "12", 2), MFD_IO_OK);
    nanosleep(&(struct timespec){0, 20000000}, NULL);
    assert_int_equal(mfd__write_full(fd, "345678", 6), MFD_IO_OK);
    nanosleep(&(struct timespec){0, 20000000}, NULL);
    assert_int_equal(mfd__write_full(fd, "zz", 2), MFD_IO_OK);
    return NULL;
}

/*
 * Reads that wait with a receive low-water mark (a destination's TCP data
 * channel): whole buffers however the bytes trickle in, the mark following
 * what each read needs, and the same results as plain reads at the end.
 */
static void test_io_lowat(void **state)
{
    (void)state;
    mfd_uri u;
    char err[200], bound[200];
    assert_int_equal(mfd__uri_parse("tcp:127.0.0.1:0", &u, err, sizeof(err)),
                     0);
    int lfd = mfd__sock_listen(&u, bound, sizeof(bound), err, sizeof(err));
    assert_true(lfd >= 0);
    assert_int_equal(mfd__uri_parse(bound, &u, err, sizeof(err)), 0);
    int cfd = mfd__sock_connect(&u, -1, 5000, err, sizeof(err));
    assert_true(cfd >= 0);
    int afd = mfd__sock_accept(lfd);
    assert_true(afd >= 0);
    int lowat = mfd__sock_lowat_init(afd);
    assert_int_equal(lowat, 1);

    pthread_t t;
    assert_int_equal(pthread_create(&t, NULL, trickle, &cfd), 0);
    static char got[1 << 20];
    assert_int_equal(mfd__read_full_lowat(afd, &lowat, got, sizeof(got)),
                     MFD_IO_OK);
    for (size_t i = 0; i < sizeof(got); i++)
        if (got[i] != (char)(i * 7))
            fail_msg("byte %zu: 0x%02x", i, (unsigned char)got[i]);
    /* The mark was what the read still needed: at most the whole of it. */
    assert_true(lowat >= 1 && lowat <= (int)sizeof(got));
    char x[3], y[5];
    struct iovec iov[3] = {{x, 3}, {NULL, 0}, {y, 5}};
    assert_int_equal(mfd__readv_full_lowat(afd, &lowat, iov, 3), MFD_IO_OK);
    assert_memory_equal(x, "123", 3);
    assert_memory_equal(y, "45678", 5);
    assert_true(lowat >= 1 && lowat <= 8);
    pthread_join(t, NULL);
    /* Two bytes of four, then the peer closes; then nothing at all. */
    mfd__sock_close(cfd);
    char b[4];
    assert_int_equal(mfd__read_full_lowat(afd, &lowat, b, 4),
                     MFD_IO_TRUNCATED);
    assert_int_equal(mfd__read_full_lowat(afd, &lowat, b, 4), MFD_IO_EOF);
    mfd__sock_close(afd);
    mfd__sock_close(lfd);

    /* Unix sockets are read plainly (mark 0). */
    int sv[2];
    assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM, 0, sv), 0);
    assert_int_equal(mfd__sock_lowat_init(sv[1]), 0);
    close(sv[0]);
    close(sv[1]);
}

/* Writes raw bytes to one end and reads a record from the other. */
static int read_raw_record(const uint8_t *raw, size_t len, uint32_t *type,
                           uint32_t *blen, char *err)
{
    int sv[2];
    assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM, 0, sv), 0);
    assert_int_equal(mfd__write_full(sv[0], raw, len), MFD_IO_OK);
    close(sv[0]);
    mfd_session *s = mfd_session_new();
    s->main_fd = sv[1];
    uint8_t *body = NULL;
    int rc = mfd__recv_record(s, 1000, type, &body, blen, err, 300);
    free(body);
    s->main_fd = -1;
    close(sv[1]);
    mfd_session_free(s);
    return rc;
}

static void test_records(void **state)
{
    (void)state;
    uint8_t raw[64] = {0};
    uint32_t type = 0, len = 0;
    char err[300] = "";

    /* A good record with padding. */
    mfd__rec_hdr_encode(raw, MFD_REC_CANCEL, 3);
    memcpy(raw + 8, "bye", 3);
    assert_int_equal(read_raw_record(raw, 16, &type, &len, err), MFD_IO_OK);
    assert_int_equal(type, MFD_REC_CANCEL);
    assert_int_equal(len, 3);

    /* Non-zero padding is a protocol error. */
    raw[12] = 1;
    assert_int_equal(read_raw_record(raw, 16, &type, &len, err), -MFD_EPROTO);
    assert_non_null(strstr(err, "padding"));
    raw[12] = 0;

    /* Body longer than 16 MiB: refused before any allocation. */
    mfd__rec_hdr_encode(raw, MFD_REC_DEVICE_STATE, MFD_RECORD_MAX + 1);
    assert_int_equal(read_raw_record(raw, 8, &type, &len, err), -MFD_EPROTO);
    assert_non_null(strstr(err, "length"));

    /* A body cut short, and a header cut short. */
    mfd__rec_hdr_encode(raw, MFD_REC_CANCEL, 20);
    assert_int_equal(read_raw_record(raw, 16, &type, &len, err),
                     MFD_IO_TRUNCATED);
    assert_int_equal(read_raw_record(raw, 5, &type, &len, err),
                     MFD_IO_TRUNCATED);
    assert_int_equal(read_raw_record(raw, 0, &type, &len, err), MFD_IO_EOF);
}

static void test_param_names(void **state)
{
    (void)state;
    mfd_session *s = mfd_session_new();
    int64_t v;
    assert_int_equal(mfd_set_param_by_name(s, "multifd-channels", "8"), 0);
    mfd_get_param(s, MFD_PARAM_CHANNELS, &v);
    assert_int_equal(v, 8);
    assert_int_equal(mfd_set_param_by_name(s, "zero-page-detection", "legacy"),
                     0);
    mfd_get_param(s, MFD_PARAM_ZERO_PAGE_DETECTION, &v);
    assert_int_equal(v, MFD_ZPD_LEGACY);
    assert_int_equal(mfd_set_param_by_name(s, "max-total-size", "2G"), 0);
    mfd_get_param(s, MFD_PARAM_MAX_TOTAL_SIZE, &v);
    assert_int_equal(v, INT64_C(2) << 30);
    assert_int_equal(mfd_set_param_by_name(s, "verify", "on"), 0);
    assert_int_equal(mfd_set_param_by_name(s, "multifd-channels", "0"),
                     -MFD_EINVAL);
    assert_non_null(strstr(mfd_last_error(s), "multifd-channels"));
    assert_int_equal(mfd_set_param_by_name(s, "multifd-channels", "256"),
                     -MFD_EINVAL);
    assert_int_equal(mfd_set_param_by_name(s, "page-size", "12288"),
                     -MFD_EINVAL);
    assert_int_equal(mfd_set_param_by_name(s, "page-size", "4x"), -MFD_EINVAL);
    assert_int_equal(mfd_set_param_by_name(s, "nonsense", "1"), -MFD_EINVAL);
    assert_string_equal(mfd_err_name(-MFD_EPROTO), "MFD_EPROTO");
    assert_string_equal(mfd_strerror(MFD_EVERIFY), "verification failed");
    mfd_session_free(s);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_uri_forms),
        cmocka_unit_test(test_io_full),
        cmocka_unit_test(test_io_lowat),
        cmocka_unit_test(test_records),
        cmocka_unit_test(test_param_names),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
