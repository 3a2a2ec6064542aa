/* kref_basic.c — CPU references of the basic kernels (see kref_basic.h).
 *
 * Each function quotes the PyTorch expression it stands for. Sums run in double so the
 * reference is never the noisy party; the bf16 rounding points are PyTorch's: one rounding
 * per bf16 op, none inside an op. The INT4 decoder reads the nibble order from kern/quant.h
 * (K_I4_SLOTS) and is checked against a hand-written word by the GPU test. */
#include "kref_basic.h"

#include <math.h>
#include <string.h>

#include "../../kern/quant.h"


/* x = embed_tokens[input_ids]   (nn.Embedding, no scaling, no padding_idx) */
void kref_embed(uint16_t *out, const uint16_t *table, const int32_t *tokens, uint32_t T, uint32_t H,
                uint32_t V)
{
    for (uint32_t t = 0; t < T; t++) {
        int32_t id = tokens[t];
        if (id >= 0 && (uint32_t)id < V)
            memcpy(out + (size_t)t * H, table + (size_t)id * H, (size_t)H * 2);
        else
            memset(out + (size_t)t * H, 0, (size_t)H * 2);
    }
}

/* hidden = residual + hidden                          (bf16 add: one rounding)
 * Qwen3NextRMSNorm.forward:
 *   output = x.float() * torch.rsqrt(x.float().pow(2).mean(-1, keepdim=True) + eps)
 *   output = output * (1.0 + self.weight.float())
 *   return output.type_as(x)                          (the caller rounds y) */
void kref_rmsnorm_row(uint16_t *x, const uint16_t *add, const uint16_t *w, float *y, uint32_t H,
                      float eps)
{
    double ss = 0;
    for (uint32_t i = 0; i < H; i++) {
        if (add)
            x[i] = kref_f2bf(kref_bf2f(x[i]) + kref_bf2f(add[i]));
        double v = kref_bf2f(x[i]);
        ss += v * v;
    }
    double r = 1.0 / sqrt(ss / H + eps);
    for (uint32_t i = 0; i < H; i++)
        y[i] = (float)((double)kref_bf2f(x[i]) * r * (1.0 + (double)kref_bf2f(w[i])));
}

/* y = x @ W^T   (F.linear on bf16: fp32 accumulation inside, the caller rounds) */
void kref_gemv_bf16(float *y, float *mag, const uint16_t *W, const uint16_t *x, uint32_t N,
                    uint32_t K)
{
    for (uint32_t n = 0; n < N; n++) {
        const uint16_t *row = W + (size_t)n * K;
        double acc = 0, m = 0;
        for (uint32_t k = 0; k < K; k++) {
            double p = (double)kref_bf2f(row[k]) * kref_bf2f(x[k]);
            acc += p;
            m += fabs(p);
        }
        y[n] = (float)acc;
        mag[n] = (float)m;
    }
}

/* K_LAYOUT_I4_ROWS: element k of row n is nibble slot K_I4_SLOTS[k % 8] of 32-bit word k / 8
 * of the row (little-endian words), scaled by the bf16 scale of its group */
float kref_i4_weight(const uint8_t *nibbles, const uint16_t *scales, uint32_t K, uint32_t group,
                     uint64_t n, uint32_t k)
{
    static const int slot[8] = K_I4_SLOTS;
    const uint8_t *wp = nibbles + n * (K / 2) + (k / 8) * 4;
    uint32_t word =
        (uint32_t)wp[0] | (uint32_t)wp[1] << 8 | (uint32_t)wp[2] << 16 | (uint32_t)wp[3] << 24;
    int q = (int)((word >> (4 * slot[k % 8])) & 0xF);
    float s = kref_bf2f(scales[n * (K / group) + k / group]);
    return s * (float)(q - K_I4_ZERO);
}

/* y = x @ dequant(W)^T with W in fp32 (the INT4 GEMV never rounds a weight) */
void kref_gemv_i4(float *y, float *mag, const uint8_t *nibbles, const uint16_t *scales,
                  const uint16_t *x, uint32_t N, uint32_t K, uint32_t group)
{
    for (uint32_t n = 0; n < N; n++) {
        double acc = 0, m = 0;
        for (uint32_t k = 0; k < K; k++) {
            double p =
                (double)kref_i4_weight(nibbles, scales, K, group, n, k) * kref_bf2f(x[k]);
            acc += p;
            m += fabs(p);
        }
        y[n] = (float)acc;
        mag[n] = (float)m;
    }
}

/* W_bf16 = (scale * (q - 8)).to(torch.bfloat16)   (the product is exact in fp32) */
void kref_dequant_i4(uint16_t *out, const uint8_t *nibbles, const uint16_t *scales, uint32_t N,
                     uint32_t K, uint32_t group)
{
    for (uint64_t n = 0; n < N; n++)
        for (uint32_t k = 0; k < K; k++)
            out[n * K + k] = kref_f2bf(kref_i4_weight(nibbles, scales, K, group, n, k));
}

/* act = self.act_fn(gate) * up   on bf16 tensors: F.silu rounds to bf16, then the product does.
 * silu(g) = g / (1 + exp(-g)) in fp32 (PyTorch's CUDA silu) */
uint16_t kref_silu_mul_one(uint16_t g, uint16_t u, double rel)
{
    float gf = kref_bf2f(g);
    float s = gf / (1.0f + expf(-gf));
    float a = kref_bf2f(kref_f2bf((float)((double)s * (1.0 + rel))));
    return kref_f2bf(a * kref_bf2f(u));
}

void kref_silu_mul(uint16_t *out, const uint16_t *gate, const uint16_t *up, uint32_t n)
{
    for (uint32_t i = 0; i < n; i++)
        out[i] = kref_silu_mul_one(gate[i], up[i], 0.0);
}
