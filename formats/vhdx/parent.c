/* Differencing VHDX ([MS-VHDX] 2.6.2.6): the parent locator, and finding
 * and opening the parent.
 *
 * The locator item is a 20-byte header (LocatorType, Reserved,
 * KeyValueCount) and KeyValueCount 12-byte entries, each naming a key and
 * a value elsewhere in the item as UTF-16LE strings.  Every offset and
 * length is checked against the item before the string is read; keys we
 * know are converted to UTF-8 and must appear once; unknown keys are
 * ignored.
 *
 * The parent is searched in the spec's order: relative_path (resolved
 * against the child's directory, '\' read as '/'), volume_path (a volume
 * GUID path: never resolvable here, skipped), absolute_win32_path (only
 * the part after "\\?\X:" is tried, as an absolute path on this system).
 * A child in an RBD image (rbd:POOL/IMAGE) has its parent in the same
 * pool: relative_path names it there (formats/io.c, io_link_name), with
 * the child's conf and user.
 * It is opened through img_open as VHDX, read-only, one level deeper; its
 * current header's DataWriteGuid must equal parent_linkage or
 * parent_linkage2, and its virtual disk size must equal the child's.
 *
 * Loops are found by file identity (formats/io.c io_identity: device
 * and inode, or an RBD image's name): the files on this thread's chain
 * are remembered one per depth level (a chain is
 * opened recursively on one thread), and a parent that is already one of
 * them is refused before it is opened.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#include "vhdx.h"

/* {B04AEFB7-D19E-4A81-B789-25B8E9445913}, on-disk byte order. */
static const struct vhdx_guid vhdx_locator_type = { {
    0xB7, 0xEF, 0x4A, 0xB0, 0x9E, 0xD1, 0x81, 0x4A,
    0xB7, 0x89, 0x25, 0xB8, 0xE9, 0x44, 0x59, 0x13 } };

#define LOCATOR_HEADER_SIZE 20u
#define LOCATOR_ENTRY_SIZE  12u

static __thread struct io_identity chain[VHDX_MAX_CHAIN_DEPTH + 1];

/* UTF-16LE (len bytes, even) to a new NUL-terminated UTF-8 string; NULL
 * with errno EILSEQ on a NUL character or an unpaired surrogate. */
static char *utf16_to_utf8(const uint8_t *p, size_t len)
{
    char *out = malloc(len / 2 * 3 + 1), *o = out;

    if (!out)
        return NULL;
    for (size_t i = 0; i < len; i += 2) {
        uint32_t c = (uint32_t)p[i] | (uint32_t)p[i + 1] << 8;
        if (c >= 0xD800 && c < 0xDC00 && i + 3 < len) {
            uint32_t lo = (uint32_t)p[i + 2] | (uint32_t)p[i + 3] << 8;
            if (lo >= 0xDC00 && lo < 0xE000) {
                c = 0x10000 + ((c - 0xD800) << 10) + (lo - 0xDC00);
                i += 2;
            }
        }
        if (c == 0 || (c >= 0xD800 && c < 0xE000)) {
            free(out);
            errno = EILSEQ;
            return NULL;
        }
        if (c < 0x80) {
            *o++ = (char)c;
        } else if (c < 0x800) {
            *o++ = (char)(0xC0 | c >> 6);
            *o++ = (char)(0x80 | (c & 0x3F));
        } else if (c < 0x10000) {
            *o++ = (char)(0xE0 | c >> 12);
            *o++ = (char)(0x80 | ((c >> 6) & 0x3F));
            *o++ = (char)(0x80 | (c & 0x3F));
        } else {
            *o++ = (char)(0xF0 | c >> 18);
            *o++ = (char)(0x80 | ((c >> 12) & 0x3F));
            *o++ = (char)(0x80 | ((c >> 6) & 0x3F));
            *o++ = (char)(0x80 | (c & 0x3F));
        }
    }
    *o = '\0';
    return out;
}

