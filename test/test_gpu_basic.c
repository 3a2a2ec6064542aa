/* test_gpu_basic.c — the basic kernels (kern/basic.cu) against their CPU references
 * (test/ref/kref_basic.c) at the full Qwen3.5-35B-A3B shapes.
 *
 * Every launch uses the grid and block plan/sched.c emits, on fresh random inputs (never
 * zero), with every output poisoned (0xFF bytes: a bf16/f32 NaN) first, so a missed or a stray
 * write shows: rows past step->n_tokens, elements past each output's end (SLACK) and whole
 * outputs of no-op launches (done, not the last chunk) must still hold the poison.
 *
 * Tolerances, and why:
 *  - embedding, the residual add, INT4 dequantization: bit-exact (copies, or one correctly
 *    rounded fp32 op per element);
 *  - GEMV: the device sums in fp32 in its own order and rounds once. With the products exact
 *    (bf16 x bf16 and (q - 8) x bf16 fit fp32), recursive summation of m terms errs by at most
 *    about m u sum|w x| (u = 2^-24); a lane sums K/32 terms, then 32-term groups, scales, and
 *    a 5-level warp tree; the group-128 INT4 kernel (k_gemv_i4_g128, tensor cores) sums 128
 *    products inside the MMAs, then one term per group and four warp partials: GEMV_TERMS(K)
 *    = K/32 + 168 bounds m for both. bf16 outputs may then differ by half a bf16 ulp (the one
 *    rounding), fp32 outputs by the sum bound alone;
 *  - RMSNorm: 1e-5 relative plus half a bf16 ulp: the fp32 sum of squares, rsqrtf (2 ulp)
 *    and three products err by < 40 u ~ 2.4e-6, so 1e-5 leaves 4x margin and still catches any
 *    wrong rounding point (a bf16 rounding is 2e-3);
 *  - GEMV with the GDN conv epilogue (K_GEMV_CONV): against the plain GEMV of the same launch
 *    followed by the CPU conv (kref_gdn_conv): the conv input is the same bf16 value and the
 *    taps sum in the same order, so only SiLU's expf may flip the last rounding (1 bf16 ulp,
 *    on at most 1% of the channels); the window is a copy of inputs (bit-exact) and the other
 *    segments are bit-equal to the plain launch;
 *  - SiLU·up: the device's expf may differ from the host's by a few fp32 ulps, which can flip
 *    the first bf16 rounding; the result must equal the reference computed from silu * (1 +
 *    r) for r in {0, -1e-6, +1e-6}.
 * INT4 weights are built by a CPU packer written here from the text of kern/quant.h, and
 * one hand-written word checks packer, decoder and kernels against the documented order. */
#include <math.h>
#include <stddef.h>
#include <string.h>

#include "../kern/dequant.h"
#include "../kern/embed.h"
#include "../kern/gemv.h"
#include "../kern/moe.h"
#include "../kern/norm.h"
#include "../kern/quant.h"
#include "../kern/step.h"
#include "../rt/cublas.h"
#include "gpu.h"
#include "ref/kref_basic.h"
#include "ref/kref_gdn.h"

#define HID           2048   /* hidden size */
#define VOCAB         248320 /* vocabulary */
#define EPS           1e-6f
#define SLACK         64 /* elements past every output checked untouched */
#define SHOW          5  /* mismatches printed per check */
#define TIME_REPS     20 /* launches timed for the bandwidth line */
#define NORM_REL      1e-5
#define SILU_REL      1e-6
#define GEMV_TERMS(K) ((double)(K) / 32 + 168)
#define U32           (1.0 / 16777216.0) /* fp32 unit roundoff 2^-24 */

static struct gpu g;
static CUfunction f_embed, f_norm, f_gemv_bf16, f_gemv_bf16_norm, f_gemv_i4, f_gemv_g128, f_gemv_g128w, f_dequant, f_gemm_i4,
    f_gemm_wg[8], f_silu;
static CUdeviceptr d_step;
static unsigned long long rng = 0xBA51C;

/* ---- plumbing ------------------------------------------------------------------------------ */

#define dalloc(n) gpu_alloc(&g, (n))
#define dput(h, n) gpu_put(&g, (h), (n))
#define dget(h, d, n) gpu_get(&g, (h), (d), (n))
#define dpoison(d, n) gpu_poison(&g, (d), (n))
#define dfree(d) gpu_free(&g, (d))

static void set_step(uint32_t n_tokens, uint32_t done, uint32_t last_chunk, int32_t token)
{
    struct k_step s = {.pos = 17,
                       .n_tokens = n_tokens,
                       .done = done,
                       .last_chunk = last_chunk,
                       .token = token,
                       .max_new = 100,
                       .top_p = 1.0f,
                       .max_pos = 4096};
    CU(&g, cuMemcpyHtoD(d_step, &s, sizeof s));
}

static void launch(CUfunction f, void *params, unsigned grid, unsigned block)
{
    void *args[] = {params};
    CU(&g, cuLaunchKernel(f, grid, 1, 1, block, 1, 1, 0, NULL, args, NULL));
    CU(&g, cuCtxSynchronize());
}

/* uniform in (-1, 1), never exactly zero */
static float urand(void)
{
    return (float)(((double)(test_rand(&rng) >> 40) + 0.5) / 8388608.0 - 1.0);
}

static void rand_bf16(uint16_t *d, size_t n, float center, float scale)
{
    for (size_t i = 0; i < n; i++)
        d[i] = kref_f2bf(center + scale * urand());
}

static void rand_bytes(uint8_t *d, size_t n)
{
    for (size_t i = 0; i < n; i += 8) {
        unsigned long long r = test_rand(&rng);
        memcpy(d + i, &r, n - i < 8 ? n - i : 8);
    }
}

/* first index in [from, to) whose 16-bit word is not the poison, or -1 */
static long stray16(const uint16_t *h, size_t from, size_t to)
{
    for (size_t i = from; i < to; i++)
        if (h[i] != 0xFFFFu)
            return (long)i;
    return -1;
}

static long stray32(const uint32_t *h, size_t from, size_t to)
{
    for (size_t i = from; i < to; i++)
        if (h[i] != 0xFFFFFFFFu)
            return (long)i;
    return -1;
}

/* ---- comparisons --------------------------------------------------------------------------- */

/* bit-exact: returns the mismatches, printing the first SHOW */
static size_t cmp_bits(const char *what, const uint16_t *got, const uint16_t *want, size_t n)
{
    size_t bad = 0;
    for (size_t i = 0; i < n; i++)
        if (got[i] != want[i] && bad++ < SHOW)
            printf("#   %s[%zu]: got 0x%04x (%g) want 0x%04x (%g)\n", what, i, got[i],
                   (double)kref_bf2f(got[i]), want[i], (double)kref_bf2f(want[i]));
    return bad;
}

struct cmpstat {
    size_t bad, equal, n; /* failures, outputs bit-equal to the rounded reference, outputs */
    double worst;         /* largest |got - want| / allowed */
    double worst_ulp;     /* largest |got - want| in bf16 ulps of want (bf16 outputs) */
};

/* |got - want| <= tol (+ half a bf16 ulp of the larger magnitude when bf16), element-wise */
static void cmp_close(struct cmpstat *s, const char *what, const void *got, int bf16,
                      const float *want, const float *tol, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        float gv = bf16 ? kref_bf2f(((const uint16_t *)got)[i]) : ((const float *)got)[i];
        double allow = tol[i], err = fabs((double)gv - want[i]);
        if (bf16) {
            float big = fabsf(gv) > fabsf(want[i]) ? gv : want[i];
            allow += 0.5 * kref_bf16_ulp(big);
            s->equal += ((const uint16_t *)got)[i] == kref_f2bf(want[i]);
            double ulp = kref_bf16_ulp(want[i]);
            if (ulp > 0 && err / ulp > s->worst_ulp)
                s->worst_ulp = err / ulp;
        }
        if (allow > 0 && err / allow > s->worst)
            s->worst = err / allow;
        if (!(err <= allow) && s->bad++ < SHOW) /* NaN (poison) fails too */
            printf("#   %s[%zu]: got %.9g want %.9g allowed %.3g\n", what, i, (double)gv,
                   (double)want[i], allow);
    }
    s->n += n;
}

/* ---- INT4 packer (from the text of kern/quant.h) -----------------------------------------------
 */

/* Quantize row x (K) into K_LAYOUT_I4_ROWS: per group scale s = bf16(absmax / 7), q = round(x
 * / s) + 8 clamped to 0..15; element k goes to nibble slot K_I4_SLOTS[k % 8] of little-endian
 * 32-bit word k / 8. */
static void pack_i4_row(const float *x, uint32_t K, uint32_t group, uint8_t *nib, uint16_t *sc)
{
    static const int slot[8] = K_I4_SLOTS;
    memset(nib, 0, K / 2);
    for (uint32_t g0 = 0; g0 < K; g0 += group) {
        float a = 0;
        for (uint32_t k = g0; k < g0 + group; k++)
            a = fabsf(x[k]) > a ? fabsf(x[k]) : a;
        uint16_t sb = kref_f2bf(a / 7.0f);
        float s = kref_bf2f(sb);
        sc[g0 / group] = sb;
        for (uint32_t k = g0; k < g0 + group; k++) {
            long q = s > 0 ? lrintf(x[k] / s) + K_I4_ZERO : K_I4_ZERO;
            q = q < 0 ? 0 : q > 15 ? 15 : q;
            int p = slot[k % 8];
            nib[(k / 8) * 4 + p / 2] |= (uint8_t)(q << (4 * (p % 2)));
        }
    }
}

/* An INT4 matrix (N, K): host nibbles and scales, and the device copy with the scales after
 * the nibbles at scales_offset, as the weights image stores it. packed: quantized from random
 * floats; otherwise random nibbles (every q, 0 included) and random scales. */
