// Tokenize / detokenize: special-token partition, SentencePiece bigram
// merges, byte-level BPE merges.
#include "tokenizer/tokenizer.h"

#include <algorithm>

#include "core/error.h"
#include "tokenizer/unicode.h"

namespace phi {

namespace {
// Bytes of the White_Space code point (Unicode's, as Rust's char::is_whitespace
// that HF tokenizers strips with) that starts at text[pos], or 0.
size_t space_after(std::string_view text, size_t pos) {
    size_t p = pos;
    const uint32_t cp = tok::decode_utf8_lenient(text, &p);
    return tok::is_space(tok::ucat(cp)) ? p - pos : 0;
}
// Bytes of the White_Space code point that ends at text[end - 1] and starts at
// or after `begin`, or 0.
size_t space_before(std::string_view text, size_t begin, size_t end) {
    size_t s = end - 1;
    while (s > begin && end - s < 4 && (uint8_t(text[s]) & 0xC0) == 0x80) --s;
    size_t p = s;
    const uint32_t cp = tok::decode_utf8_lenient(text, &p);
    return p == end && tok::is_space(tok::ucat(cp)) ? end - s : 0;
}
} // namespace

bool Tokenizer::is_eog(int32_t id) const { return std::binary_search(eog_.begin(), eog_.end(), id); }

// ---------------------------------------------------------------- special tokens
// llama.cpp's tokenizer_st_partition: for each special token, longest first,
// split every remaining raw-text fragment at its occurrences. Control and
// unknown tokens only take part with parse_special; user-defined ones always.
// LSTRIP/RSTRIP eat whitespace beside the token: Unicode's White_Space, as HF
// tokenizers strips (llama.cpp strips only ASCII's).
void Tokenizer::partition(std::string_view text, bool parse_special, std::vector<Fragment>& frags) const {
    frags.clear();
    if (text.empty()) return;
    frags.push_back({-1, 0, text.size()});
    std::vector<Fragment> next;
    for (const int32_t id : special_) {
        const uint32_t a = attr_[size_t(id)];
        if (!parse_special && (a & (TOKEN_ATTR_CONTROL | TOKEN_ATTR_UNKNOWN))) continue;
        const std::string_view tok = token_text(id);
        // cheap rejection: most specials never occur
        bool any = false;
        for (const Fragment& f : frags)
            if (f.token < 0 && text.substr(f.off, f.len).find(tok) != std::string_view::npos) { any = true; break; }
        if (!any) continue;
        next.clear();
        for (const Fragment& f : frags) {
            if (f.token >= 0) { next.push_back(f); continue; }
            size_t off = f.off, len = f.len;
            while (len > 0) {
                const size_t m = text.substr(0, off + len).find(tok, off);
                if (m == std::string_view::npos) { next.push_back({-1, off, len}); break; }
                if (m > off) {
                    size_t left = m - off;
                    if (a & TOKEN_ATTR_LSTRIP)
                        for (size_t n; left > 0 && (n = space_before(text, off, off + left)) > 0;) left -= n;
                    if (left > 0) next.push_back({-1, off, left});
                }
                next.push_back({id, 0, 0});
                size_t r_off = m + tok.size();
                size_t r_len = off + len - r_off;
                if (a & TOKEN_ATTR_RSTRIP)
                    for (size_t n; r_len > 0 && (n = space_after(text.substr(0, r_off + r_len), r_off)) > 0;) {
                        r_off += n;
                        r_len -= n;
                    }
                off = r_off;
                len = r_len;
            }
        }
        frags.swap(next);
    }
}

std::vector<int32_t> Tokenizer::tokenize(std::string_view text, bool add_special, bool parse_special) const {
    std::vector<int32_t> out;
    out.reserve(text.size() / 3 + 4);
    std::vector<Fragment> frags;
    partition(text, parse_special, frags);

    if (kind_ == Kind::SPM) {
        // OG sentencepiece: encode("") gives [BOS] with specials, [] without
        if (add_special && add_bos_) out.push_back(bos_);
        bool prev_special = true;  // a space prefix goes before the first text
        std::string buf;
        for (const Fragment& f : frags) {
            if (f.token >= 0) {
                out.push_back(f.token);
                prev_special = true;
                continue;
            }
            // escape spaces as U+2581, with the dummy prefix after a special
            buf.clear();
            buf.reserve(f.len * 3 + 3);
            if (add_space_prefix_ && prev_special) buf.append("\xE2\x96\x81");
            for (size_t i = f.off; i < f.off + f.len; ++i) {
                if (text[i] == ' ') buf.append("\xE2\x96\x81");
                else buf.push_back(text[i]);
            }
            tokenize_spm(buf, out);
            prev_special = false;
        }
        if (add_special && add_eos_) out.push_back(eos_);
    } else {
        if (add_special && add_bos_) out.push_back(bos_);
        for (const Fragment& f : frags) {
            if (f.token >= 0) out.push_back(f.token);
            else tokenize_bpe(text.substr(f.off, f.len), out);
        }
        if (add_special && add_eos_) out.push_back(eos_);
    }
    return out;
}

// ---------------------------------------------------------------- SentencePiece
// llama.cpp's llm_tokenizer_spm: start from UTF-8 characters, repeatedly merge
// the adjacent pair whose concatenation is the highest-scoring token (ties:
// leftmost), then emit each symbol as its token or as byte tokens.
void Tokenizer::tokenize_spm(std::string_view text, std::vector<int32_t>& out) const {
    if (!spm_split_words_) {
        merge_spm_segment(text, 0, text.size(), out);
        return;
    }
    // Cut before every U+2581 that follows another character (the start of each
    // space run): with this vocabulary no merge can cross such a point, so the
    // result equals merging the whole text, with small heaps instead of one huge one.
    static constexpr std::string_view kSpace = "\xE2\x96\x81";
    thread_local std::vector<uint32_t> cuts;  // segment starts
    cuts.clear();
    cuts.push_back(0);
    bool prev_space = false;
    for (size_t off = 0; off < text.size();) {
        const size_t len = std::min(tok::utf8_len(uint8_t(text[off])), text.size() - off);
        const bool space = len == 3 && text.compare(off, 3, kSpace) == 0;
        if (space && !prev_space && off > 0) cuts.push_back(uint32_t(off));
        prev_space = space;
        off += len;
    }
    cuts.push_back(uint32_t(text.size()));
    // words repeat a lot: merge each distinct one once per call
    tok::WordMemo memo(cuts.size());
    for (size_t k = 0; k + 1 < cuts.size(); ++k) {
        const std::string_view seg = text.substr(cuts[k], cuts[k + 1] - cuts[k]);
        const uint64_t h = tok::hash_bytes(seg.data(), seg.size());
        uint32_t first, count;
        if (memo.find(seg, h, &first, &count)) {
            for (uint32_t j = 0; j < count; ++j) {
                const int32_t id = out[first + j];  // (push_back may reallocate)
                out.push_back(id);
            }
            continue;
        }
        const uint32_t seg_first = uint32_t(out.size());
        merge_spm_segment(text, cuts[k], cuts[k + 1], out);
        memo.add(seg, h, seg_first, uint32_t(out.size()) - seg_first);
    }
}

void Tokenizer::merge_spm_segment(std::string_view all, size_t begin, size_t end, std::vector<int32_t>& out) const {
    // Symbols are cut from the whole text exactly as in one pass (a truncated
    // lead byte is capped at the text end, not at the segment end: segments
    // only start at whole U+2581 characters, so the two agree).
    const std::string_view text = all.substr(0, end);
    struct Sym {
        uint32_t off, n;  // n == 0: merged away
        int32_t prev, next;
    };
    struct Bigram {
        float score;
        int32_t left, right;
        uint32_t size;
    };
    struct Worse {
        bool operator()(const Bigram& l, const Bigram& r) const {
            return l.score < r.score || (l.score == r.score && l.left > r.left);
        }
    };
    thread_local std::vector<Sym> sym;
    thread_local std::vector<Bigram> heap;
    sym.clear();
    heap.clear();
    for (size_t off = begin; off < end;) {
        const size_t len = std::min(tok::utf8_len(uint8_t(text[off])), end - off);
        const int32_t idx = int32_t(sym.size());
        sym.push_back({uint32_t(off), uint32_t(len), idx - 1, off + len == end ? -1 : idx + 1});
        off += len;
    }
    auto try_add = [&](int32_t l, int32_t r) {
        if (l < 0 || r < 0) return;
        const uint32_t size = sym[size_t(l)].n + sym[size_t(r)].n;
        const int32_t id = vocab_.find(text.substr(sym[size_t(l)].off, size));
        if (id < 0) return;
        heap.push_back({score_[size_t(id)], l, r, size});
        std::push_heap(heap.begin(), heap.end(), Worse());
    };
    for (int32_t i = 1; i < int32_t(sym.size()); ++i) try_add(i - 1, i);
    while (!heap.empty()) {
        std::pop_heap(heap.begin(), heap.end(), Worse());
        const Bigram b = heap.back();
        heap.pop_back();
        Sym& l = sym[size_t(b.left)];
        Sym& r = sym[size_t(b.right)];
        if (l.n == 0 || r.n == 0 || l.n + r.n != b.size) continue;  // stale
        l.n += r.n;
        r.n = 0;
        l.next = r.next;
        if (r.next >= 0) sym[size_t(r.next)].prev = b.left;
        try_add(l.prev, b.left);
        try_add(b.left, l.next);
    }
    if (sym.empty()) return;
    for (int32_t i = 0; i != -1; i = sym[size_t(i)].next) {
        const Sym& s = sym[size_t(i)];
        const int32_t id = vocab_.find(text.substr(s.off, s.n));
        if (id >= 0) { out.push_back(id); continue; }
        // byte fallback (a merged symbol is always a token, so this is one character)
        for (uint32_t k = 0; k < s.n; ++k) {
            const int32_t bt = byte_token_[uint8_t(text[s.off + k])];
            out.push_back(bt >= 0 ? bt : unk_);
        }
    }
}

// ---------------------------------------------------------------- byte-level BPE
// Pre-tokenize into words, then merge each word's bytes (as their GPT-2
// stand-in tokens) by lowest merge rank, leftmost first, as llama.cpp's
// llm_tokenizer_bpe_session and HF's BPE model do.
void Tokenizer::tokenize_bpe(std::string_view text, std::vector<int32_t>& out) const {
    // decode as llama.cpp does (bad bytes -> U+FFFD); re-encode only if that changed anything
    tok::CodepointText ct;
    ct.cp.reserve(text.size());
    std::vector<uint32_t> byte_off;  // byte offset of each code point in `norm`
    byte_off.reserve(text.size() + 1);
    bool changed = false;
    for (size_t pos = 0; pos < text.size();) {
        const size_t start = pos;
        const uint32_t cp = tok::decode_utf8_lenient(text, &pos);
        const size_t canon = cp < 0x80 ? 1 : cp < 0x800 ? 2 : cp < 0x10000 ? 3 : 4;
        if (pos - start != canon || (cp == 0xFFFD && text.compare(start, 3, "\xEF\xBF\xBD") != 0)) changed = true;
        ct.cp.push_back(cp);
        byte_off.push_back(uint32_t(start));
    }
    std::string norm_buf;
    std::string_view norm = text;
    if (changed) {
        byte_off.clear();
        for (uint32_t cp : ct.cp) {
            byte_off.push_back(uint32_t(norm_buf.size()));
            tok::append_utf8(norm_buf, cp);
        }
        norm = norm_buf;
    }
    byte_off.push_back(uint32_t(norm.size()));
    ct.cls.resize(ct.cp.size());
    for (size_t i = 0; i < ct.cp.size(); ++i) ct.cls[i] = tok::ucat(ct.cp[i]);

    std::vector<uint32_t> ends;
    ends.reserve(ct.cp.size() / 3 + 1);
    tok::pretokenize(pre_type_, ct, 0, ct.cp.size(), ends);

    tok::WordMemo memo(ends.size());
    size_t wb = 0;
    for (const uint32_t we : ends) {
        const std::string_view word = norm.substr(byte_off[wb], byte_off[we] - byte_off[wb]);
        wb = we;
        if (word.size() == 1) {
            const int32_t id = byte_token_[uint8_t(word[0])];
            if (id >= 0) out.push_back(id);
            continue;
        }
        // a word seen earlier in this text: copy its ids
        const uint64_t h = tok::hash_bytes(word.data(), word.size());
        uint32_t first, count;
        if (memo.find(word, h, &first, &count)) {
            for (uint32_t k = 0; k < count; ++k) {
                const int32_t id = out[first + k];  // (push_back may reallocate)
                out.push_back(id);
            }
            continue;
        }
        const uint32_t word_first = uint32_t(out.size());
        merge_bpe_word(word, out);
        memo.add(word, h, word_first, uint32_t(out.size()) - word_first);
    }
}

void Tokenizer::merge_bpe_word(std::string_view word, std::vector<int32_t>& out) const {
    struct Sym { int32_t id, prev, next; };
    struct Pair { int32_t rank, left, right, lid, rid, merged; };
    struct Worse {
        bool operator()(const Pair& a, const Pair& b) const {
            return a.rank > b.rank || (a.rank == b.rank && a.left > b.left);
        }
    };
    thread_local std::vector<Sym> sym;
    thread_local std::vector<Pair> heap;
    thread_local std::string encoded;
    if (ignore_merges_) {
        encoded.clear();
        for (char c : word) tok::append_utf8(encoded, tok::byte_to_unicode(uint8_t(c)));
        const int32_t id = vocab_.find(encoded);
        if (id >= 0) { out.push_back(id); return; }
    }
    sym.clear();
    heap.clear();
    const int32_t nb = int32_t(word.size());
    for (int32_t i = 0; i < nb; ++i) sym.push_back({byte_token_[uint8_t(word[size_t(i)])], i - 1, i + 1 < nb ? i + 1 : -1});
    auto try_add = [&](int32_t l, int32_t r) {
        if (l < 0 || r < 0) return;
        const int32_t lid = sym[size_t(l)].id, rid = sym[size_t(r)].id;
        if (lid < 0 || rid < 0) return;
        const tok::MergeInfo* m = merges_.find(lid, rid);
        if (!m) return;
        heap.push_back({m->rank, l, r, lid, rid, m->merged});
        std::push_heap(heap.begin(), heap.end(), Worse());
    };
    for (int32_t i = 1; i < nb; ++i) try_add(i - 1, i);
    while (!heap.empty()) {
        std::pop_heap(heap.begin(), heap.end(), Worse());
        const Pair p = heap.back();
        heap.pop_back();
        Sym& l = sym[size_t(p.left)];
        Sym& r = sym[size_t(p.right)];
        // stale unless both sides still are what they were when queued
        if (l.id != p.lid || r.id != p.rid || l.next != p.right) continue;
        l.id = p.merged;
        r.id = -2;  // merged away
        l.next = r.next;
        if (r.next >= 0) sym[size_t(r.next)].prev = p.left;
        try_add(l.prev, p.left);
        try_add(p.left, l.next);
    }
    for (int32_t i = 0; i != -1; i = sym[size_t(i)].next)
        if (sym[size_t(i)].id >= 0) out.push_back(sym[size_t(i)].id);
}

// ---------------------------------------------------------------- detokenize
bool Tokenizer::append_piece(std::string& out, int32_t id, bool special) const {
    if (id < 0 || id >= n_vocab()) return false;
    if (!special && (attr_[size_t(id)] & (TOKEN_ATTR_UNKNOWN | TOKEN_ATTR_CONTROL))) return true;
    out += piece_[size_t(id)];
    return true;
}

std::string Tokenizer::token_to_piece(int32_t id, bool special, int lstrip) const {
    std::string out;
    if (!append_piece(out, id, special))
        fail(ErrorKind::invalid_arg, "token id ", id, " out of range [0, ", n_vocab(), ")");
    size_t k = 0;
    while (int(k) < lstrip && k < out.size() && out[k] == ' ') ++k;
    out.erase(0, k);
    return out;
}

std::string Tokenizer::detokenize(const int32_t* ids, size_t n, bool remove_special, bool unparse_special) const {
    bool remove_space = add_space_prefix_;
    if (remove_special && add_bos_ && n > 0 && ids[0] == bos_) {
        remove_space = false;
        ++ids;
        --n;
    }
    if (remove_special && add_eos_ && n > 0 && ids[n - 1] == eos_) --n;
    std::string text;
    text.reserve(n * 4);
    for (size_t i = 0; i < n; ++i) {
        const size_t before = text.size();
        if (!append_piece(text, ids[i], unparse_special))
            fail(ErrorKind::invalid_arg, "token id ", ids[i], " out of range [0, ", n_vocab(), ")");
        if (remove_space && text.size() > before && text[before] == ' ') text.erase(before, 1);
        remove_space = false;
    }
    // No clean-up of spaces before punctuation (llama.cpp's " ," -> "," for GPT-2-style
    // vocabs): transformers skips it for every BPE tokenizer, which all Phi tokenizers
    // are, and without it detokenize(tokenize(text)) gives the text back.
    return text;
}

// ---------------------------------------------------------------- streaming
std::string StreamDecoder::push(int32_t id) {
    if (!tok_.append_piece(pending_, id, special_))
        fail(ErrorKind::invalid_arg, "token id ", id, " out of range [0, ", tok_.n_vocab(), ")");
    size_t tail = 0;
    const size_t done = tok::utf8_complete_prefix(pending_, &tail);
    std::string out;
    tok::append_utf8_sanitized(out, std::string_view(pending_).substr(0, done));
    pending_.erase(0, done);
    return out;
}

std::string StreamDecoder::flush() {
    std::string out;
    tok::append_utf8_sanitized(out, pending_);
    pending_.clear();
    return out;
}

} // namespace phi
