/* test_quant.c — the converter's number formats (weights/quant.h).
 *
 * bf16: hand-picked cases (ties to even, carries into the exponent, overflow to inf, NaN kept
 * quiet with its sign, signed zero, subnormals), every one of the 65536 bf16 values round-
 * tripping, and a million random floats against an independent rounding in double.
 *
 * INT4 K_LAYOUT_I4_ROWS: the nibble order on hand-made words (a row of levels 0..15 repeated
 * packs to the words 0x75316420 0xFDB9ECA8, and the word 0x76543210 unpacks to levels
 * 0 4 1 5 2 6 3 7); exact round trips on fresh random data built from levels and bf16 scales
 * (each group holding both extreme levels, so the best scale is unique and reproduces the
 * input bit for bit); scaling by powers of two; zero, subnormal and non-finite groups.
 *
 * INT4 error on Gaussian rows (N(0, 0.035^2), 2^20 elements, the std of the projections in
 * the fixtures): measured relative RMS error 0.0865 / 0.0955 / 0.1024 at group 32 / 64 / 128,
 * bounded here by 0.090 / 0.099 / 0.106; every group's squared error is at most that of the
 * plain absmax/7.5 scale (the search includes it), and every element's error is at most
 * max(s/2, absmax - 7s) for its group's scale s. */
#include <math.h>
#include <string.h>

#include "kern/quant.h"
#include "test.h"
#include "weights/quant.h"

static float f_of(uint32_t u)
{
    float f;
    memcpy(&f, &u, 4);
    return f;
}

static uint32_t u_of(float f)
{
    uint32_t u;
    memcpy(&u, &f, 4);
    return u;
}

/* Independent bf16 rounding of a finite float: the nearer of its two bf16 neighbours in
 * double arithmetic, ties to the even one; past the largest finite value the upper neighbour
 * is inf, which rounds like 2^128 would. */
static uint16_t bf16_slow(float x)
{
    uint32_t lo = u_of(x) & 0xFFFF0000u, hi = lo + 0x10000u;
    double vl = f_of(lo);
    double vh = (hi & 0x7F800000u) == 0x7F800000u ? copysign(ldexp(1.0, 128), x) : f_of(hi);
    double dl = fabs((double)x - vl), dh = fabs(vh - (double)x);
    if (dl != dh)
        return (uint16_t)((dl < dh ? lo : hi) >> 16);
    return (uint16_t)((((lo >> 16) & 1u) ? hi : lo) >> 16);
}

static void bf16_cases(void)
{
    static const struct {
        uint32_t in;
        uint16_t out;
        const char *what;
    } c[] = {
        {0x3F800000u, 0x3F80, "1.0"},
        {0x3F808000u, 0x3F80, "tie below an even mantissa stays"},
        {0x3F818000u, 0x3F82, "tie above an odd mantissa rounds up"},
        {0x3F808001u, 0x3F81, "just above a tie rounds up"},
        {0xBF818000u, 0xBF82, "negative tie rounds away to even"},
        {0x3FFF8000u, 0x4000, "carry into the exponent"},
        {0x7F7FFFFFu, 0x7F80, "largest float rounds to inf"},
        {0x7F7F7FFFu, 0x7F7F, "just below the halfway point to inf stays finite"},
        {0x7F800000u, 0x7F80, "inf"},
        {0xFF800000u, 0xFF80, "-inf"},
        {0x7FC00000u, 0x7FC0, "quiet NaN"},
        {0x7F800001u, 0x7FC0, "signalling NaN with a low payload stays NaN (quiet)"},
        {0xFF800001u, 0xFFC0, "negative NaN keeps its sign"},
        {0x80000000u, 0x8000, "-0"},
        {0x00008000u, 0x0000, "subnormal tie to even (zero)"},
        {0x00018000u, 0x0002, "subnormal tie to even (up)"},
    };
    int ok = 1;
    for (size_t i = 0; i < sizeof c / sizeof c[0]; i++) {
        uint16_t got = wt_q_bf16(f_of(c[i].in));
        if (got != c[i].out) {
            CHECK(0, "bf16(0x%08X) = 0x%04X, expected 0x%04X (%s)", c[i].in, got, c[i].out,
                  c[i].what);
            ok = 0;
        }
    }
    CHECK(ok, "bf16 rounding: %zu hand-picked cases (ties, carries, inf, NaN, -0, subnormals)",
          sizeof c / sizeof c[0]);
    ok = 1;
    for (uint32_t h = 0; h < 65536 && ok; h++) {
        float f = wt_q_bf16_f32((uint16_t)h);
        ok = isnan(f) ? isnan(wt_q_bf16_f32(wt_q_bf16(f))) : wt_q_bf16(f) == h;
    }
    CHECK(ok, "every bf16 value widens to float32 and rounds back to itself");
    unsigned long long s = 11;
    uint32_t bad = 0, first = 0;
    for (int i = 0; i < 1000000; i++) {
        uint32_t u = (uint32_t)test_rand(&s);
        if ((u & 0x7F800000u) == 0x7F800000u)
            continue;
        if (wt_q_bf16(f_of(u)) != bf16_slow(f_of(u)) && !bad++)
            first = u;
    }
    CHECK(bad == 0,
          "a million random finite floats round as the independent rounding does "
          "(%u differ, first 0x%08X)",
          bad, first);
}

