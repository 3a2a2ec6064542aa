/* sample.cu — k_sample_part and k_sample_pick: the next token from fp32 logits (sample.h).
 *
 * Order. Every comparison uses one 64-bit key per logit: the float mapped to an unsigned
 * integer that orders like the float (-0 as +0), shifted up 32, over 0xFFFFFFFF - id. Keys are
 * distinct, a larger key ranks first, and equal logits rank the lower id first, so "the max"
 * is always the lowest id among equal maxima. Key 0 marks an empty slot.
 *
 * k_sample_part (grid K_SAMPLE_PARTS, block 256): CTA s reads slice s (sample.h) in tiles of
 * 4096 logits, 16 contiguous per thread in registers. Each warp finds the K-th largest of its
 * 512 (K = K_SAMPLE_KEEP) by a bitwise search on the order key (one warp reduction per bit, no
 * block barrier), compacts the keys above it and the lowest-id ties at it with one warp scan,
 * and sorts them with a bitonic network in registers. A tree of warp merges (two sorted lists
 * of 64 into their sorted top 64: elementwise max against the reversed partner, then a bitonic
 * half-cleaner cascade) joins the 8 warps and the best of earlier tiles: 4 barriers a tile.
 * With temperature > 0 and top_k == 0 it also writes the slice summary: S_s = sum of
 * e_i = exp((l_i - m_s) * (1/T)) over the whole slice (m_s its max), and one exact draw from
 * the slice's softmax, the winner of the exponential race argmax_i e_i / E_i with E_i ~ Exp(1)
 * (the Gumbel-max trick in the exp domain).
 *
 * k_sample_pick (grid 1, block 1024): the step state is copied to shared memory, and thread 0
 * alone writes it back at the end. Greedy (temperature 0) is the best slot 0 over the slices.
 * Otherwise the same merge tree over the 64 slice lists yields the global top K_SAMPLE_KEEP,
 * exact because each slice kept its own top K_SAMPLE_KEEP. Weights e_i = exp((l_i - M) / T);
 * the restricted set is the top k (k = top_k clamped to K_SAMPLE_KEEP, or all candidates when
 * top_k == 0); its mass Z is the sum of its weights, or with top_k == 0 the exact normaliser
 * over the whole vocabulary, Z = sum_s S_s exp((m_s - M) / T). The nucleus is the shortest
 * prefix whose cumulative weight reaches top_p * Z; one uniform u = hash(seed, n_new, 0)
 * picks inside it by inverse CDF.
 *
 * The one approximation (top_k == 0 only): when the K_SAMPLE_KEEP most likely tokens hold
 * less than top_p of the probability, the nucleus extends past the candidates and the token is
 * drawn from the full softmax instead, exactly: a slice is chosen with probability
 * S_s exp((m_s - M) / T) / Z by u, and its race winner is taken. top_p is then not applied:
 * the total-variation distance to the exact nucleus distribution is at most 1 - top_p, and it
 * is zero for top_p = 1 (pure temperature sampling is exact). top_k above K_SAMPLE_KEEP is
 * clamped to K_SAMPLE_KEEP. Limits of resolution: u has 24 bits, E_i comes from a 23-bit
 * uniform (so E_i >= 6e-8), and weights below float range (l_i - m_s < -87 T) count as 0.
 *
 * The generator: splitmix64's finaliser applied twice, z = mix(mix(seed ^ (n * phi + c1)) ^
 * (j * c2 + c3)). Draw j = 0 is the pick's u = top 24 bits / 2^24 in [0, 1); j = 1 + id gives
 * token id's E = -log((top 23 bits + 0.5) / 2^23). Counter-based: graph replays draw fresh
 * numbers because n_new advances, and a draw depends on nothing else.
 *
 * Stop rules (after the token is published): done when the token is a stop id, when n_new
 * reaches max_new, or when pos reaches max_pos. A prefill pick first adds n_tokens to pos and
 * samples only on the last chunk; a decode pick returns at once when done and otherwise counts
 * the consumed position (pos + 1). The ring entry {token, seq = n_new + 1} goes to slot
 * n_new % K_RING_SLOTS in one 8-byte store followed by __threadfence_system(). Both kernels
 * return at once in a decode step after done and in a prefill chunk that is not the last. */
