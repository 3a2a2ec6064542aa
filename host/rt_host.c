/* rt_host.c — the process an appliance supervisor runs: load plan, weights and tokenizer,
 * then serve JSON-lines requests on standard input/output and, with --listen, on a Unix
 * socket (server.c); or answer one prompt (--prompt), or benchmark (--bench) (cli.c).
 *
 * The contract with the supervisor (host/README.md): readiness through $NOTIFY_SOCKET and a
 * "ready" log line, watchdog pings, SIGTERM/SIGINT end cleanly with exit status 0, and the
 * exit status of a failure says whether a restart can help (server.h: 2 usage, 3 wrong
 * configuration, 4 runtime failure). Logs go to standard error only; standard output carries
 * the protocol (or, in one-shot mode, the generated text). */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "host/cli.h"
#include "host/engine.h"
#include "host/gen.h"
#include "host/notify.h"
#include "host/server.h"
#include "host/tok.h"

#define DEFAULT_MAX_LINE       (1u << 20)
#define DEFAULT_QUEUE          8
#define DEFAULT_CLIENTS        16
#define DEFAULT_MAX_TOKENS     256
#define DEFAULT_ONESHOT_TOKENS 128
#define DEFAULT_BENCH_LENS     "128,512,2048"
#define DEFAULT_BENCH_GEN      128

enum mode { MODE_SERVE = 1, MODE_ONESHOT, MODE_BENCH };

struct opts {
    enum mode mode;
    const char *backend, *tokenizer;
    struct host_engine_opts eng;
    struct host_server_opts srv;
    uint32_t max_tokens;
    struct host_oneshot_opts one;
    struct host_bench_opts bench;
};

static void usage(FILE *f)
{
    fprintf(
        f,
        "usage: rt_host --plan plan.bin (--weights IMAGE | --synthetic) --tokenizer "
        "tokenizer.json\n"
        "               [options]                          serve JSON lines (host/README.md)\n"
        "       rt_host ... --prompt TEXT [-n N]           one prompt, text on standard output\n"
        "       rt_host --plan plan.bin --synthetic --bench  prefill and decode tok/s\n"
        "\n"
        "Model:\n"
        "  --plan FILE            plan.bin made by the planner\n"
        "  --weights FILE         weights image\n"
        "  --synthetic            seeded random weights made on the device (benchmarks)\n"
        "  --synthetic-seed N     their seed (default 1)\n"
        "  --device N             CUDA device ordinal (default 0)\n"
        "  --no-graphs            launch ops one by one instead of replaying CUDA graphs\n"
        "  --no-branches          run the prefill schedules' side branches in order on one\n"
        "                         stream instead of beside the main one (same results)\n"
        "  --tokenizer FILE       Hugging Face tokenizer.json (not needed by --bench)\n"
        "  --backend rt|fake      rt: the GPU runtime (default). fake: a test double without a\n"
        "                         GPU that generates tokens from the prompt; for tests only\n"
        "  --fake SPEC            settings of the fake backend, key=value,... (mode=echo|reverse|\n"
        "                         walk, vocab, max_seq, eos, delay_ms, prefill_ms, fail_open=\n"
        "                         config|runtime, fail_after)\n"
        "Serving (default mode):\n"
        "  --listen PATH          also serve a Unix socket at PATH (@NAME: abstract namespace)\n"
        "  --no-stdin             do not read standard input (needs --listen)\n"
        "  --max-line BYTES       longest request line (default %u)\n"
        "  --queue N              requests that may wait behind the running one (default %d)\n"
        "  --max-clients N        socket connections at once (default %d)\n"
        "  --max-tokens N         max_tokens of requests that do not say (default %d)\n"
        "  -q, --quiet            no log line per request\n"
        "One prompt:\n"
        "  --prompt TEXT          generate for TEXT (as a user message of the chat template)\n"
        "  -n N                   tokens to generate at most (default %d)\n"
        "  --raw                  TEXT is the whole prompt: no chat template\n"
        "  --system TEXT          a system message before it\n"
        "  --temperature X, --top-k N, --top-p X, --seed N   sampling (default greedy)\n"
        "  --stop STRING          stop at STRING (repeatable, up to %d)\n"
        "Benchmark:\n"
        "  --bench                token-id prompts, no tokenizer needed\n"
        "  --bench-prompt LIST    prompt lengths (default %s)\n"
        "  --bench-gen N          tokens generated per prompt (default %d)\n"
        "  --bench-runs N         runs per length, the fastest is shown (default 1)\n"
        "  -h, --help             this text\n"
        "\n"
        "Exit status: 0 clean stop (end of input, shutdown command, SIGTERM/SIGINT); 2 bad\n"
        "command line; 3 wrong configuration (plan, weights, tokenizer, socket path): do not\n"
        "restart; 4 GPU or runtime failure: a restart may help.\n",
        DEFAULT_MAX_LINE, DEFAULT_QUEUE, DEFAULT_CLIENTS, DEFAULT_MAX_TOKENS,
        DEFAULT_ONESHOT_TOKENS, HOST_MAX_STOP, DEFAULT_BENCH_LENS, DEFAULT_BENCH_GEN);
}

