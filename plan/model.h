/* model.h — the qwen3_5_moe text configuration, the one description of the model shape.
 *
 * Every program reads the model through this struct: the planner sizes buffers and launch
 * shapes from it, the converter checks tensor names and shapes against it, the weights image
 * and plan.bin embed it (so a plan can be matched to its weights field by field), and rt_host
 * takes the context length and stop tokens from it.
 *
 * The struct is plain old data of fixed-width fields only, so it can be written into files
 * as it is (little-endian, no pointers, no padding: checked by a static assertion below).
 * The built-in default is Qwen3.5-35B-A3B (../shared/MODEL.md §1). model_config_from_json()
 * reads a Hugging Face config.json (top level with a nested text_config, or a bare text
 * config) and model_config_check() rejects shapes that are inconsistent, naming the field. */
#ifndef MODEL_H
#define MODEL_H

#include <stddef.h>
#include <stdint.h>

#define MODEL_MAX_LAYERS 128 /* layer_types capacity: 40 in the headline model */
#define MODEL_MAX_EOS 4      /* end-of-sequence ids kept from the config */
#define MODEL_ERR_LEN 256    /* size of the error message buffers below */

enum model_layer_type {
    MODEL_LAYER_LINEAR = 1, /* "linear_attention": Gated DeltaNet */
    MODEL_LAYER_FULL = 2,   /* "full_attention": gated softmax attention with a KV cache */
};

struct model_config {
    /* trunk */
    uint32_t hidden_size;       /* H: residual stream width (2048) */
    uint32_t num_layers;        /* num_hidden_layers (40) */
    uint32_t vocab_size;        /* embedding and lm_head rows (248320) */
    uint32_t tie_embeddings;    /* tie_word_embeddings: 1 if lm_head is embed_tokens (0) */
    float rms_norm_eps;         /* epsilon of every RMSNorm (1e-6) */
    uint32_t max_position;      /* max_position_embeddings: longest context (262144) */

    /* gated full attention (layers whose type is MODEL_LAYER_FULL) */
    uint32_t num_heads;         /* num_attention_heads: query heads (16) */
    uint32_t num_kv_heads;      /* num_key_value_heads (2); num_heads % num_kv_heads == 0 */
    uint32_t head_dim;          /* per-head width of q, k, v (256) */
    uint32_t attn_output_gate;  /* q_proj also produces a sigmoid output gate (always 1) */
    uint32_t attention_bias;    /* q/k/v/o projections carry biases (0; 1 is refused) */

    /* rotary embedding */
    float rope_theta;           /* rope_parameters.rope_theta (1e7) */
    float partial_rotary;       /* partial_rotary_factor: rotated share of head_dim (0.25) */
    uint32_t rotary_dim;        /* derived: head_dim * partial_rotary (64), even */
    uint32_t mrope_section[3];  /* rope_parameters.mrope_section, sums to rotary_dim/2 ([11,11,10]) */
    uint32_t mrope_interleaved; /* rope_parameters.mrope_interleaved (1); text positions make it plain RoPE */

    /* Gated DeltaNet (layers whose type is MODEL_LAYER_LINEAR) */
    uint32_t lin_num_k_heads;   /* linear_num_key_heads (16) */
    uint32_t lin_num_v_heads;   /* linear_num_value_heads (32); a multiple of lin_num_k_heads */
    uint32_t lin_k_head_dim;    /* linear_key_head_dim (128) */
    uint32_t lin_v_head_dim;    /* linear_value_head_dim (128) */
    uint32_t conv_kernel;       /* linear_conv_kernel_dim: causal conv taps (4) */

    /* mixture of experts (every layer) */
    uint32_t num_experts;       /* routed experts (256) */
    uint32_t num_experts_per_tok; /* top-k (8) */
    uint32_t moe_inter;         /* moe_intermediate_size: routed expert width (512) */
    uint32_t shared_inter;      /* shared_expert_intermediate_size (512); 0 = no shared expert */

    /* multi-token prediction head, kept in the weights for later use */
    uint32_t mtp_layers;        /* mtp_num_hidden_layers (1) */

    /* tokens */
    uint32_t num_eos;           /* how many entries of eos_ids are used */
    int32_t eos_ids[MODEL_MAX_EOS]; /* eos_token_id (248044); one or several */

    /* per-layer kinds: MODEL_LAYER_LINEAR or MODEL_LAYER_FULL; entries >= num_layers are 0 */
    uint8_t layer_types[MODEL_MAX_LAYERS];
};

/* Derived sizes, written once here so no caller re-derives them differently. */
static inline uint32_t model_q_dim(const struct model_config *c) { return c->num_heads * c->head_dim; }
static inline uint32_t model_kv_dim(const struct model_config *c) { return c->num_kv_heads * c->head_dim; }
static inline uint32_t model_lin_key_dim(const struct model_config *c) { return c->lin_num_k_heads * c->lin_k_head_dim; }
static inline uint32_t model_lin_value_dim(const struct model_config *c) { return c->lin_num_v_heads * c->lin_v_head_dim; }
/* conv_dim = 2 * key_dim + value_dim: the q, k, v rows of in_proj_qkv that pass the conv */
static inline uint32_t model_lin_conv_dim(const struct model_config *c)
{
    return 2 * model_lin_key_dim(c) + model_lin_value_dim(c);
}
uint32_t model_count_layers(const struct model_config *c, enum model_layer_type t);

/* Fill *c with Qwen3.5-35B-A3B (MODEL.md §1). Always succeeds. */
void model_config_default(struct model_config *c);

/* Check that *c describes a model the formats can hold: every size non-zero where required,
 * heads that divide, layer types set, rotary sections that add up. Returns 0, or -1 with a
 * message naming the offending field in err (MODEL_ERR_LEN bytes). */
int model_config_check(const struct model_config *c, char *err);

/* Read a Hugging Face config.json held in text[0..len). Accepts the multimodal wrapper
 * (model_type "qwen3_5_moe" with the text settings under "text_config") and a bare text
 * config (model_type "qwen3_5_moe_text"). Unknown model types, missing required fields,
 * wrong JSON types and inconsistent values are refused. Returns 0, or -1 with a message
 * naming the field in err. Ends by calling model_config_check(). */
int model_config_from_json(struct model_config *c, const char *text, size_t len, char *err);

/* Read config.json from a file; like model_config_from_json, errors name the file too. */
int model_config_load(struct model_config *c, const char *path, char *err);

/* 1 if the two configs describe the same model (every field equal), else 0; when they
 * differ and what is non-NULL, the name of the first differing field is stored there. */
int model_config_equal(const struct model_config *a, const struct model_config *b, const char **what);

#endif
