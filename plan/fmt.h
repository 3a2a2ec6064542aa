/* fmt.h — the container shared by plan.bin and the weights image.
 *
 * A firmware-style image in the U-Boot manner: a fixed 64-byte header with its own CRC, a
 * table of sections with a CRC over the table, and the sections, each with its own CRC.
 * Section ids are append-only per format; a reader skips ids it does not know, so a newer
 * writer can add sections without breaking older readers of the same version.
 *
 *   offset 0            struct fmt_header   (64 bytes)
 *   offset 64           struct fmt_section  × section_count (48 bytes each)
 *   FMT_ALIGN-aligned   section payloads, in table order, never overlapping
 *
 * All integers are little-endian. Records inside sections are fixed-size structs of
 * fixed-width fields (no pointers, no implicit padding), so readers copy them out with
 * memcpy after bounds checks; the build refuses big-endian hosts.
 *
 * A section may be marked FMT_SEC_STREAMED: its bytes are not part of the buffer given to
 * the reader (the weights image's multi-gigabyte tensor data is streamed straight to the
 * device) and the format checks it some other way (per-tensor CRCs). Its extent is still
 * checked against the file size.
 *
 * Reading is a pure function over a byte buffer: fmt_open() checks every offset, size and
 * count before anything is dereferenced and returns a status with a message. */
#ifndef FMT_H
#define FMT_H

#include <stddef.h>
#include <stdint.h>

#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "file formats are little-endian and are read with memcpy: big-endian hosts are not supported"
#endif

#define FMT_HEADER_SIZE 64
#define FMT_SECTION_SIZE 48
#define FMT_ALIGN 64          /* every section starts at a multiple of this */
#define FMT_MAX_SECTIONS 64   /* a reader refuses tables longer than this */
#define FMT_ERR_LEN 256       /* size of the message buffers */

#define FMT_SEC_STREAMED 1u   /* section bytes are outside the parse buffer (see above) */

enum fmt_status {
    FMT_OK = 0,
    FMT_ERR_TRUNCATED,   /* buffer shorter than the header or the file size it declares */
    FMT_ERR_MAGIC,       /* not this format */
    FMT_ERR_VERSION,     /* this format, another version */
    FMT_ERR_HEADER_CRC,  /* header bytes damaged */
    FMT_ERR_TABLE_CRC,   /* section table damaged */
    FMT_ERR_SECTION_CRC, /* a section's bytes damaged */
    FMT_ERR_BOUNDS,      /* an offset, size or count points outside what it must lie in */
    FMT_ERR_MISSING,     /* a required section is absent */
    FMT_ERR_INVALID,     /* a value is out of its allowed set or inconsistent */
    FMT_ERR_NOMEM,       /* a writer ran out of host memory */
    FMT_ERR_IO,          /* a writer could not write its file */
};

/* Short name of a status ("truncated", "header CRC mismatch", ...). */
const char *fmt_status_name(enum fmt_status s);

/* Write a printf-style message to err (FMT_ERR_LEN bytes; nothing when err is NULL) and return
 * s: the one error helper of the format readers and writers. */
