/* test_planner.c — plans for the default model and the tiny configs, built in-process and
 * read back through plan_read(); and the planner program's command line.
 *
 * Checks that every plan verifies, that the written buffer table re-verifies as a placement
 * (no two buffers of one schedule live at the same time share bytes), that relocations land
 * inside their buffers, that the manifest hash ties the plan to the weights manifest, that
 * planning is deterministic, and that bad input gets a clear error, a non-zero exit and no
 * output file. */
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>

#include "../kern/attn.h"
#include "../kern/gemv.h"
#include "../kern/moe.h"
#include "../plan/arena.h"
#include "../plan/build.h"
#include "../plan/planfile.h"
#include "test.h"

static int plan_moe_fused;    /* make_plan plans --moe-decode fused */
static int plan_dense_cublas; /* make_plan plans --dense-prefill cublas */

/* Build a plan in memory (fake one-arch image). Returns the serialized plan or NULL. */
static uint8_t *make_plan(const struct model_config *c, const char *quant, uint32_t max_seq,
                          uint32_t chunk, size_t *len, char *err)
{
    struct pb b;
    struct wt_format f = {PLAN_QUANT_BF16, 0, PLAN_QUANT_BF16};
    if (wt_format_parse(quant, &f.quant, &f.group_size) || pb_init(&b, c, &f, max_seq, err))
        return NULL;
    b.split_threshold = 256, b.n_split = 16, b.moe_fused = plan_moe_fused;
    b.dense_cublas = plan_dense_cublas;
    b.num_buckets = 0;
    for (uint32_t t = 16; t < chunk; t *= 4)
        b.buckets[b.num_buckets++] = t;
    b.buckets[b.num_buckets++] = chunk;
    uint8_t *out = NULL, image[64];
    memset(image, 0x5a, sizeof image);
    struct plan_image im = {90, PLAN_IMAGE_CUBIN, 0, sizeof image};
    struct plan_content pc;
    if (plan_emit_schedules(&b) || plan_build_finish(&b) || plan_build_content(&b, &pc)) {
        snprintf(err, FMT_ERR_LEN, "%s", b.err);
        pb_free(&b);
        return NULL;
    }
    pc.images = &im, pc.num_images = 1, pc.image_data = image, pc.image_data_size = sizeof image;
    pc.id.num_archs = 1, pc.id.archs[0] = 90;
    if (plan_write(&pc, &out, len, err) != FMT_OK)
        out = NULL;
    pb_free(&b);
    return out;
}

/* Re-verify each schedule's overlay from the file alone, and every reloc against buffers. */
static int placement_ok(const struct plan_view *p, char *err)
{
    struct plan_arena_buf *a = calloc(p->num_buffers, sizeof *a);
    int ok = 1;
    for (uint32_t s = 0; s < p->num_schedules && ok; s++) {
        uint32_t n = 0;
        struct plan_region ov;
        plan_get_region(p, 2, &ov);
        for (uint32_t i = 0; i < p->num_buffers; i++) {
            struct plan_buffer bf;
            plan_get_buffer(p, i, &bf);
            if (bf.schedule != s && bf.schedule != PLAN_ALL_SCHEDULES)
                continue;
            /* fixed buffers live through the whole schedule */
            uint32_t first = bf.schedule == s ? bf.first_op : 0;
            uint32_t last = bf.schedule == s ? bf.last_op : 0xFFFFFFF0u;
            a[n++] = (struct plan_arena_buf){plan_str(p, bf.name), bf.size, first, last, bf.offset};
        }
        ok = plan_arena_verify(a, n, PLAN_BUF_ALIGN, p->id.arena_bytes, err) == 0;
    }
    free(a);
    return ok;
}

