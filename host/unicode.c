/* unicode.c — UTF-8 well-formedness and NFC (Unicode Standard Annex #15) over the tables
 * generated into unicode_tables.h.
 *
 * NFC is canonical decomposition, canonical reordering of combining marks, then canonical
 * composition. Most text needs none of it, so uni_nfc works in spans: a character flagged
 * UNI_NFC (not its own NFC, ccc != 0, or possibly the second half of a composition) opens a
 * span that starts at the last unflagged character before it and ends before the next
 * unflagged one. An unflagged character has ccc 0, never composes with what precedes it and
 * never changes, so text on either side of it normalizes independently; everything outside
 * the spans is copied unchanged. */
#include "host/unicode.h"
#include "host/unicode_tables.h"

#include <stdlib.h>
#include <string.h>

#if UNI_TABLE_SHIFT != UNI_SHIFT
#error "unicode_tables.h was generated with another block size: update UNI_SHIFT in unicode.h"
#endif

/* Hangul syllables compose and decompose by arithmetic (Unicode 3.12). */
#define HANGUL_S 0xAC00u
#define HANGUL_L 0x1100u
#define HANGUL_V 0x1161u
#define HANGUL_T 0x11A7u
#define HANGUL_NL 19u
#define HANGUL_NV 21u
#define HANGUL_NT 28u
#define HANGUL_NS (HANGUL_NL * HANGUL_NV * HANGUL_NT)

/* Runs of combining marks longer than this are reordered by counting sort, so a hostile
 * string of many marks costs linear time rather than quadratic. */
#define NFC_INSERTION_MAX 16

size_t uni_utf8_prefix(const unsigned char *b, size_t n, size_t *total)
{
    unsigned c = b[0];
    unsigned lo = 0x80, hi = 0xBF; /* allowed range of the second byte (Table 3-7) */
    if (c < 0x80) {
        *total = 1;
        return 1;
    }
    if (c >= 0xC2 && c <= 0xDF)
        *total = 2;
    else if (c >= 0xE0 && c <= 0xEF) {
        *total = 3;
        lo = c == 0xE0 ? 0xA0 : 0x80;
        hi = c == 0xED ? 0x9F : 0xBF;
    } else if (c >= 0xF0 && c <= 0xF4) {
        *total = 4;
        lo = c == 0xF0 ? 0x90 : 0x80;
        hi = c == 0xF4 ? 0x8F : 0xBF;
    } else {
        *total = 1;
        return 0;
    }
    size_t k = 1;
    for (; k < *total && k < n; k++) {
        unsigned x = b[k];
        if (k == 1 ? (x < lo || x > hi) : (x < 0x80 || x > 0xBF))
            break;
    }
    return k;
}

size_t uni_utf8_check(const char *s, size_t n)
{
    const unsigned char *b = (const unsigned char *)s;
    size_t i = 0;
    while (i < n) {
        /* Eight ASCII bytes at a time: most text is mostly ASCII. */
        while (i + 8 <= n) {
            uint64_t w;
            memcpy(&w, b + i, 8);
            if (w & 0x8080808080808080ull)
                break;
            i += 8;
        }
        if (i >= n)
            break;
        if (b[i] < 0x80) {
            i++;
            continue;
        }
        size_t total, k = uni_utf8_prefix(b + i, n - i, &total);
        if (k != total)
            return i;
        i += total;
    }
    return n;
}

size_t uni_utf8_encode(uint32_t cp, char *out)
{
    unsigned char *o = (unsigned char *)out;
    if (cp < 0x80) {
        o[0] = (unsigned char)cp;
        return 1;
    }
    if (cp < 0x800) {
        o[0] = (unsigned char)(0xC0 | (cp >> 6));
        o[1] = (unsigned char)(0x80 | (cp & 0x3F));
        return 2;
    }
    if (cp < 0x10000) {
        o[0] = (unsigned char)(0xE0 | (cp >> 12));
        o[1] = (unsigned char)(0x80 | ((cp >> 6) & 0x3F));
        o[2] = (unsigned char)(0x80 | (cp & 0x3F));
        return 3;
    }
    o[0] = (unsigned char)(0xF0 | (cp >> 18));
    o[1] = (unsigned char)(0x80 | ((cp >> 12) & 0x3F));
    o[2] = (unsigned char)(0x80 | ((cp >> 6) & 0x3F));
    o[3] = (unsigned char)(0x80 | (cp & 0x3F));
    return 4;
}

