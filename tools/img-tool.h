/* diskserve-img internals: one entry point per command, and the helpers
 * the commands share (size parsing and printing, error lines).
 */
#ifndef DISKSERVE_IMG_TOOL_H
#define DISKSERVE_IMG_TOOL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "image.h"

/* Exit status for bad usage, as the commands document it. */
#define TOOL_EXIT_USAGE 2

/* The commands: argv[0] is the command name; each returns the process
 * exit status. */
int tool_cmd_create(int argc, char **argv);
int tool_cmd_info(int argc, char **argv);
int tool_cmd_map(int argc, char **argv);
int tool_cmd_check(int argc, char **argv);
int tool_cmd_bitmap(int argc, char **argv);
/* bitmap --control: the same operations on a running server's export
 * (img-bitmap-remote.c). */
int tool_cmd_bitmap_remote(int argc, char **argv);
bool tool_bitmap_is_remote(int argc, char **argv);

/* Most operations one bitmap call takes (qemu-img has no limit; ours is
 * only to keep the array on the stack). */
#define TOOL_BITMAP_MAX_ACTIONS 64

/* The bitmap command's options, in the order given.  acts[i].sources
 * points into sources, so the struct is not copied. */
struct tool_bitmap_args {
    struct img_bitmap_action acts[TOOL_BITMAP_MAX_ACTIONS];
    const char *sources[TOOL_BITMAP_MAX_ACTIONS];
    size_t n;
    uint64_t granularity;       /* -g, 0 when not given */
    bool help;                  /* -h: usage printed, nothing left to do */
    const char *format;         /* -f, offline only */
    const char *control;        /* --control, remote only */
    const char *node;           /* --node, remote only */
};

/* Parse the bitmap command's options, leaving its operands at
 * argv[optind]; remote takes --control and --node instead of -f.  The
 * actions' names are left for the caller.  Returns 0, or
 * TOOL_EXIT_USAGE with the error printed. */
int tool_parse_bitmap_args(int argc, char **argv, bool remote,
                           struct tool_bitmap_args *ba);

/* Print the usage text to stdout. */
void tool_usage(void);

/* Print one "diskserve-img: ..." line for bad usage; returns
 * TOOL_EXIT_USAGE. */
int tool_usage_error(const char *fmt, ...)
    __attribute__((format(printf, 1, 2)));

/* Print one "diskserve-img: ..." line; returns 1. */
int tool_error(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* Parse a size: a number, optionally with a fraction, then an optional
 * suffix b, k, M, G, T, P or E (powers of 1024, any case).  Returns 0 or
 * -EINVAL. */
int tool_parse_size(const char *s, uint64_t *out);

/* Format a byte count the way qemu-img prints sizes: three significant
 * digits and a binary unit ("196 KiB", "1 GiB"). */
void tool_format_size(uint64_t v, char *buf, size_t len);

/* Parse on/off, true/false, yes/no; returns 0 or -EINVAL. */
int tool_parse_bool(const char *s, int *out);

/* The format a file has, "raw" or "qcow2", probed when fmt is NULL; NULL
 * with one error line printed when it cannot be told. */
const char *tool_format_of(const char *path, const char *fmt);

#endif /* DISKSERVE_IMG_TOOL_H */
