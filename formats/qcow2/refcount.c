/* qcow2 refcounts: reading and changing a host cluster's reference count
 * through the refcount table and refcount blocks, for every
 * refcount_order (1 to 64 bits per entry), and growing both structures
 * as the file grows.
 *
 * Refcount blocks live in their own table cache; a changed block is
 * written back whenever the cache or a flush decides (increments may reach
 * the disk early: a refcount too high is only a leak; decrements are made
 * only once the table that dropped the reference is durable, see
 * alloc.c).  Structural changes are written at once, in order: a new
 * refcount block is written and synced before the table entry that points
 * to it; a new, larger refcount table with the blocks that describe it is
 * written and synced before the header moves to it, and the header is
 * synced before the old table's clusters are freed.
 *
 * Also here, on the read side: the detection of metadata preallocation
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

    if (!io_is_file(s->fd) || fstat(s->fd, &st) < 0)
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

/* ---- read-write images: everything below runs under the metadata
 * lock ---- */

/* Entry i of refcount block b. */
static uint64_t entry_get(const struct qcow2_state *s, const uint8_t *b,
                          uint64_t i)
{
    uint32_t order = s->h.refcount_order;

    if (order < 3) {
        uint32_t bits = 1u << order;
        uint64_t bit = i * bits;
        return (b[bit / 8] >> (bit % 8)) & ((1u << bits) - 1);
    }
    uint32_t bytes = 1u << (order - 3);
    const uint8_t *p = b + i * bytes;
    uint64_t v = 0;
    for (uint32_t k = 0; k < bytes; k++)
        v = (v << 8) | p[k];
    return v;
}

/* Set entry i of refcount block b to v (v <= s->rc_max). */
static void entry_set(const struct qcow2_state *s, uint8_t *b, uint64_t i,
                      uint64_t v)
{
    uint32_t order = s->h.refcount_order;

    if (order < 3) {
        uint32_t bits = 1u << order;
        uint64_t bit = i * bits;
        uint8_t mask = (uint8_t)(((1u << bits) - 1) << (bit % 8));
        b[bit / 8] = (uint8_t)((b[bit / 8] & ~mask) |
                               ((v << (bit % 8)) & mask));
        return;
    }
    uint32_t bytes = 1u << (order - 3);
    uint8_t *p = b + i * bytes;
    for (uint32_t k = bytes; k-- > 0; v >>= 8)
        p[k] = (uint8_t)v;
}

/* Write back one refcount block: the cache's callback.  Refcount blocks
 * have no predecessors: an increment on disk early is a leak at worst,
 * and decrements are applied only once they may reach the disk. */
static int write_block(void *opaque, uint64_t offset, const uint8_t *data)
{
    struct qcow2_state *s = opaque;

    int err = io_pwrite_tag(s->fd, data, s->cluster_size, offset,
                            IO_TAG_REFCOUNT_BLOCK);
    if (err) {
        img_log("qcow2: %s: writing refcount block at 0x%" PRIx64 ": %s",
                s->img.path, offset, strerror(-err));
        return err;
    }
    qcow2_note_write(s);
    return 0;
}

int qcow2_refcount_open(struct qcow2_state *s, size_t cache_bytes)
{
    const char *path = s->img.path;
    uint64_t bytes = (uint64_t)s->h.refcount_table_clusters *
                     s->cluster_size;

    s->rb_bits = s->h.cluster_bits + 3 - s->h.refcount_order;
    s->rc_max = s->h.refcount_order == 6
                ? UINT64_MAX : (1ull << (1u << s->h.refcount_order)) - 1;
    free(s->reftable);
    s->reftable = malloc(bytes);
    if (!s->reftable)
        return -ENOMEM;
    s->reftable_entries = bytes / 8;
    int err = io_pread_full(s->fd, s->reftable, bytes,
                            s->h.refcount_table_offset);
    if (err) {
        img_log("qcow2: %s: reading refcount table at 0x%" PRIx64 ": %s",
                path, s->h.refcount_table_offset, strerror(-err));
        return err == -ENODATA ? -EINVAL : err;
    }
    for (uint64_t i = 0; i < s->reftable_entries; i++) {
        uint64_t v = be64toh(s->reftable[i]);
        s->reftable[i] = v;
        if (v == 0)
            continue;
        if ((v & s->cluster_mask) || v >= s->file_size) {
            img_log("qcow2: %s: refcount table entry %" PRIu64 ": block "
                    "offset 0x%" PRIx64 " unaligned or past end of file; "
                    "repair the image first", path, i, v);
            return -EINVAL;
        }
        err = qcow2_meta_add(s, v);
        if (err)
            return err;
    }
    if (!s->rc_cache) {
        s->rc_cache = qcow2_cache_create(path, s->fd, s->cluster_size,
                                         cache_bytes);
        if (!s->rc_cache)
            return -ENOMEM;
        qcow2_cache_set_writeback(s->rc_cache, write_block, s);
    }
    return 0;
}

