/*
 * refs.h - reference measurements printed beside every benchmark result, so
 * a figure is always read against what this machine can do at all in the
 * same run: memory copy, zero scan, and raw loopback TCP.
 */
#ifndef MFD_BENCH_REFS_H
#define MFD_BENCH_REFS_H

#include <stddef.h>
#include <stdint.h>

/*
 * memcpy bandwidth in GB/s (10^9 bytes of data copied per second) between
 * two reused, pre-faulted buffers of `bytes` each, single thread; best of
 * `reps` copies. Returns < 0 on failure (allocation).
 */
double mfd_ref_memcpy_gbps(size_t bytes, int reps);

/*
 * Zero-scan rate in GB/s: `threads` threads each run mfd__buffer_is_zero on
 * 4 KiB pages over their share of `buf` (len bytes, which the caller keeps
 * all zero or not as it likes; typically all zero, the worst case).
 */
double mfd_ref_zero_scan_gbps(const void *buf, size_t len, int threads);

/*
 * Raw loopback TCP throughput in GB/s with `streams` parallel connections
 * (127.0.0.1, TCP_NODELAY, one sender thread and one receiver thread per
 * stream, the receivers in a forked child process so that, as in a real
 * migration, sender and receiver are separate processes), moving `bytes`
 * bytes in total. If `fresh_dest` is 0 the receiver reads into one reused
 * buffer per stream (the network's own limit); if 1 it reads into freshly
 * mmap'd anonymous memory of `bytes` bytes that is faulted in by the reads,
 * as a migration destination does (the page-population limit).
 * The sender writes from one reused pre-faulted buffer per stream, in
 * 512 KiB writes. Time is measured by the sender from first byte to the
 * receiver's one-byte acknowledgement that all bytes arrived.
 */
double mfd_ref_tcp_gbps(int streams, uint64_t bytes, int fresh_dest);

#endif
