/* The block driver interface: one ops table per image format.
 *
 * Drivers are plain blocking code called from worker threads, possibly
 * concurrently on the same image; each states its locking at the top of
 * its main file.  Offsets and lengths are bytes.  Every int function
 * returns 0 or a negative errno.  The server has already checked that a
 * request lies inside the image and carries only flags it advertised, so
 * drivers assert those and check only what they read from disk.
 */
#ifndef DISKSERVE_IMAGE_H
#define DISKSERVE_IMAGE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct image;

/* Flags for write / write_zeroes / trim. */
#define IMG_FUA        (1u << 0)   /* durable before returning */
#define IMG_MAY_TRIM   (1u << 1)   /* write_zeroes may deallocate */
#define IMG_FAST_ZERO  (1u << 2)   /* fail with -ENOTSUP unless cheap */

/* Extent state, as base:allocation reports it. */
#define IMG_EXT_HOLE   (1u << 0)
#define IMG_EXT_ZERO   (1u << 1)

/* One extent of block status.  depth: 0 unallocated anywhere in the
 * chain, 1 allocated in this image, N allocated in backing level N
 * (qemu:allocation-depth). */
struct img_extent {
    uint64_t length;
    uint32_t flags;
    uint32_t depth;
};

/* A list the driver appends to; it stops when full. */
struct img_extents {
    struct img_extent *v;
    size_t n;
    size_t cap;
    uint64_t end;           /* offset just past the last extent */
};

/* Append an extent, merging with the previous one when its state is the
 * same.  Returns false when the list is full (the extent was not added). */
bool img_extents_add(struct img_extents *e, uint64_t length, uint32_t flags,
                     uint32_t depth);

/* Where a range of guest bytes lives, for reads the caller can do
 * itself without the driver (see map_nowait). */
enum img_map_kind {
    IMG_MAP_DATA,           /* read length bytes of fd at host_offset */
    IMG_MAP_ZERO,           /* reads as zeros */
};

struct img_map {
    enum img_map_kind kind;
    int fd;
    uint64_t host_offset;
    uint64_t length;        /* may be shorter than asked */
    const void *mem;        /* DATA on memory (tmpfs) the driver maps:
                             * the bytes are here too, read them with a
                             * copy rather than a system call; NULL
                             * (the caller's) when not */
};

/* The default bound on PBKDF2 iterations per LUKS open: qemu-img and
 * cryptsetup calibrate a slot to 1-2 s of PBKDF2 on the creating machine
 * (qemu-img's default here: 6.5M for the slot plus 1.6M for the digest),
 * which fits; a forged header cannot make an open run PBKDF2 for more
 * than about 5 s (sha256) to 11 s (sha1, sha512) on a 2-core Xeon. */
#define IMG_DEFAULT_LUKS_MAX_ITER 16000000u

/* Options given to open. */
struct img_open_args {
    const char *path;
    const char *format;     /* NULL: probe */
    bool read_only;
    const char *snapshot;   /* qcow2 internal snapshot, NULL for none */
    const char *key_file;   /* file holding the passphrase, or NULL */
    size_t cache_size;      /* metadata cache bytes, 0 for the default */
    uint64_t luks_max_iter; /* PBKDF2 iterations one LUKS open may run,
                             * summed over the slots tried (each slot's
                             * plus the digest's); 0 for the default */
    unsigned depth;         /* position in a backing chain (0 = top) */
    bool bitmaps_crash_safe;    /* qcow2, read-write: keep enabled dirty
                                 * bitmaps a superset of every write that
                                 * may have reached the disk, so that they
                                 * survive a crash (a sync before each
                                 * batch of writes into clean granules);
                                 * false: in use until close, as qemu */
};

/* Longest dirty bitmap name (qcow2's limit). */
#define IMG_BITMAP_NAME_MAX 1023

/* One dirty bitmap as the driver describes it (a copy: the list may
 * change while the caller holds it). */
struct img_bitmap_info {
    char name[IMG_BITMAP_NAME_MAX + 1];
    uint64_t granularity;   /* bytes per bit, a power of two */
    uint64_t count;         /* dirty bytes */
    bool recording;         /* enabled: records writes, zeroes, trims */
    bool persistent;        /* stored in the image */
    bool inconsistent;      /* found in use on disk: never exported */
};

/* Bitmap management, applied all or nothing (see bitmap_apply). */
enum img_bitmap_op {
    IMG_BITMAP_ADD,
    IMG_BITMAP_REMOVE,
    IMG_BITMAP_CLEAR,
    IMG_BITMAP_ENABLE,
    IMG_BITMAP_DISABLE,
    IMG_BITMAP_MERGE,       /* sources into name */
};

struct img_bitmap_action {
    enum img_bitmap_op op;
    const char *name;               /* the bitmap acted on (target) */
    uint64_t granularity;           /* ADD: 0 for the driver's default */
    bool persistent;                /* ADD */
    bool disabled;                  /* ADD */
    const char *const *sources;     /* MERGE */
    size_t n_sources;
};

struct img_ops {
    const char *name;

    /* Score how well the first bytes of a file match this format: 0 no,
     * higher is better.  buf holds at least 512 bytes (zero padded). */
    int (*probe)(const uint8_t *buf, size_t len);

