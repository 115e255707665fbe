/* VHDX on-disk structures ([MS-VHDX] v8.0, section 2) and the driver's
 * internal interface.
 *
 * Every multi-byte field is little-endian on disk; the structs below are
 * the raw bytes, and the decode functions in header.c, region.c,
 * metadata.c and bat.c turn them into checked host values.  GUIDs are
 * kept as their 16 on-disk bytes (Microsoft layout: Data1..Data3
 * little-endian, Data4 in order) and compared as bytes.
 */
#ifndef DISKSERVE_VHDX_H
#define DISKSERVE_VHDX_H

#include <stdbool.h>
#include <stddef.h>
#include <endian.h>
#include <pthread.h>
#include <stdint.h>

#include "image.h"
#include "io.h"

#define VHDX_MB                 (1024u * 1024u)
#define VHDX_HEADER_SECTION     VHDX_MB          /* 2.2: 1 MB */
#define VHDX_HEADER1_OFFSET     (64u * 1024)     /* 2.2.2 */
#define VHDX_HEADER2_OFFSET     (128u * 1024)
#define VHDX_HEADER_SIZE        4096u            /* CRC covers 4 KB */
#define VHDX_REGION1_OFFSET     (192u * 1024)    /* 2.2.3 */
#define VHDX_REGION2_OFFSET     (256u * 1024)
#define VHDX_REGION_SIZE        (64u * 1024)     /* CRC covers 64 KB */
#define VHDX_REGION_MAX_ENTRIES 2047u
#define VHDX_METADATA_TABLE_SIZE (64u * 1024)    /* 2.6 */
#define VHDX_METADATA_MAX_ENTRIES 2047u
#define VHDX_MAX_DISK_SIZE      (64ull << 40)    /* 2.6.2.2: 64 TB */
#define VHDX_SECTORS_PER_BITMAP (1u << 23)       /* 2.4 */
#define VHDX_MAX_CHAIN_DEPTH    32u              /* parents below a child */

/* Signatures, as the little-endian value of their ASCII bytes. */
#define VHDX_FILE_SIGNATURE     0x656C696678646876ull   /* "vhdxfile" */
#define VHDX_HEADER_SIGNATURE   0x64616568u             /* "head" */
#define VHDX_REGION_SIGNATURE   0x69676572u             /* "regi" */
#define VHDX_METADATA_SIGNATURE 0x617461646174656Dull   /* "metadata" */
#define VHDX_LOG_SIGNATURE      0x65676F6Cu             /* "loge" */
#define VHDX_LOG_DESC_SIGNATURE 0x63736564u             /* "desc" */
#define VHDX_LOG_ZERO_SIGNATURE 0x6F72657Au             /* "zero" */
#define VHDX_LOG_DATA_SIGNATURE 0x61746164u             /* "data" */
#define VHDX_LOG_SECTOR         4096u                   /* 2.3.1 */

/* Payload BAT entry states (2.5.1.1); 4 and 5 are reserved. */
#define VHDX_PAYLOAD_NOT_PRESENT        0
#define VHDX_PAYLOAD_UNDEFINED          1
#define VHDX_PAYLOAD_ZERO               2
#define VHDX_PAYLOAD_UNMAPPED           3
#define VHDX_PAYLOAD_FULLY_PRESENT      6
#define VHDX_PAYLOAD_PARTIALLY_PRESENT  7
/* Sector bitmap BAT entry states (2.5.1.2). */
#define VHDX_SB_NOT_PRESENT             0
#define VHDX_SB_PRESENT                 6

#define VHDX_BAT_STATE_MASK     0x7ull
#define VHDX_BAT_RESERVED_MASK  0xFFFF8ull               /* bits 3-19 */
#define VHDX_BAT_OFFSET_MASK    0xFFFFFFFFFFF00000ull    /* bits 20-63 */

struct vhdx_guid {
    uint8_t b[16];
};

/* 2.2.1 File Type Identifier, at offset 0. */
struct vhdx_file_id {
    uint64_t signature;         /* MUST be "vhdxfile" */
    uint16_t creator[256];      /* UTF-16, diagnostic only */
} __attribute__((packed));
_Static_assert(sizeof(struct vhdx_file_id) == 520, "file id is 520 bytes");

