/* Log reading, crash points, state enumeration and materialization for
 * the crash tools; the model is described in crashlog.h and
 * tests/crash/README.md.  Files are kept in memory: the images these
 * tests use are small, and copying a few MiB is far cheaper than the
 * checks each state gets.
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <linux/falloc.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "crashlog.h"

#define SMALL_EPOCH 10
#define RANDOM_SUBSETS 256

uint64_t crash_rand(uint64_t *state)
{
    uint64_t z = (*state += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

const char *clog_type_name(uint32_t type)
{
    static const char *const names[] = {
        [IO_REC_FILE] = "file", [IO_REC_WRITE] = "write",
        [IO_REC_SYNC_BEGIN] = "sync-begin", [IO_REC_SYNC_END] = "sync-end",
        [IO_REC_TRUNCATE] = "truncate", [IO_REC_FALLOCATE] = "fallocate",
        [IO_REC_MARK] = "mark", [IO_REC_FAULT] = "fault",
    };
    if (type < sizeof names / sizeof names[0] && names[type])
        return names[type];
    return "?";
}

const char *clog_tag_name(uint32_t tag)
{
    /* The names DISKSERVE_FAULT takes (formats/io.c); not linked from
     * there, because io.c opens DISKSERVE_IO_LOG when it loads. */
    static const char *const names[IO_TAG_COUNT] = {
        [IO_TAG_DATA] = "DATA", [IO_TAG_L1] = "L1", [IO_TAG_L2] = "L2",
        [IO_TAG_REFCOUNT_BLOCK] = "REFCOUNT_BLOCK",
        [IO_TAG_REFCOUNT_TABLE] = "REFCOUNT_TABLE",
        [IO_TAG_HEADER] = "HEADER", [IO_TAG_ALLOC] = "ALLOC",
        [IO_TAG_L1_GROW] = "L1_GROW", [IO_TAG_REFTABLE_GROW] = "REFTABLE_GROW",
        [IO_TAG_FLUSH] = "FLUSH", [IO_TAG_OTHER] = "OTHER",
        [IO_TAG_META_SET] = "META_SET", [IO_TAG_LOG] = "LOG",
        [IO_TAG_BAT] = "BAT",
    };
    return tag < IO_TAG_COUNT ? names[tag] : "?";
}

static bool is_change(uint32_t type)
{
    return type == IO_REC_WRITE || type == IO_REC_TRUNCATE ||
           type == IO_REC_FALLOCATE;
}

static int read_file(const char *path, uint8_t **out, size_t *len)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    struct stat st;
    uint8_t *buf;
    size_t got = 0;

    if (fd < 0)
        return -errno;
    if (fstat(fd, &st) < 0) {
        close(fd);
        return -errno;
    }
    buf = malloc((size_t)st.st_size + 1);
    if (!buf) {
        close(fd);
        return -ENOMEM;
    }
    while (got < (size_t)st.st_size) {
        ssize_t n = read(fd, buf + got, (size_t)st.st_size - got);
        if (n <= 0) {
            int err = n < 0 ? -errno : -EIO;
            free(buf);
            close(fd);
            return err;
        }
        got += (size_t)n;
    }
    close(fd);
    *out = buf;
    *len = got;
    return 0;
}

static int parse_records(struct clog *lg, const char *path)
{
    size_t pos = 8, cap = 0;

    while (pos < lg->len) {
        struct clog_rec r;
        if (lg->len - pos < sizeof r.h) {
            fprintf(stderr, "%s: truncated record at byte %zu\n", path, pos);
            return -EINVAL;
        }
        memcpy(&r.h, lg->buf + pos, sizeof r.h);
        pos += sizeof r.h;
        if (lg->len - pos < r.h.payload ||
            (r.h.type == IO_REC_WRITE && r.h.payload != r.h.len)) {
            fprintf(stderr, "%s: record %" PRIu64 ": bad payload\n", path,
                    r.h.seq);
            return -EINVAL;
        }
        r.data = lg->buf + pos;
        pos += r.h.payload;
        if (lg->nrecs == cap) {
            cap = cap ? cap * 2 : 1024;
            void *p = realloc(lg->recs, cap * sizeof *lg->recs);
            if (!p)
                return -ENOMEM;
            lg->recs = p;
        }
        lg->recs[lg->nrecs++] = r;
    }
    return 0;
}

