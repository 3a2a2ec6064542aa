/* planfile.c — the plan.bin reader and writer (planfile.h).
 *
 * plan_read() is the one gate between a file and the runtime: after fmt_open() has checked
 * the container, every record of every section is checked against the tables it refers to,
 * so rt can later index them blind (STYLE.md rule 3). The checks are grouped one function per
 * section, in dependency order: identity, regions, buffers, weights, kernels, images,
 * relocations, ops (which also check the relocations they own), schedules. Messages name the
 * record (index and name) and the rule.
 *
 * Rules beyond the list in planfile.h, chosen so that a file has one meaning:
 *   - names of kernels and weights are non-empty (they are looked up); other names may be
 *     empty (they are informational);
 *   - unused bucket and arch slots are zero, archs are unique, and every listed arch has
 *     exactly one image;
 *   - a buffer's dtype is 0 (untyped bytes) or a known dtype, and first_op <= last_op;
 *   - every launch shape, including the unused one of GEMM/MEMSET/COPY ops, has grid >= 1
 *     and a block of 1..1024 threads with block[2] <= 64;
 *   - each relocation belongs to at most one op: the non-empty relocation ranges of the ops
 *     ascend without overlapping, which also keeps checking them linear in the file size;
 *   - a prefill schedule's token count is one of the identity's buckets;
 *   - op flags hold only PLAN_OP_FLAGS, nested as planfile.h says, and only in prefill
 *     schedules, checked over each schedule's op range.
 *
 * Records are read with memcpy: section data is only FMT_ALIGN-aligned and record arrays
 * follow each other at arbitrary offsets in a buffer the caller owns. */
#include "planfile.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "crc.h"

/* Every record is written to the file as it is: its size must be the sum of its fields, so
 * there is no implicit padding whose bytes would be undefined. */
_Static_assert(sizeof(struct plan_identity) ==
                   sizeof(struct model_config) + 31 * 4 + 4 * 8 + 32, "plan_identity padding");
_Static_assert(sizeof(struct plan_identity) == 448, "plan_identity size");
_Static_assert(sizeof(struct plan_region) == 2 * 4 + 2 * 8 && sizeof(struct plan_region) == 24,
               "plan_region");
_Static_assert(sizeof(struct plan_buffer) == 6 * 4 + 2 * 8 && sizeof(struct plan_buffer) == 40,
               "plan_buffer");
_Static_assert(sizeof(struct plan_weight) == 6 * 4 + 5 * 8 && sizeof(struct plan_weight) == 64,
               "plan_weight");
_Static_assert(sizeof(struct plan_image) == 2 * 4 + 2 * 8 && sizeof(struct plan_image) == 24,
               "plan_image");
_Static_assert(sizeof(struct plan_kernel) == 2 * 4 && sizeof(struct plan_kernel) == 8,
               "plan_kernel");
_Static_assert(sizeof(struct plan_op) == 16 * 4 + 2 * 8 && sizeof(struct plan_op) == 80,
               "plan_op");
_Static_assert(sizeof(struct plan_reloc) == 4 * 4 + 8 && sizeof(struct plan_reloc) == 24,
               "plan_reloc");
_Static_assert(sizeof(struct plan_schedule) == 8 * 4 && sizeof(struct plan_schedule) == 32,
               "plan_schedule");
_Static_assert(sizeof(struct plan_gemm) == 3 * 8 + 12 * 4 && sizeof(struct plan_gemm) == 72,
               "plan_gemm");
_Static_assert(sizeof(struct plan_memset) == 2 * 8 + 2 * 4 && sizeof(struct plan_memset) == 24,
               "plan_memset");
_Static_assert(sizeof(struct plan_copy) == 3 * 8 && sizeof(struct plan_copy) == 24, "plan_copy");

#define PLAN_MAX_GRID_X 0x7FFFFFFFu /* CUDA limits on every supported arch */
#define PLAN_MAX_GRID_YZ 65535u
#define PLAN_MAX_BLOCK 1024u
#define PLAN_MAX_BLOCK_Z 64u


static int arch_known(uint32_t a)
{
    return a == 80 || a == 86 || a == 87 || a == 89 || a == 90;
}

static int dtype_known(uint32_t d)
{
    return d >= PLAN_DTYPE_BF16 && d <= PLAN_DTYPE_I32;
}

static int quant_known(uint32_t q)
{
    return q >= PLAN_QUANT_BF16 && q <= PLAN_QUANT_INT8;
}

/* ---- sections ---------------------------------------------------------------------------- */