    /* Open an image; on success *out is a new image whose ops, size and
     * flags are set.  Logs one line naming file, field and value on a
     * malformed image. */
    int (*open)(const struct img_open_args *args, struct image **out);
    void (*close)(struct image *img);

    int (*read)(struct image *img, void *buf, uint64_t len, uint64_t off);
    int (*write)(struct image *img, const void *buf, uint64_t len,
                 uint64_t off, unsigned flags);
    int (*write_zeroes)(struct image *img, uint64_t len, uint64_t off,
                        unsigned flags);
    int (*trim)(struct image *img, uint64_t len, uint64_t off,
                unsigned flags);
    int (*flush)(struct image *img);
    int (*cache)(struct image *img, uint64_t len, uint64_t off);

    /* Describe [off, off+len) into e (at least one extent on success). */
    int (*block_status)(struct image *img, uint64_t len, uint64_t off,
                        struct img_extents *e);

    /* Map the start of [off, off+len) without blocking: from cached
     * metadata only.  -EAGAIN when that would need disk I/O (or the range
     * needs the driver, e.g. compressed or encrypted data); the caller
     * then falls back to read().  NULL: always fall back. */
    int (*map_nowait)(struct image *img, uint64_t len, uint64_t off,
                      struct img_map *m);

    /* The caller is done with every range map_nowait returned so far
     * (its reads of them are over), so the driver may reuse that space.
     * Called on the same thread as map_nowait, after each read that
     * called it, whether the read succeeded or fell back.  Never blocks.
     * NULL: nothing to do. */
    void (*map_done)(struct image *img);

    /* For an image whose ranges are not map_stable: keep every range
     * map_nowait returned since the last map_done from being freed and
     * reused until map_unpin(token), so the caller may refer to those
     * file bytes after map_done (splice them).  Called before map_done,
     * on the same thread; map_unpin from any thread.  Neither blocks.
     * NULL: such references are not possible. */
    int (*map_pin)(struct image *img, uint64_t *token);
    void (*map_unpin)(struct image *img, uint64_t token);

    /* Dirty bitmaps (all NULL for a format without them).  The set can
     * change while the image is open (bitmap_apply), so callers name a
     * bitmap rather than hold an index: bitmap_info copies entry i of the
     * current list (-ENOENT past its end); bitmap_status describes the
     * named bitmap over a range (flags bit 0 set = dirty; -ENOENT when no
     * such bitmap exists any more).  Thread-safe against writes and
     * bitmap_apply. */
    size_t (*bitmap_count)(struct image *img);
    int (*bitmap_info)(struct image *img, size_t i,
                       struct img_bitmap_info *info);
    int (*bitmap_status)(struct image *img, const char *name, uint64_t len,
                         uint64_t off, struct img_extents *e);

    /* Apply n actions all or nothing, atomically with respect to
     * concurrent writes (each write is recorded wholly before or wholly
     * after the change; one in flight across it may be recorded on both
     * sides, in the old bitmap and the new one, never in neither).  May
     * block on disk I/O: worker threads only.
     * On failure returns -errno, changes nothing, and writes a one-line
     * reason (no trailing newline) into msg. */
    int (*bitmap_apply)(struct image *img, const struct img_bitmap_action *a,
                        size_t n, char *msg, size_t msglen);
};

/* What every driver's image starts with; drivers embed it first. */
struct image {
    const struct img_ops *ops;
    char *path;
    uint64_t size;          /* guest-visible bytes, exact */
    bool read_only;
    bool multi_conn;        /* consistent across connections */
    bool fast_zero;         /* write_zeroes can honour IMG_FAST_ZERO */
    bool has_depth;         /* allocation depth is meaningful */
    uint32_t min_block;     /* smallest efficient unit (1 for raw) */
    uint32_t pref_block;    /* preferred I/O size */
    int nowait_reads;       /* 1: data fd reads never block (tmpfs) */
    int nowait_writes;      /* 1: write() without FUA never blocks */
    bool bitmap_status_blocks;  /* bitmap_status does I/O: workers only */
    bool map_stable;        /* the file bytes behind a range map_nowait
                             * returned stay that guest range's for the
                             * whole open (nothing is moved, freed or
                             * reused): a caller may keep referring to
                             * them after map_done, e.g. splice them */
};

/* Open an image, probing its format unless args->format names one.
 * Returns 0 or -errno with one line logged. */
int img_open(const struct img_open_args *args, struct image **out);

/* Close an image opened with img_open (NULL is fine). */
void img_close(struct image *img);

/* The driver for a format name, or NULL. */
const struct img_ops *img_find_driver(const char *name);

/* Probe a file's format; returns the driver or NULL with errno set. */
const struct img_ops *img_probe_file(const char *path);

/* Drivers. */
extern const struct img_ops raw_ops;
extern const struct img_ops qcow2_ops;
extern const struct img_ops vhdx_ops;

/* Logging from formats/: one line to stderr (the server redirects
 * stderr when it logs to a file).  Printf-style. */
void img_log(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

#endif /* DISKSERVE_IMAGE_H */