/* Log and refuse when host clusters [off, off + len) hold a structure
 * whose refcount is 0: the allocator would hand that cluster out again
 * and the next write would overwrite it. */
static int counted(struct qcow2_state *s, uint64_t off, uint64_t len,
                   const char *what)
{
    uint64_t first = off >> s->h.cluster_bits;
    uint64_t last = (off + len - 1) >> s->h.cluster_bits;

    for (uint64_t c = first; len && c <= last; c++) {
        uint64_t rc;
        int err = qcow2_refcount_get(s, c, &rc);
        if (err)
            return err;
        if (rc == 0) {
            img_log("qcow2: %s: the %s at 0x%" PRIx64 " has refcount 0; "
                    "repair the image (diskserve-img check -r all) or "
                    "open it read-only", s->img.path, what,
                    c << s->h.cluster_bits);
            return -EUCLEAN;
        }
    }
    return 0;
}

int qcow2_refcount_verify_metadata(struct qcow2_state *s)
{
    int err = counted(s, 0, 1, "header");
    if (!err)
        err = counted(s, s->h.l1_table_offset, (uint64_t)s->h.l1_size * 8,
                      "L1 table");
    if (!err)
        err = counted(s, s->h.refcount_table_offset,
                      (uint64_t)s->h.refcount_table_clusters <<
                      s->h.cluster_bits, "refcount table");
    if (!err && s->nb_snapshots)
        err = counted(s, s->h.snapshots_offset, s->snapshots_size,
                      "snapshot table");
    for (uint32_t i = 0; !err && i < s->nb_snapshots; i++)
        err = counted(s, s->snapshots[i].l1_table_offset,
                      (uint64_t)s->snapshots[i].l1_size * 8,
                      "snapshot L1 table");
    for (size_t i = 0; !err && i < s->meta.cap; i++)
        if (s->meta.slots[i])
            err = counted(s, (s->meta.slots[i] - 1) << s->h.cluster_bits,
                          1, "L2 table or refcount block");
    return err;
}

int qcow2_refcount_end(struct qcow2_state *s, uint64_t *end)
{
    uint64_t per = 1ull << s->rb_bits;

    *end = 0;
    for (uint64_t ti = s->reftable_entries; ti-- > 0;) {
        if (s->reftable[ti] == 0)
            continue;
        struct qcow2_table *t;
        int err = qcow2_cache_get(s->rc_cache, s->reftable[ti], &t);
        if (err)
            return err;
        for (uint64_t i = per; i-- > 0;) {
            if (entry_get(s, t->data, i) != 0) {
                *end = ti * per + i + 1;
                break;
            }
        }
        qcow2_cache_put(s->rc_cache, &t);
        if (*end)
            return 0;
    }
    return 0;
}

int qcow2_refcount_get(struct qcow2_state *s, uint64_t cluster,
                       uint64_t *rc)
{
    uint64_t ti = cluster >> s->rb_bits;
    struct qcow2_table *t;

    *rc = 0;
    if (ti >= s->reftable_entries || s->reftable[ti] == 0)
        return 0;
    int err = qcow2_cache_get(s->rc_cache, s->reftable[ti], &t);
    if (err)
        return err;
    *rc = entry_get(s, t->data, cluster & ((1ull << s->rb_bits) - 1));
    qcow2_cache_put(s->rc_cache, &t);
    return 0;
}

