/* recrc.h — recompute every CRC of an fmt.h container in place.
 *
 * Shared by the format tests and the fuzz targets. A test that corrupts one field of a
 * valid file calls recrc() afterwards, so that the CRCs agree with the damaged bytes and
 * it is the semantic check, not a CRC, that must catch the damage; a fuzz target does the
 * same so that mutated inputs get past the CRCs into the record checks.
 *
 * It works on any bytes: whatever part of the header, table or a section lies outside the
 * buffer is left alone, and section CRCs are recomputed for non-streamed sections that lie
 * wholly inside it. Order matters: section CRCs live in the table, the table CRC in the
 * header, and the header CRC covers the table CRC. */
#ifndef RECRC_H
#define RECRC_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "plan/crc.h"
#include "plan/fmt.h"

/* Recompute the CRC of every non-streamed section that lies inside buf[0..len). */
static inline void recrc_sections(uint8_t *buf, size_t len, uint32_t count)
{
    for (uint32_t i = 0; i < count; i++) {
        size_t at = FMT_HEADER_SIZE + (size_t)i * FMT_SECTION_SIZE;
        struct fmt_section s;
        if (at + FMT_SECTION_SIZE > len)
            return;
        memcpy(&s, buf + at, sizeof s);
        if ((s.flags & FMT_SEC_STREAMED) || s.offset > len || s.size > len - s.offset)
            continue;
        s.crc = crc32c(0, buf + s.offset, (size_t)s.size);
        memcpy(buf + at + offsetof(struct fmt_section, crc), &s.crc, sizeof s.crc);
    }
}

/* Recompute section CRCs, then the table CRC, then the header CRC. */
static inline void recrc(uint8_t *buf, size_t len)
{
    struct fmt_header h;
    if (len < FMT_HEADER_SIZE)
        return;
    memcpy(&h, buf, sizeof h);
    uint32_t count = h.section_count <= FMT_MAX_SECTIONS ? h.section_count : 0;
    recrc_sections(buf, len, count);
    size_t table = (size_t)count * FMT_SECTION_SIZE;
    if (FMT_HEADER_SIZE + table <= len) {
        h.table_crc = crc32c(0, buf + FMT_HEADER_SIZE, table);
        memcpy(buf + offsetof(struct fmt_header, table_crc), &h.table_crc, sizeof h.table_crc);
    }
    h.header_crc = crc32c(0, buf, offsetof(struct fmt_header, header_crc));
    memcpy(buf + offsetof(struct fmt_header, header_crc), &h.header_crc, sizeof h.header_crc);
}

#endif
