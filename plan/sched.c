/* sched.c — the op lists of one forward pass of Qwen3.5-MoE: decode (one token) and prefill
 * (a chunk of up to T tokens), as kernel launches and cuBLAS GEMMs on named buffers.
 *
 * This is the one place where the model's structure (MODEL.md §2) meets the kernels' ABI
 * (the kern/ headers). Everything is emitted through build.h, which records the relocations
 * and the buffer lifetimes. Per layer, decode runs:
 *
 *   rmsnorm(+residual) | GDN: gemv qkv,z[,b,a] · gdn_step · gemv out_proj
 *                      | attention: gemv q,k,v · rope+append · split-K + reduce, or single pass · gemv o
 *   rmsnorm(+residual) | router(+shared gate) · moe_up (8 experts + shared) · moe_down (+weights, sum)
 *
 * With INT4 group-128 experts (moe_decode_folds_norm) neither norm is a launch of its own: the
 * post-attention norm is folded into the router GEMV and moe_up, the residual update into
 * moe_down, and moe_down's last CTA makes the next layer's input norm (the final norm after
 * the last layer), so only layer 0's input norm runs as k_rmsnorm.
 *
 * and prefill replaces the GEMVs by GEMMs (INT4 weights expanded into a workspace first), the
 * GDN step by conv + chunked delta rule, decode attention by pack-GQA flash attention, and the
 * fused MoE by route · align/sort · batched expert GEMMs · combine. lm_head runs on the last
 * token only, then sampling. Costs are the bytes each op must move and the FLOPs it must do at
 * the schedule's nominal size (full bucket; decode at the top of its filled-length range). */
#include <math.h>
#include <stddef.h>
#include <stdio.h>
#include <string.h>

#include "../kern/attn.h"
#include "../kern/dequant.h"
#include "../kern/embed.h"
#include "../kern/gdn.h"
#include "../kern/gemv.h"
#include "../kern/moe.h"
#include "../kern/norm.h"
#include "../kern/quant.h"
#include "../kern/sample.h"
#include "../kern/step.h"
#include "build.h"

#define CUBLAS_WORKSPACE (32u << 20)
#define CUBLAS_WORKSPACE_SIDE (8u << 20) /* the side branches' GEMMs are small */
#define CDIV(a, b) (((a) + (b) - 1) / (b))
#define REF(op, type, field, buf) pb_ref_buf(b, op, offsetof(type, field), buf, 0)
#define WREF(op, type, field, name) pb_ref_weight(b, op, offsetof(type, field), name, 0)

/* Buffers that outlive a schedule, made once. */
struct shared_bufs {
    uint32_t step, tokens_in;
    uint32_t k_cache[MODEL_MAX_LAYERS], v_cache[MODEL_MAX_LAYERS];
    uint32_t window[MODEL_MAX_LAYERS], state[MODEL_MAX_LAYERS];
    uint32_t part_o, part_ml, counts, cursor, sorted, block_expert, n_blocks, cand, cublas, dequant;
    uint32_t dequant_side; /* the side branches' expansions (pb_fork), beside the main one's */
    uint32_t fold_count; /* k_moe_down_g128's ticket for the norm folded into it (kern/moe.h) */
    uint32_t max_blocks;
};

/* One schedule being emitted. */
#define SCHED_DQ_MAX 16 /* INT4 matrices of one layer dequant_layer expands together */

struct em {
    struct pb *b;
    const struct model_config *c;
    struct shared_bufs *sb;
    uint32_t T;        /* tokens (bucket); 1 for decode */
    int prefill;
    int split;         /* decode attention: split-K + reduce instead of single pass */
    uint32_t kv;       /* filled length the costs assume */
    int i4;            /* projections are INT4 */
    /* prefill: the layer's INT4 matrices dequant_layer expanded, at their offsets in dequant */
    uint32_t dq_n;
    const char *dq_name[SCHED_DQ_MAX];
    uint64_t dq_off[SCHED_DQ_MAX];
};

static const uint32_t one[3] = {1, 1, 1};

static uint64_t wsize(struct em *e, const char *name) { return pb_weight(e->b, name)->size; }

/* ---- generic pieces -------------------------------------------------------------------- */

static uint32_t rmsnorm(struct em *e, uint32_t x, int add, const char *w, int last_only, const char *nm)
{
    struct pb *b = e->b;
    uint32_t H = e->c->hidden_size, rows = last_only ? 1 : e->T;
    uint32_t out = pb_buf(b, PLAN_REGION_OVERLAY, PLAN_DTYPE_BF16, 2ull * rows * H, "%s", nm);
    struct k_rmsnorm_params p = {.H = H, .T_max = e->T, .eps = e->c->rms_norm_eps,
                                 .last_only = (uint32_t)last_only};
    uint32_t grid[3] = {rows, 1, 1};
    uint32_t op = pb_kernel_op(b, "k_rmsnorm", &p, sizeof p, grid, K_NORM_THREADS, 0, "%s", nm);
    REF(op, struct k_rmsnorm_params, x, x);
    if (add >= 0)
        REF(op, struct k_rmsnorm_params, add, (uint32_t)add);
    WREF(op, struct k_rmsnorm_params, w, w);
    REF(op, struct k_rmsnorm_params, out, out);
    REF(op, struct k_rmsnorm_params, step, e->sb->step);
    pb_cost(b, op, 2ull * rows * H * (add >= 0 ? 4 : 2) + 2ull * H, 5ull * rows * H);
    return out;
}

/* One GEMV launch over up to four matrices sharing input x (decode). */
struct gv { const char *w; uint32_t y; uint32_t n; uint64_t off; /* byte offset into y */ };

/* The GDN causal conv fused into a GEMV's epilogue on segment 0 (K_GEMV_CONV) */
struct gvconv { const char *w; uint32_t window; uint32_t taps; };

/* The decode post-attention norm folded into a bf16 GEMV's input (k_gemv_bf16_norm): x is then
 * the residual stream, add the mixer output, w the norm's weight */
struct gvnorm { uint32_t add; const char *w; };

static uint32_t gemv_ex(struct em *e, uint32_t x, uint32_t K, const struct gv *s, uint32_t nseg,
                        int i4, uint32_t flags, const struct gvconv *cv, const struct gvnorm *nr,
                        const char *nm)
{
    struct pb *b = e->b;
    struct k_gemv_params p = {.nseg = nseg, .K = K, .group = i4 ? e->b->fmt.group_size : 0,
                              .flags = flags | (cv ? K_GEMV_CONV : 0), .conv_k = cv ? cv->taps : 0,
                              .norm_eps = nr ? e->c->rms_norm_eps : 0.0f};
    uint32_t blocks = 0;
    uint64_t bytes = 2ull * K, flops = 0;
    for (uint32_t i = 0; i < nseg; i++) {
        const struct wt_tensor_desc *t = pb_weight(b, s[i].w);
        p.seg[i].n = s[i].n;
        p.seg[i].blocks = blocks;
        p.seg[i].scales_offset = t->scales_offset;
        blocks += CDIV(s[i].n, !i4 ? K_GEMV_ROWS : K_GEMV_G128_OK(p.group, K) ? K_GEMV_G128_ROWS : K_GEMV_I4_ROWS);
        bytes += t->size + (uint64_t)s[i].n * ((flags & K_GEMV_OUT_F32) ? 4 : 2);
        flops += 2ull * s[i].n * K;
    }
    if (cv) { /* taps, and the window read and written */
        bytes += (uint64_t)s[0].n * (2ull * cv->taps + 4ull * (cv->taps - 1));
        flops += 2ull * s[0].n * cv->taps;
    }
    uint32_t grid[3] = {blocks, 1, 1};
    int g128 = i4 && K_GEMV_G128_OK(p.group, K);
    if (nr) /* x + add and the norm weight, read by every CTA (L2) */
        bytes += 4ull * K + 2ull * K;
    const int wide = g128 && K_GEMV_G128_WIDE(K);
    uint32_t op = pb_kernel_op(b,
                               !i4    ? (nr ? "k_gemv_bf16_norm" : "k_gemv_bf16")
                               : wide ? "k_gemv_i4_g128_w"
                               : g128 ? "k_gemv_i4_g128"
                                      : "k_gemv_i4",
                               &p, sizeof p, grid,
                               wide ? K_GEMV_G128W_THREADS : g128 ? K_GEMV_G128_THREADS : K_GEMV_THREADS, 0, "%s", nm);
    for (uint32_t i = 0; i < nseg; i++) {
        pb_ref_weight(b, op, offsetof(struct k_gemv_params, seg[0].w) + i * sizeof p.seg[0], s[i].w, 0);
        pb_ref_buf(b, op, offsetof(struct k_gemv_params, seg[0].y) + i * sizeof p.seg[0], s[i].y, s[i].off);
    }
    REF(op, struct k_gemv_params, x, x);
    REF(op, struct k_gemv_params, step, e->sb->step);
    if (cv) {
        WREF(op, struct k_gemv_params, conv_w, cv->w);
        REF(op, struct k_gemv_params, window, cv->window);
    }
    if (nr) {
        REF(op, struct k_gemv_params, norm_add, nr->add);
        WREF(op, struct k_gemv_params, norm_w, nr->w);
    }
    pb_cost(b, op, bytes, flops);
    return op;
}

static uint32_t gemv_conv(struct em *e, uint32_t x, uint32_t K, const struct gv *s, uint32_t nseg,
                          int i4, uint32_t flags, const struct gvconv *cv, const char *nm)
{
    return gemv_ex(e, x, K, s, nseg, i4, flags, cv, NULL, nm);
}

static uint32_t gemv(struct em *e, uint32_t x, uint32_t K, const struct gv *s, uint32_t nseg, int i4,
                     uint32_t flags, const char *nm)
{
    return gemv_conv(e, x, K, s, nseg, i4, flags, NULL, nm);
}

/* The expansion workspace of the ops being emitted: a side branch's own, so that the two
 * branches of a forked range never share it */
static uint32_t dq_buf(const struct em *e)
{
    return e->b->side ? e->sb->dequant_side : e->sb->dequant;
}

/* k_dequant_i4 launches, named nm, expanding the n INT4 matrices w[] into dequant at off[]
 * (K_DQ_MAX a launch). */
static void dequant(struct em *e, const char *const *w, const uint64_t *off, uint32_t n,
                    const char *nm)
{
    struct pb *b = e->b;
    for (uint32_t i0 = 0; i0 < n; i0 += K_DQ_MAX) {
        struct k_dequant_params d = {.n = n - i0 < K_DQ_MAX ? n - i0 : K_DQ_MAX};
        uint64_t ctas = 0, bytes = 0, flops = 0;
        for (uint32_t i = 0; i < d.n; i++) {
            const struct wt_tensor_desc *t = pb_weight(b, w[i0 + i]);
            uint32_t N = (uint32_t)t->shape[0], K = (uint32_t)t->shape[1];
            d.m[i] = (struct k_dequant_mat){.scales_offset = t->scales_offset, .N = N, .K = K,
                                            .group = t->group_size, .first = (uint32_t)ctas};
            ctas += K_DQ_CTAS(N, K);
            bytes += t->size + 2ull * N * K, flops += 2ull * N * K;
        }
        uint32_t grid[3] = {(uint32_t)ctas, 1, 1};
        uint32_t op = pb_kernel_op(b, "k_dequant_i4", &d, sizeof d, grid, K_DQ_THREADS, 0,
                                   i0 ? "%s.%u" : "%s", nm, i0 / K_DQ_MAX);
        for (uint32_t i = 0; i < d.n; i++) {
            size_t m = offsetof(struct k_dequant_params, m) + i * sizeof(struct k_dequant_mat);
            pb_ref_weight(b, op, (uint32_t)(m + offsetof(struct k_dequant_mat, w)), w[i0 + i], 0);
            pb_ref_buf(b, op, (uint32_t)(m + offsetof(struct k_dequant_mat, out)), dq_buf(e),
                       off[i0 + i]);
        }
        pb_cost(b, op, bytes, flops);
    }
}

