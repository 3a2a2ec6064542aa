/* attn_prefill.cu — causal gated attention of a prefill chunk over the cached prefix plus the
 * chunk itself (MODEL.md §2.3, DESIGN.md §6): k_attn_prefill on CUDA cores, k_attn_prefill_tc
 * on tensor cores. Both compute the same thing with the same rounding points.
 *
 * Query t of the chunk (position pos + t, pos = step->pos) attends to keys 0..pos + t of the
 * cache, which k_attn_rope has already extended with the chunk. Pack GQA: the `group` query
 * heads of kv head kvh are folded into the M dimension, packed row R = t * group + g, so a CTA
 * shares every K/V tile among all of its heads and tokens.
 *
 * Rows t >= step->n_tokens are neither computed nor written; a CTA without live rows exits.
 * Output: out[t, n*hd + c] = bf16(bf16(o) * bf16(sigmoid(gate))) with the gate read from the
 * qg half of the query projection. Softmax statistics are fp32 and the probabilities keep fp32
 * precision in P·V (the flash formulation; PyTorch eager would round them to bf16 first).
 *
 * k_attn_prefill (CUDA cores). Launch: grid (ceil(T_max * group / K_ATTN_BM), n_kv), block
 * K_ATTN_THREADS (8 warps). Warp w owns packed rows R0 + 8w .. R0 + 8w + 7 (attn_core.cuh:
 * lane i holds dims [8i, 8i + 8) of q and of the accumulator). The CTA streams keys
 * 0..kend-1 (kend = pos + its last token + 1) through shared memory in tiles of ATTN_PF_TILE
 * keys, K and V double-buffered with cp.async (2 x 2 x 16 x 256 bf16 = 32 KiB static): the
 * next tile loads while the warps compute the current one. A warp skips the tiles past its
 * own rows' last key; keys of a tile past kend are zero-filled, keys past a row's own position
 * are masked to -inf. Per key and lane: 64 FMAs for the scores, 64 for P·V, about 12
 * shuffles. It serves every head_dim (a multiple of 8, at most 256) and needs no opt-in
 * shared memory: the fallback where k_attn_prefill_tc does not fit.
 *
 * k_attn_prefill_tc (tensor cores, FlashAttention-2 style). Launch: grid (ceil(T_max * group
 * / K_ATTN_TC_BM), n_kv, n_split), block K_ATTN_TC_THREADS (8 warps), K_ATTN_TC_SMEM(hd)
 * bytes of dynamic shared memory (161 KiB at head_dim 256). With n_split > 1 CTA z walks only
 * the z-th run of ceil(tiles / n_split) of the key tiles its rows need and stores its rows'
 * o / l in fp32 with m and l (kern/attn.h); k_attn_prefill_reduce (grid T_max * n_heads, a
 * thread a dim) weighs run s by 2^(m_s - M) l_s, divides by the weights' sum, and gates.
 * CTA x takes the packed rows of block gridDim.x - 1 - x, so the CTAs with the longest key
 * ranges start first. Warp w owns packed
 * rows R0 + 16w .. R0 + 16w + 15 as the M = 16 of mma.m16n8k16 (bf16 in, fp32 accumulate).
 *   Shared memory: the CTA's 128 q rows (loaded once), then K and V tiles of K_ATTN_TC_BN = 32
 *   keys in two of the K_ATTN_TC_STAGES stages, cp.async double-buffered as in k_attn_prefill.
 *   Rows are hd bf16 padded to ld = K_ATTN_TC_LD(hd) elements; 16-byte chunk c of row r is
 *   stored at chunk c ^ (r % 8), so the 8 row addresses of every ldmatrix phase hit 8
 *   different bank groups. Chunks past
 *   hd / 8 up to the next multiple of 16 dims are zero-filled, so head_dim needs only be a
 *   multiple of 8: the padded dims add zero to q.k, and their output columns are not stored.
 *   S = q k^T: per 16 dims, one ldmatrix.x4 of q (the A fragment) and one of K per 16 keys
 *   (non-transposed: K rows are B's columns); a warp's S is 16 x 32 fp32 in 16 registers.
 *   Softmax: online, per query row (a lane holds rows g and g + 8 of its 4-lane quad), in log2
 *   units with the scale folded into one FMA before exp2: p = exp2(s * scale * log2e - m).
 *   Only diagonal tiles (some key past some row's position) are masked; tiles past the warp's
 *   last key are skipped. The rescale of O by exp2(m_old - m_new) is skipped when no row of
 *   the warp raised its max.
 *   O += P V: the S accumulator registers are already P's A-fragment layout (C rows g, g + 8,
 *   columns 2t, 2t + 1 = A rows g, g + 8, k slots 2t, 2t + 1, two n-tiles per 16-key k-step).
 *   The reference keeps P in fp32 (test/ref/kref_attn.c); P rounded once to bf16 would move a
 *   third of the outputs off the reference's bf16 value (4% by more than 2 ulps: the output
 *   is a weighted mean of many V rows and cancels), so P is split as p = hi + lo, hi = bf16(p), lo =
 *   bf16(p - hi) (relative error 2^-17), and each V fragment (ldmatrix.x4.trans: V rows are
 *   keys) feeds two MMAs. That is 3 MMA passes instead of 2, but the extra one reuses the V
 *   fragment, so it costs tensor-core time only, not shared-memory bandwidth.
 *   O is 16 x 256 fp32 per warp (128 registers a lane). At the end it is divided by the row
 *   sum (fp32 sum of the unrounded p), rounded to bf16 into the warp's own q rows of shared
 *   memory, and read back as 16-byte row chunks for the gate (attn_gate8) and coalesced
 *   stores.
 * The sm_90a image at head_dim 256 runs another body on wgmma (attn_wg_run): the same rows per
 * warp, so the same accumulator layout, softmax and end, with warpgroup v (warps 4v .. 4v + 3)
 * issuing the MMAs of rows R0 + 64v .. + 63. q, K and V tiles are kept as four 64-dim blocks of
 * 128-byte rows in the 128-byte swizzle (attn_wg_off), from a 1024-byte boundary: the K-major
 * operands of S = Q K^T (wgmma m64n32k16, both from shared memory) and the MN-major B of
 * O += P V (wgmma m64n256k16, P hi and lo from registers). */
#include "attn_core.cuh"

#define ATTN_PF_TILE 16 /* keys per stage */
#define ATTN_PF_ROWS (ATTN_WARPS * ATTN_ROWS)

