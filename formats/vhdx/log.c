/* The VHDX log ([MS-VHDX] 2.3): finding the active sequence and replaying
 * it into memory for read-only opens.
 *
 * When the current header's LogGuid is set, the log holds metadata
 * updates that may not have reached their place in the file.  The whole
 * log is read, entries are validated (signature, CRC-32C over EntryLength
 * bytes, LogGuid equal to the header's, every descriptor's sequence
 * number, every data sector's SequenceHigh/SequenceLow, which catch torn
 * writes) and the active sequence found by the scan of 2.3.3.  Its data
 * and zero descriptors, tail entry first, become an overlay: a sorted
 * array of non-overlapping pieces keyed by file offset, a later update
 * replacing what it covers of an earlier one.  The file is never written;
 * vhdx_pread serves the region table, metadata, BAT and payload reads
 * through the overlay, and reads between the real end of the file and
 * LastFileOffset (or a descriptor past the end) return zeros, as the
 * extended file would.
 *
 * A LogGuid with no valid sequence in the log is refused, as 2.3.3 says
 * ("the file is corrupt"); QEMU ignores such a log instead.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#include "io.h"
#include "vhdx.h"

/* The largest log replayed (read into memory whole). */
#define VHDX_MAX_LOG_REPLAY (64u << 20)

/* Descriptors and data past this file offset are refused: no VHDX file
 * (64 TB of payload plus its BAT and log) reaches it, and bat.c keeps a
 * bitmap of the file. */
#define VHDX_LOG_MAX_FILE_OFFSET (1ull << 47)

/* The log read into memory; offsets are relative to its start. */
struct log_buf {
    uint8_t *buf;
    uint32_t len;
};

/* A validated entry. */
struct log_entry {
    uint32_t pos;               /* log offset of its first sector */
    uint32_t length;
    uint32_t tail;
    uint64_t seq;
    uint64_t flushed;
    uint64_t last;
};

/* Copy n bytes at log offset pos, wrapping at the end of the log. */
static void log_copy(const struct log_buf *l, uint32_t pos, void *dst,
                     size_t n)
{
    uint8_t *d = dst;
    while (n > 0) {
        size_t chunk = l->len - pos < n ? l->len - pos : n;
        memcpy(d, l->buf + pos, chunk);
        d += chunk;
        n -= chunk;
        pos = 0;
    }
}

static uint32_t desc_sectors(uint32_t count)
{
    return (uint32_t)(((uint64_t)count * 32 + 64 + VHDX_LOG_SECTOR - 1) /
                      VHDX_LOG_SECTOR);
}

/* Check one descriptor; *data counts data descriptors. */
static bool descriptor_ok(const struct vhdx_log_descriptor *d, uint64_t seq,
                          uint32_t *data)
{
    uint64_t off = vhdx_le64(d->file_offset), end;

    if (vhdx_le64(d->sequence_number) != seq || off % VHDX_LOG_SECTOR)
        return false;
    switch (vhdx_le32(d->signature)) {
    case VHDX_LOG_DESC_SIGNATURE:
        (*data)++;
        return off + VHDX_LOG_SECTOR <= VHDX_LOG_MAX_FILE_OFFSET;
    case VHDX_LOG_ZERO_SIGNATURE: {
        uint64_t zlen = vhdx_le64(d->leading_bytes);
        return d->trailing_bytes == 0 && zlen % VHDX_LOG_SECTOR == 0 &&
               !__builtin_add_overflow(off, zlen, &end) &&
               end <= VHDX_LOG_MAX_FILE_OFFSET;
    }
    default:
        return false;
    }
}

/* Validate the entry at log offset pos; true and *e filled when valid.
 * *ent receives the entry's bytes (caller frees) when valid. */
