"""`phicpp serve`: an OpenAI-compatible HTTP server with continuous batching.

The HTTP side is Starlette on uvicorn; the token loop is one engine thread that
owns the model (n_seq = --parallel sequences). Between decode steps it admits
waiting requests into free sequences, then runs one chunk of one new prompt and
one token of every running request in a single forward pass
(Model.batch, a chunk of one new prompt in front: every row gets exactly the
arithmetic it gets alone, so a request's tokens do not depend on what else runs
or on how its prompt was chunked). Events go back to the
request's asyncio queue; a client that goes away frees its sequence at the next
step.
"""
from __future__ import annotations

import asyncio
import json
import threading
import time
import uuid
from collections import deque
from dataclasses import dataclass, field

import numpy as np

from .chat import _check_messages, chat_tokens, template_for
from .generate import (StopStrings, chat_logprobs, completion_logprobs, next_token_logprobs, prompt_entries,
                       scored_before, shift_offsets, stop_token_ids, token_logprobs)
from .sampling import Sampler


class RequestError(Exception):
    """A request the server refuses: becomes {"error": {...}} with `status`."""

    def __init__(self, message: str, status: int = 400, code: str | None = None, param: str | None = None):
        super().__init__(message)
        self.status, self.code, self.param = status, code, param


def error_body(message: str, kind: str = "invalid_request_error", code=None, param=None) -> dict:
    return {"error": {"message": message, "type": kind, "param": param, "code": code}}


# ---------------------------------------------------------------- requests
@dataclass
class Request:
    prompt: list[int]
    sampler: Sampler
    max_tokens: int
    stop: list[str]
    loop: asyncio.AbstractEventLoop    # where the request's handler waits
    queue: asyncio.Queue               # its events, put there on that loop
    ignore_eos: bool = False           # llama-server's extension: never stop at an end token
    logprobs: int | None = None        # score each token, with this many alternatives
    score_prompt: bool = False         # (echo, with logprobs) the prompt's tokens too
    head: str = ""                     # with score_prompt: the echoed prompt text
    cancelled: threading.Event = field(default_factory=threading.Event)
    # engine state
    seq: int = -1
    done_prompt: int = 0               # prompt tokens evaluated so far
    next_token: int | None = None      # sampled, not yet evaluated
    tokens: list[int] = field(default_factory=list)
    history: np.ndarray | None = None
    decoder: object = None
    stops: StopStrings | None = None
    scored: list = field(default_factory=list)  # with logprobs: as Run.scored
    prompt_scored: list = field(default_factory=list)  # with score_prompt: as Run.prompt_scored
    decoded: int = 0                   # characters the decoder has produced
    emitted: int = 0                   # characters sent as text
    sent_scored: int = 0               # scored entries sent
    t_start: float = field(default_factory=time.perf_counter)


def _event(kind: str, **kw) -> dict:
    return {"kind": kind, **kw}


