/* Claim: one diskserve process started with --config serves every export
 * the file names, each with its own image, size, description and
 * read-only setting: LIST names exactly those exports, a client reaches
 * each by name (at the same time as clients of the others), writes to one
 * export land only in its image, the read-only one refuses writes with
 * EPERM, and a name the file does not have is refused.  Checked over a
 * Unix socket and TCP.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "harness.h"

struct export {
    const char *name;
    const char *description;
    uint64_t size;
    bool read_only;
    char image[256];
    unsigned char *contents;
};

static struct export exports[] = {
    { "alpha", "first disk", 1 * MiB, false, "", NULL },
    { "beta", "second disk, read-only", 2 * MiB + 512, true, "", NULL },
    { "gamma", "third disk", 3 * MiB, false, "", NULL },
};
#define NR_EXPORTS (sizeof exports / sizeof exports[0])

static void write_config(const char *path)
{
    FILE *f = fopen(path, "w");

    DS_CHECK(f != NULL, "fopen %s: %m", path);
    fprintf(f, "# written by config-serves-several-exports\n");
    for (size_t i = 0; i < NR_EXPORTS; i++) {
        const struct export *e = &exports[i];
        fprintf(f, "\n[export %s]\nimage=%s\nformat=raw\n", e->name,
                e->image);
        fprintf(f, "description=%s\n", e->description);
        if (e->read_only)
            fprintf(f, "read-only=true\n");
    }
    DS_CHECK(fclose(f) == 0, "fclose: %m");
}

struct listing {
    unsigned seen[NR_EXPORTS];
    unsigned others;
};

static int list_one(void *opaque, const char *name, const char *desc)
{
    struct listing *l = opaque;

    for (size_t i = 0; i < NR_EXPORTS; i++)
        if (strcmp(name, exports[i].name) == 0) {
            l->seen[i]++;
            return 0;
        }
    l->others++;
    return 0;
}

static void check_list(const struct ds_server *s)
{
    struct nbd_handle *h = ds_handle();
    struct listing l = { { 0 }, 0 };
    int n;

    DS_NBD(nbd_set_opt_mode(h, true));
    DS_NBD(ds_connect(h, s));
    n = nbd_opt_list(h, (nbd_list_callback){ .callback = list_one,
                                             .user_data = &l });
    DS_CHECK(n == (int)NR_EXPORTS, "LIST returned %d (%s)", n,
             n < 0 ? nbd_get_error() : "exports");
    for (size_t i = 0; i < NR_EXPORTS; i++)
        DS_CHECK(l.seen[i] == 1, "LIST named %s %u times", exports[i].name,
                 l.seen[i]);
    DS_CHECK(l.others == 0, "LIST named %u exports not in the config",
             l.others);
    DS_NBD(nbd_opt_abort(h));
    nbd_close(h);
}

static struct nbd_handle *open_export(const struct ds_server *s,
                                      const struct export *e)
{
    struct nbd_handle *h = ds_handle();
    char *desc;

    DS_NBD(nbd_set_export_name(h, e->name));
    DS_NBD(nbd_set_full_info(h, true));
    DS_NBD(ds_connect(h, s));
    DS_CHECK(nbd_get_size(h) == (int64_t)e->size, "%s: size %lld", e->name,
             (long long)nbd_get_size(h));
    DS_CHECK(nbd_is_read_only(h) == e->read_only, "%s: read-only is %d",
             e->name, nbd_is_read_only(h));
    desc = nbd_get_export_description(h);
    DS_CHECK(desc && strcmp(desc, e->description) == 0,
             "%s: description %s", e->name, desc ? desc : nbd_get_error());
    free(desc);
    return h;
}

static void check_contents(struct nbd_handle *h, const struct export *e)
{
    unsigned char *buf = ds_malloc(e->size);

    DS_NBD(nbd_pread(h, buf, e->size, 0, 0));
    DS_CHECK(memcmp(buf, e->contents, e->size) == 0, "%s: export differs",
             e->name);
    ds_read_file(e->image, buf, e->size, 0);
    DS_CHECK(memcmp(buf, e->contents, e->size) == 0, "%s: image differs",
             e->name);
    free(buf);
}

static void exercise(const struct ds_server *s, unsigned round)
{
    struct nbd_handle *h[NR_EXPORTS];

    printf("%s: exports\n", ds_transport_name(s->transport));
    check_list(s);

    /* One client per export, all connected at once. */
    for (size_t i = 0; i < NR_EXPORTS; i++)
        h[i] = open_export(s, &exports[i]);

    for (size_t i = 0; i < NR_EXPORTS; i++) {
        struct export *e = &exports[i];
        unsigned char buf[8192];
        ds_fill(buf, sizeof buf, round * 10 + i);
        if (e->read_only) {
            DS_NBD(nbd_set_strict_mode(h[i], 0));
            DS_NBD_ERRNO(nbd_pwrite(h[i], buf, sizeof buf, 0, 0), EPERM);
        } else {
            DS_NBD(nbd_pwrite(h[i], buf, sizeof buf, 4096 * (i + 1), 0));
            memcpy(e->contents + 4096 * (i + 1), buf, sizeof buf);
        }
    }
    for (size_t i = 0; i < NR_EXPORTS; i++) {
        DS_NBD(nbd_flush(h[i], 0));
        check_contents(h[i], &exports[i]);
        nbd_close(h[i]);
    }

    struct nbd_handle *x = ds_handle();
    DS_NBD(nbd_set_export_name(x, "delta"));
    DS_CHECK(ds_connect(x, s) == -1, "an export not in the config was "
             "served");
    nbd_close(x);
}

int main(void)
{
    char config[256], name[64];

    ds_init("config-serves-several-exports", 120);
    for (size_t i = 0; i < NR_EXPORTS; i++) {
        struct export *e = &exports[i];
        snprintf(name, sizeof name, "%s.img", e->name);
        ds_path(e->image, sizeof e->image, name);
        ds_create_file(e->image, e->size);
        e->contents = ds_malloc(e->size);
        ds_fill(e->contents, e->size, 100 + i);
        ds_write_file(e->image, e->contents, e->size, 0);
    }
    ds_path(config, sizeof config, "exports.ini");
    write_config(config);

    for (int t = 0; t < DS_NR_TRANSPORTS; t++) {
        const char *args[] = { "--config", config, NULL };
        struct ds_server s;

        ds_server_start(&s, (enum ds_transport)t, args);
        exercise(&s, (unsigned)t + 1);
        ds_server_stop(&s);
    }
    for (size_t i = 0; i < NR_EXPORTS; i++)
        free(exports[i].contents);
    printf("PASS\n");
    return 0;
}
