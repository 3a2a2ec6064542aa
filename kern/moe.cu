/* moe.cu — the sparse MoE block's router and its decode path (MODEL.md §2.4, DESIGN.md §5).
 *
 *   k_router          logits = h W_r^T (E rows) and the shared-gate logit h . w_sg, kept in fp32
 *                     (transformers rounds them to bf16; routing from unrounded logits follows
 *                     the float32 model's expert choice more often, the one it is judged by);
 *                     p = softmax(fp32 logits); top-k by p, descending, ties to the lower id;
 *                     weights = p_sel / sum(p_sel) in fp32; shared_gate = sigmoid(logit) fp32.
 *                     grid (T_max), block K_ROUTER_THREADS: one CTA per token. With logits
 *                     from a GEMV (what plans do) and E <= 256, warp 0 alone: softmax and
 *                     k rounds of a warp argmax from registers; else one warp per logit row
 *                     and the top-k in warp 0 from shared memory.
 *   k_moe_up_bf16/i4  slot s < k: expert ids[s]; slot k: the shared expert (when S > 0).
 *                     act[s, i] = bf16(bf16(silu(bf16(gate_i . h))) * bf16(up_i . h))
 *                     grid (k + (S > 0), ceil(max(I, S) / K_MOE_ROWS)), block K_MOE_THREADS:
 *                     one warp per output i, the gate and up rows streamed side by side.
 *   k_moe_down_bf16/i4
 *                     y_s = bf16(down_s[n] . act[s]); routed = bf16(sum_s bf16(y_s * bf16(w_s)))
 *                     in fp32 with one rounding (the grouped_mm convention); then
 *                     out[n] = bf16(routed + bf16(bf16(gate) * y_shared)).
 *                     grid (ceil(H / K_MOE_ROWS)), block K_MOE_THREADS: one warp per output n
 *                     walks the k + 1 rows n of its slots.
 *
 * The router writes fp32 routing weights and the fp32 sigmoid gate; both are rounded to bf16
 * where they are used (here in k_moe_down, in kern/moe_prefill.cu in k_moe_gemm_down and
 * k_moe_combine), which is PyTorch's `routing_weights.to(bf16)` and the bf16 sigmoid output.
 *
 * Layouts. gate_up (E, 2I, H): rows 0..I-1 of an expert are gate, I..2I-1 up; down (E, H, I);
 * the shared expert's gate_proj, up_proj (S, H) and down_proj (H, S) are separate tensors.
 * bf16 rows are row-major; INT4 rows follow K_LAYOUT_I4_ROWS (kern/quant.h): K/2 bytes of
 * nibbles per row, the E stacked matrices back to back, then every row's K/group bf16 scales
 * at the tensor's scales offset, value = scale * (q - 8) computed exactly in fp32. act is
 * (k + 1, max(I, S)) bf16, one row per slot.
 *
 * Loads: a lane reads 16 bytes per step (8 bf16 or 32 nibbles), weights through the
 * non-allocating path so they do not evict h and act from L1. bf16 rows whose length or base
 * is not 16-byte aligned fall back to element loads (the planner's servable() rules those out;
 * the fallback keeps odd test shapes exact). An INT4 row's 32-weight chunk lies in one group.
 *
 * Rows: a decode schedule (T_max = 1) has its one row live, a prefill chunk step->n_tokens.
 * Every kernel returns at once when step->done is set. Limits: E <= MOE_ROUTER_MAX_E,
 * k <= 32 (the planner allows 16). */
#ifndef K_MOE_CU
#define K_MOE_CU /* kern/moe_prefill.cu includes this file for the shared helpers */

#include "common.cuh"
#include "moe.h"
#include "quant.h"

#define MOE_ROUTER_MAX_E 1024
#define MOE_ROUTER_WARP_E 256 /* experts moe_topk_warp holds in registers (K_MOE_G128_ROUTES) */

/* ---- loads and bf16 lanes ------------------------------------------------------------------- */

__device__ __forceinline__ uint4 moe_ld_ro(const void *p)
{
    return __ldg((const uint4 *)p);
}

/* the two bf16 halves of a word as floats; element 0 is the low half */
__device__ __forceinline__ float moe_lo(uint32_t u)
{
    return __uint_as_float(u << 16);
}
__device__ __forceinline__ float moe_hi(uint32_t u)
{
    return __uint_as_float(u & 0xFFFF0000u);
}

/* acc + sum of the 8 products of two 8 x bf16 vectors */
__device__ __forceinline__ float moe_fma8(uint4 a, uint4 b, float acc)
{
    const uint32_t wa[4] = {a.x, a.y, a.z, a.w}, wb[4] = {b.x, b.y, b.z, b.w};
#pragma unroll
    for (int j = 0; j < 4; j++) {
        acc = fmaf(moe_lo(wa[j]), moe_lo(wb[j]), acc);
        acc = fmaf(moe_hi(wa[j]), moe_hi(wb[j]), acc);
    }
    return acc;
}

__device__ __forceinline__ int moe_aligned16(const void *p)
{
    return ((uintptr_t)p & 15) == 0;
}

/* ---- INT4 ------------------------------------------------------------------------------------ */

/* Elements (2p, 2p+1) of a nibble word shifted right by 4p, as q - 8 in fp32. The word holds
 * elements [0 2 4 6 1 3 5 7] from the low nibble up, so the mask 0x000F000F picks the pair
 * into the low mantissa bits of two bf16 halves; OR-ing the exponent of 128 gives 128 + q
 * exactly, and one bf16x2 subtraction of 136 gives q - 8 (exact: small integers). */
__device__ __forceinline__ float2 moe_i4_pair(uint32_t w)
{
    uint32_t v = (w & 0x000F000Fu) | 0x43004300u;
    const uint32_t c136 = 0x43084308u; /* bf16 136.0 twice */
    __nv_bfloat162 b = __hsub2(*reinterpret_cast<const __nv_bfloat162 *>(&v),
                               *reinterpret_cast<const __nv_bfloat162 *>(&c136));
    return __bfloat1622float2(b);
}

/* acc + sum over 32 weights (one 16-byte nibble chunk) of (q - 8) * x, x as 4 x 8 bf16 */
__device__ __forceinline__ float moe_i4_fma32(uint4 w, const uint4 *x, float acc)
{
    const uint32_t ww[4] = {w.x, w.y, w.z, w.w};
#pragma unroll
    for (int j = 0; j < 4; j++) {
        const uint32_t xw[4] = {x[j].x, x[j].y, x[j].z, x[j].w};
#pragma unroll
        for (int p = 0; p < 4; p++) {
            float2 q = moe_i4_pair(ww[j] >> (4 * p));
            acc = fmaf(q.x, moe_lo(xw[p]), acc);
            acc = fmaf(q.y, moe_hi(xw[p]), acc);
        }
    }
    return acc;
}

/* ---- one warp, one or two weight rows against a bf16 vector ------------------------------- */

/* A weight row: bf16 elements, or INT4 nibbles with their row of bf16 group scales. */
struct moe_row {
    const void *w;
    const uint16_t *scales;
};

/* Row `r` of a (rows, K) matrix at base (INT4: scales at base + scales_offset). */
template <bool I4>
__device__ __forceinline__ struct moe_row moe_row_of(uint64_t base, uint64_t scales_offset,
                                                     uint64_t r, uint32_t K, uint32_t group)
{
    struct moe_row row;
    if constexpr (I4) {
        row.w = (const uint8_t *)base + r * (K / 2);
        row.scales = (const uint16_t *)(base + scales_offset) + r * (K / group);
    } else {
        row.w = (const uint16_t *)base + r * K;
        row.scales = nullptr;
    }
    return row;
}