static int hex_value(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

/* "{xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx}" (either case) into on-disk
 * byte order: Data1..Data3 little-endian, Data4 in order. */
static bool parse_guid(const char *str, struct vhdx_guid *g)
{
    static const uint8_t order[16] = { 3, 2, 1, 0, 5, 4, 7, 6,
                                       8, 9, 10, 11, 12, 13, 14, 15 };
    uint8_t v[16];
    size_t k = 0;

    if (strlen(str) != 38 || str[0] != '{' || str[37] != '}')
        return false;
    for (size_t i = 1; i < 37;) {
        if (i == 9 || i == 14 || i == 19 || i == 24) {
            if (str[i++] != '-')
                return false;
            continue;
        }
        int hi = hex_value(str[i]), lo = hex_value(str[i + 1]);
        if (hi < 0 || lo < 0)
            return false;
        v[k++] = (uint8_t)(hi << 4 | lo);
        i += 2;
    }
    for (size_t i = 0; i < 16; i++)
        g->b[order[i]] = v[i];
    return true;
}

enum {
    KEY_LINKAGE,
    KEY_LINKAGE2,
    KEY_RELATIVE,
    KEY_VOLUME,
    KEY_ABSOLUTE,
    N_KEYS
};

static const char *const key_names[N_KEYS] = {
    [KEY_LINKAGE] = "parent_linkage",
    [KEY_LINKAGE2] = "parent_linkage2",
    [KEY_RELATIVE] = "relative_path",
    [KEY_VOLUME] = "volume_path",
    [KEY_ABSOLUTE] = "absolute_win32_path",
};

/* Check that [off, off+len) of a string lies in the item and decode it;
 * what names the field for the error line. */
static int read_string(struct vhdx_state *s, const uint8_t *item,
                       uint32_t item_len, uint32_t n, const char *what,
                       uint32_t off, uint32_t len, char **out)
{
    const char *path = s->img.path;

    if (off == 0 || len == 0 || len % 2 ||
        (uint64_t)off + len > item_len) {
        img_log("vhdx: %s: parent locator entry %" PRIu32 ": %sOffset %"
                PRIu32 " %sLength %" PRIu32 " outside the item (%" PRIu32
                " bytes) or empty or odd", path, n, what, off, what, len,
                item_len);
        return -EINVAL;
    }
    *out = utf16_to_utf8(item + off, len);
    if (!*out) {
        int err = -errno;
        if (err == -EILSEQ)
            img_log("vhdx: %s: parent locator entry %" PRIu32 ": %s is not "
                    "valid UTF-16 without NUL characters", path, n, what);
        return err == -EILSEQ ? -EINVAL : err;
    }
    return 0;
}

/* Decode entry n of the locator into values[] (known keys only). */
static int read_entry(struct vhdx_state *s, const uint8_t *item,
                      uint32_t item_len, uint32_t n, char **values)
{
    const uint8_t *e = item + LOCATOR_HEADER_SIZE +
                       (size_t)n * LOCATOR_ENTRY_SIZE;
    uint32_t koff, voff;
    uint16_t klen, vlen;
    char *key = NULL, *value = NULL;
    int err;

    memcpy(&koff, e, 4);
    memcpy(&voff, e + 4, 4);
    memcpy(&klen, e + 8, 2);
    memcpy(&vlen, e + 10, 2);
    err = read_string(s, item, item_len, n, "Key", vhdx_le32(koff),
                      vhdx_le16(klen), &key);
    if (err)
        return err;
    err = read_string(s, item, item_len, n, "Value", vhdx_le32(voff),
                      vhdx_le16(vlen), &value);
    if (err)
        goto out_free;
    for (int k = 0; k < N_KEYS; k++) {
        if (strcmp(key, key_names[k]) != 0)
            continue;
        if (values[k]) {
            img_log("vhdx: %s: parent locator: key %s appears twice",
                    s->img.path, key_names[k]);
            err = -EINVAL;
            goto out_free;
        }
        values[k] = value;
        value = NULL;
        break;
    }
out_free:
    free(key);
    free(value);
    return err;
}

/* Check and keep the decoded values. */
static int take_values(struct vhdx_state *s, char **values)
{
    const char *path = s->img.path;

    if (!values[KEY_LINKAGE]) {
        img_log("vhdx: %s: parent locator: parent_linkage missing", path);
        return -EINVAL;
    }
    if (!parse_guid(values[KEY_LINKAGE], &s->parent_linkage)) {
        img_log("vhdx: %s: parent locator: parent_linkage '%.40s' is not "
                "a {GUID}", path, values[KEY_LINKAGE]);
        return -EINVAL;
    }
    if (values[KEY_LINKAGE2]) {
        if (!parse_guid(values[KEY_LINKAGE2], &s->parent_linkage2)) {
            img_log("vhdx: %s: parent locator: parent_linkage2 '%.40s' is "
                    "not a {GUID}", path, values[KEY_LINKAGE2]);
            return -EINVAL;
        }
        s->has_linkage2 = true;
    }
    if (!values[KEY_RELATIVE] && !values[KEY_VOLUME] &&
        !values[KEY_ABSOLUTE]) {
        img_log("vhdx: %s: parent locator: none of relative_path, "
                "volume_path, absolute_win32_path", path);
        return -EINVAL;
    }
    s->relative_path = values[KEY_RELATIVE];
    s->volume_path = values[KEY_VOLUME];
    s->absolute_win32_path = values[KEY_ABSOLUTE];
    values[KEY_RELATIVE] = values[KEY_VOLUME] = values[KEY_ABSOLUTE] = NULL;
    return 0;
}

int vhdx_read_parent_locator(struct vhdx_state *s, uint32_t off,
                             uint32_t len)
{
    const char *path = s->img.path;
    char *values[N_KEYS] = { NULL };
    uint8_t *item;
    uint16_t count;
    int err;

    /* The table entry was checked: len >= 20, inside the region. */
    item = malloc(len);
    if (!item)
        return -ENOMEM;
    err = vhdx_pread(s, item, len, s->metadata_region.offset + off);
    if (err) {
        img_log("vhdx: %s: metadata item Parent Locator at region offset "
                "0x%" PRIx32 ": %s", path, off, strerror(-err));
        goto out_free;
    }
    if (memcmp(item, &vhdx_locator_type, sizeof vhdx_locator_type)) {
        char g[37];
        vhdx_guid_format((const struct vhdx_guid *)item, g);
        img_log("vhdx: %s: parent locator: LocatorType %s is not the VHDX "
                "locator B04AEFB7-D19E-4A81-B789-25B8E9445913", path, g);
        err = -ENOTSUP;
        goto out_free;
    }
    memcpy(&count, item + 18, 2);
    count = vhdx_le16(count);
    if (LOCATOR_HEADER_SIZE + (uint64_t)count * LOCATOR_ENTRY_SIZE > len) {
        img_log("vhdx: %s: parent locator: KeyValueCount %u does not fit "
                "in the item (%" PRIu32 " bytes)", path, count, len);
        err = -EINVAL;
        goto out_free;
    }
    for (uint32_t n = 0; n < count; n++)
        if ((err = read_entry(s, item, len, n, values)))
            goto out_free;
    err = take_values(s, values);

out_free:
    for (int k = 0; k < N_KEYS; k++)
        free(values[k]);
    free(item);
    return err;
}

/* name ('\' separators) as a path relative to the child's directory. */
static char *resolve_relative(const char *child, const char *name)
{
    const char *slash = strrchr(child, '/');
    size_t dir_len = slash ? (size_t)(slash - child) + 1 : 0;
    size_t name_len;
    char *p;

    while (name[0] == '.' && (name[1] == '\\' || name[1] == '/'))
        name += 2;
    name_len = strlen(name);
    p = malloc(dir_len + name_len + 1);
    if (!p)
        return NULL;
    memcpy(p, child, dir_len);
    for (size_t i = 0; i <= name_len; i++)
        p[dir_len + i] = name[i] == '\\' ? '/' : name[i];
    return p;
}

/* "\\?\X:\dir\file" as "/dir/file"; NULL (errno ENOENT) for any other
 * form (a UNC share, a volume GUID). */
static char *resolve_absolute(const char *name)
{
    if (strncmp(name, "\\\\?\\", 4) == 0)
        name += 4;
    if (!((name[0] >= 'a' && name[0] <= 'z') ||
          (name[0] >= 'A' && name[0] <= 'Z')) || name[1] != ':' ||
        name[2] != '\\') {
        errno = ENOENT;
        return NULL;
    }
    char *p = strdup(name + 2);
    if (!p)
        return NULL;
    for (char *c = p; *c; c++)
        if (*c == '\\')
            *c = '/';
    return p;
}

/* The first locator path naming an existing file, its identity in
 * *id; NULL with one line logged when none does (errno set). */
static char *find_parent(struct vhdx_state *s, struct io_identity *id)
{
    const char *path = s->img.path;
    char *rel = NULL, *abs = NULL;
    int rel_errno = 0;

    if (io_is_remote_name(path)) {
        /* An RBD child's parent is an RBD image: relative_path names it
         * in the child's pool; the open says whether it exists. */
        if (!s->relative_path) {
            img_log("vhdx: %s: parent not found: an RBD image's parent "
                    "needs a relative_path", path);
            errno = ENOENT;
            return NULL;
        }
        char *name = resolve_relative("", s->relative_path);
        rel = name ? io_link_name(path, name) : NULL;
        if (!rel && errno == ENOENT)
            img_log("vhdx: %s: parent not found: relative_path '%.200s' "
                    "is absolute", path, s->relative_path);
        free(name);
        if (rel)
            io_identity_name(rel, id);      /* a remote name: no lookup */
        return rel;
    }
    if (s->relative_path) {
        rel = resolve_relative(path, s->relative_path);
        if (!rel)
            return NULL;
        if (io_identity_name(rel, id) == 0)
            return rel;
        rel_errno = errno;
    }
    if (s->absolute_win32_path) {
        abs = resolve_absolute(s->absolute_win32_path);
        if (abs && io_identity_name(abs, id) == 0) {
            free(rel);
            return abs;
        }
        if (!abs && errno == ENOMEM) {
            free(rel);
            return NULL;
        }
    }
    if (rel)
        img_log("vhdx: %s: parent not found: relative_path '%.200s' "
                "('%.200s'): %s%s", path, s->relative_path, rel,
                strerror(rel_errno), s->absolute_win32_path
                ? ", absolute_win32_path not on this system either" : "");
    else
        img_log("vhdx: %s: parent not found: no relative_path, and "
                "volume_path / absolute_win32_path '%.200s' not on this "
                "system", path, s->absolute_win32_path
                ? s->absolute_win32_path : s->volume_path);
    free(rel);
    free(abs);
    errno = rel_errno ? rel_errno : ENOENT;
    return NULL;
}

/* The opened parent must be the one the locator names, the same size. */
static int check_parent(struct vhdx_state *s, const char *ppath)
{
    const struct vhdx_state *p = (const struct vhdx_state *)s->parent;
    const char *path = s->img.path;
    char want[37], got[37];

    if (memcmp(&p->header.data_write_guid, &s->parent_linkage,
               sizeof s->parent_linkage) != 0 &&
        !(s->has_linkage2 &&
          memcmp(&p->header.data_write_guid, &s->parent_linkage2,
                 sizeof s->parent_linkage2) == 0)) {
        vhdx_guid_format(&s->parent_linkage, want);
        vhdx_guid_format(&p->header.data_write_guid, got);
        img_log("vhdx: %s: parent '%s' has DataWriteGuid %s, not the "
                "parent_linkage %s%s: it changed or is another file", path,
                ppath, got, want, s->has_linkage2 ? " (nor linkage2)" : "");
        return -EINVAL;
    }
    if (p->disk_size != s->disk_size) {
        img_log("vhdx: %s: parent '%s' has VirtualDiskSize %" PRIu64
                ", the child %" PRIu64, path, ppath, p->disk_size,
                s->disk_size);
        return -EINVAL;
    }
    return 0;
}

int vhdx_open_parent(struct vhdx_state *s, const struct img_open_args *args)
{
    const char *path = s->img.path;
    struct io_identity id;
    char *ppath;
    int err = io_identity_fd(s->fd, path, &id);

    if (err)
        return err;
    if (args->depth <= VHDX_MAX_CHAIN_DEPTH)
        chain[args->depth] = id;
    if (!s->has_parent)
        return 0;
    if (args->depth >= VHDX_MAX_CHAIN_DEPTH) {
        img_log("vhdx: %s: differencing chain has more than %u parents",
                path, VHDX_MAX_CHAIN_DEPTH);
        return -ELOOP;
    }
    ppath = find_parent(s, &id);
    if (!ppath)
        return errno ? -errno : -ENOENT;
    for (unsigned i = 0; i <= args->depth; i++) {
        if (io_identity_same(&chain[i], &id)) {
            img_log("vhdx: %s: parent '%s' loops back to a file already in "
                    "the chain (level %u)", path, ppath, i);
            err = -ELOOP;
            goto out_free;
        }
    }
    struct img_open_args pargs = {
        .path = ppath,
        .format = "vhdx",
        .read_only = true,
        .cache_size = args->cache_size,
        .depth = args->depth + 1,
    };
    /* A failure was logged where it was found, naming that file. */
    err = img_open(&pargs, &s->parent);
    if (!err)
        err = check_parent(s, ppath);
out_free:
    free(ppath);
    return err;
}
