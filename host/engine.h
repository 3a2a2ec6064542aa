/* engine.h — the seam between rt_host and whatever generates tokens.
 *
 * rt_host never calls rt.h directly: it drives a struct host_engine, which has the same shape
 * as the runtime's API (open, info, generate with a per-token callback, stats, finish reasons)
 * and two implementations behind one table of functions:
 *
 *   engine_rt.c    the real runtime: rt_open / rt_generate on a GPU
 *   engine_fake.c  a deterministic test double that needs no GPU: it generates tokens from the
 *                  prompt (echoed, reversed, or a seeded walk over the prompt's ids), honours
 *                  max_new, stop ids, the callback's stop and the context limit, and can be
 *                  slowed down or told to fail, so every path of the protocol can be tested
 *
 * Statuses are reduced to what the request loop must decide: answer the request and go on
 * (INPUT, CONTEXT), or stop the process with an exit code that tells the supervisor whether a
 * restart can help (CONFIG: no, the files are wrong; RUNTIME: yes, e.g. a lost GPU context). */
#ifndef HOST_ENGINE_H
#define HOST_ENGINE_H

#include <stddef.h>
#include <stdint.h>

#define HOST_ENGINE_MAX_STOP 8 /* stop ids per request (rt's K_MAX_STOP_IDS) */
#define HOST_ENGINE_MAX_EOS  4 /* end-of-sequence ids the model configuration names */
#define HOST_ENGINE_ERR_LEN  256

enum host_engine_status {
    HOST_ENGINE_OK = 0,
    HOST_ENGINE_ERR_INPUT,   /* the request is wrong (token id out of range, empty prompt) */
    HOST_ENGINE_ERR_CONTEXT, /* the prompt does not fit in the context (max_seq) */
    HOST_ENGINE_ERR_CONFIG,  /* plan, weights or device do not fit: a restart fails again */
    HOST_ENGINE_ERR_RUNTIME, /* the device or the runtime failed: a restart may help */
};

enum host_engine_finish {
    HOST_FINISH_STOP = 1, /* a stop id was generated (it is the last token passed on) */
    HOST_FINISH_LENGTH,   /* max_new tokens */
    HOST_FINISH_CONTEXT,  /* the context is full */
    HOST_FINISH_CALLER,   /* the token callback asked to stop */
};

struct host_engine_opts {
    const char *plan_path;    /* rt: plan.bin */
    const char *weights_path; /* rt: weights image; NULL with synthetic */
    int synthetic;            /* rt: seeded random weights filled on the device */
    uint64_t synthetic_seed;
    int device;            /* rt: CUDA device ordinal */
    int no_graphs;         /* rt: launch ops one by one instead of replaying graphs */
    int no_branches;       /* rt: prefill side branches in order on one stream */
    const char *fake_spec; /* fake: "key=value,..." (engine_fake.c lists the keys) */
    /* progress of long loads: stage name, bytes done, bytes total (may be NULL) */
    void (*progress)(void *ctx, const char *stage, uint64_t done, uint64_t total);
    void *progress_ctx;
};

struct host_engine_info {
    const char *backend; /* "rt" or "fake" */
    uint32_t vocab;      /* token ids are in [0, vocab) */
    uint32_t max_seq;    /* prompt + generated tokens at most */
    uint32_t max_chunk;  /* largest prefill chunk */
    uint32_t n_eos;
    int32_t eos[HOST_ENGINE_MAX_EOS]; /* the model's end-of-sequence ids */
    char device[128];                 /* device name, for logs and health */
    uint64_t arena_bytes, weights_bytes;
    double load_ms;
};

struct host_engine_params {
    float temperature; /* 0: greedy */
    uint32_t top_k;    /* 0: whole vocabulary */
    float top_p;       /* 1: no nucleus cut */
    uint64_t seed;
    uint32_t max_new; /* >= 1 */
    uint32_t n_stop;
    int32_t stop_ids[HOST_ENGINE_MAX_STOP];
};

struct host_engine_stats {
    uint32_t prompt_tokens, new_tokens;
    uint32_t finish;   /* enum host_engine_finish */
    double prefill_ms; /* start to the first sampled token */
    double decode_ms;  /* the decode loop after the first token */
};

/* Called for each generated token in order; non-zero stops generation after this token. */
typedef int (*host_engine_token_fn)(void *ctx, int32_t token);

struct host_engine;

/* What an implementation provides; the struct host_engine it returns starts with a pointer
 * to its table, which the functions below dispatch through. */
struct host_engine_ops {
    void (*close)(struct host_engine *e);
    void (*info)(const struct host_engine *e, struct host_engine_info *info);
    enum host_engine_status (*generate)(struct host_engine *e, const int32_t *prompt, uint32_t n,
                                        const struct host_engine_params *p, host_engine_token_fn fn,
                                        void *ctx, struct host_engine_stats *st, char *err);
};

struct host_engine {
    const struct host_engine_ops *ops;
};

/* Open an engine. On failure *out is NULL, err (HOST_ENGINE_ERR_LEN bytes) says what is wrong
 * and the status says whether a restart could help (CONFIG or RUNTIME). */
enum host_engine_status host_engine_open_rt(struct host_engine **out,
                                            const struct host_engine_opts *o, char *err);
enum host_engine_status host_engine_open_fake(struct host_engine **out,
                                              const struct host_engine_opts *o, char *err);

/* Release the engine (NULL is allowed). */
static inline void host_engine_close(struct host_engine *e)
{
    if (e)
        e->ops->close(e);
}

/* Fill *info; valid from open to close. */
static inline void host_engine_info(const struct host_engine *e, struct host_engine_info *info)
{
    e->ops->info(e, info);
}

/* Start a fresh sequence with prompt[0..n), then generate, calling fn for each token. On
 * HOST_ENGINE_OK *st says how it ended; otherwise err holds the message. */
static inline enum host_engine_status host_engine_generate(struct host_engine *e,
                                                           const int32_t *prompt, uint32_t n,
                                                           const struct host_engine_params *p,
                                                           host_engine_token_fn fn, void *ctx,
                                                           struct host_engine_stats *st, char *err)
{
    return e->ops->generate(e, prompt, n, p, fn, ctx, st, err);
}

/* Short name of a status, for messages. */
static inline const char *host_engine_status_name(enum host_engine_status s)
{
    switch (s) {
    case HOST_ENGINE_OK:
        return "ok";
    case HOST_ENGINE_ERR_INPUT:
        return "bad input";
    case HOST_ENGINE_ERR_CONTEXT:
        return "context length exceeded";
    case HOST_ENGINE_ERR_CONFIG:
        return "configuration error";
    case HOST_ENGINE_ERR_RUNTIME:
        return "runtime failure";
    }
    return "unknown status";
}

#endif