/* Pack 8 levels with kern/quant.h's slot table, independently of quant.c. */
static uint32_t word_of(const int *q)
{
    static const int slot[8] = K_I4_SLOTS;
    uint32_t w = 0;
    for (int j = 0; j < 8; j++)
        w |= (uint32_t)q[j] << (4 * slot[j]);
    return w;
}

static void nibble_order(void)
{
    float x[32], back[32];
    uint8_t nib[16];
    uint16_t sc[1];
    int q[32];
    for (int j = 0; j < 32; j++)
        q[j] = j % 16, x[j] = (float)(q[j] - 8) / 64.0f;
    int rc = wt_q_pack_rows(x, 1, 32, 32, nib, sc, NULL, NULL, NULL);
    static const uint8_t want[16] = {0x20, 0x64, 0x31, 0x75, 0xA8, 0xEC, 0xB9, 0xFD,
                                     0x20, 0x64, 0x31, 0x75, 0xA8, 0xEC, 0xB9, 0xFD};
    CHECK(rc == 0 && !memcmp(nib, want, 16) && sc[0] == 0x3C80,
          "levels 0..15 repeated pack to words 0x75316420 0xFDB9ECA8 (little-endian bytes) "
          "with scale bf16(1/64) = 0x3C80 (got 0x%04X)",
          sc[0]);
    CHECK(word_of(q) == 0x75316420u && word_of(q + 8) == 0xFDB9ECA8u,
          "the slot table of kern/quant.h gives the same words");
    const uint8_t hand[16] = {0x10, 0x32, 0x54, 0x76}; /* word 0x76543210, then zeros */
    uint16_t one = 0x3F80;                             /* scale 1.0 */
    wt_q_unpack_rows(hand, &one, 1, 32, 32, back);
    static const float lv[8] = {0, 4, 1, 5, 2, 6, 3, 7};
    int ok = 1;
    for (int j = 0; j < 8; j++)
        ok &= back[j] == lv[j] - 8.0f;
    for (int j = 8; j < 32; j++)
        ok &= back[j] == -8.0f;
    CHECK(ok, "word 0x76543210 unpacks to levels 0 4 1 5 2 6 3 7 (value = scale * (q - 8))");
}

/* A uniform in (0, 1] and a standard normal (Box-Muller) from the test PRNG. */
static double uniform(unsigned long long *s)
{
    return ((double)(test_rand(s) >> 11) + 1.0) / 9007199254740992.0;
}
static double gauss(unsigned long long *s)
{
    return sqrt(-2.0 * log(uniform(s))) * cos(6.283185307179586 * uniform(s));
}

/* Rows built from random levels and random bf16 scales, both extreme levels in every group:
 * packing must give back exactly those levels and scales, unpacking exactly the input. */
static void exact_round_trips(void)
{
    enum { ROWS = 37 };
    unsigned long long s = 2024;
    for (uint32_t g = 32; g <= 128; g *= 2) {
        uint32_t k = 4 * g, ng = k / g;
        float *x = malloc(sizeof(float) * ROWS * k), *back = malloc(sizeof(float) * ROWS * k);
        int *q = malloc(sizeof(int) * ROWS * k);
        uint8_t *nib = malloc(ROWS * k / 2), *want = malloc(ROWS * k / 2);
        uint16_t *sc = malloc(2 * ROWS * ng), *want_sc = malloc(2 * ROWS * ng);
        for (uint32_t r = 0; r < ROWS; r++)
            for (uint32_t b = 0; b < ng; b++) {
                /* positive bf16 scale: exponent 2^-20 .. 2^5, random 7-bit mantissa */
                uint16_t h =
                    (uint16_t)((127 - 20 + test_rand(&s) % 26) << 7 | (test_rand(&s) & 127));
                want_sc[r * ng + b] = h;
                int *qq = q + r * k + b * g;
                for (uint32_t j = 0; j < g; j++)
                    qq[j] = (int)(test_rand(&s) % 16);
                uint32_t lo = (uint32_t)(test_rand(&s) % g),
                         hi = (lo + 1 + test_rand(&s) % (g - 1)) % g;
                qq[lo] = 0, qq[hi] = 15;
                for (uint32_t j = 0; j < g; j++)
                    x[r * k + b * g + j] = wt_q_bf16_f32(h) * (float)(qq[j] - 8);
            }
        for (uint32_t w = 0; w < ROWS * k / 8; w++) {
            uint32_t v = word_of(q + 8 * w);
            for (int by = 0; by < 4; by++)
                want[4 * w + (uint32_t)by] = (uint8_t)(v >> (8 * by));
        }
        double e2 = 0, r2 = 0;
        int rc = wt_q_pack_rows(x, ROWS, k, g, nib, sc, &e2, &r2, NULL);
        wt_q_unpack_rows(nib, sc, ROWS, k, g, back);
        CHECK(rc == 0 && !memcmp(nib, want, ROWS * k / 2) && !memcmp(sc, want_sc, 2 * ROWS * ng) &&
                  e2 == 0 && r2 > 0 && !memcmp(back, x, sizeof(float) * ROWS * k),
              "group %u: %u random rows of levels x bf16 scales pack to exactly those nibbles and "
              "scales, with zero error, and unpack bit for bit",
              g, ROWS);
        free(x), free(back), free(q), free(nib), free(want), free(sc), free(want_sc);
    }
}

