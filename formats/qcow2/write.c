/* qcow2 guest writes: in place where the guest cluster already owns its
 * host cluster, into newly allocated host clusters everywhere else.
 *
 * A write is cut into steps, each inside one L2 table.  Under the
 * metadata lock a step looks up its clusters and decides:
 *
 *   in place   a standard cluster with refcount one (COPIED) whose touched
 *              subclusters are all allocated: the data goes to the host
 *              cluster with no metadata change; consecutive such clusters
 *              with consecutive host clusters make one write;
 *   allocate   anything else (unallocated, zero, compressed, shared with a
 *              snapshot, subclusters not yet allocated): the step waits
 *              for in-flight records on its first cluster, registers its
 *              own for the clusters it takes, allocates a run of host
 *              clusters (or reuses the one the cluster owns, when only
 *              its subclusters or its zero flag change), and remembers
 *              the old entries of the first and last cluster.
 *
 * Then, with the lock dropped, an allocating step writes the copy-on-
 * write head (from the start of the first cluster, or of the first
 * subcluster it allocates, up to the guest data), the guest data and the
 * tail as one vectored write.  Head and tail come from what the guest
 * saw before: the old host cluster, the decompressed cluster, the backing
 * chain, or zeros; zeros are not written at all into clusters taken at
 * the frontier, which read as zeros already.  Last, under the lock, the
 * step links the new clusters into the L2 table (dirty, written back
 * later by flush.c after the data and refcounts are synced), queues the
 * old clusters' frees, and removes its record, waking its waiters.
 *
 * Encrypted images encrypt every sector with its host (LUKS) or guest
 * (AES) offset, through a bounce buffer; a write that covers part of a
 * sector reads, decrypts, merges and rewrites it under an in-flight
 * record, so concurrent writers to one sector cannot lose each other's
 * bytes.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>
#include <sys/uio.h>

#include "crypto.h"
#include "io.h"
#include "qcow2.h"

/* Largest run of clusters one allocating step takes (bytes). */
#define MAX_ALLOC_BYTES         (32u << 20)
#define MAX_CRYPTO_ALLOC_BYTES  (1u << 20)

/* One step of a write, as planned under the lock. */
struct step {
    bool alloc;
    uint64_t off;               /* guest bytes [off, off + len) */
    uint64_t len;
    uint64_t host;              /* in place: host offset of off;
                                 * allocate: host offset of cluster 0 */
    struct qcow2_inflight rec;
    bool has_rec;

    /* allocate only: */
    uint32_t l1_index;
    uint64_t first;             /* guest cluster index */
    uint64_t count;             /* clusters */
    bool fresh;                 /* host clusters read as zeros */
    bool reuse;                 /* the cluster keeps its host cluster */
    bool new_clusters;          /* host clusters allocated by this step */
    struct qcow2_l2e head_e;    /* old entry of the first cluster */
    struct qcow2_l2e tail_e;    /* old entry of the last cluster */
    uint64_t start;             /* guest bytes written: [start, end) */
    uint64_t end;
};

/* The subcluster mask of guest bytes [a, b) of the cluster at gc. */
static uint32_t touched(const struct qcow2_state *s, uint64_t gc,
                        uint64_t a, uint64_t b)
{
    uint32_t sa = (uint32_t)((a - gc) >> s->sc_bits);
    uint32_t sb = (uint32_t)((b - gc - 1) >> s->sc_bits);
    uint64_t m = ((2ull << sb) - 1) & ~((1ull << sa) - 1);
    return (uint32_t)m;
}

bool qcow2_in_place(const struct qcow2_state *s, const struct qcow2_l2e *e,
                    uint64_t gc, uint64_t a, uint64_t b)
{
    if (e->type != QCOW2_C_NORMAL)
        return false;
    if (!(e->raw & QCOW2_L2E_COPIED) &&
        !(s->h.incompatible & QCOW2_INCOMPAT_DATA_FILE))
        return false;
    if (!s->ext_l2)
        return true;
    uint32_t m = touched(s, gc, a, b);
    return ((uint32_t)e->bitmap & m) == m;
}

/* Whether entry e keeps its host cluster when written: it owns one with
 * refcount one, or the data file fixes it. */
