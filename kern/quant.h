/* quant.h — packed weight layouts shared by the converter, the planner and the kernels.
 *
 * K_LAYOUT_PLAIN: row-major elements of the tensor's dtype.
 *
 * K_LAYOUT_I4_ROWS: a matrix W (N, K) in 4-bit integers with one bf16 scale per group of
 * `group` consecutive inputs (32, 64 or 128) of a row; value = scale * (q - 8) for a
 * symmetric image (q in 0..15). Rows stay K-contiguous, the order a batch-1 GEMV streams:
 * each thread loads 16 bytes = 32 weights of one row with one instruction. Inside every
 * 32-bit word the eight nibbles hold elements [0 2 4 6 1 3 5 7] from the low nibble up, so
 * that masking with 0x000F000F and shifting by 4 yields element pairs (0,1), (2,3), (4,5),
 * (6,7) ready for the exponent-bias dequantization trick (two logic ops per pair, no
 * per-element shifts or conversions). A 3-D tensor (E, N, K) stores the E matrices' nibbles
 * back to back, then all scales: nibbles (E, N, K/2) bytes, scales (E, N, K/group) bf16 at
 * the tensor's scales_offset. K must be a multiple of the group size. */
#ifndef K_QUANT_H
#define K_QUANT_H

#include <stdint.h>

enum k_layout {
    K_LAYOUT_PLAIN = 0,
    K_LAYOUT_I4_ROWS = 1,
};

#define K_I4_ZERO 8 /* symmetric images store q = round(w / scale) + 8 */

/* bytes of the nibbles, and of the bf16 scales, of `mats` matrices (N, K) */
static inline uint64_t k_i4_nibble_bytes(uint64_t mats, uint64_t n, uint64_t k) { return mats * n * k / 2; }
static inline uint64_t k_i4_scale_bytes(uint64_t mats, uint64_t n, uint64_t k, uint64_t group)
{
    return mats * n * (k / group) * 2;
}

/* position of element j (0..7) of a 32-bit word: nibble slot = K_I4_SLOT[j] */
#define K_I4_SLOTS {0, 4, 1, 5, 2, 6, 3, 7}

#endif
