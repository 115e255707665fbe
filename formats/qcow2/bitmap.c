/* qcow2 dirty bitmaps in memory: the chunked bit arrays, the recording
 * of writes, zeroes and trims, and the img_ops entry points that list,
 * describe and change the bitmaps (bitmap_apply, all or nothing).
 *
 * Locking: s->bm_lock guards the list.  A guest write takes it shared
 * only while it sets its bits: before its data I/O is issued (for crash
 * safety) and again after it (so that a bitmap that replaced another
 * while the data was in flight has the write too); writes never wait
 * for each other here: bits are set with atomic ORs and chunks
 * published with a compare-and-swap.  bitmap_apply takes it exclusive,
 * so a write is recorded wholly before a change, wholly after it, or
 * both, never in neither bitmap of a rotation.  Readers of bits
 * (status, info) hold it shared.  bm_lock is taken before the metadata
 * lock, never after.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "qcow2.h"

/* qemu's default granularity bounds for a node with a cluster size. */
#define DEFAULT_GRAN_MIN    4096u
#define DEFAULT_GRAN_MAX    65536u

#define CHUNK_BITS          (1ull << QCOW2_BM_CHUNK_BITS)

struct qcow2_bitmap *qcow2_bitmap_new(const struct qcow2_state *s,
                                      const char *name, size_t name_len,
                                      uint32_t gran_bits)
{
    struct qcow2_bitmap *b = calloc(1, sizeof *b);
    if (!b)
        return NULL;
    b->name = malloc(name_len + 1);
    uint64_t size = s->h.size;
    b->gran_bits = gran_bits;
    b->nbits = (size >> gran_bits) +
               ((size & ((1ull << gran_bits) - 1)) != 0);
    b->n_chunks = (b->nbits + CHUNK_BITS - 1) >> QCOW2_BM_CHUNK_BITS;
    b->chunks = calloc(b->n_chunks ? b->n_chunks : 1, sizeof *b->chunks);
    b->disk_idx = -1;
    if (!b->name || !b->chunks) {
        qcow2_bitmap_free(b);
        return NULL;
    }
    memcpy(b->name, name, name_len);
    b->name[name_len] = '\0';
    return b;
}

void qcow2_bitmap_free(struct qcow2_bitmap *b)
{
    if (!b)
        return;
    if (b->chunks)
        for (uint64_t i = 0; i < b->n_chunks; i++)
            free(b->chunks[i]);
    free(b->chunks);
    free(b->name);
    free(b->extra);
    qcow2_bitmap_free(b->durable);
    free(b->cs_pending);
    free(b);
}

/* The chunk holding bit index c << CHUNK_BITS, allocated if need be;
 * NULL on ENOMEM. */
static uint64_t *chunk_get(struct qcow2_bitmap *b, uint64_t c)
{
    uint64_t *p = __atomic_load_n(&b->chunks[c], __ATOMIC_ACQUIRE);
    if (p)
        return p;
    uint64_t *n = calloc(QCOW2_BM_CHUNK_WORDS, 8);
    if (!n)
        return NULL;
    if (__atomic_compare_exchange_n(&b->chunks[c], &p, n, false,
                                    __ATOMIC_ACQ_REL, __ATOMIC_ACQUIRE))
        return n;
    free(n);
    return p;
}

/* Set the bits of mask in word w of chunk p, unless they are set. */
static inline void word_or(uint64_t *p, uint64_t w, uint64_t mask)
{
    if ((__atomic_load_n(&p[w], __ATOMIC_RELAXED) & mask) != mask)
        __atomic_fetch_or(&p[w], mask, __ATOMIC_RELAXED);
}

int qcow2_bitmap_set_bits(struct qcow2_bitmap *b, uint64_t first,
                          uint64_t n)
{
    uint64_t end = first + n;

    if (end > b->nbits)
        end = b->nbits;
    while (first < end) {
        uint64_t c = first >> QCOW2_BM_CHUNK_BITS;
        uint64_t cend = (c + 1) << QCOW2_BM_CHUNK_BITS;
        uint64_t stop = end < cend ? end : cend;
        uint64_t *p = chunk_get(b, c);
        if (!p)
            return -ENOMEM;
        for (uint64_t i = first; i < stop;) {
            uint64_t w = (i & (CHUNK_BITS - 1)) >> 6;
            uint64_t lo = i & 63;
            uint64_t k = stop - i < 64 - lo ? stop - i : 64 - lo;
            uint64_t mask = k == 64 ? ~0ull : ((1ull << k) - 1) << lo;
            word_or(p, w, mask);
            i += k;
        }
        first = stop;
    }
    return 0;
}

