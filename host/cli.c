/* cli.c — the one-shot and benchmark modes of rt_host (cli.h).
 *
 * One-shot runs the same request path as the server (gen.c: chat template, streaming decode,
 * stop strings) with a sink that writes bare text instead of JSON records; Ctrl-C stops the
 * generation at the next token and still prints the timings. The benchmark drives the engine
 * directly with token-id prompts (seeded, so runs compare), greedy sampling and no stop ids,
 * so that every run generates exactly the tokens asked for unless the context fills first.
 * A short warm-up run goes first, so one-time costs (graph instantiation, library set-up)
 * are not charged to the first row. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "host/cli.h"
#include "host/notify.h"
#include "host/server.h"

/* ---- one-shot ------------------------------------------------------------------------------- */

struct oneshot {
    int wrote, last_nl;
};

static int oneshot_token(void *ctx, int32_t id, const char *text, size_t n)
{
    struct oneshot *x = ctx;
    (void)id;
    if (!n)
        return 0;
    if (fwrite(text, 1, n, stdout) != n || fflush(stdout))
        return -1;
    x->wrote = 1;
    x->last_nl = text[n - 1] == '\n';
    return 0;
}

static int oneshot_poll(void *ctx)
{
    (void)ctx;
    return host_signals_stop() ? HOST_HALT_SHUTDOWN : HOST_HALT_NONE;
}

/* The request the flags describe (strings point into o: nothing to free but the arrays). */
static int oneshot_req(const struct host_oneshot_opts *o, struct host_req *r, struct host_msg *m)
{
    memset(r, 0, sizeof *r);
    strcpy(r->id, "null");
    r->kind = HOST_REQ_GENERATE;
    r->max_tokens = o->max_tokens;
    r->temperature = o->temperature;
    r->top_k = o->top_k;
    r->top_p = o->top_p;
    r->seed = o->seed;
    r->stream = 1;
    r->n_stop = o->n_stop;
    for (uint32_t i = 0; i < o->n_stop; i++) {
        r->stop[i] = (char *)o->stop[i];
        r->stop_len[i] = strlen(o->stop[i]);
    }
    if (o->raw) {
        r->input = HOST_IN_PROMPT;
        r->prompt = (char *)o->prompt;
        r->prompt_len = strlen(o->prompt);
        return 0;
    }
    r->input = HOST_IN_MESSAGES;
    r->msgs = m;
    if (o->system) {
        m[r->n_msgs++] = (struct host_msg){"system", (char *)o->system, strlen(o->system)};
    }
    m[r->n_msgs++] = (struct host_msg){"user", (char *)o->prompt, strlen(o->prompt)};
    return 0;
}

int host_cli_oneshot(const struct host_gen *g, const struct host_oneshot_opts *o)
{
    struct host_req r;
    struct host_msg m[2];
    struct host_gen_out out;
    struct oneshot x = {0, 1};
    struct host_gen_io io = {&x, oneshot_token, oneshot_poll};

    oneshot_req(o, &r, m);
    enum host_gen_status rc = host_gen_run(g, &r, host_now_ms(), &io, &out);
    if (rc == HOST_GEN_DONE) {
        oneshot_token(&x, 0, out.text.p, out.text.n);
        if (x.wrote && !x.last_nl && isatty(STDOUT_FILENO))
            fputc('\n', stdout);
        fflush(stdout);
        const struct host_result *res = &out.res;
        host_log("%u prompt tokens, %u generated (%s); ttft %.1f ms, prefill %.1f tok/s, "
                 "decode %.1f tok/s",
                 res->prompt_tokens, res->completion_tokens, res->finish, res->ttft_ms,
                 res->prefill_tok_s, res->decode_tok_s);
    } else {
        host_log("%s: %s", host_errc_name(out.err.code), out.err.msg);
    }
    int code = rc == HOST_GEN_DONE                   ? HOST_EXIT_OK
               : rc == HOST_GEN_REFUSED              ? HOST_EXIT_USAGE
               : out.fatal == HOST_ENGINE_ERR_CONFIG ? HOST_EXIT_CONFIG
                                                     : HOST_EXIT_RUNTIME;
    host_gen_out_free(&out);
    return code;
}

/* ---- benchmark ------------------------------------------------------------------------------ */

