/* ref_image.c — read the reference's weights from a weights image (ref_image.h).
 *
 * The metadata prefix is read the way rt will read it: the header first, wt_prefix_size()
 * says how much more is needed (it may ask twice: once for the section table, once for the
 * whole prefix), then wt_read() checks everything. Tensor bytes are read one tensor at a
 * time, CRC-checked, and widened to float32; the reference holds its float32 copy, this
 * module holds nothing between calls. */
#include "ref_image.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "../../kern/quant.h"
#include "../../weights/quant.h"
#include "ref.h"

/* pread exactly n bytes at off; 0 or -1. */
static int read_at(int fd, void *dst, uint64_t n, uint64_t off)
{
    uint8_t *p = dst;
    while (n > 0) {
        ssize_t k = pread(fd, p, n > (1u << 30) ? (1u << 30) : (size_t)n, (off_t)off);
        if (k < 0 && errno == EINTR)
            continue;
        if (k <= 0)
            return -1;
        p += k, off += (uint64_t)k, n -= (uint64_t)k;
    }
    return 0;
}

/* Read the metadata prefix: grow the read until wt_prefix_size() is satisfied. */
static int read_prefix(struct ref_image *im, uint64_t file_size, size_t *len, char *err)
{
    uint64_t want = FMT_HEADER_SIZE, have = 0;
    while (want > have) {
        uint8_t *p = want <= file_size ? realloc(im->prefix, (size_t)want) : NULL;
        if (p)
            im->prefix = p;
        if (!p || read_at(im->fd, p + have, want - have, have)) {
            snprintf(err, MODEL_ERR_LEN, "%s: cannot read %llu bytes of metadata", im->path,
                     (unsigned long long)want);
            return -1;
        }
        have = want;
        want = wt_prefix_size(p, (size_t)have);
        if (want == 0) {
            snprintf(err, MODEL_ERR_LEN, "%s: not a weights image (bad header)", im->path);
            return -1;
        }
    }
    *len = (size_t)have;
    return 0;
}

int ref_image_open(struct ref_image *im, const char *path, char *err)
{
    struct stat st;
    char why[FMT_ERR_LEN];
    size_t len;
    memset(im, 0, sizeof *im);
    im->fd = -1;
    snprintf(im->path, sizeof im->path, "%s", path);
    im->fd = open(path, O_RDONLY | O_CLOEXEC);
    if (im->fd < 0 || fstat(im->fd, &st)) {
        snprintf(err, MODEL_ERR_LEN, "%s: %s", path, strerror(errno));
        goto close_file;
    }
    if (read_prefix(im, (uint64_t)st.st_size, &len, err))
        goto close_file;
    if (wt_read(&im->v, im->prefix, len, (uint64_t)st.st_size, why) != FMT_OK) {
        snprintf(err, MODEL_ERR_LEN, "%s: %s", path, why);
        goto close_file;
    }
    return 0;
close_file:
    ref_image_close(im);
    return -1;
}

void ref_image_close(struct ref_image *im)
{
    if (im->fd >= 0)
        close(im->fd);
    free(im->prefix);
    memset(im, 0, sizeof *im);
    im->fd = -1;
}

/* Widen the stored bytes of tensor t to float32. */
static int widen(const struct ref_image *im, const char *name, const struct wt_tensor *t,
                 const uint8_t *b, float *dst, char *err)
{
    uint64_t n = 1;
    for (uint32_t d = 0; d < t->ndim; d++)
        n *= t->shape[d];
    if (t->layout == K_LAYOUT_I4_ROWS) {
        uint64_t k = t->shape[t->ndim - 1], rows = n / k;
        wt_q_unpack_rows(b, (const uint16_t *)(const void *)(b + t->scales_offset), rows, k,
                         t->group_size, dst);
    } else if (t->layout == K_LAYOUT_PLAIN && t->dtype == PLAN_DTYPE_BF16) {
        for (uint64_t i = 0; i < n; i++)
            dst[i] = wt_q_bf16_f32((uint16_t)(b[2 * i] | b[2 * i + 1] << 8));
    } else if (t->layout == K_LAYOUT_PLAIN && t->dtype == PLAN_DTYPE_F32) {
        memcpy(dst, b, n * 4);
    } else {
        snprintf(err, MODEL_ERR_LEN, "%s: tensor %s: dtype %u layout %u cannot be read as float32",
                 im->path, name, t->dtype, t->layout);
        return -1;
    }
    return 0;
}

int ref_image_get(void *ctx, const char *name, int ndim, const uint64_t *shape, float *dst,
                  char *err)
{
    const struct ref_image *im = ctx;
    int64_t i = wt_find(&im->v, name);
    if (i < 0) {
        snprintf(err, MODEL_ERR_LEN, "%s: no tensor %s", im->path, name);
        return -1;
    }
    struct wt_tensor t;
    wt_get_tensor(&im->v, (uint32_t)i, &t);
    int same = (int)t.ndim == ndim;
    for (int d = 0; same && d < ndim; d++)
        same = t.shape[d] == shape[d];
    if (!same) {
        snprintf(err, MODEL_ERR_LEN, "%s: tensor %s has another shape", im->path, name);
        return -1;
    }
    uint8_t *b = malloc(t.size ? t.size : 1);
    int rc = -1;
    if (!b || read_at(im->fd, b, t.size, im->v.data_offset + t.offset))
        snprintf(err, MODEL_ERR_LEN, "%s: tensor %s: cannot read its %llu bytes", im->path, name,
                 (unsigned long long)t.size);
    else if (!wt_tensor_crc_ok(&im->v, (uint32_t)i, b, t.size))
        snprintf(err, MODEL_ERR_LEN, "%s: tensor %s: CRC mismatch", im->path, name);
    else
        rc = widen(im, name, &t, b, dst, err);
    free(b);
    return rc;
}
