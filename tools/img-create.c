/* diskserve-img create: a new raw, qcow2 or VHDX image.  Options come as -o
 * key=value lists (",," stands for a comma inside a value) and as -b/-F
 * for the backing file; the backing file must open, and gives the size
 * when none is given.
 */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <inttypes.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "image.h"
#include "qcow2/qcow2.h"
#include "qcow2/create.h"
#include "vhdx/create.h"
#include "vhdx/vhdx.h"
#include "img-tool.h"

#define MAX_O_ARGS 16

struct create_args {
    const char *fmt;
    struct qcow2_create_opts q;
    struct vhdx_create_opts v;
    bool have_size;
    bool quiet;
    char *o_args[MAX_O_ARGS];       /* unescaped -o items */
    size_t n_o_args;
};

/* A VHDX size option (bytes, with suffixes) that fits 32 bits. */
static int vhdx_size_option(const char *key, const char *val, uint32_t *out)
{
    uint64_t v;

    if (tool_parse_size(val, &v) || v == 0 || v > UINT32_MAX)
        return tool_usage_error("invalid %s '%.64s'", key, val);
    *out = (uint32_t)v;
    return 0;
}

/* Apply one VHDX key=value option; returns 0 or an exit status. */
static int apply_vhdx_option(struct create_args *a, const char *key,
                             const char *val)
{
    struct vhdx_create_opts *v = &a->v;

    if (!strcmp(key, "subformat")) {
        if (!strcmp(val, "dynamic"))
            v->fixed = false;
        else if (!strcmp(val, "fixed"))
            v->fixed = true;
        else
            return tool_usage_error("invalid subformat '%.64s' (dynamic or "
                                    "fixed)", val);
        return 0;
    }
    if (!strcmp(key, "block_size"))
        return vhdx_size_option(key, val, &v->block_size);
    if (!strcmp(key, "log_size"))
        return vhdx_size_option(key, val, &v->log_size);
    if (!strcmp(key, "logical_sector_size"))
        return vhdx_size_option(key, val, &v->logical_sector_size);
    if (!strcmp(key, "physical_sector_size"))
        return vhdx_size_option(key, val, &v->physical_sector_size);
    return tool_usage_error("invalid option '%.64s' for vhdx images", key);
}

/* Apply one key=value option; returns 0 or an exit status. */
static int apply_option(struct create_args *a, const char *key,
                        const char *val)
{
    bool raw = !strcmp(a->fmt, "raw");
    int b;

    if (!val)
        return tool_usage_error("option '%.64s' needs a value", key);
    if (!strcmp(key, "size")) {
        if (tool_parse_size(val, &a->q.size))
            return tool_usage_error("invalid size '%.64s'", val);
        a->have_size = true;
        return 0;
    }
    if (!strcmp(key, "preallocation")) {
        if (strcmp(val, "off"))
            return tool_usage_error("preallocation '%.64s' not supported "
                                    "(only off)", val);
        return 0;
    }
    if (raw)
        return tool_usage_error("invalid option '%.64s' for raw images",
                                key);
    if (!strcmp(a->fmt, "vhdx"))
        return apply_vhdx_option(a, key, val);
    if (!strcmp(key, "cluster_size")) {
        uint64_t v;
        if (tool_parse_size(val, &v) || v > UINT32_MAX)
            return tool_usage_error("invalid cluster size '%.64s'", val);
        a->q.cluster_size = (uint32_t)v;
        if (v == 0)
            return tool_usage_error("invalid cluster size '%.64s'", val);
    } else if (!strcmp(key, "compat")) {
        if (!strcmp(val, "0.10") || !strcmp(val, "v2"))
            a->q.version = 2;
        else if (!strcmp(val, "1.1") || !strcmp(val, "v3"))
            a->q.version = 3;
        else
            return tool_usage_error("invalid compat '%.64s' (0.10 or 1.1)",
                                    val);
    } else if (!strcmp(key, "extended_l2")) {
        if (tool_parse_bool(val, &b))
            return tool_usage_error("invalid extended_l2 '%.64s'", val);
        a->q.extended_l2 = b;
    } else if (!strcmp(key, "lazy_refcounts")) {
        if (tool_parse_bool(val, &b))
            return tool_usage_error("invalid lazy_refcounts '%.64s'", val);
        a->q.lazy_refcounts = b;
    } else if (!strcmp(key, "compression_type")) {
        if (!strcmp(val, "zlib"))
            a->q.compression_type = QCOW2_COMPRESS_ZLIB;
        else if (!strcmp(val, "zstd"))
            a->q.compression_type = QCOW2_COMPRESS_ZSTD;
        else
            return tool_usage_error("invalid compression_type '%.64s' "
                                    "(zlib or zstd)", val);
    } else if (!strcmp(key, "refcount_bits")) {
        char *end;
        errno = 0;
        unsigned long v = strtoul(val, &end, 10);
        if (errno || end == val || *end || v == 0 || v > 64)
            return tool_usage_error("invalid refcount_bits '%.64s'", val);
        a->q.refcount_bits = (uint32_t)v;
    } else if (!strcmp(key, "backing_file")) {
        a->q.backing_file = val;
    } else if (!strcmp(key, "backing_fmt")) {
        a->q.backing_fmt = val;
    } else {
        return tool_usage_error("invalid option '%.64s'", key);
    }
    return 0;
}

