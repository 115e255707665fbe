/* The VHDX write side: writes, zero writes, trims and flushes on fixed
 * and dynamic files, and the parts differencing files share
 * (diffwrite.c has their blocks that show the parent).
 *
 * A write into a FULLY_PRESENT block goes to its place in the file with
 * no lock held.  A write into any other block gives the block a new
 * place: under the lock the block is registered as being allocated (a
 * vhdx_alloc record), the next 1 MB-aligned offset at the end of the file
 * is taken and the file extended over it (ftruncate: the new block reads
 * as zeros without writing them); the data is written with the lock
 * dropped; then, under the lock again, the BAT entry becomes
 * FULLY_PRESENT in memory, its BAT sector is marked dirty for the next
 * commit (logwrite.c), and the record goes.  A second writer to a block
 * being allocated waits on the condition variable and then writes in
 * place, so a block is never allocated twice and no write is lost;
 * writers to different blocks run in parallel.
 *
 * Zero writes and trims: a block wholly covered becomes ZERO (offset 0:
 * its old place is released with a hole punch and never reused) when
 * the request may deallocate (trims, and zero writes with IMG_MAY_TRIM)
 * or the block holds no data anyway; trims read back as zeros, which
 * the crash tests rely on.  Fixed files (LeaveBlocksAllocated) keep their
 * blocks.  Partial ranges of present blocks are zeroed in place with
 * fallocate (zero range, else punch hole), or with written zeros unless
 * IMG_FAST_ZERO; partial ranges of blocks without data need nothing.
 * Partial ranges of differencing blocks that show the parent need zeros
 * written: IMG_FAST_ZERO is then refused (-ENOTSUP) before any block of
 * the request is changed.
 *
 * Before the first change of an open the headers get a new
 * DataWriteGuid and FileWriteGuid (written twice, the spec's way).
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#include "vhdx.h"

static struct vhdx_state *to_vhdx(struct image *img)
{
    return (struct vhdx_state *)img;
}

static unsigned state_of(uint64_t entry)
{
    return (unsigned)(entry & VHDX_BAT_STATE_MASK);
}

int vhdx_write_init(struct vhdx_state *s)
{
    uint64_t sectors = (s->bat_entries * 8 + VHDX_LOG_SECTOR - 1) /
                       VHDX_LOG_SECTOR;

    s->dirty = calloc(sectors / 8 + 1, 1);
    if (!s->dirty)
        return -ENOMEM;
    pthread_mutex_init(&s->lock, NULL);
    pthread_cond_init(&s->cond, NULL);
    s->writable = true;
    s->leave_allocated = s->param_flags & VHDX_PARAM_LEAVE_BLOCKS_ALLOCATED;
    s->disk_file_size = s->real_size;
    s->file_end = (s->real_size + VHDX_MB - 1) / VHDX_MB * VHDX_MB;
    s->log_next_seq = 1;
    vhdx_guid_generate(&s->session_log_guid);
    return 0;
}

void vhdx_write_free(struct vhdx_state *s)
{
    if (!s->writable)
        return;
    pthread_mutex_destroy(&s->lock);
    pthread_cond_destroy(&s->cond);
    free(s->dirty);
    vhdx_sb_free(s);
}

int vhdx_write_close(struct vhdx_state *s)
{
    int err;

    if (!s->writable || !s->data_guid_new)
        return 0;
    err = vhdx_commit(s, IO_TAG_FLUSH);
    if (!err && s->log_active) {
        /* Everything applied is durable after one more sync: the log is
         * no longer needed. */
        err = io_sync(s->fd, IO_TAG_LOG);
        if (!err) {
            memset(&s->header.log_guid, 0, sizeof s->header.log_guid);
            err = vhdx_write_headers(s);
        }
    }
    if (err)
        img_log("vhdx: %s: closing: %s; the log will be replayed at the "
                "next open", s->img.path, strerror(-err));
    return err;
}