/* sum_j W[j] x[j] over K for one bf16 row; every lane gets the sum */
__device__ __forceinline__ float moe_dot_bf16(const uint16_t *w, const uint16_t *x, uint32_t K,
                                              uint32_t lane)
{
    float acc = 0.0f;
    if (K % 8 == 0 && moe_aligned16(w) && moe_aligned16(x)) {
#pragma unroll 2
        for (uint32_t j = lane * 8; j < K; j += 256)
            acc = moe_fma8(k_ld_stream(w + j), moe_ld_ro(x + j), acc);
    } else {
        for (uint32_t j = lane; j < K; j += 32)
            acc = fmaf(k_bfbits2f(w[j]), k_bfbits2f(x[j]), acc);
    }
    return k_warp_sum(acc);
}

/* the same over an INT4 row: per 32-weight chunk, scale * sum (q - 8) x */
__device__ __forceinline__ float moe_dot_i4(struct moe_row r, const uint16_t *x, uint32_t K,
                                            uint32_t group, uint32_t lane)
{
    float acc = 0.0f;
    const uint8_t *q = (const uint8_t *)r.w;
    for (uint32_t c = lane; c < K / 32; c += 32) {
        uint4 xv[4];
#pragma unroll
        for (int j = 0; j < 4; j++)
            xv[j] = moe_ld_ro(x + c * 32 + j * 8);
        float s = k_bfbits2f(__ldg(r.scales + c * 32 / group));
        acc = fmaf(s, moe_i4_fma32(k_ld_stream(q + c * 16), xv, 0.0f), acc);
    }
    return k_warp_sum(acc);
}

template <bool I4>
__device__ __forceinline__ float moe_dot(struct moe_row r, const uint16_t *x, uint32_t K,
                                         uint32_t group, uint32_t lane)
{
    if constexpr (I4)
        return moe_dot_i4(r, x, K, group, lane);
    else
        return moe_dot_bf16((const uint16_t *)r.w, x, K, lane);
}

/* Two rows against the same x (gate and up): x is loaded once for both. */
template <bool I4>
__device__ __forceinline__ float2 moe_dot2(struct moe_row a, struct moe_row b, const uint16_t *x,
                                           uint32_t K, uint32_t group, uint32_t lane)
{
    float sa = 0.0f, sb = 0.0f;
    if constexpr (I4) {
        const uint8_t *qa = (const uint8_t *)a.w, *qb = (const uint8_t *)b.w;
#pragma unroll 2 /* both chunks of a 2048-wide row in flight before either is used */
        for (uint32_t c = lane; c < K / 32; c += 32) {
            uint4 xv[4];
#pragma unroll
            for (int j = 0; j < 4; j++)
                xv[j] = moe_ld_ro(x + c * 32 + j * 8);
            uint4 wa = k_ld_stream(qa + c * 16), wb = k_ld_stream(qb + c * 16);
            uint32_t gi = c * 32 / group;
            sa = fmaf(k_bfbits2f(__ldg(a.scales + gi)), moe_i4_fma32(wa, xv, 0.0f), sa);
            sb = fmaf(k_bfbits2f(__ldg(b.scales + gi)), moe_i4_fma32(wb, xv, 0.0f), sb);
        }
        return make_float2(k_warp_sum(sa), k_warp_sum(sb));
    }
    const uint16_t *wa = (const uint16_t *)a.w, *wb = (const uint16_t *)b.w;
    if (K % 8 == 0 && moe_aligned16(wa) && moe_aligned16(wb) && moe_aligned16(x)) {
#pragma unroll 2
        for (uint32_t j = lane * 8; j < K; j += 256) {
            uint4 xv = moe_ld_ro(x + j);
            sa = moe_fma8(k_ld_stream(wa + j), xv, sa);
            sb = moe_fma8(k_ld_stream(wb + j), xv, sb);
        }
        return make_float2(k_warp_sum(sa), k_warp_sum(sb));
    }
    return make_float2(moe_dot_bf16(wa, x, K, lane), moe_dot_bf16(wb, x, K, lane));
}

/* ---- k_router ------------------------------------------------------------------------------ */

/* Rows of a launch that carry tokens: decode has one, a prefill chunk step->n_tokens. */
__device__ __forceinline__ uint32_t moe_live_rows(const struct k_step *st, uint32_t T_max)
{
    return T_max == 1 ? 1 : min(st->n_tokens, T_max);
}

/* Warp 0: the k largest of p[0..E) (descending, ties to the lower id), renormalised. p is
 * consumed (taken entries become -1; probabilities are >= 0). Lane j keeps selection j. */
__device__ __forceinline__ void moe_router_topk(float *p, uint32_t E, uint32_t k, int32_t *ids,
                                                float *weights, uint32_t lane)
{
    float mine = 0.0f;
    uint32_t mine_id = 0;
    for (uint32_t j = 0; j < k; j++) {
        float best = -2.0f;
        uint32_t bi = 0xFFFFFFFFu;
        for (uint32_t e = lane; e < E; e += 32) /* ascending ids: strict > keeps the lower */
            if (p[e] > best)
                best = p[e], bi = e;
        for (int o = 16; o > 0; o >>= 1) {
            float ov = __shfl_xor_sync(0xFFFFFFFFu, best, o);
            uint32_t oi = __shfl_xor_sync(0xFFFFFFFFu, bi, o);
            if (ov > best || (ov == best && oi < bi))
                best = ov, bi = oi;
        }
        if (lane == j)
            mine = best, mine_id = bi;
        __syncwarp();
        if (lane == 0)
            p[bi] = -1.0f;
        __syncwarp();
    }
    /* routing_weights /= routing_weights.sum(dim=-1, keepdim=True), fp32 */
    float sum = k_warp_sum(lane < k ? mine : 0.0f);
    if (lane < k) {
        ids[lane] = (int32_t)mine_id;
        weights[lane] = mine / sum;
    }
}

/* One warp, the (E + 1) fp32 logits lg a GEMV made (the shared gate's last): softmax, the
 * top-k by probability (descending, ties to the lower id, as moe_router_topk) and their
 * renormalised weights, from registers (lane l holds experts l, l + 32, ...; E <=
 * MOE_ROUTER_WARP_E). Lane j < k gets selection j in *id, *w. The block-wide k_router took
 * ~9 us a token, this a few. */
