/* crash-check: materialize the crash states of a recorded workload and
 * check that the server survives each one.
 *
 * Inputs: the server's I/O log (DISKSERVE_IO_LOG), the workload's record
 * (workload.py --out), the starting contents of every logged file, and
 * optionally the guest-visible starting contents.  For every distinct
 * state (sampled down to --states, seeded):
 *
 *   1. qemu-img check exits 0 or 3 (qcow2 and vhdx, unless
 *      --no-qemu-check; leaks allowed; for
 *      vhdx on a copy with -r all, which first replays a pending log as
 *      QEMU does: QEMU opens no file with a pending log read-only);
 *   2. diskserve opens it read-write, and every sector reads the value of
 *      the last covered request to it (covered by a mark present at the
 *      crash point) or of a later request to it; a sector no covered
 *      request wrote may also read its starting contents;
 *   3. writes, a flush, a read-back, and after closing, qemu-img check
 *      again and a read-only reopen that reads the same.
 *
 * qemu-img check results are cached by the state's metadata: the applied
 * changes not tagged DATA and the file sizes (--no-cache to run it on
 * every state).  With --lose-covered-write each state first loses one
 * durable data write whose value a mark covers: every such state must
 * fail, which proves the checker can.
 *
 * Exit: 0 all passed, 1 a state failed, 2 usage or setup error.
 */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <inttypes.h>
#include <libnbd.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "crashlog.h"

#define SECTOR 512u
#define V_INITIAL 0u            /* the sector's starting contents */
#define V_ZERO UINT32_MAX       /* zeros, from a zero write or trim */
#define V_GARBAGE (UINT32_MAX - 1)
#define POST_ID 0x7ffe0000u     /* ids of the checker's own writes */
#define POST_SECTORS 24
#define READ_CHUNK (4u << 20)
#define MAX_SECTOR_REPORTS 4

enum kind { K_WRITE, K_ZERO, K_TRIM, K_FLUSH };

struct req {
    uint32_t id;
    uint64_t cookie;
    enum kind kind;
    uint64_t off, len;
    bool fua;
    int64_t issue, complete;
    int err;
};

/* Requests that touch one sector, in issue order, and the position of
 * the latest covered one (-1: none). */
struct history {
    uint32_t *reqs;
    uint32_t n, cap;
    int32_t covered;
};

/* Open-addressing set of 128-bit keys with an int value. */
struct kset {
    uint64_t (*keys)[2];
    int *vals;
    bool *used;
    size_t cap, n;
};

struct opts {
    const char *log, *workload, *format, *dir, *image, *keep;
    const char *diskserve, *qemu_img, *initial_content, *only;
    char *initial[16];
    size_t ninitial;
    size_t max_states, max_reported;
    unsigned jobs;
    uint64_t seed;
    uint64_t align;             /* sectors: post-crash writes' granule */
    bool no_cache, lose_write, verbose, no_qemu;
};

struct checker {
    struct opts o;
    struct clog lg;
    uint64_t wl_seed, size, nsec;
    struct req *reqs;
    size_t nreqs;
    uint32_t *by_complete;      /* request indices by completion */
    uint32_t *by_cookie;        /* request indices by cookie */
    uint8_t *initial;           /* guest starting contents, size bytes */
    bool unchanged[16];         /* --initial i names no logged file */
    struct history *hist;
    size_t image_file;          /* log file id of the image */
    /* coverage state, moving forward with the point */
    size_t marks_upto;
    int64_t flush_issue;
    size_t complete_upto;
    /* buffers */
    uint8_t *rbuf, *wbuf, *pbuf;
    struct kset qcache;
    /* counters */
    size_t checked, failed, reported, qemu_runs, qemu_hits, broken;
};

static volatile sig_atomic_t stop;

static void on_signal(int sig)
{
    stop = 1;
}

static void die(const char *what)
{
    fprintf(stderr, "crash-check: %s\n", what);
    exit(2);
}

static double now(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + (double)t.tv_nsec / 1e9;
}

static void *xcalloc(size_t n, size_t size)
{
    void *p = calloc(n ? n : 1, size);
    if (!p)
        die("out of memory");
    return p;
}

/* ---- the key set -------------------------------------------------- */

static int *kset_find(struct kset *s, const uint64_t key[2], bool add)
{
    if (add && (s->n + 1) * 2 > s->cap) {
        struct kset t = { 0 };
        t.cap = s->cap ? s->cap * 2 : 1024;
        t.keys = xcalloc(t.cap, sizeof *t.keys);
        t.vals = xcalloc(t.cap, sizeof *t.vals);
        t.used = xcalloc(t.cap, sizeof *t.used);
        for (size_t i = 0; i < s->cap; i++)
            if (s->used[i])
                *kset_find(&t, s->keys[i], true) = s->vals[i];
        free(s->keys);
        free(s->vals);
        free(s->used);
        *s = t;
    }
    if (!s->cap)
        return NULL;
    for (size_t i = key[0] & (s->cap - 1);; i = (i + 1) & (s->cap - 1)) {
        if (!s->used[i]) {
            if (!add)
                return NULL;
            s->used[i] = true;
            s->keys[i][0] = key[0];
            s->keys[i][1] = key[1];
            s->vals[i] = -1;
            s->n++;
            return &s->vals[i];
        }
        if (s->keys[i][0] == key[0] && s->keys[i][1] == key[1])
            return &s->vals[i];
    }
}

/* ---- the workload ------------------------------------------------- */

static uint64_t sector_word(uint64_t id, uint64_t sector, unsigned i)
{
    return (id * 0x9E3779B97F4A7C15ull) ^ (sector * 0xC2B2AE3D27D4EB4Full) ^
           (i * 0x165667B19E3779F9ull);
}

/* The 512 bytes request id writes to sector (workload.py makes the
 * same). */
