/* test_gpu_rt.c — rt alone, on hand-built plans around the toy model of test/kern/rtk.h.
 *
 * Plans and weights images are written here with the real writers; the toy kernels follow the
 * step-state protocol of the model kernels, so rt's whole path is exercised: plan and image
 * checks, module load and kernel resolution, allocation, weight streaming with CRCs,
 * relocation, graphs, prefill chunking, run-ahead decoding from the host-mapped ring, the stop
 * rules, cuBLAS GEMM ops, synthetic weights. A CPU copy of the toy model gives the exact tokens
 * every run must produce. Then the failure paths: every injected driver failure of the load,
 * each bad input, with no device memory left behind. */
#include <math.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "../kern/fill.h"
#include "../rt/rt.h"
#include "../weights/wimage.h"
#include "gpu.h"
#include "kern/rtk.h"

#define VOCAB 1000
#define WN 1024                /* words of the toy weight tensor */
#define GM 64                  /* GEMM size of the prefill schedule's cuBLAS op */
#define TMP "build/test/gpu_rt"

struct fix {
    uint32_t max_seq;
    uint64_t arena_extra;       /* added to the arena size (to ask for too much memory) */
    const char *kernel_b;       /* name of the second decode kernel (a wrong one: missing kernel) */
    int only_arch;              /* embed only this arch (0: the device's) */
    uint32_t words[WN];         /* the weight tensor written to the image */
};

/* ---- the plan ---------------------------------------------------------------------------- */

struct pl {
    char strings[4096];
    uint32_t ns;
    struct plan_region reg[3];
    struct plan_buffer buf[16];
    struct plan_weight w[3];
    struct plan_kernel k[3];
    struct plan_op op[16];
    struct plan_reloc rel[64];
    struct plan_schedule sc[4];
    uint8_t params[4096];
    uint32_t nb, nop, nrel, nsc, np;
};

static uint32_t str(struct pl *p, const char *s)
{
    uint32_t at = p->ns;
    memcpy(p->strings + at, s, strlen(s) + 1);
    p->ns += (uint32_t)strlen(s) + 1;
    return at;
}

static uint32_t buffer(struct pl *p, const char *name, uint32_t region, uint32_t sched, uint64_t off,
                       uint64_t size)
{
    p->buf[p->nb] = (struct plan_buffer){str(p, name), region, sched, 0, off, size,
                                         region == 2 ? 0 : 0, region == 2 ? 2 : 0xFFFFFFFFu};
    return p->nb++;
}

static void reloc(struct pl *p, uint32_t field, uint32_t base, uint32_t index, uint64_t off)
{
    p->rel[p->nrel++] = (struct plan_reloc){field, base, index, 0, off};
}

/* one toy kernel op; arena offsets of its buffers are given directly */
static void kop(struct pl *p, const char *name, uint32_t kernel, uint64_t act_off, int prefill)
{
    struct t_params t = {.wn = WN, .vocab = VOCAB};
    uint32_t at = (p->np + 15) & ~15u;
    memcpy(p->params + at, &t, sizeof t);
    p->op[p->nop] = (struct plan_op){.name = str(p, name), .kind = PLAN_OP_KERNEL, .kernel = kernel,
                                     .grid = {1, 1, 1}, .block = {32, 1, 1}, .param_offset = at,
                                     .param_size = sizeof t, .reloc_first = p->nrel};
    reloc(p, offsetof(struct t_params, step), PLAN_BASE_ARENA, 0, 0);
    reloc(p, offsetof(struct t_params, tokens), PLAN_BASE_ARENA, 0, 256);
    reloc(p, offsetof(struct t_params, state), PLAN_BASE_ARENA, 0, 512);
    reloc(p, offsetof(struct t_params, act), PLAN_BASE_ARENA, 0, act_off);
    reloc(p, offsetof(struct t_params, weights), PLAN_BASE_WEIGHT, 0, 0);
    reloc(p, offsetof(struct t_params, ring), PLAN_BASE_RING, 0, 0);
    p->op[p->nop].reloc_count = p->nrel - p->op[p->nop].reloc_first;
    p->op[p->nop].bytes = 64, p->op[p->nop].flops = 1;
    (void)prefill;
    p->nop++;
    p->np = at + sizeof t;
}