/* ---- buffers ---------------------------------------------------------------------------- */

static int buf_reserve(struct uni_buf *b, size_t extra)
{
    if (b->cap - b->n >= extra)
        return 0;
    size_t cap = b->cap ? b->cap : 256;
    while (cap - b->n < extra) {
        if (cap > SIZE_MAX / 2)
            return -1;
        cap *= 2;
    }
    char *p = realloc(b->p, cap);
    if (!p)
        return -1;
    b->p = p;
    b->cap = cap;
    return 0;
}

static int buf_append(struct uni_buf *b, const char *s, size_t n)
{
    if (buf_reserve(b, n))
        return -1;
    if (n)
        memcpy(b->p + b->n, s, n);
    b->n += n;
    return 0;
}

void uni_buf_free(struct uni_buf *b)
{
    free(b->p);
    memset(b, 0, sizeof *b);
}

/* ---- table lookups ------------------------------------------------------------------------ */

/* Rank of the canonical combining class (0 for starters). */
static unsigned ccc_of(uint32_t cp)
{
    if (!(uni_flags(cp) & UNI_NFC))
        return 0;
    size_t lo = 0, hi = UNI_NCCC;
    while (lo < hi) {
        size_t mid = (lo + hi) / 2;
        if (cp < uni_ccc_tab[mid].lo)
            hi = mid;
        else if (cp > uni_ccc_tab[mid].hi)
            lo = mid + 1;
        else
            return uni_ccc_tab[mid].rank;
    }
    return 0;
}

/* Write the full canonical decomposition of cp to out; returns its length (1 if none). */
static size_t decompose(uint32_t cp, uint32_t *out)
{
    if (cp - HANGUL_S < HANGUL_NS) {
        uint32_t s = cp - HANGUL_S;
        out[0] = HANGUL_L + s / (HANGUL_NV * HANGUL_NT);
        out[1] = HANGUL_V + (s % (HANGUL_NV * HANGUL_NT)) / HANGUL_NT;
        if (s % HANGUL_NT == 0)
            return 2;
        out[2] = HANGUL_T + s % HANGUL_NT;
        return 3;
    }
    size_t lo = 0, hi = UNI_NDECOMP;
    while (lo < hi) {
        size_t mid = (lo + hi) / 2;
        if (cp < uni_decomp_tab[mid].cp)
            hi = mid;
        else if (cp > uni_decomp_tab[mid].cp)
            lo = mid + 1;
        else {
            const struct uni_decomp *d = &uni_decomp_tab[mid];
            memcpy(out, uni_decomp_pool + d->off, d->len * sizeof *out);
            return d->len;
        }
    }
    out[0] = cp;
    return 1;
}

/* The primary composite of (a, b), or 0 if there is none. */
static uint32_t compose(uint32_t a, uint32_t b)
{
    if (a - HANGUL_L < HANGUL_NL && b - HANGUL_V < HANGUL_NV)
        return HANGUL_S + ((a - HANGUL_L) * HANGUL_NV + (b - HANGUL_V)) * HANGUL_NT;
    if (a - HANGUL_S < HANGUL_NS && (a - HANGUL_S) % HANGUL_NT == 0 && b - HANGUL_T - 1 < HANGUL_NT - 1)
        return a + (b - HANGUL_T);
    size_t lo = 0, hi = UNI_NCOMP;
    while (lo < hi) {
        size_t mid = (lo + hi) / 2;
        const struct uni_comp *c = &uni_comp_tab[mid];
        if (a < c->first || (a == c->first && b < c->second))
            hi = mid;
        else if (a > c->first || b > c->second)
            lo = mid + 1;
        else
            return c->composite;
    }
    return 0;
}

/* ---- the three steps over one span -------------------------------------------------------- */

