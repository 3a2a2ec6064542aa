/* sample.h — k_sample: pick the next token on the device (DESIGN.md §5).
 *
 * From fp32 logits (V): greedy argmax when temperature is 0; otherwise softmax(logits / T)
 * restricted to the top_k largest and then to the smallest set whose mass reaches top_p, one
 * draw from the counter-based generator hash(seed, n_new) so graph replays draw fresh
 * numbers. Writes the token to step->token (the next decode input) and to the host-mapped
 * ring, advances step->pos and n_new, and sets step->done on a stop id, at max_new or at
 * the context end. In a prefill schedule it first advances step->pos by the chunk's
 * n_tokens, and samples only when step->last_chunk.
 * Two phases so the vocabulary is read by many SMs: k_sample_part reduces slices of the
 * vocabulary to their top K_SAMPLE_KEEP candidates; k_sample_pick merges the candidates and
 * draws. Launch: part grid (K_SAMPLE_PARTS), block 256; pick grid (1), block 1024.
 *
 * Slices: slice s covers ids [s * L, min(V, (s + 1) * L)) with L = ceil(V / K_SAMPLE_PARTS)
 * rounded up to a multiple of 4; trailing slices may be short or empty. The candidate buffer
 * holds K_SAMPLE_CAND {f32, i32} slots per slice: slots 0..K_SAMPLE_KEEP-1 are the slice's
 * largest logits sorted by (logit descending, id ascending), {-inf, -1} when the slice has
 * fewer; the last slot is the slice summary {sum over the slice of exp((logit - max) / T), id
 * of one draw from the slice's softmax}, filled only when temperature > 0 and top_k == 0 (else
 * {0, -1}). top_k above K_SAMPLE_KEEP is clamped to it. Logits are finite or -inf (no NaN);
 * ids >= V do not exist and are never read. */
#ifndef K_SAMPLE_H
#define K_SAMPLE_H

#include <stdint.h>

#define K_SAMPLE_PARTS 64
#define K_SAMPLE_CAND 64   /* slots per slice in the candidate buffer */
#define K_SAMPLE_KEEP (K_SAMPLE_CAND - 1) /* candidates kept per slice: top_k above is clamped */

struct k_sample_params {
    uint64_t logits;       /* (V) f32 */
    uint64_t cand;         /* (K_SAMPLE_PARTS * K_SAMPLE_CAND) {f32 logit, i32 id} pairs */
    uint64_t ring;         /* K_RING_SLOTS struct k_ring_entry, host-mapped */
    uint64_t step;
    uint32_t V;
    uint32_t prefill;      /* 1 in prefill schedules: run only on the last chunk */
};

#endif
