/* exec.c — running schedules: op launches, CUDA graphs, and the generation loop.
 *
 * Every schedule is captured into a CUDA graph at load and instantiated once; a step is one
 * graph launch. Nothing that changes per step is in a parameter blob: the kernels read the
 * position, token count and sampling settings from the step state in the arena.
 *
 * Decode runs ahead: the host launches up to RT_RUNAHEAD steps beyond the last token it has
 * read, and reads tokens from the host-mapped ring as the sampling kernel writes them, so no
 * step waits for the host and the host never synchronises per token. The device's `done` flag
 * makes steps after a stop id, max_new or the context end into no-ops, so the state holds
 * exactly the generated tokens in those cases. When the caller stops early, steps already
 * launched still run (at most RT_RUNAHEAD); the next request starts from a reset state, so
 * this never reaches another request. */
#include <sched.h>
#include <stddef.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "rt_impl.h"

enum rt_status rt_launch_op(struct rt *r, const struct rt_op *o, char *err)
{
    CUresult res = CUDA_SUCCESS;
    const int side = r->branches && (o->flags & PLAN_OP_SIDE);
    CUstream stream = side ? r->side : r->stream;
    /* a side op's GEMM always on the side handle (bound to the side stream, or to the main one
     * with no_branches): the handles' workspaces differ in size, and so may cuBLAS's choice of
     * kernel, and the results must not depend on whether the branches run side by side */
    const struct rt_cublas *blas =
        (o->flags & PLAN_OP_SIDE) && r->blas_side.h ? &r->blas_side : &r->blas;
    if (o->kind == PLAN_OP_KERNEL && o->pdl) {
        /* programmatic dependent launch: the kernel may be scheduled while the one before it
         * is still running; it waits (griddepcontrol.wait, kern/common.cuh) before touching
         * memory, so only the launch latency overlaps, never the work */
        void *args[] = {o->params};
        CUlaunchAttribute at = {.id = CU_LAUNCH_ATTRIBUTE_PROGRAMMATIC_STREAM_SERIALIZATION};
        at.value.programmaticStreamSerializationAllowed = 1;
        CUlaunchConfig c = {.gridDimX = o->grid[0], .gridDimY = o->grid[1], .gridDimZ = o->grid[2],
                            .blockDimX = o->block[0], .blockDimY = o->block[1],
                            .blockDimZ = o->block[2], .sharedMemBytes = o->smem,
                            .hStream = stream, .attrs = &at, .numAttrs = 1};
        res = DRV(r, cuLaunchKernelEx(&c, o->fn, args, NULL));
    } else if (o->kind == PLAN_OP_KERNEL) {
        void *args[] = {o->params};
        res = DRV(r, cuLaunchKernel(o->fn, o->grid[0], o->grid[1], o->grid[2], o->block[0],
                                    o->block[1], o->block[2], o->smem, stream, args, NULL));
    } else if (o->kind == PLAN_OP_MEMSET) {
        struct plan_memset m;
        memcpy(&m, o->params, sizeof m);
        res = DRV(r, cuMemsetD8Async(m.dst, (unsigned char)m.value, m.bytes, stream));
    } else if (o->kind == PLAN_OP_COPY) {
        struct plan_copy c;
        memcpy(&c, o->params, sizeof c);
        res = DRV(r, cuMemcpyDtoDAsync(c.dst, c.src, c.bytes, stream));
    } else if (o->kind == PLAN_OP_GEMM) {
        struct plan_gemm g;
        memcpy(&g, o->params, sizeof g);
        int ta = g.dtype_ab == PLAN_DTYPE_F32 ? RT_CUDA_R_32F
                 : g.dtype_ab == PLAN_DTYPE_F16 ? RT_CUDA_R_16F : RT_CUDA_R_16BF;
        int tc = g.dtype_c == PLAN_DTYPE_F32 ? RT_CUDA_R_32F
                 : g.dtype_c == PLAN_DTYPE_F16 ? RT_CUDA_R_16F : RT_CUDA_R_16BF;
        int s = blas->gemm_ex(blas->h, g.trans_a ? RT_CUBLAS_OP_T : RT_CUBLAS_OP_N,
                                g.trans_b ? RT_CUBLAS_OP_T : RT_CUBLAS_OP_N, (int)g.m, (int)g.n,
                                (int)g.k, &g.alpha, (const void *)g.a, ta, (int)g.lda,
                                (const void *)g.b, ta, (int)g.ldb, &g.beta, (void *)g.c, tc,
                                (int)g.ldc, RT_CUBLAS_COMPUTE_32F, RT_CUBLAS_GEMM_DEFAULT);
        if (s)
            return rt_fail(err, RT_ERR_CUBLAS, "cublasGemmEx failed (status %d)", s);
    }
    return res ? rt_drv_fail(r, res, RT_ERR_CUDA, err, "launching an op") : RT_OK;
}

