/* tok.c — encoding and decoding with a loaded tokenizer (tok_load.c builds it).
 *
 * Encode follows Hugging Face tokenizers step by step, because ids must match the ones the
 * model was trained on, bit for bit:
 *   1. added tokens with normalized=false are found in the raw text (leftmost, then longest,
 *      as HF's Aho-Corasick LeftmostLongest; a rejected match, e.g. a special token when
 *      allow_special is 0, is skipped whole and the search resumes after it);
 *   2. each text between them is NFC-normalized, and added tokens with normalized=true are
 *      found in that;
 *   3. what remains is cut into pre-tokens by the Split regex (tok_pretok.c);
 *   4. each pre-token's bytes are merged by BPE: HF's Word::merge_all, a priority queue of
 *      adjacent pairs ordered by (merge rank, position), lowest first, stale entries skipped.
 *      With ignore_merges a pre-token that is itself a vocabulary entry is that entry.
 * Decode concatenates the bytes of each token (HF's ByteLevel decoder); the streaming
 * decoder turns them into text one complete character at a time. */
#include "host/tok_impl.h"
#include "host/unicode.h"

#include <stdlib.h>
#include <string.h>

/* A symbol of the word being merged: a doubly linked list over the pre-token's bytes. */
struct sym {
    int32_t id;
    int32_t prev, next; /* neighbours, -1 at the ends */
    uint32_t len;       /* bytes covered; 0 once merged into its left neighbour */
};

/* A queued merge of the pair starting at symbol pos. */
struct qent {
    uint32_t rank, pos;
    int32_t id;
};

/* State of one tok_encode call. */
struct enc {
    const struct tok *t;
    int allow_special;
    int32_t *ids;
    size_t cap, n;
    struct sym *sym;
    struct qent *heap;
    size_t sym_cap, nheap;
    struct uni_buf norm;
};

static void emit(struct enc *e, int32_t id)
{
    if (e->n < e->cap)
        e->ids[e->n] = id;
    e->n++;
}

/* ---- BPE ---------------------------------------------------------------------------------- */

static int qless(const struct qent *a, const struct qent *b)
{
    return a->rank < b->rank || (a->rank == b->rank && a->pos < b->pos);
}

static void heap_push(struct enc *e, uint32_t rank, uint32_t pos, int32_t id)
{
    struct qent *h = e->heap, x = {rank, pos, id};
    size_t i = e->nheap++;
    while (i > 0 && qless(&x, &h[(i - 1) / 2])) {
        h[i] = h[(i - 1) / 2];
        i = (i - 1) / 2;
    }
    h[i] = x;
}

static struct qent heap_pop(struct enc *e)
{
    struct qent *h = e->heap, top = h[0], x = h[--e->nheap];
    size_t i = 0, n = e->nheap;
    for (;;) {
        size_t c = 2 * i + 1;
        if (c >= n)
            break;
        if (c + 1 < n && qless(&h[c + 1], &h[c]))
            c++;
        if (!qless(&h[c], &x))
            break;
        h[i] = h[c];
        i = c;
    }
    h[i] = x;
    return top;
}

/* Queue the pair (a, next of a) if it has a merge. */
static void queue_pair(struct enc *e, int32_t a)
{
    if (a < 0)
        return;
    int32_t b = e->sym[a].next;
    if (b < 0)
        return;
    const struct tok_merge *m = tok_merge_get(e->t, e->sym[a].id, e->sym[b].id);
    if (m)
        heap_push(e, m->rank, (uint32_t)a, m->id);
}

static int reserve_word(struct enc *e, size_t n)
{
    if (n <= e->sym_cap)
        return 0;
    size_t cap = e->sym_cap ? e->sym_cap : 64;
    while (cap < n)
        cap *= 2;
    free(e->sym);
    free(e->heap);
    e->sym = malloc(cap * sizeof *e->sym);
    e->heap = malloc(3 * cap * sizeof *e->heap); /* n-1 pairs, then at most 2 per merge */
    e->sym_cap = e->sym && e->heap ? cap : 0;
    return e->sym_cap ? 0 : -1;
}

/* BPE over the bytes w[0..n) of one pre-token, emitting its ids. */
static int bpe_word(struct enc *e, const unsigned char *w, size_t n)
{
    const struct tok *t = e->t;
    if (n == 1) {
        emit(e, t->byte_id[w[0]]);
        return 0;
    }
    if (t->ignore_merges) {
        int32_t id = tok_map_get(t, &t->vocab, w, n);
        if (id >= 0) {
            emit(e, id);
            return 0;
        }
    }
    if (reserve_word(e, n))
        return -1;
    struct sym *s = e->sym;
    for (size_t i = 0; i < n; i++)
        s[i] = (struct sym){t->byte_id[w[i]], (int32_t)i - 1, i + 1 < n ? (int32_t)i + 1 : -1, 1};
    e->nheap = 0;
    for (size_t i = 0; i + 1 < n; i++)
        queue_pair(e, (int32_t)i);
    while (e->nheap) {
        struct qent q = heap_pop(e);
        struct sym *a = &s[q.pos];
        if (a->len == 0 || a->next < 0)
            continue;
        struct sym *b = &s[a->next];
        const struct tok_merge *m = tok_merge_get(t, a->id, b->id);
        if (!m || m->id != q.id)
            continue; /* the pair changed since it was queued */
        a->id = q.id;
        a->len += b->len;
        b->len = 0;
        a->next = b->next;
        if (b->next >= 0)
            s[b->next].prev = (int32_t)q.pos;
        queue_pair(e, a->prev);
        queue_pair(e, (int32_t)q.pos);
    }
    for (int32_t i = 0; i >= 0; i = s[i].next)
        emit(e, s[i].id);
    return 0;
}

