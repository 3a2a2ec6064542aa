/* gemm_wg.cu — k_gemm_i4_wg{1,2,4,8}: the large dense projections of a prefill chunk, y (T, N) =
 * x (T, K) W^T, straight from INT4 group-128 weights (kern/gemv.h), in the buckets from 64 to
 * 512 tokens (at 64 in place of k_gemm_i4_g128's GEMV mapping).
 *
 * Expanding a matrix to bf16 for cuBLAS writes 2 bytes a weight that cuBLAS then reads back,
 * and at a few hundred tokens cuBLAS is far from the tensor rate (H100, 128 x 8192 x 2048:
 * expansion + cuBLAS 29.5 us a pair of launches). Here the nibbles are expanded in registers as
 * the A operand of wgmma, against 128 tokens at once, so each converted weight feeds 128 tokens
 * (same shape: 14.7 us, test_gpu_basic with GEMM_TIMING=128,8192,2048).
 *
 * sm_90a. CTA (bx, by, z): tokens 128 bx .., weight rows 128 by .., inputs [z K / S, (z + 1)
 * K / S). Two warpgroups of 4 warps; warpgroup h owns rows 64 h .. 64 h + 63 of the tile, warp
 * w of it rows 16 w .. 16 w + 15, and each issues wgmma.m64n128k16 with A (its 64 rows) from
 * registers and B (the 128 token rows, K-major, 128-byte swizzle) from shared memory.
 * cp.async stages 64 inputs of the token rows (16 KiB) and of the weight rows (4 KiB, the
 * nibbles as stored), K_GEMM_WG_STAGES deep, one barrier a stage. Before the launch wait (only
 * weights: never written by the kernel ahead) each CTA asks L2 for its whole weight slice
 * (cp.async.bulk.prefetch.L2: a few stages of copies in flight per SM leave the first read from
 * memory latency-bound), queues the first stages' weight copies and loads its scales. The loop
 * runs by 32-input chunk (half a stage): one chunk's two wgmma stay in flight while the warps
 * expand the next chunk's weights, pass the barrier and queue the next copies. 120 registers
 * and 82 KiB of shared memory: two CTAs an SM.
 *
 * A lane (g, t) of a warp holds rows g and g + 8 of its 16 (the mma.m16n8k16 A layout). For
 * chunk h of a stage it reads both rows' 16 bytes (32 inputs, 4 nibble words) and takes pair t
 * of each word: word j gives inputs 8 j + 2t, 8 j + 2t + 1, which are k16 step j / 2's slots
 * 2t (j even) or 2t + 8 (j odd). A pair becomes bf16 (q - 8) exactly (lop3 + bf16x2 FMA), then
 * bf16(scale * (q - 8)) by one more bf16x2 FMA: the value k_dequant_i4 stores.
 *
 * The end. Each CTA writes its fp32 sums to shared memory as [token][row] (rows 132 floats
 * apart: the lanes of a store hit 32 banks); then, after a cluster barrier, CTA rank r of the
 * S adds tokens r 128 / S .. of all S CTAs' sums (distributed shared memory) in rank order,
 * rounds to bf16 and stores 16 bytes a thread; a second barrier keeps every CTA's shared memory
 * alive until its peers have read it. Tokens past step->n_tokens are neither read (their rows
 * are zero-filled) nor stored; a tile whose tokens are all past it leaves at once.
 *
 * Where the time goes (H100, L2-warm, GEMM_TIMING runs): a CTA alone on its SM spends about
 * 860 cycles a stage on 512 cycles of wgmma, and about 4 us outside its loop (launch, first
 * copies, the end); two CTAs an SM reach 535 TFLOP/s (512 x 8192 x 2048, S = 1). Measured and
 * not kept: 8 stages (slower: 16.3 against 14.4 us), CTAs starting their K range at different
 * stages so they do not read the same token lines at once (16.7 against 14.4), the
 * fence.proxy.async left out (no change), the copies or the wgmma left out (14.0 and 14.8
 * against 16.3 us in one run: neither alone is the bound).
 *
 * Other images: the same launch; CTAs of split 0 run the whole K with mma.sync over the same
 * staged tiles (warp w: rows 16 w .., all 128 tokens), the rest return. */
#include "common.cuh"
#include "gemv.h"

#define GWG_BN     K_GEMM_WG_BN
#define GWG_ST     K_GEMM_WG_STAGES
#define GWG_LDE    (GWG_BN + 4)   /* floats between token rows of the end's sums */

