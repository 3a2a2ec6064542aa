/* diag.c — step-by-step access for tests and tools: reset a sequence, run prompt chunks or one
 * decode step with a token chosen by the caller (teacher forcing), and read the logits.
 *
 * rt_generate() is the serving path; these calls synchronise after every step and exist so the
 * end-to-end tests can compare the logits of every decode step with golden files whose
 * decode tokens were fixed in advance. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "rt_impl.h"

/* Wait for the step (the pinned step and token staging is reused by the next call), then copy
 * the logits out when asked. */
static enum rt_status read_logits(struct rt *r, float *logits, char *err)
{
    if (logits)
        return rt_read_buffer(r, "logits", 0, logits, 4ull * r->p.id.model.vocab_size, err);
    CUresult res = DRV(r, cuStreamSynchronize(r->stream));
    return res ? rt_drv_fail(r, res, RT_ERR_CUDA, err, "running a step") : RT_OK;
}

enum rt_status rt_reset(struct rt *r, const struct rt_sampling *s, char *err)
{
    if (r->lost)
        return rt_fail(err, RT_ERR_CUDA, "the GPU context was lost earlier; restart the process");
    r->diag = *s;
    r->pos = 0;
    return rt_queue_reset(r, err);
}

enum rt_status rt_prefill_logits(struct rt *r, const int32_t *tokens, uint32_t n, float *logits, char *err)
{
    enum rt_status e;
    if ((uint64_t)r->pos + n + 1 > r->p.id.max_seq)
        return rt_fail(err, RT_ERR_CONTEXT, "%u tokens after %u do not fit in max_seq %u", n, r->pos,
                       r->p.id.max_seq);
    if ((e = rt_check_request(r, tokens, n, &r->diag, err)) ||
        (e = rt_queue_prefill(r, tokens, n, r->pos, &r->diag, err)))
        return e;
    r->pos += n;
    return read_logits(r, logits, err);
}

enum rt_status rt_decode_logits(struct rt *r, int32_t token, float *logits, char *err)
{
    enum rt_status e;
    if ((e = rt_check_request(r, &token, 1, &r->diag, err)))
        return e;
    if (r->pos + 1 > r->p.id.max_seq)
        return rt_fail(err, RT_ERR_CONTEXT, "the context is full (%u tokens)", r->pos);
    int sc = rt_pick(r, PLAN_SCHED_DECODE, 1, r->pos + 1);
    if (sc < 0)
        return rt_fail(err, RT_ERR_PLAN, "the plan has no decode schedule for length %u", r->pos + 1);
    struct k_step *st = rt_fill_step(r, 0, r->pos, 1, 1, &r->diag);
    st->token = token;
    CUresult res = DRV(r, cuMemcpyHtoDAsync(r->arena + r->step_off, st, sizeof *st, r->stream));
    if (res)
        return rt_drv_fail(r, res, RT_ERR_CUDA, err, "writing the step state");
    if ((e = rt_run_schedule(r, (uint32_t)sc, err)))
        return e;
    r->pos++;
    return read_logits(r, logits, err);
}

static int cmp_float(const void *a, const void *b)
{
    float x = *(const float *)a, y = *(const float *)b;
    return (x > y) - (x < y);
}

/* The index of the schedule called name, or -1. */
static int schedule_named(const struct rt *r, const char *name)
{
    for (uint32_t i = 0; i < r->p.num_schedules; i++)
        if (!strcmp(plan_str(&r->p, r->sched[i].s.name), name))
            return (int)i;
    return -1;
}

