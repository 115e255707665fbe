/* qcow2 image creation: a new, empty image laid out the way qemu-img
 * lays one out (header and extensions, refcount table, refcount blocks,
 * L1 table), for `diskserve-img create` and for tests.
 */
#ifndef DISKSERVE_QCOW2_CREATE_H
#define DISKSERVE_QCOW2_CREATE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* What to create; zero means the default for every number. */
struct qcow2_create_opts {
    uint64_t size;                  /* virtual size, rounded up to 512 */
    uint32_t cluster_size;          /* 512..2 MiB, power of 2; 65536 */
    uint32_t version;               /* 2 (compat 0.10) or 3 (1.1); 3 */
    bool extended_l2;               /* v3, clusters of 16 KiB or more */
    bool lazy_refcounts;            /* v3 */
    uint32_t compression_type;      /* QCOW2_COMPRESS_ZLIB or _ZSTD */
    uint32_t refcount_bits;         /* 1..64, power of 2; 16 (v2: 16) */
    const char *backing_file;       /* NULL: none */
    const char *backing_fmt;        /* NULL: none recorded */
};

/* Check opts against the format's rules; returns 0, or -EINVAL with a
 * one-line reason copied into why (when why is not NULL). */
int qcow2_create_validate(const struct qcow2_create_opts *opts, char *why,
                          size_t why_len);

/* Create (or truncate and overwrite) the file at path as an empty qcow2
 * image; returns 0, or -errno with one line logged (through img_log). */
int qcow2_create(const char *path, const struct qcow2_create_opts *opts);

#endif /* DISKSERVE_QCOW2_CREATE_H */
