/* qcow2 backing chains and external data files: find the files the
 * header names, open them, and refuse chains that are too deep or loop.
 *
 * A relative name is resolved against the directory of the image that
 * names it, as qemu does for backing files (for an image in RBD: an
 * image of that name in the same pool, formats/io.c io_link_name; an
 * rbd: name is opened as it is); a relative data file name
 * that is not there is tried in the working directory, where qemu 7.2
 * looks for it.  The backing image is opened through img_open
 * (read-only, one level deeper), so it can be qcow2 or raw, with the
 * format from the backing format extension or probed.  Loops are found
 * by file identity (formats/io.c io_identity: device and inode, or an
 * RBD image's name): the images being opened on this thread's chain are
 * remembered one per depth level, since a chain is opened recursively
 * on one thread.
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "qcow2.h"

static __thread struct io_identity chain[QCOW2_MAX_CHAIN_DEPTH + 1];

char *qcow2_resolve_path(const char *image_path, const char *name)
{
    const char *slash = strrchr(image_path, '/');

    if (name[0] == '/' || !slash)
        return strdup(name);
    size_t dir_len = (size_t)(slash - image_path) + 1;
    size_t name_len = strlen(name);
    char *p = malloc(dir_len + name_len + 1);
    if (!p)
        return NULL;
    memcpy(p, image_path, dir_len);
    memcpy(p + dir_len, name, name_len + 1);
    return p;
}

/* Whether name looks like a URI or json: pseudo-file we cannot open. */
static bool is_protocol_name(const char *name)
{
    if (strncmp(name, "json:", 5) == 0)
        return true;
    const char *colon = strstr(name, "://");
    if (!colon)
        return false;
    for (const char *p = name; p < colon; p++)
        if (*p == '/')
            return false;
    return true;
}

int qcow2_open_backing(struct qcow2_state *s,
                       const struct img_open_args *args)
{
    const char *path = s->img.path;
    const char *name = s->h.backing_file;
    struct io_identity id;
    int err = io_identity_fd(s->fd, path, &id);

    if (err)
        return err;
    if (args->depth <= QCOW2_MAX_CHAIN_DEPTH)
        chain[args->depth] = id;
    if (!name)
        return 0;
    if (args->depth >= QCOW2_MAX_CHAIN_DEPTH) {
        img_log("qcow2: %s: backing chain has more than %u backing files",
                path, QCOW2_MAX_CHAIN_DEPTH);
        return -ELOOP;
    }
    if (is_protocol_name(name)) {
        img_log("qcow2: %s: backing file '%s' is not a local file", path,
                name);
        return -ENOTSUP;
    }
    char *bpath = io_link_name(path, name);
    if (!bpath && errno == ENOENT) {
        img_log("qcow2: %s: backing file '%s': an RBD image's backing "
                "file must be an RBD image or a relative name", path, name);
        return -ENOENT;
    }
    if (!bpath && errno == 0)
        bpath = qcow2_resolve_path(path, name);
    if (!bpath)
        return -ENOMEM;
    err = io_identity_name(bpath, &id);
    if (err) {
        img_log("qcow2: %s: backing file '%s': %s", path, bpath,
                strerror(-err));
        goto out_free;
    }
    for (unsigned i = 0; i <= args->depth; i++) {
        if (io_identity_same(&chain[i], &id)) {
            img_log("qcow2: %s: backing file '%s' loops back to an image "
                    "already in the chain (level %u)", path, bpath, i);
            err = -ELOOP;
            goto out_free;
        }
    }
    const char *fmt = s->h.backing_format;
    if (fmt && strcmp(fmt, "qcow2") != 0 && strcmp(fmt, "raw") != 0) {
        img_log("qcow2: %s: backing file '%s' has unsupported format '%s'",
                path, bpath, fmt);
        err = -ENOTSUP;
        goto out_free;
    }
    struct img_open_args bargs = {
        .path = bpath,
        .format = fmt,
        .read_only = true,
        .key_file = args->key_file,
        .luks_max_iter = args->luks_max_iter,
        .cache_size = args->cache_size,
        .depth = args->depth + 1,
    };
    /* A failure was logged where it was found, naming that file. */
    err = img_open(&bargs, &s->backing);
out_free:
    free(bpath);
    return err;
}

int qcow2_open_data_file(struct qcow2_state *s, bool read_only)
{
    const char *path = s->img.path;
    struct stat st;
    int err;

    if (!(s->h.incompatible & QCOW2_INCOMPAT_DATA_FILE)) {
        s->data_fd = s->fd;
        s->data_file_size = s->file_size;
        return 0;
    }
    if (is_protocol_name(s->h.data_file)) {
        img_log("qcow2: %s: data file '%s' is not a local file", path,
                s->h.data_file);
        return -ENOTSUP;
    }
    s->data_path = qcow2_resolve_path(path, s->h.data_file);
    if (!s->data_path)
        return -ENOMEM;
    if (access(s->data_path, F_OK) != 0 &&
        access(s->h.data_file, F_OK) == 0) {
        /* qemu (7.2) looks in its working directory; so do we when the
         * image's directory has no such file. */
        free(s->data_path);
        s->data_path = strdup(s->h.data_file);
        if (!s->data_path)
            return -ENOMEM;
    }
    s->data_fd = open(s->data_path, (read_only ? O_RDONLY : O_RDWR) |
                      O_CLOEXEC);
    if (s->data_fd < 0) {
        err = -errno;
        img_log("qcow2: %s: data file '%s': %s", path, s->data_path,
                strerror(errno));
        return err;
    }
    if (fstat(s->data_fd, &st) < 0) {
        err = -errno;
        img_log("qcow2: %s: data file '%s': %s", path, s->data_path,
                strerror(errno));
        return err;
    }
    s->data_file_size = (uint64_t)st.st_size;
    return 0;
}
