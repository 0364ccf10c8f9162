// llamacpp-logits: llama.cpp's logits for a token sequence, for parity tests.
//
// Our own small program against llama.cpp's public C API (llama.h). It is
// compiled by tools/llamacpp.sh in the scratch build, against the scratch
// libllama; phicpp itself never links to llama.cpp.
//
// usage: llamacpp-logits -m MODEL.gguf (--tokens 1,2,3 | --text "...")
//            [--add-special] [--parse-special] [-t THREADS] [--ctx N]
//            [--step] [--fa on|off|auto] [--npy OUT.npy] [--top K]
//
//   --tokens     token ids, comma separated (evaluated as given; no BOS added)
//   --text       text tokenized by llama.cpp (add_special / parse_special as
//                flagged, both off by default); the ids are printed
//   --step       feed the tokens one at a time (the decode path) instead of as
//                one batch (the prompt path): the two use different kernels, so
//                parity should be checked on both
//   --npy        write every position's logits as float32 [n_tokens, n_vocab]
//   --top        print the K largest logits per position (default 5)
// stdout: "tokens: ..." then one line per position "pos P tok T: id:logit ...".
// Default flash attention is off: the plain attention path is the reference.
#include "llama.h"

#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <numeric>
#include <string>
#include <vector>

static void usage() {
    std::fprintf(stderr,
        "usage: llamacpp-logits -m MODEL.gguf (--tokens 1,2,3 | --text TEXT) [--add-special] "
        "[--parse-special] [-t THREADS] [--ctx N] [--step] [--fa on|off|auto] [--npy OUT.npy] [--top K]\n");
    std::exit(2);
}

static void quiet_log(ggml_log_level level, const char* text, void*) {
    if (level >= GGML_LOG_LEVEL_WARN) std::fputs(text, stderr);
}

// .npy v1.0 with a float32 C-order array of the given shape.
static bool write_npy(const std::string& path, const std::vector<float>& data, size_t rows, size_t cols) {
    std::string header = "{'descr': '<f4', 'fortran_order': False, 'shape': (" + std::to_string(rows) +
                         ", " + std::to_string(cols) + "), }";
    // magic(6) + version(2) + header_len(2) + header, padded with spaces and a
    // final newline to a multiple of 64 bytes.
    size_t total = 10 + header.size() + 1;
    header.append((64 - total % 64) % 64, ' ');
    header.push_back('\n');
    FILE* f = std::fopen(path.c_str(), "wb");
    if (!f) return false;
    const unsigned char magic[8] = {0x93, 'N', 'U', 'M', 'P', 'Y', 1, 0};
    uint16_t hlen = (uint16_t)header.size();
    unsigned char hl[2] = {(unsigned char)(hlen & 0xff), (unsigned char)(hlen >> 8)};
    bool ok = std::fwrite(magic, 1, 8, f) == 8 && std::fwrite(hl, 1, 2, f) == 2 &&
              std::fwrite(header.data(), 1, header.size(), f) == header.size() &&
              std::fwrite(data.data(), sizeof(float), data.size(), f) == data.size();
    return std::fclose(f) == 0 && ok;
}

