/* gen.c — one generation request from prompt to final accounting (gen.h).
 *
 * The engine calls back once per token. Each token goes through the tokenizer's streaming
 * decoder (whole characters only, special tokens skipped), then through the stop-string
 * matcher, which releases only text that can no longer be part of a stop string; what is
 * released goes to the reader (streamed) or into the final record (not streamed). Then the
 * caller's poll runs: that is where signals, watchdog pings and other clients are handled,
 * once per token, from the thread that drives the engine (notify.h says why).
 *
 * Stop strings are matched over the released-and-held text, so a stop string split across
 * several tokens is found, and the cut is exact: the text ends where the stop string starts,
 * even inside a token. The held text is at most the longest stop string less one byte, plus
 * one token's text. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "host/gen.h"
#include "host/notify.h"

/* ---- stop strings --------------------------------------------------------------------------- */

void host_stop_init(struct host_stop *st, char *const *s, const size_t *len, uint32_t n)
{
    memset(st, 0, sizeof *st);
    st->s = s;
    st->len = len;
    st->n = n;
}

/* Start of the earliest stop string in h[0..n), or n when none is there. */
static size_t stop_find(const struct host_stop *st, const char *h, size_t n)
{
    size_t best = n;
    for (uint32_t i = 0; i < st->n; i++) {
        const char *p = memmem(h, n, st->s[i], st->len[i]);
        if (p && (size_t)(p - h) < best)
            best = (size_t)(p - h);
    }
    return best;
}

/* Length of the longest end of h[0..n) that is the start (not the whole) of a stop string. */
static size_t stop_partial(const struct host_stop *st, const char *h, size_t n)
{
    size_t keep = 0;
    for (uint32_t i = 0; i < st->n; i++) {
        size_t k = st->len[i] - 1 < n ? st->len[i] - 1 : n;
        for (; k > keep; k--) {
            if (!memcmp(h + n - k, st->s[i], k)) {
                keep = k;
                break;
            }
        }
    }
    return keep;
}

int host_stop_feed(struct host_stop *st, const char *text, size_t n, struct host_buf *out)
{
    if (!st->n) {
        host_buf_put(out, text, n);
        return 0;
    }
    host_buf_put(&st->held, text, n);
    if (!st->held.n)
        return 0;
    if (st->held.oom) {
        host_buf_put(out, text, n); /* cannot hold text back: let it through rather than lose it */
        return 0;
    }
    const char *h = st->held.p;
    size_t hn = st->held.n, at = stop_find(st, h, hn);
    if (at < hn) {
        host_buf_put(out, h, at);
        st->held.n = 0;
        return 1;
    }
    size_t keep = stop_partial(st, h, hn);
    host_buf_put(out, h, hn - keep);
    if (keep)
        memmove(st->held.p, h + hn - keep, keep);
    st->held.n = keep;
    return 0;
}

void host_stop_flush(struct host_stop *st, struct host_buf *out)
{
    if (st->held.n && !st->held.oom)
        host_buf_put(out, st->held.p, st->held.n);
    st->held.n = 0;
}

void host_stop_free(struct host_stop *st)
{
    host_buf_free(&st->held);
}

/* ---- set up --------------------------------------------------------------------------------- */

static void add_stop_id(struct host_gen *g, int32_t id)
{
    if (id < 0 || (uint32_t)id >= g->info.vocab || g->n_stop_ids == HOST_ENGINE_MAX_STOP)
        return;
    for (uint32_t i = 0; i < g->n_stop_ids; i++)
        if (g->stop_ids[i] == id)
            return;
    g->stop_ids[g->n_stop_ids++] = id;
}

void host_gen_init(struct host_gen *g, struct host_engine *engine, const struct tok *tok,
                   uint32_t default_max_tokens)
{
    memset(g, 0, sizeof *g);
    g->engine = engine;
    host_engine_info(engine, &g->info);
    g->tok = tok;
    g->default_max_tokens = default_max_tokens;
    if (tok) {
        add_stop_id(g, tok_id_of(tok, "<|im_end|>"));
        add_stop_id(g, tok_id_of(tok, "<|endoftext|>"));
    }
    for (uint32_t i = 0; i < g->info.n_eos; i++)
        add_stop_id(g, g->info.eos[i]);
}

