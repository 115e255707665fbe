/* diskserve-img map: where each range of the disk is stored, through the
 * backing chain, in qemu-img map's two output forms.
 *
 * The image opens through img_open, so the chain is the one the server
 * serves.  Each range is looked up layer by layer from the top until a
 * layer says data or zeros; what qemu-img reports follows from qemu's
 * block status rules, which this file mirrors:
 *   - qcow2 reports data (with its host offset unless compressed or
 *     encrypted), zeros (with an offset if a cluster is allocated), or
 *     nothing, and then the backing file decides; past the backing
 *     file's end, or without one, the range reads as zeros;
 *   - raw reports data or zeros from the file's holes (SEEK_DATA);
 *   - a qcow2 image with metadata preallocation also asks its file about
 *     holes under data clusters.
 * Ranges with the same answer and contiguous offsets merge.
 */
#include <endian.h>
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <inttypes.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "image.h"
#include "io.h"
#include "qcow2/qcow2.h"
#include "vhdx/vhdx.h"
#include "img-tool.h"

#define MAX_LAYERS  (QCOW2_MAX_CHAIN_DEPTH + 2)
#define MAX_QUERY   (1ull << 30)

/* What a layer says about a range. */
#define ST_DATA     1u
#define ST_ZERO     2u
#define ST_ALLOC    4u
#define ST_OFFSET   8u

struct layer {
    struct image *img;
    struct qcow2_state *s;          /* NULL for raw */
    struct vhdx_state *v;           /* a VHDX layer */
    int fd;                         /* file that holds the data */
    bool own_fd;
    uint64_t fd_size;
    const char *file;               /* its name */
    bool prealloc;                  /* qcow2 metadata preallocation */
    uint8_t *l2;                    /* one cached L2 table */
    uint64_t l2_off;
};

/* One line of output. */
struct entry {
    uint64_t start;
    uint64_t length;
    uint64_t depth;
    bool present, zero, data, has_offset;
    uint64_t offset;
    const char *file;               /* NULL unless has_offset */
};

/* Ask the file about holes at off: ST_DATA or ST_ZERO, *n shortened to
 * the extent; *eof when the answer runs to the end of the file (n == 0
 * when off is already there). */
static unsigned file_status(const struct layer *l, uint64_t off,
                            uint64_t *n, bool *eof)
{
    *eof = false;
    if (off >= l->fd_size) {
        *n = 0;
        *eof = true;
        return ST_ZERO;
    }
    if (*n > l->fd_size - off)
        *n = l->fd_size - off;
    off_t data = lseek(l->fd, (off_t)off, SEEK_DATA);
    if (data < 0) {
        if (errno != ENXIO)
            return ST_DATA;         /* no information: all data */
        *eof = true;                /* a hole to the end */
        return ST_ZERO;
    }
    if ((uint64_t)data == off) {
        off_t hole = lseek(l->fd, (off_t)off, SEEK_HOLE);
        if (hole > data && (uint64_t)(hole - data) < *n)
            *n = (uint64_t)(hole - data);
        *eof = off + *n >= l->fd_size;
        return ST_DATA;
    }
    if ((uint64_t)data - off < *n)
        *n = (uint64_t)data - off;
    return ST_ZERO;
}

/* The kinds of a qcow2 unit (cluster or subcluster). */
enum unit {
    U_UNALLOC,                      /* no host cluster */
    U_UNALLOC_ALLOC,                /* subcluster unallocated, cluster is */
    U_ZERO,
    U_ZERO_ALLOC,
    U_NORMAL,
    U_COMPRESSED,
};

