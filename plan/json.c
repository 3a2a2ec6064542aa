/* json.c — strict RFC 8259 parser producing a flat tape. See json.h for the contract.
 *
 * Why this shape: the largest input is a tokenizer.json of ~11 MB and ~1M values, and the
 * inputs are files that arrive from outside, so the parser must be fast, bounded in memory
 * and strict. It makes one pass over the text with an explicit stack of open containers
 * (never recursion), appends one fixed-size record per value to a tape that grows by
 * doubling, and allocates nothing per value. Strings are validated (UTF-8, escapes,
 * surrogate pairs) in place and decoded only when a caller asks.
 *
 * Duplicate keys are checked when an object closes: small objects pairwise, larger ones
 * through an open-addressing hash set of key indices (a vocabulary object has 150k keys, so
 * pairwise would be quadratic). Keys compare by decoded content, so "a" and "\u0061" clash.
 * The hash is unseeded FNV-1a: a file crafted for collisions is slow, never wrong. */
#include "json.h"

#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define JSON_PAIRWISE_MAX 8   /* objects up to this many keys check duplicates pairwise */
#define JSON_NUM_MAX      512 /* longest number json_f64 copies for strtod */

struct parser {
    struct json_doc *d;
    const unsigned char *s; /* the text */
    size_t len;
    size_t pos;
    uint32_t limit;                 /* most values the tape may hold */
    uint32_t stack[JSON_MAX_DEPTH]; /* tape indices of the open containers */
    uint32_t depth;
    uint32_t *set; /* hash set scratch for duplicate keys: tape index + 1, 0 = empty */
    size_t set_cap;
};

/* ---- errors ------------------------------------------------------------------------------- */

/* Record "line L col C: what (offset B)" for byte offset at. Columns count characters (UTF-8
 * continuation bytes do not advance them), both 1-based, as editors show them. */
