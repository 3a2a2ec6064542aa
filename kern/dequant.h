/* dequant.h — k_dequant_i4: expand K_LAYOUT_I4_ROWS matrices to bf16 for cuBLAS GEMMs.
 *
 * Prefill runs the dense projections as cuBLAS bf16 GEMMs over the chunk; with INT4 weights
 * each matrix is first expanded into a workspace (out = scale * (q - 8)). The expansion
 * moves 4.5 bytes per weight once per chunk, small beside a GEMM over hundreds of tokens;
 * chunks of up to K_GEMM_I4_MAXT tokens skip it (kern/gemm_i4.cu reads the nibbles). One launch
 * expands up to K_DQ_MAX matrices (the planner gives it all of a layer's at once, so the small
 * ones do not each pay a launch): matrix i takes the CTAs from m[i].first (m[0].first = 0,
 * ascending) up to the next one's first, ceil(N K / (K_DQ_THREADS * 32)) of them.
 * Launch: grid (the sum of those), block K_DQ_THREADS; a thread expands 32 weights as four
 * words of 8 (a 4-byte load, a 16-byte store each), a warp's loads and stores contiguous
 * (kern/basic.cu). An 8192 x 2048 matrix: 15.5 us, 91% of the copy rate (H100). */
#ifndef K_DEQUANT_H
#define K_DEQUANT_H

#include <stdint.h>

#define K_DQ_THREADS 256
#define K_DQ_MAX 8 /* matrices a launch expands */
#define K_DQ_CTAS(N, K) (((uint64_t)(N) * (K) + K_DQ_THREADS * 32ull - 1) / (K_DQ_THREADS * 32ull))

struct k_dequant_mat {
    uint64_t w;      /* (N, K) packed nibbles, scales at w + scales_offset */
    uint64_t scales_offset;
    uint64_t out;    /* (N, K) bf16 */
    uint32_t N, K;
    uint32_t group;
    uint32_t first;  /* its first CTA */
};

struct k_dequant_params {
    uint32_t n, reserved; /* matrices (1 .. K_DQ_MAX) */
    struct k_dequant_mat m[K_DQ_MAX];
};

#endif
