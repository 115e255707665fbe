/* qcow2 compressed clusters: read the compressed bytes a descriptor
 * points to and inflate them into one whole cluster, with zlib (raw
 * deflate, no header) or zstd (one or more frames), as the header's
 * compression_type says.
 *
 * Decompression needs two buffers (up to twice the cluster size in, one
 * cluster out) and a decoder context.  They live in scratch objects kept
 * on a per-image free list: a reader takes one, uses it and gives it
 * back, so in steady state (once there is one per concurrent reader)
 * nothing is allocated.  Each scratch remembers the last cluster it
 * inflated, which makes small sequential reads of a compressed image
 * inflate each cluster once instead of once per request.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>
#include <zlib.h>
#include <zstd.h>

#include "io.h"
#include "qcow2.h"

struct scratch {
    struct scratch *next;
    z_stream zs;
    bool zs_ready;
    ZSTD_DCtx *zd;
    uint8_t *in;                    /* 2 * cluster_size */
    uint8_t *out;                   /* cluster_size */
    bool have_last;
    uint64_t last_coffset;          /* descriptor of what out holds */
    uint64_t last_csize;
};

struct qcow2_scratch_pool {
    pthread_mutex_t lock;
    struct scratch *free;
    uint32_t cluster_size;
};

struct qcow2_scratch_pool *qcow2_scratch_pool_create(uint32_t cluster_size)
{
    struct qcow2_scratch_pool *p = calloc(1, sizeof *p);
    if (!p)
        return NULL;
    if (pthread_mutex_init(&p->lock, NULL) != 0) {
        free(p);
        errno = ENOMEM;
        return NULL;
    }
    p->cluster_size = cluster_size;
    return p;
}

static void scratch_free(struct scratch *sc)
{
    if (sc->zs_ready)
        inflateEnd(&sc->zs);
    ZSTD_freeDCtx(sc->zd);
    free(sc->in);
    free(sc->out);
    free(sc);
}

void qcow2_scratch_pool_destroy(struct qcow2_scratch_pool *p)
{
    if (!p)
        return;
    while (p->free) {
        struct scratch *sc = p->free;
        p->free = sc->next;
        scratch_free(sc);
    }
    pthread_mutex_destroy(&p->lock);
    free(p);
}

/* Take a scratch from the pool, making one when it is empty. */
static struct scratch *scratch_get(struct qcow2_scratch_pool *p)
{
    pthread_mutex_lock(&p->lock);
    struct scratch *sc = p->free;
    if (sc)
        p->free = sc->next;
    pthread_mutex_unlock(&p->lock);
    if (sc)
        return sc;

    sc = calloc(1, sizeof *sc);
    if (!sc)
        return NULL;
    sc->in = malloc(2 * (size_t)p->cluster_size);
    sc->out = malloc(p->cluster_size);
    if (!sc->in || !sc->out) {
        scratch_free(sc);
        return NULL;
    }
    return sc;
}

static void scratch_put(struct qcow2_scratch_pool *p, struct scratch *sc)
{
    pthread_mutex_lock(&p->lock);
    sc->next = p->free;
    p->free = sc;
    pthread_mutex_unlock(&p->lock);
}

/* Inflate raw deflate data into exactly out_len bytes; 0 or -EIO. */
static int inflate_zlib(struct scratch *sc, const uint8_t *in, size_t in_len,
                        uint8_t *out, size_t out_len)
{
    if (!sc->zs_ready) {
        memset(&sc->zs, 0, sizeof sc->zs);
        /* Negative window bits: raw deflate; 15 accepts any window. */
        if (inflateInit2(&sc->zs, -15) != Z_OK)
            return -ENOMEM;
        sc->zs_ready = true;
    } else if (inflateReset(&sc->zs) != Z_OK) {
        return -EIO;
    }
    sc->zs.next_in = (Bytef *)in;
    sc->zs.avail_in = (uInt)in_len;
    sc->zs.next_out = out;
    sc->zs.avail_out = (uInt)out_len;
    int r = inflate(&sc->zs, Z_FINISH);
    /* The descriptor counts whole sectors, so input may be left over
     * (Z_BUF_ERROR); what matters is a full cluster of output. */
    if ((r == Z_STREAM_END || r == Z_BUF_ERROR) && sc->zs.avail_out == 0)
        return 0;
    return -EIO;
}

/* Decompress zstd frames until out_len bytes are produced; 0 or -EIO. */
static int inflate_zstd(struct scratch *sc, const uint8_t *in, size_t in_len,
                        uint8_t *out, size_t out_len)
{
    if (!sc->zd) {
        sc->zd = ZSTD_createDCtx();
        if (!sc->zd)
            return -ENOMEM;
    } else {
        ZSTD_DCtx_reset(sc->zd, ZSTD_reset_session_only);
    }
    ZSTD_inBuffer ib = { in, in_len, 0 };
    ZSTD_outBuffer ob = { out, out_len, 0 };
    size_t r = 0;
    while (ob.pos < ob.size) {
        size_t in_before = ib.pos, out_before = ob.pos;
        r = ZSTD_decompressStream(sc->zd, &ob, &ib);
        if (ZSTD_isError(r))
            return -EIO;
        if (ib.pos == in_before && ob.pos == out_before)
            return -EIO;            /* no progress: truncated input */
    }
    /* A frame still wanting to produce output means more data than a
     * cluster: damaged. */
    return r > 0 ? -EIO : 0;
}

int qcow2_read_compressed(struct qcow2_state *s, const struct qcow2_run *run,
                          uint64_t within, void *buf, uint64_t len)
{
    struct scratch *sc = scratch_get(s->scratch);
    int err = 0;

    if (!sc)
        return -ENOMEM;
    if (!sc->have_last || sc->last_coffset != run->coffset ||
        sc->last_csize != run->csize) {
        sc->have_last = false;
        /* csize <= 2 * cluster_size by the descriptor's width. */
        err = io_pread_full(s->fd, sc->in, run->csize, run->coffset);
        if (err == -ENODATA)
            err = 0;    /* the last cluster may end before its sector */
        if (err) {
            img_log("qcow2: %s: reading compressed cluster at 0x%" PRIx64
                    ": %s", s->img.path, run->coffset, strerror(-err));
            goto out_put;
        }
        if (s->h.compression_type == QCOW2_COMPRESS_ZSTD)
            err = inflate_zstd(sc, sc->in, run->csize, sc->out,
                               s->cluster_size);
        else
            err = inflate_zlib(sc, sc->in, run->csize, sc->out,
                               s->cluster_size);
        if (err) {
            img_log("qcow2: %s: compressed cluster for guest offset 0x%"
                    PRIx64 " at 0x%" PRIx64 " (%" PRIu64 " bytes) does not "
                    "decompress to a cluster", s->img.path,
                    run->cluster_guest, run->coffset, run->csize);
            err = err == -ENOMEM ? err : -EIO;
            goto out_put;
        }
        sc->have_last = true;
        sc->last_coffset = run->coffset;
        sc->last_csize = run->csize;
    }
    memcpy(buf, sc->out + within, len);
out_put:
    scratch_put(s->scratch, sc);
    return err;
}
