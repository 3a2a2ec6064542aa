/* test_gpu_attn.c — the gated attention kernels (kern/attn.cu, attn_prefill.cu) against their
 * CPU references (test/ref/kref_attn.c).
 *
 * Three shapes: full (Qwen3.5-35B-A3B: 16 q heads, 2 kv heads, head_dim 256, rotary 64),
 * tiny-a (4/2 heads of 64, rotary 16) and odd (5 q heads on 1 kv head of 40, rotary 8: a group
 * that is not a multiple of the 8 rows a warp holds, lanes idle past head_dim / 8).
 *   k_attn_rope: decode rows, the last cache row, a chunk shorter than its bucket, done.
 *   decode: L = 1, 7, 255, 256, 257, 1000 (and 4096 at full size), single pass and split-K
 *     (n_split 64 and 7) + reduce, each against the reference and split against single; one
 *     case with large scores (running-max stability); done leaves everything untouched. Both
 *     builds: the warp walk (k_attn_decode, _split) and, at head_dim 64 and 256 (full and
 *     tiny-a), tensor cores (k_attn_decode_tc, _split_tc).
 *   k_attn_prefill and k_attn_prefill_tc, each: T = 1, 5, 64, 65, 300 over a cached prefix of
 *     0 and 100 tokens (with 100, the bucket is 3 rows larger than the chunk), and rope ->
 *     prefill chained on the device; a 64-token chunk after max_seq / 2 and 5 tokens at the end
 *     of the cache; k_attn_prefill_tc also in key runs (the planner's count for the bucket, 3
 *     and 16) with k_attn_prefill_reduce; at full size also a 2048-token chunk after a
 *     2048-token prefix, its first, middle and last rows against the reference (the timing's
 *     inputs).
 *     k_attn_prefill_tc runs where the device's opt-in shared memory holds K_ATTN_TC_SMEM; at
 *     head_dim 256 the sm_90a image runs its wgmma body, the others (and other images) mma.sync.
 * ATTN_QUICK=1 (for compute-sanitizer) leaves out the full-size timings and 2048-token chunks.
 * Inputs are fresh test_rand() values; every output buffer is poisoned (0xFF) before each
 * launch and every element is checked: the expected ones against the reference, the rest for
 * the poison. Cache rows past the filled length hold the poison too (bf16 NaN), so a kernel
 * that reads past L turns its output into NaN.
 *
 * Tolerances. RoPE/append: the device and the reference compute the same bf16 ops; only the
 * norm's fp32 sum order (and rsqrtf vs 1/sqrtf) differs, which moves a normed value by one
 * bf16 ulp in rare cases; that ulp (at most 2^-6 for |y| < 4) passes through the rotation, so
 * an element may differ by 2 ulps of itself plus 2^-6, and at most 0.1% may differ at all;
 * v is copied bit for bit. Attention: the device sums in fp32 in another order and keeps the
 * probabilities in fp32 as the reference does, so before the final bf16 roundings the two
 * differ by ~1e-6 relative; after bf16(o) and the bf16 gate product that is at most 2 ulps of
 * the result (a rounding flip of o and of the product; ulps of the larger of the two values, so
 * a flip across a power of two counts in the upper binade's) plus 1e-5 absolute for outputs
 * that cancel to near zero; at least 99% must be bit-exact. k_attn_prefill_tc feeds P to the
 * tensor cores as bf16 hi + lo (p to 2^-17 relative): in a CPU emulation of the T = 300,
 * prefix 100 cases that leaves 99.8% bit-exact and none past the tolerance (a single bf16 P
 * would leave 66% exact and 4% past it), so the same tolerance holds. */
#include <math.h>
#include <string.h>

#include "../kern/attn.h"
#include "../kern/step.h"
#include "gpu.h"
#include "ref/kref_attn.h"

#define POISON 0xFFFFu
#define MAX_T 303 /* largest bucket: 300 + 3 */

struct cfg {
    const char *name;
    uint32_t nh, nkv, hd, rd, max_seq;
    float theta;
};

/* device buffers of one shape, sized for its largest case */
struct bufs {
    CUdeviceptr qg, k, v, qn, kn, q, kc, vc, out, part_o, part_ml, step;
    CUdeviceptr pf_o, pf_ml; /* prefill key runs: K_ATTN_PF_MAXS x MAX_T rows */
    size_t cache_elems;
};

static struct gpu g;
static CUfunction f_rope, f_red, f_pre, f_pre_tc, f_pre_red;
/* the decode kernels: [0] the warp walk, [1] tensor cores (head_dim with K_ATTN_DEC_TC_OK) */
static CUfunction f_dec[2], f_split[2];
static const char *const dec_name[2] = {"k_attn_decode", "k_attn_decode_tc"};
static const char *const split_name[2] = {"k_attn_decode_split", "k_attn_decode_split_tc"};
static int smem_optin; /* the device's opt-in shared memory per block */
static unsigned long long rng = 0x5EED;

/* ---- host helpers ------------------------------------------------------------------------- */

/* n bf16 values uniform in [-a, a) (never all zero) */
static uint16_t *rand_bf16(size_t n, float a)
{
    uint16_t *x = malloc(n * 2);
    for (size_t i = 0; i < n; i++)
        x[i] = kref_f2bf(a * (2.0f * (float)(test_rand(&rng) >> 40) / 16777216.0f - 1.0f));
    return x;
}

