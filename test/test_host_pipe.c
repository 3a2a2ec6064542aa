/* test_host_pipe.c — the real rt_host binary (--backend fake) through pipes on its standard
 * input and output: every request form, streamed and not, stop strings (one split across
 * tokens), the chat template's ids, every error code, a long line, binary garbage, empty
 * lines, the next request still served after each bad one, SIGTERM in the middle of a stream,
 * the shutdown command, the end of input, a reader that goes away, the exit codes, the
 * one-shot and benchmark modes, and --help.
 *
 * The fake engine echoes the prompt's tokens (engine_fake.c), so the expected text of a
 * request is its own prompt: "prompt" P with max_tokens = the number of P's tokens gives P. */
#include "test/test_host.h"

static const char *const FAKE[] = {"--backend", "fake", "--tokenizer", TH_TOK, NULL};

/* Arguments: FAKE, then extra (NULL-terminated). */
static void spawn(struct th_proc *p, const char *const *extra, const char *const *env)
{
    const char *args[40];
    size_t k = 0;
    for (const char *const *a = FAKE; *a; a++)
        args[k++] = *a;
    for (; extra && *extra && k < 39; extra++)
        args[k++] = *extra;
    args[k] = NULL;
    th_spawn(p, args, env);
}

/* Send a request, return its final record (malloc'd; NULL on timeout); streamed text in text. */
static char *ask(struct th_proc *p, const char *req, const char *id, char *text, int *n)
{
    th_send(p, req);
    return th_collect(p, id, text, 4096, n);
}

/* ---- the request forms ---------------------------------------------------------------------- */

static void test_forms(struct th_proc *p)
{
    char text[4096];
    int n;
    char *l = ask(p, "{\"id\":1,\"prompt\":\"Hello, world! This is a test.\",\"max_tokens\":9}",
                  "1", text, &n);
    CHECK(th_is(l, "finish_reason", "length") &&
              th_is(l, "text", "Hello, world! This is a test.") &&
              th_num(l, "usage.prompt_tokens") == 9 && th_num(l, "usage.completion_tokens") == 9 &&
              strstr(l, "\"tokens\":[9707,11,1879,0,1096,374,264,1273,13]") && n == 0 &&
              th_num(l, "timings.ttft_ms") >= 0 && th_num(l, "timings.decode_tok_s") > 0 &&
              th_has(l, "timings.prefill_tok_s"),
          "prompt, not streamed: one final record with text, tokens, usage, timings");
    free(l);

    l = ask(p,
            "{\"id\":\"s\",\"prompt\":\"Hello, world! This is a test.\",\"max_tokens\":9,"
            "\"stream\":true}",
            "\"s\"", text, &n);
    CHECK(th_is(l, "finish_reason", "length") && !th_has(l, "text") && n == 9 &&
              !strcmp(text, "Hello, world! This is a test."),
          "prompt, streamed: 9 token records whose text adds up, then the final record");
    free(l);

    l = ask(p, "{\"id\":2,\"tokens\":[9707,1879],\"max_tokens\":3}", "2", text, &n);
    CHECK(th_is(l, "text", "Hello worldHello") && th_num(l, "usage.prompt_tokens") == 2,
          "tokens: ids in, text out");
    free(l);

    l = ask(p, "{\"id\":3,\"messages\":[{\"role\":\"user\",\"content\":\"hi\"}],\"max_tokens\":50}",
            "3", text, &n);
    CHECK(th_is(l, "finish_reason", "stop") && th_num(l, "usage.prompt_tokens") == 9 &&
              strstr(l, "\"tokens\":[151644,872,198,6023,151645]") && th_is(l, "text", "user\nhi"),
          "messages: the ChatML ids echoed back; <|im_end|> stops; special tokens not in text");
    free(l);

    l = ask(p, "{\"id\":4,\"prompt\":\"Hi<|im_end|>there\",\"max_tokens\":9}", "4", text, &n);
    CHECK(th_is(l, "finish_reason", "stop") && th_is(l, "text", "Hi") &&
              th_num(l, "usage.completion_tokens") == 2,
          "prompt text may name special tokens: <|im_end|> ends the echo");
    free(l);

    l = ask(p,
            "{\"id\":5,\"prompt\":\"a b c d e f g\",\"temperature\":0.7,\"top_k\":5,"
            "\"top_p\":0.9,\"seed\":3,\"max_tokens\":2}",
            "5", text, &n);
    CHECK(th_is(l, "text", "a b") && th_is(l, "finish_reason", "length"),
          "sampling fields are accepted");
    free(l);

    /* a 4-byte character the byte-level BPE splits over several tokens */
    l = ask(p,
            "{\"id\":6,\"prompt\":\"x\xf0\x9d\x92\x9c\xf0\x9f\xa6\x80y\",\"stop\":\"y\","
            "\"stream\":true}",
            "6", text, &n);
    /* 3 characters before the stop in 4 or more tokens: one at least was cut across tokens */
    CHECK(!strcmp(text, "x\xf0\x9d\x92\x9c\xf0\x9f\xa6\x80") && n >= 4 &&
              !strstr(text, "\xef\xbf\xbd"),
          "streamed text leaves in whole UTF-8 characters only (%d tokens)", n);
    free(l);
}