/* Which kernel gemm() gives the INT4 matrix t (N, K) in this chunk, reading the nibbles as
 * stored: 2 k_gemm_i4_wg{S} (a large matrix in a chunk of K_GEMM_WG_MINT + 1 to
 * K_GEMM_WG_MAXT tokens), 1 k_gemm_i4_g128 (other chunks up to K_GEMM_I4_MAXT tokens), 0 none
 * (expanded to bf16 for cuBLAS). */
static int gemm_nibbles(const struct em *e, const struct wt_tensor_desc *t)
{
    if (!e->prefill || t->layout != K_LAYOUT_I4_ROWS || t->ndim != 2 ||
        !K_GEMM_I4_OK(t->group_size, t->shape[1]))
        return 0;
    const uint32_t N = (uint32_t)t->shape[0], K = (uint32_t)t->shape[1];
    const uint32_t S = k_gemm_wg_split(e->T, N, K);
    if (!e->b->dense_cublas && e->T > K_GEMM_WG_MINT && e->T <= K_GEMM_WG_MAXT &&
        (uint64_t)N * K >= K_GEMM_WG_MINW && K_GEMM_WG_OK(t->group_size, N, K, S) &&
        K_GEMM_WG_SMEM_T(k_gemm_wg_tile(e->T), K, S) <= e->b->smem_limit)
        return 2;
    return e->T <= K_GEMM_I4_MAXT ? 1 : 0;
}

/* Whether this chunk runs independent ops on a side branch (pb_fork): every bucket but the
 * largest chunk's. The buffers of a forked range stay live over all of it, so there the
 * shared expert's would sit beside the routed ones and the overlay, which the largest chunk
 * sets, would grow (Qwen3.5-35B-A3B at 4096: 208.5 -> 258.5 MiB); the others stay below it. */
static int fork_ok(const struct em *e)
{
    return e->prefill && e->T < e->b->buckets[e->b->num_buckets - 1];
}

/* The n matrices w[] that go through cuBLAS in a prefill chunk (gemm_nibbles 0) expanded
 * side by side in dequant by one launch, for the gemm() calls that follow at once: small
 * matrices used one after another (the shared expert's three, attention's k and v), which
 * otherwise each pay a launch. Large ones stay one launch each, right before their GEMM, where
 * the expanded matrix is still in L2 (expanding a whole layer at once made the GEMMs read
 * them back from memory). */
static void dequant_set(struct em *e, const char *const *w, uint32_t n, const char *nm)
{
    e->dq_n = 0;
    if (!e->prefill || !dq_buf(e))
        return;
    uint64_t at = 0;
    for (uint32_t i = 0; i < n && e->dq_n < SCHED_DQ_MAX; i++) {
        const struct wt_tensor_desc *t = pb_weight(e->b, w[i]);
        if (t->layout != K_LAYOUT_I4_ROWS || t->ndim != 2 || gemm_nibbles(e, t))
            continue;
        e->dq_name[e->dq_n] = t->name;
        e->dq_off[e->dq_n] = at;
        at += (2 * t->shape[0] * t->shape[1] + 255) & ~255ull, e->dq_n++;
    }
    if (e->dq_n > 1)
        dequant(e, e->dq_name, e->dq_off, e->dq_n, nm);
    else
        e->dq_n = 0; /* one matrix: gemm() expands it itself */
}

/* The k_gemm_i4_wg op of y1 (T, N1) = x W1^T, and of y2 (T, N2) = x W2^T in the same launch
 * where w2 is not null (its row tiles after W1's): the split for N1 + N2 rows. */
static void gemm_wg_op(struct em *e, uint32_t x, const char *w1, uint32_t N1, uint32_t y1,
                       const char *w2, uint32_t N2, uint32_t y2, uint32_t K, const char *nm)
{
    struct pb *b = e->b;
    const struct wt_tensor_desc *t1 = pb_weight(b, w1), *t2 = w2 ? pb_weight(b, w2) : NULL;
    const uint32_t S = k_gemm_wg_split(e->T, N1 + N2, K), bt = k_gemm_wg_tile(e->T);
    struct k_gemm_i4_params gp = {.scales_offset = t1->scales_offset, .N = N1, .K = K,
                                  .scales_offset2 = t2 ? t2->scales_offset : 0, .N2 = N2};
    uint32_t grid[3] = {CDIV(e->T, bt), (N1 + N2) / K_GEMM_WG_BN, S};
    char kn[32];
    snprintf(kn, sizeof kn, "k_gemm_i4_wg%u%s", S, bt == K_GEMM_WG_BT64 ? "_t64" : "");
    uint32_t op = pb_kernel_op(b, kn, &gp, sizeof gp, grid, K_GEMM_WG_THREADS,
                               K_GEMM_WG_SMEM_T(bt, K, S), "%s", nm);
    WREF(op, struct k_gemm_i4_params, w, w1);
    if (t2)
        WREF(op, struct k_gemm_i4_params, w2, w2);
    REF(op, struct k_gemm_i4_params, x, x);
    REF(op, struct k_gemm_i4_params, y, y1);
    if (t2)
        REF(op, struct k_gemm_i4_params, y2, y2);
    REF(op, struct k_gemm_i4_params, step, e->sb->step);
    pb_cost(b, op, t1->size + (t2 ? t2->size : 0) + 2ull * e->T * (K + N1 + N2),
            2ull * e->T * (N1 + N2) * K);
}

/* y (T, N) = x (T, K) W^T (prefill): INT4 group-128 weights from the nibbles where
 * gemm_nibbles says so; else through cuBLAS, INT4 weights expanded first. */
static uint32_t gemm(struct em *e, uint32_t x, const char *w, uint32_t N, uint32_t K, const char *nm)
{
    struct pb *b = e->b;
    const struct wt_tensor_desc *t = pb_weight(b, w);
    int i4 = t->layout == K_LAYOUT_I4_ROWS;
    uint32_t y = pb_buf(b, PLAN_REGION_OVERLAY, PLAN_DTYPE_BF16, 2ull * e->T * N, "%s", nm);
    const int nib = gemm_nibbles(e, t);
    if (nib == 2) { /* straight from the nibbles on wgmma (kern/gemm_wg.cu) */
        gemm_wg_op(e, x, w, N, y, NULL, 0, 0, K, nm);
        return y;
    }
    if (nib) { /* a short chunk's GEMV mapping (kern/gemm_i4.cu) */
        struct k_gemm_i4_params gp = {.scales_offset = t->scales_offset, .N = N, .K = K};
        uint32_t grid[3] = {CDIV(e->T, K_GEMM_I4_BT), CDIV(N, K_GEMM_I4_BN), 1};
        uint32_t op = pb_kernel_op(b, "k_gemm_i4_g128", &gp, sizeof gp, grid, K_GEMM_I4_THREADS,
                                   0, "%s", nm);
        WREF(op, struct k_gemm_i4_params, w, w);
        REF(op, struct k_gemm_i4_params, x, x);
        REF(op, struct k_gemm_i4_params, y, y);
        REF(op, struct k_gemm_i4_params, step, e->sb->step);
        pb_cost(b, op, t->size + 2ull * e->T * (K + N), 2ull * e->T * N * K);
        return y;
    }
    uint64_t off = 0; /* of the expanded matrix in dequant */
    if (i4) {
        uint32_t i = 0;
        while (i < e->dq_n && strcmp(e->dq_name[i], w))
            i++;
        if (i < e->dq_n) {
            off = e->dq_off[i];
        } else { /* at offset 0, over whatever a set left there */
            char dn[80];
            snprintf(dn, sizeof dn, "%s.dequant", nm);
            dequant(e, &w, &off, 1, dn);
            e->dq_n = 0;
        }
    }
    struct plan_gemm g = {.m = N, .n = e->T, .k = K, .lda = K, .ldb = K, .ldc = N, .trans_a = 1,
                          .trans_b = 0, .dtype_ab = PLAN_DTYPE_BF16, .dtype_c = PLAN_DTYPE_BF16,
                          .alpha = 1.0f, .beta = 0.0f};
    uint32_t op = pb_runtime_op(b, PLAN_OP_GEMM, &g, sizeof g, "%s", nm);
    if (i4)
        pb_ref_buf(b, op, offsetof(struct plan_gemm, a), dq_buf(e), off);
    else
        WREF(op, struct plan_gemm, a, w);
    REF(op, struct plan_gemm, b, x);
    REF(op, struct plan_gemm, c, y);
    pb_cost(b, op, 2ull * N * K + 2ull * e->T * (K + N), 2ull * e->T * N * K);
    return y;
}

/* y1 (T, N1) = x W1^T and y2 (T, N2) = x W2^T (prefill, both (N, K)): one k_gemm_i4_wg launch
 * where both matrices take it (its row tiles cover W1's, then W2's), else gemm() each. One
 * launch fills the GPU better than two at a few hundred tokens. */
static void gemm_pair(struct em *e, uint32_t x, const char *w1, uint32_t N1, const char *w2,
                      uint32_t N2, uint32_t K, const char *nm1, const char *nm2, uint32_t *y1,
                      uint32_t *y2)
{
    struct pb *b = e->b;
    const struct wt_tensor_desc *t1 = pb_weight(b, w1), *t2 = pb_weight(b, w2);
    const uint32_t S = k_gemm_wg_split(e->T, N1 + N2, K);
    if (gemm_nibbles(e, t1) != 2 || gemm_nibbles(e, t2) != 2 ||
        !K_GEMM_WG_OK(t1->group_size, N1, K, S) || !K_GEMM_WG_OK(t2->group_size, N2, K, S) ||
        K_GEMM_WG_SMEM_T(k_gemm_wg_tile(e->T), K, S) > b->smem_limit) {
        *y1 = gemm(e, x, w1, N1, K, nm1);
        *y2 = gemm(e, x, w2, N2, K, nm2);
        return;
    }
    *y1 = pb_buf(b, PLAN_REGION_OVERLAY, PLAN_DTYPE_BF16, 2ull * e->T * N1, "%s", nm1);
    *y2 = pb_buf(b, PLAN_REGION_OVERLAY, PLAN_DTYPE_BF16, 2ull * e->T * N2, "%s", nm2);
    char nm[64];
    snprintf(nm, sizeof nm, "%s+%s", nm1, nm2);
    gemm_wg_op(e, x, w1, N1, *y1, w2, N2, *y2, K, nm);
}

/* ---- Gated DeltaNet ---------------------------------------------------------------------- */

static struct k_gdn_dims gdn_dims(struct em *e)
{
    const struct model_config *c = e->c;
    return (struct k_gdn_dims){c->lin_num_k_heads, c->lin_num_v_heads, c->lin_k_head_dim,
                               c->lin_v_head_dim, model_lin_conv_dim(c), c->conv_kernel, e->T,
                               c->rms_norm_eps};
}

