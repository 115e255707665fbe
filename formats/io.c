/* Positioned I/O that never returns short: loops over partial transfers
 * and EINTR so callers deal only in whole requests.
 *
 * Every change to an image file (write, sync, truncate, fallocate) goes
 * through the tagged wrappers here, so this is also where the test-only
 * switches live: the recording log (DISKSERVE_IO_LOG) that tests/crash
 * replays into crash states, and fault injection (DISKSERVE_FAULT).  Both
 * are read once by a constructor, before main() and before any thread
 * exists; afterwards hooks_on never changes, so with both off a wrapper
 * costs one predictable branch.
 *
 * Log ordering: a record is appended under log_lock by the thread that
 * did the operation, right after the system call returns and before the
 * caller can act on the result.  So if a write's return happens before a
 * sync is called (the only order a driver can rely on), the write's
 * record precedes the sync's SYNC_BEGIN.  A write that completed while a
 * sync was starting may be logged after SYNC_BEGIN although the sync
 * covered it; the log then promises less than the disk gave, which can
 * only add crash states that a careful driver survives anyway.
 */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <linux/falloc.h>
#include <linux/fs.h>
#include <sys/eventfd.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <unistd.h>

#include "io-backend.h"
#include "io.h"

#define MAX_FAULTS 32
#define MAX_FILES 64
#define MAX_REMOTES 64
#define NO_FILE UINT32_MAX

/* One DISKSERVE_FAULT entry. */
struct fault {
    enum io_tag tag;
    uint64_t nth;
    bool onward;            /* "N+": the Nth and every later one */
    int err;                /* positive errno */
};

/* A file that has an id in the log, or a name given by io_register. */
struct known_file {
    dev_t dev;
    ino_t ino;
    uint32_t id;
    char *path;
};

static const char *const tag_names[IO_TAG_COUNT] = {
    [IO_TAG_DATA] = "DATA",
    [IO_TAG_L1] = "L1",
    [IO_TAG_L2] = "L2",
    [IO_TAG_REFCOUNT_BLOCK] = "REFCOUNT_BLOCK",
    [IO_TAG_REFCOUNT_TABLE] = "REFCOUNT_TABLE",
    [IO_TAG_HEADER] = "HEADER",
    [IO_TAG_ALLOC] = "ALLOC",
    [IO_TAG_L1_GROW] = "L1_GROW",
    [IO_TAG_REFTABLE_GROW] = "REFTABLE_GROW",
    [IO_TAG_FLUSH] = "FLUSH",
    [IO_TAG_OTHER] = "OTHER",
    [IO_TAG_META_SET] = "META_SET",
    [IO_TAG_LOG] = "LOG",
    [IO_TAG_BAT] = "BAT",
};

static bool hooks_on;       /* written only before main() */
static int log_fd = -1;
static struct fault faults[MAX_FAULTS];
static unsigned nfaults;
static atomic_uint_fast64_t tag_ops[IO_TAG_COUNT];
static atomic_uint_fast64_t next_sync_id;

/* Everything below is guarded by log_lock. */
static pthread_mutex_t log_lock = PTHREAD_MUTEX_INITIALIZER;
static uint64_t log_seq;
static bool log_failed;
static struct known_file logged[MAX_FILES];
static unsigned nlogged;
static struct known_file named[MAX_FILES];
static unsigned nnamed;

