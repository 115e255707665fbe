/* The daemon's shared types: server, export, connection, request.
 *
 * Ownership in one place: the loop thread owns every struct conn and every
 * socket; a struct request belongs to its connection and travels to a
 * worker thread and back (the worker touches only the request's own
 * fields and the image); struct export and its image live for the whole
 * process.
 */
#ifndef DISKSERVE_SERVER_H
#define DISKSERVE_SERVER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <uv.h>

#include "image.h"
#include "protocol.h"

/* ---- configuration ------------------------------------------------ */

struct export {
    char *name;             /* "" is the default export */
    char *description;
    char *image_path;
    char *format;           /* NULL: probe */
    char *snapshot;
    char *key_file;
    bool read_only;
    struct image *img;
    char **bitmaps;         /* -B: the only bitmaps offered (none given:
                             * every consistent bitmap of the image) */
    size_t n_bitmaps;
    unsigned applying;      /* bitmap_apply calls on workers (loop thread
                             * only): while 0, bitmap_status never waits */
    bool tls_only;          /* refused to clients that did not STARTTLS */
    char *tls_authz_file;   /* client certificate DNs allowed, one a line */
    char **tls_dns;         /* ... as read at startup (NULL: any) */
    char **tls_psk_users;   /* PSK usernames allowed (NULL: any) */
    struct direct_export *direct;   /* rbd-direct.c's, from the first
                                     * request on (loop thread) */
    struct export *next;
};

struct srv_options {
    struct export *exports;     /* in the order given */
    size_t n_exports;
    char *socket_path;
    char *bind_addr;            /* NULL: localhost */
    char *port;                 /* NULL: 10809 unless a socket is given */
    bool tcp;                   /* listen on TCP */
    unsigned shared;            /* max clients */
    unsigned max_negotiating;   /* max clients in the handshake */
    unsigned threads;
    unsigned handshake_timeout; /* seconds */
    unsigned max_inflight;      /* per connection */
    size_t buffer_budget;       /* bytes of request buffers in use */
    bool oneshot;
    bool fork;
    bool stdio;
    char *pid_file;
    char *log_file;
    char *control_path;         /* QMP control socket, or NULL */
    int verbose;
    size_t cache_size;
    uint64_t luks_max_iter;     /* 0: IMG_DEFAULT_LUKS_MAX_ITER */
    bool bitmaps_crash_safe;    /* qcow2 enabled bitmaps survive crashes */
    int tls;                    /* SRV_TLS_OFF, _ON, _REQUIRE */
    char *tls_certificates;     /* dir of ca-cert.pem, server-cert.pem,
                                 * server-key.pem */
    char *tls_psk;              /* psktool's username:hexkey file */
    char *tls_priority;         /* NULL: TLS_DEFAULT_PRIORITY (tls.c) */
    bool tls_verify_peer;       /* require a client certificate */
    int socket_mode;            /* -1: as the umask leaves it */
    long socket_gid;            /* -1: ours */
};

enum { SRV_TLS_OFF, SRV_TLS_ON, SRV_TLS_REQUIRE };

/* Parse argv into opts; exits 2 with one line on a bad option or value. */
void srv_parse_args(int argc, char **argv, struct srv_options *opts);

/* ---- logging ------------------------------------------------------ */

