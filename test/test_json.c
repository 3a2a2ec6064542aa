/* test_json.c — the strict JSON parser (plan/json.c): what it accepts, what it refuses, and
 * that it stays fast and bounded on a document the size of a tokenizer vocabulary.
 *
 * The parser guards every file that enters the system (config.json, tokenizer.json), so the
 * refusals matter as much as the acceptances: each invalid document in the catalogue below
 * is one check, printed with the message the parser gave. */
#include "plan/json.h"
#include "test/test.h"

#include <stdint.h>
#include <string.h>
#include <time.h>

/* Parse a NUL-terminated text; the doc must be freed by the caller. */
static int parse(struct json_doc *d, const char *s)
{
    return json_parse(d, s, strlen(s), 0);
}

/* 1 if text (len bytes) parses. */
static int accepts(const char *s, size_t len)
{
    struct json_doc d;
    int r = json_parse(&d, s, len, 0);
    json_free(&d);
    return r == 0;
}

static double now_s(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + t.tv_nsec * 1e-9;
}

static void test_scalars(void)
{
    static const struct {
        const char *text;
        uint32_t type;
    } ok[] = {
        {"null", JSON_NULL},        {"true", JSON_TRUE},
        {"false", JSON_FALSE},      {"0", JSON_NUMBER},
        {"-0", JSON_NUMBER},        {"1.5e3", JSON_NUMBER},
        {"-12.25E-2", JSON_NUMBER}, {"1e+9", JSON_NUMBER},
        {"\"\"", JSON_STRING},      {" \t\r\n\"x\" \n", JSON_STRING},
        {"[]", JSON_ARRAY},         {"{ }", JSON_OBJECT},
    };
    size_t bad = SIZE_MAX;
    for (size_t k = 0; k < sizeof ok / sizeof ok[0] && bad == SIZE_MAX; k++) {
        struct json_doc d;
        if (parse(&d, ok[k].text) || d.n != 1 || d.v[0].type != ok[k].type || d.v[0].next != 1)
            bad = k;
        json_free(&d);
    }
    CHECK(bad == SIZE_MAX, "every value type parses at top level (first failure: %s)",
          bad == SIZE_MAX ? "none" : ok[bad].text);
}

static void test_tape(void)
{
    struct json_doc d;
    const char *s = "{\"a\": [1, 2, {\"b\": null}], \"c\": \"x\", \"e\": []}";
    int r = parse(&d, s);
    CHECK(r == 0 && d.n == 12, "nested document parses to 12 values (got %u: %s)", d.n,
          r ? d.err : "");
    CHECK(d.v[0].type == JSON_OBJECT && d.v[0].count == 3 && d.v[0].next == 12 &&
              d.v[0].start == 0 && d.v[0].len == strlen(s),
          "object record: 3 pairs, span of the whole text, next past the subtree");
    CHECK(d.v[2].type == JSON_ARRAY && d.v[2].count == 3 && d.v[2].next == 8 &&
              d.v[5].type == JSON_OBJECT && d.v[5].count == 1 && d.v[5].next == 8,
          "array record: 3 elements; nested object closes at the same index");
    CHECK(d.v[8].type == JSON_STRING && json_string_eq(&d, 8, "c") && d.v[11].count == 0 &&
              d.v[11].type == JSON_ARRAY && d.v[11].next == 12,
          "siblings are one step apart; empty array has 0 elements");
    int64_t a = json_get(&d, 0, "a"), c = json_get(&d, 0, "c"), e = json_get(&d, 0, "e");
    CHECK(a == 2 && c == 9 && e == 11 && json_get(&d, 0, "zz") == -1 && json_get(&d, 2, "a") == -1,
          "json_get finds each key, -1 for a missing key or a non-object");
    int64_t sum = 0, v;
    uint32_t i = json_first(&d, 2);
    for (uint32_t k = 0; k < d.v[2].count; k++, i = json_next(&d, i))
        if (json_i64(&d, i, &v) == 0)
            sum += v;
    CHECK(sum == 3, "array iteration visits 1 and 2 and steps over the nested object");
    int keys = 0;
    i = json_first(&d, 0);
    for (uint32_t k = 0; k < d.v[0].count; k++, i = json_next(&d, json_next(&d, i)))
        keys += d.v[i].type == JSON_STRING;
    CHECK(keys == 3, "object iteration steps key, value, key");
    json_free(&d);
}

