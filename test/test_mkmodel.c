/* test_mkmodel.c — the random checkpoint generator (test/ref/mkmodel_gen.c, tools/mkmodel).
 *
 * The generated checkpoints stand in for transformers-made ones in converter, reference and
 * runtime tests, and transformers itself must load them to make golden logits, so this test
 * checks them against the model description rather than against the generator's own tables:
 * configs read back with model_config_load to the sizes the built-in table promises; every
 * language-model tensor is found with the right shape by the CPU reference's loader (its own
 * list of names); dtypes (F32 only for A_log and the gated norm weight), the vision tower and
 * the MTP head are checked by name; weight statistics match the scales of the transformers
 * fixtures; same seed gives the same bytes and another seed other bytes; the per-expert
 * layout holds the fused layout's values; failures leave nothing behind; and the float32
 * reference runs a 20-token prompt on each configuration with finite, varying logits.
 *
 * Files go to a fresh directory under $TMPDIR (or /tmp), removed at the end. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "../plan/model.h"
#include "../weights/safetensors.h"
#include "ref/mkmodel_gen.h"
#include "ref/ref.h"
#include "test.h"

#define MAX_DIRS 16

static char root[512];
static char dirs[MAX_DIRS][600];
static int ndirs;

/* A directory under root for one checkpoint; remembered for the cleanup. */
static const char *dir_for(const char *name)
{
    snprintf(dirs[ndirs], sizeof dirs[0], "%s/%s", root, name);
    return dirs[ndirs < MAX_DIRS - 1 ? ndirs++ : ndirs];
}

static void cleanup(void)
{
    char p[700];
    for (int i = 0; i < ndirs; i++) {
        snprintf(p, sizeof p, "%s/config.json", dirs[i]);
        unlink(p);
        snprintf(p, sizeof p, "%s/model.safetensors", dirs[i]);
        unlink(p);
        rmdir(dirs[i]);
    }
    rmdir(root);
}

static int gen(const char *dir, const struct mkmodel_spec *s, uint64_t seed, int per_expert,
               int all_bf16)
{
    struct mkmodel_opts o = {.seed = seed, .per_expert = per_expert, .all_bf16 = all_bf16};
    char err[MKMODEL_ERR_LEN] = "";
    int rc = mkmodel_write(dir, s, &o, err);
    CHECK(rc == 0, "%s seed %llu%s%s: written%s%s", s->name, (unsigned long long)seed,
          per_expert ? " per-expert" : "", all_bf16 ? " all-bf16" : "", rc ? ": " : "", err);
    return rc;
}

static int open_st(struct wt_st_file *f, const char *dir)
{
    char p[700], err[WT_ST_ERR_LEN];
    snprintf(p, sizeof p, "%s/model.safetensors", dir);
    int rc = wt_st_open(f, p, err);
    if (rc)
        CHECK(0, "%s opens: %s", p, err);
    return rc;
}

static int same_file(const char *dir_a, const char *dir_b, const char *name)
{
    char a[700], b[700];
    size_t la, lb;
    snprintf(a, sizeof a, "%s/%s", dir_a, name);
    snprintf(b, sizeof b, "%s/%s", dir_b, name);
    char *x = test_read_file(a, &la), *y = test_read_file(b, &lb);
    int same = la == lb && !memcmp(x, y, la);
    free(x);
    free(y);
    return same;
}

/* ---- configs --------------------------------------------------------------------------------- */

/* The sizes the task statement gives for each built-in configuration. */
static const struct {
    const char *name, *layers;
    uint32_t hidden, heads, kv, hd, rotary, lk, lv, dk, dv, E, k, I, S, V, mtp;
    int32_t eos;
} want_cfg[] = {
    {"tiny-b", "lllf", 96, 6, 2, 32, 8, 2, 4, 24, 24, 6, 2, 48, 32, 700, 0, -1},
    {"tiny-8l", "lllflllf", 128, 4, 2, 64, 16, 2, 4, 32, 32, 8, 2, 64, 64, 512, 1, -1},
    {"tiny-odd", "lfllf", 80, 5, 1, 40, 8, 3, 6, 20, 28, 5, 3, 36, 24, 333, 0, 7},
    {"tiny-g128", "lllf", 256, 4, 2, 64, 16, 2, 4, 64, 64, 16, 4, 512, 512, 512, 0, -1},
};

