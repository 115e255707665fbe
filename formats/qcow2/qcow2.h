/* qcow2 driver internals: the on-disk structures with the spec's rules
 * beside each field, the in-memory state of an open image, and the
 * interfaces between the driver's files (header.c, cluster.c, cache.c,
 * compress.c, snapshot.c, backing.c, qcow2.c).
 *
 * On-disk structs are big endian and packed; they are only ever decoded
 * into the host-order fields of struct qcow2_state by one function per
 * struct, which checks every value against the spec and the file size.
 */
#ifndef DISKSERVE_QCOW2_H
#define DISKSERVE_QCOW2_H

#include <pthread.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "image.h"

/* ---- On-disk structures (all fields big endian) ---- */

#define QCOW2_MAGIC             0x514649fbu     /* "QFI\xfb" */

/* The fixed header; versions 2 stops after snapshots_offset (72 bytes). */
struct qcow2_disk_header {
    uint32_t magic;                 /* QCOW2_MAGIC */
    uint32_t version;               /* 2 or 3 */
    uint64_t backing_file_offset;   /* 0: no backing file; the name is
                                     * not NUL terminated */
    uint32_t backing_file_size;     /* <= 1023, inside the first cluster */
    uint32_t cluster_bits;          /* >= 9; qemu stops at 21 (2 MiB);
                                     * >= 14 with extended L2 entries */
    uint64_t size;                  /* virtual disk size in bytes */
    uint32_t crypt_method;          /* 0 none, 1 AES-CBC, 2 LUKS */
    uint32_t l1_size;               /* entries in the active L1 table */
    uint64_t l1_table_offset;       /* cluster aligned */
    uint64_t refcount_table_offset; /* cluster aligned */
    uint32_t refcount_table_clusters;
    uint32_t nb_snapshots;
    uint64_t snapshots_offset;      /* cluster aligned */
    /* version 3 and later: */
    uint64_t incompatible_features; /* unknown bit set: refuse to open */
    uint64_t compatible_features;   /* unknown bits may be ignored */
    uint64_t autoclear_features;    /* cleared by writers that don't
                                     * know them */
    uint32_t refcount_order;        /* refcount bits = 1 << order, <= 6;
                                     * version 2 always 4 */
    uint32_t header_length;         /* >= 104 for version 3; 72 for v2 */
    /* optional, present when header_length > 104: */
    uint8_t compression_type;       /* 0 zlib, 1 zstd; non-zero only with
                                     * the compression type bit */
    uint8_t padding[7];             /* zero, to a multiple of 8 */
} __attribute__((packed));
_Static_assert(sizeof(struct qcow2_disk_header) == 112,
               "qcow2 header layout");

#define QCOW2_V2_HEADER_LEN     72u
#define QCOW2_V3_HEADER_LEN     104u

/* Incompatible feature bits. */
#define QCOW2_INCOMPAT_DIRTY        (1ull << 0) /* refcounts may be stale */
#define QCOW2_INCOMPAT_CORRUPT      (1ull << 1) /* never write */
#define QCOW2_INCOMPAT_DATA_FILE    (1ull << 2) /* external data file */
#define QCOW2_INCOMPAT_COMPRESSION  (1ull << 3) /* compression_type set */
#define QCOW2_INCOMPAT_EXTL2        (1ull << 4) /* extended L2 entries */
#define QCOW2_INCOMPAT_KNOWN        0x1full

/* Compatible feature bits. */
#define QCOW2_COMPAT_LAZY_REFCOUNTS (1ull << 0)

/* Autoclear feature bits. */
#define QCOW2_AUTOCLEAR_BITMAPS     (1ull << 0) /* bitmaps ext consistent */
#define QCOW2_AUTOCLEAR_DATA_RAW    (1ull << 1) /* data file is raw-valid */

#define QCOW2_COMPRESS_ZLIB     0
#define QCOW2_COMPRESS_ZSTD     1

#define QCOW2_CRYPT_NONE        0
#define QCOW2_CRYPT_AES         1
#define QCOW2_CRYPT_LUKS        2

/* Header extension: type, length, then data padded to 8 bytes.  They
 * follow the header inside the first cluster (or up to the backing file
 * name when that comes first). */
struct qcow2_disk_ext {
    uint32_t type;                  /* 0 ends the list */
    uint32_t len;                   /* data bytes, without padding */
} __attribute__((packed));
_Static_assert(sizeof(struct qcow2_disk_ext) == 8, "qcow2 extension");

