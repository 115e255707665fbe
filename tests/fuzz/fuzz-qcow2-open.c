/* fuzz-qcow2-open: the input is a qcow2 file.  Open it read-only, read
 * the start of the disk (at most READ_LIMIT bytes, in 64 KiB reads), ask
 * for block status and dirty-bitmap status over the same range, open the
 * first internal snapshot; then, when it opened, open a copy read-write,
 * apply 2-4 writes, zeroings or trims described by the last bytes of the
 * input, flush, close, and run the refcount check (formats/qcow2/check.h)
 * on the result.
 *
 * Aborts (a finding) when: an image whose check found nothing before the
 * requests has errors after them (or new leaks, when every request
 * succeeded); data just written or zeroed does not read back (on an
 * image in which the check found no corruption); block
 * status breaks the extent-list rules of image.h.  Sanitizer reports and
 * leaks are findings too.  Drivers log bad metadata to stderr; that is
 * expected.
 *
 * Bounds: inputs over 1 MiB are skipped, and each input stops issuing
 * reads once it has run for a second.  Backing and data file names are
 * resolved next to the image, in a private directory: an input naming
 * anything outside it (a '/' in the name, or a data file that does not
 * exist there, which the driver would look for in the working
 * directory) is skipped, so the fuzzer cannot touch other files.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "image.h"
#include "qcow2/check.h"
#include "qcow2/qcow2.h"

#include "fuzz.h"
#include "fuzz-image.h"

#define FUZZ_MAX_INPUT (1024u * 1024u)
#define READ_LIMIT FUZZ_READ_LIMIT
#define CHUNK FUZZ_CHUNK

const char fuzz_target[] = "fuzz-qcow2-open";

static const char *dir;
static char img_path[4200];
static char copy_path[4200];

static void setup(void)
{
    if (dir)
        return;
    dir = fuzz_dir();
    snprintf(img_path, sizeof img_path, "%s/img", dir);
    snprintf(copy_path, sizeof copy_path, "%s/copy", dir);
}

static uint64_t get_be(const uint8_t *p, unsigned n)
{
    uint64_t v = 0;
    for (unsigned i = 0; i < n; i++)
        v = v << 8 | p[i];
    return v;
}

/* Whether a file name from the input stays inside our directory: no
 * '/', and (for a data file) present there. */
static bool name_is_safe(const uint8_t *name, uint64_t len, bool must_exist)
{
    char buf[256];
    uint64_t n = 0;
    while (n < len && name[n]) {
        if (name[n] == '/')
            return false;
        n++;
    }
    if (!must_exist || n == 0)
        return true;
    if (n >= sizeof buf - 1)
        return false;
    char path[4400];
    memcpy(buf, name, n);
    buf[n] = 0;
    snprintf(path, sizeof path, "%s/%s", dir, buf);
    return access(path, F_OK) == 0;
}

/* Skip inputs naming a backing or data file outside the directory.  The
 * data file extension is looked for at every offset, which covers
 * wherever the driver finds it. */
static bool names_are_safe(const uint8_t *data, size_t size)
{
    if (size >= 20) {
        uint64_t bo = get_be(data + 8, 8);
        uint64_t bl = get_be(data + 16, 4);
        if (bo < size && !name_is_safe(data + bo, size - bo < bl ? size - bo
                                                                 : bl, false))
            return false;
    }
    for (size_t i = 0; i + 8 <= size; i++) {
        if (get_be(data + i, 4) != 0x44415441u)   /* data file ext */
            continue;
        uint64_t len = get_be(data + i + 4, 4);
        uint64_t avail = size - i - 8;
        if (!name_is_safe(data + i + 8, len < avail ? len : avail, true))
            return false;
    }
    return true;
}

/* Refcount check of a file; returns false when it could not run. */
static bool check_file(const char *path, struct qcow2_check_result *r)
{
    struct qcow2_state *s;
    memset(r, 0, sizeof *r);
    if (qcow2_check_open(path, false, &s) < 0)
        return false;
    int err = qcow2_check(s, 0, r);
    qcow2_check_close(s);
    return err == 0;
}

/* Apply up to 4 requests described by the last 16 bytes of the input;
 * returns true when every one succeeded.  sound: the check found no
 * corruption, so data must read back as written (an image whose
 * refcounts miss referenced data clusters maps one host cluster twice
 * once the allocator hands it out again, as it does in QEMU). */
