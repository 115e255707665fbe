/* The VHDX driver ([MS-VHDX] v8.0): open, and the read side.
 *
 * Fixed, dynamic and differencing files with 512- or 4096-byte logical
 * sectors, read-write (write.c, diffwrite.c, logwrite.c); parents are
 * opened read-only.
 *
 * Open order: file identifier and headers (header.c), log replay into an
 * in-memory overlay (log.c), region table (region.c), metadata with the
 * parent locator (metadata.c, parent.c), BAT (bat.c), then the parent
 * (parent.c, which opens it through img_open); everything after the
 * headers is read through the overlay (vhdx_pread).  A read-only open
 * never writes the file.  A writable open checks all of that first, then
 * writes the overlay into the file, extends it to LastFileOffset, flushes
 * and clears LogGuid (logwrite.c, vhdx_replay_into_file), so afterwards
 * the overlay is empty and the file is read directly.
 *
 * Payload block states in a differencing file ([MS-VHDX] 2.5.1.1):
 * FULLY_PRESENT reads this file; PARTIALLY_PRESENT reads, sector by
 * sector, this file where the chunk's sector bitmap bit is 1 and the
 * parent where it is 0 (the bitmap is read from the file on demand, at
 * most BlockSize / LogicalSectorSize / 8 bytes a request); NOT_PRESENT
 * reads the parent (the spec's SHOULD); ZERO reads zeros (MUST).
 * UNDEFINED may read as arbitrary data: we read the parent, what the
 * block held before the child ever wrote it.  UNMAPPED reads "zero data
 * or the contents before the unmap"; the parent's data is not the
 * latter when the child had written the block, so we read zeros.  In a
 * file without parent every state but FULLY_PRESENT reads zeros.
 *
 * Locking: a read-only image never changes after open and takes no
 * lock.  A writable image has one mutex (s->lock) guarding the
 * allocation state (file end, in-flight allocation records), the dirty
 * BAT sector set, the commit flag, the log position and the in-memory
 * header; BAT entries change only under it, with atomic stores, and
 * readers load them atomically without it.  It is never held across
 * guest data I/O: in-place writes and reads run in parallel, and an
 * allocating write drops it while its data goes to the file.  It is
 * held across the header writes before the first change of an open
 * (once).  Commits run one at a time (s->committing, waited for on
 * s->cond; callers that come while one runs share the next) and drop
 * the lock for their syncs and log and BAT writes.
 * Blocks are never moved or reused once placed, so a reader that looked
 * up a block without the lock reads a place that still holds that
 * block's data (or zeros, after a zero write raced with it).  The export
 * is consistent across connections.  Only on tmpfs (img.nowait_writes)
 * does the event loop thread write inline and take the lock like any
 * writer: then nobody holds it, or an in-flight record, across slow I/O.
 *
 * Write order (logwrite.c): data, then log entry and sync, then BAT in
 * place, made durable before its log space is used again.
 * DISKSERVE_VHDX_BREAK=RULE[,RULE] (tests only) breaks it on purpose:
 *
 *   apply-before-log-flush  BAT sectors written in place before the sync
 *                           that makes their log entry durable
 *   log-reuse               every entry written at the start of the log,
 *                           without the sync that makes the previous
 *                           entry's in-place writes durable first
 *   bat-before-data         a commit that carries BAT changes writes its
 *                           log entry without first syncing the data
 *                           writes those changes map
 *
 * DISKSERVE_VHDX_CRASH=after-log-flush (tests only) kills the process
 * with SIGKILL after the first log entry is durable, before it is
 * applied in place.
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <linux/magic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <unistd.h>

#include "io.h"
#include "vhdx.h"

#define GUID(d1, d2, d3, a, b, c, d, e, f, g, h) { {                      \
    (d1) & 0xff, ((d1) >> 8) & 0xff, ((d1) >> 16) & 0xff, (d1) >> 24,      \
    (d2) & 0xff, (d2) >> 8, (d3) & 0xff, (d3) >> 8,                         \
    a, b, c, d, e, f, g, h } }

const struct vhdx_guid vhdx_bat_guid = GUID(0x2DC27766u, 0xF623, 0x4200,
    0x9D, 0x64, 0x11, 0x5E, 0x9B, 0xFD, 0x4A, 0x08);
const struct vhdx_guid vhdx_metadata_guid = GUID(0x8B7CA206u, 0x4790, 0x4B9A,
    0xB8, 0xFE, 0x57, 0x5F, 0x05, 0x0F, 0x88, 0x6E);
const struct vhdx_guid vhdx_file_param_guid = GUID(0xCAA16737u, 0xFA36,
    0x4D43, 0xB3, 0xB6, 0x33, 0xF0, 0xAA, 0x44, 0xE7, 0x6B);
const struct vhdx_guid vhdx_disk_size_guid = GUID(0x2FA54224u, 0xCD1B,
    0x4876, 0xB2, 0x11, 0x5D, 0xBE, 0xD8, 0x3B, 0xF4, 0xB8);
const struct vhdx_guid vhdx_page83_guid = GUID(0xBECA12ABu, 0xB2E6, 0x4523,
    0x93, 0xEF, 0xC3, 0x09, 0xE0, 0x00, 0xC7, 0x46);
const struct vhdx_guid vhdx_logical_sector_guid = GUID(0x8141BF1Du, 0xA96F,
    0x4709, 0xBA, 0x47, 0xF2, 0x33, 0xA8, 0xFA, 0xAB, 0x5F);
const struct vhdx_guid vhdx_physical_sector_guid = GUID(0xCDA348C7u, 0x445D,
    0x4471, 0x9C, 0xC9, 0xE9, 0x88, 0x52, 0x51, 0xC5, 0x56);
const struct vhdx_guid vhdx_parent_locator_guid = GUID(0xA8D35F2Du, 0xB30B,
    0x454D, 0xAB, 0xF7, 0xD3, 0xD8, 0x48, 0x34, 0xAB, 0x0C);

void vhdx_guid_format(const struct vhdx_guid *g, char out[37])
{
    const uint8_t *b = g->b;
    snprintf(out, 37, "%02X%02X%02X%02X-%02X%02X-%02X%02X-%02X%02X-"
             "%02X%02X%02X%02X%02X%02X", b[3], b[2], b[1], b[0], b[5], b[4],
             b[7], b[6], b[8], b[9], b[10], b[11], b[12], b[13], b[14],
             b[15]);
}

bool vhdx_guid_is_zero(const struct vhdx_guid *g)
{
    for (size_t i = 0; i < sizeof g->b; i++)
        if (g->b[i])
            return false;
    return true;
}

static struct vhdx_state *to_vhdx(struct image *img)
{
    return (struct vhdx_state *)img;
}

static int vhdx_probe(const uint8_t *buf, size_t len)
{
    return len >= 8 && memcmp(buf, "vhdxfile", 8) == 0 ? 100 : 0;
}

static void vhdx_free(struct vhdx_state *s)
{
    vhdx_write_free(s);
    img_close(s->parent);
    free(s->relative_path);
    free(s->volume_path);
    free(s->absolute_win32_path);
    if (s->fd >= 0)
        io_close(s->fd);
    free(s->bat);
    vhdx_overlay_free(s);
    free(s->img.path);
    free(s);
}

/* The ordering rules DISKSERVE_VHDX_BREAK names, and the crash point
 * DISKSERVE_VHDX_CRASH; -EINVAL for an unknown name. */
