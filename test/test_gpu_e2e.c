/* test_gpu_e2e.c — the whole model on the GPU against transformers.
 *
 * For each tiny checkpoint (the transformers fixtures tiny-a in both expert layouts, and the
 * mkmodel checkpoints tiny-b, tiny-8l, tiny-odd regenerated from their seed): convert it to a
 * bf16 image with the real converter, plan it with the real planner (prefill buckets 16 and
 * 64, so prompts of 130 and 300 tokens run as several chunks continuing from the cache; decode
 * single pass up to 64 tokens of context, split-K above), load both with rt, and for every
 * golden case run the prompt and then the 16 teacher-forced decode steps, comparing logits with
 * transformers' float32 run. The yardstick (test/data/fixtures/README.md): the bf16 GPU path
 * must be no further from golden-f32 than transformers' own bf16 run is. Per case (the
 * prompt's last position, where the runtime computes lm_head, and the decode steps) and per
 * decode step (that step's rows over the cases): the GPU's error within 1.5x of transformers
 * bf16 on the same rows. Per checkpoint: the error over every compared row within 1.25x; the
 * worst single row within 1.5x of transformers bf16's worst; top-1 misses against float32 no
 * more than transformers bf16's once misses inside the GPU's own noise (near-ties) are set
 * aside. Then determinism: the same case again, and after a reload, gives identical logits,
 * and greedy generation follows them.
 *
 * Router near-ties: where the float32 CPU reference (on the same image) finds a token's router
 * gap between the last expert picked and one left out within ROUTER_TIE bf16 spacings of the
 * layer's largest logit at some layer, a bf16 run may route the other way, and that row then
 * differs from golden-f32 by the other expert's contribution (1-3e-2 relative L2 on these
 * models, 2-5x a typical row). Each run, GPU and transformers bf16 alike, is measured there
 * against the nearest float32 branch (ref_step_branches). Example: tiny-8l after 63 tokens,
 * decode step 12, layer 4 logits 0.0263 (picked) and 0.0235 (left out) with the largest at
 * 0.813: 0.7 spacings; the GPU took the other expert and lands 7.8e-3 from that branch, 2.2e-2
 * from golden-f32.
 *
 * Looking into a row: E2E_ONLY=NAME runs only the mkmodel checkpoint NAME; E2E_ROWS=1 prints
 * every decode row; E2E_DUMP=DIR writes each case's GPU rows as float32 to DIR/LABEL-T.f32. */
#include <math.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "../rt/rt.h"
#include "../weights/convert.h"
#include "golden.h"
#include "gpu.h"
#include "gpu_plan.h"
#include "ref/mkmodel_gen.h"
#include "ref/ref.h"
#include "ref/ref_image.h"

#define TMP "build/test/gpu_e2e"
#define YARD 1.5

/* Plan cfg for the device's arch into path: prefill buckets 16 and 64, single-pass decode up to
 * 64 tokens of context, split-K in 8 above */
static int write_plan(const struct model_config *c, const struct wt_format *f, int sm, const char *path,
                      char *err)
{
    struct gpu_plan_opts o = {.max_seq = 512, .split_threshold = 64, .n_split = 8, .num_buckets = 2,
                              .buckets = {16, 64}, .gdn_chunk_fma = getenv("E2E_GDN_FMA") != NULL,
                              .gdn_chunk_fused = getenv("E2E_GDN_FUSED") != NULL};
    return gpu_write_plan(c, f, sm, &o, path, err);
}

struct tally {
    uint32_t rows, top1_gpu, top1_bf16; /* rows compared; argmax misses against golden-f32 */
    uint32_t ties_gpu;                  /* GPU misses within the bf16 noise of a tie */
    double worst_ratio;
};

/* One comparison row: GPU logits g, transformers f32 row f and bf16 row h (h may be NULL when
 * the bf16 run was fed other tokens); yard is the bf16 run's error for this row or case. */
