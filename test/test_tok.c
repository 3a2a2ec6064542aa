/* test_tok.c — the tokenizer against the Hugging Face tokenizers library.
 *
 * test/data/tok/ holds the Qwen3 tokenizer.json and what the Rust library made of a corpus
 * with it (tools/tokref/gen_fixtures.mjs): ids per text for the qwen3 pattern, the same
 * tokenizer with the qwen35 regex, and one with ignore_merges and flagged added tokens, each
 * with special tokens allowed and not; the pre-token splits of raw text; NFC results. One
 * CHECK per category prints the first mismatch. Then properties over the same corpus: decode
 * gives back the normalized text, and the streaming decoder emits only whole characters
 * whose concatenation is the full decode, also for random (often broken) id sequences. */
#include "host/tok.h"
#include "host/unicode.h"
#include "plan/json.h"
#include "test/test.h"

#include <string.h>
#include <time.h>

#define DATA "test/data/tok/"
#define MAX_IDS 65536
#define MAX_GROUPS 96

/* The qwen35 Split regex, JSON-escaped as it appears in a tokenizer.json. */
static const char QWEN35_JSON[] =
    "\"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\\\r\\\\n\\\\p{L}\\\\p{N}]?[\\\\p{L}\\\\p{M}]+|\\\\p{N}| "
    "?[^\\\\s\\\\p{L}\\\\p{M}\\\\p{N}]+[\\\\r\\\\n]*|\\\\s*[\\\\r\\\\n]+|\\\\s+(?!\\\\S)|\\\\s+\"";

/* ---- helpers -------------------------------------------------------------------------------- */

static double now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1e3 + ts.tv_nsec / 1e6;
}

/* Hex field ("-" for empty) to bytes; returns the length. */
static size_t unhex(const char *h, char *out)
{
    size_t n = 0;
    if (h[0] == '-')
        return 0;
    for (; h[0] && h[1]; h += 2) {
        unsigned v;
        sscanf(h, "%2x", &v);
        out[n++] = (char)v;
    }
    return n;
}

static size_t parse_ids(const char *s, int32_t *ids)
{
    size_t n = 0;
    char *end;
    if (s[0] == '-')
        return 0;
    while (*s && n < MAX_IDS) {
        ids[n++] = (int32_t)strtol(s, &end, 10);
        if (end == s)
            break;
        s = end;
    }
    return n;
}

/* Split a line into tab-separated fields in place; returns the count. */
static int fields(char *line, char **f, int max)
{
    int k = 0;
    f[k++] = line;
    for (char *p = line; *p && k < max; p++)
        if (*p == '\t') {
            *p = 0;
            f[k++] = p + 1;
        }
    return k;
}

/* Printable short form of text for messages. */
static const char *show(const char *s, size_t n)
{
    static char buf[200];
    size_t w = 0;
    for (size_t i = 0; i < n && w < 150; i++) {
        unsigned char c = (unsigned char)s[i];
        w += (size_t)(c < 0x20 || c == 0x7F ? snprintf(buf + w, 8, "\\x%02X", c) : snprintf(buf + w, 8, "%c", c));
    }
    snprintf(buf + w, sizeof buf - w, "%s", n > 150 ? "..." : "");
    return buf;
}

/* Replace text[at..at+del) with ins; returns a new NUL-terminated buffer. */
static char *splice(const char *text, size_t n, size_t at, size_t del, const char *ins, size_t nins, size_t *outn)
{
    char *o = malloc(n - del + nins + 1);
    memcpy(o, text, at);
    memcpy(o + at, ins, nins);
    memcpy(o + at + nins, text + at + del, n - at - del);
    *outn = n - del + nins;
    o[*outn] = 0;
    return o;
}