/* Unescape one -o argument into buf (as long as it, plus one) as
 * NUL-separated items, and apply them. */
static int parse_o(struct create_args *a, const char *in, char *buf)
{
    char *w = buf;

    while (*in) {
        /* An item ends at a single comma; ",," is a literal comma. */
        char *item = w;
        while (*in) {
            if (in[0] == ',' && in[1] == ',') {
                *w++ = ',';
                in += 2;
            } else if (*in == ',') {
                in++;
                break;
            } else {
                *w++ = *in++;
            }
        }
        *w++ = '\0';
        if (!*item)
            continue;
        char *eq = strchr(item, '=');
        if (eq)
            *eq = '\0';
        int rc = apply_option(a, item, eq ? eq + 1 : NULL);
        if (rc)
            return rc;
    }
    return 0;
}

/* Open the backing file, relative to the new image's folder, to check it
 * and to learn its size. */
static int probe_backing(const char *path, struct create_args *a,
                         uint64_t *size)
{
    char *resolved = qcow2_resolve_path(path, a->q.backing_file);
    if (!resolved)
        return tool_error("%s: %s", a->q.backing_file, strerror(errno));
    struct img_open_args args = {
        .path = resolved,
        .format = a->q.backing_fmt,
        .read_only = true,
    };
    struct image *img = NULL;
    int err = img_open(&args, &img);
    if (err) {
        int rc = tool_error("%s: cannot open backing file '%s': %s", path,
                            a->q.backing_file, strerror(-err));
        free(resolved);
        return rc;
    }
    *size = img->size;
    img_close(img);
    free(resolved);
    return 0;
}

/* Create a raw image: a sparse file of the size. */
static int create_raw(const char *path, uint64_t size)
{
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0)
        return tool_error("%s: %s", path, strerror(errno));
    if (ftruncate(fd, (off_t)size) < 0 || fsync(fd) < 0) {
        int rc = tool_error("%s: %s", path, strerror(errno));
        close(fd);
        return rc;
    }
    if (close(fd) < 0)
        return tool_error("%s: %s", path, strerror(errno));
    return 0;
}

