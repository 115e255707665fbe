/* qcow2w-random: a seeded random workload over several NBD connections
 * with many requests in flight, checked against a copy of the disk kept
 * in memory (the shadow).
 *
 * Requests: reads, writes, zero writes with and without NO_HOLE (and
 * FAST_ZERO when the server offers it), trims and flushes, some with
 * FUA, of lengths from one byte to a megabyte, most sector-aligned and
 * some not, half of them in a hot window that moves every few thousand
 * requests.  The sequence of requests depends on the seed alone; the
 * interleaving depends on the server.
 *
 * What is predicted:
 * - requests that change the disk never overlap one another in flight (a
 *   new one waits), so each byte's history is a known sequence and the
 *   shadow applies each change when its reply arrives;
 * - a read is checked only if no change overlapping it was in flight at
 *   any time between its issue and its reply;
 * - a trimmed byte may afterwards read as its old value, as zero, or (with
 *   --reveal FILE, for an image over a backing file) as the backing
 *   file's byte; the first full read of it settles which;
 * - a zero write reads back as zeros, whatever its flags; one refused
 *   with FAST_ZERO leaves each byte old or zero.
 *
 * At the end every request has completed, the whole disk is read and
 * checked, and the shadow is saved (--out) for qemu-img compare.
 * QW_TRACE=FILE logs every request's issue and reply there.
 *
 * Usage: qcow2w-random --uri URI --seed N --requests N --out FILE
 *            [--initial RAW] [--reveal RAW] [--connections N] [--depth N]
 *            [--hot BYTES] [--max-len BYTES]
 */
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "qcow2w-aio.h"

enum kind { K_READ, K_WRITE, K_ZERO, K_TRIM, K_FLUSH, K_COUNT };

static const char *const kind_name[K_COUNT] = {
    "read", "write", "zero", "trim", "flush",
};

/* Weights of the request kinds, in the order of enum kind (--mix). */
static unsigned kind_weight[K_COUNT] = { 30, 36, 14, 10, 3 };

/* Parse --mix KIND:WEIGHT,...; kinds not named keep their weight. */
static void parse_mix(const char *text)
{
    char *copy = strdup(text), *save = NULL;

    for (char *item = strtok_r(copy, ",", &save); item;
         item = strtok_r(NULL, ",", &save)) {
        char *colon = strchr(item, ':');
        enum kind k;
        if (!colon)
            qw_die("--mix: '%s' is not KIND:WEIGHT", item);
        *colon = '\0';
        for (k = 0; k < K_COUNT; k++)
            if (strcmp(item, kind_name[k]) == 0)
                break;
        if (k == K_COUNT)
            qw_die("--mix: unknown kind '%s'", item);
        kind_weight[k] = (unsigned)strtoul(colon + 1, NULL, 0);
    }
    free(copy);
}

/* What a trimmed byte may read as besides its old value. */
#define MAY_ZERO    1
#define MAY_REVEAL  2

struct op {
    bool busy;
    enum kind kind;
    uint64_t id;                /* request number, from 1 */
    uint64_t off, len;
    uint32_t flags;
    unsigned conn;
    bool tainted;               /* a change overlapped this read */
    bool final;                 /* part of the closing full read */
    uint8_t *buf;
    size_t cap;
};

static struct {
    uint64_t seed;
    uint64_t size;
    uint8_t *shadow;            /* what each byte must hold */
    uint8_t *amb;               /* MAY_* bits per byte, 0 when settled */
    uint8_t *reveal;            /* --reveal contents, or NULL */
    struct qw_conn *conns;
    unsigned nconns;
    struct op *ops;
    unsigned nops;
    bool fast_zero;
    uint64_t count[K_COUNT];
    uint64_t checked_reads, tainted_reads, fast_zero_refused;
    uint64_t checked_bytes;
    FILE *trace;                /* QW_TRACE: every issue and reply */
    uint64_t granule;           /* --granule, for zero writes */
    uint64_t align;             /* the export's minimum block size */
} W;

/* Do two requests overlap?  With --granule G, a zero write counts as
 * overlapping anything that touches one of its G-byte granules: qemu-nbd
 * 7.2 loses data when a zero write and a write share a cluster. */