#include "common.cuh"
#include "sample.h"

#define SAMPLE_PART_THREADS 256
#define SAMPLE_PER_THREAD   16
#define SAMPLE_TILE         (SAMPLE_PART_THREADS * SAMPLE_PER_THREAD)
#define SAMPLE_PICK_THREADS 1024
#define SAMPLE_FULL         0xffffffffu

/* ---- order keys and the generator ------------------------------------------------------------ */

__device__ __forceinline__ uint32_t sample_fkey(float v)
{
    uint32_t u = __float_as_uint(v);
    u = u == 0x80000000u ? 0u : u;
    return (u & 0x80000000u) ? ~u : (u | 0x80000000u);
}

__device__ __forceinline__ float sample_fval(uint32_t k)
{
    return __uint_as_float((k & 0x80000000u) ? (k & 0x7fffffffu) : ~k);
}

__device__ __forceinline__ uint64_t sample_key(uint32_t fk, uint32_t id)
{
    return ((uint64_t)fk << 32) | (0xffffffffu - id);
}

__device__ __forceinline__ int32_t sample_key_id(uint64_t k)
{
    return (int32_t)(0xffffffffu - (uint32_t)k);
}
__device__ __forceinline__ float sample_key_val(uint64_t k)
{
    return sample_fval((uint32_t)(k >> 32));
}

/* a candidate slot as a key; empty slots (id < 0) are 0 */
__device__ __forceinline__ uint64_t sample_slot_key(int2 c)
{
    return c.y < 0 ? 0ull : sample_key(sample_fkey(__int_as_float(c.x)), (uint32_t)c.y);
}

__device__ __forceinline__ uint64_t sample_mix(uint64_t z)
{
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

/* first round: depends on (seed, n) only, so a thread hashes it once for all its ids */
__device__ __forceinline__ uint64_t sample_hash_n(uint64_t seed, uint32_t n)
{
    return sample_mix(seed ^ ((uint64_t)n * 0x9E3779B97F4A7C15ull + 0x632BE59BD9B4E019ull));
}

__device__ __forceinline__ uint64_t sample_hash_j(uint64_t hn, uint32_t j)
{
    return sample_mix(hn ^ ((uint64_t)j * 0xD1B54A32D192ED03ull + 0x8CB92BA72F3D8DD7ull));
}

/* Token id's Exp(1) variate -log(u) for the exponential race, u in (0, 1) from 23 bits
 * ((k + 0.5) / 2^23 is exact in float, so u never rounds to 1). */
__device__ __forceinline__ float sample_expo(uint64_t hn, uint32_t id)
{
    float u = ((float)(sample_hash_j(hn, 1u + id) >> 41) + 0.5f) * (1.0f / 8388608.0f);
    return -logf(u);
}

__device__ __forceinline__ uint32_t sample_slice_len(uint32_t V)
{
    uint32_t L = (V + K_SAMPLE_PARTS - 1) / K_SAMPLE_PARTS;
    return (L + 3u) & ~3u;
}

/* ---- warp sorting networks over 64 keys (lane l holds elements l and l + 32) ----------------- */

/* Take y over x where a compare-exchange keeps the max (keep_max) or the min. */
__device__ __forceinline__ uint64_t sample_cx(uint64_t x, uint64_t y, bool keep_max)
{
    return keep_max == (y > x) ? y : x;
}

/* Bitonic sort of 64 keys descending; lane l holds elements l and l + 32. */
__device__ __forceinline__ void sample_sort64(uint64_t &x0, uint64_t &x1)
{
    int l = threadIdx.x & 31;
#pragma unroll
    for (int k = 2; k <= 64; k <<= 1) {
#pragma unroll
        for (int j = k >> 1; j > 0; j >>= 1) {
            if (j == 32) { /* k == 64: one descending run, partners in one lane */
                uint64_t a = x0 > x1 ? x0 : x1, b = x0 > x1 ? x1 : x0;
                x0 = a, x1 = b;
                continue;
            }
            uint64_t y0 = __shfl_xor_sync(SAMPLE_FULL, x0, j),
                     y1 = __shfl_xor_sync(SAMPLE_FULL, x1, j);
            bool lower = (l & j) == 0; /* runs with (i & k) == 0 descend; the rest ascend */
            x0 = sample_cx(x0, y0, lower == ((l & k) == 0));
            x1 = sample_cx(x1, y1, lower == (((l + 32) & k) == 0));
        }
    }
}

/* Sort a bitonic sequence of 64 keys descending; lane l holds elements l and l + 32. */
__device__ __forceinline__ void sample_bitonic64(uint64_t &x0, uint64_t &x1)
{
    uint64_t a = x0 > x1 ? x0 : x1, b = x0 > x1 ? x1 : x0;
    x0 = a, x1 = b;
    int lane = threadIdx.x & 31;
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) {
        uint64_t y0 = __shfl_xor_sync(SAMPLE_FULL, x0, o), y1 = __shfl_xor_sync(SAMPLE_FULL, x1, o);
        bool lower = (lane & o) == 0; /* the lower index keeps the larger key */
        x0 = lower == (y0 > x0) ? y0 : x0;
        x1 = lower == (y1 > x1) ? y1 : x1;
    }
}

