/* LUKS1 headers inside qcow2 images (crypt_method 2): parse, unlock,
 * create.
 *
 * qcow2 keeps a complete LUKS1 header, key material included, in clusters
 * of its own that the full disk encryption header extension locates; every
 * offset in the LUKS header counts from the start of that area, and the
 * LUKS payload offset means nothing inside qcow2 (the data lives in the
 * image's clusters, with the host offset as the IV sector).
 *
 * Unlocking a key slot: PBKDF2 of the passphrase with the slot's salt and
 * iterations gives the slot key; the slot's key material (the master key
 * split into `stripes` anti-forensic stripes) is decrypted with the slot
 * key under the header's own cipher mode, sectors numbered from 0; the
 * stripes merge back into a candidate master key, which is right when
 * PBKDF2 of it with the header's digest salt and iterations gives the
 * header's 20-byte master key digest.
 *
 * Every header field is checked before use: the strings are terminated,
 * the key size fits the cipher, iteration counts are bounded (a huge count
 * would stall the open for hours), each slot's material lies inside the
 * area the qcow2 extension gave and past the header.
 *
 * The key derivation one open may run is bounded too: trying a slot costs
 * its iterations plus the digest's, and before each slot is tried the
 * total so far plus that cost is checked against the caller's budget
 * (img_open_args.luks_max_iter), so a forged header is refused before any
 * PBKDF2 that would take the open past the budget, and never costs more
 * than the budget in all.
 */
#include <endian.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>

#include "crypto-int.h"
#include "image.h"
#include "io.h"

#define LUKS_MAGIC "LUKS\xba\xbe"
#define LUKS_MAGIC_LEN 6
#define LUKS_SLOTS 8
#define LUKS_DIGEST 20
#define LUKS_SALT 32
#define LUKS_STRIPES 4000
#define LUKS_SLOT_ACTIVE 0x00ac71f3u
#define LUKS_SLOT_INACTIVE 0x0000deadu
#define LUKS_SECTOR 512
/* Where key material starts and how each slot's area is aligned. */
#define LUKS_ALIGN 4096

/* An upper bound on PBKDF2 rounds: far above what any tool calibrates on
 * today's machines (a few million), low enough that a forged header
 * cannot stall an open for more than about a minute per slot. */
#define LUKS_MAX_ITER (1u << 26)

/* All integers big-endian. */
struct luks_slot {
    uint32_t active;            /* LUKS_SLOT_ACTIVE or LUKS_SLOT_INACTIVE */
    uint32_t iterations;        /* PBKDF2 rounds for the slot key, >= 1 */
    uint8_t salt[LUKS_SALT];
    uint32_t key_offset;        /* material start, 512-byte sectors from
                                 * the header start */
    uint32_t stripes;           /* anti-forensic stripes: 4000 */
} __attribute__((packed));
_Static_assert(sizeof(struct luks_slot) == 48, "LUKS key slot size");

struct luks_header {
    uint8_t magic[LUKS_MAGIC_LEN];  /* "LUKS\xba\xbe" */
    uint16_t version;               /* 1 */
    char cipher_name[32];           /* "aes", NUL-terminated */
    char cipher_mode[32];           /* "xts-plain64", "cbc-essiv:sha256" */
    char hash_spec[32];             /* PBKDF2 and AF hash: "sha256" */
    uint32_t payload_offset;        /* sectors; unused inside qcow2 */
    uint32_t key_bytes;             /* master key size */
    uint8_t mk_digest[LUKS_DIGEST]; /* PBKDF2(master key), 20 bytes */
    uint8_t mk_digest_salt[LUKS_SALT];
    uint32_t mk_digest_iter;        /* >= 1 */
    char uuid[40];                  /* text, NUL-terminated */
    struct luks_slot slots[LUKS_SLOTS];
} __attribute__((packed));
_Static_assert(sizeof(struct luks_header) == 592, "LUKS header size");

/* The decoded header: host byte order, strings terminated. */
struct luks_info {
    struct qcow2_cipher_spec spec;
    const struct nettle_hash *hash;
    struct luks_header raw;         /* integers converted in place */
};

