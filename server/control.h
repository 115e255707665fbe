/* The control socket's inside: a QMP command on its way from control.c,
 * which frames and answers JSON, to qmp.c, which runs it.
 *
 * A command belongs to its client until ctl_cmd_finish(); while it runs
 * the client reads nothing more, so commands of one client run in order,
 * one at a time, as QMP requires.  A command may travel to a worker and
 * back; the client may disconnect meanwhile, in which case the answer is
 * dropped and the command still freed by ctl_cmd_finish().
 */
#ifndef DISKSERVE_CONTROL_H
#define DISKSERVE_CONTROL_H

#include <json-c/json.h>

#include "server.h"

struct ctl_client;

struct ctl_cmd {
    struct srv_work work;       /* first: worker hand-off */
    struct ctl_client *client;
    json_object *req;           /* the request (a reference held) */
    json_object *id;            /* inside req, or NULL */
    const char *name;           /* "execute", inside req */
    json_object *args;          /* "arguments", inside req, or NULL */
    /* the answer: ret on success, else err_class and err */
    json_object *ret;           /* owned */
    const char *err_class;
    char err[512];
    /* the command's own state, freed by free_priv */
    void *priv;
    void (*free_priv)(void *priv);
};

/* Run cmd; it ends with ctl_cmd_finish(), now or from a worker's done
 * callback (qmp.c). */
void qmp_execute(struct ctl_cmd *cmd);

/* Answer cmd (unless its client has gone), free it and let the client go
 * on with its next command. */
void ctl_cmd_finish(struct ctl_cmd *cmd);

/* Make cmd's answer an error of class cls ("GenericError" unless NULL). */
void ctl_cmd_error(struct ctl_cmd *cmd, const char *cls, const char *fmt,
                   ...) __attribute__((format(printf, 3, 4)));

/* A new version object, as the QMP greeting and query-version give it:
 * the QEMU version whose QMP we speak, and ours as the package.  The
 * caller owns it. */
json_object *ctl_version(void);

/* Serialize v as QEMU does (", " and ": " separators); the string is
 * malloc'd, NULL on failure. */
char *ctl_to_json(json_object *v);

#endif /* DISKSERVE_CONTROL_H */
