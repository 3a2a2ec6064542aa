/* attn.cu — gated full attention, decode side and the RoPE/append step (MODEL.md §2.3,
 * DESIGN.md §5); the prefill kernel is in attn_prefill.cu, the warp core both use in
 * attn_core.cuh.
 *
 *   k_attn_rope          q = rmsnorm1p(q) and k = rmsnorm1p(k) per head, partial RoPE on the first
 *                        rotary_dim dims at position pos + t, q -> q_out, k and v -> caches.
 *                        grid (T_max, Y), block K_ATTN_ROPE_THREADS: Y CTAs per token share its
 *                        heads (q heads then k heads), one warp per head, then copy v.
 *   k_attn_decode        single pass: CTA kvh walks keys [0, L) for its `group` query heads.
 *                        grid (n_kv), block K_ATTN_THREADS.
 *   k_attn_decode_split  CTA (s, kvh) walks keys [s*c, min(L, (s+1)*c)), c = ceil(L / n_split),
 *                        and writes fp32 partials. grid (n_split, n_kv), block K_ATTN_THREADS.
 *   k_attn_decode_reduce log-sum-exp combine of the pieces, times sigmoid(gate), bf16 out.
 *                        grid (n_heads), block head_dim: one thread per output dim.
 *
 * Layouts: qg (T_max, n_heads, 2*hd) = per head [query | gate]; k, v (T_max, n_kv*hd);
 * q_out / q (T_max, n_heads, hd); caches (n_kv, max_seq, hd); all bf16. L = step->pos + 1 is the
 * filled length after k_attn_rope appended position pos. Split partials: part_o (n_split,
 * n_heads, hd) fp32 is each piece's normalised output, part_ml (n_split, n_heads, 2) holds the
 * piece's max score and sum of exponents, both in log2 units (score * scale * log2 e): the
 * reduce only takes differences of maxima, so the base is private to this family. Pieces at or
 * past L are empty: their CTAs exit and the reduce reads only the ceil(L / c) pieces in use.
 *
 * Decode work split: each warp owns the group's query heads (8 rows at a time, attn_core.cuh)
 * and takes every 8th group of 4 keys of the CTA's range, prefetching the next group's K and V
 * rows (16 bytes a lane, coalesced 512-byte rows) while it computes the current one. The
 * warps' online-softmax states are merged through shared memory in a fixed order, so results
 * are deterministic. Keys at or past the range end are never read (the cache past L is stale).
 *
 * Numerics (PyTorch bf16 run): the norms compute in fp32 in HF's order and round once; RoPE
 * tables are fp32 cos/sin of pos * inv_freq rounded to bf16, inv_freq = 1 / theta^(2i/rd) in
 * fp32 (pow done in double, so it is the correctly rounded fp32 power, as on the CPU), and the
 * rotation is bf16 ops: bf16(bf16(x*cos) + bf16(rotate_half(x)*sin)). Scores are fp32 dot
 * products of bf16 q and k, softmax in fp32 with a running max. The probabilities stay fp32
 * (SDPA/flash style; the eager path would round them to bf16 before P·V). The output is
 * rounded to bf16, then multiplied by bf16(sigmoid(gate)) with one more bf16 rounding.
 * Limits (plan/sched.c servable()): head_dim a multiple of 8 and at most 256; rotary_dim even.
 * Any group size works: query heads are processed 8 at a time. */
#include "attn_core.cuh"

#define ATTN_ROPE_WARPS (K_ATTN_ROPE_THREADS / 32)

/* ---- k_attn_rope ---------------------------------------------------------------------------- */

/* cos/sin of the rd/2 frequencies at position P, rounded to bf16 (HF: computed in fp32, then
 * .to(x.dtype)). pow and cos/sin in double give the correctly rounded fp32 values. */
__device__ __forceinline__ void attn_rope_table(float *cs, float *sn, uint32_t rd, float theta, uint32_t P)
{
    for (uint32_t i = threadIdx.x; i < rd / 2; i += blockDim.x) {
        float e = __fdiv_rn((float)(2 * i), (float)rd);        /* arange(0, rd, 2).float() / rd */
        float inv = __fdiv_rn(1.0f, (float)pow((double)theta, (double)e)); /* 1 / base ** e */
        float f = __fmul_rn((float)P, inv);                    /* inv_freq @ position, fp32 */
        cs[i] = k_round_bf16((float)cos((double)f));
        sn[i] = k_round_bf16((float)sin((double)f));
    }
}

/* One head: y = bf16((x * rsqrt(mean(x^2) + eps)) * (1 + w)), then on dims < rd
 * y = bf16(bf16(y * cos) + bf16(rotate_half(y) * sin)), rotate_half(y) = [-y2, y1]. One warp;
 * lane owns dims [8 lane, 8 lane + 8); xs is the warp's staging row for the partner dims. */
