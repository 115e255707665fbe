/* The Ceph RBD storage backend: an image in a RADOS pool, reached with
 * librbd, under any format driver (formats/io.c dispatches to it).
 *
 * Names follow qemu: POOL/IMAGE[@SNAP][:conf=PATH][:id=USER].  Each open
 * image has its own cluster connection.  Calls come from worker threads
 * and block: every I/O is a librbd aio submitted and waited for, so a
 * pool of workers keeps as many requests in flight at the cluster.
 * rbd_dev_aio is the exception: it submits and returns, and librbd's
 * completion callback (on a librbd thread) reports the result, so an
 * event loop can keep requests in flight without any thread of its own.
 *
 * A writable image with the exclusive-lock feature has its lock taken
 * explicitly at open.  librbd then refuses to hand it over when another
 * client asks, so a second writer fails at open with a clear message
 * instead of the two passing the lock back and forth on every write.
 *
 * Locking: grow_lock serialises resizes (a write past the end grows the
 * image first, as a file would grow); librbd is thread-safe otherwise.
 */
#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <rados/librados.h>
#include <rbd/librbd.h>

#include "image.h"
#include "io-backend.h"

/* Block status asks librbd about this much of the image at a time. */
#define SEEK_WINDOW (64ULL << 20)
#define MAX_SEEK_EXTENTS 1024

struct rbd_dev {
    rados_t cluster;
    rados_ioctx_t ioctx;
    rbd_image_t image;
    char *label;                /* "pool/image[@snap]", for the log */
    pthread_mutex_t grow_lock;
};

struct rbd_name {
    char *buf;                  /* owns the strings below */
    char *pool, *image, *snap, *conf, *id;
};

/* Split spec into its parts; 0 or -EINVAL (logged). */
static int parse_name(const char *spec, struct rbd_name *n)
{
    memset(n, 0, sizeof *n);
    n->buf = strdup(spec);
    if (!n->buf)
        return -ENOMEM;
    char *opts = strchr(n->buf, ':');
    if (opts)
        *opts++ = '\0';
    n->pool = n->buf;
    char *slash = strchr(n->buf, '/');
    if (slash) {
        *slash = '\0';
        n->image = slash + 1;
        char *at = strchr(n->image, '@');
        if (at) {
            *at = '\0';
            n->snap = at + 1;
        }
    }
    if (!*n->pool || !n->image || !*n->image || (n->snap && !*n->snap))
        goto bad;
    while (opts && *opts) {
        char *next = strchr(opts, ':');
        if (next)
            *next++ = '\0';
        if (strncmp(opts, "conf=", 5) == 0 && opts[5])
            n->conf = opts + 5;
        else if (strncmp(opts, "id=", 3) == 0 && opts[3])
            n->id = opts + 3;
        else
            goto bad;
        opts = next;
    }
    return 0;
bad:
    img_log("rbd:%.200s: bad name (want rbd:POOL/IMAGE[@SNAP]"
            "[:conf=PATH][:id=USER])", spec);
    free(n->buf);
    n->buf = NULL;
    return -EINVAL;
}

/* Wait for c, release it and return its result. */
static ssize_t finish(rbd_completion_t c, int submitted)
{
    if (submitted < 0) {
        rbd_aio_release(c);
        return submitted;
    }
    rbd_aio_wait_for_complete(c);
    ssize_t ret = rbd_aio_get_return_value(c);
    rbd_aio_release(c);
    return ret;
}

static int new_completion(rbd_completion_t *c)
{
    return rbd_aio_create_completion(NULL, NULL, c);
}

static int rbd_dev_size(void *dev, uint64_t *size)
{
    struct rbd_dev *d = dev;
    int err = rbd_get_size(d->image, size);
    if (err < 0)
        img_log("rbd: %s: size: %s", d->label, strerror(-err));
    return err;
}

static ssize_t rbd_dev_pread(void *dev, void *buf, size_t len, uint64_t off)
{
    struct rbd_dev *d = dev;
    rbd_completion_t c;
    uint64_t size;
    int err = rbd_dev_size(d, &size);

    if (err < 0)
        return err;
    if (off >= size)
        return 0;
    if (len > size - off)
        len = (size_t)(size - off);
    if ((err = new_completion(&c)) < 0)
        return err;
    ssize_t ret = finish(c, rbd_aio_read(d->image, off, len, buf, c));
    if (ret < 0)
        img_log("rbd: %s: read %zu bytes at %" PRIu64 ": %s", d->label, len,
                off, strerror((int)-ret));
    return ret;
}