int host_gen_prompt(const struct host_gen *g, const struct host_req *r, struct host_ids *ids,
                    struct host_error *e)
{
    if (r->input != HOST_IN_TOKENS && !g->tok)
        return host_fail(e, HOST_E_INVALID_REQUEST, "no tokenizer loaded: send tokens");
    if (r->input == HOST_IN_PROMPT) {
        if (host_text_encode(g->tok, r->prompt, r->prompt_len, 1, ids, e))
            return -1;
    } else if (r->input == HOST_IN_MESSAGES) {
        if (host_chat_encode(g->tok, r->msgs, r->n_msgs, ids, e))
            return -1;
    } else {
        for (size_t i = 0; i < r->n_tokens; i++)
            if (host_ids_push(ids, r->tokens[i]))
                return host_fail(e, HOST_E_INTERNAL, "out of memory for the prompt");
    }
    if (ids->n == 0)
        return host_fail(e, HOST_E_INVALID_REQUEST, "the prompt gives no tokens");
    for (size_t i = 0; i < ids->n; i++) {
        if (ids->v[i] >= 0 && (uint32_t)ids->v[i] < g->info.vocab)
            continue;
        if (r->input == HOST_IN_TOKENS)
            return host_fail(e, HOST_E_TOKEN_OUT_OF_RANGE,
                             "tokens[%zu] = %d is outside the "
                             "vocabulary [0, %u)",
                             i, ids->v[i], g->info.vocab);
        return host_fail(e, HOST_E_TOKEN_OUT_OF_RANGE,
                         "the tokenizer gave id %d, outside the "
                         "model's vocabulary [0, %u): tokenizer and model do not match",
                         ids->v[i], g->info.vocab);
    }
    if ((uint64_t)ids->n + 1 > g->info.max_seq)
        return host_fail(e, HOST_E_CONTEXT_LENGTH_EXCEEDED,
                         "the prompt is %zu tokens; the "
                         "context holds %u, so a prompt may have at most %u",
                         ids->n, g->info.max_seq, g->info.max_seq - 1);
    return 0;
}

/* ---- the run -------------------------------------------------------------------------------- */

enum run_halt { RUN_GO = 0, RUN_STOP_STRING, RUN_SHUTDOWN, RUN_GONE, RUN_NOMEM };

struct gen_run {
    const struct host_gen *g;
    const struct host_req *r;
    const struct host_gen_io *io;
    struct host_gen_out *out;
    struct tok_stream ts;
    char *piece; /* tok_stream_cap bytes */
    struct host_stop stop;
    struct host_buf rel; /* text released by the current token */
    double t_first;
    uint32_t n_new;
    enum run_halt halt;
};

static int run_token(void *ctx, int32_t id)
{
    struct gen_run *x = ctx;
    size_t n = 0;
    if (x->n_new++ == 0)
        x->t_first = host_now_ms();
    if (x->g->tok && tok_stream_push(&x->ts, id, x->piece, &n) != TOK_OK)
        n = 0; /* an id the tokenizer does not know stands for no text */
    x->rel.n = 0;
    int hit = host_stop_feed(&x->stop, x->piece, n, &x->rel);
    if (x->r->stream) {
        if (x->io->token(x->io->ctx, id, x->rel.p ? x->rel.p : "", x->rel.n)) {
            x->halt = RUN_GONE;
            return 1;
        }
    } else {
        host_buf_put(&x->out->text, x->rel.p, x->rel.n);
        if (host_ids_push(&x->out->tokens, id) || x->out->text.oom) {
            x->halt = RUN_NOMEM;
            return 1;
        }
    }
    if (hit) {
        x->halt = RUN_STOP_STRING;
        return 1;
    }
    int h = x->io->poll ? x->io->poll(x->io->ctx) : HOST_HALT_NONE;
    if (h != HOST_HALT_NONE) {
        x->halt = h == HOST_HALT_GONE ? RUN_GONE : RUN_SHUTDOWN;
        return 1;
    }
    return 0;
}

static const char *finish_name(enum run_halt halt, uint32_t finish)
{
    switch (halt) {
    case RUN_STOP_STRING:
        return "stop_string";
    case RUN_SHUTDOWN:
        return "shutdown";
    case RUN_GONE:
        return "disconnect";
    default:
        break;
    }
    switch (finish) {
    case HOST_FINISH_STOP:
        return "stop";
    case HOST_FINISH_LENGTH:
        return "length";
    case HOST_FINISH_CONTEXT:
        return "context";
    default:
        return "shutdown";
    }
}

/* The end of the text: a character cut short becomes U+FFFD, held text is released. */
static void run_tail(struct gen_run *x)
{
    size_t n = 0;
    struct host_buf *dst = &x->out->text; /* streamed: the tail record; else the whole text */
    if (x->halt == RUN_STOP_STRING || x->halt == RUN_GONE)
        return;
    if (x->g->tok)
        tok_stream_flush(&x->ts, x->piece, &n);
    if (host_stop_feed(&x->stop, x->piece, n, dst))
        x->halt = RUN_STOP_STRING;
    else
        host_stop_flush(&x->stop, dst);
}

