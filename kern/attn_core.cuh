/* attn_core.cuh — the warp-level attention step shared by decode (attn.cu) and prefill
 * (attn_prefill.cu): online softmax over groups of 4 keys for 8 query rows.
 *
 * Layout in a warp: lane i owns head dims [8i, 8i + 8) of all 8 rows, for q (fp32 registers)
 * and for the output accumulator, so a K or V row is one coalesced 16-byte load per lane.
 * A step takes 4 keys: each lane forms its 32 partial dot products (8 rows x 4 keys over its
 * 8 dims), and a recursive-halving reduce-scatter over the warp (31 shuffles) leaves lane i
 * with the full score of row i / 4, key i % 4. Softmax statistics are then per lane: a row's
 * max comes from its 4 lanes (2 shuffles), each lane keeps its share of the row's sum of
 * exponents, and the probabilities and rescale factors reach every lane through 40 floats of
 * shared memory per warp (8 broadcast 16-byte loads instead of 32 shuffles).
 *
 * Scores are kept in log2 units (q.k * scale * log2 e) so every exponential is one exp2.
 * Masked scores are -INFINITY: they get probability 0 and never raise the max; a row that
 * has seen no valid key yet keeps m = -INFINITY and l = 0 without producing a NaN. The
 * callers zero the K and V slices of keys they do not read, so stale cache rows (possibly
 * NaN) never reach the accumulator. head_dim <= 256 and a multiple of 8: lanes past
 * head_dim / 8 hold zeros and take part only in the shuffles. */
#ifndef ATTN_CORE_CUH
#define ATTN_CORE_CUH

#include "attn.h"
#include "common.cuh"

#define ATTN_ROWS 8                       /* query rows a warp owns */
#define ATTN_KG 4                         /* keys per step: ATTN_ROWS * ATTN_KG = 32 = one per lane */
#define ATTN_WARPS (K_ATTN_THREADS / 32)  /* warps of the decode and prefill CTAs */
#define ATTN_MAX_HD 256                   /* 32 lanes x 8 dims */
#define ATTN_PB 40                        /* per-warp exchange: 32 probabilities + 8 rescales */
#define ATTN_LOG2E 1.4426950408889634f
#define ATTN_FULL 0xffffffffu

/* Rows of the schedule that hold tokens: decode's one row always; a prefill chunk's first
 * step->n_tokens rows of its bucket. */
__device__ __forceinline__ uint32_t attn_live_rows(const struct k_step *st, uint32_t T_max)
{
    return T_max == 1 ? 1 : min(st->n_tokens, T_max);
}

/* 8 bf16 (16 bytes, element 0 in the low half of .x) to fp32: exact */
__device__ __forceinline__ void attn_unpack(uint4 u, float f[8])
{
    uint32_t w[4] = {u.x, u.y, u.z, u.w};
#pragma unroll
    for (int i = 0; i < 4; i++) {
        f[2 * i] = __uint_as_float(w[i] << 16);
        f[2 * i + 1] = __uint_as_float(w[i] & 0xFFFF0000u);
    }
}

/* 8 floats rounded to bf16 (nearest even) and packed */
__device__ __forceinline__ uint4 attn_pack8(const float f[8])
{
    uint32_t w[4];
#pragma unroll
    for (int i = 0; i < 4; i++)
        w[i] = (uint32_t)__bfloat16_as_ushort(k_f2bf(f[2 * i])) |
               ((uint32_t)__bfloat16_as_ushort(k_f2bf(f[2 * i + 1])) << 16);
    return make_uint4(w[0], w[1], w[2], w[3]);
}

/* Two probabilities as bf16x2 hi + lo (element x in the low half): hi = bf16(p), lo =
 * bf16(p - hi); p - hi is exact in fp32, so hi + lo is p to a relative 2^-17. */
__device__ __forceinline__ void attn_tc_split(float x, float y, uint32_t &hi, uint32_t &lo)
{
    __nv_bfloat162 h = __floats2bfloat162_rn(x, y);
    float2 hf = __bfloat1622float2(h);
    __nv_bfloat162 l = __floats2bfloat162_rn(x - hf.x, y - hf.y);
    hi = *reinterpret_cast<uint32_t *>(&h);
    lo = *reinterpret_cast<uint32_t *>(&l);
}

/* o * sigmoid(gate) as bf16 ops: bf16(bf16(o) * bf16(sigmoid(g))), 8 dims */
__device__ __forceinline__ uint4 attn_gate8(const float o[8], uint4 gate)
{
    float g[8], r[8];
    attn_unpack(gate, g);
#pragma unroll
    for (int c = 0; c < 8; c++)
        r[c] = __fmul_rn(k_round_bf16(o[c]), k_round_bf16(k_sigmoid(g[c])));
    return attn_pack8(r);
}

/* Online-softmax state of a warp's 8 rows. */
struct attn_acc {
    float o[ATTN_ROWS][8]; /* unnormalised output: rows x this lane's 8 dims */
    float m;               /* running max (log2 units) of row lane / 4 */
    float l;               /* this lane's share of that row's sum of exp2(score - m) */
};

