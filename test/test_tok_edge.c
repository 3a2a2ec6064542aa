/* test_tok_edge.c — the tokenizer where no reference file reaches: the qwen35 regex on text
 * with combining marks (splits derived by hand from the regex), special-token switches,
 * ill-formed UTF-8, out-of-range ids, short buffers, the streaming decoder byte by byte, huge
 * inputs, and tokenizer.json files that must be refused (each with the words its message
 * must contain), down to every truncation of a small valid file. */
#include "host/tok.h"
#include "host/unicode.h"
#include "plan/json.h"
#include "test/test.h"

#include <string.h>

#define DATA "test/data/tok/"

static const char QWEN35_JSON[] =
    "\"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\\\r\\\\n\\\\p{L}\\\\p{N}]?[\\\\p{L}\\\\p{M}]+|\\\\p{N}| "
    "?[^\\\\s\\\\p{L}\\\\p{M}\\\\p{N}]+[\\\\r\\\\n]*|\\\\s*[\\\\r\\\\n]+|\\\\s+(?!\\\\S)|\\\\s+\"";
static const char QWEN2_JSON[] =
    "\"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\\\r\\\\n\\\\p{L}\\\\p{N}]?\\\\p{L}+|\\\\p{N}| "
    "?[^\\\\s\\\\p{L}\\\\p{N}]+[\\\\r\\\\n]*|\\\\s*[\\\\r\\\\n]+|\\\\s+(?!\\\\S)|\\\\s+\"";

static int32_t ids[1 << 20], ids2[1 << 20];
static char buf[1 << 22];

/* Copy of s with the first occurrence of from replaced by to (exits if from is missing). */
static char *replace(const char *s, const char *from, const char *to)
{
    const char *at = strstr(s, from);
    if (!at) {
        printf("FAIL test setup: \"%s\" not found\n", from);
        exit(1);
    }
    size_t n = strlen(s), nf = strlen(from), nt = strlen(to);
    char *o = malloc(n - nf + nt + 1);
    memcpy(o, s, (size_t)(at - s));
    memcpy(o + (at - s), to, nt);
    strcpy(o + (at - s) + nt, at + nf);
    return o;
}

static size_t encode(const struct tok *t, const char *s, size_t n, int special, int32_t *out)
{
    size_t k = 0;
    if (tok_encode(t, s, n, special, out, 1 << 20, &k) != TOK_OK)
        return (size_t)-1;
    return k;
}

/* ---- qwen35 against qwen3, hand-derived -------------------------------------------------------- */

/* Printable copy of s (control characters as \xNN), in one of four rotating buffers. */
static const char *esc(const char *s)
{
    static char bufs[4][256];
    static int k;
    char *o = bufs[k++ % 4];
    size_t w = 0;
    for (; *s && w < 240; s++)
        w += (size_t)((unsigned char)*s < 0x20 ? snprintf(o + w, 8, "\\x%02X", *s) : snprintf(o + w, 8, "%c", *s));
    o[w] = 0;
    return o;
}

/* Pieces of text as "a|b|c". */
static const char *pieces(const struct tok *t, const char *text)
{
    static char out[512];
    size_t ends[64], n, w = 0, prev = 0;
    if (tok_pretokenize(t, text, strlen(text), ends, 64, &n) != TOK_OK)
        return "(error)";
    for (size_t k = 0; k < n; prev = ends[k++])
        w += (size_t)snprintf(out + w, sizeof out - w, "%s%.*s", k ? "|" : "", (int)(ends[k] - prev), text + prev);
    return out;
}

/* Each row: raw text (before NFC), its pieces under qwen3, under qwen35. A combining mark
 * is \p{M}: not a letter and so "punctuation" for qwen3; a letter for qwen35, which also
 * drops it from the punctuation class. */