static int index_files(struct clog *lg, const char *path)
{
    for (size_t i = 0; i < lg->nrecs; i++) {
        const struct clog_rec *r = &lg->recs[i];
        if (r->h.type == IO_REC_FILE) {
            if (r->h.file != lg->nfiles) {
                fprintf(stderr, "%s: file ids out of order\n", path);
                return -EINVAL;
            }
            void *p = realloc(lg->files, (lg->nfiles + 1) *
                                         sizeof *lg->files);
            if (!p)
                return -ENOMEM;
            lg->files = p;
            struct clog_file *f = &lg->files[lg->nfiles++];
            memset(f, 0, sizeof *f);
            f->id = r->h.file;
            f->path = strndup((const char *)r->data, r->h.payload);
            if (!f->path)
                return -ENOMEM;
        } else if (is_change(r->h.type) && r->h.file >= lg->nfiles) {
            fprintf(stderr, "%s: record %" PRIu64 " names no file\n", path,
                    r->h.seq);
            return -EINVAL;
        }
    }
    lg->changes = calloc(lg->nrecs + 1, sizeof *lg->changes);
    if (!lg->changes)
        return -ENOMEM;
    for (size_t i = 0; i < lg->nrecs; i++)
        if (is_change(lg->recs[i].h.type))
            lg->changes[lg->nchanges++] = i;
    return 0;
}

/* Crash points: one before any sync ended, one per successful sync end. */
static int index_points(struct clog *lg, const char *path)
{
    size_t nf = lg->nfiles ? lg->nfiles : 1, nends = 0, nsync = 0;

    for (size_t i = 0; i < lg->nrecs; i++) {
        if (lg->recs[i].h.type == IO_REC_SYNC_END && lg->recs[i].h.result == 0)
            nends++;
        if (lg->recs[i].h.type == IO_REC_SYNC_BEGIN &&
            lg->recs[i].h.off >= nsync)
            nsync = lg->recs[i].h.off + 1;
    }
    lg->npoints = nends + 1;
    size_t *begin_at = calloc(nsync + 1, sizeof *begin_at);
    size_t *begin_file = calloc(nsync + 1, sizeof *begin_file);
    size_t *cur = calloc(nf, sizeof *cur);
    lg->base_end = calloc(lg->npoints * nf, sizeof *lg->base_end);
    lg->point_rec = calloc(lg->npoints, sizeof *lg->point_rec);
    lg->epoch_off = calloc(lg->npoints, sizeof *lg->epoch_off);
    lg->epoch_len = calloc(lg->npoints, sizeof *lg->epoch_len);
    if (!begin_at || !begin_file || !cur || !lg->base_end ||
        !lg->point_rec || !lg->epoch_off || !lg->epoch_len) {
        free(begin_at);
        free(begin_file);
        free(cur);
        return -ENOMEM;
    }
    for (size_t i = 0; i <= nsync; i++)
        begin_at[i] = SIZE_MAX;

    /* Walk the log: nchg counts changes so far; cur[f] is the durable
     * prefix of file f given the syncs ended so far. */
    size_t k = 0, nchg = 0;
    for (size_t i = 0; i < lg->nrecs; i++) {
        const struct io_log_rec *h = &lg->recs[i].h;
        if (is_change(h->type))
            nchg++;
        if (h->type == IO_REC_SYNC_BEGIN) {
            begin_at[h->off] = nchg;
            begin_file[h->off] = h->file;
        }
        if (h->type != IO_REC_SYNC_END || h->result != 0)
            continue;
        if (h->off >= nsync || begin_at[h->off] == SIZE_MAX ||
            begin_file[h->off] >= nf) {
            fprintf(stderr, "%s: sync %" PRIu64 " ends without a begin\n",
                    path, h->off);
            free(begin_at);
            free(begin_file);
            free(cur);
            return -EINVAL;
        }
        lg->point_rec[k++] = i;
        size_t f = begin_file[h->off];
        if (begin_at[h->off] > cur[f])
            cur[f] = begin_at[h->off];
        memcpy(&lg->base_end[k * nf], cur, nf * sizeof *cur);
    }
    lg->point_rec[k] = lg->nrecs;
    free(begin_at);
    free(begin_file);
    free(cur);

    /* Epochs: changes before the point that the base does not hold. */
    size_t total = 0, ci = 0;
    for (k = 0; k < lg->npoints; k++) {
        while (ci < lg->nchanges && lg->changes[ci] < lg->point_rec[k])
            ci++;
        const size_t *be = &lg->base_end[k * nf];
        size_t lo = SIZE_MAX;
        for (size_t f = 0; f < nf; f++)
            lo = be[f] < lo ? be[f] : lo;
        for (size_t c = lo; c < ci; c++)
            if (c >= be[lg->recs[lg->changes[c]].h.file])
                total++;
    }
    lg->epoch_idx = calloc(total + 1, sizeof *lg->epoch_idx);
    if (!lg->epoch_idx)
        return -ENOMEM;
    total = 0;
    ci = 0;
    for (k = 0; k < lg->npoints; k++) {
        while (ci < lg->nchanges && lg->changes[ci] < lg->point_rec[k])
            ci++;
        const size_t *be = &lg->base_end[k * nf];
        size_t lo = SIZE_MAX;
        for (size_t f = 0; f < nf; f++)
            lo = be[f] < lo ? be[f] : lo;
        lg->epoch_off[k] = total;
        for (size_t c = lo; c < ci; c++)
            if (c >= be[lg->recs[lg->changes[c]].h.file])
                lg->epoch_idx[total++] = c;
        lg->epoch_len[k] = total - lg->epoch_off[k];
    }
    return 0;
}