#define QCOW2_EXT_END           0x00000000u
#define QCOW2_EXT_BACKING_FMT   0xe2792acau     /* string, < 16 bytes */
#define QCOW2_EXT_FEATURES      0x6803f857u     /* feature name table */
#define QCOW2_EXT_BITMAPS       0x23852875u
#define QCOW2_EXT_FDE           0x0537be77u     /* encryption header */
#define QCOW2_EXT_DATA_FILE     0x44415441u     /* string */

/* One feature name table entry. */
struct qcow2_disk_feature {
    uint8_t type;                   /* 0 incompatible, 1 compatible,
                                     * 2 autoclear */
    uint8_t bit;                    /* 0..63 */
    char name[46];                  /* zero padded, maybe unterminated */
} __attribute__((packed));
_Static_assert(sizeof(struct qcow2_disk_feature) == 48, "feature entry");

/* Bitmaps extension data (only its presence is used for now). */
struct qcow2_disk_bitmaps_ext {
    uint32_t nb_bitmaps;            /* >= 1 */
    uint32_t reserved;              /* zero */
    uint64_t directory_size;        /* bytes of all directory entries */
    uint64_t directory_offset;      /* cluster aligned */
} __attribute__((packed));
_Static_assert(sizeof(struct qcow2_disk_bitmaps_ext) == 24, "bitmaps ext");

/* Full disk encryption header pointer (LUKS only). */
struct qcow2_disk_fde_ext {
    uint64_t offset;                /* cluster aligned */
    uint64_t length;                /* bytes of the written LUKS header */
} __attribute__((packed));
_Static_assert(sizeof(struct qcow2_disk_fde_ext) == 16, "FDE ext");

/* Snapshot table entry, fixed part; followed by extra data, the ID
 * string, the name, and padding to a multiple of 8. */
struct qcow2_disk_snapshot {
    uint64_t l1_table_offset;       /* cluster aligned */
    uint32_t l1_size;               /* entries */
    uint16_t id_str_size;
    uint16_t name_size;
    uint32_t date_sec;
    uint32_t date_nsec;
    uint64_t vm_clock_nsec;
    uint32_t vm_state_size;         /* ignored when the extra data has the
                                     * 64-bit size */
    uint32_t extra_data_size;       /* version 3: at least 16 */
} __attribute__((packed));
_Static_assert(sizeof(struct qcow2_disk_snapshot) == 40, "snapshot entry");

/* Snapshot extra data, as far as it is defined. */
struct qcow2_disk_snapshot_extra {
    uint64_t vm_state_size_large;
    uint64_t disk_size;             /* virtual size when taken */
} __attribute__((packed));
_Static_assert(sizeof(struct qcow2_disk_snapshot_extra) == 16,
               "snapshot extra");

/* L1 entry: bits 9-55 the L2 table offset (cluster aligned, 0 for none),
 * bit 63 "refcount is exactly one" (active table only). */
#define QCOW2_L1E_OFFSET_MASK   0x00fffffffffffe00ull

/* L2 entry (first 64 bits of an extended entry):
 *   bit 62: compressed cluster;
 *   bit 63: refcount exactly one (standard clusters);
 *   standard clusters: bit 0 reads as zeros (not with extended L2),
 *   bits 9-55 host cluster offset (cluster aligned; 0 is unallocated
 *   except with an external data file and bit 63 set). */
#define QCOW2_L2E_ZERO          (1ull << 0)
#define QCOW2_L2E_OFFSET_MASK   0x00fffffffffffe00ull
#define QCOW2_L2E_COMPRESSED    (1ull << 62)
#define QCOW2_L2E_COPIED        (1ull << 63)

/* Extended L2 bitmap: bit x allocated, bit 32 + x reads as zeros; the
 * same subcluster may not have both. */
#define QCOW2_SUBCLUSTERS       32
#define QCOW2_SC_ALLOC_MASK     0x00000000ffffffffull

/* Compressed descriptors count extra sectors of this size. */
#define QCOW2_COMPRESSED_SECTOR 512

/* ---- Limits (qemu's, so anything qemu writes opens here) ---- */

#define QCOW2_MIN_CLUSTER_BITS  9
#define QCOW2_MAX_CLUSTER_BITS  21
#define QCOW2_MIN_EXTL2_BITS    14
#define QCOW2_MAX_L1_BYTES      (32u << 20)
#define QCOW2_MAX_REFTABLE_BYTES (8u << 20)
#define QCOW2_MAX_SNAPSHOTS     65536u
#define QCOW2_MAX_SNAPSHOT_EXTRA 1024u
#define QCOW2_MAX_BACKING_NAME  1023u
#define QCOW2_MAX_CHAIN_DEPTH   32u
#define QCOW2_DEFAULT_CACHE     (32u << 20)

/* ---- In-memory state ---- */

