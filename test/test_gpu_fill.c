/* test_gpu_fill.c — the synthetic fill kernels against their CPU definition (kern/fill.h).
 *
 * Every element of a fill is a pure function of (seed, index), so the device output must
 * equal the CPU values bit for bit. Lengths cover the vector path, the tail path and a
 * multi-wave grid; the buffer is poisoned first so unwritten and overwritten elements show. */
#include <string.h>

#include "../kern/fill.h"
#include "gpu.h"

#define POISON 0xA5

static void launch(struct gpu *g, CUfunction f, struct k_fill_params p, unsigned grid)
{
    void *args[] = {&p};
    CU(g, cuLaunchKernel(f, grid, 1, 1, 256, 1, 1, 0, NULL, args, NULL));
    CU(g, cuCtxSynchronize());
}

enum { BF16, U32, F32, I4 };

/* The value element i must have, as bits. */
static uint32_t want_bits(int kind, uint64_t seed, uint64_t i)
{
    if (kind == BF16)
        return k_fill_bf16_value(seed, i, 0.5f, 0.25f);
    if (kind == U32)
        return k_fill_u32_value(seed, i);
    if (kind == I4)
        return k_fill_i4_value(seed, i);
    float f = k_fill_f32_value(seed, i, 0.5f, 0.25f);
    uint32_t u;
    memcpy(&u, &f, 4);
    return u;
}

/* Fill n elements of the kind at d, copy back n + 64 elements, compare. */
static int check_fill(struct gpu *g, CUfunction f, int kind, uint64_t n, uint64_t seed, unsigned grid,
                      CUdeviceptr d, uint64_t *first_bad)
{
    int bf16 = kind == BF16;
    size_t w = bf16 ? 2 : 4, total = (size_t)(n + 64) * w;
    uint8_t *h = malloc(total);
    CU(g, cuMemsetD8(d, POISON, total));
    struct k_fill_params p = {.dst = d, .n = n, .seed = seed, .scale = 0.5f, .center = 0.25f};
    launch(g, f, p, grid);
    CU(g, cuMemcpyDtoH(h, d, total));
    int ok = 1;
    for (uint64_t i = 0; i < n + 64 && ok; i++) {
        uint32_t got = 0, want;
        memcpy(&got, h + i * w, w);
        if (i >= n)
            want = bf16 ? 0xA5A5u : 0xA5A5A5A5u; /* past the end: untouched */
        else
            want = want_bits(kind, seed, i);
        if (got != want) {
            *first_bad = i;
            ok = 0;
        }
    }
    free(h);
    return ok;
}

int main(void)
{
    struct gpu g;
    if (gpu_open(&g))
        return test_skip("no CUDA device");
    CUmodule m = gpu_module(&g);
    CUfunction fb, fu, ff, fi;
    CU(&g, cuModuleGetFunction(&fb, m, "k_fill_bf16"));
    CU(&g, cuModuleGetFunction(&fu, m, "k_fill_u32"));
    CU(&g, cuModuleGetFunction(&fi, m, "k_fill_i4"));
    CU(&g, cuModuleGetFunction(&ff, m, "k_fill_f32"));

    const uint64_t lens[] = {1, 7, 8, 9, 4096, 1000003, 1u << 22};
    CUdeviceptr d;
    CU(&g, cuMemAlloc(&d, ((1u << 22) + 64) * 4));
    unsigned long long s = 1;
    for (size_t i = 0; i < sizeof lens / sizeof lens[0]; i++) {
        uint64_t seed = test_rand(&s), bad = 0;
        unsigned grid = lens[i] > 100000 ? 132 : 1; /* a few waves over the SMs, or one CTA */
        int ok = check_fill(&g, fb, BF16, lens[i], seed, grid, d, &bad);
        CHECK(ok, "k_fill_bf16 n=%llu equals the CPU values, nothing past n written (first bad %lld)",
              (unsigned long long)lens[i], ok ? -1ll : (long long)bad);
        ok = check_fill(&g, fu, U32, lens[i], seed, grid, d, &bad);
        CHECK(ok, "k_fill_u32 n=%llu equals the CPU values, nothing past n written (first bad %lld)",
              (unsigned long long)lens[i], ok ? -1ll : (long long)bad);
        ok = check_fill(&g, fi, I4, lens[i], seed, grid, d, &bad);
        CHECK(ok, "k_fill_i4 n=%llu equals the CPU values, nothing past n written (first bad %lld)",
              (unsigned long long)lens[i], ok ? -1ll : (long long)bad);
        ok = check_fill(&g, ff, F32, lens[i], seed, grid, d, &bad);
        CHECK(ok, "k_fill_f32 n=%llu equals the CPU values, nothing past n written (first bad %lld)",
              (unsigned long long)lens[i], ok ? -1ll : (long long)bad);
    }
    /* INT4 nibbles: q in 1..15, each value about 1/16 of the time (8 twice that): q - 8 has mean
     * zero; the words are the random words with only their zero nibbles changed */
    {
        uint64_t hist[16] = {0}, changed = 0;
        const uint64_t nw = 1u << 16;
        for (uint64_t i = 0; i < nw; i++) {
            const uint32_t w = k_fill_i4_value(5, i), u = k_fill_u32_value(5, i);
            for (int j = 0; j < 8; j++) {
                const uint32_t q = w >> 4 * j & 15, qu = u >> 4 * j & 15;
                hist[q]++;
                changed += q != qu && !(qu == 0 && q == 8);
            }
        }
        double mean = 0, n = 8.0 * nw;
        int spread = hist[0] == 0 && changed == 0;
        for (int q = 1; q < 16; q++) {
            mean += (q - 8) * (double)hist[q] / n;
            const double want = (q == 8 ? 2.0 : 1.0) / 16 * n;
            spread &= hist[q] > 0.97 * want && hist[q] < 1.03 * want;
        }
        CHECK(spread && mean > -0.01 && mean < 0.01,
              "k_fill_i4 nibbles: none 0, the rest as drawn, q - 8 mean %.4f over %.0f nibbles", mean, n);
    }
    /* the values are not degenerate: a fill of 4096 bf16 spans the range and is not constant */
    float lo = 1, hi = -1;
    for (uint64_t i = 0; i < 4096; i++) {
        union { uint32_t u; float f; } v = {.u = (uint32_t)k_fill_bf16_value(7, i, 0.5f, 0.0f) << 16};
        lo = v.f < lo ? v.f : lo;
        hi = v.f > hi ? v.f : hi;
    }
    CHECK(lo < -0.49f && hi > 0.49f && hi <= 0.5f && lo >= -0.5f,
          "bf16 fill covers [-scale, scale): min %g max %g", (double)lo, (double)hi);
    CU(&g, cuMemFree(d));
    CU(&g, cuModuleUnload(m));
    gpu_close(&g);
    return test_done();
}
