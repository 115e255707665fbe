/* diskserve: serve disk images over NBD.
 *
 * Startup order matters: parse everything, open every image, bind every
 * socket, and only then fork (--fork) and start the loop, so each failure
 * is reported on the terminal that started us and a client connecting
 * the moment the parent exits always finds a listening server.
 * Shutdown (SIGTERM, SIGINT, --oneshot) stops accepting, lets in-flight
 * requests finish and their replies go out, flushes, closes the images
 * and exits 0.
 */
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "server.h"
#include "tls.h"

#define MAX_FDS 16
#define DRAIN_TIMEOUT_MS 30000

struct srv srv;

static uv_signal_t sig_term, sig_int, sig_hup;
static uv_timer_t drain_timer;
static bool finished;

static void close_handle(uv_handle_t *h)
{
    if (!uv_is_closing(h))
        uv_close(h, NULL);
}

static void finish(void)
{
    if (finished)
        return;
    finished = true;
    srv_flush_exports();
    close_handle((uv_handle_t *)&sig_term);
    close_handle((uv_handle_t *)&sig_int);
    close_handle((uv_handle_t *)&sig_hup);
    close_handle((uv_handle_t *)&drain_timer);
    srv_workers_stop();
    srv_close_exports();
    splice_cleanup();
    tls_exit();
    srv_debug("exiting");
}

static void on_drain_timeout(uv_timer_t *t)
{
    (void)t;
    srv_log("clients did not drain in %d s, closing them",
            DRAIN_TIMEOUT_MS / 1000);
    conn_close_all();
}

static void begin_shutdown(void)
{
    if (srv.shutting_down)
        return;
    srv.shutting_down = true;
    srv_debug("shutting down");
    srv_listen_close();
    ctl_close();
    conn_shutdown_all();
    uv_timer_start(&drain_timer, on_drain_timeout, DRAIN_TIMEOUT_MS, 0);
    uv_unref((uv_handle_t *)&drain_timer);
    if (conn_count() == 0)
        finish();
}

void srv_shutdown(void)
{
    begin_shutdown();
}

void srv_conn_gone(void)
{
    if (conn_count() > 0)
        return;
    if (srv.shutting_down)
        finish();
    else if (srv.opts.oneshot && srv.had_client)
        begin_shutdown();
}

static void on_signal(uv_signal_t *s, int signum)
{
    (void)s;
    if (signum == SIGHUP) {
        if (srv.opts.log_file) {
            int err = srv_log_open(srv.opts.log_file);
            if (err)
                srv_log("cannot reopen %s: %s", srv.opts.log_file,
                        strerror(-err));
        }
        tls_reload();
        return;
    }
    begin_shutdown();
}

static int open_stream(uv_loop_t *loop, int fd, union { uv_tcp_t tcp;
                       uv_pipe_t pipe; } *h, uv_stream_t **out)
{
    int err;
    switch (uv_guess_handle(fd)) {
    case UV_TCP:
        uv_tcp_init(loop, &h->tcp);
        err = uv_tcp_open(&h->tcp, fd);
        break;
    case UV_NAMED_PIPE:
        uv_pipe_init(loop, &h->pipe, 0);
        err = uv_pipe_open(&h->pipe, fd);
        break;
    default:
        fprintf(stderr, "diskserve: --stdio: fd %d is not a socket or "
                "pipe\n", fd);
        return -EINVAL;
    }
    *out = (uv_stream_t *)h;
    return err;
}

static int serve_stdio(uv_loop_t *loop)
{
    struct stat a, b;
    struct conn *c = conn_new();
    if (!c)
        return -ENOMEM;
    int err = open_stream(loop, STDIN_FILENO, (void *)&c->h_in, &c->in);
    if (err)
        return err;
    c->open_handles = 1;
    c->out = c->in;
    if (fstat(STDIN_FILENO, &a) == 0 && fstat(STDOUT_FILENO, &b) == 0 &&
        (a.st_dev != b.st_dev || a.st_ino != b.st_ino)) {
        err = open_stream(loop, STDOUT_FILENO, (void *)&c->h_out, &c->out);
        if (err)
            return err;
        c->open_handles = 2;
    }
    c->h_in.tcp.data = c;
    c->h_out.tcp.data = c;
    conn_start(c);
    return 0;
}

