/* diskserve-img bitmap: add, remove, clear, enable, disable and merge
 * the persistent dirty bitmaps of a stopped qcow2 image, with qemu-img
 * bitmap's options.  Several operations in one call run in the order
 * given, as qemu-img runs them, but all or nothing: they go to the
 * driver as one bitmap_apply, through the same code the server uses,
 * and the image's close stores the result.  The option parser here
 * serves the --control form (img-bitmap-remote.c) too.
 */
#include <errno.h>
#include <getopt.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "image.h"
#include "img-tool.h"

/* Options shared by both forms of the command; the offline form starts
 * past --control and --node. */
enum { OPT_CONTROL = 256, OPT_NODE, OPT_ADD, OPT_REMOVE, OPT_CLEAR,
       OPT_ENABLE, OPT_DISABLE, OPT_MERGE };
static const struct option bitmap_longopts[] = {
    { "control", required_argument, NULL, OPT_CONTROL },
    { "node", required_argument, NULL, OPT_NODE },
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

static int add_action(struct tool_bitmap_args *ba, int c)
{
    if (ba->n == TOOL_BITMAP_MAX_ACTIONS)
        return tool_usage_error("bitmap: more than %d operations",
                                TOOL_BITMAP_MAX_ACTIONS);
    struct img_bitmap_action *a = &ba->acts[ba->n];
    memset(a, 0, sizeof *a);
    switch (c) {
    case OPT_ADD:
        a->op = IMG_BITMAP_ADD;
        a->persistent = true;
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
        ba->sources[ba->n] = optarg;
        a->sources = &ba->sources[ba->n];
        a->n_sources = 1;
        break;
    }
    ba->n++;
    return 0;
}

int tool_parse_bitmap_args(int argc, char **argv, bool remote,
                           struct tool_bitmap_args *ba)
{
    const struct option *longopts =
        remote ? bitmap_longopts : bitmap_longopts + 2;
    bool has_add = false;
    int c, err;

    memset(ba, 0, sizeof *ba);
    optind = 1;
    opterr = 0;
    while ((c = getopt_long(argc, argv, remote ? "+g:h" : "+f:g:h",
                            longopts, NULL)) != -1) {
        switch (c) {
        case OPT_ADD:
            has_add = true;
            /* fall through */
        case OPT_REMOVE:
        case OPT_CLEAR:
        case OPT_ENABLE:
        case OPT_DISABLE:
        case OPT_MERGE:
            err = add_action(ba, c);
            if (err)
                return err;
            break;
        case OPT_CONTROL:
            ba->control = optarg;
            break;
        case OPT_NODE:
            ba->node = optarg;
            break;
        case 'f':
            ba->format = optarg;
            break;
        case 'g':
            if (tool_parse_size(optarg, &ba->granularity) != 0 ||
                ba->granularity == 0)
                return tool_usage_error("bitmap: bad granularity '%.64s'",
                                        optarg);
            break;
        case 'h':
            tool_usage();
            ba->help = true;
            return 0;
        default:
            return tool_usage_error("bitmap: unknown option or missing "
                                    "argument '%.64s'", argv[optind - 1]);
        }
    }
    if (ba->n == 0)
        return tool_usage_error("bitmap: need at least one of --add, "
                                "--remove, --clear, --enable, --disable "
                                "or --merge");
    if (ba->granularity && !has_add)
        return tool_usage_error("bitmap: -g only goes with --add");
    for (size_t i = 0; i < ba->n; i++)
        if (ba->acts[i].op == IMG_BITMAP_ADD)
            ba->acts[i].granularity = ba->granularity;
    return 0;
}

int tool_cmd_bitmap(int argc, char **argv)
{
    struct tool_bitmap_args ba;
    int err = tool_parse_bitmap_args(argc, argv, false, &ba);
    if (err || ba.help)
        return err;
    if (argc - optind != 2)
        return tool_usage_error("bitmap: expected FILE and BITMAP (try "
                                "--help)");
    const char *path = argv[optind];
    const char *name = argv[optind + 1];
    struct img_bitmap_action *acts = ba.acts;
    size_t n = ba.n;
    for (size_t i = 0; i < n; i++)
        acts[i].name = name;

    const char *format = tool_format_of(path, ba.format);
    if (!format)
        return 1;
    if (strcmp(format, "qcow2"))
        return tool_error("%s: %s images have no dirty bitmaps", path,
                          format);
    struct img_open_args args = { .path = path, .format = "qcow2" };
    struct image *img;
    err = img_open(&args, &img);
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
