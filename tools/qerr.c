/* qerr.c — measure INT4 reconstruction error of a checkpoint, symmetric against asymmetric.
 *
 *   qerr --in DIR [--group G]...
 *
 * Why: DESIGN.md §7 leaves the INT4 flavour (symmetric, or with zero points) to measured
 * reconstruction error and kernel cost, and the image layout (kern/quant.h) holds symmetric
 * groups only. This tool reads every tensor the converter would store as INT4 (through the
 * converter's checkpoint reader) and reports, per tensor class, the relative RMS error
 * ||W - deq(Q(W))|| / ||W|| of four schemes at each group size:
 *
 *   sym-plain   symmetric, s = bf16(absmax / 7.5), levels -8..7
 *   sym-search  symmetric as the converter does it (weights/quant.c: best of 9 scales)
 *   asym        s = bf16((max - min) / 15), integer zero point z in 0..15, value s (q - z)
 *   asym-search asym with the range shrunk by 0..20% in 5 steps, the best kept per group
 *
 * Storage per weight: symmetric 4 + 16/G bits; asymmetric adds the zero point, 4/G bits if
 * packed as a nibble (16/G as bf16). Kernel cost: the dequantization (q - z) * s costs what
 * (q - 8) * s costs once z is loaded per group, so the difference is those bytes.
 * Exit status: 0 measured, 1 the checkpoint cannot be read, 2 bad arguments. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "weights/checkpoint.h"
#include "weights/manifest.h"
#include "weights/quant.h"

#define NSCHEMES   4
#define BLOCK_ROWS 256

static const char *scheme_names[NSCHEMES] = {"sym-plain", "sym-search", "asym", "asym-search"};

struct tally {
    double err2[WT_Q_NCLASSES][NSCHEMES], ref2[WT_Q_NCLASSES];
    uint64_t elems[WT_Q_NCLASSES];
};

static float round_bf16(float x)
{
    return wt_q_bf16_f32(wt_q_bf16(x));
}

/* Squared error of group x at symmetric scale bf16(absmax / 7.5). */
static double sym_plain(const float *x, uint32_t g)
{
    float a = 0;
    for (uint32_t j = 0; j < g; j++)
        a = fmaxf(a, fabsf(x[j]));
    float s = round_bf16(a / 7.5f);
    double e = 0;
    for (uint32_t j = 0; j < g; j++) {
        float l = s > 0 ? fminf(fmaxf(rintf(x[j] / s), -8.0f), 7.0f) : 0.0f;
        double d = (double)x[j] - (double)(s * l);
        e += d * d;
    }
    return e;
}

/* Squared error of group x, asymmetric over [shrink * min, shrink * max]. */
static double asym_at(const float *x, uint32_t g, float lo, float hi, float shrink)
{
    float s = round_bf16((hi - lo) * shrink / 15.0f);
    if (!(s > 0))
        return sym_plain(x, g); /* a constant group: any scheme is exact or near it */
    float z = fminf(fmaxf(rintf(-lo * shrink / s), 0.0f), 15.0f);
    double e = 0;
    for (uint32_t j = 0; j < g; j++) {
        float q = fminf(fmaxf(rintf(x[j] / s) + z, 0.0f), 15.0f);
        double d = (double)x[j] - (double)(s * (q - z));
        e += d * d;
    }
    return e;
}

static double asym(const float *x, uint32_t g, int search)
{
    float lo = x[0], hi = x[0];
    for (uint32_t j = 1; j < g; j++)
        lo = fminf(lo, x[j]), hi = fmaxf(hi, x[j]);
    double best = asym_at(x, g, lo, hi, 1.0f);
    for (int k = 1; search && k < 5; k++) {
        double e = asym_at(x, g, lo, hi, 1.0f - 0.05f * (float)k);
        best = e < best ? e : best;
    }
    return best;
}