class Engine:
    """The token loop: one thread, one model with `parallel` sequences."""

    def __init__(self, model, parallel: int, chunk: int = 32):
        self.model, self.parallel, self.chunk = model, parallel, chunk
        self.tok = model.tokenizer
        self.stop_ids = stop_token_ids(self.tok)
        self.eog = np.array(sorted(t for t in self.stop_ids if t < model.n_vocab), dtype=np.int64)
        self.n_ctx = model.n_ctx
        self.waiting: deque[Request] = deque()
        self.running: list[Request] = []
        self.free = list(range(parallel))
        self.cv = threading.Condition()
        self.stopping = False
        self.thread = threading.Thread(target=self._loop, name="phicpp-engine", daemon=True)
        self.outbox: list[tuple[Request, dict]] = []  # a step's events, handed over together
        self.cancelled = 0  # requests dropped by their clients before the end

    def start(self) -> None:
        self.thread.start()

    def request_stop(self) -> None:
        """Asks the thread to end every request (finish_reason "stop") and itself; returns at once."""
        with self.cv:
            self.stopping = True
            self.cv.notify()

    def stop(self) -> None:
        """request_stop(), then waits for the thread."""
        self.request_stop()
        if self.thread.is_alive():
            self.thread.join(timeout=30)

    def submit(self, r: Request) -> None:
        if len(r.prompt) >= self.n_ctx:
            raise RequestError(f"the prompt has {len(r.prompt)} tokens; the context holds {self.n_ctx} "
                               "(prompt and completion)", code="context_length_exceeded")
        with self.cv:
            if self.stopping:
                raise RequestError("the server is shutting down", status=503)
            self.waiting.append(r)
            self.cv.notify()

    # ---- the loop
    def _loop(self) -> None:
        while True:
            with self.cv:
                while not self.stopping and not self.waiting and not self.running:
                    self.cv.wait()
                if self.stopping:
                    for r in self.running + list(self.waiting):
                        self._finish(r, "stop")
                    self.running, self.waiting = [], deque()
                    self._flush()
                    return
                while self.waiting and self.free:
                    self._admit(self.waiting.popleft())
            try:
                self._step()
            except Exception as e:  # a model error ends the requests involved, not the server
                for r in list(self.running):
                    self._fail(r, str(e))
            self._flush()

    def _emit(self, r: Request, ev: dict) -> None:
        self.outbox.append((r, ev))

    def _flush(self) -> None:
        """One wake-up of each event loop per step for all its events (not one per token)."""
        if not self.outbox:
            return
        by_loop: dict = {}
        for r, ev in self.outbox:
            by_loop.setdefault(r.loop, []).append((r.queue, ev))
        self.outbox = []
        for loop, items in by_loop.items():
            try:
                loop.call_soon_threadsafe(_deliver, items)
            except RuntimeError:  # the loop is closed: nobody waits for these
                pass

    def _admit(self, r: Request) -> None:
        if r.cancelled.is_set():
            return
        r.seq = self.free.pop(0)
        self.model.reset(r.seq)
        r.history = np.zeros(self.n_ctx + 1, dtype=np.int32)
        r.history[: len(r.prompt)] = r.prompt
        r.decoder = self.tok.stream_decoder(special=False)
        r.stops = StopStrings(r.stop)
        self.running.append(r)

    def _release(self, r: Request) -> None:
        if r in self.running:
            self.running.remove(r)
        if r.seq >= 0:
            self.free.append(r.seq)
            r.seq = -1

    def _text(self, r: Request, text: str) -> None:
        """A text event, with the scores of the tokens whose text begins in it."""
        r.emitted += len(text)
        ev = _event("text", text=text)
        if r.logprobs is not None:
            hi = scored_before(r.scored, r.emitted, r.sent_scored)
            ev["scored"], r.sent_scored = r.scored[r.sent_scored:hi], hi
        self._emit(r, ev)

    def _finish(self, r: Request, reason: str) -> None:
        tail = ""
        if reason != "stop_string" and r.decoder is not None:
            tail, stopped = r.stops.push(r.decoder.flush())
            if not stopped:
                tail += r.stops.flush()
        if tail:
            self._text(r, tail)
        ev = _event("done", finish_reason="stop" if reason == "stop_string" else reason,
                    prompt_tokens=len(r.prompt), completion_tokens=len(r.tokens))
        if r.logprobs is not None:  # what is left (a stop string's tokens are not in the text)
            ev["scored"] = r.scored[r.sent_scored:scored_before(r.scored, r.emitted, r.sent_scored)
                                    if reason == "stop_string" else len(r.scored)]
        self._emit(r, ev)
        self._release(r)

    def _fail(self, r: Request, message: str) -> None:
        self._emit(r, _event("error", message=message))
        self._release(r)

    def _step(self) -> None:
        for r in list(self.running):
            if r.cancelled.is_set():
                self.cancelled += 1
                self._release(r)
        # one chunk of one prompt (the oldest still prefilling) in front of one token
        # of every running request, all in one forward pass, so running streams keep flowing
        pre = next((r for r in self.running if r.done_prompt < len(r.prompt)), None)
        ready = [r for r in self.running if r.done_prompt == len(r.prompt) and r.next_token is not None]
        if pre is None and not ready:
            return
        if pre is not None and pre.score_prompt:
            self._prefill_scored(pre)
            pre = None
            if not ready:
                return
        chunk = []
        if pre is not None:
            a, b = pre.done_prompt, min(len(pre.prompt), pre.done_prompt + self.chunk)
            chunk = pre.prompt[a:b]
        seqs = ([pre.seq] if pre is not None else []) + [r.seq for r in ready]
        tokens = chunk + [r.next_token for r in ready]
        out = self.model.batch(seqs, len(chunk) if chunk else 1, tokens)
        if pre is not None:
            pre.done_prompt = b
            if b == len(pre.prompt):
                self._take(pre, out[0])
            out = out[1:]
        for r, logits in zip(ready, out):
            r.next_token = None
            self._take(r, logits)

    def _prefill_scored(self, r: Request) -> None:
        """A chunk of a prompt whose tokens are scored (echo with logprobs): evaluated on its
        own with every row's logits, which batch() does not return; once the prompt is in,
        its scores go out as a "prompt" event before the first token's."""
        a, b = r.done_prompt, min(len(r.prompt), r.done_prompt + self.chunk)
        rows = self.model.eval(r.prompt[a:b], all_logits=True, seq=r.seq)
        r.prompt_scored += next_token_logprobs(rows, r.prompt, a, r.logprobs)
        r.done_prompt = b
        if b == len(r.prompt):
            self._emit(r, _event("prompt", scored=prompt_entries(self.tok, r.prompt, r.prompt_scored, r.head)))
            self._take(r, rows[-1])

    def _take(self, r: Request, logits: np.ndarray) -> None:
        """Sample the next token of r from logits; emit its text; end r or queue the token."""
        n = len(r.prompt) + len(r.tokens)
        if r.ignore_eos:
            logits[self.eog] = -np.inf
        tok = r.sampler.sample(logits, r.history[:n])
        if tok in self.stop_ids:
            self._finish(r, "stop")
            return
        r.tokens.append(tok)
        r.history[n] = tok
        if r.logprobs is not None:
            r.scored.append((tok, *token_logprobs(logits, tok, r.logprobs), r.decoded))
        piece = r.decoder.push(tok)
        r.decoded += len(piece)
        text, stopped = r.stops.push(piece)
        if text:
            self._text(r, text)
        if stopped:
            self._finish(r, "stop_string")
        elif len(r.tokens) >= r.max_tokens or n + 1 >= self.n_ctx:
            self._finish(r, "length")
        else:
            r.next_token = tok


