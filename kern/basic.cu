/* basic.cu — the basic kernels: embedding lookup, residual add + zero-centred RMSNorm, the
 * decode GEMVs (bf16 and INT4 weights), INT4 expansion for cuBLAS, and SiLU·up.
 *
 *   k_embed       out[t] = table[tokens[t]]                                  (kern/embed.h)
 *                 grid (T_max), block K_EMBED_THREADS: one CTA copies one row, 16 B per load.
 *   k_rmsnorm     x[t] = bf16(x[t] + add[t]); out[t] = bf16(x * rsqrt(mean(x^2) + eps) * (1 + w))
 *                 grid (T_max, or 1 with last_only), block K_NORM_THREADS: one CTA per row.
 *   k_gemv_bf16   y_s = W_s x for up to four matrices sharing x            (kern/gemv.h)
 *   k_gemv_bf16_norm  the same over x's k_rmsnorm made per CTA (decode router logits)
 *   k_gemv_i4     the same with K_LAYOUT_I4_ROWS weights and bf16 group scales
 *                 grid (sum of ceil(n_s / rows per CTA)), block K_GEMV_THREADS: one warp per
 *                 bf16 row, K_GEMV_I4_RPW INT4 rows per warp (kern/gemv.h).
 *   k_dequant_i4  out = bf16(scale * (q - 8)) over up to K_DQ_MAX whole matrices (kern/dequant.h)
 *                 grid (sum of ceil(N*K / (K_DQ_THREADS*32))), block K_DQ_THREADS: 32 weights
 *                 a thread.
 *   k_silu_mul    out = bf16(bf16(silu(gate)) * up)                          (kern/moe.h)
 *                 grid (T_max), block 256: one CTA per row.
 *
 * Numerics follow PyTorch's bf16 run (MODEL.md §2): the residual add is a bf16 op (fp32 sum,
 * one rounding; the fp32 sum of two bf16 values is exact or far from a bf16 tie, so this is
 * the correctly rounded bf16 sum); the norm computes in fp32 in HF's order ((x * r) * (1 + w))
 * and rounds once; a GEMV accumulates in fp32 and rounds once, as a bf16 matmul does. INT4
 * weights are scale * (q - 8) in fp32 (exact: an 8-bit by 4-bit product), so the INT4 GEMV
 * equals a GEMV over the fp32 dequantized matrix up to fp32 accumulation order. SiLU·up rounds
 * twice, as `act_fn(gate) * up` on bf16 tensors does.
 *
 * Rows: a prefill schedule (T_max > 1) has step->n_tokens live rows; a decode schedule
 * (T_max = 1) always has its one row live, and every kernel that serves decode (embed, norm,
 * GEMV) returns at once when step->done is set. Vector loads assume what the planner's
 * servable() guarantees: H, K and n multiples of 8 (bf16 rows 16-byte aligned), INT4 K a
 * multiple of the group, a power of two of at least 32 (so every 32-weight run of a thread lies
 * in one group).
 *
 * Weights are read once per launch, with ld.global.nc.L1::no_allocate so they do not evict x
 * from L1; x and the norm weights go through the read-only path and stay cached. */
#include "common.cuh"
#include "dequant.h"
#include "embed.h"
#include "gemv.h"
#include "moe.h"
#include "norm.h"
#include "quant.h"

#define BASIC_SILU_THREADS 256 /* the block plan/sched.c launches k_silu_mul with */
#define BASIC_GEMV_UNROLL  8   /* 16-byte weight loads a lane keeps in flight (bf16 GEMV) */

/* ---- small helpers ------------------------------------------------------------------------ */

__device__ __forceinline__ uint4 basic_ld_ro(const void *p)
{
    return __ldg((const uint4 *)p);
}

/* the two bf16 halves of a 32-bit word as floats (element 0 is the low half) */
__device__ __forceinline__ float basic_lo(uint32_t u)
{
    return __uint_as_float(u << 16);
}
__device__ __forceinline__ float basic_hi(uint32_t u)
{
    return __uint_as_float(u & 0xFFFF0000u);
}

