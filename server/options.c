/* Command line and configuration file.
 *
 * `diskserve [OPTIONS] IMAGE` serves one image; `diskserve --config FILE`
 * serves the exports the file names.  Option letters follow qemu-nbd
 * where they mean the same.  Any bad option or value prints one line on
 * stderr and exits 2; nothing is opened before the whole command line
 * has been checked.
 */
#include <errno.h>
#include <getopt.h>
#include <grp.h>
#include <ini.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "server.h"
#include "tls.h"

enum {
    OPT_ONESHOT = 256,
    OPT_FORK,
    OPT_PID_FILE,
    OPT_THREADS,
    OPT_VERSION,
    OPT_CONFIG,
    OPT_KEY_FILE,
    OPT_LOG_FILE,
    OPT_HANDSHAKE_TIMEOUT,
    OPT_MAX_NEGOTIATING,
    OPT_CACHE_SIZE,
    OPT_LUKS_MAX_ITER,
    OPT_TLS,
    OPT_TLS_CERTIFICATES,
    OPT_TLS_VERIFY_PEER,
    OPT_TLS_AUTHZ,
    OPT_TLS_PSK,
    OPT_TLS_PSK_USERS,
    OPT_TLS_PRIORITY,
    OPT_SOCKET_MODE,
    OPT_SOCKET_GROUP,
    OPT_CONTROL,
    OPT_BITMAPS_CRASH_SAFE,
};

static const struct option long_opts[] = {
    { "format", required_argument, NULL, 'f' },
    { "export-name", required_argument, NULL, 'x' },
    { "description", required_argument, NULL, 'D' },
    { "read-only", no_argument, NULL, 'r' },
    { "socket", required_argument, NULL, 'k' },
    { "bind", required_argument, NULL, 'b' },
    { "port", required_argument, NULL, 'p' },
    { "shared", required_argument, NULL, 'e' },
    { "snapshot", required_argument, NULL, 'l' },
    { "stdio", no_argument, NULL, 's' },
    { "verbose", no_argument, NULL, 'v' },
    { "help", no_argument, NULL, 'h' },
    { "oneshot", no_argument, NULL, OPT_ONESHOT },
    { "fork", no_argument, NULL, OPT_FORK },
    { "pid-file", required_argument, NULL, OPT_PID_FILE },
    { "threads", required_argument, NULL, OPT_THREADS },
    { "version", no_argument, NULL, OPT_VERSION },
    { "config", required_argument, NULL, OPT_CONFIG },
    { "key-file", required_argument, NULL, OPT_KEY_FILE },
    { "log-file", required_argument, NULL, OPT_LOG_FILE },
    { "handshake-timeout", required_argument, NULL, OPT_HANDSHAKE_TIMEOUT },
    { "max-negotiating", required_argument, NULL, OPT_MAX_NEGOTIATING },
    { "cache-size", required_argument, NULL, OPT_CACHE_SIZE },
    { "luks-max-iterations", required_argument, NULL, OPT_LUKS_MAX_ITER },
    { "bitmaps-crash-safe", no_argument, NULL, OPT_BITMAPS_CRASH_SAFE },
    { "tls", required_argument, NULL, OPT_TLS },
    { "tls-certificates", required_argument, NULL, OPT_TLS_CERTIFICATES },
    { "tls-verify-peer", no_argument, NULL, OPT_TLS_VERIFY_PEER },
    { "tls-authz", required_argument, NULL, OPT_TLS_AUTHZ },
    { "tls-psk", required_argument, NULL, OPT_TLS_PSK },
    { "tls-psk-users", required_argument, NULL, OPT_TLS_PSK_USERS },
    { "tls-priority", required_argument, NULL, OPT_TLS_PRIORITY },
    { "socket-mode", required_argument, NULL, OPT_SOCKET_MODE },
    { "socket-group", required_argument, NULL, OPT_SOCKET_GROUP },
    { "bitmap", required_argument, NULL, 'B' },
    { "control", required_argument, NULL, OPT_CONTROL },
    { NULL, 0, NULL, 0 },
};

