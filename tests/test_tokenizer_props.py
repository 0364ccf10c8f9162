"""Property tests: phicpp's tokenizers agree token for token with the reference
implementations on random text: sentencepiece on reftok's Phi-3 tokenizer.model,
HF `tokenizers` on reftok's tokenizer.json files (Phi-2's GPT-2 BPE with CodeGen's
whitespace tokens, a cl100k-style Phi-4 BPE, an o200k-style Phi-4-mini BPE).

The BPE vocab GGUFs are written here from tokenizer.json the way llama.cpp's
convert_hf_to_gguf.py writes them (tokens, token types, merges, pre name)."""
from __future__ import annotations

import os

import json
from pathlib import Path

import gguf
import pytest
from hypothesis import HealthCheck, example, given, settings, strategies as st

import reftok
from phicpp.tokenizer import Tokenizer

DATA = Path(__file__).parent / "data"
PRE = {"phi2": "gpt-2", "phi4": "dbrx", "phi4_mini": "gpt-4o"}

# examples per property (PHICPP_TOK_EXAMPLES=2000 for a long soak)
N_EXAMPLES = int(os.environ.get("PHICPP_TOK_EXAMPLES", "150"))
SETTINGS = dict(max_examples=N_EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


def write_bpe_vocab_gguf(tokenizer_json: Path, pre: str, out: Path) -> None:
    tj = json.loads(tokenizer_json.read_text(encoding="utf-8"))
    vocab = dict(tj["model"]["vocab"])
    added = {t["content"]: t for t in tj["added_tokens"]}
    for content, t in added.items():
        vocab[content] = t["id"]
    by_id = {i: t for t, i in vocab.items()}
    tokens, types = [], []
    for i in range(max(by_id) + 1):
        t = by_id.get(i, f"[PAD{i}]")
        tokens.append(t)
        if i not in by_id:
            types.append(gguf.TokenType.UNUSED)
        elif t in added:
            types.append(gguf.TokenType.CONTROL if added[t]["special"] else gguf.TokenType.USER_DEFINED)
        else:
            types.append(gguf.TokenType.NORMAL)
    merges = [m if isinstance(m, str) else " ".join(m) for m in tj["model"]["merges"]]
    w = gguf.GGUFWriter(str(out), "phi3")
    w.add_name("vocab-only test tokenizer")
    w.add_tokenizer_model("gpt2")
    w.add_tokenizer_pre(pre)
    w.add_token_list(tokens)
    w.add_token_types(types)
    w.add_token_merges(merges)
    eot = vocab.get("<|endoftext|>")
    if eot is not None:
        w.add_bos_token_id(eot)
        w.add_eos_token_id(eot)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


@pytest.fixture(scope="module", params=["phi2", "phi4", "phi4_mini"])
def bpe_pair(request, module_tmp):
    from tokenizers import Tokenizer as HFTokenizer

    d = module_tmp(request.param)
    reftok.write_tokenizer(request.param, d)
    write_bpe_vocab_gguf(d / "tokenizer.json", PRE[request.param], d / "vocab.gguf")
    return request.param, Tokenizer.from_gguf(d / "vocab.gguf"), HFTokenizer.from_file(str(d / "tokenizer.json"))


@pytest.fixture(scope="module")
def spm_pair():
    import sentencepiece as spm

    sp = spm.SentencePieceProcessor(model_file=str(reftok.phi3_spm_model()))
    return Tokenizer.from_gguf(DATA / "ggml-vocab-phi-3.gguf"), sp


# ------------------------------------------------------------------ text strategies
# Assigned code points only (Unicode 14, Python's unicodedata): what a newer Unicode
# assigned may be classified differently by the regex engine inside `tokenizers`.
any_char = st.characters(blacklist_categories=("Cs", "Cn", "Co"))
spaces = st.sampled_from([" ", "  ", "   ", "\t", "\n", "\n\n", "\r\n", " \n", "\u00a0", "\u3000", "\x0b", "\x0c",
                          "\u2009", "\x85", " \t ", "\n  "])
words = st.sampled_from(["Hello", "hello", "HELLO", "world", "don't", "I'M", "they're", "WE'VE", "y'all", "it's",
                         "'s", "'LL", "'d", "Äpfel", "ÉCOLE", "naïve", "straße", "Ωμέγα", "ΣΊΣΥΦΟΣ", "нещо",
                         "Български", "数字", "漢字かなカナ", "한국어", "🦙", "🚀🌫️", "e\u0301", "A\u0308b",
                         "\u0301x", "ǅemal", "ʰi", "123", "4567", "1,000,000", "3.14159", "x86_64", "0x1F",
                         "ſt", "'ſ", "ǈ", "ᾈ", "ⅷ", "½", "²"])
code = st.sampled_from(["def f(x):", "    return x", "if (a && b) {", "}", "//", "/* c */", "x = [1, 2, 3]",
                        "print(\"hi\")", "a->b", "i++", "#include <vector>", "<|user|>", "<|end|>",
                        "<|endoftext|>", "<|im_start|>", "<s>", "</s>", "...", "!!", "?!", "--", "==", "\\n",
                        "https://example.com/a/b?c=d", "path/to/file.py", "@decorator", "$var", "'''", "\"\"\""])
pieces = st.one_of(words, code, spaces, st.text(any_char, min_size=1, max_size=4))
texts = st.one_of(
    st.lists(pieces, max_size=12).map("".join),
    st.text(any_char, max_size=40),
    st.text(st.sampled_from(list(" \t\n\r\u00a0aA1.'")), max_size=30),
)


# ------------------------------------------------------------------ BPE vs HF tokenizers
@settings(**SETTINGS)
@given(text=texts)
@example(text="Hello world")
@example(text="  Hello\n\n  world  ")
@example(text="I'M here, you're THERE'LL")
@example(text="ΣΊΣΥΦΟΣ naïve e\u0301 ǅemal ʰi \u0301x")
@example(text="x  \t\n  y \n")
@example(text="1234567 and 12")
def test_bpe_matches_hf(bpe_pair, text):
    name, ours, hf = bpe_pair
    want = hf.encode(text, add_special_tokens=False).ids
    assert ours.tokenize(text, add_special=False, parse_special=True) == want, (name, text)


@settings(**SETTINGS)
@given(text=texts)
def test_bpe_detokenize_roundtrip(bpe_pair, text):
    name, ours, hf = bpe_pair
    ids = ours.tokenize(text, add_special=False, parse_special=True)
    # concatenated pieces are lossless for byte-level BPE
    pieces = b"".join(ours.token_to_piece(i) for i in ids)
    assert pieces == text.encode()
    # and decoded as HF decodes: no clean-up of spaces before punctuation for any of them
    # (llama.cpp cleans gpt-2 / cl100k: " ." -> ".")
    assert ours.detokenize_bytes(ids, special=True) == pieces
    assert ours.detokenize(ids, special=True) == hf.decode(ids, skip_special_tokens=False)


# ------------------------------------------------------------------ SentencePiece vs sentencepiece
@settings(**SETTINGS)
@given(text=texts)
@example(text="Hello world")
@example(text=" leading and trailing  ")
@example(text="🦙 byte fallback \x00\x01")
def test_spm_matches_sentencepiece(spm_pair, text):
    ours, sp = spm_pair
    want = sp.encode(text)
    assert ours.tokenize(text, add_special=False, parse_special=False) == want, text
    assert ours.tokenize(text, add_special=True) == [1] + want
    assert ours.detokenize(want) == text  # llama.cpp drops the dummy prefix space
