/* cublas.c — dlopen() cuBLAS and bind a handle to rt's stream and workspace (cublas.h). */
#include "cublas.h"

#include <dlfcn.h>
#include <stdio.h>
#include <string.h>

static const char *const sonames[] = {
    "libcublas.so.13", "libcublas.so.12", "/usr/local/cuda/lib64/libcublas.so.13",
    "/usr/local/cuda/lib64/libcublas.so.12", "libcublas.so",
};

int rt_cublas_open(struct rt_cublas *b, CUstream stream, CUdeviceptr ws, size_t ws_bytes, char *err)
{
    memset(b, 0, sizeof *b);
    for (size_t i = 0; i < sizeof sonames / sizeof sonames[0] && !b->lib; i++)
        b->lib = dlopen(sonames[i], RTLD_NOW | RTLD_LOCAL);
    if (!b->lib) {
        snprintf(err, RT_ERR_LEN, "cuBLAS not found (libcublas.so.13 or .12): the plan's prefill "
                                  "GEMMs need it; install the CUDA toolkit's cuBLAS or add its "
                                  "folder to LD_LIBRARY_PATH");
        return -1;
    }
    struct {
        void **slot;
        const char *name;
    } syms[] = {
        {(void **)&b->create, "cublasCreate_v2"},
        {(void **)&b->destroy, "cublasDestroy_v2"},
        {(void **)&b->set_stream, "cublasSetStream_v2"},
        {(void **)&b->set_workspace, "cublasSetWorkspace_v2"},
        {(void **)&b->gemm_ex, "cublasGemmEx"},
    };
    for (size_t i = 0; i < sizeof syms / sizeof syms[0]; i++)
        if (!(*syms[i].slot = dlsym(b->lib, syms[i].name))) {
            snprintf(err, RT_ERR_LEN, "cuBLAS has no %s (too old)", syms[i].name);
            goto fail_lib;
        }
    int st = b->create(&b->h);
    if (st) {
        snprintf(err, RT_ERR_LEN, "cublasCreate failed (status %d)", st);
        goto fail_lib;
    }
    /* a workspace of our own keeps cuBLAS from allocating, also under graph capture */
    if ((st = b->set_stream(b->h, stream)) || (st = b->set_workspace(b->h, (void *)ws, ws_bytes))) {
        snprintf(err, RT_ERR_LEN, "cuBLAS stream/workspace setup failed (status %d)", st);
        goto fail_handle;
    }
    return 0;
fail_handle:
    b->destroy(b->h);
fail_lib:
    dlclose(b->lib);
    memset(b, 0, sizeof *b);
    return -1;
}

void rt_cublas_close(struct rt_cublas *b)
{
    if (b->h)
        b->destroy(b->h);
    if (b->lib)
        dlclose(b->lib);
    memset(b, 0, sizeof *b);
}