static int parse_test_switches(struct vhdx_state *s)
{
    static const struct {
        const char *name;
        unsigned bit;
    } rules[] = {
        { "apply-before-log-flush", VHDX_BREAK_APPLY_BEFORE_LOG_FLUSH },
        { "log-reuse", VHDX_BREAK_LOG_REUSE },
        { "bat-before-data", VHDX_BREAK_BAT_BEFORE_DATA },
    };
    const char *env = getenv("DISKSERVE_VHDX_BREAK");
    const char *crash = getenv("DISKSERVE_VHDX_CRASH");

    while (env && *env) {
        size_t n = strcspn(env, ","), i;
        for (i = 0; i < sizeof rules / sizeof *rules; i++)
            if (strlen(rules[i].name) == n &&
                strncmp(rules[i].name, env, n) == 0)
                break;
        if (i == sizeof rules / sizeof *rules) {
            img_log("vhdx: %s: DISKSERVE_VHDX_BREAK: unknown rule '%.*s'",
                    s->img.path, (int)(n < 64 ? n : 64), env);
            return -EINVAL;
        }
        s->breaks |= rules[i].bit;
        env += n + (env[n] == ',');
    }
    if (crash && *crash) {
        if (strcmp(crash, "after-log-flush") != 0) {
            img_log("vhdx: %s: DISKSERVE_VHDX_CRASH: unknown point '%s'",
                    s->img.path, crash);
            return -EINVAL;
        }
        s->crash_after_log = true;
    }
    if (s->breaks || s->crash_after_log)
        img_log("vhdx: %s: write order broken or crash point set on "
                "purpose: for tests only", s->img.path);
    return 0;
}