static const char *const SPLITS[][3] = {
    {"cafe\u0301", "cafe|\u0301", "cafe\u0301"},
    {"a\u0301b", "a|\u0301b", "a\u0301b"}, /* qwen3: the mark is the optional prefix of "b" */
    {"हिन्दी", "ह|िन|्द|ी", "हिन्दी"},          /* vowel sign, virama: marks between letters */
    {" नमस्ते", " नमस|्त|े", " नमस्ते"},
    {".\u0301a", ".\u0301|a", ".\u0301a"},   /* qwen35: '.' is the prefix of the letters */
    {"!!\u0301", "!!\u0301", "!!|\u0301"},   /* qwen35: the punctuation run stops at the mark */
    {" \u0301", " \u0301", " \u0301"},
    {"1\u0301a", "1|\u0301a", "1|\u0301a"},
    {"x\u20DD!", "x|\u20DD!", "x\u20DD|!"},   /* an enclosing mark (Me) */
    {"a \u0301\u0301b", "a| \u0301\u0301|b", "a| \u0301\u0301b"},
    {"\n\u0301", "\n|\u0301", "\n|\u0301"},
    {"'\u0301s", "'\u0301|s", "'\u0301s"},
    {"'s\u0301", "'s|\u0301", "'s|\u0301"},  /* the contraction is the first alternative */
    {"Hello world's", "Hello| world|'s", "Hello| world|'s"},
};

static void check_qwen35(const struct tok *t3, const struct tok *t35)
{
    for (size_t i = 0; i < sizeof SPLITS / sizeof *SPLITS; i++) {
        const char *p3 = pieces(t3, SPLITS[i][0]);
        CHECK(!strcmp(p3, SPLITS[i][1]), "qwen3 splits \"%s\" as \"%s\" (got \"%s\")", esc(SPLITS[i][0]),
              esc(SPLITS[i][1]), esc(p3));
        const char *p35 = pieces(t35, SPLITS[i][0]);
        CHECK(!strcmp(p35, SPLITS[i][2]), "qwen35 splits \"%s\" as \"%s\" (got \"%s\")", esc(SPLITS[i][0]),
              esc(SPLITS[i][2]), esc(p35));
    }
    /* NFC runs before the split: a mark with a precomposed form never reaches it. */
    const char *nfd = "cafe\u0301", *nfc = "café";
    size_t a = encode(t3, nfd, strlen(nfd), 1, ids), b = encode(t35, nfd, strlen(nfd), 1, ids2);
    size_t c = encode(t3, nfc, strlen(nfc), 1, ids2 + 1000);
    CHECK(a == b && a == c && !memcmp(ids, ids2, a * 4) && !memcmp(ids, ids2 + 1000, a * 4),
          "\"cafe\\u0301\" encodes as \"café\" under both patterns (%zu, %zu, %zu ids)", a, b, c);
    /* Thai vowel signs and Arabic harakat are marks the Qwen3 merges join to their letters
     * only when the pre-token keeps them together (Devanagari above happens to give the
     * same ids either way). */
    const char *hi = "สวัสดีครับ العَرَبِيَّة";
    a = encode(t3, hi, strlen(hi), 1, ids);
    b = encode(t35, hi, strlen(hi), 1, ids2);
    size_t la, lb;
    tok_decode(t3, ids, a, 0, buf, sizeof buf / 2, &la);
    tok_decode(t35, ids2, b, 0, buf + sizeof buf / 2, sizeof buf / 2, &lb);
    CHECK((a != b || memcmp(ids, ids2, a * 4)) && la == lb && !memcmp(buf, buf + sizeof buf / 2, la),
          "Thai and Arabic with marks: qwen3 and qwen35 ids differ (%zu vs %zu ids), both decode to the text", a, b);
}

/* ---- special tokens ------------------------------------------------------------------------------- */

static int has_id_at_least(const int32_t *v, size_t n, int32_t lo)
{
    for (size_t k = 0; k < n; k++)
        if (v[k] >= lo)
            return 1;
    return 0;
}

static int has_id(const int32_t *v, size_t n, int32_t id)
{
    for (size_t k = 0; k < n; k++)
        if (v[k] == id)
            return 1;
    return 0;
}