/* C (GM x GM, bf16, overlay) = A B from the two bf16 weights, through cuBLAS */
static void gemm_op(struct pl *p, uint64_t c_off)
{
    struct plan_gemm g = {.m = GM, .n = GM, .k = GM, .lda = GM, .ldb = GM, .ldc = GM, .trans_a = 1,
                          .dtype_ab = PLAN_DTYPE_BF16, .dtype_c = PLAN_DTYPE_BF16, .alpha = 1.0f};
    uint32_t at = (p->np + 15) & ~15u;
    memcpy(p->params + at, &g, sizeof g);
    p->op[p->nop] = (struct plan_op){.name = str(p, "gemm"), .kind = PLAN_OP_GEMM,
                                     .kernel = PLAN_NO_KERNEL, .grid = {1, 1, 1}, .block = {1, 1, 1},
                                     .param_offset = at, .param_size = sizeof g, .reloc_first = p->nrel};
    reloc(p, offsetof(struct plan_gemm, a), PLAN_BASE_WEIGHT, 1, 0);
    reloc(p, offsetof(struct plan_gemm, b), PLAN_BASE_WEIGHT, 2, 0);
    reloc(p, offsetof(struct plan_gemm, c), PLAN_BASE_ARENA, 0, c_off);
    p->op[p->nop].reloc_count = 3;
    p->nop++;
    p->np = at + sizeof g;
}

static uint8_t *read_image(const char *arch, size_t *n)
{
    char path[256];
    snprintf(path, sizeof path, "build/kern/test/%s.cubin", arch);
    return (uint8_t *)test_read_file(path, n);
}

/* Arena: step @0, tokens_in @256 (64 ids), state @512, cublas.workspace @1024 (1 MiB),
 * overlay @(1 MiB + 1024): decode act, prefill gemm output. */
static uint8_t *make_plan(const struct fix *f, int sm, size_t *len)
{
    static struct pl p;
    memset(&p, 0, sizeof p);
    p.ns = 1;
    const uint64_t ws = 1024, ov = ws + (1u << 20);
    p.reg[0] = (struct plan_region){str(&p, "persistent"), PLAN_REGION_PERSISTENT, 0, 1024};
    p.reg[1] = (struct plan_region){str(&p, "workspace"), PLAN_REGION_WORKSPACE, ws, 1u << 20};
    p.reg[2] = (struct plan_region){str(&p, "overlay"), PLAN_REGION_OVERLAY, ov, 2 * GM * GM + 256};
    buffer(&p, "step", 0, PLAN_ALL_SCHEDULES, 0, sizeof(struct k_step));
    buffer(&p, "tokens_in", 0, PLAN_ALL_SCHEDULES, 256, 256);
    buffer(&p, "t.state", 0, PLAN_ALL_SCHEDULES, 512, 8);
    buffer(&p, "cublas.workspace", 1, PLAN_ALL_SCHEDULES, ws, 1u << 20);
    p.w[0] = (struct plan_weight){str(&p, "t.words"), PLAN_DTYPE_I32, 0, 0, 1, 0, {WN}, 4 * WN};
    p.w[1] = (struct plan_weight){str(&p, "t.a"), PLAN_DTYPE_BF16, 0, 0, 2, 0x00003D80u, {GM, GM}, 2 * GM * GM};
    p.w[2] = (struct plan_weight){str(&p, "t.b"), PLAN_DTYPE_BF16, 0, 0, 2, 0x00003D80u, {GM, GM}, 2 * GM * GM};
    p.k[0] = (struct plan_kernel){str(&p, "t_prefill"), sizeof(struct t_params)};
    p.k[1] = (struct plan_kernel){str(&p, "t_decode_a"), sizeof(struct t_params)};
    p.k[2] = (struct plan_kernel){str(&p, f->kernel_b ? f->kernel_b : "t_decode_b"), sizeof(struct t_params)};
    /* decode: two ops passing an activation through the overlay */
    p.sc[p.nsc++] = (struct plan_schedule){str(&p, "decode"), PLAN_SCHED_DECODE, 1, p.nop, 2, 1, f->max_seq, 0};
    buffer(&p, "t.act", 2, 0, ov, 8);
    kop(&p, "decode_a", 1, ov, 0);
    kop(&p, "decode_b", 2, ov, 0);
    /* prefill buckets 16 and 64: a GEMM (checked separately), then the fold */
    for (uint32_t b = 16; b <= 64; b *= 4) {
        char nm[32];
        snprintf(nm, sizeof nm, "prefill_%u", b);
        p.sc[p.nsc] = (struct plan_schedule){str(&p, nm), PLAN_SCHED_PREFILL, b, p.nop, 2, 1, f->max_seq, 0};
        buffer(&p, b == 16 ? "t.gemm16" : "t.gemm64", 2, p.nsc, ov + 256, 2 * GM * GM);
        p.buf[p.nb - 1].last_op = 1;
        gemm_op(&p, ov + 256);
        kop(&p, "prefill", 0, ov, 1);
        p.nsc++;
    }
    /* images: this device's arch (or the one asked for) */
    static char arch[16];
    int a = f->only_arch ? f->only_arch : sm;
    snprintf(arch, sizeof arch, "sm_%d%s", a, a == 90 ? "a" : "");
    size_t isz;
    uint8_t *img = read_image(arch, &isz);
    struct plan_image im = {(uint32_t)a, PLAN_IMAGE_CUBIN, 0, isz};
    struct plan_content c = {.strings = p.strings, .strings_size = p.ns, .regions = p.reg,
                             .num_regions = 3, .buffers = p.buf, .num_buffers = p.nb, .weights = p.w,
                             .num_weights = 3, .images = &im, .num_images = 1, .image_data = img,
                             .image_data_size = isz, .kernels = p.k, .num_kernels = 3,
                             .params = p.params, .params_size = p.np, .relocs = p.rel,
                             .num_relocs = p.nrel, .schedules = p.sc, .num_schedules = p.nsc,
                             .ops = p.op, .num_ops = p.nop};
    model_config_default(&c.id.model);
    c.id.model.vocab_size = VOCAB;
    c.id.model.num_eos = 0, c.id.model.eos_ids[0] = 0;
    c.id.max_seq = f->max_seq;
    c.id.num_buckets = 2, c.id.buckets[0] = 16, c.id.buckets[1] = 64;
    c.id.quant = c.id.lm_head_quant = PLAN_QUANT_BF16;
    c.id.num_archs = 1, c.id.archs[0] = (uint32_t)a;
    c.id.arena_bytes = ov + 2 * GM * GM + 256 + f->arena_extra;
    c.id.weights_bytes = 4 * WN + 2 * 2 * GM * GM;
    c.id.manifest_hash = wt_manifest_hash_plan(p.strings, p.w, 3);
    uint8_t *out = NULL;
    char err[FMT_ERR_LEN];
    if (plan_write(&c, &out, len, err) != FMT_OK) {
        printf("FAIL test plan refused: %s\n", err);
        exit(1);
    }
    free(img);
    return out;
}