# ---------------------------------------------------------------- parsing the OpenAI bodies
_NUM = (int, float)


def _get(body: dict, name: str, types, default=None):
    v = body.get(name, default)
    if v is None:
        return default
    if isinstance(v, bool) and bool not in (types if isinstance(types, tuple) else (types,)):
        raise RequestError(f"'{name}' must be {_type_name(types)}, got a boolean", param=name)
    if not isinstance(v, types):
        raise RequestError(f"'{name}' must be {_type_name(types)}, got {type(v).__name__}", param=name)
    return v


def _type_name(types) -> str:
    names = {int: "an integer", float: "a number", str: "a string", bool: "a boolean", list: "a list",
             dict: "an object"}
    ts = types if isinstance(types, tuple) else (types,)
    return " or ".join(dict.fromkeys(names.get(t, t.__name__) for t in ts))


def _sampling(body: dict, default_temperature: float) -> Sampler:
    temperature = float(_get(body, "temperature", _NUM, default_temperature))
    top_p = float(_get(body, "top_p", _NUM, 1.0))
    seed = _get(body, "seed", int)
    presence = float(_get(body, "presence_penalty", _NUM, 0.0))
    frequency = float(_get(body, "frequency_penalty", _NUM, 0.0))
    if not 0.0 <= temperature <= 2.0:
        raise RequestError(f"'temperature' must be in [0, 2], got {temperature}", param="temperature")
    if not -2.0 <= presence <= 2.0 or not -2.0 <= frequency <= 2.0:
        raise RequestError("'presence_penalty' and 'frequency_penalty' must be in [-2, 2]", param="presence_penalty")
    n = _get(body, "n", int, 1)
    if n != 1:
        raise RequestError("only n=1 is supported", param="n")
    try:  # OpenAI's penalties; no top-k/min-p unless asked (llama-server's defaults)
        return Sampler(temperature=temperature, top_k=int(_get(body, "top_k", int, 0)), top_p=top_p,
                       min_p=float(_get(body, "min_p", _NUM, 0.0)), presence_penalty=presence,
                       frequency_penalty=frequency, repeat_last_n=-1 if presence or frequency else 64, seed=seed)
    except ValueError as e:  # the sampler names the setting first ("top_p must be in [0, 1], ...")
        name = str(e).split(" ", 1)[0]
        raise RequestError(str(e), param=name if name in body else None) from None


