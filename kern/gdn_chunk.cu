/* gdn_chunk.cu — k_gdn_chunk_fma: the prefill gated delta rule in chunked WY/UT form (kern/gdn.h,
 * MODEL.md §2.2), continuing from and updating the cached fp32 state, with the q/k l2 norms,
 * the gates and the gated RMSNorm with z fused in, on CUDA cores for any head size: the
 * planner runs it where the tensor-core k_gdn_chunk (gdn_chunk_tc.cu) cannot take the heads
 * (K_GDN_CHUNK_TC_OK) or its shared memory does not fit a target.
 *
 * Launch: grid (nv), one CTA per value head walking its chunks of C = 64 tokens in order;
 * block K_GDN_THREADS (256); dynamic shared memory K_GDN_CHUNK_SMEM(dk, DVT) (kern/gdn.h):
 *   fixed  4 * (C dk + C (dk + 4) + C 72 + C C + 4 C)  bytes   Q, K, Tm, L/Attn, row scalars
 *   tile   4 * (C + dk) * DVT                            bytes   U (C, DVT), S (dk, DVT)
 * The kernel reads the size it was given (%dynamic_smem_size) and takes the widest value tile
 * DVT <= 128 (a multiple of 4) that fits; dv wider than DVT runs as ceil(dv / DVT) column
 * tiles per chunk, the state tile streaming through global memory (L2) between them. At
 * dk = dv = 128 the whole head fits: 200704 bytes (196 KiB), one tile, the state read once
 * at the first chunk and written once after the last.
 *
 * Per chunk, with rows i, j in [0, C) and gam the in-chunk cumsum of g (padded rows past
 * step->n_tokens hold q = k = v = 0, beta = 0, g = 0 and are never written out):
 *   L    = strictly_lower(beta_i (k_i . k_j) e^(gam_i - gam_j))
 *   Tm   = (I + L)^-1                        columns solved in parallel, 4 lanes a column
 *   Attn = lower(q_i . k_j e^(gam_i - gam_j))
 *   per value tile (columns c0 .. c0 + DVT of V, S, O):
 *   X    = V - e^gam (K S)
 *   V'   = Tm (beta X)                       = U - W S of MODEL.md: U = Tm (beta V) and
 *                                              W S = Tm (beta e^gam K) S, reassociated, so W
 *                                              (C, dk) never needs storing
 *   O    = e^gam (Q S) + Attn V'             -> bf16 core output rows of `out`
 *   S    = e^gam_63 S + K^T (e^(gam_63 - gam) V')
 *   then the gated norm rewrites the chunk's rows of `out` in place:
 *   out  = bf16(w * bf16(o * rsqrt(mean(o^2) + eps)) * silu(z)).
 * All math is fp32 (q, k, v, beta, g cast inside); products are FMA loops over shared memory
 * with register tiles (gdn_ck_mm), one fixed summation order per element (deterministic).
 *
 * Layouts in shared memory (row-major, floats): Q (C, dk); K (C, dk + 4), the pad making rows
 * that eight lanes read at once fall in distinct banks; Tm (C, 72), likewise for the solve;
 * L/Attn (C, C); U (C, DVT); S (dk, DVT). */
#include "common.cuh"
#include "gdn.h"

#define GDN_CK_C       K_GDN_CHUNK /* 64 */
#define GDN_CK_LDT     72          /* row stride of Tm (as in K_GDN_CHUNK_SMEM) */
#define GDN_CK_DVT_MAX 128         /* widest value tile: the V' tile fits one pass of the block */

/* ---- the shared-memory plan ------------------------------------------------------------------ */

struct gdn_ck_lay {
    uint32_t dk, dv, dvt, ntiles, ldk;
    float *q, *k, *tm, *la, *u, *s; /* see the top of the file */
    float *beta, *gam, *eg, *dl;    /* (C) each: beta, cumsum g, e^gam, e^(gam_63 - gam) */
};

