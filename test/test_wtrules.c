/* test_wtrules.c — every semantic rule of wt_read(), one at a time, and wt_prefix_size().
 *
 * Each rule changes one or a few fields of the valid fixture image's metadata
 * (fix_wimage.h), recomputes the CRCs (recrc.h) and asserts the status wt_read gives and a
 * phrase of its message. Most rules read the 4096-byte metadata prefix of the file with the
 * full file size, as rt does; those marked whole read the whole file as one buffer.
 *
 * Fixture numbers: tensors at DATA offsets 0 (12800 bytes), 12800 (132), 13056 (256),
 * 13312 (12800), 26112 (8), 26368 (480); DATA holds 26880 bytes. Name offsets: 0, 26
 * (250 bytes), 277, 295, 310, 313; the pool is 317 bytes. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "plan/crc.h"
#include "test/fix_wimage.h"
#include "test/recrc.h"
#include "test/test.h"
#include "weights/wimage.h"

enum poke_kind {
    P_NONE = 0,
    P_REC,  /* a field of record `index` of section `sec` */
    P_TAB,  /* a field of section `sec`'s table entry */
    P_BYTE, /* byte `field` of raw section `sec` */
    P_FILL, /* `width` bytes of a record field, all set to val */
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
    int whole;
    struct poke p[3];
    enum fmt_status st;
    const char *msg;
};

#define FIELD(type, f) offsetof(struct type, f)
#define ELEM(type, f, k) (offsetof(struct type, f) + (k) * sizeof(((struct type *)0)->f[0]))
#define CFG(f, w, v) {P_REC, WT_SEC_CONFIG, 0, FIELD(wt_config, f), w, v}
#define MC(f, v) {P_REC, WT_SEC_CONFIG, 0, FIELD(wt_config, model) + FIELD(model_config, f), 4, v}
#define TEN(i, f, w, v) {P_REC, WT_SEC_TENSORS, i, FIELD(wt_tensor, f), w, v}
#define DIM(i, k, v) {P_REC, WT_SEC_TENSORS, i, ELEM(wt_tensor, shape, k), 8, v}
#define TAB(sec, f, w, v) {P_TAB, WT_SEC_##sec, 0, FIELD(fmt_section, f), w, v}
#define STR(at, v) {P_BYTE, WT_SEC_STRINGS, 0, at, 1, v}
#define BAD FMT_ERR_INVALID
#define OOB FMT_ERR_BOUNDS

