/* fuzz-luks: the input is the start of a LUKS1 header region (the
 * phdr, key slots and their key material), as a qcow2 image with
 * crypt_method 2 holds it.  The target writes it into a sparse 4 MiB
 * file, opens it with the passphrase "fuzz" and a bound of 100,000
 * PBKDF2 iterations (the seeds' slots use a few thousand), and when a
 * slot opens, encrypts and decrypts 4 KiB at an offset taken from the
 * input.
 *
 * Aborts (a finding) when decrypt(encrypt(x)) differs from x or when
 * encryption leaves a sector unchanged.  Sanitizer reports, leaks and
 * inputs past libFuzzer's -timeout are findings too.  With
 * FUZZ_REPORT_OPENS set, each input that opens says so on stderr.
 */
#include <fcntl.h>
#include <stdint.h>
#include <string.h>
#include <unistd.h>

#include "qcow2/crypto.h"

#include "fuzz.h"
#include "fuzz-image.h"

#define FUZZ_MAX_INPUT (1024u * 1024u)
#define REGION (4u * 1024 * 1024)
#define MAX_ITER 100000u

const char fuzz_target[] = "fuzz-luks";

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static char path[4200];
    static uint8_t buf[4096], orig[4096];

    if (size > FUZZ_MAX_INPUT)
        return 0;
    if (!path[0])
        snprintf(path, sizeof path, "%s/luks", fuzz_dir());
    fuzz_write_file(path, data, size);
    if (truncate(path, REGION) < 0)
        abort();
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        abort();
    struct qcow2_crypto *c;
    int err = qcow2_crypto_open_luks(path, fd, 0, REGION, "fuzz", 4,
                                     MAX_ITER, &c);
    close(fd);
    if (err)
        return 0;
    if (getenv("FUZZ_REPORT_OPENS"))
        fprintf(stderr, "fuzz-luks: opened\n");
    uint64_t off = 0;
    for (size_t i = 0; i < 4 && i < size; i++)
        off = off << 8 | data[size - 1 - i];
    off = (off % (1u << 20)) * QCOW2_CRYPTO_SECTOR;
    for (size_t i = 0; i < sizeof orig; i++)
        orig[i] = (uint8_t)(i * 13 + 7);
    memcpy(buf, orig, sizeof buf);
    if (qcow2_crypto_encrypt(c, off, buf, sizeof buf) < 0)
        FAIL("encrypt of 4 KiB at %llu failed", (unsigned long long)off);
    for (size_t s = 0; s < sizeof buf; s += QCOW2_CRYPTO_SECTOR)
        if (!memcmp(buf + s, orig + s, QCOW2_CRYPTO_SECTOR))
            FAIL("sector %zu at %llu unchanged by encryption", s / 512,
                 (unsigned long long)off);
    if (qcow2_crypto_decrypt(c, off, buf, sizeof buf) < 0)
        FAIL("decrypt of 4 KiB at %llu failed", (unsigned long long)off);
    if (memcmp(buf, orig, sizeof buf))
        FAIL("decrypt(encrypt(x)) differs from x at %llu",
             (unsigned long long)off);
    qcow2_crypto_free(c);
    return 0;
}