__device__ __forceinline__ void moe_topk_warp(const float *lg, uint32_t E, uint32_t k, uint32_t lane,
                                              uint32_t *id, float *w)
{
    constexpr int PL = MOE_ROUTER_WARP_E / 32;
    float v[PL];
    float mx = -INFINITY;
#pragma unroll
    for (int j = 0; j < PL; j++) {
        const uint32_t e = lane + 32 * j;
        v[j] = e < E ? lg[e] : -INFINITY;
        mx = fmaxf(mx, v[j]);
    }
    mx = k_warp_max(mx); /* p = softmax(float32(logits)) */
    float sum = 0.0f;
#pragma unroll
    for (int j = 0; j < PL; j++) {
        const uint32_t e = lane + 32 * j;
        v[j] = e < E ? expf(v[j] - mx) : 0.0f;
        sum += v[j];
    }
    sum = k_warp_sum(sum);
#pragma unroll
    for (int j = 0; j < PL; j++)
        v[j] = v[j] / sum;
    /* k rounds of a warp argmax on keys: a probability p >= 0 as its bits + 1 (ordered like p),
     * 0 for a taken entry or one past E. One redux finds the largest key, a second the lowest
     * id holding it (ties to the lower id); the owner takes it out. */
    uint32_t key[PL];
#pragma unroll
    for (int j = 0; j < PL; j++)
        key[j] = lane + 32 * j < E ? __float_as_uint(v[j]) + 1u : 0u;
    float mine = 0.0f;
    uint32_t mine_id = 0;
    for (uint32_t r = 0; r < k; r++) {
        uint32_t best = 0, bj = 0;
#pragma unroll
        for (int j = 0; j < PL; j++) /* ascending ids: strict > keeps the lower */
            if (key[j] > best)
                best = key[j], bj = j;
        const uint32_t top = __reduce_max_sync(0xFFFFFFFFu, best);
        const uint32_t bi = __reduce_min_sync(0xFFFFFFFFu, best == top ? lane + 32 * bj : 0xFFFFFFFFu);
        if (lane == r)
            mine = __uint_as_float(top - 1u), mine_id = bi;
        if ((bi & 31) == lane) /* the owner takes it out */
#pragma unroll
            for (int j = 0; j < PL; j++)
                if (bi == lane + 32 * j)
                    key[j] = 0;
    }
    /* routing_weights /= routing_weights.sum(dim=-1, keepdim=True), fp32 */
    float ws = k_warp_sum(lane < k ? mine : 0.0f);
    *id = mine_id, *w = mine / ws;
}

/* k_router's form for logits from a GEMV: warp 0 of the token's CTA. */
__device__ __forceinline__ void moe_router_warp(const struct k_router_params &p, uint32_t t, uint32_t lane)
{
    const uint32_t E = p.d.E, k = p.d.k;
    const float *lg = (const float *)p.logits + (uint64_t)t * (E + 1);
    uint32_t id;
    float w;
    moe_topk_warp(lg, E, k, lane, &id, &w);
    if (lane < k) {
        ((int32_t *)p.ids)[(uint64_t)t * k + lane] = (int32_t)id;
        ((float *)p.weights)[(uint64_t)t * k + lane] = w;
    }
    /* sigmoid(h @ shared_expert_gate^T): the logit is a bf16 matmul output */
    if (lane == 0 && p.shared_gate)
        ((float *)p.shared_gate)[t] = p.w_shared ? k_sigmoid(lg[E]) : 0.0f;
}

extern "C" __global__ void __launch_bounds__(K_ROUTER_THREADS) k_router(struct k_router_params p)
{
    k_pdl_enter();
    __shared__ float s_p[MOE_ROUTER_MAX_E];
    __shared__ float s_red[32];
    __shared__ float s_gate;
    const struct k_step *st = k_step_of(p.step);
    const uint32_t t = blockIdx.x, E = p.d.E, H = p.d.H, k = p.d.k;
    if (st->done || t >= moe_live_rows(st, p.d.T_max) || E > MOE_ROUTER_MAX_E)
        return;
    const uint32_t lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nw = blockDim.x >> 5;
    const uint16_t *h = (const uint16_t *)p.h + (uint64_t)t * H;
    if (p.logits && E <= MOE_ROUTER_WARP_E) {
        if (warp == 0)
            moe_router_warp(p, t, lane);
        return;
    }

    /* logits = h @ gate.weight^T in fp32 (not rounded: see the top of the file), or read from
     * the GEMV that made them */
    const uint32_t rows = E + (p.w_shared ? 1 : 0);
    if (p.logits) {
        const float *lg = (const float *)p.logits + (uint64_t)t * (E + 1);
        for (uint32_t r = threadIdx.x; r < rows; r += blockDim.x) {
            if (r < E)
                s_p[r] = lg[r];
            else
                s_gate = lg[E];
        }
    }
    for (uint32_t r = warp; r < rows && !p.logits; r += nw) {
        const uint16_t *w =
            r < E ? (const uint16_t *)p.w + (uint64_t)r * H : (const uint16_t *)p.w_shared;
        float l = moe_dot_bf16(w, h, H, lane);
        if (lane == 0) {
            if (r < E)
                s_p[r] = l;
            else
                s_gate = l;
        }
    }
    __syncthreads();

    /* p = softmax(float32(logits)) */
    float mx = -INFINITY;
    for (uint32_t e = threadIdx.x; e < E; e += blockDim.x)
        mx = fmaxf(mx, s_p[e]);
    mx = k_block_max(mx, s_red);
    float sum = 0.0f;
    for (uint32_t e = threadIdx.x; e < E; e += blockDim.x) {
        float v = expf(s_p[e] - mx);
        s_p[e] = v;
        sum += v;
    }
    sum = k_block_sum(sum, s_red);
    for (uint32_t e = threadIdx.x; e < E; e += blockDim.x)
        s_p[e] = s_p[e] / sum;
    __syncthreads();

    if (warp == 0)
        moe_router_topk(s_p, E, k, (int32_t *)p.ids + (uint64_t)t * k,
                        (float *)p.weights + (uint64_t)t * k, lane);
    /* sigmoid(h @ shared_expert_gate^T): the logit is a bf16 matmul output */
    if (threadIdx.x == 0 && p.shared_gate)
        ((float *)p.shared_gate)[t] = p.w_shared ? k_sigmoid(s_gate) : 0.0f;
}

/* ---- k_moe_up ------------------------------------------------------------------------------ */

template <bool I4> __device__ __forceinline__ void moe_up(const struct k_moe_vec_params &p)
{
    const struct k_step *st = k_step_of(p.step);
    const uint32_t k = p.d.k, H = p.d.H, I = p.d.I, S = p.d.S, wmax = max(I, S), g = p.d.group;
    const uint32_t s = blockIdx.x, lane = threadIdx.x & 31;
    const uint32_t i = blockIdx.y * K_MOE_ROWS + (threadIdx.x >> 5);
    const bool shared = s == k;
    if (st->done || s > k || i >= (shared ? S : I))
        return;
    struct moe_row rg, ru;
    if (shared) {
        rg = moe_row_of<I4>(p.sh_gate, p.sh_gate_scales, i, H, g);
        ru = moe_row_of<I4>(p.sh_up, p.sh_up_scales, i, H, g);
    } else {
        uint64_t e = (uint32_t)((const int32_t *)p.ids)[s];
        rg = moe_row_of<I4>(p.gate_up, p.gate_up_scales, e * 2 * I + i, H, g);
        ru = moe_row_of<I4>(p.gate_up, p.gate_up_scales, e * 2 * I + I + i, H, g);
    }
    float2 gu = moe_dot2<I4>(rg, ru, (const uint16_t *)p.h, H, g, lane);
    /* act_fn(gate) * up on bf16 tensors: gate, up, silu and the product each round */
    float a = k_round_bf16(k_silu(k_round_bf16(gu.x))) * k_round_bf16(gu.y);
    if (lane == 0)
        ((__nv_bfloat16 *)p.act)[(uint64_t)s * wmax + i] = k_f2bf(a);
}

extern "C" __global__ void __launch_bounds__(K_MOE_THREADS) k_moe_up_bf16(struct k_moe_vec_params p)
{
    k_pdl_enter();
    moe_up<false>(p);
}

