// Unicode pieces the tokenizers need: a lenient UTF-8 decoder that behaves
// like llama.cpp's, UTF-8 encoding, per-code-point classes for the
// pre-tokenizer regexes, and GPT-2's byte <-> printable-character mapping.
#pragma once
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace phi::tok {

// General-category classes (low 4 bits of ucat()); see tools/gen_unicode_tables.py.
enum UCat : uint8_t {
    UCAT_OTHER = 0,  // Cc Cf Cs Co Cn
    UCAT_LU = 1, UCAT_LL = 2, UCAT_LT = 3, UCAT_LM = 4, UCAT_LO = 5,
    UCAT_M = 6,      // Mn Mc Me
    UCAT_N = 7,      // Nd Nl No
    UCAT_P = 8, UCAT_S = 9, UCAT_Z = 10,
};
constexpr uint8_t UCAT_WHITESPACE = 0x10;  // the White_Space property (regex \s)

struct UnicodeRange {
    uint32_t first;
    uint8_t code;
};

// Class byte of a code point (class | UCAT_WHITESPACE); OTHER beyond U+10FFFF.
uint8_t ucat(uint32_t cp);

inline bool is_letter(uint8_t c) { uint8_t k = c & 15; return k >= UCAT_LU && k <= UCAT_LO; }
inline bool is_number(uint8_t c) { return (c & 15) == UCAT_N; }
inline bool is_space(uint8_t c) { return (c & UCAT_WHITESPACE) != 0; }
inline bool is_mark(uint8_t c) { return (c & 15) == UCAT_M; }

// Bytes of the UTF-8 sequence a lead byte announces (1 for ASCII and for
// stray continuation bytes), as llama.cpp's unicode_len_utf8: by the top 4 bits.
inline size_t utf8_len(uint8_t lead) {
    static const uint8_t k[16] = {1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 2, 2, 3, 4};
    return k[lead >> 4];
}

// Decodes the code point at s[*pos] and advances *pos. Malformed input gives
// U+FFFD and advances one byte, exactly as llama.cpp's unicode_cpts_from_utf8
// (which checks lead/continuation bit patterns and lengths, nothing more).
uint32_t decode_utf8_lenient(std::string_view s, size_t* pos);

// Appends the UTF-8 encoding of cp (cp <= 0x10FFFF; surrogates encoded as is).
void append_utf8(std::string& out, uint32_t cp);

// Length of the longest prefix of s that is whole, valid UTF-8 sequences
// followed only by an incomplete-but-so-far-valid sequence at the very end;
// that tail's length goes to *pending. Used by the stream decoder.
size_t utf8_complete_prefix(std::string_view s, size_t* pending);

// Appends s to out with every ill-formed subsequence replaced by U+FFFD,
// following the "maximal subpart" practice (as Python's errors="replace").
void append_utf8_sanitized(std::string& out, std::string_view s);

// GPT-2 byte-level mapping: byte -> code point of the printable stand-in,
// and back (-1 for code points that stand for no byte).
uint32_t byte_to_unicode(uint8_t b);
int unicode_to_byte(uint32_t cp);

} // namespace phi::tok
