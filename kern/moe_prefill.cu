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
 *   k_moe_gemm_down_bf16/i4
 *                     y[pair, n] = bf16(bf16(act[b * BM + r] . down_e[n]) * bf16(w[pair])) into
 *                     y (T_max, k, H) bf16 at the pair's (token, slot); padding rows skipped.
 *   k_moe_combine     out[t] = bf16(sum_s y[t, s]) (fp32 sum in slot order, one rounding, the
 *                     grouped_mm convention), then + bf16(bf16(gate[t]) * shared[t]) as bf16
 *                     ops when shared != 0; gate[t] is k_router's sigmoid, or the combine's
 *                     own of a logit (gate_logit). grid (T_max), block 256 (any multiple of
 *                     32).
 *
 * The GEMMs come in two builds with one contract (launch shapes in kern/moe.h). Blocks past
 * *n_blocks exit at once, so the grid can be sized for the largest chunk.
 *
 * Tensor cores (k_moe_gemm_*_{bf16,i4}), for K % 8 == 0 and even N (K_MOE_TC_OK): a CTA of
 * K_MOE_TC_WARPS warps takes the BM = 64 rows of one block against K_MOE_TC_ROWS weight rows,
 * warp w all 64 rows against K_MOE_TC_WROWS = 32 of them. The MMA (mma.m16n8k16, bf16 in,
 * fp32 accumulators) runs transposed, D = W X^T: the weights are the 16 x 16 A operand (two
 * m16 tiles per warp, expanded from INT4 in registers once and used for all 8 n8 tiles of
 * tokens), the token rows the 16 x 8 B operand. For the up GEMM warp w's 32 rows are the gate
 * rows (m16 tile 0) and the up rows (tile 1) of the same 16 act columns, so SiLU * up happens
 * in registers; the down GEMM runs K_MOE_TC_NT_DOWN column tiles one after the other in one
 * CTA, the copy pipeline running on across the tile boundary (K = I is short: a CTA per tile
 * would spend a large share of its life filling the pipeline). Two CTAs share an SM
 * (K_MOE_TC_CTAS), so one computes while the other waits at its barrier or fills its pipeline.
 * k_moe_gemm_up_i4_narrow (short chunks, kern/moe.h) is the INT4 up GEMM built for at most 2
 * n8 tiles of tokens a pass (moe_tc_passes): its registers allow K_MOE_TC_NARROW_CTAS CTAs an
 * SM.
 *
 *   Staging: cp.async copies of 16 bytes, K_MOE_TC_STAGES stages deep, one barrier per stage.
 *   A stage holds BK inputs (INT4: 64, bf16: 32) of the 64 token rows (gathered rows of x for
 *   up, act rows for down) and of the weight rows, the INT4 nibbles as stored. Rows that are
 *   padding, token rows of n8 tiles past the live ones, and columns past N are not copied:
 *   their stale values reach only outputs that are not written. Inputs past K are zero-filled
 *   (a zero token input cancels any weight). A thread's copies sit rows apart by a multiple of
 *   8, where the swizzles repeat, so each lands at a fixed offset from its first (moe_tc_load):
 *   only the sources advance with the stage.
 *
 *   The k order inside a 32-input chunk is permuted, the same way for both operands, so that
 *   each is one wide shared-memory load with no register moves: lane (g, t) (g = lane / 4,
 *   t = lane % 4) takes inputs 8t..8t+7 of the chunk, as one 32-bit INT4 word of weight rows g
 *   and g + 8 (ldmatrix.x4 hands lane t word t of a 16-byte row, for the four 8-row groups of
 *   the warp at once) and as one 16-byte load of token row g of each n8 tile. mma step s (0, 1)
 *   then uses inputs 8t + 4s + {0, 1} in place of its k = 2t + {0, 1} and 8t + 4s + {2, 3} in
 *   place of 2t + 8 + {0, 1}: a bijection on the 16 inputs of the step, the same for both
 *   operands, so the sums are those of the plain order. A nibble word holds elements
 *   [0 2 4 6 1 3 5 7], so (word >> 4p) & 0x000F000F is elements 2p, 2p + 1 as the two halves
 *   of a register; OR-ing the bf16 exponent of 128 (one lop3) and one bf16x2 FMA (x * 1 - 136)
 *   give (q - 8) exactly. Step 0 runs over all tiles before step 1, so no mma waits on the one
 *   before it. bf16 weights are read as 16-byte loads of rows g and g + 8 the same way.
 *
 *   sm_90a, INT4 with groups of 64 or 128 inputs: the same CTA is one warpgroup and issues
 *   wgmma.m64nNk16 (N = 8 x live n8 tiles) instead: A, the weights, from registers (each warp's
 *   16 rows of an m64 tile, expanded as above but in the natural k order: a lane reads its rows'
 *   whole 16-byte chunk and takes nibble pair t of each word), B, the token tile, read by the
 *   hardware from shared memory through a descriptor: K-major in the 128-byte swizzle (unit u
 *   of token row r at u ^ (r % 8), stages 1024-byte aligned). cp.async lands a stage, a
 *   fence.proxy.async makes it visible to the async proxy, the barrier. The loop is pipelined
 *   by 32-input chunk (moe_wg_main): a chunk's four wgmma (two k16 steps, two m64 tiles) run
 *   into the group accumulator while the warps expand the next chunk's weights, pass the
 *   barrier and queue the next copies; at a group's end acc += scale * gacc. Groups of 32 run
 *   the mma.sync stages on the same layout (whose token reads then meet 2-way bank conflicts).
 *
 *   INT4 scales: the MMA runs on (q - 8), exact in bf16, into a per-group accumulator (the
 *   first mma of a group starts it from zero); at the end of each group (32, 64 or 128
 *   inputs) acc += scale * group_acc in fp32. The result is the GEMM over the dequantized
 *   weights up to fp32 summation order, as in the CUDA-core build. The CTA's scales for all
 *   of K are copied once, with the first stage.
 *
 *   Outputs: lane (g, t) holds column g (and g + 8) for tokens 2t, 2t + 1 of an n8 tile; one
 *   shuffle with lane ^ 4 (column g ^ 1) turns that into two adjacent columns of one token,
 *   stored as one bf16x2.
 *
 *   Shared-memory layouts (bank conflicts): an INT4-stage token row is 128 bytes and odd rows
 *   swap their halves, so the 8 lanes of a quarter warp (rows g, g + 1, four 16-byte units)
 *   hit all 32 banks; a bf16-stage token row and a bf16 weight row are 64 bytes (two rows per
 *   128-byte line: already conflict-free); an INT4 weight row is 32 bytes and rows 4..7 of
 *   every 8 swap their two units, so the 8 rows of one ldmatrix matrix hit all 32 banks.
 *
 *   Row blocks hold their pairs first (k_moe_align), so n8 tiles of tokens past the block's
 *   last pair are skipped (the kernel instantiates the loop for 1..8 live tiles): an expert's
 *   padding costs at most 7 rows of work instead of 63.
 *
 * CUDA cores (k_moe_gemm_*_simt), any shape: plain fp32-accumulating SIMT tiles: a CTA
 * computes BM = 64 rows by BN = 128 columns (gate and up side by side for the up GEMM, 256
 * weight rows), staging BK = 32 inputs of A and B as fp32 in shared memory (k-major,
 * conflict-free); a thread owns 4 rows by 8 columns strided by 16. INT4 weights are expanded
 * to scale * (q - 8) exactly in fp32.
 *
 * bf16 rows are read 16 bytes at a time when K is a multiple of 8 (planner's servable()),
 * element by element otherwise (CUDA-core build). Rows: a chunk has step->n_tokens live
 * tokens; every kernel returns at once when step->done is set. */
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
    __shared__ uint32_t s_first[MOE_ALIGN_MAX_E]; /* each expert's first row block */
    __shared__ uint32_t s_num[MOE_ALIGN_MAX_E];   /* and its pairs */
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
        s_cnt[tid] = first * K_MOE_BM; /* now the next free row of expert tid */
        s_first[tid] = first, s_num[tid] = cnt;
    }
    if (tid == 0)
        *(uint32_t *)p.n_blocks = total;
    __syncthreads();
    /* each expert's block ids and the padding of its last block, by one warp an expert with
     * consecutive lanes on consecutive words (a thread an expert stored 32 scattered words an
     * instruction: most of this kernel's time) */
    const uint32_t lane = tid & 31, nw = blockDim.x >> 5;
    for (uint32_t e = tid >> 5; e < E; e += nw) {
        const uint32_t f = s_first[e], c = e + 1 < E ? s_first[e + 1] - f : total - f;
        const uint32_t n = s_num[e];
        for (uint32_t j = lane; j < c; j += 32)
            ((uint32_t *)p.block_expert)[f + j] = e;
        for (uint32_t r = n + lane; r < c * K_MOE_BM; r += 32)
            sorted[(uint64_t)f * K_MOE_BM + r] = K_MOE_SENTINEL;
    }
    if (p.cursor) { /* k_moe_scatter places the pairs */
        if (tid < E)
            ((uint32_t *)p.cursor)[tid] = s_cnt[tid];
        return;
    }
    for (uint32_t i = tid; i < npairs; i += blockDim.x) { /* rows below the padding */
        uint32_t e = (uint32_t)ids[i];
        if (e < E)
            sorted[atomicAdd(&s_cnt[e], 1u)] = i;
    }
}