/* The references the decode step and the chunked prefill share (their parameter structs name
 * the same fields): post-conv q|k|v, z, the layer's gate and norm weights, the state, the
 * output and the step. Uses op, l, z, o and e of the caller. */
#define GDN_REFS(type, ubuf)                                                                       \
    do {                                                                                           \
        char gw_[96];                                                                              \
        REF(op, type, u, ubuf);                                                                    \
        REF(op, type, z, z);                                                                       \
        snprintf(gw_, sizeof gw_, "layers.%u.linear_attn.A_log", l);                               \
        WREF(op, type, a_log, gw_);                                                                \
        snprintf(gw_, sizeof gw_, "layers.%u.linear_attn.dt_bias", l);                             \
        WREF(op, type, dt_bias, gw_);                                                              \
        snprintf(gw_, sizeof gw_, "layers.%u.linear_attn.norm.weight", l);                         \
        WREF(op, type, norm_w, gw_);                                                               \
        REF(op, type, state, e->sb->state[l]);                                                     \
        REF(op, type, out, o);                                                                     \
        REF(op, type, step, e->sb->step);                                                          \
    } while (0)

static uint32_t gdn_decode(struct em *e, uint32_t l, uint32_t hn)
{
    struct pb *b = e->b;
    const struct model_config *c = e->c;
    uint32_t H = c->hidden_size, nv = c->lin_num_v_heads, vd = model_lin_value_dim(c);
    uint32_t cd = model_lin_conv_dim(c);
    char w[4][96], nm[64];
    snprintf(w[0], 96, "layers.%u.linear_attn.in_proj_qkv.weight", l);
    snprintf(w[1], 96, "layers.%u.linear_attn.in_proj_z.weight", l);
    snprintf(w[2], 96, "layers.%u.linear_attn.in_proj_b.weight", l);
    snprintf(w[3], 96, "layers.%u.linear_attn.in_proj_a.weight", l);
    uint32_t qkv = pb_buf(b, PLAN_REGION_OVERLAY, PLAN_DTYPE_BF16, 2ull * cd, "l%u.conv_out", l);
    uint32_t z = pb_buf(b, PLAN_REGION_OVERLAY, PLAN_DTYPE_BF16, 2ull * vd, "l%u.z", l);
    /* b and a: with bf16 weights, two more segments of the GEMV; with INT4 ones (b and a stay
     * bf16) the step kernel makes them from hn before its launch wait, not a launch of their
     * own (kern/gdn.h) */
    uint32_t bb = 0, aa = 0;
    if (!e->i4) {
        bb = pb_buf(b, PLAN_REGION_OVERLAY, PLAN_DTYPE_BF16, 2ull * nv, "l%u.b", l);
        aa = pb_buf(b, PLAN_REGION_OVERLAY, PLAN_DTYPE_BF16, 2ull * nv, "l%u.a", l);
    }
    struct gv s[4] = {{w[0], qkv, cd, 0}, {w[1], z, vd, 0}, {w[2], bb, nv, 0}, {w[3], aa, nv, 0}};
    /* the causal conv + SiLU of the q, k, v projections runs in the GEMV's epilogue, where
     * one warp owns each channel and can slide its window (kern/gemv.h): the step kernel is
     * then free to spread value heads over many CTAs */
    char cw[96];
    snprintf(cw, sizeof cw, "layers.%u.linear_attn.conv1d.weight", l);
    struct gvconv cv = {cw, e->sb->window[l], c->conv_kernel};
    snprintf(nm, sizeof nm, "l%u.in_proj", l);
    gemv_conv(e, hn, H, s, e->i4 ? 2 : 4, e->i4, 0, &cv, nm);
    uint32_t o = pb_buf(b, PLAN_REGION_OVERLAY, PLAN_DTYPE_BF16, 2ull * vd, "l%u.gdn_out", l);
    struct k_gdn_step_params p = {.H = e->i4 ? H : 0, .d = gdn_dims(e)};
    uint32_t grid[3] = {nv, 1, 1};
    uint32_t op = pb_kernel_op(b, "k_gdn_step", &p, sizeof p, grid, K_GDN_STEP_THREADS, 0, "l%u.gdn_step", l);
    GDN_REFS(struct k_gdn_step_params, qkv);
    if (e->i4) {
        REF(op, struct k_gdn_step_params, h, hn);
        WREF(op, struct k_gdn_step_params, w_b, w[2]);
        WREF(op, struct k_gdn_step_params, w_a, w[3]);
    } else {
        REF(op, struct k_gdn_step_params, b, bb);
        REF(op, struct k_gdn_step_params, a, aa);
    }
    uint64_t st = 4ull * nv * c->lin_k_head_dim * c->lin_v_head_dim;
    pb_cost(b, op, 2 * st + 2ull * (cd + 2ull * vd + 2 * nv) + (e->i4 ? 4ull * nv * H + 2ull * H : 0),
            6 * st / 4 + (e->i4 ? 4ull * nv * H : 0));

    uint32_t out = pb_buf(b, PLAN_REGION_OVERLAY, PLAN_DTYPE_BF16, 2ull * H, "l%u.mixer_out", l);
    snprintf(w[0], 96, "layers.%u.linear_attn.out_proj.weight", l);
    struct gv so = {w[0], out, H, 0};
    snprintf(nm, sizeof nm, "l%u.out_proj", l);
    gemv(e, o, vd, &so, 1, e->i4, 0, nm);
    return out;
}

static uint32_t gdn_prefill(struct em *e, uint32_t l, uint32_t hn)
{
    struct pb *b = e->b;
    const struct model_config *c = e->c;
    uint32_t H = c->hidden_size, nv = c->lin_num_v_heads, vd = model_lin_value_dim(c);
    uint32_t cd = model_lin_conv_dim(c), T = e->T;
    char w[96], nm[64];
#define GDN_GEMM(field, N, K, label)                                                               \
    (snprintf(w, sizeof w, "layers.%u.linear_attn." field, l),                                     \
     snprintf(nm, sizeof nm, "l%u." label, l), gemm(e, hn, w, N, K, nm))
    /* b and a (small GEMMs) on the side stream while qkv, z and the conv run */
    const int fork = fork_ok(e);
    if (fork)
        pb_fork(b);
    uint32_t bb = GDN_GEMM("in_proj_b.weight", nv, H, "b");
    uint32_t aa = GDN_GEMM("in_proj_a.weight", nv, H, "a");
    if (fork)
        pb_main(b);
#undef GDN_GEMM
    uint32_t qkv, z;
    {
        char w2[96], nm1[32], nm2[32];
        snprintf(w, sizeof w, "layers.%u.linear_attn.in_proj_qkv.weight", l);
        snprintf(w2, sizeof w2, "layers.%u.linear_attn.in_proj_z.weight", l);
        snprintf(nm1, sizeof nm1, "l%u.qkv", l), snprintf(nm2, sizeof nm2, "l%u.z", l);
        gemm_pair(e, hn, w, cd, w2, vd, H, nm1, nm2, &qkv, &z);
    }
    struct k_gdn_dims d = gdn_dims(e);
    uint32_t u = pb_buf(b, PLAN_REGION_OVERLAY, PLAN_DTYPE_BF16, 2ull * T * cd, "l%u.conv_out", l);
    struct k_gdn_conv_params cp = {.d = d};
    uint32_t grid[3] = {K_GDN_CONV_GRID(cd, T), 1, 1};
    uint32_t op = pb_kernel_op(b, "k_gdn_conv", &cp, sizeof cp, grid, 128, 0, "l%u.gdn_conv", l);
    REF(op, struct k_gdn_conv_params, qkv, qkv);
    snprintf(w, sizeof w, "layers.%u.linear_attn.conv1d.weight", l);
    WREF(op, struct k_gdn_conv_params, conv_w, w);
    REF(op, struct k_gdn_conv_params, window, e->sb->window[l]);
    REF(op, struct k_gdn_conv_params, out, u);
    REF(op, struct k_gdn_conv_params, step, e->sb->step);
    pb_cost(b, op, 4ull * T * cd + 4ull * cd * c->conv_kernel, 2ull * T * cd * (c->conv_kernel + 4));

    uint32_t o = pb_buf(b, PLAN_REGION_OVERLAY, PLAN_DTYPE_BF16, 2ull * T * vd, "l%u.gdn_out", l);
    struct k_gdn_chunk_params kp = {.d = d};
    /* the tensor-core kernel, one CTA per 32 value columns of a head, where it takes the head
     * sizes and its shared memory fits every target; else the CUDA-core one with the widest
     * value tile (up to 128 columns) the smallest target holds (it reads the size it is given
     * and tiles the value dimension to fit). b->gdn_chunk_fma forces the CUDA-core kernel
     * (test_gpu_e2e does so with E2E_GDN_FMA=1, to compare the two). */
    int tc = !b->gdn_chunk_fma && K_GDN_CHUNK_TC_OK(c->lin_k_head_dim, c->lin_v_head_dim) &&
             K_GDN_CHUNK_TC_SMEM(c->lin_k_head_dim) <= b->smem_limit;
    /* split in two where both halves fit every target: k_gdn_prep runs every chunk's
     * state-independent work at once (nv x chunks CTAs), k_gdn_seq the rest in order */
    uint64_t dk = c->lin_k_head_dim, dv = c->lin_v_head_dim, C = K_GDN_CHUNK;
    int split = tc && !b->gdn_chunk_fused && K_GDN_SEQ_SMEM(dk) <= b->smem_limit &&
                K_GDN_PREP_SMEM(dk) <= b->smem_limit;
    uint32_t ws = 0;
    if (fork)
        pb_join(b);
    if (split) {
        ws = pb_buf(b, PLAN_REGION_OVERLAY, PLAN_DTYPE_F32, K_GDN_WS_BYTES(nv, T), "l%u.gdn_rec", l);
        grid[0] = nv, grid[1] = (uint32_t)CDIV(T, C);
        op = pb_kernel_op(b, "k_gdn_prep", &kp, sizeof kp, grid, K_GDN_CHUNK_TC_THREADS,
                          K_GDN_PREP_SMEM(dk), "l%u.gdn_prep", l);
        REF(op, struct k_gdn_chunk_params, u, u);
        REF(op, struct k_gdn_chunk_params, b, bb);
        REF(op, struct k_gdn_chunk_params, a, aa);
        snprintf(w, sizeof w, "layers.%u.linear_attn.A_log", l);
        WREF(op, struct k_gdn_chunk_params, a_log, w);
        snprintf(w, sizeof w, "layers.%u.linear_attn.dt_bias", l);
        WREF(op, struct k_gdn_chunk_params, dt_bias, w);
        REF(op, struct k_gdn_chunk_params, step, e->sb->step);
        REF(op, struct k_gdn_chunk_params, ws, ws);
        /* per chunk and head: K K^T, Q K^T and the solve; the record written */
        pb_cost(b, op, 2ull * T * 2 * c->lin_num_k_heads * dk + (uint64_t)K_GDN_WS_BYTES(nv, T),
                (uint64_t)nv * CDIV(T, C) * (2 * C * C * dk * 2 + 2 * C * C * C / 3));
        grid[0] = nv, grid[1] = c->lin_v_head_dim / K_GDN_CHUNK_TC_DVT;
        op = pb_kernel_op(b, "k_gdn_seq", &kp, sizeof kp, grid, K_GDN_CHUNK_TC_THREADS,
                          K_GDN_SEQ_SMEM(dk), "l%u.gdn_chunk", l);
        REF(op, struct k_gdn_chunk_params, ws, ws);
    } else if (tc) {
        grid[0] = nv, grid[1] = c->lin_v_head_dim / K_GDN_CHUNK_TC_DVT;
        op = pb_kernel_op(b, "k_gdn_chunk", &kp, sizeof kp, grid, K_GDN_CHUNK_TC_THREADS,
                          K_GDN_CHUNK_TC_SMEM(c->lin_k_head_dim), "l%u.gdn_chunk", l);
    } else {
        grid[0] = nv;
        uint32_t dvt = c->lin_v_head_dim < 128 ? c->lin_v_head_dim : 128;
        uint32_t smem = K_GDN_CHUNK_SMEM(c->lin_k_head_dim, dvt);
        smem = smem < b->smem_limit ? smem : b->smem_limit;
        op = pb_kernel_op(b, "k_gdn_chunk_fma", &kp, sizeof kp, grid, K_GDN_THREADS, smem,
                          "l%u.gdn_chunk", l);
    }
    GDN_REFS(struct k_gdn_chunk_params, u);
    REF(op, struct k_gdn_chunk_params, b, bb);
    REF(op, struct k_gdn_chunk_params, a, aa);
    /* per chunk of 64 and head: ~4 products of 64 x 128 x 128 plus the 64 x 64 ones */
    uint64_t flops = (uint64_t)nv * CDIV(T, C) * (2 * C * C * dk * 2 + 2 * C * dk * dv * 4);
    pb_cost(b, op, 2ull * T * (cd + 2ull * vd + 2 * nv) + 8ull * nv * dk * dv, flops);
    if (tc) { /* the gated RMSNorm over whole rows, in place: o and z read, o written */
        uint32_t g3[3] = {(uint32_t)CDIV((uint64_t)T * nv, K_GDN_GNORM_THREADS / 32), 1, 1};
        op = pb_kernel_op(b, "k_gdn_gnorm", &kp, sizeof kp, g3, K_GDN_GNORM_THREADS, 0,
                          "l%u.gdn_gnorm", l);
        REF(op, struct k_gdn_chunk_params, z, z);
        snprintf(w, sizeof w, "layers.%u.linear_attn.norm.weight", l);
        WREF(op, struct k_gdn_chunk_params, norm_w, w);
        REF(op, struct k_gdn_chunk_params, out, o);
        REF(op, struct k_gdn_chunk_params, step, e->sb->step);
        pb_cost(b, op, 6ull * T * vd + 4 * dv, 8ull * T * vd);
    }
    snprintf(w, sizeof w, "layers.%u.linear_attn.out_proj.weight", l);
    snprintf(nm, sizeof nm, "l%u.out_proj", l);
    return gemm(e, o, w, H, vd, nm);
}

