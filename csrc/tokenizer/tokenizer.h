// Tokenizers built from a GGUF's tokenizer.ggml.* metadata, reproducing
// llama.cpp (src/llama-vocab.cpp) token for token where it follows the
// Hugging Face tokenizer, and the Hugging Face tokenizer where it does not
// (o200k's regex, which llama.cpp approximates; Unicode whitespace stripped
// beside special tokens; Phi-3's stripping whatever the model's name), with
// no sentencepiece or HF tokenizers at run time:
//   "llama" model -> SentencePiece BPE (score-driven bigram merges, byte fallback)
//   "gpt2" model  -> byte-level BPE (merge ranks) behind the pre-tokenizer
//                    named by tokenizer.ggml.pre (gpt-2, cl100k-style, o200k-style)
// Special (control / user-defined) tokens are split out first, as llama.cpp's
// tokenizer_st_partition does. A Tokenizer owns copies of everything it needs,
// so the gguf::File may be closed after from_gguf(). All methods are const and
// safe to call from several threads at once.
#pragma once
#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "tokenizer/pretokenize.h"
#include "tokenizer/unicode.h"
#include "tokenizer/vocab_maps.h"

namespace phi::gguf { class File; }

namespace phi {

// Token attributes, as llama.cpp's llama_token_attr bit flags.
enum TokenAttr : uint32_t {
    TOKEN_ATTR_UNDEFINED = 0,
    TOKEN_ATTR_UNKNOWN = 1u << 0,
    TOKEN_ATTR_UNUSED = 1u << 1,
    TOKEN_ATTR_NORMAL = 1u << 2,
    TOKEN_ATTR_CONTROL = 1u << 3,
    TOKEN_ATTR_USER_DEFINED = 1u << 4,
    TOKEN_ATTR_BYTE = 1u << 5,
    TOKEN_ATTR_LSTRIP = 1u << 7,
    TOKEN_ATTR_RSTRIP = 1u << 8,
};

class Tokenizer {
public:
    enum class Kind { SPM, BPE };

    // Reads tokenizer.ggml.{model,pre,tokens,scores,token_type,merges,...}.
    // Throws phi::Error: format for missing/malformed keys, unsupported for a
    // tokenizer model or pre-tokenizer we do not implement.
    static std::unique_ptr<Tokenizer> from_gguf(const gguf::File& file);

    // Text -> ids. add_special adds BOS/EOS as the metadata says;
    // parse_special turns control-token text ("<|user|>") into single tokens
    // (user-defined tokens are always split out, as in llama.cpp). Bytes that
    // are not valid UTF-8 are handled as llama.cpp does: SPM keeps them
    // through byte fallback; BPE sees each bad byte as U+FFFD.
    std::vector<int32_t> tokenize(std::string_view text, bool add_special, bool parse_special) const;

    // The bytes a token stands for (llama_token_to_piece): control and
    // unknown tokens give "" unless special; lstrip drops up to that many
    // leading spaces. Throws invalid_arg for an id out of range.
    std::string token_to_piece(int32_t id, bool special = true, int lstrip = 0) const;
    // Appends the piece without copying it first; returns false for a bad id.
    bool append_piece(std::string& out, int32_t id, bool special) const;

    // Ids -> bytes (llama_detokenize): drops the SPM prefix space of the
    // first token and optionally the BOS/EOS; no clean-up of spaces (as
    // transformers decodes BPE vocabs; llama.cpp cleans GPT-2-style ones).
    std::string detokenize(const int32_t* ids, size_t n, bool remove_special = false,
                           bool unparse_special = false) const;

    Kind kind() const { return kind_; }
    const std::string& model_name() const { return model_; }  // tokenizer.ggml.model
    const std::string& pre_name() const { return pre_; }      // tokenizer.ggml.pre
    int32_t n_vocab() const { return int32_t(attr_.size()); }
    std::string_view token_text(int32_t id) const { return vocab_.text(id); }
    float token_score(int32_t id) const { return score_[size_t(id)]; }
    uint32_t token_attr(int32_t id) const { return attr_[size_t(id)]; }
    int32_t text_to_token(std::string_view text) const { return vocab_.find(text); }  // -1 if none