static int row_ok(struct tally *t, const float *g, const float *f, const float *h, uint32_t V,
                  double yard, double *err)
{
    *err = rel_l2(g, f, V);
    t->rows++;
    uint32_t ag = argmax(g, V), af = argmax(f, V);
    if (ag != af) {
        /* a near-tie: the float32 margin between the two picks is within twice the GPU's own
         * per-logit error on this row, below what any bf16 evaluation can resolve */
        double rms = 0, fr = 0;
        for (uint32_t i = 0; i < V; i++)
            rms += ((double)g[i] - f[i]) * ((double)g[i] - f[i]), fr += (double)f[i] * f[i];
        rms = sqrt(rms / V);
        double margin = (double)f[af] - f[ag];
        t->ties_gpu += margin <= 2 * rms;
        printf("# top-1 miss: margin %.3g, GPU error rms %.3g per logit (logit rms %.3g)\n", margin,
               rms, sqrt(fr / V));
    }
    t->top1_gpu += ag != af;
    if (h)
        t->top1_bf16 += argmax(h, V) != argmax(f, V);
    double ratio = *err / yard;
    t->worst_ratio = ratio > t->worst_ratio ? ratio : t->worst_ratio;
    return ratio <= YARD && isfinite(*err);
}

/* Errors of one checkpoint over every compared row: the GPU's and transformers bf16's squared
 * distances to golden-f32 summed, golden-f32's squared norm, and each one's worst row. */
#define MAX_STEPS 16
struct agg {
    double gpu, bf16, ref;
    double worst_gpu, worst_bf16;
    uint32_t branch_gpu, branch_bf16; /* rows nearer the other branch of a router near-tie */
    /* per position over the cases: 0 the prompt's last row, s + 1 decode step s */
    double step_gpu[MAX_STEPS + 1], step_bf16[MAX_STEPS + 1], step_ref[MAX_STEPS + 1];
};

/* A router near-tie: the float32 CPU reference's gap between the last expert picked and one
 * left out below ROUTER_TIE bf16 spacings of the layer's largest logit at some layer
 * (test/ref/ref.h). There a bf16 run may route either way, transformers' included, so each
 * run is measured against the float32 branch it is nearest: golden-f32, or the reference's step routed the other way at one tied
 * layer or at all of them (ref_step_branches). */
#define ROUTER_TIE 4.0f
#define MAX_ALTS 12 /* branches per row: one per tied layer, then all of them at once */

/* One row's squared distances to float32 (the nearest of f and the na branches fa): GPU g
 * into *gs, transformers bf16 h into *hs, golden-f32's squared norm into *fs. */
static void row_dist(const float *g, const float *h, const float *f, const float *fa, int na, uint32_t V,
                     double *gs, double *hs, double *fs, int *bg, int *bh)
{
    *gs = *hs = *fs = 0;
    for (uint32_t i = 0; i < V; i++) {
        double d = (double)g[i] - f[i], e = (double)h[i] - f[i];
        *gs += d * d, *hs += e * e, *fs += (double)f[i] * f[i];
    }
    *bg = *bh = 0;
    for (int k = 0; k < na; k++) {
        const float *x = fa + (size_t)k * V;
        double ga = 0, ha = 0;
        for (uint32_t i = 0; i < V; i++)
            ga += ((double)g[i] - x[i]) * ((double)g[i] - x[i]), ha += ((double)h[i] - x[i]) * ((double)h[i] - x[i]);
        *bg |= ga < *gs, *bh |= ha < *hs;
        *gs = ga < *gs ? ga : *gs, *hs = ha < *hs ? ha : *hs;
    }
    if (na > 0)
        printf("# router near-tie: GPU rel L2 %.2e (%s branch), transformers bf16 %.2e (%s)\n",
               sqrt(*gs / *fs), *bg ? "the other" : "golden-f32's", sqrt(*hs / *fs),
               *bh ? "the other" : "golden-f32's");
}

static void agg_add(struct agg *a, double gs, double hs, double fs, int bg, int bh, uint32_t step)
{
    a->gpu += gs, a->bf16 += hs, a->ref += fs;
    double eg = fs > 0 ? sqrt(gs / fs) : 0, eb = fs > 0 ? sqrt(hs / fs) : 0;
    a->worst_gpu = eg > a->worst_gpu ? eg : a->worst_gpu;
    a->worst_bf16 = eb > a->worst_bf16 ? eb : a->worst_bf16;
    a->branch_gpu += bg, a->branch_bf16 += bh;
    if (step <= MAX_STEPS)
        a->step_gpu[step] += gs, a->step_bf16[step] += hs, a->step_ref[step] += fs;
}

