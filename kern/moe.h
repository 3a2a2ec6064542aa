/* moe.h — sparse MoE kernels (MODEL.md §2.4).
 *
 * k_router: logits = h @ W_r^T (E rows) and the shared-expert gate logit in one pass; then
 *   softmax in fp32, top-k (descending, ties to the lower id), weights renormalised to sum 1.
 *   Writes ids (T, k) int32, weights (T, k) f32, shared gate sigmoid(h . w_sg) (T) f32.
 *   Launch: grid (T_max), block K_ROUTER_THREADS.
 *
 * Decode (one token), the fused vec-mat path:
 * k_moe_up: for slot s < k (expert ids[s]) and slot k (the shared expert), gu = W_gu h and
 *   act[s] = silu(gu[:I]) * gu[I:]. Launch: grid (k + 1, ceil(I / K_MOE_ROWS)), block
 *   K_MOE_THREADS.
 * k_moe_down: out = sum_s w_s (W_down[s] act[s]) + sigmoid gate * (W_sd act[k]), summed in
 *   fp32 and rounded once. Launch: grid (ceil(H / K_MOE_ROWS)), block K_MOE_THREADS.
 *
 * Prefill (a chunk of T tokens), the token-sorted batched path:
 * k_moe_align: per-expert counts of the T*k (token, slot) pairs, each expert's rows padded to
 *   K_MOE_BM, sorted pair ids (t * k + slot, padding = K_MOE_SENTINEL), the expert of every
 *   row block and the number of used blocks; all on the device, no host round trip.
 *   Launch: grid (1), block 1024. With cursor != 0 it leaves each expert's first row in
 *   cursor[e] and k_moe_scatter, launched next (grid (ceil(T_max * k / K_MOE_SCATTER_THREADS)),
 *   block K_MOE_SCATTER_THREADS), places the pairs from many CTAs: one CTA's scattered stores
 *   of thousands of pairs are most of its time at long chunks.
 * k_moe_gemm_up: per row block of one expert, gather the tokens' h rows, gu = h W_gu^T on
 *   tensor cores (bf16 mma, fp32 accumulation, INT4 expanded in registers), act =
 *   silu(gate) * up, into rows of the sorted order. Blocks past the used count exit at once.
 *   Launch: grid (max_blocks, ceil(I / K_MOE_TC_BN_UP)), block K_MOE_TC_THREADS, dynamic
 *   shared memory K_MOE_TC_SMEM(i4, 1, H, group); only where K_MOE_TC_OK(i4, H, I) and
 *   K_MOE_TC_FITS(d).
 * k_moe_gemm_down: y = act W_down^T times the pair's routing weight, written to the pair's
 *   slot (T, k, H) bf16. Launch: grid (max_blocks, ceil(H / K_MOE_TC_BN_DOWN)), block
 *   K_MOE_TC_THREADS, smem K_MOE_TC_SMEM(i4, 0, I, group); where K_MOE_TC_OK(i4, I, H) and
 *   K_MOE_TC_FITS(d).
 * k_moe_gemm_{up,down}_{bf16,i4}_simt: the same contracts as CUDA-core tiles, for any shape
 *   (odd test models, or when the tensor-core tile's shared memory does not fit). Launch: grid
 *   (max_blocks, ceil(N / K_MOE_BN)) with N = I (up) or H (down), block K_MOE_THREADS, no
 *   dynamic shared memory.
 * k_moe_few_{up,down}_g128: the same contracts for INT4 group 128, for short chunks (below).
 * Every expert GEMM may be launched with fewer than max_blocks row blocks, as long as the grid
 *   covers the blocks its chunk can need: the planner sizes it per bucket, ceil(T k / K_MOE_BM)
 *   + min(E, T k) (each expert's pairs fill all its blocks but the last).
 * k_moe_combine: out[t] = sum over slots y[t, s] (fp32, one rounding) + shared[t] * gate[t].
 *   Launch: grid (T_max), block 256. The shared expert itself runs as GEMMs, with
 * k_silu_mul: out = silu(gate) * up between them. Launch: grid (T_max), block 256. */
#ifndef K_MOE_H
#define K_MOE_H

#include <stdint.h>

#define K_ROUTER_THREADS 256
#define K_MOE_THREADS 256
#define K_MOE_ROWS 8

