/* qcow2 sector ciphers: keyed nettle contexts and the per-sector loop.
 *
 * Every encrypted qcow2 sector is 512 bytes ciphered on its own with an
 * IV computed from its sector number: XTS takes the IV as its tweak, CBC
 * as its chaining value, ECB takes none.  The IV generators are the ones
 * dm-crypt named and LUKS records in its cipher mode string: plain (the
 * low 32 bits, little-endian), plain64 (all 64 bits, little-endian) and
 * essiv (plain64 encrypted under a hash of the key).  Legacy qcow2 AES is
 * aes-128-cbc-plain64 keyed by the passphrase itself.
 *
 * The contexts are written only while keying, so a finished object may be
 * used from many threads at once (see crypto.h).
 */
#include <endian.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include <nettle/cbc.h>
#include <nettle/hmac.h>
#include <nettle/pbkdf2.h>
#include <nettle/memxor.h>

#include "crypto-int.h"

/* Every supported cipher has 128-bit blocks, as XTS requires. */
#define BLOCK 16

struct qcow2_crypto {
    bool iv_host;
    enum qcow2_cipher_mode mode;
    enum qcow2_ivgen ivgen;
    const struct nettle_cipher *cipher;
    const struct nettle_cipher *essiv;
    void *enc;                  /* data key, encrypt direction */
    void *dec;                  /* data key, decrypt direction */
    void *twk;                  /* XTS tweak key, always encrypt */
    void *essiv_ctx;            /* ESSIV key H(key), encrypt */
    size_t size;                /* bytes of this allocation, to wipe */
    max_align_t ctx[];          /* the contexts above point in here */
};

static const struct {
    const char *family;
    const struct nettle_cipher *cipher;
} ciphers[] = {
    { "aes", &nettle_aes128 },
    { "aes", &nettle_aes192 },
    { "aes", &nettle_aes256 },
    { "serpent", &nettle_serpent128 },
    { "serpent", &nettle_serpent192 },
    { "serpent", &nettle_serpent256 },
    { "twofish", &nettle_twofish128 },
    { "twofish", &nettle_twofish192 },
    { "twofish", &nettle_twofish256 },
};

static const struct {
    const char *name;
    const struct nettle_hash *hash;
} hashes[] = {
    { "sha1", &nettle_sha1 },
    { "sha224", &nettle_sha224 },
    { "sha256", &nettle_sha256 },
    { "sha384", &nettle_sha384 },
    { "sha512", &nettle_sha512 },
    { "ripemd160", &nettle_ripemd160 },
};

/* Look up a nettle cipher by family and key size. */
const struct nettle_cipher *qcow2_cipher_lookup(const char *family,
                                                size_t key_bytes)
{
    for (size_t i = 0; i < sizeof(ciphers) / sizeof(ciphers[0]); i++) {
        if (strcmp(ciphers[i].family, family) == 0 &&
            ciphers[i].cipher->key_size == key_bytes)
            return ciphers[i].cipher;
    }
    return NULL;
}

/* Look up a nettle hash by its LUKS name. */
const struct nettle_hash *qcow2_hash_lookup(const char *name)
{
    for (size_t i = 0; i < sizeof(hashes) / sizeof(hashes[0]); i++) {
        if (strcmp(hashes[i].name, name) == 0)
            return hashes[i].hash;
    }
    return NULL;
}

static size_t cipher_key_bytes(const struct qcow2_cipher_spec *s)
{
    return s->mode == QCOW2_MODE_XTS ? s->key_bytes / 2 : s->key_bytes;
}

/* Check a cipher spec; sets *why to what is unsupported. */
int qcow2_cipher_spec_check(const struct qcow2_cipher_spec *s,
                            const char **why)
{
    if (s->key_bytes == 0 || s->key_bytes > QCOW2_CRYPTO_MAX_KEY ||
        (s->mode == QCOW2_MODE_XTS && s->key_bytes % 2 != 0)) {
        *why = "key size";
        return -ENOTSUP;
    }
    if (!qcow2_cipher_lookup(s->family, cipher_key_bytes(s))) {
        *why = "cipher and key size";
        return -ENOTSUP;
    }
    if ((s->mode == QCOW2_MODE_ECB) != (s->ivgen == QCOW2_IVGEN_NONE)) {
        *why = "IV generator for this mode";
        return -ENOTSUP;
    }
    if (s->ivgen == QCOW2_IVGEN_ESSIV &&
        (!s->ivgen_hash ||
         !qcow2_cipher_lookup(s->family, s->ivgen_hash->digest_size))) {
        /* ESSIV keys the same cipher with the hash: sha1's 20 bytes fit
         * no AES key. */
        *why = "ESSIV hash for this cipher";
        return -ENOTSUP;
    }
    return 0;
}

