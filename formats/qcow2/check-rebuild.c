/* qcow2 check: rebuilding broken refcount structures in new clusters
 * past the end of the file (see the repair order in check.c).
 */
#include <errno.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#include "io.h"
#include "check-int.h"

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
        ck_say(c, "too many references past the end of the file to place "
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
            ck_say(c, "references past the end of the file leave no room "
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
                ck_rc_set(buf, c->order, j, v);
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
    ck_put_be64(hdr, top << c->cbits);
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
int ck_rebuild(struct ck *c)
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
        ck_dec_cluster(c, rt_first + k);
    for (size_t i = 0; i < c->n_old_blocks; i++)
        ck_dec_cluster(c, c->old_blocks[i]);

    err = used_blocks(c, &used, &n_used);
    if (err)
        return err;
    uint64_t top, nb, rt_cl;
    err = place_new_area(c, used, n_used, &top, &nb, &rt_cl);
    if (err)
        goto out;
    if (rt_cl * c->cs > QCOW2_MAX_REFTABLE_BYTES) {
        ck_say(c, "a new refcount table would need %" PRIu64 " clusters",
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
    ck_say(c, "rebuilt the refcount structures: table at 0x%" PRIx64 ", %"
        PRIu64 " blocks", top << c->cbits, nb);
    goto out;

out_io:
    ck_say(c, "rebuilding the refcount structures: %s", strerror(-err));
out:
    free(used);
    free(rt);
    free(buf);
    return err;
}