int clog_load(struct clog *lg, const char *path)
{
    int err;

    memset(lg, 0, sizeof *lg);
    err = read_file(path, &lg->buf, &lg->len);
    if (err) {
        fprintf(stderr, "%s: %s\n", path, strerror(-err));
        return err;
    }
    if (lg->len < 8 || memcmp(lg->buf, IO_LOG_MAGIC, 8) != 0) {
        fprintf(stderr, "%s: not a diskserve I/O log\n", path);
        return -EINVAL;
    }
    err = parse_records(lg, path);
    if (!err)
        err = index_files(lg, path);
    if (!err)
        err = index_points(lg, path);
    if (err == -ENOMEM)
        fprintf(stderr, "%s: out of memory\n", path);
    return err;
}

void clog_free(struct clog *lg)
{
    for (size_t i = 0; i < lg->nfiles; i++) {
        free(lg->files[i].path);
        free(lg->files[i].init);
    }
    free(lg->files);
    free(lg->recs);
    free(lg->buf);
    free(lg->changes);
    free(lg->base_end);
    free(lg->epoch_off);
    free(lg->epoch_len);
    free(lg->epoch_idx);
    free(lg->point_rec);
    memset(lg, 0, sizeof *lg);
}

static const char *base_name(const char *path)
{
    const char *s = strrchr(path, '/');
    return s ? s + 1 : path;
}

int clog_set_initial(struct clog *lg, const char *spec)
{
    const char *eq = strchr(spec, '=');
    if (!eq) {
        fprintf(stderr, "--initial %s: want LOGGED=COPY\n", spec);
        return -EINVAL;
    }
    size_t n = (size_t)(eq - spec);
    for (size_t i = 0; i < lg->nfiles; i++) {
        struct clog_file *f = &lg->files[i];
        const char *b = base_name(f->path);
        if ((strlen(f->path) == n && !memcmp(f->path, spec, n)) ||
            (strlen(b) == n && !memcmp(b, spec, n))) {
            size_t len;
            int err = read_file(eq + 1, &f->init, &len);
            if (err) {
                fprintf(stderr, "%s: %s\n", eq + 1, strerror(-err));
                return err;
            }
            f->init_size = len;
            f->has_init = true;
            return 0;
        }
    }
    /* A file never changed (a backing file) is not in the log. */
    return 1;
}

