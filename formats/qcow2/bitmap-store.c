/* qcow2 persistent dirty bitmaps, storing: the in_use flags set before
 * a stored bitmap can change, and the final store at close.
 *
 * Write order of a store (each step synced before the next):
 *   1. every bitmap's data clusters and table, in new clusters counted
 *      through the allocator (refcount blocks written before the sync);
 *   2. the new directory, in new clusters;
 *   3. the header: bitmaps extension pointing at the new directory and
 *      the autoclear bit (cleared, and the extension dropped, when no
 *      bitmap is left);
 *   4. only then the old directory, tables and data clusters are freed.
 * A crash before 3 leaves the old directory in place (its bitmaps
 * flagged in use, so they read as inconsistent) and leaked clusters; a
 * crash after 3 leaves the new bitmaps and leaked old clusters.  Bitmaps
 * found inconsistent are written back exactly as found, with their old
 * clusters.
 *
 * The flags are set in place: the directory is rewritten at its own
 * offset with only flag words changed (none crosses a sector), then
 * synced, before the first write that a bitmap must record can reach
 * the disk.
 *
 * Everything here runs under the metadata lock with no request running
 * on the bitmaps' list (open, close, bitmap_apply's exclusive lock).
 */
#include <endian.h>
#include <errno.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#include "io.h"
#include "qcow2.h"

/* The directory as loaded, with the flags it has now. */
static uint8_t *disk_dir(const struct qcow2_state *s)
{
    uint8_t *dir = malloc(s->bm_dir_size);
    if (!dir)
        return NULL;
    uint64_t pos = 0;
    for (uint32_t i = 0; i < s->n_bm_disk; i++) {
        const struct qcow2_bm_disk *d = &s->bm_disk[i];
        uint32_t be = htobe32(d->flags);
        memcpy(dir + pos, d->raw, d->raw_len);
        memcpy(dir + pos + offsetof(struct qcow2_disk_bitmap_entry, flags),
               &be, 4);
        pos += d->raw_len;
    }
    return dir;
}

int qcow2_bitmaps_mark_in_use(struct qcow2_state *s, const bool *mask)
{
    uint32_t *old = calloc(s->n_bm_disk ? s->n_bm_disk : 1, sizeof *old);
    if (!old)
        return -ENOMEM;
    for (uint32_t i = 0; i < s->n_bm_disk; i++) {
        old[i] = s->bm_disk[i].flags;
        if (mask[i])
            s->bm_disk[i].flags |= QCOW2_BME_IN_USE;
    }
    int err = -ENOMEM;
    uint8_t *dir = disk_dir(s);
    if (dir) {
        err = qcow2_writes_refused(s) ? -EIO : 0;
        if (!err)
            err = io_pwrite_tag(s->fd, dir, s->bm_dir_size,
                                s->bm_dir_offset, IO_TAG_OTHER);
        if (!err) {
            qcow2_note_write(s);
            err = qcow2_sync(s, IO_TAG_OTHER);
        }
        if (err)
            img_log("qcow2: %s: flagging bitmaps in use: %s", s->img.path,
                    strerror(-err));
        free(dir);
    }
    if (err) {
        for (uint32_t i = 0; i < s->n_bm_disk; i++)
            s->bm_disk[i].flags = old[i];
    } else {
        s->bm_store = true;
    }
    free(old);
    return err;
}

/* Take count clusters in a row at the frontier, counted; *off gets the
 * first's offset.  0 or -errno. */
static int take_run(struct qcow2_state *s, uint64_t count, uint64_t *off)
{
    uint64_t first = s->frontier, counted;

    int err = qcow2_take_frontier(s, first, count);
    if (err)
        return err;
    err = qcow2_count_taken(s, first, count, &counted);
    if (err) {
        qcow2_give_back(s, first, count, counted);
        return err;
    }
    *off = first << s->h.cluster_bits;
    return 0;
}

/* Write b's data clusters and its table into d (table_offset,
 * table_size, table in host order).  full: allocate every data cluster,
 * zeros too, so that crash-safe commits can rewrite them in place.
 * 0 or -errno. */
