/* VHDX file creation: a new, empty fixed or dynamic file laid out the
 * way qemu-img lays one out, for `diskserve-img create` and for tests.
 */
#ifndef DISKSERVE_VHDX_CREATE_H
#define DISKSERVE_VHDX_CREATE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* What to create; zero means the default for every number. */
struct vhdx_create_opts {
    uint64_t size;                  /* virtual size, a sector multiple */
    uint32_t block_size;            /* 1..256 MiB, power of 2; 32 MiB */
    uint32_t log_size;              /* 1 MiB multiple, <= 64 MiB; 1 MiB */
    uint32_t logical_sector_size;   /* 512 or 4096; 512 */
    uint32_t physical_sector_size;  /* 512 or 4096; 4096 */
    bool fixed;                     /* every block allocated at creation */
    /* A differencing file: the parent's path as the locator stores it
     * (relative to the new file's folder, or absolute), NULL for none,
     * and the parent's DataWriteGuid (parent_linkage). */
    const char *parent_path;
    uint8_t parent_linkage[16];
};

/* Check opts; returns 0, or -EINVAL with a one-line reason copied into
 * why (when why is not NULL). */
int vhdx_create_validate(const struct vhdx_create_opts *opts, char *why,
                         size_t why_len);

/* Create (or truncate and overwrite) the file at path as an empty VHDX
 * file; returns 0, or -errno with one line logged (through img_log). */
int vhdx_create(const char *path, const struct vhdx_create_opts *opts);

#endif /* DISKSERVE_VHDX_CREATE_H */
