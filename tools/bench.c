/* bench.c — `make bench`: the ceilings and the pieces measured so far, one table at the end.
 *
 * Host: CRC32C (rt checks every weight tensor with it while streaming the image from disk, so
 * it must outrun the disk) and JSON parsing (tokenizer.json and config.json at start-up, every
 * request line in rt_host). Device, when there is one: the device-to-device copy bandwidth
 * (the decode roofline's denominator, PERF.md), and the synthetic fill kernel as a ratio of
 * it. Inputs are random, never zeros; each figure is the median of several timed runs after
 * a warm-up. Then the model: Qwen3.5-35B-A3B from the default plan (max_seq 8192) with
 * synthetic weights: its load time (rt_open, the weights filled on the device), arena and weight
 * bytes, decode tok/s at contexts 128, 1024 and 4096 as a share of the roofline
 * (copy bandwidth over the bytes the plan says a token moves), prefill tok/s at 128, 1341 and
 * 4096 tokens against the GEMM ceiling (and 32-, 128-, 256- and 512-token prompts as medians of
 * three, also with the prefill side branches run in order on one stream and on a plan without
 * k_gemm_i4_wg), and per-kernel tables of one
 * long-context decode step (ops timed one by one, and each kernel's ops left out of the step's
 * graph in turn) and of prefill chunks. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "kern/fill.h"
#include "plan/crc.h"
#include "plan/json.h"
#include "rt/cublas.h"
#include "rt/cudrv.h"
#include "rt/rt.h"

#define REPS 9

struct row {
    const char *what;
    double value;
    const char *unit;
    const char *note;
};
static struct row rows[48];
static int nrows;

static void add(const char *what, double value, const char *unit, const char *note)
{
    if (nrows < (int)(sizeof rows / sizeof rows[0]))
        rows[nrows++] = (struct row){what, value, unit, note};
    else
        fprintf(stderr, "bench: table full, row '%s' (%g %s) not printed\n", what, value, unit);
}

static double now_s(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static double median(double *v, int n)
{
    qsort(v, (size_t)n, sizeof *v, cmp_double);
    return v[n / 2];
}

static void bench_crc(void)
{
    size_t n = 256u << 20;
    uint8_t *buf = malloc(n);
    uint64_t s = 0x1234;
    for (size_t i = 0; i < n; i += 8) {
        uint64_t r = k_fill_hash(s, i);
        memcpy(buf + i, &r, 8);
    }
    double t[REPS];
    volatile uint32_t sink = crc32c(0, buf, n); /* warm-up */
    for (int r = 0; r < REPS; r++) {
        double t0 = now_s();
        sink = crc32c(sink, buf, n);
        t[r] = now_s() - t0;
    }
    add("host CRC32C", (double)n / median(t, REPS) / 1e9, "GB/s", "must outrun the disk");
    free(buf);
}

/* A tokenizer-like document: one object of many string keys and an array of merges. */
static char *make_json(size_t *len)
{
    size_t cap = 16u << 20, n = 0;
    char *t = malloc(cap);
    n += (size_t)sprintf(t + n, "{\"vocab\":{");
    for (int i = 0; i < 150000; i++)
        n += (size_t)sprintf(t + n, "%s\"tok%08x_%d\\u00e9\":%d", i ? "," : "",
                             (unsigned)k_fill_hash(9, (uint64_t)i), i, i);
    n += (size_t)sprintf(t + n, "},\"merges\":[");
    for (int i = 0; i < 150000; i++)
        n += (size_t)sprintf(t + n, "%s[\"a%d\",\"b%d\"]", i ? "," : "", i, i);
    n += (size_t)sprintf(t + n, "]}");
    *len = n;
    return t;
}

static void bench_json(void)
{
    size_t len;
    char *text = make_json(&len);
    double t[REPS];
    for (int r = 0; r < REPS; r++) {
        struct json_doc d;
        double t0 = now_s();
        int rc = json_parse(&d, text, len, 0);
        t[r] = now_s() - t0;
        json_free(&d);
        if (rc) {
            fprintf(stderr, "bench: json_parse failed: %s\n", d.err);
            exit(1);
        }
    }
    add("host JSON parse", (double)len / median(t, REPS) / 1e6, "MB/s", "tokenizer.json-like");
    free(text);
}

#define CU(call)                                                                                   \
    do {                                                                                           \
        CUresult r_ = d.call;                                                                      \
        if (r_ != CUDA_SUCCESS) {                                                                  \
            char b_[RT_ERR_LEN];                                                                   \
            fprintf(stderr, "bench: %s:%d: %s: %s\n", __FILE__, __LINE__, #call,                   \
                    rt_cudrv_errstr(&d, r_, b_, sizeof b_));                                       \
            exit(1);                                                                               \
        }                                                                                          \
    } while (0)

