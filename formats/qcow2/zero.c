/* qcow2 write_zeroes and trim: change L2 entries instead of writing
 * data wherever the format can say "zeros" or "nothing here".
 *
 * Version 3 images mark whole clusters with the zero flag, or whole
 * subclusters with the extended bitmap's zero bits, without allocating;
 * with MAY_TRIM (and for compressed clusters) the host cluster is freed
 * too, otherwise it stays allocated and reads as zeros.  Version 2 has no
 * zero flag: a cluster that no backing file covers can be deallocated
 * (MAY_TRIM); anything else gets zeros written.  Parts of clusters (or of
 * subclusters) always get zeros written through the write path, unless
 * they read as zeros already.  FAST_ZERO answers -ENOTSUP before changing
 * anything when any data would have to be written.
 *
 * Trim frees whole clusters: the L2 entry is cleared, or set to the zero
 * flag where a backing file would otherwise show through.  The host
 * cluster's refcount drops once the cleared entry is on disk, and then
 * the hole goes down to the file (alloc.c).  With an external data file
 * the guest range is punched out of the data file at once.  The parts of
 * clusters a trim covers are zeroed as by write_zeroes with MAY_TRIM, so
 * a trimmed range never shows its old data; where a cluster is written in
 * place, zeroing a part of it is a hole punched into the host cluster,
 * not a write.  Version 2 leaves clusters a backing file covers as they
 * are: it has no way to hide the backing file but writing zeros.
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <string.h>

#include "io.h"
#include "qcow2.h"

/* What to do with one cluster's part [a, b). */
struct zero_plan {
    bool change;                /* replace the L2 entry */
    uint64_t raw;               /* the new entry */
    uint64_t bitmap;
    bool free_old;              /* queue a free of what entry held */
    bool punch;                 /* punch a range out of the data file */
    uint64_t punch_a;
    uint64_t punch_b;
    uint64_t data[2][2];        /* guest ranges needing zeros written */
    int n_data;
};

/* Whether a backing file shows through at guest cluster gc. */
static bool backed(const struct qcow2_state *s, uint64_t gc)
{
    return s->backing && gc < s->backing->size;
}

static void need_data(const struct qcow2_state *s, struct zero_plan *p,
                      const struct qcow2_l2e *e, uint64_t a, uint64_t b)
{
    if (a >= b || qcow2_reads_zero((struct qcow2_state *)s, e, a, b))
        return;
    p->data[p->n_data][0] = a;
    p->data[p->n_data][1] = b;
    p->n_data++;
}

/* plan_zero for an extended L2 entry that is not compressed: whole
 * subclusters get zero bits, the rest gets data. */
static void plan_zero_subclusters(const struct qcow2_state *s,
                                  const struct qcow2_l2e *e, uint64_t gc,
                                  uint64_t a, uint64_t b, unsigned flags,
                                  struct zero_plan *p)
{
    bool trim = flags & IMG_MAY_TRIM;
    bool data_file = s->h.incompatible & QCOW2_INCOMPAT_DATA_FILE;
    bool covered = backed(s, gc);
    bool whole = a == gc && b == gc + s->cluster_size;

    uint64_t sc = 1ull << s->sc_bits;
    uint64_t fa = (a + sc - 1) & ~(sc - 1);
    uint64_t fb = b & ~(sc - 1);
    if (fa >= fb) {
        need_data(s, p, e, a, b);
        return;
    }
    need_data(s, p, e, a, fa);
    need_data(s, p, e, fb, b);
    uint32_t m = (uint32_t)(((2ull << ((fb - gc - 1) >> s->sc_bits)) - 1) &
                            ~((1ull << ((fa - gc) >> s->sc_bits)) - 1));
    uint32_t al = (uint32_t)e->bitmap;
    uint32_t z = (uint32_t)(e->bitmap >> 32);
    if (e->type == QCOW2_C_UNALLOCATED && !covered)
        return;             /* reads as zeros already */
    if (data_file && e->type == QCOW2_C_NORMAL) {
        /* Keep the data file showing what the guest sees. */
        p->punch = true;
        p->punch_a = fa;
        p->punch_b = fb;
    }
    if (whole && trim && e->type == QCOW2_C_NORMAL && !data_file) {
        p->change = true;
        p->free_old = true;
        p->raw = 0;
        p->bitmap = covered ? (uint64_t)UINT32_MAX << 32 : 0;
        return;
    }
    if ((al & m) == 0 && (z & m) == m)
        return;
    p->change = true;
    p->raw = e->raw;
    p->bitmap = (al & ~m) | ((uint64_t)(z | m) << 32);
}

