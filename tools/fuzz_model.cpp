// Fuzz target for loading a model and its tokenizer from a GGUF's metadata
// and tensor table (config, shapes, vocab, scores, token types, merges,
// special-token ids). Seeds are complete tiny models (tools/fuzz_seeds/model/),
// so mutations reach the loaders, not only the reader. Any input must either
// load or throw phi::Error; what loads must then run: a forward pass over the
// first, middle and last token ids, an out-of-range id refused with the cache
// unchanged, and the tokenizer's round trip over a fixed text.
//
// Built and run by tools/fuzz.sh (clang, libFuzzer, ASan + UBSan).
#include <cstdint>
#include <cstdlib>
#include <string>
#include <vector>

#include "core/error.h"
#include "fuzz_memfile.h"
#include "gguf/gguf.h"
#include "model/model.h"
#include "tokenizer/tokenizer.h"

namespace {

void check(bool ok) {
    if (!ok) std::abort();  // a broken promise, not a rejected input
}

void exercise_tokenizer(const phi::Tokenizer& tok) {
    const int32_t n = tok.n_vocab();
    const std::string text = "<|user|>\nab  abc \xC3\xA9\xE2\x96\x81!\xFF<s></s><|end|>\n";
    for (int flags = 0; flags < 4; ++flags) {
        const std::vector<int32_t> ids = tok.tokenize(text, flags & 1, flags & 2);
        for (int32_t id : ids) check(id >= 0 && id < n);
        (void)tok.detokenize(ids.data(), ids.size(), flags & 1, flags & 2);
        phi::StreamDecoder dec(tok, flags & 1);
        for (int32_t id : ids) (void)dec.push(id);
        (void)dec.flush();
    }
    for (int32_t id : tok.eog_ids()) check(id >= 0 && id < n);
    for (int32_t id = 0; id < n && id < 512; ++id) (void)tok.token_to_piece(id, id & 1, id & 2);
}

void exercise_model(phi::Model& m) {
    const int n_vocab = m.n_vocab();
    const int32_t ids[3] = {0, n_vocab / 2, n_vocab - 1};
    std::vector<float> logits(static_cast<size_t>(n_vocab) * 3);
    const int n = m.n_ctx() >= 3 ? 3 : 1;
    m.eval(ids, n, logits.data(), true);
    check(m.n_past() == n);
    const int32_t bad[2] = {0, n_vocab};
    try {
        m.eval(bad, 2, logits.data(), false);
        std::abort();  // an id past the vocab must be refused
    } catch (const phi::Error& e) {
        check(e.kind() == phi::ErrorKind::invalid_arg || e.kind() == phi::ErrorKind::context);
    }
    check(m.n_past() == n);  // and leave the cache as it was
    m.truncate(0);
    m.eval(ids + 2, 1, logits.data(), false);
}

} // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
    fuzz::write_memfile(data, size);
    try {
        const auto f = phi::gguf::File::open(fuzz::memfile_path());
        exercise_tokenizer(*phi::Tokenizer::from_gguf(*f));
    } catch (const phi::Error&) {
        // rejected metadata: the expected outcome for most mutations
    }
    try {
        phi::ModelParams p;
        p.n_threads = 1;
        p.n_batch = 8;  // prefill runs in chunks, as in a long prompt
        exercise_model(*phi::Model::load(fuzz::memfile_path(), p));
    } catch (const phi::Error&) {
    }
    return 0;
}
