"""Where the GPU's logits leave the CPU's and transformers', phase by phase,
on the tiny random checkpoints of tests/hfmodels.py (a bisecting aid for the
device run; the assertions live in tests/test_model_parity.py).

    python tools/gpu_diag.py [kind ...] [--outtype f32|f16]

For each kind: the relative error (max |a - b| / max |b|) of the last
prompt token, of each decode step, and of every position (all logits), for
CUDA against transformers and CUDA against the CPU; with the prompt in one
batch (tensor-core GEMM) and in batches of 8 (the decode kernels).
"""
from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))


def rel(a, b):
    return float(np.abs(a - b).max() / np.abs(b).max())


def main():
    import torch

    import hfmodels
    import phicpp
    from phicpp.convert import convert_hf_to_gguf

    ap = argparse.ArgumentParser()
    ap.add_argument("kinds", nargs="*", default=list(hfmodels.KINDS))
    ap.add_argument("--outtype", default="f32")
    a = ap.parse_args()
    tmp = Path(tempfile.mkdtemp())
    for kind in a.kinds:
        tiny = hfmodels.make_tiny(kind, tmp / kind)
        path = convert_hf_to_gguf(tiny.path, tmp / f"{kind}.gguf", a.outtype)
        rng = np.random.default_rng(1234)
        tokens = rng.integers(0, tiny.tokenizer.n_tokens, 60).astype(np.int32)
        model = hfmodels.load_hf(tiny.path, torch.float32)
        if a.outtype == "f16":
            with torch.no_grad():
                for p in model.parameters():
                    if p.ndim == 2:
                        p.copy_(p.half().float())
        with torch.no_grad():
            ref = model(torch.tensor(tokens[None, :], dtype=torch.long)).logits[0].float().numpy()
        out = {}
        for device in ("cpu", "cuda"):
            for batch in (512, 8):
                m = phicpp.Model(path, n_ctx=128, n_batch=batch, kv_type=a.outtype, device=device)
                steps = [m.eval(tokens[:40])] + [m.eval(tokens[i:i + 1]) for i in range(40, 60)]
                m.reset()
                out[device, batch] = (np.stack(steps), m.eval(tokens, all_logits=True))
        ref_steps = ref[39:60]
        for batch in (512, 8):
            g_steps, g_all = out["cuda", batch]
            c_steps, c_all = out["cpu", batch]
            e_prompt = rel(g_steps[0], ref_steps[0])
            e_dec = max(rel(g_steps[i], ref_steps[i]) for i in range(1, 21))
            e_all = rel(g_all, ref)
            worst = int(np.argmax(np.abs(g_all - ref).max(axis=1)))
            print(f"{kind:12} {a.outtype} batch {batch:3}: cuda-vs-hf prompt {e_prompt:.2e} decode {e_dec:.2e} "
                  f"all {e_all:.2e} (worst at {worst}) | cpu-vs-hf all {rel(c_all, ref):.2e} | "
                  f"cuda-vs-cpu prompt {rel(g_steps[0], c_steps[0]):.2e} all {rel(g_all, c_all):.2e}", flush=True)


if __name__ == "__main__":
    main()
