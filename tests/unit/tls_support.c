/* tls_support.c - see tls_support.h. */
#include "tls_support.h"

#include <netinet/in.h>
#include <netinet/tcp.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cmocka.h>

#include "transport/tls.h"
#include "transport/transport.h"

void tt_tcp_pair(int *pfd, int *ofd)
{
    struct sockaddr_in a = {.sin_family = AF_INET,
                            .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t al = sizeof(a);
    int one = 1;
    int lfd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    assert_true(lfd >= 0);
    assert_int_equal(bind(lfd, (struct sockaddr *)&a, sizeof(a)), 0);
    assert_int_equal(listen(lfd, 1), 0);
    assert_int_equal(getsockname(lfd, (struct sockaddr *)&a, &al), 0);
    *pfd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    assert_true(*pfd >= 0);
    setsockopt(*pfd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    assert_int_equal(connect(*pfd, (struct sockaddr *)&a, al), 0);
    *ofd = mfd__sock_accept(lfd);
    assert_true(*ofd >= 0);
    close(lfd);
}

void tt_load_psk(mfd_session *ms, const char *name, const uint8_t *key,
                 size_t len, bool server)
{
    static const char hex[] = "0123456789abcdef";
    char dir[] = "/tmp/mfd-tlstest-XXXXXX", path[sizeof(dir) + 16];
    assert_non_null(mkdtemp(dir));
    snprintf(path, sizeof(path), "%s/keys.psk", dir);
    FILE *f = fopen(path, "w");
    bool ok = f && fprintf(f, "%s:", name) > 0;
    for (size_t i = 0; ok && i < len; i++)
        ok = fputc(hex[key[i] >> 4], f) != EOF &&
             fputc(hex[key[i] & 15], f) != EOF;
    ok = ok && fputc('\n', f) != EOF;
    ok = f && !fclose(f) && ok;
    ok = ok && !mfd_set_tls_psk(ms, path) && !mfd__tls_setup(ms, server);
    unlink(path);
    rmdir(dir);
    if (!ok)
        fail_msg("TLS PSK setup: %s", mfd_last_error(ms));
}