/* One line to stderr, written at once so threads never interleave. */
static void say(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void say(const char *fmt, ...)
{
    char line[512];
    va_list ap;
    int n;

    memcpy(line, "io: ", 4);
    va_start(ap, fmt);
    n = vsnprintf(line + 4, sizeof line - 5, fmt, ap);
    va_end(ap);
    if (n < 0)
        return;
    n = n + 4 > (int)sizeof line - 2 ? (int)sizeof line - 2 : n + 4;
    line[n++] = '\n';
    if (write(STDERR_FILENO, line, (size_t)n) < 0) {
        /* nowhere left to complain */
    }
}

const char *io_tag_name(enum io_tag tag)
{
    return (unsigned)tag < IO_TAG_COUNT ? tag_names[tag] : "?";
}

static enum io_tag valid_tag(enum io_tag tag)
{
    return (unsigned)tag < IO_TAG_COUNT ? tag : IO_TAG_OTHER;
}

/* ---- backends ----------------------------------------------------
 *
 * A handle is an int.  For a local file or block device it is the file
 * descriptor, and every call below is the system call it always was.  A
 * remote image (RBD) is keyed by an eventfd this file opens for it: the
 * drivers keep their fd-shaped code, and a handle that is not a file is
 * found in remotes[] and served through its backend's table.  The table
 * is filled under remotes_lock and read without it: a slot's fd is
 * published last (release) and cleared first, and n_remotes stays 0
 * while only files are open, so a file operation pays one load and one
 * predictable branch for the lookup. */

struct remote {
    _Atomic int fd;             /* the handle, or -1: slot free */
    const struct io_backend_ops *ops;
    void *dev;
    char *name;                 /* as io_open had it, for io_aio_handle */
    bool writable;
};

static struct remote remotes[MAX_REMOTES] = {
    [0 ... MAX_REMOTES - 1] = { .fd = -1 },
};
static atomic_int n_remotes;
static pthread_mutex_t remotes_lock = PTHREAD_MUTEX_INITIALIZER;

static struct remote *remote_of(int fd)
{
    if (__builtin_expect(atomic_load_explicit(&n_remotes,
                                              memory_order_relaxed) == 0, 1))
        return NULL;
    for (unsigned i = 0; i < MAX_REMOTES; i++)
        if (atomic_load_explicit(&remotes[i].fd, memory_order_acquire) == fd)
            return &remotes[i];
    return NULL;
}

bool io_is_file(int fd)
{
    return remote_of(fd) == NULL;
}

bool io_is_remote_name(const char *name)
{
    return strncmp(name, "rbd:", 4) == 0;
}

bool io_is_snapshot_name(const char *name)
{
    if (!io_is_remote_name(name))
        return false;
    const char *at = strchr(name + 4, '@');
    const char *colon = strchr(name + 4, ':');
    return at && (!colon || at < colon);
}

/* Where a remote name's options (":conf=...") start: its end if none. */
static const char *remote_options(const char *name)
{
    return name + 4 + strcspn(name + 4, ":");
}

char *io_link_name(const char *image, const char *name)
{
    const char *opts = io_is_remote_name(image) ? remote_options(image)
                                                 : "";
    char *p;

    errno = 0;
    if (io_is_remote_name(name)) {
        if (*remote_options(name))
            opts = "";
        if (asprintf(&p, "%s%s", name, opts) < 0)
            goto nomem;
        return p;
    }
    if (!io_is_remote_name(image))
        return NULL;
    if (name[0] == '/') {
        errno = ENOENT;
        return NULL;
    }
    size_t pool = strcspn(image + 4, "/:");
    if (asprintf(&p, "rbd:%.*s/%s%s", (int)pool, image + 4, name, opts) < 0)
        goto nomem;
    return p;
nomem:
    errno = ENOMEM;
    return NULL;
}

int io_identity_fd(int fd, const char *name, struct io_identity *id)
{
    struct stat st;

    if (remote_of(fd)) {
        *id = (struct io_identity){ .remote = name };
        return 0;
    }
    if (fstat(fd, &st) < 0)
        return -errno;
    *id = (struct io_identity){ st.st_dev, st.st_ino, NULL };
    return 0;
}

int io_identity_name(const char *name, struct io_identity *id)
{
    struct stat st;

    if (io_is_remote_name(name)) {
        *id = (struct io_identity){ .remote = name };
        return 0;
    }
    if (stat(name, &st) < 0)
        return -errno;
    *id = (struct io_identity){ st.st_dev, st.st_ino, NULL };
    return 0;
}

bool io_identity_same(const struct io_identity *a,
                      const struct io_identity *b)
{
    if (!a->remote || !b->remote)
        return !a->remote && !b->remote && a->dev == b->dev &&
               a->ino == b->ino;
    size_t n = (size_t)(remote_options(a->remote) - a->remote);
    return n == (size_t)(remote_options(b->remote) - b->remote) &&
           memcmp(a->remote, b->remote, n) == 0;
}

/* Give a remote device a handle; the handle or -errno (dev closed). */
static int remote_add(const struct io_backend_ops *ops, void *dev,
                      const char *name, bool writable)
{
    int fd = eventfd(0, EFD_CLOEXEC);
    char *copy = strdup(name);
    if (fd < 0 || !copy) {
        int err = fd < 0 ? -errno : -ENOMEM;
        if (fd >= 0)
            close(fd);
        free(copy);
        ops->close(dev);
        return err;
    }
    pthread_mutex_lock(&remotes_lock);
    for (unsigned i = 0; i < MAX_REMOTES; i++)
        if (atomic_load(&remotes[i].fd) < 0) {
            remotes[i].ops = ops;
            remotes[i].dev = dev;
            remotes[i].name = copy;
            remotes[i].writable = writable;
            atomic_fetch_add(&n_remotes, 1);
            atomic_store_explicit(&remotes[i].fd, fd, memory_order_release);
            pthread_mutex_unlock(&remotes_lock);
            return fd;
        }
    pthread_mutex_unlock(&remotes_lock);
    close(fd);
    free(copy);
    ops->close(dev);
    return -EMFILE;
}

/* Weak: a program that links io.c alone (the unit tests, the crash log
 * writer) has no RBD backend; formats/image.c pulls it into the rest. */
#pragma weak io_rbd_open

int io_open(const char *name, bool writable)
{
    if (io_is_remote_name(name)) {
        const struct io_backend_ops *ops;
        void *dev;
        if (!io_rbd_open) {
            say("%s: built without RBD support (librbd-dev)", name);
            return -ENOTSUP;
        }
        int err = io_rbd_open(name + 4, writable, &ops, &dev);
        return err < 0 ? err : remote_add(ops, dev, name, writable);
    }
    int fd = open(name, (writable ? O_RDWR : O_RDONLY) | O_CLOEXEC);
    if (fd < 0)
        return -errno;
    io_register(fd, name);
    return fd;
}

int io_close(int fd)
{
    struct remote *r = remote_of(fd);

    if (r) {
        pthread_mutex_lock(&remotes_lock);
        atomic_store(&r->fd, -1);
        atomic_fetch_sub(&n_remotes, 1);
        const struct io_backend_ops *ops = r->ops;
        void *dev = r->dev;
        char *name = r->name;
        r->name = NULL;
        pthread_mutex_unlock(&remotes_lock);
        ops->close(dev);
        free(name);
    }
    return close(fd) < 0 ? -errno : 0;
}

int io_size(int fd, uint64_t *size)
{
    struct remote *r = remote_of(fd);
    struct stat st;

    if (r)
        return r->ops->size(r->dev, size);
    if (fstat(fd, &st) < 0)
        return -errno;
    if (S_ISBLK(st.st_mode))
        return ioctl(fd, BLKGETSIZE64, size) < 0 ? -errno : 0;
    *size = (uint64_t)st.st_size;
    return 0;
}

off_t io_lseek(int fd, off_t off, int whence)
{
    struct remote *r = remote_of(fd);
    uint64_t size, pos;

    if (!r)
        return lseek(fd, off, whence);
    int err = r->ops->size(r->dev, &size);
    if (!err && whence == SEEK_END)
        return (off_t)size + off;
    if (!err && whence != SEEK_DATA && whence != SEEK_HOLE)
        err = -EINVAL;
    if (!err && (off < 0 || (uint64_t)off >= size))
        err = -ENXIO;
    if (!err)
        err = r->ops->seek(r->dev, (uint64_t)off, whence == SEEK_DATA,
                           &pos);
    if (err) {
        errno = -err;
        return -1;
    }
    return (off_t)pos;
}

int io_snapshots(int fd, char ***names, size_t *n)
{
    struct remote *r = remote_of(fd);

    *names = NULL;
    *n = 0;
    return r && r->ops->snapshots ? r->ops->snapshots(r->dev, names, n) : 0;
}

void io_free_names(char **names, size_t n)
{
    for (size_t i = 0; i < n; i++)
        free(names[i]);
    free(names);
}

int io_changed_since(int fd, const char *snap, uint64_t off, uint64_t len,
                     int (*cb)(uint64_t off, uint64_t len, void *arg),
                     void *arg)
{
    struct remote *r = remote_of(fd);

    if (!r || !r->ops->diff)
        return -ENOTSUP;
    return r->ops->diff(r->dev, snap, off, len, cb, arg);
}

int io_advise(int fd, uint64_t off, uint64_t len, int advice)
{
    if (remote_of(fd))
        return 0;
    return -posix_fadvise(fd, (off_t)off, (off_t)len, advice);
}

int io_aio_handle(const char *name, bool writable)
{
    int fd = -ENOENT;

    pthread_mutex_lock(&remotes_lock);
    for (unsigned i = 0; i < MAX_REMOTES && fd == -ENOENT; i++)
        if (atomic_load(&remotes[i].fd) >= 0 && remotes[i].name &&
            strcmp(remotes[i].name, name) == 0 &&
            remotes[i].writable == writable)
            fd = remotes[i].ops->aio && !hooks_on
                 ? atomic_load(&remotes[i].fd) : -ENOTSUP;
    pthread_mutex_unlock(&remotes_lock);
    return fd;
}

int io_aio_submit(int handle, struct io_aio *a)
{
    struct remote *r = remote_of(handle);

    return r && r->ops->aio ? r->ops->aio(r->dev, a) : -ENOTSUP;
}

/* A backend's byte count or -errno as a system call's -1 and errno. */
static ssize_t remote_ret(ssize_t n)
{
    if (n < 0) {
        errno = (int)-n;
        return -1;
    }
    return n;
}

static ssize_t do_pread(int fd, void *buf, size_t len, uint64_t off)
{
    struct remote *r = remote_of(fd);
    if (__builtin_expect(r != NULL, 0))
        return remote_ret(r->ops->pread(r->dev, buf, len, off));
    return pread(fd, buf, len, (off_t)off);
}

static ssize_t do_pwrite(int fd, const void *buf, size_t len, uint64_t off)
{
    struct remote *r = remote_of(fd);
    if (__builtin_expect(r != NULL, 0))
        return remote_ret(r->ops->pwritev(
            r->dev, &(struct iovec){ (void *)buf, len }, 1, off));
    return pwrite(fd, buf, len, (off_t)off);
}

static ssize_t do_pwritev(int fd, const struct iovec *iov, int iovcnt,
                          uint64_t off)
{
    struct remote *r = remote_of(fd);
    if (__builtin_expect(r != NULL, 0))
        return remote_ret(r->ops->pwritev(r->dev, iov, iovcnt, off));
    return pwritev(fd, iov, iovcnt, (off_t)off);
}

static int do_sync(int fd)
{
    struct remote *r = remote_of(fd);
    if (__builtin_expect(r != NULL, 0))
        return r->ops->sync(r->dev);
    return fdatasync(fd) < 0 ? -errno : 0;
}

static int do_truncate(int fd, uint64_t size)
{
    struct remote *r = remote_of(fd);
    if (__builtin_expect(r != NULL, 0))
        return r->ops->resize(r->dev, size);
    return ftruncate(fd, (off_t)size) < 0 ? -errno : 0;
}

/* fallocate's modes on a remote device: punching is a discard, zeroing
 * a zero write, and allocating only ever grows the device. */
static int remote_fallocate(struct remote *r, int mode, uint64_t off,
                            uint64_t len)
{
    uint64_t size;

    if (mode & FALLOC_FL_PUNCH_HOLE)
        return r->ops->discard(r->dev, off, len);
    if (mode & FALLOC_FL_ZERO_RANGE)
        return r->ops->zero(r->dev, off, len);
    if (mode & ~FALLOC_FL_KEEP_SIZE)
        return -EOPNOTSUPP;
    if (mode & FALLOC_FL_KEEP_SIZE)
        return 0;
    int err = r->ops->size(r->dev, &size);
    if (!err && off + len > size)
        err = r->ops->resize(r->dev, off + len);
    return err;
}

static int do_fallocate(int fd, int mode, uint64_t off, uint64_t len)
{
    struct remote *r = remote_of(fd);
    if (__builtin_expect(r != NULL, 0))
        return remote_fallocate(r, mode, off, len);
    return fallocate(fd, mode, (off_t)off, (off_t)len) < 0 ? -errno : 0;
}

/* ---- plain I/O ---------------------------------------------------- */

int io_pread_full(int fd, void *buf, uint64_t len, uint64_t off)
{
    uint8_t *p = buf;

    while (len > 0) {
        ssize_t n = do_pread(fd, p, len, off);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            return -errno;
        }
        if (n == 0) {
            memset(p, 0, len);
            return -ENODATA;
        }
        p += n;
        len -= (uint64_t)n;
        off += (uint64_t)n;
    }
    return 0;
}

