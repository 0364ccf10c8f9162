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
        self.version = 0  # cache_version(): bumped by every change, as phicpp.Model's
        self.evals: list[int] = []  # tokens evaluated per call

    def cache_version(self, seq=0):
        return self.version

    def eval(self, tokens, all_logits=False):
        if self.n_past + len(tokens) > self.n_ctx:
            raise phicpp.ContextOverflowError("overflow")
        self.n_past += len(tokens)
        self.version += 1
        self.evals.append(len(tokens))
        logits = np.zeros(self.n_vocab, dtype=np.float32)
        logits[self.script[(self.n_past - 1) % len(self.script)]] = 20.0
        return logits

    def reset(self):
        self.n_past = 0
        self.version += 1

    def truncate(self, n):
        self.n_past = min(self.n_past, n)
        self.version += 1


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


def _log_softmax(x):
    x = np.asarray(x, dtype=np.float64)
    m = x.max()
    return x - (m + np.log(np.exp(x - m).sum()))


def test_token_logprobs_against_numpy():
    from phicpp.generate import token_logprobs
    rng = np.random.default_rng(5)
    for n in (1, 7, 1000):
        x = rng.normal(size=n).astype(np.float32) * 4
        x[::3] = x[0]  # ties: the lower id first
        if n > 3:
            x[1] = -np.inf  # a masked token (ignore_eos)
        ref = _log_softmax(x)
        for top in (0, 1, 3, n + 2):
            lp, best = token_logprobs(x, n - 1, top)
            assert lp == pytest.approx(ref[n - 1], abs=1e-9)
            order = sorted(range(n), key=lambda i: (-ref[i], i))[: min(top, n)]
            assert [i for i, _ in best] == order
            assert np.allclose([v for _, v in best], ref[order])


def test_completion_logprobs_are_the_models(model):
    # greedy: each token's log-probability is log_softmax of the logits it was sampled from
    ids = model.tokenize("Hello there")
    r = model.create_completion(ids, max_tokens=8, temperature=0, logprobs=3)
    lp = r["choices"][0]["logprobs"]
    toks = model.last_run.tokens
    model.reset()
    logits, want = model.eval(ids), []
    for t in toks:
        want.append(_log_softmax(logits)[t])
        logits = model.eval([t])
    assert len(lp["token_logprobs"]) == len(toks) == r["usage"]["completion_tokens"]
    assert np.allclose(lp["token_logprobs"], want, atol=1e-5)
    text = r["choices"][0]["text"]
    assert lp["text_offset"] == sorted(lp["text_offset"]) and all(0 <= o <= len(text) for o in lp["text_offset"])
    for tok_text, off, top, v in zip(lp["tokens"], lp["text_offset"], lp["top_logprobs"], lp["token_logprobs"]):
        assert text.startswith(tok_text, off)
        assert tok_text in top and 3 <= len(top) <= 4 and max(top.values()) == pytest.approx(v)  # greedy: the likeliest
    # streamed: the same tokens and values, each chunk carrying those whose text begins in it
    chunks = list(model.create_completion(ids, max_tokens=8, temperature=0, logprobs=3, stream=True))
    got = [c["choices"][0]["logprobs"] for c in chunks]
    assert sum((g["token_logprobs"] for g in got), []) == pytest.approx(lp["token_logprobs"])
    assert sum((g["text_offset"] for g in got), []) == lp["text_offset"]
    assert "".join(c["choices"][0]["text"] for c in chunks) == text


