/* The qcow2 driver: open, read, write, write_zeroes, trim, flush, block
 * status and non-blocking mapping of qcow2 images (versions 2 and 3),
 * with backing chains, external data files, compressed clusters,
 * extended L2 entries, internal snapshots, lazy refcounts and
 * encryption.  The other files of this folder do the parts; this one
 * ties them into the img_ops table.
 *
 * Write order (DESIGN.md, "Metadata flush ordering"); every change to
 * the file goes through formats/io.h, tagged with what it writes:
 *
 *   1. data before mapping: guest data is written into its clusters, and
 *      L2 tables are written back (flush, FUA, cache eviction) only after
 *      a sync that follows it;
 *   2. refcount before L2: the refcount blocks counting new clusters are
 *      written before that same sync, so before any L2 table (or L1
 *      entry) that points at them; with lazy refcounts they are not
 *      written until close, and the dirty bit goes to disk first;
 *   3. L2 before L1: a new L2 table is written and synced before the L1
 *      entry that points to it;
 *   4. L2 before refcount on free: a cleared L2 (or L1) entry is written
 *      and synced before the refcount of the cluster it named drops, and
 *      the cluster is handed out again only after every request that
 *      could still touch it has ended;
 *   5. a new refcount block, and the refcount that counts its own cluster
 *      when another block holds it, are written and synced before the
 *      refcount table entry for it; a new refcount table (or L1 table) with its
 *      blocks before the header that moves to it, and the header before
 *      the old table is freed;
 *   6. FLUSH and FUA: all of that, then a sync tagged FLUSH (nothing at
 *      all when nothing was written since the last sync).
 *
 * DISKSERVE_QCOW2_BREAK=RULE[,RULE] (tests only) breaks a rule on purpose,
 * so the crash tests can show that they catch it:
 *
 *   refcount-before-l2   L2 tables written before the refcount blocks
 *   l2-before-refcount   frees applied without waiting for the cleared
 *                        L2 entry to reach the disk
 *   data-before-mapping  every allocating write's L2 table written right
 *                        after the data, with no sync in between
 *   l2-before-l1         L1 entries written as soon as a new L2 table is
 *                        allocated, before the table itself
 *   block-count-before-table
 *                        a new refcount block linked into the refcount
 *                        table while its own refcount, held in another
 *                        block, is still only in the cache
 *
 * Locking: a read-only image never changes after open except for two
 * shared objects with their own short-held mutexes: the L2 table cache
 * (cache.c) and the pool of decompression scratch buffers (compress.c);
 * readers take no other lock.  A read-write image adds one metadata
 * mutex (s->lock) guarding the L1 table, the contents of both table
 * caches, the refcount table, the allocator, queued frees, in-flight
 * records and the request list (inflight.c).  It is held for lookups and
 * metadata writes, but never across guest data I/O: in-place writes and
 * reads of different clusters run in parallel, and allocating writes
 * copy, encrypt and write their data unlocked.  Nor is it held across
 * the syncs of a FLUSH or FUA in the common cases (flush.c: L2 tables
 * are written in rounds around unlocked syncs, one flush at a time under
 * a flush lock taken first), nor across the read of an L2 table missing
 * from the cache (cluster.c, qcow2_fetch_unlocked); what still syncs
 * under it is rare: a new L1 entry, frees waiting for their cleared
 * reference, table growth, a dirty table evicted.  map_nowait only
 * tries the lock and answers -EAGAIN when it is taken, so the event loop
 * thread never waits on disk I/O; only when every file is in memory
 * (tmpfs) may the loop thread write inline (img.nowait_writes) and take
 * the lock like any writer, since then nobody holds it across slow I/O.
 * Lock order: the flush lock, s->lock, then a cache's mutex, then the
 * scratch pool's; the sync lock (sync.c) last of all: nothing is taken
 * while it is held.
 */
#include <endian.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <linux/magic.h>
#include <stdlib.h>
#include <string.h>
#include <sys/statfs.h>
#include <unistd.h>

#include "check.h"
#include "crypto.h"
#include "io.h"
#include "qcow2.h"

/* The largest passphrase file we read. */
#define MAX_PASSPHRASE  4096

static int qcow2_probe(const uint8_t *buf, size_t len)
{
    uint32_t magic;

    if (len < 8)
        return 0;
    memcpy(&magic, buf, 4);
    return be32toh(magic) == QCOW2_MAGIC ? 100 : 0;
}

