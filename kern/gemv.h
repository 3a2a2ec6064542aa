/* gemv.h — k_gemv_bf16, k_gemv_i4: y = W x for one token, several matrices per launch.
 *
 * Decode reads every projection once per token, so these kernels are the bandwidth floor of
 * decode (PERF.md). One launch serves up to K_GEMV_MAX_SEG matrices that share the input x
 * (GDN in_proj_qkv, in_proj_z, in_proj_b, in_proj_a; attention q, k, v), cutting launches.
 * Segment s computes y_s[n] = sum_k W_s[n, k] x[k] for n < n_s; W_s is bf16 row-major
 * (k_gemv_bf16) or K_LAYOUT_I4_ROWS with bf16 group scales (k_gemv_i4); y is bf16, or fp32
 * with K_GEMV_OUT_F32 (logits). Launch: grid (sum over s of ceil(n_s / rows per CTA)), block
 * K_GEMV_THREADS; a CTA computes the rows of one segment and finds its segment from the
 * prefix sums of row blocks: k_gemv_bf16 K_GEMV_ROWS rows (one warp per row: a bf16 row is
 * 4 KiB, plenty of loads in flight), k_gemv_i4 K_GEMV_I4_ROWS (K_GEMV_I4_RPW rows per warp:
 * an INT4 row is only 1 KiB at K = 2048, and one row per warp leaves too little in flight and
 * reloads x for every row), k_gemv_i4_g128 K_GEMV_G128_ROWS (below). Does nothing when
 * step->done.
 *
 * k_gemv_i4_g128 (INT4 with group 128, K a multiple of 128 up to K_GEMV_G128_MAXK; the planner
 * picks it for those): the same product on tensor cores. Dequantizing a nibble pair to bf16
 * (q - 8) takes three integer/bf16x2 operations, against nine to bring it to fp32 for a CUDA-
 * core FMA, so a warp issues far fewer instructions per weight. A CTA of K_GEMV_G128_THREADS
 * computes 16 rows (one m16n8k16 row tile) with the K range split over its warps; x is staged
 * in shared memory once. Each 128-input group accumulates in fp32 in the MMA, then scale *
 * group sum is added (scales are exact in fp32, so the result is a GEMV over the dequantized
 * matrix up to fp32 summation order). Launch: grid (sum over s of ceil(n_s / 16)), block
 * K_GEMV_G128_THREADS; k_gemv_i4_g128_w (K_GEMV_G128_WIDE(K)) block K_GEMV_G128W_THREADS.
 *
 * K_GEMV_CONV (decode GDN in_proj): segment 0's rows are the conv channels of a Gated
 * DeltaNet layer; each output y = bf16(W x) is fed through the causal conv and SiLU of its
 * channel (kern/gdn.h: taps conv_w (n, conv_k), window (n, conv_k - 1) oldest first) and the
 * post-activation value is stored instead; the warp that owns the channel slides its window.
 * The step kernel then reads finished q, k, v and no two CTAs share a window. */
#ifndef K_GEMV_H
#define K_GEMV_H

#include <stdint.h>

#define K_GEMV_MAX_SEG 4
#define K_GEMV_THREADS 256
#define K_GEMV_ROWS 8 /* bf16: one warp per row */
#define K_GEMV_I4_RPW 4 /* INT4: rows per warp */
#define K_GEMV_I4_ROWS (K_GEMV_I4_RPW * K_GEMV_THREADS / 32)
#define K_GEMV_G128_ROWS 16
#define K_GEMV_G128_THREADS 128
/* resident CTAs per SM the register budget is cut for (at most 80 registers a thread): a GDN
 * in_proj's 768 CTAs then fit one wave on a 132-SM part instead of 1.16 */
#define K_GEMV_G128_CTAS 6
#define K_GEMV_G128_MAXK 8192
/* k_gemv_i4_g128_w: the same with 8 warps splitting the groups, for K from K_GEMV_G128W_MINK
 * up (out_proj, o_proj: 32 groups a row, few CTAs): each warp's 4 groups of both rows are
 * loaded before the launch wait, so all 32 are in flight at once instead of half */
#define K_GEMV_G128W_THREADS 256
#define K_GEMV_G128W_MINK 4096
#define K_GEMV_G128_WIDE(K) ((K) >= K_GEMV_G128W_MINK)
#define K_GEMV_NORM_MAXK 8192 /* k_gemv_bf16_norm */
/* the kernel plan/sched.c launches for an INT4 GEMV */
#define K_GEMV_G128_OK(group, K) ((group) == 128 && (K) % 128 == 0 && (K) <= K_GEMV_G128_MAXK)
#define K_GEMV_OUT_F32 1u   /* y is fp32 (logits) */
#define K_GEMV_LAST_ONLY 2u /* run only when step->last_chunk (lm_head of a prefill chunk) */
#define K_GEMV_CONV 4u      /* segment 0: GDN causal conv + SiLU epilogue, window updated */