/* ---- gated attention -------------------------------------------------------------------- */

static struct k_attn_dims attn_dims(struct em *e)
{
    const struct model_config *c = e->c;
    return (struct k_attn_dims){.n_heads = c->num_heads, .n_kv = c->num_kv_heads,
                                .head_dim = c->head_dim, .rotary_dim = c->rotary_dim,
                                .max_seq = e->b->max_seq, .T_max = e->T, .eps = c->rms_norm_eps,
                                .rope_theta = c->rope_theta,
                                .scale = 1.0f / sqrtf((float)c->head_dim)};
}

/* q/k norm + RoPE + cache append; returns the rotated q buffer */
static uint32_t attn_rope(struct em *e, uint32_t l, uint32_t qg, uint32_t kk, uint32_t vv)
{
    struct pb *b = e->b;
    const struct model_config *c = e->c;
    char w[96];
    uint32_t q = pb_buf(b, PLAN_REGION_OVERLAY, PLAN_DTYPE_BF16, 2ull * e->T * model_q_dim(c),
                        "l%u.q", l);
    struct k_attn_rope_params p = {.d = attn_dims(e)};
    /* decode: one CTA per 8 heads (K_ATTN_ROPE_THREADS / 32 warps), not one for all of them */
    uint32_t grid[3] = {e->T, e->T == 1 ? CDIV(c->num_heads + c->num_kv_heads, K_ATTN_ROPE_THREADS / 32) : 1, 1};
    uint32_t op = pb_kernel_op(b, "k_attn_rope", &p, sizeof p, grid, K_ATTN_ROPE_THREADS, 0,
                               "l%u.rope_append", l);
    REF(op, struct k_attn_rope_params, qg, qg);
    REF(op, struct k_attn_rope_params, k, kk);
    REF(op, struct k_attn_rope_params, v, vv);
    snprintf(w, sizeof w, "layers.%u.self_attn.q_norm.weight", l);
    WREF(op, struct k_attn_rope_params, q_norm, w);
    snprintf(w, sizeof w, "layers.%u.self_attn.k_norm.weight", l);
    WREF(op, struct k_attn_rope_params, k_norm, w);
    REF(op, struct k_attn_rope_params, q_out, q);
    REF(op, struct k_attn_rope_params, k_cache, e->sb->k_cache[l]);
    REF(op, struct k_attn_rope_params, v_cache, e->sb->v_cache[l]);
    REF(op, struct k_attn_rope_params, step, e->sb->step);
    uint64_t qd = model_q_dim(c), kvd = model_kv_dim(c);
    pb_cost(b, op, 2ull * e->T * (2 * qd + 2 * kvd + qd + 2 * kvd), 12ull * e->T * (qd + kvd));
    return q;
}

static uint32_t attn_decode_core(struct em *e, uint32_t l, uint32_t q, uint32_t qg)
{
    struct pb *b = e->b;
    const struct model_config *c = e->c;
    uint32_t qd = model_q_dim(c);
    uint64_t kv_bytes = 2ull * 2 * c->num_kv_heads * e->kv * c->head_dim;
    uint64_t flops = 4ull * c->num_heads * e->kv * c->head_dim;
    uint32_t ao = pb_buf(b, PLAN_REGION_OVERLAY, PLAN_DTYPE_BF16, 2ull * qd, "l%u.attn_out", l);
    struct k_attn_decode_params p = {.d = attn_dims(e), .n_split = e->b->n_split};
    uint32_t grid[3] = {c->num_kv_heads, 1, 1};
    const int tc = K_ATTN_DEC_TC_OK(c->head_dim);
    const char *kernel = tc ? "k_attn_decode_tc" : "k_attn_decode";
    if (e->split) {
        grid[0] = e->b->n_split, grid[1] = c->num_kv_heads;
        kernel = tc ? "k_attn_decode_split_tc" : "k_attn_decode_split";
    }
    uint32_t op = pb_kernel_op(b, kernel, &p, sizeof p, grid, K_ATTN_THREADS, 0, "l%u.%s", l,
                               e->split ? "attn_split" : "attn_single");
    REF(op, struct k_attn_decode_params, q, q);
    REF(op, struct k_attn_decode_params, qg, qg);
    REF(op, struct k_attn_decode_params, k_cache, e->sb->k_cache[l]);
    REF(op, struct k_attn_decode_params, v_cache, e->sb->v_cache[l]);
    REF(op, struct k_attn_decode_params, step, e->sb->step);
    uint64_t part = 4ull * e->b->n_split * c->num_heads * (c->head_dim + 2);
    if (!e->split) {
        REF(op, struct k_attn_decode_params, out, ao);
        pb_cost(b, op, kv_bytes + 2ull * 3 * qd, flops);
        return ao;
    }
    REF(op, struct k_attn_decode_params, part_o, e->sb->part_o);
    REF(op, struct k_attn_decode_params, part_ml, e->sb->part_ml);
    pb_cost(b, op, kv_bytes + 2ull * qd + part, flops);
    grid[0] = c->num_heads, grid[1] = 1;
    op = pb_kernel_op(b, "k_attn_decode_reduce", &p, sizeof p, grid, K_ATTN_REDUCE_THREADS(c->head_dim), 0,
                      "l%u.attn_reduce", l);
    REF(op, struct k_attn_decode_params, qg, qg);
    REF(op, struct k_attn_decode_params, part_o, e->sb->part_o);
    REF(op, struct k_attn_decode_params, part_ml, e->sb->part_ml);
    REF(op, struct k_attn_decode_params, out, ao);
    REF(op, struct k_attn_decode_params, step, e->sb->step);
    pb_cost(b, op, part + 2ull * 2 * qd, 4ull * e->b->n_split * qd);
    return ao;
}