static int rbd_dev_resize(void *dev, uint64_t size)
{
    struct rbd_dev *d = dev;
    int err = rbd_resize(d->image, size);
    if (err < 0)
        img_log("rbd: %s: resize to %" PRIu64 " bytes: %s", d->label, size,
                strerror(-err));
    return err;
}

/* Make the image at least end bytes long. */
static int grow_to(struct rbd_dev *d, uint64_t end)
{
    uint64_t size;
    int err;

    pthread_mutex_lock(&d->grow_lock);
    err = rbd_dev_size(d, &size);
    if (!err && end > size)
        err = rbd_dev_resize(d, end);
    pthread_mutex_unlock(&d->grow_lock);
    return err;
}

static ssize_t rbd_dev_pwritev(void *dev, const struct iovec *iov,
                               int iovcnt, uint64_t off)
{
    struct rbd_dev *d = dev;
    rbd_completion_t c;
    uint64_t len = 0, size;
    int err;

    for (int i = 0; i < iovcnt; i++)
        len += iov[i].iov_len;
    if ((err = rbd_dev_size(d, &size)) < 0)
        return err;
    if (off + len > size && (err = grow_to(d, off + len)) < 0)
        return err;
    if ((err = new_completion(&c)) < 0)
        return err;
    ssize_t ret = finish(c, rbd_aio_writev(d->image, iov, iovcnt, off, c));
    if (ret < 0)
        img_log("rbd: %s: write %" PRIu64 " bytes at %" PRIu64 ": %s",
                d->label, len, off, strerror((int)-ret));
    return ret < 0 ? ret : (ssize_t)len;
}

static int rbd_dev_sync(void *dev)
{
    struct rbd_dev *d = dev;
    rbd_completion_t c;
    int err = new_completion(&c);

    if (err < 0)
        return err;
    err = (int)finish(c, rbd_aio_flush(d->image, c));
    if (err < 0)
        img_log("rbd: %s: flush: %s", d->label, strerror(-err));
    return err < 0 ? err : 0;
}

static int rbd_dev_discard(void *dev, uint64_t off, uint64_t len)
{
    struct rbd_dev *d = dev;
    rbd_completion_t c;
    int err = new_completion(&c);

    if (err < 0)
        return err;
    err = (int)finish(c, rbd_aio_discard(d->image, off, len, c));
    if (err < 0)
        img_log("rbd: %s: discard %" PRIu64 " bytes at %" PRIu64 ": %s",
                d->label, len, off, strerror(-err));
    return err < 0 ? err : 0;
}

static int rbd_dev_zero(void *dev, uint64_t off, uint64_t len)
{
    struct rbd_dev *d = dev;
    rbd_completion_t c;
    int err = new_completion(&c);

    if (err < 0)
        return err;
    err = (int)finish(c, rbd_aio_write_zeroes(
        d->image, off, len, c, RBD_WRITE_ZEROES_FLAG_THICK_PROVISION, 0));
    if (err < 0)
        img_log("rbd: %s: write zeroes %" PRIu64 " bytes at %" PRIu64
                ": %s", d->label, len, off, strerror(-err));
    return err < 0 ? err : 0;
}

/* librbd's completion callback for rbd_dev_aio: on a librbd thread. */
static void aio_complete(rbd_completion_t c, void *arg)
{
    struct io_aio *a = arg;
    struct rbd_dev *d = a->priv;
    ssize_t ret = rbd_aio_get_return_value(c);
    static const char *const what[] = {
        [IO_AIO_READ] = "read", [IO_AIO_WRITE] = "write",
        [IO_AIO_FLUSH] = "flush", [IO_AIO_DISCARD] = "discard",
        [IO_AIO_ZERO] = "write zeroes",
    };

    rbd_aio_release(c);
    if (ret < 0 && a->op == IO_AIO_FLUSH) {
        img_log("rbd: %s: flush: %s", d->label, strerror((int)-ret));
    } else if (ret < 0) {
        img_log("rbd: %s: %s %" PRIu64 " bytes at %" PRIu64 ": %s",
                d->label, what[a->op], a->len, a->off, strerror((int)-ret));
    } else if (a->op == IO_AIO_READ && (uint64_t)ret < a->len) {
        /* The image shrank under us: what is gone reads as zeros. */
        memset((uint8_t *)a->buf + ret, 0, a->len - (uint64_t)ret);
    }
    a->done(a, ret < 0 ? (int)ret : 0);
}