def _logprobs(body: dict, chat: bool, echo: bool) -> int | None:
    """How many alternatives to score with each token, or None: chat's "logprobs" (a boolean)
    and "top_logprobs" (0-20), or the completions' "logprobs" (0-20; with echo the prompt's
    tokens are scored too)."""
    if chat:
        on = _get(body, "logprobs", bool, False)
        top = _get(body, "top_logprobs", int)
        if top is not None and not 0 <= top <= 20:
            raise RequestError(f"'top_logprobs' must be in [0, 20], got {top}", param="top_logprobs")
        if top and not on:
            raise RequestError("'top_logprobs' needs 'logprobs': true", param="top_logprobs")
        return (top or 0) if on else None
    n = _get(body, "logprobs", int)
    if n is not None and not 0 <= n <= 20:
        raise RequestError(f"'logprobs' must be in [0, 20], got {n}", param="logprobs")
    return n


def _stops(body: dict) -> list[str]:
    stop = body.get("stop")
    if stop is None:
        return []
    if isinstance(stop, str):
        return [stop]
    if isinstance(stop, list) and all(isinstance(s, str) for s in stop) and len(stop) <= 4:
        return list(stop)
    raise RequestError("'stop' must be a string or a list of up to 4 strings", param="stop")


def _max_tokens(body: dict, room: int) -> int:
    v = _get(body, "max_completion_tokens", int) or _get(body, "max_tokens", int)
    if v is None:
        return room
    if v < 1:
        raise RequestError(f"'max_tokens' must be >= 1, got {v}", param="max_tokens")
    return v