static const struct rule rules[] = {
    /* config */
    {"model config fails its check", 0, {MC(num_heads, 0)}, BAD, "config: model: num_attention_heads"},
    {"unknown quant", 0, {CFG(quant, 4, 0)}, BAD, "config: unknown quant 0"},
    {"unknown lm_head_quant", 0, {CFG(lm_head_quant, 4, 9)}, BAD, "config: unknown lm_head_quant 9"},
    {"INT4 group size 48", 0, {CFG(quant, 4, PLAN_QUANT_INT4), CFG(group_size, 4, 48)}, BAD, "INT4 group_size 48 is not 32, 64 or 128"},
    {"INT4 without a group size", 0, {CFG(quant, 4, PLAN_QUANT_INT4)}, BAD, "INT4 group_size 0"},
    {"BF16 with a group size", 0, {CFG(group_size, 4, 64)}, BAD, "group_size 64 must be 0 without INT4"},
    {"config reserved0", 0, {CFG(reserved0, 4, 1)}, BAD, "config: reserved fields"},
    {"config reserved1", 0, {CFG(reserved1, 4, 1)}, BAD, "config: reserved fields"},
    {"data_bytes not DATA's size", 0, {CFG(data_bytes, 8, 100)}, BAD, "data_bytes 100 but the DATA section has 26880"},
    {"source unterminated", 0, {{P_FILL, WT_SEC_CONFIG, 0, FIELD(wt_config, source), 64, 'x'}}, BAD, "source is not NUL-terminated"},
    /* names */
    {"name outside STRINGS", 0, {TEN(0, name, 4, 100000)}, OOB, "tensor 0: name offset 100000 is outside STRINGS"},
    {"empty name", 0, {TEN(1, name, 4, 25)}, BAD, "tensor 1: empty name"},
    {"name too long", 0, {STR(276, 'x')}, BAD, "tensor 1: name of 268 bytes is too long (limit 255)"},
    {"name unterminated", 0, {STR(316, 'x')}, OOB, "tensor 5: name offset 313 is outside STRINGS or its string is unterminated"},
    {"duplicate name", 0, {TEN(3, name, 4, 277)}, BAD, "tensor 'model.norm.weight': duplicate name"},
    /* kinds and shapes */
    {"dtype 0", 0, {TEN(0, dtype, 4, 0)}, BAD, "tensor 0 'model.embed_tokens.weight': unknown dtype 0"},
    {"dtype 7", 0, {TEN(2, dtype, 4, 7)}, BAD, "tensor 2 'model.norm.weight': unknown dtype 7"},
    {"unknown layout", 0, {TEN(3, layout, 4, 7)}, BAD, "tensor 3 'lm_head.weight': unknown layout 7"},
    {"INT4 rows on a bf16 tensor", 0, {TEN(3, layout, 4, 1)}, BAD, "tensor 3 'lm_head.weight': INT4 rows layout needs dtype I4"},
    {"ndim 0", 0, {TEN(0, ndim, 4, 0)}, BAD, "tensor 0 'model.embed_tokens.weight': ndim 0 is not 1..4"},
    {"ndim 5", 0, {TEN(5, ndim, 4, 5)}, BAD, "tensor 5 'ids': ndim 5 is not 1..4"},
    {"unused dim set", 0, {DIM(2, 1, 1)}, BAD, "tensor 2 'model.norm.weight': unused shape[1] is not zero"},
    {"zero dim", 0, {DIM(0, 0, 0)}, BAD, "tensor 0 'model.embed_tokens.weight': shape[0] is 0"},
    {"size not dtype x shape", 0, {TEN(0, size, 8, 12802)}, BAD, "size 12802 is inconsistent with its dtype and shape (12800 bytes)"},
    {"packed 4-bit size rounds up", 0, {TEN(4, size, 8, 7)}, BAD, "tensor 4 'q4': size 7 is inconsistent with its dtype and shape (8 bytes)"},
    {"element count overflows", 0, {DIM(5, 0, 1ull << 20), DIM(5, 1, 1ull << 20), DIM(5, 2, 1ull << 30)}, BAD, "tensor 5 'ids': element count overflows"},
    {"byte size overflows", 0, {DIM(2, 0, 1ull << 62)}, BAD, "tensor 2 'model.norm.weight': byte size overflows"},
    {"plain layout with scales", 0, {TEN(0, scales_offset, 8, 256)}, BAD, "plain layout with scales"},
    {"plain layout with zero points", 0, {TEN(0, zeros_offset, 8, 256)}, BAD, "plain layout with scales, zero points"},
    {"plain layout with a group size", 0, {TEN(3, group_size, 4, 64)}, BAD, "tensor 3 'lm_head.weight': plain layout"},
    /* extents */
    {"misaligned tensor", 0, {TEN(1, offset, 8, 12816)}, BAD, "eeeeeeee': offset 12816 is not 256-aligned"},
    {"tensor past DATA", 0, {TEN(5, offset, 8, 26880)}, OOB, "tensor 5 'ids': [26880, +480) lies outside the 26880 bytes of DATA"},
    {"tensor offset wraps", 0, {TEN(5, offset, 8, ~0ull - 255)}, OOB, "tensor 5 'ids': [18446744073709551360, +480) lies outside"},
    {"tensor overlapping another", 0, {TEN(4, offset, 8, 25856)}, BAD, "tensor 'q4' at 25856 overlaps tensor 'lm_head.weight' at 13312"},
    /* sections */
    {"DATA missing", 0, {TAB(DATA, id, 4, 9)}, FMT_ERR_MISSING, "DATA section (id 4) is missing"},
    {"CONFIG missing", 0, {TAB(CONFIG, id, 4, 9)}, FMT_ERR_MISSING, "CONFIG section (id 1) is missing"},
    {"STRINGS missing", 0, {TAB(STRINGS, id, 4, 9)}, FMT_ERR_MISSING, "STRINGS section (id 2) is missing"},
    {"TENSORS record size", 0, {TAB(TENSORS, record_size, 4, 44), TAB(TENSORS, count, 4, 12)}, BAD, "TENSORS section (id 3): record size 44, expected 88"},
    {"DATA not streamed", 1, {TAB(DATA, flags, 4, 0)}, BAD, "DATA section must be raw and streamed"},
    {"DATA misaligned", 0, {TAB(DATA, offset, 8, 4160), TAB(DATA, size, 8, 26816)}, BAD, "DATA section at offset 4160 is not 4096-aligned"},
};