static enum fmt_status raw_section(const struct plan_view *p, uint32_t id, const char *what,
                                   const uint8_t **data, uint64_t *size, char *err)
{
    const void *d;
    const struct fmt_section *s = fmt_find(&p->f, id, &d);
    if (!s)
        return fmt_fail(err, FMT_ERR_MISSING, "%s section (id %u) is missing", what, id);
    if (s->record_size != 0 || (s->flags & FMT_SEC_STREAMED))
        return fmt_fail(err, FMT_ERR_INVALID, "%s section (id %u) must hold raw, unstreamed bytes",
                    what, id);
    *data = d;
    *size = s->size;
    return FMT_OK;
}

static enum fmt_status load_sections(struct plan_view *p, char *err)
{
    const struct {
        uint32_t id, size;
        const char *what;
        const uint8_t **data;
        uint32_t *count;
    } rec[] = {
        {PLAN_SEC_REGIONS, sizeof(struct plan_region), "REGIONS", &p->regions, &p->num_regions},
        {PLAN_SEC_BUFFERS, sizeof(struct plan_buffer), "BUFFERS", &p->buffers, &p->num_buffers},
        {PLAN_SEC_WEIGHTS, sizeof(struct plan_weight), "WEIGHTS", &p->weights, &p->num_weights},
        {PLAN_SEC_IMAGES, sizeof(struct plan_image), "IMAGES", &p->images, &p->num_images},
        {PLAN_SEC_KERNELS, sizeof(struct plan_kernel), "KERNELS", &p->kernels, &p->num_kernels},
        {PLAN_SEC_RELOCS, sizeof(struct plan_reloc), "RELOCS", &p->relocs, &p->num_relocs},
        {PLAN_SEC_SCHEDULES, sizeof(struct plan_schedule), "SCHEDULES", &p->schedules,
         &p->num_schedules},
        {PLAN_SEC_OPS, sizeof(struct plan_op), "OPS", &p->ops, &p->num_ops},
    };
    const void *d;
    uint32_t n;
    enum fmt_status st = fmt_records(&p->f, PLAN_SEC_IDENTITY, sizeof(struct plan_identity),
                                     "IDENTITY", &d, &n, err);
    if (st != FMT_OK)
        return st;
    if (n != 1)
        return fmt_fail(err, FMT_ERR_INVALID, "IDENTITY section holds %u records, expected 1", n);
    memcpy(&p->id, d, sizeof p->id);
    for (size_t i = 0; i < sizeof rec / sizeof rec[0]; i++) {
        st = fmt_records(&p->f, rec[i].id, rec[i].size, rec[i].what, &d, rec[i].count, err);
        if (st != FMT_OK)
            return st;
        *rec[i].data = d;
    }
    const uint8_t *strings;
    if ((st = raw_section(p, PLAN_SEC_STRINGS, "STRINGS", &strings, &p->strings_size, err)) ||
        (st = raw_section(p, PLAN_SEC_IMAGE_DATA, "IMAGE_DATA", &p->image_data,
                          &p->image_data_size, err)) ||
        (st = raw_section(p, PLAN_SEC_PARAMS, "PARAMS", &p->params, &p->params_size, err)))
        return st;
    p->strings = (const char *)strings;
    return FMT_OK;
}

/* The name at STRINGS offset off of record `what` i: terminated inside STRINGS and, where
 * required, non-empty. */
static enum fmt_status check_name(const struct plan_view *p, uint32_t off, int nonempty,
                                  const char *what, uint32_t i, char *err)
{
    const char *s = fmt_string(p->strings, p->strings_size, off);
    if (!s)
        return fmt_fail(err, FMT_ERR_BOUNDS,
                    "%s %u: name offset %u is outside STRINGS or its string is unterminated", what,
                    i, off);
    if (nonempty && !*s)
        return fmt_fail(err, FMT_ERR_INVALID, "%s %u: empty name", what, i);
    return FMT_OK;
}

/* ---- identity ---------------------------------------------------------------------------- */

static enum fmt_status check_buckets(const struct plan_identity *id, char *err)
{
    if (id->num_buckets > PLAN_MAX_BUCKETS)
        return fmt_fail(err, FMT_ERR_BOUNDS, "identity: num_buckets %u exceeds %d", id->num_buckets,
                    PLAN_MAX_BUCKETS);
    for (uint32_t i = 0; i < PLAN_MAX_BUCKETS; i++) {
        uint32_t b = id->buckets[i];
        if (i >= id->num_buckets && b != 0)
            return fmt_fail(err, FMT_ERR_INVALID, "identity: unused bucket slot %u is not zero", i);
        if (i < id->num_buckets && b == 0)
            return fmt_fail(err, FMT_ERR_INVALID, "identity: bucket %u is zero", i);
        if (i < id->num_buckets && i > 0 && b <= id->buckets[i - 1])
            return fmt_fail(err, FMT_ERR_INVALID,
                        "identity: buckets are not strictly ascending (%u after %u)", b,
                        id->buckets[i - 1]);
    }
    return FMT_OK;
}

