"""The Python half of benchmarks/gpu.sh: what each step measures, and the report of them all.

gpu.sh runs the steps, each in its own process under its own time cap, and then `report`;
the subcommands here are those steps' parts that are not a plain `basegpt` command:

    env OUT              the machine: GPUs, versions, what is installed    -> OUT/env.json
    throughput OUT       GPT-2 small training tokens/s and MFU              -> OUT/throughput.json
    peak-memory PREFIX -- ARGS
                         `basegpt ARGS` in this process, then its peak memory (CUDA allocated
                         and reserved, the process's RSS) -> PREFIX.rank<RANK>.json; run under
                         torchrun, one file per process
    report OUT           every step's results -> OUT/results.json and OUT/gpu.md (a Markdown
                         fragment for BENCHMARKS.md)

Throughput trains the gpt2-small preset's model (12 blocks x 768, context 1024, vocab 50257)
through basegpt's own loop (fit) on random tokens: a tokenizer of 50257 tokens would take
minutes to train and tokens/s does not depend on which tokens they are. bf16 autocast,
torch.compile, fused AdamW and torch's SDPA attention (flash on an H100), warm-up steps first
(compilation), then the measured steps: tokens/s = their tokens / their seconds, MFU = the
same against the device's peak (basegpt.devices.PEAK_TFLOPS, as fit reports it).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

# Targets printed beside the results (nanoGPT's figures on one H100, which basegpt should beat).
NANOGPT_TOKENS_PER_S = 429_000          # GPT-2 small training on one H100
TARGET_SPEEDUP = 1.25                   # tokens/s at least 1.25x nanoGPT's
TARGET_MFU = 0.50
SHAKESPEARE_TARGET_BPC = 2.117          # nanoGPT's best val loss 1.467 nats/char, in bits/char
NANOGPT_SHAKESPEARE_S = 91              # ... reached after ~91 s on one H100
TARGET_SHAKESPEARE_S = 60
TINYSHAKESPEARE_SHA256 = "86c4e6aa9db7c042ec79f339dcb96d42b0075e16b8fc2e86bf0ca57e2dc565ed"

# The dry run's model: the test suite's tiny size, on the CPU.
TINY_MODEL = dict(n_block=2, n_embed=32, n_head=2, n_k=16, n_v=16, n_ff=64, n_context=16)
# Steps' JSON files in OUT, in the report's order.
STEPS = ["env", "throughput", "shakespeare", "decode", "parallel-ddp", "parallel-fsdp"]


def write_json(path: Path, data: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")


def read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def read_metrics(run_dir: Path) -> list[dict[str, Any]]:
    """A run's metrics.jsonl records (a line cut short by a kill is left out)."""
    records = []
    try:
        lines = (run_dir / "metrics.jsonl").read_text(encoding="utf-8").splitlines()
    except OSError:
        return []
    for line in lines:
        try:
            records.append(json.loads(line))
        except ValueError:
            pass
    return records


def measured_rate(records: list[dict[str, Any]], warmup: int) -> dict[str, Any]:
    """tokens/s and MFU over the steps after the first `warmup` of a run's step records.

    Each record's tokens_per_s is that step's tokens (all processes') over that step's own
    seconds, so the steps' seconds add up to the time spent in them (no evaluations); MFU
    scales with tokens/s (flops per token / peak is fixed), so one record gives the factor."""
    steps = [(r["tokens"] - before, r) for before, r in
             zip([0] + [r["tokens"] for r in records], records)][warmup:]
    tokens = sum(n for n, _ in steps)
    seconds = sum(n / r["tokens_per_s"] for n, r in steps)
    rate = tokens / seconds if seconds else None
    mfu = (rate * steps[0][1]["mfu"] / steps[0][1]["tokens_per_s"]
           if rate and "mfu" in steps[0][1] else None)
    return {"measured_steps": len(steps), "tokens_per_s": rate, "mfu": mfu}


# ------------------------------------------------------------------------ env