static void check_config(const char *label, const struct model_config *c, const char *quant,
                         uint32_t max_seq, uint32_t chunk)
{
    char err[FMT_ERR_LEN] = "";
    size_t n1 = 0, n2 = 0;
    uint8_t *p1 = make_plan(c, quant, max_seq, chunk, &n1, err);
    CHECK(p1 != NULL, "%s %s max_seq %u: plan builds%s%s", label, quant, max_seq, p1 ? "" : ": ", err);
    if (!p1)
        return;
    uint8_t *p2 = make_plan(c, quant, max_seq, chunk, &n2, err);
    CHECK(p2 && n1 == n2 && !memcmp(p1, p2, n1), "%s: two builds are byte-identical", label);
    struct plan_view v;
    enum fmt_status st = plan_read(&v, p1, n1, err);
    CHECK(st == FMT_OK, "%s: plan_read accepts it%s%s", label, st ? ": " : "", st ? err : "");
    if (st == FMT_OK) {
        CHECK(placement_ok(&v, err), "%s: every schedule's buffers re-verify from the file%s%s",
              label, err[0] ? ": " : "", err);
        struct wt_manifest m;
        struct wt_format f = {0, 0, PLAN_QUANT_BF16};
        wt_format_parse(quant, &f.quant, &f.group_size);
        int built = wt_manifest_build(&m, c, &f, err) == 0;
        CHECK(built && m.n == v.num_weights &&
                  wt_manifest_hash_plan(v.strings, (const struct plan_weight *)v.weights, v.num_weights) ==
                      v.id.manifest_hash,
              "%s: weight manifest matches the manifest builder and its hash", label);
        if (built)
            wt_manifest_free(&m);
        uint32_t decode = 0, prefill = 0;
        for (uint32_t i = 0; i < v.num_schedules; i++) {
            struct plan_schedule s;
            plan_get_schedule(&v, i, &s);
            decode += s.kind == PLAN_SCHED_DECODE, prefill += s.kind == PLAN_SCHED_PREFILL;
        }
        CHECK(decode >= 1 && prefill >= 1 && v.id.num_buckets == prefill,
              "%s: %u decode and %u prefill schedules", label, decode, prefill);
    }
    free(p1);
    free(p2);
}

/* Op i of the plan into op; the name of its kernel, or NULL for a runtime op */
static const char *op_kernel(const struct plan_view *v, uint32_t i, struct plan_op *op)
{
    struct plan_kernel kk;
    plan_get_op(v, i, op);
    if (op->kind != PLAN_OP_KERNEL)
        return NULL;
    plan_get_kernel(v, op->kernel, &kk);
    return plan_str(v, kk.name);
}

/* The default model (into c) and its INT4 plan (max_seq 4096, chunks of 2048) read into v;
 * the plan bytes (free them), or NULL after a failed check */
static uint8_t *int4_plan(struct model_config *c, struct plan_view *v)
{
    model_config_default(c);
    char err[FMT_ERR_LEN];
    size_t n;
    uint8_t *p = make_plan(c, "int4", 4096, 2048, &n, err);
    if (!p || plan_read(v, p, n, err) != FMT_OK) {
        CHECK(0, "default plan reads: %s", err);
        free(p);
        return NULL;
    }
    return p;
}

static void check_moe_prefill(const struct model_config *cfg, const struct plan_view *pv);
static void check_dense_prefill(const struct plan_view *pv, int nibbles);
static void check_branches(const struct plan_view *pv);

