/* convert.c — checkpoint to weights image, streaming (convert.h).
 *
 * Each tensor goes through in row blocks: a block is split into one run of rows per thread;
 * each thread reads its rows from the checkpoint as float32 (pread, so the threads also read
 * in parallel) and converts them into its slice of the output block; the block is then
 * appended to the image. Rows are independent in every format, so the bytes do not depend
 * on the thread count or the block size. An INT4 tensor's scales go to one array kept until
 * the tensor's last nibbles are written, since the layout (kern/quant.h) stores them after
 * all the nibbles: for Qwen3.5-35B-A3B's largest INT4 tensor (an expert gate_up_proj,
 * 256 x 1024 x 2048) that is 8 MiB at group 128 and 32 MiB at group 32. Everything else is
 * a fixed block budget per thread, so peak memory does not grow with the checkpoint.
 *
 * Speed, wide-8l (1509 MiB of bf16, from the page cache) to int4:128 on a 16-core host:
 * 136 MB/s with 1 thread, 371 with 4, 592 with 8, 849 with 16 (peak RSS 4.5 to 26.6 MiB);
 * what does not scale is the main thread's writing and the final fsync of the image (bf16
 * output, 4x the bytes, runs at 561 MB/s). Reading a real checkpoint from disk adds its own
 * limit; the scale search itself runs at about 2.3 GB/s on 16 threads there.
 *
 * Byte order: the image is little-endian like every file of this project; bf16 and f32
 * elements are stored from host values, so the converter runs on little-endian hosts. */
#include "convert.h"

#include <math.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "../kern/quant.h"
#include "checkpoint.h"
#include "wimage.h"

#define BLOCK_ELEMS         (1u << 18) /* float32 elements per thread and block: 1 MiB */
#define DEFAULT_MAX_THREADS 16

_Static_assert(__BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__, "the image format is little-endian");

/* One conversion in flight. */
struct job {
    const struct wt_conv_opts *o;
    struct wt_conv_result *res;
    struct model_config c;
    struct wt_manifest m;
    struct wt_ck ck;
    struct wt_writer *w;
    uint32_t threads;
    float *in;        /* threads * block floats */
    uint8_t *out;     /* threads * block * 4 bytes: the converted block */
    uint64_t block;   /* floats per thread */
    uint16_t *scales; /* the current INT4 tensor's scales */
    uint64_t total_in, done_in;
    double t_err2, t_ref2; /* the current tensor's error sums */
    double t0, last_print;
};

/* One thread's run of rows of the current block. */
struct run {
    struct job *j;
    uint32_t tensor;
    uint64_t row0, rows;
    float *in;
    uint8_t *out;
    double err2, ref2;
    int rc;
    char err[WT_CK_ERR_LEN];
};

static int fail(char *err, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static int fail(char *err, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err, WT_CONV_ERR_LEN, fmt, ap);
    va_end(ap);
    return -1;
}