/* Parse "xts-plain64" / "cbc-essiv:sha256" / "ecb" into s; 0 or -ENOTSUP
 * with *what naming the part that failed. */
static int parse_mode(const char *text, struct qcow2_cipher_spec *s,
                      const char **what)
{
    char buf[32];
    snprintf(buf, sizeof(buf), "%s", text);
    char *iv = strchr(buf, '-');
    if (iv)
        *iv++ = '\0';

    *what = "cipher mode";
    if (strcmp(buf, "xts") == 0)
        s->mode = QCOW2_MODE_XTS;
    else if (strcmp(buf, "cbc") == 0)
        s->mode = QCOW2_MODE_CBC;
    else if (strcmp(buf, "ecb") == 0)
        s->mode = QCOW2_MODE_ECB;
    else
        return -ENOTSUP;

    *what = "IV generator";
    s->ivgen_hash = NULL;
    if (!iv) {
        s->ivgen = QCOW2_IVGEN_NONE;
        return s->mode == QCOW2_MODE_ECB ? 0 : -ENOTSUP;
    }
    char *hash = strchr(iv, ':');
    if (hash)
        *hash++ = '\0';
    if (strcmp(iv, "plain") == 0)
        s->ivgen = QCOW2_IVGEN_PLAIN;
    else if (strcmp(iv, "plain64") == 0)
        s->ivgen = QCOW2_IVGEN_PLAIN64;
    else if (strcmp(iv, "essiv") == 0)
        s->ivgen = QCOW2_IVGEN_ESSIV;
    else
        return -ENOTSUP;
    if ((s->ivgen == QCOW2_IVGEN_ESSIV) != (hash != NULL))
        return -ENOTSUP;
    if (hash) {
        *what = "ESSIV hash";
        s->ivgen_hash = qcow2_hash_lookup(hash);
        if (!s->ivgen_hash)
            return -ENOTSUP;
    }
    return 0;
}

static bool is_terminated(const char *s, size_t size)
{
    return memchr(s, '\0', size) != NULL;
}

static uint64_t round_up(uint64_t v, uint64_t a)
{
    return (v + a - 1) / a * a;
}

/* Decode and check the header in *raw (as read from disk). */
static int decode_header(const char *name, uint64_t hdr_len,
                         struct luks_info *li)
{
    struct luks_header *h = &li->raw;

    if (memcmp(h->magic, LUKS_MAGIC, LUKS_MAGIC_LEN) != 0) {
        img_log("qcow2: %s: LUKS header: bad magic", name);
        return -EINVAL;
    }
    h->version = be16toh(h->version);
    if (h->version != 1) {
        img_log("qcow2: %s: LUKS header: unsupported version %u", name,
                h->version);
        return -ENOTSUP;
    }
    if (!is_terminated(h->cipher_name, sizeof(h->cipher_name)) ||
        !is_terminated(h->cipher_mode, sizeof(h->cipher_mode)) ||
        !is_terminated(h->hash_spec, sizeof(h->hash_spec))) {
        img_log("qcow2: %s: LUKS header: cipher or hash name not "
                "terminated", name);
        return -EINVAL;
    }
    h->payload_offset = be32toh(h->payload_offset);
    h->key_bytes = be32toh(h->key_bytes);
    h->mk_digest_iter = be32toh(h->mk_digest_iter);

    li->hash = qcow2_hash_lookup(h->hash_spec);
    if (!li->hash) {
        img_log("qcow2: %s: LUKS header: unsupported hash '%.31s'", name,
                h->hash_spec);
        return -ENOTSUP;
    }