int host_bench_parse_lens(struct host_bench_opts *o, const char *list)
{
    const char *p = list;
    o->n_lens = 0;
    while (*p) {
        char *end;
        errno = 0;
        unsigned long v = strtoul(p, &end, 10);
        if (end == p || errno || v < 1 || v > (1u << 30) || o->n_lens == HOST_BENCH_MAX_LENS ||
            (*end && *end != ','))
            return -1;
        o->lens[o->n_lens++] = (uint32_t)v;
        p = *end ? end + 1 : end;
        if (*end && !*p)
            return -1; /* a trailing comma */
    }
    return o->n_lens ? 0 : -1;
}

static int bench_token(void *ctx, int32_t id)
{
    (void)ctx;
    (void)id;
    return host_signals_stop() != 0;
}

/* One generation over a seeded prompt of len ids; returns an engine status. */
static enum host_engine_status bench_run(struct host_engine *e, const struct host_engine_info *in,
                                         uint32_t len, uint32_t gen, int32_t *ids,
                                         struct host_engine_stats *st, char *err)
{
    struct host_engine_params p;
    uint64_t s = 0x5EED0000u + len;
    for (uint32_t i = 0; i < len; i++) {
        s = s * 6364136223846793005ull + 1442695040888963407ull;
        ids[i] = (int32_t)((s >> 33) % in->vocab);
    }
    memset(&p, 0, sizeof p);
    p.top_p = 1;
    p.max_new = gen;
    return host_engine_generate(e, ids, len, &p, bench_token, NULL, st, err);
}

static int bench_fail(enum host_engine_status rc, const char *err)
{
    host_log("bench: %s", err);
    return rc == HOST_ENGINE_ERR_CONFIG || rc == HOST_ENGINE_ERR_INPUT ||
                   rc == HOST_ENGINE_ERR_CONTEXT
               ? HOST_EXIT_CONFIG
               : HOST_EXIT_RUNTIME;
}

static void bench_row(uint32_t len, const struct host_engine_stats *st)
{
    double pre = st->prefill_ms > 0 ? len * 1e3 / st->prefill_ms : 0;
    double dec =
        st->new_tokens > 1 && st->decode_ms > 0 ? (st->new_tokens - 1) * 1e3 / st->decode_ms : 0;
    printf("%8u %11.2f %14.1f %8u %11.2f %13.1f\n", len, st->prefill_ms, pre, st->new_tokens,
           st->decode_ms, dec);
    fflush(stdout);
}

int host_cli_bench(struct host_engine *e, const struct host_bench_opts *o)
{
    struct host_engine_info in;
    struct host_engine_stats st, best;
    char err[HOST_ENGINE_ERR_LEN] = "";
    uint32_t maxlen = 0;

    host_engine_info(e, &in);
    for (uint32_t i = 0; i < o->n_lens; i++)
        maxlen = o->lens[i] > maxlen ? o->lens[i] : maxlen;
    int32_t *ids = malloc((size_t)maxlen * sizeof *ids);
    if (!ids) {
        host_log("bench: out of memory");
        return HOST_EXIT_RUNTIME;
    }
    printf("backend %s, %s, context %u tokens, vocabulary %u, %u tokens generated per prompt\n",
           in.backend, in.device, in.max_seq, in.vocab, o->gen);
    uint32_t warm = o->lens[0] + 1 < in.max_seq ? o->lens[0] : 1;
    enum host_engine_status rc = bench_run(e, &in, warm, o->gen < 8 ? o->gen : 8, ids, &st, err);
    if (rc != HOST_ENGINE_OK) {
        free(ids);
        return bench_fail(rc, err);
    }
    printf("  prompt  prefill_ms  prefill_tok/s   tokens   decode_ms  decode_tok/s\n");
    for (uint32_t i = 0; i < o->n_lens && !host_signals_stop(); i++) {
        uint32_t len = o->lens[i];
        if ((uint64_t)len + 1 > in.max_seq) {
            printf("%8u  skipped: the context holds %u tokens\n", len, in.max_seq);
            continue;
        }
        memset(&best, 0, sizeof best);
        for (uint32_t k = 0; k < o->runs; k++) {
            if ((rc = bench_run(e, &in, len, o->gen, ids, &st, err)) != HOST_ENGINE_OK) {
                free(ids);
                return bench_fail(rc, err);
            }
            if (!k || st.prefill_ms + st.decode_ms < best.prefill_ms + best.decode_ms)
                best = st;
        }
        bench_row(len, &best);
    }
    free(ids);
    return HOST_EXIT_OK;
}