#if K_ATTN_BM != ATTN_PF_ROWS
#error "k_attn_prefill: K_ATTN_BM must equal 8 rows per warp times the warps of the block"
#endif

struct attn_pf_smem {
    __align__(16) uint16_t k[2][ATTN_PF_TILE * ATTN_MAX_HD]; /* (stage, key, hd) bf16 */
    __align__(16) uint16_t v[2][ATTN_PF_TILE * ATTN_MAX_HD];
    __align__(16) float pb[ATTN_WARPS][ATTN_PB];
};


__device__ __forceinline__ void attn_cp_wait_prev() { asm volatile("cp.async.wait_group 1;\n" ::); }

/* Queue tile `tile` (keys [16 tile, 16 tile + 16)) of K and V into stage `st`, zeros past kend. */
__device__ __forceinline__ void attn_pf_load(struct attn_pf_smem *sm, int st, uint32_t tile,
                                             const uint16_t *K, const uint16_t *V, uint32_t kend,
                                             uint32_t hd)
{
    uint32_t cpr = hd / 8, n = ATTN_PF_TILE * cpr;
    for (uint32_t i = threadIdx.x; i < n; i += blockDim.x) {
        uint32_t j = i / cpr, c = i - j * cpr, key = tile * ATTN_PF_TILE + j;
        bool ok = key < kend;
        uint64_t off = ok ? (uint64_t)key * hd + c * 8 : 0;
        k_cp16(&sm->k[st][j * hd + c * 8], K + off, ok);
        k_cp16(&sm->v[st][j * hd + c * 8], V + off, ok);
    }
}

/* This warp's work on one staged tile: 4 steps of 4 keys; lim is the last key of this lane's
 * row, wlim the last key any of the warp's rows needs. */
__device__ __forceinline__ void attn_pf_tile(struct attn_acc &a, const float q[ATTN_ROWS][8],
                                             const uint16_t *ks, const uint16_t *vs, uint32_t key_base,
                                             uint32_t lim, uint32_t wlim, uint32_t hd, float sl2,
                                             float *pb)
{
    uint32_t lane = threadIdx.x & 31, c0 = lane * 8;
    bool active = c0 < hd;
#pragma unroll 1
    for (int g = 0; g < ATTN_PF_TILE / ATTN_KG; g++) {
        uint32_t key0 = key_base + g * ATTN_KG;
        if (key0 > wlim)
            break; /* warp-uniform */
        uint4 kc[ATTN_KG], vc[ATTN_KG];
        const uint16_t *kr = ks + g * ATTN_KG * hd + c0, *vr = vs + g * ATTN_KG * hd + c0;
#pragma unroll
        for (int k = 0; k < ATTN_KG; k++)
            kc[k] = active ? *(const uint4 *)(kr + k * hd) : make_uint4(0, 0, 0, 0);
        float s = attn_scores(q, kc);
        s = key0 + (lane & 3) <= lim ? s * sl2 : -INFINITY;
#pragma unroll
        for (int k = 0; k < ATTN_KG; k++)
            vc[k] = active ? *(const uint4 *)(vr + k * hd) : make_uint4(0, 0, 0, 0);
        attn_update(a, s, vc, pb);
    }
}

/* Normalise, gate and store the warp's live rows. */
__device__ __forceinline__ void attn_pf_store(const struct k_attn_prefill_params &p, const struct attn_acc &a,
                                              uint32_t R0w, uint32_t n_live, float *pb)
{
    const struct k_attn_dims &d = p.d;
    uint32_t lane = threadIdx.x & 31, c0 = lane * 8, hd = d.head_dim, group = d.n_heads / d.n_kv;
    float l = attn_row_sum(a.l);
    if ((lane & 3) == 0)
        pb[lane >> 2] = l;
    __syncwarp();
#pragma unroll
    for (int r = 0; r < ATTN_ROWS; r++) {
        uint32_t R = R0w + r, t = R / group, n = blockIdx.y * group + (R - t * group);
        if (t >= n_live || c0 >= hd)
            continue;
        float o[8], inv = 1.0f / pb[r];
#pragma unroll
        for (int c = 0; c < 8; c++)
            o[c] = a.o[r][c] * inv;
        uint64_t row = (uint64_t)t * d.n_heads + n;
        const uint16_t *g = (const uint16_t *)p.qg + row * 2 * hd + hd + c0;
        *(uint4 *)((uint16_t *)p.out + row * hd + c0) = attn_gate8(o, __ldg((const uint4 *)g));
    }
}

extern "C" __global__ void __launch_bounds__(K_ATTN_THREADS, 1) k_attn_prefill(struct k_attn_prefill_params p)
{
    __shared__ struct attn_pf_smem sm;
    const struct k_step *st = k_step_of(p.step);
    const struct k_attn_dims &d = p.d;
    uint32_t n_live = attn_live_rows(st, d.T_max), pos = st->pos;
    uint32_t hd = d.head_dim, group = d.n_heads / d.n_kv, kvh = blockIdx.y;
    uint32_t R0 = blockIdx.x * K_ATTN_BM;
    if (R0 / group >= n_live)
        return; /* the whole CTA: no live rows */
    uint32_t t_last = min(n_live - 1, (R0 + K_ATTN_BM - 1) / group);
    uint32_t kend = min(pos + t_last + 1, d.max_seq);
    uint32_t warp = threadIdx.x >> 5, lane = threadIdx.x & 31, c0 = lane * 8;
    uint32_t R0w = R0 + warp * ATTN_ROWS;

    /* q rows of this warp; rows past the chunk are zero and masked to key 0 */
    float q[ATTN_ROWS][8];
#pragma unroll
    for (int r = 0; r < ATTN_ROWS; r++) {
        uint32_t R = R0w + r, t = R / group, n = kvh * group + (R - t * group);
        const uint16_t *qr = (const uint16_t *)p.q + ((uint64_t)t * d.n_heads + n) * hd + c0;
        attn_unpack(t < n_live && c0 < hd ? __ldg((const uint4 *)qr) : make_uint4(0, 0, 0, 0), q[r]);
    }
    uint32_t my_t = (R0w + (lane >> 2)) / group;
    uint32_t lim = my_t < n_live ? min(pos + my_t, kend - 1) : 0;
    uint32_t wlim = lim;
    for (int o = 16; o > 0; o >>= 1)
        wlim = max(wlim, __shfl_xor_sync(ATTN_FULL, wlim, o));

    const uint16_t *K = (const uint16_t *)p.k_cache + (uint64_t)kvh * d.max_seq * hd;
    const uint16_t *V = (const uint16_t *)p.v_cache + (uint64_t)kvh * d.max_seq * hd;
    struct attn_acc a;
    attn_acc_init(a);
    float sl2 = d.scale * ATTN_LOG2E;
    uint32_t n_tiles = (kend + ATTN_PF_TILE - 1) / ATTN_PF_TILE;
    attn_pf_load(&sm, 0, 0, K, V, kend, hd);
    k_cp_commit();
    for (uint32_t it = 0; it < n_tiles; it++) {
        if (it + 1 < n_tiles)
            attn_pf_load(&sm, (it + 1) & 1, it + 1, K, V, kend, hd);
        k_cp_commit(); /* possibly empty: keeps the group count for wait_group 1 */
        attn_cp_wait_prev();
        __syncthreads();
        uint32_t key_base = it * ATTN_PF_TILE;
        if (key_base <= wlim)
            attn_pf_tile(a, q, sm.k[it & 1], sm.v[it & 1], key_base, lim, wlim, hd, sl2, sm.pb[warp]);
        __syncthreads(); /* the stage is refilled by the next iteration */
    }
    attn_pf_store(p, a, R0w, n_live, sm.pb[warp]);
}

