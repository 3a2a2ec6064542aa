/* ref.c — the CPU reference forward of Qwen3.5-MoE in float32 (see ref.h).
 *
 * Written to be read next to ../shared/MODEL.md §2: one function per block, PyTorch quoted
 * beside the loops, shapes on every buffer. Nothing here is fast on purpose. */
#include "ref.h"

#include "kref_bf16.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- small maths ----------------------------------------------------------------------- */

/* y (n) = W (n, d) @ x (d): nn.Linear without bias, accumulated in double so the reference
 * is not the noisiest party in a comparison */
static void matvec(float *y, const float *W, const float *x, int n, int d)
{
    for (int i = 0; i < n; i++) {
        double acc = 0;
        const float *w = W + (size_t)i * d;
        for (int j = 0; j < d; j++)
            acc += (double)w[j] * x[j];
        y[i] = (float)acc;
    }
}

/* v (n) as a bf16 run holds it: rounded when the model emulates bf16 (ref_model.bf16_acts) */
static void rb(const struct ref_model *m, float *v, size_t n)
{
    for (size_t i = 0; m->bf16_acts && i < n; i++)
        v[i] = kref_round(v[i]);
}

static float rb1(const struct ref_model *m, float x) { return m->bf16_acts ? kref_round(x) : x; }

static float silu(float x) { return x / (1.0f + expf(-x)); }
static float sigmoid(float x) { return 1.0f / (1.0f + expf(-x)); }
/* F.softplus with beta 1, threshold 20 */
static float softplus(float x) { return x > 20.0f ? x : log1pf(expf(x)); }

/* Qwen3_5MoeRMSNorm: x * rsqrt(mean(x^2) + eps) * (1 + w), in fp32 */
static void rmsnorm1p(float *y, const float *x, const float *w, int n, float eps)
{
    double ss = 0;
    for (int i = 0; i < n; i++)
        ss += (double)x[i] * x[i];
    float r = 1.0f / sqrtf((float)(ss / n) + eps);
    for (int i = 0; i < n; i++)
        y[i] = x[i] * r * (1.0f + w[i]);
}

/* l2norm of the GDN kernels: x * rsqrt(sum(x^2) + 1e-6) (sum, not mean) */
static void l2norm(float *y, const float *x, int n)
{
    double ss = 0;
    for (int i = 0; i < n; i++)
        ss += (double)x[i] * x[i];
    float r = 1.0f / sqrtf((float)ss + 1e-6f);
    for (int i = 0; i < n; i++)
        y[i] = x[i] * r;
}

/* ---- Gated DeltaNet (MODEL.md §2.2), one token ------------------------------------------ */