/* *done counts the bytes written, also on failure. */
static int pwrite_loop(int fd, const void *buf, uint64_t len, uint64_t off,
                       uint64_t *done)
{
    const uint8_t *p = buf;

    *done = 0;
    while (len > 0) {
        ssize_t n = do_pwrite(fd, p, len, off);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            return -errno;
        }
        if (n == 0)
            return -EIO;
        p += n;
        len -= (uint64_t)n;
        off += (uint64_t)n;
        *done += (uint64_t)n;
    }
    return 0;
}

/* *done counts the bytes written, also on failure. */
static int pwritev_loop(int fd, struct iovec *iov, int iovcnt, uint64_t off,
                        uint64_t *done)
{
    *done = 0;
    while (iovcnt > 0) {
        ssize_t n = do_pwritev(fd, iov, iovcnt > IOV_MAX ? IOV_MAX : iovcnt,
                               off);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            return -errno;
        }
        if (n == 0)
            return -EIO;
        off += (uint64_t)n;
        *done += (uint64_t)n;
        while (iovcnt > 0 && (size_t)n >= iov->iov_len) {
            n -= (ssize_t)iov->iov_len;
            iov++;
            iovcnt--;
        }
        if (iovcnt > 0) {
            iov->iov_base = (uint8_t *)iov->iov_base + n;
            iov->iov_len -= (size_t)n;
        }
    }
    return 0;
}

