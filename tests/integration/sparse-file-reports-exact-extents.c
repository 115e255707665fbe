/* Claim: on a sparse raw file, BLOCK_STATUS reports exactly the holes
 * and the data the test made (base:allocation, with and without REQ_ONE,
 * from aligned and unaligned starting points), qemu:allocation-depth
 * calls the whole raw file local (depth 1, as qemu-nbd does), and a
 * structured READ sends the holes as OFFSET_HOLE chunks, except with DF,
 * where the whole range comes back as one data chunk.  Checked over a
 * Unix socket and over TCP.
 */
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "harness.h"

#define SIZE (8 * MiB)
#define DATA 0u
#define HOLE (LIBNBD_STATE_HOLE | LIBNBD_STATE_ZERO)

struct extent {
    uint64_t off, len;
    uint32_t flags;
};

/* The layout made on the host: everything else is a hole. */
static const struct extent layout[] = {
    { 0, 64 * KiB, DATA },
    { 1 * MiB, 128 * KiB, DATA },
    { 3 * MiB, 64 * KiB, DATA },
    { 3 * MiB + 192 * KiB, 256 * KiB, DATA },
    { SIZE - 64 * KiB, 64 * KiB, DATA },
};
#define NR_LAYOUT (sizeof layout / sizeof layout[0])

static char image[256];
static unsigned char *contents;

struct extents {
    struct extent v[256];
    size_t n;
};

/* Append, merging with the previous extent when the flags match. */
static void push(struct extents *e, uint64_t off, uint64_t len,
                 uint32_t flags)
{
    if (e->n > 0 && e->v[e->n - 1].flags == flags &&
        e->v[e->n - 1].off + e->v[e->n - 1].len == off) {
        e->v[e->n - 1].len += len;
        return;
    }
    DS_CHECK(e->n < 256, "too many extents");
    e->v[e->n++] = (struct extent){ off, len, flags };
}

/* The expected base:allocation extents of [off, off+len). */
static void expected(struct extents *e, uint64_t off, uint64_t len)
{
    uint64_t end = off + len, pos = off;

    e->n = 0;
    for (size_t i = 0; i < NR_LAYOUT && pos < end; i++) {
        uint64_t d0 = layout[i].off, d1 = layout[i].off + layout[i].len;
        if (d1 <= pos)
            continue;
        if (d0 > pos) {
            uint64_t h1 = d0 < end ? d0 : end;
            push(e, pos, h1 - pos, HOLE);
            pos = h1;
        }
        if (pos < end && d0 <= pos) {
            uint64_t x1 = d1 < end ? d1 : end;
            push(e, pos, x1 - pos, DATA);
            pos = x1;
        }
    }
    if (pos < end)
        push(e, pos, end - pos, HOLE);
}

static void print_extents(const char *what, const struct extents *e)
{
    fprintf(stderr, "%s:\n", what);
    for (size_t i = 0; i < e->n; i++)
        fprintf(stderr, "  %10" PRIu64 " %10" PRIu64 " %u\n", e->v[i].off,
                e->v[i].len, e->v[i].flags);
}

static void compare(const struct extents *got, const struct extents *want,
                    const char *what)
{
    bool same = got->n == want->n;

    for (size_t i = 0; same && i < got->n; i++)
        same = got->v[i].off == want->v[i].off &&
               got->v[i].len == want->v[i].len &&
               got->v[i].flags == want->v[i].flags;
    if (!same) {
        print_extents("expected", want);
        print_extents("server said", got);
        ds_fail(__FILE__, __LINE__, "%s: extents differ", what);
    }
}

/* One BLOCK_STATUS reply, for one context. */
struct reply {
    const char *context;
    uint64_t offset;
    uint32_t entries[2 * 64];
    size_t n;                   /* entries (pairs * 2) */
    unsigned calls;
};

static int save_reply(void *opaque, const char *context, uint64_t offset,
                      uint32_t *entries, size_t n, int *error)
{
    struct reply *r = opaque;

    if (strcmp(context, r->context) != 0)
        return 0;
    r->calls++;
    r->offset = offset;
    r->n = n < 2 * 64 ? n : 2 * 64;
    memcpy(r->entries, entries, r->n * sizeof entries[0]);
    return 0;
}

/* Walk [off, off+len) with as many BLOCK_STATUS requests as it takes and
 * gather the merged extents of one context.  The last extent of a reply
 * may run past the request; it is cut at the end of the range. */