/* Read the active or a snapshot's L1 table into s->l1. */
static int load_l1(struct qcow2_state *s, uint64_t offset, uint32_t size)
{
    s->l1_size = size;
    s->l1_offset = offset;
    if (size == 0)
        return 0;
    s->l1 = malloc((size_t)size * 8);
    if (!s->l1)
        return -ENOMEM;
    int err = io_pread_full(s->fd, s->l1, (uint64_t)size * 8, offset);
    if (err) {
        img_log("qcow2: %s: reading L1 table at 0x%" PRIx64 ": %s",
                s->img.path, offset, strerror(-err));
        return err == -ENODATA ? -EINVAL : err;
    }
    for (uint32_t i = 0; i < size; i++)
        s->l1[i] = be64toh(s->l1[i]);
    return 0;
}

/* Choose the L1 table to serve: the active one or a snapshot's. */
static int select_l1(struct qcow2_state *s, const char *snapshot)
{
    const char *path = s->img.path;

    s->img.size = s->h.size;
    if (!snapshot)
        return load_l1(s, s->h.l1_table_offset, s->h.l1_size);

    if (s->h.incompatible & QCOW2_INCOMPAT_DATA_FILE) {
        img_log("qcow2: %s: internal snapshots are not supported with an "
                "external data file", path);
        return -EINVAL;
    }
    const struct qcow2_snapshot *sn = qcow2_find_snapshot(s, snapshot);
    if (!sn) {
        img_log("qcow2: %s: no snapshot with ID or name '%.64s' (%" PRIu32
                " snapshots)", path, snapshot, s->nb_snapshots);
        return -ENOENT;
    }
    int err = qcow2_check_table(s, "snapshot L1 table", sn->l1_table_offset,
                                sn->l1_size, 8, QCOW2_MAX_L1_BYTES);
    if (err)
        return err;
    if (sn->disk_size)
        s->img.size = sn->disk_size & ~511ull;
    return load_l1(s, sn->l1_table_offset, sn->l1_size);
}

/* Read the passphrase file; a single trailing newline is not part of the
 * passphrase (echo adds one). */
static int read_passphrase(const char *path, const char *key_file,
                           char *pass, size_t *len)
{
    int fd = open(key_file, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        int err = -errno;
        img_log("qcow2: %s: key file '%s': %s", path, key_file,
                strerror(errno));
        return err;
    }
    size_t n = 0;
    for (;;) {
        ssize_t r = read(fd, pass + n, MAX_PASSPHRASE - n);
        if (r < 0 && errno == EINTR)
            continue;
        if (r < 0) {
            int err = -errno;
            img_log("qcow2: %s: key file '%s': %s", path, key_file,
                    strerror(errno));
            close(fd);
            return err;
        }
        if (r == 0)
            break;
        n += (size_t)r;
        if (n == MAX_PASSPHRASE) {
            img_log("qcow2: %s: key file '%s' longer than %d bytes", path,
                    key_file, MAX_PASSPHRASE);
            close(fd);
            return -EINVAL;
        }
    }
    close(fd);
    if (n > 0 && pass[n - 1] == '\n')
        n--;
    if (n > 0 && pass[n - 1] == '\r')
        n--;
    *len = n;
    return 0;
}

/* Unlock the image's encryption with the key file's passphrase, running
 * at most luks_max_iter PBKDF2 iterations (0: the default). */
static int open_crypto(struct qcow2_state *s, const char *key_file,
                       uint64_t luks_max_iter)
{
    const char *path = s->img.path;
    const char *method = s->h.crypt_method == QCOW2_CRYPT_AES
                         ? "AES" : "LUKS";
    char pass[MAX_PASSPHRASE];
    size_t len = 0;
    int err;

    if (!key_file) {
        img_log("qcow2: %s: image is encrypted (%s): a passphrase file is "
                "required (--key-file)", path, method);
        return -EACCES;
    }
    err = read_passphrase(path, key_file, pass, &len);
    if (err)
        return err;
    if (s->h.crypt_method == QCOW2_CRYPT_AES) {
        err = qcow2_crypto_open_aes(pass, len, &s->crypto);
    } else {
        err = qcow2_crypto_open_luks(path, s->fd, s->h.fde_offset,
                                     s->h.fde_length, pass, len,
                                     luks_max_iter, &s->crypto);
    }
    memset(pass, 0, sizeof pass);
    __asm__ volatile("" : : "r"(pass) : "memory");
    if (err)
        return err;     /* logged by the crypto code */
    s->iv_is_host = qcow2_crypto_iv_is_host(s->crypto);
    return 0;
}

