/* The VHDX header section: file type identifier and the two headers.
 *
 * [MS-VHDX] 2.2.2: a header is valid when its signature and CRC-32C
 * check (and, as QEMU also asks, Version is 1); the current header is
 * the only valid one, or the valid one with the higher SequenceNumber.
 * Two valid headers with equal sequence numbers are accepted only when
 * byte-identical (Disk2VHD writes them so): otherwise which one is
 * current is undefined and the file is refused.  The log fields are
 * checked here; a set LogGuid is replayed by log.c.  Headers are never
 * updated through the log, so they are read straight from the file.
 *
 * Updates go the spec's way (2.2.2.1): the header that is not current is
 * written with SequenceNumber + 1 and flushed, which makes it current;
 * done twice, so both copies end up current and equal but for their
 * sequence numbers.  A torn write only ever damages the copy that is not
 * current.
 */
#include <errno.h>
#include <inttypes.h>
#include <string.h>
#include <sys/random.h>

#include "io.h"
#include "vhdx.h"

/* Read one header; 1 when valid (decoded into *h), 0 when not, -errno
 * on an I/O error.  *why says what was wrong. */
static int read_header(struct vhdx_state *s, uint64_t off,
                       struct vhdx_header *h, uint8_t raw[VHDX_HEADER_SIZE],
                       const char **why)
{
    int err = io_pread_full(s->fd, raw, VHDX_HEADER_SIZE, off);
    if (err == -ENODATA) {
        *why = "past end of file";
        return 0;
    }
    if (err)
        return err;
    memcpy(h, raw, sizeof *h);
    if (vhdx_le32(h->signature) != VHDX_HEADER_SIGNATURE) {
        *why = "bad signature";
        return 0;
    }
    if (!vhdx_checksum_ok(raw, VHDX_HEADER_SIZE,
                          offsetof(struct vhdx_header, checksum))) {
        *why = "bad checksum";
        return 0;
    }
    h->signature = vhdx_le32(h->signature);
    h->checksum = vhdx_le32(h->checksum);
    h->sequence_number = vhdx_le64(h->sequence_number);
    h->log_version = vhdx_le16(h->log_version);
    h->version = vhdx_le16(h->version);
    h->log_length = vhdx_le32(h->log_length);
    h->log_offset = vhdx_le64(h->log_offset);
    if (h->version != 1) {
        *why = "Version is not 1";
        return 0;
    }
    return 1;
}

/* Check the current header's log fields against the file. */
static int check_log_fields(struct vhdx_state *s, const struct vhdx_header *h)
{
    const char *path = s->img.path;
    uint64_t end;

    if (h->log_offset % VHDX_MB || h->log_length % VHDX_MB) {
        img_log("vhdx: %s: header %d: LogOffset 0x%" PRIx64 " / LogLength "
                "%" PRIu32 " not a multiple of 1 MB", path,
                s->current_header, h->log_offset, h->log_length);
        return -EINVAL;
    }
    if (h->log_length == 0)
        return 0;
    if (h->log_offset < VHDX_HEADER_SECTION ||
        __builtin_add_overflow(h->log_offset, h->log_length, &end) ||
        end > s->real_size) {
        img_log("vhdx: %s: header %d: log at 0x%" PRIx64 " (%" PRIu32
                " bytes) outside the file (%" PRIu64 " bytes)", path,
                s->current_header, h->log_offset, h->log_length,
                s->file_size);
        return -EINVAL;
    }
    return 0;
}