static enum fmt_status check_formats(const struct plan_identity *id, char *err)
{
    if (!quant_known(id->quant))
        return fmt_fail(err, FMT_ERR_INVALID, "identity: unknown quant %u", id->quant);
    if (!quant_known(id->lm_head_quant))
        return fmt_fail(err, FMT_ERR_INVALID, "identity: unknown lm_head_quant %u", id->lm_head_quant);
    uint32_t g = id->group_size;
    int int4 = id->quant == PLAN_QUANT_INT4 || id->lm_head_quant == PLAN_QUANT_INT4;
    if (int4 && g != 32 && g != 64 && g != 128)
        return fmt_fail(err, FMT_ERR_INVALID, "identity: INT4 group_size %u is not 32, 64 or 128", g);
    if (!int4 && g != 0)
        return fmt_fail(err, FMT_ERR_INVALID, "identity: group_size %u must be 0 without INT4", g);
    return FMT_OK;
}

static enum fmt_status check_archs(const struct plan_identity *id, char *err)
{
    if (id->num_archs > PLAN_MAX_ARCHS)
        return fmt_fail(err, FMT_ERR_BOUNDS, "identity: num_archs %u exceeds %d", id->num_archs,
                    PLAN_MAX_ARCHS);
    for (uint32_t i = 0; i < PLAN_MAX_ARCHS; i++) {
        uint32_t a = id->archs[i];
        if (i >= id->num_archs) {
            if (a != 0)
                return fmt_fail(err, FMT_ERR_INVALID, "identity: unused arch slot %u is not zero", i);
            continue;
        }
        if (!arch_known(a))
            return fmt_fail(err, FMT_ERR_INVALID,
                        "identity: arch %u is not one of 80, 86, 87, 89, 90", a);
        for (uint32_t j = 0; j < i; j++)
            if (id->archs[j] == a)
                return fmt_fail(err, FMT_ERR_INVALID, "identity: arch %u listed twice", a);
    }
    return FMT_OK;
}

static enum fmt_status check_identity(const struct plan_view *p, char *err)
{
    const struct plan_identity *id = &p->id;
    char merr[MODEL_ERR_LEN];
    enum fmt_status st;
    if (model_config_check(&id->model, merr))
        return fmt_fail(err, FMT_ERR_INVALID, "identity: model config: %s", merr);
    if (id->max_seq < 1 || id->max_seq > id->model.max_position)
        return fmt_fail(err, FMT_ERR_INVALID, "identity: max_seq %u is outside 1..max_position %u",
                    id->max_seq, id->model.max_position);
    if ((st = check_buckets(id, err)) || (st = check_formats(id, err)) ||
        (st = check_archs(id, err)))
        return st;
    if (!memchr(id->planner_version, 0, sizeof id->planner_version))
        return fmt_fail(err, FMT_ERR_INVALID, "identity: planner_version is not NUL-terminated");
    if (id->reserved0)
        return fmt_fail(err, FMT_ERR_INVALID, "identity: reserved0 is not zero");
    if (id->arena_bytes == 0)
        return fmt_fail(err, FMT_ERR_INVALID, "identity: arena_bytes is 0");
    uint64_t h = fnv64(FNV64_INIT, p->image_data, (size_t)p->image_data_size);
    if (h != id->images_hash)
        return fmt_fail(err, FMT_ERR_INVALID,
                    "identity: images_hash %016llx does not match IMAGE_DATA (%016llx)",
                    (unsigned long long)id->images_hash, (unsigned long long)h);
    return FMT_OK;
}

/* ---- arena ------------------------------------------------------------------------------- */

static enum fmt_status check_regions(const struct plan_view *p, char *err)
{
    uint64_t arena = p->id.arena_bytes;
    for (uint32_t i = 0; i < p->num_regions; i++) {
        struct plan_region r;
        enum fmt_status st;
        plan_get_region(p, i, &r);
        if ((st = check_name(p, r.name, 0, "region", i, err)))
            return st;
        const char *nm = plan_str(p, r.name);
        if (r.kind < PLAN_REGION_PERSISTENT || r.kind > PLAN_REGION_OVERLAY)
            return fmt_fail(err, FMT_ERR_INVALID, "region %u '%.80s': unknown kind %u", i, nm, r.kind);
        if (r.offset % PLAN_BUF_ALIGN)
            return fmt_fail(err, FMT_ERR_INVALID, "region %u '%.80s': offset %llu is not %d-aligned", i,
                        nm, (unsigned long long)r.offset, PLAN_BUF_ALIGN);
        if (r.offset > arena || r.size > arena - r.offset)
            return fmt_fail(err, FMT_ERR_BOUNDS,
                        "region %u '%.80s': [%llu, +%llu) lies outside the %llu-byte arena", i, nm,
                        (unsigned long long)r.offset, (unsigned long long)r.size,
                        (unsigned long long)arena);
    }
    return FMT_OK;
}