int qcow2_bitmap_or_words(struct qcow2_bitmap *b, uint64_t w,
                          const uint64_t *words, size_t n)
{
    uint64_t nwords = (b->nbits + 63) / 64;

    for (size_t i = 0; i < n && w + i < nwords; i++) {
        uint64_t v = words[i];
        uint64_t wi = w + i;
        if (wi == nwords - 1 && (b->nbits & 63))
            v &= (1ull << (b->nbits & 63)) - 1;    /* tail bits */
        if (!v)
            continue;
        uint64_t *p = chunk_get(b, wi / QCOW2_BM_CHUNK_WORDS);
        if (!p)
            return -ENOMEM;
        word_or(p, wi % QCOW2_BM_CHUNK_WORDS, v);
    }
    return 0;
}

int qcow2_bitmap_put_words(struct qcow2_bitmap *b, uint64_t w,
                           const uint64_t *words, size_t n)
{
    uint64_t nwords = (b->nbits + 63) / 64;

    for (size_t i = 0; i < n && w + i < nwords; i++) {
        uint64_t wi = w + i;
        uint64_t *p = __atomic_load_n(&b->chunks[wi / QCOW2_BM_CHUNK_WORDS],
                                      __ATOMIC_ACQUIRE);
        if (!p && !words[i])
            continue;
        if (!p && !(p = chunk_get(b, wi / QCOW2_BM_CHUNK_WORDS)))
            return -ENOMEM;
        __atomic_store_n(&p[wi % QCOW2_BM_CHUNK_WORDS], words[i],
                         __ATOMIC_RELAXED);
    }
    return 0;
}

bool qcow2_bitmap_all_set(const struct qcow2_bitmap *b, uint64_t first,
                          uint64_t n)
{
    uint64_t end = first + n;

    if (end > b->nbits)
        end = b->nbits;
    for (uint64_t i = first; i < end;) {
        const uint64_t *p = __atomic_load_n(&b->chunks[i >>
                                                       QCOW2_BM_CHUNK_BITS],
                                            __ATOMIC_ACQUIRE);
        if (!p)
            return false;
        uint64_t lo = i & 63;
        uint64_t k = end - i < 64 - lo ? end - i : 64 - lo;
        uint64_t mask = k == 64 ? ~0ull : ((1ull << k) - 1) << lo;
        uint64_t w = __atomic_load_n(&p[(i & (CHUNK_BITS - 1)) >> 6],
                                     __ATOMIC_RELAXED);
        if ((w & mask) != mask)
            return false;
        i += k;
    }
    return true;
}

void qcow2_bitmap_get_words(const struct qcow2_bitmap *b, uint64_t w,
                            uint64_t *out, size_t n)
{
    uint64_t nwords = (b->nbits + 63) / 64;

    for (size_t i = 0; i < n; i++) {
        uint64_t wi = w + i;
        const uint64_t *p = wi < nwords
            ? __atomic_load_n(&b->chunks[wi / QCOW2_BM_CHUNK_WORDS],
                              __ATOMIC_ACQUIRE) : NULL;
        out[i] = p ? __atomic_load_n(&p[wi % QCOW2_BM_CHUNK_WORDS],
                                     __ATOMIC_RELAXED) : 0;
    }
}

/* Whether bit i is set. */
static bool bit_test(const struct qcow2_bitmap *b, uint64_t i)
{
    const uint64_t *p = __atomic_load_n(&b->chunks[i >> QCOW2_BM_CHUNK_BITS],
                                        __ATOMIC_ACQUIRE);
    if (!p)
        return false;
    uint64_t w = __atomic_load_n(&p[(i & (CHUNK_BITS - 1)) >> 6],
                                 __ATOMIC_RELAXED);
    return w >> (i & 63) & 1;
}

/* The first bit from i on (up to end) whose value differs from val;
 * end when none. */
