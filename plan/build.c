/* build.c — the planner's tables, buffer references and arena layout (see build.h). */
#include "build.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "arena.h"

#define GROW(b, arr, n, cap)                                                                       \
    ((n) < (cap) || grow((b), (void **)&(arr), &(cap), sizeof *(arr)))

static int fail(struct pb *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static int fail(struct pb *b, const char *fmt, ...)
{
    if (!b->failed) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(b->err, sizeof b->err, fmt, ap);
        va_end(ap);
    }
    b->failed = 1;
    return -1;
}

static int grow(struct pb *b, void **arr, uint32_t *cap, size_t elem)
{
    uint32_t nc = *cap ? *cap * 2 : 64;
    void *p = realloc(*arr, (size_t)nc * elem);
    if (!p)
        return fail(b, "out of memory"), 0;
    memset((char *)p + (size_t)*cap * elem, 0, (size_t)(nc - *cap) * elem);
    *arr = p;
    *cap = nc;
    return 1;
}

static uint64_t align_up(uint64_t x, uint64_t a) { return (x + a - 1) / a * a; }

int pb_init(struct pb *b, const struct model_config *c, const struct wt_format *f, uint32_t max_seq,
            char *err)
{
    memset(b, 0, sizeof *b);
    b->c = *c;
    b->fmt = *f;
    b->max_seq = max_seq;
    b->smem_limit = plan_arch_smem(90); /* callers targeting smaller parts lower it */
    if (wt_manifest_build(&b->man, c, f, err))
        return -1;
    return 0;
}

void pb_free(struct pb *b)
{
    wt_manifest_free(&b->man);
    free(b->bufs), free(b->ops), free(b->refs), free(b->kernels), free(b->scheds), free(b->ranges);
    free(b->params), free(b->strings);
    free(b->out_bufs), free(b->out_weights), free(b->out_relocs), free(b->out_ops);
    memset(b, 0, sizeof *b);
}

uint32_t pb_str(struct pb *b, const char *s)
{
    size_t n = strlen(s) + 1;
    while (b->nstrings + n > b->capstrings) {
        uint64_t nc = b->capstrings ? b->capstrings * 2 : 4096;
        char *p = realloc(b->strings, nc);
        if (!p)
            return fail(b, "out of memory"), 0;
        b->strings = p, b->capstrings = nc;
    }
    memcpy(b->strings + b->nstrings, s, n);
    b->nstrings += n;
    return (uint32_t)(b->nstrings - n);
}

uint32_t pb_kernel(struct pb *b, const char *name, uint32_t param_size)
{
    for (uint32_t i = 0; i < b->nkernels; i++)
        if (!strcmp(b->strings + b->kernels[i].name, name)) {
            if (b->kernels[i].param_size != param_size)
                fail(b, "kernel %s used with parameter sizes %u and %u", name,
                     b->kernels[i].param_size, param_size);
            return i;
        }
    if (!GROW(b, b->kernels, b->nkernels, b->capkernels))
        return 0;
    b->kernels[b->nkernels] = (struct plan_kernel){pb_str(b, name), param_size};
    return b->nkernels++;
}

uint32_t pb_buf(struct pb *b, uint32_t region, uint32_t dtype, uint64_t size, const char *fmt, ...)
{
    if (!GROW(b, b->bufs, b->nbufs, b->capbufs))
        return 0;
    struct pb_buf *x = &b->bufs[b->nbufs];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(x->name, sizeof x->name, fmt, ap);
    va_end(ap);
    if (size == 0)
        fail(b, "buffer %s has size 0", x->name);
    x->size = size;
    x->region = region;
    x->dtype = dtype;
    x->sched = region == PLAN_REGION_OVERLAY ? b->cur_sched : PLAN_ALL_SCHEDULES;
    x->first = UINT32_MAX;
    x->last = 0;
    return b->nbufs++;
}

void pb_sched_begin(struct pb *b, uint32_t kind, uint32_t tokens, uint32_t kv_min, uint32_t kv_max,
                    const char *name)
{
    struct plan_schedule *s = realloc(b->scheds, sizeof *s * (b->nscheds + 1));
    if (!s) {
        fail(b, "out of memory");
        return;
    }
    b->scheds = s;
    b->cur_sched = b->nscheds++;
    s[b->cur_sched] = (struct plan_schedule){.name = pb_str(b, name), .kind = kind, .tokens = tokens,
                                              .first_op = b->nops, .kv_min = kv_min,
                                              .kv_max = kv_max};
}