static double now(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

/* Bytes one row of tensor d takes in the image's streamed part (nibbles for INT4). */
static uint64_t out_row_bytes(const struct wt_tensor_desc *d, uint64_t cols)
{
    return d->dtype == PLAN_DTYPE_I4 ? cols / 2 : d->dtype == PLAN_DTYPE_F32 ? cols * 4 : cols * 2;
}

/* ---- the per-thread work --------------------------------------------------------------- */

static void run_bf16(struct run *r, const float *x, uint64_t n)
{
    uint16_t *o = (uint16_t *)(void *)r->out;
    for (uint64_t k = 0; k < n; k++) {
        o[k] = wt_q_bf16(x[k]);
        double d = (double)x[k] - wt_q_bf16_f32(o[k]);
        r->err2 += d * d;
        r->ref2 += (double)x[k] * x[k];
    }
}

static void *run_rows(void *arg)
{
    struct run *r = arg;
    struct job *j = r->j;
    const struct wt_tensor_desc *d = &j->m.t[r->tensor];
    uint64_t cols = j->ck.src[r->tensor].cols, n = r->rows * cols, bad = 0;
    r->rc = wt_ck_read_rows(&j->ck, r->tensor, r->row0, r->rows, r->in, r->err);
    if (r->rc)
        return NULL;
    if (d->dtype == PLAN_DTYPE_BF16) {
        run_bf16(r, r->in, n);
    } else if (d->dtype == PLAN_DTYPE_F32) {
        memcpy(r->out, r->in, n * 4);
        for (uint64_t k = 0; k < n; k++)
            r->ref2 += (double)r->in[k] * r->in[k];
    } else {
        uint16_t *sc = j->scales + r->row0 * (cols / d->group_size);
        r->rc = wt_q_pack_rows(r->in, r->rows, cols, d->group_size, r->out, sc, &r->err2, &r->ref2,
                               &bad);
        if (r->rc) {
            const struct wt_ck_part *p = wt_ck_part_of(&j->ck, r->tensor, r->row0 + bad);
            snprintf(r->err, sizeof r->err,
                     "%s: %s: row %llu holds a value that is not finite "
                     "(NaN or inf cannot be quantized to INT4; image tensor %s)",
                     j->ck.files[p->file].path, p->t->name,
                     (unsigned long long)(r->row0 + bad - p->row0), d->name);
        }
    }
    return NULL;
}

/* Convert rows [row0, row0 + rows) of tensor i into j->out, split over the threads. */
static int convert_block(struct job *j, uint32_t i, uint64_t row0, uint64_t rows, char *err)
{
    struct run runs[WT_CONV_MAX_THREADS];
    pthread_t tid[WT_CONV_MAX_THREADS];
    int started[WT_CONV_MAX_THREADS] = {0};
    uint64_t cols = j->ck.src[i].cols, per = j->block / cols ? j->block / cols : 1;
    uint64_t orow = out_row_bytes(&j->m.t[i], cols);
    uint32_t n = 0;
    for (uint64_t r = 0; r < rows; r += per, n++)
        runs[n] = (struct run){.j = j,
                               .tensor = i,
                               .row0 = row0 + r,
                               .rows = rows - r < per ? rows - r : per,
                               .in = j->in + (uint64_t)n * j->block,
                               .out = j->out + r * orow};
    /* run 0 on this thread; the others on their own (inline too if a thread cannot start) */
    for (uint32_t k = 1; k < n; k++)
        started[k] = pthread_create(&tid[k], NULL, run_rows, &runs[k]) == 0;
    run_rows(&runs[0]);
    for (uint32_t k = 1; k < n; k++) {
        if (started[k])
            pthread_join(tid[k], NULL);
        else
            run_rows(&runs[k]);
    }
    enum wt_q_class cls = wt_q_classify(j->m.t[i].name);
    for (uint32_t k = 0; k < n; k++) {
        if (runs[k].rc) /* the message names the checkpoint file and tensor */
            return fail(err, "%s", runs[k].err);
        j->res->err.err2[cls] += runs[k].err2;
        j->res->err.ref2[cls] += runs[k].ref2;
        j->t_err2 += runs[k].err2;
        j->t_ref2 += runs[k].ref2;
    }
    j->res->err.elems[cls] += rows * cols;
    return 0;
}

/* ---- progress ------------------------------------------------------------------------------ */

static void progress(struct job *j, uint32_t i, int last)
{
    FILE *f = j->o->progress;
    double t = now();
    if (!f || (!last && t - j->last_print < 1.0))
        return;
    j->last_print = t;
    double el = t - j->t0, rate = el > 0 ? (double)j->done_in / el : 0;
    double eta = rate > 0 ? (double)(j->total_in - j->done_in) / rate : 0;
    int tty = !j->o->per_tensor && isatty(fileno(f)); /* rewrite one line unless -v interleaves */
    fprintf(f, "%s[%u/%u] %-48.48s %9.1f/%.1f MB %7.1f MB/s  ETA %dm%02ds%s", tty ? "\r" : "",
            i + 1, j->m.n, j->m.t[i].name, (double)j->done_in / 1e6, (double)j->total_in / 1e6,
            rate / 1e6, (int)eta / 60, (int)eta % 60, tty && !last ? "" : "\n");
    fflush(f);
}

/* ---- one tensor ---------------------------------------------------------------------------- */

static int write_bytes(struct job *j, uint32_t i, const void *p, uint64_t n, char *err)
{
    char why[FMT_ERR_LEN];
    if (wt_writer_write(j->w, p, n, why) != FMT_OK)
        return fail(err, "%s: writing tensor %s: %s", j->o->out, j->m.t[i].name, why);
    return 0;
}

static int convert_tensor(struct job *j, uint32_t i, char *err)
{
    const struct wt_tensor_desc *d = &j->m.t[i];
    const struct wt_ck_source *s = &j->ck.src[i];
    uint64_t per = j->block / s->cols ? j->block / s->cols : 1, step = per * j->threads;
    uint64_t orow = out_row_bytes(d, s->cols), sc_bytes = 0;
    int rc = -1;
    j->t_err2 = j->t_ref2 = 0;
    if (d->dtype == PLAN_DTYPE_I4) {
        sc_bytes = s->rows * (s->cols / d->group_size) * 2;
        if (!(j->scales = malloc(sc_bytes)))
            return fail(err, "%s: out of memory for %llu bytes of scales", d->name,
                        (unsigned long long)sc_bytes);
    }
    for (uint64_t r = 0; r < s->rows; r += step) {
        uint64_t rows = s->rows - r < step ? s->rows - r : step;
        if (j->o->cancel && *j->o->cancel) {
            fail(err, "%s: interrupted while converting %s", j->o->out, d->name);
            goto free_scales;
        }
        if (convert_block(j, i, r, rows, err) || write_bytes(j, i, j->out, rows * orow, err))
            goto free_scales;
        j->done_in += s->bytes * rows / s->rows;
        progress(j, i, 0);
    }
    if (sc_bytes && write_bytes(j, i, j->scales, sc_bytes, err))
        goto free_scales;
    if (j->o->per_tensor)
        fprintf(j->o->per_tensor, "%-52s %-5s rel RMS error %.3e\n", d->name,
                d->dtype == PLAN_DTYPE_I4    ? "int4"
                : d->dtype == PLAN_DTYPE_F32 ? "f32"
                                             : "bf16",
                j->t_ref2 > 0 ? sqrt(j->t_err2 / j->t_ref2) : 0.0);
    rc = 0;
free_scales:
    free(j->scales);
    j->scales = NULL;
    return rc;
}

/* ---- the whole conversion ------------------------------------------------------------------- */

static uint32_t thread_count(uint32_t asked)
{
    long cpus = sysconf(_SC_NPROCESSORS_ONLN);
    uint32_t n = asked ? asked : cpus > 0 ? (uint32_t)cpus : 1;
    if (!asked && n > DEFAULT_MAX_THREADS)
        n = DEFAULT_MAX_THREADS;
    return n > WT_CONV_MAX_THREADS ? WT_CONV_MAX_THREADS : n;
}

/* Config, manifest, checkpoint check, buffers: everything before the first byte is written. */
static int prepare(struct job *j, struct wt_format *fmt, char *err)
{
    const struct wt_conv_opts *o = j->o;
    char path[WT_CK_PATH_LEN], why[WT_CK_ERR_LEN], fname[32];
    snprintf(path, sizeof path, "%s/config.json", o->in_dir);
    if (o->config)
        snprintf(path, sizeof path, "%s", o->config);
    if (model_config_load(&j->c, path, why))
        return fail(err, "%s", why);
    if (fmt->quant != PLAN_QUANT_INT4 && fmt->lm_head_quant != PLAN_QUANT_INT4)
        fmt->group_size = 0; /* only INT4 has a group: keep the identity canonical */
    if (wt_manifest_build(&j->m, &j->c, fmt, why))
        return fail(err, "%s: cannot store this model as %s (lm_head %s): %s", path,
                    wt_format_name(fmt->quant, fmt->group_size, fname, sizeof fname),
                    fmt->lm_head_quant == PLAN_QUANT_INT4 ? "int4" : "bf16", why);
    if (wt_ck_open(&j->ck, o->in_dir, why) || wt_ck_bind(&j->ck, &j->m, &j->c, why))
        return fail(err, "%s", why);
    j->threads = thread_count(o->threads);
    j->block = BLOCK_ELEMS;
    for (uint32_t i = 0; i < j->m.n; i++) {
        j->total_in += j->ck.src[i].bytes;
        if (j->ck.src[i].cols > j->block) /* a row wider than the budget gets a block alone */
            j->block = j->ck.src[i].cols;
    }
    j->in = malloc(j->block * j->threads * sizeof(float));
    j->out = malloc(j->block * j->threads * sizeof(float));
    if (!j->in || !j->out)
        return fail(err, "out of memory for %u blocks of %llu floats", j->threads,
                    (unsigned long long)j->block);
    return 0;
}

/* A short note on the source for the image's CONFIG section: the directory's last part. */
static void source_note(const char *dir, char *out, size_t cap)
{
    size_t n = strlen(dir);
    while (n > 1 && dir[n - 1] == '/')
        n--;
    size_t b = n;
    while (b > 0 && dir[b - 1] != '/')
        b--;
    snprintf(out, cap, "%.*s", (int)(n - b < cap - 1 ? n - b : cap - 1), dir + b);
}

static int write_image(struct job *j, const struct wt_format *fmt, char *err)
{
    struct wt_config cfg = {.model = j->c,
                            .quant = fmt->quant,
                            .group_size = fmt->group_size,
                            .lm_head_quant = fmt->lm_head_quant};
    char why[FMT_ERR_LEN];
    struct stat st;
    source_note(j->o->in_dir, cfg.source, sizeof cfg.source);
    if (!(j->w = wt_writer_open(j->o->out, &cfg, j->m.t, j->m.n, why)))
        return fail(err, "%s", why);
    for (uint32_t i = 0; i < j->m.n; i++) {
        if (convert_tensor(j, i, err)) {
            wt_writer_abort(j->w);
            return -1;
        }
        j->res->tensors++;
        progress(j, i, i + 1 == j->m.n);
    }
    enum fmt_status s = wt_writer_close(j->w, why);
    if (s != FMT_OK)
        return fail(err, "%s", why);
    j->res->bytes_out = stat(j->o->out, &st) == 0 ? (uint64_t)st.st_size : 0;
    return 0;
}

int wt_convert(const struct wt_conv_opts *o, struct wt_conv_result *res, char *err)
{
    struct wt_conv_result scratch;
    struct job j = {.o = o, .res = res ? res : &scratch, .t0 = now()};
    struct wt_format fmt = o->fmt;
    memset(j.res, 0, sizeof *j.res);
    j.last_print = j.t0;
    int rc = prepare(&j, &fmt, err);
    if (rc == 0) {
        j.res->skipped = j.ck.skipped;
        rc = write_image(&j, &fmt, err);
    }
    j.res->bytes_in = j.done_in;
    j.res->seconds = now() - j.t0;
    free(j.in);
    free(j.out);
    wt_ck_close(&j.ck);
    wt_manifest_free(&j.m);
    return rc;
}