/* Place the buffers in the dynamic shared memory the launch gave; 0 if dk does not fit. */
__device__ int gdn_ck_layout(struct gdn_ck_lay *L, float *base, uint32_t dk, uint32_t dv)
{
    const uint32_t C = GDN_CK_C;
    uint32_t avail;
    asm("mov.u32 %0, %%dynamic_smem_size;" : "=r"(avail));
    uint32_t fixed = K_GDN_CHUNK_SMEM(dk, 0), per = K_GDN_CHUNK_SMEM(dk, 1) - fixed;
    if (avail < fixed + 4 * per)
        return 0;
    uint32_t most = min(((avail - fixed) / per) & ~3u, (uint32_t)GDN_CK_DVT_MAX);
    L->dk = dk, L->dv = dv, L->ldk = dk + 4;
    L->ntiles = (dv + most - 1) / most;
    L->dvt = ((dv + L->ntiles - 1) / L->ntiles + 3) & ~3u;
    L->q = base;
    L->k = L->q + C * dk;
    L->tm = L->k + C * L->ldk;
    L->la = L->tm + C * GDN_CK_LDT;
    L->beta = L->la + C * C;
    L->gam = L->beta + C, L->eg = L->gam + C, L->dl = L->eg + C;
    L->u = L->dl + C;
    L->s = L->u + C * L->dvt;
    return 1;
}

/* ---- register-tiled products over shared memory ------------------------------------------- */

/* Row a of a thread's tile: groups of 4 consecutive rows when A is stored (k, m) (float4 along
 * m), rows interleaved by RT otherwise. Columns likewise for B stored (k, n) / (n, k). */
template <bool AT> __device__ __forceinline__ int gdn_ck_row(int tm, int RT, int a)
{
    return AT ? 4 * (tm + RT * (a >> 2)) + (a & 3) : tm + RT * a;
}

template <bool BT> __device__ __forceinline__ int gdn_ck_col(int tn, int CT, int b)
{
    return BT ? tn + CT * b : 4 * (tn + CT * (b >> 2)) + (b & 3);
}

__device__ __forceinline__ float4 gdn_ck_ld4(const float *p, bool ok)
{
    return ok ? *(const float4 *)p : make_float4(0.0f, 0.0f, 0.0f, 0.0f);
}

/* acc[a][b] += sum_k A(row a, k) * ks[k] * B(k, col b) over k < K (a multiple of 4), for an
 * (M, N) output: A(m, k) = AT ? A[k * lda + m] : A[m * lda + k], B(k, n) = BT ? B[n * ldb + k]
 * : B[k * ldb + n]. ks may be NULL. Four k steps per trip, every load a float4. */
template <int TM, int TN, bool AT, bool BT>
__device__ __forceinline__ void gdn_ck_mm(float (&acc)[TM][TN], const float *A, int lda,
                                          const float *B, int ldb, const float *ks, int K, int tm,
                                          int tn, int RT, int CT, int M, int N)
{
    for (int k4 = 0; k4 < K; k4 += 4) {
        float a[TM][4], b[TN][4];
#pragma unroll
        for (int g = 0; g < (AT ? TM / 4 : TM); g++)
#pragma unroll
            for (int kk = 0; kk < (AT ? 4 : 1); kk++) {
                int m = gdn_ck_row<AT>(tm, RT, AT ? 4 * g : g);
                float4 v = gdn_ck_ld4(
                    AT ? A + (size_t)(k4 + kk) * lda + m : A + (size_t)m * lda + k4, m < M);
                if (AT)
                    a[4 * g][kk] = v.x, a[4 * g + 1][kk] = v.y, a[4 * g + 2][kk] = v.z,
                          a[4 * g + 3][kk] = v.w;
                else
                    a[g][0] = v.x, a[g][1] = v.y, a[g][2] = v.z, a[g][3] = v.w;
            }
#pragma unroll
        for (int g = 0; g < (BT ? TN : TN / 4); g++)
#pragma unroll
            for (int kk = 0; kk < (BT ? 1 : 4); kk++) {
                int n = gdn_ck_col<BT>(tn, CT, BT ? g : 4 * g);
                float4 v = gdn_ck_ld4(
                    BT ? B + (size_t)n * ldb + k4 : B + (size_t)(k4 + kk) * ldb + n, n < N);
                if (BT)
                    b[g][0] = v.x, b[g][1] = v.y, b[g][2] = v.z, b[g][3] = v.w;
                else
                    b[4 * g][kk] = v.x, b[4 * g + 1][kk] = v.y, b[4 * g + 2][kk] = v.z,
                          b[4 * g + 3][kk] = v.w;
            }
        if (ks) {
#pragma unroll
            for (int kk = 0; kk < 4; kk++) {
                float s = ks[k4 + kk];
#pragma unroll
                for (int i = 0; i < TM; i++)
                    a[i][kk] *= s;
            }
        }
#pragma unroll
        for (int kk = 0; kk < 4; kk++)
#pragma unroll
            for (int i = 0; i < TM; i++)
#pragma unroll
                for (int j = 0; j < TN; j++)
                    acc[i][j] = fmaf(a[i][kk], b[j][kk], acc[i][j]);
    }
}

