/* wimage.c — the weights image (wimage.h): the metadata reader, lookups, the manifest hash
 * shared with plan.bin, and the streaming writer.
 *
 * wt_read() checks the metadata prefix only; tensor bytes are checked by their CRC32C as
 * they stream (wt_tensor_crc_ok). Names must be unique and tensors must not overlap; with
 * about 1,900 tensors in a real image both are checked by sorting a scratch index (the one
 * allocation of the reader, freed before it returns) rather than pairwise.
 *
 * Layouts: wt_layout_known() is the one list of layout ids. Layout 0 is plain row-major
 * elements, whose size follows from dtype and shape and which carries no scales or zero
 * points; K_LAYOUT_I4_ROWS (kern/quant.h) has its own size rule in i4_rows_check().
 *
 * The writer (second half) streams: it lays out the whole file from the tensor list up
 * front, writes the metadata prefix with zero tensor CRCs into `<path>.tmp`, appends tensor
 * bytes as they come, and at the end rewrites the prefix with the CRCs, fsyncs and renames.
 * Any failure removes the temporary file, so a path either holds a complete image or
 * nothing new. The writer runs wt_read() over its own prefix, at open and at close, so it
 * never produces an image its reader refuses. */
#include "wimage.h"

#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "../kern/quant.h"
#include "../plan/crc.h"

_Static_assert(sizeof(struct wt_config) == sizeof(struct model_config) + 5 * 4 + 8 + 64 &&
                   sizeof(struct wt_config) == 352, "wt_config has no padding");
_Static_assert(sizeof(struct wt_tensor) == 6 * 4 + 8 * 8 && sizeof(struct wt_tensor) == 88,
               "wt_tensor has no padding");

#define WT_LAYOUT_PLAIN K_LAYOUT_PLAIN


/* The layout ids this reader knows. */
static int wt_layout_known(uint32_t layout)
{
    return layout == WT_LAYOUT_PLAIN || layout == K_LAYOUT_I4_ROWS;
}

/* K_LAYOUT_I4_ROWS (kern/quant.h): one (N, K) matrix or a stack (E, N, K) of 4-bit weights,
 * the nibbles of every matrix first, then the bf16 group scales at scales_offset. */
static enum fmt_status i4_rows_check(uint32_t i, const char *nm, const struct wt_tensor *t, char *err)
{
    uint64_t g = t->group_size;
    if (t->dtype != PLAN_DTYPE_I4 || (t->ndim != 2 && t->ndim != 3))
        return fmt_fail(err, FMT_ERR_INVALID, "tensor %u '%.80s': INT4 rows layout needs dtype I4 and "
                    "2 or 3 dimensions", i, nm);
    if (g != 32 && g != 64 && g != 128)
        return fmt_fail(err, FMT_ERR_INVALID, "tensor %u '%.80s': INT4 group size %llu is not 32, 64 "
                    "or 128", i, nm, (unsigned long long)g);
    uint64_t mats = t->ndim == 3 ? t->shape[0] : 1, n = t->shape[t->ndim - 2], k = t->shape[t->ndim - 1];
    if (!mats || !n || !k || k % g || mats > (1ull << 20) || n > (1ull << 24) || k > (1ull << 24))
        return fmt_fail(err, FMT_ERR_INVALID, "tensor %u '%.80s': INT4 shape must be non-zero with "
                    "the input width a multiple of the group size", i, nm);
    uint64_t nib = k_i4_nibble_bytes(mats, n, k), sc = k_i4_scale_bytes(mats, n, k, g);
    if (t->scales_offset != nib || t->size != nib + sc || t->zeros_offset)
        return fmt_fail(err, FMT_ERR_INVALID, "tensor %u '%.80s': INT4 extent inconsistent: size %llu, "
                    "scales at %llu (expected %llu bytes, scales at %llu, no zero points)", i, nm,
                    (unsigned long long)t->size, (unsigned long long)t->scales_offset,
                    (unsigned long long)(nib + sc), (unsigned long long)nib);
    return FMT_OK;
}

