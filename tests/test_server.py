"""`phicpp serve` with the real openai client on a loopback port: the endpoints, streaming
equal to whole answers, batch invariance end to end, bad input, dropped streams, a load
test, shutdown."""
from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

import phicpp

openai = pytest.importorskip("openai")
httpx = pytest.importorskip("httpx")
uvicorn = pytest.importorskip("uvicorn")

from phicpp.server import create_app  # noqa: E402

PARALLEL = 4


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Running:
    """A server on a thread of this process."""

    def __init__(self, model, parallel=PARALLEL):
        self.app = create_app(model, parallel=parallel, model_name="tiny")
        self.port = free_port()
        self.server = uvicorn.Server(uvicorn.Config(self.app, host="127.0.0.1", port=self.port, log_level="error"))
        self.thread = threading.Thread(target=self.server.run, daemon=True)
        self.thread.start()
        t0 = time.time()
        while not self.server.started:
            assert time.time() - t0 < 30, "the server did not start"
            time.sleep(0.05)
        self.url = f"http://127.0.0.1:{self.port}"
        self.client = openai.OpenAI(base_url=self.url + "/v1", api_key="none", max_retries=0, timeout=60)

    def stop(self):
        self.server.should_exit = True
        self.thread.join(timeout=30)


@pytest.fixture(scope="module")
def gguf(tiny_gguf):
    return tiny_gguf("phi3_mini")


@pytest.fixture(scope="module")
def srv(gguf):
    m = phicpp.Model(gguf, n_ctx=96, n_threads=2, n_seq=PARALLEL)
    r = Running(m)
    yield r
    r.stop()


def chat(srv, text, **kw):
    kw.setdefault("max_tokens", 12)
    kw.setdefault("temperature", 0)
    return srv.client.chat.completions.create(model="tiny", messages=[{"role": "user", "content": text}], **kw)


def test_models_and_health(srv):
    models = srv.client.models.list()
    assert [m.id for m in models.data] == ["tiny"]
    r = httpx.get(srv.url + "/health")
    assert r.status_code == 200 and r.json() == {"status": "ok"}


def test_chat_completion(srv):
    r = chat(srv, "hello there")
    assert r.object == "chat.completion"
    c = r.choices[0]
    assert c.message.role == "assistant" and isinstance(c.message.content, str)
    assert c.finish_reason in ("stop", "length")
    assert r.usage.prompt_tokens > 0 and r.usage.total_tokens == r.usage.prompt_tokens + r.usage.completion_tokens
    assert r.usage.completion_tokens <= 12


def test_text_completion(srv):
    r = srv.client.completions.create(model="tiny", prompt="def add(a, b):", max_tokens=10, temperature=0)
    assert r.object == "text_completion"
    assert isinstance(r.choices[0].text, str) and r.choices[0].finish_reason in ("stop", "length")
    assert r.usage.completion_tokens <= 10


def test_completion_echo(srv):
    # echo: the prompt's text, then the completion's, whole and streamed
    kw = dict(model="tiny", prompt="def add(a, b):", max_tokens=8, temperature=0)
    plain = srv.client.completions.create(**kw).choices[0].text
    assert srv.client.completions.create(**kw, echo=True).choices[0].text == "def add(a, b):" + plain
    streamed = "".join(c.choices[0].text for c in srv.client.completions.create(**kw, echo=True, stream=True)
                       if c.choices)
    assert streamed == "def add(a, b):" + plain


def test_completion_echo_with_logprobs_scores_the_prompt(srv, gguf):
    # llama-cpp-python's way to score a text, through the server: the prompt's tokens (the
    # first with null, as in OpenAI's API) then the completion's, whole and streamed, with
    # what the Python API gives for the same request
    text = "Once upon a time there was"
    kw = dict(model="tiny", prompt=text, max_tokens=6, temperature=0, logprobs=2, echo=True)
    whole = srv.client.completions.create(**kw).choices[0]
    want = phicpp.Model(gguf, n_ctx=256, n_threads=1).create_completion(
        text, max_tokens=6, temperature=0, logprobs=2, echo=True)["choices"][0]
    assert whole.text == want["text"] and whole.text.startswith(text)
    lp, ref = whole.logprobs, want["logprobs"]
    assert lp.tokens == ref["tokens"] and lp.text_offset == ref["text_offset"]
    assert lp.token_logprobs[0] is None and lp.top_logprobs[0] is None
    assert np.allclose(lp.token_logprobs[1:], ref["token_logprobs"][1:], atol=1e-4)
    for off, tok in zip(lp.text_offset, lp.tokens):  # (the first word's text: without its space)
        assert whole.text.startswith(tok if off else tok.lstrip(" "), off), (tok, off)
    chunks = [c.choices[0] for c in srv.client.completions.create(**kw, stream=True) if c.choices]
    assert "".join(c.text for c in chunks) == whole.text
    assert chunks[0].text == text and len(chunks[0].logprobs.tokens) == len(ref["tokens"]) - len(
        srv.client.completions.create(**{**kw, "echo": False}).choices[0].logprobs.tokens)
    assert sum((c.logprobs.text_offset for c in chunks if c.logprobs), []) == lp.text_offset
    assert np.allclose(sum((c.logprobs.token_logprobs for c in chunks if c.logprobs), [])[1:],
                       lp.token_logprobs[1:], atol=1e-6)


