/* qcow2 image creation.  The layout is the one qemu-img produces for an
 * empty image: the header cluster (fixed header, header extensions, then
 * the backing file name), the refcount table from cluster 1, the refcount
 * blocks after it, then the L1 table, all zero except the refcounts of
 * those clusters.  Like qemu, the file ends right after the last L1
 * entry rather than at a cluster boundary.
 *
 * Write order: the tables first, the header cluster last, then one sync;
 * an interrupted create leaves a file without a valid header, never a
 * half-valid image.
 */
#include <endian.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "io.h"
#include "qcow2.h"
#include "create.h"

/* The feature name table qemu writes into every version 3 image. */
static const struct {
    uint8_t type;
    uint8_t bit;
    const char *name;
} feature_names[] = {
    { 0, 0, "dirty bit" },
    { 0, 1, "corrupt bit" },
    { 0, 2, "external data file" },
    { 0, 3, "compression type" },
    { 0, 4, "extended L2 entries" },
    { 1, 0, "lazy refcounts" },
    { 2, 0, "bitmaps" },
    { 2, 1, "raw external data" },
};
#define N_FEATURES (sizeof feature_names / sizeof *feature_names)

/* Where everything goes, in clusters unless said otherwise. */
struct layout {
    uint32_t cluster_bits;
    uint32_t cluster_size;
    uint32_t refcount_order;
    uint64_t size;              /* bytes, multiple of 512 */
    uint64_t l1_size;           /* entries */
    uint64_t rt_clusters;       /* refcount table, from cluster 1 */
    uint64_t rb_clusters;       /* refcount blocks, after the table */
    uint64_t l1_clusters;       /* L1 table, after the blocks */
};

/* Fill in defaults; returns a copy the rest of the file can trust once
 * qcow2_create_validate accepted it. */
static struct qcow2_create_opts with_defaults(
    const struct qcow2_create_opts *in)
{
    struct qcow2_create_opts o = *in;

    if (o.cluster_size == 0)
        o.cluster_size = 65536;
    if (o.version == 0)
        o.version = 3;
    if (o.refcount_bits == 0)
        o.refcount_bits = 16;
    if (o.backing_file && !o.backing_file[0])
        o.backing_file = NULL;
    if (o.backing_fmt && !o.backing_fmt[0])
        o.backing_fmt = NULL;
    return o;
}

static bool is_power_of_2(uint64_t v)
{
    return v && !(v & (v - 1));
}

static uint32_t log2_of(uint64_t v)
{
    return 63 - (uint32_t)__builtin_clzll(v);
}

/* Bytes of the header cluster before the backing file name. */
static uint64_t header_bytes(const struct qcow2_create_opts *o)
{
    uint64_t n = o->version >= 3 ? sizeof(struct qcow2_disk_header)
                                 : QCOW2_V2_HEADER_LEN;

    if (o->backing_fmt)
        n += sizeof(struct qcow2_disk_ext) +
             ((strlen(o->backing_fmt) + 7) & ~(size_t)7);
    if (o->version >= 3)
        n += sizeof(struct qcow2_disk_ext) +
             N_FEATURES * sizeof(struct qcow2_disk_feature);
    return n + sizeof(struct qcow2_disk_ext);      /* the end marker */
}

/* Say why opts are refused; always returns -EINVAL. */
static int refuse(char *why, size_t why_len, const char *msg)
{
    if (why && why_len)
        snprintf(why, why_len, "%s", msg);
    return -EINVAL;
}