static uint32_t attention(struct em *e, uint32_t l, uint32_t hn)
{
    struct pb *b = e->b;
    const struct model_config *c = e->c;
    uint32_t H = c->hidden_size, qd = model_q_dim(c), kvd = model_kv_dim(c);
    char w[4][96], nm[64];
    snprintf(w[0], 96, "layers.%u.self_attn.q_proj.weight", l);
    snprintf(w[1], 96, "layers.%u.self_attn.k_proj.weight", l);
    snprintf(w[2], 96, "layers.%u.self_attn.v_proj.weight", l);
    snprintf(w[3], 96, "layers.%u.self_attn.o_proj.weight", l);
    uint32_t qg, kk, vv, ao;
    if (!e->prefill) {
        qg = pb_buf(b, PLAN_REGION_OVERLAY, PLAN_DTYPE_BF16, 4ull * qd, "l%u.qg", l);
        kk = pb_buf(b, PLAN_REGION_OVERLAY, PLAN_DTYPE_BF16, 2ull * kvd, "l%u.k", l);
        vv = pb_buf(b, PLAN_REGION_OVERLAY, PLAN_DTYPE_BF16, 2ull * kvd, "l%u.v", l);
        struct gv s[3] = {{w[0], qg, 2 * qd, 0}, {w[1], kk, kvd, 0}, {w[2], vv, kvd, 0}};
        snprintf(nm, sizeof nm, "l%u.qkv_proj", l);
        gemv(e, hn, H, s, 3, e->i4, 0, nm);
        uint32_t q = attn_rope(e, l, qg, kk, vv);
        ao = attn_decode_core(e, l, q, qg);
        uint32_t out = pb_buf(b, PLAN_REGION_OVERLAY, PLAN_DTYPE_BF16, 2ull * H, "l%u.mixer_out", l);
        struct gv so = {w[3], out, H, 0};
        snprintf(nm, sizeof nm, "l%u.o_proj", l);
        gemv(e, ao, qd, &so, 1, e->i4, 0, nm);
        return out;
    }
    /* k and v on the side stream while q and its gate run */
    const int fork = fork_ok(e);
    if (fork)
        pb_fork(b);
    const char *kv[2] = {w[1], w[2]};
    snprintf(nm, sizeof nm, "l%u.kv.dequant", l), dequant_set(e, kv, 2, nm);
    snprintf(nm, sizeof nm, "l%u.k", l), kk = gemm(e, hn, w[1], kvd, H, nm);
    snprintf(nm, sizeof nm, "l%u.v", l), vv = gemm(e, hn, w[2], kvd, H, nm);
    if (fork)
        pb_main(b);
    snprintf(nm, sizeof nm, "l%u.qg", l), qg = gemm(e, hn, w[0], 2 * qd, H, nm);
    if (fork)
        pb_join(b);
    uint32_t q = attn_rope(e, l, qg, kk, vv);
    ao = pb_buf(b, PLAN_REGION_OVERLAY, PLAN_DTYPE_BF16, 2ull * e->T * qd, "l%u.attn_out", l);
    struct k_attn_prefill_params p = {.d = attn_dims(e)};
    uint32_t group = c->num_heads / c->num_kv_heads;
    /* the tensor-core kernel where it takes the head size and its shared memory fits every
     * target, else the CUDA-core one (static shared memory only) */
    int tc = K_ATTN_TC_OK(c->head_dim) && K_ATTN_TC_SMEM(c->head_dim) <= b->smem_limit;
    uint32_t grid[3] = {CDIV(e->T * group, tc ? K_ATTN_TC_BM : K_ATTN_BM), c->num_kv_heads, 1};
    /* a short chunk has few CTAs, and each walks the whole prefix before it: the tensor-core
     * kernel splits the keys into runs, k_attn_prefill_reduce combines them */
    uint32_t part_o = 0, part_ml = 0;
    if (tc && k_attn_pf_splits(grid[0] * grid[1]) > 1) {
        p.n_split = k_attn_pf_splits(grid[0] * grid[1]);
        grid[2] = p.n_split;
        part_o = pb_buf(b, PLAN_REGION_OVERLAY, PLAN_DTYPE_F32, 4ull * p.n_split * e->T * qd, "l%u.attn_part_o", l);
        part_ml = pb_buf(b, PLAN_REGION_OVERLAY, PLAN_DTYPE_F32, 8ull * p.n_split * e->T * c->num_heads,
                         "l%u.attn_part_ml", l);
    }
    uint32_t op = pb_kernel_op(b, tc ? "k_attn_prefill_tc" : "k_attn_prefill", &p, sizeof p, grid,
                               tc ? K_ATTN_TC_THREADS : K_ATTN_THREADS,
                               tc ? K_ATTN_TC_SMEM(c->head_dim) : 0, "l%u.attn_prefill", l);
    REF(op, struct k_attn_prefill_params, q, q);
    REF(op, struct k_attn_prefill_params, qg, qg);
    REF(op, struct k_attn_prefill_params, k_cache, e->sb->k_cache[l]);
    REF(op, struct k_attn_prefill_params, v_cache, e->sb->v_cache[l]);
    REF(op, struct k_attn_prefill_params, out, ao);
    REF(op, struct k_attn_prefill_params, step, e->sb->step);
    /* causal over a chunk starting at position 0: T^2/2 query-key pairs per head */
    uint64_t T = e->T, pbytes = p.n_split > 1 ? (4ull * qd + 8ull * c->num_heads) * p.n_split * T : 0;
    pb_cost(b, op, 2ull * T * (3 * qd + 2 * kvd) + pbytes, 4ull * c->num_heads * c->head_dim * T * (T + 1) / 2);
    if (p.n_split > 1) {
        REF(op, struct k_attn_prefill_params, part_o, part_o);
        REF(op, struct k_attn_prefill_params, part_ml, part_ml);
        uint32_t rgrid[3] = {e->T * c->num_heads, 1, 1};
        op = pb_kernel_op(b, "k_attn_prefill_reduce", &p, sizeof p, rgrid, K_ATTN_REDUCE_THREADS(c->head_dim), 0,
                          "l%u.attn_reduce", l);
        REF(op, struct k_attn_prefill_params, qg, qg);
        REF(op, struct k_attn_prefill_params, out, ao);
        REF(op, struct k_attn_prefill_params, step, e->sb->step);
        REF(op, struct k_attn_prefill_params, part_o, part_o);
        REF(op, struct k_attn_prefill_params, part_ml, part_ml);
        pb_cost(b, op, pbytes + 2ull * T * qd * 2, 0);
    }
    snprintf(nm, sizeof nm, "l%u.o_proj", l);
    return gemm(e, ao, w[3], H, qd, nm);
}

/* ---- mixture of experts ------------------------------------------------------------------ */

static struct k_moe_dims moe_dims(struct em *e)
{
    const struct model_config *c = e->c;
    return (struct k_moe_dims){c->hidden_size, c->num_experts, c->num_experts_per_tok, c->moe_inter,
                               c->shared_inter, e->T, e->i4 ? e->b->fmt.group_size : 0,
                               e->sb->max_blocks};
}

/* router + shared gate: fills ids, weights, shared_gate; reads logits made by a GEMV when
 * lg >= 0. sg < 0: no shared gate (k_moe_combine takes the sigmoid of its logit itself) */
static void router_with(struct em *e, uint32_t l, uint32_t hn, uint32_t ids, uint32_t wts,
                        int32_t sg, int32_t lg)
{
    struct pb *b = e->b;
    const struct model_config *c = e->c;
    char w[96];
    struct k_router_params p = {.d = moe_dims(e)};
    uint32_t grid[3] = {e->T, 1, 1};
    uint32_t op = pb_kernel_op(b, "k_router", &p, sizeof p, grid, K_ROUTER_THREADS, 0, "l%u.router", l);
    REF(op, struct k_router_params, h, hn);
    snprintf(w, sizeof w, "layers.%u.mlp.gate.weight", l);
    WREF(op, struct k_router_params, w, w);
    if (c->shared_inter && sg >= 0) {
        snprintf(w, sizeof w, "layers.%u.mlp.shared_expert_gate.weight", l);
        WREF(op, struct k_router_params, w_shared, w);
    }
    REF(op, struct k_router_params, ids, ids);
    REF(op, struct k_router_params, weights, wts);
    if (sg >= 0)
        REF(op, struct k_router_params, shared_gate, (uint32_t)sg);
    REF(op, struct k_router_params, step, e->sb->step);
    uint64_t E1 = c->num_experts + (c->shared_inter ? 1 : 0);
    if (lg >= 0) {
        REF(op, struct k_router_params, logits, (uint32_t)lg);
        pb_cost(b, op, 4ull * e->T * (c->num_experts + 1) + 8ull * e->T * c->num_experts_per_tok,
                8ull * e->T * E1);
        return;
    }
    pb_cost(b, op, 2ull * E1 * c->hidden_size + 2ull * e->T * c->hidden_size + 8ull * e->T * c->num_experts_per_tok,
            2ull * e->T * E1 * c->hidden_size);
}

/* the decode vec-mat path: 8 experts + shared in two launches (or one, k_moe_fused_g128) */

/* Whether decode runs the MoE block as k_moe_fused_g128 (kern/moe.h): asked for
 * (--moe-decode fused), and it takes the shape within the shared memory of every target */
static int moe_decode_fused(struct em *e)
{
    struct k_moe_dims d = moe_dims(e);
    return e->i4 && e->b->moe_fused && K_MOE_FUSED_OK(d) && K_MOE_FUSED_SMEM(d) <= e->b->smem_limit;
}

/* Whether decode folds the post-attention norm into the MoE block (moe_decode with nw): the
 * g128 pair routing itself (K_MOE_G128_ROUTES), or k_moe_fused_g128 */
static int moe_decode_folds_norm(struct em *e)
{
    struct k_moe_dims d = moe_dims(e);
    return e->i4 && (K_MOE_G128_ROUTES(d) || moe_decode_fused(e)) &&
           e->c->hidden_size <= K_GEMV_NORM_MAXK && e->c->hidden_size % 8 == 0;
}

/* hn the normed input; or, with nw (moe_decode_folds_norm), hn the residual stream x and add
 * the mixer output, the norm (weight nw) folded into the router GEMV and the up kernel and
 * the residual update into the down kernel (kern/moe.h). With nw and next_w as well, the down
 * kernel also makes the next norm (weight next_w) of x plus its output: *next_hn is that
 * normed input, and the block output is already in x. Else *next_hn is UINT32_MAX. */
