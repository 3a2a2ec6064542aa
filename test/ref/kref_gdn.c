/* kref_gdn.c — CPU references of the Gated DeltaNet kernels (see kref_gdn.h).
 *
 * Written to be read next to MODEL.md §2.2: each function quotes the PyTorch it stands for.
 * The recurrence is the spec (HF's decode path); the chunked form follows HF's
 * torch_chunk_gated_delta_rule line by line in float, so that a test can tell the error of the
 * chunked algorithm itself from the error of a kernel. Nothing here is fast on purpose. */
#include "kref_gdn.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>


static float silu(float x)
{
    return x / (1.0f + expf(-x));
}
static float sigmoid(float x)
{
    return 1.0f / (1.0f + expf(-x));
}
/* F.softplus with beta 1, threshold 20 */
static float softplus(float x)
{
    return x > 20.0f ? x : log1pf(expf(x));
}
static float bfr(float x)
{
    return kref_bf2f(kref_f2bf(x));
} /* a bf16 op's result */

static void *xcalloc(size_t n, size_t size)
{
    void *p = calloc(n ? n : 1, size);
    if (!p)
        abort();
    return p;
}

/* mixed_qkv = F.silu(self.conv1d(mixed_qkv)[..., :seq_len])   (torch fallback: two bf16 ops)
 * with the cache: causal_conv1d_fn over [conv_state; x], conv_state = last K-1 inputs.
 * The taps are summed in fp32 with fmaf, oldest first (cuDNN's order is its own; the products
 * are exact, so only the summation order can move the bf16 rounding). */
void kref_gdn_conv(const struct k_gdn_dims *d, const uint16_t *qkv, const uint16_t *conv_w,
                   uint16_t *window, uint32_t T, uint16_t *out)
{
    uint32_t cd = d->conv_dim, K = d->kernel;
    uint16_t *xin = xcalloc((size_t)T + K, sizeof *xin); /* (K-1 + T) inputs of one channel */
    for (uint32_t c = 0; c < cd; c++) {
        for (uint32_t j = 0; j + 1 < K; j++)
            xin[j] = window[(size_t)c * (K - 1) + j];
        for (uint32_t t = 0; t < T; t++)
            xin[K - 1 + t] = qkv[(size_t)t * cd + c];
        for (uint32_t t = 0; t < T; t++) {
            float acc = 0.0f; /* u[t,c] = sum_j Wc[c,j] * xin[t - (K-1) + j, c] */
            for (uint32_t j = 0; j < K; j++)
                acc =
                    fmaf(kref_bf2f(conv_w[(size_t)c * K + j]), kref_bf2f(xin[t + j]), acc);
            out[(size_t)t * cd + c] = kref_f2bf(silu(bfr(acc)));
        }
        for (uint32_t j = 0; j + 1 < K; j++) /* the last K-1 of [window; x] */
            window[(size_t)c * (K - 1) + j] = xin[T + j];
    }
    free(xin);
}

/* beta = b.sigmoid()                                            (bf16 op)
 * g = -self.A_log.float().exp() * F.softplus(a.float() + self.dt_bias)   (fp32) */
void kref_gdn_gates(uint16_t b, uint16_t a, float a_log, uint16_t dt_bias, float *beta, float *g)
{
    *beta = bfr(sigmoid(kref_bf2f(b)));
    *g = -expf(a_log) * softplus(kref_bf2f(a) + kref_bf2f(dt_bias));
}

/* l2norm(x) = x * torch.rsqrt((x * x).sum(dim=-1, keepdim=True) + 1e-6), in fp32 */
static void l2norm(float *y, const uint16_t *x, uint32_t n, float scale)
{
    double ss = 0;
    for (uint32_t i = 0; i < n; i++)
        ss += (double)kref_bf2f(x[i]) * kref_bf2f(x[i]);
    float r = 1.0f / sqrtf((float)ss + 1e-6f);
    for (uint32_t i = 0; i < n; i++)
        y[i] = kref_bf2f(x[i]) * r * scale;
}