/* 2.2.2 Header, 4 KB at 64 KB and at 128 KB. */
struct vhdx_header {
    uint32_t signature;         /* MUST be "head" */
    uint32_t checksum;          /* CRC-32C of 4 KB, this field as zero */
    uint64_t sequence_number;   /* the valid header with the higher wins */
    struct vhdx_guid file_write_guid;
    struct vhdx_guid data_write_guid;
    struct vhdx_guid log_guid;  /* zero: the log is empty */
    uint16_t log_version;       /* MUST be 0 */
    uint16_t version;           /* MUST be 1 */
    uint32_t log_length;        /* multiple of 1 MB */
    uint64_t log_offset;        /* multiple of 1 MB */
    uint8_t reserved[4016];     /* MUST be 0, ignored */
} __attribute__((packed));
_Static_assert(sizeof(struct vhdx_header) == 4096, "header is 4096 bytes");

/* 2.2.3.1 Region Table Header, at 192 KB and 256 KB (64 KB each). */
struct vhdx_region_header {
    uint32_t signature;         /* MUST be "regi" */
    uint32_t checksum;          /* CRC-32C of 64 KB, this field as zero */
    uint32_t entry_count;       /* <= 2047 */
    uint32_t reserved;
} __attribute__((packed));
_Static_assert(sizeof(struct vhdx_region_header) == 16, "region header");

/* 2.2.3.2 Region Table Entry. */
struct vhdx_region_entry {
    struct vhdx_guid guid;      /* unique within the table */
    uint64_t file_offset;       /* multiple of 1 MB, at least 1 MB */
    uint32_t length;            /* multiple of 1 MB */
    uint32_t required;          /* bit 0: refuse the file if unknown */
} __attribute__((packed));
_Static_assert(sizeof(struct vhdx_region_entry) == 32, "region entry");

/* 2.3.1.1 Log Entry Header, at the start of an entry's first sector. */
struct vhdx_log_entry_header {
    uint32_t signature;         /* MUST be "loge" */
    uint32_t checksum;          /* CRC-32C of EntryLength bytes, this 0 */
    uint32_t entry_length;      /* multiple of 4 KB */
    uint32_t tail;              /* log offset of the sequence's first entry */
    uint64_t sequence_number;   /* > 0, +1 from entry to entry */
    uint32_t descriptor_count;  /* may be 0 */
    uint32_t reserved;          /* MUST be 0 */
    struct vhdx_guid log_guid;  /* MUST equal the header's LogGuid */
    uint64_t flushed_file_offset; /* file at least this long; 1 MB multiple */
    uint64_t last_file_offset;  /* every structure below it; 1 MB multiple */
} __attribute__((packed));
_Static_assert(sizeof(struct vhdx_log_entry_header) == 64, "log entry header");

/* 2.3.1.2 Zero Descriptor and 2.3.1.3 Data Descriptor share a layout. */
struct vhdx_log_descriptor {
    uint32_t signature;         /* "zero" or "desc" */
    uint32_t trailing_bytes;    /* desc: bytes 4092-4095; zero: MUST be 0 */
    uint64_t leading_bytes;     /* desc: bytes 0-7; zero: ZeroLength */
    uint64_t file_offset;       /* multiple of 4 KB */
    uint64_t sequence_number;   /* MUST equal the entry's */
} __attribute__((packed));
_Static_assert(sizeof(struct vhdx_log_descriptor) == 32, "log descriptor");

/* 2.3.1.4 Data Sector: 4 KB, the update minus its first 8 / last 4 bytes. */
struct vhdx_log_data_sector {
    uint32_t signature;         /* MUST be "data" */
    uint32_t sequence_high;     /* entry SequenceNumber >> 32 */
    uint8_t data[4084];         /* bytes 8-4091 of the update */
    uint32_t sequence_low;      /* entry SequenceNumber & 0xFFFFFFFF */
} __attribute__((packed));
_Static_assert(sizeof(struct vhdx_log_data_sector) == 4096, "data sector");

/* 2.6.1.1 Metadata Table Header, at the start of the metadata region. */
struct vhdx_metadata_header {
    uint64_t signature;         /* MUST be "metadata" */
    uint16_t reserved;
    uint16_t entry_count;       /* <= 2047 */
    uint8_t reserved2[20];
} __attribute__((packed));
_Static_assert(sizeof(struct vhdx_metadata_header) == 32, "metadata header");

