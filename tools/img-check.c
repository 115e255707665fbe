/* diskserve-img check: the refcount check of a qcow2 image, and the
 * structural check of a VHDX file, with the report and exit status of
 * qemu-img check.  The image is opened from
 * its metadata alone (no backing file, data file or key needed), like
 * qemu-img check does; after a repair the image is checked again and
 * that second result is the one reported.
 */
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <json-c/json.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>

#include "image.h"
#include "qcow2/qcow2.h"
#include "qcow2/check.h"
#include "vhdx/vhdx.h"
#include "img-tool.h"

/* qemu-img check's exit status for formats without a check. */
#define EXIT_NO_CHECK 63

static void print_human(const struct qcow2_check_result *r)
{
    if (r->corruptions == 0 && r->leaks == 0 && r->check_errors == 0) {
        printf("No errors were found on the image.\n");
    } else {
        if (r->corruptions)
            printf("\n%" PRIu64 " errors were found on the image.\n"
                   "Data may be corrupted, or further writes to the image "
                   "may corrupt it.\n", r->corruptions);
        if (r->leaks)
            printf("\n%" PRIu64 " leaked clusters were found on the image."
                   "\nThis means waste of disk space, but no harm to data."
                   "\n", r->leaks);
        if (r->check_errors)
            printf("\n%" PRIu64 " internal errors have occurred during the "
                   "check.\n", r->check_errors);
    }
    if (r->total_clusters && r->allocated_clusters)
        printf("%" PRIu64 "/%" PRIu64 " = %0.2f%% allocated, %0.2f%% "
               "fragmented, %0.2f%% compressed clusters\n",
               r->allocated_clusters, r->total_clusters,
               r->allocated_clusters * 100.0 / r->total_clusters,
               r->fragmented_clusters * 100.0 / r->allocated_clusters,
               r->compressed_clusters * 100.0 / r->allocated_clusters);
    if (r->image_end_offset)
        printf("Image end offset: %" PRIu64 "\n", r->image_end_offset);
}

static void add_int(json_object *o, const char *key, uint64_t v)
{
    json_object_object_add(o, key, json_object_new_int64((int64_t)v));
}

/* The result with qemu-img check --output=json's keys. */
static void print_json(const char *path, const char *format,
                       const struct qcow2_check_result *r)
{
    json_object *o = json_object_new_object();

    if (r->image_end_offset)
        add_int(o, "image-end-offset", r->image_end_offset);
    add_int(o, "total-clusters", r->total_clusters);
    add_int(o, "check-errors", r->check_errors);
    if (r->leaks)
        add_int(o, "leaks", r->leaks);
    if (r->corruptions)
        add_int(o, "corruptions", r->corruptions);
    if (r->leaks_fixed)
        add_int(o, "leaks-fixed", r->leaks_fixed);
    if (r->corruptions_fixed)
        add_int(o, "corruptions-fixed", r->corruptions_fixed);
    add_int(o, "allocated-clusters", r->allocated_clusters);
    json_object_object_add(o, "filename", json_object_new_string(path));
    json_object_object_add(o, "format", json_object_new_string(format));
    add_int(o, "fragmented-clusters", r->fragmented_clusters);
    add_int(o, "compressed-clusters", r->compressed_clusters);
    printf("%s\n", json_object_to_json_string_ext(o,
                   JSON_C_TO_STRING_PRETTY | JSON_C_TO_STRING_SPACED |
                   JSON_C_TO_STRING_NOSLASHESCAPE));
    json_object_put(o);
}

/* A VHDX file: every structure is checked at open (headers, region
 * tables, metadata, BAT entries inside the file, clear of the log, the
 * regions and each other, the log's active sequence), so a file that
 * opens read-only is clean but for a pending log, which is a corruption
 * that -r (leaks or all) repairs by opening read-write: the driver
 * replays it into the file.  A file the driver refuses counts as one
 * corruption (the reason logged above the report). */
