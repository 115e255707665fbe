/* The VHDX metadata region ([MS-VHDX] 2.6): the table and the known
 * items (file parameters, virtual disk size, virtual disk ID / page 83
 * data, logical and physical sector size, parent locator).
 *
 * Every entry's offset and length are checked against the region before
 * an item is read; an unknown item marked required refuses the file, a
 * known required one that is missing too.  A differencing file
 * (HasParent) must have a parent locator, parsed in parent.c.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#include "io.h"
#include "vhdx.h"

enum {
    ITEM_FILE_PARAM,
    ITEM_DISK_SIZE,
    ITEM_PAGE83,
    ITEM_LOGICAL,
    ITEM_PHYSICAL,
    ITEM_PARENT,
    N_ITEMS
};

static const struct {
    const struct vhdx_guid *guid;
    const char *name;
    uint32_t size;              /* bytes the item must hold */
} items[N_ITEMS] = {
    [ITEM_FILE_PARAM] = { &vhdx_file_param_guid, "File Parameters", 8 },
    [ITEM_DISK_SIZE] = { &vhdx_disk_size_guid, "Virtual Disk Size", 8 },
    [ITEM_PAGE83] = { &vhdx_page83_guid, "Virtual Disk ID", 16 },
    [ITEM_LOGICAL] = { &vhdx_logical_sector_guid, "Logical Sector Size", 4 },
    [ITEM_PHYSICAL] = { &vhdx_physical_sector_guid,
                        "Physical Sector Size", 4 },
    [ITEM_PARENT] = { &vhdx_parent_locator_guid, "Parent Locator", 20 },
};

/* Read item i's first items[i].size bytes (its entry already checked). */
static int read_item(struct vhdx_state *s, int i, uint32_t off, void *out)
{
    int err = vhdx_pread(s, out, items[i].size,
                            s->metadata_region.offset + off);
    if (err)
        img_log("vhdx: %s: metadata item %s at region offset 0x%" PRIx32
                ": %s", s->img.path, items[i].name, off, strerror(-err));
    return err;
}

/* Check one entry's placement; the item index or -1 when unknown. */
static int check_entry(struct vhdx_state *s, uint32_t n,
                       const struct vhdx_metadata_entry *e)
{
    const char *path = s->img.path;
    uint32_t off = vhdx_le32(e->offset), len = vhdx_le32(e->length);
    char g[37];
    uint64_t end = (uint64_t)off + len;

    vhdx_guid_format(&e->item_id, g);
    if (len == 0 ? off != 0
                 : off < VHDX_METADATA_TABLE_SIZE || len > VHDX_MB ||
                   end > s->metadata_region.length) {
        img_log("vhdx: %s: metadata entry %" PRIu32 " (%s): Offset 0x%"
                PRIx32 " Length %" PRIu32 " outside the metadata region (%"
                PRIu64 " bytes)", path, n, g, off, len,
                s->metadata_region.length);
        return -EINVAL;
    }
    if (vhdx_le32(e->flags) & VHDX_META_IS_USER)
        return N_ITEMS;         /* user metadata: not ours to read */
    for (int i = 0; i < N_ITEMS; i++) {
        if (memcmp(&e->item_id, items[i].guid, sizeof e->item_id))
            continue;
        if (len < items[i].size) {
            img_log("vhdx: %s: metadata item %s: Length %" PRIu32
                    " too small (needs %" PRIu32 ")", path, items[i].name,
                    len, items[i].size);
            return -EINVAL;
        }
        return i;
    }
    if (vhdx_le32(e->flags) & VHDX_META_IS_REQUIRED) {
        img_log("vhdx: %s: metadata entry %" PRIu32 ": unknown item %s is "
                "marked required", path, n, g);
        return -ENOTSUP;
    }
    return N_ITEMS;
}

static bool is_pow2(uint64_t v)
{
    return v && !(v & (v - 1));
}