static void run_result(struct gen_run *x, const struct host_engine_stats *st, size_t n_prompt,
                       double t_recv, double t0)
{
    struct host_result *res = &x->out->res;
    res->finish = finish_name(x->halt, st->finish);
    res->prompt_tokens = (uint32_t)n_prompt;
    res->completion_tokens = st->new_tokens;
    res->ttft_ms = x->n_new ? x->t_first - t0 : 0;
    res->prefill_tok_s = st->prefill_ms > 0 ? n_prompt * 1e3 / st->prefill_ms : 0;
    res->decode_tok_s =
        st->new_tokens > 1 && st->decode_ms > 0 ? (st->new_tokens - 1) * 1e3 / st->decode_ms : 0;
    res->queue_ms = t0 - t_recv;
    res->total_ms = host_now_ms() - t_recv;
    res->full = !x->r->stream;
    res->text = x->out->text.p;
    res->text_len = x->out->text.n;
    res->tokens = x->out->tokens.v;
    res->n_tokens = x->out->tokens.n;
    x->out->gone = x->halt == RUN_GONE;
}

static void run_params(const struct host_gen *g, const struct host_req *r,
                       struct host_engine_params *p)
{
    memset(p, 0, sizeof *p);
    p->temperature = r->temperature;
    p->top_k = r->top_k;
    p->top_p = r->top_p;
    p->seed = r->seed;
    p->max_new = r->max_tokens ? r->max_tokens : g->default_max_tokens;
    p->n_stop = g->n_stop_ids;
    memcpy(p->stop_ids, g->stop_ids, sizeof p->stop_ids);
}

/* Map a failed engine call onto the request's answer. */
static enum host_gen_status run_failed(struct host_gen_out *out, enum host_engine_status rc,
                                       const char *err)
{
    if (rc == HOST_ENGINE_ERR_INPUT) {
        host_fail(&out->err, HOST_E_INVALID_REQUEST, "%s", err);
        return HOST_GEN_REFUSED;
    }
    if (rc == HOST_ENGINE_ERR_CONTEXT) {
        host_fail(&out->err, HOST_E_CONTEXT_LENGTH_EXCEEDED, "%s", err);
        return HOST_GEN_REFUSED;
    }
    out->fatal = rc;
    host_fail(&out->err, HOST_E_INTERNAL, "%s", err);
    return HOST_GEN_FATAL;
}

enum host_gen_status host_gen_run(const struct host_gen *g, const struct host_req *r, double t_recv,
                                  const struct host_gen_io *io, struct host_gen_out *out)
{
    double t0 = host_now_ms();
    struct host_ids ids = {0};
    struct host_engine_params p;
    struct host_engine_stats st;
    struct gen_run x;
    char err[HOST_ENGINE_ERR_LEN] = "";
    enum host_gen_status ret = HOST_GEN_DONE;

    memset(out, 0, sizeof *out);
    if (host_gen_prompt(g, r, &ids, &out->err)) {
        host_ids_free(&ids);
        return HOST_GEN_REFUSED;
    }
    memset(&x, 0, sizeof x);
    x.g = g;
    x.r = r;
    x.io = io;
    x.out = out;
    host_stop_init(&x.stop, r->stop, r->stop_len, r->n_stop);
    if (g->tok) {
        tok_stream_init(&x.ts, g->tok, 1);
        x.piece = malloc(tok_stream_cap(g->tok));
    } else {
        x.piece = malloc(8);
    }
    run_params(g, r, &p);
    enum host_engine_status rc = HOST_ENGINE_ERR_RUNTIME;
    if (x.piece)
        rc = host_engine_generate(g->engine, ids.v, (uint32_t)ids.n, &p, run_token, &x, &st, err);
    else
        snprintf(err, sizeof err, "out of host memory");
    if (rc != HOST_ENGINE_OK) {
        ret = run_failed(out, rc, err);
    } else if (x.halt == RUN_NOMEM) {
        host_fail(&out->err, HOST_E_INTERNAL, "out of host memory for the output");
        ret = HOST_GEN_REFUSED;
    } else {
        run_tail(&x);
        run_result(&x, &st, ids.n, t_recv, t0);
    }
    free(x.piece);
    host_buf_free(&x.rel);
    host_stop_free(&x.stop);
    host_ids_free(&ids);
    return ret;
}

void host_gen_out_free(struct host_gen_out *out)
{
    host_buf_free(&out->text);
    host_ids_free(&out->tokens);
    memset(out, 0, sizeof *out);
}
