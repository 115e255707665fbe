/* VHDX file creation ([MS-VHDX] 2): a new, empty fixed or dynamic file,
 * for `diskserve-img create -f vhdx` and for tests.
 *
 * Layout, the one qemu-img uses: the file type identifier, two headers
 * (sequence numbers 0 and 1, equal otherwise, LogGuid zero), two equal
 * region tables, then at 1 MB the log, the metadata region (1 MB: the
 * table, then the five required items from 64 KB on) and the BAT region
 * (a 1 MB multiple).  A dynamic file ends there with every payload entry
 * NOT_PRESENT; a fixed file (LeaveBlocksAllocated) places every payload
 * block after the BAT, FULLY_PRESENT, the file extended over them without
 * writing (they read as zeros).  A differencing file (HasParent) has a
 * sixth item, the parent locator (parent_linkage and relative_path, or
 * absolute_win32_path for an absolute parent path), and a BAT with a
 * sector bitmap entry after every chunk, all NOT_PRESENT.
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "create.h"
#include "vhdx.h"

int vhdx_create_validate(const struct vhdx_create_opts *o, char *why,
                         size_t why_len)
{
    const char *msg = NULL;
    char buf[128];

    if (o->block_size && (o->block_size < VHDX_MB ||
                          o->block_size > 256 * VHDX_MB ||
                          (o->block_size & (o->block_size - 1))))
        msg = "block_size must be a power of 2 from 1 MiB to 256 MiB";
    else if (o->log_size && o->log_size % VHDX_MB)
        msg = "log_size must be a multiple of 1 MiB";
    else if (o->log_size > 64 * VHDX_MB)
        msg = "log_size must be at most 64 MiB";
    else if (o->logical_sector_size && o->logical_sector_size != 512 &&
             o->logical_sector_size != 4096)
        msg = "logical_sector_size must be 512 or 4096";
    else if (o->physical_sector_size && o->physical_sector_size != 512 &&
             o->physical_sector_size != 4096)
        msg = "physical_sector_size must be 512 or 4096";
    else if (o->parent_path && o->fixed)
        msg = "a differencing file cannot be fixed";
    else if (o->parent_path && strlen(o->parent_path) > 1024)
        msg = "the parent path is longer than 1024 bytes";
    else if (o->size > VHDX_MAX_DISK_SIZE)
        msg = "size must be at most 64 TiB";
    else if (o->size % (o->logical_sector_size ? o->logical_sector_size
                                                : 512)) {
        snprintf(buf, sizeof buf, "size %" PRIu64 " is not a multiple of "
                 "the logical sector size", o->size);
        msg = buf;
    }
    if (msg && why)
        snprintf(why, why_len, "%s", msg);
    return msg ? -EINVAL : 0;
}

/* Put a little-endian value of n bytes at p. */
static void put(uint8_t *p, uint64_t v, int n)
{
    for (int i = 0; i < n; i++)
        p[i] = (uint8_t)(v >> (8 * i));
}

static void put_csum(uint8_t *buf, size_t len)
{
    put(buf + 4, 0, 4);
    put(buf + 4, vhdx_crc32c(buf, len), 4);
}

/* Geometry of the new file. */
struct layout {
    uint32_t block_size, sector, physical, log_size;
    uint64_t size, payload_blocks, bat_entries, chunk_ratio;
    uint64_t log_off, meta_off, bat_off, bat_len, data_off, file_size;
};

static void plan(const struct vhdx_create_opts *o, struct layout *l)
{
    l->block_size = o->block_size ? o->block_size : 32 * VHDX_MB;
    l->sector = o->logical_sector_size ? o->logical_sector_size : 512;
    l->physical = o->physical_sector_size ? o->physical_sector_size : 4096;
    l->log_size = o->log_size ? o->log_size : VHDX_MB;
    l->size = o->size;
    l->chunk_ratio = (uint64_t)VHDX_SECTORS_PER_BITMAP * l->sector /
                     l->block_size;
    l->payload_blocks = (l->size + l->block_size - 1) / l->block_size;
    l->bat_entries = l->payload_blocks == 0 ? 0 : l->payload_blocks +
                     (l->payload_blocks - 1) / l->chunk_ratio;
    if (o->parent_path)
        l->bat_entries = (l->payload_blocks + l->chunk_ratio - 1) /
                         l->chunk_ratio * (l->chunk_ratio + 1);
    l->log_off = VHDX_HEADER_SECTION;
    l->meta_off = l->log_off + l->log_size;
    l->bat_off = l->meta_off + VHDX_MB;
    l->bat_len = (l->bat_entries * 8 + VHDX_MB - 1) / VHDX_MB * VHDX_MB;
    if (l->bat_len == 0)
        l->bat_len = VHDX_MB;
    l->data_off = l->bat_off + l->bat_len;
    l->file_size = l->data_off + (o->fixed ? l->payload_blocks *
                                  (uint64_t)l->block_size : 0);
}

