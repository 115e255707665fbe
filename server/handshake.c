/* The fixed newstyle handshake: the greeting and one handler per option.
 *
 * conn.c collects an option's header and data (length already capped);
 * hs_handle_option() answers it and, for GO and EXPORT_NAME, moves the
 * connection into transmission.  Every reply is small and copied out, so
 * nothing here outlives the call.  Malformed option data gets
 * NBD_REP_ERR_INVALID and the handshake goes on; only what the spec says
 * must end the session (EXPORT_NAME failures) ends it.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "server.h"
#include "tls.h"

#define CTX_BASE "base:allocation"
#define CTX_DEPTH "qemu:allocation-depth"
#define CTX_BITMAP_PREFIX "qemu:dirty-bitmap:"

void hs_send_greeting(struct conn *c)
{
    uint8_t buf[PROTO_GREETING_LEN];
    proto_encode_greeting(buf, PROTO_FLAG_FIXED_NEWSTYLE |
                               PROTO_FLAG_NO_ZEROES);
    conn_send_copy(c, buf, sizeof buf);
}

static int send_reply(struct conn *c, uint32_t type, const void *data,
                      uint32_t len)
{
    uint8_t stackbuf[512];
    uint8_t *buf = stackbuf;

    if (PROTO_OPT_REPLY_HDR_LEN + (size_t)len > sizeof stackbuf) {
        buf = malloc(PROTO_OPT_REPLY_HDR_LEN + (size_t)len);
        if (!buf)
            return -ENOMEM;
    }
    proto_encode_option_reply(buf, c->opt.option, type, len);
    if (len)
        memcpy(buf + PROTO_OPT_REPLY_HDR_LEN, data, len);
    int err = conn_send_copy(c, buf, PROTO_OPT_REPLY_HDR_LEN + (size_t)len);
    if (buf != stackbuf)
        free(buf);
    return err;
}

/* An error reply with a human-readable message. */
static int send_error(struct conn *c, uint32_t type, const char *msg)
{
    srv_debug("client %llu: option %s: %s", (unsigned long long)c->id,
              proto_opt_name(c->opt.option), msg);
    return send_reply(c, type, msg, (uint32_t)strlen(msg));
}

static int send_ack(struct conn *c)
{
    return send_reply(c, PROTO_REP_ACK, NULL, 0);
}

/* Transmission flags for this export on this connection. */
static uint16_t export_tflags(const struct conn *c, const struct export *e)
{
    const struct image *img = e->img;
    const struct img_ops *ops = img->ops;
    uint16_t f = PROTO_TFLAG_HAS_FLAGS | PROTO_TFLAG_SEND_FLUSH |
                 PROTO_TFLAG_SEND_FUA;
    bool ro = e->read_only || img->read_only || !ops->write;

    if (ro) {
        f |= PROTO_TFLAG_READ_ONLY;
    } else {
        if (ops->trim)
            f |= PROTO_TFLAG_SEND_TRIM;
        if (ops->write_zeroes) {
            f |= PROTO_TFLAG_SEND_WRITE_ZEROES;
            if (img->fast_zero)
                f |= PROTO_TFLAG_SEND_FAST_ZERO;
        }
    }
    if (ops->cache)
        f |= PROTO_TFLAG_SEND_CACHE;
    if (c->structured)
        f |= PROTO_TFLAG_SEND_DF;
    if (img->multi_conn || ro)
        f |= PROTO_TFLAG_CAN_MULTI_CONN;
    return f;
}

/* Enter transmission on export e. */
static void enter_transmission(struct conn *c, struct export *e)
{
    c->exp = e;
    c->tflags = export_tflags(c, e);
    c->has_meta = c->meta_export == e &&
                  (c->meta_base || c->meta_depth || c->n_meta_bitmaps);
    if (!c->has_meta)
        conn_clear_meta(c);
    c->state = CONN_REQ_HEADER;
    srv_debug("client %llu: serving export '%s'%s%s",
              (unsigned long long)c->id, e->name,
              c->structured ? ", structured replies" : "",
              c->extended ? ", extended headers" : "");
}

