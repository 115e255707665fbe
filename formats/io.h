/* Positioned I/O helpers shared by the drivers: full reads and writes
 * that retry short transfers and EINTR, and the one place where every
 * change to an image file goes through (write, sync, truncate,
 * fallocate), each tagged with what it writes.
 *
 * Two test-only switches, read from the environment once before main():
 *
 *   DISKSERVE_IO_LOG=PATH   append every completed change to PATH, in
 *                           completion order (format: tests/crash/README.md)
 *   DISKSERVE_FAULT=TAG:N:ERRNO[,...]
 *                           the Nth operation carrying TAG fails with
 *                           ERRNO (a name such as EIO or ENOSPC, or a
 *                           number) without touching the file; "N+" fails
 *                           the Nth and every later one
 *
 * With neither set, each wrapper costs one predictable branch.
 */
#ifndef DISKSERVE_IO_H
#define DISKSERVE_IO_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>
#include <sys/uio.h>

/* What an operation writes, for the log and for fault injection.  The
 * names (without IO_TAG_) are the ones DISKSERVE_FAULT takes.  Keep the
 * values: the log stores them. */
enum io_tag {
    IO_TAG_DATA = 0,            /* guest data (untagged calls) */
    IO_TAG_L1 = 1,              /* an L1 table entry or table */
    IO_TAG_L2 = 2,              /* an L2 table */
    IO_TAG_REFCOUNT_BLOCK = 3,  /* a refcount block */
    IO_TAG_REFCOUNT_TABLE = 4,  /* the refcount table */
    IO_TAG_HEADER = 5,          /* the image header */
    IO_TAG_ALLOC = 6,           /* growing the file for new clusters */
    IO_TAG_L1_GROW = 7,         /* writing a new, bigger L1 table */
    IO_TAG_REFTABLE_GROW = 8,   /* writing a new, bigger refcount table */
    IO_TAG_FLUSH = 9,           /* the sync of a FLUSH or FUA request */
    IO_TAG_OTHER = 10,          /* anything else */
    IO_TAG_META_SET = 11,       /* not I/O: memory for the qcow2 set of
                                 * metadata clusters (io_fault_point) */
    IO_TAG_LOG = 12,            /* a VHDX log entry */
    IO_TAG_BAT = 13,            /* VHDX BAT sectors written in place */
    IO_TAG_COUNT
};

/* Storage backends.  Every function here takes a handle: for a local
 * file or block device, its file descriptor (opened by io_open or by the
 * caller); for a remote image (an RBD name, "rbd:POOL/IMAGE..."), the
 * descriptor io_open returned, which keys the image inside io.c and must
 * be closed with io_close.  Only file handles may be read directly
 * (pread on the loop thread): io_is_file tells them apart. */

/* Open a path or a remote name for reading, or reading and writing: a
 * handle, or -errno (a remote backend logs why). */
int io_open(const char *name, bool writable);

/* Close a handle from io_open (or any file descriptor); 0 or -errno. */
int io_close(int fd);

/* Whether the handle is a plain file descriptor. */
bool io_is_file(int fd);

/* Whether name is a remote image name rather than a path. */
bool io_is_remote_name(const char *name);

/* Whether name is a remote snapshot ("rbd:POOL/IMAGE@SNAP..."), which
 * can only be opened read-only. */
bool io_is_snapshot_name(const char *name);

/* The name a chain link (a qcow2 backing file, a VHDX parent) called
 * NAME in IMAGE opens by, when either is remote: NAME if it is an rbd:
 * name, taking IMAGE's :conf= and :id= options when it has none of its
 * own; for a relative NAME ('/' separators) in an rbd: IMAGE, the image
 * of that name in IMAGE's pool, with IMAGE's options (as qemu combines
 * them).  NULL with errno 0 when neither is remote (a local path: the
 * caller resolves it), NULL with errno ENOMEM, or NULL with errno
 * ENOENT for an absolute local path named by a remote image. */
char *io_link_name(const char *image, const char *name);

/* What a chain of images (qcow2 backing files, VHDX parents) tells its
 * members apart by, to find loops: a file's device and inode, a remote
 * image's name (options aside; remote handles have no inode of their
 * own).  remote points into the name given, which must outlive it. */
struct io_identity {
    dev_t dev;
    ino_t ino;
    const char *remote;
};

/* The identity of the image open as fd (from io_open) under name; 0 or
 * -errno. */
int io_identity_fd(int fd, const char *name, struct io_identity *id);
/* The identity of the image called name, not open: 0, or -errno with
 * errno set (no such file).  A remote name is not looked up. */
int io_identity_name(const char *name, struct io_identity *id);
/* Whether two identities are one image. */
bool io_identity_same(const struct io_identity *a,
                      const struct io_identity *b);

/* The size in bytes of a file, block device or remote image; 0 or
 * -errno. */
int io_size(int fd, uint64_t *size);

/* lseek(2) for SEEK_DATA, SEEK_HOLE and SEEK_END on any handle; -1 with
 * errno on failure.  A remote backend may answer SEEK_DATA or SEEK_HOLE
 * for a window only, returning its end: callers treat the answer as
 * "from off to the result, the same kind", then ask again. */