static uint32_t moe_decode(struct em *e, uint32_t l, uint32_t hn, uint32_t add, const char *nw,
                           const char *next_w, uint32_t *next_hn)
{
    struct pb *b = e->b;
    const struct model_config *c = e->c;
    uint32_t k = c->num_experts_per_tok, I = c->moe_inter, S = c->shared_inter, H = c->hidden_size;
    uint32_t wmax = I > S ? I : S;
    struct k_moe_vec_params p = {.norm_eps = nw ? c->rms_norm_eps : 0.0f, .d = moe_dims(e)};
    /* INT4 group 128: the tensor-core pair (kern/moe.h), which also routes from the logits
     * itself: each CTA of the up and down kernels runs the top-k on one warp, k_router is not
     * launched, and the down kernel routes before its launch wait */
    const int fused = moe_decode_fused(e);
    const int g128 = e->i4 && K_MOE_G128_OK(p.d) && !fused,
              self = fused || (g128 && K_MOE_G128_ROUTES(p.d));
    const int fold_next = self && nw && next_w;
    uint32_t ids = 0, wts = 0, sg = 0, nx = 0, part = 0;
    *next_hn = UINT32_MAX;
    if (fold_next) {
        nx = pb_buf(b, PLAN_REGION_OVERLAY, PLAN_DTYPE_BF16, 2ull * H, "l%u.next_norm", l);
        part = pb_buf(b, PLAN_REGION_OVERLAY, PLAN_DTYPE_F32, 4ull * CDIV(H, K_MOE_G128_DOWN_ROWS),
                      "l%u.next_norm_part", l);
        *next_hn = nx;
    }
    if (!self) {
        ids = pb_buf(b, PLAN_REGION_OVERLAY, PLAN_DTYPE_I32, 4ull * k, "l%u.topk_ids", l);
        wts = pb_buf(b, PLAN_REGION_OVERLAY, PLAN_DTYPE_F32, 4ull * k, "l%u.topk_w", l);
        sg = pb_buf(b, PLAN_REGION_OVERLAY, PLAN_DTYPE_F32, 4, "l%u.shared_gate", l);
    }
    /* the router's logits from a many-CTA GEMV (one CTA reading the whole router per token is
     * the slow way), the shared gate's logit in the last column */
    uint32_t lg = pb_buf(b, PLAN_REGION_OVERLAY, PLAN_DTYPE_F32, 4ull * (c->num_experts + 1),
                         "l%u.router_logits", l);
    char rw[96], sw[96], nm[48];
    snprintf(rw, sizeof rw, "layers.%u.mlp.gate.weight", l);
    snprintf(sw, sizeof sw, "layers.%u.mlp.shared_expert_gate.weight", l);
    snprintf(nm, sizeof nm, "l%u.router_logits", l);
    struct gv segs[2] = {{rw, lg, c->num_experts, 0}, {sw, lg, 1, 4ull * c->num_experts}};
    struct gvnorm gn = {add, nw};
    gemv_ex(e, hn, H, segs, S ? 2 : 1, 0, K_GEMV_OUT_F32, NULL, nw ? &gn : NULL, nm);
    if (!self)
        router_with(e, l, hn, ids, wts, sg, (int32_t)lg);
    uint32_t act = pb_buf(b, PLAN_REGION_OVERLAY, PLAN_DTYPE_BF16, 2ull * (k + 1) * wmax, "l%u.moe_act", l);
    uint32_t out = pb_buf(b, PLAN_REGION_OVERLAY, PLAN_DTYPE_BF16, 2ull * H, "l%u.moe_out", l);
    char gu[96], dn[96], sgw[96], suw[96], sdw[96];
    snprintf(gu, 96, "layers.%u.mlp.experts.gate_up_proj", l);
    snprintf(dn, 96, "layers.%u.mlp.experts.down_proj", l);
    snprintf(sgw, 96, "layers.%u.mlp.shared_expert.gate_proj.weight", l);
    snprintf(suw, 96, "layers.%u.mlp.shared_expert.up_proj.weight", l);
    snprintf(sdw, 96, "layers.%u.mlp.shared_expert.down_proj.weight", l);
    p.gate_up_scales = pb_weight(b, gu)->scales_offset;
    p.down_scales = pb_weight(b, dn)->scales_offset;
    if (S) {
        p.sh_gate_scales = pb_weight(b, sgw)->scales_offset;
        p.sh_up_scales = pb_weight(b, suw)->scales_offset;
        p.sh_down_scales = pb_weight(b, sdw)->scales_offset;
    }
    const char *sfx = g128 ? "g128" : e->i4 ? "i4" : "bf16";
    char kname[32];
    uint64_t per_expert_up = wsize(e, gu) / c->num_experts, per_expert_dn = wsize(e, dn) / c->num_experts;
    uint64_t sh_up = S ? wsize(e, sgw) + wsize(e, suw) : 0, sh_dn = S ? wsize(e, sdw) : 0;
    /* down: 0 the up kernel, 1 the down kernel, 2 the one launch of both */
    for (int down = fused ? 2 : 0; down < (fused ? 3 : 2); down++) {
        uint32_t rows = g128 ? (down ? K_MOE_G128_DOWN_ROWS : K_MOE_G128_UP_ROWS) : K_MOE_ROWS;
        uint32_t grid[3] = {down ? CDIV(H, rows) : k + (S ? 1 : 0), down ? 1 : CDIV(wmax, rows), 1};
        snprintf(kname, sizeof kname, down ? "k_moe_down_%s" : "k_moe_up_%s", sfx);
        uint32_t threads = g128 ? K_MOE_G128_THREADS : K_MOE_THREADS, smem = 0;
        if (down == 2) { /* the whole block in one launch (kern/moe.h) */
            grid[0] = K_MOE_FUSED_UP(p.d) + K_MOE_FUSED_DOWN(p.d), grid[1] = 1;
            snprintf(kname, sizeof kname, "k_moe_fused_g128");
            threads = K_MOE_FUSED_THREADS, smem = K_MOE_FUSED_SMEM(p.d);
        }
        const char *what = down == 2 ? "moe" : down ? "moe_down" : "moe_up";
        uint32_t op = pb_kernel_op(b, kname, &p, sizeof p, grid, threads, smem, "l%u.%s", l, what);
        REF(op, struct k_moe_vec_params, h, hn);
        WREF(op, struct k_moe_vec_params, gate_up, gu);
        WREF(op, struct k_moe_vec_params, down, dn);
        if (S) {
            WREF(op, struct k_moe_vec_params, sh_gate, sgw);
            WREF(op, struct k_moe_vec_params, sh_up, suw);
            WREF(op, struct k_moe_vec_params, sh_down, sdw);
        }
        if (nw) {
            REF(op, struct k_moe_vec_params, x_add, add);
            WREF(op, struct k_moe_vec_params, norm_w, nw);
        }
        if (down == 2) /* its tickets whether or not the next norm is folded in */
            REF(op, struct k_moe_vec_params, fold_count, e->sb->fold_count);
        if (down && fold_next) {
            WREF(op, struct k_moe_vec_params, next_w, next_w);
            REF(op, struct k_moe_vec_params, next_out, nx);
            REF(op, struct k_moe_vec_params, fold_part, part);
            REF(op, struct k_moe_vec_params, fold_count, e->sb->fold_count);
        }
        if (self) {
            REF(op, struct k_moe_vec_params, logits, lg);
        } else {
            REF(op, struct k_moe_vec_params, ids, ids);
            REF(op, struct k_moe_vec_params, weights, wts);
            REF(op, struct k_moe_vec_params, shared_gate, sg);
        }
        REF(op, struct k_moe_vec_params, act, act);
        REF(op, struct k_moe_vec_params, out, out);
        REF(op, struct k_moe_vec_params, step, e->sb->step);
        const uint64_t dn_bytes = k * per_expert_dn + sh_dn + 2ull * (k + 1) * wmax +
                                  (fold_next ? 8ull : 2ull) * H,
                       up_bytes = k * per_expert_up + sh_up + 2ull * H + 2ull * (k + 1) * wmax;
        const uint64_t dn_flops = 2ull * H * ((uint64_t)k * I + S),
                       up_flops = 2ull * H * 2 * ((uint64_t)k * I + S);
        if (down == 2)
            pb_cost(b, op, up_bytes + dn_bytes, up_flops + dn_flops);
        else if (down)
            pb_cost(b, op, dn_bytes, dn_flops);
        else
            pb_cost(b, op, up_bytes, up_flops);
    }
    return out;
}

/* a batched expert GEMM launch (prefill) */
static void moe_gemm(struct em *e, uint32_t l, int down, uint32_t x, uint32_t y, uint32_t wts)
{
    struct pb *b = e->b;
    const struct model_config *c = e->c;
    char w[96], kname[40];
    snprintf(w, sizeof w, down ? "layers.%u.mlp.experts.down_proj" : "layers.%u.mlp.experts.gate_up_proj", l);
    struct k_moe_gemm_params p = {.d = moe_dims(e), .scales_offset = pb_weight(b, w)->scales_offset};
    /* tensor cores where the shape and the targets' shared memory allow, else the _simt build */
    uint32_t K = down ? c->moe_inter : c->hidden_size, N = down ? c->hidden_size : c->moe_inter;
    uint32_t smem = K_MOE_TC_SMEM(e->i4, !down, K, p.d.group);
    int tc = K_MOE_TC_OK(e->i4, K, N) && K_MOE_TC_FITS(p.d) && smem <= b->smem_limit;
    snprintf(kname, sizeof kname, "k_moe_gemm_%s_%s%s", down ? "down" : "up", e->i4 ? "i4" : "bf16",
             tc ? "" : "_simt");
    /* the blocks this chunk can need: an expert's pairs fill all its blocks but the last */
    uint64_t pairs = (uint64_t)e->T * c->num_experts_per_tok;
    uint64_t blocks = CDIV(pairs, K_MOE_BM) + (pairs < c->num_experts ? pairs : c->num_experts);
    uint32_t grid[3] = {blocks < e->sb->max_blocks ? (uint32_t)blocks : e->sb->max_blocks,
                        CDIV(N, tc ? (down ? K_MOE_TC_BN_DOWN : K_MOE_TC_BN_UP) : K_MOE_BN), 1};
    uint32_t threads = tc ? K_MOE_TC_THREADS : K_MOE_THREADS;
    /* the up GEMM of a short chunk: 2 n8 tiles a pass, more CTAs an SM (kern/moe.h; the
     * same shared memory) */
    if (!down && e->i4 && tc && e->T <= K_MOE_TC_NARROW_MAXT && K_MOE_TC_NARROW_OK(K, N))
        snprintf(kname, sizeof kname, "k_moe_gemm_up_i4_narrow");
    /* the down GEMM of a short chunk (a few pairs an expert): the weights streamed into
     * registers (k_moe_few_up_g128 measured even with the tensor-core build: not planned) */
    if (down && e->i4 && e->T <= K_MOE_FEW_MAXT && K_MOE_FEW_OK(p.d) &&
        K_MOE_FEW_SMEM(p.d, 0) <= b->smem_limit) {
        snprintf(kname, sizeof kname, "k_moe_few_down_g128");
        grid[1] = CDIV(N, K_MOE_FEW_BN_DOWN);
        threads = K_MOE_FEW_THREADS, smem = K_MOE_FEW_SMEM(p.d, 0), tc = 1;
    }
    uint32_t op = pb_kernel_op(b, kname, &p, sizeof p, grid, threads, tc ? smem : 0, "l%u.%s", l,
                               down ? "moe_gemm_down" : "moe_gemm_up");
    REF(op, struct k_moe_gemm_params, x, x);
    WREF(op, struct k_moe_gemm_params, w, w);
    REF(op, struct k_moe_gemm_params, sorted, e->sb->sorted);
    REF(op, struct k_moe_gemm_params, block_expert, e->sb->block_expert);
    REF(op, struct k_moe_gemm_params, n_blocks, e->sb->n_blocks);
    REF(op, struct k_moe_gemm_params, weights, wts);
    REF(op, struct k_moe_gemm_params, y, y);
    REF(op, struct k_moe_gemm_params, step, e->sb->step);
    uint64_t rows = (uint64_t)e->T * c->num_experts_per_tok, H = c->hidden_size, I = c->moe_inter;
    /* a chunk of a few hundred tokens or more touches nearly every expert: all weights stream */
    pb_cost(b, op, wsize(e, w) + 2ull * rows * (H + (down ? I : I)), 2ull * rows * H * I * (down ? 1 : 2));
}

/* Prefill router logits in fp32 through cuBLAS: the router's (sh 0) or the shared gate's
 * (sh 1, one column) into y at byte offset off, rows ldc floats apart */
static void router_gemm(struct em *e, uint32_t l, uint32_t hn, int sh, uint32_t y, uint64_t off,
                        uint32_t ldc)
{
    struct pb *b = e->b;
    const uint32_t T = e->T, H = e->c->hidden_size, m = sh ? 1 : e->c->num_experts;
    char w[96];
    snprintf(w, sizeof w,
             sh ? "layers.%u.mlp.shared_expert_gate.weight" : "layers.%u.mlp.gate.weight", l);
    struct plan_gemm g = {.m = m, .n = T, .k = H, .lda = H, .ldb = H, .ldc = ldc, .trans_a = 1,
                          .trans_b = 0, .dtype_ab = PLAN_DTYPE_BF16, .dtype_c = PLAN_DTYPE_F32,
                          .alpha = 1.0f, .beta = 0.0f};
    uint32_t op = pb_runtime_op(b, PLAN_OP_GEMM, &g, sizeof g, "l%u.%s", l,
                                sh ? "shared_gate_logits" : "router_logits");
    WREF(op, struct plan_gemm, a, w);
    REF(op, struct plan_gemm, b, hn);
    pb_ref_buf(b, op, offsetof(struct plan_gemm, c), y, off);
    pb_cost(b, op, 2ull * m * H + 2ull * T * H + 4ull * T * m, 2ull * T * m * H);
}

