/* qcow2 metadata write-back: the one place that writes dirty cached
 * tables, the L1 table and the header to the file, in the order that
 * keeps the image consistent at every instant (the write order at the top
 * of qcow2.c, from DESIGN.md's "Metadata flush ordering").
 *
 * An L2 table is written only after everything it may depend on is on
 * disk and synced: the refcount blocks counting the clusters it maps
 * (unless refcounts are lazy) and the data written into those clusters.
 * The L1 table is written only after the L2 tables it points to are
 * synced.  Queued frees wait for the sync that follows the L2 (or L1)
 * write that cleared their reference.  A cache eviction writes one L2
 * table through the same path, so it obeys the same order.
 *
 * Syncs are issued only when a write depends on them or a FLUSH asks,
 * and only when no finished sync covered every write so far (sync.c).
 *
 * FLUSH and FUA go through qcow2_flush_ordered, which keeps the metadata
 * lock out of the syncs so that reads and in-place writes go on during
 * them: tables are written in rounds around unlocked syncs, and a table
 * changed while a sync ran waits for the next round (write_l2_tables).
 * One flush runs at a time, under a flush lock taken before the metadata
 * lock.  Growing the L1 table, a close and the checker's flush keep the
 * lock throughout (qcow2_flush_locked).
 *
 * Everything here runs under the metadata lock except the public entry
 * points, which take it, and the unlocked syncs named above.
 */
#include <endian.h>
#include <errno.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#include "io.h"
#include "qcow2.h"

/* Before the first L2 or L1 write of a lazy-refcounts image: set the
 * dirty bit, since the refcounts on disk are no longer kept right. */
static int mark_dirty(struct qcow2_state *s)
{
    if (!s->lazy || s->dirty_on_disk)
        return 0;
    int err = qcow2_write_incompatible(s, s->h.incompatible |
                                    QCOW2_INCOMPAT_DIRTY);
    if (!err)
        s->dirty_on_disk = true;
    return err;
}

/* Put on disk everything an L2 table write may depend on: the dirty
 * bit (lazy), the refcount blocks (otherwise), and the data, synced. */
static int prepare_l2(struct qcow2_state *s)
{
    int err = mark_dirty(s);
    if (err)
        return err;
    if (!s->lazy && !(s->breaks & QCOW2_BREAK_REFCOUNT_BEFORE_L2)) {
        err = qcow2_cache_flush(s->rc_cache);
        if (err)
            return err;
    }
    if (s->breaks & QCOW2_BREAK_DATA_BEFORE_MAPPING)
        return 0;
    return qcow2_sync_if_needed(s, IO_TAG_REFCOUNT_BLOCK);
}

/* Write back one L2 table: the cache's callback.  Unless a flush already
 * did it for all tables, first put its dependencies on disk. */
static int write_l2(void *opaque, uint64_t offset, const uint8_t *data)
{
    struct qcow2_state *s = opaque;
    int err;

    if (qcow2_writes_refused(s))
        return -EIO;
    if (!s->in_l2_flush) {
        err = prepare_l2(s);
        if (err)
            return err;
    }
    err = io_pwrite_tag(s->fd, data, s->cluster_size, offset, IO_TAG_L2);
    if (err) {
        img_log("qcow2: %s: writing L2 table at 0x%" PRIx64 ": %s",
                s->img.path, offset, strerror(-err));
        return err;
    }
    qcow2_note_write(s);
    return 0;
}

void qcow2_flush_setup(struct qcow2_state *s)
{
    qcow2_cache_set_writeback(s->cache, write_l2, s);
}

int qcow2_write_l2_now(struct qcow2_state *s, uint64_t offset,
                       const uint8_t *data)
{
    int err = io_pwrite_tag(s->fd, data, s->cluster_size, offset,
                            IO_TAG_L2);
    if (!err)
        qcow2_note_write(s);
    return err;
}

void qcow2_l1_dirty(struct qcow2_state *s, uint32_t idx)
{
    if (s->l1_dirty_hi <= s->l1_dirty_lo) {
        s->l1_dirty_lo = idx;
        s->l1_dirty_hi = idx + 1;
        return;
    }
    if (idx < s->l1_dirty_lo)
        s->l1_dirty_lo = idx;
    if (idx >= s->l1_dirty_hi)
        s->l1_dirty_hi = idx + 1;
}