/* Decode with INT4 group-128 experts (the planner's choice when K_MOE_G128_OK): the same two
 * steps on tensor cores (kern/common.cuh k_i4_g128_mma), block K_MOE_G128_THREADS.
 * k_moe_up_g128: grid (k + 1, ceil(max(I, S) / K_MOE_G128_UP_ROWS)): a CTA takes 8 gate rows
 *   and the 8 matching up rows of one slot (one 16-row MMA tile), its warps splitting H.
 * k_moe_down_g128: grid (ceil(H / K_MOE_G128_DOWN_ROWS)): a CTA takes 16 output rows of every
 *   slot's down matrix, warp w the groups w, w + 4, ... of each, every slot's loads in flight
 *   together; the slots' sums are then combined in slot order as in k_moe_down. It reads the
 *   ids before its programmatic-launch wait (kern/common.cuh): the kernel right ahead of it
 *   (k_moe_up) must not be the one that writes them.
 * With logits set (K_MOE_G128_ROUTES), both route themselves: warp 0 of every CTA runs
 *   k_router's softmax and top-k on the GEMV's logits (moe_topk_warp), the up kernel after its
 *   wait, the down kernel before it (the logits are two launches back), and k_router is not
 *   launched in decode. */
#define K_MOE_G128_THREADS 128
#define K_MOE_G128_UP_ROWS 8
#define K_MOE_G128_DOWN_ROWS 16
#define K_MOE_G128_MAXH 8192     /* hidden sizes the up kernel stages in shared memory */
#define K_MOE_G128_MAXSEG 10     /* slots: k routed + the shared expert */
#define K_MOE_G128_MAXACT 8192   /* (k + 1) * max(I, S) activations staged by the down kernel */
#define K_MOE_G128_OK(d)                                                                           \
    ((d).group == 128 && (d).H % 128 == 0 && (d).H <= K_MOE_G128_MAXH && (d).I % 128 == 0 &&       \
     ((d).S == 0 || (d).S % 128 == 0) && (d).k + 1 <= K_MOE_G128_MAXSEG &&                         \
     ((d).k + 1) * ((d).I > (d).S ? (d).I : (d).S) <= K_MOE_G128_MAXACT &&                         \
     ((d).I > (d).S ? (d).I : (d).S) >= 128 * K_MOE_G128_THREADS / 32)

/* dims whose router the g128 pair can run from logits (one warp's registers, E <= 256) */
#define K_MOE_G128_ROUTES(d) (K_MOE_G128_OK(d) && (d).E <= 256)

/* k_moe_fused_g128: the INT4 group-128 decode block in one launch (planned with --moe-decode
 * fused where K_MOE_FUSED_OK; slower than the pair on an H100, README): the up and down steps of the pair above in CTAs of two roles, taken in
 * ticket order. The first K_MOE_FUSED_UP(d) tickets are up CTAs: 16 gate rows and their 16 up
 * rows of one slot, act written to global memory, then a count raised. The last
 * K_MOE_FUSED_DOWN(d) are down CTAs: 16 output rows of every slot, their weights copied to
 * shared memory as soon as the top-k is known, then a wait for the count to reach every up
 * CTA. A down CTA only waits on up CTAs, which took their tickets first and wait on nothing,
 * so the launch completes whatever the number of CTAs resident at once. Both roles route from
 * the logits (the GEMV right ahead) after the launch wait; the shared expert's rows are copied
 * before it. Arithmetic, folded norms and the ticket of the next norm are the pair's, and so
 * are the bits. fold_count is 4 u32 (the next norm's ticket, the role ticket, the up count),
 * zero between launches: the last down CTA resets them. Launch: grid (K_MOE_FUSED_UP(d) +
 * K_MOE_FUSED_DOWN(d)), block K_MOE_FUSED_THREADS, dynamic shared memory K_MOE_FUSED_SMEM(d). */
#define K_MOE_FUSED_THREADS  128
#define K_MOE_FUSED_ROWS     16    /* gate rows of an up CTA, output rows of a down CTA */
#define K_MOE_FUSED_CTAS     4     /* resident CTAs per SM its registers are cut for */
#define K_MOE_FUSED_COUNTERS 4     /* u32 at fold_count */
#define K_MOE_FUSED_MAXSMEM  98304 /* dynamic shared memory the planner allows it */
#define K_MOE_FUSED_UP(d)    ((d).k * ((d).I / K_MOE_FUSED_ROWS) + (d).S / K_MOE_FUSED_ROWS)
#define K_MOE_FUSED_DOWN(d)  ((d).H / K_MOE_FUSED_ROWS)
#define K_MOE_FUSED_WMAX(d)  ((d).I > (d).S ? (d).I : (d).S)
#define K_MOE_FUSED_NSEG(d)  ((d).k + ((d).S ? 1u : 0u))
/* up: 32 rows of H nibbles, their scales, the normed input; down: 16 rows of every slot, their
 * scales, the slots' act */