__device__ __forceinline__ void attn_rope_head(const uint16_t *x, const uint16_t *w, uint16_t *dst,
                                               const struct k_attn_dims &d, const float *cs,
                                               const float *sn, float *xs)
{
    uint32_t lane = threadIdx.x & 31, c0 = lane * 8, hd = d.head_dim, half = d.rotary_dim / 2;
    bool active = c0 < hd;
    float y[8];
    attn_unpack(active ? *(const uint4 *)(x + c0) : make_uint4(0, 0, 0, 0), y);
    float ss = 0.0f;
#pragma unroll
    for (int c = 0; c < 8; c++)
        ss = fmaf(y[c], y[c], ss);
    ss = k_warp_sum(ss);
    float r = rsqrtf(ss / (float)hd + d.eps); /* torch.rsqrt(x.pow(2).mean(-1) + eps) */
    if (active) {
        float wf[8];
        attn_unpack(__ldg((const uint4 *)(w + c0)), wf);
#pragma unroll
        for (int c = 0; c < 8; c++) {
            y[c] = k_round_bf16(__fmul_rn(__fmul_rn(y[c], r), 1.0f + wf[c]));
            xs[c0 + c] = y[c];
        }
    }
    __syncwarp();
    if (active) {
        float o[8];
#pragma unroll
        for (int c = 0; c < 8; c++) {
            uint32_t i = c0 + c;
            o[c] = y[c];
            if (i < 2 * half) {
                uint32_t j = i < half ? i : i - half;
                float rot = i < half ? -xs[i + half] : xs[i - half];
                o[c] = k_round_bf16(__fadd_rn(k_round_bf16(__fmul_rn(y[c], cs[j])),
                                              k_round_bf16(__fmul_rn(rot, sn[j]))));
            }
        }
        *(uint4 *)(dst + c0) = attn_pack8(o);
    }
    __syncwarp(); /* xs is rewritten by the warp's next head */
}

extern "C" __global__ void __launch_bounds__(K_ATTN_ROPE_THREADS) k_attn_rope(struct k_attn_rope_params p)
{
    K_TRACE_BEGIN();
    __shared__ float s_cos[ATTN_MAX_HD / 2], s_sin[ATTN_MAX_HD / 2];
    __shared__ __align__(16) float s_x[ATTN_ROPE_WARPS][ATTN_MAX_HD];
    const struct k_step *st = k_step_of(p.step);
    const struct k_attn_dims d = p.d;
    /* the cos/sin table (double-precision math, the slow part) before the wait for the kernel
     * ahead: it needs only the position, which the previous step's sampling wrote long
     * before (kern/common.cuh, k_pdl_enter) */
    uint32_t t = blockIdx.x, P = st->pos + t;
    attn_rope_table(s_cos, s_sin, d.rotary_dim, d.rope_theta, P);
    __syncthreads();
    k_pdl_enter();
    /* a done decode step appends nothing; a position past the cache is never written */
    if (st->done || t >= attn_live_rows(st, d.T_max) || P >= d.max_seq)
        return;
    uint32_t hd = d.head_dim, nh = d.n_heads, nkv = d.n_kv, warp = threadIdx.x >> 5;

    const uint16_t *qg = (const uint16_t *)p.qg + (uint64_t)t * nh * 2 * hd;
    const uint16_t *k = (const uint16_t *)p.k + (uint64_t)t * nkv * hd;
    const uint16_t *v = (const uint16_t *)p.v + (uint64_t)t * nkv * hd;
    /* heads split over gridDim.y CTAs (decode: a CTA per 8 heads), one warp a head */
    for (uint32_t j = blockIdx.y * ATTN_ROPE_WARPS + warp; j < nh + nkv; j += ATTN_ROPE_WARPS * gridDim.y) {
        if (j < nh)
            attn_rope_head(qg + (uint64_t)j * 2 * hd, (const uint16_t *)p.q_norm,
                           (uint16_t *)p.q_out + ((uint64_t)t * nh + j) * hd, d, s_cos, s_sin, s_x[warp]);
        else
            attn_rope_head(k + (uint64_t)(j - nh) * hd, (const uint16_t *)p.k_norm,
                           (uint16_t *)p.k_cache + ((uint64_t)(j - nh) * d.max_seq + P) * hd, d,
                           s_cos, s_sin, s_x[warp]);
    }
    /* v is appended as it is: 16 bytes a thread, row by row */
    uint32_t cpr = hd / 8;
    for (uint32_t i = blockIdx.y * blockDim.x + threadIdx.x; i < nkv * cpr; i += blockDim.x * gridDim.y) {
        uint32_t h = i / cpr, c = i - h * cpr;
        *(uint4 *)((uint16_t *)p.v_cache + ((uint64_t)h * d.max_seq + P) * hd + c * 8) =
            *(const uint4 *)(v + (uint64_t)i * 8);
    }
}

/* ---- decode: one CTA's range of keys ----------------------------------------------------------- */

/* Index of row r, dim d in attn_dec_smem.o: dim d = 8 l + c (lane l's c-th dim) lives at
 * (r * 8 + c) * 32 + l, so a warp's 32 lanes touch 32 consecutive words (no bank conflicts),
 * as do 32 threads storing 8 consecutive dims each. */
#define ATTN_OI(r, d) ((((r) * 8u + ((d) & 7u)) << 5) + ((d) >> 3))
static_assert(ATTN_MAX_HD == 32 * 8, "ATTN_OI: 32 lanes of 8 dims");

