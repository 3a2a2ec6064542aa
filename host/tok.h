/* tok.h — the byte-level BPE tokenizer of rt_host: reads a Hugging Face tokenizer.json and
 * encodes text to token ids and ids back to text exactly as the Hugging Face tokenizers
 * library does for the Qwen2/Qwen3/Qwen3.5 families (MODEL.md §8).
 *
 * What is accepted, and everything else is refused at load with a message naming it:
 *   model         BPE with vocab, merges ("a b" strings or ["a", "b"] pairs), ignore_merges,
 *                 no dropout, no continuing_subword_prefix / end_of_word_suffix
 *   added_tokens  special / normalized / lstrip / rstrip / single_word, as HF applies them;
 *                 each "id" must be the one HF gives the token (HF ignores the field: a
 *                 vocabulary entry keeps its id, others are numbered on from the vocabulary
 *                 size in list order), so a file cannot mean one thing here and another there
 *   normalizer    NFC, none, or a Sequence of NFC
 *   pre_tokenizer Sequence [Split(Regex, Isolated), ByteLevel(add_prefix_space false,
 *                 use_regex false)] where the regex is exactly the qwen2/qwen3 pattern or the
 *                 qwen35 pattern; each is implemented by a hand-written scanner (tok_pretok.c)
 *   decoder       ByteLevel;  post_processor ByteLevel or none
 *
 * Encoding never adds BOS/EOS or a template: the caller writes the chat template, and
 * allow_special decides whether special tokens written in the text become their ids.
 * A loaded tokenizer is read-only: one may be shared by threads. */
#ifndef TOK_H
#define TOK_H

#include <stddef.h>
#include <stdint.h>

#define TOK_ERR_LEN 200

/* Status codes of the encode/decode calls. */
enum tok_status {
    TOK_OK = 0,
    TOK_EUTF8 = -1,  /* input text is not well-formed UTF-8 */
    TOK_ESPACE = -2, /* output buffer too small */
    TOK_ERANGE = -3, /* a token id that names no token */
    TOK_ENOMEM = -4, /* out of memory, or a text of 2 GiB or more */
};

/* Pre-tokenizer patterns this tokenizer implements. */
enum tok_pattern {
    TOK_PAT_QWEN2 = 1, /* qwen2 / qwen3: \p{L} letters */
    TOK_PAT_QWEN35,    /* qwen35: [\p{L}\p{M}] letters, marks out of the punctuation class */
};

struct tok;

/* Load tokenizer.json from path, or from text[0..len) (not kept after the call). Returns the
 * tokenizer, or NULL with a message in err[TOK_ERR_LEN]. */
struct tok *tok_load(const char *path, char *err);
struct tok *tok_load_mem(const char *text, size_t len, char *err);
void tok_free(struct tok *t);

/* Encode text[0..len), which must be well-formed UTF-8, into ids[0..cap). On TOK_OK *n is the
 * number of ids. On TOK_ESPACE nothing is lost but the ids past cap: *n is the number needed.
 * On TOK_EUTF8 *n is the byte offset of the first ill-formed sequence. allow_special: 1 turns
 * special tokens written in the text (e.g. "<|im_end|>") into their ids; 0 encodes them as
 * plain text (HF's encode_special_tokens). Non-special added tokens (e.g. "<think>") are
 * always matched, as in HF. */
int tok_encode(const struct tok *t, const char *text, size_t len, int allow_special, int32_t *ids,
               size_t cap, size_t *n);

/* Decode ids[0..n) to bytes in out[0..cap) (not NUL-terminated); *len gets the byte count,
 * or on TOK_ESPACE the count needed. The bytes are what the tokens stand for, so a cut in the
 * middle of a character leaves a partial UTF-8 sequence (use tok_stream for text).
 * skip_special leaves special tokens out. On TOK_ERANGE *len is the index of the bad id. */
int tok_decode(const struct tok *t, const int32_t *ids, size_t n, int skip_special, char *out,
               size_t cap, size_t *len);

/* Bytes of one token, or NULL (and *len 0) for an id that names no token. */
const char *tok_token_bytes(const struct tok *t, int32_t id, size_t *len);

/* Id of the token whose text is exactly s (an added token's content, or a vocabulary entry in
 * raw bytes, e.g. " the"), or -1. */
int32_t tok_id_of(const struct tok *t, const char *s);

/* One past the largest id (ids below it may still be unused: tok_token_bytes says). */
size_t tok_vocab_size(const struct tok *t);
/* 1 if id is a special added token. */
int tok_is_special(const struct tok *t, int32_t id);
/* The pre-tokenizer pattern that was recognised. */
enum tok_pattern tok_pattern(const struct tok *t);
/* Longest token, in bytes. */
size_t tok_max_token_len(const struct tok *t);

/* Split text[0..len) (well-formed UTF-8, taken as already normalized) into pre-tokens by the
 * tokenizer's Split regex; ends[i] is the byte offset where piece i ends. Returns TOK_OK,
 * TOK_EUTF8 (*n = offset) or TOK_ESPACE (*n = pieces needed). Exposed for tests. */
int tok_pretokenize(const struct tok *t, const char *text, size_t len, size_t *ends, size_t cap,
                    size_t *n);

/* Streaming decoder: feed ids one at a time, get text back in complete UTF-8 characters only.
 * Bytes of a character cut across tokens wait for the next token; bytes that can never form
 * a character become U+FFFD (one per maximal ill-formed subpart, as Rust's from_utf8_lossy).
 * out must hold tok_stream_cap(t) bytes. */
struct tok_stream {
    const struct tok *t;
    int skip_special;
    unsigned char pend[4]; /* held-back start of a character */
    size_t npend;
};

void tok_stream_init(struct tok_stream *s, const struct tok *t, int skip_special);
size_t tok_stream_cap(const struct tok *t);
/* Decode one id; *len gets the bytes written (maybe 0). TOK_ERANGE for a bad id, which
 * leaves the stream as it was. */
int tok_stream_push(struct tok_stream *s, int32_t id, char *out, size_t *len);
/* End of the stream: a held-back partial character becomes U+FFFD. */
void tok_stream_flush(struct tok_stream *s, char *out, size_t *len);

/* Human-readable name of a status. */
const char *tok_strerror(int status);

#endif
