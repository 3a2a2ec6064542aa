/* planfile.h — the plan.bin format: its one definition, reader and writer.
 *
 * plan.bin is everything decided before the box boots (DESIGN.md §3): the model identity,
 * the arena layout, the weight manifest the plan reads, the kernel images, and the fixed
 * launch schedules. The planner writes it; rt reads it and executes ops without knowing the
 * model. It is an fmt.h container with magic "QPLN" and these sections (ids append-only):
 *
 *   id  name        records               what
 *    1  IDENTITY    plan_identity × 1     model config, max_seq, buckets, formats, archs, hashes
 *    2  STRINGS     raw bytes             NUL-terminated names, referenced by byte offset
 *    3  REGIONS     plan_region           persistent / workspace / overlay ranges of the arena
 *    4  BUFFERS     plan_buffer           named arena buffers with lifetimes
 *    5  WEIGHTS     plan_weight           weight manifest: every tensor the plan reads
 *    6  IMAGES      plan_image            kernel images, one per target arch
 *    7  IMAGE_DATA  raw bytes             the cubin/fatbin bytes the IMAGES records point into
 *    8  KERNELS     plan_kernel           kernel names and parameter sizes
 *    9  PARAMS      raw bytes             parameter blobs of every op, 16-byte aligned each
 *   10  RELOCS      plan_reloc            device addresses to patch into parameter blobs
 *   11  SCHEDULES   plan_schedule         decode and prefill schedules: ranges of ops
 *   12  OPS         plan_op               one launch each: kernel, shape, params, cost
 *
 * A parameter blob is the raw argument struct of a kernel (the structs in the kern/ headers) or of a
 * runtime op (struct plan_gemm / plan_memset / plan_copy below). Each relocation writes a
 * 64-bit device address base + offset at a byte offset of its op's blob, where base is the
 * arena, a weight tensor, or the host-mapped token ring. Ops are validated against every
 * table at load; nothing in the file is trusted before plan_read() returns PLAN_OK. */
#ifndef PLANFILE_H
#define PLANFILE_H

#include <stddef.h>
#include <stdint.h>

#include "fmt.h"
#include "model.h"

#define PLAN_MAGIC 0x4E4C5051u /* "QPLN" */
#define PLAN_VERSION 2u
#define PLAN_MAX_BUCKETS 16    /* prefill bucket sizes */
#define PLAN_MAX_ARCHS 8       /* kernel images */
#define PLAN_MAX_DIMS 4        /* weight tensor rank */
#define PLAN_PARAM_ALIGN 16    /* every op's blob starts at a multiple of this */
#define PLAN_MAX_PARAM 4096    /* cuLaunchKernel parameter limit on the supported archs */

enum plan_section_id {
    PLAN_SEC_IDENTITY = 1,
    PLAN_SEC_STRINGS = 2,
    PLAN_SEC_REGIONS = 3,
    PLAN_SEC_BUFFERS = 4,
    PLAN_SEC_WEIGHTS = 5,
    PLAN_SEC_IMAGES = 6,
    PLAN_SEC_IMAGE_DATA = 7,
    PLAN_SEC_KERNELS = 8,
    PLAN_SEC_PARAMS = 9,
    PLAN_SEC_RELOCS = 10,
    PLAN_SEC_SCHEDULES = 11,
    PLAN_SEC_OPS = 12,
};

/* Weight storage formats; shared with the weights image (wimage.h). */
enum plan_quant {
    PLAN_QUANT_BF16 = 1, /* every matrix in bf16 */
    PLAN_QUANT_INT4 = 2, /* projections and experts in packed INT4 with bf16 group scales */
    PLAN_QUANT_INT8 = 3, /* int8 with per-row scales (lm_head option) */
};

/* Tensor element types, shared with the weights image. */
enum plan_dtype {
    PLAN_DTYPE_BF16 = 1,
    PLAN_DTYPE_F16 = 2,
    PLAN_DTYPE_F32 = 3,
    PLAN_DTYPE_I4 = 4,  /* packed 4-bit, layout given by the tensor's layout id */
    PLAN_DTYPE_I8 = 5,
    PLAN_DTYPE_I32 = 6,
};

