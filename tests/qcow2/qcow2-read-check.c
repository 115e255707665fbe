/* qcow2-read-check: open an image with the format drivers (probing, as
 * the server does) and compare everything the driver says against a raw
 * copy of the guest data made by qemu-img convert.
 *
 *   qcow2-read-check [-s SNAPSHOT] [-k KEYFILE] [-c CACHE_BYTES]
 *                    [-t THREADS] [-n READS] [-S SEED] IMAGE RAW
 *
 * Checks, in order: the size; a sequential read of the whole image;
 * random reads of random lengths from several threads at once (so a
 * small -c makes them fight over the L2 cache); map_nowait answers
 * (host ranges must hold the same bytes, zero ranges must be zero); and
 * block status (extents cover the image, zero extents read as zeros).
 * Exit 0 when all agree, 1 with the first difference otherwise, 2 for
 * usage or open errors.
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "image.h"
#include "io.h"

#define MAX_READ (256u * 1024)

static struct image *img;
static int raw_fd;
static uint64_t size;
static unsigned n_reads = 2000;
static uint64_t seed;
static volatile int failed;

/* xorshift64*: small, seedable, good enough for offsets. */
static uint64_t next_rand(uint64_t *st)
{
    *st ^= *st >> 12;
    *st ^= *st << 25;
    *st ^= *st >> 27;
    return *st * 0x2545f4914f6cdd1dull;
}

static int compare(const uint8_t *got, const uint8_t *want, uint64_t len,
                   uint64_t off, const char *what)
{
    if (memcmp(got, want, len) == 0)
        return 0;
    for (uint64_t i = 0; i < len; i++) {
        if (got[i] != want[i]) {
            fprintf(stderr, "FAIL: %s: byte at guest offset %" PRIu64
                    " is 0x%02x, expected 0x%02x (read %" PRIu64
                    " bytes at %" PRIu64 ")\n", what, off + i, got[i],
                    want[i], len, off);
            break;
        }
    }
    failed = 1;
    return -1;
}

static int read_and_compare(uint8_t *a, uint8_t *b, uint64_t len,
                            uint64_t off, const char *what)
{
    int err = img->ops->read(img, a, len, off);
    if (err) {
        fprintf(stderr, "FAIL: %s: read %" PRIu64 " at %" PRIu64 ": %s\n",
                what, len, off, strerror(-err));
        failed = 1;
        return -1;
    }
    err = io_pread_full(raw_fd, b, len, off);
    if (err) {
        fprintf(stderr, "raw read failed: %s\n", strerror(-err));
        failed = 1;
        return -1;
    }
    return compare(a, b, len, off, what);
}

static void *reader(void *arg)
{
    uint64_t st = seed + (uintptr_t)arg * 7919 + 1;
    uint8_t *a = malloc(MAX_READ), *b = malloc(MAX_READ);

    for (unsigned i = 0; i < n_reads && !failed && a && b; i++) {
        uint64_t off = next_rand(&st) % size;
        uint64_t len = next_rand(&st) % MAX_READ + 1;
        if (next_rand(&st) % 2)         /* half aligned, like clients */
            off &= ~4095ull, len = (len + 4095) & ~4095ull;
        if (off >= size)
            off = size - 1;
        if (len > size - off)
            len = size - off;
        read_and_compare(a, b, len, off, "random read");
    }
    free(a);
    free(b);
    return NULL;
}

static void check_nowait(void)
{
    uint64_t st = seed ^ 0xabcdef;
    uint8_t *a = malloc(MAX_READ), *b = malloc(MAX_READ);
    unsigned data = 0, zero = 0, again = 0;

    if (!img->ops->map_nowait || !a || !b)
        goto out;
    for (unsigned i = 0; i < 2000 && !failed; i++) {
        uint64_t off = next_rand(&st) % size;
        uint64_t len = next_rand(&st) % MAX_READ + 1;
        if (len > size - off)
            len = size - off;
        struct img_map m;
        int err = img->ops->map_nowait(img, len, off, &m);
        if (err == -EAGAIN) {
            again++;
            continue;
        }
        if (err) {
            fprintf(stderr, "FAIL: map_nowait at %" PRIu64 ": %s\n", off,
                    strerror(-err));
            failed = 1;
            break;
        }
        if (m.length == 0 || m.length > len) {
            fprintf(stderr, "FAIL: map_nowait at %" PRIu64 " length %"
                    PRIu64 " (asked %" PRIu64 ")\n", off, m.length, len);
            failed = 1;
            break;
        }
        if (m.kind == IMG_MAP_DATA) {
            data++;
            err = io_pread_full(m.fd, a, m.length, m.host_offset);
            if (err && err != -ENODATA) {
                fprintf(stderr, "FAIL: map_nowait host read: %s\n",
                        strerror(-err));
                failed = 1;
                break;
            }
        } else {
            zero++;
            memset(a, 0, m.length);
        }
        io_pread_full(raw_fd, b, m.length, off);
        compare(a, b, m.length, off, "map_nowait");
    }
    printf("map_nowait: %u data, %u zero, %u again\n", data, zero, again);
out:
    free(a);
    free(b);
}