static void check_ops_named(void)
{
    struct model_config c;
    struct plan_view v;
    uint8_t *p = int4_plan(&c, &v);
    if (!p)
        return;
    const char *need[] = {"k_attn_decode_split_tc", "k_attn_decode_reduce", "k_attn_decode_tc",
                          "k_attn_prefill_tc",   "k_gdn_step",           "k_gdn_prep",  "k_gdn_seq",   "k_gdn_gnorm",
                          "k_router",            "k_moe_align",          "k_moe_up_g128",
                          "k_moe_down_g128",     "k_moe_gemm_up_i4",     "k_moe_gemm_down_i4",
                          "k_gemv_i4_g128",      "k_gemv_i4_g128_w",     "k_gemm_i4_g128",
                          "k_dequant_i4",        "k_sample_pick",       "k_embed",              "k_rmsnorm",
                          "k_attn_prefill_reduce"};
    int all = 1;
    for (size_t i = 0; i < sizeof need / sizeof need[0]; i++) {
        int found = 0;
        for (uint32_t k = 0; k < v.num_kernels && !found; k++) {
            struct plan_kernel kk;
            plan_get_kernel(&v, k, &kk);
            found = !strcmp(plan_str(&v, kk.name), need[i]);
        }
        if (!found) {
            printf("# missing kernel %s\n", need[i]);
            all = 0;
        }
    }
    CHECK(all, "the default plan uses every required algorithm's kernels");
    uint64_t gemms = 0, bytes = 0;
    for (uint32_t i = 0; i < v.num_ops; i++) {
        struct plan_op op;
        plan_get_op(&v, i, &op);
        gemms += op.kind == PLAN_OP_GEMM;
        bytes += op.bytes;
    }
    CHECK(gemms > 0 && bytes > 0, "prefill has cuBLAS GEMM ops; every op carries a cost");
    CHECK(v.id.arena_bytes > 100ull << 20 && v.id.arena_bytes < 1ull << 30,
          "default arena at max_seq 4096 is %.1f MiB", (double)v.id.arena_bytes / (1 << 20));
    /* prefill attention: key runs where a launch has fewer than K_ATTN_PF_CTAS CTAs, each
     * such launch followed by its reduce, and no reduce elsewhere */
    int runs_ok = 1;
    for (uint32_t s = 0; s < v.num_schedules; s++) {
        struct plan_schedule sc;
        plan_get_schedule(&v, s, &sc);
        if (sc.kind != PLAN_SCHED_PREFILL)
            continue;
        /* 16 q heads on 2 kv heads, 128 packed rows a CTA: 16 tokens a CTA and kv head, so
         * 2, 8 and 32 CTAs in the 16, 64 and 256 buckets, 128 and more above */
        uint32_t want = sc.tokens <= 64 ? K_ATTN_PF_MAXS : sc.tokens == 256 ? 4 : 1;
        uint32_t attn = 0, reduce = 0;
        for (uint32_t i = sc.first_op; i < sc.first_op + sc.op_count; i++) {
            struct plan_op op, next;
            plan_get_op(&v, i, &op);
            struct plan_kernel kk;
            if (op.kind != PLAN_OP_KERNEL)
                continue;
            plan_get_kernel(&v, op.kernel, &kk);
            const char *kn = plan_str(&v, kk.name);
            if (!strcmp(kn, "k_attn_prefill_reduce")) {
                reduce++;
                runs_ok &= op.grid[0] == sc.tokens * c.num_heads;
            } else if (!strcmp(kn, "k_attn_prefill_tc")) {
                attn++;
                runs_ok &= op.grid[2] == want;
                if (want > 1 && i + 1 < sc.first_op + sc.op_count) {
                    plan_get_op(&v, i + 1, &next);
                    plan_get_kernel(&v, next.kernel, &kk);
                    runs_ok &= next.kind == PLAN_OP_KERNEL && !strcmp(plan_str(&v, kk.name), "k_attn_prefill_reduce");
                }
            }
        }
        if (!(attn > 0 && reduce == (want > 1 ? attn : 0)))
            runs_ok = 0;
        if (!runs_ok) {
            printf("# prefill_%u: %u attention ops, %u reduces, %u key runs expected\n", sc.tokens, attn, reduce,
                   want);
            break;
        }
    }
    CHECK(k_attn_pf_splits(1) == 16 && k_attn_pf_splits(8) == 16 && k_attn_pf_splits(32) == 4 &&
              k_attn_pf_splits(64) == 2 && k_attn_pf_splits(65) == 1 && k_attn_pf_splits(128) == 1 &&
              k_attn_pf_splits(0) == 16,
          "k_attn_pf_splits: 128 / CTAs runs, at most 16, none below 2");
    CHECK(runs_ok, "prefill attention in key runs (and a reduce after it) exactly where a bucket's launch has "
                   "fewer than %u CTAs", K_ATTN_PF_CTAS);
    check_moe_prefill(&c, &v);
    check_dense_prefill(&v, 1);
    check_branches(&v);
    free(p);
}

/* The buffer that op i (schedule s, which starts at op first) reaches through arena offset at:
 * a fixed buffer holding it, or the overlay buffer of s holding it whose lifetime holds i
 * (unique: placement_ok). -1 if none. */
static int64_t buffer_at(const struct plan_view *v, uint32_t s, uint32_t first, uint32_t i,
                         uint64_t at)
{
    for (uint32_t k = 0; k < v->num_buffers; k++) {
        struct plan_buffer b;
        plan_get_buffer(v, k, &b);
        if (at < b.offset || at >= b.offset + b.size)
            continue;
        if (b.schedule == PLAN_ALL_SCHEDULES ||
            (b.schedule == s && i - first >= b.first_op && i - first <= b.last_op))
            return k;
    }
    return -1;
}

