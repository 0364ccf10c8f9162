// Flat open-addressing hash maps for the tokenizer's two hot lookups:
// token text -> id (SPM bigrams, special tokens) and (left id, right id) ->
// merge rank (BPE). Built once, read-only afterwards, so lookups need no locks.
#pragma once
#include <cstdint>
#include <cstring>
#include <string>
#include <string_view>
#include <vector>

namespace phi::tok {

inline uint64_t hash_bytes(const char* p, size_t n) {
    // FNV-1a over 8-byte words, then a final mix: tokens are short.
    uint64_t h = 0xcbf29ce484222325ull ^ (n * 0x9E3779B97F4A7C15ull);
    while (n >= 8) {
        uint64_t w;
        std::memcpy(&w, p, 8);
        h = (h ^ w) * 0x100000001b3ull;
        h ^= h >> 29;
        p += 8;
        n -= 8;
    }
    uint64_t w = 0;
    if (n) std::memcpy(&w, p, n);
    h = (h ^ w) * 0x100000001b3ull;
    h ^= h >> 32;
    h *= 0xD6E8FEB86659FD93ull;
    h ^= h >> 32;
    return h;
}

// Token texts stored back to back in one arena; ids index them.
class StrIdMap {
public:
    // Appends a token; returns false if the text is already present.
    bool add(std::string_view text) {
        const int32_t id = int32_t(off_.size()) - 1;
        if (find(text) >= 0) return false;
        arena_.append(text.data(), text.size());
        off_.push_back(uint32_t(arena_.size()));
        if ((off_.size() - 1) * 2 > slots_.size()) rehash(slots_.empty() ? 1024 : slots_.size() * 2);
        else insert_slot(id);
        return true;
    }
    int32_t find(std::string_view text) const {
        if (slots_.empty()) return -1;
        const size_t mask = slots_.size() - 1;
        for (size_t i = hash_bytes(text.data(), text.size()) & mask;; i = (i + 1) & mask) {
            const int32_t id = slots_[i];
            if (id < 0) return -1;
            if (this->text(id) == text) return id;
        }
    }
    std::string_view text(int32_t id) const {
        return std::string_view(arena_.data() + off_[size_t(id)], off_[size_t(id) + 1] - off_[size_t(id)]);
    }
    size_t size() const { return off_.size() - 1; }

private:
    void insert_slot(int32_t id) {
        const std::string_view t = text(id);
        const size_t mask = slots_.size() - 1;
        size_t i = hash_bytes(t.data(), t.size()) & mask;
        while (slots_[i] >= 0) i = (i + 1) & mask;
        slots_[i] = id;
    }
    void rehash(size_t n) {
        slots_.assign(n, -1);
        for (size_t id = 0; id + 1 < off_.size(); ++id) insert_slot(int32_t(id));
    }
    std::string arena_;
    std::vector<uint32_t> off_{0};
    std::vector<int32_t> slots_;
};

struct MergeInfo {
    int32_t rank;    // lower merges first
    int32_t merged;  // id of left+right
};

class PairRankMap {
public:
    void reserve(size_t n) {
        size_t cap = 1024;
        while (cap < n * 2) cap *= 2;
        keys_.assign(cap, kEmpty);
        vals_.assign(cap, MergeInfo{-1, -1});
    }
    // Keeps the first (lowest) rank when a pair repeats.
    void add(int32_t left, int32_t right, MergeInfo info) {
        const uint64_t k = key(left, right);
        const size_t mask = keys_.size() - 1;
        for (size_t i = mix(k) & mask;; i = (i + 1) & mask) {
            if (keys_[i] == kEmpty) { keys_[i] = k; vals_[i] = info; ++n_; return; }
            if (keys_[i] == k) return;
        }
    }
    const MergeInfo* find(int32_t left, int32_t right) const {
        if (keys_.empty()) return nullptr;
        const uint64_t k = key(left, right);
        const size_t mask = keys_.size() - 1;
        for (size_t i = mix(k) & mask;; i = (i + 1) & mask) {
            if (keys_[i] == k) return &vals_[i];
            if (keys_[i] == kEmpty) return nullptr;
        }
    }
    size_t size() const { return n_; }

private:
    static constexpr uint64_t kEmpty = ~0ull;
    static uint64_t key(int32_t l, int32_t r) { return (uint64_t(uint32_t(l)) << 32) | uint32_t(r); }
    static uint64_t mix(uint64_t k) {
        k ^= k >> 33;
        k *= 0xff51afd7ed558ccdull;
        k ^= k >> 33;
        return k;
    }
    std::vector<uint64_t> keys_;
    std::vector<MergeInfo> vals_;
    size_t n_ = 0;
};

// Per-call memo of words already tokenized in this text: word bytes ->
// where its ids sit in the output. Fixed capacity; when full it stops
// remembering (results never depend on it, only speed).
class WordMemo {
public:
    explicit WordMemo(size_t n_words) {
        size_t cap = 64;
        while (cap < n_words * 2 && cap < (size_t(1) << 16)) cap *= 2;
        slots_.assign(cap, Slot{});
        limit_ = cap / 2;
    }
    // Ids of `word` as [*first, *first + *count) in the output, if seen before.
    bool find(std::string_view word, uint64_t h, uint32_t* first, uint32_t* count) const {
        const size_t mask = slots_.size() - 1;
        for (size_t i = h & mask;; i = (i + 1) & mask) {
            const Slot& s = slots_[i];
            if (s.len == 0) return false;
            if (s.hash == h && s.len == word.size() && std::memcmp(s.ptr, word.data(), word.size()) == 0) {
                *first = s.first;
                *count = s.count;
                return true;
            }
        }
    }
    void add(std::string_view word, uint64_t h, uint32_t first, uint32_t count) {
        if (used_ >= limit_ || word.empty()) return;
        const size_t mask = slots_.size() - 1;
        size_t i = h & mask;
        while (slots_[i].len != 0) i = (i + 1) & mask;
        slots_[i] = Slot{h, word.data(), uint32_t(word.size()), first, count};
        ++used_;
    }

private:
    struct Slot {
        uint64_t hash = 0;
        const char* ptr = nullptr;  // into the text being tokenized
        uint32_t len = 0, first = 0, count = 0;
    };
    std::vector<Slot> slots_;
    size_t used_ = 0, limit_ = 0;
};

} // namespace phi::tok