static bool keeps_host(const struct qcow2_state *s, const struct qcow2_l2e *e)
{
    if (s->h.incompatible & QCOW2_INCOMPAT_DATA_FILE)
        return e->type != QCOW2_C_COMPRESSED;
    if (!(e->raw & QCOW2_L2E_COPIED))
        return false;
    return e->type == QCOW2_C_NORMAL ||
           (e->type == QCOW2_C_ZERO && e->host != 0);
}

/* Subclusters holding data in entry e that a new host cluster must
 * carry over. */
static uint32_t old_alloc(const struct qcow2_l2e *e)
{
    if (e->type == QCOW2_C_COMPRESSED)
        return UINT32_MAX;
    if (e->type == QCOW2_C_NORMAL)
        return (uint32_t)e->bitmap;
    return 0;
}

/* Guest offset where writing cluster gc (entry e) must start, for a
 * write starting at a. */
static uint64_t region_start(const struct qcow2_state *s,
                             const struct qcow2_l2e *e, bool reuse,
                             uint64_t gc, uint64_t a)
{
    if (!s->ext_l2)
        return gc;
    uint32_t sa = (uint32_t)((a - gc) >> s->sc_bits);
    if (reuse) {
        if (((uint32_t)e->bitmap >> sa) & 1)
            return a;           /* that subcluster already holds data */
        return gc + ((uint64_t)sa << s->sc_bits);
    }
    uint32_t al = old_alloc(e);
    uint32_t first = al ? (uint32_t)__builtin_ctz(al) : 32;
    if (first > sa)
        first = sa;
    return gc + ((uint64_t)first << s->sc_bits);
}

/* Guest offset where writing cluster gc (entry e) must end, for a write
 * ending at b (gc < b <= gc + cluster size). */
static uint64_t region_end(const struct qcow2_state *s,
                           const struct qcow2_l2e *e, bool reuse,
                           uint64_t gc, uint64_t b)
{
    if (!s->ext_l2)
        return gc + s->cluster_size;
    uint32_t sb = (uint32_t)((b - gc - 1) >> s->sc_bits);
    if (reuse) {
        if (((uint32_t)e->bitmap >> sb) & 1)
            return b;
        return gc + ((uint64_t)(sb + 1) << s->sc_bits);
    }
    uint32_t al = old_alloc(e);
    uint32_t last = al ? 31 - (uint32_t)__builtin_clz(al) : 0;
    if (last < sb)
        last = sb;
    return gc + ((uint64_t)(last + 1) << s->sc_bits);
}

int qcow2_writable_l2(struct qcow2_state *s, uint32_t l1_index,
                      uint64_t *l2_off)
{
    uint64_t old = s->l1[l1_index];
    uint64_t ooff = old & QCOW2_L1E_OFFSET_MASK;
    struct qcow2_table *t = NULL, *o = NULL;
    uint64_t noff, got;
    bool fresh;
    int err;

    if (ooff && (old & QCOW2_L1E_COPIED)) {
        *l2_off = ooff;
        return 0;
    }
    err = qcow2_alloc_clusters(s, 1, &noff, &got, &fresh);
    if (err)
        return err;
    const char *what = qcow2_metadata_at(s, noff, s->cluster_size);
    if (what) {
        qcow2_mark_corrupt(s, "new L2 table at 0x%" PRIx64 " would "
                           "overwrite %s (refcount 0)", noff, what);
        return -EIO;
    }
    err = qcow2_meta_add(s, noff);
    if (err)
        goto out_give_back;
    err = qcow2_cache_get_new(s->cache, noff, &t);
    if (err)
        goto out_give_back;
    if (ooff) {
        /* Shared with a snapshot: the copy is ours alone. */
        err = qcow2_cache_get(s->cache, ooff, &o);
        if (err) {
            qcow2_cache_put(s->cache, &t);
            goto out_give_back;
        }
        memcpy(t->data, o->data, s->cluster_size);
        qcow2_cache_put(s->cache, &o);
    }
    qcow2_cache_put(s->cache, &t);
    s->l1[l1_index] = noff | QCOW2_L1E_COPIED;
    qcow2_l1_dirty(s, l1_index);
    /* Only now does the L1 entry stop naming the old table: its free
     * waits for that entry to reach the disk.  Failing here leaks. */
    if (ooff && qcow2_queue_free(s, ooff, s->cluster_size,
                                 QCOW2_FREE_AFTER_L1))
        img_log("qcow2: %s: out of memory: L2 table 0x%" PRIx64 " leaks "
                "until the image is reopened", s->img.path, ooff);
    if (s->breaks & QCOW2_BREAK_L2_BEFORE_L1) {
        err = qcow2_write_l1(s);
        if (err)
            return err;
    }
    *l2_off = noff;
    return 0;

out_give_back:
    /* Freed once nothing can touch it; the free forgets the table. */
    qcow2_give_back(s, noff >> s->h.cluster_bits, 1, 1);
    return err;
}

