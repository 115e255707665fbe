/* NBD over TLS: GnuTLS sessions driven by the event loop.
 *
 * GnuTLS never touches the socket.  Its pull function takes ciphertext
 * from the connection's input buffer, which libuv filled (tls_alloc,
 * tls_received); its push function appends ciphertext to an output
 * buffer that tls_flush() hands to libuv: tried at once, and what the
 * socket cannot take leaves with uv_write, the buffer going along with
 * it.  A pull with nothing buffered answers EAGAIN, so a handshake or a
 * record that is not complete yet returns GNUTLS_E_AGAIN and resumes
 * when more bytes arrive: the handshake is a connection state
 * (CONN_TLS_HANDSHAKE), not a blocking call.  Replies batched in one loop
 * iteration are corked into full-size records and leave in one write.
 *
 * Ciphertext waiting in libuv counts against the connection's and the
 * process's buffer budget like request buffers do, so a client that
 * does not read its replies stops being read (conn.c, must_pause).
 *
 * Credentials (certificates, PSK file, priorities) are one refcounted
 * set: SIGHUP loads a new set for new sessions, and live sessions keep
 * the set they started with until they end.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <gnutls/gnutls.h>
#include <gnutls/x509.h>

#include "server.h"
#include "tls.h"

/* TLS 1.3 and 1.2 only; PSK only with (EC)DHE, for forward secrecy. */
#define TLS_DEFAULT_PRIORITY \
    "NORMAL:-VERS-ALL:+VERS-TLS1.3:+VERS-TLS1.2:+ECDHE-PSK:+DHE-PSK"
#define TLS_IN_MIN (20u * 1024)     /* one full record and its overhead */
#define TLS_IN_MAX (256u * 1024)
#define TLS_OUT_MIN (20u * 1024)
#define TLS_OUT_KEEP (64u * 1024)
#define TLS_FLUSH_AT (256u * 1024)  /* ciphertext written as it grows */
#define TLS_BACKLOG_MAX (512u * 1024)   /* more replies wait below this */
#define TLS_RECORD 16384u           /* the largest record's plaintext */
#define TLS_RECORD_OVERHEAD 64u     /* header, tag, padding: at most */

struct tls_creds {
    unsigned refs;
    gnutls_certificate_credentials_t x509;  /* NULL: no certificates */
    gnutls_psk_server_credentials_t psk;    /* NULL: no PSK file */
    gnutls_priority_t prio;
};

struct tls_sess {
    gnutls_session_t s;
    struct tls_creds *creds;
    struct conn *conn;
    bool up;                /* handshake finished */
    char *peer_dn;          /* verified client certificate's subject */
    char *psk_user;
    /* ciphertext in: filled by libuv, drained by pull */
    uint8_t *in;
    size_t in_cap, in_pos, in_len;
    /* ciphertext out: filled by push, handed to libuv by tls_flush */
    uint8_t *out;
    size_t out_cap, out_len;
    size_t backlog;         /* bytes in uv_writes not completed */
};

struct tls_write {
    uv_write_t req;
    struct conn *conn;
    uint8_t *data;          /* owned: freed when the write completes */
    size_t len;
};

static const struct srv_options *opts;
static struct tls_creds *current;

/* ---- credentials -------------------------------------------------- */

static void creds_put(struct tls_creds *cr)
{
    if (!cr || --cr->refs > 0)
        return;
    if (cr->x509)
        gnutls_certificate_free_credentials(cr->x509);
    if (cr->psk)
        gnutls_psk_free_server_credentials(cr->psk);
    if (cr->prio)
        gnutls_priority_deinit(cr->prio);
    free(cr);
}

/* Runs inside the handshake when a client certificate arrives: with
 * --tls-verify-peer it must chain to our CA and be in its validity
 * period, or the handshake fails with an alert. */
static int verify_peer(gnutls_session_t s)
{
    struct conn *c = gnutls_session_get_ptr(s);
    unsigned status = 0;
    gnutls_datum_t why;

    if (!opts->tls_verify_peer)
        return 0;
    int r = gnutls_certificate_verify_peers2(s, &status);
    if (r < 0) {
        srv_log("client %llu: TLS: client certificate: %s",
                (unsigned long long)c->id, gnutls_strerror(r));
        return -1;
    }
    if (status == 0)
        return 0;
    if (gnutls_certificate_verification_status_print(
            status, GNUTLS_CRT_X509, &why, 0) == 0) {
        srv_log("client %llu: TLS: client certificate refused: %s",
                (unsigned long long)c->id, why.data);
        gnutls_free(why.data);
    }
    return -1;
}

