/* test_config.c — reading config.json into struct model_config (plan/config.c).
 *
 * The headline check is that the published-style Qwen3.5-35B-A3B config reads to exactly
 * the built-in default. Then every way a config can be wrong is produced by editing that
 * text (set, add or remove one member, found through the JSON parser so edits land on the
 * right key at the right depth), and each variant must be refused with a message that
 * names the field, since that message is all a user gets to find the mistake. */
#include "plan/json.h"
#include "plan/model.h"
#include "test/test.h"

#include <string.h>

#define DATA "test/data/config/"

static char *base; /* the 35B config text */

/* ---- editing JSON text --------------------------------------------------------------------- */

/* base with bytes [from, to) replaced by ins. */
static char *splice(const char *s, size_t from, size_t to, const char *ins)
{
    size_t n = strlen(s), k = strlen(ins);
    char *out = malloc(n - (to - from) + k + 1);
    memcpy(out, s, from);
    memcpy(out + from, ins, k);
    strcpy(out + from + k, s + to);
    return out;
}

/* Set the member named by a dotted path ("text_config.head_dim") to the JSON text val,
 * adding it if absent; val NULL removes it. Returns a new text, or NULL if the path's
 * parent objects are not there. */
static char *edit(const char *s, const char *path, const char *val)
{
    struct json_doc d;
    char *out = NULL, part[64];
    uint32_t obj = 0;
    if (json_parse(&d, s, strlen(s), 0) || d.v[0].type != JSON_OBJECT)
        goto done;
    const char *p = path, *dot;
    while ((dot = strchr(p, '.'))) {
        snprintf(part, sizeof part, "%.*s", (int)(dot - p), p);
        int64_t o = json_get(&d, obj, part);
        if (o < 0 || d.v[o].type != JSON_OBJECT)
            goto done;
        obj = (uint32_t)o;
        p = dot + 1;
    }
    int64_t v = json_get(&d, obj, p);
    if (v < 0) { /* add as the first member */
        if (!val)
            goto done;
        char ins[512];
        snprintf(ins, sizeof ins, "{\"%s\": %s%s", p, val, d.v[obj].count ? ", " : "");
        out = splice(s, d.v[obj].start, d.v[obj].start + 1, ins);
        goto done;
    }
    uint32_t key = (uint32_t)v - 1, end = d.v[v].start + d.v[v].len;
    if (val) {
        out = splice(s, d.v[v].start, end, val);
    } else if (d.v[v].next < d.v[obj].next) { /* a member follows: cut up to its key */
        out = splice(s, d.v[key].start, d.v[d.v[v].next].start, "");
    } else { /* the last member: cut from the end of the previous value, comma included */
        uint32_t prev_end = d.v[obj].start + 1;
        for (uint32_t i = json_first(&d, obj), k = 0; k + 1 < d.v[obj].count; k++) {
            uint32_t pv = json_next(&d, i);
            prev_end = d.v[pv].start + d.v[pv].len;
            i = json_next(&d, pv);
        }
        out = splice(s, prev_end, end, "");
    }
done:
    json_free(&d);
    return out;
}

/* Two edits in a row. */
static char *edit2(const char *s, const char *p1, const char *v1, const char *p2, const char *v2)
{
    char *a = edit(s, p1, v1);
    char *b = a ? edit(a, p2, v2) : NULL;
    free(a);
    return b;
}

/* ---- checks -------------------------------------------------------------------------------- */

static int read_text(const char *text, struct model_config *c, char *err)
{
    return model_config_from_json(c, text, strlen(text), err);
}

/* One refused variant: it must fail, and the message must contain needle (and needle2). */
static void refused(const char *what, char *text, const char *needle, const char *needle2)
{
    struct model_config c;
    char err[MODEL_ERR_LEN] = "(the edit did not apply)";
    int r = text ? read_text(text, &c, err) : 0;
    CHECK(text && r == -1 && strstr(err, needle) && (!needle2 || strstr(err, needle2)),
          "refused: %-34s %s", what, err);
    free(text);
}

