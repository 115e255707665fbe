/* qcow2 request tracking for concurrent writers (DESIGN.md, "in-flight
 * allocation tracking"): which guest clusters are being given new host
 * clusters right now, and which requests may still be touching host
 * clusters they looked up before the metadata lock was dropped.
 *
 * In-flight records are guest cluster ranges.  A request that must change
 * the L2 entry of a cluster first waits until no record overlaps it, then
 * registers its own for the time it writes with the lock dropped; so two
 * writers never allocate the same guest cluster twice, and neither
 * loses the other's data.
 *
 * Requests (reads, writes, zeroes, trims) get a sequence number when
 * they start.  A host cluster freed while older requests run is kept out
 * of the allocator until they have all ended (qcow2_free_is_quiet), so no
 * request ever reads or writes a cluster after it was reused.  Reads on
 * the event loop thread go through map_nowait and read the file after it
 * returns, outside the lock; that thread serves one such read at a time
 * and calls map_done when it is over.  Calls are counted: a free queued
 * while the last call's data range may still be read waits until that
 * call is done (nowait_done), or until a later call, which implies it.
 * A caller that keeps referring to mapped file bytes after map_done (a
 * spliced read: the pipe and the socket hold references to the pages)
 * pins them first: a free queued since the first map_nowait of that
 * read waits until the pin is gone.
 *
 * Everything here runs under the metadata lock, and calls nothing else
 * of the driver: the allocator asks it whether a free is quiet.
 */
#include <errno.h>
#include <stdint.h>
#include <stdlib.h>

#include "qcow2.h"

void qcow2_lock(struct qcow2_state *s)
{
    if (s->writable)
        pthread_mutex_lock(&s->lock);
}

void qcow2_unlock(struct qcow2_state *s)
{
    if (s->writable)
        pthread_mutex_unlock(&s->lock);
}

void qcow2_req_begin(struct qcow2_state *s, struct qcow2_req *r)
{
    if (!s->writable)
        return;
    r->seq = ++s->req_seq;
    r->next = NULL;
    r->prev = s->reqs_tail;
    if (s->reqs_tail)
        s->reqs_tail->next = r;
    else
        s->reqs = r;
    s->reqs_tail = r;
}

bool qcow2_req_end(struct qcow2_state *s, struct qcow2_req *r)
{
    if (!s->writable)
        return false;
    bool was_oldest = s->reqs == r;
    if (r->prev)
        r->prev->next = r->next;
    else
        s->reqs = r->next;
    if (r->next)
        r->next->prev = r->prev;
    else
        s->reqs_tail = r->prev;
    r->next = r->prev = NULL;
    return was_oldest;
}

bool qcow2_free_is_quiet(const struct qcow2_state *s,
                         const struct qcow2_free *f)
{
    if (f->wait != QCOW2_FREE_READY)
        return false;
    if (s->reqs && s->reqs->seq <= f->seq)
        return false;
    if (s->n_pins > 0 && qcow2_pinned_since(s, f->seq))
        return false;
    return f->nowait_call == 0 ||
           __atomic_load_n(&s->nowait_done, __ATOMIC_ACQUIRE) >=
               f->nowait_call ||
           s->nowait_calls > f->nowait_call;
}

uint64_t qcow2_nowait_guard(const struct qcow2_state *s)
{
    if (s->nowait_data_call != s->nowait_calls ||
        __atomic_load_n(&s->nowait_done, __ATOMIC_ACQUIRE) >=
            s->nowait_calls)
        return 0;
    return s->nowait_calls;
}

bool qcow2_pinned_since(const struct qcow2_state *s, uint64_t seq)
{
    pthread_mutex_t *l = (pthread_mutex_t *)&s->pin_lock;
    bool pinned = false;

    pthread_mutex_lock(l);
    for (size_t i = 0; i < s->n_pins && !pinned; i++)
        pinned = s->pins[i].seq <= seq;
    pthread_mutex_unlock(l);
    return pinned;
}

int qcow2_pin(struct qcow2_state *s, uint64_t *token)
{
    int err = 0;

    pthread_mutex_lock(&s->pin_lock);
    if (s->n_pins == s->cap_pins) {
        size_t cap = s->cap_pins ? 2 * s->cap_pins : 16;
        struct qcow2_pin *v = realloc(s->pins, cap * sizeof *v);
        if (!v) {
            err = -ENOMEM;
            goto out;
        }
        s->pins = v;
        s->cap_pins = cap;
    }
    *token = ++s->pin_next;
    /* No map_nowait since map_done: nothing to hold back. */
    s->pins[s->n_pins++] = (struct qcow2_pin){
        .token = *token,
        .seq = s->nowait_seq_set ? s->nowait_seq : UINT64_MAX,
    };
out:
    pthread_mutex_unlock(&s->pin_lock);
    return err;
}

void qcow2_unpin(struct qcow2_state *s, uint64_t token)
{
    pthread_mutex_lock(&s->pin_lock);
    for (size_t i = 0; i < s->n_pins; i++) {
        if (s->pins[i].token == token) {
            s->pins[i] = s->pins[--s->n_pins];
            break;
        }
    }
    pthread_mutex_unlock(&s->pin_lock);
}

void qcow2_nowait_reads_over(struct qcow2_state *s)
{
    /* Only the calling thread changes nowait_calls, under the lock. */
    __atomic_store_n(&s->nowait_done,
                     __atomic_load_n(&s->nowait_calls, __ATOMIC_RELAXED),
                     __ATOMIC_RELEASE);
}

/* Whether guest clusters [a1, b1) and [a2, b2) overlap. */
static bool overlap(uint64_t a1, uint64_t b1, uint64_t a2, uint64_t b2)
{
    return a1 < b2 && a2 < b1;
}

bool qcow2_inflight_busy(const struct qcow2_state *s, uint64_t first,
                         uint64_t end)
{
    for (const struct qcow2_inflight *r = s->inflight; r; r = r->next)
        if (overlap(first, end, r->first, r->end))
            return true;
    return false;
}

uint64_t qcow2_inflight_free_run(const struct qcow2_state *s, uint64_t first,
                                 uint64_t end)
{
    uint64_t stop = end;

    for (const struct qcow2_inflight *r = s->inflight; r; r = r->next)
        if (r->end > first && r->first < stop)
            stop = r->first > first ? r->first : first;
    return stop - first;
}

void qcow2_inflight_wait(struct qcow2_state *s)
{
    s->inflight_waiters++;
    pthread_cond_wait(&s->inflight_done, &s->lock);
    s->inflight_waiters--;
}

void qcow2_inflight_add(struct qcow2_state *s, struct qcow2_inflight *r,
                        uint64_t first, uint64_t end)
{
    r->first = first;
    r->end = end;
    r->prev = NULL;
    r->next = s->inflight;
    if (s->inflight)
        s->inflight->prev = r;
    s->inflight = r;
}

void qcow2_inflight_remove(struct qcow2_state *s, struct qcow2_inflight *r)
{
    if (r->prev)
        r->prev->next = r->next;
    else
        s->inflight = r->next;
    if (r->next)
        r->next->prev = r->prev;
    r->next = r->prev = NULL;
    if (s->inflight_waiters)
        pthread_cond_broadcast(&s->inflight_done);
}
