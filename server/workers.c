/* The worker pool: threads that run driver code, which blocks on disk.
 *
 * The loop thread submits a struct srv_work; a worker runs work->run()
 * and queues the work on the completion list; a uv_async wakes the loop
 * thread, which calls work->done() for everything completed.  One mutex
 * guards the submission queue, another the completion list, so the two
 * directions never contend with each other.
 */
#include <errno.h>
#include <pthread.h>
#include <stdlib.h>

#include "server.h"

static struct {
    pthread_mutex_t lock;
    pthread_cond_t cond;
    struct srv_work *head, *tail;
    bool stop;
    pthread_t *threads;
    unsigned n;

    pthread_mutex_t done_lock;
    struct srv_work *done_head, *done_tail;
    uv_async_t async;
} pool = {
    .lock = PTHREAD_MUTEX_INITIALIZER,
    .cond = PTHREAD_COND_INITIALIZER,
    .done_lock = PTHREAD_MUTEX_INITIALIZER,
};

static void *worker_main(void *arg)
{
    (void)arg;
    for (;;) {
        pthread_mutex_lock(&pool.lock);
        while (!pool.head && !pool.stop)
            pthread_cond_wait(&pool.cond, &pool.lock);
        if (!pool.head) {
            pthread_mutex_unlock(&pool.lock);
            return NULL;
        }
        struct srv_work *w = pool.head;
        pool.head = w->next;
        if (!pool.head)
            pool.tail = NULL;
        pthread_mutex_unlock(&pool.lock);

        w->run(w);

        w->next = NULL;
        pthread_mutex_lock(&pool.done_lock);
        bool was_empty = pool.done_head == NULL;
        if (pool.done_tail)
            pool.done_tail->next = w;
        else
            pool.done_head = w;
        pool.done_tail = w;
        pthread_mutex_unlock(&pool.done_lock);
        /* The loop drains the whole list per wakeup: only the first
         * completion into an empty list needs to wake it. */
        if (was_empty)
            uv_async_send(&pool.async);
    }
}

static void on_async(uv_async_t *a)
{
    (void)a;
    pthread_mutex_lock(&pool.done_lock);
    struct srv_work *w = pool.done_head;
    pool.done_head = pool.done_tail = NULL;
    pthread_mutex_unlock(&pool.done_lock);

    while (w) {
        struct srv_work *next = w->next;
        w->done(w);
        w = next;
    }
}

int srv_workers_start(uv_loop_t *loop, unsigned n)
{
    int err = uv_async_init(loop, &pool.async, on_async);
    if (err)
        return err;
    pool.threads = calloc(n, sizeof *pool.threads);
    if (!pool.threads)
        return -ENOMEM;
    for (unsigned i = 0; i < n; i++) {
        err = pthread_create(&pool.threads[i], NULL, worker_main, NULL);
        if (err)
            return -err;
        pool.n++;
    }
    return 0;
}

void srv_workers_submit(struct srv_work *w)
{
    w->next = NULL;
    pthread_mutex_lock(&pool.lock);
    if (pool.tail)
        pool.tail->next = w;
    else
        pool.head = w;
    pool.tail = w;
    pthread_cond_signal(&pool.cond);
    pthread_mutex_unlock(&pool.lock);
}

void srv_workers_stop(void)
{
    pthread_mutex_lock(&pool.lock);
    pool.stop = true;
    pthread_cond_broadcast(&pool.cond);
    pthread_mutex_unlock(&pool.lock);
    for (unsigned i = 0; i < pool.n; i++)
        pthread_join(pool.threads[i], NULL);
    free(pool.threads);
    pool.threads = NULL;
    pool.n = 0;
    on_async(&pool.async);
    uv_close((uv_handle_t *)&pool.async, NULL);
}
