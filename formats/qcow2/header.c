/* qcow2 header: decode the fixed header (versions 2 and 3), walk the
 * header extensions, check the feature bits and every table location,
 * and derive the cluster geometry the rest of the driver uses.
 *
 * Everything here is untrusted input.  Each check that fails logs one
 * line naming the file, the field and the value, and open fails; values
 * are bounded before they are used in arithmetic, and sums that could
 * wrap are overflow-checked.
 */
#include <endian.h>
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "io.h"
#include "qcow2.h"

/* Names of the incompatible bits we know, for messages. */
static const char *const known_incompat[] = {
    "dirty bit", "corrupt bit", "external data file",
    "compression type", "extended L2 entries",
};

/* Decode the fixed header from buf (at least 112 bytes, zero padded). */
static void decode_fixed(const uint8_t *buf, struct qcow2_header *h)
{
    struct qcow2_disk_header d;

    memcpy(&d, buf, sizeof d);
    h->version = be32toh(d.version);
    h->backing_file_offset = be64toh(d.backing_file_offset);
    h->backing_file_size = be32toh(d.backing_file_size);
    h->cluster_bits = be32toh(d.cluster_bits);
    h->size = be64toh(d.size);
    h->crypt_method = be32toh(d.crypt_method);
    h->l1_size = be32toh(d.l1_size);
    h->l1_table_offset = be64toh(d.l1_table_offset);
    h->refcount_table_offset = be64toh(d.refcount_table_offset);
    h->refcount_table_clusters = be32toh(d.refcount_table_clusters);
    h->nb_snapshots = be32toh(d.nb_snapshots);
    h->snapshots_offset = be64toh(d.snapshots_offset);
    if (h->version >= 3) {
        h->incompatible = be64toh(d.incompatible_features);
        h->compatible = be64toh(d.compatible_features);
        h->autoclear = be64toh(d.autoclear_features);
        h->refcount_order = be32toh(d.refcount_order);
        h->header_length = be32toh(d.header_length);
        h->compression_type = h->header_length > QCOW2_V3_HEADER_LEN
                              ? d.compression_type : 0;
    } else {
        h->incompatible = h->compatible = h->autoclear = 0;
        h->refcount_order = 4;
        h->header_length = QCOW2_V2_HEADER_LEN;
        h->compression_type = 0;
    }
}

/* Append ", bit N (name)" for each bit of mask to out. */
static void describe_bits(const uint8_t *table, size_t n_entries,
                          uint64_t mask, char *out, size_t outlen)
{
    size_t used = 0;

    out[0] = '\0';
    for (unsigned bit = 0; bit < 64; bit++) {
        if (!(mask & (1ull << bit)))
            continue;
        char name[47] = "";
        for (size_t i = 0; i < n_entries; i++) {
            struct qcow2_disk_feature f;
            memcpy(&f, table + i * sizeof f, sizeof f);
            if (f.type == 0 && f.bit == bit) {
                memcpy(name, f.name, sizeof f.name);
                name[sizeof f.name] = '\0';
                break;
            }
        }
        if (!name[0] && bit < sizeof known_incompat / sizeof *known_incompat)
            snprintf(name, sizeof name, "%s", known_incompat[bit]);
        int r = snprintf(out + used, outlen - used, "%sbit %u%s%s%s",
                         used ? ", " : "", bit, name[0] ? " (" : "",
                         name, name[0] ? ")" : "");
        if (r < 0 || (size_t)r >= outlen - used)
            break;
        used += (size_t)r;
    }
}

/* Copy a length-counted string out of the header cluster. */
static char *copy_string(const uint8_t *p, size_t len)
{
    char *s = malloc(len + 1);
    if (!s)
        return NULL;
    memcpy(s, p, len);
    s[len] = '\0';
    return s;
}

struct ext_walk {
    const uint8_t *features;        /* feature name table, or NULL */
    size_t n_features;
};

