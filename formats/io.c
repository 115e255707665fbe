/* Positioned I/O that never returns short: loops over partial transfers
 * and EINTR so callers deal only in whole requests.
 */
#include <errno.h>
#include <limits.h>
#include <string.h>
#include <unistd.h>

#include "io.h"

int io_pread_full(int fd, void *buf, uint64_t len, uint64_t off)
{
    uint8_t *p = buf;

    while (len > 0) {
        ssize_t n = pread(fd, p, len, (off_t)off);
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

int io_pwrite_full(int fd, const void *buf, uint64_t len, uint64_t off)
{
    const uint8_t *p = buf;

    while (len > 0) {
        ssize_t n = pwrite(fd, p, len, (off_t)off);
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
    }
    return 0;
}

int io_pwritev_full(int fd, struct iovec *iov, int iovcnt, uint64_t off)
{
    while (iovcnt > 0) {
        ssize_t n = pwritev(fd, iov, iovcnt > IOV_MAX ? IOV_MAX : iovcnt,
                            (off_t)off);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            return -errno;
        }
        if (n == 0)
            return -EIO;
        off += (uint64_t)n;
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

int io_write_zeroes(int fd, uint64_t len, uint64_t off)
{
    static const uint8_t zeroes[64 * 1024];

    while (len > 0) {
        uint64_t n = len < sizeof zeroes ? len : sizeof zeroes;
        int err = io_pwrite_full(fd, zeroes, n, off);
        if (err)
            return err;
        len -= n;
        off += n;
    }
    return 0;
}
