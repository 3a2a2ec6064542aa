/* rtk.cu — the toy model's kernels (see rtk.h). One thread does the work; these test rt's
 * loading, relocation, schedules, graphs and the generation loop, not arithmetic speed. */
#include "rtk.h"

#include "../../kern/common.cuh" /* k_pdl_enter, and the timeline records of KERN_TRACE=1 images */

/* sample, publish to the ring, apply the stop rules */
__device__ static void t_emit(const struct t_params &p, struct k_step *st, uint64_t s)
{
    int32_t tok = t_sample(s, p.vocab);
    struct k_ring_entry *ring = (struct k_ring_entry *)p.ring;
    unsigned long long e = (unsigned long long)(uint32_t)tok | (unsigned long long)(st->n_new + 1) << 32;
    *(volatile unsigned long long *)&ring[st->n_new % K_RING_SLOTS] = e;
    __threadfence_system();
    st->token = tok;
    st->n_new++;
    int stop = st->n_new >= st->max_new || st->pos >= st->max_pos;
    for (uint32_t i = 0; i < st->n_stop; i++)
        stop |= st->stop_ids[i] == tok;
    if (stop)
        st->done = 1;
}

extern "C" __global__ void t_prefill(struct t_params p)
{
    if (threadIdx.x || blockIdx.x)
        return;
    struct k_step *st = (struct k_step *)p.step;
    const int32_t *tok = (const int32_t *)p.tokens;
    const uint32_t *w = (const uint32_t *)p.weights;
    uint64_t s = *(uint64_t *)p.state;
    for (uint32_t t = 0; t < st->n_tokens; t++)
        s = t_prefill_fold(s, tok[t], st->pos + t, w[t_widx(s, p.wn)]);
    *(uint64_t *)p.state = s;
    st->pos += st->n_tokens;
    if (st->last_chunk)
        t_emit(p, st, s);
}

/* the decode kernels wait for the one ahead as the model's do (rt launches them with PDL) */
extern "C" __global__ void t_decode_a(struct t_params p)
{
    k_pdl_enter();
    struct k_step *st = (struct k_step *)p.step;
    if (threadIdx.x || blockIdx.x || st->done)
        return;
    *(uint64_t *)p.act = t_decode_fold(*(uint64_t *)p.state, st->token, st->pos);
}

extern "C" __global__ void t_decode_b(struct t_params p)
{
    k_pdl_enter();
    struct k_step *st = (struct k_step *)p.step;
    if (threadIdx.x || blockIdx.x || st->done)
        return;
    uint64_t s = *(uint64_t *)p.act;
    *(uint64_t *)p.state = s;
    st->pos++;
    t_emit(p, st, s);
}