static bool entry_valid(const struct vhdx_state *s, const struct log_buf *l,
                        uint32_t pos, struct log_entry *e, uint8_t **ent)
{
    struct vhdx_log_entry_header h;
    uint8_t *b;
    uint32_t data = 0;

    log_copy(l, pos, &h, sizeof h);
    uint32_t len = vhdx_le32(h.entry_length);
    uint32_t count = vhdx_le32(h.descriptor_count);
    uint64_t seq = vhdx_le64(h.sequence_number);
    if (vhdx_le32(h.signature) != VHDX_LOG_SIGNATURE ||
        len < VHDX_LOG_SECTOR || len % VHDX_LOG_SECTOR || len > l->len ||
        vhdx_le32(h.tail) % VHDX_LOG_SECTOR || vhdx_le32(h.tail) >= l->len ||
        seq == 0 || h.reserved != 0 ||
        memcmp(&h.log_guid, &s->header.log_guid, sizeof h.log_guid) ||
        vhdx_le64(h.flushed_file_offset) % VHDX_MB ||
        vhdx_le64(h.last_file_offset) % VHDX_MB ||
        (uint64_t)desc_sectors(count) * VHDX_LOG_SECTOR > len)
        return false;
    b = malloc(len);
    if (!b)
        return false;
    log_copy(l, pos, b, len);
    if (!vhdx_checksum_ok(b, len,
                          offsetof(struct vhdx_log_entry_header, checksum)))
        goto out_invalid;
    for (uint32_t i = 0; i < count; i++) {
        struct vhdx_log_descriptor d;
        memcpy(&d, b + 64 + (size_t)i * 32, sizeof d);
        if (!descriptor_ok(&d, seq, &data))
            goto out_invalid;
    }
    /* Exactly one data sector per data descriptor, each carrying the
     * entry's sequence number at both ends. */
    uint32_t first = desc_sectors(count);
    if ((uint64_t)(first + data) * VHDX_LOG_SECTOR != len)
        goto out_invalid;
    for (uint32_t i = 0; i < data; i++) {
        struct vhdx_log_data_sector ds;
        memcpy(&ds, b + (size_t)(first + i) * VHDX_LOG_SECTOR, sizeof ds);
        if (vhdx_le32(ds.signature) != VHDX_LOG_DATA_SIGNATURE ||
            vhdx_le32(ds.sequence_high) != (uint32_t)(seq >> 32) ||
            vhdx_le32(ds.sequence_low) != (uint32_t)seq)
            goto out_invalid;
    }
    e->pos = pos;
    e->length = len;
    e->tail = vhdx_le32(h.tail);
    e->seq = seq;
    e->flushed = vhdx_le64(h.flushed_file_offset);
    e->last = vhdx_le64(h.last_file_offset);
    *ent = b;
    return true;

out_invalid:
    free(b);
    return false;
}

/* The sequence scanned from one tail: its entries, in order. */
struct log_seq {
    struct log_entry *e;
    size_t n;
    uint64_t bytes;
};

/* Extend seq from pos while entries are valid and consecutive. */
static int scan_sequence(const struct vhdx_state *s, const struct log_buf *l,
                         uint32_t pos, struct log_seq *seq)
{
    seq->n = 0;
    seq->bytes = 0;
    for (;;) {
        struct log_entry e;
        uint8_t *b;
        if (!entry_valid(s, l, pos, &e, &b))
            return 0;
        free(b);
        if ((seq->n && e.seq != seq->e[seq->n - 1].seq + 1) ||
            seq->bytes + e.length > l->len)
            return 0;
        struct log_entry *ne = realloc(seq->e, (seq->n + 1) * sizeof *ne);
        if (!ne)
            return -ENOMEM;
        seq->e = ne;
        seq->e[seq->n++] = e;
        seq->bytes += e.length;
        pos = (uint32_t)(((uint64_t)pos + e.length) % l->len);
    }
}

/* Index in seq of the head entry's tail, or -1 when not contained. */
static long tail_index(const struct log_seq *seq)
{
    uint32_t tail = seq->e[seq->n - 1].tail;
    for (size_t i = 0; i < seq->n; i++)
        if (seq->e[i].pos == tail)
            return (long)i;
    return -1;
}

/* 2.3.3's scan: the valid sequence with the highest head sequence
 * number, trimmed to start at its head's tail, in *best. */
static int find_active(const struct vhdx_state *s, const struct log_buf *l,
                       struct log_seq *best)
{
    struct log_seq cur = { 0 };
    uint32_t tail = 0, old_tail = 0;
    int err = 0;

    best->n = 0;
    for (;;) {
        if ((err = scan_sequence(s, l, tail, &cur)))
            break;
        long t = cur.n ? tail_index(&cur) : -1;
        if (t >= 0 && (best->n == 0 ||
                       cur.e[cur.n - 1].seq > best->e[best->n - 1].seq)) {
            size_t n = cur.n - (size_t)t;
            struct log_entry *ne = realloc(best->e, n * sizeof *ne);
            if (!ne) {
                err = -ENOMEM;
                break;
            }
            best->e = ne;
            memcpy(best->e, cur.e + t, n * sizeof *ne);
            best->n = n;
        }
        if (t < 0)
            tail = (tail + VHDX_LOG_SECTOR) % l->len;
        else
            tail = (uint32_t)((tail + cur.bytes) % l->len);
        if (tail <= old_tail)
            break;
        old_tail = tail;
    }
    free(cur.e);
    return err;
}

