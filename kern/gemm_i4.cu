/* gemm_i4.cu — k_gemm_i4_g128: the dense projections of a short prefill chunk, y (T, N) =
 * x (T, K) W^T, straight from INT4 group-128 weights (kern/gemv.h).
 *
 * Expanding every dense matrix to bf16 for cuBLAS moves 4.5 bytes a weight, then cuBLAS reads
 * 2 more: at a few hundred tokens that is most of a chunk's time, while the nibbles alone are
 * 0.5 bytes. This kernel reads them once per token tile, on tensor cores, with the decode
 * GEMV's MMA mapping (kern/common.cuh k_i4_g128_mma): lane (g, t) holds 16 bytes of rows g and
 * g + 8 covering inputs [32 t, 32 t + 32) of a group, and B's column n is token n, so lane
 * (g, t) brings token g's inputs at those same positions. D's four values of a lane are then
 * rows g, g + 8 for tokens 2t, 2t + 1.
 *
 * Launch: grid (ceil(T_max / K_GEMM_I4_BT), ceil(N / K_GEMM_I4_BN)), block K_GEMM_I4_THREADS
 * (4 warps). CTA (bx, by) takes tokens BT bx .. + BT and rows BN by .. + BN, warp w the 16
 * rows BN by + 16 w ..; token tiles of one row tile are neighbours in launch order, so their
 * shared weights come from L2 after the first read. The K loop walks groups of 128 inputs:
 * the tokens' inputs of a group are staged in shared memory by cp.async, GEMM_I4_STAGES - 1
 * groups ahead, and each lane keeps GEMM_I4_RING groups of its weights in flight in registers,
 * the first ones loaded before the launch wait (weights are never written by the kernel
 * ahead). Per group and warp: the A fragments are converted once and used for every 8-token
 * tile.
 *
 * Numerics: as k_gemv_i4_g128, per token: each group's sum of exact bf16 products in fp32
 * inside the MMAs, then acc = fmaf(scale, group sum, acc) over the groups in order, and one
 * rounding to bf16. Rows past N and tokens past step->n_tokens are not stored; a CTA whose
 * tokens are all past n_tokens leaves. */
#include "common.cuh"
#include "gemv.h"

#define GEMM_I4_NT (K_GEMM_I4_BT / 8) /* 8-token MMA tiles of a CTA */
#define GEMM_I4_LDX (128 + 8)         /* staged row stride (bf16): rows 16 bytes apart in banks */
#define GEMM_I4_RING 4                /* groups of weights a lane has in flight */
#define GEMM_I4_STAGES 4              /* groups of inputs staged: 3 in flight while one is used */

static_assert(K_GEMM_I4_BN == 16 * (K_GEMM_I4_THREADS / 32), "a warp takes one 16-row tile");
#define GEMM_I4_CPT (K_GEMM_I4_BT * 16 / K_GEMM_I4_THREADS) /* 16-byte copies a thread a stage */
static_assert(GEMM_I4_CPT * K_GEMM_I4_THREADS == K_GEMM_I4_BT * 16, "a stage is whole copies a thread");

/* the inputs [128 c, 128 c + 128) of tokens t0 .. t0 + BT into a stage; past T zeros; c past
 * the last group: nothing, but the commit group still counts */
__device__ __forceinline__ void gemm_i4_stage(uint16_t (*xs)[GEMM_I4_LDX], const uint16_t *x, uint32_t K,
                                              uint32_t t0, uint32_t T, uint32_t c, uint32_t nch)
{
#pragma unroll
    for (int i = 0; i < GEMM_I4_CPT && c < nch; i++) {
        const uint32_t q = threadIdx.x + K_GEMM_I4_THREADS * i, row = q >> 4, col = q & 15;
        const bool live = t0 + row < T;
        const uint16_t *src = x + (uint64_t)(live ? t0 + row : t0) * K + 128 * c + 8 * col;
        k_cp16(&xs[row][8 * col], src, live);
    }
    k_cp_commit();
}

