/* The QMP commands of the control socket: QEMU's dirty bitmap commands
 * with QEMU's argument names, an export's name standing for the node.
 *
 *   block-dirty-bitmap-add     node, name, granularity?, persistent?,
 *                              disabled?
 *   block-dirty-bitmap-remove / -clear / -enable / -disable   node, name
 *   block-dirty-bitmap-merge   node, target, bitmaps (names, or
 *                              {node, name} objects on the same node)
 *   transaction                actions [{type, data}] of the above, all
 *                              on one node (refused otherwise), applied
 *                              all or nothing by one bitmap_apply call
 *   query-named-block-nodes, query-block-exports, query-version,
 *   query-commands, quit
 *
 * Arguments are checked here, on the loop thread, with QEMU's messages;
 * everything that calls the driver (bitmap_apply, bitmap_info) runs on a
 * worker, since the driver may block on disk I/O and its locks.  Worker
 * functions read the request's JSON (kept alive by the command) and write
 * only the command's own state.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "control.h"

#define MAX_GRANULARITY (1ull << 31)

/* ---- arguments ---------------------------------------------------- */

struct arg_spec {
    const char *name;
    enum json_type type;
    bool required;
};

static const char *type_name(enum json_type t)
{
    switch (t) {
    case json_type_int:
        return "integer";
    case json_type_boolean:
        return "boolean";
    case json_type_string:
        return "string";
    case json_type_array:
        return "array";
    case json_type_object:
        return "object";
    default:
        return "value";
    }
}

/* Names are C strings inside: a "\u0000" would cut them short. */
static bool has_nul(json_object *str)
{
    const char *p = json_object_get_string(str);
    return strlen(p) != (size_t)json_object_get_string_len(str);
}

/* Check args (NULL: none given) against spec, QEMU's way: unexpected,
 * missing and mistyped parameters are errors.  prefix names the object
 * inside a transaction ("actions[2].data."). */
static bool check_args(struct ctl_cmd *cmd, json_object *args,
                       const struct arg_spec *spec, const char *prefix)
{
    if (args) {
        json_object_object_foreach(args, key, val) {
            (void)val;
            const struct arg_spec *a = spec;
            while (a->name && strcmp(a->name, key))
                a++;
            if (!a->name) {
                ctl_cmd_error(cmd, NULL, "Parameter '%s%.64s' is unexpected",
                              prefix, key);
                return false;
            }
        }
    }
    for (const struct arg_spec *a = spec; a->name; a++) {
        json_object *v = NULL;
        if (!args || !json_object_object_get_ex(args, a->name, &v)) {
            if (a->required) {
                ctl_cmd_error(cmd, NULL, "Parameter '%s%s' is missing",
                              prefix, a->name);
                return false;
            }
            continue;
        }
        if (!json_object_is_type(v, a->type)) {
            ctl_cmd_error(cmd, NULL, "Invalid parameter type for '%s%s', "
                          "expected: %s", prefix, a->name,
                          type_name(a->type));
            return false;
        }
        if (a->type == json_type_string && has_nul(v)) {
            ctl_cmd_error(cmd, NULL, "Parameter '%s%s' contains a NUL "
                          "character", prefix, a->name);
            return false;
        }
    }
    return true;
}

static const char *arg_str(json_object *args, const char *name)
{
    json_object *v;
    if (!args || !json_object_object_get_ex(args, name, &v))
        return NULL;
    return json_object_get_string(v);
}

static bool arg_bool(json_object *args, const char *name)
{
    json_object *v;
    if (!args || !json_object_object_get_ex(args, name, &v))
        return false;
    return json_object_get_boolean(v);
}

/* The export a node name stands for, or NULL with the error set. */
static struct export *find_node(struct ctl_cmd *cmd, const char *node)
{
    struct export *e = srv_find_export(node, strlen(node));
    if (!e) {
        ctl_cmd_error(cmd, NULL, "Cannot find device='%.64s' nor "
                      "node-name='%.64s'", node, node);
        return NULL;
    }
    if (!e->img->ops->bitmap_apply) {
        ctl_cmd_error(cmd, NULL, "Node '%.64s' (%s) does not support dirty "
                      "bitmaps", node, e->img->ops->name);
        return NULL;
    }
    return e;
}

