/* The control socket (--control PATH): QMP's wire protocol over a Unix
 * socket, so backup agents written for qemu-storage-daemon can manage the
 * dirty bitmaps of a running export.
 *
 * Each client gets QEMU's greeting, must send qmp_capabilities first, and
 * then sends commands as JSON objects ({"execute", "arguments", "id"}),
 * one after another on one stream (newlines optional).  Every command is
 * answered with {"return": ...} or {"error": {"class", "desc"}}, carrying
 * the request's id.  Input a client sends is parsed as it arrives; a
 * request still incomplete after CTL_MAX_INPUT bytes drops the client.
 * After malformed JSON the rest of that line is skipped and the client
 * stays connected.
 *
 * Lifetime: a client is freed when its handle is closed and nothing refers
 * to it any more: a running command and each pending write hold a
 * reference (refs), so a client disconnecting mid-command is freed when
 * the command comes back from its worker.  Everything runs on the loop
 * thread; only qmp.c's worker functions run elsewhere, and they never
 * touch a client.
 */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include "control.h"

#define CTL_MAX_INPUT (1u << 20)    /* bytes of one request, at most */
#define CTL_READ_SIZE (64u * 1024)

struct ctl_client {
    uv_pipe_t pipe;
    uv_shutdown_t shut_req;
    json_tokener *tok;
    char *buf;                  /* input not parsed yet */
    size_t len, cap;
    size_t in_tok;              /* bytes of the request being parsed */
    bool skip_line;             /* after a parse error: drop to '\n' */
    bool negotiated;            /* qmp_capabilities accepted */
    bool busy;                  /* a command is running */
    bool parsing;               /* inside process_input */
    bool reading;
    bool ending;                /* server shutdown: run nothing more */
    bool eof;                   /* the client sent all it will send */
    bool closing;               /* the handle is closing or closed */
    unsigned refs;              /* handle, running command, writes */
    unsigned long long id;
    struct ctl_client *next, *prev;
};

struct ctl_write {
    uv_write_t req;
    struct ctl_client *client;
    char data[];
};

static uv_pipe_t listener;
static bool listening;
static struct ctl_client *clients;
static unsigned long long next_id;

static void process_input(struct ctl_client *cl);
static void client_end(struct ctl_client *cl);
static void on_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf);
static void on_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf);

/* ---- JSON out ------------------------------------------------------ */

struct sbuf {
    char *p;
    size_t len, cap;
    bool failed;
};

static void sb_put(struct sbuf *b, const char *s, size_t n)
{
    if (b->failed)
        return;
    if (b->len + n + 1 > b->cap) {
        size_t cap = b->cap ? b->cap : 256;
        while (b->len + n + 1 > cap)
            cap *= 2;
        char *p = realloc(b->p, cap);
        if (!p) {
            b->failed = true;
            return;
        }
        b->p = p;
        b->cap = cap;
    }
    memcpy(b->p + b->len, s, n);
    b->len += n;
    b->p[b->len] = '\0';
}

static void sb_str(struct sbuf *b, const char *s)
{
    sb_put(b, s, strlen(s));
}

static void sb_quoted(struct sbuf *b, const char *s, size_t n)
{
    sb_put(b, "\"", 1);
    for (size_t i = 0; i < n; i++) {
        unsigned char ch = (unsigned char)s[i];
        char esc[8];
        if (ch == '"' || ch == '\\') {
            esc[0] = '\\';
            esc[1] = (char)ch;
            sb_put(b, esc, 2);
        } else if (ch < 0x20 || ch == 0x7f) {
            snprintf(esc, sizeof esc, "\\u%04x", ch);
            sb_put(b, esc, 6);
        } else {
            sb_put(b, (const char *)&ch, 1);
        }
    }
    sb_put(b, "\"", 1);
}

