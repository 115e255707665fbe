/* Internal interface between the sector cipher (crypto.c) and the LUKS
 * header code (luks.c).  Not for the qcow2 driver: it uses crypto.h.
 *
 * A cipher spec is what a LUKS header's cipher name, cipher mode and key
 * size describe; crypto.c turns a spec plus a key into a keyed struct
 * qcow2_crypto, which luks.c uses twice: once with a key slot's derived
 * key to decrypt the slot's key material, once with the master key for
 * the image data.
 */
#ifndef DISKSERVE_QCOW2_CRYPTO_INT_H
#define DISKSERVE_QCOW2_CRYPTO_INT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <nettle/nettle-meta.h>

#include "crypto.h"

/* Largest key any supported cipher mode takes (XTS with 256-bit keys). */
#define QCOW2_CRYPTO_MAX_KEY 64

/* Largest digest of a supported hash (SHA-512). */
#define QCOW2_CRYPTO_MAX_DIGEST 64

enum qcow2_cipher_mode {
    QCOW2_MODE_ECB,
    QCOW2_MODE_CBC,
    QCOW2_MODE_XTS,
};

enum qcow2_ivgen {
    QCOW2_IVGEN_NONE,           /* ECB only */
    QCOW2_IVGEN_PLAIN,          /* sector number mod 2^32, LE */
    QCOW2_IVGEN_PLAIN64,        /* sector number, LE */
    QCOW2_IVGEN_ESSIV,          /* sector number encrypted with H(key) */
};

struct qcow2_cipher_spec {
    const char *family;         /* "aes", "serpent", "twofish" */
    enum qcow2_cipher_mode mode;
    enum qcow2_ivgen ivgen;
    const struct nettle_hash *ivgen_hash;   /* ESSIV only */
    size_t key_bytes;           /* whole key: both halves for XTS */
};

/* The nettle cipher for a family and a key size (one XTS half), or NULL. */
const struct nettle_cipher *qcow2_cipher_lookup(const char *family,
                                                size_t key_bytes);

/* The nettle hash named as LUKS names it ("sha256"), or NULL. */
const struct nettle_hash *qcow2_hash_lookup(const char *name);

/* Check that a spec can be keyed: returns 0, or -ENOTSUP with *why set to
 * a static phrase naming what is unsupported. */
int qcow2_cipher_spec_check(const struct qcow2_cipher_spec *s,
                            const char **why);

/* Key a new cipher object for spec s (which must pass the check); iv_host
 * is what qcow2_crypto_iv_is_host will answer.  Returns 0, -ENOTSUP or
 * -ENOMEM. */
int qcow2_crypto_new(const struct qcow2_cipher_spec *s, const uint8_t *key,
                     bool iv_host, struct qcow2_crypto **out);

/* Decrypt or encrypt len bytes in place, IV sectors numbered from sector.
 * len must be a multiple of the cipher block; a last partial sector is
 * treated as a short sector (as LUKS key material needs). */
void qcow2_crypto_run(const struct qcow2_crypto *c, uint64_t sector,
                      uint8_t *buf, size_t len, bool encrypt);

/* PBKDF2 with HMAC over hash h; out gets out_len bytes. */
int qcow2_pbkdf2(const struct nettle_hash *h, const uint8_t *pass,
                 size_t pass_len, const uint8_t *salt, size_t salt_len,
                 uint32_t iterations, uint8_t *out, size_t out_len);

#endif /* DISKSERVE_QCOW2_CRYPTO_INT_H */
