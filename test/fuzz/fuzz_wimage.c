/* fuzz_wimage.c — libFuzzer target over wt_read() and wt_prefix_size().
 *
 * Input: one control byte, then the file (or a prefix of it). If the control byte is odd,
 * every CRC is recomputed first (recrc.h) so mutations reach the metadata checks; see
 * fuzz_plan.c for why the control byte is separate from the file.
 *
 * Each input is read twice: as a whole file (file_size = its length) and as the metadata
 * prefix of a longer file, with the file size its header declares when that is larger
 * (otherwise a size one past the end plus the control byte's upper bits, which the reader
 * must refuse cleanly). That exercises the streamed DATA bounds, which only matter when
 * the file is longer than the buffer. An accepted image is used as rt and the converter
 * use it: every tensor and name is read, each name must be found at its own index, tensor
 * bytes inside the buffer are CRC-checked, and the manifest hash computed from the image
 * must equal the one computed from the same manifest as plan weights. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "test/recrc.h"
#include "weights/wimage.h"

#define REQUIRE(c)                                                                                 \
    do {                                                                                           \
        if (!(c))                                                                                  \
            __builtin_trap();                                                                      \
    } while (0)

static void use_image(const struct wt_view *v, size_t len)
{
    struct plan_weight *w = malloc(v->num_tensors ? v->num_tensors * sizeof *w : 1);
    for (uint32_t i = 0; i < v->num_tensors; i++) {
        struct wt_tensor t;
        wt_get_tensor(v, i, &t);
        const char *name = wt_name(v, &t);
        size_t n = strlen(name);
        REQUIRE(n > 0 && n < WT_MAX_NAME);
        REQUIRE(wt_find(v, name) == i);
        REQUIRE(t.offset <= v->data_size && t.size <= v->data_size - t.offset);
        uint64_t at = v->data_offset + t.offset;
        if (at <= len && t.size <= len - at)
            (void)wt_tensor_crc_ok(v, i, (const uint8_t *)v->f.buf + at, t.size);
        w[i] = (struct plan_weight){t.name, t.dtype, t.layout, t.group_size, t.ndim, 0,
                                    {t.shape[0], t.shape[1], t.shape[2], t.shape[3]}, t.size};
    }
    REQUIRE(wt_manifest_hash(v) == wt_manifest_hash_plan(v->strings, w, v->num_tensors));
    REQUIRE(memchr(v->cfg.source, 0, sizeof v->cfg.source) != NULL);
    free(w);
}

static void read_as(const uint8_t *buf, size_t n, uint64_t file_size)
{
    static struct wt_view v;
    char err[FMT_ERR_LEN];
    err[0] = 0;
    if (wt_read(&v, buf, n, file_size, err) == FMT_OK)
        use_image(&v, n);
    else
        REQUIRE(err[0] != 0 && memchr(err, 0, FMT_ERR_LEN)); /* every refusal says why */
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    size_t n = size - 1;
    uint8_t *buf = malloc(n ? n : 1);
    memcpy(buf, data + 1, n);
    if (data[0] & 1)
        recrc(buf, n);
    (void)wt_prefix_size(buf, n);
    read_as(buf, n, n);
    uint64_t declared = 0;
    if (n >= FMT_HEADER_SIZE)
        memcpy(&declared, buf + offsetof(struct fmt_header, file_size), sizeof declared);
    read_as(buf, n, declared > n ? declared : n + 1 + (data[0] >> 1));
    free(buf);
    return 0;
}