static void sector_data(uint8_t *p, uint64_t id, uint64_t sector,
                        uint64_t seed)
{
    memcpy(p, "DSCRASH1", 8);
    memcpy(p + 8, &id, 8);
    memcpy(p + 16, &sector, 8);
    memcpy(p + 24, &seed, 8);
    for (unsigned i = 4; i < SECTOR / 8; i++) {
        uint64_t w = sector_word(id, sector, i);
        memcpy(p + i * 8, &w, 8);
    }
}

static int cmp_complete(const void *a, const void *b, void *arg)
{
    const struct req *r = arg;
    int64_t x = r[*(const uint32_t *)a].complete;
    int64_t y = r[*(const uint32_t *)b].complete;
    return x < y ? -1 : x > y;
}

static int cmp_cookie(const void *a, const void *b, void *arg)
{
    const struct req *r = arg;
    uint64_t x = r[*(const uint32_t *)a].cookie;
    uint64_t y = r[*(const uint32_t *)b].cookie;
    return x < y ? -1 : x > y;
}

static void load_workload(struct checker *ck)
{
    FILE *f = fopen(ck->o.workload, "r");
    char line[512], kind[16];
    size_t cap = 0;

    if (!f) {
        perror(ck->o.workload);
        exit(2);
    }
    while (fgets(line, sizeof line, f)) {
        struct req r = { 0 };
        unsigned fua;
        if (sscanf(line, "seed %" SCNu64, &ck->wl_seed) == 1 ||
            sscanf(line, "size %" SCNu64, &ck->size) == 1)
            continue;
        if (sscanf(line, "req %u %" SCNu64 " %15s %" SCNu64 " %" SCNu64
                   " %u %" SCNd64 " %" SCNd64 " %d", &r.id, &r.cookie, kind,
                   &r.off, &r.len, &fua, &r.issue, &r.complete,
                   &r.err) != 9) {
            fprintf(stderr, "%s: bad line: %s", ck->o.workload, line);
            exit(2);
        }
        r.fua = fua;
        r.kind = !strcmp(kind, "write") ? K_WRITE :
                 !strcmp(kind, "zero") ? K_ZERO :
                 !strcmp(kind, "trim") ? K_TRIM : K_FLUSH;
        if (r.id == 0 || r.id >= POST_ID || r.off % SECTOR ||
            r.len % SECTOR || (r.kind == K_FLUSH && strcmp(kind, "flush"))) {
            fprintf(stderr, "%s: bad request: %s", ck->o.workload, line);
            exit(2);
        }
        if (ck->nreqs == cap) {
            cap = cap ? cap * 2 : 256;
            ck->reqs = realloc(ck->reqs, cap * sizeof *ck->reqs);
            if (!ck->reqs)
                die("out of memory");
        }
        ck->reqs[ck->nreqs++] = r;
    }
    fclose(f);
    if (!ck->size || ck->size % SECTOR)
        die("workload record has no valid size");
    ck->nsec = ck->size / SECTOR;
    ck->by_complete = xcalloc(ck->nreqs, sizeof *ck->by_complete);
    ck->by_cookie = xcalloc(ck->nreqs, sizeof *ck->by_cookie);
    for (size_t i = 0; i < ck->nreqs; i++)
        ck->by_complete[i] = ck->by_cookie[i] = (uint32_t)i;
    qsort_r(ck->by_complete, ck->nreqs, sizeof(uint32_t), cmp_complete,
            ck->reqs);
    qsort_r(ck->by_cookie, ck->nreqs, sizeof(uint32_t), cmp_cookie,
            ck->reqs);
}

/* Per-sector histories; requests touching a sector must not have been in
 * flight together, or their order would be unknown. */
static void build_histories(struct checker *ck)
{
    ck->hist = xcalloc(ck->nsec, sizeof *ck->hist);
    for (uint64_t s = 0; s < ck->nsec; s++)
        ck->hist[s].covered = -1;
    for (size_t i = 0; i < ck->nreqs; i++) {
        const struct req *r = &ck->reqs[i];
        if (r->kind == K_FLUSH)
            continue;
        if (r->off + r->len > ck->size)
            die("workload request past the end of the image");
        for (uint64_t s = r->off / SECTOR; s < (r->off + r->len) / SECTOR;
             s++) {
            struct history *h = &ck->hist[s];
            if (h->n == h->cap) {
                h->cap = h->cap ? h->cap * 2 : 4;
                h->reqs = realloc(h->reqs, h->cap * sizeof *h->reqs);
                if (!h->reqs)
                    die("out of memory");
            }
            /* Requests are listed in issue order. */
            if (h->n > 0) {
                const struct req *p = &ck->reqs[h->reqs[h->n - 1]];
                if (p->complete > r->issue) {
                    fprintf(stderr, "crash-check: requests %u and %u "
                            "overlap at sector %" PRIu64 " while both in "
                            "flight\n", p->id, r->id, s);
                    exit(2);
                }
            }
            h->reqs[h->n++] = (uint32_t)i;
        }
    }
}

static uint32_t req_value(const struct req *r)
{
    return r->kind == K_WRITE ? r->id : V_ZERO;
}

static void cover(struct checker *ck, uint32_t ri)
{
    const struct req *r = &ck->reqs[ri];

    for (uint64_t s = r->off / SECTOR; s < (r->off + r->len) / SECTOR;
         s++) {
        struct history *h = &ck->hist[s];
        for (int32_t p = (int32_t)h->n - 1; p > h->covered; p--)
            if (h->reqs[p] == ri) {
                h->covered = p;
                break;
            }
    }
}

static const struct req *find_cookie(const struct checker *ck,
                                     uint64_t cookie)
{
    size_t lo = 0, hi = ck->nreqs;

    while (lo < hi) {
        size_t mid = (lo + hi) / 2;
        uint64_t c = ck->reqs[ck->by_cookie[mid]].cookie;
        if (c == cookie)
            return &ck->reqs[ck->by_cookie[mid]];
        if (c < cookie)
            lo = mid + 1;
        else
            hi = mid;
    }
    return NULL;
}