/* Prefill side branches (planfile.h PLAN_OP_SIDE), checked from the file's relocations alone,
 * not from the lifetimes the planner stretched: inside each forked range, a buffer both
 * branches reach is an input made before the fork (overlay) or the step (so not the
 * expansion workspace: the side has its own), and no buffer only one branch reaches shares a
 * byte with one the other reaches. Where they are: the shared expert, GDN b and a, attention
 * k and v; never in decode. */
static void check_branches(const struct plan_view *pv)
{
    const struct plan_view v = *pv;
    uint32_t ranges = 0, bad = 0, in_decode = 0, wrong_count = 0, side_gemms = 0, largest = 0;
    uint32_t gate_side = 0, gate_want = 0; /* shared gate logits: the side's first GEMM */
    for (uint32_t s = 0; s < v.num_schedules; s++) {
        struct plan_schedule sc;
        plan_get_schedule(&v, s, &sc);
        largest = sc.kind == PLAN_SCHED_PREFILL && sc.tokens > largest ? sc.tokens : largest;
    }
    uint8_t *reach = calloc(v.num_buffers, 1); /* bit 0 main, bit 1 side */
    for (uint32_t s = 0; s < v.num_schedules; s++) {
        struct plan_schedule sc;
        plan_get_schedule(&v, s, &sc);
        uint32_t fork = 0, forks = 0;
        for (uint32_t i = sc.first_op; i < sc.first_op + sc.op_count; i++) {
            struct plan_op op;
            plan_get_op(&v, i, &op);
            in_decode += sc.kind == PLAN_SCHED_DECODE && op.flags;
            if (op.flags & PLAN_OP_FORK)
                fork = i, forks++, memset(reach, 0, v.num_buffers);
            side_gemms += (op.flags & PLAN_OP_SIDE) && op.kind == PLAN_OP_GEMM;
            const char *nm = plan_str(&v, op.name), *us = strchr(nm, '.');
            gate_side += (op.flags & PLAN_OP_FORK) && op.kind == PLAN_OP_GEMM && us &&
                         !strcmp(us, ".shared_gate_logits");
            if (op.flags & PLAN_OP_JOIN) { /* the range [fork, i) is complete */
                ranges++;
                for (uint32_t a = 0; a < v.num_buffers; a++) {
                    if (!reach[a])
                        continue;
                    struct plan_buffer ba;
                    plan_get_buffer(&v, a, &ba);
                    if (reach[a] == 3) {
                        bad += ba.schedule == PLAN_ALL_SCHEDULES
                                   ? strcmp(plan_str(&v, ba.name), "step") != 0
                                   : ba.first_op >= fork - sc.first_op;
                        continue;
                    }
                    for (uint32_t b = 0; b < v.num_buffers; b++) {
                        struct plan_buffer bb;
                        plan_get_buffer(&v, b, &bb);
                        bad += reach[b] && reach[b] != reach[a] && b != a &&
                               ba.offset < bb.offset + bb.size && bb.offset < ba.offset + ba.size;
                    }
                }
            }
            for (uint32_t k = op.reloc_first; k < op.reloc_first + op.reloc_count && fork; k++) {
                struct plan_reloc rl;
                plan_get_reloc(&v, k, &rl);
                int64_t b = rl.base == PLAN_BASE_ARENA ? buffer_at(&v, s, sc.first_op, i, rl.offset)
                                                       : -2;
                bad += b == -1;
                if (b >= 0)
                    reach[b] |= op.flags & PLAN_OP_SIDE ? 2 : 1;
            }
            if (op.flags & PLAN_OP_JOIN)
                fork = 0;
        }
        /* 40 MoE layers (the shared expert), 30 GDN (b, a), 10 attention (k, v); none in the
         * largest chunk */
        const uint32_t want = sc.tokens == largest ? 0 : 80;
        wrong_count += sc.kind == PLAN_SCHED_PREFILL && forks != want;
        gate_want += sc.kind == PLAN_SCHED_PREFILL && sc.tokens != largest ? 40 : 0;
    }
    free(reach);
    CHECK(gate_side == gate_want && gate_want > 0,
          "prefill side branches: the MoE layers' shared gate logits are their side's first op "
          "(%u, want %u)", gate_side, gate_want);
    CHECK(ranges > 0 && bad == 0 && in_decode == 0 && wrong_count == 0 && side_gemms > 0,
          "prefill side branches: %u forked ranges, 80 a bucket, none in the %u-token chunk (%u "
          "buckets wrong), %u side GEMMs; no buffer shared across branches but inputs made "
          "before the fork (%u wrong); no flags in decode schedules (%u)",
          ranges, largest, wrong_count, side_gemms, bad, in_decode);
}