/* The pairs into their experts' rows after k_moe_align left the cursors: a thread a pair, the
 * row from a global atomic on its expert's cursor (the order inside an expert is arbitrary, as
 * with k_moe_align's shared-memory atomics). */
extern "C" __global__ void __launch_bounds__(K_MOE_SCATTER_THREADS)
    k_moe_scatter(struct k_moe_align_params p)
{
    const struct k_step *st = k_step_of(p.step);
    const uint32_t i = blockIdx.x * blockDim.x + threadIdx.x;
    if (st->done || i >= moe_live_rows(st, p.d.T_max) * p.d.k)
        return;
    const uint32_t e = (uint32_t)((const int32_t *)p.ids)[i];
    if (e < p.d.E)
        ((uint32_t *)p.sorted)[atomicAdd((uint32_t *)p.cursor + e, 1u)] = i;
}

/* ---- the tensor-core expert GEMMs ------------------------------------------------------------ */

/* Geometry of one build: W warps, each all K_MOE_BM rows of the block against WR (16 or 32)
 * weight rows, so MW = WR / 16 m16 tiles of weights per warp; stages of BK inputs. X is the
 * stage's token rows (BM of them, XU 16-byte units each), WT its weight rows (ROWS, WU units);
 * X_CP and W_CP are the 16-byte copies each thread queues per stage. */
template <bool I4, int W, int WR> struct moe_tc_geom {
    static constexpr uint32_t THREADS = 32 * W, ROWS = W * WR, MW = WR / 16;
    static constexpr uint32_t BK = I4 ? 64 : 32;
    static constexpr uint32_t XU = BK / 8, WU = I4 ? BK / 32 : BK / 8;
    static constexpr uint32_t X_BYTES = K_MOE_BM * XU * 16, W_BYTES = ROWS * WU * 16;
    static constexpr uint32_t STAGE = X_BYTES + W_BYTES;
    static constexpr uint32_t X_CP = K_MOE_BM * XU / THREADS, W_CP = ROWS * WU / THREADS;
    static_assert((WR == 16 || WR == 32) && X_CP >= 1 && X_CP <= 4 && W_CP >= 1 && W_CP <= 4,
                  "tile shape");
};
static_assert(moe_tc_geom<true, K_MOE_TC_WARPS, K_MOE_TC_WROWS>::STAGE == K_MOE_TC_STAGE(1) &&
                  moe_tc_geom<false, K_MOE_TC_WARPS, K_MOE_TC_WROWS>::STAGE == K_MOE_TC_STAGE(0) &&
                  K_MOE_BM == 64,
              "K_MOE_TC_SMEM in kern/moe.h");

#define MOE_TC_AUX 512 /* bytes after the stages: the rows' pair ids and routing weights */

#define MOE_WG K_WG /* sm_90a: the INT4 GEMMs issue wgmma (see the file-top comment) */

/* byte offset of 16-byte unit u of token row r / weight row j inside a stage (the swizzles of
 * the file-top comment) */
template <bool I4> __device__ __forceinline__ uint32_t moe_tc_xoff(uint32_t r, uint32_t u)
{
    if (I4 && MOE_WG) /* the wgmma 128-byte swizzle: unit u of row r at u ^ (r % 8) */
        return r * 128 + ((u ^ (r & 7)) << 4);
    return I4 ? r * 128 + ((u ^ ((r & 1) << 2)) << 4) : r * 64 + (u << 4);
}
template <bool I4> __device__ __forceinline__ uint32_t moe_tc_woff(uint32_t j, uint32_t u)
{
    return I4 ? j * 32 + ((u ^ ((j >> 2) & 1)) << 4) : j * 64 + (u << 4);
}

/* 16 bytes global -> shared; the bytes past `bytes` (0..16) are zero-filled. L2 fetches the
 * whole 128-byte line: a stage takes 32 or 64 bytes of a weight row, and the rest of the line
 * is the next stages' (T = 128, H100: expert up GEMM 186 -> 162 us, down 89 -> 82 us). */
__device__ __forceinline__ void moe_cp16(uint32_t dst, const void *src, uint32_t bytes)
{
    asm volatile("cp.async.cg.shared.global.L2::128B [%0], [%1], 16, %2;\n" ::"r"(dst), "l"(src),
                 "r"(bytes));
}
template <int N> __device__ __forceinline__ void moe_cp_wait()
{
    asm volatile("cp.async.wait_group %0;\n" ::"n"(N));
}

/* N = 2 or 4 8 x 8 b16 matrices: lanes 8j..8j+7 address the rows of matrix j; lane (g, t)
 * gets word t of row g of each */
template <int N> __device__ __forceinline__ void moe_ldsm(uint32_t (&r)[N], uint32_t a)
{
    if constexpr (N == 4)
        asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0, %1, %2, %3}, [%4];\n"
                     : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
                     : "r"(a));
    else
        asm volatile("ldmatrix.sync.aligned.m8n8.x2.shared.b16 {%0, %1}, [%2];\n"
                     : "=r"(r[0]), "=r"(r[1])
                     : "r"(a));
}

/* d (+)= a (16 x 16, row) . b (16 x 8, col), bf16 in, fp32 accumulate; ZERO: d = a . b */
template <bool ZERO>
__device__ __forceinline__ void moe_mma(float (&d)[4], const uint32_t (&a)[4], uint32_t b0,
                                        uint32_t b1)
{
    if constexpr (ZERO)
        asm("mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0, %1, %2, %3}, "
            "{%4, %5, %6, %7}, {%8, %9}, {%10, %10, %10, %10};\n"
            : "=f"(d[0]), "=f"(d[1]), "=f"(d[2]), "=f"(d[3])
            : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1), "f"(0.0f));
    else
        asm("mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0, %1, %2, %3}, "
            "{%4, %5, %6, %7}, {%8, %9}, {%0, %1, %2, %3};\n"
            : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
            : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}

/* What a CTA sets up once: its block, columns, the source rows of the copies this thread
 * issues, and the element offsets of its scale ranges in shared memory. */
struct moe_tc_ctx {
    uint32_t smem;       /* shared address of the dynamic shared memory */
    uint32_t blk, n0;    /* row block; first output column (up: act column) */
    uint32_t K, N, nk;   /* inputs, output columns, stages per column tile */
    uint32_t KG, group;  /* INT4: groups per row, group size */
    uint32_t sc_off[2];  /* INT4: element offset of scale ranges 0 and 1 (up: gate, up) */
    const uint16_t *xb;   /* token rows: up, x; down, act */
    uint32_t x[4];        /* element offsets of this thread's copies' rows (~0u: padding) */
    const uint8_t *w[4];  /* weight rows of its copies in column tile 0 (null: past N) */
    uint32_t wc[4];       /* their output columns in tile 0 */
    uint32_t xo, wo;      /* shared offsets of its copies 0 in a stage (copy i: + i * 2048) */
};

/* Queue the copies of stage `kt` of column tile `tile` into the stage at shared address st.
 * A thread's copies i = 0, 1, .. take rows THREADS / XU (and THREADS / WU) apart at the same
 * 16-byte unit, and both swizzles repeat every 8 rows, so copy i lands 2048 i bytes past copy
 * 0 (xo, wo) and only its source advances with the stage. Token rows of n8 tiles past NX are
 * not copied: no MMA reads them. A stage past K (K % BK != 0) zero-fills the inputs beyond K. */
