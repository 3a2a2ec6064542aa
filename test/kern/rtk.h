/* rtk.h — a toy model for testing rt alone: three kernels that follow the step-state protocol
 * of the real model (kern/step.h) with arithmetic a CPU can repeat exactly.
 *
 * The "model" keeps a 64-bit state in the arena. Prefill folds each prompt token into it,
 * together with one word of a weight tensor, advances step->pos and, on the last chunk,
 * samples. A decode step is two ops (so a buffer passes between ops through the overlay):
 * t_decode_a folds the input token and position into an activation, t_decode_b makes it the
 * state, advances pos and samples. Sampling = (state >> 33) % vocab, written to step->token
 * and to the ring, with the real kernels' stop rules (stop ids, max_new, max_pos -> done). */
#ifndef T_RTK_H
#define T_RTK_H

#include <stdint.h>

#include "../../kern/step.h"

struct t_params {
    uint64_t step;        /* struct k_step */
    uint64_t tokens;      /* prefill: (T) int32 tokens_in */
    uint64_t state;       /* (1) u64 persistent */
    uint64_t act;         /* decode: (1) u64 overlay activation */
    uint64_t weights;     /* (wn) u32 words of a weight tensor */
    uint64_t ring;        /* K_RING_SLOTS struct k_ring_entry, host-mapped */
    uint32_t wn;          /* words in the weight tensor */
    uint32_t vocab;
};

#ifdef __CUDACC__
#define T_HD __host__ __device__ __forceinline__
#else
#define T_HD static inline
#endif

T_HD uint64_t t_mix(uint64_t s, uint64_t x)
{
    uint64_t z = s ^ (x * 0x9E3779B97F4A7C15ull + 0x632BE59BD9B4E019ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

/* prefill token t at position pos, reading weight word w */
T_HD uint64_t t_prefill_fold(uint64_t s, int32_t tok, uint32_t pos, uint32_t w)
{
    return t_mix(s, ((uint64_t)(uint32_t)tok << 32 | pos) ^ ((uint64_t)w << 16));
}

T_HD uint32_t t_widx(uint64_t s, uint32_t wn) { return (uint32_t)(s % wn); }

T_HD uint64_t t_decode_fold(uint64_t s, int32_t tok, uint32_t pos)
{
    return t_mix(s ^ 0xD1B54A32D192ED03ull, (uint64_t)(uint32_t)tok * 131071u + pos);
}

T_HD int32_t t_sample(uint64_t s, uint32_t vocab) { return (int32_t)((s >> 33) % vocab); }

#endif
