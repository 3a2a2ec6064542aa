/* test_gpu_moe.c — the MoE kernels (kern/moe.cu, kern/moe_prefill.cu) against the CPU
 * reference (test/ref/kref_moe.c).
 *
 * Shapes: full (H 2048, E 256, k 8, I 512, S 512) in bf16 and INT4 g128, tiny (H 128, E 8,
 * k 2, I 64, S 64) in bf16 and INT4 g32 and without a shared expert, odd (H 80, E 5, k 3,
 * I 36, S 24) in bf16 (rows that are not a multiple of 8: the element-load fallbacks). Per
 * shape the reference runs the whole block once over the tokens the chunks use, keeping its
 * intermediates; decode uses token 0, prefill chunks of T = 1, 5, 64, 300 use the first
 * n_tokens < T tokens (all of T = 1). The prefill expert GEMMs are checked in both builds:
 * the CUDA-core one (_simt) on every shape, then the tensor-core one where the shape takes it
 * (odd's down GEMM stays on CUDA cores), then on INT4 group-128 shapes the few-token one
 * (k_moe_few_*_g128), and on INT4 shapes whose groups take wgmma or mma.sync the narrow up
 * kernel (k_moe_gemm_up_i4_narrow) with the tensor-core down one. At full size with INT4 g128,
 * T = 4096, 1341, 256 and 128 tokens routed at random check sampled outputs of these builds
 * and time them (test_timing): the few-token down GEMM must win where the planner picks it
 * (T <= K_MOE_FEW_MAXT), the narrow up kernel at 128 tokens (and lose from 4
 * K_MOE_TC_NARROW_MAXT on). MOE_SHAPE=name runs one shape, MOE_TIMING=T only the timing at T
 * tokens (quick timing runs).
 *
 * Inputs are fresh per shape: expert weights uniform in +-0.06 (std 0.035), bf16 or packed to
 * K_LAYOUT_I4_ROWS by the CPU packer (the reference then uses the dequantized values). The
 * router's top-k must not hinge on rounding: h is drawn from multiples of 1/64 in [-1, 1] and
 * the router and shared-gate weights from multiples of 1/256 in [-1/16, 1/16] (never zero), so
 * every product is exact and every partial sum of a logit stays below 2^24 units of 2^-14:
 * the logits are exact in fp32 in any summation order, the device and the CPU see the same
 * bf16 logits, and the selection (ties to the lower id) is the same by construction.
 *
 * Every output is poisoned (0xFF bytes; the align outputs 0xA5, since 0xFFFFFFFF is the
 * sentinel) before its launch; a check compares exactly the elements the kernel must write
 * and requires the poison everywhere else. Tolerances (|d| <= rtol * |want| + atol * rms):
 *   one op fed the device's own inputs: rtol 1/128, atol 1/1024 (accumulation order only);
 *   a chain against the reference's intermediates: rtol 1/64, atol 1/64 (a bf16 rounding
 *   inside may land on the other side: an ulp there moves the result by about an ulp of
 *   the term sizes, which the rms-scaled atol covers where terms cancel);
 *   the bf16 block against the fp32 block: rtol 1/16, atol 1/16;
 *   router weights rtol 1e-5, atol 1e-7; ids exact; align outputs exact. */
#include <math.h>
#include <string.h>

#include "../kern/moe.h"
#include "../kern/quant.h"
#include "../kern/step.h"
#include "gpu.h"
#include "ref/kref_basic.h"
#include "ref/kref_moe.h"

#define T_ALL        300
#define POISON       0xFF
#define POISON_ALIGN 0xA5
#define CDIV(a, b)   (((a) + (b)-1) / (b))

struct shape {
    const char *name;
    uint32_t H, E, k, I, S, group; /* group 0: bf16 */
};

static const struct shape shapes[] = {
    {"full-bf16", 2048, 256, 8, 512, 512, 0}, {"full-i4g128", 2048, 256, 8, 512, 512, 128},
    {"i4g128-I1024", 1024, 64, 4, 1024, 512, 128}, /* the g128 pair over two rounds of groups */
    {"i4g64", 256, 16, 4, 128, 128, 64}, /* sm_90a: the wgmma build with a scale per stage */
    {"tiny-bf16", 128, 8, 2, 64, 64, 0},      {"tiny-i4g32", 128, 8, 2, 64, 64, 32},
    {"tiny-noshared", 128, 8, 2, 64, 0, 0},   {"odd-bf16", 80, 5, 3, 36, 24, 0},
    {"wide-router", 128, 320, 4, 64, 64, 0}, /* E > 256: k_router's block form */
};

struct kerns {
    CUfunction router, up, down, align, scatter, combine;
    int g128; /* decode runs k_moe_up_g128 / k_moe_down_g128 (the planner's choice: K_MOE_G128_OK) */
    CUfunction fused;      /* k_moe_fused_g128 where K_MOE_FUSED_OK, else 0 */
    /* [down][build]: CUDA-core (_simt), tensor-core, few-token (or 0), and the narrow up kernel
     * with the tensor-core down one (or 0) */
    CUfunction gemm[2][4];
};

static int smem_optin; /* the device's opt-in shared memory per block */

/* one shape: host values, device weights, the reference over the chunks' live tokens */
struct model {
    const struct shape *s;
    struct k_moe_dims d;
    uint32_t wmax;
    float *h, *router, *sgw;          /* (T_ALL, H), (E, H), (H) */
    float *gu, *dn, *shg, *shu, *shd; /* the values the kernels compute with */
    CUdeviceptr h_d, router_d, sgw_d, gu_d, dn_d, shg_d, shu_d, shd_d;
    uint64_t gu_so, dn_so, shg_so, shu_so, shd_so;
    float *ref_out; /* (T_ALL, H) */
    struct kref_moe_trace tr;
};

/* ---- device helpers ---------------------------------------------------------------------- */

static CUdeviceptr dalloc(struct gpu *g, size_t bytes, int poison)
{
    CUdeviceptr p;
    CU(g, cuMemAlloc(&p, bytes ? bytes : 4));
    CU(g, cuMemsetD8(p, (unsigned char)poison, bytes ? bytes : 4));
    return p;
}

static void *dget(struct gpu *g, CUdeviceptr p, size_t bytes)
{
    void *h = malloc(bytes ? bytes : 4);
    CU(g, cuMemcpyDtoH(h, p, bytes));
    return h;
}

static void launch(struct gpu *g, CUfunction f, void *params, unsigned gx, unsigned gy,
                   unsigned block)
{
    void *args[] = {params};
    CU(g, cuLaunchKernel(f, gx, gy, 1, block, 1, 1, 0, NULL, args, NULL));
    CU(g, cuCtxSynchronize());
}

static void launch_smem(struct gpu *g, CUfunction f, void *params, unsigned gx, unsigned block,
                        unsigned smem)
{
    void *args[] = {params};
    CU(g, cuFuncSetAttribute(f, CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES, (int)smem));
    CU(g, cuLaunchKernel(f, gx, 1, 1, block, 1, 1, smem, NULL, args, NULL));
    CU(g, cuCtxSynchronize());
}

static CUdeviceptr step_new(struct gpu *g, uint32_t n_tokens, uint32_t done)
{
    struct k_step s;
    memset(&s, 0, sizeof s);
    s.n_tokens = n_tokens, s.done = done;
    CUdeviceptr d = dalloc(g, sizeof s, 0);
    CU(g, cuMemcpyHtoD(d, &s, sizeof s));
    return d;
}

static CUdeviceptr upload_bf16(struct gpu *g, const float *x, size_t n)
{
    uint16_t *b = malloc(2 * n);
    for (size_t i = 0; i < n; i++)
        b[i] = kref_f2bf(x[i]);
    CUdeviceptr d = dalloc(g, 2 * n, 0);
    CU(g, cuMemcpyHtoD(d, b, 2 * n));
    free(b);
    return d;
}

/* A (rows, K) matrix as the kernels read it: bf16, or INT4 nibbles then scales (the host
 * values become the dequantized ones). */
static CUdeviceptr upload_matrix(struct gpu *g, float *w, uint64_t rows, uint32_t K, uint32_t group,
                                 uint64_t *scales_offset)
{
    *scales_offset = 0;
    if (!group)
        return upload_bf16(g, w, rows * K);
    uint64_t nib = k_i4_nibble_bytes(1, rows, K), sc = k_i4_scale_bytes(1, rows, K, group);
    uint8_t *buf = malloc(nib + sc);
    kref_moe_i4_pack(w, rows, K, group, buf, (uint16_t *)(void *)(buf + nib), w);
    CUdeviceptr d = dalloc(g, nib + sc, 0);
    CU(g, cuMemcpyHtoD(d, buf, nib + sc));
    free(buf);
    *scales_offset = nib;
    return d;
}

/* ---- comparisons ---------------------------------------------------------------------------- */

enum { BF16, F32, U32 };

static float got_value(int kind, const void *got, size_t i, uint32_t *bits)
{
    if (kind == BF16) {
        *bits = ((const uint16_t *)got)[i];
        return kref_bf2f((uint16_t)*bits);
    }
    memcpy(bits, (const uint8_t *)got + 4 * i, 4);
    if (kind == U32)
        return (float)*bits;
    float f;
    memcpy(&f, bits, 4);
    return f;
}

/* Elements with mask[i] must be within rtol * |want| + atol * rms(want over the mask) (U32:
 * equal); the others must still hold the poison byte. Prints the first mismatches; note gets
 * the worst error and how many elements differ at all. */
static int compare(const char *what, int kind, const void *got, const float *want,
                   const uint8_t *mask, size_t n, int poison, double rtol, double atol, char *note)
{
    double ss = 0, worst = 0, worst_ratio = 0;
    size_t nm = 0, bad = 0, inexact = 0;
    for (size_t i = 0; i < n; i++)
        if (mask[i])
            ss += (double)want[i] * want[i], nm++;
    double abs_tol = atol * sqrt(nm ? ss / nm : 0);
    uint32_t pbits = kind == BF16 ? 0x0101u * (uint8_t)poison : 0x01010101u * (uint8_t)poison;
    for (size_t i = 0; i < n; i++) {
        uint32_t bits;
        float v = got_value(kind, got, i, &bits);
        int ok;
        double d = 0;
        if (mask[i]) {
            d = fabs((double)v - want[i]);
            double tol = rtol * fabs(want[i]) + abs_tol;
            ok = d <= tol; /* false for NaN */
            inexact += d != 0 || v != v;
            worst = d > worst ? d : worst;
            worst_ratio = tol > 0 && d / tol > worst_ratio ? d / tol : worst_ratio;
        } else {
            ok = bits == pbits;
        }
        if (!ok && bad++ < 4)
            printf("#   %s[%zu]: got %.7g (0x%x), want %s%.7g\n", what, i, (double)v, bits,
                   mask[i] ? "" : "untouched, not ", mask[i] ? want[i] : (double)v);
    }
    snprintf(note, 160, "worst |d| %.3g (%.2f of tol), %zu of %zu differ, %zu bad", worst,
             worst_ratio, inexact, nm, bad);
    return bad == 0;
}

