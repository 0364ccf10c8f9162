"""The `phicpp` command line: a click group, one subcommand per task.

Adding a subcommand:

    @main.command()
    @click.argument("model", type=click.Path())
    def run(model):
        with user_errors():          # PhicppError / OSError -> one line on stderr, exit 1
            ...

`fail(msg)` prints "error: msg" and exits 1 from anywhere in a command.
"""
from __future__ import annotations

import os
import sys
import warnings
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator, NoReturn

import click

from . import __version__

# Integer options as the C++ core takes them: a value past 32 bits is a usage error, not a traceback.
INT32 = click.IntRange(-2**31, 2**31 - 1)


def fail(message: str, code: int = 1) -> NoReturn:
    """Print one clear error line to stderr and exit with `code` (no traceback)."""
    click.echo(f"error: {message}", err=True)
    sys.exit(code)


def _error_types() -> tuple[type[BaseException], ...]:
    types: list[type[BaseException]] = [OSError]
    try:
        from ._core import PhicppError
        types.append(PhicppError)
    except ImportError:
        pass
    from .convert import ConvertError
    types.append(ConvertError)
    return tuple(types)


@contextmanager
def sigterm_cleans_up() -> Iterator[None]:
    """SIGTERM (kill, a job scheduler's stop) ends a file-writing command as Ctrl-C does:
    by an exception, so its half-written temporary file is removed, exit status 143.
    Python's default would end the process where it stands and leave the file."""
    import signal
    import threading

    if threading.current_thread() is not threading.main_thread():  # (handlers live on the main thread)
        yield
        return

    def stop(signum, frame):
        raise SystemExit(128 + signum)
    old = signal.signal(signal.SIGTERM, stop)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, old)


@contextmanager
def user_errors() -> Iterator[None]:
    """Turn the errors a user can cause (bad paths, bad files) into `fail(...)`;
    anything else is a bug and keeps its traceback. (Ctrl-C: the group, _Commands.)"""
    try:
        yield
    except BrokenPipeError:
        # the reader went away (`phicpp info M | head`): not an error of ours
        sys.stderr.close()
        os._exit(0)
    except _error_types() as e:
        msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        fail(msg)


class _Commands(click.Group):
    """A Ctrl-C anywhere in a command, its modules' imports included, ends it as "interrupted",
    status 130 (click's own handling says "Aborted!", status 1)."""

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except KeyboardInterrupt:
            fail("interrupted", 130)
        except ImportError as e:
            if isinstance(e.__context__, KeyboardInterrupt):  # (numpy reports a Ctrl-C during its import so)
                fail("interrupted", 130)
            raise


