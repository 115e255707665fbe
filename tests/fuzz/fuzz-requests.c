/* fuzz-requests: the input is a flags byte and then the transmission
 * phase a client sends (request headers, write payloads), decoded and
 * validated by protocol/ as the server does and run against a fresh
 * 4 MiB image: raw, or qcow2 with 64 KiB, 512-byte or 16 KiB extended-L2
 * clusters.  Flags: bit 0 extended headers, bits 1-2 the image.
 *
 * Every validated request runs on the driver, and its reply is encoded
 * as the server would (simple, structured or extended).  A shadow copy
 * of the disk follows writes and zeroes; trimmed bytes become unknown
 * until written again (a trim may or may not deallocate).
 *
 * Aborts (a finding) when: a read differs from the shadow; a validated
 * request in range fails with EINVAL; block status breaks image.h's
 * rules or calls known nonzero bytes zero; an encoder writes past its
 * size (ASan); after the requests, a flush and a close, the qcow2 check
 * finds errors in the image.
 */
#include <errno.h>
#include <stdbool.h>
#include <stdint.h>
#include <string.h>
#include <unistd.h>

#include "image.h"
#include "protocol.h"
#include "qcow2/check.h"
#include "qcow2/create.h"
#include "qcow2/qcow2.h"

#include "fuzz.h"
#include "fuzz-image.h"

#define FUZZ_MAX_INPUT (1024u * 1024u)
#define DISK (4u * 1024 * 1024)
#define MAX_PAYLOAD (1024u * 1024)
#define MAX_REQUESTS 64
#define MAX_EXTENTS 64

const char fuzz_target[] = "fuzz-requests";

static uint8_t shadow[DISK];
static uint8_t known[DISK];             /* 1: shadow holds the byte */
static uint8_t buf[MAX_PAYLOAD];
static uint8_t reply[64 + MAX_EXTENTS * PROTO_BS_EXT_DESC_LEN];

static const struct qcow2_create_opts geometries[3] = {
    { .size = DISK },
    { .size = DISK, .cluster_size = 512 },
    { .size = DISK, .cluster_size = 16384, .extended_l2 = true },
};

static struct image *open_image(const char *path, unsigned kind)
{
    struct image *img;

    if (kind == 0) {
        fuzz_write_file(path, NULL, 0);
        if (truncate(path, DISK) < 0)
            abort();
    } else if (qcow2_create(path, &geometries[kind - 1]) < 0) {
        FAIL("cannot create the qcow2 image");
    }
    struct img_open_args args = {
        .path = path, .format = kind ? "qcow2" : "raw",
    };
    if (img_open(&args, &img) < 0)
        FAIL("cannot open the image");
    return img;
}

static void compare(uint64_t off, uint64_t len)
{
    for (uint64_t i = 0; i < len; i++)
        if (known[off + i] && buf[i] != shadow[off + i])
            FAIL("read at %llu: byte %llu is %u, wrote %u",
                 (unsigned long long)off, (unsigned long long)i, buf[i],
                 shadow[off + i]);
}

static void block_status(struct image *img, const struct proto_request *r,
                         bool ext)
{
    struct img_extent v[MAX_EXTENTS];
    struct img_extents e = { .v = v, .cap = MAX_EXTENTS, .end = r->offset };
    bool one = r->flags & PROTO_CMD_FLAG_REQ_ONE;

    if (one)
        e.cap = 1;
    int err = img->ops->block_status(img, r->length, r->offset, &e);
    if (err == -EINVAL)
        FAIL("block status at %llu: EINVAL", (unsigned long long)r->offset);
    if (err)
        return;
    uint64_t pos = r->offset;
    size_t n = proto_encode_chunk(reply, ext, PROTO_REPLY_FLAG_DONE,
                                  PROTO_REPLY_TYPE_BLOCK_STATUS, r->cookie,
                                  0, 0);
    n += proto_encode_bs_header(reply + n, ext, 1, (uint32_t)e.n);
    if (e.n == 0)
        FAIL("block status at %llu: no extent", (unsigned long long)pos);
    for (size_t i = 0; i < e.n; i++) {
        if (v[i].length == 0 || v[i].length > r->offset + r->length - pos)
            FAIL("block status at %llu: extent %zu of %llu bytes",
                 (unsigned long long)r->offset, i,
                 (unsigned long long)v[i].length);
        if (v[i].flags & IMG_EXT_ZERO)
            for (uint64_t k = pos; k < pos + v[i].length; k++)
                if (known[k] && shadow[k])
                    FAIL("block status calls %llu zero; it holds %u",
                         (unsigned long long)k, shadow[k]);
        n += proto_encode_bs_desc(reply + n, ext, v[i].length, v[i].flags);
        pos += v[i].length;
    }
    if (e.end != pos)
        FAIL("block status: end %llu, extents end at %llu",
             (unsigned long long)e.end, (unsigned long long)pos);
}

