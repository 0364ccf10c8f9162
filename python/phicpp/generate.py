"""The generation loop: prefill with KV-cache reuse, sample, decode, stop, time.

    gen = Generator(model, tokenizer)
    run = gen.run(prompt_ids, Sampler(seed=1), max_tokens=64, stop=["\\n\\n"])
    for piece in run:                  # text as it comes (whole UTF-8 characters)
        print(piece, end="", flush=True)
    run.finish_reason, run.text, run.tokens, run.timings

The Generator remembers which tokens the model's KV cache holds. A new prompt
that starts with those tokens (the next chat turn, a longer prompt) evaluates
only the tokens after the common prefix. If anything else moved the model's
cache (model.eval by hand), the mismatch is seen and the cache is rebuilt.

Per token the loop costs one C++ sample on the logits array (no copy), one
C++ stream-decoder push and a short stop-string check: no re-tokenizing.
"""
from __future__ import annotations

import itertools
import time
from dataclasses import dataclass, field
from typing import Callable, Iterable, Iterator, Sequence

import numpy as np

from ._core import ContextOverflowError
from .sampling import Sampler

# Chat-template end markers that stop generation when the vocabulary has them
# as tokens (besides the tokenizer's own end-of-generation ids).
END_TOKEN_TEXTS = ("<|end|>", "<|endoftext|>", "<|im_end|>")


def stop_token_ids(tokenizer) -> set[int]:
    """The tokenizer's EOG ids plus <|end|>, <|endoftext|>, <|im_end|> where they are tokens."""
    ids = set(tokenizer.eog_ids)
    for text in END_TOKEN_TEXTS:
        t = tokenizer.token_id(text)
        if t is not None:
            ids.add(t)
    return ids


@dataclass
class Timings:
    """Wall-clock phases of one run, as llama.cpp reports them."""
    prompt_tokens: int = 0      # tokens of the prompt actually evaluated (after cache reuse)
    cached_tokens: int = 0      # prompt tokens found in the KV cache
    prompt_s: float = 0.0
    gen_tokens: int = 0         # tokens sampled
    gen_s: float = 0.0          # from the end of the prefill to the last token

    @staticmethod
    def _rate(n: int, s: float) -> float:
        return n / s if s > 0 else float("inf") if n else 0.0

    @property
    def prompt_tps(self) -> float:
        return self._rate(self.prompt_tokens, self.prompt_s)

    @property
    def gen_tps(self) -> float:
        return self._rate(self.gen_tokens, self.gen_s)

    def report(self) -> str:
        def line(name: str, n: int, s: float, unit: str) -> str:
            ms = s * 1e3
            per = ms / n if n else 0.0
            return (f"{name:>18} = {ms:10.2f} ms / {n:5d} {unit} ({per:8.2f} ms per token, "
                    f"{self._rate(n, s):8.2f} tokens per second)")
        out = [line("prompt eval time", self.prompt_tokens, self.prompt_s, "tokens"),
               line("eval time", self.gen_tokens, self.gen_s, "runs  ")]
        if self.cached_tokens:
            out.append(f"{'cached prompt':>18} = {self.cached_tokens} tokens reused from the KV cache")
        return "\n".join(out)


class StopStrings:
    """Holds back text that may be the start of a stop string; cuts at the first full match."""

    def __init__(self, stops: Iterable[str] = ()):
        self.stops = [s for s in stops if s]
        self.pending = ""

    def push(self, piece: str) -> tuple[str, bool]:
        """(text safe to emit, stopped)."""
        if not self.stops:
            return piece, False
        buf = self.pending + piece
        cut = min((i for i in (buf.find(s) for s in self.stops) if i >= 0), default=-1)
        if cut >= 0:
            self.pending = ""
            return buf[:cut], True
        hold = 0  # longest tail of buf that begins some stop string
        for s in self.stops:
            for k in range(min(len(s) - 1, len(buf)), hold, -1):
                if buf.endswith(s[:k]):
                    hold = k
                    break
        self.pending = buf[len(buf) - hold:] if hold else ""
        return buf[: len(buf) - hold], False

    def flush(self) -> str:
        out, self.pending = self.pending, ""
        return out