int clog_check_initial(const struct clog *lg)
{
    for (size_t i = 0; i < lg->nfiles; i++)
        if (!lg->files[i].has_init) {
            fprintf(stderr, "no --initial contents for logged file %s\n",
                    lg->files[i].path);
            return -EINVAL;
        }
    return 0;
}

const struct clog_rec *clog_epoch_rec(const struct clog *lg, size_t k,
                                      size_t i)
{
    return &lg->recs[lg->changes[lg->epoch_idx[lg->epoch_off[k] + i]]];
}

/* ---- files in memory ---------------------------------------------- */

static int mfile_reserve(struct mfile *f, uint64_t n)
{
    if (n <= f->cap)
        return 0;
    uint64_t cap = f->cap ? f->cap : 65536;
    while (cap < n)
        cap *= 2;
    uint8_t *p = realloc(f->data, cap);
    if (!p)
        return -ENOMEM;
    memset(p + f->cap, 0, cap - f->cap);
    f->data = p;
    f->cap = cap;
    return 0;
}

static int mfile_resize(struct mfile *f, uint64_t size)
{
    if (size < f->size)
        memset(f->data + size, 0, f->size - size);
    int err = mfile_reserve(f, size);
    if (!err)
        f->size = size;
    return err;
}

int mstate_init(struct mstate *m, const struct clog *lg)
{
    m->n = lg->nfiles;
    m->f = calloc(m->n + 1, sizeof *m->f);
    if (!m->f)
        return -ENOMEM;
    for (size_t i = 0; i < m->n; i++) {
        if (mfile_resize(&m->f[i], lg->files[i].init_size) < 0)
            return -ENOMEM;
        if (lg->files[i].init_size)
            memcpy(m->f[i].data, lg->files[i].init, lg->files[i].init_size);
    }
    return 0;
}

int mstate_copy(struct mstate *dst, const struct mstate *src)
{
    if (!dst->f) {
        dst->f = calloc(src->n + 1, sizeof *dst->f);
        if (!dst->f)
            return -ENOMEM;
        dst->n = src->n;
    }
    for (size_t i = 0; i < src->n; i++) {
        struct mfile *d = &dst->f[i];
        const struct mfile *s = &src->f[i];
        if (mfile_reserve(d, s->cap) < 0)
            return -ENOMEM;
        if (s->size)
            memcpy(d->data, s->data, s->size);
        if (d->size > s->size)      /* keep bytes past the size zero */
            memset(d->data + s->size, 0, d->size - s->size);
        d->size = s->size;
    }
    return 0;
}

static int apply_fallocate(struct mfile *f, const struct io_log_rec *h)
{
    uint64_t end = h->off + h->len;

    if (h->mode & (FALLOC_FL_COLLAPSE_RANGE | FALLOC_FL_INSERT_RANGE))
        return -ENOTSUP;
    if (!(h->mode & FALLOC_FL_KEEP_SIZE) && end > f->size &&
        mfile_resize(f, end) < 0)
        return -ENOMEM;
    if ((h->mode & (FALLOC_FL_PUNCH_HOLE | FALLOC_FL_ZERO_RANGE)) &&
        h->off < f->size)
        memset(f->data + h->off, 0,
               (end < f->size ? end : f->size) - h->off);
    return 0;
}

int mstate_apply(struct mstate *m, const struct clog_rec *r, uint64_t from,
                 uint64_t to)
{
    const struct io_log_rec *h = &r->h;
    struct mfile *f = &m->f[h->file];

    switch (h->type) {
    case IO_REC_WRITE:
        if (to > h->len)
            to = h->len;
        if (from >= to)
            return 0;
        if (h->off + to > f->size && mfile_resize(f, h->off + to) < 0)
            return -ENOMEM;
        memcpy(f->data + h->off + from, r->data + from, to - from);
        return 0;
    case IO_REC_TRUNCATE:
        return mfile_resize(f, h->off);
    case IO_REC_FALLOCATE:
        return apply_fallocate(f, h);
    default:
        return 0;
    }
}

