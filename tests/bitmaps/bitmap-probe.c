/* bitmap-probe: drive the qcow2 driver's dirty bitmaps directly, for the
 * tests in this directory.
 *
 *   bitmap-probe [-w [-c]] IMAGE COMMAND...
 *
 * Commands, run in order on one open image (read-only unless -w; -c
 * keeps the bitmaps crash safe):
 *   list               one line per bitmap: name granularity count
 *                      recording persistent inconsistent
 *   map NAME           the dirty runs: "OFFSET LENGTH" per run, merged
 *   write OFF LEN      write LEN bytes of 0xa5 at OFF (suffixes k M G)
 *   zero OFF LEN       write zeroes
 *   trim OFF LEN       trim
 *   add NAME GRAN P    add a bitmap (persistent when P is 1)
 *   sleep SECONDS      wait (the image stays open)
 *   randwrite N SEED   N writes of 512 B to 64 KiB of seeded random
 *                      bytes at random sector offsets, printing each
 *                      "OFFSET LENGTH" (flushed) before issuing it, and
 *                      a flush after every 16
 *   bench N GRAN...    N random 4 KiB writes (seeded), then the ns per
 *                      write, after adding one bitmap per granularity
 *                      given (none when only N)
 *   recbench N GRAN... the same, but only the bitmap recording each
 *                      write does (the driver's qcow2_bitmaps_record)
 *   mtbench T N GRAN... N random 4 KiB writes from each of T threads (a
 *                      queue depth of T), then the writes per second
 * Exit status: 0, or 1 with the driver's error printed.
 */
#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "image.h"
#include "qcow2/qcow2.h"

/* A number with an optional k, M or G suffix (powers of 1024). */
static uint64_t num(const char *s)
{
    char *end;
    uint64_t v = strtoull(s, &end, 0);
    switch (*end) {
    case 'k': return v << 10;
    case 'M': return v << 20;
    case 'G': return v << 30;
    default: return v;
    }
}

static int list(struct image *img)
{
    size_t n = img->ops->bitmap_count(img);
    for (size_t i = 0; i < n; i++) {
        struct img_bitmap_info bi;
        int err = img->ops->bitmap_info(img, i, &bi);
        if (err)
            return err;
        printf("%s %" PRIu64 " %" PRIu64 " %d %d %d\n", bi.name,
               bi.granularity, bi.count, bi.recording, bi.persistent,
               bi.inconsistent);
    }
    return 0;
}

static int map(struct image *img, const char *name)
{
    struct img_extent v[64];
    uint64_t off = 0, run_start = 0;
    bool in_run = false;

    while (off < img->size) {
        struct img_extents e = { v, 0, 64, off };
        int err = img->ops->bitmap_status(img, name, img->size - off, off,
                                          &e);
        if (err)
            return err;
        if (e.n == 0)
            return -EIO;
        for (size_t i = 0; i < e.n; i++) {
            if (v[i].length == 0)
                return -EIO;
            bool dirty = v[i].flags & 1;
            if (dirty && !in_run) {
                run_start = off;
                in_run = true;
            } else if (!dirty && in_run) {
                printf("%" PRIu64 " %" PRIu64 "\n", run_start,
                       off - run_start);
                in_run = false;
            }
            off += v[i].length;
        }
    }
    if (off != img->size)
        return -EIO;
    if (in_run)
        printf("%" PRIu64 " %" PRIu64 "\n", run_start, off - run_start);
    return 0;
}

static uint64_t next_rand(uint64_t *x)
{
    *x = *x * 6364136223846793005ull + 1442695040888963407ull;
    return *x >> 17;
}