static void check_config(const char *dir, int w)
{
    char p[700], err[MODEL_ERR_LEN], types[MODEL_MAX_LAYERS + 1];
    struct model_config c, g;
    const char *what = "";
    snprintf(p, sizeof p, "%s/config.json", dir);
    int rc = model_config_load(&c, p, err);
    CHECK(rc == 0, "%s: config.json reads back%s%s", want_cfg[w].name, rc ? ": " : "",
          rc ? err : "");
    if (rc)
        return;
    mkmodel_config(mkmodel_find(want_cfg[w].name), &g);
    int eq = model_config_equal(&c, &g, &what);
    CHECK(eq, "%s: config equals the generator's%s%s", want_cfg[w].name, eq ? "" : ", not in ",
          eq ? "" : what);
    for (uint32_t i = 0; i < c.num_layers; i++)
        types[i] = c.layer_types[i] == MODEL_LAYER_FULL ? 'f' : 'l';
    types[c.num_layers] = 0;
    int eos_ok =
        want_cfg[w].eos < 0 ? c.num_eos == 0 : c.num_eos == 1 && c.eos_ids[0] == want_cfg[w].eos;
    CHECK(!strcmp(types, want_cfg[w].layers) && c.hidden_size == want_cfg[w].hidden &&
              c.num_heads == want_cfg[w].heads && c.num_kv_heads == want_cfg[w].kv &&
              c.head_dim == want_cfg[w].hd && c.rotary_dim == want_cfg[w].rotary &&
              c.lin_num_k_heads == want_cfg[w].lk && c.lin_num_v_heads == want_cfg[w].lv &&
              c.lin_k_head_dim == want_cfg[w].dk && c.lin_v_head_dim == want_cfg[w].dv &&
              c.num_experts == want_cfg[w].E && c.num_experts_per_tok == want_cfg[w].k &&
              c.moe_inter == want_cfg[w].I && c.shared_inter == want_cfg[w].S &&
              c.vocab_size == want_cfg[w].V && c.mtp_layers == want_cfg[w].mtp && eos_ok &&
              c.mrope_section[0] + c.mrope_section[1] + c.mrope_section[2] == c.rotary_dim / 2,
          "%s: layers %s, hidden %u, heads %u/%u of %u, rotary %u, GDN %u/%u of %u/%u, experts %u "
          "top-%u of %u, shared %u, vocab %u, mtp %u, eos %d",
          want_cfg[w].name, types, c.hidden_size, c.num_heads, c.num_kv_heads, c.head_dim,
          c.rotary_dim, c.lin_num_k_heads, c.lin_num_v_heads, c.lin_k_head_dim, c.lin_v_head_dim,
          c.num_experts, c.num_experts_per_tok, c.moe_inter, c.shared_inter, c.vocab_size,
          c.mtp_layers, c.num_eos ? c.eos_ids[0] : -1);
}

/* ---- tensors: names, shapes, dtypes -----------------------------------------------------------
 */

/* The reference's getter: image names are the HF names without "model.language_model.". */
static int get_fused(void *ctx, const char *name, int ndim, const uint64_t *shape, float *dst,
                     char *err)
{
    const struct wt_st_file *f = ctx;
    char full[256], why[WT_ST_ERR_LEN];
    if (!strcmp(name, "lm_head.weight"))
        snprintf(full, sizeof full, "%s", name);
    else
        snprintf(full, sizeof full, "model.language_model.%s", name);
    const struct wt_st_tensor *t = wt_st_find(f, full);
    int same = t && (int)t->ndim == ndim;
    for (int i = 0; same && i < ndim; i++)
        same = t->shape[i] == shape[i];
    if (!same) {
        snprintf(err, MODEL_ERR_LEN, "tensor %s is %s", full, t ? "of another shape" : "missing");
        return -1;
    }
    if (wt_st_read_f32(f, t, dst, 0, wt_st_numel(t), why)) {
        snprintf(err, MODEL_ERR_LEN, "%.200s", why);
        return -1;
    }
    return 0;
}

