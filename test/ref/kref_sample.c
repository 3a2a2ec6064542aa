/* kref_sample.c — CPU reference of the sampling kernels (see kref_sample.h).
 *
 * The semantics, as PyTorch would write them for one row of logits x (V):
 *   T == 0:  tok = argmax(x)                       (lowest id among equal maxima)
 *   else:    top = x.topk(k)  with k = top_k clamped to K_SAMPLE_KEEP (top_k == 0: K_SAMPLE_KEEP)
 *            e = exp((top.values - x.max()) / T);  Z = e.sum()   (top_k == 0: exp((x - max) /
 * T).sum()) keep the shortest prefix with e.cumsum() >= top_p * Z; draw from it by inverse CDF
 *            (top_k == 0 and no such prefix inside the candidates: draw from softmax(x / T))
 * The draw itself mirrors the kernel: u = hash(seed, n_new, 0) picks inside the nucleus; the
 * full-softmax case picks a slice by its mass with u, then the winner of the slice's
 * exponential race (argmax e_i / E_i, E_i ~ Exp(1): a draw from the slice's softmax). */
#include "kref_sample.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

void kref_sample_slice(uint32_t V, uint32_t s, uint32_t *lo, uint32_t *hi)
{
    uint32_t L = (V + K_SAMPLE_PARTS - 1) / K_SAMPLE_PARTS;
    L = (L + 3u) & ~3u;
    *lo = s * L < V ? s * L : V;
    *hi = V - *lo < L ? V : *lo + L;
}