    const char *what;
    li->spec.family = h->cipher_name;
    int r = parse_mode(h->cipher_mode, &li->spec, &what);
    if (r < 0) {
        img_log("qcow2: %s: LUKS header: unsupported %s in '%.31s'", name,
                what, h->cipher_mode);
        return r;
    }
    if (h->key_bytes == 0 || h->key_bytes > QCOW2_CRYPTO_MAX_KEY) {
        img_log("qcow2: %s: LUKS header: key_bytes %u out of range", name,
                h->key_bytes);
        return -EINVAL;
    }
    li->spec.key_bytes = h->key_bytes;
    r = qcow2_cipher_spec_check(&li->spec, &what);
    if (r < 0) {
        img_log("qcow2: %s: LUKS header: unsupported %s: %.31s-%.31s with "
                "%u key bytes", name, what, h->cipher_name, h->cipher_mode,
                h->key_bytes);
        return r;
    }
    if (h->mk_digest_iter == 0 || h->mk_digest_iter > LUKS_MAX_ITER) {
        img_log("qcow2: %s: LUKS header: mk_digest_iter %u out of range",
                name, h->mk_digest_iter);
        return -EINVAL;
    }

    uint64_t material = (uint64_t)h->key_bytes * LUKS_STRIPES;
    for (int i = 0; i < LUKS_SLOTS; i++) {
        struct luks_slot *s = &h->slots[i];
        s->active = be32toh(s->active);
        s->iterations = be32toh(s->iterations);
        s->key_offset = be32toh(s->key_offset);
        s->stripes = be32toh(s->stripes);
        if (s->active == LUKS_SLOT_INACTIVE)
            continue;
        if (s->active != LUKS_SLOT_ACTIVE) {
            img_log("qcow2: %s: LUKS key slot %d: bad active value 0x%x",
                    name, i, s->active);
            return -EINVAL;
        }
        if (s->iterations == 0 || s->iterations > LUKS_MAX_ITER) {
            img_log("qcow2: %s: LUKS key slot %d: iterations %u out of "
                    "range", name, i, s->iterations);
            return -EINVAL;
        }
        if (s->stripes != LUKS_STRIPES) {
            img_log("qcow2: %s: LUKS key slot %d: stripes %u (must be %u)",
                    name, i, s->stripes, LUKS_STRIPES);
            return -EINVAL;
        }
        uint64_t start = (uint64_t)s->key_offset * LUKS_SECTOR;
        if (start < sizeof(struct luks_header) ||
            start + material > hdr_len) {
            img_log("qcow2: %s: LUKS key slot %d: key_offset %u outside "
                    "the %llu-byte header area", name, i, s->key_offset,
                    (unsigned long long)hdr_len);
            return -EINVAL;
        }
    }
    return 0;
}

/* XOR src into dst. */
static void xor_into(uint8_t *dst, const uint8_t *src, size_t len)
{
    for (size_t i = 0; i < len; i++)
        dst[i] ^= src[i];
}

/* The AF diffusion step: each digest-sized piece of d becomes the hash of
 * its big-endian index followed by itself, the last piece truncated. */
static void af_diffuse(const struct nettle_hash *h, void *hctx, uint8_t *d,
                       size_t len)
{
    uint8_t out[QCOW2_CRYPTO_MAX_DIGEST];
    size_t ds = h->digest_size;

    for (uint32_t i = 0; (size_t)i * ds < len; i++) {
        size_t off = (size_t)i * ds;
        size_t n = len - off < ds ? len - off : ds;
        uint8_t be[4] = {
            (uint8_t)(i >> 24), (uint8_t)(i >> 16), (uint8_t)(i >> 8),
            (uint8_t)i,
        };
        h->init(hctx);
        h->update(hctx, sizeof(be), be);
        h->update(hctx, n, d + off);
        h->digest(hctx, ds, out);
        memcpy(d + off, out, n);
    }
    explicit_bzero(out, sizeof(out));
}

/* Merge stripes (stripes * key_len bytes) into key. */
static int af_merge(const struct nettle_hash *h, const uint8_t *split,
                    size_t key_len, uint32_t stripes, uint8_t *key)
{
    void *hctx = malloc(h->context_size);
    if (!hctx)
        return -ENOMEM;
    memset(key, 0, key_len);
    for (uint32_t i = 0; i + 1 < stripes; i++) {
        xor_into(key, split + (size_t)i * key_len, key_len);
        af_diffuse(h, hctx, key, key_len);
    }
    xor_into(key, split + (size_t)(stripes - 1) * key_len, key_len);
    free(hctx);
    return 0;
}