/* ---- k_attn_prefill_tc ------------------------------------------------------------------------ */

#define ATTN_TC_WARPS (K_ATTN_TC_THREADS / 32)
#define ATTN_TC_NT (K_ATTN_TC_BN / 8)      /* 8-key n-tiles of S per key tile */
#define ATTN_TC_KS (ATTN_MAX_HD / 16)      /* 16-dim steps of q.k, 16-dim pairs of O, at hd 256 */

#if K_ATTN_TC_BM != ATTN_TC_WARPS * 16 || K_ATTN_TC_BN % 16 != 0
#error "k_attn_prefill_tc: 16 query rows per warp, key tiles of whole 16-key k-steps"
#endif

__device__ __forceinline__ uint32_t attn_tc_sa(const void *p) { return (uint32_t)__cvta_generic_to_shared(p); }

/* Four 8 x 8 bf16 matrices; lane l gives the address of row l % 8 of matrix l / 8 and gets
 * row l / 4, elements 2 (l % 4), + 1 of each (.trans: column l / 4, rows 2 (l % 4), + 1). */
__device__ __forceinline__ void attn_tc_ldsm(uint32_t (&r)[4], uint32_t addr)
{
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0, %1, %2, %3}, [%4];\n"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
                 : "r"(addr));
}

__device__ __forceinline__ void attn_tc_ldsm_t(uint32_t (&r)[4], uint32_t addr)
{
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0, %1, %2, %3}, [%4];\n"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
                 : "r"(addr));
}

/* Byte offset within a row of the stored 16-byte chunk 2s + b, for a lane whose row r has
 * x = b ^ (r % 8): chunk c lives at c ^ (r % 8), and for c = 2s + b the low three bits are
 * 2 (s % 4) ^ b, so the lane part x is fixed and s only adds constants. */
__device__ __forceinline__ uint32_t attn_tc_chunk(uint32_t x, int s)
{
    return ((((uint32_t)s >> 2) << 3) | (x ^ (((uint32_t)s & 3) << 1))) << 4;
}

/* Queue keys [kb, kb + K_ATTN_TC_BN) of K and V into one stage (swizzled rows of ld
 * elements): zeros for keys past kend and for the dims past hd up to hdp. */
__device__ __forceinline__ void attn_tc_load_kv(uint16_t *ks, uint16_t *vs, const uint16_t *K,
                                                const uint16_t *V, uint32_t kb, uint32_t kend,
                                                uint32_t hd, uint32_t hdp, uint32_t ld)
{
    uint32_t cpr = hdp / 8, cv = hd / 8, n = K_ATTN_TC_BN * cpr;
#pragma unroll 4
    for (uint32_t i = threadIdx.x; i < n; i += K_ATTN_TC_THREADS) {
        uint32_t j = i / cpr, c = i - j * cpr, key = kb + j;
        bool ok = key < kend && c < cv;
        uint64_t off = ok ? (uint64_t)key * hd + c * 8 : 0;
        uint32_t at = j * ld + ((c ^ (j & 7)) << 3);
        k_cp16(ks + at, K + off, ok);
        k_cp16(vs + at, V + off, ok);
    }
}

/* Queue the CTA's K_ATTN_TC_BM packed q rows from R0 (zeros past the live rows and past hd). */
__device__ __forceinline__ void attn_tc_load_q(uint16_t *qs, const struct k_attn_prefill_params &p,
                                               uint32_t R0, uint32_t n_live, uint32_t hd, uint32_t hdp,
                                               uint32_t ld)
{
    const struct k_attn_dims &d = p.d;
    uint32_t group = d.n_heads / d.n_kv, cpr = hdp / 8, cv = hd / 8, n = K_ATTN_TC_BM * cpr;
    const uint16_t *q = (const uint16_t *)p.q;
    for (uint32_t i = threadIdx.x; i < n; i += K_ATTN_TC_THREADS) {
        uint32_t r = i / cpr, c = i - r * cpr, R = R0 + r, t = R / group;
        bool ok = t < n_live && c < cv;
        uint64_t head = (uint64_t)t * d.n_heads + blockIdx.y * group + (R - t * group);
        k_cp16(qs + r * ld + ((c ^ (r & 7)) << 3), q + (ok ? head * hd + c * 8 : 0), ok);
    }
}

/* The CTA's first packed row R0 (CTA x takes block gridDim.x - 1 - x), the chunk's live rows
 * n_live, its position pos and the end kend of the keys the CTA's rows need; false when none of
 * the CTA's rows is live. */
__device__ __forceinline__ bool attn_tc_cta(const struct k_attn_prefill_params &p, uint32_t &R0, uint32_t &n_live,
                                            uint32_t &pos, uint32_t &kend)
{
    const struct k_step *st = k_step_of(p.step);
    const uint32_t group = p.d.n_heads / p.d.n_kv;
    n_live = attn_live_rows(st, p.d.T_max), pos = st->pos;
    R0 = (gridDim.x - 1 - blockIdx.x) * K_ATTN_TC_BM;
    if (R0 / group >= n_live)
        return false;
    kend = min(pos + min(n_live - 1, (R0 + K_ATTN_TC_BM - 1) / group) + 1, p.d.max_seq);
    return true;
}

/* Key tiles [it0, it1) of a CTA whose rows need the keys below kend: all of them, or run
 * blockIdx.z of n_split. */