int qcow2_create_validate(const struct qcow2_create_opts *opts, char *why,
                          size_t why_len)
{
    struct qcow2_create_opts o = with_defaults(opts);

    if (o.version != 2 && o.version != 3)
        return refuse(why, why_len, "compat must be 0.10 or 1.1");
    if (!is_power_of_2(o.cluster_size) ||
        o.cluster_size < (1u << QCOW2_MIN_CLUSTER_BITS) ||
        o.cluster_size > (1u << QCOW2_MAX_CLUSTER_BITS))
        return refuse(why, why_len, "cluster size must be a power of two "
                      "between 512 and 2048k");
    if (!is_power_of_2(o.refcount_bits) || o.refcount_bits > 64)
        return refuse(why, why_len, "refcount width must be a power of "
                      "two and may not exceed 64 bits");
    if (o.version < 3 && o.refcount_bits != 16)
        return refuse(why, why_len, "refcount widths other than 16 bits "
                      "need compat 1.1");
    if (o.version < 3 && o.lazy_refcounts)
        return refuse(why, why_len, "lazy refcounts need compat 1.1");
    if (o.version < 3 && o.extended_l2)
        return refuse(why, why_len, "extended L2 entries need compat 1.1");
    if (o.extended_l2 && o.cluster_size < (1u << QCOW2_MIN_EXTL2_BITS))
        return refuse(why, why_len, "extended L2 entries need clusters of "
                      "at least 16384 bytes");
    if (o.compression_type != QCOW2_COMPRESS_ZLIB &&
        o.compression_type != QCOW2_COMPRESS_ZSTD)
        return refuse(why, why_len, "compression type must be zlib or "
                      "zstd");
    if (o.version < 3 && o.compression_type != QCOW2_COMPRESS_ZLIB)
        return refuse(why, why_len, "compression types other than zlib "
                      "need compat 1.1");
    if (o.backing_fmt && !o.backing_file)
        return refuse(why, why_len, "a backing format needs a backing "
                      "file");
    if (o.backing_fmt && strlen(o.backing_fmt) > 15)
        return refuse(why, why_len, "backing format name too long (max "
                      "15 bytes)");
    if (o.backing_file && strlen(o.backing_file) > QCOW2_MAX_BACKING_NAME)
        return refuse(why, why_len, "backing file name too long (max "
                      "1023 bytes)");
    if (o.backing_file &&
        header_bytes(&o) + strlen(o.backing_file) > o.cluster_size)
        return refuse(why, why_len, "backing file name does not fit in "
                      "the header cluster");
    if (o.size > (1ull << 61))
        return refuse(why, why_len, "image size too large");

    uint32_t l2_entries = o.cluster_size / (o.extended_l2 ? 16 : 8);
    uint64_t per_l1 = (uint64_t)o.cluster_size * l2_entries;
    uint64_t size = (o.size + 511) & ~511ull;
    uint64_t l1_size = size / per_l1 + (size % per_l1 != 0);
    if (l1_size > QCOW2_MAX_L1_BYTES / 8)
        return refuse(why, why_len, "image size too large for this "
                      "cluster size (try a larger cluster size)");
    return 0;
}

/* Size the refcount table and blocks so that they cover the header,
 * themselves and the L1 table. */
static int plan_layout(const struct qcow2_create_opts *o, struct layout *l)
{
    l->cluster_bits = log2_of(o->cluster_size);
    l->cluster_size = o->cluster_size;
    l->refcount_order = log2_of(o->refcount_bits);
    l->size = (o->size + 511) & ~511ull;

    uint64_t l2_entries = o->cluster_size / (o->extended_l2 ? 16 : 8);
    uint64_t per_l1 = l2_entries * o->cluster_size;
    l->l1_size = l->size / per_l1 + (l->size % per_l1 != 0);
    l->l1_clusters = (l->l1_size * 8 + l->cluster_size - 1) /
                     l->cluster_size;

    uint64_t per_block = ((uint64_t)l->cluster_size * 8) >>
                         l->refcount_order;
    l->rt_clusters = 1;
    l->rb_clusters = 1;
    for (;;) {
        uint64_t total = 1 + l->rt_clusters + l->rb_clusters +
                         l->l1_clusters;
        uint64_t rb = (total + per_block - 1) / per_block;
        uint64_t rt = (rb * 8 + l->cluster_size - 1) / l->cluster_size;
        if (rb <= l->rb_clusters && rt <= l->rt_clusters)
            break;
        l->rb_clusters = rb > l->rb_clusters ? rb : l->rb_clusters;
        l->rt_clusters = rt > l->rt_clusters ? rt : l->rt_clusters;
    }
    if (l->rt_clusters * l->cluster_size > QCOW2_MAX_REFTABLE_BYTES)
        return -EFBIG;
    return 0;
}