static int fill_random(void *buf, size_t len)
{
    uint8_t *p = buf;
    while (len > 0) {
        ssize_t n = getrandom(p, len, 0);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            return -errno;
        }
        p += n;
        len -= (size_t)n;
    }
    return 0;
}

/* Split key into stripes: random stripes but the last, which makes the
 * merge come out to key.  split gets stripes * key_len bytes. */
static int af_split(const struct nettle_hash *h, const uint8_t *key,
                    size_t key_len, uint32_t stripes, uint8_t *split)
{
    uint8_t d[QCOW2_CRYPTO_MAX_KEY] = { 0 };
    size_t rand_len = (size_t)(stripes - 1) * key_len;

    int r = fill_random(split, rand_len);
    if (r < 0)
        return r;
    void *hctx = malloc(h->context_size);
    if (!hctx)
        return -ENOMEM;
    for (uint32_t i = 0; i + 1 < stripes; i++) {
        xor_into(d, split + (size_t)i * key_len, key_len);
        af_diffuse(h, hctx, d, key_len);
    }
    uint8_t *last = split + rand_len;
    for (size_t i = 0; i < key_len; i++)
        last[i] = d[i] ^ key[i];
    explicit_bzero(d, sizeof(d));
    free(hctx);
    return 0;
}

/* Whether two byte strings are equal, in time independent of where they
 * differ. */
static bool same_bytes(const uint8_t *a, const uint8_t *b, size_t len)
{
    uint8_t diff = 0;
    for (size_t i = 0; i < len; i++)
        diff |= a[i] ^ b[i];
    return diff == 0;
}

/* Try to unlock slot i: 0 with the master key in mk, 1 when the
 * passphrase does not fit, -errno on failure. */
static int try_slot(const char *name, int fd, uint64_t hdr_off,
                    const struct luks_info *li, int i, const char *pass,
                    size_t pass_len, uint8_t *mk)
{
    const struct luks_header *h = &li->raw;
    const struct luks_slot *s = &h->slots[i];
    size_t key_len = h->key_bytes;
    size_t mat_len = key_len * LUKS_STRIPES;
    uint8_t slot_key[QCOW2_CRYPTO_MAX_KEY];
    uint8_t digest[LUKS_DIGEST];
    struct qcow2_crypto *c = NULL;

    uint8_t *mat = malloc(mat_len);
    if (!mat)
        return -ENOMEM;
    uint64_t off = hdr_off + (uint64_t)s->key_offset * LUKS_SECTOR;
    int r = io_pread_full(fd, mat, mat_len, off);
    if (r < 0) {
        img_log("qcow2: %s: LUKS key slot %d: reading key material at "
                "0x%llx: %s", name, i, (unsigned long long)off,
                strerror(-r));
        goto out_free_mat;
    }

    r = qcow2_pbkdf2(li->hash, (const uint8_t *)pass, pass_len, s->salt,
                     LUKS_SALT, s->iterations, slot_key, key_len);
    if (r < 0)
        goto out_wipe;
    r = qcow2_crypto_new(&li->spec, slot_key, false, &c);
    if (r < 0)
        goto out_wipe;
    qcow2_crypto_run(c, 0, mat, mat_len, false);
    qcow2_crypto_free(c);

    r = af_merge(li->hash, mat, key_len, LUKS_STRIPES, mk);
    if (r < 0)
        goto out_wipe;
    r = qcow2_pbkdf2(li->hash, mk, key_len, h->mk_digest_salt, LUKS_SALT,
                     h->mk_digest_iter, digest, sizeof(digest));
    if (r < 0)
        goto out_wipe;
    r = same_bytes(digest, h->mk_digest, LUKS_DIGEST) ? 0 : 1;

out_wipe:
    explicit_bzero(slot_key, sizeof(slot_key));
    explicit_bzero(mat, mat_len);
out_free_mat:
    free(mat);
    return r;
}

/* Whether trying slot i fits in what is left of the budget: true with
 * *spent grown by its cost, else false with one line logged. */