/* Decode and check the known items found in the table. */
static int decode_items(struct vhdx_state *s, const uint32_t *where,
                        const uint32_t *lens, const bool *found)
{
    const char *path = s->img.path;
    struct vhdx_file_parameters fp;
    uint64_t size;
    uint32_t v;
    int err;

    for (int i = 0; i < ITEM_PARENT; i++) {
        if (!found[i]) {
            img_log("vhdx: %s: metadata: required item %s missing", path,
                    items[i].name);
            return -EINVAL;
        }
    }
    if ((err = read_item(s, ITEM_FILE_PARAM, where[ITEM_FILE_PARAM], &fp)))
        return err;
    s->block_size = vhdx_le32(fp.block_size);
    s->param_flags = vhdx_le32(fp.flags);
    if (!is_pow2(s->block_size) || s->block_size < VHDX_MB ||
        s->block_size > 256u * VHDX_MB) {
        img_log("vhdx: %s: metadata: BlockSize %" PRIu32 " is not a power "
                "of 2 between 1 MB and 256 MB", path, s->block_size);
        return -EINVAL;
    }
    s->has_parent = s->param_flags & VHDX_PARAM_HAS_PARENT;
    if (s->has_parent) {
        if (!found[ITEM_PARENT]) {
            img_log("vhdx: %s: metadata: HasParent is set but the Parent "
                    "Locator item is missing", path);
            return -EINVAL;
        }
        err = vhdx_read_parent_locator(s, where[ITEM_PARENT],
                                       lens[ITEM_PARENT]);
        if (err)
            return err;
    }

    if ((err = read_item(s, ITEM_LOGICAL, where[ITEM_LOGICAL], &v)))
        return err;
    s->logical_sector_size = vhdx_le32(v);
    if (s->logical_sector_size != 512 && s->logical_sector_size != 4096) {
        img_log("vhdx: %s: metadata: LogicalSectorSize %" PRIu32 " is not "
                "512 or 4096", path, s->logical_sector_size);
        return -EINVAL;
    }
    if ((err = read_item(s, ITEM_PHYSICAL, where[ITEM_PHYSICAL], &v)))
        return err;
    s->physical_sector_size = vhdx_le32(v);
    if (s->physical_sector_size != 512 && s->physical_sector_size != 4096) {
        img_log("vhdx: %s: metadata: PhysicalSectorSize %" PRIu32 " is not "
                "512 or 4096", path, s->physical_sector_size);
        return -EINVAL;
    }
    if ((err = read_item(s, ITEM_DISK_SIZE, where[ITEM_DISK_SIZE], &size)))
        return err;
    s->disk_size = vhdx_le64(size);
    if (s->disk_size > VHDX_MAX_DISK_SIZE) {
        img_log("vhdx: %s: metadata: VirtualDiskSize %" PRIu64 " exceeds "
                "64 TB", path, s->disk_size);
        return -EINVAL;
    }
    if (s->disk_size % s->logical_sector_size) {
        img_log("vhdx: %s: metadata: VirtualDiskSize %" PRIu64 " is not a "
                "multiple of LogicalSectorSize %" PRIu32, path, s->disk_size,
                s->logical_sector_size);
        return -EINVAL;
    }
    return read_item(s, ITEM_PAGE83, where[ITEM_PAGE83], &s->page83);
}

int vhdx_read_metadata(struct vhdx_state *s)
{
    const char *path = s->img.path;
    struct vhdx_metadata_header h;
    uint32_t where[N_ITEMS] = { 0 }, lens[N_ITEMS] = { 0 };
    bool found[N_ITEMS] = { false };
    uint8_t *table;
    int err;

    if (s->metadata_region.length < VHDX_METADATA_TABLE_SIZE) {
        img_log("vhdx: %s: metadata region Length %" PRIu64 " smaller than "
                "its 64 KB table", path, s->metadata_region.length);
        return -EINVAL;
    }
    table = malloc(VHDX_METADATA_TABLE_SIZE);
    if (!table)
        return -ENOMEM;
    err = vhdx_pread(s, table, VHDX_METADATA_TABLE_SIZE,
                        s->metadata_region.offset);
    if (err) {
        img_log("vhdx: %s: reading the metadata table at 0x%" PRIx64 ": %s",
                path, s->metadata_region.offset, strerror(-err));
        goto out_free;
    }
    memcpy(&h, table, sizeof h);
    if (vhdx_le64(h.signature) != VHDX_METADATA_SIGNATURE) {
        img_log("vhdx: %s: metadata table at 0x%" PRIx64 ": signature is "
                "not \"metadata\"", path, s->metadata_region.offset);
        err = -EINVAL;
        goto out_free;
    }
    uint16_t count = vhdx_le16(h.entry_count);
    if (count > VHDX_METADATA_MAX_ENTRIES) {
        img_log("vhdx: %s: metadata table: EntryCount %u exceeds %u", path,
                count, VHDX_METADATA_MAX_ENTRIES);
        err = -EINVAL;
        goto out_free;
    }
    for (uint32_t n = 0; n < count; n++) {
        struct vhdx_metadata_entry e;
        memcpy(&e, table + sizeof h + (size_t)n * sizeof e, sizeof e);
        int i = check_entry(s, n, &e);
        if (i < 0) {
            err = i;
            goto out_free;
        }
        if (i == N_ITEMS)
            continue;
        if (found[i]) {
            img_log("vhdx: %s: metadata: item %s appears twice", path,
                    items[i].name);
            err = -EINVAL;
            goto out_free;
        }
        found[i] = true;
        where[i] = vhdx_le32(e.offset);
        lens[i] = vhdx_le32(e.length);
    }
    err = decode_items(s, where, lens, found);

out_free:
    free(table);
    return err;
}
