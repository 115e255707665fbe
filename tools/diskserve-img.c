/* diskserve-img: image tool sharing formats/ with the server.  Commands
 * are added as the formats grow; see --help.
 */
#include <stdio.h>
#include <string.h>

#include "image.h"

int main(int argc, char **argv)
{
    if (argc >= 2 && (!strcmp(argv[1], "--help") || !strcmp(argv[1], "-h"))) {
        puts("Usage: diskserve-img COMMAND [OPTIONS] FILE...");
        return 0;
    }
    fprintf(stderr, "diskserve-img: no command given (try --help)\n");
    return 2;
}