/* torch_recurrent_gated_delta_rule, per token t and value head hv (key head hv / (nv/nk)):
 *   last_recurrent_state = last_recurrent_state * g_t                 (g_t = g.exp())
 *   kv_mem = (last_recurrent_state * k_t.unsqueeze(-1)).sum(dim=-2)
 *   delta = (v_t - kv_mem) * beta_t
 *   last_recurrent_state = last_recurrent_state + k_t.unsqueeze(-1) * delta.unsqueeze(-2)
 *   core_attn_out[:, :, i] = (last_recurrent_state * q_t.unsqueeze(-1)).sum(dim=-2) */
void kref_gdn_recurrent(const struct k_gdn_dims *d, const uint16_t *u, const uint16_t *b,
                        const uint16_t *a, const float *a_log, const uint16_t *dt_bias,
                        float *state, uint32_t T, float *core, float *mag)
{
    uint32_t dk = d->dk, dv = d->dv, nv = d->nv, cd = d->conv_dim, kd = d->nk * dk;
    float *q = xcalloc(dk, sizeof *q), *k = xcalloc(dk, sizeof *k), *kv = xcalloc(dv, sizeof *kv);
    float scale = 1.0f / sqrtf((float)dk);
    for (uint32_t t = 0; t < T; t++) {
        const uint16_t *ut = u + (size_t)t * cd;
        for (uint32_t hv = 0; hv < nv; hv++) {
            uint32_t hk = hv / (nv / d->nk);
            float beta, g;
            kref_gdn_gates(b[(size_t)t * nv + hv], a[(size_t)t * nv + hv], a_log[hv], dt_bias[hv],
                           &beta, &g);
            l2norm(q, ut + (size_t)hk * dk, dk, scale);
            l2norm(k, ut + kd + (size_t)hk * dk, dk, 1.0f);
            const uint16_t *v = ut + 2 * kd + (size_t)hv * dv;
            float *S = state + (size_t)hv * dk * dv; /* (dk, dv) */
            float decay = expf(g);
            for (uint32_t j = 0; j < dv; j++) {
                double acc = 0;
                for (uint32_t i = 0; i < dk; i++) {
                    S[(size_t)i * dv + j] *= decay;
                    acc += (double)S[(size_t)i * dv + j] * k[i];
                }
                kv[j] = (float)acc;
            }
            float *o = core + (size_t)t * nv * dv + (size_t)hv * dv;
            for (uint32_t j = 0; j < dv; j++) {
                float delta = (kref_bf2f(v[j]) - kv[j]) * beta;
                double acc = 0, m = 0;
                for (uint32_t i = 0; i < dk; i++) {
                    S[(size_t)i * dv + j] += k[i] * delta;
                    acc += (double)S[(size_t)i * dv + j] * q[i];
                    m += fabs((double)S[(size_t)i * dv + j] * q[i]);
                }
                o[j] = (float)acc;
                if (mag)
                    mag[(size_t)t * nv * dv + (size_t)hv * dv + j] = (float)m;
            }
        }
    }
    free(q), free(k), free(kv);
}

/* One chunk of torch_chunk_gated_delta_rule for one head, C = K_GDN_CHUNK rows (the padded
 * rows hold q = k = v = 0, beta = 0, g = 0). Q (C, dk) scaled, K (C, dk), V (C, dv), beta (C),
 * gam (C) the in-chunk cumsum of g, S (dk, dv) updated, O (C, dv). */