def env(out: Path) -> None:
    """What the figures depend on: GPUs, versions, the optional packages, the commit."""
    import torch
    info: dict[str, Any] = {
        "python": platform.python_version(), "torch": torch.__version__,
        "cuda": torch.version.cuda, "cuda_available": torch.cuda.is_available(),
        "gpus": [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())],
        "cpus": os.cpu_count(), "commit": _commit(),
    }
    for module in ("numpy", "tqdm", "safetensors", "triton", "transformers"):
        try:
            info[module] = __import__(module).__version__
        except ImportError:
            info[module] = None
    from basegpt.tokenizer import tokenizer as tokenizer_module
    info["bpe_c_extension"] = tokenizer_module._bpe is not None
    if info["gpus"]:
        from basegpt.devices import gpu_peak_tflops
        info["peak_bf16_tflops"] = (gpu_peak_tflops(info["gpus"][0]) or {}).get("bfloat16")
    write_json(out / "env.json", info)
    print(json.dumps(info, indent=2))


def _commit() -> str:
    """The checkout's commit; $BASEGPT_COMMIT where the copy has no .git (a copied tree)."""
    try:
        found = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT,
                               capture_output=True, text=True).stdout.strip()
    except OSError:
        found = ""
    return found or os.environ.get("BASEGPT_COMMIT", "unknown")


# ------------------------------------------------------------------------ throughput

def throughput(out: Path, dry_run: bool, warmup: int, steps: int, batch_size: int,
               max_seconds: float) -> None:
    """GPT-2 small's training tokens/s and MFU through fit (module docstring); `max_seconds`
    bounds the whole run, compilation included, so the step always ends within its cap."""
    import torch
    from torch.utils.data import Dataset
    from basegpt import B2lM
    from basegpt.config import ModelConfig, TrainConfig
    from basegpt.recipe import load_preset, merge_specs
    from basegpt.train import fit

    preset = merge_specs(load_preset("gpt2-small"))
    model_settings = {**preset["model"], "vocab_size": preset["data"]["vocab_size"]}
    if dry_run:
        model_settings.update(TINY_MODEL, vocab_size=512)
    config = ModelConfig(**model_settings)
    T, V = config.n_context, config.vocab_size

    class RandomTokens(Dataset):
        """n fixed windows of uniformly random token ids (window i is the same each time)."""

        def __init__(self, n: int) -> None:
            self.ids = torch.randint(0, V, (n, T + 1), generator=torch.Generator().manual_seed(0))

        def __len__(self) -> int:
            return len(self.ids)

        def __getitem__(self, i: int):
            return self.ids[i, :-1], self.ids[i, 1:]

    torch.manual_seed(0)
    model = B2lM(config)
    train = TrainConfig(max_steps=warmup + steps, max_minutes=max_seconds / 60,
                        batch_size=batch_size, batch_tokens=batch_size * T,
                        optimizer="adamw", weight_decay=0.1, lr=6e-4, warmup_steps=0,
                        eval_every=0, device="cpu" if dry_run else "cuda",
                        dtype="float32" if dry_run else "bfloat16",
                        compile="off" if dry_run else "on")
    records: list[dict[str, Any]] = []
    started = time.perf_counter()
    fit(model, RandomTokens(64 * batch_size), None, train, progress=False,
        on_step=records.append, log=lambda m: print(m, flush=True))
    rate = measured_rate(records, warmup)
    result = {
        "model": "gpt2-small preset" + (" (dry run: tiny)" if dry_run else ""),
        "parameters": model.num_parameters(), "batch": f"{batch_size} x {T}",
        "dtype": train.dtype, "compile": train.compile, "attention": config.attention,
        "warmup_steps": min(warmup, len(records)), **rate,
        "wall_s": round(time.perf_counter() - started, 1),
        "peak_cuda_allocated_mib": (round(torch.cuda.max_memory_allocated() / 2 ** 20)
                                    if torch.cuda.is_available() else None),
        "target_tokens_per_s": TARGET_SPEEDUP * NANOGPT_TOKENS_PER_S, "target_mfu": TARGET_MFU,
    }
    if not rate["measured_steps"]:
        result["note"] = (f"no step after the {warmup} warm-up steps within {max_seconds:.0f} s "
                          "(compilation took the time)")
    write_json(out / "throughput.json", result)
    print(json.dumps(result, indent=2))


