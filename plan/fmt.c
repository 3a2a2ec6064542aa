/* fmt.c — the checked reader and the builder of the container shared by plan.bin and the
 * weights image (fmt.h).
 *
 * The reader trusts nothing: every offset, size and count is compared against the buffer
 * and the file size with arithmetic that cannot wrap, before any byte it names is read.
 * Checks run cheapest first (header, table, section extents, layout) and the section CRCs
 * last, so a damaged table never makes us hash a wild range.
 *
 * Rules this file adds to those fmt.h states, so that every byte of a file is covered by a
 * CRC or by a rule and no two valid files differ only in an ignored field:
 *   - header flags are 0 and section flags hold FMT_SEC_STREAMED only (no flag is defined
 *     yet, and a reader of this version cannot honour one it does not know);
 *   - a raw section (record_size 0) has count 0: its count would mean nothing;
 *   - the file ends exactly where its last section (or the table) ends: no trailing bytes;
 *   - padding between the table and the sections and between sections is zero wherever it
 *     lies inside the parse buffer.
 * The builder produces exactly this: sections in add order at FMT_ALIGN, streamed sections
 * after all others at their own alignment, zero padding, every CRC filled. */
#include "fmt.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "crc.h"

/* Builder failure kinds kept in fmt_builder.failed. */
#define FMT_BUILD_NOMEM 1
#define FMT_BUILD_FULL 2
#define FMT_BUILD_ARGS 3

const char *fmt_status_name(enum fmt_status s)
{
    switch (s) {
    case FMT_OK: return "ok";
    case FMT_ERR_TRUNCATED: return "truncated";
    case FMT_ERR_MAGIC: return "bad magic";
    case FMT_ERR_VERSION: return "unsupported version";
    case FMT_ERR_HEADER_CRC: return "header CRC mismatch";
    case FMT_ERR_TABLE_CRC: return "section table CRC mismatch";
    case FMT_ERR_SECTION_CRC: return "section CRC mismatch";
    case FMT_ERR_BOUNDS: return "out of bounds";
    case FMT_ERR_MISSING: return "missing section";
    case FMT_ERR_INVALID: return "invalid value";
    case FMT_ERR_NOMEM: return "out of memory";
    case FMT_ERR_IO: return "I/O error";
    }
    return "unknown status";
}

enum fmt_status fmt_fail(char *err, enum fmt_status s, const char *fmt, ...)
{
    va_list ap;
    if (!err)
        return s;
    va_start(ap, fmt);
    vsnprintf(err, FMT_ERR_LEN, fmt, ap);
    va_end(ap);
    return s;
}

/* Round x up to a multiple of the power of two a; 0 if that would wrap. */
static uint64_t align_up(uint64_t x, uint64_t a)
{
    if (x > UINT64_MAX - (a - 1))
        return 0;
    return (x + a - 1) & ~(a - 1);
}

static int all_zero(const uint8_t *p, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (p[i])
            return 0;
    return 1;
}

static uint64_t table_end(uint32_t nsec)
{
    return FMT_HEADER_SIZE + (uint64_t)nsec * FMT_SECTION_SIZE;
}

/* ---- reading ----------------------------------------------------------------------------- */