static int has_shape(const struct wt_st_file *f, const char *name, uint32_t ndim, uint64_t d0,
                     uint64_t d1, uint64_t d2)
{
    const struct wt_st_tensor *t = wt_st_find(f, name);
    uint64_t d[3] = {d0, d1, d2};
    int ok = t && t->ndim == ndim && t->dtype == WT_ST_BF16;
    for (uint32_t i = 0; ok && i < ndim && i < 3; i++)
        ok = t->shape[i] == d[i];
    return ok;
}

/* MODEL.md §5: the MTP head, shaped like a main attention layer plus fc and three norms. */
static void check_mtp(const struct wt_st_file *f, const struct model_config *c, const char *name)
{
    uint64_t H = c->hidden_size, E = c->num_experts, I = c->moe_inter, S = c->shared_inter;
    uint64_t qd = model_q_dim(c), kvd = model_kv_dim(c), hd = c->head_dim;
    uint32_t n = 0;
    for (uint32_t i = 0; i < f->n; i++)
        n += !strncmp(f->t[i].name, "mtp.", 4);
    if (!c->mtp_layers) {
        CHECK(n == 0, "%s: no mtp.* tensors without an MTP layer (%u)", name, n);
        return;
    }
    const char *L = "mtp.layers.0.";
    char p[20][96];
    int ok = n == 19, k = 0;
#define HAS(nd, a, b, c_, fmt)                                                                     \
    (snprintf(p[k], sizeof p[k], fmt, L), ok &= has_shape(f, p[k++], nd, a, b, c_))
    ok &= has_shape(f, "mtp.fc.weight", 2, H, 2 * H, 0);
    ok &= has_shape(f, "mtp.pre_fc_norm_embedding.weight", 1, H, 0, 0);
    ok &= has_shape(f, "mtp.pre_fc_norm_hidden.weight", 1, H, 0, 0);
    ok &= has_shape(f, "mtp.norm.weight", 1, H, 0, 0);
    HAS(1, H, 0, 0, "%sinput_layernorm.weight");
    HAS(1, H, 0, 0, "%spost_attention_layernorm.weight");
    HAS(2, 2 * qd, H, 0, "%sself_attn.q_proj.weight");
    HAS(2, kvd, H, 0, "%sself_attn.k_proj.weight");
    HAS(2, kvd, H, 0, "%sself_attn.v_proj.weight");
    HAS(2, H, qd, 0, "%sself_attn.o_proj.weight");
    HAS(1, hd, 0, 0, "%sself_attn.q_norm.weight");
    HAS(1, hd, 0, 0, "%sself_attn.k_norm.weight");
    HAS(2, E, H, 0, "%smlp.gate.weight");
    HAS(3, E, 2 * I, H, "%smlp.experts.gate_up_proj");
    HAS(3, E, H, I, "%smlp.experts.down_proj");
    HAS(2, S, H, 0, "%smlp.shared_expert.gate_proj.weight");
    HAS(2, S, H, 0, "%smlp.shared_expert.up_proj.weight");
    HAS(2, H, S, 0, "%smlp.shared_expert.down_proj.weight");
    HAS(2, 1, H, 0, "%smlp.shared_expert_gate.weight");
#undef HAS
    CHECK(ok, "%s: the 19 mtp.* tensors are there with their shapes (%u found)", name, n);
}