static void qcow2_close(struct image *img)
{
    struct qcow2_state *s = qcow2_from_img(img);

    if (!s)
        return;
    /* A failed open never writes: its frontier and sizes are not set up,
     * and close would truncate the file to them. */
    if (s->opened && s->writable)
        qcow2_close_writable(s);
    img_close(s->backing);
    qcow2_cache_destroy(s->cache);
    qcow2_cache_destroy(s->rc_cache);
    free(s->reftable);
    free(s->free_ext);
    free(s->frees);
    free(s->zero_cluster);
    qcow2_meta_clear(s);
    qcow2_scratch_pool_destroy(s->scratch);
    qcow2_crypto_free(s->crypto);
    qcow2_free_snapshots(s);
    qcow2_bitmaps_free(s);
    qcow2_header_free(&s->h);
    free(s->l1);
    if (s->data_fd >= 0 && s->data_fd != s->fd)
        close(s->data_fd);
    if (s->fd >= 0)
        io_close(s->fd);
    free(s->data_path);
    free(s->img.path);
    pthread_mutex_destroy(&s->prealloc_lock);
    pthread_mutex_destroy(&s->lock);
    pthread_mutex_destroy(&s->pin_lock);
    free(s->pins);
    pthread_mutex_destroy(&s->flush_lock);
    pthread_mutex_destroy(&s->sync_lock);
    pthread_cond_destroy(&s->inflight_done);
    pthread_rwlock_destroy(&s->bm_lock);
    pthread_mutex_destroy(&s->cs_lock);
    pthread_cond_destroy(&s->cs_cond);
    free(s);
}

/* Default cache: every L2 table of the served L1, up to 32 MiB. */
static size_t default_cache_size(const struct qcow2_state *s)
{
    uint64_t all = (uint64_t)s->l1_size * s->cluster_size;
    return all < QCOW2_DEFAULT_CACHE ? (size_t)all : QCOW2_DEFAULT_CACHE;
}

/* Whether every file a read may touch is on tmpfs. */
static bool all_on_tmpfs(const struct qcow2_state *s)
{
    struct statfs sfs;

    if (fstatfs(s->data_fd, &sfs) != 0 || sfs.f_type != TMPFS_MAGIC)
        return false;
    if (s->data_fd != s->fd &&
        (fstatfs(s->fd, &sfs) != 0 || sfs.f_type != TMPFS_MAGIC))
        return false;
    return !s->backing || s->backing->nowait_reads;
}

/* Flag the enabled stored bitmaps in use before any write can change
 * the disk: until they are stored at close, the file's copy is stale.
 * In crash-safe mode, store them instead as our extension describes
 * (bitmap-store.c), so that the file's copy stays a superset. */
static int mark_bitmaps_in_use(struct qcow2_state *s)
{
    bool any = false;

    if (s->n_bm_disk == 0)
        return 0;
    bool *mask = calloc(s->n_bm_disk, sizeof *mask);
    if (!mask)
        return -ENOMEM;
    for (size_t i = 0; i < s->n_bitmaps; i++) {
        const struct qcow2_bitmap *b = s->bitmaps[i];
        if (b->recording && !b->inconsistent && b->disk_idx >= 0) {
            mask[b->disk_idx] = true;
            any = true;
        }
    }
    int err = 0;
    if (any) {
        qcow2_lock(s);
        err = s->bm_cs ? qcow2_bitmaps_store(s, true)
                       : qcow2_bitmaps_mark_in_use(s, mask);
        qcow2_unlock(s);
    }
    free(mask);
    return err;
}

/* The ordering rules DISKSERVE_QCOW2_BREAK names, or -EINVAL. */
static int parse_breaks(const char *path, unsigned *out)
{
    static const struct {
        const char *name;
        unsigned bit;
    } rules[] = {
        { "refcount-before-l2", QCOW2_BREAK_REFCOUNT_BEFORE_L2 },
        { "l2-before-refcount", QCOW2_BREAK_L2_BEFORE_REFCOUNT },
        { "data-before-mapping", QCOW2_BREAK_DATA_BEFORE_MAPPING },
        { "l2-before-l1", QCOW2_BREAK_L2_BEFORE_L1 },
        { "block-count-before-table", QCOW2_BREAK_BLOCK_COUNT },
    };
    const char *env = getenv("DISKSERVE_QCOW2_BREAK");

    *out = 0;
    while (env && *env) {
        size_t n = strcspn(env, ",");
        size_t i;
        for (i = 0; i < sizeof rules / sizeof *rules; i++)
            if (strlen(rules[i].name) == n &&
                strncmp(rules[i].name, env, n) == 0)
                break;
        if (i == sizeof rules / sizeof *rules) {
            img_log("qcow2: %s: DISKSERVE_QCOW2_BREAK: unknown rule "
                    "'%.*s'", path, (int)(n < 64 ? n : 64), env);
            return -EINVAL;
        }
        *out |= rules[i].bit;
        env += n + (env[n] == ',');
    }
    if (*out)
        img_log("qcow2: %s: ordering rules broken on purpose (0x%x): "
                "for tests only", path, *out);
    return 0;
}