/* Walk the header extensions in the first cluster, buf[start, end). */
static int read_extensions(struct qcow2_state *s, const uint8_t *buf,
                           uint64_t start, uint64_t end,
                           struct ext_walk *w)
{
    struct qcow2_header *h = &s->h;
    const char *path = s->img.path;
    uint64_t off = start;

    while (off + sizeof(struct qcow2_disk_ext) <= end) {
        struct qcow2_disk_ext e;
        memcpy(&e, buf + off, sizeof e);
        uint32_t type = be32toh(e.type);
        uint32_t len = be32toh(e.len);
        off += sizeof e;
        if (type == QCOW2_EXT_END)
            return 0;
        if (len > end - off) {
            img_log("qcow2: %s: header extension 0x%08x length %" PRIu32
                    " runs past the header area (%" PRIu64 " bytes left)",
                    path, type, len, end - off);
            return -EINVAL;
        }
        const uint8_t *data = buf + off;
        switch (type) {
        case QCOW2_EXT_BACKING_FMT:
            if (len >= 16) {
                img_log("qcow2: %s: backing format extension length %"
                        PRIu32 " too long (max 15)", path, len);
                return -EINVAL;
            }
            free(h->backing_format);
            h->backing_format = copy_string(data, len);
            if (!h->backing_format)
                return -ENOMEM;
            break;
        case QCOW2_EXT_FEATURES:
            w->features = data;
            w->n_features = len / sizeof(struct qcow2_disk_feature);
            break;
        case QCOW2_EXT_BITMAPS:
            /* Bitmaps are exported later; record where they are. */
            if (len == sizeof h->bitmaps) {
                struct qcow2_disk_bitmaps_ext b;
                memcpy(&b, data, sizeof b);
                h->bitmaps.nb_bitmaps = be32toh(b.nb_bitmaps);
                h->bitmaps.reserved = be32toh(b.reserved);
                h->bitmaps.directory_size = be64toh(b.directory_size);
                h->bitmaps.directory_offset = be64toh(b.directory_offset);
                h->has_bitmaps_ext = true;
            } else if (h->autoclear & QCOW2_AUTOCLEAR_BITMAPS) {
                img_log("qcow2: %s: bitmaps extension length %" PRIu32
                        " invalid (expected %zu)", path, len,
                        sizeof h->bitmaps);
                return -EINVAL;
            }
            break;
        case QCOW2_EXT_FDE: {
            if (h->crypt_method != QCOW2_CRYPT_LUKS) {
                img_log("qcow2: %s: encryption header extension present "
                        "with crypt_method %" PRIu32 " (only LUKS has one)",
                        path, h->crypt_method);
                return -EINVAL;
            }
            if (len != sizeof(struct qcow2_disk_fde_ext)) {
                img_log("qcow2: %s: encryption header extension length %"
                        PRIu32 " invalid (expected 16)", path, len);
                return -EINVAL;
            }
            struct qcow2_disk_fde_ext f;
            memcpy(&f, data, sizeof f);
            h->fde_offset = be64toh(f.offset);
            h->fde_length = be64toh(f.length);
            h->has_fde_ext = true;
            break;
        }
        case QCOW2_EXT_DS_CRASH_SAFE:
            /* Ours; trusted only with its autoclear bit (bitmap-load.c). */
            if (len % 8 == 0 && len > 0 && !h->cs_tables) {
                h->cs_tables = malloc(len);
                if (!h->cs_tables)
                    return -ENOMEM;
                for (uint32_t k = 0; k < len / 8; k++) {
                    uint64_t v;
                    memcpy(&v, data + 8 * k, 8);
                    h->cs_tables[k] = be64toh(v);
                }
                h->n_cs_tables = len / 8;
            }
            break;
        case QCOW2_EXT_DATA_FILE:
            free(h->data_file);
            h->data_file = copy_string(data, len);
            if (!h->data_file)
                return -ENOMEM;
            break;
        default:
            break;          /* unknown extensions may be ignored */
        }
        /* Data is padded to 8 bytes; len <= end - off keeps this small. */
        off += ((uint64_t)len + 7) & ~7ull;
    }
    return 0;
}