struct qcow2_cache;
struct qcow2_crypto;
struct qcow2_scratch_pool;

/* One parsed snapshot table entry. */
struct qcow2_snapshot {
    uint64_t l1_table_offset;
    uint32_t l1_size;
    uint64_t disk_size;             /* 0 when the entry does not say */
    char *id;                       /* NUL terminated copies */
    char *name;
};

/* The decoded header and what the extensions said. */
struct qcow2_header {
    uint32_t version;
    uint64_t backing_file_offset;
    uint32_t backing_file_size;
    uint32_t cluster_bits;
    uint64_t size;
    uint32_t crypt_method;
    uint32_t l1_size;
    uint64_t l1_table_offset;
    uint64_t refcount_table_offset;
    uint32_t refcount_table_clusters;
    uint32_t nb_snapshots;
    uint64_t snapshots_offset;
    uint64_t incompatible;
    uint64_t compatible;
    uint64_t autoclear;
    uint32_t refcount_order;
    uint32_t header_length;
    uint8_t compression_type;

    char *backing_file;             /* NULL: none */
    char *backing_format;           /* NULL: probe */
    char *data_file;                /* NULL: none named */
    bool has_bitmaps_ext;
    struct qcow2_disk_bitmaps_ext bitmaps;  /* host order */
    bool has_fde_ext;
    uint64_t fde_offset;
    uint64_t fde_length;
};

/* Kinds of a guest range after lookup. */
enum qcow2_kind {
    QCOW2_UNALLOCATED,      /* backing file, or zeros */
    QCOW2_ZERO,             /* reads as zeros, allocated here */
    QCOW2_DATA,             /* host data at host_offset */
    QCOW2_COMPRESSED,       /* one compressed cluster */
};

/* The result of mapping the start of a guest range. */
struct qcow2_run {
    enum qcow2_kind kind;
    uint64_t length;        /* bytes from the guest offset, same kind */
    uint64_t host_offset;   /* DATA: host offset of the guest offset */
    uint64_t coffset;       /* COMPRESSED: data offset in the file */
    uint64_t csize;         /* COMPRESSED: bytes to read */
    uint64_t cluster_guest; /* COMPRESSED: guest offset of the cluster */
};

struct qcow2_state {
    struct image img;               /* first: the generic part */
    struct qcow2_header h;

    int fd;                         /* the qcow2 file */
    int data_fd;                    /* guest data: fd or external file */
    uint64_t file_size;             /* of fd, at open */
    uint64_t data_file_size;        /* of data_fd, at open */
    char *data_path;                /* resolved external data file path */

    uint32_t cluster_size;
    uint64_t cluster_mask;          /* cluster_size - 1 */
    uint32_t l2_bits;               /* log2 of entries per L2 table */
    uint32_t l2_entry_bytes;        /* 8, or 16 with extended L2 */
    bool ext_l2;
    uint32_t sc_bits;               /* log2 of the subcluster size */
    uint32_t csize_shift;           /* compressed descriptor layout */
    uint64_t csize_mask;
    uint64_t coffset_mask;

    uint64_t *l1;                   /* host order, l1_size entries */
    uint32_t l1_size;
    uint64_t l1_offset;             /* where l1 came from */

    struct qcow2_snapshot *snapshots;
    uint32_t nb_snapshots;

    struct image *backing;          /* NULL: none */
    struct qcow2_cache *cache;
    struct qcow2_scratch_pool *scratch;
    struct qcow2_crypto *crypto;
    bool iv_is_host;

    /* Metadata preallocation, detected on first block status. */
    pthread_mutex_t prealloc_lock;
    int prealloc_state;             /* 0 unknown, 1 no, 2 yes; atomic */
};

static inline struct qcow2_state *qcow2_from_img(struct image *img)
{
    return (struct qcow2_state *)img;
}

/* ---- header.c ---- */

/* Read and check the header and its extensions into s->h and the
 * derived geometry of s; returns 0 or -errno with one line logged. */
int qcow2_read_header(struct qcow2_state *s, bool read_only);

/* Free what qcow2_read_header allocated. */
void qcow2_header_free(struct qcow2_header *h);

/* Check that a table of count entries of entry_bytes each at offset is
 * cluster aligned, at most max_bytes long and inside the file; logs and
 * returns -EINVAL when not. */
int qcow2_check_table(const struct qcow2_state *s, const char *what,
                      uint64_t offset, uint64_t count, uint32_t entry_bytes,
                      uint64_t max_bytes);

/* ---- snapshot.c ---- */

/* Read the snapshot table into s->snapshots; 0 or -errno, logged. */
int qcow2_read_snapshots(struct qcow2_state *s);