/* Key a cipher object for a spec. */
int qcow2_crypto_new(const struct qcow2_cipher_spec *s, const uint8_t *key,
                     bool iv_host, struct qcow2_crypto **out)
{
    const char *why;
    int r = qcow2_cipher_spec_check(s, &why);
    if (r < 0)
        return r;

    const struct nettle_cipher *cipher =
        qcow2_cipher_lookup(s->family, cipher_key_bytes(s));
    const struct nettle_cipher *essiv = NULL;
    if (s->ivgen == QCOW2_IVGEN_ESSIV)
        essiv = qcow2_cipher_lookup(s->family, s->ivgen_hash->digest_size);

    /* Round each context up so the next one stays aligned. */
    size_t align = sizeof(max_align_t);
    size_t csz = (cipher->context_size + align - 1) / align * align;
    size_t esz = essiv ? (essiv->context_size + align - 1) / align * align
                       : 0;
    size_t size = sizeof(struct qcow2_crypto) + 3 * csz + esz;
    struct qcow2_crypto *c = calloc(1, size);
    if (!c)
        return -ENOMEM;

    c->iv_host = iv_host;
    c->mode = s->mode;
    c->ivgen = s->ivgen;
    c->cipher = cipher;
    c->essiv = essiv;
    c->size = size;
    uint8_t *p = (uint8_t *)c->ctx;
    c->enc = p;
    c->dec = p + csz;
    c->twk = p + 2 * csz;
    c->essiv_ctx = essiv ? p + 3 * csz : NULL;

    cipher->set_encrypt_key(c->enc, key);
    cipher->set_decrypt_key(c->dec, key);
    if (s->mode == QCOW2_MODE_XTS)
        cipher->set_encrypt_key(c->twk, key + s->key_bytes / 2);
    if (essiv) {
        uint8_t salt[QCOW2_CRYPTO_MAX_DIGEST];
        void *hctx = malloc(s->ivgen_hash->context_size);
        if (!hctx) {
            qcow2_crypto_free(c);
            return -ENOMEM;
        }
        s->ivgen_hash->init(hctx);
        s->ivgen_hash->update(hctx, s->key_bytes, key);
        s->ivgen_hash->digest(hctx, s->ivgen_hash->digest_size, salt);
        explicit_bzero(hctx, s->ivgen_hash->context_size);
        free(hctx);
        essiv->set_encrypt_key(c->essiv_ctx, salt);
        explicit_bzero(salt, sizeof(salt));
    }
    *out = c;
    return 0;
}

/* Open legacy qcow2 AES-CBC encryption keyed by the passphrase. */
int qcow2_crypto_open_aes(const char *passphrase, size_t pass_len,
                          struct qcow2_crypto **out)
{
    const struct qcow2_cipher_spec spec = {
        .family = "aes",
        .mode = QCOW2_MODE_CBC,
        .ivgen = QCOW2_IVGEN_PLAIN64,
        .key_bytes = 16,
    };
    uint8_t key[16] = { 0 };

    /* The format stores no check value: a wrong passphrase shows only as
     * garbage data, exactly as with QEMU. */
    memcpy(key, passphrase, pass_len < sizeof(key) ? pass_len : sizeof(key));
    int r = qcow2_crypto_new(&spec, key, false, out);
    explicit_bzero(key, sizeof(key));
    return r;
}

/* Whether the IV offset is the host offset. */
bool qcow2_crypto_iv_is_host(const struct qcow2_crypto *c)
{
    return c->iv_host;
}

static void make_iv(const struct qcow2_crypto *c, uint64_t sector,
                    uint8_t iv[BLOCK])
{
    memset(iv, 0, BLOCK);
    if (c->ivgen == QCOW2_IVGEN_PLAIN)
        sector &= 0xffffffffu;
    for (int i = 0; i < 8; i++)
        iv[i] = (uint8_t)(sector >> (8 * i));
    if (c->ivgen == QCOW2_IVGEN_ESSIV)
        c->essiv->encrypt(c->essiv_ctx, BLOCK, iv, iv);
}

/* XTS over one sector of whole blocks.  nettle's xts_*_message feeds the
 * cipher one block at a time; computing the sector's tweaks first lets
 * the cipher take all 32 blocks in one call, which AES-NI pipelines:
 * several times faster. */
