/* test_gpu_gdn.c — the Gated DeltaNet kernels (kern/gdn.cu, kern/gdn_chunk*.cu) against the CPU
 * recurrent reference (test/ref/kref_gdn.c), at three shapes:
 *   full    nk 16, nv 32, dk = dv = 128, conv_dim 8192, K 4   (Qwen3.5-35B-A3B)
 *   tiny-a  nk 2, nv 4, dk = dv = 32, K 4
 *   odd     nk 3, nv 6, dk 20, dv 28, K 3                    (the conv's generic-K path)
 * Prefill (k_gdn_conv, then the chunked rule) runs T = 1, 5, 63, 64, 65, 130, 300, 700 tokens from a
 * zero state and window (a fresh sequence) and from a random cached one, through the
 * tensor-core k_gdn_chunk + k_gdn_gnorm where they take the heads (full, tiny-a), through its
 * split form k_gdn_prep + k_gdn_seq + k_gdn_gnorm there too, and through k_gdn_chunk_fma at
 * every shape; k_gdn_chunk must also give the same bits twice, and the split form the same
 * bits as k_gdn_chunk (one order of the same operations), out and state. Decode
 * (k_gdn_step) continues a GPU prefill and must match both the reference and one longer
 * prefill, and runs once more from the reference's own state, where the tolerance is tight.
 * Every launch uses the planner's grid and block, fresh random inputs at the fixture scales
 * (conv taps N(0, 0.3), A_log = log U(0.01, 16), dt_bias N(0, 1), norm weight N(1, 0.1)),
 * outputs poisoned with 0xFF (a bf16/f32 NaN) and input rows past n_tokens poisoned too, so a
 * stray read or write shows. Full size also prints the speed of each kernel (# lines).
 *
 * Tolerances, and why:
 *  - conv: the device sums the taps in the reference's order with fmaf (products of bf16 are
 *    exact), so the pre-activation is bit-equal; SiLU's expf may differ by an fp32 ulp and
 *    flip the last rounding: at most 1 bf16 ulp, and on a few outputs only (a single-rounding
 *    conv + SiLU would differ on a quarter of them). The window is a copy of inputs: bit-exact.
 *  - state: fp32 throughout, but the chunked form reaches S by another route than the
 *    recurrence (decays e^(gam_i - gam_j) from an in-chunk cumsum of g, which loses the low
 *    bits of a strong decay; a triangular solve); on the CPU (kref_gdn_chunked, checked here
 *    too) the two differ by up to 8e-6 of the head's largest |S| at these shapes, so the chunk
 *    kernel must be within STATE_CHUNK = 5e-5 of it. The decode step runs the recurrence
 *    itself: STATE_STEP = 2e-6. k_gdn_chunk's tensor-core products carry 24 bits of each fp32
 *    operand (three bf16 parts), so it is held to the same fp32 tolerances.
 *  - outputs: an output o_j = sum_i S[i, j] q_i can be much smaller than its terms, so its
 *    fp32 error is measured against mag_j = sum_i |S[i, j] q_i| (from the reference): the
 *    chunked form lands within 1.5e-5 mag_j of the recurrence on the CPU (E_CHUNK = 2e-4),
 *    the step within ~1e-6 (E_STEP = 2e-5). The gated norm divides by the row's rms and rounds
 *    three times (core, normed, output), so an element may be off by those errors scaled by
 *    |w silu(z)| / rms, plus a shift of the rms itself, plus 4 bf16 ulps of rounding flips
 *    (the CPU chunked form shows 2). A step continuing a GPU prefill inherits the prefill's
 *    error and is held to the chunk tolerances; compared with a longer GPU prefill, to twice
 *    them. */
#include <math.h>
#include <string.h>

#include "../kern/gdn.h"
#include "../kern/step.h"
#include "gpu.h"
#include "ref/kref_gdn.h"

#define SLACK       64 /* elements past every output checked untouched */
#define SHOW        5  /* mismatches printed per check */
#define STATE_CHUNK 5e-5
#define STATE_STEP  2e-6
#define E_CHUNK     2e-4
#define E_STEP      2e-5
#define C_CHUNK     K_GDN_CHUNK
#define DVT_MAX     128 /* the widest value tile of k_gdn_chunk_fma */
#define SPLIT       1   /* a "value tile" that asks gpu_chunk for k_gdn_prep + k_gdn_seq */

static struct gpu g;
static CUfunction f_conv, f_step, f_chunk, f_fma, f_gnorm, f_prep, f_seq;
static CUdeviceptr d_step;
static int smem_optin;
static unsigned long long rng = 0x6D4E7;

struct shape {
    const char *name;
    uint32_t nk, nv, dk, dv, K;
};

/* One layer's weights, a token sequence and a cached start, on the host and the device. */
struct fix {
    struct k_gdn_dims d;
    const char *name;
    uint32_t cd, vd, T;         /* conv_dim, nv * dv, tokens of the sequence */
    uint16_t *conv_w, *dt_bias; /* (cd, K), (nv) */
    float *a_log, *norm_w;      /* (nv), (dv) */
    uint16_t *qkv, *z, *b, *a;  /* (T, cd), (T, vd), (T, nv), (T, nv) */
    uint16_t *win0;             /* (cd, K-1) start window */
    float *state0;              /* (nv, dk, dv) start state */
    CUdeviceptr d_conv_w, d_a_log, d_dt_bias, d_norm_w;
};

/* The reference's view of a run: everything after n tokens. */
struct run {
    uint16_t *u, *out; /* (n, cd) post-conv, (n, vd) gated output */
    float *core, *mag; /* (n, vd) unrounded core output and its error scale */
    uint16_t *win;     /* (cd, K-1) */
    float *state;      /* (nv, dk, dv) */
};

/* ---- plumbing ------------------------------------------------------------------------------ */

#define dalloc(n) gpu_alloc(&g, (n))
#define dput(h, n) gpu_put(&g, (h), (n))
#define dget(h, d, n) gpu_get(&g, (h), (d), (n))
#define dpoison(d, n) gpu_poison(&g, (d), (n))
#define dfree(d) gpu_free(&g, (d))

static void set_step(uint32_t n_tokens, uint32_t done)
{
    struct k_step s = {.pos = 11,
                       .n_tokens = n_tokens,
                       .done = done,
                       .max_new = 100,
                       .top_p = 1.0f,
                       .max_pos = 4096};
    CU(&g, cuMemcpyHtoD(d_step, &s, sizeof s));
}

static void launch(CUfunction f, void *params, unsigned grid, unsigned block, unsigned smem)
{
    void *args[] = {params};
    CU(&g, cuLaunchKernel(f, grid, 1, 1, block, 1, 1, smem, NULL, args, NULL));
    CU(&g, cuCtxSynchronize());
}

static void launch_xy(CUfunction f, void *params, unsigned gx, unsigned gy, unsigned block,
                      unsigned smem)
{
    void *args[] = {params};
    CU(&g, cuLaunchKernel(f, gx, gy, 1, block, 1, 1, smem, NULL, args, NULL));
    CU(&g, cuCtxSynchronize());
}

