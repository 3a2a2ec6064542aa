/* ref_model.c — allocate and fill the reference model's weights, and its per-sequence state.
 *
 * Tensor names are those of the weights image: the Hugging Face names without the
 * "model.language_model." prefix, experts fused as in the hub checkpoints
 * ("layers.L.mlp.experts.gate_up_proj" (E, 2I, H), "layers.L.mlp.experts.down_proj" (E, H, I)).
 * The getter checks shapes, so a wrong config fails here with the tensor's name. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ref.h"

struct loader {
    ref_get_fn get;
    void *ctx;
    char *err;
    int failed;
};

/* Allocate a float32 tensor of the given shape and fill it; on failure remember the error
 * (the first one wins) and return NULL. */
static float *load(struct loader *ld, const char *name, int ndim, uint64_t d0, uint64_t d1,
                   uint64_t d2)
{
    if (ld->failed)
        return NULL;
    uint64_t shape[3] = {d0, d1, d2};
    uint64_t n = 1;
    for (int i = 0; i < ndim; i++)
        n *= shape[i];
    float *p = malloc(sizeof(float) * n);
    if (!p) {
        snprintf(ld->err, MODEL_ERR_LEN, "%s: out of memory for %llu floats", name,
                 (unsigned long long)n);
        ld->failed = 1;
        return NULL;
    }
    if (ld->get(ld->ctx, name, ndim, shape, p, ld->err)) {
        free(p);
        ld->failed = 1;
        return NULL;
    }
    return p;
}

static void load_layer(struct loader *ld, const struct model_config *c, uint32_t l,
                       struct ref_layer *L)
{
    char n[128];
    uint64_t H = c->hidden_size, E = c->num_experts, I = c->moe_inter, S = c->shared_inter;
#define NAME(fmt) (snprintf(n, sizeof n, "layers.%u." fmt, l), n)
    L->type = c->layer_types[l];
    L->in_norm = load(ld, NAME("input_layernorm.weight"), 1, H, 0, 0);
    L->post_norm = load(ld, NAME("post_attention_layernorm.weight"), 1, H, 0, 0);
    if (L->type == MODEL_LAYER_LINEAR) {
        uint64_t nv = c->lin_num_v_heads, vd = model_lin_value_dim(c), cd = model_lin_conv_dim(c);
        L->qkv = load(ld, NAME("linear_attn.in_proj_qkv.weight"), 2, cd, H, 0);
        L->z = load(ld, NAME("linear_attn.in_proj_z.weight"), 2, vd, H, 0);
        L->b = load(ld, NAME("linear_attn.in_proj_b.weight"), 2, nv, H, 0);
        L->a = load(ld, NAME("linear_attn.in_proj_a.weight"), 2, nv, H, 0);
        L->conv = load(ld, NAME("linear_attn.conv1d.weight"), 3, cd, 1, c->conv_kernel);
        L->dt_bias = load(ld, NAME("linear_attn.dt_bias"), 1, nv, 0, 0);
        L->a_log = load(ld, NAME("linear_attn.A_log"), 1, nv, 0, 0);
        L->gnorm = load(ld, NAME("linear_attn.norm.weight"), 1, c->lin_v_head_dim, 0, 0);
        L->out = load(ld, NAME("linear_attn.out_proj.weight"), 2, H, vd, 0);
    } else {
        uint64_t qd = model_q_dim(c), kvd = model_kv_dim(c);
        L->wq = load(ld, NAME("self_attn.q_proj.weight"), 2, 2 * qd, H, 0);
        L->wk = load(ld, NAME("self_attn.k_proj.weight"), 2, kvd, H, 0);
        L->wv = load(ld, NAME("self_attn.v_proj.weight"), 2, kvd, H, 0);
        L->wo = load(ld, NAME("self_attn.o_proj.weight"), 2, H, qd, 0);
        L->q_norm = load(ld, NAME("self_attn.q_norm.weight"), 1, c->head_dim, 0, 0);
        L->k_norm = load(ld, NAME("self_attn.k_norm.weight"), 1, c->head_dim, 0, 0);
    }
    L->router = load(ld, NAME("mlp.gate.weight"), 2, E, H, 0);
    L->gate_up = load(ld, NAME("mlp.experts.gate_up_proj"), 3, E, 2 * I, H);
    L->down = load(ld, NAME("mlp.experts.down_proj"), 3, E, H, I);
    if (S > 0) {
        L->sh_gate = load(ld, NAME("mlp.shared_expert.gate_proj.weight"), 2, S, H, 0);
        L->sh_up = load(ld, NAME("mlp.shared_expert.up_proj.weight"), 2, S, H, 0);
        L->sh_down = load(ld, NAME("mlp.shared_expert.down_proj.weight"), 2, H, S, 0);
        L->sh_gate_w = load(ld, NAME("mlp.shared_expert_gate.weight"), 2, 1, H, 0);
    }
#undef NAME
}