/* live tokens of a chunk of T: fewer than T but for T = 1 */
static uint32_t live_of(uint32_t T)
{
    return T == 1 ? 1 : T - 1 - T / 8;
}

/* ---- the model of one shape --------------------------------------------------------------- */

static float uni(unsigned long long *r)
{
    return (float)(test_rand(r) >> 40) * 0x1p-23f - 1.0f;
}

/* bf16 values uniform in [-half, half) */
static float *rand_bf16(size_t n, float half, unsigned long long *r)
{
    float *x = malloc(sizeof(float) * (n ? n : 1));
    for (size_t i = 0; i < n; i++)
        x[i] = kref_round(half * uni(r));
    return x;
}

/* nonzero multiples of unit in [-m * unit, m * unit] */
static float *rand_grid(size_t n, int m, float unit, unsigned long long *r)
{
    float *x = malloc(sizeof(float) * n);
    for (size_t i = 0; i < n; i++) {
        int v = (int)(test_rand(r) % (uint64_t)(2 * m)) - m;
        x[i] = (float)(v ? v : m) * unit;
    }
    return x;
}

static void model_init(struct gpu *g, struct model *M, const struct shape *s,
                       unsigned long long seed)
{
    const uint32_t H = s->H, E = s->E, k = s->k, I = s->I, S = s->S;
    memset(M, 0, sizeof *M);
    M->s = s;
    M->d = (struct k_moe_dims){.H = H, .E = E, .k = k, .I = I, .S = S, .group = s->group};
    M->wmax = I > S ? I : S;
    unsigned long long r = seed;
    M->h = rand_grid((size_t)T_ALL * H, 64, 1.0f / 64, &r);
    M->router = rand_grid((size_t)E * H, 16, 1.0f / 256, &r);
    M->sgw = rand_grid(H, 16, 1.0f / 256, &r);
    M->gu = rand_bf16((size_t)E * 2 * I * H, 0.06f, &r);
    M->dn = rand_bf16((size_t)E * H * I, 0.06f, &r);
    M->shg = rand_bf16((size_t)S * H, 0.06f, &r);
    M->shu = rand_bf16((size_t)S * H, 0.06f, &r);
    M->shd = rand_bf16((size_t)H * S, 0.06f, &r);
    M->h_d = upload_bf16(g, M->h, (size_t)T_ALL * H);
    M->router_d = upload_bf16(g, M->router, (size_t)E * H);
    M->sgw_d = upload_bf16(g, M->sgw, H);
    M->gu_d = upload_matrix(g, M->gu, (uint64_t)E * 2 * I, H, s->group, &M->gu_so);
    M->dn_d = upload_matrix(g, M->dn, (uint64_t)E * H, I, s->group, &M->dn_so);
    if (S) {
        M->shg_d = upload_matrix(g, M->shg, S, H, s->group, &M->shg_so);
        M->shu_d = upload_matrix(g, M->shu, S, H, s->group, &M->shu_so);
        M->shd_d = upload_matrix(g, M->shd, H, S, s->group, &M->shd_so);
    }
    /* the reference over every token a chunk uses, with its intermediates */
    struct kref_moe_weights w = {M->router, M->gu, M->dn, M->shg, M->shu, M->shd, M->sgw};
    M->ref_out = malloc(sizeof(float) * T_ALL * H);
    M->tr.ids = malloc(sizeof(int32_t) * T_ALL * k);
    M->tr.weights = malloc(sizeof(float) * T_ALL * k);
    M->tr.gate = malloc(sizeof(float) * T_ALL);
    M->tr.act = malloc(sizeof(float) * T_ALL * (k + 1) * M->wmax);
    M->tr.y = malloc(sizeof(float) * T_ALL * k * H);
    M->tr.shared = calloc((size_t)T_ALL * H, sizeof(float));
    kref_moe_block(&w, &M->d, M->h, live_of(T_ALL), 0, M->ref_out, &M->tr);
}

static void model_free(struct gpu *g, struct model *M)
{
    CUdeviceptr d[] = {M->h_d,  M->router_d, M->sgw_d, M->gu_d,
                       M->dn_d, M->shg_d,    M->shu_d, M->shd_d};
    for (size_t i = 0; i < sizeof d / sizeof d[0]; i++)
        if (d[i])
            CU(g, cuMemFree(d[i]));
    free(M->h), free(M->router), free(M->sgw), free(M->gu), free(M->dn);
    free(M->shg), free(M->shu), free(M->shd), free(M->ref_out);
    free(M->tr.ids), free(M->tr.weights), free(M->tr.gate), free(M->tr.act), free(M->tr.y);
    free(M->tr.shared);
}

/* ---- checks -----------------------------------------------------------------------------------
 */

#define R_OP    (1.0 / 128)
#define A_OP    (1.0 / 1024)
#define R_CHAIN (1.0 / 64)
#define A_CHAIN (1.0 / 64)

static const uint32_t Ts[] = {1, 5, 64, T_ALL};

/* The packer puts element j of a word into nibble slot K_I4_SLOTS[j]: q - 8 = -7..0 for
 * elements 0..7 gives the nibbles [1 3 5 7 2 4 6 8] from the low one up. */
static void check_packer(void)
{
    float w[32], deq[32];
    uint8_t nib[16];
    uint16_t sc;
    for (int j = 0; j < 32; j++)
        w[j] = 0.25f * (float)(j % 15 - 7);
    kref_moe_i4_pack(w, 1, 32, 32, nib, &sc, deq);
    uint32_t word =
        nib[0] | (uint32_t)nib[1] << 8 | (uint32_t)nib[2] << 16 | (uint32_t)nib[3] << 24;
    int ok = word == 0x86427531u && sc == 0x3E80u && !memcmp(w, deq, sizeof w);
    CHECK(ok, "INT4 packer: word 0 = 0x%08x (want 0x86427531), scale 0x%04x (0x3E80), exact values",
          word, sc);
}

static struct k_router_params router_params(const struct model *M, CUdeviceptr ids, CUdeviceptr wts,
                                            CUdeviceptr sg, CUdeviceptr step, uint32_t T)
{
    struct k_router_params p = {.h = M->h_d,
                                .w = M->router_d,
                                .w_shared = M->s->S ? M->sgw_d : 0,
                                .ids = ids,
                                .weights = wts,
                                .shared_gate = sg,
                                .step = step,
                                .d = M->d};
    p.d.T_max = T;
    return p;
}

/* ids exact, weights and gate to fp32 rounding, rows t >= n untouched */
static int check_router(struct gpu *g, const struct model *M, CUdeviceptr ids_d, CUdeviceptr wts_d,
                        CUdeviceptr sg_d, uint32_t T, uint32_t n, char *note)
{
    const uint32_t k = M->s->k;
    void *ids = dget(g, ids_d, 4ull * T * k), *wts = dget(g, wts_d, 4ull * T * k),
         *sg = dget(g, sg_d, 4ull * T);
    float *want = malloc(sizeof(float) * T * k);
    uint8_t *mask = malloc((size_t)T * k);
    for (uint32_t i = 0; i < T * k; i++)
        mask[i] = i < n * k, want[i] = (float)(uint32_t)M->tr.ids[i];
    char n1[160], n3[160];
    int ok = compare("ids", U32, ids, want, mask, (size_t)T * k, POISON, 0, 0, n1);
    ok &=
        compare("weights", F32, wts, M->tr.weights, mask, (size_t)T * k, POISON, 1e-5, 1e-7, note);
    for (uint32_t t = 0; t < T; t++)
        mask[t] = t < n;
    ok &= compare("shared_gate", F32, sg, M->tr.gate, mask, T, POISON, 1e-5, 1e-7, n3);
    free(ids), free(wts), free(sg), free(want), free(mask);
    return ok;
}

/* The path plans take: k_router reading the (T, E + 1) fp32 logits a GEMV made (the shared
 * gate's in the last column), here computed on the host (exact in fp32 by the test's design);
 * the outputs are poisoned first and must come out as from the in-kernel dot products. */
static CUdeviceptr upload_logits(struct gpu *g, const struct model *M, uint32_t T)
{
    const uint32_t E = M->s->E, H = M->s->H;
    float *lg = calloc((size_t)T * (E + 1), sizeof(float));
    for (uint32_t t = 0; t < T; t++)
        for (uint32_t e = 0; e <= E; e++) {
            const float *w = e < E ? M->router + (size_t)e * H : M->sgw;
            double acc = 0;
            for (uint32_t j = 0; e < E || M->s->S ? j < H : 0; j++)
                acc += (double)M->h[(size_t)t * H + j] * w[j];
            lg[(size_t)t * (E + 1) + e] = (float)acc;
        }
    CUdeviceptr lg_d = dalloc(g, 4ull * T * (E + 1), 0);
    CU(g, cuMemcpyHtoD(lg_d, lg, 4ull * T * (E + 1)));
    free(lg);
    return lg_d;
}

static int check_router_logits(struct gpu *g, const struct kerns *K, const struct model *M,
                               CUdeviceptr ids, CUdeviceptr wts, CUdeviceptr sg, CUdeviceptr step,
                               uint32_t T, uint32_t n, char *note)
{
    const uint32_t k = M->s->k;
    CUdeviceptr lg_d = upload_logits(g, M, T);
    CU(g, cuMemsetD8(ids, (unsigned char)POISON, 4ull * T * k));
    CU(g, cuMemsetD8(wts, (unsigned char)POISON, 4ull * T * k));
    CU(g, cuMemsetD8(sg, (unsigned char)POISON, 4ull * T));
    struct k_router_params rp = router_params(M, ids, wts, sg, step, T);
    rp.logits = lg_d;
    launch(g, K->router, &rp, T, 1, K_ROUTER_THREADS);
    int ok = check_router(g, M, ids, wts, sg, T, n, note);
    CU(g, cuMemFree(lg_d));
    return ok;
}