static int write_bitmap(struct qcow2_state *s, const struct qcow2_bitmap *b,
                        bool full, struct qcow2_bm_disk *d)
{
    uint64_t bytes = (b->nbits + 7) / 8;
    uint64_t n = (bytes + s->cluster_mask) >> s->h.cluster_bits;
    uint64_t words = s->cluster_size / 8;
    int err = 0;

    if (n == 0)
        n = 1;
    uint64_t *table = calloc(n, 8);
    uint64_t *buf = malloc(s->cluster_size);
    if (!table || !buf) {
        err = -ENOMEM;
        goto out_free;
    }
    for (uint64_t j = 0; j < n; j++) {
        qcow2_bitmap_get_words(b, j * words, buf, words);
        bool zero = true;
        for (uint64_t w = 0; w < words && zero; w++)
            zero = buf[w] == 0;
        if (zero && !full)
            continue;
        for (uint64_t w = 0; w < words; w++)
            buf[w] = htole64(buf[w]);
        uint64_t off, got;
        bool fresh;
        err = qcow2_alloc_clusters(s, 1, &off, &got, &fresh);
        if (err)
            goto out_free;
        table[j] = off;
        if (zero && fresh)
            continue;       /* never written: reads as zeros */
        err = io_pwrite_tag(s->fd, buf, s->cluster_size, off, IO_TAG_OTHER);
        if (err)
            goto out_free;
        qcow2_note_write(s);
    }
    uint64_t tbytes = n * 8;
    uint64_t tclusters = (tbytes + s->cluster_mask) >> s->h.cluster_bits;
    uint64_t *be = malloc(tbytes);
    if (!be) {
        err = -ENOMEM;
        goto out_free;
    }
    for (uint64_t j = 0; j < n; j++)
        be[j] = htobe64(table[j]);
    err = take_run(s, tclusters, &d->table_offset);
    if (!err)
        err = io_pwrite_tag(s->fd, be, tbytes, d->table_offset,
                            IO_TAG_OTHER);
    free(be);
    if (err)
        goto out_free;
    qcow2_note_write(s);
    d->table_size = (uint32_t)n;
    d->table = table;
    table = NULL;
out_free:
    free(table);
    free(buf);
    return err;
}

/* Rewrite the header's extension area: a bitmaps extension for (n,
 * dir_size, dir_off), none when n is 0, and our crash-safe extension
 * listing cs (n_cs table offsets), none when n_cs is 0, with the
 * autoclear bits to match; synced.  Other extensions are kept.  0 or
 * -errno. */
