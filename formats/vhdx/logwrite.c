/* The VHDX log on the write side ([MS-VHDX] 2.3): replaying a pending log
 * into the file at a writable open, and carrying BAT updates through the
 * log.
 *
 * BAT entries change in memory when a block is allocated or zeroed
 * (write.c), each change marking its 4 KB BAT sector dirty.  A commit
 * (vhdx_commit: FLUSH, FUA, close) takes every dirty sector at once, so
 * the allocations of many writers travel in one log entry (and the
 * FLUSH and FUA requests that arrive while one commit runs share the
 * next), and then:
 *
 *   1. syncs the file: every data write that completed before the commit
 *      took the sectors is durable before a log entry can name its block
 *      (and so are the in-place BAT writes of the commit before, so the
 *      log space they were carried in may be used again);
 *   2. writes a log entry (a descriptor and a data sector per BAT sector)
 *      after the previous one, wrapping at the end of the log, and syncs;
 *   3. on the first commit of an open, writes the headers with this
 *      open's LogGuid (the entry is durable first, so no header ever
 *      names a log without a valid entry, which would make the file
 *      corrupt by 2.3.3);
 *   4. writes the BAT sectors in place, without a sync of their own.
 *
 * A crash after 2 finds the entry (the highest sequence number, its own
 * tail: everything before it is applied and durable) and replays it; a
 * torn entry fails its checksum or sector sequence numbers, and the
 * entry before it, intact because an entry is at most half the log, is
 * replayed instead, rewriting BAT sectors that already hold its data.
 * Entries carry whole 4 KB BAT sectors, so a torn in-place write is
 * always repaired by replay.  More dirty sectors than half the log holds
 * go in several rounds of 1-4.  At close, after a last commit and sync,
 * LogGuid is cleared so other readers need no replay.
 *
 * The FileOffsetMB-free states (ZERO) are written with offset 0, as
 * Hyper-V expects.
 */
#include <errno.h>
#include <inttypes.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "vhdx.h"

#define BAT_PER_SECTOR (VHDX_LOG_SECTOR / 8)

void vhdx_mark_dirty(struct vhdx_state *s, uint64_t i)
{
    uint64_t sec = i / BAT_PER_SECTOR;
    uint8_t bit = (uint8_t)(1u << (sec % 8));

    if (!(s->dirty[sec / 8] & bit)) {
        s->dirty[sec / 8] |= bit;
        s->dirty_count++;
    }
}

/* The most data sectors one entry may carry: the entry (descriptor
 * sectors included) must fit in half the log. */
static uint32_t max_entry_sectors(const struct vhdx_state *s)
{
    uint32_t half = s->header.log_length / 2 / VHDX_LOG_SECTOR;
    uint32_t n = half > 1 ? half - 1 : 0;

    /* 64 + 32 n bytes of header and descriptors in (half - n) sectors. */
    while (n > 0 && 64 + 32ull * n > (uint64_t)(half - n) * VHDX_LOG_SECTOR)
        n--;
    return n;
}

/* One commit round's pages: BAT sectors and sector bitmap pages, their
 * file offsets, ids (a BAT sector's index, or SB_ID plus a bitmap page
 * id) and contents. */
#define SB_ID (1ull << 63)
struct bat_batch {
    uint64_t *off;
    uint64_t *id;
    uint8_t *data;              /* n * 4 KB */
    uint32_t n;
};

/* Take up to max dirty sectors into b (under the lock).  From the end
 * of the BAT down: when the pages do not fit in one entry, a chunk's
 * sector bitmap entry (after its payload entries) goes no later than
 * the PARTIALLY_PRESENT entries that need it, and bitmap pages, last,
 * no earlier than the entries whose bits they hold being present
 * (bits of a block not yet present in the file are harmless). */
static void take_dirty(struct vhdx_state *s, struct bat_batch *b,
                       uint32_t max)
{
    uint64_t sectors = (s->bat_entries + BAT_PER_SECTOR - 1) /
                       BAT_PER_SECTOR;

    b->n = 0;
    for (uint64_t sec = sectors; sec-- > 0 && b->n < max;) {
        uint8_t bit = (uint8_t)(1u << (sec % 8));
        if (!(s->dirty[sec / 8] & bit))
            continue;
        s->dirty[sec / 8] &= (uint8_t)~bit;
        s->dirty_count--;
        uint8_t *d = b->data + (size_t)b->n * VHDX_LOG_SECTOR;
        memset(d, 0, VHDX_LOG_SECTOR);
        for (uint64_t k = 0; k < BAT_PER_SECTOR; k++) {
            uint64_t i = sec * BAT_PER_SECTOR + k;
            if (i >= s->bat_entries)
                break;
            uint64_t le = htole64(__atomic_load_n(&s->bat[i],
                                                  __ATOMIC_RELAXED));
            memcpy(d + k * 8, &le, 8);
        }
        b->off[b->n] = s->bat_region.offset + sec * VHDX_LOG_SECTOR;
        b->id[b->n++] = sec;
    }
    /* Bitmap pages after the BAT sectors: a new bitmap block's BAT entry
     * travels in the same entry or an earlier one. */
    uint32_t k = b->n;
    uint32_t more = vhdx_sb_take_dirty(s, max - b->n, b->off + k, b->id + k,
                                       b->data + (size_t)k * VHDX_LOG_SECTOR);
    for (uint32_t i = k; i < k + more; i++)
        b->id[i] |= SB_ID;
    b->n += more;
}

