/* qcow2 cluster mapping: guest offset -> L1 entry -> L2 entry -> host
 * offset, for every kind of cluster the spec defines (unallocated, zero
 * plain and allocated, normal, compressed) and for extended L2 entries
 * with their 32 subclusters each.
 *
 * A lookup returns the longest run of one kind starting at the guest
 * offset inside one L2 table, so the read path issues one pread per
 * host-contiguous stretch and block status walks a table in one call.
 * Every entry is checked before use; a bad one fails the request that
 * reaches it with -EIO and one log line, never anything worse.
 */
#include <endian.h>
#include <errno.h>
#include <inttypes.h>
#include <string.h>

#include "qcow2.h"

/* Log a bad L2 entry in the form every caller uses, unless quiet (a
 * non-blocking lookup, whose caller retries with a blocking one that
 * logs). */
static void bad_entry(const struct qcow2_state *s, bool quiet,
                      uint64_t l2_off, uint32_t idx, const char *what,
                      uint64_t value)
{
    if (quiet)
        return;
    img_log("qcow2: %s: L2 entry %" PRIu32 " of table 0x%" PRIx64 ": %s "
            "(0x%" PRIx64 ")", s->img.path, idx, l2_off, what, value);
}

int qcow2_decode_l2e(const struct qcow2_state *s, bool quiet,
                     const uint8_t *t, uint64_t l2_off, uint32_t idx,
                     uint64_t guest, struct qcow2_l2e *e)
{
    uint64_t v;
    const uint8_t *p = t + (size_t)idx * s->l2_entry_bytes;
    bool data_file = s->h.incompatible & QCOW2_INCOMPAT_DATA_FILE;

    memcpy(&v, p, 8);
    v = be64toh(v);
    e->raw = v;
    e->host = 0;
    e->bitmap = 0;
    if (s->ext_l2) {
        memcpy(&e->bitmap, p + 8, 8);
        e->bitmap = be64toh(e->bitmap);
    }
    if (v & QCOW2_L2E_COMPRESSED) {
        if (data_file) {
            bad_entry(s, quiet, l2_off, idx, "compressed cluster in an image "
                      "with an external data file", v);
            return -EIO;
        }
        e->type = QCOW2_C_COMPRESSED;
        return 0;
    }
    uint64_t host = v & QCOW2_L2E_OFFSET_MASK;
    if ((v & QCOW2_L2E_ZERO) && !s->ext_l2) {
        if (host & s->cluster_mask) {
            bad_entry(s, quiet, l2_off, idx,
                      "zero cluster offset unaligned", v);
            return -EIO;
        }
        e->type = QCOW2_C_ZERO;
        e->host = host;     /* a preallocation, or 0 */
        return 0;
    }
    if (host == 0 && !(data_file && (v & QCOW2_L2E_COPIED))) {
        if (e->bitmap & QCOW2_SC_ALLOC_MASK) {
            bad_entry(s, quiet, l2_off, idx, "subclusters allocated in an "
                      "unallocated cluster", e->bitmap);
            return -EIO;
        }
        e->type = QCOW2_C_UNALLOCATED;
        return 0;
    }
    if (host & s->cluster_mask) {
        bad_entry(s, quiet, l2_off, idx, "host cluster offset unaligned", v);
        return -EIO;
    }
    if (data_file) {
        if (host != guest) {
            bad_entry(s, quiet, l2_off, idx, "external data file offset "
                      "differs from the guest offset", v);
            return -EIO;
        }
    } else if (host >= s->file_size) {
        bad_entry(s, quiet, l2_off, idx, "host cluster past end of file", v);
        return -EIO;
    }
    if ((e->bitmap >> 32) & e->bitmap) {
        bad_entry(s, quiet, l2_off, idx, "subcluster both allocated and zero",
                  e->bitmap);
        return -EIO;
    }
    e->type = QCOW2_C_NORMAL;
    e->host = host;
    return 0;
}

int qcow2_decode_compressed(const struct qcow2_state *s, bool quiet,
                            uint64_t l2_off, uint32_t idx, uint64_t v,
                            struct qcow2_run *run)
{
    uint64_t desc = v & ~(QCOW2_L2E_COMPRESSED | QCOW2_L2E_COPIED);
    uint64_t coffset = desc & s->coffset_mask;
    uint64_t sectors = ((desc >> s->csize_shift) & s->csize_mask) + 1;