/* ---- decode ------------------------------------------------------------------------------------
 */

struct dec_bufs {
    CUdeviceptr ids, wts, sg, act, out, step;
};

static struct dec_bufs dec_alloc(struct gpu *g, const struct model *M, uint32_t done)
{
    const uint32_t k = M->s->k;
    return (struct dec_bufs){dalloc(g, 4ull * k, POISON),
                             dalloc(g, 4ull * k, POISON),
                             dalloc(g, 4, POISON),
                             dalloc(g, 2ull * (k + 1) * M->wmax, POISON),
                             dalloc(g, 2ull * M->s->H, POISON),
                             step_new(g, 1, done)};
}

static void dec_free(struct gpu *g, struct dec_bufs *b)
{
    CUdeviceptr d[] = {b->ids, b->wts, b->sg, b->act, b->out, b->step};
    for (size_t i = 0; i < 6; i++)
        CU(g, cuMemFree(d[i]));
}

static struct k_moe_vec_params vec_params(const struct model *M, const struct dec_bufs *b)
{
    struct k_moe_vec_params p = {.h = M->h_d,
                                 .gate_up = M->gu_d,
                                 .down = M->dn_d,
                                 .sh_gate = M->shg_d,
                                 .sh_up = M->shu_d,
                                 .sh_down = M->shd_d,
                                 .gate_up_scales = M->gu_so,
                                 .down_scales = M->dn_so,
                                 .sh_gate_scales = M->shg_so,
                                 .sh_up_scales = M->shu_so,
                                 .sh_down_scales = M->shd_so,
                                 .ids = b->ids,
                                 .weights = b->wts,
                                 .shared_gate = b->sg,
                                 .act = b->act,
                                 .out = b->out,
                                 .step = b->step,
                                 .d = M->d};
    p.d.T_max = 1;
    return p;
}

/* mean time of reps launches, in microseconds */
/* The decode launch plan/sched.c makes: up (down = 0) or down, kernel, grid and block. */
struct dec_launch {
    CUfunction f;
    unsigned gx, gy, block;
};

static struct dec_launch dec_of(const struct kerns *K, const struct model *M, int down)
{
    const struct shape *s = M->s;
    unsigned rows = K->g128 ? (down ? K_MOE_G128_DOWN_ROWS : K_MOE_G128_UP_ROWS) : K_MOE_ROWS;
    struct dec_launch l = {down ? K->down : K->up, down ? CDIV(s->H, rows) : s->k + (s->S ? 1 : 0),
                           down ? 1 : CDIV(M->wmax, rows), K->g128 ? K_MOE_G128_THREADS : K_MOE_THREADS};
    return l;
}

static double time_us(struct gpu *g, CUfunction f, void *params, unsigned gx, unsigned gy,
                      unsigned block, unsigned smem)
{
    return gpu_time_us(g, f, params, gx, gy, block, smem, 20);
}

/* bytes of one (rows, K) matrix as stored */
static double mat_bytes(const struct shape *s, double rows, double K)
{
    return s->group ? rows * K * (0.5 + 2.0 / s->group) : rows * K * 2;
}

/* k_moe_fused_g128 against the pair it replaces (kern/moe.h: the same arithmetic, so the same
 * bits): q the pair routing itself (its out: out), q3 with both norms folded in (its out o3,
 * x3 and next norm nx3, from x = xh). Also: the counters back at zero after every launch, a
 * step marked done writing nothing, and one CTA per SM (the dynamic shared memory at the
 * device's limit), where the down CTAs wait while up CTAs are still to start. */
static void fused_checks(struct gpu *g, const struct kerns *K, const struct model *M,
                         const struct dec_bufs *b, const struct k_moe_vec_params *q,
                         const struct k_moe_vec_params *q3, const uint16_t *out, const uint16_t *o3,
                         const uint16_t *x3, const uint16_t *nx3, const uint16_t *xh)
{
    const struct shape *s = M->s;
    const uint32_t H = s->H, na = (s->k + 1) * M->wmax;
    const unsigned grid = K_MOE_FUSED_UP(q->d) + K_MOE_FUSED_DOWN(q->d),
                   smem = K_MOE_FUSED_SMEM(q->d);
    CUdeviceptr cnt = dalloc(g, 4 * K_MOE_FUSED_COUNTERS, 0);
    uint32_t c[K_MOE_FUSED_COUNTERS];
    int zero = 1;
#define FUSED_ZERO()                                                                               \
    do {                                                                                           \
        CU(g, cuMemcpyDtoH(c, cnt, sizeof c));                                                     \
        for (int i = 0; i < K_MOE_FUSED_COUNTERS; i++)                                             \
            zero &= c[i] == 0;                                                                     \
    } while (0)
    /* routing itself, no norm folded in: twice, the second with one CTA per SM */
    struct k_moe_vec_params f = *q;
    f.fold_count = cnt;
    int same[2] = {0, 0};
    for (int one = 0; one < 2; one++) {
        CU(g, cuMemsetD8(b->act, (unsigned char)POISON, 2ull * na));
        CU(g, cuMemsetD8(b->out, (unsigned char)POISON, 2ull * H));
        launch_smem(g, K->fused, &f, grid, K_MOE_FUSED_THREADS,
                    one ? (unsigned)smem_optin - 4096 : smem);
        uint16_t *o = dget(g, b->out, 2ull * H);
        same[one] = !memcmp(o, out, 2ull * H);
        free(o);
        FUSED_ZERO();
    }
    CHECK(same[0] && same[1] && zero,
          "%s decode k_moe_fused_g128 (%u CTAs): out the same bits as the k_moe_up/down_g128 pair "
          "(%s; with one CTA per SM: %s), counters back at 0 (%s)",
          s->name, grid, same[0] ? "yes" : "no", same[1] ? "yes" : "no", zero ? "yes" : "no");

    /* both norms folded in: out, x and the next norm the pair's bits */
    struct k_moe_vec_params f3 = *q3;
    f3.fold_count = cnt;
    int ok3[2][3] = {{0}};
    for (int one = 0; one < 2; one++) {
        CU(g, cuMemcpyHtoD(f3.h, xh, 2ull * H));
        CU(g, cuMemsetD8(b->act, (unsigned char)POISON, 2ull * na));
        CU(g, cuMemsetD8(b->out, (unsigned char)POISON, 2ull * H));
        CU(g, cuMemsetD8(f3.next_out, (unsigned char)POISON, 2ull * H));
        launch_smem(g, K->fused, &f3, grid, K_MOE_FUSED_THREADS,
                    one ? (unsigned)smem_optin - 4096 : smem);
        uint16_t *o = dget(g, b->out, 2ull * H), *x = dget(g, f3.h, 2ull * H),
                 *n = dget(g, f3.next_out, 2ull * H);
        ok3[one][0] = !memcmp(o, o3, 2ull * H), ok3[one][1] = !memcmp(x, x3, 2ull * H);
        ok3[one][2] = !memcmp(n, nx3, 2ull * H);
        free(o), free(x), free(n);
        FUSED_ZERO();
    }
    CHECK(
        ok3[0][0] && ok3[0][1] && ok3[0][2] && ok3[1][0] && ok3[1][1] && ok3[1][2] && zero,
        "%s decode k_moe_fused_g128 with both norms folded in: out, x and the next norm the pair's "
        "bits (%s %s %s; one CTA per SM: %s %s %s), counters back at 0 (%s)",
        s->name, ok3[0][0] ? "yes" : "no", ok3[0][1] ? "yes" : "no", ok3[0][2] ? "yes" : "no",
        ok3[1][0] ? "yes" : "no", ok3[1][1] ? "yes" : "no", ok3[1][2] ? "yes" : "no",
        zero ? "yes" : "no");

    /* a step marked done: nothing written, x untouched, counters at 0 */
    struct k_moe_vec_params fd = f3;
    fd.step = step_new(g, 1, 1);
    CU(g, cuMemcpyHtoD(fd.h, xh, 2ull * H));
    CU(g, cuMemsetD8(b->act, (unsigned char)POISON, 2ull * na));
    CU(g, cuMemsetD8(b->out, (unsigned char)POISON, 2ull * H));
    launch_smem(g, K->fused, &fd, grid, K_MOE_FUSED_THREADS, smem);
    uint16_t *o = dget(g, b->out, 2ull * H), *x = dget(g, fd.h, 2ull * H),
             *a = dget(g, b->act, 2ull * na);
    int untouched = !memcmp(x, xh, 2ull * H);
    for (uint32_t i = 0; i < H; i++)
        untouched &= o[i] == (uint16_t)(POISON * 0x101);
    for (uint32_t i = 0; i < na; i++)
        untouched &= a[i] == (uint16_t)(POISON * 0x101);
    FUSED_ZERO();
    CHECK(untouched && zero,
          "%s decode k_moe_fused_g128 on a step marked done: act, out and x untouched "
          "(%s), counters at 0 (%s)",
          s->name, untouched ? "yes" : "no", zero ? "yes" : "no");
    free(o), free(x), free(a);
    CU(g, cuMemFree(fd.step));
#undef FUSED_ZERO
    if (H >= 2048) { /* informational, L2-warm: the pair's two launches against the one */
        const struct dec_launch lu = dec_of(K, M, 0), ld = dec_of(K, M, 1);
        CU(g, cuFuncSetAttribute(K->fused, CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES,
                                 (int)smem));
        double tf = time_us(g, K->fused, &f, grid, 1, K_MOE_FUSED_THREADS, smem);
        double tu = time_us(g, lu.f, &f, lu.gx, lu.gy, lu.block, 0);
        double td = time_us(g, ld.f, &f, ld.gx, ld.gy, ld.block, 0);
        printf("# %s decode, L2-warm: k_moe_fused_g128 %.1f us, the pair %.1f + %.1f us\n", s->name,
               tf, tu, td);
    }
    CU(g, cuMemFree(cnt));
}

