"""The generation loop on tiny converted models: seeds, greedy, KV-cache reuse, stop tokens and
strings, context limits, the OpenAI-shaped API. Mechanics use a scripted fake model where the
real one (random weights) cannot be steered."""
from __future__ import annotations

import numpy as np
import pytest

import phicpp
from phicpp.generate import Generator, StopStrings, stop_token_ids
from phicpp.sampling import Sampler


@pytest.fixture(scope="module")
def phi3_gguf(tiny_gguf):
    return tiny_gguf("phi3_mini")


@pytest.fixture(scope="module")
def model(phi3_gguf):
    return phicpp.Model(phi3_gguf, n_ctx=256, n_threads=1)


# ---------------------------------------------------------------- a scripted model
class ScriptedModel:
    """Looks like phicpp.Model to the Generator; its next token is always script[n_past % len]."""

    def __init__(self, n_vocab: int, script: list[int], n_ctx: int = 64):
        self.n_vocab, self.script, self.n_ctx = n_vocab, script, n_ctx
        self.n_past = 0
        self.evals: list[int] = []  # tokens evaluated per call

    def eval(self, tokens, all_logits=False):
        if self.n_past + len(tokens) > self.n_ctx:
            raise phicpp.ContextOverflowError("overflow")
        self.n_past += len(tokens)
        self.evals.append(len(tokens))
        logits = np.zeros(self.n_vocab, dtype=np.float32)
        logits[self.script[(self.n_past - 1) % len(self.script)]] = 20.0
        return logits

    def reset(self):
        self.n_past = 0

    def truncate(self, n):
        self.n_past = min(self.n_past, n)


def test_stop_tokens_include_template_ends(model):
    tok = model.tokenizer
    ids = stop_token_ids(tok)
    assert set(tok.eog_ids) <= ids
    for t in ("<|end|>", "<|endoftext|>"):
        assert tok.token_id(t) in ids


def test_stops_at_eos_unless_ignored(model):
    tok = model.tokenizer
    a, b = tok.tokenize("hello", add_special=False)[0], tok.tokenize("world", add_special=False)[0]
    end = tok.token_id("<|end|>")
    fake = ScriptedModel(tok.n_vocab, [a, b, end])
    g = Generator(fake, tok)
    run = g.run([1, 5], Sampler(temperature=0), max_tokens=50).consume()
    # the scripted position after the 2-token prompt is index 1 -> b, then end
    assert run.finish_reason == "stop" and run.tokens == [b]
    g.forget()
    run = g.run([1, 5], Sampler(temperature=0), max_tokens=7, ignore_eos=True).consume()
    assert run.finish_reason == "length" and len(run.tokens) == 7 and end not in run.tokens


def test_kv_prefix_reuse_evaluates_only_new_tokens(model):
    tok = model.tokenizer
    fake = ScriptedModel(tok.n_vocab, [7, 8, 9], n_ctx=64)
    g = Generator(fake, tok)
    g.run(list(range(10, 20)), Sampler(temperature=0), max_tokens=3).consume()
    assert fake.evals[0] == 10
    fake.evals.clear()
    run = g.run(list(range(10, 25)), Sampler(temperature=0), max_tokens=1).consume()
    assert fake.evals[0] == 5 and run.timings.cached_tokens == 10
    fake.evals.clear()
    run = g.run(list(range(10, 25)), Sampler(temperature=0), max_tokens=1).consume()
    assert fake.evals[0] == 1  # all cached: only the last token again, for its logits
    # someone else moved the cache: the generator notices and starts over
    fake.n_past = 3
    fake.evals.clear()
    g.run(list(range(10, 25)), Sampler(temperature=0), max_tokens=1).consume()
    assert fake.evals[0] == 15


def test_context_full_ends_with_length(model):
    tok = model.tokenizer
    fake = ScriptedModel(tok.n_vocab, [30, 31, 32, 33], n_ctx=12)
    g = Generator(fake, tok)
    run = g.run(list(range(100, 108)), Sampler(temperature=0), max_tokens=-1).consume()
    assert run.finish_reason == "length" and fake.n_past == 12 and len(run.tokens) == 5
    with pytest.raises(phicpp.ContextOverflowError, match="context holds 12"):
        g.run(list(range(100, 113)), Sampler(), max_tokens=1).consume()


def test_stop_strings_hold_back_and_cut():
    s = StopStrings(["STOP", "\n\n"])
    out, parts = "", ["ab", "cS", "TO", "x", "yz S", "T", "OP tail"]
    for p in parts:
        text, stopped = s.push(p)
        out += text
        if stopped:
            break
    assert out == "abcSTOxyz " and stopped
    s = StopStrings(["</s>"])
    assert s.push("a<") == ("a", False)
    assert s.push("b") == ("<b", False)
    assert s.push("<") == ("", False)
    assert s.flush() == "<"
    assert StopStrings([]).push("x") == ("x", False)


def test_stop_string_in_generation(model):
    text = model.generate("Once", max_tokens=40, temperature=0, stream=False)
    assert len(text) > 6
    stop = text[3:6]
    cut = model.generate("Once", max_tokens=40, temperature=0, stream=False, stop=[stop])
    assert cut == text[: text.find(stop)] and model.last_run.finish_reason == "stop"