static int fail_at(struct parser *p, size_t at, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static int fail_at(struct parser *p, size_t at, const char *fmt, ...)
{
    size_t line = 1, col = 1, cap = sizeof p->d->err;
    char *e = p->d->err;
    va_list ap;
    if (at > p->len)
        at = p->len;
    for (size_t i = 0; i < at; i++) {
        if (p->s[i] == '\n') {
            line++;
            col = 1;
        } else if ((p->s[i] & 0xC0) != 0x80) {
            col++;
        }
    }
    /* three bounded appends; a message cut short still starts with its position */
    snprintf(e, cap, "line %zu col %zu: ", line, col);
    size_t k = strlen(e);
    va_start(ap, fmt);
    vsnprintf(e + k, cap - k, fmt, ap);
    va_end(ap);
    k = strlen(e);
    snprintf(e + k, cap - k, " (offset %zu)", at);
    return -1;
}

/* Describe the byte at pos for a message: a printable character, end of input, or a hex code. */
static const char *byte_name(struct parser *p, size_t pos, char buf[16])
{
    if (pos >= p->len)
        return "end of input";
    unsigned c = p->s[pos];
    if (c >= 0x20 && c < 0x7F)
        snprintf(buf, 16, "'%c'", c);
    else
        snprintf(buf, 16, "byte 0x%02X", c);
    return buf;
}

/* ---- tape --------------------------------------------------------------------------------- */

/* Append a value record; returns its index, or -1 when the bound or memory runs out. */
static int64_t tape_push(struct parser *p, uint32_t type, size_t start)
{
    struct json_doc *d = p->d;
    if (d->n >= p->limit)
        return fail_at(p, start, "document has more than %u values", p->limit);
    if (d->n == d->cap) {
        uint64_t cap = d->cap ? (uint64_t)d->cap * 2 : 256;
        if (cap > p->limit)
            cap = p->limit;
        struct json_value *v = realloc(d->v, (size_t)cap * sizeof *v);
        if (!v)
            return fail_at(p, start, "out of memory for %llu values", (unsigned long long)cap);
        d->v = v;
        d->cap = (uint32_t)cap;
    }
    struct json_value *v = &d->v[d->n];
    v->type = type;
    v->start = (uint32_t)start;
    v->len = 0;
    v->count = 0;
    v->next = d->n + 1;
    return d->n++;
}

/* ---- strings ------------------------------------------------------------------------------ */

static int hex4(const unsigned char *s, uint32_t *out)
{
    uint32_t v = 0;
    for (int i = 0; i < 4; i++) {
        unsigned c = s[i], h;
        if (c >= '0' && c <= '9')
            h = c - '0';
        else if ((c | 0x20) >= 'a' && (c | 0x20) <= 'f')
            h = (c | 0x20) - 'a' + 10;
        else
            return -1;
        v = v << 4 | h;
    }
    *out = v;
    return 0;
}

/* Length of the valid UTF-8 sequence at s[0..n), or 0. The ranges are RFC 3629's table: they
 * exclude overlong forms (C0, C1, E0 80..9F, F0 80..8F), UTF-16 surrogates (ED A0..BF) and
 * code points above U+10FFFF (F4 90.., F5..FF). */
static size_t utf8_len(const unsigned char *s, size_t n)
{
    unsigned c = s[0], lo = 0x80, hi = 0xBF;
    size_t k;
    if (c >= 0xC2 && c <= 0xDF)
        k = 2;
    else if (c >= 0xE0 && c <= 0xEF)
        k = 3;
    else if (c >= 0xF0 && c <= 0xF4)
        k = 4;
    else
        return 0;
    if (c == 0xE0)
        lo = 0xA0;
    else if (c == 0xED)
        hi = 0x9F;
    else if (c == 0xF0)
        lo = 0x90;
    else if (c == 0xF4)
        hi = 0x8F;
    if (n < k || s[1] < lo || s[1] > hi)
        return 0;
    for (size_t i = 2; i < k; i++)
        if ((s[i] & 0xC0) != 0x80)
            return 0;
    return k;
}

/* Validate the escape at s[pos] (the backslash); return its length in bytes, or -1. */
static int64_t scan_escape(struct parser *p, size_t pos)
{
    const unsigned char *s = p->s;
    uint32_t u, lo;
    if (pos + 1 >= p->len)
        return fail_at(p, pos, "unterminated string");
    switch (s[pos + 1]) {
    case '"':
    case '\\':
    case '/':
    case 'b':
    case 'f':
    case 'n':
    case 'r':
    case 't':
        return 2;
    case 'u':
        break;
    default:
        return fail_at(p, pos, "invalid escape '\\%c'",
                       s[pos + 1] >= 0x20 && s[pos + 1] < 0x7F ? s[pos + 1] : '?');
    }
    if (pos + 6 > p->len || hex4(s + pos + 2, &u))
        return fail_at(p, pos, "\\u needs four hex digits");
    if (u >= 0xDC00 && u <= 0xDFFF)
        return fail_at(p, pos, "lone low surrogate \\u%04X", u);
    if (u < 0xD800 || u > 0xDBFF)
        return 6;
    if (pos + 12 > p->len || s[pos + 6] != '\\' || s[pos + 7] != 'u' || hex4(s + pos + 8, &lo) ||
        lo < 0xDC00 || lo > 0xDFFF)
        return fail_at(p, pos, "high surrogate \\u%04X not followed by a low surrogate", u);
    return 12;
}

/* Scan the string whose opening quote is at p->pos; leave pos just past the closing quote. */
static int64_t scan_string(struct parser *p)
{
    size_t start = p->pos, i = start + 1;
    const unsigned char *s = p->s;
    int64_t idx = tape_push(p, JSON_STRING, start);
    if (idx < 0)
        return -1;
    for (;;) {
        /* the common case: printable ASCII, neither quote nor backslash */
        while (i < p->len && s[i] >= 0x20 && s[i] < 0x80 && s[i] != '"' && s[i] != '\\')
            i++;
        if (i >= p->len)
            return fail_at(p, start, "unterminated string");
        unsigned c = s[i];
        if (c == '"')
            break;
        if (c == '\\') {
            int64_t k = scan_escape(p, i);
            if (k < 0)
                return -1;
            i += (size_t)k;
        } else if (c < 0x20) {
            return fail_at(p, i, "control character 0x%02X in string", c);
        } else {
            size_t k = utf8_len(s + i, p->len - i);
            if (!k)
                return fail_at(p, i, "invalid UTF-8 byte 0x%02X in string", c);
            i += k;
        }
    }
    p->pos = i + 1;
    p->d->v[idx].len = (uint32_t)(p->pos - start);
    return idx;
}

/* One decoded piece of a validated string: the bytes of one character or escape. */
static size_t str_piece(const unsigned char *s, size_t *i, unsigned char out[4])
{
    uint32_t u = 0, lo = 0xDC00;
    if (s[*i] != '\\') {
        out[0] = s[(*i)++];
        return 1;
    }
    unsigned e = s[*i + 1];
    *i += 2;
    switch (e) {
    case 'b':
        out[0] = '\b';
        return 1;
    case 'f':
        out[0] = '\f';
        return 1;
    case 'n':
        out[0] = '\n';
        return 1;
    case 'r':
        out[0] = '\r';
        return 1;
    case 't':
        out[0] = '\t';
        return 1;
    case 'u':
        break;
    default:
        out[0] = (unsigned char)e;
        return 1; /* " \ / */
    }
    hex4(s + *i, &u);
    *i += 4;
    if (u >= 0xD800 && u <= 0xDBFF) { /* validated: a low surrogate follows */
        hex4(s + *i + 2, &lo);
        *i += 6;
        u = 0x10000 + ((u - 0xD800) << 10) + (lo - 0xDC00);
    }
    if (u < 0x80) {
        out[0] = (unsigned char)u;
        return 1;
    }
    if (u < 0x800) {
        out[0] = (unsigned char)(0xC0 | u >> 6);
        out[1] = (unsigned char)(0x80 | (u & 0x3F));
        return 2;
    }
    if (u < 0x10000) {
        out[0] = (unsigned char)(0xE0 | u >> 12);
        out[1] = (unsigned char)(0x80 | (u >> 6 & 0x3F));
        out[2] = (unsigned char)(0x80 | (u & 0x3F));
        return 3;
    }
    out[0] = (unsigned char)(0xF0 | u >> 18);
    out[1] = (unsigned char)(0x80 | (u >> 12 & 0x3F));
    out[2] = (unsigned char)(0x80 | (u >> 6 & 0x3F));
    out[3] = (unsigned char)(0x80 | (u & 0x3F));
    return 4;
}

/* Streams the decoded bytes of one string value, a piece at a time. */
struct str_iter {
    const unsigned char *s;
    size_t i, end; /* raw position and the closing quote */
    unsigned char buf[4];
    size_t have, at; /* bytes in buf and how many were consumed */
};

static void str_iter_init(struct str_iter *it, const struct json_doc *d, uint32_t v)
{
    it->s = (const unsigned char *)d->text;
    it->i = d->v[v].start + 1;
    it->end = d->v[v].start + d->v[v].len - 1;
    it->have = it->at = 0;
}

/* Next decoded byte, or -1 at the end. */
static int str_iter_next(struct str_iter *it)
{
    if (it->at == it->have) {
        if (it->i >= it->end)
            return -1;
        it->have = str_piece(it->s, &it->i, it->buf);
        it->at = 0;
    }
    return it->buf[it->at++];
}

static int str_has_escape(const struct json_doc *d, uint32_t v)
{
    return memchr(d->text + d->v[v].start + 1, '\\', d->v[v].len - 2) != NULL;
}

static int str_equal(const struct json_doc *d, uint32_t a, uint32_t b)
{
    const struct json_value *va = &d->v[a], *vb = &d->v[b];
    if (!str_has_escape(d, a) && !str_has_escape(d, b))
        return va->len == vb->len && !memcmp(d->text + va->start, d->text + vb->start, va->len);
    struct str_iter ia, ib;
    str_iter_init(&ia, d, a);
    str_iter_init(&ib, d, b);
    for (;;) {
        int x = str_iter_next(&ia), y = str_iter_next(&ib);
        if (x != y)
            return 0;
        if (x < 0)
            return 1;
    }
}

/* FNV-1a of the decoded bytes; raw bytes are the decoded bytes when there is no escape. */
static uint32_t str_hash(const struct json_doc *d, uint32_t v)
{
    uint32_t h = 2166136261u;
    if (!str_has_escape(d, v)) {
        const unsigned char *s = (const unsigned char *)d->text + d->v[v].start + 1;
        for (uint32_t k = 0; k + 2 < d->v[v].len; k++)
            h = (h ^ s[k]) * 16777619u;
        return h;
    }
    struct str_iter it;
    str_iter_init(&it, d, v);
    for (int c; (c = str_iter_next(&it)) >= 0;)
        h = (h ^ (uint32_t)c) * 16777619u;
    return h;
}

/* ---- duplicate keys --------------------------------------------------------------------- */

static int dup_found(struct parser *p, uint32_t key)
{
    const struct json_value *k = &p->d->v[key];
    return fail_at(p, k->start, "duplicate key %.*s", k->len > 60 ? 60 : (int)k->len,
                   p->d->text + k->start);
}

/* Refuse an object (tape index obj, already closed) that holds two equal keys. */
static int check_keys(struct parser *p, uint32_t obj)
{
    const struct json_doc *d = p->d;
    uint32_t n = d->v[obj].count;
    if (n < 2)
        return 0;
    if (n <= JSON_PAIRWISE_MAX) {
        for (uint32_t a = obj + 1, i = 0; i < n; i++, a = d->v[d->v[a].next].next)
            for (uint32_t b = d->v[d->v[a].next].next, j = i + 1; j < n;
                 j++, b = d->v[d->v[b].next].next)
                if (str_equal(d, a, b))
                    return dup_found(p, b);
        return 0;
    }
    size_t cap = 16;
    while (cap < (size_t)n * 2)
        cap *= 2;
    if (cap > p->set_cap) {
        uint32_t *set = realloc(p->set, cap * sizeof *set);
        if (!set)
            return fail_at(p, d->v[obj].start, "out of memory checking %u keys", n);
        p->set = set;
        p->set_cap = cap;
    }
    memset(p->set, 0, cap * sizeof *p->set);
    for (uint32_t a = obj + 1, i = 0; i < n; i++, a = d->v[d->v[a].next].next) {
        size_t h = str_hash(d, a) & (cap - 1);
        for (; p->set[h]; h = (h + 1) & (cap - 1))
            if (str_equal(d, p->set[h] - 1, a))
                return dup_found(p, a);
        p->set[h] = a + 1;
    }
    return 0;
}

/* ---- scalars ---------------------------------------------------------------------------- */

static int is_digit(unsigned c)
{
    return c >= '0' && c <= '9';
}

/* -? (0 | [1-9][0-9]*) (. [0-9]+)? ([eE] [+-]? [0-9]+)?  — RFC 8259 §6 */
static int64_t scan_number(struct parser *p)
{
    const unsigned char *s = p->s;
    size_t start = p->pos, i = start, n = p->len;
    if (i < n && s[i] == '-')
        i++;
    if (i >= n || !is_digit(s[i]))
        return fail_at(p, i, "expected a digit in number");
    if (s[i] == '0' && i + 1 < n && is_digit(s[i + 1]))
        return fail_at(p, i, "leading zero in number");
    while (i < n && is_digit(s[i]))
        i++;
    if (i < n && s[i] == '.') {
        if (++i >= n || !is_digit(s[i]))
            return fail_at(p, i, "expected a digit after the decimal point");
        while (i < n && is_digit(s[i]))
            i++;
    }
    if (i < n && (s[i] == 'e' || s[i] == 'E')) {
        if (++i < n && (s[i] == '+' || s[i] == '-'))
            i++;
        if (i >= n || !is_digit(s[i]))
            return fail_at(p, i, "expected a digit in the exponent");
        while (i < n && is_digit(s[i]))
            i++;
    }
    int64_t idx = tape_push(p, JSON_NUMBER, start);
    if (idx < 0)
        return -1;
    p->d->v[idx].len = (uint32_t)(i - start);
    p->pos = i;
    return idx;
}

static int64_t scan_literal(struct parser *p, const char *word, uint32_t type)
{
    size_t k = strlen(word);
    if (p->len - p->pos < k || memcmp(p->s + p->pos, word, k))
        return fail_at(p, p->pos, "invalid literal (expected %s)", word);
    int64_t idx = tape_push(p, type, p->pos);
    if (idx < 0)
        return -1;
    p->d->v[idx].len = (uint32_t)k;
    p->pos += k;
    return idx;
}

/* ---- structure ----------------------------------------------------------------------------- */

static void skip_ws(struct parser *p)
{
    while (p->pos < p->len) {
        unsigned c = p->s[p->pos];
        if (c != ' ' && c != '\n' && c != '\r' && c != '\t')
            break;
        p->pos++;
    }
}

static int peek(struct parser *p)
{
    return p->pos < p->len ? p->s[p->pos] : -1;
}

/* A key, its colon and the whitespace after: leaves pos at the member's value. */
static int scan_key(struct parser *p, uint32_t obj)
{
    char b[16];
    if (peek(p) != '"')
        return fail_at(p, p->pos, "expected a string key, got %s", byte_name(p, p->pos, b));
    if (scan_string(p) < 0)
        return -1;
    p->d->v[obj].count++;
    skip_ws(p);
    if (peek(p) != ':')
        return fail_at(p, p->pos, "expected ':' after key, got %s", byte_name(p, p->pos, b));
    p->pos++;
    return 0;
}

/* Begin a value at pos. Containers are pushed on the stack; if one is empty it is closed at
 * once. Returns 1 if a container was opened and still waits for its first member, else 0. */
static int open_value(struct parser *p)
{
    char b[16];
    int64_t idx;
    skip_ws(p);
    int c = peek(p);
    if (p->depth && p->d->v[p->stack[p->depth - 1]].type == JSON_ARRAY)
        p->d->v[p->stack[p->depth - 1]].count++; /* object members count at their key */
    if (c == '{' || c == '[') {
        if (p->depth == JSON_MAX_DEPTH)
            return fail_at(p, p->pos, "nesting deeper than %d", JSON_MAX_DEPTH);
        if ((idx = tape_push(p, c == '{' ? JSON_OBJECT : JSON_ARRAY, p->pos)) < 0)
            return -1;
        p->stack[p->depth++] = (uint32_t)idx;
        p->pos++;
        skip_ws(p);
        if (peek(p) == (c == '{' ? '}' : ']'))
            return 0; /* empty: close_top() sees the bracket */
        if (c == '{' && scan_key(p, (uint32_t)idx) < 0)
            return -1;
        return 1;
    }
    if (c == '"')
        idx = scan_string(p);
    else if (c == '-' || is_digit((unsigned)c))
        idx = scan_number(p);
    else if (c == 't')
        idx = scan_literal(p, "true", JSON_TRUE);
    else if (c == 'f')
        idx = scan_literal(p, "false", JSON_FALSE);
    else if (c == 'n')
        idx = scan_literal(p, "null", JSON_NULL);
    else
        return fail_at(p, p->pos, "expected a value, got %s", byte_name(p, p->pos, b));
    return idx < 0 ? -1 : 0;
}

/* After a value inside the top container: a comma (returns 1: another value follows) or the
 * closing bracket (returns 0 after closing the container). */
static int after_value(struct parser *p)
{
    char b[16];
    uint32_t top = p->stack[p->depth - 1];
    struct json_value *v = &p->d->v[top];
    int obj = v->type == JSON_OBJECT;
    int close = obj ? '}' : ']';
    skip_ws(p);
    int c = peek(p);
    if (c == close) {
        p->pos++;
        v->len = (uint32_t)(p->pos - v->start);
        v->next = p->d->n;
        p->depth--;
        return obj ? check_keys(p, top) : 0;
    }
    if (c != ',')
        return fail_at(p, p->pos, "expected ',' or '%c' in %s, got %s", close,
                       obj ? "object" : "array", byte_name(p, p->pos, b));
    size_t comma = p->pos++;
    skip_ws(p);
    if (peek(p) == close)
        return fail_at(p, comma, "trailing comma in %s", obj ? "object" : "array");
    if (obj && scan_key(p, top) < 0)
        return -1;
    return 1;
}

/* The whole document, iteratively: open a value, then close every container it completes. */
static int parse_all(struct parser *p)
{
    char b[16];
    for (;;) {
        int r = open_value(p);
        if (r < 0)
            return -1;
        if (r == 1)
            continue; /* parse the first member of the container just opened */
        for (;;) {
            if (!p->depth)
                goto done;
            r = after_value(p);
            if (r < 0)
                return -1;
            if (r == 1)
                break;
        }
    }
done:
    skip_ws(p);
    if (p->pos != p->len)
        return fail_at(p, p->pos, "unexpected %s after the document", byte_name(p, p->pos, b));
    return 0;
}

/* ---- public --------------------------------------------------------------------------------- */

int json_parse(struct json_doc *d, const char *text, size_t len, uint32_t max_values)
{
    struct parser p = {.d = d, .s = (const unsigned char *)text, .len = len};
    memset(d, 0, sizeof *d);
    d->text = text;
    d->len = len;
    if (len >= UINT32_MAX) {
        snprintf(d->err, sizeof d->err, "document of %zu bytes is too large (limit 4 GiB)", len);
        return -1;
    }
    /* every value takes at least one byte, so the text length bounds the tape anyway */
    p.limit = max_values && max_values < len ? max_values : (uint32_t)len;
    skip_ws(&p);
    if (p.pos == len) {
        free(p.set);
        return fail_at(&p, p.pos, "empty document");
    }
    int r = parse_all(&p);
    free(p.set);
    return r;
}

void json_free(struct json_doc *d)
{
    free(d->v);
    d->v = NULL;
    d->n = d->cap = 0;
}

int64_t json_get(const struct json_doc *d, uint32_t obj, const char *key)
{
    if (obj >= d->n || d->v[obj].type != JSON_OBJECT)
        return -1;
    for (uint32_t i = obj + 1, k = 0; k < d->v[obj].count; k++) {
        uint32_t val = d->v[i].next;
        if (json_string_eq(d, i, key))
            return val;
        i = d->v[val].next;
    }
    return -1;
}

/* The first child sits right after its container on the tape; with no children this is the
 * container's successor, which the caller's count loop never reads. */
uint32_t json_first(const struct json_doc *d, uint32_t container)
{
    (void)d;
    return container + 1;
}

int json_bool(const struct json_doc *d, uint32_t i, int *out)
{
    if (i >= d->n || (d->v[i].type != JSON_TRUE && d->v[i].type != JSON_FALSE))
        return -1;
    *out = d->v[i].type == JSON_TRUE;
    return 0;
}

/* Digits accumulate as a negative number so INT64_MIN, whose magnitude has no positive
 * int64, needs no special case. */
int json_i64(const struct json_doc *d, uint32_t i, int64_t *out)
{
    if (i >= d->n || d->v[i].type != JSON_NUMBER)
        return -1;
    const char *s = d->text + d->v[i].start, *e = s + d->v[i].len;
    int neg = *s == '-';
    int64_t v = 0;
    for (s += neg; s < e; s++) {
        if (!is_digit((unsigned char)*s))
            return -1; /* fraction or exponent */
        int dig = *s - '0';
        if (v < (INT64_MIN + dig) / 10)
            return -1;
        v = v * 10 - dig;
    }
    if (!neg && v == INT64_MIN)
        return -1;
    *out = neg ? v : -v;
    return 0;
}

/* strtod needs a NUL-terminated copy; a number longer than JSON_NUM_MAX is refused rather
 * than allocated for (no real file has one). strtod follows the C locale, which a program
 * keeps unless it calls setlocale. Values that overflow a double are refused. */
int json_f64(const struct json_doc *d, uint32_t i, double *out)
{
    char buf[JSON_NUM_MAX];
    if (i >= d->n || d->v[i].type != JSON_NUMBER || d->v[i].len >= sizeof buf)
        return -1;
    memcpy(buf, d->text + d->v[i].start, d->v[i].len);
    buf[d->v[i].len] = 0;
    double v = strtod(buf, NULL);
    if (isinf(v))
        return -1;
    *out = v;
    return 0;
}

size_t json_string_len(const struct json_doc *d, uint32_t i)
{
    unsigned char piece[4];
    size_t n = 0;
    if (i >= d->n || d->v[i].type != JSON_STRING)
        return 0;
    const unsigned char *s = (const unsigned char *)d->text;
    size_t at = d->v[i].start + 1, end = d->v[i].start + d->v[i].len - 1;
    while (at < end)
        n += str_piece(s, &at, piece);
    return n;
}

int json_string(const struct json_doc *d, uint32_t i, char *out, size_t cap, size_t *n)
{
    unsigned char piece[4];
    size_t w = 0;
    if (i >= d->n || d->v[i].type != JSON_STRING || cap == 0)
        return -1;
    const unsigned char *s = (const unsigned char *)d->text;
    size_t at = d->v[i].start + 1, end = d->v[i].start + d->v[i].len - 1;
    while (at < end) {
        size_t k = str_piece(s, &at, piece);
        if (w + k >= cap)
            return -1;
        memcpy(out + w, piece, k);
        w += k;
    }
    out[w] = 0;
    if (n)
        *n = w;
    return 0;
}

int json_string_eq(const struct json_doc *d, uint32_t i, const char *str)
{
    if (i >= d->n || d->v[i].type != JSON_STRING)
        return 0;
    size_t k = strlen(str);
    const struct json_value *v = &d->v[i];
    if (!str_has_escape(d, i))
        return v->len - 2 == k && !memcmp(d->text + v->start + 1, str, k);
    struct str_iter it;
    str_iter_init(&it, d, i);
    for (const unsigned char *s = (const unsigned char *)str;; s++) {
        int c = str_iter_next(&it);
        if (c < 0)
            return *s == 0;
        if (*s == 0 || c != *s)
            return 0;
    }
}

const char *json_type_name(uint32_t type)
{
    static const char *names[] = {"?",      "null",   "boolean", "boolean",
                                  "number", "string", "array",   "object"};
    return type < sizeof names / sizeof *names ? names[type] : "?";
}
