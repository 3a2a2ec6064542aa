/* manifest.h — the list of tensors a weights image holds, from the model config and the
 * storage format alone.
 *
 * The converter writes exactly these tensors, in this order; the planner embeds the same list
 * in plan.bin and points relocations at its indices. Because both sides derive it from the
 * same function, a plan and an image built for the same (config, format) agree by
 * construction, and the manifest hash (wimage.h) proves it at load time.
 *
 * Names are the Hugging Face names without the "model.language_model." prefix, experts fused
 * as in the hub checkpoints: "layers.L.mlp.experts.gate_up_proj" (E, 2I, H) with gate rows
 * first, "layers.L.mlp.experts.down_proj" (E, H, I). MTP tensors keep their "mtp." names.
 *
 * What is quantized under INT4: every projection a token streams (GDN in_proj_qkv, in_proj_z,
 * out_proj; attention q/k/v/o; routed and shared experts). Kept in bf16: the embedding (a
 * gather, one row per token), the router and the shared-expert gate (tiny, and routing
 * decisions are sensitive), in_proj_b/in_proj_a (32 rows), conv taps, norms, dt_bias. Kept in
 * f32 as the hub checkpoints store them: A_log and the GDN gated-norm weight. lm_head follows
 * its own option. */
#ifndef MANIFEST_H
#define MANIFEST_H

#include <stdint.h>

#include "../plan/model.h"
#include "wimage.h"

struct wt_format {
    uint32_t quant;         /* enum plan_quant of projections and experts: BF16 or INT4 */
    uint32_t group_size;    /* INT4 group: 32, 64 or 128; 0 for BF16 */
    uint32_t lm_head_quant; /* enum plan_quant of lm_head: BF16 or INT4 (group_size as above) */
};

struct wt_manifest {
    uint32_t n;
    struct wt_tensor_desc *t;   /* n entries; names point into `names` */
    char *names;
};

/* Build the manifest for config c and format f. Returns 0, or -1 with a message in err
 * (MODEL_ERR_LEN bytes) when the format cannot hold the model (e.g. a width that is not a
 * multiple of the INT4 group, an unknown format). */
int wt_manifest_build(struct wt_manifest *m, const struct model_config *c, const struct wt_format *f,
                      char *err);
void wt_manifest_free(struct wt_manifest *m);

/* Index of tensor name, or -1. */
int64_t wt_manifest_find(const struct wt_manifest *m, const char *name);

/* The synthetic-weights distribution of tensor t (plan_weight.synth): bf16 bits of the center
 * in the high half and of the half-width in the low half of a uniform draw. Chosen per tensor
 * kind so a full-size model with synthetic weights behaves like the fixtures (embeddings of
 * unit scale, projections of std ~0.035, zero-centred norms near 0, the gated norm near 1,
 * A_log over log [0.01, 16], conv taps 0.3); for INT4 tensors it is the distribution of the
 * group scales, sized so scale * (q - 8) has that std. */
uint32_t wt_synth(const struct wt_tensor_desc *t);

/* Parse a --quant argument: "bf16", "int4" (group 128) or "int4:G". Returns 0 or -1. */
int wt_format_parse(const char *s, uint32_t *quant, uint32_t *group);

/* Parse a --lm-head argument: "bf16", "int4" (the group is left to --quant: *group = 0) or
 * "int4:G". Returns 0 or -1. */
int wt_format_parse_lm_head(const char *s, uint32_t *quant, uint32_t *group);

/* Settle the one group size of a format from the --quant group and the --lm-head group (0 when
 * not given): an INT4 lm_head takes the projections' group, its own when they are bf16, else
 * 128; nothing INT4 means group 0. Returns -1 when both are INT4 with different explicit
 * groups. The planner and the converter share this rule, so equal flags give a matching pair. */
int wt_format_resolve(struct wt_format *f, uint32_t quant_group, uint32_t lm_group);

/* "bf16", "int4:g128" — for messages and dumps. */
const char *wt_format_name(uint32_t quant, uint32_t group, char *buf, int n);

#endif
