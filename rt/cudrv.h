/* cudrv.h — the CUDA driver API, loaded at run time.
 *
 * rt links no CUDA library: libcuda.so.1 is opened with dlopen() when a device is first
 * needed, so a binary built here starts on a machine without a driver and says so, instead
 * of dying in the dynamic loader. cuda.h is used for its types and for the versioned names
 * (it #defines cuMemAlloc as cuMemAlloc_v2 and so on); each member below is resolved under
 * the name the header maps it to, so calls through the table reach the same entry points a
 * linked program would. */
#ifndef CUDRV_H
#define CUDRV_H

#include <cuda.h>
#include <stddef.h>
#include <stdint.h>

#define RT_ERR_LEN 256

struct rt_cudrv {
    void *lib; /* dlopen handle of libcuda.so.1 */
    CUresult (*cuInit)(unsigned int);
    CUresult (*cuDriverGetVersion)(int *);
    CUresult (*cuGetErrorName)(CUresult, const char **);
    CUresult (*cuGetErrorString)(CUresult, const char **);
    CUresult (*cuDeviceGetCount)(int *);
    CUresult (*cuDeviceGet)(CUdevice *, int);
    CUresult (*cuDeviceGetName)(char *, int, CUdevice);
    CUresult (*cuDeviceGetAttribute)(int *, CUdevice_attribute, CUdevice);
    CUresult (*cuDeviceTotalMem)(size_t *, CUdevice);
    CUresult (*cuDevicePrimaryCtxRetain)(CUcontext *, CUdevice);
    CUresult (*cuDevicePrimaryCtxRelease)(CUdevice);
    CUresult (*cuCtxSetCurrent)(CUcontext);
    CUresult (*cuCtxSynchronize)(void);
    CUresult (*cuMemGetInfo)(size_t *, size_t *);
    CUresult (*cuMemAlloc)(CUdeviceptr *, size_t);
    CUresult (*cuMemFree)(CUdeviceptr);
    CUresult (*cuMemcpyHtoD)(CUdeviceptr, const void *, size_t);
    CUresult (*cuMemcpyDtoH)(void *, CUdeviceptr, size_t);
    CUresult (*cuMemcpyDtoD)(CUdeviceptr, CUdeviceptr, size_t);
    CUresult (*cuMemcpyDtoDAsync)(CUdeviceptr, CUdeviceptr, size_t, CUstream);
    CUresult (*cuMemsetD8)(CUdeviceptr, unsigned char, size_t);
    CUresult (*cuModuleLoadData)(CUmodule *, const void *);
    CUresult (*cuModuleUnload)(CUmodule);
    CUresult (*cuModuleGetFunction)(CUfunction *, CUmodule, const char *);
    CUresult (*cuLaunchKernel)(CUfunction, unsigned int, unsigned int, unsigned int, unsigned int,
                               unsigned int, unsigned int, unsigned int, CUstream, void **, void **);
    CUresult (*cuStreamCreate)(CUstream *, unsigned int);
    CUresult (*cuStreamDestroy)(CUstream);
    CUresult (*cuStreamSynchronize)(CUstream);
    CUresult (*cuStreamQuery)(CUstream);
    CUresult (*cuEventCreate)(CUevent *, unsigned int);
    CUresult (*cuEventDestroy)(CUevent);
    CUresult (*cuEventRecord)(CUevent, CUstream);
    CUresult (*cuEventSynchronize)(CUevent);
    CUresult (*cuEventElapsedTime)(float *, CUevent, CUevent);
    CUresult (*cuEventQuery)(CUevent);
    CUresult (*cuStreamWaitEvent)(CUstream, CUevent, unsigned int);
    CUresult (*cuMemHostAlloc)(void **, size_t, unsigned int);
    CUresult (*cuMemFreeHost)(void *);
    CUresult (*cuMemHostGetDevicePointer)(CUdeviceptr *, void *, unsigned int);
    CUresult (*cuMemcpyHtoDAsync)(CUdeviceptr, const void *, size_t, CUstream);
    CUresult (*cuMemcpyDtoHAsync)(void *, CUdeviceptr, size_t, CUstream);
    CUresult (*cuMemsetD8Async)(CUdeviceptr, unsigned char, size_t, CUstream);
    CUresult (*cuFuncGetAttribute)(int *, CUfunction_attribute, CUfunction);
    CUresult (*cuFuncSetAttribute)(CUfunction, CUfunction_attribute, int);
    CUresult (*cuStreamBeginCapture)(CUstream, CUstreamCaptureMode);
    CUresult (*cuStreamEndCapture)(CUstream, CUgraph *);
    CUresult (*cuGraphInstantiate)(CUgraphExec *, CUgraph, unsigned long long);
    CUresult (*cuGraphLaunch)(CUgraphExec, CUstream);
    CUresult (*cuGraphExecDestroy)(CUgraphExec);
    CUresult (*cuGraphDestroy)(CUgraph);
    /* optional (newer drivers): NULL when absent */
    CUresult (*cuFuncGetParamInfo)(CUfunction, size_t, size_t *, size_t *);
    CUresult (*cuLaunchKernelEx)(const CUlaunchConfig *, CUfunction, void **, void **);
    CUresult (*cuModuleGetGlobal)(CUdeviceptr *, size_t *, CUmodule, const char *); /* rt_trace */
};

/* Open libcuda.so.1 and resolve every entry point. Returns 0, or -1 with a message in err
 * (RT_ERR_LEN bytes) that says whether the driver library is missing or too old. Nothing is
 * initialised on the device yet. */
int rt_cudrv_open(struct rt_cudrv *d, char *err);
void rt_cudrv_close(struct rt_cudrv *d);

/* "CUDA_ERROR_OUT_OF_MEMORY: out of memory" for a status, never NULL. */
const char *rt_cudrv_errstr(const struct rt_cudrv *d, CUresult r, char *buf, size_t n);

/* Every allocation (cuMemAlloc, cuMemHostAlloc) and every blocking synchronisation
 * (cuCtxSynchronize, cuStreamSynchronize, cuEventSynchronize) made through any table opened in
 * this process, counted by shims that sit in front of the driver's entry points. Tests use the
 * counts to prove that steady-state decoding allocates nothing and does not wait per token. */
void rt_cudrv_counts(uint64_t *allocs, uint64_t *syncs);

/* Open the driver, cuInit, and report how many devices there are (0 is not an error).
 * Used by GPU tests and tools to decide between running and "skipped: no CUDA device". */
int rt_cudrv_probe(struct rt_cudrv *d, int *ndev, char *err);

#endif
