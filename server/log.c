/* Logging: one line per event to stderr, which is the log file when
 * --log-file is given (reopened on SIGHUP so log rotation works).  Lines
 * are written with a single write() so threads never interleave.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "server.h"

int srv_verbose;

static void vlog(const char *fmt, va_list ap)
{
    char line[1024];
    struct timespec ts;
    struct tm tm;

    clock_gettime(CLOCK_REALTIME, &ts);
    localtime_r(&ts.tv_sec, &tm);
    int n = (int)strftime(line, sizeof line, "%Y-%m-%d %H:%M:%S ", &tm);
    n += snprintf(line + n, sizeof line - (size_t)n, "diskserve[%d]: ",
                  (int)getpid());
    int m = vsnprintf(line + n, sizeof line - (size_t)n, fmt, ap);
    if (m < 0)
        return;
    n += m;
    if (n > (int)sizeof line - 2)
        n = (int)sizeof line - 2;
    line[n++] = '\n';
    ssize_t r = write(STDERR_FILENO, line, (size_t)n);
    (void)r;
}

void srv_log(const char *fmt, ...)
{
    va_list ap;

    va_start(ap, fmt);
    vlog(fmt, ap);
    va_end(ap);
}

void srv_debug(const char *fmt, ...)
{
    va_list ap;

    if (srv_verbose < 1)
        return;
    va_start(ap, fmt);
    vlog(fmt, ap);
    va_end(ap);
}

int srv_log_open(const char *path)
{
    int fd = open(path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0640);
    if (fd < 0)
        return -errno;
    if (dup2(fd, STDERR_FILENO) < 0) {
        int err = errno;
        close(fd);
        return -err;
    }
    close(fd);
    return 0;
}