static uint16_t *poisoned(size_t n)
{
    uint16_t *x = malloc(n * 2);
    memset(x, 0xFF, n * 2);
    return x;
}

static float ulp_bf16(float x)
{
    int e;
    frexpf(fabsf(x), &e);
    return x == 0.0f ? 0.0f : ldexpf(1.0f, e - 8);
}

/* Compare n bf16 values where want != POISON; where want == POISON, got must be untouched.
 * tol = ulps * ulp(max(|got|, |want|)) + abs, got finite. Prints the first mismatches; returns 1 when all pass and
 * at least min_exact of the compared values are bit-exact. */
static int compare(const char *what, const uint16_t *got, const uint16_t *want, size_t n,
                   float ulps, float abs_tol, double min_exact)
{
    size_t bad = 0, cmp = 0, exact = 0, worst_i = 0;
    float worst = 0;
    for (size_t i = 0; i < n; i++) {
        if (want[i] == POISON) {
            if (got[i] != POISON && bad++ < 5)
                printf("#   %s[%zu] written: 0x%04x (must stay poisoned)\n", what, i, got[i]);
            continue;
        }
        float w = kref_bf2f(want[i]), v = kref_bf2f(got[i]), e = fabsf(v - w);
        cmp++, exact += got[i] == want[i];
        if (!isfinite(v) || !(e <= ulps * ulp_bf16(fmaxf(fabsf(w), fabsf(v))) + abs_tol)) {
            if (bad++ < 5)
                printf("#   %s[%zu] = %g, want %g (0x%04x vs 0x%04x)\n", what, i, v, w, got[i], want[i]);
        } else if (e > worst)
            worst = e, worst_i = i;
    }
    double fx = cmp ? (double)exact / cmp : 1.0;
    printf("#   %s: %zu compared, %.4f%% exact, worst passing error %g at %zu, %zu bad\n", what, cmp,
           100 * fx, worst, worst_i, bad);
    return bad == 0 && fx >= min_exact;
}

static int cmp_attn(const char *what, const uint16_t *got, const uint16_t *want, size_t n)
{
    return compare(what, got, want, n, 2.0f, 1e-5f, 0.99);
}

static void up(CUdeviceptr d, const void *h, size_t bytes) { CU(&g, cuMemcpyHtoD(d, h, bytes)); }
static void down(void *h, CUdeviceptr d, size_t bytes) { CU(&g, cuMemcpyDtoH(h, d, bytes)); }
static void poison(CUdeviceptr d, size_t bytes) { CU(&g, cuMemsetD8(d, 0xFF, bytes)); }

static void set_step(struct bufs *b, uint32_t pos, uint32_t n_tokens, uint32_t done)
{
    struct k_step st;
    memset(&st, 0, sizeof st);
    st.pos = pos, st.n_tokens = n_tokens, st.done = done, st.max_new = 1, st.top_p = 1.0f;
    up(b->step, &st, sizeof st);
}

static void launch_smem3(CUfunction f, void *params, unsigned gx, unsigned gy, unsigned gz, unsigned block,
                         unsigned smem)
{
    void *args[] = {params};
    CU(&g, cuLaunchKernel(f, gx, gy, gz, block, 1, 1, smem, NULL, args, NULL));
    CU(&g, cuCtxSynchronize());
}

static void launch_smem(CUfunction f, void *params, unsigned gx, unsigned gy, unsigned block,
                        unsigned smem)
{
    launch_smem3(f, params, gx, gy, 1, block, smem);
}

static void launch(CUfunction f, void *params, unsigned gx, unsigned gy, unsigned block)
{
    launch_smem(f, params, gx, gy, block, 0);
}

static struct k_attn_dims dims_of(const struct cfg *c, uint32_t T_max)
{
    return (struct k_attn_dims){.n_heads = c->nh, .n_kv = c->nkv, .head_dim = c->hd,
                                .rotary_dim = c->rd, .max_seq = c->max_seq, .T_max = T_max,
                                .eps = 1e-6f, .rope_theta = c->theta,
                                .scale = 1.0f / sqrtf((float)c->hd)};
}

static struct kref_attn_dims rdims_of(const struct cfg *c)
{
    return (struct kref_attn_dims){c->nh, c->nkv, c->hd, c->rd, c->max_seq, 1e-6f, c->theta,
                                   1.0f / sqrtf((float)c->hd)};
}

/* A cache with rows [0, filled) of every kv head random and the rest poisoned (bf16 NaN). */
static uint16_t *rand_cache(const struct cfg *c, uint32_t filled, float a)
{
    uint16_t *x = poisoned((size_t)c->nkv * c->max_seq * c->hd);
    for (uint32_t h = 0; h < c->nkv; h++) {
        uint16_t *r = rand_bf16((size_t)filled * c->hd, a);
        memcpy(x + (size_t)h * c->max_seq * c->hd, r, (size_t)filled * c->hd * 2);
        free(r);
    }
    return x;
}

/* ---- k_attn_rope -------------------------------------------------------------------------- */

