/* Transmission: receive a request, check it, run it, hand it back.
 *
 * A request header is validated once, here, against the protocol and
 * the export (protocol/ does the rules); drivers see only well-formed
 * in-range operations.  Reads that the driver can map from cached
 * metadata to data already in memory run inline on the loop thread; the
 * hand-off to a worker and back costs more than such a read.  Everything
 * else runs on a worker and its reply is written when it comes back
 * (reply.c), in completion order.
 *
 * Block status of dirty bitmaps alone runs inline too when it cannot
 * wait: the driver's bitmap_status takes its bitmap lock shared, and
 * only bitmap_apply takes it exclusive (formats/image.h, qcow2's
 * bitmap.c); this process calls bitmap_apply only from the control
 * socket and counts those calls in export.applying, so while that count
 * is 0 no thread holds or waits for the lock exclusively.  The scan is
 * bounded by the request length (INLINE_BS_MAX) and the extent cap.
 *
 * Requests and their buffers are pooled: no allocation per request in
 * steady state for requests up to POOL_BUF bytes.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/uio.h>

#include "server.h"

#define POOL_BUF (256u * 1024)
#define POOL_MAX 1024
#define INLINE_MAX (4u * 1024 * 1024)
#define INLINE_BS_MAX (1ull << 32)  /* 8 Mbit at 512 B granularity */
#define WRITE_INLINE_MAX (64u * 1024)
#define TLS_INLINE_MAX (64u * 1024)
#define DISCARD_MAX (2ull * PROTO_MAX_PAYLOAD)

static struct request *free_list;
static unsigned n_free;

/* Make r->buf hold at least n bytes; 0 or -ENOMEM. */
static int req_reserve(struct request *r, size_t n)
{
    if (r->buf_cap >= n)
        return 0;
    size_t cap = n <= POOL_BUF ? POOL_BUF : n;
    uint8_t *b = malloc(cap);
    if (!b)
        return -ENOMEM;
    srv.buf_used -= r->buf_cap;
    r->conn->buf_used -= r->buf_cap;
    free(r->buf);
    r->buf = b;
    r->buf_cap = cap;
    srv.buf_used += cap;
    r->conn->buf_used += cap;
    return 0;
}

struct request *req_alloc(struct conn *c, size_t payload)
{
    struct request *r = free_list;

    if (r) {
        free_list = r->next_free;
        n_free--;
    } else {
        r = calloc(1, sizeof *r);
        if (!r)
            return NULL;
    }
    r->conn = c;
    srv.buf_used += r->buf_cap;
    c->buf_used += r->buf_cap;
    if (payload && req_reserve(r, payload) < 0) {
        srv.buf_used -= r->buf_cap;
        c->buf_used -= r->buf_cap;
        free(r->buf);
        free(r->ext_v);
        free(r->bm_ext);
        free(r);
        return NULL;
    }
    r->have = 0;
    r->err = 0;
    r->wire_err = 0;
    r->niov = 0;
    r->pipe = NULL;
    r->data = NULL;
    r->nmaps = 0;
    r->splice_failed = false;
    r->pinned = false;
    c->inflight++;
    return r;
}

void req_release(struct request *r)
{
    struct conn *c = r->conn;

    if (r->pipe)
        splice_put_pipe(r, false);
    if (r->pinned)
        splice_unpin(r);
    srv.buf_used -= r->buf_cap;
    c->buf_used -= r->buf_cap;
    if (r->buf_cap > POOL_BUF) {
        free(r->buf);
        r->buf = NULL;
        r->buf_cap = 0;
    }
    if (n_free < POOL_MAX) {
        r->next_free = free_list;
        free_list = r;
        n_free++;
    } else {
        free(r->buf);
        free(r->ext_v);
        free(r->bm_ext);
        free(r);
    }
    c->inflight--;
    conn_request_done(c);
    if (srv.buf_used < srv.opts.buffer_budget)
        conn_resume_paused();
}

/* ---- running ------------------------------------------------------ */

