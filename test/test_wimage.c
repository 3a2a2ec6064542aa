/* test_wimage.c — the weights image writer and reader: a streamed round trip through a
 * temporary directory, per-tensor CRCs, determinism, the manifest hash shared with plan.bin,
 * writer failures (short tensors, extra bytes, a file size limit, bad tensor lists, abort)
 * that must leave neither the image nor its temporary file behind, and damage to the
 * metadata: header, table and payload bytes and every truncation. The semantic rules, one at
 * a time, are in test_wtrules.c. */
#include <errno.h>
#include <signal.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <unistd.h>

#include "plan/crc.h"
#include "test/fix_wimage.h"
#include "test/test.h"
#include "weights/wimage.h"

static char *dir;

static void paths(const char *name, char *path, char *tmp)
{
    snprintf(path, 256, "%s/%s", dir, name);
    snprintf(tmp, 260, "%s/%s.tmp", dir, name);
}

static void test_round_trip(void)
{
    struct fix_wt f;
    struct wt_view v;
    char err[FMT_ERR_LEN], path[256], tmp[260];
    size_t len;
    fix_wt_init(&f);
    uint8_t *buf = fix_wt_file(&f, dir, "a.qwt", 1, &len);
    paths("a.qwt", path, tmp);
    CHECK(!fix_exists(tmp), "writer: no temporary file left after close");
    uint64_t prefix = wt_prefix_size(buf, len);
    CHECK(wt_prefix_size(buf, 64) == 64 + 4 * FMT_SECTION_SIZE && prefix == WT_DATA_ALIGN &&
              wt_prefix_size(buf, 63) == 0,
          "wt_prefix_size: table end from the header alone, DATA offset %llu from the table",
          (unsigned long long)prefix);
    enum fmt_status st = wt_read(&v, buf, (size_t)prefix, len, err);
    CHECK(st == FMT_OK, "wt_read accepts the metadata prefix (%s)", st ? err : "ok");
    CHECK(v.data_offset == WT_DATA_ALIGN && v.num_tensors == FIX_WT_N &&
              v.data_size == 12800 + 256 + 256 + 12800 + 256 + 512 &&
              v.data_offset + v.data_size == len && v.cfg.data_bytes == v.data_size,
          "layout: DATA at 4096, each tensor padded to 256 bytes, %llu bytes",
          (unsigned long long)v.data_size);
    struct wt_config want = f.cfg;
    want.data_bytes = v.data_size;
    CHECK(memcmp(&v.cfg, &want, sizeof want) == 0, "round trip: config equal");
    int fields = 1, data = 1, pad = 1, found = 1;
    uint64_t next = 0;
    for (uint32_t i = 0; i < v.num_tensors; i++) {
        struct wt_tensor t;
        wt_get_tensor(&v, i, &t);
        const struct wt_tensor_desc *d = &f.d[i];
        fields &= strcmp(wt_name(&v, &t), d->name) == 0 && t.dtype == d->dtype &&
                  t.layout == d->layout && t.ndim == d->ndim && t.size == d->size &&
                  memcmp(t.shape, d->shape, sizeof t.shape) == 0 && t.offset == next;
        const uint8_t *p = buf + v.data_offset + t.offset;
        for (uint64_t j = 0; j < t.size; j++)
            data &= p[j] == fix_wt_byte(1, i, j);
        data &= wt_tensor_crc_ok(&v, i, p, t.size);
        next = (t.offset + t.size + 255) / 256 * 256;
        for (uint64_t j = t.offset + t.size; j < next; j++)
            pad &= buf[v.data_offset + j] == 0;
        found &= wt_find(&v, d->name) == i;
    }
    CHECK(fields, "round trip: every tensor's name, dtype, layout, shape, size and offset");
    CHECK(data, "round trip: every tensor's bytes, written in chunks, match and pass their CRC");
    CHECK(pad, "padding between tensors is zero");
    CHECK(found && wt_find(&v, "model.missing") == -1 && wt_find(&v, "") == -1,
          "wt_find: each name at its index, -1 for an absent one");
    struct wt_tensor t0;
    wt_get_tensor(&v, 0, &t0);
    uint8_t *bad = malloc(t0.size);
    memcpy(bad, buf + v.data_offset, t0.size);
    bad[100] ^= 1;
    CHECK(!wt_tensor_crc_ok(&v, 0, bad, t0.size) &&
              !wt_tensor_crc_ok(&v, 0, buf + v.data_offset, t0.size - 1) &&
              !wt_tensor_crc_ok(&v, FIX_WT_N, buf, 0),
          "wt_tensor_crc_ok: refuses a flipped byte, a short buffer, a bad index");
    st = wt_read(&v, buf, len, len, err);
    CHECK(st == FMT_OK, "wt_read accepts the whole file as one buffer too (%s)", st ? err : "ok");
    free(bad);
    free(buf);
}