static int load_x509(struct tls_creds *cr, const char *dir)
{
    char ca[4096], cert[4096], key[4096], crl[4096];
    int r;

    snprintf(ca, sizeof ca, "%s/ca-cert.pem", dir);
    snprintf(cert, sizeof cert, "%s/server-cert.pem", dir);
    snprintf(key, sizeof key, "%s/server-key.pem", dir);
    snprintf(crl, sizeof crl, "%s/ca-crl.pem", dir);
    r = gnutls_certificate_allocate_credentials(&cr->x509);
    if (r < 0)
        goto out_gnutls;
    r = gnutls_certificate_set_x509_key_file(cr->x509, cert, key,
                                             GNUTLS_X509_FMT_PEM);
    if (r < 0) {
        srv_log("TLS: %s, %s: %s", cert, key, gnutls_strerror(r));
        return -EINVAL;
    }
    if (access(ca, R_OK) == 0 || opts->tls_verify_peer) {
        r = gnutls_certificate_set_x509_trust_file(cr->x509, ca,
                                                   GNUTLS_X509_FMT_PEM);
        if (r <= 0) {
            srv_log("TLS: %s: %s", ca, r < 0 ? gnutls_strerror(r)
                                             : "no certificate");
            return -EINVAL;
        }
    }
    if (access(crl, R_OK) == 0) {
        r = gnutls_certificate_set_x509_crl_file(cr->x509, crl,
                                                 GNUTLS_X509_FMT_PEM);
        if (r < 0) {
            srv_log("TLS: %s: %s", crl, gnutls_strerror(r));
            return -EINVAL;
        }
    }
    gnutls_certificate_set_known_dh_params(cr->x509,
                                           GNUTLS_SEC_PARAM_MEDIUM);
    gnutls_certificate_set_verify_function(cr->x509, verify_peer);
    return 0;

out_gnutls:
    srv_log("TLS: %s", gnutls_strerror(r));
    return -ENOMEM;
}

static int load_psk(struct tls_creds *cr, const char *path)
{
    /* GnuTLS looks a username up in the file at each handshake; read
     * it once here so a missing file is an error at startup. */
    FILE *f = fopen(path, "r");
    if (!f) {
        srv_log("TLS: %s: %s", path, strerror(errno));
        return -errno;
    }
    fclose(f);
    int r = gnutls_psk_allocate_server_credentials(&cr->psk);
    if (r == 0)
        r = gnutls_psk_set_server_credentials_file(cr->psk, path);
    if (r < 0) {
        srv_log("TLS: %s: %s", path, gnutls_strerror(r));
        return -EINVAL;
    }
    gnutls_psk_set_server_known_dh_params(cr->psk, GNUTLS_SEC_PARAM_MEDIUM);
    return 0;
}

static struct tls_creds *creds_load(void)
{
    struct tls_creds *cr = calloc(1, sizeof *cr);
    const char *prio = opts->tls_priority ? opts->tls_priority
                                          : TLS_DEFAULT_PRIORITY;
    const char *bad = NULL;

    if (!cr)
        return NULL;
    cr->refs = 1;
    if (opts->tls_certificates && load_x509(cr, opts->tls_certificates))
        goto out_put;
    if (opts->tls_psk && load_psk(cr, opts->tls_psk))
        goto out_put;
    int r = gnutls_priority_init(&cr->prio, prio, &bad);
    if (r < 0) {
        srv_log("TLS: priority string '%.128s': %s at '%.32s'", prio,
                gnutls_strerror(r), bad ? bad : "");
        cr->prio = NULL;
        goto out_put;
    }
    return cr;

out_put:
    creds_put(cr);
    return NULL;
}

