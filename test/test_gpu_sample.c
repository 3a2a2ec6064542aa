/* test_gpu_sample.c — k_sample_part and k_sample_pick against the CPU reference (kref_sample).
 *
 * What is checked, on a host-mapped ring (cuMemHostAlloc DEVICEMAP, read from the host) and a
 * poisoned candidate buffer:
 *   - greedy equals the CPU argmax, ties to the lowest id (V = 248320, 512, 1000, and 600000
 *     for slices longer than one tile);
 *   - the candidate buffer equals what the reference says k_sample_part writes, every slot;
 *   - temperature / top_k / top_p: the empirical distribution of many draws (fresh seed per
 *     batch of 1000, n_new counting inside a batch) against kref_sample_probs, by chi-square
 *     over the bins expected to hold >= 5 draws (the rest pooled), accepted below
 *     df + 5 sqrt(2 df) + 10 (a false alarm well under 1e-4 even at small df); a draw outside
 *     the support fails outright;
 *   - top_k = 1 and a tiny top_p equal greedy; the same (seed, n_new) draws the same token, and
 *     it equals the reference's float mirror wherever the draw is not within 1e-4 of a boundary;
 *   - the step and ring protocol: seq values, slot wrap, n_new, pos, done on a stop id, at
 *     max_new and at max_pos, decode no-op when done (step, ring and candidates untouched),
 *     prefill chunks that are not the last only advance pos, a stream of steps read from the
 *     ring by the host while they run. */
#include <math.h>
#include <string.h>
#include <time.h>

#include "../kern/sample.h"
#include "../kern/step.h"
#include "gpu.h"
#include "ref/kref_sample.h"

#define VBIG   248320u
#define VMAX   600000u
#define POISON 0xA5
#define NCAND  (K_SAMPLE_PARTS * K_SAMPLE_CAND)
#define BATCH  1000

struct ctx {
    struct gpu g;
    CUmodule m;
    CUfunction part, pick;
    CUdeviceptr logits, cand, step, ring_d;
    struct k_ring_entry *ring; /* K_RING_SLOTS, host-mapped */
    float *x;                  /* (VMAX) host copy of the logits */
    double *p;                 /* (VMAX) reference probabilities */
    unsigned long long rng;
};

/* ---- device plumbing ------------------------------------------------------------------------- */

static void launch(struct ctx *c, uint32_t V, int prefill)
{
    struct k_sample_params p = {.logits = c->logits,
                                .cand = c->cand,
                                .ring = c->ring_d,
                                .step = c->step,
                                .V = V,
                                .prefill = (uint32_t)prefill};
    void *args[] = {&p};
    CU(&c->g, cuLaunchKernel(c->part, K_SAMPLE_PARTS, 1, 1, 256, 1, 1, 0, NULL, args, NULL));
    CU(&c->g, cuLaunchKernel(c->pick, 1, 1, 1, 1024, 1, 1, 0, NULL, args, NULL));
}

static void upload(struct ctx *c, uint32_t V)
{
    CU(&c->g, cuMemcpyHtoD(c->logits, c->x, 4ull * V));
}
static void put_step(struct ctx *c, const struct k_step *st)
{
    CU(&c->g, cuMemcpyHtoD(c->step, st, sizeof *st));
}
static void get_step(struct ctx *c, struct k_step *st)
{
    CU(&c->g, cuMemcpyDtoH(st, c->step, sizeof *st));
}

/* One step (part + pick), synchronised; returns the step state after it. */
static struct k_step run1(struct ctx *c, uint32_t V, int prefill, const struct k_step *st)
{
    struct k_step out;
    put_step(c, st);
    launch(c, V, prefill);
    CU(&c->g, cuCtxSynchronize());
    get_step(c, &out);
    return out;
}

static void poison(struct ctx *c)
{
    CU(&c->g, cuMemsetD8(c->cand, POISON, 8ull * NCAND));
    memset(c->ring, POISON, sizeof(struct k_ring_entry) * K_RING_SLOTS);
}

