"""The `phicpp` command line, run as users run it (`python -m phicpp ...`): chat through a
pseudo-terminal, generate/info/bench/perplexity/quantize, and one clear error line for every
mistake a user can make."""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

import phicpp


@pytest.fixture(scope="module")
def gguf(tiny_model, module_tmp):
    out = module_tmp("cli") / "phi3_mini-f16.gguf"
    phicpp.convert_hf_to_gguf(tiny_model("phi3_mini").path, out, "f16")
    return out


def env() -> dict:
    e = dict(os.environ)
    e["PYTHONPATH"] = os.pathsep.join(sys.path)  # the same phicpp as this test process
    e["TERM"] = "dumb"
    return e


def phicpp_cli(*args, input: str | None = None, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "phicpp", *map(str, args)], capture_output=True, text=True,
                          env=env(), timeout=timeout, input=input)


def assert_one_line_error(r: subprocess.CompletedProcess, *needles: str) -> None:
    assert r.returncode != 0, r
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), r.stderr
    assert "Traceback" not in r.stderr + r.stdout
    for n in needles:
        assert n.lower() in lines[0].lower(), (n, lines[0])


# ---------------------------------------------------------------- chat through a pty
def spawn_chat(gguf, *args):
    pexpect = pytest.importorskip("pexpect")
    child = pexpect.spawn(sys.executable, ["-m", "phicpp", "chat", "-m", str(gguf), "-t", "1", *args],
                          env=env(), encoding="utf-8", timeout=120)
    child.expect("phicpp chat:")
    child.expect_exact("> ")
    return child


def info_messages(child) -> int:
    child.sendline("/info")
    child.expect(r"\((\d+) messages, (\d+) tokens cached")
    n = int(child.match.group(1))
    child.expect_exact("> ")
    return n


def test_chat_two_turns_then_exit(gguf):
    import pexpect
    child = spawn_chat(gguf, "-n", "8", "-s", "1", "-c", "512", "-sys", "You are a test.")
    child.sendline("hello")
    child.expect_exact("> ")
    child.sendline("and a second question")
    child.expect_exact("> ")
    assert info_messages(child) == 5  # system + 2 x (user, assistant)
    child.sendline("/clear")
    child.expect_exact("(conversation cleared)")
    child.expect_exact("> ")
    assert info_messages(child) == 1
    child.sendline("/exit")
    child.expect(pexpect.EOF)
    child.close()
    assert child.exitstatus == 0


def test_chat_past_the_context_keeps_going_with_the_system_prompt(gguf):
    """A chat longer than n_ctx goes on: the oldest exchanges are dropped (said on
    stderr), the system prompt stays first, every turn gets its reply."""
    import pexpect
    child = spawn_chat(gguf, "-n", "24", "--ignore-eos", "-s", "3", "-c", "160", "-sys", "You are a test.")
    dropped = 0
    for turn in range(10):
        child.sendline(f"question number {turn} with a few more words to fill the context")
        i = child.expect([r"\(context full: dropped the (\d+) oldest", r"\n> "])
        if i == 0:
            dropped += int(child.match.group(1))
            child.expect_exact("> ")
    assert dropped >= 2
    child.sendline("/info")
    child.expect(r"\((\d+) messages, (\d+) tokens cached of n_ctx=(\d+), (\d+) exchanges trimmed")
    n_msg, cached, n_ctx, trimmed = map(int, child.match.groups())
    assert n_msg % 2 == 1 and n_msg >= 3  # the system prompt and whole exchanges
    assert cached <= n_ctx == 160 and trimmed == dropped
    child.expect_exact("> ")
    child.sendline("/exit")
    child.expect(pexpect.EOF)
    child.close()
    assert child.exitstatus == 0


def test_chat_ctrl_c_stops_reply_and_keeps_session(gguf):
    import pexpect
    child = spawn_chat(gguf, "-n", "-1", "--ignore-eos", "-s", "2", "-c", "2048")
    for turn, msg in enumerate(["tell me a very long story", "go on"]):
        child.sendline(msg)
        child.expect_exact(msg + "\r\n")  # the terminal's echo of the line
        child.expect(r"\S{3}")           # reply text streams while the reply is still running ...
        child.sendintr()                  # ... so Ctrl-C lands mid-reply
        child.expect_exact("(reply stopped)")
        child.expect_exact("> ")
        assert info_messages(child) == 2 * (turn + 1)  # the interrupted exchange is kept
    child.sendline("/help")
    child.expect_exact("/clear")
    child.expect_exact("> ")
    child.sendeof()  # Ctrl-D quits
    child.expect(pexpect.EOF)
    child.close()
    assert child.exitstatus == 0


