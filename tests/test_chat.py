"""Chat templates against Hugging Face's apply_chat_template, the built-in fallbacks, and the
multi-turn session: only the new turn evaluated, oldest turns trimmed when the context fills."""
from __future__ import annotations

from pathlib import Path

import pytest

import phicpp
from phicpp.chat import PHI3_TEMPLATE, PHI4_TEMPLATE, ChatSession, ChatTemplate, chat_tokens, guess_builtin
from phicpp.generate import Generator
from phicpp.sampling import Sampler
from phicpp.tokenizer import Tokenizer

FIXTURE = Path(__file__).parent / "data" / "microsoft-Phi-3.5-mini-instruct.jinja"  # see data/README.md
CONVO = [
    {"role": "system", "content": "You are terse."},
    {"role": "user", "content": "Hi there"},
    {"role": "assistant", "content": "Hello."},
    {"role": "user", "content": "What is 2+2?\nAnswer briefly."},
]


@pytest.fixture(scope="module")
def ggufs(tiny_model, module_tmp):
    d = module_tmp("chat")
    out = {}
    for kind in ("phi3_mini", "phi4", "phi2"):
        out[kind] = d / f"{kind}.gguf"
        phicpp.convert_hf_to_gguf(tiny_model(kind).path, out[kind], "f16")
    return out


@pytest.mark.parametrize("kind", ["phi3_mini", "phi4"])
@pytest.mark.parametrize("gen", [True, False])
def test_gguf_template_matches_transformers(kind, gen, ggufs, tiny_model):
    from transformers import AutoTokenizer

    hf = AutoTokenizer.from_pretrained(tiny_model(kind).path)
    want = hf.apply_chat_template(CONVO, tokenize=False, add_generation_prompt=gen)
    m = phicpp.GGUFFile(ggufs[kind])
    t = ChatTemplate.for_model(m.metadata, Tokenizer.from_gguf(ggufs[kind]))
    assert t.name == "gguf"
    assert t.render(CONVO, add_generation_prompt=gen) == want


def test_builtin_phi3_is_the_phi35_template():
    fixture = ChatTemplate(FIXTURE.read_text(encoding="utf-8"), eos_token="<|endoftext|>")
    builtin = ChatTemplate(PHI3_TEMPLATE, eos_token="<|endoftext|>")
    for gen in (True, False):
        assert builtin.render(CONVO, gen) == fixture.render(CONVO, gen)
    assert builtin.render(CONVO[1:2]) == "<|user|>\nHi there<|end|>\n<|assistant|>\n"


def test_builtin_phi4_renders_im_tokens():
    assert ChatTemplate(PHI4_TEMPLATE).render(CONVO[:2]) == (
        "<|im_start|>system<|im_sep|>You are terse.<|im_end|>"
        "<|im_start|>user<|im_sep|>Hi there<|im_end|><|im_start|>assistant<|im_sep|>")


def test_fallback_chosen_from_vocab(ggufs):
    assert guess_builtin(Tokenizer.from_gguf(ggufs["phi3_mini"])) == "phi3"
    assert guess_builtin(Tokenizer.from_gguf(ggufs["phi4"])) == "phi4"
    assert guess_builtin(Tokenizer.from_gguf(ggufs["phi2"])) == "plain"
    # a GGUF without tokenizer.chat_template gets the built-in template its vocab fits
    t = ChatTemplate.for_model({}, Tokenizer.from_gguf(ggufs["phi4"]))
    assert t.name == "phi4"
    plain = ChatTemplate.for_model({}, Tokenizer.from_gguf(ggufs["phi2"]))
    assert plain.render(CONVO[1:2]) == "user: Hi there\nassistant:" and "\nuser:" in plain.stop


def test_template_errors_are_value_errors():
    with pytest.raises(ValueError, match="does not compile"):
        ChatTemplate("{% for %}")
    t = ChatTemplate("{{ raise_exception('roles must alternate') }}")
    with pytest.raises(ValueError, match="roles must alternate"):
        t.render(CONVO)