/* Set refcount entry i of a refcount block to 1. */
static void set_refcount_one(uint8_t *block, uint32_t order, uint64_t i)
{
    uint32_t bits = 1u << order;

    if (bits < 8) {
        uint64_t bit = i * bits;
        block[bit / 8] |= (uint8_t)(1u << (bit % 8));
    } else {
        uint32_t bytes = bits / 8;
        block[i * bytes + bytes - 1] = 1;
    }
}

/* Build the header cluster: fixed header, extensions, backing name. */
static void build_header(const struct qcow2_create_opts *o,
                         const struct layout *l, uint8_t *buf)
{
    struct qcow2_disk_header h;
    uint64_t rt_off = l->cluster_size;
    uint64_t l1_off = l->l1_size
        ? (1 + l->rt_clusters + l->rb_clusters) * l->cluster_size : 0;

    memset(&h, 0, sizeof h);
    h.magic = htobe32(QCOW2_MAGIC);
    h.version = htobe32(o->version);
    h.cluster_bits = htobe32(l->cluster_bits);
    h.size = htobe64(l->size);
    h.crypt_method = htobe32(QCOW2_CRYPT_NONE);
    h.l1_size = htobe32((uint32_t)l->l1_size);
    h.l1_table_offset = htobe64(l1_off);
    h.refcount_table_offset = htobe64(rt_off);
    h.refcount_table_clusters = htobe32((uint32_t)l->rt_clusters);

    size_t pos;
    if (o->version >= 3) {
        uint64_t incompat = 0;
        if (o->compression_type != QCOW2_COMPRESS_ZLIB)
            incompat |= QCOW2_INCOMPAT_COMPRESSION;
        if (o->extended_l2)
            incompat |= QCOW2_INCOMPAT_EXTL2;
        h.incompatible_features = htobe64(incompat);
        h.compatible_features =
            htobe64(o->lazy_refcounts ? QCOW2_COMPAT_LAZY_REFCOUNTS : 0);
        h.refcount_order = htobe32(l->refcount_order);
        h.header_length = htobe32(sizeof h);
        h.compression_type = (uint8_t)o->compression_type;
        memcpy(buf, &h, sizeof h);
        pos = sizeof h;
    } else {
        memcpy(buf, &h, QCOW2_V2_HEADER_LEN);
        pos = QCOW2_V2_HEADER_LEN;
    }

    struct qcow2_disk_ext e;
    if (o->backing_fmt) {
        size_t n = strlen(o->backing_fmt);
        e.type = htobe32(QCOW2_EXT_BACKING_FMT);
        e.len = htobe32((uint32_t)n);
        memcpy(buf + pos, &e, sizeof e);
        memcpy(buf + pos + sizeof e, o->backing_fmt, n);
        pos += sizeof e + ((n + 7) & ~(size_t)7);
    }
    if (o->version >= 3) {
        e.type = htobe32(QCOW2_EXT_FEATURES);
        e.len = htobe32(N_FEATURES * sizeof(struct qcow2_disk_feature));
        memcpy(buf + pos, &e, sizeof e);
        pos += sizeof e;
        for (size_t i = 0; i < N_FEATURES; i++) {
            struct qcow2_disk_feature f;
            memset(&f, 0, sizeof f);
            f.type = feature_names[i].type;
            f.bit = feature_names[i].bit;
            memcpy(f.name, feature_names[i].name,
                   strlen(feature_names[i].name));
            memcpy(buf + pos, &f, sizeof f);
            pos += sizeof f;
        }
    }
    pos += sizeof e;                /* the end marker: zeros */

    if (o->backing_file) {
        size_t n = strlen(o->backing_file);
        memcpy(buf + pos, o->backing_file, n);
        h.backing_file_offset = htobe64(pos);
        h.backing_file_size = htobe32((uint32_t)n);
        memcpy(buf + offsetof(struct qcow2_disk_header, backing_file_offset),
               &h.backing_file_offset, 8);
        memcpy(buf + offsetof(struct qcow2_disk_header, backing_file_size),
               &h.backing_file_size, 4);
    }
}

