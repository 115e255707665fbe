/* qcow2 refcount check and repair.
 *
 * The check walks every structure that holds clusters (header, active
 * and snapshot L1 tables, their L2 tables and the clusters those map,
 * the snapshot table, the refcount table and blocks, the bitmap
 * directory and bitmap tables, the LUKS header) and counts, in an array
 * of 16-bit counters indexed by host cluster, how often each cluster is
 * referenced (plus one counter for a last cluster the file ends inside
 * of; references further out are errors in themselves).  The counts are
 * then compared with the refcounts on disk: a refcount lower than the
 * references is an error (the cluster could be handed out again while
 * in use), a higher one a leak.  Flags and entries the spec forbids
 * count as errors too, as do COPIED flags that disagree with the
 * refcount.  The counts reported are the ones `qemu-img check` reports
 * for the same image.
 *
 * Repair order (a crash at any point loses no data):
 *   - refcounts are only ever set to the counted references, so a
 *     cluster still referenced never drops to zero;
 *   - a repair in place never allocates: when a refcount to raise has
 *     no refcount block, or a block is shared or unreadable, the
 *     structures are rebuilt instead;
 *   - broken refcount structures are rebuilt in new clusters past the
 *     end of the file: blocks and table are written and synced first,
 *     then the header is switched to them and synced; until then the old
 *     structures stay in place, afterwards nothing references them;
 *   - COPIED flags are fixed last, from the repaired refcounts;
 *   - the dirty and corrupt bits are cleared after a sync, only when no
 *     error is left.
 */
#include <endian.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "io.h"
#include "qcow2.h"
#include "check.h"

/* Masks the spec defines beside qcow2.h's. */
#define REFT_OFFSET_MASK    0xfffffffffffffe00ull
#define REFT_RESERVED_MASK  0x00000000000001ffull
#define L1E_RESERVED_MASK   0x7f000000000001ffull
#define L2E_RESERVED_MASK   0x3f000000000001feull

#define MAX_MESSAGES        10000u

/* Walk flag: count allocation and fragmentation (active L1 only). */
#define WALK_STATS          1u
#define WALK_DROP           2u  /* may drop references past EOF */

/* Clusters [first, last] that a reference names past the end of the
 * file: errors, but a rebuild must not put new structures there. */
struct past_ref {
    uint64_t first, last;
};

/* The state of one check. */
struct ck {
    struct qcow2_state *s;
    const char *path;
    int rfd;                        /* reads */
    int wfd;                        /* repairs */
    unsigned repair;
    struct qcow2_check_result *res;

    uint32_t cs;                    /* cluster size */
    uint32_t cbits;
    uint32_t order;                 /* refcount_order */
    uint32_t block_bits;            /* log2 of entries per refcount block */
    uint64_t max_rc;                /* largest refcount the width holds */
    bool data_file;

    uint64_t nb_clusters;           /* clusters of the file */
    uint64_t nb_counted;            /* nb_clusters, or one more when a
                                     * reference reaches past the file */
    uint16_t *ref;                  /* nb_clusters + 1 counters */
    struct past_ref *past;          /* references too far past the end
                                     * of the file to count */
    size_t n_past, cap_past;
    bool past_lost;                 /* some could not be recorded */
    bool broken_bitmaps;            /* bitmap directory unparsable: which
                                     * clusters bitmaps use is unknown */

    uint64_t *rt;                   /* refcount table, host order */
    uint64_t rt_entries;
    uint64_t *old_blocks;           /* refcount blocks counted */
    size_t n_old_blocks;

    uint8_t *blk;                   /* one refcount block */
    uint64_t blk_off;               /* 0: none loaded */
    bool blk_dirty;

    uint8_t *l2;                    /* scratch for one L2 or bitmap table */
    uint64_t *l1;                   /* the active L1 as walked */
    uint32_t l1_size;

    bool rebuild;                   /* refcount structures are broken */
    bool need_alloc;                /* a raise needs a missing block */
    bool zero_used;                 /* a cluster in use has refcount 0 */
    bool wrote;
    uint64_t highest;               /* last cluster in use, plus one */
    unsigned messages;
};

/* One line about the image, up to MAX_MESSAGES per check. */
__attribute__((format(printf, 2, 3)))
static void say(struct ck *c, const char *fmt, ...)
{
    char line[512];
    va_list ap;

    if (c->messages > MAX_MESSAGES)
        return;
    if (c->messages++ == MAX_MESSAGES) {
        img_log("qcow2: %s: check: further messages suppressed", c->path);
        return;
    }
    va_start(ap, fmt);
    vsnprintf(line, sizeof line, fmt, ap);
    va_end(ap);
    img_log("qcow2: %s: %s", c->path, line);
}

/* Read len bytes at off; bytes past the end of the file read as zeros,
 * as they do for qemu. */
static int read_at(struct ck *c, void *buf, uint64_t len, uint64_t off)
{
    int err = io_pread_full(c->rfd, buf, len, off);
    return err == -ENODATA ? 0 : err;
}

static uint64_t get_be64(const uint8_t *p)
{
    uint64_t v;
    memcpy(&v, p, 8);
    return be64toh(v);
}

static void put_be64(uint8_t *p, uint64_t v)
{
    v = htobe64(v);
    memcpy(p, &v, 8);
}

/* Entry i of a refcount block of the given order. */
static uint64_t rc_get(const uint8_t *b, uint32_t order, uint64_t i)
{
    uint32_t bits = 1u << order;
    uint64_t v = 0;

    if (bits < 8) {
        uint64_t bit = i * bits;
        return (b[bit / 8] >> (bit % 8)) & ((1u << bits) - 1);
    }
    for (uint32_t k = 0; k < bits / 8; k++)
        v = (v << 8) | b[i * (bits / 8) + k];
    return v;
}

/* Set entry i of a refcount block to v (which fits the width). */
static void rc_set(uint8_t *b, uint32_t order, uint64_t i, uint64_t v)
{
    uint32_t bits = 1u << order;

    if (bits < 8) {
        uint64_t bit = i * bits;
        uint8_t mask = (uint8_t)(((1u << bits) - 1) << (bit % 8));
        b[bit / 8] = (uint8_t)((b[bit / 8] & ~mask) |
                               ((v << (bit % 8)) & mask));
        return;
    }
    for (uint32_t k = bits / 8; k-- > 0;) {
        b[i * (bits / 8) + k] = (uint8_t)v;
        v >>= 8;
    }
}

/* Remember that clusters [first, last] past the end of the file are
 * named by a reference; past_lost when the list cannot grow. */
static void note_past(struct ck *c, uint64_t first, uint64_t last)
{
    if (c->n_past == c->cap_past) {
        size_t cap = c->cap_past ? 2 * c->cap_past : 16;
        struct past_ref *v = cap <= (1u << 24) ?
            realloc(c->past, cap * sizeof *v) : NULL;
        if (!v) {
            c->past_lost = true;
            return;
        }
        c->past = v;
        c->cap_past = cap;
    }
    c->past[c->n_past].first = first;
    c->past[c->n_past].last = last;
    c->n_past++;
}

