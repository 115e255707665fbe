/* diskserve-img info: what an image is, as text or as JSON with the keys
 * qemu-img info --output=json uses.  qcow2 images are described from
 * their metadata alone (the driver's header and snapshot parsers), so an
 * overlay whose backing file is missing, or an encrypted image without
 * its key, can still be described; raw images open through img_open.
 */
#include <endian.h>
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <json-c/json.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#include "image.h"
#include "io.h"
#include "qcow2/qcow2.h"
#include "qcow2/check.h"
#include "img-tool.h"

/* One snapshot as info shows it. */
struct snap_info {
    char *id;
    char *name;
    uint64_t vm_state_size;
    uint32_t date_sec;
    uint32_t date_nsec;
    uint64_t vm_clock_nsec;
    bool has_icount;
    uint64_t icount;
};

/* What info prints, whatever the format. */
struct info {
    const char *path;
    const char *format;
    uint64_t virtual_size;
    uint64_t actual_size;
    bool actual_size_unknown;   /* an RBD image: not a file's blocks */
    bool is_qcow2;
    /* qcow2 only: */
    uint32_t cluster_size;
    uint32_t version;
    bool dirty, corrupt, lazy, ext_l2, encrypted;
    const char *compression;
    uint32_t refcount_bits;
    const char *crypt_format;
    const char *backing;
    char *full_backing;
    const char *backing_fmt;
    const char *data_file;
    bool data_file_raw;
    struct snap_info *snaps;
    uint32_t n_snaps;
};

/* Read the snapshot table's details the driver does not keep. */
static int read_snapshot_details(struct qcow2_state *s, struct info *in)
{
    uint64_t start = s->h.snapshots_offset, pos = start;

    if (s->nb_snapshots == 0)
        return 0;
    in->snaps = calloc(s->nb_snapshots, sizeof *in->snaps);
    if (!in->snaps)
        return -ENOMEM;
    in->n_snaps = s->nb_snapshots;
    for (uint32_t i = 0; i < s->nb_snapshots; i++) {
        struct qcow2_disk_snapshot d;
        uint8_t extra[QCOW2_MAX_SNAPSHOT_EXTRA];
        struct snap_info *si = &in->snaps[i];

        pos = start + ((pos - start + 7) & ~7ull);
        int err = io_pread_full(s->fd, &d, sizeof d, pos);
        if (err)
            return err;
        uint32_t n_extra = be32toh(d.extra_data_size);
        if (n_extra > sizeof extra)
            return -EINVAL;
        memset(extra, 0, sizeof extra);
        err = io_pread_full(s->fd, extra, n_extra, pos + sizeof d);
        if (err)
            return err;
        pos += sizeof d + n_extra + be16toh(d.id_str_size) +
               be16toh(d.name_size);
        si->id = s->snapshots[i].id;
        si->name = s->snapshots[i].name;
        si->date_sec = be32toh(d.date_sec);
        si->date_nsec = be32toh(d.date_nsec);
        si->vm_clock_nsec = be64toh(d.vm_clock_nsec);
        si->vm_state_size = be32toh(d.vm_state_size);
        uint64_t v;
        if (n_extra >= 8) {
            memcpy(&v, extra, 8);
            si->vm_state_size = be64toh(v);
        }
        if (n_extra >= 24) {
            memcpy(&v, extra + 16, 8);
            v = be64toh(v);
            si->has_icount = v != UINT64_MAX;
            si->icount = v;
        }
    }
    return 0;
}

/* Fill in the qcow2 part of info from the image's metadata. */
static int qcow2_info(struct qcow2_state *s, struct info *in)
{
    const struct qcow2_header *h = &s->h;

    in->is_qcow2 = true;
    in->virtual_size = h->size;
    in->cluster_size = s->cluster_size;
    in->version = h->version;
    in->dirty = h->incompatible & QCOW2_INCOMPAT_DIRTY;
    in->corrupt = h->incompatible & QCOW2_INCOMPAT_CORRUPT;
    in->lazy = h->compatible & QCOW2_COMPAT_LAZY_REFCOUNTS;
    in->ext_l2 = s->ext_l2;
    in->compression = h->compression_type == QCOW2_COMPRESS_ZSTD ? "zstd"
                                                                 : "zlib";
    in->refcount_bits = 1u << h->refcount_order;
    in->encrypted = h->crypt_method != QCOW2_CRYPT_NONE;
    in->crypt_format = h->crypt_method == QCOW2_CRYPT_AES ? "aes" : "luks";
    in->backing = h->backing_file;
    in->backing_fmt = h->backing_format;
    if (h->backing_file) {
        in->full_backing = qcow2_resolve_path(in->path, h->backing_file);
        if (!in->full_backing)
            return -errno;
    }
    if (h->incompatible & QCOW2_INCOMPAT_DATA_FILE) {
        in->data_file = h->data_file;
        in->data_file_raw = h->autoclear & QCOW2_AUTOCLEAR_DATA_RAW;
    }
    return read_snapshot_details(s, in);
}