# ------------------------------------------------------------------------ peak memory

def peak_memory(prefix: str, argv: list[str]) -> int:
    """Run `basegpt argv` here and write this process's peak memory beside PREFIX."""
    import torch
    from basegpt.cli import main
    code = main(argv)
    rank = int(os.environ.get("RANK", "0"))
    cuda = torch.cuda.is_available()
    record = {"rank": rank, "exit_code": code,
              "cuda_max_allocated": torch.cuda.max_memory_allocated() if cuda else None,
              "cuda_max_reserved": torch.cuda.max_memory_reserved() if cuda else None,
              # ru_maxrss is in KiB on Linux
              "max_rss": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024}
    write_json(Path(f"{prefix}.rank{rank}.json"), record)
    return code


# ------------------------------------------------------------------------ report

def shakespeare_result(run_dir: Path, text: str | None) -> dict[str, Any]:
    """Best validation bits/char of a shakespeare-char run, and when it first reached nanoGPT's
    best (2.117 bits/char): wall seconds of the run (compilation and evaluations included)
    and seconds inside training steps."""
    records = read_metrics(run_dir)
    evals = [r for r in records if "val_bpb" in r]
    best = min(evals, key=lambda r: r["val_bpb"]) if evals else None
    reached = next((r for r in evals if r["val_bpb"] <= SHAKESPEARE_TARGET_BPC), None)
    result: dict[str, Any] = {
        "steps": records[-1]["step"] if records else 0,
        "seconds": records[-1]["seconds"] if records else None,
        "evaluations": len(evals),
        "best_val_bpc": best["val_bpb"] if best else None,
        "best_at_step": best["step"] if best else None,
        "best_at_s": best["seconds"] if best else None,
        "reached_target_at_s": reached["seconds"] if reached else None,
        "reached_target_at_train_s": reached["train_seconds"] if reached else None,
        "reached_target_at_step": reached["step"] if reached else None,
        "target_bpc": SHAKESPEARE_TARGET_BPC, "target_s": TARGET_SHAKESPEARE_S,
        "nanogpt_s": NANOGPT_SHAKESPEARE_S,
    }
    if text and Path(text).is_file():
        digest = hashlib.sha256(Path(text).read_bytes()).hexdigest()
        result["text_sha256_matches_tinyshakespeare"] = digest == TINYSHAKESPEARE_SHA256
    return result


def parallel_result(out: Path, mode: str, warmup: int) -> dict[str, Any]:
    """tokens/s (all processes) after `warmup` steps, and each process's peak memory."""
    ranks = sorted((read_json(f) for f in (out / "parallel").glob(f"{mode}.rank*.json")),
                   key=lambda r: r["rank"] if r else -1)
    ranks = [r for r in ranks if r]
    mib = 2 ** 20
    result = {
        **measured_rate(read_metrics(out / "runs" / f"parallel-{mode}"), warmup),
        "peak_cuda_allocated_mib": [round(r["cuda_max_allocated"] / mib) if r["cuda_max_allocated"]
                                    is not None else None for r in ranks],
        "peak_cuda_reserved_mib": [round(r["cuda_max_reserved"] / mib) if r["cuda_max_reserved"]
                                   is not None else None for r in ranks],
        "peak_rss_mib": [round(r["max_rss"] / mib) for r in ranks],
        "exit_codes": [r["exit_code"] for r in ranks],
    }
    return result


