/* io-log-writer: drive every tagged wrapper of formats/io.h on two files,
 * for io-log-replays-every-change.sh, which runs it with DISKSERVE_IO_LOG
 * and DISKSERVE_FAULT=L2:2:EIO set and replays the log.
 *
 *   io-log-writer FILE
 *
 * Changes FILE and FILE.2 (both must exist, empty).  Before each sync of
 * FILE it saves FILE's contents as FILE.base-N (N = 1, 2, ...): what the
 * replayed base of crash point N must equal.  Exits 1 when a wrapper
 * does not return what it should.
 */
#include <errno.h>
#include <fcntl.h>
#include <linux/falloc.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "io.h"

static const char *path;
static int nsync;

static void check(int got, int want, const char *what)
{
    if (got != want) {
        fprintf(stderr, "io-log-writer: %s returned %d, want %d\n", what,
                got, want);
        exit(1);
    }
}

static void save_base(int fd)
{
    char name[4096];
    static uint8_t buf[1 << 20];
    off_t size = lseek(fd, 0, SEEK_END);

    if (size < 0 || size > (off_t)sizeof buf ||
        pread(fd, buf, (size_t)size, 0) != size) {
        perror("io-log-writer: reading back");
        exit(1);
    }
    snprintf(name, sizeof name, "%s.base-%d", path, ++nsync);
    FILE *f = fopen(name, "wb");
    if (!f || fwrite(buf, 1, (size_t)size, f) != (size_t)size ||
        fclose(f) != 0) {
        perror(name);
        exit(1);
    }
}

static void sync_file(int fd)
{
    save_base(fd);
    check(io_sync(fd, IO_TAG_FLUSH), 0, "io_sync");
}

static void fill(uint8_t *p, size_t n, unsigned seed)
{
    for (size_t i = 0; i < n; i++)
        p[i] = (uint8_t)(seed * 31 + i * 7 + 1);
}

int main(int argc, char **argv)
{
    static uint8_t a[16384], b[4096], c[4096];
    char second[4096];

    if (argc != 2) {
        fprintf(stderr, "usage: io-log-writer FILE\n");
        return 2;
    }
    path = argv[1];
    snprintf(second, sizeof second, "%s.2", path);
    int fd = open(path, O_RDWR | O_CLOEXEC);
    int fd2 = open(second, O_RDWR | O_CLOEXEC);
    if (fd < 0 || fd2 < 0) {
        perror("io-log-writer: open");
        return 1;
    }
    io_register(fd, path);

    fill(a, sizeof a, 1);
    check(io_pwrite_full(fd, a, 8192, 0), 0, "io_pwrite_full");
    sync_file(fd);

    /* L2-tagged writes: the first passes, the second is refused. */
    fill(b, sizeof b, 2);
    fill(c, sizeof c, 3);
    struct iovec iov[3] = { { b, 1000 }, { c, 96 }, { b + 1000, 3000 } };
    check(io_pwritev_tag(fd, iov, 3, 512, IO_TAG_L2), 0, "io_pwritev_tag");
    check(io_pwrite_tag(fd, c, 512, 0, IO_TAG_L2), -EIO,
          "the second L2 write (injected EIO)");
    check(io_truncate(fd, 65536, IO_TAG_ALLOC), 0, "io_truncate (grow)");
    check(io_fallocate(fd, 0, 65536, 16384, IO_TAG_ALLOC), 0,
          "io_fallocate (grow)");
    fill(a, sizeof a, 4);
    check(io_pwrite_tag(fd, a, 1000, 70000, IO_TAG_REFCOUNT_BLOCK), 0,
          "io_pwrite_tag");
    sync_file(fd);

    check(io_fallocate(fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, 4096,
                       4096, IO_TAG_DATA), 0, "io_fallocate (punch)");
    int err = io_fallocate(fd, FALLOC_FL_ZERO_RANGE | FALLOC_FL_KEEP_SIZE,
                           100, 300, IO_TAG_DATA);
    if (err && err != -EOPNOTSUPP)
        check(err, 0, "io_fallocate (zero range)");
    check(io_write_zeroes_tag(fd, 70000, 30000, IO_TAG_OTHER), 0,
          "io_write_zeroes_tag");
    check(io_truncate(fd, 50000, IO_TAG_OTHER), 0, "io_truncate (shrink)");
    check(io_truncate(fd, 60000, IO_TAG_OTHER), 0, "io_truncate (grow)");
    fill(a, sizeof a, 5);
    check(io_pwrite_tag(fd, a, 300, 59900, IO_TAG_HEADER), 0,
          "io_pwrite_tag past the end");
    io_log_mark(7, "FLUSH");
    sync_file(fd);

    /* FILE.2 is written but never synced: its base stays empty. */
    check(io_pwrite_full(fd2, a, 4096, 1024), 0, "io_pwrite_full (2)");
    fill(a, sizeof a, 6);
    check(io_pwrite_full(fd, a, 512, 0), 0, "io_pwrite_full (last)");
    close(fd);
    close(fd2);
    return 0;
}
