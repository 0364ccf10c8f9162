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

import sys
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator, NoReturn

import click


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
def user_errors() -> Iterator[None]:
    """Turn the errors a user can cause (bad paths, bad files) into `fail(...)`;
    anything else is a bug and keeps its traceback."""
    try:
        yield
    except KeyboardInterrupt:
        fail("interrupted", 130)
    except _error_types() as e:
        msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        fail(msg)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="phicpp", message="%(prog)s %(version)s")
def main() -> None:
    """phicpp: run Microsoft's Phi models from GGUF files."""


@main.command()
@click.argument("hf_dir", type=click.Path(path_type=Path))
@click.option("-o", "--output", "out", type=click.Path(path_type=Path), default=None,
              help="Output .gguf file (default: HF_DIR-OUTTYPE.gguf next to HF_DIR).")
@click.option("--outtype", type=click.Choice(["f32", "f16", "bf16"]), default="f16", show_default=True,
              help="Storage type of 2-D weights; norms, biases and rope factors stay f32.")
def convert(hf_dir: Path, out: Path | None, outtype: str) -> None:
    """Convert a Hugging Face Phi checkpoint folder to GGUF (llama.cpp-compatible)."""
    from .convert import convert_hf_to_gguf, tensor_count
    from .progress import progress_bar

    with user_errors():
        total = tensor_count(hf_dir)
        with progress_bar("converting", total) as step:
            path = convert_hf_to_gguf(hf_dir, out, outtype, progress=lambda name, i: step(name))
    click.echo(f"wrote {path}")


if __name__ == "__main__":
    main()
