/* gdn.cu — Gated DeltaNet: the prefill conv and the fused decode step (kern/gdn.h, MODEL.md
 * §2.2, §4). The chunked prefill delta rule is in gdn_chunk.cu.
 *
 *   k_gdn_conv  u[t, c] = bf16(silu(bf16(sum_j Wc[c, j] * xin[t - (K-1) + j, c])))
 *               over the chunk's rows t < step->n_tokens, xin[< 0] read from the window, which
 *               is left holding the last K-1 inputs of [window; chunk] (so a chunk shorter
 *               than K-1 shifts it). grid (ceil(conv_dim / 128)), block 128: one thread per
 *               channel walks the chunk with the window in registers.
 *   k_gdn_step  one decode token, fused: conv + window update, q/k l2 norms, gates, the delta
 *               rule with one read and one write of the fp32 state, gated RMSNorm with z.
 *               grid (nv), block K_GDN_THREADS.
 *
 * Layouts: qkv/u rows are (conv_dim) = q (nk, dk) | k (nk, dk) | v (nv, dv), head-major; the
 * window is (conv_dim, K-1) bf16, oldest input first; conv_w (conv_dim, K) bf16, tap K-1 on the
 * current token; the state (nv, dk, dv) fp32; z and out (nv * dv) bf16 per token.
 *
 * Why one CTA per key head in k_gdn_step: the nv/nk value heads of a key head read the same
 * q/k conv channels, and the window of a channel may only slide after every reader has seen
 * its old contents. CTAs of one launch cannot order themselves, so the CTA of key head hk
 * (blockIdx.x = hk) serves all its value heads and alone reads and writes those channels;
 * CTAs nk..nv-1 of the planner's (nv) grid return at once. Its 256 threads own the
 * (nv/nk) * dv value columns of the group (in passes of 256 / P columns if there are more):
 * P threads per column (the largest power of two with P * columns <= 256 and P <= dk; 1 at
 * full size) each hold ceil(dk / P) state rows in registers, so the state is read once and
 * written once; q and k are regrouped in shared memory so that a thread's rows are contiguous
 * (float4 reads); the two dot products over dk (S^T k, then S^T q after the update) are
 * finished across the P threads through shared memory in a fixed order (deterministic).
 *
 * Numerics (PyTorch's bf16 run, torch fallback): the conv sums its taps in fp32 (fmaf, oldest
 * first), rounds to bf16, SiLU rounds again (two bf16 ops, not causal-conv1d's one rounding);
 * beta = bf16(sigmoid(b)); g = -exp(A_log) * softplus(a + dt_bias) in fp32 (threshold 20);
 * q, k, v, beta, g in fp32; l2 norms with 1e-6 inside the rsqrt (sum, not mean), q scaled by
 * dk^-0.5; the core output rounded to bf16; the gated norm bf16(w * bf16(x * rstd) * silu(z))
 * with w fp32. Envelope: 2 <= K <= GDN_KMAX; for the step also dk <= GDN_STEP_ROWS,
 * (nv/nk) * dv <= GDN_STEP_COLS, nv/nk <= GDN_STEP_HEADS; a launch outside it traps. */
#include "common.cuh"
#include "gdn.h"

#define GDN_KMAX        8    /* conv taps a thread keeps in registers (servable: <= 8) */
#define GDN_CONV_UNROLL 4    /* tokens per k_gdn_conv loop trip: loads in flight */
#define GDN_STEP_ROWS   128  /* state rows a decode thread holds: dk / P */
#define GDN_STEP_COLS   1024 /* value columns of one key-head group: (nv / nk) * dv */
#define GDN_STEP_HEADS  64   /* value heads of one key-head group: nv / nk */
#define GDN_STEP_KQ     768  /* P * rs: rows of q, k regrouped by thread part (<= dk + 4 P) */

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

/* F.silu(conv) with both bf16 roundings of the torch fallback */
__device__ __forceinline__ float gdn_conv_act(float acc)
{
    return k_round_bf16(k_silu(k_round_bf16(acc)));
}

/* ---- k_gdn_conv ----------------------------------------------------------------------------- */

/* One channel over n tokens. KM >= K register slots, right-aligned: slot KM-1 is the current
 * token, slots KM-K .. KM-2 the K-1 inputs before it; slots left of those carry zero taps, so
 * every loop has compile-time bounds and the fmaf chain equals the K-tap one (a zero tap on a
 * finite input adds a signed zero to +0, which stays +0). */