static void gated_deltanet(const struct ref_model *m, const struct ref_layer *L, float *conv_win,
                           float *S, const float *h, float *out)
{
    const struct model_config *c = &m->c;
    int H = (int)c->hidden_size, K = (int)c->conv_kernel;
    int nk = (int)c->lin_num_k_heads, nv = (int)c->lin_num_v_heads;
    int dk = (int)c->lin_k_head_dim, dv = (int)c->lin_v_head_dim;
    int kd = nk * dk, vd = nv * dv, cd = 2 * kd + vd;
    float *mixed = malloc(sizeof(float) * (size_t)cd);   /* (conv_dim) pre-conv q|k|v */
    float *u = malloc(sizeof(float) * (size_t)cd);       /* (conv_dim) post-conv, post-SiLU */
    float *z = malloc(sizeof(float) * (size_t)vd);       /* (nv*dv) */
    float *o = malloc(sizeof(float) * (size_t)vd);       /* (nv*dv) core output, then gated-normed */
    float *bl = malloc(sizeof(float) * (size_t)nv), *al = malloc(sizeof(float) * (size_t)nv);
    float *qn = malloc(sizeof(float) * (size_t)dk), *kn = malloc(sizeof(float) * (size_t)dk);
    float *kv_mem = malloc(sizeof(float) * (size_t)dv);

    /* mixed_qkv = h @ in_proj_qkv^T; z = h @ in_proj_z^T; b = h @ in_proj_b^T; a = h @ in_proj_a^T */
    matvec(mixed, L->qkv, h, cd, H);
    matvec(z, L->z, h, vd, H);
    matvec(bl, L->b, h, nv, H);
    matvec(al, L->a, h, nv, H);
    rb(m, mixed, (size_t)cd), rb(m, z, (size_t)vd), rb(m, bl, (size_t)nv), rb(m, al, (size_t)nv);

    /* causal depthwise conv over [previous K-1 inputs, current]; then SiLU.
     * u[c] = sum_j Wc[c, j] * xin[t - (K-1) + j, c] */
    for (int ch = 0; ch < cd; ch++) {
        float *win = conv_win + (size_t)ch * (K - 1);
        const float *w = L->conv + (size_t)ch * K;
        double acc = (double)w[K - 1] * mixed[ch];
        for (int j = 0; j < K - 1; j++)
            acc += (double)w[j] * win[j];
        u[ch] = rb1(m, silu(rb1(m, (float)acc)));
        for (int j = 0; j + 1 < K - 1; j++) /* slide the window: keep the last K-1 inputs */
            win[j] = win[j + 1];
        if (K > 1)
            win[K - 2] = mixed[ch];
    }
    const float *q = u, *k = u + kd, *v = u + 2 * kd;

    /* delta rule per value head; value head hv reads q/k head hv / (nv/nk) (repeat_interleave) */
    float scale = 1.0f / sqrtf((float)dk);
    for (int hv = 0; hv < nv; hv++) {
        int hk = hv / (nv / nk);
        /* beta = sigmoid(b); g = -exp(A_log) * softplus(a + dt_bias) */
        float beta = rb1(m, sigmoid(bl[hv]));
        float g = -expf(L->a_log[hv]) * softplus(al[hv] + L->dt_bias[hv]);
        l2norm(qn, q + (size_t)hk * dk, dk);
        l2norm(kn, k + (size_t)hk * dk, dk);
        for (int i = 0; i < dk; i++)
            qn[i] *= scale;
        float *Sh = S + (size_t)hv * dk * dv; /* (dk, dv) */
        float decay = expf(g);
        /* S = S * exp(g); kv_mem = S^T k */
        for (int j = 0; j < dv; j++)
            kv_mem[j] = 0;
        for (int i = 0; i < dk; i++)
            for (int j = 0; j < dv; j++) {
                Sh[(size_t)i * dv + j] *= decay;
                kv_mem[j] += Sh[(size_t)i * dv + j] * kn[i];
            }
        /* delta = (v - kv_mem) * beta; S += outer(k, delta); o = S^T q */
        const float *vh = v + (size_t)hv * dv;
        float *oh = o + (size_t)hv * dv;
        for (int j = 0; j < dv; j++) {
            float delta = (vh[j] - kv_mem[j]) * beta;
            double acc = 0;
            for (int i = 0; i < dk; i++) {
                Sh[(size_t)i * dv + j] += kn[i] * delta;
                acc += (double)Sh[(size_t)i * dv + j] * qn[i];
            }
            oh[j] = rb1(m, (float)acc); /* core_attn_out.to(bf16) */
        }
        /* RMSNormGated: w * (o * rsqrt(mean(o^2) + eps)) * silu(z), per value head, plain w */
        double ss = 0;
        for (int j = 0; j < dv; j++)
            ss += (double)oh[j] * oh[j];
        float r = 1.0f / sqrtf((float)(ss / dv) + c->rms_norm_eps);
        for (int j = 0; j < dv; j++) /* weight * normed.to(bf16), times silu(gate.float()) */
            oh[j] = rb1(m, rb1(m, L->gnorm[j] * rb1(m, oh[j] * r)) * silu(z[(size_t)hv * dv + j]));
    }
    /* out = o @ out_proj^T */
    matvec(out, L->out, o, H, vd);
    rb(m, out, (size_t)H);
    free(mixed), free(u), free(z), free(o), free(bl), free(al), free(qn), free(kn), free(kv_mem);
}

/* ---- gated attention (MODEL.md §2.3), one token ---------------------------------------- */

/* partial RoPE, "half" convention: frequency i rotates dims i and i + rd/2 */
static void rope(const struct ref_model *m, float *x, int rd, uint32_t pos)
{
    int half = rd / 2;
    for (int i = 0; i < half; i++) {
        float f = (float)pos * m->inv_freq[i];
        float cs = rb1(m, cosf(f)), sn = rb1(m, sinf(f)); /* bf16: cos, sin .to(x.dtype) */
        float x1 = x[i], x2 = x[i + half];
        /* x * cos + rotate_half(x) * sin, rotate_half = [-x2, x1]; bf16 rounds each op */
        x[i] = rb1(m, rb1(m, x1 * cs) - rb1(m, x2 * sn));
        x[i + half] = rb1(m, rb1(m, x2 * cs) + rb1(m, x1 * sn));
    }
}

