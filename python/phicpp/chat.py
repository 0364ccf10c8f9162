"""Chat templates (jinja2) and a multi-turn chat session that reuses the KV cache.

The template comes from the GGUF's `tokenizer.chat_template` (what the model was
trained with), rendered like Hugging Face's apply_chat_template: a sandboxed jinja2
environment with trim_blocks/lstrip_blocks, `bos_token`, `eos_token`,
`add_generation_prompt` and `raise_exception`. A file's template is code from whoever
made the file: template_sandbox bounds what it reaches, its time and its memory, and
anything that goes wrong in it is a ValueError. A model without one gets a built-in
fallback picked from its vocabulary:

    phi4   <|im_start|>role<|im_sep|>content<|im_end|>      (vocab has <|im_start|>, <|im_sep|>)
    phi3   <|role|>\\ncontent<|end|>\\n                      (vocab has <|user|>, <|assistant|>; Phi-3/3.5/4-mini)
    plain  "role: content\\n" lines                       (anything else, e.g. base phi-2 models)

ChatSession renders the WHOLE conversation each turn and lets the Generator find
the common token prefix with the cache, so only the new turn is evaluated. When
the next turn would not fit (prompt + room for the reply > n_ctx), the oldest
user/assistant exchanges are dropped (the system prompt stays) until it fits;
`trimmed` counts them so the CLI can say so.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Iterable

import jinja2

from ._core import ContextOverflowError
from .generate import Generator, Run
from .sampling import Sampler
from .template_sandbox import BoundedSandbox, compile_template

PHI3_TEMPLATE = (  # microsoft/Phi-3.5-mini-instruct's tokenizer_config.json
    "{% for message in messages %}"
    "{% if message['role'] == 'system' and message['content'] %}{{'<|system|>\n' + message['content'] + '<|end|>\n'}}"
    "{% elif message['role'] == 'user' %}{{'<|user|>\n' + message['content'] + '<|end|>\n'}}"
    "{% elif message['role'] == 'assistant' %}{{'<|assistant|>\n' + message['content'] + '<|end|>\n'}}"
    "{% endif %}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|assistant|>\n' }}{% else %}{{ eos_token }}{% endif %}"
)
PHI4_TEMPLATE = (  # microsoft/phi-4's tokenizer_config.json
    "{% for message in messages %}"
    "{% if (message['role'] == 'system') %}{{'<|im_start|>system<|im_sep|>' + message['content'] + '<|im_end|>'}}"
    "{% elif (message['role'] == 'user') %}{{'<|im_start|>user<|im_sep|>' + message['content'] + '<|im_end|>'}}"
    "{% elif (message['role'] == 'assistant') %}"
    "{{'<|im_start|>assistant<|im_sep|>' + message['content'] + '<|im_end|>'}}"
    "{% endif %}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant<|im_sep|>' }}{% endif %}"
)
PLAIN_TEMPLATE = (  # no chat tokens at all: a readable transcript the model can continue
    "{% for message in messages %}{{ message['role'] + ': ' + message['content'] + '\n' }}{% endfor %}"
    "{% if add_generation_prompt %}{{ 'assistant:' }}{% endif %}"
)
BUILTIN = {"phi3": PHI3_TEMPLATE, "phi4": PHI4_TEMPLATE, "plain": PLAIN_TEMPLATE}
PLAIN_STOPS = ["\nuser:", "\nsystem:"]


def _raise(message: str):
    raise jinja2.TemplateError(message)


class ChatTemplate:
    """A compiled chat template."""

    def __init__(self, source: str, name: str = "custom", bos_token: str = "", eos_token: str = "",
                 stop: Iterable[str] = (), **limits):
        """limits: template_sandbox.BoundedSandbox's time_limit, max_output, max_value."""
        self._env = BoundedSandbox(trim_blocks=True, lstrip_blocks=True, **limits)
        self._env.globals["raise_exception"] = _raise
        try:
            self._t = compile_template(self._env, source)
        except Exception as e:  # noqa: BLE001 (a hostile source may fail anywhere: deep nesting, ...)
            raise ValueError(f"chat template does not compile: {type(e).__name__}: {e}") from None
        self.source, self.name = source, name
        self.bos_token, self.eos_token = bos_token, eos_token
        self.stop = list(stop)  # stop strings the template needs (plain transcripts)

    @classmethod
    def builtin(cls, name: str, tokenizer=None) -> "ChatTemplate":
        if name not in BUILTIN:
            raise ValueError(f"unknown built-in chat template {name!r}; expected one of {', '.join(BUILTIN)}")
        bos, eos = _special_texts(tokenizer)
        return cls(BUILTIN[name], name, bos, eos, PLAIN_STOPS if name == "plain" else ())

    @classmethod
    def for_model(cls, metadata: dict, tokenizer) -> "ChatTemplate":
        """The GGUF's own template, else the built-in one its vocabulary fits."""
        bos, eos = _special_texts(tokenizer)
        src = metadata.get("tokenizer.chat_template")
        if isinstance(src, str) and src.strip():
            return cls(src, "gguf", bos, eos)
        return cls.builtin(guess_builtin(tokenizer), tokenizer)

    def render(self, messages: list[dict], add_generation_prompt: bool = True) -> str:
        size = sum(len(str(v)) for m in messages for v in (m.values() if isinstance(m, dict) else (m,)))
        try:
            return self._env.render(self._t, input_chars=size, messages=messages,
                                    add_generation_prompt=add_generation_prompt, bos_token=self.bos_token,
                                    eos_token=self.eos_token)
        except Exception as e:  # noqa: BLE001 (the template is the file's code: any failure is the file's)
            raise ValueError(f"chat template failed: {type(e).__name__}: {e}") from None