/* A build's token tile: BT tokens (K_GEMM_WG_BT or K_GEMM_WG_BT64); XB bytes of token rows a
 * stage (64 inputs, 128 bytes a row), then the weight rows; XCP 16-byte token copies a thread */
template <int BT> struct gwg_geom {
    static constexpr uint32_t XB = BT * 128, STAGE = K_GEMM_WG_STAGE_T(BT);
    static constexpr uint32_t XCP = BT * 8 / K_GEMM_WG_THREADS;
    static_assert(GWG_BN * 2 == K_GEMM_WG_THREADS, "one 16-byte weight copy a thread a stage");
    static_assert(XCP * K_GEMM_WG_THREADS == BT * 8 && STAGE % 1024 == 0 &&
                      STAGE == XB + GWG_BN * 32,
                  "whole token copies; stages on the swizzle's 1024-byte period");
    static_assert(BT * GWG_LDE * 4 <= GWG_ST * STAGE, "the end's sums fit the stages");
};

/* byte offsets inside a stage: unit u (8 inputs) of token row r in the 128-byte swizzle (the
 * wgmma B layout); unit u (32 inputs) of weight row j, rows 4..7 of every 8 swapping their two
 * units so the 8 rows of a quarter warp's 16-byte loads hit all banks */
__device__ __forceinline__ uint32_t gwg_xoff(uint32_t r, uint32_t u)
{
    return r * 128 + ((u ^ (r & 7)) << 4);
}
template <int BT> __device__ __forceinline__ uint32_t gwg_woff(uint32_t j, uint32_t u)
{
    return gwg_geom<BT>::XB + j * 32 + ((u ^ ((j >> 2) & 1)) << 4);
}

/* nibble pair 0 of w (elements 0, 1) as bf16x2 scale * (q - 8): (q - 8) exactly, then one
 * rounding of the product (fma with -0 adds nothing) */
__device__ __forceinline__ uint32_t gwg_w2(uint32_t w, uint32_t s2)
{
    uint32_t o;
    asm("fma.rn.bf16x2 %0, %1, %2, %3;\n"
        : "=r"(o)
        : "r"(k_i4_bf2(w, 0)), "r"(s2), "r"(0x80008000u));
    return o;
}

/* The A fragments of chunk h (32 inputs) of the stage at st for rows j, j + 8 of the tile
 * (scales sl, sh as bf16x2): a[s] is k16 step s. */
template <int BT>
__device__ __forceinline__ void gwg_build(uint32_t (&a)[2][4], uint32_t st, uint32_t h, uint32_t j,
                                          uint32_t sl, uint32_t sh)
{
    const uint32_t t = threadIdx.x & 3;
    const uint4 lo = k_lds16(st + gwg_woff<BT>(j, h)), hi = k_lds16(st + gwg_woff<BT>(j + 8, h));
    const uint32_t wl[4] = {lo.x, lo.y, lo.z, lo.w}, wh[4] = {hi.x, hi.y, hi.z, hi.w};
#pragma unroll
    for (int s = 0; s < 2; s++) {
        a[s][0] = gwg_w2(wl[2 * s] >> (4 * t), sl);
        a[s][1] = gwg_w2(wh[2 * s] >> (4 * t), sh);
        a[s][2] = gwg_w2(wl[2 * s + 1] >> (4 * t), sl);
        a[s][3] = gwg_w2(wh[2 * s + 1] >> (4 * t), sh);
    }
}

/* What a thread copies each stage: its token rows (XCP of them, 32 rows apart: the swizzle repeats
 * every 8 rows, so copy i lands 4096 i bytes past copy 0) and one weight unit. */
struct gwg_cp {
    const uint16_t *x; /* copy 0's source at input 0 of the CTA's K range */
    const uint16_t *x0; /* a dead copy's source (reads nothing; inside x) */
    uint32_t live;     /* bit i: copy i's token is live */
    const uint8_t *w;  /* the weight unit's source at the K range's start */
    uint32_t xo, wo;   /* shared offsets in a stage */
    uint32_t xstep;    /* elements between copies i and i + 1 (32 token rows) */
};

