/* test_planrules.c — every semantic rule of plan_read(), one at a time.
 *
 * Each rule below changes one or a few fields of the valid fixture plan (fix_plan.h),
 * recomputes the CRCs (recrc.h) so the container is intact, and asserts the status plan_read
 * gives and a phrase its message must contain: which record, which field, what is wrong.
 * The numbers in the rules are those of the fixture (see its comments). */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "plan/planfile.h"
#include "test/fix_plan.h"
#include "test/recrc.h"
#include "test/test.h"

enum poke_kind {
    P_NONE = 0,
    P_REC,  /* a field of record `index` of section `sec` */
    P_TAB,  /* a field of section `sec`'s table entry */
    P_BYTE, /* byte `field` of raw section `sec` */
};

struct poke {
    int kind;
    uint32_t sec, index;
    size_t field;
    int width;
    uint64_t val;
};

struct rule {
    const char *what;
    struct poke p[6];
    enum fmt_status st;
    const char *msg;
};

#define S_ID PLAN_SEC_IDENTITY
#define FIELD(type, f) offsetof(struct type, f)
#define ELEM(type, f, k) (offsetof(struct type, f) + (k) * sizeof(((struct type *)0)->f[0]))
#define MC(f) (offsetof(struct plan_identity, model) + offsetof(struct model_config, f))
#define IDF(f, w, v) {P_REC, S_ID, 0, FIELD(plan_identity, f), w, v}
#define IDA(f, k, v) {P_REC, S_ID, 0, ELEM(plan_identity, f, k), 4, v}
#define R(sec, type, i, f, w, v) {P_REC, PLAN_SEC_##sec, i, FIELD(type, f), w, v}
#define RA(sec, type, i, f, k, v) {P_REC, PLAN_SEC_##sec, i, ELEM(type, f, k), 4, v}
#define REG(i, f, w, v) R(REGIONS, plan_region, i, f, w, v)
#define BUF(i, f, w, v) R(BUFFERS, plan_buffer, i, f, w, v)
#define WGT(i, f, w, v) R(WEIGHTS, plan_weight, i, f, w, v)
#define IMG(i, f, w, v) R(IMAGES, plan_image, i, f, w, v)
#define KRN(i, f, w, v) R(KERNELS, plan_kernel, i, f, w, v)
#define OP(i, f, v) R(OPS, plan_op, i, f, 4, v)
#define OPA(i, f, k, v) RA(OPS, plan_op, i, f, k, v)
#define REL(i, f, w, v) R(RELOCS, plan_reloc, i, f, w, v)
#define SCH(i, f, v) R(SCHEDULES, plan_schedule, i, f, 4, v)
#define TAB(sec, f, w, v) {P_TAB, PLAN_SEC_##sec, 0, FIELD(fmt_section, f), w, v}
#define DEC1 SCH(0, op_count, 1), SCH(2, first_op, 0), SCH(2, op_count, 1)
#define BAD FMT_ERR_INVALID
#define OOB FMT_ERR_BOUNDS

