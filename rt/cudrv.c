/* cudrv.c — dlopen() the CUDA driver and resolve the entry points rt uses. See cudrv.h. */
#include "cudrv.h"

#include <dlfcn.h>
#include <stdio.h>
#include <string.h>

/* XSTR expands cuda.h's versioning macros first: "cuMemAlloc" becomes "cuMemAlloc_v2". */
#define STR(x) #x
#define XSTR(x) STR(x)
#define SYM(name) {(void **)&d->name, XSTR(name)}

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
        SYM(cuStreamSynchronize), SYM(cuEventCreate), SYM(cuEventDestroy), SYM(cuEventRecord),
        SYM(cuEventSynchronize), SYM(cuEventElapsedTime), SYM(cuEventQuery), SYM(cuMemHostAlloc),
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