static bool overlaps(const struct op *x, const struct op *y)
{
    uint64_t g = 1;

    if (x->kind == K_ZERO || y->kind == K_ZERO)
        g = W.granule;
    return x->off / g <= (y->off + y->len - 1) / g &&
           y->off / g <= (x->off + x->len - 1) / g;
}

static bool changes_disk(enum kind k)
{
    return k == K_WRITE || k == K_ZERO || k == K_TRIM;
}

static void describe(const struct op *op, char *buf, size_t size)
{
    snprintf(buf, size, "request %" PRIu64 " (%s %" PRIu64 "+%" PRIu64
             " flags 0x%x on connection %u)", op->id, kind_name[op->kind],
             op->off, op->len, op->flags, op->conn);
}

/* Check bytes read at off against the shadow; settle what a trim left
 * open. */
static void check_read(const struct op *op, const uint8_t *got, uint64_t off,
                       uint64_t len)
{
    const uint8_t *want = W.shadow + off;
    const uint8_t *amb = W.amb + off;

    if (memcmp(got, want, len) == 0) {
        memset(W.amb + off, 0, len);
        return;
    }
    for (uint64_t i = 0; i < len; i++) {
        if (got[i] == want[i])
            continue;
        bool ok = false;
        if ((amb[i] & MAY_ZERO) && got[i] == 0)
            ok = true;
        if ((amb[i] & MAY_REVEAL) && got[i] == W.reveal[off + i])
            ok = true;
        if (!ok) {
            char what[160];
            describe(op, what, sizeof what);
            qw_die("%s: byte %" PRIu64 " reads 0x%02x, want 0x%02x%s "
                   "(seed %" PRIu64 ")", what, off + i, got[i], want[i],
                   amb[i] ? " or what a trim may leave" : "", W.seed);
        }
        W.shadow[off + i] = got[i];
    }
    memset(W.amb + off, 0, len);
}

/* Runs inside libnbd: check or apply the finished request.  Must not call
 * libnbd. */
static int op_done(void *opaque, int *error)
{
    struct op *op = opaque;
    char what[160];

    W.conns[op->conn].inflight--;
    op->busy = false;
    if (W.trace)
        fprintf(W.trace, "done %" PRIu64 " %s %" PRIu64 "+%" PRIu64
                " 0x%x err %d%s\n", op->id, kind_name[op->kind], op->off,
                op->len, op->flags, *error, op->tainted ? " tainted" : "");
    if (*error) {
        if (op->kind == K_ZERO && (op->flags & LIBNBD_CMD_FLAG_FAST_ZERO) &&
            *error == ENOTSUP) {
            /* The spec only says SHOULD NOT change the disk: qemu-nbd
             * may have zeroed part of it. */
            for (uint64_t i = 0; i < op->len; i++)
                W.amb[op->off + i] |= MAY_ZERO;
            W.fast_zero_refused++;
            return 1;
        }
        describe(op, what, sizeof what);
        qw_die("%s failed: %s (seed %" PRIu64 ")", what, strerror(*error),
               W.seed);
    }
    switch (op->kind) {
    case K_READ:
        if (op->tainted) {
            W.tainted_reads++;
        } else {
            check_read(op, op->buf, op->off, op->len);
            W.checked_reads++;
            W.checked_bytes += op->len;
        }
        break;
    case K_WRITE:
        memcpy(W.shadow + op->off, op->buf, op->len);
        memset(W.amb + op->off, 0, op->len);
        break;
    case K_ZERO:
        memset(W.shadow + op->off, 0, op->len);
        memset(W.amb + op->off, 0, op->len);
        break;
    case K_TRIM: {
        uint8_t bits = MAY_ZERO | (W.reveal ? MAY_REVEAL : 0);
        for (uint64_t i = 0; i < op->len; i++)
            W.amb[op->off + i] |= bits;
        break;
    }
    case K_FLUSH:
    case K_COUNT:
        break;
    }
    return 1;
}

/* Would op have to wait for a change in flight? */
static bool must_wait(const struct op *op)
{
    if (W.conns[op->conn].inflight >= W.nops / W.nconns)
        return true;
    if (!changes_disk(op->kind))
        return false;
    for (unsigned i = 0; i < W.nops; i++) {
        const struct op *o = &W.ops[i];
        if (o->busy && changes_disk(o->kind) &&
            overlaps(op, o))
            return true;
    }
    return false;
}