struct attn_dec_smem {
    float o[ATTN_ROWS * ATTN_MAX_HD];                /* merged unnormalised output, ATTN_OI */
    float m[ATTN_WARPS][ATTN_ROWS];                  /* each warp's running max per row */
    float l[ATTN_WARPS][ATTN_ROWS];                  /* and its sum of exponents */
    float fm[ATTN_ROWS], fl[ATTN_ROWS];              /* the CTA's max and sum per row */
    __align__(16) float pb[ATTN_WARPS][ATTN_PB];     /* attn_update's per-warp exchange */
    uint2 qf[ATTN_MAX_HD / 32][2][32];               /* tensor-core path: q as B fragments */
};

/* lane's 16-byte slices of rows key0..key0+3 of a cache; zero at or past end */
__device__ __forceinline__ void attn_load4(uint4 x[ATTN_KG], const uint16_t *C, uint32_t key0,
                                           uint32_t end, uint32_t hd, bool active)
{
#pragma unroll
    for (int k = 0; k < ATTN_KG; k++)
        x[k] = active && key0 + k < end ? __ldg((const uint4 *)(C + (uint64_t)(key0 + k) * hd))
                                        : make_uint4(0, 0, 0, 0);
}

/* This warp's share of keys [t0, t1): groups of 4 starting at t0 + 4 warp, stride 4 * warps.
 * K and V already point at this lane's dims of the kv head's cache. The next group's K rows
 * are loaded one iteration ahead, V rows at the top of their own iteration: both are in
 * flight while the scores are computed. */
__device__ __forceinline__ void attn_decode_walk(struct attn_acc &a, const float q[ATTN_ROWS][8],
                                                 const uint16_t *K, const uint16_t *V, uint32_t t0,
                                                 uint32_t t1, uint32_t hd, bool active, float sl2,
                                                 float *pb)
{
    uint32_t lane = threadIdx.x & 31, stride = ATTN_KG * ATTN_WARPS;
    uint32_t key0 = t0 + ATTN_KG * (threadIdx.x >> 5);
    uint4 kc[ATTN_KG], kn[ATTN_KG], vc[ATTN_KG];
    attn_load4(kc, K, key0, t1, hd, active);
    for (; key0 < t1; key0 += stride) {
        attn_load4(vc, V, key0, t1, hd, active);
        attn_load4(kn, K, key0 + stride, t1, hd, active);
        float s = attn_scores(q, kc);
        s = key0 + (lane & 3) < t1 ? s * sl2 : -INFINITY;
        attn_update(a, s, vc, pb);
#pragma unroll
        for (int k = 0; k < ATTN_KG; k++)
            kc[k] = kn[k];
    }
}

/* Merge the warps' states into sm->o (unnormalised), sm->fm and sm->fl, in warp order. */
__device__ void attn_decode_merge(const struct attn_acc &a, struct attn_dec_smem *sm, uint32_t hd)
{
    uint32_t lane = threadIdx.x & 31, warp = threadIdx.x >> 5, c0 = lane * 8;
    float lrow = attn_row_sum(a.l);
    if ((lane & 3) == 0)
        sm->m[warp][lane >> 2] = a.m, sm->l[warp][lane >> 2] = lrow;
    __syncthreads();
    float f[ATTN_ROWS]; /* exp2(m_warp - M) per row: this warp's weight in the merge */
#pragma unroll
    for (int r = 0; r < ATTN_ROWS; r++) {
        float M = -INFINITY;
        for (int w = 0; w < ATTN_WARPS; w++)
            M = fmaxf(M, sm->m[w][r]);
        float mw = sm->m[warp][r];
        f[r] = mw == -INFINITY ? 0.0f : exp2f(mw - M);
        if (threadIdx.x == (uint32_t)r) {
            float L = 0.0f;
            for (int w = 0; w < ATTN_WARPS; w++)
                L += sm->m[w][r] == -INFINITY ? 0.0f : exp2f(sm->m[w][r] - M) * sm->l[w][r];
            sm->fm[r] = M, sm->fl[r] = L;
        }
    }
    for (uint32_t w = 0; w < ATTN_WARPS; w++) {
        if (warp == w && c0 < hd) {
#pragma unroll
            for (int r = 0; r < ATTN_ROWS; r++)
#pragma unroll
                for (int c = 0; c < 8; c++)
                    sm->o[ATTN_OI(r, c0 + c)] = (w ? sm->o[ATTN_OI(r, c0 + c)] : 0.0f) + a.o[r][c] * f[r];
        }
        __syncthreads();
    }
}

