/* Claim: a client can reach transmission by every handshake path the
 * server offers, on a Unix socket and on TCP: NBD_OPT_GO (with and
 * without a block size request, with and without structured replies),
 * NBD_OPT_INFO then GO, NBD_OPT_EXPORT_NAME (with and without the 124
 * zero bytes), NBD_OPT_LIST, NBD_OPT_ABORT and the meta context options;
 * a wrong export name is refused by every path, and an option refused
 * with an error leaves the client free to try again.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "harness.h"

#define EXPORT "main"
#define DESCRIPTION "integration disk"
#define SIZE (4 * MiB)

static char image[256];
static unsigned char first_block[4096];

/* Read the first block through h and compare with what the file holds. */
static void check_first_block(struct nbd_handle *h, const char *how)
{
    unsigned char buf[4096];

    DS_NBD(nbd_pread(h, buf, sizeof buf, 0, 0));
    DS_CHECK(memcmp(buf, first_block, sizeof buf) == 0,
             "%s: first block differs from the file", how);
}

static void check_go(const struct ds_server *s)
{
    struct nbd_handle *h = ds_handle();
    const char *proto;
    char *name, *desc;

    DS_NBD(nbd_set_export_name(h, EXPORT));
    DS_NBD(nbd_set_full_info(h, true));
    DS_NBD(ds_connect(h, s));

    proto = nbd_get_protocol(h);
    DS_CHECK(proto && strcmp(proto, "newstyle-fixed") == 0,
             "GO: protocol %s", proto ? proto : "(null)");
    DS_CHECK(nbd_get_structured_replies_negotiated(h) == 1,
             "GO: structured replies not negotiated");
    DS_CHECK(nbd_get_size(h) == (int64_t)SIZE, "GO: size %lld",
             (long long)nbd_get_size(h));
    DS_CHECK(nbd_is_read_only(h) == 0, "GO: read-write export is read-only");
    DS_CHECK(nbd_can_flush(h) == 1, "GO: no flush");
    DS_CHECK(nbd_can_fua(h) == 1, "GO: no FUA");
    DS_CHECK(nbd_can_trim(h) == 1, "GO: no trim");
    DS_CHECK(nbd_can_zero(h) == 1, "GO: no write zeroes");
    DS_CHECK(nbd_can_fast_zero(h) == 1, "GO: no fast zero");
    DS_CHECK(nbd_can_df(h) == 1, "GO: no DF");
    DS_CHECK(nbd_can_cache(h) == 1, "GO: no cache");
    DS_CHECK(nbd_can_multi_conn(h) == 1, "GO: raw without multi-conn");

    DS_CHECK(nbd_get_block_size(h, LIBNBD_SIZE_MINIMUM) == 1,
             "GO: minimum block %lld",
             (long long)nbd_get_block_size(h, LIBNBD_SIZE_MINIMUM));
    DS_CHECK(nbd_get_block_size(h, LIBNBD_SIZE_PREFERRED) == 4096,
             "GO: preferred block %lld",
             (long long)nbd_get_block_size(h, LIBNBD_SIZE_PREFERRED));
    DS_CHECK(nbd_get_block_size(h, LIBNBD_SIZE_MAXIMUM) == (int64_t)(32 * MiB),
             "GO: maximum block %lld",
             (long long)nbd_get_block_size(h, LIBNBD_SIZE_MAXIMUM));

    name = nbd_get_canonical_export_name(h);
    DS_CHECK(name && strcmp(name, EXPORT) == 0, "GO: canonical name %s",
             name ? name : nbd_get_error());
    free(name);
    desc = nbd_get_export_description(h);
    DS_CHECK(desc && strcmp(desc, DESCRIPTION) == 0, "GO: description %s",
             desc ? desc : nbd_get_error());
    free(desc);

    check_first_block(h, "GO");
    DS_NBD(nbd_shutdown(h, 0));
    nbd_close(h);
}

/* GO without NBD_INFO_BLOCK_SIZE: the server has default constraints, so
 * it must not insist on the request. */
static void check_go_without_block_size(const struct ds_server *s)
{
    struct nbd_handle *h = ds_handle();

    DS_NBD(nbd_set_export_name(h, EXPORT));
    DS_NBD(nbd_set_request_block_size(h, false));
    DS_NBD(ds_connect(h, s));
    check_first_block(h, "GO without block size");
    nbd_close(h);
}

static void check_go_simple_replies(const struct ds_server *s)
{
    struct nbd_handle *h = ds_handle();

    DS_NBD(nbd_set_export_name(h, EXPORT));
    DS_NBD(nbd_set_request_structured_replies(h, false));
    DS_NBD(ds_connect(h, s));
    DS_CHECK(nbd_get_structured_replies_negotiated(h) == 0,
             "structured replies negotiated without being asked for");
    DS_CHECK(nbd_get_size(h) == (int64_t)SIZE, "simple: size");
    check_first_block(h, "GO with simple replies");
    nbd_close(h);
}