/* Bits per stored element of a plain tensor, 0 for an unknown dtype. */
static uint32_t dtype_bits(uint32_t dtype)
{
    switch (dtype) {
    case PLAN_DTYPE_BF16: return 16;
    case PLAN_DTYPE_F16: return 16;
    case PLAN_DTYPE_F32: return 32;
    case PLAN_DTYPE_I4: return 4;
    case PLAN_DTYPE_I8: return 8;
    case PLAN_DTYPE_I32: return 32;
    }
    return 0;
}

uint64_t wt_prefix_size(const void *head, size_t len)
{
    struct fmt_header h;
    if (!head || len < FMT_HEADER_SIZE)
        return 0;
    memcpy(&h, head, sizeof h);
    if (h.magic != WT_MAGIC || h.version != WT_VERSION || h.header_size != FMT_HEADER_SIZE ||
        h.table_offset != FMT_HEADER_SIZE || h.section_count > FMT_MAX_SECTIONS ||
        crc32c(0, head, offsetof(struct fmt_header, header_crc)) != h.header_crc)
        return 0;
    uint64_t table_end = FMT_HEADER_SIZE + (uint64_t)h.section_count * FMT_SECTION_SIZE;
    if (table_end > h.file_size)
        return 0;
    if (len < table_end)
        return table_end; /* read this much and ask again */
    const uint8_t *t = (const uint8_t *)head + FMT_HEADER_SIZE;
    if (crc32c(0, t, (size_t)(table_end - FMT_HEADER_SIZE)) != h.table_crc)
        return 0;
    for (uint32_t i = 0; i < h.section_count; i++) {
        struct fmt_section s;
        memcpy(&s, t + (size_t)i * FMT_SECTION_SIZE, sizeof s);
        if (s.id == WT_SEC_DATA)
            return s.offset >= table_end && s.offset <= h.file_size ? s.offset : 0;
    }
    return h.file_size;
}

/* ---- reading ----------------------------------------------------------------------------- */

static enum fmt_status check_config(const struct wt_view *v, char *err)
{
    const struct wt_config *c = &v->cfg;
    char merr[MODEL_ERR_LEN];
    if (model_config_check(&c->model, merr))
        return fmt_fail(err, FMT_ERR_INVALID, "config: model: %s", merr);
    if (c->quant < PLAN_QUANT_BF16 || c->quant > PLAN_QUANT_INT8)
        return fmt_fail(err, FMT_ERR_INVALID, "config: unknown quant %u", c->quant);
    if (c->lm_head_quant < PLAN_QUANT_BF16 || c->lm_head_quant > PLAN_QUANT_INT8)
        return fmt_fail(err, FMT_ERR_INVALID, "config: unknown lm_head_quant %u", c->lm_head_quant);
    uint32_t g = c->group_size;
    int int4 = c->quant == PLAN_QUANT_INT4 || c->lm_head_quant == PLAN_QUANT_INT4;
    if (int4 && g != 32 && g != 64 && g != 128)
        return fmt_fail(err, FMT_ERR_INVALID, "config: INT4 group_size %u is not 32, 64 or 128", g);
    if (!int4 && g != 0)
        return fmt_fail(err, FMT_ERR_INVALID, "config: group_size %u must be 0 without INT4", g);
    if (c->reserved0 || c->reserved1)
        return fmt_fail(err, FMT_ERR_INVALID, "config: reserved fields are not zero");
    if (c->data_bytes != v->data_size)
        return fmt_fail(err, FMT_ERR_INVALID, "config: data_bytes %llu but the DATA section has %llu",
                    (unsigned long long)c->data_bytes, (unsigned long long)v->data_size);
    if (!memchr(c->source, 0, sizeof c->source))
        return fmt_fail(err, FMT_ERR_INVALID, "config: source is not NUL-terminated");
    return FMT_OK;
}

