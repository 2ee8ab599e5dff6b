/* tls_support.c - see tls_support.h. */
#include "tls_support.h"

#include <gnutls/crypto.h>
#include <netinet/in.h>
#include <signal.h>
#include <string.h>
#include <sys/uio.h>
#include <time.h>
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

const char *volatile tt_running = "";
static const char *test_name = "";

static void on_alarm(int sig)
{
    (void)sig;
    static const char m[] = ": no end within the limit: ";
    struct iovec v[4] = {{(void *)test_name, strlen(test_name)},
                         {(void *)m, sizeof(m) - 1},
                         {(void *)tt_running, strlen(tt_running)},
                         {(void *)"\n", 1}};
    ssize_t n = writev(2, v, 4);
    (void)n;
    _exit(1);
}

int tt_group_setup(const char *test, uint8_t *bytes, size_t len,
                   gnutls_datum_t *key)
{
    if (gnutls_rnd(GNUTLS_RND_RANDOM, bytes, len))
        return -1;
    *key = (gnutls_datum_t){bytes, (unsigned)len};
    test_name = test;
    struct sigaction sa = {.sa_handler = on_alarm};
    return sigaction(SIGALRM, &sa, NULL);
}

int tt_record_send(gnutls_session_t s, const uint8_t *p, size_t n,
                   size_t pad)
{
    do {
        ssize_t k = gnutls_record_send2(s, p, n, pad, 0);
        if (k == GNUTLS_E_AGAIN || k == GNUTLS_E_INTERRUPTED)
            continue;
        if (k < 0)
            return (int)k;
        p += k;
        n -= (size_t)k;
    } while (n);
    return 0;
}

void tt_deadline(struct timespec *t, int ms)
{
    clock_gettime(CLOCK_MONOTONIC, t);
    t->tv_sec += ms / 1000;
    t->tv_nsec += (ms % 1000) * 1000000L;
    if (t->tv_nsec >= 1000000000L) {
        t->tv_sec++;
        t->tv_nsec -= 1000000000L;
    }
}

void tt_cond_init(pthread_cond_t *c)
{
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(c, &ca);
    pthread_condattr_destroy(&ca);
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
