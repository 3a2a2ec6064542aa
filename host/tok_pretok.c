/* tok_pretok.c — the Split step of the Qwen pre-tokenizers, as scanners instead of a regex
 * engine. tokenizer.json ships the regex; tok_load.c accepts exactly these two strings:
 *
 *   qwen2/qwen3:
 *     (?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|
 *     \s*[\r\n]+|\s+(?!\S)|\s+
 *   qwen35:
 *     (?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?[\p{L}\p{M}]+|\p{N}|
 *      ?[^\s\p{L}\p{M}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+
 *
 * (each on one line in the file). HF's Split(behavior Isolated) finds the leftmost match
 * again and again; with these patterns every character is covered by some alternative, so the
 * matches tile the text and each scan below starts where the previous piece ended. At one
 * position a backtracking engine takes the first alternative that matches (not the longest),
 * which gives, with c0 the character at the position and c1 the next one:
 *
 *   1. c0 = ' and the next letters are s t m d / re ve ll (ASCII case-insensitively: the
 *      engine does not fold U+017F to s) -> the contraction.
 *   2. c0 is a letter -> the run of letters. c0 is not CR, LF, letter or number and c1 is a
 *      letter -> c0 and the run of letters after it. "Letter" is \p{L} for qwen2 and
 *      \p{L} or \p{M} for qwen35; the optional prefix admits marks in both.
 *   3. c0 is a number -> c0 alone.
 *   4. c0 is punctuation (not \s, letter or number; qwen35 also not \p{M}), or c0 is U+0020
 *      and c1 is punctuation -> the run of punctuation, then any CR/LF after it.
 *   5-7. c0 is whitespace. Let the whitespace run be [i, e). \s*[\r\n]+ backtracks to the
 *      last CR/LF in the run: the piece ends after it. Without one, \s+(?!\S) takes the run
 *      if it reaches the end of the text, else gives back its last character (which then
 *      starts the next piece, usually " word"); a run of one character followed by a
 *      non-space falls to \s+ and is a piece by itself.
 *
 * \s is White_Space (unicode.h). test_tok checks these scanners against Hugging Face output
 * for qwen2 and against hand-derived splits for qwen35. */
#include "host/tok_impl.h"
#include "host/unicode.h"

/* Classes of one character under a pattern. */
#define C_LETTER 1 /* \p{L} (qwen2) or [\p{L}\p{M}] (qwen35) */
#define C_NUM 2    /* \p{N} */
#define C_WS 4     /* \s */
#define C_PUNCT 8  /* [^\s\p{L}\p{N}] (qwen2) or [^\s\p{L}\p{M}\p{N}] (qwen35) */
#define C_PREFIX 16 /* [^\r\n\p{L}\p{N}] */

static unsigned ascii_class(unsigned c)
{
    if ((c | 0x20) >= 'a' && (c | 0x20) <= 'z')
        return C_LETTER;
    if (c >= '0' && c <= '9')
        return C_NUM;
    if (c == '\r' || c == '\n')
        return C_WS;
    if (c == ' ' || (c >= '\t' && c <= '\f'))
        return C_WS | C_PREFIX;
    return C_PUNCT | C_PREFIX;
}

static unsigned char_class(uint32_t cp, int marks_are_letters)
{
    if (cp < 0x80)
        return ascii_class(cp);
    unsigned f = uni_flags(cp);
    unsigned letter = marks_are_letters ? (UNI_L | UNI_M) : UNI_L;
    if (f & letter)
        return f & UNI_L ? C_LETTER : C_LETTER | C_PREFIX; /* a qwen35 mark: both */
    if (f & UNI_N)
        return C_NUM;
    if (f & UNI_WS)
        return C_WS | C_PREFIX; /* CR and LF are ASCII */
    return C_PUNCT | C_PREFIX;
}

/* Class of the character at s[i] (i < n); *len gets its length. */
static unsigned class_at(const unsigned char *s, size_t i, size_t *len, int m)
{
    if (s[i] < 0x80) {
        *len = 1;
        return ascii_class(s[i]);
    }
    uint32_t cp;
    *len = uni_utf8_decode(s + i, &cp);
    return char_class(cp, m);
}

/* Alternative 1 after the apostrophe: bytes of the contraction's letters at s[0..n), or 0. */
static size_t contraction(const unsigned char *s, size_t n)
{
    if (n == 0)
        return 0;
    unsigned a = s[0] | 0x20, b = n > 1 ? s[1] | 0x20 : 0;
    if (a == 's' || a == 't' || a == 'm' || a == 'd')
        return 1;
    if ((a == 'r' && b == 'e') || (a == 'v' && b == 'e') || (a == 'l' && b == 'l'))
        return 2;
    return 0;
}

/* End of the run of characters of class cls starting at p. */
static size_t run_of(const unsigned char *s, size_t n, size_t p, unsigned cls, int m)
{
    while (p < n) {
        size_t l;
        if (!(class_at(s, p, &l, m) & cls))
            break;
        p += l;
    }
    return p;
}

/* Alternatives 5-7 at whitespace position i. */
static size_t whitespace_piece(const unsigned char *s, size_t n, size_t i, int m)
{
    size_t p = i, last = i, after_crlf = 0;
    while (p < n) {
        size_t l;
        if (!(class_at(s, p, &l, m) & C_WS))
            break;
        if (s[p] == '\r' || s[p] == '\n')
            after_crlf = p + 1;
        last = p;
        p += l;
    }
    if (after_crlf)
        return after_crlf; /* \s*[\r\n]+ */
    if (p == n)
        return n; /* \s+(?!\S) at the end of the text */
    if (last > i)
        return last; /* \s+(?!\S): all but the last whitespace character */
    return p;        /* \s+ */
}

size_t tok_pretok_next(enum tok_pattern pattern, const unsigned char *s, size_t n, size_t i)
{
    int m = pattern == TOK_PAT_QWEN35;
    size_t l0, l1 = 0;
    unsigned k0 = class_at(s, i, &l0, m), k1 = 0;
    size_t j = i + l0;
    if (s[i] == '\'') {
        size_t c = contraction(s + j, n - j);
        if (c)
            return j + c;
    }
    if (j < n)
        k1 = class_at(s, j, &l1, m);
    if (k0 & C_LETTER)
        return run_of(s, n, j, C_LETTER, m);
    if ((k0 & C_PREFIX) && (k1 & C_LETTER))
        return run_of(s, n, j + l1, C_LETTER, m);
    if (k0 & C_NUM)
        return j;
    if (s[i] == ' ' && (k1 & C_PUNCT))
        j += l1;
    else if (!(k0 & C_PUNCT))
        return whitespace_piece(s, n, i, m);
    j = run_of(s, n, j, C_PUNCT, m);
    while (j < n && (s[j] == '\r' || s[j] == '\n'))
        j++;
    return j;
}

int tok_pretokenize(const struct tok *t, const char *text, size_t len, size_t *ends, size_t cap,
                    size_t *n)
{
    size_t bad = uni_utf8_check(text, len);
    if (bad != len) {
        *n = bad;
        return TOK_EUTF8;
    }
    size_t k = 0;
    for (size_t i = 0; i < len; k++) {
        i = tok_pretok_next(t->pattern, (const unsigned char *)text, len, i);
        if (k < cap)
            ends[k] = i;
    }
    *n = k;
    return k <= cap ? TOK_OK : TOK_ESPACE;
}
