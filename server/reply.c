/* Replies: simple, structured or extended, built as an iovec over the
 * request's own header space and data buffer and written with one
 * vectored write.  A write the socket cannot take at once continues
 * through uv_write, and the request is released when it completes.
 *
 * Structured reads are split into OFFSET_DATA and OFFSET_HOLE chunks
 * where whole 4 KiB blocks read as zeros, unless the client set DF.
 */
#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "io.h"
#include "server.h"
#include "tls.h"

#define HOLE_GRAIN 4096u
#define MAX_CHUNKS 64u

static void on_written(uv_write_t *w, int status)
{
    struct request *r = (struct request *)((char *)w -
                                           offsetof(struct request, wreq));
    if (status < 0 && status != UV_ECANCELED)
        conn_close(r->conn);
    req_release(r);
}

/* Replies wait on their connection's output queue until the loop's check
 * phase, after every read and completion of this iteration: one vectored
 * write then carries all of them, and the client reads them in one go. */
static uv_check_t flush_check;
static bool flush_check_ready;
static struct conn *pending_conns;

static size_t iov_bytes(const uv_buf_t *iov, unsigned n)
{
    size_t sum = 0;
    for (unsigned i = 0; i < n; i++)
        sum += iov[i].len;
    return sum;
}

/* Hand r's unwritten bytes (after skip) to libuv; released when done. */
static void write_rest(struct request *r, size_t skip)
{
    struct conn *c = r->conn;
    uv_buf_t *iov = r->iov;
    unsigned n = r->niov;

    if (c->state == CONN_CLOSING) {
        req_release(r);
        return;
    }
    while (n > 0 && skip >= iov->len) {
        skip -= iov->len;
        iov++;
        n--;
    }
    if (n == 0) {
        req_release(r);
        return;
    }
    iov->base += skip;
    iov->len -= skip;
    if (uv_write(&r->wreq, c->out, iov, n, on_written) != 0) {
        conn_close(c);
        req_release(r);
    }
}

static void release_list(struct request *r)
{
    while (r) {
        struct request *next = r->out_next;
        req_release(r);
        r = next;
    }
}

#define FLUSH_IOV 1024

#define TLS_BATCH (256u * 1024)     /* plaintext encrypted in one go */

static void queue_conn(struct conn *c);

/* Over TLS: each batch of replies is encrypted into full records and
 * written at once; the requests are done with as soon as it is.  While
 * much ciphertext still waits for the socket, the rest of the batch
 * waits too (reply_kick resumes it), so that encrypting and sending
 * overlap instead of one long encryption holding up the loop. */
static void flush_tls(struct conn *c, struct request *list)
{
    static uv_buf_t iov[FLUSH_IOV];

    while (list) {
        if (!tls_can_send(c)) {
            struct request *tail = list;
            while (tail->out_next)
                tail = tail->out_next;
            tail->out_next = c->out_head;
            if (!c->out_head)
                c->out_tail = tail;
            c->out_head = list;
            return;
        }
        struct request *end = list;
        unsigned n = 0;
        size_t bytes = 0;
        for (; end && n + end->niov <= FLUSH_IOV && bytes < TLS_BATCH;
             end = end->out_next) {
            memcpy(iov + n, end->iov, end->niov * sizeof *iov);
            n += end->niov;
            bytes += iov_bytes(end->iov, end->niov);
        }
        int err = tls_send_iov(c, iov, n);
        while (list != end) {
            struct request *next = list->out_next;
            req_release(list);
            list = next;
        }
        if (err) {
            conn_close(c);
            release_list(list);
            return;
        }
    }
}