/* 2.6.1.2 Metadata Table Entry. */
#define VHDX_META_IS_USER       (1u << 0)
#define VHDX_META_IS_VIRTUAL    (1u << 1)
#define VHDX_META_IS_REQUIRED   (1u << 2)
struct vhdx_metadata_entry {
    struct vhdx_guid item_id;
    uint32_t offset;            /* >= 64 KB from the region start, or 0 */
    uint32_t length;            /* <= 1 MB; 0 only with offset 0 */
    uint32_t flags;             /* IsUser, IsVirtualDisk, IsRequired */
    uint32_t reserved2;
} __attribute__((packed));
_Static_assert(sizeof(struct vhdx_metadata_entry) == 32, "metadata entry");

/* 2.6.2.1 File Parameters. */
#define VHDX_PARAM_LEAVE_BLOCKS_ALLOCATED (1u << 0)
#define VHDX_PARAM_HAS_PARENT             (1u << 1)
struct vhdx_file_parameters {
    uint32_t block_size;        /* power of 2, 1 MB .. 256 MB */
    uint32_t flags;
} __attribute__((packed));
_Static_assert(sizeof(struct vhdx_file_parameters) == 8, "file parameters");

/* Well-known GUIDs, in on-disk byte order (vhdx.c). */
extern const struct vhdx_guid vhdx_bat_guid, vhdx_metadata_guid,
    vhdx_file_param_guid, vhdx_disk_size_guid, vhdx_page83_guid,
    vhdx_logical_sector_guid, vhdx_physical_sector_guid,
    vhdx_parent_locator_guid;

/* A region of the file, in bytes. */
struct vhdx_extent {
    uint64_t offset;
    uint64_t length;
};

/* One piece of the replayed log: len bytes at file offset off read as
 * data (4 KB, a data descriptor) or, when data is NULL, as zeros. */
struct vhdx_overlay_piece {
    uint64_t off;
    uint64_t len;
    uint8_t *data;
};

/* A payload block being given a new place in the file (write.c): the
 * writer that registered it writes the data with the lock dropped, then
 * sets the BAT entry; others wanting the block wait for it to go. */
struct vhdx_alloc {
    uint64_t block;
    struct vhdx_alloc *next;
};

/* A sector bitmap page held in memory (diffwrite.c). */
struct vhdx_sb_page {
    uint8_t data[4096];
    bool dirty;                 /* listed in sb_dirty */
};

/* Ordering rules DISKSERVE_VHDX_BREAK breaks on purpose (tests only). */
#define VHDX_BREAK_APPLY_BEFORE_LOG_FLUSH (1u << 0)
#define VHDX_BREAK_LOG_REUSE              (1u << 1)
#define VHDX_BREAK_BAT_BEFORE_DATA        (1u << 2)

/* The open image.  Read-only opens: everything read at open, immutable
 * afterwards.  Writable opens: see the locking rules in vhdx.c. */
struct vhdx_state {
    struct image img;           /* first: the generic part */
    int fd;
    uint64_t real_size;         /* the file's size on disk */
    uint64_t file_size;         /* after replay: at least LastFileOffset */

    /* log.c: the active log sequence replayed in memory, sorted by off,
     * not overlapping; every read of the file goes through it. */
    struct vhdx_overlay_piece *overlay;
    size_t overlay_count;
    uint64_t log_sequence;      /* head entry's SequenceNumber, 0: none */

    /* header.c */
    struct vhdx_header header;  /* the current header, host byte order */
    int current_header;         /* 1 or 2 */

    /* region.c */
    struct vhdx_extent bat_region;
    struct vhdx_extent metadata_region;

    /* metadata.c */
    uint32_t block_size;
    uint32_t param_flags;
    uint64_t disk_size;
    uint32_t logical_sector_size;
    uint32_t physical_sector_size;
    struct vhdx_guid page83;
    bool has_parent;

    /* parent.c: the parent locator of a differencing file (strings in
     * UTF-8, NULL when the key is absent) and the open parent. */
    struct vhdx_guid parent_linkage;
    struct vhdx_guid parent_linkage2;
    bool has_linkage2;
    char *relative_path;
    char *volume_path;
    char *absolute_win32_path;
    struct image *parent;       /* read-only VHDX, same disk size */

    /* bat.c */
    uint32_t chunk_ratio;       /* payload blocks per sector bitmap block */
    uint32_t block_shift;       /* log2(block_size) */
    uint64_t payload_blocks;
    uint64_t bat_entries;
    uint64_t *bat;              /* bat_entries entries, host byte order;
                                 * loaded and stored atomically */