/* Print the snapshot table in columns. */
static void print_snapshots(const struct info *in)
{
    printf("Snapshot list:\n");
    printf("%-9s %-17s %7s %19s %12s %10s\n", "ID", "TAG", "VM SIZE",
           "DATE", "VM CLOCK", "ICOUNT");
    for (uint32_t i = 0; i < in->n_snaps; i++) {
        const struct snap_info *si = &in->snaps[i];
        char size[32], date[32], clock[32], icount[32] = "";
        struct tm tm;
        time_t t = (time_t)si->date_sec;

        tool_format_size(si->vm_state_size, size, sizeof size);
        if (localtime_r(&t, &tm))
            strftime(date, sizeof date, "%Y-%m-%d %H:%M:%S", &tm);
        else
            snprintf(date, sizeof date, "?");
        uint64_t ms = si->vm_clock_nsec / 1000000;
        snprintf(clock, sizeof clock, "%02" PRIu64 ":%02" PRIu64 ":%02"
                 PRIu64 ".%03" PRIu64, ms / 3600000, ms / 60000 % 60,
                 ms / 1000 % 60, ms % 1000);
        if (si->has_icount)
            snprintf(icount, sizeof icount, "%" PRIu64, si->icount);
        printf("%-9s %-17s %7s %19s %12s %10s\n", si->id, si->name, size,
               date, clock, icount);
    }
}

static void print_human(const struct info *in)
{
    char vs[32], ds[32];

    tool_format_size(in->virtual_size, vs, sizeof vs);
    if (in->actual_size_unknown)
        snprintf(ds, sizeof ds, "unavailable");
    else
        tool_format_size(in->actual_size, ds, sizeof ds);
    printf("image: %s\nfile format: %s\nvirtual size: %s (%" PRIu64
           " bytes)\ndisk size: %s\n", in->path, in->format, vs,
           in->virtual_size, ds);
    if (!in->is_qcow2)
        return;
    if (in->encrypted)
        printf("encrypted: yes\n");
    printf("cluster_size: %" PRIu32 "\n", in->cluster_size);
    if (in->dirty)
        printf("cleanly shut down: no\n");
    if (in->backing) {
        printf("backing file: %s", in->backing);
        if (strcmp(in->backing, in->full_backing))
            printf(" (actual path: %s)", in->full_backing);
        printf("\n");
        if (in->backing_fmt)
            printf("backing file format: %s\n", in->backing_fmt);
    }
    if (in->n_snaps)
        print_snapshots(in);
    printf("Format specific information:\n");
    printf("    compat: %s\n", in->version >= 3 ? "1.1" : "0.10");
    printf("    compression type: %s\n", in->compression);
    if (in->version >= 3)
        printf("    lazy refcounts: %s\n", in->lazy ? "true" : "false");
    printf("    refcount bits: %" PRIu32 "\n", in->refcount_bits);
    if (in->encrypted)
        printf("    encrypt:\n        format: %s\n", in->crypt_format);
    if (in->version >= 3) {
        if (in->data_file) {
            printf("    data file: %s\n", in->data_file);
            printf("    data file raw: %s\n",
                   in->data_file_raw ? "true" : "false");
        }
        printf("    corrupt: %s\n", in->corrupt ? "true" : "false");
        printf("    extended l2: %s\n", in->ext_l2 ? "true" : "false");
    }
}

static void add_int(json_object *o, const char *key, uint64_t v)
{
    json_object_object_add(o, key, json_object_new_int64((int64_t)v));
}

static void add_bool(json_object *o, const char *key, bool v)
{
    json_object_object_add(o, key, json_object_new_boolean(v));
}

static void add_str(json_object *o, const char *key, const char *v)
{
    json_object_object_add(o, key, json_object_new_string(v));
}

/* The snapshot list as qemu-img info's "snapshots" array. */
static json_object *snapshots_json(const struct info *in)
{
    json_object *a = json_object_new_array();

    for (uint32_t i = 0; i < in->n_snaps; i++) {
        const struct snap_info *si = &in->snaps[i];
        json_object *o = json_object_new_object();
        if (si->has_icount)
            add_int(o, "icount", si->icount);
        add_int(o, "vm-state-size", si->vm_state_size);
        add_int(o, "date-sec", si->date_sec);
        add_int(o, "date-nsec", si->date_nsec);
        add_int(o, "vm-clock-sec", si->vm_clock_nsec / 1000000000);
        add_int(o, "vm-clock-nsec", si->vm_clock_nsec % 1000000000);
        add_str(o, "name", si->name);
        add_str(o, "id", si->id);
        json_object_array_add(a, o);
    }
    return a;
}

