/* test_manifest.c — the weight manifest (weights/manifest.h) and its agreement with images
 * and plans.
 *
 * The converter writes the manifest's tensors and the planner embeds the same list; this test
 * checks the list itself (names, counts, INT4 extents by kern/quant.h, the 35B total), then
 * writes a complete INT4 image of a tiny config from the manifest through the streaming
 * writer, reads it back, and checks that its manifest hash equals the one a plan of the same
 * config and format carries: the identity that rt checks at load. */
#include <stdio.h>
#include <stdlib.h>
#include <stddef.h>
#include <string.h>
#include <unistd.h>

#include "../kern/quant.h"
#include "../plan/build.h"
#include "../weights/manifest.h"
#include "recrc.h"
#include "test.h"

static void default_model(void)
{
    struct model_config c;
    struct wt_manifest m;
    char err[MODEL_ERR_LEN];
    model_config_default(&c);
    struct wt_format f = {PLAN_QUANT_INT4, 128, PLAN_QUANT_BF16};
    int rc = wt_manifest_build(&m, &c, &f, err);
    CHECK(rc == 0, "Qwen3.5-35B-A3B int4:128 manifest builds%s%s", rc ? ": " : "", rc ? err : "");
    if (rc)
        return;
    /* per layer: 2 norms + 7 MoE; GDN 9, attention 6; + embed, norm, lm_head; MTP: 3 + layer + norm */
    uint32_t want = 30 * (2 + 9 + 7) + 10 * (2 + 6 + 7) + 3 + (3 + 2 + 6 + 7 + 1);
    CHECK(m.n == want, "712 tensors in the manifest (got %u, expected %u)", m.n, want);
    uint64_t total = 0;
    for (uint32_t i = 0; i < m.n; i++)
        total += m.t[i].size;
    CHECK(total > 18ull << 30 && total < 19ull << 30, "total %.2f GiB (int4 g128 + bf16 embed/lm_head)",
          (double)total / (1u << 30));
    int64_t gu = wt_manifest_find(&m, "layers.0.mlp.experts.gate_up_proj");
    int ok = gu >= 0;
    if (ok) {
        const struct wt_tensor_desc *t = &m.t[gu];
        ok = t->layout == K_LAYOUT_I4_ROWS && t->ndim == 3 && t->shape[0] == 256 &&
             t->shape[1] == 1024 && t->shape[2] == 2048 &&
             t->scales_offset == 256ull * 1024 * 2048 / 2 &&
             t->size == t->scales_offset + 256ull * 1024 * (2048 / 128) * 2;
    }
    CHECK(ok, "experts.gate_up_proj is (256, 1024, 2048) INT4 rows with scales after the nibbles");
    int64_t al = wt_manifest_find(&m, "layers.0.linear_attn.A_log");
    int64_t rt = wt_manifest_find(&m, "layers.3.mlp.gate.weight");
    CHECK(al >= 0 && m.t[al].dtype == PLAN_DTYPE_F32 && rt >= 0 && m.t[rt].dtype == PLAN_DTYPE_BF16 &&
              wt_manifest_find(&m, "layers.3.linear_attn.A_log") < 0 &&
              wt_manifest_find(&m, "layers.3.self_attn.q_proj.weight") >= 0,
          "A_log is f32, the router bf16, layer 3 is attention");
    wt_manifest_free(&m);
    struct wt_format bad = {PLAN_QUANT_INT4, 48, PLAN_QUANT_BF16};
    CHECK(wt_manifest_build(&m, &c, &bad, err) != 0, "group 48 is refused: %s", err);
}