/* Pre-tokens of normalized text s[0..n), each through BPE. */
static int encode_pieces(struct enc *e, const char *s, size_t n)
{
    const unsigned char *b = (const unsigned char *)s;
    for (size_t i = 0; i < n;) {
        size_t j = tok_pretok_next(e->t->pattern, b, n, i);
        if (bpe_word(e, b + i, j - i))
            return -1;
        i = j;
    }
    return 0;
}

/* ---- added tokens ----------------------------------------------------------------------------- */

/* Start of the character that ends at s[i] (exclusive), for well-formed s. */
static size_t char_before(const unsigned char *s, size_t i)
{
    do
        i--;
    while (i > 0 && (s[i] & 0xC0) == 0x80);
    return i;
}

static unsigned flags_at(const unsigned char *s, size_t i)
{
    uint32_t cp;
    uni_utf8_decode(s + i, &cp);
    return uni_flags(cp);
}

/* The longest token of the group (normalized or not) that matches at s[i], or NULL. */
static const struct tok_added *added_at(const struct tok *t, const char *s, size_t n, size_t i, int norm)
{
    const struct tok_added *best = NULL;
    for (size_t k = 0; k < t->nadded; k++) {
        const struct tok_added *a = &t->added[k];
        if (a->normalized == norm && a->len <= n - i && (!best || a->len > best->len) &&
            !memcmp(s + i, t->pool + a->off, a->len))
            best = a;
    }
    return best;
}

/* HF's single_word: no \w character right before or right after the match. */
static int single_word_ok(const unsigned char *s, size_t n, size_t start, size_t stop)
{
    if (start > 0 && (flags_at(s, char_before(s, start)) & UNI_W))
        return 0;
    return stop == n || !(flags_at(s, stop) & UNI_W);
}

/* Next accepted added-token match in s[from..n): sets [*ms, *me) (widened by lstrip/rstrip,
 * never back past from) and *id. Returns 0 when there is none. */
static int added_next(const struct enc *e, const char *s, size_t n, size_t from, int norm, size_t *ms,
                      size_t *me, int32_t *id)
{
    const struct tok *t = e->t;
    const uint8_t *first = norm ? t->first_norm : t->first_raw;
    const unsigned char *b = (const unsigned char *)s;
    for (size_t p = from; p < n;) {
        const struct tok_added *a = NULL;
        size_t start = p;
        for (; start < n; start++)
            if (first[b[start]] && (a = added_at(t, s, n, start, norm)))
                break;
        if (!a)
            return 0;
        size_t stop = start + a->len;
        p = stop;
        if ((a->special && !e->allow_special) || (a->single_word && !single_word_ok(b, n, start, stop)))
            continue;
        while (a->lstrip && start > from && (flags_at(b, char_before(b, start)) & UNI_WS))
            start = char_before(b, start);
        while (a->rstrip && stop < n && (flags_at(b, stop) & UNI_WS))
            stop += uni_utf8_decode(b + stop, &(uint32_t){0});
        *ms = start;
        *me = stop;
        *id = a->id;
        return 1;
    }
    return 0;
}

/* Steps 2-4 for one text between raw added tokens. */
static int encode_segment(struct enc *e, const char *s, size_t n)
{
    if (n == 0)
        return 0;
    if (e->t->nfc && !uni_nfc_quick(s, n)) {
        if (uni_nfc(s, n, &e->norm))
            return -1;
        s = e->norm.p;
        n = e->norm.n;
    }
    size_t pos = 0, ms, me;
    int32_t id;
    while (added_next(e, s, n, pos, 1, &ms, &me, &id)) {
        if (encode_pieces(e, s + pos, ms - pos))
            return -1;
        emit(e, id);
        pos = me;
    }
    return encode_pieces(e, s + pos, n - pos);
}

int tok_encode(const struct tok *t, const char *text, size_t len, int allow_special, int32_t *ids,
               size_t cap, size_t *n)
{
    if (len > INT32_MAX) { /* BPE links symbols by int32 positions */
        *n = 0;
        return TOK_ENOMEM;
    }
    size_t bad = uni_utf8_check(text, len);
    if (bad != len) {
        *n = bad;
        return TOK_EUTF8;
    }
    struct enc e = {.t = t, .allow_special = allow_special, .ids = ids, .cap = cap};
    size_t pos = 0, ms, me;
    int32_t id;
    int rc = 0;
    while (!rc && added_next(&e, text, len, pos, 0, &ms, &me, &id)) {
        rc = encode_segment(&e, text + pos, ms - pos);
        emit(&e, id);
        pos = me;
    }
    if (!rc)
        rc = encode_segment(&e, text + pos, len - pos);
    free(e.sym);
    free(e.heap);
    uni_buf_free(&e.norm);
    *n = e.n;
    return rc ? TOK_ENOMEM : e.n > cap ? TOK_ESPACE : TOK_OK;
}