int qcow2_entry_for_write(struct qcow2_state *s, const uint8_t *t,
                          uint64_t l2_off, uint32_t idx, uint64_t gc,
                          struct qcow2_l2e *e)
{
    int err = qcow2_decode_l2e(s, false, t, l2_off, idx, gc, e);
    if (err)
        qcow2_mark_corrupt(s, "bad L2 entry for guest offset 0x%" PRIx64,
                           gc);
    return err;
}

int qcow2_l2_for_write(struct qcow2_state *s, uint64_t l1_index,
                       uint64_t *l2_off)
{
    int err = qcow2_l2_offset(s, l1_index, false, l2_off);
    if (err)
        qcow2_mark_corrupt(s, "bad L1 entry %" PRIu64, l1_index);
    return err;
}

/* Plan the in-place part at the start of [off, end) from table t, if
 * any.  Returns the bytes found (0: the first cluster needs an
 * allocation) or -errno. */
static int64_t plan_in_place(struct qcow2_state *s, const uint8_t *t,
                             uint64_t l2_off, uint64_t off, uint64_t end,
                             uint64_t *host)
{
    uint32_t l2_mask = (1u << s->l2_bits) - 1;
    uint64_t pos = off, n = 0;

    while (pos < end) {
        uint64_t gc = pos & ~s->cluster_mask;
        uint64_t cend = gc + s->cluster_size < end ? gc + s->cluster_size
                                                   : end;
        uint32_t idx = (uint32_t)(pos >> s->h.cluster_bits) & l2_mask;
        struct qcow2_l2e e;
        int err = qcow2_entry_for_write(s, t, l2_off, idx, gc, &e);
        if (err)
            return n > 0 ? (int64_t)n : err;
        if (!qcow2_in_place(s, &e, gc, pos, cend))
            break;
        uint64_t h = e.host + (pos - gc);
        if (n > 0 && h != *host + n)
            break;
        if (n == 0)
            *host = h;
        n += cend - pos;
        pos = cend;
    }
    return (int64_t)n;
}

/* Clusters after the first, within [first + 1, last], that need a new
 * host cluster each and have no in-flight record: how many follow in a
 * row.  *tail gets the old entry of the last one counted. */
static int count_more(struct qcow2_state *s, const uint8_t *t,
                      uint64_t l2_off, uint64_t first, uint64_t last,
                      uint64_t end, struct qcow2_l2e *tail, uint64_t *n)
{
    uint32_t l2_mask = (1u << s->l2_bits) - 1;
    uint64_t limit = qcow2_inflight_free_run(s, first + 1, last + 1);

    *n = 1;
    for (uint64_t c = first + 1; c < first + 1 + limit; c++) {
        uint64_t gc = c << s->h.cluster_bits;
        uint64_t cend = gc + s->cluster_size < end ? gc + s->cluster_size
                                                   : end;
        struct qcow2_l2e e;
        int err = qcow2_entry_for_write(s, t, l2_off,
                                        (uint32_t)c & l2_mask, gc, &e);
        if (err)
            return err;
        if (qcow2_in_place(s, &e, gc, gc, cend) ||
            (keeps_host(s, &e) &&
             !(s->h.incompatible & QCOW2_INCOMPAT_DATA_FILE)))
            break;
        *tail = e;
        (*n)++;
    }
    return 0;
}

