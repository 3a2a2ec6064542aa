/* moe_prefill.cu — the sparse MoE block over a prefill chunk: token-sorted batched experts
 * (DESIGN.md §6, MODEL.md §2.4). The router (kern/moe.cu) has written ids, weights (T, k).
 *
 *   k_moe_align       the n = n_tokens * k (token, slot) pairs, pair id t * k + slot, grouped
 *                     by expert: counts[e]; expert e owns ceil(counts[e] / K_MOE_BM) row blocks,
 *                     experts in ascending order, its pairs first, then K_MOE_SENTINEL padding;
 *                     block_expert[b] for b < n_blocks; *n_blocks. Nothing past n_blocks
 *                     (blocks) or n_blocks * K_MOE_BM (sorted) is written. The order of pairs
 *                     inside an expert's rows is arbitrary (shared-memory atomics): every row
 *                     of a GEMM is computed alone, so the results do not depend on it.
 *                     grid (1), block 1024 (one thread per expert: E <= 1024).
 *   k_moe_gemm_up_bf16/i4
 *                     row block b of expert e = block_expert[b]: row r holds token
 *                     sorted[b * BM + r] / k (a zero row for padding); for act columns
 *                     n0..n0+BN-1, gate and up = bf16(x_t . W_e[row]) and
 *                     act[b * BM + r, n] = bf16(bf16(silu(gate)) * up), padding rows included
 *                     (they are zero). act is (max_blocks * BM, I) bf16 in the sorted order.
 *                     grid (max_blocks, ceil(I / K_MOE_BN)), block K_MOE_THREADS.
 *   k_moe_gemm_down_bf16/i4
 *                     y[pair, n] = bf16(bf16(act[b * BM + r] . down_e[n]) * bf16(w[pair])) into
 *                     y (T_max, k, H) bf16 at the pair's (token, slot); padding rows skipped.
 *                     grid (max_blocks, ceil(H / K_MOE_BN)), block K_MOE_THREADS.
 *   k_moe_combine     out[t] = bf16(sum_s y[t, s]) (fp32 sum in slot order, one rounding, the
 *                     grouped_mm convention), then + bf16(bf16(gate[t]) * shared[t]) as bf16
 *                     ops when shared != 0. grid (T_max), block 256 (any multiple of 32).
 *
 * The GEMMs are plain fp32-accumulating SIMT tiles: a CTA computes BM = 64 rows by BN = 128
 * columns (gate and up side by side for the up GEMM, 256 weight rows), staging BK = 32 inputs
 * of A and B as fp32 in shared memory (k-major, conflict-free); a thread owns 4 rows by 8
 * columns strided by 16. INT4 weights are expanded to scale * (q - 8) exactly in fp32, so the
 * result equals a GEMM over the dequantized matrix up to summation order. Blocks past
 * *n_blocks exit at once, so the grid can be sized for the largest chunk.
 *
 * bf16 rows are read 16 bytes at a time when K is a multiple of 8 (planner's servable()),
 * element by element otherwise. Rows: a chunk has step->n_tokens live tokens; every kernel
 * returns at once when step->done is set. */
#include "moe.cu" /* helpers: loads, bf16 lanes, INT4 pairs, live rows (include-guarded) */

#define MOE_BK          32 /* inputs per shared-memory stage */
#define MOE_TM          4  /* rows per thread */
#define MOE_TN          8  /* columns per thread, strided by MOE_TX */
#define MOE_TX          16 /* threads across the columns; K_MOE_THREADS / MOE_TX across rows */
#define MOE_ALIGN_MAX_E 1024

static_assert(K_MOE_THREADS == 256 && K_MOE_BM == 64 && K_MOE_BN == 128,
              "the GEMM thread tiles below assume 256 threads over a 64 x 128 tile");
static_assert(MOE_TX * MOE_TN == K_MOE_BN && (K_MOE_THREADS / MOE_TX) * MOE_TM == K_MOE_BM,
              "thread tile");

/* ---- k_moe_align --------------------------------------------------------------------------- */

