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
#include "io.h"

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
#define QCOW2_AUTOCLEAR_DS_CRASH_SAFE (1ull << 63) /* ours: the bitmaps the
                                     * crash-safe extension lists were
                                     * kept supersets of every write (any
                                     * other writer clears this bit) */

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
#define QCOW2_EXT_DS_CRASH_SAFE 0x6473626du     /* ours ("dsbm"): the
                                                 * table offsets (be64) of
                                                 * bitmaps kept crash safe */

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

/* Bitmap directory entry, fixed part; followed by extra data, the name
 * (not NUL terminated) and zero padding to a multiple of 8. */
struct qcow2_disk_bitmap_entry {
    uint64_t table_offset;          /* cluster aligned, not 0 */
    uint32_t table_size;            /* entries: exactly the clusters the
                                     * bitmap's bytes need */
    uint32_t flags;                 /* QCOW2_BME_*; bits 3-31 zero */
    uint8_t type;                   /* 1: dirty tracking */
    uint8_t granularity_bits;       /* qemu: 9..31 */
    uint16_t name_size;             /* 1..1023, unique in the directory */
    uint32_t extra_data_size;       /* 0 unless defined; see the flag */
} __attribute__((packed));
_Static_assert(sizeof(struct qcow2_disk_bitmap_entry) == 24,
               "bitmap directory entry");

#define QCOW2_BME_IN_USE        (1u << 0)   /* not saved: may be stale */
#define QCOW2_BME_AUTO          (1u << 1)   /* enabled: records writes */
#define QCOW2_BME_EXTRA_COMPAT  (1u << 2)   /* unknown extra data harmless */
#define QCOW2_BME_RESERVED      0xfffffff8u
#define QCOW2_BME_TYPE_DIRTY    1

/* Bitmap table entry: bits 9-55 the data cluster (cluster aligned); with
 * offset 0, bit 0 says all ones instead of all zeros. */
#define QCOW2_BMT_OFFSET_MASK   0x00fffffffffffe00ull
#define QCOW2_BMT_RESERVED_MASK 0xff000000000001feull
#define QCOW2_BMT_ALL_ONES      (1ull << 0)

/* qemu's limits, so that what we write qemu opens. */
#define QCOW2_MAX_BITMAPS       65535u
#define QCOW2_MAX_BITMAP_DIR    (1024ull * QCOW2_MAX_BITMAPS)
#define QCOW2_MAX_BITMAP_TABLE  0x8000000u      /* entries */
#define QCOW2_MAX_BITMAP_BYTES  0x20000000ull   /* of bitmap data */
#define QCOW2_MIN_GRAN_BITS     9
#define QCOW2_MAX_GRAN_BITS     31

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
#define QCOW2_L1E_COPIED        (1ull << 63)

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
    uint64_t *cs_tables;            /* crash-safe extension, host order */
    uint32_t n_cs_tables;
};

/* One dirty bitmap in memory: one bit per granule, in chunks allocated
 * on the first set bit so that a clean bitmap of a large disk costs only
 * the chunk pointers.  Bits are set and read with atomics: writers set
 * them holding bm_lock shared, and only bitmap_apply (holding it
 * exclusive) clears them or changes the list. */
#define QCOW2_BM_CHUNK_BITS     15              /* 4 KiB of bits */
#define QCOW2_BM_CHUNK_WORDS    (1u << (QCOW2_BM_CHUNK_BITS - 6))

struct qcow2_bitmap {
    char *name;
    uint32_t gran_bits;
    uint64_t nbits;                 /* granules of the disk */
    uint64_t n_chunks;
    uint64_t **chunks;              /* NULL: all clear */
    bool recording;
    bool persistent;
    bool inconsistent;              /* in use on disk: never exported,
                                     * stored back exactly as found */
    int disk_idx;                   /* entry of the directory loaded at
                                     * open (s->bm_disk), or -1 */
    uint8_t *extra;                 /* extra data to carry (compatible) */
    uint32_t extra_size;
    /* Crash-safe mode (bitmap-store.c): what the file holds of the
     * bitmap, every data cluster allocated; changed clusters wait in
     * cs_pending for the next group commit.  Guarded by s->cs_lock. */
    struct qcow2_bitmap *durable;   /* NULL: not kept crash safe */
    uint8_t *cs_pending;            /* per data cluster */
    uint64_t cs_clusters;
};

/* A directory entry as loaded at open: where its clusters are, so that
 * they can be kept or freed when the bitmaps are stored again. */