/* ---- decode on tensor cores (head_dim 64 or 256) ------------------------------------------------
 *
 * The same contract as the walk above (sm->o, fm, fl for 8 query heads of kv head kvh over keys
 * [t0, t1)), with the dot products on mma.m16n8k16: the 8 heads of a group are the n8 side of
 * every MMA, and a pair of warps takes 16 keys at a time, both forming the scores and each
 * accumulating half the output dims (one warp for all of them would need 255 registers).
 *   S^T = K Q^T: A is 16 key rows (lane (g, t): keys g and g + 8), B is q^T (column g: head g).
 *   The dims inside each 32-dim chunk are permuted the same way for both operands (a dot
 *   product does not see the order): lane t's 16-byte piece, dims 8t .. 8t + 7 of the chunk,
 *   gives k16 step s its k slots 2t, 2t + 1 (dims 8t + 4s, + 1) and 2t + 8, 2t + 9 (8t + 4s
 *   + 2, + 3). So K is one 16-byte load a chunk a row, read straight from the cache into
 *   registers, and q's fragments are staged once in shared memory in lane order.
 *   Softmax per head (column): lane (g, t) holds keys g, g + 8 of heads 2t, 2t + 1; the tile
 *   max crosses the 8 lanes of a column (3 shuffles); rescales are lane-local.
 *   O^T += V^T P^T: A is V^T (16 output dims by the 16 keys), B is P^T (the 16 keys by the 8
 *   heads). The output dims are permuted too: m16 tile j, row r is dim J r + j (J = hd / 16),
 *   so lane (g, t) reads J consecutive dims of rows g and g + 8 of keys 2t, 2t + 1, 2t + 8,
 *   2t + 9, and pairs two keys' values into a register with one byte permute. P^T's
 *   fragment (keys 2t .. of head g) sits on lanes (2t, g / 2) and (2t + 1, g / 2) of S^T's
 *   layout: 2 shuffles and a byte permute a register. P is fed as bf16 hi + lo, as in
 *   k_attn_prefill_tc, so it stays within 2^-17 of the fp32 probabilities.
 * Keys at or past t1 are neither read nor counted: their K and V slices are zero and their
 * scores -inf (stale cache rows may hold NaN, and 0 * NaN is NaN). The pairs then leave their
 * max, sum and output to the merge in order, as the walk's warps do. */

/* NW 32-bit words of a cache row at src, or zeros */
template <int NW>
__device__ __forceinline__ void attn_ldw(uint32_t (&w)[NW], const uint16_t *src, bool ok)
{
    if constexpr (NW == 4) {
        const uint4 v = ok ? __ldg((const uint4 *)src) : make_uint4(0, 0, 0, 0);
        w[0] = v.x, w[1] = v.y, w[2] = v.z, w[3] = v.w;
    } else {
        static_assert(NW == 1, "4 or 16 bytes (head_dim 64 or 256)");
        w[0] = ok ? __ldg((const uint32_t *)src) : 0u;
    }
}

#define ATTN_PAIRS (ATTN_WARPS / 2) /* 16-key tiles a CTA has in flight: two warps a tile */

/* A warp's operands of the tile at kb: K rows kb + g, kb + g + 8 (chunk pieces, lane t's) and V
 * (keys kb + 2t, + 1, + 8, + 9; the warp's dims of rows g, g + 8 of its output tiles). ALL: each
 * key below t1 other than skip, zero for the rest; else only the key skip (below t1), the rest
 * left as they are. */
template <int HD, bool ALL>
__device__ __forceinline__ void attn_mma_load(uint4 (&ka)[HD / 32], uint4 (&kz)[HD / 32],
                                              uint32_t (&vw)[4][2][HD / 64], const uint16_t *K,
                                              const uint16_t *V, uint32_t kb, uint32_t t1,
                                              uint32_t skip, uint32_t dh)
{
    constexpr int J = HD / 16, JH = J / 2, NW = JH / 2;
    const uint32_t lane = threadIdx.x & 31, g = lane >> 2, t = lane & 3;
#pragma unroll
    for (int h = 0; h < 2; h++) {
        const uint32_t r = kb + g + 8 * h;
        const bool ok = r < t1 && (ALL ? r != skip : r == skip);
        if (ALL || ok)
#pragma unroll
            for (int c = 0; c < HD / 32; c++) {
                const uint4 v = ok ? __ldg((const uint4 *)(K + (uint64_t)r * HD + 32 * c + 8 * t))
                                   : make_uint4(0, 0, 0, 0);
                (h ? kz : ka)[c] = v;
            }
    }
#pragma unroll
    for (int q = 0; q < 4; q++) {
        const uint32_t key = kb + 2 * t + (q & 1) + 8 * (q >> 1);
        const bool ok = key < t1 && (ALL ? key != skip : key == skip);
        if (ALL || ok)
#pragma unroll
            for (int hf = 0; hf < 2; hf++)
                attn_ldw<NW>(vw[q][hf], V + (uint64_t)key * HD + J * (g + 8 * hf) + JH * dh, ok);
    }
}

/* One warp's share of the tile at kb (its operands in ka, kz, vw): S^T, the online softmax,
 * O^T += V^T P^T; the pair's next tile is asked into L2 first. */
