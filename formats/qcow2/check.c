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
#include "check-int.h"

void ck_say(struct ck *c, const char *fmt, ...)
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

void ck_put_be64(uint8_t *p, uint64_t v)
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
void ck_rc_set(uint8_t *b, uint32_t order, uint64_t i, uint64_t v)
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
    ck_say(c, "%s 0x%" PRIx64 " entry %" PRIu32 ": 0x%" PRIx64 " is past the "
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
        ck_say(c, "reference to 0x%" PRIx64 " (%" PRIu64 " bytes) past the "
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
            ck_say(c, "cluster %" PRIu64 " (0x%" PRIx64 ") has more "
                "references than its refcount can hold", k, k << c->cbits);
            c->res->corruptions++;
            continue;
        }
        c->ref[k]++;
    }
}

/* Drop one reference counted by inc_range for a cluster in the file. */
void ck_dec_cluster(struct ck *c, uint64_t k)
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
        ck_put_be64(p, 0);
        ck_put_be64(p + 8, 0xffffffff00000000ull);
    } else {
        ck_put_be64(p, s->h.version >= 3 ? QCOW2_L2E_ZERO : 0);
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
        ck_say(c, "reading L2 table 0x%" PRIx64 ": %s", l2_off, strerror(-err));
        res->check_errors++;
        return;
    }
    for (uint32_t i = 0; i < c->cs / eb; i++) {
        uint64_t e = get_be64(c->l2 + (size_t)i * eb);
        uint64_t bm = s->ext_l2 ? get_be64(c->l2 + (size_t)i * eb + 8) : 0;
        enum l2_type t = l2_type_of(c, e);

        if (t != T_COMPRESSED && (e & L2E_RESERVED_MASK)) {
            ck_say(c, "L2 table 0x%" PRIx64 " entry %" PRIu32 ": reserved "
                "bits set (0x%" PRIx64 ")", l2_off, i, e);
            res->corruptions++;
        }
        switch (t) {
        case T_COMPRESSED: {
            if (e & QCOW2_L2E_COPIED) {
                ck_say(c, "L2 table 0x%" PRIx64 " entry %" PRIu32 ": COPIED "
                    "flag on a compressed cluster", l2_off, i);
                res->corruptions++;
            }
            if (c->data_file) {
                ck_say(c, "L2 table 0x%" PRIx64 " entry %" PRIu32 ": "
                    "compressed cluster with an external data file",
                    l2_off, i);
                res->corruptions++;
                break;
            }
            if (bm) {
                ck_say(c, "L2 table 0x%" PRIx64 " entry %" PRIu32 ": "
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
                ck_say(c, "L2 table 0x%" PRIx64 " entry %" PRIu32 ": "
                    "subclusters both allocated and zero", l2_off, i);
                res->corruptions++;
            }
            if (off & (c->cs - 1)) {
                ck_say(c, "L2 table 0x%" PRIx64 " entry %" PRIu32 ": cluster "
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
                ck_say(c, "L2 table 0x%" PRIx64 " entry %" PRIu32 ": "
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
            ck_say(c, "writing L2 table 0x%" PRIx64 ": %s", l2_off,
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
        ck_say(c, "reading L1 table 0x%" PRIx64 ": %s", l1_off, strerror(-err));
        res->check_errors++;
        free(l1);
        return;
    }
    for (uint32_t i = 0; i < l1_size; i++) {
        l1[i] = be64toh(l1[i]);
        if (l1[i] & L1E_RESERVED_MASK) {
            ck_say(c, "L1 table 0x%" PRIx64 " entry %" PRIu32 ": reserved "
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
                ck_say(c, "writing L1 table 0x%" PRIx64 ": %s", l1_off,
                    strerror(-err));
                res->check_errors++;
            }
            l1[i] = 0;
            continue;
        }
        inc_range(c, l2, c->cs);
        if (l2 & (c->cs - 1)) {
            ck_say(c, "L1 table 0x%" PRIx64 " entry %" PRIu32 ": L2 table "
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
            ck_say(c, "reading snapshot %" PRIu32, i);
            c->res->check_errors++;
            return;
        }
        uint64_t l1_off = be64toh(d.l1_table_offset);
        uint32_t l1_size = be32toh(d.l1_size);
        pos += sizeof d + be32toh(d.extra_data_size) +
               be16toh(d.id_str_size) + be16toh(d.name_size);
        end = pos;
        if (l1_off & (c->cs - 1)) {
            ck_say(c, "snapshot %" PRIu32 ": L1 table offset 0x%" PRIx64
                " unaligned", i, l1_off);
            c->res->corruptions++;
            continue;
        }
        if (l1_size > QCOW2_MAX_L1_BYTES / 8) {
            ck_say(c, "snapshot %" PRIu32 ": L1 table of %" PRIu32 " entries "
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
        ck_say(c, "bitmap directory 0x%" PRIx64 " (%" PRIu64 " bytes) "
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
            ck_say(c, "bitmap directory ends inside entry %" PRIu32, i);
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
            ck_say(c, "bitmap directory entry %" PRIu32 " (%" PRIu64 " bytes "
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
            ck_say(c, "bitmap %" PRIu32 ": table 0x%" PRIx64 " (%" PRIu32
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
                ck_say(c, "bitmap %" PRIu32 " table entry %" PRIu32 " (0x%"
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
            ck_say(c, "refcount table entry %" PRIu64 ": reserved bits set "
                "(0x%" PRIx64 ")", i, c->rt[i]);
            res->corruptions++;
            c->rebuild = true;
            continue;
        }
        if (off & (c->cs - 1)) {
            ck_say(c, "refcount table entry %" PRIu64 ": block offset 0x%"
                PRIx64 " unaligned", i, off);
            res->corruptions++;
            c->rebuild = true;
            continue;
        }
        if (off && cluster >= c->nb_clusters) {
            ck_say(c, "refcount table entry %" PRIu64 ": block 0x%" PRIx64
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
            ck_say(c, "refcount block %" PRIu64 " at 0x%" PRIx64 " has %u "
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
    int err = io_size(c->rfd, &s->file_size);

    if (err)
        return err;
    c->nb_clusters = (s->file_size + c->cs - 1) >> c->cbits;
    if (c->nb_clusters > INT32_MAX) {
        ck_say(c, "file too large to check (%" PRIu64 " clusters)",
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
        ck_say(c, "writing refcount block 0x%" PRIx64 ": %s", c->blk_off,
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
    ck_rc_set(c->blk, c->order, cluster & ((1ull << c->block_bits) - 1), v);
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
        ck_say(c, "cannot read the refcount of cluster %" PRIu64 ": %s", i,
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
    ck_say(c, "cluster %" PRIu64 " (0x%" PRIx64 "): refcount %" PRIu64 ", "
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
            ck_say(c, "L1 entry %" PRIu32 " (0x%" PRIx64 "): COPIED flag %s "
                "with refcount %" PRIu64 "%s", i, e,
                (e & QCOW2_L2E_COPIED) ? "set" : "clear", rc,
                repair ? ", repairing" : "");
            res->corruptions++;
            if (repair) {
                uint64_t v = rc == 1 ? e | QCOW2_L2E_COPIED
                                     : e & ~QCOW2_L2E_COPIED;
                uint8_t be[8];
                ck_put_be64(be, v);
                c->wrote = true;
                int err = io_pwrite_tag(c->wfd, be, 8, l1_off + 8ull * i,
                                        IO_TAG_L1);
                if (err) {
                    ck_say(c, "writing L1 entry %" PRIu32 ": %s", i,
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
            ck_say(c, "reading L2 table 0x%" PRIx64 ": %s", l2, strerror(-err));
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
            ck_say(c, "L2 table 0x%" PRIx64 " entry %" PRIu32 " (0x%" PRIx64
                "): COPIED flag %s with refcount %" PRIu64 "%s", l2, j, e2,
                (e2 & QCOW2_L2E_COPIED) ? "set" : "clear", rc2,
                repair ? ", repairing" : "");
            res->corruptions++;
            if (repair) {
                ck_put_be64(p, rc2 == 1 ? e2 | QCOW2_L2E_COPIED
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
                ck_say(c, "writing L2 table 0x%" PRIx64 ": %s", l2,
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
    ck_put_be64(be, s->h.incompatible & ~bits);
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
        ck_say(c, "reading the refcount table: %s", strerror(-err));
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

    int err = ck_rebuild(c);
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
        ck_say(c, "the rebuilt refcount structures are still broken");
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
        ck_say(c, "not repairing: the bitmap directory is broken");
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
        ck_say(c, "rebuilding the refcount structures");
        err = rebuild_and_recount(c);
        if (err)
            return err;
    } else if (c->repair) {
        if (untrusted && !(c->repair & QCOW2_REPAIR_ERRORS)) {
            ck_say(c, "the refcount structures need rebuilding, which only "
                "an error repair does");
            res->check_errors++;
            return -EIO;
        }
        if (res->leaks || res->corruptions) {
            *res = pre;
            compare(c, c->repair);
            if (c->need_alloc)
                ck_say(c, "some refcounts could not be raised: their "
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
            ck_say(c, "clearing the dirty bit: %s", strerror(-err));
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
    s->fd = io_open(path, writable);     /* a file or an rbd: image */
    if (s->fd < 0) {
        err = s->fd;
        if (!io_is_remote_name(path))   /* the backend said why */
            img_log("qcow2: %s: %s", path, strerror(-err));
        goto out_close;
    }
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
        io_close(s->fd);
    free(s->img.path);
    free(s);
}