/* k_gemm_i4_g128 (kern/gemm_i4.cu): y (T, N) = x (T, K) W^T for a prefill chunk, INT4
 * group-128 weights read as stored instead of expanded to bf16 for cuBLAS. Any T works; the
 * planner gives it chunks of up to K_GEMM_I4_MAXT tokens, where it measured faster (H100, whole
 * prompt, same run: 32 tokens 3,269 tok/s against 3,046 through cuBLAS; at 128 tokens in the
 * 256 bucket 8,972 against 9,057, so that bucket stays with cuBLAS); in the 64 bucket only for
 * the matrices k_gemm_i4_wg does not take (below). Launch: grid (ceil(T_max /
 * K_GEMM_I4_BT), ceil(N / K_GEMM_I4_BN)), block K_GEMM_I4_THREADS; rows past step->n_tokens are
 * not computed. */
#define K_GEMM_I4_THREADS 128
#define K_GEMM_I4_BT 32    /* tokens a CTA */
#define K_GEMM_I4_BN 64    /* weight rows a CTA: 16 a warp */
#define K_GEMM_I4_MAXT 64  /* largest chunk the planner gives it */
#define K_GEMM_I4_OK(group, K) ((group) == 128 && (K) % 128 == 0)

/* k_gemm_i4_wg1, _wg2, _wg4, _wg8 (kern/gemm_wg.cu): the same product for the large matrices of
 * chunks from K_GEMM_WG_MINT + 1 to K_GEMM_WG_MAXT tokens, with the numbers of the cuBLAS path
 * (expansion, then a bf16 GEMM) that serves the rest of them past K_GEMM_I4_MAXT: each weight
 * expanded to bf16(scale * (q - 8)) (as k_dequant_i4 stores it) in registers, every product
 * exact, fp32 sums over K, one rounding to bf16. A CTA takes K_GEMM_WG_BN weight rows against
 * BT tokens (K_GEMM_WG_BT, or K_GEMM_WG_BT64 for the _t64 builds) over K / S inputs (S the
 * kernel's suffix): on sm_90a the S CTAs of a tile form a cluster, each runs wgmma over its
 * K / S, and the partial sums are added across the cluster in rank order. Launch: grid
 * (ceil(T_max / BT), N / BN + N2 / BN, S) (N2 = 0 without a second matrix), block
 * K_GEMM_WG_THREADS, dynamic shared memory K_GEMM_WG_SMEM_T(BT, K, S); the planner's BT is
 * k_gemm_wg_tile(T_max). Shapes: K_GEMM_WG_OK for each matrix. k_gemm_wg_split() of N + N2 rows is the planner's
 * S; it runs a GDN layer's in_proj_qkv and in_proj_z as one launch. Other images run the same
 * launch with mma.sync, the CTAs of split 0 over all of K (the others return). */
#define K_GEMM_WG_THREADS 256
#define K_GEMM_WG_BT 128 /* tokens a CTA (the wgmma N) */
/* the _t64 builds (k_gemm_i4_wg{S}_t64): 64 tokens a CTA, for chunks of up to
 * K_GEMM_WG_T64_MAXT tokens, where a 128-token tile would be half empty */
#define K_GEMM_WG_BT64 64
#define K_GEMM_WG_T64_MAXT 64
#define K_GEMM_WG_BN 128 /* weight rows a CTA: 64 a warpgroup */
#define K_GEMM_WG_STAGES 4
#define K_GEMM_WG_STAGE_T(bt) ((bt) * 128 + K_GEMM_WG_BN * 32) /* 64 inputs */
#define K_GEMM_WG_STAGE K_GEMM_WG_STAGE_T(K_GEMM_WG_BT)
#define K_GEMM_WG_MAXKS 4096 /* inputs a CTA: its scales stay in shared memory */
#define K_GEMM_WG_SMEM_T(bt, K, S)                                                                 \
    (1024u + K_GEMM_WG_STAGES * K_GEMM_WG_STAGE_T(bt) + K_GEMM_WG_BN * 2u * ((K) / (S) / 128u))
#define K_GEMM_WG_SMEM(K, S) K_GEMM_WG_SMEM_T(K_GEMM_WG_BT, K, S)
#define K_GEMM_WG_OK(group, N, K, S)                                                               \
    ((group) == 128 && (N) % K_GEMM_WG_BN == 0 && (K) % (128u * (S)) == 0 &&                       \
     (K) / (S) <= K_GEMM_WG_MAXKS)
/* the largest chunk the planner gives them: with prefill side branches (planfile.h), cuBLAS
 * on the expanded matrices was as fast in the 256 bucket and faster in the 512 one (H100,
 * bench medians of 3 in one run: 256 tokens 15,659 / 15,599 against 15,667 / 15,692 tok/s,
 * 512 tokens 24,514 / 24,213 against 24,883 / 24,860; 128 tokens 9,700 / 9,633 against
 * 9,364 / 9,369) */