__device__ __forceinline__ void attn_tc_runs(const struct k_attn_prefill_params &p, uint32_t kend, uint32_t &it0,
                                             uint32_t &it1)
{
    it0 = 0, it1 = (kend + K_ATTN_TC_BN - 1) / K_ATTN_TC_BN;
    if (p.n_split > 1) {
        uint32_t per = (it1 + p.n_split - 1) / p.n_split;
        it0 = min(it1, blockIdx.z * per);
        it1 = min(it1, it0 + per);
    }
}

/* The causal mask on diagonal tiles (key kb + 8j + 2 t4 + e against the row's limit), then the
 * online softmax step for rows g and g + 8 of the warp (a quad's 4 lanes hold a row's 32
 * scores): s becomes the probabilities, m and l move on and o is rescaled. */
__device__ __forceinline__ void attn_tc_softmax(float (&s)[ATTN_TC_NT][4], float (&o)[2 * ATTN_TC_KS][4],
                                                float &m0, float &m1, float &l0, float &l1, uint32_t kb,
                                                uint32_t wmin, uint32_t lim0, uint32_t lim1, float sl2)
{
    const uint32_t t4 = threadIdx.x & 3;
    if (kb + K_ATTN_TC_BN - 1 > wmin) {
#pragma unroll
        for (int j = 0; j < ATTN_TC_NT; j++)
#pragma unroll
            for (int e = 0; e < 4; e++)
                if (kb + 8 * j + 2 * t4 + (e & 1) > (e < 2 ? lim0 : lim1))
                    s[j][e] = -INFINITY;
    }
    float x0 = -INFINITY, x1 = -INFINITY;
#pragma unroll
    for (int j = 0; j < ATTN_TC_NT; j++) {
        x0 = fmaxf(x0, fmaxf(s[j][0], s[j][1]));
        x1 = fmaxf(x1, fmaxf(s[j][2], s[j][3]));
    }
    x0 = fmaxf(x0, __shfl_xor_sync(ATTN_FULL, x0, 1));
    x1 = fmaxf(x1, __shfl_xor_sync(ATTN_FULL, x1, 1));
    x0 = fmaxf(x0, __shfl_xor_sync(ATTN_FULL, x0, 2));
    x1 = fmaxf(x1, __shfl_xor_sync(ATTN_FULL, x1, 2));
    float n0 = fmaxf(m0, x0 * sl2), n1 = fmaxf(m1, x1 * sl2);
    float c0 = m0 == n0 ? 1.0f : exp2f(m0 - n0); /* m = -inf, n finite: 0 */
    float c1 = m1 == n1 ? 1.0f : exp2f(m1 - n1);
    m0 = n0, m1 = n1;
    float b0 = n0 == -INFINITY ? 0.0f : n0, b1 = n1 == -INFINITY ? 0.0f : n1; /* no NaN */
    float r0 = 0.0f, r1 = 0.0f;
#pragma unroll
    for (int j = 0; j < ATTN_TC_NT; j++) {
        s[j][0] = exp2f(fmaf(s[j][0], sl2, -b0));
        s[j][1] = exp2f(fmaf(s[j][1], sl2, -b0));
        s[j][2] = exp2f(fmaf(s[j][2], sl2, -b1));
        s[j][3] = exp2f(fmaf(s[j][3], sl2, -b1));
        r0 += s[j][0] + s[j][1];
        r1 += s[j][2] + s[j][3];
    }
    l0 = fmaf(l0, c0, r0);
    l1 = fmaf(l1, c1, r1);
    if (__any_sync(ATTN_FULL, c0 != 1.0f || c1 != 1.0f)) {
#pragma unroll
        for (int j = 0; j < 2 * ATTN_TC_KS; j++) {
            o[j][0] *= c0, o[j][1] *= c0;
            o[j][2] *= c1, o[j][3] *= c1;
        }
    }
}

/* The probabilities of k-step kq (keys 16 kq .. 16 kq + 15 of the tile) as the A fragments of
 * P V, hi and lo: the S accumulator registers are already that layout (C rows g, g + 8,
 * columns 2t, 2t + 1 = A rows g, g + 8, k slots 2t, 2t + 1; two n-tiles per k-step). */
__device__ __forceinline__ void attn_tc_pfrag(const float (&s)[ATTN_TC_NT][4], int kq, uint32_t (&ph)[4],
                                              uint32_t (&pl)[4])
{
    attn_tc_split(s[2 * kq][0], s[2 * kq][1], ph[0], pl[0]);
    attn_tc_split(s[2 * kq][2], s[2 * kq][3], ph[1], pl[1]);
    attn_tc_split(s[2 * kq + 1][0], s[2 * kq + 1][1], ph[2], pl[2]);
    attn_tc_split(s[2 * kq + 1][2], s[2 * kq + 1][3], ph[3], pl[3]);
}

/* wgmma build: byte offset of 16-byte chunk c (dims 8c .. 8c + 7) of row r in a tile of `rows`
 * rows of 256 dims, kept as four 64-dim blocks of rows x 128 bytes in the 128-byte swizzle
 * (chunk c % 8 of row r at (c ^ r) % 8). */
__device__ __forceinline__ uint32_t attn_wg_off(uint32_t rows, uint32_t r, uint32_t c)
{
    return (c >> 3) * rows * 128 + r * 128 + (((c ^ r) & 7) << 4);
}

/* Element offset of chunk c of the CTA's packed row r in the q region: rows of ld elements with
 * chunk c at c ^ (r % 8) (mma.sync build), or attn_wg_off (wgmma build). */
template <bool WG> __device__ __forceinline__ uint32_t attn_tc_qat(uint32_t r, uint32_t c, uint32_t ld)
{
    return WG ? attn_wg_off(K_ATTN_TC_BM, r, c) >> 1 : r * ld + ((c ^ (r & 7)) << 3);
}

/* The end of a live warp's run: the row sums over the quad; with n_split > 1 the rows
 * normalised over the run's keys with their max and sum; else the rows normalised, rounded to
 * bf16 into the warp's own q rows of shared memory (qs; free once the warp's last MMA has read
 * them), and read back as 16-byte chunks of whole rows for the gate (attn_gate8) and coalesced
 * stores, consecutive lanes on consecutive chunks. */
