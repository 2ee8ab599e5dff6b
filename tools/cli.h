/*
 * cli.h - what the subcommands of the multifd tool share.
 */
#ifndef MFD_TOOLS_CLI_H
#define MFD_TOOLS_CLI_H

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>

#include "multifd.h"

/* Prints the human summary of a session's stats. */
void cli_print_stats(FILE *f, const mfd_session *s, const char *what);

/* Parses a size with an optional K/M/G/T suffix (powers of 1024). */
bool cli_parse_size(const char *text, uint64_t *out);

/*
 * Starts a thread printing a progress line to stderr every `ms` ms until
 * cli_progress_stop(); `total` is the bytes of guest memory expected.
 */
void cli_progress_start(mfd_session *s, uint64_t total, int ms);
void cli_progress_stop(void);

/* ---- migration parameters shared by send and demo (params.c) ---- */

#include <getopt.h>

/*
 * The TLS credentials the shared options set (NULL: none), for the demo's
 * and the bench's own destination processes, which use the same ones.
 */
extern const char *cli_tls_creds, *cli_tls_psk;
/* Notes a shared option that sets them (by parameter name). */
void cli_tls_remember(const char *name, const char *value);
/* Applies them to a destination session; 0 or -1 (mfd_last_error). */
int cli_tls_apply(mfd_session *s);

/* Help text of the shared migration options. */
extern const char cli_migration_usage[];
/*
 * Writes the subcommand's own options followed by the shared ones into
 * out[cap] (terminated); returns the count.
 */
size_t cli_options_build(const struct option *own, struct option *out,
                         size_t cap);
/*
 * Applies a shared option: 0 when set, -1 when refused (the reason in
 * mfd_last_error), 1 when `val` is not a shared option.
 */
int cli_migration_option(mfd_session *s, int val, const char *arg);
/*
 * The parameter name a shared option sets (NULL when `val` is not one),
 * and in *value the string to set it to.
 */
const char *cli_migration_param(int val, const char *arg, const char **value);

typedef enum { CLI_PROGRESS_HUMAN, CLI_PROGRESS_JSON } cli_progress_kind;
/*
 * Parses --progress's optional argument ("json" may also be the next word);
 * false for an unknown mode.
 */
bool cli_progress_mode(const char *arg, int argc, char **argv,
                       cli_progress_kind *kind);
/* Prints one pass: a human line, or one JSON object per line. */
void cli_print_pass(FILE *f, cli_progress_kind kind, const mfd_pass_info *p,
                    uint32_t page_size);

/* Synthetic guest contents (guest.c). */
typedef enum {
    GUEST_ZERO,
    GUEST_RANDOM,
    GUEST_HALF, /* alternating 2 MiB runs of zero and random pages */
    GUEST_TEXT,
    GUEST_MIXED, /* zero, random and text pages interleaved */
    GUEST_UNTOUCHED /* all zero, never written: nothing to fill */
} guest_content;

bool guest_content_parse(const char *name, guest_content *out);
/*
 * Fills len bytes (a multiple of 4096) with content, using 2 threads; for
 * GUEST_UNTOUCHED, does nothing (the memory must be fresh).
 */
void guest_fill(uint8_t *buf, uint64_t len, guest_content c, uint64_t seed);
/* Counts the all-zero 4 KiB pages. */
uint64_t guest_zero_pages(const uint8_t *buf, uint64_t len);
/*
 * Self-checking pages (the live demo): stamps a page with its checksum and
 * write counter; checks one (0: intact or all zero, -1: torn or misplaced;
 * *counter the write counter, 0 for a zero page); stamps every non-zero
 * page of a fresh guest with counter 1; rewrites a page as a writer does
 * (a new content and counter, or, one time in eight, all zero).
 */
void guest_stamp(uint8_t *page, uint64_t index, uint64_t counter);
int guest_page_check(const uint8_t *page, uint64_t index, uint64_t *counter);
void guest_stamp_all(uint8_t *buf, uint64_t len);
void guest_rewrite(uint8_t *page, uint64_t index, uint64_t *rng);

/*
 * A destination in a child process, as the demo and the bench run it: the
 * child listens on `listen_uri`, reports the resolved URI, receives one
 * migration into fresh anonymous memory and reports each block's XXH3-64
 * digest (or its error) over a pipe.
 */
typedef struct {
    int pid;
    int fd; /* read end of the report pipe */
    char uri[320];
} dest_child;

int dest_child_start(dest_child *d, const char *listen_uri, int channels,
                     bool prealloc, bool print_stats);
/*
 * Waits for the child's report: fills digests[0..n) and returns 0, or
 * returns -1 with the child's error in err.
 */
int dest_child_finish(dest_child *d, uint64_t *digests, int n, char *err,
                      size_t errlen);

int cmd_demo(int argc, char **argv);
int cmd_colo(int argc, char **argv);
int cmd_bench(int argc, char **argv);

#endif
