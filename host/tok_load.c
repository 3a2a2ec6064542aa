/* tok_load.c — tokenizer.json to struct tok. Every check happens here, once: the encode and
 * decode paths trust what this file built.
 *
 * The file is refused, with a message naming the part, when it asks for anything tok.h does
 * not list: a pre-tokenizer other than the two Qwen patterns, a normalizer other than NFC, a
 * merge naming a token the vocabulary lacks, a byte with no token, ids used twice, and so on.
 * Guessing at an unknown component would encode differently from the model's training data
 * without any sign of it; a refusal at load costs one clear line instead. */
#include "host/tok_impl.h"
#include "host/unicode.h"
#include "plan/json.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* The pre-tokenizer regexes as tokenizer.json spells them (JSON escapes resolved). */
static const char PAT_QWEN2[] =
    "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|"
    "\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+";
static const char PAT_QWEN35[] =
    "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?[\\p{L}\\p{M}]+|\\p{N}| ?[^\\s\\p{L}\\p{M}\\p{N}]+"
    "[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+";

#define TOK_MAX_FILE (1u << 30) /* tokenizer.json larger than this is refused */

struct loader {
    struct json_doc d;
    struct tok *t;
    char *err;
    char *tmp[3]; /* scratch for decoded strings (a merge needs two at once, plus its join) */
    size_t tmp_cap[3];
    size_t pool_cap;
    size_t nvocab;     /* entries in model.vocab (HF's get_vocab_size for BPE) */
    int64_t added_max; /* largest id given to an added token so far, -1 before the first */
};