static const struct rule rules[] = {
    /* identity */
    {"model config fails its check", {{P_REC, S_ID, 0, MC(num_heads), 4, 0}}, BAD, "identity: model config: num_attention_heads"},
    {"max_seq 0", {IDF(max_seq, 4, 0)}, BAD, "max_seq 0 is outside 1..max_position"},
    {"max_seq above max_position", {IDF(max_seq, 4, 300000)}, BAD, "max_seq 300000 is outside"},
    {"too many buckets", {IDF(num_buckets, 4, 17)}, OOB, "num_buckets 17 exceeds 16"},
    {"buckets not ascending", {IDA(buckets, 1, 64)}, BAD, "not strictly ascending (64 after 64)"},
    {"zero bucket", {IDA(buckets, 2, 0)}, BAD, "bucket 2 is zero"},
    {"unused bucket slot set", {IDA(buckets, 5, 7)}, BAD, "unused bucket slot 5"},
    {"unknown quant", {IDF(quant, 4, 9)}, BAD, "unknown quant 9"},
    {"unknown lm_head_quant", {IDF(lm_head_quant, 4, 0)}, BAD, "unknown lm_head_quant 0"},
    {"INT4 group size not 32/64/128", {IDF(group_size, 4, 48)}, BAD, "INT4 group_size 48"},
    {"BF16 with a group size", {IDF(quant, 4, PLAN_QUANT_BF16)}, BAD, "group_size 64 must be 0"},
    {"too many archs", {IDF(num_archs, 4, 9)}, OOB, "num_archs 9 exceeds 8"},
    {"unknown arch", {IDA(archs, 1, 75)}, BAD, "identity: arch 75 is not one of"},
    {"arch listed twice", {IDA(archs, 1, 80)}, BAD, "arch 80 listed twice"},
    {"unused arch slot set", {IDA(archs, 4, 80)}, BAD, "unused arch slot 4"},
    {"archs and images disagree", {IDF(num_archs, 4, 3), IDA(archs, 2, 86)}, BAD, "lists 3 archs but there are 2 kernel images"},
    {"planner_version unterminated", {IDF(planner_version, 8, ~0ull), {P_REC, S_ID, 0, FIELD(plan_identity, planner_version) + 8, 8, ~0ull}, {P_REC, S_ID, 0, FIELD(plan_identity, planner_version) + 16, 8, ~0ull}, {P_REC, S_ID, 0, FIELD(plan_identity, planner_version) + 24, 8, ~0ull}}, BAD, "planner_version is not NUL-terminated"},
    {"identity reserved0", {IDF(reserved0, 4, 1)}, BAD, "identity: reserved0"},
    {"arena_bytes 0", {IDF(arena_bytes, 8, 0)}, BAD, "arena_bytes is 0"},
    {"images_hash wrong", {IDF(images_hash, 8, 12345)}, BAD, "images_hash 0000000000003039 does not match"},
    {"image bytes changed", {{P_BYTE, PLAN_SEC_IMAGE_DATA, 0, 1500, 1, 0x5A}}, BAD, "does not match IMAGE_DATA"},
    /* regions */
    {"region kind unknown", {REG(1, kind, 4, 0)}, BAD, "region 1 'workspace': unknown kind 0"},
    {"region misaligned", {REG(1, offset, 8, 65536 + 128)}, BAD, "region 1 'workspace': offset 65664 is not 256-aligned"},
    {"region outside the arena", {REG(2, size, 8, FIX_ARENA)}, OOB, "region 2 'overlay': [131072, +1048576) lies outside the 1048576-byte arena"},
    {"region name out of STRINGS", {REG(0, name, 4, 100000)}, OOB, "region 0: name offset 100000 is outside STRINGS"},
    /* buffers */
    {"buffer region index", {BUF(0, region, 4, 3)}, OOB, "buffer 0 'kv_cache': region index 3 out of range (3 regions)"},
    {"buffer schedule index", {BUF(3, schedule, 4, 3)}, OOB, "buffer 3 'act.x': schedule index 3 out of range"},
    {"buffer misaligned", {BUF(1, offset, 8, 32768 + 8)}, BAD, "buffer 1 'step_state': offset 32776 is not 256-aligned"},
    {"buffer past its region", {BUF(2, offset, 8, 131072 - 256)}, OOB, "buffer 2 'splitk': [130816, +4096) lies outside its region 1"},
    {"buffer before its region", {BUF(2, offset, 8, 0)}, OOB, "buffer 2 'splitk': [0, +4096) lies outside its region 1"},
    {"buffer dtype unknown", {BUF(0, dtype, 4, 9)}, BAD, "buffer 0 'kv_cache': unknown dtype 9"},
    {"buffer lifetime reversed", {BUF(3, first_op, 4, 5)}, BAD, "first_op 5 > last_op 3"},
    /* weights */
    {"weight ndim 0", {WGT(0, ndim, 4, 0)}, BAD, "weight 0 'model.embed_tokens.weight': ndim 0 is not 1..4"},
    {"weight ndim 5", {WGT(0, ndim, 4, 5)}, BAD, "ndim 5 is not 1..4"},
    {"weight unused dim set", {RA(WEIGHTS, plan_weight, 1, shape, 0, 64), {P_REC, PLAN_SEC_WEIGHTS, 1, ELEM(plan_weight, shape, 1), 8, 3}}, BAD, "weight 1 'model.norm.weight': unused shape[1] is not zero"},
    {"weight zero dim", {{P_REC, PLAN_SEC_WEIGHTS, 0, ELEM(plan_weight, shape, 1), 8, 0}}, BAD, "shape[1] is 0"},
    {"weight size 0", {WGT(2, size, 8, 0)}, BAD, "weight 2 'lm_head.weight': size is 0"},
    {"weight dtype unknown", {WGT(0, dtype, 4, 0)}, BAD, "unknown dtype 0"},
    {"weight empty name", {WGT(0, name, 4, 0)}, BAD, "weight 0: empty name"},
    /* kernels */
    {"kernel empty name", {KRN(1, name, 4, 0)}, BAD, "kernel 1: empty name"},
    {"kernel name out of STRINGS", {KRN(0, name, 4, 4096)}, OOB, "kernel 0: name offset 4096"},
    {"kernel param_size too large", {KRN(0, param_size, 4, 5000)}, OOB, "kernel 0 'k_rmsnorm': param_size 5000 exceeds 4096"},
    /* images */
    {"image arch unknown", {IMG(0, arch, 4, 75)}, BAD, "image 0: arch 75 is not one of"},
    {"image arch not listed", {IMG(1, arch, 4, 86)}, BAD, "image 1: arch 86 is not listed"},
    {"image arch twice", {IMG(1, arch, 4, 80)}, BAD, "image 1: a second image for arch 80"},
    {"image kind unknown", {IMG(1, kind, 4, 3)}, BAD, "image 1 (sm_90): unknown kind 3"},
    {"image past IMAGE_DATA", {IMG(1, size, 8, 778)}, OOB, "image 1 (sm_90): [1024, +778) lies outside the 1801 bytes"},
    {"image offset wraps", {IMG(1, offset, 8, ~0ull - 100)}, OOB, "image 1 (sm_90): [18446744073709551515"},
    {"image empty", {IMG(0, size, 8, 0)}, BAD, "image 0 (sm_80): empty"},
    /* ops */
    {"op kind unknown", {OP(0, kind, 9)}, BAD, "op 0 'l0.norm': unknown kind 9"},
    {"op kernel index out of range", {OP(1, kernel, 2)}, OOB, "op 1 'l0.attn': kernel index 2 out of range (2 kernels)"},
    {"kernel index on a GEMM op", {OP(2, kernel, 0)}, BAD, "op 2 'lm_head': kernel index 0 on an op of kind 2"},
    {"op param_offset misaligned", {OP(1, param_offset, 72)}, BAD, "op 1 'l0.attn': param_offset 72 is not 16-aligned"},
    {"op blob past PARAMS", {OP(4, param_offset, 320)}, OOB, "op 4 'copy': parameter blob [320, +24) lies outside the 328 bytes"},
    {"kernel blob size", {OP(0, param_size, 48)}, BAD, "op 0 'l0.norm': parameter blob of 48 bytes, expected 64"},
    {"GEMM blob size", {OP(2, param_size, 64)}, BAD, "op 2 'lm_head': parameter blob of 64 bytes, expected 72"},
    {"MEMSET blob size", {OP(3, param_size, 16)}, BAD, "op 3 'clear': parameter blob of 16 bytes, expected 24"},
    {"COPY blob size", {OP(4, param_size, 16)}, BAD, "op 4 'copy': parameter blob of 16 bytes, expected 24"},
    {"grid 0", {OPA(0, grid, 1, 0)}, BAD, "op 0 'l0.norm': grid[1] = 0"},
    {"grid y too large", {OPA(1, grid, 1, 65536)}, BAD, "op 1 'l0.attn': grid 16 x 65536 x 1 exceeds"},
    {"grid z too large", {OPA(1, grid, 2, 70000)}, BAD, "grid 16 x 2 x 70000 exceeds"},
    {"block 0", {OPA(0, block, 0, 0)}, BAD, "block[0] = 0"},
    {"block over 1024 threads", {OPA(0, block, 1, 8)}, BAD, "op 0 'l0.norm': block 256 x 8 x 1 exceeds 1024 threads"},
    {"block z over 64", {OPA(0, block, 0, 1), OPA(0, block, 2, 128)}, BAD, "block 1 x 1 x 128 exceeds"},
    {"op relocs out of range", {OP(4, reloc_count, 3)}, OOB, "op 4 'copy': relocations [7, +3) out of range (9 relocs)"},
    {"op relocs shared with another op", {OP(1, reloc_first, 1)}, BAD, "op 1 'l0.attn': relocations [1, +1) overlap"},
    {"op flags unknown", {OP(3, flags, 8)}, BAD, "op 3 'clear': unknown flags 0x8"},
    {"op reserved0", {OP(3, reserved0, 1)}, BAD, "op 3 'clear': unknown flags 0x0 or reserved0"},
    {"op name out of STRINGS", {OP(2, name, 211)}, OOB, "op 2: name offset 211"},
    /* relocations */
    {"reloc misaligned", {REL(1, param_offset, 4, 4)}, BAD, "reloc 1 of op 0 'l0.norm': param_offset 4 is not 8-aligned"},
    {"reloc past the blob", {REL(2, param_offset, 4, 128)}, OOB, "reloc 2 of op 1 'l0.attn': writes past the 128-byte blob"},
    {"reloc base unknown", {REL(0, base, 4, 4)}, BAD, "reloc 0: unknown base 4"},
    {"reloc weight index", {REL(1, index, 4, 3)}, OOB, "reloc 1: weight index 3 out of range (3 weights)"},
    {"reloc past its weight", {REL(1, offset, 8, 256)}, OOB, "reloc 1: offset 256 is past the 256 bytes of weight 'model.norm.weight'"},
    {"reloc past the arena", {REL(0, offset, 8, FIX_ARENA)}, OOB, "reloc 0: arena offset 1048576 is past the 1048576-byte arena"},
    {"reloc index on the arena", {REL(0, index, 4, 1)}, BAD, "reloc 0: index 1 must be 0"},
    {"reloc reserved0", {REL(5, reserved0, 4, 1)}, BAD, "reloc 5: reserved0"},
    /* schedules */
    {"schedule kind unknown", {SCH(0, kind, 3)}, BAD, "schedule 0 'decode': unknown kind 3"},
    {"schedule 0 tokens", {SCH(1, tokens, 0)}, BAD, "schedule 1 'prefill64': 0 tokens"},
    {"decode with 2 tokens", {SCH(0, tokens, 2)}, BAD, "schedule 0 'decode': 2 tokens per replay"},
    {"prefill not a bucket", {SCH(1, tokens, 65)}, BAD, "schedule 1 'prefill64': 65 tokens is not a prefill bucket"},
    {"schedule ops out of range", {SCH(2, op_count, 5)}, OOB, "schedule 2 'decode_split': ops [1, +5) out of range (5 ops)"},
    {"kv_min above kv_max", {SCH(2, kv_min, 4095), SCH(2, kv_max, 2048)}, BAD, "kv range 4095..2048"},
    {"kv_max above max_seq", {SCH(0, kv_max, 4097)}, BAD, "schedule 0 'decode': kv range 0..4097 is not within 0..max_seq 4096"},
    {"schedule reserved0", {SCH(1, reserved0, 1)}, BAD, "schedule 1 'prefill64': reserved0"},
    /* branches (op flags): the decode schedules narrowed to op 0 (DEC1), so the flags of ops
     * 1..4 meet only the prefill schedule */
    {"flags in a decode schedule", {OP(3, flags, 1)}, BAD, "schedule 0 'decode': op 3 has flags 0x1 in a decode"},
    {"a fork and its join", {DEC1, OP(1, flags, 3), OP(2, flags, 4)}, FMT_OK, ""},
    {"side op outside a range", {DEC1, OP(1, flags, 1)}, BAD, "schedule 1 'prefill64': side op 1 is outside a forked range"},
    {"fork of a main op", {DEC1, OP(1, flags, 2)}, BAD, "schedule 1 'prefill64': op 1 forks without being a side op"},
    {"range never joined", {DEC1, OP(1, flags, 3)}, BAD, "schedule 1 'prefill64': a forked range is never joined"},
    {"join from the side", {DEC1, OP(1, flags, 3), OP(2, flags, 5)}, BAD, "schedule 1 'prefill64': op 2 joins from the side stream"},
    {"join with no range", {DEC1, OP(2, flags, 4)}, BAD, "schedule 1 'prefill64': op 2 joins with no range open"},
    {"fork inside a range", {DEC1, OP(1, flags, 3), OP(2, flags, 3)}, BAD, "schedule 1 'prefill64': op 2 forks inside an open range"},
    /* sections */
    {"missing section", {TAB(OPS, id, 4, 99)}, FMT_ERR_MISSING, "OPS section (id 12) is missing"},
    {"record size of a section", {TAB(REGIONS, record_size, 4, 12), TAB(REGIONS, count, 4, 6)}, BAD, "REGIONS section (id 3): record size 12, expected 24"},
    {"raw section with records", {TAB(PARAMS, record_size, 4, 8), TAB(PARAMS, count, 4, 41)}, BAD, "PARAMS section (id 9) must hold raw"},
    {"section inside the table", {TAB(STRINGS, offset, 8, 0)}, OOB, "section id 2: offset 0 lies inside the header"},
};

