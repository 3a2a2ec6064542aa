/* readpat.cu — the DRAM read rate of the expert GEMMs' access pattern, against contiguous reads.
 *
 * A CTA of 128 threads reads a 128 KiB tile: 128 rows of 1 KiB (an INT4 expert row of 2048
 * inputs), 32 bytes of each row a stage (64 inputs), as the expert up GEMM's copies do; or the
 * same tile with each stage's 4 KiB contiguous (a layout whose 64-input chunks are stored row
 * after row). Loads into registers (D stages in flight) or cp.async into shared memory (S
 * stages, one barrier a stage), 4 CTAs an SM, 256 MiB a launch from a 1 GiB buffer.
 *
 *   nvcc -std=c++17 -O3 -arch=sm_90a -o build/readpat tools/readpat.cu && build/readpat
 *
 * A measurement tool, not part of make: it uses the CUDA runtime API. */
#include <cstdint>
#include <cstdio>
#include <cuda_runtime.h>
#define CK(x)                                                                                      \
    do {                                                                                           \
        cudaError_t e = (x);                                                                       \
        if (e != cudaSuccess) {                                                                    \
            printf("%s:%d %s\n", __FILE__, __LINE__, cudaGetErrorString(e));                       \
            return 1;                                                                              \
        }                                                                                          \
    } while (0)

__global__ void fill(uint4 *p, size_t n)
{
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n;
         i += (size_t)gridDim.x * blockDim.x) {
        uint32_t h = (uint32_t)i * 2654435761u ^ 0x9e3779b9u;
        p[i] = make_uint4(h, h * 3u + 1, h ^ 0x55aa55aau, h + 7u);
    }
}
__device__ __forceinline__ uint4 ldnc(const void *p)
{
    uint4 v;
    asm volatile("ld.global.nc.L2::128B.v4.u32 {%0,%1,%2,%3}, [%4];"
                 : "=r"(v.x), "=r"(v.y), "=r"(v.z), "=r"(v.w)
                 : "l"(p));
    return v;
}
// address of 16-byte copy j (0,1) of thread t at stage s inside a 128 KiB tile
template <int CONTIG> __device__ __forceinline__ uint32_t off(int t, int j, int s)
{
    int row = t / 2 + 64 * j, u = t % 2;
    return CONTIG ? (uint32_t)(s * 4096 + row * 32 + u * 16)
                  : (uint32_t)(row * 1024 + s * 32 + u * 16);
}
// registers, D stages of loads in flight
template <int CONTIG, int D>
__global__ void __launch_bounds__(128, 4) k_reg(const char *base, uint32_t *sink)
{
    const char *tile = base + (size_t)blockIdx.x * 131072;
    uint32_t acc = 0;
    for (int s0 = 0; s0 < 32; s0 += D) {
        uint4 v[D][2];
#pragma unroll
        for (int d = 0; d < D; d++)
#pragma unroll
            for (int j = 0; j < 2; j++)
                v[d][j] = ldnc(tile + off<CONTIG>(threadIdx.x, j, s0 + d));
#pragma unroll
        for (int d = 0; d < D; d++)
#pragma unroll
            for (int j = 0; j < 2; j++)
                acc ^= v[d][j].x + v[d][j].y + v[d][j].z + v[d][j].w;
    }
    if (acc == 0x12345678u)
        sink[0] = acc;
}
// cp.async pipeline, S stages, one barrier a stage (the expert GEMM's copy pattern, no math)
template <int CONTIG, int S>
__global__ void __launch_bounds__(128, 4) k_cp(const char *base, uint32_t *sink)
{
    __shared__ __align__(16) char sm[S][4096];
    const char *tile = base + (size_t)blockIdx.x * 131072;
    int t = threadIdx.x;
    auto issue = [&](int s) {
        for (int j = 0; j < 2; j++) {
            uint32_t d = (uint32_t)__cvta_generic_to_shared(
                &sm[s % S][(t / 2 + 64 * j) * 32 + (t % 2) * 16]);
            asm volatile("cp.async.cg.shared.global.L2::128B [%0], [%1], 16;" ::"r"(d),
                         "l"(tile + off<CONTIG>(t, j, s)));
        }
        asm volatile("cp.async.commit_group;");
    };
    uint32_t acc = 0;
    for (int s = 0; s < S - 1; s++)
        issue(s);
    for (int s = 0; s < 32; s++) {
        asm volatile("cp.async.wait_group %0;" ::"n"(S - 2));
        __syncthreads();
        acc ^= *(const uint32_t *)&sm[s % S][(t * 32) % 4096];
        if (s + S - 1 < 32)
            issue(s + S - 1);
        else
            asm volatile("cp.async.commit_group;");
    }
    if (acc == 0x12345678u)
        sink[0] = acc;
}

int main()
{
    const size_t total = 1ull << 30, tiles = 2048, bytes = tiles * 131072;
    char *buf;
    uint32_t *sink;
    CK(cudaMalloc(&buf, total));
    CK(cudaMalloc(&sink, 4));
    fill<<<1024, 256>>>((uint4 *)buf, total / 16);
    CK(cudaDeviceSynchronize());
    cudaEvent_t a, b;
    CK(cudaEventCreate(&a));
    CK(cudaEventCreate(&b));
    const int reps = 24;
    float ms;
    char *dst;
    CK(cudaMalloc(&dst, bytes));
    for (int w = 0; w < 2; w++) {
        CK(cudaEventRecord(a));
        for (int r = 0; r < reps; r++)
            CK(cudaMemcpyAsync(dst, buf + (r % 3) * bytes, bytes, cudaMemcpyDeviceToDevice));
        CK(cudaEventRecord(b));
        CK(cudaEventSynchronize(b));
        CK(cudaEventElapsedTime(&ms, a, b));
    }
    double copy = 2.0 * bytes * reps / (ms * 1e-3) / 1e9;
    printf("%-28s %8.1f GB/s (read+write)\n", "cudaMemcpy D2D", copy);
#define RUN(name, K)                                                                               \
    do {                                                                                           \
        for (int w = 0; w < 2; w++) {                                                              \
            CK(cudaEventRecord(a));                                                                \
            for (int r = 0; r < reps; r++)                                                         \
                K<<<tiles, 128>>>(buf + (r % 4) * bytes, sink);                                    \
            CK(cudaGetLastError());                                                                \
            CK(cudaEventRecord(b));                                                                \
            CK(cudaEventSynchronize(b));                                                           \
            CK(cudaEventElapsedTime(&ms, a, b));                                                   \
        }                                                                                          \
        double g = (double)bytes * reps / (ms * 1e-3) / 1e9;                                       \
        printf("%-28s %8.1f GB/s read  %5.1f%% of copy  %6.1f us/256MiB\n", name, g,               \
               100 * g / copy, ms * 1e3 / reps);                                                   \
    } while (0)
    RUN("reg rows D4", (k_reg<0, 4>));
    RUN("reg contig D4", (k_reg<1, 4>));
    RUN("reg rows D8", (k_reg<0, 8>));
    RUN("reg contig D8", (k_reg<1, 8>));
    RUN("cp rows S4", (k_cp<0, 4>));
    RUN("cp contig S4", (k_cp<1, 4>));
    RUN("cp rows S8", (k_cp<0, 8>));
    RUN("cp contig S8", (k_cp<1, 8>));
    return 0;
}
