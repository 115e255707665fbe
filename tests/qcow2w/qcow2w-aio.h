/* Shared parts of the qcow2 write-path clients: several libnbd
 * connections driven from one thread by one poll loop, a seeded random
 * generator, and whole-file helpers for the raw images the shell tests
 * compare against.
 *
 * The clients never block in libnbd: every request is an aio_* call, and
 * qw_poll() moves all connections forward at once, so requests on
 * different connections are really in flight together.  Completion
 * callbacks run inside qw_poll() and must not call libnbd.
 */
#ifndef DISKSERVE_TESTS_QCOW2W_AIO_H
#define DISKSERVE_TESTS_QCOW2W_AIO_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <libnbd.h>

#define QW_SECTOR 512

struct qw_conn {
    struct nbd_handle *h;
    unsigned inflight;          /* requests issued and not completed */
};

/* Print "FAIL: ..." and exit 1. */
void qw_die(const char *fmt, ...)
    __attribute__((format(printf, 1, 2), noreturn));

/* Connect n handles to uri; each must see the same export size, which is
 * returned. */
uint64_t qw_connect_all(struct qw_conn *c, unsigned n, const char *uri);

/* Wait until at least one connection makes progress and let every ready
 * one read or write.  Dies when a connection breaks or nothing moves for
 * a minute. */
void qw_poll(struct qw_conn *c, unsigned n);

/* Wait until no request is in flight on any connection. */
void qw_drain(struct qw_conn *c, unsigned n);

/* Shut every connection down cleanly and close it. */
void qw_close_all(struct qw_conn *c, unsigned n);

/* splitmix64: the next number of the sequence in *state. */
uint64_t qw_rand(uint64_t *state);

/* A number in [0, n), n > 0. */
uint64_t qw_below(uint64_t *state, uint64_t n);

/* Fill buf with len bytes from a generator seeded with key. */
void qw_fill(uint8_t *buf, size_t len, uint64_t key);

/* Read exactly size bytes of path into buf, or die. */
void qw_load(const char *path, uint8_t *buf, uint64_t size);

/* Write size bytes of buf to path (created or truncated), or die. */
void qw_save(const char *path, const uint8_t *buf, uint64_t size);

/* Parse a size such as 4096, 64k or 1M, or die naming what. */
uint64_t qw_parse_size(const char *what, const char *text);

/* Seconds since an arbitrary fixed point. */
double qw_now(void);

#endif
