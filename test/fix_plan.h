/* fix_plan.h — a small but complete plan for the plan.bin tests.
 *
 * Every section has records and every kind of record appears: three regions, buffers in
 * each (one per schedule, the rest for all schedules), three weights, two kernel images of
 * random bytes (sm_80 cubin, sm_90 fatbin), two kernels, one op of each kind with its
 * relocations against the arena, a weight and the token ring, and decode and prefill
 * schedules. The comments give the numbers the rule tests rely on. */
#ifndef FIX_PLAN_H
#define FIX_PLAN_H

#include <string.h>

#include "plan/planfile.h"
#include "test/test.h"
#include "weights/wimage.h"

#define FIX_ARENA (1u << 20)
#define FIX_IMAGE_DATA 1801 /* image 0: [0, 1000), image 1: [1024, 1801) */
#define FIX_PARAMS 328      /* blobs at 0 (64), 64 (128), 192 (gemm), 272 (memset), 304 (copy) */

struct fix_plan {
    struct plan_content c;
    char strings[512];
    uint64_t nstr;
    struct plan_region regions[3];
    struct plan_buffer buffers[4];
    struct plan_weight weights[3];
    struct plan_image images[2];
    uint8_t image_data[FIX_IMAGE_DATA];
    struct plan_kernel kernels[2];
    uint8_t params[FIX_PARAMS];
    struct plan_reloc relocs[9];
    struct plan_schedule schedules[3];
    struct plan_op ops[5];
};

/* Append s to the string pool; its offset. Offset 0 holds the empty string. */
static inline uint32_t fix_str(struct fix_plan *f, const char *s)
{
    uint32_t off = (uint32_t)f->nstr;
    size_t n = strlen(s) + 1;
    memcpy(f->strings + f->nstr, s, n);
    f->nstr += n;
    return off;
}

static inline void fix_identity(struct fix_plan *f)
{
    struct plan_identity *id = &f->c.id;
    model_config_default(&id->model);
    id->max_seq = 4096;
    id->num_buckets = 3;
    id->buckets[0] = 64;
    id->buckets[1] = 256;
    id->buckets[2] = 1024;
    id->quant = PLAN_QUANT_INT4;
    id->group_size = 64;
    id->lm_head_quant = PLAN_QUANT_BF16;
    id->num_archs = 2;
    id->archs[0] = 80;
    id->archs[1] = 90;
    id->arena_bytes = FIX_ARENA;
    id->weights_bytes = 128000 + 256 + 128000;
    id->manifest_hash = wt_manifest_hash_plan(f->strings, f->weights, 3);
    strcpy(id->planner_version, "fixture 1");
}

static inline void fix_arena(struct fix_plan *f)
{
    const uint32_t A = PLAN_ALL_SCHEDULES;
    f->regions[0] = (struct plan_region){fix_str(f, "persistent"), PLAN_REGION_PERSISTENT, 0, 65536};
    f->regions[1] = (struct plan_region){fix_str(f, "workspace"), PLAN_REGION_WORKSPACE, 65536, 65536};
    f->regions[2] = (struct plan_region){fix_str(f, "overlay"), PLAN_REGION_OVERLAY, 131072,
                                         FIX_ARENA - 131072};
    f->buffers[0] = (struct plan_buffer){fix_str(f, "kv_cache"), 0, A, PLAN_DTYPE_BF16, 0, 32768, 0, 0xFFFFFFFFu};
    f->buffers[1] = (struct plan_buffer){fix_str(f, "step_state"), 0, A, 0, 32768, 256, 0, 0xFFFFFFFFu};
    f->buffers[2] = (struct plan_buffer){fix_str(f, "splitk"), 1, A, PLAN_DTYPE_F32, 65536, 4096, 0, 0xFFFFFFFFu};
    f->buffers[3] = (struct plan_buffer){fix_str(f, "act.x"), 2, 0, PLAN_DTYPE_BF16, 131072, 8192, 0, 3};
}

static inline void fix_weights(struct fix_plan *f)
{
    f->weights[0] = (struct plan_weight){fix_str(f, "model.embed_tokens.weight"), PLAN_DTYPE_BF16, 0, 0,
                                         2, 0, {1000, 64, 0, 0}, 128000};
    f->weights[1] = (struct plan_weight){fix_str(f, "model.norm.weight"), PLAN_DTYPE_F32, 0, 0,
                                         1, 0, {64, 0, 0, 0}, 256};
    f->weights[2] = (struct plan_weight){fix_str(f, "lm_head.weight"), PLAN_DTYPE_BF16, 0, 0,
                                         2, 0, {1000, 64, 0, 0}, 128000};
}