int mstate_advance(struct mstate *m, const struct clog *lg, size_t *applied,
                   size_t k)
{
    const size_t *be = &lg->base_end[k * (lg->nfiles ? lg->nfiles : 1)];

    for (size_t f = 0; f < lg->nfiles; f++) {
        for (size_t c = applied[f]; c < be[f]; c++) {
            const struct clog_rec *r = &lg->recs[lg->changes[c]];
            if (r->h.file != f)
                continue;
            int err = mstate_apply(m, r, 0, UINT64_MAX);
            if (err)
                return err;
        }
        if (be[f] > applied[f])
            applied[f] = be[f];
    }
    return 0;
}

int mstate_build_base(struct mstate *m, const struct clog *lg, size_t k,
                      size_t skip)
{
    const size_t *be = &lg->base_end[k * (lg->nfiles ? lg->nfiles : 1)];
    int err = mstate_init(m, lg);

    for (size_t c = 0; !err && c < lg->nchanges; c++) {
        const struct clog_rec *r = &lg->recs[lg->changes[c]];
        if (c != skip && c < be[r->h.file])
            err = mstate_apply(m, r, 0, UINT64_MAX);
    }
    return err;
}

/* Whether the 4 KiB page at off of d (size bytes; the last page may be
 * shorter) is all zeros. */
static bool zero_page(const uint8_t *d, uint64_t size, uint64_t off)
{
    uint64_t n = size - off < 4096 ? size - off : 4096;
    return d[off] == 0 && memcmp(d + off, d + off + 1, n - 1) == 0;
}

int mstate_write(const struct mstate *m, const struct clog *lg,
                 const char *dir)
{
    for (size_t i = 0; i < m->n; i++) {
        char path[4096];
        snprintf(path, sizeof path, "%s/%s", dir,
                 base_name(lg->files[i].path));
        /* Sparse: runs of zero 4 KiB pages are left as holes (VHDX
         * files are mostly zeros: log, metadata and BAT regions). */
        int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
        if (fd < 0)
            return -errno;
        uint64_t done = 0, size = m->f[i].size;
        const uint8_t *d = m->f[i].data;
        while (done < size) {
            if (zero_page(d, size, done)) {
                done += 4096;
                continue;
            }
            uint64_t end = done + 4096;
            while (end < size && !zero_page(d, size, end))
                end += 4096;
            if (end > size)
                end = size;
            while (done < end) {
                ssize_t n = pwrite(fd, d + done, end - done, (off_t)done);
                if (n <= 0) {
                    int err = n < 0 ? -errno : -EIO;
                    close(fd);
                    return err;
                }
                done += (uint64_t)n;
            }
        }
        if (ftruncate(fd, (off_t)m->f[i].size) < 0) {
            int err = -errno;
            close(fd);
            return err;
        }
        close(fd);
    }
    return 0;
}

void mstate_free(struct mstate *m)
{
    for (size_t i = 0; m->f && i < m->n; i++)
        free(m->f[i].data);
    free(m->f);
    m->f = NULL;
    m->n = 0;
}

/* ---- crash states ------------------------------------------------- */

struct cvec {
    struct cstate *v;
    size_t n, cap;
};

static size_t mask_words(uint32_t nops)
{
    return (nops + 63) / 64 + 1;
}

static struct cstate *cvec_add(struct cvec *cv, uint32_t k, uint32_t nops)
{
    if (cv->n == cv->cap) {
        size_t cap = cv->cap ? cv->cap * 2 : 1024;
        void *p = realloc(cv->v, cap * sizeof *cv->v);
        if (!p)
            return NULL;
        cv->v = p;
        cv->cap = cap;
    }
    struct cstate *s = &cv->v[cv->n];
    s->mask = calloc(mask_words(nops), sizeof *s->mask);
    if (!s->mask)
        return NULL;
    s->k = k;
    s->nops = nops;
    s->torn = -1;
    s->piece = s->from = s->to = 0;
    cv->n++;
    return s;
}

