/* convert.h — turn a Hugging Face checkpoint into a weights image (DESIGN.md §7).
 *
 * The work of the `converter` program as a library call, so tests run it in-process: read the
 * config, build the manifest for the chosen format (manifest.h), check the checkpoint against
 * it (checkpoint.h), then stream every tensor in manifest order through bf16 rounding or INT4
 * packing (quant.h) into the image writer (wimage.h). Memory stays bounded by the widest row
 * block and, for an INT4 tensor, its scales (4/group of its nibble bytes: the layout puts all
 * scales after all nibbles, so they are kept until the nibbles have streamed out), whatever
 * the size of the checkpoint. Rows are quantized by a few threads at once; the bytes do not
 * depend on how many. On any failure the output path is left untouched (the writer renames a
 * finished temporary file into place and removes it otherwise). */
#ifndef WT_CONVERT_H
#define WT_CONVERT_H

#include <signal.h>
#include <stdint.h>
#include <stdio.h>

#include "manifest.h"
#include "quant.h"

#define WT_CONV_ERR_LEN     768
#define WT_CONV_MAX_THREADS 64

struct wt_conv_opts {
    const char *in_dir;            /* checkpoint directory */
    const char *out;               /* image path */
    const char *config;            /* config.json, or NULL for in_dir/config.json */
    struct wt_format fmt;          /* storage format (manifest.h) */
    uint32_t threads;              /* quantization threads; 0: the online CPUs, at most 16 */
    FILE *progress;                /* progress lines (tensor i/n, MB, MB/s, ETA); NULL: none */
    FILE *per_tensor;              /* one line per tensor with its error; NULL: none */
    volatile sig_atomic_t *cancel; /* when set non-zero, stop and fail; NULL: never */
};

struct wt_conv_result {
    struct wt_q_stats err; /* reconstruction error per tensor class */
    uint32_t tensors;      /* written */
    uint32_t skipped;      /* checkpoint tensors left out (vision, unused MTP, ...) */
    uint64_t bytes_in;     /* read from the checkpoint */
    uint64_t bytes_out;    /* size of the image's DATA section */
    double seconds;
};

/* Convert o->in_dir to o->out. Returns 0, or -1 with a message naming the file and the
 * tensor at fault in err (WT_CONV_ERR_LEN bytes); res (may be NULL) is filled either way as
 * far as the conversion got. */
int wt_convert(const struct wt_conv_opts *o, struct wt_conv_result *res, char *err);

#endif