struct i4m {
    uint32_t N, K, group;
    uint8_t *nib;
    uint16_t *sc;
    CUdeviceptr d;
    uint64_t so;
};

static void i4m_new(struct i4m *m, uint32_t N, uint32_t K, uint32_t group, int packed)
{
    size_t nb = (size_t)N * K / 2, ns = (size_t)N * (K / group);
    m->N = N, m->K = K, m->group = group, m->so = nb;
    m->nib = test_malloc(nb), m->sc = test_malloc(ns * 2);
    if (packed) {
        float *row = test_malloc(sizeof(float) * K);
        for (uint32_t n = 0; n < N; n++) {
            for (uint32_t k = 0; k < K; k++)
                row[k] = 0.05f * urand();
            pack_i4_row(row, K, group, m->nib + (size_t)n * K / 2, m->sc + (size_t)n * (K / group));
        }
        free(row);
    } else {
        rand_bytes(m->nib, nb);
        rand_bf16(m->sc, ns, 0.01f, 0.005f);
    }
    m->d = dalloc(nb + ns * 2);
    CU(&g, cuMemcpyHtoD(m->d, m->nib, nb));
    CU(&g, cuMemcpyHtoD(m->d + nb, m->sc, ns * 2));
}

static void i4m_free(struct i4m *m)
{
    free(m->nib), free(m->sc);
    dfree(m->d);
}

/* ---- the hand-written word and the packer ------------------------------------------------------
 */

/* Elements 0..7 with q = 1..8: from the low nibble up the word holds elements 0 2 4 6 1 3 5 7,
 * i.e. q = 1 3 5 7 2 4 6 8, so the word is 0x86427531. Words 1..3 hold q = 8 (zero). */
#define HAND_WORD 0x86427531u

static void test_hand_word(void)
{
    uint32_t words[4] = {HAND_WORD, 0x88888888u, 0x88888888u, 0x88888888u};
    uint16_t scale = 0x3F00; /* 0.5 */
    float row[32] = {0};
    for (int j = 0; j < 8; j++)
        row[j] = 0.5f * (float)(j + 1 - K_I4_ZERO);
    uint8_t nib[16];
    uint16_t sc;
    pack_i4_row(row, 32, 32, nib, &sc);
    CHECK(!memcmp(nib, words, 16) && sc == scale,
          "packer: elements q = 1..8 give word 0x%08x (want 0x%08x), scale 0x%04x",
          nib[0] | (unsigned)nib[1] << 8 | (unsigned)nib[2] << 16 | (unsigned)nib[3] << 24,
          HAND_WORD, sc);

    uint8_t img[18];
    memcpy(img, words, 16), memcpy(img + 16, &scale, 2);
    CUdeviceptr dw = dput(img, sizeof img), dout = dalloc((32 + SLACK) * 2);
    dpoison(dout, (32 + SLACK) * 2);
    struct k_dequant_params dp = {
        .n = 1, .m = {{.w = dw, .scales_offset = 16, .out = dout, .N = 1, .K = 32, .group = 32}}};
    launch(f_dequant, &dp, 1, K_DQ_THREADS);
    uint16_t out[32 + SLACK];
    dget(out, dout, sizeof out);
    int ok = stray16(out, 32, 32 + SLACK) < 0;
    for (int j = 0; j < 32; j++)
        ok &= kref_bf2f(out[j]) == (j < 8 ? 0.5f * (float)(j - 7) : 0.0f);
    CHECK(ok,
          "k_dequant_i4 hand word: -3.5 -3 ... 0 for elements 0..7 (got %g %g .. %g), nothing "
          "past the end",
          (double)kref_bf2f(out[0]), (double)kref_bf2f(out[1]),
          (double)kref_bf2f(out[7]));

    uint16_t x[32];
    for (int k = 0; k < 32; k++)
        x[k] = kref_f2bf(k < 8 ? (float)(k + 1) : 1.0f);
    float yref, mag;
    kref_gemv_i4(&yref, &mag, (const uint8_t *)words, &scale, x, 1, 32, 32);
    CUdeviceptr dx = dput(x, sizeof x);
    set_step(1, 0, 0, 0);
    struct k_gemv_params p = {.x = dx, .step = d_step, .nseg = 1, .K = 32, .group = 32};
    p.seg[0] = (struct k_gemv_seg){.w = dw, .y = dout, .scales_offset = 16, .n = 1};
    dpoison(dout, (32 + SLACK) * 2);
    launch(f_gemv_i4, &p, 1, K_GEMV_THREADS);
    dget(out, dout, sizeof out);
    /* 0.5 * sum_{j<8} (j - 7)(j + 1) = 0.5 * -84 */
    CHECK(yref == -42.0f && kref_bf2f(out[0]) == -42.0f && stray16(out, 1, 32 + SLACK) < 0,
          "k_gemv_i4 hand word: y = -42 (device %g, CPU decoder %g)",
          (double)kref_bf2f(out[0]), (double)yref);
    dfree(dw), dfree(dout), dfree(dx);
}

/* The packer reproduces its input within half a quantization step (no clipping at absmax/7). */
static void test_packer_roundtrip(uint32_t group)
{
    uint32_t N = 16, K = 512;
    float *x = test_malloc(sizeof(float) * N * K);
    uint8_t *nib = test_malloc((size_t)N * K / 2);
    uint16_t *sc = test_malloc(sizeof(uint16_t) * N * (K / group));
    for (size_t i = 0; i < (size_t)N * K; i++)
        x[i] = urand() * (1.0f + (float)(i / group % 7));
    for (uint32_t n = 0; n < N; n++)
        pack_i4_row(x + (size_t)n * K, K, group, nib + (size_t)n * K / 2,
                    sc + (size_t)n * (K / group));
    size_t bad = 0;
    for (uint32_t n = 0; n < N; n++)
        for (uint32_t k = 0; k < K; k++) {
            float s = kref_bf2f(sc[(size_t)n * (K / group) + k / group]);
            float d = kref_i4_weight(nib, sc, K, group, n, k), w = x[(size_t)n * K + k];
            bad += !(fabsf(d - w) <= 0.5f * s * 1.0001f);
        }
    CHECK(bad == 0, "packer group %u: dequantized within half a step of the input (%zu off)", group,
          bad);
    free(x), free(nib), free(sc);
}

/* ---- k_dequant_i4 -------------------------------------------------------------------------- */

static void test_dequant(uint32_t N, uint32_t K, uint32_t group)
{
    struct i4m m;
    i4m_new(&m, N, K, group, 0);
    size_t n = (size_t)N * K;
    CUdeviceptr dout = dalloc((n + SLACK) * 2);
    dpoison(dout, (n + SLACK) * 2);
    struct k_dequant_params p = {
        .n = 1, .m = {{.w = m.d, .scales_offset = m.so, .out = dout, .N = N, .K = K, .group = group}}};
    launch(f_dequant, &p, (unsigned)K_DQ_CTAS(N, K), K_DQ_THREADS);
    uint16_t *got = test_malloc((n + SLACK) * 2), *want = test_malloc(n * 2);
    dget(got, dout, (n + SLACK) * 2);
    kref_dequant_i4(want, m.nib, m.sc, N, K, group);
    size_t bad = cmp_bits("out", got, want, n);
    long stray = stray16(got, n, n + SLACK);
    CHECK(bad == 0 && stray < 0,
          "k_dequant_i4 %ux%u group %u: bit-exact (%zu differ), nothing past "
          "the end (stray %ld)",
          N, K, group, bad, stray);
    if (n >= 8000000) { /* information: the rate, nibbles and scales in, bf16 out */
        double us = gpu_time_us(&g, f_dequant, &p, (unsigned)K_DQ_CTAS(N, K), 1, K_DQ_THREADS, 0,
                                TIME_REPS);
        printf("#   time: %.1f us, %.0f GB/s moved\n", us, (n / 2.0 + n / group * 2.0 + n * 2.0) / us / 1e3);
    }
    free(got), free(want), dfree(dout), i4m_free(&m);
}

/* Several matrices of different shapes and groups in one launch (what the planner gives a
 * layer), each into its own poisoned buffer: every one bit-exact, nothing past any end. With
 * time, the launch against the same matrices one launch each. */