@pytest.mark.parametrize("stream", [False, True])
def test_echo_with_logprobs_scores_the_prompt(model, stream):
    # llama-cpp-python's way to score a text: echo=True, logprobs=N. Each prompt token after
    # the first gets log_softmax of the logits after the tokens before it (one token at a
    # time here, for the reference); the first gets null, as in OpenAI's API; then the
    # completion's tokens as without echo, their offsets counted from the prompt's start
    text = "Once upon a time there was a little"
    ids = model.tokenize(text)
    plain = model.create_completion(ids, max_tokens=6, temperature=0, logprobs=2)
    r = model.create_completion(ids, max_tokens=6, temperature=0, logprobs=2, echo=True, stream=stream)
    if stream:
        chunks = list(r)
        got = {k: sum((c["choices"][0]["logprobs"][k] for c in chunks), [])
               for k in ("tokens", "text_offset", "token_logprobs", "top_logprobs")}
        out_text = "".join(c["choices"][0]["text"] for c in chunks)
    else:
        got, out_text = r["choices"][0]["logprobs"], r["choices"][0]["text"]
    head = model.detokenize(ids)
    assert out_text == head + plain["choices"][0]["text"]
    bos = model.tokenizer.bos_id
    listed = ids[1:] if ids[0] == bos else ids
    n_prompt = len(listed)
    assert got["token_logprobs"][0] is None and got["top_logprobs"][0] is None
    model.reset()
    want = []
    for i, t in enumerate(ids):
        if i > 0 and (ids[0] != bos or i > 1):
            want.append(_log_softmax(logits)[t])
        logits = model.eval([t])
    assert np.allclose(got["token_logprobs"][1:n_prompt], want, atol=1e-4)
    for top, v in zip(got["top_logprobs"][1:n_prompt], got["token_logprobs"][1:n_prompt]):
        assert 2 <= len(top) <= 3 and min(top.values()) <= v <= max(top.values()) + 1e-6
    # the completion's part: what logprobs gives without echo
    lp = plain["choices"][0]["logprobs"]
    assert got["tokens"][n_prompt:] == lp["tokens"]
    assert np.allclose(got["token_logprobs"][n_prompt:], lp["token_logprobs"], atol=1e-4)
    assert got["text_offset"][n_prompt:] == [o + len(head) for o in lp["text_offset"]]
    # every offset is where its token's text starts in the returned text
    assert got["text_offset"] == sorted(got["text_offset"])
    for tok_text, off in zip(got["tokens"], got["text_offset"]):
        assert out_text.startswith(tok_text, off), (tok_text, off)
    # a prompt of one token: nothing to score but the completion
    r = model.create_completion(ids[-1:], max_tokens=2, temperature=0, logprobs=1, echo=True)["choices"][0]
    assert r["logprobs"]["token_logprobs"][0] is None and len(r["logprobs"]["tokens"]) == 3
    # a prompt given as text is echoed as given: the offsets follow it
    r = model.create_completion(text, max_tokens=3, temperature=0, logprobs=1, echo=True)
    got, out_text = r["choices"][0]["logprobs"], r["choices"][0]["text"]
    assert out_text.startswith(text)
    for tok_text, off in zip(got["tokens"], got["text_offset"]):
        assert out_text.startswith(tok_text if off else tok_text.lstrip(" "), off), (tok_text, off)


def test_logprobs_leave_out_a_stop_strings_tokens(model):
    text = model.generate("Once", max_tokens=40, temperature=0, stream=False)
    stop = text[3:6]
    r = model.create_completion("Once", max_tokens=40, temperature=0, stop=[stop], logprobs=0)
    cut = r["choices"][0]["text"]
    lp = r["choices"][0]["logprobs"]
    assert cut == text[: text.find(stop)]
    assert lp["text_offset"] and all(o < len(cut) for o in lp["text_offset"])
    assert "".join(lp["tokens"]).startswith(cut)
    assert all(len(t) == 1 for t in lp["top_logprobs"])  # logprobs=0: the chosen token alone
    streamed = list(model.create_completion("Once", max_tokens=40, temperature=0, stop=[stop], logprobs=0,
                                            stream=True))
    assert sum((c["choices"][0]["logprobs"]["text_offset"] for c in streamed), []) == lp["text_offset"]


def test_chat_logprobs(model):
    msgs = [{"role": "user", "content": "Hi"}]
    plain = model.create_chat_completion(msgs, max_tokens=6, seed=2)
    assert plain["choices"][0]["logprobs"] is None
    r = model.create_chat_completion(msgs, max_tokens=6, seed=2, logprobs=True, top_logprobs=2)
    c = r["choices"][0]
    assert c["message"]["content"] == plain["choices"][0]["message"]["content"]  # scoring changes nothing
    content = c["logprobs"]["content"]
    assert len(content) == len(model.last_run.tokens)
    for e, tok in zip(content, model.last_run.tokens):
        assert bytes(e["bytes"]) == model.tokenizer.token_to_piece(tok, special=False)
        assert e["logprob"] <= 0 and len(e["top_logprobs"]) == 2
        assert e["top_logprobs"][0]["logprob"] >= e["top_logprobs"][1]["logprob"] >= e["logprob"] - 50
    chunks = list(model.create_chat_completion(msgs, max_tokens=6, seed=2, logprobs=True, stream=True))
    streamed = sum((ch["choices"][0]["logprobs"]["content"] for ch in chunks if ch["choices"][0]["logprobs"]), [])
    assert [e["logprob"] for e in streamed] == pytest.approx([e["logprob"] for e in content])
    assert all(e["top_logprobs"] == [] for e in streamed)  # top_logprobs not asked
    with pytest.raises(ValueError, match="top_logprobs needs logprobs"):
        model.create_chat_completion(msgs, max_tokens=2, top_logprobs=2)
    for bad in (-1, 1.5, True):
        with pytest.raises(ValueError, match="must be an integer"):
            model.create_completion("Hi", max_tokens=2, logprobs=bad)


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