/* ---- weights image and the CPU model ------------------------------------------------------ */

static uint16_t gemm_a[GM * GM], gemm_b[GM * GM];

static int write_image(const struct fix *f, const char *path)
{
    struct wt_config cfg = {.quant = PLAN_QUANT_BF16, .lm_head_quant = PLAN_QUANT_BF16};
    model_config_default(&cfg.model);
    cfg.model.vocab_size = VOCAB;
    cfg.model.num_eos = 0, cfg.model.eos_ids[0] = 0;
    struct wt_tensor_desc d[3] = {
        {"t.words", PLAN_DTYPE_I32, 0, 0, 1, {WN}, 4 * WN, 0, 0},
        {"t.a", PLAN_DTYPE_BF16, 0, 0, 2, {GM, GM}, 2 * GM * GM, 0, 0},
        {"t.b", PLAN_DTYPE_BF16, 0, 0, 2, {GM, GM}, 2 * GM * GM, 0, 0},
    };
    char err[FMT_ERR_LEN];
    struct wt_writer *w = wt_writer_open(path, &cfg, d, 3, err);
    if (!w || wt_writer_write(w, f->words, 4 * WN, err) || wt_writer_write(w, gemm_a, sizeof gemm_a, err) ||
        wt_writer_write(w, gemm_b, sizeof gemm_b, err) || wt_writer_close(w, err)) {
        printf("FAIL writing the test image: %s\n", err);
        return -1;
    }
    return 0;
}

/* The tokens the toy model must produce (stop rules included). */
static uint32_t cpu_generate(const uint32_t *words, const int32_t *prompt, uint32_t n, uint32_t max_seq,
                             const struct rt_sampling *s, int32_t *out)
{
    uint64_t st = 0;
    uint32_t pos = 0, k = 0;
    for (uint32_t i = 0; i < n; i++, pos++)
        st = t_prefill_fold(st, prompt[i], pos, words[t_widx(st, WN)]);
    for (;;) {
        int32_t tok = t_sample(st, VOCAB);
        out[k++] = tok;
        int stop = k >= s->max_new || pos >= max_seq;
        for (uint32_t i = 0; i < s->n_stop; i++)
            stop |= s->stop_ids[i] == tok;
        if (stop)
            return k;
        st = t_decode_fold(st, tok, pos++);
    }
}

struct sink {
    int32_t *tok;
    uint32_t n, cap, stop_after;
};

static int on_token(void *ctx, int32_t t)
{
    struct sink *s = ctx;
    if (s->n < s->cap)
        s->tok[s->n] = t;
    s->n++;
    return s->stop_after && s->n >= s->stop_after;
}

static struct rt *open_rt(const char *plan, const char *weights, int synthetic, int no_graphs,
                          enum rt_status *st, char *err)
{
    struct rt *r = NULL;
    struct rt_options o = {.plan_path = plan, .weights_path = weights, .synthetic = synthetic,
                           .synthetic_seed = 99, .no_graphs = no_graphs};
    *st = rt_open(&r, &o, err);
    return r;
}

