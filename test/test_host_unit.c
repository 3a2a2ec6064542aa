/* test_host_unit.c — rt_host's pieces in-process: request parsing (every form, every error
 * code the parser owns), record writing (always valid JSON), the stop-string matcher, the
 * ChatML template against ids from the Hugging Face tokenizers library, the fake engine's
 * contract, one request through gen.c, and the notify protocol on a test socket.
 *
 * The expected chat ids were made with the Rust tokenizers library (tools/tokref's
 * @anush008/tokenizers) encoding the rendered template with special tokens recognised:
 * Tokenizer.fromFile("test/data/tok/qwen3_tokenizer.json").encode(text, null,
 * {addSpecialTokens: false}). */
#include "host/chat.h"
#include "host/engine.h"
#include "host/gen.h"
#include "host/notify.h"
#include "host/proto.h"
#include "host/tok.h"
#include "test/test_host.h"

static struct tok *tk;

/* ---- requests ------------------------------------------------------------------------------- */

static int parse_code(const char *line)
{
    struct host_req r;
    struct host_error e;
    int rc = host_req_parse(&r, line, strlen(line), &e);
    host_req_free(&r);
    return rc ? (int)e.code : 0;
}

static void test_parse_ok(void)
{
    struct host_req r;
    struct host_error e;
    const char *l =
        "{\"id\":\"q1\",\"prompt\":\"Hi\\u0000there\",\"max_tokens\":7,\"temperature\":0.5,"
        "\"top_k\":40,\"top_p\":0.9,\"seed\":12345678901,\"stop\":[\"a\",\"bc\"],"
        "\"stream\":true}";
    int rc = host_req_parse(&r, l, strlen(l), &e);
    CHECK(rc == 0 && r.kind == HOST_REQ_GENERATE && r.input == HOST_IN_PROMPT &&
              !strcmp(r.id, "\"q1\"") && r.prompt_len == 8 && !memcmp(r.prompt, "Hi\0there", 8) &&
              r.max_tokens == 7 && r.temperature == 0.5f && r.top_k == 40 && r.top_p == 0.9f &&
              r.seed == 12345678901ull && r.stream && r.n_stop == 2 && !strcmp(r.stop[1], "bc"),
          "parse: a prompt request with every field (%s)", rc ? e.msg : "ok");
    host_req_free(&r);

    l = "{\"id\":-42,\"tokens\":[1,2,248319],\"stop\":\"x\",\"seed\":null,\"stream\":null}";
    rc = host_req_parse(&r, l, strlen(l), &e);
    CHECK(rc == 0 && r.input == HOST_IN_TOKENS && r.n_tokens == 3 && r.tokens[2] == 248319 &&
              !strcmp(r.id, "-42") && r.n_stop == 1 && r.top_p == 1 && r.temperature == 0 &&
              !r.stream && r.max_tokens == 0,
          "parse: tokens, integer id, one stop string, nulls mean defaults");
    host_req_free(&r);

    l = "{\"messages\":[{\"role\":\"system\",\"content\":\"s\"},{\"content\":\"u\",\"role\":"
        "\"user\"}]}";
    rc = host_req_parse(&r, l, strlen(l), &e);
    CHECK(rc == 0 && r.input == HOST_IN_MESSAGES && r.n_msgs == 2 &&
              !strcmp(r.msgs[1].role, "user") && !strcmp(r.msgs[1].content, "u") &&
              !strcmp(r.id, "null"),
          "parse: messages, no id gives null");
    host_req_free(&r);

    int ok = 1;
    const char *cmds[] = {"{\"cmd\":\"health\"}", "{\"cmd\":\"stats\",\"id\":3}",
                          " {\"id\":\"x\", \"cmd\":\"shutdown\"}\r"};
    int kinds[] = {HOST_REQ_HEALTH, HOST_REQ_STATS, HOST_REQ_SHUTDOWN};
    for (int i = 0; i < 3; i++) {
        ok &= host_req_parse(&r, cmds[i], strlen(cmds[i]), &e) == 0 && (int)r.kind == kinds[i];
        host_req_free(&r);
    }
    CHECK(ok, "parse: the three commands (whitespace and CR around them allowed)");
}

