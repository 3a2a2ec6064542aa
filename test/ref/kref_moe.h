/* kref_moe.h — CPU references of the MoE kernels (kern/moe.cu, kern/moe_prefill.cu).
 *
 * Plain loops in float/double over host arrays of bf16 values held as float (a bf16 value is
 * exact in float). Each function states the PyTorch expression it implements and rounds to
 * bf16 where PyTorch's bf16 run does (MODEL.md §2.4): matmul outputs, silu, the product with
 * up, y * routing weight, the slot sum (one rounding, grouped_mm), the shared gate product and
 * the final add. Dot products accumulate in double, so the reference is the quiet party.
 *
 * kref_moe_block is the whole block for T tokens, composed of the per-op references; with
 * fp32 set it drops every bf16 rounding (the float32 model of test/ref/ref.c) so a test can
 * bound how far the bf16 convention moves the result. Also the INT4 packer of K_LAYOUT_I4_ROWS
 * (kern/quant.h) that the tests use to build INT4 weight images. */
#ifndef KREF_MOE_H
#define KREF_MOE_H

#include <stdint.h>

#include "kref_bf16.h"

#include "../../kern/moe.h"

/* One token of the router.
 *   logits = bf16(h @ W^T)                 (E)
 *   p = softmax(float32(logits)); (w, ids) = topk(p, k) descending, ties to the lower id
 *   w = w / sum(w) in fp32                 (rounded to bf16 by its users, not here)
 *   gate = sigmoid(bf16(h . w_sg)) in fp32, 0 when w_sg is NULL */
void kref_moe_router(const float *h, const float *W, const float *w_sg, uint32_t H, uint32_t E,
                     uint32_t k, int32_t *ids, float *weights, float *gate);

/* act (n) = act_fn(h @ Wg^T) * (h @ Wu^T) on bf16 tensors:
 *   act[i] = bf16(bf16(silu(bf16(Wg[i] . h))) * bf16(Wu[i] . h)); Wg, Wu (n, H) */
void kref_moe_up(const float *h, const float *Wg, const float *Wu, uint32_t n, uint32_t H,
                 float *act);

/* y (H) = (act @ Wd^T) * w on bf16 tensors: y[j] = bf16(bf16(Wd[j] . act) * bf16(w)); Wd (H, n).
 * w = 1 gives the plain bf16 matmul output. */
void kref_moe_down(const float *act, const float *Wd, uint32_t n, uint32_t H, float w, float *y);

/* out (H) = y.view(k, H).sum(0) (fp32 sum, one rounding) + sigmoid gate * shared:
 *   out[j] = bf16(bf16(sum_s y[s][j]) + bf16(bf16(gate) * shared[j])); no shared term when
 *   shared is NULL. y (k, H) are the weighted bf16 expert outputs. */
void kref_moe_combine(const float *y, uint32_t k, uint32_t H, const float *shared, float gate,
                      float *out);

/* The block's weights as float (INT4 tensors dequantized: scale * (q - 8)). */
struct kref_moe_weights {
    const float *router;    /* (E, H) */
    const float *gate_up;   /* (E, 2I, H) rows 0..I-1 gate, I..2I-1 up */
    const float *down;      /* (E, H, I) */
    const float *sh_gate;   /* (S, H); the shared tensors unused when S = 0 */
    const float *sh_up;     /* (S, H) */
    const float *sh_down;   /* (H, S) */
    const float *sh_gate_w; /* (H) shared_expert_gate */
};

/* Intermediates of kref_moe_block; any member may be NULL. wmax = max(I, S). */
struct kref_moe_trace {
    int32_t *ids;   /* (T, k) */
    float *weights; /* (T, k) fp32 routing weights */
    float *gate;    /* (T) fp32 sigmoid gate */
    float *act;     /* (T, k + 1, wmax) slot k: the shared expert */
    float *y;       /* (T, k, H) weighted expert outputs */
    float *shared;  /* (T, H) shared expert output before its gate */
};

/* out (T, H) = the MoE block of MODEL.md §2.4 over h (T, H); d->H, E, k, I, S are used.
 * fp32 != 0: no bf16 rounding after the router logits (which stay bf16, so the same experts
 * are picked): routing weights, gate, matmul outputs and sums stay fp32. */
void kref_moe_block(const struct kref_moe_weights *w, const struct k_moe_dims *d, const float *h,
                    uint32_t T, int fp32, float *out, struct kref_moe_trace *tr);

/* K_LAYOUT_I4_ROWS packer for `rows` rows of K inputs (K % group == 0, group % 32 == 0):
 * per group scale = bf16(max|w| / 7) (1 for an all-zero group), q = clamp(round(w / scale),
 * -8, 7) + 8; element j of each 8-element run goes to nibble slot K_I4_SLOTS[j] of its 32-bit
 * word (little endian). nibbles (rows, K/2) bytes, scales (rows, K/group) bf16 bits; deq
 * (rows, K), if not NULL, gets the values the kernels compute, scale * (q - 8). */
void kref_moe_i4_pack(const float *w, uint64_t rows, uint32_t K, uint32_t group, uint8_t *nibbles,
                      uint16_t *scales, float *deq);

#endif