static void test_rope(const struct cfg *c, struct bufs *b, uint32_t T_max, uint32_t n, uint32_t pos,
                      uint32_t done)
{
    uint32_t hd = c->hd, nh = c->nh, nkv = c->nkv;
    size_t nq = (size_t)T_max * nh * hd, nkvt = (size_t)T_max * nkv * hd, ncache = b->cache_elems;
    uint16_t *qg = rand_bf16(2 * nq, 3.0f), *k = rand_bf16(nkvt, 3.0f), *v = rand_bf16(nkvt, 1.0f);
    uint16_t *qn = rand_bf16(hd, 0.5f), *kn = rand_bf16(hd, 0.5f);
    uint16_t *q_want = poisoned(nq), *kc_want = poisoned(ncache), *vc_want = poisoned(ncache);
    uint16_t *q_got = malloc(nq * 2), *kc_got = malloc(ncache * 2), *vc_got = malloc(ncache * 2);
    up(b->qg, qg, 4 * nq), up(b->k, k, 2 * nkvt), up(b->v, v, 2 * nkvt);
    up(b->qn, qn, 2 * hd), up(b->kn, kn, 2 * hd);
    poison(b->q, 2 * nq), poison(b->kc, 2 * ncache), poison(b->vc, 2 * ncache);
    set_step(b, pos, n, done);
    struct k_attn_rope_params p = {.qg = b->qg, .k = b->k, .v = b->v, .q_norm = b->qn, .k_norm = b->kn,
                                   .q_out = b->q, .k_cache = b->kc, .v_cache = b->vc, .step = b->step,
                                   .d = dims_of(c, T_max)};
    /* as the planner launches it: decode shares the heads among CTAs of 8 warps */
    uint32_t gy = T_max == 1 ? (nh + nkv + K_ATTN_ROPE_THREADS / 32 - 1) / (K_ATTN_ROPE_THREADS / 32) : 1;
    launch(f_rope, &p, T_max, gy, K_ATTN_ROPE_THREADS);
    down(q_got, b->q, 2 * nq), down(kc_got, b->kc, 2 * ncache), down(vc_got, b->vc, 2 * ncache);
    struct kref_attn_dims rd = rdims_of(c);
    if (!done)
        kref_attn_rope(&rd, qg, k, v, qn, kn, T_max == 1 ? 1 : n, pos, q_want, kc_want, vc_want);
    int ok = compare("q_out", q_got, q_want, nq, 2.0f, 0x1p-6f, 0.999);
    ok &= compare("k_cache", kc_got, kc_want, ncache, 2.0f, 0x1p-6f, 0.999);
    ok &= compare("v_cache", vc_got, vc_want, ncache, 0.0f, 0.0f, 1.0);
    CHECK(ok, "k_attn_rope %s T_max=%u (%u CTAs a token) n=%u pos=%u%s: q_out and the appended k/v rows "
              "match, nothing else written", c->name, T_max, gy, n, pos, done ? " done (writes nothing)" : "");
    free(qg), free(k), free(v), free(qn), free(kn), free(q_want), free(kc_want), free(vc_want);
    free(q_got), free(kc_got), free(vc_got);
}

/* ---- decode ------------------------------------------------------------------------------- */

static void run_single(struct bufs *b, const struct cfg *c, int tc, uint16_t *got)
{
    size_t nq = (size_t)c->nh * c->hd;
    poison(b->out, 2 * nq);
    struct k_attn_decode_params p = {.q = b->q, .qg = b->qg, .k_cache = b->kc, .v_cache = b->vc,
                                     .out = b->out, .step = b->step, .d = dims_of(c, 1), .n_split = 1};
    launch(f_dec[tc], &p, c->nkv, 1, K_ATTN_THREADS);
    down(got, b->out, 2 * nq);
}

/* split + reduce; returns 1 when exactly the pieces in use (ceil(L / c)) were written, finite */
static int run_split(struct bufs *b, const struct cfg *c, int tc, uint32_t L, uint32_t n_split,
                     uint16_t *got)
{
    size_t nq = (size_t)c->nh * c->hd, npo = n_split * nq, nml = 2 * (size_t)n_split * c->nh;
    poison(b->out, 2 * nq), poison(b->part_o, 4 * npo), poison(b->part_ml, 4 * nml);
    struct k_attn_decode_params p = {.q = b->q, .qg = b->qg, .k_cache = b->kc, .v_cache = b->vc,
                                     .part_o = b->part_o, .part_ml = b->part_ml, .out = b->out,
                                     .step = b->step, .d = dims_of(c, 1), .n_split = n_split};
    launch(f_split[tc], &p, n_split, c->nkv, K_ATTN_THREADS);
    float *po = malloc(4 * npo), *ml = malloc(4 * nml);
    down(po, b->part_o, 4 * npo), down(ml, b->part_ml, 4 * nml);
    launch(f_red, &p, c->nh, 1, K_ATTN_REDUCE_THREADS(c->hd));
    down(got, b->out, 2 * nq);
    uint32_t piece = (L + n_split - 1) / n_split, used = (L + piece - 1) / piece;
    int ok = 1;
    for (size_t i = 0; i < npo && ok; i++) {
        uint32_t u;
        memcpy(&u, &po[i], 4);
        ok = i / nq < used ? isfinite(po[i]) : u == 0xFFFFFFFFu;
    }
    for (size_t i = 0; i < nml && ok; i++) {
        uint32_t u;
        memcpy(&u, &ml[i], 4);
        ok = i / (2 * c->nh) < used ? isfinite(ml[i]) && (i % 2 == 0 || ml[i] >= 1.0f) : u == 0xFFFFFFFFu;
    }
    if (!ok)
        printf("#   split partials: pieces in use %u of %u not exactly written or not finite\n", used, n_split);
    free(po), free(ml);
    return ok;
}