int tls_init(const struct srv_options *o)
{
    opts = o;
    if (o->tls == SRV_TLS_OFF)
        return 0;
    if (!o->tls_certificates && !o->tls_psk) {
        srv_log("TLS: --tls needs --tls-certificates or --tls-psk");
        return -EINVAL;
    }
    int r = gnutls_global_init();
    if (r < 0) {
        srv_log("TLS: %s", gnutls_strerror(r));
        return -EIO;
    }
    current = creds_load();
    return current ? 0 : -EINVAL;
}

void tls_reload(void)
{
    if (!current)
        return;
    struct tls_creds *cr = creds_load();
    if (!cr) {
        srv_log("TLS: reload failed, keeping the credentials in use");
        return;
    }
    creds_put(current);
    current = cr;
    srv_log("TLS: credentials reloaded");
}

void tls_exit(void)
{
    if (!current)
        return;
    creds_put(current);
    current = NULL;
    gnutls_global_deinit();
}

/* ---- transport ---------------------------------------------------- */

/* Room for len more bytes of ciphertext; 0 or -ENOMEM. */
static int out_reserve(struct tls_sess *t, size_t len)
{
    if (t->out_cap - t->out_len >= len)
        return 0;
    size_t cap = t->out_cap ? t->out_cap : TLS_OUT_MIN;
    while (cap - t->out_len < len)
        cap *= 2;
    uint8_t *b = realloc(t->out, cap);
    if (!b)
        return -ENOMEM;
    t->out = b;
    t->out_cap = cap;
    return 0;
}

static ssize_t tls_push(gnutls_transport_ptr_t p, const void *data,
                        size_t len)
{
    struct tls_sess *t = p;

    if (out_reserve(t, len) < 0) {
        gnutls_transport_set_errno(t->s, ENOMEM);
        return -1;
    }
    memcpy(t->out + t->out_len, data, len);
    t->out_len += len;
    return (ssize_t)len;
}

static ssize_t tls_pull(gnutls_transport_ptr_t p, void *data, size_t len)
{
    struct tls_sess *t = p;

    if (t->in_len == 0) {
        gnutls_transport_set_errno(t->s, EAGAIN);
        return -1;
    }
    size_t n = len < t->in_len ? len : t->in_len;
    memcpy(data, t->in + t->in_pos, n);
    t->in_pos += n;
    t->in_len -= n;
    return (ssize_t)n;
}

static int tls_pull_timeout(gnutls_transport_ptr_t p, unsigned ms)
{
    struct tls_sess *t = p;
    (void)ms;
    return t->in_len > 0 ? 1 : 0;
}

static void on_tls_written(uv_write_t *w, int status)
{
    struct tls_write *tw = (struct tls_write *)w;
    struct conn *c = tw->conn;

    c->tls->backlog -= tw->len;
    c->buf_used -= tw->len;
    srv.buf_used -= tw->len;
    free(tw->data);
    free(tw);
    if (status == UV_ECANCELED)
        return;
    if (status < 0) {
        conn_close(c);
        return;
    }
    if (tls_can_send(c))
        reply_kick(c);
    conn_request_done(c);
    if (srv.buf_used < srv.opts.buffer_budget)
        conn_resume_paused();
}

/* Write the ciphertext push collected: as much as the socket takes now,
 * the rest through uv_write, which takes the buffer over. */
static int tls_flush(struct conn *c)
{
    struct tls_sess *t = c->tls;

    if (t->out_len == 0)
        return 0;
    if (c->state == CONN_CLOSING) {
        t->out_len = 0;
        return -EPIPE;
    }
    uv_buf_t b = uv_buf_init((char *)t->out, (unsigned)t->out_len);
    int n = uv_try_write(c->out, &b, 1);
    if (n == (int)t->out_len) {
        t->out_len = 0;
        if (t->out_cap > TLS_OUT_KEEP) {
            /* An idle connection keeps no big buffer. */
            free(t->out);
            t->out = NULL;
            t->out_cap = 0;
        }
        return 0;
    }
    if (n < 0 && n != UV_EAGAIN)
        return n;
    size_t done = n > 0 ? (size_t)n : 0;
    struct tls_write *tw = malloc(sizeof *tw);
    if (!tw)
        return -ENOMEM;
    tw->conn = c;
    tw->data = t->out;
    tw->len = t->out_len - done;
    b = uv_buf_init((char *)t->out + done, (unsigned)tw->len);
    t->out = NULL;
    t->out_cap = t->out_len = 0;
    int err = uv_write(&tw->req, c->out, &b, 1, on_tls_written);
    if (err) {
        free(tw->data);
        free(tw);
        return err;
    }
    t->backlog += tw->len;
    c->buf_used += tw->len;
    srv.buf_used += tw->len;
    return 0;
}