static enum fmt_status load_sections(struct wt_view *v, char *err)
{
    const void *d;
    uint32_t n;
    enum fmt_status st = fmt_records(&v->f, WT_SEC_CONFIG, sizeof(struct wt_config), "CONFIG", &d,
                                     &n, err);
    if (st != FMT_OK)
        return st;
    if (n != 1)
        return fmt_fail(err, FMT_ERR_INVALID, "CONFIG section holds %u records, expected 1", n);
    memcpy(&v->cfg, d, sizeof v->cfg);
    st = fmt_records(&v->f, WT_SEC_TENSORS, sizeof(struct wt_tensor), "TENSORS", &d,
                     &v->num_tensors, err);
    if (st != FMT_OK)
        return st;
    v->tensors = d;
    const struct fmt_section *s = fmt_find(&v->f, WT_SEC_STRINGS, &d);
    if (!s)
        return fmt_fail(err, FMT_ERR_MISSING, "STRINGS section (id %u) is missing", WT_SEC_STRINGS);
    if (s->record_size || (s->flags & FMT_SEC_STREAMED))
        return fmt_fail(err, FMT_ERR_INVALID, "STRINGS section must hold raw, unstreamed bytes");
    v->strings = d;
    v->strings_size = s->size;
    s = fmt_find(&v->f, WT_SEC_DATA, NULL);
    if (!s)
        return fmt_fail(err, FMT_ERR_MISSING, "DATA section (id %u) is missing", WT_SEC_DATA);
    if (s->record_size || !(s->flags & FMT_SEC_STREAMED))
        return fmt_fail(err, FMT_ERR_INVALID, "DATA section must be raw and streamed");
    if (s->offset % WT_DATA_ALIGN)
        return fmt_fail(err, FMT_ERR_INVALID, "DATA section at offset %llu is not %u-aligned",
                    (unsigned long long)s->offset, WT_DATA_ALIGN);
    v->data_offset = s->offset;
    v->data_size = s->size;
    return FMT_OK;
}

/* Size and sub-offset rules of the tensor's layout. */
static enum fmt_status tensor_layout_check(uint32_t i, const char *nm, const struct wt_tensor *t,
                                           char *err)
{
    if (!wt_layout_known(t->layout))
        return fmt_fail(err, FMT_ERR_INVALID, "tensor %u '%.80s': unknown layout %u", i, nm, t->layout);
    if (t->layout == K_LAYOUT_I4_ROWS)
        return i4_rows_check(i, nm, t, err);
    /* plain row-major: elements packed tightly, no scales, no zero points, no groups */
    uint64_t n = 1;
    for (uint32_t d = 0; d < t->ndim; d++)
        if (__builtin_mul_overflow(n, t->shape[d], &n))
            return fmt_fail(err, FMT_ERR_INVALID, "tensor %u '%.80s': element count overflows", i, nm);
    uint64_t bits = dtype_bits(t->dtype);
    if (n > UINT64_MAX / bits)
        return fmt_fail(err, FMT_ERR_INVALID, "tensor %u '%.80s': byte size overflows", i, nm);
    uint64_t want = (n * bits + 7) / 8;
    if (t->size != want)
        return fmt_fail(err, FMT_ERR_INVALID,
                    "tensor %u '%.80s': size %llu is inconsistent with its dtype and shape (%llu bytes)",
                    i, nm, (unsigned long long)t->size, (unsigned long long)want);
    if (t->scales_offset || t->zeros_offset || t->group_size)
        return fmt_fail(err, FMT_ERR_INVALID,
                    "tensor %u '%.80s': plain layout with scales, zero points or a group size", i, nm);
    return FMT_OK;
}