/* Whether [off, off + len) ends a cluster or more past the end of the
 * file: no refcount can make such a reference right. */
static bool past_eof(const struct ck *c, uint64_t off, uint64_t len)
{
    uint64_t last_byte;
    if (__builtin_add_overflow(off, len - 1, &last_byte))
        return true;
    uint64_t fsize = c->s->file_size;
    return last_byte >= fsize && last_byte - fsize >= c->cs - 1;
}

/* An error repair drops a reference past the end of the file (the data
 * it names does not exist: reads of it fail) instead of counting it:
 * the cluster reads as zeros from then on (v2 images, which have no zero
 * flag: unallocated).  Only in the active tables, and only in a table
 * that lies in the file past the header cluster (WALK_DROP): a table a
 * broken entry places over the header is never written.  Returns
 * whether it did. */
static bool drop_past_eof(struct ck *c, unsigned flags, uint64_t off,
                          uint64_t len, const char *what, uint64_t table,
                          uint32_t i)
{
    if (!(flags & WALK_DROP) || !(c->repair & QCOW2_REPAIR_ERRORS) ||
        c->broken_bitmaps || !past_eof(c, off, len))
        return false;
    say(c, "%s 0x%" PRIx64 " entry %" PRIu32 ": 0x%" PRIx64 " is past the "
        "end of the file: dropping the reference", what, table, i, off);
    c->res->corruptions_fixed++;
    return true;
}

/* Count one reference to every cluster [off, off + len) touches. */
static void inc_range(struct ck *c, uint64_t off, uint64_t len)
{
    uint64_t last_byte;
    uint64_t limit = c->max_rc < UINT16_MAX ? c->max_rc : UINT16_MAX;

    if (len == 0)
        return;
    if (__builtin_add_overflow(off, len - 1, &last_byte))
        last_byte = UINT64_MAX;
    /* Like qemu, count a reference past the end of the file only when
     * it is less than a cluster past it (the file's last cluster may be
     * short); anything further is an error that no refcount fixes. */
    uint64_t fsize = c->s->file_size;
    if (last_byte >= fsize && last_byte - fsize >= c->cs - 1) {
        say(c, "reference to 0x%" PRIx64 " (%" PRIu64 " bytes) past the "
            "end of the file", off, len);
        c->res->corruptions++;
        note_past(c, off >> c->cbits, last_byte >> c->cbits);
        return;
    }
    for (uint64_t k = off >> c->cbits; k <= last_byte >> c->cbits; k++) {
        if (k > c->nb_clusters)
            break;                  /* cannot happen after the test above */
        if (k >= c->nb_counted)
            c->nb_counted = k + 1;
        if (c->ref[k] >= limit) {
            say(c, "cluster %" PRIu64 " (0x%" PRIx64 ") has more "
                "references than its refcount can hold", k, k << c->cbits);
            c->res->corruptions++;
            continue;
        }
        c->ref[k]++;
    }
}

/* Drop one reference counted by inc_range for a cluster in the file. */
static void dec_cluster(struct ck *c, uint64_t k)
{
    if (k < c->nb_clusters && c->ref[k] > 0)
        c->ref[k]--;
}

/* ---- Walking the metadata ---- */

/* Cluster types, as the L2 entry decides them. */
enum l2_type { T_UNALLOC, T_ZERO_PLAIN, T_ZERO_ALLOC, T_NORMAL, T_COMPRESSED };

static enum l2_type l2_type_of(const struct ck *c, uint64_t e)
{
    if (e & QCOW2_L2E_COMPRESSED)
        return T_COMPRESSED;
    if ((e & QCOW2_L2E_ZERO) && !c->s->ext_l2)
        return (e & QCOW2_L2E_OFFSET_MASK) ? T_ZERO_ALLOC : T_ZERO_PLAIN;
    if (!(e & QCOW2_L2E_OFFSET_MASK))
        return c->data_file && (e & QCOW2_L2E_COPIED) ? T_NORMAL
                                                      : T_UNALLOC;
    return T_NORMAL;
}

/* Make the L2 entry at p read as zeros with nothing allocated (v2: as
 * unallocated). */
static void zero_entry(const struct ck *c, uint8_t *p)
{
    const struct qcow2_state *s = c->s;
    if (s->ext_l2) {
        put_be64(p, 0);
        put_be64(p + 8, 0xffffffff00000000ull);
    } else {
        put_be64(p, s->h.version >= 3 ? QCOW2_L2E_ZERO : 0);
    }
}

/* Count what one L2 table maps. */
static void walk_l2(struct ck *c, uint64_t l2_off, unsigned flags)
{
    struct qcow2_state *s = c->s;
    struct qcow2_check_result *res = c->res;
    uint32_t eb = s->l2_entry_bytes;
    uint64_t next = 0;
    bool changed = false;

    int err = read_at(c, c->l2, c->cs, l2_off);
    if (err) {
        say(c, "reading L2 table 0x%" PRIx64 ": %s", l2_off, strerror(-err));
        res->check_errors++;
        return;
    }
    for (uint32_t i = 0; i < c->cs / eb; i++) {
        uint64_t e = get_be64(c->l2 + (size_t)i * eb);
        uint64_t bm = s->ext_l2 ? get_be64(c->l2 + (size_t)i * eb + 8) : 0;
        enum l2_type t = l2_type_of(c, e);

        if (t != T_COMPRESSED && (e & L2E_RESERVED_MASK)) {
            say(c, "L2 table 0x%" PRIx64 " entry %" PRIu32 ": reserved "
                "bits set (0x%" PRIx64 ")", l2_off, i, e);
            res->corruptions++;
        }
        switch (t) {
        case T_COMPRESSED: {
            if (e & QCOW2_L2E_COPIED) {
                say(c, "L2 table 0x%" PRIx64 " entry %" PRIu32 ": COPIED "
                    "flag on a compressed cluster", l2_off, i);
                res->corruptions++;
            }
            if (c->data_file) {
                say(c, "L2 table 0x%" PRIx64 " entry %" PRIu32 ": "
                    "compressed cluster with an external data file",
                    l2_off, i);
                res->corruptions++;
                break;
            }
            if (bm) {
                say(c, "L2 table 0x%" PRIx64 " entry %" PRIu32 ": "
                    "compressed cluster with a subcluster bitmap", l2_off, i);
                res->corruptions++;
                break;
            }
            uint64_t coff = e & s->coffset_mask;
            uint64_t sectors = ((e >> s->csize_shift) & s->csize_mask) + 1;
            uint64_t clen = sectors * QCOW2_COMPRESSED_SECTOR -
                            (coff & (QCOW2_COMPRESSED_SECTOR - 1));
            if (drop_past_eof(c, flags, coff, clen, "L2 table", l2_off, i)) {
                zero_entry(c, c->l2 + (size_t)i * eb);
                changed = true;
                break;
            }
            inc_range(c, coff, clen);
            if (flags & WALK_STATS) {
                res->allocated_clusters++;
                res->compressed_clusters++;
                res->fragmented_clusters++;
            }
            break;
        }
        case T_NORMAL:
        case T_ZERO_ALLOC: {
            uint64_t off = e & QCOW2_L2E_OFFSET_MASK;
            if ((bm >> 32) & bm) {
                say(c, "L2 table 0x%" PRIx64 " entry %" PRIu32 ": "
                    "subclusters both allocated and zero", l2_off, i);
                res->corruptions++;
            }
            if (off & (c->cs - 1)) {
                say(c, "L2 table 0x%" PRIx64 " entry %" PRIu32 ": cluster "
                    "offset 0x%" PRIx64 " unaligned", l2_off, i, off);
                res->corruptions++;
            }
            if (flags & WALK_STATS) {
                res->allocated_clusters++;
                if (next && off != next)
                    res->fragmented_clusters++;
                next = off + c->cs;
            }
            if (!c->data_file &&
                drop_past_eof(c, flags, off, c->cs, "L2 table", l2_off,
                              i)) {
                zero_entry(c, c->l2 + (size_t)i * eb);
                changed = true;
                break;
            }
            if (!c->data_file)
                inc_range(c, off, c->cs);
            break;
        }
        case T_UNALLOC:
            if (bm & QCOW2_SC_ALLOC_MASK) {
                say(c, "L2 table 0x%" PRIx64 " entry %" PRIu32 ": "
                    "subclusters allocated in an unallocated cluster",
                    l2_off, i);
                res->corruptions++;
            }
            break;
        case T_ZERO_PLAIN:
            break;
        }
    }
    if (changed) {
        c->wrote = true;
        err = io_pwrite_tag(c->wfd, c->l2, c->cs, l2_off, IO_TAG_L2);
        if (err) {
            say(c, "writing L2 table 0x%" PRIx64 ": %s", l2_off,
                strerror(-err));
            res->check_errors++;
        }
    }
}