template <int KM>
__device__ __forceinline__ void gdn_conv_channel(const struct k_gdn_conv_params &p, uint32_t c,
                                                 uint32_t n)
{
    const uint32_t K = p.d.kernel, cd = p.d.conv_dim;
    const __nv_bfloat16 *x = (const __nv_bfloat16 *)p.qkv + c;
    const __nv_bfloat16 *wc = (const __nv_bfloat16 *)p.conv_w + (size_t)c * K;
    __nv_bfloat16 *win = (__nv_bfloat16 *)p.window + (size_t)c * (K - 1);
    __nv_bfloat16 *out = (__nv_bfloat16 *)p.out + c;
    float w[KM], h[KM]; /* taps; h[KM-1] is a scratch slot for the current input */
#pragma unroll
    for (int s = 0; s < KM; s++) {
        int j = s - (KM - (int)K); /* tap / window index of slot s, < 0: unused */
        w[s] = j >= 0 ? k_bf2f(wc[j]) : 0.0f;
        h[s] = j >= 0 && s < KM - 1 ? k_bf2f(win[j]) : 0.0f;
    }
    for (uint32_t t0 = 0; t0 < n; t0 += GDN_CONV_UNROLL) {
        float xt[GDN_CONV_UNROLL];
#pragma unroll
        for (int i = 0; i < GDN_CONV_UNROLL; i++)
            xt[i] = t0 + i < n ? k_bf2f(x[(size_t)(t0 + i) * cd]) : 0.0f;
#pragma unroll
        for (int i = 0; i < GDN_CONV_UNROLL; i++) {
            if (t0 + i >= n)
                break;
            h[KM - 1] = xt[i];
            float acc = 0.0f;
#pragma unroll
            for (int s = 0; s < KM; s++)
                acc = fmaf(w[s], h[s], acc);
            out[(size_t)(t0 + i) * cd] = k_f2bf(gdn_conv_act(acc));
#pragma unroll
            for (int s = 0; s + 1 < KM; s++) /* slide: the current input joins the window */
                h[s] = h[s + 1];
        }
    }
#pragma unroll
    for (int s = 0; s + 1 < KM; s++) {
        int j = s - (KM - (int)K);
        if (j >= 0)
            win[j] = k_f2bf(h[s]);
    }
}

extern "C" __global__ void __launch_bounds__(128) k_gdn_conv(struct k_gdn_conv_params p)
{
    const struct k_step *st = k_step_of(p.step);
    uint32_t n = min(st->n_tokens, p.d.T_max);
    uint32_t c = blockIdx.x * blockDim.x + threadIdx.x;
    if (p.d.kernel < 2 || p.d.kernel > GDN_KMAX)
        __trap();
    if (c >= p.d.conv_dim || n == 0)
        return;
    if (p.d.kernel == 4)
        gdn_conv_channel<4>(p, c, n);
    else
        gdn_conv_channel<GDN_KMAX>(p, c, n);
}

/* ---- k_gdn_step ----------------------------------------------------------------------------- */

/* Shared memory of one decode CTA (static, < 48 KiB). */
struct gdn_step_smem {
    float q[GDN_STEP_ROWS], k[GDN_STEP_ROWS]; /* post-conv q, k */
    float __align__(16) qp[GDN_STEP_KQ];      /* q, k by thread part: row part + P m at */
    float __align__(16) kp[GDN_STEP_KQ];      /* part * rs + m, zero past dk */
    float v[GDN_STEP_COLS];                   /* post-conv values of the group's heads */
    float o[GDN_STEP_COLS];                   /* core output, rounded to bf16 */
    float part[2][K_GDN_THREADS];             /* per-thread partial dot products */
    float beta[GDN_STEP_HEADS], g[GDN_STEP_HEADS], rstd[GDN_STEP_HEADS];
    float ss[2]; /* sum of squares of q and k */
};

/* Decode conv of one channel: u = act(sum_j Wc[j] * [window; x][j]); the window slides in
 * place (slot j-1 takes slot j once j has been read), then takes x. */
__device__ __forceinline__ float gdn_conv_step(const struct k_gdn_step_params &p, uint32_t c)
{
    const uint32_t K = p.d.kernel;
    const __nv_bfloat16 *wc = (const __nv_bfloat16 *)p.conv_w + (size_t)c * K;
    __nv_bfloat16 *win = (__nv_bfloat16 *)p.window + (size_t)c * (K - 1);
    __nv_bfloat16 x = ((const __nv_bfloat16 *)p.qkv)[c];
    float acc = 0.0f;
    for (uint32_t j = 0; j + 1 < K; j++) {
        __nv_bfloat16 h = win[j];
        acc = fmaf(k_bf2f(wc[j]), k_bf2f(h), acc);
        if (j > 0)
            win[j - 1] = h;
    }
    acc = fmaf(k_bf2f(wc[K - 1]), k_bf2f(x), acc);
    win[K - 2] = x;
    return gdn_conv_act(acc);
}

/* Conv of the group's channels (q and k of key head hk, v of its value heads) into shared
 * memory; l2 norms of q and k, regrouped by thread part for gdn_step_state; the gates. */