def token_logprobs(logits: np.ndarray, tok: int, top: int) -> tuple[float, list[tuple[int, float]]]:
    """log p(tok) under softmax(logits) and the `top` most likely ids with theirs (most likely
    first, ties to the lower id): the model's distribution, before the sampler's filters."""
    return rows_logprobs(np.asarray(logits)[None], [tok], top)[0]


def rows_logprobs(logits: np.ndarray, toks: Sequence[int], top: int) -> list[tuple[float, list[tuple[int, float]]]]:
    """token_logprobs of each row of `logits` [n, n_vocab] and its token."""
    x = np.asarray(logits, dtype=np.float64)
    m = x.max(axis=1, keepdims=True)
    lse = m[:, 0] + np.log(np.exp(x - m).sum(axis=1))
    lp = x[np.arange(len(x)), np.asarray(toks, dtype=np.int64)] - lse
    out = []
    for i in range(len(x)):
        best: list[tuple[int, float]] = []
        if top > 0:
            k = min(top, x.shape[1])
            idx = np.argpartition(-x[i], k - 1)[:k]
            idx = idx[np.lexsort((idx, -x[i, idx]))]
            best = [(int(j), float(x[i, j] - lse[i])) for j in idx]
        out.append((float(lp[i]), best))
    return out


def next_token_logprobs(rows: np.ndarray, tokens: Sequence[int], a: int, top: int) -> list:
    """rows_logprobs of the logits `rows` of tokens[a:a + len(rows)], each row against the
    token after its own (the last token of `tokens` has none to score)."""
    nxt = tokens[a + 1:a + 1 + len(rows)]
    return rows_logprobs(rows[:len(nxt)], nxt, top)


def shift_offsets(scored, by: int):
    """Run.scored-style entries with their text offsets moved by `by` characters (a
    completion's, counted from the start of an echoed prompt before it)."""
    if scored is None or not by:
        return scored
    return [(t, lp, best, off + by) for t, lp, best, off in scored]


def scored_before(scored, limit: int, start: int = 0) -> int:
    """The end of the run of `scored` entries from `start` whose text starts before `limit`."""
    n = start
    while n < len(scored) and scored[n][3] < limit:
        n += 1
    return n


@dataclass
class Run:
    """One generation: iterate it for text pieces; afterwards read the results."""
    _it: Iterator[str] = field(repr=False, default=None)
    text: str = ""
    tokens: list[int] = field(default_factory=list)   # sampled ids (without the stop token)
    prompt_tokens: int = 0
    finish_reason: str | None = None   # "stop" (end token, stop string, interrupt) or "length"
    interrupted: bool = False
    timings: Timings = field(default_factory=Timings)
    # with logprobs=N: for each sampled token (id, log p, [(id, log p)] * N, where its text
    # starts in `text`: the stream decoder's output before it)
    scored: list[tuple[int, float, list[tuple[int, float]], int]] | None = None
    # with score_prompt: (log p, [(id, log p)] * N) of each prompt token after the first
    prompt_scored: list[tuple[float, list[tuple[int, float]]]] | None = None
    cut: bool = False  # ended by a stop string (tokens from the cut on are not in `text`)

    def kept_scored(self, emitted: int | None = None) -> int:
        """How many of `scored` have their text in the first `emitted` characters of the
        answer (all of them once the run is over, but a stop string's tokens)."""
        if emitted is None and not self.cut:
            return len(self.scored)
        return scored_before(self.scored, len(self.text) if emitted is None else emitted)

    def __iter__(self) -> Iterator[str]:
        return self._it

    def consume(self) -> "Run":
        for _ in self._it:
            pass
        return self