/* Count an L1 table, its L2 tables and what they map; keeps the active
 * table in c->l1. */
static void walk_l1(struct ck *c, uint64_t l1_off, uint32_t l1_size,
                    unsigned flags, bool active)
{
    struct qcow2_check_result *res = c->res;

    if (l1_size == 0)
        return;
    inc_range(c, l1_off, (uint64_t)l1_size * 8);
    uint64_t *l1 = malloc((size_t)l1_size * 8);
    if (!l1) {
        res->check_errors++;
        return;
    }
    int err = read_at(c, l1, (uint64_t)l1_size * 8, l1_off);
    if (err) {
        say(c, "reading L1 table 0x%" PRIx64 ": %s", l1_off, strerror(-err));
        res->check_errors++;
        free(l1);
        return;
    }
    for (uint32_t i = 0; i < l1_size; i++) {
        l1[i] = be64toh(l1[i]);
        if (l1[i] & L1E_RESERVED_MASK) {
            say(c, "L1 table 0x%" PRIx64 " entry %" PRIu32 ": reserved "
                "bits set (0x%" PRIx64 ")", l1_off, i, l1[i]);
            res->corruptions++;
        }
        /* As qemu: only an all-zero entry is skipped.  An entry with
         * flags but offset 0 names an L2 table in the header cluster
         * (reads treat it as unallocated); qemu counts that table and
         * what it seems to map, and so do we, so the verdicts agree. */
        if (!l1[i])
            continue;
        uint64_t l2 = l1[i] & QCOW2_L1E_OFFSET_MASK;
        if (drop_past_eof(c, flags, l2, c->cs, "L1 table", l1_off, i)) {
            uint64_t zero = 0;
            c->wrote = true;
            err = io_pwrite_tag(c->wfd, &zero, 8, l1_off + 8ull * i,
                                IO_TAG_L1);
            if (err) {
                say(c, "writing L1 table 0x%" PRIx64 ": %s", l1_off,
                    strerror(-err));
                res->check_errors++;
            }
            l1[i] = 0;
            continue;
        }
        inc_range(c, l2, c->cs);
        if (l2 & (c->cs - 1)) {
            say(c, "L1 table 0x%" PRIx64 " entry %" PRIu32 ": L2 table "
                "offset 0x%" PRIx64 " unaligned", l1_off, i, l2);
            res->corruptions++;
        }
        /* A table wholly past the end of the file reads as zeros: it
         * maps nothing, so there is nothing to read. */
        if (l2 >= c->s->file_size)
            continue;
        unsigned l2_flags = flags;
        if (l2 < c->cs || (l2 & (c->cs - 1)) || past_eof(c, l2, c->cs))
            l2_flags &= ~WALK_DROP;
        walk_l2(c, l2, l2_flags);
    }
    if (active) {
        free(c->l1);
        c->l1 = l1;
        c->l1_size = l1_size;
    } else {
        free(l1);
    }
}

/* Count every snapshot's tables and the snapshot table itself. */
static void walk_snapshots(struct ck *c)
{
    struct qcow2_state *s = c->s;
    uint64_t start = s->h.snapshots_offset;
    uint64_t pos = start;
    uint64_t end = start;

    for (uint32_t i = 0; i < s->h.nb_snapshots; i++) {
        struct qcow2_disk_snapshot d;
        pos = start + ((pos - start + 7) & ~7ull);
        if (read_at(c, &d, sizeof d, pos) != 0) {
            say(c, "reading snapshot %" PRIu32, i);
            c->res->check_errors++;
            return;
        }
        uint64_t l1_off = be64toh(d.l1_table_offset);
        uint32_t l1_size = be32toh(d.l1_size);
        pos += sizeof d + be32toh(d.extra_data_size) +
               be16toh(d.id_str_size) + be16toh(d.name_size);
        end = pos;
        if (l1_off & (c->cs - 1)) {
            say(c, "snapshot %" PRIu32 ": L1 table offset 0x%" PRIx64
                " unaligned", i, l1_off);
            c->res->corruptions++;
            continue;
        }
        if (l1_size > QCOW2_MAX_L1_BYTES / 8) {
            say(c, "snapshot %" PRIu32 ": L1 table of %" PRIu32 " entries "
                "too large", i, l1_size);
            c->res->corruptions++;
            continue;
        }
        walk_l1(c, l1_off, l1_size, 0, false);
    }
    inc_range(c, start, end - start);
}