static int write_header_ext(struct qcow2_state *s, uint32_t n,
                            uint64_t dir_size, uint64_t dir_off,
                            const uint64_t *cs, uint32_t n_cs)
{
    struct qcow2_header *h = &s->h;
    uint32_t cs_bytes = s->cluster_size;
    uint8_t *old = malloc(cs_bytes);
    uint8_t *buf = calloc(1, cs_bytes);
    int err = -ENOMEM;

    if (!old || !buf)
        goto out_free;
    err = io_pread_full(s->fd, old, cs_bytes, 0);
    if (err && err != -ENODATA)
        goto out_free;
    memcpy(buf, old, h->header_length);
    uint64_t end = h->backing_file_offset ? h->backing_file_offset
                                          : cs_bytes;
    uint64_t in = h->header_length, out = h->header_length;
    while (in + sizeof(struct qcow2_disk_ext) <= end) {
        struct qcow2_disk_ext e;
        memcpy(&e, old + in, sizeof e);
        uint32_t type = be32toh(e.type);
        uint64_t len = (be32toh(e.len) + 7ull) & ~7ull;
        if (type == QCOW2_EXT_END || len > end - in - sizeof e)
            break;
        if (type != QCOW2_EXT_BITMAPS && type != QCOW2_EXT_DS_CRASH_SAFE) {
            memcpy(buf + out, old + in, sizeof e + len);
            out += sizeof e + len;
        }
        in += sizeof e + len;
    }
    uint64_t need = out + (n ? 32 : 0) + (n_cs ? 8 + 8ull * n_cs : 0) + 8 +
                    h->backing_file_size;
    if (need > cs_bytes) {
        img_log("qcow2: %s: no room in the header cluster for the bitmaps "
                "extensions", s->img.path);
        err = -ENOSPC;
        goto out_free;
    }
    if (n) {
        struct qcow2_disk_ext e = { htobe32(QCOW2_EXT_BITMAPS),
                                    htobe32(24) };
        struct qcow2_disk_bitmaps_ext x = { htobe32(n), 0,
                                            htobe64(dir_size),
                                            htobe64(dir_off) };
        memcpy(buf + out, &e, sizeof e);
        memcpy(buf + out + sizeof e, &x, sizeof x);
        out += 32;
    }
    if (n_cs) {
        struct qcow2_disk_ext e = { htobe32(QCOW2_EXT_DS_CRASH_SAFE),
                                    htobe32(8 * n_cs) };
        memcpy(buf + out, &e, sizeof e);
        out += sizeof e;
        for (uint32_t k = 0; k < n_cs; k++) {
            uint64_t v = htobe64(cs[k]);
            memcpy(buf + out, &v, 8);
            out += 8;
        }
    }
    out += 8;                       /* the end marker, zero */
    uint64_t boff = 0;
    if (h->backing_file_offset) {
        boff = out;
        memcpy(buf + out, old + h->backing_file_offset,
               h->backing_file_size);
        out += h->backing_file_size;
    }
    uint64_t be = htobe64(boff);
    memcpy(buf + offsetof(struct qcow2_disk_header, backing_file_offset),
           &be, 8);
    uint64_t autoclear = h->autoclear & ~(QCOW2_AUTOCLEAR_BITMAPS |
                                          QCOW2_AUTOCLEAR_DS_CRASH_SAFE);
    if (n)
        autoclear |= QCOW2_AUTOCLEAR_BITMAPS;
    if (n_cs)
        autoclear |= QCOW2_AUTOCLEAR_DS_CRASH_SAFE;
    be = htobe64(autoclear);
    memcpy(buf + offsetof(struct qcow2_disk_header, autoclear_features),
           &be, 8);
    err = io_pwrite_tag(s->fd, buf, out, 0, IO_TAG_HEADER);
    if (!err) {
        qcow2_note_write(s);
        err = qcow2_sync(s, IO_TAG_HEADER);
    }
    if (!err) {
        h->backing_file_offset = boff;
        h->autoclear = autoclear;
        h->has_bitmaps_ext = n > 0;
        h->bitmaps.nb_bitmaps = n;
        h->bitmaps.reserved = 0;
        h->bitmaps.directory_size = dir_size;
        h->bitmaps.directory_offset = dir_off;
    }
out_free:
    free(old);
    free(buf);
    return err;
}

/* The directory entry of b (table in d, flags) into d->raw. */
static int make_entry(const struct qcow2_bitmap *b, uint32_t flags,
                      struct qcow2_bm_disk *d)
{
    size_t nlen = strlen(b->name);
    struct qcow2_disk_bitmap_entry e = {
        .table_offset = htobe64(d->table_offset),
        .table_size = htobe32(d->table_size),
        .flags = htobe32(flags),
        .type = QCOW2_BME_TYPE_DIRTY,
        .granularity_bits = (uint8_t)b->gran_bits,
        .name_size = htobe16((uint16_t)nlen),
        .extra_data_size = htobe32(b->extra_size),
    };
    uint64_t len = (sizeof e + b->extra_size + nlen + 7) & ~7ull;
    d->raw = calloc(1, len);
    if (!d->raw)
        return -ENOMEM;
    memcpy(d->raw, &e, sizeof e);
    if (b->extra_size)
        memcpy(d->raw + sizeof e, b->extra, b->extra_size);
    memcpy(d->raw + sizeof e + b->extra_size, b->name, nlen);
    d->raw_len = (uint32_t)len;
    d->flags = flags;
    return 0;
}

/* Free the old directory and the clusters of the stored bitmaps that
 * were rewritten or removed: all but the n_keep entries keep names. */