static void test_dequant_multi(int time)
{
    static const uint32_t shp[][3] = {{20, 96, 32},    {512, 2048, 128}, {96, 256, 64},
                                      {8192, 2048, 128}, {512, 2048, 128}, {2048, 4096, 128},
                                      {64, 128, 32},   {4096, 2048, 128}};
    const uint32_t nm = (uint32_t)(sizeof shp / sizeof shp[0]);
    struct i4m m[K_DQ_MAX];
    CUdeviceptr out[K_DQ_MAX];
    struct k_dequant_params p = {.n = nm};
    uint32_t ctas = 0;
    for (uint32_t i = 0; i < nm; i++) {
        size_t n = (size_t)shp[i][0] * shp[i][1];
        i4m_new(&m[i], shp[i][0], shp[i][1], shp[i][2], 0);
        out[i] = dalloc((n + SLACK) * 2);
        dpoison(out[i], (n + SLACK) * 2);
        p.m[i] = (struct k_dequant_mat){.w = m[i].d, .scales_offset = m[i].so, .out = out[i],
                                        .N = shp[i][0], .K = shp[i][1], .group = shp[i][2],
                                        .first = ctas};
        ctas += (uint32_t)K_DQ_CTAS(shp[i][0], shp[i][1]);
    }
    launch(f_dequant, &p, ctas, K_DQ_THREADS);
    size_t bad = 0, strays = 0;
    for (uint32_t i = 0; i < nm; i++) {
        size_t n = (size_t)shp[i][0] * shp[i][1];
        uint16_t *got = test_malloc((n + SLACK) * 2), *want = test_malloc(n * 2);
        dget(got, out[i], (n + SLACK) * 2);
        kref_dequant_i4(want, m[i].nib, m[i].sc, shp[i][0], shp[i][1], shp[i][2]);
        bad += cmp_bits("out", got, want, n);
        strays += stray16(got, n, n + SLACK) >= 0;
        free(got), free(want);
    }
    CHECK(bad == 0 && strays == 0,
          "k_dequant_i4, %u matrices of 20x96 .. 8192x2048 and groups 32-128 in one launch: "
          "bit-exact (%zu differ), nothing past any end (%zu with strays)",
          nm, bad, strays);
    if (time) {
        double one = gpu_time_us(&g, f_dequant, &p, ctas, 1, K_DQ_THREADS, 0, TIME_REPS), apart = 0;
        for (uint32_t i = 0; i < nm; i++) {
            struct k_dequant_params q = {.n = 1, .m = {p.m[i]}};
            q.m[0].first = 0;
            apart += gpu_time_us(&g, f_dequant, &q, (unsigned)K_DQ_CTAS(shp[i][0], shp[i][1]), 1,
                                 K_DQ_THREADS, 0, TIME_REPS);
        }
        printf("#   time: %u matrices in one launch %.1f us, one launch each %.1f us\n", nm, one,
               apart);
    }
    for (uint32_t i = 0; i < nm; i++)
        i4m_free(&m[i]), dfree(out[i]);
}

/* ---- GEMV ------------------------------------------------------------------------------------ */

/* One GEMV launch: matrices (bf16 host/device pairs, or INT4), x, flags. */
struct gv {
    const char *name;
    int i4;
    uint32_t K, group, nseg, flags;
    uint32_t n[K_GEMV_MAX_SEG];
    const uint16_t *w16[K_GEMV_MAX_SEG]; /* bf16 (n, K) host */
    CUdeviceptr dw[K_GEMV_MAX_SEG];
    struct i4m *q[K_GEMV_MAX_SEG];
};

/* The parameters plan/sched.c would emit; returns the grid (row blocks of all segments). */
static unsigned gv_params(const struct gv *c, CUdeviceptr dx, const CUdeviceptr *dy,
                          struct k_gemv_params *p)
{
    memset(p, 0, sizeof *p);
    p->x = dx, p->step = d_step, p->nseg = c->nseg, p->K = c->K;
    p->group = c->i4 ? c->group : 0, p->flags = c->flags;
    uint32_t blocks = 0;
    for (uint32_t s = 0; s < c->nseg; s++) {
        p->seg[s] = (struct k_gemv_seg){.w = c->i4 ? c->q[s]->d : c->dw[s],
                                        .y = dy[s],
                                        .scales_offset = c->i4 ? c->q[s]->so : 0,
                                        .n = c->n[s],
                                        .blocks = blocks};
        /* rows per CTA, as plan/sched.c */
        uint32_t rows = !c->i4 ? K_GEMV_ROWS : K_GEMV_G128_OK(c->group, c->K) ? K_GEMV_G128_ROWS : K_GEMV_I4_ROWS;
        blocks += (c->n[s] + rows - 1) / rows;
    }
    return blocks;
}

/* The kernel and block plan/sched.c picks for c. */
static CUfunction gv_kernel(const struct gv *c, unsigned *block)
{
    int g128 = c->i4 && K_GEMV_G128_OK(c->group, c->K), wide = g128 && K_GEMV_G128_WIDE(c->K);
    *block = wide ? K_GEMV_G128W_THREADS : g128 ? K_GEMV_G128_THREADS : K_GEMV_THREADS;
    return !c->i4 ? f_gemv_bf16 : wide ? f_gemv_g128w : g128 ? f_gemv_g128 : f_gemv_i4;
}

/* Poison the outputs, launch once. */
static void gv_launch(const struct gv *c, CUdeviceptr dx, const CUdeviceptr *dy)
{
    size_t es = (c->flags & K_GEMV_OUT_F32) ? 4 : 2;
    struct k_gemv_params p;
    unsigned grid = gv_params(c, dx, dy, &p);
    for (uint32_t s = 0; s < c->nseg; s++)
        dpoison(dy[s], (c->n[s] + SLACK) * es);
    unsigned block;
    CUfunction f = gv_kernel(c, &block);
    launch(f, &p, grid, block);
}

/* Information, not a check: the launch's time and the bandwidth it implies (weights smaller
 * than L2 stay there across repeats, so those figures are optimistic). */
static void gv_time(const struct gv *c, CUdeviceptr dx, const CUdeviceptr *dy)
{
    double bytes = 2.0 * c->K;
    for (uint32_t s = 0; s < c->nseg; s++)
        bytes += (double)c->n[s] * (c->i4 ? c->K / 2 + 2 * (c->K / c->group) : 2 * c->K) +
                 (double)c->n[s] * ((c->flags & K_GEMV_OUT_F32) ? 4 : 2);
    if (bytes < 8e6)
        return;
    struct k_gemv_params p;
    unsigned grid = gv_params(c, dx, dy, &p);
    unsigned block;
    CUfunction f = gv_kernel(c, &block);
    double us = gpu_time_us(&g, f, &p, grid, 1, block, 0, TIME_REPS);
    printf("#   time: %.1f us per launch, %.0f GB/s over %.1f MB\n", us, bytes / us / 1e3,
           bytes / 1e6);
}

/* Segment s's outputs got against the reference over x. */
static void gv_check_segment(const struct gv *c, uint32_t s, const uint16_t *x, const void *got,
                             struct cmpstat *st)
{
    uint32_t n = c->n[s];
    int f32 = (c->flags & K_GEMV_OUT_F32) != 0;
    float *want = test_malloc(sizeof(float) * n), *mag = test_malloc(sizeof(float) * n);
    if (c->i4)
        kref_gemv_i4(want, mag, c->q[s]->nib, c->q[s]->sc, x, n, c->K, c->group);
    else
        kref_gemv_bf16(want, mag, c->w16[s], x, n, c->K);
    for (uint32_t i = 0; i < n; i++)
        mag[i] = (float)(GEMV_TERMS(c->K) * U32 * mag[i]);
    char what[16];
    snprintf(what, sizeof what, "y%u", s);
    cmp_close(st, what, got, !f32, want, mag, n);
    free(want), free(mag);
}

/* Run c on a fresh x with the step flags done and last_chunk. why == NULL: compare every
 * segment with the reference; otherwise the launch must write nothing, for the reason why. */
static void gv_run(const struct gv *c, uint32_t done, uint32_t last_chunk, const char *why)
{
    size_t es = (c->flags & K_GEMV_OUT_F32) ? 4 : 2;
    uint16_t *x = test_malloc((size_t)c->K * 2);
    rand_bf16(x, c->K, 0.0f, 1.0f);
    CUdeviceptr dx = dput(x, (size_t)c->K * 2), dy[K_GEMV_MAX_SEG];
    for (uint32_t s = 0; s < c->nseg; s++)
        dy[s] = dalloc((c->n[s] + SLACK) * es);
    set_step(1, done, last_chunk, 0);
    gv_launch(c, dx, dy);
    struct cmpstat st = {0};
    long stray = -1;
    for (uint32_t s = 0; s < c->nseg; s++) {
        void *got = test_malloc((c->n[s] + SLACK) * es);
        dget(got, dy[s], (c->n[s] + SLACK) * es);
        size_t from = why ? 0 : c->n[s], to = c->n[s] + SLACK;
        long r = es == 4 ? stray32(got, from, to) : stray16(got, from, to);
        stray = stray < 0 ? r : stray;
        if (!why)
            gv_check_segment(c, s, x, got, &st);
        free(got);
    }
    if (why)
        CHECK(stray < 0, "%s with %s: writes nothing (stray %ld)", c->name, why, stray);
    else if (es == 2)
        CHECK(st.bad == 0 && stray < 0,
              "%s: %zu rows within half a bf16 ulp + fp32 sum bound (worst %.2f ulp from "
              "exact; %zu equal bf16(exact)), nothing past n (stray %ld)",
              c->name, st.n, st.worst_ulp, st.equal, stray);
    else
        CHECK(st.bad == 0 && stray < 0,
              "%s: %zu fp32 rows within the fp32 sum bound (worst error %.3f of the "
              "bound), nothing past n (stray %ld)",
              c->name, st.n, st.worst, stray);
    if (!why)
        gv_time(c, dx, dy);
    for (uint32_t s = 0; s < c->nseg; s++)
        dfree(dy[s]);
    free(x), dfree(dx);
}

/* bf16 GEMV over fresh matrices of the given sizes */
static void test_gemv_bf16(const char *name, uint32_t K, uint32_t nseg, const uint32_t *n)
{
    struct gv c = {.name = name, .K = K, .nseg = nseg};
    uint16_t *w[K_GEMV_MAX_SEG];
    for (uint32_t s = 0; s < nseg; s++) {
        c.n[s] = n[s];
        w[s] = test_malloc((size_t)n[s] * K * 2);
        rand_bf16(w[s], (size_t)n[s] * K, 0.0f, 0.05f);
        c.w16[s] = w[s], c.dw[s] = dput(w[s], (size_t)n[s] * K * 2);
    }
    gv_run(&c, 0, 1, NULL);
    if (nseg == 4)
        gv_run(&c, 1, 1, "step->done");
    for (uint32_t s = 0; s < nseg; s++)
        free(w[s]), dfree(c.dw[s]);
}