static void test_determinism(void)
{
    struct fix_wt f;
    size_t la, lb;
    fix_wt_init(&f);
    uint8_t *a = fix_wt_file(&f, dir, "d1.qwt", 3, &la);
    uint8_t *b = fix_wt_file(&f, dir, "d2.qwt", 3, &lb);
    CHECK(la == lb && memcmp(a, b, la) == 0, "determinism: two writes give identical %zu bytes", la);
    free(a);
    free(b);
}

static void test_manifest(void)
{
    struct fix_wt f;
    struct wt_view v;
    struct plan_weight w[FIX_WT_N];
    char strings[1024], err[FMT_ERR_LEN];
    size_t len, pos = 0;
    fix_wt_init(&f);
    uint8_t *buf = fix_wt_file(&f, dir, "m.qwt", 4, &len);
    if (wt_read(&v, buf, len, len, err) != FMT_OK)
        exit(1);
    for (uint32_t i = 0; i < FIX_WT_N; i++) {
        const struct wt_tensor_desc *d = &f.d[i];
        w[i] = (struct plan_weight){(uint32_t)pos, d->dtype, d->layout, d->group_size, d->ndim, 0,
                                    {d->shape[0], d->shape[1], d->shape[2], d->shape[3]}, d->size};
        memcpy(strings + pos, d->name, strlen(d->name) + 1);
        pos += strlen(d->name) + 1;
    }
    uint64_t h = wt_manifest_hash(&v);
    CHECK(h == wt_manifest_hash_plan(strings, w, FIX_WT_N) && h != FNV64_INIT,
          "manifest hash: image and plan manifests agree (%016llx)", (unsigned long long)h);
    w[3].shape[1] = 65;
    uint64_t h2 = wt_manifest_hash_plan(strings, w, FIX_WT_N);
    w[3].shape[1] = 64;
    strings[w[2].name] = 'M';
    uint64_t h3 = wt_manifest_hash_plan(strings, w, FIX_WT_N);
    CHECK(h2 != h && h3 != h && wt_manifest_hash_plan(strings, w, FIX_WT_N - 1) != h3,
          "manifest hash: one shape, one name or one tensor less changes it");
    free(buf);
}

static void test_short_and_long(void)
{
    struct fix_wt f;
    char err[FMT_ERR_LEN], path[256], tmp[260];
    fix_wt_init(&f);
    paths("short.qwt", path, tmp);
    uint64_t total = 0;
    for (int i = 0; i < FIX_WT_N; i++)
        total += f.d[i].size;
    struct wt_writer *w = fix_wt_stream(&f, path, 5, total - 1, err);
    CHECK(w && fix_exists(tmp) && !fix_exists(path), "writer: data goes to the temporary file");
    enum fmt_status st = wt_writer_close(w, err);
    CHECK(st == FMT_ERR_INVALID && strstr(err, "tensor 'ids' has 479 of its 480 bytes") &&
              !fix_exists(path) && !fix_exists(tmp),
          "one byte short: close names the tensor, leaves no file: %s", err);
    w = fix_wt_stream(&f, path, 5, 12800 + 132 + 256, err);
    st = wt_writer_close(w, err);
    CHECK(st == FMT_ERR_INVALID && strstr(err, "tensor 'lm_head.weight' has 0 of its 12800") &&
              !fix_exists(path) && !fix_exists(tmp),
          "three tensors written: close names the fourth: %s", err);
    w = fix_wt_stream(&f, path, 5, UINT64_MAX, err);
    uint8_t extra[4] = {0};
    st = wt_writer_write(w, extra, sizeof extra, err);
    CHECK(st == FMT_ERR_INVALID && strstr(err, "4 bytes past the end of the last tensor"),
          "bytes past the last tensor are refused: %s", err);
    wt_writer_abort(w);
    CHECK(!fix_exists(path) && !fix_exists(tmp), "abort removes the temporary file");
}

static void test_file_size_limit(void)
{
    struct fix_wt f;
    struct rlimit old, lim;
    char err[FMT_ERR_LEN], path[256], tmp[260];
    fix_wt_init(&f);
    paths("big.qwt", path, tmp);
    getrlimit(RLIMIT_FSIZE, &old);
    lim = old;
    lim.rlim_cur = 16384; /* the prefix fits, the data does not */
    signal(SIGXFSZ, SIG_IGN);
    setrlimit(RLIMIT_FSIZE, &lim);
    struct wt_writer *w = fix_wt_stream(&f, path, 6, UINT64_MAX, err);
    char first[FMT_ERR_LEN];
    snprintf(first, sizeof first, "%s", err);
    enum fmt_status st = wt_writer_close(w, err);
    setrlimit(RLIMIT_FSIZE, &old);
    CHECK(strstr(first, tmp) && strstr(first, strerror(EFBIG)),
          "EFBIG is reported with the path and the reason: %s", first);
    CHECK(st == FMT_ERR_IO && !fix_exists(path) && !fix_exists(tmp),
          "after EFBIG close fails and neither the image nor its temporary file exists: %s", err);
}

