"""Tokenizer tests on llama.cpp's vocab fixtures: the test vectors exactly,
detokenization, special tokens, end-of-generation ids, streaming, odd input."""
from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given, settings, strategies as st

from phicpp.tokenizer import Tokenizer

DATA = Path(__file__).parent / "data"
VOCABS = ["phi-3", "gpt-2"]


def read_vectors(name: str) -> list[tuple[str, list[int]]]:
    """llama.cpp's tests/test-tokenizer-0.cpp reader: inputs split on "\\n__ggml_vocab_test__\\n"
    (a trailing separator ends the last input), one stripped line of ids per input."""
    raw = (DATA / f"ggml-vocab-{name}.gguf.inp").read_bytes().decode("utf-8")
    sep = "\n__ggml_vocab_test__\n"
    texts, pos = [], 0
    while pos < len(raw):
        nxt = raw.find(sep, pos)
        if nxt < 0:
            texts.append(raw[pos:])
            break
        texts.append(raw[pos:nxt])
        pos = nxt + len(sep)
    lines = (DATA / f"ggml-vocab-{name}.gguf.out").read_text(encoding="utf-8").split("\n")
    assert len(lines) >= len(texts)
    return [(t, [int(x) for x in lines[i].split()]) for i, t in enumerate(texts)]


@pytest.fixture(scope="module", params=VOCABS)
def vocab(request):
    return request.param, Tokenizer.from_gguf(DATA / f"ggml-vocab-{request.param}.gguf")


@pytest.fixture(scope="module")
def phi3():
    return Tokenizer.from_gguf(DATA / "ggml-vocab-phi-3.gguf")


@pytest.fixture(scope="module")
def gpt2():
    return Tokenizer.from_gguf(DATA / "ggml-vocab-gpt-2.gguf")


# ------------------------------------------------------------------ llama.cpp's test vectors
def test_vectors_exact(vocab):
    name, tok = vocab
    cases = read_vectors(name)
    assert len(cases) == 46
    bad = [(text, want, tok.tokenize(text, add_special=False)) for text, want in cases
           if tok.tokenize(text, add_special=False, parse_special=False) != want]
    assert not bad, bad[:3]


def test_vectors_detokenize(vocab):
    """detokenize: the concatenated pieces, the SPM prefix space dropped, nothing else (as
    transformers; llama.cpp also cleans spaces before punctuation for GPT-2-style BPE)."""
    name, tok = vocab
    for text, ids in read_vectors(name):
        pieces = b"".join(tok.token_to_piece(i, special=False) for i in ids)
        if tok.model == "llama":
            want = pieces[1:] if pieces.startswith(b" ") else pieces
            assert want == text.encode(), text  # SentencePiece round-trips every vector
        else:
            assert pieces == text.encode(), text  # byte-level BPE is lossless
            want = pieces
        assert tok.detokenize_bytes(ids) == want, text


def test_no_space_clean_up_gpt2(gpt2):
    for text in ["Hello , world !", "a ' b", "it 's I 'm we 're you 've he 'll do n't", "x . y ? z",
                 "from . import x", "f(a , b)"]:
        ids = gpt2.tokenize(text, add_special=False)
        assert gpt2.detokenize_bytes(ids) == text.encode()


# ------------------------------------------------------------------ metadata, special tokens
def test_metadata(phi3, gpt2):
    assert (phi3.model, phi3.n_vocab, phi3.bos_id, phi3.eos_id, phi3.unk_id) == ("llama", 32064, 1, 32000, 0)
    assert phi3.add_bos and not phi3.add_eos
    assert phi3.eot_id == 32007  # <|end|>
    assert set(phi3.eog_ids) == {2, 32000, 32007}  # </s>, <|endoftext|>, <|end|>
    assert phi3.is_eog(32007) and phi3.is_eog(32000) and not phi3.is_eog(32001)
    assert (gpt2.model, gpt2.pre, gpt2.n_vocab, gpt2.bos_id, gpt2.eos_id) == ("gpt2", "gpt-2", 50257, 50256, 50256)
    assert not gpt2.add_bos and gpt2.eog_ids == [50256]
    assert phi3.token_text(32010) == "<|user|>" and phi3.token_id("<|user|>") == 32010
    assert phi3.token_id("no such token at all") is None