def report(out: Path) -> dict[str, Any]:
    """results.json (every step: its status from gpu.sh, its figures) and gpu.md."""
    plan = read_json(out / "plan.json") or {}
    results: dict[str, Any] = {"dry_run": plan.get("dry_run", False), "plan": plan}
    for step in STEPS:
        status = read_json(out / "steps" / f"{step}.json") or {"status": "not run"}
        figures = read_json(out / f"{step}.json")
        if step == "shakespeare" and status.get("status") not in ("skipped", "not run"):
            figures = shakespeare_result(out / "runs" / "shakespeare-char", plan.get("shakespeare"))
        if step.startswith("parallel-") and status.get("status") not in (
                "skipped", "not run", "not available"):
            figures = {**parallel_result(out, step.removeprefix("parallel-"),
                                         plan.get("parallel_warmup", 0)),
                       "processes": plan.get("nproc")}
        results[step] = {**status, **({"results": figures} if figures is not None else {})}
    write_json(out / "results.json", results)
    (out / "gpu.md").write_text(markdown(results), encoding="utf-8")
    return results


def _num(value: float | None, fmt: str = ",.0f", unit: str = "") -> str:
    return "—" if value is None else f"{value:{fmt}}{unit}"


def _met(ok: bool | None) -> str:
    return "—" if ok is None else ("yes" if ok else "no")


def _status(step: dict[str, Any]) -> str:
    """'' for a step that went through, else why not ("timed out after 110 s: ...")."""
    status = step.get("status")
    if status == "ok":
        return ""
    note = step.get("note", "")
    return f"{status}{': ' + note if note else ''}"


