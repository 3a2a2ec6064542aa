/* proto.c — request lines into struct host_req, records into JSON lines (proto.h).
 *
 * Parsing is strict in the same spirit as plan/json.c: a line is first checked as UTF-8 (so
 * that binary garbage gets its own code, invalid_utf8, with the byte offset), then parsed as
 * one JSON object, then every field is checked for type and range, naming the field in the
 * message. Unknown fields are errors (unknown_field), not warnings: a misspelt "max_token"
 * silently ignored would change what the caller gets without telling anyone. A null value of
 * an optional field means "the default", which is what JSON clients usually mean by it.
 *
 * Output escaping never trusts its input: bytes that are not well-formed UTF-8 are written as
 * \ufffd, so a record is valid JSON whatever the tokenizer or a client put in it. */
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "host/proto.h"
#include "host/unicode.h"
#include "plan/json.h"

static const char *const errc_names[] = {
    "none",
    "invalid_json",
    "line_too_long",
    "invalid_utf8",
    "invalid_request",
    "unknown_field",
    "token_out_of_range",
    "context_length_exceeded",
    "busy",
    "internal",
};

const char *host_errc_name(enum host_errc c)
{
    return (unsigned)c < sizeof errc_names / sizeof *errc_names ? errc_names[c] : "internal";
}

int host_fail(struct host_error *e, enum host_errc c, const char *fmt, ...)
{
    va_list ap;
    e->code = c;
    va_start(ap, fmt);
    vsnprintf(e->msg, sizeof e->msg, fmt, ap);
    va_end(ap);
    return -1;
}

/* ---- field readers -------------------------------------------------------------------------- */

/* Copy string value v into a new NUL-terminated buffer. */
static int get_str(const struct json_doc *d, uint32_t v, const char *field, char **out, size_t *n,
                   struct host_error *e)
{
    if (d->v[v].type != JSON_STRING)
        return host_fail(e, HOST_E_INVALID_REQUEST, "%s: expected a string, got %s", field,
                         json_type_name(d->v[v].type));
    size_t len = json_string_len(d, v);
    char *s = malloc(len + 1);
    if (!s)
        return host_fail(e, HOST_E_INTERNAL, "out of memory reading %s", field);
    json_string(d, v, s, len + 1, n);
    *out = s;
    return 0;
}

static int get_int(const struct json_doc *d, uint32_t v, const char *field, int64_t lo, int64_t hi,
                   int64_t *out, struct host_error *e)
{
    if (json_i64(d, v, out) || *out < lo || *out > hi)
        return host_fail(e, HOST_E_INVALID_REQUEST, "%s: expected an integer in [%lld, %lld]",
                         field, (long long)lo, (long long)hi);
    return 0;
}

/* A number in [lo, hi], or (lo, hi] when open_lo. */
static int get_num(const struct json_doc *d, uint32_t v, const char *field, double lo, double hi,
                   int open_lo, float *out, struct host_error *e)
{
    double x;
    if (json_f64(d, v, &x) || x < lo || x > hi || (open_lo && x == lo))
        return host_fail(e, HOST_E_INVALID_REQUEST, "%s: expected a number in %c%g, %g]", field,
                         open_lo ? '(' : '[', lo, hi);
    *out = (float)x;
    return 0;
}

/* The key of an object member, shortened for a message. */
static void key_name(const struct json_doc *d, uint32_t k, char *out, size_t cap)
{
    size_t len = json_string_len(d, k);
    char *s = malloc(len + 1);
    if (!s || json_string(d, k, s, len + 1, NULL)) {
        snprintf(out, cap, "?");
    } else {
        snprintf(out, cap, "%s", s);
    }
    free(s);
}

static int is_one_of(const struct json_doc *d, uint32_t k, const char *const *names)
{
    for (; *names; names++)
        if (json_string_eq(d, k, *names))
            return 1;
    return 0;
}

