/* Direct output for plaintext sockets: replies are written with writev
 * and, for spliced reads (splice.c), splice from their pipe, in order,
 * by this file rather than by libuv's write queue, which knows nothing
 * of pipes.
 *
 * A reply is its request's piece list (r->iov): a piece with a base is
 * bytes in memory, a piece with a NULL base is that many bytes of the
 * request's pipe.  Memory pieces of consecutive replies go out in one
 * writev; a pipe piece goes out with one splice into the socket, which
 * moves page references, not bytes.  What the socket cannot take now
 * waits for room: the connection polls a duplicate of its socket
 * descriptor for writability (libuv allows one watcher per descriptor,
 * and its stream watcher already owns the original; epoll tells the two
 * descriptors apart), and the next piece goes out from the poll
 * callback.  Requests are released once their last piece is written.
 *
 * Handshake replies still go through libuv (conn_send_copy); while any
 * of those wait in its queue, direct output waits too, so bytes never
 * overtake each other.
 */
#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <sys/uio.h>
#include <unistd.h>

#include "server.h"

#define OUT_IOV 1024

bool out_direct_ok(const struct conn *c)
{
    return !c->tls && c->out == c->in;
}

static void on_writable(uv_poll_t *p, int status, int events);

bool dup_poll_start(struct conn *c, struct dup_poll *p, int events,
                    uv_poll_cb cb)
{
    if (!p->open) {
        uv_os_fd_t fd;
        if (uv_fileno((uv_handle_t *)c->in, &fd) != 0)
            return false;
        p->fd = fcntl(fd, F_DUPFD_CLOEXEC, 0);
        if (p->fd < 0)
            return false;
        if (uv_poll_init(srv.loop, &p->h, p->fd) != 0) {
            close(p->fd);
            return false;
        }
        p->h.data = c;
        p->open = true;
        c->open_handles++;
    }
    if (!p->active) {
        if (uv_poll_start(&p->h, events, cb) != 0)
            return false;
        p->active = true;
    }
    return true;
}

void dup_poll_stop(struct dup_poll *p)
{
    if (p->active) {
        uv_poll_stop(&p->h);
        p->active = false;
    }
}

static void on_dup_poll_closed(uv_handle_t *h)
{
    struct dup_poll *p = (struct dup_poll *)h;

    close(p->fd);
    p->fd = -1;
    conn_handle_closed(h);
}

void dup_poll_close(struct dup_poll *p)
{
    if (!p->open || uv_is_closing((uv_handle_t *)&p->h))
        return;
    p->active = false;
    uv_close((uv_handle_t *)&p->h, on_dup_poll_closed);
}

/* Come back when the socket has room; false when that cannot be
 * arranged. */
static bool wait_room(struct conn *c)
{
    return dup_poll_start(c, &c->out_poll, UV_WRITABLE, on_writable);
}

/* Pop the head request if every piece of it is written; false when the
 * connection began closing meanwhile (releasing can do that). */
static bool pop_done(struct conn *c)
{
    struct request *r;

    while ((r = c->send_head) != NULL) {
        while (r->out_i < r->niov && r->iov[r->out_i].len == 0)
            r->out_i++;
        if (r->out_i < r->niov)
            return true;
        c->send_head = r->out_next;
        if (!c->send_head)
            c->send_tail = NULL;
        if (r->pipe)
            splice_put_pipe(r, r->err == 0 && r->wire_err == 0);
        req_release(r);
        if (c->state == CONN_CLOSING)
            return false;
    }
    return true;
}

/* n bytes of the queue went out: move past them. */
static bool advance(struct conn *c, size_t n)
{
    struct request *r = c->send_head;

    while (n > 0 && r) {
        if (r->out_i == r->niov) {
            r = r->out_next;
            continue;
        }
        uv_buf_t *b = &r->iov[r->out_i];
        if (n < b->len) {
            if (b->base)
                b->base += n;
            b->len -= n;
            break;
        }
        n -= b->len;
        b->len = 0;
        r->out_i++;
    }
    return pop_done(c);
}

/* Write what the socket takes now; wait for room for the rest. */
static void run(struct conn *c)
{
    static struct iovec iov[OUT_IOV];
    uv_os_fd_t fd;

    if (uv_fileno((uv_handle_t *)c->out, &fd) != 0) {
        conn_close(c);
        return;
    }
    if (!pop_done(c))
        return;
    while (c->send_head) {
        if (uv_stream_get_write_queue_size(c->out) > 0) {
            if (!wait_room(c))
                conn_close(c);
            return;
        }
        /* Memory pieces up to the first pipe piece. */
        unsigned n = 0;
        size_t want = 0;
        struct request *r = c->send_head;
        unsigned i = r->out_i;
        while (r && n < OUT_IOV) {
            if (i == r->niov) {
                r = r->out_next;
                i = 0;
                continue;
            }
            uv_buf_t *b = &r->iov[i];
            if (!b->base && b->len)
                break;
            if (b->len) {
                iov[n++] = (struct iovec){ b->base, b->len };
                want += b->len;
            }
            i++;
        }
        ssize_t done;
        if (n > 0) {
            done = writev(fd, iov, (int)n);
        } else {
            r = c->send_head;
            want = splice_take(r, r->iov[r->out_i].len);
            done = want == 0 ? 0
                             : splice(splice_pipe_rd(r->pipe), NULL, fd,
                                      NULL, want,
                                      SPLICE_F_MOVE | SPLICE_F_NONBLOCK);
            if (done == 0) {
                srv_log("client %llu: read reply pipe ran dry",
                        (unsigned long long)c->id);
                conn_close(c);
                return;
            }
            if (done > 0)
                splice_took(r, (size_t)done);
        }
        if (done < 0) {
            if (errno == EINTR)
                continue;
            if (errno == EAGAIN) {
                if (!wait_room(c))
                    conn_close(c);
                return;
            }
            srv_debug("client %llu: write: %s", (unsigned long long)c->id,
                      strerror(errno));
            conn_close(c);
            return;
        }
        if (!advance(c, (size_t)done))
            return;
        if ((size_t)done < want) {
            if (!wait_room(c))
                conn_close(c);
            return;
        }
    }
    dup_poll_stop(&c->out_poll);
}

static void on_writable(uv_poll_t *p, int status, int events)
{
    struct conn *c = p->data;
    (void)events;

    /* The poll stays on until the queue is empty: stopping and starting
     * it costs two epoll_ctl calls every time the socket fills. */
    if (c->state == CONN_CLOSING) {
        dup_poll_stop(&c->out_poll);
        return;
    }
    if (status < 0) {
        conn_close(c);
        return;
    }
    run(c);
}

void out_direct_send(struct conn *c, struct request *list)
{
    if (!list)
        return;
    for (struct request *r = list; r; r = r->out_next)
        r->out_i = 0;
    if (c->send_tail)
        c->send_tail->out_next = list;
    else
        c->send_head = list;
    while (list->out_next)
        list = list->out_next;
    c->send_tail = list;
    if (!c->out_poll.active)
        run(c);
}

void out_direct_drop(struct conn *c)
{
    struct request *r = c->send_head;

    c->send_head = c->send_tail = NULL;
    dup_poll_stop(&c->out_poll);
    while (r) {
        struct request *next = r->out_next;
        if (r->pipe)
            splice_put_pipe(r, false);
        req_release(r);
        r = next;
    }
}