/* One accepted variant; returns the config read (zeroed on failure). */
static struct model_config accepted(const char *what, char *text, int *ok)
{
    struct model_config c;
    char err[MODEL_ERR_LEN] = "(the edit did not apply)";
    *ok = text && read_text(text, &c, err) == 0;
    if (!*ok) {
        memset(&c, 0, sizeof c);
        CHECK(0, "accepted: %s: %s", what, err);
    }
    free(text);
    return c;
}

static void test_headline(void)
{
    struct model_config def, c, c2;
    char err[MODEL_ERR_LEN] = "";
    const char *what = "";
    model_config_default(&def);
    int r = model_config_load(&c, DATA "qwen3.5-35b-a3b.json", err);
    CHECK(r == 0, "qwen3.5-35b-a3b.json reads %s", err);
    CHECK(r == 0 && model_config_equal(&c, &def, &what),
          "qwen3.5-35b-a3b.json equals model_config_default() (first difference: %s)", what);
    CHECK(r == 0 && !memcmp(&c, &def, sizeof c), "and byte for byte");
    r = model_config_load(&c2, DATA "qwen3.5-35b-a3b.json", err);
    CHECK(r == 0 && !memcmp(&c, &c2, sizeof c), "two reads are identical byte for byte");

    r = model_config_load(&c, DATA "tiny-a.json", err);
    CHECK(r == 0, "tiny-a.json reads %s", err);
    const uint8_t L = MODEL_LAYER_LINEAR, F = MODEL_LAYER_FULL;
    CHECK(c.hidden_size == 128 && c.num_layers == 4 && c.vocab_size == 512 &&
              c.max_position == 4096 && c.tie_embeddings == 0 && c.rms_norm_eps == 1e-6f,
          "tiny-a trunk: 128 wide, 4 layers, vocab 512, context 4096, untied");
    CHECK(c.num_heads == 4 && c.num_kv_heads == 2 && c.head_dim == 64 && c.attn_output_gate == 1 &&
              c.attention_bias == 0,
          "tiny-a attention: 4 heads, 2 kv heads, head_dim 64, gated");
    CHECK(c.rope_theta == 1e7f && c.partial_rotary == 0.25f && c.rotary_dim == 16 &&
              c.mrope_section[0] == 3 && c.mrope_section[1] == 3 && c.mrope_section[2] == 2 &&
              c.mrope_interleaved == 1,
          "tiny-a rope: theta 1e7, rotary 16 of 64, mrope [3,3,2] interleaved");
    CHECK(c.lin_num_k_heads == 2 && c.lin_num_v_heads == 4 && c.lin_k_head_dim == 32 &&
              c.lin_v_head_dim == 32 && c.conv_kernel == 4,
          "tiny-a DeltaNet: 2 key heads, 4 value heads, 32 wide, conv 4");
    CHECK(c.num_experts == 8 && c.num_experts_per_tok == 2 && c.moe_inter == 64 &&
              c.shared_inter == 64 && c.mtp_layers == 0,
          "tiny-a MoE: 8 experts, top 2, 64 wide, shared 64, no MTP");
    CHECK(c.num_eos == 0 && c.eos_ids[0] == 0, "tiny-a eos_token_id null gives no stop ids");
    CHECK(c.layer_types[0] == L && c.layer_types[1] == L && c.layer_types[2] == L &&
              c.layer_types[3] == F && c.layer_types[4] == 0,
          "tiny-a layers: linear, linear, linear, full");

    r = model_config_load(&c, "test/data/config/no-such-file.json", err);
    CHECK(r == -1 && strstr(err, "no-such-file.json: cannot open"), "missing file named: %s", err);
}