static void mask_set(uint64_t *mask, size_t i)
{
    mask[i / 64] |= 1ull << (i % 64);
}

bool cstate_has(const struct cstate *s, size_t i)
{
    return i < s->nops && (s->mask[i / 64] >> (i % 64)) & 1;
}

static int add_subsets(struct cvec *cv, uint32_t k, uint32_t n,
                       uint64_t seed)
{
    struct cstate *s;

    if (n <= SMALL_EPOCH) {
        for (uint64_t bits = 0; bits < (1ull << n); bits++) {
            if (!(s = cvec_add(cv, k, n)))
                return -ENOMEM;
            s->mask[0] = bits;
        }
        return 0;
    }
    if (!cvec_add(cv, k, n))            /* empty */
        return -ENOMEM;
    if (!(s = cvec_add(cv, k, n)))      /* full */
        return -ENOMEM;
    for (uint32_t i = 0; i < n; i++)
        mask_set(s->mask, i);
    for (uint32_t skip = 0; skip < n; skip++) {
        if (!(s = cvec_add(cv, k, n)))
            return -ENOMEM;
        for (uint32_t i = 0; i < n; i++)
            if (i != skip)
                mask_set(s->mask, i);
        if (!(s = cvec_add(cv, k, n)))
            return -ENOMEM;
        mask_set(s->mask, skip);
    }
    uint64_t rng = seed ^ (0xA24BAED4963EE407ull * (k + 1));
    for (int j = 0; j < RANDOM_SUBSETS; j++) {
        if (!(s = cvec_add(cv, k, n)))
            return -ENOMEM;
        for (uint32_t i = 0; i < n; i++)
            if (crash_rand(&rng) & 1)
                mask_set(s->mask, i);
    }
    return 0;
}

static int add_torn(struct cvec *cv, const struct clog *lg, uint32_t k,
                    uint32_t n)
{
    static const uint32_t pieces[] = { 512, 4096 };

    for (uint32_t i = 0; i < n; i++) {
        const struct io_log_rec *h = &clog_epoch_rec(lg, k, i)->h;
        if (h->type != IO_REC_WRITE)
            continue;
        for (size_t p = 0; p < 2; p++) {
            uint64_t pc = pieces[p];
            uint64_t np = (h->off + h->len + pc - 1) / pc - h->off / pc;
            if (np < 2 || np > UINT32_MAX)
                continue;
            uint32_t r[6][3] = {
                /* from, to, 1: also with no other epoch change */
                { 0, 1, 0 }, { (uint32_t)np - 1, (uint32_t)np, 0 },
                { 1, (uint32_t)np, 1 }, { 0, (uint32_t)np - 1, 0 },
                { 0, (uint32_t)np / 2, 0 }, { 0, 0, 0 },
            };
            for (size_t j = 0; j < 6; j++) {
                if (r[j][1] <= r[j][0])
                    continue;
                bool dup = false;
                for (size_t q = 0; q < j; q++)
                    dup |= r[q][0] == r[j][0] && r[q][1] == r[j][1];
                for (unsigned alone = 0; !dup && alone <= r[j][2]; alone++) {
                    struct cstate *s = cvec_add(cv, k, n);
                    if (!s)
                        return -ENOMEM;
                    /* Crashed while writing it: what was logged before
                     * it landed (or, once, nothing else did). */
                    for (uint32_t q = 0; !alone && q < i; q++)
                        mask_set(s->mask, q);
                    s->torn = (int32_t)i;
                    s->piece = (uint32_t)pc;
                    s->from = r[j][0];
                    s->to = r[j][1];
                }
            }
        }
    }
    return 0;
}

