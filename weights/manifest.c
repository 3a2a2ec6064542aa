/* manifest.c — the tensors of a weights image, derived from config and format (manifest.h). */
#include "manifest.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../kern/quant.h"

#define MAX_TENSORS_PER_LAYER 24
#define NAME_LEN 96

struct builder {
    struct wt_manifest *m;
    const struct wt_format *f;
    uint32_t cap;
    size_t used, names_cap;
    char *err;
    int failed;
};

static void add(struct builder *b, const char *name, uint32_t dtype, uint32_t ndim, uint64_t d0,
                uint64_t d1, uint64_t d2)
{
    if (b->failed)
        return;
    struct wt_tensor_desc *t = &b->m->t[b->m->n++];
    size_t len = strlen(name) + 1;
    memcpy(b->m->names + b->used, name, len);
    memset(t, 0, sizeof *t);
    t->name = (const char *)(uintptr_t)b->used; /* an offset until the pool stops moving */
    b->used += len;
    t->dtype = dtype;
    t->layout = K_LAYOUT_PLAIN;
    t->ndim = ndim;
    t->shape[0] = d0, t->shape[1] = d1, t->shape[2] = d2;
    uint64_t n = d0 * (ndim > 1 ? d1 : 1) * (ndim > 2 ? d2 : 1);
    t->size = n * (dtype == PLAN_DTYPE_F32 ? 4 : 2);
}

/* A matrix (or a stack of E matrices) that the format may quantize. */
static void add_matrix(struct builder *b, const char *name, uint32_t quant, uint64_t mats,
                       uint64_t rows, uint64_t cols)
{
    if (b->failed)
        return;
    if (quant == PLAN_QUANT_BF16) {
        if (mats > 1)
            add(b, name, PLAN_DTYPE_BF16, 3, mats, rows, cols);
        else
            add(b, name, PLAN_DTYPE_BF16, 2, rows, cols, 0);
        return;
    }
    uint64_t g = b->f->group_size;
    if (cols % g) {
        snprintf(b->err, MODEL_ERR_LEN,
                 "%s: input width %llu is not a multiple of the INT4 group size %llu", name,
                 (unsigned long long)cols, (unsigned long long)g);
        b->failed = 1;
        return;
    }
    if (mats > 1)
        add(b, name, PLAN_DTYPE_I4, 3, mats, rows, cols);
    else
        add(b, name, PLAN_DTYPE_I4, 2, rows, cols, 0);
    struct wt_tensor_desc *t = &b->m->t[b->m->n - 1];
    t->layout = K_LAYOUT_I4_ROWS;
    t->group_size = (uint32_t)g;
    t->scales_offset = k_i4_nibble_bytes(mats, rows, cols);
    t->size = t->scales_offset + k_i4_scale_bytes(mats, rows, cols, g);
}

static void add_moe(struct builder *b, const struct model_config *c, const char *pre)
{
    char n[NAME_LEN];
    uint64_t H = c->hidden_size, E = c->num_experts, I = c->moe_inter, S = c->shared_inter;
    uint32_t q = b->f->quant;
    snprintf(n, sizeof n, "%smlp.gate.weight", pre), add(b, n, PLAN_DTYPE_BF16, 2, E, H, 0);
    snprintf(n, sizeof n, "%smlp.experts.gate_up_proj", pre), add_matrix(b, n, q, E, 2 * I, H);
    snprintf(n, sizeof n, "%smlp.experts.down_proj", pre), add_matrix(b, n, q, E, H, I);
    if (S > 0) {
        snprintf(n, sizeof n, "%smlp.shared_expert.gate_proj.weight", pre), add_matrix(b, n, q, 1, S, H);
        snprintf(n, sizeof n, "%smlp.shared_expert.up_proj.weight", pre), add_matrix(b, n, q, 1, S, H);
        snprintf(n, sizeof n, "%smlp.shared_expert.down_proj.weight", pre), add_matrix(b, n, q, 1, H, S);
        snprintf(n, sizeof n, "%smlp.shared_expert_gate.weight", pre);
        add(b, n, PLAN_DTYPE_BF16, 2, 1, H, 0);
    }
}

static void add_attention(struct builder *b, const struct model_config *c, const char *pre)
{
    char n[NAME_LEN];
    uint64_t H = c->hidden_size, qd = model_q_dim(c), kvd = model_kv_dim(c);
    uint32_t q = b->f->quant;
    snprintf(n, sizeof n, "%sself_attn.q_proj.weight", pre), add_matrix(b, n, q, 1, 2 * qd, H);
    snprintf(n, sizeof n, "%sself_attn.k_proj.weight", pre), add_matrix(b, n, q, 1, kvd, H);
    snprintf(n, sizeof n, "%sself_attn.v_proj.weight", pre), add_matrix(b, n, q, 1, kvd, H);
    snprintf(n, sizeof n, "%sself_attn.o_proj.weight", pre), add_matrix(b, n, q, 1, H, qd);
    snprintf(n, sizeof n, "%sself_attn.q_norm.weight", pre), add(b, n, PLAN_DTYPE_BF16, 1, c->head_dim, 0, 0);
    snprintf(n, sizeof n, "%sself_attn.k_norm.weight", pre), add(b, n, PLAN_DTYPE_BF16, 1, c->head_dim, 0, 0);
}