static void save(const char *path, const uint8_t *buf, size_t n)
{
    FILE *f = fopen(path, "wb");
    if (!f || fwrite(buf, 1, n, f) != n) {
        printf("FAIL cannot write %s\n", path);
        exit(1);
    }
    fclose(f);
}

/* ---- the tests ------------------------------------------------------------------------------- */

static struct fix F;
static int32_t want[20100], got_tok[20100];

static void gen_check(struct rt *r, const char *what, const uint32_t *words, const int32_t *prompt,
                      uint32_t n, const struct rt_sampling *s, uint32_t stop_after, uint32_t max_seq,
                      uint32_t finish)
{
    char err[RT_ERR_LEN] = "";
    struct sink k = {got_tok, 0, 20100, stop_after};
    struct rt_stats st;
    enum rt_status e = rt_generate(r, prompt, n, s, on_token, &k, &st, err);
    uint32_t nw = cpu_generate(words, prompt, n, max_seq, s, want);
    uint32_t cmp = k.n < nw ? k.n : nw;
    int same = e == RT_OK && !memcmp(got_tok, want, 4 * cmp) && st.new_tokens == k.n;
    if (finish == RT_FINISH_CALLER)
        same &= k.n == stop_after;
    else if (finish == RT_FINISH_CONTEXT)
        same &= k.n + 1 >= nw; /* the host stops one token short of the device's last */
    else
        same &= k.n == nw;
    CHECK(same && st.finish == finish, "%s: %u tokens as the CPU model, finish %u (want %u)%s%s", what,
          k.n, st.finish, finish, e ? ": " : "", err);
}

static void generation(struct rt *r, const uint32_t *words)
{
    int32_t prompt[20000];
    unsigned long long s = 5;
    for (int i = 0; i < 20000; i++)
        prompt[i] = (int32_t)(test_rand(&s) % VOCAB);
    struct rt_sampling greedy = {.max_new = 50, .top_p = 1.0f};
    gen_check(r, "100-token prompt (two chunks), 50 new", words, prompt, 100, &greedy, 0, F.max_seq,
              RT_FINISH_LENGTH);
    gen_check(r, "10-token prompt (the 16 bucket)", words, prompt + 7, 10, &greedy, 0, F.max_seq,
              RT_FINISH_LENGTH);
    gen_check(r, "the same request again, same tokens", words, prompt + 7, 10, &greedy, 0, F.max_seq,
              RT_FINISH_LENGTH);
    /* a stop id: the first token that does not occur earlier in the output */
    struct rt_sampling stop = greedy;
    cpu_generate(words, prompt, 100, F.max_seq, &greedy, want);
    uint32_t at = 9;
    for (int dup = 1; dup && at < 49; at += dup) {
        dup = 0;
        for (uint32_t i = 0; i < at; i++)
            dup |= want[i] == want[at];
    }
    stop.n_stop = 1, stop.stop_ids[0] = want[at];
    gen_check(r, "a stop id ends generation on it", words, prompt, 100, &stop, 0, F.max_seq, RT_FINISH_STOP);
    /* the exact stop: after the stop id, the steps already queued did nothing, so the state
     * holds the prompt and every token before the stop id, and nothing after */
    uint64_t state = 0, want_state = 0;
    char serr[RT_ERR_LEN] = "";
    enum rt_status se = rt_read_buffer(r, "t.state", 0, &state, 8, serr);
    uint32_t pos = 0;
    for (uint32_t i = 0; i < 100; i++, pos++)
        want_state = t_prefill_fold(want_state, prompt[i], pos, words[t_widx(want_state, WN)]);
    for (uint32_t i = 0; i < at; i++)
        want_state = t_decode_fold(want_state, want[i], pos++);
    CHECK(!se && state == want_state, "after a stop id the state holds exactly the tokens before it "
          "(queued steps were no-ops)%s%s", se ? ": " : "", serr);
    gen_check(r, "the caller stops after 5", words, prompt, 100, &greedy, 5, F.max_seq, RT_FINISH_CALLER);
    /* a stop decided by the host: steps already queued (at most RT_RUNAHEAD) still ran; the
     * next request starts from a reset state, which the good requests below show */
    se = rt_read_buffer(r, "t.state", 0, &state, 8, serr);
    cpu_generate(words, prompt, 100, F.max_seq, &greedy, want);
    want_state = 0, pos = 0;
    for (uint32_t i = 0; i < 100; i++, pos++)
        want_state = t_prefill_fold(want_state, prompt[i], pos, words[t_widx(want_state, WN)]);
    int within = 0;
    for (uint32_t i = 0; i < 5 + 4 && !within; i++) {
        want_state = t_decode_fold(want_state, want[i], pos++);
        within = i >= 3 && state == want_state; /* token 5 came from the step fed token 4 */
    }
    CHECK(!se && within, "after the caller stops at 5 tokens the state has consumed 4 to 9 of them "
          "(the run-ahead bound)%s%s", se ? ": " : "", serr);
    struct rt_sampling one = {.max_new = 1, .top_p = 1.0f};
    gen_check(r, "max_new 1: only the prefill's token", words, prompt, 30, &one, 0, F.max_seq, RT_FINISH_LENGTH);

    /* 10,000 decode steps: no allocation, one synchronisation for the whole request */
    struct rt_sampling many = {.max_new = 10000, .top_p = 1.0f};
    uint64_t a0, s0, a1, s1;
    rt_cudrv_counts(&a0, &s0);
    struct sink k = {got_tok, 0, 20100, 0};
    struct rt_stats st;
    char err[RT_ERR_LEN] = "";
    enum rt_status e = rt_generate(r, prompt, 20, &many, on_token, &k, &st, err);
    rt_cudrv_counts(&a1, &s1);
    uint32_t nw = cpu_generate(words, prompt, 20, F.max_seq, &many, want);
    CHECK(e == RT_OK && k.n == 10000 && nw == 10000 && !memcmp(got_tok, want, 4 * 10000),
          "10,000 decode steps give the CPU model's tokens%s%s", e ? ": " : "", err);
    CHECK(a1 == a0, "no allocation during 10,000 decode steps (%llu)", (unsigned long long)(a1 - a0));
    CHECK(s1 - s0 == 1, "one host synchronisation for the whole request, none per step (%llu)",
          (unsigned long long)(s1 - s0));
    printf("# toy decode: %.1f us per step (graph launch + ring read), prefill %.2f ms\n",
           1e3 * st.decode_ms / (k.n > 1 ? k.n - 1 : 1), st.prefill_ms);

    /* bad requests are refused and do not disturb the next one */
    int32_t bad[3] = {1, VOCAB, 2};
    e = rt_generate(r, bad, 3, &greedy, on_token, &k, &st, err);
    CHECK(e == RT_ERR_ARG && strstr(err, "outside the vocabulary"), "token id %d is refused: %s", VOCAB, err);
    e = rt_generate(r, prompt, F.max_seq, &greedy, on_token, &k, &st, err);
    CHECK(e == RT_ERR_CONTEXT, "a prompt of max_seq tokens is refused: %s", err);
    gen_check(r, "a good request right after the bad ones", words, prompt + 7, 10, &greedy, 0,
              F.max_seq, RT_FINISH_LENGTH);
}