struct qcow2_bm_disk {
    uint64_t table_offset;
    uint32_t table_size;
    uint64_t *table;                /* host order entries */
    uint8_t *raw;                   /* the directory entry, as on disk */
    uint32_t raw_len;               /* with padding */
    uint32_t flags;
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

/* Ordering rules a test may break on purpose, to see the crash tests
 * catch it (DISKSERVE_QCOW2_BREAK, see the write order in qcow2.c). */
#define QCOW2_BREAK_REFCOUNT_BEFORE_L2  (1u << 0)
#define QCOW2_BREAK_L2_BEFORE_REFCOUNT  (1u << 1)
#define QCOW2_BREAK_DATA_BEFORE_MAPPING (1u << 2)
#define QCOW2_BREAK_L2_BEFORE_L1        (1u << 3)
#define QCOW2_BREAK_BLOCK_COUNT         (1u << 4)

/* A run of free host clusters, by cluster index. */
struct qcow2_extent {
    uint64_t start;
    uint64_t count;
};

/* What a queued free waits for before the refcount may drop. */
enum qcow2_free_wait {
    QCOW2_FREE_AFTER_L2,    /* the cleared L2 entry written and synced */
    QCOW2_FREE_AFTER_L1,    /* the changed L1 entry written and synced */
    QCOW2_FREE_READY,       /* only for requests older than it to end */
};

/* A queued refcount decrement of every host cluster that bytes
 * [offset, offset + len) touch (one cluster, or a compressed cluster's
 * sectors). */
struct qcow2_pin {
    uint64_t token;
    uint64_t seq;                   /* req_seq when its ranges were mapped */
};

struct qcow2_free {
    uint64_t offset;
    uint64_t len;
    uint64_t seq;                   /* request counter when queued */
    uint64_t nowait_call;           /* map_nowait call to outlive, or 0 */
    enum qcow2_free_wait wait;
};

/* An in-flight allocation (DESIGN.md): guest clusters [first, end)
 * getting host clusters, or encrypted sectors being read, changed and
 * rewritten, while the metadata lock is dropped.  Lives on the stack of
 * the request that registered it. */
struct qcow2_inflight {
    struct qcow2_inflight *next;
    struct qcow2_inflight *prev;
    uint64_t first;                 /* guest cluster indexes */
    uint64_t end;
};

/* A request that may touch host clusters outside the lock: a cluster
 * freed after it started is reused only once it has ended. */
struct qcow2_req {
    struct qcow2_req *next;
    struct qcow2_req *prev;
    uint64_t seq;
};

/* A set of host cluster indexes (open addressing), for the clusters that
 * hold L2 tables and refcount blocks. */
struct qcow2_offset_set {
    uint64_t *slots;                /* value + 1; 0 is empty */
    size_t cap;                     /* power of two */
    size_t n;
};

struct qcow2_state {
    struct image img;               /* first: the generic part */
    bool opened;                    /* qcow2_open succeeded */
    struct qcow2_header h;

    int fd;                         /* the qcow2 file */
    int data_fd;                    /* guest data: fd or external file */
    uint64_t file_size;             /* of fd (grows with allocations) */
    uint64_t data_file_size;        /* of data_fd (grows with writes) */
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
    uint64_t snapshots_size;        /* bytes of the snapshot table */

    struct image *backing;          /* NULL: none */
    struct qcow2_cache *cache;
    struct qcow2_scratch_pool *scratch;
    struct qcow2_crypto *crypto;
    bool iv_is_host;

    /* Metadata preallocation, detected on first block status. */
    pthread_mutex_t prealloc_lock;
    int prealloc_state;             /* 0 unknown, 1 no, 2 yes; atomic */

    /* ---- Read-write images only.  Everything below, the L1 table
     * above, file_size and the tables in both caches are guarded by
     * lock (the "metadata lock"); see qcow2.c. */
    bool writable;
    pthread_mutex_t lock;
    pthread_cond_t inflight_done;   /* an in-flight record went away */
    unsigned inflight_waiters;
    struct qcow2_inflight *inflight;
    struct qcow2_req *reqs;         /* oldest first */
    struct qcow2_req *reqs_tail;
    uint64_t req_seq;
    uint64_t nowait_calls;          /* map_nowait calls so far */
    uint64_t nowait_done;           /* atomic: calls whose reads are over
                                     * (map_done) */
    uint64_t nowait_data_call;      /* the last one that mapped data */
    uint64_t nowait_seq;            /* req_seq at the first map_nowait
                                     * since map_done (loop thread) */
    bool nowait_seq_set;
    /* Pinned mappings (map_pin): frees queued at or after a pin's seq
     * wait for its map_unpin.  pin_lock is taken after lock, or alone;
     * never held across anything else. */
    pthread_mutex_t pin_lock;
    struct qcow2_pin *pins;
    size_t n_pins, cap_pins;
    uint64_t pin_next;