static void gated_attention(const struct ref_model *m, const struct ref_layer *L, float *kc,
                            float *vc, uint32_t max_seq, uint32_t pos, const float *h, float *out)
{
    const struct model_config *c = &m->c;
    int H = (int)c->hidden_size, nh = (int)c->num_heads, nkv = (int)c->num_kv_heads;
    int hd = (int)c->head_dim, rd = (int)c->rotary_dim, group = nh / nkv;
    float *qg = malloc(sizeof(float) * (size_t)nh * 2 * hd); /* (nh, 2*hd) query | gate */
    float *q = malloc(sizeof(float) * (size_t)nh * hd);      /* (nh, hd) */
    float *kv = malloc(sizeof(float) * (size_t)nkv * hd);    /* (nkv, hd) */
    float *o = malloc(sizeof(float) * (size_t)nh * hd);      /* (nh, hd) */
    float *att = malloc(sizeof(float) * (pos + 1));

    /* qg = (h @ q_proj^T).view(nh, 2*hd); q = RMSNorm1p(qg[..., :hd], q_norm); rope */
    matvec(qg, L->wq, h, nh * 2 * hd, H);
    rb(m, qg, (size_t)nh * 2 * hd);
    for (int n = 0; n < nh; n++) {
        rmsnorm1p(q + (size_t)n * hd, qg + (size_t)n * 2 * hd, L->q_norm, hd, c->rms_norm_eps);
        rb(m, q + (size_t)n * hd, (size_t)hd);
        rope(m, q + (size_t)n * hd, rd, pos);
    }
    /* k = RMSNorm1p(h @ k_proj^T, k_norm), rope, append; v = h @ v_proj^T, append */
    matvec(kv, L->wk, h, nkv * hd, H);
    rb(m, kv, (size_t)nkv * hd);
    for (int n = 0; n < nkv; n++) {
        float *dst = kc + ((size_t)n * max_seq + pos) * hd;
        rmsnorm1p(dst, kv + (size_t)n * hd, L->k_norm, hd, c->rms_norm_eps);
        rb(m, dst, (size_t)hd);
        rope(m, dst, rd, pos);
    }
    matvec(kv, L->wv, h, nkv * hd, H);
    rb(m, kv, (size_t)nkv * hd);
    for (int n = 0; n < nkv; n++)
        memcpy(vc + ((size_t)n * max_seq + pos) * hd, kv + (size_t)n * hd, sizeof(float) * (size_t)hd);

    /* softmax(q k^T / sqrt(hd)) v over positions 0..pos; query head n reads kv head n / group */
    float scale = 1.0f / sqrtf((float)hd);
    for (int n = 0; n < nh; n++) {
        const float *qh = q + (size_t)n * hd;
        const float *K = kc + (size_t)(n / group) * max_seq * hd;
        const float *V = vc + (size_t)(n / group) * max_seq * hd;
        float mx = -INFINITY;
        for (uint32_t t = 0; t <= pos; t++) {
            double s = 0;
            for (int i = 0; i < hd; i++)
                s += (double)qh[i] * K[(size_t)t * hd + i];
            att[t] = rb1(m, rb1(m, (float)s) * scale); /* matmul, then * scaling */
            mx = att[t] > mx ? att[t] : mx;
        }
        double sum = 0;
        for (uint32_t t = 0; t <= pos; t++) {
            att[t] = expf(att[t] - mx);
            sum += att[t];
        }
        for (uint32_t t = 0; m->bf16_acts && t <= pos; t++) /* softmax in fp32, then .to(bf16) */
            att[t] = kref_round((float)(att[t] / sum));
        if (m->bf16_acts)
            sum = 1;
        for (int i = 0; i < hd; i++) {
            double acc = 0;
            for (uint32_t t = 0; t <= pos; t++)
                acc += (double)att[t] * V[(size_t)t * hd + i];
            /* o = attn * sigmoid(gate), the gate being the raw q_proj output */
            float gate = qg[(size_t)n * 2 * hd + hd + i];
            o[(size_t)n * hd + i] = rb1(m, rb1(m, (float)(acc / sum)) * rb1(m, sigmoid(gate)));
        }
    }
    /* out = o @ o_proj^T */
    matvec(out, L->wo, o, H, nh * hd);
    rb(m, out, (size_t)H);
    free(qg), free(q), free(kv), free(o), free(att);
}

/* ---- sparse MoE (MODEL.md §2.4), one token --------------------------------------------- */