static uint64_t next_change(const struct qcow2_bitmap *b, uint64_t i,
                            uint64_t end, bool val)
{
    while (i < end) {
        uint64_t c = i >> QCOW2_BM_CHUNK_BITS;
        const uint64_t *p = __atomic_load_n(&b->chunks[c], __ATOMIC_ACQUIRE);
        if (!p) {
            if (val)
                return i;
            i = (c + 1) << QCOW2_BM_CHUNK_BITS;
            continue;
        }
        uint64_t w = __atomic_load_n(&p[(i & (CHUNK_BITS - 1)) >> 6],
                                     __ATOMIC_RELAXED);
        if (val)
            w = ~w;
        w &= ~0ull << (i & 63);
        if (w)
            return (i & ~63ull) + (uint64_t)__builtin_ctzll(w) < end
                   ? (i & ~63ull) + (uint64_t)__builtin_ctzll(w) : end;
        i = (i & ~63ull) + 64;
    }
    return end;
}

/* Number of set bits. */
static uint64_t count_bits(const struct qcow2_bitmap *b)
{
    uint64_t n = 0;

    for (uint64_t c = 0; c < b->n_chunks; c++) {
        const uint64_t *p = __atomic_load_n(&b->chunks[c], __ATOMIC_ACQUIRE);
        if (!p)
            continue;
        for (uint32_t w = 0; w < QCOW2_BM_CHUNK_WORDS; w++)
            n += (uint64_t)__builtin_popcountll(
                     __atomic_load_n(&p[w], __ATOMIC_RELAXED));
    }
    return n;
}

/* Set the bits of guest bytes [off, off + len), rounded out. */
static int set_bytes(struct qcow2_bitmap *b, uint64_t off, uint64_t len)
{
    if (len == 0)
        return 0;
    uint64_t first = off >> b->gran_bits;
    uint64_t last = (off + len - 1) >> b->gran_bits;
    return qcow2_bitmap_set_bits(b, first, last - first + 1);
}

int qcow2_bitmaps_record(struct qcow2_state *s, uint64_t off, uint64_t len,
                         uint64_t *gen)
{
    int err = 0;

    /* The list version first: read before the list, it can only make
     * record_done record once more than needed. */
    *gen = __atomic_load_n(&s->bm_gen, __ATOMIC_ACQUIRE);
    if (__atomic_load_n(&s->n_recording, __ATOMIC_ACQUIRE) == 0)
        return 0;
    pthread_rwlock_rdlock(&s->bm_lock);
    for (size_t i = 0; i < s->n_bitmaps && !err; i++)
        if (s->bitmaps[i]->recording)
            err = set_bytes(s->bitmaps[i], off, len);
    if (err)
        img_log("qcow2: %s: out of memory recording a write in a dirty "
                "bitmap", s->img.path);
    else if (s->bm_cs)
        err = qcow2_bitmaps_cs_wait(s, off, len);
    pthread_rwlock_unlock(&s->bm_lock);
    return err;
}

int qcow2_bitmaps_record_done(struct qcow2_state *s, uint64_t off,
                              uint64_t len, uint64_t gen, int err)
{
    /* No bitmap_apply since the first recording: nothing to add. */
    if (__atomic_load_n(&s->bm_gen, __ATOMIC_ACQUIRE) == gen)
        return err;
    int rerr = qcow2_bitmaps_record(s, off, len, &gen);
    return err ? err : rerr;
}

/* ---- the img_ops entry points ---- */

static struct qcow2_bitmap *find(const struct qcow2_state *s,
                                 const char *name)
{
    for (size_t i = 0; i < s->n_bitmaps; i++)
        if (!strcmp(s->bitmaps[i]->name, name))
            return s->bitmaps[i];
    return NULL;
}

size_t qcow2_bitmap_count_op(struct image *img)
{
    struct qcow2_state *s = qcow2_from_img(img);

    pthread_rwlock_rdlock(&s->bm_lock);
    size_t n = s->n_bitmaps;
    pthread_rwlock_unlock(&s->bm_lock);
    return n;
}

int qcow2_bitmap_info_op(struct image *img, size_t i,
                         struct img_bitmap_info *info)
{
    struct qcow2_state *s = qcow2_from_img(img);
    int err = 0;