static void test_decode(const struct cfg *c, struct bufs *b, uint32_t L, float qa, const char *tag)
{
    size_t nq = (size_t)c->nh * c->hd;
    uint16_t *q = rand_bf16(nq, qa), *qg = rand_bf16(2 * nq, 4.0f);
    uint16_t *kc = rand_cache(c, L, 2.0f), *vc = rand_cache(c, L, 1.0f);
    uint16_t *want = malloc(2 * nq), *single = malloc(2 * nq), *split = malloc(2 * nq);
    up(b->q, q, 2 * nq), up(b->qg, qg, 4 * nq);
    up(b->kc, kc, 2 * b->cache_elems), up(b->vc, vc, 2 * b->cache_elems);
    set_step(b, L - 1, 1, 0);
    struct kref_attn_dims rd = rdims_of(c);
    kref_attn(&rd, q, qg, kc, vc, 1, L - 1, want);

    for (int tc = 0; tc < 1 + K_ATTN_DEC_TC_OK(c->hd); tc++) {
        run_single(b, c, tc, single);
        CHECK(cmp_attn("out", single, want, nq), "%s %s L=%u%s matches the reference",
              dec_name[tc], c->name, L, tag);
        const uint32_t splits[] = {64, 7};
        for (int i = 0; i < 2; i++) {
            int ok = run_split(b, c, tc, L, splits[i], split);
            ok &= cmp_attn("out", split, want, nq);
            CHECK(ok, "%s+reduce %s L=%u n_split=%u%s matches the reference, partials bounded "
                      "by L", split_name[tc], c->name, L, splits[i], tag);
            if (i == 0)
                CHECK(cmp_attn("split vs single", split, single, nq), "%s %s L=%u%s agrees with %s",
                      split_name[tc], c->name, L, tag, dec_name[tc]);
        }
    }
    free(q), free(qg), free(kc), free(vc), free(want), free(single), free(split);
}

/* all 0xFF bytes */
static int untouched(CUdeviceptr d, size_t bytes)
{
    uint8_t *h = malloc(bytes);
    down(h, d, bytes);
    size_t i = 0;
    while (i < bytes && h[i] == 0xFF)
        i++;
    free(h);
    return i == bytes;
}

/* a done step: the decode kernels and the reduce write nothing */
static void test_decode_done(const struct cfg *c, struct bufs *b)
{
    size_t nq = (size_t)c->nh * c->hd, n_split = 4;
    set_step(b, 9, 1, 1);
    poison(b->out, 2 * nq), poison(b->part_o, 4 * n_split * nq), poison(b->part_ml, 8 * n_split * c->nh);
    struct k_attn_decode_params p = {.q = b->q, .qg = b->qg, .k_cache = b->kc, .v_cache = b->vc,
                                     .part_o = b->part_o, .part_ml = b->part_ml, .out = b->out,
                                     .step = b->step, .d = dims_of(c, 1), .n_split = n_split};
    for (int tc = 0; tc < 1 + K_ATTN_DEC_TC_OK(c->hd); tc++) {
        launch(f_dec[tc], &p, c->nkv, 1, K_ATTN_THREADS);
        launch(f_split[tc], &p, n_split, c->nkv, K_ATTN_THREADS);
    }
    launch(f_red, &p, c->nh, 1, K_ATTN_REDUCE_THREADS(c->hd));
    int ok = untouched(b->out, 2 * nq) && untouched(b->part_o, 4 * n_split * nq) &&
             untouched(b->part_ml, 8 * n_split * c->nh);
    CHECK(ok, "k_attn_decode, _split, _reduce (and the _tc ones) %s: a done step writes nothing",
          c->name);
}

/* ---- prefill ------------------------------------------------------------------------------ */

/* the two prefill kernels: 0 k_attn_prefill, 1 k_attn_prefill_tc */
static const char *const pre_name[2] = {"k_attn_prefill", "k_attn_prefill_tc"};

/* whether k_attn_prefill_tc takes this shape on this device */
static int tc_takes(const struct cfg *c)
{
    return K_ATTN_TC_OK(c->hd) && (int)K_ATTN_TC_SMEM(c->hd) <= smem_optin;
}

/* Launch prefill kernel `tc` over a bucket of T_max rows with the planner's launch shape. */
static void launch_prefill(const struct cfg *c, struct k_attn_prefill_params *p, uint32_t T_max, int tc)
{
    uint32_t group = c->nh / c->nkv;
    if (tc)
        launch_smem(f_pre_tc, p, (T_max * group + K_ATTN_TC_BM - 1) / K_ATTN_TC_BM, c->nkv,
                    K_ATTN_TC_THREADS, K_ATTN_TC_SMEM(c->hd));
    else
        launch(f_pre, p, (T_max * group + K_ATTN_BM - 1) / K_ATTN_BM, c->nkv, K_ATTN_THREADS);
}

static void run_prefill(const struct cfg *c, struct bufs *b, uint32_t T_max, uint16_t *got, int tc)
{
    size_t nq = (size_t)T_max * c->nh * c->hd;
    poison(b->out, 2 * nq);
    struct k_attn_prefill_params p = {.q = b->q, .qg = b->qg, .k_cache = b->kc, .v_cache = b->vc,
                                      .out = b->out, .step = b->step, .d = dims_of(c, T_max)};
    launch_prefill(c, &p, T_max, tc);
    down(got, b->out, 2 * nq);
}

