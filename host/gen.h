/* gen.h — serve one generation request: prompt to ids, the engine's tokens to text, stop
 * strings, the final accounting. Shared by the request loop (server.c) and the one-shot and
 * benchmark modes (cli.c), which differ only in where tokens and text go.
 *
 * Text leaves in complete UTF-8 characters only (tok_stream), special tokens are left out of
 * it, and a stop string cuts the text exactly where the stop string starts: text that might
 * be the start of a stop string is held back until the next token settles it (host_stop). */
#ifndef HOST_GEN_H
#define HOST_GEN_H

#include <stddef.h>
#include <stdint.h>

#include "host/chat.h"
#include "host/engine.h"
#include "host/proto.h"
#include "host/tok.h"

/* ---- stop strings --------------------------------------------------------------------------- */

struct host_stop {
    char *const *s; /* the stop strings (not owned) */
    const size_t *len;
    uint32_t n;
    struct host_buf held; /* text that may be the start of a stop string */
};

void host_stop_init(struct host_stop *st, char *const *s, const size_t *len, uint32_t n);
/* Take the next piece of text. Appends to out the text that can no longer be part of a stop
 * string. Returns 1 when a stop string is complete: out then ends just before it and the rest
 * is dropped; else 0. */
int host_stop_feed(struct host_stop *st, const char *text, size_t n, struct host_buf *out);
/* End of generation: the held text was not a stop string after all; append it to out. */
void host_stop_flush(struct host_stop *st, struct host_buf *out);
void host_stop_free(struct host_stop *st);

/* ---- one request ---------------------------------------------------------------------------- */

/* Why the caller's poll wants generation to stop. */
enum host_halt { HOST_HALT_NONE = 0, HOST_HALT_SHUTDOWN, HOST_HALT_GONE };

/* Where a request's tokens go. */
struct host_gen_io {
    void *ctx;
    /* streamed requests: a token and the text it released (maybe empty); -1: reader gone */
    int (*token)(void *ctx, int32_t id, const char *text, size_t n);
    /* between tokens: housekeeping (signals, watchdog, other clients); enum host_halt */
    int (*poll)(void *ctx);
};

struct host_gen {
    struct host_engine *engine;
    struct host_engine_info info;
    const struct tok *tok; /* NULL: token-id prompts only, no text */
    uint32_t default_max_tokens;
    uint32_t n_stop_ids; /* end of turn / end of text ids of tokenizer and model */
    int32_t stop_ids[HOST_ENGINE_MAX_STOP];
};

/* Set up for engine and tokenizer (tok may be NULL). */
void host_gen_init(struct host_gen *g, struct host_engine *engine, const struct tok *tok,
                   uint32_t default_max_tokens);

enum host_gen_status {
    HOST_GEN_DONE = 0, /* out->res describes the end; out->gone if the reader left */
    HOST_GEN_REFUSED,  /* out->err: answer with an error record and go on */
    HOST_GEN_FATAL,    /* the engine failed (out->fatal, out->err): stop the process */
};

struct host_gen_out {
    struct host_error err;
    enum host_engine_status fatal; /* CONFIG or RUNTIME with HOST_GEN_FATAL */
    struct host_result res;        /* HOST_GEN_DONE: res.text/tokens point into the fields below */
    struct host_buf text;          /* not streamed: all text; streamed: the tail not yet sent */
    struct host_ids tokens;        /* not streamed: every generated id */
    int gone;                      /* the reader went away (no final record is due) */
};

/* Serve request r (kind HOST_REQ_GENERATE). t_recv: when the request arrived; TTFT and total
 * time count from the call, tokenization included. Free out with host_gen_out_free. */
enum host_gen_status host_gen_run(const struct host_gen *g, const struct host_req *r, double t_recv,
                                  const struct host_gen_io *io, struct host_gen_out *out);
void host_gen_out_free(struct host_gen_out *out);

/* The ids of a request's prompt (prompt text, ChatML messages, or ids checked against the
 * vocabulary and the context). Returns 0, or -1 with *e set. */
int host_gen_prompt(const struct host_gen *g, const struct host_req *r, struct host_ids *ids,
                    struct host_error *e);

#endif