#define K_MOE_FUSED_SMEM_UP(d)                                                                     \
    (K_MOE_FUSED_ROWS * (d).H + K_MOE_FUSED_ROWS * (d).H / 32 + 2 * (d).H)
#define K_MOE_FUSED_SMEM_DOWN(d)                                                                   \
    (K_MOE_FUSED_NSEG(d) *                                                                         \
     (K_MOE_FUSED_ROWS * K_MOE_FUSED_WMAX(d) / 2 + K_MOE_FUSED_ROWS * K_MOE_FUSED_WMAX(d) / 64 +   \
      2 * K_MOE_FUSED_WMAX(d)))
#define K_MOE_FUSED_SMEM(d)                                                                        \
    (K_MOE_FUSED_SMEM_UP(d) > K_MOE_FUSED_SMEM_DOWN(d) ? K_MOE_FUSED_SMEM_UP(d)                    \
                                                       : K_MOE_FUSED_SMEM_DOWN(d))
#define K_MOE_FUSED_OK(d)                                                                          \
    ((d).group == 128 && (d).H % 128 == 0 && (d).H <= K_MOE_G128_MAXH && (d).I % 128 == 0 &&       \
     (d).S % 128 == 0 && (d).k >= 1 && (d).k + 1 <= K_MOE_G128_MAXSEG && (d).E <= 256 &&           \
     (d).E >= (d).k && (uint64_t)K_MOE_FUSED_SMEM(d) <= K_MOE_FUSED_MAXSMEM)

#define K_MOE_BM 64        /* rows per expert block in the batched GEMMs */
#define K_MOE_BN 128       /* output columns per CTA of the CUDA-core (_simt) GEMMs */
#define K_MOE_SENTINEL 0xFFFFFFFFu

/* The tensor-core expert GEMMs (kern/moe_prefill.cu). A CTA of K_MOE_TC_WARPS warps owns the
 * K_MOE_BM rows of a block and K_MOE_TC_ROWS weight rows, K_MOE_TC_WROWS per warp: up, the gate
 * and up rows of K_MOE_TC_BN_UP act columns; down, K_MOE_TC_ROWS output columns, K_MOE_TC_NT_DOWN
 * such tiles one after another. K is staged in 64 (INT4) or 32 (bf16) inputs per stage,
 * K_MOE_TC_STAGES stages deep; INT4 tiles also keep the CTA's bf16 group scales. */
#define K_MOE_TC_WARPS 4
#define K_MOE_TC_WROWS 32
#define K_MOE_TC_CTAS 2 /* resident CTAs per SM the register budget is cut for */
#define K_MOE_TC_STAGES 4
#define K_MOE_TC_NT_DOWN 4
#define K_MOE_TC_THREADS (32 * K_MOE_TC_WARPS)
#define K_MOE_TC_ROWS (K_MOE_TC_WARPS * K_MOE_TC_WROWS)
#define K_MOE_TC_BN_UP (K_MOE_TC_ROWS / 2)
#define K_MOE_TC_BN_DOWN (K_MOE_TC_ROWS * K_MOE_TC_NT_DOWN)
/* Shapes the tensor-core kernels take (K inputs, N output columns): 16-byte row copies need
 * K % 8 == 0 (INT4: K is a multiple of the group, so of 32), outputs are written in pairs. */
#define K_MOE_TC_OK(i4, K, N) (((K) % ((i4) ? 32u : 8u)) == 0 && (N) % 2 == 0 && (K) > 0)
/* and whose token rows (T_max * H and max_blocks * BM * I elements) have 32-bit offsets */
#define K_MOE_TC_FITS(d)                                                                           \
    ((uint64_t)(d).T_max * (d).H < (1ull << 32) &&                                                 \
     (uint64_t)(d).max_blocks * K_MOE_BM * (d).I < (1ull << 32))
/* Dynamic shared memory of a launch: the stages (64 token rows and the weight rows), the rows'
 * pair ids and routing weights, and for INT4 1 KiB to start the stages on a 1024-byte boundary
 * (the wgmma swizzle of sm_90a) and the scales of the CTA's weight rows over all of K
 * (up: gate and up rows as two ranges; each range may start up to 15 bytes early to keep
 * 16-byte copies aligned). */
#define K_MOE_TC_STAGE(i4)                                                                         \
    ((i4) ? 64u * 128u + K_MOE_TC_ROWS * 32u : 64u * 64u + K_MOE_TC_ROWS * 64u)
