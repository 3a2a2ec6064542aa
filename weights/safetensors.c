/* safetensors.c — parse and read safetensors files (see safetensors.h). */
#include "safetensors.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "../plan/json.h"

static const struct {
    const char *name;
    uint32_t size;
} dtypes[] = {
    [WT_ST_BOOL] = {"BOOL", 1}, [WT_ST_U8] = {"U8", 1},     [WT_ST_I8] = {"I8", 1},
    [WT_ST_I16] = {"I16", 2},   [WT_ST_U16] = {"U16", 2},   [WT_ST_F16] = {"F16", 2},
    [WT_ST_BF16] = {"BF16", 2}, [WT_ST_I32] = {"I32", 4},   [WT_ST_U32] = {"U32", 4},
    [WT_ST_F32] = {"F32", 4},   [WT_ST_F64] = {"F64", 8},   [WT_ST_I64] = {"I64", 8},
    [WT_ST_U64] = {"U64", 8},   [WT_ST_F8_E4M3] = {"F8_E4M3", 1}, [WT_ST_F8_E5M2] = {"F8_E5M2", 1},
};
#define NDTYPES (sizeof dtypes / sizeof dtypes[0])

uint32_t wt_st_dtype_size(uint32_t dtype) { return dtype && dtype < NDTYPES ? dtypes[dtype].size : 0; }
const char *wt_st_dtype_name(uint32_t dtype)
{
    return dtype && dtype < NDTYPES ? dtypes[dtype].name : "?";
}

uint64_t wt_st_numel(const struct wt_st_tensor *t)
{
    uint64_t n = 1;
    for (uint32_t i = 0; i < t->ndim; i++)
        n *= t->shape[i];
    return n;
}

static int by_name(const void *a, const void *b)
{
    return strcmp(((const struct wt_st_tensor *)a)->name, ((const struct wt_st_tensor *)b)->name);
}

static int by_begin(const void *a, const void *b)
{
    const struct wt_st_tensor *x = *(const struct wt_st_tensor *const *)a;
    const struct wt_st_tensor *y = *(const struct wt_st_tensor *const *)b;
    return (x->begin > y->begin) - (x->begin < y->begin);
}

/* One entry {"dtype": .., "shape": [..], "data_offsets": [b, e]} into t. */
static int parse_entry(const struct json_doc *d, uint32_t v, struct wt_st_tensor *t,
                       uint64_t data_size, char *err)
{
    int64_t dt = json_get(d, v, "dtype"), sh = json_get(d, v, "shape");
    int64_t off = json_get(d, v, "data_offsets");
    if (d->v[v].type != JSON_OBJECT || dt < 0 || sh < 0 || off < 0) {
        snprintf(err, WT_ST_ERR_LEN, "tensor %s: entry needs dtype, shape and data_offsets", t->name);
        return -1;
    }
    for (uint32_t i = 1; i < NDTYPES && !t->dtype; i++)
        if (json_string_eq(d, (uint32_t)dt, dtypes[i].name))
            t->dtype = i;
    if (!t->dtype) {
        snprintf(err, WT_ST_ERR_LEN, "tensor %s: unknown dtype", t->name);
        return -1;
    }
    if (d->v[sh].type != JSON_ARRAY || d->v[sh].count > WT_ST_MAX_DIMS) {
        snprintf(err, WT_ST_ERR_LEN, "tensor %s: shape must be an array of at most %d integers",
                 t->name, WT_ST_MAX_DIMS);
        return -1;
    }
    t->ndim = d->v[sh].count;
    uint64_t bytes = wt_st_dtype_size(t->dtype);
    uint32_t i = json_first(d, (uint32_t)sh);
    for (uint32_t k = 0; k < t->ndim; k++, i = json_next(d, i)) {
        int64_t x;
        if (json_i64(d, i, &x) || x < 0 || (x > 0 && bytes > UINT64_MAX / (uint64_t)x)) {
            snprintf(err, WT_ST_ERR_LEN, "tensor %s: shape[%u] is not a valid size", t->name, k);
            return -1;
        }
        t->shape[k] = (uint64_t)x;
        bytes *= (uint64_t)x;
    }
    int64_t b, e;
    uint32_t o = json_first(d, (uint32_t)off);
    if (d->v[off].type != JSON_ARRAY || d->v[off].count != 2 || json_i64(d, o, &b) ||
        json_i64(d, json_next(d, o), &e) || b < 0 || e < b || (uint64_t)e > data_size) {
        snprintf(err, WT_ST_ERR_LEN,
                 "tensor %s: data_offsets must be [begin, end] inside the %llu data bytes", t->name,
                 (unsigned long long)data_size);
        return -1;
    }
    t->begin = (uint64_t)b;
    t->end = (uint64_t)e;
    if (t->end - t->begin != bytes) {
        snprintf(err, WT_ST_ERR_LEN, "tensor %s: %llu bytes for %s %s of %llu bytes", t->name,
                 (unsigned long long)(t->end - t->begin), wt_st_dtype_name(t->dtype), "shape",
                 (unsigned long long)bytes);
        return -1;
    }
    return 0;
}

