/* Claims about the qcow2 encryption module, checked against QEMU:
 *
 * - a LUKS qcow2 image written by qemu-io decrypts to what was written,
 *   for each cipher, mode, IV generator and hash qemu-img offers, with
 *   the host offset as the IV (the guest offset gives garbage);
 * - data we encrypt into the image reads back through qemu-io;
 * - encrypt(decrypt(x)) == x;
 * - a wrong passphrase and corrupted key slot fields are refused, each
 *   with a line that names the cause;
 * - legacy AES images (crypt_method 1) decrypt with the guest offset, and
 *   the cipher matches openssl on a known-answer vector;
 * - a LUKS header we create opens in qemu-io (as a raw LUKS volume) and
 *   with our own open;
 * - one object ciphers correctly from several threads at once.
 *
 * Images are made in a scratch directory with qemu-img and qemu-io; the
 * random data's seed is printed so a failure can be replayed (pass it as
 * the first argument).
 */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "image.h"
#include "io.h"
#include "qcow2/crypto.h"

#define PASS "correct horse"
#define SECRET "--object secret,id=s0,data='" PASS "'"
#define CLUSTER 65536

static char dir[64];
static char last_log[512];
static int failures;
static uint64_t rng_state;

/* The module logs through img_log; keep the last line so tests can check
 * what it said. */
void img_log(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(last_log, sizeof(last_log), fmt, ap);
    va_end(ap);
    fprintf(stderr, "  log: %s\n", last_log);
}

#define CHECK(cond, ...)                                                  \
    do {                                                                  \
        if (!(cond)) {                                                    \
            fprintf(stderr, "FAIL %s:%d: ", __FILE__, __LINE__);          \
            fprintf(stderr, __VA_ARGS__);                                 \
            fputc('\n', stderr);                                          \
            failures++;                                                   \
        }                                                                 \
    } while (0)

static uint8_t rnd8(void)
{
    rng_state ^= rng_state << 13;
    rng_state ^= rng_state >> 7;
    rng_state ^= rng_state << 17;
    return (uint8_t)rng_state;
}