/* two floats rounded to bf16 and packed, a in the low half */
__device__ __forceinline__ uint32_t basic_pack(float a, float b)
{
    return (uint32_t)__bfloat16_as_ushort(k_f2bf(a)) |
           ((uint32_t)__bfloat16_as_ushort(k_f2bf(b)) << 16);
}

__device__ __forceinline__ uint32_t basic_u(const uint4 &v, int i)
{
    return i == 0 ? v.x : i == 1 ? v.y : i == 2 ? v.z : v.w;
}

/* Rows of the schedule that hold tokens this step: decode's single row is always live;
 * a prefill chunk fills the first step->n_tokens rows of its bucket. */
__device__ __forceinline__ uint32_t basic_live_rows(const struct k_step *st, uint32_t T_max)
{
    return T_max == 1 ? 1 : min(st->n_tokens, T_max);
}

/* ---- k_embed -------------------------------------------------------------------------------- */

extern "C" __global__ void __launch_bounds__(K_EMBED_THREADS) k_embed(struct k_embed_params p)
{
    K_TRACE_BEGIN();
    k_pdl_enter();
    const struct k_step *st = k_step_of(p.step);
    uint32_t t = blockIdx.x;
    if (st->done || t >= basic_live_rows(st, p.T_max))
        return;
    int32_t tok = ((const int32_t *)p.tokens)[t];
    uint16_t *out = (uint16_t *)p.out + (uint64_t)t * p.H;
    const uint16_t *row = (const uint16_t *)p.table + (uint64_t)(uint32_t)tok * p.H;
    int valid = tok >= 0 && (uint32_t)tok < p.V;
    for (uint32_t k = threadIdx.x * 8; k < p.H; k += K_EMBED_THREADS * 8)
        *(uint4 *)(out + k) = valid ? k_ld_stream(row + k) : make_uint4(0, 0, 0, 0);
}

/* ---- k_rmsnorm ------------------------------------------------------------------------------ */

extern "C" __global__ void __launch_bounds__(K_NORM_THREADS) k_rmsnorm(struct k_rmsnorm_params p)
{
    K_TRACE_BEGIN();
    __shared__ float scratch[32];
    /* rows of at most K_NORM_THREADS * 8 (2048 at full size): one 16-byte slice a thread, kept
     * in registers, and the norm weights loaded before the wait for the kernel ahead */
    const uint32_t k0 = threadIdx.x * 8;
    const bool one = p.H <= K_NORM_THREADS * 8, mine = one && k0 < p.H;
    const uint4 wv = mine ? basic_ld_ro((const uint16_t *)p.w + k0) : make_uint4(0, 0, 0, 0);
    k_pdl_enter();
    const struct k_step *st = k_step_of(p.step);
    uint32_t rows = basic_live_rows(st, p.T_max);
    /* last_only: the final norm of a prefill chunk, only the last token goes on to lm_head */
    uint32_t t = p.last_only ? rows - 1 : blockIdx.x;
    if (st->done || rows == 0 || t >= rows || (p.last_only && blockIdx.x))
        return; /* the whole CTA leaves together, before any barrier */
    uint16_t *x = (uint16_t *)p.x + (uint64_t)t * p.H;
    const uint16_t *add = p.add ? (const uint16_t *)p.add + (uint64_t)t * p.H : NULL;
    uint16_t *out = (uint16_t *)p.out + (p.last_only ? 0 : (uint64_t)t * p.H);
    if (one) { /* the same arithmetic as the two passes below */
        uint4 v = mine ? *(const uint4 *)(x + k0) : make_uint4(0, 0, 0, 0);
        if (add && mine) {
            v = k_add8(v, basic_ld_ro(add + k0));
            *(uint4 *)(x + k0) = v;
        }
        float ss = k_block_sum(mine ? k_sumsq8(v, 0.0f) : 0.0f, scratch);
        float r = rsqrtf(ss / (float)p.H + p.eps);
        if (mine)
            *(uint4 *)(out + k0) = k_norm8(v, wv, r);
        return;
    }

    /* pass 1: the residual add (written back: it is the stream), sum of squares */
    float ss = 0.0f;
    for (uint32_t k = threadIdx.x * 8; k < p.H; k += K_NORM_THREADS * 8) {
        uint4 v = *(const uint4 *)(x + k);
        if (add) {
            v = k_add8(v, basic_ld_ro(add + k));
            *(uint4 *)(x + k) = v;
        }
        ss = k_sumsq8(v, ss);
    }
    ss = k_block_sum(ss, scratch);
    float r = rsqrtf(ss / (float)p.H + p.eps); /* torch.rsqrt(x.pow(2).mean(-1) + eps) */

    /* pass 2: re-read this thread's own x (L1/L2 hits) and normalise */
    for (uint32_t k = threadIdx.x * 8; k < p.H; k += K_NORM_THREADS * 8)
        *(uint4 *)(out + k) =
            k_norm8(*(const uint4 *)(x + k), basic_ld_ro((const uint16_t *)p.w + k), r);
}

