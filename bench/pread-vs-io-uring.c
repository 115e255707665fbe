/* pread-vs-io-uring FILE [BATCH...]: the cost of 4 KiB random reads of
 * FILE's cached pages through pread, one system call each, against
 * io_uring with BATCH reads submitted and reaped per io_uring_enter.
 * The server reads small requests with pread (inline, RWF_NOWAIT off
 * tmpfs); this measures whether batching them through io_uring would
 * cost less.  Not built by make: it needs liburing-dev.
 *
 *   cc -O2 -o /tmp/pread-vs-io-uring bench/pread-vs-io-uring.c -luring
 *   cat FILE >/dev/null; /tmp/pread-vs-io-uring FILE 1 4 32
 */
#define _GNU_SOURCE
#include <fcntl.h>
#include <liburing.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define BLOCK 4096
#define READS 400000
#define MAX_BATCH 64

static double seconds(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + (double)t.tv_nsec * 1e-9;
}

static off_t random_block(unsigned *seed, off_t blocks)
{
    return (off_t)((unsigned long)rand_r(seed) % (unsigned long)blocks) *
           BLOCK;
}

static double with_pread(int fd, off_t blocks, char *buf, int batch)
{
    unsigned seed = 1;
    double t0 = seconds();

    for (int i = 0; i < READS; i++)
        if (pread(fd, buf + (i % batch) * BLOCK, BLOCK,
                  random_block(&seed, blocks)) != BLOCK) {
            perror("pread");
            exit(1);
        }
    return (seconds() - t0) / READS * 1e6;
}

static double with_io_uring(int fd, off_t blocks, char *buf, int batch)
{
    struct io_uring ring;
    unsigned seed = 1;
    int err = io_uring_queue_init(MAX_BATCH, &ring, 0);

    if (err < 0) {
        fprintf(stderr, "io_uring_queue_init: %s\n", strerror(-err));
        exit(1);
    }
    double t0 = seconds();
    for (int done = 0; done < READS; done += batch) {
        for (int j = 0; j < batch; j++)
            io_uring_prep_read(io_uring_get_sqe(&ring), fd, buf + j * BLOCK,
                               BLOCK, (unsigned long long)random_block(&seed, blocks));
        io_uring_submit_and_wait(&ring, (unsigned)batch);
        struct io_uring_cqe *cqe;
        unsigned head, n = 0;
        io_uring_for_each_cqe(&ring, head, cqe) {
            if (cqe->res != BLOCK) {
                fprintf(stderr, "read: %d\n", cqe->res);
                exit(1);
            }
            n++;
        }
        io_uring_cq_advance(&ring, n);
    }
    double us = (seconds() - t0) / READS * 1e6;
    io_uring_queue_exit(&ring);
    return us;
}

int main(int argc, char **argv)
{
    if (argc < 2) {
        fprintf(stderr, "usage: %s FILE [BATCH...]\n", argv[0]);
        return 2;
    }
    int fd = open(argv[1], O_RDONLY);
    off_t blocks = fd < 0 ? 0 : lseek(fd, 0, SEEK_END) / BLOCK;
    if (blocks <= 0) {
        fprintf(stderr, "%s: cannot open, or smaller than 4 KiB\n", argv[1]);
        return 1;
    }
    char *buf = aligned_alloc(BLOCK, BLOCK * MAX_BATCH);
    for (int a = 2; a < argc || a == 2; a++) {
        int batch = a < argc ? atoi(argv[a]) : 8;
        if (batch < 1 || batch > MAX_BATCH) {
            fprintf(stderr, "batch: 1 to %d\n", MAX_BATCH);
            return 2;
        }
        printf("batch %2d: pread %.2f us/read, io_uring %.2f us/read\n",
               batch, with_pread(fd, blocks, buf, batch),
               with_io_uring(fd, blocks, buf, batch));
    }
    free(buf);
    return 0;
}