static void xts_sector(const struct qcow2_crypto *c, const uint8_t *iv,
                       uint8_t *buf, size_t len, bool encrypt)
{
    /* Tweak i is the first one times x^i in GF(2^128); each 128-bit value
     * is two little-endian halves. */
    uint64_t t[QCOW2_CRYPTO_SECTOR / 8];
    size_t words = len / 8;

    c->cipher->encrypt(c->twk, BLOCK, (uint8_t *)t, iv);
    uint64_t lo = le64toh(t[0]), hi = le64toh(t[1]);
    for (size_t i = 2; i < words; i += 2) {
        uint64_t carry = hi >> 63;
        hi = hi << 1 | lo >> 63;
        lo = lo << 1 ^ (carry * 0x87);
        t[i] = htole64(lo);
        t[i + 1] = htole64(hi);
    }
    memxor(buf, t, len);
    if (encrypt)
        c->cipher->encrypt(c->enc, len, buf, buf);
    else
        c->cipher->decrypt(c->dec, len, buf, buf);
    memxor(buf, t, len);
}

/* Run the cipher over whole and last partial sectors. */
void qcow2_crypto_run(const struct qcow2_crypto *c, uint64_t sector,
                      uint8_t *buf, size_t len, bool encrypt)
{
    const struct nettle_cipher *ci = c->cipher;
    uint8_t iv[BLOCK];

    while (len > 0) {
        size_t n = len < QCOW2_CRYPTO_SECTOR ? len : QCOW2_CRYPTO_SECTOR;
        make_iv(c, sector, iv);
        switch (c->mode) {
        case QCOW2_MODE_XTS:
            xts_sector(c, iv, buf, n, encrypt);
            break;
        case QCOW2_MODE_CBC:
            if (encrypt)
                cbc_encrypt(c->enc, ci->encrypt, BLOCK, iv, n, buf, buf);
            else
                cbc_decrypt(c->dec, ci->decrypt, BLOCK, iv, n, buf, buf);
            break;
        case QCOW2_MODE_ECB:
            if (encrypt)
                ci->encrypt(c->enc, n, buf, buf);
            else
                ci->decrypt(c->dec, n, buf, buf);
            break;
        }
        buf += n;
        len -= n;
        sector++;
    }
}

static int crypt_checked(const struct qcow2_crypto *c, uint64_t offset,
                         uint8_t *buf, size_t len, bool encrypt)
{
    if (offset % QCOW2_CRYPTO_SECTOR != 0 || len % QCOW2_CRYPTO_SECTOR != 0)
        return -EINVAL;
    qcow2_crypto_run(c, offset / QCOW2_CRYPTO_SECTOR, buf, len, encrypt);
    return 0;
}

/* Decrypt whole sectors in place. */
int qcow2_crypto_decrypt(const struct qcow2_crypto *c, uint64_t offset,
                         uint8_t *buf, size_t len)
{
    return crypt_checked(c, offset, buf, len, false);
}

/* Encrypt whole sectors in place. */
int qcow2_crypto_encrypt(const struct qcow2_crypto *c, uint64_t offset,
                         uint8_t *buf, size_t len)
{
    return crypt_checked(c, offset, buf, len, true);
}

/* Wipe and free a cipher object. */
void qcow2_crypto_free(struct qcow2_crypto *c)
{
    if (!c)
        return;
    explicit_bzero(c, c->size);
    free(c);
}

/* nettle's generic HMAC split over three hash contexts, wrapped so that
 * nettle's PBKDF2 can drive it through one context pointer. */
struct hmac_any {
    const struct nettle_hash *h;
    uint8_t *outer;
    uint8_t *inner;
    uint8_t *state;
};

static void hmac_any_update(void *ctx, size_t len, const uint8_t *data)
{
    struct hmac_any *m = ctx;
    hmac_update(m->state, m->h, len, data);
}

static void hmac_any_digest(void *ctx, size_t len, uint8_t *out)
{
    struct hmac_any *m = ctx;
    hmac_digest(m->outer, m->inner, m->state, m->h, len, out);
}

/* Derive out_len bytes with PBKDF2-HMAC over hash h. */
int qcow2_pbkdf2(const struct nettle_hash *h, const uint8_t *pass,
                 size_t pass_len, const uint8_t *salt, size_t salt_len,
                 uint32_t iterations, uint8_t *out, size_t out_len)
{
    size_t csz = h->context_size;
    uint8_t *mem = malloc(3 * csz);
    if (!mem)
        return -ENOMEM;

    struct hmac_any m = {
        .h = h, .outer = mem, .inner = mem + csz, .state = mem + 2 * csz,
    };
    hmac_set_key(m.outer, m.inner, m.state, h, pass_len, pass);
    pbkdf2(&m, hmac_any_update, hmac_any_digest, h->digest_size,
           iterations, salt_len, salt, out_len, out);
    explicit_bzero(mem, 3 * csz);
    free(mem);
    return 0;
}