static void sb_json(struct sbuf *b, json_object *v)
{
    char num[32];
    bool first = true;

    switch (json_object_get_type(v)) {
    case json_type_null:
        sb_str(b, "null");
        break;
    case json_type_boolean:
        sb_str(b, json_object_get_boolean(v) ? "true" : "false");
        break;
    case json_type_int:
        if (json_object_get_int64(v) == INT64_MAX &&
            json_object_get_uint64(v) > INT64_MAX)
            snprintf(num, sizeof num, "%llu",
                     (unsigned long long)json_object_get_uint64(v));
        else
            snprintf(num, sizeof num, "%lld",
                     (long long)json_object_get_int64(v));
        sb_str(b, num);
        break;
    case json_type_double:
        sb_str(b, json_object_to_json_string_ext(v, JSON_C_TO_STRING_PLAIN));
        break;
    case json_type_string:
        sb_quoted(b, json_object_get_string(v),
                  (size_t)json_object_get_string_len(v));
        break;
    case json_type_array:
        sb_str(b, "[");
        for (size_t i = 0; i < json_object_array_length(v); i++) {
            if (i)
                sb_str(b, ", ");
            sb_json(b, json_object_array_get_idx(v, i));
        }
        sb_str(b, "]");
        break;
    case json_type_object:
        sb_str(b, "{");
        json_object_object_foreach(v, key, val) {
            if (!first)
                sb_str(b, ", ");
            first = false;
            sb_quoted(b, key, strlen(key));
            sb_str(b, ": ");
            sb_json(b, val);
        }
        sb_str(b, "}");
        break;
    }
}

char *ctl_to_json(json_object *v)
{
    struct sbuf b = { NULL, 0, 0, false };
    sb_json(&b, v);
    if (b.failed) {
        free(b.p);
        return NULL;
    }
    return b.p;
}

/* ---- clients ------------------------------------------------------- */

static void client_put(struct ctl_client *cl)
{
    if (--cl->refs > 0)
        return;
    if (cl->prev)
        cl->prev->next = cl->next;
    else
        clients = cl->next;
    if (cl->next)
        cl->next->prev = cl->prev;
    json_tokener_free(cl->tok);
    free(cl->buf);
    srv_debug("control client %llu: closed", cl->id);
    free(cl);
}

static void start_reading(struct ctl_client *cl)
{
    if (cl->reading || cl->closing)
        return;
    if (uv_read_start((uv_stream_t *)&cl->pipe, on_alloc, on_read) == 0)
        cl->reading = true;
}

static void stop_reading(struct ctl_client *cl)
{
    if (cl->reading && !cl->closing)
        uv_read_stop((uv_stream_t *)&cl->pipe);
    cl->reading = false;
}

static void on_client_closed(uv_handle_t *h)
{
    client_put(h->data);
}

static void client_close(struct ctl_client *cl)
{
    if (cl->closing)
        return;
    cl->closing = true;
    cl->reading = false;
    uv_close((uv_handle_t *)&cl->pipe, on_client_closed);
}

static void on_written(uv_write_t *req, int status)
{
    struct ctl_write *w = (struct ctl_write *)req;
    struct ctl_client *cl = w->client;

    free(w);
    if (status < 0 && status != UV_ECANCELED)
        client_close(cl);
    client_put(cl);
}

/* Send one message (a line); a client that cannot take it is closed. */
static void send_message(struct ctl_client *cl, json_object *msg)
{
    if (cl->closing)
        return;
    char *s = ctl_to_json(msg);
    if (!s) {
        client_close(cl);
        return;
    }
    size_t len = strlen(s);
    struct ctl_write *w = malloc(sizeof *w + len + 1);
    if (!w) {
        free(s);
        client_close(cl);
        return;
    }
    memcpy(w->data, s, len);
    w->data[len] = '\n';
    free(s);
    uv_buf_t b = uv_buf_init(w->data, (unsigned)len + 1);
    int n = uv_try_write((uv_stream_t *)&cl->pipe, &b, 1);
    if (n == (int)len + 1) {
        free(w);
        return;
    }
    if (n < 0 && n != UV_EAGAIN) {
        free(w);
        client_close(cl);
        return;
    }
    if (n > 0) {
        b.base += n;
        b.len -= (size_t)n;
    }
    w->client = cl;
    if (uv_write(&w->req, (uv_stream_t *)&cl->pipe, &b, 1, on_written)) {
        free(w);
        client_close(cl);
        return;
    }
    cl->refs++;
}

/* {"error": {"class": cls, "desc": desc}, "id": id} */
static void send_error(struct ctl_client *cl, json_object *id,
                       const char *cls, const char *desc)
{
    json_object *msg = json_object_new_object();
    json_object *err = json_object_new_object();
    json_object_object_add(err, "class", json_object_new_string(cls));
    json_object_object_add(err, "desc", json_object_new_string(desc));
    json_object_object_add(msg, "error", err);
    if (id)
        json_object_object_add(msg, "id", json_object_get(id));
    send_message(cl, msg);
    json_object_put(msg);
}

