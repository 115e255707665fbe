/* A client connection: input buffering, the state machine's dispatch,
 * backpressure and closing.
 *
 * States move greeting -> client flags -> options -> transmission ->
 * closing (server.h, enum conn_state).  Bytes arrive in a per-connection
 * input buffer and are consumed by the handler for the current state;
 * large write payloads skip the buffer and land straight in the
 * request's own buffer.  When a connection has too many requests in
 * flight, or the process holds too many request buffers, reading stops
 * until replies drain.  A connection is freed only after every request
 * it handed to a worker has come back and its handles are closed.
 *
 * A connection that stops reading requests (NBD_CMD_DISC, the client
 * shutting down its sending side, a request too big to read) answers
 * every request it received whole, then ends gracefully: it shuts down
 * its sending side once the last reply is written and closes when the
 * client has closed too (CONN_LINGERING).  Closing a TCP socket that
 * still holds unread input sends a reset, and the reset throws away the
 * replies the kernel had not sent yet.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "server.h"
#include "tls.h"

#define IBUF_MIN (4u * 1024)        /* idle clients hold this much */
#define IBUF_MAX (256u * 1024)      /* busy clients grow to this */
#define DIRECT_MIN (64u * 1024)
#define CONN_BUFFER_MAX (128u * 1024 * 1024)
#define LINGER_MS 5000u                 /* for the client to close */
#define LINGER_MAX (64u * 1024 * 1024)  /* input dropped meanwhile */

static struct conn *conns;
static unsigned n_conns, n_negotiating;
static struct conn *paused_list;

unsigned conn_count(void)
{
    return n_conns;
}

unsigned conn_negotiating_count(void)
{
    return n_negotiating;
}

struct conn *conn_new(void)
{
    struct conn *c = calloc(1, sizeof *c);
    if (!c)
        return NULL;
    c->ibuf = malloc(IBUF_MIN);
    if (!c->ibuf) {
        free(c);
        return NULL;
    }
    c->ibuf_cap = IBUF_MIN;
    c->id = ++srv.next_conn_id;
    c->negotiating = true;
    c->h_in.tcp.data = c;
    c->h_out.tcp.data = c;
    c->timer.data = c;
    c->next = conns;
    if (conns)
        conns->prev = c;
    conns = c;
    n_conns++;
    n_negotiating++;
    srv.had_client = true;
    return c;
}

static void conn_free(struct conn *c)
{
    if (c->prev)
        c->prev->next = c->next;
    else
        conns = c->next;
    if (c->next)
        c->next->prev = c->prev;
    if (c->negotiating)
        n_negotiating--;
    n_conns--;
    conn_clear_meta(c);
    free(c->opt_data);
    free(c->ibuf);
    tls_free(c);
    srv_debug("client %llu: closed", (unsigned long long)c->id);
    free(c);
    srv_listen_resume();
    srv_conn_gone();
}

void conn_handle_closed(uv_handle_t *h)
{
    struct conn *c = h->data;
    if (--c->open_handles == 0)
        conn_free(c);
}

/* Close the handles once no worker holds a request of ours; pending
 * writes are cancelled by uv_close and release their requests. */
static void conn_maybe_finish(struct conn *c)
{
    if (c->state != CONN_CLOSING || c->in_worker > 0)
        return;
    if (c->open_handles == 0) {
        conn_free(c);
        return;
    }
    if (c->timer_open) {
        c->timer_open = false;
        uv_close((uv_handle_t *)&c->timer, conn_handle_closed);
    }
    if (!uv_is_closing((uv_handle_t *)c->in))
        uv_close((uv_handle_t *)c->in, conn_handle_closed);
    if (c->out != c->in && !uv_is_closing((uv_handle_t *)c->out))
        uv_close((uv_handle_t *)c->out, conn_handle_closed);
    dup_poll_close(&c->out_poll);
}

static void unpause(struct conn *c)
{
    struct conn **pp = &paused_list;
    while (*pp && *pp != c)
        pp = &(*pp)->paused_next;
    if (*pp)
        *pp = c->paused_next;
    c->paused = false;
}

