/* Shared helpers for the integration tests: a scratch directory, starting
 * and stopping a live diskserve on a Unix socket or on TCP, connecting
 * libnbd handles to it, seeded patterns, and failure reporting that
 * prints the server's log and leaves no server behind.
 *
 * Every helper that can fail ends the test through ds_fail(): a test is
 * a straight line of steps, and the first broken step is the report.
 */
#ifndef DISKSERVE_TESTS_HARNESS_H
#define DISKSERVE_TESTS_HARNESS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include <libnbd.h>

#define KiB 1024ULL
#define MiB (1024ULL * 1024)

enum ds_transport {
    DS_UNIX,
    DS_TCP,
};
#define DS_NR_TRANSPORTS 2

/* One running server.  The log holds its stdout and stderr. */
struct ds_server {
    pid_t pid;                  /* 0 once it has exited */
    int status;                 /* its wait status, once exited */
    enum ds_transport transport;
    char sock[256];             /* DS_UNIX: socket path */
    int port;                   /* DS_TCP: port on 127.0.0.1 */
    char log[256];
};

/* Print and end the test (status 1), stopping every server first. */
void ds_fail(const char *file, int line, const char *fmt, ...)
    __attribute__((format(printf, 3, 4), noreturn));

#define DS_CHECK(cond, ...)                                     \
    do {                                                        \
        if (!(cond))                                            \
            ds_fail(__FILE__, __LINE__, __VA_ARGS__);           \
    } while (0)

/* Run a libnbd call that must succeed; on failure report libnbd's error. */
#define DS_NBD(call)                                                    \
    do {                                                                \
        if ((call) == -1)                                               \
            ds_fail(__FILE__, __LINE__, "%s: %s", #call,                \
                    nbd_get_error());                                   \
    } while (0)

/* Run a libnbd call that must fail with errno err. */
#define DS_NBD_ERRNO(call, err)                                         \
    do {                                                                \
        int ds_rc_ = (call);                                            \
        int ds_errno_ = nbd_get_errno();                                \
        DS_CHECK(ds_rc_ == -1, "%s succeeded, expected %s", #call,      \
                 #err);                                                 \
        DS_CHECK(ds_errno_ == (err), "%s: errno %d (%s), expected %s", \
                 #call, ds_errno_, nbd_get_error(), #err);              \
    } while (0)

/* Set up the scratch directory, the cleanup, a time limit of timeout
 * seconds and the random seed (DS_SEED from the environment, else
 * chosen and printed).  Call first. */
void ds_init(const char *test_name, unsigned timeout);

/* The seed ds_init chose. */
uint64_t ds_seed(void);

/* Write the path of name inside the scratch directory into buf. */
void ds_path(char *buf, size_t size, const char *name);

/* Start diskserve on transport t with extra arguments args (options and
 * image, NULL-terminated).  Returns once the server listens. */
void ds_server_start(struct ds_server *s, enum ds_transport t,
                     const char *const *args);

/* Wait up to timeout seconds for the server to exit.  Returns its exit
 * status (0-255), 128 + N when signal N killed it, or -1 on timeout. */
int ds_server_wait(struct ds_server *s, unsigned timeout);

/* SIGTERM the server and wait for it; fails the test unless it exits
 * with status 0 within 30 seconds. */
void ds_server_stop(struct ds_server *s);

/* Whether the server process is still running. */
bool ds_server_is_alive(struct ds_server *s);

/* "unix" or "tcp", for messages. */
const char *ds_transport_name(enum ds_transport t);

/* A new libnbd handle (never NULL). */
struct nbd_handle *ds_handle(void);

/* Connect h to s; returns libnbd's result so a test can expect failure.
 * The export name is whatever h has been set to. */
int ds_connect(struct nbd_handle *h, const struct ds_server *s);

/* Start connecting h to s without waiting (nbd_aio_connect_*). */
int ds_aio_connect(struct nbd_handle *h, const struct ds_server *s);

/* A handle connected to export name of s with default settings. */
struct nbd_handle *ds_open(const struct ds_server *s, const char *name);

/* Create (or truncate) a file of size bytes, all a hole. */
void ds_create_file(const char *path, uint64_t size);

/* Positioned whole reads and writes on a host file. */
void ds_write_file(const char *path, const void *buf, size_t len,
                   uint64_t off);
void ds_read_file(const char *path, void *buf, size_t len, uint64_t off);

/* Size of a host file. */
uint64_t ds_file_size(const char *path);

/* Fill buf with bytes that depend on the seed and tag only, never all
 * zero, so each block of a test can carry its own recognisable data. */
void ds_fill(void *buf, size_t len, uint64_t tag);

/* Whether buf is all zero. */
bool ds_is_zero(const void *buf, size_t len);

/* Allocate len bytes or fail the test. */
void *ds_malloc(size_t len);

/* A connected stream socket to s, for tests that speak the protocol by
 * hand; -1 never returned. */
int ds_raw_connect(const struct ds_server *s);

#endif /* DISKSERVE_TESTS_HARNESS_H */
