/* fix_convert.h — what the converter tests share: scratch directories, a safetensors writer
 * for checkpoint variants (shards, renamed, retyped, missing or extra tensors), in-process
 * conversion, and the CPU reference run over golden prompts from a weights image or straight
 * from a checkpoint.
 *
 * Variants start from a real checkpoint loaded whole (fx_load: the fixtures are a few MB),
 * are edited in memory, and written back (fx_write) with a header laid out as safetensors
 * writers do: sorted names, data back to back, JSON padded with spaces to 8 bytes. */
#ifndef FIX_CONVERT_H
#define FIX_CONVERT_H

#include <ftw.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "golden.h"
#include "ref/ref.h"
#include "ref/ref_image.h"
#include "test.h"
#include "weights/checkpoint.h"
#include "weights/convert.h"
#include "weights/safetensors.h"

#define FX_FIXTURES    "test/data/fixtures"
#define FX_MAX_TENSORS 512

/* ---- files and directories ---------------------------------------------------------------- */

static inline int fx_rm_one(const char *p, const struct stat *st, int flag, struct FTW *ftw)
{
    (void)st, (void)flag, (void)ftw;
    return remove(p);
}

/* Remove a directory tree (scratch space only). */
static inline void fx_rm_tree(const char *dir)
{
    nftw(dir, fx_rm_one, 16, FTW_DEPTH | FTW_PHYS);
}

static inline int fx_exists(const char *path)
{
    struct stat st;
    return stat(path, &st) == 0;
}

/* Neither path nor path.tmp exists: a failed conversion left nothing behind. */
static inline int fx_no_output(const char *path)
{
    char tmp[600];
    snprintf(tmp, sizeof tmp, "%s.tmp", path);
    return !fx_exists(path) && !fx_exists(tmp);
}

static inline int fx_same_bytes(const char *a, const char *b)
{
    size_t la, lb;
    char *x = test_read_file(a, &la), *y = test_read_file(b, &lb);
    int same = la == lb && !memcmp(x, y, la);
    free(x);
    free(y);
    return same;
}

static inline void fx_write_file(const char *path, const void *p, size_t n)
{
    FILE *f = fopen(path, "wb");
    if (!f || fwrite(p, 1, n, f) != n || fclose(f)) {
        printf("FAIL cannot write %s\n", path);
        exit(1);
    }
}

static inline void fx_copy_file(const char *from, const char *to)
{
    size_t n;
    char *b = test_read_file(from, &n);
    fx_write_file(to, b, n);
    free(b);
}

/* ---- checkpoint variants ------------------------------------------------------------------ */

struct fx_tensor {
    char name[160];
    uint32_t dtype, ndim;
    uint64_t shape[WT_ST_MAX_DIMS];
    uint8_t *data;
    uint64_t bytes;
    int shard; /* fx_write_sharded: which file */
    int drop;  /* left out by fx_write */
};

struct fx_ckpt {
    struct fx_tensor t[FX_MAX_TENSORS];
    uint32_t n;
};

/* Load every tensor of a safetensors file, raw bytes included. */
static inline void fx_load(struct fx_ckpt *c, const char *path)
{
    struct wt_st_file f;
    char err[WT_ST_ERR_LEN];
    memset(c, 0, sizeof *c);
    if (wt_st_open(&f, path, err) || f.n > FX_MAX_TENSORS) {
        printf("FAIL cannot load %s: %s\n", path, err);
        exit(1);
    }
    for (uint32_t i = 0; i < f.n; i++) {
        struct fx_tensor *t = &c->t[c->n++];
        snprintf(t->name, sizeof t->name, "%s", f.t[i].name);
        t->dtype = f.t[i].dtype, t->ndim = f.t[i].ndim;
        memcpy(t->shape, f.t[i].shape, sizeof t->shape);
        t->bytes = f.t[i].end - f.t[i].begin;
        t->data = malloc(t->bytes ? t->bytes : 1);
        if (!t->data || wt_st_read(&f, &f.t[i], t->data, 0, t->bytes, err)) {
            printf("FAIL cannot read %s: %s\n", path, err);
            exit(1);
        }
    }
    wt_st_close(&f);
}

static inline void fx_free(struct fx_ckpt *c)
{
    for (uint32_t i = 0; i < c->n; i++)
        free(c->t[i].data);
    c->n = 0;
}

static inline struct fx_tensor *fx_find(struct fx_ckpt *c, const char *name)
{
    for (uint32_t i = 0; i < c->n; i++)
        if (!strcmp(c->t[i].name, name))
            return &c->t[i];
    printf("FAIL fixture has no tensor %s\n", name);
    exit(1);
}

/* Add a copy of tensor `from` under a new name. */
static inline struct fx_tensor *fx_add_copy(struct fx_ckpt *c, const char *from, const char *name)
{
    struct fx_tensor *src = fx_find(c, from), *t = &c->t[c->n++];
    *t = *src;
    snprintf(t->name, sizeof t->name, "%s", name);
    t->data = malloc(src->bytes);
    memcpy(t->data, src->data, src->bytes);
    return t;
}

