/* Reading a DISKSERVE_IO_LOG (formats/io.h) and turning it into crash
 * states: the files as they could be on disk after a power failure.
 *
 * The model (dm-log-writes): the log lists completed changes (writes,
 * truncates, fallocates) in completion order, and each sync as a
 * SYNC_BEGIN / SYNC_END pair.  A sync covers exactly the changes logged
 * before its SYNC_BEGIN.  Crash point k sits just before the (k+1)th
 * successful SYNC_END (point 0: before any sync ended; the last point:
 * the end of the log).  At point k every change logged before the latest
 * SYNC_BEGIN among the k syncs that have ended is durable (the base);
 * every later change logged before the crash point (the epoch) may or
 * may not be, and a write may be torn.
 *
 * A crash state is a point, the subset of its epoch applied (in log
 * order) and optionally one epoch write applied only in part: pieces
 * [from, to) of piece bytes each.  Its text form, which every tool prints
 * and accepts:  k=K,ops=HEX[,torn=I:PIECE:FROM-TO]  where bit i of HEX is
 * epoch change i and I is an epoch change index.
 */
#ifndef CRASHLOG_H
#define CRASHLOG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "io.h"

struct clog_rec {
    struct io_log_rec h;
    const uint8_t *data;        /* payload, h.payload bytes */
};

struct clog_file {
    uint32_t id;
    char *path;                 /* as logged */
    uint8_t *init;              /* contents before the first record */
    uint64_t init_size;
    bool has_init;
};

/* A sync covers only its own file, so the base is per file: at point k,
 * the changes of file f with a change index below base_end[k * nfiles +
 * f] are durable.  The epoch of point k lists the other changes logged
 * before the point: epoch_idx[epoch_off[k] .. epoch_off[k] + epoch_len[k]).
 */
struct clog {
    uint8_t *buf;               /* the whole log */
    size_t len;
    struct clog_rec *recs;
    size_t nrecs;
    struct clog_file *files;
    size_t nfiles;
    size_t *changes;            /* record indices of WRITE/TRUNCATE/
                                   FALLOCATE, in log order */
    size_t nchanges;
    size_t npoints;
    size_t *base_end;           /* npoints * nfiles change indices */
    size_t *epoch_off, *epoch_len;
    size_t *epoch_idx;          /* change indices */
    size_t *point_rec;          /* point k: record index of the crash
                                   point (its marks precede it) */
};

/* One file's contents in memory; bytes in [size, cap) are zero. */
struct mfile {
    uint8_t *data;
    uint64_t size;
    uint64_t cap;
};

struct mstate {
    struct mfile *f;
    size_t n;
};

struct cstate {
    uint32_t k;
    uint32_t nops;              /* epoch changes of point k */
    uint64_t *mask;             /* (nops + 63) / 64 words */
    int32_t torn;               /* epoch change index, or -1 */
    uint32_t piece, from, to;
};

/* Load and index a log; 0 or -errno with a message on stderr. */
int clog_load(struct clog *lg, const char *path);

/* Free what clog_load allocated. */
void clog_free(struct clog *lg);

/* Give a logged file its starting contents from "LOGGED=COPY" (LOGGED
 * may be the logged path or its basename); 0, 1 when no logged file has
 * that name, or -errno. */
int clog_set_initial(struct clog *lg, const char *spec);

/* Check every logged file has starting contents; 0 or -EINVAL. */
int clog_check_initial(const struct clog *lg);

/* The log's name for a record type, for messages. */
const char *clog_type_name(uint32_t type);

/* A tag's name, as DISKSERVE_FAULT spells it. */
const char *clog_tag_name(uint32_t tag);

/* The change record at epoch position i of point k. */
const struct clog_rec *clog_epoch_rec(const struct clog *lg, size_t k,
                                      size_t i);

/* Starting contents of every file; 0 or -ENOMEM. */
int mstate_init(struct mstate *m, const struct clog *lg);

/* Make dst a copy of src (dst initialised or zeroed); 0 or -ENOMEM. */
int mstate_copy(struct mstate *dst, const struct mstate *src);

/* Apply a change record, of a write only bytes [from, to) of its range
 * (pass 0, UINT64_MAX for all); 0, -ENOMEM or -ENOTSUP. */
int mstate_apply(struct mstate *m, const struct clog_rec *r, uint64_t from,
                 uint64_t to);

/* Bring a base to point k: applied holds, per file, the change index
 * up to which it is applied (all 0 for mstate_init's state), and only
 * moves forward. */
int mstate_advance(struct mstate *m, const struct clog *lg, size_t *applied,
                   size_t k);

/* Build the base of point k from the starting contents, leaving out
 * change index skip (SIZE_MAX: none); m must be zeroed or freed. */
int mstate_build_base(struct mstate *m, const struct clog *lg, size_t k,
                      size_t skip);

/* Write each file to DIR/basename; 0 or -errno. */
int mstate_write(const struct mstate *m, const struct clog *lg,
                 const char *dir);

/* Free the contents. */
void mstate_free(struct mstate *m);

/* Every crash state of every point: the whole epoch subset space when it
 * has at most 10 changes, else empty, full, each single omission, each
 * single inclusion and 256 random subsets; plus torn writes (512 B and
 * 4 KiB pieces) of each epoch write.  0 or -ENOMEM. */
int cstates_enumerate(const struct clog *lg, uint64_t seed,
                      struct cstate **out, size_t *n);

/* Free a state's mask; free an array of n states and their masks. */
void cstate_free(struct cstate *s);
void cstates_free(struct cstate *v, size_t n);

/* The text form of a state (malloc'd), or NULL. */
char *cstate_spec(const struct cstate *s);

/* Parse the text form; 0 or -EINVAL with a message. */
int cstate_parse(const struct clog *lg, const char *spec,
                 struct cstate *s);

/* Is epoch change i applied in full? */
bool cstate_has(const struct cstate *s, size_t i);

/* out = base (the base of point s->k) + the state's epoch changes. */
int cstate_materialize(const struct clog *lg, const struct mstate *base,
                       const struct cstate *s, struct mstate *out);

/* Apply the state's epoch changes to m (a copy of its point's base). */
int cstate_apply(const struct clog *lg, const struct cstate *s,
                 struct mstate *m);

/* Undo cstate_apply for any state of point k: copy back from base every
 * range an epoch change of k may have touched.  0 or -ENOMEM. */
int mstate_restore(struct mstate *m, const struct mstate *base,
                   const struct clog *lg, size_t k);

/* A 128-bit hash of a state of point k, m holding its point's base plus
 * some epoch changes: the sizes and every range an epoch change may
 * touch, the rest being the same for all states of k. */
void cstate_hash(const struct clog *lg, size_t k, const struct mstate *m,
                 uint64_t out[2]);

/* A 64-bit splitmix generator step. */
uint64_t crash_rand(uint64_t *state);

#endif /* CRASHLOG_H */
