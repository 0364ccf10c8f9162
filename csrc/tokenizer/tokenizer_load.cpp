// Tokenizer::from_gguf: reading tokenizer.ggml.* and deriving the special
// tokens exactly as llama.cpp's llama_vocab::impl::load does (defaults per
// model, metadata overrides, end-of-generation tokens recognised by text).
#include <algorithm>
#include <cctype>
#include <cstdio>

#include "core/error.h"
#include "gguf/gguf.h"
#include "tokenizer/tokenizer.h"
#include "tokenizer/unicode.h"

namespace phi {

namespace {

// GGUF token types (llama_token_type) -> attribute bits.
uint32_t attr_from_type(int64_t type) {
    switch (type) {
        case 1: return TOKEN_ATTR_NORMAL;
        case 2: return TOKEN_ATTR_UNKNOWN;
        case 3: return TOKEN_ATTR_CONTROL;
        case 4: return TOKEN_ATTR_USER_DEFINED;
        case 5: return TOKEN_ATTR_UNUSED;
        case 6: return TOKEN_ATTR_BYTE;
        default: return TOKEN_ATTR_UNDEFINED;
    }
}

struct PreInfo {
    tok::PreType type;
    bool ignore_merges = false;
    bool add_bos = false;        // forced on (before the metadata override)
};

// tokenizer.ggml.pre names llama.cpp maps onto the regexes we implement.
bool lookup_pre(const std::string& pre, PreInfo* info) {
    static const char* gpt2[] = {"gpt-2", "phi-2", "mpt", "olmo", "jais", "trillion", "exaone4",
                                 "jina-es", "jina-de", "jina-v2-es", "jina-v2-de", "gigachat",
                                 "a.x-4.0", "mellum", "modern-bert"};
    static const char* llama3[] = {"llama3", "llama-v3", "llama-bpe", "falcon3", "falcon-h1", "pixtral",
                                   "midm-2.0", "lfm2"};
    if (pre.empty() || pre == "default") { *info = {tok::PreType::DEFAULT}; return true; }
    for (const char* n : gpt2)
        if (pre == n) { *info = {tok::PreType::GPT2}; return true; }
    for (const char* n : llama3)
        if (pre == n) { *info = {tok::PreType::LLAMA3, true, true}; return true; }
    if (pre == "dbrx" || pre == "smaug-bpe") { *info = {tok::PreType::LLAMA3}; return true; }
    if (pre == "gpt-4o" || pre == "llama4") { *info = {tok::PreType::GPT4O, false, false}; return true; }
    return false;
}

std::string lower(std::string s) {
    for (char& c : s) c = char(std::tolower(static_cast<unsigned char>(c)));
    return s;
}

} // namespace

std::unique_ptr<Tokenizer> Tokenizer::from_gguf(const gguf::File& file) {
    std::unique_ptr<Tokenizer> t(new Tokenizer());
    const std::string& path = file.path();
    t->model_ = file.get_string("tokenizer.ggml.model");
    t->pre_ = file.opt_string("tokenizer.ggml.pre").value_or("");

    const auto tokens = file.get_str_array("tokenizer.ggml.tokens");
    if (tokens.empty())
        fail(ErrorKind::format, "GGUF file '", path, "': no tokenizer.ggml.tokens");
    const size_t n = tokens.size();

    if (t->model_ == "llama") {
        t->kind_ = Kind::SPM;
        t->bos_ = 1; t->eos_ = 2; t->unk_ = 0;
        t->add_space_prefix_ = true;
        t->add_bos_ = true;
        t->add_eos_ = false;
    } else if (t->model_ == "gpt2") {
        t->kind_ = Kind::BPE;
        t->bos_ = 11; t->eos_ = 11;
        PreInfo info{};
        if (!lookup_pre(t->pre_, &info))
            fail(ErrorKind::unsupported, "GGUF file '", path, "': unsupported pre-tokenizer tokenizer.ggml.pre = '",
                 t->pre_, "'");
        t->pre_type_ = info.type;
        t->ignore_merges_ = info.ignore_merges;
        t->add_bos_ = info.add_bos;
        t->add_space_prefix_ = false;
    } else {
        fail(ErrorKind::unsupported, "GGUF file '", path, "': unsupported tokenizer model tokenizer.ggml.model = '",
             t->model_, "' (supported: llama, gpt2)");
    }
    if (auto v = file.opt_bool("tokenizer.ggml.add_space_prefix")) t->add_space_prefix_ = *v;

    // vocabulary
    const auto scores = file.get_f32_array("tokenizer.ggml.scores");
    const auto types = file.get_int_array("tokenizer.ggml.token_type");
    if (!scores.empty() && scores.size() < n)
        fail(ErrorKind::format, "GGUF file '", path, "': tokenizer.ggml.scores has ", scores.size(),
             " entries for ", n, " tokens");
    if (!types.empty() && types.size() < n)
        fail(ErrorKind::format, "GGUF file '", path, "': tokenizer.ggml.token_type has ", types.size(),
             " entries for ", n, " tokens");
    t->score_.assign(n, 0.0f);
    t->attr_.assign(n, TOKEN_ATTR_NORMAL);
    for (size_t i = 0; i < n; ++i) {
        std::string word(tokens[i]);
        if (word.empty()) word = "[EMPTY_" + std::to_string(i) + "]";  // as llama.cpp
        if (!t->vocab_.add(word))
            fail(ErrorKind::format, "GGUF file '", path, "': tokenizer.ggml.tokens has a duplicate token '", word,
                 "' (id ", i, ")");
        if (!scores.empty()) t->score_[i] = scores[i];
        if (!types.empty()) t->attr_[i] = attr_from_type(types[i]);
    }

    // byte tokens: SPM's <0xXX> (or the raw byte), BPE's printable stand-in
    for (int b = 0; b < 256; ++b) {
        int32_t id;
        if (t->kind_ == Kind::SPM) {
            char buf[8];
            std::snprintf(buf, sizeof buf, "<0x%02X>", b);
            id = t->vocab_.find(buf);
            if (id < 0) id = t->vocab_.find(std::string(1, char(b)));
        } else {
            std::string s;
            tok::append_utf8(s, tok::byte_to_unicode(uint8_t(b)));
            id = t->vocab_.find(s);
        }
        t->byte_token_[b] = id;
    }

    // BPE merges "left right" -> (left id, right id) -> rank, merged id
    if (t->kind_ == Kind::BPE) {
        const auto merges = file.get_str_array("tokenizer.ggml.merges");
        if (merges.empty() && !file.has("tokenizer.ggml.merges"))
            fail(ErrorKind::format, "GGUF file '", path, "': gpt2 tokenizer without tokenizer.ggml.merges");
        t->merges_.reserve(merges.size());
        std::string joined;
        for (size_t r = 0; r < merges.size(); ++r) {
            const std::string_view m = merges[r];
            const size_t sp = m.find(' ', 1);  // the left part may itself be a space stand-in
            if (sp == std::string_view::npos) continue;
            const std::string_view a = m.substr(0, sp), b = m.substr(sp + 1);
            const int32_t ia = t->vocab_.find(a), ib = t->vocab_.find(b);
            joined.assign(a.data(), a.size());
            joined.append(b.data(), b.size());
            const int32_t im = t->vocab_.find(joined);
            // A merge whose parts or result are not tokens can never apply to
            // token-valued symbols; llama.cpp would fall back to bytes there.
            if (ia < 0 || ib < 0 || im < 0) continue;
            t->merges_.add(ia, ib, tok::MergeInfo{int32_t(r), im});
        }
    }

    t->finish_load(file);
    return t;
}

void Tokenizer::finish_load(const gguf::File& file) {
    const int32_t n = n_vocab();
    auto valid = [&](int32_t id) { return id >= 0 && id < n; };

    // special ids: defaults out of range are disabled; metadata overrides
    // (an out-of-range override keeps the default, as llama.cpp warns and does)
    struct Key { const char* key; int32_t* id; };
    const Key keys[] = {
        {"tokenizer.ggml.bos_token_id", &bos_}, {"tokenizer.ggml.eos_token_id", &eos_},
        {"tokenizer.ggml.eot_token_id", &eot_}, {"tokenizer.ggml.eom_token_id", &eom_},
        {"tokenizer.ggml.unknown_token_id", &unk_}, {"tokenizer.ggml.seperator_token_id", &sep_},
        {"tokenizer.ggml.padding_token_id", &pad_}, {"tokenizer.ggml.mask_token_id", &mask_},
        {"tokenizer.ggml.fim_pad_token_id", &fim_pad_}, {"tokenizer.ggml.fim_rep_token_id", &fim_rep_},
        {"tokenizer.ggml.fim_sep_token_id", &fim_sep_},
    };
    for (const Key& k : keys) {
        if (!valid(*k.id)) *k.id = -1;
        if (auto v = file.opt_int(k.key))
            if (*v >= 0 && *v < n) *k.id = int32_t(*v);
    }
    if (auto v = file.opt_bool("tokenizer.ggml.add_bos_token")) add_bos_ = *v;
    if (auto v = file.opt_bool("tokenizer.ggml.add_eos_token")) add_eos_ = *v;
    if (add_bos_ && bos_ < 0)
        fail(ErrorKind::format, "GGUF file '", file.path(), "': tokenizer.ggml.add_bos_token is true but there is no "
             "BOS token (tokenizer.ggml.bos_token_id)");
    if (add_eos_ && eos_ < 0)
        fail(ErrorKind::format, "GGUF file '", file.path(), "': tokenizer.ggml.add_eos_token is true but there is no "
             "EOS token (tokenizer.ggml.eos_token_id)");

    // Tokens recognised by their text. llama.cpp walks an unordered_map, so
    // when several candidates exist its pick is arbitrary; we take the first
    // in list order (for Phi-3: <|end|> before <|endoftext|>).
    auto find_first = [&](std::initializer_list<const char*> names) -> int32_t {
        for (const char* s : names) {
            const int32_t id = vocab_.find(s);
            if (id >= 0) return id;
        }
        return -1;
    };
    auto make_control = [&](int32_t id) { if (id >= 0) attr_[size_t(id)] |= TOKEN_ATTR_CONTROL; };
    if (eot_ < 0) {
        eot_ = find_first({"<|eot_id|>", "<|im_end|>", "<|end|>", "<end_of_turn>", "<|endoftext|>",
                           "<|end_of_text|>", "<EOT>", "_<EOT>", "[EOT]", "<\xef\xbd\x9c" "end\xe2\x96\x81" "of"
                           "\xe2\x96\x81" "sentence\xef\xbd\x9c>", "<end_of_utterance>"});
        make_control(eot_);
    }
    if (eom_ < 0) {
        eom_ = find_first({"<|eom_id|>"});
        make_control(eom_);
    }
    if (fim_pad_ < 0) { fim_pad_ = find_first({"<|fim_pad|>", "<fim-pad>", "<fim_pad>", "<PAD>", "[PAD]"}); make_control(fim_pad_); }
    if (fim_rep_ < 0) {
        fim_rep_ = find_first({"<|fim_repo|>", "<|repo_name|>", "<fim-repo>", "<REPO>", "<reponame>"});
        make_control(fim_rep_);
    }
    if (fim_sep_ < 0) { fim_sep_ = find_first({"<|file_sep|>"}); make_control(fim_sep_); }

    // control tokens named "unused" are unused
    for (int32_t id = 0; id < n; ++id)
        if ((attr_[size_t(id)] & TOKEN_ATTR_CONTROL) && token_text(id).find("unused") != std::string_view::npos)
            attr_[size_t(id)] |= TOKEN_ATTR_UNUSED;

    // end-of-generation set
    std::vector<int32_t> eog;
    for (int32_t id : {fim_pad_, fim_rep_, fim_sep_})
        if (id >= 0) eog.push_back(id);
    static const char* eog_names[] = {
        "<|eot_id|>", "<|im_end|>", "<|end|>", "<|return|>", "<|call|>", "<|flush|>", "<|calls|>",
        "<end_of_turn>", "<|endoftext|>", "</s>", "<|eom_id|>", "<EOT>", "_<EOT>", "[EOT]", "[EOS]",
        "<|end_of_text|>", "<end_of_utterance>", "<eos>", "<turn|>", "<|tool_response>",
        "<\xef\xbd\x9c" "end\xe2\x96\x81" "of\xe2\x96\x81" "sentence\xef\xbd\x9c>", "[e~["};
    for (const char* s : eog_names) {
        const int32_t id = vocab_.find(s);
        if (id < 0) continue;
        eog.push_back(id);
        make_control(id);
    }
    for (int32_t id : {eos_, eot_, eom_})
        if (id >= 0) eog.push_back(id);
    std::sort(eog.begin(), eog.end());
    eog.erase(std::unique(eog.begin(), eog.end()), eog.end());
    // o200k_harmony: with <|return|> and <|call|> present, <|end|> is not EOG
    {
        const int32_t ret = vocab_.find("<|return|>"), call = vocab_.find("<|call|>"), calls = vocab_.find("<|calls|>"),
                      flush = vocab_.find("<|flush|>"), end = vocab_.find("<|end|>");
        if (end >= 0 && ((ret >= 0 && call >= 0) || (calls >= 0 && flush >= 0))) {
            eog.erase(std::remove(eog.begin(), eog.end(), end), eog.end());
            attr_[size_t(end)] = TOKEN_ATTR_USER_DEFINED;
        }
    }
    eog_ = std::move(eog);

    // special tokens, longest text first (ties by id, for determinism)
    for (int32_t id = 0; id < n; ++id)
        if (attr_[size_t(id)] & (TOKEN_ATTR_CONTROL | TOKEN_ATTR_USER_DEFINED | TOKEN_ATTR_UNKNOWN))
            special_.push_back(id);
    std::stable_sort(special_.begin(), special_.end(),
                     [&](int32_t a, int32_t b) { return token_text(a).size() > token_text(b).size(); });

    // pieces, computed once (llama.cpp's cache_token_to_piece, special=true)
    piece_.resize(size_t(n));
    for (int32_t id = 0; id < n; ++id) {
        const uint32_t a = attr_[size_t(id)];
        const std::string_view text = token_text(id);
        std::string& p = piece_[size_t(id)];
        if (a & (TOKEN_ATTR_UNKNOWN | TOKEN_ATTR_CONTROL | TOKEN_ATTR_USER_DEFINED)) {
            p.assign(text);
        } else if (a & TOKEN_ATTR_NORMAL) {
            if (kind_ == Kind::SPM) {
                // U+2581 -> space
                for (size_t i = 0; i < text.size(); ++i) {
                    if (text.compare(i, 3, "\xE2\x96\x81") == 0) { p.push_back(' '); i += 2; }
                    else p.push_back(text[i]);
                }
            } else {
                // byte-level stand-ins -> bytes
                size_t pos = 0;
                while (pos < text.size()) {
                    const size_t start = pos;
                    const uint32_t cp = tok::decode_utf8_lenient(text, &pos);
                    const int b = tok::unicode_to_byte(cp);
                    if (b >= 0) {
                        p.push_back(char(b));
                    } else {  // as llama_decode_text
                        p += "[UNK_BYTE_0x";
                        char hex[4];
                        for (size_t k = start; k < pos; ++k) {
                            std::snprintf(hex, sizeof hex, "%02x", unsigned(uint8_t(text[k])));
                            p += hex;
                        }
                        p.append(text);
                        p += "]";
                    }
                }
            }
        } else if (a & TOKEN_ATTR_BYTE) {
            // <0xXX>
            unsigned v = 0;
            if (text.size() >= 5) v = unsigned(std::strtoul(std::string(text.substr(3, 2)).c_str(), nullptr, 16));
            p.push_back(char(v));
        }
        // unused / undefined tokens: empty, as llama.cpp
    }

    // Whitespace after Phi-3's special tokens is stripped (their tokenizer.json
    // marks them rstrip). llama.cpp keys this on the model name alone, which
    // misses files named "Phi 3.5 ..."; the Phi-3 family's SentencePiece vocab
    // under its architectures gets it too.
    const std::string name = lower(file.opt_string("general.name").value_or(""));
    const std::string arch = file.opt_string("general.architecture").value_or("");
    const bool phi3_spm = kind_ == Kind::SPM && (arch == "phi3" || arch == "phimoe");
    if (phi3_spm || name.find("phi-3") != std::string::npos || name.find("phi3") != std::string::npos) {
        for (int32_t id : special_) attr_[size_t(id)] |= TOKEN_ATTR_RSTRIP;
        for (const char* s : {"</s>"}) {
            const int32_t id = vocab_.find(s);
            if (id >= 0) attr_[size_t(id)] |= TOKEN_ATTR_RSTRIP;
        }
        for (const char* s : {"<unk>", "<s>", "<|endoftext|>"}) {
            const int32_t id = vocab_.find(s);
            if (id >= 0) attr_[size_t(id)] &= ~uint32_t(TOKEN_ATTR_RSTRIP);
        }
    }

    if (kind_ == Kind::SPM) {
        spm_split_words_ = true;
        for (int32_t id = 0; id < n && spm_split_words_; ++id) {
            const std::string_view t = token_text(id);
            for (size_t p = t.find("\xE2\x96\x81", 1); p != std::string_view::npos; p = t.find("\xE2\x96\x81", p + 1))
                if (p < 3 || t.compare(p - 3, 3, "\xE2\x96\x81") != 0) { spm_split_words_ = false; break; }
        }
    }

    // newline token
    if (kind_ == Kind::SPM) {
        nl_ = byte_token_[uint8_t('\n')];
        if (nl_ < 0) nl_ = pad_;
    } else {
        std::vector<int32_t> ids = tokenize("\n", false, false);
        nl_ = ids.empty() ? pad_ : ids[0];
    }
}

} // namespace phi
