/* Helpers for the integration tests; see harness.h.
 *
 * A server counts as ready once the process itself holds a listening
 * socket bound to the expected path or port: the harness reads
 * /proc/PID/fd and /proc/net/{unix,tcp,tcp6} instead of probing with a
 * connection, so tests of --oneshot and of client counts see only their
 * own clients, and a port taken by a stranger is never mistaken for ours.
 */
#include <arpa/inet.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <inttypes.h>
#include <limits.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "harness.h"

#define MAX_SERVERS 32

static char tmpdir[PATH_MAX];
static const char *test_name = "test";
static uint64_t seed;
static unsigned nr_started;

/* Every server started, for the logs and the cleanup. */
static struct {
    pid_t pid;                  /* 0 once reaped */
    char log[256];
} servers[MAX_SERVERS];
static volatile sig_atomic_t nr_servers;

static void kill_servers(int sig)
{
    for (int i = 0; i < nr_servers; i++)
        if (servers[i].pid > 0)
            kill(servers[i].pid, sig);
}

static int remove_entry(const char *path, const struct stat *st, int type,
                        struct FTW *ftw)
{
    remove(path);
    return 0;
}

static void remove_tmpdir(void)
{
    if (tmpdir[0]) {
        nftw(tmpdir, remove_entry, 16, FTW_DEPTH | FTW_PHYS);
        tmpdir[0] = '\0';
    }
}

/* Stop whatever is still running: politely, then firmly. */
static void reap_servers(void)
{
    kill_servers(SIGTERM);
    for (int i = 0; i < nr_servers; i++) {
        if (servers[i].pid <= 0)
            continue;
        for (int t = 0; t < 100; t++) {
            if (waitpid(servers[i].pid, NULL, WNOHANG) != 0)
                break;
            usleep(50000);
        }
        kill(servers[i].pid, SIGKILL);
        waitpid(servers[i].pid, NULL, 0);
        servers[i].pid = 0;
    }
}

static void cleanup_at_exit(void)
{
    reap_servers();
    remove_tmpdir();
}

static void on_alarm(int sig)
{
    static const char msg[] = "FAIL: time limit reached\n";
    ssize_t r = write(STDERR_FILENO, msg, sizeof msg - 1);
    (void)r;
    kill_servers(SIGKILL);
    _exit(1);
}

static void print_log_tail(const char *path)
{
    FILE *f = fopen(path, "r");
    char *lines[40] = { 0 };
    char buf[512];
    unsigned n = 0;

    if (!f)
        return;
    while (fgets(buf, sizeof buf, f)) {
        free(lines[n % 40]);
        lines[n % 40] = strdup(buf);
        n++;
    }
    fclose(f);
    fprintf(stderr, "--- %s (last %u lines)\n", path, n < 40 ? n : 40);
    for (unsigned i = n < 40 ? 0 : n - 40; i < n; i++) {
        fputs(lines[i % 40] ? lines[i % 40] : "?\n", stderr);
        free(lines[i % 40]);
        lines[i % 40] = NULL;
    }
}

void ds_fail(const char *file, int line, const char *fmt, ...)
{
    va_list ap;

    fflush(stdout);
    fprintf(stderr, "FAIL: %s: %s:%d: ", test_name, file, line);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fprintf(stderr, "\n(seed %" PRIu64 ")\n", seed);
    reap_servers();
    for (int i = 0; i < nr_servers; i++)
        print_log_tail(servers[i].log);
    remove_tmpdir();
    _exit(1);
}

void ds_init(const char *name, unsigned timeout)
{
    const char *env = getenv("DS_SEED");
    const char *tmp = getenv("TMPDIR");

    test_name = name;
    if (env && *env)
        seed = strtoull(env, NULL, 0);
    else
        seed = (uint64_t)time(NULL) ^ ((uint64_t)getpid() << 32);
    printf("%s: seed %" PRIu64 " (replay with DS_SEED=%" PRIu64 ")\n",
           name, seed, seed);
    fflush(stdout);

    snprintf(tmpdir, sizeof tmpdir, "%s/ds-integ.XXXXXX",
             tmp && *tmp ? tmp : "/tmp");
    if (!mkdtemp(tmpdir)) {
        perror("mkdtemp");
        exit(1);
    }
    atexit(cleanup_at_exit);
    signal(SIGPIPE, SIG_IGN);
    signal(SIGALRM, on_alarm);
    alarm(timeout);
}

