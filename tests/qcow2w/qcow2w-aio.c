/* The poll loop, generator and file helpers of qcow2w-aio.h. */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <poll.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "qcow2w-aio.h"

/* The most connections one client drives. */
#define QW_MAX_CONNS 64

void qw_die(const char *fmt, ...)
{
    va_list ap;

    fflush(stdout);
    fputs("FAIL: ", stderr);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
    exit(1);
}

uint64_t qw_connect_all(struct qw_conn *c, unsigned n, const char *uri)
{
    uint64_t size = 0;

    if (n == 0 || n > QW_MAX_CONNS)
        qw_die("%u connections: want 1 to %d", n, QW_MAX_CONNS);
    for (unsigned i = 0; i < n; i++) {
        c[i].inflight = 0;
        c[i].h = nbd_create();
        if (!c[i].h)
            qw_die("nbd_create: %s", nbd_get_error());
        if (nbd_connect_uri(c[i].h, uri) == -1)
            qw_die("connection %u to %s: %s", i, uri, nbd_get_error());
        int64_t s = nbd_get_size(c[i].h);
        if (s < 0)
            qw_die("nbd_get_size: %s", nbd_get_error());
        if (i > 0 && (uint64_t)s != size)
            qw_die("connection %u sees size %" PRId64 ", the first %" PRIu64,
                   i, s, size);
        size = (uint64_t)s;
    }
    return size;
}

static void check_alive(struct qw_conn *c, unsigned i)
{
    if (nbd_aio_is_dead(c[i].h) || nbd_aio_is_closed(c[i].h))
        qw_die("connection %u broke with %u requests in flight: %s", i,
               c[i].inflight, nbd_get_error());
}

void qw_poll(struct qw_conn *c, unsigned n)
{
    struct pollfd fds[QW_MAX_CONNS];
    unsigned dirs[QW_MAX_CONNS];

    for (unsigned i = 0; i < n; i++) {
        check_alive(c, i);
        fds[i].fd = nbd_aio_get_fd(c[i].h);
        dirs[i] = nbd_aio_get_direction(c[i].h);
        fds[i].events = 0;
        if (dirs[i] & LIBNBD_AIO_DIRECTION_READ)
            fds[i].events |= POLLIN;
        if (dirs[i] & LIBNBD_AIO_DIRECTION_WRITE)
            fds[i].events |= POLLOUT;
        fds[i].revents = 0;
    }
    int r = poll(fds, n, 60 * 1000);
    if (r < 0 && errno != EINTR)
        qw_die("poll: %s", strerror(errno));
    if (r == 0) {
        unsigned total = 0;
        for (unsigned i = 0; i < n; i++)
            total += c[i].inflight;
        qw_die("no reply for 60 s with %u requests in flight", total);
    }
    for (unsigned i = 0; i < n; i++) {
        short ev = fds[i].revents;
        if (ev & (POLLIN | POLLHUP | POLLERR)) {
            if (nbd_aio_notify_read(c[i].h) == -1)
                check_alive(c, i);
        }
        if ((ev & POLLOUT) &&
            (nbd_aio_get_direction(c[i].h) & LIBNBD_AIO_DIRECTION_WRITE)) {
            if (nbd_aio_notify_write(c[i].h) == -1)
                check_alive(c, i);
        }
        check_alive(c, i);
    }
}

void qw_drain(struct qw_conn *c, unsigned n)
{
    for (;;) {
        unsigned total = 0;
        for (unsigned i = 0; i < n; i++)
            total += c[i].inflight;
        if (total == 0)
            return;
        qw_poll(c, n);
    }
}

void qw_close_all(struct qw_conn *c, unsigned n)
{
    for (unsigned i = 0; i < n; i++) {
        if (nbd_shutdown(c[i].h, 0) == -1)
            qw_die("shutdown of connection %u: %s", i, nbd_get_error());
        nbd_close(c[i].h);
        c[i].h = NULL;
    }
}

uint64_t qw_rand(uint64_t *state)
{
    uint64_t z = (*state += 0x9e3779b97f4a7c15ULL);

    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}

uint64_t qw_below(uint64_t *state, uint64_t n)
{
    return qw_rand(state) % n;
}

void qw_fill(uint8_t *buf, size_t len, uint64_t key)
{
    uint64_t st = key;
    size_t i = 0;

    for (; i + 8 <= len; i += 8) {
        uint64_t v = qw_rand(&st);
        memcpy(buf + i, &v, 8);
    }
    if (i < len) {
        uint64_t v = qw_rand(&st);
        memcpy(buf + i, &v, len - i);
    }
}

void qw_load(const char *path, uint8_t *buf, uint64_t size)
{
    int fd = open(path, O_RDONLY);
    uint64_t done = 0;

    if (fd < 0)
        qw_die("open %s: %s", path, strerror(errno));
    while (done < size) {
        ssize_t r = read(fd, buf + done, size - done);
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0)
            qw_die("read %s: %s", path, r < 0 ? strerror(errno)
                                              : "file is too short");
        done += (uint64_t)r;
    }
    close(fd);
}

void qw_save(const char *path, const uint8_t *buf, uint64_t size)
{
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    uint64_t done = 0;

    if (fd < 0)
        qw_die("create %s: %s", path, strerror(errno));
    while (done < size) {
        ssize_t r = write(fd, buf + done, size - done);
        if (r < 0 && errno == EINTR)
            continue;
        if (r < 0)
            qw_die("write %s: %s", path, strerror(errno));
        done += (uint64_t)r;
    }
    if (close(fd) != 0)
        qw_die("close %s: %s", path, strerror(errno));
}

uint64_t qw_parse_size(const char *what, const char *text)
{
    char *end;
    unsigned long long v;

    errno = 0;
    v = strtoull(text, &end, 0);
    if (errno || end == text)
        qw_die("%s: not a size: '%s'", what, text);
    switch (*end) {
    case 'k': case 'K': v <<= 10; end++; break;
    case 'm': case 'M': v <<= 20; end++; break;
    case 'g': case 'G': v <<= 30; end++; break;
    default: break;
    }
    if (*end)
        qw_die("%s: not a size: '%s'", what, text);
    return v;
}

double qw_now(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec / 1e9;
}