/* The side stream waits for the main one (fork), or the main one for the side one. */
static enum rt_status sync_streams(struct rt *r, int fork, char *err)
{
    CUevent ev = fork ? r->fork_ev : r->join_ev;
    CUstream from = fork ? r->stream : r->side, to = fork ? r->side : r->stream;
    CUresult res = DRV(r, cuEventRecord(ev, from));
    if (!res)
        res = DRV(r, cuStreamWaitEvent(to, ev, 0));
    return res ? rt_drv_fail(r, res, RT_ERR_CUDA, err, "forking or joining the side stream")
               : RT_OK;
}

enum rt_status rt_launch_alone(struct rt *r, const struct rt_op *o, char *err)
{
    const int side = r->branches && (o->flags & PLAN_OP_SIDE);
    enum rt_status st = side ? sync_streams(r, 1, err) : RT_OK;
    if (!st)
        st = rt_launch_op(r, o, err);
    return !st && side ? sync_streams(r, 0, err) : st;
}

/* Schedule s's ops in file order, each on its stream: a FORK makes the side stream wait for
 * the main one, a JOIN the main stream for the side one (planfile.h). Kernels named skip are
 * left out (rt_capture), never a fork or a join. */
static enum rt_status launch_ops(struct rt *r, uint32_t s, const char *skip, char *err)
{
    const struct plan_schedule *ps = &r->sched[s].s;
    for (uint32_t i = 0; i < ps->op_count; i++) {
        const struct rt_op *o = &r->ops[ps->first_op + i];
        enum rt_status st = RT_OK;
        if (r->branches && (o->flags & PLAN_OP_FORK))
            st = sync_streams(r, 1, err);
        if (!st && r->branches && (o->flags & PLAN_OP_JOIN))
            st = sync_streams(r, 0, err);
        if (st)
            return st;
        if (skip && o->kind == PLAN_OP_KERNEL) {
            struct plan_op op;
            struct plan_kernel kk;
            plan_get_op(&r->p, ps->first_op + i, &op);
            plan_get_kernel(&r->p, op.kernel, &kk);
            if (!strcmp(plan_str(&r->p, kk.name), skip))
                continue;
        }
        if ((st = rt_launch_op(r, o, err)))
            return st;
    }
    return RT_OK;
}

enum rt_status rt_build_graphs(struct rt *r, int no_graphs, int no_pdl, char *err)
{
    r->sched = calloc(r->p.num_schedules ? r->p.num_schedules : 1, sizeof *r->sched);
    if (!r->sched)
        return rt_fail(err, RT_ERR_NOMEM, "out of host memory");
    for (uint32_t s = 0; s < r->p.num_schedules; s++)
        plan_get_schedule(&r->p, s, &r->sched[s].s);
    /* Decode kernels start with griddepcontrol.wait (kern/common.cuh: k_pdl_wait), so on sm_90
     * and newer their launches may overlap the tail of the kernel before them: a decode step
     * is ~400 small kernels, and the launch gaps are a large share of it (PERF.md). Only a
     * kernel that follows a kernel: prefill schedules also hold cuBLAS GEMMs and launch
     * plainly. */
    int pdl = !no_pdl && r->info.sm >= 90 && r->d.cuLaunchKernelEx;
    for (uint32_t s = 0; s < r->p.num_schedules && pdl; s++) {
        struct rt_op *o = r->ops + r->sched[s].s.first_op;
        for (uint32_t i = 1; r->sched[s].s.kind == PLAN_SCHED_DECODE && i < r->sched[s].s.op_count; i++)
            o[i].pdl = o[i].kind == PLAN_OP_KERNEL && o[i - 1].kind == PLAN_OP_KERNEL;
    }
    if (no_graphs)
        return RT_OK;
    for (uint32_t s = 0; s < r->p.num_schedules; s++) {
        enum rt_status st = rt_capture(r, s, NULL, &r->sched[s].exec, err);
        if (st)
            return st;
    }
    return RT_OK;
}