__device__ void gdn_step_prologue(const struct k_gdn_step_params &p, struct gdn_step_smem &sm,
                                  uint32_t hk, uint32_t r, uint32_t P, uint32_t rs)
{
    const uint32_t dk = p.d.dk, kd = p.d.nk * dk, nc = r * p.d.dv, tid = threadIdx.x;
    for (uint32_t i = tid; i < 2 * dk + nc; i += blockDim.x) {
        if (i < dk)
            sm.q[i] = gdn_conv_step(p, hk * dk + i);
        else if (i < 2 * dk)
            sm.k[i - dk] = gdn_conv_step(p, kd + hk * dk + (i - dk));
        else
            sm.v[i - 2 * dk] = gdn_conv_step(p, 2 * kd + hk * nc + (i - 2 * dk));
    }
    __syncthreads();
    uint32_t warp = tid / 32, lane = tid % 32;
    if (warp < 2) { /* warp 0: sum q^2, warp 1: sum k^2 */
        const float *x = warp ? sm.k : sm.q;
        float s = 0.0f;
        for (uint32_t i = lane; i < dk; i += 32)
            s = fmaf(x[i], x[i], s);
        s = k_warp_sum(s);
        if (lane == 0)
            sm.ss[warp] = s;
    }
    for (uint32_t e = tid; e < r; e += blockDim.x) {
        uint32_t hv = hk * r + e;
        gdn_gates(((const __nv_bfloat16 *)p.b)[hv], ((const __nv_bfloat16 *)p.a)[hv],
                  ((const float *)p.a_log)[hv], ((const __nv_bfloat16 *)p.dt_bias)[hv], &sm.beta[e],
                  &sm.g[e]);
    }
    __syncthreads();
    /* l2norm: x * rsqrt(sum(x^2) + 1e-6); then q * dk^-0.5 */
    float rq = 1.0f / sqrtf(sm.ss[0] + 1e-6f), rk = 1.0f / sqrtf(sm.ss[1] + 1e-6f);
    float scale = 1.0f / sqrtf((float)dk);
    for (uint32_t x = tid; x < P * rs; x += blockDim.x) {
        uint32_t i = x / rs + P * (x % rs); /* row part + P m of slot part * rs + m */
        sm.qp[x] = i < dk ? sm.q[i] * rq * scale : 0.0f;
        sm.kp[x] = i < dk ? sm.k[i] * rk : 0.0f;
    }
    __syncthreads();
}

/* Sum of slot `col` over the P partials in part[w] (fixed order); ends with a barrier so the
 * slots can be reused. */
__device__ __forceinline__ float gdn_step_reduce(struct gdn_step_smem &sm, int w, float v,
                                                 uint32_t part, uint32_t lc, uint32_t P,
                                                 uint32_t cpp)
{
    sm.part[w][part * cpp + lc] = v;
    __syncthreads();
    float s = 0.0f;
    for (uint32_t i = 0; i < P; i++)
        s += sm.part[w][i * cpp + lc];
    return s;
}

/* The same pointer, hidden from the optimizer: the second sweep over a column recomputes its
 * row addresses instead of keeping the first sweep's (up to 128) alive, which would spill. */
template <typename T> __device__ __forceinline__ T *gdn_opaque(T *p)
{
    asm volatile("" : "+l"(p));
    return p;
}

/* The delta rule on the group's state columns: thread (part, lc) of pass `pass` owns column
 * col = pass * cpp + lc and rows part + P m (m < nr) of it, in registers; its k and q values
 * are the contiguous run kq[part * rs ..] (see gdn_step_prologue), read four at a time. */
