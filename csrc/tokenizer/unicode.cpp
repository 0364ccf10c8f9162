#include "tokenizer/unicode.h"

#include <array>
#include <memory>

namespace phi::tok {

namespace {
#include "tokenizer/unicode_tables.inc"

// One byte per code point, expanded once from the range table (1.1 MB): the
// pre-tokenizer asks for every character, so a load beats a binary search.
const uint8_t* class_table() {
    static const std::unique_ptr<uint8_t[]> table = [] {
        std::unique_ptr<uint8_t[]> t(new uint8_t[0x110000]);
        for (uint32_t i = 0; i < kUnicodeRangeCount; ++i) {
            uint32_t end = i + 1 < kUnicodeRangeCount ? kUnicodeRanges[i + 1].first : 0x110000;
            for (uint32_t cp = kUnicodeRanges[i].first; cp < end; ++cp) t[cp] = kUnicodeRanges[i].code;
        }
        return t;
    }();
    return table.get();
}

struct ByteMap {
    std::array<uint32_t, 256> to_cp{};
    std::array<int16_t, 324> to_byte{};  // stand-ins are all below 256 + 68
    ByteMap() {
        to_byte.fill(-1);
        int n = 0;
        for (int b = 0; b < 256; ++b) {
            bool printable = (b >= 0x21 && b <= 0x7E) || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE && b <= 0xFF);
            to_cp[b] = printable ? uint32_t(b) : uint32_t(256 + n++);
            to_byte[to_cp[b]] = int16_t(b);
        }
    }
};
const ByteMap& byte_map() {
    static const ByteMap m;
    return m;
}
} // namespace

uint8_t ucat(uint32_t cp) { return cp < 0x110000 ? class_table()[cp] : uint8_t(UCAT_OTHER); }

uint32_t decode_utf8_lenient(std::string_view s, size_t* pos) {
    const size_t i = *pos, n = s.size();
    const uint8_t c0 = uint8_t(s[i]);
    auto cont = [&](size_t k) { return i + k < n && (uint8_t(s[i + k]) & 0xC0) == 0x80; };
    if (c0 < 0x80) { *pos = i + 1; return c0; }
    if ((c0 & 0x40) == 0) { *pos = i + 1; return 0xFFFD; }  // stray continuation byte
    if ((c0 & 0x20) == 0) {
        if (!cont(1)) { *pos = i + 1; return 0xFFFD; }
        *pos = i + 2;
        return (uint32_t(c0 & 0x1F) << 6) | (uint8_t(s[i + 1]) & 0x3F);
    }
    if ((c0 & 0x10) == 0) {
        if (!cont(1) || !cont(2)) { *pos = i + 1; return 0xFFFD; }
        *pos = i + 3;
        return (uint32_t(c0 & 0x0F) << 12) | (uint32_t(uint8_t(s[i + 1]) & 0x3F) << 6) | (uint8_t(s[i + 2]) & 0x3F);
    }
    if ((c0 & 0x08) == 0) {
        if (!cont(1) || !cont(2) || !cont(3)) { *pos = i + 1; return 0xFFFD; }
        *pos = i + 4;
        return (uint32_t(c0 & 0x07) << 18) | (uint32_t(uint8_t(s[i + 1]) & 0x3F) << 12) |
               (uint32_t(uint8_t(s[i + 2]) & 0x3F) << 6) | (uint8_t(s[i + 3]) & 0x3F);
    }
    *pos = i + 1;
    return 0xFFFD;
}

void append_utf8(std::string& out, uint32_t cp) {
    if (cp < 0x80) {
        out.push_back(char(cp));
    } else if (cp < 0x800) {
        out.push_back(char(0xC0 | (cp >> 6)));
        out.push_back(char(0x80 | (cp & 0x3F)));
    } else if (cp < 0x10000) {
        out.push_back(char(0xE0 | (cp >> 12)));
        out.push_back(char(0x80 | ((cp >> 6) & 0x3F)));
        out.push_back(char(0x80 | (cp & 0x3F)));
    } else {
        out.push_back(char(0xF0 | (cp >> 18)));
        out.push_back(char(0x80 | ((cp >> 12) & 0x3F)));
        out.push_back(char(0x80 | ((cp >> 6) & 0x3F)));
        out.push_back(char(0x80 | (cp & 0x3F)));
    }
}

namespace {
// Length of the well-formed sequence at s[i] (Unicode Table 3-7), or 0 when
// it is ill-formed; *maximal gets the length of its maximal valid subpart
// (>= 1), and *truncated says the input ended inside an otherwise valid one.
size_t wellformed_at(std::string_view s, size_t i, size_t* maximal, bool* truncated) {
    const size_t n = s.size();
    const uint8_t c0 = uint8_t(s[i]);
    *truncated = false;
    *maximal = 1;
    if (c0 < 0x80) return 1;
    size_t need;
    uint8_t lo = 0x80, hi = 0xBF;  // allowed range of the second byte
    if (c0 >= 0xC2 && c0 <= 0xDF) need = 2;
    else if (c0 >= 0xE0 && c0 <= 0xEF) {
        need = 3;
        if (c0 == 0xE0) lo = 0xA0;
        if (c0 == 0xED) hi = 0x9F;
    } else if (c0 >= 0xF0 && c0 <= 0xF4) {
        need = 4;
        if (c0 == 0xF0) lo = 0x90;
        if (c0 == 0xF4) hi = 0x8F;
    } else {
        return 0;
    }
    for (size_t k = 1; k < need; ++k) {
        if (i + k >= n) { *truncated = true; *maximal = k; return 0; }
        const uint8_t c = uint8_t(s[i + k]);
        const bool ok = k == 1 ? (c >= lo && c <= hi) : (c >= 0x80 && c <= 0xBF);
        if (!ok) { *maximal = k; return 0; }
    }
    return need;
}
} // namespace

size_t utf8_complete_prefix(std::string_view s, size_t* pending) {
    size_t i = 0;
    *pending = 0;
    while (i < s.size()) {
        size_t maximal;
        bool truncated;
        const size_t len = wellformed_at(s, i, &maximal, &truncated);
        if (len) { i += len; continue; }
        if (truncated) { *pending = s.size() - i; return i; }
        i += maximal;  // ill-formed: it is complete (as garbage) and goes out
    }
    return i;
}

void append_utf8_sanitized(std::string& out, std::string_view s) {
    size_t i = 0;
    while (i < s.size()) {
        size_t maximal;
        bool truncated;
        const size_t len = wellformed_at(s, i, &maximal, &truncated);
        if (len) {
            out.append(s.data() + i, len);
            i += len;
        } else {
            out.append("\xEF\xBF\xBD");
            i += maximal;
        }
    }
}

uint32_t byte_to_unicode(uint8_t b) { return byte_map().to_cp[b]; }

int unicode_to_byte(uint32_t cp) {
    return cp < byte_map().to_byte.size() ? byte_map().to_byte[cp] : -1;
}

} // namespace phi::tok
