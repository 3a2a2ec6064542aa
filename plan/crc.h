/* crc.h — CRC32C (Castagnoli) for file integrity and FNV-1a for identity hashes.
 *
 * CRC32C rather than zlib's CRC32: x86 (SSE4.2) and ARMv8 both have an instruction for it,
 * which matters when rt checks an 18 GB weights image while streaming it from disk. This
 * file is the portable slicing-by-8 version (a few GB/s), the same function everywhere. */
#ifndef CRC_H
#define CRC_H

#include <stddef.h>
#include <stdint.h>

/* CRC32C of data[0..n), continuing from crc (start with 0). crc32c(0, "123456789", 9) is
 * 0xE3069283, the standard check value. */
uint32_t crc32c(uint32_t crc, const void *data, size_t n);

#define FNV64_INIT 0xcbf29ce484222325ull

/* 64-bit FNV-1a of data[0..n), continuing from h (start with FNV64_INIT). Used for the
 * identity hashes that tie a plan to its weights manifest and kernel images. */
uint64_t fnv64(uint64_t h, const void *data, size_t n);

#endif