int qcow2_check_table(const struct qcow2_state *s, const char *what,
                      uint64_t offset, uint64_t count, uint32_t entry_bytes,
                      uint64_t max_bytes)
{
    const char *path = s->img.path;

    if (count > max_bytes / entry_bytes) {
        img_log("qcow2: %s: %s size %" PRIu64 " entries too large "
                "(max %" PRIu64 ")", path, what, count,
                max_bytes / entry_bytes);
        return -EINVAL;
    }
    if (offset & s->cluster_mask) {
        img_log("qcow2: %s: %s offset 0x%" PRIx64 " not cluster aligned",
                path, what, offset);
        return -EINVAL;
    }
    uint64_t bytes = count * entry_bytes;
    uint64_t end;
    if (bytes > 0 && (__builtin_add_overflow(offset, bytes, &end) ||
                      end > s->file_size)) {
        img_log("qcow2: %s: %s offset 0x%" PRIx64 " (%" PRIu64
                " bytes) past end of file (%" PRIu64 " bytes)", path, what,
                offset, bytes, s->file_size);
        return -EINVAL;
    }
    return 0;
}

/* Report an overlap between two metadata areas; true when they do. */
static bool overlaps(const struct qcow2_state *s, const char *a_name,
                     uint64_t a, uint64_t a_len, const char *b_name,
                     uint64_t b, uint64_t b_len)
{
    if (a_len == 0 || b_len == 0)
        return false;
    if (a < b + b_len && b < a + a_len) {
        img_log("qcow2: %s: %s at 0x%" PRIx64 " overlaps %s at 0x%" PRIx64,
                s->img.path, a_name, a, b_name, b);
        return true;
    }
    return false;
}

/* Check feature bits and the combinations the spec forbids. */
static int check_features(struct qcow2_state *s, bool read_only,
                          const struct ext_walk *w)
{
    struct qcow2_header *h = &s->h;
    const char *path = s->img.path;
    char desc[512];

    uint64_t unknown = h->incompatible & ~QCOW2_INCOMPAT_KNOWN;
    if (unknown) {
        describe_bits(w->features, w->n_features, unknown, desc,
                      sizeof desc);
        img_log("qcow2: %s: unsupported incompatible features 0x%" PRIx64
                ": %s", path, unknown, desc);
        return -ENOTSUP;
    }
    if ((h->incompatible & QCOW2_INCOMPAT_CORRUPT) && !read_only) {
        img_log("qcow2: %s: image is marked corrupt (incompatible bit 1); "
                "it can only be opened read-only", path);
        return -EROFS;
    }
    /* A dirty image opened for writing is repaired by the caller. */
    if ((h->incompatible & QCOW2_INCOMPAT_EXTL2) &&
        h->cluster_bits < QCOW2_MIN_EXTL2_BITS) {
        img_log("qcow2: %s: cluster_bits %" PRIu32 " too small for "
                "extended L2 entries (min %u)", path, h->cluster_bits,
                QCOW2_MIN_EXTL2_BITS);
        return -EINVAL;
    }
    if (h->compression_type > QCOW2_COMPRESS_ZSTD) {
        img_log("qcow2: %s: unknown compression_type %u", path,
                h->compression_type);
        return -ENOTSUP;
    }
    bool bit = h->incompatible & QCOW2_INCOMPAT_COMPRESSION;
    if (bit != (h->compression_type != QCOW2_COMPRESS_ZLIB)) {
        img_log("qcow2: %s: compression_type %u does not agree with "
                "incompatible bit 3 (%s)", path, h->compression_type,
                bit ? "set" : "clear");
        return -EINVAL;
    }
    if ((h->autoclear & QCOW2_AUTOCLEAR_DATA_RAW) &&
        !(h->incompatible & QCOW2_INCOMPAT_DATA_FILE)) {
        img_log("qcow2: %s: raw external data bit set without an external "
                "data file", path);
        return -EINVAL;
    }
    if ((h->autoclear & QCOW2_AUTOCLEAR_DATA_RAW) && h->backing_file) {
        img_log("qcow2: %s: raw external data file and backing file '%s' "
                "cannot be combined", path, h->backing_file);
        return -EINVAL;
    }
    if ((h->incompatible & QCOW2_INCOMPAT_DATA_FILE) && !h->data_file) {
        img_log("qcow2: %s: external data file bit set but no data file "
                "name extension", path);
        return -EINVAL;
    }
    if (h->crypt_method > QCOW2_CRYPT_LUKS) {
        img_log("qcow2: %s: unknown crypt_method %" PRIu32, path,
                h->crypt_method);
        return -ENOTSUP;
    }
    if (h->crypt_method == QCOW2_CRYPT_LUKS && !h->has_fde_ext) {
        img_log("qcow2: %s: LUKS encryption without an encryption header "
                "extension", path);
        return -EINVAL;
    }
    return 0;
}

