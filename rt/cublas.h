/* cublas.h — the few cuBLAS entry points rt uses, opened at run time.
 *
 * Prefill runs its dense projections as bf16 GEMMs (plan op kind GEMM). cuBLAS is opened with
 * dlopen() like the driver, so nothing links against it and a machine without it fails at load
 * with a message only if the plan actually holds GEMM ops. Types are plain integers here: the
 * values are cuBLAS's own (cublas_api.h, library_types.h) and are fixed by its ABI. */
#ifndef RT_CUBLAS_H
#define RT_CUBLAS_H

#include <stddef.h>

#include "cudrv.h"

#define RT_CUBLAS_OP_N 0
#define RT_CUBLAS_OP_T 1
#define RT_CUDA_R_32F 0
#define RT_CUDA_R_16F 2
#define RT_CUDA_R_16BF 14
#define RT_CUBLAS_COMPUTE_32F 68
#define RT_CUBLAS_GEMM_DEFAULT (-1)

typedef void *rt_cublas_handle;

struct rt_cublas {
    void *lib;
    rt_cublas_handle h;
    int (*create)(rt_cublas_handle *);
    int (*destroy)(rt_cublas_handle);
    int (*set_stream)(rt_cublas_handle, CUstream);
    int (*set_workspace)(rt_cublas_handle, void *, size_t);
    int (*gemm_ex)(rt_cublas_handle, int, int, int, int, int, const void *, const void *, int, int,
                   const void *, int, int, const void *, void *, int, int, int, int);
};

/* Open libcublas (the soname of CUDA 13, then 12, then the toolkit folders), create a handle
 * bound to stream and to the workspace [ws, ws + ws_bytes). Returns 0 or -1 with err. */
int rt_cublas_open(struct rt_cublas *b, CUstream stream, CUdeviceptr ws, size_t ws_bytes, char *err);
void rt_cublas_close(struct rt_cublas *b);

#endif