static int randwrite(struct image *img, long n, uint64_t seed)
{
    static uint8_t buf[65536];
    uint64_t x = seed * 2654435761u + 1;
    uint64_t sectors = img->size / 512;

    for (long i = 0; i < n; i++) {
        uint64_t len = (next_rand(&x) % 128 + 1) * 512;
        uint64_t off = next_rand(&x) % (sectors - len / 512 + 1) * 512;
        for (uint64_t k = 0; k < len; k += 8) {
            uint64_t v = next_rand(&x) ^ ((uint64_t)i << 32);
            memcpy(buf + k, &v, 8);
        }
        printf("%" PRIu64 " %" PRIu64 "\n", off, len);
        fflush(stdout);
        int err = img->ops->write(img, buf, len, off, 0);
        /* Flushes link new clusters, so that a crash keeps writes. */
        if (!err && i % 16 == 15)
            err = img->ops->flush(img);
        if (err)
            return err;
    }
    return 0;
}

struct mt_arg {
    struct image *img;
    long n;
    uint64_t seed;
    int err;
};

static void *mt_writer(void *opaque)
{
    struct mt_arg *a = opaque;
    static const char buf[4096];
    uint64_t blocks = a->img->size / 4096;
    uint64_t x = a->seed;

    for (long i = 0; i < a->n && !a->err; i++)
        a->err = a->img->ops->write(a->img, buf, 4096,
                                    next_rand(&x) % blocks * 4096, 0);
    return NULL;
}

static int add_bench_bitmaps(struct image *img, char **gran, int n)
{
    for (int i = 0; i < n; i++) {
        char name[32], msg[256];
        snprintf(name, sizeof name, "bench%d", i + 1);
        struct img_bitmap_action a = {
            .op = IMG_BITMAP_ADD, .name = name, .persistent = true,
            .granularity = num(gran[i]),
        };
        int err = img->ops->bitmap_apply(img, &a, 1, msg, sizeof msg);
        if (err) {
            fprintf(stderr, "bitmap-probe: %s\n", msg);
            return err;
        }
    }
    return 0;
}

static int mtbench(struct image *img, char **argv, int argc)
{
    int t = atoi(argv[0]);
    long n = atol(argv[1]);
    pthread_t th[64];
    struct mt_arg args[64];
    struct timespec t0, t1;

    if (t < 1 || t > 64)
        return -EINVAL;
    int err = add_bench_bitmaps(img, argv + 2, argc - 2);
    if (err)
        return err;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    for (int i = 0; i < t; i++) {
        args[i] = (struct mt_arg){ img, n, 1000u + (uint64_t)i, 0 };
        pthread_create(&th[i], NULL, mt_writer, &args[i]);
    }
    for (int i = 0; i < t; i++) {
        pthread_join(th[i], NULL);
        if (args[i].err)
            err = args[i].err;
    }
    clock_gettime(CLOCK_MONOTONIC, &t1);
    double s = (t1.tv_sec - t0.tv_sec) + (t1.tv_nsec - t0.tv_nsec) / 1e9;
    printf("%.0f writes/s with %d bitmaps, %d threads\n", t * n / s,
           argc - 2, t);
    for (int i = 0; i < argc - 2 && !err; i++) {
        char name[32], msg[256];
        snprintf(name, sizeof name, "bench%d", i + 1);
        struct img_bitmap_action a = { .op = IMG_BITMAP_REMOVE,
                                       .name = name };
        err = img->ops->bitmap_apply(img, &a, 1, msg, sizeof msg);
    }
    return err;
}

static int bench(struct image *img, char **argv, int argc, bool rec_only)
{
    long n = atol(argv[0]);
    uint64_t blocks = img->size / 4096;
    static char buf[4096];
    uint64_t x = 42, gen;

    for (int i = 1; i < argc; i++) {
        char name[32], msg[256];
        snprintf(name, sizeof name, "bench%d", i);
        struct img_bitmap_action a = {
            .op = IMG_BITMAP_ADD, .name = name,
            .granularity = num(argv[i]),
        };
        int err = img->ops->bitmap_apply(img, &a, 1, msg, sizeof msg);
        if (err) {
            fprintf(stderr, "bitmap-probe: %s\n", msg);
            return err;
        }
    }
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    for (long i = 0; i < n; i++) {
        x = x * 6364136223846793005ull + 1442695040888963407ull;
        uint64_t off = (x >> 20) % blocks * 4096;
        int err = rec_only
            ? qcow2_bitmaps_record(qcow2_from_img(img), off, 4096, &gen)
            : img->ops->write(img, buf, 4096, off, 0);
        if (err)
            return err;
    }
    clock_gettime(CLOCK_MONOTONIC, &t1);
    double ns = ((t1.tv_sec - t0.tv_sec) * 1e9 + (t1.tv_nsec - t0.tv_nsec))
                / (double)n;
    printf("%.1f ns/%s with %d bitmaps\n", ns,
           rec_only ? "record" : "write", argc - 1);
    return 0;
}