/* uniform in (-1, 1), never exactly zero */
static float urand(void)
{
    return (float)(((double)(test_rand(&rng) >> 40) + 0.5) / 8388608.0 - 1.0);
}
static float nrand(void) /* N(0, 1), Box-Muller */
{
    double u1 = (urand() + 1.0) / 2.0, u2 = (urand() + 1.0) / 2.0;
    return (float)(sqrt(-2.0 * log(u1)) * cos(6.283185307179586 * u2));
}

static uint16_t *rand_bf16(size_t n, float scale)
{
    uint16_t *d = test_malloc(n * 2);
    for (size_t i = 0; i < n; i++)
        d[i] = kref_f2bf(scale * urand());
    return d;
}

/* Dynamic shared memory of k_gdn_chunk_fma for a value tile of dvt columns (kern/gdn.h). */
static unsigned chunk_smem(uint32_t dk, uint32_t dvt)
{
    return K_GDN_CHUNK_SMEM(dk, dvt);
}

/* The planner's choice (plan/sched.c): k_gdn_prep + k_gdn_seq where k_gdn_chunk takes the heads
 * and both halves fit (SPLIT), k_gdn_chunk where only it fits (the value tile 0); else
 * k_gdn_chunk_fma with the widest tile. */
static int tc_takes(const struct k_gdn_dims *d)
{
    return K_GDN_CHUNK_TC_OK(d->dk, d->dv) && (int)K_GDN_CHUNK_TC_SMEM(d->dk) <= smem_optin;
}
static int split_takes(const struct k_gdn_dims *d)
{
    return tc_takes(d) && (int)K_GDN_SEQ_SMEM(d->dk) <= smem_optin &&
           (int)K_GDN_PREP_SMEM(d->dk) <= smem_optin;
}
static uint32_t plan_dvt(const struct k_gdn_dims *d)
{
    return split_takes(d) ? SPLIT : tc_takes(d) ? 0 : d->dv < DVT_MAX ? d->dv : DVT_MAX;
}

/* k_gdn_prep then k_gdn_seq with the planner's grids, blocks and shared memory; ws fresh and
 * poisoned (every record the sequence reads is written first). */
static void launch_split(struct k_gdn_chunk_params *p)
{
    uint64_t wsb = K_GDN_WS_BYTES(p->d.nv, p->d.T_max);
    CUdeviceptr ws = dalloc(wsb);
    dpoison(ws, wsb);
    p->ws = ws;
    unsigned sp = K_GDN_PREP_SMEM(p->d.dk), ss = K_GDN_SEQ_SMEM(p->d.dk);
    CU(&g, cuFuncSetAttribute(f_prep, CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES, (int)sp));
    CU(&g, cuFuncSetAttribute(f_seq, CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES, (int)ss));
    launch_xy(f_prep, p, p->d.nv, (p->d.T_max + C_CHUNK - 1) / C_CHUNK, K_GDN_CHUNK_TC_THREADS, sp);
    launch_xy(f_seq, p, p->d.nv, p->d.dv / K_GDN_CHUNK_TC_DVT, K_GDN_CHUNK_TC_THREADS, ss);
    dfree(ws);
    p->ws = 0;
}

/* ---- fixtures and the reference --------------------------------------------------------- */

static void fix_init(struct fix *f, const struct shape *s, uint32_t T)
{
    memset(f, 0, sizeof *f);
    f->name = s->name, f->T = T;
    f->cd = 2 * s->nk * s->dk + s->nv * s->dv, f->vd = s->nv * s->dv;
    f->d = (struct k_gdn_dims){s->nk, s->nv, s->dk, s->dv, f->cd, s->K, 0, 1e-6f};
    f->conv_w = test_malloc((size_t)f->cd * s->K * 2);
    for (size_t i = 0; i < (size_t)f->cd * s->K; i++)
        f->conv_w[i] = kref_f2bf(0.3f * nrand());
    f->dt_bias = test_malloc(s->nv * 2), f->a_log = test_malloc(s->nv * 4), f->norm_w = test_malloc(s->dv * 4);
    for (uint32_t h = 0; h < s->nv; h++) {
        f->dt_bias[h] = kref_f2bf(nrand());
        f->a_log[h] = logf(0.01f + 15.99f * (urand() + 1.0f) / 2.0f);
    }
    for (uint32_t j = 0; j < s->dv; j++)
        f->norm_w[j] = 1.0f + 0.1f * nrand();
    f->qkv = rand_bf16((size_t)T * f->cd, 1.5f);
    f->z = rand_bf16((size_t)T * f->vd, 2.0f);
    f->b = rand_bf16((size_t)T * s->nv, 2.0f), f->a = rand_bf16((size_t)T * s->nv, 2.0f);
    f->win0 = rand_bf16((size_t)f->cd * (s->K - 1), 1.5f);
    size_t sn = (size_t)s->nv * s->dk * s->dv;
    f->state0 = test_malloc(sn * 4);
    for (size_t i = 0; i < sn; i++)
        f->state0[i] = 0.3f * nrand();
    f->d_conv_w = dput(f->conv_w, (size_t)f->cd * s->K * 2);
    f->d_a_log = dput(f->a_log, s->nv * 4);
    f->d_dt_bias = dput(f->dt_bias, s->nv * 2);
    f->d_norm_w = dput(f->norm_w, s->dv * 4);
}

static void fix_free(struct fix *f)
{
    free(f->conv_w), free(f->dt_bias), free(f->a_log), free(f->norm_w), free(f->qkv), free(f->z);
    free(f->b), free(f->a), free(f->win0), free(f->state0);
    dfree(f->d_conv_w), dfree(f->d_a_log), dfree(f->d_dt_bias), dfree(f->d_norm_w);
}

static size_t win_n(const struct fix *f)
{
    return (size_t)f->cd * (f->d.kernel - 1);
}
static size_t state_n(const struct fix *f)
{
    return (size_t)f->d.nv * f->d.dk * f->d.dv;
}

static void run_alloc(struct run *r, const struct fix *f, uint32_t n)
{
    r->u = test_malloc((size_t)n * f->cd * 2), r->out = test_malloc((size_t)n * f->vd * 2);
    r->core = test_malloc((size_t)n * f->vd * 4), r->mag = test_malloc((size_t)n * f->vd * 4);
    r->win = test_malloc(win_n(f) * 2), r->state = test_malloc(state_n(f) * 4);
}

static void run_free(struct run *r)
{
    free(r->u), free(r->out), free(r->core), free(r->mag), free(r->win), free(r->state);
}

/* Reference of tokens [t0, t0 + n) of the sequence, continuing from r->win / r->state; the
 * per-token arrays of r are filled from row t0 on. */