static const char usage_text[] =
"Usage: diskserve [OPTIONS] IMAGE\n"
"       diskserve --config FILE [OPTIONS]\n"
"Serve a disk image (raw, qcow2 or VHDX) over the NBD protocol.\n"
"\n"
"Export:\n"
"  -f, --format FMT          raw, qcow2 or vhdx (default: probe the file)\n"
"  -x, --export-name NAME    export name (default: \"\")\n"
"  -D, --description TEXT    export description\n"
"  -r, --read-only           refuse writes\n"
"  -l, --snapshot NAME|ID    export a snapshot (read-only): a qcow2 internal\n"
"                            one, or of an rbd: image unless -f qcow2\n"
"      --key-file FILE       passphrase for an encrypted qcow2\n"
"      --luks-max-iterations N\n"
"                            PBKDF2 iterations one LUKS open may run, over\n"
"                            all key slots tried (default: 16000000)\n"
"      --cache-size BYTES    metadata cache size (e.g. 32M)\n"
"  -B, --bitmap NAME         offer only these dirty bitmaps as\n"
"                            qemu:dirty-bitmap:NAME (repeatable; default:\n"
"                            every bitmap the image has)\n"
"      --bitmaps-crash-safe  keep enabled qcow2 bitmaps valid across a crash\n"
"                            (a sync before the first write into each\n"
"                            clean granule; see README)\n"
"      --config FILE         serve the exports a config file names\n"
"Listening:\n"
"  -k, --socket PATH         listen on a Unix socket\n"
"  -b, --bind ADDR           TCP address (default: localhost)\n"
"  -p, --port PORT           TCP port (default: 10809)\n"
"  -s, --stdio               serve one client on stdin/stdout\n"
"  -e, --shared N            at most N clients at once (default: 100)\n"
"      --max-negotiating N   at most N clients in the handshake (default 32)\n"
"      --handshake-timeout S drop clients still negotiating after S seconds\n"
"                            (default: 10)\n"
"      --oneshot             exit when the last client disconnects\n"
"      --socket-mode OCTAL   permissions of the Unix socket (e.g. 0660)\n"
"      --socket-group NAME   group of the Unix socket\n"
"TLS:\n"
"      --tls off|on|require  STARTTLS refused, offered, or required of\n"
"                            every client (default: off)\n"
"      --tls-certificates DIR\n"
"                            ca-cert.pem, server-cert.pem, server-key.pem\n"
"      --tls-verify-peer     require a client certificate signed by the CA\n"
"      --tls-authz FILE      client certificate DNs allowed, one a line\n"
"      --tls-psk FILE        pre-shared keys (psktool's username:hexkey)\n"
"      --tls-psk-users LIST  PSK usernames allowed (comma-separated)\n"
"      --tls-priority STR    GnuTLS priority string (default: TLS 1.3\n"
"                            and 1.2, GnuTLS's NORMAL ciphers)\n"
"                            SIGHUP reloads certificates and PSK file\n"
"Process:\n"
"      --fork                run in the background once listening\n"
"      --pid-file FILE       write the server's pid to FILE\n"
"      --control PATH        QMP control socket for dirty bitmaps (mode 0600)\n"
"      --threads N           worker threads for disk I/O (default: 8)\n"
"      --log-file FILE       log there instead of stderr (SIGHUP reopens)\n"
"  -v, --verbose             log each connection (twice: each request)\n"
"  -h, --help                this text\n"
"      --version             print the version\n";

/* Print one line and exit 2: the convention for bad usage. */
static void __attribute__((noreturn, format(printf, 1, 2)))
usage_error(const char *fmt, ...)
{
    va_list ap;

    fputs("diskserve: ", stderr);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputs(" (try --help)\n", stderr);
    exit(2);
}

static char *xstrdup(const char *s)
{
    char *p = strdup(s);
    if (!p) {
        fputs("diskserve: out of memory\n", stderr);
        exit(1);
    }
    return p;
}

static unsigned long parse_uint(const char *what, const char *s,
                                unsigned long min, unsigned long max)
{
    char *end;

    errno = 0;
    unsigned long v = strtoul(s, &end, 10);
    if (errno || end == s || *end || s[0] == '-' || v < min || v > max)
        usage_error("%s: '%.64s' is not a number from %lu to %lu", what, s,
                    min, max);
    return v;
}

/* Sizes accept K, M and G suffixes (powers of 1024). */
static size_t parse_size(const char *what, const char *s)
{
    char *end;

    errno = 0;
    unsigned long long v = strtoull(s, &end, 10);
    if (errno || end == s || s[0] == '-')
        usage_error("%s: '%.64s' is not a size", what, s);
    unsigned shift = 0;
    switch (*end) {
    case 'k': case 'K': shift = 10; end++; break;
    case 'm': case 'M': shift = 20; end++; break;
    case 'g': case 'G': shift = 30; end++; break;
    default: break;
    }
    if (*end || v > (SIZE_MAX >> shift))
        usage_error("%s: '%.64s' is not a size", what, s);
    return (size_t)(v << shift);
}

