/* gemv.h — k_gemv_bf16, k_gemv_i4: y = W x for one token, several matrices per launch.
 *
 * Decode reads every projection once per token, so these kernels are the bandwidth floor of
 * decode (PERF.md). One launch serves up to K_GEMV_MAX_SEG matrices that share the input x
 * (GDN in_proj_qkv, in_proj_z, in_proj_b, in_proj_a; attention q, k, v), cutting launches.
 * Segment s computes y_s[n] = sum_k W_s[n, k] x[k] for n < n_s; W_s is bf16 row-major
 * (k_gemv_bf16) or K_LAYOUT_I4_ROWS with bf16 group scales (k_gemv_i4); y is bf16, or fp32
 * with K_GEMV_OUT_F32 (logits). Launch: grid (sum over s of ceil(n_s / K_GEMV_ROWS)), block
 * K_GEMV_THREADS; a CTA computes K_GEMV_ROWS rows of one segment (one warp per row) and finds
 * its segment from the prefix sums of row blocks. Does nothing when step->done. */
#ifndef K_GEMV_H
#define K_GEMV_H

#include <stdint.h>

#define K_GEMV_MAX_SEG 4
#define K_GEMV_THREADS 256
#define K_GEMV_ROWS 8 /* one warp per row */
#define K_GEMV_OUT_F32 1u   /* y is fp32 (logits) */
#define K_GEMV_LAST_ONLY 2u /* run only when step->last_chunk (lm_head of a prefill chunk) */

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
};

#endif