static void check_special(const struct tok *t)
{
    size_t len, n;
    int32_t end = tok_id_of(t, "<|im_end|>"), start = tok_id_of(t, "<|im_start|>");
    int32_t think = tok_id_of(t, "<think>"), the = tok_id_of(t, " the");
    const char *tb = tok_token_bytes(t, the, &len);
    CHECK(end == 151645 && start == 151644 && tok_id_of(t, "<|endoftext|>") == 151643 && think == 151667,
          "tok_id_of: <|im_end|> %d, <|im_start|> %d, <think> %d", end, start, think);
    CHECK(the >= 0 && the < 151643 && len == 4 && !memcmp(tb, " the", 4) && tok_id_of(t, "no such token!") == -1,
          "tok_id_of(\" the\") is vocabulary token %d; an unknown string is -1", the);
    CHECK(tok_is_special(t, end) && !tok_is_special(t, think) && !tok_is_special(t, 0) && !tok_is_special(t, -1),
          "tok_is_special: <|im_end|> yes; <think>, 0, -1 no");

    const char *chat = "<|im_start|>user\nhi<|im_end|>\n";
    n = encode(t, chat, strlen(chat), 1, ids);
    CHECK(n == 6 && ids[0] == start && ids[4] == end, "allow_special=1: ChatML markers become their ids (%zu ids)", n);
    n = encode(t, chat, strlen(chat), 0, ids);
    tok_decode(t, ids, n, 0, buf, sizeof buf, &len);
    CHECK(n > 5 && !has_id_at_least(ids, n, 151643) && len == strlen(chat) && !memcmp(buf, chat, len),
          "allow_special=0: markers are plain text (%zu ids) and decode back", n);
    const char *th = "<think>x</think>";
    n = encode(t, th, strlen(th), 0, ids);
    CHECK(has_id(ids, n, think) && has_id(ids, n, think + 1), "allow_special=0 still matches non-special <think>");

    n = encode(t, chat, strlen(chat), 1, ids);
    tok_decode(t, ids, n, 1, buf, sizeof buf, &len);
    CHECK(len == 8 && !memcmp(buf, "user\nhi\n", 8),
          "decode with skip_special drops the markers (%zu bytes)", len);
}

/* allow_special=0 skips a special token's whole match, as HF's encode_special_tokens: a
 * non-special token inside it ("<ab" in "<abc>") is not searched for. */
static void check_special_overlap(const struct tok *tsyn, const struct tok *t3)
{
    size_t a = encode(tsyn, "<abc>", 5, 0, ids), b = encode(t3, "<abc>", 5, 1, ids2);
    CHECK(a == b && !memcmp(ids, ids2, a * 4), "allow_special=0: \"<abc>\" is plain text, not \"<ab\" + \"c>\"");
    a = encode(tsyn, "<abc>", 5, 1, ids);
    CHECK(a == 1 && ids[0] == 151670, "allow_special=1: \"<abc>\" is its special token (%zu ids)", a);
}

/* ---- bad input ------------------------------------------------------------------------------------- */

static void check_bad_utf8(const struct tok *t)
{
    static const struct {
        const char *s;
        size_t at;
    } bad[] = {
        {"\x80", 0},         {"abc\xC0\xAF", 3},   {"\xED\xA0\x80", 0}, /* overlong '/', surrogate */
        {"\xF4\x90\x80\x80", 0}, {"ok\xE2\x82", 2}, {"\xFF", 0},       {"a\xF0\x9F\x98", 1},
        {"\xC2", 0},         {"\xC3\xA9\xC3", 2},  {"x\xE0\x80\x80", 1}, {"<|im_end|>\xFE", 10},
    };
    int ok = 1;
    size_t n = 0, i;
    for (i = 0; i < sizeof bad / sizeof *bad && ok; i++) {
        size_t len = strlen(bad[i].s);
        ok = tok_encode(t, bad[i].s, len, 1, ids, 1 << 20, &n) == TOK_EUTF8 && n == bad[i].at &&
             tok_pretokenize(t, bad[i].s, len, (size_t *)ids2, 16, &n) == TOK_EUTF8 && n == bad[i].at;
    }
    CHECK(ok, "ill-formed UTF-8 refused with its offset (%zu cases%s)", sizeof bad / sizeof *bad,
          ok ? "" : ", failed one printed below");
    if (!ok)
        printf("     case %zu: got offset %zu, want %zu\n", i - 1, n, bad[i - 1].at);
    n = encode(t, "a\0b", 3, 1, ids);
    size_t len;
    tok_decode(t, ids, n, 0, buf, sizeof buf, &len);
    CHECK(n != (size_t)-1 && len == 3 && !memcmp(buf, "a\0b", 3), "an embedded NUL is text like any other");
    CHECK(encode(t, "", 0, 1, ids) == 0, "the empty text is no ids");
}