class Generator:
    """Runs generations on one model, reusing its KV cache between calls."""

    def __init__(self, model, tokenizer):
        self.model = model
        self.tokenizer = tokenizer
        self.cached: list[int] = []          # what the model's KV cache holds, token for token
        self._version = None                 # model.cache_version() when `cached` was last true
        self.stop_ids = stop_token_ids(tokenizer)
        self._eog = np.array(sorted(self.stop_ids), dtype=np.int64)

    # ------------------------------------------------------------------ prefill
    def common_prefix(self, tokens: Sequence[int]) -> int:
        n = 0
        for a, b in zip(self.cached, tokens):
            if a != b:
                break
            n += 1
        return n

    def check_prompt(self, tokens: Sequence[int]) -> None:
        """Raise if `tokens` cannot start a generation (empty, or longer than the context)."""
        if not tokens:
            raise ValueError("the prompt is empty (no tokens to start from)")
        n_ctx = self.model.n_ctx
        if len(tokens) > n_ctx:
            raise ContextOverflowError(f"the prompt is {len(tokens)} tokens but the context holds {n_ctx} "
                                       "(raise -c/--ctx-size or shorten the prompt)")

    def prefill(self, tokens: Sequence[int]) -> tuple[np.ndarray, int]:
        """Bring the cache to exactly `tokens`; returns (logits after the last one, tokens reused)."""
        self.check_prompt(tokens)
        if not self._cache_is_ours():  # someone else used the model: start over
            self.model.reset()
            self.cached = []
        # at least the last token is evaluated again: its logits are what we need
        keep = min(self.common_prefix(tokens), len(tokens) - 1)
        self.model.truncate(keep)
        self.cached = self.cached[:keep]
        logits = self.model.eval(tokens[keep:])
        self.cached = list(tokens)
        self._version = self.model.cache_version()
        return logits, keep

    def _cache_is_ours(self) -> bool:
        """Whether the cache still holds `cached`: no call but ours has changed it."""
        return self._version == self.model.cache_version() and self.model.n_past == len(self.cached)

    def prefill_scored(self, tokens: Sequence[int], top: int) -> tuple[np.ndarray, list]:
        """prefill from an empty cache, keeping every position's logits long enough to score
        the token after it: (logits after the last token, [(log p, [(id, log p)] * top)] for
        tokens[1:]). In chunks, so that at most ~64 MB of logits are held at once."""
        self.check_prompt(tokens)
        self.model.reset()
        self.cached = []
        chunk = max(1, (1 << 24) // max(1, self.model.n_vocab))
        scores: list = []
        logits = None
        for a in range(0, len(tokens), chunk):
            rows = self.model.eval(tokens[a:a + chunk], all_logits=True)
            self.cached += tokens[a:a + len(rows)]
            scores += next_token_logprobs(rows, tokens, a, top)
            logits = rows[-1]
        self._version = self.model.cache_version()
        return logits, scores

    def forget(self) -> None:
        self.model.reset()
        self.cached = []
        self._version = self.model.cache_version()

    # ------------------------------------------------------------------ the loop
    def run(self, prompt: Sequence[int], sampler: Sampler, max_tokens: int = -1, stop: Iterable[str] = (),
            ignore_eos: bool = False, should_stop: Callable[[], bool] | None = None,
            logprobs: int | None = None, score_prompt: bool = False) -> Run:
        """Start a generation after `prompt` (token ids). max_tokens < 0: until an end token or
        the context is full. should_stop() is polled once per token (Ctrl-C handling).
        logprobs=N (>= 0): record each sampled token's log-probability and the N likeliest;
        score_prompt too: each prompt token's after the first (Run.prompt_scored; the prompt
        is then evaluated again from the start, without reusing the cache)."""
        self.check_prompt(prompt)  # now, not at the first token: a caller may print before iterating
        r = Run(prompt_tokens=len(prompt))
        if logprobs is not None:
            r.scored = []
        score = logprobs if score_prompt and logprobs is not None else None
        r._it = self._loop(r, list(prompt), sampler, max_tokens, list(stop or ()), ignore_eos, should_stop,
                           logprobs, score)
        return r

    def _loop(self, r: Run, prompt: list[int], sampler: Sampler, max_tokens: int, stop: list[str],
              ignore_eos: bool, should_stop, top_logprobs: int | None, score: int | None) -> Iterator[str]:
        t0 = time.perf_counter()
        if score is None:
            logits, reused = self.prefill(prompt)
        else:
            (logits, r.prompt_scored), reused = self.prefill_scored(prompt, score), 0
        t1 = time.perf_counter()
        r.timings.prompt_tokens, r.timings.cached_tokens, r.timings.prompt_s = len(prompt) - reused, reused, t1 - t0
        version = self._version  # this run's own: the Generator's moves on with any later run

        n_ctx = self.model.n_ctx
        hist = np.zeros(n_ctx + 1, dtype=np.int32)  # prompt + generated, for the penalties
        hist[: len(prompt)] = prompt
        n = len(prompt)
        decoder = self.tokenizer.stream_decoder(special=False)
        stops = StopStrings(stop)
        parts: list[str] = []
        limit = max_tokens if max_tokens >= 0 else n_ctx
        stop_ids = self.stop_ids
        cut = False  # ended by a stop string: what follows it is dropped
        decoded = 0  # characters the decoder has produced (where the next token's text starts)
        try:
            while True:
                if len(r.tokens) >= limit:
                    r.finish_reason = "length"
                    break
                if should_stop is not None and should_stop():
                    r.finish_reason, r.interrupted = "stop", True
                    break
                if ignore_eos:
                    logits[self._eog[self._eog < len(logits)]] = -np.inf
                tok = sampler.sample(logits, hist[:n])
                if tok in stop_ids:
                    r.finish_reason = "stop"
                    break
                r.tokens.append(tok)
                if top_logprobs is not None:
                    r.scored.append((tok, *token_logprobs(logits, tok, top_logprobs), decoded))
                hist[n] = tok
                n += 1
                piece = decoder.push(tok)
                decoded += len(piece)
                text, stopped = stops.push(piece)
                if text:
                    parts.append(text)
                    yield text
                if stopped:
                    r.finish_reason, cut = "stop", True
                    break
                if len(self.cached) >= n_ctx:  # no room to evaluate it: the context is full
                    r.finish_reason = "length"
                    break
                if len(r.tokens) >= limit:  # the last token needs no evaluation
                    r.finish_reason = "length"
                    break
                if self.model.cache_version() != version:
                    # reset(), eval() or another generation (of this Generator too) used the cache
                    # between two tokens: continuing would run this token after someone else's
                    raise RuntimeError("the model's cache changed while this generation was running "
                                       "(reset, eval or another generation in between its tokens)")
                logits = self.model.eval([tok])
                self.cached.append(tok)
                version = self._version = self.model.cache_version()
            tail = ""
            if not cut:  # bytes the decoder held back, and text held for a stop string that never came
                tail, stopped = stops.push(decoder.flush())
                if not stopped:
                    tail += stops.flush()
            if tail:
                parts.append(tail)
                yield tail
        finally:
            r.timings.gen_tokens = len(r.tokens)
            r.timings.gen_s = time.perf_counter() - t1
            r.text = "".join(parts)
            r.cut = cut
            if r.finish_reason is None:  # the consumer stopped iterating early
                r.finish_reason, r.interrupted = "stop", True


# ---------------------------------------------------------------- the Python API behind Model
def generator_for(model) -> Generator:
    """The model's Generator (one per Model, so the KV cache is reused across calls)."""
    g = getattr(model, "_generator", None)
    if g is None:
        g = Generator(model, model.tokenizer)
        model._generator = g
    return g


def _sampler(temperature=0.8, top_k=40, top_p=0.95, min_p=0.05, repeat_penalty=1.0, repeat_last_n=64,
             presence_penalty=0.0, frequency_penalty=0.0, seed=None) -> Sampler:
    return Sampler(temperature=temperature, top_k=top_k, top_p=top_p, min_p=min_p, repeat_penalty=repeat_penalty,
                   repeat_last_n=repeat_last_n, presence_penalty=presence_penalty,
                   frequency_penalty=frequency_penalty, seed=seed)


def prompt_ids(model, prompt: str | Sequence[int]) -> list[int]:
    """Token ids of a prompt: text is tokenized as llama.cpp's completion tool does
    (BOS as the vocab says, special-token text such as <|user|> parsed)."""
    if isinstance(prompt, str):
        return model.tokenizer.tokenize(prompt, add_special=True, parse_special=True)
    return [int(t) for t in prompt]


def generate(model, prompt: str | Sequence[int], max_tokens: int = 128, temperature: float = 0.8,
             top_k: int = 40, top_p: float = 0.95, min_p: float = 0.05, repeat_penalty: float = 1.0,
             repeat_last_n: int = 64, presence_penalty: float = 0.0, frequency_penalty: float = 0.0,
             seed: int | None = None, stop: Sequence[str] | str | None = None, stream: bool = True,
             ignore_eos: bool = False):
    """Continue `prompt` (text or token ids). stream=True: an iterator of text pieces;
    stream=False: the whole text. max_tokens < 0: until an end token or a full context."""
    sampler = _sampler(temperature, top_k, top_p, min_p, repeat_penalty, repeat_last_n, presence_penalty,
                       frequency_penalty, seed)
    stops = [stop] if isinstance(stop, str) else list(stop or ())
    run = generator_for(model).run(prompt_ids(model, prompt), sampler, max_tokens, stops, ignore_eos)
    model.last_run = run
    return iter(run) if stream else run.consume().text


def _usage(run: Run) -> dict:
    return {"prompt_tokens": run.prompt_tokens, "completion_tokens": len(run.tokens),
            "total_tokens": run.prompt_tokens + len(run.tokens)}


def _token_text(tokenizer, tok: int) -> tuple[str, bytes]:
    piece = tokenizer.token_to_piece(tok, special=False)
    return piece.decode("utf-8", errors="ignore"), piece  # (a byte of a split character: "")


def check_logprobs(n, name: str = "logprobs") -> int | None:
    """None (off) or a count >= 0 of alternatives to report with each token."""
    if n is None:
        return None
    if isinstance(n, bool) or not isinstance(n, int) or n < 0:
        raise ValueError(f"{name} must be an integer >= 0, got {n!r}")
    return n


def completion_logprobs(tokenizer, scored) -> dict:
    """llama-cpp-python's completion "logprobs" for `scored` entries (Run.scored; an entry
    whose best is None, the echoed prompt's first token, gets null for both)."""
    texts, tops = [], []
    for tok, lp, best, _ in scored:
        text = _token_text(tokenizer, tok)[0]
        top = None
        if best is not None:
            top = {_token_text(tokenizer, i)[0]: v for i, v in best}
            top[text] = lp
        texts.append(text)
        tops.append(top)
    return {"tokens": texts, "text_offset": [off for *_, off in scored],
            "token_logprobs": [lp for _, lp, _, _ in scored], "top_logprobs": tops}


def chat_logprobs(tokenizer, scored) -> dict:
    """OpenAI's chat "logprobs" ({"content": [...]}) for `scored` entries (Run.scored)."""
    def entry(tok: int, lp: float) -> dict:
        text, raw = _token_text(tokenizer, tok)
        return {"token": text, "logprob": lp, "bytes": list(raw)}
    return {"content": [{**entry(tok, lp), "top_logprobs": [entry(i, v) for i, v in best]}
                        for tok, lp, best, _ in scored], "refusal": None}


def stream_logprobs(run: Run, shape: Callable[[list], dict]):
    """(piece, logprobs of the tokens whose text begins in it, False) for each piece of a
    run as it comes, then ("", the rest, True) once it ends; shape(entries) formats them.
    A run that scores nothing gets None for each."""
    sent = emitted = 0
    for piece in run:
        if run.scored is None:
            yield piece, None, False
            continue
        emitted += len(piece)
        hi = run.kept_scored(emitted)
        yield piece, shape(run.scored[sent:hi]), False
        sent = hi
    yield "", None if run.scored is None else shape(run.scored[sent:max(sent, run.kept_scored())]), True


def prompt_entries(tokenizer, ids: Sequence[int], scored, text: str | None = None) -> list:
    """Run.scored-style entries of an echoed prompt: each token but a leading BOS, with the
    log-probabilities the model gave it after the tokens before it (`scored`, from
    Run.prompt_scored) and where its text starts in the echoed `text` (default: the
    detokenized prompt; a prompt given as text lacks the space SentencePiece puts before its
    first word, which the offsets then leave out). As in OpenAI's and llama-cpp-python's
    completions, the first listed token gets none."""
    bos = tokenizer.bos_id
    first = 1 if ids and bos is not None and ids[0] == bos else 0
    decoder = tokenizer.stream_decoder(special=False)
    out, at, pieces = [], 0, []
    for i, tok in enumerate(ids):
        piece = decoder.push(tok)
        if i >= first:
            lp, best = (None, None) if i == first or i == 0 else scored[i - 1]
            out.append((tok, lp, best, at))
        at += len(piece)
        pieces.append(piece)
    decoded = "".join(pieces) + decoder.flush()
    if text is not None and text != decoded and decoded.endswith(text):
        extra = len(decoded) - len(text)
        out = [(t, lp, best, max(0, off - extra)) for t, lp, best, off in out]
    return out


def _new_id(prefix: str) -> str:
    import uuid
    return f"{prefix}-{uuid.uuid4()}"


def create_completion(model, prompt: str | Sequence[int], max_tokens: int | None = 16, temperature: float = 0.8,
                      top_p: float = 0.95, top_k: int = 40, min_p: float = 0.05, stop=None, stream: bool = False,
                      seed: int | None = None, repeat_penalty: float = 1.0, repeat_last_n: int = 64,
                      presence_penalty: float = 0.0, frequency_penalty: float = 0.0, ignore_eos: bool = False,
                      echo: bool = False, logprobs: int | None = None):
    """OpenAI-style text completion, shaped like llama-cpp-python's Llama.create_completion:
    a "text_completion" dict, or with stream=True an iterator of such chunks. echo: the
    prompt's text comes first. logprobs=N: each generated token's log-probability under the
    model (before the sampler's filters) and the N likeliest tokens'; with echo, the prompt's
    tokens' too (from the second; text_offset then counts from the prompt's start)."""
    logprobs = check_logprobs(logprobs)
    sampler = _sampler(temperature, top_k, top_p, min_p, repeat_penalty, repeat_last_n, presence_penalty,
                       frequency_penalty, seed)
    stops = [stop] if isinstance(stop, str) else list(stop or ())
    limit = -1 if max_tokens is None or max_tokens <= 0 else max_tokens
    ids = prompt_ids(model, prompt)
    head = (prompt if isinstance(prompt, str) else model.detokenize(ids)) if echo else ""
    scoring = echo and logprobs is not None
    run = generator_for(model).run(ids, sampler, limit, stops, ignore_eos, logprobs=logprobs, score_prompt=scoring)
    model.last_run = run
    cid, created, name = _new_id("cmpl"), int(time.time()), model.path

    def chunk(text: str, finish, lp=None):
        return {"id": cid, "object": "text_completion", "created": created, "model": name,
                "choices": [{"text": text, "index": 0, "logprobs": lp, "finish_reason": finish}]}

    def shape(entries):  # the completion's entries, their offsets counted from the echoed prompt's start
        return completion_logprobs(model.tokenizer, shift_offsets(entries, len(head)))

    def prompt_lp():  # (the prompt is scored once the run has started)
        return completion_logprobs(model.tokenizer, prompt_entries(model.tokenizer, ids, run.prompt_scored, head))

    if stream:
        def chunks():
            it = stream_logprobs(run, shape)
            if scoring:  # the prompt is scored in the prefill, before the first piece
                it = itertools.chain([next(it)], it)
            if head:
                yield chunk(head, None, prompt_lp() if scoring else None)
            for piece, lp, end in it:
                if end:
                    last = chunk("", run.finish_reason, lp)
                else:
                    yield chunk(piece, None, lp)
            last["usage"] = _usage(run)
            yield last
        return chunks()
    run.consume()
    lp = None
    if logprobs is not None:
        lp = shape(run.scored[: run.kept_scored()])
        if scoring:
            head_lp = prompt_lp()
            lp = {k: head_lp[k] + v for k, v in lp.items()}
    out = chunk(head + run.text, run.finish_reason, lp)
    out["usage"] = _usage(run)
    return out