# ---------------------------------------------------------------- generate
def test_generate_seeded_and_timed(gguf, tmp_path):
    args = ["generate", "-m", gguf, "-p", "Once upon", "-n", "12", "--seed", "5", "-t", "1"]
    a, b = phicpp_cli(*args), phicpp_cli(*args)
    assert a.returncode == 0 and a.stdout == b.stdout and a.stdout.startswith("Once upon")
    assert "tokens per second" in a.stderr and "prompt eval time" in a.stderr
    c = phicpp_cli(*args, "--no-timing", "--no-display-prompt")
    assert c.returncode == 0 and c.stderr == "" and a.stdout == "Once upon" + c.stdout
    f = tmp_path / "prompt.txt"
    f.write_text("Once upon", encoding="utf-8")
    d = phicpp_cli("generate", "-m", gguf, "-f", f, "-n", "12", "--seed", "5", "-t", "1")
    assert d.stdout == a.stdout
    gen = a.stdout[len("Once upon"):]
    stop = gen.strip()[:2]
    e = phicpp_cli(*args, "--stop", "zzzz", "--stop", stop, "--no-timing", "--no-display-prompt")
    assert e.returncode == 0 and e.stdout.rstrip("\n") == gen[: gen.find(stop)]


def test_generate_uses_the_shipped_model_without_m():
    # (no skip without the model: the package ships it, and default_model_path raises
    # when it is missing, so a skip on is_file() could never trigger)
    r = phicpp_cli("generate", "-p", "def add(a, b):", "-n", "4", "--no-timing", "-t", "1")
    assert r.returncode == 0 and r.stdout.startswith("def add(a, b):")
    assert len(r.stderr.strip().splitlines()) == 1 and "no -m given" in r.stderr


# ---------------------------------------------------------------- info, bench, perplexity, quantize
def test_info(gguf):
    r = phicpp_cli("info", gguf)
    assert r.returncode == 0
    assert re.search(r"tokenizer\.ggml\.tokens\s+array\[string\]\s+= \['<unk>', '<s>', .*\(32064 items\)", r.stdout)
    assert "general.architecture" in r.stdout and "'phi3'" in r.stdout
    assert re.search(r"f16\s+\d+ tensors", r.stdout) and "total" in r.stdout
    assert len(max(r.stdout.splitlines(), key=len)) < 200  # long values abbreviated
    r = phicpp_cli("info", gguf, "--tensors")
    assert "token_embd.weight" in r.stdout


def test_bench(gguf):
    r = phicpp_cli("bench", "-m", gguf, "-p", "16", "-n", "4", "-r", "2", "-t", "1", "-o", "json")
    assert r.returncode == 0, r.stderr
    res = json.loads(r.stdout)
    assert [(x["n_prompt"], x["n_gen"]) for x in res] == [(16, 0), (0, 4)]
    for x in res:
        assert len(x["samples_ns"]) == 2 and x["avg_ts"] > 0 and x["n_threads"] == 1
        assert x["model_type"].startswith("phi3 ") and x["model_size"] > 0
    r = phicpp_cli("bench", "-m", gguf, "-p", "16", "-n", "4", "-r", "2", "-t", "1")
    lines = r.stdout.strip().splitlines()
    assert lines[0].startswith("| model") and len(lines) == 4
    assert re.search(r"\|\s+pp16 \|\s+[0-9.]+ ± [0-9.]+ \|$", lines[2])
    assert re.search(r"\|\s+tg4 \|", lines[3])


def test_bench_at_depth(gguf):
    """-d as llama-bench's: each test after that many tokens already in the cache."""
    r = phicpp_cli("bench", "-m", gguf, "-p", "8", "-n", "3", "-d", "0,20", "-r", "1", "-t", "1", "-o", "json")
    assert r.returncode == 0, r.stderr
    res = json.loads(r.stdout)
    assert [(x["n_prompt"], x["n_gen"], x["n_depth"]) for x in res] == [(8, 0, 0), (8, 0, 20), (0, 3, 0), (0, 3, 20)]
    assert all(len(x["samples_ns"]) == 1 and x["avg_ts"] > 0 for x in res)
    r = phicpp_cli("bench", "-m", gguf, "-p", "8", "-n", "0", "-d", "20", "-r", "1", "-t", "1")
    assert re.search(r"\|\s+pp8 @ d20 \|\s+[0-9.]+ ± [0-9.]+ \|$", r.stdout.strip().splitlines()[2])
    assert_one_line_error(phicpp_cli("bench", "-m", gguf, "-d", "-3"), "-d")
    assert_one_line_error(phicpp_cli("bench", "-m", gguf, "-p", "-1"), "-p", ">= 0")
    assert_one_line_error(phicpp_cli("bench", "-m", gguf, "-n", "4,2147483648"), "-n")


