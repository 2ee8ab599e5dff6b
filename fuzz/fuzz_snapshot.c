/*
 * fuzz_snapshot.c - libFuzzer target: the whole snapshot reader
 * (mfd_restore) on a file whose bytes are the input (a memfd opened by
 * path): header and block table validation, bitmaps, the device state,
 * mapping and the reader threads.
 */
#include <stdint.h>
#include <stdio.h>
#include <sys/mman.h>
#include <unistd.h>

#include "multifd.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    int fd = memfd_create("snap", MFD_CLOEXEC);
    if (fd < 0)
        return 0;
    if (write(fd, data, size) == (ssize_t)size) {
        char uri[64];
        snprintf(uri, sizeof(uri), "file:/proc/self/fd/%d", fd);
        mfd_session *s = mfd_session_new();
        if (s) {
            mfd_set_log(s, NULL, NULL);
            mfd_set_param(s, MFD_PARAM_MAX_TOTAL_SIZE, 64 << 20);
            mfd_restore(s, uri);
            mfd_session_free(s);
        }
    }
    close(fd);
    return 0;
}
