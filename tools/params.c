/*
 * params.c - the migration parameters that every migrating subcommand
 * (send, demo) accepts alike, with QEMU's names, and the per-pass progress
 * printer.
 */
#include <getopt.h>
#include <inttypes.h>
#include <stdio.h>
#include <string.h>

#include "cli.h"

/* Option values above any subcommand's own (which are characters). */
enum {
    OPT_BASE = 0x200,
    OPT_CHANNELS = OPT_BASE,
    OPT_ZPD,
    OPT_PAGE_SIZE,
    OPT_VERIFY,
    OPT_CRC,
    OPT_DOWNTIME,
    OPT_MAX_BW,
    OPT_MAX_ITER,
    OPT_AUTO_CONVERGE,
    OPT_THROTTLE_INITIAL,
    OPT_THROTTLE_INCREMENT,
    OPT_THROTTLE_MAX,
    OPT_NET_TIMEOUT,
    OPT_COMPRESSION,
    OPT_ZLIB_LEVEL,
    OPT_ZSTD_LEVEL,
    OPT_LZ4_ACCEL,
    OPT_ZERO_COPY,
    OPT_DIRECT_IO,
    OPT_TLS_CREDS,
    OPT_TLS_PSK,
    OPT_TLS_HOSTNAME,
    OPT_TLS_PRIORITY,
    OPT_HANDSHAKE_TIMEOUT,
    OPT_END
};

/* Option value -> parameter name; NULL name: a flag set to "on". */
static const struct {
    struct option opt;
    const char *param;
} shared[] = {
    {{"channels", required_argument, 0, OPT_CHANNELS}, "multifd-channels"},
    {{"multifd-channels", required_argument, 0, OPT_CHANNELS},
     "multifd-channels"},
    {{"zero-page-detection", required_argument, 0, OPT_ZPD},
     "zero-page-detection"},
    {{"page-size", required_argument, 0, OPT_PAGE_SIZE}, "page-size"},
    {{"verify", no_argument, 0, OPT_VERIFY}, "verify"},
    {{"crc", no_argument, 0, OPT_CRC}, "crc"},
    {{"downtime-limit", required_argument, 0, OPT_DOWNTIME}, "downtime-limit"},
    {{"max-bandwidth", required_argument, 0, OPT_MAX_BW}, "max-bandwidth"},
    {{"max-iterations", required_argument, 0, OPT_MAX_ITER}, "max-iterations"},
    {{"auto-converge", no_argument, 0, OPT_AUTO_CONVERGE}, "auto-converge"},
    {{"cpu-throttle-initial", required_argument, 0, OPT_THROTTLE_INITIAL},
     "cpu-throttle-initial"},
    {{"cpu-throttle-increment", required_argument, 0, OPT_THROTTLE_INCREMENT},
     "cpu-throttle-increment"},
    {{"max-cpu-throttle", required_argument, 0, OPT_THROTTLE_MAX},
     "max-cpu-throttle"},
    {{"network-timeout", required_argument, 0, OPT_NET_TIMEOUT},
     "network-timeout"},
    {{"multifd-compression", required_argument, 0, OPT_COMPRESSION},
     "multifd-compression"},
    {{"multifd-zlib-level", required_argument, 0, OPT_ZLIB_LEVEL},
     "multifd-zlib-level"},
    {{"multifd-zstd-level", required_argument, 0, OPT_ZSTD_LEVEL},
     "multifd-zstd-level"},
    {{"multifd-lz4-acceleration", required_argument, 0, OPT_LZ4_ACCEL},
     "multifd-lz4-acceleration"},
    {{"zero-copy-send", no_argument, 0, OPT_ZERO_COPY}, "zero-copy-send"},
    {{"direct-io", no_argument, 0, OPT_DIRECT_IO}, "direct-io"},
    {{"tls-creds", required_argument, 0, OPT_TLS_CREDS}, "tls-creds"},
    {{"tls-psk", required_argument, 0, OPT_TLS_PSK}, "tls-psk"},
    {{"tls-hostname", required_argument, 0, OPT_TLS_HOSTNAME}, "tls-hostname"},
    {{"tls-priority", required_argument, 0, OPT_TLS_PRIORITY}, "tls-priority"},
    {{"handshake-timeout", required_argument, 0, OPT_HANDSHAKE_TIMEOUT},
     "handshake-timeout"},
};

