/* NBD over TLS (STARTTLS) with GnuTLS, inside the event loop: see tls.c.
 *
 * Only the loop thread calls these.  A connection's TLS session is
 * created by tls_start() and freed by tls_free(); between them every byte
 * conn.c reads goes through tls_alloc()/tls_received() and every byte
 * it writes through tls_send()/tls_send_iov().
 */
#ifndef DISKSERVE_TLS_H
#define DISKSERVE_TLS_H

#include <stdbool.h>
#include <stddef.h>
#include <sys/types.h>
#include <uv.h>

#include "server.h"

/* Load the certificates and PSK file the options name, and the
 * priority string; 0 or -errno with a message logged.  Nothing to do
 * with --tls=off. */
int tls_init(const struct srv_options *o);
/* SIGHUP: load them again for new connections; live ones keep theirs.
 * On failure the old ones stay in use and the cause is logged. */
void tls_reload(void);
void tls_exit(void);
/* STARTTLS was acknowledged: the client's next bytes are a TLS
 * handshake.  Moves input already buffered into the session.  0 or a
 * negative errno (the connection is then to be dropped). */
int tls_start(struct conn *c);
/* Free c's session (conn_free). */
void tls_free(struct conn *c);
/* Where libuv is to put ciphertext for c. */
void tls_alloc(struct conn *c, uv_buf_t *buf);
/* n ciphertext bytes arrived where tls_alloc said; runs the handshake
 * while c is in CONN_TLS_HANDSHAKE.  0, or -EPROTO to drop c. */
int tls_received(struct conn *c, size_t n);
/* Plaintext into buf: the byte count, 0 when none is available yet,
 * -EPIPE when the client ended the TLS session, -EPROTO on a bad
 * record. */
ssize_t tls_recv(struct conn *c, void *buf, size_t len);
/* Encrypt and write (data is copied).  0 or a negative errno. */
int tls_send(struct conn *c, const void *data, size_t len);
/* The same for a batch of buffers, gathered into full-size records and
 * one write. */
int tls_send_iov(struct conn *c, const uv_buf_t *iov, unsigned n);
/* False while so much ciphertext waits for the socket that more
 * replies should wait (reply.c); reply_kick() says when it drained. */
bool tls_can_send(const struct conn *c);
/* Ciphertext handed to libuv and not yet written. */
size_t tls_backlog(const struct conn *c);
/* Send close_notify before the sending side is shut down. */
void tls_bye(struct conn *c);
/* True once the TLS handshake of c has finished. */
bool tls_is_up(const struct conn *c);
/* 0 when c may use export e, else the option error to answer with
 * (NBD_REP_ERR_TLS_REQD or NBD_REP_ERR_POLICY). */
uint32_t tls_export_refusal(const struct conn *c, const struct export *e);
/* Read an allow-list file: one entry a line, blank lines and lines
 * starting with # ignored.  A NULL-terminated array, or NULL with errno. */
char **tls_read_list(const char *path);

#endif /* DISKSERVE_TLS_H */