template <bool FULL, bool WG>
__device__ __forceinline__ void attn_tc_finish(const struct k_attn_prefill_params &p, float (&o)[2 * ATTN_TC_KS][4],
                                               float m0, float m1, float l0, float l1, uint16_t *qs,
                                               uint32_t ld, uint32_t R0, uint32_t n_live)
{
    const struct k_attn_dims &d = p.d;
    const uint32_t hd = FULL ? 256 : d.head_dim, hdp = FULL ? 256 : (d.head_dim + 15) & ~15u;
    const uint32_t group = d.n_heads / d.n_kv, kvh = blockIdx.y;
    const uint32_t warp = threadIdx.x >> 5, lane = threadIdx.x & 31, g = lane >> 2, t4 = lane & 3;
    const uint32_t R0w = R0 + warp * 16;
    l0 += __shfl_xor_sync(ATTN_FULL, l0, 1);
    l1 += __shfl_xor_sync(ATTN_FULL, l1, 1);
    l0 += __shfl_xor_sync(ATTN_FULL, l0, 2);
    l1 += __shfl_xor_sync(ATTN_FULL, l1, 2);
    float i0 = l0 > 0.0f ? 1.0f / l0 : 0.0f, i1 = l1 > 0.0f ? 1.0f / l1 : 0.0f; /* 0: no key in the run */
    if (p.n_split > 1) { /* the run's rows, normalised over its keys, with their max and sum */
#pragma unroll
        for (int h = 0; h < 2; h++) {
            uint32_t R = R0w + g + 8 * h, t = R / group;
            if (t >= n_live)
                continue;
            uint64_t row = ((uint64_t)blockIdx.z * d.T_max + t) * d.n_heads + kvh * group + (R - t * group);
            float *po = (float *)p.part_o + row * hd + 2 * t4, inv = h ? i1 : i0;
#pragma unroll
            for (int j = 0; j < 2 * ATTN_TC_KS; j++) {
                if (!FULL && (uint32_t)j * 8 >= hd)
                    break;
                *(float2 *)(po + 8 * j) = make_float2(o[j][2 * h] * inv, o[j][2 * h + 1] * inv);
            }
            if (t4 == 0)
                *(float2 *)((float *)p.part_ml + row * 2) = make_float2(h ? m1 : m0, h ? l1 : l0);
        }
        return;
    }
#pragma unroll
    for (int j = 0; j < 2 * ATTN_TC_KS; j++) {
        if (!FULL && (uint32_t)j * 8 >= hdp)
            break;
        __nv_bfloat162 h0 = __floats2bfloat162_rn(o[j][0] * i0, o[j][1] * i0);
        __nv_bfloat162 h1 = __floats2bfloat162_rn(o[j][2] * i1, o[j][3] * i1);
        *reinterpret_cast<__nv_bfloat162 *>(qs + attn_tc_qat<WG>(16 * warp + g, j, ld) + 2 * t4) = h0;
        *reinterpret_cast<__nv_bfloat162 *>(qs + attn_tc_qat<WG>(16 * warp + g + 8, j, ld) + 2 * t4) = h1;
    }
    __syncwarp();
    uint32_t cv = hd / 8;
    for (uint32_t i = lane; i < 16 * cv; i += 32) {
        uint32_t r = i / cv, c = i - r * cv, R = R0w + r, t = R / group;
        if (t >= n_live)
            continue;
        float of[8];
        attn_unpack(*(const uint4 *)(qs + attn_tc_qat<WG>(16 * warp + r, c, ld)), of);
        uint64_t row = (uint64_t)t * d.n_heads + kvh * group + (R - t * group);
        const uint16_t *gp = (const uint16_t *)p.qg + row * 2 * hd + hd + c * 8;
        *(uint4 *)((uint16_t *)p.out + row * hd + c * 8) = attn_gate8(of, __ldg((const uint4 *)gp));
    }
}