/* Clear the autoclear bits this driver does not maintain, as the spec
 * asks of writers. */
static int clear_unknown_autoclear(struct qcow2_state *s)
{
    /* Our crash-safe bit only in crash-safe mode, whose store at open
     * replaces the bitmaps it vouches for before any guest write; in
     * plain mode a crash must find them stale. */
    uint64_t known = QCOW2_AUTOCLEAR_BITMAPS | QCOW2_AUTOCLEAR_DATA_RAW;
    if (s->bm_cs)
        known |= QCOW2_AUTOCLEAR_DS_CRASH_SAFE;

    if (s->h.version < 3 || !(s->h.autoclear & ~known))
        return 0;
    uint64_t v = htobe64(s->h.autoclear & known);
    int err = io_pwrite_tag(s->fd, &v, 8, 88, IO_TAG_HEADER);
    if (!err)
        err = qcow2_sync(s, IO_TAG_HEADER);
    if (err) {
        img_log("qcow2: %s: clearing unknown autoclear bits: %s",
                s->img.path, strerror(-err));
        return err;
    }
    s->h.autoclear &= known;
    return 0;
}

/* The dirty bit says the refcounts on disk may be wrong (a crash with
 * lazy refcounts): recount and repair them before writing anything. */
static int repair_dirty(struct qcow2_state *s)
{
    const char *path = s->img.path;
    struct qcow2_check_result res;

    img_log("qcow2: %s: image is dirty (incompatible bit 0): repairing "
            "its refcounts", path);
    int err = qcow2_check(s, QCOW2_REPAIR_LEAKS | QCOW2_REPAIR_ERRORS,
                          &res);
    if (err) {
        img_log("qcow2: %s: repairing the dirty image failed: %s", path,
                strerror(-err));
        return err;
    }
    if (res.corruptions > 0 || res.check_errors > 0 ||
        (s->h.incompatible & QCOW2_INCOMPAT_DIRTY)) {
        img_log("qcow2: %s: dirty image still has %" PRIu64 " errors after "
                "repair; open it read-only", path,
                res.corruptions + res.check_errors);
        return -EROFS;
    }
    img_log("qcow2: %s: repaired: %" PRIu64 " leaked clusters and %" PRIu64
            " errors fixed", path, res.leaks_fixed, res.corruptions_fixed);
    qcow2_cache_drop_all(s->cache);
    return 0;
}

/* Set up what writing needs, after everything else is open. */
static int open_writable(struct qcow2_state *s, size_t cache)
{
    int err = parse_breaks(s->img.path, &s->breaks);
    if (err)
        return err;
    io_register(s->fd, s->img.path);
    if (s->data_fd != s->fd)
        io_register(s->data_fd, s->data_path);
    if (s->h.incompatible & QCOW2_INCOMPAT_DIRTY) {
        err = repair_dirty(s);
        if (err)
            return err;
    }
    s->zero_cluster = calloc(1, s->cluster_size);
    if (!s->zero_cluster)
        return -ENOMEM;
    s->lazy = s->h.compatible & QCOW2_COMPAT_LAZY_REFCOUNTS;
    s->writable = true;
    err = qcow2_writable_setup(s, cache / 4);
    if (err)
        return err;
    qcow2_flush_setup(s);
    return clear_unknown_autoclear(s);
}