static enum fmt_status check_header(const struct fmt_header *h, const uint8_t *buf, size_t len,
                                    uint64_t file_size, uint32_t magic, uint32_t version,
                                    char *err)
{
    if (h->magic != magic)
        return fmt_fail(err, FMT_ERR_MAGIC, "magic 0x%08x is not 0x%08x: not this kind of file",
                    h->magic, magic);
    if (h->version != version)
        return fmt_fail(err, FMT_ERR_VERSION, "format version %u, this reader reads version %u",
                    h->version, version);
    uint32_t crc = crc32c(0, buf, offsetof(struct fmt_header, header_crc));
    if (crc != h->header_crc)
        return fmt_fail(err, FMT_ERR_HEADER_CRC, "header CRC 0x%08x, stored 0x%08x", crc,
                    h->header_crc);
    if (h->header_size != FMT_HEADER_SIZE)
        return fmt_fail(err, FMT_ERR_INVALID, "header_size %u is not %d", h->header_size,
                    FMT_HEADER_SIZE);
    if (h->table_offset != FMT_HEADER_SIZE)
        return fmt_fail(err, FMT_ERR_INVALID, "section table at offset %llu, not right after the header",
                    (unsigned long long)h->table_offset);
    if (h->section_count > FMT_MAX_SECTIONS)
        return fmt_fail(err, FMT_ERR_BOUNDS, "section_count %u exceeds the limit of %d",
                    h->section_count, FMT_MAX_SECTIONS);
    if (h->flags != 0)
        return fmt_fail(err, FMT_ERR_INVALID, "header flags 0x%x: no flag is defined", h->flags);
    if (!all_zero(h->reserved, sizeof h->reserved))
        return fmt_fail(err, FMT_ERR_INVALID, "header reserved bytes are not zero");
    if (h->file_size > file_size)
        return fmt_fail(err, FMT_ERR_TRUNCATED, "header declares %llu bytes but the file has %llu",
                    (unsigned long long)h->file_size, (unsigned long long)file_size);
    if (h->file_size < file_size)
        return fmt_fail(err, FMT_ERR_INVALID, "file has %llu bytes, %llu more than its header declares",
                    (unsigned long long)file_size,
                    (unsigned long long)(file_size - h->file_size));
    if (len > file_size)
        return fmt_fail(err, FMT_ERR_INVALID, "buffer of %zu bytes is longer than the %llu-byte file",
                    len, (unsigned long long)file_size);
    return FMT_OK;
}

static enum fmt_status check_table(struct fmt_view *v, size_t len, char *err)
{
    uint64_t end = table_end(v->hdr.section_count);
    if (end > v->hdr.file_size)
        return fmt_fail(err, FMT_ERR_BOUNDS, "section table of %u entries ends past the %llu-byte file",
                    v->hdr.section_count, (unsigned long long)v->hdr.file_size);
    if (end > len)
        return fmt_fail(err, FMT_ERR_TRUNCATED, "section table ends at %llu, past the %zu bytes read",
                    (unsigned long long)end, len);
    uint32_t crc = crc32c(0, v->buf + FMT_HEADER_SIZE, (size_t)(end - FMT_HEADER_SIZE));
    if (crc != v->hdr.table_crc)
        return fmt_fail(err, FMT_ERR_TABLE_CRC, "section table CRC 0x%08x, stored 0x%08x", crc,
                    v->hdr.table_crc);
    v->nsec = v->hdr.section_count;
    memcpy(v->sec, v->buf + FMT_HEADER_SIZE, (size_t)(end - FMT_HEADER_SIZE));
    return FMT_OK;
}

/* One table entry on its own: flags, alignment, extent, record shape. */
static enum fmt_status check_section(const struct fmt_view *v, const struct fmt_section *s,
                                     size_t len, char *err)
{
    uint64_t fs = v->hdr.file_size;
    int streamed = (s->flags & FMT_SEC_STREAMED) != 0;
    if (s->flags & ~FMT_SEC_STREAMED)
        return fmt_fail(err, FMT_ERR_INVALID, "section id %u: unknown flags 0x%x", s->id, s->flags);
    if (s->reserved[0] || s->reserved[1] || s->reserved[2])
        return fmt_fail(err, FMT_ERR_INVALID, "section id %u: reserved fields are not zero", s->id);
    if (s->offset % FMT_ALIGN)
        return fmt_fail(err, FMT_ERR_INVALID, "section id %u: offset %llu is not %d-aligned", s->id,
                    (unsigned long long)s->offset, FMT_ALIGN);
    if (s->offset < table_end(v->nsec))
        return fmt_fail(err, FMT_ERR_BOUNDS, "section id %u: offset %llu lies inside the header or table",
                    s->id, (unsigned long long)s->offset);
    if (s->offset > fs || s->size > fs - s->offset)
        return fmt_fail(err, FMT_ERR_BOUNDS, "section id %u: [%llu, +%llu) extends past the %llu-byte file",
                    s->id, (unsigned long long)s->offset, (unsigned long long)s->size,
                    (unsigned long long)fs);
    if (streamed && s->crc != 0)
        return fmt_fail(err, FMT_ERR_INVALID, "section id %u: streamed section with a non-zero CRC",
                    s->id);
    if (!streamed && s->offset + s->size > len)
        return fmt_fail(err, FMT_ERR_TRUNCATED, "section id %u: ends at %llu, past the %zu bytes read",
                    s->id, (unsigned long long)(s->offset + s->size), len);
    if (s->record_size == 0 && s->count != 0)
        return fmt_fail(err, FMT_ERR_INVALID, "section id %u: raw section with count %u (must be 0)",
                    s->id, s->count);
    if (s->record_size != 0 && s->size != (uint64_t)s->count * s->record_size)
        return fmt_fail(err, FMT_ERR_INVALID,
                    "section id %u: size %llu is not count %u x record size %u", s->id,
                    (unsigned long long)s->size, s->count, s->record_size);
    return FMT_OK;
}

