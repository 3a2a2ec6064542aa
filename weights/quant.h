/* quant.h — the converter's number formats: bf16 rounding, INT4 packing in K_LAYOUT_I4_ROWS
 * (kern/quant.h) and its exact inverse, and the error accounting the converter reports.
 *
 * INT4 is symmetric: each group of `group` consecutive inputs of a row shares one bf16 scale
 * s, and element j stores q_j in 0..15 with value s * (q_j - 8). The scale of a group is the
 * one, among a few candidates around absmax / 7.5, that minimises the group's squared
 * reconstruction error sum_j (w_j - s (q_j - 8))^2 once s is rounded to bf16 (quant.c says
 * which candidates and what they measured). Dequantization is exact in float32: a bf16 scale
 * has 8 significant bits and q - 8 at most 4, so their product is representable.
 *
 * Rows are processed independently and in order, so packing a tensor block by block gives
 * the same bytes as packing it whole: the converter streams nibbles block by block and keeps
 * only the scales, which in this layout follow all the nibbles of the tensor. */
#ifndef WT_QUANT_H
#define WT_QUANT_H

#include <stddef.h>
#include <stdint.h>

/* bf16 of x, rounded to nearest even; NaN stays NaN (quiet, sign kept), overflow gives inf. */
uint16_t wt_q_bf16(float x);
/* The float32 that bf16 value h stands for (exact). */
float wt_q_bf16_f32(uint16_t h);

/* Pack rows x (rows, k) into K_LAYOUT_I4_ROWS: nibbles (rows, k/2) bytes and scales
 * (rows, k/group) bf16, both row-major. group is 32, 64 or 128 and divides k.
 * *err2 and *ref2 (when non-NULL) are increased by sum (w - deq)^2 and sum w^2 over the
 * block, in double. Returns 0, or -1 if an element is not finite; *bad_row then gets the
 * row (within the block) that holds it; -1 also for a group size the layout does not have. */
int wt_q_pack_rows(const float *x, uint64_t rows, uint64_t k, uint32_t group, uint8_t *nibbles,
                   uint16_t *scales, double *err2, double *ref2, uint64_t *bad_row);

/* The exact inverse: dequantize rows (rows, k) of packed nibbles and scales into x as float32,
 * value = scale * (q - 8). */
void wt_q_unpack_rows(const uint8_t *nibbles, const uint16_t *scales, uint64_t rows, uint64_t k,
                      uint32_t group, float *x);

/* Tensor classes the converter reports its error for. */
enum wt_q_class {
    WT_Q_EXPERTS = 0, /* routed experts: mlp.experts.* */
    WT_Q_GDN,         /* Gated DeltaNet projections: linear_attn.*_proj* */
    WT_Q_ATTN,        /* attention projections: self_attn.{q,k,v,o}_proj */
    WT_Q_SHARED,      /* shared expert: mlp.shared_expert.* */
    WT_Q_LM_HEAD,     /* lm_head.weight */
    WT_Q_MTP_FC,      /* mtp.fc.weight, the MTP head's input projection */
    WT_Q_OTHER,       /* everything else (embedding, router, norms, conv taps) */
    WT_Q_NCLASSES
};

/* Squared error and squared reference summed over a class; rel RMS = sqrt(err2 / ref2). */
struct wt_q_stats {
    double err2[WT_Q_NCLASSES], ref2[WT_Q_NCLASSES];
    uint64_t elems[WT_Q_NCLASSES];
};

/* The class of an image tensor name ("layers.0.mlp.experts.gate_up_proj"), and its label. */
enum wt_q_class wt_q_classify(const char *name);
const char *wt_q_class_name(enum wt_q_class c);
/* sqrt(err2 / ref2) of a class, 0 when it holds nothing. */
double wt_q_rel_rms(const struct wt_q_stats *s, enum wt_q_class c);

#endif