static void test_gemv_i4(const char *name, uint32_t K, uint32_t group, uint32_t nseg,
                         const uint32_t *n)
{
    struct gv c = {.name = name, .i4 = 1, .K = K, .group = group, .nseg = nseg};
    struct i4m m[K_GEMV_MAX_SEG];
    for (uint32_t s = 0; s < nseg; s++) {
        c.n[s] = n[s];
        i4m_new(&m[s], n[s], K, group, 1);
        c.q[s] = &m[s];
    }
    gv_run(&c, 0, 1, NULL);
    if (nseg == 4)
        gv_run(&c, 1, 1, "step->done");
    for (uint32_t s = 0; s < nseg; s++)
        i4m_free(&m[s]);
}

/* K_GEMV_CONV: segment 0 (n[0] conv channels of `taps` taps) through the decode conv epilogue;
 * see the tolerance at the top. Then the same launch with step->done: nothing written, the
 * window untouched. */
static void test_gemv_conv(const char *name, int i4, uint32_t K, uint32_t group, const uint32_t *n,
                           uint32_t taps)
{
    struct gv c = {.name = name, .i4 = i4, .K = K, .group = group, .nseg = 2};
    struct i4m m[2];
    uint16_t *w[2] = {NULL, NULL};
    for (uint32_t s = 0; s < 2; s++) {
        c.n[s] = n[s];
        if (i4) {
            i4m_new(&m[s], n[s], K, group, 1);
            c.q[s] = &m[s];
        } else {
            w[s] = test_malloc((size_t)n[s] * K * 2);
            rand_bf16(w[s], (size_t)n[s] * K, 0.0f, 0.05f);
            c.w16[s] = w[s], c.dw[s] = dput(w[s], (size_t)n[s] * K * 2);
        }
    }
    const uint32_t n0 = n[0], wn = n0 * (taps - 1);
    uint16_t *x = test_malloc((size_t)K * 2), *cw = test_malloc((size_t)n0 * taps * 2);
    uint16_t *win = test_malloc((size_t)wn * 2), *win_ref = test_malloc((size_t)wn * 2);
    uint16_t *plain[2], *got[2], *want = test_malloc((size_t)n0 * 2), *win_got = test_malloc((size_t)wn * 2);
    rand_bf16(x, K, 0.0f, 1.0f);
    rand_bf16(cw, (size_t)n0 * taps, 0.0f, 0.3f);
    rand_bf16(win, wn, 0.0f, 1.0f);
    CUdeviceptr dx = dput(x, (size_t)K * 2), dcw = dput(cw, (size_t)n0 * taps * 2), dy[2];
    CUdeviceptr dwin = dput(win, (size_t)wn * 2);
    for (uint32_t s = 0; s < 2; s++) {
        dy[s] = dalloc((n[s] + SLACK) * 2);
        plain[s] = test_malloc((n[s] + SLACK) * 2), got[s] = test_malloc((n[s] + SLACK) * 2);
    }
    set_step(1, 0, 1, 0);
    gv_launch(&c, dx, dy); /* plain */
    for (uint32_t s = 0; s < 2; s++)
        dget(plain[s], dy[s], (n[s] + SLACK) * 2);
    for (uint32_t done = 0; done < 2; done++) {
        struct k_gemv_params p;
        unsigned grid = gv_params(&c, dx, dy, &p);
        p.flags |= K_GEMV_CONV, p.conv_w = dcw, p.window = dwin, p.conv_k = taps;
        for (uint32_t s = 0; s < 2; s++)
            dpoison(dy[s], (n[s] + SLACK) * 2);
        set_step(1, done, 1, 0);
        unsigned block;
        CUfunction f = gv_kernel(&c, &block);
        launch(f, &p, grid, block);
        for (uint32_t s = 0; s < 2; s++)
            dget(got[s], dy[s], (n[s] + SLACK) * 2);
        dget(win_got, dwin, (size_t)wn * 2);
        if (done) {
            long stray = stray16(got[0], 0, n0 + SLACK), stray1 = stray16(got[1], 0, n[1] + SLACK);
            CHECK(stray < 0 && stray1 < 0 && !memcmp(win_got, win_ref, (size_t)wn * 2),
                  "%s with step->done: writes nothing (stray %ld, %ld), window unchanged", name,
                  stray, stray1);
            break;
        }
        memcpy(win_ref, win, (size_t)wn * 2);
        struct k_gdn_dims d = {.conv_dim = n0, .kernel = taps, .T_max = 1};
        kref_gdn_conv(&d, plain[0], cw, win_ref, 1, want);
        size_t off = 0, far = 0;
        for (uint32_t i = 0; i < n0; i++) {
            int a = (int16_t)got[0][i], b = (int16_t)want[i];
            int dist = (a < 0 ? -32768 - a : a) - (b < 0 ? -32768 - b : b);
            off += dist != 0, far += dist > 1 || dist < -1;
        }
        long stray = stray16(got[0], n0, n0 + SLACK);
        size_t wbad = 0;
        for (uint32_t i = 0; i < wn; i++)
            wbad += win_got[i] != win_ref[i];
        CHECK(far == 0 && off * 100 <= n0 && stray < 0 && wbad == 0 &&
                  !memcmp(got[1], plain[1], (n[1] + SLACK) * 2),
              "%s: %u conv outputs within 1 bf16 ulp of GEMV + CPU conv (%zu off by 1, %zu "
              "further), window bit-exact (%zu off), segment 1 equal to the plain launch, nothing "
              "past n (stray %ld)",
              name, n0, off, far, wbad, stray);
        memcpy(win_ref, win_got, (size_t)wn * 2);
    }
    for (uint32_t s = 0; s < 2; s++) {
        dfree(dy[s]), free(plain[s]), free(got[s]);
        if (i4)
            i4m_free(&m[s]);
        else
            free(w[s]), dfree(c.dw[s]);
    }
    dfree(dx), dfree(dcw), dfree(dwin);
    free(x), free(cw), free(win), free(win_ref), free(want), free(win_got);
}

static void test_gemvs(void)
{
    static const uint32_t gdn[] = {8192, 4096, 32, 32}, attn[] = {8192, 512, 512}, out[] = {2048};
    static const uint32_t odd[] = {20, 5, 1000, 1}, i4gdn[] = {8192, 4096};
    test_gemv_bf16("k_gemv_bf16 K=2048 -> 8192+4096+32+32 (GDN in_proj)", 2048, 4, gdn);
    test_gemv_bf16("k_gemv_bf16 K=2048 -> 8192+512+512 (attention q,k,v)", 2048, 3, attn);
    test_gemv_bf16("k_gemv_bf16 K=4096 -> 2048 (out_proj)", 4096, 1, out);
    test_gemv_bf16("k_gemv_bf16 K=264 -> 20+5+1000+1 (tails, partial CTAs)", 264, 4, odd);
    static const uint32_t groups[] = {32, 64, 128};
    for (int i = 0; i < 3; i++) {
        char nm[96];
        snprintf(nm, sizeof nm, "k_gemv_i4 group %u K=2048 -> 8192+4096 (GDN in_proj)", groups[i]);
        test_gemv_i4(nm, 2048, groups[i], 2, i4gdn);
        snprintf(nm, sizeof nm, "k_gemv_i4 group %u K=4096 -> 2048 (out_proj)", groups[i]);
        test_gemv_i4(nm, 4096, groups[i], 1, out);
    }
    test_gemv_i4("k_gemv_i4 group 32 K=2048 -> 8192+4096+32+32", 2048, 32, 4, gdn);
    test_gemv_i4("k_gemv_i4 group 32 K=96 -> 20+5+1000+1 (tails, partial CTAs)", 96, 32, 4, odd);
    test_gemv_i4("k_gemv_i4 group 64 K=1088 -> 20+5+1000+1 (tails)", 1088, 64, 4, odd);
    static const uint32_t wide[] = {1000};
    test_gemv_i4("k_gemv_i4_g128 K=2176 -> 20+5+1000+1 (tails, 17 groups)", 2176, 128, 4, odd);
    test_gemv_i4("k_gemv_i4_g128_w K=8192 -> 1000 (2 rounds of groups a warp)", 8192, 128, 1, wide);
    test_gemv_i4("k_gemv_i4_g128_w K=4224 -> 20+5+1000+1 (tails, 33 groups)", 4224, 128, 4, odd);
    test_gemv_i4("k_gemv_i4_g128 K=3968 -> 20+5+1000+1 (tails, 31 groups, the last below _w)", 3968, 128, 4, odd);
    static const uint32_t conv_full[] = {8192, 4096}, conv_odd[] = {1003, 37};
    test_gemv_conv("k_gemv_i4 + conv group 128 K=2048 -> 8192+4096 (GDN in_proj, 4 taps)", 1, 2048,
                   128, conv_full, 4);
    test_gemv_conv("k_gemv_bf16 + conv K=2048 -> 8192+4096 (4 taps)", 0, 2048, 0, conv_full, 4);
    test_gemv_conv("k_gemv_bf16 + conv K=264 -> 1003+37 (3 taps, partial CTAs)", 0, 264, 0, conv_odd, 3);
    test_gemv_conv("k_gemv_i4 + conv group 32 K=96 -> 1003+37 (8 taps)", 1, 96, 32, conv_odd, 8);
}

/* ---- the prefill dense kernels: k_gemm_i4_g128 and k_gemm_i4_wg{1,2,4,8} ---------------- */

static const uint32_t wg_splits[4] = {1, 2, 4, 8};

/* Information: the path the planner takes past the nibble kernels, the matrix expanded by
 * k_dequant_i4 then a cuBLAS bf16 GEMM over T_max rows, timed the same way (both launches a
 * repetition), for comparison in the same run. */
#define COLD_FLUSH (128u << 20) /* bytes overwritten to empty L2 (50 MiB on an H100) */

static int cmp_f32(const void *a, const void *b)
{
    const float x = *(const float *)a, y = *(const float *)b;
    return (x > y) - (x < y);
}