template <int TM, int TN> __device__ __forceinline__ void gdn_ck_zero(float (&acc)[TM][TN])
{
#pragma unroll
    for (int i = 0; i < TM; i++)
#pragma unroll
        for (int j = 0; j < TN; j++)
            acc[i][j] = 0.0f;
}

/* ---- per chunk: rows, gates, L, Tm, Attn ------------------------------------------------------
 */

/* beta = b.sigmoid() (a bf16 op); g = -A_log.float().exp() * F.softplus(a.float() + dt_bias) */
__device__ __forceinline__ void gdn_ck_gates(__nv_bfloat16 b, __nv_bfloat16 a, float a_log,
                                             __nv_bfloat16 dt_bias, float *beta, float *g)
{
    float x = k_bf2f(a) + k_bf2f(dt_bias);
    *beta = k_round_bf16(k_sigmoid(k_bf2f(b)));
    *g = -expf(a_log) * (x > 20.0f ? x : log1pf(expf(x)));
}

/* Q, K rows of the chunk (l2-normed, Q scaled by dk^-0.5), beta, gam, e^gam, e^(gam_63-gam). */
__device__ void gdn_ck_rows(const struct k_gdn_chunk_params &p, const struct gdn_ck_lay &L,
                            uint32_t t0, uint32_t n, uint32_t hv, uint32_t hk)
{
    const uint32_t C = GDN_CK_C, dk = L.dk, cd = p.d.conv_dim, nv = p.d.nv;
    const uint32_t warp = threadIdx.x / 32, lane = threadIdx.x % 32, nw = blockDim.x / 32;
    const float scale = 1.0f / sqrtf((float)dk);
    for (uint32_t i = warp; i < 2 * C; i += nw) { /* rows 0..C-1: q, C..2C-1: k */
        uint32_t row = i % C, t = t0 + row, isk = i / C;
        float *dst = isk ? L.k + row * L.ldk : L.q + row * dk;
        const uint16_t *src = (const uint16_t *)p.u + (size_t)t * cd + isk * p.d.nk * dk + hk * dk;
        float ss = 0.0f;
        for (uint32_t r = 4 * lane; r < dk; r += 128) {
            float4 x = make_float4(0.0f, 0.0f, 0.0f, 0.0f);
            if (t < n) {
                uint2 w = *(const uint2 *)(src + r);
                x = make_float4(k_bfbits2f(w.x & 0xFFFF), k_bfbits2f(w.x >> 16),
                                k_bfbits2f(w.y & 0xFFFF), k_bfbits2f(w.y >> 16));
            }
            ss = fmaf(x.x, x.x, fmaf(x.y, x.y, fmaf(x.z, x.z, fmaf(x.w, x.w, ss))));
            *(float4 *)(dst + r) = x;
        }
        /* l2norm: x * rsqrt(sum(x^2) + 1e-6); q * dk^-0.5 */
        float rn = 1.0f / sqrtf(k_warp_sum(ss) + 1e-6f), sc = isk ? 1.0f : scale;
        for (uint32_t r = 4 * lane; r < dk; r += 128) { /* the lane's own elements */
            float4 x = *(float4 *)(dst + r);
            x = make_float4(x.x * rn * sc, x.y * rn * sc, x.z * rn * sc, x.w * rn * sc);
            *(float4 *)(dst + r) = x;
        }
    }
    for (uint32_t i = threadIdx.x; i < C; i += blockDim.x) {
        float beta = 0.0f, g = 0.0f;
        if (t0 + i < n) {
            size_t x = (size_t)(t0 + i) * nv + hv;
            gdn_ck_gates(((const __nv_bfloat16 *)p.b)[x], ((const __nv_bfloat16 *)p.a)[x],
                         ((const float *)p.a_log)[hv], ((const __nv_bfloat16 *)p.dt_bias)[hv],
                         &beta, &g);
        }
        L.beta[i] = beta, L.gam[i] = g;
    }
    __syncthreads();
    if (threadIdx.x == 0) /* g.cumsum(dim=-1), in order */
        for (uint32_t i = 1; i < C; i++)
            L.gam[i] += L.gam[i - 1];
    __syncthreads();
    for (uint32_t i = threadIdx.x; i < C; i += blockDim.x)
        L.eg[i] = expf(L.gam[i]), L.dl[i] = expf(L.gam[C - 1] - L.gam[i]);
}