int qcow2_refcount_scan(struct qcow2_state *s, uint64_t first, uint64_t end,
                        uint64_t *free_at)
{
    uint64_t per = 1ull << s->rb_bits;

    *free_at = end;
    while (first < end) {
        uint64_t ti = first >> s->rb_bits;
        uint64_t stop = (ti + 1) * per < end ? (ti + 1) * per : end;
        if (ti >= s->reftable_entries || s->reftable[ti] == 0) {
            *free_at = first;
            return 0;
        }
        struct qcow2_table *t;
        int err = qcow2_cache_get(s->rc_cache, s->reftable[ti], &t);
        if (err)
            return err;
        for (uint64_t c = first; c < stop; c++) {
            if (entry_get(s, t->data, c & (per - 1)) == 0) {
                *free_at = c;
                qcow2_cache_put(s->rc_cache, &t);
                return 0;
            }
        }
        qcow2_cache_put(s->rc_cache, &t);
        first = stop;
    }
    return 0;
}

/* Write an 8-byte big-endian value at off of the qcow2 file. */
static int write_be64(struct qcow2_state *s, uint64_t off, uint64_t v,
                      enum io_tag tag)
{
    uint64_t be = htobe64(v);
    int err = io_pwrite_tag(s->fd, &be, 8, off, tag);
    if (err)
        img_log("qcow2: %s: writing %s at 0x%" PRIx64 ": %s", s->img.path,
                io_tag_name(tag), off, strerror(-err));
    else
        qcow2_note_write(s);
    return err;
}

static int grow_reftable(struct qcow2_state *s, uint64_t need);

/* Give refcount range ti (host clusters ti << rb_bits onwards) its first
 * refcount block: written and synced before the table entry that points
 * to it.  The block goes wherever the allocator says; when that is in
 * range ti it counts itself, otherwise the block of its own range counts
 * it, and that count is written back before the same sync: until then
 * the table entry would name a cluster whose refcount is 0 on disk.
 * 0 or -errno. */
static int create_block(struct qcow2_state *s, uint64_t ti)
{
    int err;

    if (ti >= s->reftable_entries) {
        err = grow_reftable(s, ti);
        if (err)
            return err;
        if (s->reftable[ti])
            return 0;
    }
    uint64_t b, got, counted = 0;
    bool fresh;
    err = qcow2_pick_clusters(s, 1, &b, &got, &fresh);
    if (err)
        return err;
    uint8_t *buf = calloc(1, s->cluster_size);
    if (!buf) {
        err = -ENOMEM;
        goto out_give_back;
    }
    if (b >> s->rb_bits == ti) {
        entry_set(s, buf, b & ((1ull << s->rb_bits) - 1), 1);
    } else {
        err = qcow2_count_taken(s, b, 1, &counted);
        if (!err && !(s->breaks & QCOW2_BREAK_BLOCK_COUNT))
            err = qcow2_cache_flush(s->rc_cache);
        if (err)
            goto out_give_back;
    }
    uint64_t off = b << s->h.cluster_bits;
    err = io_pwrite_tag(s->fd, buf, s->cluster_size, off,
                        IO_TAG_REFCOUNT_BLOCK);
    if (!err)
        err = qcow2_sync(s, IO_TAG_REFCOUNT_BLOCK);
    if (err) {
        img_log("qcow2: %s: writing new refcount block at 0x%" PRIx64
                ": %s", s->img.path, off, strerror(-err));
        goto out_give_back;
    }
    err = write_be64(s, s->h.refcount_table_offset + ti * 8, off,
                     IO_TAG_REFCOUNT_TABLE);
    if (err)
        goto out_free;      /* the entry may be on disk: keep b */
    s->reftable[ti] = off;
    err = qcow2_meta_add(s, off);
    goto out_free;

out_give_back:
    qcow2_give_back(s, b, 1, counted);
out_free:
    free(buf);
    return err;
}

/* How many of the refcount ranges that host clusters [a, b) touch have
 * no block. */
static uint64_t missing_blocks(const struct qcow2_state *s, uint64_t a,
                               uint64_t b)
{
    uint64_t n = 0;

    for (uint64_t r = a >> s->rb_bits; r <= (b - 1) >> s->rb_bits; r++)
        if (r >= s->reftable_entries || s->reftable[r] == 0)
            n++;
    return n;
}

/* Move the refcount table to a new, larger place at the end of the file
 * that has room for entry need, with new blocks for every range the new
 * table and those blocks occupy (placed right after the table, so they
 * count themselves and the table).  Order: blocks and table written, the
 * counts for the area in old blocks written, sync; header, sync; then the
 * old table's clusters are freed.  0 or -errno. */
/* Size a new refcount table placed at host cluster a with room for
 * entry need: *n entries in *tc clusters, followed by *nb new blocks,
 * one for each range the table and those blocks occupy that has none;
 * the table's entries reach past all of them. */