/* ---- fault injection ---------------------------------------------- */

static const struct {
    const char *name;
    int err;
} errno_names[] = {
    { "EIO", EIO }, { "ENOSPC", ENOSPC }, { "EDQUOT", EDQUOT },
    { "EROFS", EROFS }, { "EFBIG", EFBIG }, { "EPERM", EPERM },
    { "EACCES", EACCES }, { "ENOMEM", ENOMEM }, { "EINVAL", EINVAL },
};

static int parse_errno(const char *s, size_t n)
{
    for (size_t i = 0; i < sizeof errno_names / sizeof errno_names[0]; i++)
        if (strlen(errno_names[i].name) == n &&
            strncasecmp(s, errno_names[i].name, n) == 0)
            return errno_names[i].err;
    if (n == 0 || n > 4 || strspn(s, "0123456789") < n)
        return -1;
    int e = atoi(s);
    return e > 0 && e < 4096 ? e : -1;
}

static int parse_tag(const char *s, size_t n)
{
    for (int t = 0; t < IO_TAG_COUNT; t++)
        if (strlen(tag_names[t]) == n && strncasecmp(s, tag_names[t], n) == 0)
            return t;
    return -1;
}

/* One "TAG:N[+]:ERRNO" entry of n bytes; 0 or -EINVAL. */
static int parse_fault(const char *s, size_t n, struct fault *f)
{
    const char *c1 = memchr(s, ':', n);
    const char *c2 = c1 ? memchr(c1 + 1, ':', n - (size_t)(c1 + 1 - s))
                        : NULL;
    if (!c2)
        return -EINVAL;
    int tag = parse_tag(s, (size_t)(c1 - s));
    int err = parse_errno(c2 + 1, n - (size_t)(c2 + 1 - s));
    const char *num = c1 + 1;
    size_t digits = strspn(num, "0123456789");
    if (tag < 0 || err < 0 || digits == 0 || digits > 18)
        return -EINVAL;
    f->onward = num[digits] == '+';
    if (num + digits + f->onward != c2)
        return -EINVAL;
    f->tag = (enum io_tag)tag;
    f->nth = strtoull(num, NULL, 10);
    f->err = err;
    return f->nth > 0 ? 0 : -EINVAL;
}