/* Put the sectors back as dirty after a failed round (under the lock). */
static void untake(struct vhdx_state *s, const struct bat_batch *b)
{
    for (uint32_t k = 0; k < b->n; k++) {
        if (b->id[k] & SB_ID)
            vhdx_sb_untake(s, b->id[k] & ~SB_ID);
        else
            vhdx_mark_dirty(s, b->id[k] * BAT_PER_SECTOR);
    }
}

static uint64_t round_up_mb(uint64_t v)
{
    return (v + VHDX_MB - 1) / VHDX_MB * VHDX_MB;
}

/* Build the log entry carrying b into e (entry_len bytes). */
static void build_entry(struct vhdx_state *s, const struct bat_batch *b,
                        uint8_t *e, uint32_t entry_len, uint32_t desc_secs,
                        uint64_t flushed, uint64_t last)
{
    struct vhdx_log_entry_header h = { 0 };
    uint64_t seq = s->log_next_seq;

    memset(e, 0, entry_len);
    h.signature = htole32(VHDX_LOG_SIGNATURE);
    h.entry_length = htole32(entry_len);
    h.tail = htole32(s->log_pos);
    h.sequence_number = htole64(seq);
    h.descriptor_count = htole32(b->n);
    h.log_guid = s->session_log_guid;
    h.flushed_file_offset = htole64(flushed);
    h.last_file_offset = htole64(last);
    for (uint32_t k = 0; k < b->n; k++) {
        const uint8_t *src = b->data + (size_t)k * VHDX_LOG_SECTOR;
        struct vhdx_log_descriptor d = { 0 };
        struct vhdx_log_data_sector ds;
        d.signature = htole32(VHDX_LOG_DESC_SIGNATURE);
        memcpy(&d.trailing_bytes, src + VHDX_LOG_SECTOR - 4, 4);
        memcpy(&d.leading_bytes, src, 8);
        d.file_offset = htole64(b->off[k]);
        d.sequence_number = htole64(seq);
        memcpy(e + 64 + (size_t)k * 32, &d, sizeof d);
        ds.signature = htole32(VHDX_LOG_DATA_SIGNATURE);
        ds.sequence_high = htole32((uint32_t)(seq >> 32));
        memcpy(ds.data, src + 8, sizeof ds.data);
        ds.sequence_low = htole32((uint32_t)seq);
        memcpy(e + (size_t)(desc_secs + k) * VHDX_LOG_SECTOR, &ds,
               sizeof ds);
    }
    memcpy(e, &h, sizeof h);
    uint32_t csum = htole32(vhdx_crc32c(e, entry_len));
    memcpy(e + offsetof(struct vhdx_log_entry_header, checksum), &csum, 4);
}

/* Write the entry at log_pos, wrapping at the end of the log. */
static int write_entry(struct vhdx_state *s, const uint8_t *e, uint32_t len)
{
    uint32_t first = s->header.log_length - s->log_pos;
    int err;

    if (first > len)
        first = len;
    err = io_pwrite_tag(s->fd, e, first, s->header.log_offset + s->log_pos,
                        IO_TAG_LOG);
    if (!err && first < len)
        err = io_pwrite_tag(s->fd, e + first, len - first,
                            s->header.log_offset, IO_TAG_LOG);
    return err;
}

/* Write the batch's pages in place. */
static int apply_batch(struct vhdx_state *s, const struct bat_batch *b)
{
    for (uint32_t k = 0; k < b->n; k++) {
        /* The BAT region holds whole sectors (1 MB multiple). */
        int err = io_pwrite_tag(s->fd, b->data + (size_t)k * VHDX_LOG_SECTOR,
                                VHDX_LOG_SECTOR, b->off[k], IO_TAG_BAT);
        if (err)
            return err;
    }
    return 0;
}

/* The commit's sync; a failure makes every later write fail. */
static int commit_sync(struct vhdx_state *s, enum io_tag tag)
{
    int err = io_sync(s->fd, tag);

    if (err && !__atomic_exchange_n(&s->failed, true, __ATOMIC_ACQ_REL))
        img_log("vhdx: %s: sync (%s) failed, refusing further writes: %s",
                s->img.path, io_tag_name(tag), strerror(-err));
    return err;
}

