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
//
// Planar: for any block format, a tensor of M rows x nb blocks becomes two
// planes. The first holds each block's quant bits (a run of 16-byte multiples,
// so a GPU thread reads them with aligned vector loads), block after block:
// bits(r, b) at (r * nb + b) * bits_bytes. The second holds the rest of each
// block (scales, mins, high bits) in the block's own byte order, at
// M * nb * bits_bytes + (r * nb + b) * (type_size - bits_bytes).
#pragma once
#include <cstddef>
#include <cstdint>

#include "core/dtype.h"
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

// Where a block's quant bits sit: bytes [bits_offset, bits_offset + bits_bytes)
// of the block. bits_bytes == 0: the type has no planar layout.
struct PlanarSplit {
    int bits_offset = 0;
    int bits_bytes = 0;
};
PlanarSplit planar_split(DType t);
inline bool planar_fits(DType t) { return planar_split(t).bits_bytes > 0; }

// Rows [0, n_rows) of a tensor of K columns starting at `src` (file layout)
// into their parts of the two planes: bits at `bits_dst`, the rest at
// `rest_dst` (each the start of these rows' run in its plane).
void repack_planar_rows(const void* src, void* bits_dst, void* rest_dst, DType t, int64_t n_rows, int64_t K);
// A whole tensor of M rows into the planar layout at dst (same size).
void repack_planar(const void* src, void* dst, DType t, int64_t M, int64_t K);

} // namespace phi::quant