static int check_overlaps(struct wt_st_file *f, char *err)
{
    struct wt_st_tensor **ord = malloc(sizeof *ord * (f->n ? f->n : 1));
    if (!ord) {
        snprintf(err, WT_ST_ERR_LEN, "out of memory");
        return -1;
    }
    for (uint32_t i = 0; i < f->n; i++)
        ord[i] = &f->t[i];
    qsort(ord, f->n, sizeof *ord, by_begin);
    int rc = 0;
    for (uint32_t i = 1; i < f->n && !rc; i++)
        if (ord[i]->begin < ord[i - 1]->end && ord[i]->end > ord[i]->begin) {
            snprintf(err, WT_ST_ERR_LEN, "tensors %s and %s overlap", ord[i - 1]->name, ord[i]->name);
            rc = -1;
        }
    free(ord);
    return rc;
}

int wt_st_parse(struct wt_st_file *f, const char *hdr, size_t len, uint64_t data_size, char *err)
{
    struct json_doc d;
    memset(f, 0, sizeof *f);
    f->fd = -1;
    if (json_parse(&d, hdr, len, 0)) {
        snprintf(err, WT_ST_ERR_LEN, "header JSON: %s", d.err);
        goto fail_json;
    }
    if (d.v[0].type != JSON_OBJECT) {
        snprintf(err, WT_ST_ERR_LEN, "header is not a JSON object");
        goto fail_json;
    }
    f->t = calloc(d.v[0].count ? d.v[0].count : 1, sizeof *f->t);
    f->names = malloc(len + 1); /* decoded names are never longer than the header */
    if (!f->t || !f->names) {
        snprintf(err, WT_ST_ERR_LEN, "out of memory");
        goto fail_json;
    }
    size_t used = 0;
    uint32_t k = json_first(&d, 0);
    for (uint32_t p = 0; p < d.v[0].count; p++) {
        uint32_t v = json_next(&d, k);
        if (json_string_eq(&d, k, "__metadata__")) {
            k = json_next(&d, v);
            continue;
        }
        struct wt_st_tensor *t = &f->t[f->n];
        size_t nl;
        if (json_string(&d, k, f->names + used, len + 1 - used, &nl) || nl == 0 ||
            strlen(f->names + used) != nl) {
            snprintf(err, WT_ST_ERR_LEN, "tensor name %u is empty or holds a NUL byte", p);
            goto fail_json;
        }
        t->name = f->names + used;
        used += nl + 1;
        if (parse_entry(&d, v, t, data_size, err))
            goto fail_json;
        f->n++;
        k = json_next(&d, v);
    }
    json_free(&d);
    qsort(f->t, f->n, sizeof *f->t, by_name);
    if (check_overlaps(f, err))
        goto fail;
    return 0;
fail_json:
    json_free(&d);
fail:
    wt_st_close(f);
    return -1;
}

int wt_st_open(struct wt_st_file *f, const char *path, char *err)
{
    char why[WT_ST_ERR_LEN];
    uint8_t lenb[8];
    uint64_t hlen = 0;
    char *hdr = NULL;
    struct stat st;
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0 || fstat(fd, &st)) {
        snprintf(err, WT_ST_ERR_LEN, "%s: %s", path, strerror(errno));
        goto fail_open;
    }
    if (st.st_size < 8 || pread(fd, lenb, 8, 0) != 8) {
        snprintf(err, WT_ST_ERR_LEN, "%s: truncated: shorter than the 8-byte header length", path);
        goto fail_open;
    }
    for (int i = 7; i >= 0; i--)
        hlen = hlen << 8 | lenb[i];
    if (hlen < 2 || hlen > WT_ST_MAX_HEADER || hlen > (uint64_t)st.st_size - 8) {
        snprintf(err, WT_ST_ERR_LEN, "%s: header length %llu is beyond the file (%lld bytes)", path,
                 (unsigned long long)hlen, (long long)st.st_size);
        goto fail_open;
    }
    hdr = malloc(hlen);
    if (!hdr || pread(fd, hdr, hlen, 8) != (ssize_t)hlen) {
        snprintf(err, WT_ST_ERR_LEN, "%s: cannot read the header", path);
        goto fail_read;
    }
    if (wt_st_parse(f, hdr, hlen, (uint64_t)st.st_size - 8 - hlen, why)) {
        snprintf(err, WT_ST_ERR_LEN, "%.200s: %.300s", path, why);
        goto fail_read;
    }
    free(hdr);
    f->fd = fd;
    f->file_size = (uint64_t)st.st_size;
    f->data_start = 8 + hlen;
    snprintf(f->path, sizeof f->path, "%s", path);
    return 0;