template <bool I4, int W, int WR, int NT, int NX>
__device__ __forceinline__ void moe_tc_load(const struct moe_tc_ctx &c, uint32_t st, uint32_t tile,
                                            uint32_t kt)
{
    using G = moe_tc_geom<I4, W, WR>;
    constexpr uint32_t XR = G::THREADS / G::XU, WR_ = G::THREADS / G::WU; /* rows a copy apart */
    static_assert(XR * (I4 ? 128 : 64) == 2048 && WR_ * (I4 ? 32 : 64) == 2048 && XR % 8 == 0 &&
                      WR_ % 8 == 0,
                  "copy i lands 2048 i bytes past copy 0 (moe_tc_xoff, moe_tc_woff)");
    const uint32_t tid = threadIdx.x, k0 = kt * G::BK, xu = 8 * (tid % G::XU);
    const uint32_t wu = (I4 ? 32 : 8) * (tid % G::WU); /* the unit's first input */
    const uint64_t row_bytes = I4 ? c.K / 2 : 2ull * c.K;
    const uint64_t tile_off = NT > 1 ? tile * G::ROWS * row_bytes : 0;
    if (k0 + G::BK <= c.K) { /* every input of the stage is inside K */
#pragma unroll
        for (uint32_t i = 0; i < G::X_CP; i++)
            if (i * XR < 8 * NX && c.x[i] != ~0u)
                moe_cp16(st + c.xo + 2048 * i, c.xb + (c.x[i] + k0 + xu), 16);
#pragma unroll
        for (uint32_t i = 0; i < G::W_CP; i++)
            if (c.w[i] && (NT == 1 || c.wc[i] + tile * G::ROWS < c.N))
                moe_cp16(st + c.wo + 2048 * i,
                         c.w[i] + tile_off + (I4 ? (k0 + wu) / 2 : 2 * (k0 + wu)), 16);
        return;
    }
#pragma unroll
    for (uint32_t i = 0; i < G::X_CP; i++) {
        const uint32_t k = k0 + xu;
        if (i * XR < 8 * NX && c.x[i] != ~0u)
            moe_cp16(st + c.xo + 2048 * i, c.xb + c.x[i] + (k < c.K ? k : 0), k < c.K ? 16 : 0);
    }
#pragma unroll
    for (uint32_t i = 0; i < G::W_CP; i++) {
        const uint32_t k = k0 + wu;
        if (c.w[i] && c.wc[i] + tile * G::ROWS < c.N) {
            const uint8_t *row = c.w[i] + tile_off;
            moe_cp16(st + c.wo + 2048 * i, k < c.K ? row + (I4 ? k / 2 : 2ull * k) : row,
                     k < c.K ? 16 : 0);
        }
    }
}

/* One 32-input chunk into the warp's tiles for the NX live n8 tiles of tokens: per tile one
 * 16-byte load of token row 8 n + g gives the B operands of both mma steps. Step 0 runs over
 * every tile before step 1, so an accumulator's two mma are NX * MW apart, not back to back. */
/* Queue the copies of stage (ld_tile, ld_kt) into the slot at dst and step to the next stage. */
template <bool I4, int W, int WR, int NT, int NX>
__device__ __forceinline__ void moe_tc_queue(const struct moe_tc_ctx &c, uint32_t dst,
                                             uint32_t &ld_tile, uint32_t &ld_kt)
{
    moe_tc_load<I4, W, WR, NT, NX>(c, dst, ld_tile, ld_kt);
    if (++ld_kt == c.nk)
        ld_kt = 0, ld_tile++;
}

/* The main loops' prologue: stages 0 .. STAGES - 2 queued, one copy group each (empty groups
 * past the last stage keep the wait count uniform). */
template <bool I4, int W, int WR, int NT, int STAGES, int NX>
__device__ __forceinline__ void moe_tc_queue_first(const struct moe_tc_ctx &c, uint32_t n_it,
                                                   uint32_t &ld_tile, uint32_t &ld_kt)
{
#pragma unroll
    for (int s = 0; s < STAGES - 1; s++) {
        if (s < (int)n_it)
            moe_tc_queue<I4, W, WR, NT, NX>(c, c.smem + s * moe_tc_geom<I4, W, WR>::STAGE,
                                            ld_tile, ld_kt);
        k_cp_commit();
    }
}

template <bool I4, bool ZERO, int MW, int NX>
__device__ __forceinline__ void moe_tc_chunk(float (&d)[MW][NX][4], const uint32_t (&a)[MW][2][4],
                                             uint32_t xs, uint32_t h)
{
    const uint32_t lane = threadIdx.x & 31, g = lane >> 2, t = lane & 3;
    uint4 b[NX];
#pragma unroll
    for (int n = 0; n < NX; n++)
        b[n] = k_lds16(xs + moe_tc_xoff<I4>(8 * n + g, 4 * h + t));
#pragma unroll
    for (int n = 0; n < NX; n++)
#pragma unroll
        for (int m = 0; m < MW; m++)
            moe_mma<ZERO>(d[m][n], a[m][0], b[n].x, b[n].y);
#pragma unroll
    for (int n = 0; n < NX; n++)
#pragma unroll
        for (int m = 0; m < MW; m++)
            moe_mma<false>(d[m][n], a[m][1], b[n].z, b[n].w);
}

/* acc += scale * gacc for group gi. Lane (g, t) holds weight rows 16 m + g (c0, c1) and
 * 16 m + g + 8 (c2, c3) of the warp's WR. */
template <bool UP, int W, int WR, int NX>
__device__ __forceinline__ void
moe_tc_scale(float (&acc)[WR / 16][NX][4], const float (&gacc)[WR / 16][NX][4],
             const struct moe_tc_ctx &c, const uint16_t *sc, uint32_t gi, uint32_t tile)
{
    const uint32_t lane = threadIdx.x & 31, warp = threadIdx.x >> 5, g = lane >> 2;
#pragma unroll
    for (int m = 0; m < WR / 16; m++)
#pragma unroll
        for (int hr = 0; hr < 2; hr++) {
            /* up: the warp's first WR/2 rows are gate rows of its WR/2 act columns, the
             * others the up rows of the same columns */
            const uint32_t r = 16 * m + 8 * hr + g, range = UP ? r / (WR / 2) : 0;
            const uint32_t col =
                UP ? warp * (WR / 2) + r % (WR / 2) : tile * (W * WR) + warp * WR + r;
            const float s = k_bfbits2f(sc[c.sc_off[range] + col * c.KG + gi]);
#pragma unroll
            for (int n = 0; n < NX; n++) {
                acc[m][n][2 * hr] = fmaf(s, gacc[m][n][2 * hr], acc[m][n][2 * hr]);
                acc[m][n][2 * hr + 1] = fmaf(s, gacc[m][n][2 * hr + 1], acc[m][n][2 * hr + 1]);
            }
        }
}

/* One INT4 stage (inputs k0..k0+63, two 32-input chunks). */
template <bool UP, int W, int WR, int NX>
__device__ __forceinline__ void moe_tc_stage_i4(float (&acc)[WR / 16][NX][4],
                                                float (&gacc)[WR / 16][NX][4],
                                                const struct moe_tc_ctx &c, uint32_t st,
                                                const uint16_t *sc, uint32_t k0, uint32_t tile)
{
    using G = moe_tc_geom<true, W, WR>;
    constexpr int MW = WR / 16;
    const uint32_t lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    /* word t of weight rows 8 j + g of the warp (matrix j = rows 8 j .. 8 j + 7), both chunks
     * up front (a chunk past K reads zero-filled words and is skipped below) */
    uint32_t wq[2][2 * MW];
#pragma unroll
    for (uint32_t h = 0; h < 2; h++)
        moe_ldsm<2 * MW>(wq[h], st + G::X_BYTES + moe_tc_woff<true>(WR * warp + lane % WR, h));
#pragma unroll
    for (uint32_t h = 0; h < 2; h++) {
        const uint32_t kc = k0 + 32 * h;
        if (kc >= c.K) /* K % 64 == 32: the last stage holds one chunk */
            break;
        uint32_t a[MW][2][4];
#pragma unroll
        for (int m = 0; m < MW; m++)
#pragma unroll
            for (int s = 0; s < 2; s++) {
                a[m][s][0] = k_i4_bf2(wq[h][2 * m], 2 * s);
                a[m][s][1] = k_i4_bf2(wq[h][2 * m + 1], 2 * s);
                a[m][s][2] = k_i4_bf2(wq[h][2 * m], 2 * s + 1);
                a[m][s][3] = k_i4_bf2(wq[h][2 * m + 1], 2 * s + 1);
            }
        if ((kc & (c.group - 1)) == 0) /* a group starts: its accumulator from zero */
            moe_tc_chunk<true, true, MW, NX>(gacc, a, st, h);
        else
            moe_tc_chunk<true, false, MW, NX>(gacc, a, st, h);
        if (((kc + 32) & (c.group - 1)) == 0) /* and ends */
            moe_tc_scale<UP, W, WR, NX>(acc, gacc, c, sc, kc / c.group, tile);
    }
}