static void test_stops(struct th_proc *p)
{
    char text[4096];
    int n;
    char *l = ask(p,
                  "{\"id\":10,\"prompt\":\"The quick brown fox jumps over the lazy dog\","
                  "\"stop\":[\"fox\"]}",
                  "10", text, &n);
    CHECK(th_is(l, "finish_reason", "stop_string") && th_is(l, "text", "The quick brown ") &&
              th_num(l, "usage.completion_tokens") == 4,
          "stop string: the text ends where it starts");
    free(l);

    l = ask(p,
            "{\"id\":11,\"prompt\":\"The quick brown fox jumps over the lazy dog\","
            "\"stop\":[\"zzz\",\"own fox j\"],\"stream\":true}",
            "11", text, &n);
    CHECK(th_is(l, "finish_reason", "stop_string") && !strcmp(text, "The quick br") && n == 5,
          "stop string split across three tokens, streamed: cut exactly (%s)", text);
    free(l);

    l = ask(p,
            "{\"id\":12,\"prompt\":\"one two thr\",\"stop\":\"three\",\"stream\":true,"
            "\"max_tokens\":3}",
            "12", text, &n);
    CHECK(th_is(l, "finish_reason", "length") && !strcmp(text, "one two thr"),
          "a held-back prefix of a stop string is released at the end");
    free(l);
}

/* ---- bad input ------------------------------------------------------------------------------ */

/* Send a bad line; 1 if its error record has the code and a good request after it is served. */
static int bad_then_good(struct th_proc *p, const char *line, size_t len, const char *code)
{
    static int seq = 100;
    char req[128], id[16], text[4096];
    int n;
    ssize_t w = write(p->in, line, len);
    (void)w;
    char *e = th_line(p, TH_WAIT_MS);
    int ok = th_json(e) && th_is(e, "error.code", code) && th_has(e, "error.message");
    free(e);
    snprintf(id, sizeof id, "%d", ++seq);
    snprintf(req, sizeof req, "{\"id\":%s,\"prompt\":\"still here\",\"max_tokens\":2}", id);
    char *l = ask(p, req, id, text, &n);
    ok &= th_is(l, "text", "still here");
    free(l);
    return ok;
}

