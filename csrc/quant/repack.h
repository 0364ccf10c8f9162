// Interleaved ("repacked") weight layouts: the same blocks as a GGUF tensor,
// reordered at load so that a decode kernel reads several rows with one
// vector load. Nothing here is written to files; llama.cpp's CPU backend does
// the same at load (its "CPU_REPACK" buffers), with its own layouts.
//
// Q4_0 x8: rows in groups of 8. A group keeps the bytes its 8 rows had in the
// file (8 x K/32 blocks of 18 bytes), reordered block-major into records of
// 144 bytes, one per block index ib:
//   d[8]           the fp16 scales of block ib of rows 0..7 of the group
//   qs[4][8][4]    for quad j = 0..3 and row r: bytes 4j..4j+3 of that block's
//                  qs (low nibbles: elements 4j..4j+3, high: 16+4j..16+4j+3)
// so one 32-byte load at qs[j] holds quad j of all 8 rows, and the integer
// sums of a block land one row per 32-bit lane with no horizontal folds.
#pragma once
#include <cstdint>

#include "quant/blocks.h"

namespace phi::quant {

constexpr int kQ4_0x8Rows = 8;

struct BlockQ4_0x8 {
    uint16_t d[kQ4_0x8Rows];
    uint8_t qs[4][kQ4_0x8Rows][4];
};
static_assert(sizeof(BlockQ4_0x8) == kQ4_0x8Rows * sizeof(BlockQ4_0), "same bytes as 8 blocks");

// Rows [g0, g1) x 8 of a Q4_0 tensor of K columns (K % 32 == 0) from the GGUF
// layout `src` into the x8 layout `dst` (same size; groups are independent,
// so callers may split the work by group).
void repack_q4_0_x8(const void* src, void* dst, int64_t K, int64_t g0, int64_t g1);

// Blocks [ib0, ib0 + nb) of row `row` of an x8-packed tensor of K columns,
// back as GGUF blocks.
void unpack_row_q4_0_x8(const void* packed, int64_t K, int64_t row, int64_t ib0, int64_t nb, BlockQ4_0* out);

} // namespace phi::quant
