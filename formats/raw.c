/* The raw driver: guest byte N is file byte N.
 *
 * Locking: none needed.  Every operation is a positioned syscall on one
 * shared file descriptor, which the kernel serialises as required; the
 * only shared state is the sticky "a flush failed" flag, an atomic.  The
 * page cache is shared by all connections, so the export is consistent
 * across connections (multi-conn).
 *
 * Write order: none to keep; FUA and flush are fdatasync.  After a failed
 * fdatasync the file's state is unknown (a retried fsync can report
 * success for pages the kernel dropped), so the image refuses every later
 * write with -EIO.
 *
 * On a remote image (an RBD name, formats/rbd.c) the same calls reach
 * librbd through formats/io.c; nothing is read inline on the loop, and
 * the image's snapshots are offered as read-only dirty bitmaps, each
 * marking what changed since that snapshot (raw_remote_ops).
 */
#include <errno.h>
#include <fcntl.h>
#include <linux/falloc.h>
#include <linux/fs.h>
#include <linux/magic.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <unistd.h>

#include "image.h"
#include "io.h"

/* tmpfs images up to this size are mapped for small reads. */
#define MAP_MAX (16ull << 30)

struct raw_image {
    struct image img;           /* first: the generic part */
    int fd;
    bool is_block;
    atomic_bool failed;         /* a flush failed: refuse writes */
    atomic_bool no_zero_range;  /* FALLOC_FL_ZERO_RANGE unsupported */
    atomic_bool no_punch;       /* FALLOC_FL_PUNCH_HOLE unsupported */
    const uint8_t *map;         /* tmpfs: the file mapped, read-only */
    size_t map_len;
    atomic_bool map_off;        /* holes appeared: stop reading the map */
};

static struct raw_image *to_raw(struct image *img)
{
    return (struct raw_image *)img;
}

static int raw_probe(const uint8_t *buf, size_t len)
{
    return 1;   /* anything is raw, at the lowest score */
}

static const struct img_ops raw_remote_ops;

static int raw_open(const struct img_open_args *args, struct image **out)
{
    struct raw_image *r = calloc(1, sizeof *r);
    struct stat st;
    int err;

    if (!r)
        return -ENOMEM;
    r->img.path = strdup(args->path);
    if (!r->img.path) {
        err = -ENOMEM;
        goto out_free;
    }
    r->fd = io_open(args->path, !args->read_only);
    if (r->fd < 0) {
        err = r->fd;
        if (!io_is_remote_name(args->path))   /* the backend said why */
            img_log("raw: %s: %s", args->path, strerror(-err));
        goto out_free;
    }
    if (!io_is_file(r->fd)) {
        err = io_size(r->fd, &r->img.size);
        if (err)
            goto out_close;
    } else if (fstat(r->fd, &st) < 0) {
        err = -errno;
        goto out_close;
    } else if (S_ISBLK(st.st_mode)) {
        uint64_t size;
        if (ioctl(r->fd, BLKGETSIZE64, &size) < 0) {
            err = -errno;
            img_log("raw: %s: cannot read device size: %s", args->path,
                    strerror(errno));
            goto out_close;
        }
        r->img.size = size;
        r->is_block = true;
    } else if (S_ISREG(st.st_mode)) {
        r->img.size = (uint64_t)st.st_size;
    } else {
        img_log("raw: %s: not a regular file or block device", args->path);
        err = -EINVAL;
        goto out_close;
    }

    struct statfs sfs;
    if (fstatfs(r->fd, &sfs) == 0 && sfs.f_type == TMPFS_MAGIC) {
        /* Memory-backed: reads and plain writes are copies.  A small
         * read is sent to the socket straight from a mapping of the
         * file, its only copy, without pread's system call, page cache
         * lookup and copy into a buffer (the size never changes while
         * we serve it, so the mapping stays whole).  The mapping
         * is filled in at once: a page fault on the loop thread costs
         * more than the pread it saves, and page tables for MAP_MAX
         * cost 1/512 of it.  Only a file without holes: touching a
         * hole of a tmpfs file through a mapping allocates it, so the
         * map is left alone from the first hole punched or range
         * zeroed on (map_off).  A read already answered from the map
         * whose reply is still queued when a punch lands on its range
         * (a read and a trim of the same bytes in flight at once) fills
         * the pages it covers back in, as zeros: the data stays right,
         * the space comes back. */
        r->img.nowait_reads = 1;
        r->img.nowait_writes = 1;
        if (st.st_size > 0 && (uint64_t)st.st_size <= MAP_MAX &&
            (uint64_t)st.st_blocks * 512 >= (uint64_t)st.st_size) {
            void *m = mmap(NULL, (size_t)st.st_size, PROT_READ,
                           MAP_SHARED | MAP_POPULATE, r->fd, 0);
            if (m != MAP_FAILED) {
                r->map = m;
                r->map_len = (size_t)st.st_size;
            }
        }
    }

    r->img.ops = io_is_file(r->fd) ? &raw_ops : &raw_remote_ops;
    r->img.map_stable = true;
    r->img.bitmap_status_blocks = !io_is_file(r->fd);
    r->img.read_only = args->read_only;
    r->img.multi_conn = true;
    r->img.fast_zero = true;
    r->img.has_depth = true;
    r->img.min_block = 1;
    r->img.pref_block = 4096;
    *out = &r->img;
    return 0;

out_close:
    io_close(r->fd);
out_free:
    free(r->img.path);
    free(r);
    return err;
}

