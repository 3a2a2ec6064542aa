/* mkmodel_gen.h — tiny random Qwen3.5-MoE checkpoints in Hugging Face layout.
 *
 * The runtime needs checkpoints of shapes other than the one transformers fixture (tiny-a):
 * odd widths that catch stride and tiling bugs, more layers, an MTP head, and a full-width
 * two-layer model for memory tests. This module writes them: config.json in the multimodal
 * wrapper that transformers 5.17 writes, and model.safetensors named exactly as the hub
 * checkpoint (model.language_model.*, lm_head.weight, fused 3-D experts, F32 A_log and gated
 * norm weight, a small model.visual.* tower, mtp.* when the config has an MTP layer).
 * transformers then produces golden logits for them on a GPU machine (tools/golden.py).
 *
 * Deterministic: every element is a pure function of (configuration, seed, tensor name,
 * element index), drawn from a counter-based splitmix64 stream keyed by those, so the same
 * seed gives the same bytes on every run and in any write order, and the per-expert layout holds
 * exactly the values of the fused one (each per-expert tensor reads its slice of the fused
 * tensor's stream). Weight scales follow ../shared/fixtures/README.md.
 *
 * mkmodel_cfg.c holds the built-in configurations and their config.json; mkmodel_gen.c the
 * weights and the writer. The tool tools/mkmodel.c is the command-line front end; the tests
 * call mkmodel_write() in-process. */
#ifndef MKMODEL_GEN_H
#define MKMODEL_GEN_H

#include <stdint.h>
#include <stdio.h>

#include "../../plan/model.h"

#define MKMODEL_ERR_LEN  512
#define MKMODEL_NAME_LEN 96 /* longest tensor name: mtp.layers.0.mlp.shared_expert... */
#define MKMODEL_MAX_DIMS 5  /* the vision patch embedding is 5-D */

/* The vision tower: one block, small widths, as in ../shared/fixtures (the converter skips
 * it, but a full Qwen3_5MoeForConditionalGeneration load needs shapes that fit the config). */
#define MKMODEL_VIS_DEPTH  1
#define MKMODEL_VIS_HIDDEN 32
#define MKMODEL_VIS_INTER  64
#define MKMODEL_VIS_HEADS  2
#define MKMODEL_VIS_PATCH  16
#define MKMODEL_VIS_TPATCH 2
#define MKMODEL_VIS_MERGE  2
#define MKMODEL_VIS_POS    2304
#define MKMODEL_VIS_IN     3

/* How a tensor's values are drawn. */
enum mkmodel_init {
    MKMODEL_INIT_NORMAL = 1,  /* mean + std * N(0, 1) */
    MKMODEL_INIT_LOG_UNIFORM, /* log U(0.01, 16), for A_log: exp(A_log) is a decay rate */
};

/* A built-in configuration: the text model's sizes, as they go into config.json. */
struct mkmodel_spec {
    const char *name;  /* --config NAME */
    const char *about; /* one line for --list */
    uint32_t hidden, vocab;
    const char *layers; /* layer types, one letter each: 'l' linear_attention, 'f' full_attention */
    uint32_t heads, kv_heads, head_dim;
    const char *partial_rotary; /* partial_rotary_factor as written in the JSON ("0.25") */
    uint32_t mrope[3];          /* mrope_section, sums to head_dim * partial_rotary / 2 */
    uint32_t lin_k_heads, lin_v_heads, lin_k_dim, lin_v_dim, conv_kernel;
    uint32_t experts, top_k, moe_inter, shared_inter;
    uint32_t mtp_layers; /* 0 or 1 */
    int32_t eos;         /* eos_token_id, or -1 for null */
    uint32_t max_position;
};

/* One tensor of the checkpoint and where its values come from. */
struct mkmodel_tensor {
    char name[MKMODEL_NAME_LEN]; /* Hugging Face name */
    uint32_t dtype;              /* WT_ST_BF16 or WT_ST_F32 */
    uint32_t ndim;
    uint64_t shape[MKMODEL_MAX_DIMS];
    uint32_t init;   /* enum mkmodel_init */
    float mean, std; /* MKMODEL_INIT_NORMAL */
    /* the random stream: the (fused) tensor these values belong to, its key (from the
     * configuration's name, the stream's name and the seed), and where element 0 sits in it */
    char stream[MKMODEL_NAME_LEN];
    uint64_t key;
    uint64_t first;
    uint64_t begin; /* byte offset in the data section, once laid out */
};

struct mkmodel_opts {
    uint64_t seed;
    /* write mlp.experts.{e}.{gate,up,down}_proj.weight instead of the fused 3-D tensors */
    int per_expert;
    /* store A_log and linear_attn.norm.weight in BF16 too, as save_pretrained does */
    int all_bf16;
    /* per-tensor lines for tensors of 1 MiB and more, and a summary; NULL: quiet */
    FILE *progress;
};

/* The built-in configurations: the i-th, or NULL past the end; by name, or NULL. */
const struct mkmodel_spec *mkmodel_builtin(size_t i);
const struct mkmodel_spec *mkmodel_find(const char *name);

/* The model_config that the config.json written for s must read back to. */
void mkmodel_config(const struct mkmodel_spec *s, struct model_config *c);

/* config.json for s into buf[0..cap), NUL-terminated, in the key order and layout that
 * transformers writes. Returns its length, or -1 if cap is too small. */
int mkmodel_config_json(const struct mkmodel_spec *s, char *buf, size_t cap);

/* Every tensor of the checkpoint for s, sorted by name, with offsets laid out. *out is
 * malloc'd (free it). Returns 0, or -1 with a message in err. */
int mkmodel_tensors(const struct mkmodel_spec *s, const struct mkmodel_opts *o,
                    struct mkmodel_tensor **out, size_t *n, char *err);

/* Values [first, first + count) of tensor t, as float32 (before any BF16 rounding). */
void mkmodel_values(const struct mkmodel_tensor *t, uint64_t first, uint64_t count, float *dst);

/* Write DIR/config.json and DIR/model.safetensors for s (DIR is created if missing; its parent
 * must exist). Both are written as DIR/NAME.tmp, checked (the config read back with
 * model_config_load, the safetensors header re-opened and every tensor's dtype, shape and
 * extent compared), and only then renamed into place; on any failure the .tmp files are
 * removed and nothing in DIR changes. Returns 0, or -1 with a message in err. */
int mkmodel_write(const char *dir, const struct mkmodel_spec *s, const struct mkmodel_opts *o,
                  char *err);

#endif