fail_read:
    free(hdr);
fail_open:
    if (fd >= 0)
        close(fd);
    return -1;
}

void wt_st_close(struct wt_st_file *f)
{
    if (f->fd >= 0)
        close(f->fd);
    free(f->t);
    free(f->names);
    memset(f, 0, sizeof *f);
    f->fd = -1;
}

const struct wt_st_tensor *wt_st_find(const struct wt_st_file *f, const char *name)
{
    struct wt_st_tensor key = {.name = name};
    if (!f->n)
        return NULL;
    return bsearch(&key, f->t, f->n, sizeof *f->t, by_name);
}

int wt_st_read(const struct wt_st_file *f, const struct wt_st_tensor *t, void *dst, uint64_t off,
               uint64_t n, char *err)
{
    if (off > t->end - t->begin || n > t->end - t->begin - off) {
        snprintf(err, WT_ST_ERR_LEN, "%.200s: %.200s: read past the tensor", f->path, t->name);
        return -1;
    }
    uint8_t *p = dst;
    uint64_t pos = f->data_start + t->begin + off;
    while (n) {
        ssize_t r = pread(f->fd, p, n > (1u << 30) ? (1u << 30) : n, (off_t)pos);
        if (r <= 0) {
            snprintf(err, WT_ST_ERR_LEN, "%.200s: %.200s: %s", f->path, t->name,
                     r < 0 ? strerror(errno) : "file ends inside the tensor");
            return -1;
        }
        p += r, pos += (uint64_t)r, n -= (uint64_t)r;
    }
    return 0;
}

/* IEEE half to float, subnormals included */
static float half_to_float(uint16_t h)
{
    uint32_t s = (uint32_t)(h >> 15) << 31, e = (h >> 10) & 31, m = h & 1023, u;
    if (e == 31)
        u = s | 0x7F800000u | (m << 13);
    else if (e)
        u = s | ((e + 112) << 23) | (m << 13);
    else if (!m)
        u = s;
    else { /* subnormal: normalise */
        e = 113;
        while (!(m & 1024))
            m <<= 1, e--;
        u = s | (e << 23) | ((m & 1023) << 13);
    }
    float f;
    memcpy(&f, &u, 4);
    return f;
}

int wt_st_read_f32(const struct wt_st_file *f, const struct wt_st_tensor *t, float *dst,
                   uint64_t first, uint64_t count, char *err)
{
    uint32_t es = wt_st_dtype_size(t->dtype);
    if (t->dtype != WT_ST_BF16 && t->dtype != WT_ST_F16 && t->dtype != WT_ST_F32) {
        snprintf(err, WT_ST_ERR_LEN, "%.200s: %.200s: dtype %s cannot be read as float32", f->path, t->name,
                 wt_st_dtype_name(t->dtype));
        return -1;
    }
    uint64_t numel = wt_st_numel(t);
    if (first > numel || count > numel - first) {
        snprintf(err, WT_ST_ERR_LEN, "%.200s: %.200s: elements past the tensor", f->path, t->name);
        return -1;
    }
    if (t->dtype == WT_ST_F32)
        return wt_st_read(f, t, dst, first * 4, count * 4, err);
    /* 16-bit: read into the back half of dst, widen front to back without overlap */
    uint16_t *raw = (uint16_t *)(dst + count) - count;
    if (wt_st_read(f, t, raw, first * es, count * es, err))
        return -1;
    for (uint64_t i = 0; i < count; i++) {
        uint16_t h = raw[i];
        if (t->dtype == WT_ST_BF16) {
            uint32_t u = (uint32_t)h << 16;
            memcpy(&dst[i], &u, 4);
        } else {
            dst[i] = half_to_float(h);
        }
    }
    return 0;
}
