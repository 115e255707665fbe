/* fuzz-qcow2-check: the input is a qcow2 file.  Check it as
 * `diskserve-img check` does (metadata only: no backing or data file is
 * opened), then repair a copy as `check -r all` does and check the
 * result again.
 *
 * Aborts (a finding) when: the repair grows the file past twice the
 * input plus 4160 clusters (a repair drops data references past the end
 * of the file and adds a refcount table and blocks for what the file
 * holds; it steps over clusters that tables past the end of the file
 * claim, such as a snapshot's L1 table, by at most 4096 clusters or the
 * file's size, and never covers space for offsets beyond); a repair
 * that ran to the end and reported no errors left leaves an image whose
 * next check finds corruptions or cannot run.  Sanitizer reports, leaks
 * and inputs running past libFuzzer's -timeout are findings too.
 */
#include <stdint.h>
#include <string.h>
#include <sys/stat.h>

#include "image.h"
#include "qcow2/check.h"
#include "qcow2/qcow2.h"

#include "fuzz.h"
#include "fuzz-image.h"

#define FUZZ_MAX_INPUT (1024u * 1024u)

const char fuzz_target[] = "fuzz-qcow2-check";

/* Check (and with repair, repair) the file at path; false when it did
 * not open or the check could not run to the end. */
static bool check(const char *path, unsigned repair,
                  struct qcow2_check_result *r, uint64_t *cluster)
{
    struct qcow2_state *s;
    if (qcow2_check_open(path, repair != 0, &s) < 0)
        return false;
    *cluster = s->cluster_size;
    int err = qcow2_check(s, repair, r);
    qcow2_check_close(s);
    return err == 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static char path[4200], copy[4200];
    struct qcow2_check_result r;
    uint64_t cluster;

    if (size > FUZZ_MAX_INPUT)
        return 0;
    if (!path[0]) {
        snprintf(path, sizeof path, "%s/img", fuzz_dir());
        snprintf(copy, sizeof copy, "%s/copy", fuzz_dir());
    }
    fuzz_write_file(path, data, size);
    if (!check(path, 0, &r, &cluster))
        return 0;

    fuzz_write_file(copy, data, size);
    bool ran = check(copy, QCOW2_REPAIR_LEAKS | QCOW2_REPAIR_ERRORS, &r,
                     &cluster);
    struct stat st;
    if (stat(copy, &st) < 0)
        FAIL("repaired copy vanished");
    uint64_t limit = 2 * (uint64_t)size + 4160 * cluster;
    if ((uint64_t)st.st_size > limit)
        FAIL("repair grew a %zu-byte file to %lld bytes (limit %llu)", size,
             (long long)st.st_size, (unsigned long long)limit);
    if (!ran || r.corruptions || r.check_errors)
        return 0;
    struct qcow2_check_result again;
    if (!check(copy, 0, &again, &cluster))
        FAIL("repaired image (no errors left) cannot be checked again");
    if (again.corruptions || again.check_errors)
        FAIL("repair left no errors, yet the next check finds %llu "
             "corruptions and %llu check errors",
             (unsigned long long)again.corruptions,
             (unsigned long long)again.check_errors);
    return 0;
}