static bool slot_fits_budget(const char *name, const struct luks_header *h,
                             int i, uint64_t max_iter, uint64_t *spent)
{
    uint64_t cost = (uint64_t)h->slots[i].iterations + h->mk_digest_iter;
    if (*spent + cost <= max_iter) {
        *spent += cost;
        return true;
    }
    img_log("qcow2: %s: LUKS key slot %d: %u PBKDF2 iterations (+%u for "
            "the digest, %llu spent on earlier slots) exceed the limit of "
            "%llu per open (--luks-max-iterations)", name, i,
            h->slots[i].iterations, h->mk_digest_iter,
            (unsigned long long)*spent, (unsigned long long)max_iter);
    return false;
}

/* Open a LUKS1 header stored in a qcow2 image and unlock it. */
int qcow2_crypto_open_luks(const char *name, int fd, uint64_t hdr_off,
                           uint64_t hdr_len, const char *passphrase,
                           size_t pass_len, uint64_t max_iter,
                           struct qcow2_crypto **out)
{
    if (max_iter == 0)
        max_iter = IMG_DEFAULT_LUKS_MAX_ITER;
    uint64_t end;
    if (__builtin_add_overflow(hdr_off, hdr_len, &end) ||
        hdr_len < sizeof(struct luks_header)) {
        img_log("qcow2: %s: LUKS header area 0x%llx+0x%llx is invalid",
                name, (unsigned long long)hdr_off,
                (unsigned long long)hdr_len);
        return -EINVAL;
    }

    uint8_t mk[QCOW2_CRYPTO_MAX_KEY];
    struct luks_info *li = calloc(1, sizeof(*li));
    if (!li)
        return -ENOMEM;
    int r = io_pread_full(fd, &li->raw, sizeof(li->raw), hdr_off);
    if (r < 0) {
        img_log("qcow2: %s: reading LUKS header at 0x%llx: %s", name,
                (unsigned long long)hdr_off, strerror(-r));
        goto out_free;
    }
    r = decode_header(name, hdr_len, li);
    if (r < 0)
        goto out_free;

    if (li->raw.mk_digest_iter > max_iter) {
        img_log("qcow2: %s: LUKS master key digest: %u PBKDF2 iterations "
                "exceed the limit of %llu per open (--luks-max-iterations)",
                name, li->raw.mk_digest_iter, (unsigned long long)max_iter);
        r = -EPERM;
        goto out_free;
    }
    uint64_t spent = 0;
    r = 1;
    for (int i = 0; i < LUKS_SLOTS && r == 1; i++) {
        if (li->raw.slots[i].active != LUKS_SLOT_ACTIVE)
            continue;
        if (!slot_fits_budget(name, &li->raw, i, max_iter, &spent)) {
            r = -EPERM;
            break;
        }
        r = try_slot(name, fd, hdr_off, li, i, passphrase, pass_len, mk);
    }
    if (r == 1) {
        img_log("qcow2: %s: no key slot matches the passphrase", name);
        r = -EACCES;
    } else if (r == 0) {
        r = qcow2_crypto_new(&li->spec, mk, true, out);
    }
    explicit_bzero(mk, sizeof(mk));

out_free:
    explicit_bzero(li, sizeof(*li));
    free(li);
    return r;
}

/* Fill h's cipher fields from creation parameters; 0 or -EINVAL/-ENOTSUP
 * with one line logged. */
static int params_to_header(const struct qcow2_crypto_luks_params *p,
                            struct luks_info *li)
{
    struct luks_header *h = &li->raw;
    const char *alg = p && p->cipher_alg ? p->cipher_alg : "aes-256";
    const char *mode = p && p->cipher_mode ? p->cipher_mode : "xts";
    const char *ivgen = p && p->ivgen_alg ? p->ivgen_alg : "plain64";
    const char *ivhash = p && p->ivgen_hash_alg ? p->ivgen_hash_alg
                                                : "sha256";
    const char *hash = p && p->hash_alg ? p->hash_alg : "sha256";