int qcow2_write_l1(struct qcow2_state *s)
{
    uint32_t lo = s->l1_dirty_lo, hi = s->l1_dirty_hi;

    if (hi <= lo)
        return 0;
    int err = mark_dirty(s);
    if (err)
        return err;
    uint64_t *buf = malloc((size_t)(hi - lo) * 8);
    if (!buf)
        return -ENOMEM;
    for (uint32_t i = lo; i < hi; i++)
        buf[i - lo] = htobe64(s->l1[i]);
    err = io_pwrite_tag(s->fd, buf, (uint64_t)(hi - lo) * 8,
                        s->l1_offset + (uint64_t)lo * 8, IO_TAG_L1);
    free(buf);
    if (err) {
        img_log("qcow2: %s: writing L1 entries %" PRIu32 "-%" PRIu32
                ": %s", s->img.path, lo, hi - 1, strerror(-err));
        return err;
    }
    qcow2_note_write(s);
    s->l1_dirty_lo = s->l1_dirty_hi = 0;
    return 0;
}

/* Every dirty L2 table to disk, after what they depend on, lock held
 * throughout; 0 or -errno. */
static int write_all_l2(struct qcow2_state *s)
{
    int err = prepare_l2(s);
    if (err)
        return err;
    s->in_l2_flush = true;
    err = qcow2_cache_flush(s->cache);
    s->in_l2_flush = false;
    return err;
}

int qcow2_flush_locked(struct qcow2_state *s, enum io_tag final)
{
    int err;

    if (qcow2_writes_refused(s))
        return -EIO;
    bool l2_dirty = qcow2_cache_has_dirty(s->cache);
    bool l1_dirty = s->l1_dirty_hi > s->l1_dirty_lo;

    if (l2_dirty) {
        err = write_all_l2(s);
        if (err)
            return err;
    }
    if (l1_dirty) {
        err = qcow2_sync_if_needed(s, IO_TAG_L2);
        if (!err)
            err = qcow2_write_l1(s);
        if (err)
            return err;
    }
    if (s->n_frees > s->n_ready_frees) {
        /* Every cleared reference is written: once synced, the frees
         * may proceed. */
        err = qcow2_sync_if_needed(s, l1_dirty ? IO_TAG_L1 : IO_TAG_L2);
        if (err)
            return err;
        qcow2_frees_reached(s, QCOW2_FREE_AFTER_L2);
        qcow2_frees_reached(s, QCOW2_FREE_AFTER_L1);
    }
    err = qcow2_apply_frees(s);
    if (err)
        return err;
    if (!s->lazy) {
        err = qcow2_cache_flush(s->rc_cache);
        if (err)
            return err;
    }
    return qcow2_sync_if_needed(s, final);
}

/* Rounds of L2 write-back with the sync dropped out of the lock before
 * the rest is done with the lock held throughout. */
#define UNLOCKED_ROUNDS 3

/* Sync with the metadata lock dropped (the flush lock stays held). */
static int sync_unlocked(struct qcow2_state *s, enum io_tag tag)
{
    qcow2_unlock(s);
    int err = qcow2_sync_if_needed(s, tag);
    qcow2_lock(s);
    return err;
}

/* Write back the L2 tables dirty at change start or before, dropping the
 * lock for the syncs they wait for.  Each round takes the number of the
 * latest change, writes the refcount blocks (so every cluster an L2
 * change up to then allocated is counted in the file), syncs unlocked
 * (that covers the refcount blocks and the data of every linked cluster,
 * linked only once its data write had completed), then writes the
 * tables not changed since the number was taken: what they map was all
 * on disk before the sync.  Tables changed meanwhile wait for the next
 * round; after a few rounds the rest is written with the lock held. */
static int write_l2_tables(struct qcow2_state *s, uint64_t start)
{
    int err = 0;

    for (int round = 0; round < UNLOCKED_ROUNDS; round++) {
        if (!qcow2_cache_dirty_upto(s->cache, start))
            return 0;
        err = mark_dirty(s);
        if (err)
            return err;
        uint64_t seq = qcow2_cache_seq(s->cache);
        if (!s->lazy && !(s->breaks & QCOW2_BREAK_REFCOUNT_BEFORE_L2)) {
            err = qcow2_cache_flush(s->rc_cache);
            if (err)
                return err;
        }
        if (!(s->breaks & QCOW2_BREAK_DATA_BEFORE_MAPPING)) {
            err = sync_unlocked(s, IO_TAG_REFCOUNT_BLOCK);
            if (err)
                return err;
        }
        if (qcow2_writes_refused(s))
            return -EIO;
        s->in_l2_flush = true;
        err = qcow2_cache_flush_upto(s->cache, seq);
        s->in_l2_flush = false;
        if (err)
            return err;
    }
    if (!qcow2_cache_dirty_upto(s->cache, start))
        return 0;
    return write_all_l2(s);
}

