/* gdn_chunk_tc.cu — k_gdn_chunk: the prefill gated delta rule in chunked WY/UT form (kern/gdn.h,
 * MODEL.md §2.2) on tensor cores, continuing from and updating the cached fp32 state, with the
 * q/k l2 norms and the gates fused in; its split form k_gdn_prep + k_gdn_seq (below); and
 * k_gdn_gnorm, the gated RMSNorm both leave to a last launch. Heads whose sizes neither takes
 * run k_gdn_chunk_fma (gdn_chunk.cu) instead.
 *
 * Launch: grid (nv, dv / 32): CTA (hv, y) owns value columns c0 = 32 y .. c0 + 32 of head hv
 * (DVT = K_GDN_CHUNK_TC_DVT), the matching 32 columns of V, V', O and of the state S (dk, 32),
 * and walks the chunks of C = 64 tokens in order; the dv / 32 CTAs of a head each recompute
 * the chunk's L, Tm and Attn (about a sixth of their MMAs at dk = 128) instead of waiting on
 * each other. Block K_GDN_CHUNK_TC_THREADS (256, 8 warps); dynamic shared memory
 * K_GDN_CHUNK_TC_SMEM(dk) (164368 bytes at dk = 128: under the 163 KiB of sm_80). Needs dk a
 * multiple of 16 up to 128 and dv a multiple of 32 (K_GDN_CHUNK_TC_OK). Then k_gdn_gnorm
 * rewrites `out` in place: out = bf16(w * bf16(o * rsqrt(mean(o^2) + eps)) * silu(z)) over
 * each row of dv, one warp a row, grid (ceil(T_max nv / 8)), block K_GDN_GNORM_THREADS.
 *
 * Per chunk, with rows i, j in [0, C), gam the in-chunk cumsum of g, K = rk kr and Q = rq qr
 * (kr, qr the raw bf16 rows, rk, rq their l2 scales, dk^-0.5 folded into rq), padded rows past
 * step->n_tokens holding q = k = v = 0, beta = 0, g = 0:
 *   P0  rows of the chunk (copied one chunk ahead with cp.async, by warps 4-7 once P3 is done,
 *       as they wait for the solve): rq, rk, beta, gam (a prefix sum in double, rounded once),
 *       e^gam, e^(gam_63 - gam)
 *   P1  L    = strictly_lower(beta_i rk_i rk_j (kr_i . kr_j) e^(gam_i - gam_j))    warps 0-3
 *       Attn = lower(rq_i rk_j (qr_i . kr_j) e^(gam_i - gam_j))                    warps 4-7
 *   P2  Tm   = (I + L)^-1 in fp32, 16 x 16 diagonal blocks by forward substitution, then
 *       merged twice (T21 = -T22 L21 T11)                                          warps 0-3
 *   P3  X    = beta (V - e^gam rk (kr S)),  QS = qr S                 at once,     warps 4-7
 *   P4  V'   = Tm X        all warps  (= U - W S of MODEL.md, reassociated: W is never formed)
 *   P5  O    = e^gam rq QS + Attn V'  -> bf16 core rows of `out`                   warps 4-7
 *       S    = e^gam_63 S + kr^T (e^(gam_63 - gam) rk V')                          warps 0-3
 * The state lives in registers of warps 0-3 (fp32 MMA accumulators) from the first chunk to
 * the last and is read and written in global memory once per launch.
 *
 * Precision: every product is mma.sync m16n8k16 bf16 -> fp32. kr, qr and V are bf16 already,
 * so K K^T and Q K^T are exact products with the l2 scales applied afterwards. An fp32 operand
 * (S, X, V', Tm, Attn) is split into NS = 3 bf16 parts x = x0 + x1 + x2 (each the bf16
 * rounding of what the parts before it left), which carry 24 of its bits: a product with an
 * exact bf16 operand takes NS MMAs, one of two split operands the NS (NS + 1) / 2 part
 * products whose order is at most NS - 1 (6), smallest first. Both land within fp32 rounding
 * of an fp32 product (test_gpu_gdn measures it against the recurrence: the state lands as
 * close as k_gdn_chunk_fma's fp32 FMAs; with 2 parts its error doubled, for 7% less time);
 * transformers runs this rule in fp32, and the state stays fp32. One fixed order of
 * operations: deterministic.
 *
 * Limits: on an H200 a 64-token chunk takes about 11 us at dk = dv = 128 (T = 2048: 354 us,
 * 30 TFLOP/s of the useful FLOPs, test_gpu_gdn), bound by latency, not by the tensor cores:
 * one CTA of 8 warps an SM, six barriers a chunk, the fp32 solve on 4 warps.
 *
 * The split form. P0-P2 do not depend on the state, so k_gdn_prep runs them for every chunk
 * at once (grid (nv, chunks), three CTAs an SM) and leaves a record per (head, chunk) in ws:
 * the 10 lower 16 x 16 blocks of Tm and of Attn, each block's column c of row i at
 * c ^ 8 (i & 2) / 2 (gdn_tc_blk: the fragment's float2 loads then fall in distinct banks), and
 * rq, rk, beta, e^gam, e^(gam_63 - gam). k_gdn_seq (grid (nv, dv / 32), as k_gdn_chunk) walks
 * the chunks from the records: X on warps 0-3 while warps 4-7 form qs, P4, P5 as above, three
 * barriers a chunk; the next chunk's k rows and record are copied as a chunk starts, its q rows
 * and v once P3 has read them, and the chunk after it is brought into L2 ahead. The same
 * operations in the same order on each accumulator, so the same bits as k_gdn_chunk. Shared
 * memory K_GDN_SEQ_SMEM(dk) (162304 bytes at dk = 128): two records, q and v once, k twice, the
 * state, X / V' and V'' parts. H100, T = 2048: k_gdn_prep 46 us + k_gdn_seq 166 us against
 * 358 us. A chunk of k_gdn_seq (5.2 us) issues 1,632 MMAs a CTA (the split operands triple
 * them), about 2.6 us at mma.sync's rate by that count; P3 is the longest phase.
 *
 * Shared memory (row strides pad rows so the 8 rows that one ldmatrix or one fragment access
 * reads fall in distinct banks):
 *   q, k   [2] (C, dk + 8) bf16 raw rows, double-buffered       v [2] (C, 40) bf16 (32 used)
 *   lt     (C, 72) fp32: L, then Tm; after P4 the V'' parts      at (C, 72) fp32 Attn
 *   sp     NS x (dk, 40) bf16: the state's parts (k = key row, n = value column)
 *   xv     NS x (C, 40) bf16: the X parts, after P4 the V' parts
 *   rq, rk, beta, gam, eg, dl  (C) fp32 each
 * MMA operands load with ldmatrix (.trans where the stored layout is the operand's transpose),
 * fp32 operands as float2 pairs split in registers. */
#include "common.cuh"
#include "gdn.h"

#define GDN_TC_C   K_GDN_CHUNK        /* 64 */
#define GDN_TC_DVT K_GDN_CHUNK_TC_DVT /* 32 */
#define GDN_TC_NS  3                  /* bf16 parts of a split fp32 operand */
#define GDN_TC_LDV 40                 /* bf16 row stride of the 32-column tiles */
#define GDN_TC_LDF 72                 /* fp32 row stride of L/Tm and Attn */

/* ---- the shared-memory plan ------------------------------------------------------------------ */

struct gdn_tc_lay {
    uint32_t dk, ldq;            /* key head size, raw row stride (bf16) */
    __nv_bfloat16 *q0, *k0, *v0; /* raw q, k rows and v of chunk parity 0 (see gdn_tc_q) */
    uint32_t qb, kb, vb;         /* how far those of parity 1 lie past them (0: one buffer) */
    float *lt, *at;              /* L / Tm, Attn */
    __nv_bfloat16 *sp, *xv, *vv; /* parts: state, X / V', V'' */
    float *rq, *rk, *beta, *gam, *eg, *dl;
    uint64_t *mb; /* the solve's barrier among warps 0-3 (gdn_tc_bar4) */
};

/* The raw rows of buffer b (computed, not indexed, so the layout stays in registers) */
__device__ __forceinline__ __nv_bfloat16 *gdn_tc_q(const struct gdn_tc_lay &L, int b)
{
    return L.q0 + b * L.qb;
}
__device__ __forceinline__ __nv_bfloat16 *gdn_tc_k(const struct gdn_tc_lay &L, int b)
{
    return L.k0 + b * L.kb;
}
__device__ __forceinline__ __nv_bfloat16 *gdn_tc_v(const struct gdn_tc_lay &L, int b)
{
    return L.v0 + b * L.vb;
}