/* Count the bitmap directory, the bitmap tables and their clusters. */
static void walk_bitmaps(struct ck *c)
{
    struct qcow2_state *s = c->s;
    const struct qcow2_disk_bitmaps_ext *b = &s->h.bitmaps;

    /* Without the autoclear bit the extension is stale: qemu ignores
     * it, and so do we. */
    if (!s->h.has_bitmaps_ext || !(s->h.autoclear & QCOW2_AUTOCLEAR_BITMAPS))
        return;
    uint64_t dir_off = b->directory_offset;
    uint64_t dir_size = b->directory_size;
    if ((dir_off & (c->cs - 1)) || dir_size > QCOW2_MAX_BITMAP_DIR ||
        dir_off > s->file_size || s->file_size - dir_off < dir_size) {
        say(c, "bitmap directory 0x%" PRIx64 " (%" PRIu64 " bytes) "
            "unaligned or past the end of the file", dir_off, dir_size);
        c->res->corruptions++;
        return;
    }
    inc_range(c, dir_off, dir_size);
    uint8_t *dir = malloc(dir_size ? dir_size : 1);
    if (!dir || read_at(c, dir, dir_size, dir_off) != 0) {
        free(dir);
        c->res->check_errors++;
        return;
    }
    /* pos <= dir_size throughout.  A directory qemu cannot parse makes
     * it refuse the image; here it is a check error, and which clusters
     * the bitmaps use is unknown (see broken_bitmaps). */
    uint64_t pos = 0;
    for (uint32_t i = 0; i < b->nb_bitmaps; i++) {
        struct qcow2_disk_bitmap_entry e;
        if (dir_size - pos < sizeof e) {
            say(c, "bitmap directory ends inside entry %" PRIu32, i);
            c->res->check_errors++;
            c->broken_bitmaps = true;
            break;
        }
        memcpy(&e, dir + pos, sizeof e);
        uint64_t t_off = be64toh(e.table_offset);
        uint32_t t_size = be32toh(e.table_size);
        /* At most 24 + 2^32 - 1 + 2^16 - 1 + 7: no overflow. */
        uint64_t len = sizeof e + (uint64_t)be32toh(e.extra_data_size) +
                       be16toh(e.name_size);
        len = (len + 7) & ~7ull;
        if (len > dir_size - pos) {
            say(c, "bitmap directory entry %" PRIu32 " (%" PRIu64 " bytes "
                "at %" PRIu64 ") runs past the end of the directory (%"
                PRIu64 " bytes)", i, len, pos, dir_size);
            c->res->check_errors++;
            c->broken_bitmaps = true;
            break;
        }
        pos += len;
        if ((t_off & (c->cs - 1)) || t_size > QCOW2_MAX_BITMAP_TABLE ||
            t_off > s->file_size ||
            (s->file_size - t_off) / 8 < t_size) {
            say(c, "bitmap %" PRIu32 ": table 0x%" PRIx64 " (%" PRIu32
                " entries) unaligned or past the end of the file", i, t_off,
                t_size);
            c->res->corruptions++;
            continue;
        }
        inc_range(c, t_off, (uint64_t)t_size * 8);
        uint64_t *t = malloc(t_size ? (size_t)t_size * 8 : 1);
        if (!t || read_at(c, t, (uint64_t)t_size * 8, t_off) != 0) {
            free(t);
            c->res->check_errors++;
            continue;
        }
        for (uint32_t j = 0; j < t_size; j++) {
            uint64_t v = be64toh(t[j]);
            uint64_t off = v & QCOW2_BMT_OFFSET_MASK;
            /* The loader's rule (bitmap-load.c), one error per entry as
             * qemu counts it. */
            const char *why = qcow2_bitmap_entry_bad(v, c->cs);
            if (why) {
                say(c, "bitmap %" PRIu32 " table entry %" PRIu32 " (0x%"
                    PRIx64 "): %s", i, j, v, why);
                c->res->corruptions++;
            }
            if (off)
                inc_range(c, off, c->cs);
        }
        free(t);
    }
    free(dir);
}

/* Count the refcount blocks and check each is referenced exactly once;
 * anything else means the refcount structures need rebuilding. */
static void walk_refblocks(struct ck *c)
{
    struct qcow2_check_result *res = c->res;

    c->n_old_blocks = 0;
    for (uint64_t i = 0; i < c->rt_entries; i++) {
        uint64_t off = c->rt[i] & REFT_OFFSET_MASK;
        uint64_t cluster = off >> c->cbits;

        if (c->rt[i] & REFT_RESERVED_MASK) {
            say(c, "refcount table entry %" PRIu64 ": reserved bits set "
                "(0x%" PRIx64 ")", i, c->rt[i]);
            res->corruptions++;
            c->rebuild = true;
            continue;
        }
        if (off & (c->cs - 1)) {
            say(c, "refcount table entry %" PRIu64 ": block offset 0x%"
                PRIx64 " unaligned", i, off);
            res->corruptions++;
            c->rebuild = true;
            continue;
        }
        if (off && cluster >= c->nb_clusters) {
            say(c, "refcount table entry %" PRIu64 ": block 0x%" PRIx64
                " past the end of the file", i, off);
            res->corruptions++;
            if (c->repair & QCOW2_REPAIR_ERRORS)
                c->rebuild = true;
            continue;
        }
        if (!off)
            continue;
        /* A block sharing its cluster with anything else cannot be
         * trusted, nor written, even when the count would overflow. */
        uint16_t before = c->ref[cluster];
        inc_range(c, off, c->cs);
        if (c->ref[cluster] == before + 1)
            c->old_blocks[c->n_old_blocks++] = cluster;
        if (before != 0 || c->ref[cluster] != 1) {
            say(c, "refcount block %" PRIu64 " at 0x%" PRIx64 " has %u "
                "references", i, off, before + 1u);
            res->corruptions++;
            c->rebuild = true;
        }
    }
}

/* Count every reference from scratch, for a file of the current size. */
static int calculate(struct ck *c, bool stats)
{
    struct qcow2_state *s = c->s;
    struct stat st;

    if (fstat(c->rfd, &st) < 0)
        return -errno;
    s->file_size = (uint64_t)st.st_size;
    c->nb_clusters = (s->file_size + c->cs - 1) >> c->cbits;
    if (c->nb_clusters > INT32_MAX) {
        say(c, "file too large to check (%" PRIu64 " clusters)",
            c->nb_clusters);
        return -EFBIG;
    }
    free(c->ref);
    c->ref = calloc(c->nb_clusters + 1, sizeof *c->ref);
    if (!c->ref)
        return -ENOMEM;
    c->nb_counted = c->nb_clusters;
    c->n_past = 0;
    c->past_lost = false;
    c->broken_bitmaps = false;
    c->rebuild = false;
    c->need_alloc = false;
    c->zero_used = false;

    /* The bitmaps first: a broken directory cancels every repair (see
     * run_check), so the walks below must know before they drop
     * references. */
    inc_range(c, 0, c->cs);
    walk_bitmaps(c);
    unsigned flags = stats ? WALK_STATS : 0;
    uint64_t l1_bytes = (uint64_t)s->h.l1_size * 8;
    if (s->h.l1_table_offset >= c->cs && l1_bytes <= s->file_size &&
        s->h.l1_table_offset <= s->file_size - l1_bytes)
        flags |= WALK_DROP;
    walk_l1(c, s->h.l1_table_offset, s->h.l1_size, flags, true);
    walk_snapshots(c);
    inc_range(c, s->h.refcount_table_offset, c->rt_entries * 8);
    if (s->h.has_fde_ext)
        inc_range(c, s->h.fde_offset, s->h.fde_length);
    walk_refblocks(c);
    return 0;
}

/* ---- Refcounts on disk ---- */