def test_perplexity_output_format(gguf, tmp_path):
    f = tmp_path / "t.txt"
    f.write_text(" ".join(f"word{i % 37} is here" for i in range(400)), encoding="utf-8")
    r = phicpp_cli("perplexity", "-m", gguf, "-f", f, "-c", "32", "--chunks", "3", "-t", "1")
    assert r.returncode == 0, r.stderr
    assert re.match(r"\[1\][0-9.]+,\[2\][0-9.]+,\[3\][0-9.]+,\n", r.stdout)
    assert re.search(r"Final estimate: PPL = [0-9.]+ \+/- [0-9.]+", r.stdout)


def test_quantize(gguf, tmp_path):
    out = tmp_path / "q8.gguf"
    r = phicpp_cli("quantize", gguf, out, "Q8_0", "-t", "1")
    assert r.returncode == 0, r.stderr
    types = {t.type for t in phicpp.GGUFFile(out).tensors}
    assert "q8_0" in {t.lower() for t in types}
    assert_one_line_error(phicpp_cli("quantize", gguf, tmp_path / "x.gguf", "Q9_9"), "Q9_9")
    assert_one_line_error(phicpp_cli("quantize", tmp_path / "missing.gguf", tmp_path / "x.gguf", "Q8_0"), "missing")
    truncated = tmp_path / "truncated.gguf"
    truncated.write_bytes(Path(gguf).read_bytes()[:2000])
    assert_one_line_error(phicpp_cli("quantize", truncated, tmp_path / "y.gguf", "Q8_0"), "truncated.gguf")
    assert not (tmp_path / "y.gguf").exists()
    r = phicpp_cli("quantize", gguf, tmp_path / "no" / "z.gguf", "Q8_0")  # a folder that is not there
    assert_one_line_error(r, f"cannot write {tmp_path / 'no' / 'z.gguf'}: {tmp_path / 'no'}: No such file")
    assert ".tmp" not in r.stderr
    # a quantized file again, to another type: refused as llama-quantize refuses it, unless asked
    assert_one_line_error(phicpp_cli("quantize", out, tmp_path / "q4.gguf", "Q4_0"), "--allow-requantize")
    assert not (tmp_path / "q4.gguf").exists()
    r = phicpp_cli("quantize", out, tmp_path / "q4.gguf", "Q4_0", "--allow-requantize", "-t", "1")
    assert r.returncode == 0, r.stderr


def test_chat_from_a_pipe_exits_1_when_a_turn_failed(gguf):
    long = "word " * 200
    r = phicpp_cli("chat", "-m", gguf, "-c", "64", "-n", "4", "-t", "1", input=f"hi\n{long}\nhi again\n")
    assert r.returncode == 1 and "Traceback" not in r.stderr
    assert "error: the message is" in r.stderr and "the context holds 64" in r.stderr
    r = phicpp_cli("chat", "-m", gguf, "-c", "64", "-n", "4", "-t", "1", input="hi\n/exit\n")
    assert r.returncode == 0, r.stderr


_SLOW_QUANTIZE = """
import sys, time
import phicpp._core as core
quantize = core.quantize
def slow(*a, **k):  # each tensor takes a while: time to send SIGTERM mid-file
    time.sleep(0.3)
    return quantize(*a, **k)
core.quantize = slow
from phicpp.cli import main
sys.argv = ["phicpp", *sys.argv[1:]]
main()
"""