static void check_ids_and_buffers(const struct tok *t)
{
    size_t len, n;
    int32_t bad[] = {-1, 151669, 151936, INT32_MAX, INT32_MIN};
    int ok = 1;
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        int32_t v[3] = {9707, 1879, bad[i]};
        ok &= tok_decode(t, v, 3, 0, buf, sizeof buf, &len) == TOK_ERANGE && len == 2;
        ok &= tok_token_bytes(t, bad[i], &len) == NULL && len == 0;
        struct tok_stream s;
        tok_stream_init(&s, t, 0);
        ok &= tok_stream_push(&s, bad[i], buf, &len) == TOK_ERANGE && len == 0;
    }
    CHECK(ok, "out-of-range ids refused by decode (index of the bad id), stream and token_bytes");
    int rc = tok_encode(t, "Hello world", 11, 1, ids, 1, &n);
    CHECK(rc == TOK_ESPACE && n == 2 && ids[0] == 9707, "encode into 1 slot: TOK_ESPACE, 2 needed, first id kept");
    int32_t hw[2] = {9707, 1879};
    rc = tok_decode(t, hw, 2, 0, buf, 3, &len);
    CHECK(rc == TOK_ESPACE && len == 11, "decode into 3 bytes: TOK_ESPACE, 11 needed");
    CHECK(!strcmp(tok_strerror(TOK_EUTF8), "text is not well-formed UTF-8") && tok_strerror(99) != NULL,
          "tok_strerror names the statuses");
}

/* Streaming, byte by byte through the single-byte tokens. */
static void check_stream_bytes(const struct tok *t)
{
    static const struct {
        const char *in, *out; /* bytes fed one token each; expected total output */
    } cases[] = {
        {"\xC3\xA9", "\xC3\xA9"},
        {"\xE2\x82" "a", "\xEF\xBF\xBD" "a"},       /* E2 82 is one maximal subpart */
        {"\xFF" "b", "\xEF\xBF\xBD" "b"},
        {"\xF0\x9F", "\xEF\xBF\xBD"},              /* cut at the end: flush gives U+FFFD */
        {"\xF0\x9F\x98\x80", "\xF0\x9F\x98\x80"},
        {"\xED\xA0", "\xEF\xBF\xBD\xEF\xBF\xBD"},  /* ED A0 starts a surrogate: two subparts */
        {"\xC3\xC3\xA9", "\xEF\xBF\xBD\xC3\xA9"},
    };
    int ok = 1;
    size_t i;
    char out[64], chunk[4096];
    for (i = 0; i < sizeof cases / sizeof *cases && ok; i++) {
        struct tok_stream s;
        size_t w = 0, len;
        tok_stream_init(&s, t, 0);
        for (const char *p = cases[i].in; *p; p++) {
            char one[2] = {*p, 0};
            tok_stream_push(&s, tok_id_of(t, one), chunk, &len);
            ok &= uni_utf8_check(chunk, len) == len;
            memcpy(out + w, chunk, len);
            w += len;
        }
        tok_stream_flush(&s, chunk, &len);
        memcpy(out + w, chunk, len);
        w += len;
        ok &= w == strlen(cases[i].out) && !memcmp(out, cases[i].out, w);
    }
    CHECK(ok, "streaming byte tokens: whole characters held back and completed, U+FFFD per bad subpart%s",
          ok ? "" : " (a case failed)");
    struct tok_stream s;
    size_t len, l2;
    tok_stream_init(&s, t, 1);
    tok_stream_push(&s, tok_id_of(t, "\xC3"), chunk, &len);
    tok_stream_push(&s, tok_id_of(t, "<|im_end|>"), chunk, &l2);
    CHECK(len == 0 && l2 == 0 && tok_stream_push(&s, tok_id_of(t, " the"), chunk, &len) == TOK_OK && len == 7 &&
              !memcmp(chunk, "\xEF\xBF\xBD the", 7),
          "stream with skip_special: the special token emits nothing; a cut character then a word is U+FFFD + word");
}

