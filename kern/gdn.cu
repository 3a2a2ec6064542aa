/* gdn.cu — Gated DeltaNet: the prefill conv and the fused decode step (kern/gdn.h, MODEL.md
 * §2.2, §4). The chunked prefill delta rule is in gdn_chunk.cu.
 *
 *   k_gdn_conv  u[t, c] = bf16(silu(bf16(sum_j Wc[c, j] * xin[t - (K-1) + j, c])))
 *               over the chunk's rows t < step->n_tokens, xin[< 0] read from the window, which
 *               is left holding the last K-1 inputs of [window; chunk] (so a chunk shorter
 *               than K-1 shifts it). grid (K_GDN_CONV_GRID(conv_dim, T_max)), block 128: a
 *               thread walks K_GDN_CONV_TB(T_max) tokens of K_GDN_CONV_CH channels with the
 *               taps in registers (one thread per channel walking a 2048-token chunk took
 *               0.6 ms a layer; one channel a thread, 2-byte accesses, 64 tokens a walk at
 *               every chunk size: 49 us a layer at 2048 tokens; two channels and 64-token
 *               walks 52 us, 32-token walks 46 us, test_gpu_gdn, H100).
 *   k_gdn_step  one decode token, fused: q/k l2 norms, gates, the delta rule with one read
 *               and one write of the fp32 state, gated RMSNorm with z. The conv and its
 *               window update ran in the in_proj GEMV's epilogue (kern/gemv.h, K_GEMV_CONV).
 *               grid (nv), block K_GDN_STEP_THREADS: one CTA per value head.
 *
 * Layouts: qkv/u rows are (conv_dim) = q (nk, dk) | k (nk, dk) | v (nv, dv), head-major; the
 * window is (conv_dim, K-1) bf16, oldest input first; conv_w (conv_dim, K) bf16, tap K-1 on the
 * current token; the state (nv, dk, dv) fp32; z and out (nv * dv) bf16 per token.
 *
 * Why the conv is not in k_gdn_step: the value heads of a key head read the same q/k conv
 * channels, and a channel's window may only slide after every reader has seen it; CTAs of one
 * launch cannot order themselves. The GEMV that makes the projections owns each channel in
 * exactly one warp, so the conv runs there, and k_gdn_step can give every value head its own
 * CTA (32 at full size, not 16 key-head groups): 512 threads hold the head's 128 x 128 fp32
 * state in registers (8 rows x 4 columns each, warp-wide rows for coalesced loads; a wider
 * head goes in passes of 128 columns), all its loads in flight at once; the two column dot products over dk (S^T k, then S^T q after the
 * update) are finished across the 16 warps through shared memory in warp order
 * (deterministic).
 *
 * Numerics (PyTorch's bf16 run, torch fallback): the conv sums its taps in fp32 (fmaf, oldest
 * first), rounds to bf16, SiLU rounds again (two bf16 ops, not causal-conv1d's one rounding);
 * beta = bf16(sigmoid(b)); g = -exp(A_log) * softplus(a + dt_bias) in fp32 (threshold 20);
 * q, k, v, beta, g in fp32; l2 norms with 1e-6 inside the rsqrt (sum, not mean), q scaled by
 * dk^-0.5; the core output rounded to bf16; the gated norm bf16(w * bf16(x * rstd) * silu(z))
 * with w fp32. Envelope: 2 <= K <= GDN_KMAX; for the step dk <= GDN_STEP_ROWS and
 * dv <= GDN_STEP_COLS; a launch outside it traps. */
#include "common.cuh"
#include "gdn.h"

#define GDN_KMAX        8    /* conv taps a thread keeps in registers (servable: <= 8) */
#define GDN_CONV_UNROLL 8    /* tokens per k_gdn_conv loop trip: loads in flight */
#define GDN_STEP_WARPS  (K_GDN_STEP_THREADS / 32)
#define GDN_STEP_RPT    8    /* state rows per decode thread: dk <= 16 warps x 8 */
#define GDN_STEP_ROWS   (GDN_STEP_WARPS * GDN_STEP_RPT)
#define GDN_STEP_CPT    4    /* state columns per decode thread and pass */
#define GDN_STEP_PASS   (32 * GDN_STEP_CPT) /* columns of one pass */
#define GDN_STEP_COLS   256  /* value columns of a head (passes of GDN_STEP_PASS) */

/* ---- gates and small helpers -------------------------------------------------------------- */

/* F.softplus(x), beta 1, threshold 20 */
__device__ __forceinline__ float gdn_softplus(float x)
{
    return x > 20.0f ? x : log1pf(expf(x));
}

