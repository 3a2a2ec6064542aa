/* rt.h — the runtime's public interface: load a plan and a weights image onto one GPU and
 * generate tokens.
 *
 * rt knows nothing about the model: plan.bin says which buffers exist, which kernels run with
 * which arguments and in what order; rt checks all of it once at load (validate at load, run
 * blind in the loop), makes one arena allocation and one weights allocation, patches device
 * addresses into the parameter blobs, and replays the schedules, as CUDA graphs where the plan
 * allows. It links no CUDA library at build time: libcuda and cuBLAS are opened at run time.
 *
 * rt is a library under a supervisor: every call returns a status, nothing exits or aborts, and
 * every failure path releases what it took. Messages go to the caller's err buffer. */
#ifndef RT_H
#define RT_H

#include <stddef.h>
#include <stdint.h>

#include "../plan/model.h"
#include "cudrv.h"

enum rt_status {
    RT_OK = 0,
    RT_ERR_ARG,       /* a bad argument from the caller (token id out of range, NULL, ...) */
    RT_ERR_NO_DRIVER, /* libcuda is missing or too old */
    RT_ERR_NO_DEVICE, /* no CUDA device, or the requested ordinal does not exist */
    RT_ERR_PLAN,      /* plan.bin cannot be read or is not a valid plan */
    RT_ERR_ARCH,      /* the plan holds no kernel image for this GPU */
    RT_ERR_WEIGHTS,   /* the weights image cannot be read, is truncated, damaged or invalid */
    RT_ERR_MISMATCH,  /* plan and weights do not belong together (manifest, config, format) */
    RT_ERR_NOMEM,     /* not enough device or host memory (the message says how much) */
    RT_ERR_KERNEL,    /* a kernel the plan names is not in its image, or will not launch */
    RT_ERR_CUBLAS,    /* cuBLAS cannot be loaded or failed */
    RT_ERR_CUDA,      /* a driver call failed while running: the context is lost */
    RT_ERR_CONTEXT,   /* the prompt does not fit in the plan's max_seq */
    RT_ERR_IO,        /* a file could not be read */
};

/* Short name of a status, e.g. "plan/weights mismatch". */
const char *rt_status_name(enum rt_status s);

/* 1 when restarting the process may help (a lost GPU context, a transient allocation
 * failure); 0 when the configuration itself is wrong and a restart would fail again. */
int rt_status_restartable(enum rt_status s);

struct rt_options {
    const char *plan_path;      /* plan.bin */
    const char *weights_path;   /* the weights image; NULL when synthetic */
    int synthetic;              /* fill the weights allocation on the device from synthetic_seed */
    uint64_t synthetic_seed;
    int device;                 /* CUDA device ordinal */
    int no_graphs;              /* launch ops one by one instead of replaying CUDA graphs */
    int no_pdl;                 /* never overlap a decode kernel's launch with its predecessor
                                 * (programmatic dependent launch, sm_90 and newer) */
    int no_branches;            /* run a prefill schedule's side branches in file order on the
                                 * one stream instead of beside the main one */
    /* progress of long work (reading weights): stage name, bytes done, bytes total */
    void (*progress)(void *ctx, const char *stage, uint64_t done, uint64_t total);
    void *progress_ctx;
    /* fault injection for tests: make the Nth driver call of the load fail (0: off) */
    uint32_t fail_call;
};

struct rt_info {
    struct model_config model;
    uint32_t max_seq;
    uint32_t max_chunk;         /* largest prefill bucket */
    uint64_t arena_bytes;
    uint64_t weights_bytes;
    char device_name[128];
    int sm;                     /* compute capability as 10 * major + minor */
    double load_ms;             /* rt_open wall time */
    uint64_t device_allocs;     /* device and pinned allocations this process made so far */
    uint32_t load_calls;        /* driver calls rt_open made (the range of fail_call) */
};

struct rt_sampling {
    float temperature;          /* 0: greedy */
    uint32_t top_k;             /* 0: whole vocabulary */
    float top_p;                /* 1: no nucleus cut */
    uint64_t seed;
    uint32_t max_new;           /* tokens to generate at most (>= 1) */
    uint32_t n_stop;            /* stop token ids (e.g. <|im_end|>), at most K_MAX_STOP_IDS */
    int32_t stop_ids[8];
};

enum rt_finish {
    RT_FINISH_STOP = 1,         /* a stop id was generated (it is the last token passed on) */
    RT_FINISH_LENGTH,           /* max_new tokens */
    RT_FINISH_CONTEXT,          /* the context (max_seq) is full */
    RT_FINISH_CALLER,           /* the token callback asked to stop */
};

