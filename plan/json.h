/* json.h — a small strict JSON parser (RFC 8259) shared by the planner, the converter and
 * rt_host.
 *
 * The document is parsed once into a flat array of values in document order (a tape, as
 * jsmn does): each value records its type, its span in the source text and, for arrays and
 * objects, its number of children and the index just past its subtree, so siblings are one
 * step apart and no tree is allocated. An object's children alternate key, value. Strings
 * stay in the source; json_string() decodes escapes on demand.
 *
 * Strict: one top-level value followed only by whitespace; no comments, no trailing commas,
 * no leading zeros, no NaN/Infinity, no control characters in strings, valid UTF-8 only,
 * \u escapes with proper surrogate pairs, duplicate keys in one object refused, nesting at
 * most JSON_MAX_DEPTH. Errors give the byte offset, line and column. */
#ifndef JSON_H
#define JSON_H

#include <stddef.h>
#include <stdint.h>

#define JSON_MAX_DEPTH 64
#define JSON_ERR_LEN 160

enum json_type {
    JSON_NULL = 1,
    JSON_FALSE,
    JSON_TRUE,
    JSON_NUMBER,
    JSON_STRING,
    JSON_ARRAY,
    JSON_OBJECT,
};

struct json_value {
    uint32_t type;   /* enum json_type */
    uint32_t start;  /* byte offset of the value in the text (strings: the opening quote) */
    uint32_t len;    /* bytes of the value in the text (strings: quotes included) */
    uint32_t count;  /* arrays: elements; objects: key/value pairs; else 0 */
    uint32_t next;   /* index of the value after this one's subtree */
};

struct json_doc {
    const char *text;          /* the source, not owned; must outlive the doc */
    size_t len;
    struct json_value *v;      /* the tape; v[0] is the top-level value */
    uint32_t n;                /* values used */
    uint32_t cap;              /* values allocated */
    char err[JSON_ERR_LEN];    /* message of the last failure */
};

/* Parse text[0..len) (len < 4 GiB). max_values bounds the tape (0: no bound beyond the
 * text length); a document that needs more is refused, which caps memory on hostile
 * input. Returns 0, or -1 with a message in d->err. Call json_free() either way. */
int json_parse(struct json_doc *d, const char *text, size_t len, uint32_t max_values);
void json_free(struct json_doc *d);

/* Navigation. Indices are tape positions; -1 means "absent". */
int64_t json_get(const struct json_doc *d, uint32_t obj, const char *key); /* value of key */
uint32_t json_first(const struct json_doc *d, uint32_t container); /* first child (index) */
static inline uint32_t json_next(const struct json_doc *d, uint32_t i) { return d->v[i].next; }
/* Iterate an array:  for (uint32_t i = json_first(d,a), k = 0; k < d->v[a].count; k++, i = json_next(d,i))
 * Iterate an object: the same with i stepping over the key, then json_next again for the value. */

/* Typed reads. Each returns 0 on success, -1 if the value has another type or does not fit. */
int json_bool(const struct json_doc *d, uint32_t i, int *out);
int json_i64(const struct json_doc *d, uint32_t i, int64_t *out);   /* integers only: no fraction, no exponent */
int json_f64(const struct json_doc *d, uint32_t i, double *out);    /* any number */

/* Decode string value i into out[0..cap) with escapes resolved, NUL-terminated; *n gets the
 * decoded length (which may include NUL bytes from \u0000). Returns 0, or -1 if it is not
 * a string or does not fit (cap must be at least decoded length + 1). */
int json_string(const struct json_doc *d, uint32_t i, char *out, size_t cap, size_t *n);
/* Bytes the decoded string needs, NUL excluded (strings only). */
size_t json_string_len(const struct json_doc *d, uint32_t i);
/* 1 if string value i decodes to exactly s, else 0 (no allocation). */
int json_string_eq(const struct json_doc *d, uint32_t i, const char *s);

/* Name of a type, for messages ("object", "number", ...). */
const char *json_type_name(uint32_t type);

#endif