static struct op *free_slot(void)
{
    for (unsigned i = 0; i < W.nops; i++)
        if (!W.ops[i].busy)
            return &W.ops[i];
    return NULL;
}

static void ensure_buf(struct op *op, size_t len)
{
    if (op->cap >= len)
        return;
    free(op->buf);
    op->buf = malloc(len);
    if (!op->buf)
        qw_die("out of memory for a %zu-byte buffer", len);
    op->cap = len;
}

/* Start op on its connection; the slot must be free. */
static void issue(struct op *op)
{
    struct nbd_handle *h = W.conns[op->conn].h;
    nbd_completion_callback cb = { .callback = op_done, .user_data = op };
    int64_t cookie = -1;

    if (op->kind == K_READ) {
        op->tainted = false;
        for (unsigned i = 0; i < W.nops; i++) {
            const struct op *o = &W.ops[i];
            if (o->busy && changes_disk(o->kind) &&
                overlaps(op, o))
                op->tainted = true;
        }
    } else if (changes_disk(op->kind)) {
        for (unsigned i = 0; i < W.nops; i++) {
            struct op *o = &W.ops[i];
            if (o->busy && o->kind == K_READ &&
                overlaps(op, o))
                o->tainted = true;
        }
    }
    op->busy = true;
    W.conns[op->conn].inflight++;
    if (W.trace)
        fprintf(W.trace, "issue %" PRIu64 " %s %" PRIu64 "+%" PRIu64
                " 0x%x conn %u\n", op->id, kind_name[op->kind], op->off,
                op->len, op->flags, op->conn);
    switch (op->kind) {
    case K_READ:
        cookie = nbd_aio_pread(h, op->buf, op->len, op->off, cb, 0);
        break;
    case K_WRITE:
        cookie = nbd_aio_pwrite(h, op->buf, op->len, op->off, cb, op->flags);
        break;
    case K_ZERO:
        cookie = nbd_aio_zero(h, op->len, op->off, cb, op->flags);
        break;
    case K_TRIM:
        cookie = nbd_aio_trim(h, op->len, op->off, cb, op->flags);
        break;
    case K_FLUSH:
        cookie = nbd_aio_flush(h, cb, 0);
        break;
    case K_COUNT:
        break;
    }
    if (cookie == -1) {
        char what[160];
        describe(op, what, sizeof what);
        qw_die("%s could not be issued: %s", what, nbd_get_error());
    }
}

/* Draw request id from the generator into op (its slot is free). */
static void draw(struct op *op, uint64_t *rng, uint64_t id, uint64_t hot_start,
                 uint64_t hot, uint64_t max_len)
{
    unsigned total = 0, pick;
    enum kind k;

    for (k = 0; k < K_COUNT; k++)
        total += kind_weight[k];
    pick = (unsigned)qw_below(rng, total);
    for (k = 0; pick >= kind_weight[k]; k++)
        pick -= kind_weight[k];

    op->kind = k;
    op->id = id;
    op->conn = (unsigned)qw_below(rng, W.nconns);
    op->flags = 0;
    op->off = 0;
    op->len = 0;
    op->final = false;
    if (k == K_FLUSH)
        return;

    uint64_t r = qw_below(rng, 100), len;
    if (r < 55)
        len = (1 + qw_below(rng, 8)) * QW_SECTOR;
    else if (r < 85)
        len = (1 + qw_below(rng, 128)) * QW_SECTOR;
    else if (r < 97)
        len = (1 + qw_below(rng, 512)) * QW_SECTOR;
    else
        len = (1 + qw_below(rng, max_len / QW_SECTOR)) * QW_SECTOR;
    uint64_t start = 0, span = W.size;
    if (qw_below(rng, 2) == 0) {
        start = hot_start;
        span = hot;
    }
    if (len > span)
        len = span;
    uint64_t off = start + qw_below(rng, (span - len) / QW_SECTOR + 1) *
                   QW_SECTOR;
    /* One request in five, other than trims, at byte granularity when
     * the export allows it. */
    if (k != K_TRIM && qw_below(rng, 5) == 0 && W.align == 1) {
        uint64_t head = qw_below(rng, QW_SECTOR);
        uint64_t cut = qw_below(rng, QW_SECTOR);
        if (head + cut < len) {
            off += head;
            len -= head + cut;
        }
    }
    if (W.align > QW_SECTOR) {
        off -= off % W.align;
        len = (len + W.align - 1) / W.align * W.align;
        if (off + len > W.size)
            len = W.size - off;
    }
    op->off = off;
    op->len = len;
    if (k != K_READ && qw_below(rng, 10) == 0)
        op->flags |= LIBNBD_CMD_FLAG_FUA;
    if (k == K_ZERO) {
        if (qw_below(rng, 2) == 0)
            op->flags |= LIBNBD_CMD_FLAG_NO_HOLE;
        if (W.fast_zero && qw_below(rng, 8) == 0)
            op->flags |= LIBNBD_CMD_FLAG_FAST_ZERO;
    }
    if (k == K_READ || k == K_WRITE)
        ensure_buf(op, len);
    if (k == K_WRITE)
        qw_fill(op->buf, len, W.seed * 0x100000001b3ULL ^ id);
}