static void time_dequant_cublas(const struct i4m *m, CUdeviceptr dx, CUdeviceptr dy, uint32_t T_max,
                                uint32_t n_tokens, uint32_t N, uint32_t K)
{
    struct rt_cublas b;
    char err[RT_ERR_LEN];
    CUdeviceptr ws = dalloc(32u << 20), dw = dalloc((size_t)N * K * 2);
    if (rt_cublas_open(&b, NULL, ws, 32u << 20, err)) {
        printf("#   dequant + cuBLAS: not timed (%s)\n", err);
        dfree(ws), dfree(dw);
        return;
    }
    struct k_dequant_params p = {
        .n = 1,
        .m = {{.w = m->d, .scales_offset = m->so, .out = dw, .N = N, .K = K, .group = 128}}};
    void *args[] = {&p};
    const float one = 1.0f, zero = 0.0f;
    CUevent e0, e1;
    float ms = 0;
    CU(&g, cuEventCreate(&e0, 0));
    CU(&g, cuEventCreate(&e1, 0));
    int bad = 0;
    /* the expansion, then the GEMM on the expanded matrix */
#define DQ_CUBLAS_PAIR()                                                                           \
    do {                                                                                           \
        CU(&g, cuLaunchKernel(f_dequant, (unsigned)K_DQ_CTAS(N, K), 1, 1, K_DQ_THREADS, 1, 1, 0,   \
                              NULL, args, NULL));                                                  \
        bad |= b.gemm_ex(b.h, RT_CUBLAS_OP_T, RT_CUBLAS_OP_N, (int)N, (int)T_max, (int)K, &one,    \
                         (const void *)dw, RT_CUDA_R_16BF, (int)K, (const void *)dx,               \
                         RT_CUDA_R_16BF, (int)K, &zero, (void *)dy, RT_CUDA_R_16BF, (int)N,        \
                         RT_CUBLAS_COMPUTE_32F, RT_CUBLAS_GEMM_DEFAULT);                           \
    } while (0)
    for (int i = -1; i < TIME_REPS; i++) { /* i = -1: warm-up */
        if (i == 0)
            CU(&g, cuEventRecord(e0, NULL));
        DQ_CUBLAS_PAIR();
    }
    CU(&g, cuEventRecord(e1, NULL));
    CU(&g, cuEventSynchronize(e1));
    CU(&g, cuEventElapsedTime(&ms, e0, e1));
    const double us = 1000.0 * ms / TIME_REPS;
    /* the pair alone from an idle GPU, weights not in L2 (gpu_time_cold's way), median of 21 */
    CUdeviceptr fl = dalloc(COLD_FLUSH);
    float t[21];
    for (int i = 0; i < 21; i++) {
        CU(&g, cuMemsetD8Async(fl, (unsigned char)i, COLD_FLUSH, NULL));
        CU(&g, cuCtxSynchronize());
        CU(&g, cuEventRecord(e0, NULL));
        DQ_CUBLAS_PAIR();
        CU(&g, cuEventRecord(e1, NULL));
        CU(&g, cuEventSynchronize(e1));
        CU(&g, cuEventElapsedTime(&t[i], e0, e1));
    }
#undef DQ_CUBLAS_PAIR
    qsort(t, 21, sizeof t[0], cmp_f32);
    dfree(fl);
    CU(&g, cuEventDestroy(e0));
    CU(&g, cuEventDestroy(e1));
    CHECK(!bad, "cublasGemmEx %u x %u x %u ran", T_max, N, K);
    printf("#   dequant + cuBLAS: %.1f us per launch pair, %.1f TFLOP/s; alone from an idle GPU, "
           "weights not in L2: %.1f us\n", us, 2.0 * n_tokens * N * K / us / 1e6, 1000.0 * t[10]);
    rt_cublas_close(&b);
    dfree(ws), dfree(dw);
}

/* y (T, N) = x (T, K) W^T over a chunk of T_max rows of which n_tokens are live, by
 * k_gemm_i4_g128 and by every k_gemm_i4_wg{S} the shape takes (K_GEMM_WG_OK): live rows
 * against the reference of their token (all of them up to 256 live rows; past that the first
 * and last 16 and every 7th, or every 31st in timing runs, to keep the host reference short),
 * nothing written for rows past n_tokens. k_gemm_i4_g128: the bound of the INT4 GEMV (each
 * group in the MMA, then one fp32 term per group, one bf16 rounding). k_gemm_i4_wg: the
 * weights expanded to bf16(scale * (q - 8)) as k_dequant_i4 stores them, products exact, fp32
 * sums over all of K (K / 16 MMAs and the split's partial sums), one bf16 rounding. With
 * `timing` (and N K >= 1e6) each kernel's time is printed, the planner's split marked, and
 * then the expansion + cuBLAS pair's (time_dequant_cublas). */
static void test_gemm_i4(uint32_t T_max, uint32_t n_tokens, uint32_t N, uint32_t K, int timing)
{
    struct i4m m;
    i4m_new(&m, N, K, 128, 1);
    uint16_t *x = test_malloc((size_t)T_max * K * 2), *wq = test_malloc((size_t)N * K * 2);
    rand_bf16(x, (size_t)T_max * K, 0.0f, 1.0f);
    kref_dequant_i4(wq, m.nib, m.sc, N, K, 128);
    size_t ny = (size_t)T_max * N;
    CUdeviceptr dx = dput(x, (size_t)T_max * K * 2), dy = dalloc((ny + SLACK) * 2);
    set_step(n_tokens, 0, 0, 0);
    struct k_gemm_i4_params p = {.w = m.d, .scales_offset = m.so, .x = dx, .y = dy, .step = d_step, .N = N, .K = K};
    void *args[] = {&p};
    /* the checked rows and their references: [0] the INT4 GEMV's, [1] the expanded matrix's */
    uint32_t *rows = test_malloc(sizeof(uint32_t) * n_tokens), nr = 0;
    for (uint32_t t = 0; t < n_tokens; t++)
        if (n_tokens <= 256 || t < 16 || t + 16 >= n_tokens || t % (timing ? 31 : 7) == 0)
            rows[nr++] = t;
    float *want[2], *tol[2];
    for (int r = 0; r < 2; r++) {
        want[r] = test_malloc(sizeof(float) * nr * N), tol[r] = test_malloc(sizeof(float) * nr * N);
        for (uint32_t i = 0; i < nr; i++) {
            float *w = want[r] + (size_t)i * N, *mg = tol[r] + (size_t)i * N;
            if (r)
                kref_gemv_bf16(w, mg, wq, x + (size_t)rows[i] * K, N, K);
            else
                kref_gemv_i4(w, mg, m.nib, m.sc, x + (size_t)rows[i] * K, N, K, 128);
            const double terms = r ? 2.0 * K / 16 + 8 : GEMV_TERMS(K);
            for (uint32_t c = 0; c < N; c++)
                mg[c] = (float)(terms * U32 * mg[c]);
        }
    }
    uint16_t *got = test_malloc((ny + SLACK) * 2);
    const uint32_t plan_s = k_gemm_wg_split(T_max, N, K), plan_bt = k_gemm_wg_tile(T_max);
    for (int k = 0; k < 9; k++) { /* g128, then wg{1,2,4,8}, then wg{1,2,4,8}_t64 */
        const uint32_t S = k ? wg_splits[(k - 1) % 4] : 0;
        if (k && !K_GEMM_WG_OK(128u, N, K, S))
            continue;
        CUfunction f = k ? f_gemm_wg[k - 1] : f_gemm_i4;
        const unsigned wbt = k > 4 ? K_GEMM_WG_BT64 : K_GEMM_WG_BT;
        const unsigned bt = k ? wbt : K_GEMM_I4_BT, gx = (T_max + bt - 1) / bt;
        const unsigned gy = k ? N / K_GEMM_WG_BN : (N + K_GEMM_I4_BN - 1) / K_GEMM_I4_BN;
        const unsigned gz = k ? S : 1, threads = k ? K_GEMM_WG_THREADS : K_GEMM_I4_THREADS;
        const unsigned smem = k ? K_GEMM_WG_SMEM_T(wbt, K, S) : 0;
        char name[32];
        snprintf(name, sizeof name, k ? "k_gemm_i4_wg%u%s" : "k_gemm_i4_g128", S,
                 k > 4 ? "_t64" : "");
        dpoison(dy, (ny + SLACK) * 2);
        CU(&g, cuLaunchKernel(f, gx, gy, gz, threads, 1, 1, smem, NULL, args, NULL));
        CU(&g, cuCtxSynchronize());
        dget(got, dy, (ny + SLACK) * 2);
        struct cmpstat st = {0};
        for (uint32_t i = 0; i < nr; i++)
            cmp_close(&st, "y", got + (size_t)rows[i] * N, 1, want[k > 0] + (size_t)i * N,
                      tol[k > 0] + (size_t)i * N, N);
        long stray = stray16(got, (size_t)n_tokens * N, ny + SLACK);
        CHECK(st.bad == 0 && stray < 0,
              "%s T=%u of %u, %u x %u: %zu outputs (%u rows) within half a bf16 ulp + fp32 sum "
              "bound (worst %.2f ulp from exact; %zu equal bf16(exact)), nothing past the live "
              "rows (stray %ld)",
              name, n_tokens, T_max, N, K, st.n, nr, st.worst_ulp, st.equal, stray);
        if (timing && (double)N * K >= 1e6) { /* information: time, weight bandwidth, tensor rate */
            double us = gpu_time_us3(&g, f, &p, gx, gy, gz, threads, smem, TIME_REPS);
            double wb = (double)N * (K / 2 + K / 64);
            printf("#   time: %.1f us per launch, %.0f GB/s of weights, %.1f TFLOP/s%s\n", us,
                   wb / us / 1e3, 2.0 * n_tokens * N * K / us / 1e6,
                   k && S == plan_s && wbt == plan_bt ? " (the planner's split and tile)" : "");
            if (k && S == plan_s && wbt == plan_bt) { /* as inside a prefill graph */
                CUdeviceptr fl = dalloc(COLD_FLUSH);
                printf("#   time: %.1f us a launch alone from an idle GPU, weights not in L2\n",
                       gpu_time_cold(&g, f, &p, gx, gy, gz, threads, smem, fl, COLD_FLUSH, 21));
                dfree(fl);
            }
        }
    }
    if (timing && (double)N * K >= 1e6)
        time_dequant_cublas(&m, dx, dy, T_max, n_tokens, N, K);
    for (int r = 0; r < 2; r++)
        free(want[r]), free(tol[r]);
    free(x), free(wq), free(rows), free(got), dfree(dx), dfree(dy), i4m_free(&m);
}

