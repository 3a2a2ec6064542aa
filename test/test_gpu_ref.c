/* test_gpu_ref.c — the whole model on the GPU against the CPU reference on the same image.
 *
 * test_gpu_e2e holds the GPU to transformers, but transformers cannot run an INT4 image, and
 * its checkpoints have no width that takes the INT4 group-128 decode kernels (the tensor-core
 * expert pair that routes itself, the folded post-attention norm, the GDN step that makes its
 * own b and a). Here the truth is the CPU reference (test/ref) reading the very image the GPU
 * loads, INT4 dequantized exactly, in float32; the yardstick is the same reference with bf16
 * activations (ref_model.bf16_acts), which test_ref_golden holds to within 0.8-1.25x of
 * transformers' own bf16 error on every checkpoint that has a bf16 golden.
 *
 * Images: tiny-g128 (every width a multiple of 128, experts 512 wide: as INT4 it takes every
 * group-128 decode kernel, the self-routing expert pair and both folded norms included) as
 * INT4 group 128, the same with an INT4 lm_head, and as bf16; and wide-2l (the real widths of
 * Qwen3.5-35B-A3B, 16 experts) as INT4 group 128, with buckets 16, 64, 128, 256 and 512
 * (prompts of 3, 40, 70 and 200 tokens: the 64 and 128 buckets' large dense projections run on
 * k_gemm_i4_wg, its 64- and 128-token tiles, and every bucket but the 512 one has side
 * branches, planfile.h); and tiny-g128 as INT4 again with the decode MoE block as one launch
 * (k_moe_fused_g128). Prompts are random tokens; after each prompt, decode steps feed the
 * float32 reference's greedy picks to all three runs (teacher forcing).
 *
 * Bounds, tighter than test_gpu_e2e's against transformers because the reference's yardstick
 * is computed on the very rows the GPU ran: per case (the prompt's last row and its decode
 * steps) and per decode step (over the cases) the GPU's relative L2 error within 1.5x of the
 * bf16 reference's; per image, over all rows, within 1.2x; the worst single row within 1.5x of
 * the bf16 reference's worst; top-1 misses against float32 no more than the bf16 reference's,
 * near-ties within the GPU's own per-logit noise set aside. At router near-ties each run is
 * measured against the nearest float32 branch (struct cmp).
 *
 * REF_QUICK=1 (for compute-sanitizer): the two tiny-g128 INT4 images with the bf16 lm_head (the
 * kernel pair and k_moe_fused_g128), two short cases each. */
#include <math.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>

#include "../rt/rt.h"
#include "../weights/convert.h"
#include "golden.h"
#include "gpu.h"
#include "gpu_plan.h"
#include "ref/mkmodel_gen.h"
#include "ref/ref.h"
#include "ref/ref_image.h"

#define TMP "build/test/gpu_ref"
#define YARD_CASE 1.5
#define YARD_ALL 1.2
#define YARD_ROW 1.5
#define ROUTER_TIE 4.0f /* bf16 spacings: a router near-tie (test/ref/ref.h) */
#define MAX_ALTS 12     /* branches per row: one per tied layer, then all of them at once */
#define MAX_STEPS 16

struct image_spec {
    const char *label, *config;
    struct wt_format fmt;
    int tiny_buckets;   /* prefill buckets 16 and 64 (prompts run as several chunks) */
    uint32_t cases[8], ncases, steps; /* REF_QUICK=1: the first two cases; steps <= MAX_STEPS */
    int moe_fused; /* the plan runs decode MoE as k_moe_fused_g128 (planner --moe-decode fused) */
};

/* Errors over rows: squared distances of the GPU and of the bf16 reference to the float32
 * reference, the latter's squared norm, worst rows, top-1 misses. Where the token met a router
 * near-tie, each run is measured against the float32 branch it is nearer: the one routed as
 * the reference routes, or the other way at one tied layer or at all of them
 * (ref_step_branches); each is an exact float32 run of the model, and a bf16 run may land on
 * any. */
struct cmp {
    double gpu, emu, ref, worst_gpu, worst_emu;
    uint32_t rows, miss_gpu, miss_emu, ties, branch_gpu, branch_emu;
    /* per position over the cases: 0 the prompt's last row, s + 1 decode step s */
    double step_gpu[MAX_STEPS + 1], step_emu[MAX_STEPS + 1], step_ref[MAX_STEPS + 1];
};

static double sqdist(const float *a, const float *b, uint32_t V)
{
    double s = 0;
    for (uint32_t i = 0; i < V; i++)
        s += ((double)a[i] - b[i]) * ((double)a[i] - b[i]);
    return s;
}

/* One row: GPU g, bf16 reference e, float32 reference f, and na other branches fa at router
 * near-ties. Added to the case's sums (c) and the image's (all). */
