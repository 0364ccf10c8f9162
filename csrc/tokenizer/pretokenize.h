// Byte-level BPE pre-tokenizers: the regexes of tokenizer.ggml.pre, written
// out by hand over code point classes. Each follows the regex's
// leftmost-first, greedy-with-backtracking semantics exactly (as Oniguruma or
// Rust's fancy-regex run them in HF tokenizers), including \s+(?!\S) and
// (?i:...) contractions; the comments above each splitter give its regex.
#pragma once
#include <cstddef>
#include <cstdint>
#include <string_view>
#include <vector>

namespace phi::tok {

enum class PreType {
    GPT2,     // gpt-2, phi-2, ...: 's|'t|'re|... ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+
    LLAMA3,   // cl100k (llama3, dbrx = Phi-4, smaug-bpe): contractions (?i), \p{N}{1,3}, \s*[\r\n]+
    GPT4O,    // o200k (gpt-4o = Phi-4-mini, llama4): case-aware words, \p{N}{1,3}, [\r\n/]*
    DEFAULT,  // llama.cpp's fallback: four regexes applied in turn
};

// Text as code points plus their class bytes (see unicode.h), shared by the stages.
struct CodepointText {
    std::vector<uint32_t> cp;
    std::vector<uint8_t> cls;
};

// Appends to `ends` the end index (in code points) of every word of
// text[begin, end), in order; the words tile the range.
void pretokenize(PreType type, const CodepointText& text, size_t begin, size_t end,
                 std::vector<uint32_t>& ends);

} // namespace phi::tok