static bool check_bitmap_name(struct ctl_cmd *cmd, const char *name)
{
    if (!*name) {
        ctl_cmd_error(cmd, NULL, "Bitmap name cannot be empty");
        return false;
    }
    if (strlen(name) > IMG_BITMAP_NAME_MAX) {
        ctl_cmd_error(cmd, NULL, "Bitmap name is longer than %u bytes",
                      IMG_BITMAP_NAME_MAX);
        return false;
    }
    return true;
}

/* ---- bitmap actions ----------------------------------------------- */

struct apply_job {
    struct export *exp;
    struct img_bitmap_action *acts;
    size_t n;
    const char **sources;       /* every merge's sources, in order */
    size_t n_sources;
    int err;
    char msg[512];
};

static void free_apply_job(void *p)
{
    struct apply_job *j = p;
    if (!j)
        return;
    free(j->acts);
    free(j->sources);
    free(j);
}

static const struct {
    const char *cmd;
    enum img_bitmap_op op;
} bitmap_cmds[] = {
    { "block-dirty-bitmap-add", IMG_BITMAP_ADD },
    { "block-dirty-bitmap-remove", IMG_BITMAP_REMOVE },
    { "block-dirty-bitmap-clear", IMG_BITMAP_CLEAR },
    { "block-dirty-bitmap-enable", IMG_BITMAP_ENABLE },
    { "block-dirty-bitmap-disable", IMG_BITMAP_DISABLE },
    { "block-dirty-bitmap-merge", IMG_BITMAP_MERGE },
};

static bool find_bitmap_cmd(const char *name, enum img_bitmap_op *op)
{
    for (size_t i = 0; i < sizeof bitmap_cmds / sizeof bitmap_cmds[0]; i++)
        if (!strcmp(bitmap_cmds[i].cmd, name)) {
            *op = bitmap_cmds[i].op;
            return true;
        }
    return false;
}

static const struct arg_spec add_args[] = {
    { "node", json_type_string, true },
    { "name", json_type_string, true },
    { "granularity", json_type_int, false },
    { "persistent", json_type_boolean, false },
    { "disabled", json_type_boolean, false },
    { NULL, json_type_null, false },
};

static const struct arg_spec name_args[] = {
    { "node", json_type_string, true },
    { "name", json_type_string, true },
    { NULL, json_type_null, false },
};

static const struct arg_spec merge_args[] = {
    { "node", json_type_string, true },
    { "target", json_type_string, true },
    { "bitmaps", json_type_array, true },
    { NULL, json_type_null, false },
};

static const struct arg_spec merge_source_args[] = {
    { "node", json_type_string, true },
    { "name", json_type_string, true },
    { NULL, json_type_null, false },
};

/* Turn one command's arguments into an action on job->acts[job->n];
 * merge sources go to job->sources (sized by the caller).  *node gets
 * the node it acts on.  False with the error set. */