/* beta = b.sigmoid() (a bf16 op); g = -A_log.float().exp() * F.softplus(a.float() + dt_bias) */
__device__ __forceinline__ void gdn_gates(__nv_bfloat16 b, __nv_bfloat16 a, float a_log,
                                          __nv_bfloat16 dt_bias, float *beta, float *g)
{
    *beta = k_round_bf16(k_sigmoid(k_bf2f(b)));
    *g = -expf(a_log) * gdn_softplus(k_bf2f(a) + k_bf2f(dt_bias));
}


/* ---- k_gdn_conv ----------------------------------------------------------------------------- */

/* CH inputs of token row x (CH adjacent channels: one 4-byte load for two) as floats. */
template <int CH> __device__ __forceinline__ void gdn_conv_ld(float (&v)[CH], const __nv_bfloat16 *x)
{
    if (CH == 2) {
        const uint32_t u = *(const uint32_t *)x;
        v[0] = k_bfbits2f(u & 0xFFFF), v[CH - 1] = k_bfbits2f(u >> 16);
    } else {
        v[0] = k_bf2f(x[0]);
    }
}

/* CH adjacent channels from c over tokens [t0, t1) of n. KM >= K register slots a channel,
 * right-aligned: slot KM-1 is the current token, slots KM-K .. KM-2 the K-1 inputs before it;
 * slots left of those carry zero taps, so every loop has compile-time bounds and the fmaf chain
 * equals the K-tap one (a zero tap on a finite input adds a signed zero to +0, which stays +0).
 * Inputs before the chunk come from the window, which only the first token block's thread
 * reads; that thread also writes the new window (the last K-1 inputs of [window; chunk], read
 * from the chunk and from its own copy of the old window), so no thread reads a window another
 * has rewritten. */
template <int KM, int CH>
__device__ __forceinline__ void gdn_conv_channel(const struct k_gdn_conv_params &p, uint32_t c,
                                                 uint32_t t0, uint32_t t1, uint32_t n)
{
    const uint32_t K = p.d.kernel, cd = p.d.conv_dim;
    const __nv_bfloat16 *x = (const __nv_bfloat16 *)p.qkv + c;
    const __nv_bfloat16 *wc = (const __nv_bfloat16 *)p.conv_w + (size_t)c * K;
    __nv_bfloat16 *win = (__nv_bfloat16 *)p.window + (size_t)c * (K - 1);
    __nv_bfloat16 *out = (__nv_bfloat16 *)p.out + c;
    float w[CH][KM], h[CH][KM]; /* taps; h[][KM-1] is a scratch slot for the current input */
#pragma unroll
    for (int s = 0; s < KM; s++) {
        int j = s - (KM - (int)K);        /* tap / window index of slot s, < 0: unused */
        int pos = (int)t0 - (KM - 1) + s; /* the input slot s holds before token t0 */
        float v[CH];
        if (j >= 0 && s < KM - 1 && pos >= 0)
            gdn_conv_ld<CH>(v, x + (size_t)pos * cd);
#pragma unroll
        for (int q = 0; q < CH; q++) {
            w[q][s] = j >= 0 ? k_bf2f(wc[(size_t)q * K + j]) : 0.0f;
            h[q][s] = j < 0 || s == KM - 1 ? 0.0f : pos >= 0 ? v[q] : k_bf2f(win[q * (K - 1) + j]);
        }
    }
    for (uint32_t tb = t0; tb < t1; tb += GDN_CONV_UNROLL) {
        float xt[GDN_CONV_UNROLL][CH];
#pragma unroll
        for (int i = 0; i < GDN_CONV_UNROLL; i++) {
            if (tb + i < t1)
                gdn_conv_ld<CH>(xt[i], x + (size_t)(tb + i) * cd);
            else
#pragma unroll
                for (int q = 0; q < CH; q++)
                    xt[i][q] = 0.0f;
        }
#pragma unroll
        for (int i = 0; i < GDN_CONV_UNROLL; i++) {
            if (tb + i >= t1)
                break;
            float y[CH];
#pragma unroll
            for (int q = 0; q < CH; q++) {
                h[q][KM - 1] = xt[i][q];
                float acc = 0.0f;
#pragma unroll
                for (int s = 0; s < KM; s++)
                    acc = fmaf(w[q][s], h[q][s], acc);
                y[q] = k_gdn_conv_act(acc);
#pragma unroll
                for (int s = 0; s + 1 < KM; s++) /* slide: the current input joins the window */
                    h[q][s] = h[q][s + 1];
            }
            if (CH == 2)
                *(__nv_bfloat162 *)(out + (size_t)(tb + i) * cd) =
                    __halves2bfloat162(k_f2bf(y[0]), k_f2bf(y[CH - 1]));
            else
                out[(size_t)(tb + i) * cd] = k_f2bf(y[0]);
        }
    }
    if (t0 != 0)
        return;
#pragma unroll
    for (int q = 0; q < CH; q++)
#pragma unroll
        for (int s = 0; s + 1 < KM; s++) { /* window slot j takes input n - (K-1) + j */
            int j = s - (KM - (int)K);
            int pos = (int)n - (KM - 1) + s;
            /* pos < 0: old slot j + n, not yet rewritten (the slots go up, j + n > j) */
            __nv_bfloat16 *wq = win + q * (K - 1);
            if (j >= 0)
                wq[j] = pos >= 0 ? x[(size_t)pos * cd + q] : wq[j + n];
        }
}