static void ref_segment(const struct fix *f, struct run *r, uint32_t t0, uint32_t n)
{
    uint16_t *u = r->u + (size_t)t0 * f->cd, *core_bf = test_malloc((size_t)n * f->vd * 2 + 2);
    float *core = r->core + (size_t)t0 * f->vd;
    kref_gdn_conv(&f->d, f->qkv + (size_t)t0 * f->cd, f->conv_w, r->win, n, u);
    kref_gdn_recurrent(&f->d, u, f->b + (size_t)t0 * f->d.nv, f->a + (size_t)t0 * f->d.nv, f->a_log,
                       f->dt_bias, r->state, n, core, r->mag + (size_t)t0 * f->vd);
    for (size_t i = 0; i < (size_t)n * f->vd; i++)
        core_bf[i] = kref_f2bf(core[i]);
    kref_gdn_gnorm(&f->d, core_bf, f->z + (size_t)t0 * f->vd, f->norm_w, n,
                   r->out + (size_t)t0 * f->vd);
    free(core_bf);
}

/* The reference of the first n tokens from the start (cached or zero). */
static void ref_run(const struct fix *f, struct run *r, uint32_t n, int cached)
{
    run_alloc(r, f, n);
    if (cached) {
        memcpy(r->win, f->win0, win_n(f) * 2);
        memcpy(r->state, f->state0, state_n(f) * 4);
    } else {
        memset(r->win, 0, win_n(f) * 2);
        memset(r->state, 0, state_n(f) * 4);
    }
    ref_segment(f, r, 0, n);
}

/* ---- comparisons --------------------------------------------------------------------------- */

/* first index in [from, to) whose 16-bit word is not the poison, or -1 */
static long stray16(const uint16_t *h, size_t from, size_t to)
{
    for (size_t i = from; i < to; i++)
        if (h[i] != 0xFFFFu)
            return (long)i;
    return -1;
}

/* bf16 element-wise within max_ulp ulps; returns the failures, counts the bit-equal ones */
static size_t cmp_ulp(const char *what, const uint16_t *got, const uint16_t *want, size_t n,
                      double max_ulp, size_t *equal)
{
    size_t bad = 0;
    for (size_t i = 0; i < n; i++) {
        float gv = kref_bf2f(got[i]), wv = kref_bf2f(want[i]);
        double err = fabs((double)gv - wv), allow = max_ulp * kref_bf16_ulp(wv);
        *equal += got[i] == want[i];
        if (!(err <= allow) && bad++ < SHOW)
            printf("#   %s[%zu]: got %.6g want %.6g\n", what, i, (double)gv, (double)wv);
    }
    return bad;
}

static size_t cmp_bits(const char *what, const uint16_t *got, const uint16_t *want, size_t n)
{
    size_t bad = 0;
    for (size_t i = 0; i < n; i++)
        if (got[i] != want[i] && bad++ < SHOW)
            printf("#   %s[%zu]: got 0x%04x want 0x%04x\n", what, i, got[i], want[i]);
    return bad;
}

/* State (nv, dk, dv): |got - want| <= rel * max |want| over the head. Returns the failures;
 * *worst gets the largest error / allowed. */
static size_t cmp_state(const char *what, const struct fix *f, const float *got, const float *want,
                        double rel, double *worst)
{
    size_t hs = (size_t)f->d.dk * f->d.dv, bad = 0;
    *worst = 0;
    for (uint32_t h = 0; h < f->d.nv; h++) {
        double big = 0;
        for (size_t i = 0; i < hs; i++)
            big = fmax(big, fabs(want[h * hs + i]));
        double allow = rel * big + 1e-30;
        for (size_t i = 0; i < hs; i++) {
            double err = fabs((double)got[h * hs + i] - want[h * hs + i]);
            *worst = fmax(*worst, err / allow);
            if (!(err <= allow) && bad++ < SHOW)
                printf("#   %s[head %u, %zu, %zu]: got %.9g want %.9g allowed %.3g\n", what, h,
                       i / f->d.dv, i % f->d.dv, (double)got[h * hs + i], (double)want[h * hs + i],
                       allow);
        }
    }
    return bad;
}

static float silu(float x)
{
    return x / (1.0f + expf(-x));
}

/* Gated outputs of rows [0, n) (row stride vd) against rows [t0, t0 + n) of want (the
 * reference's outputs when NULL), allowing mult times the tolerance of the top of the file
 * for core error e (E_CHUNK or E_STEP), computed from the reference run r. Returns the
 * failures; *worst gets the largest error / allowed. */
static size_t cmp_out(const char *what, const struct fix *f, const struct run *r, uint32_t t0,
                      const uint16_t *got, const uint16_t *want, uint32_t n, double e, double mult,
                      double *worst)
{
    uint32_t dv = f->d.dv, nv = f->d.nv;
    size_t bad = 0;
    *worst = 0;
    for (size_t row = 0; row < (size_t)n * nv; row++) {
        size_t base = ((size_t)t0 * nv + row) * dv;
        const float *core = r->core + base, *mag = r->mag + base;
        double ss = 0, mm = 0;
        for (uint32_t j = 0; j < dv; j++) {
            float x = kref_bf2f(kref_f2bf(core[j]));
            ss += (double)x * x, mm += (double)mag[j] * mag[j];
        }
        double rms = sqrt(ss / dv) + 1e-30, shift = e * sqrt(mm / (ss + 1e-60)); /* of the rms */
        for (uint32_t j = 0; j < dv; j++) {
            float w = kref_bf2f(want ? want[row * dv + j] : r->out[base + j]);
            float gv = kref_bf2f(got[row * dv + j]);
            double gate = fabs(f->norm_w[j] * silu(kref_bf2f(f->z[base + j])));
            double y = kref_bf2f(kref_f2bf(core[j])) / rms;
            double allow = 4 * kref_bf16_ulp(kref_bf2f(r->out[base + j])) +
                           gate * (e * mag[j] / rms + fabs(y) * shift);
            double err = fabs((double)gv - w);
            allow *= mult;
            *worst = fmax(*worst, err / (allow + 1e-30));
            if (!(err <= allow) && bad++ < SHOW)
                printf("#   %s[t %zu, head %zu, %u]: got %.6g want %.6g allowed %.3g\n", what,
                       t0 + row / nv, row % nv, j, (double)gv, (double)w, allow);
        }
    }
    return bad;
}

/* ---- device runs ------------------------------------------------------------------------------
 */

/* Upload rows [t0, t0 + n) of a (T, w) bf16 array into a (T_max, w) device buffer, the rows past
 * n poisoned (NaN): a kernel that reads them turns its outputs into NaN. */
static CUdeviceptr put_rows(const uint16_t *h, uint32_t t0, uint32_t n, uint32_t T_max, uint32_t w)
{
    CUdeviceptr d = dalloc((size_t)T_max * w * 2);
    dpoison(d, (size_t)T_max * w * 2);
    CU(&g, cuMemcpyHtoD(d, h + (size_t)t0 * w, (size_t)n * w * 2));
    return d;
}

/* Device state of one sequence: window and recurrent state. */
struct dev_seq {
    CUdeviceptr win, state;
};

static void seq_put(const struct fix *f, struct dev_seq *s, const uint16_t *win, const float *state)
{
    s->win = dput(win, win_n(f) * 2);
    s->state = dput(state, state_n(f) * 4);
}