/* Inputs far longer than any pre-token in the corpus: one word of 200k letters (BPE's queue),
 * 100k spaces, 20k combining marks on one letter (NFC's reordering, one qwen35 piece). */
static void check_huge(const struct tok *t3, const struct tok *t35)
{
    static const struct {
        const char *unit;
        size_t reps;
    } cases[] = {{"a", 200000}, {" ", 100000}, {"\u0301", 20000}, {"ab\u0323\u0301 ", 30000}};
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        size_t u = strlen(cases[i].unit), n = 1 + u * cases[i].reps, len, nt;
        char *s = malloc(n);
        s[0] = 'x';
        for (size_t k = 0; k < cases[i].reps; k++)
            memcpy(s + 1 + k * u, cases[i].unit, u);
        struct uni_buf nfc = {0};
        uni_nfc(s, n, &nfc);
        int ok = 1;
        for (int p = 0; p < 2; p++) {
            const struct tok *t = p ? t35 : t3;
            ok &= tok_encode(t, s, n, 1, ids, 1 << 20, &nt) == TOK_OK;
            ok &= tok_decode(t, ids, nt, 0, buf, sizeof buf, &len) == TOK_OK && len == nfc.n && !memcmp(buf, nfc.p, len);
        }
        CHECK(ok, "huge input %zu x \"%s\": encodes and decodes back to its NFC under both patterns", cases[i].reps,
              cases[i].unit);
        uni_buf_free(&nfc);
        free(s);
    }
}

/* ---- tokenizer.json files ------------------------------------------------------------------------------ */

/* A small valid tokenizer.json: the 256 byte tokens (id = byte), "he" "ll" "hell" "hello"
 * built by four merges, "xyz" reachable only through ignore_merges, one special token. */
static char *small_json(void)
{
    static char vocab[8192];
    size_t w = 0;
    int other = 0;
    for (int b = 0; b < 256; b++) {
        int printable = (b >= 0x21 && b <= 0x7E) || (b >= 0xA1 && b <= 0xAC) || b >= 0xAE;
        char u[4];
        size_t k = uni_utf8_encode(printable ? (uint32_t)b : 0x100u + (uint32_t)other++, u);
        w += (size_t)snprintf(vocab + w, sizeof vocab - w, "\"%s%.*s\":%d,", b == '"' || b == '\\' ? "\\" : "", (int)k,
                              u, b);
    }
    char *json = malloc(16384);
    snprintf(json, 16384,
             "{\"version\":\"1.0\",\"truncation\":null,\"padding\":null,"
             "\"added_tokens\":[{\"id\":261,\"content\":\"<|end|>\",\"single_word\":false,\"lstrip\":false,"
             "\"rstrip\":false,\"normalized\":false,\"special\":true}],"
             "\"normalizer\":{\"type\":\"NFC\"},"
             "\"pre_tokenizer\":{\"type\":\"Sequence\",\"pretokenizers\":[{\"type\":\"Split\",\"pattern\":{\"Regex\":%s},"
             "\"behavior\":\"Isolated\",\"invert\":false},{\"type\":\"ByteLevel\",\"add_prefix_space\":false,"
             "\"trim_offsets\":false,\"use_regex\":false}]},"
             "\"post_processor\":null,"
             "\"decoder\":{\"type\":\"ByteLevel\",\"add_prefix_space\":false,\"trim_offsets\":false,\"use_regex\":false},"
             "\"model\":{\"type\":\"BPE\",\"dropout\":null,\"unk_token\":null,\"continuing_subword_prefix\":\"\","
             "\"end_of_word_suffix\":\"\",\"fuse_unk\":false,\"byte_fallback\":false,\"ignore_merges\":false,"
             "\"vocab\":{%s\"he\":256,\"ll\":257,\"hell\":258,\"hello\":259,\"xyz\":260},"
             "\"merges\":[\"h e\",\"l l\",\"he ll\",\"hell o\"]}}",
             QWEN2_JSON, vocab);
    return json;
}