static void chunk_one(uint32_t dk, uint32_t dv, const float *Q, const float *K, const float *V,
                      const float *beta, const float *gam, float *S, float *O)
{
    enum { C = K_GDN_CHUNK };
    float *A = xcalloc(C * C, sizeof *A), *U = xcalloc((size_t)C * dv, sizeof *U);
    float *W = xcalloc((size_t)C * dk, sizeof *W), *Vn = xcalloc((size_t)C * dv, sizeof *Vn);
    /* attn = -((k_beta @ key.transpose(-1, -2)) * decay_mask).masked_fill(mask, 0)  (j >= i) */
    for (uint32_t i = 0; i < C; i++)
        for (uint32_t j = 0; j < i; j++) {
            float s = 0;
            for (uint32_t r = 0; r < dk; r++)
                s += K[i * dk + r] * beta[i] * K[j * dk + r];
            A[i * C + j] = -(s * expf(gam[i] - gam[j]));
        }
    /* for i in range(1, C): attn[i, :i] = row + (row.unsqueeze(-1) * sub).sum(-2) */
    for (uint32_t i = 1; i < C; i++) {
        float row[C];
        for (uint32_t j = 0; j < i; j++)
            row[j] = A[i * C + j];
        for (uint32_t j = 0; j < i; j++) {
            float s = 0;
            for (uint32_t m = 0; m < i; m++)
                s += row[m] * A[m * C + j];
            A[i * C + j] = row[j] + s;
        }
    }
    for (uint32_t i = 0; i < C; i++) /* attn = attn + eye */
        A[i * C + i] = 1.0f;
    /* value = attn @ v_beta; k_cumdecay = attn @ (k_beta * g.exp().unsqueeze(-1)) */
    for (uint32_t i = 0; i < C; i++) {
        for (uint32_t c = 0; c < dv; c++) {
            float s = 0;
            for (uint32_t j = 0; j <= i; j++)
                s += A[i * C + j] * (V[j * dv + c] * beta[j]);
            U[i * dv + c] = s;
        }
        for (uint32_t r = 0; r < dk; r++) {
            float s = 0;
            for (uint32_t j = 0; j <= i; j++)
                s += A[i * C + j] * (K[j * dk + r] * beta[j] * expf(gam[j]));
            W[i * dk + r] = s;
        }
    }
    /* v_new = v_i - k_cumdecay @ last_recurrent_state */
    for (uint32_t i = 0; i < C; i++)
        for (uint32_t c = 0; c < dv; c++) {
            float s = 0;
            for (uint32_t r = 0; r < dk; r++)
                s += W[i * dk + r] * S[(size_t)r * dv + c];
            Vn[i * dv + c] = U[i * dv + c] - s;
        }
    /* attn = (q_i @ k_i.transpose(-1, -2) * decay_mask).masked_fill_(mask, 0)        (j > i)
     * core = (q_i * g.exp()) @ last_recurrent_state + attn @ v_new */
    for (uint32_t i = 0; i < C; i++)
        for (uint32_t c = 0; c < dv; c++) {
            float s = 0, e = expf(gam[i]);
            for (uint32_t r = 0; r < dk; r++)
                s += Q[i * dk + r] * e * S[(size_t)r * dv + c];
            for (uint32_t j = 0; j <= i; j++) {
                float qk = 0;
                for (uint32_t r = 0; r < dk; r++)
                    qk += Q[i * dk + r] * K[j * dk + r];
                s += qk * expf(gam[i] - gam[j]) * Vn[j * dv + c];
            }
            O[i * dv + c] = s;
        }
    /* S = S * g[-1].exp() + (k_i * (g[-1] - g).exp()[..., None]).transpose(-1, -2) @ v_new */
    for (uint32_t r = 0; r < dk; r++)
        for (uint32_t c = 0; c < dv; c++) {
            float s = S[(size_t)r * dv + c] * expf(gam[C - 1]);
            for (uint32_t i = 0; i < C; i++)
                s += K[i * dk + r] * expf(gam[C - 1] - gam[i]) * Vn[i * dv + c];
            S[(size_t)r * dv + c] = s;
        }
    free(A), free(U), free(W), free(Vn);
}