/* Inclusive prefix sum over the block; *total gets the block's sum. */
__device__ __forceinline__ uint32_t moe_scan(uint32_t v, uint32_t *s_warp, uint32_t *total)
{
    const uint32_t lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nw = blockDim.x >> 5;
    for (int o = 1; o < 32; o <<= 1) {
        uint32_t u = __shfl_up_sync(0xFFFFFFFFu, v, o);
        v += lane >= (uint32_t)o ? u : 0;
    }
    if (lane == 31)
        s_warp[warp] = v;
    __syncthreads();
    if (warp == 0) {
        uint32_t w = lane < nw ? s_warp[lane] : 0;
        for (int o = 1; o < 32; o <<= 1) {
            uint32_t u = __shfl_up_sync(0xFFFFFFFFu, w, o);
            w += lane >= (uint32_t)o ? u : 0;
        }
        s_warp[lane] = w;
    }
    __syncthreads();
    *total = s_warp[nw - 1];
    return v + (warp ? s_warp[warp - 1] : 0);
}

extern "C" __global__ void __launch_bounds__(1024) k_moe_align(struct k_moe_align_params p)
{
    __shared__ uint32_t s_cnt[MOE_ALIGN_MAX_E]; /* pairs per expert, then the fill cursor */
    __shared__ uint32_t s_warp[32];
    const struct k_step *st = k_step_of(p.step);
    const uint32_t E = p.d.E, k = p.d.k, tid = threadIdx.x;
    if (st->done || E > blockDim.x || E > MOE_ALIGN_MAX_E)
        return;
    const uint32_t npairs = moe_live_rows(st, p.d.T_max) * k;
    const int32_t *ids = (const int32_t *)p.ids;
    uint32_t *sorted = (uint32_t *)p.sorted;

    for (uint32_t e = tid; e < E; e += blockDim.x)
        s_cnt[e] = 0;
    __syncthreads();
    for (uint32_t i = tid; i < npairs; i += blockDim.x) {
        uint32_t e = (uint32_t)ids[i];
        if (e < E) /* the router writes valid ids; this only keeps a stray one from scattering */
            atomicAdd(&s_cnt[e], 1u);
    }
    __syncthreads();

    /* expert e's blocks start at the sum of the earlier experts' padded block counts */
    const uint32_t cnt = tid < E ? s_cnt[tid] : 0, nb = (cnt + K_MOE_BM - 1) / K_MOE_BM;
    uint32_t total, first = moe_scan(nb, s_warp, &total) - nb;
    if (tid < E) {
        ((uint32_t *)p.counts)[tid] = cnt;
        for (uint32_t j = 0; j < nb; j++)
            ((uint32_t *)p.block_expert)[first + j] = tid;
        for (uint32_t r = cnt; r < nb * K_MOE_BM; r++) /* the padding of its last block */
            sorted[(uint64_t)first * K_MOE_BM + r] = K_MOE_SENTINEL;
        s_cnt[tid] = first * K_MOE_BM; /* now the next free row of expert tid */
    }
    if (tid == 0)
        *(uint32_t *)p.n_blocks = total;
    __syncthreads();
    for (uint32_t i = tid; i < npairs; i += blockDim.x) {
        uint32_t e = (uint32_t)ids[i];
        if (e < E)
            sorted[atomicAdd(&s_cnt[e], 1u)] = i;
    }
}

/* ---- the batched expert GEMMs --------------------------------------------------------------- */

struct __align__(16) moe_gemm_smem
{
    float a[MOE_BK][K_MOE_BM];     /* A tile, k-major */
    float b[MOE_BK][2 * K_MOE_BN]; /* B tile, k-major: up: gate columns then up columns */
    uint32_t pair[K_MOE_BM];       /* pair id of every row, or K_MOE_SENTINEL */
};

/* 8 bf16 to fp32, stored down column `col` of rows kk..kk+7 of a k-major tile */
template <int W>
__device__ __forceinline__ void moe_put8(float (*t)[W], uint32_t kk, uint32_t col, uint4 v)
{
    const uint32_t w[4] = {v.x, v.y, v.z, v.w};
#pragma unroll
    for (int j = 0; j < 4; j++) {
        t[kk + 2 * j][col] = moe_lo(w[j]);
        t[kk + 2 * j + 1][col] = moe_hi(w[j]);
    }
}

