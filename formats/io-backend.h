/* The table a remote storage backend fills for formats/io.c.  A local
 * file needs none: io.c makes its system calls directly.  Every member
 * but aio is called from worker threads, possibly concurrently on one
 * device, and blocks until the operation is done.
 *
 * aio is for a caller that must not block (the server's event loop): it
 * starts an operation and returns, and the backend calls the
 * operation's done function from a thread of its own when it ends. */
#ifndef DISKSERVE_IO_BACKEND_H
#define DISKSERVE_IO_BACKEND_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>
#include <sys/uio.h>

/* The operations aio starts. */
enum io_aio_op {
    IO_AIO_READ,                /* len bytes at off into buf */
    IO_AIO_WRITE,               /* len bytes of buf at off */
    IO_AIO_FLUSH,               /* sync: len, off and buf unused */
    IO_AIO_DISCARD,             /* deallocate, reads back as zeros */
    IO_AIO_ZERO,                /* read back as zeros, stay allocated */
};

/* One asynchronous operation; the caller owns it and keeps it, and buf,
 * until done is called. */
struct io_aio {
    enum io_aio_op op;
    void *buf;
    uint64_t len, off;
    /* Called once, on a backend thread, when the operation has ended:
     * result 0 (a READ has filled all of buf, zeros past the device's
     * end) or -errno, already logged.  It must not block; it may reuse
     * or free a. */
    void (*done)(struct io_aio *a, int result);
    void *priv;                 /* the backend's while in flight */
};

struct io_backend_ops {
    const char *name;
    /* Up to len bytes at off: the count read (0 at or past the end, short
     * at the end) or -errno. */
    ssize_t (*pread)(void *dev, void *buf, size_t len, uint64_t off);
    /* All the bytes of iov at off, growing the device if they end past
     * it: the count written or -errno. */
    ssize_t (*pwritev)(void *dev, const struct iovec *iov, int iovcnt,
                       uint64_t off);
    /* Make every write completed before the call durable; 0 or -errno. */
    int (*sync)(void *dev);
    int (*size)(void *dev, uint64_t *size);
    int (*resize)(void *dev, uint64_t size);
    /* Deallocate [off, off + len), which then reads as zeros. */
    int (*discard)(void *dev, uint64_t off, uint64_t len);
    /* Make [off, off + len) read as zeros, keeping it allocated. */
    int (*zero)(void *dev, uint64_t off, uint64_t len);
    /* lseek's SEEK_DATA (data true) or SEEK_HOLE from off < size: where
     * the next data or hole starts, or -ENXIO (no data up to the end).
     * A backend may answer for a window of the device only: it then
     * reports the window's end, where the caller asks again. */
    int (*seek)(void *dev, uint64_t off, bool data, uint64_t *pos);
    /* The device's snapshots, oldest first: a malloc'd array of
     * malloc'd names (io_free_names); 0 or -errno. */
    int (*snapshots)(void *dev, char ***names, size_t *n);
    /* Call cb, in offset order and merged, for each extent of [off, off
     * + len) written or discarded since snapshot snap: 0, -ENOENT (no
     * such snapshot), cb's nonzero return, or -errno. */
    int (*diff)(void *dev, const char *snap, uint64_t off, uint64_t len,
                int (*cb)(uint64_t off, uint64_t len, void *arg),
                void *arg);
    /* Start a without waiting for the device: 0 (a->done will be
     * called) or -errno (it will not).  The range lies within the
     * device: aio never grows it.  NULL: no asynchronous path. */
    int (*aio)(void *dev, struct io_aio *a);
    void (*close)(void *dev);
};

/* Open the RBD image named by spec ("POOL/IMAGE[@SNAP][:conf=PATH]
 * [:id=USER]", without the "rbd:" prefix); a snapshot is always opened
 * read-only.  Logs the cause, naming the pool and image, and returns
 * -errno on failure. */
int io_rbd_open(const char *spec, bool writable,
                const struct io_backend_ops **ops, void **dev);

/* The handle io_open returned for the remote image name (as given to
 * io_open, "rbd:..."), opened writable or not as asked, when its backend
 * has asynchronous I/O: the handle, or -ENOENT (no such image open),
 * -ENOTSUP (no aio, or the test switches of io.h are on: they must see
 * every operation, and aio bypasses them). */
int io_aio_handle(const char *name, bool writable);

/* Start a on the remote image behind handle (from io_aio_handle), as
 * io_backend_ops.aio: 0 or -errno. */
int io_aio_submit(int handle, struct io_aio *a);

#endif /* DISKSERVE_IO_BACKEND_H */