static void check_tensors(const char *dir, const char *name, struct ref_model *m, int *loaded)
{
    struct wt_st_file f;
    struct model_config c;
    char err[MODEL_ERR_LEN];
    mkmodel_config(mkmodel_find(name), &c);
    *loaded = 0;
    if (open_st(&f, dir))
        return;
    int rc = ref_model_init(m, &c, get_fused, &f, err);
    CHECK(rc == 0, "%s: the reference finds every language-model tensor with its shape%s%s", name,
          rc ? ": " : "", rc ? err : "");
    *loaded = rc == 0;
    const char *bad = NULL;
    uint32_t nvis = 0;
    for (uint32_t i = 0; i < f.n && !bad; i++) {
        const char *n = f.t[i].name;
        int f32 = strstr(n, "linear_attn.A_log") || strstr(n, "linear_attn.norm.weight");
        int known = !strncmp(n, "model.language_model.", 21) || !strcmp(n, "lm_head.weight") ||
                    !strncmp(n, "model.visual.", 13) || !strncmp(n, "mtp.", 4);
        nvis += !strncmp(n, "model.visual.", 13);
        if (!known || f.t[i].dtype != (f32 ? WT_ST_F32 : WT_ST_BF16))
            bad = n;
    }
    CHECK(!bad,
          "%s: every name is model.language_model.*, lm_head, model.visual.* or mtp.*; "
          "F32 exactly for A_log and linear_attn.norm.weight (first bad: %s)",
          name, bad ? bad : "none");
    CHECK(nvis >= 3 &&
              has_shape(&f, "model.visual.merger.linear_fc2.weight", 2, c.hidden_size, 128, 0) &&
              wt_st_find(&f, "model.visual.patch_embed.proj.weight")->ndim == 5,
          "%s: %u model.visual.* tensors, the merger projecting to hidden %u", name, nvis,
          c.hidden_size);
    check_mtp(&f, &c, name);
    wt_st_close(&f);
}

/* ---- statistics ------------------------------------------------------------------------------ */

enum { ST_PROJ, ST_EMBED, ST_CONV, ST_NORM, ST_GNORM, ST_ALOG, ST_DT, ST_N };
static const char *st_name[ST_N] = {"projections", "embeddings", "conv taps", "zero-centred norms",
                                    "gated norm",  "A_log",      "dt_bias"};
struct acc {
    double n, sum, sq, min, max, exp_sum;
};
static struct acc stats[ST_N];
static int proj_tensor_off; /* large projection tensors whose own std is off by 10% or more */

static int classify(const char *n)
{
    if (strstr(n, "embed_tokens"))
        return ST_EMBED;
    if (strstr(n, "conv1d"))
        return ST_CONV;
    if (strstr(n, "A_log"))
        return ST_ALOG;
    if (strstr(n, "linear_attn.norm.weight"))
        return ST_GNORM;
    if (strstr(n, "dt_bias"))
        return ST_DT;
    if (strstr(n, "norm"))
        return ST_NORM;
    return ST_PROJ;
}

static void gather_stats(const char *dir)
{
    struct wt_st_file f;
    char err[WT_ST_ERR_LEN];
    if (open_st(&f, dir))
        return;
    for (uint32_t i = 0; i < f.n; i++) {
        const struct wt_st_tensor *t = &f.t[i];
        if (!strncmp(t->name, "model.visual.", 13))
            continue;
        uint64_t n = wt_st_numel(t);
        float *x = malloc(n * sizeof *x);
        if (!x || wt_st_read_f32(&f, t, x, 0, n, err)) {
            CHECK(0, "read %s", t->name);
            free(x);
            continue;
        }
        struct acc *a = &stats[classify(t->name)], one = {0};
        for (uint64_t k = 0; k < n; k++) {
            if (a->n == 0 && k == 0)
                a->min = a->max = x[k];
            a->min = fmin(a->min, x[k]);
            a->max = fmax(a->max, x[k]);
            a->exp_sum += exp(x[k]);
            one.sum += x[k];
            one.sq += (double)x[k] * x[k];
        }
        a->n += (double)n;
        a->sum += one.sum;
        a->sq += one.sq;
        double sd = sqrt(one.sq / n - (one.sum / n) * (one.sum / n));
        if (classify(t->name) == ST_PROJ && n >= 4096 && fabs(sd / 0.035 - 1) > 0.1)
            proj_tensor_off++;
        free(x);
    }
    wt_st_close(&f);
}