extern "C" __global__ void __launch_bounds__(K_MOE_THREADS) k_moe_up_i4(struct k_moe_vec_params p)
{
    k_pdl_enter();
    moe_up<true>(p);
}

/* ---- k_moe_down ---------------------------------------------------------------------------- */

/* The INT4 down projection of one output row n with every segment's load in flight at once:
 * segment s (expert slot s < k, the shared expert at s = k) goes to half-warp s % 2 in round
 * s / 2, one 32-weight chunk per lane (I, S <= 512), so a row's 9 x 256 bytes are requested
 * before any is used (the one-segment-at-a-time loop waits on each). Each half-warp finishes
 * its dot product with the same xor tree as a whole warp over one chunk per lane, and lane 0
 * accumulates the slots in order: the result is bit-identical to the general path. */
#define MOE_DOWN_ROUNDS 5 /* up to 10 segments: k <= 9 routed experts + the shared one */

__device__ __forceinline__ int moe_down_fast_ok(const struct k_moe_dims &d)
{
    return d.group >= 32 && d.I % 32 == 0 && d.I <= 512 && (d.S == 0 || (d.S % 32 == 0 && d.S <= 512)) &&
           d.k + (d.S ? 1 : 0) <= 2 * MOE_DOWN_ROUNDS;
}

__device__ __forceinline__ void moe_down_i4_fast(const struct k_moe_vec_params &p, uint32_t n, uint32_t lane)
{
    const uint32_t k = p.d.k, H = p.d.H, I = p.d.I, S = p.d.S, wmax = max(I, S), g = p.d.group;
    const uint32_t half = lane >> 4, hl = lane & 15, nseg = k + (S ? 1 : 0);
    const int32_t *ids = (const int32_t *)p.ids;
    const float *wts = (const float *)p.weights;
    const uint16_t *act = (const uint16_t *)p.act;
    uint4 q[MOE_DOWN_ROUNDS];
    float sc[MOE_DOWN_ROUNDS];
#pragma unroll
    for (int j = 0; j < MOE_DOWN_ROUNDS; j++) {
        const uint32_t s = 2 * j + half;
        const bool sh = S && s == k;
        q[j] = make_uint4(0, 0, 0, 0), sc[j] = 0.0f;
        if (s < nseg && hl * 32 < (sh ? S : I)) {
            struct moe_row r = sh ? moe_row_of<true>(p.sh_down, p.sh_down_scales, n, S, g)
                                  : moe_row_of<true>(p.down, p.down_scales,
                                                     (uint64_t)(uint32_t)ids[s] * H + n, I, g);
            q[j] = k_ld_stream((const uint8_t *)r.w + hl * 16);
            sc[j] = k_bfbits2f(__ldg(r.scales + hl * 32 / g));
        }
    }
    float acc = 0.0f, ys = 0.0f;
#pragma unroll
    for (int j = 0; j < MOE_DOWN_ROUNDS; j++) {
        const uint32_t s = 2 * j + half;
        float part = 0.0f;
        if (s < nseg && hl * 32 < (S && s == k ? S : I)) {
            uint4 xv[4];
            const uint16_t *x = act + (uint64_t)s * wmax + hl * 32;
#pragma unroll
            for (int i = 0; i < 4; i++)
                xv[i] = moe_ld_ro(x + 8 * i);
            part = fmaf(sc[j], moe_i4_fma32(q[j], xv, 0.0f), 0.0f);
        }
        for (int o = 8; o > 0; o >>= 1)
            part += __shfl_xor_sync(0xFFFFFFFFu, part, o);
        const float other = __shfl_sync(0xFFFFFFFFu, part, 16);
        if (lane == 0)
            for (uint32_t h = 0; h < 2; h++) {
                const uint32_t t = 2 * j + h;
                const float y = k_round_bf16(h ? other : part);
                if (t < k) /* routed = sum_k bf16(y_k * bf16(w_k)), fp32, in slot order */
                    acc += k_round_bf16(y * k_round_bf16(wts[t]));
                else if (t == k && S)
                    ys = y;
            }
    }
    if (lane)
        return;
    float out = k_round_bf16(acc);
    if (S) { /* out = routed + bf16(sigmoid gate * bf16(shared down)) */
        float gate = k_round_bf16(((const float *)p.shared_gate)[0]);
        out = k_round_bf16(out + k_round_bf16(gate * ys));
    }
    ((__nv_bfloat16 *)p.out)[n] = k_f2bf(out);
}

template <bool I4> __device__ __forceinline__ void moe_down(const struct k_moe_vec_params &p)
{
    const struct k_step *st = k_step_of(p.step);
    const uint32_t k = p.d.k, H = p.d.H, I = p.d.I, S = p.d.S, wmax = max(I, S), g = p.d.group;
    const uint32_t lane = threadIdx.x & 31, n = blockIdx.x * K_MOE_ROWS + (threadIdx.x >> 5);
    if (st->done || n >= H)
        return;
    if (I4 && moe_down_fast_ok(p.d)) {
        moe_down_i4_fast(p, n, lane);
        return;
    }
    const int32_t *ids = (const int32_t *)p.ids;
    const float *wts = (const float *)p.weights;
    const uint16_t *act = (const uint16_t *)p.act;
    /* routed = sum_k bf16(y_k * bf16(w_k)), fp32 accumulator, one rounding */
    float acc = 0.0f;
    for (uint32_t s = 0; s < k; s++) {
        uint64_t e = (uint32_t)ids[s];
        struct moe_row r = moe_row_of<I4>(p.down, p.down_scales, e * H + n, I, g);
        float y = k_round_bf16(moe_dot<I4>(r, act + (uint64_t)s * wmax, I, g, lane));
        acc += k_round_bf16(y * k_round_bf16(wts[s]));
    }
    float out = k_round_bf16(acc);
    if (S) { /* out = routed + bf16(sigmoid gate * bf16(shared down)) */
        struct moe_row r = moe_row_of<I4>(p.sh_down, p.sh_down_scales, n, S, g);
        float ys = k_round_bf16(moe_dot<I4>(r, act + (uint64_t)k * wmax, S, g, lane));
        float gate = k_round_bf16(((const float *)p.shared_gate)[0]);
        out = k_round_bf16(out + k_round_bf16(gate * ys));
    }
    if (lane == 0)
        ((__nv_bfloat16 *)p.out)[n] = k_f2bf(out);
}

extern "C" __global__ void __launch_bounds__(K_MOE_THREADS)
    k_moe_down_bf16(struct k_moe_vec_params p)
{
    k_pdl_enter();
    moe_down<false>(p);
}

extern "C" __global__ void __launch_bounds__(K_MOE_THREADS) k_moe_down_i4(struct k_moe_vec_params p)
{
    k_pdl_enter();
    moe_down<true>(p);
}

/* Warp 0 of a g128 decode CTA that routes itself (K_MOE_G128_ROUTES): k_router's softmax and
 * top-k on the logits, the slots' expert ids and weights and the shared gate's sigmoid into
 * shared memory. */
__device__ __forceinline__ void moe_route_smem(const struct k_moe_vec_params &p, uint32_t lane,
                                               int32_t *s_ids, float *s_w, float *s_gate)
{
    uint32_t id;
    float w;
    const float *lg = (const float *)p.logits;
    moe_topk_warp(lg, p.d.E, p.d.k, lane, &id, &w);
    if (lane < p.d.k)
        s_ids[lane] = (int32_t)id, s_w[lane] = w;
    if (lane == 0)
        *s_gate = p.d.S ? k_sigmoid(lg[p.d.E]) : 0.0f;
}