/* Move coverage forward to point k: take in every mark logged before
 * the crash point. */
static void cover_to_point(struct checker *ck, size_t k)
{
    const struct clog *lg = &ck->lg;

    for (; ck->marks_upto < lg->point_rec[k]; ck->marks_upto++) {
        const struct io_log_rec *h = &lg->recs[ck->marks_upto].h;
        if (h->type != IO_REC_MARK)
            continue;
        const struct req *r = find_cookie(ck, h->off);
        if (!r) {
            fprintf(stderr, "crash-check: mark for cookie %" PRIu64
                    " matches no request of the workload\n", h->off);
            exit(2);
        }
        if (r->kind == K_FLUSH) {
            if (r->issue > ck->flush_issue)
                ck->flush_issue = r->issue;
        } else if (r->err == 0) {
            cover(ck, (uint32_t)(r - ck->reqs));
        }
    }
    for (; ck->complete_upto < ck->nreqs; ck->complete_upto++) {
        uint32_t ri = ck->by_complete[ck->complete_upto];
        const struct req *r = &ck->reqs[ri];
        if (r->complete >= ck->flush_issue)
            break;
        if (r->kind != K_FLUSH && r->err == 0)
            cover(ck, ri);
    }
}

/* Is v an allowed value of sector s? */
static bool allowed(const struct checker *ck, uint64_t s, uint32_t v)
{
    const struct history *h = &ck->hist[s];

    if (h->covered < 0 && v == V_INITIAL)
        return true;
    for (uint32_t p = h->covered < 0 ? 0 : (uint32_t)h->covered; p < h->n;
         p++)
        if (req_value(&ck->reqs[h->reqs[p]]) == v)
            return true;
    return false;
}

static void describe_allowed(const struct checker *ck, uint64_t s,
                             char *out, size_t len)
{
    const struct history *h = &ck->hist[s];
    size_t n = 0;

    out[0] = '\0';
    if (h->covered < 0)
        n += (size_t)snprintf(out + n, len - n, " initial");
    for (uint32_t p = h->covered < 0 ? 0 : (uint32_t)h->covered;
         p < h->n && n < len; p++) {
        const struct req *r = &ck->reqs[h->reqs[p]];
        n += (size_t)snprintf(out + n, len - n, " %s#%u",
                              r->kind == K_WRITE ? "write" :
                              r->kind == K_ZERO ? "zero" : "trim", r->id);
    }
}

/* What a sector's bytes say: up to three candidate values. */
static size_t classify(const struct checker *ck, uint64_t s,
                       const uint8_t *p, uint32_t v[3])
{
    static const uint8_t zero[SECTOR];
    size_t n = 0;

    if (!memcmp(p, zero, SECTOR))
        v[n++] = V_ZERO;
    if (!memcmp(p, ck->initial + s * SECTOR, SECTOR))
        v[n++] = V_INITIAL;
    if (!memcmp(p, "DSCRASH1", 8)) {
        uint64_t id, sec, seed;
        uint8_t want[SECTOR];
        memcpy(&id, p + 8, 8);
        memcpy(&sec, p + 16, 8);
        memcpy(&seed, p + 24, 8);
        if (id < POST_ID && sec == s && seed == ck->wl_seed) {
            sector_data(want, id, sec, seed);
            if (!memcmp(p, want, SECTOR))
                v[n++] = (uint32_t)id;
        }
    }
    return n;
}

static void describe_value(const uint8_t *p, uint64_t s, char *out,
                           size_t len)
{
    uint64_t id, sec;

    memcpy(&id, p + 8, 8);
    memcpy(&sec, p + 16, 8);
    if (!memcmp(p, "DSCRASH1", 8) && sec == s)
        snprintf(out, len, "write#%" PRIu64, id);
    else if (!memcmp(p, "DSCRASH1", 8))
        snprintf(out, len, "write#%" PRIu64 "'s sector %" PRIu64, id, sec);
    else
        snprintf(out, len, "bytes %02x %02x %02x %02x...", p[0], p[1], p[2],
                 p[3]);
}

/* ---- running tools ------------------------------------------------ */

