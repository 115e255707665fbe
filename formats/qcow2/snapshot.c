/* qcow2 internal snapshots: parse the snapshot table and find a snapshot
 * by ID or name, so an export can serve a snapshot's L1 table instead of
 * the active one.
 *
 * The table is variable length (each entry carries extra data, an ID and
 * a name, padded to 8 bytes), so it is read entry by entry with every
 * length bounded against the file and qemu's limits.
 */
#include <endian.h>
#include <errno.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#include "io.h"
#include "qcow2.h"

/* Largest snapshot table we accept, like qemu's limit. */
#define MAX_TABLE_BYTES (64ull << 20)

/* Read n bytes of the table at *pos, advancing it; -EINVAL past the
 * end of the file or the table limit. */
static int table_read(struct qcow2_state *s, uint64_t *pos, void *buf,
                      size_t n, uint32_t i)
{
    uint64_t start = s->h.snapshots_offset;
    uint64_t end;

    if (__builtin_add_overflow(*pos, n, &end) || end > s->file_size ||
        end - start > MAX_TABLE_BYTES) {
        img_log("qcow2: %s: snapshot %" PRIu32 " at 0x%" PRIx64
                " runs past end of file or the %llu MiB table limit",
                s->img.path, i, *pos, MAX_TABLE_BYTES >> 20);
        return -EINVAL;
    }
    int err = io_pread_full(s->fd, buf, n, *pos);
    if (err) {
        img_log("qcow2: %s: reading snapshot %" PRIu32 ": %s", s->img.path,
                i, strerror(-err));
        return err == -ENODATA ? -EINVAL : err;
    }
    *pos = end;
    return 0;
}

/* Read a length-counted string of the table into a new C string. */
static int read_string(struct qcow2_state *s, uint64_t *pos, size_t n,
                       uint32_t i, char **out)
{
    char *str = malloc(n + 1);
    if (!str)
        return -ENOMEM;
    int err = table_read(s, pos, str, n, i);
    if (err) {
        free(str);
        return err;
    }
    str[n] = '\0';
    *out = str;
    return 0;
}

/* Parse snapshot i at *pos into sn. */
static int read_one(struct qcow2_state *s, uint64_t *pos, uint32_t i,
                    struct qcow2_snapshot *sn)
{
    struct qcow2_disk_snapshot d;
    uint64_t entry_start = *pos;
    int err;

    err = table_read(s, pos, &d, sizeof d, i);
    if (err)
        return err;
    sn->l1_table_offset = be64toh(d.l1_table_offset);
    sn->l1_size = be32toh(d.l1_size);
    uint32_t extra = be32toh(d.extra_data_size);
    if (extra > QCOW2_MAX_SNAPSHOT_EXTRA) {
        img_log("qcow2: %s: snapshot %" PRIu32 " extra_data_size %" PRIu32
                " too large (max %u)", s->img.path, i, extra,
                QCOW2_MAX_SNAPSHOT_EXTRA);
        return -EINVAL;
    }
    uint8_t extra_buf[QCOW2_MAX_SNAPSHOT_EXTRA];
    err = table_read(s, pos, extra_buf, extra, i);
    if (err)
        return err;
    if (extra >= sizeof(struct qcow2_disk_snapshot_extra)) {
        struct qcow2_disk_snapshot_extra x;
        memcpy(&x, extra_buf, sizeof x);
        sn->disk_size = be64toh(x.disk_size);
    }
    err = read_string(s, pos, be16toh(d.id_str_size), i, &sn->id);
    if (err)
        return err;
    err = read_string(s, pos, be16toh(d.name_size), i, &sn->name);
    if (err)
        return err;
    /* Entries are padded to 8 bytes from the table's start. */
    *pos = entry_start + ((*pos - entry_start + 7) & ~7ull);
    return 0;
}

int qcow2_read_snapshots(struct qcow2_state *s)
{
    uint32_t n = s->h.nb_snapshots;
    uint64_t pos = s->h.snapshots_offset;

    if (n == 0)
        return 0;
    s->snapshots = calloc(n, sizeof *s->snapshots);
    if (!s->snapshots)
        return -ENOMEM;
    s->nb_snapshots = n;
    for (uint32_t i = 0; i < n; i++) {
        int err = read_one(s, &pos, i, &s->snapshots[i]);
        if (err)
            return err;
    }
    s->snapshots_size = pos - s->h.snapshots_offset;
    return 0;
}

const struct qcow2_snapshot *qcow2_find_snapshot(const struct qcow2_state *s,
                                                 const char *id_or_name)
{
    /* qemu tries the ID first, then the name. */
    for (uint32_t i = 0; i < s->nb_snapshots; i++)
        if (strcmp(s->snapshots[i].id, id_or_name) == 0)
            return &s->snapshots[i];
    for (uint32_t i = 0; i < s->nb_snapshots; i++)
        if (strcmp(s->snapshots[i].name, id_or_name) == 0)
            return &s->snapshots[i];
    return NULL;
}

void qcow2_free_snapshots(struct qcow2_state *s)
{
    for (uint32_t i = 0; i < s->nb_snapshots; i++) {
        free(s->snapshots[i].id);
        free(s->snapshots[i].name);
    }
    free(s->snapshots);
    s->snapshots = NULL;
    s->nb_snapshots = 0;
}
