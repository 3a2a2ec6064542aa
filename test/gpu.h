/* gpu.h — what GPU tests share: open the device or skip, load a kernel image, check calls.
 *
 * Tests build under AddressSanitizer. The CUDA driver maps memory where ASan keeps its
 * shadow gap, so cuInit fails unless protect_shadow_gap=0, and the driver and cuBLAS keep
 * allocations for the life of the process (made while they are loaded, from code LeakSanitizer
 * cannot symbolise) that it would call leaks: both are set here, for GPU tests only, through
 * the sanitizers' default-option hooks. */
#ifndef TEST_GPU_H
#define TEST_GPU_H

#include "../rt/cudrv.h"
#include "test.h"

const char *__asan_default_options(void);
const char *__asan_default_options(void) { return "protect_shadow_gap=0"; }
const char *__lsan_default_suppressions(void);
const char *__lsan_default_suppressions(void) { return "leak:libcuda.so\nleak:libnvidia\nleak:libcublas\nleak:dlopen\n"; }

struct gpu {
    struct rt_cudrv d;
    CUdevice dev;
    CUcontext ctx;
    int sm;        /* compute capability as 10*major + minor */
    char name[128];
};

/* Die with file:line and the driver's error name when a driver call fails. */
#define CU(g, call)                                                                                \
    do {                                                                                           \
        CUresult r_ = (g)->d.call;                                                                 \
        if (r_ != CUDA_SUCCESS) {                                                                  \
            char b_[RT_ERR_LEN];                                                                   \
            printf("FAIL %s:%d: %s: %s\n", __FILE__, __LINE__, #call,                              \
                   rt_cudrv_errstr(&(g)->d, r_, b_, sizeof b_));                                   \
            exit(1);                                                                               \
        }                                                                                          \
    } while (0)

/* Open device 0 with its primary context. Returns 1 (and prints nothing) when there is no
 * driver or no device: the caller then returns test_skip("no CUDA device"). */
static inline int gpu_open(struct gpu *g)
{
    char err[RT_ERR_LEN];
    int n = 0;
    if (rt_cudrv_probe(&g->d, &n, err)) {
        printf("# %s\n", err);
        return 1;
    }
    if (n == 0) {
        printf("# the CUDA driver reports no device\n");
        rt_cudrv_close(&g->d);
        return 1;
    }
    int major = 0, minor = 0;
    CU(g, cuDeviceGet(&g->dev, 0));
    CU(g, cuDeviceGetAttribute(&major, CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR, g->dev));
    CU(g, cuDeviceGetAttribute(&minor, CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MINOR, g->dev));
    CU(g, cuDeviceGetName(g->name, sizeof g->name, g->dev));
    CU(g, cuDevicePrimaryCtxRetain(&g->ctx, g->dev));
    CU(g, cuCtxSetCurrent(g->ctx));
    g->sm = 10 * major + minor;
    printf("# device: %s (sm_%d)\n", g->name, g->sm);
    return 0;
}

static inline void gpu_close(struct gpu *g)
{
    g->d.cuDevicePrimaryCtxRelease(g->dev);
    rt_cudrv_close(&g->d);
}

/* Device buffers for tests: allocate, upload, download, poison (0xFF bytes), free; any driver
 * failure ends the test with its name. */
static inline CUdeviceptr gpu_alloc(struct gpu *g, size_t bytes)
{
    CUdeviceptr d;
    CU(g, cuMemAlloc(&d, bytes ? bytes : 1));
    return d;
}

static inline CUdeviceptr gpu_put(struct gpu *g, const void *h, size_t bytes)
{
    CUdeviceptr d = gpu_alloc(g, bytes);
    CU(g, cuMemcpyHtoD(d, h, bytes));
    return d;
}

static inline void gpu_get(struct gpu *g, void *h, CUdeviceptr d, size_t bytes) { CU(g, cuMemcpyDtoH(h, d, bytes)); }
static inline void gpu_poison(struct gpu *g, CUdeviceptr d, size_t bytes) { CU(g, cuMemsetD8(d, 0xFF, bytes)); }
static inline void gpu_free(struct gpu *g, CUdeviceptr d) { CU(g, cuMemFree(d)); }