def test_stream_equals_whole(srv):
    for text in ("tell me a story", "x = 1"):
        whole = chat(srv, text, max_tokens=20)
        chunks = list(chat(srv, text, max_tokens=20, stream=True))
        assert chunks[0].choices[0].delta.role == "assistant"
        got = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
        assert got == whole.choices[0].message.content
        assert chunks[-1].choices[0].finish_reason == whole.choices[0].finish_reason
        assert chunks[-1].usage.completion_tokens == whole.usage.completion_tokens
        comp = srv.client.completions.create(model="tiny", prompt=text, max_tokens=15, temperature=0)
        parts = list(srv.client.completions.create(model="tiny", prompt=text, max_tokens=15, temperature=0,
                                                   stream=True))
        assert "".join(p.choices[0].text for p in parts) == comp.choices[0].text


def test_stream_usage_option(srv):
    chunks = list(chat(srv, "hi", stream=True, stream_options={"include_usage": True}))
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens > 0


def test_same_tokens_alone_and_batched(srv):
    """Batch invariance: each request's greedy answer is the same whatever runs beside it."""
    prompts = [f"request number {i}: {'abc ' * i}" for i in range(8)]
    alone = [chat(srv, p, max_tokens=16).choices[0].message.content for p in prompts]
    with ThreadPoolExecutor(8) as ex:
        together = list(ex.map(lambda p: chat(srv, p, max_tokens=16).choices[0].message.content, prompts))
    assert together == alone


def test_seeded_sampling_repeats(srv):
    a = chat(srv, "pick words", temperature=0.9, seed=7, max_tokens=16).choices[0].message.content
    b = chat(srv, "pick words", temperature=0.9, seed=7, max_tokens=16).choices[0].message.content
    assert a == b


def test_penalties_and_top_p_accepted(srv):
    r = chat(srv, "go", temperature=0.7, top_p=0.5, presence_penalty=1.0, frequency_penalty=0.5, seed=1)
    assert r.choices[0].finish_reason in ("stop", "length")


@pytest.mark.parametrize("body,param", [
    ({"messages": "hi"}, "messages"),
    ({}, "messages"),
    ({"messages": [{"content": "no role"}]}, "messages"),
    ({"messages": [{"role": "user", "content": "x"}], "max_tokens": -3}, "max_tokens"),
    ({"messages": [{"role": "user", "content": "x"}], "max_tokens": "ten"}, "max_tokens"),
    ({"messages": [{"role": "user", "content": "x"}], "temperature": "hot"}, "temperature"),
    ({"messages": [{"role": "user", "content": "x"}], "temperature": 9}, "temperature"),
    ({"messages": [{"role": "user", "content": "x"}], "n": 2}, "n"),
    ({"messages": [{"role": "user", "content": "x"}], "stop": 5}, "stop"),
    ({"messages": [{"role": "user", "content": "x"}], "stream": "yes"}, "stream"),
    ({"messages": [{"role": "user", "content": "x"}], "top_p": 5}, "top_p"),
    ({"messages": [{"role": "user", "content": "x"}], "min_p": -1}, "min_p"),
    ({"messages": [{"role": "user", "content": "x"}], "logprobs": "yes"}, "logprobs"),
    ({"messages": [{"role": "user", "content": "x"}], "top_logprobs": 2}, "top_logprobs"),  # needs logprobs
    ({"messages": [{"role": "user", "content": "x"}], "logprobs": True, "top_logprobs": 21}, "top_logprobs"),
])
def test_bad_requests_get_openai_errors(srv, body, param):
    r = httpx.post(srv.url + "/v1/chat/completions", json=body)
    assert r.status_code == 400, r.text
    err = r.json()["error"]
    assert err["type"] == "invalid_request_error" and err["message"] and err["param"] == param