/* L (qk = 0) = strictly_lower(beta_i k_i.k_j Gamma_ij), or Attn (qk = 1) = lower(q_i.k_j
 * Gamma_ij), into L.la; Gamma_ij = e^(gam_i - gam_j). */
__device__ void gdn_ck_lower(const struct gdn_ck_lay &L, int qk)
{
    const int C = GDN_CK_C, RT = C / 4, CT = C / 4;
    for (int tile = threadIdx.x; tile < RT * CT; tile += blockDim.x) {
        int tm = tile / CT, tn = tile % CT;
        float acc[4][4];
        gdn_ck_zero(acc);
        gdn_ck_mm<4, 4, false, true>(acc, qk ? L.q : L.k, qk ? L.dk : L.ldk, L.k, L.ldk, nullptr,
                                     L.dk, tm, tn, RT, CT, C, C);
#pragma unroll
        for (int a = 0; a < 4; a++)
#pragma unroll
            for (int b = 0; b < 4; b++) {
                int i = gdn_ck_row<false>(tm, RT, a), j = gdn_ck_col<true>(tn, CT, b);
                float v = 0.0f, d = L.gam[i] - L.gam[j];
                if (qk && j <= i)
                    v = acc[a][b] * expf(d);
                else if (!qk && j < i)
                    v = L.beta[i] * acc[a][b] * expf(d);
                L.la[i * C + j] = v;
            }
    }
}

/* Tm = (I + L)^-1 by forward substitution, one column j per 4 lanes (8 columns a warp):
 * Tm[i][j] = -sum_{m = j}^{i-1} L[i][m] Tm[m][j] for i > j, the 4 lanes taking every 4th m. */
__device__ void gdn_ck_solve(const struct gdn_ck_lay &L)
{
    const int C = GDN_CK_C, lane = threadIdx.x % 32, part = lane % 4;
    const int j = 8 * (threadIdx.x / 32) + lane / 4;
    float *tm = L.tm;
    if (part == 0)
        for (int i = 0; i < C; i++)
            tm[i * GDN_CK_LDT + j] = i == j ? 1.0f : 0.0f;
    __syncwarp();
    for (int i = 1; i < C; i++) {
        float s = 0.0f;
        for (int m = part; m < i; m += 4)
            s = fmaf(L.la[i * C + m], tm[m * GDN_CK_LDT + j], s);
        s += __shfl_xor_sync(0xffffffffu, s, 1);
        s += __shfl_xor_sync(0xffffffffu, s, 2);
        if (part == 0 && j < i)
            tm[i * GDN_CK_LDT + j] = -s;
        __syncwarp();
    }
}