/* One warp: the sorted top 64 of two descending lists a and b of 64 keys (max(a[i], b[63-i])
 * holds exactly the top 64 of the union and is bitonic). Returns elements lane and lane + 32. */
__device__ __forceinline__ void sample_merge64(const uint64_t *a, const uint64_t *b, uint64_t &x0,
                                               uint64_t &x1)
{
    int l = threadIdx.x & 31;
    uint64_t a0 = a[l], a1 = a[l + 32], b0 = b[63 - l], b1 = b[31 - l];
    x0 = a0 > b0 ? a0 : b0;
    x1 = a1 > b1 ? a1 : b1;
    sample_bitonic64(x0, x1);
}

/* ---- k_sample_part: warp-level selection, then a merge tree ---------------------------------- */

#define SAMPLE_WARPS (SAMPLE_PART_THREADS / 32)

struct sample_part_smem {
    uint64_t wl[SAMPLE_WARPS][64];    /* each warp's top K_SAMPLE_KEEP, sorted; merge rows */
    uint64_t t[SAMPLE_WARPS / 2][64]; /* merge rows */
    uint64_t run[64];                 /* the slice's best so far, sorted; slot 63 stays 0 */
    float red[32];
    float qv[SAMPLE_WARPS];
    int32_t qid[SAMPLE_WARPS];
};

/* Load this thread's 16 logits of the tile as order keys (0 past hi). */
__device__ __forceinline__ void sample_load(const float *x, uint32_t base, uint32_t hi,
                                            uint32_t fk[SAMPLE_PER_THREAD])
{
    if (base + SAMPLE_PER_THREAD <= hi) {
#pragma unroll
        for (int q = 0; q < SAMPLE_PER_THREAD / 4; q++) {
            float4 v = __ldg((const float4 *)(x + base) + q);
            fk[4 * q] = sample_fkey(v.x), fk[4 * q + 1] = sample_fkey(v.y);
            fk[4 * q + 2] = sample_fkey(v.z), fk[4 * q + 3] = sample_fkey(v.w);
        }
    } else {
#pragma unroll
        for (int r = 0; r < SAMPLE_PER_THREAD; r++)
            fk[r] = base + r < hi ? sample_fkey(__ldg(x + base + r)) : 0u;
    }
}