    /* "aes-256" is family "aes" with a 32-byte key. */
    const char *dash = strrchr(alg, '-');
    char *end = NULL;
    unsigned long bits = dash ? strtoul(dash + 1, &end, 10) : 0;
    if (!dash || dash == alg || (size_t)(dash - alg) >= 16 ||
        end == dash + 1 || *end != '\0' || bits % 8 != 0 ||
        bits > 8 * QCOW2_CRYPTO_MAX_KEY) {
        img_log("qcow2: LUKS: unsupported cipher '%.31s'", alg);
        return -ENOTSUP;
    }
    snprintf(h->cipher_name, sizeof(h->cipher_name), "%.*s",
             (int)(dash - alg), alg);
    size_t key_bytes = bits / 8;
    if (strcmp(mode, "xts") == 0)
        key_bytes *= 2;
    h->key_bytes = (uint32_t)key_bytes;

    if (strcmp(ivgen, "essiv") == 0)
        snprintf(h->cipher_mode, sizeof(h->cipher_mode), "%.8s-%.8s:%.12s",
                 mode, ivgen, ivhash);
    else if (strcmp(mode, "ecb") == 0)
        snprintf(h->cipher_mode, sizeof(h->cipher_mode), "%.8s", mode);
    else
        snprintf(h->cipher_mode, sizeof(h->cipher_mode), "%.8s-%.12s",
                 mode, ivgen);
    snprintf(h->hash_spec, sizeof(h->hash_spec), "%.16s", hash);

    li->hash = qcow2_hash_lookup(h->hash_spec);
    if (!li->hash) {
        img_log("qcow2: LUKS: unsupported hash '%.31s'", hash);
        return -ENOTSUP;
    }
    const char *what;
    li->spec.family = h->cipher_name;
    int r = parse_mode(h->cipher_mode, &li->spec, &what);
    if (r < 0) {
        img_log("qcow2: LUKS: unsupported %s in '%.31s'", what,
                h->cipher_mode);
        return r;
    }
    li->spec.key_bytes = key_bytes;
    r = qcow2_cipher_spec_check(&li->spec, &what);
    if (r < 0) {
        img_log("qcow2: LUKS: unsupported %s: %.31s %.31s", what, alg,
                h->cipher_mode);
        return r;
    }
    return 0;
}

static void format_uuid(char *out, const uint8_t b[16])
{
    snprintf(out, 37,
             "%02x%02x%02x%02x-%02x%02x-%02x%02x-%02x%02x-"
             "%02x%02x%02x%02x%02x%02x",
             b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7], b[8], b[9],
             b[10], b[11], b[12], b[13], b[14], b[15]);
}

/* Write the header's integers big-endian into out, which already holds
 * the rest. */
static void encode_header(const struct luks_header *h,
                          struct luks_header *out)
{
    *out = *h;
    out->version = htobe16(h->version);
    out->payload_offset = htobe32(h->payload_offset);
    out->key_bytes = htobe32(h->key_bytes);
    out->mk_digest_iter = htobe32(h->mk_digest_iter);
    for (int i = 0; i < LUKS_SLOTS; i++) {
        out->slots[i].active = htobe32(h->slots[i].active);
        out->slots[i].iterations = htobe32(h->slots[i].iterations);
        out->slots[i].key_offset = htobe32(h->slots[i].key_offset);
        out->slots[i].stripes = htobe32(h->slots[i].stripes);
    }
}

/* Create a LUKS1 header with key slot 0 unlocked by the passphrase. */
int qcow2_crypto_create_luks(const struct qcow2_crypto_luks_params *p,
                             const char *passphrase, size_t pass_len,
                             uint8_t **hdr, size_t *hdr_len,
                             struct qcow2_crypto **out)
{
    uint32_t iter = p && p->iterations ? p->iterations : 100000;
    if (iter > LUKS_MAX_ITER) {
        img_log("qcow2: LUKS: %u iterations is more than the %u allowed",
                iter, LUKS_MAX_ITER);
        return -EINVAL;
    }
    uint32_t mk_iter = iter / 8;
    if (mk_iter < 1000)
        mk_iter = iter < 1000 ? iter : 1000;

