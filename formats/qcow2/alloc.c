/* qcow2 host cluster allocation: finding free clusters, growing the
 * file, and giving clusters back once nothing can reach them.
 *
 * Free clusters come from three places, in this order: clusters freed
 * while the image is open (an in-memory list of runs), then a scan of the
 * refcounts that moves forward only, from the start of the file to the
 * frontier, then the frontier itself: the first cluster past everything
 * the image used at open and allocated since.  Every cluster is looked at
 * by the scan at most once per open, the list is used from its end, and
 * the frontier only moves forward, so finding a cluster costs O(1)
 * amortized however large the image grows.  Clusters taken at the
 * frontier were never written: they read as zeros, which spares the
 * write path from writing the zeros of a partial first write.
 *
 * The file grows ahead of the frontier in steps (truncate) that grow
 * with it, so that lookups see the clusters inside the file and large
 * images grow with few system calls.
 *
 * Frees are queued, never applied at once: a host cluster's refcount may
 * drop only after the L2 (or L1) entry that referenced it was cleared on
 * disk and synced, and it may be handed out again only after every
 * request that might still read or write it has ended (inflight.c).  A
 * cluster whose refcount reaches zero is punched out of the file and
 * joins the free list.
 *
 * The invariant the allocator rests on: a cluster is handed out only
 * while nothing counts it and nothing else holds it.  Three sources keep
 * it: the free list holds only clusters whose refcount reached 0 and
 * that nothing may touch any more; the scan covers only [0, scan_end),
 * the clusters below the frontier as it was at open, where a refcount of
 * 0 means free (a cluster taken there is passed by the scan before it is
 * counted); and clusters past scan_end were all taken from the frontier
 * since open, so they are counted, or freed into the free list, or held
 * uncounted by whoever took them (a refcount block being created, a
 * table being moved), and no scan ever looks at them.  Every count of a
 * newly taken cluster goes through qcow2_count_taken, which checks that
 * it goes from 0 to 1: a cluster handed out twice is caught there, logged
 * and the image marked corrupt, rather than written over.
 *
 * A set of the clusters holding L2 tables and refcount blocks, with the
 * header's fixed tables, lets a write refuse to touch metadata: an L2
 * entry that points there marks the image corrupt.
 *
 * With refcount.c this is one unit, the allocator: counting a cluster
 * may need a new refcount block, whose cluster comes from here.  The
 * rest of the driver sees the unit through qcow2.h's alloc.c and
 * refcount.c sections; below it sit only the table cache, the request
 * tracking of inflight.c and the syncs of sync.c.
 *
 * Everything here runs under the metadata lock.
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#include "io.h"
#include "qcow2.h"

/* The file grows by an eighth of its size at a time, by a cluster at
 * least and by this much at most. */
#define GROW_STEP_MAX   (64u << 20)

/* Queued frees beyond which a write forces a metadata flush. */
#define FREES_FLUSH_AT  4096

/* ---- the set of metadata clusters ---- */

static size_t set_hash(uint64_t v, size_t cap)
{
    return (size_t)((v * 0x9e3779b97f4a7c15ull) >> 20) & (cap - 1);
}

static int set_grow(struct qcow2_offset_set *m)
{
    size_t cap = m->cap ? m->cap * 2 : 64;
    uint64_t *slots = calloc(cap, sizeof *slots);
    if (!slots)
        return -ENOMEM;
    for (size_t i = 0; i < m->cap; i++) {
        if (!m->slots[i])
            continue;
        size_t h = set_hash(m->slots[i] - 1, cap);
        while (slots[h])
            h = (h + 1) & (cap - 1);
        slots[h] = m->slots[i];
    }
    free(m->slots);
    m->slots = slots;
    m->cap = cap;
    return 0;
}

static bool set_has(const struct qcow2_offset_set *m, uint64_t v)
{
    if (!m->cap)
        return false;
    for (size_t h = set_hash(v, m->cap); m->slots[h];
         h = (h + 1) & (m->cap - 1))
        if (m->slots[h] == v + 1)
            return true;
    return false;
}

int qcow2_meta_add(struct qcow2_state *s, uint64_t offset)
{
    struct qcow2_offset_set *m = &s->meta;
    uint64_t v = offset >> s->h.cluster_bits;

    if (set_has(m, v))
        return 0;
    int fault = io_fault_point(IO_TAG_META_SET);
    if (fault)
        return fault;
    if ((m->n + 1) * 2 > m->cap) {
        int err = set_grow(m);
        if (err)
            return err;
    }
    size_t h = set_hash(v, m->cap);
    while (m->slots[h])
        h = (h + 1) & (m->cap - 1);
    m->slots[h] = v + 1;
    m->n++;
    return 0;
}

