/* bench.c — `make bench`: the ceilings and the pieces measured so far, one table at the end.
 *
 * Host: CRC32C (rt checks every weight tensor with it while streaming the image from disk, so
 * it must outrun the disk) and JSON parsing (tokenizer.json and config.json at start-up, every
 * request line in rt_host). Device, when there is one: the device-to-device copy bandwidth
 * (the decode roofline's denominator, PERF.md), and the synthetic fill kernel as a ratio of
 * it. Inputs are random, never zeros; each figure is the median of several timed runs after
 * a warm-up. Model benchmarks join this table as the kernels land. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "kern/fill.h"
#include "plan/crc.h"
#include "plan/json.h"
#include "rt/cudrv.h"

#define REPS 9

struct row {
    const char *what;
    double value;
    const char *unit;
    const char *note;
};
static struct row rows[16];
static int nrows;

static void add(const char *what, double value, const char *unit, const char *note)
{
    rows[nrows++] = (struct row){what, value, unit, note};
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
    double copy_gbs = 2.0 * (double)bytes / (copy_ms * 1e-3) / 1e9; /* read + write */
    add("device D2D copy (ceiling)", copy_gbs, "GB/s", "read + write, 1 GiB");
    double fill_ms = time_op(fill, a, 0, bytes);
    double fill_gbs = (double)bytes / (fill_ms * 1e-3) / 1e9;
    static char note[64];
    snprintf(note, sizeof note, "%.0f%% of copy", 100.0 * fill_gbs / copy_gbs);
    add("k_fill_bf16 (write only)", fill_gbs, "GB/s", note);

    CU(cuModuleUnload(m));
    CU(cuMemFree(a));
    CU(cuMemFree(b));
    CU(cuDevicePrimaryCtxRelease(dev));
    rt_cudrv_close(&d);
}

int main(int argc, char **argv)
{
    if (argc > 1) {
        printf("usage: %s\n  runs the benchmarks (host always, device when there is one) and\n"
               "  prints one table; run from the repository root after `make`.\n", argv[0]);
        return strcmp(argv[1], "--help") && strcmp(argv[1], "-h") ? 2 : 0;
    }
    bench_crc();
    bench_json();
    bench_gpu();
    printf("\n%-28s %12s  %-5s %s\n", "benchmark", "value", "unit", "note");
    for (int i = 0; i < nrows; i++)
        printf("%-28s %12.1f  %-5s %s\n", rows[i].what, rows[i].value, rows[i].unit, rows[i].note);
    return 0;
}
