// What one forward pass over a batch of tokens needs: the backend, the
// weights, the KV cache and scratch buffers sized for the largest batch; and
// the table of architectures, each of which owns its loading, its blocks and
// its output norm.
#pragma once
#include <vector>

#include "backend/backend.h"
#include "model/config.h"
#include "model/weights.h"

namespace phi {

// Activations for up to n_batch tokens, in backend memory.
struct Scratch {
    float* x = nullptr;       // [B, n_embd] residual stream
    float* qkv = nullptr;     // [B, q + 2 kv] fused projections, or q | k | v side by side
    float* attn = nullptr;    // [B, q] attention output before the projection
    float* ffn = nullptr;     // [B, n_ff] the MLP's hidden activations
    float* logits = nullptr;  // [min(B, kLogitRows), n_vocab] output rows, projected a slice at a time
    // mixture of experts only: router scores [B, n_expert], the two picks of
    // each row [2B], and the picked experts' hidden activations [2B, n_ff]
    float* router = nullptr;
    ExpertPick* picks = nullptr;
    float* expert_h = nullptr;
};

// The rows of one sequence in a batch: rows [row0, row0 + n) at positions
// pos.. (relative to the step's pos0), with that sequence's cache per layer
// and its rotary (LongRoPE's factor set depends on the sequence's length).
struct SeqRows {
    const std::vector<KVCache>* kv;
    int row0 = 0, n = 0, pos = 0;
    RopeParams rope;
};

struct ForwardPass {
    Backend& be;
    const ModelConfig& c;
    const Weights& w;
    Scratch& s;
    // one entry: the batch is one sequence's tokens; several: the tokens of
    // several sequences, one after the other
    const std::vector<SeqRows>& seqs;
    int n_tok;  // tokens in this batch (the step's)
    int n_out;  // trailing tokens whose last-layer output is used (logits); the
                // last layer stores every token's K/V but computes only these
};

// Rows of the batch the layer `il` must carry through attention and the MLP.
inline int rows_needed(const ForwardPass& fp, int il) {
    return il == fp.c.n_layer - 1 ? fp.n_out : fp.n_tok;
}

// Shared by every family: projections into q|k|v of norm(s.x), QK-norm,
// rotary, cache write and attention for the last `n_q` tokens of the batch,
// leaving their attention output (before o_proj) in the first n_q rows of s.attn.
void attention_block(const ForwardPass& fp, const LayerWeights& L, int il, int n_q, const RowNorm& norm);

// One architecture family: how its weights load, how its blocks run (the
// residual stream s.x holds the embeddings of the batch on entry and the
// output of the last block on return), and the norm before the output.
struct Architecture {
    Arch arch;
    void (*load)(WeightLoader& ld, const ModelConfig& c, Weights& w);
    void (*blocks)(const ForwardPass& fp);
    RowNorm (*output_norm)(const ModelConfig& c, const Weights& w);
    bool exact_activations = false;  // Backend::set_exact_activations (routing models)
};

extern const Architecture kPhi2;  // model/phi2.cpp
extern const Architecture kPhi3;  // model/phi3.cpp
extern const Architecture kPhimoe;  // model/phimoe.cpp
const Architecture& architecture(Arch arch);

} // namespace phi