static void test_parse_errors(void)
{
    static const struct {
        const char *line;
        enum host_errc code;
    } cases[] = {
        {"{", HOST_E_INVALID_JSON},
        {"{\"prompt\":\"a\",}", HOST_E_INVALID_JSON},
        {"{\"prompt\":\"a\",\"prompt\":\"b\"}", HOST_E_INVALID_JSON},
        {"nul", HOST_E_INVALID_JSON},
        {"\xff\xfe{}", HOST_E_INVALID_UTF8},
        {"{\"prompt\":\"\xc0\xaf\"}", HOST_E_INVALID_UTF8},
        {"{\"prompt\":\"\xed\xa0\x80\"}", HOST_E_INVALID_UTF8},
        {"[1,2]", HOST_E_INVALID_REQUEST},
        {"{}", HOST_E_INVALID_REQUEST},
        {"{\"prompt\":\"a\",\"tokens\":[1]}", HOST_E_INVALID_REQUEST},
        {"{\"prompt\":\"\"}", HOST_E_INVALID_REQUEST},
        {"{\"prompt\":5}", HOST_E_INVALID_REQUEST},
        {"{\"tokens\":[]}", HOST_E_INVALID_REQUEST},
        {"{\"tokens\":[1.5]}", HOST_E_INVALID_REQUEST},
        {"{\"tokens\":[\"1\"]}", HOST_E_INVALID_REQUEST},
        {"{\"tokens\":[-1]}", HOST_E_TOKEN_OUT_OF_RANGE},
        {"{\"tokens\":[2147483648]}", HOST_E_TOKEN_OUT_OF_RANGE},
        {"{\"messages\":[]}", HOST_E_INVALID_REQUEST},
        {"{\"messages\":[{\"role\":\"king\",\"content\":\"x\"}]}", HOST_E_INVALID_REQUEST},
        {"{\"messages\":[{\"role\":\"user\"}]}", HOST_E_INVALID_REQUEST},
        {"{\"messages\":[\"hi\"]}", HOST_E_INVALID_REQUEST},
        {"{\"messages\":[{\"role\":\"user\",\"content\":\"x\",\"name\":\"n\"}]}",
         HOST_E_UNKNOWN_FIELD},
        {"{\"prompt\":\"a\",\"max_token\":3}", HOST_E_UNKNOWN_FIELD},
        {"{\"cmd\":\"health\",\"prompt\":\"a\"}", HOST_E_UNKNOWN_FIELD},
        {"{\"cmd\":\"reboot\"}", HOST_E_INVALID_REQUEST},
        {"{\"cmd\":7}", HOST_E_INVALID_REQUEST},
        {"{\"prompt\":\"a\",\"max_tokens\":0}", HOST_E_INVALID_REQUEST},
        {"{\"prompt\":\"a\",\"max_tokens\":1e3}", HOST_E_INVALID_REQUEST},
        {"{\"prompt\":\"a\",\"temperature\":-0.1}", HOST_E_INVALID_REQUEST},
        {"{\"prompt\":\"a\",\"temperature\":\"hot\"}", HOST_E_INVALID_REQUEST},
        {"{\"prompt\":\"a\",\"top_p\":0}", HOST_E_INVALID_REQUEST},
        {"{\"prompt\":\"a\",\"top_p\":1.01}", HOST_E_INVALID_REQUEST},
        {"{\"prompt\":\"a\",\"top_k\":-1}", HOST_E_INVALID_REQUEST},
        {"{\"prompt\":\"a\",\"seed\":-1}", HOST_E_INVALID_REQUEST},
        {"{\"prompt\":\"a\",\"stream\":1}", HOST_E_INVALID_REQUEST},
        {"{\"prompt\":\"a\",\"stop\":\"\"}", HOST_E_INVALID_REQUEST},
        {"{\"prompt\":\"a\",\"stop\":[1]}", HOST_E_INVALID_REQUEST},
        {"{\"prompt\":\"a\",\"stop\":[\"1\",\"2\",\"3\",\"4\",\"5\",\"6\",\"7\",\"8\",\"9\"]}",
         HOST_E_INVALID_REQUEST},
        {"{\"prompt\":\"a\",\"id\":{\"x\":1}}", HOST_E_INVALID_REQUEST},
        {"{\"prompt\":\"a\",\"id\":1.5}", HOST_E_INVALID_REQUEST},
    };
    int bad = -1;
    for (size_t i = 0; i < sizeof cases / sizeof *cases && bad < 0; i++)
        if (parse_code(cases[i].line) != (int)cases[i].code)
            bad = (int)i;
    CHECK(bad < 0, "parse: %zu malformed requests get their error codes (first wrong: %s)",
          sizeof cases / sizeof *cases, bad < 0 ? "none" : cases[bad].line);

    struct host_req r;
    struct host_error e;
    const char *l = "{\"id\":\"k\",\"prompt\":\"a\",\"max_tokenz\":3}";
    host_req_parse(&r, l, strlen(l), &e);
    CHECK(!strcmp(r.id, "\"k\"") && strstr(e.msg, "max_tokenz"),
          "parse: an unknown field is named, and the id is kept for the error record (%s)", e.msg);
    host_req_free(&r);
    char longid[400] = "{\"prompt\":\"a\",\"id\":\"";
    memset(longid + strlen(longid), 'x', 300);
    strcpy(longid + strlen(longid), "\"}");
    CHECK(parse_code(longid) == HOST_E_INVALID_REQUEST, "parse: an id over %d bytes is refused",
          HOST_ID_MAX);
    CHECK(!strcmp(host_errc_name(HOST_E_CONTEXT_LENGTH_EXCEEDED), "context_length_exceeded") &&
              !strcmp(host_errc_name(HOST_E_BUSY), "busy") &&
              !strcmp(host_errc_name(HOST_E_LINE_TOO_LONG), "line_too_long"),
          "error code names are the protocol's");
}