    /* write.c and logwrite.c: writable opens only. */
    bool writable;
    bool leave_allocated;       /* LeaveBlocksAllocated (fixed files) */
    unsigned breaks;            /* VHDX_BREAK_*, from the environment */
    bool crash_after_log;       /* DISKSERVE_VHDX_CRASH=after-log-flush */
    pthread_mutex_t lock;       /* everything below, and BAT stores */
    pthread_cond_t cond;        /* an allocation or a commit ended */
    bool data_guid_new;         /* this open's DataWriteGuid is written */
    bool log_active;            /* the header names this open's LogGuid */
    bool failed;                /* a sync failed: no more writes */
    uint64_t disk_file_size;    /* the file's size as last set */
    uint64_t file_end;          /* the next payload block goes here */
    struct vhdx_alloc *allocs;  /* blocks being allocated */
    uint8_t *dirty;             /* a bit per 4 KB BAT sector changed in
                                 * memory since the last commit took it */
    uint64_t dirty_count;
    bool committing;            /* a commit runs (one at a time) */
    uint64_t commits_started;   /* commits begun, and ended: a caller */
    uint64_t commits_done;      /* shares one begun after it came */
    int commit_err;             /* how the last commit ended */
    struct vhdx_guid session_log_guid;

    /* diffwrite.c: sector bitmap pages (4 KB) of a writable differencing
     * file that writes changed, kept in memory for good: sb_pages[chunk]
     * is NULL or 256 page pointers (a bitmap block is 1 MB).  Dirty ones
     * are listed for the next commit by page id (chunk * 256 + page). */
    struct vhdx_sb_page ***sb_pages;
    uint64_t *sb_dirty;
    size_t sb_dirty_count, sb_dirty_cap;
    uint32_t log_pos;           /* log offset of the next entry */
    uint64_t log_next_seq;      /* its SequenceNumber */
};

/* CRC-32C (Castagnoli) of len bytes (crc32c.c). */
uint32_t vhdx_crc32c(const void *buf, size_t len);

/* Whether buf's CRC-32C, taken with the 4 bytes at csum_off as zero,
 * equals the little-endian value stored there. */
bool vhdx_checksum_ok(const void *buf, size_t len, size_t csum_off);

/* Check the file identifier and pick the current header.  0 or -errno
 * with one line logged. */
int vhdx_read_headers(struct vhdx_state *s);

/* Find the log's active sequence ([MS-VHDX] 2.3.3) when the current
 * header has a LogGuid and replay it into the in-memory overlay.  0 or
 * -errno with one line logged. */
int vhdx_replay_log(struct vhdx_state *s);

/* Read len bytes of the file at off as replayed: the file (zeros past its
 * real end) with the overlay on top.  -ENODATA past file_size, other
 * -errno on failure; logs nothing. */
int vhdx_pread(const struct vhdx_state *s, void *buf, uint64_t len,
               uint64_t off);

/* Whether the overlay or the file's replayed extension covers any byte of
 * [off, off+len): such a range cannot be read straight from the file. */
bool vhdx_overlay_touches(const struct vhdx_state *s, uint64_t off,
                          uint64_t len);

void vhdx_overlay_free(struct vhdx_state *s);

/* Writable opens: write what the replayed log changed (the overlay) into
 * the file, extend it to LastFileOffset, flush, and clear LogGuid; the
 * header first gets this open's FileWriteGuid.  0 or -errno, logged. */
int vhdx_replay_into_file(struct vhdx_state *s);

/* A new random GUID (version 4). */
void vhdx_guid_generate(struct vhdx_guid *g);

/* Write s->header to both header copies the spec's way, each with the
 * next sequence number and flushed.  0 or -errno, logged. */
int vhdx_write_headers(struct vhdx_state *s);

/* logwrite.c: make every BAT change made in memory so far durable
 * through the log, after making every completed data write durable:
 * data synced, log entries written and synced, BAT sectors written in
 * place (made durable by the next commit's first sync, before their log
 * space is used again).  Called without the lock.  0 or -errno. */
int vhdx_commit(struct vhdx_state *s, enum io_tag tag);

/* Mark BAT entry i changed in memory; under the lock. */
void vhdx_mark_dirty(struct vhdx_state *s, uint64_t i);

/* diffwrite.c: writes to a differencing file's block n ([off, off+len)
 * inside it); zeros when p is NULL.  0 or -errno. */
int vhdx_diff_write_block(struct vhdx_state *s, const uint8_t *p,
                          uint64_t len, uint64_t off, uint64_t n);

/* Copy nbytes of the sector bitmap of chunk c from byte byte0 into out,
 * from memory where a write changed it, else from the file. */