/* A decode step state with the given settings and nothing that stops it. */
static struct k_step mkstep(float T, uint32_t top_k, float top_p, uint64_t seed)
{
    struct k_step s;
    memset(&s, 0, sizeof s);
    s.n_tokens = 1, s.max_new = 1u << 30, s.max_pos = 1u << 30;
    s.temperature = T, s.top_k = top_k, s.top_p = top_p, s.seed = seed;
    s.token = -7, s.reserved[0] = 0xDEADBEEFu, s.reserved[1] = 0x01234567u;
    return s;
}

/* Ring slots other than `except` (-1: none) still hold the poison. */
static int ring_untouched(const struct ctx *c, int except)
{
    const uint8_t *b = (const uint8_t *)c->ring;
    for (int i = 0; i < K_RING_SLOTS; i++)
        for (size_t j = 0; i != except && j < sizeof(struct k_ring_entry); j++)
            if (b[i * sizeof(struct k_ring_entry) + j] != POISON)
                return 0;
    return 1;
}

static int cand_untouched(struct ctx *c)
{
    static uint8_t h[8 * NCAND];
    CU(&c->g, cuMemcpyDtoH(h, c->cand, sizeof h));
    for (size_t i = 0; i < sizeof h; i++)
        if (h[i] != POISON)
            return 0;
    return 1;
}

/* ---- logits ---------------------------------------------------------------------------------- */

static float urand(struct ctx *c, float lo, float hi)
{
    return lo + (hi - lo) * (float)(test_rand(&c->rng) >> 40) * (1.0f / 16777216.0f);
}

static void fill(struct ctx *c, uint32_t V, float lo, float hi)
{
    for (uint32_t i = 0; i < V; i++)
        c->x[i] = urand(c, lo, hi);
}

/* n "hot" ids at logits in [lo, hi), the first `in5` of them inside slice 5 */
static void plant_hot(struct ctx *c, uint32_t V, uint32_t n, float lo, float hi, uint32_t in5)
{
    uint32_t s_lo, s_hi;
    kref_sample_slice(V, 5, &s_lo, &s_hi);
    for (uint32_t i = 0; i < n; i++) {
        uint32_t id = i < in5 ? s_lo + (uint32_t)(test_rand(&c->rng) % (s_hi - s_lo))
                              : (uint32_t)(test_rand(&c->rng) % V);
        c->x[id] = urand(c, lo, hi);
    }
}

/* ---- greedy ---------------------------------------------------------------------------------- */

/* Case k of the greedy set for V; returns a description. */
static const char *greedy_case(struct ctx *c, uint32_t V, int k)
{
    uint32_t lo, hi, a, b;
    fill(c, V, -10.0f, 10.0f);
    switch (k) {
    case 0:
        return "random";
    case 1: /* two ids in different slices */
        a = 1 + (uint32_t)(test_rand(&c->rng) % (V / 2)), b = V / 2 + a / 2 + 7;
        c->x[a] = c->x[b] = 11.0f;
        return "tie across slices";
    case 2: /* two ids in one slice, the higher one loaded first by nothing in particular */
        kref_sample_slice(V, 3, &lo, &hi);
        c->x[hi - 1] = c->x[lo + 1] = 12.0f;
        return "tie inside a slice";
    case 3:
        c->x[V - 1] = c->x[0] = 10.5f;
        return "tie at 0 and V-1";
    case 4:
        for (uint32_t i = 0; i < V; i++)
            c->x[i] = 0.25f;
        return "all equal";
    case 5:
        for (uint32_t i = 0; i < V; i++)
            c->x[i] = i % 97 ? -INFINITY : -3.0f - (float)(i % 5);
        return "mostly -inf";
    case 6:
        for (uint32_t i = 0; i < V; i++)
            c->x[i] = -1.0f;
        c->x[3] = -0.0f, c->x[5] = 0.0f;
        return "-0 and +0 tie";
    default:
        for (uint32_t i = 0; i < V; i++)
            c->x[i] = (float)i * 1e-3f;
        return "ascending";
    }
}