static int run(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* Run a shell command; its exit status. */
static int run(const char *fmt, ...)
{
    char cmd[2048];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(cmd, sizeof(cmd), fmt, ap);
    va_end(ap);
    int st = system(cmd);
    if (st != 0)
        fprintf(stderr, "  command failed (%d): %s\n", st, cmd);
    return st;
}

static uint64_t be64(const uint8_t *p)
{
    uint64_t v = 0;
    for (int i = 0; i < 8; i++)
        v = v << 8 | p[i];
    return v;
}

static uint32_t be32(const uint8_t *p)
{
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 |
           (uint32_t)p[2] << 8 | p[3];
}

/* What the test needs of a qcow2 header. */
struct q2 {
    uint32_t crypt_method;
    uint32_t cluster_bits;
    uint64_t l1_offset;
    uint32_t l1_size;
    uint64_t fde_off;
    uint64_t fde_len;
};

static int q2_read(int fd, struct q2 *q)
{
    uint8_t h[4096];
    if (io_pread_full(fd, h, sizeof(h), 0) < 0 || be32(h) != 0x514649fb)
        return -1;
    memset(q, 0, sizeof(*q));
    uint32_t version = be32(h + 4);
    q->cluster_bits = be32(h + 20);
    q->crypt_method = be32(h + 32);
    q->l1_size = be32(h + 36);
    q->l1_offset = be64(h + 40);
    size_t pos = version >= 3 ? be32(h + 100) : 72;
    while (pos + 8 <= sizeof(h)) {
        uint32_t type = be32(h + pos), len = be32(h + pos + 4);
        if (type == 0)
            break;
        if (type == QCOW2_CRYPTO_EXT_FDE && len == 16 &&
            pos + 24 <= sizeof(h)) {
            q->fde_off = be64(h + pos + 8);
            q->fde_len = be64(h + pos + 16);
        }
        pos += 8 + (len + 7) / 8 * 8;
    }
    return 0;
}

/* Host offset of the cluster holding guest offset g, 0 if unallocated. */
static uint64_t q2_host(int fd, const struct q2 *q, uint64_t g)
{
    const uint64_t mask = 0x00fffffffffffe00ull;
    uint64_t csize = 1ull << q->cluster_bits;
    uint64_t l2_entries = csize / 8;
    uint64_t ci = g >> q->cluster_bits;
    uint64_t l1i = ci / l2_entries;
    uint8_t e[8];

    if (l1i >= q->l1_size ||
        io_pread_full(fd, e, 8, q->l1_offset + 8 * l1i) < 0)
        return 0;
    uint64_t l2 = be64(e) & mask;
    if (!l2 || io_pread_full(fd, e, 8, l2 + 8 * (ci % l2_entries)) < 0)
        return 0;
    return be64(e) & mask;
}

/* The path of a file in the scratch directory, in a buffer of
 * PATH_LEN bytes. */
#define PATH_LEN 128
static char *img_path(char *out, const char *name)
{
    snprintf(out, PATH_LEN, "%s/%s", dir, name);
    return out;
}

static bool all_bytes(const uint8_t *p, size_t len, uint8_t v)
{
    for (size_t i = 0; i < len; i++)
        if (p[i] != v)
            return false;
    return true;
}

static int open_luks_file(const char *path, const char *pass,
                          struct qcow2_crypto **c)
{
    int fd = open(path, O_RDONLY);
    struct q2 q;
    if (fd < 0 || q2_read(fd, &q) < 0) {
        if (fd >= 0)
            close(fd);
        return -EIO;
    }
    int r = qcow2_crypto_open_luks(path, fd, q.fde_off, q.fde_len, pass,
                                   strlen(pass), 0, c);
    close(fd);
    return r;
}

/* Make a LUKS qcow2 image with extra -o options; the exit status.
 * qemu-img times PBKDF2 to choose its iterations, and that measurement
 * sometimes fails on a busy machine ("Unable to get accurate CPU usage"),
 * so try a few times. */
static int make_luks(const char *path, const char *opts)
{
    int st = -1;
    for (int i = 0; i < 5 && st != 0; i++) {
        unlink(path);
        st = run("qemu-img create -q -f qcow2 " SECRET " -o "
                 "encrypt.format=luks,encrypt.key-secret=s0,"
                 "encrypt.iter-time=10%s%s %s 16M", *opts ? "," : "", opts,
                 path);
    }
    return st;
}

/* Check one LUKS configuration qemu-img can create (opts: extra -o). */
static void test_luks_config(const char *label, const char *opts)
{
    char path[PATH_LEN], raw[PATH_LEN];
    char io[512];
    img_path(path, "luks.qcow2");
    fprintf(stderr, "luks %s\n", label);

    if (make_luks(path, opts) != 0) {
        CHECK(0, "%s: qemu-img create", label);
        return;
    }
    snprintf(io, sizeof(io), "qemu-io " SECRET " --image-opts "
             "driver=qcow2,file.filename=%s,encrypt.key-secret=s0", path);
    /* One full cluster, and a partial one whose rest qemu fills with
     * encrypted zeros. */
    CHECK(run("%s -c 'write -P 0xab 1M 64k' -c 'write -P 0x5c 5246976 8k' "
              ">/dev/null", io) == 0, "%s: qemu-io write", label);

    int fd = open(path, O_RDWR);
    struct q2 q;
    CHECK(fd >= 0 && q2_read(fd, &q) == 0, "%s: read header", label);
    if (fd < 0)
        return;
    CHECK(q.crypt_method == 2, "%s: crypt_method %u", label,
          q.crypt_method);
    CHECK(q.fde_off != 0 && q.fde_len != 0, "%s: no FDE extension",
          label);

    struct qcow2_crypto *c = NULL;
    int r = qcow2_crypto_open_luks(path, fd, q.fde_off, q.fde_len, PASS,
                                   strlen(PASS), 0, &c);
    CHECK(r == 0, "%s: open_luks: %d", label, r);
    if (r < 0) {
        close(fd);
        return;
    }
    CHECK(qcow2_crypto_iv_is_host(c), "%s: LUKS IV is host", label);

    uint8_t *buf = malloc(CLUSTER), *orig = malloc(CLUSTER);
    uint64_t h1 = q2_host(fd, &q, 1 << 20);
    CHECK(h1 != 0 && h1 != 1 << 20, "%s: host 0x%llx", label,
          (unsigned long long)h1);

    /* Host offset as IV: the plaintext comes back. */
    io_pread_full(fd, orig, CLUSTER, h1);
    memcpy(buf, orig, CLUSTER);
    CHECK(qcow2_crypto_decrypt(c, h1, buf, CLUSTER) == 0, "decrypt");
    CHECK(all_bytes(buf, CLUSTER, 0xab), "%s: cluster at 1M", label);

    /* encrypt(decrypt(x)) == x */
    CHECK(qcow2_crypto_encrypt(c, h1, buf, CLUSTER) == 0, "encrypt");
    CHECK(memcmp(buf, orig, CLUSTER) == 0, "%s: round trip", label);

    /* Guest offset as IV: garbage (the IV choice matters). */
    memcpy(buf, orig, CLUSTER);
    qcow2_crypto_decrypt(c, 1 << 20, buf, CLUSTER);
    CHECK(!all_bytes(buf, QCOW2_CRYPTO_SECTOR, 0xab),
          "%s: guest offset decrypted too", label);

    /* Sector numbering inside a cluster. */
    uint64_t h5 = q2_host(fd, &q, 5 << 20);
    io_pread_full(fd, buf, CLUSTER, h5);
    qcow2_crypto_decrypt(c, h5, buf, CLUSTER);
    CHECK(h5 != 0 && all_bytes(buf, 4096, 0) &&
          all_bytes(buf + 4096, 8192, 0x5c) &&
          all_bytes(buf + 12288, CLUSTER - 12288, 0),
          "%s: cluster at 5M", label);

    /* Random data we encrypt at an odd sector must read back in QEMU. */
    for (size_t i = 0; i < 4096; i++)
        orig[i] = rnd8();
    memcpy(buf, orig, 4096);
    CHECK(qcow2_crypto_encrypt(c, h1 + 3 * 512, buf, 4096) == 0, "enc");
    io_pwrite_full(fd, buf, 4096, h1 + 3 * 512);
    img_path(raw, "plain.raw");
    CHECK(run("qemu-img convert " SECRET " --image-opts "
              "driver=qcow2,file.filename=%s,encrypt.key-secret=s0 "
              "-O raw %s", path, raw) == 0, "%s: qemu-img convert", label);
    int rfd = open(raw, O_RDONLY);
    memset(buf, 0, 4096);
    CHECK(rfd >= 0 && io_pread_full(rfd, buf, 4096, (1 << 20) + 1536) == 0 &&
          memcmp(buf, orig, 4096) == 0,
          "%s: qemu reads what we encrypted", label);
    if (rfd >= 0)
        close(rfd);
    unlink(raw);

    /* Misaligned calls are refused, not rounded. */
    CHECK(qcow2_crypto_decrypt(c, h1 + 1, buf, 512) == -EINVAL,
          "misaligned offset");
    CHECK(qcow2_crypto_decrypt(c, h1, buf, 100) == -EINVAL,
          "misaligned length");

    qcow2_crypto_free(c);
    free(buf);
    free(orig);
    close(fd);
}

/* Poke size bytes of value v (big-endian) at off into a copy of src and
 * expect open to fail with err and a log line containing word. */
static void expect_refused(const char *src, uint64_t off, int size,
                           uint64_t v, int err, const char *word)
{
    char copy[PATH_LEN];
    img_path(copy, "corrupt.qcow2");
    CHECK(run("cp %s %s", src, copy) == 0, "copy");
    int fd = open(copy, O_RDWR);
    uint8_t b[8];
    for (int i = 0; i < size; i++)
        b[i] = (uint8_t)(v >> (8 * (size - 1 - i)));
    io_pwrite_full(fd, b, size, off);
    close(fd);

    struct qcow2_crypto *c = NULL;
    last_log[0] = '\0';
    int r = open_luks_file(copy, PASS, &c);
    CHECK(r == err, "poke 0x%llx: got %d, want %d",
          (unsigned long long)off, r, err);
    CHECK(strstr(last_log, word) != NULL, "poke 0x%llx: log '%s' lacks "
          "'%s'", (unsigned long long)off, last_log, word);
    qcow2_crypto_free(c);
}

static void test_luks_refusals(void)
{
    char path[PATH_LEN], copy[PATH_LEN];
    img_path(path, "ref.qcow2");
    img_path(copy, "corrupt.qcow2");
    fprintf(stderr, "luks refusals\n");

    struct qcow2_crypto *c = NULL;
    last_log[0] = '\0';
    CHECK(open_luks_file(path, "wrong horse", &c) == -EACCES,
          "wrong passphrase accepted");
    CHECK(strstr(last_log, "no key slot matches the passphrase"),
          "wrong passphrase log: %s", last_log);
    qcow2_crypto_free(c);
    c = NULL;
    /* A prefix of the right passphrase is a different passphrase. */
    CHECK(open_luks_file(path, "correct", &c) == -EACCES, "prefix");
    qcow2_crypto_free(c);

    int fd = open(path, O_RDONLY);
    struct q2 q;
    q2_read(fd, &q);
    close(fd);
    uint64_t h = q.fde_off;
    uint64_t slot0 = h + 208;

    expect_refused(path, slot0 + 44, 4, 3999, -EINVAL, "stripes");
    expect_refused(path, slot0 + 40, 4, 0x7fffffff, -EINVAL, "key_offset");
    expect_refused(path, slot0 + 40, 4, 0, -EINVAL, "key_offset");
    expect_refused(path, slot0 + 4, 4, 0, -EINVAL, "iterations");
    expect_refused(path, slot0 + 4, 4, 0xffffffff, -EINVAL, "iterations");
    expect_refused(path, slot0, 4, 0x12345678, -EINVAL, "active");
    expect_refused(path, h + 164, 4, 0, -EINVAL, "mk_digest_iter");
    expect_refused(path, h + 108, 4, 1000, -EINVAL, "key_bytes");
    expect_refused(path, h + 108, 4, 40, -ENOTSUP, "key size");
    expect_refused(path, h + 6, 2, 2, -ENOTSUP, "version");
    expect_refused(path, h, 1, 'X', -EINVAL, "magic");
    expect_refused(path, h + 8, 8, 0x62616e616e610000ull, -ENOTSUP,
                   "unsupported cipher");
    expect_refused(path, h + 40, 8, 0x6374722d706c6169ull, -ENOTSUP,
                   "cipher mode");
    expect_refused(path, h + 72, 8, 0x6d64350000000000ull, -ENOTSUP,
                   "hash");
    /* An unterminated cipher name. */
    CHECK(run("cp %s %s", path, copy) == 0, "copy");
    fd = open(copy, O_RDWR);
    uint8_t junk[32];
    memset(junk, 'a', sizeof(junk));
    io_pwrite_full(fd, junk, sizeof(junk), h + 8);
    close(fd);
    last_log[0] = '\0';
    CHECK(open_luks_file(copy, PASS, &c) == -EINVAL, "unterminated name");
    CHECK(strstr(last_log, "terminated"), "log: %s", last_log);

    /* The header area given by the extension bounds the key material. */
    fd = open(path, O_RDONLY);
    CHECK(qcow2_crypto_open_luks(path, fd, q.fde_off, 100000, PASS,
                                 strlen(PASS), 0, &c) == -EINVAL,
          "short header area accepted");
    CHECK(qcow2_crypto_open_luks(path, fd, UINT64_MAX - 10, 4096, PASS,
                                 strlen(PASS), 0, &c) == -EINVAL,
          "wrapping header area accepted");
    /* A budget below the first slot's cost refuses it before any PBKDF2. */
    last_log[0] = '\0';
    CHECK(qcow2_crypto_open_luks(path, fd, q.fde_off, q.fde_len, PASS,
                                 strlen(PASS), 1, &c) == -EPERM,
          "iteration budget not enforced");
    CHECK(strstr(last_log, "--luks-max-iterations"), "log: %s", last_log);
    close(fd);
}

/* Legacy AES: qemu-img still makes such images; data uses the guest
 * offset as IV. */
static void test_aes(void)
{
    char path[PATH_LEN], plain[PATH_LEN], ours[PATH_LEN], theirs[PATH_LEN];
    img_path(path, "aes.qcow2");
    img_path(plain, "plain");
    img_path(ours, "ours");
    img_path(theirs, "theirs");
    fprintf(stderr, "legacy aes\n");
    unlink(path);
    if (run("qemu-img create -q -f qcow2 " SECRET " -o encrypt.format=aes,"
            "encrypt.key-secret=s0 %s 16M", path) != 0 ||
        run("qemu-io " SECRET " --image-opts driver=qcow2,"
            "file.filename=%s,encrypt.key-secret=s0 "
            "-c 'write -P 0x3c 2M 64k' >/dev/null", path) != 0) {
        CHECK(0, "legacy AES image");
        return;
    }
    int fd = open(path, O_RDONLY);
    struct q2 q;
    q2_read(fd, &q);
    CHECK(q.crypt_method == 1, "crypt_method %u", q.crypt_method);
    uint64_t host = q2_host(fd, &q, 2 << 20);
    CHECK(host != 0 && host != 2 << 20, "AES host 0x%llx",
          (unsigned long long)host);

    struct qcow2_crypto *c = NULL;
    CHECK(qcow2_crypto_open_aes(PASS, strlen(PASS), &c) == 0, "open_aes");
    CHECK(!qcow2_crypto_iv_is_host(c), "AES IV is guest");
    uint8_t *buf = malloc(CLUSTER);
    io_pread_full(fd, buf, CLUSTER, host);
    qcow2_crypto_decrypt(c, 2 << 20, buf, CLUSTER);
    CHECK(all_bytes(buf, CLUSTER, 0x3c), "AES cluster at 2M");
    qcow2_crypto_free(c);

    /* Known answer from openssl: key "correct horse" zero padded, sector
     * 0x123456789 so the IV's high bytes matter. */
    c = NULL;
    qcow2_crypto_open_aes(PASS, strlen(PASS), &c);
    memset(buf, 0, 512);
    for (int i = 0; i < 512; i++)
        buf[i] = (uint8_t)i;
    FILE *f = fopen(plain, "w");
    fwrite(buf, 1, 512, f);
    fclose(f);
    uint64_t sector = 0x123456789ull;
    qcow2_crypto_encrypt(c, sector * 512, buf, 512);
    f = fopen(ours, "w");
    fwrite(buf, 1, 512, f);
    fclose(f);
    int st = run("openssl enc -aes-128-cbc -nopad -K "
                 "636f727265637420686f727365000000 -iv "
                 "89674523010000000000000000000000 -in %s -out %s",
                 plain, theirs);
    if (st == 0)
        CHECK(run("cmp -s %s %s", ours, theirs) == 0,
              "AES differs from openssl");
    else
        fprintf(stderr, "  openssl not usable, known answer skipped\n");
    qcow2_crypto_free(c);
    free(buf);
    close(fd);
}

/* Concurrent use of one object: each thread ciphers its own buffers at
 * the same offsets and must get what one thread alone got. */
#define THREADS 4
#define ROUNDS 64

struct thread_arg {
    const struct qcow2_crypto *c;
    const uint8_t *plain;           /* ROUNDS sectors of plaintext */
    const uint8_t *expect;          /* their ciphertext */
    int bad;
};

static void *thread_main(void *opaque)
{
    struct thread_arg *a = opaque;
    uint8_t buf[QCOW2_CRYPTO_SECTOR];

    for (int rep = 0; rep < 50; rep++) {
        for (int i = 0; i < ROUNDS; i++) {
            const uint8_t *p = a->plain + i * QCOW2_CRYPTO_SECTOR;
            uint64_t off = (uint64_t)i * 7 * QCOW2_CRYPTO_SECTOR;
            memcpy(buf, p, sizeof(buf));
            qcow2_crypto_encrypt(a->c, off, buf, sizeof(buf));
            if (memcmp(buf, a->expect + i * QCOW2_CRYPTO_SECTOR,
                       sizeof(buf)) != 0)
                a->bad++;
            qcow2_crypto_decrypt(a->c, off, buf, sizeof(buf));
            if (memcmp(buf, p, sizeof(buf)) != 0)
                a->bad++;
        }
    }
    return NULL;
}

static void check_threads(const char *label, const struct qcow2_crypto *c)
{
    size_t len = ROUNDS * QCOW2_CRYPTO_SECTOR;
    uint8_t *plain = malloc(len), *expect = malloc(len);
    for (size_t i = 0; i < len; i++)
        plain[i] = expect[i] = rnd8();
    for (int i = 0; i < ROUNDS; i++)
        qcow2_crypto_encrypt(c, (uint64_t)i * 7 * QCOW2_CRYPTO_SECTOR,
                             expect + i * QCOW2_CRYPTO_SECTOR,
                             QCOW2_CRYPTO_SECTOR);

    pthread_t tid[THREADS];
    struct thread_arg arg[THREADS];
    for (int t = 0; t < THREADS; t++) {
        arg[t] = (struct thread_arg){ c, plain, expect, 0 };
        pthread_create(&tid[t], NULL, thread_main, &arg[t]);
    }
    for (int t = 0; t < THREADS; t++) {
        pthread_join(tid[t], NULL);
        CHECK(arg[t].bad == 0, "%s: thread %d: %d wrong sectors", label, t,
              arg[t].bad);
    }
    free(plain);
    free(expect);
}

/* A header we create must open in QEMU and in our own open. */
static void test_create(const char *label,
                        const struct qcow2_crypto_luks_params *p)
{
    fprintf(stderr, "create %s\n", label);
    uint8_t *hdr = NULL;
    size_t len = 0;
    struct qcow2_crypto *c = NULL;
    int r = qcow2_crypto_create_luks(p, PASS, strlen(PASS), &hdr, &len, &c);
    CHECK(r == 0, "%s: create: %d", label, r);
    if (r < 0)
        return;
    CHECK(qcow2_crypto_iv_is_host(c), "created LUKS IV is host");
    check_threads(label, c);

    /* As a raw LUKS volume: header, then payload at len, whose IV is the
     * offset inside the payload. */
    char path[PATH_LEN];
    img_path(path, "raw.luks");
    int fd = open(path, O_RDWR | O_CREAT | O_TRUNC, 0644);
    io_pwrite_full(fd, hdr, len, 0);
    uint8_t *buf = malloc(CLUSTER);
    memset(buf, 0x77, CLUSTER);
    qcow2_crypto_encrypt(c, 0, buf, CLUSTER);
    io_pwrite_full(fd, buf, CLUSTER, len);
    close(fd);
    CHECK(run("qemu-io " SECRET " --image-opts driver=luks,"
              "file.filename=%s,key-secret=s0 -c 'read -P 0x77 0 64k' "
              ">/dev/null", path) == 0, "%s: qemu-io reads it", label);

    /* Our own open of the created header unlocks the same key. */
    struct qcow2_crypto *c2 = NULL;
    fd = open(path, O_RDONLY);
    r = qcow2_crypto_open_luks(path, fd, 0, len, PASS, strlen(PASS), 0,
                               &c2);
    CHECK(r == 0, "%s: reopen: %d", label, r);
    if (r == 0) {
        io_pread_full(fd, buf, CLUSTER, len);
        qcow2_crypto_decrypt(c2, 0, buf, CLUSTER);
        CHECK(all_bytes(buf, CLUSTER, 0x77), "%s: reopen decrypts", label);
    }
    close(fd);
    qcow2_crypto_free(c2);
    qcow2_crypto_free(c);
    free(buf);
    free(hdr);
}

int main(int argc, char **argv)
{
    if (system("command -v qemu-img >/dev/null && "
               "command -v qemu-io >/dev/null") != 0) {
        fprintf(stderr, "SKIP: qemu-img or qemu-io not installed\n");
        return 77;
    }
    rng_state = argc > 1 ? strtoull(argv[1], NULL, 0)
                         : (uint64_t)time(NULL) * 2654435761u;
    rng_state |= 1;
    fprintf(stderr, "seed %llu\n", (unsigned long long)rng_state);

    const char *tmp = getenv("TMPDIR");
    snprintf(dir, sizeof(dir), "%s/ds-crypto.XXXXXX", tmp ? tmp : "/tmp");
    if (!mkdtemp(dir)) {
        perror("mkdtemp");
        return 1;
    }

    char p1[PATH_LEN], p2[PATH_LEN];
    test_luks_config("aes-256-xts-plain64 sha256 (default)", "");
    /* The refusal tests poke copies of that image. */
    run("cp %s %s", img_path(p1, "luks.qcow2"), img_path(p2, "ref.qcow2"));
    test_luks_config("aes-128-xts-plain64",
                     "encrypt.cipher-alg=aes-128");
    test_luks_config("aes-256-cbc-essiv:sha256",
                     "encrypt.cipher-mode=cbc,encrypt.ivgen-alg=essiv,"
                     "encrypt.ivgen-hash-alg=sha256");
    test_luks_config("aes-128-cbc-essiv:sha256 sha1",
                     "encrypt.cipher-alg=aes-128,encrypt.cipher-mode=cbc,"
                     "encrypt.ivgen-alg=essiv,encrypt.ivgen-hash-alg=sha256,"
                     "encrypt.hash-alg=sha1");
    test_luks_config("aes-128-xts-plain sha512",
                     "encrypt.cipher-alg=aes-128,encrypt.ivgen-alg=plain,"
                     "encrypt.hash-alg=sha512");
    test_luks_config("serpent-256-xts-plain64",
                     "encrypt.cipher-alg=serpent-256");
    test_luks_config("twofish-128-cbc-plain",
                     "encrypt.cipher-alg=twofish-128,"
                     "encrypt.cipher-mode=cbc,encrypt.ivgen-alg=plain");
    test_luks_refusals();
    test_aes();

    struct qcow2_crypto_luks_params p = { .iterations = 1000 };
    test_create("default", &p);
    p = (struct qcow2_crypto_luks_params){
        .cipher_alg = "aes-128", .cipher_mode = "cbc", .ivgen_alg = "essiv",
        .hash_alg = "sha1", .iterations = 1000,
    };
    test_create("aes-128-cbc-essiv sha1", &p);
    p = (struct qcow2_crypto_luks_params){
        .cipher_alg = "twofish-256", .ivgen_alg = "plain",
        .hash_alg = "sha512", .iterations = 1000,
    };
    test_create("twofish-256-xts-plain sha512", &p);

    /* Parameters we cannot honour are refused by name. */
    uint8_t *hdr;
    size_t len;
    struct qcow2_crypto *c;
    p = (struct qcow2_crypto_luks_params){ .cipher_alg = "cast5-128" };
    last_log[0] = '\0';
    CHECK(qcow2_crypto_create_luks(&p, PASS, 4, &hdr, &len, &c) ==
          -ENOTSUP && strstr(last_log, "cipher"), "cast5 accepted");
    p = (struct qcow2_crypto_luks_params){
        .cipher_mode = "cbc", .ivgen_alg = "essiv", .ivgen_hash_alg = "sha1",
    };
    CHECK(qcow2_crypto_create_luks(&p, PASS, 4, &hdr, &len, &c) ==
          -ENOTSUP && strstr(last_log, "ESSIV"), "essiv sha1 accepted");

    run("rm -rf %s", dir);
    if (failures)
        fprintf(stderr, "%d failure(s); seed %llu\n", failures,
                (unsigned long long)rng_state);
    return failures ? 1 : 0;
}