/* After a writable open has read and checked everything. */
static int open_writable(struct vhdx_state *s)
{
    int err;

    if (s->header.log_length < VHDX_MB) {
        /* Metadata changes go through the log: none, no writes. */
        img_log("vhdx: %s: header %d: LogLength %" PRIu32 ": no log to "
                "write through; export it read-only (-r)", s->img.path,
                s->current_header, s->header.log_length);
        return -EROFS;
    }
    if ((err = parse_test_switches(s)) || (err = vhdx_replay_into_file(s)))
        return err;
    return vhdx_write_init(s);
}

static int vhdx_open(const struct img_open_args *args, struct image **out)
{
    struct vhdx_state *s;
    struct statfs sfs;
    int err;

    s = calloc(1, sizeof *s);
    if (!s)
        return -ENOMEM;
    s->fd = -1;
    s->img.path = strdup(args->path);
    if (!s->img.path) {
        err = -ENOMEM;
        goto out_free;
    }
    s->fd = io_open(args->path, !args->read_only);
    if (s->fd < 0) {
        err = s->fd;
        s->fd = -1;
        if (!io_is_remote_name(args->path))   /* the backend said why */
            img_log("vhdx: %s: %s", args->path, strerror(-err));
        goto out_free;
    }
    off_t end = io_lseek(s->fd, 0, SEEK_END);
    if (end < 0) {
        err = -errno;
        img_log("vhdx: %s: cannot find the file size: %s", args->path,
                strerror(errno));
        goto out_free;
    }
    s->real_size = s->file_size = (uint64_t)end;

    /* The log may update the region table, metadata and BAT: it is
     * replayed (into memory) before any of them is read. */
    if ((err = vhdx_read_headers(s)) || (err = vhdx_replay_log(s)) ||
        (err = vhdx_read_regions(s)) ||
        (err = vhdx_read_metadata(s)) || (err = vhdx_load_bat(s)) ||
        (err = vhdx_open_parent(s, args)) ||
        (!args->read_only && (err = open_writable(s))))
        goto out_free;

    if (fstatfs(s->fd, &sfs) == 0 && sfs.f_type == TMPFS_MAGIC &&
        (!s->parent || s->parent->nowait_reads))
        s->img.nowait_reads = 1;
    s->img.ops = &vhdx_ops;
    s->img.size = s->disk_size;
    /* On tmpfs nobody holds the lock across slow I/O (header writes,
     * syncs and allocations cost a memory copy there), so the event loop
     * may write inline as it reads. */
    s->img.nowait_writes = s->writable && s->img.nowait_reads;
    s->img.map_stable = true;   /* blocks never move (see the top) */
    s->img.read_only = !s->writable;
    s->img.fast_zero = s->writable;
    s->img.multi_conn = true;
    s->img.has_depth = true;
    s->img.min_block = s->logical_sector_size;
    s->img.pref_block = s->physical_sector_size > 4096
                        ? s->physical_sector_size : 4096;
    *out = &s->img;
    return 0;

out_free:
    vhdx_free(s);
    return err;
}

