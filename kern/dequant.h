/* dequant.h — k_dequant_i4: expand a K_LAYOUT_I4_ROWS matrix to bf16 for a cuBLAS GEMM.
 *
 * Prefill runs the dense projections as cuBLAS bf16 GEMMs over the chunk; with INT4 weights
 * each matrix is first expanded into a workspace (out = scale * (q - 8)). The expansion
 * moves 4.5 bytes per weight once per chunk, small beside a GEMM over hundreds of tokens;
 * chunks of up to K_GEMM_I4_MAXT tokens skip it (kern/gemm_i4.cu reads the nibbles).
 * Launch: grid (ceil(N * K / (K_DQ_THREADS * 32))), block K_DQ_THREADS; a thread expands 32
 * weights as four words of 8 (a 4-byte load, a 16-byte store each), a warp's loads and stores
 * contiguous (kern/basic.cu). An 8192 x 2048 matrix: 15.5 us, 91% of the copy rate (H100). */
#ifndef K_DEQUANT_H
#define K_DEQUANT_H

#include <stdint.h>

#define K_DQ_THREADS 256

struct k_dequant_params {
    uint64_t w;      /* (N, K) packed nibbles, scales at w + scales_offset */
    uint64_t scales_offset;
    uint64_t out;    /* (N, K) bf16 */
    uint32_t N, K;
    uint32_t group;
    uint32_t reserved;
};

#endif
