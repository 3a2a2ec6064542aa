/* cli.h — rt_host's modes for people at a terminal: one prompt in, text out as it is
 * generated (timings on standard error); and the benchmark (token-id prompts of given
 * lengths, prefill and decode tok/s), which needs no tokenizer and runs on synthetic weights.
 * Both return an enum host_exit. */
#ifndef HOST_CLI_H
#define HOST_CLI_H

#include <stdint.h>

#include "host/gen.h"

#define HOST_BENCH_MAX_LENS 16

struct host_oneshot_opts {
    const char *prompt;
    const char *system; /* chat mode: an optional system message */
    int raw;            /* the prompt is the whole text: no chat template */
    uint32_t max_tokens;
    float temperature, top_p;
    uint32_t top_k;
    uint64_t seed;
    uint32_t n_stop;
    const char *stop[HOST_MAX_STOP];
};

struct host_bench_opts {
    uint32_t n_lens;
    uint32_t lens[HOST_BENCH_MAX_LENS]; /* prompt lengths in tokens */
    uint32_t gen;                       /* tokens generated after each prompt */
    uint32_t runs;                      /* measured runs per length (the best is shown) */
};

/* Generate for o->prompt; text goes to standard output as it comes. */
int host_cli_oneshot(const struct host_gen *g, const struct host_oneshot_opts *o);

/* Parse "128,512,2048" into o->lens. Returns 0, or -1 if it is not such a list. */
int host_bench_parse_lens(struct host_bench_opts *o, const char *list);

/* Run the benchmark on the engine and print its table on standard output. */
int host_cli_bench(struct host_engine *e, const struct host_bench_opts *o);

#endif
