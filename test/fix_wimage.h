/* fix_wimage.h — a small weights image for the weights image tests.
 *
 * Six tensors of every plain dtype family, shapes of rank 1 to 4, sizes that do and do not
 * fill their 256-byte slot, and one 250-byte name (the rule tests join it with the next
 * name to make one that is too long). Tensor bytes are a function of (seed, tensor, byte),
 * so a reader can check them without keeping a copy. */
#ifndef FIX_WIMAGE_H
#define FIX_WIMAGE_H

#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "test/test.h"
#include "weights/wimage.h"

#define FIX_WT_N 6

struct fix_wt {
    struct wt_config cfg;
    struct wt_tensor_desc d[FIX_WT_N];
    char long_name[251];
};

static inline void fix_wt_init(struct fix_wt *f)
{
    memset(f, 0, sizeof *f);
    model_config_default(&f->cfg.model);
    f->cfg.quant = PLAN_QUANT_BF16;
    f->cfg.lm_head_quant = PLAN_QUANT_BF16;
    strcpy(f->cfg.source, "fixture");
    memset(f->long_name, 'e', 250);
    memcpy(f->long_name, "model.layers.0.mlp.", 19);
    const struct wt_tensor_desc d[FIX_WT_N] = {
        {"model.embed_tokens.weight", PLAN_DTYPE_BF16, 0, 0, 2, {100, 64, 0, 0}, 12800, 0, 0},
        {f->long_name, PLAN_DTYPE_F32, 0, 0, 1, {33, 0, 0, 0}, 132, 0, 0},
        {"model.norm.weight", PLAN_DTYPE_F32, 0, 0, 1, {64, 0, 0, 0}, 256, 0, 0},
        {"lm_head.weight", PLAN_DTYPE_BF16, 0, 0, 2, {100, 64, 0, 0}, 12800, 0, 0},
        {"q4", PLAN_DTYPE_I4, 0, 0, 2, {3, 5, 0, 0}, 8, 0, 0},
        {"ids", PLAN_DTYPE_I32, 0, 0, 4, {2, 3, 4, 5}, 480, 0, 0},
    };
    memcpy(f->d, d, sizeof d);
}

/* Byte j of tensor i. */
static inline uint8_t fix_wt_byte(unsigned long long seed, uint32_t i, uint64_t j)
{
    unsigned long long s = seed * 1000003ull + i * 7919ull + j;
    return (uint8_t)test_rand(&s);
}

/* Write the image to path in chunks of random sizes; stop after `upto` bytes in total
 * (UINT64_MAX for all). Returns the writer still open, or NULL with err set. */
static inline struct wt_writer *fix_wt_stream(const struct fix_wt *f, const char *path,
                                       unsigned long long seed, uint64_t upto, char *err)
{
    struct wt_writer *w = wt_writer_open(path, &f->cfg, f->d, FIX_WT_N, err);
    unsigned long long rs = seed;
    uint8_t chunk[3000];
    uint64_t total = 0;
    for (uint32_t i = 0; w && i < FIX_WT_N; i++) {
        for (uint64_t j = 0; j < f->d[i].size && total < upto;) {
            uint64_t n = 1 + test_rand(&rs) % sizeof chunk;
            n = n < f->d[i].size - j ? n : f->d[i].size - j;
            n = n < upto - total ? n : upto - total;
            for (uint64_t k = 0; k < n; k++)
                chunk[k] = fix_wt_byte(seed, i, j + k);
            if (wt_writer_write(w, chunk, n, err) != FMT_OK)
                return w; /* the caller sees err and closes */
            j += n;
            total += n;
        }
    }
    return w;
}

/* A fresh temporary directory for the test's files. */
static inline char *fix_tmpdir(void)
{
    static char dir[64];
    strcpy(dir, "/tmp/qwt_test.XXXXXX");
    if (!mkdtemp(dir)) {
        printf("FAIL cannot create a temporary directory\n");
        exit(1);
    }
    return dir;
}

static inline int fix_exists(const char *path)
{
    return access(path, F_OK) == 0;
}

/* Write the whole image to dir/name and read it back into memory, or stop the test. */
static inline uint8_t *fix_wt_file(const struct fix_wt *f, const char *dir, const char *name,
                            unsigned long long seed, size_t *len)
{
    char path[256], err[FMT_ERR_LEN];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    struct wt_writer *w = fix_wt_stream(f, path, seed, UINT64_MAX, err);
    if (!w || wt_writer_close(w, err) != FMT_OK) {
        printf("FAIL the fixture image does not write: %s\n", err);
        exit(1);
    }
    return (uint8_t *)test_read_file(path, len);
}

#endif