/* One bf16 stage (inputs k0..k0+31, one chunk); weight rows 16 m + g (+8) as 16-byte loads. */
template <int W, int WR, int NX>
__device__ __forceinline__ void moe_tc_stage_bf16(float (&acc)[WR / 16][NX][4], uint32_t st)
{
    using G = moe_tc_geom<false, W, WR>;
    constexpr int MW = WR / 16;
    const uint32_t lane = threadIdx.x & 31, warp = threadIdx.x >> 5, g = lane >> 2, t = lane & 3;
    uint32_t a[MW][2][4];
#pragma unroll
    for (int m = 0; m < MW; m++) {
        const uint4 lo = k_lds16(st + G::X_BYTES + moe_tc_woff<false>(WR * warp + 16 * m + g, t));
        const uint4 hi =
            k_lds16(st + G::X_BYTES + moe_tc_woff<false>(WR * warp + 16 * m + g + 8, t));
        const uint32_t v[2][4] = {{lo.x, hi.x, lo.y, hi.y}, {lo.z, hi.z, lo.w, hi.w}};
#pragma unroll
        for (int s = 0; s < 2; s++)
#pragma unroll
            for (int q = 0; q < 4; q++)
                a[m][s][q] = v[s][q];
    }
    moe_tc_chunk<false, false, MW, NX>(acc, a, st, 0);
}


/* Lane (g, t) holds v0, v1 at tokens 8 n + 2t, 8 n + 2t + 1 of column c (c's parity that of
 * g); with lane ^ 4 (column c ^ 1) it makes a column pair: even g gets token 8 n + 2t, odd g
 * token 8 n + 2t + 1, as (lo, hi) = columns (c & ~1, c | 1). All lanes must call it. */
__device__ __forceinline__ __nv_bfloat162 moe_tc_pair(float v0, float v1, uint32_t g)
{
    const float recv = __shfl_xor_sync(0xFFFFFFFFu, g & 1 ? v0 : v1, 4);
    return g & 1 ? __floats2bfloat162_rn(recv, v1) : __floats2bfloat162_rn(v0, recv);
}

/* The outputs of column tile `tile` for the n8 tiles of tokens t0 .. t0 + NX - 1: up, act of
 * the block's rows (zero for padding rows, and with REST for the n8 tiles past NX: t0 = 0);
 * down, y of the live rows. */
template <bool UP, int W, int WR, int NX, bool REST = true>
__device__ __forceinline__ void moe_tc_store(const struct k_moe_gemm_params &p,
                                             const struct moe_tc_ctx &c,
                                             const float (&acc)[WR / 16][NX][4],
                                             const uint32_t *pair, const float *wt, uint32_t tile,
                                             uint32_t t0 = 0)
{
    const uint32_t lane = threadIdx.x & 31, warp = threadIdx.x >> 5, g = lane >> 2, t = lane & 3;
    __nv_bfloat162 *y = (__nv_bfloat162 *)p.y; /* N is even: column pairs are 4-byte aligned */
    if constexpr (UP) {
        /* gate and up of act column col: WR 32, rows g (+8) of m tile 0 and of m tile 1;
         * WR 16, rows g and g + 8 of the one m tile */
        constexpr int CG = WR == 32 ? 2 : 1;
#pragma unroll
        for (int n = 0; n < (REST ? K_MOE_BM / 8 : NX); n++)
#pragma unroll
            for (int cg = 0; cg < CG; cg++) {
                const uint32_t col = c.n0 + warp * (WR / 2) + 8 * cg + g;
                float v[2] = {0.0f, 0.0f};
                if (n < NX) {
                    const int nn = n < NX ? n : 0;
#pragma unroll
                    for (int q = 0; q < 2; q++) { /* act_fn(gate) * up on bf16 tensors */
                        const float gate = WR == 32 ? acc[0][nn][2 * cg + q] : acc[0][nn][q];
                        const float up =
                            WR == 32 ? acc[WR / 16 - 1][nn][2 * cg + q] : acc[0][nn][2 + q];
                        v[q] = k_round_bf16(k_silu(k_round_bf16(gate))) * k_round_bf16(up);
                    }
                }
                const __nv_bfloat162 o = moe_tc_pair(v[0], v[1], g);
                const uint32_t r = 8 * (t0 + n) + 2 * t + (g & 1), cc = col & ~1u;
                if (cc < c.N) {
                    const bool live = n < NX && pair[r] != K_MOE_SENTINEL;
                    y[(((uint64_t)c.blk * K_MOE_BM + r) * c.N + cc) / 2] =
                        live ? o : __floats2bfloat162_rn(0.0f, 0.0f);
                }
            }
    } else {
#pragma unroll
        for (int n = 0; n < NX; n++) {
            const uint32_t r0 = 8 * (t0 + n) + 2 * t, r = r0 + (g & 1), pr = pair[r];
            const float w0 = wt[r0], w1 = wt[r0 + 1]; /* y_k * routing_weights.to(bf16) */
#pragma unroll
            for (int m = 0; m < WR / 16; m++)
#pragma unroll
                for (int hr = 0; hr < 2; hr++) {
                    const uint32_t col = c.n0 + tile * (W * WR) + warp * WR + 16 * m + 8 * hr + g;
                    const __nv_bfloat162 o =
                        moe_tc_pair(k_round_bf16(acc[m][n][2 * hr]) * w0,
                                    k_round_bf16(acc[m][n][2 * hr + 1]) * w1, g);
                    const uint32_t cc = col & ~1u;
                    if (pr != K_MOE_SENTINEL && cc < c.N)
                        y[((uint64_t)pr * c.N + cc) / 2] = o;
                }
        }
    }
}

#if MOE_WG
/* ---- sm_90a: the INT4 main loop on wgmma ---- */

/* d (+)= A (64 weight rows x 16 inputs, this warp's 16 rows in registers, the mma.m16n8k16 A
 * layout) . B (16 inputs x 8 NX token rows at desc); accumulate 0: d = A . B. */
template <int NX>
__device__ __forceinline__ void moe_wg_mma(float (&d)[NX][4], const uint32_t (&a)[4], uint64_t desc,
                                           uint32_t accumulate);
/* the accumulator operands of n8 tiles 0..NX-1 */
#define MOE_WG_D1 "+f"(d[0][0]), "+f"(d[0][1]), "+f"(d[0][2]), "+f"(d[0][3])
#define MOE_WG_D2 MOE_WG_D1, "+f"(d[1][0]), "+f"(d[1][1]), "+f"(d[1][2]), "+f"(d[1][3])
#define MOE_WG_D3 MOE_WG_D2, "+f"(d[2][0]), "+f"(d[2][1]), "+f"(d[2][2]), "+f"(d[2][3])
#define MOE_WG_D4 MOE_WG_D3, "+f"(d[3][0]), "+f"(d[3][1]), "+f"(d[3][2]), "+f"(d[3][3])
#define MOE_WG_D5 MOE_WG_D4, "+f"(d[4][0]), "+f"(d[4][1]), "+f"(d[4][2]), "+f"(d[4][3])
#define MOE_WG_D6 MOE_WG_D5, "+f"(d[5][0]), "+f"(d[5][1]), "+f"(d[5][2]), "+f"(d[5][3])
#define MOE_WG_D7 MOE_WG_D6, "+f"(d[6][0]), "+f"(d[6][1]), "+f"(d[6][2]), "+f"(d[6][3])
#define MOE_WG_D8 MOE_WG_D7, "+f"(d[7][0]), "+f"(d[7][1]), "+f"(d[7][2]), "+f"(d[7][3])

/* moe_wg_mma<NX>: DREGS names the N / 2 accumulator registers of m64nNk16 (N = 8 NX), REST
 * the A registers and the descriptor, ACC the accumulate flag */
#define MOE_WG_MMA(NX, N, DREGS, REST, ACC)                                                        \
    template <>                                                                                    \
    __device__ __forceinline__ void moe_wg_mma<NX>(float(&d)[NX][4], const uint32_t(&a)[4],        \
                                                   uint64_t desc, uint32_t accumulate)             \
    {                                                                                              \
        asm volatile("{\n.reg .pred p;\nsetp.ne.b32 p, " ACC ", 0;\n"                              \
                     "wgmma.mma_async.sync.aligned.m64n" N "k16.f32.bf16.bf16 {" DREGS "}, "       \
                     REST ", p, 1, 1, 0;\n}\n"                                                     \
                     : MOE_WG_D##NX                                                                \
                     : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "l"(desc), "r"(accumulate));    \
    }
MOE_WG_MMA(1, "8", "%0, %1, %2, %3", "{%4, %5, %6, %7}, %8", "%9")
MOE_WG_MMA(2, "16", "%0, %1, %2, %3, %4, %5, %6, %7", "{%8, %9, %10, %11}, %12", "%13")
MOE_WG_MMA(3, "24",
           "%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11",
           "{%12, %13, %14, %15}, %16", "%17")
MOE_WG_MMA(4, "32",
           "%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15",
           "{%16, %17, %18, %19}, %20", "%21")
MOE_WG_MMA(5, "40",
           "%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, "
           "%16, %17, %18, %19",
           "{%20, %21, %22, %23}, %24", "%25")
MOE_WG_MMA(6, "48",
           "%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, "
           "%16, %17, %18, %19, %20, %21, %22, %23",
           "{%24, %25, %26, %27}, %28", "%29")