static void print_json(const struct info *in)
{
    json_object *o = json_object_new_object();

    if (in->n_snaps)
        json_object_object_add(o, "snapshots", snapshots_json(in));
    if (in->backing_fmt)
        add_str(o, "backing-filename-format", in->backing_fmt);
    add_int(o, "virtual-size", in->virtual_size);
    add_str(o, "filename", in->path);
    if (in->is_qcow2)
        add_int(o, "cluster-size", in->cluster_size);
    add_str(o, "format", in->format);
    if (!in->actual_size_unknown)
        add_int(o, "actual-size", in->actual_size);
    if (in->encrypted)
        add_bool(o, "encrypted", true);
    if (in->is_qcow2) {
        json_object *fs = json_object_new_object();
        json_object *d = json_object_new_object();
        add_str(d, "compat", in->version >= 3 ? "1.1" : "0.10");
        if (in->data_file) {
            add_str(d, "data-file", in->data_file);
            add_bool(d, "data-file-raw", in->data_file_raw);
        }
        add_str(d, "compression-type", in->compression);
        if (in->version >= 3)
            add_bool(d, "lazy-refcounts", in->lazy);
        add_int(d, "refcount-bits", in->refcount_bits);
        if (in->encrypted) {
            json_object *e = json_object_new_object();
            add_str(e, "format", in->crypt_format);
            json_object_object_add(d, "encrypt", e);
        }
        if (in->version >= 3) {
            add_bool(d, "corrupt", in->corrupt);
            add_bool(d, "extended-l2", in->ext_l2);
        }
        add_str(fs, "type", "qcow2");
        json_object_object_add(fs, "data", d);
        json_object_object_add(o, "format-specific", fs);
    }
    if (in->backing) {
        add_str(o, "full-backing-filename", in->full_backing);
        add_str(o, "backing-filename", in->backing);
    }
    add_bool(o, "dirty-flag", in->dirty);
    printf("%s\n", json_object_to_json_string_ext(o,
                   JSON_C_TO_STRING_PRETTY | JSON_C_TO_STRING_SPACED |
                   JSON_C_TO_STRING_NOSLASHESCAPE));
    json_object_put(o);
}

int tool_cmd_info(int argc, char **argv)
{
    static const struct option longopts[] = {
        { "json", no_argument, NULL, 'j' },
        { "output", required_argument, NULL, 'O' },
        { "help", no_argument, NULL, 'h' },
        { NULL, 0, NULL, 0 },
    };
    const char *fmt = NULL;
    bool json = false;
    int c;

    optind = 1;
    opterr = 0;
    while ((c = getopt_long(argc, argv, "+f:h", longopts, NULL)) != -1) {
        switch (c) {
        case 'f':
            fmt = optarg;
            break;
        case 'j':
            json = true;
            break;
        case 'O':
            if (!strcmp(optarg, "json"))
                json = true;
            else if (!strcmp(optarg, "human"))
                json = false;
            else
                return tool_usage_error("info: --output must be human or "
                                        "json");
            break;
        case 'h':
            tool_usage();
            return 0;
        default:
            return tool_usage_error("info: unknown option or missing "
                                    "argument '%.64s'", argv[optind - 1]);
        }
    }
    if (argc - optind != 1)
        return tool_usage_error("info: expected one FILE (try --help)");

    struct info in;
    memset(&in, 0, sizeof in);
    in.path = argv[optind];
    in.format = tool_format_of(in.path, fmt);
    if (!in.format)
        return 1;
    struct stat st;
    if (io_is_remote_name(in.path))
        in.actual_size_unknown = true;  /* as qemu-img: "unavailable" */
    else if (stat(in.path, &st) < 0)
        return tool_error("%s: %s", in.path, strerror(errno));
    else
        in.actual_size = (uint64_t)st.st_blocks * 512;

    int rc = 0;
    if (!strcmp(in.format, "qcow2")) {
        struct qcow2_state *s;
        int err = qcow2_check_open(in.path, false, &s);
        if (err)
            return tool_error("%s: cannot open: %s", in.path,
                              strerror(-err));
        err = qcow2_info(s, &in);
        if (err)
            rc = tool_error("%s: %s", in.path, strerror(-err));
        else if (json)
            print_json(&in);
        else
            print_human(&in);
        free(in.snaps);
        free(in.full_backing);
        qcow2_check_close(s);
        return rc;
    }

    struct img_open_args args = {
        .path = in.path,
        .format = in.format,
        .read_only = true,
    };
    struct image *img;
    int err = img_open(&args, &img);
    if (err)
        return tool_error("%s: cannot open: %s", in.path, strerror(-err));
    in.virtual_size = img->size;
    if (json)
        print_json(&in);
    else
        print_human(&in);
    img_close(img);
    return 0;
}
