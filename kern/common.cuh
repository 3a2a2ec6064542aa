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

/* ---- INT4 group-128 rows on tensor cores (decode GEMV and MoE vec-mat) --------------------- */

/* 16 bytes read once per launch, kept out of L1 (weights); LINE: L2 fetches the whole
 * 128-byte line (the rest of it is read soon after) */
template <bool LINE = false> __device__ __forceinline__ uint4 k_ld_stream(const void *p)
{
    uint4 v;
    if constexpr (LINE)
        asm("ld.global.nc.L1::no_allocate.L2::128B.v4.u32 {%0, %1, %2, %3}, [%4];"
            : "=r"(v.x), "=r"(v.y), "=r"(v.z), "=r"(v.w)
            : "l"(p));
    else
        asm("ld.global.nc.L1::no_allocate.v4.u32 {%0, %1, %2, %3}, [%4];"
            : "=r"(v.x), "=r"(v.y), "=r"(v.z), "=r"(v.w)
            : "l"(p));
    return v;
}

/* 16 bytes from global to shared memory, asynchronously (cp.async, sm_80), bypassing L1;
 * complete once the thread's wait for its group (or k_cp_wait_all) returns. With full ==
 * false the copy writes zeros and reads nothing (sa: the destination's shared address). */
__device__ __forceinline__ void k_cp16s(uint32_t sa, const void *src, bool full)
{
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(sa), "l"(src),
                 "r"(full ? 16 : 0));
}
__device__ __forceinline__ void k_cp16(void *dst, const void *src, bool full)
{
    k_cp16s((uint32_t)__cvta_generic_to_shared(dst), src, full);
}
__device__ __forceinline__ void k_cp16(void *dst, const void *src)
{
    const uint32_t sa = (uint32_t)__cvta_generic_to_shared(dst);
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16;\n" ::"r"(sa), "l"(src) : "memory");
}
__device__ __forceinline__ void k_cp_commit()
{
    asm volatile("cp.async.commit_group;\n" ::);
}
/* 16 bytes from shared address a (16-byte aligned) */
__device__ __forceinline__ uint4 k_lds16(uint32_t a)
{
    uint4 v;
    asm volatile("ld.shared.v4.u32 {%0, %1, %2, %3}, [%4];\n"
                 : "=r"(v.x), "=r"(v.y), "=r"(v.z), "=r"(v.w)
                 : "r"(a));
    return v;
}
__device__ __forceinline__ void k_cp_wait_all()
{
    asm volatile("cp.async.wait_all;\n" ::: "memory");
}

/* a u32 another CTA of the running grid releases (its writes before it, __threadfence, are
 * visible after this load returns the value they preceded) */
__device__ __forceinline__ uint32_t k_ld_acquire(const uint32_t *p)
{
    uint32_t v;
    asm volatile("ld.acquire.gpu.global.u32 %0, [%1];" : "=r"(v) : "l"(p) : "memory");
    return v;
}

/* d += A B, m16n8k16, bf16 inputs, fp32 accumulators (PTX ISA fragments: lane = 4 g + t holds
 * A rows g, g + 8 at k slots 2t, 2t + 1 (a0 row g, a1 row g + 8) and 2t + 8, 2t + 9 (a2, a3);
 * B k slots 2t, 2t + 1 (b0) and 2t + 8, 2t + 9 (b1) of column g; D rows g (d0, d1) and g + 8
 * (d2, d3), columns 2t, 2t + 1). */
__device__ __forceinline__ void k_mma16816(float (&d)[4], uint32_t a0, uint32_t a1, uint32_t a2,
                                           uint32_t a3, uint32_t b0, uint32_t b1)
{
    asm volatile("mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0, %1, %2, %3}, "
                 "{%4, %5, %6, %7}, {%8, %9}, {%0, %1, %2, %3};"
                 : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
                 : "r"(a0), "r"(a1), "r"(a2), "r"(a3), "r"(b0), "r"(b1));
}

/* ---- wgmma (sm_90a images only) ------------------------------------------------------------ */

#if defined(__CUDA_ARCH_FEAT_SM90_ALL)
#define K_WG 1
#else
#define K_WG 0
#endif