/* ---- flags ---------------------------------------------------------------------------------- */

static int bad(const char *what, const char *arg)
{
    fprintf(stderr, "rt_host: %s%s%s (see --help)\n", what, arg ? ": " : "", arg ? arg : "");
    return -1;
}

static int num(const char *s, uint64_t lo, uint64_t hi, uint64_t *out)
{
    char *end;
    if (!s || *s < '0' || *s > '9')
        return -1;
    errno = 0;
    unsigned long long v = strtoull(s, &end, 10);
    if (errno || *end || v < lo || v > hi)
        return -1;
    *out = v;
    return 0;
}

static int fnum(const char *s, double lo, double hi, float *out)
{
    char *end;
    if (!s)
        return -1;
    errno = 0;
    double v = strtod(s, &end);
    if (errno || end == s || *end || !(v >= lo && v <= hi))
        return -1;
    *out = (float)v;
    return 0;
}

static void defaults(struct opts *o)
{
    memset(o, 0, sizeof *o);
    o->mode = MODE_SERVE;
    o->backend = "rt";
    o->eng.synthetic_seed = 1;
    o->srv.use_stdin = 1;
    o->srv.max_line = DEFAULT_MAX_LINE;
    o->srv.queue_max = DEFAULT_QUEUE;
    o->srv.max_clients = DEFAULT_CLIENTS;
    o->max_tokens = DEFAULT_MAX_TOKENS;
    o->one.max_tokens = DEFAULT_ONESHOT_TOKENS;
    o->one.top_p = 1;
    o->bench.gen = DEFAULT_BENCH_GEN;
    o->bench.runs = 1;
    host_bench_parse_lens(&o->bench, DEFAULT_BENCH_LENS);
}

/* Flags that take a number. Returns 1 if a was one (0 when not), -1 on a bad value. */
static int flag_num(struct opts *o, const char *a, const char *v)
{
    uint64_t x;
    float f;
#define U(name, lo, hi, dst)                                                                       \
    if (!strcmp(a, name))                                                                          \
        return num(v, lo, hi, &x) ? bad("bad number for " name, v) : ((dst) = x, 1);
    U("--synthetic-seed", 0, UINT64_MAX, o->eng.synthetic_seed)
    U("--device", 0, 1024, o->eng.device)
    U("--max-line", 64, 1u << 30, o->srv.max_line)
    U("--queue", 0, 4096, o->srv.queue_max)
    U("--max-clients", 1, 1024, o->srv.max_clients)
    U("--max-tokens", 1, HOST_MAX_TOKENS_LIMIT, o->max_tokens)
    U("-n", 1, HOST_MAX_TOKENS_LIMIT, o->one.max_tokens)
    U("--top-k", 0, 1u << 30, o->one.top_k)
    U("--seed", 0, UINT64_MAX, o->one.seed)
    U("--bench-gen", 1, 1u << 20, o->bench.gen)
    U("--bench-runs", 1, 1000, o->bench.runs)
#undef U
    if (!strcmp(a, "--temperature"))
        return fnum(v, 0, 100, &o->one.temperature) ? bad("bad --temperature", v) : 1;
    if (!strcmp(a, "--top-p"))
        return fnum(v, 1e-9, 1, &f) ? bad("bad --top-p", v) : (o->one.top_p = f, 1);
    return 0;
}