def test_quantize_sigterm_and_temporary_files(gguf, tmp_path):
    """SIGTERM mid-quantize removes the half-written file (exit 143); a user's own DST.tmp is
    neither overwritten nor deleted; directories get a clear error."""
    import signal
    import time
    out = tmp_path / "q.gguf"
    mine = tmp_path / "q.gguf.tmp"
    mine.write_bytes(b"a user's file")
    p = subprocess.Popen([sys.executable, "-c", _SLOW_QUANTIZE, "quantize", str(gguf), str(out), "Q8_0", "-t", "1"],
                         env=env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while not [f for f in tmp_path.iterdir() if f != mine] and time.monotonic() < deadline and p.poll() is None:
        time.sleep(0.02)
    time.sleep(0.2)
    assert p.poll() is None, p.communicate()
    p.send_signal(signal.SIGTERM)
    _, err = p.communicate(timeout=120)
    assert p.returncode == 143, err
    assert "Traceback" not in err
    assert sorted(tmp_path.iterdir()) == [mine] and mine.read_bytes() == b"a user's file"

    r = phicpp_cli("quantize", gguf, out, "Q8_0", "-t", "1")  # completes beside the user's file
    assert r.returncode == 0, r.stderr
    assert sorted(tmp_path.iterdir()) == [out, mine] and mine.read_bytes() == b"a user's file"
    assert (out.stat().st_mode & 0o777) == (0o666 & ~_umask())
    assert_one_line_error(phicpp_cli("quantize", tmp_path, tmp_path / "x.gguf", "Q8_0"), "directory")
    assert_one_line_error(phicpp_cli("quantize", gguf, tmp_path, "Q8_0"), "directory")


def _umask() -> int:
    m = os.umask(0)
    os.umask(m)
    return m


# ---------------------------------------------------------------- one line per user error
@pytest.fixture(scope="module")
def bad_files(module_tmp):
    d = module_tmp("bad")
    broken = d / "broken.gguf"
    broken.write_bytes(b"GGUF\x03\x00\x00\x00" + b"\xff" * 40)
    notgguf = d / "text.gguf"
    notgguf.write_text("hello, I am not a model\n")
    import gguf as gg
    unknown = d / "llama.gguf"
    w = gg.GGUFWriter(str(unknown), "llama")
    w.add_block_count(1)
    import numpy as np
    w.add_tensor("token_embd.weight", np.zeros((4, 8), dtype=np.float32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return {"broken": broken, "notgguf": notgguf, "unknown": unknown}


@pytest.mark.parametrize("cmd", ["generate", "chat", "bench", "perplexity", "info"])
def test_missing_model_file(cmd, tmp_path):
    missing = tmp_path / "nope.gguf"
    args = {"generate": ["-m", missing, "-p", "x"], "chat": ["-m", missing], "bench": ["-m", missing],
            "perplexity": ["-m", missing, "-f", __file__], "info": [missing]}[cmd]
    assert_one_line_error(phicpp_cli(cmd, *args, input=""), "nope.gguf")


@pytest.mark.parametrize("which", ["broken", "notgguf", "unknown"])
def test_bad_model_files(which, bad_files):
    assert_one_line_error(phicpp_cli("generate", "-m", bad_files[which], "-p", "x"))
    if which != "unknown":
        assert_one_line_error(phicpp_cli("info", bad_files[which]))


def test_unknown_architecture_is_named(bad_files):
    assert_one_line_error(phicpp_cli("generate", "-m", bad_files["unknown"], "-p", "x"), "llama")


@pytest.mark.parametrize("flags, needle", [
    (["--top-p", "2"], "top_p"),
    (["--min-p", "-1"], "min_p"),
    (["--temp", "abc"], "--temp"),
    (["-n", "many"], "-n"),
    (["-c", "-5"], "ctx-size"),
    (["-t", "-2"], "threads"),
    (["--repeat-penalty", "0"], "repeat_penalty"),
    (["--seed", "-9"], "seed"),
    (["--frobnicate"], "frobnicate"),
    (["-c", "2147483648"], "ctx-size"),  # past 32 bits: a usage error, not a TypeError from the core
    (["--top-k", str(2**40)], "top-k"),
    (["-t", "100000"], "n_threads"),  # not a pool of 100,000 threads
])
def test_bad_flag_values(gguf, flags, needle):
    assert_one_line_error(phicpp_cli("generate", "-m", gguf, "-p", "x", *flags), needle)


@pytest.mark.parametrize("flags, needle", [(["-c", "2"], "at least 3"), (["-c", "8", "--chunks", "0"], "chunks")])
def test_perplexity_bad_sizes(gguf, tmp_path, flags, needle):
    text = tmp_path / "t.txt"
    text.write_text("the quick brown fox jumps over the lazy dog " * 20)
    assert_one_line_error(phicpp_cli("perplexity", "-m", gguf, "-f", text, *flags), needle)


def test_version_and_closed_stdout(gguf):
    r = phicpp_cli("--version")
    assert r.returncode == 0 and r.stdout.strip() == f"phicpp {phicpp.__version__}", r
    r = subprocess.run([sys.executable, "-m", "phicpp", "generate", "-m", str(gguf), "-p", "x", "-n", "2"],
                       stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=env(), timeout=300,
                       preexec_fn=lambda: os.close(1))
    assert r.returncode == 0 and "Traceback" not in r.stderr, r.stderr


# A Ctrl-C while the command line loads (click, then a command's numpy) lands as it would: a
# KeyboardInterrupt raised by that import, or numpy's ImportError carrying one.
_INTERRUPTED_IMPORT = """
import builtins, sys
real_import = builtins.__import__
module, how = sys.argv[1:3]
def interrupted(name, *a, **k):
    if name == module:
        if how == "ImportError":
            try:
                raise KeyboardInterrupt
            except KeyboardInterrupt:
                raise ImportError(name + " failed to import")
        raise KeyboardInterrupt
    return real_import(name, *a, **k)
builtins.__import__ = interrupted
sys.argv = ["phicpp"] + sys.argv[3:]
from phicpp.__main__ import main
main()
"""


@pytest.mark.parametrize("module, how, args", [
    ("click", "KeyboardInterrupt", ["--version"]),
    ("numpy", "KeyboardInterrupt", ["info", "M"]),
    ("numpy", "ImportError", ["info", "M"]),
])
def test_ctrl_c_while_the_command_line_loads(gguf, module, how, args):
    args = [str(gguf) if a == "M" else a for a in args]
    r = subprocess.run([sys.executable, "-c", _INTERRUPTED_IMPORT, module, how, *args],
                       capture_output=True, text=True, env=env(), timeout=300)
    assert r.returncode == 130 and "Traceback" not in r.stderr, (r.returncode, r.stderr)


def test_the_command_line_loads_without_numpy():
    # `phicpp --help` answers at once: the package's names load on first use
    code = ("import sys, phicpp.cli, phicpp; assert 'numpy' not in sys.modules; phicpp.Model; "
            "assert callable(phicpp._core.cuda_available) and phicpp.quantize.quantize_gguf; print(sorted(phicpp.__all__))")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env(), timeout=300)
    assert r.returncode == 0, r.stderr
    assert "Model" in r.stdout and "GGUFError" in r.stdout


def test_ngl_without_a_gpu_runs_on_the_cpu(gguf):
    # as llama.cpp: -ngl 99 where no GPU can be used warns and runs on the CPU; --device cuda is refused
    import phicpp
    if phicpp._core.cuda_available():
        pytest.skip("a GPU is here (test_cuda.py runs -ngl 99 on it)")
    r = phicpp_cli("generate", "-m", gguf, "-p", "x", "-n", "2", "-ngl", "99", "--no-timing", "-t", "1")
    assert r.returncode == 0 and r.stdout.startswith("x"), r.stderr
    assert "warning: n_gpu_layers=99 asks for the GPU" in r.stderr and "running on the CPU" in r.stderr
    assert_one_line_error(phicpp_cli("generate", "-m", gguf, "-p", "x", "--device", "cuda"), "cuda")


def test_context_beyond_host_memory(tiny_gguf):
    # refused up front with the numbers, not killed by the OOM killer once written
    phi2 = tiny_gguf("phi2")  # (no sliding window: every position keeps its row)
    assert_one_line_error(phicpp_cli("generate", "-m", phi2, "-p", "x", "-c", "2000000000"), "KV cache", "-c/--ctx-size")
    assert_one_line_error(phicpp_cli("bench", "-m", phi2, "-p", "0", "-n", "4", "-d", "1000000000"), "KV cache")


def test_prompt_errors(gguf, tmp_path):
    r = phicpp_cli("generate", "-m", gguf, "-p", "word " * 200, "-c", "32")
    assert_one_line_error(r, "context")
    assert r.stdout == ""  # the prompt is not echoed before the error
    assert_one_line_error(phicpp_cli("generate", "-m", gguf), "prompt")
    assert_one_line_error(phicpp_cli("generate", "-m", gguf, "-f", tmp_path / "none.txt"), "none.txt")
    f = tmp_path / "short.txt"
    f.write_text("short", encoding="utf-8")
    assert_one_line_error(phicpp_cli("perplexity", "-m", gguf, "-f", f, "-c", "64"), "at least 128 tokens")
    assert_one_line_error(phicpp_cli("bench", "-m", gguf, "-p", "x,y"), "-p")