/* Load json; return the tokenizer (or NULL) and leave the message in err. */
static struct tok *load_str(const char *json, char *err)
{
    return tok_load_mem(json, strlen(json), err);
}

static int ids_are(const struct tok *t, const char *text, const int32_t *want, size_t nwant)
{
    size_t n = encode(t, text, strlen(text), 1, ids);
    return n == nwant && !memcmp(ids, want, n * 4);
}

static void check_small_accepted(const char *json)
{
    char err[TOK_ERR_LEN];
    struct tok *t = load_str(json, err);
    CHECK(t != NULL, "small tokenizer.json loads: %s", t ? "ok" : err);
    if (!t)
        return;
    CHECK(ids_are(t, "hello", (int32_t[]){259}, 1) && ids_are(t, " hello", (int32_t[]){32, 259}, 2) &&
              ids_are(t, "xyz<|end|>", (int32_t[]){120, 121, 122, 261}, 4),
          "small tokenizer: merges build \"hello\"; \"xyz\" stays bytes without ignore_merges");
    tok_free(t);

    static const char *const variants[][3] = {
        {"\"h e\",\"l l\",\"he ll\",\"hell o\"", "[\"h\",\"e\"],[\"l\",\"l\"],[\"he\",\"ll\"],[\"hell\",\"o\"]",
         "merges as [a, b] pairs"},
        {"\"ignore_merges\":false", "\"ignore_merges\":true", "ignore_merges true"},
        {"\"normalizer\":{\"type\":\"NFC\"}", "\"normalizer\":null", "normalizer null"},
        {"\"normalizer\":{\"type\":\"NFC\"}", "\"normalizer\":{\"type\":\"Sequence\",\"normalizers\":[{\"type\":\"NFC\"}]}",
         "normalizer Sequence [NFC]"},
        {"\"post_processor\":null", "\"post_processor\":{\"type\":\"ByteLevel\",\"add_prefix_space\":false,"
                                    "\"trim_offsets\":false,\"use_regex\":false}", "post_processor ByteLevel"},
    };
    for (size_t i = 0; i < sizeof variants / sizeof *variants; i++) {
        char *j = replace(json, variants[i][0], variants[i][1]);
        t = load_str(j, err);
        int ok = t && ids_are(t, "hello", (int32_t[]){259}, 1);
        if (ok && i == 1)
            ok = ids_are(t, "xyz", (int32_t[]){260}, 1);
        if (ok && i == 2) /* without NFC, e + U+0301 stays two characters: 3 byte tokens */
            ok = ids_are(t, "e\u0301", (int32_t[]){101, 204, 129}, 3);
        if (ok && i == 3)
            ok = ids_are(t, "e\u0301", (int32_t[]){195, 169}, 2);
        CHECK(ok, "accepted: %s%s%s", variants[i][2], t ? "" : ": ", t ? "" : err);
        tok_free(t);
        free(j);
    }
}