extern "C" __global__ void __launch_bounds__(128) k_gdn_conv(struct k_gdn_conv_params p)
{
    k_pdl_enter();
    const struct k_step *st = k_step_of(p.step);
    uint32_t n = min(st->n_tokens, p.d.T_max);
    const uint32_t ch = K_GDN_CONV_CH(p.d.conv_dim), tb = K_GDN_CONV_TB(p.d.T_max);
    const uint32_t ncb = (p.d.conv_dim + 128 * ch - 1) / (128 * ch); /* channel blocks; then token blocks */
    uint32_t c = ((blockIdx.x % ncb) * blockDim.x + threadIdx.x) * ch, t0 = (blockIdx.x / ncb) * tb;
    if (p.d.kernel < 2 || p.d.kernel > GDN_KMAX || blockDim.x != 128)
        __trap();
    if (st->done || c >= p.d.conv_dim || t0 >= n)
        return;
    uint32_t t1 = min(t0 + tb, n);
    if (ch == 2)
        p.d.kernel == 4 ? gdn_conv_channel<4, 2>(p, c, t0, t1, n)
                        : gdn_conv_channel<GDN_KMAX, 2>(p, c, t0, t1, n);
    else
        p.d.kernel == 4 ? gdn_conv_channel<4, 1>(p, c, t0, t1, n)
                        : gdn_conv_channel<GDN_KMAX, 1>(p, c, t0, t1, n);
}

/* ---- k_gdn_step ----------------------------------------------------------------------------- */

/* Shared memory of one decode CTA (static, < 48 KiB). */
struct gdn_step_smem {
    float q[GDN_STEP_ROWS], k[GDN_STEP_ROWS]; /* post-conv q, k of the key head */
    float v[GDN_STEP_COLS];                   /* post-conv values of the head */
    float part[GDN_STEP_WARPS][GDN_STEP_PASS]; /* per-warp partial column sums of a pass */
    float x[GDN_STEP_COLS];                   /* delta, then the core output (bf16-rounded) */
    float red[32];
    float ba[GDN_STEP_WARPS][2]; /* per-warp partial b, a dot products (w_b != 0) */
    float beta, g, rq, rk;
};

/* Warp sums of this thread's share of w_b[hv] . h and w_a[hv] . h into sm.ba (16-byte slices,
 * fp32). Everything it reads is written two launches back or never: it runs before the wait. */
__device__ __forceinline__ void gdn_step_ba(const struct k_gdn_step_params &p, struct gdn_step_smem &sm,
                                            uint32_t hv)
{
    const uint32_t H = p.H, lane = threadIdx.x % 32, warp = threadIdx.x / 32;
    const uint16_t *h = (const uint16_t *)p.h, *wb = (const uint16_t *)p.w_b + (size_t)hv * H,
                   *wa = (const uint16_t *)p.w_a + (size_t)hv * H;
    float sb = 0.0f, sa = 0.0f;
    for (uint32_t k = threadIdx.x * 8; k < H; k += blockDim.x * 8) {
        const uint4 x = __ldg((const uint4 *)(h + k)), b = __ldg((const uint4 *)(wb + k)),
                    a = __ldg((const uint4 *)(wa + k));
        const uint32_t xw[4] = {x.x, x.y, x.z, x.w}, bw[4] = {b.x, b.y, b.z, b.w},
                       aw[4] = {a.x, a.y, a.z, a.w};
#pragma unroll
        for (int i = 0; i < 4; i++) {
            const float x0 = k_bfbits2f(xw[i] & 0xFFFF), x1 = k_bfbits2f(xw[i] >> 16);
            sb = fmaf(k_bfbits2f(bw[i] & 0xFFFF), x0, fmaf(k_bfbits2f(bw[i] >> 16), x1, sb));
            sa = fmaf(k_bfbits2f(aw[i] & 0xFFFF), x0, fmaf(k_bfbits2f(aw[i] >> 16), x1, sa));
        }
    }
    sb = k_warp_sum(sb), sa = k_warp_sum(sa);
    if (lane == 0)
        sm.ba[warp][0] = sb, sm.ba[warp][1] = sa;
}