/* Write back the loaded refcount block if it changed. */
static int flush_block(struct ck *c)
{
    if (!c->blk_dirty)
        return 0;
    c->blk_dirty = false;
    c->wrote = true;
    int err = io_pwrite_tag(c->wfd, c->blk, c->cs, c->blk_off,
                            IO_TAG_REFCOUNT_BLOCK);
    if (err) {
        say(c, "writing refcount block 0x%" PRIx64 ": %s", c->blk_off,
            strerror(-err));
        c->res->check_errors++;
    }
    return err;
}

/* The refcount of a cluster as stored; *block is false when no refcount
 * block holds it (the refcount is then 0).  -EIO for a block offset that
 * cannot be read. */
static int get_refcount(struct ck *c, uint64_t cluster, uint64_t *rc,
                        bool *block)
{
    uint64_t ti = cluster >> c->block_bits;

    *rc = 0;
    *block = false;
    if (ti >= c->rt_entries)
        return 0;
    uint64_t off = c->rt[ti] & REFT_OFFSET_MASK;
    if (!off)
        return 0;
    if (off & (c->cs - 1))
        return -EIO;
    if (off != c->blk_off) {
        int err = flush_block(c);
        if (err)
            return err;
        c->blk_off = 0;
        err = read_at(c, c->blk, c->cs, off);
        if (err)
            return err;
        c->blk_off = off;
    }
    *block = true;
    *rc = rc_get(c->blk, c->order, cluster & ((1ull << c->block_bits) - 1));
    return 0;
}

/* Set the refcount of a cluster whose block get_refcount just loaded. */
static void set_refcount(struct ck *c, uint64_t cluster, uint64_t v)
{
    rc_set(c->blk, c->order, cluster & ((1ull << c->block_bits) - 1), v);
    c->blk_dirty = true;
}

/* Compare one cluster's refcount with its references; fix as asked. */
static void compare_one(struct ck *c, uint64_t i, uint64_t want,
                        unsigned fix)
{
    struct qcow2_check_result *res = c->res;
    uint64_t have;
    bool block;

    int err = get_refcount(c, i, &have, &block);
    if (err) {
        say(c, "cannot read the refcount of cluster %" PRIu64 ": %s", i,
            strerror(-err));
        res->check_errors++;
        return;
    }
    if (have || want)
        c->highest = i + 1;
    if (have == want)
        return;
    bool leak = have > want;
    bool fixing = leak ? (fix & QCOW2_REPAIR_LEAKS)
                       : (fix & QCOW2_REPAIR_ERRORS);
    if (have == 0)
        c->zero_used = true;
    if (!leak && !block) {
        fixing = false;
        c->need_alloc = true;
    }
    say(c, "cluster %" PRIu64 " (0x%" PRIx64 "): refcount %" PRIu64 ", "
        "%" PRIu64 " references: %s%s", i, i << c->cbits, have, want,
        leak ? "leaked" : "error", fixing ? ", repairing" : "");
    if (fixing) {
        set_refcount(c, i, want);
        if (leak)
            res->leaks_fixed++;
        else
            res->corruptions_fixed++;
    } else if (leak) {
        res->leaks++;
    } else {
        res->corruptions++;
    }
}

/* Compare every cluster's refcount with its references. */
static void compare(struct ck *c, unsigned fix)
{
    c->highest = 0;
    for (uint64_t i = 0; i < c->nb_counted; i++)
        compare_one(c, i, c->ref[i], fix);
    flush_block(c);
}

/* ---- Rebuilding the refcount structures ---- */

/* Refcount block indexes holding a referenced cluster, ascending. */
static int used_blocks(const struct ck *c, uint64_t **out, size_t *n_out)
{
    size_t n = 0, cap = 16;
    uint64_t *v = malloc(cap * sizeof *v);

    if (!v)
        return -ENOMEM;
    uint64_t epb = 1ull << c->block_bits;
    for (uint64_t b = 0; b * epb < c->nb_counted; b++) {
        for (uint64_t k = b * epb; k < (b + 1) * epb && k < c->nb_counted;
             k++) {
            if (c->ref[k]) {
                v[n++] = b;
                break;
            }
        }
        if (n == cap) {
            uint64_t *w = realloc(v, 2 * cap * sizeof *v);
            if (!w) {
                free(v);
                return -ENOMEM;
            }
            v = w;
            cap *= 2;
        }
    }
    *out = v;
    *n_out = n;
    return 0;
}

/* Blocks and table clusters needed when new structures take clusters
 * [top, end): the used blocks plus those covering the new area. */
static void needs_for(const struct ck *c, const uint64_t *used, size_t n_used,
                      uint64_t top, uint64_t end, uint64_t *blocks,
                      uint64_t *rt_clusters)
{
    uint64_t first = top >> c->block_bits;
    uint64_t last = (end - 1) >> c->block_bits;

    *blocks = n_used + (last - first + 1);
    if (n_used && used[n_used - 1] >= first)
        *blocks -= 1;           /* only the first can be shared */
    *rt_clusters = ((last + 1) * 8 + c->cs - 1) / c->cs;
}

/* How big the new area at cluster top must be: *nb refcount blocks and
 * a table of *rt_cl clusters that count every used cluster (blocks
 * used[0..n_used)) and the area itself.  Grows until the area covers
 * itself, then shrinks to fit. */
static void size_new_area(struct ck *c, const uint64_t *used, size_t n_used,
                          uint64_t top, uint64_t *nb, uint64_t *rt_cl)
{
    *nb = 1;
    *rt_cl = 1;
    for (;;) {
        uint64_t b, r;
        needs_for(c, used, n_used, top, top + *rt_cl + *nb, &b, &r);
        if (b > *nb || r > *rt_cl) {
            *nb = b > *nb ? b : *nb;
            *rt_cl = r > *rt_cl ? r : *rt_cl;
            continue;
        }
        if (b == *nb && r == *rt_cl)
            return;
        *nb = b;
        *rt_cl = r;
    }
}

static int cmp_past(const void *a, const void *b)
{
    const struct past_ref *x = a, *y = b;
    return x->first < y->first ? -1 : x->first > y->first;
}

/* Where the new structures go: at cluster *top, *nb blocks after a
 * table of *rt_cl clusters.  They go past everything in use.  A
 * reference past the end of the file is an error, not space to cover:
 * the area steps over the clusters such references name only when it
 * would overlap them (a table there would be written through them), and
 * the rebuild fails (-EFBIG) rather than take the file far past its
 * end.  0 or -errno. */