static void send_return(struct ctl_client *cl, json_object *id,
                        json_object *ret)
{
    json_object *msg = json_object_new_object();
    json_object_object_add(msg, "return",
                           ret ? ret : json_object_new_object());
    if (id)
        json_object_object_add(msg, "id", json_object_get(id));
    send_message(cl, msg);
    json_object_put(msg);
}

json_object *ctl_version(void)
{
    json_object *ver = json_object_new_object();
    json_object *qemu = json_object_new_object();
    json_object_object_add(qemu, "micro", json_object_new_int(0));
    json_object_object_add(qemu, "minor", json_object_new_int(0));
    json_object_object_add(qemu, "major", json_object_new_int(8));
    json_object_object_add(ver, "qemu", qemu);
    json_object_object_add(ver, "package",
                           json_object_new_string("diskserve "
                                                  PACKAGE_VERSION));
    return ver;
}

static void send_greeting(struct ctl_client *cl)
{
    json_object *ver = ctl_version();
    json_object *qmp = json_object_new_object();
    json_object_object_add(qmp, "version", ver);
    json_object_object_add(qmp, "capabilities", json_object_new_array());
    json_object *msg = json_object_new_object();
    json_object_object_add(msg, "QMP", qmp);
    send_message(cl, msg);
    json_object_put(msg);
}

void ctl_cmd_error(struct ctl_cmd *cmd, const char *cls, const char *fmt,
                   ...)
{
    va_list ap;

    cmd->err_class = cls ? cls : "GenericError";
    va_start(ap, fmt);
    vsnprintf(cmd->err, sizeof cmd->err, fmt, ap);
    va_end(ap);
    json_object_put(cmd->ret);
    cmd->ret = NULL;
}

void ctl_cmd_finish(struct ctl_cmd *cmd)
{
    struct ctl_client *cl = cmd->client;

    if (cmd->err_class) {
        srv_debug("control client %llu: %s: %s", cl->id, cmd->name,
                  cmd->err);
        send_error(cl, cmd->id, cmd->err_class, cmd->err);
    } else {
        send_return(cl, cmd->id, cmd->ret);
        cmd->ret = NULL;
    }
    json_object_put(cmd->ret);
    if (cmd->free_priv)
        cmd->free_priv(cmd->priv);
    json_object_put(cmd->req);
    free(cmd);
    cl->busy = false;
    if (!cl->parsing)
        process_input(cl);
    client_put(cl);
}

/* ---- requests ------------------------------------------------------ */

static bool negotiate(struct ctl_client *cl, json_object *id,
                      json_object *args)
{
    json_object *en = NULL;

    if (args) {
        json_object_object_foreach(args, key, val) {
            (void)val;
            if (strcmp(key, "enable")) {
                char msg[128];
                snprintf(msg, sizeof msg, "Parameter '%.64s' is unexpected",
                         key);
                send_error(cl, id, "GenericError", msg);
                return false;
            }
        }
        json_object_object_get_ex(args, "enable", &en);
    }
    if (en && !json_object_is_type(en, json_type_array)) {
        send_error(cl, id, "GenericError",
                   "Invalid parameter type for 'enable', expected: array");
        return false;
    }
    if (en && json_object_array_length(en) > 0) {
        json_object *cap = json_object_array_get_idx(en, 0);
        char msg[160];
        snprintf(msg, sizeof msg, "Capability '%.64s' not available",
                 json_object_is_type(cap, json_type_string)
                 ? json_object_get_string(cap) : "?");
        send_error(cl, id, "GenericError", msg);
        return false;
    }
    cl->negotiated = true;
    send_return(cl, id, NULL);
    return true;
}