/* Remove cluster index v from the set (backward-shift deletion). */
static void meta_remove(struct qcow2_offset_set *m, uint64_t v)
{
    if (!m->cap)
        return;
    size_t h = set_hash(v, m->cap);
    while (m->slots[h] && m->slots[h] != v + 1)
        h = (h + 1) & (m->cap - 1);
    if (!m->slots[h])
        return;
    m->slots[h] = 0;
    m->n--;
    for (size_t j = (h + 1) & (m->cap - 1); m->slots[j];
         j = (j + 1) & (m->cap - 1)) {
        size_t home = set_hash(m->slots[j] - 1, m->cap);
        /* Move slot j back to h unless its home lies in (h, j]. */
        bool stays = h <= j ? (home > h && home <= j)
                            : (home > h || home <= j);
        if (stays)
            continue;
        m->slots[h] = m->slots[j];
        m->slots[j] = 0;
        h = j;
    }
}

void qcow2_meta_clear(struct qcow2_state *s)
{
    free(s->meta.slots);
    memset(&s->meta, 0, sizeof s->meta);
}

/* Whether [off, off + len) overlaps the clusters holding [a, a + alen):
 * a table owns its whole clusters. */
static bool hits(const struct qcow2_state *s, uint64_t off, uint64_t len,
                 uint64_t a, uint64_t alen)
{
    if (alen == 0)
        return false;
    uint64_t end = (a + alen + s->cluster_mask) & ~s->cluster_mask;
    a &= ~s->cluster_mask;
    return off < end && a < off + len;
}

const char *qcow2_metadata_at(const struct qcow2_state *s, uint64_t off,
                              uint64_t len)
{
    const struct qcow2_header *h = &s->h;

    if (s->data_fd != s->fd)
        return NULL;        /* guest data lives in another file */
    if (hits(s, off, len, 0, s->cluster_size))
        return "the header";
    if (hits(s, off, len, s->l1_offset, (uint64_t)s->l1_size * 8))
        return "the L1 table";
    if (hits(s, off, len, h->refcount_table_offset,
             (uint64_t)h->refcount_table_clusters * s->cluster_size))
        return "the refcount table";
    if (h->nb_snapshots &&
        hits(s, off, len, h->snapshots_offset, s->snapshots_size))
        return "the snapshot table";
    if (h->has_fde_ext && hits(s, off, len, h->fde_offset, h->fde_length))
        return "the encryption header";
    for (uint32_t i = 0; i < s->nb_snapshots; i++)
        if (hits(s, off, len, s->snapshots[i].l1_table_offset,
                 (uint64_t)s->snapshots[i].l1_size * 8))
            return "a snapshot's L1 table";
    uint64_t first = off >> h->cluster_bits;
    uint64_t last = (off + len - 1) >> h->cluster_bits;
    for (uint64_t c = first; c <= last; c++)
        if (set_has(&s->meta, c))
            return "an L2 table or refcount block";
    return NULL;
}

/* ---- the free list ---- */

/* Add clusters [start, start + count) to the free list. */
static int ext_push(struct qcow2_state *s, uint64_t start, uint64_t count)
{
    if (s->n_free_ext > 0) {
        struct qcow2_extent *e = &s->free_ext[s->n_free_ext - 1];
        if (e->start + e->count == start) {
            e->count += count;
            return 0;
        }
        if (start + count == e->start) {
            e->start = start;
            e->count += count;
            return 0;
        }
    }
    if (s->n_free_ext == s->cap_free_ext) {
        size_t cap = s->cap_free_ext ? 2 * s->cap_free_ext : 64;
        struct qcow2_extent *v = realloc(s->free_ext, cap * sizeof *v);
        if (!v)
            return -ENOMEM;
        s->free_ext = v;
        s->cap_free_ext = cap;
    }
    s->free_ext[s->n_free_ext++] = (struct qcow2_extent){ start, count };
    return 0;
}

/* ---- finding clusters ---- */

/* Make the file at least end bytes long. */
static int grow_file(struct qcow2_state *s, uint64_t end)
{
    if (end <= s->file_size)
        return 0;
    uint64_t step = s->file_size / 8;
    if (step > GROW_STEP_MAX)
        step = GROW_STEP_MAX;
    if (step < s->cluster_size)
        step = s->cluster_size;
    uint64_t size = (end + step - 1) / step * step;
    int err = io_truncate(s->fd, size, IO_TAG_ALLOC);
    if (err) {
        img_log("qcow2: %s: growing the file to %" PRIu64 " bytes: %s",
                s->img.path, size, strerror(-err));
        return err;
    }
    qcow2_note_write(s);
    __atomic_store_n(&s->file_size, size, __ATOMIC_RELAXED);
    if (s->data_fd == s->fd)
        s->data_file_size = size;
    return 0;
}