/* Find a snapshot by ID, then by name; NULL when neither matches. */
const struct qcow2_snapshot *qcow2_find_snapshot(const struct qcow2_state *s,
                                                 const char *id_or_name);

/* Free the snapshot list. */
void qcow2_free_snapshots(struct qcow2_state *s);

/* ---- backing.c ---- */

/* Open the backing file named in the header, if any, into s->backing;
 * 0 or -errno, logged.  args is the open request of this image. */
int qcow2_open_backing(struct qcow2_state *s,
                       const struct img_open_args *args);

/* Open the external data file into s->data_fd; 0 or -errno, logged. */
int qcow2_open_data_file(struct qcow2_state *s, bool read_only);

/* Resolve name against the directory of image_path unless absolute;
 * returns a malloc'd path or NULL with errno set. */
char *qcow2_resolve_path(const char *image_path, const char *name);

/* ---- cache.c ---- */

/* A cached table, pinned between get and put. */
struct qcow2_table {
    const uint8_t *data;            /* one cluster, as on disk */
};

/* Create a cache of at most bytes worth of tables of table_size bytes
 * read from fd (whose name labels log lines); NULL with errno set. */
struct qcow2_cache *qcow2_cache_create(const char *name, int fd,
                                       uint32_t table_size, size_t bytes);

/* Free a cache; no table may be pinned. */
void qcow2_cache_destroy(struct qcow2_cache *c);

/* Pin the table at offset, reading it on a miss; 0 or -errno. */
int qcow2_cache_get(struct qcow2_cache *c, uint64_t offset,
                    struct qcow2_table **t);

/* Pin the table at offset only if it is already cached: -EAGAIN when
 * that would need disk I/O.  Never blocks on I/O. */
int qcow2_cache_get_nowait(struct qcow2_cache *c, uint64_t offset,
                           struct qcow2_table **t);

/* Unpin a table and clear the caller's pointer. */
void qcow2_cache_put(struct qcow2_cache *c, struct qcow2_table **t);

/* Number of tables the cache holds at most. */
size_t qcow2_cache_capacity(const struct qcow2_cache *c);

/* Hits and misses so far (for tests and logs). */
void qcow2_cache_stats(struct qcow2_cache *c, uint64_t *hits,
                       uint64_t *misses);

/* ---- cluster.c ---- */

/* qcow2_map flags. */
#define QCOW2_MAP_NOWAIT  (1u << 0) /* cached tables only, else -EAGAIN */
#define QCOW2_MAP_STATUS  (1u << 1) /* for block status: compressed counts
                                     * as DATA and host contiguity is not
                                     * required, so runs are longer */

/* Map the start of guest range [off, off + len) to one run of a single
 * kind, never crossing an L2 table; loads the L2 table unless
 * QCOW2_MAP_NOWAIT.  Returns 0, -EAGAIN (nowait: table not cached, or
 * bad metadata left for the blocking lookup to report), or -EIO (logged)
 * for bad metadata at off. */
int qcow2_map(struct qcow2_state *s, uint64_t off, uint64_t len,
              unsigned flags, struct qcow2_run *run);

/* ---- refcount.c ---- */

/* Whether the image's refcounts claim clearly more clusters than the file
 * stores (qemu's test for preallocation=metadata); false on any error. */
bool qcow2_has_metadata_prealloc(struct qcow2_state *s);

/* ---- flush.c ---- */

/* Write back every dirty cached table (refcount blocks, L2 tables, the
 * L1 table, the header) in the order DESIGN.md prescribes and sync the
 * file; 0 or -errno (logged).  Takes the image's metadata lock: the
 * caller must not hold it. */
int qcow2_metadata_flush(struct qcow2_state *s);

/* Forget every cached table and reread what the driver keeps in memory
 * of the refcount table, after an external repair rewrote tables on
 * disk.  Call only after qcow2_metadata_flush, with no request running
 * on the image. */
void qcow2_metadata_drop_caches(struct qcow2_state *s);

/* ---- compress.c ---- */

/* Per-thread decompression state, pooled so reads never allocate once
 * every worker has one. */
struct qcow2_scratch_pool *qcow2_scratch_pool_create(uint32_t cluster_size);

/* Free the pool and every scratch in it. */
void qcow2_scratch_pool_destroy(struct qcow2_scratch_pool *p);

/* Read len bytes at offset `within` of the compressed cluster described
 * by run into buf; 0 or -EIO (logged). */
int qcow2_read_compressed(struct qcow2_state *s, const struct qcow2_run *run,
                          uint64_t within, void *buf, uint64_t len);

#endif /* DISKSERVE_QCOW2_H */