template <int HD>
__device__ __forceinline__ void
attn_mma_tile(float (&acc)[HD / 32][4], float (&m)[2], float (&l)[2], const uint4 (&ka)[HD / 32],
              const uint4 (&kz)[HD / 32], const uint32_t (&vw)[4][2][HD / 64],
              const struct attn_dec_smem *sm, const uint16_t *K, const uint16_t *V, uint32_t kb,
              uint32_t t1, float sl2)
{
    constexpr int NCH = HD / 32, JH = HD / 32, LPR = HD / 64;
    const uint32_t lane = threadIdx.x & 31, warp = threadIdx.x >> 5, g = lane >> 2, t = lane & 3;
    const uint32_t dh = warp & 1;
    const uint32_t r0 = kb + g, r1 = kb + g + 8;
    /* the pair's next tile into L2 while this one computes: K from one warp, V the other */
    const uint32_t nb = kb + 16 * ATTN_PAIRS;
    for (uint32_t li = lane; li < 16 * LPR; li += 32) {
        const uint32_t row = nb + li / LPR;
        if (row < t1)
            asm volatile("prefetch.global.L2 [%0];" ::"l"((dh ? V : K) + (uint64_t)row * HD +
                                                           li % LPR * 64));
    }
    float s[4] = {0.0f, 0.0f, 0.0f, 0.0f};
#pragma unroll
    for (int c = 0; c < NCH; c++)
#pragma unroll
        for (int st = 0; st < 2; st++) {
            const uint2 b = sm->qf[c][st][lane];
            k_mma16816(s, k_word(ka[c], 2 * st), k_word(kz[c], 2 * st), k_word(ka[c], 2 * st + 1),
                       k_word(kz[c], 2 * st + 1), b.x, b.y);
        }
    /* s: keys r0 (0, 1) and r1 (2, 3) of heads 2t (0, 2) and 2t + 1 (1, 3) */
    s[0] = r0 < t1 ? s[0] * sl2 : -INFINITY, s[1] = r0 < t1 ? s[1] * sl2 : -INFINITY;
    s[2] = r1 < t1 ? s[2] * sl2 : -INFINITY, s[3] = r1 < t1 ? s[3] * sl2 : -INFINITY;
    float mt[2] = {fmaxf(s[0], s[2]), fmaxf(s[1], s[3])}, corr[2], pr[4];
#pragma unroll
    for (int e = 0; e < 2; e++) {
#pragma unroll
        for (int o = 4; o < 32; o <<= 1)
            mt[e] = fmaxf(mt[e], __shfl_xor_sync(ATTN_FULL, mt[e], o));
        const float mn = fmaxf(m[e], mt[e]); /* finite: key kb is in range */
        corr[e] = m[e] == mn ? 1.0f : exp2f(m[e] - mn);
        pr[e] = s[e] == -INFINITY ? 0.0f : exp2f(s[e] - mn);
        pr[e + 2] = s[e + 2] == -INFINITY ? 0.0f : exp2f(s[e + 2] - mn);
        m[e] = mn;
        l[e] = fmaf(l[e], corr[e], pr[e] + pr[e + 2]);
    }
    if (corr[0] != 1.0f || corr[1] != 1.0f)
#pragma unroll
        for (int j = 0; j < JH; j++)
            acc[j][0] *= corr[0], acc[j][2] *= corr[0], acc[j][1] *= corr[1],
                acc[j][3] *= corr[1];
    /* P^T's fragments: keys 2t, 2t + 1 (b0) and 2t + 8, 2t + 9 (b1) of head g */
    uint32_t h01, l01, h23, l23;
    attn_tc_split(pr[0], pr[1], h01, l01);
    attn_tc_split(pr[2], pr[3], h23, l23);
    const uint32_t sa = 8 * t + (g >> 1), sb = sa + 4, sel = g & 1 ? 0x7632u : 0x5410u;
    const uint32_t bh0 = __byte_perm(__shfl_sync(ATTN_FULL, h01, sa),
                                     __shfl_sync(ATTN_FULL, h01, sb), sel);
    const uint32_t bh1 = __byte_perm(__shfl_sync(ATTN_FULL, h23, sa),
                                     __shfl_sync(ATTN_FULL, h23, sb), sel);
    const uint32_t bl0 = __byte_perm(__shfl_sync(ATTN_FULL, l01, sa),
                                     __shfl_sync(ATTN_FULL, l01, sb), sel);
    const uint32_t bl1 = __byte_perm(__shfl_sync(ATTN_FULL, l23, sa),
                                     __shfl_sync(ATTN_FULL, l23, sb), sel);
#pragma unroll
    for (int j = 0; j < JH; j++) { /* tile dh JH + j: its parity is j's (JH is even) */
        const uint32_t js = j & 1 ? 0x7632u : 0x5410u, w = j / 2;
        const uint32_t a0 = __byte_perm(vw[0][0][w], vw[1][0][w], js);
        const uint32_t a1 = __byte_perm(vw[0][1][w], vw[1][1][w], js);
        const uint32_t a2 = __byte_perm(vw[2][0][w], vw[3][0][w], js);
        const uint32_t a3 = __byte_perm(vw[2][1][w], vw[3][1][w], js);
        k_mma16816(acc[j], a0, a1, a2, a3, bh0, bh1);
        k_mma16816(acc[j], a0, a1, a2, a3, bl0, bl1);
    }
}

/* wait: this call makes the kernel's launch wait (kern/common.cuh k_pdl_enter). The cache rows
 * before step->pos were written by earlier steps, so the warp's first tile is requested before
 * the wait; only row pos, which k_attn_rope (the kernel right ahead) appends, after it. */
