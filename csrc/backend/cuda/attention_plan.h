// How the one-token (tile) attention spreads a step's keys over the GPU: the
// plan the backend makes before each attention launch (attention.cu). Plain
// C++, no CUDA headers, so the plan can be tested on a machine without a GPU
// (bindings.cpp's cuda_attention_plan hook).
#pragma once
#include <cstddef>

#include "backend/backend.h"

namespace phi::cuda {

// Tiles (of query rows), CTAs per tile (splits of the keys), warps per CTA
// (splits of a CTA's keys, combined in shared memory), the key chunks a warp
// holds in shared memory (2: the next chunk's rows in flight while the
// current one is used) and the query rows of a tile. decode: the one-row
// kernel (attention_decode.cuh: one token's queries, an f16 cache) with a
// tile per query head and row, 8 warps of 8 keys at once and `splits` CTAs
// (key blocks) a tile.
struct AttentionPlan {
    int tiles = 0, splits = 1, warps = 1, rows_per_tile = 0, stages = 1, q_rows = 1;
    bool decode = false;
    int block_keys = 0;  // decode: a CTA's keys (splits: blocks of them, a power of two)
    size_t partial_floats() const;
};
// What the plan needs of the device.
struct AttentionDevice {
    int sm_count = 1;
    size_t smem_per_cta = 48 * 1024;  // the opt-in maximum
    size_t smem_per_sm = 48 * 1024;
};
constexpr size_t kCtaSmemReserve = 1024;  // shared memory the GPU keeps per CTA (sm_80 and later)
// How the plan spreads the keys: warps_per_sm, the most warps per SM it aims
// at (fewer where shared memory holds fewer); cta_warps, the most warps of a
// tile in one CTA, whose shared memory cta_smem_kb caps (0: the device's
// maximum); stages 1 or 2, or 0: 2 where it costs no warps per SM. decode:
// whether one-row steps take the decode kernel, whose CTAs take blocks of
// decode_keys keys (at 256: four rounds of 8 warps of 8 keys; measured on an
// H100 against 128, 512 and 1024, docs/CUDA.md).
struct AttentionTuning {
    int warps_per_sm = 8, cta_warps = 8, stages = 0, cta_smem_kb = 0;
    bool decode = true;
    int decode_keys = 256;
};
// rows_alone: each of n_q > 1 rows must give the bits of its own one-row step
// (row-invariant batches), so rows over an f16 cache take the decode kernel
// too, all of them with the block size of the last (kv_len's) row.
AttentionPlan attention_plan(int n_q, const AttentionParams& p, int kv_len, DType cache_type, const AttentionDevice& dev,
                             const AttentionTuning& tuning = {}, bool rows_alone = false);
// The keys a decode row reads: the row's kv_len, bounded by a sliding window.
int decode_row_keys(int kv_len, int window);
// The decode kernel's keys a block for a row of `keys` keys (decode_row_keys):
// decode_keys, doubled while the row's blocks (of every query head) would
// exceed four a SM.
int decode_block_keys(int keys, int n_head, int sm_count, int decode_keys);
// The dynamic shared memory of one CTA of the plan (what its launch asks for).
size_t attention_cta_smem(const AttentionPlan& plan, int head_dim, DType cache_type);

} // namespace phi::cuda
