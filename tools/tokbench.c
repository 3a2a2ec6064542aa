/* tokbench.c — speed of the tokenizer: load time of a tokenizer.json, and encode / decode /
 * streaming-decode throughput on a few MB of mixed text (the reference corpus of
 * test/data/tok/encode.txt: English, code, CJK and other scripts, emoji, marks, whitespace,
 * digits, special tokens, random strings), repeated to TEXT_MB.
 *
 *   build/tokbench [tokenizer.json] [encode.txt]
 *
 * Encode runs two ways: the whole text in one call, and in 4 KiB slices as prompts arrive.
 * Timings are the best of REPS runs (the machine's noise only ever adds time). */
#include "host/tok.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define TEXT_MB 4
#define REPS 5
#define SLICE 4096

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec / 1e9;
}

static char *read_all(const char *path, size_t *n)
{
    FILE *f = fopen(path, "rb");
    if (!f) {
        fprintf(stderr, "tokbench: cannot open %s\n", path);
        exit(2);
    }
    fseek(f, 0, SEEK_END);
    long len = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *b = malloc((size_t)len + 1);
    if (!b || fread(b, 1, (size_t)len, f) != (size_t)len) {
        fprintf(stderr, "tokbench: cannot read %s\n", path);
        exit(2);
    }
    b[len] = 0;
    fclose(f);
    *n = (size_t)len;
    return b;
}

/* The q3, special=1 texts of encode.txt (field 4, hex) whose category is in cats (NULL: all),
 * joined by newlines and repeated to at least TEXT_MB megabytes. */
static char *corpus(const char *path, const char *cats, size_t *len)
{
    size_t n, w = 0, cap = (TEXT_MB << 20) + (1 << 20);
    char *fix = read_all(path, &n), *text = malloc(cap), *save = NULL;
    for (char *line = strtok_r(fix, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
        char *f[6];
        int k = 0;
        for (char *p = strtok(line, "\t"); p && k < 6; p = strtok(NULL, "\t"))
            f[k++] = p;
        if (line[0] == '#' || k != 6 || strcmp(f[1], "q3") || strcmp(f[2], "1") || f[3][0] == '-' ||
            (cats && !strstr(cats, f[0])))
            continue;
        for (const char *h = f[3]; h[0] && h[1] && w < cap / 2; h += 2) {
            unsigned v;
            sscanf(h, "%2x", &v);
            text[w++] = (char)v;
        }
        text[w++] = '\n';
    }
    size_t one = w;
    while (w + one <= (size_t)TEXT_MB << 20)
        memcpy(text + w, text, one), w += one;
    free(fix);
    *len = w;
    return text;
}

/* Encode, decode and stream-decode throughput on the corpus of categories cats. */
static void bench(const struct tok *t, const char *fx, const char *cats, const char *what)
{
    size_t n, nids = 0, len;
    char *text = corpus(fx, cats, &n);
    int32_t *ids = malloc(n * sizeof *ids);
    char *dec = malloc(n + 16), *chunk = malloc(tok_stream_cap(t));
    double enc1 = 1e9, enc2 = 1e9, dect = 1e9, strt = 1e9;
    for (int r = 0; r < REPS; r++) {
        double t0 = now_s();
        if (tok_encode(t, text, n, 1, ids, n, &nids) != TOK_OK)
            exit((fprintf(stderr, "tokbench: encode failed\n"), 2));
        double t1 = now_s();
        for (size_t at = 0; at < n;) {
            size_t end = at + SLICE < n ? at + SLICE : n, k;
            while (end < n && ((unsigned char)text[end] & 0xC0) == 0x80)
                end++; /* whole characters per slice */
            tok_encode(t, text + at, end - at, 1, ids, n, &k);
            at = end;
        }
        double t2 = now_s();
        tok_encode(t, text, n, 1, ids, n, &nids);
        double t3 = now_s();
        tok_decode(t, ids, nids, 0, dec, n + 16, &len);
        double t4 = now_s();
        struct tok_stream s;
        tok_stream_init(&s, t, 0);
        for (size_t k = 0; k < nids; k++)
            tok_stream_push(&s, ids[k], chunk, &len);
        double t5 = now_s();
        enc1 = t1 - t0 < enc1 ? t1 - t0 : enc1;
        enc2 = t2 - t1 < enc2 ? t2 - t1 : enc2;
        dect = t4 - t3 < dect ? t4 - t3 : dect;
        strt = t5 - t4 < strt ? t5 - t4 : strt;
    }
    double mb = n / 1e6;
    printf("%s text: %.1f MB, %zu tokens (%.2f bytes/token)\n", what, mb, nids, (double)n / nids);
    printf("encode, one call:      %7.1f MB/s  %6.2f M tokens/s\n", mb / enc1, nids / enc1 / 1e6);
    printf("encode, 4 KiB slices:  %7.1f MB/s\n", mb / enc2);
    printf("decode:                %7.1f MB/s\n", mb / dect);
    printf("stream decode:         %7.1f MB/s  %6.1f ns/token\n", mb / strt, strt / nids * 1e9);
    free(text);
    free(ids);
    free(dec);
    free(chunk);
}

int main(int argc, char **argv)
{
    const char *tj = argc > 1 ? argv[1] : "test/data/tok/qwen3_tokenizer.json";
    const char *fx = argc > 2 ? argv[2] : "test/data/tok/encode.txt";
    char err[TOK_ERR_LEN];
    size_t jn;
    char *json = read_all(tj, &jn);
    double best = 1e9;
    struct tok *t = NULL;
    for (int r = 0; r < REPS; r++) {
        tok_free(t);
        double t0 = now_s();
        t = tok_load_mem(json, jn, err);
        double dt = now_s() - t0;
        best = dt < best ? dt : best;
        if (!t) {
            fprintf(stderr, "tokbench: %s\n", err);
            return 2;
        }
    }
    printf("load %s (%.1f MB, %zu ids), parse and build: %.1f ms\n", tj, jn / 1e6, tok_vocab_size(t),
           best * 1e3);

    bench(t, fx, NULL, "mixed");
    bench(t, fx, "english code", "English and code");
    tok_free(t);
    free(json);
    return 0;
}