/* Gaussian rows (rows, k) of std 0.035. */
static float *gaussian(uint64_t n, unsigned long long seed)
{
    float *x = malloc(sizeof(float) * n);
    for (uint64_t i = 0; i < n; i++)
        x[i] = (float)(0.035 * gauss(&seed));
    return x;
}

/* Packing 2^e * W gives the same nibbles and scales times 2^e exactly. */
static void power_of_two_scaling(void)
{
    const uint64_t rows = 16, k = 256;
    float *x = gaussian(rows * k, 5), *y = malloc(sizeof(float) * rows * k);
    uint8_t a[16 * 128], b[16 * 128];
    uint16_t sa[16 * 8], sb[16 * 8];
    int ok = !wt_q_pack_rows(x, rows, k, 32, a, sa, NULL, NULL, NULL);
    for (int e = -9; ok && e <= 9; e += 6) {
        for (uint64_t i = 0; i < rows * k; i++)
            y[i] = ldexpf(x[i], e);
        ok = !wt_q_pack_rows(y, rows, k, 32, b, sb, NULL, NULL, NULL) && !memcmp(a, b, sizeof a);
        for (int i = 0; ok && i < 16 * 8; i++)
            ok = wt_q_bf16_f32(sb[i]) == ldexpf(wt_q_bf16_f32(sa[i]), e);
    }
    CHECK(ok, "scaling a tensor by 2^-9, 2^-3, 2^3, 2^9 keeps its nibbles and scales the scales");
    free(x), free(y);
}

static void special_groups(void)
{
    float x[4 * 64] = {0}, back[4 * 64];
    uint8_t nib[4 * 32];
    uint16_t sc[4 * 2];
    uint64_t bad = 99;
    double e2 = 0, r2 = 0;
    int rc = wt_q_pack_rows(x, 1, 64, 32, nib, sc, &e2, &r2, NULL);
    wt_q_unpack_rows(nib, sc, 1, 64, 32, back);
    int ok = rc == 0 && sc[0] == 0 && sc[1] == 0 && e2 == 0;
    for (int j = 0; j < 64; j++)
        ok &= back[j] == 0.0f && (j >= 32 || nib[j] == 0x88);
    CHECK(ok, "an all-zero row: scale 0, every level 8 (nibbles 0x88), dequantizes to zeros");
    for (int j = 0; j < 64; j++) /* subnormal weights, down to 2^-140 */
        x[j] = ldexpf((float)(j - 32) / 32.0f, -126 - (j % 15));
    rc = wt_q_pack_rows(x, 1, 64, 32, nib, sc, NULL, NULL, NULL);
    wt_q_unpack_rows(nib, sc, 1, 64, 32, back);
    ok = rc == 0;
    for (int j = 0; j < 64; j++)
        ok &= isfinite(back[j]) && fabsf(back[j] - x[j]) <= fabsf(x[j]) + 1e-38f;
    CHECK(ok, "a row of subnormal weights packs and dequantizes to finite values no further "
              "away than zero would be");
    for (int j = 0; j < 4 * 64; j++)
        x[j] = 0.01f * (float)(j % 7);
    x[3 * 64 + 5] = NAN;
    rc = wt_q_pack_rows(x, 4, 64, 32, nib, sc, NULL, NULL, &bad);
    CHECK(rc != 0 && bad == 3, "a NaN in row 3 is refused and located (row %llu)",
          (unsigned long long)bad);
    x[3 * 64 + 5] = 0, x[1 * 64 + 63] = -INFINITY;
    rc = wt_q_pack_rows(x, 4, 64, 32, nib, sc, NULL, NULL, &bad);
    CHECK(rc != 0 && bad == 1, "-inf in row 1 is refused and located (row %llu)",
          (unsigned long long)bad);
}