static void walk(struct nbd_handle *h, const char *context, uint64_t off,
                 uint64_t len, uint32_t flags, struct extents *out)
{
    uint64_t pos = off, end = off + len;

    out->n = 0;
    while (pos < end) {
        struct reply r = { .context = context };
        DS_NBD(nbd_block_status(h, end - pos, pos,
                                (nbd_extent_callback){
                                    .callback = save_reply,
                                    .user_data = &r },
                                flags));
        DS_CHECK(r.calls == 1, "%s at %" PRIu64 ": %u chunks", context, pos,
                 r.calls);
        DS_CHECK(r.offset == pos, "%s reply for offset %" PRIu64
                 " at %" PRIu64, context, r.offset, pos);
        DS_CHECK(r.n >= 2 && r.n % 2 == 0, "%s: %zu entries", context, r.n);
        if (flags & LIBNBD_CMD_FLAG_REQ_ONE) {
            DS_CHECK(r.n == 2, "REQ_ONE answered with %zu extents",
                     r.n / 2);
            DS_CHECK(r.entries[0] <= end - pos,
                     "REQ_ONE extent of %u bytes exceeds the request of %"
                     PRIu64, r.entries[0], end - pos);
        }
        for (size_t i = 0; i < r.n && pos < end; i += 2) {
            uint64_t l = r.entries[i];
            DS_CHECK(l > 0, "%s: zero-length extent at %" PRIu64, context,
                     pos);
            if (l > end - pos)
                l = end - pos;
            push(out, pos, l, r.entries[i + 1]);
            pos += l;
        }
    }
}

static void check_base_allocation(struct nbd_handle *h, const char *tname)
{
    static const struct { uint64_t off, len; } ranges[] = {
        { 0, SIZE },
        { 32 * KiB, 1 * MiB + 32 * KiB },      /* data -> hole -> data */
        { 100 * KiB, 200 * KiB },               /* inside one hole */
        { 1 * MiB + 4 * KiB, 8 * KiB },         /* inside one data run */
        { 3 * MiB + 1000, 300 * KiB + 24 },     /* unaligned both ends */
        { SIZE - 100 * KiB, 100 * KiB },        /* up to the end */
        { SIZE - 1, 1 },                        /* the last byte */
    };
    char what[128];

    for (size_t i = 0; i < sizeof ranges / sizeof ranges[0]; i++) {
        struct extents want, got;
        expected(&want, ranges[i].off, ranges[i].len);
        for (int one = 0; one < 2; one++) {
            snprintf(what, sizeof what, "%s: base:allocation [%" PRIu64
                     ", +%" PRIu64 ")%s", tname, ranges[i].off,
                     ranges[i].len, one ? " REQ_ONE" : "");
            walk(h, "base:allocation", ranges[i].off, ranges[i].len,
                 one ? LIBNBD_CMD_FLAG_REQ_ONE : 0, &got);
            compare(&got, &want, what);
        }
    }
}

static void check_allocation_depth(struct nbd_handle *h, const char *tname)
{
    struct extents got, want = { .n = 1, .v = { { 0, SIZE, 1 } } };
    char what[128];

    snprintf(what, sizeof what, "%s: qemu:allocation-depth", tname);
    walk(h, "qemu:allocation-depth", 0, SIZE, 0, &got);
    compare(&got, &want, what);
}

struct chunks {
    struct extents holes;
    uint64_t data_bytes;
    unsigned data_chunks;
    bool bad;
    char why[128];
};

static int check_chunk(void *opaque, const void *sub, size_t count,
                       uint64_t offset, unsigned status, int *error)
{
    struct chunks *c = opaque;

    if (status == LIBNBD_READ_HOLE) {
        push(&c->holes, offset, count, HOLE);
    } else if (status == LIBNBD_READ_DATA) {
        c->data_chunks++;
        c->data_bytes += count;
        if (memcmp(sub, contents + offset, count) != 0 && !c->bad) {
            c->bad = true;
            snprintf(c->why, sizeof c->why, "data chunk at %" PRIu64
                     " differs from the file", offset);
        }
    }
    return 0;
}

