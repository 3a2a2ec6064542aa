/* mkcorpus.c — write seed inputs for the fuzz targets.
 *
 *   mkcorpus DIR
 *
 * writes DIR/plan/ (valid plans for fuzz_plan), DIR/wimage/ (a weights image's metadata
 * prefix and a whole small image for fuzz_wimage), and copies the .json files of test/data/config into
 * DIR/config/ and DIR/json/ for the config and JSON parser targets (skipped with a note if
 * that folder is absent). Run it from the repository root.
 *
 * Plan and image seeds start with the fuzz targets' control byte (see test/fuzz/fuzz_plan.c):
 * 0x01 (recompute CRCs) for most, 0x00 for one of each so the CRC checks are fuzzed too.
 * Seeds are small, valid and cover every record kind, so the fuzzer starts deep inside the
 * semantic checks instead of having to discover the container by itself. */
#include <dirent.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "plan/planfile.h"
#include "weights/wimage.h"

static int make_dir(const char *path)
{
    if (mkdir(path, 0755) != 0 && errno != EEXIST) {
        fprintf(stderr, "mkcorpus: cannot create %s: %s\n", path, strerror(errno));
        return -1;
    }
    return 0;
}

/* Write ctl followed by buf[0..n) to dir/name. */
static int write_seed(const char *dir, const char *name, int ctl, const void *buf, size_t n)
{
    char path[8192];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    FILE *f = fopen(path, "wb");
    if (!f) {
        fprintf(stderr, "mkcorpus: cannot create %s: %s\n", path, strerror(errno));
        return -1;
    }
    int ok = (ctl < 0 || fputc(ctl, f) != EOF) && fwrite(buf, 1, n, f) == n;
    if (fclose(f) != 0 || !ok) {
        fprintf(stderr, "mkcorpus: cannot write %s\n", path);
        return -1;
    }
    return 0;
}

/* ---- plans ------------------------------------------------------------------------------- */

/* Strings: "", "kv", "act", "w.embed", "k_norm", "norm", "clear", "decode", "prefill" */
static const char plan_strings[] = "\0kv\0act\0w.embed\0k_norm\0norm\0clear\0decode\0prefill";
enum { S_KV = 1, S_ACT = 4, S_W = 8, S_K = 16, S_NORM = 23, S_CLEAR = 28, S_DEC = 34, S_PRE = 41 };

/* A plan with one region per kind, buffers, a weight, kernel images for the archs given,
 * one kernel op and (if full) one op of every runtime kind, and decode and prefill
 * schedules. Returns the file (malloc'd) or NULL. */