static bool parse_bool(const char *what, const char *s)
{
    if (!strcasecmp(s, "yes") || !strcasecmp(s, "true") ||
        !strcasecmp(s, "on") || !strcmp(s, "1"))
        return true;
    if (!strcasecmp(s, "no") || !strcasecmp(s, "false") ||
        !strcasecmp(s, "off") || !strcmp(s, "0"))
        return false;
    usage_error("%s: '%.64s' is not yes or no", what, s);
}

static void check_format(const char *what, const char *fmt)
{
    if (strcmp(fmt, "raw") && strcmp(fmt, "qcow2") && strcmp(fmt, "vhdx"))
        usage_error("%s: unknown format '%.64s' (raw, qcow2 or vhdx)",
                    what, fmt);
}

static void check_name(const char *what, const char *name)
{
    if (strlen(name) > PROTO_MAX_STRING)
        usage_error("%s: longer than %u bytes", what, PROTO_MAX_STRING);
}

static int parse_tls_mode(const char *what, const char *s)
{
    if (!strcmp(s, "off"))
        return SRV_TLS_OFF;
    if (!strcmp(s, "on"))
        return SRV_TLS_ON;
    if (!strcmp(s, "require"))
        return SRV_TLS_REQUIRE;
    usage_error("%s: '%.64s' is not off, on or require", what, s);
}

static int parse_mode(const char *what, const char *s)
{
    char *end;

    errno = 0;
    unsigned long v = strtoul(s, &end, 8);
    if (errno || end == s || *end || s[0] == '-' || v > 07777)
        usage_error("%s: '%.64s' is not an octal mode", what, s);
    return (int)v;
}

static long parse_group(const char *what, const char *s)
{
    struct group *g = getgrnam(s);
    if (g)
        return (long)g->gr_gid;
    char *end;
    errno = 0;
    unsigned long v = strtoul(s, &end, 10);
    if (errno || end == s || *end || s[0] == '-' || v > INT_MAX)
        usage_error("%s: no group '%.64s'", what, s);
    return (long)v;
}

/* "a,b,c" into a NULL-terminated array. */
static char **split_list(const char *s)
{
    size_t n = 1;
    for (const char *p = s; *p; p++)
        n += *p == ',';
    char **list = calloc(n + 1, sizeof *list);
    if (!list) {
        fputs("diskserve: out of memory\n", stderr);
        exit(1);
    }
    n = 0;
    for (const char *p = s; *p;) {
        size_t len = strcspn(p, ",");
        if (len > 0) {
            list[n] = strndup(p, len);
            if (!list[n++]) {
                fputs("diskserve: out of memory\n", stderr);
                exit(1);
            }
        }
        p += len;
        if (*p == ',')
            p++;
    }
    return list;
}

/* Add a -B / bitmap= name to e; a name given twice counts once. */
static void add_bitmap(struct export *e, const char *what, const char *name)
{
    if (!*name || strlen(name) > IMG_BITMAP_NAME_MAX)
        usage_error("%s: a bitmap name is 1 to %u bytes", what,
                    IMG_BITMAP_NAME_MAX);
    for (size_t i = 0; i < e->n_bitmaps; i++)
        if (!strcmp(e->bitmaps[i], name))
            return;
    char **v = realloc(e->bitmaps, (e->n_bitmaps + 1) * sizeof *v);
    if (!v) {
        fputs("diskserve: out of memory\n", stderr);
        exit(1);
    }
    e->bitmaps = v;
    e->bitmaps[e->n_bitmaps++] = xstrdup(name);
}

static struct export *export_append(struct srv_options *o, const char *name)
{
    struct export *e = calloc(1, sizeof *e);
    if (!e) {
        fputs("diskserve: out of memory\n", stderr);
        exit(1);
    }
    e->name = xstrdup(name);
    struct export **pp = &o->exports;
    while (*pp)
        pp = &(*pp)->next;
    *pp = e;
    o->n_exports++;
    return e;
}

/* ---- config file -------------------------------------------------- */

struct ini_ctx {
    struct srv_options *o;
    const char *path;
    struct export *cur;
    char section[256];
};

