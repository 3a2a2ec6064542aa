/* mkmodel_cfg.c — the built-in configurations of the checkpoint generator and their
 * config.json (see mkmodel_gen.h).
 *
 * The sizes are chosen to exercise what tiny-a (the transformers fixture) does not: widths
 * that are not powers of two, more query heads per KV head, GDN key and value head dims
 * that differ, top-3 routing, more layers with an MTP head, and every real width at two
 * layers. Each must also load in transformers 5.17: query heads a multiple of KV heads,
 * value heads a multiple of key heads, len(layer_types) == num_hidden_layers,
 * head_dim * partial_rotary_factor an even integer, and mrope_section summing to half of it.
 * The config.json is written byte for byte in the layout transformers writes (sorted keys,
 * two-space indent), with the mtp_* keys of the published configs added. */
#include "mkmodel_gen.h"

#include <math.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

/* ---- built-in configurations ---------------------------------------------------------------- */

/* One configuration per block, related sizes on one line. */
/* clang-format off */
static const struct mkmodel_spec builtins[] = {
    {.name = "tiny-b",
     .about = "4 layers [lin,lin,lin,full], hidden 96, 6/2 heads of 32, GDN 2/4 heads of 24, "
              "6 experts top-2 of 48, shared 32, vocab 700",
     .hidden = 96, .vocab = 700, .layers = "lllf",
     .heads = 6, .kv_heads = 2, .head_dim = 32, .partial_rotary = "0.25", .mrope = {2, 1, 1},
     .lin_k_heads = 2, .lin_v_heads = 4, .lin_k_dim = 24, .lin_v_dim = 24, .conv_kernel = 4,
     .experts = 6, .top_k = 2, .moe_inter = 48, .shared_inter = 32,
     .mtp_layers = 0, .eos = -1, .max_position = 4096},
    {.name = "tiny-8l",
     .about = "8 layers [lin,lin,lin,full]x2, hidden 128, 4/2 heads of 64, GDN 2/4 heads of 32, "
              "8 experts top-2 of 64, shared 64, vocab 512, one MTP layer",
     .hidden = 128, .vocab = 512, .layers = "lllflllf",
     .heads = 4, .kv_heads = 2, .head_dim = 64, .partial_rotary = "0.25", .mrope = {3, 3, 2},
     .lin_k_heads = 2, .lin_v_heads = 4, .lin_k_dim = 32, .lin_v_dim = 32, .conv_kernel = 4,
     .experts = 8, .top_k = 2, .moe_inter = 64, .shared_inter = 64,
     .mtp_layers = 1, .eos = -1, .max_position = 4096},
    {.name = "tiny-odd",
     .about = "5 layers [lin,full,lin,lin,full], hidden 80, 5/1 heads of 40 (rotary 8), GDN 3/6 "
              "heads of key 20 / value 28, 5 experts top-3 of 36, shared 24, vocab 333, eos 7",
     .hidden = 80, .vocab = 333, .layers = "lfllf",
     .heads = 5, .kv_heads = 1, .head_dim = 40, .partial_rotary = "0.2", .mrope = {2, 1, 1},
     .lin_k_heads = 3, .lin_v_heads = 6, .lin_k_dim = 20, .lin_v_dim = 28, .conv_kernel = 4,
     .experts = 5, .top_k = 3, .moe_inter = 36, .shared_inter = 24,
     .mtp_layers = 0, .eos = 7, .max_position = 4096},
    {.name = "tiny-g128",
     .about = "4 layers [lin,lin,lin,full], hidden 256, 4/2 heads of 64, GDN 2/4 heads of 64, "
              "16 experts top-4 of 512, shared 512, vocab 512: every width a multiple of 128, "
              "experts wide enough for the group-128 expert pair",
     .hidden = 256, .vocab = 512, .layers = "lllf",
     .heads = 4, .kv_heads = 2, .head_dim = 64, .partial_rotary = "0.25", .mrope = {3, 3, 2},
     .lin_k_heads = 2, .lin_v_heads = 4, .lin_k_dim = 64, .lin_v_dim = 64, .conv_kernel = 4,
     .experts = 16, .top_k = 4, .moe_inter = 512, .shared_inter = 512,
     .mtp_layers = 0, .eos = -1, .max_position = 4096},
    {.name = "wide-2l",
     .about = "every width of Qwen3.5-35B-A3B with 2 layers [lin,full], 16 experts top-8, "
              "vocab 4096, one MTP layer (about 550 MB)",
     .hidden = 2048, .vocab = 4096, .layers = "lf",
     .heads = 16, .kv_heads = 2, .head_dim = 256, .partial_rotary = "0.25", .mrope = {11, 11, 10},
     .lin_k_heads = 16, .lin_v_heads = 32, .lin_k_dim = 128, .lin_v_dim = 128, .conv_kernel = 4,
     .experts = 16, .top_k = 8, .moe_inter = 512, .shared_inter = 512,
     .mtp_layers = 1, .eos = -1, .max_position = 262144},
    {.name = "wide-8l",
     .about = "the widths of wide-2l with 8 layers [lin,lin,lin,full]x2, 16 experts top-8, "
              "vocab 4096, one MTP layer (about 1.6 GB): memory tests against wide-2l",
     .hidden = 2048, .vocab = 4096, .layers = "lllflllf",
     .heads = 16, .kv_heads = 2, .head_dim = 256, .partial_rotary = "0.25", .mrope = {11, 11, 10},
     .lin_k_heads = 16, .lin_v_heads = 32, .lin_k_dim = 128, .lin_v_dim = 128, .conv_kernel = 4,
     .experts = 16, .top_k = 8, .moe_inter = 512, .shared_inter = 512,
     .mtp_layers = 1, .eos = -1, .max_position = 262144},
};
/* clang-format on */

