/* fuzz-vhdx: the input describes a sparse VHDX file as a list of pieces,
 * so that the fuzzer reaches the headers, region tables, log, metadata
 * and BAT of a file several megabytes long with an input of a few
 * kilobytes.  Each piece is
 *
 *     u32 LE  offset in 512-byte sectors (below 64 MiB: higher bits
 *             are masked off)
 *     u16 LE  length in bytes
 *     bytes   the piece (cut at the end of the input)
 *
 * and the file ends at the end of the last piece, rounded up to 4 KiB.
 * The target opens the file read-only (a pending log is replayed into
 * memory), reads the first 16 MiB of the disk, and asks for block status
 * over it; make-corpus.sh turns qemu-img's images into seeds.
 *
 * Aborts (a finding) when block status breaks the extent-list rules of
 * image.h; sanitizer reports and leaks are findings too.  With
 * FUZZ_REPORT_OPENS set, each input that opens says so on stderr.
 */
#include <fcntl.h>
#include <stdint.h>
#include <string.h>
#include <unistd.h>

#include "image.h"

#include "fuzz.h"
#include "fuzz-image.h"

#define FUZZ_MAX_INPUT (1024u * 1024u)
#define MAX_FILE (64ull * 1024 * 1024)

const char fuzz_target[] = "fuzz-vhdx";

/* Write the pieces into path; false when the input is too short to hold
 * one. */
static bool make_file(const char *path, const uint8_t *data, size_t size)
{
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    uint64_t end = 0;
    size_t pos = 0;

    if (fd < 0) {
        perror("fuzz-vhdx: open");
        abort();
    }
    while (size - pos >= 6) {
        uint64_t sector = (uint64_t)data[pos] | (uint64_t)data[pos + 1] << 8 |
                          (uint64_t)data[pos + 2] << 16 |
                          (uint64_t)data[pos + 3] << 24;
        uint64_t off = (sector * 512) % MAX_FILE;
        size_t len = (size_t)data[pos + 4] | (size_t)data[pos + 5] << 8;
        pos += 6;
        if (len > size - pos)
            len = size - pos;
        if (len > MAX_FILE - off)
            len = (size_t)(MAX_FILE - off);
        if (len && pwrite(fd, data + pos, len, (off_t)off) != (ssize_t)len) {
            perror("fuzz-vhdx: pwrite");
            abort();
        }
        pos += len;
        if (off + len > end)
            end = off + len;
    }
    end = (end + 4095) & ~4095ull;
    if (ftruncate(fd, (off_t)end) < 0) {
        perror("fuzz-vhdx: ftruncate");
        abort();
    }
    close(fd);
    return end > 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static uint8_t *buf;
    static char path[4200];
    struct image *img;

    if (size > FUZZ_MAX_INPUT)
        return 0;
    if (!path[0])
        snprintf(path, sizeof path, "%s/img.vhdx", fuzz_dir());
    if (!buf && !(buf = malloc(FUZZ_CHUNK)))
        abort();
    fuzz_start_clock();
    if (!make_file(path, data, size))
        return 0;

    struct img_open_args args = {
        .path = path, .format = "vhdx", .read_only = true,
    };
    if (img_open(&args, &img) < 0)
        return 0;
    if (getenv("FUZZ_REPORT_OPENS"))
        fprintf(stderr, "fuzz-vhdx: opened a disk of %llu bytes\n",
                (unsigned long long)img->size);
    fuzz_read_all(img, buf, FUZZ_READ_LIMIT);
    fuzz_status_all(img);
    img_close(img);
    return 0;
}