static void test_decode(struct gpu *g, const struct kerns *K, const struct model *M, float *dec_out)
{
    const struct shape *s = M->s;
    const uint32_t H = s->H, k = s->k, I = s->I, S = s->S, wmax = M->wmax, na = (k + 1) * wmax;
    struct dec_bufs b = dec_alloc(g, M, 0);
    char note[160];
    struct k_router_params rp = router_params(M, b.ids, b.wts, b.sg, b.step, 1);
    launch(g, K->router, &rp, 1, 1, K_ROUTER_THREADS);
    int ok = check_router(g, M, b.ids, b.wts, b.sg, 1, 1, note);
    CHECK(ok, "%s decode k_router: ids exact, weights and gate (%s)", s->name, note);
    ok = check_router_logits(g, K, M, b.ids, b.wts, b.sg, b.step, 1, 1, note);
    CHECK(ok, "%s decode k_router from GEMV logits: ids exact, weights and gate (%s)", s->name, note);

    struct k_moe_vec_params p = vec_params(M, &b);
    const struct dec_launch lu = dec_of(K, M, 0), ld = dec_of(K, M, 1);
    launch(g, lu.f, &p, lu.gx, lu.gy, lu.block);
    uint16_t *act = dget(g, b.act, 2ull * na);
    float *want = calloc(na > H ? na : H, sizeof(float));
    uint8_t *mask = calloc(na > H ? na : H, 1);
    for (uint32_t sl = 0; sl <= k; sl++)
        for (uint32_t i = 0; i < (sl < k ? I : S); i++)
            mask[sl * wmax + i] = 1, want[sl * wmax + i] = M->tr.act[sl * wmax + i];
    ok = compare("act", BF16, act, want, mask, na, POISON, R_CHAIN, A_CHAIN, note);
    CHECK(ok, "%s decode k_moe_up: act of %u slots vs the reference (%s)", s->name, k + (S ? 1 : 0),
          note);

    /* down against the reference fed the device's act, ids, weights and gate */
    launch(g, ld.f, &p, ld.gx, ld.gy, ld.block);
    uint16_t *out = dget(g, b.out, 2ull * H);
    int32_t *ids = dget(g, b.ids, 4ull * k);
    float *wts = dget(g, b.wts, 4ull * k), *sg = dget(g, b.sg, 4);
    float *actf = malloc(sizeof(float) * na), *y = malloc(sizeof(float) * (k + 1) * H);
    for (uint32_t i = 0; i < na; i++)
        actf[i] = kref_bf2f(act[i]);
    for (uint32_t sl = 0; sl < k; sl++)
        kref_moe_down(actf + sl * wmax, M->dn + (uint64_t)ids[sl] * H * I, I, H, wts[sl],
                      y + sl * H);
    if (S)
        kref_moe_down(actf + k * wmax, M->shd, S, H, 1.0f, y + k * H);
    kref_moe_combine(y, k, H, S ? y + k * H : NULL, sg[0], want);
    memset(mask, 1, H);
    ok = compare("out", BF16, out, want, mask, H, POISON, R_OP, A_OP, note);
    CHECK(ok, "%s decode k_moe_down: out vs the reference fed the device's act (%s)", s->name,
          note);
    ok = compare("out", BF16, out, M->ref_out, mask, H, POISON, R_CHAIN, A_CHAIN, note);
    CHECK(ok, "%s decode block (router, up, down) vs the reference block (%s)", s->name, note);

    struct kref_moe_weights w = {M->router, M->gu, M->dn, M->shg, M->shu, M->shd, M->sgw};
    kref_moe_block(&w, &M->d, M->h, 1, 1, want, NULL);
    ok = compare("out", BF16, out, want, mask, H, POISON, 1.0 / 16, 1.0 / 16, note);
    CHECK(ok, "%s decode block vs the fp32 block (%s)", s->name, note);
    for (uint32_t i = 0; i < H; i++)
        dec_out[i] = kref_bf2f(out[i]);

    if (H >= 2048) { /* informational; the same experts every repeat, so L2-warm: an upper bound */
        double tu = time_us(g, lu.f, &p, lu.gx, lu.gy, lu.block, 0);
        double td = time_us(g, ld.f, &p, ld.gx, ld.gy, ld.block, 0);
        double bu = mat_bytes(s, (double)k * 2 * I + 2.0 * S, H),
               bd = mat_bytes(s, (double)H, (double)k * I + S);
        printf(
            "# %s decode, L2-warm: k_moe_up %.1f us (%.0f GB/s), k_moe_down %.1f us (%.0f GB/s)\n",
            s->name, tu, bu / tu / 1e3, td, bd / td / 1e3);
    }
    /* what INT4 plans run: the g128 pair routing from the GEMV's logits, no k_router; the ids,
     * weights and gate buffers poisoned (not read). The same bits as after k_router, which
     * last ran from the same logits (check_router_logits) */
    if (K->g128 && K_MOE_G128_ROUTES(M->d)) {
        struct k_moe_vec_params q = p;
        q.logits = upload_logits(g, M, 1);
        CUdeviceptr d[] = {b.ids, b.wts, b.sg, b.act, b.out};
        size_t n[] = {4ull * k, 4ull * k, 4, 2ull * na, 2ull * H};
        for (size_t i = 0; i < 5; i++)
            CU(g, cuMemsetD8(d[i], (unsigned char)POISON, n[i]));
        launch(g, lu.f, &q, lu.gx, lu.gy, lu.block);
        launch(g, ld.f, &q, ld.gx, ld.gy, ld.block);
        uint16_t *out2 = dget(g, b.out, 2ull * H);
        int same = !memcmp(out2, out, 2ull * H);
        CHECK(same, "%s decode k_moe_up/down_g128 routing from the logits themselves: out the "
                    "same bits as after k_router (%s)", s->name, same ? "yes" : "no");
        free(out2);

        /* and with the post-attention norm folded in: h is the residual x, x_add the mixer
         * output; against the same pair fed the host's norm (one bf16 ulp apart where the sum
         * of squares rounds differently: the chain tolerance), and x updated to bf16(x + add) */
        uint16_t *xh = malloc(2ull * H), *ah = malloc(2ull * H), *wh = malloc(2ull * H),
                 *xr = malloc(2ull * H), *hn = malloc(2ull * H);
        float *yn = malloc(sizeof(float) * H);
        unsigned long long rs = 77;
        for (uint32_t i = 0; i < H; i++) {
            xh[i] = kref_f2bf(2.0f * (float)((test_rand(&rs) >> 40) % 2001) / 1000.0f - 2.0f);
            ah[i] = kref_f2bf((float)((test_rand(&rs) >> 40) % 2001) / 1000.0f - 1.0f);
            wh[i] = kref_f2bf(0.25f * (float)((test_rand(&rs) >> 40) % 2001) / 1000.0f - 0.125f);
        }
        memcpy(xr, xh, 2ull * H);
        kref_rmsnorm_row(xr, ah, wh, yn, H, 1e-6f);
        for (uint32_t i = 0; i < H; i++)
            hn[i] = kref_f2bf(yn[i]);
        CUdeviceptr dhn = dalloc(g, 2ull * H, 0), dx = dalloc(g, 2ull * H, 0), da = dalloc(g, 2ull * H, 0),
                    dw = dalloc(g, 2ull * H, 0);
        CU(g, cuMemcpyHtoD(dhn, hn, 2ull * H));
        CU(g, cuMemcpyHtoD(dx, xh, 2ull * H));
        CU(g, cuMemcpyHtoD(da, ah, 2ull * H));
        CU(g, cuMemcpyHtoD(dw, wh, 2ull * H));
        struct k_moe_vec_params q1 = q, q2 = q;
        q1.h = dhn;
        q2.h = dx, q2.x_add = da, q2.norm_w = dw, q2.norm_eps = 1e-6f;
        launch(g, lu.f, &q1, lu.gx, lu.gy, lu.block);
        launch(g, ld.f, &q1, ld.gx, ld.gy, ld.block);
        uint16_t *o1 = dget(g, b.out, 2ull * H);
        CU(g, cuMemsetD8(b.out, (unsigned char)POISON, 2ull * H));
        CU(g, cuMemsetD8(b.act, (unsigned char)POISON, 2ull * na));
        launch(g, lu.f, &q2, lu.gx, lu.gy, lu.block);
        launch(g, ld.f, &q2, ld.gx, ld.gy, ld.block);
        uint16_t *o2 = dget(g, b.out, 2ull * H), *xg = dget(g, dx, 2ull * H);
        float *o1f = calloc(H, sizeof(float)); /* calloc: every element defined even to the compiler */
        for (uint32_t i = 0; i < H; i++)
            o1f[i] = kref_bf2f(o1[i]);
        memset(mask, 1, H);
        ok = compare("out", BF16, o2, o1f, mask, H, POISON, R_CHAIN, A_CHAIN, note);
        int xok = !memcmp(xg, xr, 2ull * H);
        CHECK(ok && xok, "%s decode k_moe_up/down_g128 with the norm folded in: out vs the pair fed "
                         "the host's norm (%s), x updated to bf16(x + add) bit-exact (%s)",
              s->name, note, xok ? "yes" : "no");

        /* and the next norm folded into the down kernel too (kern/moe.h next_w): x also takes
         * the block's output, the last CTA writes the next norm of it; the ticket is back at
         * zero afterwards, and a second run gives the same bits */
        uint16_t *wn = malloc(2ull * H), *x3 = malloc(2ull * H), *nx[2] = {NULL, NULL}, *x3g = NULL;
        float *yn3 = malloc(sizeof(float) * H);
        for (uint32_t i = 0; i < H; i++)
            wn[i] = kref_f2bf(0.25f * (float)((test_rand(&rs) >> 40) % 2001) / 1000.0f - 0.125f);
        memcpy(x3, xr, 2ull * H);
        kref_rmsnorm_row(x3, o2, wn, yn3, H, 1e-6f);
        CUdeviceptr dwn = dalloc(g, 2ull * H, 0), dnx = dalloc(g, 2ull * H, POISON),
                    dpart = dalloc(g, 4ull * CDIV(H, K_MOE_G128_DOWN_ROWS), POISON), dcnt = dalloc(g, 4, 0);
        CU(g, cuMemcpyHtoD(dwn, wn, 2ull * H));
        struct k_moe_vec_params q3 = q2;
        q3.next_w = dwn, q3.next_out = dnx, q3.fold_part = dpart, q3.fold_count = dcnt;
        uint32_t cnt = 1;
        for (int rep = 0; rep < 2; rep++) {
            CU(g, cuMemcpyHtoD(dx, xh, 2ull * H));
            launch(g, lu.f, &q3, lu.gx, lu.gy, lu.block);
            launch(g, ld.f, &q3, ld.gx, ld.gy, ld.block);
            nx[rep] = dget(g, dnx, 2ull * H);
            CU(g, cuMemcpyDtoH(&cnt, dcnt, 4));
        }
        x3g = dget(g, dx, 2ull * H);
        if (K->fused) {
            uint16_t *o3 = dget(g, b.out, 2ull * H);
            fused_checks(g, K, M, &b, &q, &q3, out, o3, x3g, nx[0], xh);
            free(o3);
        }
        ok = compare("next norm", BF16, nx[0], yn3, mask, H, POISON, R_CHAIN, A_CHAIN, note);
        int x3ok = !memcmp(x3g, x3, 2ull * H), same2 = !memcmp(nx[0], nx[1], 2ull * H);
        CHECK(ok && x3ok && same2 && cnt == 0,
              "%s decode k_moe_down_g128 with the next norm folded in: the norm vs the host's (%s), x "
              "= bf16(bf16(x + add) + out) bit-exact (%s), a second run the same bits (%s), ticket "
              "back at 0 (%u)", s->name, note, x3ok ? "yes" : "no", same2 ? "yes" : "no", cnt);
        free(wn), free(x3), free(nx[0]), free(nx[1]), free(x3g), free(yn3);
        CU(g, cuMemFree(dwn));
        CU(g, cuMemFree(dnx));
        CU(g, cuMemFree(dpart));
        CU(g, cuMemFree(dcnt));
        free(xh), free(ah), free(wh), free(xr), free(hn), free(yn), free(o1), free(o2), free(xg),
            free(o1f);
        CU(g, cuMemFree(dhn));
        CU(g, cuMemFree(dx));
        CU(g, cuMemFree(da));
        CU(g, cuMemFree(dw));
        if (H >= 2048) { /* informational, L2-warm as above */
            double tu = time_us(g, lu.f, &q, lu.gx, lu.gy, lu.block, 0);
            double td = time_us(g, ld.f, &q, ld.gx, ld.gy, ld.block, 0);
            printf("# %s decode routing itself, L2-warm: k_moe_up %.1f us, k_moe_down %.1f us\n",
                   s->name, tu, td);
        }
        CU(g, cuMemFree(q.logits));
    }

    free(act), free(want), free(mask), free(out), free(ids), free(wts), free(sg), free(actf),
        free(y);
    dec_free(g, &b);
}