    unsigned breaks;                /* QCOW2_BREAK_* (tests only) */
    bool corrupt;                   /* marked corrupt: write nothing */
    int sync_failed;                /* atomic: an fdatasync failed */
    bool lazy;                      /* lazy refcounts */
    bool dirty_on_disk;             /* the dirty bit is set in the file */
    bool in_l2_flush;               /* flush already ordered the L2s */
    uint64_t write_gen;             /* atomic: writes completed so far */
    uint64_t synced_gen;            /* atomic: writes a finished sync
                                     * covered */
    pthread_mutex_t flush_lock;     /* one flush at a time; taken before
                                     * lock (flush.c) */
    pthread_mutex_t sync_lock;      /* one sync at a time; taken last
                                     * (sync.c) */
    uint32_t l1_dirty_lo;           /* L1 entries [lo, hi) to write */
    uint32_t l1_dirty_hi;

    struct qcow2_cache *rc_cache;   /* refcount blocks */
    uint64_t *reftable;             /* host order */
    uint64_t reftable_entries;
    uint32_t rb_bits;               /* log2 of entries per refcount block */
    uint64_t rc_max;                /* largest refcount value */

    uint64_t open_size;             /* file size at open */
    uint64_t frontier;              /* cluster index: no cluster from here
                                     * on was used or written since open */
    uint64_t scan;                  /* cluster index: the refcounts below
                                     * were looked at; clusters freed
                                     * since are in free_ext */
    uint64_t scan_end;              /* the frontier at open: the scan
                                     * stops there (alloc.c) */
    struct qcow2_extent *free_ext;  /* known free clusters */
    size_t n_free_ext;
    size_t cap_free_ext;
    struct qcow2_free *frees;       /* queued refcount decrements */
    size_t n_frees;
    size_t cap_frees;
    size_t n_ready_frees;           /* of them, waiting only for quiet */
    struct qcow2_offset_set meta;   /* L2 tables and refcount blocks */
    uint8_t *zero_cluster;          /* a cluster of zeros, read-only */