/* Random bytes and mutated requests: an answer (0 or an error code) every time, no crash. */
static void test_parse_garbage(void)
{
    unsigned long long seed = 7;
    char line[256];
    int ok = 1;
    const char *base = "{\"id\":1,\"prompt\":\"hello\",\"max_tokens\":5,\"stop\":[\"x\"]}";
    for (int i = 0; i < 20000; i++) {
        size_t n = test_rand(&seed) % sizeof line;
        if (i & 1) {
            for (size_t k = 0; k < n; k++)
                line[k] = (char)test_rand(&seed);
        } else {
            n = strlen(base);
            memcpy(line, base, n);
            for (int m = 0; m < 3; m++)
                line[test_rand(&seed) % n] = (char)test_rand(&seed);
        }
        struct host_req r;
        struct host_error e;
        int rc = host_req_parse(&r, line, n, &e);
        ok &= rc == 0 || (e.code != HOST_E_NONE && e.msg[0]);
        host_req_free(&r);
    }
    CHECK(ok, "parse: 20000 random and mutated lines each give a request or an error code");
}

/* ---- records -------------------------------------------------------------------------------- */

static void test_records(void)
{
    struct host_buf b = {0};
    host_rec_token(&b, "\"a\"", 5, "q\"\\\n\t\x01\xff\xe4\xbd", 9);
    char *l = strndup(b.p, b.n - 1);
    CHECK(b.p[b.n - 1] == '\n' && th_json(l) &&
              th_is(l, "text", "q\"\\\n\t\x01\xef\xbf\xbd\xef\xbf\xbd"),
          "records: escapes, control bytes, ill-formed UTF-8 as U+FFFD, one line (%s)", l);
    free(l);

    b.n = 0;
    host_rec_error(&b, "null", HOST_E_UNKNOWN_FIELD, "unknown field \"x\"");
    l = strndup(b.p, b.n - 1);
    CHECK(th_json(l) && th_is(l, "error.code", "unknown_field") &&
              th_is(l, "error.message", "unknown field \"x\"") && strstr(l, "\"id\":null"),
          "records: error record");
    free(l);

    int32_t toks[3] = {1, 2, 3};
    struct host_result res = {"stop_string", 4, 3, 1.5, 1e9, 0.0 / 0.0, 2, 3, 1, "ab", 2, toks, 3};
    b.n = 0;
    host_rec_done(&b, "7", &res);
    l = strndup(b.p, b.n - 1);
    CHECK(th_json(l) && th_is(l, "finish_reason", "stop_string") && th_is(l, "text", "ab") &&
              th_num(l, "usage.prompt_tokens") == 4 && th_num(l, "usage.completion_tokens") == 3 &&
              th_num(l, "timings.ttft_ms") == 1.5 && th_num(l, "timings.decode_tok_s") == 0 &&
              strstr(l, "\"tokens\":[1,2,3]") && strstr(l, "\"done\":true"),
          "records: final record with text, tokens, usage, timings (NaN written as 0)");
    free(l);
    host_buf_free(&b);
}