/* the planner's key runs for a bucket of T_max rows (1: none) */
static uint32_t plan_split(const struct cfg *c, uint32_t T_max)
{
    return k_attn_pf_splits((T_max * (c->nh / c->nkv) + K_ATTN_TC_BM - 1) / K_ATTN_TC_BM * c->nkv);
}

/* k_attn_prefill_tc over n_split key runs, then k_attn_prefill_reduce; the runs' buffers are
 * poisoned first, so a live row a run leaves unwritten turns its output into NaN */
static void run_prefill_split(const struct cfg *c, struct bufs *b, uint32_t T_max, uint32_t n_split, uint16_t *got)
{
    size_t nq = (size_t)T_max * c->nh * c->hd;
    poison(b->out, 2 * nq);
    poison(b->pf_o, 4 * nq * n_split);
    poison(b->pf_ml, 8ull * T_max * c->nh * n_split);
    struct k_attn_prefill_params p = {.q = b->q, .qg = b->qg, .k_cache = b->kc, .v_cache = b->vc,
                                      .out = b->out, .step = b->step, .part_o = b->pf_o, .part_ml = b->pf_ml,
                                      .d = dims_of(c, T_max), .n_split = n_split};
    launch_smem3(f_pre_tc, &p, (T_max * (c->nh / c->nkv) + K_ATTN_TC_BM - 1) / K_ATTN_TC_BM, c->nkv, n_split,
                 K_ATTN_TC_THREADS, K_ATTN_TC_SMEM(c->hd));
    launch(f_pre_red, &p, T_max * c->nh, 1, K_ATTN_REDUCE_THREADS(c->hd));
    down(got, b->out, 2 * nq);
}

static void test_prefill(const struct cfg *c, struct bufs *b, uint32_t T, uint32_t prefix)
{
    uint32_t T_max = prefix ? T + 3 : T; /* with a prefix, the bucket is larger than the chunk */
    size_t nq = (size_t)T_max * c->nh * c->hd;
    uint16_t *q = rand_bf16(nq, 2.0f), *qg = rand_bf16(2 * nq, 4.0f);
    uint16_t *kc = rand_cache(c, prefix + T, 2.0f), *vc = rand_cache(c, prefix + T, 1.0f);
    uint16_t *want = poisoned(nq), *got = malloc(2 * nq);
    up(b->q, q, 2 * nq), up(b->qg, qg, 4 * nq);
    up(b->kc, kc, 2 * b->cache_elems), up(b->vc, vc, 2 * b->cache_elems);
    set_step(b, prefix, T, 0);
    struct kref_attn_dims rd = rdims_of(c);
    kref_attn(&rd, q, qg, kc, vc, T, prefix, want);
    for (int tc = 0; tc < 1 + tc_takes(c); tc++) {
        run_prefill(c, b, T_max, got, tc);
        CHECK(cmp_attn("out", got, want, nq), "%s %s T=%u (bucket %u) prefix=%u matches the "
              "reference, rows past T untouched", pre_name[tc], c->name, T, T_max, prefix);
    }
    /* the same over key runs: the planner's count for the bucket, and 3 and 16 (uneven runs,
     * runs without keys, rows none of whose keys fall in a run) */
    uint32_t splits[3] = {plan_split(c, T_max), 3, K_ATTN_PF_MAXS};
    for (int i = 0; i < 3 && tc_takes(c); i++) {
        if (splits[i] < 2 || (i > 0 && splits[i] == splits[0]))
            continue;
        run_prefill_split(c, b, T_max, splits[i], got);
        CHECK(cmp_attn("out", got, want, nq), "k_attn_prefill_tc in %u key runs + k_attn_prefill_reduce %s T=%u "
              "(bucket %u) prefix=%u matches the reference, rows past T untouched", splits[i], c->name, T, T_max,
              prefix);
    }
    free(q), free(qg), free(kc), free(vc), free(want), free(got);
}

/* k_attn_rope then each prefill kernel on the device: the reference attends over the q and
 * caches the device wrote, so this checks that rope and prefill agree on every layout. */
static void test_chain(const struct cfg *c, struct bufs *b, uint32_t T, uint32_t prefix)
{
    uint32_t hd = c->hd, nh = c->nh, nkv = c->nkv;
    size_t nq = (size_t)T * nh * hd, nkvt = (size_t)T * nkv * hd, ncache = b->cache_elems;
    uint16_t *qg = rand_bf16(2 * nq, 3.0f), *k = rand_bf16(nkvt, 3.0f), *v = rand_bf16(nkvt, 1.0f);
    uint16_t *qn = rand_bf16(hd, 0.5f), *kn = rand_bf16(hd, 0.5f);
    uint16_t *kc = rand_cache(c, prefix, 2.0f), *vc = rand_cache(c, prefix, 1.0f);
    uint16_t *q = malloc(2 * nq), *want = malloc(2 * nq), *got = malloc(2 * nq);
    up(b->qg, qg, 4 * nq), up(b->k, k, 2 * nkvt), up(b->v, v, 2 * nkvt);
    up(b->qn, qn, 2 * hd), up(b->kn, kn, 2 * hd);
    up(b->kc, kc, 2 * ncache), up(b->vc, vc, 2 * ncache);
    set_step(b, prefix, T, 0);
    struct k_attn_rope_params rp = {.qg = b->qg, .k = b->k, .v = b->v, .q_norm = b->qn, .k_norm = b->kn,
                                    .q_out = b->q, .k_cache = b->kc, .v_cache = b->vc, .step = b->step,
                                    .d = dims_of(c, T)};
    launch(f_rope, &rp, T, 1, K_ATTN_ROPE_THREADS);
    down(q, b->q, 2 * nq), down(kc, b->kc, 2 * ncache), down(vc, b->vc, 2 * ncache);
    struct kref_attn_dims rd = rdims_of(c);
    kref_attn(&rd, q, qg, kc, vc, T, prefix, want);
    for (int tc = 0; tc < 1 + tc_takes(c); tc++) {
        run_prefill(c, b, T, got, tc);
        CHECK(cmp_attn("out", got, want, nq), "k_attn_rope -> %s %s T=%u prefix=%u: the prefill "
              "reads what rope wrote", pre_name[tc], c->name, T, prefix);
    }
    free(qg), free(k), free(v), free(qn), free(kn), free(kc), free(vc), free(q), free(want), free(got);
}