static void test_greedy(struct ctx *c, uint32_t V)
{
    int ok = 1, bad = -1;
    int32_t got = 0, want = 0;
    const char *what = "";
    for (int k = 0; k < 8 && ok; k++) {
        what = greedy_case(c, V, k);
        upload(c, V);
        poison(c);
        struct k_step st = mkstep(0.0f, 0, 1.0f, 1), ref = st;
        struct k_step out = run1(c, V, 0, &st);
        want = kref_sample_argmax(c->x, V);
        got = out.token;
        kref_sample_step(&ref, (struct k_ring_entry[K_RING_SLOTS]){{0, 0}}, 0, want);
        ok = got == want && !memcmp(&out, &ref, sizeof out) && c->ring[0].token == want &&
             c->ring[0].seq == 1 && ring_untouched(c, 0);
        bad = ok ? -1 : k;
    }
    CHECK(ok,
          "greedy V=%u equals the CPU argmax (ties to the lowest id), step and ring exact%s%s "
          "(got %d want %d)",
          V, bad >= 0 ? ": failed case " : "", bad >= 0 ? what : "", got, want);
}

/* ---- the candidate buffer -------------------------------------------------------------------- */

static void test_cand(struct ctx *c, uint32_t V, float T, uint32_t top_k, const char *what)
{
    static struct kref_cand want[NCAND], got[NCAND];
    static float gap[K_SAMPLE_PARTS];
    struct k_step st = mkstep(T, top_k, 0.9f, 77);
    st.n_new = 5;
    upload(c, V);
    poison(c);
    run1(c, V, 0, &st);
    CU(&c->g, cuMemcpyDtoH(got, c->cand, sizeof got));
    kref_sample_part(c->x, V, &st, want, gap);
    int ok = 1, at = -1;
    for (int i = 0; i < NCAND && ok; i++) {
        int s = i / K_SAMPLE_CAND, j = i % K_SAMPLE_CAND;
        if (j < K_SAMPLE_KEEP)
            ok = got[i].id == want[i].id && !memcmp(&got[i].v, &want[i].v, 4);
        else if (want[i].id < 0)
            ok = got[i].id == -1 && got[i].v == 0.0f;
        else
            ok = fabsf(got[i].v - want[i].v) <= 1e-4f * want[i].v &&
                 (got[i].id == want[i].id || gap[s] < 1e-3f);
        at = ok ? -1 : i;
    }
    CHECK(ok,
          "k_sample_part V=%u %s: every candidate slot and slice summary as the reference "
          "(first bad slot %d: got {%g, %d} want {%g, %d})",
          V, what, at, at >= 0 ? (double)got[at].v : 0.0, at >= 0 ? got[at].id : 0,
          at >= 0 ? (double)want[at].v : 0.0, at >= 0 ? want[at].id : 0);
}

static void cand_tests(struct ctx *c)
{
    uint32_t lo, hi;
    fill(c, VBIG, -5.0f, 5.0f);
    kref_sample_slice(VBIG, 7, &lo, &hi); /* 100 equal logits straddle slice 7's cut */
    for (uint32_t i = 0; i < 100; i++)
        c->x[lo + 37 * i] = 5.5f;
    for (uint32_t i = 0; i < 20; i++)
        c->x[lo + 11 + 40 * i] = 6.0f + (float)i;
    test_cand(c, VBIG, 0.8f, 0, "T=0.8 top_k=0 (ties at a slice's cut)");
    test_cand(c, VBIG, 0.0f, 0, "greedy (no summary)");
    fill(c, 1000, -2.0f, 2.0f);
    test_cand(c, 1000, 1.0f, 0, "short and empty slices");
    fill(c, VMAX, -5.0f, 5.0f);
    test_cand(c, VMAX, 1.3f, 0, "slices of several tiles");
    test_cand(c, VMAX, 1.3f, 20, "top_k=20 (no summary)");
}

/* ---- distributions --------------------------------------------------------------------------- */

/* n draws: batches of BATCH decode steps from n_new = 0, a fresh seed per batch. counts (V) are
 * filled; returns 0 if a ring entry was missing or out of range. */
static int draws(struct ctx *c, uint32_t V, const struct k_step *tmpl, uint32_t n, uint32_t *counts)
{
    memset(counts, 0, sizeof(uint32_t) * V);
    for (uint32_t b = 0; b * BATCH < n; b++) {
        struct k_step st = *tmpl;
        st.seed = tmpl->seed + 0x1000193ull * b;
        memset(c->ring, POISON, sizeof(struct k_ring_entry) * K_RING_SLOTS);
        put_step(c, &st);
        for (uint32_t k = 0; k < BATCH; k++)
            launch(c, V, 0);
        CU(&c->g, cuCtxSynchronize());
        for (uint32_t k = 0; k < BATCH && b * BATCH + k < n; k++) {
            struct k_ring_entry e = c->ring[k];
            if (e.seq != k + 1 || e.token < 0 || (uint32_t)e.token >= V)
                return 0;
            counts[e.token]++;
        }
    }
    return 1;
}