static void check_small_refused(const char *json)
{
    static const char *const bad[][4] = {
        /* from, to, words the message must contain, what */
        {"\"model\":", "\"modelx\":", "no \"model\"", "missing model"},
        {QWEN2_JSON, "\"\\\\s+\"", "is not one of the qwen2/qwen35 patterns", "unknown Split regex"},
        {"\"type\":\"Sequence\",\"pretokenizers\"", "\"type\":\"Whitespace\",\"pretokenizers\"",
         "pre_tokenizer \"Whitespace\" is not supported", "pre-tokenizer type"},
        {"\"pre_tokenizer\":", "\"pre_tokenizer\":null,\"x\":", "pre_tokenizer \"null\"", "no pre-tokenizer"},
        {"\"behavior\":\"Isolated\"", "\"behavior\":\"Removed\"", "behavior \"Removed\"", "Split behavior"},
        {"\"invert\":false", "\"invert\":true", "invert", "Split invert"},
        {"\"use_regex\":false", "\"use_regex\":true", "use_regex", "ByteLevel use_regex"},
        {"\"add_prefix_space\":false", "\"add_prefix_space\":true", "add_prefix_space", "ByteLevel prefix space"},
        {"{\"type\":\"NFC\"}", "{\"type\":\"NFKC\"}", "normalizer \"NFKC\"", "NFKC normalizer"},
        {"{\"type\":\"NFC\"}", "{\"type\":\"Sequence\",\"normalizers\":[{\"type\":\"NFC\"},{\"type\":\"Lowercase\"}]}",
         "\"Lowercase\"", "Lowercase in a normalizer Sequence"},
        {"\"h e\"", "\"h Q1\"", "token \"Q1\" is not in the vocabulary", "merge naming an unknown token"},
        {"\"hell o\"]", "\"hell o\",\"l o\"]", "\"l\" + \"o\" is not in the vocabulary", "merge with no joined token"},
        {"\"h e\"", "\"h e l\"", "one space", "merge of three tokens"},
        {"\"h e\"", "42", "neither", "merge that is a number"},
        {"\"decoder\":", "\"decoderx\":", "decoder \"missing\"", "missing decoder"},
        {"\"decoder\":{\"type\":\"ByteLevel\"", "\"decoder\":{\"type\":\"WordPiece\"", "decoder \"WordPiece\"",
         "WordPiece decoder"},
        {"\"post_processor\":null", "\"post_processor\":{\"type\":\"TemplateProcessing\"}", "\"TemplateProcessing\"",
         "template post-processor"},
        {"\"A\":65,", "", "no token for byte 0x41", "a byte without a token"},
        {"\"id\":261", "\"id\":300", "Hugging Face gives it 261", "added token id HF would not give"},
        {"\"id\":261", "\"id\":259", "Hugging Face gives it 261", "added token on a vocabulary id"},
        {"\"type\":\"BPE\"", "\"type\":\"WordPiece\"", "model \"WordPiece\"", "WordPiece model"},
        {"\"dropout\":null", "\"dropout\":0.1", "dropout", "BPE dropout"},
        {"\"continuing_subword_prefix\":\"\"", "\"continuing_subword_prefix\":\"##\"", "continuing_subword_prefix",
         "subword prefix"},
        {"\"xyz\":260", "\"xyz\":259", "used twice", "two tokens on one id"},
        {"\"xyz\":260", "\"xyz\":-5", "not an integer in", "negative id"},
        {"\"xyz\":260", "\"xyz\":1.5", "not an integer in", "fractional id"},
        {"\"added_tokens\":[", "\"added_tokens\":7,\"x\":[", "is not an array", "added_tokens not an array"},
        {"\"content\":\"<|end|>\"", "\"content\":\"\"", "\"content\"", "empty added token"},
        {"\"ignore_merges\":false", "\"ignore_merges\":0", "ignore_merges", "ignore_merges not a boolean"},
        {"{\"version\"", "{{\"version\"", "line 1 col 2", "not JSON"},
    };
    char err[TOK_ERR_LEN];
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        char *j = replace(json, bad[i][0], bad[i][1]);
        struct tok *t = load_str(j, err);
        CHECK(!t && strstr(err, bad[i][2]) && !strncmp(err, "tokenizer.json: ", 16), "refused: %s -> \"%s\"", bad[i][3],
              err);
        tok_free(t);
        free(j);
    }
    struct tok *t = load_str("[]", err);
    CHECK(!t && strstr(err, "top level is not an object"), "refused: a JSON array -> \"%s\"", err);
    t = tok_load_mem("", 0, err);
    CHECK(!t && err[0], "refused: an empty file -> \"%s\"", err);
    t = tok_load(DATA "no-such-file.json", err);
    CHECK(!t && strstr(err, "no-such-file.json"), "refused: a missing file -> \"%s\"", err);

    size_t n = strlen(json), cut;
    int ok = 1;
    for (cut = 0; cut < n && ok; cut++) {
        t = tok_load_mem(json, cut, err);
        ok = !t && err[0];
        tok_free(t);
    }
    CHECK(ok, "every truncation of the small file (%zu lengths) is refused with a message", n);
}