/* Table indices in ascending offset order (insertion sort: at most FMT_MAX_SECTIONS). */
static void sort_by_offset(const struct fmt_view *v, uint32_t *idx)
{
    for (uint32_t i = 0; i < v->nsec; i++) {
        uint32_t j = i;
        while (j > 0 && v->sec[idx[j - 1]].offset > v->sec[i].offset) {
            idx[j] = idx[j - 1];
            j--;
        }
        idx[j] = i;
    }
}

/* The sections together: unique ids, no overlap, zero padding, no trailing bytes. */
static enum fmt_status check_layout(const struct fmt_view *v, size_t len, char *err)
{
    uint32_t idx[FMT_MAX_SECTIONS];
    for (uint32_t i = 0; i < v->nsec; i++)
        for (uint32_t j = 0; j < i; j++)
            if (v->sec[i].id == v->sec[j].id)
                return fmt_fail(err, FMT_ERR_INVALID, "section id %u appears twice in the table",
                            v->sec[i].id);
    sort_by_offset(v, idx);
    uint64_t pos = table_end(v->nsec); /* end of everything placed so far */
    uint32_t last = UINT32_MAX;        /* section that ends at pos */
    for (uint32_t k = 0; k < v->nsec; k++) {
        const struct fmt_section *s = &v->sec[idx[k]];
        if (s->size > 0 && s->offset < pos && last != UINT32_MAX)
            return fmt_fail(err, FMT_ERR_BOUNDS, "section id %u overlaps section id %u", s->id,
                        v->sec[last].id);
        if (s->offset > pos && pos < len) {
            uint64_t gap_end = s->offset < len ? s->offset : len;
            if (!all_zero(v->buf + pos, (size_t)(gap_end - pos)))
                return fmt_fail(err, FMT_ERR_INVALID, "non-zero padding before section id %u", s->id);
        }
        if (s->offset + s->size > pos) {
            pos = s->offset + s->size;
            last = idx[k];
        }
    }
    if (pos != v->hdr.file_size)
        return fmt_fail(err, FMT_ERR_INVALID, "file_size %llu but the sections end at %llu",
                    (unsigned long long)v->hdr.file_size, (unsigned long long)pos);
    return FMT_OK;
}

static enum fmt_status check_crcs(const struct fmt_view *v, char *err)
{
    for (uint32_t i = 0; i < v->nsec; i++) {
        const struct fmt_section *s = &v->sec[i];
        if (s->flags & FMT_SEC_STREAMED)
            continue;
        uint32_t crc = crc32c(0, v->buf + s->offset, (size_t)s->size);
        if (crc != s->crc)
            return fmt_fail(err, FMT_ERR_SECTION_CRC, "section id %u: CRC 0x%08x, stored 0x%08x",
                        s->id, crc, s->crc);
    }
    return FMT_OK;
}