/* k_gemm_i4_wg{S} with two matrices of one x in one launch (W1's row tiles, then W2's), each
 * S both take: both outputs against their expanded matrices' GEMVs (every live row up to 256,
 * else the first and last 16 and every 31st), nothing past the live rows of either. With
 * timing: the pair's launch at the planner's split against the two matrices launched alone. */
static void test_gemm_wg_pair(uint32_t T_max, uint32_t n_tokens, uint32_t N1, uint32_t N2,
                              uint32_t K, int timing)
{
    struct i4m m[2];
    const uint32_t Ns[2] = {N1, N2};
    uint16_t *x = test_malloc((size_t)T_max * K * 2), *wq[2];
    rand_bf16(x, (size_t)T_max * K, 0.0f, 1.0f);
    CUdeviceptr dx = dput(x, (size_t)T_max * K * 2), dy[2];
    uint32_t *rows = test_malloc(sizeof(uint32_t) * n_tokens), nr = 0;
    for (uint32_t t = 0; t < n_tokens; t++)
        if (n_tokens <= 256 || t < 16 || t + 16 >= n_tokens || t % 31 == 0)
            rows[nr++] = t;
    float *want[2], *tol[2];
    uint16_t *got[2];
    for (int i = 0; i < 2; i++) {
        i4m_new(&m[i], Ns[i], K, 128, 1);
        wq[i] = test_malloc((size_t)Ns[i] * K * 2);
        kref_dequant_i4(wq[i], m[i].nib, m[i].sc, Ns[i], K, 128);
        dy[i] = dalloc(((size_t)T_max * Ns[i] + SLACK) * 2);
        got[i] = test_malloc(((size_t)T_max * Ns[i] + SLACK) * 2);
        want[i] = test_malloc(sizeof(float) * nr * Ns[i]);
        tol[i] = test_malloc(sizeof(float) * nr * Ns[i]);
        for (uint32_t r = 0; r < nr; r++) {
            float *w = want[i] + (size_t)r * Ns[i], *mg = tol[i] + (size_t)r * Ns[i];
            kref_gemv_bf16(w, mg, wq[i], x + (size_t)rows[r] * K, Ns[i], K);
            for (uint32_t c = 0; c < Ns[i]; c++)
                mg[c] = (float)((2.0 * K / 16 + 8) * U32 * mg[c]);
        }
    }
    set_step(n_tokens, 0, 0, 0);
    struct k_gemm_i4_params p = {.w = m[0].d, .scales_offset = m[0].so, .x = dx, .y = dy[0],
                                 .step = d_step, .N = N1, .K = K, .w2 = m[1].d,
                                 .scales_offset2 = m[1].so, .y2 = dy[1], .N2 = N2};
    void *args[] = {&p};
    const uint32_t plan_s = k_gemm_wg_split(T_max, N1 + N2, K), plan_bt = k_gemm_wg_tile(T_max);
    const unsigned gy = (N1 + N2) / K_GEMM_WG_BN;
    for (int k = 0; k < 8; k++) { /* wg{1,2,4,8}, then the _t64 builds */
        const uint32_t S = wg_splits[k % 4], bt = k < 4 ? K_GEMM_WG_BT : K_GEMM_WG_BT64;
        if (!K_GEMM_WG_OK(128u, N1, K, S) || !K_GEMM_WG_OK(128u, N2, K, S))
            continue;
        const unsigned smem = K_GEMM_WG_SMEM_T(bt, K, S), gx = (T_max + bt - 1) / bt;
        for (int i = 0; i < 2; i++)
            dpoison(dy[i], ((size_t)T_max * Ns[i] + SLACK) * 2);
        CU(&g, cuLaunchKernel(f_gemm_wg[k], gx, gy, S, K_GEMM_WG_THREADS, 1, 1, smem, NULL, args,
                              NULL));
        CU(&g, cuCtxSynchronize());
        struct cmpstat st = {0};
        long stray = -1;
        for (int i = 0; i < 2; i++) {
            const size_t ny = (size_t)T_max * Ns[i];
            dget(got[i], dy[i], (ny + SLACK) * 2);
            for (uint32_t r = 0; r < nr; r++)
                cmp_close(&st, "y", got[i] + (size_t)rows[r] * Ns[i], 1,
                          want[i] + (size_t)r * Ns[i], tol[i] + (size_t)r * Ns[i], Ns[i]);
            long s1 = stray16(got[i], (size_t)n_tokens * Ns[i], ny + SLACK);
            stray = stray >= 0 ? stray : s1;
        }
        CHECK(st.bad == 0 && stray < 0,
              "k_gemm_i4_wg%u%s, two matrices T=%u of %u, %u + %u x %u: %zu outputs within half "
              "a bf16 ulp + fp32 sum bound (worst %.2f ulp from exact), nothing past the live "
              "rows of either (stray %ld)",
              S, k < 4 ? "" : "_t64", n_tokens, T_max, N1, N2, K, st.n, st.worst_ulp, stray);
        if (timing && S == plan_s && bt == plan_bt) {
            const double us = gpu_time_us3(&g, f_gemm_wg[k], &p, gx, gy, S, K_GEMM_WG_THREADS, smem,
                                           TIME_REPS);
            double alone = 0;
            for (int i = 0; i < 2; i++) {
                const uint32_t Si = k_gemm_wg_split(T_max, Ns[i], K);
                int ki = bt == K_GEMM_WG_BT ? 0 : 4;
                while (wg_splits[ki % 4] != Si)
                    ki++;
                struct k_gemm_i4_params q = {.w = m[i].d, .scales_offset = m[i].so, .x = dx,
                                             .y = dy[i], .step = d_step, .N = Ns[i], .K = K};
                alone += gpu_time_us3(&g, f_gemm_wg[ki], &q, gx, Ns[i] / K_GEMM_WG_BN, Si,
                                      K_GEMM_WG_THREADS, K_GEMM_WG_SMEM_T(bt, K, Si), TIME_REPS);
            }
            CUdeviceptr fl = dalloc(COLD_FLUSH);
            const double cold = gpu_time_cold(&g, f_gemm_wg[k], &p, gx, gy, S, K_GEMM_WG_THREADS,
                                              smem, fl, COLD_FLUSH, 21);
            dfree(fl);
            printf("#   time: %.1f us per launch of both (the planner's split and tile), %.1f us "
                   "as two launches at theirs; %.1f us alone from an idle GPU, weights not in "
                   "L2\n",
                   us, alone, cold);
        }
    }
    for (int i = 0; i < 2; i++)
        free(want[i]), free(tol[i]), free(wq[i]), free(got[i]), dfree(dy[i]), i4m_free(&m[i]);
    free(x), free(rows), dfree(dx);
}

static void test_gemms(void)
{
    test_gemm_i4(1, 1, 128, 128, 0);       /* one token, one group, one row tile */
    test_gemm_i4(16, 5, 1000, 2176, 0);    /* a partial token tile, a partial row tile, 17 groups */
    test_gemm_i4(64, 64, 200, 384, 0);     /* one full token tile, an odd group count */
    test_gemm_i4(100, 77, 1000, 8192, 0);  /* tokens past one tile, 64 groups, rows past N */
    test_gemm_i4(100, 77, 1024, 8192, 0);  /* the same for the wg kernels (N % 128), a split of 8 */
    test_gemm_i4(300, 259, 256, 1024, 0);  /* three wg token tiles, the last partial */
    test_gemm_i4(256, 200, 8192, 2048, 0); /* GDN in_proj at a partly filled 256 bucket */
    test_gemm_i4(16, 16, 8192, 2048, 1);   /* timing: the 16 and 64 buckets, GDN in_proj size */
    test_gemm_i4(64, 64, 8192, 2048, 1);
    test_gemm_wg_pair(100, 77, 384, 256, 1024, 0); /* a pair, a partial token tile */
    test_gemm_wg_pair(64, 64, 8192, 4096, 2048, 1);
    /* the model's dense projections at the 128 .. 512 buckets: GDN in_proj (q, k, v) and z,
     * out_proj (and attention's o_proj), the shared expert's gate or up and down */
    for (uint32_t T = 128; T <= 512; T *= 2) {
        test_gemm_i4(T, T, 8192, 2048, 1);
        test_gemm_i4(T, T, 4096, 2048, 1);
        test_gemm_i4(T, T, 2048, 4096, 1);
        test_gemm_i4(T, T, 512, 2048, 1);
        test_gemm_i4(T, T, 2048, 512, 1);
        test_gemm_wg_pair(T, T, 8192, 4096, 2048, 1); /* GDN in_proj_qkv + in_proj_z */
    }
}

/* k_gemv_bf16_norm: fp32 y_s = W_s RMSNorm(x + add) with the norm made per CTA, against the
 * reference over the host norm rounded to bf16. A staged input may sit one bf16 ulp from the
 * host's where the sum of squares rounds the other way, so the bound is 2^-8 of sum |w x|
 * (plus the fp32 sum bound); x itself must not change (the MoE down kernel updates it). */