/* Mean microseconds of reps launches of f (after one to warm up), timed with events on the
 * default stream: information for the tests' # lines, not a check. */
static inline double gpu_time_us3(struct gpu *g, CUfunction f, void *params, unsigned gx, unsigned gy,
                                  unsigned gz, unsigned block, unsigned smem, int reps)
{
    CUevent e0, e1;
    float ms = 0;
    void *args[] = {params};
    CU(g, cuEventCreate(&e0, 0));
    CU(g, cuEventCreate(&e1, 0));
    CU(g, cuLaunchKernel(f, gx, gy, gz, block, 1, 1, smem, NULL, args, NULL)); /* warm */
    CU(g, cuEventRecord(e0, NULL));
    for (int i = 0; i < reps; i++)
        CU(g, cuLaunchKernel(f, gx, gy, gz, block, 1, 1, smem, NULL, args, NULL));
    CU(g, cuEventRecord(e1, NULL));
    CU(g, cuEventSynchronize(e1));
    CU(g, cuEventElapsedTime(&ms, e0, e1));
    CU(g, cuEventDestroy(e0));
    CU(g, cuEventDestroy(e1));
    return 1000.0 * ms / reps;
}

/* One launch at a time from an idle GPU with L2 emptied of its operands, as a kernel meets
 * them inside a prefill graph (no launch overlapping the one before, weights from memory):
 * before each of reps launches, flush_bytes of flush are overwritten and the stream drained.
 * The median of the single launches' times, in us. */
static inline double gpu_time_cold(struct gpu *g, CUfunction f, void *params, unsigned gx,
                                   unsigned gy, unsigned gz, unsigned block, unsigned smem,
                                   CUdeviceptr flush, size_t flush_bytes, int reps)
{
    CUevent e0, e1;
    float t[64];
    void *args[] = {params};
    reps = reps > 64 ? 64 : reps;
    CU(g, cuEventCreate(&e0, 0));
    CU(g, cuEventCreate(&e1, 0));
    for (int i = 0; i < reps; i++) {
        CU(g, cuMemsetD8Async(flush, (unsigned char)i, flush_bytes, NULL));
        CU(g, cuCtxSynchronize());
        CU(g, cuEventRecord(e0, NULL));
        CU(g, cuLaunchKernel(f, gx, gy, gz, block, 1, 1, smem, NULL, args, NULL));
        CU(g, cuEventRecord(e1, NULL));
        CU(g, cuEventSynchronize(e1));
        CU(g, cuEventElapsedTime(&t[i], e0, e1));
    }
    CU(g, cuEventDestroy(e0));
    CU(g, cuEventDestroy(e1));
    for (int i = 1; i < reps; i++) /* insertion sort: a few dozen values */
        for (int j = i; j > 0 && t[j] < t[j - 1]; j--) {
            float x = t[j];
            t[j] = t[j - 1], t[j - 1] = x;
        }
    return 1000.0 * t[reps / 2];
}

static inline double gpu_time_us(struct gpu *g, CUfunction f, void *params, unsigned gx, unsigned gy,
                                 unsigned block, unsigned smem, int reps)
{
    return gpu_time_us3(g, f, params, gx, gy, 1, block, smem, reps);
}

/* Load the kernel image for this device: build/kern/sm_<arch>.cubin when the build has one
 * for its arch (sm_90 uses sm_90a), else the compute_90 PTX, which the driver compiles for
 * newer GPUs. The directory can be overridden with KERN_DIR. */
static inline CUmodule gpu_module(struct gpu *g)
{
    char path[512];
    const char *dir = getenv("KERN_DIR");
    FILE *f;
    snprintf(path, sizeof path, "%s/sm_%d%s.cubin", dir ? dir : "build/kern", g->sm,
             g->sm == 90 ? "a" : "");
    if (!(f = fopen(path, "rb")))
        snprintf(path, sizeof path, "%s/compute_90.ptx", dir ? dir : "build/kern");
    else
        fclose(f);
    printf("# kernel image: %s\n", path);
    char *img = test_read_file(path, NULL);
    CUmodule m;
    CU(g, cuModuleLoadData(&m, img));
    free(img);
    return m;
}

#endif