/* ---- prefill ------------------------------------------------------------------------------------
 */

struct pre_bufs {
    CUdeviceptr ids, wts, sg, counts, sorted, bexp, nblk, act, y, sh, out, step;
};

static struct pre_bufs pre_alloc(struct gpu *g, const struct model *M, uint32_t T, uint32_t mb,
                                 uint32_t done)
{
    const uint64_t k = M->s->k, H = M->s->H;
    return (struct pre_bufs){dalloc(g, 4 * T * k, POISON),
                             dalloc(g, 4 * T * k, POISON),
                             dalloc(g, 4ull * T, POISON),
                             dalloc(g, 4ull * M->s->E, POISON_ALIGN),
                             dalloc(g, 4ull * mb * K_MOE_BM, POISON_ALIGN),
                             dalloc(g, 4ull * mb, POISON_ALIGN),
                             dalloc(g, 4, POISON_ALIGN),
                             dalloc(g, 2ull * mb * K_MOE_BM * M->s->I, POISON),
                             dalloc(g, 2 * T * k * H, POISON),
                             dalloc(g, 2 * T * H, POISON),
                             dalloc(g, 2 * T * H, POISON),
                             step_new(g, live_of(T), done)};
}

static void pre_free(struct gpu *g, struct pre_bufs *b)
{
    CUdeviceptr d[] = {b->ids,  b->wts, b->sg, b->counts, b->sorted, b->bexp,
                       b->nblk, b->act, b->y,  b->sh,     b->out,    b->step};
    for (size_t i = 0; i < sizeof d / sizeof d[0]; i++)
        CU(g, cuMemFree(d[i]));
}

static struct k_moe_gemm_params gemm_params(const struct model *M, const struct pre_bufs *b,
                                            const struct k_moe_dims *d, int down)
{
    return (struct k_moe_gemm_params){.x = down ? b->act : M->h_d,
                                      .w = down ? M->dn_d : M->gu_d,
                                      .scales_offset = down ? M->dn_so : M->gu_so,
                                      .sorted = b->sorted,
                                      .block_expert = b->bexp,
                                      .n_blocks = b->nblk,
                                      .weights = b->wts,
                                      .y = down ? b->y : b->act,
                                      .step = b->step,
                                      .d = *d};
}

/* One build of one expert GEMM as the planner launches it: asked for the tensor-core kernel
 * (tc 1), the few-token one (tc 2) or the narrow up kernel (tc 3; its down GEMM is the
 * tensor-core one), that kernel where the shape takes it (K_MOE_TC_OK or K_MOE_FEW_OK, its
 * shared memory within the device's), else the CUDA-core one (tc 0). */
struct glaunch {
    CUfunction f;
    unsigned gy, block, smem;
    int tc;
    char name[40];
};

static struct glaunch gemm_launch(const struct kerns *K, const struct shape *s, int down, int tc)
{
    const uint32_t i4 = s->group != 0, Kd = down ? s->I : s->H, N = down ? s->H : s->I;
    const struct k_moe_dims d = {.H = s->H, .I = s->I, .group = s->group};
    struct glaunch l;
    if (tc == 2 && K->gemm[down][2] && (int)K_MOE_FEW_SMEM(d, !down) <= smem_optin) {
        l.tc = 2, l.f = K->gemm[down][2], l.block = K_MOE_FEW_THREADS;
        l.gy = CDIV(N, down ? K_MOE_FEW_BN_DOWN : K_MOE_FEW_BN_UP);
        l.smem = K_MOE_FEW_SMEM(d, !down);
        snprintf(l.name, sizeof l.name, "k_moe_few_%s_g128", down ? "down" : "up");
        return l;
    }
    const int narrow = tc == 3 && !down && K->gemm[0][3] && K_MOE_TC_NARROW_OK(Kd, N);
    const unsigned smem = K_MOE_TC_SMEM(i4, !down, Kd, s->group);
    l.tc = tc && K_MOE_TC_OK(i4, Kd, N) && (int)smem <= smem_optin;
    if (l.tc && narrow)
        l.tc = tc;
    l.f = K->gemm[down][l.tc];
    l.gy = CDIV(N, l.tc ? (down ? K_MOE_TC_BN_DOWN : K_MOE_TC_BN_UP) : K_MOE_BN);
    l.block = l.tc ? K_MOE_TC_THREADS : K_MOE_THREADS;
    l.smem = l.tc ? smem : 0;
    snprintf(l.name, sizeof l.name, "k_moe_gemm_%s_%s%s", down ? "down" : "up", i4 ? "i4" : "bf16",
             l.tc == 3 ? "_narrow" : l.tc ? "" : "_simt");
    return l;
}

static void gemm_run(struct gpu *g, const struct glaunch *l, void *params, unsigned gx)
{
    if (l->smem > 48 * 1024)
        CU(g, cuFuncSetAttribute(l->f, CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES,
                                 (int)l->smem));
    void *args[] = {params};
    CU(g, cuLaunchKernel(l->f, gx, l->gy, 1, l->block, 1, 1, l->smem, NULL, args, NULL));
    CU(g, cuCtxSynchronize());
}

static double gemm_time(struct gpu *g, const struct glaunch *l, void *params, unsigned gx)
{
    gemm_run(g, l, params, gx); /* sets the shared-memory attribute */
    return time_us(g, l->f, params, gx, l->gy, l->block, l->smem);
}

/* Every (token, slot) pair of the n live tokens exactly once, in a block of its expert;
 * experts ascending, each with ceil(count / BM) blocks, its pairs before its padding;
 * counts exact; nothing written past n_blocks. */
static int check_align(const struct model *M, uint32_t n, uint32_t mb, const int32_t *ids,
                       const uint32_t *counts, const uint32_t *sorted, const uint32_t *bexp,
                       uint32_t nblk, char *note)
{
    const uint32_t E = M->s->E, np = n * M->s->k;
    uint32_t *cnt = calloc(E, 4), *seen = calloc(np ? np : 1, 4), want_nb = 0, bad = 0;
    for (uint32_t i = 0; i < np; i++)
        cnt[ids[i]]++;
    for (uint32_t e = 0; e < E; e++)
        want_nb += CDIV(cnt[e], K_MOE_BM), bad += counts[e] != cnt[e];
    bad += nblk != want_nb || nblk > mb;
    for (uint32_t blk = 0, e = 0; blk < nblk && blk < mb && !bad; e++) {
        if (e >= E) {
            bad++;
            break;
        }
        for (uint32_t r = 0; r < CDIV(cnt[e], K_MOE_BM) * K_MOE_BM; r++) {
            uint32_t row = blk * K_MOE_BM + r, v = sorted[row];
            bad += bexp[row / K_MOE_BM] != e;
            if (r >= cnt[e])
                bad += v != K_MOE_SENTINEL;
            else if (v >= np || seen[v]++ || (uint32_t)ids[v] != e)
                bad++;
        }
        blk += CDIV(cnt[e], K_MOE_BM);
    }
    for (uint32_t i = 0; i < np; i++)
        bad += seen[i] != 1;
    for (uint32_t r = nblk * K_MOE_BM; r < mb * K_MOE_BM && nblk <= mb; r++)
        bad += sorted[r] != 0x01010101u * POISON_ALIGN;
    for (uint32_t blk = nblk; blk < mb; blk++)
        bad += bexp[blk] != 0x01010101u * POISON_ALIGN;
    snprintf(note, 160, "%u pairs, %u blocks of %u, %u bad", np, nblk, mb, bad);
    free(cnt), free(seen);
    return bad == 0;
}

/* k_moe_align leaving the cursors and k_moe_scatter placing the pairs (what the planner runs for
 * long chunks), into fresh buffers, checked as check_align does; from K_MOE_SCATTER_MIN tokens
 * also timed against k_moe_align placing them itself (ap, as the caller ran it). */