static int parse_faults(const char *spec)
{
    const char *s = spec;

    while (*s) {
        size_t n = strcspn(s, ",");
        if (n > 0) {
            if (nfaults == MAX_FAULTS ||
                parse_fault(s, n, &faults[nfaults]) < 0) {
                say("DISKSERVE_FAULT: bad entry '%.*s' (want TAG:N:ERRNO, "
                    "at most %d entries)", (int)(n > 64 ? 64 : n), s,
                    MAX_FAULTS);
                return -EINVAL;
            }
            nfaults++;
        }
        s += n;
        if (*s == ',')
            s++;
    }
    return 0;
}

/* Count one operation with this tag; the positive errno to fail it
 * with, or 0. */
static int fault_for(enum io_tag tag)
{
    uint64_t n = atomic_fetch_add(&tag_ops[tag], 1) + 1;

    for (unsigned i = 0; i < nfaults; i++)
        if (faults[i].tag == tag &&
            (n == faults[i].nth || (faults[i].onward && n > faults[i].nth)))
            return faults[i].err;
    return 0;
}

/* ---- the log ------------------------------------------------------ */

static int write_all(int fd, struct iovec *iov, int iovcnt)
{
    while (iovcnt > 0) {
        ssize_t n = writev(fd, iov, iovcnt);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            return -errno;
        }
        while (iovcnt > 0 && (size_t)n >= iov->iov_len) {
            n -= (ssize_t)iov->iov_len;
            iov++;
            iovcnt--;
        }
        if (iovcnt > 0) {
            iov->iov_base = (uint8_t *)iov->iov_base + n;
            iov->iov_len -= (size_t)n;
        }
    }
    return 0;
}