static uint32_t moe_prefill(struct em *e, uint32_t l, uint32_t hn)
{
    struct pb *b = e->b;
    const struct model_config *c = e->c;
    uint32_t T = e->T, k = c->num_experts_per_tok, H = c->hidden_size, I = c->moe_inter, S = c->shared_inter;
    uint32_t ids = pb_buf(b, PLAN_REGION_OVERLAY, PLAN_DTYPE_I32, 4ull * T * k, "l%u.topk_ids", l);
    uint32_t wts = pb_buf(b, PLAN_REGION_OVERLAY, PLAN_DTYPE_F32, 4ull * T * k, "l%u.topk_w", l);
    /* the router's fp32 logits (T, E + 1) from cuBLAS, the shared gate's in the last column:
     * a router CTA reading the whole 1 MiB router for its own token took 7% of a prefill chunk.
     * With the side branch, the shared gate's logits (T) are the side's first GEMM instead and
     * k_moe_combine takes their sigmoid; k_router leaves the last column alone. */
    uint32_t E = c->num_experts;
    const int side = S && fork_ok(e);
    uint32_t lg = pb_buf(b, PLAN_REGION_OVERLAY, PLAN_DTYPE_F32, 4ull * T * (E + 1), "l%u.router_logits", l);
    int32_t sg = -1, sgl = -1;
    if (!side)
        sg = (int32_t)pb_buf(b, PLAN_REGION_OVERLAY, PLAN_DTYPE_F32, 4ull * T, "l%u.shared_gate",
                             l);
    else
        sgl = (int32_t)pb_buf(b, PLAN_REGION_OVERLAY, PLAN_DTYPE_F32, 4ull * T,
                              "l%u.gate_logits", l);
    int32_t shared = -1;
    if (S) { /* shared expert (on the side stream where fork_ok, expanding into the side's own
              * workspace): two GEMMs for gate and up, SiLU * up, the down GEMM */
        if (side) {
            pb_fork(b);
            router_gemm(e, l, hn, 1, (uint32_t)sgl, 0, 1);
        }
        char nm[64], sw[3][96];
        const char *set[3] = {sw[0], sw[1], sw[2]};
        snprintf(sw[0], 96, "layers.%u.mlp.shared_expert.gate_proj.weight", l);
        snprintf(sw[1], 96, "layers.%u.mlp.shared_expert.up_proj.weight", l);
        snprintf(sw[2], 96, "layers.%u.mlp.shared_expert.down_proj.weight", l);
        snprintf(nm, sizeof nm, "l%u.shared.dequant", l), dequant_set(e, set, 3, nm);
        snprintf(nm, sizeof nm, "l%u.shared_gate_proj", l);
        uint32_t g = gemm(e, hn, sw[0], S, H, nm);
        snprintf(nm, sizeof nm, "l%u.shared_up_proj", l);
        uint32_t u = gemm(e, hn, sw[1], S, H, nm);
        uint32_t a =
            pb_buf(b, PLAN_REGION_OVERLAY, PLAN_DTYPE_BF16, 2ull * T * S, "l%u.shared_act", l);
        struct k_silu_mul_params sp = {.n = S, .T_max = T};
        uint32_t grid[3] = {T, 1, 1};
        uint32_t op =
            pb_kernel_op(b, "k_silu_mul", &sp, sizeof sp, grid, 256, 0, "l%u.shared_silu", l);
        REF(op, struct k_silu_mul_params, gate, g);
        REF(op, struct k_silu_mul_params, up, u);
        REF(op, struct k_silu_mul_params, out, a);
        REF(op, struct k_silu_mul_params, step, e->sb->step);
        pb_cost(b, op, 6ull * T * S, 5ull * T * S);
        snprintf(nm, sizeof nm, "l%u.shared_down_proj", l);
        shared = (int32_t)gemm(e, a, sw[2], H, S, nm);
        if (side)
            pb_main(b);
    }
    router_gemm(e, l, hn, 0, lg, 0, E + 1);
    if (S && !side)
        router_gemm(e, l, hn, 1, lg, 4ull * E, E + 1);
    router_with(e, l, hn, ids, wts, sg, (int32_t)lg);

    struct k_moe_align_params ap = {.d = moe_dims(e)};
    uint32_t op = pb_kernel_op(b, "k_moe_align", &ap, sizeof ap, one, 1024, 0, "l%u.moe_align", l);
    REF(op, struct k_moe_align_params, ids, ids);
    REF(op, struct k_moe_align_params, counts, e->sb->counts);
    REF(op, struct k_moe_align_params, sorted, e->sb->sorted);
    REF(op, struct k_moe_align_params, block_expert, e->sb->block_expert);
    REF(op, struct k_moe_align_params, n_blocks, e->sb->n_blocks);
    REF(op, struct k_moe_align_params, step, e->sb->step);
    pb_cost(b, op, 4ull * T * k * 2 + 4ull * e->sb->max_blocks * (K_MOE_BM + 1), 0);
    if (T >= K_MOE_SCATTER_MIN) { /* the pairs placed by many CTAs */
        REF(op, struct k_moe_align_params, cursor, e->sb->cursor);
        uint32_t g[3] = {(uint32_t)CDIV((uint64_t)T * k, K_MOE_SCATTER_THREADS), 1, 1};
        op = pb_kernel_op(b, "k_moe_scatter", &ap, sizeof ap, g, K_MOE_SCATTER_THREADS, 0,
                          "l%u.moe_scatter", l);
        REF(op, struct k_moe_align_params, ids, ids);
        REF(op, struct k_moe_align_params, sorted, e->sb->sorted);
        REF(op, struct k_moe_align_params, step, e->sb->step);
        REF(op, struct k_moe_align_params, cursor, e->sb->cursor);
        pb_cost(b, op, 4ull * T * k * 3, 0);
    }

    uint32_t act = pb_buf(b, PLAN_REGION_OVERLAY, PLAN_DTYPE_BF16,
                          2ull * e->sb->max_blocks * K_MOE_BM * I, "l%u.moe_act", l);
    moe_gemm(e, l, 0, hn, act, wts);
    uint32_t y = pb_buf(b, PLAN_REGION_OVERLAY, PLAN_DTYPE_BF16, 2ull * T * k * H, "l%u.moe_y", l);
    moe_gemm(e, l, 1, act, y, wts);

    if (S && fork_ok(e))
        pb_join(b);
    uint32_t out = pb_buf(b, PLAN_REGION_OVERLAY, PLAN_DTYPE_BF16, 2ull * T * H, "l%u.moe_out", l);
    struct k_moe_combine_params cp = {.d = moe_dims(e)};
    uint32_t grid[3] = {T, 1, 1};
    op = pb_kernel_op(b, "k_moe_combine", &cp, sizeof cp, grid, 256, 0, "l%u.moe_combine", l);
    REF(op, struct k_moe_combine_params, y, y);
    if (shared >= 0)
        REF(op, struct k_moe_combine_params, shared, (uint32_t)shared);
    if (sg >= 0)
        REF(op, struct k_moe_combine_params, shared_gate, (uint32_t)sg);
    if (sgl >= 0)
        REF(op, struct k_moe_combine_params, gate_logit, (uint32_t)sgl);
    REF(op, struct k_moe_combine_params, out, out);
    REF(op, struct k_moe_combine_params, step, e->sb->step);
    pb_cost(b, op, 2ull * T * H * (k + 2) + 4ull * T, 2ull * T * H * (k + 1));
    return out;
}

/* ---- the whole pass ------------------------------------------------------------------------ */

static uint32_t embed(struct em *e)
{
    struct pb *b = e->b;
    const struct model_config *c = e->c;
    uint32_t x = pb_buf(b, PLAN_REGION_OVERLAY, PLAN_DTYPE_BF16, 2ull * e->T * c->hidden_size, "x");
    struct k_embed_params p = {.H = c->hidden_size, .V = c->vocab_size, .T_max = e->T};
    uint32_t grid[3] = {e->T, 1, 1};
    uint32_t op = pb_kernel_op(b, "k_embed", &p, sizeof p, grid, K_EMBED_THREADS, 0, "embed");
    WREF(op, struct k_embed_params, table, "embed_tokens.weight");
    if (e->prefill)
        REF(op, struct k_embed_params, tokens, e->sb->tokens_in);
    else
        pb_ref_buf(b, op, offsetof(struct k_embed_params, tokens), e->sb->step,
                   offsetof(struct k_step, token));
    REF(op, struct k_embed_params, out, x);
    REF(op, struct k_embed_params, step, e->sb->step);
    pb_cost(b, op, 4ull * e->T * c->hidden_size + 4ull * e->T, 0);
    return x;
}

/* final norm on the last token (unless the last layer's MoE down kernel made it: hf), lm_head,
 * the two sampling phases */
static void head(struct em *e, uint32_t x, uint32_t last_out, uint32_t hf)
{
    struct pb *b = e->b;
    const struct model_config *c = e->c;
    if (hf == UINT32_MAX)
        hf = rmsnorm(e, x, (int)last_out, "norm.weight", e->prefill, "final_norm");
    uint32_t logits = pb_buf(b, PLAN_REGION_OVERLAY, PLAN_DTYPE_F32, 4ull * c->vocab_size, "logits");
    const char *w = c->tie_embeddings ? "embed_tokens.weight" : "lm_head.weight";
    struct gv s = {w, logits, c->vocab_size, 0};
    int i4 = pb_weight(b, w)->layout == K_LAYOUT_I4_ROWS;
    gemv(e, hf, c->hidden_size, &s, 1, i4, K_GEMV_OUT_F32 | (e->prefill ? K_GEMV_LAST_ONLY : 0),
         "lm_head");
    struct k_sample_params p = {.V = c->vocab_size, .prefill = (uint32_t)e->prefill};
    uint32_t grid[3] = {K_SAMPLE_PARTS, 1, 1};
    uint32_t op = pb_kernel_op(b, "k_sample_part", &p, sizeof p, grid, 256, 0, "sample_part");
    REF(op, struct k_sample_params, logits, logits);
    REF(op, struct k_sample_params, cand, e->sb->cand);
    REF(op, struct k_sample_params, step, e->sb->step);
    pb_cost(b, op, 4ull * c->vocab_size + 8ull * K_SAMPLE_PARTS * K_SAMPLE_CAND, 2ull * c->vocab_size);
    op = pb_kernel_op(b, "k_sample_pick", &p, sizeof p, one, 1024, 0, "sample_pick");
    REF(op, struct k_sample_params, cand, e->sb->cand);
    pb_ref_ring(b, op, offsetof(struct k_sample_params, ring));
    REF(op, struct k_sample_params, step, e->sb->step);
    pb_cost(b, op, 8ull * K_SAMPLE_PARTS * K_SAMPLE_CAND + 64, 8ull * K_SAMPLE_PARTS * K_SAMPLE_CAND);
}

static void emit_pass(struct em *e)
{
    const struct model_config *c = e->c;
    char nm[32];
    uint32_t x = embed(e);
    int prev = -1;                /* block output not yet added to the residual stream */
    uint32_t folded = UINT32_MAX; /* the input norm, made by the MoE down kernel ahead */
    for (uint32_t l = 0; l < c->num_layers; l++) {
        snprintf(nm, sizeof nm, "l%u.input_norm", l);
        char w[96], nw[96];
        snprintf(w, sizeof w, "layers.%u.input_layernorm.weight", l);
        uint32_t hn = folded != UINT32_MAX ? folded : rmsnorm(e, x, prev, w, 0, nm);
        folded = UINT32_MAX;
        uint32_t mo;
        if (c->layer_types[l] == MODEL_LAYER_LINEAR)
            mo = e->prefill ? gdn_prefill(e, l, hn) : gdn_decode(e, l, hn);
        else
            mo = attention(e, l, hn);
        snprintf(w, sizeof w, "layers.%u.post_attention_layernorm.weight", l);
        if (!e->prefill && moe_decode_folds_norm(e)) { /* no norm launches: kern/moe.h */
            if (l + 1 < c->num_layers)
                snprintf(nw, sizeof nw, "layers.%u.input_layernorm.weight", l + 1);
            else
                snprintf(nw, sizeof nw, "norm.weight");
            prev = (int)moe_decode(e, l, x, mo, w, nw, &folded);
            continue;
        }
        snprintf(nm, sizeof nm, "l%u.post_norm", l);
        uint32_t hn2 = rmsnorm(e, x, (int)mo, w, 0, nm);
        prev = (int)(e->prefill ? moe_prefill(e, l, hn2) : moe_decode(e, l, hn2, 0, NULL, NULL, &folded));
    }
    head(e, x, (uint32_t)prev, folded);
}

