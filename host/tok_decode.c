/* tok_decode.c — ids back to bytes, the streaming decoder, and the small lookups of tok.h.
 *
 * A token stands for bytes, not characters: byte-level BPE cuts multi-byte characters
 * wherever its merges did (an emoji is often two or three tokens). tok_decode returns the
 * bytes as they are. The streaming decoder, which feeds a client one token at a time, must
 * never send half a character: it holds back the start of a character until the token that
 * completes it arrives, and turns bytes that can never form a character into U+FFFD, one
 * per maximal ill-formed subpart, as Rust's String::from_utf8_lossy does for HF's decode. */
#include "host/tok_impl.h"
#include "host/unicode.h"

#include <string.h>

static const char REPLACEMENT[3] = {(char)0xEF, (char)0xBF, (char)0xBD}; /* U+FFFD */

static int id_ok(const struct tok *t, int32_t id)
{
    return id >= 0 && (size_t)id < t->nids && (t->flags[id] & TOKF_USED);
}

int tok_decode(const struct tok *t, const int32_t *ids, size_t n, int skip_special, char *out,
               size_t cap, size_t *len)
{
    size_t w = 0;
    for (size_t k = 0; k < n; k++) {
        int32_t id = ids[k];
        if (!id_ok(t, id)) {
            *len = k;
            return TOK_ERANGE;
        }
        if (skip_special && (t->flags[id] & TOKF_SPECIAL))
            continue;
        if (w + t->len[id] <= cap)
            memcpy(out + w, t->pool + t->off[id], t->len[id]);
        w += t->len[id];
    }
    *len = w;
    return w <= cap ? TOK_OK : TOK_ESPACE;
}

/* ---- streaming ------------------------------------------------------------------------------ */

void tok_stream_init(struct tok_stream *s, const struct tok *t, int skip_special)
{
    memset(s, 0, sizeof *s);
    s->t = t;
    s->skip_special = skip_special;
}

/* Each input byte yields at most 3 output bytes (a U+FFFD); the held-back bytes add 3. */
size_t tok_stream_cap(const struct tok *t)
{
    return 3 * (t->max_len + 4);
}

/* Copy the complete characters of b[0..n) to out, U+FFFD for ill-formed subparts; returns
 * the bytes written. A valid but incomplete tail is left: *used tells where it starts. */
static size_t lossy(const unsigned char *b, size_t n, char *out, size_t *used)
{
    size_t i = 0, w = 0;
    while (i < n) {
        size_t total, k = uni_utf8_prefix(b + i, n - i, &total);
        if (k == total) {
            memcpy(out + w, b + i, total);
            w += total;
            i += total;
        } else if (i + k == n) {
            break; /* may complete with the next token */
        } else {
            memcpy(out + w, REPLACEMENT, 3);
            w += 3;
            i += k ? k : 1;
        }
    }
    *used = i;
    return w;
}

int tok_stream_push(struct tok_stream *s, int32_t id, char *out, size_t *len)
{
    const struct tok *t = s->t;
    *len = 0;
    if (!id_ok(t, id))
        return TOK_ERANGE;
    if (s->skip_special && (t->flags[id] & TOKF_SPECIAL))
        return TOK_OK;
    const unsigned char *b = (const unsigned char *)t->pool + t->off[id];
    size_t n = t->len[id], from = 0, used;
    if (s->npend) {
        /* Finish the held-back character with the first bytes of the token (it needs at
         * most 3 more), or give it up as one ill-formed subpart. */
        unsigned char tmp[8];
        size_t take = n < 3 ? n : 3, m = s->npend + take, total;
        memcpy(tmp, s->pend, s->npend);
        memcpy(tmp + s->npend, b, take);
        size_t k = uni_utf8_prefix(tmp, m, &total);
        if (k == total) {
            memcpy(out, tmp, total);
            *len = total;
        } else if (k == m) { /* still incomplete: the whole token is a piece of it */
            memcpy(s->pend, tmp, m);
            s->npend = m;
            return TOK_OK;
        } else {
            memcpy(out, REPLACEMENT, 3); /* tmp[0..k) is the maximal subpart, k >= npend */
            *len = 3;
        }
        from = (k == total ? total : k) - s->npend;
        s->npend = 0;
    }
    size_t w = lossy(b + from, n - from, out + *len, &used);
    *len += w;
    s->npend = n - from - used;
    memcpy(s->pend, b + from + used, s->npend);
    return TOK_OK;
}

void tok_stream_flush(struct tok_stream *s, char *out, size_t *len)
{
    *len = 0;
    if (s->npend) {
        memcpy(out, REPLACEMENT, 3);
        *len = 3;
    }
    s->npend = 0;
}

/* ---- lookups ------------------------------------------------------------------------------------ */

const char *tok_token_bytes(const struct tok *t, int32_t id, size_t *len)
{
    if (!id_ok(t, id)) {
        *len = 0;
        return NULL;
    }
    *len = t->len[id];
    return t->pool + t->off[id];
}

int32_t tok_id_of(const struct tok *t, const char *s)
{
    size_t n = strlen(s);
    for (size_t k = 0; k < t->nadded; k++) {
        int32_t id = t->added[k].id;
        if (t->len[id] == n && !memcmp(t->pool + t->off[id], s, n))
            return id;
    }
    int32_t id = tok_map_get(t, &t->vocab, s, n);
    return id >= 0 ? id : tok_map_get(t, &t->other, s, n);
}

size_t tok_vocab_size(const struct tok *t) { return t->nids; }
size_t tok_max_token_len(const struct tok *t) { return t->max_len; }
enum tok_pattern tok_pattern(const struct tok *t) { return t->pattern; }

int tok_is_special(const struct tok *t, int32_t id)
{
    return id_ok(t, id) && (t->flags[id] & TOKF_SPECIAL);
}

const char *tok_strerror(int status)
{
    switch (status) {
    case TOK_OK: return "ok";
    case TOK_EUTF8: return "text is not well-formed UTF-8";
    case TOK_ESPACE: return "output buffer too small";
    case TOK_ERANGE: return "token id out of range";
    case TOK_ENOMEM: return "out of memory";
    default: return "unknown status";
    }
}