static enum fmt_status check_tensor(const struct wt_view *v, uint32_t i, char *err)
{
    struct wt_tensor t;
    wt_get_tensor(v, i, &t);
    const char *nm = fmt_string(v->strings, v->strings_size, t.name);
    if (!nm)
        return fmt_fail(err, FMT_ERR_BOUNDS,
                    "tensor %u: name offset %u is outside STRINGS or its string is unterminated", i,
                    t.name);
    size_t len = strlen(nm);
    if (len == 0)
        return fmt_fail(err, FMT_ERR_INVALID, "tensor %u: empty name", i);
    if (len >= WT_MAX_NAME)
        return fmt_fail(err, FMT_ERR_INVALID, "tensor %u: name of %zu bytes is too long (limit %u)", i,
                    len, WT_MAX_NAME - 1);
    if (!dtype_bits(t.dtype))
        return fmt_fail(err, FMT_ERR_INVALID, "tensor %u '%.80s': unknown dtype %u", i, nm, t.dtype);
    if (t.ndim < 1 || t.ndim > WT_MAX_DIMS)
        return fmt_fail(err, FMT_ERR_INVALID, "tensor %u '%.80s': ndim %u is not 1..%d", i, nm, t.ndim,
                    WT_MAX_DIMS);
    for (uint32_t d = 0; d < WT_MAX_DIMS; d++) {
        if (d < t.ndim && t.shape[d] == 0)
            return fmt_fail(err, FMT_ERR_INVALID, "tensor %u '%.80s': shape[%u] is 0", i, nm, d);
        if (d >= t.ndim && t.shape[d] != 0)
            return fmt_fail(err, FMT_ERR_INVALID, "tensor %u '%.80s': unused shape[%u] is not zero", i,
                        nm, d);
    }
    enum fmt_status st = tensor_layout_check(i, nm, &t, err);
    if (st != FMT_OK)
        return st;
    if (t.offset % WT_TENSOR_ALIGN)
        return fmt_fail(err, FMT_ERR_INVALID, "tensor %u '%.80s': offset %llu is not %u-aligned", i, nm,
                    (unsigned long long)t.offset, WT_TENSOR_ALIGN);
    if (t.offset > v->data_size || t.size > v->data_size - t.offset)
        return fmt_fail(err, FMT_ERR_BOUNDS, "tensor %u '%.80s': [%llu, +%llu) lies outside the %llu bytes of DATA",
                    i, nm, (unsigned long long)t.offset, (unsigned long long)t.size,
                    (unsigned long long)v->data_size);
    return FMT_OK;
}

/* Scratch entry for the uniqueness and overlap sorts. */
struct wt_key {
    const char *name;
    uint64_t offset, size;
};

static int key_by_name(const void *a, const void *b)
{
    return strcmp(((const struct wt_key *)a)->name, ((const struct wt_key *)b)->name);
}

static int key_by_offset(const void *a, const void *b)
{
    uint64_t x = ((const struct wt_key *)a)->offset, y = ((const struct wt_key *)b)->offset;
    return (x > y) - (x < y);
}

/* Names unique, extents disjoint; every tensor has passed check_tensor(). */
static enum fmt_status check_unique(const struct wt_view *v, char *err)
{
    enum fmt_status st = FMT_OK;
    uint32_t n = v->num_tensors;
    if (n < 2)
        return FMT_OK;
    struct wt_key *k = malloc((size_t)n * sizeof *k);
    if (!k)
        return fmt_fail(err, FMT_ERR_NOMEM, "no memory to check %u tensors", n);
    for (uint32_t i = 0; i < n; i++) {
        struct wt_tensor t;
        wt_get_tensor(v, i, &t);
        k[i] = (struct wt_key){wt_name(v, &t), t.offset, t.size};
    }
    qsort(k, n, sizeof *k, key_by_name);
    for (uint32_t i = 1; i < n && st == FMT_OK; i++)
        if (strcmp(k[i - 1].name, k[i].name) == 0)
            st = fmt_fail(err, FMT_ERR_INVALID, "tensor '%.80s': duplicate name", k[i].name);
    if (st == FMT_OK)
        qsort(k, n, sizeof *k, key_by_offset);
    for (uint32_t i = 1; i < n && st == FMT_OK; i++)
        if (k[i - 1].offset + k[i - 1].size > k[i].offset)
            st = fmt_fail(err, FMT_ERR_INVALID, "tensor '%.80s' at %llu overlaps tensor '%.80s' at %llu",
                      k[i].name, (unsigned long long)k[i].offset, k[i - 1].name,
                      (unsigned long long)k[i - 1].offset);
    free(k);
    return st;
}