/* ---- timing (informational) ------------------------------------------------------------------ */

static float time_us(CUfunction f, void *params, unsigned gx, unsigned gy, unsigned block,
                     unsigned smem)
{
    return (float)gpu_time_us(&g, f, params, gx, gy, block, smem, 20);
}

static float time_prefill(const struct cfg *c, struct k_attn_prefill_params *p, uint32_t T_max, int tc)
{
    uint32_t group = c->nh / c->nkv;
    if (tc)
        return time_us(f_pre_tc, p, (T_max * group + K_ATTN_TC_BM - 1) / K_ATTN_TC_BM, c->nkv,
                       K_ATTN_TC_THREADS, K_ATTN_TC_SMEM(c->hd));
    return time_us(f_pre, p, (T_max * group + K_ATTN_BM - 1) / K_ATTN_BM, c->nkv, K_ATTN_THREADS, 0);
}

/* full size only; inputs are whatever the last test left (finite in the ranges used) */
static void timings(const struct cfg *c, struct bufs *b)
{
    uint16_t *kc = rand_cache(c, c->max_seq, 2.0f), *vc = rand_cache(c, c->max_seq, 1.0f);
    up(b->kc, kc, 2 * b->cache_elems), up(b->vc, vc, 2 * b->cache_elems);
    struct k_attn_decode_params p = {.q = b->q, .qg = b->qg, .k_cache = b->kc, .v_cache = b->vc,
                                     .part_o = b->part_o, .part_ml = b->part_ml, .out = b->out,
                                     .step = b->step, .d = dims_of(c, 1), .n_split = 64};
    /* back to back (K and V L2-warm), then split and reduce one launch at a time from an
     * idle GPU with L2 flushed (the cache read from memory) */
    const uint32_t Ls[] = {256, 4096};
    const size_t flush_bytes = 128u << 20; /* more than an H100's 50 MiB of L2 */
    CUdeviceptr flush = gpu_alloc(&g, flush_bytes);
    for (int i = 0; i < 2; i++) {
        set_step(b, Ls[i] - 1, 1, 0);
        for (int tc = 0; tc < 1 + K_ATTN_DEC_TC_OK(c->hd); tc++) {
            float ts = time_us(f_dec[tc], &p, c->nkv, 1, K_ATTN_THREADS, 0);
            float tp = time_us(f_split[tc], &p, 64, c->nkv, K_ATTN_THREADS, 0);
            float tr = time_us(f_red, &p, c->nh, 1, K_ATTN_REDUCE_THREADS(c->hd), 0);
            double cp = gpu_time_cold(&g, f_split[tc], &p, 64, c->nkv, 1, K_ATTN_THREADS, 0,
                                      flush, flush_bytes, 21);
            double cr = gpu_time_cold(&g, f_red, &p, c->nh, 1, 1, K_ATTN_REDUCE_THREADS(c->hd), 0,
                                      flush, flush_bytes, 21);
            printf("# time %s %s L=%u: single %.1f us, split(64) %.1f us + reduce %.1f us; "
                   "one launch from idle, L2 flushed: split %.1f + reduce %.1f us (K+V %.2f MB)\n",
                   tc ? "tensor cores" : "warp walk", c->name, Ls[i], ts, tp, tr, cp, cr,
                   4.0 * c->nkv * Ls[i] * c->hd / 1e6);
        }
    }
    CU(&g, cuMemFree(flush));
    set_step(b, 100, 300, 0);
    struct k_attn_prefill_params pp = {.q = b->q, .qg = b->qg, .k_cache = b->kc, .v_cache = b->vc,
                                       .out = b->out, .step = b->step, .d = dims_of(c, 300)};
    double fl = 4.0 * c->nh * c->hd * 300 * (100 + 150.5);
    for (int tc = 0; tc < 1 + tc_takes(c); tc++) {
        float t = time_prefill(c, &pp, 300, tc);
        printf("# time %s %s T=300 prefix=100: %.1f us (%.2f TFLOP/s)\n", pre_name[tc], c->name, t,
               fl / t / 1e6);
    }
    /* a 128-token chunk in the 256 bucket after 3500 tokens: one pass, then the planner's runs */
    if (tc_takes(c)) {
        uint32_t S = plan_split(c, 256), gx = (256 * (c->nh / c->nkv) + K_ATTN_TC_BM - 1) / K_ATTN_TC_BM;
        set_step(b, 3500, 128, 0);
        pp.d = dims_of(c, 256), pp.part_o = b->pf_o, pp.part_ml = b->pf_ml;
        double one = gpu_time_us3(&g, f_pre_tc, &pp, gx, c->nkv, 1, K_ATTN_TC_THREADS, K_ATTN_TC_SMEM(c->hd), 20);
        pp.n_split = S;
        double runs = gpu_time_us3(&g, f_pre_tc, &pp, gx, c->nkv, S, K_ATTN_TC_THREADS, K_ATTN_TC_SMEM(c->hd), 20);
        double red = gpu_time_us(&g, f_pre_red, &pp, 256 * c->nh, 1, K_ATTN_REDUCE_THREADS(c->hd), 0, 20);
        double fl2 = 4.0 * c->nh * c->hd * 128 * (3500 + 64.5);
        printf("# time k_attn_prefill_tc %s T=128 (bucket 256) prefix=3500: one pass %.1f us (%.1f TFLOP/s); "
               "%u key runs %.1f us + reduce %.1f us (%.1f TFLOP/s)\n", c->name, one, fl2 / one / 1e6, S, runs, red,
               fl2 / (runs + red) / 1e6);
    }
    free(kc), free(vc);
}