struct plan_identity {
    struct model_config model;           /* the model this plan serves */
    uint32_t max_seq;                    /* context capacity of the KV cache */
    uint32_t num_buckets;                /* prefill bucket sizes used */
    uint32_t buckets[PLAN_MAX_BUCKETS];  /* tokens per prefill schedule, ascending */
    uint32_t quant;                      /* enum plan_quant of the projections and experts */
    uint32_t group_size;                 /* INT4 group size (32, 64, 128), 0 for bf16 */
    uint32_t lm_head_quant;              /* enum plan_quant of lm_head */
    uint32_t num_archs;                  /* entries of archs used */
    uint32_t archs[PLAN_MAX_ARCHS];      /* SM versions with images: 80, 86, 87, 89, 90 (90 = sm_90a) */
    uint32_t reserved0;
    uint64_t arena_bytes;                /* size of the one arena allocation */
    uint64_t weights_bytes;              /* size of the weights data the manifest describes */
    uint64_t manifest_hash;              /* wt_manifest_hash() of the weight manifest */
    uint64_t images_hash;                /* fnv64 over IMAGE_DATA */
    char planner_version[32];            /* NUL-terminated, informational */
};

enum plan_region_kind {
    PLAN_REGION_PERSISTENT = 1, /* KV cache, GDN states, step state, token ring, sampling */
    PLAN_REGION_WORKSPACE = 2,  /* split-K partials, MoE sort buffers, cuBLAS workspace */
    PLAN_REGION_OVERLAY = 3,    /* activations, placed by liveness per schedule */
};

struct plan_region {
    uint32_t name;      /* STRINGS offset */
    uint32_t kind;      /* enum plan_region_kind */
    uint64_t offset;    /* arena byte offset, 256-aligned */
    uint64_t size;      /* bytes */
};

#define PLAN_ALL_SCHEDULES 0xFFFFFFFFu
#define PLAN_BUF_ALIGN 256

struct plan_buffer {
    uint32_t name;      /* STRINGS offset */
    uint32_t region;    /* index into REGIONS */
    uint32_t schedule;  /* schedule whose overlay it lives in, or PLAN_ALL_SCHEDULES */
    uint32_t dtype;     /* enum plan_dtype of its elements (informational) */
    uint64_t offset;    /* arena byte offset, PLAN_BUF_ALIGN-aligned, inside its region */
    uint64_t size;      /* bytes */
    uint32_t first_op;  /* lifetime: first and last op (schedule-relative) that touch it; */
    uint32_t last_op;   /* 0 and 0xFFFFFFFF for buffers that live across schedules */
};

struct plan_weight {
    uint32_t name;                  /* STRINGS offset: the tensor name in the weights image */
    uint32_t dtype;                 /* enum plan_dtype */
    uint32_t layout;                /* packed layout id (kern/ headers); 0 = plain row-major */
    uint32_t group_size;            /* quantization group, 0 if none */
    uint32_t ndim;                  /* 1..PLAN_MAX_DIMS */
    uint32_t synth;                 /* synthetic-weights fill: bf16 bits of the center (high
                                     * half) and half-width (low half) of a uniform draw; for
                                     * INT4 tensors it describes the scales (nibbles are random) */
    uint64_t shape[PLAN_MAX_DIMS];  /* logical shape, unused dims 0 */
    uint64_t size;                  /* bytes the tensor occupies in the image */
};

enum plan_image_kind {
    PLAN_IMAGE_CUBIN = 1,
    PLAN_IMAGE_FATBIN = 2,
};

struct plan_image {
    uint32_t arch;      /* SM version the image targets (90 means sm_90a) */
    uint32_t kind;      /* enum plan_image_kind */
    uint64_t offset;    /* into IMAGE_DATA */
    uint64_t size;      /* bytes */
};

struct plan_kernel {
    uint32_t name;          /* STRINGS offset: the extern "C" symbol */
    uint32_t param_size;    /* size of its parameter struct; every op's blob must match */
};

enum plan_op_kind {
    PLAN_OP_KERNEL = 1, /* cuLaunchKernel with the blob as the single by-value argument */
    PLAN_OP_GEMM = 2,   /* cuBLAS GEMM described by a struct plan_gemm blob */
    PLAN_OP_MEMSET = 3, /* struct plan_memset blob */
    PLAN_OP_COPY = 4,   /* struct plan_copy blob (device to device) */
};