static int fail(struct loader *ld, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static int fail(struct loader *ld, const char *fmt, ...)
{
    va_list ap;
    int k = snprintf(ld->err, TOK_ERR_LEN, "tokenizer.json: ");
    va_start(ap, fmt);
    vsnprintf(ld->err + k, TOK_ERR_LEN - (size_t)k, fmt, ap);
    va_end(ap);
    return -1;
}

/* ---- small JSON helpers ------------------------------------------------------------------ */

static int is_type(const struct loader *ld, int64_t i, uint32_t type)
{
    return i >= 0 && ld->d.v[i].type == type;
}

/* Scratch slot k with room for need bytes, or NULL. */
static char *scratch(struct loader *ld, int k, size_t need)
{
    if (need > ld->tmp_cap[k]) {
        char *p = realloc(ld->tmp[k], need);
        if (!p)
            return NULL;
        ld->tmp[k] = p;
        ld->tmp_cap[k] = need;
    }
    return ld->tmp[k];
}

/* String value i decoded, in scratch slot k (or pointing into the text when unescaped). */
static int get_str(struct loader *ld, int64_t i, int k, const char **s, size_t *n)
{
    if (!is_type(ld, i, JSON_STRING))
        return -1;
    const struct json_value *v = &ld->d.v[i];
    const char *raw = ld->d.text + v->start + 1;
    if (!memchr(raw, '\\', v->len - 2)) {
        *s = raw;
        *n = v->len - 2;
        return 0;
    }
    size_t need = json_string_len(&ld->d, (uint32_t)i) + 1;
    char *buf = scratch(ld, k, need);
    if (!buf)
        return -1;
    *s = buf;
    return json_string(&ld->d, (uint32_t)i, buf, need, n);
}

/* Short string value i into buf[cap] for names and messages: "" when absent or not a
 * string, "?" when too long. */
static const char *get_name(struct loader *ld, int64_t i, char *buf, size_t cap)
{
    size_t n;
    buf[0] = 0;
    if (is_type(ld, i, JSON_STRING) && json_string(&ld->d, (uint32_t)i, buf, cap, &n))
        snprintf(buf, cap, "?");
    return buf;
}

/* Type name of an object's "type" member, for messages and dispatch ("" when missing). */
static const char *type_of(struct loader *ld, int64_t obj, char *buf, size_t cap)
{
    buf[0] = 0;
    if (is_type(ld, obj, JSON_OBJECT))
        get_name(ld, json_get(&ld->d, (uint32_t)obj, "type"), buf, cap);
    return buf;
}

/* Boolean member key of obj: 0/1, dflt when absent, -1 when not a boolean. */
static int get_bool(struct loader *ld, int64_t obj, const char *key, int dflt)
{
    int64_t i = json_get(&ld->d, (uint32_t)obj, key);
    int b;
    if (i < 0)
        return dflt;
    return json_bool(&ld->d, (uint32_t)i, &b) ? -1 : b;
}

/* 1 if member key of obj is absent, null, or the empty string. */
static int absent_or_empty(struct loader *ld, int64_t obj, const char *key)
{
    int64_t i = json_get(&ld->d, (uint32_t)obj, key);
    return i < 0 || ld->d.v[i].type == JSON_NULL || (is_type(ld, i, JSON_STRING) && ld->d.v[i].len == 2);
}

/* ---- the byte-level alphabet --------------------------------------------------------------- */

/* GPT-2's bytes_to_unicode: printable bytes ('!'..'~', 0xA1..0xAC, 0xAE..0xFF) stand for
 * themselves; the other 68 bytes, in order, become U+0100..U+0143. Returns the byte that
 * code point cp stands for, or -1 if cp is outside the alphabet. */
static int alphabet_byte(uint32_t cp)
{
    if ((cp >= 0x21 && cp <= 0x7E) || (cp >= 0xA1 && cp <= 0xAC) || (cp >= 0xAE && cp <= 0xFF))
        return (int)cp;
    if (cp < 0x100 || cp >= 0x144)
        return -1;
    uint32_t k = cp - 0x100;
    return k < 33 ? (int)k : k < 67 ? (int)(0x7F + k - 33) : 0xAD;
}

/* Map s[0..n) (well-formed UTF-8) through the alphabet into out; returns the byte count, or
 * -1 if some character is outside the alphabet. */
static long alphabet_decode(const char *s, size_t n, char *out)
{
    size_t w = 0;
    for (size_t i = 0; i < n;) {
        uint32_t cp;
        i += uni_utf8_decode((const unsigned char *)s + i, &cp);
        int b = alphabet_byte(cp);
        if (b < 0)
            return -1;
        out[w++] = (char)b;
    }
    return (long)w;
}

/* ---- maps ------------------------------------------------------------------------------------ */

uint64_t tok_hash(const void *s, size_t n)
{
    const unsigned char *p = s;
    uint64_t h = 0xcbf29ce484222325ull;
    for (size_t i = 0; i < n; i++)
        h = (h ^ p[i]) * 0x100000001b3ull;
    return h ^ (h >> 29);
}

int32_t tok_map_get(const struct tok *t, const struct tok_map *m, const void *s, size_t n)
{
    if (!m->slot)
        return -1;
    for (size_t i = tok_hash(s, n) & m->mask;; i = (i + 1) & m->mask) {
        uint32_t v = m->slot[i];
        if (!v)
            return -1;
        int32_t id = (int32_t)(v - 1);
        if (t->len[id] == n && !memcmp(t->pool + t->off[id], s, n))
            return id;
    }
}

static int map_init(struct tok_map *m, size_t count)
{
    size_t cap = 64;
    while (cap < count * 2)
        cap *= 2;
    m->slot = calloc(cap, sizeof *m->slot);
    m->mask = cap - 1;
    return m->slot ? 0 : -1;
}

/* Insert id (its bytes already in the pool); the caller has checked the key is new. */
static void map_put(struct tok *t, struct tok_map *m, int32_t id)
{
    size_t i = tok_hash(t->pool + t->off[id], t->len[id]) & m->mask;
    while (m->slot[i])
        i = (i + 1) & m->mask;
    m->slot[i] = (uint32_t)id + 1;
}

/* Append bytes to the pool; *off gets where they start. */
static int pool_append(struct loader *ld, const char *s, size_t n, uint32_t *off)
{
    struct tok *t = ld->t;
    if (t->pool_len + n > ld->pool_cap) {
        size_t cap = ld->pool_cap ? ld->pool_cap : 1 << 20;
        while (cap < t->pool_len + n)
            cap *= 2;
        if (cap > UINT32_MAX)
            return fail(ld, "tokens take more than 4 GiB");
        char *p = realloc(t->pool, cap);
        if (!p)
            return fail(ld, "out of memory");
        t->pool = p;
        ld->pool_cap = cap;
    }
    memcpy(t->pool + t->pool_len, s, n);
    *off = (uint32_t)t->pool_len;
    t->pool_len += n;
    return 0;
}

/* Append bytes to the pool as the text of id. */
static int pool_put(struct loader *ld, int32_t id, const char *s, size_t n)
{
    struct tok *t = ld->t;
    if (pool_append(ld, s, n, &t->off[id]))
        return -1;
    t->len[id] = (uint32_t)n;
    if (n > t->max_len)
        t->max_len = n;
    return 0;
}

/* ---- pipeline components ---------------------------------------------------------------------- */

static int load_normalizer(struct loader *ld, int64_t n)
{
    char ty[32];
    if (n < 0 || ld->d.v[n].type == JSON_NULL)
        return 0;
    type_of(ld, n, ty, sizeof ty);
    if (!strcmp(ty, "NFC")) {
        ld->t->nfc = 1;
        return 0;
    }
    if (strcmp(ty, "Sequence"))
        return fail(ld, "normalizer \"%s\" is not supported (only NFC, or a Sequence of NFC)", ty);
    int64_t a = json_get(&ld->d, (uint32_t)n, "normalizers");
    if (!is_type(ld, a, JSON_ARRAY))
        return fail(ld, "normalizer Sequence has no \"normalizers\" array");
    for (uint32_t i = json_first(&ld->d, (uint32_t)a), k = 0; k < ld->d.v[a].count; k++, i = json_next(&ld->d, i)) {
        if (strcmp(type_of(ld, i, ty, sizeof ty), "NFC"))
            return fail(ld, "normalizer \"%s\" in the Sequence is not supported (only NFC)", ty);
        ld->t->nfc = 1;
    }
    return 0;
}

static int load_split(struct loader *ld, int64_t sp)
{
    char beh[32] = "";
    size_t n;
    const char *re;
    int64_t pat = json_get(&ld->d, (uint32_t)sp, "pattern");
    int64_t rx = is_type(ld, pat, JSON_OBJECT) ? json_get(&ld->d, (uint32_t)pat, "Regex") : -1;
    if (get_str(ld, rx, 0, &re, &n))
        return fail(ld, "pre_tokenizer Split needs a {\"Regex\": ...} pattern");
    if (n == sizeof PAT_QWEN2 - 1 && !memcmp(re, PAT_QWEN2, n))
        ld->t->pattern = TOK_PAT_QWEN2;
    else if (n == sizeof PAT_QWEN35 - 1 && !memcmp(re, PAT_QWEN35, n))
        ld->t->pattern = TOK_PAT_QWEN35;
    else
        return fail(ld, "pre_tokenizer Split regex \"%.*s%s\" is not one of the qwen2/qwen35 patterns",
                    (int)(n < 60 ? n : 60), re, n < 60 ? "" : "...");
    get_name(ld, json_get(&ld->d, (uint32_t)sp, "behavior"), beh, sizeof beh);
    if (strcmp(beh, "Isolated"))
        return fail(ld, "pre_tokenizer Split behavior \"%s\" is not supported (only Isolated)", beh);
    if (get_bool(ld, sp, "invert", 0) != 0)
        return fail(ld, "pre_tokenizer Split with invert is not supported");
    return 0;
}

/* HF's ByteLevel defaults both flags to true when the file leaves them out. */
static int load_bytelevel(struct loader *ld, int64_t bl, const char *what)
{
    if (get_bool(ld, bl, "add_prefix_space", 1) != 0)
        return fail(ld, "%s ByteLevel with add_prefix_space is not supported", what);
    if (get_bool(ld, bl, "use_regex", 1) != 0)
        return fail(ld, "%s ByteLevel with use_regex is not supported (the Split carries the regex)", what);
    return 0;
}

/* Sequence [Split(regex), ByteLevel], as every Qwen tokenizer.json has it. */
static int load_pretok(struct loader *ld, int64_t p)
{
    char ty[32], t0[32], t1[32];
    type_of(ld, p, ty, sizeof ty);
    if (strcmp(ty, "Sequence"))
        return fail(ld, "pre_tokenizer \"%s\" is not supported (only Sequence [Split, ByteLevel])",
                    p < 0 || ld->d.v[p].type == JSON_NULL ? "null" : ty);
    int64_t a = json_get(&ld->d, (uint32_t)p, "pretokenizers");
    if (!is_type(ld, a, JSON_ARRAY) || ld->d.v[a].count != 2)
        return fail(ld, "pre_tokenizer Sequence must hold exactly [Split, ByteLevel]");
    uint32_t s = json_first(&ld->d, (uint32_t)a), b = json_next(&ld->d, s);
    type_of(ld, s, t0, sizeof t0);
    type_of(ld, b, t1, sizeof t1);
    if (strcmp(t0, "Split") || strcmp(t1, "ByteLevel"))
        return fail(ld, "pre_tokenizer Sequence [%s, %s] is not supported (only [Split, ByteLevel])", t0, t1);
    return load_split(ld, s) || load_bytelevel(ld, b, "pre_tokenizer");
}

static int load_decoder_post(struct loader *ld)
{
    char ty[32];
    int64_t dec = json_get(&ld->d, 0, "decoder"), post = json_get(&ld->d, 0, "post_processor");
    if (strcmp(type_of(ld, dec, ty, sizeof ty), "ByteLevel"))
        return fail(ld, "decoder \"%s\" is not supported (only ByteLevel)", dec < 0 ? "missing" : ty);
    /* The post-processor only acts when HF is asked to add special tokens; encode never adds
     * any, so only the no-op kinds are accepted, to notice a tokenizer that expects a BOS. */
    if (post >= 0 && ld->d.v[post].type != JSON_NULL && strcmp(type_of(ld, post, ty, sizeof ty), "ByteLevel"))
        return fail(ld, "post_processor \"%s\" is not supported (only ByteLevel or null)", ty);
    return 0;
}

/* ---- model: vocab and merges ------------------------------------------------------------------- */

static int load_model_options(struct loader *ld, int64_t m)
{
    char ty[32];
    if (!is_type(ld, m, JSON_OBJECT))
        return fail(ld, "no \"model\" object");
    type_of(ld, m, ty, sizeof ty);
    if (strcmp(ty, "BPE") && (ty[0] || json_get(&ld->d, (uint32_t)m, "merges") < 0))
        return fail(ld, "model \"%s\" is not supported (only BPE)", ty[0] ? ty : "without type");
    int64_t dr = json_get(&ld->d, (uint32_t)m, "dropout");
    if (dr >= 0 && ld->d.v[dr].type != JSON_NULL)
        return fail(ld, "model dropout is not supported (must be null)");
    if (!absent_or_empty(ld, m, "continuing_subword_prefix") || !absent_or_empty(ld, m, "end_of_word_suffix"))
        return fail(ld, "model continuing_subword_prefix / end_of_word_suffix are not supported");
    int im = get_bool(ld, m, "ignore_merges", 0);
    if (im < 0)
        return fail(ld, "model ignore_merges must be a boolean");
    ld->t->ignore_merges = im;
    return 0;
}

/* Largest id named by the vocab and the added tokens, or -1 with a message. */
static int64_t max_id(struct loader *ld, int64_t vocab, int64_t added)
{
    int64_t mx = -1, id;
    for (uint32_t i = json_first(&ld->d, (uint32_t)vocab), k = 0; k < ld->d.v[vocab].count; k++) {
        uint32_t v = json_next(&ld->d, i);
        if (json_i64(&ld->d, v, &id) || id < 0 || id >= TOK_MAX_VOCAB)
            return fail(ld, "vocab entry %u: id is not an integer in [0, %u)", k, TOK_MAX_VOCAB);
        mx = id > mx ? id : mx;
        i = json_next(&ld->d, v);
    }
    for (uint32_t i = json_first(&ld->d, (uint32_t)added), k = 0; added >= 0 && k < ld->d.v[added].count;
         k++, i = json_next(&ld->d, i)) {
        int64_t v = is_type(ld, i, JSON_OBJECT) ? json_get(&ld->d, i, "id") : -1;
        if (v < 0 || json_i64(&ld->d, (uint32_t)v, &id) || id < 0 || id >= TOK_MAX_VOCAB)
            return fail(ld, "added_tokens[%u]: \"id\" is not an integer in [0, %u)", k, TOK_MAX_VOCAB);
        mx = id > mx ? id : mx;
    }
    if (mx < 0)
        return fail(ld, "the vocabulary is empty");
    return mx;
}

/* One vocab entry: key string i, id already range-checked. Returns 0 for a token spelled in
 * the byte-level alphabet, 1 for one with other characters, -1 on error. */
static int load_token(struct loader *ld, uint32_t i, int32_t id)
{
    struct tok *t = ld->t;
    const char *s;
    size_t n;
    if (get_str(ld, i, 0, &s, &n))
        return fail(ld, "out of memory");
    if (n == 0 || n > TOK_MAX_TOKEN)
        return fail(ld, "vocab entry %d has length %zu", id, n);
    if (t->flags[id])
        return fail(ld, "vocab id %d is used twice", id);
    char *buf = scratch(ld, 2, n);
    if (!buf)
        return fail(ld, "out of memory");
    long b = alphabet_decode(s, n, buf);
    /* HF's ByteLevel decoder keeps a token with characters outside the alphabet as its
     * UTF-8; BPE over bytes can never produce such a token, so it only needs decoding. */
    if (pool_put(ld, id, b < 0 ? s : buf, b < 0 ? n : (size_t)b))
        return -1;
    t->flags[id] = TOKF_USED;
    return b < 0;
}

static int load_vocab(struct loader *ld, int64_t vocab)
{
    struct tok *t = ld->t;
    size_t nother = 0, count = ld->d.v[vocab].count;
    ld->nvocab = count;
    uint8_t *alpha = calloc(t->nids, 1);
    if (!alpha || map_init(&t->vocab, count) || map_init(&t->other, 16))
        return free(alpha), fail(ld, "out of memory");
    for (uint32_t i = json_first(&ld->d, (uint32_t)vocab), k = 0; k < count; k++) {
        uint32_t v = json_next(&ld->d, i);
        int64_t id;
        json_i64(&ld->d, v, &id);
        int r = load_token(ld, i, (int32_t)id);
        if (r < 0)
            return free(alpha), -1;
        alpha[id] = r == 0;
        nother += (size_t)r;
        i = json_next(&ld->d, v);
    }
    if (nother) {
        free(t->other.slot);
        if (map_init(&t->other, nother))
            return free(alpha), fail(ld, "out of memory");
    }
    for (size_t id = 0; id < t->nids; id++)
        if (t->flags[id] & TOKF_USED)
            map_put(t, alpha[id] ? &t->vocab : &t->other, (int32_t)id);
    free(alpha);
    for (int b = 0; b < 256; b++) {
        char c = (char)b;
        t->byte_id[b] = tok_map_get(t, &t->vocab, &c, 1);
        if (t->byte_id[b] < 0)
            return fail(ld, "the vocabulary has no token for byte 0x%02X", b);
    }
    return 0;
}

/* Id of a merge's token s[0..n), spelled in the alphabet when *nb >= 0 (its bytes then in
 * bytes[0..*nb)), or -1 when the vocabulary lacks it. */
static int32_t merge_part(struct loader *ld, const char *s, size_t n, char *bytes, long *nb)
{
    *nb = alphabet_decode(s, n, bytes);
    if (*nb >= 0)
        return tok_map_get(ld->t, &ld->t->vocab, bytes, (size_t)*nb);
    return tok_map_get(ld->t, &ld->t->other, s, n);
}

static void merge_put(struct tok *t, int32_t a, int32_t b, uint32_t rank, int32_t id)
{
    uint64_t key = ((uint64_t)(uint32_t)a << 32) | (uint32_t)b;
    size_t i = (size_t)((key * 0x9E3779B97F4A7C15ull) >> t->merge_shift);
    while (t->merges[i].key != UINT64_MAX && t->merges[i].key != key)
        i = (i + 1) & t->merge_mask;
    /* A pair listed twice keeps its last rank, as HF's map built from the list does. */
    t->merges[i] = (struct tok_merge){key, rank, id};
}

/* Merge number k: the two token strings a and b. Their join must be a token too. */
static int load_merge(struct loader *ld, uint32_t k, const char *a, size_t na, const char *b, size_t nb)
{
    char *buf = scratch(ld, 2, 2 * (na + nb) + 1);
    long ba, bb;
    if (!buf)
        return fail(ld, "out of memory");
    int32_t ia = merge_part(ld, a, na, buf, &ba);
    int32_t ib = merge_part(ld, b, nb, buf + (ba < 0 ? 0 : ba), &bb);
    if (ia < 0 || ib < 0)
        return fail(ld, "merges[%u]: token \"%.*s\" is not in the vocabulary", k,
                    (int)(ia < 0 ? na : nb), ia < 0 ? a : b);
    int32_t id;
    if (ba >= 0 && bb >= 0) {
        id = tok_map_get(ld->t, &ld->t->vocab, buf, (size_t)(ba + bb));
    } else {
        /* Not in the alphabet: the join is looked up as UTF-8; BPE never meets it. */
        char *j = buf + na + nb;
        memcpy(j, a, na);
        memcpy(j + na, b, nb);
        id = tok_map_get(ld->t, &ld->t->other, j, na + nb);
    }
    if (id < 0)
        return fail(ld, "merges[%u]: \"%.*s\" + \"%.*s\" is not in the vocabulary", k, (int)na, a, (int)nb, b);
    if (ba >= 0 && bb >= 0)
        merge_put(ld->t, ia, ib, k, id);
    return 0;
}

static int load_merges(struct loader *ld, int64_t merges)
{
    struct tok *t = ld->t;
    uint32_t count = ld->d.v[merges].count;
    size_t cap = 64;
    unsigned bits = 6;
    while (cap < (size_t)count * 2)
        cap *= 2, bits++;
    t->merges = malloc(cap * sizeof *t->merges);
    if (!t->merges)
        return fail(ld, "out of memory");
    for (size_t i = 0; i < cap; i++)
        t->merges[i].key = UINT64_MAX;
    t->merge_mask = cap - 1;
    t->merge_shift = 64 - bits;
    for (uint32_t i = json_first(&ld->d, (uint32_t)merges), k = 0; k < count; k++, i = json_next(&ld->d, i)) {
        const char *a, *b;
        size_t na, nb;
        if (is_type(ld, i, JSON_ARRAY) && ld->d.v[i].count == 2) {
            uint32_t e = json_first(&ld->d, i);
            if (get_str(ld, e, 0, &a, &na) || get_str(ld, json_next(&ld->d, e), 1, &b, &nb))
                return fail(ld, "merges[%u] is not a pair of strings", k);
        } else if (!get_str(ld, i, 0, &a, &na)) {
            /* "a b": exactly one space, as HF splits it (byte-level tokens spell a space Ġ). */
            const char *sp = memchr(a, ' ', na);
            if (!sp || memchr(sp + 1, ' ', na - (size_t)(sp + 1 - a)))
                return fail(ld, "merges[%u] \"%.*s\" is not two tokens separated by one space", k,
                            (int)(na < 60 ? na : 60), a);
            b = sp + 1;
            nb = na - (size_t)(b - a);
            na = (size_t)(sp - a);
        } else {
            return fail(ld, "merges[%u] is neither \"a b\" nor [\"a\", \"b\"]", k);
        }
        if (load_merge(ld, k, a, na, b, nb))
            return -1;
    }
    return 0;
}

/* ---- added tokens ------------------------------------------------------------------------------ */

/* Flags of added token object o, with HF's defaults (normalized defaults to !special). */
static int added_flags(struct loader *ld, uint32_t o, uint32_t k, struct tok_added *a)
{
    int sp = get_bool(ld, o, "special", 0);
    int f[4] = {get_bool(ld, o, "normalized", !sp), get_bool(ld, o, "lstrip", 0),
                get_bool(ld, o, "rstrip", 0), get_bool(ld, o, "single_word", 0)};
    if (sp < 0 || f[0] < 0 || f[1] < 0 || f[2] < 0 || f[3] < 0)
        return fail(ld, "added_tokens[%u]: a flag is not a boolean", k);
    a->special = (uint8_t)sp;
    a->normalized = (uint8_t)f[0];
    a->lstrip = (uint8_t)f[1];
    a->rstrip = (uint8_t)f[2];
    a->single_word = (uint8_t)f[3];
    return 0;
}

/* The id HF gives an added token that is not in the vocabulary: it ignores the file's "id"
 * and numbers such tokens on from the vocabulary size, in list order (AddedVocabulary::
 * add_tokens). A file whose ids say otherwise would encode differently here and in HF. */
static int64_t hf_added_id(const struct loader *ld)
{
    if (ld->added_max < 0)
        return (int64_t)ld->nvocab;
    return ld->added_max >= (int64_t)ld->nvocab ? ld->added_max + 1 : (int64_t)ld->nvocab;
}

/* Give added token a its id and decode bytes, checking them against the vocabulary. */
static int added_id(struct loader *ld, uint32_t k, struct tok_added *a, const char *s, size_t n)
{
    struct tok *t = ld->t;
    char *buf = scratch(ld, 2, n);
    if (!buf)
        return fail(ld, "out of memory");
    long nb = alphabet_decode(s, n, buf);
    int32_t vid = nb >= 0 ? tok_map_get(t, &t->vocab, buf, (size_t)nb) : tok_map_get(t, &t->other, s, n);
    int64_t want = vid >= 0 ? vid : hf_added_id(ld);
    if (a->id != want)
        return fail(ld, "added_tokens[%u] \"%.*s\" has id %d but Hugging Face gives it %lld", k,
                    (int)(n < 40 ? n : 40), s, a->id, (long long)want);
    if (t->flags[a->id] & TOKF_ADDED)
        return fail(ld, "added_tokens[%u] \"%.*s\": id %d is listed twice", k, (int)(n < 40 ? n : 40), s, a->id);
    if (vid < 0 && (t->flags[a->id] & TOKF_USED))
        return fail(ld, "added_tokens[%u] \"%.*s\": id %d is a vocabulary token's", k, (int)(n < 40 ? n : 40), s,
                    a->id);
    if (vid < 0 && pool_put(ld, a->id, nb >= 0 ? buf : s, nb >= 0 ? (size_t)nb : n))
        return -1;
    t->flags[a->id] |= TOKF_USED | TOKF_ADDED | (a->special ? TOKF_SPECIAL : 0);
    ld->added_max = a->id > ld->added_max ? a->id : ld->added_max;
    return 0;
}

/* The text an added token is matched against: its content, or the NFC of it for a
 * normalized token (HF normalizes those patterns too). */
static int added_match_text(struct loader *ld, struct tok_added *a, const char *s, size_t n)
{
    struct uni_buf nb = {0};
    if (a->normalized && ld->t->nfc) {
        if (uni_nfc(s, n, &nb))
            return fail(ld, "out of memory");
        s = nb.p;
        n = nb.n;
    }
    a->len = (uint32_t)n;
    int rc = n == 0 ? fail(ld, "an added token normalizes to nothing") : pool_append(ld, s, n, &a->off);
    uni_buf_free(&nb);
    if (rc == 0)
        (a->normalized ? ld->t->first_norm : ld->t->first_raw)[(unsigned char)ld->t->pool[a->off]] = 1;
    return rc;
}

struct hashed {
    uint64_t h;
    uint32_t k;
};

static int cmp_hashed(const void *x, const void *y)
{
    const struct hashed *a = x, *b = y;
    return (a->h > b->h) - (a->h < b->h);
}

/* Refuse two added tokens matched by the same text: which one HF picks is an accident of
 * its automaton, so such a file has no single meaning. */
static int added_unique(struct loader *ld)
{
    struct tok *t = ld->t;
    struct hashed *h = malloc((t->nadded + 1) * sizeof *h);
    if (!h)
        return fail(ld, "out of memory");
    for (uint32_t k = 0; k < t->nadded; k++)
        h[k] = (struct hashed){tok_hash(t->pool + t->added[k].off, t->added[k].len), k};
    qsort(h, t->nadded, sizeof *h, cmp_hashed);
    for (size_t i = 0; i < t->nadded; i++)
        for (size_t j = i + 1; j < t->nadded && h[j].h == h[i].h; j++) {
            const struct tok_added *a = &t->added[h[i].k], *b = &t->added[h[j].k];
            if (a->len == b->len && !memcmp(t->pool + a->off, t->pool + b->off, a->len)) {
                free(h);
                return fail(ld, "added tokens %d and %d have the same text", a->id, b->id);
            }
        }
    free(h);
    return 0;
}

static int load_added(struct loader *ld, int64_t arr)
{
    struct tok *t = ld->t;
    if (arr < 0 || ld->d.v[arr].type == JSON_NULL)
        return 0;
    if (!is_type(ld, arr, JSON_ARRAY))
        return fail(ld, "added_tokens is not an array");
    uint32_t count = ld->d.v[arr].count;
    t->added = calloc(count ? count : 1, sizeof *t->added);
    if (!t->added)
        return fail(ld, "out of memory");
    for (uint32_t i = json_first(&ld->d, (uint32_t)arr), k = 0; k < count; k++, i = json_next(&ld->d, i)) {
        struct tok_added *a = &t->added[k];
        const char *s;
        size_t n;
        int64_t id;
        json_i64(&ld->d, (uint32_t)json_get(&ld->d, i, "id"), &id); /* checked by max_id */
        a->id = (int32_t)id;
        if (get_str(ld, json_get(&ld->d, i, "content"), 0, &s, &n) || n == 0 || n > TOK_MAX_TOKEN)
            return fail(ld, "added_tokens[%u]: \"content\" is not a string of 1..%u bytes", k, TOK_MAX_TOKEN);
        if (added_flags(ld, i, k, a) || added_id(ld, k, a, s, n) || added_match_text(ld, a, s, n))
            return -1;
        t->nadded = k + 1;
    }
    return added_unique(ld);
}

/* ---- top level ------------------------------------------------------------------------------------ */

static int load_all(struct loader *ld, const char *text, size_t len)
{
    struct tok *t = ld->t;
    if (len > TOK_MAX_FILE)
        return fail(ld, "file of %zu bytes is too large", len);
    if (json_parse(&ld->d, text, len, 0))
        return fail(ld, "%s", ld->d.err);
    if (ld->d.v[0].type != JSON_OBJECT)
        return fail(ld, "the top level is not an object");
    int64_t model = json_get(&ld->d, 0, "model"), added = json_get(&ld->d, 0, "added_tokens");
    if (load_model_options(ld, model))
        return -1;
    int64_t vocab = json_get(&ld->d, (uint32_t)model, "vocab");
    int64_t merges = json_get(&ld->d, (uint32_t)model, "merges");
    if (!is_type(ld, vocab, JSON_OBJECT))
        return fail(ld, "model has no \"vocab\" object");
    if (!is_type(ld, merges, JSON_ARRAY))
        return fail(ld, "model has no \"merges\" array");
    if (added >= 0 && ld->d.v[added].type != JSON_NULL && !is_type(ld, added, JSON_ARRAY))
        return fail(ld, "added_tokens is not an array");
    if (load_normalizer(ld, json_get(&ld->d, 0, "normalizer")) ||
        load_pretok(ld, json_get(&ld->d, 0, "pre_tokenizer")) || load_decoder_post(ld))
        return -1;
    int64_t mx = max_id(ld, vocab, is_type(ld, added, JSON_ARRAY) ? added : -1);
    if (mx < 0)
        return -1;
    t->nids = (size_t)mx + 1;
    t->off = calloc(t->nids, sizeof *t->off);
    t->len = calloc(t->nids, sizeof *t->len);
    t->flags = calloc(t->nids, 1);
    if (!t->off || !t->len || !t->flags)
        return fail(ld, "out of memory");
    return load_vocab(ld, vocab) || load_merges(ld, merges) || load_added(ld, added);
}

struct tok *tok_load_mem(const char *text, size_t len, char *err)
{
    struct loader ld = {0};
    ld.err = err;
    ld.added_max = -1;
    err[0] = 0;
    ld.t = calloc(1, sizeof *ld.t);
    if (!ld.t) {
        snprintf(err, TOK_ERR_LEN, "tokenizer.json: out of memory");
        return NULL;
    }
    int rc = load_all(&ld, text, len);
    json_free(&ld.d);
    for (int k = 0; k < 3; k++)
        free(ld.tmp[k]);
    if (rc) {
        tok_free(ld.t);
        return NULL;
    }
    return ld.t;
}

struct tok *tok_load(const char *path, char *err)
{
    FILE *f = fopen(path, "rb");
    if (!f) {
        snprintf(err, TOK_ERR_LEN, "%s: %s", path, strerror(errno));
        return NULL;
    }
    struct tok *t = NULL;
    char *buf = NULL;
    long n = fseek(f, 0, SEEK_END) ? -1 : ftell(f);
    if (n < 0 || n > (long)TOK_MAX_FILE || fseek(f, 0, SEEK_SET)) {
        snprintf(err, TOK_ERR_LEN, "%s: cannot read (or larger than %u bytes)", path, TOK_MAX_FILE);
        goto out;
    }
    buf = malloc((size_t)n + 1);
    if (!buf || fread(buf, 1, (size_t)n, f) != (size_t)n) {
        snprintf(err, TOK_ERR_LEN, "%s: %s", path, buf ? "read failed" : "out of memory");
        goto out;
    }
    t = tok_load_mem(buf, (size_t)n, err);
out:
    free(buf);
    fclose(f);
    return t;
}

void tok_free(struct tok *t)
{
    if (!t)
        return;
    free(t->off);
    free(t->len);
    free(t->flags);
    free(t->pool);
    free(t->vocab.slot);
    free(t->other.slot);
    free(t->merges);
    free(t->added);
    free(t);
}
