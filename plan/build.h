/* build.h — the planner's working model: named buffers, ops that reference them, and the
 * passes that turn them into a plan_content (arena layout, relocations, tables).
 *
 * The schedules (sched.c) emit ops as parameter structs from the kern/ headers plus references:
 * "field f of this blob is the address of buffer b + offset" or "of weight tensor w +
 * offset". A reference both records a relocation and extends the buffer's lifetime, so
 * liveness needs no separate description. plan_build_finish() then lays the arena out:
 *
 *   [ persistent | workspace | overlay ]
 *
 * persistent and workspace buffers get fixed offsets in creation order; the overlay
 * buffers of each schedule are placed by lifetime (arena.h) from the overlay base, since
 * schedules never run at the same time. Every placement is verified before it is written. */
#ifndef PLAN_BUILD_H
#define PLAN_BUILD_H

#include <stddef.h>
#include <stdint.h>

#include "../weights/manifest.h"
#include "planfile.h"

#define PB_NAME 64
#define PB_ERR_LEN 256

struct pb_buf {
    char name[PB_NAME];
    uint64_t size;
    uint32_t region;   /* enum plan_region_kind */
    uint32_t sched;    /* owning schedule (overlay), or PLAN_ALL_SCHEDULES */
    uint32_t dtype;    /* enum plan_dtype, informational */
    uint32_t first, last; /* schedule-relative op indices; first > last while unused */
    uint64_t offset;   /* arena offset, after plan_build_finish() */
};

struct pb_ref {
    uint32_t op;           /* global op index */
    uint32_t param_offset; /* byte offset in the op's blob */
    uint32_t base;         /* enum plan_reloc_base, or PB_BASE_BUF */
    uint32_t index;        /* buffer or weight index */
    uint64_t offset;
};
#define PB_BASE_BUF 100u   /* resolved to PLAN_BASE_ARENA once buffers are placed */

struct pb_op {
    struct plan_op op;     /* name as a string offset; param_offset into pb.params */
    uint32_t sched;
};

struct pb {
    struct model_config c;
    struct wt_format fmt;
    struct wt_manifest man;
    uint32_t max_seq;
    uint32_t num_buckets, buckets[PLAN_MAX_BUCKETS];
    uint32_t split_threshold; /* decode uses split-K when the filled length exceeds this */
    uint32_t n_split;         /* split-K pieces */
    uint32_t smem_limit;      /* opt-in shared memory per block on every target arch (bytes) */
    int gdn_chunk_fma;        /* prefill GDN on the CUDA-core chunk kernel even where the
                                 tensor-core one takes the heads (test_gpu_e2e E2E_GDN_FMA=1) */
    int gdn_chunk_fused;      /* prefill GDN on k_gdn_chunk even where k_gdn_prep + k_gdn_seq
                                 fit (test_gpu_e2e E2E_GDN_FUSED=1) */
    int moe_fused;            /* decode MoE as one launch, k_moe_fused_g128, where it takes
                                 the shape (planner --moe-decode fused) */
    int dense_cublas;         /* no k_gemm_i4_wg: prefill dense INT4 projections by
                                 k_gemm_i4_g128 up to K_GEMM_I4_MAXT tokens, through cuBLAS
                                 above (planner --dense-prefill cublas) */

    struct pb_buf *bufs; uint32_t nbufs, capbufs;
    struct pb_op *ops; uint32_t nops, capops;
    struct pb_ref *refs; uint32_t nrefs, caprefs;
    struct plan_kernel *kernels; uint32_t nkernels, capkernels;
    struct plan_schedule *scheds; uint32_t nscheds;
    uint8_t *params; uint64_t nparams, capparams;
    char *strings; uint64_t nstrings, capstrings;

    uint32_t cur_sched;       /* schedule being emitted */
    /* branches (pb_fork): ops now go to the side stream; the next op forks / joins; a range
     * is open; the op index of its fork; the closed ranges, for the lifetimes */
    int side, fork_next, join_next, open;
    uint32_t fork_op;
    struct pb_range { uint32_t sched, first, last; } *ranges; uint32_t nranges, capranges;
    int failed;               /* out of memory or a limit: the first message is in err */
    char err[PB_ERR_LEN];