/* Decode the unit holding guest offset pos from L2 entry p. */
static int decode_unit(const struct layer *l, const uint8_t *p,
                       uint64_t pos, enum unit *u, uint64_t *host)
{
    const struct qcow2_state *s = l->s;
    uint64_t e, bm = 0;

    memcpy(&e, p, 8);
    e = be64toh(e);
    if (s->ext_l2) {
        memcpy(&bm, p + 8, 8);
        bm = be64toh(bm);
    }
    *host = 0;
    if (e & QCOW2_L2E_COMPRESSED) {
        *u = U_COMPRESSED;
        return 0;
    }
    bool data_file = s->h.incompatible & QCOW2_INCOMPAT_DATA_FILE;
    uint64_t base = e & QCOW2_L2E_OFFSET_MASK;
    bool allocated = base || (data_file && (e & QCOW2_L2E_COPIED));
    if (allocated && (base & s->cluster_mask)) {
        tool_error("%s: L2 entry 0x%" PRIx64 " unaligned", l->file, e);
        return -EIO;
    }
    uint64_t within = pos & s->cluster_mask;
    if (!s->ext_l2) {
        if (e & QCOW2_L2E_ZERO)
            *u = base ? U_ZERO_ALLOC : U_ZERO;
        else
            *u = allocated ? U_NORMAL : U_UNALLOC;
        *host = base + within;
        return 0;
    }
    unsigned sc = (unsigned)(within >> s->sc_bits);
    bool zero = (bm >> (32 + sc)) & 1;
    if (!allocated) {
        *u = zero ? U_ZERO : U_UNALLOC;
        return 0;
    }
    *host = base + within;
    if (zero)
        *u = U_ZERO_ALLOC;
    else if ((bm >> sc) & 1)
        *u = U_NORMAL;
    else
        *u = U_UNALLOC_ALLOC;
    return 0;
}

/* A qcow2 layer's answer for [off, off + *n): one kind of unit, with
 * host offsets contiguous, inside one L2 table. */
static int qcow2_status(struct layer *l, uint64_t off, uint64_t *n,
                        unsigned *st, uint64_t *host)
{
    struct qcow2_state *s = l->s;
    uint32_t span_bits = s->h.cluster_bits + s->l2_bits;
    uint64_t l1i = off >> span_bits;
    uint64_t span_end = (l1i + 1) << span_bits;
    uint64_t end = *n > span_end - off ? span_end : off + *n;
    uint64_t l2_off = l1i < s->l1_size ? s->l1[l1i] & QCOW2_L1E_OFFSET_MASK
                                       : 0;
    enum unit kind = U_UNALLOC;

    *host = 0;
    if (!l2_off) {
        *n = end - off;
    } else {
        if (l2_off != l->l2_off) {
            int err = io_pread_full(s->fd, l->l2, s->cluster_size, l2_off);
            if (err && err != -ENODATA)
                return err;
            l->l2_off = l2_off;
        }
        uint32_t mask = (1u << s->l2_bits) - 1;
        uint64_t unit = s->ext_l2 ? 1ull << s->sc_bits : s->cluster_size;
        uint64_t pos = off;
        while (pos < end) {
            uint32_t idx = (uint32_t)(pos >> s->h.cluster_bits) & mask;
            enum unit u;
            uint64_t h;
            int err = decode_unit(l, l->l2 + (size_t)idx * s->l2_entry_bytes,
                                  pos, &u, &h);
            if (err)
                return err;
            if (pos == off) {
                kind = u;
                *host = h;
            } else if (u != kind ||
                       (u != U_UNALLOC && u != U_ZERO &&
                        u != U_COMPRESSED && h != *host + (pos - off))) {
                break;
            }
            uint64_t next = (pos | (unit - 1)) + 1;
            pos = next < end ? next : end;
            if (u == U_COMPRESSED)
                break;              /* one compressed cluster at a time */
        }
        *n = pos - off;
    }

    bool crypt = s->crypto || s->h.crypt_method != QCOW2_CRYPT_NONE;
    switch (kind) {
    case U_NORMAL:
        *st = ST_DATA | (crypt ? 0 : ST_OFFSET);
        break;
    case U_COMPRESSED:
        *st = ST_DATA;
        break;
    case U_ZERO:
        *st = ST_ZERO;
        break;
    case U_ZERO_ALLOC:
        *st = ST_ZERO | (crypt ? 0 : ST_OFFSET);
        break;
    case U_UNALLOC_ALLOC:
        *st = crypt ? 0 : ST_OFFSET;
        break;
    case U_UNALLOC:
    default:
        *st = 0;
        break;
    }
    if (*st & (ST_DATA | ST_ZERO)) {
        *st |= ST_ALLOC;
    } else if (!s->backing || off >= s->backing->size) {
        *st |= ST_ZERO;
    }
    if (l->prealloc && kind == U_NORMAL && !crypt) {
        uint64_t fn = *n;
        bool eof;
        unsigned fst = file_status(l, *host, &fn, &eof);
        if (eof && (fn == 0 || (fst & ST_ZERO))) {
            *st |= ST_ZERO;
        } else {
            *n = fn;
            *st |= fst & ST_ZERO;
        }
    }
    return 0;
}