int vhdx_sb_read(struct vhdx_state *s, uint64_t c, uint64_t byte0,
                 uint64_t nbytes, uint8_t *out);

/* Take up to max dirty sector bitmap pages (under the lock): their file
 * offsets and contents; returns how many. */
uint32_t vhdx_sb_take_dirty(struct vhdx_state *s, uint32_t max,
                            uint64_t *off, uint64_t *id, uint8_t *data);

/* Put page id back on the dirty list after a failed commit. */
void vhdx_sb_untake(struct vhdx_state *s, uint64_t id);

void vhdx_sb_free(struct vhdx_state *s);

/* write.c helpers diffwrite.c shares; under the lock where noted. */
void vhdx_wait_block(struct vhdx_state *s, uint64_t n);        /* lock */
void vhdx_set_entry(struct vhdx_state *s, uint64_t i, uint64_t entry);
int vhdx_grow(struct vhdx_state *s, uint64_t len, uint64_t *host); /* lock */
void vhdx_alloc_add(struct vhdx_state *s, struct vhdx_alloc *r,
                    uint64_t n);                                 /* lock */
void vhdx_alloc_remove(struct vhdx_state *s, struct vhdx_alloc *r);
int vhdx_write_at(struct vhdx_state *s, const uint8_t *p, uint64_t len,
                  uint64_t host);

/* Set up and tear down the writable state (write.c). */
int vhdx_write_init(struct vhdx_state *s);
int vhdx_write_close(struct vhdx_state *s);
void vhdx_write_free(struct vhdx_state *s);

int vhdx_write(struct image *img, const void *buf, uint64_t len,
               uint64_t off, unsigned flags);
int vhdx_write_zeroes(struct image *img, uint64_t len, uint64_t off,
                      unsigned flags);
int vhdx_trim(struct image *img, uint64_t len, uint64_t off, unsigned flags);
int vhdx_flush(struct image *img);

/* Read the region table, BAT and metadata regions located and checked
 * against the file and each other.  0 or -errno with one line logged. */
int vhdx_read_regions(struct vhdx_state *s);

/* Read and check the metadata items.  0 or -errno with one line logged. */
int vhdx_read_metadata(struct vhdx_state *s);

/* Parse the parent locator item: len bytes at metadata region offset off
 * (the table entry already checked against the region).  0 or -errno
 * with one line logged. */
int vhdx_read_parent_locator(struct vhdx_state *s, uint32_t off,
                             uint32_t len);

/* Find, open and check the parent of a differencing file (read-only,
 * one level deeper in the chain).  0 or -errno with one line logged. */
int vhdx_open_parent(struct vhdx_state *s, const struct img_open_args *args);

/* Compute the BAT geometry, load the BAT and check every entry.  0 or
 * -errno with one line logged. */
int vhdx_load_bat(struct vhdx_state *s);

/* The BAT index of payload block n. */
static inline uint64_t vhdx_payload_index(const struct vhdx_state *s,
                                          uint64_t n)
{
    return n + n / s->chunk_ratio;
}

/* The BAT entry of payload block n (n < payload_blocks). */
static inline uint64_t vhdx_payload_entry(const struct vhdx_state *s,
                                          uint64_t n)
{
    return __atomic_load_n(&s->bat[vhdx_payload_index(s, n)],
                           __ATOMIC_ACQUIRE);
}

/* The BAT index of the sector bitmap block covering payload block n. */
static inline uint64_t vhdx_bitmap_index(const struct vhdx_state *s,
                                         uint64_t n)
{
    return (n / s->chunk_ratio) * ((uint64_t)s->chunk_ratio + 1) +
           s->chunk_ratio;
}

/* The BAT entry of the sector bitmap block covering payload block n. */
static inline uint64_t vhdx_bitmap_entry(const struct vhdx_state *s,
                                         uint64_t n)
{
    return __atomic_load_n(&s->bat[vhdx_bitmap_index(s, n)],
                           __ATOMIC_ACQUIRE);
}

/* Little-endian loads, for fields read out of a packed struct. */
static inline uint16_t vhdx_le16(uint16_t v) { return le16toh(v); }
static inline uint32_t vhdx_le32(uint32_t v) { return le32toh(v); }
static inline uint64_t vhdx_le64(uint64_t v) { return le64toh(v); }

/* "xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx" into out (37 bytes). */
void vhdx_guid_format(const struct vhdx_guid *g, char out[37]);

bool vhdx_guid_is_zero(const struct vhdx_guid *g);

#endif /* DISKSERVE_VHDX_H */