static enum fmt_status check_buffer(const struct plan_view *p, uint32_t i,
                                    const struct plan_buffer *b, char *err)
{
    const char *nm = plan_str(p, b->name);
    struct plan_region r;
    if (b->region >= p->num_regions)
        return fmt_fail(err, FMT_ERR_BOUNDS, "buffer %u '%.80s': region index %u out of range (%u regions)",
                    i, nm, b->region, p->num_regions);
    if (b->schedule != PLAN_ALL_SCHEDULES && b->schedule >= p->num_schedules)
        return fmt_fail(err, FMT_ERR_BOUNDS,
                    "buffer %u '%.80s': schedule index %u out of range (%u schedules)", i, nm,
                    b->schedule, p->num_schedules);
    if (b->dtype != 0 && !dtype_known(b->dtype))
        return fmt_fail(err, FMT_ERR_INVALID, "buffer %u '%.80s': unknown dtype %u", i, nm, b->dtype);
    if (b->offset % PLAN_BUF_ALIGN)
        return fmt_fail(err, FMT_ERR_INVALID, "buffer %u '%.80s': offset %llu is not %d-aligned", i, nm,
                    (unsigned long long)b->offset, PLAN_BUF_ALIGN);
    plan_get_region(p, b->region, &r);
    if (b->offset < r.offset || b->offset - r.offset > r.size ||
        b->size > r.size - (b->offset - r.offset))
        return fmt_fail(err, FMT_ERR_BOUNDS, "buffer %u '%.80s': [%llu, +%llu) lies outside its region %u",
                    i, nm, (unsigned long long)b->offset, (unsigned long long)b->size, b->region);
    if (b->first_op > b->last_op)
        return fmt_fail(err, FMT_ERR_INVALID, "buffer %u '%.80s': lifetime first_op %u > last_op %u", i,
                    nm, b->first_op, b->last_op);
    return FMT_OK;
}

static enum fmt_status check_buffers(const struct plan_view *p, char *err)
{
    for (uint32_t i = 0; i < p->num_buffers; i++) {
        struct plan_buffer b;
        enum fmt_status st;
        plan_get_buffer(p, i, &b);
        if ((st = check_name(p, b.name, 0, "buffer", i, err)) ||
            (st = check_buffer(p, i, &b, err)))
            return st;
    }
    return FMT_OK;
}

/* ---- weights, kernels, images -------------------------------------------------------------- */

static enum fmt_status check_weight(const struct plan_view *p, uint32_t i,
                                    const struct plan_weight *w, char *err)
{
    const char *nm = plan_str(p, w->name);
    if (!dtype_known(w->dtype))
        return fmt_fail(err, FMT_ERR_INVALID, "weight %u '%.80s': unknown dtype %u", i, nm, w->dtype);
    if (w->ndim < 1 || w->ndim > PLAN_MAX_DIMS)
        return fmt_fail(err, FMT_ERR_INVALID, "weight %u '%.80s': ndim %u is not 1..%d", i, nm, w->ndim,
                    PLAN_MAX_DIMS);
    for (uint32_t d = 0; d < PLAN_MAX_DIMS; d++) {
        if (d < w->ndim && w->shape[d] == 0)
            return fmt_fail(err, FMT_ERR_INVALID, "weight %u '%.80s': shape[%u] is 0", i, nm, d);
        if (d >= w->ndim && w->shape[d] != 0)
            return fmt_fail(err, FMT_ERR_INVALID, "weight %u '%.80s': unused shape[%u] is not zero", i,
                        nm, d);
    }
    if (w->size == 0)
        return fmt_fail(err, FMT_ERR_INVALID, "weight %u '%.80s': size is 0", i, nm);
    return FMT_OK;
}

static enum fmt_status check_weights(const struct plan_view *p, char *err)
{
    for (uint32_t i = 0; i < p->num_weights; i++) {
        struct plan_weight w;
        enum fmt_status st;
        plan_get_weight(p, i, &w);
        if ((st = check_name(p, w.name, 1, "weight", i, err)) ||
            (st = check_weight(p, i, &w, err)))
            return st;
    }
    return FMT_OK;
}

static enum fmt_status check_kernels(const struct plan_view *p, char *err)
{
    for (uint32_t i = 0; i < p->num_kernels; i++) {
        struct plan_kernel k;
        enum fmt_status st;
        plan_get_kernel(p, i, &k);
        if ((st = check_name(p, k.name, 1, "kernel", i, err)))
            return st;
        if (k.param_size > PLAN_MAX_PARAM)
            return fmt_fail(err, FMT_ERR_BOUNDS, "kernel %u '%.80s': param_size %u exceeds %d", i,
                        plan_str(p, k.name), k.param_size, PLAN_MAX_PARAM);
    }
    return FMT_OK;
}