/* ---- per value tile -----------------------------------------------------------------------------
 */

/* Load (dir 0) or store (dir 1) the state tile S[:, c0 .. c0 + w) of head hv. */
__device__ void gdn_ck_state_io(const struct k_gdn_chunk_params &p, const struct gdn_ck_lay &L,
                                uint32_t hv, uint32_t c0, uint32_t w, int dir)
{
    float *g = (float *)p.state + (size_t)hv * L.dk * L.dv + c0;
    for (uint32_t x = threadIdx.x; x < L.dk * (w / 4); x += blockDim.x) {
        uint32_t r = x / (w / 4), c = 4 * (x % (w / 4));
        float4 *sm = (float4 *)(L.s + r * L.dvt + c), *gm = (float4 *)(g + (size_t)r * L.dv + c);
        if (dir)
            *gm = *sm;
        else
            *sm = *gm;
    }
}

/* U = V[:, c0 .. c0 + w) of the chunk's rows (zero past n). */
__device__ void gdn_ck_load_v(const struct k_gdn_chunk_params &p, const struct gdn_ck_lay &L,
                              uint32_t t0, uint32_t n, uint32_t hv, uint32_t c0, uint32_t w)
{
    const uint32_t C = GDN_CK_C, kd = p.d.nk * L.dk;
    for (uint32_t x = threadIdx.x; x < C * (w / 4); x += blockDim.x) {
        uint32_t i = x / (w / 4), c = 4 * (x % (w / 4));
        float4 v = make_float4(0.0f, 0.0f, 0.0f, 0.0f);
        if (t0 + i < n) {
            const uint16_t *src = (const uint16_t *)p.u + (size_t)(t0 + i) * p.d.conv_dim + 2 * kd +
                                  hv * L.dv + c0 + c;
            uint2 b = *(const uint2 *)src;
            v = make_float4(k_bfbits2f(b.x & 0xFFFF), k_bfbits2f(b.x >> 16),
                            k_bfbits2f(b.y & 0xFFFF), k_bfbits2f(b.y >> 16));
        }
        *(float4 *)(L.u + i * L.dvt + c) = v;
    }
}

/* X = V - e^gam (K S), in place in U (each thread rewrites only its own tile). */
__device__ void gdn_ck_x(const struct gdn_ck_lay &L, uint32_t w)
{
    const int C = GDN_CK_C, RT = C / 4, CT = ((int)w + 7) / 8;
    for (int tile = threadIdx.x; tile < RT * CT; tile += blockDim.x) {
        int tm = tile / CT, tn = tile % CT;
        float acc[4][8];
        gdn_ck_zero(acc);
        gdn_ck_mm<4, 8, false, false>(acc, L.k, L.ldk, L.s, L.dvt, nullptr, L.dk, tm, tn, RT, CT, C,
                                      w);
#pragma unroll
        for (int a = 0; a < 4; a++)
#pragma unroll
            for (int b = 0; b < 8; b++) {
                int i = gdn_ck_row<false>(tm, RT, a), c = gdn_ck_col<false>(tn, CT, b);
                if (c < (int)w)
                    L.u[i * L.dvt + c] -= L.eg[i] * acc[a][b];
            }
    }
}

/* V' = Tm (beta X), replacing X in U. Every thread reads all of X before any writes: at most
 * 16 x 16 tiles (DVT <= 128), one per thread, held in registers across the barrier. */