/* A raw layer's answer: data or zeros at the same offset of its file. */
static void raw_status(struct layer *l, uint64_t off, uint64_t *n,
                       unsigned *st, uint64_t *host)
{
    bool eof;
    uint64_t fn = *n;
    unsigned fst = file_status(l, off, &fn, &eof);

    if (fn == 0)
        fn = *n;
    *n = fn;
    *st = fst | ST_ALLOC | ST_OFFSET;
    *host = off;
}

/* A VHDX layer's answer, from its BAT (and, inside a PARTIALLY_PRESENT
 * block, from the driver's block status, which reads the sector
 * bitmap): data here at its place in the file, zeros defined here, or
 * nothing (the layer below answers). */
static int vhdx_status(struct layer *l, uint64_t off, uint64_t *n,
                       unsigned *st, uint64_t *host)
{
    struct vhdx_state *v = l->v;
    uint64_t blk = off >> v->block_shift;
    uint64_t left = v->block_size - (off & (v->block_size - 1));
    uint64_t e = vhdx_payload_entry(v, blk);
    unsigned state = (unsigned)(e & VHDX_BAT_STATE_MASK);

    if (*n > left)
        *n = left;
    *host = (e & VHDX_BAT_OFFSET_MASK) + (off & (v->block_size - 1));
    *st = 0;
    if (state == VHDX_PAYLOAD_FULLY_PRESENT) {
        *st = ST_ALLOC | ST_DATA | ST_OFFSET;
    } else if (state == VHDX_PAYLOAD_PARTIALLY_PRESENT) {
        struct img_extent x[1];
        struct img_extents ex = { x, 0, 1, off };
        int err = l->img->ops->block_status(l->img, *n, off, &ex);
        if (err)
            return err;
        if (ex.n == 0)
            return -EIO;
        *n = x[0].length < *n ? x[0].length : *n;
        if (x[0].depth == 1)
            *st = ST_ALLOC | ST_DATA | ST_OFFSET;
    } else if (state == VHDX_PAYLOAD_ZERO ||
               (state == VHDX_PAYLOAD_UNMAPPED && v->parent)) {
        *st = ST_ALLOC | ST_ZERO;
    }
    return 0;
}

/* The entry for the start of [off, off + n), going down the chain. */
static int lookup(struct layer *layers, size_t n_layers, uint64_t off,
                  uint64_t n, struct entry *e)
{
    unsigned st = 0;
    uint64_t host = 0;
    size_t d;

    for (d = 0; d < n_layers; d++) {
        struct layer *l = &layers[d];
        /* Each layer answers only inside its own size. */
        if (off < l->img->size && n > l->img->size - off)
            n = l->img->size - off;
        if (l->s) {
            int err = qcow2_status(l, off, &n, &st, &host);
            if (err)
                return err;
        } else if (l->v) {
            int err = vhdx_status(l, off, &n, &st, &host);
            if (err)
                return err;
        } else {
            raw_status(l, off, &n, &st, &host);
        }
        if (st & (ST_DATA | ST_ZERO))
            break;
    }
    if (d == n_layers) {
        d = n_layers - 1;
        st = 0;
    }
    memset(e, 0, sizeof *e);
    e->start = off;
    e->length = n;
    e->depth = d;
    e->present = st & ST_ALLOC;
    e->zero = st & ST_ZERO;
    e->data = st & ST_DATA;
    e->has_offset = st & ST_OFFSET;
    e->offset = host;
    e->file = e->has_offset ? layers[d].file : NULL;
    return 0;
}