static void run_case(struct rt *r, const char *label, const struct golden_case *f32,
                     const struct golden_case *bf, struct tally *t, struct agg *a, const struct ref_model *m)
{
    char err[RT_ERR_LEN] = "";
    uint32_t V = f32->V;
    float *g = malloc(4ull * V), *rf = malloc(4ull * V), *fa = malloc(4ull * V * MAX_ALTS);
    struct rt_sampling greedy = {.max_new = 1u << 20, .top_p = 1.0f};
    /* the bf16 run's error: on this row, and over the case (all prompt rows; all decode steps) */
    const float *f_last = f32->prefill + (size_t)(f32->T - 1) * V, *h_last = bf->prefill + (size_t)(f32->T - 1) * V;
    double yard_case = rel_l2(bf->prefill, f32->prefill, (size_t)f32->T * V);
    double yard_row = rel_l2(h_last, f_last, V), e = 0;
    /* the float32 CPU reference along the same tokens, for the other branch at router near-ties */
    struct ref_state rs, tmp;
    int alt = 0, ref_ok = !ref_state_init(&rs, m, f32->T + f32->D) && !ref_state_init(&tmp, m, f32->T + f32->D);
    for (uint32_t i = 0; i + 1 < f32->T && ref_ok; i++)
        ref_ok = !ref_step(m, &rs, f32->prompt[i], NULL);
    ref_ok = ref_ok && (alt = ref_step_branches(m, &rs, &tmp, f32->prompt[f32->T - 1], rf, fa, MAX_ALTS,
                                                ROUTER_TIE)) >= 0;
    enum rt_status st = ref_ok ? rt_reset(r, &greedy, err) : RT_ERR_ARG;
    if (!st)
        st = rt_prefill_logits(r, f32->prompt, f32->T, g, err);
    /* E2E_DUMP=DIR: the GPU's rows of this case (the prompt's last, then each decode step) as
     * float32 into DIR/LABEL-T.f32, for looking into a row offline */
    FILE *dump = NULL;
    if (getenv("E2E_DUMP") && !st) {
        char path[512];
        snprintf(path, sizeof path, "%s/%s-T%u.f32", getenv("E2E_DUMP"), label, f32->T);
        if ((dump = fopen(path, "wb")))
            fwrite(g, 4, V, dump);
    }
    /* the case's rows: the prompt's last position, then the decode steps while transformers'
     * bf16 run was fed the same tokens. transformers' own bf16 steps scatter (its worst step
     * is often twice its typical one), so the GPU is held to the same statistics: its error
     * over the case's rows, and over each position's rows across the cases, within YARD times
     * transformers' on the same rows; its worst row against transformers' worst over the
     * checkpoint (run_checkpoint) */
    double g_sum = 0, b_sum = 0, f_sum = 0, g_worst = 0, b_worst = 0, gs, hs, fs;
    int bg, bh;
    if (!st) {
        row_ok(t, g, f_last, h_last, V, 1.0, &e);
        row_dist(g, h_last, f_last, fa, alt, V, &gs, &hs, &fs, &bg, &bh);
        agg_add(a, gs, hs, fs, bg, bh, 0);
        g_sum += gs, b_sum += hs, f_sum += fs, g_worst = sqrt(gs / fs), b_worst = sqrt(hs / fs);
    }
    printf("# %s T=%u prefill: last-row rel L2 %.2e; transformers bf16 %.2e on the row, %.2e over the "
           "prompt\n", label, f32->T, e, yard_row, yard_case);
    uint32_t same = 0;
    while (same < f32->D && bf->fed[same] == f32->fed[same])
        same++;
    for (uint32_t s = 0; s < f32->D && !st; s++) {
        const float *f = f32->decode + (size_t)s * V, *h = s < same ? bf->decode + (size_t)s * V : NULL;
        st = rt_decode_logits(r, f32->fed[s], g, err);
        if (dump && !st)
            fwrite(g, 4, V, dump);
        if (st || (alt = ref_step_branches(m, &rs, &tmp, f32->fed[s], rf, fa, MAX_ALTS, ROUTER_TIE)) < 0) {
            ref_ok = st != 0;
            break;
        }
        row_ok(t, g, f, h, V, 1.0, &e);
        if (!h)
            continue;
        row_dist(g, h, f, fa, alt, V, &gs, &hs, &fs, &bg, &bh);
        agg_add(a, gs, hs, fs, bg, bh, s + 1);
        double eg = sqrt(gs / fs), eb = sqrt(hs / fs);
        if (getenv("E2E_ROWS"))
            printf("# %s T=%u step %u: rel L2 %.3e, transformers bf16 %.3e, router gap %.2f\n", label,
                   f32->T, s, eg, eb, rs.router_gap);
        g_worst = eg > g_worst ? eg : g_worst, b_worst = eb > b_worst ? eb : b_worst;
        g_sum += gs, b_sum += hs, f_sum += fs;
    }
    double gc = sqrt(g_sum / f_sum), bc = sqrt(b_sum / f_sum);
    if (dump)
        fclose(dump);
    CHECK(!st && ref_ok && same > 0 && gc <= YARD * bc,
          "%s T=%u: prompt's last row and %u teacher-forced decode steps: rel L2 %.2e vs "
          "transformers bf16 %.2e (x%.2f); worst row %.2e vs %.2e (x%.2f)%s%s", label, f32->T, same,
          gc, bc, gc / bc, g_worst, b_worst, g_worst / b_worst,
          st ? ": " : ref_ok ? "" : ": the CPU reference failed", err);
    ref_state_free(&rs, m);
    ref_state_free(&tmp, m);
    free(g), free(rf), free(fa);
}