static int qcow2_open(const struct img_open_args *args, struct image **out)
{
    struct qcow2_state *s = calloc(1, sizeof *s);
    bool read_only = args->read_only || args->snapshot;
    int err;

    if (!s)
        return -ENOMEM;
    s->fd = s->data_fd = -1;
    pthread_mutex_init(&s->prealloc_lock, NULL);
    pthread_mutex_init(&s->lock, NULL);
    pthread_mutex_init(&s->pin_lock, NULL);
    pthread_mutex_init(&s->flush_lock, NULL);
    pthread_mutex_init(&s->sync_lock, NULL);
    pthread_cond_init(&s->inflight_done, NULL);
    /* Writers first: a steady stream of guest writes (readers here)
     * must not starve bitmap_apply.  Nobody takes it shared twice. */
    pthread_rwlockattr_t rwa;
    pthread_rwlockattr_init(&rwa);
    pthread_rwlockattr_setkind_np(&rwa,
                                  PTHREAD_RWLOCK_PREFER_WRITER_NONRECURSIVE_NP);
    pthread_rwlock_init(&s->bm_lock, &rwa);
    pthread_rwlockattr_destroy(&rwa);
    pthread_mutex_init(&s->cs_lock, NULL);
    pthread_cond_init(&s->cs_cond, NULL);
    s->img.path = strdup(args->path);
    if (!s->img.path) {
        err = -ENOMEM;
        goto out_close;
    }
    s->fd = io_open(args->path, !read_only);
    if (s->fd < 0) {
        err = s->fd;
        s->fd = -1;
        if (!io_is_remote_name(args->path))   /* the backend said why */
            img_log("qcow2: %s: %s", args->path, strerror(-err));
        goto out_close;
    }
    err = qcow2_read_header(s, read_only);
    if (err)
        goto out_close;
    err = qcow2_read_snapshots(s);
    if (err)
        goto out_close;
    err = select_l1(s, args->snapshot);
    if (err)
        goto out_close;
    /* Bitmaps describe the active disk of the top image only. */
    if (args->depth == 0 && !args->snapshot) {
        err = qcow2_bitmaps_load(s, read_only);
        if (err)
            goto out_close;
    }
    err = qcow2_open_data_file(s, read_only);
    if (err)
        goto out_close;
    if (s->h.crypt_method != QCOW2_CRYPT_NONE) {
        err = open_crypto(s, args->key_file, args->luks_max_iter);
        if (err)
            goto out_close;
    }
    size_t cache = args->cache_size ? args->cache_size
                                    : default_cache_size(s);
    s->cache = qcow2_cache_create(s->img.path, s->fd, s->cluster_size,
                                  cache);
    s->scratch = qcow2_scratch_pool_create(s->cluster_size);
    if (!s->cache || !s->scratch) {
        err = -ENOMEM;
        goto out_close;
    }
    err = qcow2_open_backing(s, args);
    if (err)
        goto out_close;
    if (!read_only) {
        s->bm_cs = args->bitmaps_crash_safe && s->h.version >= 3;
        err = open_writable(s, cache);
        if (!err)
            err = mark_bitmaps_in_use(s);
        if (err)
            goto out_close;
    }

    s->img.ops = &qcow2_ops;
    s->img.read_only = read_only;
    s->img.multi_conn = true;
    s->img.fast_zero = !read_only;
    s->img.has_depth = true;
    s->img.min_block = s->crypto ? QCOW2_CRYPTO_SECTOR : 1;
    /* As qemu-nbd: clients such as the kernel may take the preferred
     * size as a block size, which must stay small. */
    s->img.pref_block = 4096;
    s->img.nowait_reads = all_on_tmpfs(s);
    /* A writable image frees and reuses clusters; a backing file is
     * always opened read-only. */
    s->img.map_stable = read_only;
    /* On memory the driver's waits are short: the metadata lock is never
     * held across slow I/O and in-flight writes finish quickly, so the
     * server may write inline rather than hand off to a worker.  Not
     * with encryption, which costs real time per byte. */
    s->img.nowait_writes = !read_only && s->img.nowait_reads && !s->crypto;
    s->opened = true;
    *out = &s->img;
    return 0;

out_close:
    qcow2_close(&s->img);
    return err;
}

int qcow2_read_backing(struct qcow2_state *s, uint8_t *buf, uint64_t len,
                       uint64_t off)
{
    struct image *b = s->backing;
    uint64_t n = 0;

    if (b && off < b->size) {
        n = b->size - off < len ? b->size - off : len;
        int err = b->ops->read(b, buf, n, off);
        if (err)
            return err;
    }
    if (n < len)
        memset(buf + n, 0, len - n);
    return 0;
}

/* Read and decrypt whole sectors at host offset `host` into buf; iv is
 * the IV offset of buf[0]. */
static int read_sectors(struct qcow2_state *s, uint8_t *buf, uint64_t len,
                        uint64_t host, uint64_t iv)
{
    int err = io_pread_full(s->data_fd, buf, len, host);
    if (err && err != -ENODATA)
        return err;
    return qcow2_crypto_decrypt(s->crypto, iv, buf, len);
}

/* Read encrypted data: whole sectors in place, partial ones through a
 * sector on the stack. */
