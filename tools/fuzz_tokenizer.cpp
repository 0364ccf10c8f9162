// Fuzz target for tokenize/detokenize of arbitrary bytes, for each tokenizer
// kind: SentencePiece (Phi-3's vocab) and byte-level BPE under the gpt-2
// (Phi-1/1.5/2), cl100k-style (Phi-4) and o200k-style (Phi-4-mini)
// pre-tokenizers. The vocab files are read once from $PHICPP_FUZZ_VOCABS
// (tools/make_fuzz_seeds.py vocabs DIR writes them; tools/fuzz.sh does).
//
// Input: byte 0 picks the tokenizer (bits 0-1) and the flags (bits 2-5:
// add_special, parse_special, remove_special, unparse_special); the rest is
// the text. Checked beyond "no crash": every id is in range; the streaming
// decoder's output is valid UTF-8; byte-level BPE is lossless on valid UTF-8
// (the pieces of the ids, concatenated, are the text) when special tokens are
// not parsed; the detokenizer takes arbitrary ids (bytes of the text read as
// int32) and refuses out-of-range ones with invalid_arg.
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "core/error.h"
#include "gguf/gguf.h"
#include "tokenizer/tokenizer.h"
#include "tokenizer/unicode.h"

namespace {

std::vector<std::unique_ptr<phi::Tokenizer>>& tokenizers() {
    static std::vector<std::unique_ptr<phi::Tokenizer>> t;
    return t;
}

void check(bool ok) {
    if (!ok) std::abort();
}

bool valid_utf8(std::string_view s) {
    std::string clean;
    phi::tok::append_utf8_sanitized(clean, s);  // replaces every ill-formed sequence with U+FFFD
    return clean == s;
}

} // namespace

extern "C" int LLVMFuzzerInitialize(int*, char***) {
    const char* dir = std::getenv("PHICPP_FUZZ_VOCABS");
    const std::string d = dir ? dir : "build/fuzz-vocabs";
    for (const char* name : {"spm-phi3.gguf", "bpe-gpt2.gguf", "bpe-cl100k.gguf", "bpe-o200k.gguf"}) {
        try {
            const auto f = phi::gguf::File::open(d + "/" + name);
            tokenizers().push_back(phi::Tokenizer::from_gguf(*f));
        } catch (const phi::Error& e) {
            std::fprintf(stderr, "fuzz_tokenizer: %s (run tools/make_fuzz_seeds.py vocabs %s)\n", e.what(), d.c_str());
            std::exit(2);
        }
    }
    return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
    if (size == 0) return 0;
    const phi::Tokenizer& tok = *tokenizers()[data[0] % 4];
    const bool add_special = data[0] & 4, parse_special = data[0] & 8;
    const bool remove_special = data[0] & 16, unparse_special = data[0] & 32;
    const std::string_view text(reinterpret_cast<const char*>(data + 1), size - 1);
    const int32_t n_vocab = tok.n_vocab();

    const std::vector<int32_t> ids = tok.tokenize(text, add_special, parse_special);
    for (int32_t id : ids) check(id >= 0 && id < n_vocab);
    if (text.empty() && !add_special) check(ids.empty());

    (void)tok.detokenize(ids.data(), ids.size(), remove_special, unparse_special);
    phi::StreamDecoder dec(tok, unparse_special);
    std::string streamed;
    for (int32_t id : ids) streamed += dec.push(id);
    streamed += dec.flush();
    check(valid_utf8(streamed));

    if (tok.kind() == phi::Tokenizer::Kind::BPE && !add_special && !parse_special && valid_utf8(text)) {
        std::string pieces;
        for (int32_t id : ids) pieces += tok.token_to_piece(id, true);
        check(pieces == text);
    }

    // arbitrary ids: in range they detokenize, out of range they are refused
    std::vector<int32_t> raw((size - 1) / 4);
    if (!raw.empty()) std::memcpy(raw.data(), data + 1, raw.size() * 4);
    bool in_range = true;
    for (int32_t id : raw) in_range = in_range && id >= 0 && id < n_vocab;
    try {
        (void)tok.detokenize(raw.data(), raw.size(), remove_special, unparse_special);
        check(in_range);
    } catch (const phi::Error& e) {
        check(!in_range && e.kind() == phi::ErrorKind::invalid_arg);
    }
    return 0;
}