/* Image i alone, then its arch against the identity and the images before it. */
static enum fmt_status check_image(const struct plan_view *p, uint32_t i, char *err)
{
    struct plan_image im, prev;
    plan_get_image(p, i, &im);
    if (!arch_known(im.arch))
        return fmt_fail(err, FMT_ERR_INVALID, "image %u: arch %u is not one of 80, 86, 87, 89, 90", i,
                    im.arch);
    if (im.kind != PLAN_IMAGE_CUBIN && im.kind != PLAN_IMAGE_FATBIN)
        return fmt_fail(err, FMT_ERR_INVALID, "image %u (sm_%u): unknown kind %u", i, im.arch, im.kind);
    if (im.size == 0)
        return fmt_fail(err, FMT_ERR_INVALID, "image %u (sm_%u): empty", i, im.arch);
    if (im.offset > p->image_data_size || im.size > p->image_data_size - im.offset)
        return fmt_fail(err, FMT_ERR_BOUNDS,
                    "image %u (sm_%u): [%llu, +%llu) lies outside the %llu bytes of IMAGE_DATA", i,
                    im.arch, (unsigned long long)im.offset, (unsigned long long)im.size,
                    (unsigned long long)p->image_data_size);
    uint32_t listed = 0;
    for (uint32_t a = 0; a < p->id.num_archs; a++)
        listed |= p->id.archs[a] == im.arch;
    if (!listed)
        return fmt_fail(err, FMT_ERR_INVALID, "image %u: arch %u is not listed in the identity's archs",
                    i, im.arch);
    for (uint32_t j = 0; j < i; j++) {
        plan_get_image(p, j, &prev);
        if (prev.arch == im.arch)
            return fmt_fail(err, FMT_ERR_INVALID, "image %u: a second image for arch %u", i, im.arch);
    }
    return FMT_OK;
}

static enum fmt_status check_images(const struct plan_view *p, char *err)
{
    for (uint32_t i = 0; i < p->num_images; i++) {
        enum fmt_status st = check_image(p, i, err);
        if (st != FMT_OK)
            return st;
    }
    /* images are unique and listed, so equal counts mean every listed arch has its image */
    if (p->num_images != p->id.num_archs)
        return fmt_fail(err, FMT_ERR_INVALID, "identity lists %u archs but there are %u kernel images",
                    p->id.num_archs, p->num_images);
    return FMT_OK;
}

/* ---- relocations, ops, schedules ----------------------------------------------------------- */

static enum fmt_status check_relocs(const struct plan_view *p, char *err)
{
    for (uint32_t i = 0; i < p->num_relocs; i++) {
        struct plan_reloc r;
        struct plan_weight w;
        plan_get_reloc(p, i, &r);
        if (r.reserved0)
            return fmt_fail(err, FMT_ERR_INVALID, "reloc %u: reserved0 is not zero", i);
        if (r.base < PLAN_BASE_ARENA || r.base > PLAN_BASE_RING)
            return fmt_fail(err, FMT_ERR_INVALID, "reloc %u: unknown base %u", i, r.base);
        if (r.base != PLAN_BASE_WEIGHT && r.index != 0)
            return fmt_fail(err, FMT_ERR_INVALID, "reloc %u: index %u must be 0 for base %u", i,
                        r.index, r.base);
        if (r.base == PLAN_BASE_ARENA && r.offset >= p->id.arena_bytes)
            return fmt_fail(err, FMT_ERR_BOUNDS, "reloc %u: arena offset %llu is past the %llu-byte arena",
                        i, (unsigned long long)r.offset, (unsigned long long)p->id.arena_bytes);
        if (r.base != PLAN_BASE_WEIGHT)
            continue;
        if (r.index >= p->num_weights)
            return fmt_fail(err, FMT_ERR_BOUNDS, "reloc %u: weight index %u out of range (%u weights)", i,
                        r.index, p->num_weights);
        plan_get_weight(p, r.index, &w);
        if (r.offset >= w.size)
            return fmt_fail(err, FMT_ERR_BOUNDS,
                        "reloc %u: offset %llu is past the %llu bytes of weight '%.80s'", i,
                        (unsigned long long)r.offset, (unsigned long long)w.size,
                        plan_str(p, w.name));
    }
    return FMT_OK;
}

/* The blob size an op of this kind must have, or 0 for an unknown kind. */
static uint32_t op_blob_size(const struct plan_view *p, const struct plan_op *op)
{
    struct plan_kernel k;
    switch (op->kind) {
    case PLAN_OP_KERNEL:
        plan_get_kernel(p, op->kernel, &k);
        return k.param_size;
    case PLAN_OP_GEMM: return sizeof(struct plan_gemm);
    case PLAN_OP_MEMSET: return sizeof(struct plan_memset);
    case PLAN_OP_COPY: return sizeof(struct plan_copy);
    }
    return 0;
}