static void flush_conn(struct conn *c)
{
    static uv_buf_t iov[FLUSH_IOV];
    struct request *list = c->out_head;
    unsigned n = 0;

    c->out_head = c->out_tail = NULL;
    if (c->state == CONN_CLOSING) {
        release_list(list);
        return;
    }
    if (c->tls) {
        flush_tls(c, list);
        return;
    }
    if (out_direct_ok(c)) {
        out_direct_send(c, list);
        return;
    }
    for (struct request *r = list; r && n + r->niov <= FLUSH_IOV;
         r = r->out_next) {
        memcpy(iov + n, r->iov, r->niov * sizeof *iov);
        n += r->niov;
    }
    int done = uv_try_write(c->out, iov, n);
    if (done < 0 && done != UV_EAGAIN) {
        conn_close(c);
        release_list(list);
        return;
    }
    size_t left = done > 0 ? (size_t)done : 0;
    while (list) {
        struct request *r = list;
        list = r->out_next;
        size_t size = iov_bytes(r->iov, r->niov);
        if (left >= size) {
            left -= size;
            req_release(r);
        } else {
            write_rest(r, left);
            left = 0;
        }
    }
}

static void on_flush_check(uv_check_t *h)
{
    /* Releasing requests can run more buffered input and queue more
     * replies: repeat until nothing waits. */
    while (pending_conns) {
        struct conn *c = pending_conns;
        pending_conns = c->out_next;
        c->out_queued = false;
        flush_conn(c);
    }
    uv_check_stop(h);
}

void reply_drop_queue(struct conn *c)
{
    if (c->out_queued) {
        struct conn **pp = &pending_conns;
        while (*pp != c)
            pp = &(*pp)->out_next;
        *pp = c->out_next;
        c->out_queued = false;
    }
    struct request *list = c->out_head;
    c->out_head = c->out_tail = NULL;
    release_list(list);
    out_direct_drop(c);
}

void reply_kick(struct conn *c)
{
    if (c->out_head && c->state != CONN_CLOSING)
        queue_conn(c);
}

static void send_iov(struct request *r)
{
    struct conn *c = r->conn;

    r->out_next = NULL;
    if (c->out_tail)
        c->out_tail->out_next = r;
    else
        c->out_head = r;
    c->out_tail = r;
    queue_conn(c);
}

/* Flush c's output queue in this iteration's check phase. */
static void queue_conn(struct conn *c)
{
    if (!c->out_queued) {
        c->out_queued = true;
        c->out_next = pending_conns;
        pending_conns = c;
    }
    if (!flush_check_ready) {
        uv_check_init(srv.loop, &flush_check);
        uv_unref((uv_handle_t *)&flush_check);
        flush_check_ready = true;
    }
    if (!uv_is_active((uv_handle_t *)&flush_check))
        uv_check_start(&flush_check, on_flush_check);
}

static uint8_t *hdr_space(struct request *r, size_t *used, size_t n)
{
    uint8_t *p = r->hdrs + *used;
    *used += n;
    return p;
}

static void add_iov(struct request *r, const void *p, size_t len)
{
    r->iov[r->niov++] = uv_buf_init((char *)p, (unsigned)len);
}

static size_t chunk(struct request *r, uint8_t *buf, uint16_t flags,
                    uint16_t type, uint64_t payload)
{
    return proto_encode_chunk(buf, r->conn->extended, flags, type,
                              r->hdr.cookie, r->hdr.offset, payload);
}

static bool block_is_zero(const uint8_t *p, size_t n)
{
    /* Data blocks almost always fail on the first word. */
    if (n >= 16) {
        uint64_t a, b;
        memcpy(&a, p, 8);
        memcpy(&b, p + n - 8, 8);
        if (a | b)
            return false;
    }
    return p[0] == 0 && memcmp(p, p + 1, n - 1) == 0;
}

/* Where read r's data is: in its buffer or, read in place, in memory
 * the image holds (r->data). */
static const uint8_t *read_data(const struct request *r)
{
    return r->data ? r->data : r->buf;
}

/* An OFFSET_DATA chunk for [start, start + len) of the read, its bytes
 * at read_data(r) + start, or in r's pipes when the reply is spliced. */
static void add_data_chunk(struct request *r, size_t *used, uint64_t start,
                           uint64_t len, bool last)
{
    uint8_t *h = hdr_space(r, used, PROTO_EXT_REPLY_LEN + 8);
    size_t n = chunk(r, h, last ? PROTO_REPLY_FLAG_DONE : 0,
                     PROTO_REPLY_TYPE_OFFSET_DATA,
                     PROTO_OFFSET_DATA_PREFIX + len);
    proto_put64(h + n, r->hdr.offset + start);
    add_iov(r, h, n + 8);
    add_iov(r, r->pipe ? NULL : read_data(r) + start, len);
}