/* Flags that take a string. Returns 1 if a was one, 0 when not, -1 on a bad value. */
static int flag_str(struct opts *o, const char *a, const char *v)
{
    const char **dst = !strcmp(a, "--plan")        ? &o->eng.plan_path
                       : !strcmp(a, "--weights")   ? &o->eng.weights_path
                       : !strcmp(a, "--tokenizer") ? &o->tokenizer
                       : !strcmp(a, "--backend")   ? &o->backend
                       : !strcmp(a, "--fake")      ? &o->eng.fake_spec
                       : !strcmp(a, "--listen")    ? &o->srv.listen_path
                       : !strcmp(a, "--prompt")    ? &o->one.prompt
                       : !strcmp(a, "--system")    ? &o->one.system
                                                   : NULL;
    if (dst) {
        *dst = v;
        if (!strcmp(a, "--prompt"))
            o->mode = MODE_ONESHOT;
        return 1;
    }
    if (!strcmp(a, "--stop")) {
        if (o->one.n_stop == HOST_MAX_STOP || !*v || strlen(v) > HOST_STOP_MAX_LEN)
            return bad("too many or bad --stop strings", v);
        o->one.stop[o->one.n_stop++] = v;
        return 1;
    }
    if (!strcmp(a, "--bench-prompt"))
        return host_bench_parse_lens(&o->bench, v) ? bad("bad --bench-prompt list", v) : 1;
    return 0;
}

static int flag_bool(struct opts *o, const char *a)
{
    int *dst = !strcmp(a, "--synthetic")                   ? &o->eng.synthetic
               : !strcmp(a, "--no-graphs")                 ? &o->eng.no_graphs
               : !strcmp(a, "--no-branches")               ? &o->eng.no_branches
               : !strcmp(a, "--raw")                       ? &o->one.raw
               : !strcmp(a, "-q") || !strcmp(a, "--quiet") ? &o->srv.quiet
                                                           : NULL;
    if (dst) {
        *dst = 1;
        return 1;
    }
    if (!strcmp(a, "--no-stdin")) {
        o->srv.use_stdin = 0;
        return 1;
    }
    if (!strcmp(a, "--bench")) {
        o->mode = MODE_BENCH;
        return 1;
    }
    return 0;
}

/* The combinations that make sense. */
static int check(struct opts *o, int saw_prompt_and_bench)
{
    int rt = !strcmp(o->backend, "rt");
    if (!rt && strcmp(o->backend, "fake"))
        return bad("--backend is rt or fake", o->backend);
    if (saw_prompt_and_bench)
        return bad("--prompt and --bench exclude each other", NULL);
    if (rt && !o->eng.plan_path)
        return bad("--plan is needed", NULL);
    if (rt && !o->eng.synthetic == !o->eng.weights_path)
        return bad("give one of --weights and --synthetic", NULL);
    if (o->mode != MODE_BENCH && !o->tokenizer)
        return bad("--tokenizer is needed", NULL);
    if (o->mode == MODE_SERVE && !o->srv.use_stdin && !o->srv.listen_path)
        return bad("--no-stdin needs --listen", NULL);
    return 0;
}

static int parse(struct opts *o, int argc, char **argv)
{
    int prompt = 0, bench = 0;
    defaults(o);
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        int r;
        if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
            usage(stdout);
            exit(HOST_EXIT_OK);
        }
        if ((r = flag_bool(o, a)) == 0 && v) {
            if ((r = flag_num(o, a, v)) == 0)
                r = flag_str(o, a, v);
            i += r > 0;
        }
        if (r < 0)
            return -1;
        if (r == 0)
            return bad(v ? "unknown argument" : "unknown argument, or its value is missing", a);
        prompt |= !strcmp(a, "--prompt");
        bench |= !strcmp(a, "--bench");
    }
    return check(o, prompt && bench);
}

