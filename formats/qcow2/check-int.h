/* What the two halves of the qcow2 check share: the state of one check
 * (check.c counts references and compares refcounts; check-rebuild.c
 * writes new refcount structures when the old ones are broken).
 * Private to formats/qcow2/check*.c.
 */
#ifndef DISKSERVE_QCOW2_CHECK_INT_H
#define DISKSERVE_QCOW2_CHECK_INT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "qcow2.h"
#include "check.h"

/* Masks the spec defines beside qcow2.h's. */
#define REFT_OFFSET_MASK    0xfffffffffffffe00ull
#define REFT_RESERVED_MASK  0x00000000000001ffull
#define L1E_RESERVED_MASK   0x7f000000000001ffull
#define L2E_RESERVED_MASK   0x3f000000000001feull

#define MAX_MESSAGES        10000u

/* Walk flag: count allocation and fragmentation (active L1 only). */
#define WALK_STATS          1u
#define WALK_DROP           2u  /* may drop references past EOF */

/* Clusters [first, last] that a reference names past the end of the
 * file: errors, but a rebuild must not put new structures there. */
struct past_ref {
    uint64_t first, last;
};

/* The state of one check. */
struct ck {
    struct qcow2_state *s;
    const char *path;
    int rfd;                        /* reads */
    int wfd;                        /* repairs */
    unsigned repair;
    struct qcow2_check_result *res;

    uint32_t cs;                    /* cluster size */
    uint32_t cbits;
    uint32_t order;                 /* refcount_order */
    uint32_t block_bits;            /* log2 of entries per refcount block */
    uint64_t max_rc;                /* largest refcount the width holds */
    bool data_file;

    uint64_t nb_clusters;           /* clusters of the file */
    uint64_t nb_counted;            /* nb_clusters, or one more when a
                                     * reference reaches past the file */
    uint16_t *ref;                  /* nb_clusters + 1 counters */
    struct past_ref *past;          /* references too far past the end
                                     * of the file to count */
    size_t n_past, cap_past;
    bool past_lost;                 /* some could not be recorded */
    bool broken_bitmaps;            /* bitmap directory unparsable: which
                                     * clusters bitmaps use is unknown */

    uint64_t *rt;                   /* refcount table, host order */
    uint64_t rt_entries;
    uint64_t *old_blocks;           /* refcount blocks counted */
    size_t n_old_blocks;

    uint8_t *blk;                   /* one refcount block */
    uint64_t blk_off;               /* 0: none loaded */
    bool blk_dirty;

    uint8_t *l2;                    /* scratch for one L2 or bitmap table */
    uint64_t *l1;                   /* the active L1 as walked */
    uint32_t l1_size;

    bool rebuild;                   /* refcount structures are broken */
    bool need_alloc;                /* a raise needs a missing block */
    bool zero_used;                 /* a cluster in use has refcount 0 */
    bool wrote;
    uint64_t highest;               /* last cluster in use, plus one */
    unsigned messages;
};

/* One line about the image, up to MAX_MESSAGES per check. */
__attribute__((format(printf, 2, 3)))
void ck_say(struct ck *c, const char *fmt, ...);

/* Big-endian 64-bit store. */
void ck_put_be64(uint8_t *p, uint64_t v);

/* Set entry i of a refcount block of 2^order-bit entries. */
void ck_rc_set(uint8_t *b, uint32_t order, uint64_t i, uint64_t v);

/* Drop one reference counted for a cluster in the file. */
void ck_dec_cluster(struct ck *c, uint64_t k);

/* Write new refcount blocks and a new table past the end of the file,
 * from the counted references, then switch the header to them.  0 or
 * -errno. */
int ck_rebuild(struct ck *c);

#endif /* DISKSERVE_QCOW2_CHECK_INT_H */