static void set_str(char **dst, const char *v)
{
    free(*dst);
    *dst = xstrdup(v);
}

static int on_ini_line(void *user, const char *section, const char *key,
                       const char *value)
{
    struct ini_ctx *ctx = user;
    struct srv_options *o = ctx->o;
    char what[512];

    snprintf(what, sizeof what, "%s: [%s] %s", ctx->path, section, key);
    if (strcmp(section, ctx->section) != 0) {
        snprintf(ctx->section, sizeof ctx->section, "%s", section);
        ctx->cur = NULL;
        if (!strncmp(section, "export", 6) &&
            (section[6] == '\0' || section[6] == ' ')) {
            const char *name = section[6] ? section + 7 : "";
            check_name(what, name);
            for (struct export *e = o->exports; e; e = e->next)
                if (!strcmp(e->name, name))
                    usage_error("%s: export '%s' defined twice", ctx->path,
                                name);
            ctx->cur = export_append(o, name);
        } else if (strcmp(section, "server") != 0) {
            usage_error("%s: unknown section [%.64s]", ctx->path, section);
        }
    }
    if (!key)
        return 1;
    if (ctx->cur) {
        struct export *e = ctx->cur;
        if (!strcmp(key, "image"))
            set_str(&e->image_path, value);
        else if (!strcmp(key, "format")) {
            check_format(what, value);
            set_str(&e->format, value);
        } else if (!strcmp(key, "read-only"))
            e->read_only = parse_bool(what, value);
        else if (!strcmp(key, "description")) {
            check_name(what, value);
            set_str(&e->description, value);
        } else if (!strcmp(key, "snapshot"))
            set_str(&e->snapshot, value);
        else if (!strcmp(key, "key-file"))
            set_str(&e->key_file, value);
        else if (!strcmp(key, "tls-only"))
            e->tls_only = parse_bool(what, value);
        else if (!strcmp(key, "tls-authz"))
            set_str(&e->tls_authz_file, value);
        else if (!strcmp(key, "tls-psk-users"))
            e->tls_psk_users = split_list(value);
        else if (!strcmp(key, "bitmap"))
            add_bitmap(e, what, value);
        else
            usage_error("%s: unknown key", what);
        return 1;
    }
    if (!strcmp(key, "socket"))
        set_str(&o->socket_path, value);
    else if (!strcmp(key, "bind")) {
        set_str(&o->bind_addr, value);
        o->tcp = true;
    } else if (!strcmp(key, "port")) {
        parse_uint(what, value, 1, 65535);
        set_str(&o->port, value);
        o->tcp = true;
    } else if (!strcmp(key, "shared"))
        o->shared = (unsigned)parse_uint(what, value, 1, 100000);
    else if (!strcmp(key, "threads"))
        o->threads = (unsigned)parse_uint(what, value, 1, 1024);
    else if (!strcmp(key, "handshake-timeout"))
        o->handshake_timeout = (unsigned)parse_uint(what, value, 1, 3600);
    else if (!strcmp(key, "luks-max-iterations"))
        o->luks_max_iter = parse_uint(what, value, 1, UINT32_MAX);
    else if (!strcmp(key, "bitmaps-crash-safe"))
        o->bitmaps_crash_safe = parse_bool(what, value);
    else if (!strcmp(key, "log-file"))
        set_str(&o->log_file, value);
    else if (!strcmp(key, "pid-file"))
        set_str(&o->pid_file, value);
    else if (!strcmp(key, "tls"))
        o->tls = parse_tls_mode(what, value);
    else if (!strcmp(key, "tls-certificates"))
        set_str(&o->tls_certificates, value);
    else if (!strcmp(key, "tls-verify-peer"))
        o->tls_verify_peer = parse_bool(what, value);
    else if (!strcmp(key, "tls-psk"))
        set_str(&o->tls_psk, value);
    else if (!strcmp(key, "tls-priority"))
        set_str(&o->tls_priority, value);
    else if (!strcmp(key, "socket-mode"))
        o->socket_mode = parse_mode(what, value);
    else if (!strcmp(key, "socket-group"))
        o->socket_gid = parse_group(what, value);
    else if (!strcmp(key, "control"))
        set_str(&o->control_path, value);
    else
        usage_error("%s: unknown key", what);
    return 1;
}