__device__ void gdn_ck_vnew(const struct gdn_ck_lay &L, uint32_t w)
{
    const int C = GDN_CK_C, RT = C / 4, CT = ((int)w + 7) / 8;
    const int tile = threadIdx.x, tm = tile / CT, tn = tile % CT;
    float acc[4][8];
    gdn_ck_zero(acc);
    if (tile < RT * CT)
        gdn_ck_mm<4, 8, false, false>(acc, L.tm, GDN_CK_LDT, L.u, L.dvt, L.beta, C, tm, tn, RT, CT,
                                      C, w);
    __syncthreads();
    if (tile < RT * CT)
#pragma unroll
        for (int a = 0; a < 4; a++)
#pragma unroll
            for (int b = 0; b < 8; b++) {
                int i = gdn_ck_row<false>(tm, RT, a), c = gdn_ck_col<false>(tn, CT, b);
                if (c < (int)w)
                    L.u[i * L.dvt + c] = acc[a][b];
            }
}

/* O = e^gam (Q S) + Attn V' -> bf16 core output of rows t0 + i < n, columns c0 .. c0 + w. */
__device__ void gdn_ck_out(const struct k_gdn_chunk_params &p, const struct gdn_ck_lay &L,
                           uint32_t t0, uint32_t n, uint32_t hv, uint32_t c0, uint32_t w)
{
    const int C = GDN_CK_C, RT = C / 4, CT = ((int)w + 7) / 8;
    const size_t ld = (size_t)p.d.nv * L.dv;
    for (int tile = threadIdx.x; tile < RT * CT; tile += blockDim.x) {
        int tm = tile / CT, tn = tile % CT;
        float acc[4][8];
        gdn_ck_zero(acc);
        gdn_ck_mm<4, 8, false, false>(acc, L.q, L.dk, L.s, L.dvt, nullptr, L.dk, tm, tn, RT, CT, C,
                                      w);
#pragma unroll
        for (int a = 0; a < 4; a++) {
            float e = L.eg[gdn_ck_row<false>(tm, RT, a)];
#pragma unroll
            for (int b = 0; b < 8; b++)
                acc[a][b] *= e;
        }
        gdn_ck_mm<4, 8, false, false>(acc, L.la, C, L.u, L.dvt, nullptr, C, tm, tn, RT, CT, C, w);
#pragma unroll
        for (int a = 0; a < 4; a++) {
            uint32_t t = t0 + gdn_ck_row<false>(tm, RT, a);
#pragma unroll
            for (int g = 0; g < 2; g++) {
                int c = gdn_ck_col<false>(tn, CT, 4 * g);
                if (t >= n || c >= (int)w)
                    continue;
                uint32_t b[4]; /* core_attn_out.to(bf16), four columns in one 8-byte store */
#pragma unroll
                for (int e = 0; e < 4; e++)
                    b[e] = __bfloat16_as_ushort(k_f2bf(acc[a][4 * g + e]));
                uint2 v = make_uint2(b[0] | b[1] << 16, b[2] | b[3] << 16);
                *(uint2 *)((__nv_bfloat16 *)p.out + t * ld + hv * L.dv + c0 + c) = v;
            }
        }
    }
}

/* S = e^gam_63 S + K^T (e^(gam_63 - gam) V'), each thread updating its own (8, 8) tile. */
__device__ void gdn_ck_state(const struct gdn_ck_lay &L, uint32_t w)
{
    const int C = GDN_CK_C, RT = ((int)L.dk + 7) / 8, CT = ((int)w + 7) / 8;
    const float e63 = L.eg[C - 1];
    for (int tile = threadIdx.x; tile < RT * CT; tile += blockDim.x) {
        int tm = tile / CT, tn = tile % CT;
        float acc[8][8];
        gdn_ck_zero(acc);
        gdn_ck_mm<8, 8, true, false>(acc, L.k, L.ldk, L.u, L.dvt, L.dl, C, tm, tn, RT, CT, L.dk, w);
#pragma unroll
        for (int a = 0; a < 8; a++)
#pragma unroll
            for (int b = 0; b < 8; b++) {
                int r = gdn_ck_row<true>(tm, RT, a), c = gdn_ck_col<false>(tn, CT, b);
                if (r < (int)L.dk && c < (int)w)
                    L.s[r * L.dvt + c] = fmaf(L.s[r * L.dvt + c], e63, acc[a][b]);
            }
    }
}