/* First piece whose end is past off. */
static size_t overlay_find(const struct vhdx_state *s, uint64_t off)
{
    size_t lo = 0, hi = s->overlay_count;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        const struct vhdx_overlay_piece *p = &s->overlay[mid];
        if (p->off + p->len <= off)
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo;
}

/* Put [off, off+len) on top of the overlay as data (4 KB, ownership
 * taken) or zeros (data NULL), trimming or splitting what it covers. */
static int overlay_put(struct vhdx_state *s, uint64_t off, uint64_t len,
                       uint8_t *data)
{
    uint64_t end = off + len;
    size_t i = overlay_find(s, off);
    struct vhdx_overlay_piece *o;

    if (len == 0) {
        free(data);
        return 0;
    }
    /* Room for the new piece and one split. */
    o = realloc(s->overlay, (s->overlay_count + 2) * sizeof *o);
    if (!o) {
        free(data);
        return -ENOMEM;
    }
    s->overlay = o;
    if (i < s->overlay_count && o[i].off < off && o[i].off + o[i].len > end) {
        /* Inside one piece: split it in three.  Data pieces are 4 KB
         * and updates 4 KB aligned, so only zero pieces get here. */
        struct vhdx_overlay_piece right = {
            end, o[i].off + o[i].len - end, NULL };
        o[i].len = off - o[i].off;
        memmove(&o[i + 3], &o[i + 1],
                (s->overlay_count - i - 1) * sizeof *o);
        o[i + 1] = (struct vhdx_overlay_piece){ off, len, data };
        o[i + 2] = right;
        s->overlay_count += 2;
        return 0;
    }
    if (i < s->overlay_count && o[i].off < off) {
        o[i].len = off - o[i].off;          /* a zero piece's head stays */
        i++;
    }
    size_t j = i;
    while (j < s->overlay_count && o[j].off + o[j].len <= end) {
        free(o[j].data);
        j++;
    }
    if (j < s->overlay_count && o[j].off < end) {
        uint64_t cut = end - o[j].off;      /* a zero piece's tail stays */
        o[j].off += cut;
        o[j].len -= cut;
    }
    /* o[i..j) are replaced by the one new piece. */
    memmove(&o[i + 1], &o[j], (s->overlay_count - j) * sizeof *o);
    s->overlay_count = s->overlay_count - (j - i) + 1;
    o[i] = (struct vhdx_overlay_piece){ off, len, data };
    return 0;
}

void vhdx_overlay_free(struct vhdx_state *s)
{
    for (size_t i = 0; i < s->overlay_count; i++)
        free(s->overlay[i].data);
    free(s->overlay);
    s->overlay = NULL;
    s->overlay_count = 0;
}

/* Apply one (valid) entry's descriptors to the overlay, in order. */
static int apply_entry(struct vhdx_state *s, const struct log_buf *l,
                       const struct log_entry *e)
{
    struct log_entry again;
    uint8_t *b;
    int err = 0;

    if (!entry_valid(s, l, e->pos, &again, &b))
        return -ENOMEM;         /* valid a moment ago: only malloc fails */
    struct vhdx_log_entry_header h;
    memcpy(&h, b, sizeof h);
    uint32_t count = vhdx_le32(h.descriptor_count);
    uint32_t next = desc_sectors(count);
    for (uint32_t i = 0; i < count && !err; i++) {
        struct vhdx_log_descriptor d;
        uint64_t end;
        memcpy(&d, b + 64 + (size_t)i * 32, sizeof d);
        uint64_t off = vhdx_le64(d.file_offset);
        if (vhdx_le32(d.signature) == VHDX_LOG_ZERO_SIGNATURE) {
            uint64_t zlen = vhdx_le64(d.leading_bytes);
            end = off + zlen;
            err = overlay_put(s, off, zlen, NULL);
        } else {
            uint8_t *sec = malloc(VHDX_LOG_SECTOR);
            if (!sec) {
                err = -ENOMEM;
                break;
            }
            memcpy(sec, b + (size_t)next++ * VHDX_LOG_SECTOR,
                   VHDX_LOG_SECTOR);
            memcpy(sec, &d.leading_bytes, 8);
            memcpy(sec + VHDX_LOG_SECTOR - 4, &d.trailing_bytes, 4);
            end = off + VHDX_LOG_SECTOR;
            err = overlay_put(s, off, VHDX_LOG_SECTOR, sec);
        }
        if (end > s->file_size)
            s->file_size = end;
    }
    free(b);
    return err;
}