void srv_log(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
void srv_debug(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
extern int srv_verbose;
/* Point stderr at the log file (again, after SIGHUP); 0 or -errno. */
int srv_log_open(const char *path);

/* ---- worker pool -------------------------------------------------- */

struct srv_work {
    void (*run)(struct srv_work *w);    /* on a worker thread */
    void (*done)(struct srv_work *w);   /* back on the loop thread */
    struct srv_work *next;
};

int srv_workers_start(uv_loop_t *loop, unsigned n);
void srv_workers_submit(struct srv_work *w);
void srv_workers_stop(void);

/* ---- listeners ---------------------------------------------------- */

/* Create the listening sockets (plain fds, before the loop exists, so
 * --fork can happen after binding).  Returns 0 or exits with a message. */
int srv_listen_fds(const struct srv_options *opts, int *fds, size_t *n,
                   size_t max);
/* Sockets handed over by systemd (LISTEN_PID/LISTEN_FDS); the count. */
size_t srv_activation_fds(int *fds, size_t max);
/* Start accepting on the fds inside the loop. */
int srv_listen_start(uv_loop_t *loop, const int *fds, size_t n);
/* Stop accepting (shutdown) and close the listeners. */
void srv_listen_close(void);
/* Remove a stale socket file at path (nobody listening); -EEXIST or
 * -EADDRINUSE with a message when something else is there. */
int srv_unlink_stale(const char *path);
/* A client slot freed: accept clients that waited at the limit. */
void srv_listen_resume(void);

/* ---- connections -------------------------------------------------- */

enum conn_state {
    CONN_CLIENT_FLAGS,      /* greeting sent, waiting for client flags */
    CONN_OPT_HEADER,        /* waiting for an option header */
    CONN_OPT_DATA,          /* reading option data */
    CONN_TLS_HANDSHAKE,     /* after STARTTLS: TLS records in, tls.c */
    CONN_OPT_WAIT,          /* an option's answer is being prepared on a
                             * worker: read and parse nothing meanwhile */
    CONN_REQ_HEADER,        /* transmission: waiting for a request */
    CONN_REQ_PAYLOAD,       /* reading a write payload */
    CONN_REQ_DISCARD,       /* skipping a refused request's payload */
    CONN_LINGERING,         /* replies written, sending side shut down:
                             * dropping input until the client closes */
    CONN_CLOSING,           /* draining in-flight requests, then close */
};

struct request;
struct tls_sess;

/* A poll handle on a duplicate of a connection's socket descriptor
 * (output.c): libuv allows one watcher per descriptor, and its stream
 * already owns the socket's; epoll tells the duplicate apart. */
struct dup_poll {
    uv_poll_t h;
    int fd;
    bool open;
    bool active;
};

struct conn {
    uv_stream_t *in;        /* where requests arrive */
    uv_stream_t *out;       /* where replies go (== in for sockets) */
    union {
        uv_tcp_t tcp;
        uv_pipe_t pipe;
    } h_in, h_out;
    unsigned open_handles;  /* handles not yet closed */
    enum conn_state state;
    uint64_t id;
    bool reading;
    bool paused;            /* reads stopped for backpressure */
    bool negotiating;
    bool disc;              /* read no more: close when drained (DISC,
                             * end of stream, a request not read) */
    bool eof;               /* the client shut down its sending side */
    bool shut;              /* uv_shutdown of out started */
    uv_shutdown_t shut_req;
    uint64_t linger_left;   /* input bytes to drop before closing anyway */

    /* input buffer */
    uint8_t *ibuf;
    size_t ibuf_cap;
    size_t ibuf_len;        /* bytes held, starting at ibuf_pos */
    size_t ibuf_pos;

    /* handshake */
    uv_timer_t timer;
    bool timer_open;
    uint32_t client_flags;
    unsigned n_options;
    struct proto_option opt;
    uint8_t *opt_data;
    uint32_t opt_have;

    struct tls_sess *tls;   /* set at STARTTLS (tls.c) */

    /* negotiated */
    bool structured;
    bool extended;
    struct export *exp;
    uint16_t tflags;
    uint32_t check_align;   /* min block to enforce: the client asked */
    /* meta contexts selected for meta_export */
    struct export *meta_export;
    bool meta_base, meta_depth;
    char **meta_bitmaps;    /* names of the selected dirty bitmaps (owned,
                             * fixed once transmission starts); bitmap i
                             * has context id SRV_CTX_ID_BITMAP0 + i */
    size_t n_meta_bitmaps;
    bool has_meta;

    /* transmission */
    struct request *cur;    /* request being received */
    uint64_t discard_left;
    unsigned inflight;      /* requests allocated, not yet released */
    unsigned in_worker;     /* requests running on worker threads */
    size_t buf_used;        /* request buffer bytes this client holds */
    /* replies waiting for the end of this loop iteration (reply.c) */
    struct request *out_head, *out_tail;
    /* direct output (output.c): plaintext sockets write replies with
     * writev and splice themselves, in order, from send_head */
    struct request *send_head, *send_tail;
    struct dup_poll out_poll;   /* room in the socket */
    bool out_queued;        /* on reply.c's pending list */
    struct conn *out_next;
    struct conn *next, *prev;
    struct conn *paused_next;
};

/* Take over an accepted stream (or stdio streams) and send the greeting.
 * in and out are initialised handles inside a fresh conn (see
 * conn_new). */
struct conn *conn_new(void);
void conn_start(struct conn *c);
/* Close callback of every handle a connection owns. */
void conn_handle_closed(uv_handle_t *h);
/* Begin closing: stop reading, close once in-flight requests end. */
void conn_close(struct conn *c);
/* Every reply of c is written and nothing more will be read: end the
 * connection gracefully (see conn.c). */
void conn_end_output(struct conn *c);
/* An option handled on a worker (CONN_OPT_WAIT) came back; its replies
 * are sent: go on with the next option. */
void conn_option_done(struct conn *c);
/* Forget the connection's meta context selection. */
void conn_clear_meta(struct conn *c);
/* Write bytes the connection owns nothing of (copied); handshake use. */
int conn_send_copy(struct conn *c, const void *data, size_t len);
void conn_resume_paused(void);
/* A request of c came back from a worker or was released: a closing
 * connection may finish, a paused one resume. */
void conn_request_done(struct conn *c);
/* Stop reading on every connection (shutdown). */
void conn_shutdown_all(void);
/* Close every connection now (shutdown drain timed out). */
void conn_close_all(void);
unsigned conn_count(void);
unsigned conn_negotiating_count(void);

static inline uint8_t *conn_in_data(struct conn *c)
{
    return c->ibuf + c->ibuf_pos;
}

static inline void conn_consume(struct conn *c, size_t n)
{
    c->ibuf_pos += n;
    c->ibuf_len -= n;
}

/* ---- handshake ---------------------------------------------------- */

/* Handle a complete option in c->opt / c->opt_data; 0 to continue,
 * -EPROTO to drop the connection. */
int hs_handle_option(struct conn *c);
void hs_send_greeting(struct conn *c);

/* ---- requests ----------------------------------------------------- */

/* Meta context ids: fixed for base:allocation and qemu:allocation-depth,
 * then one per selected dirty bitmap, at most SRV_MAX_BITMAP_CONTEXTS. */
#define SRV_CTX_ID_BASE 1u
#define SRV_CTX_ID_DEPTH 2u
#define SRV_CTX_ID_BITMAP0 3u
#define SRV_MAX_BITMAP_CONTEXTS 62u
/* Descriptors one block status chunk carries at most (a prefix of the
 * range is answered when there are more). */
#define SRV_MAX_EXTENTS 1024u

/* Image ranges one spliced read may gather (more: the read copies). */
#define SRV_SPLICE_MAPS 16u

struct srv_pipe;

struct request {
    struct srv_work work;   /* first: worker hand-off */
    struct conn *conn;
    struct proto_request hdr;
    uint8_t *buf;           /* payload or read data */
    const uint8_t *data;    /* a read's data in place of buf: the image
                               file's mapping (raw on tmpfs) */
    size_t buf_cap;
    bool buf_pooled;
    uint64_t have;          /* payload bytes received */
    int err;                /* -errno from the driver */
    uint32_t wire_err;      /* validation error, sent without running */
    /* block status results: ext for base:allocation and allocation
     * depth, bm_ext[i] for selected bitmap i, all in ext_v */
    struct img_extents ext;
    struct img_extents *bm_ext;
    size_t bm_ext_cap;
    struct img_extent *ext_v;
    size_t ext_cap;
    /* a read answered from a pipe (splice.c): the image ranges that
     * fill it, in order; reply pieces with a NULL base are pipe bytes */
    struct srv_pipe *pipe;
    struct img_map maps[SRV_SPLICE_MAPS];
    unsigned nmaps;
    bool splice_failed;     /* the pipe could not be filled: copy */
    bool pinned;            /* pin holds the mapped ranges (map_pin) */
    uint64_t pin;
    /* reply */
    uv_write_t wreq;
    uv_buf_t iov[2 * 64 + 4];
    unsigned niov;
    unsigned out_i;         /* direct output: next piece to write */
    uint8_t hdrs[64 * 48 + 256];
    struct request *next_free;
    struct request *out_next;   /* connection's output queue */
};

/* Handle newly arrived request header bytes; see request.c. */
int req_receive_header(struct conn *c);
/* Payload for c->cur complete: run it. */
void req_dispatch(struct conn *c, struct request *r);
void req_release(struct request *r);
struct request *req_alloc(struct conn *c, size_t payload);
/* Finish a request on the loop thread: build and send its reply. */
void req_reply(struct request *r);
/* Release the replies a closing connection had not written yet. */
void reply_drop_queue(struct conn *c);
/* Output drained: send replies that waited for it (TLS, reply.c). */
void reply_kick(struct conn *c);
/* Run r on the loop thread through the remote backend's aio when c's
 * export is raw over RBD (rbd-direct.c): true if r was taken (it is
 * answered later, or already was). */
bool srv_rbd_direct(struct conn *c, struct request *r);

/* ---- spliced reads (splice.c) ------------------------------------- */

/* Answer read r from a pipe the image's pages are spliced into, with no
 * copy, when the connection, the image and the mapping allow; true when
 * r was taken (answered now or on a worker), false to read it by copy. */
bool splice_read(struct request *r);
/* Bytes of the reply's data that r's first pipe can give now (at most
 * want), and: n of them went out. */
size_t splice_take(struct request *r, size_t want);
void splice_took(struct request *r, size_t n);
/* The end of a pipe data is spliced out of. */
int splice_pipe_rd(const struct srv_pipe *p);
/* On a worker: fill r's pipe from r->maps; false when it could not. */
bool splice_fill(struct request *r);
/* Let go of r's pinned ranges (r->pinned). */
void splice_unpin(struct request *r);
/* Return r's pipe: to the pool when emptied (clean), else closed. */
void splice_put_pipe(struct request *r, bool clean);
/* Close the pooled pipes (shutdown). */
void splice_cleanup(void);

/* ---- direct output (output.c) ------------------------------------- */

/* Whether c's replies go through output.c (a plaintext socket). */
bool out_direct_ok(const struct conn *c);
/* Write the replies in list (linked by out_next), after those still
 * waiting, as far as the socket takes them now; the rest when it has
 * room.  Each request is released once its reply is written. */
void out_direct_send(struct conn *c, struct request *list);
/* Release every reply not written yet (closing). */
void out_direct_drop(struct conn *c);
/* Call cb when c's socket is ready for events; false when that cannot
 * be arranged.  Stop, and close (while the connection closes; counted
 * in its open handles). */
bool dup_poll_start(struct conn *c, struct dup_poll *p, int events,
                    uv_poll_cb cb);
void dup_poll_stop(struct dup_poll *p);
void dup_poll_close(struct dup_poll *p);

/* ---- exports ------------------------------------------------------ */

struct srv;
struct export *srv_find_export(const char *name, size_t len);
int srv_open_exports(struct srv_options *opts);
/* The dirty bitmaps e offers now: the driver's current list without the
 * inconsistent ones, restricted by -B.  *names gets *n copies (free with
 * srv_free_names).  May block on the driver: worker threads, or startup.
 * Returns 0 or -errno. */
int srv_export_bitmaps(struct export *e, char ***names, size_t *n);
void srv_free_names(char **names, size_t n);
void srv_close_exports(void);
/* Flush every writable export; used at shutdown. */
void srv_flush_exports(void);

/* ---- global state ------------------------------------------------- */

struct srv {
    uv_loop_t *loop;
    struct srv_options opts;
    bool shutting_down;
    bool had_client;
    size_t buf_used;            /* request buffer bytes in use */
    uint64_t next_conn_id;
};

extern struct srv srv;

/* A connection ended: for --oneshot and shutdown bookkeeping. */
void srv_conn_gone(void);
/* Shut down gracefully, as on SIGTERM. */
void srv_shutdown(void);

/* ---- control socket (control.c) ----------------------------------- */

/* Create the control socket (before the loop, like the listeners);
 * returns the fd or exits with a message. */
int ctl_listen_fd(const char *path);
/* Start accepting control clients on fd inside the loop. */
int ctl_start(uv_loop_t *loop, int fd);
/* Stop accepting, end every control client, remove the socket file. */
void ctl_close(void);

#endif /* DISKSERVE_SERVER_H */