/* Print what is about to be created, like qemu-img does. */
static void announce(const char *path, const struct create_args *a)
{
    const struct qcow2_create_opts *q = &a->q;

    if (a->quiet)
        return;
    if (!strcmp(a->fmt, "raw")) {
        printf("Formatting '%s', fmt=raw size=%" PRIu64 "\n", path, q->size);
        return;
    }
    printf("Formatting '%s', fmt=qcow2 cluster_size=%" PRIu32
           " extended_l2=%s compression_type=%s size=%" PRIu64, path,
           q->cluster_size ? q->cluster_size : 65536,
           q->extended_l2 ? "on" : "off",
           q->compression_type == QCOW2_COMPRESS_ZSTD ? "zstd" : "zlib",
           q->size);
    if (q->version == 2)
        printf(" compat=0.10");
    if (q->backing_file)
        printf(" backing_file=%s", q->backing_file);
    if (q->backing_fmt)
        printf(" backing_fmt=%s", q->backing_fmt);
    printf(" lazy_refcounts=%s refcount_bits=%" PRIu32 "\n",
           q->lazy_refcounts ? "on" : "off",
           q->refcount_bits ? q->refcount_bits : 16);
}

/* A differencing VHDX file: the parent (opened relative to the new
 * file's folder) gives the size, the logical sector size and the
 * parent_linkage; a size given must be the parent's. */
static int vhdx_parent_opts(const char *path, struct create_args *a)
{
    struct vhdx_create_opts *v = &a->v;
    char *resolved = qcow2_resolve_path(path, a->q.backing_file);
    struct img_open_args args = { .format = "vhdx", .read_only = true };
    struct image *img = NULL;
    int err, rc = 0;

    if (!resolved)
        return tool_error("%s: %s", a->q.backing_file, strerror(errno));
    args.path = resolved;
    err = img_open(&args, &img);
    if (err) {
        rc = tool_error("%s: cannot open parent '%s': %s", path,
                        a->q.backing_file, strerror(-err));
        goto out;
    }
    struct vhdx_state *p = (struct vhdx_state *)img;
    if (a->have_size && a->q.size != p->disk_size) {
        rc = tool_usage_error("%s: size %" PRIu64 " is not the parent's (%"
                              PRIu64 ")", path, a->q.size, p->disk_size);
        goto out;
    }
    if (v->logical_sector_size &&
        v->logical_sector_size != p->logical_sector_size) {
        rc = tool_usage_error("%s: logical_sector_size %" PRIu32 " is not "
                              "the parent's (%" PRIu32 ")", path,
                              v->logical_sector_size,
                              p->logical_sector_size);
        goto out;
    }
    a->q.size = p->disk_size;
    a->have_size = true;
    v->logical_sector_size = p->logical_sector_size;
    if (!v->physical_sector_size)
        v->physical_sector_size = p->physical_sector_size;
    if (!v->block_size)
        v->block_size = p->block_size;
    memcpy(v->parent_linkage, p->header.data_write_guid.b, 16);
    v->parent_path = a->q.backing_file;
out:
    img_close(img);
    free(resolved);
    return rc;
}

/* Create a VHDX file once the arguments are parsed. */
static int create_vhdx(const char *path, struct create_args *a)
{
    struct vhdx_create_opts *v = &a->v;
    char why[128];

    if (a->q.backing_fmt && strcmp(a->q.backing_fmt, "vhdx"))
        return tool_usage_error("%s: the parent of a VHDX file is VHDX, "
                                "not '%.64s'", path, a->q.backing_fmt);
    if (a->q.backing_file) {
        int rc = vhdx_parent_opts(path, a);
        if (rc)
            return rc;
    }
    if (!a->have_size)
        return tool_usage_error("%s: a size is needed", path);
    v->size = a->q.size;
    if (vhdx_create_validate(v, why, sizeof why))
        return tool_usage_error("%s: %s", path, why);
    if (!a->quiet)
        printf("Formatting '%s', fmt=vhdx size=%" PRIu64 " log_size=%" PRIu32
               " block_size=%" PRIu32 " subformat=%s logical_sector_size=%"
               PRIu32 " physical_sector_size=%" PRIu32 "\n", path, v->size,
               v->log_size ? v->log_size : 1048576,
               v->block_size ? v->block_size : 33554432,
               v->fixed ? "fixed" : "dynamic",
               v->logical_sector_size ? v->logical_sector_size : 512,
               v->physical_sector_size ? v->physical_sector_size : 4096);
    int err = vhdx_create(path, v);
    if (err)
        return tool_error("%s: creating the image failed: %s", path,
                          strerror(-err));
    return 0;
}