static enum fmt_status check_launch(uint32_t i, const char *nm, const struct plan_op *op,
                                    char *err)
{
    for (int d = 0; d < 3; d++)
        if (op->grid[d] < 1 || op->block[d] < 1)
            return fmt_fail(err, FMT_ERR_INVALID, "op %u '%.80s': grid[%d] = %u, block[%d] = %u: each must be >= 1",
                        i, nm, d, op->grid[d], d, op->block[d]);
    if (op->grid[0] > PLAN_MAX_GRID_X || op->grid[1] > PLAN_MAX_GRID_YZ ||
        op->grid[2] > PLAN_MAX_GRID_YZ)
        return fmt_fail(err, FMT_ERR_INVALID, "op %u '%.80s': grid %u x %u x %u exceeds the CUDA limits",
                    i, nm, op->grid[0], op->grid[1], op->grid[2]);
    uint64_t threads = (uint64_t)op->block[0] * op->block[1] * op->block[2];
    if (threads > PLAN_MAX_BLOCK || op->block[2] > PLAN_MAX_BLOCK_Z)
        return fmt_fail(err, FMT_ERR_INVALID, "op %u '%.80s': block %u x %u x %u exceeds %u threads", i,
                    nm, op->block[0], op->block[1], op->block[2], PLAN_MAX_BLOCK);
    return FMT_OK;
}

static enum fmt_status check_op_kind(const struct plan_view *p, uint32_t i, const char *nm,
                                     const struct plan_op *op, char *err)
{
    if (op->kind < PLAN_OP_KERNEL || op->kind > PLAN_OP_COPY)
        return fmt_fail(err, FMT_ERR_INVALID, "op %u '%.80s': unknown kind %u", i, nm, op->kind);
    if (op->kind == PLAN_OP_KERNEL && op->kernel >= p->num_kernels)
        return fmt_fail(err, FMT_ERR_BOUNDS, "op %u '%.80s': kernel index %u out of range (%u kernels)", i,
                    nm, op->kernel, p->num_kernels);
    if (op->kind != PLAN_OP_KERNEL && op->kernel != PLAN_NO_KERNEL)
        return fmt_fail(err, FMT_ERR_INVALID, "op %u '%.80s': kernel index %u on an op of kind %u", i, nm,
                    op->kernel, op->kind);
    if ((op->flags & ~PLAN_OP_FLAGS) || op->reserved0)
        return fmt_fail(err, FMT_ERR_INVALID,
                        "op %u '%.80s': unknown flags 0x%x or reserved0 is not zero", i, nm,
                        op->flags & ~PLAN_OP_FLAGS);
    return FMT_OK;
}

static enum fmt_status check_op_params(const struct plan_view *p, uint32_t i, const char *nm,
                                       const struct plan_op *op, char *err)
{
    if (op->param_offset % PLAN_PARAM_ALIGN)
        return fmt_fail(err, FMT_ERR_INVALID, "op %u '%.80s': param_offset %u is not %d-aligned", i, nm,
                    op->param_offset, PLAN_PARAM_ALIGN);
    if ((uint64_t)op->param_offset + op->param_size > p->params_size)
        return fmt_fail(err, FMT_ERR_BOUNDS,
                    "op %u '%.80s': parameter blob [%u, +%u) lies outside the %llu bytes of PARAMS", i,
                    nm, op->param_offset, op->param_size, (unsigned long long)p->params_size);
    uint32_t want = op_blob_size(p, op);
    if (op->param_size != want)
        return fmt_fail(err, FMT_ERR_INVALID, "op %u '%.80s': parameter blob of %u bytes, expected %u", i,
                    nm, op->param_size, want);
    return FMT_OK;
}

/* The op's relocation range, and each relocation in it against the op's blob. *next is the
 * first relocation no earlier op owns. */
static enum fmt_status check_op_relocs(const struct plan_view *p, uint32_t i, const char *nm,
                                       const struct plan_op *op, uint64_t *next, char *err)
{
    if ((uint64_t)op->reloc_first + op->reloc_count > p->num_relocs)
        return fmt_fail(err, FMT_ERR_BOUNDS, "op %u '%.80s': relocations [%u, +%u) out of range (%u relocs)",
                    i, nm, op->reloc_first, op->reloc_count, p->num_relocs);
    if (op->reloc_count == 0)
        return FMT_OK;
    if (op->reloc_first < *next)
        return fmt_fail(err, FMT_ERR_INVALID, "op %u '%.80s': relocations [%u, +%u) overlap an earlier op's",
                    i, nm, op->reloc_first, op->reloc_count);
    *next = (uint64_t)op->reloc_first + op->reloc_count;
    for (uint32_t j = op->reloc_first; j < *next; j++) {
        struct plan_reloc r;
        plan_get_reloc(p, j, &r);
        if (r.param_offset % 8)
            return fmt_fail(err, FMT_ERR_INVALID, "reloc %u of op %u '%.80s': param_offset %u is not 8-aligned",
                        j, i, nm, r.param_offset);
        if ((uint64_t)r.param_offset + 8 > op->param_size)
            return fmt_fail(err, FMT_ERR_BOUNDS, "reloc %u of op %u '%.80s': writes past the %u-byte blob",
                        j, i, nm, op->param_size);
    }
    return FMT_OK;
}

