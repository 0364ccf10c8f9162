// The x86 kernels compiled for AVX-512 F/BW/VL/DQ/VNNI/BF16 (see kernels_x86_impl.h).
#include "backend/cpu/kernels.h"

#if defined(PHICPP_X86)
#include "backend/cpu/kernels_x86_impl.h"

namespace phi::cpu {
const KernelTable& kernels_avx512() {
    static KernelTable table;  // zero-initialized storage
    static const bool filled = (fill_x86_table(&table), true);
    (void)filled;
    return table;
}
} // namespace phi::cpu
#else
namespace phi::cpu {
const KernelTable& kernels_avx512() {
    static KernelTable empty;
    return empty;
}
} // namespace phi::cpu
#endif