def test_bad_json_and_long_prompt(srv):
    r = httpx.post(srv.url + "/v1/chat/completions", content=b"{not json", headers={"content-type": "application/json"})
    assert r.status_code == 400 and "JSON" in r.json()["error"]["message"]
    r = httpx.post(srv.url + "/v1/completions", json={"prompt": "word " * 500})
    assert r.status_code == 400 and r.json()["error"]["code"] == "context_length_exceeded"
    assert r.json()["error"]["param"] == "prompt"
    for extra in ({"logprobs": 21}, {"logprobs": -1}):
        r = httpx.post(srv.url + "/v1/completions", json={"prompt": "hi", "max_tokens": 2, **extra})
        assert r.status_code == 400 and r.json()["error"]["param"] == "logprobs", r.text
    r = httpx.post(srv.url + "/v1/completions", json={"prompt": "hi", "max_tokens": 2, "logprobs": None, "echo": False})
    assert r.status_code == 200, r.text
    r = httpx.post(srv.url + "/v1/completions", json={"prompt": [1, 2, 10**9]})
    assert r.status_code == 400
    r = httpx.post(srv.url + "/v1/completions", json={"prompt": 5})
    assert r.status_code == 400 and r.json()["error"]["param"] == "prompt"
    with pytest.raises(openai.BadRequestError):
        chat(srv, "word " * 500)
    r = httpx.post(srv.url + "/v1/chat/completions", json={"messages": [{"role": "user", "content": "word " * 500}]})
    assert r.json()["error"]["param"] == "messages"
    assert chat(srv, "still serving").choices[0].finish_reason in ("stop", "length")


def test_dropped_stream_frees_its_sequence(srv):
    engine = srv.app.state.engine
    body = {"model": "tiny", "messages": [{"role": "user", "content": "a long answer"}], "max_tokens": 80,
            "temperature": 0.8, "stream": True}
    with httpx.stream("POST", srv.url + "/v1/chat/completions", json=body, timeout=30) as r:
        assert r.status_code == 200
        lines = r.iter_lines()
        first = next(line for line in lines if line.startswith("data: "))
        assert json.loads(first[6:])["object"] == "chat.completion.chunk"
    t0 = time.time()
    while len(engine.free) < PARALLEL:
        assert time.time() - t0 < 10, "the dropped stream kept its sequence"
        time.sleep(0.05)
    assert chat(srv, "after the drop").choices[0].finish_reason in ("stop", "length")


def test_load_64_requests_8_at_a_time(srv):
    def one(i):
        if i % 2:
            r = chat(srv, f"load {i}", max_tokens=12, temperature=0.5, seed=i)
            return r.choices[0].finish_reason
        chunks = list(chat(srv, f"load {i}", max_tokens=12, stream=True))
        return chunks[-1].choices[0].finish_reason

    t0 = time.time()
    with ThreadPoolExecutor(8) as ex:
        reasons = list(ex.map(one, range(64)))
    assert all(r in ("stop", "length") for r in reasons)
    assert time.time() - t0 < 300
    assert len(srv.app.state.engine.free) == PARALLEL


def test_shutdown_ends_running_streams(gguf):
    m = phicpp.Model(gguf, n_ctx=512, n_threads=2, n_seq=2)
    r = Running(m, parallel=2)
    try:
        body = {"messages": [{"role": "user", "content": "go on"}], "max_tokens": 400, "temperature": 1.0,
                "top_p": 1.0, "seed": 3, "stream": True}
        events = []
        with httpx.stream("POST", r.url + "/v1/chat/completions", json=body, timeout=30) as resp:
            for line in resp.iter_lines():
                if not line.startswith("data: "):
                    continue
                events.append(line[6:])
                if len(events) == 3:
                    threading.Thread(target=r.app.state.engine.stop).start()
        assert events[-1] == "[DONE]"
        last = json.loads(events[-2])
        assert last["choices"][0]["finish_reason"] in ("stop", "length")
        r.app.state.engine.thread.join(timeout=10)  # it returns right after handing over the last events
        assert not r.app.state.engine.thread.is_alive()
    finally:
        r.stop()