    /* Atomic: copy-on-write decodes old entries with the metadata lock
     * dropped, while allocations grow the file. */
    if (coffset >= __atomic_load_n(&s->file_size, __ATOMIC_RELAXED)) {
        bad_entry(s, quiet, l2_off, idx, "compressed data past end of file", v);
        return -EIO;
    }
    run->coffset = coffset;
    run->csize = sectors * QCOW2_COMPRESSED_SECTOR -
                 (coffset & (QCOW2_COMPRESSED_SECTOR - 1));
    return 0;
}

enum qcow2_kind qcow2_unit_kind(const struct qcow2_state *s,
                                const struct qcow2_l2e *e,
                                uint64_t in_cluster)
{
    switch (e->type) {
    case QCOW2_C_ZERO:
        return QCOW2_ZERO;
    case QCOW2_C_COMPRESSED:
        return QCOW2_COMPRESSED;
    case QCOW2_C_UNALLOCATED:
        if (s->ext_l2 &&
            (e->bitmap >> (32 + (in_cluster >> s->sc_bits))) & 1)
            return QCOW2_ZERO;
        return QCOW2_UNALLOCATED;
    case QCOW2_C_NORMAL:
    default:
        if (!s->ext_l2)
            return QCOW2_DATA;
        unsigned sc = (unsigned)(in_cluster >> s->sc_bits);
        if ((e->bitmap >> (32 + sc)) & 1)
            return QCOW2_ZERO;
        if ((e->bitmap >> sc) & 1)
            return QCOW2_DATA;
        return QCOW2_UNALLOCATED;
    }
}

/* Extend run over table t from guest offset pos to at most end. */
static int walk_table(struct qcow2_state *s, const uint8_t *t,
                      uint64_t l2_off, uint64_t pos, uint64_t end,
                      unsigned flags, struct qcow2_run *run)
{
    uint32_t l2_mask = (1u << s->l2_bits) - 1;
    bool status = flags & QCOW2_MAP_STATUS;
    bool quiet = flags & QCOW2_MAP_NOWAIT;
    bool first = true;
    int err;

    while (pos < end) {
        uint64_t in_cluster = pos & s->cluster_mask;
        uint64_t guest_cluster = pos - in_cluster;
        uint32_t idx = (uint32_t)(pos >> s->h.cluster_bits) & l2_mask;
        struct qcow2_l2e e;

        err = qcow2_decode_l2e(s, quiet, t, l2_off, idx, guest_cluster, &e);
        if (err)
            return first ? err : 0;   /* the next lookup reports it */

        uint64_t cluster_end = guest_cluster + s->cluster_size;
        if (e.type == QCOW2_C_COMPRESSED) {
            uint64_t stop = cluster_end < end ? cluster_end : end;
            if (status) {
                /* Block status only needs to know it is data. */
                if (!first && run->kind != QCOW2_DATA)
                    return 0;
                run->kind = QCOW2_DATA;
                run->length += stop - pos;
                pos = stop;
                first = false;
                continue;
            }
            if (!first)
                return 0;
            err = qcow2_decode_compressed(s, quiet, l2_off, idx, e.raw, run);
            if (err)
                return err;
            run->kind = QCOW2_COMPRESSED;
            run->cluster_guest = guest_cluster;
            run->length = stop - pos;
            return 0;
        }

        /* Walk the cluster's units: one, or 32 subclusters. */
        while (pos < end && pos < cluster_end) {
            uint64_t unit_end = s->ext_l2
                ? (pos | (((uint64_t)1 << s->sc_bits) - 1)) + 1
                : cluster_end;
            if (unit_end > end)
                unit_end = end;
            enum qcow2_kind k = qcow2_unit_kind(s, &e,
                                                pos & s->cluster_mask);
            uint64_t host = e.host + (pos & s->cluster_mask);
            if (first) {
                run->kind = k;
                run->host_offset = host;
                run->length = 0;
                first = false;
            } else if (k != run->kind) {
                return 0;
            } else if (k == QCOW2_DATA && !status &&
                       host != run->host_offset + run->length) {
                return 0;
            }
            run->length += unit_end - pos;
            pos = unit_end;
        }
    }
    return 0;
}

int qcow2_l2_offset(const struct qcow2_state *s, uint64_t l1_index,
                    bool quiet, uint64_t *l2_off)
{
    *l2_off = 0;
    if (l1_index >= s->l1_size)
        return 0;
    uint64_t off = s->l1[l1_index] & QCOW2_L1E_OFFSET_MASK;
    if (off == 0)
        return 0;
    bool bad = (off & s->cluster_mask) || off > s->file_size ||
               s->file_size - off < s->cluster_size;
    if (bad && quiet)
        return -EAGAIN;     /* the blocking lookup logs it */
    if (off & s->cluster_mask) {
        img_log("qcow2: %s: L1 entry %" PRIu64 ": L2 table offset 0x%"
                PRIx64 " unaligned", s->img.path, l1_index, off);
        return -EIO;
    }
    if (bad) {
        img_log("qcow2: %s: L1 entry %" PRIu64 ": L2 table 0x%" PRIx64
                " past end of file", s->img.path, l1_index, off);
        return -EIO;
    }
    *l2_off = off;
    return 0;
}

