/* rt_impl.h — rt's private state, shared by its files (rt.c: open/close and status names;
 * load.c: plan, device, modules, memory, weights; exec.c: schedules, graphs, generation).
 *
 * Every driver call of rt goes through DRV(), which counts calls so tests can make the Nth one
 * fail (fault injection). Allocations and blocking synchronisations are counted by the driver
 * table itself (rt_cudrv_counts), so nothing rt does escapes the count. */
#ifndef RT_IMPL_H
#define RT_IMPL_H

#include <stdint.h>

#include "../kern/step.h"
#include "../plan/planfile.h"
#include "cublas.h"
#include "rt.h"

#define RT_STAGING_BYTES (64u << 20) /* two pinned buffers for streaming the weights */
#define RT_RUNAHEAD 4                /* decode steps launched ahead of the tokens read */

struct rt_op {
    uint32_t kind;       /* enum plan_op_kind */
    CUfunction fn;       /* PLAN_OP_KERNEL */
    uint32_t grid[3], block[3], smem;
    void *params;        /* relocated blob inside rt.blobs */
    uint32_t size;
    int pdl;             /* launch with programmatic stream serialization (see rt_launch_op) */
    uint32_t flags;      /* plan_op flags: PLAN_OP_SIDE, _FORK, _JOIN */
};

struct rt_sched {
    struct plan_schedule s;
    CUgraphExec exec;    /* instantiated graph, or NULL when ops are launched one by one */
};

struct rt {
    struct rt_cudrv d;
    struct rt_cublas blas;
    CUdevice dev;
    CUcontext ctx;       /* the device's primary context, shared with cuBLAS */
    int ctx_held;
    CUstream stream;
    /* a prefill schedule's side branches (planfile.h PLAN_OP_SIDE): their stream, the events
     * that fork and join it, and cuBLAS bound to it; branches 0 runs side ops in file order */
    int branches;
    CUstream side;
    CUevent fork_ev, join_ev;
    struct rt_cublas blas_side;
    CUmodule mod;

    uint8_t *plan_buf;   /* the whole plan.bin; p points into it */
    size_t plan_len;
    struct plan_view p;

    CUdeviceptr arena, weights;
    uint64_t *weight_off;          /* (num_weights) offsets of each tensor in the weights */
    struct k_ring_entry *ring;     /* host-mapped token ring */
    CUdeviceptr ring_dev;
    struct k_step *step_host;      /* pinned: one step struct per prefill chunk of a request */
    uint32_t step_slots;
    int32_t *tokens_host;          /* pinned: the prompt, max_seq ids */
    uint64_t step_off, tokens_off, tokens_cap, persist_off, persist_size;

    uint8_t *blobs;                /* PARAMS, relocated */
    CUfunction *fns;               /* (num_kernels) */
    struct rt_op *ops;             /* (num_ops) */
    struct rt_sched *sched;        /* (num_schedules) */
    uint32_t num_buckets, buckets[PLAN_MAX_BUCKETS];

    uint32_t last_sched;           /* the schedule launched last (names buffers for reads) */
    uint32_t pos;                  /* diagnostics: tokens in the sequence state */
    struct rt_sampling diag;       /* diagnostics: the settings of rt_reset */
    /* fault injection: calls counted during the load, the one to fail */
    uint32_t calls, fail_call;
    int lost;                      /* a driver error while running: every later call fails */
    struct rt_info info;
};

/* Count the call; when it is the one a test chose to fail, fail it without making it. */
static inline int rt_inject(struct rt *r) { return ++r->calls == r->fail_call; }
#define DRV(r, call) (rt_inject(r) ? CUDA_ERROR_OUT_OF_MEMORY : (r)->d.call)

/* Format "what: CUDA_ERROR_X: text" into err and return status. */
enum rt_status rt_drv_fail(struct rt *r, CUresult res, enum rt_status st, char *err,
                           const char *what);
enum rt_status rt_fail(char *err, enum rt_status st, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* load.c */
enum rt_status rt_load(struct rt *r, const struct rt_options *o, char *err);
void rt_unload(struct rt *r);
CUdeviceptr rt_buffer(const struct rt *r, const char *name, uint64_t *size);

/* exec.c */
enum rt_status rt_build_graphs(struct rt *r, int no_graphs, int no_pdl, char *err);
/* Capture schedule s's ops into an instantiated graph, leaving out the ops of the kernel named
 * skip (NULL: none; rt_profile_drop). */
enum rt_status rt_capture(struct rt *r, uint32_t s, const char *skip, CUgraphExec *exec, char *err);

/* One timeline record as KERN_TRACE=1 images write it (kern/common.cuh struct k_trace_rec):
 * the launch (%gridid), global-timer stamps in ns (0: not stamped) and the CTA. A CTA writes
 * one record at its launch wait (t_start where marked, t_enter, t_go) and, where the kernel
 * marks its end, a second one (t_mark, t_end). */
struct rt_trace_rec {
    uint64_t grid, t_start, t_enter, t_go, t_mark, t_end;
    uint32_t sm, cta;
};

/* rt_trace's grouping (rec is sorted in place): one op per launch that has at least one CTA
 * past its wait, in the order of their first waits, times relative to the earliest wait;
 * names left NULL. RT_ERR_ARG when there are more than cap such launches. */
enum rt_status rt_trace_group(struct rt_trace_rec *rec, uint32_t nrec, struct rt_trace_op *out, uint32_t cap,
                              uint32_t *n, char *err);
void rt_free_graphs(struct rt *r);
enum rt_status rt_run_schedule(struct rt *r, uint32_t s, char *err);
enum rt_status rt_launch_op(struct rt *r, const struct rt_op *o, char *err);
/* o alone, ordered on the main stream: a side op between a fork and a join of its own */
enum rt_status rt_launch_alone(struct rt *r, const struct rt_op *o, char *err);
int rt_pick(const struct rt *r, uint32_t kind, uint32_t tokens, uint32_t kv);
enum rt_status rt_check_request(struct rt *r, const int32_t *prompt, uint32_t n,
                                const struct rt_sampling *s, char *err);
enum rt_status rt_queue_reset(struct rt *r, char *err);
struct k_step *rt_fill_step(struct rt *r, uint32_t slot, uint32_t pos, uint32_t n_tokens, int last,
                            const struct rt_sampling *s);
enum rt_status rt_queue_prefill(struct rt *r, const int32_t *prompt, uint32_t n, uint32_t start,
                                const struct rt_sampling *s, char *err);

#endif