/* The K-th largest order key of the warp's 512 (K >= 1): the largest t with
 * count(key >= t) >= K, built bit by bit from the top. */
__device__ __forceinline__ uint32_t sample_warp_kth(const uint32_t fk[SAMPLE_PER_THREAD],
                                                    uint32_t K)
{
    uint32_t t = 0;
    for (int b = 31; b >= 0; b--) {
        uint32_t c = t | (1u << b), n = 0;
#pragma unroll
        for (int r = 0; r < SAMPLE_PER_THREAD; r++)
            n += fk[r] >= c;
        if (__reduce_add_sync(SAMPLE_FULL, n) >= K)
            t = c;
    }
    return t;
}

/* Write the warp's top K keys (unsorted) to dst[0..K) and zeros to dst[K..64): every key
 * above tau, then the ties at tau with the lowest ids (lanes own contiguous ids in order). */
__device__ __forceinline__ void sample_warp_keep(const uint32_t fk[SAMPLE_PER_THREAD],
                                                 uint32_t base, uint32_t tau, uint32_t K,
                                                 uint64_t *dst)
{
    int l = threadIdx.x & 31;
    uint32_t gt = 0, eq = 0;
    if (K) {
#pragma unroll
        for (int r = 0; r < SAMPLE_PER_THREAD; r++)
            gt += fk[r] > tau, eq += fk[r] == tau;
    }
    /* both counts in one scan: each total is at most 512, so the halves never carry */
    uint32_t v = gt << 16 | eq, x = v;
#pragma unroll
    for (int o = 1; o < 32; o <<= 1) {
        uint32_t y = __shfl_up_sync(SAMPLE_FULL, x, o);
        x += l >= o ? y : 0u;
    }
    uint32_t tot = __shfl_sync(SAMPLE_FULL, x, 31), pre = x - v;
    uint32_t g = pre >> 16, t = pre & 0xffffu, n_gt = tot >> 16, need = K - n_gt;
    if (K) {
#pragma unroll
        for (int r = 0; r < SAMPLE_PER_THREAD; r++) {
            if (fk[r] > tau) {
                dst[g++] = sample_key(fk[r], base + r);
            } else if (fk[r] == tau) {
                if (t < need)
                    dst[n_gt + t] = sample_key(fk[r], base + r);
                t++;
            }
        }
    }
    for (uint32_t i = K + l; i < 64; i += 32)
        dst[i] = 0ull;
    __syncwarp();
}

/* Merge the warps' sorted lists (s.wl) and the running best (s.run) into s.run: a tree of
 * warp merges, one barrier per level. */
__device__ __forceinline__ void sample_part_tree(struct sample_part_smem &s)
{
    int w = threadIdx.x >> 5, l = threadIdx.x & 31;
    uint64_t x0, x1;
    __syncthreads();
    if (w < SAMPLE_WARPS / 2) {
        sample_merge64(s.wl[2 * w], s.wl[2 * w + 1], x0, x1);
        s.t[w][l] = x0, s.t[w][l + 32] = x1;
    }
    __syncthreads();
    if (w < SAMPLE_WARPS / 4) {
        sample_merge64(s.t[2 * w], s.t[2 * w + 1], x0, x1);
        s.wl[w][l] = x0, s.wl[w][l + 32] = x1;
    }
    __syncthreads();
    if (w == 0) {
        sample_merge64(s.wl[0], s.wl[1], x0, x1);
        s.t[0][l] = x0, s.t[0][l + 32] = x1;
        __syncwarp();
        /* each lane reads and writes only its own two slots of s.run */
        sample_merge64(s.run, s.t[0], x0, x1);
        s.run[l] = x0, s.run[l + 32] = l == 31 ? 0ull : x1;
    }
    __syncthreads();
}

/* Add this thread's logits of the tile to its share of S_s and to its exponential race:
 * e = exp((l - m) * (1/T)), the race key e / E with E ~ Exp(1) (the Gumbel-max trick in the
 * exp domain: argmax_i e_i / E_i is distributed as softmax over the slice). */