void conn_close(struct conn *c)
{
    if (c->state == CONN_CLOSING)
        return;
    c->state = CONN_CLOSING;
    if (c->paused)
        unpause(c);
    if (c->reading && c->in && !uv_is_closing((uv_handle_t *)c->in))
        uv_read_stop(c->in);
    c->reading = false;
    if (c->negotiating) {
        c->negotiating = false;
        n_negotiating--;
        srv_listen_resume();
    }
    if (c->cur) {
        struct request *r = c->cur;
        c->cur = NULL;
        req_release(r);
    }
    reply_drop_queue(c);
    conn_maybe_finish(c);
}

static void on_timeout(uv_timer_t *t)
{
    struct conn *c = t->data;
    if (c->negotiating) {
        srv_log("client %llu: handshake not finished in %u s, dropping",
                (unsigned long long)c->id, srv.opts.handshake_timeout);
        conn_close(c);
    }
}

/* Make room at the end of the input buffer: what it holds goes back to
 * the front once it has passed half the buffer.  Returns the bytes now in
 * use, where the free space starts. */
static size_t ibuf_make_room(struct conn *c)
{
    if (c->ibuf_len == 0)
        c->ibuf_pos = 0;
    else if (c->ibuf_pos + c->ibuf_len > c->ibuf_cap / 2) {
        memmove(c->ibuf, c->ibuf + c->ibuf_pos, c->ibuf_len);
        c->ibuf_pos = 0;
    }
    return c->ibuf_pos + c->ibuf_len;
}

static void on_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf)
{
    struct conn *c = h->data;
    (void)suggested;

    if (c->tls) {
        tls_alloc(c, buf);
        return;
    }
    if (c->state == CONN_REQ_PAYLOAD && c->ibuf_len == 0) {
        struct request *r = c->cur;
        uint64_t left = r->hdr.length - r->have;
        if (left >= DIRECT_MIN) {
            buf->base = (char *)r->buf + r->have;
            buf->len = left;
            return;
        }
    }
    size_t used = ibuf_make_room(c);
    buf->base = (char *)c->ibuf + used;
    buf->len = c->ibuf_cap - used;
}


/* Stop reading while this connection has too many requests in flight or
 * holds too many buffer bytes, or the process holds too many and this
 * connection some of them.  A connection holding nothing may always send
 * one request, so a client that never reads its replies stalls only
 * itself. */
static bool must_pause(struct conn *c)
{
    return c->inflight >= srv.opts.max_inflight ||
           c->buf_used >= CONN_BUFFER_MAX ||
           (srv.buf_used >= srv.opts.buffer_budget && c->buf_used > 0);
}

static void pause_conn(struct conn *c)
{
    if (c->paused)
        return;
    c->paused = true;
    c->paused_next = paused_list;
    paused_list = c;
    if (c->reading) {
        uv_read_stop(c->in);
        c->reading = false;
    }
}

static void on_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf);

static void start_reading(struct conn *c)
{
    if (c->reading || c->state == CONN_CLOSING || c->paused ||
        srv.shutting_down || c->disc)
        return;
    if (uv_read_start(c->in, on_alloc, on_read) == 0)
        c->reading = true;
}

static int handle_client_flags(struct conn *c)
{
    int n = proto_decode_client_flags(conn_in_data(c), c->ibuf_len,
                                      PROTO_FLAG_FIXED_NEWSTYLE |
                                      PROTO_FLAG_NO_ZEROES,
                                      &c->client_flags);
    if (n == -EAGAIN)
        return 0;
    if (n < 0) {
        srv_log("client %llu: bad client flags, dropping",
                (unsigned long long)c->id);
        return -EPROTO;
    }
    conn_consume(c, (size_t)n);
    c->state = CONN_OPT_HEADER;
    return 1;
}

#define MAX_OPTIONS 64

