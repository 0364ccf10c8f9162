// What one forward pass over a batch of tokens needs: the backend, the
// weights, the KV cache and scratch buffers sized for the largest batch.
#pragma once
#include <vector>

#include "backend/backend.h"
#include "model/config.h"
#include "model/weights.h"

namespace phi {

struct KVLayer {
    void* k = nullptr;  // [n_ctx, kv_width] of kv_type
    void* v = nullptr;
};

// Activations for up to n_batch tokens, in backend memory.
struct Scratch {
    float* x = nullptr;       // [B, n_embd] residual stream
    float* xn = nullptr;      // [B, n_embd] normalized input of the block
    float* qkv = nullptr;     // [B, q + 2 kv] fused projections, or q | k | v side by side
    float* attn = nullptr;    // [B, q] attention output before the projection
    float* ffn = nullptr;     // [B, n_ff] (phi2) or [B, 2 n_ff] gate|up (phi3)
    float* ffn_act = nullptr; // [B, n_ff] SwiGLU output (phi3)
    float* tmp = nullptr;     // [B, n_embd] a block output before it joins the residual
    float* logits = nullptr;  // [min(B, 32), n_vocab] output rows, projected a slice at a time
};

struct ForwardPass {
    Backend& be;
    const ModelConfig& c;
    const Weights& w;
    Scratch& s;
    std::vector<KVLayer>& kv;
    DType kv_type;
    RopeParams rope;
    int n_tok;  // tokens in this batch
    int pos0;   // position of the first one
    int n_out;  // trailing tokens whose last-layer output is used (logits); the
                // last layer stores every token's K/V but computes only these
};

// Rows of the batch the layer `il` must carry through attention and the MLP.
inline int rows_needed(const ForwardPass& fp, int il) {
    return il == fp.c.n_layer - 1 ? fp.n_out : fp.n_tok;
}

// The residual stream s.x holds the embeddings of the batch on entry and the
// output of the last block on return.
void phi2_blocks(const ForwardPass& fp);
void phi3_blocks(const ForwardPass& fp);

// Shared by both families: projections into q|k|v, rotary, cache write and
// attention for the last `n_q` tokens of the batch, leaving their attention
// output (before o_proj) in the first n_q rows of s.attn.
void attention_block(const ForwardPass& fp, const LayerWeights& L, int il, int n_q);

} // namespace phi