/* ---- k_moe_up_g128, k_moe_down_g128 (INT4 group 128, tensor cores) ----------------------- */

#define MOE_G128_WARPS K_G128_WARPS
static_assert(K_MOE_G128_THREADS == 32 * K_G128_WARPS, "k_g128_run splits groups over 4 warps");

/* Row r of an INT4 (rows, K) matrix for lane t: its 16 bytes of group 0, its group scales. */
__device__ __forceinline__ void moe_g128_row(uint64_t base, uint64_t scales_offset, uint64_t r, uint32_t K,
                                             uint32_t t, const uint8_t **w, const uint16_t **sc)
{
    *w = (const uint8_t *)base + r * (K / 2) + 16 * t;
    *sc = (const uint16_t *)(base + scales_offset) + r * (K / 128);
}

extern "C" __global__ void __launch_bounds__(K_MOE_G128_THREADS) k_moe_up_g128(struct k_moe_vec_params p)
{
    K_TRACE_BEGIN();
    __shared__ __align__(16) uint16_t xs[K_MOE_G128_MAXH];
    __shared__ float red[MOE_G128_WARPS][16];
    const uint32_t k = p.d.k, H = p.d.H, I = p.d.I, S = p.d.S, wmax = max(I, S);
    const uint32_t s = blockIdx.x, i0 = blockIdx.y * K_MOE_G128_UP_ROWS;
    const bool shared = s == k;
    const uint32_t width = shared ? S : I;
    if (s > k || i0 >= width) { /* uniform over the CTA */
        k_pdl_enter();
        return;
    }
    if (blockDim.x != K_MOE_G128_THREADS || !K_MOE_G128_OK(p.d))
        __trap();
    if (p.norm_w) /* the folded post-attention norm: its inputs are older than the kernel ahead */
        k_norm_stage(xs, (const uint16_t *)p.h, (const uint16_t *)p.x_add, (const uint16_t *)p.norm_w,
                     p.norm_eps, H, &red[0][0]);
    k_pdl_enter();
    const struct k_step *st = k_step_of(p.step);
    if (st->done)
        return;
    const uint32_t lane = threadIdx.x & 31, warp = threadIdx.x >> 5, g = lane >> 2, t = lane & 3;
    const uint32_t i = min(i0 + g, width - 1), nch = H / 128; /* past the width: any live row */
    __shared__ uint32_t s_e;
    if (!shared && p.logits) { /* route: the logits come from the kernel ahead */
        if (warp == 0) {
            uint32_t id;
            float w;
            moe_topk_warp((const float *)p.logits, p.d.E, k, lane, &id, &w);
            if (lane == s)
                s_e = id;
        }
        __syncthreads();
    }
    K_TRACE_MARK();
    struct k_g128_pair r;
    if (shared) {
        moe_g128_row(p.sh_gate, p.sh_gate_scales, i, H, t, &r.wa, &r.sa);
        moe_g128_row(p.sh_up, p.sh_up_scales, i, H, t, &r.wb, &r.sb);
    } else {
        const uint64_t e = p.logits ? s_e : (uint32_t)((const int32_t *)p.ids)[s];
        moe_g128_row(p.gate_up, p.gate_up_scales, e * 2 * I + i, H, t, &r.wa, &r.sa);
        moe_g128_row(p.gate_up, p.gate_up_scales, e * 2 * I + I + i, H, t, &r.wb, &r.sb);
    }
    struct k_g128_acc A;
    k_g128_load(A, r, warp, nch);
    if (!p.norm_w) {
        for (uint32_t j = threadIdx.x * 8; j < H; j += K_MOE_G128_THREADS * 8)
            *(uint4 *)(xs + j) = moe_ld_ro((const uint16_t *)p.h + j);
        __syncthreads();
    }
    k_g128_run(A, r, xs, nch, warp, t);
    if (t == 0)
        red[warp][g] = A.a, red[warp][g + 8] = A.b;
    __syncthreads();
    if (warp == 0 && lane < K_MOE_G128_UP_ROWS && i0 + lane < width) {
        float gate = 0.0f, up = 0.0f;
#pragma unroll
        for (int w = 0; w < MOE_G128_WARPS; w++) /* fixed order: deterministic */
            gate += red[w][lane], up += red[w][lane + 8];
        /* act_fn(gate) * up on bf16 tensors: gate, up, silu and the product each round */
        float a = k_round_bf16(k_silu(k_round_bf16(gate))) * k_round_bf16(up);
        ((__nv_bfloat16 *)p.act)[(uint64_t)s * wmax + i0 + lane] = k_f2bf(a);
    }
    K_TRACE_END();
}

__device__ __forceinline__ float moe_down_g128_row(const struct k_moe_vec_params &p, uint32_t n,
                                                   const float (&red)[MOE_G128_WARPS][K_MOE_G128_MAXSEG][16],
                                                   uint32_t lane, const float *s_w, float s_gate);
__device__ __forceinline__ void moe_down_g128_next_norm(const struct k_moe_vec_params &p, float sq,
                                                        float *scratch);

