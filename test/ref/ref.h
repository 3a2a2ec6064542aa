/* ref.h — the CPU reference forward of Qwen3.5-MoE: float32, plain loops, the executable spec.
 *
 * Every GPU kernel and the whole GPU model are tested against this code, and this code is
 * tested against transformers (golden logits in test/data and ../shared/fixtures). It follows
 * ../shared/MODEL.md §2 op by op, with the PyTorch expression quoted beside each step.
 *
 * One token at a time: ref_step() runs the whole model for the token at position state->pos
 * and advances the state (KV cache, GDN conv windows and recurrent states). A prompt is a
 * sequence of steps; in exact arithmetic that equals transformers' prefill (the chunked
 * gated delta rule is an algebraic rewrite of the recurrence), and in float32 it agrees to
 * rounding. Weights come in through a getter, so they can be read from a safetensors
 * checkpoint, a weights image, or dequantized INT4, all as float32. */
#ifndef REF_H
#define REF_H

#include <stdint.h>

#include "../../plan/model.h"

/* Produce tensor `name` (image naming, e.g. "layers.0.linear_attn.in_proj_qkv.weight") as
 * float32 into dst, after checking that its shape is shape[0..ndim). Returns 0, or -1 with a
 * message in err (MODEL_ERR_LEN bytes). */
typedef int (*ref_get_fn)(void *ctx, const char *name, int ndim, const uint64_t *shape, float *dst,
                          char *err);

struct ref_layer {
    int type;          /* MODEL_LAYER_LINEAR or MODEL_LAYER_FULL */
    float *in_norm;    /* (H) zero-centred: scale is 1 + w */
    float *post_norm;  /* (H) */
    /* Gated DeltaNet */
    float *qkv;        /* (conv_dim, H) rows: q (nk*dk), k (nk*dk), v (nv*dv) */
    float *z;          /* (nv*dv, H) output gate */
    float *b;          /* (nv, H) beta logits */
    float *a;          /* (nv, H) decay input */
    float *conv;       /* (conv_dim, K) depthwise causal taps; tap K-1 multiplies the current token */
    float *dt_bias;    /* (nv) */
    float *a_log;      /* (nv) */
    float *gnorm;      /* (dv) gated RMSNorm weight, plain scale w */
    float *out;        /* (H, nv*dv) */
    /* gated attention */
    float *wq;         /* (n_heads * 2 * hd, H) per head: hd query rows then hd gate rows */
    float *wk, *wv;    /* (n_kv * hd, H) */
    float *wo;         /* (H, n_heads * hd) */
    float *q_norm;     /* (hd) zero-centred */
    float *k_norm;     /* (hd) zero-centred */
    /* mixture of experts */
    float *router;     /* (E, H) */
    float *gate_up;    /* (E, 2*I, H) rows 0..I-1 gate, I..2I-1 up */
    float *down;       /* (E, H, I) */
    float *sh_gate;    /* (S, H) shared expert */
    float *sh_up;      /* (S, H) */
    float *sh_down;    /* (H, S) */
    float *sh_gate_w;  /* (1, H) sigmoid gate of the shared expert */
};

struct ref_model {
    struct model_config c;
    float *embed;          /* (V, H) */
    float *final_norm;     /* (H) zero-centred */
    float *lm_head;        /* (V, H); equals embed when tied */
    struct ref_layer layers[MODEL_MAX_LAYERS];
    float *inv_freq;       /* (rotary_dim / 2) RoPE frequencies */
    /* 0: the float32 reference. 1: every op's output rounded to bf16 where a bf16 PyTorch
     * run of the model holds it (linear outputs, norms, conv, gates, the attention scores and
     * probabilities, each expert's weighted output and the bf16 accumulation of experts, the
     * residual stream, the logits), the delta rule in float32 as transformers runs it. Not a
     * bit-exact copy of any run: a stand-in for transformers' bf16 run, whose distance to the
     * float32 one is the yardstick of a bf16 path, for checkpoints that have no bf16 golden. */
    int bf16_acts;
};

struct ref_state {
    uint32_t pos;          /* tokens consumed so far */
    uint32_t max_seq;      /* capacity of the KV cache */
    float *k_cache[MODEL_MAX_LAYERS]; /* attention layers: (n_kv, max_seq, hd) post-norm post-RoPE */
    float *v_cache[MODEL_MAX_LAYERS]; /* (n_kv, max_seq, hd) */
    float *conv_win[MODEL_MAX_LAYERS]; /* GDN layers: (conv_dim, K-1) previous pre-conv inputs */
    float *ssm[MODEL_MAX_LAYERS];     /* GDN layers: (nv, dk, dv) recurrent state */
    /* of the last token: the smallest gap, over the MoE layers, between the router logits of the
     * last expert picked and one left out, in bf16 spacings of the layer's largest |logit| (a
     * bf16 run's error on every logit scales with that, not with the two at the tie). Within a
     * few spacings a bf16 run of the model may pick the other expert: a near-tie. */
    float router_gap;
    int32_t tie_layer, tie_picked, tie_left; /* where that gap was: layer, the two experts */
    /* of the last token, per layer: the same gap and pair (INFINITY, -1 for attention-only
     * or unrouted layers) */
    float layer_gap[MODEL_MAX_LAYERS];
    int32_t layer_picked[MODEL_MAX_LAYERS], layer_left[MODEL_MAX_LAYERS];
    /* the next ref_step only: at each layer l in force_mask route to expert force_take[l] in
     * place of force_drop[l], the other side of a near-tie, with the weights renormalised as
     * for any pick; ref_step clears the mask */
    uint64_t force_mask;
    int32_t force_drop[MODEL_MAX_LAYERS], force_take[MODEL_MAX_LAYERS];
};

/* Allocate every weight for config c and fill it through get. Returns 0 or -1 with err. */
int ref_model_init(struct ref_model *m, const struct model_config *c, ref_get_fn get, void *ctx,
                   char *err);
void ref_model_free(struct ref_model *m);

/* A fresh sequence: zero caches and states, pos 0. Returns 0 or -1 (out of memory). */
int ref_state_init(struct ref_state *s, const struct ref_model *m, uint32_t max_seq);
void ref_state_free(struct ref_state *s, const struct ref_model *m);
/* dst (from ref_state_init with src's max_seq) takes src's caches, states and position. */
void ref_state_copy(struct ref_state *dst, const struct ref_state *src, const struct ref_model *m);

/* Run token at position s->pos, write logits (V) when logits is non-NULL, advance s->pos.
 * Returns 0, or -1 if the token is out of range or the cache is full. */
int ref_step(const struct ref_model *m, struct ref_state *s, int32_t token, float *logits);

/* ref_step, and for each layer where the token meets a router near-tie (the layer's gap
 * below tie_gap spacings after the step), the same step again from the state before it,
 * routed the other way at that layer, its logits into alts[n]; when two or more layers tie,
 * one more with all of them routed the other way. These are the float32 truths for a bf16 run
 * that went another way. tmp is scratch, from ref_state_init with s's max_seq; alts holds
 * max_alts rows of the vocabulary. Returns the number of rows written to alts, or -1. Layers
 * past 64 are not branched. */
int ref_step_branches(const struct ref_model *m, struct ref_state *s, struct ref_state *tmp, int32_t token,
                      float *logits, float *alts, int max_alts, float tie_gap);

#endif
