/* The qcow2 metadata table cache: L2 tables or refcount blocks (one
 * cluster each) keyed by their offset in the file, shared by every worker
 * thread of an image.
 *
 * Lookups are O(1) through a chained hash over a fixed array of slots.
 * One mutex guards the hash and the slot states, and is held only for
 * the bookkeeping, never across disk I/O: a miss claims a victim slot,
 * marks it LOADING and drops the lock to read the table; readers of the
 * same table wait on the condition variable meanwhile.  A pinned slot
 * (refs > 0) is never evicted, so its data stays valid until put.
 * Replacement is the clock algorithm.  Slot buffers are allocated on
 * first use, so a cache sized for a large image costs memory only for
 * the tables actually read.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#include "io.h"
#include "qcow2.h"

#define MIN_SLOTS       16
#define NO_SLOT         UINT32_MAX

enum slot_state {
    SLOT_EMPTY,
    SLOT_LOADING,
    SLOT_READY,
};

struct slot {
    struct qcow2_table t;           /* first: handed out to callers */
    uint8_t *buf;
    uint64_t key;                   /* file offset of the table */
    uint32_t next;                  /* hash chain */
    uint32_t refs;
    uint8_t state;
    bool referenced;                /* clock bit */
    bool dirty;                     /* changed since read or written */
    uint64_t first_seq;             /* dirty: the change that made it so */
    uint64_t last_seq;              /* dirty: its latest change */
};

struct qcow2_cache {
    pthread_mutex_t lock;
    pthread_cond_t changed;         /* a load finished or a pin dropped */
    unsigned waiters;
    const char *name;
    int fd;
    uint32_t table_size;
    uint32_t nslots;
    uint32_t hand;                  /* clock hand */
    uint32_t hash_mask;
    uint32_t *buckets;
    struct slot *slots;
    uint64_t hits;
    uint64_t misses;
    uint32_t ndirty;
    uint64_t seq;                   /* changes so far */
    qcow2_cache_writeback_fn *writeback;
    void *wb_opaque;
};

static uint32_t hash_key(const struct qcow2_cache *c, uint64_t key)
{
    uint64_t h = (key / c->table_size) * 0x9e3779b97f4a7c15ull;
    return (uint32_t)(h >> 32) & c->hash_mask;
}

struct qcow2_cache *qcow2_cache_create(const char *name, int fd,
                                       uint32_t table_size, size_t bytes)
{
    struct qcow2_cache *c = calloc(1, sizeof *c);
    if (!c)
        return NULL;
    size_t n = bytes / table_size;
    if (n < MIN_SLOTS)
        n = MIN_SLOTS;
    if (n > (1u << 24))
        n = 1u << 24;
    uint32_t nb = 1;
    while (nb < 2 * n)
        nb <<= 1;
    c->slots = calloc(n, sizeof *c->slots);
    c->buckets = malloc(nb * sizeof *c->buckets);
    if (!c->slots || !c->buckets)
        goto out_free;
    for (uint32_t i = 0; i < nb; i++)
        c->buckets[i] = NO_SLOT;
    c->nslots = (uint32_t)n;
    c->hash_mask = nb - 1;
    c->name = name;
    c->fd = fd;
    c->table_size = table_size;
    if (pthread_mutex_init(&c->lock, NULL) != 0)
        goto out_free;
    if (pthread_cond_init(&c->changed, NULL) != 0) {
        pthread_mutex_destroy(&c->lock);
        goto out_free;
    }
    return c;

out_free:
    free(c->slots);
    free(c->buckets);
    free(c);
    errno = ENOMEM;
    return NULL;
}

void qcow2_cache_destroy(struct qcow2_cache *c)
{
    if (!c)
        return;
    for (uint32_t i = 0; i < c->nslots; i++)
        free(c->slots[i].buf);
    pthread_cond_destroy(&c->changed);
    pthread_mutex_destroy(&c->lock);
    free(c->slots);
    free(c->buckets);
    free(c);
}