static void moe(const struct ref_model *m, const struct ref_layer *L, const float *h, float *out,
                struct ref_state *s, int32_t layer)
{
    const struct model_config *c = &m->c;
    int H = (int)c->hidden_size, E = (int)c->num_experts, topk = (int)c->num_experts_per_tok;
    int I = (int)c->moe_inter, S = (int)c->shared_inter;
    int wmax = I > S ? I : S;
    float *p = malloc(sizeof(float) * (size_t)E), *lg = malloc(sizeof(float) * (size_t)E);
    float *gu = malloc(sizeof(float) * 2 * (size_t)wmax); /* (2*I) gate | up */
    float *act = malloc(sizeof(float) * (size_t)wmax);
    float *y = malloc(sizeof(float) * (size_t)H);
    int *sel = malloc(sizeof(int) * (size_t)topk);
    double *acc = calloc((size_t)H, sizeof(double));

    /* p = softmax(h @ gate^T) in fp32 */
    matvec(p, L->router, h, E, H);
    rb(m, p, (size_t)E);
    memcpy(lg, p, sizeof(float) * (size_t)E);
    float mx = -INFINITY;
    for (int e = 0; e < E; e++)
        mx = p[e] > mx ? p[e] : mx;
    double sum = 0;
    for (int e = 0; e < E; e++) {
        p[e] = expf(p[e] - mx);
        sum += p[e];
    }
    for (int e = 0; e < E; e++)
        p[e] = (float)(p[e] / sum);
    /* top-k by probability, descending; ties go to the lower expert id */
    double wsum = 0;
    for (int k = 0; k < topk; k++) {
        int best = -1;
        for (int e = 0; e < E; e++) {
            int taken = 0;
            for (int j = 0; j < k; j++)
                taken |= sel[j] == e;
            if (!taken && (best < 0 || p[e] > p[best]))
                best = e;
        }
        sel[k] = best;
    }
    /* a forced pick (ref_state.force_mask): the other side of a near-tie */
    for (int k = 0; k < topk && layer < 64 && (s->force_mask >> layer & 1); k++)
        sel[k] = sel[k] == s->force_drop[layer] ? s->force_take[layer] : sel[k];
    for (int k = 0; k < topk; k++)
        wsum += p[sel[k]];
    /* the router's nearest tie: the logit gap between the last expert picked and each one left
     * out, in bf16 spacings of the layer's largest logit. A bf16 run's error on each logit
     * scales with the logits as a whole (the normed input's error times the router rows), not
     * with the two logits at the tie, which may sit near zero by chance */
    float big = 0;
    for (int e = 0; e < E; e++)
        big = fabsf(lg[e]) > big ? fabsf(lg[e]) : big;
    for (int e = 0; e < E && topk < E; e++) {
        int taken = 0;
        for (int j = 0; j < topk; j++)
            taken |= sel[j] == e;
        float a = lg[sel[topk - 1]], b = lg[e];
        float g = taken || big == 0 ? INFINITY : (a - b) / kref_bf16_ulp(big);
        if (g < s->router_gap)
            s->router_gap = g, s->tie_layer = layer, s->tie_picked = sel[topk - 1], s->tie_left = e;
        if (g < s->layer_gap[layer])
            s->layer_gap[layer] = g, s->layer_picked[layer] = sel[topk - 1], s->layer_left[layer] = e;
    }
    /* routed = sum_k (w_k / sum w) * down_e(silu(gate_e h) * up_e h) */
    for (int k = 0; k < topk; k++) {
        int e = sel[k];
        float w = rb1(m, (float)(p[e] / wsum));
        matvec(gu, L->gate_up + (size_t)e * 2 * I * H, h, 2 * I, H);
        rb(m, gu, 2 * (size_t)I);
        for (int i = 0; i < I; i++)
            act[i] = rb1(m, rb1(m, silu(gu[i])) * gu[I + i]);
        matvec(y, L->down + (size_t)e * H * I, act, H, I);
        rb(m, y, (size_t)H);
        for (int i = 0; i < H; i++) /* bf16: index_add_ into a bf16 buffer */
            acc[i] = m->bf16_acts ? kref_round((float)acc[i] + kref_round(w * y[i])) : acc[i] + (double)w * y[i];
    }
    /* shared = sigmoid(h . shared_expert_gate) * down_s(silu(gate_s h) * up_s h) */
    if (S > 0) {
        matvec(gu, L->sh_gate, h, S, H);
        matvec(gu + S, L->sh_up, h, S, H);
        rb(m, gu, 2 * (size_t)S);
        for (int i = 0; i < S; i++)
            act[i] = rb1(m, rb1(m, silu(gu[i])) * gu[S + i]);
        matvec(y, L->sh_down, act, H, S);
        rb(m, y, (size_t)H);
        float g;
        matvec(&g, L->sh_gate_w, h, 1, H);
        g = rb1(m, sigmoid(rb1(m, g)));
        for (int i = 0; i < H; i++) /* bf16: routed + sigmoid(g) * shared */
            acc[i] = m->bf16_acts ? kref_round((float)acc[i] + kref_round(g * y[i])) : acc[i] + (double)g * y[i];
    }
    for (int i = 0; i < H; i++)
        out[i] = (float)acc[i];
    free(p), free(lg), free(gu), free(act), free(y), free(sel), free(acc);
}