/* One bf16 row's BK inputs from k0 into column `col`: thread part q of 4 covers 8 of them.
 * A null row (padding, a column past N) stores zeros. */
template <int W>
__device__ __forceinline__ void moe_load_bf16(float (*t)[W], uint32_t col, uint32_t q,
                                              const uint16_t *row, uint32_t K, uint32_t k0,
                                              bool vec)
{
    if (vec) { /* K % 8 == 0: a chunk of 8 lies wholly inside or past the row */
        uint32_t kk = q * 8;
        uint4 v = make_uint4(0, 0, 0, 0);
        if (row && k0 + kk < K)
            v = moe_ld_ro(row + k0 + kk);
        moe_put8<W>(t, kk, col, v);
        return;
    }
#pragma unroll
    for (uint32_t m = 0; m < 8; m++) {
        uint32_t kk = q + 4 * m;
        t[kk][col] = row && k0 + kk < K ? k_bfbits2f(row[k0 + kk]) : 0.0f;
    }
}

/* One INT4 row's BK = 32 weights from k0 (one 16-byte chunk, one group) into column `col`,
 * expanded to scale * (q - 8). A null row stores zeros. */
__device__ __forceinline__ void moe_load_i4(float (*t)[2 * K_MOE_BN], uint32_t col,
                                            struct moe_row row, uint32_t k0, uint32_t group)
{
    if (!row.w) {
#pragma unroll
        for (int j = 0; j < MOE_BK; j++)
            t[j][col] = 0.0f;
        return;
    }
    uint4 v = moe_ld_stream((const uint8_t *)row.w + k0 / 2);
    float s = k_bfbits2f(__ldg(row.scales + k0 / group));
    const uint32_t w[4] = {v.x, v.y, v.z, v.w};
#pragma unroll
    for (int j = 0; j < 4; j++)
#pragma unroll
        for (int p = 0; p < 4; p++) {
            float2 q = moe_i4_pair(w[j] >> (4 * p));
            t[8 * j + 2 * p][col] = s * q.x;
            t[8 * j + 2 * p + 1][col] = s * q.y;
        }
}

/* Weight row of B column c (0..NB): up: c < BN gate row n0 + c, else up row n0 + c - BN of
 * expert e; down: row n0 + c. Null past N. */
template <bool I4, bool UP>
__device__ __forceinline__ struct moe_row moe_b_row(const struct k_moe_gemm_params &p, uint32_t e,
                                                    uint32_t n0, uint32_t c)
{
    const uint32_t I = p.d.I, H = p.d.H, N = UP ? I : H, K = UP ? H : I;
    const uint32_t n = n0 + (c % K_MOE_BN);
    struct moe_row r = {nullptr, nullptr};
    if (n >= N)
        return r;
    uint64_t row = UP ? (uint64_t)e * 2 * I + (c < K_MOE_BN ? 0 : I) + n : (uint64_t)e * H + n;
    return moe_row_of<I4>(p.w, p.scales_offset, row, K, p.d.group);
}

/* Stage k0..k0+BK of A (BM rows) and B (NB weight rows) into shared memory. */
template <bool I4, bool UP>
__device__ __forceinline__ void moe_stage(struct moe_gemm_smem &sm, const uint16_t *arow,
                                          const struct moe_row *brow, uint32_t K, uint32_t k0,
                                          uint32_t group, bool vec)
{
    const uint32_t NB = UP ? 2 * K_MOE_BN : K_MOE_BN;
    const uint32_t r = threadIdx.x % K_MOE_BM, q = threadIdx.x / K_MOE_BM;
    moe_load_bf16<K_MOE_BM>(sm.a, r, q, arow, K, k0, vec);
    if constexpr (I4) {
        if (threadIdx.x < NB)
            moe_load_i4(sm.b, threadIdx.x, brow[0], k0, group);
    } else {
#pragma unroll
        for (uint32_t j = 0; j < NB / K_MOE_BM; j++)
            moe_load_bf16<2 * K_MOE_BN>(sm.b, r + j * K_MOE_BM, q, (const uint16_t *)brow[j].w, K,
                                        k0, vec);
    }
}

