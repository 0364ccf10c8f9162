#!/usr/bin/env python3
"""Train the tiny Phi code model that ships inside the package (python/phicpp/models/).

The idea is Phi-1's (a small model taught on clean, textbook-like Python), scaled down
to fit in the package: ~10.5M parameters, so the F16 GGUF stays under 25 MB.

Architecture: phi2-style, i.e. transformers' PhiForCausalLM, which *is* the Phi-1/1.5/2
architecture (parallel attention + MLP blocks sharing one LayerNorm, partial rotary
embeddings, gelu_new MLP, biases everywhere, untied LM head with bias) and uses a
GPT-2-style byte-level BPE tokenizer. phi3-style (RMSNorm, SwiGLU, fused QKV, a
SentencePiece/llama vocabulary) would need a SentencePiece model and llama-style token
handling; the byte-level BPE route is simpler to train here, reaches llama.cpp's
"gpt-2" pre-tokenizer unchanged, and is the family Phi-1 itself belongs to.
Sizes are multiples of 256 so every matrix row can be stored as Q4_K/Q6_K blocks.

Stages (all seeded):
  tokenizer  train a byte-level BPE (GPT-2 regex pre-tokenizer, special <|endoftext|>)
             on the train split of tools/make_tiny_corpus.py's output;
  train      train PhiForCausalLM from scratch (bf16 autocast, AdamW, warmup + cosine),
             report held-out loss/perplexity and greedy samples, save a Hugging Face
             checkpoint (safetensors fp32 + config + tokenizer files).

The shipped model was made by (see python/phicpp/models/MODEL_CARD.md for the record):
  python3 tools/make_tiny_corpus.py --out .tiny/corpus
  python3 tools/train_tiny.py tokenizer --corpus .tiny/corpus --out .tiny/tokenizer
  python3 tools/train_tiny.py train --corpus .tiny/corpus --tokenizer .tiny/tokenizer --out phi-tiny-code
  phicpp convert phi-tiny-code -o phi-tiny-code-f16.gguf --outtype f16
  phicpp quantize phi-tiny-code-f16.gguf phi-tiny-code-Q8_0.gguf Q8_0
  phicpp quantize phi-tiny-code-f16.gguf phi-tiny-code-Q4_K_M.gguf Q4_K_M
  python3 tools/train_tiny.py eval-gguf --config phi-tiny-code --heldout .tiny/corpus/heldout.txt *.gguf
"""
from __future__ import annotations

import argparse
import json
import math
import os
import platform
import random
import sys
import time
from pathlib import Path

EOT = "<|endoftext|>"
CARD_FRONT_MATTER = """---
license: mit
language:
- en
tags:
- code
- python
pipeline_tag: text-generation
---
# phi-tiny-code
"""
SAMPLE_PROMPTS = ["def fibonacci(n):", "import os\n", "class Stack:", "def is_prime(n):\n    \"\"\""]


# ----------------------------------------------------------------------------- tokenizer

def train_tokenizer(corpus: Path, out: Path, vocab_size: int, ctx: int, max_bytes: int = 0, seed: int = 1234) -> None:
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    docs = (corpus / "train.txt").read_text(encoding="utf-8").split(EOT)
    if max_bytes and sum(map(len, docs)) > max_bytes:
        # a seeded sample of whole documents: BPE merges settle long before hundreds of MB
        order = list(range(len(docs)))
        random.Random(seed).shuffle(order)
        picked, total = [], 0
        for i in order:
            if total >= max_bytes:
                break
            picked.append(i)
            total += len(docs[i])
        docs = [docs[i] for i in sorted(picked)]
    tok = Tokenizer(models.BPE())
    # use_regex=True is GPT-2's split regex, which llama.cpp applies for pre-tokenizer "gpt-2"
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tok.decoder = decoders.ByteLevel()
    tok.post_processor = processors.ByteLevel(trim_offsets=False)
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size, min_frequency=2, special_tokens=[EOT],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator(docs, trainer=trainer, length=len(docs))
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token=EOT, eos_token=EOT, unk_token=EOT,
                                   model_max_length=ctx, clean_up_tokenization_spaces=False)
    out.mkdir(parents=True, exist_ok=True)
    fast.save_pretrained(str(out))
    sample = "def fibonacci(n):\n    if n < 2:\n        return n\n"
    ids = tok.encode(sample).ids
    assert tok.decode(ids) == sample, "byte-level BPE must round-trip"
    print(f"tokenizer: {tok.get_vocab_size()} tokens -> {out}; sample = {len(ids)} tokens")


