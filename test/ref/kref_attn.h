/* kref_attn.h — CPU references of the gated attention kernels (kern/attn.cu, attn_prefill.cu).
 *
 * Plain loops over host arrays in the kernels' memory layouts, bf16 as uint16_t bits, with the
 * rounding points of PyTorch's bf16 run (MODEL.md §2.3): norms in fp32 rounded once, RoPE as
 * bf16 ops with bf16 cos/sin, K/V stored bf16, softmax and P·V without intermediate rounding
 * (accumulated in double: the flash/SDPA formulation, probabilities not rounded to bf16), the
 * attention output rounded to bf16 and then multiplied by bf16(sigmoid(gate)) as a bf16 op.
 *
 * Layouts: qg (T, n_heads, 2*hd) per head [query | gate]; k, v (T, n_kv*hd); q (T, n_heads,
 * hd); caches (n_kv, max_seq, hd); out (T, n_heads*hd). */
#ifndef KREF_ATTN_H
#define KREF_ATTN_H

#include <stdint.h>

#include "kref_bf16.h"
#include <string.h>

struct kref_attn_dims {
    uint32_t n_heads, n_kv, hd, rd; /* query heads, kv heads, head_dim, rotary_dim */
    uint32_t max_seq;               /* cache rows per kv head */
    float eps, theta, scale;        /* norm epsilon, rope_theta, softmax scale */
};

/* k_attn_rope for token rows t < n at positions pos + t:
 *   q_out[t, h] = rope(bf16(rmsnorm1p(qg[t, h, :hd], q_norm)), pos + t)
 *   k_cache[h, pos + t] = rope(bf16(rmsnorm1p(k[t, h], k_norm)), pos + t)
 *   v_cache[h, pos + t] = v[t, h]
 * Nothing else of q_out or the caches is touched. */
void kref_attn_rope(const struct kref_attn_dims *d, const uint16_t *qg, const uint16_t *k,
                    const uint16_t *v, const uint16_t *q_norm, const uint16_t *k_norm, uint32_t n,
                    uint32_t pos, uint16_t *q_out, uint16_t *k_cache, uint16_t *v_cache);

/* Causal gated attention for query rows t < n at positions pos + t (decode: n = 1, pos = L - 1):
 *   o = softmax(q k^T * scale) v over keys 0..pos + t of kv head h / group
 *   out[t, h*hd + c] = bf16(bf16(o[c]) * bf16(sigmoid(gate[t, h, c])))
 * Rows t >= n of out are not touched. */
void kref_attn(const struct kref_attn_dims *d, const uint16_t *q, const uint16_t *qg,
               const uint16_t *k_cache, const uint16_t *v_cache, uint32_t n, uint32_t pos,
               uint16_t *out);

#endif