/* The text_config object cut out as a document of its own. */
static char *bare_text_config(void)
{
    struct json_doc d;
    char *out = NULL;
    if (json_parse(&d, base, strlen(base), 0) == 0) {
        int64_t tc = json_get(&d, 0, "text_config");
        if (tc >= 0)
            out = strndup(base + d.v[tc].start, d.v[tc].len);
    }
    json_free(&d);
    return out;
}

static void test_accepted_variants(void)
{
    struct model_config def, c;
    const char *what = "";
    int ok;
    model_config_default(&def);

    c = accepted("bare text config", bare_text_config(), &ok);
    CHECK(ok && model_config_equal(&c, &def, &what),
          "bare qwen3_5_moe_text config reads to the default (first difference: %s)", what);
    c = accepted("no layer_types", edit(base, "text_config.layer_types", NULL), &ok);
    CHECK(ok && model_config_equal(&c, &def, &what),
          "without layer_types, full_attention_interval 4 gives the same layers (%s)", what);
    c = accepted(
        "interval 2",
        edit2(base, "text_config.layer_types", NULL, "text_config.full_attention_interval", "2"),
        &ok);
    CHECK(ok && c.layer_types[0] == MODEL_LAYER_LINEAR && c.layer_types[1] == MODEL_LAYER_FULL &&
              model_count_layers(&c, MODEL_LAYER_FULL) == 20,
          "full_attention_interval 2: every second layer is full");
    c = accepted("legacy rope_theta",
                 edit2(base, "text_config.rope_parameters.rope_theta", NULL,
                       "text_config.rope_theta", "1e7"),
                 &ok);
    CHECK(ok && model_config_equal(&c, &def, &what), "rope_theta flat in text_config (%s)", what);
    c = accepted("legacy rope_scaling",
                 edit2(base, "text_config.rope_parameters", NULL, "text_config.rope_scaling",
                       "{\"rope_type\": \"default\", \"rope_theta\": 1e7, "
                       "\"mrope_section\": [11, 11, 10], \"mrope_interleaved\": true}"),
                 &ok);
    CHECK(ok && model_config_equal(&c, &def, &what),
          "legacy rope_scaling read as rope_parameters (%s)", what);
    c = accepted("prf only in rope_parameters",
                 edit(base, "text_config.partial_rotary_factor", NULL), &ok);
    CHECK(ok && model_config_equal(&c, &def, &what),
          "partial_rotary_factor only in rope_parameters");
    c = accepted("no mrope_section", edit(base, "text_config.rope_parameters.mrope_section", NULL),
                 &ok);
    CHECK(ok && c.mrope_section[0] == 32 && c.mrope_section[1] == 0 && c.mrope_interleaved == 0,
          "mrope_section absent: [32, 0, 0], not interleaved");
    c = accepted("shared 0", edit(base, "text_config.shared_expert_intermediate_size", "0"), &ok);
    CHECK(ok && c.shared_inter == 0, "shared_expert_intermediate_size 0: no shared expert");
    c = accepted("eos list", edit(base, "text_config.eos_token_id", "[248046, 248044]"), &ok);
    CHECK(ok && c.num_eos == 2 && c.eos_ids[0] == 248046 && c.eos_ids[1] == 248044,
          "eos_token_id as a list of two ids");
    c = accepted("eos null", edit(base, "text_config.eos_token_id", "null"), &ok);
    CHECK(ok && c.num_eos == 0, "eos_token_id null: no stop ids");
    c = accepted("eos at top level",
                 edit2(base, "text_config.eos_token_id", NULL, "eos_token_id", "7"), &ok);
    CHECK(ok && c.num_eos == 1 && c.eos_ids[0] == 7, "eos_token_id taken from the top level");
    c = accepted(
        "tied",
        edit2(base, "tie_word_embeddings", "true", "text_config.tie_word_embeddings", "true"), &ok);
    CHECK(ok && c.tie_embeddings == 1, "tie_word_embeddings true in both places");
    c = accepted("no gate key", edit(base, "text_config.attn_output_gate", "false"), &ok);
    CHECK(ok && c.attn_output_gate == 1,
          "attn_output_gate false still gates, as transformers does");
    c = accepted("mtp 0", edit(base, "text_config.mtp_num_hidden_layers", NULL), &ok);
    CHECK(ok && c.mtp_layers == 0, "mtp_num_hidden_layers absent: 0");
    c = accepted("unknown keys", edit(base, "text_config.some_future_key", "{\"x\": [1, 2]}"), &ok);
    CHECK(ok && model_config_equal(&c, &def, &what), "unknown keys are ignored");
}