static int free_old(struct qcow2_state *s, const int *keep, uint32_t n_keep)
{
    int err = 0;

    if (s->bm_dir_offset)
        err = qcow2_drop_clusters(s, s->bm_dir_offset,
                                  (s->bm_dir_size + s->cluster_mask) >>
                                  s->h.cluster_bits);
    for (uint32_t i = 0; i < s->n_bm_disk && !err; i++) {
        const struct qcow2_bm_disk *d = &s->bm_disk[i];
        bool kept = false;
        for (uint32_t k = 0; k < n_keep && !kept; k++)
            kept = keep[k] == (int)i;
        if (kept || !d->table)
            continue;
        for (uint32_t j = 0; j < d->table_size && !err; j++) {
            uint64_t off = d->table[j] & QCOW2_BMT_OFFSET_MASK;
            if (off)
                err = qcow2_drop_clusters(s, off, 1);
        }
        if (!err)
            err = qcow2_drop_clusters(s, d->table_offset,
                                      ((uint64_t)d->table_size * 8 +
                                       s->cluster_mask) >> s->h.cluster_bits);
    }
    return err;
}

/* Forget the loaded directory: its entries' memory. */
static void drop_disk(struct qcow2_bm_disk *v, uint32_t n)
{
    for (uint32_t i = 0; i < n; i++) {
        free(v[i].table);
        free(v[i].raw);
    }
    free(v);
}

/* After a store: the new directory is the loaded one now; kept bitmaps'
 * entries move over, crash-safe ones get their durable copies. */
static int install(struct qcow2_state *s, struct qcow2_bm_disk *nd,
                   uint32_t n, const int *from, uint64_t dir_off,
                   uint64_t dir_size, bool crash_safe)
{
    int err = 0;
    uint32_t k = 0;

    for (size_t i = 0; i < s->n_bitmaps; i++) {
        struct qcow2_bitmap *b = s->bitmaps[i];
        qcow2_bitmap_free(b->durable);
        b->durable = NULL;
        free(b->cs_pending);
        b->cs_pending = NULL;
        if (!b->persistent) {
            b->disk_idx = -1;
            continue;
        }
        b->disk_idx = (int)k;
        if (crash_safe && b->recording && !b->inconsistent && !err) {
            b->durable = qcow2_bitmap_copy(s, b);
            b->cs_clusters = nd[k].table_size;
            b->cs_pending = calloc(b->cs_clusters, 1);
            if (!b->durable || !b->cs_pending)
                err = -ENOMEM;
        }
        k++;
    }
    for (uint32_t j = 0; j < n; j++) {
        if (from[j] < 0)
            continue;
        struct qcow2_bm_disk *o = &s->bm_disk[from[j]];
        free(nd[j].raw);        /* a copy; the original moves */
        nd[j] = *o;
        memset(o, 0, sizeof *o);
    }
    drop_disk(s->bm_disk, s->n_bm_disk);
    s->bm_disk = nd;
    s->n_bm_disk = n;
    s->bm_dir_offset = dir_off;
    s->bm_dir_size = dir_size;
    return err;
}