__device__ __forceinline__ void sample_tail_acc(const uint32_t fk[SAMPLE_PER_THREAD], uint32_t base,
                                                float m, float invT, uint64_t hn, float *sum,
                                                float *qbest, int32_t *qid)
{
#pragma unroll
    for (int r = 0; r < SAMPLE_PER_THREAD; r++) {
        if (fk[r] <= 0x007fffffu) /* past hi, or -inf: no mass */
            continue;
        float e = expf((sample_fval(fk[r]) - m) * invT);
        *sum += e;
        float q = e / sample_expo(hn, base + r);
        if (q > *qbest) /* ids rise with r: ties keep the lower id */
            *qbest = q, *qid = (int32_t)(base + r);
    }
}

/* Block argmax of (q, id), ties to the lower id; returns the id on every thread. */
__device__ __forceinline__ int32_t sample_block_argmax(float q, int32_t id,
                                                       struct sample_part_smem &s)
{
    for (int o = 16; o > 0; o >>= 1) {
        float q2 = __shfl_xor_sync(SAMPLE_FULL, q, o);
        int32_t i2 = __shfl_xor_sync(SAMPLE_FULL, id, o);
        if (q2 > q || (q2 == q && i2 >= 0 && (id < 0 || i2 < id)))
            q = q2, id = i2;
    }
    if ((threadIdx.x & 31) == 0)
        s.qv[threadIdx.x >> 5] = q, s.qid[threadIdx.x >> 5] = id;
    __syncthreads();
    q = s.qv[0], id = s.qid[0];
    for (int w = 1; w < SAMPLE_WARPS; w++)
        if (s.qv[w] > q || (s.qv[w] == q && s.qid[w] >= 0 && (id < 0 || s.qid[w] < id)))
            q = s.qv[w], id = s.qid[w];
    return id;
}

/* Max of the slice when it spans several tiles (the summary needs it before the first tile). */
__device__ __forceinline__ float sample_slice_max(const float *x, uint32_t lo, uint32_t hi,
                                                  struct sample_part_smem &s)
{
    float m = -INFINITY;
    for (uint32_t i = lo + threadIdx.x; i < hi; i += SAMPLE_PART_THREADS)
        m = fmaxf(m, __ldg(x + i));
    return k_block_max(m, s.red);
}

/* One tile: each warp selects and sorts its top K_SAMPLE_KEEP, the tree merges them into s.run. */
__device__ __forceinline__ void sample_tile(const uint32_t fk[SAMPLE_PER_THREAD], uint32_t t0,
                                            uint32_t t1, uint32_t base, struct sample_part_smem &s)
{
    int w = threadIdx.x >> 5, l = threadIdx.x & 31;
    uint32_t wlo = t0 + 32 * SAMPLE_PER_THREAD * w;
    uint32_t nw = t1 > wlo ? t1 - wlo : 0u;
    uint32_t K = nw < K_SAMPLE_KEEP ? nw : K_SAMPLE_KEEP;
    uint32_t tau = K ? sample_warp_kth(fk, K) : 0u;
    sample_warp_keep(fk, base, tau, K, s.wl[w]);
    uint64_t x0 = s.wl[w][l], x1 = s.wl[w][l + 32];
    sample_sort64(x0, x1);
    s.wl[w][l] = x0, s.wl[w][l + 32] = x1;
    sample_part_tree(s);
}