/* Stable sort of d[0..n) by class rank; cls holds the ranks, tmp is scratch of n entries. */
static void sort_marks(uint32_t *d, uint8_t *cls, size_t n, uint32_t *tmp)
{
    if (n <= NFC_INSERTION_MAX) {
        for (size_t i = 1; i < n; i++) {
            uint32_t c = d[i];
            uint8_t k = cls[i];
            size_t j = i;
            for (; j > 0 && cls[j - 1] > k; j--) {
                d[j] = d[j - 1];
                cls[j] = cls[j - 1];
            }
            d[j] = c;
            cls[j] = k;
        }
        return;
    }
    size_t start[257] = {0};
    for (size_t i = 0; i < n; i++)
        start[cls[i] + 1]++;
    for (int r = 1; r < 257; r++)
        start[r] += start[r - 1];
    for (size_t i = 0; i < n; i++)
        tmp[start[cls[i]]++] = d[i];
    memcpy(d, tmp, n * sizeof *d);
    for (size_t i = 0; i < n; i++)
        cls[i] = (uint8_t)ccc_of(d[i]);
}

/* Canonical ordering: every maximal run of non-starters sorted by class, stably. */
static void reorder(uint32_t *d, uint8_t *cls, size_t n, uint32_t *tmp)
{
    for (size_t i = 0; i < n; i++)
        cls[i] = (uint8_t)ccc_of(d[i]);
    size_t i = 0;
    while (i < n) {
        if (cls[i] == 0) {
            i++;
            continue;
        }
        size_t j = i;
        while (j < n && cls[j] != 0)
            j++;
        sort_marks(d + i, cls + i, j - i, tmp);
        i = j;
    }
}

/* Canonical composition in place (the algorithm of UAX #15's sample code): a character
 * joins the last starter unless something between them is a starter or has a class at
 * least as high. Returns the new length. */
static size_t compose_all(uint32_t *d, const uint8_t *cls, size_t n)
{
    if (n == 0)
        return 0;
    size_t starter = 0, w = 1;
    unsigned last = cls[0] ? 256 : 0;
    for (size_t k = 1; k < n; k++) {
        uint32_t c = d[k];
        unsigned cc = cls[k];
        uint32_t p = last == 256 ? 0 : compose(d[starter], c);
        if (p && (last < cc || last == 0)) {
            d[starter] = p;
            continue;
        }
        if (cc == 0)
            starter = w;
        last = cc;
        d[w++] = c;
    }
    return w;
}

/* Normalize the span s[0..n) (well formed) and append it to out. */
static int nfc_span(const char *s, size_t n, struct uni_buf *out)
{
    /* A code point takes at least one byte and decomposes into at most UNI_MAX_DECOMP. */
    size_t cap = n * UNI_MAX_DECOMP;
    uint32_t *d = malloc(cap * 2 * sizeof *d);
    uint8_t *cls = malloc(cap);
    int rc = -1;
    if (!d || !cls)
        goto out;
    size_t m = 0;
    for (size_t i = 0; i < n;) {
        uint32_t cp;
        i += uni_utf8_decode((const unsigned char *)s + i, &cp);
        m += decompose(cp, d + m);
    }
    reorder(d, cls, m, d + cap);
    m = compose_all(d, cls, m);
    if (buf_reserve(out, m * 4))
        goto out;
    for (size_t k = 0; k < m; k++)
        out->n += uni_utf8_encode(d[k], out->p + out->n);
    rc = 0;
out:
    free(cls);
    free(d);
    return rc;
}

int uni_nfc_quick(const char *s, size_t n)
{
    const unsigned char *b = (const unsigned char *)s;
    for (size_t i = 0; i < n;) {
        if (b[i] < 0x80) {
            i++;
            continue;
        }
        uint32_t cp;
        i += uni_utf8_decode(b + i, &cp);
        if (uni_flags(cp) & UNI_NFC)
            return 0;
    }
    return 1;
}

int uni_nfc(const char *s, size_t n, struct uni_buf *out)
{
    const unsigned char *b = (const unsigned char *)s;
    size_t done = 0, safe = 0, i = 0;
    out->n = 0;
    if (buf_reserve(out, n + 1))
        return -1;
    while (i < n) {
        uint32_t cp;
        size_t l = b[i] < 0x80 ? (cp = b[i], 1) : uni_utf8_decode(b + i, &cp);
        if (!(uni_flags(cp) & UNI_NFC)) {
            safe = i;
            i += l;
            continue;
        }
        size_t start = safe > done ? safe : done, j = i + l;
        while (j < n) {
            size_t lj = uni_utf8_decode(b + j, &cp);
            if (!(uni_flags(cp) & UNI_NFC))
                break;
            j += lj;
        }
        if (buf_append(out, s + done, start - done) || nfc_span(s + start, j - start, out))
            return -1;
        done = i = j;
    }
    return buf_append(out, s + done, n - done);
}