/* Decide how to zero [a, b) of the cluster at gc with entry e. */
static void plan_zero(const struct qcow2_state *s, const struct qcow2_l2e *e,
                      uint64_t gc, uint64_t a, uint64_t b, unsigned flags,
                      struct zero_plan *p)
{
    bool trim = flags & IMG_MAY_TRIM;
    bool data_file = s->h.incompatible & QCOW2_INCOMPAT_DATA_FILE;
    bool covered = backed(s, gc);
    bool whole = a == gc && b == gc + s->cluster_size;

    memset(p, 0, sizeof *p);
    if (s->ext_l2 && e->type != QCOW2_C_COMPRESSED) {
        plan_zero_subclusters(s, e, gc, a, b, flags, p);
        return;
    }
    if (!whole) {
        need_data(s, p, e, a, b);
        return;
    }
    if (data_file && e->type == QCOW2_C_NORMAL) {
        p->punch = true;        /* the entry stays: it reads the hole */
        p->punch_a = a;
        p->punch_b = b;
        return;
    }
    if (s->h.version < 3) {
        if (covered || (!trim && e->type != QCOW2_C_UNALLOCATED)) {
            need_data(s, p, e, a, b);
            return;
        }
        if (e->type != QCOW2_C_UNALLOCATED) {
            p->change = true;
            p->free_old = true;
            p->raw = 0;
        }
        return;
    }
    switch (e->type) {
    case QCOW2_C_UNALLOCATED:
        if (covered) {
            p->change = true;
            p->raw = QCOW2_L2E_ZERO;
        }
        return;
    case QCOW2_C_ZERO:
        if (trim && e->host && !data_file) {
            p->change = true;
            p->free_old = true;
            p->raw = QCOW2_L2E_ZERO;
        }
        return;
    case QCOW2_C_NORMAL:
        p->change = true;
        if (trim) {
            p->free_old = true;
            p->raw = QCOW2_L2E_ZERO;
        } else {
            p->raw = e->raw | QCOW2_L2E_ZERO;
        }
        return;
    case QCOW2_C_COMPRESSED:
    default:
        p->change = true;
        p->free_old = true;
        p->raw = s->ext_l2 ? 0 : QCOW2_L2E_ZERO;
        p->bitmap = s->ext_l2 ? (uint64_t)UINT32_MAX << 32 : 0;
        return;
    }
}

/* Decide how to trim the whole cluster at gc with entry e. */
static void plan_trim(const struct qcow2_state *s, const struct qcow2_l2e *e,
                      uint64_t gc, struct zero_plan *p)
{
    bool data_file = s->h.incompatible & QCOW2_INCOMPAT_DATA_FILE;
    bool covered = backed(s, gc);
    bool v3 = s->h.version >= 3;

    memset(p, 0, sizeof *p);
    if (covered && !v3)
        return;                 /* the backing file would show through */
    bool owns = (e->type == QCOW2_C_NORMAL) || e->type == QCOW2_C_COMPRESSED ||
                (e->type == QCOW2_C_ZERO && e->host);
    if (!owns && !(covered && e->type == QCOW2_C_UNALLOCATED))
        return;
    if (!owns && s->ext_l2 && (e->bitmap >> 32) == UINT32_MAX)
        return;
    p->change = true;
    if (owns) {
        p->free_old = !(data_file && e->type != QCOW2_C_COMPRESSED);
        p->punch = data_file && e->type == QCOW2_C_NORMAL;
        p->punch_a = gc;
        p->punch_b = gc + s->cluster_size;
    }
    if (s->ext_l2) {
        p->raw = 0;
        p->bitmap = covered ? (uint64_t)UINT32_MAX << 32 : 0;
    } else {
        p->raw = covered ? QCOW2_L2E_ZERO : 0;
    }
}

/* Look up the entry of the cluster at gc; an absent L2 table reads as
 * unallocated.  *l2_off gets the table (0: none). */