extern "C" __global__ void __launch_bounds__(SAMPLE_PART_THREADS)
    k_sample_part(struct k_sample_params p)
{
    k_pdl_enter();
    __shared__ struct sample_part_smem s;
    const struct k_step *st = k_step_of(p.step);
    if ((p.prefill ? !st->last_chunk : st->done) || blockIdx.x >= K_SAMPLE_PARTS)
        return;
    const float *x = (const float *)p.logits;
    const float T = st->temperature, invT = 1.0f / T;
    const int tail = T > 0.0f && st->top_k == 0;
    const uint64_t hn = sample_hash_n(st->seed, st->n_new);
    uint32_t L = sample_slice_len(p.V);
    uint32_t lo = blockIdx.x * L < p.V ? blockIdx.x * L : p.V;
    uint32_t hi = p.V - lo < L ? p.V : lo + L;
    int multi = hi - lo > SAMPLE_TILE;
    if (threadIdx.x < 64)
        s.run[threadIdx.x] = 0ull;
    float m = multi && tail ? sample_slice_max(x, lo, hi, s) : -INFINITY;
    float sum = 0.0f, qbest = -INFINITY;
    int32_t qid = -1;
    for (uint32_t t0 = lo; t0 < hi; t0 += SAMPLE_TILE) {
        uint32_t fk[SAMPLE_PER_THREAD], base = t0 + SAMPLE_PER_THREAD * threadIdx.x;
        uint32_t t1 = hi - t0 < SAMPLE_TILE ? hi : t0 + SAMPLE_TILE;
        sample_load(x, base, t1, fk);
        sample_tile(fk, t0, t1, base, s);
        if (tail) {
            if (!multi) /* one tile: its best key is the slice max */
                m = sample_key_val(s.run[0]);
            if (m > -INFINITY)
                sample_tail_acc(fk, base, m, invT, hn, &sum, &qbest, &qid);
        }
    }
    float S = 0.0f;
    if (tail) {
        S = k_block_sum(sum, s.red);
        qid = sample_block_argmax(qbest, qid, s);
    }
    int2 *out = (int2 *)p.cand + (size_t)blockIdx.x * K_SAMPLE_CAND;
    uint32_t j = threadIdx.x;
    if (j < K_SAMPLE_KEEP) {
        uint64_t k = s.run[j];
        out[j] = k ? make_int2(__float_as_int(sample_key_val(k)), sample_key_id(k))
                   : make_int2(__float_as_int(-INFINITY), -1);
    } else if (j == K_SAMPLE_KEEP) {
        out[j] = tail && S > 0.0f ? make_int2(__float_as_int(S), qid) : make_int2(0, -1);
    }
}

/* ---- k_sample_pick --------------------------------------------------------------------------- */

struct sample_pick_smem {
    uint64_t buf[2][K_SAMPLE_PARTS / 2][64]; /* merge tree ping-pong: sorted lists of 64 */
    struct k_step st;
};

/* The global top 64 keys, sorted (the first K_SAMPLE_KEEP are exact). */
__device__ __forceinline__ const uint64_t *sample_top(const int2 *cand, struct sample_pick_smem &s)
{
    int w = threadIdx.x >> 5, l = threadIdx.x & 31;
    uint64_t x0, x1;
    if (w < K_SAMPLE_PARTS / 2) { /* level 1 straight from the candidates; the summary slot is 0 */
        const int2 *a = cand + (size_t)(2 * w) * K_SAMPLE_CAND, *b = a + K_SAMPLE_CAND;
        uint64_t a0 = sample_slot_key(a[l]),
                 a1 = l + 32 < K_SAMPLE_KEEP ? sample_slot_key(a[l + 32]) : 0ull;
        uint64_t b0 = l == 0 ? 0ull : sample_slot_key(b[63 - l]), b1 = sample_slot_key(b[31 - l]);
        x0 = a0 > b0 ? a0 : b0;
        x1 = a1 > b1 ? a1 : b1;
        sample_bitonic64(x0, x1);
        s.buf[0][w][l] = x0, s.buf[0][w][l + 32] = x1;
    }
    __syncthreads();
    int in = 0;
    for (int n = K_SAMPLE_PARTS / 4; n >= 1; n >>= 1, in ^= 1) {
        if (w < n) {
            sample_merge64(s.buf[in][2 * w], s.buf[in][2 * w + 1], x0, x1);
            s.buf[in ^ 1][w][l] = x0, s.buf[in ^ 1][w][l + 32] = x1;
        }
        __syncthreads();
    }
    return s.buf[in][0];
}