void qcow2_set_l2e(const struct qcow2_state *s, uint8_t *t, uint32_t idx,
                   uint64_t raw, uint64_t bitmap)
{
    uint8_t *p = t + (size_t)idx * s->l2_entry_bytes;
    uint64_t v = htobe64(raw);

    memcpy(p, &v, 8);
    if (s->ext_l2) {
        v = htobe64(bitmap);
        memcpy(p + 8, &v, 8);
    }
}

int qcow2_l2e_run(const struct qcow2_state *s, const struct qcow2_l2e *e,
                  uint64_t pos, uint64_t end, struct qcow2_run *run)
{
    uint64_t in_cluster = pos & s->cluster_mask;

    memset(run, 0, sizeof *run);
    if (e->type == QCOW2_C_COMPRESSED) {
        int err = qcow2_decode_compressed(s, false, 0, 0, e->raw, run);
        if (err)
            return err;
        run->kind = QCOW2_COMPRESSED;
        run->cluster_guest = pos - in_cluster;
        run->length = end - pos;
        return 0;
    }
    run->kind = qcow2_unit_kind(s, e, in_cluster);
    run->host_offset = e->host + in_cluster;
    while (pos < end) {
        uint64_t unit_end = s->ext_l2
            ? (pos | (((uint64_t)1 << s->sc_bits) - 1)) + 1 : end;
        if (unit_end > end)
            unit_end = end;
        if (qcow2_unit_kind(s, e, pos & s->cluster_mask) != run->kind)
            break;
        run->length += unit_end - pos;
        pos = unit_end;
    }
    return 0;
}

int qcow2_map(struct qcow2_state *s, uint64_t off, uint64_t len,
              unsigned flags, struct qcow2_run *run)
{
    uint32_t span_bits = s->h.cluster_bits + s->l2_bits;
    uint64_t l1_index = off >> span_bits;
    uint64_t span_end = (l1_index + 1) << span_bits;
    uint64_t end = len > span_end - off ? span_end : off + len;

    memset(run, 0, sizeof *run);
    uint64_t l2_off;
    int err = qcow2_l2_offset(s, l1_index, flags & QCOW2_MAP_NOWAIT,
                              &l2_off);
    if (err)
        return err;
    if (l2_off == 0) {
        /* No L2 table: the whole span is unallocated. */
        run->kind = QCOW2_UNALLOCATED;
        run->length = end - off;
        return 0;
    }

    struct qcow2_table *t = NULL;
    err = (flags & QCOW2_MAP_NOWAIT)
          ? qcow2_cache_get_nowait(s->cache, l2_off, &t)
          : qcow2_cache_get(s->cache, l2_off, &t);
    if (err)
        return err;
    err = walk_table(s, t->data, l2_off, off, end, flags, run);
    qcow2_cache_put(s->cache, &t);
    if (err && (flags & QCOW2_MAP_NOWAIT))
        return -EAGAIN;
    return err;
}

int qcow2_fetch_unlocked(struct qcow2_state *s, uint64_t l2_off)
{
    struct qcow2_table *t;

    if (!s->writable || l2_off == 0)
        return 0;
    if (qcow2_cache_get_nowait(s->cache, l2_off, &t) == 0) {
        qcow2_cache_put(s->cache, &t);
        return 0;
    }
    qcow2_unlock(s);
    int err = qcow2_cache_fetch(s->cache, l2_off);
    qcow2_lock(s);
    return err ? 2 : 1;
}

int qcow2_map_fetching(struct qcow2_state *s, uint64_t off, uint64_t len,
                       unsigned flags, struct qcow2_run *run)
{
    uint32_t span_bits = s->h.cluster_bits + s->l2_bits;

    /* A few tries: the table may be evicted again before we look. */
    for (int tries = 0; s->writable && tries < 3; tries++) {
        int err = qcow2_map(s, off, len, flags | QCOW2_MAP_NOWAIT, run);
        if (err != -EAGAIN)
            return err;
        uint64_t l2_off;
        if (qcow2_l2_offset(s, off >> span_bits, true, &l2_off) != 0 ||
            qcow2_fetch_unlocked(s, l2_off) != 1)
            break;      /* bad metadata: the lookup below reports it */
    }
    return qcow2_map(s, off, len, flags, run);
}
