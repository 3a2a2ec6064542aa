/* config.c — read a Hugging Face config.json into struct model_config (see model.h).
 *
 * The file is the one place the model shape enters the system, so the reader is strict: it
 * accepts only qwen3_5_moe (text settings under text_config) or a bare qwen3_5_moe_text
 * config, only JSON integers where HF stores integers (2048.0 and "2048" are refused: a
 * converter that writes them has a bug worth hearing about), and refuses any rope scaling
 * other than the plain one, which this runtime implements. Unknown keys are ignored, since
 * configs carry many that matter only to training or to the vision tower. For an optional
 * key, null means absent, as it does to transformers. Older files may hold the rope settings
 * under the legacy name rope_scaling (and rope_theta / partial_rotary_factor flat in the text
 * config); those are read too, but a file giving both rope objects is refused rather than
 * guessed at.
 *
 * Every message starts with the JSON path of the field ("text_config.head_dim: ..."), so a
 * user can find it in the file. Cross-field rules with no single JSON home (heads that
 * divide, ranges) are left to model_config_check(), whose message is prefixed with
 * "text_config: " when the settings were nested. */
#include "json.h"
#include "model.h"

#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define CFG_MAX_VALUES       (1u << 20)  /* a real config has a few hundred values */
#define CFG_MAX_FILE         (64u << 20) /* refuse to read anything this large as a config */
#define CFG_DEFAULT_INTERVAL 4           /* full_attention_interval when the file has none */

struct cfg {
    const struct json_doc *d;
    uint32_t top;    /* the top-level object */
    uint32_t tc;     /* the object holding the text settings (top itself for a bare config) */
    const char *pre; /* JSON path prefix of tc: "text_config." or "" */
    char *err;
};