/* Run one validated request; false for DISC. */
static bool run(struct image *img, const struct proto_request *r,
                const uint8_t *payload, bool ext)
{
    unsigned f = r->flags & PROTO_CMD_FLAG_FUA ? IMG_FUA : 0;
    int err = 0;

    switch (r->type) {
    case PROTO_CMD_READ:
        err = img->ops->read(img, buf, r->length, r->offset);
        if (!err) {
            compare(r->offset, r->length);
            proto_encode_chunk(reply, ext, PROTO_REPLY_FLAG_DONE,
                               PROTO_REPLY_TYPE_OFFSET_DATA, r->cookie,
                               r->offset, r->length + 8);
        }
        break;
    case PROTO_CMD_WRITE:
        err = img->ops->write(img, payload, r->length, r->offset, f);
        if (!err) {
            memcpy(shadow + r->offset, payload, r->length);
            memset(known + r->offset, 1, r->length);
        }
        break;
    case PROTO_CMD_WRITE_ZEROES:
        if (!(r->flags & PROTO_CMD_FLAG_NO_HOLE))
            f |= IMG_MAY_TRIM;
        if (r->flags & PROTO_CMD_FLAG_FAST_ZERO)
            f |= IMG_FAST_ZERO;
        err = img->ops->write_zeroes(img, r->length, r->offset, f);
        if (err == -ENOTSUP && (f & IMG_FAST_ZERO))
            err = 0;
        else if (!err) {
            memset(shadow + r->offset, 0, r->length);
            memset(known + r->offset, 1, r->length);
        }
        break;
    case PROTO_CMD_TRIM:
        err = img->ops->trim(img, r->length, r->offset, f);
        memset(known + r->offset, 0, r->length);
        break;
    case PROTO_CMD_FLUSH:
        err = img->ops->flush(img);
        break;
    case PROTO_CMD_CACHE:
        if (img->ops->cache)
            err = img->ops->cache(img, r->length, r->offset);
        break;
    case PROTO_CMD_BLOCK_STATUS:
        block_status(img, r, ext);
        break;
    case PROTO_CMD_DISC:
        return false;
    default:
        break;
    }
    if (err == -EINVAL)
        FAIL("%s of %llu bytes at %llu: EINVAL after validation",
             proto_cmd_name(r->type), (unsigned long long)r->length,
             (unsigned long long)r->offset);
    if (err) {
        static const char msg[] = "request failed";
        size_t n = proto_encode_chunk(reply, ext, PROTO_REPLY_FLAG_DONE,
                                      PROTO_REPLY_TYPE_ERROR, r->cookie,
                                      r->offset, 0);
        proto_encode_error(reply + n, proto_errno_to_wire(-err), msg,
                           sizeof msg - 1, false, 0);
    }
    return true;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static char path[4200];

    if (size < 1 || size > FUZZ_MAX_INPUT)
        return 0;
    if (!path[0])
        snprintf(path, sizeof path, "%s/img", fuzz_dir());
    fuzz_start_clock();
    bool ext = data[0] & 1;
    unsigned kind = (data[0] >> 1) & 3;
    struct image *img = open_image(path, kind);
    memset(shadow, 0, sizeof shadow);
    memset(known, 1, sizeof known);

    struct proto_limits lim = {
        .export_size = img->size,
        .max_payload = MAX_PAYLOAD,
        .min_block = 1,
        .tflags = PROTO_TFLAG_HAS_FLAGS | PROTO_TFLAG_SEND_FLUSH |
                  PROTO_TFLAG_SEND_FUA | PROTO_TFLAG_SEND_TRIM |
                  PROTO_TFLAG_SEND_WRITE_ZEROES | PROTO_TFLAG_SEND_DF |
                  PROTO_TFLAG_SEND_CACHE | PROTO_TFLAG_SEND_FAST_ZERO,
        .structured = true,
        .extended = ext,
        .has_meta = true,
    };
    size_t pos = 1;
    for (unsigned i = 0; i < MAX_REQUESTS && !fuzz_out_of_time(); i++) {
        struct proto_request r;
        int n = proto_decode_request(data + pos, size - pos, ext, &r);
        if (n <= 0)
            break;
        pos += (size_t)n;
        uint64_t plen = proto_request_payload(&r, ext);
        if (plen > size - pos)
            break;
        const uint8_t *payload = data + pos;
        pos += plen;
        if (proto_validate_request(&r, &lim) != 0)
            continue;
        if (!run(img, &r, payload, ext))
            break;
    }
    if (img->ops->flush(img) < 0)
        FAIL("final flush failed");
    img_close(img);
    if (kind == 0)
        return 0;

    struct qcow2_state *s;
    struct qcow2_check_result res;
    if (qcow2_check_open(path, false, &s) < 0)
        FAIL("cannot reopen the image to check it");
    int err = qcow2_check(s, 0, &res);
    qcow2_check_close(s);
    if (err || res.corruptions || res.leaks || res.check_errors)
        FAIL("check after the requests: %llu corruptions, %llu leaks, "
             "%llu check errors (%d)", (unsigned long long)res.corruptions,
             (unsigned long long)res.leaks,
             (unsigned long long)res.check_errors, err);
    return 0;
}