/* json is NUL-terminated (test_read_file). */
static void check_real_file_refusals(const char *json, size_t n)
{
    char err[TOK_ERR_LEN];
    struct tok *t = tok_load_mem(json, n / 2, err);
    CHECK(!t && strstr(err, "tokenizer.json: "), "refused: the Qwen3 file cut in half -> \"%s\"", err);
    t = tok_load(DATA "qwen3_tokenizer.json", err);
    CHECK(t != NULL, "tok_load reads the Qwen3 file from its path");
    tok_free(t);
    /* HF gives an added token that is already a vocabulary entry the vocabulary's id. */
    char *j = replace(json, "}\n  ],\n  \"normalizer\"",
                      "},{\"id\": 151669, \"content\": \"ony\", \"normalized\": true}],\"normalizer\"");
    t = load_str(j, err);
    CHECK(!t && strstr(err, "has id 151669 but Hugging Face gives it 3549"), "refused: an added token that is "
          "a vocabulary entry, on a new id -> \"%s\"", err);
    tok_free(t);
    free(j);
}

/* ---- main ---------------------------------------------------------------------------------------------- */

static struct tok *variant(const char *json, size_t n, const char *from, const char *to, char *err)
{
    char *copy = malloc(n + 1);
    memcpy(copy, json, n);
    copy[n] = 0;
    char *j = replace(copy, from, to);
    struct tok *t = load_str(j, err);
    free(copy);
    free(j);
    return t;
}

int main(void)
{
    size_t n;
    char err[TOK_ERR_LEN];
    char *json = test_read_file(DATA "qwen3_tokenizer.json", &n);
    struct tok *t3 = tok_load_mem(json, n, err);
    struct tok *t35 = variant(json, n, QWEN2_JSON, QWEN35_JSON, err);
    /* The same overlapping pair as synth_added.json: "<ab" plain, "<abc>" special. */
    struct tok *tsyn = variant(json, n, "}\n  ],\n  \"normalizer\"",
                               "},{\"id\": 151669, \"content\": \"<ab\", \"special\": false, \"normalized\": false},"
                               "{\"id\": 151670, \"content\": \"<abc>\", \"special\": true}],\"normalizer\"",
                               err);
    CHECK(t3 && t35 && tsyn, "load the Qwen3 tokenizer, its qwen35 variant and an overlapping-token variant: %s",
          t3 && t35 && tsyn ? "ok" : err);
    if (!t3 || !t35 || !tsyn)
        return test_done();
    check_qwen35(t3, t35);
    check_special(t3);
    check_special_overlap(tsyn, t3);
    check_bad_utf8(t3);
    check_ids_and_buffers(t3);
    check_stream_bytes(t3);
    check_huge(t3, t35);
    char *small = small_json();
    check_small_accepted(small);
    check_small_refused(small);
    check_real_file_refusals(json, n);
    free(small);
    tok_free(t3);
    tok_free(t35);
    tok_free(tsyn);
    free(json);
    return test_done();
}