/* Prefill buckets the library is handed: none, out of order, or past max_seq is an error with a
 * message, never an out-of-range read. */
/* Decode MoE ops of the default model by kernel, over the decode schedules: the pair's up
 * and down kernels, and k_moe_fused_g128 (with its launch shape checked). */
static void count_moe_ops(int fused, uint32_t *up, uint32_t *down, uint32_t *one, int *shape_ok)
{
    struct model_config c;
    model_config_default(&c);
    char err[FMT_ERR_LEN];
    size_t n;
    plan_moe_fused = fused;
    uint8_t *p = make_plan(&c, "int4", 4096, 2048, &n, err);
    plan_moe_fused = 0;
    struct plan_view v;
    *up = *down = *one = 0, *shape_ok = 1;
    if (!p || plan_read(&v, p, n, err) != FMT_OK) {
        CHECK(0, "plan with --moe-decode %s reads: %s", fused ? "fused" : "pair", err);
        free(p);
        return;
    }
    for (uint32_t s = 0; s < v.num_schedules; s++) {
        struct plan_schedule sc;
        plan_get_schedule(&v, s, &sc);
        for (uint32_t i = sc.first_op;
             sc.kind == PLAN_SCHED_DECODE && i < sc.first_op + sc.op_count; i++) {
            struct plan_op op;
            const char *name = op_kernel(&v, i, &op);
            if (!name)
                continue;
            *up += !strcmp(name, "k_moe_up_g128"), *down += !strcmp(name, "k_moe_down_g128");
            if (!strcmp(name, "k_moe_fused_g128")) {
                ++*one;
                /* 8 slots of 512 rows and the shared 512 in 16-row up CTAs, 2048 / 16 down CTAs */
                *shape_ok &= op.grid[0] == 8 * 32 + 32 + 128 &&
                             op.block[0] == K_MOE_FUSED_THREADS && op.smem > 0 &&
                             op.smem <= 48 * 1024;
            }
        }
    }
    free(p);
}

static void check_moe_decode(void)
{
    uint32_t up, down, one;
    int shape_ok;
    count_moe_ops(0, &up, &down, &one, &shape_ok);
    CHECK(up > 0 && up == down && one == 0,
          "decode MoE by default: the g128 pair (%u up, %u down, %u fused)", up, down, one);
    count_moe_ops(1, &up, &down, &one, &shape_ok);
    CHECK(up == 0 && down == 0 && one > 0 && shape_ok,
          "--moe-decode fused: one k_moe_fused_g128 a layer and decode schedule (%u), no pair, "
          "launch shape 416 x %u threads with its shared memory (%s)",
          one, K_MOE_FUSED_THREADS, shape_ok ? "yes" : "no");
}

/* Prefill expert GEMMs on INT4 g128: the few-token down kernel for the buckets up to
 * K_MOE_FEW_MAXT tokens, the tensor-core ones otherwise; every launch sized for the blocks its
 * bucket can need (an expert's pairs fill all its blocks but the last), not the largest chunk's. */