def encode_split(tokenizer, path: Path):
    """One stream of ids: every document followed by <|endoftext|>."""
    import numpy as np

    eot = np.asarray([tokenizer.convert_tokens_to_ids(EOT)], dtype=np.int32)
    docs = [d for d in path.read_text(encoding="utf-8").split(EOT) if d]
    backend = tokenizer.backend_tokenizer
    parts = []
    for b in range(0, len(docs), 4096):  # batches: the tokenizer's threads, bounded memory
        for enc in backend.encode_batch(docs[b:b + 4096], add_special_tokens=False):
            parts.append(np.asarray(enc.ids, dtype=np.int32))
            parts.append(eot)
    return np.concatenate(parts) if parts else np.zeros(0, dtype=np.int32)


# ----------------------------------------------------------------------------- training

RESUME_EXIT = 75  # train's exit status when --stop-at ended the call before the schedule


def cached_ids(tokenizer, path: Path, state: Path | None):
    """encode_split, kept in the --state folder for a resumed call."""
    import numpy as np

    if state is None:
        return encode_split(tokenizer, path)
    cache = state / (path.stem + ".ids.npy")
    if cache.is_file():
        return np.load(cache)
    ids = encode_split(tokenizer, path)
    state.mkdir(parents=True, exist_ok=True)
    np.save(cache, ids)
    return ids


def build_model(args, vocab_size: int, eot_id: int):
    from transformers import PhiConfig, PhiForCausalLM

    cfg = PhiConfig(
        vocab_size=vocab_size, hidden_size=args.d_model, intermediate_size=args.mlp or 4 * args.d_model,
        num_hidden_layers=args.layers, num_attention_heads=args.d_model // args.head_dim,
        num_key_value_heads=args.d_model // args.head_dim, max_position_embeddings=args.ctx,
        partial_rotary_factor=0.5, rope_theta=10000.0, hidden_act="gelu_new", layer_norm_eps=1e-5,
        resid_pdrop=args.dropout, embd_pdrop=args.dropout, attention_dropout=0.0,
        bos_token_id=eot_id, eos_token_id=eot_id, tie_word_embeddings=False)
    return PhiForCausalLM(cfg)


def time_fraction(args, elapsed_s: float) -> float:
    """With --schedule-by-time, the share of --max-minutes spent (else 0): a run that must
    fit in one device call still ends its schedule, whatever the machine's speed."""
    return elapsed_s / (args.max_minutes * 60) if args.schedule_by_time else 0.0


def schedule_progress(step: int, args, elapsed_s: float = 0.0) -> float:
    """0 -> 1 over the run: to --steps or to the time budget, whichever comes first."""
    return min(1.0, max(step / max(1, args.steps), time_fraction(args, elapsed_s)))


def lr_at(step: int, args, elapsed_s: float = 0.0) -> float:
    """Linear warmup, then cosine to min_lr at the end of the schedule."""
    if step < args.warmup:
        return args.lr * (step + 1) / args.warmup
    t = max((step - args.warmup) / max(1, args.steps - args.warmup), time_fraction(args, elapsed_s))
    return args.min_lr + 0.5 * (args.lr - args.min_lr) * (1 + math.cos(math.pi * min(1.0, t)))