enum rt_status rt_profile(struct rt *r, const char *schedule, uint32_t reps, struct rt_op_time *out,
                          uint32_t cap, uint32_t *n, char *err)
{
    int s = schedule_named(r, schedule);
    if (s < 0)
        return rt_fail(err, RT_ERR_ARG, "the plan has no schedule %s", schedule);
    const struct plan_schedule *ps = &r->sched[s].s;
    uint32_t nops = ps->op_count < cap ? ps->op_count : cap;
    CUevent *ev = calloc(nops + 1, sizeof *ev);
    float *t = calloc((size_t)nops * (reps ? reps : 1), sizeof *t);
    enum rt_status st = RT_OK;
    CUresult res = CUDA_SUCCESS;
    if (!ev || !t) {
        st = rt_fail(err, RT_ERR_NOMEM, "out of host memory");
        goto out;
    }
    for (uint32_t i = 0; i <= nops && !res; i++)
        res = DRV(r, cuEventCreate(&ev[i], 0));
    r->last_sched = (uint32_t)s;
    for (uint32_t k = 0; k < reps && !res && !st; k++) {
        for (uint32_t i = 0; i < nops && !res && !st; i++) {
            res = DRV(r, cuEventRecord(ev[i], r->stream));
            if (!res)
                st = rt_launch_alone(r, &r->ops[ps->first_op + i], err);
        }
        if (!res && !st)
            res = DRV(r, cuEventRecord(ev[nops], r->stream));
        if (!res && !st)
            res = DRV(r, cuEventSynchronize(ev[nops]));
        for (uint32_t i = 0; i < nops && !res && !st; i++)
            res = DRV(r, cuEventElapsedTime(&t[(size_t)i * reps + k], ev[i], ev[i + 1]));
    }
    if (res && !st)
        st = rt_drv_fail(r, res, RT_ERR_CUDA, err, "timing a schedule");
    for (uint32_t i = 0; i < nops && !st; i++) {
        struct plan_op op;
        plan_get_op(&r->p, ps->first_op + i, &op);
        qsort(t + (size_t)i * reps, reps, sizeof *t, cmp_float);
        out[i].name = plan_str(&r->p, op.name);
        out[i].kernel = NULL;
        if (op.kind == PLAN_OP_KERNEL) {
            struct plan_kernel kk;
            plan_get_kernel(&r->p, op.kernel, &kk);
            out[i].kernel = plan_str(&r->p, kk.name);
        }
        out[i].us = 1e3 * t[(size_t)i * reps + reps / 2];
        out[i].bytes = op.bytes, out[i].flops = op.flops;
    }
    *n = st ? 0 : nops;
out:
    for (uint32_t i = 0; ev && i <= nops; i++)
        if (ev[i])
            r->d.cuEventDestroy(ev[i]);
    free(ev);
    free(t);
    return st;
}

/* Median time of reps back-to-back launches of exec, each timed by events. */
static enum rt_status time_graph(struct rt *r, CUgraphExec exec, uint32_t reps, double *us,
                                 char *err)
{
    CUevent a = NULL, b = NULL;
    float *t = calloc(reps, sizeof *t);
    if (!t)
        return rt_fail(err, RT_ERR_NOMEM, "out of host memory");
    CUresult res = DRV(r, cuEventCreate(&a, 0));
    if (!res)
        res = DRV(r, cuEventCreate(&b, 0));
    for (uint32_t k = 0; k < reps && !res; k++) {
        res = DRV(r, cuEventRecord(a, r->stream));
        if (!res)
            res = DRV(r, cuGraphLaunch(exec, r->stream));
        if (!res)
            res = DRV(r, cuEventRecord(b, r->stream));
        if (!res)
            res = DRV(r, cuEventSynchronize(b));
        if (!res)
            res = DRV(r, cuEventElapsedTime(&t[k], a, b));
    }
    if (!res) {
        qsort(t, reps, sizeof *t, cmp_float);
        *us = 1e3 * t[reps / 2];
    }
    if (a)
        r->d.cuEventDestroy(a);
    if (b)
        r->d.cuEventDestroy(b);
    free(t);
    return res ? rt_drv_fail(r, res, RT_ERR_CUDA, err, "timing a graph") : RT_OK;
}