def test_same_seed_same_text_across_runs_and_threads(phi3_gguf):
    outs = []
    for threads in (1, 2, 1):
        m = phicpp.Model(phi3_gguf, n_ctx=128, n_threads=threads)
        outs.append(m.generate("The quick brown", max_tokens=30, temperature=1.0, top_k=0, top_p=1.0,
                               min_p=0.0, seed=1234, stream=False))
    assert outs[0] == outs[1] == outs[2] and len(outs[0]) > 10
    other = phicpp.Model(phi3_gguf, n_ctx=128, n_threads=1).generate(
        "The quick brown", max_tokens=30, temperature=1.0, top_k=0, top_p=1.0, min_p=0.0, seed=4321, stream=False)
    assert other != outs[0]


def test_greedy_equals_argmax_and_top_k_1(model):
    ids = model.tokenize("Hello there")
    model.reset()
    want = []
    logits = model.eval(ids)
    for _ in range(12):
        t = int(np.argmax(logits))
        want.append(t)
        logits = model.eval([t])
    model.reset()
    a = model.generate(ids, max_tokens=12, temperature=0, stream=False)
    assert model.last_run.tokens == want
    b = model.generate(ids, max_tokens=12, top_k=1, temperature=1.5, seed=9, stream=False)
    assert model.last_run.tokens == want and a == b


def test_stream_equals_whole_text(model):
    kw = dict(max_tokens=25, temperature=0.9, seed=77)
    pieces = list(model.generate("Stream me", **kw))
    assert len(pieces) > 1 and "".join(pieces) == model.generate("Stream me", stream=False, **kw)


def test_prompt_longer_than_context(model):
    with pytest.raises(phicpp.ContextOverflowError, match="prompt is"):
        model.generate("word " * 400, max_tokens=4, stream=False)


def test_create_completion_shape(model):
    r = model.create_completion("Hi", max_tokens=5, seed=1)
    assert r["object"] == "text_completion" and r["id"].startswith("cmpl-")
    assert isinstance(r["created"], int) and r["model"] == model.path
    (c,) = r["choices"]
    assert c["index"] == 0 and c["finish_reason"] in ("stop", "length") and isinstance(c["text"], str)
    u = r["usage"]
    assert u["prompt_tokens"] == len(model.tokenize("Hi", parse_special=True))
    assert u["total_tokens"] == u["prompt_tokens"] + u["completion_tokens"]
    chunks = list(model.create_completion("Hi", max_tokens=5, seed=1, stream=True))
    assert all(ch["object"] == "text_completion" for ch in chunks)
    assert "".join(ch["choices"][0]["text"] for ch in chunks) == c["text"]
    assert chunks[-1]["choices"][0]["finish_reason"] == c["finish_reason"]
    assert all(ch["choices"][0]["finish_reason"] is None for ch in chunks[:-1])


def test_completion_echo_and_call(model):
    # llama-cpp-python's llm(prompt, ..., echo=True): the prompt's text, then the completion's
    plain = model.create_completion("Hi", max_tokens=5, seed=3)["choices"][0]["text"]
    r = model("Hi", max_tokens=5, seed=3, echo=True)
    assert r["object"] == "text_completion" and r["choices"][0]["text"] == "Hi" + plain
    chunks = list(model.create_completion("Hi", max_tokens=5, seed=3, echo=True, stream=True))
    assert "".join(ch["choices"][0]["text"] for ch in chunks) == "Hi" + plain
    ids = model.tokenize("Hi")
    r = model.create_completion(ids, max_tokens=5, seed=3, echo=True)
    assert r["choices"][0]["text"] == model.detokenize(ids) + plain
    with pytest.raises(ValueError, match="log-probabilities"):
        model.create_completion("Hi", max_tokens=2, logprobs=3)


def test_create_chat_completion_shape(model):
    msgs = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}]
    r = model.create_chat_completion(msgs, max_tokens=6, seed=2)
    assert r["object"] == "chat.completion" and r["id"].startswith("chatcmpl-")
    (c,) = r["choices"]
    assert c["message"]["role"] == "assistant" and c["finish_reason"] in ("stop", "length")
    assert r["usage"]["completion_tokens"] <= 6
    chunks = list(model.create_chat_completion(msgs, max_tokens=6, seed=2, stream=True))
    assert all(ch["object"] == "chat.completion.chunk" for ch in chunks)
    assert chunks[0]["choices"][0]["delta"] == {"role": "assistant"}
    assert chunks[-1]["choices"][0]["delta"] == {} and chunks[-1]["choices"][0]["finish_reason"] == c["finish_reason"]
    assert "".join(ch["choices"][0]["delta"].get("content", "") for ch in chunks) == c["message"]["content"]
    with pytest.raises(ValueError):
        model.create_chat_completion([], max_tokens=2)


def test_bad_sampling_values_raise(model):
    with pytest.raises(ValueError, match="top_p"):
        model.generate("x", top_p=2.0, stream=False)