struct sink {
    int32_t tok[8];
    uint32_t n;
};

static int collect(void *ctx, int32_t t)
{
    struct sink *k = ctx;
    if (k->n < 8)
        k->tok[k->n] = t;
    k->n++;
    return 0;
}

/* The same case twice gives identical logits; greedy generation follows the logits. */
static void determinism(struct rt *r, const char *label, const struct golden_case *c)
{
    char err[RT_ERR_LEN] = "";
    uint32_t V = c->V;
    float *a = malloc(4ull * V), *b = malloc(4ull * V);
    struct rt_sampling greedy = {.max_new = 8, .top_p = 1.0f};
    int ok = !rt_reset(r, &greedy, err) && !rt_prefill_logits(r, c->prompt, c->T, a, err) &&
             !rt_decode_logits(r, c->fed[0], a, err) && !rt_reset(r, &greedy, err) &&
             !rt_prefill_logits(r, c->prompt, c->T, b, err) && !rt_decode_logits(r, c->fed[0], b, err);
    CHECK(ok && !memcmp(a, b, 4ull * V), "%s: the same prompt and step twice give identical logits%s%s",
          label, ok ? "" : ": ", err);
    /* generation: each token is the argmax of the logits of the step that produced it */
    struct sink k = {{0}, 0};
    struct rt_stats st;
    int gen_ok = !rt_generate(r, c->prompt, c->T, &greedy, collect, &k, &st, err) && k.n == 8;
    gen_ok = gen_ok && !rt_reset(r, &greedy, err) && !rt_prefill_logits(r, c->prompt, c->T, a, err) &&
             (int32_t)argmax(a, V) == k.tok[0];
    for (uint32_t i = 0; gen_ok && i + 1 < k.n; i++)
        gen_ok = !rt_decode_logits(r, k.tok[i], a, err) && (int32_t)argmax(a, V) == k.tok[i + 1];
    CHECK(gen_ok, "%s: greedy generation of 8 tokens follows the argmax of the logits%s%s", label,
          gen_ok ? "" : ": ", err);
    free(a);
    free(b);
}

/* INT4 (group 32): logits within the bound the weights work states for INT4 images against
 * float32 (relative L2 0.06, top-1 agreement 88%; measured 0.024-0.039 on the CPU reference). */