/* Record a change to slot s; caller holds the lock. */
static void set_dirty(struct qcow2_cache *c, struct slot *s)
{
    s->last_seq = ++c->seq;
    if (!s->dirty) {
        s->dirty = true;
        s->first_seq = s->last_seq;
        c->ndirty++;
    }
}

/* Find the slot holding key; caller holds the lock. */
static struct slot *find(struct qcow2_cache *c, uint64_t key)
{
    for (uint32_t i = c->buckets[hash_key(c, key)]; i != NO_SLOT;
         i = c->slots[i].next)
        if (c->slots[i].key == key && c->slots[i].state != SLOT_EMPTY)
            return &c->slots[i];
    return NULL;
}

/* Take slot s out of its hash chain; caller holds the lock. */
static void unhash(struct qcow2_cache *c, struct slot *s)
{
    uint32_t idx = (uint32_t)(s - c->slots);
    uint32_t *p = &c->buckets[hash_key(c, s->key)];

    while (*p != NO_SLOT) {
        if (*p == idx) {
            *p = s->next;
            break;
        }
        p = &c->slots[*p].next;
    }
    s->next = NO_SLOT;
}

static void wait_changed(struct qcow2_cache *c)
{
    c->waiters++;
    pthread_cond_wait(&c->changed, &c->lock);
    c->waiters--;
}

static void wake(struct qcow2_cache *c)
{
    if (c->waiters)
        pthread_cond_broadcast(&c->changed);
}

/* Pick an unpinned slot by the clock, a clean one if there is any;
 * NULL when all are pinned or loading.  Caller holds the lock. */
static struct slot *pick_victim(struct qcow2_cache *c)
{
    struct slot *dirty = NULL;

    for (uint32_t n = 0; n < 2 * c->nslots; n++) {
        struct slot *s = &c->slots[c->hand];
        c->hand = c->hand + 1 == c->nslots ? 0 : c->hand + 1;
        if (s->state == SLOT_EMPTY)
            return s;
        if (s->refs > 0 || s->state == SLOT_LOADING)
            continue;
        if (s->referenced) {
            s->referenced = false;
            continue;
        }
        if (!s->dirty)
            return s;
        if (!dirty)
            dirty = s;
    }
    return dirty;
}

/* Write back slot s, which the caller found dirty and unpinned; the lock
 * is dropped meanwhile and s stays pinned.  0 or -errno. */
static int write_back(struct qcow2_cache *c, struct slot *s)
{
    int err = -EIO;

    s->refs++;
    pthread_mutex_unlock(&c->lock);
    if (c->writeback)
        err = c->writeback(c->wb_opaque, s->key, s->buf);
    pthread_mutex_lock(&c->lock);
    s->refs--;
    if (err == 0 && s->dirty) {
        s->dirty = false;
        c->ndirty--;
    }
    wake(c);
    return err;
}

/* Find offset's slot or claim a victim for it, writing a dirty victim
 * back first unless clean_only.  Returns 0 with the lock held and *out
 * either a READY slot (pinned, *hit true) or a slot hashed under offset
 * in state LOADING and pinned, which the caller fills; -errno (lock
 * held) when a dirty victim could not be written, -EAGAIN when it would
 * have to be and clean_only. */
static int claim_slot(struct qcow2_cache *c, uint64_t offset,
                      bool clean_only, struct slot **out, bool *hit)
{
    struct slot *s;

    for (;;) {
        s = find(c, offset);
        if (s && s->state == SLOT_READY) {
            s->refs++;
            s->referenced = true;
            c->hits++;
            *hit = true;
            *out = s;
            return 0;
        }
        if (s) {                    /* another thread is loading it */
            wait_changed(c);
            continue;
        }
        s = pick_victim(c);
        if (!s) {
            wait_changed(c);        /* every slot pinned: wait for one */
            continue;
        }
        if (s->state == SLOT_READY && s->dirty) {
            if (clean_only)
                return -EAGAIN;
            int err = write_back(c, s);
            if (err)
                return err;
            continue;               /* the world moved meanwhile */
        }
        break;
    }
    if (s->state != SLOT_EMPTY)
        unhash(c, s);
    s->key = offset;
    s->state = SLOT_LOADING;
    s->refs = 1;
    s->referenced = true;
    uint32_t b = hash_key(c, offset);
    s->next = c->buckets[b];
    c->buckets[b] = (uint32_t)(s - c->slots);
    c->misses++;
    *hit = false;
    *out = s;
    return 0;
}