/* Read the whole disk through every connection and check it all. */
static void final_read(void)
{
    const uint64_t chunk = 1024 * 1024;
    uint64_t off = 0, id = 0;

    while (off < W.size) {
        struct op *op = free_slot();
        if (!op) {
            qw_poll(W.conns, W.nconns);
            continue;
        }
        op->kind = K_READ;
        op->id = ++id;
        op->off = off;
        op->len = W.size - off < chunk ? W.size - off : chunk;
        op->flags = 0;
        op->final = true;
        op->conn = (unsigned)(id % W.nconns);
        if (W.conns[op->conn].inflight >= W.nops / W.nconns) {
            qw_poll(W.conns, W.nconns);
            continue;
        }
        ensure_buf(op, op->len);
        issue(op);
        off += op->len;
    }
    qw_drain(W.conns, W.nconns);
}

static void usage(void)
{
    fprintf(stderr,
            "usage: qcow2w-random --uri URI --seed N --requests N --out FILE\n"
            "           [--initial RAW] [--reveal RAW] [--connections N]\n"
            "           [--depth N] [--hot BYTES] [--max-len BYTES]\n");
    exit(2);
}

int main(int argc, char **argv)
{
    static const struct option longopts[] = {
        { "uri", required_argument, NULL, 'u' },
        { "seed", required_argument, NULL, 's' },
        { "requests", required_argument, NULL, 'n' },
        { "out", required_argument, NULL, 'o' },
        { "initial", required_argument, NULL, 'i' },
        { "reveal", required_argument, NULL, 'r' },
        { "connections", required_argument, NULL, 'c' },
        { "depth", required_argument, NULL, 'd' },
        { "hot", required_argument, NULL, 'H' },
        { "max-len", required_argument, NULL, 'm' },
        { "granule", required_argument, NULL, 'g' },
        { "mix", required_argument, NULL, 'x' },
        { NULL, 0, NULL, 0 },
    };
    const char *uri = NULL, *out = NULL, *initial = NULL, *reveal = NULL;
    uint64_t requests = 0, hot = 1024 * 1024, max_len = 1024 * 1024;
    unsigned depth = 16;
    int c;

    W.nconns = 4;
    W.granule = 1;
    while ((c = getopt_long(argc, argv, "", longopts, NULL)) != -1) {
        switch (c) {
        case 'u': uri = optarg; break;
        case 's': W.seed = strtoull(optarg, NULL, 0); break;
        case 'n': requests = strtoull(optarg, NULL, 0); break;
        case 'o': out = optarg; break;
        case 'i': initial = optarg; break;
        case 'r': reveal = optarg; break;
        case 'c': W.nconns = (unsigned)strtoul(optarg, NULL, 0); break;
        case 'd': depth = (unsigned)strtoul(optarg, NULL, 0); break;
        case 'H': hot = qw_parse_size("--hot", optarg); break;
        case 'm': max_len = qw_parse_size("--max-len", optarg); break;
        case 'x': parse_mix(optarg); break;
        case 'g': W.granule = qw_parse_size("--granule", optarg); break;
        default: usage();
        }
    }
    if (!uri || !out || optind != argc || depth == 0 || W.granule == 0)
        usage();

    struct qw_conn conns[64];
    W.conns = conns;
    W.size = qw_connect_all(conns, W.nconns, uri);
    if (W.size < 2 * QW_SECTOR || W.size % QW_SECTOR)
        qw_die("export size %" PRIu64 " is not a whole number of sectors",
               W.size);
    if (hot > W.size)
        hot = W.size;
    if (max_len < QW_SECTOR)
        max_len = QW_SECTOR;
    if (getenv("QW_TRACE")) {
        W.trace = fopen(getenv("QW_TRACE"), "w");
        if (!W.trace)
            qw_die("QW_TRACE: cannot create %s", getenv("QW_TRACE"));
    }
    W.fast_zero = nbd_can_fast_zero(conns[0].h) == 1;
    int64_t min_block = nbd_get_block_size(conns[0].h, LIBNBD_SIZE_MINIMUM);
    W.align = min_block > 0 ? (uint64_t)min_block : 1;
    if (W.size % W.align)
        qw_die("export size %" PRIu64 " is not a multiple of its minimum "
               "block size %" PRIu64, W.size, W.align);
    if (nbd_can_trim(conns[0].h) != 1 || nbd_can_zero(conns[0].h) != 1)
        qw_die("the export offers no trim or no zero writes");

    W.shadow = calloc(1, W.size);
    W.amb = calloc(1, W.size);
    W.nops = W.nconns * depth;
    W.ops = calloc(W.nops, sizeof *W.ops);
    if (!W.shadow || !W.amb || !W.ops)
        qw_die("out of memory for a %" PRIu64 "-byte shadow", W.size);
    if (initial)
        qw_load(initial, W.shadow, W.size);
    if (reveal) {
        W.reveal = malloc(W.size);
        if (!W.reveal)
            qw_die("out of memory");
        qw_load(reveal, W.reveal, W.size);
    }

    printf("qcow2w-random: seed %" PRIu64 ", %" PRIu64 " requests, %u "
           "connections x %u in flight, size %" PRIu64 ", minimum block %"
           PRIu64 "%s\n", W.seed, requests, W.nconns, depth, W.size,
           W.align, W.fast_zero ? ", fast zero offered" : "");
    fflush(stdout);

    uint64_t rng = W.seed, hot_start = 0;
    double t0 = qw_now();
    for (uint64_t id = 1; id <= requests; id++) {
        if (id % 4096 == 1)
            hot_start = qw_below(&rng, (W.size - hot) / QW_SECTOR + 1) *
                        QW_SECTOR;
        struct op *op;
        while (!(op = free_slot()))
            qw_poll(conns, W.nconns);
        draw(op, &rng, id, hot_start, hot, max_len);
        while (must_wait(op))
            qw_poll(conns, W.nconns);
        W.count[op->kind]++;
        issue(op);
    }
    qw_drain(conns, W.nconns);
    double t1 = qw_now();
    final_read();
    qw_close_all(conns, W.nconns);
    qw_save(out, W.shadow, W.size);
    if (W.trace)
        fclose(W.trace);

    printf("qcow2w-random: %.0f requests/s; read %" PRIu64 " write %" PRIu64
           " zero %" PRIu64 " trim %" PRIu64 " flush %" PRIu64 "; %" PRIu64
           " reads checked (%" PRIu64 " MiB), %" PRIu64 " overlapped a "
           "change; %" PRIu64 " fast zeros refused\n",
           requests / (t1 - t0 > 0 ? t1 - t0 : 1), W.count[K_READ],
           W.count[K_WRITE], W.count[K_ZERO], W.count[K_TRIM],
           W.count[K_FLUSH], W.checked_reads, W.checked_bytes >> 20,
           W.tainted_reads, W.fast_zero_refused);
    for (unsigned i = 0; i < W.nops; i++)
        free(W.ops[i].buf);
    free(W.ops);
    free(W.shadow);
    free(W.amb);
    free(W.reveal);
    return 0;
}
