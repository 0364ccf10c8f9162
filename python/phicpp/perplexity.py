"""`phicpp perplexity`: computed exactly as llama.cpp's llama-perplexity (tools/perplexity/perplexity.cpp,
the default path without --ppl-stride), so the numbers compare:

  * the whole text is tokenized once, with BOS when the vocab adds one, special tokens not parsed;
  * it needs at least 2 * n_ctx tokens; n_chunk = n_tokens // n_ctx chunks of n_ctx tokens;
  * each chunk starts from an empty cache; its first token is replaced by BOS when the
    vocab adds BOS (the original token is kept for scoring);
  * only the second half is scored: with first = n_ctx // 2, the logits at positions
    first .. n_ctx - 2 predict tokens first + 1 .. n_ctx - 1 (n_ctx - first - 1 per chunk);
  * nll = -log softmax(logits)[next token] (max-subtracted, sum of exp in double), summed in double;
  * after each chunk "[i]exp(nll / count)," is printed; at the end
    "Final estimate: PPL = exp(mean) +/- ppl * sqrt((mean(nll^2) - mean^2) / (count - 1))".
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable

import numpy as np


@dataclass
class PerplexityResult:
    ppl: float
    ppl_err: float
    n_chunks: int
    n_ctx: int
    n_tokens: int
    count: int
    running: list[float] = field(default_factory=list)   # the estimate after each chunk


def token_nll(logits: np.ndarray, targets: np.ndarray) -> np.ndarray:
    """-log p(target) per row, as llama.cpp's log_softmax: float32 exp of (logit - max), double sum."""
    logits = np.asarray(logits, dtype=np.float32)
    mx = logits.max(axis=1, keepdims=True)
    sum_exp = np.exp(logits - mx).astype(np.float64).sum(axis=1)
    picked = logits[np.arange(len(targets)), targets].astype(np.float64) - mx[:, 0].astype(np.float64)
    return -(picked - np.log(sum_exp))


def perplexity(model, text: str, n_ctx: int = 512, n_chunks: int = -1,
               on_chunk: Callable[[int, float], None] | None = None) -> PerplexityResult:
    tok = model.tokenizer
    if tok.add_eos:
        raise ValueError("perplexity needs a vocab that does not append EOS (llama.cpp asserts the same)")
    if n_ctx < 3:  # (the second half of a chunk must hold a scored token)
        raise ValueError(f"the context must be at least 3 tokens, got {n_ctx}")
    if n_chunks == 0 or n_chunks < -1:
        raise ValueError(f"the number of chunks must be -1 (all) or at least 1, got {n_chunks}")
    if n_ctx > model.n_ctx:
        raise ValueError(f"-c {n_ctx} is more than the model's context ({model.n_ctx})")
    tokens = np.asarray(tok.tokenize(text, add_special=True, parse_special=False), dtype=np.int32)
    if len(tokens) < 2 * n_ctx:
        raise ValueError(f"you need at least {2 * n_ctx} tokens to evaluate perplexity with a context of {n_ctx}; "
                         f"the text tokenizes to only {len(tokens)} tokens")
    n_chunk = len(tokens) // n_ctx
    if n_chunks >= 0:
        n_chunk = min(n_chunk, n_chunks)
    first = n_ctx // 2
    bos = tok.bos_id if tok.add_bos else None
    nll = nll2 = 0.0
    count = 0
    running = []
    for i in range(n_chunk):
        chunk = tokens[i * n_ctx:(i + 1) * n_ctx].copy()
        targets = chunk[first + 1:].copy()  # original tokens, before the BOS swap
        if bos is not None:
            chunk[0] = bos
        model.reset()
        if first > 0:
            model.eval(chunk[:first])  # context only: no logits needed
        logits = model.eval(chunk[first:], all_logits=True)  # rows for positions first .. n_ctx-1
        v = token_nll(logits[:-1], targets)
        nll += float(v.sum())
        nll2 += float((v * v).sum())
        count += len(v)
        running.append(math.exp(nll / count))
        if on_chunk:
            on_chunk(i + 1, running[-1])
    model.reset()
    mean = nll / count
    ppl = math.exp(mean)
    var = nll2 / count - mean * mean
    err = math.sqrt(var / (count - 1)) * ppl if var > 0 and count > 1 else float("nan")
    return PerplexityResult(ppl, err, n_chunk, n_ctx, len(tokens), count, running)