static void raw_close(struct image *img)
{
    struct raw_image *r = to_raw(img);

    if (!img->read_only && !atomic_load(&r->failed))
        io_sync(r->fd, IO_TAG_FLUSH);
    if (r->map)
        munmap((void *)r->map, r->map_len);
    io_close(r->fd);
    free(img->path);
    free(r);
}

static int raw_read(struct image *img, void *buf, uint64_t len, uint64_t off)
{
    struct raw_image *r = to_raw(img);
    int err = io_pread_full(r->fd, buf, len, off);
    if (err == -ENODATA) {
        /* The file shrank under us: what is gone reads as zeros, as
         * a sparse file's tail would. */
        return 0;
    }
    if (err)
        img_log("raw: %s: read %llu bytes at %llu: %s", img->path,
                (unsigned long long)len, (unsigned long long)off,
                strerror(-err));
    return err;
}

static int raw_sync(struct raw_image *r)
{
    int err = io_sync(r->fd, IO_TAG_FLUSH);
    if (err) {
        atomic_store(&r->failed, true);
        img_log("raw: %s: fdatasync failed, refusing further writes: %s",
                r->img.path, strerror(-err));
        return -EIO;
    }
    return 0;
}

static int raw_write(struct image *img, const void *buf, uint64_t len,
                     uint64_t off, unsigned flags)
{
    struct raw_image *r = to_raw(img);

    if (atomic_load(&r->failed))
        return -EIO;
    int err = io_pwrite_full(r->fd, buf, len, off);
    if (err) {
        img_log("raw: %s: write %llu bytes at %llu: %s", img->path,
                (unsigned long long)len, (unsigned long long)off,
                strerror(-err));
        return err;
    }
    if (flags & IMG_FUA)
        return raw_sync(r);
    return 0;
}

static bool is_unsupported(int err)
{
    return err == EOPNOTSUPP || err == ENOTSUP || err == ENOSYS ||
           err == EINVAL;
}

/* Deallocate a range; 0, -ENOTSUP when the file system cannot, or
 * another -errno. */
static int raw_punch(struct raw_image *r, uint64_t len, uint64_t off)
{
    atomic_store(&r->map_off, true);
    if (atomic_load(&r->no_punch))
        return -ENOTSUP;
    int err = io_fallocate(r->fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE,
                           off, len, IO_TAG_DATA);
    if (err == 0)
        return 0;
    if (is_unsupported(-err)) {
        atomic_store(&r->no_punch, true);
        return -ENOTSUP;
    }
    return err;
}