static struct rt_cudrv d;
static unsigned grid; /* 8 CTAs per SM */
static double copy_gbs, gemm_tflops; /* the ceilings measured in this run */

/* Median milliseconds of REPS timed runs of a copy (fn == NULL) or a fill launch. */
static double time_op(CUfunction fn, CUdeviceptr a, CUdeviceptr b, size_t bytes)
{
    CUevent e0, e1;
    CU(cuEventCreate(&e0, 0));
    CU(cuEventCreate(&e1, 0));
    double t[REPS];
    for (int r = -2; r < REPS; r++) { /* two warm-up runs */
        CU(cuEventRecord(e0, NULL));
        if (fn) {
            struct k_fill_params p = {.dst = a, .n = bytes / 2, .seed = (uint64_t)r + 5, .scale = 1};
            void *args[] = {&p};
            CU(cuLaunchKernel(fn, grid, 1, 1, 256, 1, 1, 0, NULL, args, NULL));
        } else {
            CU(cuMemcpyDtoDAsync(b, a, bytes, NULL));
        }
        CU(cuEventRecord(e1, NULL));
        CU(cuEventSynchronize(e1));
        float ms;
        CU(cuEventElapsedTime(&ms, e0, e1));
        if (r >= 0)
            t[r] = ms;
    }
    CU(cuEventDestroy(e0));
    CU(cuEventDestroy(e1));
    return median(t, REPS);
}

/* The bf16 matmul ceiling: C = A B at 8192^3 through cuBLAS, A and B random (a and b hold 1 GiB
 * each: A, B and C fit). Returns TFLOP/s, or 0 when cuBLAS is not there. */
static double bench_gemm(CUfunction fill, CUdeviceptr a, CUdeviceptr b)
{
    const int N = 8192;
    struct rt_cublas blas;
    char err[RT_ERR_LEN];
    CUdeviceptr ws = b + 3ull * N * N * 2; /* 32 MiB of workspace after C */
    if (rt_cublas_open(&blas, NULL, ws, 32u << 20, err)) {
        add("cuBLAS bf16 GEMM", 0, "-", "skipped: cuBLAS not found");
        return 0;
    }
    struct k_fill_params p = {.dst = a, .n = 2ull * N * N, .seed = 11, .scale = 1};
    void *args[] = {&p};
    CU(cuLaunchKernel(fill, grid, 1, 1, 256, 1, 1, 0, NULL, args, NULL));
    CUdeviceptr A = a, B = a + 2ull * N * N, C = b;
    float alpha = 1, beta = 0, ms;
    CUevent e0, e1;
    CU(cuEventCreate(&e0, 0));
    CU(cuEventCreate(&e1, 0));
    double t[REPS];
    for (int r = -2; r < REPS; r++) {
        CU(cuEventRecord(e0, NULL));
        int st = blas.gemm_ex(blas.h, RT_CUBLAS_OP_N, RT_CUBLAS_OP_N, N, N, N, &alpha, (void *)A,
                              RT_CUDA_R_16BF, N, (void *)B, RT_CUDA_R_16BF, N, &beta, (void *)C,
                              RT_CUDA_R_16BF, N, RT_CUBLAS_COMPUTE_32F, RT_CUBLAS_GEMM_DEFAULT);
        CU(cuEventRecord(e1, NULL));
        CU(cuEventSynchronize(e1));
        CU(cuEventElapsedTime(&ms, e0, e1));
        if (st) {
            fprintf(stderr, "bench: cublasGemmEx failed (%d)\n", st);
            exit(1);
        }
        if (r >= 0)
            t[r] = ms;
    }
    CU(cuEventDestroy(e0));
    CU(cuEventDestroy(e1));
    rt_cublas_close(&blas);
    return 2.0 * N * (double)N * N / (median(t, REPS) * 1e-3) / 1e12;
}