def heldout_loss(model, ids, ctx: int, device, max_tokens: int | None = None) -> tuple[float, int]:
    """Mean next-token loss over non-overlapping windows of ctx tokens (fp32, no dropout)."""
    import torch

    model.eval()
    n = len(ids) if max_tokens is None else min(len(ids), max_tokens + 1)
    total, count = 0.0, 0
    with torch.no_grad():
        windows = [ids[i:i + ctx + 1] for i in range(0, n - 1, ctx)]
        for b in range(0, len(windows), 16):
            batch = windows[b:b + 16]
            for w in batch:
                x = torch.as_tensor(w, device=device, dtype=torch.long)[None]
                if x.shape[1] < 2:
                    continue
                logits = model(input_ids=x[:, :-1]).logits.float()
                loss = torch.nn.functional.cross_entropy(logits[0], x[0, 1:], reduction="sum")
                total += loss.item()
                count += x.shape[1] - 1
    model.train()
    return total / count, count


def samples(model, tokenizer, device, max_new_tokens: int) -> dict[str, str]:
    import torch

    model.eval()
    out = {}
    for prompt in SAMPLE_PROMPTS:
        x = tokenizer(prompt, return_tensors="pt", add_special_tokens=False).input_ids.to(device)
        with torch.no_grad():
            y = model.generate(x, max_new_tokens=max_new_tokens, do_sample=False,
                               eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.eos_token_id)
        out[prompt] = tokenizer.decode(y[0], skip_special_tokens=False)
    model.train()
    return out


def code_pass_at_1(model, tokenizer, device, max_new_tokens: int) -> dict:
    """tools/eval_code.py's tasks, greedy through transformers (the engine's own run of the
    converted file is the number that counts; this one tracks training)."""
    import torch

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    import eval_code

    model.eval()

    def complete(prompt: str) -> str:
        x = tokenizer(prompt, return_tensors="pt", add_special_tokens=False).input_ids.to(device)
        with torch.no_grad():
            y = model.generate(x, max_new_tokens=max_new_tokens, do_sample=False, stop_strings=eval_code.STOPS,
                               tokenizer=tokenizer, eos_token_id=tokenizer.eos_token_id,
                               pad_token_id=tokenizer.eos_token_id)
        return tokenizer.decode(y[0, x.shape[1]:], skip_special_tokens=True)
    results = eval_code.evaluate(complete)
    model.train()
    passed = [r["task"] for r in results if r["passed"]]
    return {"passed": len(passed), "tasks": len(results), "passed_tasks": passed}


def hardware() -> str:
    import torch

    if torch.cuda.is_available():
        p = torch.cuda.get_device_properties(0)
        return f"{p.name} ({p.total_memory / 2**30:.0f} GiB), torch {torch.__version__}"
    return f"CPU {platform.processor() or platform.machine()}, torch {torch.__version__}"