static int raw_write_zeroes(struct image *img, uint64_t len, uint64_t off,
                            unsigned flags)
{
    struct raw_image *r = to_raw(img);
    int err;

    if (atomic_load(&r->failed))
        return -EIO;
    if (flags & IMG_MAY_TRIM) {
        err = raw_punch(r, len, off);
        if (err == 0)
            goto done;
        if (err != -ENOTSUP)
            return err;
    }
    if (!atomic_load(&r->no_zero_range)) {
        err = io_fallocate(r->fd, FALLOC_FL_ZERO_RANGE | FALLOC_FL_KEEP_SIZE,
                           off, len, IO_TAG_DATA);
        if (err == 0)
            goto done;
        if (!is_unsupported(-err))
            return err;
        atomic_store(&r->no_zero_range, true);
    }
    /* No ZERO_RANGE: punch, then allocate again so the range stays
     * allocated as NO_HOLE asks.  Not on tmpfs, where the allocated
     * pages are not written yet and so still read as a hole to
     * SEEK_DATA: there zeros are written (a memory copy). */
    if (!r->is_block && !r->img.nowait_writes &&
        raw_punch(r, len, off) == 0) {
        if (io_fallocate(r->fd, FALLOC_FL_KEEP_SIZE, off, len,
                         IO_TAG_DATA) == -ENOSPC)
            return -ENOSPC;
        goto done;
    }
    if (flags & IMG_FAST_ZERO)
        return -ENOTSUP;
    err = io_write_zeroes(r->fd, len, off);
    if (err)
        return err;
done:
    if (flags & IMG_FUA)
        return raw_sync(r);
    return 0;
}

static int raw_trim(struct image *img, uint64_t len, uint64_t off,
                    unsigned flags)
{
    struct raw_image *r = to_raw(img);

    if (atomic_load(&r->failed))
        return -EIO;
    int err = raw_punch(r, len, off);
    /* Trim is advisory: a file system that cannot punch keeps the data. */
    if (err && err != -ENOTSUP)
        return err;
    if (flags & IMG_FUA)
        return raw_sync(r);
    return 0;
}

static int raw_flush(struct image *img)
{
    struct raw_image *r = to_raw(img);

    if (atomic_load(&r->failed))
        return -EIO;
    return raw_sync(r);
}

static int raw_cache(struct image *img, uint64_t len, uint64_t off)
{
    struct raw_image *r = to_raw(img);
    return io_advise(r->fd, off, len, POSIX_FADV_WILLNEED);
}

static int raw_block_status(struct image *img, uint64_t len, uint64_t off,
                            struct img_extents *e)
{
    struct raw_image *r = to_raw(img);
    uint64_t end = off + len;

    if (r->is_block)
        return img_extents_add(e, len, 0, 1) ? 0 : -EIO;

    while (off < end) {
        off_t data = io_lseek(r->fd, (off_t)off, SEEK_DATA);
        if (data < 0 && errno == ENXIO) {
            /* No data from here to the end of the file. */
            img_extents_add(e, end - off, IMG_EXT_HOLE | IMG_EXT_ZERO, 1);
            return 0;
        }
        if (data < 0) {
            /* Cannot tell: report data, which is always safe. */
            if (e->n == 0)
                img_extents_add(e, end - off, 0, 1);
            return 0;
        }
        if ((uint64_t)data > off) {
            uint64_t n = (uint64_t)data - off;
            if (n > end - off)
                n = end - off;
            if (!img_extents_add(e, n, IMG_EXT_HOLE | IMG_EXT_ZERO, 1))
                return 0;
            off += n;
            continue;
        }
        off_t hole = io_lseek(r->fd, (off_t)off, SEEK_HOLE);
        uint64_t n = hole < 0 || (uint64_t)hole <= off
                     ? end - off : (uint64_t)hole - off;
        if (n > end - off)
            n = end - off;
        if (!img_extents_add(e, n, 0, 1))
            return 0;
        off += n;
    }
    return 0;
}

/* Ranges this long are checked for holes: two lseek calls are worth it
 * when the caller then sends a hole instead of bytes (spliced reads);
 * small reads are cheaper copied as they are. */
#define HOLE_PROBE_MIN (64u * 1024)

static int raw_map_nowait(struct image *img, uint64_t len, uint64_t off,
                          struct img_map *m)
{
    struct raw_image *r = to_raw(img);
    int fd = r->fd;
    bool mapped = r->map && off + len <= r->map_len &&
                  !atomic_load_explicit(&r->map_off, memory_order_relaxed);