static int opt_export_name(struct conn *c)
{
    if (c->opt.length > PROTO_MAX_STRING) {
        srv_log("client %llu: export name too long, dropping",
                (unsigned long long)c->id);
        return -EPROTO;
    }
    struct export *e = srv_find_export((const char *)c->opt_data,
                                       c->opt.length);
    if (!e) {
        srv_log("client %llu: unknown export '%.*s', dropping",
                (unsigned long long)c->id, (int)(c->opt.length > 64
                ? 64 : c->opt.length), (const char *)c->opt_data);
        return -EPROTO;
    }
    if (tls_export_refusal(c, e)) {
        srv_log("client %llu: export '%s' refused by TLS policy, dropping",
                (unsigned long long)c->id, e->name);
        return -EPROTO;
    }
    enter_transmission(c, e);
    uint8_t buf[PROTO_EXPORT_NAME_REPLY_LEN];
    size_t n = proto_encode_export_name_reply(
        buf, e->img->size, c->tflags,
        (c->client_flags & PROTO_FLAG_C_NO_ZEROES) != 0);
    return conn_send_copy(c, buf, n) ? -EPIPE : 0;
}

static bool go_requested(const struct proto_go *go, uint16_t type)
{
    for (uint16_t i = 0; i < go->n_requests; i++)
        if (proto_go_request(go, i) == type)
            return true;
    return false;
}

static int opt_info_go(struct conn *c)
{
    struct proto_go go;
    uint8_t buf[2 + PROTO_MAX_STRING];

    if (proto_decode_go(c->opt_data, c->opt.length, &go) < 0)
        return send_error(c, PROTO_REP_ERR_INVALID,
                          "malformed INFO/GO option data");
    if (go.name_len > PROTO_MAX_STRING)
        return send_error(c, PROTO_REP_ERR_INVALID, "export name too long");
    struct export *e = srv_find_export((const char *)go.name, go.name_len);
    if (!e) {
        char msg[128];
        snprintf(msg, sizeof msg, "export '%.*s' not present",
                 (int)(go.name_len > 64 ? 64 : go.name_len), go.name);
        return send_error(c, PROTO_REP_ERR_UNKNOWN, msg);
    }
    uint32_t refusal = tls_export_refusal(c, e);
    if (refusal)
        return send_error(c, refusal, refusal == PROTO_REP_ERR_TLS_REQD
                          ? "export requires TLS"
                          : "client not allowed to use this export");

    uint16_t tflags = export_tflags(c, e);
    size_t n = proto_encode_info_export(buf, e->img->size, tflags);
    int err = send_reply(c, PROTO_REP_INFO, buf, (uint32_t)n);
    if (!err && go_requested(&go, PROTO_INFO_NAME)) {
        n = proto_encode_info_string(buf, PROTO_INFO_NAME, e->name,
                                     (uint32_t)strlen(e->name));
        err = send_reply(c, PROTO_REP_INFO, buf, (uint32_t)n);
    }
    if (!err && e->description && go_requested(&go, PROTO_INFO_DESCRIPTION)) {
        n = proto_encode_info_string(buf, PROTO_INFO_DESCRIPTION,
                                     e->description,
                                     (uint32_t)strlen(e->description));
        err = send_reply(c, PROTO_REP_INFO, buf, (uint32_t)n);
    }
    if (!err) {
        /* Always sent: it tells clients they may send any alignment. */
        uint32_t min = e->img->min_block ? e->img->min_block : 1;
        uint32_t pref = e->img->pref_block ? e->img->pref_block : 4096;
        if (pref < min)
            pref = min;
        n = proto_encode_info_block_size(buf, min, pref, PROTO_MAX_PAYLOAD);
        err = send_reply(c, PROTO_REP_INFO, buf, (uint32_t)n);
    }
    if (!err)
        err = send_ack(c);
    if (!err && c->opt.option == PROTO_OPT_GO) {
        enter_transmission(c, e);
        /* Only a client that asked for the constraints promised to keep
         * them; others get read-modify-write in the driver, as qemu-nbd
         * does. */
        if (go_requested(&go, PROTO_INFO_BLOCK_SIZE))
            c->check_align = e->img->min_block;
    }
    return err ? -EPIPE : 0;
}

static int opt_list(struct conn *c)
{
    uint8_t buf[4 + PROTO_MAX_STRING];

    if (c->opt.length != 0)
        return send_error(c, PROTO_REP_ERR_INVALID, "LIST takes no data");
    for (struct export *e = srv.opts.exports; e; e = e->next) {
        if (tls_export_refusal(c, e))
            continue;   /* hidden from clients that may not use it */
        size_t n = proto_encode_rep_server(buf, e->name,
                                           (uint32_t)strlen(e->name));
        if (send_reply(c, PROTO_REP_SERVER, buf, (uint32_t)n))
            return -EPIPE;
    }
    return send_ack(c) ? -EPIPE : 0;
}