extern "C" __global__ void __launch_bounds__(K_GEMM_I4_THREADS, 3) k_gemm_i4_g128(struct k_gemm_i4_params p)
{
    __shared__ __align__(16) uint16_t xs[GEMM_I4_STAGES][K_GEMM_I4_BT][GEMM_I4_LDX];
    const uint32_t lane = threadIdx.x & 31, warp = threadIdx.x >> 5, g = lane >> 2, t = lane & 3;
    const uint32_t N = p.N, K = p.K, nch = K / 128;
    const uint32_t t0 = blockIdx.x * K_GEMM_I4_BT, r0 = blockIdx.y * K_GEMM_I4_BN + 16 * warp;
    const uint32_t ra = min(r0 + g, N - 1), rb = min(r0 + g + 8, N - 1); /* past N: any live row */
    const uint8_t *wa = (const uint8_t *)p.w + (uint64_t)ra * (K / 2) + 16 * t;
    const uint8_t *wb = (const uint8_t *)p.w + (uint64_t)rb * (K / 2) + 16 * t;
    const uint16_t *sca = (const uint16_t *)(p.w + p.scales_offset) + (uint64_t)ra * nch;
    const uint16_t *scb = (const uint16_t *)(p.w + p.scales_offset) + (uint64_t)rb * nch;
    uint4 qa[GEMM_I4_RING], qb[GEMM_I4_RING];
    float sa[GEMM_I4_RING], sb[GEMM_I4_RING];
#pragma unroll
    for (int i = 0; i < GEMM_I4_RING; i++) { /* before the wait: weights */
        const bool in = (uint32_t)i < nch;
        qa[i] = in ? k_ld_stream(wa + 64 * i) : make_uint4(0, 0, 0, 0);
        qb[i] = in ? k_ld_stream(wb + 64 * i) : make_uint4(0, 0, 0, 0);
        sa[i] = in ? k_bfbits2f(__ldg(sca + i)) : 0.0f;
        sb[i] = in ? k_bfbits2f(__ldg(scb + i)) : 0.0f;
    }
    k_pdl_enter();
    const uint32_t T = k_step_of(p.step)->n_tokens;
    if (t0 >= T) /* uniform over the CTA */
        return;
    const uint16_t *x = (const uint16_t *)p.x;
    float acc[GEMM_I4_NT][4];
#pragma unroll
    for (int j = 0; j < GEMM_I4_NT; j++)
        acc[j][0] = acc[j][1] = acc[j][2] = acc[j][3] = 0.0f;
#pragma unroll
    for (int i = 0; i + 1 < GEMM_I4_STAGES; i++)
        gemm_i4_stage(xs[i], x, K, t0, T, i, nch);
    for (uint32_t c0 = 0; c0 < nch; c0 += GEMM_I4_RING) {
#pragma unroll
        for (int i = 0; i < GEMM_I4_RING; i++) {
            const uint32_t c = c0 + i;
            if (c >= nch)
                break;
            /* stage c has landed (the STAGES - 2 younger ones may not have) and every warp is
             * done with the buffer of stage c - 1, which stage c + STAGES - 1 takes */
            asm volatile("cp.async.wait_group %0;\n" ::"n"(GEMM_I4_STAGES - 2));
            __syncthreads();
            gemm_i4_stage(xs[(c + GEMM_I4_STAGES - 1) % GEMM_I4_STAGES], x, K, t0, T, c + GEMM_I4_STAGES - 1, nch);
            uint32_t A[8][4];
            const uint32_t wa4[4] = {qa[i].x, qa[i].y, qa[i].z, qa[i].w}, wb4[4] = {qb[i].x, qb[i].y, qb[i].z, qb[i].w};
#pragma unroll
            for (int m = 0; m < 8; m++) {
                const int w = m / 2, i0 = (2 * m) % 4, i1 = (2 * m + 1) % 4;
                A[m][0] = k_i4_bf16x2(wa4[w], i0), A[m][1] = k_i4_bf16x2(wb4[w], i0);
                A[m][2] = k_i4_bf16x2(wa4[w], i1), A[m][3] = k_i4_bf16x2(wb4[w], i1);
            }
            const float fa = sa[i], fb = sb[i];
            if (c + GEMM_I4_RING < nch) { /* refill this slot: group c + RING */
                qa[i] = k_ld_stream(wa + 64ull * (c + GEMM_I4_RING));
                qb[i] = k_ld_stream(wb + 64ull * (c + GEMM_I4_RING));
                sa[i] = k_bfbits2f(__ldg(sca + c + GEMM_I4_RING));
                sb[i] = k_bfbits2f(__ldg(scb + c + GEMM_I4_RING));
            }
            const uint16_t(*xb)[GEMM_I4_LDX] = xs[c % GEMM_I4_STAGES];
#pragma unroll
            for (int j = 0; j < GEMM_I4_NT; j++) {
                if (t0 + 8 * j >= T) /* warp-uniform: no live token in this tile or after */
                    break;
                const uint2 *xv = (const uint2 *)&xb[8 * j + g][32 * t]; /* words 2m, 2m + 1: MMA m */
                float d[4] = {0.0f, 0.0f, 0.0f, 0.0f};
#pragma unroll
                for (int m = 0; m < 8; m++) {
                    const uint2 b = xv[m];
                    k_mma16816(d, A[m][0], A[m][1], A[m][2], A[m][3], b.x, b.y);
                }
                acc[j][0] = fmaf(fa, d[0], acc[j][0]), acc[j][1] = fmaf(fa, d[1], acc[j][1]);
                acc[j][2] = fmaf(fb, d[2], acc[j][2]), acc[j][3] = fmaf(fb, d[3], acc[j][3]);
            }
        }
    }
    __nv_bfloat16 *y = (__nv_bfloat16 *)p.y;
#pragma unroll
    for (int j = 0; j < GEMM_I4_NT; j++)
#pragma unroll
        for (int e = 0; e < 4; e++) {
            const uint32_t tok = t0 + 8 * j + 2 * t + (e & 1), row = r0 + g + (e >> 1) * 8;
            if (tok < T && row < N)
                y[(uint64_t)tok * N + row] = k_f2bf(acc[j][e]);
        }
}