/* Gated RMSNorm of the chunk's rows, in place in `out`: one warp a row. */
__device__ void gdn_ck_gnorm(const struct k_gdn_chunk_params &p, uint32_t t0, uint32_t n,
                             uint32_t hv)
{
    const uint32_t dv = p.d.dv, warp = threadIdx.x / 32, lane = threadIdx.x % 32;
    const size_t ld = (size_t)p.d.nv * dv;
    const float *w = (const float *)p.norm_w;
    for (uint32_t t = t0 + warp; t < min(n, t0 + GDN_CK_C); t += blockDim.x / 32) {
        __nv_bfloat16 *o = (__nv_bfloat16 *)p.out + t * ld + hv * dv;
        const __nv_bfloat16 *z = (const __nv_bfloat16 *)p.z + t * ld + hv * dv;
        float ss = 0.0f;
        for (uint32_t j = lane; j < dv; j += 32)
            ss = fmaf(k_bf2f(o[j]), k_bf2f(o[j]), ss);
        float rstd = 1.0f / sqrtf(k_warp_sum(ss) / (float)dv + p.d.eps);
        for (uint32_t j = lane; j < dv; j += 32) {
            float y = k_round_bf16(k_bf2f(o[j]) * rstd);
            o[j] = k_f2bf(w[j] * y * k_silu(k_bf2f(z[j])));
        }
    }
}

/* One CTA per SM fits the shared memory anyway; saying so lets ptxas keep the 8 x 8 tiles of
 * gdn_ck_state in registers (it would otherwise aim at two CTAs, 128 registers, and spill). */
extern "C" __global__ void __launch_bounds__(K_GDN_THREADS, 1)
    k_gdn_chunk_fma(struct k_gdn_chunk_params p)
{
    extern __shared__ float4 gdn_ck_dsmem[];
    const struct k_step *st = k_step_of(p.step);
    const uint32_t n = min(st->n_tokens, p.d.T_max), hv = blockIdx.x, hk = hv / (p.d.nv / p.d.nk);
    struct gdn_ck_lay L;
    if (blockDim.x != K_GDN_THREADS || p.d.dk % 4 || p.d.dv % 4 ||
        !gdn_ck_layout(&L, (float *)gdn_ck_dsmem, p.d.dk, p.d.dv))
        __trap();
    for (uint32_t t0 = 0; t0 < n; t0 += GDN_CK_C) {
        const bool first = t0 == 0, last = t0 + GDN_CK_C >= n;
        gdn_ck_rows(p, L, t0, n, hv, hk);
        gdn_ck_lower(L, 0);
        __syncthreads();
        gdn_ck_solve(L);
        __syncthreads();
        gdn_ck_lower(L, 1);
        for (uint32_t tile = 0; tile < L.ntiles; tile++) {
            uint32_t c0 = tile * L.dvt, w = min(L.dvt, L.dv - c0);
            if (L.ntiles > 1 || first)
                gdn_ck_state_io(p, L, hv, c0, w, 0);
            gdn_ck_load_v(p, L, t0, n, hv, c0, w);
            __syncthreads();
            gdn_ck_x(L, w);
            __syncthreads();
            gdn_ck_vnew(L, w);
            __syncthreads();
            gdn_ck_out(p, L, t0, n, hv, c0, w);
            __syncthreads();
            gdn_ck_state(L, w);
            __syncthreads();
            if (L.ntiles > 1 || last) {
                gdn_ck_state_io(p, L, hv, c0, w, 1);
                __syncthreads();
            }
        }
        gdn_ck_gnorm(p, t0, n, hv);
    }
}