enum rt_status rt_capture(struct rt *r, uint32_t s, const char *skip, CUgraphExec *exec, char *err)
{
    CUgraph g = NULL;
    CUresult res = DRV(r, cuStreamBeginCapture(r->stream, CU_STREAM_CAPTURE_MODE_THREAD_LOCAL));
    if (res)
        return rt_drv_fail(r, res, RT_ERR_CUDA, err, "beginning graph capture");
    enum rt_status st = launch_ops(r, s, skip, err);
    res = r->d.cuStreamEndCapture(r->stream, &g); /* always end the capture */
    if (st || res || !g) {
        if (g)
            r->d.cuGraphDestroy(g);
        return st ? st : rt_drv_fail(r, res, RT_ERR_CUDA, err, "capturing a schedule");
    }
    res = DRV(r, cuGraphInstantiate(exec, g, 0));
    r->d.cuGraphDestroy(g);
    return res ? rt_drv_fail(r, res, res == CUDA_ERROR_OUT_OF_MEMORY ? RT_ERR_NOMEM : RT_ERR_CUDA, err,
                             "instantiating a schedule's graph")
               : RT_OK;
}

void rt_free_graphs(struct rt *r)
{
    for (uint32_t s = 0; r->sched && s < r->p.num_schedules; s++)
        if (r->sched[s].exec)
            r->d.cuGraphExecDestroy(r->sched[s].exec);
}

enum rt_status rt_run_schedule(struct rt *r, uint32_t s, char *err)
{
    r->last_sched = s;
    if (!r->sched[s].exec)
        return launch_ops(r, s, NULL, err);
    CUresult res = DRV(r, cuGraphLaunch(r->sched[s].exec, r->stream));
    return res ? rt_drv_fail(r, res, RT_ERR_CUDA, err, "launching a graph") : RT_OK;
}

/* ---- generation ------------------------------------------------------------------------------ */

static double now_ms(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return 1e3 * (double)t.tv_sec + 1e-6 * (double)t.tv_nsec;
}

/* The schedule of a kind that serves `tokens` tokens (prefill: the smallest bucket that holds
 * them, else the largest) at filled length kv. */
int rt_pick(const struct rt *r, uint32_t kind, uint32_t tokens, uint32_t kv)
{
    int best = -1;
    for (uint32_t s = 0; s < r->p.num_schedules; s++) {
        const struct plan_schedule *ps = &r->sched[s].s;
        if (ps->kind != kind || kv < ps->kv_min || kv > ps->kv_max)
            continue;
        if (kind == PLAN_SCHED_DECODE)
            return (int)s;
        const struct plan_schedule *b = best >= 0 ? &r->sched[best].s : NULL;
        int fits = ps->tokens >= tokens, bfits = b && b->tokens >= tokens;
        if (!b || (fits && (!bfits || ps->tokens < b->tokens)) || (!fits && !bfits && ps->tokens > b->tokens))
            best = (int)s;
    }
    return best;
}

enum rt_status rt_check_request(struct rt *r, const int32_t *prompt, uint32_t n,
                                    const struct rt_sampling *s, char *err)
{
    const struct model_config *c = &r->p.id.model;
    if (r->lost)
        return rt_fail(err, RT_ERR_CUDA, "the GPU context was lost earlier; restart the process");
    if (!prompt || n == 0 || !s)
        return rt_fail(err, RT_ERR_ARG, "empty prompt");
    if ((uint64_t)n + 1 > r->p.id.max_seq)
        return rt_fail(err, RT_ERR_CONTEXT, "the prompt has %u tokens; the plan's context holds %u "
                                            "(prompt plus at least one generated token)",
                       n, r->p.id.max_seq);
    for (uint32_t i = 0; i < n; i++)
        if (prompt[i] < 0 || (uint32_t)prompt[i] >= c->vocab_size)
            return rt_fail(err, RT_ERR_ARG, "token %d at position %u is outside the vocabulary "
                                            "(0..%u)", prompt[i], i, c->vocab_size - 1);
    if (s->max_new == 0 || s->n_stop > K_MAX_STOP_IDS || !(s->temperature >= 0.0f) ||
        !(s->top_p > 0.0f && s->top_p <= 1.0f))
        return rt_fail(err, RT_ERR_ARG, "bad sampling settings (max_new >= 1, at most %d stop ids, "
                                        "temperature >= 0, 0 < top_p <= 1)", K_MAX_STOP_IDS);
    return RT_OK;
}