static enum fmt_status check_ops(const struct plan_view *p, char *err)
{
    uint64_t next = 0;
    for (uint32_t i = 0; i < p->num_ops; i++) {
        struct plan_op op;
        enum fmt_status st;
        plan_get_op(p, i, &op);
        if ((st = check_name(p, op.name, 0, "op", i, err)))
            return st;
        const char *nm = plan_str(p, op.name);
        if ((st = check_op_kind(p, i, nm, &op, err)) || (st = check_op_params(p, i, nm, &op, err)) ||
            (st = check_launch(i, nm, &op, err)) ||
            (st = check_op_relocs(p, i, nm, &op, &next, err)))
            return st;
    }
    return FMT_OK;
}

/* The op flags of schedule i (planfile.h): side ranges opened by a FORK, closed by a JOIN. */
static enum fmt_status check_branches(const struct plan_view *p, uint32_t i,
                                      const struct plan_schedule *s, char *err)
{
    const char *nm = plan_str(p, s->name);
    int open = 0;
    for (uint32_t j = 0; j < s->op_count; j++) {
        struct plan_op op;
        plan_get_op(p, s->first_op + j, &op);
        const uint32_t f = op.flags;
        if (f && s->kind != PLAN_SCHED_PREFILL)
            return fmt_fail(err, FMT_ERR_INVALID,
                        "schedule %u '%.80s': op %u has flags 0x%x in a decode schedule", i, nm,
                        s->first_op + j, f);
        if ((f & PLAN_OP_JOIN) && ((f & PLAN_OP_SIDE) || !open))
            return fmt_fail(err, FMT_ERR_INVALID, "schedule %u '%.80s': op %u joins %s", i, nm,
                        s->first_op + j,
                        f & PLAN_OP_SIDE ? "from the side stream" : "with no range open");
        if (f & PLAN_OP_JOIN)
            open = 0;
        if ((f & PLAN_OP_FORK) && (!(f & PLAN_OP_SIDE) || open))
            return fmt_fail(err, FMT_ERR_INVALID, "schedule %u '%.80s': op %u forks %s", i, nm,
                        s->first_op + j, open ? "inside an open range" : "without being a side op");
        if (f & PLAN_OP_FORK)
            open = 1;
        if ((f & PLAN_OP_SIDE) && !open)
            return fmt_fail(err, FMT_ERR_INVALID,
                        "schedule %u '%.80s': side op %u is outside a forked range", i, nm,
                        s->first_op + j);
    }
    if (open)
        return fmt_fail(err, FMT_ERR_INVALID, "schedule %u '%.80s': a forked range is never joined",
                    i, nm);
    return FMT_OK;
}

static enum fmt_status check_schedule(const struct plan_view *p, uint32_t i,
                                      const struct plan_schedule *s, char *err)
{
    const char *nm = plan_str(p, s->name);
    if (s->kind != PLAN_SCHED_DECODE && s->kind != PLAN_SCHED_PREFILL)
        return fmt_fail(err, FMT_ERR_INVALID, "schedule %u '%.80s': unknown kind %u", i, nm, s->kind);
    if (s->tokens < 1 || (s->kind == PLAN_SCHED_DECODE && s->tokens != 1))
        return fmt_fail(err, FMT_ERR_INVALID, "schedule %u '%.80s': %u tokens per replay", i, nm, s->tokens);
    int bucket = s->kind == PLAN_SCHED_DECODE;
    for (uint32_t b = 0; b < p->id.num_buckets; b++)
        bucket |= p->id.buckets[b] == s->tokens;
    if (!bucket)
        return fmt_fail(err, FMT_ERR_INVALID, "schedule %u '%.80s': %u tokens is not a prefill bucket", i,
                    nm, s->tokens);
    if ((uint64_t)s->first_op + s->op_count > p->num_ops)
        return fmt_fail(err, FMT_ERR_BOUNDS, "schedule %u '%.80s': ops [%u, +%u) out of range (%u ops)", i,
                    nm, s->first_op, s->op_count, p->num_ops);
    if (s->kv_min > s->kv_max || s->kv_max > p->id.max_seq)
        return fmt_fail(err, FMT_ERR_INVALID, "schedule %u '%.80s': kv range %u..%u is not within 0..max_seq %u",
                    i, nm, s->kv_min, s->kv_max, p->id.max_seq);
    if (s->reserved0)
        return fmt_fail(err, FMT_ERR_INVALID, "schedule %u '%.80s': reserved0 is not zero", i, nm);
    return check_branches(p, i, s, err);
}