static uint8_t *seed_plan(int full, size_t *len)
{
    static uint8_t image_data[600], params[176];
    for (size_t i = 0; i < sizeof image_data; i++)
        image_data[i] = (uint8_t)(i * 37 + 11);
    const struct plan_region regions[] = {
        {S_KV, PLAN_REGION_PERSISTENT, 0, 4096},
        {0, PLAN_REGION_WORKSPACE, 4096, 4096},
        {S_ACT, PLAN_REGION_OVERLAY, 8192, 8192},
    };
    const struct plan_buffer buffers[] = {
        {S_KV, 0, PLAN_ALL_SCHEDULES, PLAN_DTYPE_BF16, 0, 4096, 0, 0xFFFFFFFFu},
        {S_ACT, 2, 0, PLAN_DTYPE_F32, 8192, 1024, 0, 1},
    };
    const struct plan_weight weights[] = {
        {S_W, PLAN_DTYPE_BF16, 0, 0, 2, 0, {16, 8, 0, 0}, 256},
    };
    const struct plan_image images[] = {
        {80, PLAN_IMAGE_CUBIN, 0, 300},
        {90, PLAN_IMAGE_FATBIN, 320, 280},
    };
    const struct plan_kernel kernels[] = {{S_K, 32}};
    const struct plan_op ops[] = {
        {S_NORM, PLAN_OP_KERNEL, 0, {4, 1, 1}, {128, 1, 1}, 0, 0, 32, 0, 2, 0, 0, 512, 1024},
        {S_CLEAR, PLAN_OP_MEMSET, PLAN_NO_KERNEL, {1, 1, 1}, {1, 1, 1}, 0, 32, 24, 2, 1, 0, 0, 64, 0},
        {0, PLAN_OP_GEMM, PLAN_NO_KERNEL, {1, 1, 1}, {1, 1, 1}, 0, 64, 72, 3, 3, 0, 0, 4096, 4096},
        {0, PLAN_OP_COPY, PLAN_NO_KERNEL, {1, 1, 1}, {1, 1, 1}, 0, 144, 24, 6, 2, 0, 0, 64, 0},
    };
    const struct plan_reloc relocs[] = {
        {0, PLAN_BASE_ARENA, 0, 0, 8192}, {8, PLAN_BASE_WEIGHT, 0, 0, 0},
        {0, PLAN_BASE_ARENA, 0, 0, 4096},
        {0, PLAN_BASE_WEIGHT, 0, 0, 0}, {8, PLAN_BASE_ARENA, 0, 0, 8192}, {16, PLAN_BASE_RING, 0, 0, 0},
        {0, PLAN_BASE_ARENA, 0, 0, 0}, {8, PLAN_BASE_ARENA, 0, 0, 8192},
    };
    const struct plan_schedule schedules[] = {
        {S_DEC, PLAN_SCHED_DECODE, 1, 0, full ? 4 : 2, 0, 2048, 0},
        {S_PRE, PLAN_SCHED_PREFILL, 32, 0, 2, 0, 2048, 0},
    };
    struct plan_content c = {
        .strings = plan_strings, .strings_size = sizeof plan_strings,
        .regions = regions, .num_regions = 3, .buffers = buffers, .num_buffers = 2,
        .weights = weights, .num_weights = 1, .images = images, .num_images = full ? 2 : 1,
        .image_data = image_data, .image_data_size = sizeof image_data,
        .kernels = kernels, .num_kernels = 1, .params = params, .params_size = sizeof params,
        .relocs = relocs, .num_relocs = full ? 8 : 3, .schedules = schedules, .num_schedules = 2,
        .ops = ops, .num_ops = full ? 4 : 2,
    };
    model_config_default(&c.id.model);
    c.id.max_seq = 2048;
    c.id.num_buckets = 2;
    c.id.buckets[0] = 32;
    c.id.buckets[1] = 128;
    c.id.quant = full ? PLAN_QUANT_INT4 : PLAN_QUANT_BF16;
    c.id.group_size = full ? 128 : 0;
    c.id.lm_head_quant = PLAN_QUANT_BF16;
    c.id.num_archs = full ? 2 : 1;
    c.id.archs[0] = 80;
    c.id.archs[1] = full ? 90 : 0;
    c.id.arena_bytes = 16384;
    c.id.weights_bytes = 256;
    c.id.manifest_hash = wt_manifest_hash_plan(plan_strings, weights, 1);
    snprintf(c.id.planner_version, sizeof c.id.planner_version, "mkcorpus");
    uint8_t *out;
    char err[FMT_ERR_LEN];
    if (plan_write(&c, &out, len, err) != FMT_OK) {
        fprintf(stderr, "mkcorpus: seed plan refused: %s\n", err);
        return NULL;
    }
    return out;
}

static int write_plans(const char *dir)
{
    size_t n1, n2;
    uint8_t *full = seed_plan(1, &n1), *small = seed_plan(0, &n2);
    int rc = -1;
    if (full && small && !write_seed(dir, "valid.bin", 1, full, n1) &&
        !write_seed(dir, "valid_crc.bin", 0, full, n1) && !write_seed(dir, "small.bin", 1, small, n2))
        rc = 0;
    free(full);
    free(small);
    return rc;
}

/* ---- weights images ------------------------------------------------------------------------ */