off_t io_lseek(int fd, off_t off, int whence);

/* The snapshots of the image behind a handle, oldest first (a file has
 * none): a malloc'd array of malloc'd names for io_free_names; 0 or
 * -errno. */
int io_snapshots(int fd, char ***names, size_t *n);
void io_free_names(char **names, size_t n);

/* Call cb, in offset order and merged, for each extent of [off, off +
 * len) changed since snapshot snap of a remote image: 0, cb's nonzero
 * return, -ENOENT (no such snapshot), -ENOTSUP (a file), or -errno. */
int io_changed_since(int fd, const char *snap, uint64_t off, uint64_t len,
                     int (*cb)(uint64_t off, uint64_t len, void *arg),
                     void *arg);

/* posix_fadvise for a file, nothing for a remote image; 0 or -errno. */
int io_advise(int fd, uint64_t off, uint64_t len, int advice);

/* Read exactly len bytes at off; -ENODATA if the file ends first (the
 * bytes past the end are zero-filled), other -errno on failure. */
int io_pread_full(int fd, void *buf, uint64_t len, uint64_t off);

/* Write exactly len bytes at off, tagged DATA; 0 or -errno. */
int io_pwrite_full(int fd, const void *buf, uint64_t len, uint64_t off);

/* Vectored full write tagged DATA; iov is modified.  0 or -errno. */
int io_pwritev_full(int fd, struct iovec *iov, int iovcnt, uint64_t off);

/* Write len zero bytes at off with plain writes tagged DATA, 64 KiB per
 * write; 0 or -errno. */
int io_write_zeroes(int fd, uint64_t len, uint64_t off);

/* Write exactly len bytes at off, tagged; 0 or -errno. */
int io_pwrite_tag(int fd, const void *buf, uint64_t len, uint64_t off,
                  enum io_tag tag);

/* Vectored full write, tagged; iov is modified.  0 or -errno. */
int io_pwritev_tag(int fd, struct iovec *iov, int iovcnt, uint64_t off,
                   enum io_tag tag);

/* Write len zero bytes at off, tagged, 64 KiB per write; 0 or -errno. */
int io_write_zeroes_tag(int fd, uint64_t len, uint64_t off,
                        enum io_tag tag);

/* fdatasync: makes every write that completed before the call durable.
 * 0 or -errno. */
int io_sync(int fd, enum io_tag tag);

/* ftruncate to size bytes; 0 or -errno. */
int io_truncate(int fd, uint64_t size, enum io_tag tag);

/* fallocate(2) with its mode flags (FALLOC_FL_*); 0 or -errno (the
 * caller tells "unsupported" from the errno, as with fallocate). */
int io_fallocate(int fd, int mode, uint64_t off, uint64_t len,
                 enum io_tag tag);

/* A fault point that is not I/O (an allocation a test makes fail):
 * the negative errno DISKSERVE_FAULT injects into this call, or 0. */
int io_fault_point(enum io_tag tag);

/* Name the file open on fd in the log (the path as the driver knows it).
 * Optional: an unnamed file is logged under its /proc/self/fd name. */
void io_register(int fd, const char *path);

/* Append a mark to the log: a reply that promises durability (FLUSH, or
 * a FUA write) is about to be sent for the request with this cookie. */
void io_log_mark(uint64_t cookie, const char *what);

/* The name of a tag ("DATA", "L2", ...), or "?" for an unknown value. */
const char *io_tag_name(enum io_tag tag);

/* The log DISKSERVE_IO_LOG writes, for the tools in tests/crash: the 8
 * bytes IO_LOG_MAGIC, then records, each a struct io_log_rec in host byte
 * order followed by its payload.  A write is logged when it completes, a
 * sync twice: SYNC_BEGIN before fdatasync is called and SYNC_END after
 * it returns, so a sync covers exactly the writes logged before its
 * SYNC_BEGIN. */
#define IO_LOG_MAGIC "DSIOLOG1"

enum io_rec_type {
    IO_REC_FILE = 1,        /* file: new id; payload: its path */
    IO_REC_WRITE = 2,       /* off, len; payload: the len bytes written */
    IO_REC_SYNC_BEGIN = 3,  /* off: sync id */
    IO_REC_SYNC_END = 4,    /* off: sync id; result: 0 or -errno */
    IO_REC_TRUNCATE = 5,    /* off: the new size */
    IO_REC_FALLOCATE = 6,   /* off, len, mode */
    IO_REC_MARK = 7,        /* off: cookie; payload: what */
    IO_REC_FAULT = 8,       /* an injected failure: mode: the record type
                               refused, off, len, result: -errno */
};

struct io_log_rec {
    uint32_t type;          /* enum io_rec_type */
    uint32_t tag;           /* enum io_tag */
    uint32_t file;          /* file id, from an earlier IO_REC_FILE */
    int32_t result;
    uint64_t seq;           /* record number, from 0 */
    uint64_t off;
    uint64_t len;
    uint32_t mode;
    uint32_t payload;       /* bytes following the record */
};
_Static_assert(sizeof(struct io_log_rec) == 48, "io_log_rec is 48 bytes");

#endif /* DISKSERVE_IO_H */