static int place_new_area(struct ck *c, const uint64_t *used, size_t n_used,
                          uint64_t *top, uint64_t *nb, uint64_t *rt_cl)
{
    uint64_t start = c->nb_counted;
    uint64_t limit = c->nb_counted > 4096 ? c->nb_counted : 4096;
    uint64_t t = start;

    if (c->past_lost) {
        say(c, "too many references past the end of the file to place "
            "new refcount structures safely");
        return -ENOMEM;
    }
    if (c->n_past)
        qsort(c->past, c->n_past, sizeof *c->past, cmp_past);
    for (;;) {
        size_new_area(c, used, n_used, t, nb, rt_cl);
        uint64_t end = t + *rt_cl + *nb;
        uint64_t next = t;
        for (size_t i = 0; i < c->n_past && c->past[i].first < end; i++)
            if (c->past[i].last >= next)
                next = c->past[i].last + 1;
        if (next == t)
            break;
        if (next - start > limit) {
            say(c, "references past the end of the file leave no room "
                "for new refcount structures near it");
            return -EFBIG;
        }
        t = next;
    }
    *top = t;
    return 0;
}

/* Write the nb new refcount blocks after the table of rt_cl clusters at
 * cluster top, in block index order (the used ranges merged with the new
 * area's), each from the counted references, and point the new table
 * rt (host order) at them.  buf is one cluster of scratch.  0 or
 * -errno. */
static int write_new_blocks(struct ck *c, const uint64_t *used,
                            size_t n_used, uint64_t top, uint64_t rt_cl,
                            uint64_t nb, uint64_t *rt, uint8_t *buf)
{
    uint64_t end = top + rt_cl + nb;
    uint64_t epb = 1ull << c->block_bits;
    uint64_t next_block = top + rt_cl;
    uint64_t first_new = top >> c->block_bits;
    uint64_t last_new = (end - 1) >> c->block_bits;
    size_t u = 0;
    uint64_t b_idx = 0;

    for (uint64_t written = 0; written < nb; written++) {
        uint64_t cand_u = u < n_used ? used[u] : UINT64_MAX;
        uint64_t cand_n = b_idx < first_new ? first_new : b_idx;
        if (cand_n > last_new)
            cand_n = UINT64_MAX;
        uint64_t b = cand_u < cand_n ? cand_u : cand_n;
        if (b == UINT64_MAX)
            break;
        if (cand_u == b)
            u++;
        b_idx = b + 1;

        memset(buf, 0, c->cs);
        for (uint64_t j = 0; j < epb; j++) {
            uint64_t k = b * epb + j;
            uint64_t v;
            if (k >= top)
                v = k < end;
            else
                v = k < c->nb_counted ? c->ref[k] : 0;
            if (v)
                rc_set(buf, c->order, j, v);
        }
        uint64_t at = next_block++ << c->cbits;
        rt[b] = at;
        int err = io_pwrite_tag(c->wfd, buf, c->cs, at,
                                IO_TAG_REFCOUNT_BLOCK);
        if (err)
            return err;
    }
    return 0;
}

/* Write the new table rt (rt_cl clusters, host order) at cluster top,
 * sync, and switch the header to it; rt comes back in host order.  0 or
 * -errno. */
static int switch_table(struct ck *c, uint64_t *rt, uint64_t rt_cl,
                        uint64_t top)
{
    uint64_t rt_ents = rt_cl * c->cs / 8;

    for (uint64_t i = 0; i < rt_ents; i++)
        rt[i] = htobe64(rt[i]);
    int err = io_pwrite_tag(c->wfd, rt, rt_cl * c->cs, top << c->cbits,
                            IO_TAG_REFTABLE_GROW);
    for (uint64_t i = 0; i < rt_ents; i++)
        rt[i] = be64toh(rt[i]);
    if (!err)
        err = io_sync(c->wfd, IO_TAG_REFTABLE_GROW);
    if (err)
        return err;

    /* Table offset and size are adjacent header fields. */
    uint8_t hdr[12];
    put_be64(hdr, top << c->cbits);
    uint32_t cl32 = htobe32((uint32_t)rt_cl);
    memcpy(hdr + 8, &cl32, 4);
    err = io_pwrite_tag(c->wfd, hdr, sizeof hdr,
                        offsetof(struct qcow2_disk_header,
                                 refcount_table_offset), IO_TAG_HEADER);
    if (!err)
        err = io_sync(c->wfd, IO_TAG_HEADER);
    return err;
}

/* Write new refcount blocks and a new table past the end of the file,
 * then switch the header to them. */
static int rebuild(struct ck *c)
{
    struct qcow2_state *s = c->s;
    uint64_t *used = NULL, *rt = NULL;
    uint8_t *buf = NULL;
    size_t n_used;
    int err;

    /* The old table and blocks stay untouched until the header no
     * longer points to them; in the new refcounts they are free. */
    uint64_t rt_first = s->h.refcount_table_offset >> c->cbits;
    uint64_t rt_n = (c->rt_entries * 8 + c->cs - 1) >> c->cbits;
    for (uint64_t k = 0; k < rt_n; k++)
        dec_cluster(c, rt_first + k);
    for (size_t i = 0; i < c->n_old_blocks; i++)
        dec_cluster(c, c->old_blocks[i]);

    err = used_blocks(c, &used, &n_used);
    if (err)
        return err;
    uint64_t top, nb, rt_cl;
    err = place_new_area(c, used, n_used, &top, &nb, &rt_cl);
    if (err)
        goto out;
    if (rt_cl * c->cs > QCOW2_MAX_REFTABLE_BYTES) {
        say(c, "a new refcount table would need %" PRIu64 " clusters",
            rt_cl);
        err = -EFBIG;
        goto out;
    }
    uint64_t rt_ents = rt_cl * c->cs / 8;
    rt = calloc(rt_ents, 8);
    buf = malloc(c->cs);
    if (!rt || !buf) {
        err = -ENOMEM;
        goto out;
    }

    c->wrote = true;
    err = write_new_blocks(c, used, n_used, top, rt_cl, nb, rt, buf);
    if (!err)
        err = switch_table(c, rt, rt_cl, top);
    if (err)
        goto out_io;

    s->h.refcount_table_offset = top << c->cbits;
    s->h.refcount_table_clusters = (uint32_t)rt_cl;
    free(c->rt);
    c->rt = rt;
    rt = NULL;
    c->rt_entries = rt_ents;
    free(c->old_blocks);
    c->old_blocks = malloc(rt_ents * sizeof *c->old_blocks);
    if (!c->old_blocks) {
        err = -ENOMEM;
        goto out;
    }
    c->blk_off = 0;
    c->res->refcounts_rebuilt = true;
    say(c, "rebuilt the refcount structures: table at 0x%" PRIx64 ", %"
        PRIu64 " blocks", top << c->cbits, nb);
    goto out;

out_io:
    say(c, "rebuilding the refcount structures: %s", strerror(-err));
out:
    free(used);
    free(rt);
    free(buf);
    return err;
}

/* ---- COPIED flags and the header ---- */

/* Check (and repair) the COPIED flags of the active L1 and L2 tables
 * against the refcounts on disk. */