static unsigned write_flags(const struct request *r)
{
    unsigned f = 0;
    if (r->hdr.flags & PROTO_CMD_FLAG_FUA)
        f |= IMG_FUA;
    if (r->hdr.type == PROTO_CMD_WRITE_ZEROES) {
        if (!(r->hdr.flags & PROTO_CMD_FLAG_NO_HOLE))
            f |= IMG_MAY_TRIM;
        if (r->hdr.flags & PROTO_CMD_FLAG_FAST_ZERO)
            f |= IMG_FAST_ZERO;
    }
    return f;
}

/* Make room for (1 + bitmaps) lists of SRV_MAX_EXTENTS (or one extent
 * each under REQ_ONE); on a worker thread. */
static int reserve_extents(struct request *r, size_t lists)
{
    size_t want = lists * SRV_MAX_EXTENTS;

    if (r->ext_cap < want) {
        struct img_extent *v = calloc(want, sizeof *v);
        if (!v)
            return -ENOMEM;
        free(r->ext_v);
        r->ext_v = v;
        r->ext_cap = want;
    }
    if (lists > 1 && r->bm_ext_cap < lists - 1) {
        struct img_extents *b = calloc(lists - 1, sizeof *b);
        if (!b)
            return -ENOMEM;
        free(r->bm_ext);
        r->bm_ext = b;
        r->bm_ext_cap = lists - 1;
    }
    return 0;
}

/* Fill one extent list per selected context: ext from block_status for
 * base:allocation and allocation depth, bm_ext[i] from bitmap_status.  A
 * bitmap removed since negotiation fails the request with -ENOENT. */
static int run_block_status(struct request *r, struct image *img)
{
    struct conn *c = r->conn;
    size_t cap = (r->hdr.flags & PROTO_CMD_FLAG_REQ_ONE) ? 1
                                                         : SRV_MAX_EXTENTS;
    size_t nbm = c->n_meta_bitmaps;
    int err = reserve_extents(r, 1 + nbm);
    if (err)
        return err;

    r->ext = (struct img_extents){ .v = r->ext_v, .cap = cap };
    if (c->meta_base || c->meta_depth) {
        err = img->ops->block_status(img, r->hdr.length, r->hdr.offset,
                                     &r->ext);
        if (err)
            return err;
        if (r->ext.n == 0)
            return -EIO;
    }
    for (size_t i = 0; i < nbm; i++) {
        struct img_extents *e = &r->bm_ext[i];
        *e = (struct img_extents){
            .v = r->ext_v + (i + 1) * SRV_MAX_EXTENTS, .cap = cap };
        if (!img->ops->bitmap_status)
            return -ENOENT;
        err = img->ops->bitmap_status(img, c->meta_bitmaps[i], r->hdr.length,
                                      r->hdr.offset, e);
        if (err)
            return err;
        if (e->n == 0)
            return -EIO;
    }
    return 0;
}

/* Run the request's operation; called on a worker thread. */
static void req_run(struct srv_work *w)
{
    struct request *r = (struct request *)w;
    struct image *img = r->conn->exp->img;
    const struct img_ops *ops = img->ops;
    uint64_t len = r->hdr.length, off = r->hdr.offset;

    switch (r->hdr.type) {
    case PROTO_CMD_READ:
        r->err = ops->read(img, r->buf, len, off);
        break;
    case PROTO_CMD_WRITE:
        r->err = ops->write(img, r->buf, len, off, write_flags(r));
        break;
    case PROTO_CMD_FLUSH:
        r->err = ops->flush ? ops->flush(img) : 0;
        break;
    case PROTO_CMD_TRIM:
        r->err = ops->trim(img, len, off, write_flags(r));
        break;
    case PROTO_CMD_WRITE_ZEROES:
        r->err = ops->write_zeroes(img, len, off, write_flags(r));
        break;
    case PROTO_CMD_CACHE:
        r->err = ops->cache(img, len, off);
        break;
    case PROTO_CMD_BLOCK_STATUS:
        r->err = run_block_status(r, img);
        break;
    default:
        r->err = -EINVAL;
        break;
    }
}