extern "C" __global__ void __launch_bounds__(K_MOE_G128_THREADS) k_moe_down_g128(struct k_moe_vec_params p)
{
    K_TRACE_BEGIN();
    __shared__ __align__(16) uint16_t xs[K_MOE_G128_MAXACT];
    __shared__ float red[MOE_G128_WARPS][K_MOE_G128_MAXSEG][16];
    const uint32_t k = p.d.k, H = p.d.H, I = p.d.I, S = p.d.S, wmax = max(I, S);
    const uint32_t n0 = blockIdx.x * K_MOE_G128_DOWN_ROWS, nseg = k + (S ? 1 : 0);
    if (n0 >= H)
        return;
    if (blockDim.x != K_MOE_G128_THREADS || !K_MOE_G128_OK(p.d))
        __trap();
    const uint32_t lane = threadIdx.x & 31, warp = threadIdx.x >> 5, g = lane >> 2, t = lane & 3;
    const uint32_t na = min(n0 + g, H - 1), nb = min(n0 + g + 8, H - 1);
    const int32_t *ids = (const int32_t *)p.ids;
    /* with logits: route before the wait (they come from the GEMV two launches back, complete
     * by then; with step->done they may be any bytes, and the ids are clamped below) */
    __shared__ int32_t s_ids[K_MOE_G128_MAXSEG];
    __shared__ float s_w[K_MOE_G128_MAXSEG], s_gate;
    if (p.logits) {
        if (warp == 0)
            moe_route_smem(p, lane, s_ids, s_w, &s_gate);
        __syncthreads();
        ids = s_ids;
    }
    float acc_a[K_MOE_G128_MAXSEG], acc_b[K_MOE_G128_MAXSEG];
    /* rounds: group c0 = warp, warp + W, ... of every slot in flight together (one round at
     * I = 512). The first round is issued before the wait for the kernel ahead (k_moe_up,
     * which writes act): the ids come from k_router, the launch before it, which has
     * completed by then (kern/common.cuh, k_pdl_enter); with step->done it wrote nothing. */
    for (uint32_t c0 = warp; c0 < wmax / 128; c0 += MOE_G128_WARPS) {
        uint4 qa[K_MOE_G128_MAXSEG], qb[K_MOE_G128_MAXSEG];
        float sa[K_MOE_G128_MAXSEG], sb[K_MOE_G128_MAXSEG];
#pragma unroll
        for (int s = 0; s < K_MOE_G128_MAXSEG; s++) {
            const bool sh = S && (uint32_t)s == k;
            const uint32_t K = sh ? S : I;
            qa[s] = qb[s] = make_uint4(0, 0, 0, 0), sa[s] = sb[s] = 0.0f;
            if (c0 == warp)
                acc_a[s] = acc_b[s] = 0.0f;
            if ((uint32_t)s >= nseg || c0 >= K / 128)
                continue;
            const uint8_t *wa, *wb;
            const uint16_t *sca, *scb;
            const uint64_t base = sh ? p.sh_down : p.down, so = sh ? p.sh_down_scales : p.down_scales;
            /* before the wait the ids may not be this step's (step->done: k_router skipped;
             * the overlay buffer holds another op's bytes): clamp so the loads stay in bounds */
            const uint32_t e = (uint32_t)ids[s];
            const uint64_t r0 = sh ? 0 : (uint64_t)(e < p.d.E ? e : 0) * H;
            moe_g128_row(base, so, r0 + na, K, t, &wa, &sca);
            moe_g128_row(base, so, r0 + nb, K, t, &wb, &scb);
            qa[s] = k_ld_stream(wa + 64ull * c0), qb[s] = k_ld_stream(wb + 64ull * c0);
            sa[s] = k_bfbits2f(__ldg(sca + c0)), sb[s] = k_bfbits2f(__ldg(scb + c0));
        }
        if (c0 == warp) {
            k_pdl_enter();
            if (k_step_of(p.step)->done) /* uniform: every thread returns */
                return;
            if (p.norm_w && threadIdx.x < K_MOE_G128_DOWN_ROWS && n0 + threadIdx.x < H) {
                /* the residual update of the folded norm: the up kernel and the router GEMV,
                 * which read x, are done */
                uint16_t *x = (uint16_t *)p.h + n0 + threadIdx.x;
                const uint16_t a = ((const uint16_t *)p.x_add)[n0 + threadIdx.x];
                *x = __bfloat16_as_ushort(k_f2bf(k_bfbits2f(*x) + k_bfbits2f(a)));
            }
            for (uint32_t j = threadIdx.x * 8; j < (k + 1) * wmax; j += K_MOE_G128_THREADS * 8)
                *(uint4 *)(xs + j) = moe_ld_ro((const uint16_t *)p.act + j);
            __syncthreads(); /* every warp has a first trip: K_MOE_G128_OK wants wmax >= 128 W */
        }
#pragma unroll
        for (int s = 0; s < K_MOE_G128_MAXSEG; s++) {
            const uint32_t K = S && (uint32_t)s == k ? S : I;
            if ((uint32_t)s >= nseg || c0 >= K / 128)
                continue;
            float d[4] = {0.0f, 0.0f, 0.0f, 0.0f};
            k_i4_g128_mma(d, qa[s], qb[s], xs + (uint64_t)s * wmax + 128 * c0 + 32 * t);
            acc_a[s] = fmaf(sa[s], d[0], acc_a[s]), acc_b[s] = fmaf(sb[s], d[2], acc_b[s]);
        }
    }
#pragma unroll
    for (int s = 0; s < K_MOE_G128_MAXSEG; s++)
        if ((uint32_t)s < nseg && t == 0)
            red[warp][s][g] = acc_a[s], red[warp][s][g + 8] = acc_b[s];
    __syncthreads();
    const bool row = lane < K_MOE_G128_DOWN_ROWS && n0 + lane < H;
    if (!p.next_w && (warp || !row))
        return;
    float sq = !warp && row ? moe_down_g128_row(p, n0 + lane, red, lane, s_w, s_gate) : 0.0f;
    K_TRACE_MARK();
    if (p.next_w)
        moe_down_g128_next_norm(p, sq, &red[0][0][0]);
    K_TRACE_END();
}

/* Warp 0 of k_moe_down_g128, lane < 16: combine the slots' sums of output row n, write out[n]
 * and, with the next norm folded in, x[n] = bf16(x[n] + out); returns that x[n]^2 (else 0). */
__device__ __forceinline__ float moe_down_g128_row(const struct k_moe_vec_params &p, uint32_t n,
                                                   const float (&red)[MOE_G128_WARPS][K_MOE_G128_MAXSEG][16],
                                                   uint32_t lane, const float *s_w, float s_gate)
{
    const uint32_t k = p.d.k, S = p.d.S, nseg = k + (S ? 1 : 0);
    const float *wts = p.logits ? s_w : (const float *)p.weights;
    float acc = 0.0f, ys = 0.0f;
    for (uint32_t s = 0; s < nseg; s++) {
        float y = 0.0f;
#pragma unroll
        for (int w = 0; w < MOE_G128_WARPS; w++) /* fixed order: deterministic */
            y += red[w][s][lane];
        y = k_round_bf16(y);
        if (s < k) /* routed = sum_k bf16(y_k * bf16(w_k)), fp32, in slot order */
            acc += k_round_bf16(y * k_round_bf16(wts[s]));
        else
            ys = y;
    }
    float out = k_round_bf16(acc);
    if (S) { /* out = routed + bf16(sigmoid gate * bf16(shared down)) */
        float gate = k_round_bf16(p.logits ? s_gate : ((const float *)p.shared_gate)[0]);
        out = k_round_bf16(out + k_round_bf16(gate * ys));
    }
    ((__nv_bfloat16 *)p.out)[n] = k_f2bf(out);
    if (!p.next_w)
        return 0.0f;
    uint16_t *x = (uint16_t *)p.h + n; /* this thread updated it after the wait */
    const float v = k_round_bf16(k_bfbits2f(*x) + out);
    *x = __bfloat16_as_ushort(k_f2bf(v));
    return v * v;
}

/* Every thread of a down CTA (blk of nblk), after warp 0's rows: warp 0's sum of squares sq
 * left in part[blk] (part != 0), then a ticket from *count. True in the last CTA to take one,
 * to which every other's rows and part are visible. */
__device__ __forceinline__ bool moe_fold_ticket(float sq, float *part, uint32_t *count,
                                                uint32_t nblk, uint32_t blk)
{
    const uint32_t warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
    __shared__ uint32_t s_last;
    __threadfence(); /* warp 0's x rows, before the ticket */
    if (warp == 0) {
        sq = k_warp_sum(sq);
        if (lane == 0) {
            if (part)
                part[blk] = sq;
            __threadfence();
            s_last = atomicAdd(count, 1u) == nblk - 1;
        }
    }
    __syncthreads();
    if (!s_last)
        return false;
    __threadfence(); /* the last CTA: every other CTA's rows and part are visible */
    return true;
}

/* The last down CTA, every thread, with the next norm folded in (kern/moe.h next_w): the whole
 * norm from the nblk parts, all its loads in flight at once. scratch: 32 floats of shared
 * memory no longer read. */
