/* common.cuh — device helpers every kernel family shares.
 *
 * All kern/ .cu files are compiled as one translation unit per arch (build/kern/all.cu
 * includes them all), so a helper defined in two families would collide: shared helpers live
 * here, and a family's private helpers carry its prefix (attn_, gdn_, moe_, ...). */
#ifndef K_COMMON_CUH
#define K_COMMON_CUH

#include <cuda_bf16.h>
#include <stdint.h>

#include "step.h"

/* bf16 <-> float, round to nearest even (what PyTorch does when it rounds to bf16) */
__device__ __forceinline__ float k_bf2f(__nv_bfloat16 x) { return __bfloat162float(x); }
__device__ __forceinline__ __nv_bfloat16 k_f2bf(float x) { return __float2bfloat16_rn(x); }
__device__ __forceinline__ float k_bfbits2f(uint16_t b) { return __uint_as_float((uint32_t)b << 16); }
/* round a float to bf16 precision and back: the value PyTorch holds after a bf16 op */
__device__ __forceinline__ float k_round_bf16(float x) { return k_bf2f(k_f2bf(x)); }

__device__ __forceinline__ float k_warp_sum(float v)
{
    for (int o = 16; o > 0; o >>= 1)
        v += __shfl_xor_sync(0xffffffffu, v, o);
    return v;
}

__device__ __forceinline__ float k_warp_max(float v)
{
    for (int o = 16; o > 0; o >>= 1)
        v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
    return v;
}

/* Sum over the block (blockDim.x a multiple of 32, at most 1024); every thread gets the sum.
 * `scratch` is 32 floats of shared memory; the call ends with a barrier, so it can be reused. */
__device__ __forceinline__ float k_block_sum(float v, float *scratch)
{
    int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nw = (blockDim.x + 31) >> 5;
    v = k_warp_sum(v);
    if (lane == 0)
        scratch[warp] = v;
    __syncthreads();
    v = lane < nw ? scratch[lane] : 0.0f;
    v = k_warp_sum(v);
    __syncthreads();
    return v;
}

__device__ __forceinline__ float k_block_max(float v, float *scratch)
{
    int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nw = (blockDim.x + 31) >> 5;
    v = k_warp_max(v);
    if (lane == 0)
        scratch[warp] = v;
    __syncthreads();
    v = lane < nw ? scratch[lane] : -INFINITY;
    v = k_warp_max(v);
    __syncthreads();
    return v;
}

__device__ __forceinline__ float k_silu(float x) { return x / (1.0f + expf(-x)); }
__device__ __forceinline__ float k_sigmoid(float x) { return 1.0f / (1.0f + expf(-x)); }

/* F.silu(conv) with both bf16 roundings of PyTorch's fallback (MODEL.md §2.2) */
__device__ __forceinline__ float k_gdn_conv_act(float acc) { return k_round_bf16(k_silu(k_round_bf16(acc))); }

/* One decode step of the GDN causal conv for one channel (MODEL.md §2.2): the K taps summed
 * in fp32 (fmaf, oldest first) over [window; x], rounded to bf16, SiLU, rounded again (the
 * two bf16 ops of PyTorch's fallback); the window (K-1 previous inputs, oldest first) slides
 * in place and takes x. The caller alone owns the channel. */
__device__ __forceinline__ float k_gdn_conv1(const __nv_bfloat16 *wc, __nv_bfloat16 *win, uint32_t K,
                                             __nv_bfloat16 x)
{
    float acc = 0.0f;
    for (uint32_t j = 0; j + 1 < K; j++) {
        __nv_bfloat16 h = win[j];
        acc = fmaf(k_bf2f(wc[j]), k_bf2f(h), acc);
        if (j > 0)
            win[j - 1] = h;
    }
    acc = fmaf(k_bf2f(wc[K - 1]), k_bf2f(x), acc);
    win[K - 2] = x;
    return k_gdn_conv_act(acc);
}

/* Programmatic dependent launch (sm_90 and newer). rt launches decode kernels so that one may
 * be scheduled before the kernel ahead of it has finished (rt/exec.c); every such kernel calls
 * this first, before it touches global memory: griddepcontrol.wait returns once the kernels
 * it depends on have completed and their writes are visible, so only the launch latency
 * overlaps. launch_dependents then lets the next kernel be scheduled as soon as every CTA of
 * this one is running. Without the launch attribute both are no-ops; older archs compile
 * nothing. */
__device__ __forceinline__ void k_pdl_enter()
{
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
    asm volatile("griddepcontrol.wait;" ::: "memory");
    asm volatile("griddepcontrol.launch_dependents;" ::: "memory");
#endif
}

/* The step state, read once per kernel. Decode kernels return at once when it is done. */
__device__ __forceinline__ const struct k_step *k_step_of(uint64_t p) { return (const struct k_step *)p; }

#endif
