/* qcow2 data encryption: the sector ciphers behind crypt_method 1 (legacy
 * AES-CBC) and crypt_method 2 (a LUKS1 header stored inside the image).
 *
 * The qcow2 driver opens one struct qcow2_crypto per image and calls
 * qcow2_crypto_decrypt after reading an encrypted data cluster and
 * qcow2_crypto_encrypt before writing one.  Both work in place on whole
 * 512-byte sectors: every cipher here, LUKS or legacy, numbers its IVs in
 * units of 512 bytes.
 *
 * Which offset drives the IV differs by method, and a wrong choice reads
 * as garbage without any error:
 *   LUKS (crypt_method 2): the HOST offset of the data in the image file,
 *       i.e. the cluster's file offset plus the offset inside the cluster.
 *       A cluster moved by a rewrite must therefore be re-encrypted.
 *   legacy AES (crypt_method 1): the GUEST offset.
 * (Checked against qemu-io, and what the qcow2 spec says: "physical disk
 * sector" for LUKS, "virtual disk sector" for AES.)
 * qcow2_crypto_iv_is_host() tells the caller which one to pass.  Compressed
 * clusters are never encrypted in qcow2, so they need no call.
 *
 * Thread safety: after open, a struct qcow2_crypto holds only keyed cipher
 * contexts that are never written again, so decrypt and encrypt may run
 * concurrently from any number of worker threads on one object.  Open,
 * create and free are not concurrent with anything on the same object.
 */
#ifndef DISKSERVE_QCOW2_CRYPTO_H
#define DISKSERVE_QCOW2_CRYPTO_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* The IV unit of every supported cipher, in bytes. */
#define QCOW2_CRYPTO_SECTOR 512

/* qcow2 header extension that locates the LUKS header (crypt_method 2). */
#define QCOW2_CRYPTO_EXT_FDE 0x0537be77u

struct qcow2_crypto;

/* Open a LUKS1 header (crypt_method 2).  hdr_off and hdr_len are the two
 * fields of the full disk encryption header extension; the LUKS header and
 * its key material are read from fd inside [hdr_off, hdr_off + hdr_len),
 * and every LUKS offset is taken relative to hdr_off.  name labels log
 * lines (the image path).  max_iter bounds the PBKDF2 iterations the open
 * may run, summed over the slots it tries (each slot's own plus the
 * master key digest's); 0 means IMG_DEFAULT_LUKS_MAX_ITER.  Returns
 * -EACCES when no key slot matches the passphrase, -EPERM when the next
 * slot to try would exceed max_iter (checked before its PBKDF2 runs),
 * -ENOTSUP for a cipher, mode or hash we lack, -EINVAL for a malformed
 * header, other -errno for I/O, with one line logged. */
int qcow2_crypto_open_luks(const char *name, int fd, uint64_t hdr_off,
                           uint64_t hdr_len, const char *passphrase,
                           size_t pass_len, uint64_t max_iter,
                           struct qcow2_crypto **out);

/* Open legacy AES-CBC encryption (crypt_method 1): AES-128 keyed by the
 * first 16 bytes of the passphrase, zero padded (the qcow2 spec says 256
 * bits; QEMU has always used 128), IVs plain64.  The format stores no
 * check value, so a wrong passphrase is not detected: data reads as
 * garbage.  Returns 0 or -ENOMEM. */
int qcow2_crypto_open_aes(const char *passphrase, size_t pass_len,
                          struct qcow2_crypto **out);

/* Whether the IV offset is the host (file) offset (LUKS) rather than the
 * guest offset (legacy AES). */
bool qcow2_crypto_iv_is_host(const struct qcow2_crypto *c);

/* Decrypt len bytes of buf in place; offset is the byte offset of buf[0]
 * as qcow2_crypto_iv_is_host says.  offset and len must be multiples of
 * QCOW2_CRYPTO_SECTOR (else -EINVAL). */
int qcow2_crypto_decrypt(const struct qcow2_crypto *c, uint64_t offset,
                         uint8_t *buf, size_t len);

/* Encrypt len bytes of buf in place; same rules as qcow2_crypto_decrypt. */
int qcow2_crypto_encrypt(const struct qcow2_crypto *c, uint64_t offset,
                         uint8_t *buf, size_t len);

/* Free an object from open or create (NULL is fine); wipes the keys. */
void qcow2_crypto_free(struct qcow2_crypto *c);

/* Parameters for a new LUKS header; a NULL string or 0 picks what
 * qemu-img picks by default (shown). */
struct qcow2_crypto_luks_params {
    const char *cipher_alg;     /* "aes-256"; also aes-128, aes-192,
                                 * serpent-*, twofish-* */
    const char *cipher_mode;    /* "xts"; also "cbc" */
    const char *ivgen_alg;      /* "plain64"; also "plain", "essiv" */
    const char *ivgen_hash_alg; /* "sha256" (essiv only) */
    const char *hash_alg;       /* "sha256"; also sha1, sha512, ... */
    uint32_t iterations;        /* PBKDF2 rounds per key slot: 0 = 100000
                                 * (the master key digest uses 1/8) */
};

/* Make a LUKS1 header with a random master key in key slot 0 unlocked by
 * passphrase, for a new image.  *hdr (malloc'd, caller frees) holds
 * *hdr_len bytes for the caller to write at a cluster-aligned offset it
 * allocates (*hdr_len rounded up to whole clusters, the rest zero); the
 * FDE extension then records that offset and *hdr_len itself, as
 * qemu-img does.  *out encrypts the image's data.  Returns 0,
 * -EINVAL/-ENOTSUP for bad parameters (logged), -ENOMEM, or the -errno of
 * the random source. */
int qcow2_crypto_create_luks(const struct qcow2_crypto_luks_params *p,
                             const char *passphrase, size_t pass_len,
                             uint8_t **hdr, size_t *hdr_len,
                             struct qcow2_crypto **out);

#endif /* DISKSERVE_QCOW2_CRYPTO_H */