/* Refuse the first key of object obj that is not in names. */
static int check_fields(const struct json_doc *d, uint32_t obj, const char *const *names,
                        const char *where, struct host_error *e)
{
    char key[72];
    for (uint32_t i = json_first(d, obj), k = 0; k < d->v[obj].count; k++) {
        if (!is_one_of(d, i, names)) {
            key_name(d, i, key, sizeof key);
            return host_fail(e, HOST_E_UNKNOWN_FIELD, "unknown field \"%s\"%s", key, where);
        }
        i = json_next(d, json_next(d, i));
    }
    return 0;
}

/* The value of key, or -1 when absent or null (the default). */
static int64_t opt(const struct json_doc *d, const char *key)
{
    int64_t v = json_get(d, 0, key);
    return v >= 0 && d->v[v].type == JSON_NULL ? -1 : v;
}

/* ---- the prompt forms ----------------------------------------------------------------------- */

static int parse_messages(struct host_req *r, const struct json_doc *d, uint32_t a,
                          struct host_error *e)
{
    static const char *const fields[] = {"role", "content", NULL};
    static const char *const roles[] = {"system", "user", "assistant", "tool", NULL};
    char where[48];
    if (d->v[a].type != JSON_ARRAY || d->v[a].count == 0)
        return host_fail(e, HOST_E_INVALID_REQUEST, "messages: expected a non-empty array");
    r->msgs = calloc(d->v[a].count, sizeof *r->msgs);
    if (!r->msgs)
        return host_fail(e, HOST_E_INTERNAL, "out of memory reading messages");
    for (uint32_t i = json_first(d, a), k = 0; k < d->v[a].count; k++, i = json_next(d, i)) {
        struct host_msg *m = &r->msgs[r->n_msgs++];
        snprintf(where, sizeof where, " in messages[%u]", k);
        if (d->v[i].type != JSON_OBJECT)
            return host_fail(e, HOST_E_INVALID_REQUEST, "messages[%u]: expected an object", k);
        if (check_fields(d, i, fields, where, e))
            return -1;
        int64_t role = json_get(d, i, "role"), content = json_get(d, i, "content");
        if (role < 0 || content < 0)
            return host_fail(e, HOST_E_INVALID_REQUEST, "messages[%u]: needs role and content", k);
        if (d->v[role].type != JSON_STRING || !is_one_of(d, (uint32_t)role, roles))
            return host_fail(e, HOST_E_INVALID_REQUEST,
                             "messages[%u].role: expected one of "
                             "system, user, assistant, tool",
                             k);
        if (get_str(d, (uint32_t)role, "role", &m->role, NULL, e) ||
            get_str(d, (uint32_t)content, "content", &m->content, &m->content_len, e))
            return -1;
    }
    return 0;
}

static int parse_tokens(struct host_req *r, const struct json_doc *d, uint32_t a,
                        struct host_error *e)
{
    if (d->v[a].type != JSON_ARRAY || d->v[a].count == 0)
        return host_fail(e, HOST_E_INVALID_REQUEST, "tokens: expected a non-empty array");
    r->tokens = malloc(d->v[a].count * sizeof *r->tokens);
    if (!r->tokens)
        return host_fail(e, HOST_E_INTERNAL, "out of memory reading tokens");
    for (uint32_t i = json_first(d, a), k = 0; k < d->v[a].count; k++, i = json_next(d, i)) {
        int64_t x;
        if (json_i64(d, i, &x))
            return host_fail(e, HOST_E_INVALID_REQUEST, "tokens[%u]: expected an integer", k);
        if (x < 0 || x > INT32_MAX)
            return host_fail(e, HOST_E_TOKEN_OUT_OF_RANGE, "tokens[%u] = %lld is not a token id", k,
                             (long long)x);
        r->tokens[r->n_tokens++] = (int32_t)x;
    }
    return 0;
}

