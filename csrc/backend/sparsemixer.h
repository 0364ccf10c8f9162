// SparseMixer's inference routing (transformers' `sparsemixer` for Phi-3.5-MoE,
// not its training form) for one row of router scores, as host and device
// code: the best expert, weighed by the softmax over the experts whose score
// is within 2 * jitter (relative) of it; then the best of the rest, weighed
// the same way among the rest. Plain softmax top-2 (llama.cpp) differs
// whenever an expert falls outside those windows.
#pragma once
#include <math.h>

#include "backend/backend.h"

#ifdef __CUDACC__
#define PHI_HOST_DEVICE __host__ __device__
#else
#define PHI_HOST_DEVICE
#endif

namespace phi {

// out[0], out[1]: the two picks, the lower expert index first (transformers
// sums the experts' outputs in expert order). n >= 2.
PHI_HOST_DEVICE inline void sparsemixer_top2(const float* s, int n, float jitter, ExpertPick* out) {
    int first = -1;
    for (int k = 0; k < 2; ++k) {
        int best = -1;
        float m = -INFINITY;
        for (int j = 0; j < n; ++j)
            if (j != first && (best < 0 || s[j] > m)) {
                best = j;
                m = s[j];
            }
        // softmax at `best` over the unmasked: 1 / sum of exp(s_j - m)
        float sum = 0.0f;
        for (int j = 0; j < n; ++j) {
            if (j == first) continue;
            const float factor = fmaxf(fabsf(s[j]), m);
            const bool masked = (m - s[j]) / factor > 2.0f * jitter;  // (NaN for 0/0: not masked, as torch)
            if (!masked) sum += expf(s[j] - m);
        }
        out[k].expert = best;
        out[k].weight = 1.0f / sum;
        first = best;
    }
    if (out[1].expert < out[0].expert) {
        const ExpertPick t = out[0];
        out[0] = out[1];
        out[1] = t;
    }
}

} // namespace phi