static void bench_gpu(void)
{
    char err[RT_ERR_LEN];
    int ndev = 0;
    if (rt_cudrv_probe(&d, &ndev, err) || ndev == 0) {
        add("device", 0, "-", "skipped: no CUDA device");
        return;
    }
    CUdevice dev;
    CUcontext ctx;
    char name[128];
    CU(cuDeviceGet(&dev, 0));
    CU(cuDeviceGetName(name, sizeof name, dev));
    int sms = 0;
    CU(cuDeviceGetAttribute(&sms, CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT, dev));
    grid = 8u * (unsigned)sms;
    CU(cuDevicePrimaryCtxRetain(&ctx, dev));
    CU(cuCtxSetCurrent(ctx));
    printf("device: %s\n", name);

    size_t bytes = 1u << 30;
    CUdeviceptr a, b;
    CU(cuMemAlloc(&a, bytes));
    CU(cuMemAlloc(&b, bytes));
    int major = 0, minor = 0;
    CU(cuDeviceGetAttribute(&major, CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR, dev));
    CU(cuDeviceGetAttribute(&minor, CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MINOR, dev));
    char path[64]; /* this arch's cubin, else the PTX the driver JIT-compiles */
    snprintf(path, sizeof path, "build/kern/sm_%d%d%s.cubin", major, minor, major == 9 ? "a" : "");
    FILE *f = fopen(path, "rb");
    if (!f)
        f = fopen(strcpy(path, "build/kern/compute_90.ptx"), "rb");
    if (!f) {
        fprintf(stderr, "bench: no kernel image in build/kern: run make first\n");
        exit(1);
    }
    static char img[4 << 20];
    size_t n = fread(img, 1, sizeof img - 1, f);
    fclose(f);
    if (n == 0 || n == sizeof img - 1) {
        fprintf(stderr, "bench: %s is empty or larger than 4 MiB\n", path);
        exit(1);
    }
    img[n] = 0; /* PTX is loaded as a NUL-terminated string */
    CUmodule m;
    CUfunction fill;
    CU(cuModuleLoadData(&m, img));
    CU(cuModuleGetFunction(&fill, m, "k_fill_bf16"));

    /* random source for the copy: copying zeros can measure a faster path than real data */
    struct k_fill_params p = {.dst = a, .n = bytes / 2, .seed = 3, .scale = 1};
    void *args[] = {&p};
    CU(cuLaunchKernel(fill, grid, 1, 1, 256, 1, 1, 0, NULL, args, NULL));
    CU(cuCtxSynchronize());

    double copy_ms = time_op(NULL, a, b, bytes);
    copy_gbs = 2.0 * (double)bytes / (copy_ms * 1e-3) / 1e9; /* read + write */
    add("device D2D copy (ceiling)", copy_gbs, "GB/s", "read + write, 1 GiB");
    double fill_ms = time_op(fill, a, 0, bytes);
    double fill_gbs = (double)bytes / (fill_ms * 1e-3) / 1e9;
    static char note[64];
    snprintf(note, sizeof note, "%.0f%% of copy", 100.0 * fill_gbs / copy_gbs);
    add("k_fill_bf16 (write only)", fill_gbs, "GB/s", note);

    gemm_tflops = bench_gemm(fill, a, b);
    if (gemm_tflops > 0)
        add("cuBLAS bf16 GEMM (ceiling)", gemm_tflops, "TF/s", "8192^3, random inputs");
    CU(cuModuleUnload(m));
    CU(cuMemFree(a));
    CU(cuMemFree(b));
    CU(cuDevicePrimaryCtxRelease(dev));
    rt_cudrv_close(&d);
}

/* ---- the model ---------------------------------------------------------------------------- */

static uint32_t model_tokens;
static int model_count(void *ctx, int32_t t)
{
    (void)ctx, (void)t;
    model_tokens++;
    return 0;
}

struct kern_total {
    const char *kernel;
    double us;
    uint64_t bytes, flops;
    uint32_t n;
};

/* Per-kernel totals of one decode step, largest first: where the time of a token goes. */
static void op_table(struct rt *r, const char *sched, uint32_t reps)
{
    static struct rt_op_time ops[4096];
    static struct kern_total tot[64];
    uint32_t n = 0, nk = 0;
    char err[RT_ERR_LEN];
    if (rt_profile(r, sched, reps, ops, 4096, &n, err)) {
        fprintf(stderr, "bench: profiling %s: %s\n", sched, err);
        return;
    }
    double sum = 0;
    for (uint32_t i = 0; i < n; i++) {
        const char *k = ops[i].kernel ? ops[i].kernel : "(runtime op)";
        uint32_t j = 0;
        while (j < nk && strcmp(tot[j].kernel, k))
            j++;
        if (j == nk && nk < 64)
            tot[nk++] = (struct kern_total){k, 0, 0, 0, 0};
        tot[j].us += ops[i].us, tot[j].bytes += ops[i].bytes, tot[j].flops += ops[i].flops;
        tot[j].n++;
        sum += ops[i].us;
    }
    for (uint32_t i = 0; i < nk; i++) /* largest first */
        for (uint32_t j = i + 1; j < nk; j++)
            if (tot[j].us > tot[i].us) {
                struct kern_total x = tot[i];
                tot[i] = tot[j], tot[j] = x;
            }
    printf("\n%s, ops one by one (%u ops, %.0f us in all):\n%-24s %6s %10s %7s %10s %8s %8s %8s\n",
           sched, n, sum, "kernel", "ops", "us", "share", "GB/s", "of copy", "TFLOP/s", "of GEMM");
    for (uint32_t i = 0; i < nk && i < 16; i++) {
        double gbs = (double)tot[i].bytes / (tot[i].us * 1e-6) / 1e9;
        double tfs = (double)tot[i].flops / (tot[i].us * 1e-6) / 1e12;
        printf("%-24s %6u %10.1f %6.1f%% %10.0f %7.0f%% %8.1f %7.1f%%\n", tot[i].kernel, tot[i].n,
               tot[i].us, 100 * tot[i].us / sum, gbs, 100 * gbs / copy_gbs, tfs,
               gemm_tflops > 0 ? 100 * tfs / gemm_tflops : 0.0);
    }
}

