/* test_gpu_fullsize.c — Qwen3.5-35B-A3B at full size with synthetic weights.
 *
 * The default plan (INT4 group 128, bf16 lm_head, max_seq 4096, prefill chunks up to 4096) made
 * by the planner program, loaded by rt with weights filled on the device from a seed (the
 * plan's per-tensor distributions). A 4000-token prompt is prefilled (one chunk) and decoding
 * runs to the end of the context; every logit row read must be finite and not constant, and
 * generation must end with the context. The prompt's tokens must spread over the experts as a
 * trained router's would (the last layer's routing): the speed of every prefill measured on
 * these weights depends on it. Load time, sizes and the measured speeds are printed (speed is
 * the subject of other work; here they are information). */
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "../rt/rt.h"
#include "gpu.h"

#define PLAN "build/test/fullsize.plan"

static int finite_and_varied(const float *x, uint32_t n, double *lo, double *hi)
{
    *lo = INFINITY, *hi = -INFINITY;
    for (uint32_t i = 0; i < n; i++) {
        if (!isfinite(x[i]))
            return 0;
        *lo = x[i] < *lo ? x[i] : *lo;
        *hi = x[i] > *hi ? x[i] : *hi;
    }
    return *hi > *lo;
}

static uint32_t generated;
static int count(void *ctx, int32_t t)
{
    (void)ctx, (void)t;
    generated++;
    return 0;
}

int main(void)
{
    struct gpu g;
    if (gpu_open(&g))
        return test_skip("no CUDA device");
    int made = system("build/planner --max-seq 4096 -q -o " PLAN) == 0;
    CHECK(made, "the planner writes the default plan");
    if (!made)
        return test_done();
    char err[RT_ERR_LEN] = "";
    struct rt *r = NULL;
    struct rt_options o = {.plan_path = PLAN, .synthetic = 1, .synthetic_seed = 2026};
    enum rt_status st = rt_open(&r, &o, err);
    CHECK(st == RT_OK, "Qwen3.5-35B-A3B loads with synthetic weights%s%s", st ? ": " : "", err);
    if (st)
        return test_done();
    struct rt_info in;
    rt_get_info(r, &in);
    printf("# loaded in %.0f ms on %s: arena %.1f MiB, weights %.2f GiB, max_seq %u\n", in.load_ms,
           in.device_name, (double)in.arena_bytes / (1 << 20), (double)in.weights_bytes / (1 << 30),
           in.max_seq);
    uint32_t V = in.model.vocab_size, T = 4000;
    int32_t *prompt = malloc(4ull * T);
    float *logits = malloc(4ull * V);
    unsigned long long s = 3;
    for (uint32_t i = 0; i < T; i++)
        prompt[i] = (int32_t)(test_rand(&s) % V);

    /* prefill 4000 tokens (one chunk in the 4096 bucket), then 8 decode steps */
    struct rt_sampling greedy = {.max_new = 1u << 20, .top_p = 1.0f};
    double lo = 0, hi = 0;
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    st = rt_reset(r, &greedy, err);
    if (!st)
        st = rt_prefill_logits(r, prompt, T, logits, err);
    clock_gettime(CLOCK_MONOTONIC, &t1);
    double pre_s = (double)(t1.tv_sec - t0.tv_sec) + 1e-9 * (double)(t1.tv_nsec - t0.tv_nsec);
    CHECK(!st && finite_and_varied(logits, V, &lo, &hi),
          "prefill of 4000 tokens: logits finite and varied (%g..%g), %.0f tok/s%s%s", lo, hi,
          T / pre_s, st ? ": " : "", err);
    {   /* the scale of the activations that produced them (information) */
        uint16_t row[2048];
        double ss = 0, sl = 0;
        if (!rt_read_buffer(r, "final_norm", 0, row, sizeof row, err))
            for (int i = 0; i < 2048; i++) {
                uint32_t u = (uint32_t)row[i] << 16;
                float f;
                memcpy(&f, &u, 4);
                ss += (double)f * f;
            }
        for (uint32_t i = 0; i < V; i++)
            sl += (double)logits[i] * logits[i];
        printf("# final norm rms %.3g, logits rms %.3g\n", sqrt(ss / 2048), sqrt(sl / V));
    }
    {   /* the last layer's routing of the 32,000 (token, slot) pairs over 256 experts: about
         * 125 each when even. Synthetic INT4 weights whose q - 8 had a nonzero mean sent every
         * token to the same 8 experts (a prompt then reads 3% of the expert weights) */
        uint32_t counts[256], used = 0, top = 0, sum = 0;
        int got = !st && in.model.num_experts == 256 &&
                  !rt_read_buffer(r, "moe.counts", 0, counts, sizeof counts, err);
        for (int e = 0; got && e < 256; e++)
            used += counts[e] != 0, top = counts[e] > top ? counts[e] : top, sum += counts[e];
        CHECK(got && sum == 8 * T && used >= 240 && top <= 4 * 125,
              "the prompt spreads over the experts: %u of 256 used, the busiest %u of %u pairs%s%s",
              used, top, sum, got ? "" : ": ", got ? "" : err);
    }
    int ok = !st;
    for (int i = 0; i < 8 && ok; i++)
        ok = !rt_decode_logits(r, (int32_t)(i * 7919 % V), logits, err) &&
             finite_and_varied(logits, V, &lo, &hi);
    CHECK(ok, "8 decode steps after it: logits finite and varied%s%s", ok ? "" : ": ", err);

    /* generation to the end of the context: the prompt, then decode until max_seq */
    struct rt_stats stats;
    generated = 0;
    st = rt_generate(r, prompt, T, &greedy, count, NULL, &stats, err);
    CHECK(!st && stats.finish == RT_FINISH_CONTEXT && generated >= in.max_seq - T,
          "generation runs to the end of the context: %u tokens, finish %u%s%s", generated,
          stats.finish, st ? ": " : "", err);
    printf("# 4000-token prompt: prefill %.0f ms (%.0f tok/s); decode at 4000..4096: %.1f tok/s\n",
           stats.prefill_ms, T / (stats.prefill_ms / 1e3),
           stats.new_tokens > 1 ? (stats.new_tokens - 1) / (stats.decode_ms / 1e3) : 0.0);
    /* a short prompt decoding far: the whole context */
    generated = 0;
    st = rt_generate(r, prompt, 16, &greedy, count, NULL, &stats, err);
    CHECK(!st && stats.finish == RT_FINISH_CONTEXT && generated >= in.max_seq - 16,
          "16-token prompt decodes to the end of the context: %u tokens%s%s", generated,
          st ? ": " : "", err);
    printf("# decode 16..4096: %.1f tok/s over %u tokens\n",
           stats.new_tokens > 1 ? (stats.new_tokens - 1) / (stats.decode_ms / 1e3) : 0.0,
           stats.new_tokens);
    rt_close(r);
    free(prompt);
    free(logits);
    gpu_close(&g);
    return test_done();
}
