/*
 * fuzz_main.c - libFuzzer target: a real destination session (mfd_listen,
 * mfd_incoming) reading its main channel from the input: the preamble, the
 * setup records (HELLO, BLOCK, SETUP_END) and, once it answered READY, the
 * records of a migration. When the input's HELLO names a session and a
 * channel count, this harness connects that many data channels with their
 * init messages (and sends nothing on them), so the records after READY
 * reach the main loop. Short handshake and idle timeouts end every run
 * quickly. (The harness writes with MSG_NOSIGNAL: a destination that
 * closes early must not kill the fuzzer with SIGPIPE.)
 */
#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include "multifd.h"

static char path[108];

static int dial(void)
{
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    struct sockaddr_un a = {.sun_family = AF_UNIX};
    snprintf(a.sun_path, sizeof(a.sun_path), "%s", path);
    if (fd >= 0 && connect(fd, (struct sockaddr *)&a, sizeof(a)) < 0) {
        close(fd);
        return -1;
    }
    return fd;
}

typedef struct {
    const uint8_t *d;
    size_t n;
    mfd_session *s;
} feed;

static uint32_t be32(const uint8_t *p)
{
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 |
           p[3];
}

static void *source_main(void *arg)
{
    feed *f = arg;
    int m = dial();
    if (m < 0)
        return NULL;
    /*
     * The setup: the preamble and the records up to SETUP_END (type 3);
     * note HELLO's UUID and channel count on the way.
     */
    size_t off = f->n < 16 ? f->n : 16;
    uint8_t uuid[16] = {0};
    uint32_t channels = 0;
    bool setup_end = false;
    while (off + 8 <= f->n && !setup_end) {
        uint32_t type = be32(f->d + off), len = be32(f->d + off + 4);
        size_t rec = 8 + (((size_t)len + 7) & ~(size_t)7);
        if (len > f->n || off + rec > f->n)
            break;
        if (type == 1 && len >= 28) {
            memcpy(uuid, f->d + off + 8, 16);
            channels = be32(f->d + off + 8 + 24);
        }
        setup_end = type == 3;
        off += rec;
    }
    (void)!send(m, f->d, off, MSG_NOSIGNAL);
    int chans[8], nchans = 0;
    if (setup_end && channels >= 1 && channels <= 8) {
        uint8_t answer[64];
        (void)!read(m, answer, sizeof(answer)); /* preamble + READY */
        for (uint32_t i = 0; i < channels; i++) {
            int c = dial();
            uint8_t init[64] = {0x11, 0x22, 0x33, 0x44, 0, 0, 0, 1};
            memcpy(init + 8, uuid, 16);
            init[24] = (uint8_t)i;
            if (c >= 0) {
                (void)!send(c, init, sizeof(init), MSG_NOSIGNAL);
                chans[nchans++] = c;
            }
        }
    }
    (void)!send(m, f->d + off, f->n - off, MSG_NOSIGNAL);
    shutdown(m, SHUT_WR);
    char sink[4096];
    while (read(m, sink, sizeof(sink)) > 0)
        ;
    close(m);
    for (int i = 0; i < nchans; i++)
        close(chans[i]);
    /* A destination that saw no valid source keeps listening: stop it. */
    mfd_cancel(f->s);
    return NULL;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    snprintf(path, sizeof(path), "/tmp/mfd-fuzz-main-%d.sock", (int)getpid());
    char uri[128];
    snprintf(uri, sizeof(uri), "unix:%s", path);
    mfd_session *s = mfd_session_new();
    if (!s)
        return 0;
    mfd_set_log(s, NULL, NULL);
    mfd_set_param(s, MFD_PARAM_HANDSHAKE_TIMEOUT, 200);
    mfd_set_param(s, MFD_PARAM_IDLE_TIMEOUT, 50);
    mfd_set_param(s, MFD_PARAM_MAX_TOTAL_SIZE, 64 << 20);
    if (mfd_listen(s, uri) == 0) {
        feed f = {data, size, s};
        pthread_t t;
        if (pthread_create(&t, NULL, source_main, &f) == 0) {
            mfd_incoming(s);
            pthread_join(t, NULL);
        }
    }
    mfd_session_free(s);
    return 0;
}