/* Check the L1, refcount and snapshot tables' places and sizes. */
static int check_tables(struct qcow2_state *s)
{
    struct qcow2_header *h = &s->h;
    const char *path = s->img.path;
    int err;

    /* Guest clusters per L1 entry = cluster_size * L2 entries. */
    uint32_t shift = h->cluster_bits + s->l2_bits;
    uint64_t need = (h->size >> shift) +
                    ((h->size & ((1ull << shift) - 1)) != 0);
    if (h->l1_size > QCOW2_MAX_L1_BYTES / 8) {
        img_log("qcow2: %s: l1_size %" PRIu32 " too large (max %u)", path,
                h->l1_size, QCOW2_MAX_L1_BYTES / 8);
        return -EINVAL;
    }
    if (need > h->l1_size) {
        img_log("qcow2: %s: l1_size %" PRIu32 " too small for size %"
                PRIu64 " (needs %" PRIu64 ")", path, h->l1_size, h->size,
                need);
        return -EINVAL;
    }
    err = qcow2_check_table(s, "L1 table", h->l1_table_offset, h->l1_size,
                            8, QCOW2_MAX_L1_BYTES);
    if (err)
        return err;

    if (h->refcount_table_clusters == 0) {
        img_log("qcow2: %s: refcount_table_clusters 0: no refcount table",
                path);
        return -EINVAL;
    }
    if (h->refcount_table_clusters >
        QCOW2_MAX_REFTABLE_BYTES / s->cluster_size) {
        img_log("qcow2: %s: refcount_table_clusters %" PRIu32
                " too large (max %u)", path, h->refcount_table_clusters,
                QCOW2_MAX_REFTABLE_BYTES / s->cluster_size);
        return -EINVAL;
    }
    uint64_t rt_bytes = (uint64_t)h->refcount_table_clusters *
                        s->cluster_size;
    err = qcow2_check_table(s, "refcount table", h->refcount_table_offset,
                            rt_bytes / 8, 8, QCOW2_MAX_REFTABLE_BYTES);
    if (err)
        return err;

    if (h->nb_snapshots > QCOW2_MAX_SNAPSHOTS) {
        img_log("qcow2: %s: nb_snapshots %" PRIu32 " too large (max %u)",
                path, h->nb_snapshots, QCOW2_MAX_SNAPSHOTS);
        return -EINVAL;
    }
    if (h->snapshots_offset & s->cluster_mask) {
        img_log("qcow2: %s: snapshots_offset 0x%" PRIx64
                " not cluster aligned", path, h->snapshots_offset);
        return -EINVAL;
    }

    uint64_t l1_bytes = (uint64_t)h->l1_size * 8;
    if (overlaps(s, "L1 table", h->l1_table_offset, l1_bytes,
                 "the header cluster", 0, s->cluster_size) ||
        overlaps(s, "refcount table", h->refcount_table_offset, rt_bytes,
                 "the header cluster", 0, s->cluster_size) ||
        overlaps(s, "L1 table", h->l1_table_offset, l1_bytes,
                 "refcount table", h->refcount_table_offset, rt_bytes))
        return -EINVAL;
    if (h->nb_snapshots > 0 &&
        (overlaps(s, "snapshot table", h->snapshots_offset, 1,
                  "the header cluster", 0, s->cluster_size) ||
         overlaps(s, "snapshot table", h->snapshots_offset, 1,
                  "L1 table", h->l1_table_offset, l1_bytes) ||
         overlaps(s, "snapshot table", h->snapshots_offset, 1,
                  "refcount table", h->refcount_table_offset, rt_bytes)))
        return -EINVAL;
    return 0;
}