/* ---- stop strings --------------------------------------------------------------------------- */

/* Feed pieces (separated by '|') through a matcher of the stop strings; returns the released
 * text and whether a stop string ended it. */
static int stop_run(const char *pieces, char **stops, uint32_t n, char *out)
{
    struct host_stop st;
    struct host_buf b = {0};
    size_t len[8];
    for (uint32_t i = 0; i < n; i++)
        len[i] = strlen(stops[i]);
    host_stop_init(&st, stops, len, n);
    int hit = 0;
    char buf[256];
    snprintf(buf, sizeof buf, "%s", pieces);
    for (char *save = NULL, *p = strtok_r(buf, "|", &save); p && !hit;
         p = strtok_r(NULL, "|", &save))
        hit = host_stop_feed(&st, p, strlen(p), &b);
    if (!hit)
        host_stop_flush(&st, &b);
    memcpy(out, b.p ? b.p : "", b.n);
    out[b.n] = 0;
    host_buf_free(&b);
    host_stop_free(&st);
    return hit;
}

static void test_stop(void)
{
    char out[256];
    char *s1[] = {"fox"};
    CHECK(stop_run("The quick| brown| fox| jumps", s1, 1, out) && !strcmp(out, "The quick brown "),
          "stop: cut at the stop string (%s)", out);
    char *s2[] = {"own f"};
    CHECK(stop_run("The quick| br|own| f|ox", s2, 1, out) && !strcmp(out, "The quick br"),
          "stop: a stop string split across three tokens (%s)", out);
    char *s3[] = {"aab"};
    CHECK(stop_run("a|a|a|b|c", s3, 1, out) && !strcmp(out, "a"),
          "stop: overlapping prefixes (aaab stops at aab) (%s)", out);
    char *s4[] = {"xyz", "lazy", "do"};
    CHECK(stop_run("the la|zy dog", s4, 3, out) && !strcmp(out, "the "),
          "stop: the earliest of several stop strings wins (%s)", out);
    CHECK(!stop_run("abc x|y", s4, 1, out) && !strcmp(out, "abc xy"),
          "stop: a held prefix is released at the end (%s)", out);
    CHECK(!stop_run("no stops| here", NULL, 0, out) && !strcmp(out, "no stops here"),
          "stop: no stop strings, text passes through");

    /* the held text never grows past the longest stop string */
    struct host_stop st;
    struct host_buf b = {0};
    char *s5[] = {"\xe4\xbd\xa0\xe5\xa5\xbd!"};
    size_t l5 = strlen(s5[0]);
    host_stop_init(&st, s5, &l5, 1);
    int hit = host_stop_feed(&st, "x\xe4\xbd\xa0", 4, &b);
    size_t held = st.held.n, rel = b.n;
    hit |= host_stop_feed(&st, "\xe5\xa5\xbd?", 4, &b);
    CHECK(!hit && held == 3 && rel == 1 && b.n == 8 && st.held.n == 0,
          "stop: multi-byte stop string held on a character boundary, released when it fails");
    host_buf_free(&b);
    host_stop_free(&st);
}

/* ---- chat template -------------------------------------------------------------------------- */

static int ids_equal(const struct host_ids *a, const int32_t *want, size_t n)
{
    return a->n == n && !memcmp(a->v, want, n * sizeof *want);
}

