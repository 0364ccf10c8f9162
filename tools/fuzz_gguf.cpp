// Fuzz target for the GGUF reader: any byte string must either open cleanly
// (then every value and tensor byte is touched) or throw phi::Error. A crash,
// a sanitizer report or a read outside the mapping is a bug.
//
// libFuzzer (clang, ASan + UBSan): tools/fuzz.sh gguf SECONDS
// Without clang (gcc has no libFuzzer), a built-in mutation loop over seed files:
//   g++ -std=c++17 -g -O1 -fsanitize=address,undefined -DFUZZ_GGUF_MAIN -Icsrc -Itools \
//     tools/fuzz_gguf.cpp csrc/gguf/gguf.cpp csrc/core/dtype.cpp -o build/fuzz_gguf
//   build/fuzz_gguf SECONDS SEED_FILE...
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>

#include "core/error.h"
#include "gguf/gguf.h"
#include "fuzz_memfile.h"

namespace {

uint64_t touch_value(const phi::gguf::Value& v) {
    using phi::gguf::ValueType;
    uint64_t h = v.u ^ static_cast<uint64_t>(v.i) ^ v.str.size();
    for (char c : v.str) h += static_cast<unsigned char>(c);
    if (v.type == ValueType::ARRAY) {
        if (v.raw && v.elem_type != ValueType::BOOL) {
            for (uint64_t k = 0; k < v.count; ++k) {
                const double x = v.number_at(k);  // (any bits: a cast of NaN would be UB)
                uint64_t bits;
                std::memcpy(&bits, &x, sizeof bits);
                h += bits;
            }
        } else if (v.raw) {
            for (uint64_t k = 0; k < v.count; ++k) h += v.raw[k];
        }
        for (const auto& item : v.items) h += touch_value(item);
    }
    return h;
}

} // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
    fuzz::write_memfile(data, size);
    try {
        auto f = phi::gguf::File::open(fuzz::memfile_path());
        volatile uint64_t sink = 0;
        for (const auto& [key, v] : f->metadata()) sink = sink + key.size() + touch_value(v);
        for (const auto& t : f->tensors()) {
            const auto* p = static_cast<const uint8_t*>(t.data);
            // the reader's own promise, checked independently
            if (t.offset + t.nbytes > f->file_size() - f->data_offset() || t.n_elements() <= 0 ||
                f->find_tensor(t.name) != &t)
                std::abort();
            for (size_t k = 0; k < t.nbytes; ++k) sink = sink + p[k];
        }
        (void)f->opt_int("general.alignment");
        (void)f->get_str_array("tokenizer.ggml.tokens");
        (void)f->get_f32_array("tokenizer.ggml.scores");
        (void)f->get_int_array("tokenizer.ggml.token_type");
    } catch (const phi::Error& e) {
        // the expected outcome for garbage; getters may also throw on wrong types
    }
    return 0;
}

#ifdef FUZZ_GGUF_MAIN
// A small structure-unaware mutator (flips, interesting integers, truncation,
// splices) for machines without libFuzzer.
#include <chrono>
#include <fstream>
#include <iterator>
#include <random>
#include <vector>

int main(int argc, char** argv) {
    if (argc < 3) {
        std::fprintf(stderr, "usage: %s SECONDS SEED_FILE...\n", argv[0]);
        return 2;
    }
    const double seconds = std::atof(argv[1]);
    std::vector<std::vector<uint8_t>> seeds;
    for (int i = 2; i < argc; ++i) {
        std::ifstream in(argv[i], std::ios::binary);
        seeds.emplace_back(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
    }
    std::mt19937_64 rng(12345);
    const uint64_t interesting[] = {0, 1, 2, 3, 4, 5, 7, 8, 9, 12, 13, 31, 32, 33, 255, 256, 0x7fff,
                                    0xffff, 0x7fffffff, 0x80000000u, 0xffffffffu, 1ull << 32,
                                    1ull << 40, 0x7fffffffffffffffull, 0x8000000000000000ull,
                                    ~0ull};
    const auto t0 = std::chrono::steady_clock::now();
    uint64_t runs = 0;
    std::vector<uint8_t> buf;
    while (std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count() < seconds) {
        buf = seeds[rng() % seeds.size()];
        const int n_mut = 1 + static_cast<int>(rng() % 6);
        for (int m = 0; m < n_mut && !buf.empty(); ++m) {
            const size_t pos = rng() % buf.size();
            switch (rng() % 6) {
                case 0: buf[pos] ^= static_cast<uint8_t>(1u << (rng() % 8)); break;
                case 1: buf[pos] = static_cast<uint8_t>(rng()); break;
                case 2: {  // an interesting little-endian integer of 1, 2, 4 or 8 bytes
                    const uint64_t v = interesting[rng() % (sizeof(interesting) / 8)];
                    const size_t w = size_t(1) << (rng() % 4);
                    for (size_t b = 0; b < w && pos + b < buf.size(); ++b) buf[pos + b] = uint8_t(v >> (8 * b));
                    break;
                }
                case 3: buf.resize(pos); break;                    // truncate
                case 4: buf.erase(buf.begin() + pos, buf.begin() + std::min(buf.size(), pos + 1 + rng() % 16)); break;
                case 5: {  // duplicate a chunk (repeats keys, names)
                    const size_t len = std::min<size_t>(buf.size() - pos, 1 + rng() % 64);
                    std::vector<uint8_t> chunk(buf.begin() + pos, buf.begin() + pos + len);
                    buf.insert(buf.begin() + rng() % buf.size(), chunk.begin(), chunk.end());
                    break;
                }
            }
        }
        LLVMFuzzerTestOneInput(buf.data(), buf.size());
        ++runs;
    }
    std::printf("fuzz_gguf: %llu inputs in %.0f s, no crash\n", static_cast<unsigned long long>(runs), seconds);
    return 0;
}
#endif
