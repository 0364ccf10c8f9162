#include "backend/cpu/cpu_features.h"

#include <cstdlib>
#if defined(PHICPP_X86)
#include <cpuid.h>
#endif
#if defined(PHICPP_X86) && defined(__linux__)
#include <sys/syscall.h>
#include <unistd.h>
#endif

#include "core/error.h"

namespace phi::cpu {

namespace {

#if defined(PHICPP_X86)
// F16C from cpuid itself (leaf 1, ecx): clang before 16 has no "f16c" for
// __builtin_cpu_supports, and the fuzz targets build with clang
bool cpu_has_f16c() {
    unsigned eax, ebx, ecx, edx;
    return __get_cpuid(1, &eax, &ebx, &ecx, &edx) && (ecx & bit_F16C);
}
#endif

bool cpu_has_avx2() {
#if defined(PHICPP_X86)
    __builtin_cpu_init();
    // __builtin_cpu_supports checks cpuid and that the OS saves YMM state.
    return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") && cpu_has_f16c();
#else
    return false;
#endif
}

// cpuid leaf 7, subleaf 1, EAX bit 4 (GCC 12's __builtin_cpu_supports("avxvnni")
// answered 0 on a Zen 5 that has it)
bool cpu_has_avxvnni() {
#if defined(PHICPP_X86)
    if (!cpu_has_avx2()) return false;
    unsigned eax, ebx, ecx, edx;
    return __get_cpuid_count(7, 1, &eax, &ebx, &ecx, &edx) && ((eax >> 4) & 1);
#else
    return false;
#endif
}

bool cpu_has_avx512() {
#if defined(PHICPP_X86)
    __builtin_cpu_init();
    return cpu_has_avx2() && __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
           __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512dq") &&
           __builtin_cpu_supports("avx512vnni") && __builtin_cpu_supports("avx512bf16");
#else
    return false;
#endif
}

// AMX-TILE, AMX-INT8 and AMX-BF16 in cpuid (every AMX CPU so far has all
// three), the tile state enabled in XCR0 (bits 17 and 18: the OS saves it),
// and the tile data granted to this process: Linux
// (5.16+) makes a process ask once (arch_prctl ARCH_REQ_XCOMP_PERM); until it
// has, the first tile instruction raises SIGILL (as llama.cpp's AMX path does
// on hosts where it skips the request or the request fails). The request is
// the OS's per-process state, idempotent; any refusal means no AMX.
bool cpu_has_amx() {
#if defined(PHICPP_AMX_EMULATE)
    return cpu_has_avx512();  // test builds only: the tile instructions are emulated (kernels_amx.cpp)
#elif defined(PHICPP_X86) && defined(__linux__)
    if (!cpu_has_avx512()) return false;
    unsigned eax, ebx, ecx, edx;
    if (!__get_cpuid_count(7, 0, &eax, &ebx, &ecx, &edx)) return false;
    constexpr unsigned kAmxBf16 = 1u << 22, kAmxTile = 1u << 24, kAmxInt8 = 1u << 25;
    if ((edx & (kAmxBf16 | kAmxTile | kAmxInt8)) != (kAmxBf16 | kAmxTile | kAmxInt8)) return false;
    unsigned lo, hi;
    __asm__ volatile("xgetbv" : "=a"(lo), "=d"(hi) : "c"(0));  // OSXSAVE: implied by the AVX-512 check
    constexpr unsigned kXTileCfg = 1u << 17, kXTileData = 1u << 18;
    if ((lo & (kXTileCfg | kXTileData)) != (kXTileCfg | kXTileData)) return false;
    constexpr long kArchGetXcompPerm = 0x1022, kArchReqXcompPerm = 0x1023, kXFeatureTileData = 18;
    if (syscall(SYS_arch_prctl, kArchReqXcompPerm, kXFeatureTileData) != 0) return false;
    unsigned long granted = 0;
    if (syscall(SYS_arch_prctl, kArchGetXcompPerm, &granted) != 0) return false;
    return (granted >> kXFeatureTileData) & 1;
#else
    return false;
#endif
}

bool supported(Isa isa) {
    switch (isa) {
        case Isa::scalar: return true;
        case Isa::avx2: return cpu_has_avx2();
        case Isa::avxvnni: return cpu_has_avxvnni();
        case Isa::avx512: return cpu_has_avx512();
        case Isa::amx: return cpu_has_amx();
    }
    return false;
}

Isa parse_isa(const std::string& name) {
    if (name == "scalar") return Isa::scalar;
    if (name == "avx2") return Isa::avx2;
    if (name == "avxvnni") return Isa::avxvnni;
    if (name == "avx512") return Isa::avx512;
    if (name == "amx") return Isa::amx;
    fail(ErrorKind::invalid_arg, "unknown ISA '", name, "' (expected scalar, avx2, avxvnni, avx512, amx or auto)");
}

Isa checked(Isa isa) {
    if (!supported(isa)) fail(ErrorKind::unsupported, "this CPU does not support the ", isa_name(isa), " kernels");
    return isa;
}

// PHICPP_ISA, when it names an ISA this CPU runs; a bad value must not stop a
// model from loading, so it falls back to the best ISA.
Isa env_or_best_isa() {
    const char* env = std::getenv("PHICPP_ISA");
    if (!env || !*env) return best_isa();
    try {
        return checked(parse_isa(env));
    } catch (const Error&) {
        return best_isa();
    }
}

} // namespace

const char* isa_name(Isa isa) {
    switch (isa) {
        case Isa::scalar: return "scalar";
        case Isa::avx2: return "avx2";
        case Isa::avxvnni: return "avxvnni";
        case Isa::avx512: return "avx512";
        case Isa::amx: return "amx";
    }
    return "unknown";
}

Isa best_isa() {
    static const Isa best = cpu_has_amx()      ? Isa::amx
                            : cpu_has_avx512() ? Isa::avx512
                            : cpu_has_avxvnni() ? Isa::avxvnni
                            : cpu_has_avx2()   ? Isa::avx2
                                               : Isa::scalar;
    return best;
}

std::vector<std::string> available_isas() {
    std::vector<std::string> out;
    for (Isa isa : {Isa::scalar, Isa::avx2, Isa::avxvnni, Isa::avx512, Isa::amx})
        if (supported(isa)) out.emplace_back(isa_name(isa));
    return out;
}

Isa choose_isa(const std::string& name) {
    if (name == "auto" || name.empty()) return env_or_best_isa();
    return checked(parse_isa(name));
}

namespace {
// AMD family 19h (Zen 3 and Zen 4) with AVX-512, which Zen 3 lacks.
bool cpu_is_zen4() {
#if defined(PHICPP_X86)
    unsigned eax, ebx, ecx, edx;
    if (!__get_cpuid(0, &eax, &ebx, &ecx, &edx)) return false;
    const bool amd = ebx == 0x68747541u && edx == 0x69746e65u && ecx == 0x444d4163u;  // "AuthenticAMD"
    if (!amd || !__get_cpuid(1, &eax, &ebx, &ecx, &edx)) return false;
    const unsigned family = ((eax >> 8) & 0xF) + ((eax >> 20) & 0xFF);
    return family == 0x19 && cpu_has_avx512();
#else
    return false;
#endif
}
} // namespace

size_t q4_0_x8_prefetch_bytes() {
    if (const char* env = std::getenv("PHICPP_Q4X8_PREFETCH"); env && *env) {
        const long v = std::strtol(env, nullptr, 10);
        return v > 0 ? static_cast<size_t>(v) : 0;
    }
    return cpu_is_zen4() ? 0 : kQ4x8PrefetchAhead;
}

DecodeWalk decode_walk() {
    DecodeWalk w;
    w.one_stream = cpu_is_zen4();
    if (const char* env = std::getenv("PHICPP_DECODE_STREAMS"); env && *env) w.one_stream = std::atoi(env) == 1;
    w.q4x8_prefetch = q4_0_x8_prefetch_bytes();
    return w;
}

} // namespace phi::cpu
