/* fill.h — parameter structs and the value function of the synthetic fill kernels.
 *
 * rt's synthetic-weights mode fills the weights allocation on the device from a seed, so a
 * full-size model runs without an 18 GB file; tests use the same kernels for fresh random
 * inputs. Element i of a fill is a pure function of (seed, i): the CPU computes exactly the
 * same values with the functions below, which is how the kernels are tested, and any slice
 * of a tensor can be regenerated without the rest. Shared by kernels (nvcc) and host C. */
#ifndef K_FILL_H
#define K_FILL_H

#include <stdint.h>

#ifdef __CUDACC__
#define K_HD __host__ __device__ __forceinline__
#else
#define K_HD static inline
#endif

/* k_fill_bf16: dst[i] = bf16(center + scale * u(seed, i)), u uniform in [-1, 1).
 * k_fill_f32:  dst[i] = center + scale * u(seed, i) in fp32.
 * k_fill_u32:  dst[i] = 32 random bits of (seed, i) (token ids, words...).
 * k_fill_i4:   dst[i] = those bits with every zero nibble made 8: packed INT4 nibbles q in
 *              1..15, so q - 8 is symmetric about zero. (With q in 0..15 its mean is -0.5, and
 *              a matrix of them has the all-ones direction as an eigenvector of eigenvalue
 *              -0.5 * scale * K: the residual stream of a deep synthetic model collapses onto
 *              it, and every token routes to the same experts.)
 * Launch: any 1-D grid of 1-D blocks; the kernels stride over n. Each thread writes 16 bytes
 * per step; dst must be 16-byte aligned (arena and weight tensors are 256-aligned). */
struct k_fill_params {
    uint64_t dst;   /* device address */
    uint64_t n;     /* elements */
    uint64_t seed;
    float scale;    /* half-width of the uniform range (bf16, f32) */
    float center;   /* its middle (bf16, f32) */
};

/* splitmix64's finaliser over (seed, i): a counter-based generator with no state. */
K_HD uint64_t k_fill_hash(uint64_t seed, uint64_t i)
{
    uint64_t z = seed ^ (i * 0x9E3779B97F4A7C15ull + 0x632BE59BD9B4E019ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

/* float -> bf16 bits, round to nearest even (inputs here are finite). */
K_HD uint16_t k_bf16_bits(float f)
{
    union { float f; uint32_t u; } v;
    v.f = f;
    return (uint16_t)((v.u + 0x7FFFu + ((v.u >> 16) & 1u)) >> 16);
}

K_HD float k_fill_f32_value(uint64_t seed, uint64_t i, float scale, float center)
{
    /* top 24 bits give an exactly representable float in [0, 1) */
    float u = (float)(k_fill_hash(seed, i) >> 40) * (1.0f / 16777216.0f);
#ifdef __CUDA_ARCH__
    /* no fused multiply-add: the CPU rounds the product and the sum separately */
    return __fadd_rn(center, __fmul_rn(2.0f * u - 1.0f, scale));
#else
    return center + (2.0f * u - 1.0f) * scale;
#endif
}

K_HD uint16_t k_fill_bf16_value(uint64_t seed, uint64_t i, float scale, float center)
{
    return k_bf16_bits(k_fill_f32_value(seed, i, scale, center));
}

K_HD uint32_t k_fill_u32_value(uint64_t seed, uint64_t i)
{
    return (uint32_t)(k_fill_hash(seed, i) >> 32);
}

K_HD uint32_t k_fill_i4_value(uint64_t seed, uint64_t i)
{
    const uint32_t w = k_fill_u32_value(seed, i), z = ~w;
    return w | (z & z >> 1 & z >> 2 & z >> 3 & 0x11111111u) << 3; /* nibble 0 -> 8 */
}

#endif