    struct luks_info *li = calloc(1, sizeof(*li));
    if (!li)
        return -ENOMEM;
    struct luks_header *h = &li->raw;
    uint8_t *buf = NULL;
    uint8_t mk[QCOW2_CRYPTO_MAX_KEY];
    uint8_t slot_key[QCOW2_CRYPTO_MAX_KEY];
    uint8_t uuid[16];
    struct qcow2_crypto *c = NULL;
    int r = params_to_header(p, li);
    if (r < 0)
        goto out_free;

    /* Layout: header, then each slot's material in its own aligned
     * area, as qemu-img and cryptsetup lay it out. */
    size_t key_len = h->key_bytes;
    size_t mat_len = key_len * LUKS_STRIPES;
    uint64_t slot_area = round_up(mat_len, LUKS_ALIGN);
    size_t len = LUKS_ALIGN + LUKS_SLOTS * slot_area;

    memcpy(h->magic, LUKS_MAGIC, LUKS_MAGIC_LEN);
    h->version = 1;
    h->payload_offset = (uint32_t)(len / LUKS_SECTOR);
    h->mk_digest_iter = mk_iter;
    for (int i = 0; i < LUKS_SLOTS; i++) {
        h->slots[i].active = LUKS_SLOT_INACTIVE;
        h->slots[i].key_offset =
            (uint32_t)((LUKS_ALIGN + i * slot_area) / LUKS_SECTOR);
        h->slots[i].stripes = LUKS_STRIPES;
    }
    h->slots[0].active = LUKS_SLOT_ACTIVE;
    h->slots[0].iterations = iter;

    r = fill_random(mk, key_len);
    if (r == 0)
        r = fill_random(h->mk_digest_salt, LUKS_SALT);
    if (r == 0)
        r = fill_random(h->slots[0].salt, LUKS_SALT);
    if (r == 0)
        r = fill_random(uuid, sizeof(uuid));
    if (r < 0) {
        img_log("qcow2: LUKS: random source: %s", strerror(-r));
        goto out_wipe;
    }
    uuid[6] = (uint8_t)((uuid[6] & 0x0f) | 0x40);   /* version 4 */
    uuid[8] = (uint8_t)((uuid[8] & 0x3f) | 0x80);   /* RFC 4122 variant */
    format_uuid(h->uuid, uuid);

    r = qcow2_pbkdf2(li->hash, mk, key_len, h->mk_digest_salt, LUKS_SALT,
                     mk_iter, h->mk_digest, LUKS_DIGEST);
    if (r < 0)
        goto out_wipe;

    buf = calloc(1, len);
    if (!buf) {
        r = -ENOMEM;
        goto out_wipe;
    }
    uint8_t *mat = buf + (size_t)h->slots[0].key_offset * LUKS_SECTOR;
    r = af_split(li->hash, mk, key_len, LUKS_STRIPES, mat);
    if (r < 0) {
        img_log("qcow2: LUKS: random source: %s", strerror(-r));
        goto out_free_buf;
    }
    r = qcow2_pbkdf2(li->hash, (const uint8_t *)passphrase, pass_len,
                     h->slots[0].salt, LUKS_SALT, iter, slot_key, key_len);
    if (r < 0)
        goto out_free_buf;
    r = qcow2_crypto_new(&li->spec, slot_key, false, &c);
    if (r < 0)
        goto out_free_buf;
    qcow2_crypto_run(c, 0, mat, mat_len, true);
    qcow2_crypto_free(c);

    r = qcow2_crypto_new(&li->spec, mk, true, out);
    if (r < 0)
        goto out_free_buf;
    encode_header(h, (struct luks_header *)buf);
    *hdr = buf;
    *hdr_len = len;
    buf = NULL;

out_free_buf:
    if (buf) {
        explicit_bzero(buf, len);
        free(buf);
    }
out_wipe:
    explicit_bzero(mk, sizeof(mk));
    explicit_bzero(slot_key, sizeof(slot_key));
out_free:
    explicit_bzero(li, sizeof(*li));
    free(li);
    return r;
}
