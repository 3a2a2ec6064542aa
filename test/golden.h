/* golden.h — reading QGLD golden-logit files (test/data/fixtures/README.md) and the metrics
 * every end-to-end comparison uses.
 *
 * Format (little-endian): "QGLD", u32 version 1, u32 n_cases; per case: u32 T, u32 D, u32 V,
 * i32 prompt[T], i32 fed[D], f32 prefill_logits[T][V], f32 decode_logits[D][V]. Decode step s
 * feeds fed[s] at position T + s (teacher forcing). The reader checks every count against the
 * file size before it trusts it. */
#ifndef TEST_GOLDEN_H
#define TEST_GOLDEN_H

#include <math.h>
#include <stdint.h>
#include <string.h>

#include "test.h"

#define GOLDEN_MAX_CASES 64

struct golden_case {
    uint32_t T, D, V;
    const int32_t *prompt;   /* (T) */
    const int32_t *fed;      /* (D) */
    const float *prefill;    /* (T, V) */
    const float *decode;     /* (D, V) */
};

struct golden {
    char *buf;
    uint32_t n;
    struct golden_case c[GOLDEN_MAX_CASES];
};

/* Load path; exits the test with a FAIL line if the file is malformed. */
static inline void golden_load(struct golden *g, const char *path)
{
    size_t len, off = 12;
    uint32_t hdr[3];
    g->buf = test_read_file(path, &len);
    if (len < 12 || (memcpy(hdr, g->buf, 12), memcmp(g->buf, "QGLD", 4)) || hdr[1] != 1 ||
        hdr[2] > GOLDEN_MAX_CASES) {
        printf("FAIL %s is not a QGLD v1 file\n", path);
        exit(1);
    }
    g->n = hdr[2];
    for (uint32_t i = 0; i < g->n; i++) {
        struct golden_case *c = &g->c[i];
        uint32_t tdv[3];
        if (len - off < 12) {
            printf("FAIL %s: truncated in case %u\n", path, i);
            exit(1);
        }
        memcpy(tdv, g->buf + off, 12);
        off += 12;
        c->T = tdv[0], c->D = tdv[1], c->V = tdv[2];
        uint64_t need = 4ull * (c->T + c->D) + 4ull * (c->T + c->D) * c->V;
        if (need > len - off || (off % 4)) {
            printf("FAIL %s: case %u extends past the file\n", path, i);
            exit(1);
        }
        c->prompt = (const int32_t *)(g->buf + off);
        c->fed = c->prompt + c->T;
        c->prefill = (const float *)(c->fed + c->D);
        c->decode = c->prefill + (size_t)c->T * c->V;
        off += need;
    }
}

static inline void golden_free(struct golden *g) { free(g->buf); }

/* ||a - b|| / ||b|| over n values */
static inline double rel_l2(const float *a, const float *b, size_t n)
{
    double num = 0, den = 0;
    for (size_t i = 0; i < n; i++) {
        double d = (double)a[i] - b[i];
        num += d * d;
        den += (double)b[i] * b[i];
    }
    return den > 0 ? sqrt(num / den) : sqrt(num);
}

static inline uint32_t argmax(const float *x, uint32_t n)
{
    uint32_t best = 0;
    for (uint32_t i = 1; i < n; i++)
        if (x[i] > x[best])
            best = i;
    return best;
}

#endif