template <int HD>
__device__ void attn_mma_heads(const struct k_attn_decode_params &p, uint32_t kvh, uint32_t h0,
                               uint32_t rows, uint32_t t0, uint32_t t1, struct attn_dec_smem *sm,
                               bool wait)
{
    /* K chunks; O^T tiles in all and a warp's (half the dims); V words a key a half-row */
    constexpr int NCH = HD / 32, J = HD / 16, JH = J / 2, NW = JH / 2;
    const struct k_attn_dims &d = p.d;
    const uint32_t lane = threadIdx.x & 31, warp = threadIdx.x >> 5, g = lane >> 2, t = lane & 3;
    const uint32_t group = d.n_heads / d.n_kv, dh = warp & 1; /* dh: which half of the dims */
    const uint16_t *K = (const uint16_t *)p.k_cache + (uint64_t)kvh * d.max_seq * HD;
    const uint16_t *V = (const uint16_t *)p.v_cache + (uint64_t)kvh * d.max_seq * HD;
    uint4 ka[NCH], kz[NCH];
    uint32_t vw[4][2][NW];
    uint32_t kb = t0 + 16 * (warp >> 1);
    const uint32_t fresh = wait ? k_step_of(p.step)->pos : ~0u;
    attn_mma_load<HD, true>(ka, kz, vw, K, V, kb, t1, fresh, dh);
    if (wait) {
        k_pdl_enter();
        if (fresh >= kb && fresh < kb + 16)
            attn_mma_load<HD, false>(ka, kz, vw, K, V, kb, t1, fresh, dh);
    }
    /* q's B fragments: entry (c, s, lane (g, t)) = q[h0 + g], dims 32c + 8t + 4s .. + 3 */
    for (uint32_t i = threadIdx.x; i < NCH * 64; i += blockDim.x) {
        const uint32_t c = i / 64, s = (i / 32) & 1, gg = (i & 31) >> 2, tt = i & 3;
        const uint16_t *q = (const uint16_t *)p.q + (uint64_t)(kvh * group + h0 + gg) * HD;
        sm->qf[c][s][i & 31] =
            gg < rows ? __ldg((const uint2 *)(q + 32 * c + 8 * tt + 4 * s)) : make_uint2(0, 0);
    }
    __syncthreads();
    const float sl2 = d.scale * ATTN_LOG2E;
    float acc[JH][4], m[2] = {-INFINITY, -INFINITY}, l[2] = {0.0f, 0.0f};
#pragma unroll
    for (int j = 0; j < JH; j++)
        acc[j][0] = acc[j][1] = acc[j][2] = acc[j][3] = 0.0f;
    if (kb < t1)
        attn_mma_tile<HD>(acc, m, l, ka, kz, vw, sm, K, V, kb, t1, sl2);
    for (kb += 16 * ATTN_PAIRS; kb < t1; kb += 16 * ATTN_PAIRS) {
        uint4 na[NCH], nz[NCH]; /* this tile's own registers: nothing carried over the loop */
        uint32_t nv[4][2][NW];
        attn_mma_load<HD, true>(na, nz, nv, K, V, kb, t1, ~0u, dh);
        attn_mma_tile<HD>(acc, m, l, na, nz, nv, sm, K, V, kb, t1, sl2);
    }
    /* The merge. Both warps of a pair hold the same max and sum (the same scores); the sum
     * counts the even warps only. Pairs take turns in order (a pair without keys has m = -inf,
     * l = 0 and takes none), the two warps of a turn writing their own dims. */
#pragma unroll
    for (int e = 0; e < 2; e++)
#pragma unroll
        for (int o = 4; o < 32; o <<= 1)
            l[e] += __shfl_xor_sync(ATTN_FULL, l[e], o);
    if (g == 0)
        sm->m[warp][2 * t] = m[0], sm->m[warp][2 * t + 1] = m[1], sm->l[warp][2 * t] = l[0],
        sm->l[warp][2 * t + 1] = l[1];
    __syncthreads();
    float f[2];
#pragma unroll
    for (int e = 0; e < 2; e++) {
        float M = -INFINITY;
        for (int w = 0; w < ATTN_WARPS; w += 2)
            M = fmaxf(M, sm->m[w][2 * t + e]);
        f[e] = m[e] == -INFINITY ? 0.0f : exp2f(m[e] - M);
    }
    if (threadIdx.x < ATTN_ROWS) {
        const uint32_t r = threadIdx.x;
        float M = -INFINITY, L = 0.0f;
        for (int w = 0; w < ATTN_WARPS; w += 2)
            M = fmaxf(M, sm->m[w][r]);
        for (int w = 0; w < ATTN_WARPS; w += 2)
            L += sm->m[w][r] == -INFINITY ? 0.0f : exp2f(sm->m[w][r] - M) * sm->l[w][r];
        sm->fm[r] = M, sm->fl[r] = L;
    }
    const uint32_t turns = min((uint32_t)ATTN_PAIRS, (t1 - t0 + 15) / 16);
    for (uint32_t w = 0; w < turns; w++) {
        if (warp >> 1 == w)
#pragma unroll
            for (int j = 0; j < JH; j++)
#pragma unroll
                for (int q = 0; q < 4; q++) {
                    const uint32_t i =
                        ATTN_OI(2 * t + (q & 1), J * (g + 8 * (q >> 1)) + JH * dh + j);
                    sm->o[i] = (w ? sm->o[i] : 0.0f) + acc[j][q] * f[q & 1];
                }
        __syncthreads();
    }
}

/* Query heads h0..h0+rows-1 of the group: load q (8 rows a warp, every warp the same), walk,
 * merge. q[r] is zero for padding rows r >= rows, which are computed and never written. */
