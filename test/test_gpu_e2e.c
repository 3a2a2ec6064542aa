/* test_gpu_e2e.c — the whole model on the GPU against transformers.
 *
 * For each tiny checkpoint (the transformers fixtures tiny-a in both expert layouts, and the
 * mkmodel checkpoints tiny-b, tiny-8l, tiny-odd regenerated from their seed): convert it to a
 * bf16 image with the real converter, plan it with the real planner (prefill buckets 16 and
 * 64, so prompts of 130 and 300 tokens run as several chunks continuing from the cache; decode
 * single pass up to 64 tokens of context, split-K above), load both with rt, and for every
 * golden case run the prompt and then the 16 teacher-forced decode steps, comparing logits with
 * transformers' float32 run. The yardstick (test/data/fixtures/README.md): the bf16 GPU path
 * must be no further from golden-f32 than transformers' own bf16 run is — within 1.5x of that
 * error per case and per decode step — with top-1 agreement no worse. Prefill compares the
 * last prompt position (the runtime computes lm_head there only). Then determinism: the same
 * case again gives identical logits, and greedy generation agrees with the logits. */
#include <math.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "../plan/build.h"
#include "../rt/rt.h"
#include "../weights/convert.h"
#include "golden.h"
#include "gpu.h"
#include "ref/mkmodel_gen.h"

#define TMP "build/test/gpu_e2e"
#define YARD 1.5

/* Plan cfg for the device's arch into path. */
static int write_plan(const struct model_config *c, int sm, const char *path, char *err)
{
    struct pb b;
    struct wt_format f = {PLAN_QUANT_BF16, 0, PLAN_QUANT_BF16};
    if (pb_init(&b, c, &f, 512, err))
        return -1;
    b.split_threshold = 64, b.n_split = 8;
    b.num_buckets = 2, b.buckets[0] = 16, b.buckets[1] = 64;
    char arch[64];
    snprintf(arch, sizeof arch, "build/kern/sm_%d%s.cubin", sm, sm == 90 ? "a" : "");
    size_t isz = 0;
    uint8_t *img = (uint8_t *)test_read_file(arch, &isz), *out = NULL;
    struct plan_image im = {(uint32_t)sm, PLAN_IMAGE_CUBIN, 0, isz};
    struct plan_content pc;
    size_t n = 0;
    int rc = -1;
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
    if (fp)
        fclose(fp);
out:
    free(out);
    free(img);
    pb_free(&b);
    return rc;
}

struct tally {
    uint32_t rows, top1_gpu, top1_bf16; /* rows compared; argmax misses against golden-f32 */
    double worst_ratio;
};

/* One comparison row: GPU logits g, transformers f32 row f and bf16 row h (h may be NULL when
 * the bf16 run was fed other tokens); yard is the bf16 run's error for this row or case. */
static int row_ok(struct tally *t, const float *g, const float *f, const float *h, uint32_t V,
                  double yard, double *err)
{
    *err = rel_l2(g, f, V);
    t->rows++;
    t->top1_gpu += argmax(g, V) != argmax(f, V);
    if (h)
        t->top1_bf16 += argmax(h, V) != argmax(f, V);
    double ratio = *err / yard;
    t->worst_ratio = ratio > t->worst_ratio ? ratio : t->worst_ratio;
    return ratio <= YARD && isfinite(*err);
}

/* Errors of one checkpoint, summed over every compared row: the GPU's and transformers bf16's
 * squared distances to golden-f32, and golden-f32's squared norm. */
struct agg {
    double gpu, bf16, ref;
};

static void agg_add(struct agg *a, const float *g, const float *f, const float *h, uint32_t V)
{
    for (uint32_t i = 0; i < V; i++) {
        double d = (double)g[i] - f[i], e = (double)h[i] - f[i];
        a->gpu += d * d, a->bf16 += e * e, a->ref += (double)f[i] * f[i];
    }
}