static void test_strings(void)
{
    struct json_doc d;
    char out[64];
    size_t n = 0;
    const char *s = "\"q\\\"b\\\\s\\/\\b\\f\\n\\r\\t\\u0041\\u00e9\\u20AC\\ud83d\\ude00\"";
    const char *want = "q\"b\\s/\b\f\n\r\tA\xC3\xA9\xE2\x82\xAC\xF0\x9F\x98\x80";
    int r = parse(&d, s);
    r = r || json_string(&d, 0, out, sizeof out, &n);
    CHECK(r == 0 && n == strlen(want) && !memcmp(out, want, n) && json_string_len(&d, 0) == n,
          "every escape decodes, surrogate pair to 4-byte UTF-8 (%zu bytes)", n);
    CHECK(json_string(&d, 0, out, n, NULL) == -1 && json_string(&d, 0, out, n + 1, NULL) == 0,
          "json_string needs room for the NUL and no more");
    CHECK(json_string_eq(&d, 0, want) && !json_string_eq(&d, 0, "q") &&
              !json_string_eq(&d, 0, "q\"b\\s/\b\f\n\r\tA"),
          "json_string_eq compares the decoded text, not a prefix");
    json_free(&d);

    r = parse(&d, "[\"a\\u0000b\", \"\\n\"]");
    CHECK(r == 0 && json_string(&d, 1, out, sizeof out, &n) == 0 && n == 3 && out[1] == 0 &&
              json_string_len(&d, 1) == 3 && !json_string_eq(&d, 1, "a"),
          "\\u0000 decodes to a NUL that the length counts");
    CHECK(!json_string_eq(&d, 2, "\\n") && json_string_eq(&d, 2, "\n"),
          "raw backslash-n text is not equal to the escaped string");
    json_free(&d);

    const char *utf =
        "\"\xC2\xA9 \xE2\x82\xAC \xED\x9F\xBF \xEE\x80\x80 \xF0\x90\x80\x80 \xF4\x8F\xBF\xBF\"";
    CHECK(accepts(utf, strlen(utf)), "raw UTF-8 of 2, 3 and 4 bytes up to U+10FFFF accepted");
}

static void test_numbers(void)
{
    struct json_doc d;
    int64_t i = 0;
    double f = 0;
    int b = 0;
    const char *s = "[9223372036854775807, -9223372036854775808, 9223372036854775808, "
                    "-9223372036854775809, 1.0, 1e2, -0, 1.5e3, -0.25, 1e400, \"7\", true, 0]";
    int r = parse(&d, s);
    uint32_t v[14];
    uint32_t at = json_first(&d, 0);
    for (uint32_t k = 0; k < 13; k++, at = json_next(&d, at))
        v[k] = at;
    CHECK(r == 0 && d.v[0].count == 13, "number array parses");
    CHECK(json_i64(&d, v[0], &i) == 0 && i == INT64_MAX, "i64 reads INT64_MAX");
    CHECK(json_i64(&d, v[1], &i) == 0 && i == INT64_MIN, "i64 reads INT64_MIN");
    CHECK(json_i64(&d, v[2], &i) == -1 && json_i64(&d, v[3], &i) == -1,
          "i64 refuses one past either limit");
    CHECK(json_i64(&d, v[4], &i) == -1 && json_i64(&d, v[5], &i) == -1, "i64 refuses 1.0 and 1e2");
    CHECK(json_i64(&d, v[6], &i) == 0 && i == 0, "i64 reads -0 as 0");
    CHECK(json_f64(&d, v[7], &f) == 0 && f == 1500.0 && json_f64(&d, v[8], &f) == 0 && f == -0.25,
          "f64 reads 1.5e3 and -0.25");
    CHECK(json_f64(&d, v[9], &f) == -1, "f64 refuses 1e400 (overflows a double)");
    CHECK(json_f64(&d, v[5], &f) == 0 && f == 100.0, "f64 reads an exponent integer");
    CHECK(json_i64(&d, v[10], &i) == -1 && json_f64(&d, v[10], &f) == -1 &&
              json_bool(&d, v[10], &b) == -1,
          "typed reads refuse a string");
    CHECK(json_bool(&d, v[11], &b) == 0 && b == 1 && json_bool(&d, v[12], &b) == -1,
          "json_bool reads true, refuses a number");
    json_free(&d);
}

/* One invalid document, with its length for texts holding NUL bytes (0: strlen). */
struct bad {
    const char *name, *text;
    size_t len;
};