    pthread_rwlock_rdlock(&s->bm_lock);
    if (i >= s->n_bitmaps) {
        err = -ENOENT;
        goto out_unlock;
    }
    const struct qcow2_bitmap *b = s->bitmaps[i];
    memset(info, 0, sizeof *info);
    snprintf(info->name, sizeof info->name, "%s", b->name);
    info->granularity = 1ull << b->gran_bits;
    info->count = count_bits(b) << b->gran_bits;
    info->recording = b->recording;
    info->persistent = b->persistent;
    info->inconsistent = b->inconsistent;
out_unlock:
    pthread_rwlock_unlock(&s->bm_lock);
    return err;
}

int qcow2_bitmap_status_op(struct image *img, const char *name, uint64_t len,
                           uint64_t off, struct img_extents *e)
{
    struct qcow2_state *s = qcow2_from_img(img);
    int err = 0;

    pthread_rwlock_rdlock(&s->bm_lock);
    const struct qcow2_bitmap *b = find(s, name);
    if (!b) {
        err = -ENOENT;
        goto out_unlock;
    }
    uint64_t end = off + len;
    if (end > img->size || end < off)
        end = img->size;
    if (off >= end) {
        err = -EINVAL;
        goto out_unlock;
    }
    uint64_t i = off >> b->gran_bits;
    uint64_t last = (end - 1) >> b->gran_bits;
    while (off < end) {
        bool dirty = bit_test(b, i);
        uint64_t next = next_change(b, i + 1, last + 1, dirty);
        uint64_t stop = next << b->gran_bits;
        if (stop > end || next > last)
            stop = end;
        if (!img_extents_add(e, stop - off, dirty ? 1 : 0, 0))
            break;
        off = stop;
        i = next;
    }
out_unlock:
    pthread_rwlock_unlock(&s->bm_lock);
    return err;
}

/* ---- bitmap_apply ---- */

/* A bitmap as the actions see it while they are checked: changes go to
 * a copy (made on first change), the original stays in the list until
 * the commit. */
struct slot {
    struct qcow2_bitmap *orig;      /* NULL: added by these actions */
    struct qcow2_bitmap *b;         /* current state, or NULL: removed */
    bool copied;                    /* b is ours (a copy or a new one) */
};

struct plan {
    struct qcow2_state *s;
    struct slot *v;
    size_t n, cap;
    char *msg;
    size_t msglen;
};

__attribute__((format(printf, 3, 4)))
static int refuse(struct plan *p, int err, const char *fmt, ...)
{
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(p->msg, p->msglen, fmt, ap);
    va_end(ap);
    return err;
}

static struct slot *plan_find(struct plan *p, const char *name)
{
    for (size_t i = 0; i < p->n; i++)
        if (p->v[i].b && !strcmp(p->v[i].b->name, name))
            return &p->v[i];
    return NULL;
}

struct qcow2_bitmap *qcow2_bitmap_copy(const struct qcow2_state *s,
                                       const struct qcow2_bitmap *b)
{
    struct qcow2_bitmap *c = qcow2_bitmap_new(s, b->name, strlen(b->name),
                                              b->gran_bits);
    if (!c)
        return NULL;
    c->recording = b->recording;
    c->persistent = b->persistent;
    c->inconsistent = b->inconsistent;
    c->disk_idx = b->disk_idx;
    if (b->extra_size) {
        c->extra = malloc(b->extra_size);
        if (!c->extra)
            goto out_free;
        memcpy(c->extra, b->extra, b->extra_size);
        c->extra_size = b->extra_size;
    }
    for (uint64_t i = 0; i < b->n_chunks; i++) {
        const uint64_t *q = __atomic_load_n(&b->chunks[i], __ATOMIC_ACQUIRE);
        if (!q)
            continue;
        c->chunks[i] = malloc(QCOW2_BM_CHUNK_WORDS * 8);
        if (!c->chunks[i])
            goto out_free;
        for (uint32_t w = 0; w < QCOW2_BM_CHUNK_WORDS; w++)
            c->chunks[i][w] = __atomic_load_n(&q[w], __ATOMIC_RELAXED);
    }
    return c;

out_free:
    qcow2_bitmap_free(c);
    return NULL;
}