/* Allocate host clusters for the st->count guest clusters from
 * st->first (fewer when fewer come in a row: st->count and st->tail_e
 * follow), in table t at l2_off.  0 or -errno; on failure what was
 * taken is given back by the caller (st->new_clusters). */
static int take_hosts(struct qcow2_state *s, const uint8_t *t,
                      uint64_t l2_off, struct step *st)
{
    uint32_t l2_mask = (1u << s->l2_bits) - 1;
    uint64_t got;

    int err = qcow2_alloc_clusters(s, st->count, &st->host, &got,
                                   &st->fresh);
    if (err)
        return err;
    st->new_clusters = true;
    if (got < st->count) {
        st->count = got;
        uint64_t lc = st->first + got - 1;
        err = qcow2_entry_for_write(s, t, l2_off, (uint32_t)lc & l2_mask,
                                    lc << s->h.cluster_bits, &st->tail_e);
        if (err)
            return err;
    }
    const char *what = qcow2_metadata_at(s, st->host,
                                         st->count * s->cluster_size);
    if (what) {
        qcow2_mark_corrupt(s, "new data clusters at 0x%" PRIx64
                           " would overwrite %s (refcount 0)", st->host,
                           what);
        return -EIO;
    }
    return 0;
}

/* Plan the allocating step for the cluster at off.  Returns 0, 1 when it
 * waited for another request (plan again), or -errno. */
static int plan_alloc(struct qcow2_state *s, uint64_t off, uint64_t end,
                      struct step *st)
{
    uint32_t span_bits = s->h.cluster_bits + s->l2_bits;
    uint32_t l1_index = (uint32_t)(off >> span_bits);
    uint32_t l2_mask = (1u << s->l2_bits) - 1;
    uint64_t first = off >> s->h.cluster_bits;
    uint64_t gc = first << s->h.cluster_bits;
    struct qcow2_table *t = NULL;
    uint64_t l2_off;
    int err;

    if (qcow2_inflight_busy(s, first, first + 1)) {
        qcow2_inflight_wait(s);
        return 1;
    }
    err = qcow2_writable_l2(s, l1_index, &l2_off);
    if (err)
        return err;
    err = qcow2_cache_get(s->cache, l2_off, &t);
    if (err)
        return err;
    struct qcow2_l2e e;
    err = qcow2_entry_for_write(s, t->data, l2_off,
                                (uint32_t)first & l2_mask, gc, &e);
    if (err)
        goto out_put;

    bool data_file = s->h.incompatible & QCOW2_INCOMPAT_DATA_FILE;
    st->alloc = true;
    st->l1_index = l1_index;
    st->first = first;
    st->head_e = st->tail_e = e;
    st->reuse = keeps_host(s, &e);
    st->count = 1;
    st->fresh = false;
    st->new_clusters = false;
    if (!st->reuse || data_file) {
        uint64_t max = (s->crypto ? MAX_CRYPTO_ALLOC_BYTES
                                  : MAX_ALLOC_BYTES) >> s->h.cluster_bits;
        uint64_t last = (end - 1) >> s->h.cluster_bits;
        if (max < 1)
            max = 1;
        if (last > first + max - 1)
            last = first + max - 1;
        if (last > first) {
            err = count_more(s, t->data, l2_off, first, last, end,
                             &st->tail_e, &st->count);
            if (err)
                goto out_put;
        }
    }
    if (data_file) {
        st->host = gc;
        st->reuse = true;
    } else if (st->reuse) {
        st->host = e.host;
        const char *what = qcow2_metadata_at(s, st->host, s->cluster_size);
        if (what) {
            qcow2_mark_corrupt(s, "L2 entry for guest offset 0x%" PRIx64
                               " points into %s (host 0x%" PRIx64 ")",
                               gc, what, st->host);
            err = -EIO;
            goto out_put;
        }
    } else {
        err = take_hosts(s, t->data, l2_off, st);
        if (err)
            goto out_put;
    }