static void check_stats(void)
{
    /* expected mean and std, and the tolerances: tight where there are many samples */
    static const double want[ST_N][4] = {
        {0, 0.035, 0.002, 0.05}, {0, 1.0, 0.05, 0.05}, {0, 0.3, 0.02, 0.1}, {0, 0.1, 0.02, 0.1},
        {1, 0.1, 0.03, 0.2},     {0, 0, 0, 0},         {0, 1.0, 0.4, 0.3},
    };
    for (int c = 0; c < ST_N; c++) {
        struct acc *a = &stats[c];
        double mean = a->n ? a->sum / a->n : 0, sd = a->n ? sqrt(a->sq / a->n - mean * mean) : 0;
        if (c == ST_ALOG) {
            double em = a->n ? a->exp_sum / a->n : 0; /* exp(A_log) ~ U(0.01, 16): mean 8 */
            CHECK(a->n > 0 && a->min >= log(0.01) - 1e-5 && a->max <= log(16.0) + 1e-5 && em > 5 &&
                      em < 11,
                  "A_log: %.0f values in [%.3f, %.3f] within [log 0.01, log 16], mean exp %.2f ~ 8",
                  a->n, a->min, a->max, em);
            continue;
        }
        CHECK(a->n > 0 && fabs(mean - want[c][0]) <= want[c][2] &&
                  fabs(sd / want[c][1] - 1) <= want[c][3],
              "%s: %.0f values, mean %.4f (want %g), std %.4f (want %g within %.0f%%)", st_name[c],
              a->n, mean, want[c][0], sd, want[c][1], 100 * want[c][3]);
    }
    CHECK(proj_tensor_off == 0,
          "every projection tensor of 4096+ values has std within 10%% of 0.035 (%d off)",
          proj_tensor_off);
}

/* ---- determinism and layouts ----------------------------------------------------------------- */

static void check_determinism(const char *first)
{
    const struct mkmodel_spec *s = mkmodel_find("tiny-b");
    const char *again = dir_for("tiny-b-again"), *other = dir_for("tiny-b-seed2");
    if (gen(again, s, 1, 0, 0) || gen(other, s, 2, 0, 0))
        return;
    CHECK(same_file(first, again, "config.json") && same_file(first, again, "model.safetensors"),
          "tiny-b: the same seed writes byte-identical files");
    CHECK(same_file(first, other, "config.json") && !same_file(first, other, "model.safetensors"),
          "tiny-b: another seed writes the same config and other weights");
}

static uint16_t bf16_of(float f)
{
    uint32_t u;
    memcpy(&u, &f, sizeof u);
    u += 0x7FFFu + ((u >> 16) & 1u);
    return (uint16_t)(u >> 16);
}

/* Raw bytes [off, off + n) of tensor name in f, or NULL. */
static unsigned char *raw(const struct wt_st_file *f, const char *name, uint64_t off, uint64_t n)
{
    const struct wt_st_tensor *t = wt_st_find(f, name);
    char err[WT_ST_ERR_LEN];
    unsigned char *b = t ? malloc(n ? n : 1) : NULL;
    if (b && wt_st_read(f, t, b, off, n, err)) {
        free(b);
        b = NULL;
    }
    return b;
}

static int same_bytes(const struct wt_st_file *a, const char *na, uint64_t off,
                      const struct wt_st_file *b, const char *nb, uint64_t n)
{
    unsigned char *x = raw(a, na, off, n), *y = raw(b, nb, 0, n);
    int same = x && y && !memcmp(x, y, n);
    free(x);
    free(y);
    return same;
}

/* A fused expert tensor against its per-expert slices: gate rows then up rows per expert. */
static int same_experts(const struct wt_st_file *fu, const struct wt_st_file *pe,
                        const struct wt_st_tensor *t)
{
    char prefix[128], n[160];
    size_t plen = strlen(t->name) - strlen(strstr(t->name, ".mlp.experts."));
    snprintf(prefix, sizeof prefix, "%.*s.mlp.experts", (int)plen, t->name);
    int gate_up = strstr(t->name, "gate_up_proj") != NULL, ok = 1;
    uint64_t E = t->shape[0], slice = t->shape[1] * t->shape[2] * 2 / (gate_up ? 2 : 1); /* bytes */
    for (uint64_t e = 0; e < E && ok; e++) {
        uint64_t base = e * t->shape[1] * t->shape[2] * 2;
        unsigned long long ue = (unsigned long long)e;
        if (gate_up) {
            snprintf(n, sizeof n, "%s.%llu.gate_proj.weight", prefix, ue);
            ok = same_bytes(fu, t->name, base, pe, n, slice);
            snprintf(n, sizeof n, "%s.%llu.up_proj.weight", prefix, ue);
            ok = ok && same_bytes(fu, t->name, base + slice, pe, n, slice);
        } else {
            snprintf(n, sizeof n, "%s.%llu.down_proj.weight", prefix, ue);
            ok = same_bytes(fu, t->name, base, pe, n, slice);
        }
    }
    return ok;
}

