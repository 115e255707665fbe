/* Spliced reads: large reads on plaintext sockets move page references,
 * not bytes.
 *
 * A read of SPLICE_MIN bytes or more is mapped through the driver's
 * map_nowait into ranges of image files (and ranges that read as
 * zeros); when the driver promises those file bytes stay where they are
 * (img.map_stable: raw files, VHDX, read-only qcow2) or holds them for
 * us until we let go (map_pin: writable qcow2, until the reply is
 * written), the ranges are spliced into a chain of pipes and the reply
 * is written from the pipes into the socket (output.c).  The server copies nothing: the page cache's pages
 * travel to the socket, and the client's read is the only copy.  A copy
 * through a buffer costs about four times the CPU (measured on tmpfs:
 * 181 us per MiB for pread and write, 46 us for the two splices).
 *
 * On memory (tmpfs, img.nowait_reads) the pipe is filled on the loop
 * thread, as inline reads are; a file on disk may have to be read, so a
 * worker fills the pipe there.  Anything unexpected while filling (end
 * of file, an error, a range the pipe cannot hold) sends the request
 * back to the copying read, which reports errors as it always has.
 *
 * Bytes in a pipe are references to the file's pages, so a write to
 * the same range before the reply is read may show through; that write
 * was concurrent with the read, and NBD gives such pairs no order.  The
 * space of a freed and reused cluster is another matter, which is why
 * only map_stable images splice, or pinned ranges.
 *
 * Pipes are pooled; each is sized once (F_SETPIPE_SZ, as large as this
 * process may have), a read takes up to CHAIN_MAX of them, and the pool
 * keeps at most POOL_MAX.  Zeros that must
 * travel as bytes (simple replies, DF) come from a memory file that is
 * never written: its pages are shared zero pages.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <unistd.h>

#include "server.h"

#define SPLICE_MIN (64u * 1024)
#define PIPE_WANT (4u * 1024 * 1024)   /* needs CAP_SYS_RESOURCE */
#define PIPE_FALLBACK (1u * 1024 * 1024)   /* /proc/sys/fs/pipe-max-size */
#define CHAIN_MAX 8u    /* pipes one read may fill */
#define POOL_MAX 64u

/* A pipe; while it belongs to a request, next links the request's
 * chain (filled in order, written out in order); in the pool, the pool. */
struct srv_pipe {
    int rd, wr;
    size_t cap;
    size_t fill;            /* bytes in it now */
    struct srv_pipe *next;
};

static struct srv_pipe *pool;
static unsigned pool_n;
static int zero_fd = -1;
static size_t zero_size;
static size_t cap_limit = PIPE_WANT;    /* the most one pipe holds here */

int splice_pipe_rd(const struct srv_pipe *p)
{
    return p->rd;
}

static void pipe_free(struct srv_pipe *p)
{
    close(p->rd);
    close(p->wr);
    free(p);
}

/* A pipe from the pool or a new one holding cap_limit bytes. */
static struct srv_pipe *pipe_get(void)
{
    struct srv_pipe *p = pool;

    if (p) {
        pool = p->next;
        pool_n--;
        p->next = NULL;
        return p;
    }
    int fds[2];
    if (pipe2(fds, O_NONBLOCK | O_CLOEXEC) < 0)
        return NULL;
    p = calloc(1, sizeof *p);
    if (!p) {
        close(fds[0]);
        close(fds[1]);
        return NULL;
    }
    p->rd = fds[0];
    p->wr = fds[1];
    int cap = fcntl(p->wr, F_SETPIPE_SZ, (int)cap_limit);
    if (cap < 0 && cap_limit > PIPE_FALLBACK)
        cap = fcntl(p->wr, F_SETPIPE_SZ, PIPE_FALLBACK);
    if (cap > 0 && (size_t)cap < cap_limit)
        cap_limit = (size_t)cap;    /* what this process may have */
    if (cap <= 0 || (size_t)cap < cap_limit) {
        pipe_free(p);
        return NULL;
    }
    p->cap = (size_t)cap;
    return p;
}

static void pipe_put(struct srv_pipe *p, bool clean)
{
    if (!clean || pool_n >= POOL_MAX || p->cap < cap_limit) {
        pipe_free(p);
        return;
    }
    p->fill = 0;
    p->next = pool;
    pool = p;
    pool_n++;
}

/* Give r a chain of pipes holding len bytes; false when none can be had. */
static bool chain_get(struct request *r, uint64_t len)
{
    struct srv_pipe **tail = &r->pipe;

    for (uint64_t have = 0; have < len;) {
        struct srv_pipe *p = pipe_get();
        if (!p) {
            splice_put_pipe(r, true);   /* all still empty */
            return false;
        }
        *tail = p;
        tail = &p->next;
        have += p->cap;
    }
    return true;
}

void splice_put_pipe(struct request *r, bool clean)
{
    struct srv_pipe *p = r->pipe;

    r->pipe = NULL;
    while (p) {
        struct srv_pipe *next = p->next;
        pipe_put(p, clean);
        p = next;
    }
}

size_t splice_take(struct request *r, size_t want)
{
    struct srv_pipe *p = r->pipe;
    return p->fill < want ? p->fill : want;
}

void splice_took(struct request *r, size_t n)
{
    struct srv_pipe *p = r->pipe;

    p->fill -= n;
    if (p->fill == 0 && p->next) {
        r->pipe = p->next;
        pipe_put(p, true);
    }
}