uint64_t ds_seed(void)
{
    return seed;
}

void ds_path(char *buf, size_t size, const char *name)
{
    int n = snprintf(buf, size, "%s/%s", tmpdir, name);
    DS_CHECK(n > 0 && (size_t)n < size, "path too long: %s", name);
}

const char *ds_transport_name(enum ds_transport t)
{
    return t == DS_UNIX ? "unix" : "tcp";
}

/* A port on 127.0.0.1 that was free a moment ago. */
static int free_port(void)
{
    struct sockaddr_in sin = { .sin_family = AF_INET };
    socklen_t len = sizeof sin;
    int fd = socket(AF_INET, SOCK_STREAM, 0);

    DS_CHECK(fd >= 0, "socket: %m");
    sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    DS_CHECK(bind(fd, (struct sockaddr *)&sin, sizeof sin) == 0,
             "bind: %m");
    DS_CHECK(getsockname(fd, (struct sockaddr *)&sin, &len) == 0,
             "getsockname: %m");
    close(fd);
    return ntohs(sin.sin_port);
}

/* Socket inodes held by pid, into inodes; returns how many. */
static size_t socket_inodes(pid_t pid, unsigned long *inodes, size_t max)
{
    char dir[64], link[PATH_MAX], target[128];
    struct dirent *d;
    size_t n = 0;
    DIR *dp;

    snprintf(dir, sizeof dir, "/proc/%d/fd", (int)pid);
    dp = opendir(dir);
    if (!dp)
        return 0;
    while ((d = readdir(dp)) && n < max) {
        ssize_t r;
        snprintf(link, sizeof link, "%s/%s", dir, d->d_name);
        r = readlink(link, target, sizeof target - 1);
        if (r <= 0)
            continue;
        target[r] = '\0';
        if (sscanf(target, "socket:[%lu]", &inodes[n]) == 1)
            n++;
    }
    closedir(dp);
    return n;
}

static bool has_inode(const unsigned long *v, size_t n, unsigned long ino)
{
    for (size_t i = 0; i < n; i++)
        if (v[i] == ino)
            return true;
    return false;
}

static bool unix_listening(const char *path, const unsigned long *inodes,
                           size_t n)
{
    FILE *f = fopen("/proc/net/unix", "r");
    char line[PATH_MAX + 128], sock[PATH_MAX];
    bool found = false;

    if (!f)
        return false;
    while (!found && fgets(line, sizeof line, f)) {
        unsigned flags, type, st;
        unsigned long ino;
        sock[0] = '\0';
        if (sscanf(line, "%*s %*s %*s %x %x %x %lu %4095s", &flags, &type,
                   &st, &ino, sock) < 4)
            continue;
        /* 0x10000 is __SO_ACCEPTCON: listen() has been called. */
        found = (flags & 0x10000) && strcmp(sock, path) == 0 &&
                has_inode(inodes, n, ino);
    }
    fclose(f);
    return found;
}

static bool tcp_listening(const char *table, int port,
                          const unsigned long *inodes, size_t n)
{
    FILE *f = fopen(table, "r");
    char line[512];
    bool found = false;

    if (!f)
        return false;
    while (!found && fgets(line, sizeof line, f)) {
        unsigned lport, st;
        unsigned long ino;
        if (sscanf(line, "%*s %*[0-9A-Fa-f]:%x %*s %x %*s %*s %*s %*s "
                   "%*s %lu", &lport, &st, &ino) != 3)
            continue;
        found = st == 0x0A && (int)lport == port &&
                has_inode(inodes, n, ino);
    }
    fclose(f);
    return found;
}

static bool is_listening(const struct ds_server *s)
{
    unsigned long inodes[256];
    size_t n = socket_inodes(s->pid, inodes, 256);

    if (n == 0)
        return false;
    if (s->transport == DS_UNIX)
        return unix_listening(s->sock, inodes, n);
    return tcp_listening("/proc/net/tcp", s->port, inodes, n) ||
           tcp_listening("/proc/net/tcp6", s->port, inodes, n);
}