/* Squared error of group x at the plain scale bf16(absmax / 7.5), levels rounded and clamped. */
static double plain_error(const float *x, uint32_t g)
{
    float a = 0;
    for (uint32_t j = 0; j < g; j++)
        a = fmaxf(a, fabsf(x[j]));
    float s = wt_q_bf16_f32(wt_q_bf16(a / 7.5f));
    double e = 0;
    for (uint32_t j = 0; j < g && s > 0; j++) {
        float l = fminf(fmaxf(rintf(x[j] / s), -8.0f), 7.0f);
        e += ((double)x[j] - (double)(s * l)) * ((double)x[j] - (double)(s * l));
    }
    return e;
}

static void gaussian_bounds(void)
{
    const uint64_t rows = 1024, k = 1024;
    const double bound[3] = {0.090, 0.099, 0.106}; /* measured 0.0865, 0.0955, 0.1024 */
    float *x = gaussian(rows * k, 99), *back = malloc(sizeof(float) * rows * k);
    uint8_t *nib = malloc(rows * k / 2);
    uint16_t *sc = malloc(2 * rows * k / 32);
    for (int gi = 0; gi < 3; gi++) {
        uint32_t g = 32u << gi;
        double e2 = 0, r2 = 0, d2 = 0;
        uint64_t worse = 0, outside = 0;
        int rc = wt_q_pack_rows(x, rows, k, g, nib, sc, &e2, &r2, NULL);
        wt_q_unpack_rows(nib, sc, rows, k, g, back);
        for (uint64_t g0 = 0; g0 < rows * k; g0 += g) {
            float s = wt_q_bf16_f32(sc[g0 / g]), a = 0;
            double ge = 0;
            for (uint32_t j = 0; j < g; j++)
                a = fmaxf(a, fabsf(x[g0 + j]));
            for (uint32_t j = 0; j < g; j++) {
                double d = (double)x[g0 + j] - back[g0 + j];
                ge += d * d;
                outside += fabs(d) > fmax(s / 2.0, (double)a - 7.0 * s) * (1 + 1e-6);
            }
            worse += ge > plain_error(x + g0, g) * (1 + 1e-5);
            d2 += ge;
        }
        double rel = sqrt(e2 / r2);
        CHECK(rc == 0 && rel <= bound[gi] && fabs(sqrt(d2 / r2) - rel) < 1e-6 * rel,
              "Gaussian rows, group %u: relative RMS error %.4f (bound %.3f), the same from the "
              "dequantized values",
              g, rel, bound[gi]);
        CHECK(worse == 0 && outside == 0,
              "group %u: no group worse than the plain absmax/7.5 scale (%llu are), every "
              "element within max(s/2, absmax - 7s) (%llu are not)",
              g, (unsigned long long)worse, (unsigned long long)outside);
    }
    free(x), free(back), free(nib), free(sc);
}

static void classes(void)
{
    static const struct {
        const char *name;
        enum wt_q_class c;
    } t[] = {
        {"layers.0.mlp.experts.gate_up_proj", WT_Q_EXPERTS},
        {"mtp.layers.0.mlp.experts.down_proj", WT_Q_EXPERTS},
        {"layers.2.linear_attn.in_proj_qkv.weight", WT_Q_GDN},
        {"layers.2.linear_attn.out_proj.weight", WT_Q_GDN},
        {"layers.2.linear_attn.A_log", WT_Q_OTHER},
        {"layers.2.linear_attn.conv1d.weight", WT_Q_OTHER},
        {"layers.3.self_attn.q_proj.weight", WT_Q_ATTN},
        {"layers.3.self_attn.q_norm.weight", WT_Q_OTHER},
        {"layers.3.mlp.shared_expert.down_proj.weight", WT_Q_SHARED},
        {"layers.3.mlp.shared_expert_gate.weight", WT_Q_OTHER},
        {"lm_head.weight", WT_Q_LM_HEAD},
        {"embed_tokens.weight", WT_Q_OTHER},
        {"mtp.fc.weight", WT_Q_MTP_FC},
    };
    int ok = 1;
    for (size_t i = 0; i < sizeof t / sizeof t[0]; i++)
        if (wt_q_classify(t[i].name) != t[i].c) {
            CHECK(0, "%s is in class %s, not %s", t[i].name,
                  wt_q_class_name(wt_q_classify(t[i].name)), wt_q_class_name(t[i].c));
            ok = 0;
        }
    CHECK(ok,
          "tensor classes of %zu names (experts, GDN and attention projections, shared "
          "expert, lm_head, mtp.fc, other)",
          sizeof t / sizeof t[0]);
}

int main(void)
{
    bf16_cases();
    nibble_order();
    exact_round_trips();
    power_of_two_scaling();
    special_groups();
    gaussian_bounds();
    classes();
    return test_done();
}