/* One round: log the batch, then apply it (see the top). */
static int log_and_apply(struct vhdx_state *s, const struct bat_batch *b,
                         uint64_t flushed, uint64_t last, uint8_t *e)
{
    uint32_t desc_secs = (uint32_t)((64 + 32ull * b->n + VHDX_LOG_SECTOR -
                                     1) / VHDX_LOG_SECTOR);
    uint32_t len = (desc_secs + b->n) * VHDX_LOG_SECTOR;
    bool early = s->breaks & VHDX_BREAK_APPLY_BEFORE_LOG_FLUSH;
    int err;

    if (s->breaks & VHDX_BREAK_LOG_REUSE)
        s->log_pos = 0;
    build_entry(s, b, e, len, desc_secs, flushed, last);
    if ((err = write_entry(s, e, len)) ||
        (early && (err = apply_batch(s, b))) ||
        (err = commit_sync(s, IO_TAG_LOG))) {
        img_log("vhdx: %s: writing log entry %" PRIu64 ": %s", s->img.path,
                s->log_next_seq, strerror(-err));
        return err;
    }
    s->log_next_seq++;
    s->log_pos = (uint32_t)(((uint64_t)s->log_pos + len) %
                            s->header.log_length);
    if (!s->log_active) {
        s->header.log_guid = s->session_log_guid;
        if ((err = vhdx_write_headers(s)))
            return err;
        s->log_active = true;
    }
    if (s->crash_after_log) {
        img_log("vhdx: %s: DISKSERVE_VHDX_CRASH: stopping after the log "
                "flush", s->img.path);
        kill(getpid(), SIGKILL);
    }
    if (!early && (err = apply_batch(s, b)))
        img_log("vhdx: %s: writing the BAT in place: %s", s->img.path,
                strerror(-err));
    return err;
}

int vhdx_commit(struct vhdx_state *s, enum io_tag tag)
{
    uint32_t max = max_entry_sectors(s);
    struct bat_batch b = { 0 };
    uint8_t *e = NULL;
    int err = 0;

    pthread_mutex_lock(&s->lock);
    /* Group commit: any commit that starts after this call takes every
     * BAT change and syncs every data write completed before it, so the
     * callers that came while one commit ran share the next one. */
    uint64_t want = s->commits_started + 1;
    while (s->committing && s->commits_done < want)
        pthread_cond_wait(&s->cond, &s->lock);
    if (s->commits_done >= want) {
        err = s->commit_err;
        pthread_mutex_unlock(&s->lock);
        return err;
    }
    s->committing = true;
    s->commits_started++;
    if (s->dirty_count || s->sb_dirty_count) {
        b.off = malloc((size_t)max * sizeof *b.off);
        b.id = malloc((size_t)max * sizeof *b.id);
        b.data = malloc((size_t)max * VHDX_LOG_SECTOR);
        e = malloc((size_t)max * VHDX_LOG_SECTOR + 2 * VHDX_LOG_SECTOR);
        if (!b.off || !b.id || !b.data || !e)
            err = -ENOMEM;
    }
    do {
        if (!err)
            take_dirty(s, &b, max);
        /* Extensions happened under the lock, before the sync below. */
        uint64_t size = s->disk_file_size, last = round_up_mb(s->file_end);
        pthread_mutex_unlock(&s->lock);
        if (!err && __atomic_load_n(&s->failed, __ATOMIC_ACQUIRE))
            err = -EIO;
        if (!err && (!b.n || !(s->breaks & (VHDX_BREAK_LOG_REUSE |
                                             VHDX_BREAK_BAT_BEFORE_DATA))))
            err = commit_sync(s, tag);
        if (!err && b.n)
            err = log_and_apply(s, &b, size / VHDX_MB * VHDX_MB,
                                last > size ? last : round_up_mb(size), e);
        pthread_mutex_lock(&s->lock);
        if (err)
            untake(s, &b);
    } while (!err && b.n == max && (s->dirty_count || s->sb_dirty_count));
    s->committing = false;
    s->commits_done = s->commits_started;
    s->commit_err = err;
    pthread_cond_broadcast(&s->cond);
    pthread_mutex_unlock(&s->lock);
    free(b.off);
    free(b.id);
    free(b.data);
    free(e);
    return err;
}

int vhdx_replay_into_file(struct vhdx_state *s)
{
    const char *path = s->img.path;
    int err = 0;

    if (!s->log_sequence)
        return 0;
    /* This open's FileWriteGuid goes first: replay changes the file. */
    vhdx_guid_generate(&s->header.file_write_guid);
    if ((err = vhdx_write_headers(s)))
        return err;
    for (size_t i = 0; i < s->overlay_count && !err; i++) {
        const struct vhdx_overlay_piece *o = &s->overlay[i];
        if (o->data)
            err = io_pwrite_tag(s->fd, o->data, o->len, o->off, IO_TAG_LOG);
        else
            err = io_write_zeroes_tag(s->fd, o->len, o->off, IO_TAG_LOG);
    }
    if (!err && s->file_size > s->real_size)
        err = io_truncate(s->fd, s->file_size, IO_TAG_LOG);
    if (!err)
        err = io_sync(s->fd, IO_TAG_LOG);
    if (err) {
        img_log("vhdx: %s: replaying the log into the file: %s", path,
                strerror(-err));
        return err;
    }
    img_log("vhdx: %s: replayed log entries up to %" PRIu64 " into the "
            "file (%zu pieces)", path, s->log_sequence, s->overlay_count);
    vhdx_overlay_free(s);
    if (s->file_size > s->real_size)
        s->real_size = s->file_size;
    memset(&s->header.log_guid, 0, sizeof s->header.log_guid);
    return vhdx_write_headers(s);
}