static void size_reftable(const struct qcow2_state *s, uint64_t need,
                          uint64_t a, uint64_t *n, uint64_t *tc,
                          uint64_t *nb)
{
    uint64_t per_cluster = s->cluster_size / 8;

    *n = s->reftable_entries + s->reftable_entries / 2;
    if (*n < need + 1)
        *n = need + 1;
    for (;;) {
        *n = (*n + per_cluster - 1) / per_cluster * per_cluster;
        *tc = *n / per_cluster;
        *nb = 0;
        for (;;) {
            uint64_t m = missing_blocks(s, a, a + *tc + *nb);
            if (m == *nb)
                break;
            *nb = m;
        }
        uint64_t last = (a + *tc + *nb - 1) >> s->rb_bits;
        if (last < *n)
            return;
        *n = last + 1;
    }
}

/* Count the clusters [a, a + tc + nb) that a new table of tc clusters
 * and its nb new blocks take: through the cache in ranges that have a
 * block, in the next of the new blocks (nb of them, in blocks) in the
 * others, which table (the new table, host order) then points at.
 * 0 or -errno. */
static int count_new_area(struct qcow2_state *s, uint64_t a, uint64_t tc,
                          uint64_t nb, uint64_t *table, uint8_t *blocks)
{
    uint64_t area_end = a + tc + nb, j = 0, counted;

    for (uint64_t r = a >> s->rb_bits; r <= (area_end - 1) >> s->rb_bits;
         r++) {
        uint64_t lo = r << s->rb_bits, hi = (r + 1) << s->rb_bits;
        if (lo < a)
            lo = a;
        if (hi > area_end)
            hi = area_end;
        if (r < s->reftable_entries && s->reftable[r] != 0) {
            int err = qcow2_count_taken(s, lo, hi - lo, &counted);
            if (err)
                return err;
            continue;
        }
        uint8_t *blk = blocks + j * s->cluster_size;
        for (uint64_t c = lo; c < hi; c++)
            entry_set(s, blk, c & ((1ull << s->rb_bits) - 1), 1);
        table[r] = (a + tc + j) << s->h.cluster_bits;
        j++;
    }
    return 0;
}

/* Give back the area [a, a + count) of a new refcount table that will
 * not be linked, once count_new_area has counted it: in ranges that had
 * a block its clusters are counted, in the others only the new blocks
 * that will never be named counted them. */
static void give_back_area(struct qcow2_state *s, uint64_t a,
                           uint64_t count)
{
    uint64_t end = a + count;

    for (uint64_t r = a >> s->rb_bits; r <= (end - 1) >> s->rb_bits; r++) {
        uint64_t lo = r << s->rb_bits, hi = (r + 1) << s->rb_bits;
        if (lo < a)
            lo = a;
        if (hi > end)
            hi = end;
        bool counted = r < s->reftable_entries && s->reftable[r] != 0;
        qcow2_give_back(s, lo, hi - lo, counted ? hi - lo : 0);
    }
}