/* ---- meta contexts ------------------------------------------------ */

/* Queries are matched as qemu-nbd matches them (docs/interop/nbd.rst):
 * exact names select; the empty leaves "base:", "qemu:" and
 * "qemu:dirty-bitmap:" list every context under them on LIST and select
 * nothing on SET; unknown names are skipped.  Bitmap names come from the
 * driver at negotiation time, listed on a worker thread since the driver
 * may hold its bitmap lock across disk I/O (bitmap_apply); the
 * connection reads nothing more until the answer is out. */

struct meta_sel {
    bool base, depth;
    bool *bitmaps;          /* one per name of the export's list */
};

struct meta_work {
    struct srv_work work;   /* first: worker hand-off */
    struct conn *c;
    struct export *e;
    uint8_t *data;          /* the option's data (owned) */
    uint32_t len;
    char **names;           /* the export's bitmaps, listed by the worker */
    size_t n;
    int err;
};

static int send_context(struct conn *c, uint32_t id, const char *prefix,
                        const char *name)
{
    uint8_t buf[4 + PROTO_MAX_STRING];
    char ctx[PROTO_MAX_STRING + 1];
    int len = snprintf(ctx, sizeof ctx, "%s%s", prefix, name);
    if (len < 0 || (size_t)len > PROTO_MAX_STRING)
        return 0;
    size_t n = proto_encode_meta_context(buf, id, ctx, (uint32_t)len);
    return send_reply(c, PROTO_REP_META_CONTEXT, buf, (uint32_t)n);
}

static bool query_is(const uint8_t *q, uint32_t len, const char *s)
{
    return strlen(s) == len && memcmp(q, s, len) == 0;
}

static bool query_has_prefix(const uint8_t *q, uint32_t len, const char *p)
{
    size_t plen = strlen(p);
    return len >= plen && memcmp(q, p, plen) == 0;
}

/* Match one query against the export's contexts. */
static void match_query(const struct export *e, const uint8_t *q,
                        uint32_t len, bool list, char **names, size_t n,
                        struct meta_sel *sel)
{
    size_t plen = strlen(CTX_BITMAP_PREFIX);
    bool all_bitmaps = list && (query_is(q, len, "qemu:") ||
                                query_is(q, len, CTX_BITMAP_PREFIX));

    if (query_is(q, len, CTX_BASE) || (list && query_is(q, len, "base:")))
        sel->base = true;
    if (e->img->has_depth && (query_is(q, len, CTX_DEPTH) ||
                              (list && query_is(q, len, "qemu:"))))
        sel->depth = true;
    for (size_t i = 0; i < n; i++)
        if (all_bitmaps ||
            (len > plen && memcmp(q, CTX_BITMAP_PREFIX, plen) == 0 &&
             len - plen == strlen(names[i]) &&
             memcmp(q + plen, names[i], len - plen) == 0))
            sel->bitmaps[i] = true;
}

/* Answer a LIST or SET whose data parsed as meta; names are the export's
 * bitmaps now.  A SET takes the selected names out of names. */
static int answer_meta(struct conn *c, struct export *e,
                       const struct proto_meta *meta, char **names,
                       size_t n)
{
    bool list = c->opt.option == PROTO_OPT_LIST_META_CONTEXT;
    struct meta_sel sel = { false, false, NULL };
    size_t n_sel = 0;

    sel.bitmaps = calloc(n ? n : 1, sizeof *sel.bitmaps);
    if (!sel.bitmaps)
        return -ENOMEM;
    if (meta->n_queries == 0) {
        if (list) {
            sel.base = true;
            sel.depth = e->img->has_depth;
            for (size_t i = 0; i < n; i++)
                sel.bitmaps[i] = true;
        }
    } else {
        uint32_t pos = 0;
        const uint8_t *q;
        uint32_t qlen;
        while (proto_meta_next(meta, &pos, &q, &qlen))
            match_query(e, q, qlen, list, names, n, &sel);
    }
    for (size_t i = 0; i < n; i++)
        n_sel += sel.bitmaps[i];
    if (!list && n_sel > SRV_MAX_BITMAP_CONTEXTS) {
        free(sel.bitmaps);
        char msg[96];
        snprintf(msg, sizeof msg, "%zu dirty bitmaps selected, at most %u "
                 "per connection", n_sel, SRV_MAX_BITMAP_CONTEXTS);
        return send_error(c, PROTO_REP_ERR_TOO_BIG, msg) ? -EPIPE : 0;
    }

    char **chosen = NULL;
    if (!list && n_sel) {
        chosen = calloc(n_sel, sizeof *chosen);
        if (!chosen) {
            free(sel.bitmaps);
            return -ENOMEM;
        }
    }
    int err = 0;
    size_t k = 0;
    if (sel.base)
        err = send_context(c, list ? 0 : SRV_CTX_ID_BASE, "", CTX_BASE);
    if (!err && sel.depth)
        err = send_context(c, list ? 0 : SRV_CTX_ID_DEPTH, "", CTX_DEPTH);
    for (size_t i = 0; !err && i < n; i++) {
        if (!sel.bitmaps[i])
            continue;
        err = send_context(c, list ? 0 : SRV_CTX_ID_BITMAP0 + (uint32_t)k,
                           CTX_BITMAP_PREFIX, names[i]);
        if (!list) {
            chosen[k] = names[i];
            names[i] = NULL;
        }
        k++;
    }
    free(sel.bitmaps);
    if (!err)
        err = send_ack(c);
    if (err) {
        srv_free_names(chosen, k);
        return -EPIPE;
    }
    if (!list) {
        c->meta_export = e;
        c->meta_base = sel.base;
        c->meta_depth = sel.depth;
        c->meta_bitmaps = chosen;
        c->n_meta_bitmaps = k;
    }
    return 0;
}