/* What each kernel of a schedule costs inside its graph: the step with and without that
 * kernel's ops (rt_profile_drop). With programmatic dependent launch a kernel's time overlaps
 * its neighbours', so this, not the ops one by one, is what leaving it out would save. Every
 * replay runs the step once more (a decode step one position on, a prefill chunk n_tokens on),
 * so each kernel's row starts again from the same state: a fresh request prefilled with the
 * n first tokens of prompt. (Without that the rows drift: a prefill chunk's rows ran past the
 * context's end, where the kernels see `done` and return at once.) */
static void drop_table(struct rt *r, const char *sched, uint32_t reps, const int32_t *prompt,
                       uint32_t n_prompt, const struct rt_sampling *s)
{
    static struct rt_op_time ops[4096];
    const char *names[64];
    uint32_t n = 0, nk = 0;
    char err[RT_ERR_LEN];
    if (rt_profile(r, sched, 1, ops, 4096, &n, err)) {
        fprintf(stderr, "bench: profiling %s: %s\n", sched, err);
        return;
    }
    for (uint32_t i = 0; i < n; i++) {
        uint32_t j = 0;
        while (ops[i].kernel && j < nk && strcmp(names[j], ops[i].kernel))
            j++;
        if (ops[i].kernel && j == nk && nk < 64)
            names[nk++] = ops[i].kernel;
    }
    printf("\n%s in its graph, each kernel left out in turn (%u reps):\n%-24s %10s %10s %10s\n", sched,
           reps, "kernel", "step us", "without", "saves us");
    for (uint32_t j = 0; j < nk; j++) {
        double all, without;
        if (rt_reset(r, s, err) || rt_prefill_logits(r, prompt, n_prompt, NULL, err) ||
            rt_profile_drop(r, sched, names[j], reps, &all, &without, err)) {
            fprintf(stderr, "bench: %s without %s: %s\n", sched, names[j], err);
            return;
        }
        printf("%-24s %10.1f %10.1f %10.1f\n", names[j], all, without, all - without);
    }
    /* in a prefill chunk the router and k_moe_align decide how much the expert GEMMs do: left
     * out, they leave their buffers as whatever the overlay last held there, and the step
     * timed is another one */
    if (!strncmp(sched, "prefill", 7))
        printf("(k_router and k_moe_align decide which experts the expert GEMMs read: their rows\n"
               " change that work, so they are not their own cost)\n");
}

/* Bytes one decode step of a schedule must move (the plan's per-op costs). */
static uint64_t step_bytes(struct rt *r, const char *sched)
{
    static struct rt_op_time ops[4096];
    uint32_t n = 0;
    char err[RT_ERR_LEN];
    uint64_t b = 0;
    if (!rt_profile(r, sched, 1, ops, 4096, &n, err))
        for (uint32_t i = 0; i < n; i++)
            b += ops[i].bytes;
    return b;
}

static int want_decode = 1, want_prefill = 1, no_pdl, no_branches, want_trace;

/* The timeline of one decode step at a context of 4000 (kernel images built with KERN_TRACE=1):
 * per launch, when its CTAs reached their wait and when the waits returned, and its share of the
 * step's critical path: from its own first go to the next launch's first go (the next wait
 * returns once this kernel has completed). Then those shares summed per kernel. */