MOE_WG_MMA(7, "56",
           "%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, "
           "%16, %17, %18, %19, %20, %21, %22, %23, %24, %25, %26, %27",
           "{%28, %29, %30, %31}, %32", "%33")
MOE_WG_MMA(8, "64",
           "%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, "
           "%16, %17, %18, %19, %20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31",
           "{%32, %33, %34, %35}, %36", "%37")
#undef MOE_WG_MMA
#undef MOE_WG_D1
#undef MOE_WG_D2
#undef MOE_WG_D3
#undef MOE_WG_D4
#undef MOE_WG_D5
#undef MOE_WG_D6
#undef MOE_WG_D7
#undef MOE_WG_D8


/* The A operand of 32-input chunk h of the stage at st, for the warp's MW m16 tiles and both
 * k16 steps. The inputs stay in their natural order (the hardware reads the token tile): lane
 * (g, t) reads all four nibble words of its rows' chunk and takes pair t of each, so word j
 * gives inputs 8 j + 2t, 8 j + 2t + 1 (k16 step j / 2, register half j % 2). */
template <int W, int WR>
__device__ __forceinline__ void moe_wg_build(uint32_t (&a)[WR / 16][2][4], uint32_t st, uint32_t h)
{
    using G = moe_tc_geom<true, W, WR>;
    const uint32_t lane = threadIdx.x & 31, warp = threadIdx.x >> 5, g = lane >> 2, t = lane & 3;
#pragma unroll
    for (int m = 0; m < WR / 16; m++) {
        const uint32_t j = WR * warp + 16 * m + g;
        const uint4 lo = k_lds16(st + G::X_BYTES + moe_tc_woff<true>(j, h));
        const uint4 hi = k_lds16(st + G::X_BYTES + moe_tc_woff<true>(j + 8, h));
        const uint32_t wl[4] = {lo.x, lo.y, lo.z, lo.w}, wh[4] = {hi.x, hi.y, hi.z, hi.w};
#pragma unroll
        for (int s = 0; s < 2; s++) {
            a[m][s][0] = k_i4_bf2(wl[2 * s] >> (4 * t), 0);
            a[m][s][1] = k_i4_bf2(wh[2 * s] >> (4 * t), 0);
            a[m][s][2] = k_i4_bf2(wl[2 * s + 1] >> (4 * t), 0);
            a[m][s][3] = k_i4_bf2(wh[2 * s + 1] >> (4 * t), 0);
        }
    }
    k_wg_pin(a);
}

/* The four wgmma of chunk h of the stage at st: both k16 steps, every m64 tile. */
template <int MW, int NX>
__device__ __forceinline__ void moe_wg_chunk(float (&gacc)[MW][NX][4],
                                             const uint32_t (&a)[MW][2][4], uint32_t st,
                                             uint32_t h, uint32_t start)
{
    k_wg_pin(gacc);
    k_wg_fence();
#pragma unroll
    for (int s = 0; s < 2; s++)
#pragma unroll
        for (int m = 0; m < MW; m++)
            moe_wg_mma<NX>(gacc[m], a[m][s], k_wg_desc(st + 64 * h + 32 * s, 16), s || !start);
    k_wg_commit();
}

/* The main loop on wgmma, for groups of 64 or 128 inputs (K % 64 == 0: every stage whole and
 * inside one group). The warpgroup's m64 tile m is m16 tile m of its four warps, so the
 * accumulators keep the mma.sync layout (acc[m][n][q]: rows 16 m + g (+8) of the warp, tokens
 * 8 n + 2t (+1)) and moe_tc_scale / moe_tc_store serve both. Software-pipelined by 32-input
 * chunk, so the tensor cores run while the warps expand weights, wait and copy:
 *   chunk 0's wgmma (its A expanded last iteration) | expand chunk 1 | chunk 1's wgmma |
 *   stage it + 1 landed, barrier, queue stage it + STAGES - 1 | wait for chunk 0 |
 *   expand chunk 0 of stage it + 1 | wait for chunk 1 | at a group's end acc += scale * gacc.
 * The barrier frees the slot of stage it - 1, whose wgmma every thread waited for in the
 * iteration before; the first wgmma of a group's first stage starts gacc. */
template <bool UP, int W, int WR, int NT, int STAGES, int NX, bool REST>
__device__ __forceinline__ void moe_wg_main(const struct k_moe_gemm_params &p,
                                            const struct moe_tc_ctx &c, const uint8_t *sm,
                                            uint32_t t0)
{
    using G = moe_tc_geom<true, W, WR>;
    constexpr int MW = WR / 16;
    static_assert(STAGES >= 3, "stage it + 1 lands while stage it computes");
    const uint32_t *pair = (const uint32_t *)(sm + STAGES * G::STAGE);
    const float *wt = (const float *)(pair + K_MOE_BM);
    const uint16_t *sc = (const uint16_t *)(sm + STAGES * G::STAGE + MOE_TC_AUX);
    float acc[MW][NX][4] = {}, gacc[MW][NX][4] = {};
    const uint32_t n_it = NT * c.nk, gshift = __ffs(c.group) - 1;
    uint32_t ld_tile = 0, ld_kt = 0; /* the next stage to queue */
    moe_tc_queue_first<true, W, WR, NT, STAGES, NX>(c, n_it, ld_tile, ld_kt);
    moe_cp_wait<STAGES - 2>(); /* stage 0 */
    asm volatile("fence.proxy.async.shared::cta;\n" ::: "memory");
    __syncthreads();
    uint32_t a0[MW][2][4], a1[MW][2][4];
    moe_wg_build<W, WR>(a0, c.smem, 0);
    uint32_t tile = 0, kt = 0;
    for (uint32_t it = 0; it < n_it; it++) {
        const uint32_t st = c.smem + it % STAGES * G::STAGE, k0 = kt * G::BK;
        const uint32_t start = (k0 & (c.group - 1)) == 0; /* a group's first stage */
        moe_wg_chunk<MW, NX>(gacc, a0, st, 0, start);
        moe_wg_build<W, WR>(a1, st, 1);
        moe_wg_chunk<MW, NX>(gacc, a1, st, 1, 0);
        /* stage it + 1 landed (groups 0..it + 1 of the STAGES - 1 + it queued), and every
         * thread is past stage it - 1 */
        moe_cp_wait<STAGES - 3>();
        asm volatile("fence.proxy.async.shared::cta;\n" ::: "memory");
        __syncthreads();
        if (it + STAGES - 1 < n_it)
            moe_tc_queue<true, W, WR, NT, NX>(c, c.smem + (it + STAGES - 1) % STAGES * G::STAGE,
                                              ld_tile, ld_kt);
        k_cp_commit();
        k_wg_wait<1>(); /* chunk 0: a0 free */
        k_wg_pin(a0);
        if (it + 1 < n_it)
            moe_wg_build<W, WR>(a0, c.smem + (it + 1) % STAGES * G::STAGE, 0);
        k_wg_wait<0>(); /* chunk 1: the stage is read, a1 and gacc free */
        k_wg_pin(gacc);
        if (((k0 + G::BK) & (c.group - 1)) == 0) /* a group's last stage */
            moe_tc_scale<UP, W, WR, NX>(acc, gacc, c, sc, k0 >> gshift, tile);
        if (++kt == c.nk) {
            moe_tc_store<UP, W, WR, NX, REST>(p, c, acc, pair, wt, tile, t0);
#pragma unroll
            for (int m = 0; m < MW; m++)
#pragma unroll
                for (int n = 0; n < NX; n++)
#pragma unroll
                    for (int q = 0; q < 4; q++)
                        acc[m][n][q] = 0.0f;
            kt = 0, tile++;
        }
    }
}
#endif

/* The pipelined main loop over NT column tiles of nk stages each, for NX live n8 tiles. */
template <bool I4, bool UP, int W, int WR, int NT, int STAGES, int NX, bool REST>
__device__ __forceinline__ void moe_tc_main(const struct k_moe_gemm_params &p,
                                            const struct moe_tc_ctx &c, const uint8_t *sm,
                                            uint32_t t0)
{
    using G = moe_tc_geom<I4, W, WR>;
    const uint32_t *pair = (const uint32_t *)(sm + STAGES * G::STAGE);
    const float *wt = (const float *)(pair + K_MOE_BM);
    const uint16_t *sc = (const uint16_t *)(sm + STAGES * G::STAGE + MOE_TC_AUX);
    float acc[WR / 16][NX][4] = {}, gacc[I4 ? WR / 16 : 1][I4 ? NX : 1][4];
    const uint32_t n_it = NT * c.nk;
    uint32_t ld_tile = 0, ld_kt = 0; /* the next stage to queue */
    moe_tc_queue_first<I4, W, WR, NT, STAGES, NX>(c, n_it, ld_tile, ld_kt);
    uint32_t tile = 0, kt = 0;
    for (uint32_t it = 0; it < n_it; it++) {
        moe_cp_wait<STAGES - 2>(); /* stage it has landed (this thread's copies) */
        __syncthreads();           /* everyone's; and stage it - 1 is free to refill */
        if (it + STAGES - 1 < n_it)
            moe_tc_queue<I4, W, WR, NT, NX>(c, c.smem + (it + STAGES - 1) % STAGES * G::STAGE,
                                            ld_tile, ld_kt);
        k_cp_commit();
        const uint32_t st = c.smem + it % STAGES * G::STAGE;
        if constexpr (I4)
            moe_tc_stage_i4<UP, W, WR, NX>(acc, gacc, c, st, sc, kt * G::BK, tile);
        else
            moe_tc_stage_bf16<W, WR, NX>(acc, st);
        if (++kt == c.nk) {
            moe_tc_store<UP, W, WR, NX, REST>(p, c, acc, pair, wt, tile, t0);
#pragma unroll
            for (int m = 0; m < WR / 16; m++)
#pragma unroll
                for (int n = 0; n < NX; n++)
#pragma unroll
                    for (int q = 0; q < 4; q++)
                        acc[m][n][q] = 0.0f;
            kt = 0, tile++;
        }
    }
}