static void check_copied(struct ck *c)
{
    struct qcow2_state *s = c->s;
    struct qcow2_check_result *res = c->res;
    uint64_t l1_off = s->h.l1_table_offset;
    uint32_t eb = s->l2_entry_bytes;
    bool repair;

    /* A leaks-only repair trusts the refcounts only if nothing else is
     * wrong with them. */
    if (c->repair & QCOW2_REPAIR_ERRORS)
        repair = true;
    else if (c->repair & QCOW2_REPAIR_LEAKS)
        repair = !res->check_errors && !res->corruptions && !res->leaks;
    else
        repair = false;

    for (uint32_t i = 0; i < c->l1_size; i++) {
        uint64_t e = c->l1[i];
        uint64_t l2 = e & QCOW2_L1E_OFFSET_MASK;
        uint64_t rc;
        bool block;

        if (!l2 || get_refcount(c, l2 >> c->cbits, &rc, &block) != 0)
            continue;
        if ((rc == 1) != !!(e & QCOW2_L2E_COPIED)) {
            say(c, "L1 entry %" PRIu32 " (0x%" PRIx64 "): COPIED flag %s "
                "with refcount %" PRIu64 "%s", i, e,
                (e & QCOW2_L2E_COPIED) ? "set" : "clear", rc,
                repair ? ", repairing" : "");
            res->corruptions++;
            if (repair) {
                uint64_t v = rc == 1 ? e | QCOW2_L2E_COPIED
                                     : e & ~QCOW2_L2E_COPIED;
                uint8_t be[8];
                put_be64(be, v);
                c->wrote = true;
                int err = io_pwrite_tag(c->wfd, be, 8, l1_off + 8ull * i,
                                        IO_TAG_L1);
                if (err) {
                    say(c, "writing L1 entry %" PRIu32 ": %s", i,
                        strerror(-err));
                    res->check_errors++;
                    return;
                }
                c->l1[i] = v;
                if (s->l1 && s->l1_offset == l1_off && i < s->l1_size)
                    s->l1[i] = v;
                res->corruptions--;
                res->corruptions_fixed++;
            }
        }

        int err = read_at(c, c->l2, c->cs, l2);
        if (err) {
            say(c, "reading L2 table 0x%" PRIx64 ": %s", l2, strerror(-err));
            res->check_errors++;
            return;
        }
        uint64_t dirty = 0;
        for (uint32_t j = 0; j < c->cs / eb; j++) {
            uint8_t *p = c->l2 + (size_t)j * eb;
            uint64_t e2 = get_be64(p);
            enum l2_type t = l2_type_of(c, e2);
            if (t != T_NORMAL && t != T_ZERO_ALLOC)
                continue;
            uint64_t rc2 = 1;
            if (!c->data_file &&
                get_refcount(c, (e2 & QCOW2_L2E_OFFSET_MASK) >> c->cbits,
                             &rc2, &block) != 0)
                continue;
            if ((rc2 == 1) == !!(e2 & QCOW2_L2E_COPIED))
                continue;
            say(c, "L2 table 0x%" PRIx64 " entry %" PRIu32 " (0x%" PRIx64
                "): COPIED flag %s with refcount %" PRIu64 "%s", l2, j, e2,
                (e2 & QCOW2_L2E_COPIED) ? "set" : "clear", rc2,
                repair ? ", repairing" : "");
            res->corruptions++;
            if (repair) {
                put_be64(p, rc2 == 1 ? e2 | QCOW2_L2E_COPIED
                                     : e2 & ~QCOW2_L2E_COPIED);
                dirty++;
            }
        }
        /* An unaligned or truncated table is left as it is. */
        if (dirty && !(l2 & (c->cs - 1)) && l2 < s->file_size &&
            s->file_size - l2 >= c->cs) {
            c->wrote = true;
            err = io_pwrite_tag(c->wfd, c->l2, c->cs, l2, IO_TAG_L2);
            if (err) {
                say(c, "writing L2 table 0x%" PRIx64 ": %s", l2,
                    strerror(-err));
                res->check_errors++;
                return;
            }
            res->corruptions -= dirty;
            res->corruptions_fixed += dirty;
        }
    }
}

/* Clear the dirty and corrupt bits once everything is consistent. */
static int mark_clean(struct ck *c)
{
    struct qcow2_state *s = c->s;
    uint64_t bits = QCOW2_INCOMPAT_DIRTY | QCOW2_INCOMPAT_CORRUPT;

    if (s->h.version < 3 || !(s->h.incompatible & bits))
        return 0;
    int err = io_sync(c->wfd, IO_TAG_HEADER);
    if (err)
        return err;
    uint8_t be[8];
    put_be64(be, s->h.incompatible & ~bits);
    c->wrote = true;
    err = io_pwrite_tag(c->wfd, be, 8,
                        offsetof(struct qcow2_disk_header,
                                 incompatible_features), IO_TAG_HEADER);
    if (!err)
        err = io_sync(c->wfd, IO_TAG_HEADER);
    if (err)
        return err;
    s->h.incompatible &= ~bits;
    return 0;
}

/* ---- The check ---- */

/* Read the refcount table the header names. */
static int load_reftable(struct ck *c)
{
    struct qcow2_state *s = c->s;
    uint64_t bytes = (uint64_t)s->h.refcount_table_clusters * c->cs;

    c->rt_entries = bytes / 8;
    c->rt = malloc(bytes ? bytes : 1);
    c->old_blocks = malloc((c->rt_entries ? c->rt_entries : 1) *
                           sizeof *c->old_blocks);
    if (!c->rt || !c->old_blocks)
        return -ENOMEM;
    int err = read_at(c, c->rt, bytes, s->h.refcount_table_offset);
    if (err) {
        say(c, "reading the refcount table: %s", strerror(-err));
        return err;
    }
    for (uint64_t i = 0; i < c->rt_entries; i++)
        c->rt[i] = be64toh(c->rt[i]);
    return 0;
}

/* The rebuild path: new structures, then a fresh count and a leak
 * repair of what the rebuild itself left over. */
static int rebuild_and_recount(struct ck *c)
{
    struct qcow2_check_result *res = c->res;
    struct qcow2_check_result old = *res;

    int err = rebuild(c);
    if (err) {
        res->check_errors++;
        return err;
    }
    res->corruptions = 0;
    res->leaks = 0;
    err = calculate(c, false);
    if (err) {
        res->check_errors++;
        return err;
    }
    /* The new blocks count what the file held before they were written;
     * when they had to be placed past clusters that references past the
     * end of the file name, the file now holds those clusters (as
     * zeros) and their references count: fix their refcounts too, as
     * the repair asked, and report whatever is left. */
    struct qcow2_check_result saved = *res;
    memset(res, 0, sizeof *res);
    compare(c, c->repair);
    if (c->rebuild)
        say(c, "the rebuilt refcount structures are still broken");
    struct qcow2_check_result fresh = *res;
    *res = saved;
    if (res->corruptions < old.corruptions)
        res->corruptions_fixed += old.corruptions - res->corruptions;
    if (res->leaks < old.leaks)
        res->leaks_fixed += old.leaks - res->leaks;
    res->leaks += fresh.leaks;
    res->corruptions += fresh.corruptions;
    res->check_errors += fresh.check_errors;
    res->leaks_fixed += fresh.leaks_fixed;
    res->corruptions_fixed += fresh.corruptions_fixed;
    return 0;
}