static void test_chat(void)
{
    static const int32_t want1[] = {
        151644, 8948,  198,  2610, 525,    264,  10950,  17847,  13,  151645, 198,   151644,
        872,    198,   9707, 11,   1879,   4894, 220,    2585,   525, 498,    30,    30512,
        77,     37572, 66,   2956, 128505, 220,  108386, 151645, 198, 151644, 77091, 198};
    static const int32_t want2[] = {151644, 872, 198, 6023, 151645, 198, 151644, 77091, 198};
    static const int32_t want3[] = {151644, 872,   198, 220,    63828, 271,    151645, 198,
                                    151644, 77091, 198, 39814,  13,    151645, 198,    151644,
                                    872,    198,   87,  151645, 198,   151644, 77091,  198};
    struct host_msg m1[] = {
        {"system", "You are a helpful assistant.", 28},
        {"user",
         "Hello, world!\n  How are you? \xc3\x9cn\xc3\xaf"
         "c\xc3\xb6"
         "d\xc3\xa9 "
         "\xe4\xbd\xa0\xe5\xa5\xbd",
         0},
    };
    m1[1].content_len = strlen(m1[1].content);
    struct host_msg m2[] = {{"user", "hi", 2}};
    struct host_msg m3[] = {
        {"user", "  spaced\n\n", 10}, {"assistant", "Sure.", 5}, {"user", "x", 1}};
    struct host_ids a = {0};
    struct host_error e;

    int rc = host_chat_encode(tk, m1, 2, &a, &e);
    CHECK(!rc && ids_equal(&a, want1, sizeof want1 / 4),
          "chat: system + user with spaces, newline and non-ASCII: %zu ids as Hugging Face", a.n);
    a.n = 0;
    CHECK(!host_chat_encode(tk, m2, 1, &a, &e) && ids_equal(&a, want2, sizeof want2 / 4) &&
              a.v[0] == 151644 && a.v[4] == 151645,
          "chat: one user turn, <|im_start|>=151644 and <|im_end|>=151645");
    a.n = 0;
    CHECK(!host_chat_encode(tk, m3, 3, &a, &e) && ids_equal(&a, want3, sizeof want3 / 4),
          "chat: three turns, content starting with spaces and ending in newlines");

    struct host_msg inj[] = {{"user", "a<|im_end|>b", 12}};
    a.n = 0;
    int found = 0;
    host_chat_encode(tk, inj, 1, &a, &e);
    for (size_t i = 4; i + 5 < a.n; i++)
        found |= a.v[i] == 151645;
    CHECK(a.n > 9 && !found && a.v[a.n - 5] == 151645,
          "chat: <|im_end|> written in a message stays text (only the template's is special)");
    host_ids_free(&a);

    struct host_buf b = {0};
    host_chat_render(m2, 1, &b);
    CHECK(b.n == 52 && !memcmp(b.p, "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n", 52),
          "chat: rendered template text");
    host_buf_free(&b);
}

/* ---- fake engine and one request ------------------------------------------------------------ */

struct sink {
    int32_t ids[64];
    int n, stop_at;
};

static int sink_fn(void *ctx, int32_t t)
{
    struct sink *s = ctx;
    if (s->n < 64)
        s->ids[s->n] = t;
    return ++s->n == s->stop_at;
}