    uint64_t cend = (first + st->count) << s->h.cluster_bits;
    uint64_t wend = end < cend ? end : cend;
    uint64_t lgc = (first + st->count - 1) << s->h.cluster_bits;
    st->off = off;
    st->len = wend - off;
    st->start = region_start(s, &st->head_e, st->reuse, gc, off);
    st->end = region_end(s, &st->tail_e, st->reuse, lgc, wend);
    qcow2_inflight_add(s, &st->rec, first, first + st->count);
    st->has_rec = true;
out_put:
    if (err && st->new_clusters) {
        /* Taken but never linked: give them back (a no-op once the
         * image is marked corrupt). */
        qcow2_give_back(s, st->host >> s->h.cluster_bits, st->count,
                        st->count);
        st->new_clusters = false;
    }
    qcow2_cache_put(s->cache, &t);
    return err;
}

/* Plan the next step of a write of [off, off + len).  Returns 0, 1 when
 * it waited (plan again), or -errno. */
static int plan(struct qcow2_state *s, uint64_t off, uint64_t len,
                struct step *st)
{
    uint32_t span_bits = s->h.cluster_bits + s->l2_bits;
    uint64_t l1_index = off >> span_bits;
    uint64_t span_end = (l1_index + 1) << span_bits;
    uint64_t end = len > span_end - off ? span_end : off + len;
    uint64_t l2_off;
    int err;

    memset(st, 0, sizeof *st);
    if (qcow2_writes_refused(s))
        return -EIO;
    if (l1_index >= s->l1_size) {
        err = qcow2_grow_l1(s, l1_index + 1);
        if (err)
            return err;
    }
    err = qcow2_l2_for_write(s, l1_index, &l2_off);
    if (err)
        return err;
    if (l2_off) {
        int fetched = qcow2_fetch_unlocked(s, l2_off);
        if (fetched == 1)
            return 1;           /* the lock was dropped: plan again */
        if (fetched == 2) {
            /* Dropped, not fetched: look again, then load it locked. */
            err = qcow2_l2_for_write(s, l1_index, &l2_off);
            if (err)
                return err;
        }
    }
    if (l2_off) {
        struct qcow2_table *t;
        uint64_t host = 0;
        err = qcow2_cache_get(s->cache, l2_off, &t);
        if (err)
            return err;
        int64_t n = plan_in_place(s, t->data, l2_off, off, end, &host);
        qcow2_cache_put(s->cache, &t);
        if (n < 0)
            return (int)n;
        if (n > 0) {
            const char *what = qcow2_metadata_at(s, host, (uint64_t)n);
            if (what) {
                qcow2_mark_corrupt(s, "L2 entry for guest offset 0x%"
                                   PRIx64 " points into %s (host 0x%"
                                   PRIx64 ")", off, what, host);
                return -EIO;
            }
            st->off = off;
            st->len = (uint64_t)n;
            st->host = host;
            if (s->crypto && ((off | (off + st->len)) &
                              (QCOW2_CRYPTO_SECTOR - 1))) {
                /* A partial sector is read and rewritten: keep other
                 * writers of these clusters away meanwhile. */
                uint64_t a = off >> s->h.cluster_bits;
                uint64_t b = ((off + st->len - 1) >> s->h.cluster_bits) + 1;
                if (qcow2_inflight_busy(s, a, b)) {
                    qcow2_inflight_wait(s);
                    return 1;
                }
                qcow2_inflight_add(s, &st->rec, a, b);
                st->has_rec = true;
            }
            return 0;
        }
    }
    return plan_alloc(s, off, end, st);
}

bool qcow2_reads_zero(struct qcow2_state *s, const struct qcow2_l2e *e,
                       uint64_t a, uint64_t b)
{
    while (a < b) {
        struct qcow2_run run;
        if (qcow2_l2e_run(s, e, a, b, &run) != 0)
            return false;
        if (run.kind == QCOW2_DATA || run.kind == QCOW2_COMPRESSED)
            return false;
        if (run.kind == QCOW2_UNALLOCATED && s->backing &&
            a < s->backing->size)
            return false;
        a += run.length;
    }
    return true;
}