static void req_done(struct srv_work *w)
{
    struct request *r = (struct request *)w;
    r->conn->in_worker--;
    req_reply(r);
}

/* Read [off, off + left) into p from the ranges map_nowait gives, m
 * being the first of them, all in memory; false as soon as one would
 * block or needs the driver. */
static bool read_mapped(struct image *img, uint8_t *p, uint64_t left,
                        uint64_t off, struct img_map m)
{
    for (;;) {
        if (m.length == 0 || m.length > left)
            return false;
        if (m.kind == IMG_MAP_ZERO) {
            memset(p, 0, m.length);
        } else if (m.mem) {
            memcpy(p, m.mem, m.length);
        } else {
            ssize_t n;
            if (img->nowait_reads) {
                n = pread(m.fd, p, m.length, (off_t)m.host_offset);
            } else {
                struct iovec iov = { p, m.length };
                n = preadv2(m.fd, &iov, 1, (off_t)m.host_offset,
                            RWF_NOWAIT);
            }
            if (n < 0 || (uint64_t)n != m.length)
                return false;
        }
        p += m.length;
        off += m.length;
        left -= m.length;
        if (left == 0)
            return true;
        m = (struct img_map){ .mem = NULL };
        if (img->ops->map_nowait(img, left, off, &m) < 0)
            return false;
    }
}

/* Serve a read on the loop thread when every byte is mapped by cached
 * metadata and already in memory; false means "use a worker".  Either
 * way the driver hears that the mapped ranges are no longer in use.
 * Data the image has in memory in one piece is sent from there: the
 * socket write is then its only copy. */
static bool read_inline(struct request *r, struct image *img)
{
    if (!img->ops->map_nowait || r->hdr.length > INLINE_MAX)
        return false;
    struct img_map m = { .mem = NULL };
    bool done = img->ops->map_nowait(img, r->hdr.length, r->hdr.offset,
                                     &m) == 0;
    if (done && m.mem && m.kind == IMG_MAP_DATA &&
        m.length == r->hdr.length)
        r->data = m.mem;
    else if (done)
        done = read_mapped(img, r->buf, r->hdr.length, r->hdr.offset, m);
    if (img->ops->map_done)
        img->ops->map_done(img);
    if (done)
        r->err = 0;
    return done;
}

/* Whether r's block status is dirty bitmaps only and can run on the
 * loop thread without waiting (see the top of this file). */
static bool status_is_inline(const struct conn *c, const struct request *r)
{
    return c->n_meta_bitmaps > 0 && !c->meta_base && !c->meta_depth &&
           c->exp->applying == 0 && r->hdr.length <= INLINE_BS_MAX &&
           !c->exp->img->bitmap_status_blocks;
}

void req_dispatch(struct conn *c, struct request *r)
{
    struct image *img = c->exp->img;

    if (srv_verbose >= 2)
        srv_debug("client %llu: %s offset %llu length %llu flags 0x%x",
                  (unsigned long long)c->id, proto_cmd_name(r->hdr.type),
                  (unsigned long long)r->hdr.offset,
                  (unsigned long long)r->hdr.length, r->hdr.flags);
    if (r->hdr.length == 0 && r->hdr.type != PROTO_CMD_FLUSH) {
        req_reply(r);   /* nothing to do */
        return;
    }
    if (r->hdr.type == PROTO_CMD_BLOCK_STATUS &&
        req_reserve(r, (2 + c->n_meta_bitmaps) *
                       (PROTO_BS_EXT_HDR_LEN +
                        SRV_MAX_EXTENTS * PROTO_BS_EXT_DESC_LEN)) < 0) {
        r->err = -ENOMEM;
        req_reply(r);
        return;
    }
    if (r->hdr.type == PROTO_CMD_BLOCK_STATUS && status_is_inline(c, r)) {
        r->err = run_block_status(r, img);
        req_reply(r);
        return;
    }
    if (r->hdr.type == PROTO_CMD_READ && splice_read(r))
        return;
    if (r->hdr.type == PROTO_CMD_READ) {
        if (req_reserve(r, r->hdr.length) < 0) {
            r->err = -ENOMEM;
            req_reply(r);
            return;
        }
        /* Over TLS the loop thread encrypts every reply: a big read
         * copied on a worker meanwhile is a copy the loop does not do. */
        if (!(c->tls && r->hdr.length > TLS_INLINE_MAX) &&
            read_inline(r, img)) {
            req_reply(r);
            return;
        }
    }
    if (r->hdr.type == PROTO_CMD_WRITE && img->nowait_writes &&
        !(r->hdr.flags & PROTO_CMD_FLAG_FUA) && r->hdr.length <= WRITE_INLINE_MAX) {
        /* Memory-backed image: the copy is cheaper than a hand-off. */
        r->err = img->ops->write(img, r->buf, r->hdr.length, r->hdr.offset,
                                 0);
        req_reply(r);
        return;
    }
    if (srv_rbd_direct(c, r))
        return;
    r->work.run = req_run;
    r->work.done = req_done;
    c->in_worker++;
    srv_workers_submit(&r->work);
}

