/* What the image fuzz targets share: a time budget per input, writing
 * the input to a file, and reading an open image all over while checking
 * the extent-list rules of image.h.  A broken rule aborts, naming the
 * target (fuzz_target).
 */
#ifndef DISKSERVE_FUZZ_IMAGE_H
#define DISKSERVE_FUZZ_IMAGE_H

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

#include "image.h"

#define FUZZ_READ_LIMIT (16ull * 1024 * 1024)
#define FUZZ_CHUNK (64u * 1024u)

/* The target's name, for messages; each target defines it. */
extern const char fuzz_target[];

#define FAIL(...) do {                                  \
        fprintf(stderr, "%s: ", fuzz_target);           \
        fprintf(stderr, __VA_ARGS__);                   \
        fputc('\n', stderr);                            \
        abort();                                        \
    } while (0)

/* Start the per-input time budget (one second). */
void fuzz_start_clock(void);

/* Whether this input's budget is spent. */
bool fuzz_out_of_time(void);

/* Make a private directory under $TMPDIR (once per process, removed at
 * exit) and return it. */
const char *fuzz_dir(void);

/* Write size bytes to path (created or truncated); aborts on failure. */
void fuzz_write_file(const char *path, const uint8_t *data, size_t size);

/* Read the first limit bytes of img in FUZZ_CHUNK reads into buf. */
void fuzz_read_all(struct image *img, uint8_t *buf, uint64_t limit);

/* Block status and the status of the first dirty bitmaps over the first
 * FUZZ_READ_LIMIT bytes, checking every extent list. */
void fuzz_status_all(struct image *img);

#endif /* DISKSERVE_FUZZ_IMAGE_H */
