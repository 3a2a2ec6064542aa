/* gdn.h — Gated DeltaNet kernels (MODEL.md §2.2).
 *
 * k_gdn_step (decode, one token, fused): for each value head hv, with key head hk = hv / (nv/nk),
 *   from the post-conv q, k, v (the conv ran in the in_proj GEMV, kern/gemv.h K_GEMV_CONV):
 *   q, k l2-normed (eps 1e-6 inside the rsqrt, sum not mean), q *= dk^-0.5;
 *   g = -exp(A_log) * softplus(a + dt_bias), beta = sigmoid(b);
 *   S = e^g S; S += k (beta (v - S^T k))^T; o = S^T q   (fp32 state, one read, one write);
 *   out = w * rmsnorm(o) * silu(z)                     (gated RMSNorm, plain w).
 *   Launch: grid (nv), block K_GDN_STEP_THREADS.
 *
 * k_gdn_conv (prefill): the causal conv + SiLU over the chunk, reading the window for the
 *   first K-1 taps and leaving the last K-1 inputs in it. Launch: grid
 *   (K_GDN_CONV_GRID(conv_dim, T_max)): channel blocks of 128 threads times token blocks of
 *   K_GDN_CONV_TB(T_max), block 128.
 * k_gdn_chunk (prefill): the chunked delta rule, chunks of K_GDN_CHUNK tokens in WY/UT form
 *   (MODEL.md §2.2) on tensor cores, continuing from and updating the cached state S; q/k l2
 *   norms and the gates are computed inside. Launch: grid (nv, dv / K_GDN_CHUNK_TC_DVT), one
 *   CTA per 32 value columns of a head, block K_GDN_CHUNK_TC_THREADS, dynamic shared memory
 *   K_GDN_CHUNK_TC_SMEM(dk); heads with K_GDN_CHUNK_TC_OK(dk, dv) only. It writes the core
 *   output; k_gdn_gnorm (grid (ceil(T_max nv / 8)), block K_GDN_GNORM_THREADS, the same
 *   parameters) then applies the gated RMSNorm with z in place, as it needs whole rows.
 * k_gdn_prep + k_gdn_seq (prefill): k_gdn_chunk split in two, where K_GDN_SEQ_SMEM fits every
 *   target (the planner's choice over k_gdn_chunk; same bits). k_gdn_prep computes what does not
 *   depend on the state, for every chunk at once: grid (nv, ceil(T_max / K_GDN_CHUNK)), block
 *   K_GDN_CHUNK_TC_THREADS, dynamic shared memory K_GDN_PREP_SMEM(dk); it leaves one record of
 *   K_GDN_REC_BYTES per (value head, chunk) in `ws` (K_GDN_WS_BYTES). k_gdn_seq then walks the
 *   chunks in order from those records: grid (nv, dv / K_GDN_CHUNK_TC_DVT), block
 *   K_GDN_CHUNK_TC_THREADS, dynamic shared memory K_GDN_SEQ_SMEM(dk); k_gdn_gnorm follows.
 * k_gdn_chunk_fma (prefill): the same on CUDA cores for any head size, the gated RMSNorm fused
 *   at the end. Launch: grid (nv), block K_GDN_THREADS, dynamic shared memory
 *   K_GDN_CHUNK_SMEM(dk, min(dv, 128)) capped at the device's opt-in limit (the kernel takes
 *   the widest value tile that fits). */
#ifndef K_GDN_H
#define K_GDN_H

#include <stdint.h>

#define K_GDN_THREADS 256
#define K_GDN_STEP_THREADS 512
/* k_gdn_conv: a thread walks K_GDN_CONV_TB(T_max) tokens (short chunks: more, shorter walks) of
 * K_GDN_CONV_CH(conv_dim) adjacent channels (two where conv_dim is even: 4-byte accesses, a
 * warp's 128 bytes one line); block 128. */
#define K_GDN_CONV_TB(T) ((T) <= 512u ? 16u : 32u)
#define K_GDN_CONV_CH(cd) ((cd) % 2u ? 1u : 2u)
#define K_GDN_CONV_GRID(cd, T)                                                                     \
    ((((cd) + 128u * K_GDN_CONV_CH(cd) - 1u) / (128u * K_GDN_CONV_CH(cd))) *                       \
     (((T) + K_GDN_CONV_TB(T) - 1u) / K_GDN_CONV_TB(T)))
#define K_GDN_CHUNK 64

/* Dynamic shared memory of k_gdn_chunk_fma with a value tile of dvt columns (a multiple of 4):
 * fixed Q (C, dk), K (C, dk + 4), Tm (C, 72), L/Attn (C, C), 4 row scalars (C); per value
 * column a U row (C) and an S column (dk); 4-byte floats. 200704 bytes at dk = dv = 128. */
#define K_GDN_CHUNK_SMEM(dk, dvt)                                                                  \
    (4u * (K_GDN_CHUNK * (2u * (dk) + 4u) + K_GDN_CHUNK * 72u + K_GDN_CHUNK * K_GDN_CHUNK +        \
           4u * K_GDN_CHUNK) +                                                                     \
     4u * (K_GDN_CHUNK + (dk)) * (dvt))

/* k_gdn_chunk: value columns per CTA, threads, the head sizes it takes (mma tiles of 16 key
 * dims, 32-column value tiles), and its dynamic shared memory: raw q, k rows (C, dk + 8) and
 * v (C, 40) bf16, each double-buffered; L/Tm and Attn (C, 72) fp32; 3 bf16 parts of the
 * state (dk, 40) and of X / V' (C, 40); 6 row scalars (C) fp32; the solve's mbarrier (16).
 * 164368 bytes at dk = 128, which fits every target from sm_80 up. */