int qcow2_flush_ordered(struct qcow2_state *s, enum io_tag final)
{
    int err;

    /* Lock order: the flush lock first. */
    qcow2_unlock(s);
    pthread_mutex_lock(&s->flush_lock);
    qcow2_lock(s);
    if (qcow2_writes_refused(s)) {
        err = -EIO;
        goto out_unlock_flush;
    }
    err = write_l2_tables(s, qcow2_cache_seq(s->cache));
    if (err)
        goto out_unlock_flush;
    if (s->l1_dirty_hi > s->l1_dirty_lo || s->n_frees > s->n_ready_frees) {
        /* New L2 tables to link, or cleared references whose frees wait
         * for a sync: rare enough to do as before, lock held. */
        err = qcow2_flush_locked(s, final);
        goto out_unlock_flush;
    }
    err = qcow2_apply_frees(s);
    if (!err && !s->lazy)
        err = qcow2_cache_flush(s->rc_cache);
    if (!err)
        err = sync_unlocked(s, final);
out_unlock_flush:
    pthread_mutex_unlock(&s->flush_lock);
    return err;
}

int qcow2_metadata_flush(struct qcow2_state *s)
{
    if (!s->writable)
        return 0;
    qcow2_lock(s);
    int err = qcow2_flush_locked(s, IO_TAG_FLUSH);
    qcow2_unlock(s);
    return err;
}

/* Rebuild the set of metadata clusters from the L1 and refcount
 * tables. */
static int rebuild_meta(struct qcow2_state *s)
{
    qcow2_meta_clear(s);
    for (uint32_t i = 0; i < s->l1_size; i++) {
        uint64_t off = s->l1[i] & QCOW2_L1E_OFFSET_MASK;
        if (off) {
            int err = qcow2_meta_add(s, off);
            if (err)
                return err;
        }
    }
    return 0;
}

int qcow2_writable_setup(struct qcow2_state *s, size_t rc_cache_bytes)
{
    int err = rebuild_meta(s);
    if (!err)
        err = qcow2_refcount_open(s, rc_cache_bytes);
    if (!err)
        err = qcow2_refcount_verify_metadata(s);
    if (err)
        return err;
    /* Past the end of the file, refcounts may still count clusters (a
     * crash after a refcount block reached the disk but not the data):
     * the frontier starts past both. */
    uint64_t rc_end;
    err = qcow2_refcount_end(s, &rc_end);
    if (err)
        return err;
    s->open_size = s->file_size;
    s->frontier = (s->file_size + s->cluster_mask) >> s->h.cluster_bits;
    if (s->frontier < rc_end)
        s->frontier = rc_end;
    s->scan = 0;
    s->scan_end = s->frontier;
    s->n_free_ext = 0;
    return 0;
}

void qcow2_metadata_drop_caches(struct qcow2_state *s)
{
    qcow2_lock(s);
    qcow2_cache_drop_all(s->cache);
    if (s->writable) {
        qcow2_cache_drop_all(s->rc_cache);
        s->n_frees = s->n_ready_frees = 0;
        s->l1_dirty_lo = s->l1_dirty_hi = 0;
        int err = qcow2_writable_setup(s, 0);
        if (err) {
            qcow2_mark_corrupt(s, "rereading metadata after a repair: %s",
                               strerror(-err));
        }
    }
    qcow2_unlock(s);
}

