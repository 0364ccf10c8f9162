#!/usr/bin/env bash
# One device call for the persistent-decode experiments (docs/CUDA.md, "A
# persistent model with a weight ring"): tools/ring_chain_bench.cu in every
# mode that says what a part of the work costs, then the shipped kernels'
# chain (tools/matvec_bench.cu) in the same call, as the figure to beat.
#
# Here (dev machine):
#   nvcc -std=c++17 -O2 -arch=sm_90a -Icsrc tools/ring_chain_bench.cu -o .bench/ring_chain_bench
#   tools/device_build.sh ...; nvcc -std=c++17 -O2 -arch=sm_90a -Icsrc tools/matvec_bench.cu \
#     build/device/libphicore.a -o .bench/matvec_bench -lpthread      (optional)
# then on the device (carry .bench):  bash tools/ring_bench.sh [quick]
#
# Mode bits (RING_MODES): 1 grid-wide wait, 2 stage, 4 rows, 8 nothing
# streamed, 16 a chunk's rows on one warp, 32 batched (a thread per unit, four
# rows a warp at once), 64 flag words instead of the grid-wide counter (with
# 32), 128 a stand-in attention between qkv and wo (with 64), 256 a chunk's rows
# four at a time over all warps (with 32). RING_SLOT_DIV=2
# halves the slots (a shorter last chunk), so the same ring takes twice the slots.
# RING_FORMAT=q8_0: Q8_0 weights (flag-word modes only).
set -u
cd "$(dirname "$0")/.."
B=.bench
chmod +x $B/*_bench 2>/dev/null
T0=$(date +%s)
log() { echo "[$(( $(date +%s) - T0 ))s] $*"; }
nvidia-smi --query-gpu=name,driver_version,clocks.max.sm --format=csv,noheader 2>/dev/null
git log --oneline -1 2>/dev/null

# The batched and flag-word consumers are checked against the host reference
# in their first run (a "max error" column; WRONG if it is not small). Each
# run is line-buffered and has its own short timeout; a wait that gives up
# prints STUCK. Slots: 15 (one a computing warp) or 30 at half size.
R="timeout 45 $B/ring_chain_bench"
log "correctness and the full runs"
RING_PRODUCERS=b RING_MODES=7,39,295,102,358,230 $R 15
RING_PRODUCERS=b RING_SLOT_DIV=2 RING_MODES=39,102,230 $R 30
[ "${1:-}" = quick ] && exit 0

log "the parts, 15 slots: stream alone, rows alone (nothing streamed), staging alone, wait alone"
RING_PRODUCERS=b RING_MODES=0,44,42,41,98,106,108,36,38,37 $R 15
log "the parts, half slots"
RING_PRODUCERS=b RING_SLOT_DIV=2 RING_MODES=0,44,36,98,108 $R 30
log "Q8_0 (3.85 GB): stream alone, rows alone, everything, with the attention hop"
RING_FORMAT=q8_0 RING_PRODUCERS=b RING_MODES=96,108,102,230 $R 15

log "the earlier consumer, for the record in this call"
RING_PRODUCERS=b RING_MODES=23 $R 15
if [ -x $B/matvec_bench ]; then
  log "the shipped kernels' chain"
  timeout 60 $B/matvec_bench q4_0 16:1 16:1
  timeout 60 $B/matvec_bench q8_0 16:1 16:1
fi
log end
