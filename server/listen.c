/* Listening sockets: Unix, TCP (every address the bind name resolves to,
 * IPv4 and IPv6), or the ones systemd passed in.
 *
 * The sockets are created with plain syscalls before the event loop
 * exists, so --fork can detach after the address is bound and a client
 * connecting right after the parent exits always finds it.  Accepting is
 * paused, not refused, while the server is at its client limit: clients
 * wait in the backlog as they do with qemu-nbd.
 */
#include <errno.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include "server.h"

#define SNDBUF (2 * 1024 * 1024)

#define MAX_LISTENERS 16

struct listener {
    union {
        uv_tcp_t tcp;
        uv_pipe_t pipe;
    } h;
    bool is_unix;
    bool pending;       /* a client waits to be accepted */
    bool open;
};

static struct listener listeners[MAX_LISTENERS];
static size_t n_listeners;

/* A stale socket file (nobody listening) is removed; a live one is an
 * error, so two servers never share a path. */
int srv_unlink_stale(const char *path)
{
    struct stat st;
    if (lstat(path, &st) < 0)
        return 0;
    if (!S_ISSOCK(st.st_mode)) {
        fprintf(stderr, "diskserve: %s exists and is not a socket\n", path);
        return -EEXIST;
    }
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    struct sockaddr_un sun = { .sun_family = AF_UNIX };
    memcpy(sun.sun_path, path, strlen(path));
    int r = connect(fd, (struct sockaddr *)&sun, sizeof sun);
    close(fd);
    if (r == 0) {
        fprintf(stderr, "diskserve: %s: another server is listening\n", path);
        return -EADDRINUSE;
    }
    unlink(path);
    return 0;
}

/* --socket-mode, --socket-group: set before listen(), so no client can
 * connect while the socket still has the umask's permissions. */
static int restrict_socket(const struct srv_options *o)
{
    const char *path = o->socket_path;

    if (o->socket_gid >= 0 && chown(path, (uid_t)-1, (gid_t)o->socket_gid)) {
        fprintf(stderr, "diskserve: %s: group: %s\n", path, strerror(errno));
        return -errno;
    }
    if (o->socket_mode >= 0 && chmod(path, (mode_t)o->socket_mode)) {
        fprintf(stderr, "diskserve: %s: mode: %s\n", path, strerror(errno));
        return -errno;
    }
    return 0;
}

static int listen_unix(const struct srv_options *o)
{
    const char *path = o->socket_path;
    struct sockaddr_un sun = { .sun_family = AF_UNIX };

    if (strlen(path) >= sizeof sun.sun_path) {
        fprintf(stderr, "diskserve: socket path too long: %s\n", path);
        return -ENAMETOOLONG;
    }
    int err = srv_unlink_stale(path);
    if (err)
        return err;
    memcpy(sun.sun_path, path, strlen(path));
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return -errno;
    if (bind(fd, (struct sockaddr *)&sun, sizeof sun) < 0 ||
        (err = restrict_socket(o)) < 0 || listen(fd, SOMAXCONN) < 0) {
        if (err) {
            close(fd);
            return err;
        }
        err = -errno;
        fprintf(stderr, "diskserve: %s: %s\n", path, strerror(errno));
        close(fd);
        return err;
    }
    return fd;
}

int srv_listen_fds(const struct srv_options *o, int *fds, size_t *n,
                   size_t max)
{
    *n = 0;
    if (o->socket_path) {
        int fd = listen_unix(o);
        if (fd < 0)
            return fd;
        fds[(*n)++] = fd;
    }
    if (!o->tcp)
        return 0;

    struct addrinfo hints = {
        .ai_family = AF_UNSPEC,
        .ai_socktype = SOCK_STREAM,
        .ai_flags = AI_PASSIVE | AI_ADDRCONFIG,
    };
    struct addrinfo *res;
    const char *host = o->bind_addr ? o->bind_addr : "localhost";
    int gai = getaddrinfo(host, o->port, &hints, &res);
    if (gai) {
        fprintf(stderr, "diskserve: %s:%s: %s\n", host, o->port,
                gai_strerror(gai));
        return -EINVAL;
    }
    int last_err = 0;
    size_t bound = 0;
    for (struct addrinfo *a = res; a && *n < max; a = a->ai_next) {
        int fd = socket(a->ai_family, a->ai_socktype | SOCK_CLOEXEC,
                        a->ai_protocol);
        if (fd < 0) {
            last_err = errno;
            continue;
        }
        int one = 1;
        setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
        if (a->ai_family == AF_INET6)
            setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof one);
        if (bind(fd, a->ai_addr, a->ai_addrlen) < 0 ||
            listen(fd, SOMAXCONN) < 0) {
            last_err = errno;
            close(fd);
            continue;
        }
        fds[(*n)++] = fd;
        bound++;
    }
    freeaddrinfo(res);
    if (bound == 0) {
        fprintf(stderr, "diskserve: cannot listen on %s:%s: %s\n", host,
                o->port, strerror(last_err));
        return -(last_err ? last_err : EINVAL);
    }
    return 0;
}

