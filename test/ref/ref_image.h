/* ref_image.h — the CPU reference's weights read from a weights image.
 *
 * So the reference can run from exactly the bytes the GPU runtime will load: ref_image_get()
 * is a ref_get_fn that finds a tensor by its image name, reads its bytes with pread, checks
 * them against the tensor's CRC32C, and widens them to float32 (bf16 and f32 as stored; INT4
 * dequantized by wt_q_unpack_rows, the converter's exact inverse). */
#ifndef REF_IMAGE_H
#define REF_IMAGE_H

#include <stdint.h>

#include "../../weights/wimage.h"

struct ref_image {
    int fd;
    char path[512];
    uint8_t *prefix; /* the metadata prefix; v points into it */
    struct wt_view v;
};

/* Open a weights image and check its metadata with wt_read. Returns 0, or -1 with a message
 * naming the file in err (MODEL_ERR_LEN bytes). */
int ref_image_open(struct ref_image *im, const char *path, char *err);
void ref_image_close(struct ref_image *im);

/* ref_get_fn over an open image (ctx is the struct ref_image *): tensor `name` as float32
 * after checking its shape and its CRC. */
int ref_image_get(void *ctx, const char *name, int ndim, const uint64_t *shape, float *dst,
                  char *err);

#endif