/* Persistent state and workspaces, shared by every schedule. */
static void shared_buffers(struct pb *b, struct shared_bufs *sb)
{
    const struct model_config *c = &b->c;
    uint32_t C = b->buckets[b->num_buckets - 1];
    uint64_t kv = 2ull * c->num_kv_heads * b->max_seq * c->head_dim;
    uint64_t win = 2ull * model_lin_conv_dim(c) * (c->conv_kernel > 1 ? c->conv_kernel - 1 : 1);
    uint64_t st = 4ull * c->lin_num_v_heads * c->lin_k_head_dim * c->lin_v_head_dim;
    sb->step = pb_buf(b, PLAN_REGION_PERSISTENT, PLAN_DTYPE_I32, sizeof(struct k_step), "step");
    sb->tokens_in = pb_buf(b, PLAN_REGION_PERSISTENT, PLAN_DTYPE_I32, 4ull * C, "tokens_in");
    for (uint32_t l = 0; l < c->num_layers; l++) {
        if (c->layer_types[l] == MODEL_LAYER_FULL) {
            sb->k_cache[l] = pb_buf(b, PLAN_REGION_PERSISTENT, PLAN_DTYPE_BF16, kv, "l%u.k_cache", l);
            sb->v_cache[l] = pb_buf(b, PLAN_REGION_PERSISTENT, PLAN_DTYPE_BF16, kv, "l%u.v_cache", l);
        } else {
            sb->window[l] = pb_buf(b, PLAN_REGION_PERSISTENT, PLAN_DTYPE_BF16, win, "l%u.conv_window", l);
            sb->state[l] = pb_buf(b, PLAN_REGION_PERSISTENT, PLAN_DTYPE_F32, st, "l%u.gdn_state", l);
        }
    }
    /* split-K partials for the largest split count; MoE sort buffers for the largest chunk */
    sb->part_o = pb_buf(b, PLAN_REGION_WORKSPACE, PLAN_DTYPE_F32,
                        4ull * b->n_split * c->num_heads * c->head_dim, "attn.part_o");
    sb->part_ml = pb_buf(b, PLAN_REGION_WORKSPACE, PLAN_DTYPE_F32, 8ull * b->n_split * c->num_heads,
                         "attn.part_ml");
    sb->max_blocks = CDIV(C * c->num_experts_per_tok, K_MOE_BM) + c->num_experts;
    sb->counts = pb_buf(b, PLAN_REGION_WORKSPACE, PLAN_DTYPE_I32, 4ull * c->num_experts, "moe.counts");
    sb->cursor = pb_buf(b, PLAN_REGION_WORKSPACE, PLAN_DTYPE_I32, 4ull * c->num_experts, "moe.cursor");
    sb->sorted = pb_buf(b, PLAN_REGION_WORKSPACE, PLAN_DTYPE_I32, 4ull * sb->max_blocks * K_MOE_BM,
                        "moe.sorted_ids");
    sb->block_expert = pb_buf(b, PLAN_REGION_WORKSPACE, PLAN_DTYPE_I32, 4ull * sb->max_blocks,
                              "moe.block_expert");
    sb->n_blocks = pb_buf(b, PLAN_REGION_WORKSPACE, PLAN_DTYPE_I32, 4, "moe.n_blocks");
    /* zero at load and at every reset, and back to zero after each launch that uses it */
    sb->fold_count = pb_buf(b, PLAN_REGION_PERSISTENT, PLAN_DTYPE_I32, 4ull * K_MOE_FUSED_COUNTERS,
                            "moe.fold_count");
    sb->cand = pb_buf(b, PLAN_REGION_WORKSPACE, PLAN_DTYPE_F32, 8ull * K_SAMPLE_PARTS * K_SAMPLE_CAND,
                      "sample.candidates");
    sb->cublas = pb_buf(b, PLAN_REGION_WORKSPACE, PLAN_DTYPE_BF16, CUBLAS_WORKSPACE, "cublas.workspace");
    /* the side branches' GEMMs (pb_fork) run beside the main stream's: a workspace of their own */
    pb_buf(b, PLAN_REGION_WORKSPACE, PLAN_DTYPE_BF16, CUBLAS_WORKSPACE_SIDE,
           "cublas.workspace_side");
    /* INT4 prefill: the largest dense projection expanded to bf16, or the largest set that
     * dequant_set expands side by side (a layer's shared expert, its k and v); and for the
     * side branches, which take those sets and GDN's b and a, the largest of them */
    uint64_t big = 0, side = 0, set[2][MODEL_MAX_LAYERS] = {{0}};
    for (uint32_t i = 0; i < b->man.n; i++) {
        const struct wt_tensor_desc *t = &b->man.t[i];
        unsigned l;
        if (t->layout != K_LAYOUT_I4_ROWS || t->ndim != 2 || !strncmp(t->name, "mtp.", 4) ||
            !strcmp(t->name, "lm_head.weight"))
            continue;
        uint64_t sz = 2 * t->shape[0] * t->shape[1];
        big = sz > big ? sz : big;
        if (sscanf(t->name, "layers.%u.", &l) != 1 || l >= c->num_layers)
            continue;
        if (strstr(t->name, ".mlp.shared_expert."))
            set[0][l] += (sz + 255) & ~255ull;
        else if (strstr(t->name, ".self_attn.k_proj.") || strstr(t->name, ".self_attn.v_proj."))
            set[1][l] += (sz + 255) & ~255ull;
        else if (strstr(t->name, ".linear_attn.in_proj_b.") ||
                 strstr(t->name, ".linear_attn.in_proj_a."))
            side = sz > side ? sz : side;
    }
    for (uint32_t l = 0; l < c->num_layers; l++)
        for (int k = 0; k < 2; k++) {
            big = set[k][l] > big ? set[k][l] : big;
            side = set[k][l] > side ? set[k][l] : side;
        }
    sb->dequant = big ? pb_buf(b, PLAN_REGION_WORKSPACE, PLAN_DTYPE_BF16, big, "dequant.weights") : 0;
    sb->dequant_side =
        side ? pb_buf(b, PLAN_REGION_WORKSPACE, PLAN_DTYPE_BF16, side, "dequant.side") : 0;
}

uint32_t plan_arch_smem(uint32_t arch)
{
    switch (arch) {
    case 80: case 87: return 166912; /* 163 KiB */
    case 86: case 89: return 101376; /* 99 KiB */
    case 90: return 232448;          /* 227 KiB */
    }
    return 0;
}

uint32_t plan_min_smem(const struct model_config *c) { return K_GDN_CHUNK_SMEM(c->lin_k_head_dim, 4); }

/* What the kernels can serve, beyond what any model config must satisfy (model.c). Rows are
 * read with 16-byte vector loads (8 bf16), attention keeps a query head's row in registers,
 * the GDN step keeps a key/value head pair on chip, the conv window in registers. */
static int servable(struct pb *b)
{
    const struct model_config *c = &b->c;
    const struct {
        const char *name;
        uint32_t v, mult, max;
    } r[] = {
        {"hidden_size", c->hidden_size, 8, 1u << 16},
        {"head_dim", c->head_dim, 8, 256},
        {"linear_key_head_dim", c->lin_k_head_dim, 4, 128},
        {"linear_value_head_dim", c->lin_v_head_dim, 4, 256},
        {"linear_conv_kernel_dim", c->conv_kernel, 1, 8},
        {"linear_num_value_heads / linear_num_key_heads", c->lin_num_v_heads / c->lin_num_k_heads, 1, 64},
        {"value dim per key head", c->lin_num_v_heads / c->lin_num_k_heads * c->lin_v_head_dim, 4, 1024},
        {"moe_intermediate_size", c->moe_inter, 4, 1u << 16}, /* odd widths: element loads */
        {"num_experts_per_tok", c->num_experts_per_tok, 1, 16},
        {"num_experts", c->num_experts, 1, 1024}, /* the router and align hold one per thread */
    };
    for (size_t i = 0; i < sizeof r / sizeof r[0]; i++)
        if (r[i].v % r[i].mult || r[i].v > r[i].max) {
            snprintf(b->err, sizeof b->err,
                     "%s = %u cannot be served by the kernels: it must be a multiple of %u and at "
                     "most %u",
                     r[i].name, r[i].v, r[i].mult, r[i].max);
            b->failed = 1;
            return -1;
        }
    if (c->conv_kernel < 2) {
        snprintf(b->err, sizeof b->err, "linear_conv_kernel_dim = %u cannot be served by the kernels: "
                 "it must be 2..8", c->conv_kernel);
        b->failed = 1;
        return -1;
    }
    if (plan_min_smem(c) > b->smem_limit) {
        snprintf(b->err, sizeof b->err,
                 "the chunked Gated DeltaNet kernel needs %u bytes of shared memory for "
                 "linear_key_head_dim %u; the target archs offer %u (sm_86 and sm_89 have 99 KiB: "
                 "leave them out with --arch)",
                 plan_min_smem(c), c->lin_k_head_dim, b->smem_limit);
        b->failed = 1;
        return -1;
    }
    if (c->shared_inter % 8) {
        snprintf(b->err, sizeof b->err,
                 "shared_expert_intermediate_size = %u cannot be served by the kernels: it must "
                 "be a multiple of 8", c->shared_inter);
        b->failed = 1;
        return -1;
    }
    return 0;
}

/* The caller's prefill buckets: 1..PLAN_MAX_BUCKETS sizes, ascending, none past max_seq. */
static int buckets_ok(struct pb *b)
{
    int ok = b->num_buckets >= 1 && b->num_buckets <= PLAN_MAX_BUCKETS;
    for (uint32_t i = 0; ok && i < b->num_buckets; i++)
        ok = b->buckets[i] >= 1 && b->buckets[i] <= b->max_seq && (i == 0 || b->buckets[i] > b->buckets[i - 1]);
    if (!ok) {
        snprintf(b->err, sizeof b->err, "prefill buckets: %u given; they must be 1 to %u sizes, "
                 "ascending, none above max_seq %u", b->num_buckets, PLAN_MAX_BUCKETS, b->max_seq);
        b->failed = 1;
    }
    return ok ? 0 : -1;
}

int plan_emit_schedules(struct pb *b)
{
    if (servable(b) || buckets_ok(b))
        return -1;
    static struct shared_bufs sb; /* large (per-layer arrays); the planner is single-threaded */
    memset(&sb, 0, sizeof sb);
    shared_buffers(b, &sb);
    struct em e = {.b = b, .c = &b->c, .sb = &sb, .T = 1, .i4 = b->fmt.quant == PLAN_QUANT_INT4};
    /* decode: single pass up to the threshold, split-K above it (when max_seq reaches it) */
    uint32_t th = b->split_threshold < b->max_seq ? b->split_threshold : b->max_seq;
    e.kv = th;
    pb_sched_begin(b, PLAN_SCHED_DECODE, 1, 1, th, "decode");
    emit_pass(&e);
    pb_sched_end(b);
    if (th < b->max_seq) {
        e.split = 1, e.kv = b->max_seq;
        pb_sched_begin(b, PLAN_SCHED_DECODE, 1, th + 1, b->max_seq, "decode_split");
        emit_pass(&e);
        pb_sched_end(b);
    }
    e.prefill = 1, e.split = 0;
    for (uint32_t i = 0; i < b->num_buckets; i++) {
        char nm[32];
        e.T = b->buckets[i], e.kv = b->buckets[i];
        snprintf(nm, sizeof nm, "prefill_%u", b->buckets[i]);
        pb_sched_begin(b, PLAN_SCHED_PREFILL, b->buckets[i], 1, b->max_seq, nm);
        emit_pass(&e);
        pb_sched_end(b);
    }
    (void)sb.cublas;
    return b->failed ? -1 : 0;
}