/* Run argv with output to DIR/out.txt; its exit status or -1. */
static int run(const struct checker *ck, char *const argv[])
{
    char out[4096];
    pid_t pid;
    int status;

    snprintf(out, sizeof out, "%s/out.txt", ck->o.dir);
    pid = fork();
    if (pid < 0)
        return -1;
    if (pid == 0) {
        int fd = open(out, O_WRONLY | O_CREAT | O_TRUNC, 0644);
        if (fd >= 0) {
            dup2(fd, 1);
            dup2(fd, 2);
        }
        execvp(argv[0], argv);
        _exit(127);
    }
    while (waitpid(pid, &status, 0) < 0)
        if (errno != EINTR)
            return -1;
    return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

static void show_output(const struct checker *ck)
{
    char path[4096], line[256];
    snprintf(path, sizeof path, "%s/out.txt", ck->o.dir);
    FILE *f = fopen(path, "r");
    for (int i = 0; f && i < 12 && fgets(line, sizeof line, f); i++)
        fprintf(stderr, "    | %s", line);
    if (f)
        fclose(f);
}

/* Copy the file at from to to; 0 or -1. */
static int copy_file(const char *from, const char *to)
{
    int in = open(from, O_RDONLY | O_CLOEXEC);
    int out = open(to, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    char buf[1 << 16];
    ssize_t n = 0;

    off_t pos = 0;
    while (in >= 0 && out >= 0 && (n = read(in, buf, sizeof buf)) > 0) {
        pos += n;
        /* Zeros stay a hole (the file ends with an ftruncate). */
        if (buf[0] == 0 && memcmp(buf, buf + 1, (size_t)n - 1) == 0) {
            if (lseek(out, pos, SEEK_SET) < 0)
                n = -1;
            continue;
        }
        for (ssize_t done = 0; done < n;) {
            ssize_t w = write(out, buf + done, (size_t)(n - done));
            if (w <= 0) {
                n = -1;
                break;
            }
            done += w;
        }
        if (n < 0)
            break;
    }
    if (in >= 0)
        close(in);
    if (out >= 0 && n == 0 && ftruncate(out, pos) < 0)
        n = -1;
    if (out >= 0 && close(out) < 0)
        n = -1;
    return in < 0 || out < 0 || n < 0 ? -1 : 0;
}

/* qemu-img check, cached by key: true when it exits 0 or 3. */
static bool qemu_check(struct checker *ck, const char *path,
                       const uint64_t key[2], const char *when,
                       const char *spec)
{
    int *cached = ck->o.no_cache ? NULL : kset_find(&ck->qcache, key, true);
    int rc;

    if (cached && *cached >= 0) {
        ck->qemu_hits++;
        rc = *cached;
    } else {
        char *argv[] = { (char *)ck->o.qemu_img, "check", "-f",
                         (char *)ck->o.format, (char *)path, NULL, NULL,
                         NULL };
        char copy[4200];
        bool vhdx = strcmp(ck->o.format, "vhdx") == 0;
        if (vhdx) {
            snprintf(copy, sizeof copy, "%s.qemu-check", path);
            if (copy_file(path, copy) < 0)
                die("cannot copy a state for qemu-img check");
            argv[4] = "-r";
            argv[5] = "all";
            argv[6] = copy;
        }
        rc = run(ck, argv);
        if (vhdx)
            unlink(copy);
        ck->qemu_runs++;
        if (cached)
            *cached = rc;
    }
    if (rc == 0 || rc == 3)
        return true;
    if (ck->reported < ck->o.max_reported) {
        fprintf(stderr, "FAIL %s: qemu-img check %s exits %d\n", spec, when,
                rc);
        show_output(ck);
    }
    return false;
}

static struct nbd_handle *open_server(const struct checker *ck,
                                      const char *path, bool ro,
                                      const char *spec)
{
    const char *argv[] = { ck->o.diskserve, "-s", "-f", ck->o.format,
                           "--threads", "2", path, NULL, NULL };
    struct nbd_handle *h = nbd_create();

    if (ro) {
        argv[6] = "-r";
        argv[7] = path;
    }
    /* Simple replies: a read is one payload, not a chunk per hole. */
    if (!h || nbd_set_request_structured_replies(h, false) < 0 ||
        nbd_connect_command(h, (char **)argv) < 0 ||
        nbd_get_size(h) != (int64_t)ck->size) {
        if (ck->reported < ck->o.max_reported)
            fprintf(stderr, "FAIL %s: diskserve does not serve the state: "
                    "%s\n", spec, h ? nbd_get_error() : "nbd_create");
        if (h)
            nbd_close(h);
        return NULL;
    }
    return h;
}

static int read_all(struct nbd_handle *h, uint8_t *buf, uint64_t size)
{
    for (uint64_t off = 0; off < size; off += READ_CHUNK) {
        uint64_t n = size - off < READ_CHUNK ? size - off : READ_CHUNK;
        if (nbd_pread(h, buf + off, n, off, 0) < 0)
            return -1;
    }
    return 0;
}

/* Close a connection and wait for the server to exit; false on error. */
static bool close_server(struct nbd_handle *h)
{
    bool ok = nbd_shutdown(h, 0) == 0;
    nbd_close(h);
    return ok;
}

/* ---- one state ---------------------------------------------------- */

static bool check_data(struct checker *ck, const char *spec)
{
    unsigned bad = 0;

    for (uint64_t s = 0; s < ck->nsec; s++) {
        const uint8_t *p = ck->rbuf + s * SECTOR;
        uint32_t v[3];
        size_t n = classify(ck, s, p, v);
        bool ok = false;
        for (size_t i = 0; i < n && !ok; i++)
            ok = allowed(ck, s, v[i]);
        if (ok)
            continue;
        if (bad++ < MAX_SECTOR_REPORTS && ck->reported < ck->o.max_reported) {
            char got[64], want[256];
            describe_value(p, s, got, sizeof got);
            describe_allowed(ck, s, want, sizeof want);
            fprintf(stderr, "FAIL %s: sector %" PRIu64 " reads %s, "
                    "allowed:%s\n", spec, s, got, want);
        }
    }
    if (bad > MAX_SECTOR_REPORTS && ck->reported < ck->o.max_reported)
        fprintf(stderr, "FAIL %s: %u sectors wrong in all\n", spec, bad);
    return bad == 0;
}

/* Write POST_SECTORS scattered granules of --align sectors and one run
 * crossing clusters, flush, and read everything back. */
static bool write_and_verify(struct checker *ck, struct nbd_handle *h,
                             const uint64_t key[2], const char *spec)
{
    uint64_t rng = key[0] ^ ck->o.seed;
    uint64_t a = ck->o.align;
    uint64_t run_at = crash_rand(&rng) % ck->nsec;
    uint64_t runlen = (17 + a - 1) / a * a;
    const char *what = NULL;

    memcpy(ck->pbuf, ck->rbuf, ck->size);
    if (run_at + runlen > ck->nsec)
        run_at = ck->nsec > runlen ? ck->nsec - runlen : 0;
    for (unsigned i = 0; i < POST_SECTORS + 1 && !what; i++) {
        uint64_t s = i < POST_SECTORS ? crash_rand(&rng) % ck->nsec : run_at;
        uint64_t n = i < POST_SECTORS ? a : runlen;
        s -= s % a;
        if (s + n > ck->nsec)
            n = ck->nsec - s;
        for (uint64_t j = 0; j < n; j++)
            sector_data(ck->pbuf + (s + j) * SECTOR, POST_ID + i, s + j,
                        ck->wl_seed);
        if (nbd_pwrite(h, ck->pbuf + s * SECTOR, n * SECTOR, s * SECTOR,
                       0) < 0)
            what = "write";
    }
    if (!what && nbd_flush(h, 0) < 0)
        what = "flush";
    if (!what && read_all(h, ck->wbuf, ck->size) < 0)
        what = "read after writing";
    if (!what && memcmp(ck->wbuf, ck->pbuf, ck->size))
        what = "read-back after writing differs";
    if (what && ck->reported < ck->o.max_reported)
        fprintf(stderr, "FAIL %s: %s: %s\n", spec, what, nbd_get_error() ?
                nbd_get_error() : "");
    return !what;
}

/* The metadata key: point base, applied changes not tagged DATA, and
 * every file's size. */
static void metadata_key(const struct checker *ck, const struct cstate *s,
                         const struct mstate *m, size_t skip,
                         uint64_t key[2])
{
    const struct clog *lg = &ck->lg;
    size_t nf = lg->nfiles ? lg->nfiles : 1;
    uint64_t h = 0x84CAA73B2C1C8D3Full, g = 0x6A09E667F3BCC908ull;

#define MIX(x) (h = (h ^ (uint64_t)(x)) * 0x9E3779B97F4A7C15ull, \
                g = (g + (uint64_t)(x)) * 0xC2B2AE3D27D4EB4Full, \
                h ^= h >> 29, g ^= g >> 31)
    /* The base's metadata: the base prefix of each file, minus the
     * skipped change if that is metadata (it never is). */
    for (size_t f = 0; f < nf; f++)
        MIX(lg->base_end[s->k * nf + f]);
    MIX(skip);
    for (uint32_t i = 0; i < s->nops; i++) {
        const struct clog_rec *r = clog_epoch_rec(lg, s->k, i);
        bool on = cstate_has(s, i) || (int32_t)i == s->torn;
        if (!on || (r->h.type == IO_REC_WRITE && r->h.tag == IO_TAG_DATA))
            continue;
        MIX(r->h.seq);
        if ((int32_t)i == s->torn)
            MIX(((uint64_t)s->piece << 40) ^ ((uint64_t)s->from << 20) ^
                s->to);
    }
    for (size_t f = 0; f < m->n; f++)
        MIX(m->f[f].size);
#undef MIX
    key[0] = h;
    key[1] = g;
}

/* Files the workload never changed (a backing file) are linked into
 * the scratch directory, under their own names, once. */
static void link_unchanged(const struct checker *ck, const char *dir)
{
    for (size_t i = 0; i < ck->o.ninitial; i++) {
        if (!ck->unchanged[i])
            continue;
        const char *spec = ck->o.initial[i], *eq = strchr(spec, '=');
        const char *slash = memrchr(spec, '/', (size_t)(eq - spec));
        const char *name = slash ? slash + 1 : spec;
        char link[4096], *target = realpath(eq + 1, NULL);
        snprintf(link, sizeof link, "%s/%.*s", dir, (int)(eq - name), name);
        if (!target || (symlink(target, link) < 0 && errno != EEXIST))
            die("cannot link an unchanged file into the scratch directory");
        free(target);
    }
}

static bool check_state(struct checker *ck, const struct cstate *s,
                        const struct mstate *m, size_t skip,
                        const char *spec)
{
    char path[4096];
    uint64_t key[2], post[2];
    struct nbd_handle *h;
    bool ok = true;
    /* qemu-img check where QEMU can open the format (not differencing
     * VHDX files: --no-qemu-check). */
    bool qcow = strcmp(ck->o.format, "raw") != 0 && !ck->o.no_qemu;

    snprintf(path, sizeof path, "%s/%s", ck->o.dir, ck->o.image);
    if (mstate_write(m, &ck->lg, ck->o.dir) < 0)
        die("cannot write a state into the scratch directory");
    metadata_key(ck, s, m, skip, key);
    post[0] = key[0] ^ 0x5bd1e995ull;
    post[1] = key[1] + 1;

    if (qcow && !qemu_check(ck, path, key, "before opening", spec))
        return false;
    if (!(h = open_server(ck, path, false, spec)))
        return false;
    if (read_all(h, ck->rbuf, ck->size) < 0) {
        if (ck->reported < ck->o.max_reported)
            fprintf(stderr, "FAIL %s: read: %s\n", spec, nbd_get_error());
        close_server(h);
        return false;
    }
    ok = check_data(ck, spec);
    ok = write_and_verify(ck, h, key, spec) && ok;
    if (!close_server(h)) {
        if (ck->reported < ck->o.max_reported)
            fprintf(stderr, "FAIL %s: disconnect: %s\n", spec,
                    nbd_get_error());
        ok = false;
    }
    if (!ok)
        return false;
    if (qcow && !qemu_check(ck, path, post, "after writing", spec))
        return false;
    if (!(h = open_server(ck, path, true, spec)))
        return false;
    if (read_all(h, ck->wbuf, ck->size) < 0 ||
        memcmp(ck->wbuf, ck->pbuf, ck->size)) {
        if (ck->reported < ck->o.max_reported)
            fprintf(stderr, "FAIL %s: reopened image reads differently\n",
                    spec);
        ok = false;
    }
    close_server(h);
    return ok;
}

/* ---- losing a covered write --------------------------------------- */

static bool epoch_touches(const struct clog *lg, const struct cstate *s,
                          uint32_t file, uint64_t off, uint64_t len)
{
    for (uint32_t i = 0; i < s->nops; i++) {
        const struct io_log_rec *h = &clog_epoch_rec(lg, s->k, i)->h;
        if ((!cstate_has(s, i) && (int32_t)i != s->torn) || h->file != file)
            continue;
        if (h->type == IO_REC_TRUNCATE ||
            (h->off < off + len && off < h->off + h->len))
            return true;
    }
    return false;
}

/* Find a durable data write at point s->k that holds a sector's covered
 * value, with no applied epoch change over it, whose loss leaves a value
 * the checker must refuse.  Builds that state into *out; the change
 * index or SIZE_MAX. */
static size_t lose_write(struct checker *ck, const struct cstate *s,
                         const struct mstate *base, struct mstate *out)
{
    const struct clog *lg = &ck->lg;
    size_t nf = lg->nfiles ? lg->nfiles : 1, tries = 0;

    for (size_t c = lg->nchanges; c-- > 0 && tries < 4;) {
        const struct clog_rec *r = &lg->recs[lg->changes[c]];
        const struct io_log_rec *h = &r->h;
        if (h->type != IO_REC_WRITE || h->tag != IO_TAG_DATA ||
            c >= lg->base_end[s->k * nf + h->file])
            continue;
        for (uint64_t o = 0; o + SECTOR <= h->len; o += SECTOR) {
            const uint8_t *p = r->data + o;
            uint64_t id, sec;
            memcpy(&id, p + 8, 8);
            memcpy(&sec, p + 16, 8);
            if (memcmp(p, "DSCRASH1", 8) || sec >= ck->nsec)
                continue;
            const struct history *hs = &ck->hist[sec];
            if (hs->covered < 0 ||
                req_value(&ck->reqs[hs->reqs[hs->covered]]) != id)
                continue;
            const struct mfile *bf = &base->f[h->file];
            if (h->off + o + SECTOR > bf->size ||
                memcmp(bf->data + h->off + o, p, SECTOR) ||
                epoch_touches(lg, s, h->file, h->off + o, SECTOR))
                continue;
            /* Candidate: what would the sector hold without it? */
            tries++;
            struct mstate lost = { 0 };
            if (mstate_build_base(&lost, lg, s->k, c) < 0)
                die("out of memory");
            uint8_t old[SECTOR] = { 0 };
            const struct mfile *lf = &lost.f[h->file];
            if (h->off + o < lf->size)
                memcpy(old, lf->data + h->off + o,
                       lf->size - (h->off + o) < SECTOR
                       ? lf->size - (h->off + o) : SECTOR);
            uint32_t v[3];
            size_t n = classify(ck, sec, old, v);
            bool still_ok = false;
            for (size_t i = 0; i < n; i++)
                still_ok |= allowed(ck, sec, v[i]);
            if (!still_ok && cstate_materialize(lg, &lost, s, out) == 0) {
                mstate_free(&lost);
                return c;
            }
            mstate_free(&lost);
            break;
        }
    }
    return SIZE_MAX;
}

/* ---- main --------------------------------------------------------- */

static void usage(void)
{
    fprintf(stderr,
"usage: crash-check --log LOG --workload REC --format raw|qcow2|vhdx\n"
"         --initial LOGGED=COPY... --dir SCRATCH --diskserve PATH\n"
"         [--image NAME] [--initial-content RAW] [--qemu-img PATH]\n"
"         [--states N] [--seed S] [--only SPEC] [--keep DIR]\n"
"         [--no-cache] [--lose-covered-write] [--jobs N] [--report N]\n"
"         [--no-qemu-check] [--align SECTORS] [--verbose]\n");
    exit(2);
}

static void parse_opts(int argc, char **argv, struct opts *o)
{
    static const struct option lo[] = {
        { "log", required_argument, NULL, 'l' },
        { "workload", required_argument, NULL, 'w' },
        { "format", required_argument, NULL, 'f' },
        { "initial", required_argument, NULL, 'i' },
        { "initial-content", required_argument, NULL, 'c' },
        { "dir", required_argument, NULL, 'd' },
        { "image", required_argument, NULL, 'm' },
        { "diskserve", required_argument, NULL, 'D' },
        { "qemu-img", required_argument, NULL, 'Q' },
        { "states", required_argument, NULL, 'n' },
        { "seed", required_argument, NULL, 's' },
        { "only", required_argument, NULL, 'o' },
        { "keep", required_argument, NULL, 'k' },
        { "no-cache", no_argument, NULL, 'N' },
        { "no-qemu-check", no_argument, NULL, 'q' },
        { "lose-covered-write", no_argument, NULL, 'L' },
        { "verbose", no_argument, NULL, 'v' },
        { "jobs", required_argument, NULL, 'j' },
        { "report", required_argument, NULL, 'r' },
        { "align", required_argument, NULL, 'a' },
        { NULL, 0, NULL, 0 },
    };
    int c;

    memset(o, 0, sizeof *o);
    o->qemu_img = "qemu-img";
    o->max_states = SIZE_MAX;
    o->max_reported = 20;
    o->seed = 1;
    o->align = 1;
    while ((c = getopt_long(argc, argv, "", lo, NULL)) != -1) {
        switch (c) {
        case 'l': o->log = optarg; break;
        case 'w': o->workload = optarg; break;
        case 'f': o->format = optarg; break;
        case 'i':
            if (o->ninitial == 16)
                usage();
            o->initial[o->ninitial++] = optarg;
            break;
        case 'c': o->initial_content = optarg; break;
        case 'd': o->dir = optarg; break;
        case 'm': o->image = optarg; break;
        case 'D': o->diskserve = optarg; break;
        case 'Q': o->qemu_img = optarg; break;
        case 'n': o->max_states = strtoull(optarg, NULL, 0); break;
        case 's': o->seed = strtoull(optarg, NULL, 0); break;
        case 'o': o->only = optarg; break;
        case 'k': o->keep = optarg; break;
        case 'N': o->no_cache = true; break;
        case 'q': o->no_qemu = true; break;
        case 'L': o->lose_write = true; break;
        case 'v': o->verbose = true; break;
        case 'j': o->jobs = (unsigned)strtoul(optarg, NULL, 0); break;
        case 'r': o->max_reported = strtoull(optarg, NULL, 0); break;
        case 'a': o->align = strtoull(optarg, NULL, 0); break;
        default: usage();
        }
    }
    if (optind != argc || !o->log || !o->workload || !o->format ||
        !o->dir || !o->diskserve || !o->ninitial || o->jobs > 64 ||
        o->align == 0)
        usage();
}

static void setup(struct checker *ck)
{
    struct clog *lg = &ck->lg;

    if (clog_load(lg, ck->o.log) < 0)
        exit(2);
    for (size_t i = 0; i < ck->o.ninitial; i++) {
        int r = clog_set_initial(lg, ck->o.initial[i]);
        if (r < 0)
            exit(2);
        ck->unchanged[i] = r == 1;
    }
    if (clog_check_initial(lg) < 0)
        exit(2);
    if (lg->nfiles == 0)
        die("the log records no change to any file");
    if (!ck->o.image) {
        const char *p = strrchr(lg->files[0].path, '/');
        ck->o.image = p ? p + 1 : lg->files[0].path;
    }
    load_workload(ck);
    build_histories(ck);
    ck->initial = xcalloc(ck->size, 1);
    if (ck->o.initial_content) {
        FILE *f = fopen(ck->o.initial_content, "rb");
        if (!f) {
            perror(ck->o.initial_content);
            exit(2);
        }
        if (fread(ck->initial, 1, ck->size, f) == 0 && ferror(f))
            die("cannot read the initial contents");
        fclose(f);
    }
    ck->rbuf = xcalloc(ck->size, 1);
    ck->wbuf = xcalloc(ck->size, 1);
    ck->pbuf = xcalloc(ck->size, 1);
    ck->flush_issue = -1;
}

/* Enumerate every state, keep one per distinct contents and point. */
static size_t dedup(struct checker *ck, struct cstate *v, size_t n,
                    size_t *keep)
{
    const struct clog *lg = &ck->lg;
    struct mstate base = { 0 }, scratch = { 0 };
    size_t *applied = xcalloc(lg->nfiles, sizeof *applied);
    struct kset seen = { 0 };
    size_t nkeep = 0, cur_k = SIZE_MAX;

    if (mstate_init(&base, lg) < 0)
        die("out of memory");
    for (size_t i = 0; i < n; i++) {
        if (v[i].k != cur_k) {
            cur_k = v[i].k;
            if (mstate_advance(&base, lg, applied, cur_k) < 0 ||
                mstate_copy(&scratch, &base) < 0)
                die("cannot build a base (out of memory or unsupported "
                    "fallocate mode)");
        }
        uint64_t h[2];
        if (cstate_apply(lg, &v[i], &scratch) < 0)
            die("cannot apply a change");
        cstate_hash(lg, cur_k, &scratch, h);
        if (mstate_restore(&scratch, &base, lg, cur_k) < 0)
            die("out of memory");
        int *slot = kset_find(&seen, h, true);
        if (*slot < 0) {
            *slot = 1;
            keep[nkeep++] = i;
        }
    }
    free(applied);
    free(seen.keys);
    free(seen.vals);
    free(seen.used);
    mstate_free(&base);
    mstate_free(&scratch);
    return nkeep;
}

static int cmp_size(const void *a, const void *b)
{
    size_t x = *(const size_t *)a, y = *(const size_t *)b;
    return x < y ? -1 : x > y;
}

static void print_repro(const struct checker *ck, const char *spec)
{
    fprintf(stderr, "  reproduce: crash-check --log %s --workload %s "
            "--format %s", ck->o.log, ck->o.workload, ck->o.format);
    for (size_t i = 0; i < ck->o.ninitial; i++)
        fprintf(stderr, " --initial %s", ck->o.initial[i]);
    if (ck->o.initial_content)
        fprintf(stderr, " --initial-content %s", ck->o.initial_content);
    fprintf(stderr, " --seed %" PRIu64 "%s --dir DIR --diskserve %s "
            "--only '%s'\n", ck->o.seed,
            ck->o.lose_write ? " --lose-covered-write" : "",
            ck->o.diskserve, spec);
    fprintf(stderr, "  files:     crash-replay %s", ck->o.log);
    for (size_t i = 0; i < ck->o.ninitial; i++)
        fprintf(stderr, " --initial %s", ck->o.initial[i]);
    fprintf(stderr, " --state '%s' --out DIR\n", spec);
}

/* Check the chosen states this worker owns (index % jobs == worker),
 * in point order; the bases and the coverage move forward for all. */
static void check_states(struct checker *ck, const struct cstate *v,
                         const size_t *keep, size_t nchosen,
                         unsigned worker, unsigned jobs)
{
    struct mstate base = { 0 }, st = { 0 };
    size_t *applied = xcalloc(ck->lg.nfiles, sizeof *applied);

    if (mstate_init(&base, &ck->lg) < 0)
        die("out of memory");
    link_unchanged(ck, ck->o.dir);
    for (size_t i = worker; i < nchosen && !stop; i += jobs) {
        const struct cstate *s = &v[keep[i]];
        size_t skip = SIZE_MAX;
        if (mstate_advance(&base, &ck->lg, applied, s->k) < 0)
            die("cannot build a base");
        cover_to_point(ck, s->k);
        char *spec = cstate_spec(s);
        if (!spec)
            die("out of memory");
        if (ck->o.lose_write) {
            skip = lose_write(ck, s, &base, &st);
            if (skip == SIZE_MAX) {
                free(spec);
                continue;
            }
            ck->broken++;
        } else if (cstate_materialize(&ck->lg, &base, s, &st) < 0) {
            die("cannot materialize a state");
        }
        if (ck->o.verbose)
            printf("state %s%s\n", spec, skip != SIZE_MAX ? " (write lost)"
                                                          : "");
        ck->checked++;
        if (!check_state(ck, s, &st, skip, spec)) {
            ck->failed++;
            if (ck->reported++ < ck->o.max_reported) {
                if (skip != SIZE_MAX)
                    fprintf(stderr, "  (state lost durable write record "
                            "%" PRIu64 ")\n",
                            ck->lg.recs[ck->lg.changes[skip]].h.seq);
                print_repro(ck, spec);
            }
            if (ck->o.keep) {
                char dir[4096];
                snprintf(dir, sizeof dir, "%s/state-%u-%zu", ck->o.keep,
                         worker, ck->failed);
                mkdir(ck->o.keep, 0755);
                if (mkdir(dir, 0755) == 0 &&
                    mstate_write(&st, &ck->lg, dir) == 0) {
                    link_unchanged(ck, dir);
                    fprintf(stderr, "  kept in %s\n", dir);
                }
            }
        }
        free(spec);
    }
    free(applied);
    mstate_free(&base);
    mstate_free(&st);
}

/* Fork --jobs workers, each in its own scratch directory, and add up
 * their counters. */
static void run_jobs(struct checker *ck, const struct cstate *v,
                     const size_t *keep, size_t nchosen)
{
    unsigned jobs = ck->o.jobs;
    int fds[64];
    pid_t pids[64];

    fflush(NULL);
    for (unsigned w = 0; w < jobs; w++) {
        int p[2];
        if (pipe(p) < 0 || (pids[w] = fork()) < 0)
            die("cannot start a worker");
        if (pids[w] == 0) {
            char dir[4096];
            close(p[0]);
            snprintf(dir, sizeof dir, "%s/job%u", ck->o.dir, w);
            if (mkdir(dir, 0755) < 0 && errno != EEXIST)
                die("cannot make a worker's scratch directory");
            ck->o.dir = dir;
            check_states(ck, v, keep, nchosen, w, jobs);
            dprintf(p[1], "%zu %zu %zu %zu %zu\n", ck->checked, ck->failed,
                    ck->qemu_runs, ck->qemu_hits, ck->broken);
            fflush(NULL);
            _exit(0);
        }
        close(p[1]);
        fds[w] = p[0];
    }
    for (unsigned w = 0; w < jobs; w++) {
        char line[256] = "";
        size_t c[5] = { 0 };
        ssize_t got = read(fds[w], line, sizeof line - 1);
        close(fds[w]);
        int status;
        while (waitpid(pids[w], &status, 0) < 0 && errno == EINTR)
            ;
        if (got <= 0 || sscanf(line, "%zu %zu %zu %zu %zu", &c[0], &c[1],
                               &c[2], &c[3], &c[4]) != 5) {
            fprintf(stderr, "crash-check: worker %u died\n", w);
            ck->failed++;
        }
        ck->checked += c[0];
        ck->failed += c[1];
        ck->qemu_runs += c[2];
        ck->qemu_hits += c[3];
        ck->broken += c[4];
    }
}

int main(int argc, char **argv)
{
    struct checker ck = { 0 };
    struct cstate *v = NULL;
    size_t n = 0;
    double t0 = now();

    parse_opts(argc, argv, &ck.o);
    /* The servers this spawns must neither log nor fail on purpose. */
    unsetenv("DISKSERVE_IO_LOG");
    unsetenv("DISKSERVE_FAULT");
    signal(SIGINT, on_signal);
    signal(SIGTERM, on_signal);
    signal(SIGPIPE, SIG_IGN);
    setup(&ck);

    if (ck.o.only) {
        v = xcalloc(1, sizeof *v);
        if (cstate_parse(&ck.lg, ck.o.only, &v[0]) < 0)
            exit(2);
        n = 1;
    } else if (cstates_enumerate(&ck.lg, ck.o.seed, &v, &n) < 0) {
        die("out of memory");
    }
    size_t *keep = xcalloc(n, sizeof *keep);
    size_t distinct = dedup(&ck, v, n, keep), nchosen = distinct;
    if (nchosen > ck.o.max_states) {
        /* A seeded sample, checked in point order. */
        uint64_t rng = ck.o.seed ^ 0x3C6EF372FE94F82Bull;
        for (size_t i = 0; i < ck.o.max_states; i++) {
            size_t j = i + crash_rand(&rng) % (distinct - i);
            size_t t = keep[i];
            keep[i] = keep[j];
            keep[j] = t;
        }
        nchosen = ck.o.max_states;
        qsort(keep, nchosen, sizeof *keep, cmp_size);
    }
    double t1 = now();
    printf("crash-check: %zu points, %zu states generated, %zu distinct, "
           "checking %zu (seed %" PRIu64 ", %.1f s to enumerate)\n",
           ck.lg.npoints, n, distinct, nchosen, ck.o.seed, t1 - t0);
    fflush(stdout);

    if (ck.o.jobs <= 1)
        check_states(&ck, v, keep, nchosen, 0, 1);
    else
        run_jobs(&ck, v, keep, nchosen);
    double t2 = now();
    printf("crash-check: %zu states checked, %zu failed", ck.checked,
           ck.failed);
    if (ck.o.lose_write)
        printf(", %zu with a lost covered write", ck.broken);
    if (strcmp(ck.o.format, "raw"))
        printf(", %zu qemu-img checks (%zu cached)", ck.qemu_runs,
               ck.qemu_hits);
    printf(", %.1f s, %.1f states/s\n", t2 - t1,
           t2 > t1 ? (double)ck.checked / (t2 - t1) : 0.0);
    if (stop)
        die("interrupted");

    free(keep);
    cstates_free(v, n);
    for (size_t i = 0; i < ck.nsec; i++)
        free(ck.hist[i].reqs);
    free(ck.hist);
    free(ck.reqs);
    free(ck.by_complete);
    free(ck.by_cookie);
    free(ck.initial);
    free(ck.rbuf);
    free(ck.wbuf);
    free(ck.pbuf);
    free(ck.qcache.keys);
    free(ck.qcache.vals);
    free(ck.qcache.used);
    clog_free(&ck.lg);
    return ck.failed ? 1 : 0;
}