static void trace_table(struct rt *r, const char *sched)
{
    static struct rt_trace_op ops[4096];
    static struct rt_op_time cost[4096];
    uint32_t n = 0, nc = 0;
    char err[RT_ERR_LEN];
    if (rt_trace(r, sched, ops, 4096, &n, err)) {
        fprintf(stderr, "bench: tracing %s: %s\n", sched, err);
        return;
    }
    if (n < 2) {
        fprintf(stderr, "bench: tracing %s: %u launches recorded\n", sched, n);
        return;
    }
    if (rt_profile(r, sched, 1, cost, 4096, &nc, err))
        nc = 0;
    printf("\n%s timeline, one step (us from the first wait; nan: not stamped; crit = next launch's go - this go):\n"
           "%-18s %-20s %5s %7s %7s %7s %7s %7s %7s %7s %7s %7s %7s %6s %6s\n",
           sched, "op", "kernel", "ctas", "start", "start_l", "enter", "enter_l", "go", "go_l", "mark", "mark_l",
           "end", "end_l", "crit", "GB/s");
    struct {
        const char *k;
        double crit;
        uint32_t n;
    } sum[64];
    uint32_t ns = 0;
    for (uint32_t i = 0; i < n; i++) {
        double crit = i + 1 < n ? ops[i + 1].go - ops[i].go : ops[i].go_last - ops[i].go;
        uint64_t bytes = 0;
        for (uint32_t j = 0; ops[i].name && j < nc; j++)
            if (!strcmp(cost[j].name, ops[i].name))
                bytes = cost[j].bytes;
        printf("%-18s %-20s %5u %7.1f %7.1f %7.1f %7.1f %7.1f %7.1f %7.1f %7.1f %7.1f %7.1f %6.2f %6.0f\n",
               ops[i].name ? ops[i].name : "?", ops[i].kernel ? ops[i].kernel : "?", ops[i].ctas, ops[i].start,
               ops[i].start_last, ops[i].enter, ops[i].enter_last, ops[i].go, ops[i].go_last, ops[i].mark,
               ops[i].mark_last, ops[i].end, ops[i].end_last, crit, crit > 0 ? bytes / (crit * 1e3) : 0.0);
        const char *k = ops[i].kernel ? ops[i].kernel : "?";
        uint32_t j = 0;
        while (j < ns && strcmp(sum[j].k, k))
            j++;
        if (j == ns && ns < 64)
            sum[ns++].k = k, sum[j].crit = 0, sum[j].n = 0;
        if (j < ns)
            sum[j].crit += crit, sum[j].n++;
    }
    printf("\n%-24s %6s %10s %10s\n", "kernel", "ops", "crit us", "per op");
    for (uint32_t j = 0; j < ns; j++)
        printf("%-24s %6u %10.1f %10.2f\n", sum[j].k, sum[j].n, sum[j].crit, sum[j].crit / sum[j].n);
    printf("%-24s %6u %10.1f\n", "step", n, ops[n - 1].go_last - ops[0].go);
}

/* Decode at a context of 4096 on another plan of the same model (planner flags args, written
 * to path), as a row named label with its share of that plan's roofline. */
struct alt_decode {
    const struct rt_options *o;
    const int32_t *prompt;
    uint64_t kv_per_tok; /* KV cache bytes a token of context reads */
    uint32_t max_seq;
};

static void alt_decode(const struct alt_decode *a, const char *args, const char *path,
                       const char *label)
{
    char cmd[256], err[RT_ERR_LEN] = "";
    snprintf(cmd, sizeof cmd, "build/planner -q --max-seq 8192 %s -o %s", args, path);
    if (system(cmd)) {
        fprintf(stderr, "bench: %s: the planner failed\n", label);
        return;
    }
    struct rt *r = NULL;
    struct rt_options o = *a->o;
    struct rt_sampling greedy = {.max_new = 64, .top_p = 1.0f};
    struct rt_stats st;
    o.plan_path = path;
    if (!rt_open(&r, &o, err) &&
        !rt_generate(r, a->prompt, 4096, &greedy, model_count, NULL, &st, err)) {
        static char notes[4][64];
        static int n;
        char *note = notes[n++ % 4];
        double tps = (st.new_tokens - 1) / (st.decode_ms * 1e-3);
        uint64_t b = step_bytes(r, "decode_split") - a->kv_per_tok * (a->max_seq - 4096);
        double roof = copy_gbs * 1e9 / (double)b;
        snprintf(note, 64, "%.1f%% of the %.0f tok/s roofline", 100 * tps / roof, roof);
        add(label, tps, "tok/s", note);
    } else {
        fprintf(stderr, "bench: %s: %s\n", label, err);
    }
    rt_close(r);
}

/* Prefill tok/s of 32-, 128-, 256- and 512-token prompts on r (median of 3 each); dense 1: the
 * plan is planner --dense-prefill cublas, 2: the default plan opened with no_branches (the rows
 * are named for it). The single 128-token run
 * above is the first prefill after loading. */
