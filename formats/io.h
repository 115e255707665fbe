/* Positioned I/O helpers shared by the drivers: full reads and writes
 * that retry short transfers and EINTR.
 */
#ifndef DISKSERVE_IO_H
#define DISKSERVE_IO_H

#include <stdint.h>
#include <sys/uio.h>

/* Read exactly len bytes at off; -ENODATA if the file ends first (the
 * bytes past the end are zero-filled), other -errno on failure. */
int io_pread_full(int fd, void *buf, uint64_t len, uint64_t off);

/* Write exactly len bytes at off; 0 or -errno. */
int io_pwrite_full(int fd, const void *buf, uint64_t len, uint64_t off);

/* Vectored full write; iov is modified.  0 or -errno. */
int io_pwritev_full(int fd, struct iovec *iov, int iovcnt, uint64_t off);

/* Write len zero bytes at off with plain writes; 0 or -errno. */
int io_write_zeroes(int fd, uint64_t len, uint64_t off);

#endif /* DISKSERVE_IO_H */