/* Run a check on c, whose s, fds, repair and res are set. */
static int run_check(struct ck *c)
{
    struct qcow2_state *s = c->s;
    struct qcow2_check_result *res = c->res;
    int err;

    c->cs = s->cluster_size;
    c->cbits = s->h.cluster_bits;
    c->order = s->h.refcount_order;
    c->block_bits = c->cbits + 3 - c->order;
    c->max_rc = c->order == 6 ? UINT64_MAX : (1ull << (1u << c->order)) - 1;
    c->data_file = s->h.incompatible & QCOW2_INCOMPAT_DATA_FILE;
    c->blk = malloc(c->cs);
    c->l2 = malloc(c->cs);
    if (!c->blk || !c->l2)
        return -ENOMEM;
    err = load_reftable(c);
    if (err)
        return err;

    res->total_clusters = (s->h.size + c->cs - 1) >> c->cbits;
    err = calculate(c, true);
    if (err)
        return err;

    /* Clusters of bitmap tables the directory no longer leads to would
     * look leaked, and a repair would free them: like qemu, which
     * refuses such an image, repair nothing. */
    if (c->broken_bitmaps && c->repair) {
        say(c, "not repairing: the bitmap directory is broken");
        c->repair = 0;
    }
    struct qcow2_check_result pre = *res;
    compare(c, 0);
    /* Blocks that could not be read are replaced by a rebuild. */
    if (c->rebuild && (c->repair & QCOW2_REPAIR_ERRORS))
        res->check_errors = pre.check_errors;
    /* Raising a refcount whose block is missing would need a cluster
     * allocated while the refcounts are wrong: rebuild instead.  A leak
     * repair alone is refused while a cluster in use has refcount 0, as
     * qemu refuses it: the refcounts cannot be trusted. */
    bool need_rebuild = c->rebuild || c->need_alloc;
    bool untrusted = need_rebuild || c->zero_used;
    c->need_alloc = false;
    if (need_rebuild && (c->repair & QCOW2_REPAIR_ERRORS)) {
        say(c, "rebuilding the refcount structures");
        err = rebuild_and_recount(c);
        if (err)
            return err;
    } else if (c->repair) {
        if (untrusted && !(c->repair & QCOW2_REPAIR_ERRORS)) {
            say(c, "the refcount structures need rebuilding, which only "
                "an error repair does");
            res->check_errors++;
            return -EIO;
        }
        if (res->leaks || res->corruptions) {
            *res = pre;
            compare(c, c->repair);
            if (c->need_alloc)
                say(c, "some refcounts could not be raised: their "
                    "refcount block is missing");
        }
    }

    check_copied(c);
    /* As qemu: at least the header cluster, even when nothing could be
     * read. */
    res->image_end_offset = (c->highest ? c->highest : 1) << c->cbits;

    if (c->repair && !res->check_errors && !res->corruptions) {
        err = mark_clean(c);
        if (err) {
            say(c, "clearing the dirty bit: %s", strerror(-err));
            res->check_errors++;
            return err;
        }
    }
    if (c->wrote) {
        err = io_sync(c->wfd, IO_TAG_OTHER);
        if (err) {
            res->check_errors++;
            return err;
        }
    }
    return 0;
}

static void ck_free(struct ck *c)
{
    free(c->ref);
    free(c->past);
    free(c->rt);
    free(c->old_blocks);
    free(c->blk);
    free(c->l2);
    free(c->l1);
}

/* Check with reads from rfd and repairs through wfd. */
static int check_fds(struct qcow2_state *s, int rfd, int wfd,
                     unsigned repair, struct qcow2_check_result *res)
{
    struct ck c;

    memset(res, 0, sizeof *res);
    memset(&c, 0, sizeof c);
    c.s = s;
    c.path = s->img.path;
    c.rfd = rfd;
    c.wfd = wfd;
    c.repair = repair & (QCOW2_REPAIR_LEAKS | QCOW2_REPAIR_ERRORS);
    c.res = res;
    int err = run_check(&c);
    res->metadata_changed = c.wrote;
    ck_free(&c);
    return err;
}

int qcow2_check(struct qcow2_state *s, unsigned repair,
                struct qcow2_check_result *res)
{
    return check_fds(s, s->fd, s->fd, repair, res);
}

int qcow2_check_image(struct image *img, unsigned repair,
                      struct qcow2_check_result *res)
{
    if (!img || img->ops != &qcow2_ops)
        return -ENOTSUP;
    struct qcow2_state *s = qcow2_from_img(img);
    int flags = fcntl(s->fd, F_GETFL);
    if (!repair || (flags >= 0 && (flags & O_ACCMODE) == O_RDWR))
        return qcow2_check(s, repair, res);

    int wfd = open(img->path, O_RDWR | O_CLOEXEC);
    if (wfd < 0) {
        int err = -errno;
        img_log("qcow2: %s: opening for repair: %s", img->path,
                strerror(errno));
        return err;
    }
    io_register(wfd, img->path);
    int err = check_fds(s, s->fd, wfd, repair, res);
    close(wfd);
    return err;
}

int qcow2_check_open(const char *path, bool writable,
                     struct qcow2_state **out)
{
    struct qcow2_state *s = calloc(1, sizeof *s);
    int err;

    if (!s)
        return -ENOMEM;
    s->fd = s->data_fd = -1;
    s->img.path = strdup(path);
    if (!s->img.path) {
        err = -ENOMEM;
        goto out_close;
    }
    s->fd = open(path, (writable ? O_RDWR : O_RDONLY) | O_CLOEXEC);
    if (s->fd < 0) {
        err = -errno;
        img_log("qcow2: %s: %s", path, strerror(errno));
        goto out_close;
    }
    if (writable)
        io_register(s->fd, path);
    err = qcow2_read_header(s, true);
    if (err)
        goto out_close;
    err = qcow2_read_snapshots(s);
    if (err)
        goto out_close;
    s->img.size = s->h.size;
    s->img.read_only = !writable;
    s->l1_offset = s->h.l1_table_offset;
    s->l1_size = s->h.l1_size;
    if (s->l1_size) {
        s->l1 = malloc((size_t)s->l1_size * 8);
        if (!s->l1) {
            err = -ENOMEM;
            goto out_close;
        }
        err = io_pread_full(s->fd, s->l1, (uint64_t)s->l1_size * 8,
                            s->l1_offset);
        if (err) {
            img_log("qcow2: %s: reading L1 table: %s", path,
                    strerror(-err));
            goto out_close;
        }
        for (uint32_t i = 0; i < s->l1_size; i++)
            s->l1[i] = be64toh(s->l1[i]);
    }
    *out = s;
    return 0;

out_close:
    qcow2_check_close(s);
    return err;
}

void qcow2_check_close(struct qcow2_state *s)
{
    if (!s)
        return;
    qcow2_free_snapshots(s);
    qcow2_header_free(&s->h);
    free(s->l1);
    if (s->fd >= 0)
        close(s->fd);
    free(s->img.path);
    free(s);
}