static void test_errors(struct th_proc *p)
{
    static const struct {
        const char *line, *code;
    } cases[] = {
        {"{\"prompt\": \"a\"\n", "invalid_json"},
        {"[\"prompt\"]\n", "invalid_request"},
        {"{\"prompt\":\"a\",\"tokens\":[1]}\n", "invalid_request"},
        {"{\"prompt\":\"a\",\"max_tokens\":-3}\n", "invalid_request"},
        {"{\"prompt\":\"a\",\"max_new_tokens\":3}\n", "unknown_field"},
        {"{\"tokens\":[1,248320]}\n", "token_out_of_range"},
        {"{\"tokens\":[-5]}\n", "token_out_of_range"},
        {"{\"prompt\":\"\xc3\x28\"}\n", "invalid_utf8"},
        {"{\"cmd\":\"dance\"}\n", "invalid_request"},
    };
    int bad = -1;
    for (size_t i = 0; i < sizeof cases / sizeof *cases && bad < 0; i++)
        if (!bad_then_good(p, cases[i].line, strlen(cases[i].line), cases[i].code))
            bad = (int)i;
    CHECK(bad < 0,
          "each bad request gets its error code, and the next request is served "
          "(first failure: %s)",
          bad < 0 ? "none" : cases[bad].line);

    char *big = malloc(3 << 20);
    memset(big, 'x', 3 << 20);
    memcpy(big, "{\"prompt\":\"", 11);
    big[(3 << 20) - 1] = '\n';
    CHECK(bad_then_good(p, big, 3 << 20, "line_too_long"),
          "a 3 MiB line: one line_too_long error, the rest of it dropped, then served");
    free(big);

    unsigned long long seed = 1;
    char junk[4096];
    int ok = 1;
    for (int i = 0; i < 8 && ok; i++) {
        size_t n = 1 + test_rand(&seed) % 4000;
        for (size_t k = 0; k < n; k++) {
            junk[k] = (char)test_rand(&seed);
            if (junk[k] == '\n' || ((i & 1) && (junk[k] & 0x80)))
                junk[k] = (char)(0x21 + k % 90); /* odd rounds: ASCII garbage, even: binary */
        }
        junk[0] = 'x';
        junk[n] = '\n';
        ok &= bad_then_good(p, junk, n + 1, (i & 1) ? "invalid_json" : "invalid_utf8");
    }
    CHECK(ok, "binary and ASCII garbage: one error each (invalid_utf8, invalid_json), then served");

    th_send(p, "");
    th_send(p, "   \t");
    th_send(p, "{\"id\":\"h\",\"cmd\":\"health\"}");
    char *l = th_line(p, TH_WAIT_MS);
    CHECK(th_is(l, "cmd", "health") && th_is(l, "status", "ok") && th_is(l, "id", "h"),
          "empty and blank lines get no answer");
    free(l);
}

static void test_context(void)
{
    struct th_proc p;
    const char *extra[] = {"--fake", "max_seq=16", "-q", NULL};
    char text[4096];
    int n;
    spawn(&p, extra, NULL);
    char *l = ask(&p, "{\"id\":1,\"prompt\":\"a b c d e f g h i j k l m n o p q\"}", "1", text, &n);
    CHECK(th_is(l, "error.code", "context_length_exceeded"),
          "a prompt longer than the context: context_length_exceeded");
    free(l);
    l = ask(&p, "{\"id\":2,\"prompt\":\"a b c d e f g h i j\",\"max_tokens\":100}", "2", text, &n);
    CHECK(th_is(l, "finish_reason", "context") && th_num(l, "usage.completion_tokens") == 6,
          "generation that fills the context ends with finish_reason context");
    free(l);
    th_send(&p, "{\"id\":3,\"cmd\":\"stats\"}");
    l = th_line(&p, TH_WAIT_MS);
    CHECK(th_num(l, "stats.requests") == 2 && th_num(l, "stats.completed") == 1 &&
              th_num(l, "stats.errors") == 1 && th_num(l, "stats.completion_tokens") == 6 &&
              th_is(l, "stats.last_error.code", "context_length_exceeded") &&
              th_num(l, "stats.uptime_s") >= 0,
          "stats: requests, tokens, uptime, last error");
    free(l);
    CHECK(th_end(&p, TH_WAIT_MS) == 0, "end of standard input: exit 0");
}

/* ---- stopping ------------------------------------------------------------------------------- */