int main(int argc, char** argv) {
    std::string model_path, tokens_arg, text, npy, fa = "off";
    bool have_text = false, add_special = false, parse_special = false, step = false;
    int threads = 2, n_ctx = 0, top = 5;
    for (int i = 1; i < argc; i++) {
        std::string a = argv[i];
        auto next = [&]() -> std::string { if (i + 1 >= argc) usage(); return argv[++i]; };
        if (a == "-m") model_path = next();
        else if (a == "--tokens") tokens_arg = next();
        else if (a == "--text") { text = next(); have_text = true; }
        else if (a == "--add-special") add_special = true;
        else if (a == "--parse-special") parse_special = true;
        else if (a == "-t") threads = std::atoi(next().c_str());
        else if (a == "--ctx") n_ctx = std::atoi(next().c_str());
        else if (a == "--step") step = true;
        else if (a == "--fa") fa = next();
        else if (a == "--npy") npy = next();
        else if (a == "--top") top = std::atoi(next().c_str());
        else usage();
    }
    if (model_path.empty() || (tokens_arg.empty() == !have_text)) usage();

    llama_log_set(quiet_log, nullptr);
    llama_backend_init();
    llama_model_params mp = llama_model_default_params();
    mp.n_gpu_layers = 0;
    llama_model* model = llama_model_load_from_file(model_path.c_str(), mp);
    if (!model) { std::fprintf(stderr, "failed to load %s\n", model_path.c_str()); return 1; }
    const llama_vocab* vocab = llama_model_get_vocab(model);
    const int n_vocab = llama_vocab_n_tokens(vocab);

    std::vector<llama_token> toks;
    if (have_text) {
        int n = -llama_tokenize(vocab, text.data(), (int32_t)text.size(), nullptr, 0, add_special, parse_special);
        toks.resize(std::max(n, 0));
        if (n > 0 && llama_tokenize(vocab, text.data(), (int32_t)text.size(), toks.data(), n, add_special,
                                    parse_special) != n) {
            std::fprintf(stderr, "tokenize failed\n");
            return 1;
        }
    } else {
        for (const char* p = tokens_arg.c_str(); *p;) {
            char* end;
            long v = std::strtol(p, &end, 10);
            if (end == p || v < 0 || v >= n_vocab) { std::fprintf(stderr, "bad token list\n"); return 2; }
            toks.push_back((llama_token)v);
            p = *end == ',' ? end + 1 : end;
        }
    }
    if (toks.empty()) { std::fprintf(stderr, "no tokens\n"); return 2; }
    const int n = (int)toks.size();

    llama_context_params cp = llama_context_default_params();
    cp.n_ctx = n_ctx > 0 ? (uint32_t)n_ctx : (uint32_t)std::max(n, 64);
    cp.n_batch = cp.n_ubatch = (uint32_t)std::max(n, 1);
    cp.n_threads = cp.n_threads_batch = threads;
    cp.flash_attn_type = fa == "on" ? LLAMA_FLASH_ATTN_TYPE_ENABLED
                       : fa == "auto" ? LLAMA_FLASH_ATTN_TYPE_AUTO : LLAMA_FLASH_ATTN_TYPE_DISABLED;
    llama_context* ctx = llama_init_from_model(model, cp);
    if (!ctx) { std::fprintf(stderr, "failed to create context\n"); return 1; }

    std::vector<float> all((size_t)n * n_vocab);
    llama_batch batch = llama_batch_init(n, 0, 1);
    // One batch of all tokens (every position outputs logits), or n batches
    // of one token each.
    const int chunk = step ? 1 : n;
    for (int start = 0; start < n; start += chunk) {
        batch.n_tokens = chunk;
        for (int j = 0; j < chunk; j++) {
            batch.token[j] = toks[start + j];
            batch.pos[j] = start + j;
            batch.n_seq_id[j] = 1;
            batch.seq_id[j][0] = 0;
            batch.logits[j] = 1;
        }
        if (llama_decode(ctx, batch) != 0) { std::fprintf(stderr, "llama_decode failed\n"); return 1; }
        for (int j = 0; j < chunk; j++) {
            const float* lg = llama_get_logits_ith(ctx, j);
            std::memcpy(&all[(size_t)(start + j) * n_vocab], lg, sizeof(float) * n_vocab);
        }
    }

    std::printf("tokens:");
    for (llama_token t : toks) std::printf(" %d", t);
    std::printf("\nn_vocab: %d\n", n_vocab);
    std::vector<int> idx(n_vocab);
    for (int p = 0; p < n; p++) {
        const float* lg = &all[(size_t)p * n_vocab];
        std::iota(idx.begin(), idx.end(), 0);
        int k = std::min(top, n_vocab);
        std::partial_sort(idx.begin(), idx.begin() + k, idx.end(), [&](int a, int b) { return lg[a] > lg[b]; });
        std::printf("pos %d tok %d:", p, toks[p]);
        for (int j = 0; j < k; j++) std::printf(" %d:%.6f", idx[j], lg[idx[j]]);
        std::printf("\n");
    }
    if (!npy.empty() && !write_npy(npy, all, n, n_vocab)) {
        std::fprintf(stderr, "failed to write %s\n", npy.c_str());
        return 1;
    }
    llama_batch_free(batch);
    llama_free(ctx);
    llama_model_free(model);
    llama_backend_free();
    return 0;
}
