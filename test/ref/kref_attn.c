/* kref_attn.c — CPU references of the gated attention kernels (see kref_attn.h).
 *
 * Written to be read next to ../shared/MODEL.md §2.3 and HF's Qwen3_5Moe attention: the
 * PyTorch expression is quoted beside each loop. Sums of squares, dot products and softmax
 * sums are accumulated in double so that the reference is not the noisiest party in a
 * comparison; the bf16 rounding points are PyTorch's. */
#include "kref_attn.h"

#include <math.h>
#include <stdlib.h>

/* Qwen3_5MoeRMSNorm over one head, rounded to bf16 as output.type_as(x):
 *   x = x.float(); x = x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps)
 *   return (x * (1.0 + w.float())).to(bf16) */
static void rmsnorm1p_head(float *y, const uint16_t *x, const uint16_t *w, uint32_t hd, float eps)
{
    double ss = 0;
    for (uint32_t i = 0; i < hd; i++)
        ss += (double)kref_bf2f(x[i]) * kref_bf2f(x[i]);
    float r = 1.0f / sqrtf((float)(ss / hd) + eps);
    for (uint32_t i = 0; i < hd; i++)
        y[i] = kref_round(kref_bf2f(x[i]) * r * (1.0f + kref_bf2f(w[i])));
}

/* Qwen3_5MoeTextRotaryEmbedding at one position, cast to bf16 (x.dtype):
 *   inv_freq = 1.0 / (theta ** (torch.arange(0, rd, 2).float() / rd))      (fp32)
 *   freqs = inv_freq[None, :] @ pos.float()                                 (fp32)
 *   cos, sin = cat(freqs, freqs).cos(), .sin()  -> .to(bf16)
 * Returned for the rd/2 distinct frequencies. pow/cos/sin in double, rounded to float: the
 * correctly rounded fp32 results. */
static void rope_table(float *cs, float *sn, uint32_t rd, float theta, uint32_t pos)
{
    for (uint32_t i = 0; i < rd / 2; i++) {
        float e = (float)(2 * i) / (float)rd;
        float inv = 1.0f / (float)pow((double)theta, (double)e);
        float f = (float)pos * inv;
        cs[i] = kref_round((float)cos((double)f));
        sn[i] = kref_round((float)sin((double)f));
    }
}

/* apply_rotary_pos_emb on the first rd dims, bf16 ops:
 *   x_rot = x[..., :rd]; x_rot = (x_rot * cos) + (rotate_half(x_rot) * sin)
 *   rotate_half(x) = cat(-x[..., rd/2:], x[..., :rd/2]) */
static void rope_head(uint16_t *dst, const float *y, uint32_t hd, uint32_t rd, const float *cs,
                      const float *sn)
{
    uint32_t half = rd / 2;
    for (uint32_t i = 0; i < hd; i++) {
        float o = y[i];
        if (i < rd) {
            uint32_t j = i < half ? i : i - half;
            float rot = i < half ? -y[i + half] : y[i - half];
            o = kref_round(kref_round(y[i] * cs[j]) + kref_round(rot * sn[j]));
        }
        dst[i] = kref_f2bf(o);
    }
}

void kref_attn_rope(const struct kref_attn_dims *d, const uint16_t *qg, const uint16_t *k,
                    const uint16_t *v, const uint16_t *q_norm, const uint16_t *k_norm, uint32_t n,
                    uint32_t pos, uint16_t *q_out, uint16_t *k_cache, uint16_t *v_cache)
{
    uint32_t hd = d->hd, nh = d->n_heads, nkv = d->n_kv;
    float *y = malloc(sizeof(float) * hd);                    /* (hd) one normed head */
    float *cs = malloc(sizeof(float) * (d->rd / 2 + 1));      /* (rd/2) bf16 cos */
    float *sn = malloc(sizeof(float) * (d->rd / 2 + 1));      /* (rd/2) bf16 sin */
    for (uint32_t t = 0; t < n; t++) {
        uint32_t P = pos + t;
        rope_table(cs, sn, d->rd, d->theta, P);
        /* q = q_norm(qg.view(T, nh, 2*hd)[..., :hd]); q = rope(q) */
        for (uint32_t h = 0; h < nh; h++) {
            rmsnorm1p_head(y, qg + ((size_t)t * nh + h) * 2 * hd, q_norm, hd, d->eps);
            rope_head(q_out + ((size_t)t * nh + h) * hd, y, hd, d->rd, cs, sn);
        }
        /* k = rope(k_norm(k)); cache.update(k, v) at position P */
        for (uint32_t h = 0; h < nkv; h++) {
            rmsnorm1p_head(y, k + ((size_t)t * nkv + h) * hd, k_norm, hd, d->eps);
            size_t row = ((size_t)h * d->max_seq + P) * hd;
            rope_head(k_cache + row, y, hd, d->rd, cs, sn);
            memcpy(v_cache + row, v + ((size_t)t * nkv + h) * hd, sizeof(uint16_t) * hd);
        }
    }
    free(y), free(cs), free(sn);
}

void kref_attn(const struct kref_attn_dims *d, const uint16_t *q, const uint16_t *qg,
               const uint16_t *k_cache, const uint16_t *v_cache, uint32_t n, uint32_t pos,
               uint16_t *out)
{
    uint32_t hd = d->hd, nh = d->n_heads, group = d->n_heads / d->n_kv;
    double *p = malloc(sizeof(double) * (pos + n));  /* (keys) probabilities of one row */
    double *o = malloc(sizeof(double) * hd);         /* (hd) output of one row */
    for (uint32_t t = 0; t < n; t++) {
        uint32_t keys = pos + t + 1; /* causal: keys 0..pos+t */
        for (uint32_t h = 0; h < nh; h++) {
            const uint16_t *qr = q + ((size_t)t * nh + h) * hd;
            const uint16_t *K = k_cache + (size_t)(h / group) * d->max_seq * hd;
            const uint16_t *V = v_cache + (size_t)(h / group) * d->max_seq * hd;
            /* s = q @ k^T * scale; p = softmax(s, dim=-1, dtype=float32) */
            double mx = -INFINITY, sum = 0;
            for (uint32_t j = 0; j < keys; j++) {
                double s = 0;
                for (uint32_t c = 0; c < hd; c++)
                    s += (double)kref_bf2f(qr[c]) * kref_bf2f(K[(size_t)j * hd + c]);
                p[j] = s * d->scale;
                mx = p[j] > mx ? p[j] : mx;
            }
            for (uint32_t j = 0; j < keys; j++)
                sum += (p[j] = exp(p[j] - mx));
            /* o = p @ v, then o.to(bf16) */
            for (uint32_t c = 0; c < hd; c++)
                o[c] = 0;
            for (uint32_t j = 0; j < keys; j++)
                for (uint32_t c = 0; c < hd; c++)
                    o[c] += p[j] * kref_bf2f(V[(size_t)j * hd + c]);
            /* out = o * torch.sigmoid(gate): bf16 sigmoid, bf16 product */
            const uint16_t *g = qg + ((size_t)t * nh + h) * 2 * hd + hd;
            uint16_t *dst = out + ((size_t)t * nh + h) * hd;
            for (uint32_t c = 0; c < hd; c++) {
                float sg = kref_round(1.0f / (1.0f + expf(-kref_bf2f(g[c]))));
                dst[c] = kref_f2bf(kref_round((float)(o[c] / sum)) * sg);
            }
        }
    }
    free(p), free(o);
}