__device__ __forceinline__ void moe_fold_norm(const struct k_moe_vec_params &p, uint32_t nblk,
                                              float *scratch)
{
    const uint32_t H = p.d.H;
    const float *part = (const float *)p.fold_part;
    constexpr int U = K_MOE_G128_MAXH / (8 * K_MOE_G128_THREADS); /* 16-byte slices a thread */
    static_assert(K_MOE_G128_THREADS == K_MOE_FUSED_THREADS, "both kernels' last CTA run this");
    const uint16_t *x = (const uint16_t *)p.h, *w = (const uint16_t *)p.next_w;
    uint4 xv[U], wv[U];
#pragma unroll
    for (int j = 0; j < U; j++) {
        const uint32_t k = (threadIdx.x + j * K_MOE_G128_THREADS) * 8;
        xv[j] = k < H ? __ldcg((const uint4 *)(x + k)) : make_uint4(0, 0, 0, 0);
        wv[j] = k < H ? __ldg((const uint4 *)(w + k)) : make_uint4(0, 0, 0, 0);
    }
    float ss = 0.0f;
    for (uint32_t i = threadIdx.x; i < nblk; i += K_MOE_G128_THREADS) /* fixed order */
        ss += __ldcg(part + i);
    ss = k_block_sum(ss, scratch);
    const float r = rsqrtf(ss / (float)H + p.norm_eps); /* torch.rsqrt(x.pow(2).mean(-1) + eps) */
    uint16_t *out = (uint16_t *)p.next_out;
#pragma unroll
    for (int j = 0; j < U; j++) {
        const uint32_t k = (threadIdx.x + j * K_MOE_G128_THREADS) * 8;
        if (k < H)
            *(uint4 *)(out + k) = k_norm8(xv[j], wv[j], r);
    }
}

/* Every thread of a k_moe_down_g128 CTA, with the next norm folded in (kern/moe.h next_w): the
 * CTA's part of the sum of squares (warp 0's rows), a ticket, and in the last CTA the whole
 * norm. scratch: 32 floats of shared memory no longer read. */
__device__ __forceinline__ void moe_down_g128_next_norm(const struct k_moe_vec_params &p, float sq,
                                                        float *scratch)
{
    uint32_t *count = (uint32_t *)p.fold_count;
    if (!moe_fold_ticket(sq, (float *)p.fold_part, count, gridDim.x, blockIdx.x))
        return;
    moe_fold_norm(p, gridDim.x, scratch);
    if (threadIdx.x == 0)
        *count = 0; /* for the next launch, which starts after this one completes */
}

/* ---- k_moe_fused_g128 (kern/moe.h) -------------------------------------------------------- */

/* Shared-memory rows of INT4 nibbles: the 16-byte unit u of row r sits at u ^ 4 (r & 1) where
 * a row has 8 or more units, so the 8 lanes of a quarter warp (rows g, g + 1, units 4c + t)
 * read 128 distinct bytes. */
__device__ __forceinline__ uint32_t moe_fz_unit(uint32_t r, uint32_t u, uint32_t units)
{
    return units >= 8 ? u ^ ((r & 1u) << 2) : u;
}

/* Queue rows [0, rows) of K nibbles each from src (rows back to back) into dst, and their
 * rows * K / 128 bf16 scales (back to back from ssrc) into sdst. */
__device__ __forceinline__ void moe_fz_copy(uint8_t *dst, const uint8_t *src, uint16_t *sdst,
                                            const uint16_t *ssrc, uint32_t rows, uint32_t K)
{
    const uint32_t units = K / 32, n = rows * units;
    for (uint32_t j = threadIdx.x; j < n; j += K_MOE_FUSED_THREADS) {
        const uint32_t r = j / units, u = j - r * units;
        k_cp16(dst + (uint64_t)r * (K / 2) + 16 * moe_fz_unit(r, u, units), src + (uint64_t)j * 16);
    }
    for (uint32_t j = threadIdx.x; j < rows * K / 1024; j += K_MOE_FUSED_THREADS)
        k_cp16(sdst + 8 * j, ssrc + 8 * j); /* 8 scales a copy */
}

/* Lane (g, t)'s 16 bytes of group c of rows g and g + 8 of a copied tile (moe_fz_copy) */
__device__ __forceinline__ uint4 moe_fz_ld(const uint8_t *tile, uint32_t r, uint32_t c, uint32_t t,
                                           uint32_t K)
{
    return *(const uint4 *)(tile + (uint64_t)r * (K / 2) + 16 * moe_fz_unit(r, 4 * c + t, K / 32));
}

