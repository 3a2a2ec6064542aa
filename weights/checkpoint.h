/* checkpoint.h — a Hugging Face Qwen3.5-MoE checkpoint directory, seen through the names of the
 * weights image.
 *
 * The converter asks for image tensors (manifest.h naming: "layers.0.linear_attn.A_log",
 * "layers.3.mlp.experts.gate_up_proj", "lm_head.weight", "mtp.fc.weight") and this module finds
 * where they live in the checkpoint, whatever its shape on disk:
 *
 *   - one model.safetensors, or shards listed by model.safetensors.index.json (its weight_map
 *     from tensor name to shard file; every shard is opened once and cross-checked with the
 *     index: a name in two shards, a missing shard, or an entry whose shard lacks the tensor
 *     are errors naming the files and the tensor);
 *   - the multimodal prefix "model.language_model." (Qwen3_5MoeForConditionalGeneration, the
 *     published checkpoints) or the plain "model." of a Qwen3_5MoeForCausalLM save;
 *     "lm_head.weight" and "mtp.*" carry no prefix;
 *   - routed experts fused ("mlp.experts.gate_up_proj" (E, 2I, H), "mlp.experts.down_proj"
 *     (E, H, I)) or one tensor per expert ("mlp.experts.{e}.{gate,up,down}_proj.weight"), the
 *     latter stitched together as HF merges them: per expert, gate rows then up rows.
 *
 * wt_ck_bind() checks every tensor the manifest needs (present, shape as the config implies,
 * dtype BF16, F16 or F32) and that the checkpoint holds no language-model tensor the config
 * does not describe; "model.visual.*" and other non-language tensors are skipped. After that,
 * any row range of any image tensor can be read as float32 (wt_ck_read_rows), so a converter
 * never holds more of a tensor than it asks for. Reads use pread() and touch no shared state:
 * several threads may read at once. */
#ifndef WT_CHECKPOINT_H
#define WT_CHECKPOINT_H

#include <stdint.h>

#include "../plan/model.h"
#include "manifest.h"
#include "safetensors.h"

#define WT_CK_ERR_LEN  512
#define WT_CK_PATH_LEN 1024

/* One piece of an image tensor: consecutive rows taken from one safetensors tensor. */
struct wt_ck_part {
    uint32_t file;                /* index into files */
    const struct wt_st_tensor *t; /* in files[file] */
    uint64_t row0, rows;          /* rows [row0, row0 + rows) of the image tensor */
};

/* Where image tensor i (manifest order) comes from: parts[first .. first + count). Rows are
 * the tensor's leading dimensions flattened, cols its last dimension (a 1-D tensor is one row). */
struct wt_ck_source {
    uint32_t first, count;
    uint64_t rows, cols;
    uint64_t bytes; /* bytes read from the checkpoint for the whole tensor */
};

struct wt_ck {
    char dir[WT_CK_PATH_LEN];
    char where[WT_CK_PATH_LEN]; /* what messages name: the single file or the index */
    struct wt_st_file *files;   /* nfiles open safetensors files */
    uint32_t nfiles;
    const char *prefix;          /* "model.language_model." or "model." */
    struct wt_ck_entry *by_name; /* every tensor of every file, sorted by name */
    uint32_t nnames;
    struct wt_ck_source *src; /* after wt_ck_bind: one per manifest tensor */
    uint32_t nsrc;
    struct wt_ck_part *parts;
    uint32_t nparts, parts_cap;
    uint32_t skipped; /* tensors left out on purpose (vision, extras) */
};

/* Open the checkpoint in dir: model.safetensors if present, else the shards named by
 * model.safetensors.index.json. Every header is parsed and checked. Returns 0, or -1 with a
 * message naming the file (and the tensor, where one is at fault) in err (WT_CK_ERR_LEN). */
int wt_ck_open(struct wt_ck *ck, const char *dir, char *err);
void wt_ck_close(struct wt_ck *ck);

/* Map every tensor of manifest m (built from config c) to its source and check names,
 * shapes and dtypes, then look for language-model tensors the manifest does not hold (a
 * later call starts over with another manifest). Returns 0, or -1 with a message naming file
 * and tensor in err. */
int wt_ck_bind(struct wt_ck *ck, const struct wt_manifest *m, const struct model_config *c,
               char *err);

/* The part of bound image tensor i that holds row `row` (row < its rows): for messages, its
 * file is ck->files[part->file].path and its checkpoint name part->t->name. */
const struct wt_ck_part *wt_ck_part_of(const struct wt_ck *ck, uint32_t i, uint64_t row);

/* Read rows [row0, row0 + nrows) of bound image tensor i as float32 into dst (nrows * cols
 * floats). Thread-safe. Returns 0, or -1 with a message naming file and tensor. */
int wt_ck_read_rows(const struct wt_ck *ck, uint32_t i, uint64_t row0, uint64_t nrows, float *dst,
                    char *err);

#endif
