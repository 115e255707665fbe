/* The export registry: names to open images.  Exports are opened once at
 * startup, before any socket is listening, so a bad image fails the start
 * with its one-line reason instead of failing clients later.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "server.h"

struct export *srv_find_export(const char *name, size_t len)
{
    for (struct export *e = srv.opts.exports; e; e = e->next)
        if (strlen(e->name) == len && memcmp(e->name, name, len) == 0)
            return e;
    return NULL;
}

static int load_bitmaps(struct export *e)
{
    const struct img_ops *ops = e->img->ops;
    if (!ops->bitmap_count || !ops->bitmap_info)
        return 0;
    size_t n = ops->bitmap_count(e->img);
    if (n == 0)
        return 0;
    e->bitmap_ctx = calloc(n, sizeof *e->bitmap_ctx);
    if (!e->bitmap_ctx)
        return -ENOMEM;
    for (size_t i = 0; i < n; i++) {
        struct img_bitmap_info info;
        int err = ops->bitmap_info(e->img, i, &info);
        if (err)
            return err;
        if (asprintf(&e->bitmap_ctx[i], "qemu:dirty-bitmap:%s",
                     info.name) < 0)
            return -ENOMEM;
        e->n_bitmaps++;
    }
    return 0;
}

int srv_open_exports(struct srv_options *o)
{
    for (struct export *e = o->exports; e; e = e->next) {
        struct img_open_args args = {
            .path = e->image_path,
            .format = e->format,
            .read_only = e->read_only,
            .snapshot = e->snapshot,
            .key_file = e->key_file,
            .cache_size = o->cache_size,
            .luks_max_iter = o->luks_max_iter,
        };
        int err = img_open(&args, &e->img);
        if (err) {
            fprintf(stderr, "diskserve: cannot open %s: %s\n",
                    e->image_path, strerror(-err));
            return err;
        }
        err = load_bitmaps(e);
        if (err) {
            fprintf(stderr, "diskserve: %s: cannot list bitmaps: %s\n",
                    e->image_path, strerror(-err));
            return err;
        }
    }
    return 0;
}

void srv_flush_exports(void)
{
    for (struct export *e = srv.opts.exports; e; e = e->next) {
        struct image *img = e->img;
        if (img && !img->read_only && img->ops->flush) {
            int err = img->ops->flush(img);
            if (err)
                srv_log("%s: flush at shutdown failed: %s", e->image_path,
                        strerror(-err));
        }
    }
}

void srv_close_exports(void)
{
    for (struct export *e = srv.opts.exports; e; e = e->next) {
        img_close(e->img);
        e->img = NULL;
    }
}