static void test_gemv_norm(const char *name, uint32_t K, uint32_t nseg, const uint32_t *n)
{
    uint16_t *x = test_malloc((size_t)K * 2), *add = test_malloc((size_t)K * 2),
             *w = test_malloc((size_t)K * 2), *xr = test_malloc((size_t)K * 2),
             *hn = test_malloc((size_t)K * 2), *xg = test_malloc((size_t)K * 2);
    float *y = test_malloc(sizeof(float) * K);
    rand_bf16(x, K, 0.0f, 3.0f);
    rand_bf16(add, K, 0.0f, 1.0f);
    rand_bf16(w, K, 0.0f, 0.5f);
    memcpy(xr, x, (size_t)K * 2);
    kref_rmsnorm_row(xr, add, w, y, K, EPS);
    for (uint32_t i = 0; i < K; i++)
        hn[i] = kref_f2bf(y[i]);
    CUdeviceptr dx = dput(x, (size_t)K * 2), da = dput(add, (size_t)K * 2), dw = dput(w, (size_t)K * 2);
    struct k_gemv_params p = {.x = dx, .step = d_step, .nseg = nseg, .K = K, .flags = K_GEMV_OUT_F32,
                              .norm_add = da, .norm_w = dw, .norm_eps = EPS};
    uint16_t *ws[K_GEMV_MAX_SEG];
    CUdeviceptr dy[K_GEMV_MAX_SEG];
    uint32_t blocks = 0;
    for (uint32_t s = 0; s < nseg; s++) {
        ws[s] = test_malloc((size_t)n[s] * K * 2);
        rand_bf16(ws[s], (size_t)n[s] * K, 0.0f, 0.05f);
        p.seg[s].w = dput(ws[s], (size_t)n[s] * K * 2);
        p.seg[s].y = dy[s] = dalloc((n[s] + SLACK) * 4);
        dpoison(dy[s], (n[s] + SLACK) * 4);
        p.seg[s].n = n[s], p.seg[s].blocks = blocks;
        blocks += (n[s] + K_GEMV_ROWS - 1) / K_GEMV_ROWS;
    }
    set_step(1, 0, 1, 0);
    launch(f_gemv_bf16_norm, &p, blocks, K_GEMV_THREADS);
    size_t bad = 0, total = 0;
    long stray = -1;
    double worst = 0;
    for (uint32_t s = 0; s < nseg; s++) {
        float *got = test_malloc((n[s] + SLACK) * 4), *want = test_malloc(sizeof(float) * n[s]),
              *mag = test_malloc(sizeof(float) * n[s]);
        dget(got, dy[s], (n[s] + SLACK) * 4);
        kref_gemv_bf16(want, mag, ws[s], hn, n[s], K);
        for (uint32_t i = 0; i < n[s]; i++) {
            double tol = mag[i] / 256.0 + GEMV_TERMS(K) * U32 * mag[i] + 1e-30;
            double e = fabs((double)got[i] - want[i]) / tol;
            worst = e > worst ? e : worst;
            bad += !(e <= 1.0), total++;
        }
        long r = stray32((const uint32_t *)got, n[s], n[s] + SLACK);
        stray = stray < 0 ? r : stray;
        free(got), free(want), free(mag);
    }
    dget(xg, dx, (size_t)K * 2);
    int same_x = !memcmp(xg, x, (size_t)K * 2);
    CHECK(bad == 0 && stray < 0 && same_x,
          "%s: %zu fp32 rows within 2^-8 of sum |w x| of the GEMV over the host norm (worst %.3f "
          "of the bound), nothing past n (stray %ld), x unchanged (%s)",
          name, total, worst, stray, same_x ? "yes" : "no");
    for (uint32_t s = 0; s < nseg; s++)
        free(ws[s]), dfree(p.seg[s].w), dfree(dy[s]);
    free(x), free(add), free(w), free(xr), free(hn), free(xg), free(y);
    dfree(dx), dfree(da), dfree(dw);
}

/* ---- k_rmsnorm ------------------------------------------------------------------------------- */

struct norm_case {
    uint32_t T_max, n, add, last_only, done;
};

/* Compare the device's x and out with the reference for rows [r0, r1); rows outside keep x
 * and, when the case has per-row outputs, the poison in out. */
static void norm_compare(const struct norm_case *c, const uint16_t *x0, const uint16_t *addv,
                         const uint16_t *w, const uint16_t *xg, const uint16_t *outg,
                         struct cmpstat *st, size_t *xbad, long *stray)
{
    uint32_t rows = c->done ? 0 : c->n, r0 = c->last_only && rows ? rows - 1 : 0;
    uint16_t *xr = test_malloc((size_t)c->T_max * HID * 2);
    float *y = test_malloc(sizeof(float) * HID), *tol = test_malloc(sizeof(float) * HID);
    memcpy(xr, x0, (size_t)c->T_max * HID * 2);
    for (uint32_t t = r0; t < rows; t++) {
        kref_rmsnorm_row(xr + (size_t)t * HID, c->add ? addv + (size_t)t * HID : NULL, w, y, HID,
                         EPS);
        for (uint32_t i = 0; i < HID; i++)
            tol[i] = (float)(NORM_REL * fabsf(y[i]));
        const uint16_t *o = outg + (c->last_only ? 0 : (size_t)t * HID);
        cmp_close(st, "out", o, 1, y, tol, HID);
    }
    *xbad = cmp_bits("x", xg, xr, (size_t)c->T_max * HID);
    size_t out_rows = c->last_only ? 1 : c->T_max, live = c->last_only ? (rows > 0) : rows;
    *stray = stray16(outg, live * HID, out_rows * HID + SLACK);
    free(xr), free(y), free(tol);
}

static void test_norm(const struct norm_case *c)
{
    size_t nx = (size_t)c->T_max * HID, out_rows = c->last_only ? 1 : c->T_max;
    uint16_t *x = test_malloc(nx * 2), *addv = test_malloc(nx * 2), *w = test_malloc(HID * 2);
    for (uint32_t t = 0; t < c->T_max; t++) /* rows of different magnitudes */
        rand_bf16(x + (size_t)t * HID, HID, 0.0f, 0.01f + 8.0f * fabsf(urand()));
    rand_bf16(addv, nx, 0.0f, 1.0f);
    rand_bf16(w, HID, 0.0f, 0.5f); /* zero-centred: the scale is 1 + w */
    CUdeviceptr dx = dput(x, nx * 2), da = dput(addv, nx * 2), dw = dput(w, HID * 2);
    CUdeviceptr dout = dalloc((out_rows * HID + SLACK) * 2);
    dpoison(dout, (out_rows * HID + SLACK) * 2);
    set_step(c->n, c->done, 1, 0);
    struct k_rmsnorm_params p = {.x = dx,
                                 .add = c->add ? da : 0,
                                 .w = dw,
                                 .out = dout,
                                 .step = d_step,
                                 .H = HID,
                                 .T_max = c->T_max,
                                 .eps = EPS,
                                 .last_only = c->last_only};
    launch(f_norm, &p, (unsigned)out_rows, K_NORM_THREADS);
    uint16_t *xg = test_malloc(nx * 2), *outg = test_malloc((out_rows * HID + SLACK) * 2);
    dget(xg, dx, nx * 2), dget(outg, dout, (out_rows * HID + SLACK) * 2);
    struct cmpstat st = {0};
    size_t xbad;
    long stray;
    norm_compare(c, x, addv, w, xg, outg, &st, &xbad, &stray);
    CHECK(st.bad == 0 && xbad == 0 && stray < 0,
          "k_rmsnorm T_max=%u n_tokens=%u%s%s%s: %zu outputs within half a bf16 ulp + 1e-5 rel "
          "(worst %.2f ulp from exact, %zu equal bf16(exact)); residual x bit-exact (%zu "
          "differ); no stray write (%ld)",
          c->T_max, c->n, c->add ? " +add" : "", c->last_only ? " last_only" : "",
          c->done ? " done" : "", st.n, st.worst_ulp, st.equal, xbad, stray);
    free(x), free(addv), free(w), free(xg), free(outg);
    dfree(dx), dfree(da), dfree(dw), dfree(dout);
}

static void test_norms(void)
{
    static const struct norm_case cs[] = {
        {1, 1, 0, 0, 0},     {1, 1, 1, 0, 0},     {320, 300, 0, 0, 0}, {320, 300, 1, 0, 0},
        {320, 300, 1, 1, 0}, {320, 300, 0, 1, 0}, {1, 1, 1, 0, 1},
    };
    for (size_t i = 0; i < sizeof cs / sizeof cs[0]; i++)
        test_norm(&cs[i]);
}

/* ---- k_silu_mul ------------------------------------------------------------------------------ */

