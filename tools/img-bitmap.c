/* diskserve-img bitmap: add, remove, clear, enable, disable and merge
 * the persistent dirty bitmaps of a stopped qcow2 image, with qemu-img
 * bitmap's options.  Several operations in one call run in the order
 * given, as qemu-img runs them, but all or nothing: they go to the
 * driver as one bitmap_apply, through the same code the server uses,
 * and the image's close stores the result.
 */
#include <errno.h>
#include <getopt.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "image.h"
#include "img-tool.h"

/* Most operations one call takes (qemu-img has no limit; ours is only
 * to keep the array on the stack). */
#define MAX_ACTIONS 64

int tool_cmd_bitmap(int argc, char **argv)
{
    enum { OPT_ADD = 256, OPT_REMOVE, OPT_CLEAR, OPT_ENABLE, OPT_DISABLE,
           OPT_MERGE };
    static const struct option longopts[] = {
        { "add", no_argument, NULL, OPT_ADD },
        { "remove", no_argument, NULL, OPT_REMOVE },
        { "clear", no_argument, NULL, OPT_CLEAR },
        { "enable", no_argument, NULL, OPT_ENABLE },
        { "disable", no_argument, NULL, OPT_DISABLE },
        { "merge", required_argument, NULL, OPT_MERGE },
        { "granularity", required_argument, NULL, 'g' },
        { "help", no_argument, NULL, 'h' },
        { NULL, 0, NULL, 0 },
    };
    struct img_bitmap_action acts[MAX_ACTIONS];
    const char *sources[MAX_ACTIONS];
    const char *fmt = NULL;
    uint64_t gran = 0;
    bool has_gran = false, has_add = false;
    size_t n = 0;
    int c;

    optind = 1;
    opterr = 0;
    while ((c = getopt_long(argc, argv, "+f:g:h", longopts, NULL)) != -1) {
        if (c >= OPT_ADD && c <= OPT_MERGE) {
            if (n == MAX_ACTIONS)
                return tool_usage_error("bitmap: more than %d operations",
                                        MAX_ACTIONS);
            struct img_bitmap_action *a = &acts[n];
            memset(a, 0, sizeof *a);
            switch (c) {
            case OPT_ADD:
                a->op = IMG_BITMAP_ADD;
                a->persistent = true;
                has_add = true;
                break;
            case OPT_REMOVE:
                a->op = IMG_BITMAP_REMOVE;
                break;
            case OPT_CLEAR:
                a->op = IMG_BITMAP_CLEAR;
                break;
            case OPT_ENABLE:
                a->op = IMG_BITMAP_ENABLE;
                break;
            case OPT_DISABLE:
                a->op = IMG_BITMAP_DISABLE;
                break;
            default:
                a->op = IMG_BITMAP_MERGE;
                sources[n] = optarg;
                a->sources = &sources[n];
                a->n_sources = 1;
                break;
            }
            n++;
            continue;
        }
        switch (c) {
        case 'f':
            fmt = optarg;
            break;
        case 'g':
            if (tool_parse_size(optarg, &gran) != 0 || gran == 0)
                return tool_usage_error("bitmap: bad granularity '%.64s'",
                                        optarg);
            has_gran = true;
            break;
        case 'h':
            tool_usage();
            return 0;
        default:
            return tool_usage_error("bitmap: unknown option or missing "
                                    "argument '%.64s'", argv[optind - 1]);
        }
    }
    if (n == 0)
        return tool_usage_error("bitmap: need at least one of --add, "
                                "--remove, --clear, --enable, --disable "
                                "or --merge");
    if (has_gran && !has_add)
        return tool_usage_error("bitmap: -g only goes with --add");
    if (argc - optind != 2)
        return tool_usage_error("bitmap: expected FILE and BITMAP (try "
                                "--help)");
    const char *path = argv[optind];
    const char *name = argv[optind + 1];
    for (size_t i = 0; i < n; i++) {
        acts[i].name = name;
        if (acts[i].op == IMG_BITMAP_ADD)
            acts[i].granularity = gran;
    }

    const char *format = tool_format_of(path, fmt);
    if (!format)
        return 1;
    if (strcmp(format, "qcow2"))
        return tool_error("%s: %s images have no dirty bitmaps", path,
                          format);
    struct img_open_args args = { .path = path, .format = "qcow2" };
    struct image *img;
    int err = img_open(&args, &img);
    if (err)
        return 1;           /* the driver logged why */
    char msg[512];
    err = img->ops->bitmap_apply(img, acts, n, msg, sizeof msg);
    if (err) {
        tool_error("%s: bitmap '%.200s': %s", path, name,
                   msg[0] ? msg : strerror(-err));
        img_close(img);
        return 1;
    }
    err = img->ops->flush(img);
    img_close(img);
    if (err)
        return tool_error("%s: %s", path, strerror(-err));
    return 0;
}