void pb_sched_end(struct pb *b)
{
    if (b->open || b->side || b->join_next)
        fail(b, "schedule %s ends inside a forked range",
             b->strings + b->scheds[b->cur_sched].name);
    struct plan_schedule *s = &b->scheds[b->cur_sched];
    s->op_count = b->nops - s->first_op;
}

void pb_fork(struct pb *b)
{
    if (b->open || b->join_next || b->scheds[b->cur_sched].kind != PLAN_SCHED_PREFILL)
        fail(b, "a fork inside an open range or in a decode schedule");
    b->side = b->fork_next = b->open = 1;
}

void pb_main(struct pb *b)
{
    if (!b->side)
        fail(b, "pb_main outside a side branch");
    b->side = 0;
}

void pb_join(struct pb *b)
{
    if (!b->open || b->side)
        fail(b, "a join with no range open or from the side branch");
    b->join_next = !b->fork_next; /* a range without side ops leaves no flags */
    b->open = b->fork_next = 0;
}

static uint32_t add_op(struct pb *b, uint32_t kind, uint32_t kernel, const void *blob, uint32_t size,
                       const char *fmt, va_list ap)
{
    char name[PB_NAME * 2];
    vsnprintf(name, sizeof name, fmt, ap);
    if (size > PLAN_MAX_PARAM)
        fail(b, "op %s: %u parameter bytes exceed the launch limit %d", name, size, PLAN_MAX_PARAM);
    if (!GROW(b, b->ops, b->nops, b->capops))
        return 0;
    uint64_t at = align_up(b->nparams, PLAN_PARAM_ALIGN);
    while (at + size > b->capparams) {
        uint64_t nc = b->capparams ? b->capparams * 2 : 65536;
        uint8_t *p = realloc(b->params, nc);
        if (!p)
            return fail(b, "out of memory"), 0;
        b->params = p, b->capparams = nc;
    }
    memset(b->params + b->nparams, 0, at - b->nparams);
    memcpy(b->params + at, blob, size);
    b->nparams = at + size;
    struct pb_op *o = &b->ops[b->nops];
    memset(o, 0, sizeof *o);
    o->sched = b->cur_sched;
    o->op.name = pb_str(b, name);
    o->op.kind = kind;
    o->op.kernel = kernel;
    o->op.grid[0] = o->op.grid[1] = o->op.grid[2] = 1;
    o->op.block[0] = o->op.block[1] = o->op.block[2] = 1;
    o->op.param_offset = (uint32_t)at;
    o->op.param_size = size;
    const uint32_t rel = b->nops - b->scheds[b->cur_sched].first_op;
    if (b->side)
        o->op.flags |= PLAN_OP_SIDE;
    if (b->fork_next)
        o->op.flags |= PLAN_OP_FORK, b->fork_next = 0, b->fork_op = rel;
    if (b->join_next) {
        o->op.flags |= PLAN_OP_JOIN, b->join_next = 0;
        if (!GROW(b, b->ranges, b->nranges, b->capranges))
            return 0;
        b->ranges[b->nranges++] = (struct pb_range){b->cur_sched, b->fork_op, rel};
    }
    return b->nops++;
}

uint32_t pb_kernel_op(struct pb *b, const char *kernel, const void *params, uint32_t size,
                      const uint32_t grid[3], uint32_t block, uint32_t smem, const char *fmt, ...)
{
    va_list ap;
    uint32_t k = pb_kernel(b, kernel, size);
    va_start(ap, fmt);
    uint32_t i = add_op(b, PLAN_OP_KERNEL, k, params, size, fmt, ap);
    va_end(ap);
    if (b->failed)
        return i;
    struct plan_op *op = &b->ops[i].op;
    for (int d = 0; d < 3; d++)
        op->grid[d] = grid[d] ? grid[d] : 1;
    op->block[0] = block;
    op->smem = smem;
    return i;
}

