/* kref_basic.h — CPU references of the basic kernels (kern/basic.cu), op by op.
 *
 * Plain loops over host arrays in the kernels' memory layouts (bf16 as uint16_t bits, INT4
 * as K_LAYOUT_I4_ROWS nibbles and bf16 scales), with the bf16 rounding points of PyTorch's
 * bf16 run (MODEL.md §2). Where the device result can legitimately differ by rounding order
 * (GEMV sums, the norm's reduction), the reference returns the unrounded value in float
 * (accumulated in double) plus what a test needs to state a tolerance; where the result is
 * defined bit for bit (embedding, residual add, dequantization), it returns bf16 bits. */
#ifndef KREF_BASIC_H
#define KREF_BASIC_H

#include <stdint.h>

#include "kref_bf16.h"

/* out (T, H) = table (V, H) [tokens (T)]; an id outside [0, V) gives a zero row */
void kref_embed(uint16_t *out, const uint16_t *table, const int32_t *tokens, uint32_t T, uint32_t H,
                uint32_t V);

/* One row of the fused residual add + zero-centred RMSNorm (MODEL.md 2.1a):
 * x (H) is updated in place to bf16(x + add) when add is non-NULL; y (H) gets the unrounded
 * fp32 norm x * rsqrt(mean(x^2) + eps) * (1 + w), the mean accumulated in double. */
void kref_rmsnorm_row(uint16_t *x, const uint16_t *add, const uint16_t *w, float *y, uint32_t H,
                      float eps);

/* y (N) = W (N, K) x (K) in double, returned as float; mag (N) = sum_k |W[n,k] x[k]|, the
 * scale of the device's fp32 accumulation error. */
void kref_gemv_bf16(float *y, float *mag, const uint16_t *W, const uint16_t *x, uint32_t N,
                    uint32_t K);

/* Element (n, k) of a K_LAYOUT_I4_ROWS matrix as fp32: scale * (q - 8) */
float kref_i4_weight(const uint8_t *nibbles, const uint16_t *scales, uint32_t K, uint32_t group,
                     uint64_t n, uint32_t k);

/* the same GEMV over an INT4 matrix (nibbles (N, K/2) bytes, scales (N, K/group) bf16) */
void kref_gemv_i4(float *y, float *mag, const uint8_t *nibbles, const uint16_t *scales,
                  const uint16_t *x, uint32_t N, uint32_t K, uint32_t group);

/* out (N, K) bf16 = bf16(scale * (q - 8)), the expansion cuBLAS prefill reads */
void kref_dequant_i4(uint16_t *out, const uint8_t *nibbles, const uint16_t *scales, uint32_t N,
                     uint32_t K, uint32_t group);

/* One element of act_fn(gate) * up on bf16 tensors: bf16(bf16(silu(g) * (1 + rel)) * u).
 * rel = 0 is the reference; a test passes +-rel to accept the device's expf error. */
uint16_t kref_silu_mul_one(uint16_t g, uint16_t u, double rel);

/* out (n) = kref_silu_mul_one(gate[i], up[i], 0) */
void kref_silu_mul(uint16_t *out, const uint16_t *gate, const uint16_t *up, uint32_t n);

#endif