static void check_go_wrong_name(const struct ds_server *s)
{
    struct nbd_handle *h = ds_handle();

    DS_NBD(nbd_set_export_name(h, "no-such-export"));
    DS_CHECK(ds_connect(h, s) == -1, "GO to a wrong name succeeded");
    nbd_close(h);

    /* In option mode the refusal is an error reply, not a hang-up: the
     * same connection can go on to the right name. */
    h = ds_handle();
    DS_NBD(nbd_set_opt_mode(h, true));
    DS_NBD(ds_connect(h, s));
    DS_NBD(nbd_set_export_name(h, "no-such-export"));
    DS_CHECK(nbd_opt_go(h) == -1, "opt_go to a wrong name succeeded");
    DS_CHECK(nbd_aio_is_negotiating(h) == 1,
             "wrong name in GO ended the negotiation");
    DS_NBD(nbd_set_export_name(h, EXPORT));
    DS_NBD(nbd_opt_go(h));
    check_first_block(h, "GO after a refused GO");
    nbd_close(h);
}

static void check_info(const struct ds_server *s)
{
    struct nbd_handle *h = ds_handle();
    char *desc;

    DS_NBD(nbd_set_opt_mode(h, true));
    DS_NBD(nbd_set_full_info(h, true));
    DS_NBD(ds_connect(h, s));
    DS_CHECK(nbd_aio_is_negotiating(h) == 1, "opt mode: not negotiating");

    DS_NBD(nbd_set_export_name(h, EXPORT));
    DS_NBD(nbd_opt_info(h));
    DS_CHECK(nbd_get_size(h) == (int64_t)SIZE, "INFO: size %lld",
             (long long)nbd_get_size(h));
    DS_CHECK(nbd_get_block_size(h, LIBNBD_SIZE_MAXIMUM) == (int64_t)(32 * MiB),
             "INFO: maximum block size");
    desc = nbd_get_export_description(h);
    DS_CHECK(desc && strcmp(desc, DESCRIPTION) == 0, "INFO: description %s",
             desc ? desc : nbd_get_error());
    free(desc);
    DS_CHECK(nbd_aio_is_negotiating(h) == 1, "INFO ended the negotiation");

    DS_NBD(nbd_set_export_name(h, "no-such-export"));
    DS_CHECK(nbd_opt_info(h) == -1, "INFO on a wrong name succeeded");
    DS_CHECK(nbd_aio_is_negotiating(h) == 1,
             "wrong name in INFO ended the negotiation");

    DS_NBD(nbd_set_export_name(h, EXPORT));
    DS_NBD(nbd_opt_go(h));
    DS_CHECK(nbd_aio_is_ready(h) == 1, "GO after INFO: not ready");
    check_first_block(h, "GO after INFO");
    nbd_close(h);
}

/* Without NBD_FLAG_C_FIXED_NEWSTYLE libnbd ends the handshake with
 * NBD_OPT_EXPORT_NAME; without NBD_FLAG_C_NO_ZEROES the server must send
 * the 124 zero bytes after the export flags, and with it must not. */
static void check_export_name(const struct ds_server *s, uint32_t flags)
{
    struct nbd_handle *h = ds_handle();
    const char *proto;

    DS_NBD(nbd_set_export_name(h, EXPORT));
    DS_NBD(nbd_set_handshake_flags(h, flags));
    DS_NBD(ds_connect(h, s));
    proto = nbd_get_protocol(h);
    DS_CHECK(proto && strcmp(proto, "newstyle") == 0,
             "EXPORT_NAME (flags %u): protocol %s", flags,
             proto ? proto : "(null)");
    DS_CHECK(nbd_get_structured_replies_negotiated(h) == 0,
             "EXPORT_NAME: structured replies without the option");
    DS_CHECK(nbd_get_size(h) == (int64_t)SIZE, "EXPORT_NAME: size");
    DS_CHECK(nbd_can_flush(h) == 1, "EXPORT_NAME: transmission flags lost");
    check_first_block(h, flags ? "EXPORT_NAME, no zeroes"
                               : "EXPORT_NAME with zeroes");
    /* A second request proves the stream stayed in step. */
    check_first_block(h, "EXPORT_NAME, second read");
    nbd_close(h);

    h = ds_handle();
    DS_NBD(nbd_set_export_name(h, "no-such-export"));
    DS_NBD(nbd_set_handshake_flags(h, flags));
    DS_CHECK(ds_connect(h, s) == -1, "EXPORT_NAME to a wrong name succeeded");
    nbd_close(h);
}

struct listing {
    unsigned n;
    char names[8][64];
};

static int collect_export(void *opaque, const char *name, const char *desc)
{
    struct listing *l = opaque;

    if (l->n < 8)
        snprintf(l->names[l->n], sizeof l->names[0], "%s", name);
    l->n++;
    return 0;
}