static void header(uint8_t *h, uint64_t seq, const struct vhdx_guid *fwg,
                   const struct vhdx_guid *dwg, const struct layout *l)
{
    memset(h, 0, VHDX_HEADER_SIZE);
    put(h, VHDX_HEADER_SIGNATURE, 4);
    put(h + 8, seq, 8);
    memcpy(h + 16, fwg->b, 16);
    memcpy(h + 32, dwg->b, 16);
    put(h + 66, 1, 2);                  /* Version */
    put(h + 68, l->log_size, 4);
    put(h + 72, l->log_off, 8);
    put_csum(h, VHDX_HEADER_SIZE);
}

static void region_table(uint8_t *r, const struct layout *l)
{
    memset(r, 0, VHDX_REGION_SIZE);
    put(r, VHDX_REGION_SIGNATURE, 4);
    put(r + 8, 2, 4);
    memcpy(r + 16, vhdx_bat_guid.b, 16);
    put(r + 32, l->bat_off, 8);
    put(r + 40, l->bat_len, 4);
    put(r + 44, 1, 4);                  /* required */
    memcpy(r + 48, vhdx_metadata_guid.b, 16);
    put(r + 64, l->meta_off, 8);
    put(r + 72, VHDX_MB, 4);
    put(r + 76, 1, 4);
    put_csum(r, VHDX_REGION_SIZE);
}

/* Append s (UTF-8, ASCII expected; other bytes are kept as code units)
 * to p as UTF-16LE; returns the bytes written. */
static size_t put_utf16(uint8_t *p, const char *s, bool backslashes)
{
    size_t n = 0;
    for (; *s; s++, n += 2)
        put(p + n, (uint8_t)(backslashes && *s == '/' ? '\\' : *s), 2);
    return n;
}

/* The parent locator item at p; returns its length. */
static uint32_t locator(uint8_t *p, const struct vhdx_create_opts *o)
{
    static const uint8_t type[16] = { 0xB7, 0xEF, 0x4A, 0xB0, 0x9E, 0xD1,
        0x81, 0x4A, 0xB7, 0x89, 0x25, 0xB8, 0xE9, 0x44, 0x59, 0x13 };
    struct vhdx_guid g;
    char linkage[40], path[1100];
    const char *keys[2] = { "parent_linkage", "relative_path" };
    const char *vals[2] = { linkage, path };

    memcpy(g.b, o->parent_linkage, 16);
    linkage[0] = '{';
    vhdx_guid_format(&g, linkage + 1);
    strcpy(linkage + 37, "}");
    /* Hyper-V writes GUIDs in lower case, and libvhdi compares the text. */
    for (char *c = linkage; *c; c++)
        if (*c >= 'A' && *c <= 'F')
            *c = (char)(*c - 'A' + 'a');
    if (o->parent_path[0] == '/') {
        keys[1] = "absolute_win32_path";
        snprintf(path, sizeof path, "\\\\?\\C:%s", o->parent_path);
    } else {
        snprintf(path, sizeof path, "%s", o->parent_path);
    }
    memcpy(p, type, 16);
    put(p + 18, 2, 2);
    uint32_t at = 20 + 2 * 12;
    for (int i = 0; i < 2; i++) {
        uint8_t *e = p + 20 + 12 * i;
        size_t kl = put_utf16(p + at, keys[i], false);
        size_t vl = put_utf16(p + at + kl, vals[i], true);
        put(e, at, 4);
        put(e + 4, at + kl, 4);
        put(e + 8, kl, 2);
        put(e + 10, vl, 2);
        at += (uint32_t)(kl + vl);
    }
    return at;
}

