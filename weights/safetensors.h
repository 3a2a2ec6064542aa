/* safetensors.h — reading Hugging Face safetensors files.
 *
 * A safetensors file is an 8-byte little-endian header length N, N bytes of JSON
 * ({"name": {"dtype": "BF16", "shape": [..], "data_offsets": [begin, end]}, ...,
 * "__metadata__": {...}}), then the tensor bytes, offsets relative to the end of the header.
 * The header is parsed once and checked completely (dtype known, shape product times element
 * size equal to the extent, extents inside the file and not overlapping); tensor bytes are
 * read on demand with pread(), so a 70 GB checkpoint never sits in memory. */
#ifndef SAFETENSORS_H
#define SAFETENSORS_H

#include <stddef.h>
#include <stdint.h>

#define WT_ST_MAX_DIMS 8
#define WT_ST_MAX_HEADER (256u << 20) /* refuse headers above 256 MiB: a hostile length */
#define WT_ST_ERR_LEN 512

enum wt_st_dtype {
    WT_ST_BOOL = 1, WT_ST_U8, WT_ST_I8, WT_ST_I16, WT_ST_U16, WT_ST_F16, WT_ST_BF16,
    WT_ST_I32, WT_ST_U32, WT_ST_F32, WT_ST_F64, WT_ST_I64, WT_ST_U64, WT_ST_F8_E4M3,
    WT_ST_F8_E5M2,
};

struct wt_st_tensor {
    const char *name;               /* into the file's name pool */
    uint32_t dtype;                 /* enum wt_st_dtype */
    uint32_t ndim;                  /* 0..WT_ST_MAX_DIMS (0: a scalar) */
    uint64_t shape[WT_ST_MAX_DIMS];
    uint64_t begin, end;            /* byte extent relative to the data start */
};

struct wt_st_file {
    int fd;                         /* -1 for a header parsed from memory */
    char path[512];
    uint64_t file_size;
    uint64_t data_start;            /* 8 + header length */
    struct wt_st_tensor *t;         /* sorted by name */
    uint32_t n;
    char *names;                    /* pool holding every name */
};

/* Parse a header (hdr[0..len), the JSON only) for a data region of data_size bytes. Pure
 * apart from allocation; fd is left -1. Returns 0 or -1 with a message in err. */
int wt_st_parse(struct wt_st_file *f, const char *hdr, size_t len, uint64_t data_size, char *err);

/* Open path, read and parse its header. Errors name the file. */
int wt_st_open(struct wt_st_file *f, const char *path, char *err);
void wt_st_close(struct wt_st_file *f);

/* The tensor called name, or NULL (binary search). */
const struct wt_st_tensor *wt_st_find(const struct wt_st_file *f, const char *name);

/* Bytes per element of a dtype, and its name ("BF16"). */
uint32_t wt_st_dtype_size(uint32_t dtype);
const char *wt_st_dtype_name(uint32_t dtype);
/* Elements of a tensor (product of its shape). */
uint64_t wt_st_numel(const struct wt_st_tensor *t);

/* Read bytes [off, off + n) of tensor t into dst. Errors name the file and the tensor. */
int wt_st_read(const struct wt_st_file *f, const struct wt_st_tensor *t, void *dst, uint64_t off,
               uint64_t n, char *err);

/* Read elements [first, first + count) of a BF16, F16 or F32 tensor as float32. */
int wt_st_read_f32(const struct wt_st_file *f, const struct wt_st_tensor *t, float *dst,
                   uint64_t first, uint64_t count, char *err);

#endif