enum fmt_status fmt_open(struct fmt_view *v, const void *buf, size_t len, uint64_t file_size,
                         uint32_t magic, uint32_t version, char *err)
{
    enum fmt_status st;
    memset(v, 0, sizeof *v);
    if (err)
        err[0] = 0;
    if (!buf && len)
        return fmt_fail(err, FMT_ERR_INVALID, "no buffer");
    if (len < FMT_HEADER_SIZE)
        return fmt_fail(err, FMT_ERR_TRUNCATED, "%zu bytes, shorter than the %d-byte header", len,
                    FMT_HEADER_SIZE);
    v->buf = buf;
    v->len = len;
    memcpy(&v->hdr, buf, sizeof v->hdr);
    st = check_header(&v->hdr, buf, len, file_size, magic, version, err);
    if (st == FMT_OK)
        st = check_table(v, len, err);
    for (uint32_t i = 0; st == FMT_OK && i < v->nsec; i++)
        st = check_section(v, &v->sec[i], len, err);
    if (st == FMT_OK)
        st = check_layout(v, len, err);
    if (st == FMT_OK)
        st = check_crcs(v, err);
    if (st != FMT_OK)
        v->nsec = 0;
    return st;
}

const struct fmt_section *fmt_find(const struct fmt_view *v, uint32_t id, const void **data)
{
    for (uint32_t i = 0; i < v->nsec; i++) {
        const struct fmt_section *s = &v->sec[i];
        if (s->id != id)
            continue;
        if (data)
            *data = (s->flags & FMT_SEC_STREAMED) ? NULL : v->buf + s->offset;
        return s;
    }
    if (data)
        *data = NULL;
    return NULL;
}

enum fmt_status fmt_records(const struct fmt_view *v, uint32_t id, uint32_t record_size,
                            const char *what, const void **data, uint32_t *count, char *err)
{
    const struct fmt_section *s = fmt_find(v, id, data);
    *count = 0;
    if (!s)
        return fmt_fail(err, FMT_ERR_MISSING, "%s section (id %u) is missing", what, id);
    if (s->flags & FMT_SEC_STREAMED)
        return fmt_fail(err, FMT_ERR_INVALID, "%s section (id %u) must not be streamed", what, id);
    if (s->record_size != record_size)
        return fmt_fail(err, FMT_ERR_INVALID, "%s section (id %u): record size %u, expected %u", what,
                    id, s->record_size, record_size);
    *count = s->count;
    return FMT_OK;
}

const char *fmt_string(const char *pool, uint64_t n, uint32_t off)
{
    if (!pool || off >= n)
        return NULL;
    if (!memchr(pool + off, 0, (size_t)(n - off)))
        return NULL;
    return pool + off;
}

/* ---- writing ----------------------------------------------------------------------------- */

void fmt_builder_init(struct fmt_builder *b)
{
    memset(b, 0, sizeof *b);
}

void fmt_builder_free(struct fmt_builder *b)
{
    for (uint32_t i = 0; i < b->nsec; i++)
        free(b->data[i]);
    memset(b, 0, sizeof *b);
}

/* Claim the next table slot for id, or record why not. */
static struct fmt_section *builder_slot(struct fmt_builder *b, uint32_t id)
{
    if (b->failed)
        return NULL;
    if (b->nsec == FMT_MAX_SECTIONS) {
        b->failed = FMT_BUILD_FULL;
        return NULL;
    }
    for (uint32_t i = 0; i < b->nsec; i++) {
        if (b->sec[i].id == id) {
            b->failed = FMT_BUILD_ARGS;
            return NULL;
        }
    }
    struct fmt_section *s = &b->sec[b->nsec];
    memset(s, 0, sizeof *s);
    s->id = id;
    return s;
}

void fmt_builder_add(struct fmt_builder *b, uint32_t id, uint32_t record_size, const void *data,
                     uint64_t size)
{
    if (!b->failed && ((record_size && (size % record_size || size / record_size > UINT32_MAX)) ||
                       size > SIZE_MAX || (size && !data))) {
        b->failed = FMT_BUILD_ARGS;
        return;
    }
    struct fmt_section *s = builder_slot(b, id);
    if (!s)
        return;
    void *copy = malloc(size ? (size_t)size : 1);
    if (!copy) {
        b->failed = FMT_BUILD_NOMEM;
        return;
    }
    if (size)
        memcpy(copy, data, (size_t)size);
    s->size = size;
    s->record_size = record_size;
    s->count = record_size ? (uint32_t)(size / record_size) : 0;
    b->data[b->nsec++] = copy;
}