/* Chi-square of counts (n draws) against p; *outside gets the draws where p == 0. */
static double chi2(const uint32_t *counts, const double *p, uint32_t V, uint32_t n, int *df,
                   uint32_t *outside)
{
    double x = 0.0, pool_e = 0.0, pool_o = 0.0;
    int bins = 0;
    *outside = 0;
    for (uint32_t i = 0; i < V; i++) {
        double e = p[i] * n;
        if (p[i] == 0.0)
            *outside += counts[i];
        else if (e >= 5.0)
            x += (counts[i] - e) * (counts[i] - e) / e, bins++;
        else
            pool_e += e, pool_o += counts[i];
    }
    if (pool_e >= 5.0)
        x += (pool_o - pool_e) * (pool_o - pool_e) / pool_e, bins++;
    *df = bins - 1;
    return x;
}

static void test_dist(struct ctx *c, uint32_t V, float T, uint32_t top_k, float top_p, uint32_t n,
                      int want_tail, const char *what)
{
    static uint32_t counts[VMAX];
    struct k_step st = mkstep(T, top_k, top_p, 1000 + n + V);
    double edge;
    int tail = kref_sample_probs(c->x, V, &st, c->p, &edge);
    for (int i = 1; i < 20 && edge < 2e-3; i++) { /* keep top_p off a cumulative weight */
        st.top_p = top_p + (i & 1 ? -0.003f : 0.003f) * (float)((i + 1) / 2);
        st.top_p = st.top_p > 1.0f ? 1.0f : st.top_p;
        tail = kref_sample_probs(c->x, V, &st, c->p, &edge);
    }
    upload(c, V);
    int ring_ok = draws(c, V, &st, n, counts);
    int df;
    uint32_t outside;
    double x = chi2(counts, c->p, V, n, &df, &outside);
    double lim = df + 5.0 * sqrt(2.0 * df) + 10.0;
    CHECK(ring_ok && tail == want_tail && edge > 1e-3 && outside == 0 && df >= 1 && x < lim,
          "draws V=%u T=%g top_k=%u top_p=%g (%s): %u draws, chi2 %.1f < %.1f (df %d), %u outside "
          "the support, %s (nucleus edge %.2g)",
          V, (double)T, top_k, (double)st.top_p, what, n, x, lim, df, outside,
          tail ? "full softmax" : "nucleus in the candidates", edge);
}

static void dist_tests(struct ctx *c)
{
    fill(c, 1000, 0.0f, 4.0f);
    test_dist(c, 1000, 0.7f, 10, 1.0f, 20000, 0, "top_k only");
    fill(c, VBIG, -5.0f, 0.0f);
    plant_hot(c, VBIG, 100, 2.0f, 5.0f, 10);
    test_dist(c, VBIG, 1.0f, 40, 0.8f, 20000, 0, "top_k then top_p");
    fill(c, VBIG, -5.0f, 0.0f);
    plant_hot(c, VBIG, 20, 10.0f, 12.0f, 3);
    test_dist(c, VBIG, 1.0f, 0, 0.9f, 20000, 0, "nucleus needs the exact normaliser");
    fill(c, VBIG, -30.0f, -29.0f);
    plant_hot(c, VBIG, 300, 0.0f, 3.0f, 100);
    test_dist(c, VBIG, 1.0f, 0, 1.0f, 30000, 1, "pure temperature, 100 hot ids in one slice");
    fill(c, 512, 0.0f, 1.0f);
    test_dist(c, 512, 1.3f, 0, 0.8f, 20000, 1, "nucleus past the candidates: full softmax");
    fill(c, 512, 0.0f, 1.0f);
    plant_hot(c, 512, 10, 5.0f, 6.0f, 0);
    test_dist(c, 512, 1.0f, 0, 0.6f, 20000, 0, "nucleus inside, small vocabulary");
    fill(c, 1000, 0.0f, 2.0f);
    test_dist(c, 1000, 2.0f, 0, 1.0f, 30000, 1, "pure temperature, small vocabulary");
}