int main(int argc, char **argv)
{
    bool rw = false, cs = false;
    int i = 1;

    if (argc > i && !strcmp(argv[i], "-w")) {
        rw = true;
        i++;
    }
    if (argc > i && !strcmp(argv[i], "-c")) {
        cs = true;
        i++;
    }
    if (argc - i < 1) {
        fprintf(stderr, "usage: bitmap-probe [-w [-c]] IMAGE COMMAND...\n");
        return 2;
    }
    struct img_open_args args = { .path = argv[i++], .format = "qcow2",
                                  .read_only = !rw,
                                  .bitmaps_crash_safe = cs };
    struct image *img;
    int err = img_open(&args, &img);
    if (err)
        return 1;
    static char data[1 << 20];
    memset(data, 0xa5, sizeof data);
    while (!err && i < argc) {
        const char *cmd = argv[i++];
        if (!strcmp(cmd, "list")) {
            err = list(img);
        } else if (!strcmp(cmd, "map") && i < argc) {
            err = map(img, argv[i++]);
        } else if ((!strcmp(cmd, "write") || !strcmp(cmd, "zero") ||
                    !strcmp(cmd, "trim")) && i + 1 < argc) {
            uint64_t off = num(argv[i]);
            uint64_t len = num(argv[i + 1]);
            i += 2;
            if (!strcmp(cmd, "zero"))
                err = img->ops->write_zeroes(img, len, off, 0);
            else if (!strcmp(cmd, "trim"))
                err = img->ops->trim(img, len, off, 0);
            else
                for (uint64_t d = 0; !err && d < len; d += sizeof data)
                    err = img->ops->write(img, data, len - d < sizeof data
                                          ? len - d : sizeof data,
                                          off + d, 0);
        } else if (!strcmp(cmd, "add") && i + 2 < argc) {
            char msg[256];
            struct img_bitmap_action a = {
                .op = IMG_BITMAP_ADD, .name = argv[i],
                .granularity = num(argv[i + 1]),
                .persistent = atoi(argv[i + 2]) == 1,
            };
            i += 3;
            err = img->ops->bitmap_apply(img, &a, 1, msg, sizeof msg);
            if (err)
                fprintf(stderr, "bitmap-probe: %s\n", msg);
        } else if (!strcmp(cmd, "randwrite") && i + 1 < argc) {
            err = randwrite(img, atol(argv[i]), strtoull(argv[i + 1], NULL,
                                                         0));
            i += 2;
        } else if (!strcmp(cmd, "sleep") && i < argc) {
            sleep((unsigned)atoi(argv[i++]));
        } else if (!strcmp(cmd, "mtbench") && i + 1 < argc) {
            err = mtbench(img, argv + i, argc - i);
            i = argc;
        } else if ((!strcmp(cmd, "bench") || !strcmp(cmd, "recbench")) &&
                   i < argc) {
            err = bench(img, argv + i, argc - i, cmd[0] == 'r');
            i = argc;
        } else {
            fprintf(stderr, "bitmap-probe: bad command '%s'\n", cmd);
            img_close(img);
            return 2;
        }
    }
    if (!err && img->ops->flush)
        err = img->ops->flush(img);
    if (err)
        fprintf(stderr, "bitmap-probe: %s\n", strerror(-err));
    img_close(img);
    return err ? 1 : 0;
}
