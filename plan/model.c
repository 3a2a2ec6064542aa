/* model.c — the built-in Qwen3.5-35B-A3B configuration and the consistency rules every
 * model configuration must pass, whether it came from the default, a config.json or a file
 * header. The JSON reader is in config.c. */
#include "model.h"

#include <math.h>
#include <stdio.h>
#include <string.h>

/* Bounds that keep every derived size far from overflow in 32-bit launch arithmetic. They are
 * limits of this runtime, not of the architecture, and sit well above any released model. */
#define MODEL_MAX_WIDTH (1u << 20)  /* hidden, head dims times heads, expert widths */
#define MODEL_MAX_VOCAB (1u << 22)
#define MODEL_MAX_EXPERTS 4096u
#define MODEL_MAX_CONV 16u
#define MODEL_MAX_MTP 8u

_Static_assert(sizeof(struct model_config) == 33 * 4 + MODEL_MAX_LAYERS,
               "model_config must have no padding: it is written into files as is");

void model_config_default(struct model_config *c)
{
    memset(c, 0, sizeof *c);
    c->hidden_size = 2048;
    c->num_layers = 40;
    c->vocab_size = 248320;
    c->tie_embeddings = 0;
    c->rms_norm_eps = 1e-6f;
    c->max_position = 262144;

    c->num_heads = 16;
    c->num_kv_heads = 2;
    c->head_dim = 256;
    c->attn_output_gate = 1;
    c->attention_bias = 0;

    c->rope_theta = 10000000.0f;
    c->partial_rotary = 0.25f;
    c->rotary_dim = 64;
    c->mrope_section[0] = 11;
    c->mrope_section[1] = 11;
    c->mrope_section[2] = 10;
    c->mrope_interleaved = 1;

    c->lin_num_k_heads = 16;
    c->lin_num_v_heads = 32;
    c->lin_k_head_dim = 128;
    c->lin_v_head_dim = 128;
    c->conv_kernel = 4;

    c->num_experts = 256;
    c->num_experts_per_tok = 8;
    c->moe_inter = 512;
    c->shared_inter = 512;

    c->mtp_layers = 1;
    c->num_eos = 1;
    c->eos_ids[0] = 248044;

    /* [linear, linear, linear, full] x 10: full attention at layers 3, 7, ..., 39 */
    for (uint32_t i = 0; i < c->num_layers; i++)
        c->layer_types[i] = (i % 4 == 3) ? MODEL_LAYER_FULL : MODEL_LAYER_LINEAR;
}

uint32_t model_count_layers(const struct model_config *c, enum model_layer_type t)
{
    uint32_t n = 0;
    for (uint32_t i = 0; i < c->num_layers && i < MODEL_MAX_LAYERS; i++)
        n += c->layer_types[i] == t;
    return n;
}

/* Each check_* helper writes the message and returns -1 when the rule fails. */
static int fail(char *err, const char *fmt, const char *field, unsigned long long v)
{
    snprintf(err, MODEL_ERR_LEN, fmt, field, v);
    return -1;
}

static int check_range(char *err, const char *field, uint32_t v, uint32_t lo, uint32_t hi)
{
    if (v < lo || v > hi) {
        snprintf(err, MODEL_ERR_LEN, "%s = %u is outside the supported range [%u, %u]", field, v,
                 lo, hi);
        return -1;
    }
    return 0;
}