static void check_block_status(void)
{
    struct img_extent v[256];
    uint64_t off = 0, n_ext = 0, n_zero = 0;
    uint8_t *a = malloc(MAX_READ), *z = calloc(1, MAX_READ);

    while (off < size && !failed && a && z) {
        struct img_extents e = { v, 0, 256, off };
        int err = img->ops->block_status(img, size - off, off, &e);
        if (err || e.n == 0) {
            fprintf(stderr, "FAIL: block_status at %" PRIu64 ": %s\n", off,
                    err ? strerror(-err) : "no extent");
            failed = 1;
            break;
        }
        for (size_t i = 0; i < e.n; i++) {
            if (v[i].length == 0 || v[i].length > size - off) {
                fprintf(stderr, "FAIL: extent %" PRIu64 "+%" PRIu64
                        " past the end\n", off, v[i].length);
                failed = 1;
                break;
            }
            if ((v[i].flags & IMG_EXT_ZERO) && !failed) {
                n_zero++;
                /* Sample the start and the end of the extent. */
                uint64_t l = v[i].length < MAX_READ ? v[i].length
                                                    : MAX_READ;
                io_pread_full(raw_fd, a, l, off);
                compare(a, z, l, off, "zero extent");
                io_pread_full(raw_fd, a, l, off + v[i].length - l);
                compare(a, z, l, off + v[i].length - l, "zero extent");
            }
            off += v[i].length;
            n_ext++;
        }
    }
    printf("block_status: %" PRIu64 " extents, %" PRIu64 " zero\n", n_ext,
           n_zero);
    free(a);
    free(z);
}

int main(int argc, char **argv)
{
    struct img_open_args args = { .read_only = true };
    unsigned threads = 4;
    int opt;

    seed = (uint64_t)time(NULL);
    while ((opt = getopt(argc, argv, "s:k:c:t:n:S:")) != -1) {
        switch (opt) {
        case 's': args.snapshot = optarg; break;
        case 'k': args.key_file = optarg; break;
        case 'c': args.cache_size = strtoull(optarg, NULL, 0); break;
        case 't': threads = (unsigned)atoi(optarg); break;
        case 'n': n_reads = (unsigned)atoi(optarg); break;
        case 'S': seed = strtoull(optarg, NULL, 0); break;
        default: return 2;
        }
    }
    if (argc - optind != 2 || threads == 0 || threads > 64) {
        fprintf(stderr, "usage: %s [-s SNAP] [-k KEYFILE] [-c CACHE] "
                "[-t THREADS] [-n READS] [-S SEED] IMAGE RAW\n", argv[0]);
        return 2;
    }
    printf("seed %" PRIu64 "\n", seed);
    args.path = argv[optind];
    int err = img_open(&args, &img);
    if (err) {
        fprintf(stderr, "open %s: %s\n", args.path, strerror(-err));
        return 2;
    }
    if (strcmp(img->ops->name, "qcow2") != 0) {
        fprintf(stderr, "FAIL: %s probed as %s\n", args.path,
                img->ops->name);
        return 1;
    }
    raw_fd = open(argv[optind + 1], O_RDONLY);
    struct stat st;
    if (raw_fd < 0 || fstat(raw_fd, &st) < 0) {
        perror(argv[optind + 1]);
        return 2;
    }
    size = img->size;
    if (size != (uint64_t)st.st_size) {
        fprintf(stderr, "FAIL: size %" PRIu64 ", expected %lld\n", size,
                (long long)st.st_size);
        return 1;
    }
    if (size == 0)
        return 0;

    uint8_t *a = malloc(1 << 20), *b = malloc(1 << 20);
    for (uint64_t off = 0; off < size && !failed && a && b;
         off += 1 << 20) {
        uint64_t len = size - off < (1 << 20) ? size - off : 1 << 20;
        read_and_compare(a, b, len, off, "sequential read");
    }
    free(a);
    free(b);

    pthread_t tid[64];
    for (unsigned i = 0; i < threads; i++)
        pthread_create(&tid[i], NULL, reader, (void *)(uintptr_t)i);
    for (unsigned i = 0; i < threads; i++)
        pthread_join(tid[i], NULL);

    if (!failed)
        check_nowait();
    if (!failed)
        check_block_status();
    img_close(img);
    close(raw_fd);
    if (failed)
        return 1;
    printf("ok: %s, %" PRIu64 " bytes, %u threads x %u random reads\n",
           args.path, size, threads, n_reads);
    return 0;
}
