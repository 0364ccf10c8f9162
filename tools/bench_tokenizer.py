#!/usr/bin/env python3
"""Tokenizer speed: phicpp vs HF `tokenizers` (and sentencepiece for Phi-3) on ~1 MB of
mixed prose and code (Python stdlib sources and text files), single-threaded, one string.

    PYTHONPATH=$(tools/devbuild.sh tok) python tools/bench_tokenizer.py [--mb 1.0] [--repeat 5]

Each tokenizer is checked to give the same ids as its reference on the whole corpus first.
Reported: best-of-N wall time per call, MB/s, and phicpp's speed-up over the reference.
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("RAYON_NUM_THREADS", "1")  # HF tokenizers: no worker threads
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))


def corpus(mb: float) -> str:
    """Concatenated stdlib .py files interleaved with .txt/.rst docs, deterministic order."""
    lib = Path(os.__file__).parent
    code = sorted(p for p in lib.glob("*.py"))
    docs = sorted(p for ext in ("txt", "rst", "md") for p in lib.rglob(f"*.{ext}") if "test" not in p.parts)
    want = int(mb * 1e6)
    parts, size = [], 0
    for i, p in enumerate(code):
        for q in ([p] + ([docs[i % len(docs)]] if docs else [])):
            try:
                t = q.read_text(encoding="utf-8")
            except (UnicodeDecodeError, OSError):
                continue
            parts.append(t)
            size += len(t.encode())
            if size >= want:
                return "".join(parts)
    return "".join(parts)


def best_of(fn, repeat: int) -> float:
    best = float("inf")
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--mb", type=float, default=1.0)
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--only", nargs="*", help="subset of: gpt-2 phi-3 phi-4 phi-4-mini")
    args = ap.parse_args()

    import reftok
    from test_tokenizer_props import write_bpe_vocab_gguf
    from tokenizers import Tokenizer as HFTokenizer

    from phicpp.tokenizer import Tokenizer

    text = corpus(args.mb)
    nbytes = len(text.encode())
    print(f"corpus: {nbytes / 1e6:.2f} MB, {text.count(chr(10))} lines; best of {args.repeat}; single thread")
    tmp = Path(tempfile.mkdtemp(prefix="phicpp-bench-"))
    cases = []  # (name, phicpp tokenizer, reference name, reference encode fn)
    fixtures = ROOT / "tests" / "data"

    d = tmp / "phi2"
    reftok.write_tokenizer("phi2", d)
    gpt2 = reftok.gpt2_tokenizer()
    cases.append(("gpt-2", Tokenizer.from_gguf(fixtures / "ggml-vocab-gpt-2.gguf"), "HF tokenizers",
                  lambda s, h=gpt2: h.encode(s, add_special_tokens=False).ids))
    import sentencepiece as spm
    sp = spm.SentencePieceProcessor(model_file=str(reftok.phi3_spm_model()))
    d = tmp / "phi3"
    reftok.write_tokenizer("phi3", d)
    hf3 = HFTokenizer.from_file(str(d / "tokenizer.json"))
    phi3 = Tokenizer.from_gguf(fixtures / "ggml-vocab-phi-3.gguf")
    cases.append(("phi-3", phi3, "sentencepiece", lambda s: sp.encode(s)))
    cases.append(("phi-3", phi3, "HF tokenizers", lambda s, h=hf3: h.encode(s, add_special_tokens=False).ids))
    for kind, pre, label in [("phi4", "dbrx", "phi-4"), ("phi4_mini", "gpt-4o", "phi-4-mini")]:
        d = tmp / kind
        reftok.write_tokenizer(kind, d)
        write_bpe_vocab_gguf(d / "tokenizer.json", pre, d / "vocab.gguf")
        hf = HFTokenizer.from_file(str(d / "tokenizer.json"))
        cases.append((label, Tokenizer.from_gguf(d / "vocab.gguf"), "HF tokenizers",
                      lambda s, h=hf: h.encode(s, add_special_tokens=False).ids))

    # Also per line (HF's pre-tokenizer regex and added-token scan suffer on one huge string;
    # lines are what a chat prompt looks like). Both sides pay a Python call per line.
    lines = text.splitlines(keepends=True)
    print(f"{'tokenizer':<11} {'reference':<14} {'input':<9} {'tokens':>8} {'phicpp ms':>10} {'MB/s':>7} "
          f"{'ref ms':>9} {'MB/s':>7} {'speed-up':>9}")
    for name, ours, ref_name, ref in cases:
        if args.only and name not in args.only:
            continue
        mine = ours.tokenize(text, add_special=False, parse_special=False)
        theirs = ref(text)
        same = "" if mine == theirs else "  (ids differ!)"
        t_ours = best_of(lambda: ours.tokenize(text, add_special=False, parse_special=False), args.repeat)
        t_ref = best_of(lambda: ref(text), args.repeat)
        print(f"{name:<11} {ref_name:<14} {'1 string':<9} {len(mine):>8} {t_ours * 1e3:>10.1f} {nbytes / t_ours / 1e6:>7.1f} "
              f"{t_ref * 1e3:>9.1f} {nbytes / t_ref / 1e6:>7.1f} {t_ref / t_ours:>8.2f}x{same}")
        t_ours = best_of(lambda: [ours.tokenize(x, add_special=False) for x in lines], args.repeat)
        t_ref = best_of(lambda: [ref(x) for x in lines], args.repeat)
        print(f"{name:<11} {ref_name:<14} {'lines':<9} {'':>8} {t_ours * 1e3:>10.1f} {nbytes / t_ours / 1e6:>7.1f} "
              f"{t_ref * 1e3:>9.1f} {nbytes / t_ref / 1e6:>7.1f} {t_ref / t_ours:>8.2f}x")


if __name__ == "__main__":
    main()