/* A fused F32 tensor against its BF16 copy in an all-BF16 file. */
static int same_rounded(const struct wt_st_file *fu, const struct wt_st_file *pe,
                        const struct wt_st_tensor *t)
{
    const struct wt_st_tensor *b = wt_st_find(pe, t->name);
    uint64_t n = wt_st_numel(t);
    float *x = malloc(n * sizeof *x);
    uint16_t *y = malloc(n * sizeof *y);
    char err[WT_ST_ERR_LEN];
    int ok = b && x && y && b->dtype == WT_ST_BF16 && wt_st_numel(b) == n &&
             !wt_st_read(fu, t, x, 0, n * 4, err) && !wt_st_read(pe, b, y, 0, n * 2, err);
    for (uint64_t k = 0; ok && k < n; k++)
        ok = y[k] == bf16_of(x[k]);
    free(x);
    free(y);
    return ok;
}

static void check_per_expert(const char *fused_dir, const char *name, int all_bf16)
{
    const struct mkmodel_spec *s = mkmodel_find(name);
    char label[64];
    snprintf(label, sizeof label, "%s-per-expert%s", name, all_bf16 ? "-bf16" : "");
    const char *dir = dir_for(label);
    struct wt_st_file fu, pe;
    if (gen(dir, s, 1, 1, all_bf16) || open_st(&fu, fused_dir))
        return;
    if (open_st(&pe, dir)) {
        wt_st_close(&fu);
        return;
    }
    uint32_t moe = 0, E = s->experts;
    const char *bad = NULL;
    for (uint32_t i = 0; i < fu.n && !bad; i++) {
        const struct wt_st_tensor *t = &fu.t[i];
        int ok;
        if (strstr(t->name, ".mlp.experts.")) {
            moe += strstr(t->name, "gate_up_proj") != NULL;
            ok = !wt_st_find(&pe, t->name) && same_experts(&fu, &pe, t);
        } else if (t->dtype == WT_ST_F32 && all_bf16) {
            ok = same_rounded(&fu, &pe, t);
        } else {
            const struct wt_st_tensor *u = wt_st_find(&pe, t->name);
            ok = u && u->dtype == t->dtype && u->end - u->begin == t->end - t->begin &&
                 same_bytes(&fu, t->name, 0, &pe, t->name, t->end - t->begin);
        }
        if (!ok)
            bad = t->name;
    }
    CHECK(!bad && pe.n == fu.n - 2 * moe + 3 * E * moe,
          "%s: %u tensors hold the fused file's values (gate/up/down slices of %u MoE blocks%s); "
          "first mismatch: %s",
          label, pe.n, moe, all_bf16 ? ", F32 tensors rounded to BF16" : "", bad ? bad : "none");
    wt_st_close(&fu);
    wt_st_close(&pe);
}

/* ---- failures leave nothing behind ----------------------------------------------------------- */

static int exists(const char *dir, const char *name)
{
    char p[700];
    snprintf(p, sizeof p, "%s/%s", dir, name);
    return access(p, F_OK) == 0;
}