static int handle_opt_header(struct conn *c)
{
    int n = proto_decode_option(conn_in_data(c), c->ibuf_len, &c->opt);
    if (n == -EAGAIN)
        return 0;
    if (n < 0) {
        srv_log("client %llu: bad option magic, dropping",
                (unsigned long long)c->id);
        return -EPROTO;
    }
    conn_consume(c, (size_t)n);
    if (++c->n_options > MAX_OPTIONS) {
        srv_log("client %llu: more than %u options, dropping",
                (unsigned long long)c->id, MAX_OPTIONS);
        return -EPROTO;
    }
    /* Checked before allocating: no client makes us hold more. */
    if (c->opt.length > PROTO_MAX_OPTION_LEN) {
        srv_log("client %llu: option %s with %u bytes of data, dropping",
                (unsigned long long)c->id, proto_opt_name(c->opt.option),
                c->opt.length);
        return -EPROTO;
    }
    free(c->opt_data);
    c->opt_data = malloc(c->opt.length ? c->opt.length : 1);
    if (!c->opt_data)
        return -ENOMEM;
    c->opt_have = 0;
    c->state = CONN_OPT_DATA;
    return 1;
}

static int handle_opt_data(struct conn *c)
{
    uint32_t want = c->opt.length - c->opt_have;
    size_t n = c->ibuf_len < want ? c->ibuf_len : want;

    memcpy(c->opt_data + c->opt_have, conn_in_data(c), n);
    conn_consume(c, n);
    c->opt_have += (uint32_t)n;
    if (c->opt_have < c->opt.length)
        return 0;
    c->state = CONN_OPT_HEADER;
    int err = hs_handle_option(c);
    free(c->opt_data);
    c->opt_data = NULL;
    if (err)
        return err;
    if (c->state == CONN_OPT_WAIT) {
        if (c->reading) {
            uv_read_stop(c->in);
            c->reading = false;
        }
        return 0;
    }
    if (c->state == CONN_REQ_HEADER && c->negotiating) {
        c->negotiating = false;
        n_negotiating--;
        if (c->timer_open)
            uv_timer_stop(&c->timer);
        srv_listen_resume();
    }
    return c->state == CONN_CLOSING ? 0 : 1;
}

static int handle_payload(struct conn *c)
{
    struct request *r = c->cur;
    uint64_t want = r->hdr.length - r->have;
    size_t n = c->ibuf_len < want ? c->ibuf_len : (size_t)want;

    memcpy(r->buf + r->have, conn_in_data(c), n);
    conn_consume(c, n);
    r->have += n;
    if (r->have < r->hdr.length)
        return 0;
    c->cur = NULL;
    c->state = CONN_REQ_HEADER;
    req_dispatch(c, r);
    return 1;
}

static int handle_discard(struct conn *c)
{
    size_t n = c->ibuf_len < c->discard_left ? c->ibuf_len
                                             : (size_t)c->discard_left;
    conn_consume(c, n);
    c->discard_left -= n;
    if (c->discard_left > 0)
        return 0;
    c->state = CONN_REQ_HEADER;
    struct request *r = c->cur;
    c->cur = NULL;
    if (r)
        req_reply(r);   /* the refusal, now that the payload is gone */
    return 1;
}

static void half_closed(struct conn *c);
static bool is_transmitting(const struct conn *c);

/* After STARTTLS: decrypt what TLS holds into the input buffer.  True
 * when bytes were added; false when none are available or the
 * connection ended. */