enum rt_status rt_profile_drop(struct rt *r, const char *schedule, const char *kernel,
                               uint32_t reps, double *us_all, double *us_without, char *err)
{
    int s = schedule_named(r, schedule);
    if (s < 0)
        return rt_fail(err, RT_ERR_ARG, "the plan has no schedule %s", schedule);
    if (!reps)
        return rt_fail(err, RT_ERR_ARG, "no repetitions");
    CUgraphExec all = NULL, without = NULL;
    r->last_sched = (uint32_t)s;
    enum rt_status st = rt_capture(r, (uint32_t)s, NULL, &all, err);
    if (!st)
        st = rt_capture(r, (uint32_t)s, kernel, &without, err);
    /* interleaved halves, so drift in clocks falls on both alike */
    double a1 = 0, a2 = 0, w1 = 0, w2 = 0;
    uint32_t h = reps / 2 + 1;
    if (!st)
        st = time_graph(r, all, h, &a1, err);
    if (!st)
        st = time_graph(r, without, h, &w1, err);
    if (!st)
        st = time_graph(r, all, h, &a2, err);
    if (!st)
        st = time_graph(r, without, h, &w2, err);
    if (!st)
        *us_all = (a1 + a2) / 2, *us_without = (w1 + w2) / 2;
    if (all)
        r->d.cuGraphExecDestroy(all);
    if (without)
        r->d.cuGraphExecDestroy(without);
    return st;
}

_Static_assert(sizeof(struct rt_trace_rec) == 56, "kern/common.cuh struct k_trace_rec: 6 x 8 + 2 x 4 bytes");

/* lo/hi of the stamps v != 0 (records write 0 for a stamp not made) */
struct span {
    uint64_t lo, hi;
};
static void span_add(struct span *s, uint64_t v)
{
    if (v)
        s->lo = v < s->lo ? v : s->lo, s->hi = v > s->hi ? v : s->hi;
}
static double span_us(uint64_t v, uint64_t t0) { return v && v != UINT64_MAX ? 1e-3 * ((double)v - (double)t0) : NAN; }

static int cmp_rec(const void *a, const void *b)
{
    const struct rt_trace_rec *x = a, *y = b;
    if (x->grid != y->grid)
        return (x->grid > y->grid) - (x->grid < y->grid);
    return (x->t_enter > y->t_enter) - (x->t_enter < y->t_enter);
}

static int cmp_op_enter(const void *a, const void *b)
{
    const struct rt_trace_op *x = a, *y = b;
    return (x->enter > y->enter) - (x->enter < y->enter);
}

enum rt_status rt_trace_group(struct rt_trace_rec *rec, uint32_t nrec, struct rt_trace_op *out, uint32_t cap,
                              uint32_t *n, char *err)
{
    *n = 0;
    qsort(rec, nrec, sizeof *rec, cmp_rec);
    uint64_t t0 = UINT64_MAX;
    for (uint32_t i = 0; i < nrec; i++)
        if (rec[i].t_enter && rec[i].t_enter < t0)
            t0 = rec[i].t_enter;
    uint32_t m = 0;
    for (uint32_t i = 0; i < nrec;) {
        uint32_t j = i, ctas = 0;
        struct span s[5];
        for (int f = 0; f < 5; f++)
            s[f] = (struct span){UINT64_MAX, 0};
        for (; j < nrec && rec[j].grid == rec[i].grid; j++) {
            ctas += rec[j].t_go != 0;
            span_add(&s[0], rec[j].t_start), span_add(&s[1], rec[j].t_enter), span_add(&s[2], rec[j].t_go);
            span_add(&s[3], rec[j].t_mark), span_add(&s[4], rec[j].t_end);
        }
        i = j;
        if (!ctas) /* a launch whose CTAs all left before their wait has no place in the order */
            continue;
        if (m == cap)
            return rt_fail(err, RT_ERR_ARG, "more than %u launches in the timeline", cap);
        struct rt_trace_op *o = &out[m++];
        *o = (struct rt_trace_op){.ctas = ctas};
        double *f[5][2] = {{&o->start, &o->start_last}, {&o->enter, &o->enter_last}, {&o->go, &o->go_last},
                           {&o->mark, &o->mark_last}, {&o->end, &o->end_last}};
        for (int k = 0; k < 5; k++)
            *f[k][0] = span_us(s[k].lo, t0), *f[k][1] = span_us(s[k].hi, t0);
    }
    qsort(out, m, sizeof *out, cmp_op_enter);
    *n = m;
    return RT_OK;
}