/* Derive the geometry from cluster_bits and the feature bits. */
static void set_geometry(struct qcow2_state *s)
{
    struct qcow2_header *h = &s->h;

    s->cluster_size = 1u << h->cluster_bits;
    s->cluster_mask = s->cluster_size - 1;
    s->ext_l2 = h->incompatible & QCOW2_INCOMPAT_EXTL2;
    s->l2_entry_bytes = s->ext_l2 ? 16 : 8;
    s->l2_bits = h->cluster_bits - (s->ext_l2 ? 4 : 3);
    s->sc_bits = s->ext_l2 ? h->cluster_bits - 5 : h->cluster_bits;
    s->csize_shift = 62 - (h->cluster_bits - 8);
    s->csize_mask = (1ull << (h->cluster_bits - 8)) - 1;
    s->coffset_mask = (1ull << s->csize_shift) - 1;
}

/* Check the fixed header's version, cluster size and (version 3)
 * lengths against the file; 0 or -errno, logged. */
static int check_fixed(const struct qcow2_state *s)
{
    const struct qcow2_header *h = &s->h;
    const char *path = s->img.path;

    if (h->version != 2 && h->version != 3) {
        img_log("qcow2: %s: unsupported version %" PRIu32
                " (supported: 2, 3)", path, h->version);
        return -ENOTSUP;
    }
    if (h->cluster_bits < QCOW2_MIN_CLUSTER_BITS ||
        h->cluster_bits > QCOW2_MAX_CLUSTER_BITS) {
        img_log("qcow2: %s: cluster_bits %" PRIu32 " out of range (%u..%u)",
                path, h->cluster_bits, QCOW2_MIN_CLUSTER_BITS,
                QCOW2_MAX_CLUSTER_BITS);
        return -EINVAL;
    }
    if (h->version < 3)
        return 0;
    uint32_t cluster_size = 1u << h->cluster_bits;
    if (s->file_size < QCOW2_V3_HEADER_LEN) {
        img_log("qcow2: %s: truncated header: file is %" PRIu64
                " bytes (header needs %u)", path, s->file_size,
                QCOW2_V3_HEADER_LEN);
        return -EINVAL;
    }
    if (h->header_length < QCOW2_V3_HEADER_LEN) {
        img_log("qcow2: %s: header_length %" PRIu32 " too short "
                "(min %u)", path, h->header_length, QCOW2_V3_HEADER_LEN);
        return -EINVAL;
    }
    if (h->header_length > cluster_size) {
        img_log("qcow2: %s: header_length %" PRIu32 " larger than "
                "the cluster size %" PRIu32, path, h->header_length,
                cluster_size);
        return -EINVAL;
    }
    if (h->refcount_order > 6) {
        img_log("qcow2: %s: refcount_order %" PRIu32 " too large "
                "(max 6)", path, h->refcount_order);
        return -EINVAL;
    }
    return 0;
}

/* Copy the backing file name out of the header cluster buf; 0 or
 * -errno, logged. */