static void run_int4(struct gpu *g, const char *label, const char *dir, const char *f32_path)
{
    char err[WT_CONV_ERR_LEN] = "", image[256], plan[256], cfg_path[512];
    snprintf(image, sizeof image, TMP "/%s.i4.img", label);
    snprintf(plan, sizeof plan, TMP "/%s.i4.plan", label);
    snprintf(cfg_path, sizeof cfg_path, "%s/config.json", dir);
    struct wt_format fmt = {PLAN_QUANT_INT4, 32, PLAN_QUANT_BF16};
    struct wt_conv_opts o = {.in_dir = dir, .out = image, .fmt = fmt, .threads = 2};
    struct model_config c;
    struct rt *r = NULL;
    int ok = wt_convert(&o, NULL, err) == 0 && model_config_load(&c, cfg_path, err) == 0 &&
             write_plan(&c, &fmt, g->sm, plan, err) == 0;
    struct rt_options ro = {.plan_path = plan, .weights_path = image};
    ok = ok && rt_open(&r, &ro, err) == RT_OK;
    CHECK(ok, "%s int4:32: converted, planned and loaded%s%s", label, ok ? "" : ": ", err);
    if (!ok)
        return;
    struct golden f32;
    golden_load(&f32, f32_path);
    double num = 0, den = 0;
    uint32_t rows = 0, agree = 0;
    struct rt_sampling greedy = {.max_new = 1u << 20, .top_p = 1.0f};
    for (uint32_t i = 0; i < f32.n && ok; i++) {
        const struct golden_case *gc = &f32.c[i];
        float *x = malloc(4ull * gc->V);
        ok = !rt_reset(r, &greedy, err) && !rt_prefill_logits(r, gc->prompt, gc->T, x, err);
        for (uint32_t s = 0; ok && s <= gc->D; s++) {
            const float *f = s == 0 ? gc->prefill + (size_t)(gc->T - 1) * gc->V : gc->decode + (size_t)(s - 1) * gc->V;
            if (s > 0)
                ok = !rt_decode_logits(r, gc->fed[s - 1], x, err);
            for (uint32_t v = 0; ok && v < gc->V; v++)
                num += ((double)x[v] - f[v]) * ((double)x[v] - f[v]), den += (double)f[v] * f[v];
            rows++, agree += ok && argmax(x, gc->V) == argmax(f, gc->V);
        }
        free(x);
    }
    double e = sqrt(num / den);
    CHECK(ok && e <= 0.06 && agree >= 0.88 * rows, "%s int4:32: rel L2 %.3f against float32 (bound 0.06), "
          "top-1 %u of %u (bound 88%%)%s%s", label, e, agree, rows, ok ? "" : ": ", err);
    golden_free(&f32);
    rt_close(r);
}

static void run_checkpoint(struct gpu *g, const char *label, const char *dir, const char *f32_path,
                           const char *bf16_path)
{
    char err[WT_CONV_ERR_LEN] = "", image[256], plan[256], cfg_path[512];
    snprintf(image, sizeof image, TMP "/%s.img", label);
    snprintf(plan, sizeof plan, TMP "/%s.plan", label);
    snprintf(cfg_path, sizeof cfg_path, "%s/config.json", dir);
    struct wt_conv_opts o = {.in_dir = dir, .out = image, .fmt = {PLAN_QUANT_BF16, 0, PLAN_QUANT_BF16},
                             .threads = 2};
    struct model_config c;
    int ok = wt_convert(&o, NULL, err) == 0 && model_config_load(&c, cfg_path, err) == 0 &&
             write_plan(&c, &o.fmt, g->sm, plan, err) == 0;
    CHECK(ok, "%s: converted to a bf16 image and planned%s%s", label, ok ? "" : ": ", err);
    if (!ok)
        return;
    struct rt *r = NULL;
    struct rt_options ro = {.plan_path = plan, .weights_path = image};
    enum rt_status st = rt_open(&r, &ro, err);
    CHECK(st == RT_OK, "%s: rt loads plan and image%s%s", label, st ? ": " : "", err);
    if (st)
        return;
    struct golden f32, bf;
    golden_load(&f32, f32_path);
    golden_load(&bf, bf16_path);
    struct tally t = {0};
    struct agg a = {0};
    struct ref_image im;
    struct ref_model m;
    int im_ok = ref_image_open(&im, image, err) == 0;
    int m_ok = im_ok && ref_model_init(&m, &c, ref_image_get, &im, err) == 0;
    CHECK(m_ok, "%s: the CPU reference loads the image%s%s", label, m_ok ? "" : ": ", err);
    /* E2E_QUICK=1 (for compute-sanitizer, which slows kernels many times): two cases only */
    uint32_t ncases = getenv("E2E_QUICK") ? 2 : f32.n;
    for (uint32_t i = 0; i < ncases && i < bf.n && m_ok; i++)
        run_case(r, label, &f32.c[i], &bf.c[i], &t, &a, &m);
    if (m_ok)
        ref_model_free(&m);
    if (im_ok)
        ref_image_close(&im);
    int steps_ok = 1;
    for (uint32_t s = 0; s <= MAX_STEPS && !getenv("E2E_QUICK"); s++) {
        if (a.step_ref[s] == 0)
            continue;
        double x = sqrt(a.step_gpu[s] / a.step_ref[s]), y = sqrt(a.step_bf16[s] / a.step_ref[s]);
        steps_ok &= x <= YARD * y;
        printf("# %s %s %u: over the cases, GPU rel L2 %.2e vs transformers bf16 %.2e (x%.2f)\n", label,
               s ? "decode step" : "prompt's last row", s ? s - 1 : 0, x, y, x / y);
    }
    CHECK(steps_ok, "%s: per decode step over the cases (and the prompt's last row), GPU rel L2 "
          "within %.1fx of transformers bf16; at router near-ties the GPU took the other branch %u "
          "times, transformers bf16 %u", label, YARD, a.branch_gpu, a.branch_bf16);
    double eg = sqrt(a.gpu / a.ref), eb = sqrt(a.bf16 / a.ref);
    CHECK(eg <= 1.25 * eb, "%s: over all %u compared rows, GPU rel L2 %.2e vs transformers bf16 "
          "%.2e (x%.2f, bound 1.25)", label, t.rows, eg, eb, eg / eb);
    CHECK(a.worst_gpu <= YARD * a.worst_bf16, "%s: worst single row over the %u compared rows, GPU "
          "rel L2 %.2e vs transformers bf16 %.2e (x%.2f, bound %.2f)", label, t.rows, a.worst_gpu,
          a.worst_bf16, a.worst_gpu / a.worst_bf16, YARD);
    CHECK(t.top1_gpu - t.ties_gpu <= t.top1_bf16, "%s: top-1 misses against transformers f32: GPU %u "
          "(%u of them near-ties within its noise), transformers bf16 %u, over %u rows", label,
          t.top1_gpu, t.ties_gpu, t.top1_bf16, t.rows);
    determinism(r, label, &f32.c[2]);
    /* after a reload: the same logits again */
    const struct golden_case *c2 = &f32.c[2];
    float *x = malloc(4ull * c2->V), *y = malloc(4ull * c2->V);
    struct rt_sampling greedy = {.max_new = 4, .top_p = 1.0f};
    int ok1 = !rt_reset(r, &greedy, err) && !rt_prefill_logits(r, c2->prompt, c2->T, x, err);
    rt_close(r);
    r = NULL;
    int ok2 = ok1 && !rt_open(&r, &ro, err) && !rt_reset(r, &greedy, err) &&
              !rt_prefill_logits(r, c2->prompt, c2->T, y, err);
    CHECK(ok2 && !memcmp(x, y, 4ull * c2->V), "%s: identical logits after a reload%s%s", label,
          ok2 ? "" : ": ", err);
    rt_close(r);
    free(x), free(y);
    golden_free(&f32);
    golden_free(&bf);
}