static void read_config(struct srv_options *o, const char *path)
{
    struct ini_ctx ctx = { .o = o, .path = path };
    FILE *f = fopen(path, "r");

    if (!f)
        usage_error("%s: %s", path, strerror(errno));
    int line = ini_parse_file(f, on_ini_line, &ctx);
    fclose(f);
    if (line > 0)
        usage_error("%s: line %d: syntax error", path, line);
    if (line < 0)
        usage_error("%s: cannot read", path);
    if (o->n_exports == 0)
        usage_error("%s: no [export NAME] section", path);
    for (struct export *e = o->exports; e; e = e->next)
        if (!e->image_path)
            usage_error("%s: [export %s] has no image", path, e->name);
}

/* TLS options need --tls; an allow-list of certificate names needs the
 * client certificates it names, so it turns --tls-verify-peer on. */
static void check_tls(struct srv_options *o)
{
    bool per_export = false;

    for (struct export *e = o->exports; e; e = e->next) {
        if (e->tls_authz_file) {
            e->tls_dns = tls_read_list(e->tls_authz_file);
            if (!e->tls_dns)
                usage_error("%s: %s", e->tls_authz_file, strerror(errno));
            o->tls_verify_peer = true;
            if (!o->tls_certificates)
                usage_error("tls-authz needs --tls-certificates");
        }
        per_export |= e->tls_only || e->tls_authz_file || e->tls_psk_users;
    }
    if (o->tls == SRV_TLS_OFF) {
        if (o->tls_certificates || o->tls_psk || o->tls_verify_peer ||
            o->tls_priority || per_export)
            usage_error("TLS options need --tls=on or --tls=require");
        return;
    }
    if (!o->tls_certificates && !o->tls_psk)
        usage_error("--tls needs --tls-certificates or --tls-psk");
    if (o->tls_verify_peer && !o->tls_certificates)
        usage_error("--tls-verify-peer needs --tls-certificates");
}