enum fmt_status wt_read(struct wt_view *v, const void *buf, size_t len, uint64_t file_size, char *err)
{
    enum fmt_status st;
    memset(v, 0, sizeof *v);
    if ((st = fmt_open(&v->f, buf, len, file_size, WT_MAGIC, WT_VERSION, err)) ||
        (st = load_sections(v, err)) || (st = check_config(v, err)))
        goto fail_clear;
    for (uint32_t i = 0; i < v->num_tensors; i++)
        if ((st = check_tensor(v, i, err)))
            goto fail_clear;
    if ((st = check_unique(v, err)))
        goto fail_clear;
    return FMT_OK;
fail_clear:
    memset(v, 0, sizeof *v);
    return st;
}

void wt_get_tensor(const struct wt_view *v, uint32_t i, struct wt_tensor *t)
{
    memcpy(t, v->tensors + (size_t)i * sizeof *t, sizeof *t);
}

const char *wt_name(const struct wt_view *v, const struct wt_tensor *t)
{
    const char *s = fmt_string(v->strings, v->strings_size, t->name);
    return s ? s : "";
}

int64_t wt_find(const struct wt_view *v, const char *name)
{
    for (uint32_t i = 0; i < v->num_tensors; i++) {
        struct wt_tensor t;
        wt_get_tensor(v, i, &t);
        if (strcmp(wt_name(v, &t), name) == 0)
            return i;
    }
    return -1;
}

int wt_tensor_crc_ok(const struct wt_view *v, uint32_t i, const void *bytes, uint64_t size)
{
    struct wt_tensor t;
    if (i >= v->num_tensors)
        return 0;
    wt_get_tensor(v, i, &t);
    return size == t.size && crc32c(0, bytes, (size_t)size) == t.crc;
}

/* ---- manifest hash ------------------------------------------------------------------------- */

static void put32(uint8_t *p, uint32_t x)
{
    for (int i = 0; i < 4; i++)
        p[i] = (uint8_t)(x >> (8 * i));
}

static void put64(uint8_t *p, uint64_t x)
{
    for (int i = 0; i < 8; i++)
        p[i] = (uint8_t)(x >> (8 * i));
}

/* One manifest entry: the name with its NUL, then fixed-width little-endian fields. */
static uint64_t hash_entry(uint64_t h, const char *name, uint32_t dtype, uint32_t layout,
                           uint32_t group_size, uint32_t ndim, const uint64_t *shape, uint64_t size)
{
    uint8_t f[4 * 4 + (WT_MAX_DIMS + 1) * 8];
    put32(f, dtype);
    put32(f + 4, layout);
    put32(f + 8, group_size);
    put32(f + 12, ndim);
    for (int d = 0; d < WT_MAX_DIMS; d++)
        put64(f + 16 + 8 * d, shape[d]);
    put64(f + 16 + 8 * WT_MAX_DIMS, size);
    h = fnv64(h, name, strlen(name) + 1);
    return fnv64(h, f, sizeof f);
}

uint64_t wt_manifest_hash(const struct wt_view *v)
{
    uint64_t h = FNV64_INIT;
    for (uint32_t i = 0; i < v->num_tensors; i++) {
        struct wt_tensor t;
        wt_get_tensor(v, i, &t);
        h = hash_entry(h, wt_name(v, &t), t.dtype, t.layout, t.group_size, t.ndim, t.shape, t.size);
    }
    return h;
}

uint64_t wt_manifest_hash_plan(const char *strings, const struct plan_weight *w, uint32_t n)
{
    uint64_t h = FNV64_INIT;
    for (uint32_t i = 0; i < n; i++)
        h = hash_entry(h, strings + w[i].name, w[i].dtype, w[i].layout, w[i].group_size,
                       w[i].ndim, w[i].shape, w[i].size);
    return h;
}