/* ---- greedy equivalences, determinism, the float mirror -------------------------------------- */

static void test_as_greedy(struct ctx *c, uint32_t V, uint32_t top_k, float top_p, const char *what)
{
    fill(c, V, -3.0f, 3.0f);
    c->x[V / 3] = c->x[V / 3 + 5 * V / 8] = 4.0f; /* a planted tie for the max */
    upload(c, V);
    int32_t want = kref_sample_argmax(c->x, V), got = 0;
    int ok = want == (int32_t)(V / 3);
    for (uint32_t s = 0; s < 20 && ok; s++) {
        struct k_step st = mkstep(1.0f, top_k, top_p, 31 * s + 1);
        st.n_new = s;
        got = run1(c, V, 0, &st).token;
        ok = got == want;
    }
    CHECK(ok, "V=%u %s equals greedy over 20 seeds (got %d want %d)", V, what, got, want);
}

static void test_mirror(struct ctx *c, uint32_t V, float T, uint32_t top_k, float top_p, uint32_t n,
                        const char *what)
{
    upload(c, V);
    uint32_t agree = 0, near = 0, bad = 0, same = 1, moved = 0;
    int32_t first = -1;
    for (uint32_t i = 0; i < n; i++) {
        struct k_step st = mkstep(T, top_k, top_p, 4242 + i / 10);
        st.n_new = i % 10 * 1000;
        int32_t a = run1(c, V, 0, &st).token, b = run1(c, V, 0, &st).token;
        double margin;
        int32_t r = kref_sample_draw(c->x, V, &st, &margin);
        same &= a == b;
        moved += first >= 0 && a != first;
        first = first < 0 ? a : first;
        if (a == r)
            agree++;
        else if (margin < 1e-4)
            near++;
        else
            bad++;
    }
    CHECK(same && bad == 0 && moved > 0,
          "V=%u %s: same (seed, n_new) same token; %u of %u equal the CPU mirror, %u differ within "
          "1e-4 of a boundary, %u differ elsewhere",
          V, what, agree, n, near, bad);
}

static void draw_tests(struct ctx *c)
{
    test_as_greedy(c, VBIG, 1, 1.0f, "T=1 top_k=1");
    test_as_greedy(c, VBIG, 0, 1e-6f, "T=1 top_k=0 top_p=1e-6");
    test_as_greedy(c, VBIG, 50, 1e-6f, "T=1 top_k=50 top_p=1e-6");
    test_as_greedy(c, 512, 1, 0.5f, "T=1 top_k=1");
    test_as_greedy(c, 1000, 0, 1e-6f, "T=1 top_p=1e-6");
    fill(c, VBIG, -5.0f, 0.0f);
    plant_hot(c, VBIG, 100, 2.0f, 5.0f, 10);
    test_mirror(c, VBIG, 1.0f, 40, 0.8f, 200, "top_k=40 top_p=0.8");
    fill(c, VBIG, -8.0f, -4.0f);
    plant_hot(c, VBIG, 300, 0.0f, 3.0f, 100);
    test_mirror(c, VBIG, 0.9f, 0, 1.0f, 60, "full softmax");
    fill(c, 1000, 0.0f, 3.0f);
    test_mirror(c, 1000, 0.8f, 0, 0.95f, 200, "top_p=0.95");
}

/* ---- step and ring protocol ------------------------------------------------------------------ */

/* Run one step from st (decode unless prefill) and compare step and ring with the reference. */
static int proto(struct ctx *c, uint32_t V, int prefill, struct k_step st, int want_emit,
                 struct k_step *out)
{
    struct k_step ref = st;
    static struct k_ring_entry rr[K_RING_SLOTS];
    poison(c);
    *out = run1(c, V, prefill, &st);
    int32_t tok = kref_sample_argmax(c->x, V);
    int emitted = kref_sample_step(&ref, rr, prefill, tok);
    int slot = (int)(st.n_new % K_RING_SLOTS);
    int ok = emitted == want_emit && !memcmp(out, &ref, sizeof ref);
    if (emitted)
        ok &= c->ring[slot].token == tok && c->ring[slot].seq == st.n_new + 1 &&
              ring_untouched(c, slot);
    else
        ok &= ring_untouched(c, -1) && cand_untouched(c);
    return ok;
}

