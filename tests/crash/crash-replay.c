/* crash-replay: look inside a DISKSERVE_IO_LOG and materialize one crash
 * state, to reproduce what crash-check reported.
 *
 *   crash-replay LOG --dump                 every record, one line each
 *   crash-replay LOG --points               crash points and epochs
 *   crash-replay LOG --states [--seed S]    every state crash-check draws
 *                                           from (before dedup/sampling)
 *   crash-replay LOG --initial LOGGED=COPY... --state SPEC --out DIR
 *                                           write the state's files into
 *                                           DIR, named as logged
 */
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "crashlog.h"

static void usage(void)
{
    fprintf(stderr,
            "usage: crash-replay LOG --dump | --points | --states [--seed S]\n"
            "       crash-replay LOG --initial LOGGED=COPY... --state SPEC "
            "--out DIR\n");
    exit(2);
}

static void dump(const struct clog *lg)
{
    for (size_t i = 0; i < lg->nrecs; i++) {
        const struct clog_rec *r = &lg->recs[i];
        const struct io_log_rec *h = &r->h;
        printf("%6" PRIu64 " %-10s", h->seq, clog_type_name(h->type));
        switch (h->type) {
        case IO_REC_FILE:
            printf(" file %u %.*s", h->file, (int)h->payload,
                   (const char *)r->data);
            break;
        case IO_REC_WRITE:
            printf(" file %u %-14s off %" PRIu64 " len %" PRIu64, h->file,
                   clog_tag_name(h->tag), h->off, h->len);
            if (h->len >= 24 && !memcmp(r->data, "DSCRASH1", 8)) {
                uint64_t id, sec;
                memcpy(&id, r->data + 8, 8);
                memcpy(&sec, r->data + 16, 8);
                printf(" (request %" PRIu64 " sector %" PRIu64 ")", id, sec);
            }
            break;
        case IO_REC_SYNC_BEGIN:
        case IO_REC_SYNC_END:
            printf(" file %u %-14s sync %" PRIu64 " result %d", h->file,
                   clog_tag_name(h->tag), h->off, h->result);
            break;
        case IO_REC_TRUNCATE:
            printf(" file %u %-14s size %" PRIu64, h->file,
                   clog_tag_name(h->tag), h->off);
            break;
        case IO_REC_FALLOCATE:
            printf(" file %u %-14s off %" PRIu64 " len %" PRIu64
                   " mode 0x%x", h->file, clog_tag_name(h->tag), h->off, h->len,
                   h->mode);
            break;
        case IO_REC_MARK:
            printf(" cookie %" PRIu64 " %.*s", h->off, (int)h->payload,
                   (const char *)r->data);
            break;
        case IO_REC_FAULT:
            printf(" file %u %-14s refused %s off %" PRIu64 " len %" PRIu64
                   " with %s", h->file, clog_tag_name(h->tag),
                   clog_type_name(h->mode), h->off, h->len,
                   strerror(-h->result));
            break;
        }
        putchar('\n');
    }
}

static void points(const struct clog *lg)
{
    size_t nf = lg->nfiles ? lg->nfiles : 1;

    for (size_t k = 0; k < lg->npoints; k++) {
        size_t marks = 0;
        for (size_t i = 0; i < lg->point_rec[k]; i++)
            marks += lg->recs[i].h.type == IO_REC_MARK;
        printf("k=%zu before record %zu: base", k, lg->point_rec[k]);
        for (size_t f = 0; f < lg->nfiles; f++)
            printf(" file%zu<%zu", f, lg->base_end[k * nf + f]);
        printf(", epoch %zu changes, %zu marks\n", lg->epoch_len[k], marks);
    }
}

/* A file the log never names (a backing file) goes into DIR as a
 * symbolic link to its copy, under its own name. */
static int link_unchanged(const char *spec, const char *dir)
{
    const char *eq = strchr(spec, '=');
    const char *slash = memrchr(spec, '/', (size_t)(eq - spec));
    const char *name = slash ? slash + 1 : spec;
    char link[4096], *target = realpath(eq + 1, NULL);

    snprintf(link, sizeof link, "%s/%.*s", dir, (int)(eq - name), name);
    if (!target || (symlink(target, link) < 0 && errno != EEXIST)) {
        fprintf(stderr, "crash-replay: cannot link %s: %s\n", link,
                strerror(errno));
        free(target);
        return -1;
    }
    free(target);
    return 0;
}

int main(int argc, char **argv)
{
    enum { OPT_SEED = 256 };
    static const struct option opts[] = {
        { "dump", no_argument, NULL, 'd' },
        { "points", no_argument, NULL, 'p' },
        { "states", no_argument, NULL, 'S' },
        { "seed", required_argument, NULL, OPT_SEED },
        { "initial", required_argument, NULL, 'i' },
        { "state", required_argument, NULL, 's' },
        { "out", required_argument, NULL, 'o' },
        { NULL, 0, NULL, 0 },
    };
    const char *state = NULL, *out = NULL;
    char *initial[64];
    size_t ninitial = 0;
    int mode = 0, c;
    uint64_t seed = 1;
    struct clog lg;

    while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
        switch (c) {
        case 'd': case 'p': case 'S':
            mode = c;
            break;
        case OPT_SEED:
            seed = strtoull(optarg, NULL, 0);
            break;
        case 'i':
            if (ninitial == 64)
                usage();
            initial[ninitial++] = optarg;
            break;
        case 's':
            state = optarg;
            break;
        case 'o':
            out = optarg;
            break;
        default:
            usage();
        }
    }
    if (optind != argc - 1 || (!mode && (!state || !out)))
        usage();
    if (clog_load(&lg, argv[optind]) < 0)
        return 1;
    if (mode == 'd') {
        dump(&lg);
    } else if (mode == 'p') {
        points(&lg);
    } else if (mode == 'S') {
        struct cstate *v;
        size_t n;
        if (cstates_enumerate(&lg, seed, &v, &n) < 0)
            return 1;
        for (size_t i = 0; i < n; i++) {
            char *s = cstate_spec(&v[i]);
            printf("%s\n", s ? s : "?");
            free(s);
        }
        cstates_free(v, n);
    } else {
        struct cstate s;
        struct mstate base = { 0 }, st = { 0 };
        for (size_t i = 0; i < ninitial; i++) {
            int r = clog_set_initial(&lg, initial[i]);
            if (r < 0)
                return 1;
            if (r == 1 && link_unchanged(initial[i], out) < 0)
                return 1;
        }
        if (clog_check_initial(&lg) < 0 || cstate_parse(&lg, state, &s) < 0)
            return 1;
        int err = mstate_build_base(&base, &lg, s.k, SIZE_MAX);
        if (!err)
            err = cstate_materialize(&lg, &base, &s, &st);
        if (!err)
            err = mstate_write(&st, &lg, out);
        if (err) {
            fprintf(stderr, "crash-replay: %s: %s\n", state, strerror(-err));
            return 1;
        }
        cstate_free(&s);
        mstate_free(&base);
        mstate_free(&st);
    }
    clog_free(&lg);
    return 0;
}