static bool parse_action(struct ctl_cmd *cmd, struct apply_job *job,
                         enum img_bitmap_op op, json_object *args,
                         const char *prefix, const char **node)
{
    struct img_bitmap_action *a = &job->acts[job->n];
    const struct arg_spec *spec = op == IMG_BITMAP_ADD ? add_args
                                  : op == IMG_BITMAP_MERGE ? merge_args
                                  : name_args;
    if (!check_args(cmd, args, spec, prefix))
        return false;
    *node = arg_str(args, "node");
    memset(a, 0, sizeof *a);
    a->op = op;
    a->name = arg_str(args, op == IMG_BITMAP_MERGE ? "target" : "name");
    if (!check_bitmap_name(cmd, a->name))
        return false;
    if (op == IMG_BITMAP_ADD) {
        json_object *g;
        if (json_object_object_get_ex(args, "granularity", &g)) {
            int64_t v = json_object_get_int64(g);
            if (v > (int64_t)UINT32_MAX) {
                ctl_cmd_error(cmd, NULL, "Parameter '%sgranularity' expects "
                              "uint32_t", prefix);
                return false;
            }
            if (v < 512 || (v & (v - 1))) {
                ctl_cmd_error(cmd, NULL, "Granularity must be power of 2, "
                              "and at least 512");
                return false;
            }
            a->granularity = (uint64_t)v;
        }
        a->persistent = arg_bool(args, "persistent");
        a->disabled = arg_bool(args, "disabled");
    }
    if (op == IMG_BITMAP_MERGE) {
        json_object *list;
        json_object_object_get_ex(args, "bitmaps", &list);
        size_t n = json_object_array_length(list);
        a->sources = job->sources + job->n_sources;
        for (size_t i = 0; i < n; i++) {
            json_object *src = json_object_array_get_idx(list, i);
            char where[128];
            const char *name;
            snprintf(where, sizeof where, "%sbitmaps[%zu].", prefix, i);
            if (json_object_is_type(src, json_type_string)) {
                if (has_nul(src)) {
                    ctl_cmd_error(cmd, NULL, "Parameter '%sbitmaps[%zu]' "
                                  "contains a NUL character", prefix, i);
                    return false;
                }
                name = json_object_get_string(src);
            } else if (json_object_is_type(src, json_type_object)) {
                if (!check_args(cmd, src, merge_source_args, where))
                    return false;
                if (strcmp(arg_str(src, "node"), *node)) {
                    ctl_cmd_error(cmd, NULL, "Merging a bitmap of node "
                                  "'%.64s' into node '%.64s' is not "
                                  "supported", arg_str(src, "node"), *node);
                    return false;
                }
                name = arg_str(src, "name");
            } else {
                ctl_cmd_error(cmd, NULL, "Invalid parameter type for "
                              "'%sbitmaps[%zu]', expected: string or "
                              "object", prefix, i);
                return false;
            }
            if (!check_bitmap_name(cmd, name))
                return false;
            job->sources[job->n_sources++] = name;
        }
        a->n_sources = n;
    }
    job->n++;
    return true;
}

/* Merge sources a command or transaction carries, to size the job. */
static size_t count_sources(json_object *args)
{
    json_object *list;
    if (args && json_object_object_get_ex(args, "bitmaps", &list) &&
        json_object_is_type(list, json_type_array))
        return json_object_array_length(list);
    return 0;
}

static struct apply_job *new_job(size_t n_acts, size_t n_sources)
{
    struct apply_job *j = calloc(1, sizeof *j);
    if (!j)
        return NULL;
    j->acts = calloc(n_acts ? n_acts : 1, sizeof *j->acts);
    j->sources = calloc(n_sources ? n_sources : 1, sizeof *j->sources);
    if (!j->acts || !j->sources) {
        free_apply_job(j);
        return NULL;
    }
    return j;
}

static void apply_run(struct srv_work *w)
{
    struct ctl_cmd *cmd = (struct ctl_cmd *)w;
    struct apply_job *j = cmd->priv;
    struct image *img = j->exp->img;

    j->msg[0] = '\0';
    j->err = img->ops->bitmap_apply(img, j->acts, j->n, j->msg,
                                    sizeof j->msg);
}

static void apply_done(struct srv_work *w)
{
    struct ctl_cmd *cmd = (struct ctl_cmd *)w;
    struct apply_job *j = cmd->priv;

    j->exp->applying--;
    if (j->err)
        ctl_cmd_error(cmd, NULL, "%s", j->msg[0] ? j->msg
                                                 : strerror(-j->err));
    else
        srv_log("control: %s on '%s' applied (%zu action%s)", cmd->name,
                j->exp->name, j->n, j->n == 1 ? "" : "s");
    ctl_cmd_finish(cmd);
}

static void submit_job(struct ctl_cmd *cmd, struct apply_job *job,
                       struct export *e)
{
    job->exp = e;
    cmd->priv = job;
    cmd->free_priv = free_apply_job;
    cmd->work.run = apply_run;
    cmd->work.done = apply_done;
    e->applying++;      /* before any worker can take the bitmap lock */
    srv_workers_submit(&cmd->work);
}

static void cmd_bitmap(struct ctl_cmd *cmd, enum img_bitmap_op op)
{
    const char *node;
    struct apply_job *job = new_job(1, count_sources(cmd->args));

    if (!job) {
        ctl_cmd_error(cmd, NULL, "Out of memory");
        ctl_cmd_finish(cmd);
        return;
    }
    struct export *e;
    if (!parse_action(cmd, job, op, cmd->args, "", &node) ||
        !(e = find_node(cmd, node))) {
        free_apply_job(job);
        ctl_cmd_finish(cmd);
        return;
    }
    submit_job(cmd, job, e);
}