/* The Qwen3 tokenizer.json with its Split regex replaced by the qwen35 one. */
static char *qwen35_json(const char *text, size_t n, size_t *outn)
{
    struct json_doc d;
    json_parse(&d, text, n, 0);
    uint32_t pre = (uint32_t)json_get(&d, 0, "pre_tokenizer");
    uint32_t seq = (uint32_t)json_get(&d, pre, "pretokenizers");
    uint32_t pat = (uint32_t)json_get(&d, json_first(&d, seq), "pattern");
    uint32_t rx = (uint32_t)json_get(&d, pat, "Regex");
    char *o = splice(text, n, d.v[rx].start, d.v[rx].len, QWEN35_JSON, sizeof QWEN35_JSON - 1, outn);
    json_free(&d);
    return o;
}

/* The "syn" tokenizer: ignore_merges on, synth_added.json appended to added_tokens. */
static char *synth_json(const char *text, size_t n, size_t *outn)
{
    struct json_doc d;
    size_t na, n1;
    char *add = test_read_file(DATA "synth_added.json", &na);
    json_parse(&d, text, n, 0);
    uint32_t model = (uint32_t)json_get(&d, 0, "model");
    uint32_t im = (uint32_t)json_get(&d, model, "ignore_merges");
    uint32_t at = (uint32_t)json_get(&d, 0, "added_tokens");
    size_t close = d.v[at].start + d.v[at].len - 1; /* the ']' */
    char *inner = strchr(add, '['), *last = strrchr(add, ']');
    inner[0] = ',';
    /* Splice at the later offset first so the earlier one stays valid (the file puts
     * added_tokens before model). */
    size_t ims = d.v[im].start, iml = d.v[im].len;
    char *a = ims > close ? splice(text, n, ims, iml, "true", 4, &n1) : NULL;
    char *b = a ? splice(a, n1, close, 0, inner, (size_t)(last - inner), outn) : NULL;
    json_free(&d);
    free(a);
    free(add);
    return b;
}

/* ---- per-category results ---------------------------------------------------------------------- */

struct group {
    char name[64];
    int cases, bad;
    char first[400];
};
static struct group groups[MAX_GROUPS];
static int ngroups;

static struct group *group_of(const char *name)
{
    for (int i = 0; i < ngroups; i++)
        if (!strcmp(groups[i].name, name))
            return &groups[i];
    struct group *g = &groups[ngroups++];
    memset(g, 0, sizeof *g);
    snprintf(g->name, sizeof g->name, "%s", name);
    return g;
}