static int grow_reftable(struct qcow2_state *s, uint64_t need)
{
    const char *path = s->img.path;
    uint64_t a = s->frontier, n, tc, nb;
    int err;

    size_reftable(s, need, a, &n, &tc, &nb);
    if (n > QCOW2_MAX_REFTABLE_BYTES / 8) {
        img_log("qcow2: %s: refcount table would need %" PRIu64 " entries "
                "(max %u): image full", path, n,
                QCOW2_MAX_REFTABLE_BYTES / 8);
        return -EFBIG;
    }
    err = qcow2_take_frontier(s, a, tc + nb);
    if (err)
        return err;

    uint64_t *table = calloc(n, 8);
    uint8_t *blocks = calloc(nb ? nb : 1, s->cluster_size);
    if (!table || !blocks) {
        err = -ENOMEM;
        qcow2_give_back(s, a, tc + nb, 0);
        goto out_free;
    }
    memcpy(table, s->reftable, s->reftable_entries * 8);
    err = count_new_area(s, a, tc, nb, table, blocks);
    if (err)
        goto out_free;      /* counted in part: leaks until reopen */
    for (uint64_t j = 0; j < nb; j++) {
        uint64_t off = (a + tc + j) << s->h.cluster_bits;
        err = io_pwrite_tag(s->fd, blocks + j * s->cluster_size,
                            s->cluster_size, off, IO_TAG_REFCOUNT_BLOCK);
        if (err)
            goto out_give_back;
    }
    for (uint64_t i = 0; i < n; i++)
        table[i] = htobe64(table[i]);
    uint64_t toff = a << s->h.cluster_bits;
    err = io_pwrite_tag(s->fd, table, n * 8, toff, IO_TAG_REFTABLE_GROW);
    for (uint64_t i = 0; i < n; i++)
        table[i] = be64toh(table[i]);
    if (!err)
        err = qcow2_cache_flush(s->rc_cache);
    if (!err)
        err = qcow2_sync(s, IO_TAG_REFTABLE_GROW);
    if (err)
        goto out_give_back;

    uint8_t hdr[12];
    uint64_t be_off = htobe64(toff);
    uint32_t be_tc = htobe32((uint32_t)tc);
    memcpy(hdr, &be_off, 8);
    memcpy(hdr + 8, &be_tc, 4);
    err = io_pwrite_tag(s->fd, hdr, sizeof hdr, 48, IO_TAG_HEADER);
    if (!err)
        err = qcow2_sync(s, IO_TAG_HEADER);
    if (err)
        goto out_io;

    uint64_t old_off = s->h.refcount_table_offset;
    uint64_t old_clusters = s->h.refcount_table_clusters;
    free(s->reftable);
    s->reftable = table;
    table = NULL;
    s->reftable_entries = n;
    s->h.refcount_table_offset = toff;
    s->h.refcount_table_clusters = (uint32_t)tc;
    for (uint64_t j = 0; j < nb; j++) {
        err = qcow2_meta_add(s, (a + tc + j) << s->h.cluster_bits);
        if (err)
            goto out_free;
    }
    /* The header no longer points at the old table. */
    err = qcow2_drop_clusters(s, old_off, old_clusters);
    goto out_free;

out_give_back:
    /* The header never named the new table. */
    give_back_area(s, a, tc + nb);
out_io:
    img_log("qcow2: %s: growing the refcount table to 0x%" PRIx64 ": %s",
            path, a << s->h.cluster_bits, strerror(-err));
out_free:
    free(table);
    free(blocks);
    return err;
}

int qcow2_drop_clusters(struct qcow2_state *s, uint64_t off,
                        uint64_t count)
{
    for (uint64_t c = 0; c < count; c++) {
        uint64_t rc;
        uint64_t cl = (off >> s->h.cluster_bits) + c;
        int err = qcow2_refcount_change(s, cl, -1, &rc);
        if (err)
            return err;
        if (rc == 0)
            qcow2_release_cluster(s, cl);
    }
    return 0;
}

int qcow2_refcount_change(struct qcow2_state *s, uint64_t cluster,
                          int delta, uint64_t *result)
{
    uint64_t ti = cluster >> s->rb_bits;
    struct qcow2_table *t;
    int err;

    if (ti >= s->reftable_entries || s->reftable[ti] == 0) {
        if (delta < 0) {
            qcow2_mark_corrupt(s, "freeing host cluster 0x%" PRIx64
                               " that has no refcount block",
                               cluster << s->h.cluster_bits);
            return -EIO;
        }
        err = create_block(s, ti);
        if (err)
            return err;
    }
    err = qcow2_cache_get(s->rc_cache, s->reftable[ti], &t);
    if (err)
        return err;
    uint64_t i = cluster & ((1ull << s->rb_bits) - 1);
    uint64_t v = entry_get(s, t->data, i);
    if (delta > 0 && v == s->rc_max) {
        img_log("qcow2: %s: refcount of host cluster 0x%" PRIx64
                " would overflow %u bits", s->img.path,
                cluster << s->h.cluster_bits, 1u << s->h.refcount_order);
        err = -ERANGE;
        goto out_put;
    }
    if (delta < 0 && v == 0) {
        qcow2_cache_put(s->rc_cache, &t);
        qcow2_mark_corrupt(s, "refcount of host cluster 0x%" PRIx64
                           " would drop below zero",
                           cluster << s->h.cluster_bits);
        return -EIO;
    }
    v = delta > 0 ? v + 1 : v - 1;
    entry_set(s, t->data, i, v);
    qcow2_cache_mark_dirty(s->rc_cache, t);
    if (result)
        *result = v;
out_put:
    qcow2_cache_put(s->rc_cache, &t);
    return err;
}