static const struct bad bad_docs[] = {
    {"empty input", "", 0},
    {"whitespace only", " \n\t", 0},
    {"trailing comma in array", "[1,2,]", 0},
    {"trailing comma in object", "{\"a\":1,}", 0},
    {"leading comma", "[,1]", 0},
    {"missing comma", "[1 2]", 0},
    {"missing colon", "{\"a\" 1}", 0},
    {"unquoted key", "{a:1}", 0},
    {"single-quoted string", "['a']", 0},
    {"line comment", "[1] // c", 0},
    {"block comment", "/* c */ [1]", 0},
    {"leading zero 01", "01", 0},
    {"leading zero -01", "[-01]", 0},
    {"1.", "1.", 0},
    {".5", ".5", 0},
    {"lone minus", "-", 0},
    {"+1", "+1", 0},
    {"1e", "1e", 0},
    {"1e+", "[1e+]", 0},
    {"hex number", "0x10", 0},
    {"NaN", "NaN", 0},
    {"Infinity", "[-Infinity]", 0},
    {"truncated literal", "tru", 0},
    {"capitalised literal", "True", 0},
    {"literal with tail", "nullx", 0},
    {"unterminated string", "\"abc", 0},
    {"unterminated string in object", "{\"a\":\"b", 0},
    {"unclosed array", "[1, 2", 0},
    {"unclosed object", "{\"a\": 1", 0},
    {"mismatched bracket", "[1}", 0},
    {"bad escape \\x", "\"\\x41\"", 0},
    {"bad escape \\u12", "\"\\u12\"", 0},
    {"bad escape \\u12G4", "\"\\u12G4\"", 0},
    {"escape at end", "\"\\", 0},
    {"lone high surrogate", "\"\\ud83d\"", 0},
    {"high surrogate then text", "\"\\ud83dx\"", 0},
    {"high surrogate then non-low", "\"\\ud83d\\u0041\"", 0},
    {"two high surrogates", "\"\\ud83d\\ud83d\"", 0},
    {"lone low surrogate", "\"\\ude00\"", 0},
    {"raw newline in string", "\"a\nb\"", 0},
    {"raw tab in string", "\"a\tb\"", 0},
    {"control 0x1F in string", "\"\x1f\"", 0},
    {"NUL byte in string", "\"a\0b\"", 5},
    {"NUL byte after document", "1\0", 2},
    {"UTF-8 lone continuation", "\"\x80\"", 0},
    {"UTF-8 overlong C0", "\"\xC0\xAF\"", 0},
    {"UTF-8 overlong C1", "\"\xC1\xBF\"", 0},
    {"UTF-8 overlong E0", "\"\xE0\x80\xAF\"", 0},
    {"UTF-8 overlong F0", "\"\xF0\x80\x80\xAF\"", 0},
    {"UTF-8 encoded surrogate", "\"\xED\xA0\x80\"", 0},
    {"UTF-8 above U+10FFFF (F4 90)", "\"\xF4\x90\x80\x80\"", 0},
    {"UTF-8 lead F5", "\"\xF5\x80\x80\x80\"", 0},
    {"UTF-8 byte FF", "\"\xFF\"", 0},
    {"UTF-8 truncated sequence", "\"\xE2\x82\"", 0},
    {"UTF-8 bad continuation", "\"\xE2\x28\xA1\"", 0},
    {"UTF-8 4-byte cut by end", "\"\xF0\x9F\x98", 0},
    {"byte-order mark", "\xEF\xBB\xBF{}", 0},
    {"non-ASCII outside a string", "[1,\xC2\xA0 2]", 0},
    {"duplicate key", "{\"a\":1,\"a\":2}", 0},
    {"duplicate key via escape", "{\"a\":1,\"\\u0061\":2}", 0},
    {"duplicate key in nested object", "[{\"x\":{\"k\":1,\"j\":2,\"k\":3}}]", 0},
    {"duplicate among 20 keys",
     "{\"k0\":0,\"k1\":0,\"k2\":0,\"k3\":0,\"k4\":0,\"k5\":0,\"k6\":0,"
     "\"k7\":0,\"k8\":0,\"k9\":0,\"ka\":0,\"kb\":0,\"kc\":0,\"kd\":0,\"ke\":0,\"kf\":0,\"kg\":0,"
     "\"kh\":0,\"ki\":0,\"k\\u0035\":0}",
     0},
    {"trailing garbage", "{} x", 0},
    {"two documents", "[1] [2]", 0},
    {"number key", "{1:2}", 0},
};

static void test_refusals(void)
{
    for (size_t k = 0; k < sizeof bad_docs / sizeof bad_docs[0]; k++) {
        const struct bad *b = &bad_docs[k];
        struct json_doc d;
        int r = json_parse(&d, b->text, b->len ? b->len : strlen(b->text), 0);
        CHECK(r == -1 && !strncmp(d.err, "line ", 5), "refused: %-32s %s", b->name, d.err);
        json_free(&d);
    }
    struct json_doc d;
    parse(&d, "{\n  \"a\": [1,\n    2],\n  \"b\": 3,\n}");
    CHECK(!strncmp(d.err, "line 4 col 9: trailing comma in object", 38),
          "error names line and column: %s", d.err);
    json_free(&d);
    parse(&d, "[\"\xC3\xA9\xC3\xA9\", 01]");
    CHECK(!strncmp(d.err, "line 1 col 8: leading zero", 26),
          "columns count characters, not bytes: %s", d.err);
    json_free(&d);
    int r = parse(&d, "{\"a\":1,\"b\":{\"a\":2},\"c\":[{\"a\":3},{\"a\":4}]}");
    CHECK(r == 0 && d.n == 15, "equal keys in different objects are not duplicates");
    json_free(&d);
}