#if K_WG
__device__ __forceinline__ void k_wg_fence() { asm volatile("wgmma.fence.sync.aligned;\n" ::: "memory"); }
__device__ __forceinline__ void k_wg_commit() { asm volatile("wgmma.commit_group.sync.aligned;\n" ::: "memory"); }
/* until at most N of this warpgroup's commit groups are pending */
template <int N> __device__ __forceinline__ void k_wg_wait()
{
    asm volatile("wgmma.wait_group.sync.aligned %0;\n" ::"n"(N) : "memory");
}
/* Keeps the compiler from moving a register's reads or writes across the wgmma fences and
 * waits (fp32 accumulators or bf16x2 operand words). */
__device__ __forceinline__ void k_wg_pin1(float &v) { asm volatile("" : "+f"(v)::"memory"); }
__device__ __forceinline__ void k_wg_pin1(uint32_t &v) { asm volatile("" : "+r"(v)::"memory"); }
template <typename T, int A, int B>
__device__ __forceinline__ void k_wg_pin(T (&d)[A][B])
{
#pragma unroll
    for (int i = 0; i < A; i++)
#pragma unroll
        for (int j = 0; j < B; j++)
            k_wg_pin1(d[i][j]);
}
template <typename T, int A, int B, int C>
__device__ __forceinline__ void k_wg_pin(T (&d)[A][B][C])
{
#pragma unroll
    for (int i = 0; i < A; i++)
        k_wg_pin(d[i]);
}

/* The descriptor of a bf16 operand in the 128-byte swizzle: rows of 128 bytes whose 16-byte
 * unit u sits at u ^ (row % 8), 8-row groups 1024 bytes apart (the stride offset) from a
 * 1024-byte boundary; a is the shared address of the first row of the slice (plus 32 bytes per
 * k16 step for a K-major operand). lbo: for a K-major operand unused (16); for an MN-major one
 * the distance between its 64-element column blocks. */
__device__ __forceinline__ uint64_t k_wg_desc(uint32_t a, uint32_t lbo)
{
    return (uint64_t)((a & 0x3FFFFu) >> 4) | (uint64_t)(lbo >> 4) << 16 | (uint64_t)(1024 >> 4) << 32 |
           (uint64_t)1 << 62;
}
#endif

/* Pair i (elements 2i, 2i + 1: nibbles i and i + 4, kern/quant.h) of a nibble word as bf16x2
 * q - 8, exact: OR-ing 0x4300 makes the bf16 128 + q, and 136 is subtracted in bf16x2. */
__device__ __forceinline__ uint32_t k_i4_bf16x2(uint32_t w, int i)
{
    uint32_t v = ((w >> (4 * i)) & 0x000F000Fu) | 0x43004300u, c = 0x43084308u; /* 136, 136 */
    __nv_bfloat162 r = __hsub2(*reinterpret_cast<__nv_bfloat162 *>(&v),
                               *reinterpret_cast<__nv_bfloat162 *>(&c));
    return *reinterpret_cast<uint32_t *>(&r);
}

/* The same pair in two instructions (tensor-core paths): (w >> 4p) & 0x000F000F | bf16 128 in
 * one lop3 is 128 + q, then x * 1 - 136 in one bf16x2 FMA (exact: small integers). */
__device__ __forceinline__ uint32_t k_i4_bf2(uint32_t w, int p)
{
    uint32_t v, r;
    asm("lop3.b32 %0, %1, %2, %3, 0xEA;\n"
        : "=r"(v)
        : "r"(w >> (4 * p)), "n"(0x000F000F), "r"(0x43004300u));
    asm("fma.rn.bf16x2 %0, %1, %2, %3;\n" : "=r"(r) : "r"(v), "r"(0x3F803F80u), "r"(0xC308C308u));
    return r;
}

/* One 128-input group of 16 INT4 rows against x, d (zeroed by the caller) += the group's
 * unscaled sums. The K order inside the MMAs is free as long as A and B agree: lane (g, t)
 * brings 16 bytes of rows g (qa) and g + 8 (qb) covering inputs [32 t, 32 t + 32) of the group,
 * and its 16 nibble pairs p (word p / 4, pair p % 4: inputs 32 t + 2 p, + 1) feed MMA p / 2 at
 * k slot 2t (p even) or 2t + 8 (p odd); B takes x at the same inputs, x32 = the group's x +
 * 32 t (16-byte aligned, shared memory). Every column of B holds the same x, so column 0 of D
 * (d0, d2 of lanes t = 0) has rows g and g + 8. */