static void check_moe_prefill(const struct model_config *cfg, const struct plan_view *pv)
{
    const struct model_config c = *cfg;
    const struct plan_view v = *pv;
    uint32_t few = 0, tc = 0, narrow = 0, bad = 0, buckets = 0, largest = 0;
    for (uint32_t s = 0; s < v.num_schedules; s++) {
        struct plan_schedule sc;
        plan_get_schedule(&v, s, &sc);
        if (sc.kind == PLAN_SCHED_PREFILL && sc.tokens > largest)
            largest = sc.tokens;
    }
    const uint64_t k = c.num_experts_per_tok, E = c.num_experts;
    const uint64_t most = (largest * k + K_MOE_BM - 1) / K_MOE_BM + E;
    for (uint32_t s = 0; s < v.num_schedules; s++) {
        struct plan_schedule sc;
        plan_get_schedule(&v, s, &sc);
        if (sc.kind != PLAN_SCHED_PREFILL)
            continue;
        buckets++;
        const uint64_t pairs = (uint64_t)sc.tokens * k;
        uint64_t blocks = (pairs + K_MOE_BM - 1) / K_MOE_BM + (pairs < E ? pairs : E);
        blocks = blocks < most ? blocks : most;
        for (uint32_t i = sc.first_op; i < sc.first_op + sc.op_count; i++) {
            struct plan_op op;
            const char *name = op_kernel(&v, i, &op);
            if (!name)
                continue;
            const int is_few = !strncmp(name, "k_moe_few_", 10);
            const int is_tc = !strncmp(name, "k_moe_gemm_", 11);
            if (!is_few && !is_tc)
                continue;
            few += is_few, tc += is_tc;
            const int down = strstr(name, "down") != NULL;
            const uint32_t N = down ? c.hidden_size : c.moe_inter;
            const uint32_t bn = is_few ? (down ? K_MOE_FEW_BN_DOWN : K_MOE_FEW_BN_UP)
                                       : (down ? K_MOE_TC_BN_DOWN : K_MOE_TC_BN_UP);
            const int is_narrow = strstr(name, "_narrow") != NULL;
            narrow += is_narrow;
            bad += is_few != (down && sc.tokens <= K_MOE_FEW_MAXT) ||
                   is_narrow != (!down && sc.tokens <= K_MOE_TC_NARROW_MAXT) ||
                   (is_narrow && op.smem != K_MOE_TC_SMEM(1, 1, c.hidden_size, 128)) ||
                   op.grid[0] != blocks ||
                   op.grid[1] != (N + bn - 1) / bn ||
                   op.block[0] != (is_few ? K_MOE_FEW_THREADS : K_MOE_TC_THREADS);
        }
    }
    CHECK(buckets > 0 && few > 0 && tc > 0 && narrow > 0 && bad == 0,
          "prefill expert GEMMs: k_moe_few_down_g128 in the buckets up to %u tokens (%u "
          "launches), k_moe_gemm_up_i4_narrow in those up to %u (%u), the tensor-core kernels "
          "otherwise (%u), grids sized per bucket (%u wrong)",
          K_MOE_FEW_MAXT, few, K_MOE_TC_NARROW_MAXT, narrow, tc, bad);
}

/* The dense INT4 projections of prefill chunks: k_gemm_i4_wg{S} in the buckets from
 * K_GEMM_WG_MINT + 1 to K_GEMM_WG_MAXT tokens for matrices of at least K_GEMM_WG_MINW weights,
 * with S = k_gemm_wg_split and its grid and shared memory; k_gemm_i4_g128 for the others up to
 * K_GEMM_I4_MAXT; nothing of them elsewhere, and with nibbles == 0 (planner --dense-prefill
 * cublas) no k_gemm_i4_wg. */
static void check_dense_prefill(const struct plan_view *pv, int nibbles)
{
    const struct plan_view v = *pv;
    uint32_t g128 = 0, wg = 0, bad = 0, wg_buckets = 0, pairs = 0;
    for (uint32_t s = 0; s < v.num_schedules; s++) {
        struct plan_schedule sc;
        plan_get_schedule(&v, s, &sc);
        if (sc.kind != PLAN_SCHED_PREFILL)
            continue;
        const uint32_t T = sc.tokens;
        uint32_t here = 0;
        for (uint32_t i = sc.first_op; i < sc.first_op + sc.op_count; i++) {
            struct plan_op op;
            const char *name = op_kernel(&v, i, &op);
            if (!name || strncmp(name, "k_gemm_i4_", 10))
                continue;
            struct k_gemm_i4_params p;
            memcpy(&p, v.params + op.param_offset, sizeof p);
            if (!strcmp(name, "k_gemm_i4_g128")) {
                g128++;
                bad += T > K_GEMM_I4_MAXT || (nibbles && T > K_GEMM_WG_MINT &&
                                              (uint64_t)p.N * p.K >= K_GEMM_WG_MINW);
                continue;
            }
            const uint32_t N2 = p.N2, S = k_gemm_wg_split(T, p.N + N2, p.K);
            const uint32_t bt = k_gemm_wg_tile(T);
            char want[32];
            snprintf(want, sizeof want, "k_gemm_i4_wg%u%s", S, bt == K_GEMM_WG_BT64 ? "_t64" : "");
            wg++, here++, pairs += N2 > 0;
            bad += !nibbles || T <= K_GEMM_WG_MINT || T > K_GEMM_WG_MAXT ||
                   (uint64_t)p.N * p.K < K_GEMM_WG_MINW || strcmp(name, want) ||
                   !K_GEMM_WG_OK(128u, p.N, p.K, S) ||
                   (N2 && ((uint64_t)N2 * p.K < K_GEMM_WG_MINW ||
                           !K_GEMM_WG_OK(128u, N2, p.K, S))) ||
                   op.grid[0] != (T + bt - 1) / bt ||
                   op.grid[1] != (p.N + N2) / K_GEMM_WG_BN || op.grid[2] != S ||
                   op.block[0] != K_GEMM_WG_THREADS || op.smem != K_GEMM_WG_SMEM_T(bt, p.K, S);
        }
        wg_buckets += here > 0;
        /* every bucket in the range has them: GDN in_proj, z, out_proj; attention q, o */
        bad += nibbles && T > K_GEMM_WG_MINT && T <= K_GEMM_WG_MAXT && here == 0;
    }
    CHECK(g128 > 0 && (wg > 0) == nibbles && (pairs > 0) == nibbles && bad == 0,
          "prefill dense INT4 projections%s: k_gemm_i4_g128 up to %u tokens (%u launches), "
          "k_gemm_i4_wg with the planner's split from %u to %u (%u launches in %u buckets, %u "
          "of them two matrices: GDN in_proj_qkv and in_proj_z), %u wrong",
          nibbles ? "" : " (--dense-prefill cublas)", K_GEMM_I4_MAXT, g128, K_GEMM_WG_MINT + 1,
          K_GEMM_WG_MAXT, wg, wg_buckets, pairs, bad);
}