/* ---- sessions ----------------------------------------------------- */

static bool in_list(char *const *list, const char *s)
{
    for (; list && *list; list++)
        if (!strcmp(*list, s))
            return true;
    return false;
}

/* Who the client proved to be: its PSK username, or the subject of the
 * certificate verify_peer() accepted, written as certtool -i prints it
 * ("CN=name,O=org"), which is how allow-lists name clients. */
static void note_identity(struct conn *c)
{
    struct tls_sess *t = c->tls;
    gnutls_credentials_type_t kind = gnutls_auth_get_type(t->s);

    if (kind == GNUTLS_CRD_PSK) {
        const char *u = gnutls_psk_server_get_username(t->s);
        if (u)
            t->psk_user = strdup(u);
        return;
    }
    unsigned n = 0;
    const gnutls_datum_t *certs = gnutls_certificate_get_peers(t->s, &n);
    if (kind != GNUTLS_CRD_CERTIFICATE || !opts->tls_verify_peer ||
        !certs || n == 0)
        return;
    gnutls_x509_crt_t crt;
    gnutls_datum_t dn;
    if (gnutls_x509_crt_init(&crt) < 0)
        return;
    if (gnutls_x509_crt_import(crt, &certs[0], GNUTLS_X509_FMT_DER) == 0 &&
        gnutls_x509_crt_get_dn3(crt, &dn, 0) == 0) {
        t->peer_dn = strdup((const char *)dn.data);
        gnutls_free(dn.data);
    }
    gnutls_x509_crt_deinit(crt);
}

/* One step of the handshake: 0 when it needs more input, 1 when it is
 * done (c back in the option phase), -EPROTO when it failed. */
static int handshake_step(struct conn *c)
{
    struct tls_sess *t = c->tls;
    int r;

    do {
        r = gnutls_handshake(t->s);
    } while (r < 0 && !gnutls_error_is_fatal(r) && r != GNUTLS_E_AGAIN);
    int err = tls_flush(c);
    if (err && err != -EPIPE)
        srv_debug("client %llu: TLS write: %s", (unsigned long long)c->id,
                  err < 0 ? strerror(-err) : "?");
    if (r == GNUTLS_E_AGAIN)
        return err ? -EPROTO : 0;
    if (r < 0) {
        srv_log("client %llu: TLS handshake failed: %s",
                (unsigned long long)c->id, gnutls_strerror(r));
        return -EPROTO;
    }
    if (err)
        return -EPROTO;
    t->up = true;
    note_identity(c);
    c->state = CONN_OPT_HEADER;
    srv_debug("client %llu: %s %s%s%s", (unsigned long long)c->id,
              gnutls_protocol_get_name(gnutls_protocol_get_version(t->s)),
              t->psk_user ? "PSK user " : t->peer_dn ? "client " :
                                                       "anonymous client",
              t->psk_user ? t->psk_user : "",
              t->peer_dn ? t->peer_dn : "");
    return 1;
}