static bool tls_more_input(struct conn *c)
{
    if (!c->tls || c->state == CONN_TLS_HANDSHAKE ||
        c->state == CONN_OPT_WAIT || c->state == CONN_CLOSING || c->disc)
        return false;
    if (c->state == CONN_REQ_PAYLOAD && c->ibuf_len == 0) {
        /* A write payload: decrypted straight into the request. */
        struct request *r = c->cur;
        ssize_t n = tls_recv(c, r->buf + r->have,
                             (size_t)(r->hdr.length - r->have));
        if (n > 0) {
            r->have += (uint64_t)n;
            if (r->have == r->hdr.length) {
                c->cur = NULL;
                c->state = CONN_REQ_HEADER;
                req_dispatch(c, r);
            }
            return true;
        }
        if (n == 0)
            return false;
        if (n == -EPIPE)
            half_closed(c);
        else
            conn_close(c);
        return false;
    }
    size_t used = ibuf_make_room(c);
    if (used == c->ibuf_cap)
        return false;
    ssize_t n = tls_recv(c, c->ibuf + used, c->ibuf_cap - used);
    if (n > 0) {
        c->ibuf_len += (size_t)n;
        if (c->ibuf_cap < IBUF_MAX && (size_t)n == c->ibuf_cap - used) {
            uint8_t *b = realloc(c->ibuf, IBUF_MAX);
            if (b) {
                c->ibuf = b;
                c->ibuf_cap = IBUF_MAX;
            }
        }
        return true;
    }
    if (n == -EPIPE && is_transmitting(c))
        half_closed(c);     /* close_notify: as the end of the stream */
    else if (n < 0)
        conn_close(c);
    return false;
}

/* Run state handlers over the buffered input until one needs more
 * bytes.  Returns false when the connection was closed. */
static bool process_input(struct conn *c)
{
    for (;;) {
        int r;
        if (c->state == CONN_CLOSING) {
            c->ibuf_len = 0;
            return false;
        }
        if (c->disc)
            return true;
        /* An option with no data completes without further input. */
        if (c->ibuf_len == 0 &&
            !(c->state == CONN_OPT_DATA && c->opt_have == c->opt.length) &&
            !tls_more_input(c))
            return true;
        switch (c->state) {
        case CONN_CLIENT_FLAGS:
            r = handle_client_flags(c);
            break;
        case CONN_OPT_HEADER:
            r = handle_opt_header(c);
            break;
        case CONN_OPT_DATA:
            r = handle_opt_data(c);
            break;
        case CONN_REQ_HEADER:
            if (must_pause(c)) {
                pause_conn(c);
                return true;
            }
            r = req_receive_header(c);
            break;
        case CONN_REQ_PAYLOAD:
            r = handle_payload(c);
            break;
        case CONN_REQ_DISCARD:
            r = handle_discard(c);
            break;
        case CONN_OPT_WAIT:
            return true;
        default:
            r = -EPROTO;
            break;
        }
        if (r < 0) {
            conn_close(c);
            return false;
        }
        if (r == 0 && !tls_more_input(c))
            return true;
    }
}

static bool is_transmitting(const struct conn *c)
{
    return c->state == CONN_REQ_HEADER || c->state == CONN_REQ_PAYLOAD ||
           c->state == CONN_REQ_DISCARD;
}

/* The client shut down its sending side: answer what it sent whole, as
 * for NBD_CMD_DISC, and drop a request it cut short. */
static void half_closed(struct conn *c)
{
    struct request *r = c->cur;

    srv_debug("client %llu: end of requests", (unsigned long long)c->id);
    if (c->state != CONN_REQ_HEADER || c->ibuf_len > 0)
        srv_log("client %llu: disconnected in the middle of a request",
                (unsigned long long)c->id);
    if (c->reading) {
        uv_read_stop(c->in);
        c->reading = false;
    }
    c->eof = true;
    c->disc = true;
    c->state = CONN_REQ_HEADER;
    c->ibuf_len = 0;
    c->cur = NULL;
    if (r)
        req_release(r);     /* may end the connection already */
    if (c->inflight == 0)
        conn_end_output(c);
}