def _special_texts(tokenizer) -> tuple[str, str]:
    if tokenizer is None:
        return "", ""
    bos = tokenizer.token_text(tokenizer.bos_id) if tokenizer.bos_id is not None else ""
    eos = tokenizer.token_text(tokenizer.eos_id) if tokenizer.eos_id is not None else ""
    return bos, eos


def guess_builtin(tokenizer) -> str:
    has = lambda t: tokenizer.token_id(t) is not None  # noqa: E731
    if has("<|im_start|>") and has("<|im_sep|>"):
        return "phi4"
    if has("<|user|>") and has("<|assistant|>"):
        return "phi3"
    return "plain"


def chat_tokens(template: ChatTemplate, tokenizer, messages: list[dict]) -> list[int]:
    """Token ids of the rendered conversation, ready for the assistant's reply."""
    text = template.render(messages, add_generation_prompt=True)
    # the template writes BOS itself when it wants one; add it only if the vocab asks and it is absent
    ids = tokenizer.tokenize(text, add_special=False, parse_special=True)
    if tokenizer.add_bos and tokenizer.bos_id is not None and (not ids or ids[0] != tokenizer.bos_id):
        ids.insert(0, tokenizer.bos_id)
    return ids


def template_for(model) -> ChatTemplate:
    t = getattr(model, "_chat_template", None)
    if t is None:
        t = model._chat_template = ChatTemplate.for_model(model.metadata, model.tokenizer)
    return t