/* Teacher forcing through the diagnostic calls: the state after a prompt (in two calls) and
 * three forced decode tokens equals the CPU fold. */
static void diagnostics(struct rt *r, const uint32_t *words)
{
    char err[RT_ERR_LEN] = "";
    int32_t prompt[90], forced[3] = {17, 4, 999};
    for (int i = 0; i < 90; i++)
        prompt[i] = (i * 31 + 5) % VOCAB;
    struct rt_sampling greedy = {.max_new = 1000, .top_p = 1.0f};
    enum rt_status e = rt_reset(r, &greedy, err);
    if (!e)
        e = rt_prefill_logits(r, prompt, 70, NULL, err);
    if (!e)
        e = rt_prefill_logits(r, prompt + 70, 20, NULL, err);
    for (int i = 0; i < 3 && !e; i++)
        e = rt_decode_logits(r, forced[i], NULL, err);
    uint64_t got = 0, want_s = 0;
    if (!e)
        e = rt_read_buffer(r, "t.state", 0, &got, 8, err);
    uint32_t pos = 0;
    for (int i = 0; i < 90; i++, pos++)
        want_s = t_prefill_fold(want_s, prompt[i], pos, words[t_widx(want_s, WN)]);
    for (int i = 0; i < 3; i++)
        want_s = t_decode_fold(want_s, forced[i], pos++);
    CHECK(!e && got == want_s, "teacher forcing: prompt in two calls and 3 forced tokens give the CPU "
          "state%s%s", e ? ": " : "", err);
}

/* The benchmark's timing calls: ops one by one with their names and kernels, and the decode
 * graph with and without one kernel's ops; then a new sequence generates correctly again. */