def test_add_special(phi3, gpt2):
    assert phi3.tokenize("") == [1] and phi3.tokenize("", add_special=False) == []
    assert phi3.tokenize("Hello") == [1] + phi3.tokenize("Hello", add_special=False)
    assert gpt2.tokenize("Hello") == gpt2.tokenize("Hello", add_special=False)


def test_special_tokens_phi3(phi3):
    text = "<|user|>\nHello<|end|>\n<|assistant|>"
    ids = phi3.tokenize(text, add_special=False, parse_special=True)
    hello = phi3.tokenize("Hello", add_special=False)
    # llama.cpp strips whitespace after Phi-3's special tokens (RSTRIP) and puts the
    # SentencePiece space prefix in front of text that follows a special token
    assert ids == [32010] + hello + [32007, 32001]
    plain = phi3.tokenize(text, add_special=False, parse_special=False)
    assert all(i < 32000 for i in plain)
    assert phi3.detokenize(plain) == text
    assert phi3.detokenize(ids) == " Hello"  # control tokens render as nothing...
    assert phi3.detokenize(ids, special=True) == "<|user|> Hello<|end|><|assistant|>"  # ...or as text
    # longest special first: <|endoftext|> is not split into <|end|> + "oftext|>"
    assert phi3.tokenize("<|endoftext|>", add_special=False, parse_special=True) == [32000]
    assert phi3.tokenize("a<|end|>b<|end|>", add_special=False, parse_special=True).count(32007) == 2


def test_special_tokens_gpt2(gpt2):
    assert gpt2.tokenize("<|endoftext|>", parse_special=True) == [50256]
    ids = gpt2.tokenize("Hi<|endoftext|> there", parse_special=True)
    assert ids == gpt2.tokenize("Hi", add_special=False) + [50256] + gpt2.tokenize(" there", add_special=False)
    plain = gpt2.tokenize("<|endoftext|>", parse_special=False)
    assert 50256 not in plain and gpt2.detokenize(plain) == "<|endoftext|>"
    assert gpt2.token_to_piece(50256) == b"<|endoftext|>" and gpt2.token_to_piece(50256, special=False) == b""


# ------------------------------------------------------------------ odd input
def test_invalid_utf8_spm_roundtrips(phi3):
    for raw in [b"ab\xffcd", b"\xe2\x82", b"\x80\x80x", b"caf\xc3", b"\xf0\x9f\xa6"]:
        ids = phi3.tokenize(raw, add_special=False)
        assert phi3.detokenize_bytes(ids) == raw


def test_invalid_utf8_bpe_is_replacement_char(gpt2):
    # llama.cpp decodes a bad byte as U+FFFD before pre-tokenizing
    assert gpt2.tokenize(b"a\xffb", add_special=False) == gpt2.tokenize("a\ufffdb", add_special=False)
    assert gpt2.tokenize(b"x\xe2\x82", add_special=False) == gpt2.tokenize("x\ufffd\ufffd", add_special=False)
    assert gpt2.detokenize(gpt2.tokenize(b"\xc3(", add_special=False)) == "\ufffd("


@settings(max_examples=150, deadline=None)
@given(raw=st.binary(max_size=64))
def test_random_bytes_never_crash(phi3, gpt2, raw):
    assert all(0 <= i < phi3.n_vocab for i in phi3.tokenize(raw, parse_special=True))
    # SentencePiece keeps bad bytes through byte fallback. (Not with spaces: as in llama.cpp a
    # truncated lead byte then swallows part of the U+2581 that stands for the next space.)
    nospace = raw.replace(b" ", b"")
    assert phi3.detokenize_bytes(phi3.tokenize(nospace, add_special=False)) == nospace
    ids = gpt2.tokenize(raw, add_special=False, parse_special=True)
    assert all(0 <= i < gpt2.n_vocab for i in ids)
    text = _llama_lenient_decode(raw)
    if text is not None:  # (llama.cpp throws on code points past U+10FFFF; we keep their bytes)
        assert gpt2.tokenize(raw, add_special=False) == gpt2.tokenize(text, add_special=False)