static inline int fx_by_name(const void *a, const void *b)
{
    return strcmp((*(const struct fx_tensor *const *)a)->name,
                  (*(const struct fx_tensor *const *)b)->name);
}

/* Write the tensors of shard `shard` (-1: all) that are not dropped to path. */
static inline void fx_write(const struct fx_ckpt *c, const char *path, int shard)
{
    static const struct fx_tensor *ord[FX_MAX_TENSORS];
    uint32_t n = 0;
    for (uint32_t i = 0; i < c->n; i++)
        if (!c->t[i].drop && (shard < 0 || c->t[i].shard == shard))
            ord[n++] = &c->t[i];
    qsort(ord, n, sizeof *ord, fx_by_name);
    size_t cap = 256 + (size_t)n * 320, len = 0;
    char *h = malloc(cap);
    uint64_t off = 0;
    len += (size_t)snprintf(h + len, cap - len, "{\"__metadata__\":{\"format\":\"pt\"}");
    for (uint32_t i = 0; i < n; i++) {
        len += (size_t)snprintf(h + len, cap - len, ",\"%s\":{\"dtype\":\"%s\",\"shape\":[",
                                ord[i]->name, wt_st_dtype_name(ord[i]->dtype));
        for (uint32_t d = 0; d < ord[i]->ndim; d++)
            len += (size_t)snprintf(h + len, cap - len, "%s%llu", d ? "," : "",
                                    (unsigned long long)ord[i]->shape[d]);
        len += (size_t)snprintf(h + len, cap - len, "],\"data_offsets\":[%llu,%llu]}",
                                (unsigned long long)off, (unsigned long long)(off + ord[i]->bytes));
        off += ord[i]->bytes;
    }
    len += (size_t)snprintf(h + len, cap - len, "}");
    while (len % 8)
        h[len++] = ' ';
    FILE *f = fopen(path, "wb");
    uint8_t hl[8];
    for (int k = 0; k < 8; k++)
        hl[k] = (uint8_t)((uint64_t)len >> (8 * k));
    int ok = f && fwrite(hl, 1, 8, f) == 8 && fwrite(h, 1, len, f) == len;
    for (uint32_t i = 0; ok && i < n; i++)
        ok = fwrite(ord[i]->data, 1, ord[i]->bytes, f) == ord[i]->bytes;
    if (!f || fclose(f) || !ok) {
        printf("FAIL cannot write %s\n", path);
        exit(1);
    }
    free(h);
}

/* model.safetensors.index.json naming each (non-dropped) tensor's shard file; entries for
 * which `lie` returns a name map there instead. */
static inline void fx_write_index(const struct fx_ckpt *c, const char *dir,
                                  const char *const *files, const char *lie_name,
                                  const char *lie_file)
{
    size_t cap = 1024 + (size_t)c->n * 256, len = 0;
    char *j = malloc(cap), path[600];
    len += (size_t)snprintf(j, cap, "{\n  \"metadata\": {\"total_size\": 0},\n  \"weight_map\": {");
    int first = 1;
    for (uint32_t i = 0; i < c->n; i++) {
        if (c->t[i].drop)
            continue;
        const char *file =
            lie_name && !strcmp(c->t[i].name, lie_name) ? lie_file : files[c->t[i].shard];
        len += (size_t)snprintf(j + len, cap - len, "%s\n    \"%s\": \"%s\"", first ? "" : ",",
                                c->t[i].name, file);
        first = 0;
    }
    len += (size_t)snprintf(j + len, cap - len, "\n  }\n}\n");
    snprintf(path, sizeof path, "%s/model.safetensors.index.json", dir);
    fx_write_file(path, j, len);
    free(j);
}

/* A fresh scratch directory; exits on failure. */
static inline void fx_mkdtemp(char *dir)
{
    if (!mkdtemp(dir)) {
        printf("FAIL cannot make a scratch directory %s\n", dir);
        exit(1);
    }
}

/* dir/name as a directory holding a copy of checkpoint src's config.json */
static inline void fx_ckpt_dir(char *out, size_t cap, const char *dir, const char *name,
                               const char *src)
{
    char a[600], b[700];
    snprintf(out, cap, "%s/%s", dir, name);
    mkdir(out, 0755);
    snprintf(a, sizeof a, "%s/config.json", src);
    snprintf(b, sizeof b, "%s/config.json", out);
    fx_copy_file(a, b);
}

/* ---- conversion --------------------------------------------------------------------------- */

