/* qcow2 persistent dirty bitmaps, loading: the bitmaps extension, the
 * directory and every bitmap table are checked in full before anything
 * is used, then the bitmap data is read into memory (bitmap.c).
 *
 * Policy for a malformed directory or table: on a read-only open one
 * warning line names the file, the bitmap and the field, the bitmaps are
 * dropped and the image still opens; on a read-write open the image is
 * refused with one line naming the file, the field and the value, since
 * writing it would lose or corrupt the bitmaps.
 *
 * A bitmap found in use (not saved cleanly) is kept in the list as
 * inconsistent, unless our crash-safe writer kept it (its table listed
 * in our extension, with our autoclear bit: see bitmap-store.c); then
 * it holds a superset of every write that may have reached the disk,
 * and is used.  An inconsistent one is never exported, never written
 * over and stored back exactly as found, as qemu does; so is one with
 * extra data whose extra_data_compatible flag is clear, as the spec
 * asks.  Without the autoclear bit the extension is stale and ignored,
 * as qemu does.
 */
#include <endian.h>
#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "io.h"
#include "qcow2.h"

/* What a load found wrong, for the one line it logs. */
struct bm_load {
    struct qcow2_state *s;
    char why[512];
};

__attribute__((format(printf, 2, 3)))
static int bad(struct bm_load *l, const char *fmt, ...)
{
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(l->why, sizeof l->why, fmt, ap);
    va_end(ap);
    return -EINVAL;
}

const char *qcow2_bitmap_entry_bad(uint64_t v, uint32_t cs)
{
    uint64_t off = v & QCOW2_BMT_OFFSET_MASK;

    if (v & QCOW2_BMT_RESERVED_MASK)
        return "reserved bits set";
    if (off && (v & QCOW2_BMT_ALL_ONES))
        return "all-ones flag set with a data offset";
    if (off & (cs - 1))
        return "data offset not cluster aligned";
    return NULL;
}

/* Whether the bitmap whose table is at table_offset was kept crash safe
 * by our writer: its in_use flag then means "a superset", not "stale". */
static bool is_crash_safe(const struct qcow2_state *s, uint64_t table_offset)
{
    if (!(s->h.autoclear & QCOW2_AUTOCLEAR_DS_CRASH_SAFE))
        return false;
    for (uint32_t i = 0; i < s->h.n_cs_tables; i++)
        if (s->h.cs_tables[i] == table_offset)
            return true;
    return false;
}

/* Bytes of bitmap data a disk of size bytes needs at granularity 2^g. */
static uint64_t data_bytes(uint64_t size, uint32_t g)
{
    uint64_t bits = (size >> g) + ((size & ((1ull << g) - 1)) != 0);
    return (bits + 7) / 8;
}

/* A run of host clusters some bitmap structure uses, for the overlap
 * check. */
struct use {
    uint64_t first, count;
    uint32_t who;                   /* entry index, or UINT32_MAX: dir */
};

struct uses {
    struct use *v;
    size_t n, cap;
};

static int uses_add(struct uses *u, uint64_t first, uint64_t count,
                    uint32_t who)
{
    if (u->n == u->cap) {
        size_t cap = u->cap ? 2 * u->cap : 64;
        struct use *v = realloc(u->v, cap * sizeof *v);
        if (!v)
            return -ENOMEM;
        u->v = v;
        u->cap = cap;
    }
    u->v[u->n++] = (struct use){ first, count, who };
    return 0;
}

static int use_cmp(const void *a, const void *b)
{
    const struct use *x = a, *y = b;
    return x->first < y->first ? -1 : x->first > y->first;
}

/* Name of entry i for messages (names are checked before they are
 * used here). */
static const char *entry_name(const struct qcow2_state *s, uint32_t i,
                              char *buf, size_t len)
{
    const struct qcow2_bm_disk *d = &s->bm_disk[i];
    struct qcow2_disk_bitmap_entry e;
    memcpy(&e, d->raw, sizeof e);
    size_t n = be16toh(e.name_size);
    size_t at = sizeof e + be32toh(e.extra_data_size);
    snprintf(buf, len, "'%.*s'", (int)(n < 64 ? n : 64),
             (const char *)d->raw + at);
    return buf;
}