static void vhdx_close(struct image *img)
{
    struct vhdx_state *s = to_vhdx(img);

    vhdx_write_close(s);
    vhdx_free(s);
}

/* Where guest offset off lies: its payload entry and the bytes left in
 * its block, capped at len. */
static uint64_t locate(const struct vhdx_state *s, uint64_t off,
                       uint64_t len, uint64_t *entry)
{
    uint64_t n = off >> s->block_shift;
    uint64_t left = s->block_size - (off & (s->block_size - 1));

    *entry = vhdx_payload_entry(s, n);
    return left < len ? left : len;
}

static unsigned state_of(uint64_t entry)
{
    return (unsigned)(entry & VHDX_BAT_STATE_MASK);
}

static bool is_present(uint64_t entry)
{
    return state_of(entry) == VHDX_PAYLOAD_FULLY_PRESENT;
}

static bool is_partial(uint64_t entry)
{
    return state_of(entry) == VHDX_PAYLOAD_PARTIALLY_PRESENT;
}

/* Whether a block in this state reads from the parent (see the top). */
static bool reads_parent(const struct vhdx_state *s, uint64_t entry)
{
    unsigned state = state_of(entry);
    return s->parent && (state == VHDX_PAYLOAD_NOT_PRESENT ||
                         state == VHDX_PAYLOAD_UNDEFINED);
}

static uint64_t host_offset(const struct vhdx_state *s, uint64_t entry,
                            uint64_t off)
{
    return (entry & VHDX_BAT_OFFSET_MASK) + (off & (s->block_size - 1));
}

/* Read guest bytes [off, off+len) of a present block from the file. */
static int read_here(struct vhdx_state *s, uint8_t *p, uint64_t len,
                     uint64_t off, uint64_t entry)
{
    uint64_t host = host_offset(s, entry, off);
    int err = vhdx_pread(s, p, len, host);

    if (err) {
        img_log("vhdx: %s: read %" PRIu64 " bytes at %" PRIu64 " (host 0x%"
                PRIx64 "): %s", s->img.path, len, off, host, strerror(-err));
        return err == -ENODATA ? -EIO : err;
    }
    return 0;
}

/* The parent has the child's size (checked at open). */
static int read_parent(struct vhdx_state *s, uint8_t *p, uint64_t len,
                       uint64_t off)
{
    return s->parent->ops->read(s->parent, p, len, off);
}

/* The sector bitmap bits of the sectors holding guest bytes [off, end)
 * of one PARTIALLY_PRESENT block. */
struct sector_bits {
    uint8_t *bits;
    uint64_t shift;             /* bit of the sector holding off */
    uint64_t first;             /* guest offset of that sector */
    uint32_t sector;            /* LogicalSectorSize */
};

static int load_bits(struct vhdx_state *s, uint64_t off, uint64_t end,
                     struct sector_bits *b)
{
    uint64_t n = off >> s->block_shift;
    uint64_t spb = s->block_size / s->logical_sector_size;
    uint64_t s0 = (off & (s->block_size - 1)) / s->logical_sector_size;
    uint64_t count = (end - off + (off % s->logical_sector_size) +
                      s->logical_sector_size - 1) / s->logical_sector_size;
    uint64_t bit0 = (n % s->chunk_ratio) * spb + s0;
    uint64_t byte0 = bit0 / 8, nbytes = (bit0 + count + 7) / 8 - byte0;
    uint64_t sb = vhdx_bitmap_entry(s, n) & VHDX_BAT_OFFSET_MASK;
    int err;