__device__ void gdn_step_state(const struct k_gdn_step_params &p, struct gdn_step_smem &sm,
                               uint32_t hk, uint32_t r, uint32_t P, uint32_t rs)
{
    const uint32_t dk = p.d.dk, dv = p.d.dv, nc = r * dv;
    const uint32_t cpp = K_GDN_THREADS / P, part = threadIdx.x / cpp, lc = threadIdx.x % cpp;
    const uint32_t stride = P * dv;
    for (uint32_t col0 = 0; col0 < nc; col0 += cpp) {
        uint32_t col = col0 + lc, e = col / dv, j = col % dv;
        uint32_t nr = col < nc && part < dk ? (dk - part + P - 1) / P : 0; /* rows held */
        float *S = (float *)p.state + ((size_t)(hk * r + e) * dk + part) * dv + j;
        const float4 *kp = (const float4 *)(sm.kp + part * rs),
                     *qp = (const float4 *)(sm.qp + part * rs);
        float s[GDN_STEP_ROWS];
        float eg = nr ? expf(sm.g[e]) : 0.0f, kv = 0.0f;
        /* S = S * exp(g); kv_mem = S^T k */
#pragma unroll
        for (uint32_t m4 = 0; m4 < GDN_STEP_ROWS; m4 += 4) {
            float4 k4 = m4 < nr ? kp[m4 / 4] : make_float4(0.0f, 0.0f, 0.0f, 0.0f);
            const float kk[4] = {k4.x, k4.y, k4.z, k4.w};
#pragma unroll
            for (uint32_t x = 0; x < 4; x++) {
                s[m4 + x] = m4 + x < nr ? S[(m4 + x) * stride] * eg : 0.0f;
                kv = fmaf(s[m4 + x], kk[x], kv);
            }
        }
        kv = gdn_step_reduce(sm, 0, kv, part, lc, P, cpp);
        /* delta = (v - kv_mem) * beta; S += k delta^T; o = S^T q */
        float delta = nr ? (sm.v[col] - kv) * sm.beta[e] : 0.0f, o = 0.0f;
        S = gdn_opaque(S);
#pragma unroll
        for (uint32_t m4 = 0; m4 < GDN_STEP_ROWS; m4 += 4) {
            if (m4 < nr) {
                float4 k4 = kp[m4 / 4], q4 = qp[m4 / 4];
                const float kk[4] = {k4.x, k4.y, k4.z, k4.w}, qq[4] = {q4.x, q4.y, q4.z, q4.w};
#pragma unroll
                for (uint32_t x = 0; x < 4; x++) {
                    s[m4 + x] = fmaf(kk[x], delta, s[m4 + x]);
                    o = fmaf(s[m4 + x], qq[x], o);
                    if (m4 + x < nr)
                        S[(m4 + x) * stride] = s[m4 + x];
                }
            }
        }
        o = gdn_step_reduce(sm, 1, o, part, lc, P, cpp);
        if (nr && part == 0)
            sm.o[col] = k_round_bf16(o);
        __syncthreads(); /* the partial slots are rewritten by the next pass */
    }
}

/* Gated RMSNorm of the group's heads: out = bf16(w * bf16(o * rstd) * silu(z)). */
__device__ void gdn_step_gnorm(const struct k_gdn_step_params &p, struct gdn_step_smem &sm,
                               uint32_t hk, uint32_t r)
{
    const uint32_t dv = p.d.dv, nc = r * dv, tid = threadIdx.x;
    const uint32_t warp = tid / 32, lane = tid % 32, nw = blockDim.x / 32;
    __syncthreads();
    for (uint32_t e = warp; e < r; e += nw) {
        float s = 0.0f;
        for (uint32_t j = lane; j < dv; j += 32)
            s = fmaf(sm.o[e * dv + j], sm.o[e * dv + j], s);
        s = k_warp_sum(s);
        if (lane == 0)
            sm.rstd[e] = 1.0f / sqrtf(s / (float)dv + p.d.eps);
    }
    __syncthreads();
    const __nv_bfloat16 *z = (const __nv_bfloat16 *)p.z + (size_t)hk * nc;
    __nv_bfloat16 *out = (__nv_bfloat16 *)p.out + (size_t)hk * nc;
    const float *w = (const float *)p.norm_w;
    for (uint32_t col = tid; col < nc; col += blockDim.x) {
        float y = k_round_bf16(sm.o[col] * sm.rstd[col / dv]);
        out[col] = k_f2bf(w[col % dv] * y * k_silu(k_bf2f(z[col])));
    }
}

extern "C" __global__ void __launch_bounds__(K_GDN_THREADS) k_gdn_step(struct k_gdn_step_params p)
{
    __shared__ struct gdn_step_smem sm;
    const struct k_step *st = k_step_of(p.step);
    if (st->done)
        return;
    const uint32_t nk = p.d.nk, r = p.d.nv / nk, hk = blockIdx.x;
    if (blockDim.x != K_GDN_THREADS || p.d.dk > GDN_STEP_ROWS || r * p.d.dv > GDN_STEP_COLS ||
        r > GDN_STEP_HEADS || p.d.kernel < 2 || p.d.kernel > GDN_KMAX)
        __trap();
    if (hk >= nk) /* see the top of the file: one CTA per key head */
        return;
    uint32_t P = 1; /* threads per state column: fill the block, at most dk */
    while (2 * P * r * p.d.dv <= K_GDN_THREADS && 2 * P <= p.d.dk)
        P *= 2;
    const uint32_t rs = ((p.d.dk + P - 1) / P + 3) & ~3u; /* rows a thread holds, padded */
    if (rs > GDN_STEP_ROWS || P * rs > GDN_STEP_KQ)
        __trap();
    gdn_step_prologue(p, sm, hk, r, P, rs);
    gdn_step_state(p, sm, hk, r, P, rs);
    gdn_step_gnorm(p, sm, hk, r);
}
