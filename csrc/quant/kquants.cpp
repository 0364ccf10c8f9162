// K-quants: 256-element super-blocks Q2_K..Q6_K (+ Q8_K for activations).
#include "quant/blocks.h"
#include "quant/formats.h"

namespace phi::quant {
void register_kquant_formats(FormatOps* table) {}
} // namespace phi::quant