int tls_start(struct conn *c)
{
    struct tls_creds *cr = current;
    struct tls_sess *t = calloc(1, sizeof *t);
    int r;

    if (!t || !cr) {
        free(t);
        return -ENOMEM;
    }
    t->in = malloc(TLS_IN_MIN);
    if (!t->in)
        goto out_free;
    t->in_cap = TLS_IN_MIN;
    r = gnutls_init(&t->s, GNUTLS_SERVER | GNUTLS_NONBLOCK);
    if (r < 0) {
        t->s = NULL;
        goto out_free;
    }
    t->conn = c;
    t->creds = cr;
    cr->refs++;
    c->tls = t;
    gnutls_session_set_ptr(t->s, c);
    r = gnutls_priority_set(t->s, cr->prio);
    if (r == 0 && cr->x509)
        r = gnutls_credentials_set(t->s, GNUTLS_CRD_CERTIFICATE, cr->x509);
    if (r == 0 && cr->psk)
        r = gnutls_credentials_set(t->s, GNUTLS_CRD_PSK, cr->psk);
    if (r < 0) {
        srv_log("client %llu: TLS: %s", (unsigned long long)c->id,
                gnutls_strerror(r));
        return -EPROTO;     /* conn_free frees the session */
    }
    gnutls_certificate_server_set_request(
        t->s, opts->tls_verify_peer ? GNUTLS_CERT_REQUIRE
                                    : GNUTLS_CERT_IGNORE);
    gnutls_handshake_set_timeout(t->s, 0);  /* conn.c's timer rules */
    gnutls_transport_set_ptr(t->s, t);
    gnutls_transport_set_push_function(t->s, tls_push);
    gnutls_transport_set_pull_function(t->s, tls_pull);
    gnutls_transport_set_pull_timeout_function(t->s, tls_pull_timeout);

    /* A client that sent its hello without waiting for our ACK. */
    size_t left = c->ibuf_len < t->in_cap ? c->ibuf_len : t->in_cap;
    memcpy(t->in, conn_in_data(c), left);
    t->in_len = left;
    conn_consume(c, c->ibuf_len);
    c->state = CONN_TLS_HANDSHAKE;
    if (t->in_len > 0 && handshake_step(c) < 0)
        return -EPROTO;
    return 0;

out_free:
    free(t->in);
    free(t);
    return -ENOMEM;
}

void tls_free(struct conn *c)
{
    struct tls_sess *t = c->tls;

    if (!t)
        return;
    if (t->s)
        gnutls_deinit(t->s);
    creds_put(t->creds);
    free(t->peer_dn);
    free(t->psk_user);
    free(t->in);
    free(t->out);
    free(t);
    c->tls = NULL;
}

void tls_alloc(struct conn *c, uv_buf_t *buf)
{
    struct tls_sess *t = c->tls;

    if (t->in_len == 0)
        t->in_pos = 0;
    else if (t->in_pos > 0) {
        memmove(t->in, t->in + t->in_pos, t->in_len);
        t->in_pos = 0;
    }
    if (t->in_len == t->in_cap && t->in_cap < TLS_IN_MAX) {
        uint8_t *b = realloc(t->in, TLS_IN_MAX);
        if (b) {
            t->in = b;
            t->in_cap = TLS_IN_MAX;
        }
    }
    buf->base = (char *)t->in + t->in_len;
    buf->len = t->in_cap - t->in_len;
}

int tls_received(struct conn *c, size_t n)
{
    struct tls_sess *t = c->tls;

    t->in_len += n;
    if (t->in_len == t->in_cap && t->in_cap < TLS_IN_MAX) {
        /* A busy client: room for many records per read. */
        uint8_t *b = realloc(t->in, TLS_IN_MAX);
        if (b) {
            t->in = b;
            t->in_cap = TLS_IN_MAX;
        }
    }
    if (c->state != CONN_TLS_HANDSHAKE)
        return 0;
    return handshake_step(c) < 0 ? -EPROTO : 0;
}

ssize_t tls_recv(struct conn *c, void *buf, size_t len)
{
    struct tls_sess *t = c->tls;

    if (!t->up)
        return 0;
    if (t->in_len == 0 && gnutls_record_check_pending(t->s) == 0)
        return 0;
    for (;;) {
        ssize_t r = gnutls_record_recv(t->s, buf, len);
        /* A TLS 1.3 key update is answered from inside the receive. */
        if (t->out_len > 0 && tls_flush(c) < 0)
            return -EPROTO;
        if (r > 0)
            return r;
        if (r == 0)
            return -EPIPE;
        if (r == GNUTLS_E_AGAIN)
            return 0;
        if (r == GNUTLS_E_INTERRUPTED || !gnutls_error_is_fatal((int)r))
            continue;
        srv_log("client %llu: TLS: %s", (unsigned long long)c->id,
                gnutls_strerror((int)r));
        return -EPROTO;
    }
}

static int send_failed(struct conn *c, int r)
{
    srv_log("client %llu: TLS: %s", (unsigned long long)c->id,
            gnutls_strerror(r));
    return -EPROTO;
}

/* Small buffers (headers, small reads) are corked together into full
 * records; big ones are encrypted straight from where they are, without
 * a copy into the cork buffer first.  The ciphertext buffer is sized
 * once for the whole batch. */
