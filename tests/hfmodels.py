"""Tiny random Hugging Face Phi checkpoints for tests, one per architecture variant.

    make_tiny(kind, dir, dtype=torch.float32) -> TinyModel

writes DIR/config.json + model*.safetensors (model.save_pretrained) + the tokenizer files
of the family (tests/reftok.py), using the real transformers classes (PhiForCausalLM,
Phi3ForCausalLM). Weights are seeded and drawn large enough (std ~0.06, norm weights
1 +- 0.2, biases +-0.05) that a wrong transpose, a skipped bias or a norm read as 1 changes
the logits visibly. Kinds (see SPECS):

    phi1_5      PhiConfig, partial_rotary_factor 0.5               (Phi-1/1.5 shape)
    phi2        PhiConfig, partial_rotary_factor 0.4, head_dim 20   (Phi-2 shape)
    phi_qkln    PhiConfig with qk_layernorm=True
    phi3_mini   Phi3Config, MHA, sliding_window 2047 (> any test prompt), SentencePiece vocab
    phi3_128k   LongRoPE (long/short factors), max_position 256 vs original 64
    phi3_medium GQA (8 heads, 2 kv heads), 3 layers
    phi3_swa    sliding_window 16 (smaller than a 40-token prompt)
    phi3_swa_hd32  the same with heads of 32 (whole blocks: quantized KV caches); named tests
                only (not in KINDS)
    phi4        GQA, rope_theta 250000, no sliding window, cl100k-style BPE vocab
    phi4_mini   GQA, partial_rotary_factor 0.75, LongRoPE, tied embeddings, o200k-style BPE vocab
    phimoe      PhimoeConfig: 4 experts, router jitter 0.01, GQA, biases (MOE_KINDS, not in KINDS)
    phimoe_wide 6 experts, jitter 0.3 (wider SparseMixer windows: more experts share the weight)
    phimoe_128k LongRoPE with short/long mscale, max_position 256 vs original 64
    phimoe_centered  phimoe with a mean-free residual stream (embeddings, attention output and
                the experts' down projections centered over the hidden size): LayerNorm equals
                RMSNorm on it, which is what llama.cpp runs phimoe with
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch

import reftok

# hidden/heads chosen so head_dim >= 16 and every partial-rotary fraction gives an even count.
SPECS: dict[str, dict] = {
    "phi1_5": dict(arch="phi", tok="phi2", hidden=64, heads=4, layers=2, ff=256, rot=0.5),
    "phi2": dict(arch="phi", tok="phi2", hidden=80, heads=4, layers=2, ff=320, rot=0.4),
    "phi_qkln": dict(arch="phi", tok="phi2", hidden=64, heads=4, layers=2, ff=256, rot=0.5, qk_layernorm=True),
    "phi3_mini": dict(arch="phi3", tok="phi3", hidden=96, heads=6, kv=6, layers=2, ff=192, ctx=4096,
                      sliding_window=2047),
    "phi3_128k": dict(arch="phi3", tok="phi3", hidden=64, heads=4, kv=4, layers=2, ff=128, ctx=256, orig_ctx=64,
                      longrope=True, sliding_window=262144),
    "phi3_medium": dict(arch="phi3", tok="phi3", hidden=128, heads=8, kv=2, layers=3, ff=256, ctx=4096,
                        sliding_window=2047),
    "phi3_swa": dict(arch="phi3", tok="phi3", hidden=64, heads=4, kv=4, layers=2, ff=128, ctx=4096, sliding_window=16),
    "phi3_swa_hd32": dict(arch="phi3", tok="phi3", hidden=64, heads=2, kv=2, layers=2, ff=128, ctx=4096,
                          sliding_window=16, named_only=True),
    "phi4": dict(arch="phi3", tok="phi4", hidden=128, heads=8, kv=2, layers=2, ff=256, ctx=16384, theta=250000.0),
    "phi4_mini": dict(arch="phi3", tok="phi4_mini", hidden=128, heads=8, kv=2, layers=2, ff=256, ctx=256, orig_ctx=64,
                      rot=0.75, longrope=True, tied=True, sliding_window=262144),
    "phimoe": dict(arch="phimoe", tok="phi3", hidden=64, heads=4, kv=2, layers=2, ff=96, ctx=4096, experts=4,
                   jitter=0.01),
    "phimoe_wide": dict(arch="phimoe", tok="phi3", hidden=64, heads=4, kv=4, layers=2, ff=64, ctx=4096, experts=6,
                        jitter=0.3),
    "phimoe_128k": dict(arch="phimoe", tok="phi3", hidden=64, heads=4, kv=2, layers=2, ff=96, ctx=256, orig_ctx=64,
                        experts=4, jitter=0.01, longrope=True),
    "phimoe_centered": dict(arch="phimoe", tok="phi3", hidden=64, heads=4, kv=2, layers=2, ff=96, ctx=4096,
                            experts=4, jitter=0.01, center=True),
}
# the dense kinds (every test of the dense families runs over these); MoE kinds apart
KINDS = tuple(k for k in SPECS if SPECS[k]["arch"] != "phimoe" and not SPECS[k].get("named_only"))
MOE_KINDS = tuple(k for k in SPECS if SPECS[k]["arch"] == "phimoe")


@dataclass
class TinyModel:
    kind: str
    path: Path
    config: dict                  # config.json as written
    tokenizer: reftok.TokenizerInfo


def _config(kind: str, tok: reftok.TokenizerInfo, seed: int):
    from transformers import Phi3Config, PhiConfig, PhimoeConfig

    s = SPECS[kind]
    common = dict(vocab_size=tok.vocab_size, hidden_size=s["hidden"], intermediate_size=s["ff"],
                  num_hidden_layers=s["layers"], num_attention_heads=s["heads"],
                  bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id,
                  tie_word_embeddings=bool(s.get("tied", False)))
    if s["arch"] == "phi":
        return PhiConfig(**common, max_position_embeddings=2048, partial_rotary_factor=s["rot"],
                         qk_layernorm=bool(s.get("qk_layernorm", False)), layer_norm_eps=1e-5,
                         rope_theta=10000.0, hidden_act="gelu_new")
    head_dim = s["hidden"] // s["heads"]
    rot_dims = int(s.get("rot", 1.0) * head_dim)
    rope = {"rope_type": "default", "rope_theta": s.get("theta", 10000.0), "partial_rotary_factor": s.get("rot", 1.0)}
    orig = s.get("orig_ctx", s["ctx"])
    if s.get("longrope"):
        g = torch.Generator().manual_seed(seed + 7)
        # long factors grow with frequency index like the real ones; short ones stay near 1
        long = (1.0 + torch.linspace(0, 3, rot_dims // 2) + 0.1 * torch.rand(rot_dims // 2, generator=g)).tolist()
        short = (1.0 + 0.2 * torch.rand(rot_dims // 2, generator=g)).tolist()
        rope.update(rope_type="longrope", long_factor=long, short_factor=short, original_max_position_embeddings=orig)
    if s["arch"] == "phimoe":
        if s.get("longrope"):
            rope.update(short_mscale=1.1, long_mscale=1.3)
        return PhimoeConfig(**common, num_key_value_heads=s["kv"], max_position_embeddings=s["ctx"],
                            rope_parameters=rope, rms_norm_eps=1e-5, num_local_experts=s["experts"],
                            num_experts_per_tok=2, router_jitter_noise=s["jitter"], attention_bias=True,
                            lm_head_bias=True, sliding_window=None, hidden_act="silu")
    return Phi3Config(**common, num_key_value_heads=s["kv"], max_position_embeddings=s["ctx"],
                      original_max_position_embeddings=orig, rope_parameters=rope, rms_norm_eps=1e-5,
                      sliding_window=s.get("sliding_window"), hidden_act="silu")


@torch.no_grad()
def _randomize(model: torch.nn.Module, seed: int) -> None:
    g = torch.Generator().manual_seed(seed)
    for name, p in model.named_parameters():
        if "norm" in name and name.endswith(".weight"):
            p.copy_(1.0 + 0.2 * torch.randn(p.shape, generator=g))
        elif name.endswith(".bias"):
            p.copy_(0.05 * torch.randn(p.shape, generator=g))
        elif "embed_tokens" in name:
            p.copy_(0.1 * torch.randn(p.shape, generator=g))
        else:
            p.copy_(0.06 * torch.randn(p.shape, generator=g))


@torch.no_grad()
def _center_residual(model: torch.nn.Module) -> None:
    """Make every write into the residual stream mean-free over the hidden size, so each of
    its rows has zero mean at every layer and LayerNorm(x) = RMSNorm(x) on it (the norms
    still carry their weights and biases; routing and attention are untouched)."""
    for name, p in model.named_parameters():
        if "embed_tokens" in name:                                      # [vocab, hidden]
            p -= p.mean(dim=-1, keepdim=True)
        elif name.endswith(("o_proj.weight", "w2.weight")):            # [hidden, in]
            p -= p.mean(dim=0, keepdim=True)
        elif name.endswith("o_proj.bias"):
            p -= p.mean()
        elif name.endswith("experts.down_proj"):                       # [experts, hidden, ff]
            p -= p.mean(dim=1, keepdim=True)


def make_tiny(kind: str, dir: str | Path, dtype: torch.dtype = torch.float32, seed: int = 0,
              max_shard_size: str | None = None) -> TinyModel:
    """Build, randomize and save tiny model `kind` (see KINDS) with its tokenizer into `dir`.
    `max_shard_size` (e.g. "200KB") makes save_pretrained write a sharded checkpoint + index."""
    from transformers import Phi3ForCausalLM, PhiForCausalLM, PhimoeForCausalLM

    if kind not in SPECS:
        raise ValueError(f"unknown tiny model kind {kind!r}; known: {', '.join(KINDS)}")
    d = Path(dir)
    d.mkdir(parents=True, exist_ok=True)
    tok = reftok.write_tokenizer(SPECS[kind]["tok"], d)
    cfg = _config(kind, tok, seed)
    cfg._attn_implementation = "eager"
    torch.manual_seed(seed)
    cls = {"phi": PhiForCausalLM, "phi3": Phi3ForCausalLM, "phimoe": PhimoeForCausalLM}[SPECS[kind]["arch"]]
    model = cls(cfg)
    _randomize(model, seed)
    if SPECS[kind].get("center"):
        _center_residual(model)
    if cfg.tie_word_embeddings:
        model.tie_weights()
    model = model.to(dtype).eval()
    kwargs = {"max_shard_size": max_shard_size} if max_shard_size else {}
    model.save_pretrained(d, **kwargs)
    config = json.loads((d / "config.json").read_text(encoding="utf-8"))
    return TinyModel(kind, d, config, tok)


def cached_tiny(kind: str, dtype: torch.dtype = torch.float32) -> TinyModel:
    """make_tiny(kind, ...) built once into the shared test cache (reftok.cache_dir()) and reused
    across test sessions; the cache key covers this file, reftok.py and the transformers version.
    Treat the folder as read-only: copy it before modifying files in it."""
    import dataclasses
    import hashlib
    import shutil
    import tempfile

    import transformers

    src = Path(__file__).read_bytes() + Path(reftok.__file__).read_bytes() + transformers.__version__.encode()
    key = hashlib.sha256(src).hexdigest()[:12]
    target = reftok.cache_dir().parent / f"tiny-{key}" / f"{kind}-{str(dtype).replace('torch.', '')}"
    if not (target / ".done").is_file():
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=target.name + ".", dir=target.parent))
        try:
            m = make_tiny(kind, tmp, dtype=dtype)
            (tmp / ".tokinfo.json").write_text(json.dumps(dataclasses.asdict(m.tokenizer)))
            (tmp / ".done").write_text("ok")
            try:
                tmp.rename(target)
            except OSError:  # built concurrently by another session
                pass
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    config = json.loads((target / "config.json").read_text(encoding="utf-8"))
    tok = reftok.TokenizerInfo(**json.loads((target / ".tokinfo.json").read_text(encoding="utf-8")))
    return TinyModel(kind, target, config, tok)


def load_hf(path: str | Path, dtype: torch.dtype = torch.float32):
    """Load a checkpoint written by make_tiny as an eval-mode transformers model (eager attention)."""
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(str(path), dtype=dtype, attn_implementation="eager").eval()
