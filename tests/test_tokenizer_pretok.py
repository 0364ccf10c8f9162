"""The hand-written pre-tokenizer splitters against the regexes themselves, as
HF `tokenizers` runs them (Oniguruma): Split(Regex(...), "isolated") gives the
reference words for random text; llama.cpp's "default" is four such splits in turn."""
from __future__ import annotations

import os

import pytest
from hypothesis import example, given, settings, strategies as st

from phicpp import _core

GPT2 = r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"
CL100K = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*"
          r"|\s*[\r\n]+|\s+(?!\S)|\s+")
O200K = (r"[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]*[\p{Ll}\p{Lm}\p{Lo}\p{M}]+(?i:'s|'t|'re|'ve|'m|'ll|'d)?"
         r"|[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]+[\p{Ll}\p{Lm}\p{Lo}\p{M}]*(?i:'s|'t|'re|'ve|'m|'ll|'d)?"
         r"|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n/]*|\s*[\r\n]+|\s+(?!\S)|\s+")
DEFAULT = [r"[\p{P}\$\+<=>\^~\|]+", GPT2, r"\p{N}+", r"[0-9][0-9][0-9]"]
KINDS = {"gpt2": (0, [GPT2]), "cl100k": (1, [CL100K]), "o200k": (2, [O200K]), "default": (3, DEFAULT)}

# examples per property (PHICPP_TOK_EXAMPLES=2000 for a long soak)
N_EXAMPLES = int(os.environ.get("PHICPP_TOK_EXAMPLES", "150"))


@pytest.fixture(scope="module", params=list(KINDS))
def splitter(request):
    from tokenizers import Regex, pre_tokenizers

    kind, regexes = KINDS[request.param]
    ref = pre_tokenizers.Sequence([pre_tokenizers.Split(Regex(r), behavior="isolated") for r in regexes])
    return kind, ref


def ours(kind: int, text: str) -> list[str]:
    return [w.decode("utf-8") for w in _core._pretokenize(kind, text.encode("utf-8"))]


# assigned code points, weighted towards the classes the regexes distinguish
chars = st.one_of(
    st.characters(blacklist_categories=("Cs", "Cn", "Co")),
    st.sampled_from(list(" \t\n\r\x0b\x0c\x85\u00a0\u2009\u3000'sStTdDmMlLrReEvV/.,!?(){}<>$+=^~|_-0123456789")),
    st.sampled_from(list("aAzZéÉßǅʰ\u0301\u0308ΣσДд数ー한ⅷ½²٣ſK")),
)


@settings(max_examples=N_EXAMPLES, deadline=None)
@given(text=st.text(chars, max_size=40))
@example(text="Hello  world\n\n  it's I'M 'ſ x\u0301 ǅemal ʰi 12345 1.5e-10 a->b /path/ \r\n\t ")
@example(text="  \t\n  x   ")
@example(text="ΣΊΣΥΦΟΣ's AbcDEF abcDef\u0301X")
def test_pretokenizer_matches_regex(splitter, text):
    kind, ref = splitter
    want = [w for w, _ in ref.pre_tokenize_str(text)]
    assert ours(kind, text) == want
