/* The VHDX block allocation table ([MS-VHDX] 2.4, 2.5): geometry, load
 * and the check of every entry.
 *
 * Payload entries and sector bitmap entries are interleaved: after every
 * ChunkRatio payload entries comes the sector bitmap entry of that chunk,
 * so payload block n sits at index n + n / ChunkRatio.  The whole table
 * is loaded at open (as QEMU does: 8 bytes per block, 512 MiB for a 64 TB
 * disk of 1 MB blocks) and every entry checked there, so reads index it
 * without further checks: states valid for the file's type (sector
 * bitmap blocks and PARTIALLY_PRESENT only in differencing files, the
 * latter only where its chunk's sector bitmap block is present), and
 * present blocks inside the file, after the header section, overlapping
 * neither the log, a region nor each other.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#include "io.h"
#include "vhdx.h"

/* Chunk ratio, block counts and the BAT size the region must hold. */
static int compute_geometry(struct vhdx_state *s)
{
    uint64_t chunk = (uint64_t)VHDX_SECTORS_PER_BITMAP *
                     s->logical_sector_size;
    uint64_t bytes;

    /* block_size and logical_sector_size are checked powers of 2. */
    s->chunk_ratio = (uint32_t)(chunk / s->block_size);
    s->block_shift = (uint32_t)__builtin_ctz(s->block_size);
    s->payload_blocks = (s->disk_size + s->block_size - 1) >> s->block_shift;
    if (s->has_parent) {
        /* Every chunk ends with its sector bitmap entry (2.5). */
        uint64_t chunks = (s->payload_blocks + s->chunk_ratio - 1) /
                          s->chunk_ratio;
        s->bat_entries = chunks * ((uint64_t)s->chunk_ratio + 1);
    } else {
        s->bat_entries = s->payload_blocks == 0 ? 0 :
            s->payload_blocks + (s->payload_blocks - 1) / s->chunk_ratio;
    }
    if (__builtin_mul_overflow(s->bat_entries, 8, &bytes) ||
        bytes > s->bat_region.length) {
        img_log("vhdx: %s: BAT region Length %" PRIu64 " too small for %"
                PRIu64 " entries (VirtualDiskSize %" PRIu64 ", BlockSize %"
                PRIu32 ")", s->img.path, s->bat_region.length,
                s->bat_entries, s->disk_size, s->block_size);
        return -EINVAL;
    }
    return 0;
}

/* Mark MB units [off, off+len) used; false when one already was. */
static bool claim(uint8_t *used, uint64_t off, uint64_t len)
{
    bool ok = true;
    uint64_t last = (off + len + VHDX_MB - 1) / VHDX_MB;
    for (uint64_t u = off / VHDX_MB; u < last; u++) {
        if (used[u / 8] & (1u << (u % 8)))
            ok = false;
        used[u / 8] |= (uint8_t)(1u << (u % 8));
    }
    return ok;
}

/* Check sector bitmap entry i: NOT_PRESENT (no block of its chunk may
 * then be PARTIALLY_PRESENT, checked with those), or, in a differencing
 * file, PRESENT with its 1 MB inside the file and overlapping nothing. */
/* Check that present BAT entry i (what it points at: need bytes) has no
 * reserved bits set and lies inside the file, clear of the log, the
 * regions and every block placed before (used); 0 or -EINVAL, logged. */
static int place(struct vhdx_state *s, uint8_t *used, uint64_t i,
                 const char *what, uint64_t need)
{
    const char *path = s->img.path;
    uint64_t e = s->bat[i], off = e & VHDX_BAT_OFFSET_MASK, end;

    if (e & VHDX_BAT_RESERVED_MASK) {
        img_log("vhdx: %s: BAT entry %" PRIu64 ": reserved bits set "
                "(0x%016" PRIx64 ")", path, i, e);
        return -EINVAL;
    }
    if (off < VHDX_HEADER_SECTION ||
        __builtin_add_overflow(off, need, &end) || end > s->file_size) {
        img_log("vhdx: %s: BAT entry %" PRIu64 ": %s at 0x%" PRIx64
                " (%" PRIu64 " bytes) outside the file (%" PRIu64 " bytes)",
                path, i, what, off, need, s->file_size);
        return -EINVAL;
    }
    if (!claim(used, off, need)) {
        img_log("vhdx: %s: BAT entry %" PRIu64 ": %s at 0x%" PRIx64
                " overlaps the log, a region or another block", path, i,
                what, off);
        return -EINVAL;
    }
    return 0;
}