static const struct arg_spec transaction_args[] = {
    { "actions", json_type_array, true },
    { "properties", json_type_object, false },
    { NULL, json_type_null, false },
};

static const struct arg_spec action_args[] = {
    { "type", json_type_string, true },
    { "data", json_type_object, true },
    { NULL, json_type_null, false },
};

static bool parse_transaction(struct ctl_cmd *cmd, struct apply_job **jobp,
                              struct export **ep)
{
    json_object *list;

    if (!check_args(cmd, cmd->args, transaction_args, ""))
        return false;
    json_object_object_get_ex(cmd->args, "actions", &list);
    size_t n = json_object_array_length(list), n_sources = 0;
    for (size_t i = 0; i < n; i++) {
        json_object *act = json_object_array_get_idx(list, i), *data;
        if (json_object_is_type(act, json_type_object) &&
            json_object_object_get_ex(act, "data", &data))
            n_sources += count_sources(data);
    }
    struct apply_job *job = new_job(n, n_sources);
    if (!job) {
        ctl_cmd_error(cmd, NULL, "Out of memory");
        return false;
    }
    *jobp = job;
    const char *first_node = NULL;
    for (size_t i = 0; i < n; i++) {
        json_object *act = json_object_array_get_idx(list, i), *data;
        char where[64];
        const char *node;
        enum img_bitmap_op op;

        snprintf(where, sizeof where, "actions[%zu].", i);
        if (!json_object_is_type(act, json_type_object)) {
            ctl_cmd_error(cmd, NULL, "Invalid parameter type for "
                          "'actions[%zu]', expected: object", i);
            return false;
        }
        if (!check_args(cmd, act, action_args, where))
            return false;
        const char *type = arg_str(act, "type");
        if (!find_bitmap_cmd(type, &op)) {
            ctl_cmd_error(cmd, NULL, "Action '%.64s' is not supported in a "
                          "transaction here (only block-dirty-bitmap-*)",
                          type);
            return false;
        }
        json_object_object_get_ex(act, "data", &data);
        snprintf(where, sizeof where, "actions[%zu].data.", i);
        if (!parse_action(cmd, job, op, data, where, &node))
            return false;
        if (!first_node) {
            first_node = node;
        } else if (strcmp(first_node, node)) {
            ctl_cmd_error(cmd, NULL, "A transaction acts on one node here: "
                          "'%.64s' and '%.64s' are two", first_node, node);
            return false;
        }
    }
    *ep = NULL;
    if (first_node && !(*ep = find_node(cmd, first_node)))
        return false;
    return true;
}

static void cmd_transaction(struct ctl_cmd *cmd)
{
    struct apply_job *job = NULL;
    struct export *e = NULL;

    if (!parse_transaction(cmd, &job, &e)) {
        free_apply_job(job);
        ctl_cmd_finish(cmd);
        return;
    }
    if (job->n == 0) {
        free_apply_job(job);
        ctl_cmd_finish(cmd);
        return;
    }
    submit_job(cmd, job, e);
}

/* ---- queries ------------------------------------------------------ */

struct node_bitmaps {
    struct img_bitmap_info *v;
    size_t n;
    int err;
};

struct nodes_job {
    struct node_bitmaps *per;   /* one per export, in order */
    size_t n;
};

static void free_nodes_job(void *p)
{
    struct nodes_job *j = p;
    if (!j)
        return;
    for (size_t i = 0; i < j->n; i++)
        free(j->per[i].v);
    free(j->per);
    free(j);
}

static void nodes_run(struct srv_work *w)
{
    struct ctl_cmd *cmd = (struct ctl_cmd *)w;
    struct nodes_job *j = cmd->priv;
    size_t k = 0;

    for (struct export *e = srv.opts.exports; e && k < j->n; e = e->next) {
        struct node_bitmaps *nb = &j->per[k++];
        const struct img_ops *ops = e->img->ops;
        if (!ops->bitmap_count || !ops->bitmap_info)
            continue;
        size_t total = ops->bitmap_count(e->img);
        if (total == 0)
            continue;
        nb->v = calloc(total, sizeof *nb->v);
        if (!nb->v) {
            nb->err = -ENOMEM;
            continue;
        }
        for (size_t i = 0; i < total; i++) {
            int err = ops->bitmap_info(e->img, i, &nb->v[nb->n]);
            if (err == -ENOENT)
                break;
            if (err) {
                nb->err = err;
                break;
            }
            nb->n++;
        }
    }
}