/* Run create once the arguments are parsed. */
static int do_create(const char *path, const char *size_arg,
                     struct create_args *a)
{
    if (size_arg) {
        if (tool_parse_size(size_arg, &a->q.size))
            return tool_usage_error("invalid size '%.64s' (suffixes k, M, "
                                    "G, T, P, E)", size_arg);
        a->have_size = true;
    }
    if (!strcmp(a->fmt, "raw")) {
        if (!a->have_size)
            return tool_usage_error("%s: a size is needed", path);
        announce(path, a);
        return create_raw(path, a->q.size);
    }
    if (!strcmp(a->fmt, "vhdx"))
        return create_vhdx(path, a);

    if (a->q.backing_fmt && !a->q.backing_file)
        return tool_usage_error("a backing format needs a backing file");
    if (a->q.backing_file && !a->q.backing_fmt)
        return tool_usage_error("%s: a backing file needs its format "
                                "(-F)", path);
    if (!a->have_size && !a->q.backing_file)
        return tool_usage_error("%s: a size is needed", path);
    char why[128];
    if (qcow2_create_validate(&a->q, why, sizeof why))
        return tool_usage_error("%s: %s", path, why);
    if (a->q.backing_file) {
        uint64_t bsize = 0;
        int rc = probe_backing(path, a, &bsize);
        if (rc)
            return rc;
        if (!a->have_size)
            a->q.size = bsize;
    }
    announce(path, a);
    int err = qcow2_create(path, &a->q);
    if (err)
        return tool_error("%s: creating the image failed: %s", path,
                          strerror(-err));
    return 0;
}

int tool_cmd_create(int argc, char **argv)
{
    static const struct option longopts[] = {
        { "help", no_argument, NULL, 'h' },
        { NULL, 0, NULL, 0 },
    };
    struct create_args a;
    const char *o_raw[MAX_O_ARGS];
    size_t n_o = 0;
    int c, rc = 0;

    memset(&a, 0, sizeof a);
    optind = 1;
    opterr = 0;
    while ((c = getopt_long(argc, argv, "+f:o:b:F:qh", longopts,
                            NULL)) != -1) {
        switch (c) {
        case 'f':
            a.fmt = optarg;
            break;
        case 'o':
            if (n_o == MAX_O_ARGS)
                return tool_usage_error("too many -o options");
            o_raw[n_o++] = optarg;
            break;
        case 'b':
            a.q.backing_file = optarg;
            break;
        case 'F':
            a.q.backing_fmt = optarg;
            break;
        case 'q':
            a.quiet = true;
            break;
        case 'h':
            tool_usage();
            return 0;
        default:
            return tool_usage_error("create: unknown option or missing "
                                    "argument '%.64s'", argv[optind - 1]);
        }
    }
    if (!a.fmt)
        a.fmt = "raw";
    if (strcmp(a.fmt, "raw") && strcmp(a.fmt, "qcow2") &&
        strcmp(a.fmt, "vhdx"))
        return tool_usage_error("create: unknown format '%.64s' (raw, "
                                "qcow2 or vhdx)", a.fmt);
    if (argc - optind < 1 || argc - optind > 2)
        return tool_usage_error("create: expected FILE [SIZE] (try "
                                "--help)");
    const char *path = argv[optind];
    const char *size_arg = argc - optind == 2 ? argv[optind + 1] : NULL;

    for (size_t i = 0; i < n_o && !rc; i++) {
        a.o_args[i] = malloc(strlen(o_raw[i]) + 2);
        if (!a.o_args[i]) {
            rc = tool_error("out of memory");
            break;
        }
        a.n_o_args = i + 1;
        rc = parse_o(&a, o_raw[i], a.o_args[i]);
    }
    if (!rc)
        rc = do_create(path, size_arg, &a);
    for (size_t i = 0; i < a.n_o_args; i++)
        free(a.o_args[i]);
    return rc;
}