static enum fmt_status check_schedules(const struct plan_view *p, char *err)
{
    for (uint32_t i = 0; i < p->num_schedules; i++) {
        struct plan_schedule s;
        enum fmt_status st;
        plan_get_schedule(p, i, &s);
        if ((st = check_name(p, s.name, 0, "schedule", i, err)) ||
            (st = check_schedule(p, i, &s, err)))
            return st;
    }
    return FMT_OK;
}

/* ---- public -------------------------------------------------------------------------------- */

enum fmt_status plan_read(struct plan_view *p, const void *buf, size_t len, char *err)
{
    enum fmt_status st;
    memset(p, 0, sizeof *p);
    if ((st = fmt_open(&p->f, buf, len, len, PLAN_MAGIC, PLAN_VERSION, err)) ||
        (st = load_sections(p, err)) || (st = check_identity(p, err)) ||
        (st = check_regions(p, err)) || (st = check_buffers(p, err)) ||
        (st = check_weights(p, err)) || (st = check_kernels(p, err)) ||
        (st = check_images(p, err)) || (st = check_relocs(p, err)) || (st = check_ops(p, err)) ||
        (st = check_schedules(p, err))) {
        memset(p, 0, sizeof *p);
        return st;
    }
    return FMT_OK;
}

#define PLAN_GET(fn, type, arr)                                                                    \
    void fn(const struct plan_view *p, uint32_t i, struct type *out)                               \
    {                                                                                              \
        memcpy(out, p->arr + (size_t)i * sizeof *out, sizeof *out);                                \
    }
PLAN_GET(plan_get_region, plan_region, regions)
PLAN_GET(plan_get_buffer, plan_buffer, buffers)
PLAN_GET(plan_get_weight, plan_weight, weights)
PLAN_GET(plan_get_image, plan_image, images)
PLAN_GET(plan_get_kernel, plan_kernel, kernels)
PLAN_GET(plan_get_reloc, plan_reloc, relocs)
PLAN_GET(plan_get_schedule, plan_schedule, schedules)
PLAN_GET(plan_get_op, plan_op, ops)
#undef PLAN_GET

const char *plan_str(const struct plan_view *p, uint32_t off)
{
    const char *s = fmt_string(p->strings, p->strings_size, off);
    return s ? s : "";
}

enum fmt_status plan_write(const struct plan_content *c, uint8_t **out, size_t *len, char *err)
{
    struct fmt_builder b;
    struct plan_identity id = c->id;
    struct plan_view check;
    char why[FMT_ERR_LEN];
    uint8_t *buf;
    size_t n;
    uint64_t file_size;
    *out = NULL;
    *len = 0;
    id.images_hash = fnv64(FNV64_INIT, c->image_data, (size_t)c->image_data_size);
    fmt_builder_init(&b);
    fmt_builder_add(&b, PLAN_SEC_IDENTITY, sizeof id, &id, sizeof id);
    fmt_builder_add(&b, PLAN_SEC_STRINGS, 0, c->strings, c->strings_size);
#define ADD(sec, arr, n) fmt_builder_add(&b, sec, sizeof *(arr), arr, (uint64_t)(n) * sizeof *(arr))
    ADD(PLAN_SEC_REGIONS, c->regions, c->num_regions);
    ADD(PLAN_SEC_BUFFERS, c->buffers, c->num_buffers);
    ADD(PLAN_SEC_WEIGHTS, c->weights, c->num_weights);
    ADD(PLAN_SEC_IMAGES, c->images, c->num_images);
    fmt_builder_add(&b, PLAN_SEC_IMAGE_DATA, 0, c->image_data, c->image_data_size);
    ADD(PLAN_SEC_KERNELS, c->kernels, c->num_kernels);
    fmt_builder_add(&b, PLAN_SEC_PARAMS, 0, c->params, c->params_size);
    ADD(PLAN_SEC_RELOCS, c->relocs, c->num_relocs);
    ADD(PLAN_SEC_SCHEDULES, c->schedules, c->num_schedules);
    ADD(PLAN_SEC_OPS, c->ops, c->num_ops);
#undef ADD
    enum fmt_status st = fmt_builder_finish(&b, PLAN_MAGIC, PLAN_VERSION, &buf, &n, &file_size);
    fmt_builder_free(&b);
    if (st != FMT_OK)
        return fmt_fail(err, st, "plan_write: cannot lay out the file (%s)", fmt_status_name(st));
    st = plan_read(&check, buf, n, why);
    if (st != FMT_OK) {
        free(buf);
        return fmt_fail(err, st, "plan refused by its reader: %s", why);
    }
    *out = buf;
    *len = n;
    return FMT_OK;
}