/* Write the refcount table, the refcount blocks and the (zero) L1 table
 * of layout l into fd. */
static int write_tables(int fd, const struct layout *l)
{
    uint64_t cs = l->cluster_size;
    uint64_t used = 1 + l->rt_clusters + l->rb_clusters + l->l1_clusters;
    uint64_t per_block = (cs * 8) >> l->refcount_order;
    uint64_t rb_first = 1 + l->rt_clusters;
    int err = 0;

    uint8_t *buf = calloc(1, cs);
    if (!buf)
        return -ENOMEM;
    for (uint64_t t = 0; t < l->rt_clusters && !err; t++) {
        memset(buf, 0, cs);
        for (uint64_t j = 0; j < cs / 8; j++) {
            uint64_t b = t * (cs / 8) + j;
            if (b >= l->rb_clusters)
                break;
            uint64_t off = htobe64((rb_first + b) * cs);
            memcpy(buf + j * 8, &off, 8);
        }
        err = io_pwrite_tag(fd, buf, cs, (1 + t) * cs,
                            IO_TAG_REFCOUNT_TABLE);
    }
    for (uint64_t b = 0; b < l->rb_clusters && !err; b++) {
        memset(buf, 0, cs);
        for (uint64_t i = 0; i < per_block; i++) {
            if (b * per_block + i >= used)
                break;
            set_refcount_one(buf, l->refcount_order, i);
        }
        err = io_pwrite_tag(fd, buf, cs, (rb_first + b) * cs,
                            IO_TAG_REFCOUNT_BLOCK);
    }
    free(buf);
    if (err)
        return err;
    /* The L1 table is all zeros: extend the file to its last entry. */
    uint64_t end = (rb_first + l->rb_clusters) * cs + l->l1_size * 8;
    return io_truncate(fd, end, IO_TAG_L1);
}

int qcow2_create(const char *path, const struct qcow2_create_opts *opts)
{
    struct qcow2_create_opts o = with_defaults(opts);
    struct layout l;
    char why[128];
    int err;

    err = qcow2_create_validate(&o, why, sizeof why);
    if (err) {
        img_log("qcow2: %s: %s", path, why);
        return err;
    }
    err = plan_layout(&o, &l);
    if (err) {
        img_log("qcow2: %s: image size too large for this cluster size",
                path);
        return err;
    }

    uint8_t *hdr = calloc(1, l.cluster_size);
    if (!hdr)
        return -ENOMEM;
    build_header(&o, &l, hdr);

    int fd = open(path, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0) {
        err = -errno;
        img_log("qcow2: %s: %s", path, strerror(errno));
        goto out_free;
    }
    io_register(fd, path);
    err = write_tables(fd, &l);
    if (!err)
        err = io_pwrite_tag(fd, hdr, l.cluster_size, 0, IO_TAG_HEADER);
    if (!err)
        err = io_sync(fd, IO_TAG_HEADER);
    if (err)
        img_log("qcow2: %s: writing the new image: %s", path,
                strerror(-err));
    if (close(fd) < 0 && !err) {
        err = -errno;
        img_log("qcow2: %s: %s", path, strerror(errno));
    }
out_free:
    free(hdr);
    return err;
}