static int test_scatter(struct gpu *g, const struct kerns *K, const struct model *M,
                        const struct k_moe_align_params *ap, uint32_t T, uint32_t n, uint32_t mb)
{
    const struct shape *s = M->s;
    const uint32_t E = s->E;
    char note[160];
    struct k_moe_align_params sp = *ap;
    sp.counts = dalloc(g, 4ull * E, POISON_ALIGN);
    sp.sorted = dalloc(g, 4ull * mb * K_MOE_BM, POISON_ALIGN);
    sp.block_expert = dalloc(g, 4ull * mb, POISON_ALIGN), sp.n_blocks = dalloc(g, 4, POISON_ALIGN);
    sp.cursor = dalloc(g, 4ull * E, POISON_ALIGN);
    const unsigned gs = CDIV(T * s->k, K_MOE_SCATTER_THREADS);
    launch(g, K->align, &sp, 1, 1, 1024);
    launch(g, K->scatter, &sp, gs, 1, K_MOE_SCATTER_THREADS);
    int32_t *ids = dget(g, sp.ids, 4ull * T * s->k);
    uint32_t *c2 = dget(g, sp.counts, 4ull * E), *s2 = dget(g, sp.sorted, 4ull * mb * K_MOE_BM);
    uint32_t *b2 = dget(g, sp.block_expert, 4ull * mb), *n2 = dget(g, sp.n_blocks, 4);
    int ok = check_align(M, n, mb, ids, c2, s2, b2, *n2, note);
    CHECK(ok, "%s prefill T=%u k_moe_align + k_moe_scatter: structure (%s)", s->name, T, note);
    if (T >= K_MOE_SCATTER_MIN) { /* information: one CTA placing the pairs against many */
        double one = time_us(g, K->align, (void *)ap, 1, 1, 1024, 0);
        double two = time_us(g, K->align, &sp, 1, 1, 1024, 0) +
                     time_us(g, K->scatter, &sp, gs, 1, K_MOE_SCATTER_THREADS, 0);
        printf("# %s T=%u: k_moe_align %.1f us; k_moe_align + k_moe_scatter %.1f us\n", s->name,
               T, one, two);
    }
    free(ids), free(c2), free(s2), free(b2), free(n2);
    CUdeviceptr fr[5] = {sp.counts, sp.sorted, sp.block_expert, sp.n_blocks, sp.cursor};
    for (int i = 0; i < 5; i++)
        CU(g, cuMemFree(fr[i]));
    return ok;
}

static void test_prefill(struct gpu *g, const struct kerns *K, const struct model *M, uint32_t T,
                         const float *dec_out)
{
    const struct shape *s = M->s;
    const uint32_t H = s->H, E = s->E, k = s->k, I = s->I, S = s->S, wmax = M->wmax;
    const uint32_t n = live_of(T), mb = CDIV(T * k, K_MOE_BM) + E;
    struct k_moe_dims d = M->d;
    d.T_max = T, d.max_blocks = mb;
    struct pre_bufs b = pre_alloc(g, M, T, mb, 0);
    char note[160];
    struct k_router_params rp = router_params(M, b.ids, b.wts, b.sg, b.step, T);
    launch(g, K->router, &rp, T, 1, K_ROUTER_THREADS);
    int ok = check_router(g, M, b.ids, b.wts, b.sg, T, n, note);
    CHECK(ok, "%s prefill T=%u n=%u k_router (%s)", s->name, T, n, note);
    ok = check_router_logits(g, K, M, b.ids, b.wts, b.sg, b.step, T, n, note);
    CHECK(ok, "%s prefill T=%u n=%u k_router from GEMV logits (%s)", s->name, T, n, note);

    struct k_moe_align_params ap = {b.ids, b.counts, b.sorted, b.bexp, b.nblk, b.step, d, 0};
    launch(g, K->align, &ap, 1, 1, 1024);
    int32_t *ids = dget(g, b.ids, 4ull * T * k);
    uint32_t *counts = dget(g, b.counts, 4ull * E),
             *sorted = dget(g, b.sorted, 4ull * mb * K_MOE_BM);
    uint32_t *bexp = dget(g, b.bexp, 4ull * mb), *nbp = dget(g, b.nblk, 4), nblk = *nbp;
    ok = check_align(M, n, mb, ids, counts, sorted, bexp, nblk, note);
    CHECK(ok, "%s prefill T=%u k_moe_align: structure (%s)", s->name, T, note);
    if (!ok || nblk > mb)
        goto out;
    if (!test_scatter(g, K, M, &ap, T, n, mb))
        goto out;

    /* gemm_up: the rows of the sorted order, padding rows zero, nothing past n_blocks; then
     * gemm_down fed that act. The CUDA-core build, then the tensor-core, few-token and narrow
     * builds where the shape takes them. */
    size_t na = (size_t)mb * K_MOE_BM * I, ny = (size_t)T * k * H;
    float *want = calloc(na > ny ? na : ny, sizeof(float));
    uint8_t *mask = calloc(na > ny ? na : ny, 1);
    uint16_t *act = NULL, *y = NULL;
    for (int tc = 0; tc < 4; tc++) {
        struct glaunch lu = gemm_launch(K, s, 0, tc), ld = gemm_launch(K, s, 1, tc);
        if (tc && lu.tc != tc && ld.tc != tc)
            continue;
        free(act), free(y);
        CU(g, cuMemsetD8(b.act, POISON, 2 * na));
        CU(g, cuMemsetD8(b.y, POISON, 2 * ny));
        struct k_moe_gemm_params gp = gemm_params(M, &b, &d, 0);
        gemm_run(g, &lu, &gp, mb);
        act = dget(g, b.act, 2 * na);
        memset(mask, 0, na);
        for (size_t r = 0; r < (size_t)nblk * K_MOE_BM; r++)
            for (uint32_t i = 0; i < I; i++) {
                mask[r * I + i] = 1;
                want[r * I + i] =
                    sorted[r] == K_MOE_SENTINEL
                        ? 0.0f
                        : M->tr.act[((size_t)sorted[r] / k * (k + 1) + sorted[r] % k) * wmax + i];
            }
        ok = compare("act", BF16, act, want, mask, na, POISON, R_CHAIN, A_CHAIN, note);
        CHECK(ok, "%s prefill T=%u %s: sorted act vs the reference (%s)", s->name, T, lu.name,
              note);

        gp = gemm_params(M, &b, &d, 1);
        gemm_run(g, &ld, &gp, mb);
        y = dget(g, b.y, 2 * ny);
        memset(mask, 0, ny);
        for (size_t i = 0; i < (size_t)n * k * H; i++)
            mask[i] = 1, want[i] = M->tr.y[i];
        ok = compare("y", BF16, y, want, mask, ny, POISON, R_CHAIN, A_CHAIN, note);
        CHECK(ok, "%s prefill T=%u %s (after %s): weighted y vs the reference (%s)", s->name, T,
              ld.name, lu.name, note);
    }

    /* combine, with the reference's shared expert output standing in for the dense GEMMs */
    uint16_t *shb = malloc(2ull * T * H);
    memset(shb, POISON, 2ull * T * H);
    for (size_t i = 0; i < (size_t)n * H && S; i++)
        shb[i] = kref_f2bf(M->tr.shared[i]);
    CU(g, cuMemcpyHtoD(b.sh, shb, 2ull * T * H));
    struct k_moe_combine_params cp = {b.y, S ? b.sh : 0, b.sg, b.out, b.step, d, 0};
    launch(g, K->combine, &cp, T, 1, 256);
    uint16_t *out = dget(g, b.out, 2ull * T * H);
    if (S) { /* the gate from its logits (the plans' side branch): the same bits */
        float *gl = malloc(4ull * T);
        for (uint32_t t = 0; t < T; t++) { /* as upload_logits: exact in fp32 */
            double acc = 0;
            for (uint32_t j = 0; j < H; j++)
                acc += (double)M->h[(size_t)t * H + j] * M->sgw[j];
            gl[t] = (float)acc;
        }
        CUdeviceptr gl_d = dalloc(g, 4ull * T, 0), out2_d = dalloc(g, 2ull * T * H, POISON);
        CU(g, cuMemcpyHtoD(gl_d, gl, 4ull * T));
        struct k_moe_combine_params cq = {b.y, b.sh, 0, out2_d, b.step, d, gl_d};
        launch(g, K->combine, &cq, T, 1, 256);
        uint16_t *out2 = dget(g, out2_d, 2ull * T * H);
        CHECK(!memcmp(out, out2, 2ull * n * H), "%s prefill T=%u k_moe_combine with the gate's "
              "logits (gate_logit) instead of k_router's sigmoid: the same bits", s->name, T);
        free(gl), free(out2);
        CU(g, cuMemFree(gl_d));
        CU(g, cuMemFree(out2_d));
    }
    float *sg = dget(g, b.sg, 4ull * T), *yf = malloc(sizeof(float) * k * H),
          *shf = malloc(sizeof(float) * H);
    memset(mask, 0, (size_t)T * H);
    for (uint32_t t = 0; t < n; t++) {
        for (uint32_t i = 0; i < k * H; i++)
            yf[i] = kref_bf2f(y[(size_t)t * k * H + i]);
        for (uint32_t i = 0; i < H; i++)
            shf[i] = kref_bf2f(shb[(size_t)t * H + i]), mask[(size_t)t * H + i] = 1;
        kref_moe_combine(yf, k, H, S ? shf : NULL, sg[t], want + (size_t)t * H);
    }
    ok = compare("out", BF16, out, want, mask, (size_t)T * H, POISON, R_OP, A_OP, note);
    CHECK(ok, "%s prefill T=%u k_moe_combine vs the reference fed the device's y (%s)", s->name, T,
          note);
    ok = compare("out", BF16, out, M->ref_out, mask, (size_t)T * H, POISON, R_CHAIN, A_CHAIN, note);
    CHECK(ok, "%s prefill T=%u block (router .. combine) vs the reference block (%s)", s->name, T,
          note);
    if (T == T_ALL) {
        ok = compare("out", BF16, out, dec_out, mask, H, POISON, R_CHAIN, A_CHAIN, note);
        CHECK(ok, "%s prefill token 0 agrees with decode (%s)", s->name, note);
    }
    free(act), free(want), free(mask), free(y), free(shb), free(out), free(sg), free(yf), free(shf);
out:
    free(ids), free(counts), free(sorted), free(bexp), free(nbp);
    pre_free(g, &b);
}