/* acc[m][j] (+ acc2 for the up columns) += A rows ty*4+m times B columns tx + 16 j */
template <bool UP>
__device__ __forceinline__ void moe_mma_tile(const struct moe_gemm_smem &sm, float (*acc)[MOE_TN],
                                             float (*acc2)[MOE_TN], uint32_t tx, uint32_t ty)
{
#pragma unroll 4
    for (int kk = 0; kk < MOE_BK; kk++) {
        float4 a4 = *(const float4 *)&sm.a[kk][ty * MOE_TM];
        const float a[MOE_TM] = {a4.x, a4.y, a4.z, a4.w};
#pragma unroll
        for (int j = 0; j < MOE_TN; j++) {
            float bg = sm.b[kk][tx + MOE_TX * j];
            float bu = UP ? sm.b[kk][K_MOE_BN + tx + MOE_TX * j] : 0.0f;
#pragma unroll
            for (int m = 0; m < MOE_TM; m++) {
                acc[m][j] = fmaf(a[m], bg, acc[m][j]);
                if (UP)
                    acc2[m][j] = fmaf(a[m], bu, acc2[m][j]);
            }
        }
    }
}

template <bool I4, bool UP>
__device__ __forceinline__ void moe_gemm(const struct k_moe_gemm_params &p)
{
    __shared__ struct moe_gemm_smem sm;
    const struct k_step *st = k_step_of(p.step);
    const uint32_t blk = blockIdx.x;
    if (st->done || blk >= *(const uint32_t *)p.n_blocks)
        return;
    const uint32_t k = p.d.k, H = p.d.H, I = p.d.I, N = UP ? I : H, K = UP ? H : I;
    const uint32_t e = ((const uint32_t *)p.block_expert)[blk], n0 = blockIdx.y * K_MOE_BN;
    const uint32_t tid = threadIdx.x, tx = tid % MOE_TX, ty = tid / MOE_TX;
    if (tid < K_MOE_BM)
        sm.pair[tid] = ((const uint32_t *)p.sorted)[(uint64_t)blk * K_MOE_BM + tid];
    __syncthreads();

    /* this thread's A row (up: the pair's token; down: the row of act) and B rows */
    const uint32_t ra = tid % K_MOE_BM, pa = sm.pair[ra];
    const uint16_t *arow = nullptr;
    if (pa != K_MOE_SENTINEL)
        arow = (const uint16_t *)p.x +
               (UP ? (uint64_t)(pa / k) * H : ((uint64_t)blk * K_MOE_BM + ra) * I);
    constexpr uint32_t NBR = I4 ? 1 : (UP ? 2 * K_MOE_BN : K_MOE_BN) / K_MOE_BM;
    struct moe_row brow[NBR];
#pragma unroll
    for (uint32_t j = 0; j < NBR; j++)
        brow[j] = moe_b_row<I4, UP>(p, e, n0, I4 ? tid : ra + j * K_MOE_BM);
    const bool vec = K % 8 == 0;

    float acc[MOE_TM][MOE_TN] = {}, acc2[UP ? MOE_TM : 1][MOE_TN] = {};
    for (uint32_t k0 = 0; k0 < K; k0 += MOE_BK) {
        moe_stage<I4, UP>(sm, arow, brow, K, k0, p.d.group, vec);
        __syncthreads();
        moe_mma_tile<UP>(sm, acc, acc2, tx, ty);
        __syncthreads();
    }

    __nv_bfloat16 *y = (__nv_bfloat16 *)p.y;
#pragma unroll
    for (int m = 0; m < MOE_TM; m++) {
        const uint32_t r = ty * MOE_TM + m, pair = sm.pair[r];
        if (!UP && pair == K_MOE_SENTINEL)
            continue;
        /* down: y_k * routing_weights.to(bf16), a bf16 op on the bf16 matmul output */
        const float w = UP ? 0.0f : k_round_bf16(((const float *)p.weights)[pair]);
        const uint64_t base = UP ? ((uint64_t)blk * K_MOE_BM + r) * I : (uint64_t)pair * H;
#pragma unroll
        for (int j = 0; j < MOE_TN; j++) {
            const uint32_t n = n0 + tx + MOE_TX * j;
            if (n >= N)
                continue;
            float v;
            if (UP) /* act_fn(gate) * up on bf16 tensors */
                v = k_round_bf16(k_silu(k_round_bf16(acc[m][j]))) *
                    k_round_bf16(acc2[UP ? m : 0][j]);
            else
                v = k_round_bf16(acc[m][j]) * w;
            y[base + n] = k_f2bf(v);
        }
    }
}

