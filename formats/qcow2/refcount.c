/* qcow2 refcounts, read side: look up a host cluster's reference count
 * through the refcount table and refcount blocks, for every
 * refcount_order (1 to 64 bits per entry).
 *
 * The only reader for now is the detection of metadata preallocation
 * (an image whose L2 tables map clusters that were never written, so the
 * file has holes where the data clusters are).  qemu detects it the same
 * way and then reports such holes as zeros in block status; doing the
 * same keeps our base:allocation identical to qemu-nbd's.
 */
#include <endian.h>
#include <errno.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "io.h"
#include "qcow2.h"

struct refcount_reader {
    struct qcow2_state *s;
    uint64_t table_entries;
    uint64_t *table;                /* host order */
    uint8_t *block;                 /* the last block read */
    uint64_t block_offset;          /* 0: none yet */
};

/* Read the refcount table; 0 or -errno. */
static int reader_init(struct refcount_reader *r, struct qcow2_state *s)
{
    uint64_t bytes = (uint64_t)s->h.refcount_table_clusters *
                     s->cluster_size;

    memset(r, 0, sizeof *r);
    r->s = s;
    r->table_entries = bytes / 8;
    r->table = malloc(bytes);
    r->block = malloc(s->cluster_size);
    if (!r->table || !r->block)
        return -ENOMEM;
    int err = io_pread_full(s->fd, r->table, bytes,
                            s->h.refcount_table_offset);
    if (err)
        return err == -ENODATA ? -EIO : err;
    for (uint64_t i = 0; i < r->table_entries; i++)
        r->table[i] = be64toh(r->table[i]);
    return 0;
}

static void reader_free(struct refcount_reader *r)
{
    free(r->table);
    free(r->block);
}

/* The refcount of host cluster index c; 0 or -EIO for a bad table. */
static int refcount_of(struct refcount_reader *r, uint64_t c, uint64_t *rc)
{
    struct qcow2_state *s = r->s;
    uint32_t order = s->h.refcount_order;
    uint32_t entries_bits = s->h.cluster_bits + 3 - order;
    uint64_t ti = c >> entries_bits;
    uint64_t bi = c & ((1ull << entries_bits) - 1);

    *rc = 0;
    if (ti >= r->table_entries)
        return 0;
    uint64_t off = r->table[ti] & ~511ull;
    if (off == 0)
        return 0;
    if ((off & s->cluster_mask) || off > s->file_size ||
        s->file_size - off < s->cluster_size)
        return -EIO;
    if (off != r->block_offset) {
        int err = io_pread_full(s->fd, r->block, s->cluster_size, off);
        if (err)
            return -EIO;
        r->block_offset = off;
    }
    uint32_t bits = 1u << order;
    if (bits < 8) {
        uint64_t bit = bi * bits;
        *rc = (r->block[bit / 8] >> (bit % 8)) & ((1u << bits) - 1);
    } else {
        const uint8_t *p = r->block + bi * (bits / 8);
        for (uint32_t i = 0; i < bits / 8; i++)
            *rc = (*rc << 8) | p[i];
    }
    return 0;
}

bool qcow2_has_metadata_prealloc(struct qcow2_state *s)
{
    struct refcount_reader r;
    struct stat st;
    bool found = false;

    if (fstat(s->fd, &st) < 0)
        return false;
    /* Clusters the file really stores, against clusters in use: when
     * the refcounts claim clearly more, the rest are holes. */
    uint64_t real = (uint64_t)st.st_blocks * 512 / s->cluster_size;
    uint64_t threshold = real * 10 / 9 > real + 2 ? real * 10 / 9
                                                  : real + 2;
    uint64_t end = (s->file_size + s->cluster_mask) >> s->h.cluster_bits;
    uint64_t hits = 0;

    if (reader_init(&r, s) == 0) {
        for (uint64_t c = 0; c < end && hits < threshold; c++) {
            uint64_t rc;
            if (refcount_of(&r, c, &rc) < 0)
                break;
            hits += rc > 0;
        }
        found = hits >= threshold;
    }
    reader_free(&r);
    return found;
}