/* planner --dense-prefill cublas: the large dense projections of every bucket past
 * K_GEMM_I4_MAXT go through cuBLAS */
static void check_dense_cublas(void)
{
    struct model_config c;
    model_config_default(&c);
    char err[FMT_ERR_LEN];
    size_t n;
    plan_dense_cublas = 1;
    uint8_t *p = make_plan(&c, "int4", 4096, 2048, &n, err);
    plan_dense_cublas = 0;
    struct plan_view v;
    if (!p || plan_read(&v, p, n, err) != FMT_OK) {
        CHECK(0, "plan with --dense-prefill cublas reads: %s", err);
        free(p);
        return;
    }
    check_dense_prefill(&v, 0);
    free(p);
}

static void check_bad_buckets(void)
{
    struct model_config c;
    model_config_default(&c);
    struct wt_format f = {PLAN_QUANT_BF16, 0, PLAN_QUANT_BF16};
    const struct {
        uint32_t n, b[3];
        const char *what;
    } bad[] = {{0, {0}, "no bucket"}, {2, {64, 16}, "descending"}, {2, {16, 8192}, "past max_seq"},
               {1, {0}, "a bucket of 0"}};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        struct pb b;
        char err[MODEL_ERR_LEN];
        if (pb_init(&b, &c, &f, 4096, err)) {
            CHECK(0, "pb_init: %s", err);
            return;
        }
        b.split_threshold = 256, b.n_split = 16;
        b.num_buckets = bad[i].n;
        memcpy(b.buckets, bad[i].b, sizeof bad[i].b);
        int rc = plan_emit_schedules(&b);
        CHECK(rc != 0 && strstr(b.err, "prefill buckets"), "prefill buckets, %s: refused (%s)",
              bad[i].what, b.err);
        pb_free(&b);
    }
}

int main(void)
{
    struct model_config c;
    char err[MODEL_ERR_LEN];
    model_config_default(&c);
    check_config("default", &c, "int4", 4096, 2048);
    check_config("default", &c, "bf16", 4096, 1024);
    check_config("default", &c, "int4:64", 262144, 2048);
    const char *tiny[] = {"test/data/config/tiny-a.json", "test/data/fixtures/tiny-a-fused/config.json"};
    for (size_t i = 0; i < sizeof tiny / sizeof tiny[0]; i++) {
        int rc = model_config_load(&c, tiny[i], err);
        CHECK(rc == 0, "%s reads", tiny[i]);
        if (!rc) {
            check_config(tiny[i], &c, "bf16", 512, 128);
            check_config(tiny[i], &c, "int4:32", 700, 300);
        }
    }
    check_ops_named();
    check_moe_decode();
    check_bad_buckets();
    check_dense_cublas();
    return test_done();
}