static void on_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf)
{
    struct conn *c = s->data;

    if (c->state == CONN_LINGERING) {
        /* Dropped unread: we only wait for the client to close. */
        if (nread < 0 || (uint64_t)nread >= c->linger_left)
            conn_close(c);
        else
            c->linger_left -= (uint64_t)nread;
        return;
    }
    if (nread < 0) {
        if (nread != UV_EOF && nread != UV_ECONNRESET)
            srv_debug("client %llu: read: %s", (unsigned long long)c->id,
                      uv_strerror((int)nread));
        if (nread == UV_EOF && is_transmitting(c)) {
            half_closed(c);
            return;
        }
        if (c->state == CONN_REQ_PAYLOAD || c->state == CONN_REQ_DISCARD)
            srv_log("client %llu: disconnected in the middle of a request",
                    (unsigned long long)c->id);
        conn_close(c);
        return;
    }
    if (nread == 0)
        return;
    if (c->state == CONN_CLOSING)
        return;
    if (c->tls) {
        if (tls_received(c, (size_t)nread) < 0)
            conn_close(c);
        else
            process_input(c);
        return;
    }
    if (c->state == CONN_REQ_PAYLOAD && c->cur &&
        (uint8_t *)buf->base >= c->cur->buf &&
        (uint8_t *)buf->base < c->cur->buf + c->cur->buf_cap) {
        struct request *r = c->cur;
        r->have += (uint64_t)nread;
        if (r->have == r->hdr.length) {
            c->cur = NULL;
            c->state = CONN_REQ_HEADER;
            req_dispatch(c, r);
        }
        return;
    }
    c->ibuf_len += (size_t)nread;
    if ((size_t)nread == buf->len && c->ibuf_cap < IBUF_MAX) {
        /* The read filled the buffer: a busy client, give it room to
         * send many requests per read. */
        uint8_t *b = realloc(c->ibuf, IBUF_MAX);
        if (b) {
            c->ibuf = b;
            c->ibuf_cap = IBUF_MAX;
        }
    }
    if (process_input(c) && c->state != CONN_CLOSING && !c->paused &&
        !c->disc && c->state != CONN_OPT_WAIT &&
        c->ibuf_len == c->ibuf_cap) {
        /* Cannot happen: every state consumes or pauses. */
        srv_log("client %llu: input buffer stuck", (unsigned long long)c->id);
        conn_close(c);
    }
}

void conn_request_done(struct conn *c)
{
    if (c->state == CONN_CLOSING) {
        conn_maybe_finish(c);
        return;
    }
    if (srv.shutting_down) {
        if (c->inflight == 0 && tls_backlog(c) == 0)
            conn_close(c);
        return;
    }
    if (c->disc) {
        if (c->inflight == 0)
            conn_end_output(c);
        return;
    }
    if (c->paused && !must_pause(c)) {
        unpause(c);
        if (process_input(c) && !c->paused)
            start_reading(c);
    }
}

void conn_option_done(struct conn *c)
{
    c->in_worker--;
    if (c->state == CONN_CLOSING) {
        conn_maybe_finish(c);
        return;
    }
    if (c->state == CONN_OPT_WAIT)
        c->state = CONN_OPT_HEADER;
    if (process_input(c) && c->state != CONN_OPT_WAIT)
        start_reading(c);
}

void conn_clear_meta(struct conn *c)
{
    for (size_t i = 0; i < c->n_meta_bitmaps; i++)
        free(c->meta_bitmaps[i]);
    free(c->meta_bitmaps);
    c->meta_bitmaps = NULL;
    c->n_meta_bitmaps = 0;
    c->meta_base = c->meta_depth = false;
    c->meta_export = NULL;
}

static void on_linger_timeout(uv_timer_t *t)
{
    struct conn *c = t->data;
    srv_debug("client %llu: still open %u ms after its replies, closing",
              (unsigned long long)c->id, LINGER_MS);
    conn_close(c);
}

static void on_shutdown(uv_shutdown_t *req, int status)
{
    struct conn *c = req->data;

    if (c->state == CONN_CLOSING)
        return;     /* cancelled by conn_close */
    if (status < 0 || c->eof || !c->timer_open) {
        conn_close(c);
        return;
    }
    /* Read until the client closes, so that our close sends no reset;
     * bounded by LINGER_MS and LINGER_MAX. */
    c->state = CONN_LINGERING;
    c->linger_left = LINGER_MAX;
    c->ibuf_len = 0;
    uv_timer_start(&c->timer, on_linger_timeout, LINGER_MS, 0);
    if (uv_read_start(c->in, on_alloc, on_read) != 0) {
        conn_close(c);
        return;
    }
    c->reading = true;
}