static void seq_get(const struct fix *f, const struct dev_seq *s, uint16_t *win, float *state)
{
    dget(win, s->win, win_n(f) * 2);
    dget(state, s->state, state_n(f) * 4);
}

static void seq_free(struct dev_seq *s)
{
    dfree(s->win), dfree(s->state);
}

/* k_gdn_conv over rows [t0, t0 + n) into out_u (T_max + SLACK rows of cd, poisoned first). */
static void gpu_conv(const struct fix *f, struct dev_seq *s, uint32_t t0, uint32_t n,
                     uint32_t T_max, CUdeviceptr out_u)
{
    CUdeviceptr qkv = put_rows(f->qkv, t0, n, T_max, f->cd);
    struct k_gdn_conv_params p = {.qkv = qkv,
                                  .conv_w = f->d_conv_w,
                                  .window = s->win,
                                  .out = out_u,
                                  .step = d_step,
                                  .d = f->d};
    p.d.T_max = T_max;
    set_step(n, 0);
    launch(f_conv, &p, K_GDN_CONV_GRID(f->cd, T_max), 128, 0);
    dfree(qkv);
}

/* The chunked rule over rows [t0, t0 + n) of post-conv u (host rows t0.., or the device buffer du
 * when non-zero) into out (T_max + SLACK rows of vd, poisoned first): k_gdn_chunk then
 * k_gdn_gnorm when dvt is 0, k_gdn_prep + k_gdn_seq then k_gdn_gnorm when it is SPLIT, else
 * k_gdn_chunk_fma with a value tile of dvt columns' worth of shared memory. */
static void gpu_chunk(const struct fix *f, struct dev_seq *s, const uint16_t *u, CUdeviceptr du,
                      uint32_t t0, uint32_t n, uint32_t T_max, CUdeviceptr out, uint32_t dvt)
{
    CUdeviceptr uu = du ? du : put_rows(u, 0, n, T_max, f->cd);
    CUdeviceptr z = put_rows(f->z, t0, n, T_max, f->vd);
    CUdeviceptr b = put_rows(f->b, t0, n, T_max, f->d.nv),
                a = put_rows(f->a, t0, n, T_max, f->d.nv);
    struct k_gdn_chunk_params p = {.u = uu,
                                   .z = z,
                                   .b = b,
                                   .a = a,
                                   .a_log = f->d_a_log,
                                   .dt_bias = f->d_dt_bias,
                                   .norm_w = f->d_norm_w,
                                   .state = s->state,
                                   .out = out,
                                   .step = d_step,
                                   .d = f->d};
    p.d.T_max = T_max;
    set_step(n, 0);
    if (!dvt || dvt == SPLIT) {
        unsigned smem = K_GDN_CHUNK_TC_SMEM(f->d.dk), rows = K_GDN_GNORM_THREADS / 32;
        CU(&g,
           cuFuncSetAttribute(f_chunk, CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES, (int)smem));
        if (dvt)
            launch_split(&p);
        else
            launch_xy(f_chunk, &p, f->d.nv, f->d.dv / K_GDN_CHUNK_TC_DVT, K_GDN_CHUNK_TC_THREADS,
                      smem);
        launch_xy(f_gnorm, &p, (T_max * f->d.nv + rows - 1) / rows, 1, K_GDN_GNORM_THREADS, 0);
    } else {
        unsigned smem = chunk_smem(f->d.dk, dvt);
        CU(&g,
           cuFuncSetAttribute(f_fma, CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES, (int)smem));
        launch(f_fma, &p, f->d.nv, K_GDN_THREADS, smem);
    }
    if (!du)
        dfree(uu);
    dfree(z), dfree(b), dfree(a);
}

/* One decode token t of the sequence: the conv of that token (k_gdn_conv over one row, the
 * math the decode in_proj GEMV's epilogue runs, K_GEMV_CONV), then k_gdn_step; out gets (vd)
 * bf16 (+ SLACK, poisoned first). */
/* Where a step's b and a come from: NULL, the fixture's rows; else the arrays b, a (nv) when
 * fused is 0, or the step's own dot products w_b[hv] . h, w_a[hv] . h (what INT4 plans run). */
struct step_ba {
    const uint16_t *b, *a;
    int fused;
    CUdeviceptr h, w_b, w_a;
    uint32_t H;
};

static void gpu_step_ba(const struct fix *f, struct dev_seq *s, uint32_t t, CUdeviceptr out,
                        uint32_t done, const struct step_ba *ba);

static void gpu_step(const struct fix *f, struct dev_seq *s, uint32_t t, CUdeviceptr out,
                     uint32_t done)
{
    gpu_step_ba(f, s, t, out, done, NULL);
}

static void gpu_step_ba(const struct fix *f, struct dev_seq *s, uint32_t t, CUdeviceptr out,
                        uint32_t done, const struct step_ba *ba)
{
    CUdeviceptr u = dalloc((size_t)f->cd * 2);
    dpoison(u, (size_t)f->cd * 2);
    CUdeviceptr qkv = dput(f->qkv + (size_t)t * f->cd, (size_t)f->cd * 2);
    struct k_gdn_conv_params pc = {
        .qkv = qkv, .conv_w = f->d_conv_w, .window = s->win, .out = u, .step = d_step, .d = f->d};
    pc.d.T_max = 1;
    set_step(1, done);
    launch(f_conv, &pc, K_GDN_CONV_GRID(f->cd, 1), 128, 0);
    CUdeviceptr z = dput(f->z + (size_t)t * f->vd, (size_t)f->vd * 2);
    const int own = ba && !ba->fused; /* b, a from the caller's arrays */
    CUdeviceptr b = dput(own ? ba->b : f->b + (size_t)t * f->d.nv, f->d.nv * 2);
    CUdeviceptr a = dput(own ? ba->a : f->a + (size_t)t * f->d.nv, f->d.nv * 2);
    struct k_gdn_step_params p = {.u = u,
                                  .z = z,
                                  .b = b,
                                  .a = a,
                                  .a_log = f->d_a_log,
                                  .dt_bias = f->d_dt_bias,
                                  .norm_w = f->d_norm_w,
                                  .state = s->state,
                                  .out = out,
                                  .step = d_step,
                                  .d = f->d};
    p.d.T_max = 1;
    if (ba && ba->fused) {
        p.b = p.a = 0; /* must not be read */
        p.h = ba->h, p.w_b = ba->w_b, p.w_a = ba->w_a, p.H = ba->H;
    }
    launch(f_step, &p, f->d.nv, K_GDN_STEP_THREADS, 0);
    dfree(qkv), dfree(u), dfree(z), dfree(b), dfree(a);
}

/* k_gdn_step making b and a from the normed input (w_b != 0) against the step reading them
 * from buffers that hold bf16(w . h): out, state and window the same bits. h and the rows are
 * multiples of 2^-6 up to 1/8, so each dot product is exact in fp32 in any order and both
 * paths see the same b and a. */