/* Append one record and its payload.  Caller holds log_lock. */
static void emit_locked(struct io_log_rec *rec, const void *payload,
                        uint64_t plen)
{
    if (log_failed)
        return;
    rec->seq = log_seq++;
    rec->payload = (uint32_t)plen;
    struct iovec iov[2] = {
        { rec, sizeof *rec },
        { (void *)payload, (size_t)plen },
    };
    int err = write_all(log_fd, iov, plen ? 2 : 1);
    if (err) {
        log_failed = true;
        say("DISKSERVE_IO_LOG: write failed, log incomplete: %s",
            strerror(-err));
    }
}

/* The log's id for the file open on fd, logging its name the first time.
 * Caller holds log_lock. */
static uint32_t file_id_locked(int fd)
{
    struct stat st;
    char link[64], target[PATH_MAX];
    const char *path = NULL;

    if (fstat(fd, &st) < 0)
        return NO_FILE;
    for (unsigned i = 0; i < nlogged; i++)
        if (logged[i].dev == st.st_dev && logged[i].ino == st.st_ino)
            return logged[i].id;
    if (nlogged == MAX_FILES)
        return NO_FILE;
    for (unsigned i = 0; i < nnamed && !path; i++)
        if (named[i].dev == st.st_dev && named[i].ino == st.st_ino)
            path = named[i].path;
    if (!path) {
        snprintf(link, sizeof link, "/proc/self/fd/%d", fd);
        ssize_t n = readlink(link, target, sizeof target - 1);
        target[n > 0 ? n : 0] = '\0';
        path = target;
    }
    struct known_file *k = &logged[nlogged];
    k->dev = st.st_dev;
    k->ino = st.st_ino;
    k->id = nlogged++;
    struct io_log_rec rec = {
        .type = IO_REC_FILE, .file = k->id, .len = strlen(path),
    };
    emit_locked(&rec, path, rec.len);
    return k->id;
}

/* Log an operation on fd (file is filled in here). */
static void log_op(int fd, struct io_log_rec *rec, const void *payload,
                   uint64_t plen)
{
    if (log_fd < 0 || (fd >= 0 && remote_of(fd)))
        return;
    pthread_mutex_lock(&log_lock);
    rec->file = file_id_locked(fd);
    emit_locked(rec, payload, plen);
    pthread_mutex_unlock(&log_lock);
}

/* Count an operation; on an injected failure log and report it.  The
 * positive errno to fail with, or 0. */