static void test_sigterm(void)
{
    struct th_proc p;
    const char *extra[] = {"--fake", "delay_ms=20", NULL};
    char text[4096];
    int n;
    spawn(&p, extra, NULL);
    th_send(&p, "{\"id\":1,\"prompt\":\"a b c d\",\"max_tokens\":100000,\"stream\":true}");
    th_send(&p, "{\"id\":2,\"prompt\":\"queued\"}");
    char *first = th_line(&p, TH_WAIT_MS);
    kill(p.pid, SIGTERM);
    char *l = th_collect(&p, "1", text, sizeof text, &n);
    char *q = th_collect(&p, "2", text, sizeof text, &n);
    CHECK(th_is(first, "text", "a") && th_is(l, "finish_reason", "shutdown") &&
              th_num(l, "usage.completion_tokens") < 1000,
          "SIGTERM mid-stream: the request ends with finish_reason shutdown");
    CHECK(th_is(q, "finish_reason", "shutdown") && th_num(q, "usage.completion_tokens") == 0,
          "SIGTERM: the waiting request gets a shutdown record too");
    free(first);
    free(l);
    free(q);
    CHECK(th_wait(&p, TH_WAIT_MS) == 0 && th_log_has(&p, "signal 15"), "SIGTERM: exit 0");
    th_end(&p, 100);

    spawn(&p, NULL, NULL);
    th_send(&p, "{\"id\":\"bye\",\"cmd\":\"shutdown\"}");
    l = th_line(&p, TH_WAIT_MS);
    CHECK(th_is(l, "cmd", "shutdown") && th_is(l, "id", "bye") && th_wait(&p, TH_WAIT_MS) == 0,
          "shutdown command: answered, exit 0 with standard input still open");
    free(l);
    th_end(&p, 100);

    spawn(&p, NULL, NULL);
    th_send(&p, "{\"id\":1,\"cmd\":\"health\"}");
    l = th_line(&p, TH_WAIT_MS);
    kill(p.pid, SIGINT);
    CHECK(th_is(l, "status", "ok") && th_wait(&p, TH_WAIT_MS) == 0 && th_log_has(&p, "signal 2"),
          "SIGINT while idle: exit 0");
    free(l);
    th_end(&p, 100);

    spawn(&p, extra, NULL);
    th_send(&p, "{\"id\":1,\"prompt\":\"a b c d\",\"max_tokens\":100000,\"stream\":true}");
    l = th_line(&p, TH_WAIT_MS);
    close(p.out.fd); /* the reader goes away mid-stream */
    p.out.fd = open("/dev/null", O_RDONLY);
    CHECK(l && th_wait(&p, TH_WAIT_MS) == 0 && th_log_has(&p, "standard output: closed"),
          "standard output closed mid-stream: generation stops, exit 0");
    free(l);
    th_end(&p, 100);
}

/* ---- exit codes, one-shot, bench, help ------------------------------------------------------ */

/* Run rt_host with args to the end; returns its exit status, standard output in out. */
static int run_once(const char *const *args, char *out, size_t cap)
{
    struct th_proc p;
    th_spawn(&p, args, NULL);
    close(p.in);
    p.in = -1;
    size_t n = 0;
    for (char *l; (l = th_line(&p, TH_WAIT_MS)) != NULL; free(l))
        n += (size_t)snprintf(out + n, n < cap ? cap - n : 0, "%s\n", l);
    if (p.out.n && n + p.out.n < cap) {
        memcpy(out + n, p.out.buf, p.out.n);
        n += p.out.n;
    }
    out[n < cap ? n : cap - 1] = 0;
    return th_end(&p, TH_WAIT_MS);
}

static void test_exit_codes(void)
{
    static char out[1 << 16];
    const char *a1[] = {"--backend", "fake", "--bogus", NULL};
    const char *a2[] = {"--backend", "fake", NULL};
    const char *a3[] = {"--backend", "gpu", "--tokenizer", TH_TOK, NULL};
    const char *a4[] = {"--tokenizer", TH_TOK, NULL};
    CHECK(run_once(a1, out, sizeof out) == 2 && run_once(a2, out, sizeof out) == 2 &&
              run_once(a3, out, sizeof out) == 2 && run_once(a4, out, sizeof out) == 2,
          "usage errors (unknown flag, no tokenizer, bad backend, no plan): exit 2");
    const char *b1[] = {"--backend", "fake", "--tokenizer", "/nonexistent/tokenizer.json", NULL};
    const char *b2[] = {"--backend",        "fake", "--tokenizer", TH_TOK, "--fake",
                        "fail_open=config", NULL};
    const char *b3[] = {"--backend", "fake", "--tokenizer", TH_TOK, "--fake", "vocab=x", NULL};
    const char *b4[] = {"--backend", "fake", "--tokenizer", "test/data/tok/synth_added.json", NULL};
    const char *b5[] = {"--backend",          "fake", "--tokenizer", TH_TOK, "--listen",
                        "/nonexistent/dir/s", NULL};
    CHECK(run_once(b1, out, sizeof out) == 3 && run_once(b2, out, sizeof out) == 3 &&
              run_once(b3, out, sizeof out) == 3 && run_once(b4, out, sizeof out) == 3 &&
              run_once(b5, out, sizeof out) == 3,
          "configuration errors (tokenizer, engine, socket path): exit 3, do not restart");
    const char *c1[] = {"--backend",         "fake", "--tokenizer", TH_TOK, "--fake",
                        "fail_open=runtime", NULL};
    CHECK(run_once(c1, out, sizeof out) == 4, "runtime failure at load: exit 4, restart may help");

    struct th_proc p;
    const char *extra[] = {"--fake", "fail_after=3", NULL};
    char text[4096];
    int n;
    spawn(&p, extra, NULL);
    th_send(&p, "{\"id\":1,\"prompt\":\"a b c d e f\",\"stream\":true}");
    th_send(&p, "{\"id\":2,\"prompt\":\"never\"}");
    int n2;
    char *l = th_collect(&p, "1", text, sizeof text, &n);
    char *q = th_collect(&p, "2", text, sizeof text, &n2);
    int rc = th_end(&p, TH_WAIT_MS);
    CHECK(th_is(l, "error.code", "internal") && n == 3 && th_is(q, "error.code", "internal") &&
              rc == 4,
          "device lost mid-request: internal error records, exit 4 (%d tokens, exit %d)", n, rc);
    free(l);
    free(q);
}