static inline void fix_ops(struct fix_plan *f)
{
    const uint32_t NK = PLAN_NO_KERNEL;
    f->kernels[0] = (struct plan_kernel){fix_str(f, "k_rmsnorm"), 64};
    f->kernels[1] = (struct plan_kernel){fix_str(f, "k_attn_decode"), 128};
    f->ops[0] = (struct plan_op){fix_str(f, "l0.norm"), PLAN_OP_KERNEL, 0, {1, 1, 1}, {256, 1, 1},
                                 0, 0, 64, 0, 2, 0, 0, 4096, 8192};
    f->ops[1] = (struct plan_op){fix_str(f, "l0.attn"), PLAN_OP_KERNEL, 1, {16, 2, 1}, {128, 1, 1},
                                 4096, 64, 128, 2, 1, 0, 0, 65536, 131072};
    f->ops[2] = (struct plan_op){fix_str(f, "lm_head"), PLAN_OP_GEMM, NK, {1, 1, 1}, {1, 1, 1},
                                 0, 192, 72, 3, 3, 0, 0, 128000, 128000};
    f->ops[3] = (struct plan_op){fix_str(f, "clear"), PLAN_OP_MEMSET, NK, {1, 1, 1}, {1, 1, 1},
                                 0, 272, 24, 6, 1, 0, 0, 4096, 0};
    f->ops[4] = (struct plan_op){fix_str(f, "copy"), PLAN_OP_COPY, NK, {1, 1, 1}, {1, 1, 1},
                                 0, 304, 24, 7, 2, 0, 0, 8192, 0};
    const struct plan_reloc r[9] = {
        {0, PLAN_BASE_ARENA, 0, 0, 131072}, {8, PLAN_BASE_WEIGHT, 1, 0, 0},   /* op 0 */
        {120, PLAN_BASE_RING, 0, 0, 0},                                        /* op 1 */
        {0, PLAN_BASE_WEIGHT, 2, 0, 0},     {8, PLAN_BASE_ARENA, 0, 0, 131072},
        {16, PLAN_BASE_ARENA, 0, 0, 139264},                                   /* op 2 */
        {0, PLAN_BASE_ARENA, 0, 0, 65536},                                     /* op 3 */
        {0, PLAN_BASE_ARENA, 0, 0, 131072}, {8, PLAN_BASE_ARENA, 0, 0, 0},     /* op 4 */
    };
    memcpy(f->relocs, r, sizeof r);
    f->schedules[0] = (struct plan_schedule){fix_str(f, "decode"), PLAN_SCHED_DECODE, 1, 0, 5, 0, 4096, 0};
    f->schedules[1] = (struct plan_schedule){fix_str(f, "prefill64"), PLAN_SCHED_PREFILL, 64, 0, 5, 0, 4096, 0};
    f->schedules[2] = (struct plan_schedule){fix_str(f, "decode_split"), PLAN_SCHED_DECODE, 1, 1, 2, 1024, 4096, 0};
}

/* Fill f with the fixture; random bytes (image data, parameter blobs) from seed. */
static inline void fix_plan_init(struct fix_plan *f, unsigned long long seed)
{
    memset(f, 0, sizeof *f);
    fix_str(f, "");
    fix_arena(f);
    fix_weights(f);
    fix_ops(f);
    fix_identity(f);
    for (size_t i = 0; i < sizeof f->image_data; i++)
        f->image_data[i] = (uint8_t)test_rand(&seed);
    for (size_t i = 0; i < sizeof f->params; i++)
        f->params[i] = (uint8_t)test_rand(&seed);
    f->images[0] = (struct plan_image){80, PLAN_IMAGE_CUBIN, 0, 1000};
    f->images[1] = (struct plan_image){90, PLAN_IMAGE_FATBIN, 1024, 777};
    struct plan_content *c = &f->c;
    c->strings = f->strings, c->strings_size = f->nstr;
    c->regions = f->regions, c->num_regions = 3;
    c->buffers = f->buffers, c->num_buffers = 4;
    c->weights = f->weights, c->num_weights = 3;
    c->images = f->images, c->num_images = 2;
    c->image_data = f->image_data, c->image_data_size = sizeof f->image_data;
    c->kernels = f->kernels, c->num_kernels = 2;
    c->params = f->params, c->params_size = sizeof f->params;
    c->relocs = f->relocs, c->num_relocs = 9;
    c->schedules = f->schedules, c->num_schedules = 3;
    c->ops = f->ops, c->num_ops = 5;
}

/* Write the fixture or stop the test program. */
static inline uint8_t *fix_plan_write(const struct fix_plan *f, size_t *len)
{
    uint8_t *buf;
    char err[FMT_ERR_LEN];
    enum fmt_status st = plan_write(&f->c, &buf, len, err);
    if (st != FMT_OK) {
        printf("FAIL the fixture plan does not write: %s\n", err);
        exit(1);
    }
    return buf;
}

#endif