static int check_bitmap_entry(struct vhdx_state *s, uint64_t i,
                              uint8_t *used)
{
    const char *path = s->img.path;
    uint64_t e = s->bat[i];
    unsigned state = (unsigned)(e & VHDX_BAT_STATE_MASK);

    if (state == VHDX_SB_NOT_PRESENT)
        return 0;
    if (state != VHDX_SB_PRESENT || !s->has_parent) {
        img_log("vhdx: %s: BAT entry %" PRIu64 ": sector bitmap state %u "
                "(must be 0%s)", path, i, state,
                s->has_parent ? " or 6" : " in a file without parent");
        return -EINVAL;
    }
    return place(s, used, i, "sector bitmap block", VHDX_MB);
}

/* Check entry i (already host order) against the file layout. */
static int check_entry(struct vhdx_state *s, uint64_t i, uint8_t *used)
{
    const char *path = s->img.path;
    uint64_t e = s->bat[i];
    unsigned state = (unsigned)(e & VHDX_BAT_STATE_MASK);
    uint64_t n = i - i / ((uint64_t)s->chunk_ratio + 1);

    if (i % ((uint64_t)s->chunk_ratio + 1) == s->chunk_ratio)
        return check_bitmap_entry(s, i, used);
    switch (state) {
    case VHDX_PAYLOAD_NOT_PRESENT:
    case VHDX_PAYLOAD_UNDEFINED:
    case VHDX_PAYLOAD_ZERO:
    case VHDX_PAYLOAD_UNMAPPED:
        return 0;
    case VHDX_PAYLOAD_FULLY_PRESENT:
        break;
    case VHDX_PAYLOAD_PARTIALLY_PRESENT:
        if (!s->has_parent) {
            img_log("vhdx: %s: BAT entry %" PRIu64 ": PARTIALLY_PRESENT in "
                    "a file without parent", path, i);
            return -EINVAL;
        }
        if ((vhdx_bitmap_entry(s, n) & VHDX_BAT_STATE_MASK) !=
            VHDX_SB_PRESENT) {
            img_log("vhdx: %s: BAT entry %" PRIu64 ": PARTIALLY_PRESENT but "
                    "its chunk's sector bitmap block is not present", path,
                    i);
            return -EINVAL;
        }
        break;
    default:
        img_log("vhdx: %s: BAT entry %" PRIu64 ": reserved state %u", path,
                i, state);
        return -EINVAL;
    }
    /* Only the part of the last block that holds guest data must be in
     * the file: qemu-img sizes fixed files to the disk, not the block. */
    uint64_t need = s->disk_size - (n << s->block_shift);
    if (need > s->block_size)
        need = s->block_size;
    return place(s, used, i, "payload block", need);
}

int vhdx_load_bat(struct vhdx_state *s)
{
    uint8_t *used = NULL;
    int err;

    if ((err = compute_geometry(s)))
        return err;
    s->bat = malloc(s->bat_entries ? s->bat_entries * 8 : 8);
    if (!s->bat)
        return -ENOMEM;
    err = vhdx_pread(s, s->bat, s->bat_entries * 8,
                        s->bat_region.offset);
    if (err) {
        img_log("vhdx: %s: reading the BAT at 0x%" PRIx64 ": %s",
                s->img.path, s->bat_region.offset, strerror(-err));
        return err;
    }
    /* One bit per MB of file: the header section, log and regions are
     * taken first, then each present block. */
    uint64_t units = (s->file_size + VHDX_MB - 1) / VHDX_MB;
    used = calloc(units / 8 + 1, 1);
    if (!used)
        return -ENOMEM;
    claim(used, 0, VHDX_HEADER_SECTION);
    claim(used, s->header.log_offset, s->header.log_length);
    claim(used, s->bat_region.offset, s->bat_region.length);
    claim(used, s->metadata_region.offset, s->metadata_region.length);
    /* All in host order first: a payload entry's check looks ahead at
     * its chunk's sector bitmap entry. */
    for (uint64_t i = 0; i < s->bat_entries; i++)
        s->bat[i] = vhdx_le64(s->bat[i]);
    for (uint64_t i = 0; i < s->bat_entries; i++) {
        if ((err = check_entry(s, i, used)))
            break;
    }
    free(used);
    return err;
}