static int cfg_fail(struct cfg *r, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static int cfg_fail(struct cfg *r, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(r->err, MODEL_ERR_LEN, fmt, ap);
    va_end(ap);
    return -1;
}

/* A short printable form of string value i for messages: control and non-ASCII bytes
 * become '?', long strings are cut. */
static const char *show_str(const struct json_doc *d, uint32_t i, char buf[48])
{
    size_t n;
    if (json_string_len(d, i) >= 40 || json_string(d, i, buf, 48, &n))
        return "(a long string)";
    for (size_t k = 0; k < n; k++)
        if ((unsigned char)buf[k] < 0x20 || (unsigned char)buf[k] >= 0x7F)
            buf[k] = '?';
    return buf;
}

/* The value of key in obj, or -1 when it is absent or (for optional keys) null. */
static int64_t cfg_opt(struct cfg *r, uint32_t obj, const char *key)
{
    int64_t i = json_get(r->d, obj, key);
    if (i >= 0 && r->d->v[i].type == JSON_NULL)
        return -1;
    return i;
}

static int type_fail(struct cfg *r, const char *pre, const char *key, const char *want, int64_t i)
{
    return cfg_fail(r, "%s%s: expected %s, got %s", pre, key, want,
                    json_type_name(r->d->v[i].type));
}

/* Read an integer in [lo, hi] at value i. A number with a fraction or exponent is a type
 * error; an integer too large for int64 is a range error. */
static int read_int_at(struct cfg *r, int64_t i, const char *pre, const char *key, int64_t lo,
                       int64_t hi, int64_t *out)
{
    const struct json_value *v = &r->d->v[i];
    if (v->type != JSON_NUMBER)
        return type_fail(r, pre, key, "an integer", i);
    const char *s = r->d->text + v->start;
    int n = v->len > 40 ? 40 : (int)v->len;
    if (memchr(s, '.', v->len) || memchr(s, 'e', v->len) || memchr(s, 'E', v->len))
        return cfg_fail(r, "%s%s: expected an integer, got %.*s", pre, key, n, s);
    if (json_i64(r->d, (uint32_t)i, out) || *out < lo || *out > hi)
        return cfg_fail(r, "%s%s: %.*s is out of range [%lld, %lld]", pre, key, n, s, (long long)lo,
                        (long long)hi);
    return 0;
}

/* A required field is absent: say so, or name null as the wrong type when it is there. */
static int missing(struct cfg *r, uint32_t obj, const char *pre, const char *key, const char *want)
{
    int64_t i = json_get(r->d, obj, key);
    if (i >= 0)
        return type_fail(r, pre, key, want, i);
    return cfg_fail(r, "%s%s: required field is missing", pre, key);
}

/* Optional integer: 1 if present (stored in *out), 0 if absent, -1 on error. */
static int opt_int(struct cfg *r, uint32_t obj, const char *pre, const char *key, int64_t lo,
                   int64_t hi, int64_t *out)
{
    int64_t i = cfg_opt(r, obj, key);
    if (i < 0)
        return 0;
    return read_int_at(r, i, pre, key, lo, hi, out) ? -1 : 1;
}

static int opt_num(struct cfg *r, uint32_t obj, const char *pre, const char *key, double *out)
{
    int64_t i = cfg_opt(r, obj, key);
    if (i < 0)
        return 0;
    if (r->d->v[i].type != JSON_NUMBER)
        return type_fail(r, pre, key, "a number", i);
    if (json_f64(r->d, (uint32_t)i, out) || !isfinite(*out))
        return cfg_fail(r, "%s%s: number out of range", pre, key);
    return 1;
}

static int opt_bool(struct cfg *r, uint32_t obj, const char *pre, const char *key, int *out)
{
    int64_t i = cfg_opt(r, obj, key);
    if (i < 0)
        return 0;
    if (json_bool(r->d, (uint32_t)i, out))
        return type_fail(r, pre, key, "a boolean", i);
    return 1;
}

/* Optional string that must equal want when present. */
static int opt_str_is(struct cfg *r, uint32_t obj, const char *pre, const char *key,
                      const char *want)
{
    char buf[48];
    int64_t i = cfg_opt(r, obj, key);
    if (i < 0)
        return 0;
    if (r->d->v[i].type != JSON_STRING)
        return type_fail(r, pre, key, "a string", i);
    if (!json_string_eq(r->d, (uint32_t)i, want))
        return cfg_fail(r, "%s%s \"%s\" is not supported (expected \"%s\")", pre, key,
                        show_str(r->d, (uint32_t)i, buf), want);
    return 1;
}

/* Optional object (null counts as absent): its index, -1 if absent, -2 on error. */
static int64_t opt_obj(struct cfg *r, uint32_t obj, const char *pre, const char *key)
{
    int64_t i = cfg_opt(r, obj, key);
    if (i >= 0 && r->d->v[i].type != JSON_OBJECT)
        return type_fail(r, pre, key, "an object", i) - 1;
    return i;
}

/* ---- model type -------------------------------------------------------------------------- */

/* Find the object holding the text settings and the path prefix that names it. */
static int find_text_config(struct cfg *r)
{
    char buf[48];
    int64_t mt = json_get(r->d, r->top, "model_type");
    if (mt < 0)
        return cfg_fail(r, "model_type: required field is missing");
    if (r->d->v[mt].type != JSON_STRING)
        return type_fail(r, "", "model_type", "a string", mt);
    if (json_string_eq(r->d, (uint32_t)mt, "qwen3_5_moe_text")) {
        r->tc = r->top;
        r->pre = "";
        return 0;
    }
    if (!json_string_eq(r->d, (uint32_t)mt, "qwen3_5_moe"))
        return cfg_fail(r,
                        "model_type \"%s\" is not supported (expected \"qwen3_5_moe\" or "
                        "\"qwen3_5_moe_text\")",
                        show_str(r->d, (uint32_t)mt, buf));
    int64_t tc = opt_obj(r, r->top, "", "text_config");
    if (tc == -2)
        return -1;
    if (tc < 0)
        return cfg_fail(r, "text_config: required field is missing (model_type \"qwen3_5_moe\" "
                           "keeps the text settings there)");
    r->tc = (uint32_t)tc;
    r->pre = "text_config.";
    return opt_str_is(r, r->tc, r->pre, "model_type", "qwen3_5_moe_text") < 0 ? -1 : 0;
}

/* ---- sizes --------------------------------------------------------------------------------- */

static int read_sizes(struct cfg *r, struct model_config *c)
{
    static const struct {
        const char *key;
        size_t off;
        int64_t lo;
    } f[] = {
        {"hidden_size", offsetof(struct model_config, hidden_size), 1},
        {"num_hidden_layers", offsetof(struct model_config, num_layers), 1},
        {"vocab_size", offsetof(struct model_config, vocab_size), 1},
        {"num_attention_heads", offsetof(struct model_config, num_heads), 1},
        {"num_key_value_heads", offsetof(struct model_config, num_kv_heads), 1},
        {"head_dim", offsetof(struct model_config, head_dim), 1},
        {"linear_num_key_heads", offsetof(struct model_config, lin_num_k_heads), 1},
        {"linear_num_value_heads", offsetof(struct model_config, lin_num_v_heads), 1},
        {"linear_key_head_dim", offsetof(struct model_config, lin_k_head_dim), 1},
        {"linear_value_head_dim", offsetof(struct model_config, lin_v_head_dim), 1},
        {"linear_conv_kernel_dim", offsetof(struct model_config, conv_kernel), 1},
        {"num_experts", offsetof(struct model_config, num_experts), 1},
        {"num_experts_per_tok", offsetof(struct model_config, num_experts_per_tok), 1},
        {"moe_intermediate_size", offsetof(struct model_config, moe_inter), 1},
        {"shared_expert_intermediate_size", offsetof(struct model_config, shared_inter), 0},
        {"max_position_embeddings", offsetof(struct model_config, max_position), 1},
    };
    int64_t v;
    for (size_t k = 0; k < sizeof f / sizeof f[0]; k++) {
        int got = opt_int(r, r->tc, r->pre, f[k].key, f[k].lo, UINT32_MAX, &v);
        if (got < 0)
            return -1;
        if (!got)
            return missing(r, r->tc, r->pre, f[k].key, "an integer");
        uint32_t u = (uint32_t)v;
        memcpy((char *)c + f[k].off, &u, sizeof u);
    }
    if (c->num_layers > MODEL_MAX_LAYERS)
        return cfg_fail(r, "%snum_hidden_layers: %u layers exceed the limit of %d", r->pre,
                        c->num_layers, MODEL_MAX_LAYERS);
    if (c->num_experts_per_tok > c->num_experts)
        return cfg_fail(r, "%snum_experts_per_tok: %u is more than num_experts = %u", r->pre,
                        c->num_experts_per_tok, c->num_experts);
    double eps;
    int got = opt_num(r, r->tc, r->pre, "rms_norm_eps", &eps);
    if (got < 0)
        return -1;
    if (!got)
        return missing(r, r->tc, r->pre, "rms_norm_eps", "a number");
    if (!(eps > 0))
        return cfg_fail(r, "%srms_norm_eps: %g must be positive", r->pre, eps);
    c->rms_norm_eps = (float)eps;
    return 0;
}

/* ---- layer types --------------------------------------------------------------------------- */

static int read_layer_types(struct cfg *r, struct model_config *c)
{
    const struct json_doc *d = r->d;
    char buf[48];
    int64_t lt = cfg_opt(r, r->tc, "layer_types");
    if (lt < 0) {
        /* HF builds the list the same way when the file has none */
        int64_t interval = CFG_DEFAULT_INTERVAL;
        if (opt_int(r, r->tc, r->pre, "full_attention_interval", 1, UINT32_MAX, &interval) < 0)
            return -1;
        for (uint32_t i = 0; i < c->num_layers; i++)
            c->layer_types[i] = (i + 1) % interval == 0 ? MODEL_LAYER_FULL : MODEL_LAYER_LINEAR;
        return 0;
    }
    if (d->v[lt].type != JSON_ARRAY)
        return type_fail(r, r->pre, "layer_types", "an array", lt);
    if (d->v[lt].count != c->num_layers)
        return cfg_fail(r, "%slayer_types has %u entries but num_hidden_layers is %u", r->pre,
                        d->v[lt].count, c->num_layers);
    uint32_t i = json_first(d, (uint32_t)lt);
    for (uint32_t k = 0; k < c->num_layers; k++, i = json_next(d, i)) {
        if (d->v[i].type != JSON_STRING)
            return cfg_fail(r, "%slayer_types[%u]: expected a string, got %s", r->pre, k,
                            json_type_name(d->v[i].type));
        if (json_string_eq(d, i, "linear_attention"))
            c->layer_types[k] = MODEL_LAYER_LINEAR;
        else if (json_string_eq(d, i, "full_attention"))
            c->layer_types[k] = MODEL_LAYER_FULL;
        else
            return cfg_fail(r,
                            "%slayer_types[%u]: unknown layer type \"%s\" (expected "
                            "\"linear_attention\" or \"full_attention\")",
                            r->pre, k, show_str(d, i, buf));
    }
    return 0;
}

/* ---- rotary embedding ---------------------------------------------------------------------- */

/* A rope number that lives in the rope object and, in older files, flat in the text config.
 * Either place will do; both must agree. *where gets the path prefix it was read from. */
static int rope_num(struct cfg *r, int64_t rp, const char *rp_pre, const char *key, double *out,
                    const char **where)
{
    double a = 0, b = 0;
    int ga = rp >= 0 ? opt_num(r, (uint32_t)rp, rp_pre, key, &a) : 0;
    if (ga < 0)
        return -1;
    int gb = opt_num(r, r->tc, r->pre, key, &b);
    if (gb < 0)
        return -1;
    if (ga && gb && a != b)
        return cfg_fail(r, "%s%s = %g and %s%s = %g differ", rp_pre, key, a, r->pre, key, b);
    if (!ga && !gb)
        return cfg_fail(r, "%s%s: required field is missing (nor is there a %s%s)", rp_pre, key,
                        r->pre, key);
    *out = ga ? a : b;
    *where = ga ? rp_pre : r->pre;
    return 0;
}

/* mrope_section: three integers that split the rotary frequencies between the temporal,
 * height and width position rows. Text positions make all three rows equal, so only the sum
 * matters here, but it must be right for the weights to mean what they say. */
static int read_mrope(struct cfg *r, struct model_config *c, int64_t rp, const char *rp_pre)
{
    const struct json_doc *d = r->d;
    uint32_t half = c->rotary_dim / 2;
    int inter = 0;
    int64_t ms = rp >= 0 ? cfg_opt(r, (uint32_t)rp, "mrope_section") : -1;
    if (rp >= 0 && opt_bool(r, (uint32_t)rp, rp_pre, "mrope_interleaved", &inter) < 0)
        return -1;
    if (ms < 0) {
        c->mrope_section[0] = half; /* plain RoPE: every frequency follows the one position */
        return 0;
    }
    if (d->v[ms].type != JSON_ARRAY || d->v[ms].count != 3)
        return cfg_fail(r, "%smrope_section: expected an array of 3 integers", rp_pre);
    uint64_t sum = 0;
    uint32_t i = json_first(d, (uint32_t)ms);
    for (uint32_t k = 0; k < 3; k++, i = json_next(d, i)) {
        int64_t v;
        if (read_int_at(r, i, rp_pre, "mrope_section", 0, UINT32_MAX, &v))
            return -1;
        c->mrope_section[k] = (uint32_t)v;
        sum += (uint64_t)v;
    }
    if (sum != half)
        return cfg_fail(r, "%smrope_section sums to %llu but rotary_dim / 2 is %u", rp_pre,
                        (unsigned long long)sum, half);
    c->mrope_interleaved = (uint32_t)inter;
    return 0;
}

static int read_rope(struct cfg *r, struct model_config *c)
{
    char rp_pre[48], rs_pre[48];
    const char *where;
    double theta, prf;
    snprintf(rp_pre, sizeof rp_pre, "%srope_parameters.", r->pre);
    snprintf(rs_pre, sizeof rs_pre, "%srope_scaling.", r->pre);
    int64_t rp = opt_obj(r, r->tc, r->pre, "rope_parameters");
    int64_t rs = opt_obj(r, r->tc, r->pre, "rope_scaling");
    if (rp == -2 || rs == -2)
        return -1;
    /* transformers 5 reads the legacy name rope_scaling as rope_parameters */
    if (rp >= 0 && rs >= 0)
        return cfg_fail(r, "%srope_scaling: give rope_parameters or rope_scaling, not both",
                        r->pre);
    const char *pp = rp_pre;
    if (rs >= 0) {
        rp = rs;
        pp = rs_pre;
    }
    /* "type" is the pre-transformers-5 spelling of rope_type; a yarn under either name
     * would silently stretch positions if it were ignored */
    if (rp >= 0 && (opt_str_is(r, (uint32_t)rp, pp, "rope_type", "default") < 0 ||
                    opt_str_is(r, (uint32_t)rp, pp, "type", "default") < 0))
        return -1;
    if (rope_num(r, rp, pp, "rope_theta", &theta, &where))
        return -1;
    if (!(theta > 1))
        return cfg_fail(r, "%srope_theta: %g must be above 1", where, theta);
    if (rope_num(r, rp, pp, "partial_rotary_factor", &prf, &where))
        return -1;
    if (!(prf > 0 && prf <= 1))
        return cfg_fail(r, "%spartial_rotary_factor: %g must be in (0, 1]", where, prf);
    double rd = c->head_dim * prf;
    double rdi = floor(rd + 0.5);
    if (fabs(rd - rdi) > 1e-6 || rdi < 2 || fmod(rdi, 2) != 0)
        return cfg_fail(r,
                        "%spartial_rotary_factor: %g of head_dim %u gives %g rotary dims, "
                        "not an even integer",
                        where, prf, c->head_dim, rd);
    c->rope_theta = (float)theta;
    c->partial_rotary = (float)prf;
    c->rotary_dim = (uint32_t)rdi;
    return read_mrope(r, c, rp, pp);
}

/* ---- flags and tokens ---------------------------------------------------------------------- */

static int read_flags(struct cfg *r, struct model_config *c)
{
    int top_tie = 0, tc_tie = 0, b = 0, got;
    int64_t mtp = 0;
    int gt = opt_bool(r, r->top, "", "tie_word_embeddings", &top_tie);
    int gc = r->tc != r->top ? opt_bool(r, r->tc, r->pre, "tie_word_embeddings", &tc_tie) : 0;
    if (gt < 0 || gc < 0)
        return -1;
    if (gt && gc && top_tie != tc_tie)
        return cfg_fail(r, "tie_word_embeddings = %s and %stie_word_embeddings = %s differ",
                        top_tie ? "true" : "false", r->pre, tc_tie ? "true" : "false");
    c->tie_embeddings = (uint32_t)(gc ? tc_tie : top_tie);
    if ((got = opt_bool(r, r->tc, r->pre, "attention_bias", &b)) < 0)
        return -1;
    if (got && b)
        return cfg_fail(r, "%sattention_bias: attention_bias true is not supported", r->pre);
    /* HF gates the attention output whatever the key says; only its type is checked */
    if (opt_bool(r, r->tc, r->pre, "attn_output_gate", &b) < 0)
        return -1;
    c->attn_output_gate = 1;
    if (opt_str_is(r, r->tc, r->pre, "hidden_act", "silu") < 0)
        return -1;
    if (opt_int(r, r->tc, r->pre, "mtp_num_hidden_layers", 0, UINT32_MAX, &mtp) < 0)
        return -1;
    c->mtp_layers = (uint32_t)mtp;
    return 0;
}

/* eos_token_id: null, one id, or a list; the text config's wins over the top level's. */
static int read_eos(struct cfg *r, struct model_config *c)
{
    const struct json_doc *d = r->d;
    const char *pre = r->pre;
    int64_t hi = c->vocab_size - 1 < INT32_MAX ? c->vocab_size - 1 : INT32_MAX, v;
    int64_t e = cfg_opt(r, r->tc, "eos_token_id");
    if (e < 0 && r->tc != r->top) {
        e = cfg_opt(r, r->top, "eos_token_id");
        pre = "";
    }
    if (e < 0)
        return 0;
    if (d->v[e].type == JSON_NUMBER) {
        if (read_int_at(r, e, pre, "eos_token_id", 0, hi, &v))
            return -1;
        c->eos_ids[0] = (int32_t)v;
        c->num_eos = 1;
        return 0;
    }
    if (d->v[e].type != JSON_ARRAY)
        return type_fail(r, pre, "eos_token_id", "an integer or a list of integers", e);
    if (d->v[e].count > MODEL_MAX_EOS)
        return cfg_fail(r, "%seos_token_id: %u ids listed, at most %d are supported", pre,
                        d->v[e].count, MODEL_MAX_EOS);
    uint32_t i = json_first(d, (uint32_t)e);
    for (uint32_t k = 0; k < d->v[e].count; k++, i = json_next(d, i)) {
        char key[32];
        snprintf(key, sizeof key, "eos_token_id[%u]", k);
        if (read_int_at(r, i, pre, key, 0, hi, &v))
            return -1;
        c->eos_ids[k] = (int32_t)v;
    }
    c->num_eos = d->v[e].count;
    return 0;
}

/* ---- public -----------------------------------------------------------------------------------
 */

/* err = a + b, cut to MODEL_ERR_LEN (bounded copies, so a long path cannot overflow). */
static void join(char *err, const char *a, const char *b)
{
    size_t k = 0;
    for (; *a && k + 1 < MODEL_ERR_LEN; a++)
        err[k++] = *a;
    for (; *b && k + 1 < MODEL_ERR_LEN; b++)
        err[k++] = *b;
    err[k] = 0;
}

int model_config_from_json(struct model_config *c, const char *text, size_t len, char *err)
{
    struct json_doc d;
    struct cfg r = {.d = &d, .err = err};
    char msg[MODEL_ERR_LEN];
    int rc = -1;
    memset(c, 0, sizeof *c); /* equal configs must compare equal byte for byte */
    if (json_parse(&d, text, len, CFG_MAX_VALUES)) {
        join(err, "invalid JSON: ", d.err);
        goto out;
    }
    if (d.v[0].type != JSON_OBJECT) {
        cfg_fail(&r, "expected a JSON object at the top level, got %s",
                 json_type_name(d.v[0].type));
        goto out;
    }
    if (find_text_config(&r) || read_sizes(&r, c) || read_layer_types(&r, c) || read_rope(&r, c) ||
        read_flags(&r, c) || read_eos(&r, c))
        goto out;
    if (model_config_check(c, msg)) {
        join(err, r.tc != r.top ? "text_config: " : "", msg);
        goto out;
    }
    rc = 0;
out:
    json_free(&d);
    if (rc)
        memset(c, 0, sizeof *c); /* never hand out a half-read config */
    return rc;
}

/* Read the whole file into memory; returns the buffer or NULL with a message in err. */
static char *read_file(const char *path, size_t *len, char *err)
{
    FILE *f = fopen(path, "rb");
    char *buf = NULL;
    long n;
    if (!f) {
        snprintf(err, MODEL_ERR_LEN, "cannot open: %s", strerror(errno));
        return NULL;
    }
    if (fseek(f, 0, SEEK_END) || (n = ftell(f)) < 0 || fseek(f, 0, SEEK_SET)) {
        snprintf(err, MODEL_ERR_LEN, "cannot seek: %s", strerror(errno));
        goto close;
    }
    if ((unsigned long)n > CFG_MAX_FILE) {
        snprintf(err, MODEL_ERR_LEN, "%ld bytes is too large for a config.json", n);
        goto close;
    }
    buf = malloc((size_t)n + 1);
    if (!buf) {
        snprintf(err, MODEL_ERR_LEN, "out of memory for %ld bytes", n);
        goto close;
    }
    if (fread(buf, 1, (size_t)n, f) != (size_t)n) {
        snprintf(err, MODEL_ERR_LEN, "read error");
        free(buf);
        buf = NULL;
        goto close;
    }
    *len = (size_t)n;
close:
    fclose(f);
    return buf;
}

int model_config_load(struct model_config *c, const char *path, char *err)
{
    char msg[MODEL_ERR_LEN], where[MODEL_ERR_LEN];
    size_t len = 0;
    int rc = -1;
    memset(c, 0, sizeof *c);
    char *text = read_file(path, &len, msg);
    if (text) {
        rc = model_config_from_json(c, text, len, msg);
        free(text);
    }
    if (rc) {
        join(where, path, ": ");
        join(err, where, msg);
    }
    return rc;
}
