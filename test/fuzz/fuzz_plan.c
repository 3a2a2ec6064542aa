/* fuzz_plan.c — libFuzzer target over plan_read().
 *
 * Input: one control byte, then the file. If the control byte is odd, every CRC of the file
 * is recomputed first (recrc.h), so mutations get past the integrity checks into the record
 * checks; if even, the file is parsed as it is and the CRC checks themselves are fuzzed.
 * (The control byte is separate from the file because a plan's own first byte, 'Q', is
 * odd: keying on it would leave no way to fuzz the CRCs.)
 *
 * The file is copied into a buffer of exactly its size, so ASan reports any read past it.
 * An accepted plan is then used the way rt uses it: every record and every name is read,
 * the invariants plan_read promises are asserted (a violation aborts), and the plan is
 * written again with plan_write, which must accept it and give back the same records. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "plan/planfile.h"
#include "test/recrc.h"

#define REQUIRE(c)                                                                                 \
    do {                                                                                           \
        if (!(c))                                                                                  \
            __builtin_trap();                                                                      \
    } while (0)

static size_t touch(const char *s)
{
    return strlen(s); /* ASan checks every byte up to the NUL */
}

static void use_arena(const struct plan_view *p)
{
    for (uint32_t i = 0; i < p->num_regions; i++) {
        struct plan_region r;
        plan_get_region(p, i, &r);
        touch(plan_str(p, r.name));
        REQUIRE(r.offset <= p->id.arena_bytes && r.size <= p->id.arena_bytes - r.offset);
    }
    for (uint32_t i = 0; i < p->num_buffers; i++) {
        struct plan_buffer b;
        struct plan_region r;
        plan_get_buffer(p, i, &b);
        touch(plan_str(p, b.name));
        REQUIRE(b.region < p->num_regions);
        plan_get_region(p, b.region, &r);
        REQUIRE(b.offset >= r.offset && b.offset + b.size <= r.offset + r.size);
    }
    for (uint32_t i = 0; i < p->num_weights; i++) {
        struct plan_weight w;
        plan_get_weight(p, i, &w);
        REQUIRE(touch(plan_str(p, w.name)) > 0 && w.size > 0);
    }
}

static void use_launches(const struct plan_view *p)
{
    volatile uint8_t sink = 0;
    for (uint32_t i = 0; i < p->num_images; i++) {
        struct plan_image im;
        plan_get_image(p, i, &im);
        sink ^= p->image_data[im.offset] ^ p->image_data[im.offset + im.size - 1];
    }
    for (uint32_t i = 0; i < p->num_kernels; i++) {
        struct plan_kernel k;
        plan_get_kernel(p, i, &k);
        REQUIRE(touch(plan_str(p, k.name)) > 0 && k.param_size <= PLAN_MAX_PARAM);
    }
    for (uint32_t i = 0; i < p->num_ops; i++) {
        struct plan_op op;
        plan_get_op(p, i, &op);
        touch(plan_str(p, op.name));
        REQUIRE((uint64_t)op.param_offset + op.param_size <= p->params_size);
        REQUIRE((uint64_t)op.reloc_first + op.reloc_count <= p->num_relocs);
        if (op.param_size)
            sink ^= p->params[op.param_offset + op.param_size - 1];
        for (uint32_t j = op.reloc_first; j < op.reloc_first + op.reloc_count; j++) {
            struct plan_reloc r;
            plan_get_reloc(p, j, &r);
            REQUIRE((uint64_t)r.param_offset + 8 <= op.param_size);
        }
    }
    for (uint32_t i = 0; i < p->num_schedules; i++) {
        struct plan_schedule s;
        plan_get_schedule(p, i, &s);
        touch(plan_str(p, s.name));
        REQUIRE((uint64_t)s.first_op + s.op_count <= p->num_ops);
    }
    (void)sink;
}

/* Declare var as a malloc'd copy of the view's n records of this type. */
#define COPY_OUT(var, get, type, n)                                                                \
    struct type *var = malloc((n) ? (size_t)(n) * sizeof *var : 1);                                \
    for (uint32_t i_ = 0; i_ < (n); i_++)                                                          \
        get(p, i_, &var[i_])

/* Write the accepted plan again; the writer must accept it and keep every record. */
static void rewrite(const struct plan_view *p)
{
    struct plan_content c = {
        .id = p->id,
        .strings = p->strings, .strings_size = p->strings_size,
        .image_data = p->image_data, .image_data_size = p->image_data_size,
        .params = p->params, .params_size = p->params_size,
        .num_regions = p->num_regions, .num_buffers = p->num_buffers,
        .num_weights = p->num_weights, .num_images = p->num_images,
        .num_kernels = p->num_kernels, .num_relocs = p->num_relocs,
        .num_schedules = p->num_schedules, .num_ops = p->num_ops,
    };
    COPY_OUT(regions, plan_get_region, plan_region, p->num_regions);
    COPY_OUT(buffers, plan_get_buffer, plan_buffer, p->num_buffers);
    COPY_OUT(weights, plan_get_weight, plan_weight, p->num_weights);
    COPY_OUT(images, plan_get_image, plan_image, p->num_images);
    COPY_OUT(kernels, plan_get_kernel, plan_kernel, p->num_kernels);
    COPY_OUT(relocs, plan_get_reloc, plan_reloc, p->num_relocs);
    COPY_OUT(schedules, plan_get_schedule, plan_schedule, p->num_schedules);
    COPY_OUT(ops, plan_get_op, plan_op, p->num_ops);
    c.regions = regions, c.buffers = buffers, c.weights = weights, c.images = images;
    c.kernels = kernels, c.relocs = relocs, c.schedules = schedules, c.ops = ops;
    uint8_t *out;
    size_t len;
    char err[FMT_ERR_LEN];
    struct plan_view q;
    REQUIRE(plan_write(&c, &out, &len, err) == FMT_OK);
    REQUIRE(plan_read(&q, out, len, err) == FMT_OK);
    REQUIRE(memcmp(&q.id, &p->id, sizeof q.id) == 0 && q.num_ops == p->num_ops &&
            q.num_relocs == p->num_relocs &&
            memcmp(q.ops, ops, (size_t)q.num_ops * sizeof *ops) == 0);
    free(out);
    free(regions), free(buffers), free(weights), free(images);
    free(kernels), free(relocs), free(schedules), free(ops);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static struct plan_view p;
    char err[FMT_ERR_LEN];
    if (size < 1)
        return 0;
    size_t n = size - 1;
    uint8_t *buf = malloc(n ? n : 1);
    memcpy(buf, data + 1, n);
    if (data[0] & 1)
        recrc(buf, n);
    err[0] = 0;
    if (plan_read(&p, buf, n, err) == FMT_OK) {
        use_arena(&p);
        use_launches(&p);
        rewrite(&p);
    } else {
        REQUIRE(err[0] != 0 && memchr(err, 0, FMT_ERR_LEN)); /* every refusal says why */
    }
    free(buf);
    return 0;
}
