#include "tokenizer/pretokenize.h"

#include "tokenizer/unicode.h"

namespace phi::tok {

namespace {

// A view of one piece [b, e) of the text; positions outside read as "absent"
// so lookaheads treat the piece end as the end of the input.
struct Piece {
    const uint32_t* cp;
    const uint8_t* cls;
    size_t b, e;

    bool in(size_t p) const { return p < e; }
    uint32_t at(size_t p) const { return p < e ? cp[p] : 0xFFFFFFFFu; }
    bool letter(size_t p) const { return p < e && is_letter(cls[p]); }
    bool number(size_t p) const { return p < e && is_number(cls[p]); }
    bool space(size_t p) const { return p < e && is_space(cls[p]); }
    // [^\s\p{L}\p{N}]
    bool other(size_t p) const { return p < e && !is_space(cls[p]) && !is_letter(cls[p]) && !is_number(cls[p]); }
    bool newline(size_t p) const { return p < e && (cp[p] == '\r' || cp[p] == '\n'); }
    // [^\r\n\p{L}\p{N}]
    bool word_prefix(size_t p) const { return p < e && !newline(p) && !is_letter(cls[p]) && !is_number(cls[p]); }
    // [\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}] and [\p{Ll}\p{Lm}\p{Lo}\p{M}] (o200k)
    bool upperish(size_t p) const {
        if (p >= e) return false;
        const uint8_t k = cls[p] & 15;
        return k == UCAT_LU || k == UCAT_LT || k == UCAT_LM || k == UCAT_LO || k == UCAT_M;
    }
    bool lowerish(size_t p) const {
        if (p >= e) return false;
        const uint8_t k = cls[p] & 15;
        return k == UCAT_LL || k == UCAT_LM || k == UCAT_LO || k == UCAT_M;
    }
};

// Case-insensitive ASCII letter test for the (?i:...) contractions. Under
// Unicode case folding U+017F (long s) also matches 's' and U+212A (Kelvin)
// matches 'k'; only the former can occur in these patterns.
inline bool ci(uint32_t c, char lower) {
    if (c < 0x80) return (c | 0x20) == uint32_t(lower) && ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z'));
    return lower == 's' && c == 0x17F;
}

// 's|'t|'re|'ve|'m|'ll|'d at p (case-insensitive if icase); returns the
// match length or 0.
size_t contraction(const Piece& t, size_t p, bool icase) {
    if (t.at(p) != '\'' || !t.in(p + 1)) return 0;
    auto is = [&](size_t q, char c) {
        const uint32_t x = t.at(q);
        return icase ? ci(x, c) : x == uint32_t(c);
    };
    if (is(p + 1, 's') || is(p + 1, 't') || is(p + 1, 'm') || is(p + 1, 'd')) return 2;
    if (!t.in(p + 2)) return 0;
    if ((is(p + 1, 'r') && is(p + 2, 'e')) || (is(p + 1, 'v') && is(p + 2, 'e')) ||
        (is(p + 1, 'l') && is(p + 2, 'l')))
        return 3;
    return 0;
}

// Whitespace at p (t.space(p) holds). with_newline_rule adds \s*[\r\n]+
// before \s+(?!\S)|\s+.
size_t match_whitespace(const Piece& t, size_t p, bool with_newline_rule) {
    size_t q = p;
    size_t last_nl = 0;
    bool has_nl = false;
    while (t.space(q)) {
        if (t.newline(q)) { last_nl = q; has_nl = true; }
        ++q;
    }
    // \s*[\r\n]+ : greedy \s* backs off to the last newline of the run
    if (with_newline_rule && has_nl) return last_nl + 1;
    // \s+(?!\S) : the run minus its last char when a non-space follows
    if (q - p > 1 && t.in(q)) return q - 1;
    // \s+
    return q;
}

// 's|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+
size_t match_gpt2(const Piece& t, size_t p) {
    if (size_t n = contraction(t, p, false)) return p + n;
    const size_t q = t.at(p) == ' ' ? p + 1 : p;
    if (t.letter(q)) { size_t r = q; while (t.letter(r)) ++r; return r; }
    if (t.number(q)) { size_t r = q; while (t.number(r)) ++r; return r; }
    if (t.other(q)) { size_t r = q; while (t.other(r)) ++r; return r; }
    return match_whitespace(t, p, false);
}

// (?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+
size_t match_llama3(const Piece& t, size_t p) {
    if (size_t n = contraction(t, p, true)) return p + n;
    if (t.letter(p) || (t.word_prefix(p) && t.letter(p + 1))) {
        size_t r = p + 1;
        while (t.letter(r)) ++r;
        return r;
    }
    if (t.number(p)) {
        size_t r = p + 1;
        while (r < p + 3 && t.number(r)) ++r;
        return r;
    }
    const size_t q = t.at(p) == ' ' ? p + 1 : p;
    if (t.other(q)) {
        size_t r = q;
        while (t.other(r)) ++r;
        while (t.newline(r)) ++r;
        return r;
    }
    return match_whitespace(t, p, true);
}

// o200k word alternatives, without their optional [^\r\n\p{L}\p{N}] prefix:
//   first:  [U]*[W]+   second: [U]+[W]*     (U = Lu Lt Lm Lo M, W = Ll Lm Lo M)
// Returns the end or 0 (no match; a match is never empty and s >= 0 ... so
// callers pass s and compare with s).
size_t o200k_first(const Piece& t, size_t s) {
    size_t a = s;
    while (t.upperish(a)) ++a;
    // greedy U* backs off until W+ can start
    for (size_t k = a + 1; k-- > s;) {
        if (t.lowerish(k)) {
            size_t r = k + 1;
            while (t.lowerish(r)) ++r;
            return r;
        }
    }
    return 0;
}
size_t o200k_second(const Piece& t, size_t s) {
    size_t a = s;
    while (t.upperish(a)) ++a;
    if (a == s) return 0;
    while (t.lowerish(a)) ++a;
    return a;
}

// [^\r\n\p{L}\p{N}]?[U]*[W]+(?i:'s|...)?|[^\r\n\p{L}\p{N}]?[U]+[W]*(?i:'s|...)?|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n/]*|\s*[\r\n]+|\s+(?!\S)|\s+
size_t match_gpt4o(const Piece& t, size_t p) {
    const bool pre = t.word_prefix(p);
    size_t r = 0;
    for (int alt = 0; alt < 2 && !r; ++alt) {
        auto fn = alt == 0 ? o200k_first : o200k_second;
        if (pre) r = fn(t, p + 1);  // optional prefix taken first...
        if (!r) r = fn(t, p);       // ...then backtracked
    }
    if (r) return r + contraction(t, r, true);
    if (t.number(p)) {
        r = p + 1;
        while (r < p + 3 && t.number(r)) ++r;
        return r;
    }
    const size_t q = t.at(p) == ' ' ? p + 1 : p;
    if (t.other(q)) {
        r = q;
        while (t.other(r)) ++r;
        while (t.newline(r) || t.at(r) == '/') ++r;
        return r;
    }
    return match_whitespace(t, p, true);
}

// Splitting by a regex keeps both the matches and the text between them.
// `match` returns the end of a match at p, or p when there is none.
template <class Match>
void split_pieces(const Piece& t, std::vector<uint32_t>& ends, Match match) {
    size_t p = t.b;
    size_t gap = t.b;  // start of unmatched text
    while (p < t.e) {
        const size_t r = match(t, p);
        if (r > p) {
            if (gap < p) ends.push_back(uint32_t(p));
            ends.push_back(uint32_t(r));
            p = gap = r;
        } else {
            ++p;
        }
    }
    if (gap < t.e) ends.push_back(uint32_t(t.e));
}

// The fallback of llama.cpp's BPE: [\p{P}\$\+<=>\^~\|]+, then the GPT-2
// regex, then \p{N}+, then [0-9][0-9][0-9], each splitting the previous pieces.
void pretokenize_default(const CodepointText& text, size_t begin, size_t end, std::vector<uint32_t>& ends) {
    auto stage = [&](const std::vector<uint32_t>& in, size_t b0, auto match) {
        std::vector<uint32_t> out;
        size_t b = b0;
        for (uint32_t e : in) {
            split_pieces(Piece{text.cp.data(), text.cls.data(), b, e}, out, match);
            b = e;
        }
        return out;
    };
    std::vector<uint32_t> s0{uint32_t(end)};
    auto s1 = stage(s0, begin, [](const Piece& t, size_t p) {
        auto punct = [&](size_t q) {
            if (!t.in(q)) return false;
            const uint32_t c = t.cp[q];
            return (t.cls[q] & 15) == UCAT_P || c == '$' || c == '+' || c == '<' || c == '=' || c == '>' ||
                   c == '^' || c == '~' || c == '|';
        };
        size_t r = p;
        while (punct(r)) ++r;
        return r;
    });
    auto s2 = stage(s1, begin, match_gpt2);
    auto s3 = stage(s2, begin, [](const Piece& t, size_t p) {
        size_t r = p;
        while (t.number(r)) ++r;
        return r;
    });
    auto s4 = stage(s3, begin, [](const Piece& t, size_t p) {
        auto digit = [&](size_t q) { return t.in(q) && t.cp[q] >= '0' && t.cp[q] <= '9'; };
        return digit(p) && digit(p + 1) && digit(p + 2) ? p + 3 : p;
    });
    ends.insert(ends.end(), s4.begin(), s4.end());
}

} // namespace

void pretokenize(PreType type, const CodepointText& text, size_t begin, size_t end, std::vector<uint32_t>& ends) {
    const Piece t{text.cp.data(), text.cls.data(), begin, end};
    size_t (*match)(const Piece&, size_t) = nullptr;
    switch (type) {
        case PreType::GPT2: match = match_gpt2; break;
        case PreType::LLAMA3: match = match_llama3; break;
        case PreType::GPT4O: match = match_gpt4o; break;
        case PreType::DEFAULT: pretokenize_default(text, begin, end, ends); return;
    }
    // These regexes match at every position, so the words are just the matches.
    for (size_t p = begin; p < end;) {
        size_t r = match(t, p);
        if (r <= p) r = p + 1;  // defensive: never stall
        ends.push_back(uint32_t(r));
        p = r;
    }
}

} // namespace phi::tok