int main(void)
{
    struct gpu g;
    if (gpu_open(&g))
        return test_skip("no CUDA device");
    mkdir(TMP, 0755);
    /* E2E_ONLY=NAME: only the mkmodel checkpoint NAME (looking into one checkpoint) */
    const char *only = getenv("E2E_ONLY");
    if (!only)
        run_checkpoint(&g, "tiny-a", "test/data/fixtures/tiny-a", "test/data/fixtures/tiny-a/golden-f32.bin",
                   "test/data/fixtures/tiny-a/golden-bf16.bin");
    if (getenv("E2E_QUICK") && !only) {
        gpu_close(&g);
        return test_done();
    }
    if (!only) {
        run_checkpoint(&g, "tiny-a-fused", "test/data/fixtures/tiny-a-fused",
                       "test/data/fixtures/tiny-a/golden-f32.bin", "test/data/fixtures/tiny-a/golden-bf16.bin");
        run_int4(&g, "tiny-a", "test/data/fixtures/tiny-a", "test/data/fixtures/tiny-a/golden-f32.bin");
    }
    const char *mk[] = {"tiny-b", "tiny-8l", "tiny-odd"};
    for (int i = 0; i < 3; i++) {
        char dir[256], f[256], b[256], err[MKMODEL_ERR_LEN];
        if (only && strcmp(only, mk[i]))
            continue;
        struct mkmodel_opts o = {.seed = 1};
        snprintf(dir, sizeof dir, TMP "/%s", mk[i]);
        int rc = mkmodel_write(dir, mkmodel_find(mk[i]), &o, err);
        CHECK(rc == 0, "%s: checkpoint regenerated%s%s", mk[i], rc ? ": " : "", rc ? err : "");
        snprintf(f, sizeof f, "test/data/mk/%s/golden-f32.bin", mk[i]);
        snprintf(b, sizeof b, "test/data/mk/%s/golden-bf16.bin", mk[i]);
        if (!rc)
            run_checkpoint(&g, mk[i], dir, f, b);
        if (!rc && i == 1) /* tiny-8l: widths divide the INT4 group */
            run_int4(&g, mk[i], dir, f);
    }
    gpu_close(&g);
    return test_done();
}