static void test_missing_fields(void)
{
    static const char *required[] = {
        "hidden_size",
        "num_hidden_layers",
        "vocab_size",
        "num_attention_heads",
        "num_key_value_heads",
        "head_dim",
        "linear_num_key_heads",
        "linear_num_value_heads",
        "linear_key_head_dim",
        "linear_value_head_dim",
        "linear_conv_kernel_dim",
        "num_experts",
        "num_experts_per_tok",
        "moe_intermediate_size",
        "shared_expert_intermediate_size",
        "max_position_embeddings",
        "rms_norm_eps",
    };
    char path[96], name[96];
    for (size_t k = 0; k < sizeof required / sizeof required[0]; k++) {
        snprintf(path, sizeof path, "text_config.%s", required[k]);
        snprintf(name, sizeof name, "missing %s", required[k]);
        refused(name, edit(base, path, NULL), path, "missing");
    }
    refused("missing rope_theta (both places)",
            edit(base, "text_config.rope_parameters.rope_theta", NULL), "rope_theta", "missing");
    refused("missing partial_rotary_factor (both)",
            edit2(base, "text_config.rope_parameters.partial_rotary_factor", NULL,
                  "text_config.partial_rotary_factor", NULL),
            "partial_rotary_factor", "missing");
    refused("missing model_type", edit(base, "model_type", NULL), "model_type", "missing");
    refused("missing text_config", edit(base, "text_config", NULL), "text_config", "missing");
}

static void test_wrong_values(void)
{
    refused("hidden_size as a string", edit(base, "text_config.hidden_size", "\"2048\""),
            "text_config.hidden_size", "got string");
    refused("hidden_size 2048.0", edit(base, "text_config.hidden_size", "2048.0"),
            "text_config.hidden_size", "2048.0");
    refused("hidden_size 2.048e3", edit(base, "text_config.hidden_size", "2.048e3"),
            "text_config.hidden_size", "integer");
    refused("hidden_size null", edit(base, "text_config.hidden_size", "null"),
            "text_config.hidden_size", "got null");
    refused("hidden_size true", edit(base, "text_config.hidden_size", "true"),
            "text_config.hidden_size", "got boolean");
    refused("hidden_size 0", edit(base, "text_config.hidden_size", "0"), "text_config.hidden_size",
            "out of range");
    refused("head_dim -256", edit(base, "text_config.head_dim", "-256"), "text_config.head_dim",
            "-256");
    refused("vocab_size 2^32", edit(base, "text_config.vocab_size", "4294967296"),
            "text_config.vocab_size", "out of range");
    refused("vocab_size 2^64", edit(base, "text_config.vocab_size", "18446744073709551616"),
            "text_config.vocab_size", "out of range");
    refused("num_experts 2^32-1 (fits, too big)",
            edit(base, "text_config.num_experts", "4294967295"), "num_experts", NULL);
    refused("rms_norm_eps as a string", edit(base, "text_config.rms_norm_eps", "\"1e-6\""),
            "text_config.rms_norm_eps", "got string");
    refused("rms_norm_eps 0", edit(base, "text_config.rms_norm_eps", "0"), "rms_norm_eps", NULL);
    refused("mtp_num_hidden_layers -1", edit(base, "text_config.mtp_num_hidden_layers", "-1"),
            "text_config.mtp_num_hidden_layers", NULL);
    refused("text_config an array", edit(base, "text_config", "[]"), "text_config", "got array");
    refused("rope_parameters a string", edit(base, "text_config.rope_parameters", "\"x\""),
            "text_config.rope_parameters", "got string");
    refused("top level an array", strdup("[1, 2]"), "top level", "array");
    refused("JSON syntax error", edit(base, "text_config.head_dim", "256 \"oops\": 1,"),
            "invalid JSON: line ", " col ");
}