    b->bits = malloc(nbytes);
    if (!b->bits)
        return -ENOMEM;
    b->shift = bit0 - byte0 * 8;
    b->first = off - off % s->logical_sector_size;
    b->sector = s->logical_sector_size;
    if (s->writable)
        err = vhdx_sb_read(s, n / s->chunk_ratio, byte0, nbytes, b->bits);
    else
        err = vhdx_pread(s, b->bits, nbytes, sb + byte0);
    if (err) {
        img_log("vhdx: %s: reading the sector bitmap of block %" PRIu64
                " (host 0x%" PRIx64 "): %s", s->img.path, n, sb + byte0,
                strerror(-err));
        free(b->bits);
        b->bits = NULL;
        return err == -ENODATA ? -EIO : err;
    }
    return 0;
}

static bool bit_at(const struct sector_bits *b, uint64_t off)
{
    uint64_t k = b->shift + (off - b->first) / b->sector;
    return b->bits[k / 8] >> (k % 8) & 1;
}

/* The bytes from off (< end) whose sectors all have the bit *here has. */
static uint64_t bits_run(const struct sector_bits *b, uint64_t off,
                         uint64_t end, bool *here)
{
    uint64_t next = off - (off - b->first) % b->sector + b->sector;

    *here = bit_at(b, off);
    while (next < end && bit_at(b, next) == *here)
        next += b->sector;
    return (next < end ? next : end) - off;
}

static int read_partial(struct vhdx_state *s, uint8_t *p, uint64_t len,
                        uint64_t off, uint64_t entry)
{
    struct sector_bits b;
    uint64_t end = off + len;
    int err = load_bits(s, off, end, &b);

    while (!err && off < end) {
        bool here;
        uint64_t n = bits_run(&b, off, end, &here);
        err = here ? read_here(s, p, n, off, entry)
                   : read_parent(s, p, n, off);
        p += n;
        off += n;
    }
    free(b.bits);
    return err;
}

static int vhdx_read(struct image *img, void *buf, uint64_t len, uint64_t off)
{
    struct vhdx_state *s = to_vhdx(img);
    uint8_t *p = buf;
    int err = 0;

    while (len > 0) {
        uint64_t entry, n = locate(s, off, len, &entry);
        if (is_present(entry))
            err = read_here(s, p, n, off, entry);
        else if (is_partial(entry))
            err = read_partial(s, p, n, off, entry);
        else if (reads_parent(s, entry))
            err = read_parent(s, p, n, off);
        else
            memset(p, 0, n);
        if (err)
            return err;
        p += n;
        off += n;
        len -= n;
    }
    return 0;
}

/* 0, or 1 when e is full. */
static int add_extent(struct img_extents *e, uint64_t len, uint32_t flags,
                      uint32_t depth)
{
    return img_extents_add(e, len, flags, depth) ? 0 : 1;
}

/* Describe [off, off+len) from the parent, one level deeper.  0, 1 when
 * e is full, or -errno. */
static int status_parent(struct vhdx_state *s, uint64_t off, uint64_t len,
                         struct img_extents *e)
{
    struct image *b = s->parent;
    uint64_t end = off + len;

    while (off < end) {
        struct img_extent tmp[64];
        struct img_extents be = { tmp, 0, 64, off };
        int err = b->ops->block_status(b, end - off, off, &be);
        if (err)
            return err;
        uint64_t got = 0;
        for (size_t i = 0; i < be.n && got < end - off; i++) {
            uint64_t l = tmp[i].length < end - off - got ? tmp[i].length
                                                         : end - off - got;
            uint32_t depth = tmp[i].depth ? tmp[i].depth + 1 : 0;
            if (add_extent(e, l, tmp[i].flags, depth))
                return 1;
            got += l;
        }
        if (got == 0)
            return -EIO;    /* the parent described nothing */
        off += got;
    }
    return 0;
}

static int status_partial(struct vhdx_state *s, uint64_t off, uint64_t len,
                          struct img_extents *e)
{
    struct sector_bits b;
    uint64_t end = off + len;
    int err = load_bits(s, off, end, &b);

