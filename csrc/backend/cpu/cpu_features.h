// Which x86 instruction set the CPU kernels use. Chosen once at start-up from
// cpuid (plus the PHICPP_ISA environment variable), and changeable at run
// time so tests can force every path. The package is built for baseline
// x86-64; only *_avx2.cpp / *_avx512.cpp contain wider instructions, and they
// run only when the selected ISA says so.
#pragma once
#include <string>
#include <vector>

namespace phi::cpu {

enum class Isa { scalar = 0, avx2 = 1, avx512 = 2 };

const char* isa_name(Isa isa);

// Best ISA this CPU (and OS: XCR0 state) supports.
Isa best_isa();
// ISAs this machine can run, weakest first ("scalar", "avx2", ...).
std::vector<std::string> available_isas();
// ISA the kernels use now: PHICPP_ISA if set at start-up, else best_isa().
Isa current_isa();
// Force an ISA ("scalar" | "avx2" | "avx512" | "auto"). Throws
// phi::Error(invalid_arg) for an unknown name and (unsupported) for an ISA
// this CPU lacks, instead of crashing later on an illegal instruction.
void set_isa(const std::string& name);

} // namespace phi::cpu