static void add_gdn(struct builder *b, const struct model_config *c, const char *pre)
{
    char n[NAME_LEN];
    uint64_t H = c->hidden_size, nv = c->lin_num_v_heads;
    uint64_t vd = model_lin_value_dim(c), cd = model_lin_conv_dim(c);
    uint32_t q = b->f->quant;
    snprintf(n, sizeof n, "%slinear_attn.in_proj_qkv.weight", pre), add_matrix(b, n, q, 1, cd, H);
    snprintf(n, sizeof n, "%slinear_attn.in_proj_z.weight", pre), add_matrix(b, n, q, 1, vd, H);
    snprintf(n, sizeof n, "%slinear_attn.in_proj_b.weight", pre), add(b, n, PLAN_DTYPE_BF16, 2, nv, H, 0);
    snprintf(n, sizeof n, "%slinear_attn.in_proj_a.weight", pre), add(b, n, PLAN_DTYPE_BF16, 2, nv, H, 0);
    snprintf(n, sizeof n, "%slinear_attn.conv1d.weight", pre);
    add(b, n, PLAN_DTYPE_BF16, 3, cd, 1, c->conv_kernel);
    snprintf(n, sizeof n, "%slinear_attn.dt_bias", pre), add(b, n, PLAN_DTYPE_BF16, 1, nv, 0, 0);
    snprintf(n, sizeof n, "%slinear_attn.A_log", pre), add(b, n, PLAN_DTYPE_F32, 1, nv, 0, 0);
    snprintf(n, sizeof n, "%slinear_attn.norm.weight", pre);
    add(b, n, PLAN_DTYPE_F32, 1, c->lin_v_head_dim, 0, 0);
    snprintf(n, sizeof n, "%slinear_attn.out_proj.weight", pre), add_matrix(b, n, q, 1, H, vd);
}

static void add_layer(struct builder *b, const struct model_config *c, const char *pre, int full)
{
    char n[NAME_LEN];
    uint64_t H = c->hidden_size;
    snprintf(n, sizeof n, "%sinput_layernorm.weight", pre), add(b, n, PLAN_DTYPE_BF16, 1, H, 0, 0);
    snprintf(n, sizeof n, "%spost_attention_layernorm.weight", pre);
    add(b, n, PLAN_DTYPE_BF16, 1, H, 0, 0);
    if (full)
        add_attention(b, c, pre);
    else
        add_gdn(b, c, pre);
    add_moe(b, c, pre);
}

static int check_format(const struct wt_format *f, char *err)
{
    int q_ok = f->quant == PLAN_QUANT_BF16 || f->quant == PLAN_QUANT_INT4;
    int l_ok = f->lm_head_quant == PLAN_QUANT_BF16 || f->lm_head_quant == PLAN_QUANT_INT4;
    int int4 = f->quant == PLAN_QUANT_INT4 || f->lm_head_quant == PLAN_QUANT_INT4;
    int g_ok = int4 ? (f->group_size == 32 || f->group_size == 64 || f->group_size == 128)
                    : f->group_size == 0;
    if (!q_ok || !l_ok || !g_ok) {
        snprintf(err, MODEL_ERR_LEN,
                 "unsupported weight format (quant %u, lm_head %u, group %u): use bf16 or int4 "
                 "with group 32, 64 or 128",
                 f->quant, f->lm_head_quant, f->group_size);
        return -1;
    }
    return 0;
}

int wt_manifest_build(struct wt_manifest *m, const struct model_config *c, const struct wt_format *f,
                      char *err)
{
    memset(m, 0, sizeof *m);
    if (model_config_check(c, err) || check_format(f, err))
        return -1;
    struct builder b = {.m = m, .f = f, .err = err};
    b.cap = (c->num_layers + c->mtp_layers) * MAX_TENSORS_PER_LAYER + 16;
    b.names_cap = (size_t)b.cap * NAME_LEN;
    m->t = calloc(b.cap, sizeof *m->t);
    m->names = malloc(b.names_cap);
    if (!m->t || !m->names) {
        snprintf(err, MODEL_ERR_LEN, "out of memory");
        wt_manifest_free(m);
        return -1;
    }
    uint64_t H = c->hidden_size, V = c->vocab_size;
    char pre[NAME_LEN];
    add(&b, "embed_tokens.weight", PLAN_DTYPE_BF16, 2, V, H, 0);
    for (uint32_t l = 0; l < c->num_layers; l++) {
        snprintf(pre, sizeof pre, "layers.%u.", l);
        add_layer(&b, c, pre, c->layer_types[l] == MODEL_LAYER_FULL);
    }
    add(&b, "norm.weight", PLAN_DTYPE_BF16, 1, H, 0, 0);
    if (!c->tie_embeddings)
        add_matrix(&b, "lm_head.weight", f->lm_head_quant, 1, V, H);
    /* MTP head (MODEL.md §5): kept for speculative decoding; one full-attention layer each */
    for (uint32_t l = 0; l < c->mtp_layers; l++) {
        if (l == 0) {
            add(&b, "mtp.pre_fc_norm_embedding.weight", PLAN_DTYPE_BF16, 1, H, 0, 0);
            add(&b, "mtp.pre_fc_norm_hidden.weight", PLAN_DTYPE_BF16, 1, H, 0, 0);
            add_matrix(&b, "mtp.fc.weight", f->quant, 1, H, 2 * H);
        }
        snprintf(pre, sizeof pre, "mtp.layers.%u.", l);
        add_layer(&b, c, pre, 1);
        if (l + 1 == c->mtp_layers)
            add(&b, "mtp.norm.weight", PLAN_DTYPE_BF16, 1, H, 0, 0);
    }
    if (b.failed) {
        wt_manifest_free(m);
        return -1;
    }
    for (uint32_t i = 0; i < m->n; i++)
        m->t[i].name = m->names + (uintptr_t)m->t[i].name;
    return 0;
}