/* sm_90a INT4 with groups of 64 or more runs the wgmma stages; groups of 32 (which a K % 64 == 32
 * needs) and other builds the mma.sync ones. */
template <bool I4, bool UP, int W, int WR, int NT, int STAGES, int NX, bool REST = true>
__device__ __forceinline__ void moe_tc_run(const struct k_moe_gemm_params &p,
                                           const struct moe_tc_ctx &c, const uint8_t *sm,
                                           uint32_t t0 = 0)
{
#if MOE_WG
    if constexpr (I4)
        if (c.group >= 64) {
            moe_wg_main<UP, W, WR, NT, STAGES, NX, REST>(p, c, sm, t0);
            return;
        }
#endif
    moe_tc_main<I4, UP, W, WR, NT, STAGES, NX, REST>(p, c, sm, t0);
}

/* Copy `bytes` of scales starting at global address a into shared memory at dst, from a's
 * 16-byte boundary down (the scale region starts 16-byte aligned, so that stays inside the
 * tensor); returns the element offset of a's first scale from dst. */
template <int THREADS>
__device__ __forceinline__ uint32_t moe_tc_load_scales(uint32_t dst, const uint8_t *a,
                                                       uint32_t bytes)
{
    const uint8_t *a16 = (const uint8_t *)((uintptr_t)a & ~(uintptr_t)15);
    const uint32_t lead = (uint32_t)(a - a16), total = lead + bytes;
    for (uint32_t o = threadIdx.x * 16; o < total; o += THREADS * 16)
        moe_cp16(dst + o, a16 + o, total - o < 16 ? total - o : 16);
    return lead / 2;
}

/* Row block blockIdx.x's pair ids into pair[K_MOE_BM] and, for the down GEMM, their routing
 * weights as bf16 into wt; returns the block's live rows (its pairs come first, k_moe_align:
 * rows 0..live-1). A barrier for the whole CTA. */
template <bool UP>
__device__ __forceinline__ uint32_t moe_block_rows(const struct k_moe_gemm_params &p,
                                                   uint32_t *pair, float *wt)
{
    const uint32_t tid = threadIdx.x;
    if (tid < K_MOE_BM) {
        const uint32_t pr = ((const uint32_t *)p.sorted)[(uint64_t)blockIdx.x * K_MOE_BM + tid];
        pair[tid] = pr;
        if (!UP) /* y_k * routing_weights.to(bf16) */
            wt[tid] = pr != K_MOE_SENTINEL ? k_round_bf16(((const float *)p.weights)[pr]) : 0.0f;
    }
    return __syncthreads_count(tid < K_MOE_BM && pair[tid] != K_MOE_SENTINEL);
}

/* The narrow build's passes (NXMAX < 8, the up GEMM): the block's live n8 tiles NXMAX at a
 * time, the stage's token rows 0 .. 8 NXMAX - 1 holding block rows 8 t0 .., the weights
 * streamed again each pass; then the act rows past the live tiles zero. */
template <bool I4, int W, int WR, int STAGES, int NXMAX>
__device__ __forceinline__ void moe_tc_passes(const struct k_moe_gemm_params &p,
                                              struct moe_tc_ctx &c, const uint8_t *sm,
                                              const uint32_t *pair, uint32_t live)
{
    using G = moe_tc_geom<I4, W, WR>;
    static_assert(NXMAX == 2 && G::THREADS / G::XU == 8 * NXMAX,
                  "a pass's token rows are this thread's copy 0");
    const uint32_t tid = threadIdx.x, ntiles = (live + 7) / 8, N = c.N;
    for (uint32_t t0 = 0; t0 < ntiles; t0 += NXMAX) {
        if (t0) {
            __syncthreads(); /* every warp is past the last pass's stages */
            const uint32_t pr = pair[8 * t0 + tid / G::XU];
            c.x[0] = pr != K_MOE_SENTINEL ? pr / p.d.k * p.d.H : ~0u;
        }
        if (ntiles - t0 >= 2)
            moe_tc_run<I4, true, W, WR, 1, STAGES, 2, false>(p, c, sm, t0);
        else
            moe_tc_run<I4, true, W, WR, 1, STAGES, 1, false>(p, c, sm, t0);
    }
    for (uint32_t i = tid; i < (K_MOE_BM - 8 * ntiles) * (G::ROWS / 2 / 8); i += G::THREADS) {
        const uint32_t rr = 8 * ntiles + i / (G::ROWS / 2 / 8);
        const uint32_t col = c.n0 + 8 * (i % (G::ROWS / 2 / 8));
        if (col < N) /* N is a multiple of 8 here (K_MOE_TC_NARROW_OK) */
            *(uint4 *)((uint16_t *)p.y + ((uint64_t)c.blk * K_MOE_BM + rr) * N + col) =
                make_uint4(0, 0, 0, 0);
    }
}

