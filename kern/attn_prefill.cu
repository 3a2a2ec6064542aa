/* attn_prefill.cu — k_attn_prefill: causal gated attention of a prefill chunk over the cached
 * prefix plus the chunk itself (MODEL.md §2.3, DESIGN.md §6).
 *
 * Query t of the chunk (position pos + t, pos = step->pos) attends to keys 0..pos + t of the
 * cache, which k_attn_rope has already extended with the chunk. Pack GQA: the `group` query
 * heads of kv head kvh are folded into the M dimension, packed row R = t * group + g, so a CTA
 * of K_ATTN_BM rows shares every K/V tile among all of its heads and tokens.
 *
 * Launch: grid (ceil(T_max * group / K_ATTN_BM), n_kv), block K_ATTN_THREADS (8 warps). Warp w
 * owns packed rows R0 + 8w .. R0 + 8w + 7 (attn_core.cuh: lane i holds dims [8i, 8i + 8) of q
 * and of the accumulator). The CTA streams keys 0..kend-1 (kend = pos + its last token + 1)
 * through shared memory in tiles of ATTN_PF_TILE keys, K and V double-buffered with cp.async
 * (2 x 2 x 16 x 256 bf16 = 32 KiB static): the next tile loads while the warps compute the
 * current one. A warp skips the tiles past its own rows' last key; keys of a tile past kend are
 * zero-filled, keys past a row's own position are masked to -inf.
 *
 * Rows t >= step->n_tokens are neither computed nor written; a CTA without live rows exits.
 * Output: out[t, n*hd + c] = bf16(bf16(o) * bf16(sigmoid(gate))) with the gate read from the
 * qg half of the query projection. Softmax statistics are fp32 and the probabilities stay
 * fp32 (the flash formulation; PyTorch eager would round them to bf16 before P·V).
 *
 * This is a CUDA-core kernel: per key and lane 64 FMAs for the scores, 64 for P·V, about
 * 12 shuffles. Tensor-core (mma/wgmma) tiles are the next step for long chunks. */
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

/* cp.async of 16 bytes; src_bytes 0 fills the destination with zeros */
__device__ __forceinline__ void attn_cp16(void *dst, const void *src, bool full)
{
    uint32_t sa = (uint32_t)__cvta_generic_to_shared(dst);
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(sa), "l"(src), "r"(full ? 16 : 0));
}

__device__ __forceinline__ void attn_cp_commit() { asm volatile("cp.async.commit_group;\n" ::); }

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
        attn_cp16(&sm->k[st][j * hd + c * 8], K + off, ok);
        attn_cp16(&sm->v[st][j * hd + c * 8], V + off, ok);
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
    attn_cp_commit();
    for (uint32_t it = 0; it < n_tiles; it++) {
        if (it + 1 < n_tiles)
            attn_pf_load(&sm, (it + 1) & 1, it + 1, K, V, kend, hd);
        attn_cp_commit(); /* possibly empty: keeps the group count for wait_group 1 */
        attn_cp_wait_prev();
        __syncthreads();
        uint32_t key_base = it * ATTN_PF_TILE;
        if (key_base <= wlim)
            attn_pf_tile(a, q, sm.k[it & 1], sm.v[it & 1], key_base, lim, wlim, hd, sl2, sm.pb[warp]);
        __syncthreads(); /* the stage is refilled by the next iteration */
    }
    attn_pf_store(p, a, R0w, n_live, sm.pb[warp]);
}