static uint64_t mix(uint64_t z)
{
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

uint64_t kref_sample_hash(uint64_t seed, uint32_t n, uint32_t j)
{
    uint64_t z = mix(seed ^ ((uint64_t)n * 0x9E3779B97F4A7C15ull + 0x632BE59BD9B4E019ull));
    return mix(z ^ ((uint64_t)j * 0xD1B54A32D192ED03ull + 0x8CB92BA72F3D8DD7ull));
}

float kref_sample_u(uint64_t seed, uint32_t n)
{
    return (float)(kref_sample_hash(seed, n, 0) >> 40) * (1.0f / 16777216.0f);
}

float kref_sample_expo(uint64_t seed, uint32_t n, uint32_t id)
{
    float u = ((float)(kref_sample_hash(seed, n, 1u + id) >> 41) + 0.5f) * (1.0f / 8388608.0f);
    return -logf(u);
}

/* a ranks before b: larger logit, then lower id (-0 equals +0 here, as in the kernel) */
static int before(float a, int32_t ia, float b, int32_t ib)
{
    return a > b || (a == b && ia < ib);
}

int32_t kref_sample_argmax(const float *x, uint32_t V)
{
    int32_t best = 0;
    for (uint32_t i = 1; i < V; i++)
        if (before(x[i], (int32_t)i, x[best], best))
            best = (int32_t)i;
    return best;
}

uint32_t kref_sample_topk(const float *x, uint32_t lo, uint32_t hi, uint32_t k, int32_t *ids)
{
    uint32_t n = 0;
    for (uint32_t i = lo; i < hi; i++) {
        if (n == k && !before(x[i], (int32_t)i, x[ids[n - 1]], ids[n - 1]))
            continue;
        uint32_t j = n < k ? n++ : n - 1; /* insertion sort into the sorted prefix */
        while (j > 0 && before(x[i], (int32_t)i, x[ids[j - 1]], ids[j - 1])) {
            ids[j] = ids[j - 1];
            j--;
        }
        ids[j] = (int32_t)i;
    }
    return n;
}

/* The slice summary: S = sum exp((x - m) / T) over finite logits, m the slice max; the race
 * winner argmax(e / E), E ~ Exp(1) per id, and its relative margin over the runner-up. */
static void slice_summary(const float *x, uint32_t lo, uint32_t hi, const struct k_step *st,
                          float *S, int32_t *win, float *gap)
{
    float m = -INFINITY, best = -INFINITY, second = -INFINITY, invT = 1.0f / st->temperature;
    for (uint32_t i = lo; i < hi; i++)
        m = x[i] > m ? x[i] : m;
    *S = 0.0f, *win = -1, *gap = INFINITY;
    if (!(m > -INFINITY))
        return;
    for (uint32_t i = lo; i < hi; i++) {
        if (!(x[i] > -INFINITY))
            continue;
        float e = expf((x[i] - m) * invT); /* e = ((x - m) * (1 / T)).exp() */
        *S += e;
        float q = e / kref_sample_expo(st->seed, st->n_new, i);
        if (q > best)
            second = best, best = q, *win = (int32_t)i;
        else if (q > second)
            second = q;
    }
    *gap = (best - second) / best;
}

void kref_sample_part(const float *x, uint32_t V, const struct k_step *st, struct kref_cand *cand,
                      float *gap)
{
    int32_t ids[K_SAMPLE_KEEP];
    int tail = st->temperature > 0.0f && st->top_k == 0;
    for (uint32_t s = 0; s < K_SAMPLE_PARTS; s++) {
        uint32_t lo, hi;
        kref_sample_slice(V, s, &lo, &hi);
        struct kref_cand *c = cand + (size_t)s * K_SAMPLE_CAND;
        uint32_t n = kref_sample_topk(x, lo, hi, K_SAMPLE_KEEP, ids);
        for (uint32_t j = 0; j < K_SAMPLE_KEEP; j++)
            c[j] = j < n ? (struct kref_cand){x[ids[j]] + 0.0f, ids[j]} /* -0 as +0 */
                         : (struct kref_cand){-INFINITY, -1};
        float S = 0.0f, g = INFINITY;
        int32_t win = -1;
        if (tail)
            slice_summary(x, lo, hi, st, &S, &win, &g);
        c[K_SAMPLE_KEEP] = S > 0.0f ? (struct kref_cand){S, win} : (struct kref_cand){0.0f, -1};
        if (gap)
            gap[s] = g;
    }
}

int kref_sample_probs(const float *x, uint32_t V, const struct k_step *st, double *p, double *edge)
{
    int32_t top[K_SAMPLE_KEEP];
    double e[K_SAMPLE_KEEP], T = st->temperature;
    memset(p, 0, sizeof(double) * V);
    if (edge)
        *edge = INFINITY;
    uint32_t nv = kref_sample_topk(x, 0, V, K_SAMPLE_KEEP, top);
    double M = x[top[0]];
    if (!(st->temperature > 0.0f) || !(M > -INFINITY)) { /* tok = logits.argmax() */
        p[kref_sample_argmax(x, V)] = 1.0;
        return 0;
    }
    uint32_t k = st->top_k && st->top_k < nv ? st->top_k : nv;
    double Z = 0.0, c = 0.0;
    for (uint32_t i = 0; i < k; i++) /* e = ((topk.values - max) / T).exp() */
        Z += e[i] = exp((x[top[i]] - M) / T);
    if (!st->top_k) { /* Z = ((logits - max) / T).exp().sum() */
        Z = 0.0;
        for (uint32_t i = 0; i < V; i++)
            Z += exp((x[i] - M) / T);
    }
    double th = (double)st->top_p * Z;
    for (uint32_t i = 0; i < k; i++) { /* keep = cumsum(e) >= top_p * Z, first index */
        c += e[i];
        int last = st->top_k && i == k - 1; /* the top-k set ends here whatever top_p is */
        if (edge && !last && fabs(c - th) / Z < *edge)
            *edge = fabs(c - th) / Z;
        if (c >= th || (st->top_k && i == k - 1)) {
            for (uint32_t j = 0; j <= i; j++)
                p[top[j]] = e[j] / c;
            return 0;
        }
    }
    for (uint32_t i = 0; i < V; i++) /* probs = softmax(logits / T) */
        p[i] = exp((x[i] - M) / T) / Z;
    return 1;
}

/* The full-softmax draw: slice by mass with u, then the winner of its race. */
static int32_t draw_tail(const float *x, uint32_t V, const struct k_step *st, float M, float u,
                         double *margin)
{
    struct kref_cand *cand = malloc(sizeof *cand * K_SAMPLE_PARTS * K_SAMPLE_CAND);
    float gap[K_SAMPLE_PARTS], w[K_SAMPLE_PARTS], W = 0.0f;
    kref_sample_part(x, V, st, cand, gap);
    for (uint32_t s = 0; s < K_SAMPLE_PARTS; s++) {
        const struct kref_cand *c = cand + (size_t)s * K_SAMPLE_CAND;
        w[s] = c[0].id >= 0 && c[K_SAMPLE_KEEP].id >= 0
                   ? c[K_SAMPLE_KEEP].v * expf((c[0].v - M) / st->temperature)
                   : 0.0f;
        W += w[s];
    }
    float r = u * W, acc = 0.0f;
    int32_t tok = -1;
    *margin = INFINITY;
    for (uint32_t s = 0; s < K_SAMPLE_PARTS; s++) {
        if (w[s] <= 0.0f)
            continue;
        acc += w[s];
        if (fabs(acc - r) / W < *margin)
            *margin = fabs(acc - r) / W;
        if (tok < 0 && acc > r) {
            tok = cand[(size_t)s * K_SAMPLE_CAND + K_SAMPLE_KEEP].id;
            *margin = *margin < gap[s] ? *margin : gap[s];
        }
    }
    free(cand);
    return tok;
}

int32_t kref_sample_draw(const float *x, uint32_t V, const struct k_step *st, double *margin)
{
    int32_t top[K_SAMPLE_KEEP];
    float c[K_SAMPLE_KEEP], T = st->temperature, acc = 0.0f;
    *margin = INFINITY;
    uint32_t nv = kref_sample_topk(x, 0, V, K_SAMPLE_KEEP, top);
    float M = x[top[0]];
    if (!(T > 0.0f) || !(M > -INFINITY))
        return kref_sample_argmax(x, V);
    uint32_t k = st->top_k && st->top_k < nv ? st->top_k : nv;
    for (uint32_t i = 0; i < k; i++)
        c[i] = acc += expf((x[top[i]] - M) / T);
    float u = kref_sample_u(st->seed, st->n_new);
    float Z = c[k - 1];
    if (!st->top_k) { /* the kernel's normaliser: the slice summaries */
        struct kref_cand *cand = malloc(sizeof *cand * K_SAMPLE_PARTS * K_SAMPLE_CAND);
        kref_sample_part(x, V, st, cand, NULL);
        Z = 0.0f;
        for (uint32_t s = 0; s < K_SAMPLE_PARTS; s++) {
            const struct kref_cand *q = cand + (size_t)s * K_SAMPLE_CAND;
            if (q[0].id >= 0 && q[K_SAMPLE_KEEP].id >= 0)
                Z += q[K_SAMPLE_KEEP].v * expf((q[0].v - M) / T);
        }
        free(cand);
    }
    float th = st->top_p * Z;
    uint32_t j = k;
    for (uint32_t i = 0; i < k; i++) {
        double d = fabs((double)c[i] - th) / Z;
        *margin = d < *margin ? d : *margin;
        if (j == k && c[i] >= th)
            j = i;
    }
    if (j == k && st->top_k)
        j = k - 1;
    if (j == k)
        return draw_tail(x, V, st, M, u, margin);
    float r = u * c[j];
    uint32_t t = j;
    for (uint32_t i = 0; i <= j; i++) {
        double d = fabs((double)c[i] - r) / c[j];
        *margin = d < *margin ? d : *margin;
        if (t == j && c[i] > r)
            t = i;
    }
    return top[t];
}

int kref_sample_step(struct k_step *st, struct k_ring_entry *ring, int prefill, int32_t tok)
{
    if (prefill) {
        st->pos += st->n_tokens;
        if (!st->last_chunk)
            return 0;
    } else {
        if (st->done)
            return 0;
        st->pos++; /* the decode step consumed one position */
    }
    uint32_t n = st->n_new;
    ring[n % K_RING_SLOTS] = (struct k_ring_entry){tok, n + 1};
    st->token = tok;
    st->n_new = n + 1;
    int stop = st->n_new >= st->max_new || st->pos >= st->max_pos;
    for (uint32_t i = 0; i < st->n_stop && i < K_MAX_STOP_IDS; i++)
        stop |= st->stop_ids[i] == tok;
    if (stop)
        st->done = 1;
    return 1;
}