/* Greedy (warp 0): the best slot 0 over the slices. */
__device__ __forceinline__ int32_t sample_greedy(const int2 *cand)
{
    int l = threadIdx.x & 31;
    uint64_t a = sample_slot_key(cand[(size_t)l * K_SAMPLE_CAND]);
    uint64_t b = sample_slot_key(cand[(size_t)(l + 32) * K_SAMPLE_CAND]);
    uint64_t k = a > b ? a : b;
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) {
        uint64_t y = __shfl_xor_sync(SAMPLE_FULL, k, o);
        k = y > k ? y : k;
    }
    return k ? sample_key_id(k) : 0;
}

/* Inclusive warp scan of a pair per lane (elements 2l, 2l + 1); returns both prefixes. */
__device__ __forceinline__ void sample_scan_pair(float e0, float e1, float &c0, float &c1)
{
    int l = threadIdx.x & 31;
    float x = e0 + e1;
#pragma unroll
    for (int o = 1; o < 32; o <<= 1) {
        float y = __shfl_up_sync(SAMPLE_FULL, x, o);
        x += l >= o ? y : 0.0f;
    }
    c0 = x - e1, c1 = x;
}

/* Index of the first element (2l, 2l + 1 per lane) whose flag is set, or 64. */
__device__ __forceinline__ uint32_t sample_first(bool f0, bool f1)
{
    int l = threadIdx.x & 31;
    return __reduce_min_sync(SAMPLE_FULL, f0 ? 2u * l : f1 ? 2u * l + 1 : 64u);
}

/* Value of element i (< 64) of a pair-per-lane array. */
__device__ __forceinline__ float sample_at(float c0, float c1, uint32_t i)
{
    float a = __shfl_sync(SAMPLE_FULL, c0, i >> 1), b = __shfl_sync(SAMPLE_FULL, c1, i >> 1);
    return i & 1 ? b : a;
}

/* Temperature / top-k / top-p draw (warp 0, after sample_top). */
__device__ __forceinline__ int32_t sample_draw(const int2 *cand, const uint64_t *top,
                                               const struct k_step &st)
{
    int l = threadIdx.x & 31;
    const float T = st.temperature;
    uint64_t t0 = top[2 * l], t1 = 2 * l + 1 < K_SAMPLE_KEEP ? top[2 * l + 1] : 0ull;
    uint32_t nv =
        __popc(__ballot_sync(SAMPLE_FULL, t0 != 0)) + __popc(__ballot_sync(SAMPLE_FULL, t1 != 0));
    float M = sample_key_val(top[0]);
    if (!(M > -INFINITY)) /* every logit -inf: nothing to weigh, take the max */
        return sample_key_id(top[0]);
    uint32_t k = st.top_k && st.top_k < nv ? st.top_k : nv;
    float e0 = 2u * l < k ? expf((sample_key_val(t0) - M) / T) : 0.0f;
    float e1 = 2u * l + 1 < k ? expf((sample_key_val(t1) - M) / T) : 0.0f;
    float c0, c1;
    sample_scan_pair(e0, e1, c0, c1);
    /* the whole-vocabulary normaliser from the slice summaries (top_k == 0) */
    float w0 = 0.0f, w1 = 0.0f, W0, W1;
    if (!st.top_k) {
        int2 a = cand[(size_t)(2 * l) * K_SAMPLE_CAND],
             as = cand[(size_t)(2 * l) * K_SAMPLE_CAND + K_SAMPLE_KEEP];
        int2 b = cand[(size_t)(2 * l + 1) * K_SAMPLE_CAND],
             bs = cand[(size_t)(2 * l + 1) * K_SAMPLE_CAND + K_SAMPLE_KEEP];
        w0 = a.y >= 0 && as.y >= 0 ? __int_as_float(as.x) * expf((__int_as_float(a.x) - M) / T)
                                   : 0.0f;
        w1 = b.y >= 0 && bs.y >= 0 ? __int_as_float(bs.x) * expf((__int_as_float(b.x) - M) / T)
                                   : 0.0f;
    }
    sample_scan_pair(w0, w1, W0, W1);
    float Zall = __shfl_sync(SAMPLE_FULL, W1, 31);
    float Z = st.top_k ? sample_at(c0, c1, k - 1) : Zall;
    float th = st.top_p * Z;
    float u =
        (float)(sample_hash_j(sample_hash_n(st.seed, st.n_new), 0) >> 40) * (1.0f / 16777216.0f);
    uint32_t j = sample_first(2u * l < k && c0 >= th, 2u * l + 1 < k && c1 >= th);
    if (j == 64 && st.top_k)
        j = k - 1; /* top_p above 1: the whole top k */
    if (j < 64) {
        float r = u * sample_at(c0, c1, j);
        uint32_t i = sample_first(2u * l <= j && c0 > r, 2u * l + 1 <= j && c1 > r);
        return sample_key_id(top[i < 64 ? i : j]);
    }
    /* the nucleus reaches past the candidates: one exact draw from the full softmax */
    float r = u * Zall;
    uint32_t sl = sample_first(w0 > 0.0f && W0 > r, w1 > 0.0f && W1 > r);
    if (sl == 64) /* rounding at the very end: the last slice with mass */
        sl = __reduce_max_sync(SAMPLE_FULL, w1 > 0.0f ? 2u * l + 1 : w0 > 0.0f ? 2u * l : 0u);
    int32_t id = cand[(size_t)sl * K_SAMPLE_CAND + K_SAMPLE_KEEP].y;
    return id >= 0 ? id : sample_key_id(top[0]);
}