static void profiling(struct rt *r, const uint32_t *words)
{
    char err[RT_ERR_LEN] = "";
    struct rt_op_time ops[8];
    uint32_t n = 0;
    enum rt_status e = rt_profile(r, "decode", 3, ops, 8, &n, err);
    int ok = !e && n == 2 && !strcmp(ops[0].name, "decode_a") && !strcmp(ops[1].kernel, "t_decode_b") &&
             ops[0].us > 0 && ops[1].us > 0;
    CHECK(ok, "rt_profile: 2 decode ops named with their kernels, %.1f and %.1f us%s%s",
          n == 2 ? ops[0].us : 0.0, n == 2 ? ops[1].us : 0.0, e ? ": " : "", err);
    double all = 0, without = 0;
    e = rt_profile_drop(r, "decode", "t_decode_b", 5, &all, &without, err);
    CHECK(!e && all > 0 && without > 0 && isfinite(all) && isfinite(without),
          "rt_profile_drop: the decode graph %.1f us, without t_decode_b %.1f us%s%s", all, without,
          e ? ": " : "", err);
    e = rt_profile_drop(r, "no-such-schedule", "t_decode_b", 5, &all, &without, err);
    CHECK(e == RT_ERR_ARG, "rt_profile_drop refuses an unknown schedule: %s", err);
    e = rt_profile_drop(r, "decode", "t_decode_b", 0, &all, &without, err);
    CHECK(e == RT_ERR_ARG, "rt_profile_drop refuses zero repetitions: %s", err);
    e = rt_profile(r, "no-such-schedule", 3, ops, 8, &n, err);
    CHECK(e == RT_ERR_ARG, "rt_profile refuses an unknown schedule: %s", err);
    /* the timeline: refused with a pointer to KERN_TRACE=1 on plain images; on images built
     * with it (tools/gpu-check runs this test so too), one CTA each of decode_a then decode_b */
    struct rt_trace_op tr[8];
    e = rt_trace(r, "decode", tr, 8, &n, err);
    if (e)
        CHECK(e == RT_ERR_ARG && strstr(err, "KERN_TRACE=1"), "rt_trace on images without timeline records "
              "says how to get them: %s", err);
    else
        CHECK(n == 2 && tr[0].name && !strcmp(tr[0].name, "decode_a") && tr[1].kernel &&
                  !strcmp(tr[1].kernel, "t_decode_b") && tr[0].ctas == 1 && tr[1].ctas == 1 &&
                  tr[0].enter == 0 && tr[0].go >= tr[0].enter && tr[1].go >= tr[0].go && tr[1].go_last >= tr[1].go,
              "rt_trace: decode_a then t_decode_b, one CTA each, in order (go %.2f, %.2f us)",
              n == 2 ? tr[0].go : -1.0, n == 2 ? tr[1].go : -1.0);
    e = rt_trace(r, "no-such-schedule", tr, 8, &n, err);
    CHECK(e == RT_ERR_ARG, "rt_trace refuses an unknown schedule: %s", err);
    int32_t prompt[12];
    for (int i = 0; i < 12; i++)
        prompt[i] = (i * 13 + 3) % VOCAB;
    struct rt_sampling greedy = {.max_new = 16, .top_p = 1.0f};
    gen_check(r, "after profiling", words, prompt, 12, &greedy, 0, F.max_seq, RT_FINISH_LENGTH);
}

static void gemm_check(struct rt *r)
{
    uint16_t c[GM * GM];
    char err[RT_ERR_LEN];
    enum rt_status e = rt_read_buffer(r, "t.gemm64", 0, c, sizeof c, err);
    double worst = 0;
    for (int i = 0; i < GM && !e; i++)
        for (int j = 0; j < GM; j++) {
            double acc = 0; /* C col-major = A^T B, A and B col-major 64 x 64 */
            for (int k = 0; k < GM; k++) {
                uint32_t ua = (uint32_t)gemm_a[k + GM * i] << 16, ub = (uint32_t)gemm_b[k + GM * j] << 16;
                float fa, fb;
                memcpy(&fa, &ua, 4), memcpy(&fb, &ub, 4);
                acc += (double)fa * fb;
            }
            uint32_t uc = (uint32_t)c[i + GM * j] << 16;
            float fc;
            memcpy(&fc, &uc, 4);
            double d = fabs(fc - acc) / (fabs(acc) + 1e-3);
            worst = d > worst ? d : worst;
        }
    CHECK(!e && worst < 1e-2, "the cuBLAS GEMM op matches the CPU (worst relative error %.1e)%s%s",
          worst, e ? ": " : "", e ? err : "");
}

static void expect_fail(const char *what, const char *plan, const char *weights, enum rt_status want_st,
                        const char *needle)
{
    char err[RT_ERR_LEN] = "";
    enum rt_status st;
    struct rt *r = open_rt(plan, weights, 0, 0, &st, err);
    CHECK(!r && st == want_st && strstr(err, needle), "%s: %s (%s)", what, rt_status_name(st), err);
    rt_close(r);
}

