"""The tiny code model shipped in phicpp/models (issue 7).

Quantization quality is measured the way the model card reports it: perplexity on
held-out text that the model never saw in training (tests/data/tiny_heldout.txt.gz,
the held-out split of tools/make_tiny_corpus.py, see MODEL_CARD.md), computed by the
engine on the shipped F16 file and on Q8_0 / Q4_K_M files quantized from it here.
"""
from __future__ import annotations

import ast
import gzip
import math
from pathlib import Path

import numpy as np
import pytest

import phicpp
from phicpp.models import DEFAULT_MODEL_NAME, default_model_path
from phicpp.quantize import quantize_gguf
from phicpp.tokenizer import Tokenizer

HELDOUT = Path(__file__).parent / "data" / "tiny_heldout.txt.gz"
EOT = "<|endoftext|>"
CTX = 512            # tokens per perplexity window (the model was trained on 1024)
N_WINDOWS = 4        # spread evenly over the held-out stream: 2048 scored windows' tokens
MAX_BYTES = 25_000_000


# ----------------------------------------------------------------------------- helpers

def log_softmax_nll(logits: np.ndarray, targets: np.ndarray) -> np.ndarray:
    """-log p(target) per row, in float64."""
    z = logits.astype(np.float64)
    z -= z.max(axis=1, keepdims=True)
    lse = np.log(np.exp(z).sum(axis=1))
    return lse - z[np.arange(len(targets)), targets]


def perplexity(path: Path, windows: list[list[int]]) -> float:
    """exp(mean NLL) of every token after the first of each window, each window from an empty cache."""
    model = phicpp.Model(str(path), n_ctx=CTX + 1)
    nll = []
    for w in windows:
        model.reset()
        logits = model.eval(w[:-1], all_logits=True)
        nll.append(log_softmax_nll(logits, np.asarray(w[1:])))
    return float(math.exp(np.concatenate(nll).mean()))


def text_of(tok: Tokenizer, ids: list[int]) -> str:
    """Concatenated token pieces. Not tok.detokenize: for GPT-2-style vocabularies that applies
    llama.cpp's clean-up (" ." -> "."), which would turn "from . import x" into "from. import x"."""
    return b"".join(tok.token_to_piece(i, special=False) for i in ids).decode("utf-8", "replace")


def greedy(path: Path, prompt: str, n_new: int) -> str:
    tok = Tokenizer.from_gguf(str(path))
    model = phicpp.Model(str(path), n_ctx=256)
    ids = tok.tokenize(prompt, add_special=False)
    logits = model.eval(ids)
    out = []
    for _ in range(n_new):
        nxt = int(np.argmax(logits))
        if tok.is_eog(nxt):
            break
        out.append(nxt)
        logits = model.eval([nxt])
    return prompt + text_of(tok, out)


def first_python_block(code: str) -> str:
    """The longest prefix made of whole lines that parses (generation stops mid-statement)."""
    lines = code.splitlines()
    for n in range(len(lines), 0, -1):
        candidate = "\n".join(lines[:n]) + "\n"
        try:
            ast.parse(candidate)
            return candidate
        except SyntaxError:
            continue
    return ""


# ----------------------------------------------------------------------------- fixtures

@pytest.fixture(scope="module")
def f16() -> Path:
    return default_model_path()


@pytest.fixture(scope="module")
def heldout_windows(f16) -> list[list[int]]:
    text = gzip.decompress(HELDOUT.read_bytes()).decode("utf-8")
    tok = Tokenizer.from_gguf(str(f16))
    stream: list[int] = []
    for doc in text.split(EOT):
        stream += tok.tokenize(doc, add_special=False) + [tok.eos_id]
    step = (len(stream) - CTX - 1) // (N_WINDOWS - 1)
    return [stream[i * step:i * step + CTX + 1] for i in range(N_WINDOWS)]


@pytest.fixture(scope="module")
def ppl(f16, heldout_windows, module_tmp) -> dict[str, float]:
    out = module_tmp("tiny")
    result = {"F16": perplexity(f16, heldout_windows)}
    for mix in ("Q8_0", "Q4_K_M"):
        dst = out / f"phi-tiny-code-{mix}.gguf"
        quantize_gguf(f16, dst, mix)
        result[mix] = perplexity(dst, heldout_windows)
    print("held-out perplexity:", result)
    return result


# ----------------------------------------------------------------------------- tests

def test_shipped_file_is_small_phi2_f16_with_license(f16):
    assert f16.name == DEFAULT_MODEL_NAME and f16.parent.name == "models"
    assert f16.stat().st_size <= MAX_BYTES
    meta = phicpp.GGUFFile(str(f16)).metadata
    assert meta["general.architecture"] == "phi2"
    assert meta["general.license"] == "mit"
    assert meta["general.file_type"] == 1   # MOSTLY_F16
    assert meta["tokenizer.ggml.model"] == "gpt2" and meta["tokenizer.ggml.pre"] == "gpt-2"
    for name in ("MODEL_CARD.md", "LICENSE"):
        assert (f16.parent / name).is_file(), name


def test_heldout_text_round_trips_through_the_tokenizer(f16):
    text = gzip.decompress(HELDOUT.read_bytes()).decode("utf-8").split(EOT)[0]
    tok = Tokenizer.from_gguf(str(f16))
    ids = tok.tokenize(text, add_special=False)
    assert text_of(tok, ids) == text
    assert len(text) / len(ids) > 2.5   # a BPE trained on Python: far fewer tokens than bytes


def test_heldout_windows_are_distinct_and_full(heldout_windows):
    assert len(heldout_windows) == N_WINDOWS
    assert all(len(w) == CTX + 1 for w in heldout_windows)
    assert len({tuple(w[:16]) for w in heldout_windows}) == N_WINDOWS


def test_f16_model_is_trained(ppl):
    # an untrained model scores about the vocabulary size (8192); the card reports ~8-10
    assert ppl["F16"] < 20.0


def test_q8_0_perplexity_within_1_percent_of_f16(ppl):
    assert abs(ppl["Q8_0"] / ppl["F16"] - 1.0) <= 0.01, ppl


def test_q4_k_m_perplexity_within_5_percent_of_f16(ppl):
    assert abs(ppl["Q4_K_M"] / ppl["F16"] - 1.0) <= 0.05, ppl


def test_fibonacci_prompt_continues_as_python(f16):
    text = greedy(f16, "def fibonacci(n):", 48)
    body = first_python_block(text)
    # the parsable prefix holds the function header plus at least one statement of its body
    tree = ast.parse(body)
    fn = tree.body[0]
    assert isinstance(fn, ast.FunctionDef) and fn.name == "fibonacci" and len(fn.body) >= 1, text
    assert len(body.splitlines()) >= 3, text


def test_perplexity_measures_the_text_not_the_file(f16, heldout_windows, ppl):
    # control for the comparisons above: the same tokens in a shuffled order must score far
    # worse, so a perplexity near F16's really means the model still predicts the text
    rng = np.random.default_rng(0)
    shuffled = [list(rng.permutation(heldout_windows[0]))]
    assert perplexity(f16, shuffled) > 5 * ppl["F16"]