static void test_step_ba(const struct fix *f, uint32_t H)
{
    const uint32_t nv = f->d.nv;
    uint16_t *h = test_malloc((size_t)H * 2), *w = test_malloc((size_t)2 * nv * H * 2);
    uint16_t *b = test_malloc((size_t)nv * 2), *a = test_malloc((size_t)nv * 2);
    float *hf = test_malloc((size_t)H * 4), *wf = test_malloc((size_t)2 * nv * H * 4);
    for (uint32_t i = 0; i < H; i++)
        hf[i] = (float)((int)(test_rand(&rng) % 17) - 8) / 64.0f, h[i] = kref_f2bf(hf[i]);
    for (uint32_t i = 0; i < 2 * nv * H; i++)
        wf[i] = (float)((int)(test_rand(&rng) % 17) - 8) / 64.0f, w[i] = kref_f2bf(wf[i]);
    for (uint32_t r = 0; r < 2 * nv; r++) {
        double acc = 0;
        for (uint32_t i = 0; i < H; i++)
            acc += (double)wf[(size_t)r * H + i] * hf[i];
        (r < nv ? b : a)[r % nv] = kref_f2bf((float)acc);
    }
    struct step_ba plain = {b, a, 0, 0, 0, 0, 0};
    struct step_ba fused = {NULL, NULL, 1, dput(h, (size_t)H * 2), dput(w, (size_t)nv * H * 2),
                            dput(w + (size_t)nv * H, (size_t)nv * H * 2), H};
    size_t no = (size_t)f->vd + SLACK;
    CUdeviceptr o1 = dalloc(no * 2), o2 = dalloc(no * 2);
    dpoison(o1, no * 2), dpoison(o2, no * 2);
    struct dev_seq s1, s2;
    seq_put(f, &s1, f->win0, f->state0);
    seq_put(f, &s2, f->win0, f->state0);
    gpu_step_ba(f, &s1, 5, o1, 0, &plain);
    gpu_step_ba(f, &s2, 5, o2, 0, &fused);
    uint16_t *x1 = test_malloc(no * 2), *x2 = test_malloc(no * 2), *w1 = test_malloc(win_n(f) * 2),
             *w2 = test_malloc(win_n(f) * 2);
    float *t1 = test_malloc(state_n(f) * 4), *t2 = test_malloc(state_n(f) * 4);
    dget(x1, o1, no * 2), dget(x2, o2, no * 2);
    seq_get(f, &s1, w1, t1), seq_get(f, &s2, w2, t2);
    int same = !memcmp(x1, x2, no * 2) && !memcmp(t1, t2, state_n(f) * 4) &&
               !memcmp(w1, w2, win_n(f) * 2);
    int moved = memcmp(t1, f->state0, state_n(f) * 4) != 0; /* the step did run */
    CHECK(same && moved,
          "k_gdn_step %s making b and a from h (H = %u): out, state and window the same bits as "
          "from buffers (%s; state updated: %s)",
          f->name, H, same ? "yes" : "no", moved ? "yes" : "no");
    seq_free(&s1), seq_free(&s2);
    dfree(o1), dfree(o2), dfree(fused.h), dfree(fused.w_b), dfree(fused.w_a);
    free(h), free(w), free(b), free(a), free(hf), free(wf), free(x1), free(x2), free(w1), free(w2);
    free(t1), free(t2);
}

/* GPU prefill of rows [t0, t0 + n) (conv then chunk, through the device u buffer) into the host
 * array out (n, vd). */
static void gpu_prefill(const struct fix *f, struct dev_seq *s, uint32_t t0, uint32_t n,
                        uint16_t *out)
{
    uint32_t T_max = n + 3;
    CUdeviceptr du = dalloc((size_t)T_max * f->cd * 2), dout = dalloc((size_t)T_max * f->vd * 2);
    dpoison(du, (size_t)T_max * f->cd * 2);
    dpoison(dout, (size_t)T_max * f->vd * 2);
    gpu_conv(f, s, t0, n, T_max, du);
    gpu_chunk(f, s, NULL, du, t0, n, T_max, dout, plan_dvt(&f->d));
    dget(out, dout, (size_t)n * f->vd * 2);
    dfree(du), dfree(dout);
}

/* ---- prefill -------------------------------------------------------------------------------- */

/* Prefill of T tokens from a zero (fresh sequence) or the cached start: k_gdn_conv against the
 * reference conv (when tag is NULL), then the chunked rule on the reference's post-conv rows
 * against the recurrence. dvt: 0 for k_gdn_chunk, SPLIT for k_gdn_prep + k_gdn_seq, else
 * k_gdn_chunk_fma's value tile. */
static void test_prefill(const struct fix *f, uint32_t T, int cached, uint32_t dvt, const char *tag)
{
    const char *start = cached ? "cached" : "zero";
    uint32_t T_max = T + 5, cd = f->cd, vd = f->vd;
    struct run r;
    ref_run(f, &r, T, cached);
    uint16_t *zw = calloc(win_n(f), 2);
    float *zs = calloc(state_n(f), 4);
    struct dev_seq s;
    seq_put(f, &s, cached ? f->win0 : zw, cached ? f->state0 : zs);

    size_t nu = (size_t)T_max * cd + SLACK, no = (size_t)T_max * vd + SLACK, eq = 0;
    CUdeviceptr du = dalloc(nu * 2), dout = dalloc(no * 2);
    dpoison(du, nu * 2), dpoison(dout, no * 2);
    uint16_t *hu = test_malloc(nu * 2), *ho = test_malloc(no * 2), *hw = test_malloc(win_n(f) * 2);
    float *hs = test_malloc(state_n(f) * 4);
    if (!tag) {
        gpu_conv(f, &s, 0, T, T_max, du);
        dget(hu, du, nu * 2), dget(hw, s.win, win_n(f) * 2);
        size_t bad = cmp_ulp("u", hu, r.u, (size_t)T * cd, 1.0, &eq);
        long stray = stray16(hu, (size_t)T * cd, nu);
        size_t wbad = cmp_bits("window", hw, r.win, win_n(f));
        size_t flips = (size_t)T * cd - eq; /* rare: SiLU within an fp32 ulp of a bf16 tie */
        CHECK(
            !bad && flips <= 2 + (size_t)T * cd / 1000 && stray < 0 && !wbad,
            "k_gdn_conv %s T=%u %s: outputs within 1 bf16 ulp, at most 2 + 0.1%% not bit-equal "
            "(%zu "
            "of %zu, %zu off), rows past n untouched (first stray %ld), window bit-exact (%zu off)",
            f->name, T, start, flips, (size_t)T * cd, bad, stray, wbad);
    }

    gpu_chunk(f, &s, r.u, 0, 0, T, T_max, dout, dvt);
    dget(ho, dout, no * 2), dget(hs, s.state, state_n(f) * 4);
    double wo, ws;
    size_t obad = cmp_out("out", f, &r, 0, ho, NULL, T, E_CHUNK, 1.0, &wo);
    size_t sbad = cmp_state("state", f, hs, r.state, STATE_CHUNK, &ws);
    long stray = stray16(ho, (size_t)T * vd, no);
    CHECK(!obad && !sbad && stray < 0,
          "%s %s T=%u %s%s: outputs vs the recurrence (%zu off, worst %.2f of allowed), "
          "state (%zu off, worst %.2f), rows past n untouched (first stray %ld)",
          dvt == SPLIT ? "k_gdn_prep + k_gdn_seq" : dvt ? "k_gdn_chunk_fma" : "k_gdn_chunk", f->name,
          T, start, tag ? tag : "", obad, wo,
          sbad, ws, stray);

    seq_free(&s), dfree(du), dfree(dout);
    free(hu), free(ho), free(hw), free(hs), free(zw), free(zs);
    run_free(&r);
}