/* ---- writing ------------------------------------------------------------------------------- */

struct wt_writer {
    char *path;             /* destination */
    char *tmp;              /* "<path>.tmp": written, then renamed over path */
    int fd;                 /* the temporary file, -1 once closed */
    int failed;             /* a write failed; the temporary file is already removed */
    struct wt_config cfg;   /* data_bytes filled by the layout */
    char *strings;          /* name pool */
    uint64_t strings_size;
    struct wt_tensor *t;    /* records; crc filled as each tensor completes */
    uint32_t n;
    size_t prefix_len;      /* bytes before DATA */
    uint32_t cur;           /* tensor being written */
    uint64_t done;          /* its bytes written so far */
    uint32_t crc;           /* their CRC32C so far */
};

static const uint8_t wt_zeros[WT_TENSOR_ALIGN];

/* Lay out the metadata prefix of w's file (tensor CRCs as they are now) and check it with
 * the reader. On success *out (malloc'd) holds the prefix, which ends where DATA starts. */
static enum fmt_status build_prefix(const struct wt_writer *w, uint8_t **out, size_t *len,
                                    char *err)
{
    struct fmt_builder b;
    struct wt_view v;
    uint64_t file_size;
    char why[FMT_ERR_LEN];
    fmt_builder_init(&b);
    fmt_builder_add(&b, WT_SEC_CONFIG, sizeof w->cfg, &w->cfg, sizeof w->cfg);
    fmt_builder_add(&b, WT_SEC_STRINGS, 0, w->strings, w->strings_size);
    fmt_builder_add(&b, WT_SEC_TENSORS, sizeof *w->t, w->t, (uint64_t)w->n * sizeof *w->t);
    fmt_builder_add_streamed(&b, WT_SEC_DATA, w->cfg.data_bytes, WT_DATA_ALIGN);
    enum fmt_status st = fmt_builder_finish(&b, WT_MAGIC, WT_VERSION, out, len, &file_size);
    fmt_builder_free(&b);
    if (st != FMT_OK)
        return fmt_fail(err, st, "%s: cannot lay out the image (%s)", w->path, fmt_status_name(st));
    st = wt_read(&v, *out, *len, file_size, why);
    if (st != FMT_OK) {
        free(*out);
        *out = NULL;
        return fmt_fail(err, st, "%s: %s", w->path, why);
    }
    return FMT_OK;
}

/* Names into one pool, tensors at WT_TENSOR_ALIGN offsets in order, each padded. */
static enum fmt_status layout_tensors(struct wt_writer *w, const struct wt_tensor_desc *d,
                                      uint32_t n, char *err)
{
    uint64_t pool = 0, off = 0;
    for (uint32_t i = 0; i < n; i++) {
        size_t len = d[i].name ? strlen(d[i].name) : 0;
        if (len == 0 || len >= WT_MAX_NAME)
            return fmt_fail(err, FMT_ERR_INVALID, "%s: tensor %u: name is empty or longer than %u bytes",
                        w->path, i, WT_MAX_NAME - 1);
        pool += len + 1;
    }
    if (pool > UINT32_MAX || !(w->strings = malloc(pool ? (size_t)pool : 1)) ||
        !(w->t = calloc(n ? n : 1, sizeof *w->t)))
        return fmt_fail(err, FMT_ERR_NOMEM, "%s: no memory for the tensor table", w->path);
    pool = 0;
    for (uint32_t i = 0; i < n; i++) {
        struct wt_tensor *t = &w->t[i];
        size_t len = strlen(d[i].name) + 1;
        memcpy(w->strings + pool, d[i].name, len);
        *t = (struct wt_tensor){.name = (uint32_t)pool, .dtype = d[i].dtype, .layout = d[i].layout,
                                .group_size = d[i].group_size, .ndim = d[i].ndim,
                                .offset = off, .size = d[i].size,
                                .scales_offset = d[i].scales_offset,
                                .zeros_offset = d[i].zeros_offset};
        memcpy(t->shape, d[i].shape, sizeof t->shape);
        pool += len;
        if (off > UINT64_MAX - WT_TENSOR_ALIGN || d[i].size > UINT64_MAX - WT_TENSOR_ALIGN - off)
            return fmt_fail(err, FMT_ERR_INVALID, "%s: tensor '%.80s': size overflows", w->path, d[i].name);
        off = (off + d[i].size + WT_TENSOR_ALIGN - 1) & ~(uint64_t)(WT_TENSOR_ALIGN - 1);
    }
    w->strings_size = pool;
    w->n = n;
    w->cfg.data_bytes = off;
    return FMT_OK;
}