static void test_silu(uint32_t T_max, uint32_t n_tokens, uint32_t n)
{
    size_t ne = (size_t)T_max * n;
    uint16_t *gt = test_malloc(ne * 2), *up = test_malloc(ne * 2), *got = test_malloc((ne + SLACK) * 2);
    rand_bf16(gt, ne, 0.0f, 8.0f);
    rand_bf16(up, ne, 0.0f, 2.0f);
    CUdeviceptr dg = dput(gt, ne * 2), du = dput(up, ne * 2), dout = dalloc((ne + SLACK) * 2);
    dpoison(dout, (ne + SLACK) * 2);
    set_step(n_tokens, 0, 1, 0);
    struct k_silu_mul_params p = {
        .gate = dg, .up = du, .out = dout, .step = d_step, .n = n, .T_max = T_max};
    launch(f_silu, &p, T_max, 256);
    dget(got, dout, (ne + SLACK) * 2);
    size_t live = (size_t)n_tokens * n, bad = 0, equal = 0;
    for (size_t i = 0; i < live; i++) {
        uint16_t w0 = kref_silu_mul_one(gt[i], up[i], 0.0);
        equal += got[i] == w0;
        if (got[i] != w0 && got[i] != kref_silu_mul_one(gt[i], up[i], SILU_REL) &&
            got[i] != kref_silu_mul_one(gt[i], up[i], -SILU_REL) && bad++ < SHOW)
            printf("#   out[%zu]: gate %g up %g got %g want %g\n", i,
                   (double)kref_bf2f(gt[i]), (double)kref_bf2f(up[i]),
                   (double)kref_bf2f(got[i]), (double)kref_bf2f(w0));
    }
    long stray = stray16(got, live, ne + SLACK);
    CHECK(bad == 0 && stray < 0,
          "k_silu_mul T_max=%u n_tokens=%u n=%u: bf16(bf16(silu(g)) * up) "
          "(%zu of %zu bit-equal, rest within silu * (1 +- 1e-6)), rows past n_tokens untouched "
          "(stray %ld)",
          T_max, n_tokens, n, equal, live, stray);
    free(gt), free(up), free(got), dfree(dg), dfree(du), dfree(dout);
}

/* ---- k_embed and lm_head (the full-size vocabulary)
 * ---------------------------------------------- */

static void test_embed_prefill(const uint16_t *table, CUdeviceptr dtab)
{
    uint32_t T_max = 320, n = 300;
    int32_t tok[320];
    for (uint32_t t = 0; t < T_max; t++)
        tok[t] = (int32_t)(test_rand(&rng) % VOCAB);
    tok[0] = 0, tok[1] = VOCAB - 1, tok[2] = -1, tok[3] = VOCAB; /* ends, and two bad ids */
    CUdeviceptr dt = dput(tok, sizeof tok), dout = dalloc(((size_t)T_max * HID + SLACK) * 2);
    dpoison(dout, ((size_t)T_max * HID + SLACK) * 2);
    set_step(n, 0, 0, 0);
    struct k_embed_params p = {.table = dtab,
                               .tokens = dt,
                               .out = dout,
                               .step = d_step,
                               .H = HID,
                               .V = VOCAB,
                               .T_max = T_max};
    launch(f_embed, &p, T_max, K_EMBED_THREADS);
    uint16_t *got = test_malloc(((size_t)T_max * HID + SLACK) * 2),
             *want = test_malloc((size_t)n * HID * 2);
    dget(got, dout, ((size_t)T_max * HID + SLACK) * 2);
    kref_embed(want, table, tok, n, HID, VOCAB);
    size_t bad = cmp_bits("out", got, want, (size_t)n * HID);
    long stray = stray16(got, (size_t)n * HID, (size_t)T_max * HID + SLACK);
    CHECK(bad == 0 && stray < 0,
          "k_embed V=%u T_max=%u n_tokens=%u: rows bit-exact, ids -1 and V "
          "give zero rows (%zu differ), rows past n_tokens untouched (stray %ld)",
          VOCAB, T_max, n, bad, stray);
    free(got), free(want), dfree(dt), dfree(dout);
}

/* decode: the token comes from step->token; with done set nothing is written */
static void test_embed_decode(const uint16_t *table, CUdeviceptr dtab, uint32_t done)
{
    int32_t tok = (int32_t)(test_rand(&rng) % VOCAB);
    CUdeviceptr dout = dalloc((HID + SLACK) * 2);
    dpoison(dout, (HID + SLACK) * 2);
    set_step(0, done, 0, tok); /* n_tokens is the last chunk's; decode's one row is live anyway */
    struct k_embed_params p = {.table = dtab,
                               .tokens = d_step + offsetof(struct k_step, token),
                               .out = dout,
                               .step = d_step,
                               .H = HID,
                               .V = VOCAB,
                               .T_max = 1};
    launch(f_embed, &p, 1, K_EMBED_THREADS);
    uint16_t got[HID + SLACK];
    dget(got, dout, sizeof got);
    size_t bad = done ? 0 : cmp_bits("out", got, table + (size_t)tok * HID, HID);
    long stray = stray16(got, done ? 0 : HID, HID + SLACK);
    CHECK(bad == 0 && stray < 0,
          "k_embed decode (token %d from step)%s: %s (%zu differ, stray %ld)", tok,
          done ? " with done" : "", done ? "writes nothing" : "row bit-exact", bad, stray);
    dfree(dout);
}

/* lm_head: 2048 -> 248320 fp32 logits, LAST_ONLY as in a prefill schedule */
static void test_lm_head(const uint16_t *table, CUdeviceptr dtab)
{
    uint32_t n[1] = {VOCAB};
    struct gv c = {.name = "k_gemv_bf16 lm_head K=2048 -> 248320 fp32 (LAST_ONLY, last chunk)",
                   .K = HID,
                   .nseg = 1,
                   .flags = K_GEMV_OUT_F32 | K_GEMV_LAST_ONLY};
    c.n[0] = n[0], c.w16[0] = table, c.dw[0] = dtab;
    gv_run(&c, 0, 1, NULL);
    gv_run(&c, 0, 0, "LAST_ONLY on a chunk that is not the last");
    gv_run(&c, 1, 1, "step->done");
    struct i4m m;
    i4m_new(&m, VOCAB, HID, 128, 0);
    struct gv q = {.name = "k_gemv_i4 lm_head group 128 K=2048 -> 248320 fp32 (random nibbles)",
                   .i4 = 1,
                   .K = HID,
                   .group = 128,
                   .nseg = 1,
                   .flags = K_GEMV_OUT_F32};
    q.n[0] = VOCAB, q.q[0] = &m;
    gv_run(&q, 0, 1, NULL);
    i4m_free(&m);
}

static void test_vocab(void)
{
    size_t ne = (size_t)VOCAB * HID;
    uint16_t *table = test_malloc(ne * 2);
    rand_bf16(table, ne, 0.0f, 0.05f);
    CUdeviceptr dtab = dput(table, ne * 2);
    test_embed_prefill(table, dtab);
    test_embed_decode(table, dtab, 0);
    test_embed_decode(table, dtab, 1);
    test_lm_head(table, dtab);
    free(table), dfree(dtab);
}

int main(void)
{
    if (gpu_open(&g))
        return test_skip("no CUDA device");
    CUmodule m = gpu_module(&g);
    CU(&g, cuModuleGetFunction(&f_embed, m, "k_embed"));
    CU(&g, cuModuleGetFunction(&f_norm, m, "k_rmsnorm"));
    CU(&g, cuModuleGetFunction(&f_gemv_bf16, m, "k_gemv_bf16"));
    CU(&g, cuModuleGetFunction(&f_gemv_bf16_norm, m, "k_gemv_bf16_norm"));
    CU(&g, cuModuleGetFunction(&f_gemv_i4, m, "k_gemv_i4"));
    CU(&g, cuModuleGetFunction(&f_gemv_g128, m, "k_gemv_i4_g128"));
    CU(&g, cuModuleGetFunction(&f_gemv_g128w, m, "k_gemv_i4_g128_w"));
    CU(&g, cuModuleGetFunction(&f_dequant, m, "k_dequant_i4"));
    CU(&g, cuModuleGetFunction(&f_gemm_i4, m, "k_gemm_i4_g128"));
    for (int i = 0; i < 8; i++) { /* the 128-token builds, then the _t64 ones */
        char nm[32];
        snprintf(nm, sizeof nm, "k_gemm_i4_wg%u%s", wg_splits[i % 4], i < 4 ? "" : "_t64");
        CU(&g, cuModuleGetFunction(&f_gemm_wg[i], m, nm));
        CU(&g, cuFuncSetAttribute(f_gemm_wg[i], CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES,
                                  K_GEMM_WG_SMEM(K_GEMM_WG_MAXKS, 1)));
    }
    CU(&g, cuModuleGetFunction(&f_silu, m, "k_silu_mul"));
    d_step = dalloc(sizeof(struct k_step));

    const char *gt = getenv("GEMM_TIMING"); /* T,N,K: only the dense kernels at that shape */
    unsigned tt, tn, tk;
    if (gt && sscanf(gt, "%u,%u,%u", &tt, &tn, &tk) == 3) {
        test_gemm_i4(tt, tt, tn, tk, 1);
        return test_done();
    }
    const char *pt = getenv("GEMM_PAIR"); /* T,N1,N2,K: only the two-matrix launch there */
    unsigned tn2;
    if (pt && sscanf(pt, "%u,%u,%u,%u", &tt, &tn, &tn2, &tk) == 4) {
        test_gemm_wg_pair(tt, tt, tn, tn2, tk, 1);
        return test_done();
    }
    test_hand_word();
    test_packer_roundtrip(32);
    test_packer_roundtrip(128);
    test_dequant(8192, 2048, 32);
    test_dequant(8192, 2048, 64);
    test_dequant(8192, 2048, 128);
    test_dequant(20, 96, 32); /* 1920 weights: a partial CTA */
    test_dequant_multi(1);
    test_gemvs();
    test_gemms();
    {
        const uint32_t router[2] = {256, 1}, odd[2] = {21, 3};
        test_gemv_norm("k_gemv_bf16_norm K=2048 -> 256+1 fp32 (router logits + shared gate)", 2048, 2,
                       router);
        test_gemv_norm("k_gemv_bf16_norm K=264 -> 21+3 fp32 (partial CTAs)", 264, 2, odd);
    }
    test_norms();
    test_silu(1, 1, 512);
    test_silu(320, 300, 512);
    test_vocab();

    dfree(d_step);
    CU(&g, cuModuleUnload(m));
    gpu_close(&g);
    return test_done();
}