__device__ void attn_decode_heads(const struct k_attn_decode_params &p, uint32_t kvh, uint32_t h0,
                                  uint32_t rows, uint32_t t0, uint32_t t1, struct attn_dec_smem *sm)
{
    const struct k_attn_dims &d = p.d;
    uint32_t hd = d.head_dim, group = d.n_heads / d.n_kv, c0 = (threadIdx.x & 31) * 8;
    bool active = c0 < hd;
    float q[ATTN_ROWS][8];
#pragma unroll
    for (int r = 0; r < ATTN_ROWS; r++) {
        const uint16_t *qr = (const uint16_t *)p.q + (uint64_t)(kvh * group + h0 + r) * hd + c0;
        attn_unpack(active && (uint32_t)r < rows ? __ldg((const uint4 *)qr) : make_uint4(0, 0, 0, 0), q[r]);
    }
    struct attn_acc a;
    attn_acc_init(a);
    uint64_t base = (uint64_t)kvh * d.max_seq * hd + c0;
    attn_decode_walk(a, q, (const uint16_t *)p.k_cache + base, (const uint16_t *)p.v_cache + base,
                     t0, t1, hd, active, d.scale * ATTN_LOG2E, sm->pb[threadIdx.x >> 5]);
    attn_decode_merge(a, sm, hd);
}

/* out = bf16(bf16(o) * bf16(sigmoid(gate))) for heads h0.. of the group, 8 dims a thread */
__device__ void attn_decode_store(const struct k_attn_decode_params &p, uint32_t kvh, uint32_t h0,
                                  uint32_t rows, const struct attn_dec_smem *sm)
{
    uint32_t hd = p.d.head_dim, cpr = hd / 8, group = p.d.n_heads / p.d.n_kv;
    for (uint32_t i = threadIdx.x; i < rows * cpr; i += blockDim.x) {
        uint32_t r = i / cpr, c0 = (i - r * cpr) * 8, n = kvh * group + h0 + r;
        float o[8], inv = 1.0f / sm->fl[r];
#pragma unroll
        for (int c = 0; c < 8; c++)
            o[c] = sm->o[ATTN_OI(r, c0 + c)] * inv;
        const uint16_t *g = (const uint16_t *)p.qg + (uint64_t)n * 2 * hd + hd + c0;
        *(uint4 *)((uint16_t *)p.out + (uint64_t)n * hd + c0) = attn_gate8(o, __ldg((const uint4 *)g));
    }
}

/* piece s: part_o = o / l (fp32), part_ml = (max, sum) per head */
__device__ void attn_decode_store_part(const struct k_attn_decode_params &p, uint32_t s, uint32_t kvh,
                                       uint32_t h0, uint32_t rows, const struct attn_dec_smem *sm)
{
    uint32_t hd = p.d.head_dim, cpr = hd / 8, nh = p.d.n_heads, group = nh / p.d.n_kv;
    for (uint32_t i = threadIdx.x; i < rows * cpr; i += blockDim.x) {
        uint32_t r = i / cpr, c0 = (i - r * cpr) * 8, n = kvh * group + h0 + r;
        float inv = 1.0f / sm->fl[r];
        float4 *dst = (float4 *)((float *)p.part_o + ((uint64_t)s * nh + n) * hd + c0);
        float o[8];
#pragma unroll
        for (int c = 0; c < 8; c++)
            o[c] = sm->o[ATTN_OI(r, c0 + c)];
        dst[0] = make_float4(o[0] * inv, o[1] * inv, o[2] * inv, o[3] * inv);
        dst[1] = make_float4(o[4] * inv, o[5] * inv, o[6] * inv, o[7] * inv);
    }
    if (threadIdx.x < rows) {
        uint32_t n = kvh * group + h0 + threadIdx.x;
        *(float2 *)((float *)p.part_ml + ((uint64_t)s * nh + n) * 2) =
            make_float2(sm->fm[threadIdx.x], sm->fl[threadIdx.x]);
    }
}

/* The filled length and the split piece length c = ceil(L / n_split). */
__device__ __forceinline__ uint32_t attn_filled(const struct k_step *st, const struct k_attn_dims &d)
{
    return min(st->pos + 1, d.max_seq);
}

__device__ __forceinline__ uint32_t attn_piece(uint32_t L, uint32_t n_split)
{
    n_split = n_split ? n_split : 1;
    return (L + n_split - 1) / n_split;
}

/* ---- decode kernels ------------------------------------------------------------------------------ */

/* The CTA's 8 heads from h0 over keys [t0, t1) into sm: the warp walk, or (TC) the tensor-core
 * body at head_dim 64 or 256 (the planner's K_ATTN_DEC_TC_OK). */
template <bool TC>
__device__ __forceinline__ void attn_heads(const struct k_attn_decode_params &p, uint32_t kvh,
                                           uint32_t h0, uint32_t rows, uint32_t t0, uint32_t t1,
                                           struct attn_dec_smem *sm)
{
    if constexpr (TC) { /* the first 8 heads make the launch wait, after their first loads */
        switch (p.d.head_dim) {
        case 256: attn_mma_heads<256>(p, kvh, h0, rows, t0, t1, sm, h0 == 0); break;
        case 64: attn_mma_heads<64>(p, kvh, h0, rows, t0, t1, sm, h0 == 0); break;
        default: __trap();
        }
    } else {
        attn_decode_heads(p, kvh, h0, rows, t0, t1, sm);
    }
}