static void row(struct cmp *c, struct cmp *all, const float *g, const float *e, const float *f,
                const float *fa, int na, uint32_t V, uint32_t step)
{
    double gs = sqdist(g, f, V), es = sqdist(e, f, V), fs = 0;
    for (uint32_t i = 0; i < V; i++)
        fs += (double)f[i] * f[i];
    int bg = 0, be = 0;
    const float *fg = f, *fe = f; /* the branch each run is nearest */
    for (int k = 0; k < na; k++) {
        const float *x = fa + (size_t)k * V;
        double ga = sqdist(g, x, V), ea = sqdist(e, x, V);
        if (ga < gs)
            gs = ga, bg = 1, fg = x;
        if (ea < es)
            es = ea, be = 1, fe = x;
    }
    if (na > 0) {
        printf("# router near-tie: GPU rel L2 %.2e (%s branch), bf16 reference %.2e (%s)\n", sqrt(gs / fs),
               bg ? "the other" : "the reference's", sqrt(es / fs), be ? "the other" : "the reference's");
    }
    uint32_t af = argmax(fg, V), ag = argmax(g, V);
    /* a near-tie of the logits: float32's margin between the two picks within twice the GPU's
     * rms error */
    int tie = ag != af && (double)fg[af] - fg[ag] <= 2 * sqrt(gs / V);
    double eg = sqrt(gs / fs), ee = sqrt(es / fs);
    struct cmp *t[2] = {c, all};
    for (int k = 0; k < 2; k++) {
        t[k]->gpu += gs, t[k]->emu += es, t[k]->ref += fs, t[k]->rows++;
        t[k]->worst_gpu = eg > t[k]->worst_gpu ? eg : t[k]->worst_gpu;
        t[k]->worst_emu = ee > t[k]->worst_emu ? ee : t[k]->worst_emu;
        t[k]->miss_gpu += ag != af, t[k]->ties += tie;
        t[k]->miss_emu += argmax(e, V) != argmax(fe, V);
        t[k]->branch_gpu += bg, t[k]->branch_emu += be;
    }
    all->step_gpu[step] += gs, all->step_emu[step] += es, all->step_ref[step] += fs;
}

/* The two references on a sequence: float32 (s32, with scratch for the other branch) and bf16
 * activations (s16). */
struct refs {
    struct ref_model *m;
    struct ref_state s32, tmp, s16;
};

/* One token through both references: logits f, fa (when the token met a router near-tie; else
 * *alt = 0) and e when want. */
static int ref_both(struct refs *R, int32_t tok, float *f, float *fa, float *e, int want, int *alt)
{
    R->m->bf16_acts = 0;
    int rc = want ? ref_step_branches(R->m, &R->s32, &R->tmp, tok, f, fa, MAX_ALTS, ROUTER_TIE)
                  : ref_step(R->m, &R->s32, tok, NULL);
    *alt = want && rc > 0 ? rc : 0;
    R->m->bf16_acts = 1;
    int rc2 = ref_step(R->m, &R->s16, tok, want ? e : NULL);
    R->m->bf16_acts = 0;
    return rc < 0 || rc2;
}

/* A prompt of T random tokens, then `steps` decode steps fed the float32 reference's picks. */
static void run_case(struct rt *r, struct ref_model *m, const struct image_spec *is, uint32_t T,
                     struct cmp *all)
{
    char err[RT_ERR_LEN] = "";
    uint32_t V = m->c.vocab_size;
    float *g = malloc(4ull * V), *f = malloc(4ull * V), *fa = malloc(4ull * V * MAX_ALTS), *e = malloc(4ull * V);
    int32_t *prompt = malloc(4ull * T);
    uint64_t x = 0x9E3779B97F4A7C15ull ^ T;
    for (uint32_t t = 0; t < T; t++) {
        x = x * 6364136223846793005ull + 1442695040888963407ull;
        prompt[t] = (int32_t)((x >> 33) % V);
    }
    struct refs R = {.m = m};
    struct cmp c = {0};
    struct rt_sampling greedy = {.max_new = 1u << 20, .top_p = 1.0f};
    int alt = 0, ok = !ref_state_init(&R.s32, m, T + is->steps) && !ref_state_init(&R.tmp, m, T + is->steps) &&
                      !ref_state_init(&R.s16, m, T + is->steps);
    for (uint32_t t = 0; t < T && ok; t++)
        ok = !ref_both(&R, prompt[t], f, fa, e, t + 1 == T, &alt);
    enum rt_status st = ok ? rt_reset(r, &greedy, err) : RT_ERR_ARG;
    if (!st)
        st = rt_prefill_logits(r, prompt, T, g, err);
    if (!st)
        row(&c, all, g, e, f, fa, alt, V, 0);
    for (uint32_t s = 0; s < is->steps && ok && !st; s++) {
        int32_t tok = (int32_t)argmax(f, V);
        ok = !ref_both(&R, tok, f, fa, e, 1, &alt);
        st = rt_decode_logits(r, tok, g, err);
        if (!st && ok) {
            row(&c, all, g, e, f, fa, alt, V, s + 1);
            if (getenv("REF_ROWS"))
                printf("# %s T=%u step %u: rel L2 %.3e, bf16 reference %.3e, router gap %.2f\n",
                       is->label, T, s, rel_l2(g, f, V), rel_l2(e, f, V), R.s32.router_gap);
        }
    }
    double gc = sqrt(c.gpu / c.ref), ec = sqrt(c.emu / c.ref);
    CHECK(ok && !st && c.rows == is->steps + 1 && gc <= YARD_CASE * ec,
          "%s T=%u: prompt's last row and %u decode steps: rel L2 %.2e vs the bf16 reference %.2e "
          "(x%.2f, bound %.1f); worst row %.2e vs %.2e%s%s", is->label, T, is->steps, gc, ec, gc / ec,
          YARD_CASE, c.worst_gpu, c.worst_emu, st ? ": " : ok ? "" : ": the reference failed", err);
    ref_state_free(&R.s32, m);
    ref_state_free(&R.tmp, m);
    ref_state_free(&R.s16, m);
    free(g), free(f), free(fa), free(e), free(prompt);
}