__device__ __forceinline__ void attn_acc_init(struct attn_acc &a)
{
#pragma unroll
    for (int r = 0; r < ATTN_ROWS; r++)
#pragma unroll
        for (int c = 0; c < 8; c++)
            a.o[r][c] = 0.0f;
    a.m = -INFINITY;
    a.l = 0.0f;
}

/* The row's full sum of exponents, on all 4 lanes of the row. */
__device__ __forceinline__ float attn_row_sum(float l)
{
    l += __shfl_xor_sync(ATTN_FULL, l, 1);
    return l + __shfl_xor_sync(ATTN_FULL, l, 2);
}

/* One halving step over lane bit M on 2M values: a lane keeps the half whose index has that
 * bit equal to its own and adds the partner's copy of it. */
template <int M>
__device__ __forceinline__ void attn_rs_step(float a[], uint32_t lane)
{
    bool up = lane & M;
#pragma unroll
    for (int i = 0; i < M; i++) {
        float send = up ? a[i] : a[i + M];
        float keep = up ? a[i + M] : a[i];
        a[i] = keep + __shfl_xor_sync(ATTN_FULL, send, M);
    }
}

/* Score q_r . k_k of row lane / 4 and key lane % 4, summed over the warp (fp32 sums of exact
 * bf16 products). Value index r * 4 + k is reduce-scattered so that lane j ends with index j
 * (recursive halving, 31 shuffles). The first step pairs row r with row r + 4 of the same key,
 * so it runs as soon as a key's 8 partials exist: 16 live partials instead of 32. */
__device__ __forceinline__ float attn_scores(const float q[ATTN_ROWS][8], const uint4 kc[ATTN_KG])
{
    uint32_t lane = threadIdx.x & 31;
    bool up = lane & 16;
    float h[16];
#pragma unroll
    for (int k = 0; k < ATTN_KG; k++) {
        float kf[8], s[ATTN_ROWS];
        attn_unpack(kc[k], kf);
#pragma unroll
        for (int r = 0; r < ATTN_ROWS; r++) {
            s[r] = 0.0f;
#pragma unroll
            for (int c = 0; c < 8; c++)
                s[r] = fmaf(q[r][c], kf[c], s[r]);
        }
#pragma unroll
        for (int r = 0; r < 4; r++) {
            float send = up ? s[r] : s[r + 4], keep = up ? s[r + 4] : s[r];
            h[r * ATTN_KG + k] = keep + __shfl_xor_sync(ATTN_FULL, send, 16);
        }
    }
    attn_rs_step<8>(h, lane);
    attn_rs_step<4>(h, lane);
    attn_rs_step<2>(h, lane);
    attn_rs_step<1>(h, lane);
    return h[0];
}

/* One step: s is this lane's scaled score (log2 units) or -INFINITY when masked; vc are the 4
 * keys' V slices. acc = acc * exp2(m - m') + sum_k p_k v_k with m' the new row max. pb is the
 * warp's ATTN_PB floats of shared memory (16-byte aligned). */
__device__ __forceinline__ void attn_update(struct attn_acc &a, float s, const uint4 vc[ATTN_KG], float *pb)
{
    uint32_t lane = threadIdx.x & 31;
    float mt = fmaxf(s, __shfl_xor_sync(ATTN_FULL, s, 1));
    mt = fmaxf(mt, __shfl_xor_sync(ATTN_FULL, mt, 2));
    float mn = fmaxf(a.m, mt);
    float corr = a.m == mn ? 1.0f : exp2f(a.m - mn); /* a.m = -inf, mn finite: 0 */
    float pr = s == -INFINITY ? 0.0f : exp2f(s - mn);
    a.m = mn;
    a.l = fmaf(a.l, corr, pr);
    bool rescale = __any_sync(ATTN_FULL, corr != 1.0f);
    pb[lane] = pr;
    if ((lane & 3) == 0)
        pb[32 + (lane >> 2)] = corr;
    __syncwarp();
    const float4 *pb4 = (const float4 *)pb;
    if (rescale) {
#pragma unroll
        for (int r = 0; r < ATTN_ROWS; r++) {
            float cr = pb[32 + r];
#pragma unroll
            for (int c = 0; c < 8; c++)
                a.o[r][c] *= cr;
        }
    }
    float vf[ATTN_KG][8];
#pragma unroll
    for (int k = 0; k < ATTN_KG; k++)
        attn_unpack(vc[k], vf[k]);
#pragma unroll
    for (int r = 0; r < ATTN_ROWS; r++) {
        float4 p4 = pb4[r]; /* row r, keys 0..3 */
        float pk[ATTN_KG] = {p4.x, p4.y, p4.z, p4.w};
#pragma unroll
        for (int k = 0; k < ATTN_KG; k++)
#pragma unroll
            for (int c = 0; c < 8; c++)
                a.o[r][c] = fmaf(pk[k], vf[k][c], a.o[r][c]);
    }
    __syncwarp(); /* pb is rewritten by the next step */
}

#endif