static void test_layers_and_heads(void)
{
    refused("layer_types 40 vs 39 layers", edit(base, "text_config.num_hidden_layers", "39"),
            "layer_types has 40 entries but num_hidden_layers is 39", NULL);
    char *t = strdup(base), *p = strstr(t, "\"linear_attention\"");
    refused("layer_types unknown entry", p ? (memcpy(p, "\"linear_attentio?\"", 18), t) : NULL,
            "text_config.layer_types[0]", "linear_attentio?");
    t = strdup(base), p = strstr(t, "\"full_attention\"");
    refused("layer_types entry a number", p ? (memcpy(p, "    12345678    ", 16), t) : NULL,
            "text_config.layer_types[3]", "got number");
    refused("layer_types an object", edit(base, "text_config.layer_types", "{}"),
            "text_config.layer_types", "got object");
    refused("num_hidden_layers 129",
            edit2(base, "text_config.layer_types", NULL, "text_config.num_hidden_layers", "129"),
            "text_config.num_hidden_layers", "128");
    refused(
        "full_attention_interval 0",
        edit2(base, "text_config.layer_types", NULL, "text_config.full_attention_interval", "0"),
        "full_attention_interval", NULL);
    refused("num_attention_heads 15 over 2 kv", edit(base, "text_config.num_attention_heads", "15"),
            "num_attention_heads", "num_key_value_heads");
    refused("linear heads 32 over 12", edit(base, "text_config.linear_num_key_heads", "12"),
            "linear_num_value_heads", "linear_num_key_heads");
    refused("experts_per_tok 300 > 256", edit(base, "text_config.num_experts_per_tok", "300"),
            "num_experts_per_tok", NULL);
    refused("attention_bias true", edit(base, "text_config.attention_bias", "true"),
            "text_config.attention_bias", "not supported");
    refused("attn_output_gate a string", edit(base, "text_config.attn_output_gate", "\"yes\""),
            "text_config.attn_output_gate", "boolean");
    refused("hidden_act gelu", edit(base, "text_config.hidden_act", "\"gelu\""),
            "text_config.hidden_act", "gelu");
}