def _llama_lenient_decode(raw: bytes) -> str | None:
    """llama.cpp's unicode_cpts_from_utf8: bit-pattern checks only, a bad byte -> U+FFFD."""
    out, i, n = [], 0, len(raw)
    while i < n:
        c = raw[i]
        cont = lambda k: i + k < n and (raw[i + k] & 0xC0) == 0x80  # noqa: E731
        if c < 0x80:
            out.append(c); i += 1
        elif not c & 0x40:
            out.append(0xFFFD); i += 1
        elif not c & 0x20:
            if cont(1):
                out.append(((c & 0x1F) << 6) | (raw[i + 1] & 0x3F)); i += 2
            else:
                out.append(0xFFFD); i += 1
        elif not c & 0x10:
            if cont(1) and cont(2):
                out.append(((c & 0x0F) << 12) | ((raw[i + 1] & 0x3F) << 6) | (raw[i + 2] & 0x3F)); i += 3
            else:
                out.append(0xFFFD); i += 1
        elif not c & 0x08:
            if cont(1) and cont(2) and cont(3):
                out.append(((c & 0x07) << 18) | ((raw[i + 1] & 0x3F) << 12) | ((raw[i + 2] & 0x3F) << 6)
                           | (raw[i + 3] & 0x3F)); i += 4
            else:
                out.append(0xFFFD); i += 1
        else:
            out.append(0xFFFD); i += 1
    if any(c > 0x10FFFF for c in out):
        return None
    return "".join(map(chr, out))


def test_errors(phi3, tmp_path):
    with pytest.raises(FileNotFoundError):
        Tokenizer.from_gguf(tmp_path / "missing.gguf")
    with pytest.raises(ValueError):
        phi3.token_to_piece(-1)
    with pytest.raises(ValueError):
        phi3.detokenize([1, 10**6])
    with pytest.raises(TypeError):
        phi3.tokenize(123)


# ------------------------------------------------------------------ streaming
def _stream(tok, ids, special=False):
    dec = tok.stream_decoder(special)
    parts = [dec.push(i) for i in ids]
    return parts, dec.flush()


def test_stream_holds_split_characters(phi3, gpt2):
    for tok in (phi3, gpt2):
        text = "llama 🦙 and 𝔘𝔫𝔦𝔠𝔬𝔡𝔢, 数字 ok"
        ids = tok.tokenize(text, add_special=False)
        parts, tail = _stream(tok, ids)
        assert tail == ""
        assert all("\ufffd" not in p for p in parts)
        pieces = b"".join(tok.token_to_piece(i) for i in ids)
        assert "".join(parts) == pieces.decode("utf-8")
        # some token must have ended mid-character, so something was held back
        assert len([p for p in parts if p == ""]) > 0


def test_stream_byte_tokens(phi3):
    byte = lambda b: phi3.token_id(f"<0x{b:02X}>")  # noqa: E731
    emoji = "🦙".encode()
    dec = phi3.stream_decoder()
    outs = [dec.push(byte(b)) for b in emoji]
    assert outs == ["", "", "", "🦙"] and dec.pending_bytes == 0
    # an incomplete tail comes out as U+FFFD on flush; a bad byte at once
    assert dec.push(byte(0xE2)) == "" and dec.push(byte(0x82)) == "" and dec.pending_bytes == 2
    assert dec.flush() == "\ufffd"
    assert dec.push(byte(0xFF)) == "\ufffd"
    assert dec.push(byte(0xE2)) == "" and dec.push(byte(0x41)) == "\ufffdA"


@settings(max_examples=150, deadline=None)
@given(bs=st.lists(st.integers(0, 255), max_size=24), special=st.booleans())
def test_stream_equals_replace_decoding(phi3, bs, special):
    ids = [phi3.token_id(f"<0x{b:02X}>") for b in bs]
    ids = [32007 if b % 7 == 0 else i for b, i in zip(bs, ids)]  # sprinkle a control token
    parts, tail = _stream(phi3, ids, special)
    want = b"".join(phi3.token_to_piece(i, special) for i in ids).decode("utf-8", "replace")
    assert "".join(parts) + tail == want


def test_detokenize_leading_space_rules(phi3):
    """llama.cpp strips the SentencePiece prefix space only from the very first token;
    after a BOS (kept or removed) the space stays."""
    hello = phi3.tokenize("Hello", add_special=False)
    assert phi3.token_to_piece(hello[0]) == b" Hello"
    assert phi3.detokenize(hello) == "Hello"
    assert phi3.detokenize([1] + hello) == " Hello"
    assert phi3.detokenize([1] + hello, remove_special=True) == " Hello"
    assert phi3.detokenize([1] + hello, special=True) == "<s> Hello"


def test_lone_surrogates_do_not_crash(phi3, gpt2):
    for tok in (phi3, gpt2):
        ids = tok.tokenize("a\ud800b", add_special=False)
        assert ids and all(0 <= i < tok.n_vocab for i in ids)