static int check_fault(int fd, enum io_tag tag, uint32_t kind, uint64_t off,
                       uint64_t len)
{
    int err = fault_for(tag);
    if (!err)
        return 0;
    say("injected %s into a %s operation at %llu (+%llu)", strerror(err),
        tag_names[tag], (unsigned long long)off, (unsigned long long)len);
    struct io_log_rec rec = {
        .type = IO_REC_FAULT, .tag = tag, .result = -err, .off = off,
        .len = len, .mode = kind,
    };
    log_op(fd, &rec, NULL, 0);
    return err;
}

int io_fault_point(enum io_tag tag)
{
    if (__builtin_expect(!hooks_on, 1))
        return 0;
    return -check_fault(-1, tag, IO_REC_FAULT, 0, 0);
}

__attribute__((constructor)) static void io_hooks_init(void)
{
    const char *spec = getenv("DISKSERVE_FAULT");
    const char *path = getenv("DISKSERVE_IO_LOG");

    if (spec && *spec && parse_faults(spec) < 0)
        exit(2);
    if (path && *path) {
        log_fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_APPEND |
                            O_CLOEXEC, 0644);
        struct iovec iov = { (void *)IO_LOG_MAGIC, 8 };
        if (log_fd < 0 || write_all(log_fd, &iov, 1) < 0) {
            say("DISKSERVE_IO_LOG: %s: %s", path, strerror(errno));
            exit(2);
        }
    }
    hooks_on = log_fd >= 0 || nfaults > 0;
}

void io_register(int fd, const char *path)
{
    struct stat st;
    char *abs;

    if (__builtin_expect(!hooks_on, 1) || remote_of(fd) ||
        fstat(fd, &st) < 0)
        return;
    abs = realpath(path, NULL);
    if (!abs)
        abs = strdup(path);
    if (!abs)
        return;
    pthread_mutex_lock(&log_lock);
    for (unsigned i = 0; i < nnamed; i++)
        if (named[i].dev == st.st_dev && named[i].ino == st.st_ino) {
            free(named[i].path);
            named[i].path = abs;
            abs = NULL;
            break;
        }
    if (abs && nnamed < MAX_FILES) {
        named[nnamed++] = (struct known_file){
            .dev = st.st_dev, .ino = st.st_ino, .path = abs,
        };
        abs = NULL;
    }
    pthread_mutex_unlock(&log_lock);
    free(abs);
}

void io_log_mark(uint64_t cookie, const char *what)
{
    if (__builtin_expect(log_fd < 0, 1))
        return;
    struct io_log_rec rec = {
        .type = IO_REC_MARK, .file = NO_FILE, .off = cookie,
        .len = strlen(what),
    };
    pthread_mutex_lock(&log_lock);
    emit_locked(&rec, what, rec.len);
    pthread_mutex_unlock(&log_lock);
}

/* ---- tagged wrappers ---------------------------------------------- */

static int hooked_pwrite(int fd, const void *buf, uint64_t len, uint64_t off,
                         enum io_tag tag)
{
    uint64_t done;
    int err = check_fault(fd, tag, IO_REC_WRITE, off, len);
    if (err)
        return -err;
    int ret = pwrite_loop(fd, buf, len, off, &done);
    if (done > 0) {
        struct io_log_rec rec = {
            .type = IO_REC_WRITE, .tag = tag, .off = off, .len = done,
        };
        log_op(fd, &rec, buf, done);
    }
    return ret;
}

int io_pwrite_tag(int fd, const void *buf, uint64_t len, uint64_t off,
                  enum io_tag tag)
{
    uint64_t done;

    if (__builtin_expect(hooks_on, 0))
        return hooked_pwrite(fd, buf, len, off, valid_tag(tag));
    return pwrite_loop(fd, buf, len, off, &done);
}

int io_pwrite_full(int fd, const void *buf, uint64_t len, uint64_t off)
{
    return io_pwrite_tag(fd, buf, len, off, IO_TAG_DATA);
}