static void check_failures(const char *good_dir)
{
    char err[MKMODEL_ERR_LEN] = "";
    struct mkmodel_opts o = {.seed = 1};
    struct mkmodel_spec bad = *mkmodel_find("tiny-b");
    bad.kv_heads = 4; /* 6 query heads do not divide into 4 groups */
    const char *fresh = dir_for("bad-fresh");
    int rc = mkmodel_write(fresh, &bad, &o, err);
    CHECK(rc == -1 && strstr(err, "num_attention_heads") && access(fresh, F_OK) != 0,
          "a config that does not validate is refused and no directory is left: %s", err);

    /* over an existing checkpoint: the old files stay as they were, no .tmp is left */
    const char *copy = dir_for("tiny-b-again");
    rc = mkmodel_write(copy, &bad, &o, err);
    CHECK(rc == -1 && same_file(good_dir, copy, "config.json") &&
              same_file(good_dir, copy, "model.safetensors") && !exists(copy, "config.json.tmp") &&
              !exists(copy, "model.safetensors.tmp"),
          "a refused config leaves an existing checkpoint untouched");

    struct mkmodel_spec odd = *mkmodel_find("tiny-odd");
    odd.hidden =
        81; /* a BF16 norm of 81 values would put the F32 A_log after it off 4-byte alignment */
    rc = mkmodel_write(copy, &odd, &o, err);
    CHECK(rc == -1 && strstr(err, "multiple") && !exists(copy, "model.safetensors.tmp") &&
              same_file(good_dir, copy, "config.json"),
          "a layout that would misalign an F32 tensor is refused: %s", err);

    rc = mkmodel_write("/nonexistent-parent/x", mkmodel_find("tiny-b"), &o, err);
    CHECK(rc == -1 && strstr(err, "/nonexistent-parent/x"), "an unwritable DIR is refused: %s",
          err);
    CHECK(mkmodel_find("tiny-zzz") == NULL && mkmodel_find("wide-2l") != NULL,
          "configurations are found by name");
}

/* ---- the float32 reference serves each configuration ---------------------------------------- */

#define PROMPT 20

static void check_reference(const char *name, const struct ref_model *m)
{
    uint32_t V = m->c.vocab_size;
    float *logits = malloc(sizeof(float) * V * PROMPT);
    struct ref_state s;
    unsigned long long rng = 1234;
    int ok = logits && !ref_state_init(&s, m, PROMPT), finite = 1, varied = 1, moves = 0;
    for (uint32_t t = 0; ok && t < PROMPT; t++) {
        float *l = logits + (size_t)t * V;
        ok = !ref_step(m, &s, (int32_t)(test_rand(&rng) % V), l);
        float lo = l[0], hi = l[0];
        for (uint32_t v = 0; v < V; v++) {
            finite &= isfinite(l[v]) != 0;
            lo = fminf(lo, l[v]);
            hi = fmaxf(hi, l[v]);
        }
        varied &= hi - lo > 1e-3f;
        moves += t > 0 && memcmp(l, l - V, sizeof(float) * V) != 0;
    }
    CHECK(ok && finite && varied && moves == PROMPT - 1,
          "%s: the float32 reference runs %d tokens; logits finite %d, spread over the vocabulary "
          "%d, changing at %d of %d steps",
          name, PROMPT, finite, varied, moves, PROMPT - 1);
    if (logits && ok)
        ref_state_free(&s, m);
    free(logits);
}

int main(void)
{
    const char *tmp = getenv("TMPDIR");
    snprintf(root, sizeof root, "%s/test_mkmodel.XXXXXX", tmp && *tmp ? tmp : "/tmp");
    if (!mkdtemp(root)) {
        printf("FAIL cannot create a directory under %s\n", tmp && *tmp ? tmp : "/tmp");
        return 1;
    }
    const char *dir[sizeof want_cfg / sizeof want_cfg[0]];
    for (int w = 0; w < (int)(sizeof want_cfg / sizeof want_cfg[0]); w++) {
        dir[w] = dir_for(want_cfg[w].name);
        if (gen(dir[w], mkmodel_find(want_cfg[w].name), 1, 0, 0))
            continue;
        check_config(dir[w], w);
        struct ref_model m;
        int loaded;
        check_tensors(dir[w], want_cfg[w].name, &m, &loaded);
        if (loaded) {
            check_reference(want_cfg[w].name, &m);
            ref_model_free(&m);
        }
        gather_stats(dir[w]);
    }
    check_stats();
    check_determinism(dir[0]);
    check_per_expert(dir[1], "tiny-8l", 0);
    check_per_expert(dir[2], "tiny-odd", 1);
    check_failures(dir[0]);
    cleanup();
    return test_done();
}