/* Whether host clusters [first, first + count) meet the area [a, a +
 * len) (whole clusters). */
static bool meets(const struct qcow2_state *s, uint64_t first,
                  uint64_t count, uint64_t a, uint64_t len)
{
    if (len == 0)
        return false;
    uint64_t af = a >> s->h.cluster_bits;
    uint64_t al = (a + len - 1) >> s->h.cluster_bits;
    return first <= al && af < first + count;
}

/* The fixed metadata clusters [first, first + count) overlap, or NULL:
 * the header, L1 and refcount tables, snapshot table and snapshot L1
 * tables, the encryption header.  (L2 tables and refcount blocks are
 * the refcounts' business: qemu-img check finds those.) */
static const char *fixed_metadata_at(const struct qcow2_state *s,
                                     uint64_t first, uint64_t count)
{
    const struct qcow2_header *h = &s->h;

    if (meets(s, first, count, 0, s->cluster_size))
        return "the header";
    if (meets(s, first, count, h->l1_table_offset, (uint64_t)h->l1_size * 8))
        return "the L1 table";
    if (meets(s, first, count, h->refcount_table_offset,
              (uint64_t)h->refcount_table_clusters * s->cluster_size))
        return "the refcount table";
    if (h->nb_snapshots &&
        meets(s, first, count, h->snapshots_offset, s->snapshots_size))
        return "the snapshot table";
    if (h->has_fde_ext &&
        meets(s, first, count, h->fde_offset, h->fde_length))
        return "the encryption header";
    for (uint32_t i = 0; i < s->nb_snapshots; i++)
        if (meets(s, first, count, s->snapshots[i].l1_table_offset,
                  (uint64_t)s->snapshots[i].l1_size * 8))
            return "a snapshot's L1 table";
    return NULL;
}

/* No two structures share a cluster, and none sits on other metadata. */
static int check_overlaps(struct bm_load *l, struct uses *u)
{
    struct qcow2_state *s = l->s;
    char a[80], b[80];

    for (size_t i = 0; i < u->n; i++) {
        const char *m = fixed_metadata_at(s, u->v[i].first, u->v[i].count);
        if (m) {
            const char *who = u->v[i].who == UINT32_MAX ? "the directory"
                              : entry_name(s, u->v[i].who, a, sizeof a);
            return bad(l, "bitmap %s: clusters at 0x%" PRIx64 " overlap %s",
                       who, u->v[i].first << s->h.cluster_bits, m);
        }
    }
    qsort(u->v, u->n, sizeof *u->v, use_cmp);
    for (size_t i = 1; i < u->n; i++) {
        const struct use *p = &u->v[i - 1], *q = &u->v[i];
        if (q->first < p->first + p->count) {
            const char *pw = p->who == UINT32_MAX ? "the directory"
                             : entry_name(s, p->who, a, sizeof a);
            const char *qw = q->who == UINT32_MAX ? "the directory"
                             : entry_name(s, q->who, b, sizeof b);
            return bad(l, "bitmap %s: cluster 0x%" PRIx64 " also used by "
                       "bitmap %s (overlapping tables or data)", qw,
                       q->first << s->h.cluster_bits, pw);
        }
    }
    return 0;
}

/* Read and check the table of entry i (d filled from the directory). */
static int load_table(struct bm_load *l, uint32_t i, const char *name,
                      struct uses *u)
{
    struct qcow2_state *s = l->s;
    struct qcow2_bm_disk *d = &s->bm_disk[i];
    uint64_t bytes = (uint64_t)d->table_size * 8;
    uint64_t end;