void wt_manifest_free(struct wt_manifest *m)
{
    free(m->t);
    free(m->names);
    memset(m, 0, sizeof *m);
}

static uint16_t bf16_bits(float f)
{
    uint32_t u;
    memcpy(&u, &f, 4);
    return (uint16_t)((u + 0x7FFFu + ((u >> 16) & 1u)) >> 16);
}

static int ends_with(const char *s, const char *suffix)
{
    size_t n = strlen(s), k = strlen(suffix);
    return n >= k && !strcmp(s + n - k, suffix);
}

uint32_t wt_synth(const struct wt_tensor_desc *t)
{
    float center = 0.0f, half = 0.06f; /* uniform half-width 0.06: std 0.035 */
    const char *n = t->name;
    if (t->layout == K_LAYOUT_I4_ROWS) {
        /* (q - 8) for the synthetic q in 1..15 (k_fill_i4, 8 twice as likely) has std 4.18:
         * scales near 0.0084 give std 0.035 */
        center = 0.0084f, half = 0.002f;
    } else if (!strcmp(n, "embed_tokens.weight")) {
        half = 1.0f;
    } else if (ends_with(n, "linear_attn.norm.weight")) {
        center = 1.0f, half = 0.1f; /* the gated norm multiplies by w itself */
    } else if (ends_with(n, "norm.weight") || ends_with(n, "norm_embedding.weight") ||
               ends_with(n, "norm_hidden.weight")) {
        half = 0.1f; /* zero-centred: the scale is 1 + w */
    } else if (ends_with(n, "A_log")) {
        center = -0.92f, half = 3.69f; /* log U(0.01, 16) spans [-4.61, 2.77] */
    } else if (ends_with(n, "dt_bias")) {
        half = 1.0f;
    } else if (ends_with(n, "conv1d.weight")) {
        half = 0.3f;
    }
    return (uint32_t)bf16_bits(center) << 16 | bf16_bits(half);
}

int64_t wt_manifest_find(const struct wt_manifest *m, const char *name)
{
    for (uint32_t i = 0; i < m->n; i++)
        if (!strcmp(m->t[i].name, name))
            return i;
    return -1;
}

int wt_format_parse(const char *s, uint32_t *quant, uint32_t *group)
{
    if (!strcmp(s, "bf16")) {
        *quant = PLAN_QUANT_BF16, *group = 0;
        return 0;
    }
    if (!strcmp(s, "int4")) {
        *quant = PLAN_QUANT_INT4, *group = 128;
        return 0;
    }
    int g;
    char tail;
    if (sscanf(s, "int4:%d%c", &g, &tail) == 1 && (g == 32 || g == 64 || g == 128)) {
        *quant = PLAN_QUANT_INT4, *group = (uint32_t)g;
        return 0;
    }
    return -1;
}

int wt_format_parse_lm_head(const char *s, uint32_t *quant, uint32_t *group)
{
    if (!strcmp(s, "int4")) {
        *quant = PLAN_QUANT_INT4, *group = 0;
        return 0;
    }
    return wt_format_parse(s, quant, group);
}

int wt_format_resolve(struct wt_format *f, uint32_t quant_group, uint32_t lm_group)
{
    int q4 = f->quant == PLAN_QUANT_INT4, l4 = f->lm_head_quant == PLAN_QUANT_INT4;
    if (q4 && l4 && lm_group && lm_group != quant_group)
        return -1;
    f->group_size = q4 ? quant_group : l4 ? (lm_group ? lm_group : 128) : 0;
    return 0;
}

const char *wt_format_name(uint32_t quant, uint32_t group, char *buf, int n)
{
    if (quant == PLAN_QUANT_BF16)
        snprintf(buf, (size_t)n, "bf16");
    else if (quant == PLAN_QUANT_INT4)
        snprintf(buf, (size_t)n, "int4:%u", group);
    else
        snprintf(buf, (size_t)n, "unknown(%u)", quant);
    return buf;
}
