/* fuzz_json.c — libFuzzer target for the JSON parser (plan/json.c).
 *
 * json_parse reads files that come from outside (config.json, tokenizer.json), so it must
 * survive any bytes: no crash, no read past the text, no sanitizer report. When a document
 * parses, every value is then walked with each typed reader and every string decoded into a
 * buffer sized by json_string_len, which checks that the tape and the decoder agree with
 * what the parser validated. A few invariants of the tape are asserted on the way.
 *
 * Run: make build/fuzz/fuzz_json && build/fuzz/fuzz_json -max_total_time=60 CORPUS_DIR */
#include "plan/json.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

/* Read value i every way there is; abort on any broken invariant so libFuzzer reports it. */
static void visit(const struct json_doc *d, uint32_t i)
{
    const struct json_value *v = &d->v[i];
    int64_t n64;
    double f;
    int b;
    if (v->next <= i || v->next > d->n || (uint64_t)v->start + v->len > d->len)
        abort();
    if ((json_bool(d, i, &b) == 0) != (v->type == JSON_TRUE || v->type == JSON_FALSE))
        abort();
    if (json_i64(d, i, &n64) == 0 && v->type != JSON_NUMBER)
        abort();
    if (json_f64(d, i, &f) == 0 && v->type != JSON_NUMBER)
        abort();
    if (v->type == JSON_STRING) {
        size_t need = json_string_len(d, i), got = 0;
        char *buf = malloc(need + 1);
        if (!buf)
            return;
        if (json_string(d, i, buf, need + 1, &got) || got != need || buf[need])
            abort();
        if (need && json_string(d, i, buf, need, &got) == 0) /* one byte short must fail */
            abort();
        if (!memchr(buf, 0, need) && !json_string_eq(d, i, buf))
            abort();
        free(buf);
    }
    if (v->type == JSON_OBJECT && v->count) { /* the first key must be found again */
        uint32_t k = json_first(d, i);
        size_t need = json_string_len(d, k);
        char *key = malloc(need + 1);
        if (key && json_string(d, k, key, need + 1, NULL) == 0 && !memchr(key, 0, need) &&
            json_get(d, i, key) != (int64_t)json_next(d, k))
            abort();
        free(key);
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct json_doc d;
    /* a small bound as well as none, so the max_values refusal path is exercised too */
    uint32_t max = size && (data[0] & 1) ? 16 : 0;
    if (json_parse(&d, (const char *)data, size, max) == 0) {
        if (d.n == 0 || d.v[0].next != d.n || (max && d.n > max))
            abort();
        for (uint32_t i = 0; i < d.n; i++)
            visit(&d, i);
    } else if (strncmp(d.err, "line ", 5)) {
        abort(); /* every refusal carries a position */
    }
    json_free(&d);
    return 0;
}
