/* Format registry, probing and the helpers every driver shares.
 *
 * img_open() picks a driver by name or by probing the file's first bytes,
 * then hands over to the driver's open.  Raw is the fallback probe: any
 * file nobody else claims is raw.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "image.h"
#include "io-backend.h"
#include "io.h"

#ifdef HAVE_LIBRBD
/* formats/io.c refers to the RBD backend weakly: this strong reference
 * links it into every program that opens images. */
static int (*const rbd_backend)(const char *, bool,
                                const struct io_backend_ops **, void **)
    __attribute__((used)) = io_rbd_open;
#endif

static const struct img_ops *const drivers[] = {
    &qcow2_ops,
    &vhdx_ops,
    &raw_ops,
};

#define N_DRIVERS (sizeof drivers / sizeof drivers[0])

void img_log(const char *fmt, ...)
{
    char line[1024];
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(line, sizeof line, fmt, ap);
    va_end(ap);
    /* One write so lines from threads never interleave. */
    size_t n = strlen(line);
    if (n + 1 < sizeof line) {
        line[n++] = '\n';
    } else {
        line[sizeof line - 2] = '\n';
        n = sizeof line - 1;
    }
    ssize_t r = write(STDERR_FILENO, line, n);
    (void)r;
}

bool img_extents_add(struct img_extents *e, uint64_t length, uint32_t flags,
                     uint32_t depth)
{
    if (length == 0)
        return true;
    if (e->n > 0) {
        struct img_extent *last = &e->v[e->n - 1];
        if (last->flags == flags && last->depth == depth &&
            last->length + length >= last->length) {
            last->length += length;
            e->end += length;
            return true;
        }
    }
    if (e->n == e->cap)
        return false;
    e->v[e->n].length = length;
    e->v[e->n].flags = flags;
    e->v[e->n].depth = depth;
    e->n++;
    e->end += length;
    return true;
}

const struct img_ops *img_find_driver(const char *name)
{
    for (size_t i = 0; i < N_DRIVERS; i++)
        if (strcmp(drivers[i]->name, name) == 0)
            return drivers[i];
    return NULL;
}

const struct img_ops *img_probe_file(const char *path)
{
    uint8_t buf[4096];
    int fd = io_open(path, false);
    if (fd < 0) {
        errno = -fd;
        return NULL;
    }
    memset(buf, 0, sizeof buf);
    ssize_t n = sizeof buf;
    int err = 0;
    if (io_is_file(fd)) {
        n = pread(fd, buf, sizeof buf, 0);
        err = n < 0 ? -errno : 0;
    } else {
        err = io_pread_full(fd, buf, sizeof buf, 0);
        err = err == -ENODATA ? 0 : err;   /* a remote image < 4 KiB */
    }
    io_close(fd);
    if (err) {
        errno = -err;
        return NULL;
    }
    const struct img_ops *best = NULL;
    int best_score = 0;
    for (size_t i = 0; i < N_DRIVERS; i++) {
        if (!drivers[i]->probe)
            continue;
        int s = drivers[i]->probe(buf, (size_t)n);
        if (s > best_score) {
            best_score = s;
            best = drivers[i];
        }
    }
    if (!best)
        errno = ENOTSUP;
    return best;
}

int img_open(const struct img_open_args *args, struct image **out)
{
    const struct img_ops *ops;

    if (args->format) {
        ops = img_find_driver(args->format);
        if (!ops) {
            img_log("%s: unknown format '%s' (known: raw, qcow2, vhdx)",
                    args->path, args->format);
            return -EINVAL;
        }
    } else {
        ops = img_probe_file(args->path);
        if (!ops && io_is_remote_name(args->path))
            return -errno;      /* the backend said why */
        if (!ops) {
            int err = errno;
            img_log("%s: cannot probe format: %s", args->path,
                    strerror(err));
            return -err;
        }
    }
    return ops->open(args, out);
}

void img_close(struct image *img)
{
    if (img)
        img->ops->close(img);
}