#define PLAN_NO_KERNEL 0xFFFFFFFFu

/* Op flags: a prefill schedule's independent branches. The ops in file order are always a
 * valid order to run them one after another; the flags only allow more. Between a FORK and the
 * next JOIN a schedule has two streams: SIDE ops run on the second one, which starts after
 * every op before the FORK, and the JOIN op (a main-stream op) and every op after it wait for
 * every SIDE op before it. The planner keeps every buffer that an op between the FORK and
 * the JOIN touches live over that whole range, so the two branches never share bytes. Rules
 * (plan_read): FORK only with SIDE and not inside an open range; SIDE only inside one; JOIN
 * only on a main op, closing an open range (so a range holds a SIDE op); every range closed by the
 * schedule's end; no flags in decode schedules (their kernels chain by programmatic launch). */
#define PLAN_OP_SIDE 1u
#define PLAN_OP_FORK 2u
#define PLAN_OP_JOIN 4u
#define PLAN_OP_FLAGS (PLAN_OP_SIDE | PLAN_OP_FORK | PLAN_OP_JOIN)

struct plan_op {
    uint32_t name;          /* STRINGS offset, e.g. "l3.attn.decode_split" */
    uint32_t kind;          /* enum plan_op_kind */
    uint32_t kernel;        /* KERNELS index for PLAN_OP_KERNEL, else PLAN_NO_KERNEL */
    uint32_t grid[3];       /* CTA grid, each >= 1 */
    uint32_t block[3];      /* threads per CTA, product 1..1024 */
    uint32_t smem;          /* dynamic shared memory bytes */
    uint32_t param_offset;  /* into PARAMS, PLAN_PARAM_ALIGN-aligned */
    uint32_t param_size;    /* blob bytes */
    uint32_t reloc_first;   /* first RELOCS entry of this op */
    uint32_t reloc_count;   /* RELOCS entries of this op */
    uint32_t flags;         /* PLAN_OP_SIDE | PLAN_OP_FORK | PLAN_OP_JOIN, or 0 */
    uint32_t reserved0;
    uint64_t bytes;         /* expected device memory traffic */
    uint64_t flops;         /* expected floating-point operations */
};

enum plan_reloc_base {
    PLAN_BASE_ARENA = 1,    /* arena base + offset; offset < arena_bytes */
    PLAN_BASE_WEIGHT = 2,   /* weight tensor `index` + offset; offset < its size */
    PLAN_BASE_RING = 3,     /* host-mapped token ring + offset (device pointer) */
};

struct plan_reloc {
    uint32_t param_offset;  /* byte offset inside the op's blob, 8-aligned, +8 <= blob size */
    uint32_t base;          /* enum plan_reloc_base */
    uint32_t index;         /* weight index for PLAN_BASE_WEIGHT, else 0 */
    uint32_t reserved0;
    uint64_t offset;        /* byte offset added to the base */
};

enum plan_schedule_kind {
    PLAN_SCHED_DECODE = 1,  /* one token per replay */
    PLAN_SCHED_PREFILL = 2, /* up to `tokens` tokens per replay */
};

struct plan_schedule {
    uint32_t name;          /* STRINGS offset */
    uint32_t kind;          /* enum plan_schedule_kind */
    uint32_t tokens;        /* 1 for decode, the bucket size for prefill */
    uint32_t first_op;      /* OPS range */
    uint32_t op_count;
    uint32_t kv_min;        /* filled-length range this schedule serves: */
    uint32_t kv_max;        /* kv_min <= L_kv <= kv_max (split-K vs single pass per range) */
    uint32_t reserved0;
};

/* Blobs of runtime ops. Addresses are filled by relocations. */
struct plan_gemm {          /* C[m,n] = alpha * op(A) op(B) + beta * C, cuBLAS column-major terms */
    uint64_t a, b, c;       /* device addresses (relocated) */
    uint32_t m, n, k;
    uint32_t lda, ldb, ldc;
    uint32_t trans_a, trans_b; /* 0 = N, 1 = T */
    uint32_t dtype_ab;      /* enum plan_dtype of A and B */
    uint32_t dtype_c;       /* enum plan_dtype of C */
    float alpha, beta;
};

