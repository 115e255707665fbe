/* Helpers of the image fuzz targets; see fuzz-image.h. */
#include <dirent.h>
#include <fcntl.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "fuzz-image.h"

#define MAX_EXTENTS 64
#define TIME_LIMIT_NS 1000000000ll

static struct timespec started;
static char dir[4096];

void fuzz_start_clock(void)
{
    clock_gettime(CLOCK_MONOTONIC, &started);
}

bool fuzz_out_of_time(void)
{
    struct timespec now;
    clock_gettime(CLOCK_MONOTONIC, &now);
    long long ns = (now.tv_sec - started.tv_sec) * 1000000000ll +
                   (now.tv_nsec - started.tv_nsec);
    return ns > TIME_LIMIT_NS;
}

/* The directory holds only files the target wrote. */
static void remove_dir(void)
{
    DIR *d = opendir(dir);
    struct dirent *de;
    char path[4400];

    while (d && (de = readdir(d))) {
        if (strcmp(de->d_name, ".") && strcmp(de->d_name, "..")) {
            snprintf(path, sizeof path, "%s/%s", dir, de->d_name);
            unlink(path);
        }
    }
    if (d)
        closedir(d);
    rmdir(dir);
}

const char *fuzz_dir(void)
{
    if (dir[0])
        return dir;
    const char *tmp = getenv("TMPDIR");
    snprintf(dir, sizeof dir, "%s/%s.XXXXXX", tmp ? tmp : "/tmp",
             fuzz_target);
    if (!mkdtemp(dir)) {
        perror("mkdtemp");
        abort();
    }
    atexit(remove_dir);
    return dir;
}

void fuzz_write_file(const char *path, const uint8_t *data, size_t size)
{
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    if (fd < 0 || (size && write(fd, data, size) != (ssize_t)size)) {
        perror("write input");
        abort();
    }
    close(fd);
}

/* Check one extent list against image.h: at least one extent, none
 * empty, end just past the last, no more than asked for.  Returns the
 * bytes described. */
static uint64_t check_extents(const char *what, const struct img_extents *e,
                              uint64_t len, uint64_t off)
{
    uint64_t sum = 0;
    if (e->n == 0 || e->n > e->cap)
        FAIL("%s: %zu extents at %llu", what, e->n, (unsigned long long)off);
    for (size_t i = 0; i < e->n; i++) {
        if (e->v[i].length == 0)
            FAIL("%s: empty extent %zu at %llu", what, i,
                 (unsigned long long)off);
        sum += e->v[i].length;
    }
    if (e->end != off + sum)
        FAIL("%s: end %llu, extents end at %llu", what,
             (unsigned long long)e->end, (unsigned long long)(off + sum));
    if (sum > len)
        FAIL("%s: %llu bytes described at %llu, %llu asked", what,
             (unsigned long long)sum, (unsigned long long)off,
             (unsigned long long)len);
    return sum;
}

void fuzz_read_all(struct image *img, uint8_t *buf, uint64_t limit)
{
    uint64_t end = img->size < limit ? img->size : limit;
    for (uint64_t off = 0; off < end && !fuzz_out_of_time();
         off += FUZZ_CHUNK) {
        uint64_t n = end - off < FUZZ_CHUNK ? end - off : FUZZ_CHUNK;
        img->ops->read(img, buf, n, off);
    }
}

void fuzz_status_all(struct image *img)
{
    struct img_extent v[MAX_EXTENTS];
    uint64_t end = img->size < FUZZ_READ_LIMIT ? img->size : FUZZ_READ_LIMIT;

    for (uint64_t off = 0; img->ops->block_status && off < end &&
         !fuzz_out_of_time();) {
        struct img_extents e = { .v = v, .cap = MAX_EXTENTS, .end = off };
        if (img->ops->block_status(img, end - off, off, &e) < 0)
            break;
        off += check_extents("block_status", &e, end - off, off);
    }
    size_t nb = img->ops->bitmap_count ? img->ops->bitmap_count(img) : 0;
    for (size_t i = 0; i < nb && i < 8; i++) {
        struct img_bitmap_info info;
        if (img->ops->bitmap_info(img, i, &info) < 0)
            continue;
        for (uint64_t off = 0; img->ops->bitmap_status && off < end &&
             !fuzz_out_of_time();) {
            struct img_extents e = { .v = v, .cap = MAX_EXTENTS, .end = off };
            if (img->ops->bitmap_status(img, info.name, end - off, off,
                                        &e) < 0)
                break;
            off += check_extents("bitmap_status", &e, end - off, off);
        }
    }
}