/* Add rows x (rows, k) of a tensor in class c to the tally at group g. */
static void measure(struct tally *t, enum wt_q_class c, const float *x, uint64_t rows, uint64_t k,
                    uint32_t g, uint8_t *nib, uint16_t *sc)
{
    double e = 0, r = 0;
    wt_q_pack_rows(x, rows, k, g, nib, sc, &e, &r, NULL);
    t->err2[c][1] += e;
    t->ref2[c] += r;
    t->elems[c] += rows * k;
    for (uint64_t g0 = 0; g0 < rows * k; g0 += g) {
        t->err2[c][0] += sym_plain(x + g0, g);
        t->err2[c][2] += asym(x + g0, g, 0);
        t->err2[c][3] += asym(x + g0, g, 1);
    }
}

static int run(const char *dir, uint32_t g)
{
    char path[WT_CK_PATH_LEN], err[WT_CK_ERR_LEN];
    struct model_config c;
    struct wt_manifest m;
    struct wt_ck ck;
    struct wt_format f = {PLAN_QUANT_INT4, g, PLAN_QUANT_INT4};
    struct tally t = {0};
    snprintf(path, sizeof path, "%s/config.json", dir);
    if (model_config_load(&c, path, err) || wt_manifest_build(&m, &c, &f, err)) {
        fprintf(stderr, "qerr: %s: group %u: %s\n", dir, g, err);
        return 1;
    }
    int rc = wt_ck_open(&ck, dir, err) || wt_ck_bind(&ck, &m, &c, err);
    for (uint32_t i = 0; !rc && i < m.n; i++) {
        if (m.t[i].dtype != PLAN_DTYPE_I4)
            continue;
        uint64_t rows = ck.src[i].rows, k = ck.src[i].cols;
        float *x = malloc(sizeof(float) * BLOCK_ROWS * k);
        uint8_t *nib = malloc(BLOCK_ROWS * k / 2);
        uint16_t *sc = malloc(2 * BLOCK_ROWS * (k / g));
        for (uint64_t r = 0; !rc && x && nib && sc && r < rows; r += BLOCK_ROWS) {
            uint64_t n = rows - r < BLOCK_ROWS ? rows - r : BLOCK_ROWS;
            rc = wt_ck_read_rows(&ck, i, r, n, x, err);
            if (!rc)
                measure(&t, wt_q_classify(m.t[i].name), x, n, k, g, nib, sc);
        }
        rc = rc || !x || !nib || !sc;
        free(x), free(nib), free(sc);
    }
    if (rc)
        fprintf(stderr, "qerr: %s\n", err);
    for (int cl = 0; !rc && cl < WT_Q_NCLASSES; cl++) {
        if (!t.elems[cl])
            continue;
        printf("%-28s group %3u  %-22s %7.2f M", dir, g, wt_q_class_name(cl),
               (double)t.elems[cl] / 1e6);
        for (int s = 0; s < NSCHEMES; s++)
            printf("  %s %.4f", scheme_names[s], sqrt(t.err2[cl][s] / t.ref2[cl]));
        printf("\n");
    }
    wt_ck_close(&ck);
    wt_manifest_free(&m);
    return rc ? 1 : 0;
}

int main(int argc, char **argv)
{
    const char *dir = NULL;
    uint32_t groups[3], ng = 0;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--in") && i + 1 < argc) {
            dir = argv[++i];
        } else if (!strcmp(argv[i], "--group") && i + 1 < argc && ng < 3) {
            int g = atoi(argv[++i]);
            if (g != 32 && g != 64 && g != 128) {
                fprintf(stderr, "qerr: --group %s: expected 32, 64 or 128\n", argv[i]);
                return 2;
            }
            groups[ng++] = (uint32_t)g;
        } else {
            fprintf(stderr, "usage: qerr --in DIR [--group 32|64|128]...\n");
            return !strcmp(argv[i], "--help") ? 0 : 2;
        }
    }
    if (!dir) {
        fprintf(stderr, "usage: qerr --in DIR [--group 32|64|128]...\n");
        return 2;
    }
    if (!ng)
        groups[0] = 32, groups[1] = 64, groups[2] = 128, ng = 3;
    int rc = 0;
    for (uint32_t k = 0; k < ng; k++)
        rc |= run(dir, groups[k]);
    return rc;
}