static int read_encrypted(struct qcow2_state *s, uint8_t *buf, uint64_t len,
                          uint64_t host, uint64_t guest)
{
    const uint64_t sec = QCOW2_CRYPTO_SECTOR;
    uint8_t tmp[QCOW2_CRYPTO_SECTOR];
    uint64_t iv = s->iv_is_host ? host : guest;
    int err;

    while (len > 0) {
        uint64_t head = host & (sec - 1);
        if (head == 0 && len >= sec) {
            uint64_t n = len & ~(sec - 1);
            err = read_sectors(s, buf, n, host, iv);
            if (err)
                return err;
            buf += n, len -= n, host += n, iv += n;
            continue;
        }
        err = read_sectors(s, tmp, sec, host - head, iv - head);
        if (err)
            return err;
        uint64_t n = sec - head < len ? sec - head : len;
        memcpy(buf, tmp + head, n);
        buf += n, len -= n, host += n, iv += n;
    }
    return 0;
}

int qcow2_read_host(struct qcow2_state *s, uint8_t *buf, uint64_t len,
                    uint64_t host, uint64_t off)
{
    int err;

    if (s->crypto)
        err = read_encrypted(s, buf, len, host, off);
    else
        err = io_pread_full(s->data_fd, buf, len, host);
    /* Past the end of the file reads as zeros, as in qemu; the
     * cluster's start was checked to be inside the file. */
    if (err == -ENODATA)
        err = 0;
    if (err)
        img_log("qcow2: %s: read %" PRIu64 " bytes at host offset 0x%"
                PRIx64 " (guest 0x%" PRIx64 "): %s", s->img.path, len, host,
                off, strerror(-err));
    return err;
}

static int qcow2_read(struct image *img, void *buf, uint64_t len,
                      uint64_t off)
{
    struct qcow2_state *s = qcow2_from_img(img);
    uint8_t *p = buf;
    struct qcow2_run run;
    struct qcow2_req req;
    int err = 0;

    qcow2_lock(s);
    qcow2_req_begin(s, &req);
    while (len > 0) {
        err = qcow2_map_fetching(s, off, len, 0, &run);
        if (err)
            break;
        qcow2_unlock(s);
        uint64_t n = run.length;
        switch (run.kind) {
        case QCOW2_UNALLOCATED:
            err = qcow2_read_backing(s, p, n, off);
            break;
        case QCOW2_ZERO:
            memset(p, 0, n);
            break;
        case QCOW2_DATA:
            err = qcow2_read_host(s, p, n, run.host_offset, off);
            break;
        case QCOW2_COMPRESSED:
            err = qcow2_read_compressed(s, &run, off - run.cluster_guest,
                                        p, n);
            break;
        }
        qcow2_lock(s);
        if (err)
            break;
        p += n;
        off += n;
        len -= n;
    }
    qcow2_req_finish(s, &req);
    qcow2_unlock(s);
    return err;
}

static int qcow2_flush(struct image *img)
{
    struct qcow2_state *s = qcow2_from_img(img);

    if (!s->writable)
        return 0;       /* read-only: nothing to make durable */
    qcow2_lock(s);
    int err = qcow2_flush_ordered(s, IO_TAG_FLUSH);
    qcow2_unlock(s);
    return err;
}

/* qcow2_map under the metadata lock. */
static int map_locked(struct qcow2_state *s, uint64_t off, uint64_t len,
                      unsigned flags, struct qcow2_run *run)
{
    qcow2_lock(s);
    int err = qcow2_map_fetching(s, off, len, flags, run);
    qcow2_unlock(s);
    return err;
}

/* Describe an unallocated range from the backing chain.  Returns 0,
 * 1 when e is full, or -errno. */
static int status_backing(struct qcow2_state *s, uint64_t off, uint64_t len,
                          struct img_extents *e)
{
    struct image *b = s->backing;
    uint64_t end = off + len;

    if (!b)
        return img_extents_add(e, len, IMG_EXT_HOLE | IMG_EXT_ZERO, 0)
               ? 0 : 1;
    while (off < end && off < b->size) {
        struct img_extent tmp[64];
        struct img_extents be = { tmp, 0, 64, off };
        uint64_t n = end < b->size ? end - off : b->size - off;
        int err = b->ops->block_status(b, n, off, &be);
        if (err)
            return err;
        uint64_t got = 0;
        for (size_t i = 0; i < be.n && got < n; i++) {
            uint64_t l = tmp[i].length < n - got ? tmp[i].length : n - got;
            uint32_t depth = tmp[i].depth ? tmp[i].depth + 1 : 0;
            if (!img_extents_add(e, l, tmp[i].flags, depth))
                return 1;
            got += l;
        }
        if (got == 0)
            return -EIO;    /* the backing driver described nothing */
        off += got;
    }
    /* Past the end of a shorter backing file: zeros that qemu counts as
     * allocated in that backing file. */
    if (off < end &&
        !img_extents_add(e, end - off, IMG_EXT_HOLE | IMG_EXT_ZERO, 2))
        return 1;
    return 0;
}

