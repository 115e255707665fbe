/* qcow2 durability primitives, the lowest layer of the write side: the
 * count of completed writes and of the writes a finished sync covered
 * (so a sync is skipped only when one that has ended made everything
 * durable, however many threads ask for one), the sync itself, one at
 * a time, which after a failure refuses every later write, and the two header bits
 * written at once: corrupt and dirty.  The write order built on them is
 * in flush.c; this file depends on nothing else of the driver.
 */
#include <endian.h>
#include <errno.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "io.h"
#include "qcow2.h"

void qcow2_note_write(struct qcow2_state *s)
{
    __atomic_add_fetch(&s->write_gen, 1, __ATOMIC_SEQ_CST);
}

int qcow2_sync(struct qcow2_state *s, enum io_tag tag)
{
    int err = 0;

    /* One sync at a time: the kernel reports a write-back error to one
     * fdatasync of a file only, so the sync that sees it must have
     * recorded it before another can return success.  Writes counted
     * now completed before the sync starts, so it covers them; a write
     * that completes meanwhile makes the next sync happen. */
    pthread_mutex_lock(&s->sync_lock);
    uint64_t gen = __atomic_load_n(&s->write_gen, __ATOMIC_SEQ_CST);
    if (s->data_fd != s->fd)
        err = io_sync(s->data_fd, tag);
    if (!err)
        err = io_sync(s->fd, tag);
    if (!err && __atomic_load_n(&s->sync_failed, __ATOMIC_ACQUIRE))
        err = -EIO;     /* an earlier failure: nothing since is sure */
    else if (!err && __atomic_load_n(&s->synced_gen, __ATOMIC_RELAXED) < gen)
        __atomic_store_n(&s->synced_gen, gen, __ATOMIC_RELEASE);
    else if (err && !__atomic_exchange_n(&s->sync_failed, 1,
                                         __ATOMIC_ACQ_REL))
        img_log("qcow2: %s: sync (%s) failed, refusing further writes: %s",
                s->img.path, io_tag_name(tag), strerror(-err));
    pthread_mutex_unlock(&s->sync_lock);
    return err ? -EIO : 0;
}

int qcow2_sync_if_needed(struct qcow2_state *s, enum io_tag tag)
{
    if (__atomic_load_n(&s->synced_gen, __ATOMIC_ACQUIRE) >=
        __atomic_load_n(&s->write_gen, __ATOMIC_SEQ_CST))
        return 0;
    return qcow2_sync(s, tag);
}

int qcow2_write_incompatible(struct qcow2_state *s, uint64_t bits)
{
    uint64_t be = htobe64(bits);
    int err = io_pwrite_tag(s->fd, &be, 8, 72, IO_TAG_HEADER);
    if (!err) {
        qcow2_note_write(s);
        err = qcow2_sync(s, IO_TAG_HEADER);
    }
    if (err) {
        img_log("qcow2: %s: writing the header's feature bits: %s",
                s->img.path, strerror(-err));
        return err;
    }
    s->h.incompatible = bits;
    return 0;
}

void qcow2_mark_corrupt(struct qcow2_state *s, const char *fmt, ...)
{
    char why[256];
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(why, sizeof why, fmt, ap);
    va_end(ap);
    if (s->corrupt) {
        img_log("qcow2: %s: %s", s->img.path, why);
        return;
    }
    s->corrupt = true;
    img_log("qcow2: %s: %s; image marked corrupt, no longer written",
            s->img.path, why);
    if (s->h.version >= 3)
        qcow2_write_incompatible(s, s->h.incompatible |
                                    QCOW2_INCOMPAT_CORRUPT);
}