/* Queue the clearing of the sequence state (KV cache, GDN states, step, token buffer). */
enum rt_status rt_queue_reset(struct rt *r, char *err)
{
    memset(r->ring, 0, K_RING_SLOTS * sizeof *r->ring);
    CUresult res = DRV(r, cuMemsetD8Async(r->arena + r->persist_off, 0, r->persist_size, r->stream));
    return res ? rt_drv_fail(r, res, RT_ERR_CUDA, err, "resetting the sequence state") : RT_OK;
}

/* The step struct of a chunk (or a decode step) at position pos, in pinned slot `slot`. */
struct k_step *rt_fill_step(struct rt *r, uint32_t slot, uint32_t pos, uint32_t n_tokens, int last,
                            const struct rt_sampling *s)
{
    struct k_step *st = &r->step_host[slot];
    memset(st, 0, sizeof *st);
    st->pos = pos, st->n_tokens = n_tokens, st->last_chunk = (uint32_t)last;
    st->max_new = s->max_new, st->n_stop = s->n_stop;
    memcpy(st->stop_ids, s->stop_ids, sizeof(int32_t) * s->n_stop);
    st->seed = s->seed, st->temperature = s->temperature, st->top_k = s->top_k;
    st->top_p = s->top_p, st->max_pos = r->p.id.max_seq;
    return st;
}

/* Queue prompt[0..n) as prefill chunks continuing from position start. */
enum rt_status rt_queue_prefill(struct rt *r, const int32_t *prompt, uint32_t n, uint32_t start,
                                const struct rt_sampling *s, char *err)
{
    CUresult res;
    memcpy(r->tokens_host + start, prompt, (size_t)n * 4);
    uint32_t pos = start, end = start + n, slot = 0;
    while (pos < end) {
        int sc = rt_pick(r, PLAN_SCHED_PREFILL, end - pos, pos + 1);
        if (sc < 0 || slot + 1 >= r->step_slots) /* the last slot is reserved for decode */
            return rt_fail(err, RT_ERR_PLAN, "the plan has no prefill schedule for position %u", pos);
        uint32_t chunk = end - pos < r->sched[sc].s.tokens ? end - pos : r->sched[sc].s.tokens;
        if ((uint64_t)chunk * 4 > r->tokens_cap)
            return rt_fail(err, RT_ERR_PLAN, "the plan's tokens_in buffer is smaller than its buckets");
        struct k_step *st = rt_fill_step(r, slot++, pos, chunk, pos + chunk == end, s);
        if ((res = DRV(r, cuMemcpyHtoDAsync(r->arena + r->tokens_off, r->tokens_host + pos,
                                            (size_t)chunk * 4, r->stream))) ||
            (res = DRV(r, cuMemcpyHtoDAsync(r->arena + r->step_off, st, sizeof *st, r->stream))))
            return rt_drv_fail(r, res, RT_ERR_CUDA, err, "queueing a prefill chunk");
        enum rt_status e = rt_run_schedule(r, (uint32_t)sc, err);
        if (e)
            return e;
        pos += chunk;
    }
    return RT_OK;
}

/* Wait for ring entry k; 1 when it arrived, 0 when the stream went idle without it (the device
 * stopped), -1 on a device error. Polls without blocking the stream. */