static void proto_tests(struct ctx *c)
{
    const uint32_t V = 1000;
    struct k_step st = mkstep(0.0f, 0, 1.0f, 3), out;
    fill(c, V, -1.0f, 1.0f);
    upload(c, V);
    int32_t tok = kref_sample_argmax(c->x, V);
    st.pos = 10, st.n_new = 5, st.max_new = 100, st.max_pos = 1000;
    CHECK(proto(c, V, 0, st, 1, &out) && out.pos == 11 && out.n_new == 6 && !out.done,
          "decode: ring slot 5 = {token, 6}, n_new 6, pos 11, token written, not done");
    st.n_new = 1030;
    CHECK(proto(c, V, 0, st, 1, &out) && c->ring[6].seq == 1031,
          "decode: slot 1030 %% %d wraps to 6, seq 1031", K_RING_SLOTS);
    st.n_new = 5, st.n_stop = 3, st.stop_ids[0] = 7, st.stop_ids[1] = tok, st.stop_ids[2] = 9;
    CHECK(proto(c, V, 0, st, 1, &out) && out.done == 1, "decode: a stop id sets done");
    CHECK(proto(c, V, 0, out, 0, &out), "decode when done: step, ring and candidates untouched");
    st.n_stop = 0, st.stop_ids[0] = tok;
    CHECK(proto(c, V, 0, st, 1, &out) && !out.done, "decode: stop ids past n_stop are ignored");
    st.n_new = 4, st.max_new = 5;
    CHECK(proto(c, V, 0, st, 1, &out) && out.done == 1 && out.n_new == 5,
          "decode: n_new reaching max_new sets done");
    st.n_new = 4, st.max_new = 100, st.pos = 99, st.max_pos = 100;
    CHECK(proto(c, V, 0, st, 1, &out) && out.done == 1 && out.pos == 100,
          "decode: pos reaching max_pos sets done");
    struct k_step pf = mkstep(0.0f, 0, 1.0f, 3);
    pf.pos = 0, pf.n_tokens = 37, pf.last_chunk = 0, pf.max_new = 10, pf.max_pos = 1000;
    CHECK(proto(c, V, 1, pf, 0, &out) && out.pos == 37 && out.n_new == 0 && out.token == -7,
          "prefill, not the last chunk: only pos advances (37); ring and candidates untouched");
    pf.pos = 37, pf.n_tokens = 5, pf.last_chunk = 1;
    CHECK(proto(c, V, 1, pf, 1, &out) && out.pos == 42 && out.n_new == 1 && !out.done &&
              c->ring[0].seq == 1,
          "prefill, last chunk: pos 42, token 0 in slot 0 with seq 1");
    pf.max_pos = 42;
    CHECK(proto(c, V, 1, pf, 1, &out) && out.done == 1,
          "prefill, last chunk at the context end sets done");
    pf.max_pos = 1000, pf.done = 1;
    CHECK(proto(c, V, 1, pf, 1, &out) && out.n_new == 1,
          "prefill ignores a stale done (the host rewrites the step before each chunk)");
}

static double now_s(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec + 1e-9 * t.tv_nsec;
}

/* Steps launched back to back; the host reads each token from the mapped ring as it lands. */
static void stream_test(struct ctx *c)
{
    static int32_t first[400];
    fill(c, VBIG, -4.0f, 4.0f);
    upload(c, VBIG);
    int ok = 1;
    for (int run = 0; run < 2; run++) {
        struct k_step st = mkstep(0.8f, 0, 0.95f, 99), out;
        st.pos = 17, st.max_new = 300;
        poison(c);
        put_step(c, &st);
        for (int k = 0; k < 320; k++)
            launch(c, VBIG, 0);
        double t0 = now_s();
        for (uint32_t k = 0; k < 300 && ok; k++) {
            volatile struct k_ring_entry *e = &c->ring[k];
            while (e->seq != k + 1 && now_s() - t0 < 20.0)
                ;
            ok = e->seq == k + 1 && e->token >= 0 && (uint32_t)e->token < VBIG;
            ok &= run == 0 || e->token == first[k];
            first[k] = e->token;
        }
        CU(&c->g, cuCtxSynchronize());
        get_step(c, &out);
        for (int k = 300; k < K_RING_SLOTS; k++)
            ok &= c->ring[k].seq == 0xA5A5A5A5u;
        ok &= out.n_new == 300 && out.pos == 317 && out.done == 1;
    }
    CHECK(ok, "300 of 320 queued steps stream through the mapped ring as they run; then done, "
              "pos 317, later slots untouched; a second run repeats every token");
}