static void test_rope_and_tokens(void)
{
    refused("rope_type yarn", edit(base, "text_config.rope_parameters.rope_type", "\"yarn\""),
            "text_config.rope_parameters.rope_type", "yarn");
    refused("rope_scaling with rope_parameters",
            edit(base, "text_config.rope_scaling", "{\"rope_type\": \"yarn\"}"), "rope_scaling",
            NULL);
    refused("partial_rotary_factor 0.3",
            edit2(base, "text_config.rope_parameters.partial_rotary_factor", "0.3",
                  "text_config.partial_rotary_factor", "0.3"),
            "partial_rotary_factor", "even");
    refused("partial_rotary_factor 1.5",
            edit2(base, "text_config.rope_parameters.partial_rotary_factor", "1.5",
                  "text_config.partial_rotary_factor", "1.5"),
            "partial_rotary_factor", NULL);
    refused(
        "partial_rotary_factor conflict", edit(base, "text_config.partial_rotary_factor", "0.5"),
        "text_config.rope_parameters.partial_rotary_factor", "text_config.partial_rotary_factor");
    refused("rope_theta conflict", edit(base, "text_config.rope_theta", "5000000"),
            "text_config.rope_parameters.rope_theta", "text_config.rope_theta");
    refused("yarn in legacy rope_scaling",
            edit2(base, "text_config.rope_parameters", NULL, "text_config.rope_scaling",
                  "{\"rope_type\": \"yarn\", \"rope_theta\": 1e7, \"factor\": 4}"),
            "text_config.rope_scaling.rope_type", "yarn");
    refused("legacy type yarn", edit(base, "text_config.rope_parameters.type", "\"yarn\""),
            "text_config.rope_parameters.type", "yarn");
    refused("rope_theta 0", edit(base, "text_config.rope_parameters.rope_theta", "0"), "rope_theta",
            NULL);
    refused("mrope_section sums to 33",
            edit(base, "text_config.rope_parameters.mrope_section", "[11, 11, 11]"),
            "text_config.rope_parameters.mrope_section", "33");
    refused("mrope_section of 2",
            edit(base, "text_config.rope_parameters.mrope_section", "[16, 16]"),
            "text_config.rope_parameters.mrope_section", NULL);
    refused("mrope_section float entry",
            edit(base, "text_config.rope_parameters.mrope_section", "[11, 11, 10.0]"),
            "text_config.rope_parameters.mrope_section", NULL);
    refused("mrope_interleaved a number",
            edit(base, "text_config.rope_parameters.mrope_interleaved", "1"),
            "text_config.rope_parameters.mrope_interleaved", "boolean");
    refused("model_type llama", edit(base, "model_type", "\"llama\""), "model_type \"llama\"",
            "not supported");
    refused("model_type a number", edit(base, "model_type", "3"), "model_type", "string");
    refused("text_config.model_type qwen3_moe",
            edit(base, "text_config.model_type", "\"qwen3_moe\""),
            "text_config.model_type \"qwen3_moe\"", NULL);
    refused("eos_token_id = vocab_size", edit(base, "text_config.eos_token_id", "248320"),
            "text_config.eos_token_id", "out of range");
    refused("eos_token_id -1", edit(base, "text_config.eos_token_id", "-1"),
            "text_config.eos_token_id", "out of range");
    refused("eos_token_id list entry too big",
            edit(base, "text_config.eos_token_id", "[1, 248320]"), "text_config.eos_token_id[1]",
            NULL);
    refused("eos_token_id 5 ids", edit(base, "text_config.eos_token_id", "[1, 2, 3, 4, 5]"),
            "text_config.eos_token_id", "at most");
    refused("eos_token_id a string", edit(base, "text_config.eos_token_id", "\"</s>\""),
            "text_config.eos_token_id", "got string");
    refused("tie_word_embeddings conflict", edit(base, "tie_word_embeddings", "true"),
            "tie_word_embeddings", "text_config.tie_word_embeddings");
    refused("tie_word_embeddings a string", edit(base, "text_config.tie_word_embeddings", "\"no\""),
            "text_config.tie_word_embeddings", "boolean");
}

static void test_failure_state(void)
{
    struct model_config c, zero;
    char err[MODEL_ERR_LEN];
    memset(&zero, 0, sizeof zero);
    char *t = edit(base, "text_config.hidden_act", "\"relu\"");
    int r = t ? read_text(t, &c, err) : 0;
    CHECK(r == -1 && !memcmp(&c, &zero, sizeof c), "a refused config leaves the struct zeroed");
    free(t);
    r = model_config_from_json(&c, base, strlen(base) - 3, err);
    CHECK(r == -1 && strstr(err, "invalid JSON"), "a cut file is refused: %s", err);
}

int main(void)
{
    base = test_read_file(DATA "qwen3.5-35b-a3b.json", NULL);
    test_headline();
    test_accepted_variants();
    test_missing_fields();
    test_wrong_values();
    test_layers_and_heads();
    test_rope_and_tokens();
    test_failure_state();
    free(base);
    return test_done();
}