/* Write a tiny INT4 image from its manifest, read it back, compare hashes with a plan's. */
static void image_matches_plan(void)
{
    struct model_config c;
    char err[FMT_ERR_LEN], path[] = "/tmp/qrt_manifest_XXXXXX";
    if (model_config_load(&c, "test/data/config/tiny-a.json", err)) {
        CHECK(0, "tiny-a config reads: %s", err);
        return;
    }
    struct wt_format f = {PLAN_QUANT_INT4, 32, PLAN_QUANT_BF16};
    struct wt_manifest m;
    if (wt_manifest_build(&m, &c, &f, err)) {
        CHECK(0, "tiny-a int4:32 manifest builds: %s", err);
        return;
    }
    struct wt_config cfg = {.model = c, .quant = f.quant, .group_size = f.group_size,
                            .lm_head_quant = f.lm_head_quant};
    int fd = mkstemp(path);
    close(fd);
    struct wt_writer *w = wt_writer_open(path, &cfg, m.t, m.n, err);
    int ok = w != NULL;
    unsigned long long s = 7;
    for (uint32_t i = 0; ok && i < m.n; i++) {
        uint8_t *buf = malloc(m.t[i].size);
        for (uint64_t j = 0; j < m.t[i].size; j++)
            buf[j] = (uint8_t)test_rand(&s);
        ok = wt_writer_write(w, buf, m.t[i].size, err) == FMT_OK;
        free(buf);
    }
    ok = ok && wt_writer_close(w, err) == FMT_OK;
    CHECK(ok, "an image of every manifest tensor writes%s%s", ok ? "" : ": ", ok ? "" : err);
    size_t len = 0;
    char *img = ok ? test_read_file(path, &len) : NULL;
    struct wt_view v;
    enum fmt_status st = img ? wt_read(&v, img, len, len, err) : FMT_ERR_IO;
    CHECK(st == FMT_OK, "the image reads back (INT4 rows layout accepted)%s%s", st ? ": " : "",
          st ? err : "");

    /* an INT4 tensor whose scales do not sit right after its nibbles is refused, CRCs mended */
    int64_t qi = st == FMT_OK ? wt_find(&v, "layers.0.linear_attn.in_proj_qkv.weight") : -1;
    if (qi >= 0) {
        uint8_t *bad = malloc(len);
        memcpy(bad, img, len);
        const struct fmt_section *ts = fmt_find(&v.f, WT_SEC_TENSORS, NULL);
        uint64_t at = ts->offset + (uint64_t)qi * sizeof(struct wt_tensor) +
                      offsetof(struct wt_tensor, scales_offset);
        uint64_t so;
        memcpy(&so, bad + at, 8);
        so += 256;
        memcpy(bad + at, &so, 8);
        recrc(bad, wt_prefix_size(bad, len));
        struct wt_view v2;
        CHECK(wt_read(&v2, bad, len, len, err) == FMT_ERR_INVALID && strstr(err, "INT4 extent"),
              "an INT4 tensor with misplaced scales is refused: %s", err);
        free(bad);
    }

    struct pb b;
    if (st == FMT_OK && pb_init(&b, &c, &f, 256, err) == 0) {
        struct plan_content pc;
        b.split_threshold = 64, b.n_split = 4, b.num_buckets = 1, b.buckets[0] = 64;
        int built = !plan_emit_schedules(&b) && !plan_build_finish(&b) && !plan_build_content(&b, &pc);
        CHECK(built && pc.id.manifest_hash == wt_manifest_hash(&v) &&
                  pc.id.weights_bytes == v.data_size,
              "plan and image agree: manifest hash %016llx, weights bytes %llu",
              (unsigned long long)wt_manifest_hash(&v), (unsigned long long)v.data_size);
        pb_free(&b);
    }
    free(img);
    remove(path);
    wt_manifest_free(&m);
}

static void formats(void)
{
    uint32_t q, g;
    char buf[32];
    CHECK(!wt_format_parse("bf16", &q, &g) && q == PLAN_QUANT_BF16 && g == 0, "bf16 parses");
    CHECK(!wt_format_parse("int4", &q, &g) && q == PLAN_QUANT_INT4 && g == 128, "int4 means group 128");
    CHECK(!wt_format_parse("int4:32", &q, &g) && g == 32, "int4:32 parses");
    CHECK(wt_format_parse("int4:48", &q, &g) && wt_format_parse("int8", &q, &g) &&
              wt_format_parse("int4:64x", &q, &g) && wt_format_parse("", &q, &g),
          "int4:48, int8, int4:64x and empty are refused");
    CHECK(!strcmp(wt_format_name(PLAN_QUANT_INT4, 64, buf, sizeof buf), "int4:64"), "names round-trip");
}

int main(void)
{
    default_model();
    image_matches_plan();
    formats();
    return test_done();
}
