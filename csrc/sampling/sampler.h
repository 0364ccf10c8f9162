// Token sampling: the filters of llama.cpp's default chain, applied to a
// candidate list built from one row of logits.
//
//   penalties -> top_k -> top_p -> min_p -> temperature -> dist
//
// Each filter has llama.cpp's semantics (src/llama-sampler.cpp), including its
// "off" values: top_k <= 0, top_p >= 1, min_p <= 0, repeat_penalty == 1 with
// zero presence/frequency penalties. temperature <= 0 or top_k == 1 means greedy.
//
// One difference on purpose: llama.cpp sorts with std::partial_sort, whose
// order among equal logits is unspecified; here ties go to the lower token id,
// so results never depend on the standard library.
#pragma once
#include <cstddef>
#include <cstdint>
#include <vector>

#include "sampling/rng.h"

namespace phi::sampling {

struct Candidate {
    int32_t id;
    float logit;
    float p;  // probability; valid after softmax() or dist()
};

struct Candidates {
    std::vector<Candidate> data;
    bool sorted = false;  // data is in descending logit order (ties: lower id first)

    // All n_vocab tokens of a logits row, in id order.
    void assign(const float* logits, int32_t n_vocab);
    size_t size() const { return data.size(); }
};

// Repetition, frequency and presence penalties over the last `last_n` tokens of
// `history` (last_n < 0: all of it; 0: none). For a token seen c times there:
//   logit <= 0 ? logit * repeat : logit / repeat;  then  logit -= c * freq + presence.
void apply_penalties(Candidates& c, const int32_t* history, size_t n_history, int last_n, float repeat,
                     float freq, float presence);

void top_k(Candidates& c, int k);                       // keep the k largest (k <= 0: no-op)
void top_p(Candidates& c, float p, size_t min_keep);    // smallest prefix with cumulative prob >= p
void min_p(Candidates& c, float p, size_t min_keep);    // keep prob >= p * max prob
void temperature(Candidates& c, float t);               // logit /= t; t <= 0: all but the max -> -inf
void softmax(Candidates& c);                            // fills p (does not reorder)
int32_t greedy(const Candidates& c);                    // highest logit, lower id on ties
int32_t argmax(const float* logits, int32_t n);         // the same, straight off a logits row (NaNs skipped; -1: all NaN)
int32_t dist(Candidates& c, Rng& rng);                  // draw from softmax(logits)

// Sort in descending logit order (ties: lower id first); only the first k
// positions are guaranteed sorted when k < size.
void sort_candidates(Candidates& c, size_t k);

struct SamplerParams {
    float temperature = 0.8f;
    int top_k = 40;
    float top_p = 0.95f;
    float min_p = 0.05f;
    float repeat_penalty = 1.0f;
    int repeat_last_n = 64;  // -1: the whole history
    float presence_penalty = 0.0f;
    float frequency_penalty = 0.0f;
    size_t min_keep = 0;
    uint64_t seed = 0;
};

// The whole chain with its RNG. Not thread-safe; one per generation stream.
class Sampler {
public:
    explicit Sampler(const SamplerParams& p);

    // Token id drawn from one logits row. history: the tokens so far (prompt and
    // generated), of which the last repeat_last_n feed the penalties. Throws
    // invalid_arg when the row has no logit that is not NaN.
    int32_t sample(const float* logits, int32_t n_vocab, const int32_t* history, size_t n_history);

    bool is_greedy() const { return p_.temperature <= 0.0f || p_.top_k == 1; }
    const SamplerParams& params() const { return p_; }
    void reseed(uint64_t seed) { rng_.reseed(seed); }
    Rng& rng() { return rng_; }
    // The candidates left after the last sample() call's filters (for inspection).
    const Candidates& last_candidates() const { return cand_; }

private:
    int32_t sample_unchecked(const float* logits, int32_t n_vocab, const int32_t* history, size_t n_history);

    SamplerParams p_;
    Rng rng_;
    Candidates cand_;         // reused between calls: no allocation per token
    std::vector<float> row_;  // the logits row after penalties
    std::vector<float> heap_; // top-k selection scratch
};

} // namespace phi::sampling