    if (d->table_offset == 0 || (d->table_offset & s->cluster_mask))
        return bad(l, "bitmap '%s': bitmap_table_offset 0x%" PRIx64
                   " not cluster aligned (or 0)", name, d->table_offset);
    if (__builtin_add_overflow(d->table_offset, bytes, &end) ||
        end > s->file_size)
        return bad(l, "bitmap '%s': bitmap_table_offset 0x%" PRIx64 " (%"
                   PRIu32 " entries) past the end of the file (%" PRIu64
                   " bytes)", name, d->table_offset, d->table_size,
                   s->file_size);
    d->table = malloc(bytes);
    if (!d->table)
        return -ENOMEM;
    int err = io_pread_full(s->fd, d->table, bytes, d->table_offset);
    if (err) {
        img_log("qcow2: %s: reading the table of bitmap '%s': %s",
                s->img.path, name, strerror(-err));
        return err == -ENODATA ? -EINVAL : err;
    }
    err = uses_add(u, d->table_offset >> s->h.cluster_bits,
                   (bytes + s->cluster_mask) >> s->h.cluster_bits, i);
    if (err)
        return err;
    for (uint32_t j = 0; j < d->table_size; j++) {
        uint64_t v = be64toh(d->table[j]);
        d->table[j] = v;
        const char *why = qcow2_bitmap_entry_bad(v, s->cluster_size);
        if (why)
            return bad(l, "bitmap '%s': table entry %" PRIu32 " 0x%" PRIx64
                       ": %s", name, j, v, why);
        uint64_t off = v & QCOW2_BMT_OFFSET_MASK;
        if (!off)
            continue;
        if (off >= s->file_size)
            return bad(l, "bitmap '%s': table entry %" PRIu32 ": data "
                       "offset 0x%" PRIx64 " past the end of the file (%"
                       PRIu64 " bytes)", name, j, off, s->file_size);
        err = uses_add(u, off >> s->h.cluster_bits, 1, i);
        if (err)
            return err;
    }
    return 0;
}

/* Check one directory entry at dir[pos], which has at least 24 bytes,
 * and record it as s->bm_disk[i]; *len gets its padded length. */
