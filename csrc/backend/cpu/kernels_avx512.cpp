// The x86 kernels compiled for AVX-512 F/BW/VL/DQ/VNNI/BF16 (see kernels_x86_impl.h).
#include "backend/cpu/kernels.h"

#if defined(PHICPP_X86)
#include "backend/cpu/kernels_x86_impl.h"
#endif

namespace phi::cpu {
PHI_ISA_KERNEL_TABLE(kernels_avx512, fill_x86_table)
} // namespace phi::cpu