/* The prefill logits of r for prompts of 3, 40, 70 and 200 tokens, bit for bit against the same
 * plan opened with its side branches run in order on the one stream (no_branches) and with
 * the ops launched one by one (no_graphs, the branches on their streams). */
static void branch_modes(struct rt *r, const struct rt_options *ro, const char *label, uint32_t V)
{
    static const uint32_t lens[4] = {3, 40, 70, 200};
    char err[RT_ERR_LEN] = "";
    struct rt_sampling greedy = {.max_new = 1u << 20, .top_p = 1.0f};
    for (int mode = 0; mode < 2; mode++) {
        struct rt_options o = *ro;
        o.no_branches = mode == 0, o.no_graphs = mode == 1;
        struct rt *q = NULL;
        enum rt_status st = rt_open(&q, &o, err);
        uint32_t same = 0;
        float *a = malloc(4ull * V), *b = malloc(4ull * V);
        int32_t *prompt = malloc(4 * 200);
        for (int k = 0; k < 4 && !st; k++) {
            for (uint32_t t = 0; t < lens[k]; t++)
                prompt[t] = (int32_t)((t * 2654435761u + 17u * lens[k]) % V);
            if ((st = rt_reset(r, &greedy, err)) ||
                (st = rt_prefill_logits(r, prompt, lens[k], a, err)) ||
                (st = rt_reset(q, &greedy, err)) ||
                (st = rt_prefill_logits(q, prompt, lens[k], b, err)))
                break;
            same += !memcmp(a, b, 4ull * V);
        }
        CHECK(!st && same == 4, "%s: prefill logits of 3, 40, 70 and 200 tokens bit-identical with "
              "the side branches %s (%u of 4)%s%s", label,
              mode ? "launched op by op on their streams (no_graphs)" : "in order on one stream "
              "(no_branches)", same, st ? ": " : "", err);
        free(a), free(b), free(prompt);
        rt_close(q);
    }
}