static pid_t spawn(const struct ds_server *s, const char *const *args)
{
    const char *top = getenv("abs_top_builddir");
    char prog[PATH_MAX], port[16];
    const char *argv[64];
    size_t argc = 0;
    pid_t pid;

    snprintf(prog, sizeof prog, "%s/diskserve", top ? top : ".");
    argv[argc++] = prog;
    if (s->transport == DS_UNIX) {
        argv[argc++] = "-k";
        argv[argc++] = s->sock;
    } else {
        snprintf(port, sizeof port, "%d", s->port);
        argv[argc++] = "-b";
        argv[argc++] = "127.0.0.1";
        argv[argc++] = "-p";
        argv[argc++] = port;
    }
    for (size_t i = 0; args && args[i]; i++) {
        DS_CHECK(argc < 63, "too many server arguments");
        argv[argc++] = args[i];
    }
    argv[argc] = NULL;

    fflush(stdout);
    fflush(stderr);
    pid = fork();
    DS_CHECK(pid >= 0, "fork: %m");
    if (pid == 0) {
        int fd = open(s->log, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC,
                      0644);
        int nul = open("/dev/null", O_RDONLY | O_CLOEXEC);
        if (fd < 0 || nul < 0 || dup2(nul, 0) < 0 || dup2(fd, 1) < 0 ||
            dup2(fd, 2) < 0)
            _exit(127);
        signal(SIGPIPE, SIG_DFL);
        signal(SIGALRM, SIG_DFL);
        execv(prog, (char *const *)argv);
        fprintf(stderr, "exec %s: %m\n", prog);
        _exit(127);
    }
    return pid;
}

void ds_server_start(struct ds_server *s, enum ds_transport t,
                     const char *const *args)
{
    char name[64];

    DS_CHECK(nr_servers < MAX_SERVERS, "too many servers in one test");
    for (int attempt = 0; attempt < 5; attempt++) {
        unsigned id = nr_started++;

        memset(s, 0, sizeof *s);
        s->transport = t;
        snprintf(name, sizeof name, "server%u.log", id);
        ds_path(s->log, sizeof s->log, name);
        if (t == DS_UNIX) {
            snprintf(name, sizeof name, "server%u.sock", id);
            ds_path(s->sock, sizeof s->sock, name);
        } else {
            s->port = free_port();
        }
        s->pid = spawn(s, args);
        servers[nr_servers].pid = s->pid;
        snprintf(servers[nr_servers].log, sizeof servers[0].log, "%s",
                 s->log);
        nr_servers++;

        for (int tick = 0; tick < 1000; tick++) {
            if (is_listening(s))
                return;
            if (!ds_server_is_alive(s))
                break;
            usleep(10000);
        }
        if (ds_server_is_alive(s))
            ds_fail(__FILE__, __LINE__, "%s server did not listen in 10 s",
                    ds_transport_name(t));
        /* Exited: on TCP someone may have taken the port; try another. */
        if (t == DS_UNIX)
            break;
    }
    ds_fail(__FILE__, __LINE__, "%s server exited before listening",
            ds_transport_name(t));
}

/* Record that pid has been reaped. */
static void forget(pid_t pid)
{
    for (int i = 0; i < nr_servers; i++)
        if (servers[i].pid == pid)
            servers[i].pid = 0;
}

bool ds_server_is_alive(struct ds_server *s)
{
    if (s->pid <= 0)
        return false;
    if (waitpid(s->pid, &s->status, WNOHANG) == 0)
        return true;
    forget(s->pid);
    s->pid = 0;
    return false;
}

int ds_server_wait(struct ds_server *s, unsigned timeout)
{
    for (unsigned tick = 0; tick <= timeout * 50; tick++) {
        if (!ds_server_is_alive(s)) {
            if (WIFEXITED(s->status))
                return WEXITSTATUS(s->status);
            return 128 + WTERMSIG(s->status);
        }
        usleep(20000);
    }
    return -1;
}

void ds_server_stop(struct ds_server *s)
{
    int rc;

    DS_CHECK(ds_server_is_alive(s), "server exited early (status %d)",
             WIFEXITED(s->status) ? WEXITSTATUS(s->status)
                                  : 128 + WTERMSIG(s->status));
    DS_CHECK(kill(s->pid, SIGTERM) == 0, "kill: %m");
    rc = ds_server_wait(s, 30);
    DS_CHECK(rc != -1, "server still running 30 s after SIGTERM");
    DS_CHECK(rc == 0, "server exited with status %d after SIGTERM", rc);
}

struct nbd_handle *ds_handle(void)
{
    struct nbd_handle *h = nbd_create();

    DS_CHECK(h != NULL, "nbd_create: %s", nbd_get_error());
    return h;
}