def train(args) -> dict:
    import numpy as np
    import torch
    import transformers
    from transformers import PreTrainedTokenizerFast

    if args.stop_at and not args.state:
        raise SystemExit("--stop-at needs --state (where the run waits for the next call)")
    random.seed(args.seed)
    np.random.seed(args.seed)
    torch.manual_seed(args.seed)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    torch.backends.cuda.matmul.allow_tf32 = True
    torch.backends.cudnn.allow_tf32 = True

    t0 = time.time()
    # built from tokenizer.json directly, so the transformers version on the GPU machine
    # need not know the tokenizer_class name that the local version wrote
    tokenizer = PreTrainedTokenizerFast(tokenizer_file=str(args.tokenizer / "tokenizer.json"), bos_token=EOT,
                                        eos_token=EOT, unk_token=EOT, model_max_length=args.ctx,
                                        clean_up_tokenization_spaces=False)
    eot_id = tokenizer.convert_tokens_to_ids(EOT)
    train_ids = cached_ids(tokenizer, args.corpus / "train.txt", args.state)
    held_ids = cached_ids(tokenizer, args.corpus / "heldout.txt", args.state)
    print(f"tokens: train {len(train_ids):,}  heldout {len(held_ids):,}  ({time.time() - t0:.1f}s)", flush=True)

    model = build_model(args, len(tokenizer), eot_id).to(device)
    n_params = sum(p.numel() for p in model.parameters())
    print(f"model: {n_params:,} parameters; {hardware()}", flush=True)

    decay = [p for n, p in model.named_parameters() if p.dim() >= 2]
    no_decay = [p for n, p in model.named_parameters() if p.dim() < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": args.weight_decay},
                             {"params": no_decay, "weight_decay": 0.0}],
                            lr=args.lr, betas=(0.9, 0.95), eps=1e-8,
                            fused=device.type == "cuda")
    gen = torch.Generator().manual_seed(args.seed)
    train_t = torch.as_tensor(train_ids, dtype=torch.long)
    n_windows = len(train_t) - args.ctx - 1
    # Annealing on the textbook part (corpus textbook.txt: the short documented functions of
    # --wheels): in the last --anneal-fraction of the schedule, --anneal-mix of every batch's
    # windows come from it (as Phi-1's fine-tuning on exercises, and the high-quality
    # annealing phase of later models, at the end of the learning-rate decay).
    book_t, n_book = None, 0
    if args.anneal_fraction > 0 and (args.corpus / "textbook.txt").is_file():
        book_ids = cached_ids(tokenizer, args.corpus / "textbook.txt", args.state)
        if len(book_ids) > args.ctx + 1:
            book_t = torch.as_tensor(book_ids, dtype=torch.long)
            n_book = len(book_t) - args.ctx - 1
            print(f"textbook: {len(book_ids):,} tokens for the last {args.anneal_fraction:.0%} "
                  f"({args.anneal_mix:.0%} of each batch)", flush=True)
    autocast = torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=device.type == "cuda")
    # --compile: the training forward through torch.compile (the evaluations keep the plain
    # module, which shares its parameters); a compile that fails at the first step falls
    # back to the plain module rather than losing the run
    forward = torch.compile(model) if args.compile else model

    def step_loss(fwd, xy):
        with autocast:
            logits = fwd(input_ids=xy[:, :-1]).logits
        return torch.nn.functional.cross_entropy(logits.float().view(-1, logits.shape[-1]), xy[:, 1:].reshape(-1))

    curve = []
    t_train = time.time()
    step = first = 0
    stopped_early = False
    # --state: a run that spans several calls (each under a wall-clock limit) carries
    # its weights, optimizer, batch sampler, step and training seconds from one to the next
    state_file = args.state / "state.pt" if args.state else None
    if state_file and state_file.is_file():
        st = torch.load(state_file, map_location=device, weights_only=False)
        model.load_state_dict(st["model"])
        opt.load_state_dict(st["opt"])
        gen.set_state(st["gen"].cpu())  # torch.load maps it to the model's device; the generator wants a CPU byte tensor
        first, curve = st["step"], st["curve"]
        t_train -= st["train_seconds"]  # the schedule counts the earlier calls' training time
        print(f"resumed at step {first} after {st['train_seconds']:.0f}s of training", flush=True)
    for step in range(first, args.steps):
        if time.time() - t_train > args.max_minutes * 60:
            stopped_early = True
            print(f"time budget reached at step {step}", flush=True)
            break
        if args.stop_at and time.time() > args.stop_at:
            torch.save({"model": model.state_dict(), "opt": opt.state_dict(), "gen": gen.get_state(), "step": step,
                        "curve": curve, "train_seconds": time.time() - t_train}, state_file)
            print(f"call's time is up at step {step}: state saved to {state_file}; run again to resume", flush=True)
            raise SystemExit(RESUME_EXIT)
        elapsed = time.time() - t_train
        lr = lr_at(step, args, elapsed)
        for g in opt.param_groups:
            g["lr"] = lr
        n_from_book = 0
        if book_t is not None and schedule_progress(step, args, elapsed) >= 1 - args.anneal_fraction:
            n_from_book = round(args.batch * args.anneal_mix)
        starts = torch.randint(0, n_windows, (args.batch - n_from_book,), generator=gen)
        windows = [train_t[s:s + args.ctx + 1] for s in starts.tolist()]
        if n_from_book:
            windows += [book_t[s:s + args.ctx + 1] for s in torch.randint(0, n_book, (n_from_book,), generator=gen).tolist()]
        xy = torch.stack(windows).to(device, non_blocking=True)
        opt.zero_grad(set_to_none=True)
        try:
            loss = step_loss(forward, xy)
            loss.backward()
        except Exception as e:  # noqa: BLE001 (a compiler failure at the first step: train on without it)
            if forward is model or step != first:
                raise
            print(f"torch.compile failed ({type(e).__name__}: {str(e)[:200]}); training uncompiled", flush=True)
            forward = model
            opt.zero_grad(set_to_none=True)
            loss = step_loss(forward, xy)
            loss.backward()
        if forward is not model and step == first:
            print(f"torch.compile: first step in {time.time() - t_train:.1f}s", flush=True)
        torch.nn.utils.clip_grad_norm_(model.parameters(), args.clip)
        opt.step()
        if step % args.log_every == 0 or step == args.steps - 1:
            entry = {"step": step, "loss": round(loss.item(), 4), "lr": round(lr, 6),
                     "seconds": round(time.time() - t_train, 1)}
            if step % args.eval_every == 0 and step > 0:
                hl, _ = heldout_loss(model, held_ids, args.ctx, device, max_tokens=args.eval_tokens)
                entry["heldout_loss"] = round(hl, 4)
            curve.append(entry)
            print(json.dumps(entry), flush=True)
    train_seconds = time.time() - t_train
    steps_done = step + (0 if stopped_early else 1)
    if state_file and state_file.is_file():
        state_file.unlink()  # the schedule is done: nothing to resume

    # final loss: mean over the last 50 steps would need bookkeeping; report the last logged
    # step's loss and a fresh loss on 16 train batches without dropout (the honest number).
    model.eval()
    with torch.no_grad():
        tl = []
        for _ in range(16):
            starts = torch.randint(0, n_windows, (args.batch,), generator=gen)
            xy = torch.stack([train_t[s:s + args.ctx + 1] for s in starts.tolist()]).to(device)
            with autocast:
                logits = model(input_ids=xy[:, :-1]).logits
            tl.append(torch.nn.functional.cross_entropy(
                logits.float().view(-1, logits.shape[-1]), xy[:, 1:].reshape(-1)).item())
    model.train()
    final_train_loss = float(np.mean(tl))
    held, held_count = heldout_loss(model, held_ids, args.ctx, device)
    print(f"final train loss {final_train_loss:.4f}; held-out loss {held:.4f} ppl {math.exp(held):.3f} "
          f"over {held_count:,} tokens; {steps_done} steps in {train_seconds:.0f}s", flush=True)
    outs = samples(model, tokenizer, device, args.sample_tokens)
    for p, s in outs.items():
        print(f"--- sample {p!r}\n{s}\n", flush=True)
    code = None
    if not args.skip_code_eval:
        code = code_pass_at_1(model, tokenizer, device, 128)
        print(f"pass@1 (transformers, greedy) {code['passed']}/{code['tasks']}: {', '.join(code['passed_tasks'])}",
              flush=True)

    args.out.mkdir(parents=True, exist_ok=True)
    model.float().save_pretrained(str(args.out), safe_serialization=True)
    tokenizer.save_pretrained(str(args.out))
    # Older converters read partial_rotary_factor / rope_theta at the top level (as in
    # microsoft/phi-2's config.json); transformers 5 nests them in rope_parameters. Write both.
    cfg_path = args.out / "config.json"
    cfg = json.loads(cfg_path.read_text())
    cfg.setdefault("partial_rotary_factor", 0.5)
    cfg.setdefault("rope_theta", 10000.0)
    cfg_path.write_text(json.dumps(cfg, indent=2) + "\n")

    # the model-card front matter that `phicpp convert` (gguf-py's Metadata) turns into
    # general.license / general.tags; the shipped run's folder got this same file by hand
    (args.out / "README.md").write_text(CARD_FRONT_MATTER)

    result = {
        "command": " ".join([Path(sys.executable).name] + sys.argv),
        "hardware": hardware(),
        "transformers": transformers.__version__,
        "python": sys.version.split()[0],
        "parameters": n_params,
        "args": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items() if k != "func"},
        "train_tokens": int(len(train_ids)), "heldout_tokens": int(len(held_ids)),
        "tokens_seen": int(steps_done * args.batch * args.ctx),
        "epochs": round(steps_done * args.batch * args.ctx / len(train_ids), 2),
        "steps": steps_done, "stopped_early": stopped_early,
        "train_seconds": round(train_seconds, 1), "total_seconds": round(time.time() - t0, 1),
        "final_train_loss": round(final_train_loss, 4),
        "heldout_loss": round(held, 4), "heldout_ppl": round(math.exp(held), 4),
        "heldout_eval_tokens": held_count, "curve": curve, "samples": outs, "pass_at_1": code,
    }
    (args.out / "train_result.json").write_text(json.dumps(result, indent=1) + "\n")
    return result