int cstates_enumerate(const struct clog *lg, uint64_t seed,
                      struct cstate **out, size_t *n)
{
    struct cvec cv = { 0 };

    for (size_t k = 0; k < lg->npoints; k++) {
        uint32_t nops = (uint32_t)lg->epoch_len[k];
        if (add_subsets(&cv, (uint32_t)k, nops, seed) < 0 ||
            add_torn(&cv, lg, (uint32_t)k, nops) < 0) {
            cstates_free(cv.v, cv.n);
            return -ENOMEM;
        }
    }
    *out = cv.v;
    *n = cv.n;
    return 0;
}

void cstate_free(struct cstate *s)
{
    free(s->mask);
    s->mask = NULL;
}

void cstates_free(struct cstate *v, size_t n)
{
    for (size_t i = 0; i < n; i++)
        free(v[i].mask);
    free(v);
}

char *cstate_spec(const struct cstate *s)
{
    size_t digits = (s->nops + 3) / 4;
    char *out = malloc(digits + 96);
    char *p = out;

    if (!out)
        return NULL;
    p += sprintf(p, "k=%u,ops=", s->k);
    bool any = false;
    for (size_t d = digits; d-- > 0;) {
        unsigned v = (unsigned)(s->mask[d * 4 / 64] >> (d * 4 % 64)) & 15;
        if (!v && !any)
            continue;
        *p++ = "0123456789abcdef"[v];
        any = true;
    }
    if (!any)
        *p++ = '0';
    *p = '\0';
    if (s->torn >= 0)
        sprintf(p, ",torn=%d:%u:%u-%u", s->torn, s->piece, s->from, s->to);
    return out;
}

int cstate_parse(const struct clog *lg, const char *spec, struct cstate *s)
{
    unsigned k;
    int used = 0;

    memset(s, 0, sizeof *s);
    s->torn = -1;
    if (sscanf(spec, "k=%u,ops=%n", &k, &used) != 1 || used == 0 ||
        k >= lg->npoints)
        goto bad;
    s->k = k;
    s->nops = (uint32_t)lg->epoch_len[k];
    s->mask = calloc(mask_words(s->nops), sizeof *s->mask);
    if (!s->mask)
        return -ENOMEM;
    const char *hex = spec + used;
    size_t nd = strspn(hex, "0123456789abcdefABCDEF");
    if (nd == 0)
        goto bad;
    for (size_t d = 0; d < nd; d++) {
        char c = hex[nd - 1 - d];
        unsigned v = c <= '9' ? (unsigned)(c - '0')
                              : (unsigned)((c | 0x20) - 'a' + 10);
        for (unsigned b = 0; b < 4; b++) {
            if (!((v >> b) & 1))
                continue;
            if (d * 4 + b >= s->nops)
                goto bad;
            mask_set(s->mask, d * 4 + b);
        }
    }
    const char *rest = hex + nd;
    if (*rest == '\0')
        return 0;
    int t;
    unsigned pc, from, to;
    used = 0;
    if (sscanf(rest, ",torn=%d:%u:%u-%u%n", &t, &pc, &from, &to, &used) != 4 ||
        rest[used] != '\0' || t < 0 || (uint32_t)t >= s->nops || pc == 0 ||
        from >= to)
        goto bad;
    s->torn = t;
    s->piece = pc;
    s->from = from;
    s->to = to;
    return 0;
bad:
    fprintf(stderr, "bad state '%s' (want k=K,ops=HEX[,torn=I:PIECE:A-B] "
            "with K below %zu and bits within the epoch)\n", spec,
            lg->npoints);
    cstate_free(s);
    return -EINVAL;
}

int cstate_apply(const struct clog *lg, const struct cstate *s,
                 struct mstate *m)
{
    int err = 0;

