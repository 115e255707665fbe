/* Writes to a differencing VHDX file's blocks that show the parent, and
 * the sector bitmap pages they change ([MS-VHDX] 2.5.1.1, 2.5.1.2).
 *
 * A block that reads the parent (NOT_PRESENT, UNDEFINED) gets a new place
 * at the end of the file and becomes PARTIALLY_PRESENT; the sectors a
 * write covers get their sector bitmap bits set, so they read from this
 * file and every other sector still reads the parent: nothing is copied
 * from the parent but the rest of a sector a write covers only in part.
 * The chunk's sector bitmap block (1 MB, all zeros: every sector absent)
 * is placed first when its entry is not present; the new block's bits
 * are cleared first, so bits left from before it was absent never come
 * back.  A PARTIALLY_PRESENT
 * block is written in place and its bits set.  A ZERO or UNMAPPED block
 * (which reads zeros, see vhdx.c) gets a new FULLY_PRESENT place, the
 * rest of which reads as zeros.
 *
 * Every such write holds the block's in-flight record (write.c) for its
 * whole length, so writers to one block take turns; the lock itself is
 * dropped for the data I/O.  Bitmap pages a write changed stay in
 * memory, are read from there (vhdx_sb_read), and go through the log
 * with the BAT sectors at the next commit (logwrite.c): the bits are
 * durable only after the data they describe.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#include "vhdx.h"

#define SB_PAGES_PER_BLOCK (VHDX_MB / 4096)

static uint64_t chunks(const struct vhdx_state *s)
{
    return (s->payload_blocks + s->chunk_ratio - 1) / s->chunk_ratio;
}

/* The page of chunk c's bitmap holding bitmap byte pg * 4096 (under the
 * lock); read from the file, or zeros when the bitmap block is absent. */
static int sb_page(struct vhdx_state *s, uint64_t c, uint64_t pg,
                   struct vhdx_sb_page **out)
{
    if (!s->sb_pages) {
        s->sb_pages = calloc(chunks(s), sizeof *s->sb_pages);
        if (!s->sb_pages)
            return -ENOMEM;
    }
    if (!s->sb_pages[c]) {
        s->sb_pages[c] = calloc(SB_PAGES_PER_BLOCK, sizeof **s->sb_pages);
        if (!s->sb_pages[c])
            return -ENOMEM;
    }
    struct vhdx_sb_page *p = s->sb_pages[c][pg];
    if (!p) {
        p = calloc(1, sizeof *p);
        if (!p)
            return -ENOMEM;
        uint64_t e = vhdx_bitmap_entry(s, c * s->chunk_ratio);
        if ((e & VHDX_BAT_STATE_MASK) == VHDX_SB_PRESENT) {
            int err = io_pread_full(s->fd, p->data, sizeof p->data,
                                    (e & VHDX_BAT_OFFSET_MASK) + pg * 4096);
            if (err) {
                free(p);
                return err == -ENODATA ? -EIO : err;
            }
        }
        s->sb_pages[c][pg] = p;
    }
    *out = p;
    return 0;
}

int vhdx_sb_read(struct vhdx_state *s, uint64_t c, uint64_t byte0,
                 uint64_t nbytes, uint8_t *out)
{
    int err = 0;

    pthread_mutex_lock(&s->lock);
    uint64_t e = vhdx_bitmap_entry(s, c * s->chunk_ratio);
    while (!err && nbytes > 0) {
        uint64_t pg = byte0 / 4096, in = byte0 % 4096;
        uint64_t n = 4096 - in < nbytes ? 4096 - in : nbytes;
        struct vhdx_sb_page *p = s->sb_pages && s->sb_pages[c]
                                 ? s->sb_pages[c][pg] : NULL;
        if (p)
            memcpy(out, p->data + in, n);
        else if ((e & VHDX_BAT_STATE_MASK) == VHDX_SB_PRESENT)
            err = io_pread_full(s->fd, out, n,
                                (e & VHDX_BAT_OFFSET_MASK) + byte0);
        else
            memset(out, 0, n);
        out += n;
        byte0 += n;
        nbytes -= n;
    }
    pthread_mutex_unlock(&s->lock);
    return err == -ENODATA ? -EIO : err;
}