static int check_vhdx(const char *path, bool repair, bool json, bool quiet)
{
    struct img_open_args args = { .path = path, .format = "vhdx",
                                  .read_only = true };
    struct qcow2_check_result r = { 0 };
    struct image *img;
    int err = img_open(&args, &img);

    if (err == -EINVAL || err == -ENOTSUP) {
        r.corruptions = 1;
    } else if (err) {
        return tool_error("%s: cannot open: %s", path, strerror(-err));
    } else {
        struct vhdx_state *s = (struct vhdx_state *)img;
        bool pending = s->log_sequence != 0;
        img_close(img);
        if (pending && !repair) {
            r.corruptions = 1;
            if (!quiet && !json)
                printf("The log holds updates not yet applied; -r all "
                       "replays them.\n");
        } else if (pending) {
            args.read_only = false;
            err = img_open(&args, &img);
            if (err)
                return tool_error("%s: replaying the log: %s", path,
                                  strerror(-err));
            img_close(img);
            r.corruptions_fixed = 1;
            if (!json && !quiet)
                printf("The following inconsistencies were found and "
                       "repaired:\n\n    0 leaked clusters\n    1 "
                       "corruptions\n\nDouble checking the fixed image "
                       "now...\n");
        }
    }
    if (!quiet) {
        if (json)
            print_json(path, "vhdx", &r);
        else
            print_human(&r);
    }
    return r.corruptions ? 2 : 0;
}

int tool_cmd_check(int argc, char **argv)
{
    static const struct option longopts[] = {
        { "output", required_argument, NULL, 'O' },
        { "repair", required_argument, NULL, 'r' },
        { "help", no_argument, NULL, 'h' },
        { NULL, 0, NULL, 0 },
    };
    const char *fmt = NULL;
    unsigned repair = 0;
    bool json = false, quiet = false;
    int c;

    optind = 1;
    opterr = 0;
    while ((c = getopt_long(argc, argv, "+f:r:qh", longopts, NULL)) != -1) {
        switch (c) {
        case 'f':
            fmt = optarg;
            break;
        case 'r':
            if (!strcmp(optarg, "leaks"))
                repair = QCOW2_REPAIR_LEAKS;
            else if (!strcmp(optarg, "all"))
                repair = QCOW2_REPAIR_LEAKS | QCOW2_REPAIR_ERRORS;
            else
                return tool_usage_error("check: -r takes leaks or all, not "
                                        "'%.64s'", optarg);
            break;
        case 'O':
            if (!strcmp(optarg, "json"))
                json = true;
            else if (!strcmp(optarg, "human"))
                json = false;
            else
                return tool_usage_error("check: --output must be human or "
                                        "json");
            break;
        case 'q':
            quiet = true;
            break;
        case 'h':
            tool_usage();
            return 0;
        default:
            return tool_usage_error("check: unknown option or missing "
                                    "argument '%.64s'", argv[optind - 1]);
        }
    }
    if (argc - optind != 1)
        return tool_usage_error("check: expected one FILE (try --help)");
    const char *path = argv[optind];
    const char *format = tool_format_of(path, fmt);
    if (!format)
        return 1;
    if (!strcmp(format, "vhdx"))
        return check_vhdx(path, repair != 0, json, quiet);
    if (strcmp(format, "qcow2")) {
        tool_error("%s: %s images have no metadata to check", path, format);
        return EXIT_NO_CHECK;
    }

    struct qcow2_state *s;
    int err = qcow2_check_open(path, repair != 0, &s);
    if (err)
        return tool_error("%s: cannot open: %s", path, strerror(-err));
    struct qcow2_check_result r;
    err = qcow2_check(s, repair, &r);
    if (!err && (r.corruptions_fixed || r.leaks_fixed)) {
        uint64_t leaks_fixed = r.leaks_fixed;
        uint64_t corruptions_fixed = r.corruptions_fixed;
        if (!json && !quiet)
            printf("The following inconsistencies were found and repaired:"
                   "\n\n    %" PRIu64 " leaked clusters\n    %" PRIu64
                   " corruptions\n\nDouble checking the fixed image now..."
                   "\n", leaks_fixed, corruptions_fixed);
        err = qcow2_check(s, 0, &r);
        r.leaks_fixed = leaks_fixed;
        r.corruptions_fixed = corruptions_fixed;
    }
    qcow2_check_close(s);
    if (!err && !quiet) {
        if (json)
            print_json(path, "qcow2", &r);
        else
            print_human(&r);
    }
    if (err || r.check_errors) {
        if (err)
            tool_error("%s: check failed: %s", path, strerror(-err));
        else
            tool_error("%s: check failed", path);
        return 1;
    }
    if (r.corruptions)
        return 2;
    if (r.leaks)
        return 3;
    return 0;
}
