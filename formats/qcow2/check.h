/* Refcount checking and repair for qcow2 images, as `qemu-img check`
 * does it: every cluster the metadata references is counted in memory,
 * the counts are compared with the refcounts on disk, and on request the
 * differences are written back.
 *
 * qcow2_check works from the file, not from the driver's caches, so the
 * caller first writes back every dirty table (qcow2_metadata_flush) and
 * keeps all other I/O on the image away until it returns.  When a repair
 * wrote anything (res->metadata_changed), the caller drops its cached
 * tables (qcow2_metadata_drop_caches) and rereads whatever it keeps of
 * the refcount table: the table may have moved (res->refcounts_rebuilt).
 * qcow2_check itself updates s->h (refcount table position, feature
 * bits), s->l1 (COPIED flags) and s->file_size.
 */
#ifndef DISKSERVE_QCOW2_CHECK_H
#define DISKSERVE_QCOW2_CHECK_H

#include <stdbool.h>
#include <stdint.h>

struct image;
struct qcow2_state;

/* What a check found and what a repair changed. */
struct qcow2_check_result {
    uint64_t corruptions;           /* errors left after any repair */
    uint64_t leaks;                 /* leaked clusters left */
    uint64_t corruptions_fixed;
    uint64_t leaks_fixed;
    uint64_t check_errors;          /* could not check (I/O, memory) */
    uint64_t image_end_offset;      /* end of the last used cluster */
    uint64_t allocated_clusters;    /* guest clusters allocated here */
    uint64_t total_clusters;        /* guest clusters of the disk */
    uint64_t fragmented_clusters;   /* not right after their predecessor */
    uint64_t compressed_clusters;
    bool metadata_changed;          /* repair wrote to the file */
    bool refcounts_rebuilt;         /* new refcount table and blocks */
};

/* Repair flags for qcow2_check. */
#define QCOW2_REPAIR_LEAKS  1u      /* lower refcounts that are too high */
#define QCOW2_REPAIR_ERRORS 2u      /* raise refcounts that are too low,
                                     * fix COPIED flags, rebuild broken
                                     * refcount structures */

/* Check the refcounts of an open image and repair what `repair` asks
 * for; a repair that leaves no errors also clears the dirty and corrupt
 * bits.  Returns 0 when the check ran to the end (whatever it found; see
 * res), or -errno when it could not complete. */
int qcow2_check(struct qcow2_state *s, unsigned repair,
                struct qcow2_check_result *res);

/* qcow2_check for an image opened with img_open: -ENOTSUP unless it is a
 * qcow2 image.  An image opened read-only is repaired through a second,
 * writable descriptor of the same file. */
int qcow2_check_image(struct image *img, unsigned repair,
                      struct qcow2_check_result *res);

/* Open only the metadata of a qcow2 file (header, snapshot table, active
 * L1 table) for checking and for reports, as qemu-img check and info do:
 * no backing file, data file or key is needed and dirty or corrupt
 * images open too.  The result can be checked, not read.  Returns 0 or
 * -errno with one line logged. */
int qcow2_check_open(const char *path, bool writable,
                     struct qcow2_state **out);

/* Close what qcow2_check_open opened (NULL is fine). */
void qcow2_check_close(struct qcow2_state *s);

#endif /* DISKSERVE_QCOW2_CHECK_H */
