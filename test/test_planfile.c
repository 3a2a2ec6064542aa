/* test_planfile.c — plan.bin round trip and damage: the fixture plan (fix_plan.h) written
 * and read back record by record, determinism, the writer's refusal of content its reader
 * would refuse, and the reader's refusal of every header byte, every table byte, random
 * payload damage and every truncation. The semantic rules, one at a time, are in
 * test_planrules.c. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "plan/crc.h"
#include "plan/planfile.h"
#include "test/fix_plan.h"
#include "test/test.h"

static enum fmt_status read_copy(const uint8_t *buf, size_t len, char *err)
{
    struct plan_view p;
    uint8_t *copy = malloc(len ? len : 1); /* exact size: ASan sees any read past len */
    memcpy(copy, buf, len);
    enum fmt_status st = plan_read(&p, copy, len, err);
    free(copy);
    return st;
}

/* Compare every record of the view with the content it was written from. */
#define SAME_RECORDS(p, c, get, type, arr, n, what)                                                      \
    do {                                                                                           \
        int ok_ = (p)->n == (c)->n;                                                                \
        for (uint32_t i_ = 0; ok_ && i_ < (p)->n; i_++) {                                          \
            struct type r_;                                                                        \
            get(p, i_, &r_);                                                                       \
            ok_ &= memcmp(&r_, &(c)->arr[i_], sizeof r_) == 0;                                     \
        }                                                                                          \
        CHECK(ok_, "round trip: %u %s equal", (p)->n, what);                                       \
    } while (0)

static void test_round_trip(void)
{
    static struct fix_plan f;
    struct plan_view p;
    char err[FMT_ERR_LEN];
    size_t len;
    fix_plan_init(&f, 1);
    uint8_t *buf = fix_plan_write(&f, &len);
    enum fmt_status st = plan_read(&p, buf, len, err);
    CHECK(st == FMT_OK, "plan_read accepts plan_write's output (%s)", st ? err : "ok");
    struct plan_identity want = f.c.id;
    want.images_hash = fnv64(FNV64_INIT, f.image_data, sizeof f.image_data);
    CHECK(memcmp(&p.id, &want, sizeof want) == 0 && p.id.images_hash != 0,
          "round trip: identity equal, images_hash filled by the writer");
    CHECK(p.strings_size == f.nstr && memcmp(p.strings, f.strings, f.nstr) == 0,
          "round trip: %llu bytes of strings equal", (unsigned long long)p.strings_size);
    CHECK(p.image_data_size == sizeof f.image_data &&
              memcmp(p.image_data, f.image_data, sizeof f.image_data) == 0,
          "round trip: image data equal");
    CHECK(p.params_size == sizeof f.params && memcmp(p.params, f.params, sizeof f.params) == 0,
          "round trip: parameter blobs equal");
    SAME_RECORDS(&p, &f.c, plan_get_region, plan_region, regions, num_regions, "regions");
    SAME_RECORDS(&p, &f.c, plan_get_buffer, plan_buffer, buffers, num_buffers, "buffers");
    SAME_RECORDS(&p, &f.c, plan_get_weight, plan_weight, weights, num_weights, "weights");
    SAME_RECORDS(&p, &f.c, plan_get_image, plan_image, images, num_images, "images");
    SAME_RECORDS(&p, &f.c, plan_get_kernel, plan_kernel, kernels, num_kernels, "kernels");
    SAME_RECORDS(&p, &f.c, plan_get_reloc, plan_reloc, relocs, num_relocs, "relocs");
    SAME_RECORDS(&p, &f.c, plan_get_schedule, plan_schedule, schedules, num_schedules, "schedules");
    SAME_RECORDS(&p, &f.c, plan_get_op, plan_op, ops, num_ops, "ops");
    struct plan_op op;
    struct plan_kernel k;
    plan_get_op(&p, 1, &op);
    plan_get_kernel(&p, op.kernel, &k);
    CHECK(strcmp(plan_str(&p, op.name), "l0.attn") == 0 &&
              strcmp(plan_str(&p, k.name), "k_attn_decode") == 0 && plan_str(&p, 100000)[0] == 0,
          "plan_str: names through the view, empty for a bad offset");
    CHECK(p.id.manifest_hash == wt_manifest_hash_plan(p.strings, f.weights, 3),
          "identity carries the manifest hash of its weights");
    free(buf);
}