static int hooked_pwritev(int fd, struct iovec *iov, int iovcnt,
                          uint64_t off, enum io_tag tag)
{
    uint64_t len = 0, done;
    uint8_t *copy = NULL;

    for (int i = 0; i < iovcnt; i++)
        len += iov[i].iov_len;
    int err = check_fault(fd, tag, IO_REC_WRITE, off, len);
    if (err)
        return -err;
    if (log_fd >= 0) {
        /* The loop below moves iov along: keep what it writes. */
        copy = malloc(len ? len : 1);
        if (!copy)
            return -ENOMEM;
        uint64_t at = 0;
        for (int i = 0; i < iovcnt; i++) {
            memcpy(copy + at, iov[i].iov_base, iov[i].iov_len);
            at += iov[i].iov_len;
        }
    }
    int ret = pwritev_loop(fd, iov, iovcnt, off, &done);
    if (copy && done > 0) {
        struct io_log_rec rec = {
            .type = IO_REC_WRITE, .tag = tag, .off = off, .len = done,
        };
        log_op(fd, &rec, copy, done);
    }
    free(copy);
    return ret;
}

int io_pwritev_tag(int fd, struct iovec *iov, int iovcnt, uint64_t off,
                   enum io_tag tag)
{
    uint64_t done;

    if (__builtin_expect(hooks_on, 0))
        return hooked_pwritev(fd, iov, iovcnt, off, valid_tag(tag));
    return pwritev_loop(fd, iov, iovcnt, off, &done);
}

int io_pwritev_full(int fd, struct iovec *iov, int iovcnt, uint64_t off)
{
    return io_pwritev_tag(fd, iov, iovcnt, off, IO_TAG_DATA);
}

int io_write_zeroes_tag(int fd, uint64_t len, uint64_t off,
                        enum io_tag tag)
{
    static const uint8_t zeroes[64 * 1024];

    while (len > 0) {
        uint64_t n = len < sizeof zeroes ? len : sizeof zeroes;
        int err = io_pwrite_tag(fd, zeroes, n, off, tag);
        if (err)
            return err;
        len -= n;
        off += n;
    }
    return 0;
}

int io_write_zeroes(int fd, uint64_t len, uint64_t off)
{
    return io_write_zeroes_tag(fd, len, off, IO_TAG_DATA);
}

static int hooked_sync(int fd, enum io_tag tag)
{
    int err = check_fault(fd, tag, IO_REC_SYNC_BEGIN, 0, 0);
    if (err)
        return -err;
    uint64_t id = atomic_fetch_add(&next_sync_id, 1);
    struct io_log_rec rec = {
        .type = IO_REC_SYNC_BEGIN, .tag = tag, .off = id,
    };
    log_op(fd, &rec, NULL, 0);
    int ret = do_sync(fd);
    rec = (struct io_log_rec){
        .type = IO_REC_SYNC_END, .tag = tag, .off = id, .result = ret,
    };
    log_op(fd, &rec, NULL, 0);
    return ret;
}

int io_sync(int fd, enum io_tag tag)
{
    if (__builtin_expect(hooks_on, 0))
        return hooked_sync(fd, valid_tag(tag));
    return do_sync(fd);
}

int io_truncate(int fd, uint64_t size, enum io_tag tag)
{
    if (__builtin_expect(hooks_on, 0)) {
        tag = valid_tag(tag);
        int err = check_fault(fd, tag, IO_REC_TRUNCATE, size, 0);
        if (err)
            return -err;
    }
    int ret = do_truncate(fd, size);
    if (ret)
        return ret;
    if (__builtin_expect(hooks_on, 0)) {
        struct io_log_rec rec = {
            .type = IO_REC_TRUNCATE, .tag = tag, .off = size,
        };
        log_op(fd, &rec, NULL, 0);
    }
    return 0;
}

int io_fallocate(int fd, int mode, uint64_t off, uint64_t len,
                 enum io_tag tag)
{
    if (__builtin_expect(hooks_on, 0)) {
        tag = valid_tag(tag);
        int err = check_fault(fd, tag, IO_REC_FALLOCATE, off, len);
        if (err)
            return -err;
    }
    int ret = do_fallocate(fd, mode, off, len);
    if (ret)
        return ret;
    if (__builtin_expect(hooks_on, 0)) {
        struct io_log_rec rec = {
            .type = IO_REC_FALLOCATE, .tag = tag, .off = off, .len = len,
            .mode = (uint32_t)mode,
        };
        log_op(fd, &rec, NULL, 0);
    }
    return 0;
}