def test_chat_tokens_parse_special_tokens(ggufs):
    tok = Tokenizer.from_gguf(ggufs["phi3_mini"])
    ids = chat_tokens(ChatTemplate(PHI3_TEMPLATE), tok, CONVO[1:2])
    assert tok.token_id("<|user|>") in ids and tok.token_id("<|end|>") in ids
    # Phi-3's added tokens strip the whitespace after them (rstrip), as in llama.cpp and HF
    assert ids[-1] == tok.token_id("<|assistant|>")


def _session(path, n_ctx=512, system=None):
    m = phicpp.Model(path, n_ctx=n_ctx, n_threads=1)
    return ChatSession(Generator(m, m.tokenizer), ChatTemplate.builtin("phi3", m.tokenizer), system)


def test_second_turn_evaluates_only_the_new_turn(ggufs):
    s = _session(ggufs["phi3_mini"], system="Be kind.")
    first = s.send("Hello", Sampler(seed=1), max_tokens=8).consume()
    assert first.timings.cached_tokens == 0
    n_before = len(s.generator.cached)
    second = s.send("And again?", Sampler(seed=2), max_tokens=8).consume()
    # the system prompt and first user turn (at least) come from the cache
    assert second.timings.cached_tokens >= first.prompt_tokens
    assert second.timings.prompt_tokens < second.prompt_tokens
    assert [m["role"] for m in s.messages] == ["system", "user", "assistant", "user", "assistant"]
    assert s.messages[2]["content"] == first.text and n_before > 0
    # the reused cache gives the same reply as evaluating the whole prompt from scratch
    fresh = _session(ggufs["phi3_mini"], system="Be kind.")
    fresh.messages = [dict(m) for m in s.messages[:3]]
    again = fresh.send("And again?", Sampler(seed=2), max_tokens=8).consume()
    assert again.tokens == second.tokens


def test_interrupted_reply_is_kept(ggufs):
    s = _session(ggufs["phi3_mini"])
    calls = {"n": 0}

    def stop_after_3():
        calls["n"] += 1
        return calls["n"] > 3

    run = s.send("Tell me a story", Sampler(seed=3), max_tokens=100, ignore_eos=True,
                 should_stop=stop_after_3).consume()
    assert run.interrupted and len(run.tokens) == 3
    assert s.messages[-1] == {"role": "assistant", "content": run.text}
    s.send("Go on", Sampler(seed=4), max_tokens=3).consume()
    assert len(s.messages) == 4
    s.clear()
    assert s.messages == []


def test_oldest_turns_trimmed_when_context_fills(ggufs):
    s = _session(ggufs["phi3_mini"], n_ctx=128, system="Sys.")
    s.reply_room = 16
    for i in range(12):
        s.send(f"message number {i} with some words", Sampler(seed=i), max_tokens=12, ignore_eos=True).consume()
        assert len(s.generator.cached) <= 128
    assert s.trimmed > 0
    assert s.messages[0] == {"role": "system", "content": "Sys."}
    assert s.messages[1]["role"] == "user" and "message number 11" in s.messages[-2]["content"]
    with pytest.raises(phicpp.ContextOverflowError):
        s.send("word " * 300, Sampler(), max_tokens=4)


def test_message_shapes():
    """Content as OpenAI sends it: a string, null, or text parts (joined by newlines, as
    llama-server joins them); anything else, and a role that is not a string, is a ValueError."""
    from phicpp.chat import _check_messages
    msgs = _check_messages([{"role": "user", "content": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}]},
                            {"role": "assistant", "content": None}, {"role": "user"}])
    assert [m["content"] for m in msgs] == ["a\nb", "", ""]
    for bad, where in (([{"role": 1, "content": "x"}], "role"), ([{"role": "", "content": "x"}], "role"),
                       ([{"role": "user", "content": 5}], "content"),
                       ([{"role": "user", "content": [{"type": "image_url", "image_url": {}}]}], "content[0]"),
                       ([{"role": "user", "content": ["x"]}], "content[0]"), ([], "empty"), (["x"], "messages[0]")):
        with pytest.raises(ValueError, match=where.replace("[", r"\[").replace("]", r"\]")):
            _check_messages(bad)