static void writer_free(struct wt_writer *w)
{
    free(w->path);
    free(w->tmp);
    free(w->strings);
    free(w->t);
    free(w);
}

/* Close and remove the temporary file after a failure. */
static void writer_discard(struct wt_writer *w)
{
    if (w->fd >= 0)
        close(w->fd);
    w->fd = -1;
    unlink(w->tmp);
    w->failed = 1;
}

/* Write n bytes at the file position, through short writes and EINTR. A failure discards
 * the temporary file and names it with the system's reason. */
static enum fmt_status put(struct wt_writer *w, const void *p, uint64_t n, char *err)
{
    const uint8_t *b = p;
    while (n > 0) {
        size_t chunk = n > (1u << 30) ? (1u << 30) : (size_t)n;
        ssize_t k = write(w->fd, b, chunk);
        if (k < 0 && errno == EINTR)
            continue;
        if (k <= 0) {
            int e = k < 0 ? errno : EIO;
            fmt_fail(err, FMT_ERR_IO, "cannot write %s: %s", w->tmp, strerror(e));
            writer_discard(w);
            return FMT_ERR_IO;
        }
        b += k;
        n -= (uint64_t)k;
    }
    return FMT_OK;
}

struct wt_writer *wt_writer_open(const char *path, const struct wt_config *cfg,
                                 const struct wt_tensor_desc *tensors, uint32_t n, char *err)
{
    uint8_t *prefix = NULL;
    struct wt_writer *w = calloc(1, sizeof *w);
    if (!w || !(w->path = strdup(path)) || !(w->tmp = malloc(strlen(path) + 5))) {
        fmt_fail(err, FMT_ERR_NOMEM, "%s: no memory for the writer", path);
        goto free_writer;
    }
    sprintf(w->tmp, "%s.tmp", path);
    w->fd = -1;
    w->cfg = *cfg;
    if (layout_tensors(w, tensors, n, err) || build_prefix(w, &prefix, &w->prefix_len, err))
        goto free_writer;
    w->fd = open(w->tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (w->fd < 0) {
        fmt_fail(err, FMT_ERR_IO, "cannot create %s: %s", w->tmp, strerror(errno));
        goto free_writer;
    }
    if (put(w, prefix, w->prefix_len, err))
        goto free_writer; /* put() removed the file */
    free(prefix);
    return w;
free_writer:
    free(prefix);
    if (w)
        writer_free(w);
    return NULL;
}

/* The current tensor is complete: pad it, keep its CRC, move to the next. */
static enum fmt_status finish_tensor(struct wt_writer *w, char *err)
{
    struct wt_tensor *t = &w->t[w->cur];
    uint64_t pad = (WT_TENSOR_ALIGN - t->size % WT_TENSOR_ALIGN) % WT_TENSOR_ALIGN;
    if (pad && put(w, wt_zeros, pad, err))
        return FMT_ERR_IO;
    t->crc = w->crc;
    w->cur++;
    w->done = 0;
    w->crc = 0;
    return FMT_OK;
}

enum fmt_status wt_writer_write(struct wt_writer *w, const void *bytes, uint64_t n, char *err)
{
    const uint8_t *p = bytes;
    if (w->failed)
        return fmt_fail(err, FMT_ERR_IO, "%s: an earlier write failed", w->path);
    while (n > 0) {
        if (w->cur >= w->n)
            return fmt_fail(err, FMT_ERR_INVALID, "%s: %llu bytes past the end of the last tensor",
                        w->path, (unsigned long long)n);
        const struct wt_tensor *t = &w->t[w->cur];
        uint64_t take = t->size - w->done < n ? t->size - w->done : n;
        if (put(w, p, take, err))
            return FMT_ERR_IO;
        w->crc = crc32c(w->crc, p, (size_t)take);
        w->done += take;
        p += take;
        n -= take;
        if (w->done == t->size && finish_tensor(w, err))
            return FMT_ERR_IO;
    }
    return FMT_OK;
}

/* Make a rename durable: fsync the directory holding path. Best effort: some file systems
 * refuse fsync on directories, and the image itself is already complete on disk. */
static void sync_parent(const char *path)
{
    const char *slash = strrchr(path, '/');
    char dir[4096];
    if (!slash)
        snprintf(dir, sizeof dir, ".");
    else if (slash == path)
        snprintf(dir, sizeof dir, "/");
    else if ((size_t)(slash - path) < sizeof dir)
        snprintf(dir, sizeof dir, "%.*s", (int)(slash - path), path);
    else
        return;
    int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd >= 0) {
        (void)fsync(fd);
        close(fd);
    }
}