static void apply(uint8_t *c, const struct fmt_view *v, const struct poke *p)
{
    for (uint32_t i = 0; i < v->nsec; i++) {
        const struct fmt_section *s = &v->sec[i];
        if (s->id != p->sec)
            continue;
        size_t rec = s->offset + (size_t)p->index * s->record_size + p->field;
        if (p->kind == P_TAB)
            memcpy(c + FMT_HEADER_SIZE + (size_t)i * FMT_SECTION_SIZE + p->field, &p->val,
                   (size_t)p->width);
        else if (p->kind == P_REC)
            memcpy(c + rec, &p->val, (size_t)p->width);
        else if (p->kind == P_BYTE)
            c[s->offset + p->field] = (uint8_t)p->val;
        else
            memset(c + rec, (int)p->val, (size_t)p->width);
    }
}

static void test_rules(const uint8_t *buf, size_t len)
{
    struct wt_view v, q;
    char err[FMT_ERR_LEN];
    if (wt_read(&v, buf, len, len, err) != FMT_OK)
        exit(1);
    uint8_t *c = malloc(len);
    for (size_t r = 0; r < sizeof rules / sizeof rules[0]; r++) {
        size_t n = rules[r].whole ? len : WT_DATA_ALIGN;
        memcpy(c, buf, len);
        for (int k = 0; k < 3 && rules[r].p[k].kind != P_NONE; k++)
            apply(c, &v.f, &rules[r].p[k]);
        recrc(c, n);
        err[0] = 0;
        enum fmt_status st = wt_read(&q, c, n, len, err);
        CHECK(st == rules[r].st && strstr(err, rules[r].msg), "rule: %s -> %s: %s", rules[r].what,
              fmt_status_name(st), err);
    }
    free(c);
}

static void test_prefix_size(const uint8_t *buf, size_t len)
{
    uint8_t c[WT_DATA_ALIGN];
    memcpy(c, buf, sizeof c);
    CHECK(wt_prefix_size(c, sizeof c) == WT_DATA_ALIGN && wt_prefix_size(c, 100) == 256 &&
              wt_prefix_size(NULL, 0) == 0,
          "wt_prefix_size: 256 from a partial table, 4096 with the table");
    c[0] ^= 1;
    CHECK(wt_prefix_size(c, sizeof c) == 0, "wt_prefix_size: 0 for a bad magic");
    c[0] ^= 1;
    c[FMT_HEADER_SIZE + 4] ^= 1;
    CHECK(wt_prefix_size(c, sizeof c) == 0, "wt_prefix_size: 0 for a damaged table");
    c[FMT_HEADER_SIZE + 4] ^= 1;
    c[20] ^= 1;
    CHECK(wt_prefix_size(c, sizeof c) == 0, "wt_prefix_size: 0 for a damaged header");
    c[20] ^= 1;
    uint8_t *whole = malloc(len);
    memcpy(whole, buf, len);
    memcpy(whole + FMT_HEADER_SIZE + 3 * FMT_SECTION_SIZE, &(uint32_t){9}, 4); /* DATA's id */
    recrc(whole, len);
    CHECK(wt_prefix_size(whole, len) == len, "wt_prefix_size: the file size when DATA is absent");
    free(whole);
}

int main(void)
{
    struct fix_wt f;
    size_t len;
    char *dir = fix_tmpdir();
    fix_wt_init(&f);
    uint8_t *buf = fix_wt_file(&f, dir, "rules.qwt", 9, &len);
    test_rules(buf, len);
    test_prefix_size(buf, len);
    free(buf);
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    if (system(cmd) != 0)
        printf("note: could not remove %s\n", dir);
    return test_done();
}