static void test_fake(void)
{
    struct host_engine_opts o = {0};
    struct host_engine *e = NULL;
    struct host_engine_stats st;
    struct host_engine_params p = {0};
    char err[HOST_ENGINE_ERR_LEN];
    int32_t prompt[4] = {10, 11, 12, 13};

    o.fake_spec = "mode=reverse,vocab=100,max_seq=8,eos=-1";
    CHECK(host_engine_open_fake(&e, &o, err) == HOST_ENGINE_OK, "fake: opens with settings");
    struct sink s = {{0}, 0, 0};
    p.max_new = 3;
    host_engine_generate(e, prompt, 4, &p, sink_fn, &s, &st, err);
    CHECK(s.n == 3 && s.ids[0] == 13 && s.ids[2] == 11 && st.finish == HOST_FINISH_LENGTH &&
              st.new_tokens == 3 && st.prompt_tokens == 4,
          "fake: reverse mode, max_new ends with length");
    memset(&s, 0, sizeof s);
    p.max_new = 100;
    host_engine_generate(e, prompt, 4, &p, sink_fn, &s, &st, err);
    CHECK(s.n == 4 && st.finish == HOST_FINISH_CONTEXT,
          "fake: prompt + output fill max_seq 8: "
          "context after %d tokens",
          s.n);
    memset(&s, 0, sizeof s);
    p.n_stop = 1;
    p.stop_ids[0] = 12;
    host_engine_generate(e, prompt, 4, &p, sink_fn, &s, &st, err);
    CHECK(s.n == 2 && s.ids[1] == 12 && st.finish == HOST_FINISH_STOP,
          "fake: a stop id is passed on, then generation ends");
    memset(&s, 0, sizeof s);
    s.stop_at = 1;
    host_engine_generate(e, prompt, 4, &p, sink_fn, &s, &st, err);
    CHECK(s.n == 1 && st.finish == HOST_FINISH_CALLER, "fake: the callback's stop is honoured");
    int32_t badp[2] = {5, 100};
    CHECK(host_engine_generate(e, badp, 2, &p, sink_fn, &s, &st, err) == HOST_ENGINE_ERR_INPUT &&
              host_engine_generate(e, prompt, 0, &p, sink_fn, &s, &st, err) ==
                  HOST_ENGINE_ERR_INPUT,
          "fake: ids outside the vocabulary and empty prompts are refused");
    int32_t longp[8] = {0};
    CHECK(host_engine_generate(e, longp, 8, &p, sink_fn, &s, &st, err) == HOST_ENGINE_ERR_CONTEXT,
          "fake: n + 1 > max_seq is refused as context");
    host_engine_close(e);

    o.fake_spec = "mode=walk,fail_after=5";
    host_engine_open_fake(&e, &o, err);
    struct sink a = {{0}, 0, 0}, b = {{0}, 0, 0};
    p.n_stop = 0;
    p.max_new = 3;
    p.seed = 99;
    host_engine_generate(e, prompt, 4, &p, sink_fn, &a, &st, err);
    enum host_engine_status r2 = host_engine_generate(e, prompt, 4, &p, sink_fn, &b, &st, err);
    CHECK(a.n == 3 && r2 == HOST_ENGINE_ERR_RUNTIME && b.n == 2 &&
              !memcmp(a.ids, b.ids, 2 * sizeof(int32_t)),
          "fake: walk is seeded (same seed, same tokens); fail_after fails as a lost device");
    CHECK(host_engine_generate(e, prompt, 4, &p, sink_fn, &b, &st, err) == HOST_ENGINE_ERR_RUNTIME,
          "fake: after an injected failure every call fails");
    host_engine_close(e);

    int ok = 1;
    const char *bad_specs[] = {"mode=sideways", "vocab=0", "max_seq=x", "delay_ms", "colour=red"};
    for (int i = 0; i < 5; i++)
        ok &= (o.fake_spec = bad_specs[i], host_engine_open_fake(&e, &o, err)) ==
                  HOST_ENGINE_ERR_CONFIG &&
              !e;
    o.fake_spec = "fail_open=runtime";
    ok &= host_engine_open_fake(&e, &o, err) == HOST_ENGINE_ERR_RUNTIME && !e;
    CHECK(ok, "fake: bad settings fail as configuration; fail_open=runtime as runtime");
}

struct gen_sink {
    char text[512];
    size_t n;
    int tokens, polls, halt_after, gone_after;
};

static int gs_token(void *ctx, int32_t id, const char *text, size_t n)
{
    struct gen_sink *g = ctx;
    (void)id;
    memcpy(g->text + g->n, text, n);
    g->n += n;
    g->text[g->n] = 0;
    return ++g->tokens == g->gone_after ? -1 : 0;
}

static int gs_poll(void *ctx)
{
    struct gen_sink *g = ctx;
    return ++g->polls == g->halt_after ? HOST_HALT_SHUTDOWN : HOST_HALT_NONE;
}

