// The x86 kernels compiled for AVX2 + FMA + F16C + AVX-VNNI (see kernels_x86_impl.h): the
// AVX2 kernels with 256-bit vpdpbusd for their 8-bit dot products.
#include "backend/cpu/kernels.h"

#if defined(PHICPP_X86)
#include "backend/cpu/kernels_x86_impl.h"
#endif

namespace phi::cpu {
PHI_ISA_KERNEL_TABLE(kernels_avxvnni, fill_x86_table)
} // namespace phi::cpu
