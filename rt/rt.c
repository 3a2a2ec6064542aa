/* rt.c — rt_open/rt_close, information, status names and the message helpers (rt.h). */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "rt_impl.h"

const char *rt_status_name(enum rt_status s)
{
    static const char *const names[] = {
        [RT_OK] = "ok",
        [RT_ERR_ARG] = "bad argument",
        [RT_ERR_NO_DRIVER] = "no CUDA driver",
        [RT_ERR_NO_DEVICE] = "no CUDA device",
        [RT_ERR_PLAN] = "bad plan",
        [RT_ERR_ARCH] = "plan not built for this GPU",
        [RT_ERR_WEIGHTS] = "bad weights image",
        [RT_ERR_MISMATCH] = "plan/weights mismatch",
        [RT_ERR_NOMEM] = "out of memory",
        [RT_ERR_KERNEL] = "kernel missing or unusable",
        [RT_ERR_CUBLAS] = "cuBLAS failure",
        [RT_ERR_CUDA] = "CUDA failure",
        [RT_ERR_CONTEXT] = "context length exceeded",
        [RT_ERR_IO] = "I/O error",
    };
    return (unsigned)s < sizeof names / sizeof names[0] && names[s] ? names[s] : "unknown status";
}

int rt_status_restartable(enum rt_status s)
{
    /* a lost context, a transient allocation failure or a driver hiccup can clear on restart;
     * a wrong plan, image, GPU or argument will fail the same way again */
    return s == RT_ERR_CUDA || s == RT_ERR_NOMEM || s == RT_ERR_NO_DEVICE || s == RT_ERR_CUBLAS;
}

enum rt_status rt_fail(char *err, enum rt_status st, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err, RT_ERR_LEN, fmt, ap);
    va_end(ap);
    return st;
}

enum rt_status rt_drv_fail(struct rt *r, CUresult res, enum rt_status st, char *err, const char *what)
{
    char why[RT_ERR_LEN];
    int injected = r->calls == r->fail_call;
    rt_cudrv_errstr(&r->d, res, why, sizeof why);
    return rt_fail(err, st, "%s failed: %s%s", what, why, injected ? " (injected)" : "");
}

enum rt_status rt_open(struct rt **out, const struct rt_options *o, char *err)
{
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    *out = NULL;
    if (!o || !o->plan_path || (!o->synthetic && !o->weights_path))
        return rt_fail(err, RT_ERR_ARG, "rt_open needs a plan and either a weights image or "
                                        "synthetic weights");
    struct rt *r = calloc(1, sizeof *r);
    if (!r)
        return rt_fail(err, RT_ERR_NOMEM, "out of host memory");
    r->fail_call = o->fail_call;
    enum rt_status st = rt_load(r, o, err);
    if (st) {
        rt_unload(r);
        free(r);
        return st;
    }
    clock_gettime(CLOCK_MONOTONIC, &t1);
    struct rt_info *in = &r->info;
    in->model = r->p.id.model;
    in->max_seq = r->p.id.max_seq;
    in->max_chunk = r->num_buckets ? r->buckets[r->num_buckets - 1] : 0;
    in->arena_bytes = r->p.id.arena_bytes;
    in->weights_bytes = r->p.id.weights_bytes;
    in->load_calls = r->calls;
    in->load_ms = 1e3 * (double)(t1.tv_sec - t0.tv_sec) + 1e-6 * (double)(t1.tv_nsec - t0.tv_nsec);
    r->fail_call = 0; /* injection covers the load only */
    r->calls = 0;
    *out = r;
    return RT_OK;
}

void rt_close(struct rt *r)
{
    if (!r)
        return;
    rt_unload(r);
    free(r);
}

void rt_get_info(const struct rt *r, struct rt_info *info)
{
    uint64_t syncs;
    *info = r->info;
    rt_cudrv_counts(&info->device_allocs, &syncs);
}

enum rt_status rt_read_buffer(struct rt *r, const char *name, uint64_t offset, void *dst, uint64_t n,
                              char *err)
{
    uint64_t size = 0;
    CUdeviceptr p = rt_buffer(r, name, &size);
    if (!p)
        return rt_fail(err, RT_ERR_ARG, "the plan has no buffer %s", name);
    if (offset > size || n > size - offset)
        return rt_fail(err, RT_ERR_ARG, "bytes [%llu, +%llu) lie outside buffer %s (%llu bytes)",
                       (unsigned long long)offset, (unsigned long long)n, name,
                       (unsigned long long)size);
    CUresult res = DRV(r, cuStreamSynchronize(r->stream));
    if (!res)
        res = DRV(r, cuMemcpyDtoH(dst, p + offset, n));
    return res ? rt_drv_fail(r, res, RT_ERR_CUDA, err, "reading a buffer") : RT_OK;
}