static int check_entry(struct bm_load *l, const uint8_t *dir, uint64_t pos,
                       uint64_t dir_size, uint32_t i, uint64_t *len)
{
    struct qcow2_state *s = l->s;
    struct qcow2_disk_bitmap_entry e;

    memcpy(&e, dir + pos, sizeof e);
    uint32_t tsize = be32toh(e.table_size);
    uint32_t flags = be32toh(e.flags);
    uint32_t extra = be32toh(e.extra_data_size);
    uint16_t nlen = be16toh(e.name_size);
    /* At most 24 + 2^32 - 1 + 2^16 - 1 + 7: no overflow. */
    uint64_t n = (sizeof e + (uint64_t)extra + nlen + 7) & ~7ull;
    if (nlen == 0 || nlen > IMG_BITMAP_NAME_MAX)
        return bad(l, "bitmap directory entry %" PRIu32 ": name_size %"
                   PRIu16 " out of range (1..%d)", i, nlen,
                   IMG_BITMAP_NAME_MAX);
    if (n > dir_size - pos)
        return bad(l, "bitmap directory entry %" PRIu32 " (%" PRIu64
                   " bytes at %" PRIu64 ") runs past the end of the "
                   "directory (bitmap_directory_size %" PRIu64 ")", i, n,
                   pos, dir_size);
    const char *np = (const char *)dir + pos + sizeof e + extra;
    if (memchr(np, 0, nlen))
        return bad(l, "bitmap directory entry %" PRIu32 ": name holds a "
                   "NUL byte", i);
    char name[IMG_BITMAP_NAME_MAX + 1];
    memcpy(name, np, nlen);
    name[nlen] = '\0';
    for (uint64_t k = pos + sizeof e + extra + nlen; k < pos + n; k++)
        if (dir[k])
            return bad(l, "bitmap '%.64s': directory entry padding not "
                       "zero", name);
    if (e.type != QCOW2_BME_TYPE_DIRTY)
        return bad(l, "bitmap '%.64s': type %u unknown (expected 1)", name,
                   e.type);
    if (e.granularity_bits < QCOW2_MIN_GRAN_BITS ||
        e.granularity_bits > QCOW2_MAX_GRAN_BITS)
        return bad(l, "bitmap '%.64s': granularity_bits %u out of range "
                   "(%d..%d)", name, e.granularity_bits,
                   QCOW2_MIN_GRAN_BITS, QCOW2_MAX_GRAN_BITS);
    if (flags & QCOW2_BME_RESERVED)
        return bad(l, "bitmap '%.64s': flags 0x%" PRIx32 " have reserved "
                   "bits set", name, flags);
    if (tsize == 0 || tsize > QCOW2_MAX_BITMAP_TABLE)
        return bad(l, "bitmap '%.64s': bitmap_table_size %" PRIu32
                   " out of range (1..%u)", name, tsize,
                   QCOW2_MAX_BITMAP_TABLE);
    if ((uint64_t)tsize * s->cluster_size > QCOW2_MAX_BITMAP_BYTES)
        return bad(l, "bitmap '%.64s': bitmap_table_size %" PRIu32 " holds "
                   "more than %llu bytes of bitmap data", name, tsize,
                   QCOW2_MAX_BITMAP_BYTES);
    uint64_t need = (data_bytes(s->h.size, e.granularity_bits) +
                     s->cluster_mask) >> s->h.cluster_bits;
    if (need == 0)
        need = 1;
    /* A bitmap in use may be stale after a resize; qemu keeps it. */
    bool stale = (flags & QCOW2_BME_IN_USE) &&
                 !is_crash_safe(s, be64toh(e.table_offset));
    if (!stale && tsize != need)
        return bad(l, "bitmap '%.64s': bitmap_table_size %" PRIu32 " does "
                   "not fit the disk (needs %" PRIu64 " for size %" PRIu64
                   " at granularity %" PRIu64 ")", name, tsize, need,
                   s->h.size, (uint64_t)1 << e.granularity_bits);
    struct qcow2_bm_disk *d = &s->bm_disk[i];
    d->table_offset = be64toh(e.table_offset);
    d->table_size = tsize;
    d->flags = flags;
    d->raw_len = (uint32_t)n;
    d->raw = malloc(n);
    if (!d->raw)
        return -ENOMEM;
    memcpy(d->raw, dir + pos, n);
    *len = n;
    return 0;
}

/* Names are unique. */
static int name_cmp(const void *a, const void *b)
{
    const struct qcow2_bitmap *const *x = a, *const *y = b;
    return strcmp((*x)->name, (*y)->name);
}

/* Make the in-memory bitmap of entry i and read its data. */
static int load_bitmap(struct bm_load *l, uint32_t i,
                       struct qcow2_bitmap **out)
{
    struct qcow2_state *s = l->s;
    const struct qcow2_bm_disk *d = &s->bm_disk[i];
    struct qcow2_disk_bitmap_entry e;