static int lookup(struct qcow2_state *s, uint64_t gc, struct qcow2_l2e *e,
                  uint64_t *l2_off)
{
    uint32_t span_bits = s->h.cluster_bits + s->l2_bits;
    uint32_t idx = (uint32_t)(gc >> s->h.cluster_bits) &
                   ((1u << s->l2_bits) - 1);
    struct qcow2_table *t;

    memset(e, 0, sizeof *e);
    e->type = QCOW2_C_UNALLOCATED;
    int err = qcow2_l2_for_write(s, gc >> span_bits, l2_off);
    if (err || *l2_off == 0)
        return err;
    err = qcow2_cache_get(s->cache, *l2_off, &t);
    if (err)
        return err;
    err = qcow2_entry_for_write(s, t->data, *l2_off, idx, gc, e);
    qcow2_cache_put(s->cache, &t);
    return err;
}

/* Free what entry e of the cluster at gc (in table l2_off) holds. */
static int free_entry(struct qcow2_state *s, const struct qcow2_l2e *e,
                      uint64_t l2_off, uint32_t idx)
{
    if (e->type == QCOW2_C_COMPRESSED) {
        struct qcow2_run run;
        int err = qcow2_decode_compressed(s, false, l2_off, idx, e->raw,
                                          &run);
        if (err)
            return err;
        return qcow2_queue_free(s, run.coffset, run.csize,
                                QCOW2_FREE_AFTER_L2);
    }
    if (e->host == 0)
        return 0;
    return qcow2_queue_free(s, e->host, s->cluster_size,
                            QCOW2_FREE_AFTER_L2);
}

/* Punch guest bytes [a, b) out of the external data file (MAY_TRIM in
 * flags), or zero them there keeping their space, or write zeros when
 * the file system can do neither. */
static int punch_data(struct qcow2_state *s, uint64_t a, uint64_t b,
                      unsigned flags)
{
    int mode = (flags & IMG_MAY_TRIM)
               ? FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE
               : FALLOC_FL_ZERO_RANGE | FALLOC_FL_KEEP_SIZE;
    int err = io_fallocate(s->data_fd, mode, a, b - a, IO_TAG_DATA);
    if (err == -EOPNOTSUPP || err == -ENOSYS)
        err = io_write_zeroes_tag(s->data_fd, b - a, a, IO_TAG_DATA);
    if (err)
        img_log("qcow2: %s: zeroing data file at 0x%" PRIx64 ": %s",
                s->img.path, a, strerror(-err));
    else
        qcow2_note_write(s);
    return err;
}

/* Zero guest bytes [a, b) of the cluster at gc that e maps in place
 * without writing data: a hole punched into the host cluster when the
 * request may deallocate (MAY_TRIM), else the range zeroed with its
 * space kept (the client asked for no hole).  -EAGAIN when that cannot be
 * done (not in place, encrypted, or the file system cannot); the caller
 * then writes zeros. */
static int zero_in_place(struct qcow2_state *s, uint64_t gc,
                         const struct qcow2_l2e *e, uint64_t a, uint64_t b,
                         unsigned flags)
{
    if (s->crypto || !qcow2_in_place(s, e, gc, a, b))
        return -EAGAIN;
    uint64_t host = e->host + (a - gc);
    if (qcow2_metadata_at(s, host, b - a))
        return -EAGAIN;     /* the write path marks the image corrupt */
    int mode = (flags & IMG_MAY_TRIM)
               ? FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE
               : FALLOC_FL_ZERO_RANGE | FALLOC_FL_KEEP_SIZE;
    int err = io_fallocate(s->data_fd, mode, host, b - a, IO_TAG_DATA);
    if (err)
        return -EAGAIN;
    qcow2_note_write(s);
    return 0;
}

/* Carry out plan p for the cluster at gc (entry e as planned), made
 * for a request with flags. */
static int apply(struct qcow2_state *s, uint64_t gc,
                 const struct qcow2_l2e *e, const struct zero_plan *p,
                 unsigned flags)
{
    uint32_t span_bits = s->h.cluster_bits + s->l2_bits;
    uint32_t idx = (uint32_t)(gc >> s->h.cluster_bits) &
                   ((1u << s->l2_bits) - 1);
    int err = 0;

    if (p->punch) {
        err = punch_data(s, p->punch_a, p->punch_b, flags);
        if (err)
            return err;
    }
    if (p->change) {
        uint64_t l2_off;
        struct qcow2_table *t;
        err = qcow2_writable_l2(s, (uint32_t)(gc >> span_bits), &l2_off);
        if (err)
            return err;
        err = qcow2_cache_get(s->cache, l2_off, &t);
        if (err)
            return err;
        if (p->free_old)
            err = free_entry(s, e, l2_off, idx);
        if (!err) {
            qcow2_set_l2e(s, t->data, idx, p->raw, p->bitmap);
            qcow2_cache_mark_dirty(s->cache, t);
        }
        qcow2_cache_put(s->cache, &t);
        if (err)
            return err;
    }
    for (int i = 0; i < p->n_data && !err; i++) {
        uint64_t a = p->data[i][0], b = p->data[i][1];
        bool allocated;
        if (zero_in_place(s, gc, e, a, b, flags) == 0)
            continue;
        err = qcow2_write_steps(s, s->zero_cluster, b - a, a, &allocated);
    }
    return err;
}