    int32_t bos_id() const { return bos_; }  // -1 when the vocab has none
    int32_t eos_id() const { return eos_; }
    int32_t eot_id() const { return eot_; }
    int32_t eom_id() const { return eom_; }
    int32_t unk_id() const { return unk_; }
    int32_t pad_id() const { return pad_; }
    int32_t sep_id() const { return sep_; }
    int32_t nl_id() const { return nl_; }
    bool add_bos() const { return add_bos_; }
    bool add_eos() const { return add_eos_; }
    bool add_space_prefix() const { return add_space_prefix_; }
    // End-of-generation tokens (EOS, EOT, <|end|>, <|endoftext|>, ...), sorted.
    const std::vector<int32_t>& eog_ids() const { return eog_; }
    bool is_eog(int32_t id) const;

private:
    Tokenizer() = default;

    struct Fragment {
        int32_t token;  // -1: raw text [off, off + len)
        size_t off, len;
    };
    void partition(std::string_view text, bool parse_special, std::vector<Fragment>& out) const;
    void tokenize_spm(std::string_view text, std::vector<int32_t>& out) const;
    void merge_spm_segment(std::string_view text, size_t begin, size_t end, std::vector<int32_t>& out) const;
    void tokenize_bpe(std::string_view text, std::vector<int32_t>& out) const;
    void merge_bpe_word(std::string_view word, std::vector<int32_t>& out) const;
    void finish_load(const gguf::File& file);

    Kind kind_ = Kind::SPM;
    std::string model_, pre_;
    tok::PreType pre_type_ = tok::PreType::DEFAULT;
    tok::StrIdMap vocab_;           // token text <-> id
    std::vector<float> score_;      // SPM merge priorities
    std::vector<uint32_t> attr_;    // TokenAttr bits
    std::vector<std::string> piece_;  // token_to_piece(id, special=true), cached
    tok::PairRankMap merges_;       // BPE: (left id, right id) -> rank, merged id
    int32_t byte_token_[256];       // SPM: <0xXX>; BPE: the byte's stand-in char
    std::vector<int32_t> special_;  // control/user-defined/unknown, longest first
    std::vector<int32_t> eog_;

    int32_t bos_ = -1, eos_ = -1, eot_ = -1, eom_ = -1, unk_ = -1, sep_ = -1, pad_ = -1, mask_ = -1, nl_ = -1;
    int32_t fim_pad_ = -1, fim_rep_ = -1, fim_sep_ = -1;
    bool add_bos_ = false, add_eos_ = false, add_space_prefix_ = false;
    bool ignore_merges_ = false;
    // SPM: no token has U+2581 right after another character, so no merge
    // can span the start of a space run and each word can be merged alone.
    bool spm_split_words_ = false;
};

// Turns a stream of token ids into text that is always whole UTF-8: a
// character split across byte tokens is held back until it completes;
// ill-formed bytes come out as U+FFFD (as Python's errors="replace"). The
// concatenation of push() results and flush() equals
// the pieces' bytes decoded with errors="replace" (detokenize without its
// SPM prefix-space drop).
class StreamDecoder {
public:
    explicit StreamDecoder(const Tokenizer& tok, bool special = false) : tok_(tok), special_(special) {}
    // Text that became complete with this token (may be empty).
    std::string push(int32_t id);
    // Whatever is held back, with an incomplete tail as U+FFFD; then resets.
    std::string flush();
    void reset() { pending_.clear(); }
    size_t pending_bytes() const { return pending_.size(); }

private:
    const Tokenizer& tok_;
    bool special_;
    std::string pending_;
};

} // namespace phi