static bool mergeable(const struct entry *a, const struct entry *b)
{
    if (a->length == 0)
        return false;
    if (a->zero != b->zero || a->data != b->data || a->depth != b->depth ||
        a->present != b->present || !a->file != !b->file ||
        a->has_offset != b->has_offset)
        return false;
    if (a->file && strcmp(a->file, b->file))
        return false;
    return !a->has_offset || a->offset + a->length == b->offset;
}

/* Print one entry; next (if any) is the entry after it, which the human
 * form may turn into zeros so that it merges.  Returns 0 or an exit
 * status. */
static int dump(bool json, const struct entry *e, struct entry *next)
{
    if (json) {
        printf("{ \"start\": %" PRIu64 ", \"length\": %" PRIu64 ", "
               "\"depth\": %" PRIu64 ", \"present\": %s, \"zero\": %s, "
               "\"data\": %s", e->start, e->length, e->depth,
               e->present ? "true" : "false", e->zero ? "true" : "false",
               e->data ? "true" : "false");
        if (e->has_offset)
            printf(", \"offset\": %" PRIu64, e->offset);
        putchar('}');
        if (next)
            puts(",");
        return 0;
    }
    if (e->data && !e->has_offset) {
        fflush(stdout);
        return tool_error("compressed or encrypted data has no offset "
                          "in a file; use --output=json");
    }
    if (e->data && !e->zero)
        printf("%#-16" PRIx64 "%#-16" PRIx64 "%#-16" PRIx64 "%s\n",
               e->start, e->length, e->offset, e->file ? e->file : "");
    /* The human form does not tell zeros from holes: merge them. */
    if (next && (!next->data || next->zero) && (!e->data || e->zero)) {
        next->data = false;
        next->zero = true;
    }
    return 0;
}

/* Walk the whole disk and print it. */
static int map_image(struct layer *layers, size_t n_layers, bool json)
{
    uint64_t size = layers[0].img->size;
    struct entry cur, next;
    int rc;

    memset(&cur, 0, sizeof cur);
    if (json)
        putchar('[');
    else
        printf("%-16s%-16s%-16s%s\n", "Offset", "Length", "Mapped to",
               "File");
    while (cur.start + cur.length < size) {
        uint64_t off = cur.start + cur.length;
        uint64_t n = size - off < MAX_QUERY ? size - off : MAX_QUERY;
        int err = lookup(layers, n_layers, off, n, &next);
        if (err) {
            if (json)
                printf("]\n");
            fflush(stdout);
            return tool_error("%s: reading metadata: %s", layers[0].file,
                              strerror(-err));
        }
        if (mergeable(&cur, &next)) {
            cur.length += next.length;
            continue;
        }
        if (cur.length > 0) {
            rc = dump(json, &cur, &next);
            if (rc)
                return rc;
        }
        cur = next;
    }
    rc = dump(json, &cur, NULL);
    if (json)
        printf("]\n");
    return rc;
}