@click.group(cls=_Commands, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(version=__version__, prog_name="phicpp", message="%(prog)s %(version)s")
def main() -> None:
    """phicpp: run Microsoft's Phi models from GGUF files."""
    if sys.stdout is None:  # started with stdout closed (`>&-`): what would go there goes nowhere
        sys.stdout = open(os.devnull, "w")
    # what a load assumed (Model's warnings) as one plain line, not Python's warning format
    warnings.showwarning = lambda message, *_a, **_k: click.echo(f"warning: {message}", err=True)


# ================================================================ run commands: generate, chat, info,
# bench, perplexity, quantize (the sampling/CLI helper's part of this file)
class _OneLineErrors(click.Command):
    """A bad flag value prints one `error: ...` line (not click's usage block) and exits 2."""

    def make_context(self, info_name, args, parent=None, **extra):
        try:
            return super().make_context(info_name, args, parent=parent, **extra)
        except click.UsageError as e:
            fail(e.format_message().replace("\n", " "), 2)


@contextmanager
def run_errors() -> Iterator[None]:
    """user_errors() plus ValueError (bad settings, template errors) and jinja2 errors."""
    try:
        with user_errors():
            yield
    except ValueError as e:
        fail(str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__)


def _model_path(model: Path | None) -> Path:
    if model is not None:
        return model
    from .models import default_model_notice, default_model_path
    path = default_model_path()
    click.echo(default_model_notice(), err=True)
    return path


def _context_length(path: Path) -> int:
    """The training context the GGUF declares (4096 when it says nothing)."""
    from ._core import GGUFFile
    md = GGUFFile(str(path)).metadata
    n = md.get(f"{md.get('general.architecture', '')}.context_length")
    return int(n) if isinstance(n, int) and n > 0 else 4096


def _device(device: str | None, n_gpu_layers: int | None) -> str:
    """--device, else -ngl as llama.cpp spells it (0: CPU, more: the GPU, or the CPU with a
    warning where there is none, as llama.cpp), else auto."""
    if device is not None:
        if device not in ("cpu", "cuda", "auto"):
            raise ValueError(f"--device must be cpu, cuda or auto, got {device!r}")
        return device
    if n_gpu_layers is not None:
        from .model import device_for_gpu_layers
        return device_for_gpu_layers(n_gpu_layers)
    return "auto"


def _load(model: Path | None, ctx_size: int, threads: int, batch_size: int = 512, device: str | None = None,
          n_gpu_layers: int | None = None, n_seq: int = 1):
    from .model import Model
    from .progress import progress_bar
    for name, v, lo in (("-c/--ctx-size", ctx_size, 0), ("-t/--threads", threads, 0), ("-b/--batch-size", batch_size, 1)):
        if v < lo:
            raise ValueError(f"{name} must be >= {lo}, got {v}")
    device = _device(device, n_gpu_layers)
    path = _model_path(model)
    ctx = click.get_current_context(silent=True)
    kv_type = (ctx.meta.get("phicpp.kv_type") if ctx else None) or "auto"
    kw = dict(n_ctx=ctx_size, n_threads=threads, n_batch=batch_size, device=device, n_seq=n_seq, kv_type=kv_type)
    if device == "cpu":
        return Model(str(path), **kw)
    # uploading to a GPU takes a while: show it (MiB of the file's weights)
    total = max(1, path.stat().st_size >> 20) if path.exists() else 1
    with progress_bar("loading", total) as step:
        seen = [0]

        def progress(done: int, _total: int) -> None:
            mib = done >> 20
            if mib > seen[0]:
                step(advance=mib - seen[0])
                seen[0] = mib
        m = Model(str(path), progress=progress, **kw)
        step(advance=total - seen[0])  # the header and metadata bytes the weights do not count
        return m


def _model_option(f):
    return click.option("-m", "--model", type=click.Path(path_type=Path), default=None,
                        help="GGUF model file (default: the tiny model shipped with phicpp).")(f)


_KV_TYPES = ["f32", "f16", "q8_0", "q4_0"]


def _kv_type(ctx, param, value):
    """-ctk / -ctv, as llama.cpp spells them; phicpp keeps one type for keys and values."""
    if value is not None:
        other = ctx.meta.get("phicpp.kv_type")
        if other is not None and other != value:
            raise click.BadParameter(f"phicpp stores keys and values in one type; got {other} and {value}")
        ctx.meta["phicpp.kv_type"] = value
    return value


def _kv_options(f):
    for flag, name in (("-ctv", "--cache-type-v"), ("-ctk", "--cache-type-k")):
        f = click.option(flag, name, type=click.Choice(_KV_TYPES), default=None, expose_value=False,
                         callback=_kv_type, help="KV cache type (default f16; f32 for F32 models). "
                         "q8_0/q4_0: heads of a multiple of 32.")(f)
    return f


def _runtime_options(f):
    f = _kv_options(f)
    f = click.option("-c", "--ctx-size", type=INT32, default=0, show_default=True,
                     help="Context size in tokens (0: the model's, at most 4096).")(f)
    f = click.option("-t", "--threads", type=INT32, default=0, help="CPU threads (0: all cores).")(f)
    f = click.option("-b", "--batch-size", type=INT32, default=512, show_default=True,
                     help="Tokens per prefill batch.")(f)
    f = _device_options(f)
    return f


def _device_options(f):
    f = click.option("--device", default=None,
                     help="cpu, cuda or auto (default: auto, the GPU when there is one).")(f)
    f = click.option("-ngl", "--n-gpu-layers", "n_gpu_layers", type=INT32, default=None,
                     help="As llama.cpp: 0 runs on the CPU, more (e.g. 99) on the GPU (the CPU, with a "
                          "warning, where there is none); phicpp puts the whole model on one device.")(f)
    return f


def _sampling_options(f):
    opts = [
        click.option("--temp", "temperature", type=float, default=0.8, show_default=True,
                     help="Temperature (<= 0: greedy)."),
        click.option("--top-k", type=INT32, default=40, show_default=True, help="Top-k (<= 0: off; 1: greedy)."),
        click.option("--top-p", type=float, default=0.95, show_default=True, help="Top-p (1.0: off)."),
        click.option("--min-p", type=float, default=0.05, show_default=True, help="Min-p (0.0: off)."),
        click.option("--repeat-penalty", type=float, default=1.0, show_default=True,
                     help="Penalty for repeated tokens (1.0: off)."),
        click.option("--repeat-last-n", type=INT32, default=64, show_default=True,
                     help="Tokens the penalties look back over (0: off, -1: the context)."),
        click.option("--presence-penalty", type=float, default=0.0, show_default=True),
        click.option("--frequency-penalty", type=float, default=0.0, show_default=True),
        click.option("-s", "--seed", type=int, default=-1, show_default=True, help="RNG seed (-1: random)."),
        click.option("--ignore-eos", is_flag=True, help="Never stop at end-of-generation tokens."),
    ]
    for o in reversed(opts):
        f = o(f)
    return f


def _sampler(kw: dict):
    from .sampling import Sampler
    names = ("temperature", "top_k", "top_p", "min_p", "repeat_penalty", "repeat_last_n", "presence_penalty",
             "frequency_penalty", "seed")
    return Sampler(**{k: kw.pop(k) for k in names})


@main.command(cls=_OneLineErrors)
@_model_option
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option("--port", type=INT32, default=8080, show_default=True, help="Port to listen on.")
@click.option("-np", "--parallel", type=INT32, default=4, show_default=True,
              help="Requests decoded together (sequences in the KV cache).")
@click.option("--alias", default=None, help="The model's name in the API (default: the file name).")
@_runtime_options
def serve(model, host, port, parallel, alias, ctx_size, threads, batch_size, device, n_gpu_layers):
    """An OpenAI-compatible server: /v1/chat/completions, /v1/completions, /v1/models, /health.

    -c/--ctx-size is the whole context, split between the --parallel sequences as
    llama-server splits it (0: the model's training context, at most 4096)."""
    with run_errors():
        if parallel < 1 or parallel > 256:
            raise ValueError(f"--parallel must be within [1, 256], got {parallel}")
        if not 0 < port < 65536:
            raise ValueError(f"--port must be within [1, 65535], got {port}")
        try:
            import starlette  # noqa: F401
            import uvicorn  # noqa: F401
        except ImportError:
            raise ValueError("phicpp serve needs starlette and uvicorn: pip install 'phicpp[serve]'") from None
        from .server import listen_socket
        from .server import serve as run_server
        path = _model_path(model)
        total = ctx_size or min(_context_length(path), 4096)
        if total < parallel * 8:
            raise ValueError(f"a context of {total} tokens is too small for {parallel} sequences (-c / -np)")
        sock = listen_socket(host, port)  # a busy port fails before the model loads
        with sock:
            m = _load(path, total // parallel, threads, batch_size, device, n_gpu_layers, n_seq=parallel)
            click.echo(f"phicpp serve: {m.path} ({m.device}), {parallel} sequences of {m.n_ctx} tokens, "
                       f"listening on http://{host}:{port}/v1", err=True)
            run_server(m, host=host, port=port, parallel=parallel, model_name=alias, log_level="warning", sock=sock)
        click.echo("phicpp serve: stopped", err=True)


@main.command(cls=_OneLineErrors)
@_model_option
@click.option("-p", "--prompt", default=None, help="Prompt text.")
@click.option("-f", "--file", "prompt_file", type=click.Path(path_type=Path), default=None,
              help="Read the prompt from a file.")
@click.option("-n", "--n-predict", type=INT32, default=256, show_default=True,
              help="Tokens to generate (-1: until an end token or a full context).")
@click.option("--stop", multiple=True, help="Stop when this text appears (repeatable).")
@click.option("--no-display-prompt", is_flag=True, help="Print only the generated text.")
@click.option("--no-timing", is_flag=True, help="Do not print timings to stderr.")
@_sampling_options
@_runtime_options
def generate(model, prompt, prompt_file, n_predict, stop, no_display_prompt, no_timing, ignore_eos,
             ctx_size, threads, batch_size, device, n_gpu_layers, **sampling):
    """Continue a prompt, streaming the text (llama.cpp's llama-completion flags)."""
    from .generate import generator_for, prompt_ids

    with run_errors():
        if prompt is not None and prompt_file is not None:
            raise ValueError("give the prompt with -p or -f, not both")
        if prompt_file is not None:
            prompt = prompt_file.read_text(encoding="utf-8", errors="replace")
        if prompt is None:
            raise ValueError("no prompt: use -p TEXT or -f FILE")
        sampler = _sampler(sampling)
        m = _load(model, ctx_size, threads, batch_size, device, n_gpu_layers)
        ids = prompt_ids(m, prompt)
        run = generator_for(m).run(ids, sampler, n_predict, list(stop), ignore_eos)
        out = sys.stdout
        if not no_display_prompt:
            out.write(prompt)
            out.flush()
        try:
            for piece in run:
                out.write(piece)
                out.flush()
        except KeyboardInterrupt:
            out.write("\n")
            fail("interrupted", 130)
        out.write("\n")
        out.flush()
        if not no_timing:
            click.echo(f"\nsampler seed: {sampler.seed}; finish: {run.finish_reason}\n{run.timings.report()}", err=True)


@main.command(cls=_OneLineErrors)
@_model_option
@click.option("-sys", "--system-prompt", default=None, help="System prompt.")
@click.option("-n", "--n-predict", type=INT32, default=-1, show_default=True,
              help="Most tokens per reply (-1: until an end token or a full context).")
@click.option("--template", "template_name", type=click.Choice(["auto", "phi3", "phi4", "plain"]), default="auto",
              show_default=True, help="Chat template (auto: the GGUF's own, else a built-in one).")
@_sampling_options
@_runtime_options
def chat(model, system_prompt, n_predict, template_name, ignore_eos, ctx_size, threads, batch_size, device,
         n_gpu_layers, **sampling):
    """Chat with a model: multi-turn, streaming, KV cache kept across turns.

    The prompt is the whole conversation rendered with the model's chat template;
    only the tokens after the part already in the cache are evaluated. When the
    context fills up, the oldest exchanges are dropped (the system prompt stays).
    Ctrl-C stops a reply; Ctrl-D or /exit quits; /clear, /help."""
    from .chat import ChatSession, ChatTemplate, repl
    from .generate import generator_for

    with run_errors():
        sampler = _sampler(sampling)
        m = _load(model, ctx_size, threads, batch_size, device, n_gpu_layers)
        if template_name == "auto":
            template = ChatTemplate.for_model(m.metadata, m.tokenizer)
        else:
            template = ChatTemplate.builtin(template_name, m.tokenizer)
        session = ChatSession(generator_for(m), template, system_prompt)
        click.echo(f"phicpp chat: {Path(m.path).name} ({m.arch}, n_ctx={m.n_ctx}, template: {template.name}, "
                   f"seed {sampler.seed}). /help for commands, Ctrl-C stops a reply, Ctrl-D or /exit quits.",
                   err=True)
        code = repl(session, sampler, n_predict, ignore_eos)
    sys.exit(code)


@main.command(cls=_OneLineErrors)
@click.argument("model", type=click.Path(path_type=Path))
@click.option("--tensors", "show_tensors", is_flag=True, help="Also list every tensor.")
def info(model, show_tensors):
    """Show a GGUF's metadata (long values abbreviated) and its tensors by type."""
    from .info import describe

    with run_errors():
        for line in describe(str(model), show_tensors):
            click.echo(line)


def _int_list(text: str, flag: str) -> list[int]:
    try:
        values = [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        values = None
    if values is None or any(not 0 <= v < 2**31 for v in values):
        raise ValueError(f"{flag} takes comma-separated integers >= 0, got {text!r}")
    return values


@main.command(cls=_OneLineErrors)
@_model_option
@click.option("-p", "--n-prompt", default="512", show_default=True, help="Prompt sizes (comma-separated).")
@click.option("-n", "--n-gen", default="128", show_default=True, help="Generation lengths (comma-separated).")
@click.option("-d", "--n-depth", default="0", show_default=True,
              help="Tokens already in the context before each test (comma-separated), as llama-bench's -d.")
@click.option("-r", "--repetitions", type=INT32, default=5, show_default=True)
@click.option("-t", "--threads", type=INT32, default=0, help="CPU threads (0: all cores).")
@click.option("-b", "--batch-size", type=INT32, default=512, show_default=True)
@click.option("-o", "--output", "fmt", type=click.Choice(["md", "json"]), default="md", show_default=True)
@_device_options
@_kv_options
@click.option("--no-warmup", is_flag=True)
def bench(model, n_prompt, n_gen, n_depth, repetitions, threads, batch_size, fmt, device, n_gpu_layers, no_warmup):
    """Measure prefill (ppN) and decode (tgN) speed as llama-bench does."""
    import os

    from . import bench as B

    with run_errors():
        pp, tg, depths = _int_list(n_prompt, "-p"), _int_list(n_gen, "-n"), _int_list(n_depth, "-d")
        if repetitions < 1:
            raise ValueError(f"-r must be >= 1, got {repetitions}")
        n_threads = threads or os.cpu_count() or 1
        m = _load(model, max(pp + tg + [16]) + max(depths + [0]), threads, batch_size, device, n_gpu_layers)
        if fmt == "md":
            click.echo(B.markdown_header())
        results = B.bench(m, pp, tg, repetitions, n_threads, batch_size, warmup=not no_warmup, n_depth=depths)
        if fmt == "md":
            for r in results:
                click.echo(B.markdown_row(r))
        else:
            click.echo(B.to_json(results))


@main.command(cls=_OneLineErrors)
@_model_option
@click.option("-f", "--file", "text_file", type=click.Path(path_type=Path), required=True, help="Text to score.")
@click.option("-c", "--ctx-size", type=INT32, default=512, show_default=True, help="Tokens per chunk.")
@click.option("-b", "--batch-size", type=INT32, default=512, show_default=True)
@click.option("-t", "--threads", type=INT32, default=0)
@click.option("--chunks", type=INT32, default=-1, help="Score at most this many chunks (-1: all).")
@_device_options
@_kv_options
def perplexity(model, text_file, ctx_size, batch_size, threads, chunks, device, n_gpu_layers):
    """Perplexity of a text, computed exactly as llama.cpp's llama-perplexity."""
    from .perplexity import perplexity as ppl

    with run_errors():
        text = text_file.read_text(encoding="utf-8", errors="replace")
        if ctx_size < 2:
            raise ValueError(f"-c must be at least 2, got {ctx_size}")
        m = _load(model, ctx_size, threads, batch_size, device, n_gpu_layers)

        def show(i, v):
            click.echo(f"[{i}]{v:.4f},", nl=False)
            sys.stdout.flush()
        r = ppl(m, text, ctx_size, chunks, on_chunk=show)
        click.echo("")
        click.echo(f"Final estimate: PPL = {r.ppl:.4f} +/- {r.ppl_err:.5f}")
        click.echo(f"({r.n_chunks} chunks of {r.n_ctx} tokens, {r.count} scored, {r.n_tokens} in the text)", err=True)


@main.command(cls=_OneLineErrors)
@click.argument("src", type=click.Path(path_type=Path))
@click.argument("dst", type=click.Path(path_type=Path))
@click.argument("qtype")
@click.option("-t", "--threads", type=INT32, default=0, help="Threads (0: all cores).")
@click.option("--allow-requantize", is_flag=True,
              help="Requantize tensors that are already quantized (adds a second rounding to the first).")
def quantize(src, dst, qtype, threads, allow_requantize):
    """Quantize a GGUF with llama-quantize's mixes (Q4_0, Q4_K_M, Q8_0, ...), or to F16 (dequantizes)."""
    with run_errors():
        from .quantize import quantize_gguf
        if threads < 0:
            raise ValueError(f"-t must be >= 0, got {threads}")
        if not src.exists():
            raise FileNotFoundError(f"no such file: {src}")
        if dst.is_dir():
            raise ValueError(f"{dst} is a directory; give the output file's name")
        with sigterm_cleans_up():
            counts = quantize_gguf(src, dst, qtype, n_threads=threads, allow_requantize=allow_requantize)
        summary = ", ".join(f"{n} {t}" for t, n in sorted(counts.items()))
        click.echo(f"wrote {dst} ({summary})")


# ================================================================ convert (HF checkpoint -> GGUF)
@main.command(cls=_OneLineErrors)
@click.argument("hf_dir", type=click.Path(path_type=Path))
@click.option("-o", "--output", "out", type=click.Path(path_type=Path), default=None,
              help="Output .gguf file (default: HF_DIR-OUTTYPE.gguf next to HF_DIR).")
@click.option("--outtype", type=click.Choice(["f32", "f16", "bf16"]), default="f16", show_default=True,
              help="Storage type of 2-D weights; norms, biases and rope factors stay f32.")
def convert(hf_dir: Path, out: Path | None, outtype: str) -> None:
    """Convert a Hugging Face Phi checkpoint folder to GGUF (llama.cpp-compatible)."""
    from .convert import convert_hf_to_gguf, tensor_count
    from .progress import progress_bar

    with user_errors(), sigterm_cleans_up():
        total = tensor_count(hf_dir)
        with progress_bar("converting", total) as step:
            path = convert_hf_to_gguf(hf_dir, out, outtype, progress=lambda name, i: step(name))
        click.echo(f"wrote {path}")  # (inside: a closed pipe on stdout is not a failure)


if __name__ == "__main__":
    main()