/* Publish the token, advance the step, apply the stop rules (thread 0). */
__device__ __forceinline__ void sample_emit(const struct k_sample_params &p, const struct k_step &s,
                                            int32_t tok)
{
    struct k_step *st = (struct k_step *)p.step;
    struct k_ring_entry *ring = (struct k_ring_entry *)p.ring;
    uint32_t n = s.n_new, pos = p.prefill ? s.pos + s.n_tokens : s.pos + 1;
    unsigned long long e = (unsigned long long)(uint32_t)tok | (unsigned long long)(n + 1) << 32;
    *(volatile unsigned long long *)&ring[n % K_RING_SLOTS] = e;
    __threadfence_system();
    int stop = n + 1 >= s.max_new || pos >= s.max_pos;
    for (uint32_t i = 0; i < s.n_stop && i < K_MAX_STOP_IDS; i++)
        stop |= s.stop_ids[i] == tok;
    st->token = tok;
    st->n_new = n + 1;
    st->pos = pos;
    if (stop)
        st->done = 1;
}

extern "C" __global__ void __launch_bounds__(SAMPLE_PICK_THREADS)
    k_sample_pick(struct k_sample_params p)
{
    k_pdl_enter();
    __shared__ struct sample_pick_smem s;
    if (threadIdx.x == 0)
        s.st = *(const struct k_step *)p.step;
    __syncthreads();
    if (p.prefill && !s.st.last_chunk) {
        if (threadIdx.x == 0)
            ((struct k_step *)p.step)->pos = s.st.pos + s.st.n_tokens;
        return;
    }
    if (!p.prefill && s.st.done)
        return;
    const int2 *cand = (const int2 *)p.cand;
    int32_t tok;
    if (s.st.temperature > 0.0f) {
        const uint64_t *top = sample_top(cand, s);
        if (threadIdx.x >= 32)
            return;
        tok = sample_draw(cand, top, s.st);
    } else {
        if (threadIdx.x >= 32)
            return;
        tok = sample_greedy(cand);
    }
    if (threadIdx.x == 0)
        sample_emit(p, s.st, tok);
}