/* One parsed request (not a reference of ours). */
static void handle_request(struct ctl_client *cl, json_object *req)
{
    json_object *id = NULL, *exec = NULL, *args = NULL;
    char msg[160];

    if (!json_object_is_type(req, json_type_object)) {
        send_error(cl, NULL, "GenericError",
                   "QMP input must be a JSON object");
        return;
    }
    json_object_object_get_ex(req, "id", &id);
    json_object_object_foreach(req, key, val) {
        (void)val;
        if (strcmp(key, "execute") && strcmp(key, "arguments") &&
            strcmp(key, "id")) {
            snprintf(msg, sizeof msg, "QMP input member '%.64s' is "
                     "unexpected", key);
            send_error(cl, id, "GenericError", msg);
            return;
        }
    }
    if (!json_object_object_get_ex(req, "execute", &exec)) {
        send_error(cl, id, "GenericError",
                   "QMP input lacks member 'execute'");
        return;
    }
    if (!json_object_is_type(exec, json_type_string)) {
        send_error(cl, id, "GenericError",
                   "QMP input member 'execute' must be a string");
        return;
    }
    if (json_object_object_get_ex(req, "arguments", &args) &&
        !json_object_is_type(args, json_type_object)) {
        send_error(cl, id, "GenericError",
                   "QMP input member 'arguments' must be an object");
        return;
    }
    const char *name = json_object_get_string(exec);
    if (strlen(name) != (size_t)json_object_get_string_len(exec)) {
        send_error(cl, id, "CommandNotFound", "The command has not been "
                   "found");
        return;
    }
    bool is_caps = !strcmp(name, "qmp_capabilities");
    if (!cl->negotiated) {
        if (is_caps)
            negotiate(cl, id, args);
        else
            send_error(cl, id, "CommandNotFound", "Expecting capabilities "
                       "negotiation with 'qmp_capabilities'");
        return;
    }
    if (is_caps) {
        send_error(cl, id, "CommandNotFound", "Capabilities negotiation is "
                   "already complete, command ignored");
        return;
    }

    struct ctl_cmd *cmd = calloc(1, sizeof *cmd);
    if (!cmd) {
        send_error(cl, id, "GenericError", "Out of memory");
        return;
    }
    cmd->client = cl;
    cmd->req = json_object_get(req);
    cmd->id = id;
    cmd->name = name;
    cmd->args = args;
    cl->busy = true;
    cl->refs++;
    srv_debug("control client %llu: %s", cl->id, name);
    qmp_execute(cmd);
}

static void consume(struct ctl_client *cl, size_t n)
{
    memmove(cl->buf, cl->buf + n, cl->len - n);
    cl->len -= n;
}

static void drop_oversized(struct ctl_client *cl)
{
    srv_log("control client %llu: request longer than %u bytes, dropping",
            cl->id, CTL_MAX_INPUT);
    client_close(cl);
}

/* Parse buffered input into requests and run them, one at a time. */
static void process_input(struct ctl_client *cl)
{
    if (cl->closing || cl->ending)
        return;
    cl->parsing = true;
    while (!cl->busy && !cl->closing && !cl->ending && cl->len > 0) {
        if (cl->skip_line) {
            char *nl = memchr(cl->buf, '\n', cl->len);
            if (!nl) {
                cl->len = 0;
                break;
            }
            cl->skip_line = false;
            consume(cl, (size_t)(nl - cl->buf) + 1);
            continue;
        }
        int len = cl->len > CTL_MAX_INPUT ? (int)CTL_MAX_INPUT : (int)cl->len;
        json_object *req = json_tokener_parse_ex(cl->tok, cl->buf, len);
        enum json_tokener_error jerr = json_tokener_get_error(cl->tok);
        size_t end = json_tokener_get_parse_end(cl->tok);
        if (jerr == json_tokener_continue) {
            cl->in_tok += (size_t)len;
            consume(cl, (size_t)len);
            if (cl->in_tok > CTL_MAX_INPUT)
                drop_oversized(cl);
            continue;
        }
        json_tokener_reset(cl->tok);
        cl->in_tok = 0;
        if (end > (size_t)len)
            end = (size_t)len;
        if (jerr != json_tokener_success) {
            char msg[160];
            snprintf(msg, sizeof msg, "JSON parse error, %s",
                     json_tokener_error_desc(jerr));
            send_error(cl, NULL, "GenericError", msg);
            consume(cl, end);
            cl->skip_line = true;
            continue;
        }
        consume(cl, end);
        handle_request(cl, req);
        json_object_put(req);
    }
    cl->parsing = false;
    if (cl->closing || cl->ending)
        return;
    if (cl->eof) {
        if (!cl->busy)
            client_end(cl);
        return;
    }
    /* Read on only while idle: a busy client's input waits in the
     * socket. */
    if (cl->busy)
        stop_reading(cl);
    else
        start_reading(cl);
}

static void on_client_shutdown(uv_shutdown_t *req, int status)
{
    (void)status;
    client_close(req->data);
}