const char cli_migration_usage[] =
    "migration parameters (QEMU's names):\n"
    "  --channels N                multifd-channels, 1..255\n"
    "  --zero-page-detection M     none | legacy | multifd (default multifd)\n"
    "  --page-size N               4096..65536, power of two (default 4096)\n"
    "  --verify                    feature VERIFY: per-block XXH3-64 checked\n"
    "                              by the destination\n"
    "  --crc                       feature CRC: CRC32C on every data packet\n"
    "  --downtime-limit MS         switch over once the rest would take no\n"
    "                              longer (default 300)\n"
    "  --max-bandwidth RATE        bytes/s over all channels, K/M/G suffixes\n"
    "                              (default 0: unlimited)\n"
    "  --max-iterations N          force the switchover after N passes\n"
    "                              (default 0: no limit)\n"
    "  --auto-converge             throttle the writers when passes do not\n"
    "                              shrink\n"
    "  --cpu-throttle-initial P    first throttle, percent (default 20)\n"
    "  --cpu-throttle-increment P  throttle step, percent (default 10)\n"
    "  --max-cpu-throttle P        throttle cap, percent (default 99)\n"
    "  --network-timeout MS        fail when the peer stops acknowledging\n"
    "                              or reading for that long (TCP and Unix;\n"
    "                              default 10000; 0: the kernel's)\n"
    "  --multifd-compression M     none | zlib | zstd | lz4 (default none)\n"
    "  --multifd-zlib-level N      0..9 (default 1)\n"
    "  --multifd-zstd-level N      1..20 (default 1)\n"
    "  --multifd-lz4-acceleration N  1..65537 (default 1; higher: faster)\n"
    "  --zero-copy-send            MSG_ZEROCOPY for raw page payloads\n"
    "  --direct-io                 file: URIs: page I/O with O_DIRECT\n"
    "  --tls-creds DIR             TLS with x509: DIR/ca-cert.pem and\n"
    "                              client-cert.pem / client-key.pem (QEMU's\n"
    "                              tls-creds-x509 layout)\n"
    "  --tls-psk FILE              TLS with a pre-shared key: NAME:HEXKEY\n"
    "                              lines (the first is used)\n"
    "  --tls-hostname NAME         the name the destination's certificate\n"
    "                              must carry (default: the URI's host)\n"
    "  --tls-priority STRING       GnuTLS priority string of the handshakes\n"
    "                              (QEMU's tls-creds priority), e.g.\n"
    "                              NORMAL:-CIPHER-ALL:+AES-256-GCM\n"
    "  --handshake-timeout MS      connecting, TLS and setup must finish\n"
    "                              within MS (default 10000)\n";

size_t cli_options_build(const struct option *own, struct option *out,
                         size_t cap)
{
    size_t n = 0;
    for (; own && own->name && n + 1 < cap; own++)
        out[n++] = *own;
    for (size_t i = 0; i < sizeof(shared) / sizeof(shared[0]) && n + 1 < cap;
         i++)
        out[n++] = shared[i].opt;
    memset(&out[n], 0, sizeof(out[n]));
    return n;
}

const char *cli_migration_param(int val, const char *arg, const char **value)
{
    for (size_t i = 0; val >= OPT_BASE && val < OPT_END &&
                       i < sizeof(shared) / sizeof(shared[0]);
         i++)
        if (shared[i].opt.val == val) {
            *value = shared[i].opt.has_arg == no_argument ? "on" : arg;
            return shared[i].param;
        }
    return NULL;
}