static void run_case(struct rt *r, const char *label, const struct golden_case *f32,
                     const struct golden_case *bf, struct tally *t, struct agg *a)
{
    char err[RT_ERR_LEN] = "";
    uint32_t V = f32->V;
    float *g = malloc(4ull * V);
    struct rt_sampling greedy = {.max_new = 1u << 20, .top_p = 1.0f};
    /* the bf16 run's error: on this row, and over the case (all prompt rows; all decode steps) */
    const float *f_last = f32->prefill + (size_t)(f32->T - 1) * V, *h_last = bf->prefill + (size_t)(f32->T - 1) * V;
    double yard_case = rel_l2(bf->prefill, f32->prefill, (size_t)f32->T * V);
    double yard_row = rel_l2(h_last, f_last, V), e = 0;
    double yard = yard_row > yard_case ? yard_row : yard_case;
    enum rt_status st = rt_reset(r, &greedy, err);
    if (!st)
        st = rt_prefill_logits(r, f32->prompt, f32->T, g, err);
    int ok = !st && row_ok(t, g, f_last, h_last, V, yard, &e);
    if (!st)
        agg_add(a, g, f_last, h_last, V);
    CHECK(ok, "%s T=%u prefill: last-row rel L2 %.2e; transformers bf16 %.2e on the row, %.2e over "
          "the prompt (x%.2f)%s%s", label, f32->T, e, yard_row, yard_case, e / yard, st ? ": " : "", err);
    /* decode: the bf16 run's rows are comparable while both runs were fed the same tokens */
    uint32_t same = 0;
    while (same < f32->D && bf->fed[same] == f32->fed[same])
        same++;
    double yd = same ? rel_l2(bf->decode, f32->decode, (size_t)same * V) : yard_case;
    double worst = 0, worst_yard = 1;
    int dec_ok = !st;
    for (uint32_t s = 0; s < f32->D && !st; s++) {
        const float *f = f32->decode + (size_t)s * V, *h = s < same ? bf->decode + (size_t)s * V : NULL;
        double ys = h ? rel_l2(h, f, V) : 0;
        ys = ys > yd ? ys : yd;
        st = rt_decode_logits(r, f32->fed[s], g, err);
        if (st)
            break;
        if (!row_ok(t, g, f, h, V, ys, &e))
            dec_ok = 0;
        if (h)
            agg_add(a, g, f, h, V);
        if (e / ys > worst / worst_yard)
            worst = e, worst_yard = ys;
    }
    CHECK(dec_ok && !st, "%s T=%u: %u teacher-forced decode steps each within %.1fx of transformers "
          "bf16 (its %.2e over the steps; worst step %.2e against %.2e)%s%s", label, f32->T, f32->D,
          YARD, yd, worst, worst_yard, st ? ": " : "", err);
    free(g);
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
             write_plan(&c, g->sm, plan, err) == 0;
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
    for (uint32_t i = 0; i < f32.n && i < bf.n; i++)
        run_case(r, label, &f32.c[i], &bf.c[i], &t, &a);
    double eg = sqrt(a.gpu / a.ref), eb = sqrt(a.bf16 / a.ref);
    CHECK(eg <= 1.25 * eb, "%s: over all %u compared rows, GPU rel L2 %.2e vs transformers bf16 "
          "%.2e (x%.2f, bound 1.25)", label, t.rows, eg, eb, eg / eb);
    CHECK(t.top1_gpu <= t.top1_bf16, "%s: top-1 misses against transformers f32: GPU %u, transformers "
          "bf16 %u, over %u rows (worst error ratio %.2f)", label, t.top1_gpu, t.top1_bf16, t.rows,
          t.worst_ratio);
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
    run_checkpoint(&g, "tiny-a", "test/data/fixtures/tiny-a", "test/data/fixtures/tiny-a/golden-f32.bin",
                   "test/data/fixtures/tiny-a/golden-bf16.bin");
    run_checkpoint(&g, "tiny-a-fused", "test/data/fixtures/tiny-a-fused",
                   "test/data/fixtures/tiny-a/golden-f32.bin", "test/data/fixtures/tiny-a/golden-bf16.bin");
    const char *mk[] = {"tiny-b", "tiny-8l", "tiny-odd"};
    for (int i = 0; i < 3; i++) {
        char dir[256], f[256], b[256], err[MKMODEL_ERR_LEN];
        struct mkmodel_opts o = {.seed = 1};
        snprintf(dir, sizeof dir, TMP "/%s", mk[i]);
        int rc = mkmodel_write(dir, mkmodel_find(mk[i]), &o, err);
        CHECK(rc == 0, "%s: checkpoint regenerated%s%s", mk[i], rc ? ": " : "", rc ? err : "");
        snprintf(f, sizeof f, "test/data/mk/%s/golden-f32.bin", mk[i]);
        snprintf(b, sizeof b, "test/data/mk/%s/golden-bf16.bin", mk[i]);
        if (!rc)
            run_checkpoint(&g, mk[i], dir, f, b);
    }
    gpu_close(&g);
    return test_done();
}
