/* tok_impl.h — the inside of struct tok, shared by the tokenizer's files (not part of the
 * API: include host/tok.h instead).
 *
 *   tok_load.c    tokenizer.json -> struct tok (every check happens here)
 *   tok.c         encode pipeline (added tokens, NFC, pre-tokens, BPE), decode, streaming
 *   tok_pretok.c  the two pre-tokenizer regexes as hand-written scanners
 *
 * Tokens are kept as the bytes they stand for, not as the GPT-2 byte-to-unicode strings
 * tokenizer.json spells them in: the mapping is a bijection, so BPE over raw bytes with
 * byte-string keys gives the same ids, and encode never has to build the mapped strings. */
#ifndef TOK_IMPL_H
#define TOK_IMPL_H

#include <stddef.h>
#include <stdint.h>

#include "host/tok.h"

#define TOK_MAX_VOCAB (1u << 22) /* ids above this are refused at load */
#define TOK_MAX_TOKEN (1u << 16) /* bytes of one token (vocab entry or added token) */

/* Flags of one id. */
#define TOKF_USED 1     /* the id names a token */
#define TOKF_ADDED 2    /* an added token */
#define TOKF_SPECIAL 4  /* a special added token (skipped by skip_special) */

/* An added token, as HF's AddedVocabulary holds it. The content is in t->pool; for a
 * normalized token it is the NFC of the content, since HF matches those in normalized text. */
struct tok_added {
    int32_t id;
    uint32_t off, len;
    uint8_t special, normalized, lstrip, rstrip, single_word;
};

/* One merge: the pair (left id, right id) packed in key, its rank (position in the merges
 * list: lower merges first) and the id of the merged token. */
struct tok_merge {
    uint64_t key;
    uint32_t rank;
    int32_t id;
};

/* Open-addressing map from byte strings (token bytes in t->pool) to ids; slot = id + 1. */
struct tok_map {
    uint32_t *slot;
    size_t mask;
};

struct tok {
    enum tok_pattern pattern;
    int nfc;           /* normalizer is NFC */
    int ignore_merges; /* a pre-token that is a whole vocab entry is that token */

    size_t nids;       /* one past the largest id */
    uint32_t *off;     /* (nids) byte offset of each token in pool */
    uint32_t *len;     /* (nids) byte length of each token */
    uint8_t *flags;    /* (nids) TOKF_* */
    char *pool;        /* every token's bytes */
    size_t pool_len, max_len;

    struct tok_map vocab;  /* vocab entries spelled in the byte-level alphabet, by bytes */
    struct tok_map other;  /* vocab entries with other characters, by their UTF-8 */
    int32_t byte_id[256];  /* the token of each single byte: BPE starts from these */

    struct tok_merge *merges; /* open-addressing, key UINT64_MAX = empty */
    size_t merge_mask;        /* slots - 1 (a power of two) */
    unsigned merge_shift;     /* 64 - log2(slots): the hash keeps the product's top bits */

    struct tok_added *added;
    size_t nadded;
    uint8_t first_raw[256];  /* some non-normalized added token starts with this byte */
    uint8_t first_norm[256]; /* some normalized added token starts with this byte */
};

/* Byte-string hash (FNV-1a, 64-bit) and map lookup. */
uint64_t tok_hash(const void *s, size_t n);
int32_t tok_map_get(const struct tok *t, const struct tok_map *m, const void *s, size_t n);

/* The merge of (a, b), or NULL. */
static inline const struct tok_merge *tok_merge_get(const struct tok *t, int32_t a, int32_t b)
{
    uint64_t key = ((uint64_t)(uint32_t)a << 32) | (uint32_t)b;
    size_t i = (size_t)((key * 0x9E3779B97F4A7C15ull) >> t->merge_shift);
    for (;; i = (i + 1) & t->merge_mask) {
        const struct tok_merge *m = &t->merges[i];
        if (m->key == key)
            return m;
        if (m->key == UINT64_MAX)
            return NULL;
    }
}

/* End of the pre-token that starts at byte i of s[0..n) (well formed, i < n) under pattern. */
size_t tok_pretok_next(enum tok_pattern pattern, const unsigned char *s, size_t n, size_t i);

#endif