enum fmt_status fmt_fail(char *err, enum fmt_status s, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

struct fmt_header {
    uint32_t magic;         /* the format's four bytes, e.g. "QPLN" */
    uint32_t version;       /* format version; readers refuse any other */
    uint32_t header_size;   /* FMT_HEADER_SIZE */
    uint32_t section_count; /* entries in the section table, at most FMT_MAX_SECTIONS */
    uint64_t file_size;     /* total bytes of the file */
    uint64_t table_offset;  /* byte offset of the section table (FMT_HEADER_SIZE) */
    uint32_t table_crc;     /* CRC32C of the section table */
    uint32_t flags;         /* format-specific, 0 so far */
    uint8_t reserved[20];   /* zero */
    uint32_t header_crc;    /* CRC32C of bytes [0, 60) of this header */
};

struct fmt_section {
    uint32_t id;            /* section id, append-only within a format */
    uint32_t flags;         /* FMT_SEC_* */
    uint64_t offset;        /* byte offset from the start of the file, FMT_ALIGN-aligned */
    uint64_t size;          /* bytes */
    uint32_t count;         /* records in the section */
    uint32_t record_size;   /* bytes per record, or 0 for a raw byte section */
    uint32_t crc;           /* CRC32C of the section bytes; 0 for streamed sections */
    uint32_t reserved[3];   /* zero */
};

_Static_assert(sizeof(struct fmt_header) == FMT_HEADER_SIZE, "fmt_header layout");
_Static_assert(sizeof(struct fmt_section) == FMT_SECTION_SIZE, "fmt_section layout");

/* A checked view of a container in memory. Pointers point into the caller's buffer. */
struct fmt_view {
    const uint8_t *buf;     /* the parse buffer */
    size_t len;             /* its length: the whole file, or a prefix if sections are streamed */
    struct fmt_header hdr;
    uint32_t nsec;
    struct fmt_section sec[FMT_MAX_SECTIONS];
};

/* Check the container in buf[0..len). file_size is the size of the whole file (len when
 * the whole file is in the buffer). Verifies magic, version, header CRC, table bounds and
 * CRC, and every section: aligned, inside the file, non-overlapping, unique id, size equal
 * to count * record_size for record sections, within buf for non-streamed sections, and its
 * CRC. Returns FMT_OK or a status with a message in err (FMT_ERR_LEN bytes). */
enum fmt_status fmt_open(struct fmt_view *v, const void *buf, size_t len, uint64_t file_size,
                         uint32_t magic, uint32_t version, char *err);

/* Find section id. Returns its table entry or NULL. For non-streamed sections *data points
 * at its bytes in the parse buffer. */
const struct fmt_section *fmt_find(const struct fmt_view *v, uint32_t id, const void **data);

/* Find a record section that must exist with the given record size; on failure returns a
 * status (FMT_ERR_MISSING or FMT_ERR_INVALID) with a message naming what. */
enum fmt_status fmt_records(const struct fmt_view *v, uint32_t id, uint32_t record_size,
                            const char *what, const void **data, uint32_t *count, char *err);

/* A NUL-terminated string at offset off of a string pool of size n, or NULL if off is out
 * of range or the string is not terminated inside the pool. */
const char *fmt_string(const char *pool, uint64_t n, uint32_t off);

/* ---- writing ------------------------------------------------------------------------ */

/* Accumulates sections in memory, then lays them out and computes every CRC. */
struct fmt_builder {
    uint32_t nsec;
    struct fmt_section sec[FMT_MAX_SECTIONS];
    void *data[FMT_MAX_SECTIONS]; /* owned copies, NULL for streamed sections */
    int failed;                   /* set when an add ran out of memory or sections */
};

void fmt_builder_init(struct fmt_builder *b);
void fmt_builder_free(struct fmt_builder *b);

/* Add a section holding a copy of data[0..size). record_size 0 marks raw bytes; otherwise
 * size must be a multiple of it. */
void fmt_builder_add(struct fmt_builder *b, uint32_t id, uint32_t record_size, const void *data,
                     uint64_t size);

/* Add a streamed section of size bytes, placed after every other section at an offset
 * aligned to align (a power of two, at least FMT_ALIGN). Its bytes are written by the caller
 * at the offset fmt_builder_finish() reports. */
void fmt_builder_add_streamed(struct fmt_builder *b, uint32_t id, uint64_t size, uint32_t align);

/* Lay the sections out and produce the file image of everything except streamed sections:
 * *out (malloc'd, *out_len bytes, the caller frees) is the prefix of the file up to the
 * first streamed section (the whole file when there is none). *file_size is the full size.
 * For a streamed section, its offset is in b->sec[i].offset afterwards. */
enum fmt_status fmt_builder_finish(struct fmt_builder *b, uint32_t magic, uint32_t version,
                                   uint8_t **out, size_t *out_len, uint64_t *file_size);

#endif
