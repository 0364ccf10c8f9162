// Which x86 instruction set the CPU kernels use. Each CPU backend instance
// chooses one when it is made (its own choice, never a process-wide one), from
// cpuid, the PHICPP_ISA environment variable or its caller. The package is
// built for baseline x86-64; only *_avx2.cpp / *_avxvnni.cpp / *_avx512.cpp / *_amx.cpp contain wider
// instructions, and they run only when the chosen ISA says so.
#pragma once
#include <cstddef>
#include <string>
#include <vector>

namespace phi::cpu {

// avxvnni: the AVX2 kernels with AVX-VNNI's 256-bit vpdpbusd in place of
// maddubs + madd (Intel client CPUs since Alder Lake and the E-core Xeons,
// which have no AVX-512). amx: the AVX-512 kernels with AMX-INT8 tiles for
// quantized prefill.
enum class Isa { scalar = 0, avx2 = 1, avxvnni = 2, avx512 = 3, amx = 4 };

const char* isa_name(Isa isa);

// Best ISA this CPU (and OS: XCR0 state; for AMX also the process's
// permission to use the tile data, requested here) supports.
Isa best_isa();
// ISAs this machine can run, weakest first ("scalar", "avx2", ...).
std::vector<std::string> available_isas();
// The ISA named ("scalar" | "avx2" | "avxvnni" | "avx512" | "amx"; "auto": PHICPP_ISA if it names
// one this CPU runs, else best_isa()). Throws phi::Error(invalid_arg) for an
// unknown name and (unsupported) for an ISA this CPU lacks, instead of
// crashing later on an illegal instruction.
Isa choose_isa(const std::string& name);

// How far ahead (bytes) the interleaved Q4_0 decode kernel prefetches each of
// its row streams on this CPU, 0: not at all. The hardware prefetchers differ:
// a 2-vCPU Xeon (AVX-512, AMX) decoded Phi-3-mini Q4_0 at 12.1-12.3 t/s with
// 2 KiB against 9.4 at 4 KiB and 10.8 at 576 bytes; a 2-vCPU Zen 4 at
// 16.8-17.3 without against 14.8-15.1 with 2 KiB (alternated rounds,
// docs/BENCHMARKS.md). So 0 on Zen 4 (AMD family 19h with AVX-512), 2 KiB
// elsewhere (a Zen 3 measured 2-32 KiB within noise). PHICPP_Q4X8_PREFETCH
// (bytes) overrides it for a backend made after it is set, for measurements.
size_t q4_0_x8_prefetch_bytes();
// The 2 KiB: also what the kernels' few-token tiles always prefetch, and the
// distance of a matmul whose caller names none.
constexpr size_t kQ4x8PrefetchAhead = 2048;

// How decode walks a thread's share of a weight's rows on this CPU.
// one_stream: one row (interleaved Q4_0: one group of 8) after another, a
// single sequential stream the hardware prefetchers follow; else four rows
// (four groups) side by side, the float and legacy rows prefetched a group
// ahead. Every row gets the same arithmetic either way. A 2-vCPU Zen 4
// decoded Phi-3-mini (2 threads, tg32) with one stream at F16 5.1-5.9 t/s
// against 4.0-4.5, Q8_0 12.4-12.6 against 7.2-8.1, Q4_0 22.4-23.0 against
// 17.2-17.8; a 2-vCPU Xeon with AMX decoded Q4_0 with four groups at
// 13.9-14.5 against 12.1-12.3 with one, and the 16-core Xeon of the GPU host
// (16 threads) Q4_0 47.8-52.1 against 42.4-48.1, Q8_0 28.1-29.4 against
// 18.7-19.1, F16 15.7-16.8 against 11.4-11.8 (Q5_K_M the other way: 23.2-23.6
// against 26.4-26.8; docs/BENCHMARKS.md). So one stream on Zen 4, four
// elsewhere; PHICPP_DECODE_STREAMS=1|4 overrides it for a backend made after
// it is set, for measurements.
struct DecodeWalk {
    bool one_stream = false;
    size_t q4x8_prefetch = kQ4x8PrefetchAhead;  // q4_0_x8_prefetch_bytes()
};
DecodeWalk decode_walk();

} // namespace phi::cpu