struct plan_memset {
    uint64_t dst;           /* device address (relocated) */
    uint64_t bytes;
    uint32_t value;         /* byte value */
    uint32_t reserved0;
};

struct plan_copy {
    uint64_t dst, src;      /* device addresses (relocated) */
    uint64_t bytes;
};

/* A checked, read-only view of a plan in memory. Pointers point into the caller's buffer
 * and are valid while it is; record arrays may be unaligned, so read them with memcpy or
 * the plan_get_* helpers. */
struct plan_view {
    struct fmt_view f;
    struct plan_identity id;
    const char *strings; uint64_t strings_size;
    const uint8_t *regions; uint32_t num_regions;
    const uint8_t *buffers; uint32_t num_buffers;
    const uint8_t *weights; uint32_t num_weights;
    const uint8_t *images; uint32_t num_images;
    const uint8_t *image_data; uint64_t image_data_size;
    const uint8_t *kernels; uint32_t num_kernels;
    const uint8_t *params; uint64_t params_size;
    const uint8_t *relocs; uint32_t num_relocs;
    const uint8_t *schedules; uint32_t num_schedules;
    const uint8_t *ops; uint32_t num_ops;
};

/* Parse and check plan.bin in buf[0..len): the container (fmt_open), then every record:
 * string offsets inside STRINGS, regions and buffers 256-aligned inside the arena and
 * buffers inside their region, weight ranks and sizes, images inside IMAGE_DATA, kernel
 * indices, parameter blobs inside PARAMS and equal in size to their kernel's struct,
 * relocation ranges, offsets and bases, schedule op ranges, launch shapes, and the identity
 * (model_config_check, buckets ascending, archs known, images_hash). Pure: no allocation,
 * no I/O. Returns FMT_OK, or a status with a message in err (FMT_ERR_LEN bytes). */
enum fmt_status plan_read(struct plan_view *p, const void *buf, size_t len, char *err);

/* Record accessors: copy record i out of the view (i must be < the count). */
void plan_get_region(const struct plan_view *p, uint32_t i, struct plan_region *r);
void plan_get_buffer(const struct plan_view *p, uint32_t i, struct plan_buffer *b);
void plan_get_weight(const struct plan_view *p, uint32_t i, struct plan_weight *w);
void plan_get_image(const struct plan_view *p, uint32_t i, struct plan_image *im);
void plan_get_kernel(const struct plan_view *p, uint32_t i, struct plan_kernel *k);
void plan_get_reloc(const struct plan_view *p, uint32_t i, struct plan_reloc *r);
void plan_get_schedule(const struct plan_view *p, uint32_t i, struct plan_schedule *s);
void plan_get_op(const struct plan_view *p, uint32_t i, struct plan_op *op);
/* A name from STRINGS (offsets were checked by plan_read). */
const char *plan_str(const struct plan_view *p, uint32_t off);

/* ---- writing ------------------------------------------------------------------------ */

/* The whole plan in host memory, as the planner builds it. Arrays are owned by the caller. */
struct plan_content {
    struct plan_identity id;
    const char *strings; uint64_t strings_size;
    const struct plan_region *regions; uint32_t num_regions;
    const struct plan_buffer *buffers; uint32_t num_buffers;
    const struct plan_weight *weights; uint32_t num_weights;
    const struct plan_image *images; uint32_t num_images;
    const uint8_t *image_data; uint64_t image_data_size;
    const struct plan_kernel *kernels; uint32_t num_kernels;
    const uint8_t *params; uint64_t params_size;
    const struct plan_reloc *relocs; uint32_t num_relocs;
    const struct plan_schedule *schedules; uint32_t num_schedules;
    const struct plan_op *ops; uint32_t num_ops;
};

/* Serialize c into a malloc'd buffer (*out, *len; the caller frees). The writer fills
 * id.images_hash itself and then runs plan_read() over its own output, so it never
 * produces a file its reader refuses. Deterministic: equal content, equal bytes. */
enum fmt_status plan_write(const struct plan_content *c, uint8_t **out, size_t *len, char *err);

#endif