/* New FileWriteGuid and DataWriteGuid before the first change (once). */
static int start_changes(struct vhdx_state *s)
{
    int err = 0;

    if (__atomic_load_n(&s->data_guid_new, __ATOMIC_ACQUIRE))
        return __atomic_load_n(&s->failed, __ATOMIC_ACQUIRE) ? -EIO : 0;
    pthread_mutex_lock(&s->lock);
    if (!s->data_guid_new) {
        vhdx_guid_generate(&s->header.file_write_guid);
        vhdx_guid_generate(&s->header.data_write_guid);
        err = vhdx_write_headers(s);
        if (!err)
            __atomic_store_n(&s->data_guid_new, true, __ATOMIC_RELEASE);
    }
    pthread_mutex_unlock(&s->lock);
    return err;
}

static struct vhdx_alloc *find_alloc(const struct vhdx_state *s,
                                     uint64_t block)
{
    for (struct vhdx_alloc *a = s->allocs; a; a = a->next)
        if (a->block == block)
            return a;
    return NULL;
}

void vhdx_alloc_add(struct vhdx_state *s, struct vhdx_alloc *r, uint64_t n)
{
    r->block = n;
    r->next = s->allocs;
    s->allocs = r;
}

void vhdx_alloc_remove(struct vhdx_state *s, struct vhdx_alloc *r)
{
    for (struct vhdx_alloc **p = &s->allocs; *p; p = &(*p)->next)
        if (*p == r) {
            *p = r->next;
            break;
        }
    pthread_cond_broadcast(&s->cond);
}

void vhdx_wait_block(struct vhdx_state *s, uint64_t n)
{
    while (find_alloc(s, n))
        pthread_cond_wait(&s->cond, &s->lock);
}

void vhdx_set_entry(struct vhdx_state *s, uint64_t i, uint64_t entry)
{
    __atomic_store_n(&s->bat[i], entry, __ATOMIC_RELEASE);
    vhdx_mark_dirty(s, i);
}

int vhdx_grow(struct vhdx_state *s, uint64_t len, uint64_t *host)
{
    uint64_t end = s->file_end + len;
    int err;

    if (end > s->disk_file_size) {
        err = io_truncate(s->fd, end, IO_TAG_ALLOC);
        if (err) {
            img_log("vhdx: %s: growing the file to %" PRIu64 " bytes: %s",
                    s->img.path, end, strerror(-err));
            return err;
        }
        s->disk_file_size = end;
    }
    *host = s->file_end;
    s->file_end = end;
    return 0;
}

int vhdx_write_at(struct vhdx_state *s, const uint8_t *p, uint64_t len,
                  uint64_t host)
{
    int err = io_pwrite_full(s->fd, p, len, host);

    if (err)
        img_log("vhdx: %s: write %" PRIu64 " bytes at host 0x%" PRIx64
                ": %s", s->img.path, len, host, strerror(-err));
    return err;
}

/* Write [off, off+len) of one block at its place in the file. */
static int write_in_place(struct vhdx_state *s, const uint8_t *p,
                          uint64_t len, uint64_t off, uint64_t entry)
{
    return vhdx_write_at(s, p, len, (entry & VHDX_BAT_OFFSET_MASK) +
                                    (off & (s->block_size - 1)));
}

/* Give block n a new place and write [off, off+len) of it there; the
 * caller holds the lock, which is dropped around the data write. */
static int allocate_and_write(struct vhdx_state *s, const uint8_t *p,
                              uint64_t len, uint64_t off, uint64_t n)
{
    struct vhdx_alloc rec;
    uint64_t host;
    int err = vhdx_grow(s, s->block_size, &host);

    if (err)
        return err;
    vhdx_alloc_add(s, &rec, n);
    pthread_mutex_unlock(&s->lock);
    err = write_in_place(s, p, len, off, host);
    pthread_mutex_lock(&s->lock);
    if (!err)
        vhdx_set_entry(s, vhdx_payload_index(s, n),
                       host | VHDX_PAYLOAD_FULLY_PRESENT);
    vhdx_alloc_remove(s, &rec);
    return err;
}