/* Whether the image has metadata preallocation, found out once. */
static bool is_metadata_prealloc(struct qcow2_state *s)
{
    int st = __atomic_load_n(&s->prealloc_state, __ATOMIC_ACQUIRE);
    if (st == 0) {
        pthread_mutex_lock(&s->prealloc_lock);
        st = s->prealloc_state;
        if (st == 0) {
            /* Reads the refcounts in the file: no table may move
             * meanwhile. */
            qcow2_lock(s);
            st = qcow2_has_metadata_prealloc(s) ? 2 : 1;
            qcow2_unlock(s);
            __atomic_store_n(&s->prealloc_state, st, __ATOMIC_RELEASE);
        }
        pthread_mutex_unlock(&s->prealloc_lock);
    }
    return st == 2;
}

/* Describe data at host [host, host + len) by the holes of the data
 * file: holes read as zeros (but are allocated, so not HOLE), as qemu
 * reports preallocated clusters.  Returns 0 or 1 when e is full. */
static int status_host(struct qcow2_state *s, uint64_t host, uint64_t len,
                       struct img_extents *e)
{
    uint64_t end = host + len;

    while (host < end) {
        off_t data = io_lseek(s->data_fd, (off_t)host, SEEK_DATA);
        uint64_t n;
        uint32_t flags;
        if (data < 0) {
            /* No data after host (ENXIO), or no way to tell. */
            n = end - host;
            flags = errno == ENXIO ? IMG_EXT_ZERO : 0;
        } else if ((uint64_t)data > host) {
            n = ((uint64_t)data < end ? (uint64_t)data : end) - host;
            flags = IMG_EXT_ZERO;
        } else {
            off_t hole = io_lseek(s->data_fd, (off_t)host, SEEK_HOLE);
            n = hole < 0 || (uint64_t)hole <= host || (uint64_t)hole > end
                ? end - host : (uint64_t)hole - host;
            flags = 0;
        }
        if (!img_extents_add(e, n, flags, 1))
            return 1;
        host += n;
    }
    return 0;
}

static int qcow2_block_status(struct image *img, uint64_t len, uint64_t off,
                              struct img_extents *e)
{
    struct qcow2_state *s = qcow2_from_img(img);
    uint64_t end = off + len;
    struct qcow2_run run;
    int err;
    /* With metadata preallocation, data runs must be host-contiguous to
     * be checked for holes; otherwise any data is just data. */
    bool prealloc = !s->crypto && is_metadata_prealloc(s);
    unsigned flags = prealloc ? 0 : QCOW2_MAP_STATUS;

    while (off < end) {
        err = map_locked(s, off, end - off, flags, &run);
        if (err)
            return e->n > 0 ? 0 : err;
        if (run.kind == QCOW2_UNALLOCATED) {
            /* Gather the whole unallocated stretch for one backing
             * query. */
            uint64_t start = off;
            off += run.length;
            while (off < end) {
                err = map_locked(s, off, end - off, flags, &run);
                if (err || run.kind != QCOW2_UNALLOCATED)
                    break;
                off += run.length;
            }
            err = status_backing(s, start, off - start, e);
            if (err)
                return err < 0 && e->n == 0 ? err : 0;
            continue;
        }
        if (run.kind == QCOW2_DATA && prealloc) {
            if (status_host(s, run.host_offset, run.length, e))
                return 0;
            off += run.length;
            continue;
        }
        uint32_t ext = run.kind == QCOW2_ZERO
                       ? IMG_EXT_HOLE | IMG_EXT_ZERO : 0;
        if (!img_extents_add(e, run.length, ext, 1))
            return 0;
        off += run.length;
    }
    return 0;
}

/* The map_nowait op without the metadata lock's part. */
static int map_nowait(struct qcow2_state *s, uint64_t len, uint64_t off,
                      struct img_map *m)
{
    struct qcow2_run run;