/* Make s's bitmap writable in the plan (copied on first change). */
static int own(struct plan *p, struct slot *sl)
{
    if (sl->copied)
        return 0;
    struct qcow2_bitmap *c = qcow2_bitmap_copy(p->s, sl->b);
    if (!c)
        return refuse(p, -ENOMEM, "out of memory");
    sl->b = c;
    sl->copied = true;
    return 0;
}

static int plan_push(struct plan *p, struct qcow2_bitmap *orig,
                     struct qcow2_bitmap *b, bool copied)
{
    if (p->n == p->cap) {
        size_t cap = p->cap ? 2 * p->cap : 16;
        struct slot *v = realloc(p->v, cap * sizeof *v);
        if (!v)
            return refuse(p, -ENOMEM, "out of memory");
        p->v = v;
        p->cap = cap;
    }
    p->v[p->n++] = (struct slot){ orig, b, copied };
    return 0;
}

static void plan_free(struct plan *p)
{
    for (size_t i = 0; i < p->n; i++)
        if (p->v[i].copied)
            qcow2_bitmap_free(p->v[i].b);
    free(p->v);
}

static uint32_t default_gran_bits(const struct qcow2_state *s)
{
    uint32_t g = s->cluster_size;
    if (g < DEFAULT_GRAN_MIN)
        g = DEFAULT_GRAN_MIN;
    if (g > DEFAULT_GRAN_MAX)
        g = DEFAULT_GRAN_MAX;
    return (uint32_t)__builtin_ctz(g);
}

static int do_add(struct plan *p, const struct img_bitmap_action *a)
{
    struct qcow2_state *s = p->s;
    size_t len = strlen(a->name);
    uint64_t g = a->granularity;
    uint32_t bits;

    if (len == 0)
        return refuse(p, -EINVAL, "Bitmap name cannot be empty");
    if (len > IMG_BITMAP_NAME_MAX)
        return refuse(p, -EINVAL, "Bitmap name is too long (max %d bytes)",
                      IMG_BITMAP_NAME_MAX);
    if (plan_find(p, a->name))
        return refuse(p, -EEXIST, "Bitmap already exists: %.200s", a->name);
    if (g == 0) {
        bits = default_gran_bits(s);
    } else {
        if (g < 512 || (g & (g - 1)) ||
            g > (1ull << QCOW2_MAX_GRAN_BITS))
            return refuse(p, -EINVAL, "Granularity must be power of 2 and "
                          "between 512 and %llu",
                          1ull << QCOW2_MAX_GRAN_BITS);
        bits = (uint32_t)__builtin_ctzll(g);
    }
    if (a->persistent) {
        if (s->img.read_only)
            return refuse(p, -EROFS, "Cannot store dirty bitmaps in a "
                          "read-only image");
        if (s->h.version < 3)
            return refuse(p, -ENOTSUP, "Cannot store dirty bitmaps in "
                          "qcow2 v2 files");
        uint64_t bytes = ((s->h.size >> bits) + 8) / 8;
        if (bytes > QCOW2_MAX_BITMAP_BYTES ||
            (bytes + s->cluster_mask) / s->cluster_size >
            QCOW2_MAX_BITMAP_TABLE)
            return refuse(p, -EINVAL, "Too much space will be occupied by "
                          "the bitmap. Use larger granularity");
        size_t n = 0;
        for (size_t i = 0; i < p->n; i++)
            n += p->v[i].b && p->v[i].b->persistent;
        if (n >= QCOW2_MAX_BITMAPS)
            return refuse(p, -ENOSPC, "Maximum number of persistent "
                          "bitmaps is already reached");
    }
    struct qcow2_bitmap *b = qcow2_bitmap_new(s, a->name, len, bits);
    if (!b)
        return refuse(p, -ENOMEM, "out of memory");
    b->persistent = a->persistent;
    b->recording = !a->disabled;
    int err = plan_push(p, NULL, b, true);
    if (err)
        qcow2_bitmap_free(b);
    return err;
}

/* The slot of the named bitmap for an action that changes it; checks
 * that it exists, is consistent and may change. */
