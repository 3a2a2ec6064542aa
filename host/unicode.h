/* unicode.h — the Unicode the tokenizer needs: UTF-8 checking and decoding, the character
 * classes its pre-tokenizer regexes name (\p{L}, \p{N}, \p{M}, \s, \w), and NFC.
 *
 * The data comes from host/unicode_tables.h, generated from the ICU in Node by
 * tools/tokref/gen_unicode.mjs (the header names the Unicode version). \s is the White_Space
 * property, as in the Rust regex engines Hugging Face tokenizers uses: U+0085 is whitespace,
 * U+FEFF and U+001C..U+001F are not (JavaScript's \s differs on exactly these). */
#ifndef UNICODE_H
#define UNICODE_H

#include <stddef.h>
#include <stdint.h>

#define UNI_L 1    /* \p{L} */
#define UNI_N 2    /* \p{N} */
#define UNI_M 4    /* \p{M} */
#define UNI_WS 8   /* \s: White_Space */
#define UNI_W 16   /* \w of the Rust regex crate: Alphabetic, M, Nd, Pc, Join_Control */
#define UNI_NFC 32 /* NFC may change text at this character (see unicode.c) */

/* The two-stage flag table (unicode_tables.h, defined in unicode.c): blocks of 1 << UNI_SHIFT
 * code points share a row of uni_stage2 when their flags are the same. */
#define UNI_SHIFT 8
extern const uint16_t uni_stage1[];
extern const uint8_t uni_stage2[];

/* Flags of code point cp (< 0x110000). */
static inline unsigned uni_flags(uint32_t cp)
{
    return uni_stage2[((uint32_t)uni_stage1[cp >> UNI_SHIFT] << UNI_SHIFT) |
                      (cp & ((1u << UNI_SHIFT) - 1))];
}

/* Offset of the first byte of s[0..n) that does not start a well-formed UTF-8 sequence
 * (overlong forms, surrogates and code points past U+10FFFF are ill-formed), or n if all of
 * it is well formed. */
size_t uni_utf8_check(const char *s, size_t n);

/* Decode the sequence at s, which must be well formed (checked before), into *cp; returns
 * its length in bytes (1..4). */
static inline size_t uni_utf8_decode(const unsigned char *s, uint32_t *cp)
{
    unsigned c = s[0];
    if (c < 0x80) {
        *cp = c;
        return 1;
    }
    if (c < 0xE0) {
        *cp = ((c & 0x1Fu) << 6) | (s[1] & 0x3Fu);
        return 2;
    }
    if (c < 0xF0) {
        *cp = ((c & 0x0Fu) << 12) | ((s[1] & 0x3Fu) << 6) | (s[2] & 0x3Fu);
        return 3;
    }
    *cp = ((c & 0x07u) << 18) | ((s[1] & 0x3Fu) << 12) | ((s[2] & 0x3Fu) << 6) | (s[3] & 0x3Fu);
    return 4;
}

/* Encode cp (a scalar value) into out[0..4); returns the length. */
size_t uni_utf8_encode(uint32_t cp, char *out);

/* How far b[0..n) (n >= 1) goes as a well-formed UTF-8 sequence: returns the length of its
 * longest prefix that some continuation could complete (0 when b[0] cannot start one), and
 * sets *total to the length the sequence started by b[0] needs (1 for an invalid lead).
 * The return value equals *total for a complete sequence; a return value k < min(n, *total)
 * marks b[0..max(k,1)) as one "maximal subpart" of ill-formed text, which a lossy decoder
 * replaces by one U+FFFD (the Unicode recommended practice, and Rust's from_utf8_lossy). */
size_t uni_utf8_prefix(const unsigned char *b, size_t n, size_t *total);

/* Growable byte buffer used for normalized text. */
struct uni_buf {
    char *p;
    size_t n, cap;
};

/* Write NFC(s[0..n)) into out (replacing its contents); s must be well-formed UTF-8.
 * Text that is already NFC is copied as is. Returns 0, or -1 when memory runs out. */
int uni_nfc(const char *s, size_t n, struct uni_buf *out);

/* 1 if s[0..n) (well formed) contains no character NFC could change, so it is NFC. */
int uni_nfc_quick(const char *s, size_t n);

void uni_buf_free(struct uni_buf *b);

#endif