/* ---- GEMV: segment lookup ------------------------------------------------------------------ */

struct gemv_row {
    const uint8_t *w; /* segment's weights */
    uint64_t y;       /* segment's output */
    uint64_t so;      /* INT4 scales offset */
    uint32_t row;     /* this warp's first row within the segment */
    uint32_t n;       /* rows of the segment */
    uint32_t seg;     /* segment index */
};

/* The first row this warp computes (rows_per_cta per CTA, rows_per_warp per warp): the
 * segment is the last one whose first CTA is at or before this CTA. Constant indices only, so
 * the parameters are read in place (no local copy). Returns 0 when the row is past the
 * segment's end (the last CTA of a segment). */
__device__ __forceinline__ int gemv_row_of(const struct k_gemv_params &p, uint32_t rows_per_cta,
                                           uint32_t rows_per_warp, struct gemv_row *r)
{
    uint32_t b = blockIdx.x, first = p.seg[0].blocks, n = p.seg[0].n;
    r->w = (const uint8_t *)p.seg[0].w, r->y = p.seg[0].y, r->so = p.seg[0].scales_offset;
    r->seg = 0;
#pragma unroll
    for (int s = 1; s < K_GEMV_MAX_SEG; s++)
        if ((uint32_t)s < p.nseg && b >= p.seg[s].blocks) {
            first = p.seg[s].blocks, n = p.seg[s].n;
            r->w = (const uint8_t *)p.seg[s].w, r->y = p.seg[s].y, r->so = p.seg[s].scales_offset;
            r->seg = (uint32_t)s;
        }
    r->row = (b - first) * rows_per_cta + (threadIdx.x >> 5) * rows_per_warp;
    r->n = n;
    return r->row < n;
}

__device__ __forceinline__ int gemv_skip(const struct k_gemv_params &p)
{
    const struct k_step *st = k_step_of(p.step);
    return st->done || ((p.flags & K_GEMV_LAST_ONLY) && !st->last_chunk);
}

/* Row `row` of the segment gets acc, the warp's sum (every lane has it), stored by lane
 * `owner`: with the conv epilogue that lane alone slides the channel's window. */
__device__ __forceinline__ void gemv_store_row(const struct k_gemv_params &p, const struct gemv_row &r,
                                               uint32_t row, float acc, uint32_t owner)
{
    if ((threadIdx.x & 31) == owner) {
        if ((p.flags & K_GEMV_CONV) && r.seg == 0) {
            const uint32_t K = p.conv_k;
            if (K < 2 || K > 8)
                __trap();
            float u = k_gdn_conv1((const __nv_bfloat16 *)p.conv_w + (size_t)row * K,
                                  (__nv_bfloat16 *)p.window + (size_t)row * (K - 1), K, k_f2bf(acc));
            ((__nv_bfloat16 *)r.y)[row] = k_f2bf(u);
        } else if (p.flags & K_GEMV_OUT_F32)
            ((float *)r.y)[row] = acc;
        else
            ((__nv_bfloat16 *)r.y)[row] = k_f2bf(acc);
    }
}