int vhdx_replay_log(struct vhdx_state *s)
{
    const char *path = s->img.path;
    struct log_buf l = { NULL, s->header.log_length };
    struct log_seq active = { 0 };
    char g[37];
    int err;

    if (vhdx_guid_is_zero(&s->header.log_guid))
        return 0;
    vhdx_guid_format(&s->header.log_guid, g);
    if (l.len == 0) {
        img_log("vhdx: %s: header %d: LogGuid %s is set but LogLength is 0",
                path, s->current_header, g);
        return -EINVAL;
    }
    if (l.len > VHDX_MAX_LOG_REPLAY) {
        /* Held in memory whole: a forged length must not cost gigabytes
         * (Hyper-V and qemu-img make 1 MiB logs). */
        img_log("vhdx: %s: header %d: LogLength %" PRIu64 " with a pending "
                "log: larger than the %u MiB replayed", path,
                s->current_header, (uint64_t)l.len,
                VHDX_MAX_LOG_REPLAY >> 20);
        return -EINVAL;
    }
    l.buf = malloc(l.len);
    if (!l.buf)
        return -ENOMEM;
    err = io_pread_full(s->fd, l.buf, l.len, s->header.log_offset);
    if (err) {
        img_log("vhdx: %s: reading the log at 0x%" PRIx64 ": %s", path,
                s->header.log_offset, strerror(-err));
        goto out_free;
    }
    if ((err = find_active(s, &l, &active)))
        goto out_free;
    if (active.n == 0) {
        img_log("vhdx: %s: header %d: LogGuid %s is set but the log holds "
                "no valid entry sequence", path, s->current_header, g);
        err = -EINVAL;
        goto out_free;
    }
    const struct log_entry *head = &active.e[active.n - 1];
    if (s->real_size < head->flushed) {
        img_log("vhdx: %s: file is %" PRIu64 " bytes, shorter than the "
                "log's FlushedFileOffset %" PRIu64 " (log entry %" PRIu64
                "): truncated", path, s->real_size, head->flushed,
                head->seq);
        err = -EINVAL;
        goto out_free;
    }
    for (size_t i = 0; i < active.n && !err; i++)
        err = apply_entry(s, &l, &active.e[i]);
    if (err)
        goto out_free;
    if (head->last > s->file_size)
        s->file_size = head->last;
    s->log_sequence = head->seq;
    img_log("vhdx: %s: replayed log entries %" PRIu64 "-%" PRIu64
            " in memory (%zu pieces; the file is not changed)", path,
            active.e[0].seq, head->seq, s->overlay_count);

out_free:
    free(active.e);
    free(l.buf);
    return err;
}

int vhdx_pread(const struct vhdx_state *s, void *buf, uint64_t len,
               uint64_t off)
{
    uint8_t *p = buf;
    uint64_t end, have = 0;
    int err = 0;

    /* Writable: the log went into the file at open, which then grows. */
    if (s->writable)
        return io_pread_full(s->fd, buf, len, off);
    if (__builtin_add_overflow(off, len, &end) || end > s->file_size) {
        memset(buf, 0, len);
        return -ENODATA;
    }
    if (off < s->real_size) {
        have = s->real_size - off < len ? s->real_size - off : len;
        err = io_pread_full(s->fd, p, have, off);
        if (err)
            return err;
    }
    memset(p + have, 0, len - have);
    for (size_t i = overlay_find(s, off);
         i < s->overlay_count && s->overlay[i].off < end; i++) {
        const struct vhdx_overlay_piece *o = &s->overlay[i];
        uint64_t from = o->off > off ? o->off : off;
        uint64_t to = o->off + o->len < end ? o->off + o->len : end;
        if (o->data)
            memcpy(p + (from - off), o->data + (from - o->off), to - from);
        else
            memset(p + (from - off), 0, to - from);
    }
    return 0;
}

bool vhdx_overlay_touches(const struct vhdx_state *s, uint64_t off,
                          uint64_t len)
{
    size_t i = overlay_find(s, off);
    if (s->writable)
        return false;
    return off + len > s->real_size ||
           (i < s->overlay_count && s->overlay[i].off < off + len);
}