#define K_MOE_TC_SMEM(i4, up, K, group)                                                            \
    (K_MOE_TC_STAGES * K_MOE_TC_STAGE(i4) + 512u + ((i4) ? 1024u : 0u) +                           \
     ((i4) && (group) ? ((up) ? 2u * (K_MOE_TC_ROWS * ((K) / (group)) + 16u)                       \
                              : (K_MOE_TC_NT_DOWN * K_MOE_TC_ROWS * 2u * ((K) / (group)) + 16u))   \
                      : 0u))

/* k_moe_gemm_up_i4_narrow: k_moe_gemm_up_i4 (its contract, launch and shared memory) with at
 * most 2 n8 tiles of a block's tokens at a time: a block with more live rows runs passes of
 * 16, streaming the weights again each pass. Its registers then allow K_MOE_TC_NARROW_CTAS
 * CTAs an SM instead of K_MOE_TC_CTAS. A short chunk gives each expert a few tokens, and there
 * the up GEMM is bound by issue at 2 warps a scheduler (H100, 64 / 128 / 256 tokens: 155 ->
 * 120, 161 -> 128, 166 -> 134 us at 4 CTAs an SM, 124 / 138 / 145 at 3; 5 copy stages instead
 * of 4 within 2%); at long chunks the passes cost (512: 177 -> 202 us, 1341: 222 -> 425). The
 * planner gives it the buckets up to K_MOE_TC_NARROW_MAXT tokens. Shapes: K_MOE_TC_OK and
 * N % 8 == 0. */
#define K_MOE_TC_NARROW_CTAS 4
#define K_MOE_TC_NARROW_MAXT 256
#define K_MOE_TC_NARROW_OK(K, N) (K_MOE_TC_OK(1, K, N) && (N) % 8 == 0)

/* The expert GEMMs of a short chunk, INT4 group 128 (kern/moe_prefill.cu: k_moe_few_up_g128,
 * k_moe_few_down_g128): the contract of k_moe_gemm_{up,down}_i4, weights streamed into
 * registers instead of staged. Launch: grid (blocks, ceil(I / K_MOE_FEW_BN_UP)) (up) or
 * (blocks, ceil(H / K_MOE_FEW_BN_DOWN)) (down), block K_MOE_FEW_THREADS, dynamic shared
 * memory K_MOE_FEW_SMEM(d, up): the rows' pair ids and routing weights, then the token rows of
 * K_MOE_FEW_NX(up) n8 tiles over all of K. The planner gives the down kernel the chunks of up to
 * K_MOE_FEW_MAXT tokens, where a block holds a few pairs (H100, 128 tokens: 61-62 us against
 * 81-84 for k_moe_gemm_down_i4); the up kernel measured even with k_moe_gemm_up_i4 there
 * (158-183 us against 160-186) and is not planned. */
#define K_MOE_FEW_THREADS 128
#define K_MOE_FEW_NX(up) ((up) ? 2u : 1u) /* n8 tiles of tokens a pass over the weights */
#define K_MOE_FEW_BN_UP   64  /* act columns a CTA: 16 a warp */
#define K_MOE_FEW_BN_DOWN 128 /* output columns a CTA: 32 a warp */
#define K_MOE_FEW_MAXT    128 /* largest chunk the planner gives the down kernel */
#define K_MOE_FEW_OK(d) ((d).group == 128 && (d).H % 128 == 0 && (d).I % 128 == 0)
#define K_MOE_FEW_SMEM(d, up)                                                                      \
    (8u * K_MOE_BM + 8u * K_MOE_FEW_NX(up) * (2u * ((up) ? (d).H : (d).I) + 16u))

struct k_moe_dims {
    uint32_t H, E, k;      /* hidden, experts, experts per token */
    uint32_t I, S;         /* routed and shared expert widths */
    uint32_t T_max;
    uint32_t group;        /* INT4 group size, 0 for bf16 */
    uint32_t max_blocks;   /* prefill: row blocks the sorted order can need */
};

struct k_router_params {
    uint64_t h;            /* (T_max, H) bf16 */
    uint64_t w;            /* (E, H) bf16 router */
    uint64_t w_shared;     /* (1, H) bf16 shared-expert gate, or 0 */
    uint64_t ids;          /* (T_max, k) int32 */
    uint64_t weights;      /* (T_max, k) f32 */
    uint64_t shared_gate;  /* (T_max) f32 sigmoid of the shared gate logit */
    uint64_t step;
    uint64_t logits;       /* (T_max, E + 1) f32 logits made by a GEMV (the last column the
                            * shared gate's), or 0: the router computes them itself. In decode
                            * one CTA reading the whole router is the slow part, so the planner
                            * has a many-CTA GEMV make them first */
    struct k_moe_dims d;
};