    memcpy(&e, d->raw, sizeof e);
    uint32_t extra = be32toh(e.extra_data_size);
    struct qcow2_bitmap *b = qcow2_bitmap_new(s, (const char *)d->raw +
                                              sizeof e + extra,
                                              be16toh(e.name_size),
                                              e.granularity_bits);
    if (!b)
        return -ENOMEM;
    *out = b;
    b->disk_idx = (int)i;
    b->persistent = true;
    b->recording = d->flags & QCOW2_BME_AUTO;
    b->inconsistent = ((d->flags & QCOW2_BME_IN_USE) &&
                       !is_crash_safe(s, d->table_offset)) ||
                      (extra && !(d->flags & QCOW2_BME_EXTRA_COMPAT));
    if (b->inconsistent) {
        b->recording = false;
        return 0;
    }
    if (extra) {
        b->extra = malloc(extra);
        if (!b->extra)
            return -ENOMEM;
        memcpy(b->extra, d->raw + sizeof e, extra);
        b->extra_size = extra;
    }
    uint64_t *buf = malloc(s->cluster_size);
    if (!buf)
        return -ENOMEM;
    uint64_t words_per = s->cluster_size / 8;
    int err = 0;
    for (uint32_t j = 0; j < d->table_size && !err; j++) {
        uint64_t v = d->table[j];
        uint64_t off = v & QCOW2_BMT_OFFSET_MASK;
        uint64_t first = (uint64_t)j * s->cluster_size * 8;
        if (first >= b->nbits)
            break;
        if (!off) {
            if (v & QCOW2_BMT_ALL_ONES) {
                uint64_t n = b->nbits - first;
                if (n > (uint64_t)s->cluster_size * 8)
                    n = (uint64_t)s->cluster_size * 8;
                err = qcow2_bitmap_set_bits(b, first, n);
            }
            continue;
        }
        err = io_pread_full(s->fd, buf, s->cluster_size, off);
        if (err == -ENODATA)
            err = 0;        /* the rest reads as zeros */
        if (err) {
            img_log("qcow2: %s: reading data of bitmap '%s' at 0x%" PRIx64
                    ": %s", s->img.path, b->name, off, strerror(-err));
            break;
        }
        for (uint64_t w = 0; w < words_per; w++)
            buf[w] = le64toh(buf[w]);
        err = qcow2_bitmap_or_words(b, first / 64, buf, words_per);
    }
    free(buf);
    return err;
}

/* Read and check the whole directory; fills s->bm_disk and s->bitmaps.
 * -EINVAL with l->why set for a malformed one. */
static int load_dir(struct bm_load *l)
{
    struct qcow2_state *s = l->s;
    const struct qcow2_disk_bitmaps_ext *x = &s->h.bitmaps;
    uint64_t end;
    int err;

    if (x->reserved)
        return bad(l, "bitmaps extension reserved field 0x%" PRIx32
                   " not zero", x->reserved);
    if (x->nb_bitmaps == 0 || x->nb_bitmaps > QCOW2_MAX_BITMAPS)
        return bad(l, "bitmaps extension nb_bitmaps %" PRIu32 " out of "
                   "range (1..%u)", x->nb_bitmaps, QCOW2_MAX_BITMAPS);
    if (x->directory_size > QCOW2_MAX_BITMAP_DIR ||
        x->directory_size < x->nb_bitmaps *
                            sizeof(struct qcow2_disk_bitmap_entry))
        return bad(l, "bitmap_directory_size %" PRIu64 " out of range for "
                   "%" PRIu32 " bitmaps (max %llu)", x->directory_size,
                   x->nb_bitmaps, QCOW2_MAX_BITMAP_DIR);
    if (x->directory_offset == 0 ||
        (x->directory_offset & s->cluster_mask))
        return bad(l, "bitmap_directory_offset 0x%" PRIx64 " not cluster "
                   "aligned (or 0)", x->directory_offset);
    if (__builtin_add_overflow(x->directory_offset, x->directory_size,
                               &end) || end > s->file_size)
        return bad(l, "bitmap_directory_offset 0x%" PRIx64 " (%" PRIu64
                   " bytes) past the end of the file (%" PRIu64 " bytes)",
                   x->directory_offset, x->directory_size, s->file_size);

    uint64_t size = x->directory_size;
    uint8_t *dir = malloc(size);
    s->bm_disk = calloc(x->nb_bitmaps, sizeof *s->bm_disk);
    s->bitmaps = calloc(x->nb_bitmaps, sizeof *s->bitmaps);
    struct uses u = { NULL, 0, 0 };
    if (!dir || !s->bm_disk || !s->bitmaps) {
        err = -ENOMEM;
        goto out_free;
    }
    err = io_pread_full(s->fd, dir, size, x->directory_offset);
    if (err) {
        img_log("qcow2: %s: reading the bitmap directory: %s", s->img.path,
                strerror(-err));
        err = err == -ENODATA ? -EINVAL : err;
        goto out_free;
    }
    err = uses_add(&u, x->directory_offset >> s->h.cluster_bits,
                   (size + s->cluster_mask) >> s->h.cluster_bits,
                   UINT32_MAX);
    uint64_t pos = 0;
    for (uint32_t i = 0; i < x->nb_bitmaps && !err; i++) {
        if (size - pos < sizeof(struct qcow2_disk_bitmap_entry)) {
            err = bad(l, "bitmap directory ends inside entry %" PRIu32
                      " of %" PRIu32 " (bitmap_directory_size %" PRIu64 ")",
                      i, x->nb_bitmaps, size);
            break;
        }
        uint64_t n = 0;
        err = check_entry(l, dir, pos, size, i, &n);
        if (err)
            break;
        s->n_bm_disk = i + 1;
        pos += n;
    }
    if (!err && pos != size)
        err = bad(l, "bitmap_directory_size %" PRIu64 " but its %" PRIu32
                  " entries take %" PRIu64 " bytes", size, x->nb_bitmaps,
                  pos);
    for (uint32_t i = 0; i < s->n_bm_disk && !err; i++) {
        char name[80];
        entry_name(s, i, name, sizeof name);
        name[strlen(name) - 1] = '\0';
        err = load_table(l, i, name + 1, &u);
    }
    if (!err)
        err = check_overlaps(l, &u);
    for (uint32_t i = 0; i < s->n_bm_disk && !err; i++) {
        err = load_bitmap(l, i, &s->bitmaps[i]);
        if (s->bitmaps[i])
            s->n_bitmaps = i + 1;
    }
    if (!err && s->n_bitmaps > 1) {
        struct qcow2_bitmap **v = malloc(s->n_bitmaps * sizeof *v);
        if (!v) {
            err = -ENOMEM;
            goto out_free;
        }
        memcpy(v, s->bitmaps, s->n_bitmaps * sizeof *v);
        qsort(v, s->n_bitmaps, sizeof *v, name_cmp);
        for (size_t i = 1; i < s->n_bitmaps && !err; i++)
            if (!strcmp(v[i - 1]->name, v[i]->name))
                err = bad(l, "bitmap '%.64s': name used twice in the "
                          "directory", v[i]->name);
        free(v);
    }
    s->bm_dir_offset = x->directory_offset;
    s->bm_dir_size = size;
out_free:
    free(u.v);
    free(dir);
    return err;
}