static int rbd_dev_aio(void *dev, struct io_aio *a)
{
    struct rbd_dev *d = dev;
    rbd_completion_t c;
    int err = rbd_aio_create_completion(a, aio_complete, &c);

    if (err < 0)
        return err;
    a->priv = d;
    switch (a->op) {
    case IO_AIO_READ:
        err = rbd_aio_read(d->image, a->off, a->len, a->buf, c);
        break;
    case IO_AIO_WRITE:
        err = (int)rbd_aio_write(d->image, a->off, a->len, a->buf, c);
        break;
    case IO_AIO_FLUSH:
        err = rbd_aio_flush(d->image, c);
        break;
    case IO_AIO_DISCARD:
        err = rbd_aio_discard(d->image, a->off, a->len, c);
        break;
    case IO_AIO_ZERO:
        err = rbd_aio_write_zeroes(d->image, a->off, a->len, c,
                                   RBD_WRITE_ZEROES_FLAG_THICK_PROVISION, 0);
        break;
    default:
        err = -EINVAL;
        break;
    }
    if (err < 0)
        rbd_aio_release(c);
    return err < 0 ? err : 0;
}

struct extent_list {
    uint64_t off[MAX_SEEK_EXTENTS], len[MAX_SEEK_EXTENTS];
    unsigned n;
    bool overflow;
};

static int collect_extent(uint64_t off, size_t len, int exists, void *arg)
{
    struct extent_list *l = arg;

    if (!exists)
        return 0;
    if (l->n == MAX_SEEK_EXTENTS) {
        l->overflow = true;
        return -E2BIG;
    }
    l->off[l->n] = off;
    l->len[l->n] = len;
    l->n++;
    return 0;
}

static void sort_extents(struct extent_list *l)
{
    for (unsigned i = 1; i < l->n; i++)
        for (unsigned j = i; j > 0 && l->off[j - 1] > l->off[j]; j--) {
            uint64_t o = l->off[j], n = l->len[j];
            l->off[j] = l->off[j - 1];
            l->len[j] = l->len[j - 1];
            l->off[j - 1] = o;
            l->len[j - 1] = n;
        }
}

static int rbd_dev_seek(void *dev, uint64_t off, bool data, uint64_t *pos)
{
    struct rbd_dev *d = dev;
    uint64_t size, wend;
    int err = rbd_dev_size(d, &size);

    if (err < 0)
        return err;
    wend = size - off > SEEK_WINDOW ? off + SEEK_WINDOW : size;
    struct extent_list *l = calloc(1, sizeof *l);
    if (!l)
        return -ENOMEM;
    err = rbd_diff_iterate2(d->image, NULL, off, wend - off, 1, 0,
                            collect_extent, l);
    if (err < 0 && !l->overflow) {
        img_log("rbd: %s: allocation at %" PRIu64 ": %s", d->label, off,
                strerror(-err));
        free(l);
        return err;
    }
    if (l->overflow) {
        /* Too fragmented to tell cheaply: data, which is always safe. */
        *pos = data ? off : wend;
        free(l);
        return 0;
    }
    sort_extents(l);
    uint64_t cur = off;
    if (data) {
        *pos = wend;
        for (unsigned i = 0; i < l->n; i++)
            if (l->off[i] + l->len[i] > off) {
                *pos = l->off[i] > off ? l->off[i] : off;
                break;
            }
        err = *pos >= size ? -ENXIO : 0;
    } else {
        for (unsigned i = 0; i < l->n && l->off[i] <= cur; i++)
            if (l->off[i] + l->len[i] > cur)
                cur = l->off[i] + l->len[i];
        *pos = cur < wend ? cur : wend;
    }
    free(l);
    return err;
}

static int rbd_dev_snapshots(void *dev, char ***names, size_t *n)
{
    struct rbd_dev *d = dev;
    rbd_snap_info_t *snaps = NULL;
    int max = 16, count;

    *names = NULL;
    *n = 0;
    for (;;) {
        snaps = calloc((size_t)max, sizeof *snaps);
        if (!snaps)
            return -ENOMEM;
        count = rbd_snap_list(d->image, snaps, &max);
        if (count != -ERANGE)
            break;
        free(snaps);
    }
    if (count < 0) {
        free(snaps);
        img_log("rbd: %s: listing snapshots: %s", d->label,
                strerror(-count));
        return count;
    }
    char **v = calloc((size_t)count + 1, sizeof *v);
    int err = v ? 0 : -ENOMEM;
    /* rbd_snap_list gives them by id, which is creation order. */
    for (int i = 0; i < count && !err; i++) {
        v[i] = strdup(snaps[i].name);
        if (!v[i])
            err = -ENOMEM;
    }
    rbd_snap_list_end(snaps);
    free(snaps);
    if (err) {
        for (int i = 0; v && i < count; i++)
            free(v[i]);
        free(v);
        return err;
    }
    *names = v;
    *n = (size_t)count;
    return 0;
}

