/* kref_sample.h — CPU reference of the sampling kernels (kern/sample.h, kern/sample.cu).
 *
 * Plain loops, the executable spec of what k_sample_part writes into the candidate buffer,
 * which distribution k_sample_pick draws from, which token it draws for a given
 * (seed, n_new), and how it advances the step state and the ring. The order everywhere:
 * a larger logit first, equal logits the lower id first.
 *
 * Two levels of agreement, used by test_gpu_sample.c:
 *   - kref_sample_probs: the distribution, in double precision (for chi-square tests);
 *   - kref_sample_draw: the kernel's arithmetic in float, sequentially summed, so it agrees
 *     with the device token except where a draw lands within rounding of a boundary; it
 *     reports how far it landed from the nearest one (the margin). */
#ifndef KREF_SAMPLE_H
#define KREF_SAMPLE_H

#include <stdint.h>

#include "../../kern/sample.h"
#include "../../kern/step.h"

struct kref_cand {
    float v;    /* logit, or the slice summary S_s in the last slot */
    int32_t id; /* token id, -1 for an empty slot; the slice's draw in the last slot */
};

/* Ids [*lo, *hi) of slice s for a vocabulary of V. */
void kref_sample_slice(uint32_t V, uint32_t s, uint32_t *lo, uint32_t *hi);

/* The generator: hash(seed, n, j); the pick's uniform u in [0, 1) (j = 0, 24 bits); token id's
 * Exp(1) variate -log(u), u in (0, 1) (j = 1 + id, 23 bits) for the slice's exponential race. */
uint64_t kref_sample_hash(uint64_t seed, uint32_t n, uint32_t j);
float kref_sample_u(uint64_t seed, uint32_t n);
float kref_sample_expo(uint64_t seed, uint32_t n, uint32_t id);

/* The lowest id among the maxima of x (V). */
int32_t kref_sample_argmax(const float *x, uint32_t V);

/* The k best ids of x[lo..hi) in order into ids; returns how many (min(k, hi - lo)). */
uint32_t kref_sample_topk(const float *x, uint32_t lo, uint32_t hi, uint32_t k, int32_t *ids);

/* What k_sample_part writes: cand (K_SAMPLE_PARTS * K_SAMPLE_CAND). gap (K_SAMPLE_PARTS, may be
 * NULL) gets each slice's relative margin between its best and second-best race key
 * (infinity when no summary), so a caller can tell a draw decided by rounding. */
void kref_sample_part(const float *x, uint32_t V, const struct k_step *st, struct kref_cand *cand,
                      float *gap);

/* The distribution k_sample_pick draws from, into p (V). Returns 1 when the nucleus reached
 * past the top K_SAMPLE_KEEP and the full softmax is used instead (the documented
 * approximation), else 0. *edge (may be NULL) gets the smallest distance between top_p * Z
 * and a cumulative weight, over Z: a case is well posed when it is not tiny. */
int kref_sample_probs(const float *x, uint32_t V, const struct k_step *st, double *p, double *edge);

/* The token k_sample_pick draws for this step state; *margin gets the distance of the draw
 * from its nearest decision boundary (relative to the mass it was drawn from, or the race's
 * relative gap in the full-softmax case), infinity for greedy. */
int32_t kref_sample_draw(const float *x, uint32_t V, const struct k_step *st, double *margin);

/* One k_sample_pick's effect on the step state and the ring, given the token it draws.
 * Returns 1 when a token was emitted, 0 when the call only advanced pos or did nothing. */
int kref_sample_step(struct k_step *st, struct k_ring_entry *ring, int prefill, int32_t tok);

#endif