static int read_backing_name(struct qcow2_state *s, const uint8_t *buf)
{
    struct qcow2_header *h = &s->h;
    uint32_t cluster_size = 1u << h->cluster_bits;
    uint64_t bo = h->backing_file_offset;
    uint32_t bl = h->backing_file_size;

    if (!bo)
        return 0;
    if (bo > cluster_size || bl > QCOW2_MAX_BACKING_NAME ||
        bl > cluster_size - bo) {
        img_log("qcow2: %s: backing file name at offset %" PRIu64
                " size %" PRIu32 " not inside the first cluster "
                "(or longer than %u)", s->img.path, bo, bl,
                QCOW2_MAX_BACKING_NAME);
        return -EINVAL;
    }
    if (bl > 0) {
        h->backing_file = copy_string(buf + bo, bl);
        if (!h->backing_file)
            return -ENOMEM;
    }
    return 0;
}

/* Check that the encryption header the extension names lies inside the
 * file; 0 or -EINVAL, logged. */
static int check_fde(const struct qcow2_state *s)
{
    const struct qcow2_header *h = &s->h;
    uint64_t end;

    if (!h->has_fde_ext)
        return 0;
    if ((h->fde_offset & s->cluster_mask) ||
        __builtin_add_overflow(h->fde_offset, h->fde_length, &end) ||
        end > s->file_size || h->fde_length == 0) {
        img_log("qcow2: %s: encryption header at 0x%" PRIx64
                " length %" PRIu64 " misaligned or past end of file",
                s->img.path, h->fde_offset, h->fde_length);
        return -EINVAL;
    }
    return 0;
}

int qcow2_read_header(struct qcow2_state *s, bool read_only)
{
    struct qcow2_header *h = &s->h;
    const char *path = s->img.path;
    uint8_t fixed[sizeof(struct qcow2_disk_header)];
    int err;

    if ((err = io_size(s->fd, &s->file_size)) < 0) {
        img_log("qcow2: %s: %s", path, strerror(-err));
        return err;
    }
    if (s->file_size < QCOW2_V2_HEADER_LEN) {
        img_log("qcow2: %s: truncated header: file is %" PRIu64
                " bytes (header needs %u)", path, s->file_size,
                QCOW2_V2_HEADER_LEN);
        return -EINVAL;
    }
    err = io_pread_full(s->fd, fixed, sizeof fixed, 0);
    if (err && err != -ENODATA) {
        img_log("qcow2: %s: reading header: %s", path, strerror(-err));
        return err;
    }
    uint32_t magic;
    memcpy(&magic, fixed, 4);
    if (be32toh(magic) != QCOW2_MAGIC) {
        img_log("qcow2: %s: bad magic 0x%08" PRIx32 ": not a qcow2 image",
                path, be32toh(magic));
        return -EINVAL;
    }
    decode_fixed(fixed, h);
    err = check_fixed(s);
    if (err)
        return err;
    uint32_t cluster_size = 1u << h->cluster_bits;
    set_geometry(s);

    /* The size qemu exposes is whole 512-byte sectors. */
    h->size &= ~511ull;

    /* The header, extensions and backing file name share cluster 0. */
    uint8_t *buf = malloc(cluster_size);
    if (!buf)
        return -ENOMEM;
    err = io_pread_full(s->fd, buf, cluster_size, 0);
    if (err && err != -ENODATA) {
        img_log("qcow2: %s: reading header cluster: %s", path,
                strerror(-err));
        goto out_free;
    }
    err = read_backing_name(s, buf);
    if (err)
        goto out_free;
    struct ext_walk w = { NULL, 0 };
    uint64_t ext_end = h->backing_file_offset ? h->backing_file_offset
                                              : cluster_size;
    if (ext_end > h->header_length) {
        err = read_extensions(s, buf, h->header_length, ext_end, &w);
        if (err)
            goto out_free;
    }
    err = check_features(s, read_only, &w);
    if (err)
        goto out_free;
    err = check_tables(s);
    if (!err)
        err = check_fde(s);
out_free:
    free(buf);
    return err;
}

void qcow2_header_free(struct qcow2_header *h)
{
    free(h->backing_file);
    free(h->backing_format);
    free(h->data_file);
    free(h->cs_tables);
    h->backing_file = h->backing_format = h->data_file = NULL;
    h->cs_tables = NULL;
    h->n_cs_tables = 0;
}