static json_object *bitmap_json(const struct img_bitmap_info *b)
{
    json_object *o = json_object_new_object();
    json_object_object_add(o, "name", json_object_new_string(b->name));
    json_object_object_add(o, "recording",
                           json_object_new_boolean(b->recording));
    json_object_object_add(o, "persistent",
                           json_object_new_boolean(b->persistent));
    json_object_object_add(o, "busy", json_object_new_boolean(false));
    json_object_object_add(o, "granularity",
                           json_object_new_int64((int64_t)b->granularity));
    json_object_object_add(o, "count",
                           json_object_new_int64((int64_t)b->count));
    json_object_object_add(o, "inconsistent",
                           json_object_new_boolean(b->inconsistent));
    return o;
}

/* One export as QEMU's BlockDeviceInfo, with the fields clients read. */
static json_object *node_json(const struct export *e,
                              const struct node_bitmaps *nb)
{
    const struct image *img = e->img;
    bool ro = e->read_only || img->read_only;
    json_object *o = json_object_new_object();
    json_object *image = json_object_new_object();
    json_object *cache = json_object_new_object();
    json_object *bitmaps = json_object_new_array();

    json_object_object_add(image, "filename",
                           json_object_new_string(e->image_path));
    json_object_object_add(image, "format",
                           json_object_new_string(img->ops->name));
    json_object_object_add(image, "virtual-size",
                           json_object_new_int64((int64_t)img->size));
    json_object_object_add(image, "dirty-flag",
                           json_object_new_boolean(false));
    json_object_object_add(cache, "writeback", json_object_new_boolean(true));
    json_object_object_add(cache, "direct", json_object_new_boolean(false));
    json_object_object_add(cache, "no-flush", json_object_new_boolean(false));
    for (size_t i = 0; i < nb->n; i++)
        json_object_array_add(bitmaps, bitmap_json(&nb->v[i]));

    json_object_object_add(o, "node-name", json_object_new_string(e->name));
    json_object_object_add(o, "file", json_object_new_string(e->image_path));
    json_object_object_add(o, "drv", json_object_new_string(img->ops->name));
    json_object_object_add(o, "ro", json_object_new_boolean(ro));
    json_object_object_add(o, "encrypted",
                           json_object_new_boolean(e->key_file != NULL));
    json_object_object_add(o, "encryption_key_missing",
                           json_object_new_boolean(false));
    json_object_object_add(o, "detect_zeroes", json_object_new_string("off"));
    json_object_object_add(o, "backing_file_depth", json_object_new_int(0));
    static const char *const zeros[] = {
        "bps", "bps_rd", "bps_wr", "iops", "iops_rd", "iops_wr",
        "write_threshold",
    };
    for (size_t i = 0; i < sizeof zeros / sizeof zeros[0]; i++)
        json_object_object_add(o, zeros[i], json_object_new_int(0));
    json_object_object_add(o, "cache", cache);
    json_object_object_add(o, "image", image);
    json_object_object_add(o, "dirty-bitmaps", bitmaps);
    return o;
}

static void nodes_done(struct srv_work *w)
{
    struct ctl_cmd *cmd = (struct ctl_cmd *)w;
    struct nodes_job *j = cmd->priv;
    json_object *list = json_object_new_array();
    size_t k = 0;

    for (struct export *e = srv.opts.exports; e && k < j->n; e = e->next) {
        struct node_bitmaps *nb = &j->per[k++];
        if (nb->err) {
            json_object_put(list);
            ctl_cmd_error(cmd, NULL, "%s: cannot list dirty bitmaps: %s",
                          e->name, strerror(-nb->err));
            ctl_cmd_finish(cmd);
            return;
        }
        json_object_array_add(list, node_json(e, nb));
    }
    cmd->ret = list;
    ctl_cmd_finish(cmd);
}

static const struct arg_spec nodes_args[] = {
    { "flat", json_type_boolean, false },
    { NULL, json_type_null, false },
};

