#include "backend/experts_host.h"

#include <algorithm>
#include <cmath>
#include <vector>

#include "core/error.h"

namespace phi {

namespace {

// Buffers in a backend's memory for one call, freed when it ends.
class Scratch {
public:
    explicit Scratch(Backend& be) : be_(be) {}
    ~Scratch() {
        for (void* p : owned_) be_.dealloc(p);
    }
    float* floats(size_t n) {
        owned_.push_back(be_.alloc(std::max<size_t>(n, 1) * sizeof(float)));
        return static_cast<float*>(owned_.back());
    }

private:
    Backend& be_;
    std::vector<void*> owned_;
};

struct Groups {
    std::vector<ExpertPick> picks;          // [2n], on the host
    std::vector<std::vector<int>> by_expert;  // the picks (2t + j) of each expert
    int largest = 0;
};

Groups group_picks(Backend& be, const ExpertPick* picks, int n, int n_expert) {
    Groups g;
    g.picks.resize(2 * static_cast<size_t>(n));
    be.copy_to_host(g.picks.data(), picks, sizeof(ExpertPick) * g.picks.size());
    g.by_expert.resize(n_expert);
    for (int i = 0; i < 2 * n; ++i) {
        const int e = g.picks[i].expert;
        if (e < 0 || e >= n_expert) fail(ErrorKind::generic, "expert ", e, " picked of ", n_expert);
        g.by_expert[e].push_back(i);
    }
    for (const auto& v : g.by_expert) g.largest = std::max(g.largest, static_cast<int>(v.size()));
    return g;
}

} // namespace

void experts_swiglu_grouped(Backend& be, const Experts& gate, const Experts& up, const float* x, int n,
                            const ExpertPick* picks, const RowNorm& norm, float* h) {
    if (n <= 0) return;
    const int64_t K = gate.w[0].ne0, F = gate.w[0].ne1;
    const Groups g = group_picks(be, picks, n, gate.n);
    std::vector<float> xh(static_cast<size_t>(n) * K), hh(2 * static_cast<size_t>(n) * F), in, gv, uv;
    be.copy_to_host(xh.data(), x, sizeof(float) * xh.size());
    Scratch s(be);
    float* din = s.floats(static_cast<size_t>(g.largest) * K);
    float* dg = s.floats(static_cast<size_t>(g.largest) * F);
    float* du = s.floats(static_cast<size_t>(g.largest) * F);
    for (int e = 0; e < gate.n; ++e) {
        const std::vector<int>& rows = g.by_expert[e];
        const int k = static_cast<int>(rows.size());
        if (k == 0) continue;  // (an expert no row picked is never read)
        in.resize(static_cast<size_t>(k) * K);
        for (int i = 0; i < k; ++i) std::copy_n(&xh[static_cast<size_t>(rows[i] / 2) * K], K, &in[i * K]);
        be.copy_to_device(din, in.data(), sizeof(float) * in.size());
        be.matmul(gate.w[e], din, k, dg, nullptr, norm, Epilogue::store);
        be.matmul(up.w[e], din, k, du, nullptr, norm, Epilogue::store);
        gv.resize(static_cast<size_t>(k) * F);
        uv.resize(gv.size());
        be.copy_to_host(gv.data(), dg, sizeof(float) * gv.size());
        be.copy_to_host(uv.data(), du, sizeof(float) * uv.size());
        for (int i = 0; i < k; ++i) {
            float* dst = &hh[static_cast<size_t>(rows[i]) * F];
            for (int64_t c = 0; c < F; ++c) {
                const float a = gv[i * F + c];
                dst[c] = a / (1.0f + std::exp(-a)) * uv[i * F + c];  // SiLU(gate) * up
            }
        }
    }
    be.copy_to_device(h, hh.data(), sizeof(float) * hh.size());
}

void experts_down_add_grouped(Backend& be, const Experts& down, const float* h, int n, const ExpertPick* picks,
                              float* x) {
    if (n <= 0) return;
    const int64_t F = down.w[0].ne0, E = down.w[0].ne1;
    const Groups g = group_picks(be, picks, n, down.n);
    std::vector<float> hh(2 * static_cast<size_t>(n) * F), oh(2 * static_cast<size_t>(n) * E),
        xh(static_cast<size_t>(n) * E), in, out;
    be.copy_to_host(hh.data(), h, sizeof(float) * hh.size());
    be.copy_to_host(xh.data(), x, sizeof(float) * xh.size());
    Scratch s(be);
    float* din = s.floats(static_cast<size_t>(g.largest) * F);
    float* dout = s.floats(static_cast<size_t>(g.largest) * E);
    for (int e = 0; e < down.n; ++e) {
        const std::vector<int>& rows = g.by_expert[e];
        const int k = static_cast<int>(rows.size());
        if (k == 0) continue;
        in.resize(static_cast<size_t>(k) * F);
        for (int i = 0; i < k; ++i) std::copy_n(&hh[static_cast<size_t>(rows[i]) * F], F, &in[i * F]);
        be.copy_to_device(din, in.data(), sizeof(float) * in.size());
        be.matmul(down.w[e], din, k, dout, nullptr, RowNorm{}, Epilogue::store);
        out.resize(static_cast<size_t>(k) * E);
        be.copy_to_host(out.data(), dout, sizeof(float) * out.size());
        for (int i = 0; i < k; ++i) std::copy_n(&out[i * E], E, &oh[static_cast<size_t>(rows[i]) * E]);
    }
    for (int t = 0; t < n; ++t) {
        const float w0 = g.picks[2 * t].weight, w1 = g.picks[2 * t + 1].weight;
        const float* o0 = &oh[static_cast<size_t>(2 * t) * E];
        const float* o1 = o0 + E;
        float* xt = &xh[static_cast<size_t>(t) * E];
        for (int64_t d = 0; d < E; ++d) xt[d] += o0[d] * w0 + o1[d] * w1;
    }
    be.copy_to_device(x, xh.data(), sizeof(float) * xh.size());
}

} // namespace phi
