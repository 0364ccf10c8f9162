// The mixture-of-experts ops (Backend::route_top2, experts_swiglu,
// experts_down_add) as host code over a backend's own matmul: the CPU's
// implementation, and a device backend's for batches its kernels do not take
// (it then copies through the host).
#pragma once
#include "backend/backend.h"
#include "backend/sparsemixer.h"

namespace phi {

// The ops for n rows, a matmul per expert over the rows that picked it; the
// pointers are in be's memory.
void experts_swiglu_grouped(Backend& be, const Experts& gate, const Experts& up, const float* x, int n,
                            const ExpertPick* picks, const RowNorm& norm, float* h);
void experts_down_add_grouped(Backend& be, const Experts& down, const float* h, int n, const ExpertPick* picks,
                              float* x);

} // namespace phi