/* ---- k_gemv_bf16 ----------------------------------------------------------------------------- */

/* acc += w . x over 8 bf16 pairs (products exact in fp32) */
__device__ __forceinline__ float gemv_dot8(uint4 w, uint4 x, float acc)
{
#pragma unroll
    for (int i = 0; i < 4; i++) {
        uint32_t a = basic_u(w, i), b = basic_u(x, i);
        acc = fmaf(basic_lo(a), basic_lo(b), acc);
        acc = fmaf(basic_hi(a), basic_hi(b), acc);
    }
    return acc;
}

template <bool NORM> __device__ __forceinline__ void gemv_bf16(const struct k_gemv_params &p)
{
    K_TRACE_BEGIN();
    __shared__ __align__(16) uint16_t xn[NORM ? K_GEMV_NORM_MAXK : 8];
    __shared__ float scratch[32];
    struct gemv_row r;
    /* a warp past its segment's end leaves, except with NORM, where it helps stage xn first */
    const bool live = gemv_row_of(p, K_GEMV_ROWS, 1, &r);
    if (!NORM && !live)
        return;
    if (NORM && (p.K > K_GEMV_NORM_MAXK || p.K % 8))
        __trap();
    const uint16_t *w = (const uint16_t *)r.w + (uint64_t)r.row * p.K;
    const uint16_t *x = NORM ? xn : (const uint16_t *)p.x;
    const uint32_t step = 32 * 8; /* a warp covers 256 inputs per 16-byte load */
    uint32_t k = (threadIdx.x & 31) * 8;
    float acc = 0.0f;
    /* BASIC_GEMV_UNROLL loads issued before any use, for memory-level parallelism; the first
     * batch before the wait for the kernel ahead (weights: see k_pdl_enter) */
    uint4 wv[BASIC_GEMV_UNROLL];
    const bool first = live && k + (BASIC_GEMV_UNROLL - 1) * step < p.K;
#pragma unroll
    for (int u = 0; u < BASIC_GEMV_UNROLL; u++)
        wv[u] = first ? k_ld_stream(w + k + u * step) : make_uint4(0, 0, 0, 0);
    k_pdl_enter();
    if (gemv_skip(p)) /* uniform over the CTA: it leaves before any barrier */
        return;
    if (NORM) {
        k_norm_stage(xn, (const uint16_t *)p.x, (const uint16_t *)p.norm_add,
                     (const uint16_t *)p.norm_w, p.norm_eps, p.K, scratch);
        if (!live)
            return;
    }
    for (; k + (BASIC_GEMV_UNROLL - 1) * step < p.K; k += BASIC_GEMV_UNROLL * step) {
        if (k != (threadIdx.x & 31) * 8)
#pragma unroll
            for (int u = 0; u < BASIC_GEMV_UNROLL; u++)
                wv[u] = k_ld_stream(w + k + u * step);
#pragma unroll
        for (int u = 0; u < BASIC_GEMV_UNROLL; u++)
            acc = gemv_dot8(wv[u], NORM ? *(const uint4 *)(x + k + u * step) : basic_ld_ro(x + k + u * step), acc);
    }
    for (; k < p.K; k += step)
        acc = gemv_dot8(k_ld_stream(w + k), NORM ? *(const uint4 *)(x + k) : basic_ld_ro(x + k), acc);
    gemv_store_row(p, r, r.row, k_warp_sum(acc), 0);
}

extern "C" __global__ void __launch_bounds__(K_GEMV_THREADS) k_gemv_bf16(struct k_gemv_params p)
{
    gemv_bf16<false>(p);
}

/* the same with the decode post-attention norm folded in (kern/gemv.h norm_add) */
extern "C" __global__ void __launch_bounds__(K_GEMV_THREADS) k_gemv_bf16_norm(struct k_gemv_params p)
{
    gemv_bf16<true>(p);
}

/* ---- k_gemv_i4 ------------------------------------------------------------------------------- */