/* k_gdn_chunk twice on the same input from the cached start: the same bits, out and state; and
 * k_gdn_prep + k_gdn_seq (where they fit) the same bits as k_gdn_chunk. */
static void test_same_bits(const struct fix *f, uint32_t T)
{
    uint32_t T_max = T + 5;
    size_t no = (size_t)T_max * f->vd, sn = state_n(f);
    uint16_t *u = test_malloc((size_t)T * f->cd * 2), *o1 = test_malloc(no * 2),
             *o2 = test_malloc(no * 2);
    float *s1 = test_malloc(sn * 4), *s2 = test_malloc(sn * 4);
    memcpy(u, f->qkv, (size_t)T * f->cd * 2); /* any bf16 rows will do as post-conv input */
    CUdeviceptr dout = dalloc(no * 2);
    for (int i = 0; i < 2; i++) {
        struct dev_seq s;
        seq_put(f, &s, f->win0, f->state0);
        dpoison(dout, no * 2);
        gpu_chunk(f, &s, u, 0, 0, T, T_max, dout, 0);
        dget(i ? o2 : o1, dout, no * 2), dget(i ? s2 : s1, s.state, sn * 4);
        seq_free(&s);
    }
    int same = !memcmp(o1, o2, no * 2) && !memcmp(s1, s2, sn * 4);
    CHECK(same,
          "k_gdn_chunk %s T=%u: two runs on the same input give the same bits (out and state)",
          f->name, T);
    if (split_takes(&f->d)) {
        struct dev_seq s;
        seq_put(f, &s, f->win0, f->state0);
        dpoison(dout, no * 2);
        gpu_chunk(f, &s, u, 0, 0, T, T_max, dout, SPLIT);
        dget(o2, dout, no * 2), dget(s2, s.state, sn * 4);
        seq_free(&s);
        size_t od = 0, sd = 0;
        for (size_t i = 0; i < no; i++)
            od += o1[i] != o2[i];
        for (size_t i = 0; i < sn; i++)
            sd += memcmp(&s1[i], &s2[i], 4) != 0;
        CHECK(!od && !sd,
              "k_gdn_prep + k_gdn_seq %s T=%u: the same bits as k_gdn_chunk (out %zu of %zu "
              "differ, state %zu of %zu)",
              f->name, T, od, no, sd, sn);
    }
    dfree(dout);
    free(u), free(o1), free(o2), free(s1), free(s2);
}

/* The chunked form itself, on the CPU, meets the tolerances asked of k_gdn_chunk. */
static void test_chunked_cpu(const struct fix *f, uint32_t T)
{
    struct run r;
    ref_run(f, &r, T, 1);
    float *st = test_malloc(state_n(f) * 4), *core = test_malloc((size_t)T * f->vd * 4);
    memcpy(st, f->state0, state_n(f) * 4);
    kref_gdn_chunked(&f->d, r.u, f->b, f->a, f->a_log, f->dt_bias, st, T, core);
    double ws, wc = 0;
    size_t sbad = cmp_state("cpu chunked state", f, st, r.state, STATE_CHUNK, &ws), cbad = 0;
    for (size_t i = 0; i < (size_t)T * f->vd; i++) {
        double err = fabs((double)core[i] - r.core[i]), allow = E_CHUNK * r.mag[i] + 1e-30;
        wc = fmax(wc, err / allow);
        cbad += !(err <= allow);
    }
    CHECK(!sbad && !cbad,
          "kref_gdn_chunked %s T=%u: the CPU chunked form is within the chunk tolerances of the "
          "recurrence (state worst %.3f, core worst %.3f of allowed)",
          f->name, T, ws, wc);
    free(st), free(core);
    run_free(&r);
}

/* ---- decode ---------------------------------------------------------------------------------- */

/* D decode steps from token P on, out (D, vd); checks SLACK past each step's output. */
static long gpu_steps(const struct fix *f, struct dev_seq *s, uint32_t P, uint32_t D, uint16_t *out)
{
    size_t no = (size_t)f->vd + SLACK;
    CUdeviceptr d = dalloc(no * 2);
    uint16_t *h = test_malloc(no * 2);
    long stray = -1;
    for (uint32_t i = 0; i < D; i++) {
        dpoison(d, no * 2);
        gpu_step(f, s, P + i, d, 0);
        dget(h, d, no * 2);
        memcpy(out + (size_t)i * f->vd, h, (size_t)f->vd * 2);
        long x = stray16(h, f->vd, no);
        stray = stray < 0 ? x : stray;
    }
    dfree(d), free(h);
    return stray;
}

/* A P-token GPU prefill then D steps, against the reference, against one (P + D)-token GPU
 * prefill, and D steps from the reference's own state after P; then a step with done set. */