/* Apply one poke to the valid file c (whose view is v). */
static void apply(uint8_t *c, const struct fmt_view *v, const struct poke *p)
{
    for (uint32_t i = 0; i < v->nsec; i++) {
        const struct fmt_section *s = &v->sec[i];
        if (s->id != p->sec)
            continue;
        size_t at = p->kind == P_TAB ? FMT_HEADER_SIZE + (size_t)i * FMT_SECTION_SIZE + p->field
                    : p->kind == P_REC ? s->offset + (size_t)p->index * s->record_size + p->field
                                       : s->offset + p->field;
        memcpy(c + at, &p->val, (size_t)p->width); /* little-endian host */
    }
}

static void test_rules(void)
{
    static struct fix_plan f;
    struct plan_view p, q;
    char err[FMT_ERR_LEN];
    size_t len;
    fix_plan_init(&f, 4);
    uint8_t *buf = fix_plan_write(&f, &len);
    if (plan_read(&p, buf, len, err) != FMT_OK)
        exit(1);
    uint8_t *c = malloc(len);
    for (size_t r = 0; r < sizeof rules / sizeof rules[0]; r++) {
        memcpy(c, buf, len);
        for (int k = 0; k < 6 && rules[r].p[k].kind != P_NONE; k++)
            apply(c, &p.f, &rules[r].p[k]);
        recrc(c, len);
        err[0] = 0;
        enum fmt_status st = plan_read(&q, c, len, err);
        CHECK(st == rules[r].st && strstr(err, rules[r].msg), "rule: %s -> %s: %s", rules[r].what,
              fmt_status_name(st), err);
    }
    free(c);
    free(buf);
}

/* Overlapping sections: the offset to move onto is only known from the written file. */
static void test_overlap_message(void)
{
    static struct fix_plan f;
    struct plan_view p, q;
    char err[FMT_ERR_LEN];
    size_t len;
    fix_plan_init(&f, 4);
    uint8_t *buf = fix_plan_write(&f, &len);
    if (plan_read(&p, buf, len, err) != FMT_OK)
        exit(1);
    const struct fmt_section *ident = fmt_find(&p.f, PLAN_SEC_IDENTITY, NULL);
    struct poke pk = {P_TAB, PLAN_SEC_STRINGS, 0, FIELD(fmt_section, offset), 8, ident->offset};
    apply(buf, &p.f, &pk);
    recrc(buf, len);
    enum fmt_status st = plan_read(&q, buf, len, err);
    CHECK(st == FMT_ERR_BOUNDS && strstr(err, "overlaps section id") && strstr(err, "id 2"),
          "rule: STRINGS moved onto IDENTITY -> %s: %s", fmt_status_name(st), err);
    free(buf);
}

int main(void)
{
    test_rules();
    test_overlap_message();
    return test_done();
}