const struct mkmodel_spec *mkmodel_builtin(size_t i)
{
    return i < sizeof builtins / sizeof builtins[0] ? &builtins[i] : NULL;
}

const struct mkmodel_spec *mkmodel_find(const char *name)
{
    for (size_t i = 0; mkmodel_builtin(i); i++)
        if (!strcmp(builtins[i].name, name))
            return &builtins[i];
    return NULL;
}

void mkmodel_config(const struct mkmodel_spec *s, struct model_config *c)
{
    memset(c, 0, sizeof *c);
    size_t nl = strlen(s->layers);
    c->hidden_size = s->hidden;
    c->num_layers = (uint32_t)nl;
    c->vocab_size = s->vocab;
    c->rms_norm_eps = (float)1e-6;
    c->max_position = s->max_position;
    c->num_heads = s->heads;
    c->num_kv_heads = s->kv_heads;
    c->head_dim = s->head_dim;
    c->attn_output_gate = 1;
    /* the float conversions and the rounding are those of the config.json reader */
    double prf = strtod(s->partial_rotary, NULL);
    c->rope_theta = (float)1e7;
    c->partial_rotary = (float)prf;
    c->rotary_dim = (uint32_t)floor(s->head_dim * prf + 0.5);
    memcpy(c->mrope_section, s->mrope, sizeof c->mrope_section);
    c->mrope_interleaved = 1;
    c->lin_num_k_heads = s->lin_k_heads;
    c->lin_num_v_heads = s->lin_v_heads;
    c->lin_k_head_dim = s->lin_k_dim;
    c->lin_v_head_dim = s->lin_v_dim;
    c->conv_kernel = s->conv_kernel;
    c->num_experts = s->experts;
    c->num_experts_per_tok = s->top_k;
    c->moe_inter = s->moe_inter;
    c->shared_inter = s->shared_inter;
    c->mtp_layers = s->mtp_layers;
    if (s->eos >= 0) {
        c->num_eos = 1;
        c->eos_ids[0] = s->eos;
    }
    for (size_t i = 0; i < nl && i < MODEL_MAX_LAYERS; i++)
        c->layer_types[i] = s->layers[i] == 'f' ? MODEL_LAYER_FULL : MODEL_LAYER_LINEAR;
}

/* ---- config.json --------------------------------------------------------------------------- */

/* Appends to a fixed buffer; full is set (and stays set) once something does not fit. */
struct mk_text {
    char *p;
    size_t len, cap;
    int full;
};