static int write_pid_file(const char *path, pid_t pid)
{
    FILE *f = fopen(path, "w");
    if (!f || fprintf(f, "%d\n", (int)pid) < 0 || fclose(f) != 0) {
        fprintf(stderr, "diskserve: %s: %s\n", path, strerror(errno));
        return -1;
    }
    return 0;
}

static void daemonize(void)
{
    pid_t pid = fork();
    if (pid < 0) {
        fprintf(stderr, "diskserve: fork: %s\n", strerror(errno));
        exit(1);
    }
    if (pid > 0) {
        if (srv.opts.pid_file && write_pid_file(srv.opts.pid_file, pid))
            _exit(1);
        _exit(0);
    }
    setsid();
    int fd = open("/dev/null", O_RDWR);
    if (fd >= 0) {
        dup2(fd, STDIN_FILENO);
        dup2(fd, STDOUT_FILENO);
        if (!srv.opts.log_file)
            dup2(fd, STDERR_FILENO);
        if (fd > STDERR_FILENO)
            close(fd);
    }
}

int main(int argc, char **argv)
{
    int fds[MAX_FDS];
    size_t nfds = 0;
    int ctl_fd = -1;

    signal(SIGPIPE, SIG_IGN);
    srv_parse_args(argc, argv, &srv.opts);
    srv_verbose = srv.opts.verbose;
    if (srv.opts.log_file) {
        int err = srv_log_open(srv.opts.log_file);
        if (err) {
            fprintf(stderr, "diskserve: %s: %s\n", srv.opts.log_file,
                    strerror(-err));
            return 1;
        }
    }
    if (tls_init(&srv.opts))
        return 1;
    if (srv_open_exports(&srv.opts))
        return 1;

    if (!srv.opts.stdio) {
        nfds = srv_activation_fds(fds, MAX_FDS);
        if (nfds == 0 && srv_listen_fds(&srv.opts, fds, &nfds, MAX_FDS))
            return 1;
    }
    if (srv.opts.control_path)
        ctl_fd = ctl_listen_fd(srv.opts.control_path);
    if (srv.opts.fork)
        daemonize();
    else if (srv.opts.pid_file && write_pid_file(srv.opts.pid_file,
                                                 getpid()))
        return 1;

    srv.loop = uv_default_loop();
    int err = srv_workers_start(srv.loop, srv.opts.threads);
    if (err) {
        srv_log("cannot start worker threads: %s", uv_strerror(err));
        return 1;
    }
    uv_signal_init(srv.loop, &sig_term);
    uv_signal_init(srv.loop, &sig_int);
    uv_signal_init(srv.loop, &sig_hup);
    uv_signal_start(&sig_term, on_signal, SIGTERM);
    uv_signal_start(&sig_int, on_signal, SIGINT);
    uv_signal_start(&sig_hup, on_signal, SIGHUP);
    uv_timer_init(srv.loop, &drain_timer);

    if (srv.opts.stdio)
        err = serve_stdio(srv.loop);
    else
        err = srv_listen_start(srv.loop, fds, nfds);
    if (!err && ctl_fd >= 0)
        err = ctl_start(srv.loop, ctl_fd);
    if (err) {
        srv_log("cannot start serving: %s", strerror(err < 0 ? -err : err));
        return 1;
    }
    srv_debug("serving %zu export(s)", srv.opts.n_exports);
    uv_run(srv.loop, UV_RUN_DEFAULT);
    if (!finished)
        finish();
    uv_run(srv.loop, UV_RUN_NOWAIT);
    return 0;
}
