/* attn.h — gated full attention kernels (MODEL.md §2.3).
 *
 * k_attn_rope: q = rmsnorm1p(q) and k = rmsnorm1p(k) per head, partial RoPE ("half"
 *   convention) on the first rotary_dim dims at positions step->pos + t, then k and v are
 *   appended to the caches at those positions; q goes to q_out. Launch: grid (T_max, Y),
 *   block K_ATTN_ROPE_THREADS: the Y CTAs of a token share its heads, a warp a head (decode:
 *   Y = ceil((n_heads + n_kv) / 8); prefill: Y = 1).
 * k_attn_decode_split: split-K flash decoding. The filled length L = step->pos + 1 is cut into
 *   n_split pieces of ceil(L / n_split) tokens; CTA (s, kvh) reads its piece of K and V once
 *   for all `group` query heads of kv head kvh (pack GQA) and writes fp32 partial outputs and
 *   the running max and sum of exponents. Bounded by L, never by max_seq. Launch: grid
 *   (n_split, n_kv), block K_ATTN_THREADS.
 * k_attn_decode_reduce: combines the pieces with log-sum-exp weights, multiplies by
 *   sigmoid(gate), writes bf16 (n_heads * head_dim). Launch: grid (n_heads), block
 *   K_ATTN_REDUCE_THREADS(head_dim) (head_dim rounded up to whole warps).
 * k_attn_decode: the single-pass alternative for short contexts (one CTA per kv head walks
 *   the whole filled length). Launch: grid (n_kv), block K_ATTN_THREADS.
 * k_attn_decode_tc, k_attn_decode_split_tc: the same two contracts and launches with the dot
 *   products on tensor cores (mma.sync, the group's query heads as the n8 side, 16 keys a warp
 *   pair), for head_dim with K_ATTN_DEC_TC_OK; the planner takes them there. They share
 *   k_attn_decode_reduce.
 * k_attn_prefill: causal flash attention over the cached prefix plus the chunk, query heads
 *   of one kv head folded into the M dimension (pack GQA), fp32 softmax statistics, output
 *   gate fused. Launch: grid (ceil(T_max * group / K_ATTN_BM), n_kv), block K_ATTN_THREADS.
 * k_attn_prefill_tc: the same contract on tensor cores (mma.sync bf16, FlashAttention-2
 *   style; wgmma in the sm_90a image at head_dim 256), for head_dim with K_ATTN_TC_OK.
 *   Launch: grid (ceil(T_max * group / K_ATTN_TC_BM), n_kv, n_split), block
 *   K_ATTN_TC_THREADS, K_ATTN_TC_SMEM(head_dim) bytes of dynamic shared memory. With
 *   n_split > 1 (a short chunk, whose few CTAs would each walk the whole prefix) CTA z takes
 *   the z-th of n_split equal runs of the key tiles its rows need and leaves, for each live
 *   row, its output normalised over its own keys (fp32, part_o (n_split, T_max, n_heads,
 *   head_dim)) and the running max (log2 units) and sum of exponents (part_ml (n_split,
 *   T_max, n_heads, 2)); a row none of whose keys fall in the run leaves 0, -inf, 0.
 * k_attn_prefill_reduce: combines those runs as k_attn_decode_reduce combines its pieces,
 *   times sigmoid(gate), bf16 into out; rows t >= step->n_tokens are not written. Launch: grid
 *   (T_max * n_heads), block K_ATTN_REDUCE_THREADS(head_dim). */
#ifndef K_ATTN_H
#define K_ATTN_H

#include <stdint.h>

#define K_ATTN_ROPE_THREADS 256
#define K_ATTN_THREADS 256
#define K_ATTN_REDUCE_THREADS(hd) (((hd) + 31u) / 32u * 32u)
#define K_ATTN_BM 64
/* the head sizes test_gpu_attn checks the tensor-core decode kernels at (its shapes: 256, 64) */
#define K_ATTN_DEC_TC_OK(hd) ((hd) == 64 || (hd) == 256)