static void test_decode(const struct fix *f, uint32_t P, uint32_t D, int cached)
{
    const char *start = cached ? "cached" : "zero";
    struct run rp, r; /* the reference after P tokens, and after P + D */
    ref_run(f, &rp, P, cached);
    ref_run(f, &r, P + D, cached);
    uint16_t *zw = calloc(win_n(f), 2), *outp = test_malloc((size_t)(P + D) * f->vd * 2);
    float *zs = calloc(state_n(f), 4);
    uint16_t *outa = test_malloc((size_t)D * f->vd * 2), *outc = test_malloc((size_t)D * f->vd * 2);
    uint16_t *wa = test_malloc(win_n(f) * 2), *wb = test_malloc(win_n(f) * 2), *wc = test_malloc(win_n(f) * 2);
    float *sa = test_malloc(state_n(f) * 4), *sb = test_malloc(state_n(f) * 4),
          *sc = test_malloc(state_n(f) * 4);
    double w1, w2;

    struct dev_seq a, b, c;
    seq_put(f, &a, cached ? f->win0 : zw, cached ? f->state0 : zs);
    gpu_prefill(f, &a, 0, P, outp);
    long stray = gpu_steps(f, &a, P, D, outa);
    seq_get(f, &a, wa, sa);
    size_t obad = cmp_out("step out", f, &r, P, outa, NULL, D, E_CHUNK, 1.0, &w1);
    size_t sbad = cmp_state("step state", f, sa, r.state, STATE_CHUNK, &w2);
    size_t wbad = cmp_bits("step window", wa, r.win, win_n(f));
    CHECK(
        !obad && !sbad && !wbad && stray < 0,
        "k_gdn_step %s %s, %u steps after a %u-token prefill: outputs vs the recurrence (%zu off, "
        "worst %.2f), state (%zu off, worst %.2f), window bit-exact (%zu off), nothing past "
        "the output (first stray %ld)",
        f->name, start, D, P, obad, w1, sbad, w2, wbad, stray);

    seq_put(f, &b, cached ? f->win0 : zw, cached ? f->state0 : zs);
    gpu_prefill(f, &b, 0, P + D, outp);
    seq_get(f, &b, wb, sb);
    obad = cmp_out("step vs prefill out", f, &r, P, outa, outp + (size_t)P * f->vd, D, E_CHUNK, 2.0,
                   &w1);
    sbad = cmp_state("step vs prefill state", f, sa, sb, 2 * STATE_CHUNK, &w2);
    wbad = cmp_bits("step vs prefill window", wa, wb, win_n(f));
    CHECK(!obad && !sbad && !wbad,
          "k_gdn_step %s %s: a %u-token prefill + %u steps equals one %u-token prefill: outputs "
          "(%zu off, worst %.2f), state (%zu off, worst %.2f), window (%zu off)",
          f->name, start, P, D, P + D, obad, w1, sbad, w2, wbad);

    seq_put(f, &c, rp.win, rp.state);
    stray = gpu_steps(f, &c, P, D, outc);
    seq_get(f, &c, wc, sc);
    obad = cmp_out("step* out", f, &r, P, outc, NULL, D, E_STEP, 1.0, &w1);
    sbad = cmp_state("step* state", f, sc, r.state, STATE_STEP, &w2);
    wbad = cmp_bits("step* window", wc, r.win, win_n(f));
    CHECK(!obad && !sbad && !wbad && stray < 0,
          "k_gdn_step %s %s, %u steps from the reference state after %u: outputs (%zu off, worst "
          "%.2f of the step tolerance), state (%zu off, worst %.2f), window (%zu off)",
          f->name, start, D, P, obad, w1, sbad, w2, wbad);

    /* done: the step must not touch out, the state or the window */
    size_t no = (size_t)f->vd + SLACK;
    CUdeviceptr dout = dalloc(no * 2);
    uint16_t *ho = test_malloc(no * 2);
    dpoison(dout, no * 2);
    gpu_step(f, &c, P, dout, 1);
    dget(ho, dout, no * 2);
    seq_get(f, &c, wa, sa);
    long written = stray16(ho, 0, no);
    int same = !memcmp(wa, wc, win_n(f) * 2) && !memcmp(sa, sc, state_n(f) * 4);
    CHECK(written < 0 && same,
          "k_gdn_step %s %s with done set: no output written (first %ld), "
          "state and window unchanged (%s)",
          f->name, start, written, same ? "yes" : "no");

    seq_free(&a), seq_free(&b), seq_free(&c), dfree(dout);
    free(zw), free(zs), free(outp), free(outa), free(outc), free(wa), free(wb), free(wc);
    free(sa), free(sb), free(sc), free(ho);
    run_free(&rp), run_free(&r);
}

/* ---- speed (information only) -------------------------------------------------------------- */

static double time_us(CUfunction f, void *params, unsigned grid, unsigned block, unsigned smem,
                      int reps)
{
    return gpu_time_us(&g, f, params, grid, 1, block, smem, reps);
}

/* Times of the three kernels at full size, T = 512 for prefill, with the bytes and FLOPs the
 * planner charges them (plan/sched.c), as # lines. */
static void report_speed(const struct shape *sh, uint32_t T)
{
    struct fix f;
    fix_init(&f, sh, T);
    struct dev_seq s;
    seq_put(&f, &s, f.win0, f.state0);
    CUdeviceptr qkv = dput(f.qkv, (size_t)T * f.cd * 2), u = dalloc((size_t)T * f.cd * 2);
    CUdeviceptr z = dput(f.z, (size_t)T * f.vd * 2), out = dalloc((size_t)T * f.vd * 2);
    CUdeviceptr b = dput(f.b, (size_t)T * f.d.nv * 2), a = dput(f.a, (size_t)T * f.d.nv * 2);
    struct k_gdn_conv_params pc = {
        .qkv = qkv, .conv_w = f.d_conv_w, .window = s.win, .out = u, .step = d_step, .d = f.d};
    struct k_gdn_step_params ps = {.u = u,
                                   .z = z,
                                   .b = b,
                                   .a = a,
                                   .a_log = f.d_a_log,
                                   .dt_bias = f.d_dt_bias,
                                   .norm_w = f.d_norm_w,
                                   .state = s.state,
                                   .out = out,
                                   .step = d_step,
                                   .d = f.d};
    pc.d.T_max = T, ps.d.T_max = 1;
    set_step(T, 0);
    double tc = time_us(f_conv, &pc, K_GDN_CONV_GRID(f.cd, T), 128, 0, 10);
    set_step(1, 0);
    double ts = time_us(f_step, &ps, f.d.nv, K_GDN_STEP_THREADS, 0, 50);
    double st = 4.0 * state_n(&f);
    printf("# speed %s: k_gdn_conv T=%u %.1f us (%.0f GB/s), k_gdn_step %.2f us (%.0f GB/s of state "
           "read + written)\n",
           sh->name, T, tc, 4.0 * T * f.cd / tc / 1e3, ts, 2 * st / ts / 1e3);
    seq_free(&s), dfree(qkv), dfree(u), dfree(z), dfree(out), dfree(b), dfree(a);
    fix_free(&f);
}

/* The chunked rule on a 2-d grid: each launch continues from the state the last one left
 * (non-zero from the start). */
static double time_chunk_us(CUfunction f, void *params, unsigned gx, unsigned gy, unsigned block,
                            unsigned smem, int reps)
{
    return gpu_time_us(&g, f, params, gx, gy, block, smem, reps);
}

/* The chunked rule at full size over one chunk of T tokens from a non-zero state: k_gdn_chunk
 * + k_gdn_gnorm (what the planner runs) and k_gdn_chunk_fma, as time and as TFLOP/s of the
 * planner's count (plan/sched.c: the useful FLOPs; the tensor cores run about 3x that, the
 * split operands). */