void srv_parse_args(int argc, char **argv, struct srv_options *o)
{
    const char *format = NULL, *name = "", *desc = NULL, *snapshot = NULL;
    const char *key_file = NULL, *config = NULL;
    const char *tls_authz = NULL, *tls_psk_users = NULL;
    bool read_only = false;
    struct export bitmaps = { .n_bitmaps = 0 };   /* -B names */
    int c;

    memset(o, 0, sizeof *o);
    o->shared = 100;
    o->max_negotiating = 32;
    o->threads = 8;
    o->handshake_timeout = 10;
    o->max_inflight = 256;
    o->buffer_budget = 1024u << 20;
    o->socket_mode = -1;
    o->socket_gid = -1;

    /* The config file first, so the command line overrides it. */
    opterr = 0;
    while ((c = getopt_long(argc, argv, ":f:x:D:rk:b:p:e:l:svhB:", long_opts,
                            NULL)) != -1)
        if (c == OPT_CONFIG)
            config = optarg;
    if (config)
        read_config(o, config);
    optind = 0;
    while ((c = getopt_long(argc, argv, ":f:x:D:rk:b:p:e:l:svhB:", long_opts,
                            NULL)) != -1) {
        switch (c) {
        case 'f':
            check_format("--format", optarg);
            format = optarg;
            break;
        case 'x':
            check_name("--export-name", optarg);
            name = optarg;
            break;
        case 'D':
            check_name("--description", optarg);
            desc = optarg;
            break;
        case 'r':
            read_only = true;
            break;
        case 'k':
            set_str(&o->socket_path, optarg);
            break;
        case 'b':
            set_str(&o->bind_addr, optarg);
            o->tcp = true;
            break;
        case 'p':
            parse_uint("--port", optarg, 1, 65535);
            set_str(&o->port, optarg);
            o->tcp = true;
            break;
        case 'e':
            o->shared = (unsigned)parse_uint("--shared", optarg, 1, 100000);
            break;
        case 'l':
            snapshot = optarg;
            break;
        case 's':
            o->stdio = true;
            break;
        case 'v':
            o->verbose++;
            break;
        case 'h':
            fputs(usage_text, stdout);
            exit(0);
        case OPT_VERSION:
            printf("diskserve %s\n", PACKAGE_VERSION);
            exit(0);
        case OPT_ONESHOT:
            o->oneshot = true;
            break;
        case OPT_FORK:
            o->fork = true;
            break;
        case OPT_PID_FILE:
            set_str(&o->pid_file, optarg);
            break;
        case OPT_THREADS:
            o->threads = (unsigned)parse_uint("--threads", optarg, 1, 1024);
            break;
        case OPT_CONFIG:
            break;
        case OPT_KEY_FILE:
            key_file = optarg;
            break;
        case OPT_LOG_FILE:
            set_str(&o->log_file, optarg);
            break;
        case OPT_HANDSHAKE_TIMEOUT:
            o->handshake_timeout = (unsigned)parse_uint(
                "--handshake-timeout", optarg, 1, 3600);
            break;
        case OPT_MAX_NEGOTIATING:
            o->max_negotiating = (unsigned)parse_uint(
                "--max-negotiating", optarg, 1, 100000);
            break;
        case OPT_CACHE_SIZE:
            o->cache_size = parse_size("--cache-size", optarg);
            break;
        case 'B':
            add_bitmap(&bitmaps, "--bitmap", optarg);
            break;
        case OPT_CONTROL:
            set_str(&o->control_path, optarg);
            break;
        case OPT_LUKS_MAX_ITER:
            o->luks_max_iter = parse_uint("--luks-max-iterations", optarg,
                                          1, UINT32_MAX);
            break;
        case OPT_BITMAPS_CRASH_SAFE:
            o->bitmaps_crash_safe = true;
            break;
        case OPT_TLS:
            o->tls = parse_tls_mode("--tls", optarg);
            break;
        case OPT_TLS_CERTIFICATES:
            set_str(&o->tls_certificates, optarg);
            break;
        case OPT_TLS_VERIFY_PEER:
            o->tls_verify_peer = true;
            break;
        case OPT_TLS_AUTHZ:
            tls_authz = optarg;
            break;
        case OPT_TLS_PSK:
            set_str(&o->tls_psk, optarg);
            break;
        case OPT_TLS_PSK_USERS:
            tls_psk_users = optarg;
            break;
        case OPT_TLS_PRIORITY:
            set_str(&o->tls_priority, optarg);
            break;
        case OPT_SOCKET_MODE:
            o->socket_mode = parse_mode("--socket-mode", optarg);
            break;
        case OPT_SOCKET_GROUP:
            o->socket_gid = parse_group("--socket-group", optarg);
            break;
        case ':':
            usage_error("option '%s' needs a value", argv[optind - 1]);
        default:
            if (optopt)
                usage_error("unknown option '-%c'", optopt);
            usage_error("unknown option '%.64s'", argv[optind - 1]);
        }
    }

    if (config) {
        if (optind < argc)
            usage_error("give either --config or an IMAGE, not both");
        if (format || snapshot || key_file || desc || read_only || *name ||
            tls_authz || tls_psk_users || bitmaps.n_bitmaps)
            usage_error("export options belong in the config file with "
                        "--config");
    } else {
        if (optind >= argc)
            usage_error("no image given");
        if (optind + 1 < argc)
            usage_error("unexpected argument '%.64s'", argv[optind + 1]);
        struct export *e = export_append(o, name);
        e->image_path = xstrdup(argv[optind]);
        if (format)
            e->format = xstrdup(format);
        if (desc)
            e->description = xstrdup(desc);
        if (snapshot)
            e->snapshot = xstrdup(snapshot);
        if (key_file)
            e->key_file = xstrdup(key_file);
        e->bitmaps = bitmaps.bitmaps;
        e->n_bitmaps = bitmaps.n_bitmaps;
        e->read_only = read_only || snapshot;
        if (tls_authz)
            e->tls_authz_file = xstrdup(tls_authz);
        if (tls_psk_users)
            e->tls_psk_users = split_list(tls_psk_users);
    }
    check_tls(o);
    /* Images open before --fork detaches, and librados's threads do not
     * survive a fork: the child would hang on its first request. */
    for (struct export *e = o->exports; e && o->fork; e = e->next)
        if (!strncmp(e->image_path, "rbd:", 4))
            usage_error("--fork cannot serve RBD images (%.64s): run "
                        "diskserve in the background instead",
                        e->image_path);

    if (o->stdio) {
        if (o->socket_path || o->tcp || o->fork)
            usage_error("--stdio cannot be combined with --socket, --bind, "
                        "--port or --fork");
        o->oneshot = true;
    } else if (!o->socket_path) {
        o->tcp = true;
    }
    if (o->tcp && !o->port)
        o->port = xstrdup("10809");
    if (o->max_negotiating > o->shared)
        o->max_negotiating = o->shared;
}