void conn_end_output(struct conn *c)
{
    if (c->state == CONN_CLOSING || c->shut)
        return;
    c->shut = true;
    c->disc = true;
    if (c->paused)
        unpause(c);
    if (c->reading) {
        uv_read_stop(c->in);
        c->reading = false;
    }
    tls_bye(c);
    c->shut_req.data = c;
    if (uv_shutdown(&c->shut_req, c->out, on_shutdown) != 0)
        conn_close(c);
}

void conn_resume_paused(void)
{
    struct conn **pp = &paused_list;

    while (!srv.shutting_down && *pp) {
        struct conn *c = *pp;
        if (must_pause(c)) {
            pp = &c->paused_next;
            continue;
        }
        *pp = c->paused_next;
        c->paused = false;
        if (process_input(c) && !c->paused)
            start_reading(c);
        /* The list may have changed under us: start over. */
        pp = &paused_list;
    }
}

struct copy_write {
    uv_write_t req;
    struct conn *conn;
    uint8_t data[];
};

static void on_copy_written(uv_write_t *w, int status)
{
    struct copy_write *cw = (struct copy_write *)w;
    struct conn *c = cw->conn;
    free(cw);
    if (status < 0 && status != UV_ECANCELED)
        conn_close(c);
}

int conn_send_copy(struct conn *c, const void *data, size_t len)
{
    if (c->state == CONN_CLOSING)
        return -EPIPE;
    if (tls_is_up(c)) {
        int e = tls_send(c, data, len);
        if (e)
            conn_close(c);
        return e;
    }
    uv_buf_t b = uv_buf_init((char *)data, (unsigned)len);
    int n = uv_try_write(c->out, &b, 1);
    if (n == (int)len)
        return 0;
    if (n < 0 && n != UV_EAGAIN) {
        conn_close(c);
        return n;
    }
    size_t done = n > 0 ? (size_t)n : 0;
    struct copy_write *cw = malloc(sizeof *cw + len - done);
    if (!cw) {
        conn_close(c);
        return -ENOMEM;
    }
    cw->conn = c;
    memcpy(cw->data, (const uint8_t *)data + done, len - done);
    b = uv_buf_init((char *)cw->data, (unsigned)(len - done));
    int err = uv_write(&cw->req, c->out, &b, 1, on_copy_written);
    if (err) {
        free(cw);
        conn_close(c);
        return err;
    }
    return 0;
}

void conn_start(struct conn *c)
{
    srv_debug("client %llu: connected", (unsigned long long)c->id);
    if (uv_timer_init(srv.loop, &c->timer) == 0) {
        c->timer_open = true;
        c->open_handles++;
        uv_timer_start(&c->timer, on_timeout,
                       (uint64_t)srv.opts.handshake_timeout * 1000, 0);
    }
    c->state = CONN_CLIENT_FLAGS;
    hs_send_greeting(c);
    start_reading(c);
}

void conn_shutdown_all(void)
{
    struct conn *c = conns;
    while (c) {
        struct conn *next = c->next;
        if (c->cur) {
            /* A request still arriving was never acknowledged: drop it. */
            struct request *r = c->cur;
            c->cur = NULL;
            req_release(r);
        }
        if (c->negotiating || (c->inflight == 0 && tls_backlog(c) == 0)) {
            conn_close(c);
        } else if (c->reading) {
            /* Finish what is in flight; read nothing new. */
            uv_read_stop(c->in);
            c->reading = false;
        }
        c = next;
    }
}

void conn_close_all(void)
{
    struct conn *c = conns;
    while (c) {
        struct conn *next = c->next;
        conn_close(c);
        c = next;
    }
}