static void run_image(struct gpu *gp, const struct image_spec *is)
{
    char dir[256], image[256], plan[256], cfg[300], err[WT_CONV_ERR_LEN] = "";
    snprintf(dir, sizeof dir, TMP "/%s", is->config);
    snprintf(image, sizeof image, TMP "/%s.img", is->label);
    snprintf(plan, sizeof plan, TMP "/%s.plan", is->label);
    snprintf(cfg, sizeof cfg, "%s/config.json", dir);
    struct stat sb;
    struct mkmodel_opts mo = {.seed = 1};
    int ok = stat(cfg, &sb) == 0 || mkmodel_write(dir, mkmodel_find(is->config), &mo, err) == 0;
    struct wt_conv_opts co = {.in_dir = dir, .out = image, .fmt = is->fmt, .threads = 8};
    struct model_config c;
    /* tiny: prefill buckets 16 and 64, split-K decode above 64 tokens of context in 8 pieces;
     * else buckets 16, 64, 128, 256 and the chunk */
    struct gpu_plan_opts po = {.max_seq = 512, .split_threshold = 64, .n_split = 8, .num_buckets = 2,
                               .buckets = {16, 64}};
    if (!is->tiny_buckets)
        po = (struct gpu_plan_opts){.max_seq = 512, .split_threshold = 256, .n_split = 64,
                                    .num_buckets = 5, .buckets = {16, 64, 128, 256, 512}};
    po.moe_fused = is->moe_fused;
    ok = ok && wt_convert(&co, NULL, err) == 0 && model_config_load(&c, cfg, err) == 0 &&
         gpu_write_plan(&c, &is->fmt, gp->sm, &po, plan, err) == 0;
    struct rt *r = NULL;
    struct rt_options ro = {.plan_path = plan, .weights_path = image};
    ok = ok && rt_open(&r, &ro, err) == RT_OK;
    struct ref_image im;
    struct ref_model m;
    int im_ok = ok && ref_image_open(&im, image, err) == 0;
    int m_ok = im_ok && ref_model_init(&m, &c, ref_image_get, &im, err) == 0;
    CHECK(ok && m_ok, "%s: %s converted, planned, loaded by rt and by the CPU reference%s%s", is->label,
          is->config, ok && m_ok ? "" : ": ", err);
    if (ok && m_ok) {
        struct cmp all = {0};
        uint32_t n = getenv("REF_QUICK") ? 2 : is->ncases;
        for (uint32_t i = 0; i < n; i++)
            run_case(r, &m, is, is->cases[i], &all);
        double eg = sqrt(all.gpu / all.ref), ee = sqrt(all.emu / all.ref);
        CHECK(eg <= YARD_ALL * ee, "%s: over all %u rows, GPU rel L2 %.2e vs the bf16 reference %.2e "
              "(x%.2f, bound %.1f)", is->label, all.rows, eg, ee, eg / ee, YARD_ALL);
        CHECK(all.worst_gpu <= YARD_ROW * all.worst_emu, "%s: worst single row, GPU %.2e vs the bf16 "
              "reference %.2e (x%.2f, bound %.1f); at router near-ties the GPU took the other branch "
              "%u times, the bf16 reference %u", is->label, all.worst_gpu, all.worst_emu,
              all.worst_gpu / all.worst_emu, YARD_ROW, all.branch_gpu, all.branch_emu);
        int steps_ok = 1;
        for (uint32_t s = 0; s <= is->steps; s++) {
            double a = sqrt(all.step_gpu[s] / all.step_ref[s]), b = sqrt(all.step_emu[s] / all.step_ref[s]);
            steps_ok &= all.step_ref[s] > 0 && a <= YARD_CASE * b;
            printf("# %s %s %u: over the cases, GPU rel L2 %.2e vs the bf16 reference %.2e (x%.2f)\n",
                   is->label, s ? "decode step" : "prompt's last row", s ? s - 1 : 0, a, b, a / b);
        }
        CHECK(steps_ok, "%s: per decode step over the cases (and the prompt's last row), GPU rel L2 "
              "within %.1fx of the bf16 reference's", is->label, YARD_CASE);
        CHECK(all.miss_gpu - all.ties <= all.miss_emu, "%s: top-1 misses against float32: GPU %u (%u "
              "near-ties within its noise), the bf16 reference %u, over %u rows", is->label,
              all.miss_gpu, all.ties, all.miss_emu, all.rows);
        if (!is->tiny_buckets)
            branch_modes(r, &ro, is->label, m.c.vocab_size);
    }
    if (m_ok)
        ref_model_free(&m);
    if (im_ok)
        ref_image_close(&im);
    rt_close(r);
}

int main(void)
{
    struct gpu g;
    if (gpu_open(&g))
        return test_skip("no CUDA device");
    mkdir("build/test", 0755);
    mkdir(TMP, 0755);
    const struct wt_format i4 = {PLAN_QUANT_INT4, 128, PLAN_QUANT_BF16};
    const struct wt_format i4h = {PLAN_QUANT_INT4, 128, PLAN_QUANT_INT4};
    const struct wt_format bf = {PLAN_QUANT_BF16, 0, PLAN_QUANT_BF16};
    const struct image_spec images[] = {
        {"tiny-g128.i4", "tiny-g128", i4, 1, {65, 130, 1, 5, 63, 64, 300}, 7, 16, 0},
        {"tiny-g128.i4-head", "tiny-g128", i4h, 1, {5, 65, 1, 130}, 4, 16, 0},
        {"tiny-g128.bf16", "tiny-g128", bf, 1, {5, 65, 1, 63, 64, 130, 300}, 7, 16, 0},
        {"wide-2l.i4", "wide-2l", i4, 0, {3, 40, 70, 200}, 4, 4, 0},
        {"tiny-g128.i4-fused", "tiny-g128", i4, 1, {65, 5, 130}, 3, 16, 1},
    };
    const int quick = getenv("REF_QUICK") != NULL;
    for (uint32_t i = 0; i < sizeof images / sizeof images[0]; i++)
        if (!quick || !strcmp(images[i].label, "tiny-g128.i4") ||
            !strcmp(images[i].label, "tiny-g128.i4-fused"))
            run_image(&g, &images[i]);
    gpu_close(&g);
    return test_done();
}