/* Read no more requests from c: close it once every request already
 * received has been answered and its reply written (NBD_CMD_DISC, or a
 * request the connection cannot continue past). */
static void finish_after_replies(struct conn *c)
{
    c->disc = true;
    if (c->reading) {
        uv_read_stop(c->in);
        c->reading = false;
    }
    if (c->inflight == 0)
        conn_end_output(c);
}

/* Answer a request refused before running.  A payload that follows is
 * read and dropped first and the error sent after it: clients may read
 * replies only once their whole request is out.  A payload too big to be
 * worth reading ends the connection after the reply. */
static int refuse(struct conn *c, const struct proto_request *hdr,
                  uint32_t wire_err, uint64_t payload)
{
    struct request *r = req_alloc(c, 0);
    if (!r)
        return -ENOMEM;
    r->hdr = *hdr;
    r->wire_err = wire_err;
    srv_debug("client %llu: %s refused with error %u",
              (unsigned long long)c->id, proto_cmd_name(hdr->type),
              wire_err);
    if (payload > DISCARD_MAX) {
        srv_log("client %llu: %llu-byte payload refused, dropping",
                (unsigned long long)c->id, (unsigned long long)payload);
        req_reply(r);
        finish_after_replies(c);
        return 0;
    }
    if (payload) {
        c->cur = r;
        c->discard_left = payload;
        c->state = CONN_REQ_DISCARD;
        return 1;
    }
    req_reply(r);
    return 1;
}

int req_receive_header(struct conn *c)
{
    struct proto_request hdr;
    int n = proto_decode_request(conn_in_data(c), c->ibuf_len, c->extended,
                                 &hdr);
    if (n == -EAGAIN)
        return 0;
    if (n < 0) {
        srv_log("client %llu: bad request magic, dropping",
                (unsigned long long)c->id);
        return -EPROTO;
    }
    conn_consume(c, (size_t)n);

    if (hdr.type == PROTO_CMD_DISC) {
        srv_debug("client %llu: disconnect requested",
                  (unsigned long long)c->id);
        finish_after_replies(c);
        return 0;
    }

    uint64_t payload = proto_request_payload(&hdr, c->extended);
    struct proto_limits lim = {
        .export_size = c->exp->img->size,
        .max_payload = PROTO_MAX_PAYLOAD,
        .min_block = c->check_align,
        .tflags = c->tflags,
        .structured = c->structured,
        .extended = c->extended,
        .has_meta = c->has_meta,
    };
    uint32_t werr = proto_validate_request(&hdr, &lim);
    if (werr)
        return refuse(c, &hdr, werr, payload);

    struct request *r = req_alloc(c, (size_t)payload);
    if (!r)
        return refuse(c, &hdr, PROTO_ENOMEM, payload);
    r->hdr = hdr;
    if (payload) {
        c->cur = r;
        c->state = CONN_REQ_PAYLOAD;
        return 1;
    }
    req_dispatch(c, r);
    return 1;
}