__device__ __forceinline__ void k_i4_g128_mma(float (&d)[4], uint4 qa, uint4 qb, const uint16_t *x32)
{
    const uint4 *xv = (const uint4 *)x32;
    const uint4 x0 = xv[0], x1 = xv[1], x2 = xv[2], x3 = xv[3];
    const uint32_t xw[16] = {x0.x, x0.y, x0.z, x0.w, x1.x, x1.y, x1.z, x1.w,
                             x2.x, x2.y, x2.z, x2.w, x3.x, x3.y, x3.z, x3.w};
    const uint32_t wa[4] = {qa.x, qa.y, qa.z, qa.w}, wb[4] = {qb.x, qb.y, qb.z, qb.w};
#pragma unroll
    for (int m = 0; m < 8; m++) {
        const int w = m / 2, i0 = (2 * m) % 4, i1 = (2 * m + 1) % 4;
        k_mma16816(d, k_i4_bf16x2(wa[w], i0), k_i4_bf16x2(wb[w], i0), k_i4_bf16x2(wa[w], i1),
                   k_i4_bf16x2(wb[w], i1), xw[2 * m], xw[2 * m + 1]);
    }
}

#define K_G128_WARPS 4 /* warps of a k_g128_run CTA, splitting the groups (the default W) */
#define K_G128_ROUND 4 /* groups a warp has in flight per row pair */

/* Rows a, b of a CTA's 16-row tile for lane (g, t): weights from the lane's 16 bytes of each
 * group, scales per group (INT4 group-128 GEMV and MoE vec-mat). */
struct k_g128_pair {
    const uint8_t *wa, *wb;
    const uint16_t *sa, *sb;
};

/* Warp `warp`'s share (groups warp, warp + W, ...) of a row pair against xs (shared memory,
 * nch groups); lanes t = 0 get the scaled sums of rows a and b. The first round of loads is
 * issued by the caller's k_g128_load before it stages xs. */
struct k_g128_acc {
    uint4 qa[K_G128_ROUND], qb[K_G128_ROUND];
    float sa[K_G128_ROUND], sb[K_G128_ROUND];
    float a, b;
};

template <int W = K_G128_WARPS>
__device__ __forceinline__ void k_g128_load(struct k_g128_acc &A, const struct k_g128_pair &r,
                                              uint32_t c0, uint32_t nch)
{
#pragma unroll
    for (int i = 0; i < K_G128_ROUND; i++) {
        const uint32_t c = c0 + W * i;
        A.qa[i] = A.qb[i] = make_uint4(0, 0, 0, 0), A.sa[i] = A.sb[i] = 0.0f;
        if (c < nch) {
            A.qa[i] = k_ld_stream(r.wa + 64ull * c), A.qb[i] = k_ld_stream(r.wb + 64ull * c);
            A.sa[i] = k_bfbits2f(__ldg(r.sa + c)), A.sb[i] = k_bfbits2f(__ldg(r.sb + c));
        }
    }
}

template <int W = K_G128_WARPS>
__device__ __forceinline__ void k_g128_run(struct k_g128_acc &A, const struct k_g128_pair &r,
                                             const uint16_t *xs, uint32_t nch, uint32_t warp, uint32_t t)
{
    A.a = A.b = 0.0f;
    for (uint32_t c0 = warp; c0 < nch; c0 += W * K_G128_ROUND) {
        if (c0 != warp)
            k_g128_load<W>(A, r, c0, nch);
#pragma unroll
        for (int i = 0; i < K_G128_ROUND; i++) {
            const uint32_t c = c0 + W * i;
            if (c >= nch)
                break;
            float d[4] = {0.0f, 0.0f, 0.0f, 0.0f};
            k_i4_g128_mma(d, A.qa[i], A.qb[i], xs + 128 * c + 32 * t);
            A.a = fmaf(A.sa[i], d[0], A.a), A.b = fmaf(A.sb[i], d[2], A.b);
        }
    }
}

/* ---- residual add + RMSNorm on 16-byte slices (k_rmsnorm, and the kernels that fold it in) -- */

__device__ __forceinline__ uint32_t k_word(const uint4 &v, int i)
{
    return i == 0 ? v.x : i == 1 ? v.y : i == 2 ? v.z : v.w;
}

/* two floats rounded to bf16 and packed, a in the low half */
__device__ __forceinline__ uint32_t k_pack_bf16x2(float a, float b)
{
    return (uint32_t)__bfloat16_as_ushort(k_f2bf(a)) | ((uint32_t)__bfloat16_as_ushort(k_f2bf(b)) << 16);
}