uint32_t pb_runtime_op(struct pb *b, uint32_t kind, const void *blob, uint32_t size, const char *fmt,
                       ...)
{
    va_list ap;
    va_start(ap, fmt);
    uint32_t i = add_op(b, kind, PLAN_NO_KERNEL, blob, size, fmt, ap);
    va_end(ap);
    return i;
}

void pb_cost(struct pb *b, uint32_t op, uint64_t bytes, uint64_t flops)
{
    if (op < b->nops) {
        b->ops[op].op.bytes = bytes;
        b->ops[op].op.flops = flops;
    }
}

static void add_ref(struct pb *b, uint32_t op, uint32_t param_offset, uint32_t base, uint32_t index,
                    uint64_t offset)
{
    if (b->failed || !GROW(b, b->refs, b->nrefs, b->caprefs))
        return;
    if (param_offset % 8 || param_offset + 8 > b->ops[op].op.param_size) {
        fail(b, "op %s: reference at blob offset %u is not an aligned 8-byte field",
             b->strings + b->ops[op].op.name, param_offset);
        return;
    }
    b->refs[b->nrefs++] = (struct pb_ref){op, param_offset, base, index, offset};
}

void pb_ref_buf(struct pb *b, uint32_t op, uint32_t param_offset, uint32_t buf, uint64_t offset)
{
    if (b->failed)
        return;
    struct pb_buf *x = &b->bufs[buf];
    if (offset >= x->size) {
        fail(b, "op %s: offset %llu is past the end of buffer %s", b->strings + b->ops[op].op.name,
             (unsigned long long)offset, x->name);
        return;
    }
    if (x->region == PLAN_REGION_OVERLAY) { /* lifetimes count ops within the schedule */
        if (x->sched != b->ops[op].sched) {
            fail(b, "op %s uses buffer %s of another schedule", b->strings + b->ops[op].op.name,
                 x->name);
            return;
        }
        uint32_t rel = op - b->scheds[x->sched].first_op;
        x->first = rel < x->first ? rel : x->first;
        x->last = rel > x->last ? rel : x->last;
    }
    add_ref(b, op, param_offset, PB_BASE_BUF, buf, offset);
}

const struct wt_tensor_desc *pb_weight(struct pb *b, const char *name)
{
    int64_t i = wt_manifest_find(&b->man, name);
    if (i < 0) {
        fail(b, "weight %s is not in the manifest", name);
        return &b->man.t[0];
    }
    return &b->man.t[i];
}

void pb_ref_weight(struct pb *b, uint32_t op, uint32_t param_offset, const char *name, uint64_t offset)
{
    int64_t i = wt_manifest_find(&b->man, name);
    if (i < 0) {
        fail(b, "op %s reads weight %s, which is not in the manifest",
             b->strings + b->ops[op].op.name, name);
        return;
    }
    add_ref(b, op, param_offset, PLAN_BASE_WEIGHT, (uint32_t)i, offset);
}

void pb_ref_ring(struct pb *b, uint32_t op, uint32_t param_offset)
{
    add_ref(b, op, param_offset, PLAN_BASE_RING, 0, 0);
}

/* ---- layout ------------------------------------------------------------------------------ */

/* Fixed regions: buffers in creation order, 256-aligned. Returns the region's size. */
static uint64_t place_fixed(struct pb *b, uint32_t region, uint64_t base)
{
    uint64_t at = base;
    for (uint32_t i = 0; i < b->nbufs; i++)
        if (b->bufs[i].region == region) {
            b->bufs[i].offset = at;
            at = align_up(at + b->bufs[i].size, PLAN_BUF_ALIGN);
        }
    return at - base;
}