const char *cli_tls_creds, *cli_tls_psk, *cli_tls_priority;

void cli_tls_remember(const char *name, const char *value)
{
    if (!strcmp(name, "tls-creds"))
        cli_tls_creds = value;
    if (!strcmp(name, "tls-psk"))
        cli_tls_psk = value;
    if (!strcmp(name, "tls-priority"))
        cli_tls_priority = value;
}

int cli_tls_apply(mfd_session *s)
{
    if (cli_tls_creds && mfd_set_tls_x509(s, cli_tls_creds))
        return -1;
    if (cli_tls_psk && mfd_set_tls_psk(s, cli_tls_psk))
        return -1;
    if (cli_tls_priority && mfd_set_tls_priority(s, cli_tls_priority))
        return -1;
    return 0;
}

int cli_migration_option(mfd_session *s, int val, const char *arg)
{
    const char *value, *name = cli_migration_param(val, arg, &value);
    if (!name)
        return 1;
    cli_tls_remember(name, value);
    return mfd_set_param_by_name(s, name, value) ? -1 : 0;
}

bool cli_progress_mode(const char *arg, int argc, char **argv,
                       cli_progress_kind *kind)
{
    /* "--progress", "--progress=json" or "--progress json". */
    if (!arg && optind < argc && !strcmp(argv[optind], "json")) {
        arg = argv[optind];
        optind++;
    }
    if (!arg || !strcmp(arg, "human")) {
        *kind = CLI_PROGRESS_HUMAN;
        return true;
    }
    if (!strcmp(arg, "json")) {
        *kind = CLI_PROGRESS_JSON;
        return true;
    }
    return false;
}

void cli_print_pass(FILE *f, cli_progress_kind kind, const mfd_pass_info *p,
                    uint32_t page_size)
{
    if (kind == CLI_PROGRESS_JSON) {
        fprintf(f,
                "{\"pass\": %" PRIu64 ", \"final\": %s, \"pages\": %" PRIu64
                ", \"bytes\": %" PRIu64 ", \"time_us\": %" PRIu64
                ", \"dirty_pages\": %" PRIu64 ", \"dirty_rate_bps\": %" PRIu64
                ", \"bandwidth_bps\": %" PRIu64
                ", \"memory_rate_bps\": %" PRIu64
                ", \"expected_downtime_ms\": %" PRIu64
                ", \"throttle_pct\": %d}\n",
                p->pass, p->final ? "true" : "false", p->pages, p->bytes,
                p->time_us, p->dirty_pages, p->dirty_rate_bps,
                p->bandwidth_bps, p->memory_rate_bps,
                p->expected_downtime_ms == UINT64_MAX ? 0
                                                      : p->expected_downtime_ms,
                p->throttle_pct);
    } else if (p->final) {
        fprintf(f,
                "  pass %" PRIu64 " (final, paused): %" PRIu64
                " pages in %.1f ms\n",
                p->pass, p->pages, p->time_us / 1e3);
    } else {
        char exp[32];
        if (p->expected_downtime_ms == UINT64_MAX)
            snprintf(exp, sizeof(exp), "unknown");
        else
            snprintf(exp, sizeof(exp), "%" PRIu64 " ms",
                     p->expected_downtime_ms);
        fprintf(f,
                "  pass %" PRIu64 ": sent %" PRIu64 " pages in %.2f s, %.2f "
                "GB/s; remaining %.1f MiB dirty; dirty rate %.0f MiB/s; "
                "expected downtime %s",
                p->pass, p->pages, p->time_us / 1e6, p->bandwidth_bps / 1e9,
                (double)p->dirty_pages * page_size / 1048576.0,
                p->dirty_rate_bps / 1048576.0, exp);
        if (p->throttle_pct)
            fprintf(f, "; throttle %d%%", p->throttle_pct);
        fputc('\n', f);
    }
    fflush(f);
}
