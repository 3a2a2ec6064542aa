/* qcfg.c — print or check a model configuration.
 *
 *   qcfg                 print the built-in default (Qwen3.5-35B-A3B)
 *   qcfg CONFIG.json     print the configuration a config.json reads to
 *   qcfg --check FILE    exit 0 if FILE reads to the built-in default, 1 if it differs
 *                        (naming the first differing field), 2 if it cannot be read
 *
 * Why: the struct is what every other program sees of the model, so this shows exactly what
 * they will see, with the derived sizes beside it, and --check lets a script confirm that a
 * downloaded checkpoint is the model the runtime was built and tested for. Fields are named
 * as in config.json; one "name = value" per line so the output diffs and greps well. */
#include "plan/model.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#define QCFG_MAX_LINES 64
#define QCFG_LINE      512

struct dump {
    char line[QCFG_MAX_LINES][QCFG_LINE];
    int n;
};

static void put(struct dump *d, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void put(struct dump *d, const char *fmt, ...)
{
    va_list ap;
    if (d->n == QCFG_MAX_LINES)
        return;
    va_start(ap, fmt);
    vsnprintf(d->line[d->n++], QCFG_LINE, fmt, ap);
    va_end(ap);
}

/* Layer kinds as letters (L linear, F full, ? other), shortened to "PATTERN xK" when the
 * sequence is one pattern repeated. */
static void layers_text(const struct model_config *c, char *out, size_t cap)
{
    char s[MODEL_MAX_LAYERS + 1];
    uint32_t n = c->num_layers < MODEL_MAX_LAYERS ? c->num_layers : MODEL_MAX_LAYERS;
    for (uint32_t i = 0; i < n; i++)
        s[i] = c->layer_types[i] == MODEL_LAYER_LINEAR ? 'L'
               : c->layer_types[i] == MODEL_LAYER_FULL ? 'F'
                                                       : '?';
    s[n] = 0;
    for (uint32_t p = 1; p < n; p++) {
        if (n % p)
            continue;
        uint32_t i = p;
        while (i < n && s[i] == s[i - p])
            i++;
        if (i == n) {
            snprintf(out, cap, "%.*s x%u", (int)p, s, n / p);
            return;
        }
    }
    snprintf(out, cap, "%s", s);
}

static void eos_text(const struct model_config *c, char *out, size_t cap)
{
    size_t k = 0;
    out[0] = 0;
    if (!c->num_eos)
        snprintf(out, cap, "none");
    for (uint32_t i = 0; i < c->num_eos && i < MODEL_MAX_EOS && k < cap; i++)
        k += (size_t)snprintf(out + k, cap - k, "%s%d", i ? ", " : "", c->eos_ids[i]);
}

/* Every field, then the derived sizes, in the order of struct model_config. */
static void dump_config(const struct model_config *c, struct dump *d)
{
    char buf[256];
    d->n = 0;
    put(d, "hidden_size = %u", c->hidden_size);
    put(d, "num_hidden_layers = %u", c->num_layers);
    put(d, "vocab_size = %u", c->vocab_size);
    put(d, "tie_word_embeddings = %s", c->tie_embeddings ? "true" : "false");
    put(d, "rms_norm_eps = %g", (double)c->rms_norm_eps);
    put(d, "max_position_embeddings = %u", c->max_position);
    put(d, "num_attention_heads = %u", c->num_heads);
    put(d, "num_key_value_heads = %u", c->num_kv_heads);
    put(d, "head_dim = %u", c->head_dim);
    put(d, "attn_output_gate = %s", c->attn_output_gate ? "true" : "false");
    put(d, "attention_bias = %s", c->attention_bias ? "true" : "false");
    put(d, "rope_theta = %.9g", (double)c->rope_theta);
    put(d, "partial_rotary_factor = %g", (double)c->partial_rotary);
    put(d, "rotary_dim = %u", c->rotary_dim);
    put(d, "mrope_section = [%u, %u, %u]", c->mrope_section[0], c->mrope_section[1],
        c->mrope_section[2]);
    put(d, "mrope_interleaved = %s", c->mrope_interleaved ? "true" : "false");
    put(d, "linear_num_key_heads = %u", c->lin_num_k_heads);
    put(d, "linear_num_value_heads = %u", c->lin_num_v_heads);
    put(d, "linear_key_head_dim = %u", c->lin_k_head_dim);
    put(d, "linear_value_head_dim = %u", c->lin_v_head_dim);
    put(d, "linear_conv_kernel_dim = %u", c->conv_kernel);
    put(d, "num_experts = %u", c->num_experts);
    put(d, "num_experts_per_tok = %u", c->num_experts_per_tok);
    put(d, "moe_intermediate_size = %u", c->moe_inter);
    put(d, "shared_expert_intermediate_size = %u", c->shared_inter);
    put(d, "mtp_num_hidden_layers = %u", c->mtp_layers);
    eos_text(c, buf, sizeof buf);
    put(d, "eos_token_id = %s", buf);
    layers_text(c, buf, sizeof buf);
    put(d, "layer_types = %s", buf);
    put(d, "# derived");
    put(d, "q_dim = %u", model_q_dim(c));
    put(d, "kv_dim = %u", model_kv_dim(c));
    put(d, "lin_key_dim = %u", model_lin_key_dim(c));
    put(d, "lin_value_dim = %u", model_lin_value_dim(c));
    put(d, "conv_dim = %u", model_lin_conv_dim(c));
    put(d, "linear_layers = %u", model_count_layers(c, MODEL_LAYER_LINEAR));
    put(d, "full_layers = %u", model_count_layers(c, MODEL_LAYER_FULL));
}

static void usage(FILE *f)
{
    fprintf(f,
            "usage: qcfg [CONFIG.json]      print a configuration (the built-in default if none)\n"
            "       qcfg --check CONFIG.json exit 0 if it equals the built-in default, 1 if not\n"
            "Errors reading the file go to stderr with exit status 2.\n");
}

/* --check: 0 equal, 1 different (the first differing field and every differing line). */
static int check(const char *path)
{
    static struct dump a, b;
    struct model_config c, def;
    char err[MODEL_ERR_LEN];
    const char *what = "?";
    if (model_config_load(&c, path, err)) {
        fprintf(stderr, "qcfg: %s\n", err);
        return 2;
    }
    model_config_default(&def);
    if (model_config_equal(&c, &def, &what)) {
        printf("%s: equals the built-in default\n", path);
        return 0;
    }
    printf("%s: differs from the built-in default, first at %s\n", path, what);
    dump_config(&c, &a);
    dump_config(&def, &b);
    for (int i = 0; i < a.n; i++)
        if (strcmp(a.line[i], b.line[i]))
            printf("  %s   (default: %s)\n", a.line[i], strchr(b.line[i], '=') + 2);
    return 1;
}

int main(int argc, char **argv)
{
    static struct dump d;
    struct model_config c;
    char err[MODEL_ERR_LEN];
    if (argc == 2 && (!strcmp(argv[1], "--help") || !strcmp(argv[1], "-h"))) {
        usage(stdout);
        return 0;
    }
    if (argc == 3 && !strcmp(argv[1], "--check"))
        return check(argv[2]);
    if (argc > 2 || (argc == 2 && argv[1][0] == '-')) {
        usage(stderr);
        return 2;
    }
    if (argc == 2) {
        if (model_config_load(&c, argv[1], err)) {
            fprintf(stderr, "qcfg: %s\n", err);
            return 2;
        }
    } else {
        model_config_default(&c);
    }
    dump_config(&c, &d);
    for (int i = 0; i < d.n; i++)
        printf("%s\n", d.line[i]);
    return 0;
}