def markdown(results: dict[str, Any]) -> str:
    env_info = results["env"].get("results") or {}
    gpus = env_info.get("gpus") or []
    machine = (f"{len(gpus)} x {gpus[0]}" if gpus else "no GPU (dry run on the CPU)")
    title = "GPU" + (" (DRY RUN: toy sizes on the CPU; the figures mean nothing)"
                     if results["dry_run"] else "")
    lines = [f"### {title}", "",
             f"Machine: {machine}, {env_info.get('cpus', '?')} CPUs; Python "
             f"{env_info.get('python', '?')}, torch {env_info.get('torch', '?')} (CUDA "
             f"{env_info.get('cuda') or '—'}), triton {env_info.get('triton') or 'absent'}, "
             f"transformers {env_info.get('transformers') or 'absent'}; commit "
             f"{env_info.get('commit', '?')}. Reproduce: `benchmarks/gpu.sh OUT` "
             "(BENCHMARKS.md, GPU).", "",
             "| what | basegpt | target | met | note |", "|---|---:|---:|---|---|"]

    step = results["throughput"]
    r = step.get("results") or {}
    speed, mfu = r.get("tokens_per_s"), r.get("mfu")
    lines.append(
        f"| GPT-2 small training, {r.get('dtype', '?')}, compile {r.get('compile', '?')}, "
        f"batch {r.get('batch', '?')}, "
        f"{r.get('measured_steps', 0)} steps after {r.get('warmup_steps', 0)} warm-up | "
        f"{_num(speed, unit=' tok/s')}; MFU {_num(mfu, '.1%')} | "
        f">= {TARGET_SPEEDUP * NANOGPT_TOKENS_PER_S:,.0f} tok/s ({TARGET_SPEEDUP}x nanoGPT's "
        f"{NANOGPT_TOKENS_PER_S:,}); MFU >= {TARGET_MFU:.0%} | "
        f"{_met(None if speed is None else speed >= TARGET_SPEEDUP * NANOGPT_TOKENS_PER_S)}; "
        f"{_met(None if mfu is None else mfu >= TARGET_MFU)} | {_status(step)} |")

    step = results["shakespeare"]
    r = step.get("results") or {}
    at = r.get("reached_target_at_s")
    lines.append(
        f"| shakespeare-char preset: best val bits/char; time to {SHAKESPEARE_TARGET_BPC} "
        f"(wall s, compile and evals included / in training steps) | "
        f"{_num(r.get('best_val_bpc'), '.3f')} at step {r.get('best_at_step', '—')}; "
        f"{_num(at, '.0f', ' s')} / {_num(r.get('reached_target_at_train_s'), '.0f', ' s')} | "
        f"<= {TARGET_SHAKESPEARE_S} s (nanoGPT ~{NANOGPT_SHAKESPEARE_S} s) | "
        f"{_met(None if at is None else at <= TARGET_SHAKESPEARE_S)} | {_status(step)} |")

    step = results["decode"]
    r = step.get("results") or {}
    rows = r.get("rows") or []
    if not rows:
        lines.append(f"| decoding, greedy | — | faster than HF generate | — | {_status(step)} |")
    dtype = (r.get("versions") or {}).get("dtype", "?")
    for row in rows:
        ours, hf = row["kv_cache"], row.get("hf")
        note = _status(step) or ("" if hf is not None else "HF skipped: transformers absent")
        met = "—" if hf is None else f"{_met(ours > hf)} ({ours / hf:.2f}x)"
        lines.append(
            f"| decoding {row['model']}, batch {row['batch']}, {row['new_tokens']} new tokens, "
            f"{dtype}, tokens/s of all rows | {_num(ours, unit=' tok/s')} | HF generate "
            f"{_num(hf, unit=' tok/s')} | {met} | {note} |")

    for mode in ("ddp", "fsdp"):
        step = results[f"parallel-{mode}"]
        m = step.get("results")
        what = f"`--parallel {mode}`"
        if m is None:
            lines.append(f"| {what} | — | — | — | {_status(step)} |")
            continue
        memory = m["peak_cuda_allocated_mib"]
        shown = ("CUDA " + ", ".join(_num(x, ",", " MiB") for x in memory)
                 if any(x is not None for x in memory)
                 else "RSS " + ", ".join(_num(x, ",", " MiB") for x in m["peak_rss_mib"]))
        lines.append(
            f"| {what}, {m['processes']} process(es), GPT-2 small's shape with a byte "
            f"vocabulary, {m['measured_steps']} steps after "
            f"{(results.get('plan') or {}).get('parallel_warmup', 0)}: tokens/s (all "
            f"processes); peak memory of each | {_num(m['tokens_per_s'], unit=' tok/s')}; "
            f"{shown} | — | — | {_status(step)} |")
    ddp, fsdp = (results[f"parallel-{m}"].get("results") or {} for m in ("ddp", "fsdp"))
    if ddp.get("tokens_per_s") and fsdp.get("tokens_per_s"):
        memory = [max((x for x in r["peak_cuda_allocated_mib"] if x is not None), default=None)
                  for r in (ddp, fsdp)]
        ratio = (f"; peak CUDA memory {memory[1] / memory[0]:.2f}x" if None not in memory
                 else "")
        lines.append(f"| FSDP / DDP | tokens/s {fsdp['tokens_per_s'] / ddp['tokens_per_s']:.2f}x"
                     f"{ratio} | — | — | |")
    return "\n".join(lines) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("env")
    p.add_argument("out", type=Path)
    p = sub.add_parser("throughput")
    p.add_argument("out", type=Path)
    p.add_argument("--dry-run", action="store_true")
    p.add_argument("--warmup", type=int, default=20)
    p.add_argument("--steps", type=int, default=30)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--max-seconds", type=float, default=90.0)
    p = sub.add_parser("peak-memory")
    p.add_argument("prefix")
    p.add_argument("argv", nargs=argparse.REMAINDER)
    p = sub.add_parser("report")
    p.add_argument("out", type=Path)
    args = parser.parse_args()
    if args.command == "env":
        env(args.out)
    elif args.command == "throughput":
        throughput(args.out, args.dry_run, args.warmup, args.steps, args.batch_size,
                   args.max_seconds)
    elif args.command == "peak-memory":
        argv = args.argv[1:] if args.argv[:1] == ["--"] else args.argv
        return peak_memory(args.prefix, argv)
    else:
        print(markdown(report(args.out)), end="")
    return 0


if __name__ == "__main__":
    sys.exit(main())