static int parse_stop(struct host_req *r, const struct json_doc *d, uint32_t v,
                      struct host_error *e)
{
    uint32_t first = v, count = 1;
    if (d->v[v].type == JSON_ARRAY) {
        first = json_first(d, v);
        count = d->v[v].count;
    }
    if (count > HOST_MAX_STOP)
        return host_fail(e, HOST_E_INVALID_REQUEST, "stop: at most %d strings", HOST_MAX_STOP);
    for (uint32_t i = first, k = 0; k < count; k++, i = json_next(d, i)) {
        if (get_str(d, i, "stop", &r->stop[k], &r->stop_len[k], e))
            return -1;
        r->n_stop++;
        if (r->stop_len[k] < 1 || r->stop_len[k] > HOST_STOP_MAX_LEN)
            return host_fail(e, HOST_E_INVALID_REQUEST, "stop: strings of 1 to %d bytes",
                             HOST_STOP_MAX_LEN);
    }
    return 0;
}

/* ---- requests ------------------------------------------------------------------------------- */

static int parse_id(struct host_req *r, const struct json_doc *d, struct host_error *e)
{
    int64_t v = json_get(d, 0, "id"), x;
    if (v < 0 || d->v[v].type == JSON_NULL)
        return 0;
    const struct json_value *jv = &d->v[v];
    if ((jv->type != JSON_STRING && (jv->type != JSON_NUMBER || json_i64(d, (uint32_t)v, &x))) ||
        jv->len > HOST_ID_MAX)
        return host_fail(e, HOST_E_INVALID_REQUEST,
                         "id: expected a string of at most %d bytes "
                         "or an integer",
                         HOST_ID_MAX - 2);
    memcpy(r->id, d->text + jv->start, jv->len);
    r->id[jv->len] = 0;
    return 0;
}

static int parse_cmd(struct host_req *r, const struct json_doc *d, uint32_t v, struct host_error *e)
{
    static const char *const fields[] = {"id", "cmd", NULL};
    if (check_fields(d, 0, fields, " in a command", e))
        return -1;
    r->kind = json_string_eq(d, v, "health")     ? HOST_REQ_HEALTH
              : json_string_eq(d, v, "stats")    ? HOST_REQ_STATS
              : json_string_eq(d, v, "shutdown") ? HOST_REQ_SHUTDOWN
                                                 : 0;
    if (!r->kind)
        return host_fail(e, HOST_E_INVALID_REQUEST,
                         "cmd: expected \"health\", \"stats\" or "
                         "\"shutdown\"");
    return 0;
}

static int parse_sampling(struct host_req *r, const struct json_doc *d, struct host_error *e)
{
    int64_t v, x;
    if ((v = opt(d, "max_tokens")) >= 0) {
        if (get_int(d, (uint32_t)v, "max_tokens", 1, HOST_MAX_TOKENS_LIMIT, &x, e))
            return -1;
        r->max_tokens = (uint32_t)x;
    }
    if ((v = opt(d, "top_k")) >= 0) {
        if (get_int(d, (uint32_t)v, "top_k", 0, 1 << 30, &x, e))
            return -1;
        r->top_k = (uint32_t)x;
    }
    if ((v = opt(d, "seed")) >= 0) {
        if (get_int(d, (uint32_t)v, "seed", 0, INT64_MAX, &x, e))
            return -1;
        r->seed = (uint64_t)x;
    }
    if ((v = opt(d, "temperature")) >= 0 &&
        get_num(d, (uint32_t)v, "temperature", 0, 100, 0, &r->temperature, e))
        return -1;
    if ((v = opt(d, "top_p")) >= 0 && get_num(d, (uint32_t)v, "top_p", 0, 1, 1, &r->top_p, e))
        return -1;
    if ((v = opt(d, "stream")) >= 0 && json_bool(d, (uint32_t)v, &r->stream))
        return host_fail(e, HOST_E_INVALID_REQUEST, "stream: expected true or false");
    if ((v = opt(d, "stop")) >= 0 && parse_stop(r, d, (uint32_t)v, e))
        return -1;
    return 0;
}

