/* cudrv.c — dlopen() the CUDA driver and resolve the entry points rt uses. See cudrv.h. */
#include "cudrv.h"

#include <dlfcn.h>
#include <stdio.h>
#include <string.h>

/* XSTR expands cuda.h's versioning macros first: "cuMemAlloc" becomes "cuMemAlloc_v2". */
#define STR(x) #x
#define XSTR(x) STR(x)
#define SYM(name) {(void **)&d->name, XSTR(name)}

/* Counting shims (see rt_cudrv_counts). The real entry points are the same in every table of
 * the process, so one static copy of each serves them all. */
static uint64_t n_alloc, n_sync;
static CUresult (*real_alloc)(CUdeviceptr *, size_t);
static CUresult (*real_host_alloc)(void **, size_t, unsigned int);
static CUresult (*real_ctx_sync)(void);
static CUresult (*real_stream_sync)(CUstream);
static CUresult (*real_event_sync)(CUevent);

static CUresult shim_alloc(CUdeviceptr *p, size_t n)
{
    __atomic_add_fetch(&n_alloc, 1, __ATOMIC_RELAXED);
    return real_alloc(p, n);
}
static CUresult shim_host_alloc(void **p, size_t n, unsigned int f)
{
    __atomic_add_fetch(&n_alloc, 1, __ATOMIC_RELAXED);
    return real_host_alloc(p, n, f);
}
static CUresult shim_ctx_sync(void)
{
    __atomic_add_fetch(&n_sync, 1, __ATOMIC_RELAXED);
    return real_ctx_sync();
}
static CUresult shim_stream_sync(CUstream s)
{
    __atomic_add_fetch(&n_sync, 1, __ATOMIC_RELAXED);
    return real_stream_sync(s);
}
static CUresult shim_event_sync(CUevent e)
{
    __atomic_add_fetch(&n_sync, 1, __ATOMIC_RELAXED);
    return real_event_sync(e);
}

void rt_cudrv_counts(uint64_t *allocs, uint64_t *syncs)
{
    *allocs = __atomic_load_n(&n_alloc, __ATOMIC_RELAXED);
    *syncs = __atomic_load_n(&n_sync, __ATOMIC_RELAXED);
}

static void install_shims(struct rt_cudrv *d)
{
    real_alloc = d->cuMemAlloc, d->cuMemAlloc = shim_alloc;
    real_host_alloc = d->cuMemHostAlloc, d->cuMemHostAlloc = shim_host_alloc;
    real_ctx_sync = d->cuCtxSynchronize, d->cuCtxSynchronize = shim_ctx_sync;
    real_stream_sync = d->cuStreamSynchronize, d->cuStreamSynchronize = shim_stream_sync;
    real_event_sync = d->cuEventSynchronize, d->cuEventSynchronize = shim_event_sync;
}