/* Parse and check meta option data: 1 with *meta and *e set when it is
 * to be answered, 0 when an error reply went out, -EPIPE when that
 * failed. */
static int parse_meta(struct conn *c, const uint8_t *data, uint32_t len,
                      struct proto_meta *meta, struct export **e)
{
    if (!c->structured)
        return send_error(c, PROTO_REP_ERR_INVALID,
                          "structured replies not negotiated") ? -EPIPE : 0;
    if (proto_decode_meta(data, len, meta) < 0)
        return send_error(c, PROTO_REP_ERR_INVALID,
                          "malformed meta context option data") ? -EPIPE : 0;
    if (meta->name_len > PROTO_MAX_STRING)
        return send_error(c, PROTO_REP_ERR_INVALID,
                          "export name too long") ? -EPIPE : 0;
    *e = srv_find_export((const char *)meta->name, meta->name_len);
    if (!*e)
        return send_error(c, PROTO_REP_ERR_UNKNOWN,
                          "export not present") ? -EPIPE : 0;
    uint32_t refusal = tls_export_refusal(c, *e);
    if (refusal)
        return send_error(c, refusal, "export refused by TLS policy")
               ? -EPIPE : 0;
    uint32_t pos = 0;
    const uint8_t *q;
    uint32_t qlen;
    while (proto_meta_next(meta, &pos, &q, &qlen))
        if (qlen > PROTO_MAX_STRING)
            return send_error(c, PROTO_REP_ERR_INVALID,
                              "meta context query too long") ? -EPIPE : 0;
    return 1;
}

/* Whether answering needs the export's bitmap list. */
static bool wants_bitmaps(const struct conn *c, const struct export *e,
                          const struct proto_meta *meta)
{
    bool list = c->opt.option == PROTO_OPT_LIST_META_CONTEXT;
    const struct img_ops *ops = e->img->ops;

    if (!ops->bitmap_count || !ops->bitmap_info)
        return false;
    if (meta->n_queries == 0)
        return list;
    uint32_t pos = 0;
    const uint8_t *q;
    uint32_t qlen;
    while (proto_meta_next(meta, &pos, &q, &qlen))
        if (query_has_prefix(q, qlen, "qemu:"))
            return true;
    return false;
}

/* On a worker: list the export's bitmaps. */
static void meta_work_run(struct srv_work *w)
{
    struct meta_work *mw = (struct meta_work *)w;
    mw->err = srv_export_bitmaps(mw->e, &mw->names, &mw->n);
}

/* Back on the loop thread: answer with the list, unless the client has
 * gone meanwhile. */
static void meta_work_done(struct srv_work *w)
{
    struct meta_work *mw = (struct meta_work *)w;
    struct conn *c = mw->c;

    if (c->state == CONN_OPT_WAIT) {
        struct proto_meta meta;
        int err;
        if (mw->err) {
            srv_log("%s: cannot list dirty bitmaps: %s", mw->e->image_path,
                    strerror(-mw->err));
            err = send_error(c, PROTO_REP_ERR_PLATFORM,
                             "cannot list dirty bitmaps") ? -EPIPE : 0;
        } else {
            /* Parsed and checked before the hand-off. */
            proto_decode_meta(mw->data, mw->len, &meta);
            err = answer_meta(c, mw->e, &meta, mw->names, mw->n);
        }
        if (err)
            conn_close(c);
    }
    srv_free_names(mw->names, mw->n);
    free(mw->data);
    free(mw);
    conn_option_done(c);
}