/* End a client gracefully: the answers queued go out first. */
static void client_end(struct ctl_client *cl)
{
    if (cl->closing || cl->ending)
        return;
    stop_reading(cl);
    cl->ending = true;
    cl->shut_req.data = cl;
    if (uv_shutdown(&cl->shut_req, (uv_stream_t *)&cl->pipe,
                    on_client_shutdown))
        client_close(cl);
}

static void on_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf)
{
    struct ctl_client *cl = h->data;
    (void)suggested;

    if (cl->cap - cl->len < CTL_READ_SIZE) {
        size_t cap = cl->len + CTL_READ_SIZE;
        char *p = realloc(cl->buf, cap);
        if (!p) {
            *buf = uv_buf_init(NULL, 0);
            return;
        }
        cl->buf = p;
        cl->cap = cap;
    }
    *buf = uv_buf_init(cl->buf + cl->len, (unsigned)(cl->cap - cl->len));
}

static void on_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf)
{
    struct ctl_client *cl = s->data;
    (void)buf;

    if (nread == UV_EOF) {
        /* Answer what it sent (`echo ... | socat`), then end. */
        stop_reading(cl);
        cl->eof = true;
        process_input(cl);
        return;
    }
    if (nread < 0) {
        srv_debug("control client %llu: read: %s", cl->id,
                  uv_strerror((int)nread));
        client_close(cl);
        return;
    }
    cl->len += (size_t)nread;
    if (cl->len + cl->in_tok > CTL_MAX_INPUT + CTL_READ_SIZE) {
        drop_oversized(cl);
        return;
    }
    process_input(cl);
}


static void on_connection(uv_stream_t *server, int status)
{
    if (status < 0)
        return;
    struct ctl_client *cl = calloc(1, sizeof *cl);
    if (!cl)
        return;
    cl->tok = json_tokener_new();
    if (!cl->tok) {
        free(cl);
        return;
    }
    json_tokener_set_flags(cl->tok, JSON_TOKENER_STRICT |
                                    JSON_TOKENER_ALLOW_TRAILING_CHARS);
    uv_pipe_init(srv.loop, &cl->pipe, 0);
    cl->pipe.data = cl;
    cl->refs = 1;
    cl->id = ++next_id;
    cl->next = clients;
    if (clients)
        clients->prev = cl;
    clients = cl;
    if (uv_accept(server, (uv_stream_t *)&cl->pipe)) {
        client_close(cl);
        return;
    }
    srv_debug("control client %llu: connected", cl->id);
    send_greeting(cl);
    if (!cl->closing)
        start_reading(cl);
}

/* ---- the socket ---------------------------------------------------- */

int ctl_listen_fd(const char *path)
{
    struct sockaddr_un sun = { .sun_family = AF_UNIX };

    if (strlen(path) >= sizeof sun.sun_path) {
        fprintf(stderr, "diskserve: control socket path too long: %s\n",
                path);
        exit(1);
    }
    if (srv_unlink_stale(path))
        exit(1);
    memcpy(sun.sun_path, path, strlen(path));
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        fprintf(stderr, "diskserve: %s: %s\n", path, strerror(errno));
        exit(1);
    }
    /* Created 0600 from the start: no moment where others could
     * connect. */
    mode_t old = umask(0177);
    int r = bind(fd, (struct sockaddr *)&sun, sizeof sun);
    int err = errno;
    umask(old);
    if (r < 0 || listen(fd, 16) < 0) {
        fprintf(stderr, "diskserve: %s: %s\n", path,
                strerror(r < 0 ? err : errno));
        exit(1);
    }
    return fd;
}

int ctl_start(uv_loop_t *loop, int fd)
{
    int err = uv_pipe_init(loop, &listener, 0);
    if (!err)
        err = uv_pipe_open(&listener, fd);
    if (!err)
        err = uv_listen((uv_stream_t *)&listener, 16, on_connection);
    if (err) {
        srv_log("control socket: %s", uv_strerror(err));
        return err;
    }
    listening = true;
    return 0;
}

void ctl_close(void)
{
    if (listening) {
        listening = false;
        uv_close((uv_handle_t *)&listener, NULL);
        if (srv.opts.control_path)
            unlink(srv.opts.control_path);
    }
    /* Answers already queued (quit's) go out before each client ends. */
    for (struct ctl_client *cl = clients; cl; cl = cl->next)
        client_end(cl);
}