# ---------------------------------------------------------------- the app
def create_app(model, parallel: int = 4, model_name: str | None = None, chunk: int = 32):
    """The Starlette app serving `model` (a phicpp.Model made with n_seq >= parallel)."""
    from contextlib import asynccontextmanager

    from starlette.applications import Starlette
    from starlette.requests import Request as HttpRequest
    from starlette.responses import JSONResponse, StreamingResponse
    from starlette.routing import Route

    engine = Engine(model, parallel, chunk)
    name = model_name or model.path.rsplit("/", 1)[-1]
    created = int(time.time())
    template = template_for(model)

    def fail(e: RequestError) -> JSONResponse:
        kind = "invalid_request_error" if e.status < 500 else "server_error"
        return JSONResponse(error_body(str(e), kind, e.code, e.param), status_code=e.status)

    async def read_json(req: HttpRequest) -> dict:
        raw = await req.body()
        try:
            body = json.loads(raw)
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise RequestError(f"the body is not valid JSON: {e}") from None
        if not isinstance(body, dict):
            raise RequestError("the body must be a JSON object")
        return body

    async def run(req: HttpRequest, prompt: list[int], body: dict, shape) -> object:
        """Submit; stream SSE chunks or wait for the whole answer. shape(kind, text, finish, usage) -> dict."""
        loop = asyncio.get_running_loop()
        q: asyncio.Queue = asyncio.Queue()
        sampler = _sampling(body, 1.0)
        scoring = _logprobs(body, shape.chat, bool(shape.head))
        stops = _stops(body)
        if shape.chat:
            stops = template.stop + stops
        r = Request(prompt, sampler, _max_tokens(body, engine.n_ctx - len(prompt)), stops,
                    loop=loop, queue=q,
                    ignore_eos=bool(_get(body, "ignore_eos", bool, False)), logprobs=scoring,
                    score_prompt=scoring is not None and bool(shape.head), head=shape.head)
        stream = bool(_get(body, "stream", bool, False))
        include_usage = bool((_get(body, "stream_options", dict, {}) or {}).get("include_usage", False))
        try:
            engine.submit(r)
        except RequestError as e:
            if e.code == "context_length_exceeded":
                e.param = "messages" if shape.chat else "prompt"
            raise

        if not stream:
            parts, scored = [shape.head], []
            try:
                checked = time.monotonic()
                while True:
                    try:
                        ev = await asyncio.wait_for(q.get(), timeout=0.25)
                    except asyncio.TimeoutError:
                        ev = None
                    if time.monotonic() - checked >= 0.25:
                        checked = time.monotonic()
                        if await req.is_disconnected():  # nobody waits for the answer: free the sequence
                            return JSONResponse(error_body("the client went away", "server_error"), status_code=499)
                    if ev is None:
                        continue
                    if ev["kind"] == "prompt":  # the echoed prompt's scores come first
                        scored = ev["scored"] + scored
                        continue
                    scored += shape.after_head(ev.get("scored", ()))
                    if ev["kind"] == "text":
                        parts.append(ev["text"])
                    elif ev["kind"] == "error":
                        return fail(RequestError(ev["message"], status=500))
                    else:
                        lp = shape.logprobs(scored) if scoring is not None else None
                        return JSONResponse(shape.whole("".join(parts), ev["finish_reason"], _usage(ev), lp))
            finally:
                r.cancelled.set()

        async def events():
            try:
                if shape.chat:
                    yield _sse(shape.chunk({"role": "assistant", "content": ""}, None))
                if shape.head and not r.score_prompt:  # (scored: with the prompt's scores, below)
                    yield shape.text_sse(shape.head)
                while True:
                    evs = [await q.get()]
                    while not q.empty():  # what else waits goes out in the same write
                        evs.append(q.get_nowait())
                    out, end = [], None
                    for ev in evs:
                        if ev["kind"] == "prompt":
                            out.append(_sse(shape.chunk(shape.head, None, shape.logprobs(ev["scored"]))))
                        elif ev["kind"] == "text" and scoring is not None:
                            out.append(_sse(shape.chunk(ev["text"], None,
                                                        shape.logprobs(shape.after_head(ev["scored"])))))
                        elif ev["kind"] == "text":
                            out.append(shape.text_sse(ev["text"]))
                        elif ev["kind"] == "error":
                            out.append(_sse(error_body(ev["message"], "server_error")))
                            end = ev
                            break
                        else:
                            last = shape.chunk(None, ev["finish_reason"],
                                               shape.logprobs(shape.after_head(ev.get("scored"))))
                            if not include_usage:
                                last["usage"] = _usage(ev)
                            out.append(_sse(last))
                            if include_usage:
                                u = shape.chunk(None, None)
                                u["choices"], u["usage"] = [], _usage(ev)
                                out.append(_sse(u))
                            end = ev
                            break
                    if end is not None:
                        out.append("data: [DONE]\n\n")
                    yield "".join(out)
                    if end is not None:
                        break
            finally:  # the client went away, or the answer is complete
                r.cancelled.set()

        return StreamingResponse(events(), media_type="text/event-stream",
                                 headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})

    class Shape:
        def __init__(self, chat: bool, head: str = ""):
            self.chat = chat
            self.head = head  # text before the completion's (echo: the prompt)
            self.id = ("chatcmpl-" if chat else "cmpl-") + uuid.uuid4().hex
            self.created = int(time.time())
            self._text_parts = None

        def text_sse(self, text: str) -> str:
            """_sse(chunk(text, None)), without building the dict: a text chunk is most of a stream."""
            if self._text_parts is None:
                marker = "\u0000"
                whole = _sse(self.chunk(marker, None))
                self._text_parts = whole.split(json.dumps(marker), 1)
            return self._text_parts[0] + json.dumps(text, ensure_ascii=False) + self._text_parts[1]

        def after_head(self, scored):
            """Completion entries with their text offsets counted from the echoed prompt's start."""
            return shift_offsets(scored, len(self.head))

        def logprobs(self, scored) -> dict | None:
            """The "logprobs" of scored entries (None when the request asked for none)."""
            if scored is None:
                return None
            return chat_logprobs(engine.tok, scored) if self.chat else completion_logprobs(engine.tok, scored)

        def chunk(self, piece, finish, lp=None) -> dict:
            if self.chat:
                delta = piece if isinstance(piece, dict) else ({"content": piece} if piece is not None else {})
                choice = {"index": 0, "delta": delta, "logprobs": lp, "finish_reason": finish}
                obj = "chat.completion.chunk"
            else:
                choice = {"index": 0, "text": piece or "", "logprobs": lp, "finish_reason": finish}
                obj = "text_completion"
            return {"id": self.id, "object": obj, "created": self.created, "model": name, "choices": [choice]}

        def whole(self, text: str, finish: str, usage: dict, lp=None) -> dict:
            if self.chat:
                choice = {"index": 0, "message": {"role": "assistant", "content": text}, "logprobs": lp,
                          "finish_reason": finish}
                obj = "chat.completion"
            else:
                choice = {"index": 0, "text": text, "logprobs": lp, "finish_reason": finish}
                obj = "text_completion"
            return {"id": self.id, "object": obj, "created": self.created, "model": name, "choices": [choice],
                    "usage": usage}

    async def chat_completions(req: HttpRequest):
        try:
            body = await read_json(req)
            messages = body.get("messages")
            if not isinstance(messages, list):
                raise RequestError("'messages' is required and must be a list", param="messages")
            try:
                msgs = _check_messages(messages)
                for m in msgs:
                    if not isinstance(m["content"], str):
                        raise ValueError("message content must be a string")
                prompt = chat_tokens(template, engine.tok, msgs)
            except ValueError as e:
                raise RequestError(str(e), param="messages") from None
            return await run(req, prompt, body, Shape(chat=True))
        except RequestError as e:
            return fail(e)

    async def completions(req: HttpRequest):
        try:
            body = await read_json(req)
            p = body.get("prompt")
            if isinstance(p, list) and len(p) == 1 and isinstance(p[0], str):
                p = p[0]
            if isinstance(p, str):
                prompt = engine.tok.tokenize(p, add_special=True, parse_special=True)
            elif isinstance(p, list) and p and all(isinstance(t, int) and not isinstance(t, bool) for t in p):
                if any(t < 0 or t >= model.n_vocab for t in p):
                    raise RequestError("a prompt token id is out of the vocabulary", param="prompt")
                prompt = list(p)
            else:
                raise RequestError("'prompt' is required: a string (or a list of token ids)", param="prompt")
            if not prompt:
                raise RequestError("the prompt is empty", param="prompt")
            echo = bool(_get(body, "echo", bool, False))  # the prompt's text before the completion's
            head = (p if isinstance(p, str) else engine.tok.detokenize(prompt)) if echo else ""
            return await run(req, prompt, body, Shape(chat=False, head=head))
        except RequestError as e:
            return fail(e)

    async def models(_req):
        return JSONResponse({"object": "list", "data": [{"id": name, "object": "model", "created": created,
                                                          "owned_by": "phicpp"}]})

    async def health(_req):
        return JSONResponse({"status": "ok"})

    @asynccontextmanager
    async def lifespan(_app):
        engine.start()
        yield
        engine.stop()

    app = Starlette(routes=[
        Route("/v1/chat/completions", chat_completions, methods=["POST"]),
        Route("/v1/completions", completions, methods=["POST"]),
        Route("/v1/models", models, methods=["GET"]),
        Route("/health", health, methods=["GET"]),
    ], lifespan=lifespan)
    app.state.engine = engine
    return app


