/* mkmodel_gen.c — write tiny random Qwen3.5-MoE checkpoints (see mkmodel_gen.h).
 *
 * Layout of this file: the random streams; the tensor list (names and shapes as the hub
 * checkpoint has them, MODEL.md §3 and §5); the safetensors writer, which streams one chunk
 * at a time so a full-width model never sits in memory; and mkmodel_write(), which checks
 * both files before renaming them into place.
 *
 * Why every tensor reads a stream keyed by its name: the values do not depend on which
 * tensors exist or in which order they are written, so adding an MTP head or switching to
 * per-expert tensors leaves every other weight bit-identical. */
#include "mkmodel_gen.h"

#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "../../weights/safetensors.h"

#define MK_CHUNK          (1u << 16) /* elements generated and written per step */
#define MK_PROGRESS_BYTES (1u << 20) /* tensors at least this large get a progress line */
#define MK_PATH_LEN       1024

/* ---- a growable text buffer ------------------------------------------------------------------ */

struct mk_buf {
    char *p;
    size_t len, cap;
    int oom;
};

static void put(struct mk_buf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void put(struct mk_buf *b, const char *fmt, ...)
{
    va_list ap;
    for (;;) {
        if (b->oom)
            return;
        size_t room = b->cap - b->len;
        va_start(ap, fmt);
        int n = vsnprintf(b->p ? b->p + b->len : NULL, room, fmt, ap);
        va_end(ap);
        if (n < 0) {
            b->oom = 1;
            return;
        }
        if ((size_t)n < room) {
            b->len += (size_t)n;
            return;
        }
        size_t cap = (b->cap ? 2 * b->cap : 4096) + (size_t)n;
        char *p = realloc(b->p, cap);
        if (!p) {
            b->oom = 1;
            return;
        }
        b->p = p;
        b->cap = cap;
    }
}

/* ---- random streams ------------------------------------------------------------------------- */

static uint64_t mk_mix(uint64_t z)
{
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

/* Output n of a splitmix64 generator started at state key: counter-based, so any element can
 * be drawn without drawing the ones before it. */
static uint64_t mk_draw(uint64_t key, uint64_t n)
{
    return mk_mix(key + (n + 1) * 0x9E3779B97F4A7C15ull);
}

/* A uniform double in the open interval (0, 1). */
static double mk_unit(uint64_t x)
{
    return ((double)(x >> 11) + 0.5) * 0x1p-53;
}

/* FNV-1a, continued from h. */
static uint64_t mk_fnv(uint64_t h, const char *s)
{
    for (const unsigned char *p = (const unsigned char *)s; *p; p++)
        h = (h ^ *p) * 0x100000001B3ull;
    return h;
}

/* The key of a stream: the configuration's name, the stream's name and the seed, so that two
 * configurations never share weights even where their tensor names agree. */
static uint64_t mk_key(const char *config, const char *stream, uint64_t seed)
{
    uint64_t h = mk_fnv(mk_fnv(0xCBF29CE484222325ull, config), "/");
    return mk_mix(mk_fnv(h, stream) ^ mk_mix(seed));
}

/* Box-Muller on the pair of draws (2j, 2j+1): two independent N(0, 1). */
static void mk_gauss_pair(uint64_t key, uint64_t j, double *z0, double *z1)
{
    double u1 = mk_unit(mk_draw(key, 2 * j)), u2 = mk_unit(mk_draw(key, 2 * j + 1));
    double r = sqrt(-2.0 * log(u1));
    *z0 = r * cos(2.0 * M_PI * u2);
    *z1 = r * sin(2.0 * M_PI * u2);
}

void mkmodel_values(const struct mkmodel_tensor *t, uint64_t first, uint64_t count, float *dst)
{
    uint64_t key = t->key, s0 = t->first + first;
    if (t->init == MKMODEL_INIT_LOG_UNIFORM) {
        for (uint64_t k = 0; k < count; k++)
            dst[k] = (float)log(0.01 + mk_unit(mk_draw(key, s0 + k)) * (16.0 - 0.01));
        return;
    }
    double z0 = 0, z1 = 0;
    for (uint64_t k = 0; k < count; k++) {
        uint64_t i = s0 + k; /* element i takes half (i & 1) of Box-Muller pair i / 2 */
        if (k == 0 || !(i & 1))
            mk_gauss_pair(key, i >> 1, &z0, &z1);
        dst[k] = (float)((double)t->mean + (double)t->std * ((i & 1) ? z1 : z0));
    }
}

/* ---- the tensor list ------------------------------------------------------------------------ */

/* Scales from ../shared/fixtures/README.md: embeddings N(0, 1), projections (and the router)
 * N(0, 0.035), conv taps N(0, 0.3), the (1 + w) norms N(0, 0.1), the gated norm's plain w
 * N(1, 0.1), dt_bias N(0, 1), A_log = log U(0.01, 16). */
struct mk_kind {
    uint32_t init;
    float mean, std;
    uint32_t dtype;
};
static const struct mk_kind K_EMBED = {MKMODEL_INIT_NORMAL, 0.0f, 1.0f, WT_ST_BF16};
static const struct mk_kind K_PROJ = {MKMODEL_INIT_NORMAL, 0.0f, 0.035f, WT_ST_BF16};
static const struct mk_kind K_CONV = {MKMODEL_INIT_NORMAL, 0.0f, 0.3f, WT_ST_BF16};
static const struct mk_kind K_NORM = {MKMODEL_INIT_NORMAL, 0.0f, 0.1f, WT_ST_BF16};
static const struct mk_kind K_GNORM = {MKMODEL_INIT_NORMAL, 1.0f, 0.1f, WT_ST_F32};
static const struct mk_kind K_ALOG = {MKMODEL_INIT_LOG_UNIFORM, 0.0f, 0.0f, WT_ST_F32};
static const struct mk_kind K_DTBIAS = {MKMODEL_INIT_NORMAL, 0.0f, 1.0f, WT_ST_BF16};

struct mk_list {
    struct mkmodel_tensor *t;
    size_t n, cap;
    int all_bf16;
    const char *config; /* with seed, keys every stream */
    uint64_t seed;
    char *err;
    int failed;
};

#define SHAPE(...)                                                                                 \
    (const uint64_t[]){__VA_ARGS__},                                                               \
        (uint32_t)(sizeof((uint64_t[]){__VA_ARGS__}) / sizeof(uint64_t))

/* Append a tensor named by fmt; it draws from its own stream. NULL after a failure. */
static struct mkmodel_tensor *add(struct mk_list *L, const struct mk_kind *k, const uint64_t *shape,
                                  uint32_t ndim, const char *fmt, ...)
    __attribute__((format(printf, 5, 6)));
static struct mkmodel_tensor *add(struct mk_list *L, const struct mk_kind *k, const uint64_t *shape,
                                  uint32_t ndim, const char *fmt, ...)
{
    if (L->failed)
        return NULL;
    if (L->n == L->cap) {
        size_t cap = L->cap ? 2 * L->cap : 256;
        struct mkmodel_tensor *t = realloc(L->t, cap * sizeof *t);
        if (!t) {
            snprintf(L->err, MKMODEL_ERR_LEN, "out of memory for the tensor list");
            L->failed = 1;
            return NULL;
        }
        L->t = t;
        L->cap = cap;
    }
    struct mkmodel_tensor *t = &L->t[L->n];
    memset(t, 0, sizeof *t);
    va_list ap;
    va_start(ap, fmt);
    int len = vsnprintf(t->name, sizeof t->name, fmt, ap);
    va_end(ap);
    if (len < 0 || (size_t)len >= sizeof t->name || ndim > MKMODEL_MAX_DIMS) {
        snprintf(L->err, MKMODEL_ERR_LEN, "tensor name or shape too long: %s", t->name);
        L->failed = 1;
        return NULL;
    }
    t->dtype = L->all_bf16 ? WT_ST_BF16 : k->dtype;
    t->ndim = ndim;
    memcpy(t->shape, shape, ndim * sizeof *shape);
    t->init = k->init;
    t->mean = k->mean;
    t->std = k->std;
    memcpy(t->stream, t->name, sizeof t->stream);
    t->key = mk_key(L->config, t->stream, L->seed);
    L->n++;
    return t;
}

/* Make t draw elements [first, ...) of the stream of the tensor called stream. */
static void draw_from(const struct mk_list *L, struct mkmodel_tensor *t, const char *stream,
                      uint64_t first)
{
    if (!t)
        return;
    snprintf(t->stream, sizeof t->stream, "%s", stream);
    t->key = mk_key(L->config, t->stream, L->seed);
    t->first = first;
}

/* Gated full attention: q_proj holds per head [query | gate] rows (MODEL.md §2.3). */
static void add_attention(struct mk_list *L, const struct model_config *c, const char *pre)
{
    uint64_t H = c->hidden_size, hd = c->head_dim, qd = model_q_dim(c), kvd = model_kv_dim(c);
    add(L, &K_PROJ, SHAPE(2 * qd, H), "%s.self_attn.q_proj.weight", pre);
    add(L, &K_PROJ, SHAPE(kvd, H), "%s.self_attn.k_proj.weight", pre);
    add(L, &K_PROJ, SHAPE(kvd, H), "%s.self_attn.v_proj.weight", pre);
    add(L, &K_PROJ, SHAPE(H, qd), "%s.self_attn.o_proj.weight", pre);
    add(L, &K_NORM, SHAPE(hd), "%s.self_attn.q_norm.weight", pre);
    add(L, &K_NORM, SHAPE(hd), "%s.self_attn.k_norm.weight", pre);
}

/* Gated DeltaNet (MODEL.md §2.2). */
static void add_gdn(struct mk_list *L, const struct model_config *c, const char *pre)
{
    uint64_t H = c->hidden_size, nv = c->lin_num_v_heads, cd = model_lin_conv_dim(c);
    uint64_t vd = model_lin_value_dim(c);
    add(L, &K_PROJ, SHAPE(cd, H), "%s.linear_attn.in_proj_qkv.weight", pre);
    add(L, &K_PROJ, SHAPE(vd, H), "%s.linear_attn.in_proj_z.weight", pre);
    add(L, &K_PROJ, SHAPE(nv, H), "%s.linear_attn.in_proj_b.weight", pre);
    add(L, &K_PROJ, SHAPE(nv, H), "%s.linear_attn.in_proj_a.weight", pre);
    add(L, &K_CONV, SHAPE(cd, 1, c->conv_kernel), "%s.linear_attn.conv1d.weight", pre);
    add(L, &K_DTBIAS, SHAPE(nv), "%s.linear_attn.dt_bias", pre);
    add(L, &K_ALOG, SHAPE(nv), "%s.linear_attn.A_log", pre);
    add(L, &K_GNORM, SHAPE(c->lin_v_head_dim), "%s.linear_attn.norm.weight", pre);
    add(L, &K_PROJ, SHAPE(H, vd), "%s.linear_attn.out_proj.weight", pre);
}

/* Router, routed experts (fused 3-D, or per expert reading slices of the fused streams:
 * gate rows 0..I-1 then up rows I..2I-1 of gate_up_proj[e]), shared expert and its gate. */
static void add_moe(struct mk_list *L, const struct model_config *c, const char *pre,
                    int per_expert)
{
    uint64_t H = c->hidden_size, E = c->num_experts, I = c->moe_inter, S = c->shared_inter;
    char gu[MKMODEL_NAME_LEN], dn[MKMODEL_NAME_LEN];
    snprintf(gu, sizeof gu, "%s.mlp.experts.gate_up_proj", pre);
    snprintf(dn, sizeof dn, "%s.mlp.experts.down_proj", pre);
    add(L, &K_PROJ, SHAPE(E, H), "%s.mlp.gate.weight", pre);
    if (!per_expert) {
        add(L, &K_PROJ, SHAPE(E, 2 * I, H), "%s", gu);
        add(L, &K_PROJ, SHAPE(E, H, I), "%s", dn);
    }
    for (uint64_t e = 0; per_expert && e < E; e++) {
        unsigned long long ue = (unsigned long long)e;
        draw_from(L, add(L, &K_PROJ, SHAPE(I, H), "%s.mlp.experts.%llu.gate_proj.weight", pre, ue),
                  gu, e * 2 * I * H);
        draw_from(L, add(L, &K_PROJ, SHAPE(I, H), "%s.mlp.experts.%llu.up_proj.weight", pre, ue),
                  gu, e * 2 * I * H + I * H);
        draw_from(L, add(L, &K_PROJ, SHAPE(H, I), "%s.mlp.experts.%llu.down_proj.weight", pre, ue),
                  dn, e * H * I);
    }
    if (S) {
        add(L, &K_PROJ, SHAPE(S, H), "%s.mlp.shared_expert.gate_proj.weight", pre);
        add(L, &K_PROJ, SHAPE(S, H), "%s.mlp.shared_expert.up_proj.weight", pre);
        add(L, &K_PROJ, SHAPE(H, S), "%s.mlp.shared_expert.down_proj.weight", pre);
        add(L, &K_PROJ, SHAPE(1, H), "%s.mlp.shared_expert_gate.weight", pre);
    }
}

static void add_layer(struct mk_list *L, const struct model_config *c, const char *pre, int type,
                      int per_expert)
{
    uint64_t H = c->hidden_size;
    add(L, &K_NORM, SHAPE(H), "%s.input_layernorm.weight", pre);
    add(L, &K_NORM, SHAPE(H), "%s.post_attention_layernorm.weight", pre);
    if (type == MODEL_LAYER_FULL)
        add_attention(L, c, pre);
    else
        add_gdn(L, c, pre);
    add_moe(L, c, pre, per_expert);
}

/* The vision tower of one block, shaped by the vision_config that config.json carries. */
static void add_visual(struct mk_list *L, const struct model_config *c)
{
    const uint64_t h = MKMODEL_VIS_HIDDEN, f = MKMODEL_VIS_INTER,
                   m = MKMODEL_VIS_HIDDEN * MKMODEL_VIS_MERGE * MKMODEL_VIS_MERGE;
    const char *v = "model.visual";
    add(L, &K_PROJ,
        SHAPE(h, MKMODEL_VIS_IN, MKMODEL_VIS_TPATCH, MKMODEL_VIS_PATCH, MKMODEL_VIS_PATCH),
        "%s.patch_embed.proj.weight", v);
    add(L, &K_PROJ, SHAPE(h), "%s.patch_embed.proj.bias", v);
    add(L, &K_PROJ, SHAPE(MKMODEL_VIS_POS, h), "%s.pos_embed.weight", v);
    for (int b = 0; b < MKMODEL_VIS_DEPTH; b++) {
        add(L, &K_NORM, SHAPE(h), "%s.blocks.%d.norm1.weight", v, b);
        add(L, &K_NORM, SHAPE(h), "%s.blocks.%d.norm1.bias", v, b);
        add(L, &K_NORM, SHAPE(h), "%s.blocks.%d.norm2.weight", v, b);
        add(L, &K_NORM, SHAPE(h), "%s.blocks.%d.norm2.bias", v, b);
        add(L, &K_PROJ, SHAPE(3 * h, h), "%s.blocks.%d.attn.qkv.weight", v, b);
        add(L, &K_PROJ, SHAPE(3 * h), "%s.blocks.%d.attn.qkv.bias", v, b);
        add(L, &K_PROJ, SHAPE(h, h), "%s.blocks.%d.attn.proj.weight", v, b);
        add(L, &K_PROJ, SHAPE(h), "%s.blocks.%d.attn.proj.bias", v, b);
        add(L, &K_PROJ, SHAPE(f, h), "%s.blocks.%d.mlp.linear_fc1.weight", v, b);
        add(L, &K_PROJ, SHAPE(f), "%s.blocks.%d.mlp.linear_fc1.bias", v, b);
        add(L, &K_PROJ, SHAPE(h, f), "%s.blocks.%d.mlp.linear_fc2.weight", v, b);
        add(L, &K_PROJ, SHAPE(h), "%s.blocks.%d.mlp.linear_fc2.bias", v, b);
    }
    add(L, &K_NORM, SHAPE(h), "%s.merger.norm.weight", v);
    add(L, &K_NORM, SHAPE(h), "%s.merger.norm.bias", v);
    add(L, &K_PROJ, SHAPE(m, m), "%s.merger.linear_fc1.weight", v);
    add(L, &K_PROJ, SHAPE(m), "%s.merger.linear_fc1.bias", v);
    add(L, &K_PROJ, SHAPE(c->hidden_size, m), "%s.merger.linear_fc2.weight", v);
    add(L, &K_PROJ, SHAPE(c->hidden_size), "%s.merger.linear_fc2.bias", v);
}

/* MTP head (MODEL.md §5): fc over [embedding ; hidden], two input norms, one full-attention
 * decoder layer with a full MoE, a final norm. */
static void add_mtp(struct mk_list *L, const struct model_config *c, int per_expert)
{
    uint64_t H = c->hidden_size;
    add(L, &K_PROJ, SHAPE(H, 2 * H), "mtp.fc.weight");
    add(L, &K_NORM, SHAPE(H), "mtp.pre_fc_norm_embedding.weight");
    add(L, &K_NORM, SHAPE(H), "mtp.pre_fc_norm_hidden.weight");
    for (uint32_t l = 0; l < c->mtp_layers; l++) {
        char pre[32];
        snprintf(pre, sizeof pre, "mtp.layers.%u", l);
        add_layer(L, c, pre, MODEL_LAYER_FULL, per_expert);
    }
    add(L, &K_NORM, SHAPE(H), "mtp.norm.weight");
}

static int by_name(const void *a, const void *b)
{
    return strcmp(((const struct mkmodel_tensor *)a)->name,
                  ((const struct mkmodel_tensor *)b)->name);
}

/* Sort by name, refuse duplicates, and lay the data out in that order, back to back (the
 * format allows no gaps), checking each tensor starts on a multiple of its element size. */
static int layout(struct mk_list *L)
{
    qsort(L->t, L->n, sizeof *L->t, by_name);
    uint64_t off = 0;
    for (size_t i = 0; i < L->n; i++) {
        struct mkmodel_tensor *t = &L->t[i];
        uint64_t esz = wt_st_dtype_size(t->dtype), n = 1;
        if (i && !strcmp(t->name, L->t[i - 1].name)) {
            snprintf(L->err, MKMODEL_ERR_LEN, "tensor %s is listed twice", t->name);
            return -1;
        }
        if (off % esz) {
            snprintf(L->err, MKMODEL_ERR_LEN,
                     "tensor %s would start at data byte %llu, not a multiple of its %llu-byte "
                     "elements: the sizes before it need an even element count",
                     t->name, (unsigned long long)off, (unsigned long long)esz);
            return -1;
        }
        for (uint32_t d = 0; d < t->ndim; d++)
            n *= t->shape[d];
        t->begin = off;
        off += n * esz;
    }
    return 0;
}

int mkmodel_tensors(const struct mkmodel_spec *s, const struct mkmodel_opts *o,
                    struct mkmodel_tensor **out, size_t *n, char *err)
{
    struct model_config c;
    struct mk_list L = {.all_bf16 = o->all_bf16, .config = s->name, .seed = o->seed, .err = err};
    mkmodel_config(s, &c);
    uint64_t H = c.hidden_size, V = c.vocab_size;
    add(&L, &K_EMBED, SHAPE(V, H), "model.language_model.embed_tokens.weight");
    add(&L, &K_NORM, SHAPE(H), "model.language_model.norm.weight");
    add(&L, &K_PROJ, SHAPE(V, H), "lm_head.weight");
    for (uint32_t l = 0; l < c.num_layers; l++) {
        char pre[48];
        snprintf(pre, sizeof pre, "model.language_model.layers.%u", l);
        add_layer(&L, &c, pre, c.layer_types[l], o->per_expert);
    }
    add_visual(&L, &c);
    if (c.mtp_layers)
        add_mtp(&L, &c, o->per_expert);
    if (L.failed || layout(&L)) {
        free(L.t);
        return -1;
    }
    *out = L.t;
    *n = L.n;
    return 0;
}

/* ---- safetensors ---------------------------------------------------------------------------- */

static uint64_t numel(const struct mkmodel_tensor *t)
{
    uint64_t n = 1;
    for (uint32_t d = 0; d < t->ndim; d++)
        n *= t->shape[d];
    return n;
}

/* Round to nearest even; the inputs are finite. */
static uint16_t to_bf16(float f)
{
    uint32_t u;
    memcpy(&u, &f, sizeof u);
    u += 0x7FFFu + ((u >> 16) & 1u);
    return (uint16_t)(u >> 16);
}

/* The JSON header, padded with spaces so the data starts on an 8-byte boundary. */
static int build_header(const struct mkmodel_tensor *t, size_t n, struct mk_buf *b)
{
    put(b, "{\"__metadata__\":{\"format\":\"pt\"}");
    for (size_t i = 0; i < n; i++) {
        put(b, ",\"%s\":{\"dtype\":\"%s\",\"shape\":[", t[i].name, wt_st_dtype_name(t[i].dtype));
        for (uint32_t d = 0; d < t[i].ndim; d++)
            put(b, "%s%llu", d ? "," : "", (unsigned long long)t[i].shape[d]);
        uint64_t end = t[i].begin + numel(&t[i]) * wt_st_dtype_size(t[i].dtype);
        put(b, "],\"data_offsets\":[%llu,%llu]}", (unsigned long long)t[i].begin,
            (unsigned long long)end);
    }
    put(b, "}");
    while (!b->oom && (8 + b->len) % 8)
        put(b, " ");
    return b->oom ? -1 : 0;
}

/* Generate tensor t chunk by chunk and append its bytes to f. */
static int write_tensor(FILE *f, const struct mkmodel_tensor *t, float *vals, uint16_t *half)
{
    uint64_t n = numel(t);
    for (uint64_t off = 0; off < n; off += MK_CHUNK) {
        uint64_t cnt = n - off < MK_CHUNK ? n - off : MK_CHUNK;
        mkmodel_values(t, off, cnt, vals);
        size_t wrote;
        if (t->dtype == WT_ST_F32) {
            wrote = fwrite(vals, sizeof *vals, cnt, f);
        } else {
            for (uint64_t k = 0; k < cnt; k++)
                half[k] = to_bf16(vals[k]);
            wrote = fwrite(half, sizeof *half, cnt, f);
        }
        if (wrote != cnt)
            return -1;
    }
    return 0;
}

static void progress_line(FILE *p, size_t i, size_t n, const struct mkmodel_tensor *t)
{
    uint64_t bytes = numel(t) * wt_st_dtype_size(t->dtype);
    if (!p || bytes < MK_PROGRESS_BYTES)
        return;
    char shape[96];
    size_t k = 0;
    for (uint32_t d = 0; d < t->ndim && k < sizeof shape; d++)
        k += (size_t)snprintf(shape + k, sizeof shape - k, "%s%llu", d ? ", " : "[",
                              (unsigned long long)t->shape[d]);
    fprintf(p, "  [%3zu/%zu] %-58s %-4s %s] %7.1f MiB\n", i + 1, n, t->name,
            wt_st_dtype_name(t->dtype), shape, (double)bytes / (1 << 20));
    fflush(p);
}

/* Write the whole file at path; *data_bytes gets the size of the data section. */
static int write_safetensors(const char *path, const struct mkmodel_tensor *t, size_t n,
                             const struct mkmodel_opts *o, uint64_t *data_bytes, char *err)
{
    struct mk_buf hdr = {0};
    float *vals = malloc(MK_CHUNK * sizeof *vals);
    uint16_t *half = malloc(MK_CHUNK * sizeof *half);
    FILE *f = NULL;
    int rc = -1;
    if (!vals || !half || build_header(t, n, &hdr)) {
        snprintf(err, MKMODEL_ERR_LEN, "out of memory");
        goto out;
    }
    f = fopen(path, "wb");
    if (!f) {
        snprintf(err, MKMODEL_ERR_LEN, "%s: cannot create: %s", path, strerror(errno));
        goto out;
    }
    uint64_t hlen = hdr.len; /* little-endian u64, as the format and this host have it */
    if (fwrite(&hlen, sizeof hlen, 1, f) != 1 || fwrite(hdr.p, 1, hdr.len, f) != hdr.len)
        goto io;
    for (size_t i = 0; i < n; i++) {
        progress_line(o->progress, i, n, &t[i]);
        if (write_tensor(f, &t[i], vals, half))
            goto io;
    }
    *data_bytes = n ? t[n - 1].begin + numel(&t[n - 1]) * wt_st_dtype_size(t[n - 1].dtype) : 0;
    FILE *g = f;
    f = NULL;
    if (fclose(g))
        goto io;
    rc = 0;
    goto out;
io:
    snprintf(err, MKMODEL_ERR_LEN, "%s: write failed: %s", path, strerror(errno));
out:
    if (f)
        fclose(f);
    free(hdr.p);
    free(vals);
    free(half);
    return rc;
}

/* ---- checking what was written --------------------------------------------------------------- */

/* The file must hold exactly the tensors listed, each with its dtype, shape and extent. */
static int check_safetensors(const char *path, const struct mkmodel_tensor *t, size_t n,
                             uint64_t data_bytes, char *err)
{
    struct wt_st_file f;
    char why[WT_ST_ERR_LEN];
    if (wt_st_open(&f, path, why)) {
        snprintf(err, MKMODEL_ERR_LEN, "re-reading the written file: %s", why);
        return -1;
    }
    int rc = 0;
    if (f.n != n || f.file_size != f.data_start + data_bytes || f.data_start % 8) {
        snprintf(err, MKMODEL_ERR_LEN, "%s: %u tensors and %llu bytes read back, %zu written", path,
                 f.n, (unsigned long long)f.file_size, n);
        rc = -1;
    }
    for (size_t i = 0; i < n && !rc; i++) {
        const struct wt_st_tensor *r = wt_st_find(&f, t[i].name);
        int same = r && r->dtype == t[i].dtype && r->ndim == t[i].ndim && r->begin == t[i].begin &&
                   r->end == t[i].begin + numel(&t[i]) * wt_st_dtype_size(t[i].dtype);
        for (uint32_t d = 0; same && d < t[i].ndim; d++)
            same = r->shape[d] == t[i].shape[d];
        if (!same) {
            snprintf(err, MKMODEL_ERR_LEN, "%s: tensor %s %s on reading back", path, t[i].name,
                     r ? "differs in dtype, shape or extent" : "is missing");
            rc = -1;
        }
    }
    wt_st_close(&f);
    return rc;
}

/* Write config.json to path and read it back: it must give exactly mkmodel_config(s). */
static int write_config(const char *path, const struct mkmodel_spec *s, char *err)
{
    char json[16384];
    char why[MODEL_ERR_LEN];
    const char *what = "";
    struct model_config want, got;
    int len = mkmodel_config_json(s, json, sizeof json);
    FILE *f = len < 0 ? NULL : fopen(path, "wb");
    if (!f) {
        snprintf(err, MKMODEL_ERR_LEN, "%s: cannot create: %s", path,
                 len < 0 ? "config too long" : strerror(errno));
        return -1;
    }
    int bad = fwrite(json, 1, (size_t)len, f) != (size_t)len;
    if (fclose(f) || bad) {
        snprintf(err, MKMODEL_ERR_LEN, "%s: write failed: %s", path, strerror(errno));
        return -1;
    }
    mkmodel_config(s, &want);
    if (model_config_load(&got, path, why)) {
        snprintf(err, MKMODEL_ERR_LEN, "config %s does not read back: %s", s->name, why);
        return -1;
    }
    if (!model_config_equal(&got, &want, &what)) {
        snprintf(err, MKMODEL_ERR_LEN, "config %s reads back with another %s", s->name, what);
        return -1;
    }
    return 0;
}

static int join_path(char *out, const char *dir, const char *name, char *err)
{
    int n = snprintf(out, MK_PATH_LEN, "%s/%s", dir, name);
    if (n < 0 || n >= MK_PATH_LEN) {
        snprintf(err, MKMODEL_ERR_LEN, "output path too long: %s", dir);
        return -1;
    }
    return 0;
}

int mkmodel_write(const char *dir, const struct mkmodel_spec *s, const struct mkmodel_opts *o,
                  char *err)
{
    char cfg[MK_PATH_LEN], cfg_tmp[MK_PATH_LEN], st[MK_PATH_LEN], st_tmp[MK_PATH_LEN];
    struct mkmodel_tensor *t = NULL;
    size_t n = 0;
    uint64_t data_bytes = 0;
    int made_dir = 0, rc = -1;
    if (join_path(cfg, dir, "config.json", err) ||
        join_path(cfg_tmp, dir, "config.json.tmp", err) ||
        join_path(st, dir, "model.safetensors", err) ||
        join_path(st_tmp, dir, "model.safetensors.tmp", err))
        return -1;
    if (mkdir(dir, 0777) == 0)
        made_dir = 1;
    else if (errno != EEXIST) {
        snprintf(err, MKMODEL_ERR_LEN,
                 "%s: cannot create the directory (its parent must exist): %s", dir,
                 strerror(errno));
        return -1;
    }
    if (write_config(cfg_tmp, s, err) || mkmodel_tensors(s, o, &t, &n, err) ||
        write_safetensors(st_tmp, t, n, o, &data_bytes, err) ||
        check_safetensors(st_tmp, t, n, data_bytes, err))
        goto out;
    if (rename(st_tmp, st) || rename(cfg_tmp, cfg)) {
        snprintf(err, MKMODEL_ERR_LEN, "%s: cannot rename the written files into place: %s", dir,
                 strerror(errno));
        goto out;
    }
    if (o->progress)
        fprintf(o->progress, "%s: %s, seed %llu, %zu tensors (%s%s), %.1f MiB of weights\n", dir,
                s->name, (unsigned long long)o->seed, n,
                o->per_expert ? "per-expert tensors" : "fused experts",
                o->all_bf16 ? ", all BF16" : "", (double)data_bytes / (1 << 20));
    rc = 0;
out:
    if (rc) { /* leave DIR as it was */
        unlink(cfg_tmp);
        unlink(st_tmp);
        if (made_dir)
            rmdir(dir);
    }
    free(t);
    return rc;
}