/* The full-size prefill shapes: a 2048-token chunk after a 2048-token prefix (the planner's
 * largest chunk, at the end of a 4096 context) and 4096 tokens from position 0, timed for both
 * kernels. For the first, rows at the start, middle and end of the chunk of each kernel's
 * output are checked against the reference (all of it would take minutes on the CPU). */
static void prefill_full(const struct cfg *c, struct bufs *b)
{
    const uint32_t Tn = 4096, nspot = 4, spot[3] = {0, 1022, 2044};
    size_t nrow = (size_t)c->nh * c->hd, nq = Tn * nrow;
    uint16_t *q = rand_bf16(nq, 2.0f), *qg = rand_bf16(2 * nq, 4.0f);
    uint16_t *kc = rand_cache(c, c->max_seq, 2.0f), *vc = rand_cache(c, c->max_seq, 1.0f);
    uint16_t *got = malloc(2 * nq), *want = malloc(2 * 3 * nspot * nrow);
    CUdeviceptr dq = gpu_alloc(&g, 2 * nq), dqg = gpu_alloc(&g, 4 * nq), dout = gpu_alloc(&g, 2 * nq);
    up(dq, q, 2 * nq), up(dqg, qg, 4 * nq);
    up(b->kc, kc, 2 * b->cache_elems), up(b->vc, vc, 2 * b->cache_elems);
    const uint32_t Ts[2] = {2048, 4096}, prefixes[2] = {2048, 0};
    for (int i = 0; i < 2 && Ts[i] + prefixes[i] <= c->max_seq; i++) {
        uint32_t T = Ts[i], prefix = prefixes[i];
        set_step(b, prefix, T, 0);
        struct k_attn_prefill_params pp = {.q = dq, .qg = dqg, .k_cache = b->kc, .v_cache = b->vc,
                                           .out = dout, .step = b->step, .d = dims_of(c, T)};
        struct kref_attn_dims rd = rdims_of(c);
        if (i == 0)
            for (int s = 0; s < 3; s++)
                kref_attn(&rd, q + spot[s] * nrow, qg + 2 * spot[s] * nrow, kc, vc, nspot,
                          prefix + spot[s], want + s * nspot * nrow);
        float us[2] = {0, 0};
        for (int tc = 0; tc < 1 + tc_takes(c); tc++) {
            if (i == 0) {
                poison(dout, 2 * T * nrow);
                launch_prefill(c, &pp, T, tc);
                down(got, dout, 2 * T * nrow);
                int ok = 1;
                for (int s = 0; s < 3; s++)
                    ok &= cmp_attn("out", got + spot[s] * nrow, want + s * nspot * nrow, nspot * nrow);
                CHECK(ok, "%s %s T=%u prefix=%u: rows %u.., %u.., %u.. (%u each) match the reference",
                      pre_name[tc], c->name, T, prefix, spot[0], spot[1], spot[2], nspot);
            }
            us[tc] = time_prefill(c, &pp, T, tc);
        }
        double fl = 4.0 * c->nh * c->hd * T * (prefix + (T + 1) / 2.0);
        printf("# time %s prefill T=%u prefix=%u (%.1f GFLOP): k_attn_prefill %.1f us (%.1f TFLOP/s), "
               "k_attn_prefill_tc %.1f us (%.1f TFLOP/s)\n", c->name, T, prefix, fl / 1e9, us[0],
               fl / us[0] / 1e6, us[1], us[1] > 0 ? fl / us[1] / 1e6 : 0.0);
    }
    CU(&g, cuMemFree(dq));
    CU(&g, cuMemFree(dqg));
    CU(&g, cuMemFree(dout));
    free(q), free(qg), free(kc), free(vc), free(got), free(want);
}

/* ---- main --------------------------------------------------------------------------------- */