extern "C" __global__ void __launch_bounds__(K_MOE_THREADS)
    k_moe_gemm_up_bf16(struct k_moe_gemm_params p)
{
    moe_gemm<false, true>(p);
}

extern "C" __global__ void __launch_bounds__(K_MOE_THREADS)
    k_moe_gemm_up_i4(struct k_moe_gemm_params p)
{
    moe_gemm<true, true>(p);
}

extern "C" __global__ void __launch_bounds__(K_MOE_THREADS)
    k_moe_gemm_down_bf16(struct k_moe_gemm_params p)
{
    moe_gemm<false, false>(p);
}

extern "C" __global__ void __launch_bounds__(K_MOE_THREADS)
    k_moe_gemm_down_i4(struct k_moe_gemm_params p)
{
    moe_gemm<true, false>(p);
}

/* ---- k_moe_combine --------------------------------------------------------------------------- */

/* out = bf16(sum of the k slot values) [+ bf16(gate * shared)] for one element */
__device__ __forceinline__ float moe_combine_one(float routed, const uint16_t *sh, uint64_t i,
                                                 float gate)
{
    float out = k_round_bf16(routed);
    if (sh)
        out = k_round_bf16(out + k_round_bf16(gate * k_bfbits2f(sh[i])));
    return out;
}

extern "C" __global__ void __launch_bounds__(256) k_moe_combine(struct k_moe_combine_params p)
{
    const struct k_step *st = k_step_of(p.step);
    const uint32_t t = blockIdx.x, H = p.d.H, k = p.d.k;
    if (st->done || t >= moe_live_rows(st, p.d.T_max))
        return;
    const uint16_t *y = (const uint16_t *)p.y + (uint64_t)t * k * H;
    const uint16_t *sh = p.shared ? (const uint16_t *)p.shared + (uint64_t)t * H : nullptr;
    const float gate = p.shared ? k_round_bf16(((const float *)p.shared_gate)[t]) : 0.0f;
    uint16_t *out = (uint16_t *)p.out + (uint64_t)t * H;
    if (H % 8 == 0) {
        for (uint32_t c = threadIdx.x * 8; c < H; c += blockDim.x * 8) {
            float acc[8] = {};
            for (uint32_t s = 0; s < k; s++) {
                uint4 v = moe_ld_ro(y + (uint64_t)s * H + c);
                const uint32_t w[4] = {v.x, v.y, v.z, v.w};
#pragma unroll
                for (int j = 0; j < 4; j++)
                    acc[2 * j] += moe_lo(w[j]), acc[2 * j + 1] += moe_hi(w[j]);
            }
            uint32_t o[4];
#pragma unroll
            for (int j = 0; j < 4; j++) {
                __nv_bfloat162 b =
                    __floats2bfloat162_rn(moe_combine_one(acc[2 * j], sh, c + 2 * j, gate),
                                          moe_combine_one(acc[2 * j + 1], sh, c + 2 * j + 1, gate));
                o[j] = *reinterpret_cast<uint32_t *>(&b);
            }
            *(uint4 *)(out + c) = make_uint4(o[0], o[1], o[2], o[3]);
        }
        return;
    }
    for (uint32_t c = threadIdx.x; c < H; c += blockDim.x) {
        float acc = 0.0f;
        for (uint32_t s = 0; s < k; s++)
            acc += k_bfbits2f(y[(uint64_t)s * H + c]);
        out[c] = __bfloat16_as_ushort(k_f2bf(moe_combine_one(acc, sh, c, gate)));
    }
}