static int opt_meta(struct conn *c)
{
    struct proto_meta meta;
    struct export *e;

    if (c->opt.option == PROTO_OPT_SET_META_CONTEXT)
        conn_clear_meta(c);     /* SET replaces it, even when it fails */
    int r = parse_meta(c, c->opt_data, c->opt.length, &meta, &e);
    if (r <= 0)
        return r;
    if (!wants_bitmaps(c, e, &meta))
        return answer_meta(c, e, &meta, NULL, 0);

    struct meta_work *mw = calloc(1, sizeof *mw);
    if (!mw)
        return -ENOMEM;
    mw->work.run = meta_work_run;
    mw->work.done = meta_work_done;
    mw->c = c;
    mw->e = e;
    mw->data = c->opt_data;     /* taken over from conn.c */
    mw->len = c->opt.length;
    c->opt_data = NULL;
    c->state = CONN_OPT_WAIT;
    c->in_worker++;
    srv_workers_submit(&mw->work);
    return 0;
}

/* STARTTLS: acknowledged in the clear, then the TLS handshake.  What
 * was negotiated before it is forgotten, as the spec requires: an
 * attacker in the middle may have chosen it. */
static int opt_starttls(struct conn *c)
{
    if (c->tls)
        return send_error(c, PROTO_REP_ERR_INVALID, "TLS already started");
    if (send_ack(c))
        return -EPIPE;
    c->structured = false;
    c->extended = false;
    c->exp = NULL;
    c->check_align = 0;
    conn_clear_meta(c);
    c->has_meta = false;
    return tls_start(c) ? -EPROTO : 0;
}

int hs_handle_option(struct conn *c)
{
    uint32_t len = c->opt.length;

    srv_debug("client %llu: option %s (%u bytes)", (unsigned long long)c->id,
              proto_opt_name(c->opt.option), len);
    if (srv.opts.tls == SRV_TLS_REQUIRE && !tls_is_up(c) &&
        c->opt.option != PROTO_OPT_STARTTLS &&
        c->opt.option != PROTO_OPT_ABORT) {
        if (c->opt.option == PROTO_OPT_EXPORT_NAME) {
            srv_log("client %llu: EXPORT_NAME without TLS, dropping",
                    (unsigned long long)c->id);
            return -EPROTO;
        }
        return send_error(c, PROTO_REP_ERR_TLS_REQD, "TLS required");
    }
    switch (c->opt.option) {
    case PROTO_OPT_EXPORT_NAME:
        return opt_export_name(c);
    case PROTO_OPT_ABORT:
        send_ack(c);
        conn_close(c);
        return 0;
    case PROTO_OPT_LIST:
        return opt_list(c);
    case PROTO_OPT_STARTTLS:
        if (len != 0)
            return send_error(c, PROTO_REP_ERR_INVALID,
                              "STARTTLS takes no data");
        if (srv.opts.tls == SRV_TLS_OFF)
            return send_error(c, PROTO_REP_ERR_POLICY, "TLS not configured");
        return opt_starttls(c);
    case PROTO_OPT_INFO:
    case PROTO_OPT_GO:
        return opt_info_go(c);
    case PROTO_OPT_STRUCTURED_REPLY:
        if (len != 0)
            return send_error(c, PROTO_REP_ERR_INVALID,
                              "STRUCTURED_REPLY takes no data");
        if (c->structured)
            return send_error(c, PROTO_REP_ERR_INVALID,
                              "structured replies already negotiated");
        c->structured = true;
        return send_ack(c) ? -EPIPE : 0;
    case PROTO_OPT_EXTENDED_HEADERS:
        if (len != 0)
            return send_error(c, PROTO_REP_ERR_INVALID,
                              "EXTENDED_HEADERS takes no data");
        if (c->extended)
            return send_error(c, PROTO_REP_ERR_INVALID,
                              "extended headers already negotiated");
        c->extended = true;
        c->structured = true;
        return send_ack(c) ? -EPIPE : 0;
    case PROTO_OPT_LIST_META_CONTEXT:
    case PROTO_OPT_SET_META_CONTEXT:
        return opt_meta(c);
    default:
        return send_error(c, PROTO_REP_ERR_UNSUP, "option not supported");
    }
}