/* n nested arrays, or objects {"k": ...}, around a 0. */
static char *nested(int n, int objects)
{
    char *s = malloc((size_t)n * 6 + 2), *p = s;
    for (int i = 0; i < n; i++)
        p += sprintf(p, "%s", objects ? "{\"k\":" : "[");
    *p++ = '0';
    for (int i = 0; i < n; i++)
        *p++ = objects ? '}' : ']';
    *p = 0;
    return s;
}

static void test_limits(void)
{
    char *a = nested(JSON_MAX_DEPTH, 0), *b = nested(JSON_MAX_DEPTH + 1, 0);
    char *c = nested(JSON_MAX_DEPTH, 1), *e = nested(JSON_MAX_DEPTH + 1, 1);
    CHECK(accepts(a, strlen(a)) && accepts(c, strlen(c)), "depth %d of arrays and objects accepted",
          JSON_MAX_DEPTH);
    CHECK(!accepts(b, strlen(b)) && !accepts(e, strlen(e)), "depth %d refused", JSON_MAX_DEPTH + 1);
    free(a), free(b), free(c), free(e);
    char *deep = nested(100000, 0);
    CHECK(!accepts(deep, strlen(deep)), "depth 100000 refused without recursion");
    free(deep);

    struct json_doc d;
    const char *s = "[1,[2,3],{\"k\":4}]"; /* 8 values */
    int r4 = json_parse(&d, s, strlen(s), 8);
    json_free(&d);
    int r3 = json_parse(&d, s, strlen(s), 7);
    CHECK(r4 == 0 && r3 == -1 && strstr(d.err, "more than 7 values"),
          "max_values bounds the tape: 8 fits, 7 refused (%s)", d.err);
    json_free(&d);
    CHECK(!accepts("[1,2]", 3), "the length bounds the text: a cut document is refused");
    char big[700];
    memset(big, '1', sizeof big - 1);
    big[sizeof big - 1] = 0;
    double f;
    r4 = parse(&d, big);
    CHECK(r4 == 0 && json_f64(&d, 0, &f) == -1, "a 699-digit number parses; json_f64 refuses it");
    json_free(&d);
}

/* {"key0": 0, "key1": 1, ...} with n keys; dup != 0 repeats key 0 at the end. */
static char *wide_object(uint32_t n, int dup)
{
    char *s = malloc((size_t)n * 32 + 64), *p = s;
    *p++ = '{';
    for (uint32_t i = 0; i < n; i++)
        p += sprintf(p, "%s\"key%u\": %u", i ? ", " : "", i, i);
    if (dup)
        p += sprintf(p, ", \"key0\": 0");
    strcpy(p, "}");
    return s;
}

static void test_large(void)
{
    const uint32_t n = 200000;
    char *s = wide_object(n, 0);
    struct json_doc d;
    double t0 = now_s();
    int r = parse(&d, s);
    double dt = now_s() - t0;
    CHECK(r == 0 && d.n == 2 * n + 1 && d.v[0].count == n,
          "object with %u keys parses (%u values) in %.3f s", n, d.n, dt);
    CHECK(dt < 5.0, "and in reasonable time (%.3f s, limit 5 s under sanitizers)", dt);
    CHECK(d.cap <= 2 * d.n + 256, "tape grows geometrically: %u allocated for %u", d.cap, d.n);
    int64_t last = json_get(&d, 0, "key199999"), v = 0;
    CHECK(last > 0 && json_i64(&d, (uint32_t)last, &v) == 0 && v == 199999, "last key found");
    json_free(&d);
    free(s);

    s = wide_object(n, 1);
    t0 = now_s();
    r = parse(&d, s);
    dt = now_s() - t0;
    CHECK(r == -1 && strstr(d.err, "duplicate key \"key0\""),
          "duplicate among %u keys found in %.3f s: %s", n + 1, dt, d.err);
    json_free(&d);
    free(s);
}

int main(void)
{
    test_scalars();
    test_tape();
    test_strings();
    test_numbers();
    test_refusals();
    test_limits();
    test_large();
    return test_done();
}