/* single pass: CTA kvh over keys [0, L) */
template <bool TC>
__device__ __forceinline__ void attn_decode_one(const struct k_attn_decode_params &p)
{
    if (!TC) /* the tensor-core body waits itself, after its first loads */
        k_pdl_enter();
    __shared__ struct attn_dec_smem sm;
    const struct k_step *st = k_step_of(p.step);
    if (st->done)
        return;
    uint32_t L = attn_filled(st, p.d), kvh = blockIdx.x, group = p.d.n_heads / p.d.n_kv;
    for (uint32_t h0 = 0; h0 < group; h0 += ATTN_ROWS) {
        uint32_t rows = min(group - h0, (uint32_t)ATTN_ROWS);
        attn_heads<TC>(p, kvh, h0, rows, 0, L, &sm);
        attn_decode_store(p, kvh, h0, rows, &sm);
        __syncthreads(); /* sm is reused by the next 8 heads */
    }
}

/* split: CTA (s, kvh) over piece s */
template <bool TC>
__device__ __forceinline__ void attn_decode_piece(const struct k_attn_decode_params &p)
{
    K_TRACE_BEGIN();
    if (!TC) /* the tensor-core body waits itself, after its first loads */
        k_pdl_enter();
    __shared__ struct attn_dec_smem sm;
    const struct k_step *st = k_step_of(p.step);
    if (st->done)
        return;
    uint32_t L = attn_filled(st, p.d), c = attn_piece(L, p.n_split);
    uint32_t s = blockIdx.x, kvh = blockIdx.y, group = p.d.n_heads / p.d.n_kv;
    uint32_t t0 = s * c, t1 = min(L, t0 + c);
    if (t0 >= L)
        return; /* an empty piece: the reduce does not read it */
    for (uint32_t h0 = 0; h0 < group; h0 += ATTN_ROWS) {
        uint32_t rows = min(group - h0, (uint32_t)ATTN_ROWS);
        attn_heads<TC>(p, kvh, h0, rows, t0, t1, &sm);
        K_TRACE_MARK();
        attn_decode_store_part(p, s, kvh, h0, rows, &sm);
        __syncthreads();
    }
    K_TRACE_END();
}

/* the entry points: the warp walk and the tensor-core body, single pass and split */
#define ATTN_DECODE_KERNEL(name, body, TC)                                                         \
    extern "C" __global__ void __launch_bounds__(K_ATTN_THREADS, 1)                                \
        name(struct k_attn_decode_params p)                                                        \
    {                                                                                              \
        body<TC>(p);                                                                               \
    }
ATTN_DECODE_KERNEL(k_attn_decode, attn_decode_one, false)
ATTN_DECODE_KERNEL(k_attn_decode_tc, attn_decode_one, true)
ATTN_DECODE_KERNEL(k_attn_decode_split, attn_decode_piece, false)
ATTN_DECODE_KERNEL(k_attn_decode_split_tc, attn_decode_piece, true)
#undef ATTN_DECODE_KERNEL

/* o = sum_s w_s o_s / sum_s w_s with w_s = exp2(m_s - M) l_s, M the largest piece maximum.
 * The pieces' (m, l) pairs are read once into shared memory by as many threads (the loads in
 * flight together, not one per loop trip), and each thread's o_s loads are unrolled. */
#define ATTN_REDUCE_MAX 1024 /* pieces the shared table holds (planner: --splits <= 1024) */
extern "C" __global__ void k_attn_decode_reduce(struct k_attn_decode_params p)
{
    K_TRACE_BEGIN();
    __shared__ float2 s_ml[ATTN_REDUCE_MAX];
    __shared__ float s_red[32];
    k_pdl_enter();
    const struct k_step *st = k_step_of(p.step);
    if (st->done)
        return;
    uint32_t L = attn_filled(st, p.d), c = attn_piece(L, p.n_split), used = (L + c - 1) / c;
    uint32_t n = blockIdx.x, nh = p.d.n_heads, hd = p.d.head_dim, i = threadIdx.x;
    if (used > ATTN_REDUCE_MAX || blockDim.x != K_ATTN_REDUCE_THREADS(hd))
        __trap();
    const float *ml = (const float *)p.part_ml, *po = (const float *)p.part_o;
    float M = -INFINITY;
    for (uint32_t s = i; s < used; s += blockDim.x) {
        s_ml[s] = *(const float2 *)(ml + ((uint64_t)s * nh + n) * 2);
        M = fmaxf(M, s_ml[s].x);
    }
    M = k_block_max(M, s_red); /* ends with a barrier: s_ml is complete */
    if (i >= hd)
        return;
    float num = 0.0f, den = 0.0f;
#pragma unroll 8
    for (uint32_t s = 0; s < used; s++) {
        float2 e = s_ml[s];
        float w = exp2f(e.x - M) * e.y;
        num = fmaf(w, po[((uint64_t)s * nh + n) * hd + i], num);
        den += w;
    }
    float g = k_bfbits2f(((const uint16_t *)p.qg)[(uint64_t)n * 2 * hd + hd + i]);
    float o = k_round_bf16(num / den) * k_round_bf16(k_sigmoid(g));
    ((__nv_bfloat16 *)p.out)[(uint64_t)n * hd + i] = k_f2bf(o);
    K_TRACE_END();
}