#define K_GEMM_WG_MAXT 128
/* and chunks past this many tokens: the 64 bucket too, where they beat k_gemm_i4_g128 (H100,
 * GEMM_TIMING, us a launch at 64 tokens, the 64-token tile, one run: in_proj 13.2 against
 * 24.1, z 12.9 / 15.2, out_proj 13.3 / 15.4); at 16 tokens k_gemm_i4_g128 is the faster
 * (in_proj 11.0 against 12.6) */
#define K_GEMM_WG_MINT 32
/* and only matrices of at least this many weights (in_proj, z, out_proj, q, o_proj): a small
 * one makes few CTAs (512 x 2048 at 128 tokens: 8 CTAs, 14 us a launch on an H100), and there
 * the expansion of the layer's small matrices in one k_dequant_i4 launch, then cuBLAS, measured
 * faster end to end (128-token prompt, planned with them: 8,092 tok/s; without: 8,426) */
#define K_GEMM_WG_MINW (1u << 23)
#define K_GEMM_WG_MAXS 8
/* The planner's split: the largest S that leaves each CTA at least K_GEMM_WG_MINKS inputs and
 * the launch at most K_GEMM_WG_CTAS CTAs; more only where a CTA's scales would not fit. Two
 * CTAs fit an SM, but clusters of 4 and 8 CTAs are placed whole on a GPC: an H100 holds 62
 * clusters of 4 and 30 of 8 at once (ncu), so a launch past 240 CTAs may run a second wave. */
#define K_GEMM_WG_MINKS 1024
#define K_GEMM_WG_CTAS 240
/* the planner's token tile for a chunk of T_max tokens */
static inline uint32_t k_gemm_wg_tile(uint32_t T_max)
{
    return T_max <= K_GEMM_WG_T64_MAXT ? K_GEMM_WG_BT64 : K_GEMM_WG_BT;
}
static inline uint32_t k_gemm_wg_split(uint32_t T_max, uint32_t N, uint32_t K)
{
    const uint32_t bt = k_gemm_wg_tile(T_max);
    const uint32_t tiles = (T_max + bt - 1) / bt * (N / K_GEMM_WG_BN);
    uint32_t s = 1;
    while (s < K_GEMM_WG_MAXS && K % (256u * s) == 0 &&
           ((K / (2 * s) >= K_GEMM_WG_MINKS && tiles * 2 * s <= K_GEMM_WG_CTAS) ||
            K / s > K_GEMM_WG_MAXKS))
        s *= 2;
    return s;
}

struct k_gemm_i4_params {
    uint64_t w;             /* (N, K) nibbles, K_LAYOUT_I4_ROWS */
    uint64_t scales_offset; /* byte offset of the (N, K / 128) bf16 scales from w */
    uint64_t x;             /* (T_max, K) bf16 */
    uint64_t y;             /* (T_max, N) bf16 */
    uint64_t step;          /* struct k_step: n_tokens live rows */
    uint32_t N, K;
    /* k_gemm_i4_wg only: a second matrix of the same x in the same launch, or w2 = 0: rows
     * (N2, K) as w, its output (T_max, N2) at y2; its row tiles follow the first's */
    uint64_t w2, scales_offset2, y2;
    uint32_t N2, pad;
};

struct k_gemv_seg {
    uint64_t w;      /* (n, K) weights */
    uint64_t y;      /* (n) output */
    uint64_t scales_offset; /* INT4: byte offset of the scales from w; 0 for bf16 */
    uint32_t n;      /* rows */
    uint32_t blocks; /* CTAs before this segment: sum over earlier segments of ceil(n / ROWS) */
};

struct k_gemv_params {
    struct k_gemv_seg seg[K_GEMV_MAX_SEG];
    uint64_t x;      /* (K) bf16 input */
    uint64_t step;   /* struct k_step */
    uint32_t nseg;
    uint32_t K;
    uint32_t group;  /* INT4 group size, 0 for bf16 */
    uint32_t flags;  /* K_GEMV_* */
    uint64_t conv_w; /* K_GEMV_CONV: (seg[0].n, conv_k) bf16 taps */
    uint64_t window; /* K_GEMV_CONV: (seg[0].n, conv_k - 1) bf16 previous inputs, updated */
    uint32_t conv_k; /* K_GEMV_CONV: taps, 2 .. 8 */
    uint32_t pad;
    /* k_gemv_bf16_norm (decode): x is the residual stream and the GEMV's input is its
     * k_rmsnorm, bf16(x + norm_add) normalised with (1 + norm_w), staged in shared memory per
     * CTA (kern/common.cuh k_norm_stage; K <= K_GEMV_NORM_MAXK) */
    uint64_t norm_add, norm_w;
    float norm_eps;
    uint32_t pad2;
};

#endif