    /* results of plan_build_finish() */
    struct plan_region regions[3];
    uint64_t arena_bytes;
    uint64_t naive_overlay;   /* overlay bytes if no buffer shared memory, summed over schedules */

    /* tables in file form, made by plan_build_content() */
    struct plan_buffer *out_bufs;
    struct plan_weight *out_weights;
    struct plan_reloc *out_relocs;
    struct plan_op *out_ops;
};

int pb_init(struct pb *b, const struct model_config *c, const struct wt_format *f, uint32_t max_seq,
            char *err);
void pb_free(struct pb *b);

/* Strings and kernels. */
uint32_t pb_str(struct pb *b, const char *s);
uint32_t pb_kernel(struct pb *b, const char *name, uint32_t param_size);

/* Buffers: persistent and workspace ones live across schedules; overlay ones belong to the
 * schedule being emitted. Returns the buffer index. */
uint32_t pb_buf(struct pb *b, uint32_t region, uint32_t dtype, uint64_t size, const char *fmt, ...)
    __attribute__((format(printf, 5, 6)));

/* Schedules. */
void pb_sched_begin(struct pb *b, uint32_t kind, uint32_t tokens, uint32_t kv_min, uint32_t kv_max,
                    const char *name);
void pb_sched_end(struct pb *b);

/* Branches of a prefill schedule (planfile.h PLAN_OP_SIDE): after pb_fork the ops emitted go
 * to the side stream, after pb_main to the main stream again, and the op emitted after
 * pb_join waits for the side ops. Every overlay buffer an op of the range [fork, join] touches
 * is kept live over all of it. A range with no side op leaves no flags. */
void pb_fork(struct pb *b);
void pb_main(struct pb *b);
void pb_join(struct pb *b);

/* Ops. pb_kernel_op copies the parameter struct; pb_ref_* then patch addresses into it. */
uint32_t pb_kernel_op(struct pb *b, const char *kernel, const void *params, uint32_t size,
                      const uint32_t grid[3], uint32_t block, uint32_t smem, const char *fmt, ...)
    __attribute__((format(printf, 8, 9)));
uint32_t pb_runtime_op(struct pb *b, uint32_t kind, const void *blob, uint32_t size, const char *fmt,
                       ...) __attribute__((format(printf, 5, 6)));
void pb_cost(struct pb *b, uint32_t op, uint64_t bytes, uint64_t flops);
void pb_ref_buf(struct pb *b, uint32_t op, uint32_t param_offset, uint32_t buf, uint64_t offset);
void pb_ref_weight(struct pb *b, uint32_t op, uint32_t param_offset, const char *name, uint64_t offset);
void pb_ref_ring(struct pb *b, uint32_t op, uint32_t param_offset);
/* The weight tensor called name (it must exist in the manifest). */
const struct wt_tensor_desc *pb_weight(struct pb *b, const char *name);

/* Lay out the arena, verify it, resolve relocations. Returns 0 or -1 with b->err. */
int plan_build_finish(struct pb *b);

/* Everything for plan_write(), pointing into b (valid until pb_free). The caller adds the
 * images, image_data, archs and planner_version. Returns 0 or -1 (out of memory). */
int plan_build_content(struct pb *b, struct plan_content *out);

/* Opt-in shared memory per block of an arch (80, 86, 87, 89, 90), 0 for an unknown one. */
uint32_t plan_arch_smem(uint32_t arch);
/* The shared memory the model's largest kernel needs at least (a plan for an arch with less
 * cannot run): the chunked GDN kernel with its narrowest value tile. */
uint32_t plan_min_smem(const struct model_config *c);

/* The op lists of the model (sched.c): decode schedules and one prefill schedule per bucket. */
int plan_emit_schedules(struct pb *b);

#endif