static void mid_prefill(struct rt *r, const int32_t *prompt, int dense)
{
    static const char *names[3][4] = {
        {"prefill tok/s at 32", "prefill 128, median of 3", "prefill tok/s at 256",
         "prefill tok/s at 512"},
        {"prefill 32, no k_gemm_i4_wg", "prefill 128, dense cuBLAS", "prefill 256, dense cuBLAS",
         "prefill 512, dense cuBLAS"},
        {"prefill 32, one stream", "prefill 128, one stream", "prefill 256, one stream",
         "prefill 512, one stream"}};
    static const char *notes[3][4] = {
        {"median of 3; the 64-token bucket", "median of 3", "median of 3", "median of 3"},
        {"--dense-prefill cublas: k_gemm_i4_g128", "--dense-prefill cublas",
         "--dense-prefill cublas", "--dense-prefill cublas"},
        {"same plan, side branches in order", "same plan, side branches in order",
         "same plan, side branches in order", "same plan, side branches in order"}};
    static const uint32_t len[4] = {32, 128, 256, 512};
    struct rt_sampling one = {.max_new = 1, .top_p = 1.0f};
    struct rt_stats st;
    char err[RT_ERR_LEN] = "";
    for (int i = 0; i < 4; i++) {
        double ms[3];
        int k = 0;
        for (; k < 3 && !rt_generate(r, prompt, len[i], &one, model_count, NULL, &st, err); k++)
            ms[k] = st.prefill_ms;
        if (k < 3) {
            fprintf(stderr, "bench: prefill %u: %s\n", len[i], err);
            return;
        }
        qsort(ms, 3, sizeof ms[0], cmp_double);
        add(names[dense][i], len[i] / (ms[1] * 1e-3), "tok/s", notes[dense][i]);
    }
}

