/* norm.h — k_rmsnorm: the residual add fused with the zero-centred RMSNorm.
 *
 *   if add: x[t] = bf16(x[t] + add[t])              (the residual stream, updated in place)
 *   out[t] = bf16(x * rsqrt(mean(x^2) + eps) * (1 + w))   in fp32, one rounding (MODEL.md 2.1a)
 *
 * for t < step->n_tokens, or only for the last token when last_only (the final norm of a
 * prefill chunk, feeding lm_head). Launch: grid (T_max, or 1 when last_only), block
 * K_NORM_THREADS; one CTA per row. */
#ifndef K_NORM_H
#define K_NORM_H

#include <stdint.h>

#define K_NORM_THREADS 256

struct k_rmsnorm_params {
    uint64_t x;      /* (T_max, H) bf16 residual stream */
    uint64_t add;    /* (T_max, H) bf16 block output to add first, or 0 */
    uint64_t w;      /* (H) bf16 zero-centred weight */
    uint64_t out;    /* (T_max, H) bf16, or (1, H) when last_only */
    uint64_t step;   /* struct k_step */
    uint32_t H, T_max;
    float eps;
    uint32_t last_only;
};

#endif
