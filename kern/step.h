/* step.h — the per-step state in the arena and the host-mapped token ring.
 *
 * One instantiated graph serves every step because nothing that changes per step is baked
 * into a parameter blob: kernels read the position, the token count and the sampling settings
 * from this struct in device memory (DESIGN.md §3). The host writes it before a request, the
 * sampling kernel advances it after every decode step, so decode steps can be replayed back to
 * back with no host work in between. The exact stop: sampling sets `done` when it emits a stop
 * token or reaches max_new; every decode kernel of later replays sees `done` and returns at
 * once, so the KV cache and the GDN states hold exactly the accepted tokens. */
#ifndef K_STEP_H
#define K_STEP_H

#include <stdint.h>

#define K_MAX_STOP_IDS 8
#define K_RING_SLOTS 1024 /* token ring entries; the host drains it long before it wraps */

struct k_step {
    uint32_t pos;           /* tokens already in the KV cache and GDN state */
    uint32_t n_tokens;      /* tokens this step consumes: 1 for decode, <= bucket for prefill */
    uint32_t done;          /* non-zero: decode steps are no-ops */
    uint32_t last_chunk;    /* prefill: 1 when this chunk ends the prompt (lm_head + sampling run) */
    int32_t token;          /* input of the next decode step, written by sampling */
    uint32_t n_new;         /* tokens sampled so far in this request */
    uint32_t max_new;       /* sampling sets done when n_new reaches it */
    uint32_t n_stop;        /* entries of stop_ids used */
    int32_t stop_ids[K_MAX_STOP_IDS]; /* sampling sets done after emitting one of these */
    uint64_t seed;          /* sampling RNG: uniform = hash(seed, n_new) */
    float temperature;      /* 0: greedy */
    uint32_t top_k;         /* 0: whole vocabulary */
    float top_p;            /* 1: no nucleus cut */
    uint32_t max_pos;       /* context capacity: sampling sets done when pos reaches it */
    uint32_t reserved[2];
};

/* One ring entry, written with a single 8-byte store so the host never sees half of it. The
 * host knows entry n is there when seq == n + 1 (slots are reused modulo K_RING_SLOTS). */
struct k_ring_entry {
    int32_t token;
    uint32_t seq;
};

#endif