static int check_sizes(const struct model_config *c, char *err)
{
    const struct {
        const char *name;
        uint32_t v, lo, hi;
    } f[] = {
        {"hidden_size", c->hidden_size, 1, MODEL_MAX_WIDTH},
        {"num_hidden_layers", c->num_layers, 1, MODEL_MAX_LAYERS},
        {"vocab_size", c->vocab_size, 1, MODEL_MAX_VOCAB},
        {"max_position_embeddings", c->max_position, 1, 1u << 30},
        {"num_attention_heads", c->num_heads, 1, 1024},
        {"num_key_value_heads", c->num_kv_heads, 1, 1024},
        {"head_dim", c->head_dim, 2, 4096},
        {"linear_num_key_heads", c->lin_num_k_heads, 1, 1024},
        {"linear_num_value_heads", c->lin_num_v_heads, 1, 1024},
        {"linear_key_head_dim", c->lin_k_head_dim, 1, 4096},
        {"linear_value_head_dim", c->lin_v_head_dim, 1, 4096},
        {"linear_conv_kernel_dim", c->conv_kernel, 1, MODEL_MAX_CONV},
        {"num_experts", c->num_experts, 1, MODEL_MAX_EXPERTS},
        {"num_experts_per_tok", c->num_experts_per_tok, 1, c->num_experts},
        {"moe_intermediate_size", c->moe_inter, 1, MODEL_MAX_WIDTH},
        {"shared_expert_intermediate_size", c->shared_inter, 0, MODEL_MAX_WIDTH},
        {"mtp_num_hidden_layers", c->mtp_layers, 0, MODEL_MAX_MTP},
        {"tie_word_embeddings", c->tie_embeddings, 0, 1},
        {"mrope_interleaved", c->mrope_interleaved, 0, 1},
        {"attn_output_gate", c->attn_output_gate, 1, 1},
        {"attention_bias", c->attention_bias, 0, 0},
    };
    for (size_t i = 0; i < sizeof f / sizeof f[0]; i++)
        if (check_range(err, f[i].name, f[i].v, f[i].lo, f[i].hi))
            return -1;
    /* products the kernels index with 32-bit arithmetic */
    if ((uint64_t)c->num_heads * c->head_dim > MODEL_MAX_WIDTH)
        return fail(err, "%s * head_dim = %llu is too large", "num_attention_heads",
                    (unsigned long long)c->num_heads * c->head_dim);
    if ((uint64_t)c->lin_num_v_heads * c->lin_v_head_dim > MODEL_MAX_WIDTH ||
        (uint64_t)c->lin_num_k_heads * c->lin_k_head_dim > MODEL_MAX_WIDTH)
        return fail(err, "%s: linear attention heads * head dim %llu is too large",
                    "linear_num_value_heads",
                    (unsigned long long)c->lin_num_v_heads * c->lin_v_head_dim);
    return 0;
}

static int check_heads(const struct model_config *c, char *err)
{
    if (c->num_heads % c->num_kv_heads) {
        snprintf(err, MODEL_ERR_LEN,
                 "num_attention_heads = %u is not a multiple of num_key_value_heads = %u",
                 c->num_heads, c->num_kv_heads);
        return -1;
    }
    if (c->lin_num_v_heads % c->lin_num_k_heads) {
        snprintf(err, MODEL_ERR_LEN,
                 "linear_num_value_heads = %u is not a multiple of linear_num_key_heads = %u",
                 c->lin_num_v_heads, c->lin_num_k_heads);
        return -1;
    }
    return 0;
}

static int check_rope(const struct model_config *c, char *err)
{
    if (!(c->rms_norm_eps > 0.0f) || !isfinite(c->rms_norm_eps) || c->rms_norm_eps > 1.0f) {
        snprintf(err, MODEL_ERR_LEN, "rms_norm_eps = %g must be in (0, 1]", (double)c->rms_norm_eps);
        return -1;
    }
    if (!(c->rope_theta > 1.0f) || !isfinite(c->rope_theta)) {
        snprintf(err, MODEL_ERR_LEN, "rope_theta = %g must be a finite number above 1",
                 (double)c->rope_theta);
        return -1;
    }
    if (!(c->partial_rotary > 0.0f) || !(c->partial_rotary <= 1.0f)) {
        snprintf(err, MODEL_ERR_LEN, "partial_rotary_factor = %g must be in (0, 1]",
                 (double)c->partial_rotary);
        return -1;
    }
    /* rotary_dim is head_dim * factor, which must be an integer (HF takes int() of it). The
     * factor is stored as a float, so 0.35 * 40 may land a hair under 14: round, then demand
     * that the product was that integer to float precision. */
    double prod = (double)c->head_dim * (double)c->partial_rotary;
    uint32_t rd = (uint32_t)lround(prod);
    if (c->rotary_dim != rd || rd == 0 || rd % 2 || fabs(prod - rd) > 1e-4 * (rd + 1)) {
        snprintf(err, MODEL_ERR_LEN,
                 "partial_rotary_factor = %g gives rotary dim %u of head_dim %u; it must be a "
                 "non-zero even number (stored rotary_dim %u)",
                 (double)c->partial_rotary, rd, c->head_dim, c->rotary_dim);
        return -1;
    }
    uint64_t sum = (uint64_t)c->mrope_section[0] + c->mrope_section[1] + c->mrope_section[2];
    if (sum != c->rotary_dim / 2) {
        snprintf(err, MODEL_ERR_LEN, "mrope_section sums to %llu but must equal rotary dim / 2 = %u",
                 (unsigned long long)sum, c->rotary_dim / 2);
        return -1;
    }
    return 0;
}