static void put(struct mk_text *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void put(struct mk_text *b, const char *fmt, ...)
{
    va_list ap;
    if (b->full)
        return;
    va_start(ap, fmt);
    int n = vsnprintf(b->p + b->len, b->cap - b->len, fmt, ap);
    va_end(ap);
    if (n < 0 || (size_t)n >= b->cap - b->len)
        b->full = 1;
    else
        b->len += (size_t)n;
}

/* text_config, keys sorted as transformers writes them (json.dumps(sort_keys=True, indent=2)). */
static void put_text_config(struct mk_text *b, const struct mkmodel_spec *s)
{
    size_t nl = strlen(s->layers);
    put(b, "  \"text_config\": {\n");
    put(b, "    \"attention_bias\": false,\n");
    put(b, "    \"attention_dropout\": 0.0,\n");
    put(b, "    \"bos_token_id\": null,\n");
    if (s->eos >= 0)
        put(b, "    \"eos_token_id\": %d,\n", s->eos);
    else
        put(b, "    \"eos_token_id\": null,\n");
    put(b, "    \"head_dim\": %u,\n", s->head_dim);
    put(b, "    \"hidden_act\": \"silu\",\n");
    put(b, "    \"hidden_size\": %u,\n", s->hidden);
    put(b, "    \"initializer_range\": 0.02,\n");
    put(b, "    \"layer_types\": [\n");
    for (size_t i = 0; i < nl; i++)
        put(b, "      \"%s\"%s\n", s->layers[i] == 'f' ? "full_attention" : "linear_attention",
            i + 1 < nl ? "," : "");
    put(b, "    ],\n");
    put(b, "    \"linear_conv_kernel_dim\": %u,\n", s->conv_kernel);
    put(b, "    \"linear_key_head_dim\": %u,\n", s->lin_k_dim);
    put(b, "    \"linear_num_key_heads\": %u,\n", s->lin_k_heads);
    put(b, "    \"linear_num_value_heads\": %u,\n", s->lin_v_heads);
    put(b, "    \"linear_value_head_dim\": %u,\n", s->lin_v_dim);
    put(b, "    \"max_position_embeddings\": %u,\n", s->max_position);
    put(b, "    \"model_type\": \"qwen3_5_moe_text\",\n");
    put(b, "    \"moe_intermediate_size\": %u,\n", s->moe_inter);
    put(b, "    \"mtp_num_hidden_layers\": %u,\n", s->mtp_layers);
    put(b, "    \"mtp_use_dedicated_embeddings\": false,\n");
    put(b, "    \"num_attention_heads\": %u,\n", s->heads);
    put(b, "    \"num_experts\": %u,\n", s->experts);
    put(b, "    \"num_experts_per_tok\": %u,\n", s->top_k);
    put(b, "    \"num_hidden_layers\": %zu,\n", nl);
    put(b, "    \"num_key_value_heads\": %u,\n", s->kv_heads);
    put(b, "    \"output_router_logits\": false,\n");
    put(b, "    \"pad_token_id\": null,\n");
    put(b, "    \"partial_rotary_factor\": %s,\n", s->partial_rotary);
    put(b, "    \"rms_norm_eps\": 1e-06,\n");
    put(b, "    \"rope_parameters\": {\n      \"mrope_interleaved\": true,\n");
    put(b, "      \"mrope_section\": [\n        %u,\n        %u,\n        %u\n      ],\n",
        s->mrope[0], s->mrope[1], s->mrope[2]);
    put(b, "      \"partial_rotary_factor\": %s,\n", s->partial_rotary);
    put(b, "      \"rope_theta\": 10000000.0,\n      \"rope_type\": \"default\"\n    },\n");
    put(b, "    \"router_aux_loss_coef\": 0.001,\n");
    put(b, "    \"shared_expert_intermediate_size\": %u,\n", s->shared_inter);
    put(b, "    \"tie_word_embeddings\": false,\n");
    put(b, "    \"use_cache\": true,\n");
    put(b, "    \"vocab_size\": %u\n", s->vocab);
    put(b, "  },\n");
}

static void put_vision_config(struct mk_text *b, const struct mkmodel_spec *s)
{
    put(b, "  \"vision_config\": {\n    \"depth\": %d,\n", MKMODEL_VIS_DEPTH);
    put(b, "    \"hidden_act\": \"gelu_pytorch_tanh\",\n    \"hidden_size\": %d,\n",
        MKMODEL_VIS_HIDDEN);
    put(b, "    \"in_channels\": %d,\n    \"initializer_range\": 0.02,\n", MKMODEL_VIS_IN);
    put(b, "    \"intermediate_size\": %d,\n", MKMODEL_VIS_INTER);
    put(b, "    \"model_type\": \"qwen3_5_moe_vision\",\n    \"num_heads\": %d,\n",
        MKMODEL_VIS_HEADS);
    put(b, "    \"num_position_embeddings\": %d,\n", MKMODEL_VIS_POS);
    put(b, "    \"out_hidden_size\": %u,\n    \"patch_size\": %d,\n", s->hidden, MKMODEL_VIS_PATCH);
    put(b, "    \"rope_parameters\": {\n      \"rope_theta\": 10000.0,\n");
    put(b, "      \"rope_type\": \"axial\"\n    },\n");
    put(b, "    \"spatial_merge_size\": %d,\n", MKMODEL_VIS_MERGE);
    put(b, "    \"temporal_patch_size\": %d\n  },\n", MKMODEL_VIS_TPATCH);
}

int mkmodel_config_json(const struct mkmodel_spec *s, char *buf, size_t cap)
{
    struct mk_text b = {buf, 0, cap, cap == 0};
    put(&b, "{\n");
    put(&b, "  \"architectures\": [\n    \"Qwen3_5MoeForConditionalGeneration\"\n  ],\n");
    put(&b, "  \"dtype\": \"bfloat16\",\n");
    put(&b, "  \"image_token_id\": 248056,\n");
    put(&b, "  \"model_type\": \"qwen3_5_moe\",\n");
    put_text_config(&b, s);
    put(&b, "  \"tie_word_embeddings\": false,\n");
    put(&b, "  \"transformers_version\": \"5.17.0\",\n");
    put(&b, "  \"video_token_id\": 248057,\n");
    put_vision_config(&b, s);
    put(&b, "  \"vision_end_token_id\": 248054,\n");
    put(&b, "  \"vision_start_token_id\": 248053\n");
    put(&b, "}\n");
    return b.full ? -1 : (int)b.len;
}