@dataclass
class ChatSession:
    """A conversation on one model: messages, template, generator (KV cache reuse)."""
    generator: Generator
    template: ChatTemplate
    system_prompt: str | None = None
    messages: list[dict] = field(default_factory=list)
    reply_room: int = 256      # tokens kept free for the reply when trimming old turns
    trimmed: int = 0           # exchanges dropped so far to fit the context

    def __post_init__(self):
        self.clear()

    def clear(self) -> None:
        """Forget the conversation (the system prompt stays)."""
        self.messages = [{"role": "system", "content": self.system_prompt}] if self.system_prompt else []
        self.trimmed = 0

    def _tokens(self, messages: list[dict]) -> list[int]:
        return chat_tokens(self.template, self.generator.tokenizer, messages)

    def prompt_tokens(self, user: str) -> list[int]:
        """Tokens of the conversation plus `user`, after dropping the oldest exchanges if needed."""
        n_ctx = self.generator.model.n_ctx
        room = min(self.reply_room, n_ctx // 4)
        while True:
            ids = self._tokens(self.messages + [{"role": "user", "content": user}])
            if len(ids) + room <= n_ctx:
                return ids
            if not self._drop_oldest_exchange():
                if len(ids) < n_ctx:
                    return ids  # the message alone barely fits: reply in what is left
                raise ContextOverflowError(f"the message is {len(ids)} tokens with the template; the context "
                                           f"holds {n_ctx} (raise -c/--ctx-size)")

    def _drop_oldest_exchange(self) -> bool:
        first = 1 if self.messages and self.messages[0]["role"] == "system" else 0
        if len(self.messages) <= first:
            return False
        del self.messages[first]  # the oldest user turn ...
        while len(self.messages) > first and self.messages[first]["role"] != "user":
            del self.messages[first]  # ... and the replies that followed it
        self.trimmed += 1
        return True

    def send(self, user: str, sampler: Sampler, max_tokens: int = -1, ignore_eos: bool = False,
             should_stop: Callable[[], bool] | None = None) -> Run:
        """Start the reply to `user`; iterate the Run for text. The exchange joins the
        conversation when the Run ends (also when interrupted: the partial reply is kept)."""
        ids = self.prompt_tokens(user)
        run = self.generator.run(ids, sampler, max_tokens, stop=self.template.stop, ignore_eos=ignore_eos,
                                 should_stop=should_stop)
        inner = iter(run)

        def record():
            try:
                yield from inner
            finally:
                self.messages.append({"role": "user", "content": user})
                self.messages.append({"role": "assistant", "content": run.text})
        run._it = record()
        return run


# ---------------------------------------------------------------- the Python API behind Model
def _content_text(content, i: int) -> str:
    """A message's content as the template's text: a string; null (an assistant turn that
    only called tools) as ""; OpenAI's list of text parts joined by newlines, as llama-server."""
    if content is None or isinstance(content, str):
        return content or ""
    if isinstance(content, list):
        texts = []
        for j, part in enumerate(content):
            if not isinstance(part, dict) or part.get("type") != "text" or not isinstance(part.get("text"), str):
                raise ValueError(f"messages[{i}].content[{j}] must be a text part "
                                 f"({{\"type\": \"text\", \"text\": ...}}); other kinds are not supported")
            texts.append(part["text"])
        return "\n".join(texts)
    raise ValueError(f"messages[{i}].content must be a string or a list of text parts, got {type(content).__name__}")


def _check_messages(messages) -> list[dict]:
    out = []
    for i, m in enumerate(messages):
        if not isinstance(m, dict) or "role" not in m:
            raise ValueError(f"messages[{i}] must be a dict with 'role' and 'content'")
        if not isinstance(m["role"], str) or not m["role"]:
            raise ValueError(f"messages[{i}].role must be a non-empty string, got {m['role']!r}")
        out.append({**m, "content": _content_text(m.get("content"), i)})
    if not out:
        raise ValueError("messages is empty")
    return out


def create_chat_completion(model, messages: list[dict], max_tokens: int | None = None, temperature: float = 0.2,
                           top_p: float = 0.95, top_k: int = 40, min_p: float = 0.05, stop=None,
                           stream: bool = False, seed: int | None = None, repeat_penalty: float = 1.0,
                           repeat_last_n: int = 64, presence_penalty: float = 0.0, frequency_penalty: float = 0.0,
                           ignore_eos: bool = False, logprobs: bool = False, top_logprobs: int | None = None):
    """OpenAI-style chat completion, shaped like llama-cpp-python's Llama.create_chat_completion:
    a "chat.completion" dict, or with stream=True an iterator of "chat.completion.chunk" dicts
    (first delta {"role": "assistant"}, then {"content": ...}, last {} with finish_reason).
    logprobs=True: each token's log-probability under the model, as OpenAI gives them
    ({"content": [{"token", "logprob", "bytes", "top_logprobs"}]}), with the top_logprobs
    likeliest tokens' beside it."""
    import time
    import uuid

    from .generate import _sampler, _usage, chat_logprobs, check_logprobs, generator_for, stream_logprobs

    top = check_logprobs(top_logprobs, "top_logprobs")
    if top is not None and not logprobs:
        raise ValueError("top_logprobs needs logprobs=True")
    want = (top or 0) if logprobs else None

    template = template_for(model)
    ids = chat_tokens(template, model.tokenizer, _check_messages(messages))
    sampler = _sampler(temperature, top_k, top_p, min_p, repeat_penalty, repeat_last_n, presence_penalty,
                       frequency_penalty, seed)
    stops = template.stop + ([stop] if isinstance(stop, str) else list(stop or ()))
    limit = -1 if max_tokens is None or max_tokens <= 0 else max_tokens
    run = generator_for(model).run(ids, sampler, limit, stops, ignore_eos, logprobs=want)
    model.last_run = run
    cid, created, name = f"chatcmpl-{uuid.uuid4()}", int(time.time()), model.path

    if stream:
        def chunk(delta: dict, finish, lp=None):
            return {"id": cid, "object": "chat.completion.chunk", "created": created, "model": name,
                    "choices": [{"index": 0, "delta": delta, "logprobs": lp, "finish_reason": finish}]}

        def chunks():
            yield chunk({"role": "assistant"}, None)
            for piece, lp, end in stream_logprobs(run, lambda e: chat_logprobs(model.tokenizer, e)):
                if end:
                    last = chunk({}, run.finish_reason, lp)
                else:
                    yield chunk({"content": piece}, None, lp)
            last["usage"] = _usage(run)
            yield last
        return chunks()
    run.consume()
    lp = None if want is None else chat_logprobs(model.tokenizer, run.scored[: run.kept_scored()])
    return {"id": cid, "object": "chat.completion", "created": created, "model": name,
            "choices": [{"index": 0, "message": {"role": "assistant", "content": run.text}, "logprobs": lp,
                         "finish_reason": run.finish_reason}],
            "usage": _usage(run)}


# ---------------------------------------------------------------- the interactive loop (phicpp chat)
REPL_HELP = """commands:
  /clear   forget the conversation (the system prompt stays)
  /info    messages so far and tokens in the KV cache
  /help    this text
  /exit    quit (also /quit or Ctrl-D)
Ctrl-C while the model answers stops the reply and keeps the conversation."""


def repl(session: ChatSession, sampler: Sampler, max_tokens: int = -1, ignore_eos: bool = False,
         out=None, err=None, prompt: str = "> ") -> int:
    """Read a line, stream the reply, repeat. Returns the exit status: 0, or 1 when input
    came from a pipe or file and a turn failed (a script has no other way to tell)."""
    import signal
    import sys

    try:
        import readline  # noqa: F401  (line editing and history for input())
    except ImportError:
        pass
    out = out or sys.stdout
    err = err or sys.stderr
    failed = 0

    def status() -> int:
        return 1 if failed and not sys.stdin.isatty() else 0

    while True:
        try:
            line = input(prompt)
        except EOFError:  # Ctrl-D
            out.write("\n")
            return status()
        except KeyboardInterrupt:  # Ctrl-C at the prompt: drop the line
            out.write("\n")
            continue
        text = line.strip()
        if not text:
            continue
        if text.startswith("/"):
            cmd = text.split()[0].lower()
            if cmd in ("/exit", "/quit"):
                return status()
            if cmd == "/clear":
                session.clear()
                err.write("(conversation cleared)\n")
            elif cmd == "/info":
                g = session.generator
                err.write(f"({len(session.messages)} messages, {len(g.cached)} tokens cached of "
                          f"n_ctx={g.model.n_ctx}, {session.trimmed} exchanges trimmed)\n")
            elif cmd == "/help":
                err.write(REPL_HELP + "\n")
            else:
                err.write(f"unknown command {cmd}; /help lists them\n")
            continue

        stop = {"flag": False}

        def on_sigint(signum, frame):
            stop["flag"] = True

        trimmed = session.trimmed
        try:
            run = session.send(line, sampler, max_tokens, ignore_eos, should_stop=lambda: stop["flag"])
        except (ValueError, ContextOverflowError) as e:
            err.write(f"error: {e}\n")
            failed += 1
            continue
        if session.trimmed != trimmed:
            err.write(f"(context full: dropped the {session.trimmed - trimmed} oldest exchange(s))\n")
        old = signal.signal(signal.SIGINT, on_sigint)
        try:
            for piece in run:
                out.write(piece)
                out.flush()
        finally:
            signal.signal(signal.SIGINT, old)
        out.write("\n")
        if run.interrupted:
            err.write("(reply stopped)\n")
        elif run.finish_reason == "length" and session.generator.model.n_past >= session.generator.model.n_ctx:
            err.write("(context full: the reply was cut; older turns are dropped next time)\n")
        out.flush()