/* Rewrite the prefix with the CRCs, make the file durable and give it its name. */
static enum fmt_status commit(struct wt_writer *w, char *err)
{
    uint8_t *prefix;
    size_t len;
    enum fmt_status st = build_prefix(w, &prefix, &len, err);
    if (st != FMT_OK)
        return st;
    for (size_t off = 0; off < len && st == FMT_OK;) {
        ssize_t k = pwrite(w->fd, prefix + off, len - off, (off_t)off);
        if (k < 0 && errno == EINTR)
            continue;
        if (k <= 0)
            st = fmt_fail(err, FMT_ERR_IO, "cannot write %s: %s", w->tmp, strerror(k < 0 ? errno : EIO));
        else
            off += (size_t)k;
    }
    free(prefix);
    if (st == FMT_OK && fsync(w->fd) != 0)
        st = fmt_fail(err, FMT_ERR_IO, "cannot flush %s: %s", w->tmp, strerror(errno));
    if (st == FMT_OK) {
        int rc = close(w->fd);
        w->fd = -1;
        if (rc != 0)
            st = fmt_fail(err, FMT_ERR_IO, "cannot close %s: %s", w->tmp, strerror(errno));
    }
    if (st == FMT_OK && rename(w->tmp, w->path) != 0)
        st = fmt_fail(err, FMT_ERR_IO, "cannot rename %s to %s: %s", w->tmp, w->path, strerror(errno));
    if (st == FMT_OK)
        sync_parent(w->path);
    return st;
}

enum fmt_status wt_writer_close(struct wt_writer *w, char *err)
{
    enum fmt_status st;
    if (w->failed) {
        st = fmt_fail(err, FMT_ERR_IO, "%s was not written: an earlier write failed", w->path);
        goto free_writer;
    }
    if (w->cur < w->n) {
        const struct wt_tensor *t = &w->t[w->cur];
        st = fmt_fail(err, FMT_ERR_INVALID, "%s: tensor '%.80s' has %llu of its %llu bytes written",
                  w->path, w->strings + t->name, (unsigned long long)w->done,
                  (unsigned long long)t->size);
        goto discard_file;
    }
    st = commit(w, err);
    if (st != FMT_OK)
        goto discard_file;
    goto free_writer;
discard_file:
    writer_discard(w);
free_writer:
    writer_free(w);
    return st;
}

void wt_writer_abort(struct wt_writer *w)
{
    if (!w)
        return;
    if (!w->failed)
        writer_discard(w);
    writer_free(w);
}