/* Read guest bytes [a, b) of a cluster as its old entry e shows them. */
static int read_old(struct qcow2_state *s, const struct qcow2_l2e *e,
                    uint64_t a, uint64_t b, uint8_t *buf)
{
    while (a < b) {
        struct qcow2_run run;
        int err = qcow2_l2e_run(s, e, a, b, &run);
        if (err)
            return err;
        uint64_t n = run.length;
        switch (run.kind) {
        case QCOW2_DATA:
            err = qcow2_read_host(s, buf, n, run.host_offset, a);
            break;
        case QCOW2_ZERO:
            memset(buf, 0, n);
            break;
        case QCOW2_UNALLOCATED:
            err = qcow2_read_backing(s, buf, n, a);
            break;
        case QCOW2_COMPRESSED:
            err = qcow2_read_compressed(s, &run, a - run.cluster_guest,
                                        buf, n);
            break;
        }
        if (err)
            return err;
        buf += n;
        a += n;
    }
    return 0;
}

/* Fill buf with the copy-on-write bytes [a, b) of the cluster with old
 * entry e; *skip when they need not be written at all.  buf is NULL
 * when the bytes must come from zero_cluster. */
static int cow_piece(struct qcow2_state *s, const struct step *st,
                     const struct qcow2_l2e *e, uint64_t a, uint64_t b,
                     uint8_t **buf, bool *skip)
{
    *buf = NULL;
    *skip = false;
    if (a == b) {
        *skip = true;
        return 0;
    }
    if (qcow2_reads_zero(s, e, a, b) && !s->crypto) {
        *skip = st->fresh;
        return 0;
    }
    *buf = malloc(b - a);
    if (!*buf)
        return -ENOMEM;
    int err = read_old(s, e, a, b, *buf);
    if (err) {
        free(*buf);
        *buf = NULL;
    }
    return err;
}

/* Encrypt len bytes of buf, which will sit at host offset host for guest
 * offset guest, in place. */
static int encrypt(struct qcow2_state *s, uint8_t *buf, uint64_t len,
                   uint64_t host, uint64_t guest)
{
    int err = qcow2_crypto_encrypt(s->crypto, s->iv_is_host ? host : guest,
                                   buf, len);
    if (err)
        img_log("qcow2: %s: encrypting %" PRIu64 " bytes for host 0x%"
                PRIx64 ": %s", s->img.path, len, host, strerror(-err));
    return err;
}

/* Write a planned allocating step's head, data and tail. */
static int write_alloc(struct qcow2_state *s, const struct step *st,
                       const uint8_t *data)
{
    uint64_t gc = st->first << s->h.cluster_bits;
    uint64_t dend = st->off + st->len;
    uint8_t *head, *tail;
    bool skip_head, skip_tail;
    int err;

    err = cow_piece(s, st, &st->head_e, st->start, st->off, &head,
                    &skip_head);
    if (err)
        return err;
    err = cow_piece(s, st, &st->tail_e, dend, st->end, &tail, &skip_tail);
    if (err) {
        free(head);
        return err;
    }
    uint64_t from = skip_head ? st->off : st->start;
    uint64_t to = skip_tail ? dend : st->end;
    uint64_t host = st->host + (from - gc);

    if (s->crypto) {
        uint8_t *b = malloc(to - from);
        if (!b) {
            err = -ENOMEM;
            goto out_free;
        }
        uint64_t hl = st->off - from;
        memcpy(b, head ? head : s->zero_cluster, hl);
        memcpy(b + hl, data, st->len);
        memcpy(b + hl + st->len, tail ? tail : s->zero_cluster, to - dend);
        err = encrypt(s, b, to - from, host, from);
        if (!err)
            err = io_pwrite_tag(s->data_fd, b, to - from, host,
                                IO_TAG_DATA);
        free(b);
    } else {
        struct iovec iov[3];
        int n = 0;
        if (from < st->off)
            iov[n++] = (struct iovec){ head ? head : s->zero_cluster,
                                       st->off - from };
        iov[n++] = (struct iovec){ (void *)data, st->len };
        if (to > dend)
            iov[n++] = (struct iovec){ tail ? tail : s->zero_cluster,
                                       to - dend };
        err = io_pwritev_tag(s->data_fd, iov, n, host, IO_TAG_DATA);
    }
    if (err)
        img_log("qcow2: %s: writing %" PRIu64 " bytes at host 0x%" PRIx64
                " (guest 0x%" PRIx64 "): %s", s->img.path, to - from, host,
                from, strerror(-err));
    else
        qcow2_note_write(s);
out_free:
    free(head);
    free(tail);
    return err;
}