extern "C" __global__ void __launch_bounds__(K_MOE_FUSED_THREADS, K_MOE_FUSED_CTAS)
    k_moe_fused_g128(struct k_moe_vec_params p)
{
    K_TRACE_BEGIN();
    extern __shared__ __align__(16) uint8_t fz_smem[];
    __shared__ float red[MOE_G128_WARPS][K_MOE_G128_MAXSEG][16];
    __shared__ int32_t s_ids[K_MOE_G128_MAXSEG];
    __shared__ float s_w[K_MOE_G128_MAXSEG], s_gate;
    __shared__ uint32_t s_ticket;
    const uint32_t k = p.d.k, H = p.d.H, I = p.d.I, S = p.d.S, wmax = max(I, S),
                   nseg = k + (S ? 1 : 0);
    const uint32_t nup = K_MOE_FUSED_UP(p.d), ndown = K_MOE_FUSED_DOWN(p.d), R = K_MOE_FUSED_ROWS;
    if (blockDim.x != K_MOE_FUSED_THREADS || !K_MOE_FUSED_OK(p.d) || gridDim.x != nup + ndown ||
        !p.logits)
        __trap();
    const uint32_t lane = threadIdx.x & 31, warp = threadIdx.x >> 5, g = lane >> 2, t = lane & 3;
    uint32_t *ctr = (uint32_t *)p.fold_count; /* next norm's ticket, role ticket, up count */
    if (threadIdx.x == 0)
        s_ticket = atomicAdd(ctr + 1, 1u);
    __syncthreads();
    const uint32_t ticket = s_ticket;
    const bool up = ticket < nup;
    /* the role's place: up, slot s rows [i0, i0 + 16); down, output rows [n0, n0 + 16) */
    const uint32_t per = I / R, s = !up ? 0 : ticket < k * per ? ticket / per : k;
    const uint32_t i0 = !up ? 0 : ticket < k * per ? (ticket % per) * R : (ticket - k * per) * R;
    const uint32_t n0 = up ? 0 : (ticket - nup) * R;
    uint8_t *w_s = fz_smem;
    /* before the wait: the shared expert's rows (not routed), and the up CTAs' normed input */
    if (up) {
        uint16_t *sc = (uint16_t *)(w_s + R * H), *xs = sc + 2 * R * (H / 128);
        if (s == k) {
            const uint64_t ro = (uint64_t)i0 * (H / 2), so = (uint64_t)i0 * (H / 128);
            moe_fz_copy(w_s, (const uint8_t *)p.sh_gate + ro, sc,
                        (const uint16_t *)(p.sh_gate + p.sh_gate_scales) + so, R, H);
            moe_fz_copy(w_s + R * H / 2, (const uint8_t *)p.sh_up + ro, sc + R * (H / 128),
                        (const uint16_t *)(p.sh_up + p.sh_up_scales) + so, R, H);
        }
        /* the folded post-attention norm: its inputs are older than the kernel ahead */
        if (p.norm_w)
            k_norm_stage(xs, (const uint16_t *)p.h, (const uint16_t *)p.x_add,
                         (const uint16_t *)p.norm_w, p.norm_eps, H, &red[0][0][0]);
        else /* h does not come from the kernel ahead (the router GEMV reads it too) */
            for (uint32_t j = threadIdx.x * 8; j < H; j += K_MOE_FUSED_THREADS * 8)
                *(uint4 *)(xs + j) = moe_ld_ro((const uint16_t *)p.h + j);
    } else if (S) {
        uint16_t *sc = (uint16_t *)(w_s + nseg * R * wmax / 2);
        moe_fz_copy(w_s + k * R * wmax / 2, (const uint8_t *)p.sh_down + (uint64_t)n0 * (S / 2),
                    sc + k * R * (wmax / 128),
                    (const uint16_t *)(p.sh_down + p.sh_down_scales) + (uint64_t)n0 * (S / 128), R,
                    S);
    }
    k_pdl_enter();
    /* route (the logits come from the kernel ahead), the step's flag loaded alongside */
    __shared__ uint32_t s_done;
    if (warp == 0) {
        const uint32_t done = k_step_of(p.step)->done;
        moe_route_smem(p, lane, s_ids, s_w, &s_gate);
        if (lane == 0)
            s_done = done;
    }
    __syncthreads();
    if (s_done) { /* uniform: no CTA wrote anything; the last ticket resets */
        k_cp_wait_all();
        if (threadIdx.x == 0 && atomicAdd(ctr, 1u) == nup + ndown - 1)
            ctr[0] = ctr[1] = ctr[2] = 0;
        return;
    }
    K_TRACE_MARK();
    if (up) {
        uint16_t *sc = (uint16_t *)(w_s + R * H), *xs = sc + 2 * R * (H / 128);
        const uint32_t nch = H / 128;
        if (s < k) {
            const uint64_t e = (uint32_t)s_ids[s], rg = e * 2 * I + i0, ru = rg + I;
            const uint8_t *gu = (const uint8_t *)p.gate_up;
            const uint16_t *gs = (const uint16_t *)(p.gate_up + p.gate_up_scales);
            moe_fz_copy(w_s, gu + rg * (H / 2), sc, gs + rg * nch, R, H);
            moe_fz_copy(w_s + R * H / 2, gu + ru * (H / 2), sc + R * nch, gs + ru * nch, R, H);
        }
        k_cp_wait_all();
        __syncthreads();
        /* two 16-row tiles (8 gate rows, the 8 matching up rows), the groups split over the
         * warps as k_g128_run splits them: the pair's arithmetic and order */
        float a[2] = {0.0f, 0.0f}, b[2] = {0.0f, 0.0f};
        for (uint32_t c = warp; c < nch; c += MOE_G128_WARPS)
#pragma unroll
            for (int q = 0; q < 2; q++) {
                const uint32_t r = 8 * q + g;
                float d[4] = {0.0f, 0.0f, 0.0f, 0.0f};
                k_i4_g128_mma(d, moe_fz_ld(w_s, r, c, t, H), moe_fz_ld(w_s + R * H / 2, r, c, t, H),
                              xs + 128 * c + 32 * t);
                a[q] = fmaf(k_bfbits2f(sc[r * nch + c]), d[0], a[q]);
                b[q] = fmaf(k_bfbits2f(sc[(R + r) * nch + c]), d[2], b[q]);
            }
        if (t == 0)
#pragma unroll
            for (int q = 0; q < 2; q++)
                red[warp][q][g] = a[q], red[warp][q][g + 8] = b[q];
        __syncthreads();
        if (warp == 0 && lane < R) {
            const uint32_t q = lane / 8, r = lane % 8;
            float gate = 0.0f, upv = 0.0f;
#pragma unroll
            for (int w = 0; w < MOE_G128_WARPS; w++) /* fixed order: deterministic */
                gate += red[w][q][r], upv += red[w][q][r + 8];
            /* act_fn(gate) * up on bf16 tensors: gate, up, silu and the product each round */
            const float v = k_round_bf16(k_silu(k_round_bf16(gate))) * k_round_bf16(upv);
            ((__nv_bfloat16 *)p.act)[(uint64_t)s * wmax + i0 + lane] = k_f2bf(v);
        }
        __syncthreads();
        if (threadIdx.x == 0) { /* the CTA's rows above, then the count: a barrier's release */
            __threadfence();
            atomicAdd(ctr + 2, 1u);
        }
        K_TRACE_END();
        return;
    }
    /* down: every routed slot's 16 rows, then the wait for every up CTA's act */
    uint16_t *sc = (uint16_t *)(w_s + nseg * R * wmax / 2), *xa = sc + nseg * R * (wmax / 128);
    for (uint32_t j = 0; j < k; j++) {
        const uint64_t r0 = (uint64_t)(uint32_t)s_ids[j] * H + n0;
        moe_fz_copy(w_s + j * R * wmax / 2, (const uint8_t *)p.down + r0 * (I / 2),
                    sc + j * R * (wmax / 128),
                    (const uint16_t *)(p.down + p.down_scales) + r0 * (I / 128), R, I);
    }
    if (threadIdx.x == 0)
        while (k_ld_acquire(ctr + 2) < nup)
            ;
    __syncthreads();
    if (p.norm_w && threadIdx.x < R) {
        /* the residual update of the folded norm: every up CTA and the router GEMV, which
         * read x, are done */
        uint16_t *x = (uint16_t *)p.h + n0 + threadIdx.x;
        const uint16_t ad = ((const uint16_t *)p.x_add)[n0 + threadIdx.x];
        *x = __bfloat16_as_ushort(k_f2bf(k_bfbits2f(*x) + k_bfbits2f(ad)));
    }
    for (uint32_t j = threadIdx.x * 8; j < nseg * wmax; j += K_MOE_FUSED_THREADS * 8)
        *(uint4 *)(xa + j) = __ldcg((const uint4 *)((const uint16_t *)p.act + j));
    k_cp_wait_all();
    __syncthreads();
#pragma unroll
    for (int j = 0; j < K_MOE_G128_MAXSEG; j++) {
        if ((uint32_t)j >= nseg)
            break;
        const uint32_t K = S && (uint32_t)j == k ? S : I;
        const uint8_t *tile = w_s + j * R * wmax / 2;
        const uint16_t *ts = sc + j * R * (wmax / 128);
        float acc_a = 0.0f, acc_b = 0.0f;
        for (uint32_t c = warp; c < K / 128; c += MOE_G128_WARPS) {
            float d[4] = {0.0f, 0.0f, 0.0f, 0.0f};
            k_i4_g128_mma(d, moe_fz_ld(tile, g, c, t, K), moe_fz_ld(tile, g + 8, c, t, K),
                          xa + (uint64_t)j * wmax + 128 * c + 32 * t);
            acc_a = fmaf(k_bfbits2f(ts[g * (K / 128) + c]), d[0], acc_a);
            acc_b = fmaf(k_bfbits2f(ts[(g + 8) * (K / 128) + c]), d[2], acc_b);
        }
        if (t == 0)
            red[warp][j][g] = acc_a, red[warp][j][g + 8] = acc_b;
    }
    __syncthreads();
    const float sq =
        warp == 0 && lane < R ? moe_down_g128_row(p, n0 + lane, red, lane, s_w, s_gate) : 0.0f;
    if (!moe_fold_ticket(sq, p.next_w ? (float *)p.fold_part : NULL, ctr, ndown, ticket - nup))
        return;
    if (p.next_w)
        moe_fold_norm(p, ndown, &red[0][0][0]);
    if (threadIdx.x == 0)
        ctr[0] = ctr[1] = ctr[2] = 0; /* every CTA has its ticket and every up CTA is done */
    K_TRACE_END();
}

#endif /* K_MOE_CU */