/* The mma.sync body; FULL: head_dim 256, every size a constant. */
template <bool FULL>
__device__ __forceinline__ void attn_tc_run(const struct k_attn_prefill_params &p, uint16_t *sm)
{
    const struct k_attn_dims &d = p.d;
    const uint32_t hd = FULL ? 256 : d.head_dim;
    const uint32_t hdp = FULL ? 256 : (d.head_dim + 15) & ~15u; /* dims the MMAs cover */
    const uint32_t ld = FULL ? 256 : K_ATTN_TC_LD(d.head_dim);  /* shared row stride */
    uint32_t R0, n_live, pos, kend;
    if (!attn_tc_cta(p, R0, n_live, pos, kend))
        return; /* the whole CTA: no live rows */
    uint32_t group = d.n_heads / d.n_kv, kvh = blockIdx.y;
    uint32_t warp = threadIdx.x >> 5, lane = threadIdx.x & 31, g = lane >> 2;
    uint32_t R0w = R0 + warp * 16;
    bool live = R0w / group < n_live; /* warp-uniform: a warp past the chunk only loads */
    /* last key of rows g and g + 8, and of the warp's first and last rows */
    uint32_t lim0 = min(pos + (R0w + g) / group, kend - 1);
    uint32_t lim1 = min(pos + (R0w + g + 8) / group, kend - 1);
    uint32_t wmin = min(pos + R0w / group, kend - 1), wmax = min(pos + (R0w + 15) / group, kend - 1);

    uint16_t *qs = sm;                             /* (BM, ld) */
    uint16_t *ks = qs + K_ATTN_TC_BM * ld;         /* (2, BN, ld) */
    uint16_t *vs = ks + 2 * K_ATTN_TC_BN * ld;     /* (2, BN, ld) */
    const uint32_t stage_b = K_ATTN_TC_BN * ld * 2; /* bytes per stage */
    /* ldmatrix lane addresses (rows) and chunk parts: q and V take row l % 8 + (l & 8) and
     * chunk bit l / 16 (A: rows 0-7 / 8-15 at k 0-7, then k 8-15; V^T: keys 0-7 / 8-15 of
     * dims 0-7, then dims 8-15); K takes row l % 8 + 8 (l / 16) and chunk bit (l / 8) % 2
     * (b0, b1 of keys 0-7, then of keys 8-15). */
    uint32_t sw = lane & 7;
    uint32_t qa = attn_tc_sa(qs) + (warp * 16 + sw + (lane & 8)) * ld * 2, qx = (lane >> 4) ^ sw;
    uint32_t ka = attn_tc_sa(ks) + (sw + ((lane >> 4) << 3)) * ld * 2, kx = ((lane >> 3) & 1) ^ sw;
    uint32_t va = attn_tc_sa(vs) + (sw + (lane & 8)) * ld * 2, vx = (lane >> 4) ^ sw;

    const uint16_t *K = (const uint16_t *)p.k_cache + (uint64_t)kvh * d.max_seq * hd;
    const uint16_t *V = (const uint16_t *)p.v_cache + (uint64_t)kvh * d.max_seq * hd;
    float o[2 * ATTN_TC_KS][4]; /* n-tile j: rows g (0, 1) and g + 8 (2, 3), dims 8j + 2 t4, + 1 */
#pragma unroll
    for (int j = 0; j < 2 * ATTN_TC_KS; j++)
        o[j][0] = o[j][1] = o[j][2] = o[j][3] = 0.0f;
    float m0 = -INFINITY, m1 = -INFINITY; /* running max of rows g, g + 8 (log2 units) */
    float l0 = 0.0f, l1 = 0.0f;           /* this lane's share of their sums of exponents */
    const float sl2 = d.scale * ATTN_LOG2E;
    uint32_t it0, it1;
    attn_tc_runs(p, kend, it0, it1);

    attn_tc_load_q(qs, p, R0, n_live, hd, hdp, ld);
    attn_tc_load_kv(ks, vs, K, V, it0 * K_ATTN_TC_BN, kend, hd, hdp, ld);
    k_cp_commit();
#pragma unroll 1
    for (uint32_t it = it0; it < it1; it++) {
        uint32_t nb = ((it - it0 + 1) & 1) * K_ATTN_TC_BN * ld;
        if (it + 1 < it1)
            attn_tc_load_kv(ks + nb, vs + nb, K, V, (it + 1) * K_ATTN_TC_BN, kend, hd, hdp, ld);
        k_cp_commit(); /* possibly empty: keeps the group count for wait_group 1 */
        attn_cp_wait_prev();
        __syncthreads();
        uint32_t kb = it * K_ATTN_TC_BN, so = ((it - it0) & 1) * stage_b;
        if (live && kb <= wmax) {
            /* S = q K^T over the tile's 32 keys */
            float s[ATTN_TC_NT][4];
#pragma unroll
            for (int j = 0; j < ATTN_TC_NT; j++)
                s[j][0] = s[j][1] = s[j][2] = s[j][3] = 0.0f;
#pragma unroll
            for (int kk = 0; kk < ATTN_TC_KS; kk++) {
                if (!FULL && (uint32_t)kk * 16 >= hdp)
                    break;
                uint32_t a[4], b[4];
                attn_tc_ldsm(a, qa + attn_tc_chunk(qx, kk));
#pragma unroll
                for (int np = 0; np < ATTN_TC_NT / 2; np++) {
                    attn_tc_ldsm(b, ka + so + np * 16 * ld * 2 + attn_tc_chunk(kx, kk));
                    k_mma16816(s[2 * np], a[0], a[1], a[2], a[3], b[0], b[1]);
                    k_mma16816(s[2 * np + 1], a[0], a[1], a[2], a[3], b[2], b[3]);
                }
            }
            attn_tc_softmax(s, o, m0, m1, l0, l1, kb, wmin, lim0, lim1, sl2);
            /* O += P V, P = hi + lo; k-step kq covers keys 16 kq .. 16 kq + 15 of the tile */
#pragma unroll
            for (int kq = 0; kq < ATTN_TC_NT / 2; kq++) {
                uint32_t ph[4], pl[4];
                attn_tc_pfrag(s, kq, ph, pl);
#pragma unroll
                for (int dp = 0; dp < ATTN_TC_KS; dp++) {
                    if (!FULL && (uint32_t)dp * 16 >= hdp)
                        break;
                    uint32_t b[4];
                    attn_tc_ldsm_t(b, va + so + kq * 16 * ld * 2 + attn_tc_chunk(vx, dp));
                    k_mma16816(o[2 * dp], ph[0], ph[1], ph[2], ph[3], b[0], b[1]);
                    k_mma16816(o[2 * dp + 1], ph[0], ph[1], ph[2], ph[3], b[2], b[3]);
                    k_mma16816(o[2 * dp], pl[0], pl[1], pl[2], pl[3], b[0], b[1]);
                    k_mma16816(o[2 * dp + 1], pl[0], pl[1], pl[2], pl[3], b[2], b[3]);
                }
            }
        }
        __syncthreads(); /* the stage is refilled by the next iteration */
    }
    asm volatile("cp.async.wait_all;\n" ::); /* a run without tiles still queued q */
    if (live)
        attn_tc_finish<FULL, false>(p, o, m0, m1, l0, l1, qs, ld, R0, n_live);
}

#if K_WG
/* ---- the sm_90a body at head_dim 256: wgmma ---- */

/* tiles queued ahead: tile it - 1's stage may still be read by its P V */
#define ATTN_WG_DIST (K_ATTN_TC_STAGES - 2)

#if ATTN_TC_NT != 4 || ATTN_TC_KS != 16 || K_ATTN_TC_STAGES < 3
#error "attn_wg_run: 32-key tiles of 256 dims, three stages or more"
#endif

/* S (64 packed rows x 32 keys, the warpgroup's) (+)= Q K^T over one k16 step: both operands
 * from shared memory, K-major; acc 0 starts S. */
__device__ __forceinline__ void attn_wg_qk(float (&s)[ATTN_TC_NT][4], uint64_t dq, uint64_t dk, uint32_t acc)
{
    asm volatile("{\n.reg .pred p;\nsetp.ne.b32 p, %18, 0;\n"
                 "wgmma.mma_async.sync.aligned.m64n32k16.f32.bf16.bf16 {%0, %1, %2, %3, %4, %5, %6, %7, "
                 "%8, %9, %10, %11, %12, %13, %14, %15}, %16, %17, p, 1, 1, 0, 0;\n}\n"
                 : "+f"(s[0][0]), "+f"(s[0][1]), "+f"(s[0][2]), "+f"(s[0][3]), "+f"(s[1][0]), "+f"(s[1][1]),
                   "+f"(s[1][2]), "+f"(s[1][3]), "+f"(s[2][0]), "+f"(s[2][1]), "+f"(s[2][2]), "+f"(s[2][3]),
                   "+f"(s[3][0]), "+f"(s[3][1]), "+f"(s[3][2]), "+f"(s[3][3])
                 : "l"(dq), "l"(dk), "r"(acc));
}

/* O (64 packed rows x 256 dims) += P V over one k16 step of keys: P (hi or lo) from registers
 * in the mma A layout, V from shared memory, MN-major (its rows are the keys). */