/* Write a planned in-place step. */
static int write_in_place(struct qcow2_state *s, const struct step *st,
                          const uint8_t *data)
{
    const uint64_t sec = QCOW2_CRYPTO_SECTOR;
    int err;

    if (!s->crypto) {
        err = io_pwrite_tag(s->data_fd, data, st->len, st->host,
                            IO_TAG_DATA);
        if (err)
            img_log("qcow2: %s: writing %" PRIu64 " bytes at host 0x%"
                    PRIx64 " (guest 0x%" PRIx64 "): %s", s->img.path,
                    st->len, st->host, st->off, strerror(-err));
        else
            qcow2_note_write(s);
        return err;
    }
    uint64_t lead = st->off & (sec - 1);
    uint64_t a = st->off - lead;
    uint64_t b = (st->off + st->len + sec - 1) & ~(sec - 1);
    uint64_t ha = st->host - lead;
    uint8_t *buf = malloc(b - a);
    if (!buf)
        return -ENOMEM;
    err = 0;
    if (lead)
        err = qcow2_read_host(s, buf, sec, ha, a);
    if (!err && b > st->off + st->len && (b - sec > a || !lead))
        err = qcow2_read_host(s, buf + (b - a - sec), sec,
                              ha + (b - a - sec), b - sec);
    if (!err) {
        memcpy(buf + lead, data, st->len);
        err = encrypt(s, buf, b - a, ha, a);
    }
    if (!err) {
        err = io_pwrite_tag(s->data_fd, buf, b - a, ha, IO_TAG_DATA);
        if (err)
            img_log("qcow2: %s: writing %" PRIu64 " bytes at host 0x%"
                    PRIx64 ": %s", s->img.path, b - a, ha, strerror(-err));
        else
            qcow2_note_write(s);
    }
    free(buf);
    return err;
}

/* Queue the free of what entry cur (index idx of table l2_off) held
 * before a new host cluster replaced it.  A failure only leaks. */
static void free_old(struct qcow2_state *s, const struct qcow2_l2e *cur,
                     uint64_t l2_off, uint32_t idx)
{
    int err = 0;

    if (cur->type == QCOW2_C_NORMAL ||
        (cur->type == QCOW2_C_ZERO && cur->host)) {
        err = qcow2_queue_free(s, cur->host, s->cluster_size,
                               QCOW2_FREE_AFTER_L2);
    } else if (cur->type == QCOW2_C_COMPRESSED) {
        struct qcow2_run run;
        err = qcow2_decode_compressed(s, false, l2_off, idx, cur->raw, &run);
        if (!err)
            err = qcow2_queue_free(s, run.coffset, run.csize,
                                   QCOW2_FREE_AFTER_L2);
    }
    if (err)
        img_log("qcow2: %s: host cluster 0x%" PRIx64 " leaks: %s",
                s->img.path, cur->host, strerror(-err));
}

/* Link an allocating step's clusters into its L2 table and queue the old
 * clusters' frees.  Every entry is checked before any is changed, so a
 * failure leaves the table as it was. */
