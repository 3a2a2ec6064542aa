/* fill.cu — synthetic fills: seeded uniform bf16 and f32, random 32-bit words and INT4 nibbles
 * (see fill.h).
 *
 * Memory-bound by design: each thread computes 8 bf16 values (or 4 words) and writes them with
 * one 16-byte store, striding over the grid, so a fill runs near copy bandwidth. The tail
 * (n not a multiple of the vector) is written element by element. */
#include "fill.h"

extern "C" __global__ void k_fill_bf16(struct k_fill_params p)
{
    uint16_t *dst = (uint16_t *)p.dst;
    uint64_t nvec = p.n / 8;
    uint64_t stride = (uint64_t)gridDim.x * blockDim.x;
    for (uint64_t v = (uint64_t)blockIdx.x * blockDim.x + threadIdx.x; v < nvec; v += stride) {
        uint32_t w[4];
        for (int j = 0; j < 4; j++) {
            uint32_t lo = k_fill_bf16_value(p.seed, v * 8 + 2 * j, p.scale, p.center);
            uint32_t hi = k_fill_bf16_value(p.seed, v * 8 + 2 * j + 1, p.scale, p.center);
            w[j] = lo | (hi << 16);
        }
        *(uint4 *)(dst + v * 8) = make_uint4(w[0], w[1], w[2], w[3]);
    }
    if (blockIdx.x == 0 && threadIdx.x < p.n - nvec * 8) {
        uint64_t i = nvec * 8 + threadIdx.x;
        dst[i] = k_fill_bf16_value(p.seed, i, p.scale, p.center);
    }
}

extern "C" __global__ void k_fill_f32(struct k_fill_params p)
{
    float *dst = (float *)p.dst;
    uint64_t nvec = p.n / 4;
    uint64_t stride = (uint64_t)gridDim.x * blockDim.x;
    for (uint64_t v = (uint64_t)blockIdx.x * blockDim.x + threadIdx.x; v < nvec; v += stride) {
        float4 w = make_float4(k_fill_f32_value(p.seed, v * 4, p.scale, p.center),
                               k_fill_f32_value(p.seed, v * 4 + 1, p.scale, p.center),
                               k_fill_f32_value(p.seed, v * 4 + 2, p.scale, p.center),
                               k_fill_f32_value(p.seed, v * 4 + 3, p.scale, p.center));
        *(float4 *)(dst + v * 4) = w;
    }
    if (blockIdx.x == 0 && threadIdx.x < p.n - nvec * 4) {
        uint64_t i = nvec * 4 + threadIdx.x;
        dst[i] = k_fill_f32_value(p.seed, i, p.scale, p.center);
    }
}

/* words from one of the word value functions */
template <uint32_t (*VAL)(uint64_t, uint64_t)>
__device__ __forceinline__ void fill_words(const struct k_fill_params &p)
{
    uint32_t *dst = (uint32_t *)p.dst;
    uint64_t nvec = p.n / 4;
    uint64_t stride = (uint64_t)gridDim.x * blockDim.x;
    for (uint64_t v = (uint64_t)blockIdx.x * blockDim.x + threadIdx.x; v < nvec; v += stride) {
        uint4 w = make_uint4(VAL(p.seed, v * 4), VAL(p.seed, v * 4 + 1), VAL(p.seed, v * 4 + 2),
                             VAL(p.seed, v * 4 + 3));
        *(uint4 *)(dst + v * 4) = w;
    }
    if (blockIdx.x == 0 && threadIdx.x < p.n - nvec * 4) {
        uint64_t i = nvec * 4 + threadIdx.x;
        dst[i] = VAL(p.seed, i);
    }
}

extern "C" __global__ void k_fill_u32(struct k_fill_params p)
{
    fill_words<k_fill_u32_value>(p);
}

extern "C" __global__ void k_fill_i4(struct k_fill_params p)
{
    fill_words<k_fill_i4_value>(p);
}