def test_cli_serve_stops_on_sigterm(gguf):
    port = free_port()
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    p = subprocess.Popen([sys.executable, "-m", "phicpp", "serve", "-m", str(gguf), "--port", str(port), "-np", "2",
                          "-c", "256", "-t", "1", "--device", "cpu"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                         env=env)
    try:
        t0 = time.time()
        while True:
            try:
                if httpx.get(f"http://127.0.0.1:{port}/health", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert p.poll() is None, p.stderr.read().decode()
            assert time.time() - t0 < 60, "phicpp serve did not come up"
            time.sleep(0.2)
        c = openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="none", max_retries=0)
        r = c.completions.create(model="x", prompt="print(", max_tokens=4, temperature=0)
        assert r.choices[0].finish_reason in ("stop", "length")
        p.send_signal(signal.SIGTERM)
        assert p.wait(timeout=30) == 0
        err = p.stderr.read().decode()
        assert "Traceback" not in err
    finally:
        if p.poll() is None:
            p.kill()


def test_cli_serve_bad_arguments(gguf):
    for args, msg in ((["-np", "0"], "--parallel"), (["--port", "70000"], "--port"),
                      (["-m", "/nonexistent.gguf"], "nonexistent")):
        p = subprocess.run([sys.executable, "-m", "phicpp", "serve", *(["-m", str(gguf)] if args[0] != "-m" else []),
                            *args], capture_output=True, text=True, timeout=60)
        assert p.returncode != 0 and msg in p.stderr and "Traceback" not in p.stderr
    # a port in use: one error line before any model is loaded, no "listening"
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        for host, port in (("127.0.0.1", busy.getsockname()[1]), ("no-such-host.invalid", 8080)):
            p = subprocess.run([sys.executable, "-m", "phicpp", "serve", "-m", str(gguf), "--host", host,
                                "--port", str(port)], capture_output=True, text=True, timeout=60)
            assert p.returncode == 1 and "Traceback" not in p.stderr, p.stderr
            lines = p.stderr.strip().splitlines()
            assert len(lines) == 1 and lines[0].startswith(f"error: cannot listen on {host}:{port}: "), lines
            assert "listening" not in p.stderr


def test_dropped_whole_request_frees_its_sequence(gguf):
    """A non-streaming request whose client disconnects stops generating too."""
    m = phicpp.Model(gguf, n_ctx=16384, n_threads=1, n_seq=1)  # room for seconds of generation
    r = Running(m, parallel=1)
    try:
        engine = r.app.state.engine
        body = {"model": "tiny", "prompt": "a long text", "max_tokens": 16000, "ignore_eos": True}
        with pytest.raises(httpx.TimeoutException):
            httpx.post(r.url + "/v1/completions", json=body, timeout=0.3)
        t0 = time.time()
        while engine.running or engine.cancelled == 0:
            assert time.time() - t0 < 10, "the abandoned request kept its sequence"
            time.sleep(0.05)
        assert engine.free == [0] and engine.cancelled == 1
    finally:
        r.stop()


def test_logprobs(srv):
    # chat through the openai client: its types parse the answer
    r = chat(srv, "Score me", max_tokens=8, temperature=0, logprobs=True, top_logprobs=2)
    content = r.choices[0].logprobs.content
    assert len(content) == r.usage.completion_tokens
    said = r.choices[0].message.content
    if "\ufffd" not in said:  # (random weights may pick bytes that are no UTF-8)
        assert b"".join(bytes(e.bytes) for e in content).startswith(said.encode())
    for e in content:  # greedy: the chosen token is the likeliest
        assert len(e.top_logprobs) == 2 and e.top_logprobs[0].logprob == pytest.approx(e.logprob, abs=1e-6)
        assert e.top_logprobs[0].logprob >= e.top_logprobs[1].logprob
    stream = chat(srv, "Score me", max_tokens=8, temperature=0, logprobs=True, stream=True)
    got = [e for ch in stream if ch.choices and ch.choices[0].logprobs for e in ch.choices[0].logprobs.content]
    assert [e.logprob for e in got] == pytest.approx([e.logprob for e in content], abs=1e-5)
    assert chat(srv, "Score me", max_tokens=2).choices[0].logprobs is None
    # completions: llama-cpp-python's shape, and a stop string's tokens left out
    body = {"prompt": "Once", "max_tokens": 30, "temperature": 0, "logprobs": 1}
    whole = httpx.post(srv.url + "/v1/completions", json=body, timeout=60).json()["choices"][0]
    text, lp = whole["text"], whole["logprobs"]
    assert len(lp["tokens"]) == len(lp["token_logprobs"]) == len(lp["text_offset"]) == len(lp["top_logprobs"]) > 0
    for t, off, top in zip(lp["tokens"], lp["text_offset"], lp["top_logprobs"]):
        assert text.startswith(t, off) and t in top
    streamed = httpx.post(srv.url + "/v1/completions", json={**body, "stream": True}, timeout=60).text
    events = [json.loads(line[6:]) for line in streamed.splitlines() if line.startswith("data: {")]
    assert sum((e["choices"][0]["logprobs"]["token_logprobs"] for e in events), []) == \
        pytest.approx(lp["token_logprobs"], abs=1e-5)
    if len(text) > 6:
        stop = text[3:6]
        cut = httpx.post(srv.url + "/v1/completions", json={**body, "stop": [stop]}, timeout=60).json()["choices"][0]
        assert cut["text"] == text[: text.find(stop)]
        assert all(o < len(cut["text"]) for o in cut["logprobs"]["text_offset"])