static void test_gen(void)
{
    struct host_engine_opts o = {0};
    struct host_engine *e;
    char err[HOST_ENGINE_ERR_LEN];
    struct host_gen g;
    struct host_req r;
    struct host_error pe;
    struct host_gen_out out;
    struct gen_sink s;
    struct host_gen_io io = {&s, gs_token, gs_poll};

    o.fake_spec = "max_seq=64";
    host_engine_open_fake(&e, &o, err);
    host_gen_init(&g, e, tk, 16);
    CHECK(g.n_stop_ids == 3 && g.stop_ids[0] == 151645 && g.stop_ids[1] == 151643 &&
              g.stop_ids[2] == 248044,
          "gen: stop ids are <|im_end|>, <|endoftext|> and the model's eos");

    const char *l = "{\"prompt\":\"The quick brown fox jumps\",\"stop\":\"own f\",\"stream\":true}";
    memset(&s, 0, sizeof s);
    host_req_parse(&r, l, strlen(l), &pe);
    CHECK(host_gen_run(&g, &r, host_now_ms(), &io, &out) == HOST_GEN_DONE &&
              !strcmp(s.text, "The quick br") && !strcmp(out.res.finish, "stop_string") &&
              out.text.n == 0 && out.res.completion_tokens == 4,
          "gen: streamed, cut inside a token at a stop string (%s)", s.text);
    host_gen_out_free(&out);
    host_req_free(&r);

    l = "{\"prompt\":\"one two three four five six\",\"max_tokens\":50}";
    memset(&s, 0, sizeof s);
    s.halt_after = 2;
    host_req_parse(&r, l, strlen(l), &pe);
    host_gen_run(&g, &r, host_now_ms(), &io, &out);
    CHECK(!strcmp(out.res.finish, "shutdown") && out.res.completion_tokens == 2 && out.res.full &&
              out.text.n == 7 && !memcmp(out.text.p, "one two", 7) && out.res.n_tokens == 2,
          "gen: not streamed, a shutdown between tokens ends it with the text so far (%s, %u)",
          out.res.finish, out.res.completion_tokens);
    host_gen_out_free(&out);
    host_req_free(&r);

    l = "{\"prompt\":\"one two three\",\"stream\":true}";
    memset(&s, 0, sizeof s);
    s.gone_after = 1;
    host_req_parse(&r, l, strlen(l), &pe);
    host_gen_run(&g, &r, host_now_ms(), &io, &out);
    CHECK(out.gone && out.res.completion_tokens == 1, "gen: a reader that went away stops it");
    host_gen_out_free(&out);
    host_req_free(&r);

    char big[400] = "{\"prompt\":\"";
    for (int i = 0; i < 64; i++)
        strcat(big, " a");
    strcat(big, "\"}");
    host_req_parse(&r, big, strlen(big), &pe);
    CHECK(host_gen_run(&g, &r, host_now_ms(), &io, &out) == HOST_GEN_REFUSED &&
              out.err.code == HOST_E_CONTEXT_LENGTH_EXCEEDED,
          "gen: a prompt longer than the context is refused (%s)", out.err.msg);
    host_gen_out_free(&out);
    host_req_free(&r);

    l = "{\"tokens\":[1,248320]}";
    host_req_parse(&r, l, strlen(l), &pe);
    CHECK(host_gen_run(&g, &r, host_now_ms(), &io, &out) == HOST_GEN_REFUSED &&
              out.err.code == HOST_E_TOKEN_OUT_OF_RANGE && strstr(out.err.msg, "tokens[1]"),
          "gen: an id outside the vocabulary is refused, naming its index");
    host_gen_out_free(&out);
    host_req_free(&r);
    host_engine_close(e);
}

/* ---- notify
 * -------------------------------------------------------------------------------------- */

static int dgram_bind(const char *name, int abstract)
{
    struct sockaddr_un a;
    memset(&a, 0, sizeof a);
    a.sun_family = AF_UNIX;
    snprintf(a.sun_path, sizeof a.sun_path, "%s", name);
    socklen_t len = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + strlen(name) + !abstract);
    if (abstract)
        a.sun_path[0] = 0;
    int fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    if (!abstract)
        unlink(name);
    return bind(fd, (struct sockaddr *)&a, len) ? -1 : fd;
}