static void test_modes(void)
{
    static char out[1 << 16];
    const char *o1[] = {"--backend",   "fake",  "--tokenizer", TH_TOK, "--prompt",
                        "Hello world", "--raw", "-n",          "2",    NULL};
    CHECK(run_once(o1, out, sizeof out) == 0 && !strcmp(out, "Hello world"),
          "one-shot --raw: the text alone on standard output (%s)", out);
    const char *o2[] = {"--backend", "fake", "--tokenizer", TH_TOK,   "--prompt", "hi", "--system",
                        "be brief",  "-n",   "40",          "--stop", "brief",    NULL};
    CHECK(run_once(o2, out, sizeof out) == 0 && !strcmp(out, "system\nbe "),
          "one-shot chat with a system message and a stop string");
    const char *o3[] = {"--backend",      "fake",     "--fake",      "max_seq=64", "--bench",
                        "--bench-prompt", "8,16,100", "--bench-gen", "4",          NULL};
    int rc = run_once(o3, out, sizeof out);
    CHECK(rc == 0 && strstr(out, "prefill_tok/s") && strstr(out, "decode_tok/s") &&
              strstr(out, "       8 ") && strstr(out, "      16 ") && strstr(out, "skipped"),
          "bench: a row per prompt length, no tokenizer needed, too long skipped");

    const char *h[] = {"--help", NULL};
    rc = run_once(h, out, sizeof out);
    static const char *const flags[] = {
        "--plan",        "--weights",     "--synthetic",    "--synthetic-seed",
        "--device",      "--no-graphs",   "--no-branches",  "--tokenizer",    "--backend",
        "--fake",        "--listen",      "--no-stdin",     "--max-line",
        "--queue",       "--max-clients", "--max-tokens",   "--quiet",
        "--prompt",      "-n N",          "--raw",          "--system",
        "--temperature", "--top-k",       "--top-p",        "--seed",
        "--stop",        "--bench",       "--bench-prompt", "--bench-gen",
        "--bench-runs",  "--help",        "Exit status"};
    const char *missing = NULL;
    for (size_t i = 0; i < sizeof flags / sizeof *flags && !missing; i++)
        if (!strstr(out, flags[i]))
            missing = flags[i];
    CHECK(rc == 0 && !missing, "--help lists every flag and the exit codes (missing: %s)",
          missing ? missing : "none");
}

int main(void)
{
    struct th_proc p;
    CHECK(access(th_bin(), X_OK) == 0, "the binary under test: %s", th_bin());
    spawn(&p, (const char *const[]){"--max-line", "65536", NULL}, NULL);
    char *l = NULL;
    th_send(&p, "{\"cmd\":\"health\",\"id\":0}");
    l = th_line(&p, TH_WAIT_MS);
    CHECK(th_is(l, "status", "ok") && th_log_has(&p, "ready"),
          "starts, logs \"ready\", answers health");
    free(l);
    test_forms(&p);
    test_stops(&p);
    test_errors(&p);
    CHECK(th_end(&p, TH_WAIT_MS) == 0, "end of standard input after all that: exit 0");
    test_context();
    test_sigterm();
    test_exit_codes();
    test_modes();
    return test_done();
}