static int parse_generate(struct host_req *r, const struct json_doc *d, struct host_error *e)
{
    static const char *const fields[] = {"id",         "prompt",      "messages", "tokens",
                                         "max_tokens", "temperature", "top_k",    "top_p",
                                         "seed",       "stop",        "stream",   NULL};
    if (check_fields(d, 0, fields, "", e))
        return -1;
    int64_t p = json_get(d, 0, "prompt"), m = json_get(d, 0, "messages");
    int64_t t = json_get(d, 0, "tokens");
    if ((p >= 0) + (m >= 0) + (t >= 0) != 1)
        return host_fail(e, HOST_E_INVALID_REQUEST,
                         "a request needs exactly one of prompt, "
                         "messages, tokens (or a cmd)");
    r->kind = HOST_REQ_GENERATE;
    r->top_p = 1;
    if (p >= 0) {
        r->input = HOST_IN_PROMPT;
        if (get_str(d, (uint32_t)p, "prompt", &r->prompt, &r->prompt_len, e))
            return -1;
        if (!r->prompt_len)
            return host_fail(e, HOST_E_INVALID_REQUEST, "prompt: empty");
    } else if (m >= 0) {
        r->input = HOST_IN_MESSAGES;
        if (parse_messages(r, d, (uint32_t)m, e))
            return -1;
    } else {
        r->input = HOST_IN_TOKENS;
        if (parse_tokens(r, d, (uint32_t)t, e))
            return -1;
    }
    return parse_sampling(r, d, e);
}

int host_req_parse(struct host_req *r, const char *line, size_t len, struct host_error *e)
{
    struct json_doc d;
    int rc;

    memset(r, 0, sizeof *r);
    strcpy(r->id, "null");
    e->code = HOST_E_NONE;
    e->msg[0] = 0;
    size_t bad = uni_utf8_check(line, len);
    if (bad < len)
        return host_fail(e, HOST_E_INVALID_UTF8, "byte %zu of the line is not well-formed UTF-8",
                         bad);
    if (json_parse(&d, line, len, 0)) {
        host_fail(e, HOST_E_INVALID_JSON, "%s", d.err);
        json_free(&d);
        return -1;
    }
    if (d.v[0].type != JSON_OBJECT) {
        rc = host_fail(e, HOST_E_INVALID_REQUEST, "a request is a JSON object, not %s",
                       json_type_name(d.v[0].type));
    } else if ((rc = parse_id(r, &d, e)) == 0) {
        int64_t cmd = json_get(&d, 0, "cmd");
        rc = cmd >= 0 ? parse_cmd(r, &d, (uint32_t)cmd, e) : parse_generate(r, &d, e);
    }
    json_free(&d);
    return rc;
}

void host_req_free(struct host_req *r)
{
    free(r->prompt);
    for (size_t i = 0; i < r->n_msgs; i++) {
        free(r->msgs[i].role);
        free(r->msgs[i].content);
    }
    free(r->msgs);
    free(r->tokens);
    for (uint32_t i = 0; i < r->n_stop; i++)
        free(r->stop[i]);
    memset(r, 0, sizeof *r);
    strcpy(r->id, "null");
}

/* ---- output --------------------------------------------------------------------------------- */

static int buf_reserve(struct host_buf *b, size_t more)
{
    if (b->oom)
        return -1;
    if (b->n + more <= b->cap)
        return 0;
    size_t cap = b->cap ? b->cap : 256;
    while (cap < b->n + more)
        cap *= 2;
    char *p = realloc(b->p, cap);
    if (!p) {
        b->oom = 1;
        return -1;
    }
    b->p = p;
    b->cap = cap;
    return 0;
}

void host_buf_put(struct host_buf *b, const void *s, size_t n)
{
    if (n && !buf_reserve(b, n)) {
        memcpy(b->p + b->n, s, n);
        b->n += n;
    }
}

void host_buf_puts(struct host_buf *b, const char *s)
{
    host_buf_put(b, s, strlen(s));
}

void host_buf_fmt(struct host_buf *b, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int k = vsnprintf(NULL, 0, fmt, ap);
    va_end(ap);
    if (k < 0 || buf_reserve(b, (size_t)k + 1))
        return;
    va_start(ap, fmt);
    vsnprintf(b->p + b->n, (size_t)k + 1, fmt, ap);
    va_end(ap);
    b->n += (size_t)k;
}