static int wait_token(struct rt *r, uint32_t k, int32_t *tok)
{
    volatile struct k_ring_entry *e = &r->ring[k % K_RING_SLOTS];
    for (uint32_t spin = 0;; spin++) {
        if (e->seq == k + 1) {
            __atomic_thread_fence(__ATOMIC_ACQUIRE);
            *tok = e->token;
            return 1;
        }
        if ((spin & 1023) == 1023) {
            CUresult q = r->d.cuStreamQuery(r->stream);
            if (q == CUDA_SUCCESS) /* idle: one last look, the write may have just landed */
                return e->seq == k + 1 ? (*tok = e->token, 1) : 0;
            if (q != CUDA_ERROR_NOT_READY)
                return -1;
            sched_yield();
        }
    }
}

static int is_stop(const struct rt_sampling *s, int32_t tok)
{
    for (uint32_t i = 0; i < s->n_stop; i++)
        if (s->stop_ids[i] == tok)
            return 1;
    return 0;
}

enum rt_status rt_generate(struct rt *r, const int32_t *prompt, uint32_t n,
                           const struct rt_sampling *s, rt_token_fn fn, void *ctx,
                           struct rt_stats *stats, char *err)
{
    struct rt_stats st = {.prompt_tokens = n};
    enum rt_status e = rt_check_request(r, prompt, n, s, err);
    if (e)
        return e;
    double t0 = now_ms(), t1 = t0;
    if ((e = rt_queue_reset(r, err)) || (e = rt_queue_prefill(r, prompt, n, 0, s, err)))
        goto lost;
    /* decode steps consume one token each: n_tokens = 1 from here on (ordered on the stream) */
    uint32_t *one_pinned = &r->step_host[r->step_slots - 1].n_tokens; /* the reserved slot */
    *one_pinned = 1;
    CUresult res0 = DRV(r, cuMemcpyHtoDAsync(r->arena + r->step_off + offsetof(struct k_step, n_tokens),
                                             one_pinned, 4, r->stream));
    if (res0) {
        e = rt_drv_fail(r, res0, RT_ERR_CUDA, err, "queueing the first decode step");
        goto lost;
    }
    uint32_t launched = 1, read = 0; /* steps whose token is (or will be) in the ring */
    uint32_t max_new = s->max_new < r->p.id.max_seq - n ? s->max_new : r->p.id.max_seq - n;
    for (;;) {
        /* keep RT_RUNAHEAD decode steps queued; the step that feeds token k runs at L_kv n+k+1 */
        while (launched < max_new && launched < read + 1 + RT_RUNAHEAD) {
            int sc = rt_pick(r, PLAN_SCHED_DECODE, 1, n + launched);
            if (sc < 0) {
                e = rt_fail(err, RT_ERR_PLAN, "the plan has no decode schedule for length %u", n + launched);
                goto lost;
            }
            if ((e = rt_run_schedule(r, (uint32_t)sc, err)))
                goto lost;
            launched++;
        }
        int32_t tok;
        int got = wait_token(r, read, &tok);
        if (got < 0) {
            e = rt_drv_fail(r, r->d.cuStreamQuery(r->stream), RT_ERR_CUDA, err, "running a step");
            goto lost;
        }
        if (got == 0) { /* the device stopped: it saw the end before the host did */
            st.finish = RT_FINISH_CONTEXT;
            break;
        }
        if (read++ == 0)
            t1 = now_ms(), st.prefill_ms = t1 - t0;
        st.new_tokens = read;
        if (fn && fn(ctx, tok)) {
            st.finish = RT_FINISH_CALLER;
            break;
        }
        if (is_stop(s, tok)) {
            st.finish = RT_FINISH_STOP;
            break;
        }
        if (read == max_new) {
            st.finish = read == s->max_new ? RT_FINISH_LENGTH : RT_FINISH_CONTEXT;
            break;
        }
    }
    st.decode_ms = now_ms() - t1;
    /* the end of a request: steps still queued run (as no-ops after a device-side stop) */
    CUresult res = DRV(r, cuStreamSynchronize(r->stream));
    if (res) {
        e = rt_drv_fail(r, res, RT_ERR_CUDA, err, "finishing the request");
        goto lost;
    }
    if (stats)
        *stats = st;
    return RT_OK;
lost:
    if (e == RT_ERR_CUDA)
        r->lost = 1;
    if (stats)
        *stats = st;
    return e;
}