def _deliver(items) -> None:
    for q, ev in items:
        q.put_nowait(ev)


def _sse(obj: dict) -> str:
    return f"data: {json.dumps(obj, ensure_ascii=False)}\n\n"


def _usage(ev: dict) -> dict:
    return {"prompt_tokens": ev["prompt_tokens"], "completion_tokens": ev["completion_tokens"],
            "total_tokens": ev["prompt_tokens"] + ev["completion_tokens"]}


def listen_socket(host: str, port: int):
    """The server's socket, bound now: a port in use or a bad address is an OSError here,
    before a model is loaded or "listening" printed (uvicorn would log and exit later)."""
    import socket

    family = socket.AF_INET6 if ":" in host else socket.AF_INET  # (uvicorn's rule)
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except (OSError, OverflowError) as e:
        sock.close()
        raise OSError(f"cannot listen on {host}:{port}: {getattr(e, 'strerror', None) or e}") from None
    sock.set_inheritable(True)
    return sock


def serve(model, host: str = "127.0.0.1", port: int = 8080, parallel: int = 4, model_name: str | None = None,
          log_level: str = "warning", ready=None, sock=None) -> None:
    """Serve until Ctrl-C / SIGTERM; then running requests end (finish_reason "stop") and it returns.
    `sock`: a socket from listen_socket(host, port) to serve on (default: bind one here)."""
    import uvicorn

    app = create_app(model, parallel, model_name)

    class Server(uvicorn.Server):
        def handle_exit(self, sig, frame):
            # end the streams first, so their connections can close; then a normal exit
            # (uvicorn would raise the signal again once it has shut down)
            app.state.engine.request_stop()
            super().handle_exit(sig, frame)
            getattr(self, "_captured_signals", []).clear()

        async def startup(self, sockets=None):
            await super().startup(sockets)
            if ready is not None:
                ready(self)

    sock = sock if sock is not None else listen_socket(host, port)
    with sock:
        Server(uvicorn.Config(app, host=host, port=port, log_level=log_level,
                              timeout_graceful_shutdown=5)).run(sockets=[sock])