void host_buf_json_str(struct host_buf *b, const char *s, size_t n)
{
    const unsigned char *u = (const unsigned char *)s;
    host_buf_put(b, "\"", 1);
    for (size_t i = 0; i < n;) {
        unsigned c = u[i];
        size_t total, k;
        if (c == '"' || c == '\\') {
            host_buf_put(b, "\\", 1);
            host_buf_put(b, &u[i++], 1);
        } else if (c < 0x20) {
            const char *esc = c == '\n' ? "\\n" : c == '\t' ? "\\t" : c == '\r' ? "\\r" : NULL;
            if (esc)
                host_buf_puts(b, esc);
            else
                host_buf_fmt(b, "\\u%04x", c);
            i++;
        } else if (c < 0x80) {
            host_buf_put(b, &u[i++], 1);
        } else if ((k = uni_utf8_prefix(u + i, n - i, &total)) == total) {
            host_buf_put(b, u + i, k);
            i += k;
        } else {
            host_buf_puts(b, "\\ufffd"); /* one per maximal ill-formed subpart */
            i += k ? k : 1;
        }
    }
    host_buf_put(b, "\"", 1);
}

void host_buf_json_num(struct host_buf *b, double x)
{
    host_buf_fmt(b, "%.3f", isfinite(x) ? x : 0.0);
}

void host_buf_free(struct host_buf *b)
{
    free(b->p);
    memset(b, 0, sizeof *b);
}

void host_rec_error(struct host_buf *b, const char *id, enum host_errc c, const char *msg)
{
    host_buf_fmt(b, "{\"id\":%s,\"error\":{\"code\":\"%s\",\"message\":", id, host_errc_name(c));
    host_buf_json_str(b, msg, strlen(msg));
    host_buf_puts(b, "}}\n");
}

void host_rec_token(struct host_buf *b, const char *id, int32_t token, const char *text, size_t n)
{
    host_buf_fmt(b, "{\"id\":%s,\"token\":%d,\"text\":", id, token);
    host_buf_json_str(b, text, n);
    host_buf_puts(b, "}\n");
}

void host_rec_text(struct host_buf *b, const char *id, const char *text, size_t n)
{
    host_buf_fmt(b, "{\"id\":%s,\"text\":", id);
    host_buf_json_str(b, text, n);
    host_buf_puts(b, "}\n");
}

void host_rec_done(struct host_buf *b, const char *id, const struct host_result *res)
{
    host_buf_fmt(b, "{\"id\":%s,\"done\":true,\"finish_reason\":\"%s\"", id, res->finish);
    if (res->full) {
        host_buf_puts(b, ",\"text\":");
        host_buf_json_str(b, res->text ? res->text : "", res->text_len);
        host_buf_puts(b, ",\"tokens\":[");
        for (size_t i = 0; i < res->n_tokens; i++)
            host_buf_fmt(b, i ? ",%d" : "%d", res->tokens[i]);
        host_buf_puts(b, "]");
    }
    host_buf_fmt(b, ",\"usage\":{\"prompt_tokens\":%u,\"completion_tokens\":%u}",
                 res->prompt_tokens, res->completion_tokens);
    host_buf_puts(b, ",\"timings\":{\"ttft_ms\":");
    host_buf_json_num(b, res->ttft_ms);
    host_buf_puts(b, ",\"prefill_tok_s\":");
    host_buf_json_num(b, res->prefill_tok_s);
    host_buf_puts(b, ",\"decode_tok_s\":");
    host_buf_json_num(b, res->decode_tok_s);
    host_buf_puts(b, ",\"queue_ms\":");
    host_buf_json_num(b, res->queue_ms);
    host_buf_puts(b, ",\"total_ms\":");
    host_buf_json_num(b, res->total_ms);
    host_buf_puts(b, "}}\n");
}