/* With step->done set no kernel writes anything. The GEMMs get one block of padding rows to
 * work on, so one that ignored the flag would write act and y. */
static void test_done_flag(struct gpu *g, const struct kerns *K, const struct model *M)
{
    const struct shape *s = M->s;
    const uint32_t T = 5, mb = CDIV(T * s->k, K_MOE_BM) + s->E, k = s->k, wmax = M->wmax;
    struct dec_bufs db = dec_alloc(g, M, 1);
    struct pre_bufs pb = pre_alloc(g, M, T, mb, 1);
    struct k_router_params rp = router_params(M, db.ids, db.wts, db.sg, db.step, 1);
    launch(g, K->router, &rp, 1, 1, K_ROUTER_THREADS);
    struct k_moe_vec_params vp = vec_params(M, &db);
    const struct dec_launch lu = dec_of(K, M, 0), ld = dec_of(K, M, 1);
    launch(g, lu.f, &vp, lu.gx, lu.gy, lu.block);
    launch(g, ld.f, &vp, ld.gx, ld.gy, ld.block);
    struct k_moe_dims d = M->d;
    d.T_max = T, d.max_blocks = mb;
    rp = router_params(M, pb.ids, pb.wts, pb.sg, pb.step, T);
    launch(g, K->router, &rp, T, 1, K_ROUTER_THREADS);
    struct k_moe_align_params ap = {pb.ids, pb.counts, pb.sorted, pb.bexp, pb.nblk, pb.step, d, 0};
    launch(g, K->align, &ap, 1, 1, 1024);
    uint8_t bad = 0;
    const uint32_t one = 1, zero = 0;
    struct pre_bufs gb = pb; /* GEMM inputs: one block of expert 0, all padding */
    gb.sorted = dalloc(g, 4ull * K_MOE_BM, 0xFF), gb.bexp = dalloc(g, 4, 0),
    gb.nblk = dalloc(g, 4, 0);
    CU(g, cuMemcpyHtoD(gb.nblk, &one, 4));
    CU(g, cuMemcpyHtoD(gb.bexp, &zero, 4));
    for (int tc = 0; tc < 4; tc++) { /* every build */
        struct glaunch lu = gemm_launch(K, s, 0, tc), ld = gemm_launch(K, s, 1, tc);
        struct k_moe_gemm_params gp = gemm_params(M, &gb, &d, 0);
        gemm_run(g, &lu, &gp, mb);
        gp = gemm_params(M, &gb, &d, 1);
        gemm_run(g, &ld, &gp, mb);
    }
    struct k_moe_combine_params cp = {pb.y, pb.sh, pb.sg, pb.out, pb.step, d, 0};
    launch(g, K->combine, &cp, T, 1, 256);
    struct {
        CUdeviceptr p;
        size_t bytes;
        int poison;
    } outs[] = {{db.ids, 4ull * k, POISON},
                {db.wts, 4ull * k, POISON},
                {db.sg, 4, POISON},
                {db.act, 2ull * (k + 1) * wmax, POISON},
                {db.out, 2ull * s->H, POISON},
                {pb.ids, 4ull * T * k, POISON},
                {pb.wts, 4ull * T * k, POISON},
                {pb.sg, 4ull * T, POISON},
                {pb.counts, 4ull * s->E, POISON_ALIGN},
                {pb.sorted, 4ull * mb * K_MOE_BM, POISON_ALIGN},
                {pb.bexp, 4ull * mb, POISON_ALIGN},
                {pb.nblk, 4, POISON_ALIGN},
                {pb.act, 2ull * K_MOE_BM * s->I, POISON},
                {pb.y, 2ull * T * k * s->H, POISON},
                {pb.out, 2ull * T * s->H, POISON}};
    for (size_t i = 0; i < sizeof outs / sizeof outs[0]; i++) {
        uint8_t *h = dget(g, outs[i].p, outs[i].bytes);
        for (size_t j = 0; j < outs[i].bytes; j++)
            bad |= (uint8_t)(h[j] != outs[i].poison) << (i % 8);
        free(h);
    }
    CU(g, cuMemFree(gb.sorted));
    CU(g, cuMemFree(gb.bexp));
    CU(g, cuMemFree(gb.nblk));
    dec_free(g, &db);
    pre_free(g, &pb);
    CHECK(!bad, "%s step->done: no kernel of the block writes (mask 0x%02x)", s->name, bad);
}

/* got vs want over a list: |d| <= rtol * |want| + atol * rms(want); note as compare() */
static int compare_list(const char *what, const float *got, const float *want, size_t n,
                        double rtol, double atol, char *note)
{
    double ss = 0, worst = 0, worst_ratio = 0;
    size_t bad = 0, inexact = 0;
    for (size_t i = 0; i < n; i++)
        ss += (double)want[i] * want[i];
    double abs_tol = atol * sqrt(n ? ss / n : 0);
    for (size_t i = 0; i < n; i++) {
        double dd = fabs((double)got[i] - want[i]), tol = rtol * fabs(want[i]) + abs_tol;
        inexact += dd != 0 || got[i] != got[i];
        worst = dd > worst ? dd : worst;
        worst_ratio = tol > 0 && dd / tol > worst_ratio ? dd / tol : worst_ratio;
        if (!(dd <= tol) && bad++ < 4)
            printf("#   %s sample %zu: got %.7g, want %.7g\n", what, i, (double)got[i],
                   (double)want[i]);
    }
    snprintf(note, 160, "worst |d| %.3g (%.2f of tol), %zu of %zu differ, %zu bad", worst,
             worst_ratio, inexact, n, bad);
    return bad == 0;
}

#define N_SAMPLES 4096

/* The expert GEMMs at full size: T tokens routed at random (k distinct experts per token,
 * weights uniform in (0, 1]), x uniform bf16 in [-1, 1), the shape's weights. The tensor-core
 * outputs are checked on N_SAMPLES random (pair, column) elements against the reference (act:
 * the chain tolerance, a bf16 rounding of gate or up may land on the other side; y: fed the
 * device's act, one op); then both builds are timed (the same experts every repeat, but the
 * 400 MB of INT4 experts do not fit in L2). FLOP counts are the useful ones, 2 T k H 2I (up)
 * and 2 T k H I (down): padding rows are overhead. */