static int check_layers_and_tokens(const struct model_config *c, char *err)
{
    for (uint32_t i = 0; i < MODEL_MAX_LAYERS; i++) {
        uint8_t t = c->layer_types[i];
        if (i < c->num_layers && t != MODEL_LAYER_LINEAR && t != MODEL_LAYER_FULL) {
            snprintf(err, MODEL_ERR_LEN, "layer_types[%u] = %u is not a known layer type", i, t);
            return -1;
        }
        if (i >= c->num_layers && t != 0) {
            snprintf(err, MODEL_ERR_LEN, "layer_types[%u] is set beyond num_hidden_layers = %u",
                     i, c->num_layers);
            return -1;
        }
    }
    if (c->num_eos > MODEL_MAX_EOS)
        return fail(err, "%s lists %llu ids; at most 4 are supported", "eos_token_id", c->num_eos);
    for (uint32_t i = 0; i < MODEL_MAX_EOS; i++) {
        if (i < c->num_eos && (c->eos_ids[i] < 0 || (uint32_t)c->eos_ids[i] >= c->vocab_size)) {
            snprintf(err, MODEL_ERR_LEN, "eos_token_id %d is outside the vocabulary (vocab_size %u)",
                     c->eos_ids[i], c->vocab_size);
            return -1;
        }
        if (i >= c->num_eos && c->eos_ids[i] != 0)
            return fail(err, "%s: unused slot %llu is not zero", "eos_token_id", i);
    }
    return 0;
}

int model_config_check(const struct model_config *c, char *err)
{
    if (check_sizes(c, err) || check_heads(c, err) || check_rope(c, err) ||
        check_layers_and_tokens(c, err))
        return -1;
    return 0;
}

int model_config_equal(const struct model_config *a, const struct model_config *b, const char **what)
{
#define SAME(f, name)                                                                              \
    if (memcmp(&a->f, &b->f, sizeof a->f)) {                                                       \
        if (what)                                                                                  \
            *what = name;                                                                          \
        return 0;                                                                                  \
    }
    SAME(hidden_size, "hidden_size");
    SAME(num_layers, "num_hidden_layers");
    SAME(vocab_size, "vocab_size");
    SAME(tie_embeddings, "tie_word_embeddings");
    SAME(rms_norm_eps, "rms_norm_eps");
    SAME(max_position, "max_position_embeddings");
    SAME(num_heads, "num_attention_heads");
    SAME(num_kv_heads, "num_key_value_heads");
    SAME(head_dim, "head_dim");
    SAME(attn_output_gate, "attn_output_gate");
    SAME(attention_bias, "attention_bias");
    SAME(rope_theta, "rope_theta");
    SAME(partial_rotary, "partial_rotary_factor");
    SAME(rotary_dim, "rotary_dim");
    SAME(mrope_section, "mrope_section");
    SAME(mrope_interleaved, "mrope_interleaved");
    SAME(lin_num_k_heads, "linear_num_key_heads");
    SAME(lin_num_v_heads, "linear_num_value_heads");
    SAME(lin_k_head_dim, "linear_key_head_dim");
    SAME(lin_v_head_dim, "linear_value_head_dim");
    SAME(conv_kernel, "linear_conv_kernel_dim");
    SAME(num_experts, "num_experts");
    SAME(num_experts_per_tok, "num_experts_per_tok");
    SAME(moe_inter, "moe_intermediate_size");
    SAME(shared_inter, "shared_expert_intermediate_size");
    SAME(mtp_layers, "mtp_num_hidden_layers");
    SAME(num_eos, "eos_token_id");
    SAME(eos_ids, "eos_token_id");
    SAME(layer_types, "layer_types");
#undef SAME
    /* every field is compared above; a new field must be added there too */
    _Static_assert(sizeof(struct model_config) == 33 * 4 + MODEL_MAX_LAYERS, "compare all fields");
    return 1;
}