struct diff_list {
    uint64_t *off, *len;
    size_t n, cap;
};

static int collect_diff(uint64_t off, size_t len, int exists, void *arg)
{
    struct diff_list *l = arg;

    (void)exists;               /* written or discarded: changed either way */
    if (l->n == l->cap) {
        size_t cap = l->cap ? l->cap * 2 : 256;
        uint64_t *o = realloc(l->off, cap * sizeof *o);
        if (!o)
            return -ENOMEM;
        l->off = o;
        uint64_t *n = realloc(l->len, cap * sizeof *n);
        if (!n)
            return -ENOMEM;
        l->len = n;
        l->cap = cap;
    }
    l->off[l->n] = off;
    l->len[l->n] = len;
    l->n++;
    return 0;
}

static int rbd_dev_diff(void *dev, const char *snap, uint64_t off,
                        uint64_t len, int (*cb)(uint64_t, uint64_t, void *),
                        void *arg)
{
    struct rbd_dev *d = dev;
    uint64_t end = off + len;
    int err = 0;

    /* A window at a time, so a large range needs bounded memory. */
    while (off < end && !err) {
        uint64_t n = end - off > 4 * SEEK_WINDOW ? 4 * SEEK_WINDOW
                                                 : end - off;
        struct diff_list l = { 0 };
        err = rbd_diff_iterate2(d->image, snap, off, n, 1, 0, collect_diff,
                                &l);
        if (err < 0 && err != -ENOENT)
            img_log("rbd: %s: changes since %s at %" PRIu64 ": %s",
                    d->label, snap, off, strerror(-err));
        /* Sort (insertion: diff_iterate gives them nearly in order). */
        for (size_t i = 1; !err && i < l.n; i++)
            for (size_t j = i; j > 0 && l.off[j - 1] > l.off[j]; j--) {
                uint64_t o = l.off[j], m = l.len[j];
                l.off[j] = l.off[j - 1];
                l.len[j] = l.len[j - 1];
                l.off[j - 1] = o;
                l.len[j - 1] = m;
            }
        uint64_t a = 0, b = 0;      /* the run being merged, if b > a */
        for (size_t i = 0; !err && i < l.n; i++) {
            uint64_t s = l.off[i] > off ? l.off[i] : off;
            uint64_t e = l.off[i] + l.len[i] < off + n
                         ? l.off[i] + l.len[i] : off + n;
            if (e <= s)
                continue;
            if (b > a && s <= b) {
                b = e > b ? e : b;
                continue;
            }
            if (b > a)
                err = cb(a, b - a, arg);
            a = s;
            b = e;
        }
        if (!err && b > a)
            err = cb(a, b - a, arg);
        free(l.off);
        free(l.len);
        off += n;
    }
    return err;
}

static void rbd_dev_close(void *dev)
{
    struct rbd_dev *d = dev;

    if (d->image)
        rbd_close(d->image);
    if (d->ioctx)
        rados_ioctx_destroy(d->ioctx);
    if (d->cluster)
        rados_shutdown(d->cluster);
    pthread_mutex_destroy(&d->grow_lock);
    free(d->label);
    free(d);
}

static const struct io_backend_ops rbd_backend_ops = {
    .name = "rbd",
    .pread = rbd_dev_pread,
    .pwritev = rbd_dev_pwritev,
    .sync = rbd_dev_sync,
    .size = rbd_dev_size,
    .resize = rbd_dev_resize,
    .discard = rbd_dev_discard,
    .zero = rbd_dev_zero,
    .seek = rbd_dev_seek,
    .snapshots = rbd_dev_snapshots,
    .diff = rbd_dev_diff,
    .aio = rbd_dev_aio,
    .close = rbd_dev_close,
};