/* x + a on 8 bf16 values, each sum rounded to bf16 (torch: x + a on bf16 tensors) */
__device__ __forceinline__ uint4 k_add8(uint4 x, uint4 a)
{
    uint32_t r[4];
#pragma unroll
    for (int i = 0; i < 4; i++) {
        uint32_t u = k_word(x, i), v = k_word(a, i);
        r[i] = k_pack_bf16x2(k_bfbits2f(u & 0xFFFF) + k_bfbits2f(v & 0xFFFF),
                             k_bfbits2f(u >> 16) + k_bfbits2f(v >> 16));
    }
    return make_uint4(r[0], r[1], r[2], r[3]);
}

__device__ __forceinline__ float k_sumsq8(uint4 x, float s)
{
#pragma unroll
    for (int i = 0; i < 4; i++) {
        const float lo = k_bfbits2f(k_word(x, i) & 0xFFFF), hi = k_bfbits2f(k_word(x, i) >> 16);
        s = fmaf(lo, lo, s);
        s = fmaf(hi, hi, s);
    }
    return s;
}

/* bf16((x * r) * (1 + w)) on 8 values: Qwen3NextRMSNorm's order, in fp32 */
__device__ __forceinline__ uint4 k_norm8(uint4 x, uint4 w, float r)
{
    uint32_t o[4];
#pragma unroll
    for (int i = 0; i < 4; i++) {
        uint32_t u = k_word(x, i), v = k_word(w, i);
        o[i] = k_pack_bf16x2(k_bfbits2f(u & 0xFFFF) * r * (1.0f + k_bfbits2f(v & 0xFFFF)),
                             k_bfbits2f(u >> 16) * r * (1.0f + k_bfbits2f(v >> 16)));
    }
    return make_uint4(o[0], o[1], o[2], o[3]);
}

/* xs (shared, H bf16) = k_rmsnorm of one row folded into its consumer: bf16(x + add) (add may
 * be NULL), then bf16(v * rsqrt(mean(v^2) + eps) * (1 + w)); H a multiple of 8. The whole block
 * calls it (barriers inside; xs is ready on return). The sum of squares runs in this block's
 * order: within fp32 rounding of k_rmsnorm's, not always the same bits. */
__device__ __forceinline__ void k_norm_stage(uint16_t *xs, const uint16_t *x, const uint16_t *add,
                                             const uint16_t *w, float eps, uint32_t H, float *scratch)
{
    float ss = 0.0f;
    for (uint32_t k = threadIdx.x * 8; k < H; k += blockDim.x * 8) {
        uint4 v = __ldg((const uint4 *)(x + k));
        if (add)
            v = k_add8(v, __ldg((const uint4 *)(add + k)));
        *(uint4 *)(xs + k) = v;
        ss = k_sumsq8(v, ss);
    }
    ss = k_block_sum(ss, scratch);
    const float r = rsqrtf(ss / (float)H + eps); /* torch.rsqrt(x.pow(2).mean(-1) + eps) */
    for (uint32_t k = threadIdx.x * 8; k < H; k += blockDim.x * 8) /* the thread's own slices */
        *(uint4 *)(xs + k) = k_norm8(*(const uint4 *)(xs + k), __ldg((const uint4 *)(w + k)), r);
    __syncthreads();
}

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

#ifdef KERN_TRACE
/* Timeline records, in images built with KERN_TRACE=1 (make) only: thread 0 of every CTA that
 * calls k_pdl_enter appends one record, read back by rt_trace (rt/diag.c): the launch it belongs
 * to (%gridid), the global timer (ns) as the CTA started (kernels that begin with
 * K_TRACE_BEGIN), as it reached the wait and as the wait returned, and where it ran; kernels
 * that call K_TRACE_END append a second record with their end and the K_TRACE_MARK point. */
struct k_trace_rec {
    unsigned long long grid, t_start, t_enter, t_go, t_mark, t_end; /* 0: not stamped */
    unsigned int sm, cta;
};
static_assert(sizeof(struct k_trace_rec) == 56, "rt/rt_impl.h struct rt_trace_rec reads these records");
#define K_TRACE_MAX (1u << 20)
__device__ struct k_trace_rec k_trace_buf[K_TRACE_MAX];
__device__ unsigned int k_trace_n;

__device__ __forceinline__ void k_trace_put(const struct k_trace_rec &r)
{
    const unsigned int i = atomicAdd(&k_trace_n, 1u);
    if (i < K_TRACE_MAX)
        k_trace_buf[i] = r;
}

__device__ __forceinline__ unsigned long long k_trace_clock()
{
    unsigned long long t;
    asm volatile("mov.u64 %0, %%globaltimer;" : "=l"(t));
    return t;
}