/* Carve the buffers in K_GDN_CHUNK_TC_SMEM's order; every offset is a multiple of 16 bytes. */
__device__ __forceinline__ void gdn_tc_layout(struct gdn_tc_lay *L, char *base, uint32_t dk)
{
    const uint32_t C = GDN_TC_C, raw = C * (dk + 8) * 2, vt = C * GDN_TC_LDV * 2;
    L->dk = dk, L->ldq = dk + 8;
    L->q0 = (__nv_bfloat16 *)base, L->k0 = L->q0 + C * L->ldq;
    L->qb = L->kb = 2 * C * L->ldq;
    base += 4 * raw;
    L->v0 = (__nv_bfloat16 *)base, L->vb = C * GDN_TC_LDV;
    base += 2 * vt;
    L->lt = (float *)base, L->vv = (__nv_bfloat16 *)base;
    L->at = L->lt + C * GDN_TC_LDF;
    base += 2 * C * GDN_TC_LDF * 4;
    L->sp = (__nv_bfloat16 *)base;
    base += GDN_TC_NS * dk * GDN_TC_LDV * 2;
    L->xv = (__nv_bfloat16 *)base;
    base += GDN_TC_NS * vt;
    L->rq = (float *)base, L->rk = L->rq + C, L->beta = L->rk + C;
    L->gam = L->beta + C, L->eg = L->gam + C, L->dl = L->eg + C;
    L->mb = (uint64_t *)(L->dl + C);
}

/* ---- tensor-core and copy primitives (sm_80 and newer) -------------------------------------- */

__device__ __forceinline__ uint32_t gdn_tc_sa(const void *p)
{
    return (uint32_t)__cvta_generic_to_shared(p);
}

/* Four 8 x 8 bf16 matrices; lane l gives the address of row l % 8 of matrix l / 8. */
__device__ __forceinline__ void gdn_tc_ldsm(uint32_t *r, const __nv_bfloat16 *p)
{
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0, %1, %2, %3}, [%4];\n"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
                 : "r"(gdn_tc_sa(p)));
}

__device__ __forceinline__ void gdn_tc_ldsm_t(uint32_t *r, const __nv_bfloat16 *p)
{
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0, %1, %2, %3}, [%4];\n"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
                 : "r"(gdn_tc_sa(p)));
}

/* d += a (16 x 16, row) b (16 x 8, col), bf16 in, fp32 accumulate. Volatile: kept in program
 * order, which interleaves independent accumulators where it matters (gdn_tc_mma_split). */
