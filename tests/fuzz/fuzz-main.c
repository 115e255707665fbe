/* A main for the fuzz targets when built without libFuzzer: run
 * LLVMFuzzerTestOneInput once over every file named on the command line
 * and every regular file in every directory named (not recursively), so
 * that `make check` replays the corpora with the ordinary build.
 *
 *   fuzz-TARGET FILE|DIR...
 *
 * Exits 0 after the last input (a finding aborts), 1 when an input
 * cannot be read or nothing was given.
 */
#include <dirent.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "fuzz.h"

/* Larger inputs are cut, as libFuzzer's -max_len would. */
#define FUZZ_MAX_INPUT (4u * 1024 * 1024)

static int run_file(const char *path, unsigned long *count)
{
    FILE *f = fopen(path, "rb");
    if (!f) {
        fprintf(stderr, "fuzz-main: %s: %s\n", path, strerror(errno));
        return 1;
    }
    uint8_t *buf = malloc(FUZZ_MAX_INPUT);
    if (!buf) {
        fclose(f);
        return 1;
    }
    size_t n = fread(buf, 1, FUZZ_MAX_INPUT, f);
    int err = ferror(f);
    fclose(f);
    if (err) {
        fprintf(stderr, "fuzz-main: %s: read error\n", path);
        free(buf);
        return 1;
    }
    /* A copy of exactly n bytes, so ASan sees reads past the input. */
    uint8_t *in = malloc(n ? n : 1);
    if (!in) {
        free(buf);
        return 1;
    }
    memcpy(in, buf, n);
    free(buf);
    LLVMFuzzerTestOneInput(in, n);
    free(in);
    (*count)++;
    return 0;
}

static int run_dir(const char *dir, unsigned long *count)
{
    DIR *d = opendir(dir);
    if (!d) {
        fprintf(stderr, "fuzz-main: %s: %s\n", dir, strerror(errno));
        return 1;
    }
    int rc = 0;
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        char path[4096];
        struct stat st;
        if (e->d_name[0] == '.')
            continue;
        if ((size_t)snprintf(path, sizeof path, "%s/%s", dir, e->d_name) >=
            sizeof path)
            continue;
        if (stat(path, &st) == 0 && S_ISREG(st.st_mode))
            rc |= run_file(path, count);
    }
    closedir(d);
    return rc;
}

int main(int argc, char **argv)
{
    unsigned long count = 0;
    int rc = 0;

    if (argc < 2) {
        fprintf(stderr, "usage: %s FILE|DIR...\n", argv[0]);
        return 1;
    }
    for (int i = 1; i < argc; i++) {
        struct stat st;
        if (stat(argv[i], &st) == 0 && S_ISDIR(st.st_mode))
            rc |= run_dir(argv[i], &count);
        else
            rc |= run_file(argv[i], &count);
    }
    fprintf(stderr, "%s: %lu inputs\n", argv[0], count);
    return rc || count == 0;
}