/* Write [off, off+len), inside block n. */
static int write_block(struct vhdx_state *s, const uint8_t *p, uint64_t len,
                       uint64_t off, uint64_t n)
{
    uint64_t entry = vhdx_payload_entry(s, n);
    int err;

    if (state_of(entry) == VHDX_PAYLOAD_FULLY_PRESENT)
        return write_in_place(s, p, len, off, entry);
    if (s->parent)
        return vhdx_diff_write_block(s, p, len, off, n);
    pthread_mutex_lock(&s->lock);
    vhdx_wait_block(s, n);
    entry = vhdx_payload_entry(s, n);
    if (state_of(entry) == VHDX_PAYLOAD_FULLY_PRESENT) {
        pthread_mutex_unlock(&s->lock);
        return write_in_place(s, p, len, off, entry);
    }
    err = allocate_and_write(s, p, len, off, n);
    pthread_mutex_unlock(&s->lock);
    return err;
}

/* The bytes of block-relative request [off, off+len) in off's block. */
static uint64_t chunk(const struct vhdx_state *s, uint64_t off, uint64_t len)
{
    uint64_t left = s->block_size - (off & (s->block_size - 1));
    return left < len ? left : len;
}

int vhdx_write(struct image *img, const void *buf, uint64_t len,
               uint64_t off, unsigned flags)
{
    struct vhdx_state *s = to_vhdx(img);
    const uint8_t *p = buf;
    int err = start_changes(s);

    while (!err && len > 0) {
        uint64_t n = chunk(s, off, len);
        err = write_block(s, p, n, off, off >> s->block_shift);
        p += n;
        off += n;
        len -= n;
    }
    if (!err && (flags & IMG_FUA))
        err = vhdx_commit(s, IO_TAG_FLUSH);
    return err;
}

/* Zero [host, host+len) of the file in place. */
static int zero_in_place(struct vhdx_state *s, uint64_t host, uint64_t len,
                         unsigned flags)
{
    int err = io_fallocate(s->fd, FALLOC_FL_ZERO_RANGE | FALLOC_FL_KEEP_SIZE,
                           host, len, IO_TAG_DATA);
    if (err == -EOPNOTSUPP || err == -ENOSYS || err == -EINVAL)
        err = io_fallocate(s->fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE,
                           host, len, IO_TAG_DATA);
    if (err == -EOPNOTSUPP || err == -ENOSYS || err == -EINVAL) {
        if (flags & IMG_FAST_ZERO)
            return -ENOTSUP;
        err = io_write_zeroes(s->fd, len, host);
    }
    if (err && err != -ENOTSUP)
        img_log("vhdx: %s: zeroing %" PRIu64 " bytes at host 0x%" PRIx64
                ": %s", s->img.path, len, host, strerror(-err));
    return err;
}

/* How zeroing part of a block is done. */
enum zero_way {
    ZERO_NOTHING,               /* the block reads zeros already */
    ZERO_ENTRY,                 /* the entry becomes ZERO */
    ZERO_IN_PLACE,              /* fallocate on its place in the file */
    ZERO_WRITTEN,               /* zeros written over the parent's data */
};

/* How zeroing [off, off+len) of block n is done while its entry is
 * entry (see the top). */
static enum zero_way zero_way(const struct vhdx_state *s, uint64_t len,
                              uint64_t off, uint64_t n, uint64_t entry,
                              unsigned flags)
{
    uint64_t start = n << s->block_shift;
    uint64_t bend = start + s->block_size;
    bool whole = off == start && off + len >= (bend < s->disk_size
                                               ? bend : s->disk_size);
    unsigned state = state_of(entry);
    bool present = state == VHDX_PAYLOAD_FULLY_PRESENT;

    if (whole && !s->leave_allocated && (!present || (flags & IMG_MAY_TRIM)))
        return ZERO_ENTRY;
    if (present)
        return ZERO_IN_PLACE;
    if (s->parent && state != VHDX_PAYLOAD_ZERO &&
        state != VHDX_PAYLOAD_UNMAPPED)
        return ZERO_WRITTEN;    /* the parent shows through */
    return ZERO_NOTHING;
}

