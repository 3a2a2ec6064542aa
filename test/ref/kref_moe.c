/* kref_moe.c — CPU references of the MoE kernels (see kref_moe.h).
 *
 * Written next to MODEL.md §2.4; the PyTorch line each loop implements is quoted above it.
 * Rounding points are explicit calls of rnd(), which is the identity in the fp32 mode of
 * kref_moe_block. Nothing here is fast on purpose. */
#include "kref_moe.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "../../kern/quant.h"

/* the rounding of a bf16 op, or nothing in the fp32 model */
static float rnd(float x, int fp32)
{
    return fp32 ? x : kref_round(x);
}

static double dot(const float *a, const float *b, uint32_t n)
{
    double acc = 0;
    for (uint32_t j = 0; j < n; j++)
        acc += (double)a[j] * b[j];
    return acc;
}

static float silu(float x)
{
    return x / (1.0f + expf(-x));
}
static float sigmoid(float x)
{
    return 1.0f / (1.0f + expf(-x));
}

/* ---- router -------------------------------------------------------------------------------- */

static void router(const float *h, const float *W, const float *w_sg, uint32_t H, uint32_t E,
                   uint32_t k, int fp32, int32_t *ids, float *weights, float *gate)
{
    float *p = malloc(sizeof(float) * E);
    (void)fp32; /* the router has no bf16 rounding point left; both models agree */
    /* logits = h @ gate.weight^T, kept in fp32 (the kernel does not round them to bf16 as
     * transformers does: see kern/moe.cu); p = softmax(float32(logits)) */
    float mx = -INFINITY;
    for (uint32_t e = 0; e < E; e++) {
        p[e] = (float)dot(W + (uint64_t)e * H, h, H);
        mx = p[e] > mx ? p[e] : mx;
    }
    float sum = 0;
    for (uint32_t e = 0; e < E; e++) {
        p[e] = expf(p[e] - mx);
        sum += p[e];
    }
    for (uint32_t e = 0; e < E; e++)
        p[e] = p[e] / sum;
    /* (w, ids) = topk(p, k): descending, ties to the lower expert id */
    float wsum = 0;
    for (uint32_t j = 0; j < k; j++) {
        uint32_t best = 0;
        for (uint32_t e = 1; e < E; e++)
            if (p[e] > p[best])
                best = e;
        ids[j] = (int32_t)best;
        weights[j] = p[best];
        wsum += p[best];
        p[best] = -1.0f; /* taken; probabilities are >= 0 */
    }
    /* routing_weights /= routing_weights.sum(dim=-1, keepdim=True) */
    for (uint32_t j = 0; j < k; j++)
        weights[j] = weights[j] / wsum;
    /* sigmoid(h @ shared_expert_gate^T) on the bf16 logit */
    *gate = w_sg ? sigmoid((float)dot(w_sg, h, H)) : 0.0f;
    free(p);
}

void kref_moe_router(const float *h, const float *W, const float *w_sg, uint32_t H, uint32_t E,
                     uint32_t k, int32_t *ids, float *weights, float *gate)
{
    router(h, W, w_sg, H, E, k, 0, ids, weights, gate);
}

/* ---- experts ------------------------------------------------------------------------------- */

static void up(const float *h, const float *Wg, const float *Wu, uint32_t n, uint32_t H, int fp32,
               float *act)
{
    /* act_fn(gate_proj(x)) * up_proj(x): each bf16 op rounds */
    for (uint32_t i = 0; i < n; i++) {
        float g = rnd((float)dot(Wg + (uint64_t)i * H, h, H), fp32);
        float u = rnd((float)dot(Wu + (uint64_t)i * H, h, H), fp32);
        act[i] = rnd(rnd(silu(g), fp32) * u, fp32);
    }
}

void kref_moe_up(const float *h, const float *Wg, const float *Wu, uint32_t n, uint32_t H,
                 float *act)
{
    up(h, Wg, Wu, n, H, 0, act);
}

static void down(const float *act, const float *Wd, uint32_t n, uint32_t H, float w, int fp32,
                 float *y)
{
    /* y = down_proj(act) * routing_weights[..., None].to(bf16) */
    float wb = rnd(w, fp32);
    for (uint32_t j = 0; j < H; j++)
        y[j] = rnd(rnd((float)dot(Wd + (uint64_t)j * n, act, n), fp32) * wb, fp32);
}

void kref_moe_down(const float *act, const float *Wd, uint32_t n, uint32_t H, float w, float *y)
{
    down(act, Wd, n, H, w, 0, y);
}