    if (!io_is_file(fd))
        return -EAGAIN;     /* only a file can be read on the loop */
    m->kind = IMG_MAP_DATA;
    m->fd = fd;
    m->host_offset = off;
    m->length = len;
    m->mem = NULL;
    if (len < HOLE_PROBE_MIN) {
        if (mapped)
            m->mem = r->map + off;
        return 0;
    }
    /* A mapped file has no holes.  Otherwise tmpfs finds a hole by
     * walking every page before it (SEEK_HOLE in a 1 GiB file took
     * 3 ms): a large read there goes to the driver, whose reader finds
     * zeros by looking at them. */
    if (r->is_block || mapped)
        return 0;
    if (img->nowait_reads)
        return -EAGAIN;
    /* Errors (a block device, a file system without SEEK_DATA) leave
     * the range data. */
    off_t data = io_lseek(fd, (off_t)off, SEEK_DATA);
    if (data < 0 && errno == ENXIO) {
        m->kind = IMG_MAP_ZERO;             /* a hole to the end */
    } else if (data > (off_t)off) {
        m->kind = IMG_MAP_ZERO;
        if ((uint64_t)data - off < len)
            m->length = (uint64_t)data - off;
    } else if (data == (off_t)off) {
        off_t hole = io_lseek(fd, (off_t)off, SEEK_HOLE);
        if (hole > (off_t)off && (uint64_t)hole - off < len)
            m->length = (uint64_t)hole - off;
    }
    return 0;
}

/* A remote image's snapshots, as read-only dirty bitmaps: the bitmap
 * named after snapshot S marks what changed since S was taken. */
static size_t raw_bitmap_count(struct image *img)
{
    char **names;
    size_t n;

    if (io_snapshots(to_raw(img)->fd, &names, &n) < 0)
        return 0;
    io_free_names(names, n);
    return n;
}

static int raw_bitmap_info(struct image *img, size_t i,
                           struct img_bitmap_info *info)
{
    char **names;
    size_t n;
    int err = io_snapshots(to_raw(img)->fd, &names, &n);

    if (err)
        return err;
    if (i >= n) {
        io_free_names(names, n);
        return -ENOENT;
    }
    memset(info, 0, sizeof *info);
    snprintf(info->name, sizeof info->name, "%s", names[i]);
    info->granularity = 512;
    info->persistent = true;
    io_free_names(names, n);
    return 0;
}

struct changed_walk {
    struct img_extents *e;
    uint64_t pos;               /* reported up to here */
};

static int add_changed(uint64_t off, uint64_t len, void *arg)
{
    struct changed_walk *w = arg;

    if (!img_extents_add(w->e, off - w->pos, 0, 0) ||
        !img_extents_add(w->e, len, 1, 0))
        return 1;               /* full: the reply ends here */
    w->pos = off + len;
    return 0;
}

static int raw_bitmap_status(struct image *img, const char *name,
                             uint64_t len, uint64_t off,
                             struct img_extents *e)
{
    struct changed_walk w = { e, off };
    int err = io_changed_since(to_raw(img)->fd, name, off, len, add_changed,
                               &w);

    if (err < 0)
        return err;
    if (err == 0)
        img_extents_add(e, off + len - w.pos, 0, 0);
    return 0;
}

/* raw over a remote image: no inline reads, snapshots as bitmaps. */
static const struct img_ops raw_remote_ops = {
    .name = "raw",
    .probe = raw_probe,
    .open = raw_open,
    .close = raw_close,
    .read = raw_read,
    .write = raw_write,
    .write_zeroes = raw_write_zeroes,
    .trim = raw_trim,
    .flush = raw_flush,
    .cache = raw_cache,
    .block_status = raw_block_status,
    .bitmap_count = raw_bitmap_count,
    .bitmap_info = raw_bitmap_info,
    .bitmap_status = raw_bitmap_status,
};

const struct img_ops raw_ops = {
    .name = "raw",
    .probe = raw_probe,
    .open = raw_open,
    .close = raw_close,
    .read = raw_read,
    .write = raw_write,
    .write_zeroes = raw_write_zeroes,
    .trim = raw_trim,
    .flush = raw_flush,
    .cache = raw_cache,
    .block_status = raw_block_status,
    .map_nowait = raw_map_nowait,
};