void kref_gdn_chunked(const struct k_gdn_dims *d, const uint16_t *u, const uint16_t *b,
                      const uint16_t *a, const float *a_log, const uint16_t *dt_bias, float *state,
                      uint32_t T, float *core)
{
    enum { C = K_GDN_CHUNK };
    uint32_t dk = d->dk, dv = d->dv, nv = d->nv, cd = d->conv_dim, kd = d->nk * dk;
    float *Q = xcalloc((size_t)C * dk, sizeof *Q), *K = xcalloc((size_t)C * dk, sizeof *K);
    float *V = xcalloc((size_t)C * dv, sizeof *V), *O = xcalloc((size_t)C * dv, sizeof *O);
    float beta[C], gam[C], scale = 1.0f / sqrtf((float)dk);
    for (uint32_t hv = 0; hv < nv; hv++) {
        uint32_t hk = hv / (nv / d->nk);
        for (uint32_t t0 = 0; t0 < T; t0 += C) {
            float cum = 0; /* g = g.cumsum(dim=-1) inside the chunk */
            for (uint32_t i = 0; i < C; i++) {
                uint32_t t = t0 + i;
                float g = 0;
                beta[i] = 0;
                memset(Q + i * dk, 0, sizeof(float) * dk),
                    memset(K + i * dk, 0, sizeof(float) * dk);
                memset(V + i * dv, 0, sizeof(float) * dv);
                if (t < T) {
                    const uint16_t *ut = u + (size_t)t * cd;
                    kref_gdn_gates(b[(size_t)t * nv + hv], a[(size_t)t * nv + hv], a_log[hv],
                                   dt_bias[hv], &beta[i], &g);
                    l2norm(Q + i * dk, ut + (size_t)hk * dk, dk, scale);
                    l2norm(K + i * dk, ut + kd + (size_t)hk * dk, dk, 1.0f);
                    for (uint32_t c = 0; c < dv; c++)
                        V[i * dv + c] = kref_bf2f(ut[2 * kd + (size_t)hv * dv + c]);
                }
                gam[i] = cum += g;
            }
            chunk_one(dk, dv, Q, K, V, beta, gam, state + (size_t)hv * dk * dv, O);
            for (uint32_t i = 0; i < C && t0 + i < T; i++)
                memcpy(core + (size_t)(t0 + i) * nv * dv + (size_t)hv * dv, O + i * dv,
                       sizeof(float) * dv);
        }
    }
    free(Q), free(K), free(V), free(O);
}

/* Qwen3_5MoeRMSNormGated.forward (MODEL.md 2.1b), per value head over dv:
 *   hidden_states = hidden_states.to(torch.float32)
 *   variance = hidden_states.pow(2).mean(-1, keepdim=True)
 *   hidden_states = hidden_states * torch.rsqrt(variance + self.variance_epsilon)
 *   hidden_states = self.weight * hidden_states.to(input_dtype)       (w fp32: no rounding)
 *   hidden_states = hidden_states * F.silu(gate.to(torch.float32))
 *   return hidden_states.to(input_dtype) */
void kref_gdn_gnorm(const struct k_gdn_dims *d, const uint16_t *core, const uint16_t *z,
                    const float *w, uint32_t T, uint16_t *out)
{
    uint32_t dv = d->dv;
    for (size_t row = 0; row < (size_t)T * d->nv; row++) {
        const uint16_t *x = core + row * dv, *zr = z + row * dv;
        double ss = 0;
        for (uint32_t j = 0; j < dv; j++)
            ss += (double)kref_bf2f(x[j]) * kref_bf2f(x[j]);
        float r = 1.0f / sqrtf((float)(ss / dv) + d->eps);
        for (uint32_t j = 0; j < dv; j++) {
            float y = bfr(kref_bf2f(x[j]) * r);
            out[row * dv + j] = kref_f2bf(w[j] * y * silu(kref_bf2f(zr[j])));
        }
    }
}