int vhdx_read_headers(struct vhdx_state *s)
{
    const char *path = s->img.path;
    uint8_t raw1[VHDX_HEADER_SIZE], raw2[VHDX_HEADER_SIZE];
    struct vhdx_header h1, h2;
    const char *why1 = "", *why2 = "";
    uint64_t sig;
    int err;

    err = io_pread_full(s->fd, &sig, sizeof sig, 0);
    if (err && err != -ENODATA)
        goto out_io;
    if (err || vhdx_le64(sig) != VHDX_FILE_SIGNATURE) {
        img_log("vhdx: %s: file type identifier: signature is not "
                "\"vhdxfile\"", path);
        return -EINVAL;
    }
    if (s->file_size < VHDX_HEADER_SECTION) {
        img_log("vhdx: %s: file is %" PRIu64 " bytes, shorter than the "
                "1 MB header section", path, s->file_size);
        return -EINVAL;
    }

    int v1 = read_header(s, VHDX_HEADER1_OFFSET, &h1, raw1, &why1);
    if (v1 < 0) {
        err = v1;
        goto out_io;
    }
    int v2 = read_header(s, VHDX_HEADER2_OFFSET, &h2, raw2, &why2);
    if (v2 < 0) {
        err = v2;
        goto out_io;
    }
    if (!v1 && !v2) {
        img_log("vhdx: %s: no valid header: header 1 (at 64 KB): %s; "
                "header 2 (at 128 KB): %s", path, why1, why2);
        return -EINVAL;
    }
    if (v1 && v2 && h1.sequence_number == h2.sequence_number &&
        memcmp(raw1, raw2, VHDX_HEADER_SIZE) != 0) {
        img_log("vhdx: %s: both headers have SequenceNumber %" PRIu64
                " but differ: no current header", path, h1.sequence_number);
        return -EINVAL;
    }
    if (v1 && (!v2 || h1.sequence_number >= h2.sequence_number)) {
        s->header = h1;
        s->current_header = 1;
    } else {
        s->header = h2;
        s->current_header = 2;
    }
    if (s->header.log_version != 0 &&
        !vhdx_guid_is_zero(&s->header.log_guid)) {
        img_log("vhdx: %s: header %d: LogVersion %u is not 0", path,
                s->current_header, s->header.log_version);
        return -ENOTSUP;
    }
    return check_log_fields(s, &s->header);

out_io:
    img_log("vhdx: %s: reading the header section: %s", path,
            strerror(-err));
    return err;
}

void vhdx_guid_generate(struct vhdx_guid *g)
{
    /* A version 4 GUID: random but for the version and variant bits
     * (Data3's high nibble, Data4[0]'s top bits). */
    size_t got = 0;
    while (got < sizeof g->b) {
        ssize_t n = getrandom(g->b + got, sizeof g->b - got, 0);
        if (n > 0)
            got += (size_t)n;
    }
    g->b[7] = (uint8_t)((g->b[7] & 0x0f) | 0x40);
    g->b[8] = (uint8_t)((g->b[8] & 0x3f) | 0x80);
}

/* Write s->header, with the given sequence number, over the header that
 * is not current, and make it durable: it becomes the current one. */
static int write_other_header(struct vhdx_state *s)
{
    uint8_t raw[VHDX_HEADER_SIZE] = { 0 };
    struct vhdx_header *h = (struct vhdx_header *)raw;
    int other = s->current_header == 1 ? 2 : 1;
    uint64_t off = other == 1 ? VHDX_HEADER1_OFFSET : VHDX_HEADER2_OFFSET;
    int err;

    h->signature = htole32(VHDX_HEADER_SIGNATURE);
    h->sequence_number = htole64(s->header.sequence_number + 1);
    h->file_write_guid = s->header.file_write_guid;
    h->data_write_guid = s->header.data_write_guid;
    h->log_guid = s->header.log_guid;
    h->log_version = htole16(s->header.log_version);
    h->version = htole16(s->header.version);
    h->log_length = htole32(s->header.log_length);
    h->log_offset = htole64(s->header.log_offset);
    h->checksum = htole32(vhdx_crc32c(raw, sizeof raw));
    if ((err = io_pwrite_tag(s->fd, raw, sizeof raw, off, IO_TAG_HEADER)) ||
        (err = io_sync(s->fd, IO_TAG_HEADER))) {
        img_log("vhdx: %s: writing header %d: %s", s->img.path, other,
                strerror(-err));
        return err;
    }
    s->header.sequence_number++;
    s->current_header = other;
    return 0;
}

int vhdx_write_headers(struct vhdx_state *s)
{
    int err = write_other_header(s);
    return err ? err : write_other_header(s);
}
