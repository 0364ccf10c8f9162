// A small seeded random number generator whose stream is the same on every
// platform and compiler: PCG32 (O'Neill, pcg-random.org, XSH-RR output).
// std::uniform_real_distribution is avoided on purpose: its output is
// implementation-defined, so the same seed could give different text with
// libstdc++ and libc++. Floats are built from raw bits instead.
#pragma once
#include <cstdint>

namespace phi::sampling {

class Rng {
public:
    explicit Rng(uint64_t seed = 0x853c49e6748fea9bULL) { reseed(seed); }

    void reseed(uint64_t seed) {
        // pcg32_srandom_r with a fixed stream: state = 0, step, += seed, step
        state_ = 0;
        next_u32();
        state_ += seed;
        next_u32();
    }

    uint32_t next_u32() {
        const uint64_t old = state_;
        state_ = old * 6364136223846793005ULL + kInc;
        const uint32_t xorshifted = static_cast<uint32_t>(((old >> 18u) ^ old) >> 27u);
        const uint32_t rot = static_cast<uint32_t>(old >> 59u);
        return (xorshifted >> rot) | (xorshifted << ((32u - rot) & 31u));
    }

    // Uniform in [0, 1) with 53 random bits (two draws: 27 + 26 bits).
    double next_double() {
        const uint64_t a = next_u32() >> 5, b = next_u32() >> 6;
        return static_cast<double>(a * 67108864ULL + b) * (1.0 / 9007199254740992.0);
    }

    uint64_t state() const { return state_; }

private:
    static constexpr uint64_t kInc = 1442695040888963407ULL;  // any odd constant: the stream id
    uint64_t state_ = 0;
};

} // namespace phi::sampling
