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

/* Write b's data clusters and its table; *toff and *tsize describe the
 * table.  0 or -errno. */
static int write_bitmap(struct qcow2_state *s, const struct qcow2_bitmap *b,
                        uint64_t *toff, uint32_t *tsize)
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
        if (zero)
            continue;
        for (uint64_t w = 0; w < words; w++)
            buf[w] = htole64(buf[w]);
        uint64_t off, got;
        bool fresh;
        err = qcow2_alloc_clusters(s, 1, &off, &got, &fresh);
        if (err)
            goto out_free;
        err = io_pwrite_tag(s->fd, buf, s->cluster_size, off, IO_TAG_OTHER);
        if (err)
            goto out_free;
        qcow2_note_write(s);
        table[j] = htobe64(off);
    }
    uint64_t tbytes = n * 8;
    uint64_t tclusters = (tbytes + s->cluster_mask) >> s->h.cluster_bits;
    err = take_run(s, tclusters, toff);
    if (err)
        goto out_free;
    err = io_pwrite_tag(s->fd, table, tbytes, *toff, IO_TAG_OTHER);
    if (err)
        goto out_free;
    qcow2_note_write(s);
    *tsize = (uint32_t)n;
out_free:
    free(table);
    free(buf);
    return err;
}

/* Rewrite the header's extension area with a bitmaps extension for
 * (n, dir_size, dir_off), none when n is 0, and the autoclear bit to
 * match; synced.  0 or -errno. */
static int write_header_ext(struct qcow2_state *s, uint32_t n,
                            uint64_t dir_size, uint64_t dir_off)
{
    struct qcow2_header *h = &s->h;
    uint32_t cs = s->cluster_size;
    uint8_t *old = malloc(cs);
    uint8_t *buf = calloc(1, cs);
    int err = -ENOMEM;

    if (!old || !buf)
        goto out_free;
    err = io_pread_full(s->fd, old, cs, 0);
    if (err && err != -ENODATA)
        goto out_free;
    memcpy(buf, old, h->header_length);
    uint64_t end = h->backing_file_offset ? h->backing_file_offset : cs;
    uint64_t in = h->header_length, out = h->header_length;
    while (in + sizeof(struct qcow2_disk_ext) <= end) {
        struct qcow2_disk_ext e;
        memcpy(&e, old + in, sizeof e);
        uint32_t type = be32toh(e.type);
        uint64_t len = (be32toh(e.len) + 7ull) & ~7ull;
        if (type == QCOW2_EXT_END || len > end - in - sizeof e)
            break;
        if (type != QCOW2_EXT_BITMAPS) {
            memcpy(buf + out, old + in, sizeof e + len);
            out += sizeof e + len;
        }
        in += sizeof e + len;
    }
    uint64_t need = out + (n ? 32 : 0) + 8 + h->backing_file_size;
    if (need > cs) {
        img_log("qcow2: %s: no room in the header cluster for the bitmaps "
                "extension", s->img.path);
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
    uint64_t autoclear = n ? h->autoclear | QCOW2_AUTOCLEAR_BITMAPS
                           : h->autoclear & ~QCOW2_AUTOCLEAR_BITMAPS;
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

/* Append the directory entry of b (table at toff, tsize entries) to
 * dir at *pos. */
static void put_entry(uint8_t *dir, uint64_t *pos,
                      const struct qcow2_bitmap *b, uint64_t toff,
                      uint32_t tsize)
{
    size_t nlen = strlen(b->name);
    struct qcow2_disk_bitmap_entry e = {
        .table_offset = htobe64(toff),
        .table_size = htobe32(tsize),
        .flags = htobe32((b->recording ? QCOW2_BME_AUTO : 0) |
                         (b->extra_size ? QCOW2_BME_EXTRA_COMPAT : 0)),
        .type = QCOW2_BME_TYPE_DIRTY,
        .granularity_bits = (uint8_t)b->gran_bits,
        .name_size = htobe16((uint16_t)nlen),
        .extra_data_size = htobe32(b->extra_size),
    };
    uint64_t len = (sizeof e + b->extra_size + nlen + 7) & ~7ull;
    memset(dir + *pos, 0, len);
    memcpy(dir + *pos, &e, sizeof e);
    if (b->extra_size)
        memcpy(dir + *pos + sizeof e, b->extra, b->extra_size);
    memcpy(dir + *pos + sizeof e + b->extra_size, b->name, nlen);
    *pos += len;
}

/* Whether the stored bitmap of directory entry i stays as it is. */
static bool kept(const struct qcow2_state *s, uint32_t i)
{
    for (size_t k = 0; k < s->n_bitmaps; k++)
        if (s->bitmaps[k]->disk_idx == (int)i && s->bitmaps[k]->inconsistent)
            return true;
    return false;
}

/* Free the old directory and the clusters of the stored bitmaps that
 * were rewritten or removed. */
static int free_old(struct qcow2_state *s)
{
    int err = 0;

    if (s->bm_dir_offset)
        err = qcow2_drop_clusters(s, s->bm_dir_offset,
                                  (s->bm_dir_size + s->cluster_mask) >>
                                  s->h.cluster_bits);
    for (uint32_t i = 0; i < s->n_bm_disk && !err; i++) {
        const struct qcow2_bm_disk *d = &s->bm_disk[i];
        if (kept(s, i))
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

int qcow2_bitmaps_store(struct qcow2_state *s)
{
    const char *path = s->img.path;
    uint64_t *toff = NULL;
    uint32_t *tsize = NULL;
    uint8_t *dir = NULL;
    uint64_t dir_size = 0, dir_off = 0;
    uint32_t n = 0;
    int err = 0;

    if (!s->bm_store)
        return 0;
    if (qcow2_writes_refused(s))
        return -EIO;
    toff = calloc(s->n_bitmaps + 1, sizeof *toff);
    tsize = calloc(s->n_bitmaps + 1, sizeof *tsize);
    if (!toff || !tsize) {
        err = -ENOMEM;
        goto out_free;
    }
    for (size_t i = 0; i < s->n_bitmaps; i++) {
        const struct qcow2_bitmap *b = s->bitmaps[i];
        if (!b->persistent)
            continue;
        n++;
        if (b->inconsistent) {
            const struct qcow2_bm_disk *d = &s->bm_disk[b->disk_idx];
            dir_size += d->raw_len;
            continue;
        }
        err = write_bitmap(s, b, &toff[i], &tsize[i]);
        if (err)
            goto out_io;
        dir_size += (sizeof(struct qcow2_disk_bitmap_entry) + b->extra_size +
                     strlen(b->name) + 7) & ~7ull;
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
        for (size_t i = 0; i < s->n_bitmaps; i++) {
            const struct qcow2_bitmap *b = s->bitmaps[i];
            if (!b->persistent)
                continue;
            if (b->inconsistent) {
                const struct qcow2_bm_disk *d = &s->bm_disk[b->disk_idx];
                memcpy(dir + pos, d->raw, d->raw_len);
                pos += d->raw_len;
            } else {
                put_entry(dir, &pos, b, toff[i], tsize[i]);
            }
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
    err = write_header_ext(s, n, dir_size, dir_off);
    if (err)
        goto out_io;
    /* The header no longer names the old structures. */
    err = free_old(s);
    if (err)
        goto out_io;
    s->bm_store = false;
    goto out_free;

out_io:
    img_log("qcow2: %s: storing the dirty bitmaps: %s", path,
            strerror(-err));
out_free:
    free(toff);
    free(tsize);
    free(dir);
    return err;
}