static void combine(const float *y, uint32_t k, uint32_t H, const float *shared, float gate,
                    int fp32, float *out)
{
    /* out = y.view(k, H).sum(0) + sigmoid(gate) * shared, the sum in fp32 rounded once */
    float g = rnd(gate, fp32);
    for (uint32_t j = 0; j < H; j++) {
        double acc = 0;
        for (uint32_t s = 0; s < k; s++)
            acc += y[(uint64_t)s * H + j];
        float o = rnd((float)acc, fp32);
        if (shared)
            o = rnd(o + rnd(g * shared[j], fp32), fp32);
        out[j] = o;
    }
}

void kref_moe_combine(const float *y, uint32_t k, uint32_t H, const float *shared, float gate,
                      float *out)
{
    combine(y, k, H, shared, gate, 0, out);
}

/* ---- the block ------------------------------------------------------------------------------ */

void kref_moe_block(const struct kref_moe_weights *w, const struct k_moe_dims *d, const float *h,
                    uint32_t T, int fp32, float *out, struct kref_moe_trace *tr)
{
    const uint32_t H = d->H, E = d->E, k = d->k, I = d->I, S = d->S, wmax = I > S ? I : S;
    int32_t *ids = malloc(sizeof(int32_t) * k);
    float *wt = malloc(sizeof(float) * k), *act = malloc(sizeof(float) * (k + 1) * wmax);
    float *y = malloc(sizeof(float) * k * H), *ys = malloc(sizeof(float) * H);
    for (uint32_t t = 0; t < T; t++) {
        const float *ht = h + (uint64_t)t * H;
        float gate;
        router(ht, w->router, S ? w->sh_gate_w : NULL, H, E, k, fp32, ids, wt, &gate);
        for (uint32_t s = 0; s < k; s++) { /* routed experts, in top-k order */
            const float *gu = w->gate_up + (uint64_t)ids[s] * 2 * I * H;
            up(ht, gu, gu + (uint64_t)I * H, I, H, fp32, act + (uint64_t)s * wmax);
            down(act + (uint64_t)s * wmax, w->down + (uint64_t)ids[s] * H * I, I, H, wt[s], fp32,
                 y + (uint64_t)s * H);
        }
        if (S) { /* the shared expert, gated by the sigmoid */
            up(ht, w->sh_gate, w->sh_up, S, H, fp32, act + (uint64_t)k * wmax);
            down(act + (uint64_t)k * wmax, w->sh_down, S, H, 1.0f, fp32, ys);
        }
        combine(y, k, H, S ? ys : NULL, gate, fp32, out + (uint64_t)t * H);
        if (tr && tr->ids)
            memcpy(tr->ids + (uint64_t)t * k, ids, sizeof(int32_t) * k);
        if (tr && tr->weights)
            memcpy(tr->weights + (uint64_t)t * k, wt, sizeof(float) * k);
        if (tr && tr->gate)
            tr->gate[t] = gate;
        if (tr && tr->act)
            memcpy(tr->act + (uint64_t)t * (k + 1) * wmax, act, sizeof(float) * (k + 1) * wmax);
        if (tr && tr->y)
            memcpy(tr->y + (uint64_t)t * k * H, y, sizeof(float) * k * H);
        if (tr && tr->shared && S)
            memcpy(tr->shared + (uint64_t)t * H, ys, sizeof(float) * H);
    }
    free(ids), free(wt), free(act), free(y), free(ys);
}

/* ---- INT4 packing ------------------------------------------------------------------------------
 */

void kref_moe_i4_pack(const float *w, uint64_t rows, uint32_t K, uint32_t group, uint8_t *nibbles,
                      uint16_t *scales, float *deq)
{
    static const int slot[8] = K_I4_SLOTS;
    for (uint64_t r = 0; r < rows; r++)
        for (uint32_t g0 = 0; g0 < K; g0 += group) {
            const float *x = w + r * K + g0;
            float amax = 0;
            for (uint32_t j = 0; j < group; j++)
                amax = fabsf(x[j]) > amax ? fabsf(x[j]) : amax;
            uint16_t sb = kref_f2bf(amax > 0 ? amax / 7.0f : 1.0f);
            float s = kref_bf2f(sb);
            scales[r * (K / group) + g0 / group] = sb;
            for (uint32_t j0 = 0; j0 < group; j0 += 8) { /* one 32-bit word */
                uint32_t word = 0;
                for (uint32_t j = 0; j < 8; j++) {
                    long q = lrintf(x[j0 + j] / s);
                    q = q < -8 ? -8 : q > 7 ? 7 : q;
                    word |= (uint32_t)(q + K_I4_ZERO) << (4 * slot[j]);
                    if (deq)
                        deq[r * K + g0 + j0 + j] = s * (float)q;
                }
                uint8_t *b = nibbles + r * (K / 2) + (g0 + j0) / 2;
                b[0] = (uint8_t)word, b[1] = (uint8_t)(word >> 8);
                b[2] = (uint8_t)(word >> 16), b[3] = (uint8_t)(word >> 24);
            }
        }
}