template <int BT>
__device__ __forceinline__ void gwg_queue_x(const struct gwg_cp &c, uint32_t st, uint32_t kt)
{
#pragma unroll
    for (int i = 0; i < (int)gwg_geom<BT>::XCP; i++)
        k_cp16s(st + c.xo + 4096 * i, ((c.live >> i) & 1 ? c.x + i * c.xstep : c.x0) + 64 * kt,
                (c.live >> i) & 1);
}
__device__ __forceinline__ void gwg_queue_w(const struct gwg_cp &c, uint32_t st, uint32_t kt)
{
    k_cp16s(st + c.wo, c.w + 32 * kt, true);
}
template <int BT>
__device__ __forceinline__ void gwg_queue(const struct gwg_cp &c, uint32_t st, uint32_t kt)
{
    gwg_queue_x<BT>(c, st, kt);
    gwg_queue_w(c, st, kt);
}

#if K_WG
/* d (+)= A (64 rows x 16 inputs, registers) . B (16 inputs x 128 tokens at desc) */
__device__ __forceinline__ void gwg_mma(float (&d)[64], const uint32_t (&a)[4], uint64_t desc)
{
#define GWG_D8(i)                                                                                  \
    "+f"(d[i]), "+f"(d[i + 1]), "+f"(d[i + 2]), "+f"(d[i + 3]), "+f"(d[i + 4]), "+f"(d[i + 5]),    \
        "+f"(d[i + 6]), "+f"(d[i + 7])
    asm volatile("{\n.reg .pred p;\nsetp.ne.b32 p, 1, 0;\n"
                 "wgmma.mma_async.sync.aligned.m64n128k16.f32.bf16.bf16 "
                 "{%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, "
                 "%16, %17, %18, %19, %20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31, "
                 "%32, %33, %34, %35, %36, %37, %38, %39, %40, %41, %42, %43, %44, %45, %46, %47, "
                 "%48, %49, %50, %51, %52, %53, %54, %55, %56, %57, %58, %59, %60, %61, %62, %63}, "
                 "{%64, %65, %66, %67}, %68, p, 1, 1, 0;\n}\n"
                 : GWG_D8(0), GWG_D8(8), GWG_D8(16), GWG_D8(24), GWG_D8(32), GWG_D8(40),
                   GWG_D8(48), GWG_D8(56)
                 : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "l"(desc));
}
/* the same against 64 tokens */
__device__ __forceinline__ void gwg_mma(float (&d)[32], const uint32_t (&a)[4], uint64_t desc)
{
    asm volatile("{\n.reg .pred p;\nsetp.ne.b32 p, 1, 0;\n"
                 "wgmma.mma_async.sync.aligned.m64n64k16.f32.bf16.bf16 "
                 "{%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, "
                 "%16, %17, %18, %19, %20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31}, "
                 "{%32, %33, %34, %35}, %36, p, 1, 1, 0;\n}\n"
                 : GWG_D8(0), GWG_D8(8), GWG_D8(16), GWG_D8(24)
                 : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "l"(desc));
}
#undef GWG_D8

template <int ND> __device__ __forceinline__ void gwg_pin(float (&d)[ND])
{
#pragma unroll
    for (int i = 0; i < ND; i++)
        k_wg_pin1(d[i]);
}
__device__ __forceinline__ void gwg_pin(uint32_t (&a)[2][4]) { k_wg_pin(a); }

/* the two k16 steps of chunk h of the stage at st */
template <int ND>
__device__ __forceinline__ void gwg_chunk(float (&d)[ND], const uint32_t (&a)[2][4], uint32_t st,
                                          uint32_t h)
{
    gwg_pin(d);
    k_wg_fence();
    gwg_mma(d, a[0], k_wg_desc(st + 64 * h, 16));
    gwg_mma(d, a[1], k_wg_desc(st + 64 * h + 32, 16));
    k_wg_commit();
}

__device__ __forceinline__ void gwg_cluster_sync()
{
    asm volatile("barrier.cluster.arrive.release.aligned;\n"
                 "barrier.cluster.wait.acquire.aligned;\n" ::: "memory");
}
__device__ __forceinline__ float4 gwg_ld_peer(uint32_t a, uint32_t rank)
{
    uint32_t r;
    float4 v;
    asm volatile("mapa.shared::cluster.u32 %0, %1, %2;\n" : "=r"(r) : "r"(a), "r"(rank));
    asm volatile("ld.shared::cluster.v4.f32 {%0, %1, %2, %3}, [%4];\n"
                 : "=f"(v.x), "=f"(v.y), "=f"(v.z), "=f"(v.w)
                 : "r"(r)
                 : "memory");
    return v;
}
#endif