static bool at_limit(void)
{
    return srv.shutting_down || conn_count() >= srv.opts.shared ||
           conn_negotiating_count() >= srv.opts.max_negotiating;
}

static void accept_one(struct listener *l)
{
    struct conn *c = conn_new();
    if (!c) {
        srv_log("out of memory accepting a client");
        return;
    }
    uv_stream_t *server = (uv_stream_t *)&l->h;
    int err;
    if (l->is_unix) {
        uv_pipe_init(srv.loop, &c->h_in.pipe, 0);
    } else {
        uv_tcp_init(srv.loop, &c->h_in.tcp);
    }
    c->in = c->out = (uv_stream_t *)&c->h_in;
    c->open_handles = 1;
    err = uv_accept(server, c->in);
    if (err) {
        srv_log("accept: %s", uv_strerror(err));
        conn_close(c);
        return;
    }
    if (!l->is_unix)
        uv_tcp_nodelay(&c->h_in.tcp, 1);
    /* Room for a few large replies at once: a spliced reply waits for
     * the socket less often (the kernel caps this at wmem_max). */
    int sndbuf = SNDBUF;
    uv_os_fd_t fd;
    if (uv_fileno((uv_handle_t *)c->in, &fd) == 0)
        setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &sndbuf, sizeof sndbuf);
    conn_start(c);
}

static void on_connection(uv_stream_t *server, int status)
{
    struct listener *l = (struct listener *)server;

    if (status < 0) {
        srv_log("listen: %s", uv_strerror(status));
        return;
    }
    if (at_limit()) {
        /* Leave it queued: libuv stops watching this socket until we
         * call uv_accept. */
        l->pending = true;
        return;
    }
    accept_one(l);
}

void srv_listen_resume(void)
{
    for (size_t i = 0; i < n_listeners; i++) {
        struct listener *l = &listeners[i];
        if (l->open && l->pending && !at_limit()) {
            l->pending = false;
            accept_one(l);
        }
    }
}

int srv_listen_start(uv_loop_t *loop, const int *fds, size_t n)
{
    for (size_t i = 0; i < n && i < MAX_LISTENERS; i++) {
        struct listener *l = &listeners[n_listeners];
        int domain = 0;
        socklen_t len = sizeof domain;
        int err;

        if (getsockopt(fds[i], SOL_SOCKET, SO_DOMAIN, &domain, &len) < 0)
            return -errno;
        l->is_unix = domain == AF_UNIX;
        if (l->is_unix) {
            uv_pipe_init(loop, &l->h.pipe, 0);
            err = uv_pipe_open(&l->h.pipe, fds[i]);
        } else {
            uv_tcp_init(loop, &l->h.tcp);
            err = uv_tcp_open(&l->h.tcp, fds[i]);
        }
        if (!err)
            err = uv_listen((uv_stream_t *)&l->h, SOMAXCONN, on_connection);
        if (err) {
            srv_log("listen: %s", uv_strerror(err));
            return err;
        }
        l->open = true;
        n_listeners++;
    }
    return 0;
}

void srv_listen_close(void)
{
    for (size_t i = 0; i < n_listeners; i++) {
        if (listeners[i].open) {
            listeners[i].open = false;
            uv_close((uv_handle_t *)&listeners[i].h, NULL);
        }
    }
    if (srv.opts.socket_path)
        unlink(srv.opts.socket_path);
}