int qcow2_close_writable(struct qcow2_state *s)
{
    int err;

    qcow2_lock(s);
    if (qcow2_writes_refused(s)) {
        err = -EIO;
        goto out_unlock;
    }
    /* No request runs any more, nor will the loop thread read again. */
    s->nowait_calls++;
    err = qcow2_flush_locked(s, IO_TAG_FLUSH);
    if (!err)
        err = qcow2_bitmaps_store(s, false);
    if (!err)
        err = qcow2_apply_frees(s);
    if (!err)
        err = qcow2_cache_flush(s->rc_cache);
    if (!err)
        err = qcow2_sync_if_needed(s, IO_TAG_REFCOUNT_BLOCK);
    if (!err && s->dirty_on_disk) {
        err = qcow2_write_incompatible(s, s->h.incompatible &
                                    ~QCOW2_INCOMPAT_DIRTY);
        if (!err)
            s->dirty_on_disk = false;
    }
    uint64_t used = s->frontier << s->h.cluster_bits;
    if (used < s->open_size)
        used = s->open_size;
    if (!err && s->file_size > used &&
        io_truncate(s->fd, used, IO_TAG_ALLOC) == 0)
        s->file_size = used;
out_unlock:
    qcow2_unlock(s);
    return err;
}

int qcow2_grow_l1(struct qcow2_state *s, uint64_t need)
{
    const char *path = s->img.path;
    uint64_t max = QCOW2_MAX_L1_BYTES / 8;
    uint64_t n = (uint64_t)s->l1_size + s->l1_size / 2;
    int err;

    if (need > max) {
        img_log("qcow2: %s: L1 table would need %" PRIu64 " entries "
                "(max %" PRIu64 ")", path, need, max);
        return -EFBIG;
    }
    if (n < need)
        n = need;
    if (n > max)
        n = max;
    uint64_t per_cluster = s->cluster_size / 8;
    n = (n + per_cluster - 1) / per_cluster * per_cluster;
    if (n > max)
        n = max;
    uint64_t clusters = (n * 8 + s->cluster_mask) >> s->h.cluster_bits;

    /* The new table may point only at L2 tables already on disk. */
    err = qcow2_flush_locked(s, IO_TAG_L1_GROW);
    if (err)
        return err;
    uint64_t first = s->frontier, counted;
    err = qcow2_take_frontier(s, first, clusters);
    if (err)
        return err;
    err = qcow2_count_taken(s, first, clusters, &counted);
    if (err) {
        qcow2_give_back(s, first, clusters, counted);
        return err;
    }
    uint64_t *l1 = calloc(n, 8);
    uint64_t *buf = calloc(clusters, s->cluster_size);
    if (!l1 || !buf) {
        err = -ENOMEM;
        goto out_give_back;
    }
    memcpy(l1, s->l1, (size_t)s->l1_size * 8);
    for (uint64_t i = 0; i < n; i++)
        buf[i] = htobe64(l1[i]);
    uint64_t off = first << s->h.cluster_bits;
    err = io_pwrite_tag(s->fd, buf, clusters * s->cluster_size, off,
                        IO_TAG_L1_GROW);
    if (!err)
        err = qcow2_cache_flush(s->rc_cache);
    if (!err)
        err = qcow2_sync(s, IO_TAG_L1_GROW);
    if (err) {
        img_log("qcow2: %s: growing the L1 table to %" PRIu64 " entries: "
                "%s", path, n, strerror(-err));
        goto out_give_back;
    }

    uint8_t hdr[12];
    uint32_t be_n = htobe32((uint32_t)n);
    uint64_t be_off = htobe64(off);
    memcpy(hdr, &be_n, 4);
    memcpy(hdr + 4, &be_off, 8);
    err = io_pwrite_tag(s->fd, hdr, sizeof hdr, 36, IO_TAG_HEADER);
    if (!err)
        err = qcow2_sync(s, IO_TAG_HEADER);
    if (err)
        goto out_io;

    uint64_t old_off = s->l1_offset;
    uint64_t old_clusters = ((uint64_t)s->l1_size * 8 + s->cluster_mask) >>
                            s->h.cluster_bits;
    free(s->l1);
    s->l1 = l1;
    l1 = NULL;
    s->l1_size = (uint32_t)n;
    s->l1_offset = off;
    s->h.l1_size = (uint32_t)n;
    s->h.l1_table_offset = off;
    /* The header no longer points at the old table. */
    if (old_off)
        err = qcow2_drop_clusters(s, old_off, old_clusters);
    goto out_free;

out_give_back:
    /* The header never named the new table. */
    qcow2_give_back(s, first, clusters, clusters);
    goto out_free;
out_io:
    img_log("qcow2: %s: growing the L1 table to %" PRIu64 " entries: %s",
            path, n, strerror(-err));
out_free:
    free(l1);
    free(buf);
    return err;
}