/* acc += (q - 8) . x over one 32-bit word of nibbles (8 weights) and the 8 matching bf16
 * inputs. Nibble slots hold elements [0 2 4 6 1 3 5 7] (kern/quant.h), so (word >> 4i) &
 * 0x000F000F holds elements 2i (low half) and 2i+1 (high half); OR-ing 0x4300 into each
 * half makes the bf16 128 + q, and subtracting 136 leaves q - 8 exactly. */
__device__ __forceinline__ float gemv_i4_dot8(uint32_t word, uint4 x, float acc)
{
#pragma unroll
    for (int i = 0; i < 4; i++) {
        uint32_t v = ((word >> (4 * i)) & 0x000F000Fu) | 0x43004300u, b = basic_u(x, i);
        acc = fmaf(basic_lo(v) - 136.0f, basic_lo(b), acc);
        acc = fmaf(basic_hi(v) - 136.0f, basic_hi(b), acc);
    }
    return acc;
}

/* (q - 8) . x over the 32 weights of one 16-byte load and their 32 inputs */
__device__ __forceinline__ float gemv_i4_dot32(uint4 q, const uint4 (&x)[4])
{
    float g = 0.0f;
    g = gemv_i4_dot8(q.x, x[0], g);
    g = gemv_i4_dot8(q.y, x[1], g);
    g = gemv_i4_dot8(q.z, x[2], g);
    g = gemv_i4_dot8(q.w, x[3], g);
    return g;
}

/* One warp, K_GEMV_I4_RPW rows: lane l takes 32-weight chunks l, l + 32, ... of every row, two
 * chunks per trip with all rows' loads issued first (at K = 2048 a warp's 4 KiB are all in
 * flight at once), and each x chunk is loaded once for all the rows. Per row and lane the
 * chunks accumulate in order as fmaf(scale, chunk sum, acc), then a warp sum: the same
 * arithmetic as one warp per row. */
extern "C" __global__ void __launch_bounds__(K_GEMV_THREADS) k_gemv_i4(struct k_gemv_params p)
{
    k_pdl_enter();
    struct gemv_row r;
    if (gemv_skip(p) || !gemv_row_of(p, K_GEMV_I4_ROWS, K_GEMV_I4_RPW, &r))
        return;
    const uint32_t gs = __ffs(p.group) - 1; /* group is a power of two: k / group = k >> gs */
    const uint32_t lane = threadIdx.x & 31, nch = p.K / 32, nr = min(r.n - r.row, (uint32_t)K_GEMV_I4_RPW);
    const uint8_t *w = r.w + (uint64_t)r.row * (p.K / 2);
    const uint16_t *sc = (const uint16_t *)(r.w + r.so) + (uint64_t)r.row * (p.K >> gs);
    const uint16_t *x = (const uint16_t *)p.x;
    float acc[K_GEMV_I4_RPW];
#pragma unroll
    for (int i = 0; i < K_GEMV_I4_RPW; i++)
        acc[i] = 0.0f;
    for (uint32_t c = lane; c < nch; c += 64) {
        const bool two = c + 32 < nch;
        uint4 q[2][K_GEMV_I4_RPW];
        float s[2][K_GEMV_I4_RPW];
#pragma unroll
        for (int h = 0; h < 2; h++)
#pragma unroll
            for (int i = 0; i < K_GEMV_I4_RPW; i++) {
                const uint32_t cc = c + 32 * h;
                q[h][i] = make_uint4(0, 0, 0, 0), s[h][i] = 0.0f;
                if ((uint32_t)i < nr && (h == 0 || two)) {
                    q[h][i] = k_ld_stream(w + (uint64_t)i * (p.K / 2) + cc * 16);
                    s[h][i] = k_bfbits2f(__ldg(sc + (uint64_t)i * (p.K >> gs) + ((cc * 32) >> gs)));
                }
            }
#pragma unroll
        for (int h = 0; h < 2; h++) {
            if (h == 1 && !two)
                break;
            uint4 xv[4];
#pragma unroll
            for (int j = 0; j < 4; j++)
                xv[j] = basic_ld_ro(x + (c + 32 * h) * 32 + 8 * j);
#pragma unroll
            for (int i = 0; i < K_GEMV_I4_RPW; i++)
                acc[i] = fmaf(s[h][i], gemv_i4_dot32(q[h][i], xv), acc[i]);
        }
    }
#pragma unroll
    for (int i = 0; i < K_GEMV_I4_RPW; i++) {
        float v = k_warp_sum(acc[i]);
        if ((uint32_t)i < nr)
            gemv_store_row(p, r, r.row + i, v, i);
    }
}