static void bad_inputs(struct gpu *g)
{
    size_t n;
    uint8_t *p;
    struct fix f = F;
    f.only_arch = g->sm == 80 ? 86 : 80;
    p = make_plan(&f, g->sm, &n);
    save(TMP "/arch.bin", p, n), free(p);
    expect_fail("a plan for another GPU", TMP "/arch.bin", TMP "/w.bin", RT_ERR_ARCH, "re-run the planner");
    f = F, f.kernel_b = "t_missing";
    p = make_plan(&f, g->sm, &n);
    save(TMP "/kern.bin", p, n), free(p);
    expect_fail("a plan naming a kernel the image lacks", TMP "/kern.bin", TMP "/w.bin", RT_ERR_KERNEL, "t_missing");
    f = F, f.arena_extra = 1ull << 50;
    p = make_plan(&f, g->sm, &n);
    save(TMP "/huge.bin", p, n), free(p);
    expect_fail("an arena larger than the GPU", TMP "/huge.bin", TMP "/w.bin", RT_ERR_NOMEM, "are free");
    save(TMP "/junk.bin", (const uint8_t *)"not a plan at all", 17);
    expect_fail("a file that is not a plan", TMP "/junk.bin", TMP "/w.bin", RT_ERR_PLAN, "re-run");
    expect_fail("a missing plan", TMP "/nope.bin", TMP "/w.bin", RT_ERR_PLAN, "nope.bin");
    expect_fail("a missing weights image", TMP "/plan.bin", TMP "/nope.bin", RT_ERR_WEIGHTS, "nope.bin");

    /* images that do not fit the plan */
    size_t wl;
    uint8_t *w = (uint8_t *)test_read_file(TMP "/w.bin", &wl);
    save(TMP "/trunc.bin", w, wl - 100);
    expect_fail("a truncated weights image", TMP "/plan.bin", TMP "/trunc.bin", RT_ERR_WEIGHTS, "trunc.bin");
    struct wt_view v;
    char e2[FMT_ERR_LEN];
    wt_read(&v, w, wl, wl, e2);
    w[v.data_offset + 10] ^= 0x40;
    save(TMP "/crc.bin", w, wl);
    expect_fail("a damaged tensor (CRC)", TMP "/plan.bin", TMP "/crc.bin", RT_ERR_WEIGHTS, "t.words");
    free(w);
    struct fix other = F;
    other.words[0] ^= 1;
    write_image(&other, TMP "/other.bin");
    /* an image whose tensors differ from the plan's manifest */
    {
        struct wt_config cfg = {.quant = PLAN_QUANT_BF16, .lm_head_quant = PLAN_QUANT_BF16};
        model_config_default(&cfg.model);
        cfg.model.vocab_size = VOCAB, cfg.model.num_eos = 0, cfg.model.eos_ids[0] = 0;
        struct wt_tensor_desc d[1] = {{"t.words", PLAN_DTYPE_I32, 0, 0, 1, {WN / 2}, 2 * WN, 0, 0}};
        char we[FMT_ERR_LEN];
        struct wt_writer *ww = wt_writer_open(TMP "/shape.bin", &cfg, d, 1, we);
        if (ww && !wt_writer_write(ww, F.words, 2 * WN, we) && !wt_writer_close(ww, we))
            expect_fail("an image with other tensors than the plan's", TMP "/plan.bin", TMP "/shape.bin",
                        RT_ERR_MISMATCH, "does not hold the tensors the plan reads");
        cfg.model.hidden_size = 1024; /* another model altogether */
        ww = wt_writer_open(TMP "/model.bin", &cfg, d, 1, we);
        if (ww && !wt_writer_write(ww, F.words, 2 * WN, we) && !wt_writer_close(ww, we))
            expect_fail("an image of another model", TMP "/plan.bin", TMP "/model.bin", RT_ERR_MISMATCH,
                        "hidden_size differs");
    }
    /* the same manifest, other values: loads (a manifest describes shapes, not values) */
    char err[RT_ERR_LEN];
    enum rt_status st;
    struct rt *r = open_rt(TMP "/plan.bin", TMP "/other.bin", 0, 0, &st, err);
    CHECK(r && st == RT_OK, "an image with the same manifest and other values loads");
    rt_close(r);
    f = F, f.max_seq = F.max_seq + 1; /* another identity, same manifest: still fine for rt */
    p = make_plan(&f, g->sm, &n);
    save(TMP "/seq.bin", p, n), free(p);
    r = open_rt(TMP "/seq.bin", TMP "/w.bin", 0, 0, &st, err);
    CHECK(r && st == RT_OK, "a plan of another max_seq over the same weights loads");
    rt_close(r);
}

/* Fail every driver call of a successful load in turn: each must give a status and a message,
 * and leave no device memory behind. */