static void record(const char *name, int ok, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static void record(const char *name, int ok, const char *fmt, ...)
{
    struct group *g = group_of(name);
    g->cases++;
    if (ok || g->bad++)
        return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(g->first, sizeof g->first, fmt, ap);
    va_end(ap);
}

static void report_groups(void)
{
    for (int i = 0; i < ngroups; i++) {
        struct group *g = &groups[i];
        CHECK(g->bad == 0, "%s: %d/%d cases%s%s", g->name, g->cases - g->bad, g->cases, g->bad ? "; first: " : "",
              g->bad ? g->first : "");
    }
    ngroups = 0;
}

/* ---- checks of one case ---------------------------------------------------------------------------- */

static int32_t ids_got[MAX_IDS], ids_want[MAX_IDS];
static char bytes_a[1 << 20], bytes_b[1 << 20];

static void check_ids(const char *grp, const char *text, size_t len, const int32_t *got, size_t ngot,
                      const int32_t *want, size_t nwant)
{
    size_t k = 0;
    while (k < ngot && k < nwant && got[k] == want[k])
        k++;
    record(grp, k == ngot && k == nwant, "\"%s\": id %zu is %d, HF has %d (%zu vs %zu ids)", show(text, len), k,
           k < ngot ? got[k] : -1, k < nwant ? want[k] : -1, ngot, nwant);
}

/* Streaming decode of ids: every chunk whole UTF-8, and all of them the full decode. */
static void check_stream(const struct tok *t, const char *grp, const int32_t *ids, size_t n, const char *want,
                         size_t nwant)
{
    struct tok_stream s;
    char *chunk = malloc(tok_stream_cap(t));
    size_t total = 0, len;
    int ok = 1;
    tok_stream_init(&s, t, 0);
    for (size_t k = 0; k <= n && ok; k++) {
        if (k < n)
            ok = tok_stream_push(&s, ids[k], chunk, &len) == TOK_OK;
        else
            tok_stream_flush(&s, chunk, &len);
        ok = ok && uni_utf8_check(chunk, len) == len && total + len <= sizeof bytes_b;
        if (ok)
            memcpy(bytes_b + total, chunk, len);
        total += len;
    }
    free(chunk);
    record(grp, ok && total == nwant && !memcmp(bytes_b, want, nwant), "%zu ids: streamed %zu bytes, want %zu%s", n,
           total, nwant, ok ? "" : " (a chunk was not whole UTF-8)");
}

/* One line of encode.txt. */
static void encode_case(const struct tok *t, char **f)
{
    char grp[96];
    int special = atoi(f[2]);
    size_t len = unhex(f[3], bytes_a), nwant = parse_ids(f[4], ids_want), ngot = 0, dlen;
    size_t ndec = unhex(f[5], bytes_b + (sizeof bytes_b / 2));
    const char *hf_dec = bytes_b + sizeof bytes_b / 2;
    snprintf(grp, sizeof grp, "encode %s %s special=%d", f[0], f[1], special);
    int rc = tok_encode(t, bytes_a, len, special, ids_got, MAX_IDS, &ngot);
    check_ids(grp, bytes_a, len, ids_got, rc == TOK_OK ? ngot : 0, ids_want, nwant);

    static char dec[1 << 19];
    snprintf(grp, sizeof grp, "decode %s", f[1]);
    rc = tok_decode(t, ids_want, nwant, 0, dec, sizeof dec, &dlen);
    record(grp, rc == TOK_OK && dlen == ndec && !memcmp(dec, hf_dec, ndec), "\"%s\": decode differs from HF's",
           show(hf_dec, ndec));

    if (strcmp(f[1], "syn")) { /* lstrip/rstrip tokens swallow spaces: no round trip there */
        struct uni_buf nfc = {0};
        uni_nfc(bytes_a, len, &nfc);
        snprintf(grp, sizeof grp, "round trip decode(encode(x)) == NFC(x) %s", f[1]);
        record(grp, dlen == nfc.n && !memcmp(dec, nfc.p, nfc.n), "\"%s\"", show(bytes_a, len));
        uni_buf_free(&nfc);
    }
    snprintf(grp, sizeof grp, "stream decode %s", f[1]);
    check_stream(t, grp, ids_want, nwant, dec, dlen);
}

static void run_encode_fixtures(const struct tok *t3, const struct tok *t35, const struct tok *tsyn)
{
    size_t n;
    char *text = test_read_file(DATA "encode.txt", &n), *save = NULL;
    int cases = 0;
    for (char *line = strtok_r(text, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
        char *f[8];
        if (line[0] == '#' || fields(line, f, 8) != 6)
            continue;
        const struct tok *t = !strcmp(f[1], "q3") ? t3 : !strcmp(f[1], "q35") ? t35 : tsyn;
        encode_case(t, f);
        cases++;
    }
    printf("info: %d reference encode cases\n", cases);
    free(text);
    report_groups();
}

static void run_pretok_fixtures(const struct tok *t3, const struct tok *t35)
{
    size_t n, ends[4096], want[4096];
    char *text = test_read_file(DATA "pretok.txt", &n), *save = NULL;
    for (char *line = strtok_r(text, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
        char *f[4], grp[64], *p, *e;
        if (line[0] == '#' || fields(line, f, 4) != 3)
            continue;
        size_t len = unhex(f[1], bytes_a), nw = 0, got;
        for (p = f[2]; nw < 4096 && (want[nw] = strtoul(p, &e, 10), e != p); p = e)
            nw++;
        int rc = tok_pretokenize(!strcmp(f[0], "q3") ? t3 : t35, bytes_a, len, ends, 4096, &got);
        size_t k = 0;
        while (rc == TOK_OK && k < got && k < nw && ends[k] == want[k])
            k++;
        snprintf(grp, sizeof grp, "pre-tokens of raw text %s", f[0]);
        record(grp, rc == TOK_OK && k == got && k == nw, "\"%s\": piece %zu ends at %zu, HF: %zu", show(bytes_a, len),
               k, k < got ? ends[k] : 0, k < nw ? want[k] : 0);
    }
    free(text);
    report_groups();
}

static void run_nfc_fixtures(void)
{
    size_t n;
    char *text = test_read_file(DATA "nfc.txt", &n), *save = NULL;
    struct uni_buf out = {0};
    for (char *line = strtok_r(text, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
        char *f[3];
        if (line[0] == '#' || fields(line, f, 3) != 2)
            continue;
        size_t len = unhex(f[0], bytes_a), nw = unhex(f[1], bytes_b);
        int rc = uni_nfc(bytes_a, len, &out);
        record("NFC against Node's String.normalize", rc == 0 && out.n == nw && !memcmp(out.p, bytes_b, nw), "\"%s\"",
               show(bytes_a, len));
        record("NFC quick check agrees", uni_nfc_quick(bytes_a, len) <= (out.n == len && !memcmp(out.p, bytes_a, len)),
               "\"%s\" passes the quick check but is not NFC", show(bytes_a, len));
    }
    uni_buf_free(&out);
    free(text);
    report_groups();
}

/* ---- streaming over random ids ----------------------------------------------------------------- */

/* b[0..n) is exactly one well-formed sequence (Unicode Table 3-7, by code point ranges). */
static int ref_valid(const unsigned char *b, size_t n)
{
    static const unsigned char lead_mask[5] = {0, 0x80, 0xE0, 0xF0, 0xF8}, lead_val[5] = {0, 0, 0xC0, 0xE0, 0xF0};
    static const uint32_t lo[5] = {0, 0, 0x80, 0x800, 0x10000};
    if ((b[0] & lead_mask[n]) != lead_val[n])
        return 0;
    uint32_t cp = n == 1 ? b[0] : b[0] & (0x7Fu >> n);
    for (size_t k = 1; k < n; k++) {
        if ((b[k] & 0xC0) != 0x80)
            return 0;
        cp = cp << 6 | (b[k] & 0x3F);
    }
    return cp >= lo[n] && cp <= 0x10FFFF && !(cp >= 0xD800 && cp <= 0xDFFF);
}

/* b[0..k) starts some well-formed sequence (tries continuations at the range edges). */
static int ref_completable(const unsigned char *b, size_t k)
{
    static const unsigned char edge[6] = {0x80, 0x8F, 0x90, 0x9F, 0xA0, 0xBF};
    unsigned char s[4];
    memcpy(s, b, k);
    for (size_t total = k; total <= 4; total++)
        for (int c = 0; c < 216; c++) {
            for (size_t i = k, x = (size_t)c; i < total; i++, x /= 6)
                s[i] = edge[x % 6];
            if (ref_valid(s, total))
                return 1;
        }
    return 0;
}

/* What a lossy decoder must make of b[0..n): U+FFFD per maximal ill-formed subpart. */
static size_t ref_lossy(const unsigned char *b, size_t n, char *out)
{
    size_t i = 0, w = 0;
    while (i < n) {
        size_t len = 0, k = 0;
        for (size_t l = 1; l <= 4 && i + l <= n && !len; l++)
            len = ref_valid(b + i, l) ? l : 0;
        if (len) {
            memcpy(out + w, b + i, len);
            w += len;
            i += len;
            continue;
        }
        for (size_t l = 1; l <= 3 && i + l <= n; l++)
            if (ref_completable(b + i, l))
                k = l;
        memcpy(out + w, "\xEF\xBF\xBD", 3);
        w += 3;
        i += k ? k : 1;
    }
    return w;
}

static void run_random_streams(const struct tok *t)
{
    unsigned long long seed = 42;
    int32_t ids[24];
    size_t vocab = tok_vocab_size(t), len;
    for (int r = 0; r < 3000; r++) {
        size_t n = 1 + test_rand(&seed) % 24;
        for (size_t k = 0; k < n; k++) {
            char one[2] = {(char)(0x80 + test_rand(&seed) % 0x80), 0};
            ids[k] = test_rand(&seed) % 2 ? tok_id_of(t, one) : (int32_t)(test_rand(&seed) % vocab);
        }
        tok_decode(t, ids, n, 0, bytes_a, sizeof bytes_a, &len);
        size_t nw = ref_lossy((const unsigned char *)bytes_a, len, bytes_b + sizeof bytes_b / 2);
        char *want = malloc(nw + 1);
        memcpy(want, bytes_b + sizeof bytes_b / 2, nw);
        check_stream(t, "stream decode of random ids == lossy UTF-8 of the bytes", ids, n, want, nw);
        free(want);
    }
    report_groups();
}

/* An added token followed by a combining mark: added tokens are matched in the raw text before
 * NFC, so the mark is normalised alone and stays uncomposed after the token ("</tool_call>" +
 * U+0338 decodes as such, where NFC of the whole text would make "</tool_call" + U+226F), while
 * in plain text it composes. The ids are those the Hugging Face tokenizers library (Rust,
 * @anush008/tokenizers) gives on this tokenizer.json. */
static void run_added_then_mark(const struct tok *t)
{
    static const struct {
        const char *text, *decoded;
        int32_t ids[4];
        size_t n;
    } c[] = {
        {"</tool_call>\xcc\xb8repo", "</tool_call>\xcc\xb8repo", {151658, 136, 116, 23476}, 4},
        {"a>\xcc\xb8" "b", "a\xe2\x89\xaf" "b", {64, 58994, 107, 65}, 4},
        {"<tool_call>\xcc\x81x", "<tool_call>\xcc\x81x", {151657, 53839, 87}, 3},
    };
    for (size_t i = 0; i < sizeof c / sizeof c[0]; i++) {
        int32_t ids[16];
        size_t n = 0, dl = 0;
        char dec[64];
        int st = tok_encode(t, c[i].text, strlen(c[i].text), 0, ids, 16, &n);
        int ok = !st && n == c[i].n && !memcmp(ids, c[i].ids, n * sizeof *ids) &&
                 !tok_decode(t, ids, n, 0, dec, sizeof dec, &dl) && dl == strlen(c[i].decoded) &&
                 !memcmp(dec, c[i].decoded, dl);
        CHECK(ok, "added token or '>' then a combining mark, case %zu: %zu ids as the tokenizers library, "
              "decoded as it decodes them", i, n);
    }
}

int main(void)
{
    size_t n, n35, nsyn;
    char err[TOK_ERR_LEN];
    char *json = test_read_file(DATA "qwen3_tokenizer.json", &n);
    double t0 = now_ms();
    struct tok *t3 = tok_load_mem(json, n, err);
    double ms = now_ms() - t0;
    CHECK(t3 != NULL, "load the Qwen3 tokenizer.json: %s", t3 ? "ok" : err);
    if (!t3)
        return test_done();
    printf("info: load took %.0f ms here (sanitizers on; tools/tokbench measures without)\n", ms);
    CHECK(tok_vocab_size(t3) == 151669 && tok_pattern(t3) == TOK_PAT_QWEN2, "151669 ids, qwen2 pattern (%zu, %d)",
          tok_vocab_size(t3), tok_pattern(t3));

    char *j35 = qwen35_json(json, n, &n35), *jsyn = synth_json(json, n, &nsyn);
    struct tok *t35 = tok_load_mem(j35, n35, err);
    CHECK(t35 && tok_pattern(t35) == TOK_PAT_QWEN35, "load with the qwen35 regex: %s", t35 ? "ok" : err);
    struct tok *tsyn = jsyn ? tok_load_mem(jsyn, nsyn, err) : NULL;
    CHECK(tsyn != NULL, "load with ignore_merges and synth_added.json: %s", tsyn ? "ok" : err);
    if (t35 && tsyn) {
        run_encode_fixtures(t3, t35, tsyn);
        run_pretok_fixtures(t3, t35);
    }
    run_nfc_fixtures();
    run_added_then_mark(t3);
    run_random_streams(t3);
    tok_free(t3);
    tok_free(t35);
    tok_free(tsyn);
    free(json);
    free(j35);
    free(jsyn);
    return test_done();
}
