/* wimage.h — the weights image format: its one definition, reader and writer.
 *
 * The converter turns a Hugging Face checkpoint into this image once, offline, in the
 * layouts the kernels read fastest (DESIGN.md §7); rt copies its data section into the one
 * weights allocation as it is. It is an fmt.h container with magic "QWTS" and sections:
 *
 *   id  name      records            what
 *    1  CONFIG    wt_config × 1      model config and the storage formats
 *    2  STRINGS   raw bytes          NUL-terminated tensor names
 *    3  TENSORS   wt_tensor          name, dtype, layout, shape, extent, CRC of each tensor
 *    4  DATA      raw, streamed      tensor bytes; WT_DATA_ALIGN-aligned, tensors WT_TENSOR_ALIGN
 *
 * DATA is the last section and is marked FMT_SEC_STREAMED: a reader parses the metadata
 * prefix (header, table, CONFIG, STRINGS, TENSORS; wt_prefix_size() tells how much to read)
 * and checks each tensor's CRC32C while the data streams to the device. Tensor offsets are
 * relative to the start of DATA, which is exactly where they land in the weights
 * allocation, so relocations in plan.bin are (tensor index, byte offset) pairs.
 *
 * Writing streams too: the writer lays out the whole file from the tensor list, writes the
 * data in order as it arrives (the converter never holds more than one tensor), and writes
 * the final metadata with the CRCs last, into a temporary file that is renamed over the
 * destination only when complete, so a failed run leaves nothing that looks valid. */
#ifndef WIMAGE_H
#define WIMAGE_H

#include <stddef.h>
#include <stdint.h>

#include "../plan/fmt.h"
#include "../plan/model.h"
#include "../plan/planfile.h"

#define WT_MAGIC 0x53545751u /* "QWTS" */
#define WT_VERSION 1u
#define WT_DATA_ALIGN 4096u  /* DATA starts page-aligned: direct I/O reads */
#define WT_TENSOR_ALIGN 256u /* every tensor starts 256-aligned inside DATA */
#define WT_MAX_DIMS PLAN_MAX_DIMS
#define WT_MAX_NAME 256      /* longest tensor name, NUL included */

enum wt_section_id {
    WT_SEC_CONFIG = 1,
    WT_SEC_STRINGS = 2,
    WT_SEC_TENSORS = 3,
    WT_SEC_DATA = 4,
};

struct wt_config {
    struct model_config model;  /* the model the tensors belong to */
    uint32_t quant;             /* enum plan_quant of projections and experts */
    uint32_t group_size;        /* INT4 group size, 0 for bf16 */
    uint32_t lm_head_quant;     /* enum plan_quant of lm_head */
    uint32_t reserved0;         /* zero */
    uint32_t reserved1;         /* zero; keeps data_bytes 8-aligned with no implicit padding */
    uint64_t data_bytes;        /* size of DATA */
    char source[64];            /* NUL-terminated note on the source checkpoint (informational) */
};

struct wt_tensor {
    uint32_t name;                  /* STRINGS offset */
    uint32_t dtype;                 /* enum plan_dtype of the stored elements */
    uint32_t layout;                /* packed layout id (kern/ headers); 0 = plain row-major */
    uint32_t group_size;            /* quantization group, 0 if none */
    uint32_t ndim;                  /* 1..WT_MAX_DIMS */
    uint32_t crc;                   /* CRC32C of the tensor's bytes */
    uint64_t shape[WT_MAX_DIMS];    /* logical shape, unused dims 0 */
    uint64_t offset;                /* into DATA, WT_TENSOR_ALIGN-aligned */
    uint64_t size;                  /* bytes, including scales and zero points */
    uint64_t scales_offset;         /* byte offset of the scales inside the tensor, 0 if none */
    uint64_t zeros_offset;          /* byte offset of the zero points inside the tensor, 0 if none */
};

/* A checked view of an image's metadata. */
struct wt_view {
    struct fmt_view f;
    struct wt_config cfg;
    const char *strings; uint64_t strings_size;
    const uint8_t *tensors; uint32_t num_tensors;
    uint64_t data_offset;           /* file offset of DATA */
    uint64_t data_size;             /* bytes of DATA */
};

/* How many bytes of the file wt_read() needs, given its first FMT_HEADER_SIZE bytes (or
 * more). Returns 0 if the header is not a valid weights image header. */
uint64_t wt_prefix_size(const void *head, size_t len);

/* Parse and check the metadata in buf[0..len) of a file of file_size bytes: container,
 * CONFIG (model_config_check, known formats), every tensor (name in STRINGS and unique,
 * dtype and layout known, rank, shape and size consistent with dtype and group size,
 * extent aligned, inside DATA and not overlapping another). Pure. Returns FMT_OK or a
 * status with a message naming the tensor in err (FMT_ERR_LEN bytes). */
enum fmt_status wt_read(struct wt_view *v, const void *buf, size_t len, uint64_t file_size, char *err);

/* Copy tensor record i out (i < num_tensors); its name via wt_name(). */
void wt_get_tensor(const struct wt_view *v, uint32_t i, struct wt_tensor *t);
const char *wt_name(const struct wt_view *v, const struct wt_tensor *t);
/* Index of the tensor called name, or -1. */
int64_t wt_find(const struct wt_view *v, const char *name);

/* Check tensor i's bytes (the caller has them, e.g. in a staging buffer) against its CRC. */
int wt_tensor_crc_ok(const struct wt_view *v, uint32_t i, const void *bytes, uint64_t size);

/* Hash of the manifest (per tensor, in table order: name, dtype, layout, group size, ndim,
 * shape, size). The planner computes the same from its plan_weight list, so a plan and an
 * image match exactly when their manifest hashes do. */
uint64_t wt_manifest_hash(const struct wt_view *v);
uint64_t wt_manifest_hash_plan(const char *strings, const struct plan_weight *w, uint32_t n);

/* ---- writing ------------------------------------------------------------------------ */

/* What the writer needs up front about one tensor: everything but offset and CRC. */
struct wt_tensor_desc {
    const char *name;
    uint32_t dtype, layout, group_size, ndim;
    uint64_t shape[WT_MAX_DIMS];
    uint64_t size, scales_offset, zeros_offset;
};

struct wt_writer; /* opaque */

/* Start writing an image of these tensors (in this order) to path. Writes go to a
 * temporary file beside path. Returns NULL with a message in err on failure. */
struct wt_writer *wt_writer_open(const char *path, const struct wt_config *cfg,
                                 const struct wt_tensor_desc *tensors, uint32_t n, char *err);

/* Append bytes of the current tensor; tensors are written in order, each exactly its size,
 * in as many calls as the caller likes. Returns FMT_OK or a status with a message. */
enum fmt_status wt_writer_write(struct wt_writer *w, const void *bytes, uint64_t n, char *err);

/* Finish: check that every tensor was written in full, write the metadata with the CRCs,
 * flush, and rename the temporary file to path. Frees w either way. */
enum fmt_status wt_writer_close(struct wt_writer *w, char *err);

/* Abandon: remove the temporary file and free w. */
void wt_writer_abort(struct wt_writer *w);

#endif
