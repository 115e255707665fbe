/* Claim: the qcow2 table cache (formats/qcow2/cache.c) hands every
 * thread the right table, never evicts or rewrites a table between get
 * and put while other threads force evictions, answers get_nowait from
 * memory only, and survives a failed load without caching it.
 *
 * The file holds 256 one-cluster tables (512 bytes) whose every 64-bit
 * word is the table's number; 8 threads each pin two random tables at a
 * time through a 16-slot cache, check both after the second load, and
 * check the first again before putting it.  Seeded: SEED=N to replay.
 */
#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "io.h"
#include "qcow2/qcow2.h"

#define TABLE       512u
#define N_TABLES    256u
#define THREADS     8
#define ROUNDS      20000

static struct qcow2_cache *cache;
static uint64_t seed;
static volatile int failed;

/* The cache logs through img_log; this test links only cache.c and
 * io.c, so it brings its own. */
void img_log(const char *fmt, ...)
{
    va_list ap;

    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
}

static uint64_t next_rand(uint64_t *st)
{
    *st ^= *st >> 12;
    *st ^= *st << 25;
    *st ^= *st >> 27;
    return *st * 0x2545f4914f6cdd1dull;
}

/* Whether every word of table t says n. */
static bool holds(const struct qcow2_table *t, uint64_t n)
{
    for (unsigned i = 0; i < TABLE / 8; i++) {
        uint64_t w;
        memcpy(&w, t->data + i * 8, 8);
        if (w != n)
            return false;
    }
    return true;
}

static void *worker(void *arg)
{
    uint64_t st = seed + (uintptr_t)arg * 104729 + 1;

    for (int r = 0; r < ROUNDS && !failed; r++) {
        uint64_t a = next_rand(&st) % N_TABLES;
        uint64_t b = next_rand(&st) % N_TABLES;
        struct qcow2_table *ta = NULL, *tb = NULL;

        if (qcow2_cache_get(cache, a * TABLE, &ta) != 0 || !holds(ta, a)) {
            fprintf(stderr, "FAIL: table %" PRIu64 " wrong on get\n", a);
            failed = 1;
            break;
        }
        if (qcow2_cache_get(cache, b * TABLE, &tb) != 0 || !holds(tb, b)) {
            fprintf(stderr, "FAIL: table %" PRIu64 " wrong on get\n", b);
            failed = 1;
        }
        qcow2_cache_put(cache, &tb);
        if (tb != NULL) {
            fprintf(stderr, "FAIL: put did not clear the pointer\n");
            failed = 1;
        }
        if (!holds(ta, a)) {
            fprintf(stderr, "FAIL: pinned table %" PRIu64 " changed\n", a);
            failed = 1;
        }
        qcow2_cache_put(cache, &ta);

        struct qcow2_table *tn = NULL;
        int err = qcow2_cache_get_nowait(cache, b * TABLE, &tn);
        if (err == 0) {
            if (!holds(tn, b)) {
                fprintf(stderr, "FAIL: nowait table %" PRIu64 " wrong\n",
                        b);
                failed = 1;
            }
            qcow2_cache_put(cache, &tn);
        } else if (err != -EAGAIN) {
            fprintf(stderr, "FAIL: get_nowait: %s\n", strerror(-err));
            failed = 1;
        }
    }
    return NULL;
}

int main(void)
{
    char path[] = "/tmp/qcow2-cache-test.XXXXXX";
    const char *env = getenv("SEED");

    seed = env ? strtoull(env, NULL, 0) : (uint64_t)getpid();
    printf("seed %" PRIu64 "\n", seed);
    int fd = mkstemp(path);
    if (fd < 0) {
        perror("mkstemp");
        return 2;
    }
    unlink(path);
    for (uint64_t n = 0; n < N_TABLES; n++) {
        uint64_t words[TABLE / 8];
        for (unsigned i = 0; i < TABLE / 8; i++)
            words[i] = n;
        if (io_pwrite_full(fd, words, TABLE, n * TABLE) != 0) {
            perror("write");
            return 2;
        }
    }

    cache = qcow2_cache_create("test", fd, TABLE, 1);
    if (!cache || qcow2_cache_capacity(cache) != 16) {
        fprintf(stderr, "FAIL: cache of 1 byte should have 16 slots\n");
        return 1;
    }

    /* A table past the end of the file fails and is not cached. */
    struct qcow2_table *t = NULL;
    if (qcow2_cache_get(cache, N_TABLES * TABLE, &t) != -EIO || t) {
        fprintf(stderr, "FAIL: load past end of file did not fail\n");
        return 1;
    }
    if (qcow2_cache_get_nowait(cache, N_TABLES * TABLE, &t) != -EAGAIN) {
        fprintf(stderr, "FAIL: a failed load was cached\n");
        return 1;
    }
    /* Nothing loaded yet: nowait must not do I/O. */
    if (qcow2_cache_get_nowait(cache, 0, &t) != -EAGAIN) {
        fprintf(stderr, "FAIL: get_nowait loaded a table\n");
        return 1;
    }

    pthread_t tid[THREADS];
    for (uintptr_t i = 0; i < THREADS; i++)
        pthread_create(&tid[i], NULL, worker, (void *)i);
    for (int i = 0; i < THREADS; i++)
        pthread_join(tid[i], NULL);

    uint64_t hits, misses;
    qcow2_cache_stats(cache, &hits, &misses);
    printf("%" PRIu64 " hits, %" PRIu64 " misses\n", hits, misses);
    if (!failed && misses < N_TABLES) {
        fprintf(stderr, "FAIL: only %" PRIu64 " misses: no evictions?\n",
                misses);
        failed = 1;
    }
    qcow2_cache_destroy(cache);
    close(fd);
    if (failed)
        return 1;
    printf("ok\n");
    return 0;
}
