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
        cmocka_unit_test(test_records),
        cmocka_unit_test(test_param_names),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