struct rt_stats {
    uint32_t prompt_tokens, new_tokens;
    uint32_t finish;            /* enum rt_finish */
    double prefill_ms;          /* first launch to the first sampled token */
    double decode_ms;           /* the decode loop after the first token */
};

/* Called for every generated token, in order. Return non-zero to stop generation; the state
 * then holds exactly the tokens passed so far. */
typedef int (*rt_token_fn)(void *ctx, int32_t token);

struct rt;

/* Load plan and weights onto the device. On failure *out is NULL, everything taken is
 * released and err (RT_ERR_LEN bytes) says what is wrong and what to do. */
enum rt_status rt_open(struct rt **out, const struct rt_options *o, char *err);
void rt_close(struct rt *r);
void rt_get_info(const struct rt *r, struct rt_info *info);

/* Start a fresh sequence, prefill prompt[0..n), then decode, calling fn for each new token.
 * Token ids must be in [0, vocab); n must be >= 1 and n + 1 <= max_seq. */
enum rt_status rt_generate(struct rt *r, const int32_t *prompt, uint32_t n,
                           const struct rt_sampling *s, rt_token_fn fn, void *ctx,
                           struct rt_stats *st, char *err);

/* Step-by-step diagnostics for tests and tools (each call waits for the GPU):
 * rt_reset starts a sequence with these sampling settings; rt_prefill_logits runs tokens as
 * prefill chunks continuing the sequence and returns the logits (vocab floats) of its last
 * token; rt_decode_logits runs one decode step fed with `token` (teacher forcing) and returns
 * that step's logits. logits may be NULL. */
enum rt_status rt_reset(struct rt *r, const struct rt_sampling *s, char *err);
enum rt_status rt_prefill_logits(struct rt *r, const int32_t *tokens, uint32_t n, float *logits, char *err);
enum rt_status rt_decode_logits(struct rt *r, int32_t token, float *logits, char *err);

/* Per-op timing for benchmarks: run the schedule called `schedule` (its ops one by one, not
 * as a graph) reps times on the current sequence state and return, per op in order, its name,
 * kernel (NULL for runtime ops), median time and the bytes and FLOPs the plan says it moves.
 * The state advances as the ops run (a decode step moves one position per rep). */
struct rt_op_time {
    const char *name, *kernel;
    double us;
    uint64_t bytes, flops;
};
enum rt_status rt_profile(struct rt *r, const char *schedule, uint32_t reps, struct rt_op_time *out,
                          uint32_t cap, uint32_t *n, char *err);

/* What each kernel costs inside the graph, for benchmarks: the median time of the schedule's
 * graph as the plan has it (us_all) and of the same graph with every op of `kernel` left out
 * (us_without), reps launches each, interleaved. Leaving ops out makes the step compute
 * garbage: the state is not usable afterwards (rt_reset before the next sequence). */
enum rt_status rt_profile_drop(struct rt *r, const char *schedule, const char *kernel, uint32_t reps,
                               double *us_all, double *us_without, char *err);

/* A timeline of one run of a schedule's graph, for benchmarks; needs kernel images built with
 * KERN_TRACE=1 (kern/common.cuh), else RT_ERR_ARG. Per kernel launch in launch order: the op's
 * name and kernel (NULL where the launches do not match the schedule's kernel ops one to one),
 * how many CTAs reached their launch wait, and in microseconds from the first CTA's wait:
 * when the first and last CTA started (kernels marked with K_TRACE_BEGIN), reached the wait
 * (enter, enter_last), when the first and last wait returned (go, go_last), and, in kernels
 * that stamp them, a point after the wait (mark) and the CTAs' ends (end). A wait returns once
 * the kernel ahead has completed, so the next launch's go is this one's completion as seen by
 * its successor. The graph runs twice (once to warm up): the state advances two steps. */
struct rt_trace_op {
    const char *name, *kernel;
    uint32_t ctas;
    double start, start_last; /* first and last CTA start, for kernels that mark it; else NaN */
    double enter, enter_last, go, go_last;
    double mark, mark_last, end, end_last; /* K_TRACE_MARK and K_TRACE_END, where placed; else NaN */
};
enum rt_status rt_trace(struct rt *r, const char *schedule, struct rt_trace_op *out, uint32_t cap,
                        uint32_t *n, char *err);

/* Diagnostics for tests and tools: copy bytes [offset, offset + n) of the arena buffer called
 * name to dst, after the work queued so far. Not for the serving loop. */
enum rt_status rt_read_buffer(struct rt *r, const char *name, uint64_t offset, void *dst, uint64_t n,
                              char *err);

#endif
