/* kref_gdn.h — CPU references of the Gated DeltaNet kernels (kern/gdn.cu), op by op.
 *
 * Plain loops over host arrays in the kernels' memory layouts (bf16 as uint16_t bits, the
 * recurrent state as float (nv, dk, dv)), with the bf16 rounding points of PyTorch's bf16 run
 * (MODEL.md §2.2, §2.1b):
 *   conv:   bf16(silu(bf16(conv)))        (torch fallback: F.conv1d, then F.silu, both bf16 ops)
 *   gates:  beta = bf16(sigmoid(b)), g = -exp(A_log) * softplus(a + dt_bias) in fp32
 *   core:   q, k, v, beta, g in fp32, q/k l2-normed in fp32, the recurrent form (the spec; the
 *           chunked form is here too, as the fp32 algorithm the prefill kernel runs)
 *   norm:   bf16(w * bf16(x * rsqrt(mean(x^2) + eps)) * silu(z)), x the bf16 core output and
 *           w fp32 (the weights image keeps it F32).
 * The core returns unrounded fp32 outputs; a test rounds them and states its tolerance. */
#ifndef KREF_GDN_H
#define KREF_GDN_H

#include <stdint.h>

#include "kref_bf16.h"

#include "../../kern/gdn.h"

/* Causal depthwise conv + SiLU over T tokens, continuing from the window.
 * qkv (T, conv_dim) bf16 pre-conv; conv_w (conv_dim, K) bf16; window (conv_dim, K-1) bf16:
 * the K-1 inputs before token 0, oldest first, left holding the last K-1 inputs of
 * [window; qkv]; out (T, conv_dim) bf16. */
void kref_gdn_conv(const struct k_gdn_dims *d, const uint16_t *qkv, const uint16_t *conv_w,
                   uint16_t *window, uint32_t T, uint16_t *out);

/* The gates of one (token, value head): beta (a bf16 value) and g (fp32). */
void kref_gdn_gates(uint16_t b, uint16_t a, float a_log, uint16_t dt_bias, float *beta, float *g);

/* The gated delta rule over T tokens in the recurrent form (HF's
 * torch_recurrent_gated_delta_rule), continuing from state (nv, dk, dv) and updating it.
 * u (T, conv_dim) bf16 post-conv q | k | v; b, a (T, nv) bf16; a_log (nv) f32; dt_bias (nv) bf16;
 * core (T, nv * dv) fp32, unrounded. Dot products run in double. mag (T, nv * dv), when not
 * NULL, gets sum_i |S[i, j] q[i]| of each output: the scale of its fp32 rounding error (an
 * output can be far smaller than its terms, as when q is nearly orthogonal to the keys). */
void kref_gdn_recurrent(const struct k_gdn_dims *d, const uint16_t *u, const uint16_t *b,
                        const uint16_t *a, const float *a_log, const uint16_t *dt_bias,
                        float *state, uint32_t T, float *core, float *mag);

/* The same in the chunked WY/UT form (HF's torch_chunk_gated_delta_rule, chunks of
 * K_GDN_CHUNK, all float): the algorithm of k_gdn_chunk, for measuring how far the chunked
 * form lands from the recurrence in fp32. */
void kref_gdn_chunked(const struct k_gdn_dims *d, const uint16_t *u, const uint16_t *b,
                      const uint16_t *a, const float *a_log, const uint16_t *dt_bias, float *state,
                      uint32_t T, float *core);

/* Gated RMSNorm over T rows of nv heads: out (T, nv * dv) bf16 from core (T, nv * dv) bf16,
 * z (T, nv * dv) bf16, w (dv) f32. The sum of squares runs in double. */
void kref_gdn_gnorm(const struct k_gdn_dims *d, const uint16_t *core, const uint16_t *z,
                    const float *w, uint32_t T, uint16_t *out);

#endif