/* Connect to the cluster named by n's conf and id; 0 or -errno. */
static int connect_cluster(struct rbd_dev *d, const struct rbd_name *n)
{
    const char *conf = n->conf ? n->conf : getenv("CEPH_CONF");

    if (!conf)
        conf = "/etc/ceph/ceph.conf";
    int err = rados_create(&d->cluster, n->id);

    if (err < 0) {
        d->cluster = NULL;
        img_log("rbd: %s: cannot create a cluster handle for user '%s': %s",
                d->label, n->id ? n->id : "admin", strerror(-err));
        return err;
    }
    err = rados_conf_read_file(d->cluster, n->conf);
    if (err < 0 && n->conf) {
        img_log("rbd: %s: cannot read conf %s: %s", d->label, n->conf,
                strerror(-err));
        return err;
    }
    rados_conf_parse_env(d->cluster, NULL);
    /* A trim must leave zeros behind even inside an object. */
    rados_conf_set(d->cluster, "rbd_skip_partial_discard", "false");
    /* NBD clients flush what they need durable (FLUSH, FUA), which is an
     * RBD flush here: librbd's cache may hold writes back from the
     * start, as qemu's cache=writeback has it do. */
    rados_conf_set(d->cluster, "rbd_cache_writethrough_until_flush",
                   "false");
    /* Every caller keeps its buffer until the write completes (a worker
     * waits for it, the server's loop path holds the request), so
     * librbd may send from it instead of copying it first: the copy, a
     * fresh allocation per write, cost sequential 1 MiB writes from the
     * loop thread about 15% of their throughput. */
    rados_conf_set(d->cluster, "rbd_disable_zero_copy_writes", "false");
    err = rados_connect(d->cluster);
    if (err < 0) {
        img_log("rbd: %s: cannot connect to the cluster as %s (conf %s): %s",
                d->label, n->id ? n->id : "admin", conf, strerror(-err));
        return err;
    }
    err = rados_ioctx_create(d->cluster, n->pool, &d->ioctx);
    if (err < 0) {
        d->ioctx = NULL;
        img_log("rbd: %s: %s", d->label, err == -ENOENT ? "no such pool"
                                                        : strerror(-err));
    }
    return err;
}

/* Take the exclusive lock of a writable image that has the feature; 0
 * or -errno. */
static int take_lock(struct rbd_dev *d)
{
    uint64_t features;
    int err = rbd_get_features(d->image, &features);

    if (err < 0 || !(features & RBD_FEATURE_EXCLUSIVE_LOCK))
        return err < 0 ? err : 0;
    err = rbd_lock_acquire(d->image, RBD_LOCK_MODE_EXCLUSIVE);
    if (err == 0)
        return 0;
    char *owners[4];
    size_t n_owners = 4;
    rbd_lock_mode_t mode;
    bool named = rbd_lock_get_owners(d->image, &mode, owners,
                                     &n_owners) == 0 && n_owners > 0;
    if (err == -EROFS || err == -EBUSY || err == -EAGAIN)
        img_log("rbd: %s: another client%s%s holds the image's exclusive "
                "lock: it is being written elsewhere", d->label,
                named ? " " : "", named ? owners[0] : "");
    else
        img_log("rbd: %s: cannot take the image's exclusive lock: %s",
                d->label, strerror(-err));
    if (named)
        rbd_lock_get_owners_cleanup(owners, n_owners);
    return err == -EROFS || err == -EAGAIN ? -EBUSY : err;
}

int io_rbd_open(const char *spec, bool writable,
                const struct io_backend_ops **ops, void **dev)
{
    struct rbd_name n;
    int err = parse_name(spec, &n);

    if (err)
        return err;
    struct rbd_dev *d = calloc(1, sizeof *d);
    if (!d) {
        free(n.buf);
        return -ENOMEM;
    }
    pthread_mutex_init(&d->grow_lock, NULL);
    size_t lsize = strlen(n.pool) + strlen(n.image) +
                   (n.snap ? strlen(n.snap) : 0) + 3;
    d->label = malloc(lsize);
    if (!d->label) {
        err = -ENOMEM;
        goto out_close;
    }
    snprintf(d->label, lsize, "%s/%s%s%s", n.pool, n.image,
             n.snap ? "@" : "", n.snap ? n.snap : "");
    if ((err = connect_cluster(d, &n)) < 0)
        goto out_close;
    if (writable && !n.snap)
        err = rbd_open(d->ioctx, n.image, &d->image, NULL);
    else
        err = rbd_open_read_only(d->ioctx, n.image, &d->image, n.snap);
    if (err < 0) {
        d->image = NULL;
        img_log("rbd: %s: %s", d->label,
                err == -ENOENT ? (n.snap ? "no such image or snapshot"
                                         : "no such image")
                               : strerror(-err));
        goto out_close;
    }
    if (writable && !n.snap && (err = take_lock(d)) < 0)
        goto out_close;
    free(n.buf);
    *ops = &rbd_backend_ops;
    *dev = d;
    return 0;

out_close:
    free(n.buf);
    rbd_dev_close(d);
    return err;
}