int tls_send_iov(struct conn *c, const uv_buf_t *iov, unsigned n)
{
    struct tls_sess *t = c->tls;
    bool corked = false;
    size_t total = 0;

    if (c->state == CONN_CLOSING || !t->up)
        return -EPIPE;
    for (unsigned i = 0; i < n; i++)
        total += iov[i].len;
    if (total > TLS_FLUSH_AT)
        total = TLS_FLUSH_AT;
    if (out_reserve(t, total + (total / TLS_RECORD + n + 1) *
                           TLS_RECORD_OVERHEAD) < 0)
        return -ENOMEM;
    for (unsigned i = 0; i < n; i++) {
        const char *p = iov[i].base;
        size_t left = iov[i].len;
        bool big = left >= TLS_RECORD;
        if (big && corked) {
            int r = gnutls_record_uncork(t->s, GNUTLS_RECORD_WAIT);
            if (r < 0)
                return send_failed(c, r);
            corked = false;
        } else if (!big && !corked) {
            gnutls_record_cork(t->s);
            corked = true;
        }
        while (left > 0) {
            ssize_t r = gnutls_record_send(t->s, p, left);
            if (r < 0)
                return send_failed(c, (int)r);
            p += r;
            left -= (size_t)r;
            /* The client decrypts the first records while we encrypt
             * the rest. */
            if (!corked && t->out_len >= TLS_FLUSH_AT) {
                int err = tls_flush(c);
                if (err)
                    return err;
            }
        }
    }
    if (corked) {
        int r = gnutls_record_uncork(t->s, GNUTLS_RECORD_WAIT);
        if (r < 0)
            return send_failed(c, r);
    }
    return tls_flush(c);
}

int tls_send(struct conn *c, const void *data, size_t len)
{
    uv_buf_t b = uv_buf_init((char *)data, (unsigned)len);
    return tls_send_iov(c, &b, 1);
}

bool tls_can_send(const struct conn *c)
{
    return c->tls->backlog < TLS_BACKLOG_MAX;
}

size_t tls_backlog(const struct conn *c)
{
    return c->tls ? c->tls->backlog : 0;
}

void tls_bye(struct conn *c)
{
    struct tls_sess *t = c->tls;

    if (!t || !t->up || c->state == CONN_CLOSING)
        return;
    gnutls_bye(t->s, GNUTLS_SHUT_WR);
    tls_flush(c);
}

bool tls_is_up(const struct conn *c)
{
    return c->tls && c->tls->up;
}

uint32_t tls_export_refusal(const struct conn *c, const struct export *e)
{
    bool limited = e->tls_dns || e->tls_psk_users;

    if (!tls_is_up(c))
        return srv.opts.tls == SRV_TLS_REQUIRE || e->tls_only || limited
                   ? PROTO_REP_ERR_TLS_REQD : 0;
    if (!limited)
        return 0;
    if (c->tls->peer_dn && in_list(e->tls_dns, c->tls->peer_dn))
        return 0;
    if (c->tls->psk_user && in_list(e->tls_psk_users, c->tls->psk_user))
        return 0;
    return PROTO_REP_ERR_POLICY;
}

char **tls_read_list(const char *path)
{
    FILE *f = fopen(path, "r");
    char line[1024];
    char **list = NULL;
    size_t n = 0;

    if (!f)
        return NULL;
    while (fgets(line, sizeof line, f)) {
        size_t len = strcspn(line, "\r\n");
        line[len] = '\0';
        while (len > 0 && (line[len - 1] == ' ' || line[len - 1] == '\t'))
            line[--len] = '\0';
        char *s = line + strspn(line, " \t");
        if (*s == '\0' || *s == '#')
            continue;
        char **l = realloc(list, (n + 2) * sizeof *l);
        if (!l || !(l[n] = strdup(s))) {
            list = l ? l : list;
            goto out_free;
        }
        list = l;
        list[++n] = NULL;
    }
    fclose(f);
    if (!list) {
        list = calloc(1, sizeof *list);     /* empty: nobody allowed */
        if (!list)
            errno = ENOMEM;
    }
    return list;

out_free:
    fclose(f);
    for (size_t i = 0; list && i < n; i++)
        free(list[i]);
    free(list);
    errno = ENOMEM;
    return NULL;
}