int qcow2_take_frontier(struct qcow2_state *s, uint64_t first,
                        uint64_t count)
{
    if (first != s->frontier)
        return -EINVAL;
    int err = grow_file(s, (first + count) << s->h.cluster_bits);
    if (err)
        return err;
    s->frontier = first + count;
    return 0;
}

int qcow2_pick_clusters(struct qcow2_state *s, uint64_t n, uint64_t *start,
                        uint64_t *got, bool *fresh)
{
    int err;

    *fresh = false;
    if (s->n_free_ext > 0) {
        struct qcow2_extent *e = &s->free_ext[s->n_free_ext - 1];
        uint64_t k = e->count < n ? e->count : n;
        *start = e->start;
        *got = k;
        e->start += k;
        e->count -= k;
        if (e->count == 0)
            s->n_free_ext--;
        return 0;
    }
    while (s->scan < s->scan_end) {
        uint64_t c;
        err = qcow2_refcount_scan(s, s->scan, s->scan_end, &c);
        if (err)
            return err;
        s->scan = c;
        if (c >= s->scan_end)
            break;
        if (qcow2_metadata_at(s, c << s->h.cluster_bits, s->cluster_size)) {
            s->scan = c + 1;    /* metadata with refcount 0: leave it */
            continue;
        }
        uint64_t k = 1;
        while (k < n && c + k < s->scan_end) {
            uint64_t rc;
            err = qcow2_refcount_get(s, c + k, &rc);
            if (err)
                return err;
            if (rc != 0 || qcow2_metadata_at(s, (c + k) << s->h.cluster_bits,
                                             s->cluster_size))
                break;
            k++;
        }
        s->scan = c + k;
        *start = c;
        *got = k;
        return 0;
    }
    *start = s->frontier;
    err = qcow2_take_frontier(s, s->frontier, n);
    if (err)
        return err;
    *got = n;
    *fresh = true;
    return 0;
}

int qcow2_count_taken(struct qcow2_state *s, uint64_t first,
                      uint64_t count, uint64_t *counted)
{
    *counted = 0;
    for (uint64_t c = first; c < first + count; c++) {
        uint64_t rc;
        int err = qcow2_refcount_change(s, c, 1, &rc);
        if (err == -ERANGE) {
            /* At the maximum already: counted, and then some. */
            qcow2_mark_corrupt(s, "allocator handed out host cluster 0x%"
                               PRIx64 " whose refcount is at its maximum",
                               c << s->h.cluster_bits);
            return -EIO;
        }
        if (err)
            return err;
        *counted = c - first + 1;
        if (rc != 1) {
            qcow2_mark_corrupt(s, "allocator handed out host cluster 0x%"
                               PRIx64 " whose refcount was %" PRIu64,
                               c << s->h.cluster_bits, rc - 1);
            return -EIO;
        }
    }
    return 0;
}

int qcow2_alloc_clusters(struct qcow2_state *s, uint64_t n, uint64_t *off,
                         uint64_t *got, bool *fresh)
{
    uint64_t start, k, counted;

    int err = qcow2_pick_clusters(s, n, &start, &k, fresh);
    if (err)
        return err;
    err = qcow2_count_taken(s, start, k, &counted);
    if (err) {
        qcow2_give_back(s, start, k, counted);
        return err;
    }
    *off = start << s->h.cluster_bits;
    *got = k;
    return 0;
}

void qcow2_give_back(struct qcow2_state *s, uint64_t first, uint64_t count,
                     uint64_t counted)
{
    if (s->corrupt)
        return;     /* nothing is allocated again */
    if (counted > 0 &&
        qcow2_queue_free(s, first << s->h.cluster_bits,
                         counted << s->h.cluster_bits, QCOW2_FREE_READY))
        img_log("qcow2: %s: out of memory: %" PRIu64 " host clusters at 0x%"
                PRIx64 " leak until the image is reopened", s->img.path,
                counted, first << s->h.cluster_bits);
    if (count > counted &&
        ext_push(s, first + counted, count - counted) != 0)
        img_log("qcow2: %s: out of memory: %" PRIu64 " host clusters at 0x%"
                PRIx64 " leak until the image is reopened", s->img.path,
                count - counted, (first + counted) << s->h.cluster_bits);
}

/* ---- frees ---- */

/* Forget clusters [c, c + n), whose refcounts reached 0, everywhere but
 * in the free list. */