/* Column sums of the warps' partials in part, in warp order (deterministic): x[c0 + c] =
 * f(c0 + c, sum) for the pass's columns. */
template <typename F>
__device__ __forceinline__ void gdn_step_colsum(struct gdn_step_smem &sm, uint32_t c0, uint32_t nc, F f)
{
    __syncthreads();
    for (uint32_t c = threadIdx.x; c < nc; c += blockDim.x) {
        float s = 0.0f;
#pragma unroll
        for (int w = 0; w < GDN_STEP_WARPS; w++)
            s += sm.part[w][c];
        sm.x[c0 + c] = f(c0 + c, s);
    }
    __syncthreads();
}

/* State of one pass: rows warp + 16 m, columns c0 + lane + 32 j, zero outside the head. */
__device__ __forceinline__ void gdn_step_load(float (&s)[GDN_STEP_RPT][GDN_STEP_CPT], const float *S,
                                              uint32_t dk, uint32_t dv, uint32_t c0)
{
    const uint32_t warp = threadIdx.x / 32, lane = threadIdx.x % 32;
#pragma unroll
    for (int m = 0; m < GDN_STEP_RPT; m++)
#pragma unroll
        for (int j = 0; j < GDN_STEP_CPT; j++) {
            uint32_t r = warp + GDN_STEP_WARPS * m, c = c0 + lane + 32 * j;
            s[m][j] = r < dk && c < dv ? S[(size_t)r * dv + c] : 0.0f;
        }
}

/* One value head: the state (dk, dv) passes through registers GDN_STEP_PASS columns at a time
 * (one pass at full size), thread (warp, lane) holding rows warp + 16 m and columns
 * lane + 32 j; the first pass's loads are issued before anything else so the head's whole
 * state is in flight at once. */