enum rt_status rt_trace(struct rt *r, const char *schedule, struct rt_trace_op *out, uint32_t cap,
                        uint32_t *n, char *err)
{
    *n = 0;
    int s = schedule_named(r, schedule);
    if (s < 0)
        return rt_fail(err, RT_ERR_ARG, "the plan has no schedule %s", schedule);
    CUdeviceptr buf = 0, cnt = 0;
    size_t buf_size = 0, cnt_size = 0;
    if (!r->d.cuModuleGetGlobal || r->d.cuModuleGetGlobal(&buf, &buf_size, r->mod, "k_trace_buf") ||
        r->d.cuModuleGetGlobal(&cnt, &cnt_size, r->mod, "k_trace_n") || cnt_size != 4)
        return rt_fail(err, RT_ERR_ARG, "the plan's kernel images have no timeline records "
                                        "(rebuild them with make KERN_TRACE=1, then plan again)");
    CUgraphExec exec = NULL;
    struct rt_trace_rec *rec = NULL;
    uint32_t nrec = 0;
    r->last_sched = (uint32_t)s;
    enum rt_status st = rt_capture(r, (uint32_t)s, NULL, &exec, err);
    CUresult res = CUDA_SUCCESS;
    if (!st) /* one run to warm up, then the traced one */
        res = DRV(r, cuGraphLaunch(exec, r->stream));
    if (!st && !res)
        res = DRV(r, cuMemsetD8Async(cnt, 0, 4, r->stream));
    if (!st && !res)
        res = DRV(r, cuGraphLaunch(exec, r->stream));
    if (!st && !res)
        res = DRV(r, cuStreamSynchronize(r->stream));
    if (!st && !res)
        res = DRV(r, cuMemcpyDtoH(&nrec, cnt, 4));
    if (!st && !res && (uint64_t)nrec * sizeof *rec > buf_size)
        st = rt_fail(err, RT_ERR_ARG, "%u timeline records overflow the kernels' buffer", nrec);
    if (!st && !res && nrec && !(rec = malloc((size_t)nrec * sizeof *rec)))
        st = rt_fail(err, RT_ERR_NOMEM, "out of host memory");
    if (!st && !res && nrec)
        res = DRV(r, cuMemcpyDtoH(rec, buf, (size_t)nrec * sizeof *rec));
    if (exec)
        r->d.cuGraphExecDestroy(exec);
    if (res && !st)
        st = rt_drv_fail(r, res, RT_ERR_CUDA, err, "tracing a schedule");
    if (st || !nrec) {
        free(rec);
        return st;
    }
    uint32_t m = 0;
    st = rt_trace_group(rec, nrec, out, cap, &m, err);
    free(rec);
    if (st)
        return st;
    /* name the launches when they match the schedule's kernel ops one to one */
    const struct plan_schedule *ps = &r->sched[s].s;
    uint32_t nk = 0;
    for (uint32_t i = 0; i < ps->op_count; i++)
        nk += r->ops[ps->first_op + i].kind == PLAN_OP_KERNEL;
    if (nk == m)
        for (uint32_t i = 0, k = 0; i < ps->op_count; i++) {
            struct plan_op op;
            struct plan_kernel kk;
            plan_get_op(&r->p, ps->first_op + i, &op);
            if (op.kind != PLAN_OP_KERNEL)
                continue;
            plan_get_kernel(&r->p, op.kernel, &kk);
            out[k].name = plan_str(&r->p, op.name), out[k].kernel = plan_str(&r->p, kk.name);
            k++;
        }
    *n = m;
    return RT_OK;
}