static void forget(struct qcow2_state *s, uint64_t c, uint64_t n)
{
    for (uint64_t i = c; i < c + n; i++) {
        uint64_t off = i << s->h.cluster_bits;
        if (s->cache)
            qcow2_cache_discard(s->cache, off);
        if (s->rc_cache)
            qcow2_cache_discard(s->rc_cache, off);
        meta_remove(&s->meta, i);
    }
    /* Give the space back; the contents are never read again. */
    io_fallocate(s->fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE,
                 c << s->h.cluster_bits, n << s->h.cluster_bits,
                 IO_TAG_DATA);
    if (ext_push(s, c, n) != 0)
        img_log("qcow2: %s: out of memory: %" PRIu64 " host clusters at 0x%"
                PRIx64 " leak until the image is reopened", s->img.path, n,
                c << s->h.cluster_bits);
}

void qcow2_release_cluster(struct qcow2_state *s, uint64_t c)
{
    forget(s, c, 1);
}

int qcow2_queue_free(struct qcow2_state *s, uint64_t offset, uint64_t len,
                     enum qcow2_free_wait wait)
{
    if (s->n_frees == s->cap_frees) {
        size_t cap = s->cap_frees ? 2 * s->cap_frees : 64;
        struct qcow2_free *v = realloc(s->frees, cap * sizeof *v);
        if (!v)
            return -ENOMEM;
        s->frees = v;
        s->cap_frees = cap;
    }
    if (wait == QCOW2_FREE_AFTER_L2 &&
        (s->breaks & QCOW2_BREAK_L2_BEFORE_REFCOUNT))
        wait = QCOW2_FREE_READY;
    uint64_t guard = qcow2_nowait_guard(s);
    if (s->n_frees > 0 && ((offset | len) & s->cluster_mask) == 0) {
        /* Whole clusters right after the last free, queued alike: one
         * entry (a trim of a large range queues one, not thousands). */
        struct qcow2_free *f = &s->frees[s->n_frees - 1];
        if (f->wait == wait && f->seq == s->req_seq &&
            f->nowait_call == guard && f->offset + f->len == offset &&
            ((f->offset | f->len) & s->cluster_mask) == 0) {
            f->len += len;
            return 0;
        }
    }
    s->frees[s->n_frees++] = (struct qcow2_free){
        .offset = offset,
        .len = len,
        .seq = s->req_seq,
        .nowait_call = guard,
        .wait = wait,
    };
    if (wait == QCOW2_FREE_READY)
        s->n_ready_frees++;
    return 0;
}

void qcow2_frees_reached(struct qcow2_state *s, enum qcow2_free_wait wait)
{
    for (size_t i = 0; i < s->n_frees; i++) {
        if (s->frees[i].wait == wait) {
            s->frees[i].wait = QCOW2_FREE_READY;
            s->n_ready_frees++;
        }
    }
}

bool qcow2_frees_pressing(const struct qcow2_state *s)
{
    return s->n_frees >= FREES_FLUSH_AT;
}

/* Drop the refcount of every host cluster f touches, releasing runs of
 * clusters that reach 0 together.  On failure f shrinks to the clusters
 * not done yet. */
static int apply_free(struct qcow2_state *s, struct qcow2_free *f)
{
    uint64_t first = f->offset >> s->h.cluster_bits;
    uint64_t last = (f->offset + f->len - 1) >> s->h.cluster_bits;
    uint64_t end = f->offset + f->len;
    uint64_t run = 0, run_start = 0;
    int err = 0;

    for (uint64_t c = first; c <= last; c++) {
        uint64_t rc;
        err = qcow2_refcount_change(s, c, -1, &rc);
        if (err) {
            uint64_t done = c << s->h.cluster_bits;
            if (done > f->offset) {
                f->offset = done;
                f->len = end - done;
            }
            break;
        }
        if (rc != 0)
            continue;
        if (run > 0 && run_start + run == c) {
            run++;
            continue;
        }
        if (run > 0)
            forget(s, run_start, run);
        run_start = c;
        run = 1;
    }
    if (run > 0)
        forget(s, run_start, run);
    return err;
}

int qcow2_apply_frees(struct qcow2_state *s)
{
    int err = 0;
    size_t j = 0;

    if (s->n_ready_frees == 0)
        return 0;
    for (size_t i = 0; i < s->n_frees; i++) {
        struct qcow2_free *f = &s->frees[i];
        if (!err && !s->corrupt && qcow2_free_is_quiet(s, f)) {
            err = apply_free(s, f);
            if (!err) {
                s->n_ready_frees--;
                continue;
            }
        }
        s->frees[j++] = *f;
    }
    s->n_frees = j;
    return err;
}

void qcow2_req_finish(struct qcow2_state *s, struct qcow2_req *r)
{
    /* Only the oldest request's end can release a quarantined free. */
    if (qcow2_req_end(s, r))
        qcow2_apply_frees(s);
}