static void report_chunk_speed(const struct shape *sh, uint32_t T)
{
    struct fix f;
    fix_init(&f, sh, T);
    struct dev_seq s;
    seq_put(&f, &s, f.win0, f.state0);
    CUdeviceptr u = dput(f.qkv, (size_t)T * f.cd * 2); /* random bf16 rows as post-conv input */
    CUdeviceptr z = dput(f.z, (size_t)T * f.vd * 2), out = dalloc((size_t)T * f.vd * 2);
    CUdeviceptr b = dput(f.b, (size_t)T * f.d.nv * 2), a = dput(f.a, (size_t)T * f.d.nv * 2);
    struct k_gdn_chunk_params pk = {.u = u,
                                    .z = z,
                                    .b = b,
                                    .a = a,
                                    .a_log = f.d_a_log,
                                    .dt_bias = f.d_dt_bias,
                                    .norm_w = f.d_norm_w,
                                    .state = s.state,
                                    .out = out,
                                    .step = d_step,
                                    .d = f.d};
    pk.d.T_max = T;
    set_step(T, 0);
    unsigned sm_tc = K_GDN_CHUNK_TC_SMEM(sh->dk),
             sm_fma = chunk_smem(sh->dk, sh->dv < DVT_MAX ? sh->dv : DVT_MAX);
    unsigned rows = K_GDN_GNORM_THREADS / 32, reps = T > 512 ? 5 : 20;
    CU(&g,
       cuFuncSetAttribute(f_chunk, CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES, (int)sm_tc));
    CU(&g, cuFuncSetAttribute(f_fma, CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES, (int)sm_fma));
    double tk = time_chunk_us(f_chunk, &pk, f.d.nv, f.d.dv / K_GDN_CHUNK_TC_DVT,
                           K_GDN_CHUNK_TC_THREADS, sm_tc, reps);
    double tn =
        time_chunk_us(f_gnorm, &pk, (T * f.d.nv + rows - 1) / rows, 1, K_GDN_GNORM_THREADS, 0, reps);
    double tf = time_chunk_us(f_fma, &pk, f.d.nv, 1, K_GDN_THREADS, sm_fma, T > 512 ? 2 : 5);
    if (split_takes(&f.d)) { /* the split form; k_gdn_prep's records stay valid across reps */
        uint64_t wsb = K_GDN_WS_BYTES(f.d.nv, T);
        unsigned sp = K_GDN_PREP_SMEM(sh->dk), ss = K_GDN_SEQ_SMEM(sh->dk);
        pk.ws = dalloc(wsb);
        CU(&g, cuFuncSetAttribute(f_prep, CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES, (int)sp));
        CU(&g, cuFuncSetAttribute(f_seq, CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES, (int)ss));
        double tp = time_chunk_us(f_prep, &pk, f.d.nv, (T + C_CHUNK - 1) / C_CHUNK,
                                  K_GDN_CHUNK_TC_THREADS, sp, reps);
        double tq = time_chunk_us(f_seq, &pk, f.d.nv, f.d.dv / K_GDN_CHUNK_TC_DVT,
                                  K_GDN_CHUNK_TC_THREADS, ss, reps);
        printf("# speed %s T=%u from a cached state: k_gdn_prep %.1f us + k_gdn_seq %.1f us = "
               "%.1f us against k_gdn_chunk %.1f us: %.2fx\n",
               sh->name, T, tp, tq, tp + tq, tk, tk / (tp + tq));
        dfree(pk.ws);
        pk.ws = 0;
    }
    double C = C_CHUNK, dk = sh->dk, dv = sh->dv;
    double flops = f.d.nv * ceil(T / C) * (2 * C * C * dk * 2 + 2 * C * dk * dv * 4);
    printf(
        "# speed %s T=%u from a cached state: k_gdn_chunk %.1f us (%.2f TFLOP/s planner count) + "
        "k_gdn_gnorm %.1f us (%.0f GB/s) = %.1f us; k_gdn_chunk_fma (norm fused) %.1f us "
        "(%.2f TFLOP/s): %.1fx\n",
        sh->name, T, tk, flops / tk / 1e6, tn, 6.0 * T * f.vd / tn / 1e3, tk + tn, tf,
        flops / tf / 1e6, tf / (tk + tn));
    seq_free(&s), dfree(u), dfree(z), dfree(out), dfree(b), dfree(a);
    fix_free(&f);
}

/* ---- main --------------------------------------------------------------------------------------
 */

int main(void)
{
    if (gpu_open(&g))
        return test_skip("no CUDA device");
    CUmodule m = gpu_module(&g);
    CU(&g, cuModuleGetFunction(&f_conv, m, "k_gdn_conv"));
    CU(&g, cuModuleGetFunction(&f_step, m, "k_gdn_step"));
    CU(&g, cuModuleGetFunction(&f_chunk, m, "k_gdn_chunk"));
    CU(&g, cuModuleGetFunction(&f_fma, m, "k_gdn_chunk_fma"));
    CU(&g, cuModuleGetFunction(&f_gnorm, m, "k_gdn_gnorm"));
    CU(&g, cuModuleGetFunction(&f_prep, m, "k_gdn_prep"));
    CU(&g, cuModuleGetFunction(&f_seq, m, "k_gdn_seq"));
    CU(&g, cuDeviceGetAttribute(&smem_optin, CU_DEVICE_ATTRIBUTE_MAX_SHARED_MEMORY_PER_BLOCK_OPTIN,
                                g.dev));
    d_step = dalloc(sizeof(struct k_step));

    unsigned full = chunk_smem(128, 128), tc = K_GDN_CHUNK_TC_SMEM(128);
    CHECK((int)full <= smem_optin && (int)tc <= smem_optin,
          "at dk = dv = 128 k_gdn_chunk takes %u bytes of shared memory, k_gdn_chunk_fma %u (one "
          "value tile); the device allows %d",
          tc, full, smem_optin);

    static const struct shape shapes[] = {
        {"full", 16, 32, 128, 128, 4},
        {"tiny-a", 2, 4, 32, 32, 4},
        {"odd", 3, 6, 20, 28, 3},
    };
    static const uint32_t Ts[] = {1, 5, 63, 64, 65, 130, 300, 700}; /* 700: k_gdn_conv's long walks */
    for (size_t si = 0; si < sizeof shapes / sizeof shapes[0]; si++) {
        const struct shape *sh = &shapes[si];
        struct fix f;
        fix_init(&f, sh, 710);
        uint32_t dvt = sh->dv < DVT_MAX ? sh->dv : DVT_MAX;
        int tc_ok = tc_takes(&f.d);
        for (size_t ti = 0; ti < sizeof Ts / sizeof Ts[0]; ti++)
            for (int cached = 0; cached < 2; cached++) {
                if (tc_ok)
                    test_prefill(&f, Ts[ti], cached, 0, NULL);
                if (split_takes(&f.d))
                    test_prefill(&f, Ts[ti], cached, SPLIT, "");
                test_prefill(&f, Ts[ti], cached, dvt, tc_ok ? "" : NULL);
            }
        /* narrower shared memory: the value columns run as several tiles, the last one short */
        test_prefill(&f, 130, 1, sh->dv > 64 ? 64 : 12, ", value tiles of a smaller smem");
        if (tc_ok)
            test_same_bits(&f, 300);
        test_chunked_cpu(&f, si == 0 ? 65 : 130);
        test_decode(&f, 70, 6, 1);
        test_decode(&f, 2, 3, 0);
        test_step_ba(&f, si == 0 ? 2048 : 72);
        fix_free(&f);
    }
    report_speed(&shapes[0], 128);
    report_speed(&shapes[0], 512);
    report_speed(&shapes[0], 2048);
    report_chunk_speed(&shapes[0], 128);
    report_chunk_speed(&shapes[0], 2048);
    dfree(d_step);
    CU(&g, cuModuleUnload(m));
    gpu_close(&g);
    return test_done();
}