static int target(struct plan *p, const char *name, bool modify,
                  struct slot **out)
{
    struct slot *sl = plan_find(p, name);
    if (!sl)
        return refuse(p, -ENOENT, "Dirty bitmap '%.200s' not found", name);
    if (sl->b->inconsistent)
        return refuse(p, -EINVAL, "Bitmap '%.200s' is inconsistent and "
                      "cannot be used (remove it and create a new one)",
                      name);
    if (modify && sl->b->persistent && p->s->img.read_only)
        return refuse(p, -EROFS, "Bitmap '%.200s' is readonly and cannot "
                      "be modified", name);
    *out = sl;
    return 0;
}

/* OR every dirty range of src into dst, rounded out to dst's
 * granularity (as qemu merges bitmaps of different granularity). */
static int merge_into(struct qcow2_bitmap *dst, const struct qcow2_bitmap *src)
{
    uint64_t i = 0;

    if (dst->gran_bits == src->gran_bits) {
        for (uint64_t c = 0; c < src->n_chunks; c++) {
            const uint64_t *q = src->chunks[c];
            if (!q)
                continue;
            int err = qcow2_bitmap_or_words(dst, c * QCOW2_BM_CHUNK_WORDS, q,
                                            QCOW2_BM_CHUNK_WORDS);
            if (err)
                return err;
        }
        return 0;
    }
    while (i < src->nbits) {
        uint64_t a = next_change(src, i, src->nbits, false);
        if (a >= src->nbits)
            break;
        uint64_t b = next_change(src, a, src->nbits, true);
        int err = set_bytes(dst, a << src->gran_bits,
                            (b - a) << src->gran_bits);
        if (err)
            return err;
        i = b;
    }
    return 0;
}

static int do_action(struct plan *p, const struct img_bitmap_action *a)
{
    struct slot *sl;
    int err;

    if (!a->name)
        return refuse(p, -EINVAL, "missing bitmap name");
    switch (a->op) {
    case IMG_BITMAP_ADD:
        return do_add(p, a);
    case IMG_BITMAP_REMOVE:
        sl = plan_find(p, a->name);
        if (!sl)
            return refuse(p, -ENOENT, "Dirty bitmap '%.200s' not found",
                          a->name);
        if (sl->b->persistent && p->s->img.read_only)
            return refuse(p, -EROFS, "Bitmap '%.200s' is readonly and "
                          "cannot be modified", a->name);
        if (sl->copied)
            qcow2_bitmap_free(sl->b);
        sl->b = NULL;
        sl->copied = false;
        return 0;
    case IMG_BITMAP_CLEAR:
        err = target(p, a->name, true, &sl);
        if (!err && sl->copied) {
            for (uint64_t c = 0; c < sl->b->n_chunks; c++) {
                free(sl->b->chunks[c]);
                sl->b->chunks[c] = NULL;
            }
        } else if (!err) {
            /* A fresh empty copy rather than a copy of the bits. */
            struct qcow2_bitmap *o = sl->b;
            struct qcow2_bitmap *c = qcow2_bitmap_new(p->s, o->name,
                                                      strlen(o->name),
                                                      o->gran_bits);
            if (!c || (o->extra_size && !(c->extra = malloc(o->extra_size)))) {
                qcow2_bitmap_free(c);
                return refuse(p, -ENOMEM, "out of memory");
            }
            if (o->extra_size)
                memcpy(c->extra, o->extra, o->extra_size);
            c->extra_size = o->extra_size;
            c->recording = o->recording;
            c->persistent = o->persistent;
            c->disk_idx = o->disk_idx;
            sl->b = c;
            sl->copied = true;
        }
        return err;
    case IMG_BITMAP_ENABLE:
    case IMG_BITMAP_DISABLE:
        err = target(p, a->name, true, &sl);
        if (!err)
            err = own(p, sl);
        if (!err)
            sl->b->recording = a->op == IMG_BITMAP_ENABLE;
        return err;
    case IMG_BITMAP_MERGE:
        err = target(p, a->name, true, &sl);
        if (err)
            return err;
        for (size_t k = 0; k < a->n_sources; k++) {
            struct slot *src;
            if (!a->sources[k])
                return refuse(p, -EINVAL, "missing source bitmap name");
            err = target(p, a->sources[k], false, &src);
            if (err)
                return err;
            if (src == sl)
                continue;
            err = own(p, sl);
            if (err)
                return err;
            if (merge_into(sl->b, src->b))
                return refuse(p, -ENOMEM, "out of memory");
        }
        return 0;
    }
    return refuse(p, -EINVAL, "unknown bitmap operation %d", (int)a->op);
}

