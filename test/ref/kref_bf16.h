/* kref_bf16.h — bf16 arithmetic for the per-kernel CPU references and GPU tests.
 *
 * Every kernel family's reference rounds where PyTorch rounds (MODEL.md §2); these are the one
 * set of helpers they share: bits <-> float, round to nearest even (NaN stays a quiet NaN), the
 * value a bf16 op leaves, and the spacing of bf16 values for tolerances. */
#ifndef KREF_BF16_H
#define KREF_BF16_H

#include <math.h>
#include <stdint.h>
#include <string.h>

static inline float kref_bf2f(uint16_t h)
{
    uint32_t u = (uint32_t)h << 16;
    float f;
    memcpy(&f, &u, 4);
    return f;
}

static inline uint16_t kref_f2bf(float x)
{
    uint32_t u;
    memcpy(&u, &x, 4);
    if ((u & 0x7FFFFFFFu) > 0x7F800000u) /* NaN: keep it a (quiet) NaN */
        return (uint16_t)((u >> 16) | 0x40);
    u += 0x7FFFu + ((u >> 16) & 1u); /* round to nearest, ties to even */
    return (uint16_t)(u >> 16);
}

/* the value PyTorch holds after a bf16 op that computed x in fp32 */
static inline float kref_round(float x) { return kref_bf2f(kref_f2bf(x)); }

/* distance between adjacent bf16 values at |x| (x normal), 0 for x = 0 */
static inline float kref_bf16_ulp(float x)
{
    if (x == 0.0f)
        return 0.0f;
    int e;
    frexpf(fabsf(x), &e); /* |x| = m 2^e, m in [0.5, 1): 8 significant bits -> ulp 2^(e-8) */
    return ldexpf(1.0f, e - 8);
}

#endif
