/* The libFuzzer entry point every target in tests/fuzz/ defines.  Built
 * with -fsanitize=fuzzer, libFuzzer's main drives it; otherwise
 * fuzz-main.c runs it once over each file named on the command line. */
#ifndef DISKSERVE_FUZZ_H
#define DISKSERVE_FUZZ_H

#include <stddef.h>
#include <stdint.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#endif /* DISKSERVE_FUZZ_H */