#define ATTN_WG_O(j) "+f"(o[j][0]), "+f"(o[j][1]), "+f"(o[j][2]), "+f"(o[j][3])
__device__ __forceinline__ void attn_wg_pv(float (&o)[2 * ATTN_TC_KS][4], const uint32_t (&a)[4], uint64_t dv)
{
    asm volatile("{\n.reg .pred p;\nsetp.ne.b32 p, %133, 0;\n"
                 "wgmma.mma_async.sync.aligned.m64n256k16.f32.bf16.bf16 {"
                 "%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, "
                 "%16, %17, %18, %19, %20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31, "
                 "%32, %33, %34, %35, %36, %37, %38, %39, %40, %41, %42, %43, %44, %45, %46, %47, "
                 "%48, %49, %50, %51, %52, %53, %54, %55, %56, %57, %58, %59, %60, %61, %62, %63, "
                 "%64, %65, %66, %67, %68, %69, %70, %71, %72, %73, %74, %75, %76, %77, %78, %79, "
                 "%80, %81, %82, %83, %84, %85, %86, %87, %88, %89, %90, %91, %92, %93, %94, %95, "
                 "%96, %97, %98, %99, %100, %101, %102, %103, %104, %105, %106, %107, %108, %109, %110, %111, "
                 "%112, %113, %114, %115, %116, %117, %118, %119, %120, %121, %122, %123, %124, %125, %126, %127}, "
                 "{%128, %129, %130, %131}, %132, p, 1, 1, 1;\n}\n"
                 : ATTN_WG_O(0), ATTN_WG_O(1), ATTN_WG_O(2), ATTN_WG_O(3), ATTN_WG_O(4), ATTN_WG_O(5),
                   ATTN_WG_O(6), ATTN_WG_O(7), ATTN_WG_O(8), ATTN_WG_O(9), ATTN_WG_O(10), ATTN_WG_O(11),
                   ATTN_WG_O(12), ATTN_WG_O(13), ATTN_WG_O(14), ATTN_WG_O(15), ATTN_WG_O(16), ATTN_WG_O(17),
                   ATTN_WG_O(18), ATTN_WG_O(19), ATTN_WG_O(20), ATTN_WG_O(21), ATTN_WG_O(22), ATTN_WG_O(23),
                   ATTN_WG_O(24), ATTN_WG_O(25), ATTN_WG_O(26), ATTN_WG_O(27), ATTN_WG_O(28), ATTN_WG_O(29),
                   ATTN_WG_O(30), ATTN_WG_O(31)
                 : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "l"(dv), "r"(1u));
}
#undef ATTN_WG_O

/* Queue keys [kb, kb + K_ATTN_TC_BN) of K and V into the stage at st (K, then V; attn_wg_off
 * layout), zeros past kend: warp w copies rows w, w + 8, ..., a lane one 16-byte chunk. */
__device__ __forceinline__ void attn_wg_load_kv(uint32_t st, const uint16_t *K, const uint16_t *V, uint32_t kb,
                                                uint32_t kend)
{
    const uint32_t lane = threadIdx.x & 31;
#pragma unroll
    for (uint32_t j = threadIdx.x >> 5; j < K_ATTN_TC_BN; j += K_ATTN_TC_THREADS / 32) {
        uint32_t key = kb + j, at = st + attn_wg_off(K_ATTN_TC_BN, j, lane);
        bool ok = key < kend;
        uint64_t off = ok ? (uint64_t)key * 256 + lane * 8 : 0;
        k_cp16s(at, K + off, ok);
        k_cp16s(at + K_ATTN_TC_BN * 512, V + off, ok);
    }
}

/* Queue the CTA's K_ATTN_TC_BM packed q rows from R0 into qs (zeros past the live rows). */
__device__ __forceinline__ void attn_wg_load_q(uint32_t qs, const struct k_attn_prefill_params &p, uint32_t R0,
                                               uint32_t n_live)
{
    const struct k_attn_dims &d = p.d;
    const uint32_t group = d.n_heads / d.n_kv, lane = threadIdx.x & 31;
    const uint16_t *q = (const uint16_t *)p.q;
    for (uint32_t r = threadIdx.x >> 5; r < K_ATTN_TC_BM; r += K_ATTN_TC_THREADS / 32) {
        uint32_t R = R0 + r, t = R / group;
        bool ok = t < n_live;
        uint64_t head = (uint64_t)t * d.n_heads + blockIdx.y * group + (R - t * group);
        k_cp16s(qs + attn_wg_off(K_ATTN_TC_BM, r, lane), q + (ok ? head * 256 + lane * 8 : 0), ok);
    }
}

/* Warpgroup v (warps 4v .. 4v + 3) owns packed rows R0 + 64v .. + 63, each warp its 16 as in
 * the mma.sync body, so the accumulators, the softmax and the end are that body's. A key tile:
 *   S = Q K^T: 16 wgmma m64n32k16, Q and K read by the hardware from shared memory;
 *   the softmax in registers (attn_tc_softmax);
 *   O += P V: per 16 keys two wgmma m64n256k16 (P hi, then lo, from registers), V read from
 *   shared memory as the MN-major operand.
 * The P V stays in flight while the warpgroup passes the next barrier and issues the next S,
 * whose wait covers both. So after tile it's barrier both warpgroups are done with tile
 * it - 2, and tile it + STAGES - 2 is queued into its stage (three stages: one landing, one
 * read by S and P V, one still read by the last P V), right after the S is issued. */