static int link_step(struct qcow2_state *s, const struct step *st)
{
    uint32_t l2_mask = (1u << s->l2_bits) - 1;
    bool data_file = s->h.incompatible & QCOW2_INCOMPAT_DATA_FILE;
    struct qcow2_table *t;
    uint64_t l2_off;

    int err = qcow2_l2_offset(s, st->l1_index, false, &l2_off);
    if (err)
        return err;
    err = qcow2_cache_get(s->cache, l2_off, &t);
    if (err)
        return err;
    for (uint64_t i = 0; i < st->count && !err; i++) {
        uint64_t c = st->first + i;
        struct qcow2_l2e cur;
        err = qcow2_entry_for_write(s, t->data, l2_off,
                                    (uint32_t)c & l2_mask,
                                    c << s->h.cluster_bits, &cur);
        if (!err && cur.type == QCOW2_C_COMPRESSED) {
            struct qcow2_run run;
            err = qcow2_decode_compressed(s, false, l2_off,
                                          (uint32_t)c & l2_mask, cur.raw,
                                          &run);
        }
    }
    if (err) {
        qcow2_cache_put(s->cache, &t);
        return err;
    }
    for (uint64_t i = 0; i < st->count; i++) {
        uint64_t c = st->first + i;
        uint64_t gc = c << s->h.cluster_bits;
        uint32_t idx = (uint32_t)c & l2_mask;
        uint64_t a = st->off > gc ? st->off : gc;
        uint64_t b = st->off + st->len < gc + s->cluster_size
                     ? st->off + st->len : gc + s->cluster_size;
        uint64_t host = data_file ? gc : st->host + i * s->cluster_size;
        struct qcow2_l2e cur;
        qcow2_decode_l2e(s, false, t->data, l2_off, idx, gc, &cur);
        uint64_t bitmap = 0;
        if (s->ext_l2) {
            uint32_t al = (st->reuse ? (uint32_t)cur.bitmap : old_alloc(&cur))
                          | touched(s, gc, a, b);
            uint32_t z = (uint32_t)(cur.bitmap >> 32) & ~al;
            if (cur.type == QCOW2_C_COMPRESSED)
                z = 0;
            bitmap = al | ((uint64_t)z << 32);
        }
        if (!st->reuse && !data_file)
            free_old(s, &cur, l2_off, idx);
        qcow2_set_l2e(s, t->data, idx, host | QCOW2_L2E_COPIED, bitmap);
    }
    qcow2_cache_mark_dirty(s->cache, t);
    if (s->breaks & QCOW2_BREAK_DATA_BEFORE_MAPPING)
        qcow2_write_l2_now(s, l2_off, t->data);
    qcow2_cache_put(s->cache, &t);
    return 0;
}

/* Undo a planned allocating step that will not be linked. */
static void abandon(struct qcow2_state *s, const struct step *st)
{
    if (st->new_clusters)
        qcow2_give_back(s, st->host >> s->h.cluster_bits, st->count,
                        st->count);
}

int qcow2_write_steps(struct qcow2_state *s, const uint8_t *buf,
                      uint64_t len, uint64_t off, bool *allocated)
{
    int err = 0;

    while (len > 0) {
        struct step st;
        err = plan(s, off, len, &st);
        if (err == 1)
            continue;
        if (err)
            break;
        qcow2_unlock(s);
        if (st.alloc)
            err = write_alloc(s, &st, buf);
        else
            err = write_in_place(s, &st, buf);
        qcow2_lock(s);
        if (st.alloc && !err)
            err = link_step(s, &st);
        if (st.alloc && err)
            abandon(s, &st);
        if (st.has_rec)
            qcow2_inflight_remove(s, &st.rec);
        if (err)
            break;
        if (st.alloc)
            *allocated = true;
        uint64_t host_end = st.alloc
            ? st.host + st.count * s->cluster_size : st.host + st.len;
        if (s->data_fd != s->fd && host_end > s->data_file_size)
            s->data_file_size = host_end;
        buf += st.len;
        off += st.len;
        len -= st.len;
    }
    return err;
}

int qcow2_write_op(struct image *img, const void *buf, uint64_t len,
                   uint64_t off, unsigned flags)
{
    struct qcow2_state *s = qcow2_from_img(img);
    struct qcow2_req req;
    bool allocated = false;

    /* Dirty bitmaps first: the bits are set before the data can land. */
    uint64_t gen;
    int err = qcow2_bitmaps_record(s, off, len, &gen);
    if (err)
        return err;
    qcow2_lock(s);
    qcow2_req_begin(s, &req);
    err = qcow2_write_steps(s, buf, len, off, &allocated);
    if (!err && (flags & IMG_FUA))
        err = qcow2_flush_ordered(s, IO_TAG_FLUSH);
    if (!err && qcow2_frees_pressing(s))
        err = qcow2_flush_ordered(s, IO_TAG_L2);
    qcow2_req_finish(s, &req);
    qcow2_unlock(s);
    return qcow2_bitmaps_record_done(s, off, len, gen, err);
}