static void test_open_errors(void)
{
    struct fix_wt f;
    char err[FMT_ERR_LEN], path[256], tmp[260];
    fix_wt_init(&f);
    struct wt_writer *w = wt_writer_open("/nonexistent-dir/x.qwt", &f.cfg, f.d, FIX_WT_N, err);
    CHECK(!w && strstr(err, "cannot create /nonexistent-dir/x.qwt.tmp") && strstr(err, strerror(ENOENT)),
          "open in a missing directory: %s", err);
    paths("bad.qwt", path, tmp);
    f.d[2].size = 255;
    w = wt_writer_open(path, &f.cfg, f.d, FIX_WT_N, err);
    CHECK(!w && strstr(err, "tensor 2 'model.norm.weight': size 255 is inconsistent") &&
              !fix_exists(tmp),
          "a size that does not match its shape is refused at open: %s", err);
    fix_wt_init(&f);
    f.d[4].name = "model.norm.weight";
    w = wt_writer_open(path, &f.cfg, f.d, FIX_WT_N, err);
    CHECK(!w && strstr(err, "'model.norm.weight': duplicate name"),
          "a duplicate name is refused at open: %s", err);
    fix_wt_init(&f);
    f.d[0].name = "";
    w = wt_writer_open(path, &f.cfg, f.d, FIX_WT_N, err);
    CHECK(!w && strstr(err, "tensor 0: name is empty"), "an empty name is refused at open: %s", err);
    fix_wt_init(&f);
    f.cfg.quant = 7;
    w = wt_writer_open(path, &f.cfg, f.d, FIX_WT_N, err);
    CHECK(!w && strstr(err, "unknown quant 7"), "a bad config is refused at open: %s", err);
    fix_wt_init(&f);
    w = wt_writer_open(path, &f.cfg, f.d, 0, err);
    CHECK(w && wt_writer_close(w, err) == FMT_OK && fix_exists(path),
          "an image without tensors is valid");
}

static enum fmt_status read_copy(const uint8_t *buf, size_t len, uint64_t file_size, char *err)
{
    struct wt_view v;
    uint8_t *copy = malloc(len ? len : 1); /* exact size: ASan sees any read past len */
    memcpy(copy, buf, len);
    enum fmt_status st = wt_read(&v, copy, len, file_size, err);
    free(copy);
    return st;
}

static void test_damage(void)
{
    struct fix_wt f;
    struct wt_view v;
    char err[FMT_ERR_LEN];
    size_t len;
    fix_wt_init(&f);
    uint8_t *buf = fix_wt_file(&f, dir, "dmg.qwt", 7, &len);
    if (wt_read(&v, buf, WT_DATA_ALIGN, len, err) != FMT_OK)
        exit(1);
    size_t meta_end = 0, bad = SIZE_MAX;
    for (uint32_t i = 0; i < v.f.nsec; i++)
        if (!(v.f.sec[i].flags & FMT_SEC_STREAMED) && v.f.sec[i].offset + v.f.sec[i].size > meta_end)
            meta_end = (size_t)(v.f.sec[i].offset + v.f.sec[i].size);
    uint8_t *c = malloc(WT_DATA_ALIGN);
    for (size_t i = 0; i < meta_end && bad == SIZE_MAX; i++) {
        memcpy(c, buf, WT_DATA_ALIGN);
        c[i] ^= (uint8_t)(0x80u >> (i % 8));
        if (read_copy(c, WT_DATA_ALIGN, len, err) == FMT_OK)
            bad = i;
    }
    CHECK(bad == SIZE_MAX, "every byte of header, table and metadata sections flipped is refused");
    unsigned long long seed = 8;
    int ok = 1, trials = 0;
    for (int t = 0; t < 300; t++) {
        const struct fmt_section *s = &v.f.sec[t % 3];
        memcpy(c, buf, WT_DATA_ALIGN);
        c[s->offset + test_rand(&seed) % s->size] ^= (uint8_t)(1 + test_rand(&seed) % 255);
        ok &= read_copy(c, WT_DATA_ALIGN, len, err) == FMT_ERR_SECTION_CRC;
        trials++;
    }
    CHECK(ok, "random damage in CONFIG, STRINGS, TENSORS: CRC mismatch in %d trials", trials);
    ok = 1;
    for (size_t n = 0; n < WT_DATA_ALIGN; n++)
        ok &= read_copy(buf, n, len, err) == (n < meta_end ? FMT_ERR_TRUNCATED : FMT_OK);
    CHECK(ok, "prefix reads: truncated below %zu bytes, accepted from there to 4096", meta_end);
    ok = 1;
    for (size_t n = 0; n < len; n++)
        ok &= read_copy(buf, n, n, err) == FMT_ERR_TRUNCATED;
    CHECK(ok, "every truncation of the file 0..%zu is reported as truncated", len - 1);
    free(c);
    free(buf);
}

int main(void)
{
    dir = fix_tmpdir();
    test_round_trip();
    test_determinism();
    test_manifest();
    test_short_and_long();
    test_file_size_limit();
    test_open_errors();
    test_damage();
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    if (system(cmd) != 0)
        printf("note: could not remove %s\n", dir);
    return test_done();
}