int qcow2_bitmaps_store(struct qcow2_state *s, bool crash_safe)
{
    const char *path = s->img.path;
    struct qcow2_bm_disk *nd = NULL;
    int *from = NULL;
    uint64_t *cs = NULL;
    uint8_t *dir = NULL;
    uint64_t dir_size = 0, dir_off = 0;
    uint32_t n = 0, n_cs = 0;
    int err = 0;

    if (!crash_safe && !s->bm_store)
        return 0;
    if (qcow2_writes_refused(s))
        return -EIO;
    for (size_t i = 0; i < s->n_bitmaps; i++)
        n += s->bitmaps[i]->persistent;
    nd = calloc(n + 1, sizeof *nd);
    from = calloc(n + 1, sizeof *from);
    cs = calloc(n + 1, sizeof *cs);
    if (!nd || !from || !cs) {
        err = -ENOMEM;
        goto out_free;
    }
    uint32_t k = 0;
    for (size_t i = 0; i < s->n_bitmaps; i++) {
        const struct qcow2_bitmap *b = s->bitmaps[i];
        if (!b->persistent)
            continue;
        from[k] = -1;
        if (b->inconsistent) {
            /* Kept exactly as found, with its clusters. */
            const struct qcow2_bm_disk *o = &s->bm_disk[b->disk_idx];
            nd[k].raw = malloc(o->raw_len);
            if (!nd[k].raw) {
                err = -ENOMEM;
                goto out_free;
            }
            memcpy(nd[k].raw, o->raw, o->raw_len);
            nd[k].raw_len = o->raw_len;
            from[k] = b->disk_idx;
        } else {
            bool full = crash_safe && b->recording;
            err = write_bitmap(s, b, full, &nd[k]);
            if (!err)
                err = make_entry(b, (b->recording ? QCOW2_BME_AUTO : 0) |
                                 (b->extra_size ? QCOW2_BME_EXTRA_COMPAT : 0) |
                                 (full ? QCOW2_BME_IN_USE : 0), &nd[k]);
            if (err)
                goto out_io;
            if (full)
                cs[n_cs++] = nd[k].table_offset;
        }
        dir_size += nd[k].raw_len;
        k++;
    }
    if (n > 0) {
        err = qcow2_cache_flush(s->rc_cache);
        if (!err)
            err = qcow2_sync(s, IO_TAG_OTHER);
        if (err)
            goto out_io;
        dir = malloc(dir_size);
        if (!dir) {
            err = -ENOMEM;
            goto out_free;
        }
        uint64_t pos = 0;
        for (uint32_t j = 0; j < n; j++) {
            memcpy(dir + pos, nd[j].raw, nd[j].raw_len);
            pos += nd[j].raw_len;
        }
        err = take_run(s, (dir_size + s->cluster_mask) >> s->h.cluster_bits,
                       &dir_off);
        if (!err)
            err = io_pwrite_tag(s->fd, dir, dir_size, dir_off, IO_TAG_OTHER);
        if (!err) {
            qcow2_note_write(s);
            err = qcow2_cache_flush(s->rc_cache);
        }
        if (!err)
            err = qcow2_sync(s, IO_TAG_OTHER);
        if (err)
            goto out_io;
    }
    err = write_header_ext(s, n, dir_size, dir_off, cs, n_cs);
    if (err)
        goto out_io;
    /* The header no longer names the old structures (but for the kept
     * ones). */
    err = free_old(s, from, n);
    int ierr = install(s, nd, n, from, dir_off, dir_size, crash_safe);
    nd = NULL;
    if (!err)
        err = ierr;
    if (err)
        goto out_io;
    s->bm_store = crash_safe;       /* crash safe: in_use until close */
    goto out_free;

out_io:
    img_log("qcow2: %s: storing the dirty bitmaps: %s", path,
            strerror(-err));
out_free:
    if (nd)
        drop_disk(nd, n);
    free(from);
    free(cs);
    free(dir);
    return err;
}

/* ---- crash-safe group commits ---- */

/* One data cluster a commit writes. */
struct cs_item {
    struct qcow2_bitmap *b;
    uint64_t c;                     /* data cluster index */
    uint64_t *words;                /* the bits written, host order */
};

/* Write every pending cluster and sync, with cs_lock dropped; called
 * and returning with it held, as the only committer. */