/* Install the plan's bitmaps as the list (bm_lock held exclusive). */
static int commit(struct plan *p)
{
    struct qcow2_state *s = p->s;
    size_t n = 0;
    uint32_t recording = 0;

    for (size_t i = 0; i < p->n; i++)
        n += p->v[i].b != NULL;
    struct qcow2_bitmap **v = calloc(n ? n : 1, sizeof *v);
    if (!v)
        return refuse(p, -ENOMEM, "out of memory");
    bool persistent_change = false;
    n = 0;
    for (size_t i = 0; i < p->n; i++) {
        struct slot *sl = &p->v[i];
        if (sl->b != sl->orig &&
            ((sl->b && sl->b->persistent) || (sl->orig &&
                                              sl->orig->persistent)))
            persistent_change = true;
        if (sl->b) {
            v[n++] = sl->b;
            recording += sl->b->recording;
        }
        if (sl->orig && sl->b != sl->orig)
            qcow2_bitmap_free(sl->orig);
        sl->copied = false;     /* now the list's */
    }
    free(s->bitmaps);
    s->bitmaps = v;
    s->n_bitmaps = n;
    __atomic_store_n(&s->n_recording, recording, __ATOMIC_RELEASE);
    __atomic_add_fetch(&s->bm_gen, 1, __ATOMIC_RELEASE);
    if (persistent_change) {
        s->bm_store = true;
        s->bm_store_cs = true;
    }
    return 0;
}

/* Before a stored bitmap changes in memory, flag it in use on disk. */
static int mark_changed(struct plan *p)
{
    struct qcow2_state *s = p->s;
    bool any = false;

    /* Crash safe: the whole set is stored again after the change. */
    if (!s->writable || s->n_bm_disk == 0 || s->bm_cs)
        return 0;
    bool *mask = calloc(s->n_bm_disk, sizeof *mask);
    if (!mask)
        return refuse(p, -ENOMEM, "out of memory");
    for (size_t i = 0; i < p->n; i++) {
        const struct slot *sl = &p->v[i];
        if (sl->orig && sl->b != sl->orig && sl->orig->disk_idx >= 0 &&
            !(s->bm_disk[sl->orig->disk_idx].flags & QCOW2_BME_IN_USE)) {
            mask[sl->orig->disk_idx] = true;
            any = true;
        }
    }
    int err = 0;
    if (any) {
        qcow2_lock(s);
        err = qcow2_bitmaps_mark_in_use(s, mask);
        qcow2_unlock(s);
        if (err)
            refuse(p, err, "cannot flag the stored bitmaps in use: %s",
                   strerror(-err));
    }
    free(mask);
    return err;
}

int qcow2_bitmap_apply_op(struct image *img, const struct img_bitmap_action *a,
                          size_t n, char *msg, size_t msglen)
{
    struct qcow2_state *s = qcow2_from_img(img);
    char dummy[8];
    struct plan p = { .s = s, .msg = msglen ? msg : dummy,
                      .msglen = msglen ? msglen : sizeof dummy };
    int err = 0;

    p.msg[0] = '\0';
    pthread_rwlock_wrlock(&s->bm_lock);
    s->bm_store_cs = false;
    for (size_t i = 0; i < s->n_bitmaps && !err; i++)
        err = plan_push(&p, s->bitmaps[i], s->bitmaps[i], false);
    for (size_t i = 0; i < n && !err; i++)
        err = do_action(&p, &a[i]);
    if (!err)
        err = mark_changed(&p);
    if (!err)
        err = commit(&p);
    if (!err && s->bm_cs && s->bm_store_cs) {
        /* Until the store, writes wait here (bm_lock is exclusive). */
        qcow2_lock(s);
        err = qcow2_bitmaps_store(s, true);
        qcow2_unlock(s);
        if (err) {
            /* Memory changed already: stop writing rather than let a
             * crash find bitmaps that miss writes. */
            s->cs_err = err;
            refuse(&p, err, "storing the changed bitmaps failed (%s); "
                   "writes are refused from now on", strerror(-err));
        }
    }
    pthread_rwlock_unlock(&s->bm_lock);
    plan_free(&p);
    return err;
}