struct k_moe_vec_params {
    uint64_t h;            /* (H) bf16 */
    uint64_t gate_up;      /* (E, 2I, H) experts, scales at + gate_up_scales */
    uint64_t down;         /* (E, H, I) */
    uint64_t sh_gate, sh_up, sh_down; /* (S, H), (S, H), (H, S) shared expert */
    uint64_t gate_up_scales, down_scales; /* INT4 byte offsets of the scales; 0 for bf16 */
    uint64_t sh_gate_scales, sh_up_scales, sh_down_scales;
    uint64_t ids, weights, shared_gate; /* from k_router */
    uint64_t act;          /* (k + 1, max(I, S)) bf16 */
    uint64_t out;          /* (H) bf16 */
    uint64_t step;
    /* (E + 1) fp32 router logits from a GEMV, the shared gate's last, or 0. The g128 pair
     * only (K_MOE_G128_ROUTES): each CTA routes itself (k_router's arithmetic) and ids,
     * weights and shared_gate are not read */
    uint64_t logits;
    /* decode with the post-attention norm folded in (the g128 pair only, norm_w != 0): h is
     * the residual stream x and x_add the mixer output. The up kernel stages k_rmsnorm's
     * bf16(x + x_add) normalised with (1 + norm_w) (kern/common.cuh k_norm_stage) instead of
     * reading h, before its launch wait (both come from two or more launches back); the down
     * kernel, after its wait (every reader of x is done), writes x = bf16(x + x_add) for its
     * rows, the update k_rmsnorm would have made */
    uint64_t x_add, norm_w;
    float norm_eps;
    uint32_t pad_;
    /* and the next norm folded into the down kernel as well (norm_w and next_w != 0): it also
     * adds its output to x (x = bf16(x + out), the update the next k_rmsnorm would make), and
     * the last of its CTAs to finish writes next_out = bf16(x rsqrt(mean(x^2) + eps) (1 +
     * next_w)), next_w the next layer's input norm or the final norm. Each CTA leaves its
     * rows' sum of squares in fold_part (ceil(H / K_MOE_G128_DOWN_ROWS) fp32) and takes a
     * ticket from fold_count (a u32 that is zero between launches: the last CTA resets it);
     * the last sums the parts in CTA order, so the result does not depend on which CTA that
     * is. Within fp32 rounding of k_rmsnorm's sum of squares, not always the same bits. */
    uint64_t next_w, next_out, fold_part, fold_count;
    struct k_moe_dims d;
};

struct k_moe_align_params {
    uint64_t ids;          /* (T_max, k) int32 */
    uint64_t counts;       /* (E) u32 scratch */
    uint64_t sorted;       /* (max_blocks * BM) u32 pair ids or K_MOE_SENTINEL */
    uint64_t block_expert; /* (max_blocks) u32 */
    uint64_t n_blocks;     /* (1) u32 used blocks */
    uint64_t step;
    struct k_moe_dims d;
    uint64_t cursor;       /* (E) u32 or 0: the pairs placed by k_moe_scatter (above) */
};
#define K_MOE_SCATTER_THREADS 256
#define K_MOE_SCATTER_MIN 1024 /* chunks from this many tokens take k_moe_scatter */

struct k_moe_gemm_params {
    uint64_t x;            /* up: (T_max, H) bf16 tokens; down: (max_blocks * BM, I) act */
    uint64_t w;            /* up: (E, 2I, H); down: (E, H, I) */
    uint64_t scales_offset;
    uint64_t sorted, block_expert, n_blocks; /* from k_moe_align */
    uint64_t weights;      /* down: (T_max, k) f32 routing weights */
    uint64_t y;            /* up: (max_blocks * BM, I) bf16 act; down: (T_max, k, H) bf16 */
    uint64_t step;
    struct k_moe_dims d;
};

struct k_moe_combine_params {
    uint64_t y;            /* (T_max, k, H) bf16 weighted expert outputs */
    uint64_t shared;       /* (T_max, H) bf16 shared expert output, or 0 */
    uint64_t shared_gate;  /* (T_max) f32 sigmoid of the shared gate logit (k_router's) */
    uint64_t out;          /* (T_max, H) bf16 */
    uint64_t step;
    struct k_moe_dims d;
    uint64_t gate_logit;   /* or, when not 0: (T_max) f32 shared gate logits, whose sigmoid
                            * the combine takes itself as k_router would (the same bits) */
};

struct k_silu_mul_params {
    uint64_t gate, up;     /* (T_max, n) bf16 */
    uint64_t out;          /* (T_max, n) bf16 */
    uint64_t step;
    uint32_t n, T_max;
};

#endif