/* List page pg of chunk c for the next commit (under the lock). */
static int list_dirty(struct vhdx_state *s, uint64_t c, uint64_t pg,
                      struct vhdx_sb_page *p)
{
    if (p->dirty)
        return 0;
    if (s->sb_dirty_count == s->sb_dirty_cap) {
        size_t cap = s->sb_dirty_cap ? 2 * s->sb_dirty_cap : 64;
        uint64_t *d = realloc(s->sb_dirty, cap * sizeof *d);
        if (!d)
            return -ENOMEM;
        s->sb_dirty = d;
        s->sb_dirty_cap = cap;
    }
    s->sb_dirty[s->sb_dirty_count++] = c * SB_PAGES_PER_BLOCK + pg;
    p->dirty = true;
    return 0;
}

/* Set (or clear) the bits of sectors [first, first+count) of block n
 * (under the lock) and list the pages changed for the next commit. */
static int change_bits(struct vhdx_state *s, uint64_t n, uint64_t first,
                       uint64_t count, bool set)
{
    uint64_t spb = s->block_size / s->logical_sector_size;
    uint64_t c = n / s->chunk_ratio;
    uint64_t bit = (n % s->chunk_ratio) * spb + first, end = bit + count;

    while (bit < end) {
        struct vhdx_sb_page *p;
        uint64_t pg = bit / 8 / 4096;
        int err = sb_page(s, c, pg, &p);
        if (err)
            return err;
        uint64_t page_end = (pg + 1) * 4096 * 8;
        for (; bit < end && bit < page_end; bit++) {
            uint8_t mask = (uint8_t)(1u << (bit % 8));
            if (set)
                p->data[(bit / 8) % 4096] |= mask;
            else
                p->data[(bit / 8) % 4096] &= (uint8_t)~mask;
        }
        if ((err = list_dirty(s, c, pg, p)))
            return err;
    }
    return 0;
}

uint32_t vhdx_sb_take_dirty(struct vhdx_state *s, uint32_t max,
                            uint64_t *off, uint64_t *id, uint8_t *data)
{
    uint32_t n = 0;

    while (n < max && s->sb_dirty_count > 0) {
        uint64_t pid = s->sb_dirty[--s->sb_dirty_count];
        uint64_t c = pid / SB_PAGES_PER_BLOCK, pg = pid % SB_PAGES_PER_BLOCK;
        struct vhdx_sb_page *p = s->sb_pages[c][pg];
        uint64_t e = vhdx_bitmap_entry(s, c * s->chunk_ratio);
        p->dirty = false;
        off[n] = (e & VHDX_BAT_OFFSET_MASK) + pg * 4096;
        id[n] = pid;
        memcpy(data + (size_t)n * 4096, p->data, 4096);
        n++;
    }
    return n;
}

void vhdx_sb_untake(struct vhdx_state *s, uint64_t pid)
{
    struct vhdx_sb_page *p = s->sb_pages[pid / SB_PAGES_PER_BLOCK]
                                        [pid % SB_PAGES_PER_BLOCK];

    /* Room is there: the page was on the list before it was taken. */
    if (!p->dirty) {
        s->sb_dirty[s->sb_dirty_count++] = pid;
        p->dirty = true;
    }
}

void vhdx_sb_free(struct vhdx_state *s)
{
    if (s->sb_pages) {
        for (uint64_t c = 0; c < chunks(s); c++) {
            if (!s->sb_pages[c])
                continue;
            for (size_t i = 0; i < SB_PAGES_PER_BLOCK; i++)
                free(s->sb_pages[c][i]);
            free(s->sb_pages[c]);
        }
    }
    free(s->sb_pages);
    free(s->sb_dirty);
}

/* The sectors of [off, off+len) in a buffer of whole sectors from *first
 * (guest offset), the partial sectors at either end completed with what
 * the block reads now; zeros for the data when p is NULL. */
