/* systemd socket activation: take over the listening sockets passed as
 * fds 3.. when LISTEN_PID names this process and LISTEN_FDS counts them.
 * The protocol is three environment variables; linking libsystemd for it
 * would add a dependency for twenty lines.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "server.h"

#define LISTEN_FDS_START 3

size_t srv_activation_fds(int *fds, size_t max)
{
    const char *pid_s = getenv("LISTEN_PID");
    const char *n_s = getenv("LISTEN_FDS");
    char *end;

    if (!pid_s || !n_s)
        return 0;
    errno = 0;
    long pid = strtol(pid_s, &end, 10);
    if (errno || *end || pid != (long)getpid())
        return 0;
    long n = strtol(n_s, &end, 10);
    if (errno || *end || n <= 0)
        return 0;
    /* Not for our children. */
    unsetenv("LISTEN_PID");
    unsetenv("LISTEN_FDS");
    unsetenv("LISTEN_FDNAMES");

    size_t got = 0;
    for (long i = 0; i < n && got < max; i++) {
        int fd = LISTEN_FDS_START + (int)i;
        int flags = fcntl(fd, F_GETFD);
        if (flags < 0)
            continue;
        fcntl(fd, F_SETFD, flags | FD_CLOEXEC);
        fds[got++] = fd;
    }
    return got;
}