static int cs_commit(struct qcow2_state *s)
{
    uint64_t words = s->cluster_size / 8;
    struct cs_item *v = NULL;
    size_t n = 0, cap = 0;
    int err = 0;

    s->cs_running = true;
    uint64_t gen = ++s->cs_started;
    for (size_t i = 0; i < s->n_bitmaps && !err; i++) {
        struct qcow2_bitmap *b = s->bitmaps[i];
        if (!b->durable)
            continue;
        for (uint64_t c = 0; c < b->cs_clusters && !err; c++) {
            if (!b->cs_pending[c])
                continue;
            b->cs_pending[c] = 0;
            if (n == cap) {
                cap = cap ? 2 * cap : 16;
                struct cs_item *nv = realloc(v, cap * sizeof *nv);
                if (!nv) {
                    err = -ENOMEM;
                    break;
                }
                v = nv;
            }
            v[n].b = b;
            v[n].c = c;
            v[n].words = malloc(s->cluster_size);
            if (!v[n].words) {
                err = -ENOMEM;
                break;
            }
            /* Every bit set so far, waiters' included: they set theirs
             * before they marked the cluster pending. */
            qcow2_bitmap_get_words(b, c * words, v[n].words, words);
            n++;
        }
    }
    pthread_mutex_unlock(&s->cs_lock);

    uint64_t *buf = err ? NULL : malloc(s->cluster_size);
    if (!err && !buf)
        err = -ENOMEM;
    for (size_t i = 0; i < n && !err; i++) {
        const struct qcow2_bm_disk *d = &s->bm_disk[v[i].b->disk_idx];
        uint64_t off = d->table[v[i].c] & QCOW2_BMT_OFFSET_MASK;
        for (uint64_t w = 0; w < words; w++)
            buf[w] = htole64(v[i].words[w]);
        err = io_pwrite_tag(s->fd, buf, s->cluster_size, off, IO_TAG_OTHER);
        if (!err)
            qcow2_note_write(s);
    }
    free(buf);
    if (!err)
        err = qcow2_sync(s, IO_TAG_OTHER);

    pthread_mutex_lock(&s->cs_lock);
    for (size_t i = 0; i < n; i++) {
        /* Durable now: what the cluster holds on disk. */
        if (!err && qcow2_bitmap_put_words(v[i].b->durable, v[i].c * words,
                                           v[i].words, words))
            err = -ENOMEM;
        free(v[i].words);
    }
    free(v);
    if (err && !s->cs_err) {
        s->cs_err = err;
        img_log("qcow2: %s: making dirty bitmap bits durable: %s; writes "
                "are refused from now on", s->img.path, strerror(-err));
    }
    s->cs_done = gen;
    s->cs_running = false;
    pthread_cond_broadcast(&s->cs_cond);
    return err;
}

/* Whether the bits of [off, off + len) are durable in every kept
 * bitmap. */
static bool all_durable(const struct qcow2_state *s, uint64_t off,
                        uint64_t len)
{
    for (size_t i = 0; i < s->n_bitmaps; i++) {
        const struct qcow2_bitmap *b = s->bitmaps[i];
        if (!b->durable || !b->recording)
            continue;
        uint64_t first = off >> b->gran_bits;
        uint64_t last = (off + len - 1) >> b->gran_bits;
        if (!qcow2_bitmap_all_set(b->durable, first, last - first + 1))
            return false;
    }
    return true;
}

int qcow2_bitmaps_cs_wait(struct qcow2_state *s, uint64_t off, uint64_t len)
{
    if (len == 0)
        return 0;
    if (__atomic_load_n(&s->cs_err, __ATOMIC_RELAXED))
        return -EIO;
    if (all_durable(s, off, len))
        return 0;
    pthread_mutex_lock(&s->cs_lock);
    for (size_t i = 0; i < s->n_bitmaps; i++) {
        struct qcow2_bitmap *b = s->bitmaps[i];
        if (!b->durable || !b->recording)
            continue;
        uint64_t per = (uint64_t)s->cluster_size * 8;
        uint64_t first = off >> b->gran_bits;
        uint64_t last = (off + len - 1) >> b->gran_bits;
        if (last >= b->nbits)
            last = b->nbits - 1;
        if (qcow2_bitmap_all_set(b->durable, first, last - first + 1))
            continue;
        for (uint64_t c = first / per; c <= last / per &&
                                       c < b->cs_clusters; c++)
            b->cs_pending[c] = 1;
    }
    uint64_t want = s->cs_started + 1;
    while (s->cs_done < want && !s->cs_err) {
        if (!s->cs_running)
            cs_commit(s);
        else
            pthread_cond_wait(&s->cs_cond, &s->cs_lock);
    }
    int err = s->cs_err ? -EIO : 0;
    pthread_mutex_unlock(&s->cs_lock);
    return err;
}