/* ---- main ----------------------------------------------------------------------------------- */

/* Loading progress: a log line per stage and per quarter, and STATUS for the supervisor. */
struct progress {
    struct host_notify *n;
    char stage[64];
    int quarter;
};

static void on_progress(void *ctx, const char *stage, uint64_t done, uint64_t total)
{
    struct progress *p = ctx;
    int q = total ? (int)(done * 4 / total) : 4;
    if (strcmp(p->stage, stage) || q != p->quarter) {
        snprintf(p->stage, sizeof p->stage, "%s", stage);
        p->quarter = q;
        host_log("loading: %s %d%%", stage, q * 25);
        host_notify_status(p->n, "loading: %s %d%%", stage, q * 25);
    }
}

static int open_engine(struct opts *o, struct host_notify *n, struct host_engine **e)
{
    char err[HOST_ENGINE_ERR_LEN] = "";
    struct progress p = {n, "", -1};
    o->eng.progress = on_progress;
    o->eng.progress_ctx = &p;
    host_notify_status(n, "loading");
    enum host_engine_status rc = !strcmp(o->backend, "fake")
                                     ? host_engine_open_fake(e, &o->eng, err)
                                     : host_engine_open_rt(e, &o->eng, err);
    if (rc == HOST_ENGINE_OK)
        return HOST_EXIT_OK;
    host_log("cannot load the model: %s", err);
    host_log(rc == HOST_ENGINE_ERR_RUNTIME ? "this may be transient: exit %d (restart may help)"
                                           : "the configuration is wrong: exit %d (fix it "
                                             "before restarting)",
             rc == HOST_ENGINE_ERR_RUNTIME ? HOST_EXIT_RUNTIME : HOST_EXIT_CONFIG);
    return rc == HOST_ENGINE_ERR_RUNTIME ? HOST_EXIT_RUNTIME : HOST_EXIT_CONFIG;
}

static int serve(struct opts *o, const struct host_gen *g, struct host_notify *n)
{
    char err[256];
    int fd = -1;
    if (o->srv.listen_path && (fd = host_server_listen(o->srv.listen_path, err)) < 0) {
        host_log("%s", err);
        return HOST_EXIT_CONFIG;
    }
    return host_server_run(&o->srv, g, n, fd);
}

static int run(struct opts *o, struct host_notify *n)
{
    char err[TOK_ERR_LEN > 256 ? TOK_ERR_LEN : 256];
    struct tok *tok = NULL;
    struct host_engine *e = NULL;
    struct host_gen g;
    int rc;

    if (o->tokenizer && o->mode != MODE_BENCH && !(tok = tok_load(o->tokenizer, err))) {
        host_log("cannot load the tokenizer: %s", err);
        return HOST_EXIT_CONFIG;
    }
    if ((rc = open_engine(o, n, &e)) != HOST_EXIT_OK)
        goto free_tok;
    if (host_signals_stop()) {
        host_log("signal %d during loading: stopping", host_signals_stop());
        goto close_engine; /* rc is HOST_EXIT_OK */
    }
    host_gen_init(&g, e, tok, o->max_tokens);
    if (o->mode == MODE_BENCH)
        rc = host_cli_bench(e, &o->bench);
    else if (o->mode == MODE_ONESHOT)
        rc = host_cli_oneshot(&g, &o->one);
    else
        rc = serve(o, &g, n);
close_engine:
    host_engine_close(e);
free_tok:
    tok_free(tok);
    return rc;
}

int main(int argc, char **argv)
{
    struct opts o;
    struct host_notify n;
    char err[256];

    if (parse(&o, argc, argv))
        return HOST_EXIT_USAGE;
    if (host_signals_init(err)) {
        host_log("%s", err);
        return HOST_EXIT_RUNTIME;
    }
    if (host_notify_init(&n, err))
        host_log("supervisor notification is off: %s", err);
    int rc = run(&o, &n);
    if (rc != HOST_EXIT_OK)
        host_notify_status(&n, "failed (exit %d)", rc);
    host_notify_free(&n);
    host_signals_free();
    return rc;
}
