/* embed.h — k_embed: look up token embeddings.
 *
 * out[t] = table[tokens[t]] for t < step->n_tokens (bf16 rows of H). Token ids are checked
 * by the host before they reach the device; an id outside [0, V) still writes a zero row
 * rather than reading out of bounds. Launch: grid (T_max), block K_EMBED_THREADS; each CTA
 * copies one row with 16-byte loads. */
#ifndef K_EMBED_H
#define K_EMBED_H

#include <stdint.h>

#define K_EMBED_THREADS 128

struct k_embed_params {
    uint64_t table;  /* (V, H) bf16 */
    uint64_t tokens; /* (T_max) int32: the prefill token buffer, or &step->token for decode */
    uint64_t out;    /* (T_max, H) bf16 */
    uint64_t step;   /* struct k_step */
    uint32_t H, V;
    uint32_t T_max;  /* rows of the schedule's bucket */
    uint32_t reserved;
};

#endif