static void alloc_bufs(const struct cfg *c, struct bufs *b)
{
    size_t nq = (size_t)MAX_T * c->nh * c->hd, nkvt = (size_t)MAX_T * c->nkv * c->hd;
    b->cache_elems = (size_t)c->nkv * c->max_seq * c->hd;
    CU(&g, cuMemAlloc(&b->qg, 4 * nq));
    CU(&g, cuMemAlloc(&b->k, 2 * nkvt));
    CU(&g, cuMemAlloc(&b->v, 2 * nkvt));
    CU(&g, cuMemAlloc(&b->qn, 2 * c->hd));
    CU(&g, cuMemAlloc(&b->kn, 2 * c->hd));
    CU(&g, cuMemAlloc(&b->q, 2 * nq));
    CU(&g, cuMemAlloc(&b->kc, 2 * b->cache_elems));
    CU(&g, cuMemAlloc(&b->vc, 2 * b->cache_elems));
    CU(&g, cuMemAlloc(&b->out, 2 * nq));
    CU(&g, cuMemAlloc(&b->part_o, 4 * 64 * (size_t)c->nh * c->hd));
    CU(&g, cuMemAlloc(&b->part_ml, 8 * 64 * (size_t)c->nh));
    CU(&g, cuMemAlloc(&b->step, sizeof(struct k_step)));
    CU(&g, cuMemAlloc(&b->pf_o, 4 * K_ATTN_PF_MAXS * nq));
    CU(&g, cuMemAlloc(&b->pf_ml, 8ull * K_ATTN_PF_MAXS * MAX_T * c->nh));
}

static void free_bufs(struct bufs *b)
{
    CUdeviceptr *all[] = {&b->qg, &b->k, &b->v, &b->qn, &b->kn, &b->q, &b->kc, &b->vc,
                          &b->out, &b->part_o, &b->part_ml, &b->step, &b->pf_o, &b->pf_ml};
    for (size_t i = 0; i < sizeof all / sizeof all[0]; i++)
        CU(&g, cuMemFree(*all[i]));
}

static void test_cfg(const struct cfg *c, int full)
{
    struct bufs b;
    alloc_bufs(c, &b);
    test_rope(c, &b, 1, 1, 0, 0);
    test_rope(c, &b, 1, 1, c->max_seq - 1, 0);
    test_rope(c, &b, 1, 1, 17, 1);
    test_rope(c, &b, 5, 5, 100, 0);
    test_rope(c, &b, 64, 60, 7, 0);
    test_rope(c, &b, 300, 300, c->max_seq - 300, 0);

    const uint32_t Ls[] = {1, 7, 255, 256, 257, 1000, 4096};
    for (int i = 0; i < (full ? 7 : 6); i++)
        test_decode(c, &b, Ls[i], 2.0f, "");
    test_decode(c, &b, 1000, 16.0f, " large scores");
    test_decode_done(c, &b);

    const uint32_t Ts[] = {1, 5, 64, 65, 300};
    for (int i = 0; i < 5; i++) {
        test_prefill(c, &b, Ts[i], 0);
        test_prefill(c, &b, Ts[i], 100);
    }
    test_prefill(c, &b, 64, c->max_seq / 2); /* a short chunk after a long prefix */
    test_prefill(c, &b, 5, c->max_seq - 8);
    test_chain(c, &b, 65, 100);
    if (full && !getenv("ATTN_QUICK")) {
        timings(c, &b);
        prefill_full(c, &b);
    }
    free_bufs(&b);
}

int main(void)
{
    if (gpu_open(&g))
        return test_skip("no CUDA device");
    CUmodule m = gpu_module(&g);
    CU(&g, cuModuleGetFunction(&f_rope, m, "k_attn_rope"));
    for (int tc = 0; tc < 2; tc++) {
        CU(&g, cuModuleGetFunction(&f_dec[tc], m, dec_name[tc]));
        CU(&g, cuModuleGetFunction(&f_split[tc], m, split_name[tc]));
    }
    CU(&g, cuModuleGetFunction(&f_red, m, "k_attn_decode_reduce"));
    CU(&g, cuModuleGetFunction(&f_pre, m, "k_attn_prefill"));
    CU(&g, cuModuleGetFunction(&f_pre_tc, m, "k_attn_prefill_tc"));
    CU(&g, cuModuleGetFunction(&f_pre_red, m, "k_attn_prefill_reduce"));
    CU(&g, cuDeviceGetAttribute(&smem_optin, CU_DEVICE_ATTRIBUTE_MAX_SHARED_MEMORY_PER_BLOCK_OPTIN,
                                g.dev));
    /* the largest shape's need, or all the device has: tc_takes() leaves out what does not fit */
    int tc_smem = (int)K_ATTN_TC_SMEM(256) < smem_optin ? (int)K_ATTN_TC_SMEM(256) : smem_optin;
    CU(&g, cuFuncSetAttribute(f_pre_tc, CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES, tc_smem));
    printf("# k_attn_prefill_tc: %d bytes of opt-in shared memory per block, %u at head_dim 256\n",
           smem_optin, K_ATTN_TC_SMEM(256));
    const struct cfg cfgs[] = {
        {"full", 16, 2, 256, 64, 4096, 1e7f},
        {"tiny-a", 4, 2, 64, 16, 1024, 1e4f},
        {"odd", 5, 1, 40, 8, 1024, 1e6f},
    };
    for (int i = 0; i < 3; i++)
        test_cfg(&cfgs[i], i == 0);
    CU(&g, cuModuleUnload(m));
    gpu_close(&g);
    return test_done();
}