static void test_timing(struct gpu *g, const struct kerns *K, const struct model *M, uint32_t T)
{
    const struct shape *s = M->s;
    const uint32_t H = s->H, E = s->E, k = s->k, I = s->I, np = T * k;
    const uint32_t mb = CDIV(np, K_MOE_BM) + E;
    struct k_moe_dims d = M->d;
    d.T_max = T, d.max_blocks = mb;
    unsigned long long r = 0x71A1ull + T;
    int32_t *ids = malloc(4ull * np);
    float *wts = malloc(4ull * np);
    uint32_t *perm = malloc(4ull * E);
    for (uint32_t e = 0; e < E; e++)
        perm[e] = e;
    for (uint32_t t = 0; t < T; t++)
        for (uint32_t j = 0; j < k; j++) { /* a partial Fisher-Yates shuffle: distinct experts */
            uint32_t q = j + (uint32_t)(test_rand(&r) % (E - j)), v = perm[q];
            perm[q] = perm[j], perm[j] = v;
            ids[t * k + j] = (int32_t)v;
            wts[t * k + j] = (float)((test_rand(&r) >> 40) + 1) * 0x1p-24f;
        }
    float *x = rand_bf16((size_t)T * H, 1.0f, &r);
    struct pre_bufs b = {.ids = dalloc(g, 4ull * np, 0),
                         .wts = dalloc(g, 4ull * np, 0),
                         .counts = dalloc(g, 4ull * E, 0),
                         .sorted = dalloc(g, 4ull * mb * K_MOE_BM, 0),
                         .bexp = dalloc(g, 4ull * mb, 0),
                         .nblk = dalloc(g, 4, 0),
                         .act = dalloc(g, 2ull * mb * K_MOE_BM * I, POISON),
                         .y = dalloc(g, 2ull * np * H, POISON),
                         .step = step_new(g, T, 0)};
    CU(g, cuMemcpyHtoD(b.ids, ids, 4ull * np));
    CU(g, cuMemcpyHtoD(b.wts, wts, 4ull * np));
    CUdeviceptr x_d = upload_bf16(g, x, (size_t)T * H);
    struct k_moe_align_params ap = {b.ids, b.counts, b.sorted, b.bexp, b.nblk, b.step, d, 0};
    launch(g, K->align, &ap, 1, 1, 1024);
    test_scatter(g, K, M, &ap, T, T, mb);
    uint32_t nblk, *sorted = dget(g, b.sorted, 4ull * mb * K_MOE_BM);
    CU(g, cuMemcpyDtoH(&nblk, b.nblk, 4));

    struct glaunch su = gemm_launch(K, s, 0, 0), sd = gemm_launch(K, s, 1, 0);
    struct k_moe_gemm_params pu = gemm_params(M, &b, &d, 0), pd = gemm_params(M, &b, &d, 1);
    pu.x = x_d;

    /* samples: pair -> its row in the sorted order, a random column */
    uint32_t *row_of = malloc(4ull * np);
    for (uint32_t i = 0; i < nblk * K_MOE_BM; i++)
        if (sorted[i] != K_MOE_SENTINEL && sorted[i] < np)
            row_of[sorted[i]] = i;
    float *got = malloc(sizeof(float) * 2 * N_SAMPLES), *want = got + N_SAMPLES;
    float *actf = malloc(sizeof(float) * I);
    char note[160];
    double us[4][2] = {{0}}; /* [build][down] */
    struct glaunch L[4][2] = {{su, sd}};
    for (int bld = 1; bld < 4; bld++) { /* tensor-core, few-token, narrow up */
        struct glaunch lu = gemm_launch(K, s, 0, bld), ld = gemm_launch(K, s, 1, bld);
        if (lu.tc != bld || ld.tc != (bld == 3 ? 1 : bld))
            continue;
        L[bld][0] = lu, L[bld][1] = ld;
        CU(g, cuMemsetD8(b.act, POISON, 2ull * mb * K_MOE_BM * I));
        CU(g, cuMemsetD8(b.y, POISON, 2ull * np * H));
        gemm_run(g, &lu, &pu, mb);
        gemm_run(g, &ld, &pd, mb);
        uint16_t *act = dget(g, b.act, 2ull * mb * K_MOE_BM * I), *y = dget(g, b.y, 2ull * np * H);
        for (int down = 0; down < 2; down++) {
            for (uint32_t i = 0; i < N_SAMPLES; i++) {
                uint32_t pr = (uint32_t)(test_rand(&r) % np), e = (uint32_t)ids[pr];
                uint32_t row = row_of[pr], c = (uint32_t)(test_rand(&r) % (down ? H : I));
                if (!down) {
                    const float *gw = M->gu + ((uint64_t)e * 2 * I + c) * H;
                    kref_moe_up(x + (uint64_t)(pr / k) * H, gw, gw + (uint64_t)I * H, 1, H,
                                &want[i]);
                    got[i] = kref_bf2f(act[(uint64_t)row * I + c]);
                } else {
                    for (uint32_t j = 0; j < I; j++)
                        actf[j] = kref_bf2f(act[(uint64_t)row * I + j]);
                    kref_moe_down(actf, M->dn + ((uint64_t)e * H + c) * I, I, 1, wts[pr],
                                  &want[i]);
                    got[i] = kref_bf2f(y[(uint64_t)pr * H + c]);
                }
            }
            int ok = down ? compare_list("y", got, want, N_SAMPLES, R_OP, A_OP, note)
                          : compare_list("act", got, want, N_SAMPLES, R_CHAIN, A_CHAIN, note);
            CHECK(ok,
                  "%s T=%u random routing, %u blocks: %s, %u sampled outputs vs the "
                  "reference%s (%s)",
                  s->name, T, nblk, down ? ld.name : lu.name, N_SAMPLES,
                  down ? " fed the device's act" : "", note);
        }
        free(act), free(y);
        us[bld][0] = gemm_time(g, &lu, &pu, mb), us[bld][1] = gemm_time(g, &ld, &pd, mb);
    }
    us[0][0] = gemm_time(g, &su, &pu, mb), us[0][1] = gemm_time(g, &sd, &pd, mb);
    const double fu = 4.0 * np * H * I, fd = 2.0 * np * H * I;
    for (int bld = 1; bld < 4; bld++) {
        if (us[bld][0] == 0)
            continue;
        /* against the CUDA-core build; the few-token and narrow builds against the
         * tensor-core one. The planner gives k_moe_few_down_g128 the chunks up to
         * K_MOE_FEW_MAXT tokens: there it must win, and well past that (T >= 4 K_MOE_FEW_MAXT)
         * lose; in between, where the two meet, it is reported. The few-token up kernel
         * measured even with k_moe_gemm_up_i4 at 128 tokens and is not planned: reported.
         * The narrow up kernel (the buckets up to K_MOE_TC_NARROW_MAXT) must win at 128
         * tokens, where it gains about 20%, and lose from 4 K_MOE_TC_NARROW_MAXT on. */
        const int vs = bld >= 2 ? 1 : 0, few = T <= K_MOE_FEW_MAXT;
        const int judged = bld == 1 || (bld == 2 && (few || T >= 4 * K_MOE_FEW_MAXT)) ||
                           (bld == 3 && (T == 128 || T >= 4 * K_MOE_TC_NARROW_MAXT));
        const double sum = us[bld][0] + us[bld][1], other = us[vs][0] + us[vs][1];
        char line[400];
        snprintf(line, sizeof line,
                 "%s T=%u timing: %s %.0f us = %.1f TFLOP/s, %s %.0f us = %.1f TFLOP/s, together "
                 "%.1f TFLOP/s (%s: %.0f us = %.1f, %.0f us = %.1f, together %.1f)%s",
                 s->name, T, L[bld][0].name, us[bld][0], fu / us[bld][0] / 1e6, L[bld][1].name,
                 us[bld][1], fd / us[bld][1] / 1e6, (fu + fd) / sum / 1e6, L[vs][0].name,
                 us[vs][0], fu / us[vs][0] / 1e6, us[vs][1], fd / us[vs][1] / 1e6,
                 (fu + fd) / other / 1e6,
                 bld == 1   ? ""
                 : bld == 3 ? (T <= K_MOE_TC_NARROW_MAXT
                                   ? (judged ? "; the planner picks the narrow up kernel here, so "
                                               "it must be faster"
                                             : "; the narrow up kernel, planned here: reported")
                                   : judged ? "; the planner does not pick the narrow up kernel "
                                              "here, so it must be slower"
                                            : "; the narrow up kernel, not planned here: reported")
                 : few      ? "; the planner picks the down kernel here, so it must be faster"
                 : judged ? "; the planner does not pick the down kernel here, so it must be slower"
                          : "; near the planner's line, not judged");
        if (judged)
            CHECK(bld == 3   ? (us[3][0] < us[1][0]) == (T <= K_MOE_TC_NARROW_MAXT)
                  : bld == 2 ? (us[2][1] < us[1][1]) == few
                             : us[1][0] < us[0][0] && us[1][1] < us[0][1],
                  "%s", line);
        else
            printf("#    %s\n", line);
    }

    CUdeviceptr dd[] = {b.ids, b.wts, b.counts, b.sorted, b.bexp, b.nblk, b.act, b.y, b.step, x_d};
    for (size_t i = 0; i < sizeof dd / sizeof dd[0]; i++)
        CU(g, cuMemFree(dd[i]));
    free(ids), free(wts), free(perm), free(x), free(sorted), free(row_of), free(got), free(actf);
}

static void run_shape(struct gpu *g, const struct kerns *K, const struct model *M)
{
    const char *only_t = getenv("MOE_TIMING"); /* only the timing at this many tokens */
    if (only_t) {
        if (M->s->group == 128 && M->s->H >= 2048)
            test_timing(g, K, M, (uint32_t)strtoul(only_t, NULL, 10));
        return;
    }
    float *dec_out = malloc(sizeof(float) * M->s->H);
    test_decode(g, K, M, dec_out);
    for (size_t i = 0; i < sizeof Ts / sizeof Ts[0]; i++)
        test_prefill(g, K, M, Ts[i], dec_out);
    test_done_flag(g, K, M);
    if (M->s->group == 128 && M->s->H >= 2048) {
        test_timing(g, K, M, 4096);
        test_timing(g, K, M, 1341);
        test_timing(g, K, M, 256); /* the few-token build's side of the planner's line */
        test_timing(g, K, M, 128);
    }
    free(dec_out);
}

/* the bf16 or INT4 variant of a kernel */
static void kern_get(struct gpu *g, CUmodule m, CUfunction *f, const char *base, uint32_t group)
{
    char nm[64];
    snprintf(nm, sizeof nm, "%s_%s", base, group ? "i4" : "bf16");
    CU(g, cuModuleGetFunction(f, m, nm));
}

int main(void)
{
    struct gpu g;
    if (gpu_open(&g))
        return test_skip("no CUDA device");
    CUmodule m = gpu_module(&g);
    CU(&g, cuDeviceGetAttribute(&smem_optin, CU_DEVICE_ATTRIBUTE_MAX_SHARED_MEMORY_PER_BLOCK_OPTIN,
                                g.dev));
    check_packer();
    const char *only = getenv("MOE_SHAPE"); /* one shape by name, for quick timing runs */
    for (size_t i = 0; i < sizeof shapes / sizeof shapes[0]; i++) {
        const struct shape *s = &shapes[i];
        if (only && strcmp(only, s->name))
            continue;
        struct kerns K;
        CU(&g, cuModuleGetFunction(&K.router, m, "k_router"));
        CU(&g, cuModuleGetFunction(&K.align, m, "k_moe_align"));
        CU(&g, cuModuleGetFunction(&K.scatter, m, "k_moe_scatter"));
        CU(&g, cuModuleGetFunction(&K.combine, m, "k_moe_combine"));
        kern_get(&g, m, &K.up, "k_moe_up", s->group);
        kern_get(&g, m, &K.down, "k_moe_down", s->group);
        const struct k_moe_dims dd = {.H = s->H, .E = s->E, .k = s->k, .I = s->I, .S = s->S, .group = s->group};
        K.g128 = K_MOE_G128_OK(dd);
        K.fused = 0;
        if (K_MOE_FUSED_OK(dd))
            CU(&g, cuModuleGetFunction(&K.fused, m, "k_moe_fused_g128"));
        if (K.g128) {
            CU(&g, cuModuleGetFunction(&K.up, m, "k_moe_up_g128"));
            CU(&g, cuModuleGetFunction(&K.down, m, "k_moe_down_g128"));
        }
        kern_get(&g, m, &K.gemm[0][1], "k_moe_gemm_up", s->group);
        kern_get(&g, m, &K.gemm[1][1], "k_moe_gemm_down", s->group);
        char nm[64];
        snprintf(nm, sizeof nm, "k_moe_gemm_up_%s_simt", s->group ? "i4" : "bf16");
        CU(&g, cuModuleGetFunction(&K.gemm[0][0], m, nm));
        snprintf(nm, sizeof nm, "k_moe_gemm_down_%s_simt", s->group ? "i4" : "bf16");
        CU(&g, cuModuleGetFunction(&K.gemm[1][0], m, nm));
        K.gemm[0][2] = K.gemm[1][2] = K.gemm[0][3] = K.gemm[1][3] = 0;
        if (s->group >= 32) { /* INT4: the narrow up kernel, tensor-core down */
            CU(&g, cuModuleGetFunction(&K.gemm[0][3], m, "k_moe_gemm_up_i4_narrow"));
            K.gemm[1][3] = K.gemm[1][1];
        }
        if (K_MOE_FEW_OK(dd)) {
            CU(&g, cuModuleGetFunction(&K.gemm[0][2], m, "k_moe_few_up_g128"));
            CU(&g, cuModuleGetFunction(&K.gemm[1][2], m, "k_moe_few_down_g128"));
        }
        struct model M;
        model_init(&g, &M, s, 0x5EED0000ull + i);
        run_shape(&g, &K, &M);
        model_free(&g, &M);
    }
    CU(&g, cuModuleUnload(m));
    gpu_close(&g);
    return test_done();
}