/* Set up the layers of the chain below img. */
static int open_layers(struct image *img, struct layer *layers, size_t *n)
{
    *n = 0;
    while (img && *n < MAX_LAYERS) {
        struct layer *l = &layers[(*n)++];
        struct stat st;

        memset(l, 0, sizeof *l);
        l->img = img;
        l->fd = -1;
        if (img->ops == &qcow2_ops) {
            l->s = qcow2_from_img(img);
            l->fd = l->s->data_fd;
            l->file = l->s->data_path ? l->s->data_path : img->path;
            l->l2 = malloc(l->s->cluster_size);
            if (!l->l2)
                return -ENOMEM;
            l->prealloc = !l->s->crypto && qcow2_has_metadata_prealloc(l->s);
        } else {
            if (img->ops == &vhdx_ops)
                l->v = (struct vhdx_state *)img;
            l->fd = open(img->path, O_RDONLY | O_CLOEXEC);
            if (l->fd < 0)
                return -errno;
            l->own_fd = true;
            l->file = img->path;
        }
        if (fstat(l->fd, &st) < 0)
            return -errno;
        l->fd_size = (uint64_t)st.st_size;
        img = l->s ? l->s->backing : l->v ? l->v->parent : NULL;
    }
    return 0;
}

static void close_layers(struct layer *layers, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        free(layers[i].l2);
        if (layers[i].own_fd)
            close(layers[i].fd);
    }
}

int tool_cmd_map(int argc, char **argv)
{
    static const struct option longopts[] = {
        { "output", required_argument, NULL, 'O' },
        { "key-file", required_argument, NULL, 'k' },
        { "luks-max-iterations", required_argument, NULL, 'I' },
        { "help", no_argument, NULL, 'h' },
        { NULL, 0, NULL, 0 },
    };
    struct img_open_args args = { .read_only = true };
    bool json = false;
    int c, rc;

    optind = 1;
    opterr = 0;
    while ((c = getopt_long(argc, argv, "+f:h", longopts, NULL)) != -1) {
        switch (c) {
        case 'f':
            args.format = optarg;
            break;
        case 'O':
            if (!strcmp(optarg, "json"))
                json = true;
            else if (!strcmp(optarg, "human"))
                json = false;
            else
                return tool_usage_error("map: --output must be human or "
                                        "json");
            break;
        case 'k':
            args.key_file = optarg;
            break;
        case 'I': {
            char *end;
            errno = 0;
            unsigned long long v = strtoull(optarg, &end, 10);
            if (errno || end == optarg || *end || optarg[0] == '-' ||
                v == 0 || v > UINT32_MAX)
                return tool_usage_error("map: --luks-max-iterations: "
                                        "'%.64s' is not a number from 1 "
                                        "to %u", optarg, UINT32_MAX);
            args.luks_max_iter = v;
            break;
        }
        case 'h':
            tool_usage();
            return 0;
        default:
            return tool_usage_error("map: unknown option or missing "
                                    "argument '%.64s'", argv[optind - 1]);
        }
    }
    if (argc - optind != 1)
        return tool_usage_error("map: expected one FILE (try --help)");
    args.path = argv[optind];
    if (args.format && !img_find_driver(args.format))
        return tool_usage_error("map: unknown format '%.64s'", args.format);
    if (io_is_remote_name(args.path))
        return tool_error("%s: map: RBD images are not supported (serve "
                          "the image and run nbdinfo --map)", args.path);

    struct image *img;
    int err = img_open(&args, &img);
    if (err)
        return tool_error("%s: cannot open: %s", args.path, strerror(-err));
    if (img->ops != &qcow2_ops && img->ops != &raw_ops &&
        img->ops != &vhdx_ops) {
        rc = tool_error("%s: map: %s images are not supported yet",
                        args.path, img->ops->name);
        img_close(img);
        return rc;
    }
    struct layer layers[MAX_LAYERS];
    size_t n_layers;
    err = open_layers(img, layers, &n_layers);
    if (err)
        rc = tool_error("%s: %s", args.path, strerror(-err));
    else
        rc = map_image(layers, n_layers, json);
    close_layers(layers, n_layers);
    img_close(img);
    return rc;
}