/* k_attn_prefill_tc: 8 warps of 16 packed query rows each, keys in tiles of 32; shared memory
 * holds the CTA's q rows and K_ATTN_TC_STAGES stages of K and V tiles (the mma.sync build uses
 * two), rows padded to a multiple of 64 elements (the swizzle permutes 16-byte chunks within
 * groups of 8), and 1 KiB to start the wgmma build's tiles on a 1024-byte boundary */
#define K_ATTN_TC_THREADS 256
#define K_ATTN_TC_BM 128
#define K_ATTN_TC_BN 32
#define K_ATTN_TC_STAGES 3
#define K_ATTN_TC_OK(hd) ((hd) % 8 == 0 && (hd) >= 8 && (hd) <= 256)
#define K_ATTN_TC_LD(hd) (((hd) + 63u) / 64u * 64u)
#define K_ATTN_TC_SMEM(hd)                                                                         \
    ((K_ATTN_TC_BM + 2u * K_ATTN_TC_STAGES * K_ATTN_TC_BN) * K_ATTN_TC_LD(hd) * 2u + 1024u)
/* the planner splits the keys of a chunk whose launch has fewer than K_ATTN_PF_CTAS CTAs, into
 * at most K_ATTN_PF_MAXS runs */
#define K_ATTN_PF_CTAS 128
#define K_ATTN_PF_MAXS 16

/* key runs for a k_attn_prefill_tc launch of `ctas` CTAs without them: 1 (none) unless at
 * least two runs fit under K_ATTN_PF_CTAS */
static inline uint32_t k_attn_pf_splits(uint32_t ctas)
{
    uint32_t s = ctas ? K_ATTN_PF_CTAS / ctas : K_ATTN_PF_MAXS;
    return s < 2 ? 1 : s > K_ATTN_PF_MAXS ? K_ATTN_PF_MAXS : s;
}

struct k_attn_dims {
    uint32_t n_heads, n_kv, head_dim, rotary_dim;
    uint32_t max_seq;      /* KV cache capacity (rows per kv head) */
    uint32_t T_max;        /* rows of the schedule's bucket */
    float eps;             /* q/k norm epsilon */
    float rope_theta;
    float scale;           /* softmax scale, head_dim^-0.5 */
    uint32_t reserved;
};

struct k_attn_rope_params {
    uint64_t qg;           /* (T_max, n_heads, 2 * head_dim) bf16: query | gate per head */
    uint64_t k, v;         /* (T_max, n_kv * head_dim) bf16 */
    uint64_t q_norm, k_norm; /* (head_dim) bf16 zero-centred */
    uint64_t q_out;        /* (T_max, n_heads, head_dim) bf16 normed, rotated */
    uint64_t k_cache, v_cache; /* (n_kv, max_seq, head_dim) bf16 */
    uint64_t step;
    struct k_attn_dims d;
};

struct k_attn_decode_params {
    uint64_t q;            /* (n_heads, head_dim) bf16 */
    uint64_t qg;           /* (n_heads, 2 * head_dim) bf16: the gate half is read */
    uint64_t k_cache, v_cache;
    uint64_t part_o;       /* split: (n_split, n_heads, head_dim) f32 */
    uint64_t part_ml;      /* split: (n_split, n_heads, 2) f32 running max, sum of exp */
    uint64_t out;          /* reduce / single pass: (n_heads * head_dim) bf16 */
    uint64_t step;
    struct k_attn_dims d;
    uint32_t n_split;
    uint32_t reserved;
};

struct k_attn_prefill_params {
    uint64_t q;            /* (T_max, n_heads, head_dim) bf16 */
    uint64_t qg;           /* (T_max, n_heads, 2 * head_dim) bf16 gate half */
    uint64_t k_cache, v_cache;
    uint64_t out;          /* (T_max, n_heads * head_dim) bf16 */
    uint64_t step;
    uint64_t part_o;       /* n_split > 1: (n_split, T_max, n_heads, head_dim) f32 */
    uint64_t part_ml;      /* n_split > 1: (n_split, T_max, n_heads, 2) f32 max, sum of exp */
    struct k_attn_dims d;
    uint32_t n_split;      /* key runs (k_attn_prefill_tc only; 0 or 1: none) */
    uint32_t reserved;
};

#endif
