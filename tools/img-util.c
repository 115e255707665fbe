/* diskserve-img helpers shared by the commands: error lines, sizes in
 * and out, booleans, format probing.
 */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "image.h"
#include "img-tool.h"

/* Print "diskserve-img: " and the message on stderr. */
static void vline(const char *fmt, va_list ap)
{
    char msg[1024];

    vsnprintf(msg, sizeof msg, fmt, ap);
    fprintf(stderr, "diskserve-img: %s\n", msg);
}

int tool_usage_error(const char *fmt, ...)
{
    va_list ap;

    va_start(ap, fmt);
    vline(fmt, ap);
    va_end(ap);
    return TOOL_EXIT_USAGE;
}

int tool_error(const char *fmt, ...)
{
    va_list ap;

    va_start(ap, fmt);
    vline(fmt, ap);
    va_end(ap);
    return 1;
}

int tool_parse_size(const char *s, uint64_t *out)
{
    static const char units[] = "bkmgtpe";
    char *end;

    if (!s || !*s || *s == '-' || *s == '+')
        return -EINVAL;
    errno = 0;
    unsigned long long whole = strtoull(s, &end, 10);
    if (errno || end == s)
        return -EINVAL;
    double frac = 0;
    if (*end == '.') {
        char *fend;
        frac = strtod(end, &fend);
        if (fend == end + 1)
            return -EINVAL;
        end = fend;
    }
    unsigned shift = 0;
    if (*end) {
        const char *u = strchr(units, (char)(*end | 0x20));
        if (!u || end[1])
            return -EINVAL;
        shift = u == units ? 0 : 10 * (unsigned)(u - units);
    }
    if (shift == 0 && frac != 0)
        return -EINVAL;
    if (shift && whole > (UINT64_MAX >> shift))
        return -ERANGE;
    uint64_t v = (uint64_t)whole << shift;
    uint64_t f = (uint64_t)(frac * (double)(1ull << shift));
    if (v + f < v)
        return -ERANGE;
    *out = v + f;
    return 0;
}

void tool_format_size(uint64_t v, char *buf, size_t len)
{
    static const char *const units[] = {
        "", "Ki", "Mi", "Gi", "Ti", "Pi", "Ei",
    };
    unsigned i = 0;

    /* The next unit from 1000 of this one on, so at most 3 digits. */
    while (i < 6 && (double)v >= 1000.0 * (double)(1ull << (10 * i)))
        i++;
    snprintf(buf, len, "%0.3g %sB", (double)v / (double)(1ull << (10 * i)),
             units[i]);
}

int tool_parse_bool(const char *s, int *out)
{
    if (!strcasecmp(s, "on") || !strcasecmp(s, "true") ||
        !strcasecmp(s, "yes")) {
        *out = 1;
        return 0;
    }
    if (!strcasecmp(s, "off") || !strcasecmp(s, "false") ||
        !strcasecmp(s, "no")) {
        *out = 0;
        return 0;
    }
    return -EINVAL;
}

const char *tool_format_of(const char *path, const char *fmt)
{
    if (fmt) {
        const struct img_ops *ops = img_find_driver(fmt);
        if (!ops) {
            tool_error("unknown format '%s' (known: raw, qcow2)", fmt);
            return NULL;
        }
        return ops->name;
    }
    const struct img_ops *ops = img_probe_file(path);
    if (!ops) {
        tool_error("%s: %s", path, strerror(errno));
        return NULL;
    }
    return ops->name;
}