__device__ __forceinline__ void attn_wg_run(const struct k_attn_prefill_params &p, uint16_t *sm)
{
    const struct k_attn_dims &d = p.d;
    uint32_t R0, n_live, pos, kend;
    if (!attn_tc_cta(p, R0, n_live, pos, kend))
        return; /* the whole CTA: no live rows */
    uint32_t group = d.n_heads / d.n_kv, kvh = blockIdx.y;
    uint32_t warp = threadIdx.x >> 5, g = (threadIdx.x & 31) >> 2, wg = warp >> 2;
    uint32_t R0w = R0 + warp * 16, R0g = R0 + wg * 64;
    bool live = R0g / group < n_live; /* warpgroup-uniform: a warpgroup past the chunk only loads */
    uint32_t lim0 = min(pos + (R0w + g) / group, kend - 1);
    uint32_t lim1 = min(pos + (R0w + g + 8) / group, kend - 1);
    uint32_t wmin = min(pos + R0w / group, kend - 1), gmax = min(pos + (R0g + 63) / group, kend - 1);

    /* q (BM rows), then the stages (K then V, BN rows each), from a 1024-byte boundary */
    const uint32_t base = attn_tc_sa(sm), qs = (base + 1023) & ~1023u, kv0 = qs + K_ATTN_TC_BM * 512;
    const uint32_t tile_b = K_ATTN_TC_BN * 512, stage_b = 2 * tile_b;
    const uint16_t *K = (const uint16_t *)p.k_cache + (uint64_t)kvh * d.max_seq * 256;
    const uint16_t *V = (const uint16_t *)p.v_cache + (uint64_t)kvh * d.max_seq * 256;
    float o[2 * ATTN_TC_KS][4];
#pragma unroll
    for (int j = 0; j < 2 * ATTN_TC_KS; j++)
        o[j][0] = o[j][1] = o[j][2] = o[j][3] = 0.0f;
    float m0 = -INFINITY, m1 = -INFINITY, l0 = 0.0f, l1 = 0.0f;
    const float sl2 = d.scale * ATTN_LOG2E;
    uint32_t it0, it1;
    attn_tc_runs(p, kend, it0, it1);

    attn_wg_load_q(qs, p, R0, n_live);
#pragma unroll
    for (uint32_t u = 0; u < ATTN_WG_DIST; u++) {
        if (it0 + u < it1)
            attn_wg_load_kv(kv0 + u * stage_b, K, V, (it0 + u) * K_ATTN_TC_BN, kend);
        k_cp_commit(); /* possibly empty: one group per tile */
    }
#pragma unroll 1
    for (uint32_t it = it0, sl = 0; it < it1; it++) {
        asm volatile("cp.async.wait_group %0;\n" ::"n"(ATTN_WG_DIST - 1)); /* tile it's copies */
        asm volatile("fence.proxy.async.shared::cta;\n" ::: "memory");
        __syncthreads();
        /* tile it + DIST's copies, into its stage; queued after this tile's S (they took as
         * long to issue as the S, and held it up when queued first) */
        const uint32_t lst = kv0 + (sl + ATTN_WG_DIST) % K_ATTN_TC_STAGES * stage_b;
        const uint32_t lkb = (it + ATTN_WG_DIST) * K_ATTN_TC_BN;
        const bool load = it + ATTN_WG_DIST < it1;
        uint32_t kb = it * K_ATTN_TC_BN, ks = kv0 + sl * stage_b;
        if (live && kb <= gmax) {
            float s[ATTN_TC_NT][4];
            k_wg_fence();
#pragma unroll
            for (int kk = 0; kk < ATTN_TC_KS; kk++)
                attn_wg_qk(s, k_wg_desc(qs + (kk >> 2) * K_ATTN_TC_BM * 128 + wg * 64 * 128 + (kk & 3) * 32, 16),
                           k_wg_desc(ks + (kk >> 2) * K_ATTN_TC_BN * 128 + (kk & 3) * 32, 16), kk > 0);
            k_wg_commit();
            if (load)
                attn_wg_load_kv(lst, K, V, lkb, kend);
            k_wg_wait<0>();
            k_wg_pin(s);
            k_wg_pin(o); /* the last P V too */
            attn_tc_softmax(s, o, m0, m1, l0, l1, kb, wmin, lim0, lim1, sl2);
            uint32_t ph[2][4], pl[2][4];
            attn_tc_pfrag(s, 0, ph[0], pl[0]);
            attn_tc_pfrag(s, 1, ph[1], pl[1]);
            k_wg_pin(o);
            k_wg_pin(ph);
            k_wg_pin(pl);
            k_wg_fence();
#pragma unroll
            for (int kq = 0; kq < 2; kq++) {
                /* keys 16 kq ..: two 8-row groups from row 16 kq; dims in 64-wide blocks tile_b / 4 apart */
                uint64_t dv = k_wg_desc(ks + tile_b + kq * 2048, tile_b / 4);
                attn_wg_pv(o, ph[kq], dv);
                attn_wg_pv(o, pl[kq], dv);
            }
            k_wg_commit(); /* left in flight: the next tile's S waits for it */
        } else {
            if (load)
                attn_wg_load_kv(lst, K, V, lkb, kend);
            k_wg_wait<0>(); /* a warpgroup past its keys: its last P V, before the stage is refilled */
            k_wg_pin(o);
        }
        k_cp_commit();
        sl = sl == K_ATTN_TC_STAGES - 1 ? 0 : sl + 1;
    }
    k_wg_wait<0>();
    k_wg_pin(o);
    asm volatile("cp.async.wait_all;\n" ::); /* a run without tiles still queued q */
    if (live)
        attn_tc_finish<true, true>(p, o, m0, m1, l0, l1, sm + (qs - base) / 2, 0, R0, n_live);
}
#endif

/* ---- k_attn_prefill_reduce --------------------------------------------------------------------- */

extern "C" __global__ void k_attn_prefill_reduce(struct k_attn_prefill_params p)
{
    k_pdl_enter();
    const struct k_step *st = k_step_of(p.step);
    const struct k_attn_dims &d = p.d;
    uint32_t n = blockIdx.x, nh = d.n_heads, hd = d.head_dim, i = threadIdx.x;
    if (blockDim.x != K_ATTN_REDUCE_THREADS(hd) || p.n_split > K_ATTN_PF_MAXS)
        __trap();
    if (n / nh >= attn_live_rows(st, d.T_max) || i >= hd)
        return;
    const uint64_t run = (uint64_t)d.T_max * nh; /* rows between runs */
    const float2 *ml = (const float2 *)p.part_ml;
    const float *po = (const float *)p.part_o;
    float M = -INFINITY;
    for (uint32_t s = 0; s < p.n_split; s++)
        M = fmaxf(M, ml[s * run + n].x);
    float num = 0.0f, den = 0.0f;
    for (uint32_t s = 0; s < p.n_split; s++) {
        float2 e = ml[s * run + n];
        float w = exp2f(e.x - M) * e.y; /* a run without keys: 0 * 0 */
        num = fmaf(w, po[(s * run + n) * hd + i], num);
        den += w;
    }
    float g = k_bfbits2f(((const uint16_t *)p.qg)[(uint64_t)n * 2 * hd + hd + i]);
    float o = __fmul_rn(k_round_bf16(num / den), k_round_bf16(k_sigmoid(g)));
    ((__nv_bfloat16 *)p.out)[(uint64_t)n * hd + i] = k_f2bf(o);
}

extern "C" __global__ void __launch_bounds__(K_ATTN_TC_THREADS, 1) k_attn_prefill_tc(struct k_attn_prefill_params p)
{
    extern __shared__ __align__(16) uint16_t attn_tc_smem[];
    if (p.d.head_dim == 256)
#if K_WG
        attn_wg_run(p, attn_tc_smem);
#else
        attn_tc_run<true>(p, attn_tc_smem);
#endif
    else
        attn_tc_run<false>(p, attn_tc_smem);
}
