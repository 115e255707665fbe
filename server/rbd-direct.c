/* Raw exports over a remote image (RBD): requests straight from the loop.
 *
 * A raw driver over librbd is a thin wrapper around librbd's own aio, and
 * a worker thread that submits one and waits for it costs two thread
 * switches per request on top of librbd's own; on two cores shared with
 * the OSD that decides the request rate.  So READ, WRITE, FLUSH, TRIM
 * and WRITE_ZEROES of such an export are submitted here, on the loop
 * thread, through the backend's asynchronous I/O (formats/io-backend.h),
 * which returns at once.  librbd calls back on a thread of its own: the
 * callback pushes the finished operation onto a lock-free list and wakes
 * the loop with one uv_async, and the loop sends the replies.  Block
 * status and CACHE still go to workers, through the raw driver.
 *
 * This does what formats/raw.c does for a remote image, in the same
 * order: FUA is the operation, then a flush; WRITE_ZEROES with MAY_TRIM
 * is a discard, without it a zero write; a failed flush makes the
 * export refuse every later write with EIO (the cluster's state is then
 * unknown).  The raw driver never writes such an export meanwhile: every
 * write takes this path.
 *
 * Ownership: an export's state (export.direct) is made on the loop
 * thread at its first request and lives as long as the process.  A struct direct_op belongs
 * to the loop thread except between its submission and its completion
 * callback, when the backend has it; ops are pooled, so steady state
 * allocates nothing.  A request in flight here is counted in the
 * connection's in_worker, as on a worker, so the connection outlives it.
 */
#include <errno.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#include "io-backend.h"
#include "io.h"
#include "server.h"

struct direct_export {
    struct export *exp;
    int handle;                 /* io_aio_handle's, or < 0: workers */
    bool failed;                /* a flush failed: refuse writes */
};

struct direct_op {
    struct io_aio aio;          /* first: the backend hands it back */
    struct request *req;
    struct direct_export *de;
    bool then_flush;            /* FUA: flush once the operation is done */
    int result;
    struct direct_op *next;     /* done list, or the free pool */
};

static struct direct_op *pool;          /* loop thread only */
static _Atomic(struct direct_op *) done_list;
static uv_async_t wake;
static bool wake_ready;

/* The export's state, made at its first request; NULL without memory. */
static struct direct_export *export_state(struct export *e)
{
    struct direct_export *de = e->direct;

    if (de)
        return de;
    de = calloc(1, sizeof *de);
    if (!de)
        return NULL;
    de->exp = e;
    de->handle = -1;
    if (strcmp(e->img->ops->name, "raw") == 0 &&
        io_is_remote_name(e->img->path))
        de->handle = io_aio_handle(e->img->path, !e->img->read_only);
    if (de->handle >= 0)
        srv_debug("%s: raw requests go to the backend from the loop",
                  e->img->path);
    e->direct = de;
    return de;
}

/* librbd's thread: hand op back to the loop. */
static void on_backend_done(struct io_aio *a, int result)
{
    struct direct_op *op = (struct direct_op *)a;
    struct direct_op *head = atomic_load_explicit(&done_list,
                                                  memory_order_relaxed);

    op->result = result;
    do
        op->next = head;
    while (!atomic_compare_exchange_weak_explicit(&done_list, &head, op,
                                                  memory_order_release,
                                                  memory_order_relaxed));
    /* The loop takes the whole list per wakeup: only the first push
     * into an empty list needs to wake it. */
    if (!head)
        uv_async_send(&wake);
}

static void reply(struct direct_op *op, int err)
{
    struct request *r = op->req;

    op->next = pool;
    pool = op;
    r->err = err;
    r->conn->in_worker--;
    req_reply(r);
}

static void finish(struct direct_op *op)
{
    struct direct_export *de = op->de;
    int err = op->result;

    if (op->aio.op == IO_AIO_FLUSH && err) {
        if (!de->failed)
            srv_log("%s: flush failed, refusing further writes: %s",
                    de->exp->img->path, strerror(-err));
        de->failed = true;
        err = -EIO;
    }
    if (!err && op->then_flush) {
        op->then_flush = false;
        op->aio.op = IO_AIO_FLUSH;
        err = io_aio_submit(de->handle, &op->aio);
        if (!err)
            return;
    }
    reply(op, err);
}

static void on_wake(uv_async_t *h)
{
    (void)h;
    struct direct_op *list = atomic_exchange_explicit(&done_list, NULL,
                                                      memory_order_acquire);
    struct direct_op *fifo = NULL;

    /* Pushed newest first: answer in completion order. */
    while (list) {
        struct direct_op *next = list->next;
        list->next = fifo;
        fifo = list;
        list = next;
    }
    while (fifo) {
        struct direct_op *next = fifo->next;
        finish(fifo);
        fifo = next;
    }
}

static struct direct_op *op_get(void)
{
    struct direct_op *op = pool;

    if (op) {
        pool = op->next;
        return op;
    }
    if (!wake_ready) {
        if (uv_async_init(srv.loop, &wake, on_wake) != 0)
            return NULL;
        /* Connections with requests in flight keep the loop alive. */
        uv_unref((uv_handle_t *)&wake);
        wake_ready = true;
    }
    return calloc(1, sizeof *op);
}

bool srv_rbd_direct(struct conn *c, struct request *r)
{
    struct direct_op *op;
    enum io_aio_op kind;
    unsigned type = r->hdr.type;
    bool write = type != PROTO_CMD_READ && type != PROTO_CMD_FLUSH;

    switch (type) {
    case PROTO_CMD_READ:
        kind = IO_AIO_READ;
        break;
    case PROTO_CMD_WRITE:
        kind = IO_AIO_WRITE;
        break;
    case PROTO_CMD_FLUSH:
        kind = IO_AIO_FLUSH;
        break;
    case PROTO_CMD_TRIM:
        kind = IO_AIO_DISCARD;
        break;
    case PROTO_CMD_WRITE_ZEROES:
        kind = r->hdr.flags & PROTO_CMD_FLAG_NO_HOLE ? IO_AIO_ZERO
                                                     : IO_AIO_DISCARD;
        break;
    default:
        return false;
    }
    struct direct_export *de = export_state(c->exp);
    if (!de || de->handle < 0)
        return false;
    if ((write || kind == IO_AIO_FLUSH) && de->failed) {
        r->err = -EIO;
        req_reply(r);
        return true;
    }
    if (!(op = op_get())) {
        r->err = -ENOMEM;
        req_reply(r);
        return true;
    }
    op->aio = (struct io_aio){
        .op = kind, .buf = r->buf, .len = r->hdr.length,
        .off = r->hdr.offset, .done = on_backend_done,
    };
    op->req = r;
    op->de = de;
    op->then_flush = write && (r->hdr.flags & PROTO_CMD_FLAG_FUA);
    c->in_worker++;
    int err = io_aio_submit(de->handle, &op->aio);
    if (err)
        reply(op, err);
    return true;
}