void fmt_builder_add_streamed(struct fmt_builder *b, uint32_t id, uint64_t size, uint32_t align)
{
    if (!b->failed && (align < FMT_ALIGN || (align & (align - 1)))) {
        b->failed = FMT_BUILD_ARGS;
        return;
    }
    struct fmt_section *s = builder_slot(b, id);
    if (!s)
        return;
    s->flags = FMT_SEC_STREAMED;
    s->size = size;
    s->reserved[0] = align; /* kept until finish; the file's table gets zero */
    b->data[b->nsec++] = NULL;
}

/* Assign offsets: non-streamed sections in add order at FMT_ALIGN, then streamed ones at
 * their own alignment. Sets the end of the file and the start of the first streamed section
 * (the end if there is none). Returns -1 if an offset would overflow. */
static int builder_layout(struct fmt_builder *b, uint64_t *end, uint64_t *prefix)
{
    uint64_t pos = table_end(b->nsec);
    *prefix = UINT64_MAX;
    for (uint32_t streamed = 0; streamed <= 1; streamed++) {
        for (uint32_t i = 0; i < b->nsec; i++) {
            struct fmt_section *s = &b->sec[i];
            if ((s->flags & FMT_SEC_STREAMED) != streamed)
                continue;
            uint64_t off = align_up(pos, streamed ? s->reserved[0] : FMT_ALIGN);
            if (off == 0 || s->size > UINT64_MAX - off)
                return -1;
            if (streamed && *prefix == UINT64_MAX)
                *prefix = off;
            s->offset = off;
            pos = off + s->size;
        }
    }
    *end = pos;
    if (*prefix == UINT64_MAX)
        *prefix = pos;
    return 0;
}

enum fmt_status fmt_builder_finish(struct fmt_builder *b, uint32_t magic, uint32_t version,
                                   uint8_t **out, size_t *out_len, uint64_t *file_size)
{
    uint64_t end = 0, prefix = 0;
    *out = NULL;
    *out_len = 0;
    *file_size = 0;
    if (b->failed)
        return b->failed == FMT_BUILD_NOMEM ? FMT_ERR_NOMEM : FMT_ERR_INVALID;
    if (builder_layout(b, &end, &prefix) || prefix > SIZE_MAX)
        return FMT_ERR_INVALID;
    uint8_t *buf = calloc(prefix ? (size_t)prefix : 1, 1);
    if (!buf)
        return FMT_ERR_NOMEM;
    struct fmt_section table[FMT_MAX_SECTIONS];
    for (uint32_t i = 0; i < b->nsec; i++) {
        struct fmt_section *s = &b->sec[i];
        if (!(s->flags & FMT_SEC_STREAMED)) {
            if (s->size)
                memcpy(buf + s->offset, b->data[i], (size_t)s->size);
            s->crc = crc32c(0, b->data[i], (size_t)s->size);
        }
        table[i] = *s;
        memset(table[i].reserved, 0, sizeof table[i].reserved);
    }
    memcpy(buf + FMT_HEADER_SIZE, table, (size_t)b->nsec * FMT_SECTION_SIZE);
    struct fmt_header h = {
        .magic = magic,
        .version = version,
        .header_size = FMT_HEADER_SIZE,
        .section_count = b->nsec,
        .file_size = end,
        .table_offset = FMT_HEADER_SIZE,
        .table_crc = crc32c(0, table, (size_t)b->nsec * FMT_SECTION_SIZE),
    };
    h.header_crc = crc32c(0, &h, offsetof(struct fmt_header, header_crc));
    memcpy(buf, &h, sizeof h);
    *out = buf;
    *out_len = (size_t)prefix;
    *file_size = end;
    return FMT_OK;
}