static void fault_injection(struct gpu *g, uint32_t calls)
{
    size_t free0, free1, total;
    uint32_t bad = 0, leaked = 0, first_bad = 0;
    char err[RT_ERR_LEN], first_err[RT_ERR_LEN] = "";
    CU(g, cuMemGetInfo(&free0, &total));
    for (uint32_t k = 1; k <= calls; k++) {
        struct rt *r = NULL;
        struct rt_options o = {.plan_path = TMP "/plan.bin", .weights_path = TMP "/w.bin", .fail_call = k};
        enum rt_status st = rt_open(&r, &o, err);
        if (r || st == RT_OK || !strstr(err, "injected")) {
            if (!bad++)
                first_bad = k, snprintf(first_err, sizeof first_err, "%s", err);
        }
        rt_close(r);
        CU(g, cuMemGetInfo(&free1, &total));
        if (free1 + (2u << 20) < free0)
            leaked++;
    }
    CHECK(bad == 0, "each of the load's %u driver calls, failed in turn, gives an error naming it "
          "(first bad: call %u: %s)", calls, first_bad, first_err);
    CHECK(leaked == 0, "no device memory is left behind after any failed load (%u leaks)", leaked);
}

int main(void)
{
    struct gpu g;
    if (gpu_open(&g))
        return test_skip("no CUDA device");
    mkdir(TMP, 0755);
    unsigned long long s = 11;
    for (int i = 0; i < WN; i++)
        F.words[i] = (uint32_t)test_rand(&s);
    for (int i = 0; i < GM * GM; i++) {
        gemm_a[i] = k_fill_bf16_value(1, (uint64_t)i, 0.5f, 0.0f);
        gemm_b[i] = k_fill_bf16_value(2, (uint64_t)i, 0.5f, 0.0f);
    }
    F.max_seq = 20000;
    size_t n;
    uint8_t *p = make_plan(&F, g.sm, &n);
    save(TMP "/plan.bin", p, n), free(p);
    if (write_image(&F, TMP "/w.bin"))
        return test_done();

    char err[RT_ERR_LEN] = "";
    enum rt_status st;
    struct rt *r = open_rt(TMP "/plan.bin", TMP "/w.bin", 0, 0, &st, err);
    CHECK(r != NULL, "plan and weights load%s%s", r ? "" : ": ", err);
    if (!r)
        return test_done();
    struct rt_info info;
    rt_get_info(r, &info);
    printf("# loaded in %.1f ms: arena %llu bytes, weights %llu bytes, %u driver calls, %s\n",
           info.load_ms, (unsigned long long)info.arena_bytes, (unsigned long long)info.weights_bytes,
           info.load_calls, info.device_name);
    generation(r, F.words);
    gemm_check(r);
    diagnostics(r, F.words);
    profiling(r, F.words);
    uint32_t calls = info.load_calls;
    rt_close(r);

    /* ops one by one instead of graphs: the same tokens */
    r = open_rt(TMP "/plan.bin", TMP "/w.bin", 0, 1, &st, err);
    CHECK(r != NULL, "loads without graphs%s%s", r ? "" : ": ", err);
    if (r) {
        struct rt_sampling greedy = {.max_new = 64, .top_p = 1.0f};
        int32_t prompt[40];
        for (int i = 0; i < 40; i++)
            prompt[i] = i * 7 % VOCAB;
        gen_check(r, "without graphs", F.words, prompt, 40, &greedy, 0, F.max_seq, RT_FINISH_LENGTH);
        rt_close(r);
    }
    /* synthetic weights: the words are k_fill_u32 of the seed (tensor 0: seed ^ 0) */
    r = open_rt(TMP "/plan.bin", NULL, 1, 0, &st, err);
    CHECK(r != NULL, "loads with synthetic weights%s%s", r ? "" : ": ", err);
    if (r) {
        static uint32_t syn[WN];
        for (int i = 0; i < WN; i++)
            syn[i] = k_fill_u32_value(99, (uint64_t)i);
        struct rt_sampling greedy = {.max_new = 32, .top_p = 1.0f};
        int32_t prompt[5] = {1, 2, 3, 4, 5};
        gen_check(r, "synthetic weights follow the seed", syn, prompt, 5, &greedy, 0, F.max_seq,
                  RT_FINISH_LENGTH);
        rt_close(r);
    }
    /* a small context: generation ends at the context's end */
    struct fix small = F;
    small.max_seq = 80;
    p = make_plan(&small, g.sm, &n);
    save(TMP "/small.bin", p, n), free(p);
    r = open_rt(TMP "/small.bin", TMP "/w.bin", 0, 0, &st, err);
    if (r) {
        int32_t prompt[70];
        for (int i = 0; i < 70; i++)
            prompt[i] = i;
        struct rt_sampling greedy = {.max_new = 100, .top_p = 1.0f};
        F.max_seq = 80;
        gen_check(r, "a 70-token prompt in an 80-token context", F.words, prompt, 70, &greedy, 0, 80,
                  RT_FINISH_CONTEXT);
        F.max_seq = 20000;
        rt_close(r);
    }
    bad_inputs(&g);
    fault_injection(&g, calls);
    gpu_close(&g);
    return test_done();
}
