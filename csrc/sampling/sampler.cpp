#include "sampling/sampler.h"

#include <algorithm>
#include <cmath>
#include <functional>
#include <limits>
#include <unordered_map>

#include "core/error.h"

namespace phi::sampling {

namespace {

// Descending logit, lower id first among equals: a strict total order (NaN aside),
// so full and partial sorts agree on every prefix.
inline bool before(const Candidate& a, const Candidate& b) {
    return a.logit > b.logit || (a.logit == b.logit && a.id < b.id);
}

// Token counts over the penalty window.
std::unordered_map<int32_t, int> window_counts(const int32_t* history, size_t n_history, int last_n) {
    const size_t n = last_n < 0 ? n_history : std::min(n_history, static_cast<size_t>(last_n));
    std::unordered_map<int32_t, int> counts;
    counts.reserve(n * 2);
    for (size_t i = n_history - n; i < n_history; ++i) ++counts[history[i]];
    return counts;
}

inline void penalize(float& logit, int count, float repeat, float freq, float presence) {
    // Dividing a negative logit would make the token MORE likely: multiply instead.
    if (logit <= 0) logit *= repeat;
    else logit /= repeat;
    logit -= static_cast<float>(count) * freq + static_cast<float>(count > 0) * presence;
}

bool penalties_off(int last_n, float repeat, float freq, float presence) {
    return last_n == 0 || (repeat == 1.0f && freq == 0.0f && presence == 0.0f);
}

// The k-th largest of x[0..n) (1 <= k <= n), NaN aside; heap is scratch space.
float kth_largest(const float* x, int32_t n, int k, std::vector<float>& heap) {
    heap.assign(x, x + k);
    std::make_heap(heap.begin(), heap.end(), std::greater<float>());  // min-heap: front = smallest kept
    for (int32_t i = k; i < n; ++i) {
        if (x[i] > heap.front()) {
            std::pop_heap(heap.begin(), heap.end(), std::greater<float>());
            heap.back() = x[i];
            std::push_heap(heap.begin(), heap.end(), std::greater<float>());
        }
    }
    return heap.front();
}

} // namespace

void Candidates::assign(const float* logits, int32_t n_vocab) {
    data.resize(static_cast<size_t>(n_vocab));
    for (int32_t i = 0; i < n_vocab; ++i) data[i] = {i, logits[i], 0.0f};
    sorted = false;
}

void sort_candidates(Candidates& c, size_t k) {
    if (c.sorted) return;
    k = std::min(k, c.size());
    if (2 * k >= c.size()) {
        std::sort(c.data.begin(), c.data.end(), before);
        c.sorted = true;
    } else {
        // select the k best in O(n), then order just those: much cheaper than a
        // heap-based partial_sort for a 32k-100k vocabulary
        const auto mid = c.data.begin() + static_cast<ptrdiff_t>(k);
        std::nth_element(c.data.begin(), mid, c.data.end(), before);
        std::sort(c.data.begin(), mid, before);
    }
}

int32_t argmax(const float* x, int32_t n) {
    if (n <= 0) return -1;
    // 8 independent running maxima (no loop-carried dependency on one value),
    // then the first index holding the maximum: lower id wins ties
    // (from -inf, not x[0]: a NaN never wins a > compare, so NaNs are skipped wherever they are)
    float m[8];
    for (float& v : m) v = -std::numeric_limits<float>::infinity();
    int32_t i = 0;
    for (; i + 8 <= n; i += 8)
        for (int j = 0; j < 8; ++j) m[j] = x[i + j] > m[j] ? x[i + j] : m[j];
    float best = m[0];
    for (int j = 1; j < 8; ++j) best = m[j] > best ? m[j] : best;
    for (; i < n; ++i) best = x[i] > best ? x[i] : best;
    for (int32_t k = 0; k < n; ++k)
        if (x[k] == best) return k;
    return -1;  // all NaN
}

void apply_penalties(Candidates& c, const int32_t* history, size_t n_history, int last_n, float repeat,
                     float freq, float presence) {
    if (penalties_off(last_n, repeat, freq, presence) || n_history == 0) return;
    const auto counts = window_counts(history, n_history, last_n);
    // Fast path: candidates still one per id in id order (as assign() leaves them),
    // so each seen token is found by index instead of a lookup per candidate.
    const bool by_index = !c.sorted && !c.data.empty() && c.data.front().id == 0 &&
                          c.data.back().id == static_cast<int32_t>(c.size()) - 1;
    if (by_index) {
        for (const auto& [id, count] : counts)
            if (id >= 0 && static_cast<size_t>(id) < c.size()) penalize(c.data[id].logit, count, repeat, freq, presence);
    } else {
        for (Candidate& x : c.data) {
            const auto it = counts.find(x.id);
            if (it != counts.end()) penalize(x.logit, it->second, repeat, freq, presence);
        }
    }
    c.sorted = false;
}

void top_k(Candidates& c, int k) {
    if (k <= 0 || c.data.empty()) return;
    const size_t kk = std::min(static_cast<size_t>(k), c.size());
    sort_candidates(c, kk);
    c.data.resize(kk);
    c.sorted = true;  // the kept prefix is sorted
}

void softmax(Candidates& c) {
    if (c.data.empty()) return;
    float max_l = -std::numeric_limits<float>::infinity();
    for (const Candidate& x : c.data) max_l = std::max(max_l, x.logit);
    float sum = 0.0f;
    for (Candidate& x : c.data) {
        x.p = std::exp(x.logit - max_l);
        sum += x.p;
    }
    for (Candidate& x : c.data) x.p /= sum;
}

void top_p(Candidates& c, float p, size_t min_keep) {
    if (p >= 1.0f || c.data.empty()) return;
    softmax(c);
    // Most of the mass usually sits in a few hundred tokens: order those first and
    // widen the ordered prefix 4x at a time only while the running sum falls short.
    size_t k = c.size() > 1024 ? 256 : c.size();
    sort_candidates(c, k);
    float cum = 0.0f;
    size_t last = c.size();
    for (size_t i = 0; i < c.size(); ++i) {
        cum += c.data[i].p;
        if (cum >= p && i + 1 >= min_keep) {
            last = i + 1;
            break;
        }
        if (!c.sorted && i + 1 == k) {
            // the first k stay where they are (same total order): select the next ones after them
            k = std::min(c.size(), 4 * k);
            const auto from = c.data.begin() + static_cast<ptrdiff_t>(i + 1);
            if (2 * k >= c.size()) {
                std::sort(from, c.data.end(), before);
                c.sorted = true;
            } else {
                const auto mid = c.data.begin() + static_cast<ptrdiff_t>(k);
                std::nth_element(from, mid, c.data.end(), before);
                std::sort(from, mid, before);
            }
        }
    }
    if (!c.sorted) sort_candidates(c, last);  // the kept prefix must be in order
    c.data.resize(last);
    c.sorted = true;
}

void min_p(Candidates& c, float p, size_t min_keep) {
    if (p <= 0.0f || c.data.empty()) return;
    if (!c.sorted) {
        float max_l = -std::numeric_limits<float>::max();
        for (const Candidate& x : c.data) max_l = std::max(max_l, x.logit);
        const float min_logit = max_l + std::log(p);  // p_i >= p * p_max  <=>  logit_i >= max + log p
        size_t n = 0;
        for (const Candidate& x : c.data) n += x.logit >= min_logit;
        if (n > 0 && n >= min_keep) {
            std::vector<Candidate> kept;  // stable: the kept tokens keep their order
            kept.reserve(n);
            for (const Candidate& x : c.data)
                if (x.logit >= min_logit) kept.push_back(x);
            c.data.swap(kept);
            return;
        }
        sort_candidates(c, c.size());
    }
    const float min_logit = c.data[0].logit + std::log(p);
    size_t i = 1;  // the first token always qualifies
    for (; i < c.size(); ++i)
        if (c.data[i].logit < min_logit && i >= min_keep) break;
    c.data.resize(i);
}

void temperature(Candidates& c, float t) {
    if (c.data.empty()) return;
    if (t <= 0.0f) {
        size_t best = 0;
        for (size_t i = 1; i < c.size(); ++i)
            if (before(c.data[i], c.data[best])) best = i;
        for (size_t i = 0; i < c.size(); ++i)
            if (i != best) c.data[i].logit = -std::numeric_limits<float>::infinity();
        return;
    }
    for (Candidate& x : c.data) x.logit /= t;
}

int32_t greedy(const Candidates& c) {
    if (c.data.empty()) return -1;
    size_t best = 0;
    for (size_t i = 1; i < c.size(); ++i)
        if (before(c.data[i], c.data[best])) best = i;
    return c.data[best].id;
}

int32_t dist(Candidates& c, Rng& rng) {
    if (c.data.empty()) return -1;
    const double u = rng.next_double();  // drawn even for one candidate: the stream stays in step
    if (c.size() == 1) {
        c.data[0].p = 1.0f;
        return c.data[0].id;
    }
    float max_l = -std::numeric_limits<float>::infinity();
    for (const Candidate& x : c.data) max_l = std::max(max_l, x.logit);
    double sum = 0.0;
    for (Candidate& x : c.data) {
        x.p = std::exp(x.logit - max_l);
        sum += x.p;
    }
    // Walk the cumulative sum to u * total; a zero-probability token is never picked.
    const double target = sum * u;
    double run = 0.0;
    size_t pick = c.size();
    for (size_t i = 0; i < c.size(); ++i) {
        run += c.data[i].p;
        if (run >= target && c.data[i].p > 0.0f) {
            pick = i;
            break;
        }
    }
    if (pick == c.size()) {  // rounding left target above the total: take the last possible token
        for (size_t i = c.size(); i-- > 0;)
            if (c.data[i].p > 0.0f) { pick = i; break; }
        if (pick == c.size()) pick = 0;
    }
    for (Candidate& x : c.data) x.p = static_cast<float>(x.p / sum);
    return c.data[pick].id;
}

Sampler::Sampler(const SamplerParams& p) : p_(p), rng_(p.seed) {}

int32_t Sampler::sample(const float* logits, int32_t n_vocab, const int32_t* history, size_t n_history) {
    const int32_t id = sample_unchecked(logits, n_vocab, history, n_history);
    // a NaN picked means no finite logit to pick from: a broken model or input, not token 0
    if (id < 0 || std::isnan(logits[id]))
        fail(ErrorKind::invalid_arg, "the logits are NaN: the model's output is broken (no token can be sampled)");
    return id;
}

int32_t Sampler::sample_unchecked(const float* logits, int32_t n_vocab, const int32_t* history, size_t n_history) {
    const bool no_penalty =
        penalties_off(p_.repeat_last_n, p_.repeat_penalty, p_.frequency_penalty, p_.presence_penalty) ||
        n_history == 0;
    if (is_greedy() && no_penalty) {  // argmax straight off the logits row: no candidate list
        cand_.data.clear();
        return argmax(logits, n_vocab);
    }
    // Penalties on a private copy of the row (by index: only the window's tokens change).
    row_.assign(logits, logits + n_vocab);
    if (!no_penalty) {
        for (const auto& [id, count] : window_counts(history, n_history, p_.repeat_last_n))
            if (id >= 0 && id < n_vocab)
                penalize(row_[id], count, p_.repeat_penalty, p_.frequency_penalty, p_.presence_penalty);
    }
    if (is_greedy()) {
        cand_.data.clear();
        return argmax(row_.data(), n_vocab);
    }
    if (p_.top_k > 0 && p_.top_k < n_vocab) {
        // top-k straight off the row: the k-th largest value by a k-element heap (one
        // pass of float compares), then candidates only for logits at or above it.
        // Same set and order as sorting every candidate, at a fraction of the cost.
        const float thr = kth_largest(row_.data(), n_vocab, p_.top_k, heap_);
        cand_.data.clear();
        for (int32_t i = 0; i < n_vocab; ++i)
            if (row_[i] >= thr) cand_.data.push_back({i, row_[i], 0.0f});
        std::sort(cand_.data.begin(), cand_.data.end(), before);
        cand_.data.resize(std::min(cand_.size(), static_cast<size_t>(p_.top_k)));
        cand_.sorted = true;
    } else {
        cand_.assign(row_.data(), n_vocab);
    }
    top_p(cand_, p_.top_p, p_.min_keep);
    min_p(cand_, p_.min_p, p_.min_keep);
    temperature(cand_, p_.temperature);
    return dist(cand_, rng_);
}

} // namespace phi::sampling