template <bool I4, bool UP, int W, int WR, int NT, int STAGES, int NXMAX = 8>
__device__ __forceinline__ void moe_tc_gemm(const struct k_moe_gemm_params &p)
{
    using G = moe_tc_geom<I4, W, WR>;
    extern __shared__ __align__(16) uint8_t moe_tc_raw[];
    /* INT4: the stages from a 1024-byte boundary (the wgmma swizzle's period; K_MOE_TC_SMEM
     * has the room) */
    const uint32_t pad = (1024u - ((uint32_t)__cvta_generic_to_shared(moe_tc_raw) & 1023u)) & 1023u;
    uint8_t *const moe_tc_smem = moe_tc_raw + (I4 ? pad : 0u);
    const struct k_step *st = k_step_of(p.step);
    const uint32_t blk = blockIdx.x, tid = threadIdx.x;
    if (st->done || blk >= *(const uint32_t *)p.n_blocks)
        return;
    const uint32_t k = p.d.k, H = p.d.H, I = p.d.I, N = UP ? I : H, K = UP ? H : I;
    if (!K_MOE_TC_OK(I4, K, N) || !K_MOE_TC_FITS(p.d)) /* the planner launches _simt for these */
        return;
    const uint32_t e = ((const uint32_t *)p.block_expert)[blk];
    uint32_t *pair = (uint32_t *)(moe_tc_smem + STAGES * G::STAGE);
    float *wt = (float *)(pair + K_MOE_BM);
    const uint32_t live = moe_block_rows<UP>(p, pair, wt);

    struct moe_tc_ctx c;
    c.smem = (uint32_t)__cvta_generic_to_shared(moe_tc_smem);
    c.xb = (const uint16_t *)p.x;
    c.blk = blk, c.K = K, c.N = N, c.nk = (K + G::BK - 1) / G::BK;
    c.n0 = blockIdx.y * (UP ? G::ROWS / 2 : G::ROWS * NT);
    c.group = I4 ? p.d.group : 0, c.KG = I4 ? K / p.d.group : 0;
#pragma unroll
    for (uint32_t i = 0; i < 4; i++) {
        const uint32_t r = (tid + i * G::THREADS) / G::XU % K_MOE_BM, pr = pair[r];
        /* 32-bit offsets: T_max * H and max_blocks * BM * I elements (K_MOE_TC_FITS) */
        c.x[i] = i < G::X_CP && pr != K_MOE_SENTINEL ? (UP ? pr / k * H : (blk * K_MOE_BM + r) * I)
                                                     : ~0u;
    }
    const uint64_t row_bytes = I4 ? K / 2 : 2ull * K;
#pragma unroll
    for (uint32_t i = 0; i < 4; i++) {
        const uint32_t j = (tid + i * G::THREADS) / G::WU, r = j % WR;
        /* up: warp w's rows are the gate then the up rows of act columns
         * n0 + w WR/2 .. n0 + (w + 1) WR/2 - 1 */
        const uint32_t n = UP ? c.n0 + (j / WR) * (WR / 2) + r % (WR / 2) : c.n0 + j;
        const uint64_t row =
            UP ? (uint64_t)e * 2 * I + (r >= WR / 2 ? I : 0) + n : (uint64_t)e * H + n;
        c.wc[i] = n;
        c.w[i] = i < G::W_CP && n < N ? (const uint8_t *)p.w + row * row_bytes : nullptr;
    }
    c.xo = moe_tc_xoff<I4>(tid / G::XU, tid % G::XU);
    c.wo = G::X_BYTES + moe_tc_woff<I4>(tid / G::WU, tid % G::WU);
    if (live == 0) { /* no pairs (k_moe_align makes no such block): up writes its zero rows */
        const float zero[WR / 16][1][4] = {};
        if (UP)
            moe_tc_store<UP, W, WR, 1>(p, c, zero, pair, wt, 0);
        return;
    }
    if constexpr (I4) { /* every scale of the CTA's weight rows, in the first copy group */
        const uint32_t base = c.smem + STAGES * G::STAGE + MOE_TC_AUX;
        const uint8_t *sc = (const uint8_t *)p.w + p.scales_offset;
        const uint32_t rb = 2 * c.KG; /* scale bytes per row */
        if (UP) {
            const uint32_t rows = N - c.n0 < G::ROWS / 2 ? N - c.n0 : G::ROWS / 2;
            const uint64_t r0 = (uint64_t)e * 2 * I + c.n0;
            c.sc_off[0] = moe_tc_load_scales<G::THREADS>(base, sc + r0 * rb, rows * rb);
            const uint32_t second = G::ROWS / 2 * rb + 16; /* range 1's shared offset */
            c.sc_off[1] = second / 2 + moe_tc_load_scales<G::THREADS>(
                                           base + second, sc + (r0 + I) * rb, rows * rb);
        } else {
            const uint32_t rows = N - c.n0 < G::ROWS * NT ? N - c.n0 : G::ROWS * NT;
            c.sc_off[0] =
                moe_tc_load_scales<G::THREADS>(base, sc + ((uint64_t)e * H + c.n0) * rb, rows * rb);
            c.sc_off[1] = 0;
        }
    }
    if constexpr (NXMAX < 8) {
        static_assert(UP && NT == 1, "the narrow build is the up GEMM's");
        if (N % 8) /* the planner launches the other builds for these */
            return;
        moe_tc_passes<I4, W, WR, STAGES, NXMAX>(p, c, moe_tc_smem, pair, live);
        return;
    }
    switch ((live + 7) / 8) {
#define MOE_TC_CASE(NX)                                                                            \
    case NX:                                                                                       \
        moe_tc_run<I4, UP, W, WR, NT, STAGES, NX>(p, c, moe_tc_smem);                              \
        break;
        MOE_TC_CASE(1)
        MOE_TC_CASE(2)
        MOE_TC_CASE(3)
        MOE_TC_CASE(4)
        MOE_TC_CASE(5)
        MOE_TC_CASE(6)
        MOE_TC_CASE(7)
    default:
        moe_tc_run<I4, UP, W, WR, NT, STAGES, 8>(p, c, moe_tc_smem);
        break;
#undef MOE_TC_CASE
    }
}

#define MOE_TC_KERNEL(name, I4, UP, NT)                                                            \
    extern "C" __global__ void __launch_bounds__(K_MOE_TC_THREADS, K_MOE_TC_CTAS)                  \
        name(struct k_moe_gemm_params p)                                                           \
    {                                                                                              \
        moe_tc_gemm<I4, UP, K_MOE_TC_WARPS, K_MOE_TC_WROWS, NT, K_MOE_TC_STAGES>(p);               \
    }
MOE_TC_KERNEL(k_moe_gemm_up_bf16, false, true, 1)
MOE_TC_KERNEL(k_moe_gemm_up_i4, true, true, 1)
/* k_moe_gemm_up_i4_narrow (kern/moe.h): at most 2 n8 tiles of tokens a pass, so the
 * accumulators of the 8-tile loop do not hold the register count (and the CTAs an SM) down */
extern "C" __global__ void __launch_bounds__(K_MOE_TC_THREADS, K_MOE_TC_NARROW_CTAS)
    k_moe_gemm_up_i4_narrow(struct k_moe_gemm_params p)
{
    moe_tc_gemm<true, true, K_MOE_TC_WARPS, K_MOE_TC_WROWS, 1, K_MOE_TC_STAGES, 2>(p);
}
MOE_TC_KERNEL(k_moe_gemm_down_bf16, false, false, K_MOE_TC_NT_DOWN)
MOE_TC_KERNEL(k_moe_gemm_down_i4, true, false, K_MOE_TC_NT_DOWN)
#undef MOE_TC_KERNEL

/* ---- few tokens an expert: k_moe_few_up_g128 / k_moe_few_down_g128 ---------------------------
 *
 * A short chunk routes a handful of tokens to each expert (128 tokens: about 4 pairs an expert,
 * every expert touched), so the expert GEMMs stream all the experts' weights for one or two n8
 * tiles of tokens: a bandwidth problem. The tensor-core build copies the weights through
 * shared memory in stages and spends about 400 instructions a warp a stage, well short of the
 * copy rate there. These kernels read them as the decode MoE does (kern/common.cuh,
 * k_i4_g128_mma): lane (g, t) loads, per group of 128 inputs, the 16 bytes of rows g and g + 8
 * that cover inputs 32 t .. 32 t + 31, straight into registers, MOE_FEW_RING(up) groups
 * ahead, and the MMA's B operand is token g of an n8 tile at the same inputs, read from the
 * block's token rows staged in shared memory.
 *
 * A CTA of K_MOE_FEW_THREADS takes one row block (one expert, its pairs first) against
 * 4 warps x 32 weight rows: up, warp w the 16 gate rows and the 16 up rows of act columns
 * n0 + 16 w ..; down, 32 output columns. The block's live n8 tiles run in passes of up to
 * K_MOE_FEW_NX(up) tiles: a pass stages its token rows over all of K (cp.async, zeros for
 * padding rows), then streams the weights once; a block with more pairs than a pass holds
 * streams them again (from L2 if they are still there). Numerics and outputs are those of the
 * tensor-core build (moe_tc_store): per group the exact products summed in fp32 by the MMA,
 * acc += scale * group sum in group order, one rounding; act rows of padding are zero. */

/* Groups of weights a lane has in flight, and resident CTAs per SM the registers are cut for.
 * Up (K = H): four groups, three CTAs where the shared memory of three fits (sm_90: 227 KiB),
 * else two. Down (K = I, four groups at full size, one n8 tile a pass): two groups, five CTAs
 * (H100, 128 tokens: 61-62 us against 70-72 with the up kernel's four groups, two n8 tiles a
 * pass and three CTAs; four CTAs 65, six 63, one group and eight CTAs 75). */
#define MOE_FEW_RING(up) ((up) ? 4 : 2)
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
#define MOE_FEW_CTAS_UP 3
#else
#define MOE_FEW_CTAS_UP 2
#endif
#define MOE_FEW_CTAS_DOWN 5

/* Lane (g, t)'s weight rows: row g of the warp's m16 tile 0 at its 16 bytes of group 0, and
 * its scales; half h (rows + 8) and tile m (rows + ms) lie at fixed distances from it */
struct moe_few_rows {
    const uint8_t *w;
    const uint16_t *s;
    uint32_t rb, nch, ms; /* bytes a row, groups (scales) a row, rows from tile 0 to tile 1 */
};

__device__ __forceinline__ void moe_few_fetch(uint4 (&q)[2][2], float (&s)[2][2],
                                              const struct moe_few_rows &r, uint32_t c)
{
#pragma unroll
    for (int m = 0; m < 2; m++)
#pragma unroll
        for (int h = 0; h < 2; h++) {
            const uint32_t row = m * r.ms + 8 * h;
            /* L2 fetches the whole 128-byte line: this group's 64 bytes of the row and the
             * next group's (T = 128, H100: up 183 -> 158 us) */
            q[m][h] = k_ld_stream<true>(r.w + (uint64_t)row * r.rb + 64 * c);
            s[m][h] = k_bfbits2f(__ldg(r.s + row * r.nch + c));
        }
}

/* One group: xs is the shared address of lane (g, t)'s inputs of this group in token row g
 * of the pass's first n8 tile (tile n at xs + n * ts). The A operands of a k16 step are
 * expanded once for all NX tiles; the group's sums go into acc scaled by their rows' scales. */