#define K_GDN_CHUNK_TC_DVT 32
#define K_GDN_CHUNK_TC_THREADS 256
#define K_GDN_GNORM_THREADS 256
#define K_GDN_CHUNK_TC_OK(dk, dv) ((dk) % 16 == 0 && (dk) >= 16 && (dk) <= 128 && (dv) % 32 == 0)
#define K_GDN_CHUNK_TC_SMEM(dk)                                                                    \
    (2u * (2u * K_GDN_CHUNK * ((dk) + 8u) * 2u + K_GDN_CHUNK * 40u * 2u) +                         \
     2u * K_GDN_CHUNK * 72u * 4u + 3u * ((dk) + K_GDN_CHUNK) * 40u * 2u + 6u * K_GDN_CHUNK * 4u + 16u)

/* k_gdn_prep / k_gdn_seq. A record: the 10 lower 16 x 16 blocks of Tm and of Attn (fp32, see
 * kern/gdn_chunk_tc.cu), then rq, rk, beta, e^gam and e^(gam_63 - gam) of the chunk's rows. */
#define K_GDN_REC_FLOATS (2u * 10u * 256u + 5u * K_GDN_CHUNK)
#define K_GDN_REC_BYTES (4u * K_GDN_REC_FLOATS) /* 21760 */
#define K_GDN_WS_BYTES(nv, T_max)                                                                  \
    ((uint64_t)(nv) * (((T_max) + K_GDN_CHUNK - 1u) / K_GDN_CHUNK) * K_GDN_REC_BYTES)
/* k_gdn_prep: raw q, k rows (C, dk + 8) bf16; L/Tm and Attn (C, 72) fp32; 6 row scalars (C) fp32;
 * the solve's mbarrier. 73232 bytes at dk = 128 (three CTAs an SM on sm_90). */
#define K_GDN_PREP_SMEM(dk)                                                                        \
    (2u * K_GDN_CHUNK * ((dk) + 8u) * 2u + 2u * K_GDN_CHUNK * 72u * 4u + 6u * K_GDN_CHUNK * 4u + 16u)
/* k_gdn_seq: two records; raw q rows, k rows twice (C, dk + 8) and v (C, 40) once, bf16; 3 bf16
 * parts of the state (dk, 40), of X / V' and of V'' (C, 40). 162304 bytes at dk = 128. */
#define K_GDN_SEQ_SMEM(dk)                                                                         \
    (2u * K_GDN_REC_BYTES + 3u * K_GDN_CHUNK * ((dk) + 8u) * 2u + K_GDN_CHUNK * 40u * 2u +          \
     3u * ((dk) + 2u * K_GDN_CHUNK) * 40u * 2u)

struct k_gdn_dims {
    uint32_t nk, nv;       /* key heads, value heads */
    uint32_t dk, dv;       /* key and value head dims */
    uint32_t conv_dim;     /* 2 * nk * dk + nv * dv */
    uint32_t kernel;       /* conv taps */
    uint32_t T_max;        /* rows of the schedule's bucket */
    float eps;             /* rms_norm_eps of the gated norm */
};

struct k_gdn_step_params {
    uint64_t u;            /* (conv_dim) bf16 post-conv, post-SiLU q | k | v of this token */
    uint64_t z;            /* (nv * dv) bf16 output gate */
    uint64_t b, a;         /* (nv) bf16 beta logits and decay inputs */
    uint64_t a_log;        /* (nv) f32 */
    uint64_t dt_bias;      /* (nv) bf16 */
    uint64_t norm_w;       /* (dv) f32 gated-norm weight */
    uint64_t state;        /* (nv, dk, dv) f32 recurrent state, updated */
    uint64_t out;          /* (nv * dv) bf16 */
    uint64_t step;         /* struct k_step */
    /* with w_b != 0 the step makes b and a itself, bf16(w_b[hv] . h) and bf16(w_a[hv] . h),
     * as the GEMV that otherwise fills the buffers above would (the planner does so for INT4
     * in_proj, whose bf16 b and a rows would need a launch of their own) */
    uint64_t h;            /* (H) bf16 normed layer input */
    uint64_t w_b, w_a;     /* (nv, H) bf16 in_proj_b, in_proj_a, or 0 */
    uint32_t H, pad_;
    struct k_gdn_dims d;
};

struct k_gdn_conv_params {
    uint64_t qkv;          /* (T_max, conv_dim) bf16 pre-conv */
    uint64_t conv_w;       /* (conv_dim, kernel) bf16 */
    uint64_t window;       /* (conv_dim, kernel - 1) bf16, read then updated */
    uint64_t out;          /* (T_max, conv_dim) bf16 post-conv, post-SiLU */
    uint64_t step;
    struct k_gdn_dims d;
};

struct k_gdn_chunk_params {
    uint64_t u;            /* (T_max, conv_dim) bf16 post-conv q | k | v */
    uint64_t z;            /* (T_max, nv * dv) bf16 */
    uint64_t b, a;         /* (T_max, nv) bf16 */
    uint64_t a_log;        /* (nv) f32 */
    uint64_t dt_bias;      /* (nv) bf16 */
    uint64_t norm_w;       /* (dv) f32 */
    uint64_t state;        /* (nv, dk, dv) f32, read then updated */
    uint64_t out;          /* (T_max, nv * dv) bf16 */
    uint64_t step;
    uint64_t ws;           /* K_GDN_WS_BYTES(nv, T_max): k_gdn_prep's records for k_gdn_seq */
    struct k_gdn_dims d;
};

#endif