static void cmd_query_nodes(struct ctl_cmd *cmd)
{
    if (!check_args(cmd, cmd->args, nodes_args, "")) {
        ctl_cmd_finish(cmd);
        return;
    }
    struct nodes_job *j = calloc(1, sizeof *j);
    if (j)
        j->per = calloc(srv.opts.n_exports ? srv.opts.n_exports : 1,
                        sizeof *j->per);
    if (!j || !j->per) {
        free(j);
        ctl_cmd_error(cmd, NULL, "Out of memory");
        ctl_cmd_finish(cmd);
        return;
    }
    j->n = srv.opts.n_exports;
    cmd->priv = j;
    cmd->free_priv = free_nodes_job;
    cmd->work.run = nodes_run;
    cmd->work.done = nodes_done;
    srv_workers_submit(&cmd->work);
}

static const struct arg_spec no_args[] = {
    { NULL, json_type_null, false },
};

static void cmd_query_exports(struct ctl_cmd *cmd)
{
    if (!check_args(cmd, cmd->args, no_args, "")) {
        ctl_cmd_finish(cmd);
        return;
    }
    json_object *list = json_object_new_array();
    for (struct export *e = srv.opts.exports; e; e = e->next) {
        json_object *o = json_object_new_object();
        json_object_object_add(o, "type", json_object_new_string("nbd"));
        json_object_object_add(o, "id", json_object_new_string(e->name));
        json_object_object_add(o, "node-name",
                               json_object_new_string(e->name));
        json_object_object_add(o, "shutting-down",
                               json_object_new_boolean(srv.shutting_down));
        json_object_array_add(list, o);
    }
    cmd->ret = list;
    ctl_cmd_finish(cmd);
}

static void cmd_query_version(struct ctl_cmd *cmd)
{
    if (!check_args(cmd, cmd->args, no_args, "")) {
        ctl_cmd_finish(cmd);
        return;
    }
    cmd->ret = ctl_version();
    ctl_cmd_finish(cmd);
}

static void cmd_quit(struct ctl_cmd *cmd)
{
    if (!check_args(cmd, cmd->args, no_args, "")) {
        ctl_cmd_finish(cmd);
        return;
    }
    srv_log("control: quit");
    ctl_cmd_finish(cmd);    /* the answer goes out before we close */
    srv_shutdown();
}

static void cmd_query_commands(struct ctl_cmd *cmd);

static const struct {
    const char *name;
    void (*run)(struct ctl_cmd *cmd);
} simple_cmds[] = {
    { "transaction", cmd_transaction },
    { "query-named-block-nodes", cmd_query_nodes },
    { "query-block-exports", cmd_query_exports },
    { "query-version", cmd_query_version },
    { "query-commands", cmd_query_commands },
    { "quit", cmd_quit },
};

static void cmd_query_commands(struct ctl_cmd *cmd)
{
    if (!check_args(cmd, cmd->args, no_args, "")) {
        ctl_cmd_finish(cmd);
        return;
    }
    json_object *list = json_object_new_array();
    json_object *o = json_object_new_object();
    json_object_object_add(o, "name",
                           json_object_new_string("qmp_capabilities"));
    json_object_array_add(list, o);
    for (size_t i = 0; i < sizeof bitmap_cmds / sizeof bitmap_cmds[0]; i++) {
        o = json_object_new_object();
        json_object_object_add(o, "name",
                               json_object_new_string(bitmap_cmds[i].cmd));
        json_object_array_add(list, o);
    }
    for (size_t i = 0; i < sizeof simple_cmds / sizeof simple_cmds[0]; i++) {
        o = json_object_new_object();
        json_object_object_add(o, "name",
                               json_object_new_string(simple_cmds[i].name));
        json_object_array_add(list, o);
    }
    cmd->ret = list;
    ctl_cmd_finish(cmd);
}

void qmp_execute(struct ctl_cmd *cmd)
{
    enum img_bitmap_op op;

    if (find_bitmap_cmd(cmd->name, &op)) {
        cmd_bitmap(cmd, op);
        return;
    }
    for (size_t i = 0; i < sizeof simple_cmds / sizeof simple_cmds[0]; i++)
        if (!strcmp(simple_cmds[i].name, cmd->name)) {
            simple_cmds[i].run(cmd);
            return;
        }
    ctl_cmd_error(cmd, "CommandNotFound", "The command %.64s has not been "
                  "found", cmd->name);
    ctl_cmd_finish(cmd);
}