void splice_cleanup(void)
{
    while (pool) {
        struct srv_pipe *p = pool;
        pool = p->next;
        pipe_free(p);
    }
    pool_n = 0;
    if (zero_fd >= 0)
        close(zero_fd);
    zero_fd = -1;
}

/* A file of zeros to splice from; false when none can be had. */
static bool zeros_ready(void)
{
    if (zero_size > 0)
        return true;
    if (zero_fd < 0)
        zero_fd = memfd_create("diskserve-zeros", MFD_CLOEXEC);
    if (zero_fd < 0 || ftruncate(zero_fd, (off_t)PIPE_WANT) < 0)
        return false;
    zero_size = PIPE_WANT;
    return true;
}

/* Splice len bytes of fd at off into r's pipes, from *at on; false on
 * anything short. */
static bool splice_in(struct srv_pipe **at, int fd, uint64_t off,
                      uint64_t len)
{
    loff_t pos = (loff_t)off;

    while (len > 0) {
        struct srv_pipe *p = *at;
        if (!p)
            return false;
        size_t room = p->cap - p->fill;
        if (room == 0) {
            *at = p->next;
            continue;
        }
        ssize_t n = splice(fd, &pos, p->wr, NULL,
                           len < room ? (size_t)len : room, SPLICE_F_MOVE);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0 && errno == EAGAIN && p->fill > 0) {
            /* Out of page slots before bytes (ranges that start
             * inside a page take one more): on to the next pipe. */
            *at = p->next;
            continue;
        }
        if (n <= 0)
            return false;
        p->fill += (size_t)n;
        len -= (uint64_t)n;
    }
    return true;
}

bool splice_fill(struct request *r)
{
    struct conn *c = r->conn;
    bool zeros_as_bytes = !c->structured ||
                          (r->hdr.flags & PROTO_CMD_FLAG_DF);
    struct srv_pipe *at = r->pipe;

    for (unsigned i = 0; i < r->nmaps; i++) {
        const struct img_map *m = &r->maps[i];
        if (m->kind == IMG_MAP_ZERO) {
            for (uint64_t left = zeros_as_bytes ? m->length : 0; left;) {
                uint64_t n = left < zero_size ? left : zero_size;
                if (!splice_in(&at, zero_fd, 0, n))
                    return false;
                left -= n;
            }
        } else if (!splice_in(&at, m->fd, m->host_offset, m->length)) {
            return false;
        }
    }
    return true;
}

/* Map [off, off + len) into at most SRV_SPLICE_MAPS ranges, merging
 * neighbours; false when the driver cannot map it all now. */
static bool map_all(struct request *r, struct image *img)
{
    uint64_t off = r->hdr.offset, left = r->hdr.length;
    bool ok = true;

    r->nmaps = 0;
    while (left > 0) {
        struct img_map m = { .mem = NULL };
        if (img->ops->map_nowait(img, left, off, &m) < 0 ||
            m.length == 0 || m.length > left) {
            ok = false;
            break;
        }
        struct img_map *p = r->nmaps ? &r->maps[r->nmaps - 1] : NULL;
        if (p && p->kind == m.kind &&
            (m.kind == IMG_MAP_ZERO ||
             (p->fd == m.fd && p->host_offset + p->length == m.host_offset))) {
            p->length += m.length;
        } else if (r->nmaps == SRV_SPLICE_MAPS) {
            ok = false;
            break;
        } else {
            r->maps[r->nmaps++] = m;
        }
        off += m.length;
        left -= m.length;
    }
    if (ok && !img->map_stable) {
        ok = img->ops->map_pin(img, &r->pin) == 0;
        r->pinned = ok;
    }
    if (img->ops->map_done)
        img->ops->map_done(img);
    return ok;
}

void splice_unpin(struct request *r)
{
    struct image *img = r->conn->exp->img;

    r->pinned = false;
    img->ops->map_unpin(img, r->pin);
}

static void fill_run(struct srv_work *w)
{
    struct request *r = (struct request *)w;
    r->splice_failed = !splice_fill(r);
}

/* r will be read by copy after all: drop its pipes and pins. */
static void give_up(struct request *r)
{
    splice_put_pipe(r, false);
    if (r->pinned)
        splice_unpin(r);
}

static void fill_done(struct srv_work *w)
{
    struct request *r = (struct request *)w;
    r->conn->in_worker--;
    if (r->splice_failed && r->conn->state != CONN_CLOSING) {
        /* splice_failed stays set: this time it copies. */
        give_up(r);
        req_dispatch(r->conn, r);
        return;
    }
    req_reply(r);
}

bool splice_read(struct request *r)
{
    struct conn *c = r->conn;
    struct image *img = c->exp->img;

    if (r->hdr.length < SPLICE_MIN || r->hdr.length > CHAIN_MAX * cap_limit ||
        !(img->map_stable || img->ops->map_pin) ||
        !img->ops->map_nowait || !out_direct_ok(c) || r->splice_failed)
        return false;
    if (!map_all(r, img))
        return false;
    bool zeros_as_bytes = !c->structured ||
                          (r->hdr.flags & PROTO_CMD_FLAG_DF);
    /* A range that starts inside a page takes a page slot more. */
    if ((zeros_as_bytes && !zeros_ready()) ||
        !chain_get(r, r->hdr.length + (uint64_t)(r->nmaps + 1) * 4096)) {
        give_up(r);
        return false;
    }
    if (img->nowait_reads) {
        if (!splice_fill(r)) {
            give_up(r);
            return false;
        }
        req_reply(r);
        return true;
    }
    r->work.run = fill_run;
    r->work.done = fill_done;
    c->in_worker++;
    srv_workers_submit(&r->work);
    return true;
}
