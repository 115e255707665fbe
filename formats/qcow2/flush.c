/* qcow2 metadata write-back: the one place that writes dirty cached
 * tables to the file, in the order that keeps the image consistent at
 * every instant (see the write order in qcow2.c).
 */
#include "qcow2.h"

int qcow2_metadata_flush(struct qcow2_state *s)
{
    (void)s;
    return 0;       /* read-only for now: nothing is ever dirty */
}

void qcow2_metadata_drop_caches(struct qcow2_state *s)
{
    (void)s;
}