/* One schedule's overlay, placed by lifetime from base. Returns its size or UINT64_MAX. */
static uint64_t place_overlay(struct pb *b, uint32_t s, uint64_t base)
{
    uint32_t n = 0;
    for (uint32_t i = 0; i < b->nbufs; i++)
        n += b->bufs[i].region == PLAN_REGION_OVERLAY && b->bufs[i].sched == s;
    struct plan_arena_buf *a = calloc(n ? n : 1, sizeof *a);
    uint32_t *idx = calloc(n ? n : 1, sizeof *idx);
    uint64_t total = UINT64_MAX;
    char err[PLAN_ARENA_ERR_LEN];
    if (!a || !idx)
        goto out;
    n = 0;
    for (uint32_t i = 0; i < b->nbufs; i++) {
        struct pb_buf *x = &b->bufs[i];
        if (x->region != PLAN_REGION_OVERLAY || x->sched != s)
            continue;
        if (x->first > x->last) {
            fail(b, "schedule %s: buffer %s is never used", b->strings + b->scheds[s].name, x->name);
            goto out;
        }
        a[n] = (struct plan_arena_buf){x->name, x->size, x->first, x->last, 0};
        idx[n++] = i;
    }
    total = plan_arena_place(a, n, PLAN_BUF_ALIGN);
    if (total == UINT64_MAX || plan_arena_verify(a, n, PLAN_BUF_ALIGN, total, err)) {
        fail(b, "schedule %s: overlay placement failed: %s", b->strings + b->scheds[s].name,
             total == UINT64_MAX ? "size overflow" : err);
        total = UINT64_MAX;
        goto out;
    }
    b->naive_overlay += plan_arena_naive(a, n, PLAN_BUF_ALIGN);
    for (uint32_t k = 0; k < n; k++)
        b->bufs[idx[k]].offset = base + a[k].offset;
out:
    free(a);
    free(idx);
    return total;
}

/* The whole arena as schedule s sees it: fixed buffers live throughout, its overlay buffers
 * by their lifetimes. Checked independently of how the placement was made. */
static int verify_schedule(struct pb *b, uint32_t s)
{
    struct plan_arena_buf *a = calloc(b->nbufs ? b->nbufs : 1, sizeof *a);
    char err[PLAN_ARENA_ERR_LEN];
    uint32_t n = 0;
    if (!a)
        return fail(b, "out of memory");
    for (uint32_t i = 0; i < b->nbufs; i++) {
        const struct pb_buf *x = &b->bufs[i];
        if (x->region == PLAN_REGION_OVERLAY && x->sched != s)
            continue;
        int fixed = x->region != PLAN_REGION_OVERLAY;
        a[n++] = (struct plan_arena_buf){x->name, x->size, fixed ? 0 : x->first,
                                         fixed ? UINT32_MAX : x->last, x->offset};
    }
    int rc = plan_arena_verify(a, n, PLAN_BUF_ALIGN, b->arena_bytes, err);
    free(a);
    if (rc)
        return fail(b, "schedule %s: arena verification failed: %s", b->strings + b->scheds[s].name, err);
    return 0;
}

int plan_build_finish(struct pb *b)
{
    if (b->failed)
        return -1;
    /* branches: a buffer an op of a forked range touches is live over the whole range */
    for (uint32_t k = 0; k < b->nranges; k++)
        for (uint32_t i = 0; i < b->nbufs; i++) {
            struct pb_buf *x = &b->bufs[i];
            const struct pb_range *g = &b->ranges[k];
            if (x->region != PLAN_REGION_OVERLAY || x->sched != g->sched || x->first > x->last ||
                x->first > g->last || x->last < g->first)
                continue;
            x->first = x->first < g->first ? x->first : g->first;
            x->last = x->last > g->last ? x->last : g->last;
        }
    uint64_t pers = place_fixed(b, PLAN_REGION_PERSISTENT, 0);
    uint64_t work = place_fixed(b, PLAN_REGION_WORKSPACE, pers);
    uint64_t over = 0, base = pers + work;
    for (uint32_t s = 0; s < b->nscheds; s++) {
        uint64_t t = place_overlay(b, s, base);
        if (t == UINT64_MAX)
            return -1;
        over = t > over ? t : over;
    }
    b->regions[0] = (struct plan_region){pb_str(b, "persistent"), PLAN_REGION_PERSISTENT, 0, pers};
    b->regions[1] = (struct plan_region){pb_str(b, "workspace"), PLAN_REGION_WORKSPACE, pers, work};
    b->regions[2] = (struct plan_region){pb_str(b, "overlay"), PLAN_REGION_OVERLAY, base, over};
    b->arena_bytes = base + over;
    for (uint32_t s = 0; s < b->nscheds; s++)
        if (verify_schedule(b, s))
            return -1;
    /* relocations against buffers become arena offsets; each op's refs are contiguous */
    for (uint32_t i = 0; i < b->nrefs; i++) {
        struct pb_ref *r = &b->refs[i];
        if (r->base == PB_BASE_BUF) {
            r->offset += b->bufs[r->index].offset;
            r->base = PLAN_BASE_ARENA;
            r->index = 0;
        }
    }
    for (uint32_t i = 0; i < b->nrefs; i++) {
        struct plan_op *op = &b->ops[b->refs[i].op].op;
        if (op->reloc_count == 0)
            op->reloc_first = i;
        else if (op->reloc_first + op->reloc_count != i)
            return fail(b, "op %s: references are not contiguous", b->strings + op->name);
        op->reloc_count++;
    }
    return b->failed ? -1 : 0;
}