/* ---- the whole model, one token -------------------------------------------------------- */

int ref_step(const struct ref_model *m, struct ref_state *s, int32_t token, float *logits)
{
    const struct model_config *c = &m->c;
    int H = (int)c->hidden_size;
    if (token < 0 || (uint32_t)token >= c->vocab_size || s->pos >= s->max_seq)
        return -1;
    float *x = malloc(sizeof(float) * (size_t)H);   /* (H) residual stream */
    float *hn = malloc(sizeof(float) * (size_t)H);  /* (H) normed input of a block */
    float *out = malloc(sizeof(float) * (size_t)H); /* (H) block output */

    /* x = embed_tokens[token] */
    memcpy(x, m->embed + (size_t)token * H, sizeof(float) * (size_t)H);
    s->router_gap = INFINITY;
    s->tie_layer = -1;
    for (uint32_t l = 0; l < c->num_layers; l++)
        s->layer_gap[l] = INFINITY, s->layer_picked[l] = s->layer_left[l] = -1;
    for (uint32_t l = 0; l < c->num_layers; l++) {
        const struct ref_layer *L = &m->layers[l];
        /* x = x + mixer(RMSNorm1p(x, input_layernorm)) */
        rmsnorm1p(hn, x, L->in_norm, H, c->rms_norm_eps);
        rb(m, hn, (size_t)H);
        if (L->type == MODEL_LAYER_LINEAR)
            gated_deltanet(m, L, s->conv_win[l], s->ssm[l], hn, out);
        else
            gated_attention(m, L, s->k_cache[l], s->v_cache[l], s->max_seq, s->pos, hn, out);
        for (int i = 0; i < H; i++)
            x[i] = rb1(m, x[i] + out[i]);
        /* x = x + moe(RMSNorm1p(x, post_attention_layernorm)) */
        rmsnorm1p(hn, x, L->post_norm, H, c->rms_norm_eps);
        rb(m, hn, (size_t)H);
        moe(m, L, hn, out, s, (int32_t)l);
        for (int i = 0; i < H; i++)
            x[i] = rb1(m, x[i] + out[i]);
    }
    /* logits = RMSNorm1p(x, norm) @ lm_head^T */
    if (logits) {
        rmsnorm1p(hn, x, m->final_norm, H, c->rms_norm_eps);
        rb(m, hn, (size_t)H);
        matvec(logits, m->lm_head, hn, (int)c->vocab_size, H);
        rb(m, logits, c->vocab_size);
    }
    s->pos++;
    s->force_mask = 0;
    free(x), free(hn), free(out);
    return 0;
}

int ref_step_branches(const struct ref_model *m, struct ref_state *s, struct ref_state *tmp, int32_t token,
                      float *logits, float *alts, int max_alts, float tie_gap)
{
    ref_state_copy(tmp, s, m);
    uint64_t mask = 0;
    if (ref_step(m, s, token, logits))
        return -1;
    for (uint32_t l = 0; l < m->c.num_layers && l < 64; l++)
        if (s->layer_gap[l] < tie_gap && s->layer_picked[l] >= 0) {
            mask |= 1ull << l;
            tmp->force_drop[l] = s->layer_picked[l], tmp->force_take[l] = s->layer_left[l];
        }
    if (!mask)
        return 0;
    int n = 0;
    struct ref_state *save = malloc(sizeof *save);
    if (!save || ref_state_init(save, m, s->max_seq)) {
        free(save);
        return -1;
    }
    ref_state_copy(save, tmp, m); /* the state before the step */
    for (uint32_t l = 0; l < 64 && n < max_alts; l++) {
        if (!(mask >> l & 1))
            continue;
        ref_state_copy(tmp, save, m);
        tmp->force_mask = 1ull << l;
        if (ref_step(m, tmp, token, alts + (size_t)n++ * m->c.vocab_size))
            n = -1;
    }
    if (n >= 0 && (mask & (mask - 1)) && n < max_alts) {
        ref_state_copy(tmp, save, m);
        tmp->force_mask = mask;
        if (ref_step(m, tmp, token, alts + (size_t)n++ * m->c.vocab_size))
            n = -1;
    }
    ref_state_free(save, m);
    free(save);
    return n;
}