    while (!err && off < end) {
        bool here;
        uint64_t n = bits_run(&b, off, end, &here);
        err = here ? add_extent(e, n, 0, 1) : status_parent(s, off, n, e);
        off += n;
    }
    free(b.bits);
    return err;
}

static int vhdx_block_status(struct image *img, uint64_t len, uint64_t off,
                             struct img_extents *e)
{
    struct vhdx_state *s = to_vhdx(img);
    int err;

    while (len > 0) {
        uint64_t entry, n = locate(s, off, len, &entry);
        unsigned state = state_of(entry);
        if (is_present(entry)) {
            err = add_extent(e, n, 0, 1);
        } else if (is_partial(entry)) {
            err = status_partial(s, off, n, e);
        } else if (reads_parent(s, entry)) {
            /* One question to the parent for the whole stretch. */
            uint64_t more, next;
            while (n < len &&
                   (next = locate(s, off + n, len - n, &more), 1) &&
                   reads_parent(s, more))
                n += next;
            err = status_parent(s, off, n, e);
        } else {
            /* Zeros defined here (ZERO; UNMAPPED over a parent), or a
             * hole in a file without parent. */
            uint32_t depth = state == VHDX_PAYLOAD_ZERO ||
                             (s->parent && state == VHDX_PAYLOAD_UNMAPPED);
            err = add_extent(e, n, IMG_EXT_HOLE | IMG_EXT_ZERO, depth);
        }
        if (err < 0)
            return err;
        if (err)
            break;
        off += n;
        len -= n;
    }
    return 0;
}

static int vhdx_map_nowait(struct image *img, uint64_t len, uint64_t off,
                           struct img_map *m)
{
    struct vhdx_state *s = to_vhdx(img);
    uint64_t entry, n = locate(s, off, len, &entry);

    if (is_present(entry)) {
        if (!io_is_file(s->fd))
            return -EAGAIN;     /* only a file can be read on the loop */
        /* Replayed sectors live in memory, not in the file. */
        if (vhdx_overlay_touches(s, host_offset(s, entry, off), n))
            return -EAGAIN;
        m->kind = IMG_MAP_DATA;
        m->fd = s->fd;
        m->host_offset = host_offset(s, entry, off);
    } else if (is_partial(entry)) {
        return -EAGAIN;         /* the sector bitmap is on disk */
    } else if (reads_parent(s, entry)) {
        struct image *b = s->parent;
        if (!b->ops->map_nowait)
            return -EAGAIN;
        return b->ops->map_nowait(b, n, off, m);
    } else {
        m->kind = IMG_MAP_ZERO;
    }
    m->length = n;
    return 0;
}

static void vhdx_map_done(struct image *img)
{
    struct vhdx_state *s = to_vhdx(img);

    if (s->parent && s->parent->ops->map_done)
        s->parent->ops->map_done(s->parent);
}

static int vhdx_cache(struct image *img, uint64_t len, uint64_t off)
{
    struct vhdx_state *s = to_vhdx(img);

    while (len > 0) {
        uint64_t entry, n = locate(s, off, len, &entry);
        if (is_present(entry) || is_partial(entry))
            posix_fadvise(s->fd, (off_t)host_offset(s, entry, off),
                          (off_t)n, POSIX_FADV_WILLNEED);
        if ((is_partial(entry) || reads_parent(s, entry)) &&
            s->parent->ops->cache)
            s->parent->ops->cache(s->parent, n, off);
        off += n;
        len -= n;
    }
    return 0;
}

const struct img_ops vhdx_ops = {
    .name = "vhdx",
    .probe = vhdx_probe,
    .open = vhdx_open,
    .close = vhdx_close,
    .read = vhdx_read,
    .write = vhdx_write,
    .write_zeroes = vhdx_write_zeroes,
    .trim = vhdx_trim,
    .flush = vhdx_flush,
    .cache = vhdx_cache,
    .block_status = vhdx_block_status,
    .map_nowait = vhdx_map_nowait,
    .map_done = vhdx_map_done,
};