/* ---- file form --------------------------------------------------------------------------- */

static void fill_identity(struct pb *b, struct plan_identity *id)
{
    memset(id, 0, sizeof *id);
    id->model = b->c;
    id->max_seq = b->max_seq;
    id->num_buckets = b->num_buckets;
    memcpy(id->buckets, b->buckets, sizeof id->buckets);
    id->quant = b->fmt.quant;
    id->group_size = b->fmt.group_size;
    id->lm_head_quant = b->fmt.lm_head_quant;
    id->arena_bytes = b->arena_bytes;
    for (uint32_t i = 0; i < b->man.n; i++) /* the image's DATA: tensors at 256-byte steps */
        id->weights_bytes += align_up(b->man.t[i].size, WT_TENSOR_ALIGN);
}

int plan_build_content(struct pb *b, struct plan_content *out)
{
    memset(out, 0, sizeof *out);
    b->out_bufs = calloc(b->nbufs ? b->nbufs : 1, sizeof *b->out_bufs);
    b->out_weights = calloc(b->man.n ? b->man.n : 1, sizeof *b->out_weights);
    b->out_relocs = calloc(b->nrefs ? b->nrefs : 1, sizeof *b->out_relocs);
    b->out_ops = calloc(b->nops ? b->nops : 1, sizeof *b->out_ops);
    if (!b->out_bufs || !b->out_weights || !b->out_relocs || !b->out_ops)
        return fail(b, "out of memory");
    for (uint32_t i = 0; i < b->nbufs; i++) {
        const struct pb_buf *x = &b->bufs[i];
        int fixed = x->region != PLAN_REGION_OVERLAY;
        b->out_bufs[i] = (struct plan_buffer){
            .name = pb_str(b, x->name), .region = x->region - 1, .schedule = x->sched,
            .dtype = x->dtype, .offset = x->offset, .size = x->size,
            .first_op = fixed ? 0 : x->first, .last_op = fixed ? 0xFFFFFFFFu : x->last};
    }
    for (uint32_t i = 0; i < b->man.n; i++) {
        const struct wt_tensor_desc *t = &b->man.t[i];
        struct plan_weight *w = &b->out_weights[i];
        w->name = pb_str(b, t->name);
        w->dtype = t->dtype, w->layout = t->layout, w->group_size = t->group_size;
        w->ndim = t->ndim, w->size = t->size;
        w->synth = wt_synth(t);
        memcpy(w->shape, t->shape, sizeof w->shape);
    }
    for (uint32_t i = 0; i < b->nrefs; i++)
        b->out_relocs[i] = (struct plan_reloc){
            .param_offset = b->refs[i].param_offset, .base = b->refs[i].base,
            .index = b->refs[i].index, .offset = b->refs[i].offset};
    for (uint32_t i = 0; i < b->nops; i++)
        b->out_ops[i] = b->ops[i].op;
    if (b->failed)
        return -1;
    fill_identity(b, &out->id);
    out->id.manifest_hash = wt_manifest_hash_plan(b->strings, b->out_weights, b->man.n);
    out->strings = b->strings, out->strings_size = b->nstrings;
    out->regions = b->regions, out->num_regions = 3;
    out->buffers = b->out_bufs, out->num_buffers = b->nbufs;
    out->weights = b->out_weights, out->num_weights = b->man.n;
    out->kernels = b->kernels, out->num_kernels = b->nkernels;
    out->params = b->params, out->params_size = b->nparams;
    out->relocs = b->out_relocs, out->num_relocs = b->nrefs;
    out->schedules = b->scheds, out->num_schedules = b->nscheds;
    out->ops = b->out_ops, out->num_ops = b->nops;
    return 0;
}