static void bench_model(void)
{
    char err[RT_ERR_LEN];
    if (system("mkdir -p build/benchdata && build/planner -q --max-seq 8192 -o build/benchdata/plan.bin")) {
        add("model", 0, "-", "skipped: build/planner failed");
        return;
    }
    struct rt *r = NULL;
    struct rt_options o = {.plan_path = "build/benchdata/plan.bin", .synthetic = 1, .synthetic_seed = 5,
                            .no_pdl = no_pdl, .no_branches = no_branches};
    if (rt_open(&r, &o, err)) {
        fprintf(stderr, "bench: %s\n", err);
        add("model", 0, "-", "skipped: the default plan does not load");
        return;
    }
    /* the load: plan, the one arena and the weights, here filled on the device (rt_open) */
    struct rt_info in;
    rt_get_info(r, &in);
    add("load, synthetic weights", in.load_ms, "ms", "rt_open: plan, arena, weights filled");
    add("arena", (double)in.arena_bytes / (1 << 30), "GiB", "activations, KV cache, states, workspaces");
    add("weights", (double)in.weights_bytes / (1 << 30), "GiB", "the plan's weight image");
    static int32_t prompt[8192];
    unsigned long long s = 9;
    for (int i = 0; i < 8192; i++)
        prompt[i] = (int32_t)((s = s * 6364136223846793005ull + 1442695040888963407ull) >> 45) % 248320;
    struct rt_sampling greedy = {.max_new = 64, .top_p = 1.0f};
    struct rt_stats st;
    static char notes[6][64];
    const uint32_t ctx[3] = {128, 1024, 4096}, pre[3] = {128, 1341, 4096};
    uint64_t b_short = step_bytes(r, "decode"), b_long = step_bytes(r, "decode_split");
    /* the plan prices decode attention at the top of each schedule's range: reprice the KV
     * cache read at the context measured */
    uint64_t kv_per_tok = 2ull * 2 * in.model.num_kv_heads * in.model.head_dim *
                          model_count_layers(&in.model, MODEL_LAYER_FULL);
    uint32_t th = 256 < in.max_seq ? 256 : in.max_seq;
    if (want_trace) { /* only the timeline */
        struct rt_sampling diag = {.max_new = 1u << 20, .top_p = 1.0f};
        if (!rt_reset(r, &diag, err) && !rt_prefill_logits(r, prompt, 4000, NULL, err))
            trace_table(r, "decode_split");
        else
            fprintf(stderr, "bench: %s\n", err);
        rt_close(r);
        return;
    }
    for (int i = 0; i < 3 && want_decode; i++) { /* decode at a filled context */
        model_tokens = 0;
        if (rt_generate(r, prompt, ctx[i], &greedy, model_count, NULL, &st, err))
            break;
        double tps = (st.new_tokens - 1) / (st.decode_ms * 1e-3);
        uint64_t b = ctx[i] < th ? b_short - kv_per_tok * (th - ctx[i])
                                 : b_long - kv_per_tok * (in.max_seq - ctx[i]);
        double roof = copy_gbs * 1e9 / (double)b;
        snprintf(notes[i], 64, "%.1f%% of the %.0f tok/s roofline", 100 * tps / roof, roof);
        add(i == 0 ? "decode tok/s at 128" : i == 1 ? "decode tok/s at 1024" : "decode tok/s at 4096",
            tps, "tok/s", notes[i]);
    }
    greedy.max_new = 1;
    for (int i = 0; i < 3 && want_prefill; i++) { /* prefill: first launch to the first sampled token */
        if (rt_generate(r, prompt, pre[i], &greedy, model_count, NULL, &st, err))
            break;
        double tps = pre[i] / (st.prefill_ms * 1e-3);
        snprintf(notes[3 + i], 64, "%.1f%% of the GEMM ceiling at 5.4 GFLOP/token",
                 gemm_tflops > 0 ? 100 * tps * 5.4e9 / (gemm_tflops * 1e12) : 0.0);
        add(i == 0 ? "prefill tok/s at 128" : i == 1 ? "prefill tok/s at 1341" : "prefill tok/s at 4096",
            tps, "tok/s", notes[3 + i]);
    }
    /* a short prompt (32 tokens, the 64 bucket) and the 128, 256 and 512 buckets (median of 3
     * each; the large dense projections of the 64 and 128 buckets read the nibbles,
     * k_gemm_i4_wg, kern/gemm_wg.cu), the same on the same plan with its side branches run in
     * order on one stream, and on a plan without k_gemm_i4_wg (planner --dense-prefill cublas:
     * k_gemm_i4_g128 in the 64 bucket, expansion + cuBLAS above) */
    if (want_prefill)
        mid_prefill(r, prompt, 0);
    if (want_prefill && !no_branches) { /* the same plan, its side branches on the one stream */
        struct rt *rn = NULL;
        struct rt_options on = o;
        on.no_branches = 1;
        if (!rt_open(&rn, &on, err))
            mid_prefill(rn, prompt, 2);
        else
            fprintf(stderr, "bench: the default plan with no_branches: %s\n", err);
        rt_close(rn);
    }
    if (want_prefill &&
        !system("build/planner -q --max-seq 8192 --dense-prefill cublas "
                "-o build/benchdata/plan-dc.bin")) {
        struct rt *rc = NULL;
        struct rt_options oc = o;
        oc.plan_path = "build/benchdata/plan-dc.bin";
        if (!rt_open(&rc, &oc, err))
            mid_prefill(rc, prompt, 1);
        else
            fprintf(stderr, "bench: the --dense-prefill cublas plan: %s\n", err);
        rt_close(rc);
    }
    /* the same model with lm_head in INT4 (planner and converter --lm-head int4), and with the
     * decode MoE block as one launch (planner --moe-decode fused, k_moe_fused_g128, against
     * the default plan's kernel pair in the same run): decode at 4096 */
    if (want_decode) {
        struct alt_decode ad = {&o, prompt, kv_per_tok, in.max_seq};
        alt_decode(&ad, "--lm-head int4", "build/benchdata/plan-lm4.bin",
                   "decode 4096, INT4 lm_head");
        alt_decode(&ad, "--moe-decode fused", "build/benchdata/plan-fused.bin",
                   "decode 4096, MoE in one launch");
    }
    /* a 16k-token prompt on a plan for 32k of context (prefill tok/s, first launch to the first
     * sampled token; the 5.4 GFLOP/token ratio leaves out attention's growth with context) */
    if (want_prefill &&
        !system("build/planner -q --max-seq 32768 -o build/benchdata/plan-32k.bin")) {
        static int32_t long_prompt[16384];
        for (int i = 0; i < 16384; i++)
            long_prompt[i] = prompt[i % 8192] ^ (i >= 8192); /* not a repeat of the first half */
        struct rt *r32 = NULL;
        struct rt_options o32 = o;
        o32.plan_path = "build/benchdata/plan-32k.bin";
        struct rt_sampling one = {.max_new = 1, .top_p = 1.0f};
        if (!rt_open(&r32, &o32, err) &&
            !rt_generate(r32, long_prompt, 16384, &one, model_count, NULL, &st, err)) {
            static char note[64];
            double tps = 16384 / (st.prefill_ms * 1e-3);
            snprintf(note, 64, "max-seq 32768: %.1f%% of the GEMM ceiling at 5.4 GFLOP/t",
                     gemm_tflops > 0 ? 100 * tps * 5.4e9 / (gemm_tflops * 1e12) : 0.0);
            add("prefill tok/s at 16384", tps, "tok/s", note);
        } else {
            fprintf(stderr, "bench: 16k prompt on the 32k plan: %s\n", err);
        }
        rt_close(r32);
    }
    /* where the time of a long-context token goes */
    struct rt_sampling diag = {.max_new = 1u << 20, .top_p = 1.0f};
    /* how widely the synthetic weights route a short prompt: the experts the last layer's
     * 1,024 (token, slot) pairs of a 128-token prompt went to (k_moe_align's counts). A router
     * that spreads them evenly touches about 251 of 256; fewer means the 128-token row reads
     * fewer expert weights than a trained model would make it read */
    uint32_t counts[256];
    if (want_prefill && !rt_reset(r, &diag, err) && !rt_prefill_logits(r, prompt, 128, NULL, err) &&
        !rt_read_buffer(r, "moe.counts", 0, counts, sizeof counts, err)) {
        uint32_t used = 0, top = 0;
        for (int i = 0; i < 256; i++)
            used += counts[i] != 0, top = counts[i] > top ? counts[i] : top;
        static char note[64];
        snprintf(note, 64, "last layer, 128 tokens; busiest expert %u of 1024 pairs", top);
        add("experts routed (synthetic)", used, "of 256", note);
    } else if (want_prefill) {
        fprintf(stderr, "bench: the experts a 128-token prompt routes to: %s\n", err);
    }
    if (want_decode && !rt_reset(r, &diag, err) && !rt_prefill_logits(r, prompt, 4000, NULL, err))
        op_table(r, "decode_split", 9);
    if (want_decode)
        drop_table(r, "decode_split", 20, prompt, 4000, &diag);
    /* and of a full prefill chunk at position 2048 (each rep runs the chunk once more) */
    if (want_prefill && !rt_reset(r, &diag, err) && !rt_prefill_logits(r, prompt, 2048, NULL, err))
        op_table(r, "prefill_2048", 3);
    /* and of the bucket a 128-token prompt runs in (128 live rows, at position 128) */
    if (want_prefill && !rt_reset(r, &diag, err) && !rt_prefill_logits(r, prompt, 128, NULL, err))
        op_table(r, "prefill_128", 3);
    /* the same bucket in its graph, each kernel left out in turn (each kernel's row from
     * position 128; its 10 replays and the profiling pass take it to 2,944) */
    if (want_prefill)
        drop_table(r, "prefill_128", 10, prompt, 128, &diag);
    rt_close(r);
}