int ref_model_init(struct ref_model *m, const struct model_config *c, ref_get_fn get, void *ctx,
                   char *err)
{
    memset(m, 0, sizeof *m);
    m->c = *c;
    if (model_config_check(c, err))
        return -1;
    struct loader ld = {get, ctx, err, 0};
    uint64_t H = c->hidden_size, V = c->vocab_size;
    m->embed = load(&ld, "embed_tokens.weight", 2, V, H, 0);
    m->final_norm = load(&ld, "norm.weight", 1, H, 0, 0);
    m->lm_head = c->tie_embeddings ? m->embed : load(&ld, "lm_head.weight", 2, V, H, 0);
    for (uint32_t l = 0; l < c->num_layers; l++)
        load_layer(&ld, c, l, &m->layers[l]);
    /* inv_freq[i] = 1 / theta^(2i / rotary_dim), in fp32 as transformers computes it */
    m->inv_freq = malloc(sizeof(float) * (c->rotary_dim / 2));
    if (!ld.failed && !m->inv_freq) {
        snprintf(err, MODEL_ERR_LEN, "out of memory");
        ld.failed = 1;
    }
    for (uint32_t i = 0; !ld.failed && i < c->rotary_dim / 2; i++)
        m->inv_freq[i] = 1.0f / powf(c->rope_theta, (float)(2 * i) / (float)c->rotary_dim);
    if (ld.failed) {
        ref_model_free(m);
        return -1;
    }
    return 0;
}

void ref_model_free(struct ref_model *m)
{
    for (uint32_t l = 0; l < m->c.num_layers && l < MODEL_MAX_LAYERS; l++) {
        struct ref_layer *L = &m->layers[l];
        float *all[] = {L->in_norm, L->post_norm, L->qkv,     L->z,       L->b,       L->a,
                        L->conv,    L->dt_bias,   L->a_log,   L->gnorm,   L->out,     L->wq,
                        L->wk,      L->wv,        L->wo,      L->q_norm,  L->k_norm,  L->router,
                        L->gate_up, L->down,      L->sh_gate, L->sh_up,   L->sh_down, L->sh_gate_w};
        for (size_t i = 0; i < sizeof all / sizeof all[0]; i++)
            free(all[i]);
    }
    if (m->lm_head != m->embed)
        free(m->lm_head);
    free(m->embed);
    free(m->final_norm);
    free(m->inv_freq);
    memset(m, 0, sizeof *m);
}

int ref_state_init(struct ref_state *s, const struct ref_model *m, uint32_t max_seq)
{
    const struct model_config *c = &m->c;
    memset(s, 0, sizeof *s);
    s->max_seq = max_seq;
    size_t kv = (size_t)c->num_kv_heads * max_seq * c->head_dim;
    size_t win = (size_t)model_lin_conv_dim(c) * (c->conv_kernel - 1);
    size_t st = (size_t)c->lin_num_v_heads * c->lin_k_head_dim * c->lin_v_head_dim;
    for (uint32_t l = 0; l < c->num_layers; l++) {
        if (c->layer_types[l] == MODEL_LAYER_FULL) {
            s->k_cache[l] = calloc(kv, sizeof(float));
            s->v_cache[l] = calloc(kv, sizeof(float));
            if (!s->k_cache[l] || !s->v_cache[l])
                goto fail;
        } else {
            s->conv_win[l] = calloc(win ? win : 1, sizeof(float));
            s->ssm[l] = calloc(st, sizeof(float));
            if (!s->conv_win[l] || !s->ssm[l])
                goto fail;
        }
    }
    return 0;
fail:
    ref_state_free(s, m);
    return -1;
}

void ref_state_free(struct ref_state *s, const struct ref_model *m)
{
    for (uint32_t l = 0; l < m->c.num_layers && l < MODEL_MAX_LAYERS; l++) {
        free(s->k_cache[l]);
        free(s->v_cache[l]);
        free(s->conv_win[l]);
        free(s->ssm[l]);
    }
    memset(s, 0, sizeof *s);
}

void ref_state_copy(struct ref_state *dst, const struct ref_state *src, const struct ref_model *m)
{
    const struct model_config *c = &m->c;
    size_t kv = (size_t)c->num_kv_heads * src->max_seq * c->head_dim;
    size_t win = (size_t)model_lin_conv_dim(c) * (c->conv_kernel - 1);
    size_t st = (size_t)c->lin_num_v_heads * c->lin_k_head_dim * c->lin_v_head_dim;
    for (uint32_t l = 0; l < c->num_layers; l++) {
        if (c->layer_types[l] == MODEL_LAYER_FULL) {
            memcpy(dst->k_cache[l], src->k_cache[l], kv * sizeof(float));
            memcpy(dst->v_cache[l], src->v_cache[l], kv * sizeof(float));
        } else {
            memcpy(dst->conv_win[l], src->conv_win[l], (win ? win : 1) * sizeof(float));
            memcpy(dst->ssm[l], src->ssm[l], st * sizeof(float));
        }
    }
    dst->pos = src->pos;
    dst->router_gap = src->router_gap;
    dst->tie_layer = src->tie_layer, dst->tie_picked = src->tie_picked, dst->tie_left = src->tie_left;
    memcpy(dst->layer_gap, src->layer_gap, sizeof dst->layer_gap);
    memcpy(dst->layer_picked, src->layer_picked, sizeof dst->layer_picked);
    memcpy(dst->layer_left, src->layer_left, sizeof dst->layer_left);
    dst->force_mask = src->force_mask;
    memcpy(dst->force_drop, src->force_drop, sizeof dst->force_drop);
    memcpy(dst->force_take, src->force_take, sizeof dst->force_take);
}
