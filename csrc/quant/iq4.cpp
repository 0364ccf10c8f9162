// Non-linear 4-bit formats: IQ4_NL (32 elements) and IQ4_XS (256 elements).
#include "quant/blocks.h"
#include "quant/formats.h"

namespace phi::quant {
void register_iq4_formats(FormatOps* table) {}
} // namespace phi::quant