    for (uint32_t i = 0; !err && i < s->nops; i++) {
        const struct clog_rec *r = clog_epoch_rec(lg, s->k, i);
        if ((int32_t)i == s->torn) {
            uint64_t first = r->h.off / s->piece * s->piece;
            uint64_t a = first + (uint64_t)s->from * s->piece;
            uint64_t b = first + (uint64_t)s->to * s->piece;
            a = a > r->h.off ? a - r->h.off : 0;
            b = b > r->h.off ? b - r->h.off : 0;
            err = mstate_apply(m, r, a, b);
        } else if (cstate_has(s, i)) {
            err = mstate_apply(m, r, 0, UINT64_MAX);
        }
    }
    return err;
}

int cstate_materialize(const struct clog *lg, const struct mstate *base,
                       const struct cstate *s, struct mstate *out)
{
    int err = mstate_copy(out, base);
    return err ? err : cstate_apply(lg, s, out);
}

/* The range of file bytes an epoch change may touch; whole: a truncate,
 * which may touch anything. */
static void change_range(const struct clog_rec *r, uint64_t *off,
                         uint64_t *len, bool *whole)
{
    *whole = r->h.type == IO_REC_TRUNCATE;
    *off = r->h.off;
    *len = r->h.len;
}

int mstate_restore(struct mstate *m, const struct mstate *base,
                   const struct clog *lg, size_t k)
{
    for (size_t i = 0; i < lg->epoch_len[k]; i++) {
        const struct clog_rec *r = clog_epoch_rec(lg, k, i);
        struct mfile *d = &m->f[r->h.file];
        const struct mfile *b = &base->f[r->h.file];
        uint64_t off, len;
        bool whole;
        change_range(r, &off, &len, &whole);
        if (whole) {
            off = 0;
            len = d->cap;
        }
        uint64_t end = off + len < d->cap ? off + len : d->cap;
        for (uint64_t p = off; p < end;) {
            if (p < b->size) {
                uint64_t n = (end < b->size ? end : b->size) - p;
                memcpy(d->data + p, b->data + p, n);
                p += n;
            } else {
                memset(d->data + p, 0, end - p);
                p = end;
            }
        }
    }
    for (size_t f = 0; f < m->n; f++) {
        if (m->f[f].size > base->f[f].size)
            memset(m->f[f].data + base->f[f].size, 0,
                   m->f[f].size - base->f[f].size);
        if (mfile_reserve(&m->f[f], base->f[f].size) < 0)
            return -ENOMEM;
        m->f[f].size = base->f[f].size;
    }
    return 0;
}

static void hash_bytes(uint64_t h[2], const uint8_t *p, uint64_t n)
{
    uint64_t w;

    for (; n >= 8; p += 8, n -= 8) {
        memcpy(&w, p, 8);
        h[0] = (h[0] ^ w) * 0x9E3779B97F4A7C15ull;
        h[0] ^= h[0] >> 32;
        h[1] = (h[1] + w) * 0xC2B2AE3D27D4EB4Full;
        h[1] = (h[1] << 31) | (h[1] >> 33);
    }
    w = n;
    memcpy(&w, p, n);
    h[0] = (h[0] ^ w ^ (n << 56)) * 0x9E3779B97F4A7C15ull;
    h[1] = (h[1] + w + n) * 0xC2B2AE3D27D4EB4Full;
}

void cstate_hash(const struct clog *lg, size_t k, const struct mstate *m,
                 uint64_t out[2])
{
    uint64_t h[2] = { 0x243F6A8885A308D3ull ^ k, 0x13198A2E03707344ull };

    for (size_t f = 0; f < m->n; f++)
        hash_bytes(h, (const uint8_t *)&m->f[f].size, 8);
    for (size_t i = 0; i < lg->epoch_len[k]; i++) {
        const struct clog_rec *r = clog_epoch_rec(lg, k, i);
        const struct mfile *d = &m->f[r->h.file];
        uint64_t off, len;
        bool whole;
        change_range(r, &off, &len, &whole);
        if (whole) {
            off = 0;
            len = d->size;
        }
        uint64_t end = off + len < d->size ? off + len : d->size;
        if (off < end)
            hash_bytes(h, d->data + off, end - off);
    }
    out[0] = h[0];
    out[1] = h[1];
}