static void add_hole_chunk(struct request *r, size_t *used, uint64_t start,
                           uint64_t len, bool last)
{
    uint8_t *h = hdr_space(r, used, PROTO_EXT_REPLY_LEN +
                                    PROTO_OFFSET_HOLE_LEN);
    size_t n = chunk(r, h, last ? PROTO_REPLY_FLAG_DONE : 0,
                     PROTO_REPLY_TYPE_OFFSET_HOLE, PROTO_OFFSET_HOLE_LEN);
    n += proto_encode_hole(h + n, r->hdr.offset + start, (uint32_t)len);
    add_iov(r, h, n);
}

/* A read whose data waits in a pipe (splice.c): pieces with a NULL base
 * stand for pipe bytes.  Ranges the image maps as zeros are hole chunks
 * (the pipe holds no bytes for them) unless the reply must carry zeros:
 * simple replies and DF. */
static void build_spliced_read(struct request *r)
{
    struct conn *c = r->conn;
    uint64_t len = r->hdr.length;
    size_t used = 0;

    if (!c->structured) {
        add_iov(r, r->hdrs, proto_encode_simple_reply(r->hdrs, r->hdr.cookie,
                                                      0));
        add_iov(r, NULL, len);
        return;
    }
    if (r->hdr.flags & PROTO_CMD_FLAG_DF) {
        add_data_chunk(r, &used, 0, len, true);
        return;
    }
    uint64_t start = 0;
    for (unsigned i = 0; i < r->nmaps; i++) {
        const struct img_map *m = &r->maps[i];
        bool last = i + 1 == r->nmaps;
        if (m->kind == IMG_MAP_ZERO) {
            add_hole_chunk(r, &used, start, m->length, last);
        } else {
            add_data_chunk(r, &used, start, m->length, last);
        }
        start += m->length;
    }
}

/* A structured read reply: data and hole chunks, the last one DONE. */
static void build_read(struct request *r)
{
    uint64_t len = r->hdr.length;
    size_t used = 0;

    /* Data read in place comes from a file without holes (raw on
     * tmpfs): one data chunk, as a hole-aware reader of the file would
     * send, and its cold pages are touched only by the socket's copy. */
    if ((r->hdr.flags & PROTO_CMD_FLAG_DF) || r->data) {
        add_data_chunk(r, &used, 0, len, true);
        return;
    }
    /* Runs of equal "zero-ness" at HOLE_GRAIN granularity. */
    uint64_t run_start = 0;
    bool run_zero = false;
    unsigned chunks = 0;
    for (uint64_t pos = 0; pos < len;) {
        uint64_t n = len - pos < HOLE_GRAIN ? len - pos : HOLE_GRAIN;
        bool z = chunks + 2 < MAX_CHUNKS && block_is_zero(read_data(r) + pos, n);
        if (pos == 0) {
            run_zero = z;
        } else if (z != run_zero) {
            if (run_zero)
                add_hole_chunk(r, &used, run_start, pos - run_start, false);
            else
                add_data_chunk(r, &used, run_start, pos - run_start, false);
            chunks++;
            run_start = pos;
            run_zero = z;
        }
        pos += n;
    }
    if (run_zero)
        add_hole_chunk(r, &used, run_start, len - run_start, true);
    else
        add_data_chunk(r, &used, run_start, len - run_start, true);
}

/* Where a compact answer cut at the request's end stops: a 32-bit
 * request length ends anywhere, and a client continuing from an
 * unaligned offset would make every later descriptor unaligned too. */
static uint64_t answer_alignment(const struct image *img)
{
    return img->min_block > 512 ? img->min_block : 512;
}