static void check_list(const struct ds_server *s)
{
    struct nbd_handle *h = ds_handle();
    struct listing l = { 0 };
    int n;

    DS_NBD(nbd_set_opt_mode(h, true));
    DS_NBD(ds_connect(h, s));
    n = nbd_opt_list(h, (nbd_list_callback){ .callback = collect_export,
                                             .user_data = &l });
    DS_CHECK(n == 1, "LIST: opt_list returned %d (%s)", n,
             n < 0 ? nbd_get_error() : "count");
    DS_CHECK(l.n == 1 && strcmp(l.names[0], EXPORT) == 0,
             "LIST: %u exports, first \"%s\"", l.n, l.n ? l.names[0] : "");
    DS_CHECK(nbd_aio_is_negotiating(h) == 1, "LIST ended the negotiation");

    /* LIST does not end option haggling. */
    DS_NBD(nbd_set_export_name(h, EXPORT));
    DS_NBD(nbd_opt_go(h));
    check_first_block(h, "GO after LIST");
    nbd_close(h);
}

static void check_abort(struct ds_server *s)
{
    struct nbd_handle *h = ds_handle();

    DS_NBD(nbd_set_opt_mode(h, true));
    DS_NBD(ds_connect(h, s));
    DS_NBD(nbd_opt_abort(h));
    DS_CHECK(nbd_aio_is_closed(h) == 1, "ABORT: connection not closed");
    nbd_close(h);
    DS_CHECK(ds_server_is_alive(s), "server exited after a client's ABORT");

    h = ds_open(s, EXPORT);
    check_first_block(h, "connection after ABORT");
    nbd_close(h);
}

struct contexts {
    bool base, depth;
    unsigned n;
};

static int collect_context(void *opaque, const char *name)
{
    struct contexts *c = opaque;

    c->base |= strcmp(name, "base:allocation") == 0;
    c->depth |= strcmp(name, "qemu:allocation-depth") == 0;
    c->n++;
    return 0;
}

static void check_meta_contexts(const struct ds_server *s)
{
    struct nbd_handle *h = ds_handle();
    struct contexts c = { 0 };
    int n;

    DS_NBD(nbd_set_opt_mode(h, true));
    DS_NBD(nbd_set_export_name(h, EXPORT));
    DS_NBD(ds_connect(h, s));

    /* No query: the server lists every context it has. */
    n = nbd_opt_list_meta_context(h, (nbd_context_callback){
        .callback = collect_context, .user_data = &c });
    DS_CHECK(n >= 2, "LIST_META_CONTEXT: %d (%s)", n,
             n < 0 ? nbd_get_error() : "contexts");
    DS_CHECK(c.base && c.depth,
             "LIST_META_CONTEXT lacks base:allocation (%d) or "
             "qemu:allocation-depth (%d)", c.base, c.depth);

    /* A query for one namespace member and one unknown name. */
    memset(&c, 0, sizeof c);
    DS_NBD(nbd_add_meta_context(h, "base:allocation"));
    DS_NBD(nbd_add_meta_context(h, "nosuch:context"));
    n = nbd_opt_list_meta_context(h, (nbd_context_callback){
        .callback = collect_context, .user_data = &c });
    DS_CHECK(n == 1 && c.base && !c.depth,
             "LIST_META_CONTEXT for base:allocation + unknown: %d replies",
             n);

    DS_NBD(nbd_add_meta_context(h, "qemu:allocation-depth"));
    DS_NBD(nbd_opt_go(h));
    DS_CHECK(nbd_can_meta_context(h, "base:allocation") == 1,
             "base:allocation not negotiated");
    DS_CHECK(nbd_can_meta_context(h, "qemu:allocation-depth") == 1,
             "qemu:allocation-depth not negotiated");
    DS_CHECK(nbd_can_meta_context(h, "nosuch:context") == 0,
             "an unknown context was negotiated");
    check_first_block(h, "GO with meta contexts");
    nbd_close(h);
}

int main(void)
{
    ds_init("handshake-negotiates-every-variant", 180);
    ds_path(image, sizeof image, "disk.img");
    ds_create_file(image, SIZE);
    ds_fill(first_block, sizeof first_block, 1);
    ds_write_file(image, first_block, sizeof first_block, 0);

    for (int t = 0; t < DS_NR_TRANSPORTS; t++) {
        const char *args[] = { "-f", "raw", "-x", EXPORT,
                               "-D", DESCRIPTION, image, NULL };
        struct ds_server s;

        ds_server_start(&s, (enum ds_transport)t, args);
        printf("%s: GO\n", ds_transport_name(s.transport));
        check_go(&s);
        check_go_without_block_size(&s);
        check_go_simple_replies(&s);
        check_go_wrong_name(&s);
        printf("%s: INFO\n", ds_transport_name(s.transport));
        check_info(&s);
        printf("%s: EXPORT_NAME\n", ds_transport_name(s.transport));
        check_export_name(&s, 0);
        check_export_name(&s, LIBNBD_HANDSHAKE_FLAG_NO_ZEROES);
        printf("%s: LIST, ABORT, meta contexts\n",
               ds_transport_name(s.transport));
        check_list(&s);
        check_abort(&s);
        check_meta_contexts(&s);
        ds_server_stop(&s);
    }
    printf("PASS\n");
    return 0;
}