int qcow2_bitmaps_load(struct qcow2_state *s, bool read_only)
{
    struct bm_load l = { .s = s };

    if (!s->h.has_bitmaps_ext)
        return 0;
    if (!(s->h.autoclear & QCOW2_AUTOCLEAR_BITMAPS)) {
        img_log("qcow2: %s: bitmaps extension without its autoclear bit: "
                "a program without bitmap support changed the image; its "
                "bitmaps are ignored", s->img.path);
        return 0;
    }
    int err = load_dir(&l);
    if (err == 0) {
        for (size_t i = 0; i < s->n_bitmaps; i++)
            if (s->bitmaps[i]->recording)
                s->n_recording++;
        return 0;
    }
    qcow2_bitmaps_free(s);
    if (err != -EINVAL || !l.why[0])
        return err;
    if (!read_only) {
        img_log("qcow2: %s: %s; refusing to write the image (open it "
                "read-only to serve it without bitmaps)", s->img.path,
                l.why);
        return -EINVAL;
    }
    img_log("qcow2: %s: %s; ignoring every bitmap", s->img.path, l.why);
    return 0;
}

void qcow2_bitmaps_free(struct qcow2_state *s)
{
    for (size_t i = 0; i < s->n_bitmaps; i++)
        qcow2_bitmap_free(s->bitmaps[i]);
    free(s->bitmaps);
    s->bitmaps = NULL;
    s->n_bitmaps = 0;
    s->n_recording = 0;
    for (uint32_t i = 0; i < s->n_bm_disk; i++) {
        free(s->bm_disk[i].table);
        free(s->bm_disk[i].raw);
    }
    free(s->bm_disk);
    s->bm_disk = NULL;
    s->n_bm_disk = 0;
    s->bm_dir_offset = s->bm_dir_size = 0;
}