static int write_images(const char *dir)
{
    char path[8192], err[FMT_ERR_LEN];
    struct wt_config cfg = {0};
    const struct wt_tensor_desc d[] = {
        {"model.embed_tokens.weight", PLAN_DTYPE_BF16, 0, 0, 2, {16, 8, 0, 0}, 256, 0, 0},
        {"model.norm.weight", PLAN_DTYPE_F32, 0, 0, 1, {8, 0, 0, 0}, 32, 0, 0},
        {"q", PLAN_DTYPE_I4, 0, 0, 3, {3, 3, 3, 0}, 14, 0, 0},
    };
    uint8_t bytes[256];
    model_config_default(&cfg.model);
    cfg.quant = cfg.lm_head_quant = PLAN_QUANT_BF16;
    snprintf(cfg.source, sizeof cfg.source, "mkcorpus");
    snprintf(path, sizeof path, "%s/seed.qwt", dir);
    struct wt_writer *w = wt_writer_open(path, &cfg, d, 3, err);
    for (uint32_t i = 0; w && i < 3; i++) {
        for (uint64_t j = 0; j < d[i].size; j++)
            bytes[j] = (uint8_t)(j * 7 + i);
        if (wt_writer_write(w, bytes, d[i].size, err) != FMT_OK)
            break;
    }
    if (!w || wt_writer_close(w, err) != FMT_OK) {
        fprintf(stderr, "mkcorpus: %s\n", err);
        return -1;
    }
    FILE *f = fopen(path, "rb");
    static uint8_t file[1 << 16];
    size_t n = f ? fread(file, 1, sizeof file, f) : 0;
    if (f)
        fclose(f);
    remove(path);
    uint64_t prefix = wt_prefix_size(file, n);
    if (n == 0 || prefix == 0 || prefix > n) {
        fprintf(stderr, "mkcorpus: cannot read back %s\n", path);
        return -1;
    }
    if (write_seed(dir, "valid.bin", 1, file, (size_t)prefix) ||
        write_seed(dir, "valid_crc.bin", 0, file, (size_t)prefix) ||
        write_seed(dir, "full.bin", 1, file, n))
        return -1;
    return 0;
}

/* ---- configs ----------------------------------------------------------------------------- */

static int copy_file(const char *from, const char *dir, const char *name)
{
    FILE *f = fopen(from, "rb");
    static char buf[1 << 20];
    if (!f)
        return -1;
    size_t n = fread(buf, 1, sizeof buf, f);
    fclose(f);
    return write_seed(dir, name, -1, buf, n);
}

/* Copy every .json file of test/data/config into both config/ and json/. */
static int copy_configs(const char *cfg_dir, const char *json_dir)
{
    const char *src = "test/data/config";
    DIR *d = opendir(src);
    struct dirent *e;
    int copied = 0;
    if (!d) {
        printf("mkcorpus: no %s, config and json seeds skipped\n", src);
        return 0;
    }
    while ((e = readdir(d))) {
        size_t n = strlen(e->d_name);
        char from[4096];
        if (n < 6 || strcmp(e->d_name + n - 5, ".json") != 0)
            continue;
        snprintf(from, sizeof from, "%s/%s", src, e->d_name);
        if (copy_file(from, cfg_dir, e->d_name) || copy_file(from, json_dir, e->d_name)) {
            closedir(d);
            return -1;
        }
        copied++;
    }
    closedir(d);
    printf("mkcorpus: %d config seeds\n", copied);
    return 0;
}

int main(int argc, char **argv)
{
    char plan[4096], wimage[4096], config[4096], json[4096];
    if (argc != 2) {
        fprintf(stderr, "usage: mkcorpus DIR\n");
        return 2;
    }
    snprintf(plan, sizeof plan, "%s/plan", argv[1]);
    snprintf(wimage, sizeof wimage, "%s/wimage", argv[1]);
    snprintf(config, sizeof config, "%s/config", argv[1]);
    snprintf(json, sizeof json, "%s/json", argv[1]);
    if (make_dir(argv[1]) || make_dir(plan) || make_dir(wimage) || make_dir(config) ||
        make_dir(json) || write_plans(plan) || write_images(wimage) || copy_configs(config, json))
        return 1;
    return 0;
}