/* Time per kernel, averaged over back-to-back launches (informative only). */
static void timing(struct ctx *c)
{
    CUevent e[3];
    for (int i = 0; i < 3; i++)
        CU(&c->g, cuEventCreate(&e[i], 0));
    fill(c, VBIG, -8.0f, 8.0f);
    upload(c, VBIG);
    const float Ts[2] = {0.0f, 0.8f};
    for (int m = 0; m < 2; m++) {
        struct k_step st = mkstep(Ts[m], 0, 0.95f, 5);
        put_step(c, &st);
        struct k_sample_params p = {c->logits, c->cand, c->ring_d, c->step, VBIG, 0};
        void *args[] = {&p};
        CU(&c->g, cuEventRecord(e[0], NULL));
        for (int k = 0; k < 200; k++)
            CU(&c->g,
               cuLaunchKernel(c->part, K_SAMPLE_PARTS, 1, 1, 256, 1, 1, 0, NULL, args, NULL));
        CU(&c->g, cuEventRecord(e[1], NULL));
        for (int k = 0; k < 200; k++)
            CU(&c->g, cuLaunchKernel(c->pick, 1, 1, 1, 1024, 1, 1, 0, NULL, args, NULL));
        CU(&c->g, cuEventRecord(e[2], NULL));
        CU(&c->g, cuEventSynchronize(e[2]));
        float a, b;
        CU(&c->g, cuEventElapsedTime(&a, e[0], e[1]));
        CU(&c->g, cuEventElapsedTime(&b, e[1], e[2]));
        printf("# timing V=%u %s: k_sample_part %.2f us, k_sample_pick %.2f us per launch\n", VBIG,
               m ? "T=0.8 top_p=0.95" : "greedy", 1e3 * a / 200, 1e3 * b / 200);
    }
    for (int i = 0; i < 3; i++)
        CU(&c->g, cuEventDestroy(e[i]));
}

int main(void)
{
    static struct ctx c;
    if (gpu_open(&c.g))
        return test_skip("no CUDA device");
    c.m = gpu_module(&c.g);
    CU(&c.g, cuModuleGetFunction(&c.part, c.m, "k_sample_part"));
    CU(&c.g, cuModuleGetFunction(&c.pick, c.m, "k_sample_pick"));
    CU(&c.g, cuMemAlloc(&c.logits, 4ull * VMAX));
    CU(&c.g, cuMemAlloc(&c.cand, 8ull * NCAND));
    CU(&c.g, cuMemAlloc(&c.step, sizeof(struct k_step)));
    CU(&c.g, cuMemHostAlloc((void **)&c.ring, sizeof(struct k_ring_entry) * K_RING_SLOTS,
                            CU_MEMHOSTALLOC_DEVICEMAP));
    CU(&c.g, cuMemHostGetDevicePointer(&c.ring_d, c.ring, 0));
    c.x = malloc(4ull * VMAX);
    c.p = malloc(8ull * VMAX);
    c.rng = 12345;
    if (!c.x || !c.p) {
        printf("FAIL out of host memory\n");
        return 1;
    }
    const uint32_t Vs[4] = {VBIG, 512, 1000, VMAX};
    for (int i = 0; i < 4; i++)
        test_greedy(&c, Vs[i]);
    cand_tests(&c);
    proto_tests(&c);
    draw_tests(&c);
    dist_tests(&c);
    stream_test(&c);
    timing(&c);
    free(c.x);
    free(c.p);
    CU(&c.g, cuMemFreeHost(c.ring));
    CU(&c.g, cuMemFree(c.step));
    CU(&c.g, cuMemFree(c.cand));
    CU(&c.g, cuMemFree(c.logits));
    CU(&c.g, cuModuleUnload(c.m));
    gpu_close(&c.g);
    return test_done();
}
