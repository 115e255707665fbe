/* The export registry: names to open images.  Exports are opened once at
 * startup, before any socket is listening, so a bad image fails the start
 * with its one-line reason instead of failing clients later.
 *
 * The dirty bitmaps an export offers are not fixed: the control socket
 * adds and removes them while clients are connected, so each meta
 * context negotiation asks the driver for the current list.
 */
#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "io.h"
#include "server.h"

struct export *srv_find_export(const char *name, size_t len)
{
    for (struct export *e = srv.opts.exports; e; e = e->next)
        if (strlen(e->name) == len && memcmp(e->name, name, len) == 0)
            return e;
    return NULL;
}

void srv_free_names(char **names, size_t n)
{
    if (!names)
        return;
    for (size_t i = 0; i < n; i++)
        free(names[i]);
    free(names);
}

static bool is_offered(const struct export *e, const char *name)
{
    if (e->n_bitmaps == 0)
        return true;
    for (size_t i = 0; i < e->n_bitmaps; i++)
        if (!strcmp(e->bitmaps[i], name))
            return true;
    return false;
}

int srv_export_bitmaps(struct export *e, char ***names, size_t *n)
{
    const struct img_ops *ops = e->img->ops;
    char **v = NULL;
    size_t count = 0;

    *names = NULL;
    *n = 0;
    if (!ops->bitmap_count || !ops->bitmap_info)
        return 0;
    size_t total = ops->bitmap_count(e->img);
    if (total == 0)
        return 0;
    v = calloc(total, sizeof *v);
    if (!v)
        return -ENOMEM;
    for (size_t i = 0; i < total; i++) {
        struct img_bitmap_info info;
        int err = ops->bitmap_info(e->img, i, &info);
        if (err == -ENOENT)
            break;      /* the list shrank meanwhile */
        if (err) {
            srv_free_names(v, count);
            return err;
        }
        if (info.inconsistent || !is_offered(e, info.name))
            continue;
        v[count] = strdup(info.name);
        if (!v[count]) {
            srv_free_names(v, count);
            return -ENOMEM;
        }
        count++;
    }
    *names = v;
    *n = count;
    return 0;
}

/* Every bitmap -B names must exist and be consistent, as qemu-nbd
 * demands; prints one line and returns -ENOENT otherwise. */
static int check_bitmap_options(struct export *e)
{
    const struct img_ops *ops = e->img->ops;
    size_t total = ops->bitmap_count ? ops->bitmap_count(e->img) : 0;

    for (size_t b = 0; b < e->n_bitmaps; b++) {
        struct img_bitmap_info info;
        bool found = false;
        for (size_t i = 0; i < total && !found; i++) {
            int err = ops->bitmap_info(e->img, i, &info);
            if (err) {
                fprintf(stderr, "diskserve: %s: cannot list bitmaps: %s\n",
                        e->image_path, strerror(-err));
                return err;
            }
            found = !strcmp(info.name, e->bitmaps[b]);
        }
        if (!found) {
            fprintf(stderr, "diskserve: %s: bitmap '%.64s' not found\n",
                    e->image_path, e->bitmaps[b]);
            return -ENOENT;
        }
        if (info.inconsistent) {
            fprintf(stderr, "diskserve: %s: bitmap '%.64s' is inconsistent "
                    "and cannot be exported\n", e->image_path,
                    e->bitmaps[b]);
            return -EINVAL;
        }
    }
    return 0;
}

/* -l SNAP (snapshot = SNAP) on an RBD image names an RBD snapshot,
 * unless the export is qcow2, given or probed (then it is one of the
 * qcow2 file's own): e->image_path becomes rbd:POOL/IMAGE@SNAP[:OPTIONS].
 * 0 or -errno. */
static int rbd_snapshot_path(struct export *e)
{
    if (!e->snapshot || !io_is_remote_name(e->image_path) ||
        (e->format && strcmp(e->format, "qcow2") == 0))
        return 0;
    const char *path = e->image_path;
    if (!e->format) {
        const struct img_ops *ops = img_probe_file(path);
        if (ops && strcmp(ops->name, "qcow2") == 0)
            return 0;
        /* Otherwise an RBD snapshot; a failed probe is reported by the
         * open that follows. */
    }
    size_t head = strcspn(path + 4, ":") + 4;   /* after "rbd:" */
    if (memchr(path, '@', head)) {
        fprintf(stderr, "diskserve: %s: a snapshot in the name and -l %s: "
                "give one\n", path, e->snapshot);
        return -EINVAL;
    }
    if (!*e->snapshot || strpbrk(e->snapshot, ":@/")) {
        fprintf(stderr, "diskserve: %s: -l '%s': an RBD snapshot name "
                "without ':', '@' or '/'\n", path, e->snapshot);
        return -EINVAL;
    }
    char *p;
    if (asprintf(&p, "%.*s@%s%s", (int)head, path, e->snapshot,
                 path + head) < 0)
        return -ENOMEM;
    free(e->image_path);
    e->image_path = p;
    free(e->snapshot);
    e->snapshot = NULL;
    return 0;
}

int srv_open_exports(struct srv_options *o)
{
    for (struct export *e = o->exports; e; e = e->next) {
        int err = rbd_snapshot_path(e);
        if (err)
            return err;
        struct img_open_args args = {
            .path = e->image_path,
            .format = e->format,
            .read_only = e->read_only || io_is_snapshot_name(e->image_path),
            .snapshot = e->snapshot,
            .key_file = e->key_file,
            .cache_size = o->cache_size,
            .luks_max_iter = o->luks_max_iter,
            .bitmaps_crash_safe = o->bitmaps_crash_safe,
        };
        err = img_open(&args, &e->img);
        if (err && io_is_remote_name(e->image_path)) {
            return err;         /* the backend or driver said why */
        } else if (err) {
            fprintf(stderr, "diskserve: cannot open %s: %s\n",
                    e->image_path, strerror(-err));
            return err;
        }
        err = check_bitmap_options(e);
        if (err)
            return err;
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