static int sector_buffer(struct vhdx_state *s, const uint8_t *p,
                         uint64_t len, uint64_t off, uint8_t **out,
                         uint64_t *first, uint64_t *total)
{
    uint32_t sec = s->logical_sector_size;
    uint64_t a = off - off % sec, b = (off + len + sec - 1) / sec * sec;
    uint8_t *buf = malloc(b - a);
    int err = 0;

    if (!buf)
        return -ENOMEM;
    if (a < off)
        err = s->img.ops->read(&s->img, buf, sec, a);
    /* The last sector, unless it is the first one, read just above. */
    if (!err && b > off + len && !(a < off && b - sec == a))
        err = s->img.ops->read(&s->img, buf + (b - sec - a), sec, b - sec);
    if (err) {
        free(buf);
        return err;
    }
    if (p)
        memcpy(buf + (off - a), p, len);
    else
        memset(buf + (off - a), 0, len);
    *out = buf;
    *first = a;
    *total = b - a;
    return 0;
}

int vhdx_diff_write_block(struct vhdx_state *s, const uint8_t *p,
                          uint64_t len, uint64_t off, uint64_t n)
{
    uint64_t start = n << s->block_shift, host, sb_host, entry;
    struct vhdx_alloc rec;
    uint8_t *buf = NULL;
    uint64_t first = 0, total = 0;
    int err;

    pthread_mutex_lock(&s->lock);
    vhdx_wait_block(s, n);
    entry = vhdx_payload_entry(s, n);
    unsigned state = (unsigned)(entry & VHDX_BAT_STATE_MASK);
    vhdx_alloc_add(s, &rec, n);
    bool fresh = state != VHDX_PAYLOAD_FULLY_PRESENT &&
                 state != VHDX_PAYLOAD_PARTIALLY_PRESENT;
    bool zeros = state == VHDX_PAYLOAD_ZERO ||
                 state == VHDX_PAYLOAD_UNMAPPED;
    err = 0;
    if (fresh && !zeros &&
        (vhdx_bitmap_entry(s, n) & VHDX_BAT_STATE_MASK) != VHDX_SB_PRESENT) {
        err = vhdx_grow(s, VHDX_MB, &sb_host);
        if (!err)
            vhdx_set_entry(s, vhdx_bitmap_index(s, n),
                           sb_host | VHDX_SB_PRESENT);
    }
    if (!err && fresh)
        err = vhdx_grow(s, s->block_size, &host);
    else
        host = entry & VHDX_BAT_OFFSET_MASK;
    pthread_mutex_unlock(&s->lock);

    if (!err && (state == VHDX_PAYLOAD_FULLY_PRESENT || zeros)) {
        /* Every sector reads this file (or zeros): no bits. */
        if (p)
            err = vhdx_write_at(s, p, len, host + (off - start));
        else if (!zeros)
            err = sector_buffer(s, NULL, len, off, &buf, &first, &total);
        if (!p && !zeros && !err)
            err = vhdx_write_at(s, buf, total, host + (first - start));
    } else if (!err) {
        err = sector_buffer(s, p, len, off, &buf, &first, &total);
        if (!err)
            err = vhdx_write_at(s, buf, total, host + (first - start));
    }
    free(buf);

    pthread_mutex_lock(&s->lock);
    /* A block new here starts with every bit clear: bits a block had
     * before it was last absent must not come back. */
    if (!err && fresh && !zeros)
        err = change_bits(s, n, 0, s->block_size / s->logical_sector_size,
                          false);
    if (!err && state != VHDX_PAYLOAD_FULLY_PRESENT && !zeros)
        err = change_bits(s, n, (first - start) / s->logical_sector_size,
                          total / s->logical_sector_size, true);
    if (!err && fresh)
        vhdx_set_entry(s, vhdx_payload_index(s, n), host |
                       (zeros ? VHDX_PAYLOAD_FULLY_PRESENT
                              : VHDX_PAYLOAD_PARTIALLY_PRESENT));
    vhdx_alloc_remove(s, &rec);
    pthread_mutex_unlock(&s->lock);
    return err;
}
