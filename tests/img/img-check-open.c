/* img-check-open: run the refcount check on an image opened through
 * img_open, the way the server would, and print the result's counts.
 *
 *   img-check-open FILE [none|leaks|all]
 *
 * Prints "name=value" lines for every count of struct qcow2_check_result
 * and exits 0, or 1 with a message when the check could not run; a raw
 * image must be refused with -ENOTSUP (exit 3).
 */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <string.h>

#include "image.h"
#include "qcow2/check.h"

int main(int argc, char **argv)
{
    unsigned repair = 0;

    if (argc < 2 || argc > 3) {
        fprintf(stderr, "usage: img-check-open FILE [none|leaks|all]\n");
        return 2;
    }
    if (argc == 3 && !strcmp(argv[2], "leaks"))
        repair = QCOW2_REPAIR_LEAKS;
    else if (argc == 3 && !strcmp(argv[2], "all"))
        repair = QCOW2_REPAIR_LEAKS | QCOW2_REPAIR_ERRORS;
    else if (argc == 3 && strcmp(argv[2], "none"))
        return 2;

    struct img_open_args args = { .path = argv[1], .read_only = true };
    struct image *img;
    int err = img_open(&args, &img);
    if (err) {
        fprintf(stderr, "img-check-open: %s: %s\n", argv[1], strerror(-err));
        return 1;
    }
    struct qcow2_check_result r;
    err = qcow2_check_image(img, repair, &r);
    img_close(img);
    if (err == -ENOTSUP)
        return 3;
    if (err) {
        fprintf(stderr, "img-check-open: %s: %s\n", argv[1], strerror(-err));
        return 1;
    }
    printf("corruptions=%" PRIu64 "\nleaks=%" PRIu64 "\n"
           "corruptions_fixed=%" PRIu64 "\nleaks_fixed=%" PRIu64 "\n"
           "check_errors=%" PRIu64 "\nimage_end_offset=%" PRIu64 "\n"
           "allocated_clusters=%" PRIu64 "\ntotal_clusters=%" PRIu64 "\n"
           "fragmented_clusters=%" PRIu64 "\ncompressed_clusters=%" PRIu64
           "\nmetadata_changed=%d\nrefcounts_rebuilt=%d\n",
           r.corruptions, r.leaks, r.corruptions_fixed, r.leaks_fixed,
           r.check_errors, r.image_end_offset, r.allocated_clusters,
           r.total_clusters, r.fragmented_clusters, r.compressed_clusters,
           r.metadata_changed, r.refcounts_rebuilt);
    return 0;
}