/* The metadata region's first 64 KB + the items after them. */
static void metadata(uint8_t *m, const struct layout *l,
                     const struct vhdx_create_opts *o)
{
    bool fixed = o->fixed;
    static const struct {
        const struct vhdx_guid *id;
        uint32_t len, flags;
    } items[] = {
        { &vhdx_file_param_guid, 8, VHDX_META_IS_REQUIRED },
        { &vhdx_disk_size_guid, 8,
          VHDX_META_IS_VIRTUAL | VHDX_META_IS_REQUIRED },
        { &vhdx_page83_guid, 16,
          VHDX_META_IS_VIRTUAL | VHDX_META_IS_REQUIRED },
        { &vhdx_logical_sector_guid, 4,
          VHDX_META_IS_VIRTUAL | VHDX_META_IS_REQUIRED },
        { &vhdx_physical_sector_guid, 4,
          VHDX_META_IS_VIRTUAL | VHDX_META_IS_REQUIRED },
    };
    uint32_t off = VHDX_METADATA_TABLE_SIZE;
    struct vhdx_guid page83;

    put(m, VHDX_METADATA_SIGNATURE, 8);
    put(m + 10, o->parent_path ? 6 : 5, 2);
    for (size_t i = 0; i < 5; i++) {
        uint8_t *e = m + 32 + 32 * i;
        memcpy(e, items[i].id->b, 16);
        put(e + 16, off, 4);
        put(e + 20, items[i].len, 4);
        put(e + 24, items[i].flags, 4);
        uint8_t *v = m + off;
        switch (i) {
        case 0:
            put(v, l->block_size, 4);
            put(v + 4, (fixed ? VHDX_PARAM_LEAVE_BLOCKS_ALLOCATED : 0) |
                       (o->parent_path ? VHDX_PARAM_HAS_PARENT : 0), 4);
            break;
        case 1:
            put(v, l->size, 8);
            break;
        case 2:
            vhdx_guid_generate(&page83);
            memcpy(v, page83.b, 16);
            break;
        case 3:
            put(v, l->sector, 4);
            break;
        default:
            put(v, l->physical, 4);
            break;
        }
        off += 4096;
    }
    if (o->parent_path) {
        uint8_t *e = m + 32 + 32 * 5;
        memcpy(e, vhdx_parent_locator_guid.b, 16);
        put(e + 16, off, 4);
        put(e + 20, locator(m + off, o), 4);
        put(e + 24, VHDX_META_IS_REQUIRED, 4);
    }
}

static int write_all(int fd, const struct vhdx_create_opts *o,
                     const struct layout *l)
{
    size_t meta_len = VHDX_METADATA_TABLE_SIZE + 6 * 4096;
    uint8_t *buf = calloc(1, VHDX_REGION_SIZE > meta_len ? VHDX_REGION_SIZE
                                                         : meta_len);
    struct vhdx_guid fwg, dwg;
    int err;

    if (!buf)
        return -ENOMEM;
    if (ftruncate(fd, (off_t)l->file_size) < 0) {
        err = -errno;
        goto out;
    }
    /* File type identifier: signature and the creator in UTF-16. */
    put(buf, VHDX_FILE_SIGNATURE, 8);
    const char *creator = "diskserve-img";
    for (size_t i = 0; creator[i]; i++)
        put(buf + 8 + 2 * i, (uint8_t)creator[i], 2);
    if ((err = io_pwrite_full(fd, buf, 8 + 512, 0)))
        goto out;
    vhdx_guid_generate(&fwg);
    vhdx_guid_generate(&dwg);
    for (unsigned i = 0; i < 2; i++) {
        header(buf, i, &fwg, &dwg, l);
        if ((err = io_pwrite_full(fd, buf, VHDX_HEADER_SIZE,
                                  i ? VHDX_HEADER2_OFFSET
                                    : VHDX_HEADER1_OFFSET)))
            goto out;
    }
    region_table(buf, l);
    if ((err = io_pwrite_full(fd, buf, VHDX_REGION_SIZE,
                              VHDX_REGION1_OFFSET)) ||
        (err = io_pwrite_full(fd, buf, VHDX_REGION_SIZE,
                              VHDX_REGION2_OFFSET)))
        goto out;
    memset(buf, 0, meta_len);
    metadata(buf, l, o);
    if ((err = io_pwrite_full(fd, buf, meta_len, l->meta_off)))
        goto out;
    if (o->fixed) {
        /* Payload entries FULLY_PRESENT, in order after the BAT. */
        uint64_t chunk[512];
        for (uint64_t i = 0; i < l->bat_entries; i += 512) {
            uint64_t n = l->bat_entries - i < 512 ? l->bat_entries - i : 512;
            for (uint64_t k = 0; k < n; k++) {
                uint64_t idx = i + k, v = 0;
                if (idx % (l->chunk_ratio + 1) != l->chunk_ratio) {
                    uint64_t b = idx - idx / (l->chunk_ratio + 1);
                    v = (l->data_off + b * l->block_size) |
                        VHDX_PAYLOAD_FULLY_PRESENT;
                }
                chunk[k] = htole64(v);
            }
            if ((err = io_pwrite_full(fd, chunk, n * 8, l->bat_off + i * 8)))
                goto out;
        }
    }
    if (fsync(fd) < 0)
        err = -errno;
out:
    free(buf);
    return err;
}

int vhdx_create(const char *path, const struct vhdx_create_opts *o)
{
    struct layout l;
    int fd, err;

    if ((err = vhdx_create_validate(o, NULL, 0))) {
        img_log("vhdx: %s: invalid creation options", path);
        return err;
    }
    plan(o, &l);
    fd = open(path, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0) {
        err = -errno;
        img_log("vhdx: %s: %s", path, strerror(errno));
        return err;
    }
    err = write_all(fd, o, &l);
    if (close(fd) < 0 && !err)
        err = -errno;
    if (err)
        img_log("vhdx: %s: creating the file: %s", path, strerror(-err));
    return err;
}