/* Descriptors of one context from a driver extent list: runs merged by
 * the bits this context reports, zero lengths dropped.  Compact replies
 * and REQ_ONE stop at the request's end (so every length fits 32 bits
 * in a compact reply); when that end falls inside the export off a
 * block boundary, the answer is the prefix up to the last boundary.
 * Returns the payload length. */
static size_t encode_context(struct request *r, uint8_t *out, uint32_t id,
                             const struct img_extents *e, bool depth)
{
    struct conn *c = r->conn;
    bool ext = c->extended;
    uint64_t limit = UINT64_MAX;
    size_t n = proto_encode_bs_header(out, ext, id, 0);
    uint8_t *count_at = out + 4;
    uint32_t count = 0;
    uint64_t run = 0, total = 0;
    uint32_t val = 0;
    size_t last_at = n;     /* where the last run's descriptor goes */

    if (!ext || (r->hdr.flags & PROTO_CMD_FLAG_REQ_ONE))
        limit = r->hdr.length;
    for (size_t i = 0; i < e->n && total < limit; i++) {
        uint64_t len = e->v[i].length;
        uint32_t v = depth ? e->v[i].depth : e->v[i].flags;
        if (len > limit - total)
            len = limit - total;
        if (len == 0)
            continue;
        total += len;
        if (run && v == val) {
            run += len;
            continue;
        }
        if (run) {
            n += proto_encode_bs_desc(out + n, ext, run, val);
            count++;
        }
        last_at = n;
        run = len;
        val = v;
    }
    uint64_t end = r->hdr.offset + total;
    uint64_t align = answer_alignment(c->exp->img);
    if (total == limit && end != c->exp->img->size && end % align) {
        uint64_t cut = end % align;
        if (run > cut) {
            run -= cut;
        } else if (count > 0) {
            /* The whole last run lies past the boundary: drop it. */
            run = 0;
            n = last_at;
        }
        /* else: one short run from an unaligned request, kept whole */
    }
    if (run) {
        n += proto_encode_bs_desc(out + n, ext, run, val);
        count++;
    }
    if (ext)
        proto_put32(count_at, count);
    return n;
}

/* Append the chunk for one context; *pos is the payload space used. */
static void add_bs_chunk(struct request *r, size_t *used, size_t *pos,
                         uint32_t id, const struct img_extents *e,
                         bool depth, bool last)
{
    bool ext = r->conn->extended;
    size_t plen = encode_context(r, r->buf + *pos, id, e, depth);
    uint8_t *h = hdr_space(r, used, PROTO_EXT_REPLY_LEN);
    size_t hn = chunk(r, h, last ? PROTO_REPLY_FLAG_DONE : 0,
                      ext ? PROTO_REPLY_TYPE_BLOCK_STATUS_EXT
                          : PROTO_REPLY_TYPE_BLOCK_STATUS, plen);
    add_iov(r, h, hn);
    add_iov(r, r->buf + *pos, plen);
    *pos += plen;
}

/* One chunk per selected context: base:allocation, allocation depth,
 * then each dirty bitmap (flag 1: dirty). */
static int build_block_status(struct request *r)
{
    struct conn *c = r->conn;
    bool ext = c->extended;
    size_t hdr = ext ? PROTO_BS_EXT_HDR_LEN : PROTO_BS_HDR_LEN;
    size_t desc = ext ? PROTO_BS_EXT_DESC_LEN : PROTO_BS_DESC_LEN;
    size_t nbm = c->n_meta_bitmaps;
    size_t nctx = (size_t)c->meta_base + (size_t)c->meta_depth + nbm;
    size_t need = 0, used = 0, pos = 0, k = 0;

    if (nctx == 0)
        return -ENOTSUP;
    if (c->meta_base)
        need += hdr + r->ext.n * desc;
    if (c->meta_depth)
        need += hdr + r->ext.n * desc;
    for (size_t i = 0; i < nbm; i++)
        need += hdr + r->bm_ext[i].n * desc;
    if (need > r->buf_cap)
        return -ENOMEM;
    if (c->meta_base)
        add_bs_chunk(r, &used, &pos, SRV_CTX_ID_BASE, &r->ext, false,
                     ++k == nctx);
    if (c->meta_depth)
        add_bs_chunk(r, &used, &pos, SRV_CTX_ID_DEPTH, &r->ext, true,
                     ++k == nctx);
    for (size_t i = 0; i < nbm; i++)
        add_bs_chunk(r, &used, &pos, SRV_CTX_ID_BITMAP0 + (uint32_t)i,
                     &r->bm_ext[i], false, ++k == nctx);
    return 0;
}