__device__ __forceinline__ void gdn_tc_mma(float (&d)[4], const uint32_t (&a)[4], uint32_t b0,
                                           uint32_t b1)
{
    asm volatile("mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0, %1, %2, %3}, "
                 "{%4, %5, %6, %7}, {%8, %9}, {%0, %1, %2, %3};\n"
                 : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
                 : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}

/* e^x for x <= 0 as one ex2.approx of x log2(e): within 2^-22 of e^x relative (the rounding of
 * the product adds |x| 2^-24, below e^x's own weight wherever e^x matters); flushes to zero
 * below 2^-126. A quarter of expf's code, in the loop over Gamma's elements. */
__device__ __forceinline__ float gdn_tc_exp(float x)
{
    float y;
    asm("ex2.approx.ftz.f32 %0, %1;\n" : "=f"(y) : "f"(x * 1.4426950408889634f));
    return y;
}

/* The barrier of warps 0-3 in the solve, while warps 4-7 run P3: an mbarrier that expects
 * their 128 arrivals and flips phase when the last lands; each thread waits on the phase its
 * own arrival returned. A named barrier (bar.sync 1, 128) orders the same, but
 * compute-sanitizer 2025.3 racecheck reports hazards across the __syncthreads() that follows a
 * named barrier, where tools/racecheck-named-barrier.cu reproduces
 * it with no wrong value read in 10^6 CTA rounds; the sanitizer follows the mbarrier. The
 * chunk takes the same time either way (354 us a layer at T = 2048, test_gpu_gdn). */
__device__ __forceinline__ void gdn_tc_bar4(uint64_t *mb)
{
    const uint32_t a = gdn_tc_sa(mb);
    uint64_t st;
    asm volatile("mbarrier.arrive.shared::cta.b64 %0, [%1];\n" : "=l"(st) : "r"(a) : "memory");
#if __CUDA_ARCH__ >= 900
#define GDN_TC_MB_WAIT "mbarrier.try_wait.shared::cta.b64" /* may suspend the thread */
#else
#define GDN_TC_MB_WAIT "mbarrier.test_wait.shared::cta.b64" /* sm_80-89: a poll */
#endif
    asm volatile("{\n"
                 ".reg .pred p;\n"
                 "GDN_TC_BAR4_%=:\n" GDN_TC_MB_WAIT " p, [%0], %1;\n"
                 "@!p bra GDN_TC_BAR4_%=;\n"
                 "}\n" ::"r"(a),
                 "l"(st)
                 : "memory");
#undef GDN_TC_MB_WAIT
}

/* The pair (x, y) as NS bf16x2 parts, x = sum of the low halves, y of the high ones: each part
 * is the bf16 rounding of what the parts before it left (exact in fp32). */
template <int NS> __device__ __forceinline__ void gdn_tc_split(float x, float y, uint32_t (&r)[NS])
{
#pragma unroll
    for (int s = 0; s < NS; s++) {
        __nv_bfloat162 h = __floats2bfloat162_rn(x, y);
        r[s] = *reinterpret_cast<uint32_t *>(&h);
        x -= __low2float(h), y -= __high2float(h);
    }
}

/* Store the split pair at element e of NS planes of `plane` bf16 each. */
template <int NS>
__device__ __forceinline__ void gdn_tc_put(__nv_bfloat16 *p, uint32_t plane, uint32_t e, float x,
                                           float y)
{
    uint32_t r[NS];
    gdn_tc_split<NS>(x, y, r);
#pragma unroll
    for (int s = 0; s < NS; s++)
        *(uint32_t *)(p + s * plane + e) = r[s];
}

/* Block (r, ks) of a block lower triangular 64 x 64 fp32 matrix (ks <= r), and the A fragment
 * (16 x 16) of such a block in NS parts. PK false: the matrix at m with row stride GDN_TC_LDF.
 * PK true: the packed form k_gdn_prep writes (GDN_TC_BLK): the 10 blocks ks <= r one after
 * another, 16 x 16 each, column c of row i stored at c ^ 8 (i & 2) / 2, so the fragment's
 * float2 loads fall in distinct banks in each half-warp. */
template <bool PK> __device__ __forceinline__ const float *gdn_tc_blk(const float *m, int r, int ks)
{
    return PK ? m + (r * (r + 1) / 2 + ks) * 256 : m + 16 * r * GDN_TC_LDF + 16 * ks;
}

template <int NS, bool PK>
__device__ __forceinline__ void gdn_tc_lda_f32(uint32_t (&a)[NS][4], const float *m, int lane)
{
    const int g = lane >> 2, t = lane & 3, ld = PK ? 16 : GDN_TC_LDF, x = PK ? 4 * (g & 2) : 0;
    const float *r0 = m + g * ld, *r1 = r0 + 8 * ld;
    const int c0 = (2 * t) ^ x, c1 = (2 * t + 8) ^ x;
    float2 v[4] = {*(const float2 *)(r0 + c0), *(const float2 *)(r1 + c0),
                   *(const float2 *)(r0 + c1), *(const float2 *)(r1 + c1)};
#pragma unroll
    for (int i = 0; i < 4; i++) {
        uint32_t r[NS];
        gdn_tc_split<NS>(v[i].x, v[i].y, r);
#pragma unroll
        for (int s = 0; s < NS; s++)
            a[s][i] = r[s];
    }
}

/* d[j] += A B_j over the part products of order <= NS - 1, the smallest first: a holds NS parts
 * of A (16 x 16), b NS parts of NT tiles B_j (16 x 8: b[s][2 j], b[s][2 j + 1]). The tiles
 * are the inner loop, so consecutive MMAs go to independent accumulators. */
template <int NS, int NT>
__device__ __forceinline__ void gdn_tc_mma_split(float (&d)[NT][4], const uint32_t (&a)[NS][4],
                                                 const uint32_t (&b)[NS][2 * NT])
{
#pragma unroll
    for (int o = NS - 1; o >= 0; o--)
#pragma unroll
        for (int sa = o; sa >= 0; sa--)
#pragma unroll
            for (int j = 0; j < NT; j++)
                gdn_tc_mma(d[j], a[sa], b[o - sa][2 * j], b[o - sa][2 * j + 1]);
}

/* ---- P0: rows, norms, gates ------------------------------------------------------------------ */


/* Queue copies of chunk t0's raw q rows (Q), k rows (K) (dk each) and this CTA's 32 columns of
 * v (V) into buffer `buf` (rows past n as zeros), by nw warps (w: this one's index among them);
 * the caller commits the group. Half a warp a q/k row and a quarter a v row, so each access is
 * one contiguous run. */
template <bool Q, bool K, bool V>
__device__ __forceinline__ void gdn_tc_fetch(const struct k_gdn_chunk_params &p,
                                             const struct gdn_tc_lay &L, int buf, uint32_t t0,
                                             uint32_t n, uint32_t hv, uint32_t hk, uint32_t c0,
                                             uint32_t w, uint32_t nw)
{
    const uint32_t lane = threadIdx.x & 31, dk = L.dk, cd = p.d.conv_dim, kd = p.d.nk * dk;
    const __nv_bfloat16 *u = (const __nv_bfloat16 *)p.u;
    constexpr uint32_t lo = Q ? 0 : GDN_TC_C, hi = K ? 2 * GDN_TC_C : GDN_TC_C; /* q, then k */
    if (Q || K)
        for (uint32_t i = lo + 2 * w + (lane >> 4); i < hi; i += 2 * nw) {
            const uint32_t row = i & 63, isk = i >> 6, t = t0 + row;
            const __nv_bfloat16 *src = u + (size_t)t * cd + isk * kd + hk * dk;
            __nv_bfloat16 *dst = (isk ? gdn_tc_k(L, buf) : gdn_tc_q(L, buf)) + row * L.ldq;
            for (uint32_t c = 8 * (lane & 15); c < dk; c += 128)
                k_cp16(dst + c, t < n ? src + c : u, t < n);
        }
    if (V)
        for (uint32_t row = 8 * w + (lane >> 2); row < GDN_TC_C; row += 8 * nw) {
            const uint32_t c = 8 * (lane & 3), t = t0 + row;
            const __nv_bfloat16 *src = u + (size_t)t * cd + 2 * kd + hv * p.d.dv + c0 + c;
            k_cp16(gdn_tc_v(L, buf) + row * GDN_TC_LDV + c, t < n ? src : u, t < n);
        }
}

/* beta = b.sigmoid() (a bf16 op); g = -A_log.float().exp() * F.softplus(a.float() + dt_bias) */
__device__ __forceinline__ void gdn_tc_gates(uint16_t b, uint16_t a, float a_log, float dt_bias,
                                             float *beta, float *g)
{
    float x = k_bfbits2f(a) + dt_bias;
    *beta = k_round_bf16(k_sigmoid(k_bfbits2f(b)));
    *g = -expf(a_log) * (x > 20.0f ? x : log1pf(expf(x)));
}

/* rq, rk of the chunk's rows (two threads a row), and in warp 0 the gates of the rows whose raw
 * b, a (rows lane and lane + 32) it fetched one chunk ahead, their prefix sum and exps. */
__device__ __forceinline__ void gdn_tc_rows(const struct gdn_tc_lay &L, int buf, uint32_t t0,
                                            uint32_t n, const uint16_t (&rb)[2],
                                            const uint16_t (&ra)[2], float a_log, float dt_bias)
{
    const uint32_t tid = threadIdx.x, lane = tid & 31, dk = L.dk;
    {
        const uint32_t row = (tid >> 1) & 63, isk = tid >> 7, half = tid & 1;
        const __nv_bfloat16 *src =
            (isk ? gdn_tc_k(L, buf) : gdn_tc_q(L, buf)) + row * L.ldq + half * (dk / 2);
        float ss = 0.0f;
        for (uint32_t c = 0; c < dk / 2; c += 8) {
            uint4 w = *(const uint4 *)(src + c);
            uint32_t x[4] = {w.x, w.y, w.z, w.w};
#pragma unroll
            for (int e = 0; e < 4; e++) {
                float lo = k_bfbits2f(x[e] & 0xFFFF), hi = k_bfbits2f(x[e] >> 16);
                ss = fmaf(lo, lo, fmaf(hi, hi, ss));
            }
        }
        ss += __shfl_xor_sync(0xffffffffu, ss, 1);
        /* l2norm: x * rsqrt(sum(x^2) + 1e-6); q also * dk^-0.5 */
        float rn = 1.0f / sqrtf(ss + 1e-6f);
        if (!half) {
            if (isk)
                L.rk[row] = rn;
            else
                L.rq[row] = rn * (1.0f / sqrtf((float)dk));
        }
    }
    if (tid < 32) {
        float beta[2], g[2];
#pragma unroll
        for (int h = 0; h < 2; h++) {
            beta[h] = 0.0f, g[h] = 0.0f;
            if (t0 + lane + 32 * h < n)
                gdn_tc_gates(rb[h], ra[h], a_log, dt_bias, &beta[h], &g[h]);
        }
        /* g.cumsum(dim=-1): an inclusive scan in double, each sum rounded once to fp32 */
        double s0 = g[0], s1 = g[1];
#pragma unroll
        for (int o = 1; o < 32; o <<= 1) {
            double x0 = __shfl_up_sync(0xffffffffu, s0, o), x1 = __shfl_up_sync(0xffffffffu, s1, o);
            if ((int)lane >= o)
                s0 += x0, s1 += x1;
        }
        s1 += __shfl_sync(0xffffffffu, s0, 31);
        float gm0 = (float)s0, gm1 = (float)s1, last = __shfl_sync(0xffffffffu, gm1, 31);
        L.beta[lane] = beta[0], L.beta[lane + 32] = beta[1];
        L.gam[lane] = gm0, L.gam[lane + 32] = gm1;
        L.eg[lane] = expf(gm0), L.eg[lane + 32] = expf(gm1);
        L.dl[lane] = expf(last - gm0), L.dl[lane + 32] = expf(last - gm1);
    }
}

/* ---- P1: L and Attn -------------------------------------------------------------------------- */

/* Warps 0-3: L rows 16 r .. 16 r + 15 (r = warp); warps 4-7: Attn rows of r = 7 - warp (so each
 * scheduler gets one long and one short row band). Columns up to the diagonal block only: the
 * upper blocks are never read. */
__device__ __forceinline__ void gdn_tc_lower(const struct gdn_tc_lay &L, int buf)
{
    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, g = lane >> 2, t = lane & 3;
    const bool isl = warp < 4;
    const int r = isl ? warp : 7 - warp, ldq = L.ldq;
    const __nv_bfloat16 *A = (isl ? gdn_tc_k(L, buf) : gdn_tc_q(L, buf)) +
                             (16 * r + (lane & 15)) * ldq + 8 * (lane >> 4);
    const __nv_bfloat16 *B =
        gdn_tc_k(L, buf) + ((lane & 7) + 8 * (lane >> 4)) * ldq + 8 * ((lane >> 3) & 1);
    float acc[8][4];
#pragma unroll
    for (int j = 0; j < 8; j++)
#pragma unroll
        for (int e = 0; e < 4; e++)
            acc[j][e] = 0.0f;
    for (uint32_t ks = 0; ks < L.dk / 16; ks++) {
        uint32_t a[4];
        gdn_tc_ldsm(a, A + 16 * ks);
#pragma unroll
        for (int np = 0; np < 4; np++)
            if (np <= r) {
                uint32_t b[4];
                gdn_tc_ldsm(b, B + 16 * np * ldq + 16 * ks);
                gdn_tc_mma(acc[2 * np], a, b[0], b[1]);
                gdn_tc_mma(acc[2 * np + 1], a, b[2], b[3]);
            }
    }
    float *dst = isl ? L.lt : L.at;
#pragma unroll
    for (int nt = 0; nt < 8; nt++)
        if (nt < 2 * r + 2)
#pragma unroll
            for (int h = 0; h < 2; h++) {
                const int i = 16 * r + g + 8 * h, j = 8 * nt + 2 * t;
                const float si = isl ? L.beta[i] * L.rk[i] : L.rq[i], gi = L.gam[i];
                float v[2];
#pragma unroll
                for (int e = 0; e < 2; e++) {
                    const int jj = j + e;
                    const bool in = isl ? jj < i : jj <= i;
                    v[e] =
                        in ? si * L.rk[jj] * acc[nt][2 * h + e] * gdn_tc_exp(gi - L.gam[jj]) : 0.0f;
                }
                *(float2 *)(dst + i * GDN_TC_LDF + j) = make_float2(v[0], v[1]);
            }
}

/* ---- P2: Tm = (I + L)^-1 --------------------------------------------------------------------- */

/* In place in lt, by the 128 threads of warps 0-3 (gdn_tc_bar4). Tm is block lower
 * triangular like L: Tm_pp = (I + L_pp)^-1 =: D_p for the 16 x 16 diagonal blocks, and with
 * T_lo, T_hi the inverses of the two 32 x 32 diagonal halves,
 *   T_10 = -D_1 L_10 D_0,  T_32 = -D_3 L_32 D_2,  T_(hi,lo) = -T_hi L_(hi,lo) T_lo.
 * Each merge forms M = L T_lo first, in the (unused) upper blocks, then -T_hi M over the block
 * of L it replaces. The diagonal blocks keep zeros above their diagonal, so sums may run over
 * a whole 4- or 8-column group without a mask. */
__device__ __forceinline__ void gdn_tc_solve(const struct gdn_tc_lay &L)
{
    const int tid = threadIdx.x, LD = GDN_TC_LDF;
    float *lt = L.lt;
    if (tid < 64) { /* column c of D_b by forward substitution, in registers */
        const int b = tid >> 4, c = tid & 15;
        float *blk = lt + 16 * b * LD + 16 * b;
        float x[16];
#pragma unroll
        for (int i = 0; i < 16; i++) {
            float s = 0.0f;
#pragma unroll
            for (int m = 0; m < i; m++)
                s = fmaf(blk[i * LD + m], x[m], s);
            x[i] = i == c ? 1.0f : (i < c ? 0.0f : -s);
        }
        gdn_tc_bar4(L.mb);
#pragma unroll
        for (int i = 0; i < 16; i++)
            blk[i * LD + c] = x[i];
    } else {
        gdn_tc_bar4(L.mb);
    }
    gdn_tc_bar4(L.mb);
    { /* level 1: p = 0, 2; thread: row i of the 16 x 16 block, columns j0 .. j0 + 3 */
        const int p = 2 * (tid >> 6), i = (tid >> 2) & 15, j0 = 4 * (tid & 3);
        const float *lr = lt + (16 * (p + 1) + i) * LD + 16 * p, *d = lt + 16 * p * LD + 16 * p;
        float4 m = make_float4(0.0f, 0.0f, 0.0f, 0.0f);
        for (int k = j0; k < 16; k++) { /* M = L_(p+1,p) D_p, D_p[k][j] = 0 for k < j */
            float l = lr[k];
            float4 x = *(const float4 *)(d + k * LD + j0);
            m.x = fmaf(l, x.x, m.x), m.y = fmaf(l, x.y, m.y), m.z = fmaf(l, x.z, m.z),
            m.w = fmaf(l, x.w, m.w);
        }
        float *mp = lt + 16 * p * LD + 16 * (p + 1); /* block (p, p+1) */
        *(float4 *)(mp + i * LD + j0) = m;
        gdn_tc_bar4(L.mb);
        const float *dr = lt + (16 * (p + 1) + i) * LD + 16 * (p + 1);
        float4 s = make_float4(0.0f, 0.0f, 0.0f, 0.0f);
        for (int k = 0; k <= i; k++) { /* -D_(p+1) M */
            float dd = dr[k];
            float4 x = *(const float4 *)(mp + k * LD + j0);
            s.x = fmaf(dd, x.x, s.x), s.y = fmaf(dd, x.y, s.y), s.z = fmaf(dd, x.z, s.z),
            s.w = fmaf(dd, x.w, s.w);
        }
        *(float4 *)(lt + (16 * (p + 1) + i) * LD + 16 * p + j0) =
            make_float4(-s.x, -s.y, -s.z, -s.w);
        gdn_tc_bar4(L.mb);
    }
    { /* level 2: thread: row i of the 32 x 32 block, columns j0 .. j0 + 7 */
        const int i = tid >> 2, j0 = 8 * (tid & 3);
        const float *lr = lt + (32 + i) * LD;
        float m[8] = {0.0f, 0.0f, 0.0f, 0.0f, 0.0f, 0.0f, 0.0f, 0.0f};
        for (int k = j0; k < 32; k++) { /* M = L_(hi,lo) T_lo into rows 0-31, columns 32-63 */
            float l = lr[k];
            float4 x = *(const float4 *)(lt + k * LD + j0),
                   y = *(const float4 *)(lt + k * LD + j0 + 4);
            m[0] = fmaf(l, x.x, m[0]), m[1] = fmaf(l, x.y, m[1]), m[2] = fmaf(l, x.z, m[2]),
            m[3] = fmaf(l, x.w, m[3]), m[4] = fmaf(l, y.x, m[4]), m[5] = fmaf(l, y.y, m[5]),
            m[6] = fmaf(l, y.z, m[6]), m[7] = fmaf(l, y.w, m[7]);
        }
        float *mp = lt + 32;
        *(float4 *)(mp + i * LD + j0) = make_float4(m[0], m[1], m[2], m[3]);
        *(float4 *)(mp + i * LD + j0 + 4) = make_float4(m[4], m[5], m[6], m[7]);
        gdn_tc_bar4(L.mb);
        const float *tr = lt + (32 + i) * LD + 32;
        float s[8] = {0.0f, 0.0f, 0.0f, 0.0f, 0.0f, 0.0f, 0.0f, 0.0f};
        for (int k = 0; k <= i; k++) { /* -T_hi M */
            float tt = tr[k];
            float4 x = *(const float4 *)(mp + k * LD + j0),
                   y = *(const float4 *)(mp + k * LD + j0 + 4);
            s[0] = fmaf(tt, x.x, s[0]), s[1] = fmaf(tt, x.y, s[1]), s[2] = fmaf(tt, x.z, s[2]),
            s[3] = fmaf(tt, x.w, s[3]), s[4] = fmaf(tt, y.x, s[4]), s[5] = fmaf(tt, y.y, s[5]),
            s[6] = fmaf(tt, y.z, s[6]), s[7] = fmaf(tt, y.w, s[7]);
        }
        float *o = lt + (32 + i) * LD + j0;
        *(float4 *)o = make_float4(-s[0], -s[1], -s[2], -s[3]);
        *(float4 *)(o + 4) = make_float4(-s[4], -s[5], -s[6], -s[7]);
    }
}

/* ---- P3 .. P5 -------------------------------------------------------------------------------- */

/* P3 on rows of r, all 32 columns: X = beta (V - e^gam rk (kr S)) into the xv parts (X), and
 * qs = qr S, kept for P5 (Q). k_gdn_chunk runs both on warps 4-7 (r = 7 - warp), k_gdn_seq X
 * on warps 0-3 and qs on warps 4-7; an accumulator sees the same MMAs in the same order. */
template <int NS, bool X, bool Q>
__device__ __forceinline__ void gdn_tc_xqs(const struct gdn_tc_lay &L, int buf, int r,
                                           float (&qs)[4][4])
{
    const int lane = threadIdx.x & 31, g = lane >> 2, t = lane & 3, ldq = L.ldq;
    const uint32_t splane = L.dk * GDN_TC_LDV;
    const __nv_bfloat16 *ak = gdn_tc_k(L, buf) + (16 * r + (lane & 15)) * ldq + 8 * (lane >> 4);
    const __nv_bfloat16 *aq = gdn_tc_q(L, buf) + (16 * r + (lane & 15)) * ldq + 8 * (lane >> 4);
    const __nv_bfloat16 *bs = L.sp + (lane & 15) * GDN_TC_LDV + 8 * (lane >> 4);
    float x[4][4];
#pragma unroll
    for (int j = 0; j < 4; j++)
#pragma unroll
        for (int e = 0; e < 4; e++)
            x[j][e] = 0.0f, qs[j][e] = 0.0f;
    for (uint32_t ks = 0; ks < L.dk / 16; ks++) {
        uint32_t a[4], q[4];
        if (X)
            gdn_tc_ldsm(a, ak + 16 * ks);
        if (Q)
            gdn_tc_ldsm(q, aq + 16 * ks);
#pragma unroll
        for (int s = NS - 1; s >= 0; s--)
#pragma unroll
            for (int np = 0; np < 2; np++) {
                uint32_t b[4];
                gdn_tc_ldsm_t(b, bs + s * splane + 16 * ks * GDN_TC_LDV + 16 * np);
                if (X) {
                    gdn_tc_mma(x[2 * np], a, b[0], b[1]);
                    gdn_tc_mma(x[2 * np + 1], a, b[2], b[3]);
                }
                if (Q) {
                    gdn_tc_mma(qs[2 * np], q, b[0], b[1]);
                    gdn_tc_mma(qs[2 * np + 1], q, b[2], b[3]);
                }
            }
    }
    if constexpr (X) {
#pragma unroll
        for (int h = 0; h < 2; h++) {
            const int i = 16 * r + g + 8 * h;
            const float sk = L.eg[i] * L.rk[i], bt = L.beta[i];
#pragma unroll
            for (int j = 0; j < 4; j++) {
                const int c = 8 * j + 2 * t;
                __nv_bfloat162 v = *(const __nv_bfloat162 *)(gdn_tc_v(L, buf) + i * GDN_TC_LDV + c);
                float x0 = (__low2float(v) - sk * x[j][2 * h]) * bt;
                float x1 = (__high2float(v) - sk * x[j][2 * h + 1]) * bt;
                gdn_tc_put<NS>(L.xv, GDN_TC_C * GDN_TC_LDV, i * GDN_TC_LDV + c, x0, x1);
            }
        }
    }
}

/* P4 (all warps; warp w: rows of r = w or 7 - w, columns 16 (w / 4) .. + 16): V' = Tm X, then
 * after the barrier the V' parts over X and the V'' = e^(gam_63 - gam) rk V' parts over Tm. */
template <int NS, bool PK> __device__ __forceinline__ void gdn_tc_vnew(const struct gdn_tc_lay &L)
{
    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, g = lane >> 2, t = lane & 3;
    const int r = warp < 4 ? warp : 7 - warp, nh = warp >> 2;
    const uint32_t xplane = GDN_TC_C * GDN_TC_LDV;
    const __nv_bfloat16 *bx = L.xv + (lane & 15) * GDN_TC_LDV + 16 * nh + 8 * (lane >> 4);
    float acc[2][2][4]; /* [k-step parity][tile]: two chains of MMAs per tile, summed at the end */
#pragma unroll
    for (int q = 0; q < 2; q++)
#pragma unroll
        for (int j = 0; j < 2; j++)
#pragma unroll
            for (int e = 0; e < 4; e++)
                acc[q][j][e] = 0.0f;
#pragma unroll
    for (int ks = 0; ks < 4; ks++)
        if (ks <= r) {
            uint32_t a[NS][4], b[NS][4];
            gdn_tc_lda_f32<NS, PK>(a, gdn_tc_blk<PK>(L.lt, r, ks), lane);
#pragma unroll
            for (int s = 0; s < NS; s++)
                gdn_tc_ldsm_t(b[s], bx + s * xplane + 16 * ks * GDN_TC_LDV);
            gdn_tc_mma_split<NS, 2>(acc[ks & 1], a, b);
        }
    __syncthreads(); /* every warp has read Tm and X */
#pragma unroll
    for (int h = 0; h < 2; h++) {
        const int i = 16 * r + g + 8 * h;
        const float sd = L.dl[i] * L.rk[i];
#pragma unroll
        for (int j = 0; j < 2; j++) {
            const int e = i * GDN_TC_LDV + 16 * nh + 8 * j + 2 * t;
            const float v0 = acc[0][j][2 * h] + acc[1][j][2 * h];
            const float v1 = acc[0][j][2 * h + 1] + acc[1][j][2 * h + 1];
            gdn_tc_put<NS>(L.xv, xplane, e, v0, v1);
            gdn_tc_put<NS>(L.vv, xplane, e, sd * v0, sd * v1);
        }
    }
}

/* P5, warps 4-7: O = e^gam rq qs + Attn V' for rows of r, to `out` (rows below n). */
template <int NS, bool PK>
__device__ __forceinline__ void gdn_tc_out(const struct k_gdn_chunk_params &p,
                                           const struct gdn_tc_lay &L, int r, float (&o)[4][4],
                                           uint32_t t0, uint32_t n, uint32_t hv, uint32_t c0)
{
    const int lane = threadIdx.x & 31, g = lane >> 2, t = lane & 3;
    const uint32_t xplane = GDN_TC_C * GDN_TC_LDV;
#pragma unroll
    for (int h = 0; h < 2; h++) {
        const int i = 16 * r + g + 8 * h;
        const float s = L.eg[i] * L.rq[i];
#pragma unroll
        for (int j = 0; j < 4; j++)
            o[j][2 * h] *= s, o[j][2 * h + 1] *= s;
    }
    const __nv_bfloat16 *bv = L.xv + (lane & 15) * GDN_TC_LDV + 8 * (lane >> 4);
    float o2[4][4]; /* the odd k-steps: a second chain of MMAs per tile */
#pragma unroll
    for (int j = 0; j < 4; j++)
#pragma unroll
        for (int e = 0; e < 4; e++)
            o2[j][e] = 0.0f;
#pragma unroll
    for (int ks = 0; ks < 4; ks++)
        if (ks <= r) {
            uint32_t a[NS][4], b[NS][8];
            gdn_tc_lda_f32<NS, PK>(a, gdn_tc_blk<PK>(L.at, r, ks), lane);
#pragma unroll
            for (int s = 0; s < NS; s++)
#pragma unroll
                for (int np = 0; np < 2; np++)
                    gdn_tc_ldsm_t(b[s] + 4 * np, bv + s * xplane + 16 * ks * GDN_TC_LDV + 16 * np);
            if (ks & 1)
                gdn_tc_mma_split<NS, 4>(o2, a, b);
            else
                gdn_tc_mma_split<NS, 4>(o, a, b);
        }
#pragma unroll
    for (int j = 0; j < 4; j++)
#pragma unroll
        for (int e = 0; e < 4; e++)
            o[j][e] += o2[j][e];
    const size_t ld = (size_t)p.d.nv * p.d.dv;
    __nv_bfloat16 *out = (__nv_bfloat16 *)p.out + (size_t)hv * p.d.dv + c0 + 2 * t;
#pragma unroll
    for (int h = 0; h < 2; h++) {
        const uint32_t tt = t0 + 16 * r + g + 8 * h;
        if (tt < n) /* core_attn_out.to(bf16) */
#pragma unroll
            for (int j = 0; j < 4; j++)
                *(__nv_bfloat162 *)(out + tt * ld + 8 * j) =
                    __floats2bfloat162_rn(o[j][2 * h], o[j][2 * h + 1]);
    }
}

/* State rows (key dims) of warp w < 4: 16 w .. + 16 and 16 (w + 4) .. + 16, where below dk. */
template <int NS>
__device__ __forceinline__ void gdn_tc_state_parts(const struct gdn_tc_lay &L,
                                                   const float (&s)[2][4][4])
{
    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, g = lane >> 2, t = lane & 3;
#pragma unroll
    for (int mi = 0; mi < 2; mi++) {
        const uint32_t mt = warp + 4 * mi;
        if (16 * mt < L.dk)
#pragma unroll
            for (int h = 0; h < 2; h++)
#pragma unroll
                for (int j = 0; j < 4; j++)
                    gdn_tc_put<NS>(L.sp, L.dk * GDN_TC_LDV,
                                   (16 * mt + g + 8 * h) * GDN_TC_LDV + 8 * j + 2 * t,
                                   s[mi][j][2 * h], s[mi][j][2 * h + 1]);
    }
}

/* P5, warps 0-3: S = e^gam_63 S + kr^T V'' on the warp's state rows, then their parts. */
template <int NS>
__device__ __forceinline__ void gdn_tc_state(const struct gdn_tc_lay &L, int buf,
                                             float (&s)[2][4][4])
{
    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, ldq = L.ldq;
    const uint32_t xplane = GDN_TC_C * GDN_TC_LDV;
    const float e63 = L.eg[GDN_TC_C - 1];
#pragma unroll
    for (int mi = 0; mi < 2; mi++)
#pragma unroll
        for (int j = 0; j < 4; j++)
#pragma unroll
            for (int e = 0; e < 4; e++)
                s[mi][j][e] *= e63;
    const __nv_bfloat16 *ak =
        gdn_tc_k(L, buf) + ((lane & 7) + 8 * (lane >> 4)) * ldq + 8 * ((lane >> 3) & 1);
    const __nv_bfloat16 *bv = L.vv + (lane & 15) * GDN_TC_LDV + 8 * (lane >> 4);
    const bool m0 = 16 * warp < L.dk, m1 = 16 * (warp + 4) < L.dk; /* the row bands that exist */
#pragma unroll
    for (int ks = 0; ks < 4; ks++) {
        uint32_t b[NS][8], a[2][4];
#pragma unroll
        for (int sp = 0; sp < NS; sp++)
#pragma unroll
            for (int np = 0; np < 2; np++)
                gdn_tc_ldsm_t(b[sp] + 4 * np, bv + sp * xplane + 16 * ks * GDN_TC_LDV + 16 * np);
        if (m0)
            gdn_tc_ldsm_t(a[0], ak + 16 * ks * ldq + 16 * warp);
        if (m1)
            gdn_tc_ldsm_t(a[1], ak + 16 * ks * ldq + 16 * (warp + 4));
#pragma unroll
        for (int sp = NS - 1; sp >= 0; sp--)
#pragma unroll
            for (int mi = 0; mi < 2; mi++)
                if (mi == 0 ? m0 : m1)
#pragma unroll
                    for (int j = 0; j < 4; j++)
                        gdn_tc_mma(s[mi][j], a[mi], b[sp][2 * j], b[sp][2 * j + 1]);
    }
    gdn_tc_state_parts<NS>(L, s);
}

/* P4 and P5 of a chunk whose P3 is done: V' on all warps, a barrier, then the state on warps
 * 0-3 and the output rows on warps 4-7 (PK: Tm and Attn in k_gdn_prep's packed blocks). */
template <int NS, bool PK>
__device__ __forceinline__ void gdn_tc_p45(const struct k_gdn_chunk_params &p, const struct gdn_tc_lay &L,
                                           int buf, float (&s)[2][4][4], float (&o)[4][4], uint32_t t0,
                                           uint32_t n, uint32_t hv, uint32_t c0)
{
    const int warp = threadIdx.x >> 5;
    gdn_tc_vnew<NS, PK>(L);
    __syncthreads();
    if (warp < 4)
        gdn_tc_state<NS>(L, buf, s);
    else
        gdn_tc_out<NS, PK>(p, L, 7 - warp, o, t0, n, hv, c0);
}

/* Load (dir 0) or store (dir 1) the state of warp w < 4's rows, columns c0 .. c0 + 32. */
__device__ __forceinline__ void gdn_tc_state_io(const struct k_gdn_chunk_params &p,
                                                const struct gdn_tc_lay &L, uint32_t hv,
                                                uint32_t c0, float (&s)[2][4][4], int dir)
{
    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, g = lane >> 2, t = lane & 3;
    const uint32_t dv = p.d.dv;
    float *base = (float *)p.state + (size_t)hv * L.dk * dv + c0 + 2 * t;
#pragma unroll
    for (int mi = 0; mi < 2; mi++) {
        const uint32_t mt = warp + 4 * mi;
        if (16 * mt < L.dk)
#pragma unroll
            for (int h = 0; h < 2; h++)
#pragma unroll
                for (int j = 0; j < 4; j++) {
                    float2 *x = (float2 *)(base + (size_t)(16 * mt + g + 8 * h) * dv + 8 * j);
                    if (dir)
                        *x = make_float2(s[mi][j][2 * h], s[mi][j][2 * h + 1]);
                    else
                        s[mi][j][2 * h] = x->x, s[mi][j][2 * h + 1] = x->y;
                }
    }
}

/* ---- the kernels ----------------------------------------------------------------------------- */

template <int NS> __device__ __forceinline__ void gdn_tc_run(const struct k_gdn_chunk_params &p)
{
    extern __shared__ float4 gdn_tc_dsmem[];
    const struct k_step *st = k_step_of(p.step);
    const uint32_t n = min(st->n_tokens, p.d.T_max), hv = blockIdx.x, c0 = blockIdx.y * GDN_TC_DVT;
    const uint32_t hk = hv / (p.d.nv / p.d.nk), tid = threadIdx.x, warp = tid >> 5, lane = tid & 31;
    if (blockDim.x != K_GDN_CHUNK_TC_THREADS || !K_GDN_CHUNK_TC_OK(p.d.dk, p.d.dv) ||
        c0 + GDN_TC_DVT > p.d.dv)
        __trap();
    if (n == 0)
        return;
    struct gdn_tc_lay L;
    gdn_tc_layout(&L, (char *)gdn_tc_dsmem, p.d.dk);
    if (tid == 0) /* made visible by the loop's first __syncthreads() */
        asm volatile("mbarrier.init.shared::cta.b64 [%0], 128;\n" ::"r"(gdn_tc_sa(L.mb)) : "memory");

    /* the state (warps 0-3) and its parts; the first chunk's rows and gates on their way */
    float s[2][4][4] = {}, o[4][4];
    if (warp < 4) {
        gdn_tc_state_io(p, L, hv, c0, s, 0);
        gdn_tc_state_parts<NS>(L, s);
    }
    gdn_tc_fetch<true, true, true>(p, L, 0, 0, n, hv, hk, c0, warp, 8);
    k_cp_commit();
    const float a_log = ((const float *)p.a_log)[hv];
    const float dt_bias = k_bf2f(((const __nv_bfloat16 *)p.dt_bias)[hv]);
    uint16_t nb[2] = {0, 0}, na[2] = {0, 0}; /* raw b, a of rows lane, lane + 32 (warp 0) */
    const uint16_t *gb = (const uint16_t *)p.b, *ga = (const uint16_t *)p.a;
    if (tid < 32)
        for (int h = 0; h < 2; h++)
            if (lane + 32 * h < n)
                nb[h] = gb[(size_t)(lane + 32 * h) * p.d.nv + hv],
                na[h] = ga[(size_t)(lane + 32 * h) * p.d.nv + hv];

    for (uint32_t t0 = 0, c = 0; t0 < n; t0 += GDN_TC_C, c++) {
        const int buf = c & 1;
        asm volatile("cp.async.wait_group 0;\n" ::: "memory");
        __syncthreads(); /* this chunk's rows landed; the last chunk is done with every buffer */
        const uint16_t rb[2] = {nb[0], nb[1]}, ra[2] = {na[0], na[1]};
        const bool more = t0 + GDN_TC_C < n;
        if (more && tid < 32)
            for (int h = 0; h < 2; h++) {
                uint32_t tt = t0 + GDN_TC_C + lane + 32 * h;
                if (tt < n)
                    nb[h] = gb[(size_t)tt * p.d.nv + hv], na[h] = ga[(size_t)tt * p.d.nv + hv];
            }
        gdn_tc_rows(L, buf, t0, n, rb, ra, a_log, dt_bias);
        __syncthreads();
        gdn_tc_lower(L, buf);
        __syncthreads();
        if (warp < 4) {
            gdn_tc_solve(L);
        } else { /* P3, then the next chunk's rows on their way while the solve finishes */
            gdn_tc_xqs<NS, true, true>(L, buf, 7 - warp, o);
            if (more) {
                gdn_tc_fetch<true, true, true>(p, L, buf ^ 1, t0 + GDN_TC_C, n, hv, hk, c0,
                                               warp - 4, 4);
                k_cp_commit();
            }
        }
        __syncthreads();
        gdn_tc_p45<NS, false>(p, L, buf, s, o, t0, n, hv, c0);
    }
    if (warp < 4)
        gdn_tc_state_io(p, L, hv, c0, s, 1);
}

/* One CTA per SM (the shared memory allows no more): ptxas may then use up to 255 registers,
 * which the state and output accumulators with the split operands need. */
extern "C" __global__ void __launch_bounds__(K_GDN_CHUNK_TC_THREADS, 1)
    k_gdn_chunk(struct k_gdn_chunk_params p)
{
    gdn_tc_run<GDN_TC_NS>(p);
}

/* ---- k_gdn_prep + k_gdn_seq: the same rule in two launches ------------------------------------ */

/* The record of chunk ch of head hv in ws (K_GDN_REC_FLOATS floats, see kern/gdn.h). */
__device__ __forceinline__ float *gdn_tc_rec(const struct k_gdn_chunk_params &p, uint32_t hv,
                                             uint32_t ch)
{
    const uint32_t nch = (p.d.T_max + GDN_TC_C - 1) / GDN_TC_C;
    return (float *)p.ws + ((size_t)hv * nch + ch) * K_GDN_REC_FLOATS;
}

/* Queue the copies of a chunk's raw q or k rows by the CTA's 256 threads, each thread's offsets
 * fixed: half-warp h takes rows h, h + 16, h + 32, h + 48, lane l of it the 16 bytes at column
 * 8 l (threads with 8 l >= dk copy nothing). src: the chunk's first row of this head's q or k in
 * u (row stride cd); rows at or past `valid` are zero-filled. */
__device__ __forceinline__ void gdn_seq_rows(__nv_bfloat16 *dst, const __nv_bfloat16 *src,
                                             uint32_t cd, uint32_t ldq, uint32_t dk,
                                             uint32_t valid)
{
    const uint32_t h = threadIdx.x >> 4, col = 8 * (threadIdx.x & 15);
    if (col >= dk)
        return;
#pragma unroll
    for (uint32_t i = 0; i < 4; i++) {
        const uint32_t row = h + 16 * i;
        k_cp16(dst + row * ldq + col, src + (row < valid ? (size_t)row * cd + col : 0),
               row < valid);
    }
}

/* Queue the copies of this CTA's 32 columns of v (one 16-byte piece a thread) and of a record. */
__device__ __forceinline__ void gdn_seq_v(__nv_bfloat16 *dst, const __nv_bfloat16 *src,
                                          uint32_t cd, uint32_t valid)
{
    const uint32_t row = threadIdx.x >> 2, c = 8 * (threadIdx.x & 3);
    k_cp16(dst + row * GDN_TC_LDV + c, src + (row < valid ? (size_t)row * cd + c : 0), row < valid);
}
__device__ __forceinline__ void gdn_seq_rec(float *dst, const float *src)
{
    constexpr uint32_t N = K_GDN_REC_BYTES / 16;
#pragma unroll
    for (uint32_t k = 0; k < (N + K_GDN_CHUNK_TC_THREADS - 1) / K_GDN_CHUNK_TC_THREADS; k++) {
        const uint32_t i = threadIdx.x + K_GDN_CHUNK_TC_THREADS * k;
        if (i < N)
            k_cp16(dst + 4 * i, src + 4 * i, true);
    }
}

/* Bring a chunk's copies into L2 ahead of their cp.async: its q and k rows (two 128-byte lines a
 * row), this CTA's v columns (one line a row) and its record, one line a thread at most three
 * times. row0: the chunk's first row in u; valid: its rows below n. */
__device__ __forceinline__ void gdn_seq_prefetch(const __nv_bfloat16 *uq, const __nv_bfloat16 *uk,
                                                 const __nv_bfloat16 *uv, const float *rec,
                                                 size_t row0, uint32_t cd, uint32_t dk,
                                                 uint32_t valid)
{
    const uint32_t tid = threadIdx.x, row = (tid >> 1) & 63, half = tid & 1;
    if (row < valid && 64 * half < dk) {
        const __nv_bfloat16 *a = (tid >> 7 ? uk : uq) + row0 + (size_t)row * cd + 64 * half;
        asm volatile("prefetch.global.L2 [%0];\n" ::"l"(a));
    }
    if (tid < valid && tid < GDN_TC_C)
        asm volatile("prefetch.global.L2 [%0];\n" ::"l"(uv + row0 + (size_t)tid * cd));
    if (tid < K_GDN_REC_BYTES / 128)
        asm volatile("prefetch.global.L2 [%0];\n" ::"l"(rec + 32 * tid));
}

/* Copy the 10 lower 16 x 16 blocks of m (C, GDN_TC_LDF) to dst in the packed form gdn_tc_blk
 * reads, one float4 a step, by the nt threads from i0. */
__device__ __forceinline__ void gdn_tc_pack(float *dst, const float *m, uint32_t i0, uint32_t nt)
{
    for (uint32_t j = i0; j < 640; j += nt) {
        const uint32_t b = j >> 6, i = (j >> 2) & 15, q = j & 3;
        const uint32_t r = (b >= 1) + (b >= 3) + (b >= 6), ks = b - r * (r + 1) / 2;
        const float4 v = *(const float4 *)(m + (16 * r + i) * GDN_TC_LDF + 16 * ks + 4 * q);
        *(float4 *)(dst + 256 * b + 16 * i + 4 * (q ^ (i & 2))) = v;
    }
}

/* k_gdn_prep: P0-P2 of chunk blockIdx.y of head blockIdx.x, as k_gdn_chunk runs them, then the
 * record: Tm by warps 0-3 once the solve is done, Attn and the row scalars by warps 4-7 while it
 * runs. */
extern "C" __global__ void __launch_bounds__(K_GDN_CHUNK_TC_THREADS, 3)
    k_gdn_prep(struct k_gdn_chunk_params p)
{
    extern __shared__ float4 gdn_prep_dsmem[];
    const struct k_step *st = k_step_of(p.step);
    const uint32_t n = min(st->n_tokens, p.d.T_max), hv = blockIdx.x, ch = blockIdx.y;
    const uint32_t t0 = ch * GDN_TC_C, hk = hv / (p.d.nv / p.d.nk), tid = threadIdx.x,
                   warp = tid >> 5, lane = tid & 31, dk = p.d.dk;
    if (blockDim.x != K_GDN_CHUNK_TC_THREADS || !K_GDN_CHUNK_TC_OK(dk, p.d.dv))
        __trap();
    if (t0 >= n)
        return;
    struct gdn_tc_lay L = {};
    char *base = (char *)gdn_prep_dsmem;
    L.dk = dk, L.ldq = dk + 8;
    L.q0 = (__nv_bfloat16 *)base, L.k0 = L.q0 + GDN_TC_C * L.ldq;
    base += 2 * GDN_TC_C * L.ldq * 2;
    L.lt = (float *)base, L.at = L.lt + GDN_TC_C * GDN_TC_LDF;
    L.rq = L.at + GDN_TC_C * GDN_TC_LDF; /* rq, rk, beta, eg, dl in the record's order */
    L.rk = L.rq + GDN_TC_C, L.beta = L.rk + GDN_TC_C, L.eg = L.beta + GDN_TC_C;
    L.dl = L.eg + GDN_TC_C, L.gam = L.dl + GDN_TC_C;
    L.mb = (uint64_t *)(L.gam + GDN_TC_C);
    if (tid == 0) /* made visible by the __syncthreads() below */
        asm volatile("mbarrier.init.shared::cta.b64 [%0], 128;\n" ::"r"(gdn_tc_sa(L.mb)) : "memory");
    const uint32_t kd = p.d.nk * dk;
    const __nv_bfloat16 *uq = (const __nv_bfloat16 *)p.u + (size_t)t0 * p.d.conv_dim + hk * dk;
    gdn_seq_rows(L.q0, uq, p.d.conv_dim, L.ldq, dk, n - t0);
    gdn_seq_rows(L.k0, uq + kd, p.d.conv_dim, L.ldq, dk, n - t0);
    k_cp_commit();
    uint16_t rb[2] = {0, 0}, ra[2] = {0, 0};
    if (tid < 32)
        for (int h = 0; h < 2; h++) {
            const uint32_t t = t0 + lane + 32 * h;
            if (t < n)
                rb[h] = ((const uint16_t *)p.b)[(size_t)t * p.d.nv + hv],
                ra[h] = ((const uint16_t *)p.a)[(size_t)t * p.d.nv + hv];
        }
    const float a_log = ((const float *)p.a_log)[hv];
    const float dt_bias = k_bf2f(((const __nv_bfloat16 *)p.dt_bias)[hv]);
    asm volatile("cp.async.wait_group 0;\n" ::: "memory");
    __syncthreads();
    gdn_tc_rows(L, 0, t0, n, rb, ra, a_log, dt_bias);
    __syncthreads();
    gdn_tc_lower(L, 0);
    __syncthreads();
    float *rec = gdn_tc_rec(p, hv, ch);
    if (warp < 4) {
        gdn_tc_solve(L);
        gdn_tc_bar4(L.mb); /* every thread's part of Tm written */
        gdn_tc_pack(rec, L.lt, tid, 128);
    } else {
        gdn_tc_pack(rec + 2560, L.at, tid - 128, 128);
        if (tid - 128 < 5 * GDN_TC_C / 4)
            ((float4 *)(rec + 5120))[tid - 128] = ((const float4 *)L.rq)[tid - 128];
    }
}

/* k_gdn_seq: P3-P5 of k_gdn_chunk over the chunks in order, from k_gdn_prep's records. Per
 * chunk: the copies of chunk c landed and chunk c - 1 done (barrier); P3 (X on warps 0-3, qs
 * on warps 4-7); the next chunk's k rows and record queued (barrier); the next chunk's q rows
 * and v queued; P4 (two barriers); P5. */
template <int NS> __device__ __forceinline__ void gdn_seq_run(const struct k_gdn_chunk_params &p)
{
    extern __shared__ float4 gdn_seq_dsmem[];
    const struct k_step *st = k_step_of(p.step);
    const uint32_t n = min(st->n_tokens, p.d.T_max), hv = blockIdx.x, c0 = blockIdx.y * GDN_TC_DVT;
    const uint32_t hk = hv / (p.d.nv / p.d.nk), tid = threadIdx.x, warp = tid >> 5, dk = p.d.dk;
    if (blockDim.x != K_GDN_CHUNK_TC_THREADS || !K_GDN_CHUNK_TC_OK(dk, p.d.dv) ||
        c0 + GDN_TC_DVT > p.d.dv)
        __trap();
    if (n == 0)
        return;
    /* two records, then q, k, k, v, the state parts, the X / V' and V'' parts */
    struct gdn_tc_lay L = {};
    float *rec0 = (float *)gdn_seq_dsmem;
    char *base = (char *)(rec0 + 2 * K_GDN_REC_FLOATS);
    L.dk = dk, L.ldq = dk + 8;
    L.q0 = (__nv_bfloat16 *)base, L.k0 = L.q0 + GDN_TC_C * L.ldq, L.kb = GDN_TC_C * L.ldq;
    L.v0 = L.k0 + 2 * GDN_TC_C * L.ldq;
    L.sp = L.v0 + GDN_TC_C * GDN_TC_LDV;
    L.xv = L.sp + NS * dk * GDN_TC_LDV;
    L.vv = L.xv + NS * GDN_TC_C * GDN_TC_LDV;

    float s[2][4][4] = {}, o[4][4];
    if (warp < 4) {
        gdn_tc_state_io(p, L, hv, c0, s, 0);
        gdn_tc_state_parts<NS>(L, s);
    }
    /* this head's q, k rows and the CTA's v columns of token 0 in u; the first record */
    const uint32_t cd = p.d.conv_dim, kd = p.d.nk * dk;
    const __nv_bfloat16 *uq = (const __nv_bfloat16 *)p.u + hk * dk, *uk = uq + kd;
    const __nv_bfloat16 *uv = (const __nv_bfloat16 *)p.u + 2 * kd + hv * p.d.dv + c0;
    const float *grec = gdn_tc_rec(p, hv, 0);
    gdn_seq_rows(L.q0, uq, cd, L.ldq, dk, n);
    gdn_seq_rows(L.k0, uk, cd, L.ldq, dk, n);
    gdn_seq_v(L.v0, uv, cd, n);
    gdn_seq_rec(rec0, grec);
    k_cp_commit();

    for (uint32_t t0 = 0, c = 0; t0 < n; t0 += GDN_TC_C, c++) {
        const int buf = c & 1;
        const bool more = t0 + GDN_TC_C < n;
        asm volatile("cp.async.wait_group 0;\n" ::: "memory");
        __syncthreads(); /* this chunk's copies landed; the last chunk is done with every buffer */
        const size_t next = (size_t)(t0 + GDN_TC_C) * cd; /* the next chunk's first row in u */
        struct gdn_tc_lay V = L; /* this chunk's record */
        V.lt = rec0 + buf * K_GDN_REC_FLOATS, V.at = V.lt + 2560;
        V.rq = V.lt + 5120, V.rk = V.rq + GDN_TC_C, V.beta = V.rk + GDN_TC_C;
        V.eg = V.beta + GDN_TC_C, V.dl = V.eg + GDN_TC_C;
        if (warp < 4)
            gdn_tc_xqs<NS, true, false>(V, buf, warp, o);
        else
            gdn_tc_xqs<NS, false, true>(V, buf, 7 - warp, o);
        /* the next chunk's k rows and record, into the other buffers: queued after P3, whose
         * start they held up when queued first (T = 2048: 164.8 -> 157.5 us) */
        if (more) {
            grec += K_GDN_REC_FLOATS;
            gdn_seq_rows(gdn_tc_k(L, buf ^ 1), uk + next, cd, L.ldq, dk, n - t0 - GDN_TC_C);
            gdn_seq_rec(rec0 + (buf ^ 1) * K_GDN_REC_FLOATS, grec);
            k_cp_commit();
            if (t0 + 2 * GDN_TC_C < n) /* and the chunk after it into L2 */
                gdn_seq_prefetch(uq, uk, uv, grec + K_GDN_REC_FLOATS, next + (size_t)GDN_TC_C * cd,
                                 cd, dk, n - t0 - 2 * GDN_TC_C);
        }
        __syncthreads(); /* q and v read */
        if (more) {
            gdn_seq_rows(L.q0, uq + next, cd, L.ldq, dk, n - t0 - GDN_TC_C);
            gdn_seq_v(L.v0, uv + next, cd, n - t0 - GDN_TC_C);
            k_cp_commit();
        }
        gdn_tc_p45<NS, true>(p, V, buf, s, o, t0, n, hv, c0);
    }
    if (warp < 4)
        gdn_tc_state_io(p, L, hv, c0, s, 1);
}

extern "C" __global__ void __launch_bounds__(K_GDN_CHUNK_TC_THREADS, 1)
    k_gdn_seq(struct k_gdn_chunk_params p)
{
    gdn_seq_run<GDN_TC_NS>(p);
}

/* Gated RMSNorm of the core output rows (t < n) in place: one warp a (token, value head) row.
 * Rows of up to 2 * 32 * GDN_GNORM_REG values (dv = 128: two pairs a lane) keep o, z and w in
 * registers, their loads issued together before the sum (a second pass re-read o and waited on
 * z after the reduction); the same sums in the same order, so the same bits. */
#define GDN_GNORM_REG 4
extern "C" __global__ void __launch_bounds__(K_GDN_GNORM_THREADS)
    k_gdn_gnorm(struct k_gdn_chunk_params p)
{
    const struct k_step *st = k_step_of(p.step);
    const uint32_t n = min(st->n_tokens, p.d.T_max), nv = p.d.nv, dv = p.d.dv,
                   lane = threadIdx.x & 31;
    const uint32_t row = blockIdx.x * (blockDim.x / 32) + threadIdx.x / 32, t = row / nv,
                   hv = row % nv;
    if (t >= n)
        return;
    const size_t at = (size_t)t * nv * dv + (size_t)hv * dv;
    __nv_bfloat162 *o = (__nv_bfloat162 *)((__nv_bfloat16 *)p.out + at);
    const __nv_bfloat162 *z = (const __nv_bfloat162 *)((const __nv_bfloat16 *)p.z + at);
    const float2 *w = (const float2 *)p.norm_w;
    if (dv <= 2 * 32 * GDN_GNORM_REG) { /* the row's o, z and w in registers, all loaded at once */
        __nv_bfloat162 xo[GDN_GNORM_REG], xz[GDN_GNORM_REG];
        float2 xw[GDN_GNORM_REG];
        float ss = 0.0f;
#pragma unroll
        for (int i = 0; i < GDN_GNORM_REG; i++) {
            const uint32_t j = lane + 32 * i;
            if (j < dv / 2)
                xo[i] = o[j], xz[i] = z[j], xw[i] = w[j];
        }
#pragma unroll
        for (int i = 0; i < GDN_GNORM_REG; i++)
            if (lane + 32 * i < dv / 2) {
                float2 x = __bfloat1622float2(xo[i]);
                ss = fmaf(x.x, x.x, fmaf(x.y, x.y, ss));
            }
        const float rstd = 1.0f / sqrtf(k_warp_sum(ss) / (float)dv + p.d.eps);
#pragma unroll
        for (int i = 0; i < GDN_GNORM_REG; i++) {
            const uint32_t j = lane + 32 * i;
            if (j < dv / 2) {
                float2 x = __bfloat1622float2(xo[i]), zz = __bfloat1622float2(xz[i]);
                float y0 = k_round_bf16(x.x * rstd), y1 = k_round_bf16(x.y * rstd);
                o[j] = __floats2bfloat162_rn(xw[i].x * y0 * k_silu(zz.x),
                                             xw[i].y * y1 * k_silu(zz.y));
            }
        }
        return;
    }
    float ss = 0.0f;
    for (uint32_t j = lane; j < dv / 2; j += 32) {
        float2 x = __bfloat1622float2(o[j]);
        ss = fmaf(x.x, x.x, fmaf(x.y, x.y, ss));
    }
    const float rstd = 1.0f / sqrtf(k_warp_sum(ss) / (float)dv + p.d.eps);
    for (uint32_t j = lane; j < dv / 2; j += 32) {
        float2 x = __bfloat1622float2(o[j]), zz = __bfloat1622float2(z[j]), ww = w[j];
        float y0 = k_round_bf16(x.x * rstd), y1 = k_round_bf16(x.y * rstd);
        o[j] = __floats2bfloat162_rn(ww.x * y0 * k_silu(zz.x), ww.y * y1 * k_silu(zz.y));
    }
}