# ----------------------------------------------------------------------------- GGUF check

def _hf_name(gguf_name: str) -> str:
    """llama.cpp's phi2 tensor name -> transformers' PhiForCausalLM name."""
    fixed = {"token_embd": "model.embed_tokens", "output_norm": "model.final_layernorm", "output": "lm_head"}
    per_layer = {"attn_norm": "input_layernorm", "attn_q": "self_attn.q_proj", "attn_k": "self_attn.k_proj",
                 "attn_v": "self_attn.v_proj", "attn_output": "self_attn.dense",
                 "ffn_up": "mlp.fc1", "ffn_down": "mlp.fc2"}
    stem, kind = gguf_name.rsplit(".", 1)
    if stem in fixed:
        return f"{fixed[stem]}.{kind}"
    _, layer, what = stem.split(".")
    return f"model.layers.{layer}.{per_layer[what]}.{kind}"


def eval_gguf(args) -> dict:
    """Held-out perplexity of GGUF files on a GPU: every tensor is dequantized (gguf-py) into
    the PhiForCausalLM of --config, so this measures the quantized weights themselves, with
    float32 activations (the engine's own numbers, on a subset, come from tests/test_tiny_model.py)."""
    import gguf
    import numpy as np
    import torch
    from transformers import PhiConfig, PhiForCausalLM, PreTrainedTokenizerFast

    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    tokenizer = PreTrainedTokenizerFast(tokenizer_file=str(args.config / "tokenizer.json"), eos_token=EOT)
    ids = encode_split(tokenizer, args.heldout)
    if args.max_tokens:
        ids = ids[:args.max_tokens + 1]
    results = {}
    for path in args.gguf:
        model = PhiForCausalLM(PhiConfig.from_pretrained(str(args.config)))
        state = model.state_dict()
        reader = gguf.GGUFReader(str(path))
        types = {}
        for t in reader.tensors:
            w = gguf.quants.dequantize(t.data, t.tensor_type).astype(np.float32)
            name = _hf_name(t.name)
            state[name].copy_(torch.from_numpy(w.reshape(state[name].shape)))
            types[t.tensor_type.name] = types.get(t.tensor_type.name, 0) + 1
        model.to(device)
        loss, count = heldout_loss(model, ids, args.ctx, device)
        results[Path(path).name] = {"loss": round(loss, 5), "ppl": round(math.exp(loss), 4), "tokens": count,
                                    "bytes": Path(path).stat().st_size, "tensor_types": types}
        print(json.dumps({Path(path).name: results[Path(path).name]}), flush=True)
    return results


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="stage", required=True)
    t = sub.add_parser("tokenizer", help="train the byte-level BPE tokenizer")
    t.add_argument("--corpus", type=Path, required=True)
    t.add_argument("--out", type=Path, required=True)
    t.add_argument("--vocab", type=int, default=8192)
    t.add_argument("--ctx", type=int, default=1024)
    t.add_argument("--max-bytes", type=int, default=0, help="train on a seeded sample of this many bytes (0: all)")
    t.add_argument("--seed", type=int, default=1234)
    m = sub.add_parser("train", help="train the model and save a Hugging Face checkpoint")
    m.add_argument("--corpus", type=Path, required=True)
    m.add_argument("--tokenizer", type=Path, required=True)
    m.add_argument("--out", type=Path, required=True)
    m.add_argument("--seed", type=int, default=1234)
    m.add_argument("--d-model", type=int, default=256)
    m.add_argument("--layers", type=int, default=8)
    m.add_argument("--head-dim", type=int, default=64)
    m.add_argument("--mlp", type=int, default=0, help="MLP width (default 4 x d_model)")
    m.add_argument("--ctx", type=int, default=1024)
    m.add_argument("--dropout", type=float, default=0.1)
    m.add_argument("--batch", type=int, default=64)
    m.add_argument("--steps", type=int, default=2000)
    m.add_argument("--warmup", type=int, default=100)
    m.add_argument("--lr", type=float, default=2e-3)
    m.add_argument("--min-lr", type=float, default=2e-4)
    m.add_argument("--weight-decay", type=float, default=0.1)
    m.add_argument("--clip", type=float, default=1.0)
    m.add_argument("--max-minutes", type=float, default=7.0, help="stop the loop early past this")
    m.add_argument("--anneal-fraction", type=float, default=0.0,
                   help="the last fraction of the schedule mixes in the corpus's textbook.txt")
    m.add_argument("--anneal-mix", type=float, default=0.5, help="share of each batch from textbook.txt then")
    m.add_argument("--skip-code-eval", action="store_true",
                   help="no pass@1 through transformers at the end (tools/eval_code.py runs it on the GGUF)")
    m.add_argument("--schedule-by-time", action="store_true",
                   help="end the cosine schedule at --max-minutes (if sooner than --steps)")
    m.add_argument("--state", type=Path, default=None,
                   help="folder that carries the run between calls (token ids, and with --stop-at the training state)")
    m.add_argument("--stop-at", type=float, default=0.0,
                   help=f"Unix time: past it, save the state in --state and exit with status {RESUME_EXIT} (run again to resume)")
    m.add_argument("--compile", action="store_true", help="train through torch.compile (falls back if it fails)")
    m.add_argument("--log-every", type=int, default=25)
    m.add_argument("--eval-every", type=int, default=100)
    m.add_argument("--eval-tokens", type=int, default=65536, help="held-out tokens for in-loop evals")
    m.add_argument("--sample-tokens", type=int, default=96)
    e = sub.add_parser("eval-gguf", help="held-out perplexity of GGUF files (dequantized into transformers)")
    e.add_argument("--config", type=Path, required=True, help="checkpoint folder: config.json + tokenizer.json")
    e.add_argument("--heldout", type=Path, required=True)
    e.add_argument("--ctx", type=int, default=1024)
    e.add_argument("--max-tokens", type=int, default=0)
    e.add_argument("--out", type=Path, default=None, help="write the results here as JSON")
    e.add_argument("gguf", nargs="+", type=Path)
    args = ap.parse_args(argv)
    if args.stage == "eval-gguf":
        res = eval_gguf(args)
        if args.out:
            args.out.write_text(json.dumps(res, indent=1) + "\n")
    elif args.stage == "tokenizer":
        train_tokenizer(args.corpus, args.out, args.vocab, args.ctx, args.max_bytes, args.seed)
    else:
        train(args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
