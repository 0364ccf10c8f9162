// The x86 kernels compiled for AVX2 + FMA + F16C + AVX-VNNI (see kernels_x86_impl.h): the
// AVX2 kernels with 256-bit vpdpbusd for their 8-bit dot products.
#include "backend/cpu/kernels.h"

#if defined(PHICPP_X86)
#include "backend/cpu/kernels_x86_impl.h"

namespace phi::cpu {
const KernelTable& kernels_avxvnni() {
    static KernelTable table;  // zero-initialized storage
    static const bool filled = (fill_x86_table(&table), true);
    (void)filled;
    return table;
}
} // namespace phi::cpu
#else
namespace phi::cpu {
const KernelTable& kernels_avxvnni() {
    static KernelTable empty;
    return empty;
}
} // namespace phi::cpu
#endif