/* ---- k_gemv_i4_g128 ----------------------------------------------------------------------- */

/* W warps split the row groups; W = K_G128_WARPS (k_gemv_i4_g128) or 8 (k_gemv_i4_g128_w) */
template <int W> __device__ __forceinline__ void gemv_i4_g128(const struct k_gemv_params &p)
{
    __shared__ __align__(16) uint16_t xs[K_GEMV_G128_MAXK];
    __shared__ float red[W][16];
    struct gemv_row r;
    if (!gemv_row_of(p, K_GEMV_G128_ROWS, 0, &r)) /* the CTA's 16 rows */
        return;
    if (blockDim.x != 32 * W || !K_GEMV_G128_OK(p.group, p.K))
        __trap();
    const uint32_t lane = threadIdx.x & 31, warp = threadIdx.x >> 5, g = lane >> 2, t = lane & 3;
    const uint32_t nch = p.K / 128, nr = min(r.n - r.row, (uint32_t)K_GEMV_G128_ROWS);
    const uint32_t ra = r.row + min(g, nr - 1), rb = r.row + min(g + 8, nr - 1); /* past n: any live row */
    const struct k_g128_pair pr = {r.w + (uint64_t)ra * (p.K / 2) + 16 * t, r.w + (uint64_t)rb * (p.K / 2) + 16 * t,
                                   (const uint16_t *)(r.w + r.so) + (uint64_t)ra * nch,
                                   (const uint16_t *)(r.w + r.so) + (uint64_t)rb * nch};
    struct k_g128_acc A;
    k_g128_load<W>(A, pr, warp, nch); /* weights: before the wait for the kernel ahead (see k_pdl_enter) */
    k_pdl_enter();
    if (gemv_skip(p))
        return;
    for (uint32_t k = threadIdx.x * 8; k < p.K; k += 32 * W * 8)
        *(uint4 *)(xs + k) = basic_ld_ro((const uint16_t *)p.x + k);
    __syncthreads();
    k_g128_run<W>(A, pr, xs, nch, warp, t); /* rows g, g + 8 in A.a, A.b (column 0: lanes t = 0) */
    if (t == 0)
        red[warp][g] = A.a, red[warp][g + 8] = A.b;
    __syncthreads();
    if (warp == 0 && lane < nr) {
        float v = 0.0f;
#pragma unroll
        for (int w = 0; w < W; w++) /* fixed order: deterministic */
            v += red[w][lane];
        gemv_store_row(p, r, r.row + lane, v, lane);
    }
    K_TRACE_END();
}

static_assert(K_GEMV_G128_THREADS == 32 * K_G128_WARPS, "k_gemv_i4_g128: K_G128_WARPS warps");
static_assert(K_GEMV_G128W_THREADS == 32 * 8, "k_gemv_i4_g128_w: 8 warps");

extern "C" __global__ void __launch_bounds__(K_GEMV_G128_THREADS, K_GEMV_G128_CTAS) k_gemv_i4_g128(struct k_gemv_params p)
{
    K_TRACE_BEGIN();
    gemv_i4_g128<K_G128_WARPS>(p);
}

extern "C" __global__ void __launch_bounds__(K_GEMV_G128W_THREADS) k_gemv_i4_g128_w(struct k_gemv_params p)
{
    K_TRACE_BEGIN();
    gemv_i4_g128<8>(p);
}

/* ---- k_dequant_i4 ---------------------------------------------------------------------------- */