static int claim(struct qcow2_cache *c, uint64_t offset, struct slot **out,
                 bool *hit)
{
    return claim_slot(c, offset, false, out, hit);
}

/* Finish a claimed slot: READY on success, forgotten on failure. */
static void finish_claim(struct qcow2_cache *c, struct slot *s, int err)
{
    if (err) {
        unhash(c, s);
        s->state = SLOT_EMPTY;
        s->refs = 0;
    } else {
        s->state = SLOT_READY;
    }
    wake(c);
}

/* qcow2_cache_get, or qcow2_cache_fetch when clean_only. */
static int get_table(struct qcow2_cache *c, uint64_t offset, bool clean_only,
                     struct qcow2_table **t)
{
    struct slot *s;
    bool hit;

    pthread_mutex_lock(&c->lock);
    int err = claim_slot(c, offset, clean_only, &s, &hit);
    pthread_mutex_unlock(&c->lock);
    if (err)
        return err;
    if (hit) {
        *t = &s->t;
        return 0;
    }

    /* The slot is ours alone while LOADING: fill it without the lock. */
    if (!s->buf) {
        s->buf = malloc(c->table_size);
        if (!s->buf)
            err = -ENOMEM;
    }
    if (!err) {
        err = io_pread_full(c->fd, s->buf, c->table_size, offset);
        if (err == -ENODATA) {
            img_log("qcow2: %s: table at 0x%" PRIx64 " runs past end of "
                    "file", c->name, offset);
            err = -EIO;
        } else if (err) {
            img_log("qcow2: %s: reading table at 0x%" PRIx64 ": %s",
                    c->name, offset, strerror(-err));
        }
    }
    s->t.data = s->buf;

    pthread_mutex_lock(&c->lock);
    finish_claim(c, s, err);
    pthread_mutex_unlock(&c->lock);
    if (err)
        return err;
    *t = &s->t;
    return 0;
}

int qcow2_cache_get(struct qcow2_cache *c, uint64_t offset,
                    struct qcow2_table **t)
{
    return get_table(c, offset, false, t);
}

int qcow2_cache_fetch(struct qcow2_cache *c, uint64_t offset)
{
    struct qcow2_table *t;

    int err = get_table(c, offset, true, &t);
    if (!err)
        qcow2_cache_put(c, &t);
    return err;
}

int qcow2_cache_get_new(struct qcow2_cache *c, uint64_t offset,
                        struct qcow2_table **t)
{
    struct slot *s;
    bool hit;
    int err;

    pthread_mutex_lock(&c->lock);
    err = claim(c, offset, &s, &hit);
    if (err)
        goto out_unlock;
    if (!s->buf) {
        s->buf = malloc(c->table_size);
        if (!s->buf) {
            err = -ENOMEM;
            if (!hit)
                finish_claim(c, s, err);
            else
                s->refs--;
            goto out_unlock;
        }
    }
    memset(s->buf, 0, c->table_size);
    s->t.data = s->buf;
    set_dirty(c, s);
    if (!hit)
        finish_claim(c, s, 0);
    *t = &s->t;
out_unlock:
    pthread_mutex_unlock(&c->lock);
    return err;
}

void qcow2_cache_mark_dirty(struct qcow2_cache *c, struct qcow2_table *t)
{
    struct slot *s = (struct slot *)t;

    pthread_mutex_lock(&c->lock);
    set_dirty(c, s);
    pthread_mutex_unlock(&c->lock);
}

void qcow2_cache_set_writeback(struct qcow2_cache *c,
                               qcow2_cache_writeback_fn *fn, void *opaque)
{
    c->writeback = fn;
    c->wb_opaque = opaque;
}

bool qcow2_cache_has_dirty(struct qcow2_cache *c)
{
    pthread_mutex_lock(&c->lock);
    bool dirty = c->ndirty > 0;
    pthread_mutex_unlock(&c->lock);
    return dirty;
}

