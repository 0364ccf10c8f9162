"""llama.cpp as a reference in opt-in tests (never a dependency of phicpp).

    PHICPP_LLAMACPP_BIN  folder with `llamacpp-logits` and llama-quantize (tools/llamacpp.sh)
    PHICPP_LLAMACPP_SRC  a llama.cpp source tree (its convert_hf_to_gguf.py and gguf-py)

logits(path, tokens) -> llama.cpp's logits of every position, float32 [n_tokens, n_vocab]
convert(model_dir, out, outtype, pre="-") -> the GGUF llama.cpp's converter writes
as_published_phimoe(model_dir) edits a tiny PhimoeForCausalLM's config.json into the shape
    llama.cpp's converter needs (see there)
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

BIN = os.environ.get("PHICPP_LLAMACPP_BIN")
SRC = os.environ.get("PHICPP_LLAMACPP_SRC")
HAS_BIN = bool(BIN) and (Path(BIN) / "llamacpp-logits").exists()
HAS_SRC = bool(SRC) and Path(SRC, "convert_hf_to_gguf.py").is_file()

_RUNNER = """
import runpy, sys
src, pre = sys.argv[1], sys.argv[2]
sys.path.insert(0, src)
sys.argv = [src + "/convert_hf_to_gguf.py"] + sys.argv[3:]
if pre != "-":  # our trained test vocabs have no hash in llama.cpp's table: give it the same name we chose
    from conversion import base
    base.TextModel.get_vocab_base_pre = lambda self, tokenizer: pre
runpy.run_path(src + "/convert_hf_to_gguf.py", run_name="__main__")
"""


def logits(path: Path, tokens, n_ctx: int = 256, step: bool = False) -> "np.ndarray":
    import numpy as np

    out = Path(tempfile.mkdtemp()) / "logits.npy"  # never beside the model: it may be package data
    subprocess.run([str(Path(BIN) / "llamacpp-logits"), "-m", str(path), "--tokens", ",".join(map(str, tokens)),
                    "--ctx", str(n_ctx), "-t", "2", "--npy", str(out), "--top", "0"] + (["--step"] if step else []),
                   check=True, capture_output=True, timeout=300)
    return np.load(out)


def convert(model_dir: Path, out: Path, outtype: str, pre: str = "-") -> Path:
    """Run llama.cpp's convert_hf_to_gguf.py; `pre` names the pre-tokenizer where our
    trained test vocabs have no hash in its table ("-": its own detection)."""
    runner = Path(tempfile.mkdtemp()) / "run.py"
    runner.write_text(_RUNNER)
    p = subprocess.run([sys.executable, str(runner), SRC, pre, str(model_dir), "--outfile", str(out),
                        "--outtype", outtype], capture_output=True, text=True)
    assert p.returncode == 0, p.stderr[-2000:]
    return out


def as_published_phimoe(model_dir: Path) -> Path:
    """What llama.cpp's converter needs of a PhimoeForCausalLM checkpoint that transformers'
    save_pretrained does not write: the architecture spelled as the published checkpoint's
    remote code spells it (PhiMoEForCausalLM, the only one it registers) and the original
    context among the rope parameters (its Phi-3 base class reads it there)."""
    cfg_path = model_dir / "config.json"
    cfg = json.loads(cfg_path.read_text())
    cfg["architectures"] = ["PhiMoEForCausalLM"]
    cfg["rope_parameters"].setdefault("original_max_position_embeddings", cfg["max_position_embeddings"])
    cfg_path.write_text(json.dumps(cfg))
    return model_dir


def softmax_top2_routing(scores, jitter_eps=None, training=False, top_k=2):
    """llama.cpp's routing of phimoe (build_moe_ffn with softmax gating and norm_w) in the
    signature of transformers' `sparsemixer`: softmax over every expert, the best two, their
    two weights renormalized to sum 1 (the jitter is not used)."""
    import torch

    p = torch.softmax(scores, dim=-1)
    w, idx = p.topk(2, dim=-1)
    return w / w.sum(dim=-1, keepdim=True), idx