/* A CTA expands K_DQ_THREADS * 32 consecutive weights of its matrix, a warp 1024 of them as 4
 * passes over 128 nibble words: in pass i lane l takes word 32 i + l (8 weights), so a warp's
 * load is 128 contiguous bytes and its store 512 (one 16-byte store per lane; a lane storing 64
 * contiguous bytes instead made each store instruction touch 32 scattered pieces and ran at 36%
 * of the copy rate). */
extern "C" __global__ void __launch_bounds__(K_DQ_THREADS) k_dequant_i4(struct k_dequant_params p)
{
    k_pdl_enter();
    uint32_t i0 = 0; /* this CTA's matrix */
    while (i0 + 1 < p.n && i0 + 1 < K_DQ_MAX && blockIdx.x >= p.m[i0 + 1].first)
        i0++;
    const struct k_dequant_mat &m = p.m[i0];
    const uint64_t n = (uint64_t)m.N * m.K;
    const uint64_t base = ((uint64_t)(blockIdx.x - m.first) * K_DQ_THREADS + (threadIdx.x & ~31u)) * 32; /* the warp's first */
    const uint8_t *w = (const uint8_t *)m.w;
    const uint16_t *sc = (const uint16_t *)(w + m.scales_offset);
    const uint32_t gs = __ffs(m.group) - 1; /* group is a power of two */
    uint32_t word[4];
    float s[4];
#pragma unroll
    for (int i = 0; i < 4; i++) { /* every load in flight before the first store */
        const uint64_t e = base + 8 * (32 * i + (threadIdx.x & 31)); /* first of word i's 8 */
        word[i] = 0, s[i] = 0.0f;
        if (e < n) {
            const uint64_t row = e / m.K;
            const uint32_t col = (uint32_t)(e - row * m.K);
            s[i] = k_bfbits2f(__ldg(sc + row * (m.K >> gs) + (col >> gs)));
            asm("ld.global.nc.L1::no_allocate.u32 %0, [%1];" : "=r"(word[i]) : "l"(w + e / 2));
        }
    }
#pragma unroll
    for (int i = 0; i < 4; i++) {
        const uint64_t e = base + 8 * (32 * i + (threadIdx.x & 31));
        if (e >= n)
            return;
        uint32_t o[4];
#pragma unroll
        for (int k = 0; k < 4; k++) {
            uint32_t v = ((word[i] >> (4 * k)) & 0x000F000Fu) | 0x43004300u;
            o[k] = basic_pack(s[i] * (basic_lo(v) - 136.0f), s[i] * (basic_hi(v) - 136.0f));
        }
        *(uint4 *)((uint16_t *)m.out + e) = make_uint4(o[0], o[1], o[2], o[3]);
    }
}

/* ---- k_silu_mul ------------------------------------------------------------------------------ */

/* bf16(bf16(silu(g)) * u) on 8 values */
__device__ __forceinline__ uint4 basic_silu_mul8(uint4 g, uint4 u)
{
    uint32_t o[4];
#pragma unroll
    for (int i = 0; i < 4; i++) {
        uint32_t a = basic_u(g, i), b = basic_u(u, i);
        o[i] = basic_pack(k_round_bf16(k_silu(basic_lo(a))) * basic_lo(b),
                          k_round_bf16(k_silu(basic_hi(a))) * basic_hi(b));
    }
    return make_uint4(o[0], o[1], o[2], o[3]);
}

extern "C" __global__ void __launch_bounds__(BASIC_SILU_THREADS)
    k_silu_mul(struct k_silu_mul_params p)
{
    k_pdl_enter();
    const struct k_step *st = k_step_of(p.step);
    uint32_t t = blockIdx.x;
    if (t >= basic_live_rows(st, p.T_max))
        return;
    uint64_t base = (uint64_t)t * p.n;
    const uint16_t *g = (const uint16_t *)p.gate + base, *u = (const uint16_t *)p.up + base;
    uint16_t *out = (uint16_t *)p.out + base;
    for (uint32_t k = threadIdx.x * 8; k < p.n; k += blockDim.x * 8)
        *(uint4 *)(out + k) = basic_silu_mul8(basic_ld_ro(g + k), basic_ld_ro(u + k));
}