static void build_error(struct request *r, uint32_t wire, int err)
{
    struct conn *c = r->conn;
    char msg[128];

    if (!c->structured) {
        add_iov(r, r->hdrs, proto_encode_simple_reply(r->hdrs, r->hdr.cookie,
                                                      wire));
        return;
    }
    if (err == ENOENT && r->hdr.type == PROTO_CMD_BLOCK_STATUS)
        snprintf(msg, sizeof msg, "%s: a selected dirty bitmap no longer "
                 "exists", proto_cmd_name(r->hdr.type));
    else if (err)
        snprintf(msg, sizeof msg, "%s: %s", proto_cmd_name(r->hdr.type),
                 strerror(err));
    else
        snprintf(msg, sizeof msg, "%s: invalid request",
                 proto_cmd_name(r->hdr.type));
    uint16_t mlen = (uint16_t)strlen(msg);
    size_t n = chunk(r, r->hdrs, PROTO_REPLY_FLAG_DONE, PROTO_REPLY_TYPE_ERROR,
                     PROTO_ERROR_PREFIX + mlen);
    n += proto_encode_error(r->hdrs + n, wire, msg, mlen, false, 0);
    add_iov(r, r->hdrs, n);
}

void req_reply(struct request *r)
{
    struct conn *c = r->conn;

    if (c->state == CONN_CLOSING) {
        req_release(r);
        return;
    }
    r->niov = 0;
    uint32_t wire = r->wire_err;
    int err = -r->err;
    if (!wire && err)
        wire = proto_errno_to_wire(err);
    if (!wire && r->hdr.type == PROTO_CMD_BLOCK_STATUS) {
        int e = build_block_status(r);
        if (e) {
            r->niov = 0;
            err = -e;
            wire = proto_errno_to_wire(err);
        }
    }
    if (wire) {
        build_error(r, wire, err);
    } else if (r->hdr.type == PROTO_CMD_READ && r->pipe) {
        build_spliced_read(r);
    } else if (r->hdr.type == PROTO_CMD_READ) {
        if (!c->structured) {
            add_iov(r, r->hdrs, proto_encode_simple_reply(r->hdrs,
                                                          r->hdr.cookie, 0));
            if (r->hdr.length)
                add_iov(r, read_data(r), r->hdr.length);
        } else if (r->hdr.length == 0) {
            add_iov(r, r->hdrs, chunk(r, r->hdrs, PROTO_REPLY_FLAG_DONE,
                                      PROTO_REPLY_TYPE_NONE, 0));
        } else {
            build_read(r);
        }
    } else if (r->hdr.type == PROTO_CMD_BLOCK_STATUS) {
        /* built above */
    } else if (c->extended) {
        add_iov(r, r->hdrs, chunk(r, r->hdrs, PROTO_REPLY_FLAG_DONE,
                                  PROTO_REPLY_TYPE_NONE, 0));
    } else {
        add_iov(r, r->hdrs, proto_encode_simple_reply(r->hdrs, r->hdr.cookie,
                                                      0));
    }
    /* A promise of durability: the crash tests (tests/crash) match this
     * mark in the I/O log to the request by its cookie. */
    if (!wire && (r->hdr.type == PROTO_CMD_FLUSH ||
                  ((r->hdr.flags & PROTO_CMD_FLAG_FUA) &&
                   (r->hdr.type == PROTO_CMD_WRITE ||
                    r->hdr.type == PROTO_CMD_WRITE_ZEROES ||
                    r->hdr.type == PROTO_CMD_TRIM))))
        io_log_mark(r->hdr.cookie, proto_cmd_name(r->hdr.type));
    send_iov(r);
}