    /* ---- Dirty bitmaps (bitmap*.c).  bm_lock: taken shared by writers
     * while they set bits and by readers of the list, exclusive by
     * bitmap_apply; never held across guest I/O.  Lock order: bm_lock
     * before s->lock. */
    pthread_rwlock_t bm_lock;
    struct qcow2_bitmap **bitmaps;
    size_t n_bitmaps;
    uint32_t n_recording;           /* atomic: recording bitmaps */
    uint64_t bm_gen;                /* atomic: list changes so far */
    struct qcow2_bm_disk *bm_disk;  /* the directory found at open */
    uint32_t n_bm_disk;
    uint64_t bm_dir_offset;         /* 0: none */
    uint64_t bm_dir_size;
    bool bm_store;                  /* the bitmaps on disk differ from
                                     * memory: store them at close */
    bool bm_cs;                     /* crash-safe mode */
    bool bm_store_cs;               /* apply changed stored bitmaps */
    pthread_mutex_t cs_lock;        /* group commits; after bm_lock */
    pthread_cond_t cs_cond;
    uint64_t cs_started;            /* commits started, and finished */
    uint64_t cs_done;
    bool cs_running;
    int cs_err;                     /* a commit failed: refuse writes */
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

/* ---- bitmap-load.c ---- */

/* Load and check the bitmap directory and tables of an image into
 * s->bitmaps.  A malformed directory is refused (one line logged,
 * -EINVAL) when the image is writable; read-only, it is logged as a
 * warning and the bitmaps are dropped.  0 or -errno. */
int qcow2_bitmaps_load(struct qcow2_state *s, bool read_only);

/* Whether bitmap table entry v is malformed for clusters of size cs:
 * the reason, or NULL. */
const char *qcow2_bitmap_entry_bad(uint64_t v, uint32_t cs);

/* Free the in-memory bitmaps and what was loaded of the directory. */
void qcow2_bitmaps_free(struct qcow2_state *s);

/* ---- bitmap.c ---- */

/* New empty bitmap of the disk size; NULL on ENOMEM. */
struct qcow2_bitmap *qcow2_bitmap_new(const struct qcow2_state *s,
                                      const char *name, size_t name_len,
                                      uint32_t gran_bits);

/* Free a bitmap (NULL is fine). */
void qcow2_bitmap_free(struct qcow2_bitmap *b);

/* Set bits [first, first + n); 0 or -ENOMEM.  Thread-safe. */
int qcow2_bitmap_set_bits(struct qcow2_bitmap *b, uint64_t first,
                          uint64_t n);

/* OR n words of bits (host order) into the bitmap at word index w;
 * 0 or -ENOMEM.  Not for concurrent use. */
int qcow2_bitmap_or_words(struct qcow2_bitmap *b, uint64_t w,
                          const uint64_t *words, size_t n);

/* Store n words of bits at word index w (overwriting); 0 or -ENOMEM. */
int qcow2_bitmap_put_words(struct qcow2_bitmap *b, uint64_t w,
                           const uint64_t *words, size_t n);

/* Whether bits [first, first + n) are all set. */
bool qcow2_bitmap_all_set(const struct qcow2_bitmap *b, uint64_t first,
                          uint64_t n);

/* A deep copy of the bits and settings of b (not its crash-safe state);
 * NULL on ENOMEM. */
struct qcow2_bitmap *qcow2_bitmap_copy(const struct qcow2_state *s,
                                       const struct qcow2_bitmap *b);

/* Copy n words of bits at word index w into out (zeros past the end). */
void qcow2_bitmap_get_words(const struct qcow2_bitmap *b, uint64_t w,
                            uint64_t *out, size_t n);

/* Record a change of guest bytes [off, off + len) in every recording
 * bitmap, before the change is issued; *gen gets the version of the
 * bitmap list it used.  0 or -errno. */
int qcow2_bitmaps_record(struct qcow2_state *s, uint64_t off, uint64_t len,
                         uint64_t *gen);

/* Once the change's I/O is over (err its result, which this returns
 * unless recording fails): if bitmap_apply changed the list since
 * version gen, record it again, so that a bitmap that took over from
 * another meanwhile has it too (a backup of the old one may have read
 * the range before the data landed).  A write is thus recorded wholly
 * before a change, or wholly after it, or both. */
int qcow2_bitmaps_record_done(struct qcow2_state *s, uint64_t off,
                              uint64_t len, uint64_t gen, int err);

/* The img_ops bitmap entry points. */
size_t qcow2_bitmap_count_op(struct image *img);
int qcow2_bitmap_info_op(struct image *img, size_t i,
                         struct img_bitmap_info *info);
int qcow2_bitmap_status_op(struct image *img, const char *name, uint64_t len,
                           uint64_t off, struct img_extents *e);
int qcow2_bitmap_apply_op(struct image *img, const struct img_bitmap_action *a,
                          size_t n, char *msg, size_t msglen);

/* ---- bitmap-store.c (metadata lock held) ---- */

/* Set in_use on disk for the stored bitmaps in mask (indexes of
 * s->bm_disk) that do not have it yet, in place, synced.  0 or -errno. */
int qcow2_bitmaps_mark_in_use(struct qcow2_state *s, const bool *mask);

/* Store every persistent bitmap (new tables and data, then the new
 * directory, then the header; the old clusters freed last).  Plain: only
 * when something changed, in_use cleared (close).  Crash safe: every
 * enabled bitmap with all its data clusters allocated, flagged in_use
 * and listed in our extension, and kept in memory as durable for the
 * group commits.  0 or -errno (logged). */
int qcow2_bitmaps_store(struct qcow2_state *s, bool crash_safe);

/* Crash-safe mode: before a write of guest bytes [off, off + len) is
 * issued, make the bits of every kept bitmap durable (one group commit
 * serves every write waiting for it).  bm_lock held shared.  0 or
 * -errno. */
int qcow2_bitmaps_cs_wait(struct qcow2_state *s, uint64_t off,
                          uint64_t len);

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

/* A cached table, pinned between get and put.  Callers change data only
 * while they hold the image's metadata lock, and mark it dirty. */
struct qcow2_table {
    uint8_t *data;                  /* one cluster, as on disk */
};

/* Writes one dirty table back to the file, with whatever must reach the
 * disk before it; 0 or -errno. */
typedef int qcow2_cache_writeback_fn(void *opaque, uint64_t offset,
                                     const uint8_t *data);

/* Create a cache of at most bytes worth of tables of table_size bytes
 * read from fd (whose name labels log lines); NULL with errno set. */
struct qcow2_cache *qcow2_cache_create(const char *name, int fd,
                                       uint32_t table_size, size_t bytes);

/* Free a cache; no table may be pinned.  Dirty tables are lost. */
void qcow2_cache_destroy(struct qcow2_cache *c);

/* Register the function that writes dirty tables back. */
void qcow2_cache_set_writeback(struct qcow2_cache *c,
                               qcow2_cache_writeback_fn *fn, void *opaque);

/* Pin the table at offset, reading it on a miss; 0 or -errno (also when
 * a dirty victim could not be written back). */
int qcow2_cache_get(struct qcow2_cache *c, uint64_t offset,
                    struct qcow2_table **t);

/* Bring the table at offset into the cache, evicting only clean tables
 * (so that nothing is written back): callable without the image's
 * metadata lock, as a table's contents on disk are current whenever it
 * is not cached.  0, -EAGAIN when only dirty tables could make room, or
 * -errno. */
int qcow2_cache_fetch(struct qcow2_cache *c, uint64_t offset);

/* Pin a new, zero-filled, dirty table at offset without reading the
 * file (a freshly allocated cluster); 0 or -errno. */
int qcow2_cache_get_new(struct qcow2_cache *c, uint64_t offset,
                        struct qcow2_table **t);

/* Pin the table at offset only if it is already cached: -EAGAIN when
 * that would need disk I/O.  Never blocks on I/O. */
int qcow2_cache_get_nowait(struct qcow2_cache *c, uint64_t offset,
                           struct qcow2_table **t);

/* Unpin a table and clear the caller's pointer. */
void qcow2_cache_put(struct qcow2_cache *c, struct qcow2_table **t);

/* Mark a pinned table changed: it is written back before it is evicted. */
void qcow2_cache_mark_dirty(struct qcow2_cache *c, struct qcow2_table *t);

/* Whether any table is dirty. */
bool qcow2_cache_has_dirty(struct qcow2_cache *c);

/* Write back every dirty table through the callback; 0 or the first
 * -errno (the tables not written stay dirty). */
int qcow2_cache_flush(struct qcow2_cache *c);

/* Every change to a table is numbered: the number of the last change so
 * far (0 before any). */
uint64_t qcow2_cache_seq(struct qcow2_cache *c);

/* Write back the dirty tables not changed after change seq; 0 or the
 * first -errno. */
int qcow2_cache_flush_upto(struct qcow2_cache *c, uint64_t seq);

/* Whether a table has been dirty since change seq or before (changed
 * then and not written back since). */
bool qcow2_cache_dirty_upto(struct qcow2_cache *c, uint64_t seq);

/* Forget the table at offset, dirty or not, unless it is pinned (its
 * cluster was freed: its contents must never be written again). */
void qcow2_cache_discard(struct qcow2_cache *c, uint64_t offset);

/* Forget every unpinned table, dirty or not. */
void qcow2_cache_drop_all(struct qcow2_cache *c);

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

/* What one L2 entry says about its whole guest cluster. */
enum qcow2_ctype {
    QCOW2_C_UNALLOCATED,    /* offset 0: extended bitmap may hold zeros */
    QCOW2_C_ZERO,           /* zero flag (standard entries only); host is
                             * a preallocated cluster or 0 */
    QCOW2_C_NORMAL,         /* host cluster; extended bitmap says which
                             * parts */
    QCOW2_C_COMPRESSED,
};

/* A decoded L2 entry. */
struct qcow2_l2e {
    enum qcow2_ctype type;
    uint64_t host;          /* NORMAL, ZERO: host cluster offset */
    uint64_t bitmap;        /* extended L2 only */
    uint64_t raw;           /* the first 64 bits as read */
};

/* Decode and check L2 entry idx of table t (at l2_off) for the guest
 * cluster at guest; -EIO (logged unless quiet) for a bad entry. */
int qcow2_decode_l2e(const struct qcow2_state *s, bool quiet,
                     const uint8_t *t, uint64_t l2_off, uint32_t idx,
                     uint64_t guest, struct qcow2_l2e *e);

/* Decode the compressed descriptor in L2 entry value v into run's
 * coffset and csize; -EIO (logged unless quiet) when it points outside
 * the file. */
int qcow2_decode_compressed(const struct qcow2_state *s, bool quiet,
                            uint64_t l2_off, uint32_t idx, uint64_t v,
                            struct qcow2_run *run);

/* The kind of the unit (cluster or subcluster) of entry e holding byte
 * in_cluster of its cluster. */
enum qcow2_kind qcow2_unit_kind(const struct qcow2_state *s,
                                const struct qcow2_l2e *e,
                                uint64_t in_cluster);

/* Store entry (raw, bitmap) as L2 entry idx of table t. */
void qcow2_set_l2e(const struct qcow2_state *s, uint8_t *t, uint32_t idx,
                   uint64_t raw, uint64_t bitmap);

/* Map guest [pos, end), inside one cluster, by its decoded entry e into
 * the run of one kind at pos; -EIO for a bad compressed descriptor. */
int qcow2_l2e_run(const struct qcow2_state *s, const struct qcow2_l2e *e,
                  uint64_t pos, uint64_t end, struct qcow2_run *run);

/* The L2 table offset of L1 entry l1_index into *l2_off (0: none);
 * -EIO (logged) when it is unaligned or past the end of the file, or
 * -EAGAIN instead when quiet. */
int qcow2_l2_offset(const struct qcow2_state *s, uint64_t l1_index,
                    bool quiet, uint64_t *l2_off);

/* Map the start of guest range [off, off + len) to one run of a single
 * kind, never crossing an L2 table; loads the L2 table unless
 * QCOW2_MAP_NOWAIT.  Returns 0, -EAGAIN (nowait: table not cached, or
 * bad metadata left for the blocking lookup to report), or -EIO (logged)
 * for bad metadata at off. */
int qcow2_map(struct qcow2_state *s, uint64_t off, uint64_t len,
              unsigned flags, struct qcow2_run *run);

/* For a read-write image, with the metadata lock held: bring the L2
 * table at l2_off into the cache with the lock dropped, so that requests
 * that do not need it go on meanwhile.  Returns 0 when the table was
 * cached already (the lock was kept), 1 when the lock was dropped and
 * the table fetched, 2 when the lock was dropped but the table could not
 * be fetched that way (only dirty tables to evict, or an error: the
 * caller's own lookup loads it or reports the error).  After 1 or 2 look
 * again from the L1 table: anything may have changed. */
int qcow2_fetch_unlocked(struct qcow2_state *s, uint64_t l2_off);

/* qcow2_map for a caller holding the metadata lock, which is dropped
 * while an L2 table is read (qcow2_fetch_unlocked). */
int qcow2_map_fetching(struct qcow2_state *s, uint64_t off, uint64_t len,
                       unsigned flags, struct qcow2_run *run);

/* ---- refcount.c ---- */

/* Whether the image's refcounts claim clearly more clusters than the file
 * stores (qemu's test for preallocation=metadata); false on any error. */
bool qcow2_has_metadata_prealloc(struct qcow2_state *s);

/* ---- qcow2.c ---- */

/* Read host data at host for guest offset guest (decrypting); past the
 * end of the file reads as zeros.  0 or -errno (logged). */
int qcow2_read_host(struct qcow2_state *s, uint8_t *buf, uint64_t len,
                    uint64_t host, uint64_t guest);

/* Read guest bytes from the backing image, or zeros past its end or
 * without one.  0 or -errno. */
int qcow2_read_backing(struct qcow2_state *s, uint8_t *buf, uint64_t len,
                       uint64_t off);

/* ---- inflight.c ---- */

/* Take and drop the metadata lock (no-ops for read-only images, whose
 * metadata never changes). */
void qcow2_lock(struct qcow2_state *s);
void qcow2_unlock(struct qcow2_state *s);

/* Register a request that may touch host clusters with the lock dropped,
 * and unregister it.  Lock held. */
void qcow2_req_begin(struct qcow2_state *s, struct qcow2_req *r);

/* Unregister r; true when it was the oldest request, whose end may make
 * queued frees quiet.  Lock held. */
bool qcow2_req_end(struct qcow2_state *s, struct qcow2_req *r);

/* Whether free f may be applied now: its reference is gone from disk and
 * no request that might still use the cluster runs. */
bool qcow2_free_is_quiet(const struct qcow2_state *s,
                         const struct qcow2_free *f);

/* The map_nowait call a free queued now must outlive, or 0. */
uint64_t qcow2_nowait_guard(const struct qcow2_state *s);

/* The map_done op: every range map_nowait returned is read.  Called on
 * the map_nowait thread without the lock. */
void qcow2_nowait_reads_over(struct qcow2_state *s);

/* The map_pin and map_unpin ops (pin_lock only), and whether a pin taken
 * at or before request counter seq is held. */
int qcow2_pin(struct qcow2_state *s, uint64_t *token);
void qcow2_unpin(struct qcow2_state *s, uint64_t token);
bool qcow2_pinned_since(const struct qcow2_state *s, uint64_t seq);

/* Whether an in-flight record overlaps guest clusters [first, end). */
bool qcow2_inflight_busy(const struct qcow2_state *s, uint64_t first,
                         uint64_t end);

/* How many guest clusters from first on, up to end, no record covers. */
uint64_t qcow2_inflight_free_run(const struct qcow2_state *s, uint64_t first,
                                 uint64_t end);

/* Wait (lock dropped meanwhile) until some record goes away. */
void qcow2_inflight_wait(struct qcow2_state *s);

/* Register record r for guest clusters [first, end); remove it and wake
 * the waiters. */
void qcow2_inflight_add(struct qcow2_state *s, struct qcow2_inflight *r,
                        uint64_t first, uint64_t end);
void qcow2_inflight_remove(struct qcow2_state *s, struct qcow2_inflight *r);

/* ---- refcount.c (write side: lock held) ---- */

/* Load the refcount table of a read-write image and set up its block
 * cache of cache_bytes (once); 0 or -errno (logged). */
int qcow2_refcount_open(struct qcow2_state *s, size_t cache_bytes);

/* Refuse (-EUCLEAN, logged) an image whose header, L1 table, refcount
 * table, snapshot tables, L2 tables or refcount blocks have refcount 0;
 * after qcow2_refcount_open.  Data clusters are not checked here: that
 * takes a full reference count (diskserve-img check). */
int qcow2_refcount_verify_metadata(struct qcow2_state *s);

/* One past the last host cluster index whose refcount is not 0; 0 or
 * -errno. */
int qcow2_refcount_end(struct qcow2_state *s, uint64_t *end);

/* The refcount of host cluster index cluster; 0 or -errno. */
int qcow2_refcount_get(struct qcow2_state *s, uint64_t cluster,
                       uint64_t *rc);

/* The first host cluster index in [first, end) whose refcount is 0
 * (end when none), into *free_at; 0 or -errno. */
int qcow2_refcount_scan(struct qcow2_state *s, uint64_t first, uint64_t end,
                        uint64_t *free_at);

/* Drop one reference from each of count clusters starting at host
 * offset off (a table that moved), releasing those that reach 0; 0 or
 * -errno as qcow2_refcount_change. */
int qcow2_drop_clusters(struct qcow2_state *s, uint64_t off,
                        uint64_t count);

/* Add delta (+1 or -1) to a host cluster's refcount, creating refcount
 * blocks (and growing the table) as needed; *result gets the new value
 * unless NULL.  -ERANGE on overflow, -EIO (image marked corrupt) on
 * underflow or a missing block, other -errno for I/O. */
int qcow2_refcount_change(struct qcow2_state *s, uint64_t cluster,
                          int delta, uint64_t *result);

/* ---- alloc.c (lock held) ---- */

/* Add a host offset (a cluster holding an L2 table or refcount block) to
 * the metadata set; 0 or -ENOMEM. */
int qcow2_meta_add(struct qcow2_state *s, uint64_t offset);

/* Empty the metadata set. */
void qcow2_meta_clear(struct qcow2_state *s);

/* What metadata host bytes [off, off + len) overlap (a phrase for log
 * lines), or NULL for none. */
const char *qcow2_metadata_at(const struct qcow2_state *s, uint64_t off,
                              uint64_t len);

/* Take up to n free host clusters in a row, without counting them:
 * *start (cluster index), *got >= 1; *fresh when they were never written
 * (read as zeros).  0 or -errno. */
int qcow2_pick_clusters(struct qcow2_state *s, uint64_t n, uint64_t *start,
                        uint64_t *got, bool *fresh);

/* Take host clusters [first, first + count) at the frontier (first must
 * be the frontier), growing the file; 0 or -errno. */
int qcow2_take_frontier(struct qcow2_state *s, uint64_t first,
                        uint64_t count);

/* Count clusters [first, first + count), just taken, as used: each
 * refcount goes from 0 to 1.  *counted gets how many were counted.  0,
 * -EIO (image marked corrupt) when one was counted already, or -errno as
 * qcow2_refcount_change. */
int qcow2_count_taken(struct qcow2_state *s, uint64_t first,
                      uint64_t count, uint64_t *counted);

/* Give back clusters [first, first + count) taken for a step that failed,
 * of which the first counted were counted: those are queued to be freed,
 * the rest return to the free list. */
void qcow2_give_back(struct qcow2_state *s, uint64_t first, uint64_t count,
                     uint64_t counted);

/* Allocate up to n host clusters in a row with refcount 1: *off (bytes),
 * *got >= 1, *fresh as for qcow2_pick_clusters.  0 or -errno. */
int qcow2_alloc_clusters(struct qcow2_state *s, uint64_t n, uint64_t *off,
                         uint64_t *got, bool *fresh);

/* A host cluster's refcount reached 0: forget it in the caches, punch it
 * out of the file and make it allocatable. */
void qcow2_release_cluster(struct qcow2_state *s, uint64_t cluster);

/* Queue a refcount decrement of every host cluster that bytes [offset,
 * offset + len) touch, applied once wait is satisfied and no older
 * request runs; 0 or -ENOMEM. */
int qcow2_queue_free(struct qcow2_state *s, uint64_t offset, uint64_t len,
                     enum qcow2_free_wait wait);

/* The sync that wait stands for happened: those frees are ready. */
void qcow2_frees_reached(struct qcow2_state *s, enum qcow2_free_wait wait);

/* Apply every ready and quiet free; 0 or -errno. */
int qcow2_apply_frees(struct qcow2_state *s);

/* Unregister request r (qcow2_req_end) and apply the frees its end made
 * quiet; a failure to apply them leaves them queued. */
void qcow2_req_finish(struct qcow2_state *s, struct qcow2_req *r);

/* Whether so many frees wait that a request should flush metadata. */
bool qcow2_frees_pressing(const struct qcow2_state *s);

/* ---- write.c (lock held) ---- */

/* Make the L2 table of L1 entry l1_index writable (allocated, and ours
 * alone, copied away from a snapshot if need be); *l2_off gets it.  0
 * or -errno. */
int qcow2_writable_l2(struct qcow2_state *s, uint32_t l1_index,
                      uint64_t *l2_off);

/* The L2 table offset of L1 entry l1_index for a write (0: none), the
 * image marked corrupt when the entry is bad; 0 or -EIO. */
int qcow2_l2_for_write(struct qcow2_state *s, uint64_t l1_index,
                       uint64_t *l2_off);

/* Decode entry idx of table t (at l2_off) for the guest cluster at gc,
 * the image marked corrupt when it is bad: a write must not go on with
 * it.  0 or -EIO. */
int qcow2_entry_for_write(struct qcow2_state *s, const uint8_t *t,
                          uint64_t l2_off, uint32_t idx, uint64_t gc,
                          struct qcow2_l2e *e);

/* Whether guest bytes [a, b) of the cluster at gc with entry e are
 * written in place (no L2 change). */
bool qcow2_in_place(const struct qcow2_state *s, const struct qcow2_l2e *e,
                    uint64_t gc, uint64_t a, uint64_t b);

/* Whether guest bytes [a, b) of the cluster with entry e read as zeros
 * without reading any data. */
bool qcow2_reads_zero(struct qcow2_state *s, const struct qcow2_l2e *e,
                      uint64_t a, uint64_t b);

/* Write guest bytes [off, off + len) from buf, dropping the lock around
 * data I/O; *allocated is set when a step allocated.  0 or -errno. */
int qcow2_write_steps(struct qcow2_state *s, const uint8_t *buf,
                      uint64_t len, uint64_t off, bool *allocated);

/* The img_ops write entry point. */
int qcow2_write_op(struct image *img, const void *buf, uint64_t len,
                   uint64_t off, unsigned flags);

/* ---- zero.c ---- */

/* The img_ops write_zeroes and trim entry points. */
int qcow2_zero_op(struct image *img, uint64_t len, uint64_t off,
                  unsigned flags);
int qcow2_trim_op(struct image *img, uint64_t len, uint64_t off,
                  unsigned flags);

/* ---- sync.c ---- */

/* Note that a write completed: the next ordered write needs a sync. */
void qcow2_note_write(struct qcow2_state *s);

/* Sync the image (and data) file, tagged; 0 or -EIO (logged; every
 * later write and flush is refused). */
int qcow2_sync(struct qcow2_state *s, enum io_tag tag);

/* Sync unless a finished sync covered every write completed so far; 0
 * or -EIO as qcow2_sync. */
int qcow2_sync_if_needed(struct qcow2_state *s, enum io_tag tag);

/* Write the incompatible feature bits (version 3 only) and sync; 0 or
 * -errno (logged). */
int qcow2_write_incompatible(struct qcow2_state *s, uint64_t bits);

/* Log why, mark the image corrupt (in the file, for version 3) and stop
 * writing it. */
void qcow2_mark_corrupt(struct qcow2_state *s, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

/* ---- flush.c ---- */

/* Register the L2 cache's write-back callback. */
void qcow2_flush_setup(struct qcow2_state *s);

/* Set up the allocator and refcounts of an image opened read-write (and
 * again after a repair); 0 or -errno. */
int qcow2_writable_setup(struct qcow2_state *s, size_t rc_cache_bytes);

/* Write an L2 table at once, with no ordering (tests' broken mode). */
int qcow2_write_l2_now(struct qcow2_state *s, uint64_t offset,
                       const uint8_t *data);

/* Note that L1 entry idx changed in memory. */
void qcow2_l1_dirty(struct qcow2_state *s, uint32_t idx);

/* Write the changed L1 entries (their L2 tables must be on disk). */
int qcow2_write_l1(struct qcow2_state *s);

/* Everything dirty to disk in order, ending with a sync tagged final
 * when anything was written; 0 or -errno. */
int qcow2_flush_locked(struct qcow2_state *s, enum io_tag final);

/* The same for FLUSH and FUA: the syncs run with the metadata lock
 * dropped wherever the order allows (held on entry and on return; other
 * requests go on meanwhile), one flush at a time.  0 or -errno. */
int qcow2_flush_ordered(struct qcow2_state *s, enum io_tag final);

/* Move the L1 table to a larger place with room for need entries. */
int qcow2_grow_l1(struct qcow2_state *s, uint64_t need);

/* Final write-back at close: frees applied, refcounts written, dirty bit
 * cleared, the file's unused tail cut; 0 or -errno. */
int qcow2_close_writable(struct qcow2_state *s);

/* ---- flush.c: the interface for the checker ---- */

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

/* True once the image must not be written: marked corrupt, or a sync
 * failed (after a failed fdatasync the kernel may have dropped dirty
 * pages, and a later successful sync could make metadata durable that
 * points at lost data). */
static inline bool qcow2_writes_refused(const struct qcow2_state *s)
{
    return s->corrupt || __atomic_load_n(&s->sync_failed, __ATOMIC_ACQUIRE);
}

#endif /* DISKSERVE_QCOW2_H */
