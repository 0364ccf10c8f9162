"""A tokenizer carried into GGUF by `phicpp convert` tokenizes exactly as the
Hugging Face tokenizer it came from (issue 4), for every tokenizer family
the tiny checkpoints use: GPT-2/CodeGen BPE (Phi-1/1.5/2), SentencePiece
(Phi-3), cl100k-style (Phi-4) and o200k-style (Phi-4-mini)."""
from __future__ import annotations

import pytest

import phicpp
from phicpp.convert import convert_hf_to_gguf

TEXTS = [
    "Hello world", " leading space", "trailing space ", "  two  spaces\t\ttabs\n\nnewlines\n",
    "def fibonacci(n):\n    if n < 2:\n        return n\n    return fibonacci(n - 1) + fibonacci(n - 2)\n",
    "Numbers 1 12 123 1234 12345 3.14159 -7e10", "I'm can't we'll they've you'd she's HE'S",
    "naïve café résumé Ελληνικά Русский 中文字符 日本語テキスト 한국어", "emoji 🦙🚀 and ZWJ 👩‍💻",
    "mixed\r\nline\rendings", "<not a special token> <|fake|>", "    indented = {'a': [1, 2, 3]}  # comment",
    "ÀÉÎÕÜ àéîõü ǅǈ", "a" * 300, "x\u00a0y\u2003z\u3000w", "",
    # what a clean-up of tokenization spaces would change
    "Hello , world ! Is it ? Yes . He said ' hi ' and I do n't know , it 's , I 'm , we 're , you 've",
    "x = f(a , b) . y ; print( 'it' )  ! ?", " 's 're 've 'm n't ' ' . . ,",
]


@pytest.mark.parametrize("kind", ["phi2", "phi3_mini", "phi4", "phi4_mini"])
def test_converted_tokenizer_matches_hf(tiny_model, tmp_path, kind):
    from transformers import AutoTokenizer

    tiny = tiny_model(kind)
    path = convert_hf_to_gguf(tiny.path, tmp_path / f"{kind}.gguf", "f16")
    ours = phicpp.Tokenizer.from_gguf(path)
    hf = AutoTokenizer.from_pretrained(str(tiny.path))
    for text in TEXTS:
        want = hf.encode(text, add_special_tokens=False)
        assert ours.tokenize(text, add_special=False) == want, f"{kind}: {text!r}"
        # and back, with the checkpoint's own clean_up_tokenization_spaces
        assert ours.detokenize(want) == hf.decode(want), f"{kind}: {text!r}"


@pytest.mark.parametrize("kind", ["phi3_mini", "phi4"])
def test_converted_special_tokens_match_hf(tiny_model, tmp_path, kind):
    from transformers import AutoTokenizer

    tiny = tiny_model(kind)
    path = convert_hf_to_gguf(tiny.path, tmp_path / f"{kind}.gguf", "f16")
    ours = phicpp.Tokenizer.from_gguf(path)
    hf = AutoTokenizer.from_pretrained(str(tiny.path))
    specials = sorted(tiny.tokenizer.special)[:4]
    assert specials, "the tiny tokenizer defines added tokens"
    # Not tested: whitespace right after a special token that does not strip
    # whitespace (Phi-3's <|endoftext|>). llama.cpp, which we follow there,
    # gives it its own SentencePiece space prefix ("▁", "▁and"); transformers
    # with legacy=False gives "▁and".
    text = f"{specials[0]}Hi there{specials[1]}and {specials[-1]}text{specials[2]}"
    assert ours.tokenize(text, add_special=False, parse_special=True) == hf.encode(text, add_special_tokens=False)


def test_converted_phi3_strips_whitespace_after_specials_as_hf(tiny_model, tmp_path):
    """Phi-3's chat tokens strip the whitespace after them (rstrip in its
    tokenizer.json), any Unicode whitespace as HF tokenizers does. The folder
    is named as Phi-3.5's are: the converter then names the model "Phi 3.5
    Mini Instruct", which llama.cpp's rule (keyed on "phi-3" or "phi3" in
    general.name) misses."""
    import shutil

    import gguf
    from transformers import AutoTokenizer

    src = tmp_path / "Phi-3.5-mini-instruct"
    shutil.copytree(tiny_model("phi3_mini").path, src)
    path = convert_hf_to_gguf(src, tmp_path / "phi3.gguf", "f16")
    name = bytes(gguf.GGUFReader(str(path)).fields["general.name"].parts[-1]).decode().lower()
    assert "phi3" not in name and "phi-3" not in name, name
    ours = phicpp.Tokenizer.from_gguf(path)
    hf = AutoTokenizer.from_pretrained(str(src))
    for special in ("<|user|>", "<|assistant|>", "<|end|>", "<|system|>"):
        for space in ("\n", " \n\t", "\u00a0", "\u3000\u2003", "\u2028x", "\x85", "\u200b"):
            text = f"{special}{space}Hello{special}{space}"
            assert ours.tokenize(text, add_special=False, parse_special=True) == \
                hf.encode(text, add_special_tokens=False), repr(text)
