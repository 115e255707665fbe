/* The VHDX region table ([MS-VHDX] 2.2.3): where the BAT and the
 * metadata region live.
 *
 * Two copies, at 192 KB and 256 KB, each 64 KB under one CRC-32C.  They
 * are only changed through the log, so both hold the same table; the
 * first valid copy is used and the file is refused when neither is
 * valid.  Every entry is checked: 1 MB alignment, inside the file, no
 * overlap with another region or the log, GUIDs unique, the BAT and
 * metadata regions present, an unknown region marked required refused.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "io.h"
#include "vhdx.h"

/* Read one copy; 1 valid, 0 not (*why says why), -errno on I/O error. */
static int read_table(struct vhdx_state *s, uint64_t off, uint8_t *buf,
                      const char **why)
{
    struct vhdx_region_header h;
    int err = vhdx_pread(s, buf, VHDX_REGION_SIZE, off);
    if (err == -ENODATA) {
        *why = "past end of file";
        return 0;
    }
    if (err)
        return err;
    memcpy(&h, buf, sizeof h);
    if (vhdx_le32(h.signature) != VHDX_REGION_SIGNATURE) {
        *why = "bad signature";
        return 0;
    }
    if (!vhdx_checksum_ok(buf, VHDX_REGION_SIZE,
                          offsetof(struct vhdx_region_header, checksum))) {
        *why = "bad checksum";
        return 0;
    }
    return 1;
}

static bool overlaps(const struct vhdx_extent *a, const struct vhdx_extent *b)
{
    return a->offset < b->offset + b->length &&
           b->offset < a->offset + a->length;
}

/* Decode and check the entries of a valid table. */
static int parse_table(struct vhdx_state *s, const uint8_t *buf, int copy)
{
    const char *path = s->img.path;
    struct vhdx_region_header h;
    struct vhdx_extent *ext;
    struct vhdx_guid *ids;
    bool have_bat = false, have_meta = false;
    int err = 0;

    memcpy(&h, buf, sizeof h);
    uint32_t count = vhdx_le32(h.entry_count);
    if (count > VHDX_REGION_MAX_ENTRIES) {
        img_log("vhdx: %s: region table %d: EntryCount %" PRIu32
                " exceeds %u", path, copy, count, VHDX_REGION_MAX_ENTRIES);
        return -EINVAL;
    }
    /* Regions plus the log, for the overlap check. */
    ext = calloc(count + 1, sizeof *ext);
    ids = calloc(count + 1, sizeof *ids);
    if (!ext || !ids) {
        err = -ENOMEM;
        goto out_free;
    }
    for (uint32_t i = 0; i < count; i++) {
        struct vhdx_region_entry e;
        char g[37];
        uint64_t end;

        memcpy(&e, buf + sizeof h + (size_t)i * sizeof e, sizeof e);
        uint64_t off = vhdx_le64(e.file_offset);
        uint32_t len = vhdx_le32(e.length);
        vhdx_guid_format(&e.guid, g);
        for (uint32_t j = 0; j < i; j++) {
            if (memcmp(&ids[j], &e.guid, sizeof e.guid) == 0) {
                img_log("vhdx: %s: region table %d: entry %" PRIu32
                        ": GUID %s appears twice", path, copy, i, g);
                err = -EINVAL;
                goto out_free;
            }
        }
        ids[i] = e.guid;
        bool is_bat = !memcmp(&e.guid, &vhdx_bat_guid, sizeof e.guid);
        bool is_meta = !memcmp(&e.guid, &vhdx_metadata_guid, sizeof e.guid);
        if (!is_bat && !is_meta && (vhdx_le32(e.required) & 1)) {
            img_log("vhdx: %s: region table %d: entry %" PRIu32 ": unknown "
                    "region %s is marked required", path, copy, i, g);
            err = -ENOTSUP;
            goto out_free;
        }
        if (off % VHDX_MB || len % VHDX_MB || off < VHDX_HEADER_SECTION) {
            img_log("vhdx: %s: region table %d: region %s: FileOffset 0x%"
                    PRIx64 " / Length %" PRIu32 " not 1 MB aligned or "
                    "inside the header section", path, copy, g, off, len);
            err = -EINVAL;
            goto out_free;
        }
        if (__builtin_add_overflow(off, (uint64_t)len, &end) ||
            end > s->file_size) {
            img_log("vhdx: %s: region table %d: region %s at 0x%" PRIx64
                    " (%" PRIu32 " bytes) outside the file (%" PRIu64
                    " bytes)", path, copy, g, off, len, s->file_size);
            err = -EINVAL;
            goto out_free;
        }
        ext[i].offset = off;
        ext[i].length = len;
        if (is_bat) {
            s->bat_region = ext[i];
            have_bat = true;
        } else if (is_meta) {
            s->metadata_region = ext[i];
            have_meta = true;
        }
    }
    if (!have_bat || !have_meta) {
        img_log("vhdx: %s: region table %d: no %s region", path, copy,
                have_bat ? "metadata" : "BAT");
        err = -EINVAL;
        goto out_free;
    }
    if (s->metadata_region.length == 0 || s->bat_region.length == 0) {
        img_log("vhdx: %s: region table %d: %s region has Length 0", path,
                copy, s->bat_region.length ? "metadata" : "BAT");
        err = -EINVAL;
        goto out_free;
    }
    ext[count].offset = s->header.log_offset;
    ext[count].length = s->header.log_length;
    for (uint32_t i = 0; i < count; i++) {
        for (uint32_t j = i + 1; j <= count; j++) {
            if (ext[i].length && ext[j].length &&
                overlaps(&ext[i], &ext[j])) {
                char g[37], other[64] = "the log";
                vhdx_guid_format(&ids[i], g);
                if (j < count) {
                    char g2[37];
                    vhdx_guid_format(&ids[j], g2);
                    snprintf(other, sizeof other, "region %s", g2);
                }
                img_log("vhdx: %s: region table %d: region %s at 0x%"
                        PRIx64 " overlaps %s at 0x%" PRIx64, path, copy, g,
                        ext[i].offset, other, ext[j].offset);
                err = -EINVAL;
                goto out_free;
            }
        }
    }

out_free:
    free(ext);
    free(ids);
    return err;
}

int vhdx_read_regions(struct vhdx_state *s)
{
    const char *why1 = "", *why2 = "";
    uint8_t *buf = malloc(VHDX_REGION_SIZE);
    int err, copy = 1;

    if (!buf)
        return -ENOMEM;
    int v = read_table(s, VHDX_REGION1_OFFSET, buf, &why1);
    if (v == 0) {
        copy = 2;
        v = read_table(s, VHDX_REGION2_OFFSET, buf, &why2);
    }
    if (v < 0) {
        err = v;
        img_log("vhdx: %s: reading the region table: %s", s->img.path,
                strerror(-err));
    } else if (v == 0) {
        img_log("vhdx: %s: no valid region table: copy 1 (at 192 KB): %s; "
                "copy 2 (at 256 KB): %s", s->img.path, why1, why2);
        err = -EINVAL;
    } else {
        err = parse_table(s, buf, copy);
    }
    free(buf);
    return err;
}
