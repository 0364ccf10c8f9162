// Legacy 32-element formats: Q4_0, Q4_1, Q5_0, Q5_1, Q8_0 (+ Q8_1 for activations).
#include "quant/blocks.h"
#include "quant/formats.h"

namespace phi::quant {
void register_legacy_formats(FormatOps* table) {}
} // namespace phi::quant