template <int NX>
__device__ __forceinline__ void moe_few_group(float (&acc)[2][NX][4], const uint4 (&q)[2][2],
                                              const float (&s)[2][2], uint32_t xs, uint32_t ts)
{
    float gs[2][NX][4] = {};
#pragma unroll
    for (int st = 0; st < 8; st++) {
        const int w = st / 2, i0 = 2 * (st % 2), i1 = i0 + 1;
        uint32_t a[2][4];
#pragma unroll
        for (int m = 0; m < 2; m++) {
            const uint32_t wa = k_word(q[m][0], w), wb = k_word(q[m][1], w);
            a[m][0] = k_i4_bf16x2(wa, i0), a[m][1] = k_i4_bf16x2(wb, i0);
            a[m][2] = k_i4_bf16x2(wa, i1), a[m][3] = k_i4_bf16x2(wb, i1);
        }
#pragma unroll
        for (int n = 0; n < NX; n++) {
            uint32_t b0, b1;
            asm volatile("ld.shared.v2.u32 {%0, %1}, [%2];\n"
                         : "=r"(b0), "=r"(b1)
                         : "r"(xs + n * ts + 8 * st));
#pragma unroll
            for (int m = 0; m < 2; m++)
                k_mma16816(gs[m][n], a[m][0], a[m][1], a[m][2], a[m][3], b0, b1);
        }
    }
#pragma unroll
    for (int m = 0; m < 2; m++)
#pragma unroll
        for (int n = 0; n < NX; n++)
#pragma unroll
            for (int v = 0; v < 4; v++)
                acc[m][n][v] = fmaf(s[m][v / 2], gs[m][n][v], acc[m][n][v]);
}

/* One pass over n8 tiles t0 .. t0 + NX - 1, whose token rows the caller has queued (one
 * cp.async group): the first groups' weights are requested before the rows are waited for. */
template <bool UP, int NX>
__device__ __forceinline__ void moe_few_pass(const struct k_moe_gemm_params &p,
                                             const struct moe_tc_ctx &c,
                                             const struct moe_few_rows &r, const uint32_t *pair,
                                             const float *wt, uint32_t xs, uint32_t ts,
                                             uint32_t t0)
{
    const uint32_t nch = c.KG;
    constexpr int RING = MOE_FEW_RING(UP);
    uint4 q[RING][2][2];
    float s[RING][2][2];
#pragma unroll
    for (int i = 0; i < RING; i++)
        if ((uint32_t)i < nch)
            moe_few_fetch(q[i], s[i], r, i);
    k_cp_wait_all();
    __syncthreads();
    float acc[2][NX][4] = {};
    for (uint32_t c0 = 0; c0 < nch; c0 += RING)
#pragma unroll
        for (int i = 0; i < RING; i++) {
            const uint32_t ch = c0 + i;
            if (ch < nch) {
                moe_few_group<NX>(acc, q[i], s[i], xs + 256 * ch, ts);
                if (ch + RING < nch)
                    moe_few_fetch(q[i], s[i], r, ch + RING);
            }
        }
    moe_tc_store<UP, K_MOE_FEW_THREADS / 32, 32, NX, false>(p, c, acc, pair, wt, 0, t0);
}

template <bool UP>
__device__ __forceinline__ void moe_few_gemm(const struct k_moe_gemm_params &p)
{
    extern __shared__ __align__(16) uint8_t moe_few_smem[];
    const struct k_step *st = k_step_of(p.step);
    const uint32_t blk = blockIdx.x, tid = threadIdx.x;
    if (st->done || blk >= *(const uint32_t *)p.n_blocks)
        return;
    const uint32_t k = p.d.k, H = p.d.H, I = p.d.I, N = UP ? I : H, K = UP ? H : I;
    if (!K_MOE_FEW_OK(p.d)) /* the planner launches the tensor-core build for these */
        return;
    const uint32_t e = ((const uint32_t *)p.block_expert)[blk];
    uint32_t *pair = (uint32_t *)moe_few_smem;
    float *wt = (float *)(pair + K_MOE_BM);
    const uint32_t live = moe_block_rows<UP>(p, pair, wt);

    const uint32_t lane = tid & 31, warp = tid >> 5, g = lane >> 2, t = lane & 3;
    struct moe_tc_ctx c;
    c.blk = blk, c.N = N, c.KG = K / 128;
    c.n0 = blockIdx.y * (UP ? K_MOE_FEW_BN_UP : K_MOE_FEW_BN_DOWN);
    /* up: m16 tile 0 the gate rows, tile 1 the up rows of act columns n0 + 16 w ..; down:
     * output columns n0 + 32 w .. (K_MOE_FEW_OK: no CTA reaches past N) */
    const uint32_t col = c.n0 + (UP ? 16 * warp : 32 * warp) + g;
    const uint64_t row = UP ? (uint64_t)e * 2 * I + col : (uint64_t)e * H + col;
    struct moe_few_rows r;
    r.rb = K / 2, r.nch = c.KG, r.ms = UP ? I : 16;
    r.w = (const uint8_t *)p.w + row * r.rb + 16 * t;
    r.s = (const uint16_t *)((const uint8_t *)p.w + p.scales_offset) + row * c.KG;
    const uint32_t pitch = 2 * K + 16; /* bytes a staged token row: 16-byte units spread */
    const uint32_t xs0 = (uint32_t)__cvta_generic_to_shared(moe_few_smem + 2 * 4 * K_MOE_BM);
    const uint32_t xs = xs0 + g * pitch + 64 * t, ts = 8 * pitch;
    const uint32_t ntiles = (live + 7) / 8;
    constexpr uint32_t NX = K_MOE_FEW_NX(UP);
    for (uint32_t t0 = 0; t0 < ntiles; t0 += NX) {
        const uint32_t nx = min(ntiles - t0, NX);
        if (t0)
            __syncthreads(); /* the last pass has read its rows */
        for (uint32_t rr = 0; rr < 8 * nx; rr++) {
            const uint32_t pr = pair[8 * t0 + rr];
            const uint16_t *src =
                pr == K_MOE_SENTINEL
                    ? (const uint16_t *)p.x
                    : (const uint16_t *)p.x + (UP ? (uint64_t)(pr / k) * H
                                                  : ((uint64_t)blk * K_MOE_BM + 8 * t0 + rr) * I);
            for (uint32_t u = tid; u < K / 8; u += K_MOE_FEW_THREADS)
                k_cp16s(xs0 + rr * pitch + 16 * u, src + 8 * u, pr != K_MOE_SENTINEL);
        }
        k_cp_commit();
        if (nx == NX)
            moe_few_pass<UP, NX>(p, c, r, pair, wt, xs, ts, t0);
        else
            moe_few_pass<UP, 1>(p, c, r, pair, wt, xs, ts, t0);
    }
    if (UP) /* the act rows past the live n8 tiles: zero */
        for (uint32_t i = tid; i < (K_MOE_BM - 8 * ntiles) * (K_MOE_FEW_BN_UP / 8);
             i += K_MOE_FEW_THREADS) {
            const uint32_t rr = 8 * ntiles + i / (K_MOE_FEW_BN_UP / 8);
            const uint32_t col = c.n0 + 8 * (i % (K_MOE_FEW_BN_UP / 8));
            if (col < N)
                *(uint4 *)((uint16_t *)p.y + ((uint64_t)blk * K_MOE_BM + rr) * N + col) =
                    make_uint4(0, 0, 0, 0);
        }
}

extern "C" __global__ void __launch_bounds__(K_MOE_FEW_THREADS, MOE_FEW_CTAS_UP)
    k_moe_few_up_g128(struct k_moe_gemm_params p)
{
    moe_few_gemm<true>(p);
}
extern "C" __global__ void __launch_bounds__(K_MOE_FEW_THREADS, MOE_FEW_CTAS_DOWN)
    k_moe_few_down_g128(struct k_moe_gemm_params p)
{
    moe_few_gemm<false>(p);
}

/* ---- the CUDA-core expert GEMMs (_simt) ---------------------------------------------------- */

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
    uint4 v = k_ld_stream((const uint8_t *)row.w + k0 / 2);
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
    k_moe_gemm_up_bf16_simt(struct k_moe_gemm_params p)
{
    moe_gemm<false, true>(p);
}

extern "C" __global__ void __launch_bounds__(K_MOE_THREADS)
    k_moe_gemm_up_i4_simt(struct k_moe_gemm_params p)
{
    moe_gemm<true, true>(p);
}

extern "C" __global__ void __launch_bounds__(K_MOE_THREADS)
    k_moe_gemm_down_bf16_simt(struct k_moe_gemm_params p)
{
    moe_gemm<false, false>(p);
}

extern "C" __global__ void __launch_bounds__(K_MOE_THREADS)
    k_moe_gemm_down_i4_simt(struct k_moe_gemm_params p)
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
    const float gate = !p.shared       ? 0.0f
                       : p.gate_logit ? k_round_bf16(k_sigmoid(((const float *)p.gate_logit)[t]))
                                      : k_round_bf16(((const float *)p.shared_gate)[t]);
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