static void test_determinism(void)
{
    static struct fix_plan a, b;
    size_t la, lb;
    fix_plan_init(&a, 5);
    fix_plan_init(&b, 5);
    uint8_t *x = fix_plan_write(&a, &la);
    uint8_t *y = fix_plan_write(&b, &lb);
    CHECK(la == lb && memcmp(x, y, la) == 0, "determinism: equal content, identical %zu bytes", la);
    free(y);
    fix_plan_init(&b, 6);
    y = fix_plan_write(&b, &lb);
    CHECK(la == lb && memcmp(x, y, la) != 0, "different blobs give different bytes");
    free(x);
    free(y);
}

static void test_writer_refuses(void)
{
    static struct fix_plan f;
    uint8_t *buf = (uint8_t *)&f; /* any non-NULL value: the writer must reset it */
    size_t len = 1;
    char err[FMT_ERR_LEN];
    fix_plan_init(&f, 2);
    f.ops[1].kernel = 7;
    enum fmt_status st = plan_write(&f.c, &buf, &len, err);
    CHECK(st == FMT_ERR_BOUNDS && buf == NULL && len == 0 && strstr(err, "refused by its reader") &&
              strstr(err, "kernel index 7"),
          "plan_write refuses a plan its reader refuses: %s", err);
    fix_plan_init(&f, 2);
    f.c.num_ops = 0;
    f.c.num_schedules = 0;
    f.c.num_buffers = 3; /* the last one names schedule 0 */
    st = plan_write(&f.c, &buf, &len, err);
    CHECK(st == FMT_OK && len > 0, "a plan without ops or schedules is still a valid file (%s)",
          st ? err : "ok");
    free(buf);
}

static void test_flips(const uint8_t *buf, size_t len, size_t from, size_t to, const char *what)
{
    char err[FMT_ERR_LEN];
    size_t bad = SIZE_MAX;
    uint8_t *c = malloc(len);
    for (size_t i = from; i < to && bad == SIZE_MAX; i++) {
        memcpy(c, buf, len);
        c[i] ^= (uint8_t)(1u << (i % 8));
        if (read_copy(c, len, err) == FMT_OK)
            bad = i;
    }
    CHECK(bad == SIZE_MAX, "every %s byte flipped is refused (first accepted: %lld)", what,
          bad == SIZE_MAX ? -1ll : (long long)bad);
    free(c);
}

static void test_damage(void)
{
    static struct fix_plan f;
    struct plan_view p;
    char err[FMT_ERR_LEN];
    size_t len;
    fix_plan_init(&f, 3);
    uint8_t *buf = fix_plan_write(&f, &len);
    if (plan_read(&p, buf, len, err) != FMT_OK)
        exit(1);
    test_flips(buf, len, 0, FMT_HEADER_SIZE, "header");
    test_flips(buf, len, FMT_HEADER_SIZE, FMT_HEADER_SIZE + (size_t)p.f.nsec * FMT_SECTION_SIZE,
               "section table");
    unsigned long long seed = 99;
    int ok = 1, trials = 0;
    uint8_t *c = malloc(len);
    for (int t = 0; t < 600; t++) {
        const struct fmt_section *s = &p.f.sec[t % p.f.nsec];
        if (s->size == 0)
            continue;
        memcpy(c, buf, len);
        int flips = 1 + (int)(test_rand(&seed) % 3);
        for (int k = 0; k < flips; k++)
            c[s->offset + test_rand(&seed) % s->size] ^= (uint8_t)(1 + test_rand(&seed) % 255);
        if (memcmp(c, buf, len) == 0)
            continue;
        ok &= read_copy(c, len, err) == FMT_ERR_SECTION_CRC;
        trials++;
    }
    CHECK(ok && trials >= 500, "random damage in all %u section payloads: CRC mismatch in %d trials",
          p.f.nsec, trials);
    ok = 1;
    for (size_t n = 0; n < len; n++)
        ok &= read_copy(buf, n, err) == FMT_ERR_TRUNCATED;
    CHECK(ok, "every truncation 0..%zu is reported as truncated", len - 1);
    free(c);
    free(buf);
}

int main(void)
{
    test_round_trip();
    test_determinism();
    test_writer_refuses();
    test_damage();
    return test_done();
}