/* The CTA's start, for kernels that mark it with K_TRACE_BEGIN() as their first statement:
 * kept with the launch and CTA it belongs to, so a value left in shared memory by another CTA
 * is not taken for this one's. */
struct k_trace_start {
    unsigned long long t, grid, mark;
    unsigned int cta;
};
__device__ __forceinline__ struct k_trace_start &k_trace_start_of()
{
    __shared__ struct k_trace_start s;
    return s;
}
__device__ __forceinline__ unsigned long long k_trace_grid()
{
    unsigned long long g;
    asm volatile("mov.u64 %0, %%gridid;" : "=l"(g));
    return g;
}
__device__ __forceinline__ unsigned int k_trace_cta()
{
    return blockIdx.x + gridDim.x * (blockIdx.y + gridDim.y * blockIdx.z);
}
#define K_TRACE_BEGIN()                                                                            \
    do {                                                                                           \
        if (threadIdx.x == 0 && threadIdx.y == 0 && threadIdx.z == 0)                              \
            k_trace_start_of() = {k_trace_clock(), k_trace_grid(), 0, k_trace_cta()};              \
    } while (0)
/* a point of interest after the wait (thread 0, after K_TRACE_BEGIN) */
#define K_TRACE_MARK()                                                                             \
    do {                                                                                           \
        if (threadIdx.x == 0 && threadIdx.y == 0 && threadIdx.z == 0)                              \
            k_trace_start_of().mark = k_trace_clock();                                             \
    } while (0)
/* the CTA's end as thread 0 reaches it: a second record, with the mark */
#define K_TRACE_END()                                                                              \
    do {                                                                                           \
        if (threadIdx.x == 0 && threadIdx.y == 0 && threadIdx.z == 0) {                            \
            const struct k_trace_start s_ = k_trace_start_of();                                    \
            struct k_trace_rec r_ = {k_trace_grid(), 0, 0, 0, 0, k_trace_clock(), 0, k_trace_cta()};\
            if (s_.grid == r_.grid && s_.cta == r_.cta)                                            \
                r_.t_mark = s_.mark;                                                               \
            k_trace_put(r_);                                                                       \
        }                                                                                          \
    } while (0)
#else
#define K_TRACE_BEGIN() do {} while (0)
#define K_TRACE_MARK() do {} while (0)
#define K_TRACE_END() do {} while (0)
#endif

/* Programmatic dependent launch (sm_90 and newer). rt launches decode kernels so that one may
 * be scheduled before the kernel ahead of it has finished (rt/exec.c); every such kernel calls
 * this first, before it touches global memory: griddepcontrol.wait returns once the kernels
 * it depends on have completed and their writes are visible, so only the launch latency
 * overlaps. launch_dependents then lets the next kernel be scheduled as soon as every CTA of
 * this one is running. Without the launch attribute both are no-ops; older archs compile
 * nothing.
 *
 * Because every kernel waits before it triggers, a kernel that has started knows that every
 * kernel before the one right ahead of it has completed. So it may read, before its wait,
 * memory the kernel right ahead of it does not write: weights, and state last written two or
 * more kernels back (the GDN state, the router's expert ids two launches before the MoE down
 * projection). Decode kernels issue those loads first, and their latency hides under the tail
 * of the kernel ahead. */
__device__ __forceinline__ void k_pdl_enter()
{
#ifdef KERN_TRACE
    const unsigned long long t_enter = k_trace_clock();
#endif
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
    asm volatile("griddepcontrol.wait;" ::: "memory");
    asm volatile("griddepcontrol.launch_dependents;" ::: "memory");
#endif
#ifdef KERN_TRACE
    if (threadIdx.x == 0 && threadIdx.y == 0 && threadIdx.z == 0) {
        struct k_trace_rec r = {};
        unsigned int sm;
        asm volatile("mov.u32 %0, %%smid;" : "=r"(sm));
        r.grid = k_trace_grid(), r.cta = k_trace_cta();
        r.t_enter = t_enter, r.t_go = k_trace_clock(), r.sm = sm;
        const struct k_trace_start s = k_trace_start_of();
        r.t_start = s.grid == r.grid && s.cta == r.cta && s.t <= t_enter ? s.t : 0;
        k_trace_put(r);
    }
#endif
}

/* The step state, read once per kernel. Decode kernels return at once when it is done. */
__device__ __forceinline__ const struct k_step *k_step_of(uint64_t p) { return (const struct k_step *)p; }

#endif
