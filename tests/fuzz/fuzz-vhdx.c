/* fuzz-vhdx: the input describes a sparse VHDX file as a list of pieces,
 * so that the fuzzer reaches the headers, region tables, log, metadata
 * and BAT of a file several megabytes long with an input of a few
 * kilobytes.  The input starts with one byte of flags: bit 0 set, the
 * target recomputes the CRC-32C of both headers, both region tables and
 * every log entry it finds after writing the pieces (otherwise nearly
 * every mutation would only meet the checksum tests).  Each piece is
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
#include "vhdx/vhdx.h"

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

static uint32_t get_le32(const uint8_t *p)
{
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 |
           (uint32_t)p[3] << 24;
}

/* Recompute the checksum (at byte 4) of the len-byte structure at off
 * when it starts with sig. */
static void fix_crc(int fd, uint64_t off, size_t len, uint32_t sig,
                    uint8_t *buf)
{
    if (pread(fd, buf, len, (off_t)off) != (ssize_t)len ||
        get_le32(buf) != sig)
        return;
    memset(buf + 4, 0, 4);
    uint32_t crc = vhdx_crc32c(buf, len);
    for (int i = 0; i < 4; i++)
        buf[4 + i] = (uint8_t)(crc >> (8 * i));
    if (pwrite(fd, buf + 4, 4, (off_t)off + 4) != 4)
        abort();
}

/* The log entries (in the region the first header names), then the
 * headers and region tables. */
static void fix_checksums(const char *path)
{
    static uint8_t *buf;
    int fd = open(path, O_RDWR | O_CLOEXEC);
    uint8_t h[80];

    if (fd < 0 || (!buf && !(buf = malloc(1024 * 1024))))
        abort();
    if (pread(fd, h, sizeof h, 64 * 1024) == (ssize_t)sizeof h) {
        uint64_t log_len = get_le32(h + 68);
        uint64_t log_off = get_le32(h + 72) |
                           (uint64_t)get_le32(h + 76) << 32;
        if (log_len > MAX_FILE || log_off > MAX_FILE)
            log_len = 0;
        for (uint64_t pos = 0; pos + 4096 <= log_len; pos += 4096) {
            uint8_t e[12];
            if (pread(fd, e, sizeof e, (off_t)(log_off + pos)) != 12 ||
                get_le32(e) != VHDX_LOG_SIGNATURE)
                continue;
            uint64_t len = get_le32(e + 8);
            if (len >= 4096 && len <= 1024 * 1024 && len % 4096 == 0 &&
                len <= log_len - pos)
                fix_crc(fd, log_off + pos, (size_t)len, VHDX_LOG_SIGNATURE,
                        buf);
        }
    }
    fix_crc(fd, 64 * 1024, 4096, VHDX_HEADER_SIGNATURE, buf);
    fix_crc(fd, 128 * 1024, 4096, VHDX_HEADER_SIGNATURE, buf);
    fix_crc(fd, 192 * 1024, 64 * 1024, VHDX_REGION_SIGNATURE, buf);
    fix_crc(fd, 256 * 1024, 64 * 1024, VHDX_REGION_SIGNATURE, buf);
    close(fd);
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
    if (size < 1 || !make_file(path, data + 1, size - 1))
        return 0;
    if (data[0] & 1)
        fix_checksums(path);

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
