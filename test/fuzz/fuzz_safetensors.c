/* fuzz_safetensors.c — libFuzzer target for the safetensors header parser (weights/safetensors.c).
 *
 * The converter reads checkpoints it did not make, so the header parser must refuse anything
 * malformed with a message and never read outside what it was given. The input is a file's
 * beginning: an 8-byte little-endian header length, the header, then data (whatever is left
 * counts as the data section). When a header is accepted, every tensor must lie inside the data,
 * its extent must equal its shape times its element size, and lookups by name must find it.
 *
 * Run: make build/fuzz/fuzz_safetensors && build/fuzz/fuzz_safetensors -max_total_time=60 CORPUS */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "weights/safetensors.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 8)
        return 0;
    uint64_t hlen = 0;
    for (int i = 7; i >= 0; i--)
        hlen = hlen << 8 | data[i];
    if (hlen > size - 8)
        return 0;
    struct wt_st_file f;
    char err[WT_ST_ERR_LEN];
    uint64_t data_size = size - 8 - hlen;
    if (wt_st_parse(&f, (const char *)data + 8, (size_t)hlen, data_size, err) != 0) {
        if (!memchr(err, 0, sizeof err) || !err[0])
            abort();
        return 0;
    }
    for (uint32_t i = 0; i < f.n; i++) {
        const struct wt_st_tensor *t = &f.t[i];
        if (t->begin > t->end || t->end > data_size || wt_st_find(&f, t->name) != t)
            abort();
        if (t->end - t->begin != wt_st_numel(t) * wt_st_dtype_size(t->dtype))
            abort();
    }
    wt_st_close(&f);
    return 0;
}