__device__ void gdn_step_head(const struct k_gdn_step_params &p, struct gdn_step_smem &sm)
{
    const uint32_t dk = p.d.dk, dv = p.d.dv, nk = p.d.nk, hv = blockIdx.x, hk = hv / (p.d.nv / nk);
    const uint32_t tid = threadIdx.x, warp = tid / 32, lane = tid % 32;
    float *S = (float *)p.state + (size_t)hv * dk * dv;
    float s[GDN_STEP_RPT][GDN_STEP_CPT];
    gdn_step_load(s, S, dk, dv, 0); /* before the wait: the kernel ahead never writes the state */
    if (p.w_b)
        gdn_step_ba(p, sm, hv);
    k_pdl_enter();
    if (k_step_of(p.step)->done)
        return;
    /* q, k of the key head and v of this head, post-conv (the in_proj GEMV ran the conv) */
    const __nv_bfloat16 *u = (const __nv_bfloat16 *)p.u;
    for (uint32_t i = tid; i < 2 * dk + dv; i += blockDim.x) {
        if (i < dk)
            sm.q[i] = k_bf2f(u[hk * dk + i]);
        else if (i < 2 * dk)
            sm.k[i - dk] = k_bf2f(u[nk * dk + hk * dk + (i - dk)]);
        else
            sm.v[i - 2 * dk] = k_bf2f(u[2 * nk * dk + hv * dv + (i - 2 * dk)]);
    }
    if (tid == 0 && !p.w_b)
        gdn_gates(((const __nv_bfloat16 *)p.b)[hv], ((const __nv_bfloat16 *)p.a)[hv],
                  ((const float *)p.a_log)[hv], ((const __nv_bfloat16 *)p.dt_bias)[hv], &sm.beta, &sm.g);
    __syncthreads();
    if (tid == 0 && p.w_b) { /* the warps' partial dot products, in warp order */
        float b = 0.0f, a = 0.0f;
        for (uint32_t w = 0; w < GDN_STEP_WARPS; w++)
            b += sm.ba[w][0], a += sm.ba[w][1];
        gdn_gates(__float2bfloat16(b), __float2bfloat16(a), ((const float *)p.a_log)[hv],
                  ((const __nv_bfloat16 *)p.dt_bias)[hv], &sm.beta, &sm.g);
    }
    if (warp < 2) { /* warp 0: sum q^2, warp 1: sum k^2 */
        const float *x = warp ? sm.k : sm.q;
        float a = 0.0f;
        for (uint32_t i = lane; i < dk; i += 32)
            a = fmaf(x[i], x[i], a);
        a = k_warp_sum(a);
        if (lane == 0) /* l2norm: x * rsqrt(sum(x^2) + 1e-6) */
            (warp ? sm.rk : sm.rq) = 1.0f / sqrtf(a + 1e-6f);
    }
    __syncthreads();
    const float scale = 1.0f / sqrtf((float)dk), eg = expf(sm.g), beta = sm.beta;
    float kn[GDN_STEP_RPT], qn[GDN_STEP_RPT];
#pragma unroll
    for (int m = 0; m < GDN_STEP_RPT; m++) {
        uint32_t r = warp + GDN_STEP_WARPS * m;
        kn[m] = r < dk ? sm.k[r] * sm.rk : 0.0f;
        qn[m] = r < dk ? sm.q[r] * sm.rq * scale : 0.0f;
    }
    for (uint32_t c0 = 0; c0 < dv; c0 += GDN_STEP_PASS) {
        const uint32_t nc = min(dv - c0, (uint32_t)GDN_STEP_PASS);
        if (c0)
            gdn_step_load(s, S, dk, dv, c0);
        /* S = S * exp(g); kv_mem = S^T k; delta = (v - kv_mem) * beta */
#pragma unroll
        for (int j = 0; j < GDN_STEP_CPT; j++) {
            float a = 0.0f;
#pragma unroll
            for (int m = 0; m < GDN_STEP_RPT; m++) {
                s[m][j] *= eg;
                a = fmaf(s[m][j], kn[m], a);
            }
            if (lane + 32 * j < nc)
                sm.part[warp][lane + 32 * j] = a;
        }
        gdn_step_colsum(sm, c0, nc, [&](uint32_t c, float kv) { return (sm.v[c] - kv) * beta; });
        /* S += k delta^T, written back; o = S^T q */
#pragma unroll
        for (int j = 0; j < GDN_STEP_CPT; j++) {
            uint32_t c = lane + 32 * j;
            float delta = c < nc ? sm.x[c0 + c] : 0.0f, a = 0.0f;
#pragma unroll
            for (int m = 0; m < GDN_STEP_RPT; m++) {
                uint32_t r = warp + GDN_STEP_WARPS * m;
                s[m][j] = fmaf(kn[m], delta, s[m][j]);
                a = fmaf(s[m][j], qn[m], a);
                if (r < dk && c < nc)
                    S[(size_t)r * dv + c0 + c] = s[m][j];
            }
            if (c < nc)
                sm.part[warp][c] = a;
        }
        gdn_step_colsum(sm, c0, nc, [](uint32_t, float o) { return k_round_bf16(o); });
    }
    /* gated RMSNorm: out = bf16(w * bf16(o * rstd) * silu(z)) */
    float a = 0.0f;
    for (uint32_t c = tid; c < dv; c += blockDim.x)
        a = fmaf(sm.x[c], sm.x[c], a);
    a = k_block_sum(a, sm.red);
    const float rstd = 1.0f / sqrtf(a / (float)dv + p.d.eps);
    const __nv_bfloat16 *z = (const __nv_bfloat16 *)p.z + (size_t)hv * dv;
    __nv_bfloat16 *out = (__nv_bfloat16 *)p.out + (size_t)hv * dv;
    const float *w = (const float *)p.norm_w;
    for (uint32_t c = tid; c < dv; c += blockDim.x)
        out[c] = k_f2bf(w[c] * k_round_bf16(sm.x[c] * rstd) * k_silu(k_bf2f(z[c])));
}

extern "C" __global__ void __launch_bounds__(K_GDN_STEP_THREADS) k_gdn_step(struct k_gdn_step_params p)
{
    K_TRACE_BEGIN();
    __shared__ struct gdn_step_smem sm;
    if (blockDim.x != K_GDN_STEP_THREADS || p.d.dk > GDN_STEP_ROWS || p.d.dv > GDN_STEP_COLS ||
        p.d.nk == 0 || p.d.nv % p.d.nk || (p.w_b && (p.H % 8 || !p.w_a || !p.h)))
        __trap();
    if (blockIdx.x >= p.d.nv)
        return;
    gdn_step_head(p, sm); /* waits for the kernel ahead after issuing the state loads */
    K_TRACE_END();
}