/* Convert in to out in format fmt ("bf16", "int4:32", ...; lm_head bf16) with `threads`. */
static inline int fx_convert(const char *in, const char *out, const char *fmt, uint32_t threads,
                             char *err)
{
    /* fmt as --quant; a "+lm" suffix also puts lm_head in INT4 (--lm-head int4) */
    char q[32];
    const char *plus = strstr(fmt, "+lm");
    size_t n = plus ? (size_t)(plus - fmt) : strlen(fmt);
    snprintf(q, sizeof q, "%.*s", (int)(n < sizeof q ? n : sizeof q - 1), fmt);
    struct wt_conv_opts o = {.in_dir = in,
                             .out = out,
                             .threads = threads,
                             .fmt = {0, 0, plus ? PLAN_QUANT_INT4 : PLAN_QUANT_BF16}};
    if (wt_format_parse(q, &o.fmt.quant, &o.fmt.group_size)) {
        snprintf(err, WT_CONV_ERR_LEN, "bad format %s", fmt);
        return -1;
    }
    return wt_convert(&o, NULL, err);
}

/* ---- the reference over golden prompts ----------------------------------------------------- */

/* Reference weights straight from a checkpoint through wt_ck (the converter's reader). */
struct fx_ck_ctx {
    struct wt_ck ck;
    struct wt_manifest m;
};

static inline int fx_ck_get(void *ctx, const char *name, int ndim, const uint64_t *shape,
                            float *dst, char *err)
{
    struct fx_ck_ctx *x = ctx;
    int64_t i = wt_manifest_find(&x->m, name);
    char why[WT_CK_ERR_LEN];
    int same = i >= 0 && (int)x->m.t[i].ndim == ndim;
    for (int d = 0; same && d < ndim; d++)
        same = x->m.t[i].shape[d] == shape[d];
    if (!same) {
        snprintf(err, MODEL_ERR_LEN, "no tensor %s of that shape in the manifest", name);
        return -1;
    }
    if (wt_ck_read_rows(&x->ck, (uint32_t)i, 0, x->ck.src[i].rows, dst, why)) {
        snprintf(err, MODEL_ERR_LEN, "%.250s", why);
        return -1;
    }
    return 0;
}

/* Open checkpoint dir for the reference (bf16 manifest). Returns 0 or -1 with err. */
static inline int fx_ck_ctx_open(struct fx_ck_ctx *x, const char *dir, struct model_config *c,
                                 char *err)
{
    char path[600];
    struct wt_format f = {PLAN_QUANT_BF16, 0, PLAN_QUANT_BF16};
    memset(x, 0, sizeof *x);
    snprintf(path, sizeof path, "%s/config.json", dir);
    if (model_config_load(c, path, err) || wt_manifest_build(&x->m, c, &f, err))
        return -1;
    return wt_ck_open(&x->ck, dir, err) || wt_ck_bind(&x->ck, &x->m, c, err) ? -1 : 0;
}

static inline void fx_ck_ctx_close(struct fx_ck_ctx *x)
{
    wt_ck_close(&x->ck);
    wt_manifest_free(&x->m);
}

/* Positions (prefill and decode) of all golden cases together. */
static inline size_t fx_positions(const struct golden *g)
{
    size_t n = 0;
    for (uint32_t i = 0; i < g->n; i++)
        n += g->c[i].T + g->c[i].D;
    return n;
}

/* Logits (fx_positions(g), V) of the reference over every golden case: each prompt token by
 * token, then the golden fed tokens (teacher forcing). NULL on failure. */
static inline float *fx_ref_logits(const struct ref_model *m, const struct golden *g)
{
    uint32_t V = m->c.vocab_size;
    float *out = malloc(sizeof(float) * fx_positions(g) * V), *p = out;
    for (uint32_t i = 0; out && i < g->n; i++) {
        const struct golden_case *gc = &g->c[i];
        struct ref_state s;
        int ok = gc->V == V && !ref_state_init(&s, m, gc->T + gc->D);
        for (uint32_t t = 0; ok && t < gc->T + gc->D; t++, p += V)
            ok = !ref_step(m, &s, t < gc->T ? gc->prompt[t] : gc->fed[t - gc->T], p);
        if (gc->V == V)
            ref_state_free(&s, m);
        if (!ok) {
            free(out);
            return NULL;
        }
    }
    return out;
}

/* Worst per-case rel L2 of a (prefill block and each decode step) against the golden file,
 * and the positions whose argmax differs. */
static inline void fx_vs_golden(const float *a, const struct golden *g, double *worst,
                                uint32_t *misses)
{
    *worst = 0, *misses = 0;
    for (uint32_t i = 0; i < g->n; i++) {
        const struct golden_case *gc = &g->c[i];
        double e = rel_l2(a, gc->prefill, (size_t)gc->T * gc->V);
        *worst = e > *worst ? e : *worst;
        for (uint32_t t = 0; t < gc->T; t++)
            *misses += argmax(a + (size_t)t * gc->V, gc->V) !=
                       argmax(gc->prefill + (size_t)t * gc->V, gc->V);
        a += (size_t)gc->T * gc->V;
        for (uint32_t d = 0; d < gc->D; d++, a += gc->V) {
            e = rel_l2(a, gc->decode + (size_t)d * gc->V, gc->V);
            *worst = e > *worst ? e : *worst;
            *misses += argmax(a, gc->V) != argmax(gc->decode + (size_t)d * gc->V, gc->V);
        }
    }
}

#endif
