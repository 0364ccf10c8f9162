// Which x86 instruction set the CPU kernels use. Each CPU backend instance
// chooses one when it is made (its own choice, never a process-wide one), from
// cpuid, the PHICPP_ISA environment variable or its caller. The package is
// built for baseline x86-64; only *_avx2.cpp / *_avxvnni.cpp / *_avx512.cpp / *_amx.cpp contain wider
// instructions, and they run only when the chosen ISA says so.
#pragma once
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

} // namespace phi::cpu