static bool mutate(struct image *img, const uint8_t *data, size_t size,
                   uint8_t *buf, bool sound)
{
    const struct img_ops *ops = img->ops;
    uint64_t end = img->size < READ_LIMIT ? img->size : READ_LIMIT;
    uint32_t align = img->min_block > 1 ? img->min_block : 1;
    bool all_ok = true;
    unsigned nops = size >= 1 ? 2 + data[size - 1] % 3 : 2;

    if (end < align)
        return true;
    for (unsigned i = 0; i < nops && !fuzz_out_of_time(); i++) {
        uint8_t b[4] = { 0x5a, (uint8_t)i, 0x10, (uint8_t)(i * 37) };
        if (size >= 4 * (i + 1) + 1)
            memcpy(b, data + size - 1 - 4 * (i + 1), 4);
        /* Offsets on a 512-byte grid with a sub-sector nudge, lengths up
         * to 128 KiB, all aligned to the image's minimum block. */
        uint64_t off = ((uint64_t)(b[1] << 8 | b[2]) * 512 +
                        (b[0] & 0x10 ? b[3] : 0)) % end;
        uint64_t len = ((uint64_t)b[3] + 1) * 512 - (b[0] & 0x20 ? 1 : 0);
        off -= off % align;
        if (len > end - off)
            len = end - off;
        len -= len % align;
        if (len == 0)
            continue;
        unsigned flags = b[0] & 0x40 ? IMG_FUA : 0;
        int err;
        switch (b[0] % 3) {
        case 0:
            if (!ops->write)
                continue;
            for (uint64_t k = 0; k < len; k++)
                buf[k] = (uint8_t)(k * 7 + i + 1) | 1;
            err = ops->write(img, buf, len, off, flags);
            if (err == 0) {
                uint8_t *back = buf + CHUNK * 2;
                if (sound && ops->read(img, back, len, off) == 0 &&
                    memcmp(back, buf, len) != 0)
                    FAIL("write of %llu bytes at %llu reads back different",
                         (unsigned long long)len, (unsigned long long)off);
            }
            break;
        case 1:
            if (!ops->write_zeroes)
                continue;
            if (b[0] & 0x80)
                flags |= IMG_MAY_TRIM;
            err = ops->write_zeroes(img, len, off, flags);
            if (sound && err == 0 && ops->read(img, buf, len, off) == 0) {
                for (uint64_t k = 0; k < len; k++)
                    if (buf[k])
                        FAIL("zeroes of %llu bytes at %llu read back "
                             "nonzero at +%llu", (unsigned long long)len,
                             (unsigned long long)off, (unsigned long long)k);
            }
            break;
        default:
            if (!ops->trim)
                continue;
            err = ops->trim(img, len, off, flags);
            break;
        }
        if (err)
            all_ok = false;
    }
    if (ops->flush && ops->flush(img) < 0)
        all_ok = false;
    return all_ok;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static uint8_t *buf;
    struct image *img;

    if (size > FUZZ_MAX_INPUT)
        return 0;
    setup();
    if (!buf && !(buf = malloc(CHUNK * 4)))
        abort();
    if (!names_are_safe(data, size))
        return 0;
    fuzz_start_clock();
    fuzz_write_file(img_path, data, size);

    struct img_open_args args = {
        .path = img_path, .format = "qcow2", .read_only = true,
    };
    if (img_open(&args, &img) < 0)
        return 0;
    fuzz_read_all(img, buf, READ_LIMIT);
    fuzz_status_all(img);
    struct qcow2_state *s = (struct qcow2_state *)img;
    if (s->nb_snapshots > 0 && s->snapshots[0].id) {
        struct img_open_args sargs = args;
        struct image *snap;
        sargs.snapshot = s->snapshots[0].id;
        if (img_open(&sargs, &snap) == 0) {
            fuzz_read_all(snap, buf, 1024 * 1024);
            img_close(snap);
        }
    }
    img_close(img);

    struct qcow2_check_result before, after;
    bool sound = check_file(img_path, &before) && !before.corruptions &&
                 !before.check_errors;
    bool clean = sound && !before.leaks;

    fuzz_write_file(copy_path, data, size);
    args.path = copy_path;
    args.read_only = false;
    if (img_open(&args, &img) < 0)
        return 0;
    bool all_ok = mutate(img, data, size, buf, sound);
    img_close(img);
    if (!clean)
        return 0;
    if (!check_file(copy_path, &after))
        FAIL("clean image cannot be checked after the requests");
    /* Refcounts of clusters past the end of the file are checked by
     * neither qemu-img nor us, so an image can hold leaks that appear
     * only once the file grows over them: count those in the input
     * grown to the same size, and allow them. */
    uint64_t old_leaks = 0;
    struct stat st;
    if (after.leaks && stat(copy_path, &st) == 0 &&
        (uint64_t)st.st_size > size) {
        struct qcow2_check_result grown;
        if (truncate(img_path, st.st_size) == 0 &&
            check_file(img_path, &grown))
            old_leaks = grown.leaks;
    }
    if (after.corruptions || after.check_errors ||
        (all_ok && after.leaks > old_leaks))
        FAIL("clean image has %llu corruptions, %llu leaks (%llu past the "
             "end of the file before), %llu check errors after the "
             "requests (all succeeded: %d)",
             (unsigned long long)after.corruptions,
             (unsigned long long)after.leaks, (unsigned long long)old_leaks,
             (unsigned long long)after.check_errors, all_ok);
    return 0;
}