int qcow2_cache_flush(struct qcow2_cache *c)
{
    int err = 0;

    pthread_mutex_lock(&c->lock);
    for (uint32_t i = 0; i < c->nslots && c->ndirty > 0 && !err; i++) {
        struct slot *s = &c->slots[i];
        if (s->state == SLOT_READY && s->dirty)
            err = write_back(c, s);
    }
    pthread_mutex_unlock(&c->lock);
    return err;
}

uint64_t qcow2_cache_seq(struct qcow2_cache *c)
{
    pthread_mutex_lock(&c->lock);
    uint64_t seq = c->seq;
    pthread_mutex_unlock(&c->lock);
    return seq;
}

int qcow2_cache_flush_upto(struct qcow2_cache *c, uint64_t seq)
{
    int err = 0;

    pthread_mutex_lock(&c->lock);
    for (uint32_t i = 0; i < c->nslots && c->ndirty > 0 && !err; i++) {
        struct slot *s = &c->slots[i];
        if (s->state == SLOT_READY && s->dirty && s->last_seq <= seq)
            err = write_back(c, s);
    }
    pthread_mutex_unlock(&c->lock);
    return err;
}

bool qcow2_cache_dirty_upto(struct qcow2_cache *c, uint64_t seq)
{
    bool found = false;

    pthread_mutex_lock(&c->lock);
    for (uint32_t i = 0; i < c->nslots && c->ndirty > 0 && !found; i++) {
        const struct slot *s = &c->slots[i];
        found = s->state == SLOT_READY && s->dirty && s->first_seq <= seq;
    }
    pthread_mutex_unlock(&c->lock);
    return found;
}

void qcow2_cache_discard(struct qcow2_cache *c, uint64_t offset)
{
    pthread_mutex_lock(&c->lock);
    struct slot *s = find(c, offset);
    if (s && s->state == SLOT_READY && s->refs == 0) {
        if (s->dirty) {
            s->dirty = false;
            c->ndirty--;
        }
        unhash(c, s);
        s->state = SLOT_EMPTY;
    }
    pthread_mutex_unlock(&c->lock);
}

void qcow2_cache_drop_all(struct qcow2_cache *c)
{
    pthread_mutex_lock(&c->lock);
    for (uint32_t i = 0; i < c->nslots; i++) {
        struct slot *s = &c->slots[i];
        if (s->state != SLOT_READY || s->refs > 0)
            continue;
        unhash(c, s);
        s->state = SLOT_EMPTY;
        s->dirty = false;
    }
    c->ndirty = 0;
    for (uint32_t i = 0; i < c->nslots; i++)
        if (c->slots[i].state == SLOT_READY && c->slots[i].dirty)
            c->ndirty++;
    pthread_mutex_unlock(&c->lock);
}

int qcow2_cache_get_nowait(struct qcow2_cache *c, uint64_t offset,
                           struct qcow2_table **t)
{
    pthread_mutex_lock(&c->lock);
    struct slot *s = find(c, offset);
    if (!s || s->state != SLOT_READY) {
        pthread_mutex_unlock(&c->lock);
        return -EAGAIN;
    }
    s->refs++;
    s->referenced = true;
    c->hits++;
    pthread_mutex_unlock(&c->lock);
    *t = &s->t;
    return 0;
}

void qcow2_cache_put(struct qcow2_cache *c, struct qcow2_table **t)
{
    struct slot *s = (struct slot *)*t;

    if (!s)
        return;
    pthread_mutex_lock(&c->lock);
    if (--s->refs == 0)
        wake(c);
    pthread_mutex_unlock(&c->lock);
    *t = NULL;
}

size_t qcow2_cache_capacity(const struct qcow2_cache *c)
{
    return c->nslots;
}

void qcow2_cache_stats(struct qcow2_cache *c, uint64_t *hits,
                       uint64_t *misses)
{
    pthread_mutex_lock(&c->lock);
    *hits = c->hits;
    *misses = c->misses;
    pthread_mutex_unlock(&c->lock);
}