int rt_cudrv_open(struct rt_cudrv *d, char *err)
{
    memset(d, 0, sizeof *d);
    d->lib = dlopen("libcuda.so.1", RTLD_NOW | RTLD_LOCAL);
    if (!d->lib) {
        snprintf(err, RT_ERR_LEN, "no CUDA driver: cannot load libcuda.so.1 (%s)", dlerror());
        return -1;
    }
    struct {
        void **slot;
        const char *name;
    } syms[] = {
        SYM(cuInit), SYM(cuDriverGetVersion), SYM(cuGetErrorName), SYM(cuGetErrorString),
        SYM(cuDeviceGetCount), SYM(cuDeviceGet), SYM(cuDeviceGetName), SYM(cuDeviceGetAttribute),
        SYM(cuDeviceTotalMem), SYM(cuDevicePrimaryCtxRetain), SYM(cuDevicePrimaryCtxRelease),
        SYM(cuCtxSetCurrent), SYM(cuCtxSynchronize), SYM(cuMemGetInfo), SYM(cuMemAlloc),
        SYM(cuMemFree), SYM(cuMemcpyHtoD), SYM(cuMemcpyDtoH), SYM(cuMemcpyDtoD),
        SYM(cuMemcpyDtoDAsync), SYM(cuMemsetD8), SYM(cuModuleLoadData), SYM(cuModuleUnload),
        SYM(cuModuleGetFunction), SYM(cuLaunchKernel), SYM(cuStreamCreate), SYM(cuStreamDestroy),
        SYM(cuStreamSynchronize), SYM(cuStreamQuery), SYM(cuEventCreate), SYM(cuEventDestroy), SYM(cuEventRecord),
        SYM(cuEventSynchronize), SYM(cuEventElapsedTime), SYM(cuEventQuery),
        SYM(cuStreamWaitEvent), SYM(cuMemHostAlloc),
        SYM(cuMemFreeHost), SYM(cuMemHostGetDevicePointer), SYM(cuMemcpyHtoDAsync),
        SYM(cuMemcpyDtoHAsync), SYM(cuMemsetD8Async), SYM(cuFuncGetAttribute),
        SYM(cuFuncSetAttribute), SYM(cuStreamBeginCapture), SYM(cuStreamEndCapture),
        SYM(cuGraphInstantiate), SYM(cuGraphLaunch), SYM(cuGraphExecDestroy), SYM(cuGraphDestroy),
    };
    for (size_t i = 0; i < sizeof syms / sizeof syms[0]; i++) {
        *syms[i].slot = dlsym(d->lib, syms[i].name);
        if (!*syms[i].slot) {
            snprintf(err, RT_ERR_LEN,
                     "CUDA driver too old: libcuda.so.1 has no %s (a driver for CUDA 12 or "
                     "newer is required)",
                     syms[i].name);
            rt_cudrv_close(d);
            return -1;
        }
    }
    d->cuFuncGetParamInfo = (CUresult(*)(CUfunction, size_t, size_t *, size_t *))dlsym(
        d->lib, "cuFuncGetParamInfo");
    d->cuLaunchKernelEx = (CUresult(*)(const CUlaunchConfig *, CUfunction, void **, void **))dlsym(
        d->lib, "cuLaunchKernelEx");
    d->cuModuleGetGlobal = (CUresult(*)(CUdeviceptr *, size_t *, CUmodule, const char *))dlsym(
        d->lib, XSTR(cuModuleGetGlobal));
    install_shims(d);
    return 0;
}

void rt_cudrv_close(struct rt_cudrv *d)
{
    if (d->lib)
        dlclose(d->lib);
    memset(d, 0, sizeof *d);
}

const char *rt_cudrv_errstr(const struct rt_cudrv *d, CUresult r, char *buf, size_t n)
{
    const char *name = NULL, *text = NULL;
    if (d->cuGetErrorName)
        d->cuGetErrorName(r, &name);
    if (d->cuGetErrorString)
        d->cuGetErrorString(r, &text);
    snprintf(buf, n, "%s: %s", name ? name : "CUDA_ERROR_UNKNOWN", text ? text : "unknown error");
    return buf;
}

int rt_cudrv_probe(struct rt_cudrv *d, int *ndev, char *err)
{
    char why[RT_ERR_LEN];
    *ndev = 0;
    if (rt_cudrv_open(d, err))
        return -1;
    CUresult r = d->cuInit(0);
    if (r == CUDA_ERROR_NO_DEVICE)
        return 0;
    if (r != CUDA_SUCCESS) {
        snprintf(err, RT_ERR_LEN, "cuInit failed: %s", rt_cudrv_errstr(d, r, why, sizeof why));
        rt_cudrv_close(d);
        return -1;
    }
    r = d->cuDeviceGetCount(ndev);
    if (r != CUDA_SUCCESS) {
        snprintf(err, RT_ERR_LEN, "cuDeviceGetCount failed: %s",
                 rt_cudrv_errstr(d, r, why, sizeof why));
        rt_cudrv_close(d);
        return -1;
    }
    return 0;
}
