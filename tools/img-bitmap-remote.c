/* diskserve-img bitmap --control PATH --node NAME: the bitmap command's
 * operations on an image a running diskserve serves, sent to its control
 * socket as one QMP transaction (so all or nothing, as on a stopped
 * image).  The operations and their order are those of the offline
 * command; --add makes a persistent bitmap, as qemu-img bitmap does.
 */
#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <json-c/json.h>

#include "img-tool.h"

#define MAX_LINE (1u << 20)

bool tool_bitmap_is_remote(int argc, char **argv)
{
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--"))
            break;
        if (!strcmp(argv[i], "--control") ||
            !strncmp(argv[i], "--control=", 10))
            return true;
    }
    return false;
}

/* One line from the socket into a malloc'd string (NULL at end of
 * stream or on error). */
static char *read_line(int fd)
{
    size_t cap = 4096, n = 0;
    char *buf = malloc(cap);

    while (buf) {
        if (n + 1 == cap) {
            if (cap >= MAX_LINE) {
                free(buf);
                return NULL;
            }
            char *p = realloc(buf, cap * 2);
            if (!p) {
                free(buf);
                return NULL;
            }
            buf = p;
            cap *= 2;
        }
        ssize_t r = read(fd, buf + n, 1);
        if (r <= 0) {
            free(buf);
            return NULL;
        }
        if (buf[n] == '\n')
            break;
        n++;
    }
    if (buf)
        buf[n] = '\0';
    return buf;
}

static int send_json(int fd, json_object *o)
{
    const char *s = json_object_to_json_string_ext(o, JSON_C_TO_STRING_PLAIN);
    size_t len = strlen(s);
    char *line = malloc(len + 1);
    if (!line)
        return -ENOMEM;
    memcpy(line, s, len);
    line[len] = '\n';
    ssize_t w = write(fd, line, len + 1);
    free(line);
    return w == (ssize_t)len + 1 ? 0 : -EIO;
}

/* Send one command and read its answer: 0, or 1 with the error printed
 * (prefix names what failed). */
static int command(int fd, json_object *req, const char *prefix)
{
    if (send_json(fd, req))
        return tool_error("%s: cannot send: %s", prefix, strerror(errno));
    char *line = read_line(fd);
    if (!line)
        return tool_error("%s: the server closed the control socket",
                          prefix);
    json_object *ans = json_tokener_parse(line);
    free(line);
    json_object *err, *desc;
    int rc = 0;
    if (!ans) {
        rc = tool_error("%s: unreadable answer", prefix);
    } else if (json_object_object_get_ex(ans, "error", &err)) {
        rc = tool_error("%s: %s", prefix,
                        json_object_object_get_ex(err, "desc", &desc)
                        ? json_object_get_string(desc) : "failed");
    } else if (!json_object_object_get_ex(ans, "return", &err)) {
        rc = tool_error("%s: unexpected answer", prefix);
    }
    json_object_put(ans);
    return rc;
}

static int connect_control(const char *path)
{
    struct sockaddr_un sun = { .sun_family = AF_UNIX };

    if (strlen(path) >= sizeof sun.sun_path) {
        tool_error("%s: path too long", path);
        return -1;
    }
    memcpy(sun.sun_path, path, strlen(path));
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0 || connect(fd, (struct sockaddr *)&sun, sizeof sun) < 0) {
        tool_error("%s: %s", path, strerror(errno));
        if (fd >= 0)
            close(fd);
        return -1;
    }
    char *greeting = read_line(fd);
    bool ok = greeting && strstr(greeting, "\"QMP\"");
    free(greeting);
    if (!ok) {
        tool_error("%s: no QMP greeting", path);
        close(fd);
        return -1;
    }
    json_object *caps = json_object_new_object();
    json_object_object_add(caps, "execute",
                           json_object_new_string("qmp_capabilities"));
    int rc = command(fd, caps, path);
    json_object_put(caps);
    if (rc) {
        close(fd);
        return -1;
    }
    return fd;
}

static json_object *action(const char *type, json_object *data)
{
    json_object *a = json_object_new_object();
    json_object_object_add(a, "type", json_object_new_string(type));
    json_object_object_add(a, "data", data);
    return a;
}

static json_object *named(const char *node, const char *key,
                          const char *name)
{
    json_object *d = json_object_new_object();
    json_object_object_add(d, "node", json_object_new_string(node));
    json_object_object_add(d, key, json_object_new_string(name));
    return d;
}

int tool_cmd_bitmap_remote(int argc, char **argv)
{
    struct tool_bitmap_args ba;
    int err = tool_parse_bitmap_args(argc, argv, true, &ba);
    if (err || ba.help)
        return err;
    const char *node = ba.node;
    if (!ba.control || !node)
        return tool_usage_error("bitmap: --control needs --node (the "
                                "export's name)");
    if (argc - optind != 1)
        return tool_usage_error("bitmap: with --control, expected BITMAP "
                                "alone (try --help)");
    const char *name = argv[optind];

    json_object *actions = json_object_new_array();
    for (size_t i = 0; i < ba.n; i++) {
        const struct img_bitmap_action *a = &ba.acts[i];
        json_object *d;
        switch (a->op) {
        case IMG_BITMAP_ADD:
            d = named(node, "name", name);
            json_object_object_add(d, "persistent",
                                   json_object_new_boolean(true));
            if (a->granularity)
                json_object_object_add(d, "granularity",
                                       json_object_new_int64(
                                           (int64_t)a->granularity));
            json_object_array_add(actions,
                                  action("block-dirty-bitmap-add", d));
            break;
        case IMG_BITMAP_MERGE: {
            d = named(node, "target", name);
            json_object *list = json_object_new_array();
            json_object_array_add(list,
                                  json_object_new_string(a->sources[0]));
            json_object_object_add(d, "bitmaps", list);
            json_object_array_add(actions,
                                  action("block-dirty-bitmap-merge", d));
            break;
        }
        default:
            d = named(node, "name", name);
            json_object_array_add(actions, action(
                a->op == IMG_BITMAP_REMOVE ? "block-dirty-bitmap-remove"
                : a->op == IMG_BITMAP_CLEAR ? "block-dirty-bitmap-clear"
                : a->op == IMG_BITMAP_ENABLE ? "block-dirty-bitmap-enable"
                : "block-dirty-bitmap-disable", d));
            break;
        }
    }
    json_object *args = json_object_new_object();
    json_object_object_add(args, "actions", actions);
    json_object *req = json_object_new_object();
    json_object_object_add(req, "execute",
                           json_object_new_string("transaction"));
    json_object_object_add(req, "arguments", args);

    int rc = 1;
    int fd = connect_control(ba.control);
    if (fd >= 0) {
        char prefix[300];
        snprintf(prefix, sizeof prefix, "%s: bitmap '%.200s'", node, name);
        rc = command(fd, req, prefix);
        close(fd);
    }
    json_object_put(req);
    return rc;
}
