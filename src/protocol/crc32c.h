/*
 * crc32c.h - CRC32C (Castagnoli), the checksum of feature CRC.
 */
#ifndef MFD_PROTOCOL_CRC32C_H
#define MFD_PROTOCOL_CRC32C_H

#include <stddef.h>
#include <stdint.h>

/*
 * Extends `crc` over `len` bytes. Start with crc = 0; the result of one call
 * can be passed to the next to checksum discontiguous pieces:
 * mfd__crc32c(mfd__crc32c(0, a, n), b, m) == crc of a||b. Standard CRC32C
 * (reflected, initial and final XOR 0xffffffff are applied inside), so
 * mfd__crc32c(0, "123456789", 9) == 0xe3069283. Uses the SSE4.2 crc32
 * instruction when the CPU has it, else a slice-by-8 table.
 */
uint32_t mfd__crc32c(uint32_t crc, const void *buf, size_t len);

/* The portable implementation, exposed so tests compare both. */
uint32_t mfd__crc32c_sw(uint32_t crc, const void *buf, size_t len);

/* "sse4.2" or "slice-by-8". */
const char *mfd__crc32c_impl(void);

#endif