int main(int argc, char **argv)
{
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--decode"))
            want_prefill = 0;
        else if (!strcmp(argv[i], "--prefill"))
            want_decode = 0;
        else if (!strcmp(argv[i], "--no-pdl"))
            no_pdl = 1;
        else if (!strcmp(argv[i], "--no-branches"))
            no_branches = 1;
        else if (!strcmp(argv[i], "--trace"))
            want_trace = 1, want_prefill = 0;
        else {
            printf("usage: %s [--decode | --prefill] [--no-pdl] [--no-branches] [--trace]\n"
                   "  runs the benchmarks (host always, device when there is one) and prints one\n"
                   "  table; run from the repository root after `make`. --decode or --prefill\n"
                   "  measures only that half of the model (decode tok/s and the decode op table,\n"
                   "  or prefill tok/s (32-, 128-, 256- and 512-token prompts also as medians of\n"
                   "  three, on the default plan, on the same plan with its side branches run in\n"
                   "  order on one stream, and on one with --dense-prefill cublas), the\n"
                   "  op tables of a 2048-token chunk and of the 128\n"
                   "  bucket at 128 live tokens, that bucket in its graph with each kernel left\n"
                   "  out in turn, and how many experts the synthetic weights route a\n"
                   "  128-token prompt to); the load time, arena and weight bytes come\n"
                   "  with either. --no-pdl launches decode kernels without programmatic\n"
                   "  dependent launch (for comparison). --no-branches runs the prefill\n"
                   "  schedules' side branches in order on one stream (for comparison).\n"
                   "  --trace prints only the timeline of one decode step at a context of 4000;\n"
                   "  it needs kernel images built with `make KERN_TRACE=1`.\n",
                   argv[0]);
            return strcmp(argv[i], "--help") && strcmp(argv[i], "-h") ? 2 : 0;
        }
    }
    bench_crc();
    bench_json();
    bench_gpu();
    if (copy_gbs > 0)
        bench_model();
    printf("\n%-28s %12s  %-5s %s\n", "benchmark", "value", "unit", "note");
    for (int i = 0; i < nrows; i++)
        printf("%-28s %12.1f  %-5s %s\n", rows[i].what, rows[i].value, rows[i].unit, rows[i].note);
    return 0;
}