/* Zero [off, off+len), inside block n. */
static int zero_block(struct vhdx_state *s, uint64_t len, uint64_t off,
                      uint64_t n, unsigned flags)
{
    uint64_t start = n << s->block_shift;
    uint64_t entry;
    int err = 0;

    pthread_mutex_lock(&s->lock);
    vhdx_wait_block(s, n);
    entry = vhdx_payload_entry(s, n);
    bool present = state_of(entry) == VHDX_PAYLOAD_FULLY_PRESENT;
    enum zero_way way = zero_way(s, len, off, n, entry, flags);
    if (way == ZERO_ENTRY && state_of(entry) != VHDX_PAYLOAD_ZERO)
        vhdx_set_entry(s, vhdx_payload_index(s, n), VHDX_PAYLOAD_ZERO);
    pthread_mutex_unlock(&s->lock);
    switch (way) {
    case ZERO_ENTRY:
        /* The old place is never handed out again: release its space.
         * Until the ZERO entry is durable the old entry may come back
         * after a crash, and reads the zeros written here (a lost write
         * of zeros, or a hole: both zeros). */
        if (present)
            err = zero_in_place(s, entry & VHDX_BAT_OFFSET_MASK,
                                s->block_size, flags & ~IMG_FAST_ZERO);
        break;
    case ZERO_IN_PLACE:
        err = zero_in_place(s, (entry & VHDX_BAT_OFFSET_MASK) +
                            (off - start), len, flags);
        break;
    case ZERO_WRITTEN:
        err = (flags & IMG_FAST_ZERO) ? -ENOTSUP
              : vhdx_diff_write_block(s, NULL, len, off, n);
        break;
    case ZERO_NOTHING:
        break;
    }
    return err;
}

/* Whether zeroing [off, off+len) writes zeros over the parent anywhere,
 * which FAST_ZERO refuses.  Blocks only move away from needing that
 * (a block showing the parent gets data or becomes ZERO, never the
 * reverse), so a range found free of it stays so while it is zeroed. */
static bool zeroing_writes_data(const struct vhdx_state *s, uint64_t len,
                                uint64_t off, unsigned flags)
{
    while (len > 0) {
        uint64_t n = chunk(s, off, len), b = off >> s->block_shift;
        if (zero_way(s, n, off, b, vhdx_payload_entry(s, b), flags) ==
            ZERO_WRITTEN)
            return true;
        off += n;
        len -= n;
    }
    return false;
}

int vhdx_write_zeroes(struct image *img, uint64_t len, uint64_t off,
                      unsigned flags)
{
    struct vhdx_state *s = to_vhdx(img);
    int err;

    /* A refused fast zero changes nothing: refused before any block is
     * zeroed, not after the first blocks were. */
    if ((flags & IMG_FAST_ZERO) && zeroing_writes_data(s, len, off, flags))
        return -ENOTSUP;
    err = start_changes(s);
    while (!err && len > 0) {
        uint64_t n = chunk(s, off, len);
        err = zero_block(s, n, off, off >> s->block_shift, flags);
        off += n;
        len -= n;
    }
    if (!err && (flags & IMG_FUA))
        err = vhdx_commit(s, IO_TAG_FLUSH);
    return err;
}

int vhdx_trim(struct image *img, uint64_t len, uint64_t off, unsigned flags)
{
    return vhdx_write_zeroes(img, len, off,
                             (flags & IMG_FUA) | IMG_MAY_TRIM);
}

int vhdx_flush(struct image *img)
{
    struct vhdx_state *s = to_vhdx(img);

    if (__atomic_load_n(&s->failed, __ATOMIC_ACQUIRE))
        return -EIO;
    return vhdx_commit(s, IO_TAG_FLUSH);
}