/* Where the next cluster to look at is, skipping a whole L2 span that
 * has no table and that nothing needs changed in. */
static uint64_t skip_span(const struct qcow2_state *s, uint64_t pos,
                          uint64_t l2_off, bool wants_backing)
{
    uint32_t span_bits = s->h.cluster_bits + s->l2_bits;
    uint64_t span = pos >> span_bits;

    if (l2_off || (wants_backing && s->backing &&
                   (span << span_bits) < s->backing->size))
        return pos;
    return (span + 1) << span_bits;
}

/* Walk [off, off + len) cluster by cluster: plan each (trim or zero),
 * and apply unless dry (then return -ENOTSUP at the first data write a
 * plan needs). */
static int walk(struct qcow2_state *s, uint64_t off, uint64_t len,
                unsigned flags, bool trim, bool dry)
{
    uint64_t end = off + len;
    uint64_t pos = off;

    while (pos < end) {
        uint64_t gc = pos & ~s->cluster_mask;
        uint64_t cend = gc + s->cluster_size < end ? gc + s->cluster_size
                                                   : end;
        struct qcow2_l2e e;
        struct zero_plan p;
        uint64_t l2_off;
        int err = lookup(s, gc, &e, &l2_off);
        if (err)
            return err;
        uint64_t next = skip_span(s, pos, l2_off, true);
        if (next > pos) {
            /* Unallocated and not backed: zeros already, nothing to
             * trim.  A partial start still needs nothing. */
            pos = next < end ? next : end;
            continue;
        }
        if (trim && s->h.version < 3 && backed(s, gc))
            memset(&p, 0, sizeof p);    /* cannot hide the backing file */
        else if (trim && pos == gc && cend == gc + s->cluster_size)
            plan_trim(s, &e, gc, &p);
        else
            plan_zero(s, &e, gc, pos, cend,
                      trim ? flags | IMG_MAY_TRIM : flags, &p);
        if (dry) {
            if (p.n_data > 0)
                return -ENOTSUP;
            pos = cend;
            continue;
        }
        if ((p.change || p.punch || p.n_data) &&
            qcow2_inflight_busy(s, gc >> s->h.cluster_bits,
                                (gc >> s->h.cluster_bits) + 1)) {
            qcow2_inflight_wait(s);
            continue;           /* look again */
        }
        err = apply(s, gc, &e, &p, trim ? flags | IMG_MAY_TRIM : flags);
        if (err)
            return err;
        pos = cend;
    }
    return 0;
}

/* write_zeroes and trim share everything but the walk's plan. */
static int zero_or_trim(struct image *img, uint64_t len, uint64_t off,
                        unsigned flags, bool trim)
{
    struct qcow2_state *s = qcow2_from_img(img);
    struct qcow2_req req;
    /* Dirty bitmaps first: the bits are set before the disk changes. */
    uint64_t gen;
    int err = qcow2_bitmaps_record(s, off, len, &gen);
    if (err)
        return err;
    qcow2_lock(s);
    qcow2_req_begin(s, &req);
    if (qcow2_writes_refused(s))
        err = -EIO;
    if (!err && !trim && (flags & IMG_FAST_ZERO))
        err = walk(s, off, len, flags, false, true);
    if (!err)
        err = walk(s, off, len, flags, trim, false);
    if (!err && (flags & IMG_FUA))
        err = qcow2_flush_ordered(s, IO_TAG_FLUSH);
    if (!err && qcow2_frees_pressing(s))
        err = qcow2_flush_ordered(s, IO_TAG_L2);
    qcow2_req_finish(s, &req);
    qcow2_unlock(s);
    return qcow2_bitmaps_record_done(s, off, len, gen, err);
}

int qcow2_zero_op(struct image *img, uint64_t len, uint64_t off,
                  unsigned flags)
{
    return zero_or_trim(img, len, off, flags, false);
}

int qcow2_trim_op(struct image *img, uint64_t len, uint64_t off,
                  unsigned flags)
{
    return zero_or_trim(img, len, off, flags, true);
}
