/* racecheck-named-barrier.cu — a minimal kernel for the compute-sanitizer racecheck report that
 * kern/gdn_chunk_tc.cu works around: warps 0-3 sync among themselves with a named barrier
 * (bar.sync 1, 128) while warps 4-7 do other work, then all 256 threads meet at
 * __syncthreads() and read what the other group wrote. The values are checked on the device
 * (a count of wrong reads); racecheck, on some runs, still reports hazards between the writes
 * before that __syncthreads() and the reads after it. Variant 4 uses an mbarrier instead and
 * has not been flagged. Not part of the build; on the GPU machine:
 *   nvcc -arch=sm_90a -lineinfo tools/racecheck-named-barrier.cu -o /tmp/nb
 *   /tmp/nb 20000                                   # every variant: 0 bad reads
 *   compute-sanitizer --tool racecheck /tmp/nb 1   # repeat: variants 0-3 get flagged, 4 not */
#include <cstdint>
#include <cstdlib>
#include <cstdio>
static __device__ __forceinline__ void mbar_wait(uint64_t *mb)
{
    uint32_t a = (uint32_t)__cvta_generic_to_shared(mb);
    uint64_t st;
    asm volatile("mbarrier.arrive.shared::cta.b64 %0, [%1];\n" : "=l"(st) : "r"(a) : "memory");
    asm volatile("{\n.reg .pred p;\nW%=: mbarrier.try_wait.shared::cta.b64 p, [%0], %1;\n@!p bra W%=;\n}\n" ::"r"(a), "l"(st) : "memory");
}
__shared__ uint64_t g_mb;
template <int V> __device__ __forceinline__ void nbar(int id, int n)
{
    if (V == 4) mbar_wait(&g_mb);
    if (V == 0) asm volatile("bar.sync %0, %1;\n" ::"r"(id), "r"(n) : "memory");
    if (V == 1) asm volatile("barrier.sync %0, %1;\n" ::"r"(id), "r"(n) : "memory");
    if (V == 2) asm volatile("barrier.sync.aligned %0, %1;\n" ::"r"(id), "r"(n) : "memory");
    if (V == 3) asm volatile("bar.sync 1, 128;\n" ::: "memory");
}
template <int V> __global__ void k(float *out, unsigned *bad)
{
    __shared__ float a[256], b[256];
    const int tid = threadIdx.x, warp = tid >> 5;
    if (V == 4) {
        if (tid == 0)
            asm volatile("mbarrier.init.shared::cta.b64 [%0], 128;\n" ::"r"((uint32_t)__cvta_generic_to_shared(&g_mb)));
        __syncthreads();
    }
    for (int it = 0; it < 50; it++) {
        if (warp < 4) {
            b[tid] = tid + it;
            nbar<V>(1, 128);
            float x = b[127 - tid];
            nbar<V>(1, 128);
            b[tid] = x + blockIdx.x;   /* = 127 - tid + it + block */
        } else {
            a[tid] = tid * 2 + it;
        }
        __syncthreads();
        int j = (tid * 7) & 127;
        float s = b[j] + a[128 + ((tid * 5) & 127)];
        if (b[j] != (float)(127 - j + it + blockIdx.x)) atomicAdd(bad, 1);
        __syncthreads();
        if (tid < 128) b[tid] = s;
        out[tid] += s;
        __syncthreads();
    }
}
template <int V> void run(float *o, unsigned *bad, int blocks)
{
    cudaMemset(bad, 0, 4);
    k<V><<<blocks, 256>>>(o, bad);
    cudaError_t e = cudaDeviceSynchronize();
    unsigned h = 0; cudaMemcpy(&h, bad, 4, cudaMemcpyDeviceToHost);
    printf("variant %d blocks %d: %s, %u bad reads\n", V, blocks, cudaGetErrorString(e), h);
}
int main(int argc, char **argv)
{
    int blocks = argc > 1 ? atoi(argv[1]) : 1;
    float *o; unsigned *bad; cudaMalloc(&o, 1024); cudaMemset(o, 0, 1024); cudaMalloc(&bad, 4);
    run<0>(o, bad, blocks); run<1>(o, bad, blocks); run<2>(o, bad, blocks); run<3>(o, bad, blocks); run<4>(o, bad, blocks);
    return 0;
}