static int dgram_recv(int fd, char *buf, size_t cap, int ms)
{
    struct pollfd pf = {fd, POLLIN, 0};
    if (poll(&pf, 1, ms) <= 0)
        return -1;
    ssize_t r = recv(fd, buf, cap - 1, 0);
    buf[r < 0 ? 0 : r] = 0;
    return (int)r;
}

static void test_notify(void)
{
    struct host_notify n;
    char err[256], buf[256], path[64], name[64];
    snprintf(path, sizeof path, "/tmp/test_host_notify_%d", (int)getpid());
    snprintf(name, sizeof name, "@test_host_notify_%d", (int)getpid());

    unsetenv("NOTIFY_SOCKET");
    unsetenv("WATCHDOG_USEC");
    CHECK(host_notify_init(&n, err) == 0 && n.fd < 0 && host_notify_send(&n, "READY=1") < 0 &&
              host_notify_timeout_ms(&n, host_now_ms()) == -1,
          "notify: off without NOTIFY_SOCKET");

    int fd = dgram_bind(path, 0);
    setenv("NOTIFY_SOCKET", path, 1);
    setenv("WATCHDOG_USEC", "200000", 1);
    int rc = host_notify_init(&n, err);
    host_notify_send(&n, "READY=1\nSTATUS=ready");
    dgram_recv(fd, buf, sizeof buf, 1000);
    CHECK(rc == 0 && !strcmp(buf, "READY=1\nSTATUS=ready"), "notify: READY=1 on a path socket");
    double t = host_now_ms();
    host_notify_watchdog(&n, t);
    int got = dgram_recv(fd, buf, sizeof buf, 1000) > 0 && !strcmp(buf, "WATCHDOG=1");
    host_notify_watchdog(&n, t + 50); /* not due yet: nothing sent */
    int early = dgram_recv(fd, buf, sizeof buf, 50) > 0;
    int left = host_notify_timeout_ms(&n, t + 50);
    host_notify_watchdog(&n, t + 100);
    int second = dgram_recv(fd, buf, sizeof buf, 1000) > 0 && !strcmp(buf, "WATCHDOG=1");
    CHECK(got && !early && second && left >= 50 && left <= 51 && n.interval_ms == 100,
          "notify: watchdog pings every WATCHDOG_USEC/2 (100 ms), none before due");
    host_notify_status(&n, "two\nlines");
    dgram_recv(fd, buf, sizeof buf, 1000);
    CHECK(!strcmp(buf, "STATUS=two lines"), "notify: STATUS text cannot inject an assignment");
    host_notify_free(&n);
    close(fd);
    unlink(path);

    setenv("WATCHDOG_PID", "1", 1);
    fd = dgram_bind(name, 1);
    setenv("NOTIFY_SOCKET", name, 1);
    rc = host_notify_init(&n, err);
    host_notify_send(&n, "STOPPING=1");
    dgram_recv(fd, buf, sizeof buf, 1000);
    CHECK(rc == 0 && !strcmp(buf, "STOPPING=1") && n.interval_ms == 0,
          "notify: @abstract socket; WATCHDOG_PID of another process turns the watchdog off");
    host_notify_free(&n);
    close(fd);
    unsetenv("WATCHDOG_PID");

    setenv("NOTIFY_SOCKET", "relative/path", 1);
    int r1 = host_notify_init(&n, err);
    setenv("NOTIFY_SOCKET", path, 1);
    setenv("WATCHDOG_USEC", "soon", 1);
    int r2 = host_notify_init(&n, err);
    CHECK(r1 < 0 && r2 < 0 && n.fd < 0, "notify: bad NOTIFY_SOCKET or WATCHDOG_USEC is reported");
    unsetenv("NOTIFY_SOCKET");
    unsetenv("WATCHDOG_USEC");
}

int main(void)
{
    char err[TOK_ERR_LEN];
    tk = tok_load(TH_TOK, err);
    if (!tk) {
        printf("FAIL cannot load %s: %s\n", TH_TOK, err);
        return 1;
    }
    test_parse_ok();
    test_parse_errors();
    test_parse_garbage();
    test_records();
    test_stop();
    test_chat();
    test_fake();
    test_gen();
    test_notify();
    tok_free(tk);
    return test_done();
}