int ds_connect(struct nbd_handle *h, const struct ds_server *s)
{
    char port[16];

    if (s->transport == DS_UNIX)
        return nbd_connect_unix(h, s->sock);
    snprintf(port, sizeof port, "%d", s->port);
    return nbd_connect_tcp(h, "127.0.0.1", port);
}

int ds_aio_connect(struct nbd_handle *h, const struct ds_server *s)
{
    char port[16];

    if (s->transport == DS_UNIX)
        return nbd_aio_connect_unix(h, s->sock);
    snprintf(port, sizeof port, "%d", s->port);
    return nbd_aio_connect_tcp(h, "127.0.0.1", port);
}

struct nbd_handle *ds_open(const struct ds_server *s, const char *name)
{
    struct nbd_handle *h = ds_handle();

    DS_NBD(nbd_set_export_name(h, name));
    DS_NBD(ds_connect(h, s));
    return h;
}

void ds_create_file(const char *path, uint64_t size)
{
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);

    DS_CHECK(fd >= 0, "open %s: %m", path);
    DS_CHECK(ftruncate(fd, (off_t)size) == 0, "ftruncate %s: %m", path);
    close(fd);
}

void ds_write_file(const char *path, const void *buf, size_t len,
                   uint64_t off)
{
    int fd = open(path, O_WRONLY | O_CLOEXEC);
    const char *p = buf;

    DS_CHECK(fd >= 0, "open %s: %m", path);
    while (len > 0) {
        ssize_t r = pwrite(fd, p, len, (off_t)off);
        DS_CHECK(r > 0, "pwrite %s: %m", path);
        p += r;
        len -= (size_t)r;
        off += (uint64_t)r;
    }
    close(fd);
}

void ds_read_file(const char *path, void *buf, size_t len, uint64_t off)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    char *p = buf;

    DS_CHECK(fd >= 0, "open %s: %m", path);
    while (len > 0) {
        ssize_t r = pread(fd, p, len, (off_t)off);
        DS_CHECK(r > 0, "pread %s at %" PRIu64 ": %s", path, off,
                 r == 0 ? "end of file" : strerror(errno));
        p += r;
        len -= (size_t)r;
        off += (uint64_t)r;
    }
    close(fd);
}

uint64_t ds_file_size(const char *path)
{
    struct stat st;

    DS_CHECK(stat(path, &st) == 0, "stat %s: %m", path);
    return (uint64_t)st.st_size;
}

void ds_fill(void *buf, size_t len, uint64_t tag)
{
    uint64_t x = seed ^ (tag * 0x9e3779b97f4a7c15ULL) ^ 0x5851f42d4c957f2dULL;
    unsigned char *p = buf;

    for (size_t i = 0; i < len; i++) {
        /* xorshift64*, one byte per step; bytes are never zero. */
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        unsigned char b = (unsigned char)((x * 0x2545f4914f6cdd1dULL) >> 56);
        p[i] = b ? b : 1;
    }
}

bool ds_is_zero(const void *buf, size_t len)
{
    const unsigned char *p = buf;

    for (size_t i = 0; i < len; i++)
        if (p[i])
            return false;
    return true;
}

void *ds_malloc(size_t len)
{
    void *p = malloc(len ? len : 1);

    DS_CHECK(p != NULL, "malloc %zu bytes", len);
    return p;
}

int ds_raw_connect(const struct ds_server *s)
{
    int fd;

    if (s->transport == DS_UNIX) {
        struct sockaddr_un sun = { .sun_family = AF_UNIX };
        DS_CHECK(strlen(s->sock) < sizeof sun.sun_path,
                 "socket path too long: %s", s->sock);
        memcpy(sun.sun_path, s->sock, strlen(s->sock) + 1);
        fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
        DS_CHECK(fd >= 0, "socket: %m");
        DS_CHECK(connect(fd, (struct sockaddr *)&sun, sizeof sun) == 0,
                 "connect %s: %m", s->sock);
    } else {
        struct sockaddr_in sin = { .sin_family = AF_INET };
        sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
        sin.sin_port = htons((uint16_t)s->port);
        fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
        DS_CHECK(fd >= 0, "socket: %m");
        DS_CHECK(connect(fd, (struct sockaddr *)&sin, sizeof sin) == 0,
                 "connect 127.0.0.1:%d: %m", s->port);
    }
    return fd;
}