    if (!io_is_file(s->data_fd))
        return -EAGAIN;     /* only a file can be read on the loop */
    int err = qcow2_map(s, off, len, QCOW2_MAP_NOWAIT, &run);
    if (err)
        return err;
    switch (run.kind) {
    case QCOW2_DATA:
        if (s->crypto || run.host_offset >= s->data_file_size)
            return -EAGAIN;
        m->kind = IMG_MAP_DATA;
        m->fd = s->data_fd;
        m->host_offset = run.host_offset;
        m->length = run.length;
        if (m->length > s->data_file_size - run.host_offset)
            m->length = s->data_file_size - run.host_offset;
        return 0;
    case QCOW2_ZERO:
        m->kind = IMG_MAP_ZERO;
        m->length = run.length;
        return 0;
    case QCOW2_UNALLOCATED: {
        struct image *b = s->backing;
        if (!b || off >= b->size) {
            uint64_t n = run.length;
            if (b && off < b->size && n > b->size - off)
                n = b->size - off;
            m->kind = IMG_MAP_ZERO;
            m->length = n;
            return 0;
        }
        if (!b->ops->map_nowait)
            return -EAGAIN;
        uint64_t n = run.length < b->size - off ? run.length
                                                : b->size - off;
        return b->ops->map_nowait(b, n, off, m);
    }
    case QCOW2_COMPRESSED:
    default:
        return -EAGAIN;
    }
}

static int qcow2_map_nowait_op(struct image *img, uint64_t len,
                               uint64_t off, struct img_map *m)
{
    struct qcow2_state *s = qcow2_from_img(img);

    if (!s->writable)
        return map_nowait(s, len, off, m);
    /* Never wait for the lock: whoever holds it may be doing disk I/O.
     * The caller reads the mapped range after we return and says when
     * it is done (map_done); count calls so that a cluster freed
     * meanwhile waits for that read (inflight.c). */
    if (pthread_mutex_trylock(&s->lock) != 0)
        return -EAGAIN;
    __atomic_store_n(&s->nowait_calls, s->nowait_calls + 1,
                     __ATOMIC_RELAXED);
    if (!s->nowait_seq_set) {
        s->nowait_seq = s->req_seq;
        s->nowait_seq_set = true;
    }
    int err = map_nowait(s, len, off, m);
    if (err == 0 && m->kind == IMG_MAP_DATA && m->fd == s->data_fd)
        s->nowait_data_call = s->nowait_calls;
    pthread_mutex_unlock(&s->lock);
    return err;
}

static void qcow2_map_done_op(struct image *img)
{
    struct qcow2_state *s = qcow2_from_img(img);

    if (s->writable) {
        qcow2_nowait_reads_over(s);
        s->nowait_seq_set = false;
    }
    if (s->backing && s->backing->ops->map_done)
        s->backing->ops->map_done(s->backing);
}

static int qcow2_map_pin_op(struct image *img, uint64_t *token)
{
    struct qcow2_state *s = qcow2_from_img(img);

    *token = 0;
    return s->writable ? qcow2_pin(s, token) : 0;
}

static void qcow2_map_unpin_op(struct image *img, uint64_t token)
{
    struct qcow2_state *s = qcow2_from_img(img);

    if (s->writable)
        qcow2_unpin(s, token);
}

static int qcow2_cache_op(struct image *img, uint64_t len, uint64_t off)
{
    struct qcow2_state *s = qcow2_from_img(img);
    struct qcow2_run run;

    while (len > 0) {
        int err = map_locked(s, off, len, 0, &run);
        if (err)
            return err;
        if (run.kind == QCOW2_DATA)
            posix_fadvise(s->data_fd, (off_t)run.host_offset,
                          (off_t)run.length, POSIX_FADV_WILLNEED);
        else if (run.kind == QCOW2_COMPRESSED)
            posix_fadvise(s->fd, (off_t)run.coffset, (off_t)run.csize,
                          POSIX_FADV_WILLNEED);
        else if (run.kind == QCOW2_UNALLOCATED && s->backing &&
                 s->backing->ops->cache && off < s->backing->size) {
            struct image *b = s->backing;
            uint64_t n = run.length < b->size - off ? run.length
                                                    : b->size - off;
            err = b->ops->cache(b, n, off);
            if (err)
                return err;
        }
        off += run.length;
        len -= run.length;
    }
    return 0;
}

const struct img_ops qcow2_ops = {
    .name = "qcow2",
    .probe = qcow2_probe,
    .open = qcow2_open,
    .close = qcow2_close,
    .read = qcow2_read,
    .write = qcow2_write_op,
    .write_zeroes = qcow2_zero_op,
    .trim = qcow2_trim_op,
    .flush = qcow2_flush,
    .cache = qcow2_cache_op,
    .block_status = qcow2_block_status,
    .map_nowait = qcow2_map_nowait_op,
    .map_pin = qcow2_map_pin_op,
    .map_unpin = qcow2_map_unpin_op,
    .map_done = qcow2_map_done_op,
    .bitmap_count = qcow2_bitmap_count_op,
    .bitmap_info = qcow2_bitmap_info_op,
    .bitmap_status = qcow2_bitmap_status_op,
    .bitmap_apply = qcow2_bitmap_apply_op,
};