static void check_sparse_read(struct nbd_handle *h, const char *tname)
{
    const uint64_t off = 32 * KiB, len = 4 * MiB;
    unsigned char *buf = ds_malloc(len);
    struct chunks c = { 0 };
    struct extents want_holes = { 0 }, layout_ext;

    DS_NBD(nbd_pread_structured(h, buf, len, off,
                                (nbd_chunk_callback){
                                    .callback = check_chunk,
                                    .user_data = &c },
                                0));
    DS_CHECK(!c.bad, "%s: %s", tname, c.why);
    DS_CHECK(memcmp(buf, contents + off, len) == 0,
             "%s: sparse read assembled different data", tname);
    /* The hole chunks cover exactly the holes of the range. */
    expected(&layout_ext, off, len);
    for (size_t i = 0; i < layout_ext.n; i++)
        if (layout_ext.v[i].flags == HOLE)
            push(&want_holes, layout_ext.v[i].off, layout_ext.v[i].len,
                 HOLE);
    compare(&c.holes, &want_holes, "structured READ hole chunks");

    memset(&c, 0, sizeof c);
    memset(buf, 0xaa, len);
    DS_NBD(nbd_pread_structured(h, buf, len, off,
                                (nbd_chunk_callback){
                                    .callback = check_chunk,
                                    .user_data = &c },
                                LIBNBD_CMD_FLAG_DF));
    DS_CHECK(!c.bad, "%s: DF: %s", tname, c.why);
    DS_CHECK(c.holes.n == 0 && c.data_chunks == 1 && c.data_bytes == len,
             "%s: READ with DF: %zu hole runs, %u data chunks, %" PRIu64
             " data bytes", tname, c.holes.n, c.data_chunks, c.data_bytes);
    DS_CHECK(memcmp(buf, contents + off, len) == 0,
             "%s: DF read returned different data", tname);
    free(buf);
}

/* The filesystem under the test must see the same holes, or the
 * expectations above mean nothing. */
static void check_host_layout(void)
{
    struct extents want, got = { 0 };
    int fd = open(image, O_RDONLY | O_CLOEXEC);
    off_t pos = 0;

    DS_CHECK(fd >= 0, "open %s: %m", image);
    while (pos < (off_t)SIZE) {
        off_t data = lseek(fd, pos, SEEK_DATA);
        if (data < 0) {
            push(&got, (uint64_t)pos, SIZE - (uint64_t)pos, HOLE);
            break;
        }
        if (data > pos)
            push(&got, (uint64_t)pos, (uint64_t)(data - pos), HOLE);
        off_t hole = lseek(fd, data, SEEK_HOLE);
        DS_CHECK(hole > data, "SEEK_HOLE at %lld", (long long)data);
        push(&got, (uint64_t)data, (uint64_t)(hole - data), DATA);
        pos = hole;
    }
    close(fd);
    expected(&want, 0, SIZE);
    compare(&got, &want, "the host filesystem's own view (SEEK_DATA)");
}

int main(void)
{
    ds_init("sparse-file-reports-exact-extents", 180);
    ds_path(image, sizeof image, "sparse.img");
    ds_create_file(image, SIZE);
    contents = calloc(1, SIZE);
    DS_CHECK(contents != NULL, "calloc");
    for (size_t i = 0; i < NR_LAYOUT; i++) {
        ds_fill(contents + layout[i].off, layout[i].len, i);
        ds_write_file(image, contents + layout[i].off, layout[i].len,
                      layout[i].off);
    }
    check_host_layout();

    for (int t = 0; t < DS_NR_TRANSPORTS; t++) {
        const char *args[] = { "-f", "raw", "-r", image, NULL };
        const char *tname = ds_transport_name((enum ds_transport)t);
        struct ds_server s;
        struct nbd_handle *h;

        ds_server_start(&s, (enum ds_transport)t, args);
        h = ds_handle();
        DS_NBD(nbd_add_meta_context(h, "base:allocation"));
        DS_NBD(nbd_add_meta_context(h, "qemu:allocation-depth"));
        DS_NBD(ds_connect(h, &s));
        DS_CHECK(nbd_can_meta_context(h, "base:allocation") == 1,
                 "base:allocation not negotiated");
        DS_CHECK(nbd_can_meta_context(h, "qemu:allocation-depth") == 1,
                 "qemu:allocation-depth not negotiated");

        printf("%s: base:allocation\n", tname);
        check_base_allocation(h, tname);
        printf("%s: qemu:allocation-depth\n", tname);
        check_allocation_depth(h, tname);
        printf("%s: sparse reads\n", tname);
        check_sparse_read(h, tname);
        nbd_close(h);
        ds_server_stop(&s);
    }
    free(contents);
    printf("PASS\n");
    return 0;
}