__device__ __forceinline__ uint32_t gwg_bf16x2(float lo, float hi)
{
    __nv_bfloat162 v = __floats2bfloat162_rn(lo, hi);
    return *reinterpret_cast<uint32_t *>(&v);
}

template <int S, int BT>
__device__ __forceinline__ void gwg_kernel(const struct k_gemm_i4_params &p)
{
    using G_ = gwg_geom<BT>;
    constexpr uint32_t STAGE = G_::STAGE, NT = BT / 8; /* n8 tiles of tokens */
    extern __shared__ __align__(16) uint8_t gwg_raw[];
    const uint32_t pad = (1024u - ((uint32_t)__cvta_generic_to_shared(gwg_raw) & 1023u)) & 1023u;
    const uint32_t sm = (uint32_t)__cvta_generic_to_shared(gwg_raw) + pad;
    const uint32_t tid = threadIdx.x, lane = tid & 31, warp = tid >> 5, g = lane >> 2;
    const uint32_t K = p.K, nch = K / 128, t0 = blockIdx.x * BT;
    /* row tile blockIdx.y: of the first matrix, then of the second (p.w2) */
    const uint32_t tiles1 = p.N / GWG_BN, second = p.w2 && blockIdx.y >= tiles1;
    const uint32_t N = second ? p.N2 : p.N, n0 = (blockIdx.y - (second ? tiles1 : 0)) * GWG_BN;
    if (!K_GEMM_WG_OK(128u, N, K, (uint32_t)S) || n0 >= N) /* the planner launches others */
        return;
    uint16_t *const y = (uint16_t *)(second ? p.y2 : p.y);
#if K_WG
    const uint32_t z = blockIdx.z, KS = K / S, kb = z * KS, G = KS / 128, nk = KS / 64;
#else
    if (blockIdx.z) /* one CTA a tile runs all of K */
        return;
    const uint32_t KS = K, kb = 0, nk = K / 64;
#endif
    const uint8_t *wq = (const uint8_t *)(second ? p.w2 : p.w);
    const uint16_t *scg = (const uint16_t *)(wq + (second ? p.scales_offset2 : p.scales_offset));
    struct gwg_cp c;
    {
        const uint32_t r = tid / 8, u = tid % 8;
        c.xstep = 32 * K;
        c.x = (const uint16_t *)p.x + (uint64_t)(t0 + r) * K + kb + 8 * u;
        c.x0 = (const uint16_t *)p.x + kb + 8 * u;
        c.xo = gwg_xoff(r, u);
        const uint32_t j = tid / 2, wu = tid % 2;
        c.w = wq + (uint64_t)(n0 + j) * (K / 2) + kb / 2 + 16 * wu;
        c.wo = gwg_woff<BT>(j, wu);
    }
    /* before the wait (weights only): the tile's weights for its K range asked into L2 at
     * once (a few stages of copies in flight per SM would leave the nibbles' first read from
     * memory latency-bound), the first stages' weight copies (in the first copy group), the
     * tile's scales */
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
    if (tid < GWG_BN)
        asm volatile("cp.async.bulk.prefetch.L2.global [%0], %1;\n" ::"l"(
                         wq + (uint64_t)(n0 + tid) * (K / 2) + kb / 2),
                     "r"(KS / 2)
                     : "memory");
#endif
#pragma unroll
    for (int s = 0; s < GWG_ST - 1; s++)
        if ((uint32_t)s < nk)
            gwg_queue_w(c, sm + s * STAGE, s);
#if K_WG
    uint16_t *sc = (uint16_t *)(gwg_raw + pad + GWG_ST * STAGE);
    for (uint32_t i = tid; i < GWG_BN * G; i += K_GEMM_WG_THREADS)
        sc[i] = scg[(uint64_t)(n0 + i / G) * nch + kb / 128 + i % G];
#endif
    k_pdl_enter();
    const uint32_t T = k_step_of(p.step)->n_tokens;
    if (t0 >= T) { /* uniform over the cluster: its CTAs share blockIdx.x */
        k_cp_wait_all();
        return;
    }
    c.live = 0;
#pragma unroll
    for (int i = 0; i < (int)G_::XCP; i++)
        c.live |= (t0 + tid / 8 + 32 * i < T ? 1u : 0u) << i;
#pragma unroll
    for (int s = 0; s < GWG_ST - 1; s++) {
        if ((uint32_t)s < nk)
            gwg_queue_x<BT>(c, sm + s * STAGE, s);
        k_cp_commit();
    }

#if K_WG
    const uint32_t wg = warp / 4, j = 64 * wg + 16 * (warp % 4) + g; /* rows j, j + 8 */
    float d[BT / 2];
#pragma unroll
    for (int i = 0; i < BT / 2; i++)
        d[i] = 0.0f;
    asm volatile("cp.async.wait_group %0;\n" ::"n"(GWG_ST - 2));
    asm volatile("fence.proxy.async.shared::cta;\n" ::: "memory");
    __syncthreads();
    uint32_t sl = 0, sh = 0;
    {
        const uint32_t a = sc[j * G], b = sc[(j + 8) * G];
        sl = a | a << 16, sh = b | b << 16;
    }
    uint32_t a0[2][4], a1[2][4];
    gwg_build<BT>(a0, sm, 0, j, sl, sh);
    /* chunk 2 it + h is the half h of stage it; one chunk's wgmma stays in flight while the
     * next one's weights are expanded */
    for (uint32_t it = 0; it < nk; it++) {
        const uint32_t st = sm + it % GWG_ST * STAGE;
        gwg_chunk(d, a0, st, 0);
        k_wg_wait<1>(); /* chunk 2 it - 1 done: a1 free, stage it - 1 read by this thread */
        gwg_pin(a1);
        gwg_build<BT>(a1, st, 1, j, sl, sh);
        /* stage it + 1 has landed and every thread is past stage it - 1 */
        asm volatile("cp.async.wait_group %0;\n" ::"n"(GWG_ST - 3));
        asm volatile("fence.proxy.async.shared::cta;\n" ::: "memory");
        __syncthreads();
        if (it + GWG_ST - 1 < nk)
            gwg_queue<BT>(c, sm + (it + GWG_ST - 1) % GWG_ST * STAGE, it + GWG_ST - 1);
        k_cp_commit();
        gwg_chunk(d, a1, st, 1);
        k_wg_wait<1>(); /* chunk 2 it done: a0 free */
        gwg_pin(a0);
        if (it + 1 < nk) {
            if ((it + 1) % 2 == 0) { /* a new group of 128 inputs */
                const uint32_t gi = (it + 1) / 2, a = sc[j * G + gi], b = sc[(j + 8) * G + gi];
                sl = a | a << 16, sh = b | b << 16;
            }
            gwg_build<BT>(a0, sm + (it + 1) % GWG_ST * STAGE, 0, j, sl, sh);
        }
    }
    k_wg_wait<0>();
    gwg_pin(d);
    asm volatile("cp.async.wait_group 0;\n" ::: "memory");
    __syncthreads(); /* every warp is done with the stages: they take the sums */
    {
        float *e = (float *)(gwg_raw + pad);
        const uint32_t t = lane & 3;
#pragma unroll
        for (int n = 0; n < (int)NT; n++)
#pragma unroll
            for (int q = 0; q < 4; q++)
                e[(8 * n + 2 * t + (q & 1)) * GWG_LDE + j + 8 * (q >> 1)] = d[4 * n + q];
    }
    uint32_t rank = 0;
    if constexpr (S > 1) {
        asm volatile("mov.u32 %0, %%cluster_ctarank;\n" : "=r"(rank));
        gwg_cluster_sync();
    } else {
        __syncthreads();
    }
    constexpr uint32_t TPR = BT / S; /* tokens a rank adds up */
    for (uint32_t i = tid; i < TPR * (GWG_BN / 8); i += K_GEMM_WG_THREADS) {
        const uint32_t tok = rank * TPR + i / (GWG_BN / 8), col = 8 * (i % (GWG_BN / 8));
        if (t0 + tok >= T)
            continue;
        const uint32_t a = sm + (tok * GWG_LDE + col) * 4;
        float v[8] = {};
#pragma unroll
        for (int q = 0; q < S; q++) { /* rank order */
            float4 lo, hi;
            if constexpr (S > 1)
                lo = gwg_ld_peer(a, q), hi = gwg_ld_peer(a + 16, q);
            else
                lo = *(const float4 *)(gwg_raw + pad + (a - sm)),
                hi = *(const float4 *)(gwg_raw + pad + (a - sm) + 16);
            v[0] += lo.x, v[1] += lo.y, v[2] += lo.z, v[3] += lo.w;
            v[4] += hi.x, v[5] += hi.y, v[6] += hi.z, v[7] += hi.w;
        }
        const uint4 o = make_uint4(gwg_bf16x2(v[0], v[1]), gwg_bf16x2(v[2], v[3]),
                                   gwg_bf16x2(v[4], v[5]), gwg_bf16x2(v[6], v[7]));
        *(uint4 *)(y + (uint64_t)(t0 + tok) * N + n0 + col) = o;
    }
    if constexpr (S > 1)
        gwg_cluster_sync(); /* the peers have read this CTA's sums */
#else
    /* mma.sync: warp w rows 16 w + g (+ 8), all NT n8 tiles of tokens */
    const uint32_t j = 16 * warp + g, t = lane & 3;
    float acc[NT][4] = {};
    const uint16_t *sa = scg + (uint64_t)(n0 + j) * nch, *sb = sa + 8ull * nch;
    for (uint32_t it = 0; it < nk; it++) {
        asm volatile("cp.async.wait_group %0;\n" ::"n"(GWG_ST - 2));
        __syncthreads(); /* stage it landed everywhere; stage it - 1's slot is free */
        if (it + GWG_ST - 1 < nk)
            gwg_queue<BT>(c, sm + (it + GWG_ST - 1) % GWG_ST * STAGE, it + GWG_ST - 1);
        k_cp_commit();
        const uint32_t st = sm + it % GWG_ST * STAGE;
        const uint32_t a = __ldg(sa + it / 2), b = __ldg(sb + it / 2);
        const uint32_t sl = a | a << 16, sh = b | b << 16;
#pragma unroll
        for (uint32_t h = 0; h < 2; h++) {
            uint32_t A[2][4];
            gwg_build<BT>(A, st, h, j, sl, sh);
#pragma unroll
            for (uint32_t s = 0; s < 2; s++) {
                const uint32_t u = 4 * h + 2 * s;
#pragma unroll
                for (uint32_t n = 0; n < NT; n++) {
                    const uint32_t r = 8 * n + g;
                    uint32_t b0, b1;
                    const uint32_t a0 = st + gwg_xoff(r, u) + 4 * t;
                    const uint32_t a1 = st + gwg_xoff(r, u + 1) + 4 * t;
                    asm volatile("ld.shared.u32 %0, [%1];\n" : "=r"(b0) : "r"(a0));
                    asm volatile("ld.shared.u32 %0, [%1];\n" : "=r"(b1) : "r"(a1));
                    k_mma16816(acc[n], A[s][0], A[s][1], A[s][2], A[s][3], b0, b1);
                }
            }
        }
    }
    /* D: rows j (q 0, 1) and j + 8 (q 2, 3) for tokens 8 n + 2t (+1) */
#pragma unroll
    for (uint32_t n = 0; n < NT; n++)
#pragma unroll
        for (uint32_t q = 0; q < 4; q++) {
            const uint32_t tok = t0 + 8 * n + 2 * t + (q & 1);
            if (tok < T)
                ((__nv_bfloat16 *)y)[(uint64_t)tok * N + n0 + j + 8 * (q >> 1)] =
                    __float2bfloat16_rn(acc[n][q]);
        }
    (void)KS;
#endif
}

#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
#define GWG_CLUSTER(S) __cluster_dims__(1, 1, S)
#else
#define GWG_CLUSTER(S)
#endif
#define GWG_KERNEL(S, BT, suffix)                                                                  \
    extern "C" __global__ void __launch_bounds__(K_GEMM_WG_THREADS, 2) GWG_CLUSTER(S)             \
        k_gemm_i4_wg##S##suffix(struct k_gemm_i4_params p)                                         \
    {                                                                                              \
        gwg_kernel<S, BT>(p);                                                                      \
    }
GWG_KERNEL(1, K_GEMM_WG_BT, )
GWG_KERNEL(2, K_GEMM_WG_BT, )
GWG_KERNEL(4, K_GEMM_WG_BT, )
GWG_KERNEL(8, K_GEMM_WG_BT, )
/* a 64-token tile (kern/gemv.h K_GEMM_WG_BT64) */
GWG_KERNEL(1, K_GEMM_WG_BT64, _t64)
GWG_KERNEL(2, K_GEMM_WG_BT64, _t64)
GWG_KERNEL(4, K_GEMM_WG_BT64, _t64)
GWG_KERNEL(8, K_GEMM_WG_BT64, _t64)
#undef GWG_KERNEL
