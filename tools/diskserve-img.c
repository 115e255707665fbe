/* diskserve-img: the image tool, sharing formats/ with the server.
 *
 *   create  make a new raw, qcow2 or VHDX image
 *   info    describe an image (as text or JSON)
 *   map     list where each range of the disk is stored
 *   check   check a qcow2 image's refcounts, and repair them
 *   bitmap  add, remove, clear, enable, disable, merge dirty bitmaps
 *
 * Options and output follow qemu-img's where both have the command, so
 * scripts and habits carry over.  Exit status: 0 success, 1 failure, 2
 * bad usage; check adds 2 (errors found) and 3 (leaks only).
 */
#include <stdio.h>
#include <string.h>

#include "img-tool.h"

void tool_usage(void)
{
    fputs(
"Usage: diskserve-img COMMAND [OPTIONS] FILE...\n"
"\n"
"Commands:\n"
"  create [-q] -f FMT [-o OPTIONS] [-b BACKING [-F BACKING_FMT]] FILE [SIZE]\n"
"      Create FILE, of SIZE bytes (suffixes k, M, G, T, P, E; powers of\n"
"      1024); with a backing file SIZE defaults to the backing file's.\n"
"      FMT is raw, qcow2 or vhdx.  qcow2 OPTIONS, comma separated:\n"
"        size=SIZE  cluster_size=512..2M (64k)  compat=0.10|1.1 (1.1)\n"
"        extended_l2=on|off  lazy_refcounts=on|off\n"
"        compression_type=zlib|zstd  refcount_bits=1..64 (16)\n"
"        backing_file=NAME  backing_fmt=FMT  preallocation=off\n"
"      vhdx OPTIONS: subformat=dynamic|fixed (dynamic)\n"
"        block_size=1M..256M (32M)  log_size=N (1M)\n"
"        logical_sector_size=512|4096 (512)\n"
"        physical_sector_size=512|4096 (4096); with -b a differencing\n"
"        file over a VHDX parent, its size and sector size\n"
"  info [-f FMT] [--json | --output=human|json] FILE\n"
"      Print the format, sizes and format options of FILE.\n"
"  map [-f FMT] [--key-file=FILE] [--luks-max-iterations=N]\n"
"      [--output=human|json] FILE\n"
"      Print where each range of the disk is stored, through the whole\n"
"      backing chain.  N bounds the PBKDF2 iterations a LUKS open may\n"
"      run over all key slots tried (default: 16000000).\n"
"  check [-q] [-f FMT] [-r leaks|all] [--output=human|json] FILE\n"
"      Check the refcounts of a qcow2 image; -r repairs leaks, or leaks\n"
"      and errors.  Exit status: 0 clean, 1 the check could not\n"
"      complete, 2 errors remain, 3 only leaks remain.\n"
"  bitmap (--add [-g N] | --remove | --clear | --enable | --disable |\n"
"      --merge SRC)... [-f FMT] FILE BITMAP\n"
"      Change the persistent dirty bitmap BITMAP of a qcow2 image that\n"
"      nothing serves: the operations run in the order given, all or\n"
"      none.  --add makes an enabled bitmap of granularity N (default:\n"
"      the cluster size, within 4k..64k); --merge SRC ORs bitmap SRC of\n"
"      the same image into BITMAP.\n"
"  bitmap --control PATH --node NAME (--add [-g N] | --remove | ...)...\n"
"      BITMAP\n"
"      The same operations on the export NAME of a running diskserve,\n"
"      through its control socket PATH, as one QMP transaction.\n"
"\n"
"Exit status: 0 success, 1 failure, 2 bad usage (check: see above).\n",
          stdout);
}

int main(int argc, char **argv)
{
    static const struct {
        const char *name;
        int (*fn)(int, char **);
    } cmds[] = {
        { "create", tool_cmd_create },
        { "info", tool_cmd_info },
        { "map", tool_cmd_map },
        { "check", tool_cmd_check },
        { "bitmap", tool_cmd_bitmap },
    };

    if (argc < 2)
        return tool_usage_error("no command given (try --help)");
    if (!strcmp(argv[1], "--help") || !strcmp(argv[1], "-h")) {
        tool_usage();
        return 0;
    }
    if (!strcmp(argv[1], "bitmap") && tool_bitmap_is_remote(argc - 1,
                                                            argv + 1))
        return tool_cmd_bitmap_remote(argc - 1, argv + 1);
    for (size_t i = 0; i < sizeof cmds / sizeof *cmds; i++)
        if (!strcmp(argv[1], cmds[i].name))
            return cmds[i].fn(argc - 1, argv + 1);
    return tool_usage_error("unknown command '%.64s' (try --help)",
                            argv[1]);
}
