/* gpu_plan.h — a plan file for a checkpoint, built in-process for the device's architecture
 * with the kernels of this build (build/kern/sm_XX.cubin): what the whole-model GPU tests
 * (test_gpu_e2e, test_gpu_ref) load beside the image they converted. */
#ifndef TEST_GPU_PLAN_H
#define TEST_GPU_PLAN_H

#include <stdio.h>
#include <stdlib.h>

#include "../plan/build.h"
#include "../rt/rt.h"
#include "test.h"

struct gpu_plan_opts {
    uint32_t max_seq;
    uint32_t split_threshold, n_split; /* decode split-K above this filled length, in n pieces */
    uint32_t num_buckets, buckets[8];  /* prefill chunk buckets */
    int gdn_chunk_fma;                 /* plan the CUDA-core chunked GDN kernel */
    int gdn_chunk_fused;               /* plan k_gdn_chunk, not k_gdn_prep + k_gdn_seq */
    int moe_fused;                     /* decode MoE as k_moe_fused_g128 (--moe-decode fused) */
};

/* Plan c in weight format f for compute capability sm into path. Returns 0, or -1 with a
 * message in err (RT_ERR_LEN bytes). */
static inline int gpu_write_plan(const struct model_config *c, const struct wt_format *f, int sm,
                                 const struct gpu_plan_opts *o, const char *path, char *err)
{
    struct pb b;
    if (pb_init(&b, c, f, o->max_seq, err))
        return -1;
    b.split_threshold = o->split_threshold, b.n_split = o->n_split;
    b.gdn_chunk_fma = o->gdn_chunk_fma, b.gdn_chunk_fused = o->gdn_chunk_fused;
    b.moe_fused = o->moe_fused;
    b.num_buckets = o->num_buckets;
    for (uint32_t i = 0; i < o->num_buckets; i++)
        b.buckets[i] = o->buckets[i];
    char arch[64];
    snprintf(arch, sizeof arch, "build/kern/sm_%d%s.cubin", sm, sm == 90 ? "a" : "");
    size_t isz = 0;
    uint8_t *img = (uint8_t *)test_read_file(arch, &isz), *out = NULL;
    struct plan_image im = {(uint32_t)sm, PLAN_IMAGE_CUBIN, 0, isz};
    struct plan_content pc;
    size_t n = 0;
    int rc = -1;
    if (!img) {
        snprintf(err, RT_ERR_LEN, "cannot read %s", arch);
        goto out;
    }
    if (plan_emit_schedules(&b) || plan_build_finish(&b) || plan_build_content(&b, &pc)) {
        snprintf(err, RT_ERR_LEN, "%s", b.err);
        goto out;
    }
    pc.images = &im, pc.num_images = 1, pc.image_data = img, pc.image_data_size = isz;
    pc.id.num_archs = 1, pc.id.archs[0] = (uint32_t)sm;
    snprintf(pc.id.planner_version, sizeof pc.id.planner_version, "test");
    if (plan_write(&pc, &out, &n, err) != FMT_OK)
        goto out;
    FILE *fp = fopen(path, "wb");
    rc = fp && fwrite(out, 1, n, fp) == n ? 0 : -1;
    if (fp && fclose(fp))
        rc = -1;
    if (rc)
        snprintf(err, RT_ERR_LEN, "cannot write %s", path);
out:
    free(out);
    free(img);
    pb_free(&b);
    return rc;
}

#endif
