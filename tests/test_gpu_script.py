"""benchmarks/gpu.sh, the GPU benchmark, checked where there is no GPU: its dry run goes
through every step at toy sizes on the CPU and writes the results and the Markdown it would
write on a GPU; without a GPU and without the dry run it refuses at once; and the report
turns steps' records into the figures and rows it should (bench_gpu.py's arithmetic)."""

from __future__ import annotations

import importlib.util
import json
import os
import platform
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "benchmarks" / "gpu.sh"


def bench_gpu():
    spec = importlib.util.spec_from_file_location("bench_gpu", ROOT / "benchmarks" / "bench_gpu.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def run_script(out: Path, **env: str) -> subprocess.CompletedProcess:
    environment = {**os.environ, "PYTHON": sys.executable, "PYTHONPATH": str(ROOT),
                   "OMP_NUM_THREADS": "1", **env}
    return subprocess.run(["bash", str(SCRIPT), str(out)], env=environment, cwd=out.parent,
                          capture_output=True, text=True, timeout=300)


def test_the_script_is_valid_bash_and_refuses_without_a_gpu(tmp_path):
    check = subprocess.run(["bash", "-n", str(SCRIPT)], capture_output=True, text=True)
    assert check.returncode == 0, check.stderr
    out = tmp_path / "out"
    proc = run_script(out, CUDA_VISIBLE_DEVICES="", GPU_SH_DRY_RUN="0")
    assert proc.returncode == 2, (proc.returncode, proc.stdout, proc.stderr)
    assert "no CUDA GPU" in proc.stderr and "GPU_SH_DRY_RUN=1" in proc.stderr, proc.stderr
    assert not (out / "results.json").exists(), "a refused run wrote results"


def test_a_failing_step_is_reported_with_its_error_and_the_script_goes_on(tmp_path):
    """Only the shakespeare step (GPU_SH_STEPS), on a file that is not UTF-8: basegpt exits 2,
    and the step's record and table row carry basegpt's error line."""
    bad = tmp_path / "bad.txt"
    bad.write_bytes(b"\xff\xfe not text")
    out = tmp_path / "out"
    proc = run_script(out, GPU_SH_DRY_RUN="1", GPU_SH_STEPS="shakespeare",
                      BASEGPT_SHAKESPEARE=str(bad))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    results = json.loads((out / "results.json").read_text())
    step = results["shakespeare"]
    assert step["status"] == "failed", step
    assert step["note"].startswith("exit 2; logs/shakespeare.log: basegpt: error: "), step
    assert f"{bad} is not valid UTF-8" in step["note"], step
    for other in ("env", "throughput", "decode", "parallel-ddp", "parallel-fsdp"):
        assert results[other]["status"] == "skipped", (other, results[other])
        assert results[other]["note"] == "not in GPU_SH_STEPS", (other, results[other])
    row = next(line for line in (out / "gpu.md").read_text().splitlines()
               if line.startswith("| shakespeare-char"))
    assert "| failed: exit 2; logs/shakespeare.log: basegpt: error: " in row, row


def test_measured_rate_counts_only_the_steps_after_warmup():
    # Steps of 100 tokens; after the warm-up step they take 2, 1 and 0.5 s: 300 / 3.5 tok/s.
    records = [{"tokens": 100 * i, "tokens_per_s": rate, "mfu": rate / 200}
               for i, rate in enumerate([100, 50, 100, 200], 1)]
    rate = bench_gpu().measured_rate(records, warmup=1)
    assert rate["measured_steps"] == 3, rate
    assert rate["tokens_per_s"] == pytest.approx(300 / 3.5), rate
    assert rate["mfu"] == pytest.approx(300 / 3.5 / 200), rate
    assert bench_gpu().measured_rate(records[:1], warmup=1) == {
        "measured_steps": 0, "tokens_per_s": None, "mfu": None}


def test_report_of_ddp_and_fsdp_steps(tmp_path):
    """The parallel steps as they would end on a GPU: DDP done on 2 processes, FSDP out of
    time. Their figures come from metrics.jsonl and the per-process memory files."""
    out = tmp_path
    (out / "steps").mkdir()
    (out / "parallel").mkdir()
    (out / "plan.json").write_text(json.dumps({"dry_run": False, "nproc": 2,
                                               "parallel_warmup": 1}))
    (out / "steps" / "parallel-ddp.json").write_text(json.dumps(
        {"status": "ok", "seconds": 50, "cap_s": 70, "note": ""}))
    (out / "steps" / "parallel-fsdp.json").write_text(json.dumps(
        {"status": "timed out", "seconds": 70, "cap_s": 70,
         "note": "stopped at its 70 s cap; logs/parallel-fsdp.log"}))
    run = out / "runs" / "parallel-ddp"
    run.mkdir(parents=True)
    (run / "metrics.jsonl").write_text("".join(
        json.dumps({"step": i, "tokens": 1000 * i, "tokens_per_s": 1000.0 * i}) + "\n"
        for i in (1, 2, 3)))
    for rank, mib in ((0, 1024), (1, 2048)):
        (out / "parallel" / f"ddp.rank{rank}.json").write_text(json.dumps(
            {"rank": rank, "exit_code": 0, "cuda_max_allocated": mib * 2 ** 20,
             "cuda_max_reserved": 2 * mib * 2 ** 20, "max_rss": 3 * 2 ** 30}))
    results = bench_gpu().report(out)
    ddp = results["parallel-ddp"]["results"]
    # after the warm-up step: 1000 tokens in 0.5 s, then 1000 in 1/3 s
    assert ddp["tokens_per_s"] == pytest.approx(2000 / (0.5 + 1 / 3)), ddp
    assert ddp["peak_cuda_allocated_mib"] == [1024, 2048], ddp
    assert ddp["peak_rss_mib"] == [3072, 3072] and ddp["processes"] == 2, ddp
    assert results["parallel-fsdp"]["status"] == "timed out", results["parallel-fsdp"]
    md = (out / "gpu.md").read_text()
    ddp_row = next(line for line in md.splitlines() if line.startswith("| `--parallel ddp`"))
    assert "2,400 tok/s; CUDA 1,024 MiB, 2,048 MiB" in ddp_row, ddp_row
    fsdp_row = next(line for line in md.splitlines() if line.startswith("| `--parallel fsdp`"))
    assert "timed out: stopped at its 70 s cap" in fsdp_row, fsdp_row


def has_parallel_flag() -> bool:
    """Whether `basegpt train` has --parallel: its flags are TrainConfig's fields."""
    import dataclasses
    from basegpt.config import TrainConfig
    return "parallel" in {f.name for f in dataclasses.fields(TrainConfig)}


@pytest.mark.slow
def test_dry_run_goes_through_every_step(tmp_path):
    """~30 s: the whole script at toy sizes on the CPU, on a small stand-in text."""
    from basegpt import builtin_corpus
    text = tmp_path / "shakes.txt"
    text.write_text("".join(builtin_corpus(60_000)), encoding="utf-8")
    out = tmp_path / "out"
    proc = run_script(out, GPU_SH_DRY_RUN="1", BASEGPT_SHAKESPEARE=str(text))
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    results = json.loads((out / "results.json").read_text())
    assert results["dry_run"] is True and results["plan"]["shakespeare"] == str(text), results
    for step in ("env", "throughput", "shakespeare", "decode"):
        assert results[step]["status"] == "ok", (step, results[step],
                                                 (out / "logs" / f"{step}.log").read_text()[-2000:])

    env = results["env"]["results"]
    assert env["python"] == platform.python_version() and env["gpus"] == [], env

    speed = results["throughput"]["results"]
    assert (speed["warmup_steps"], speed["measured_steps"]) == (2, 3), speed
    assert speed["tokens_per_s"] > 0 and speed["mfu"] is None, speed    # no peak for a CPU

    shakes = results["shakespeare"]["results"]
    metrics = [json.loads(line) for line in
               (out / "runs" / "shakespeare-char" / "metrics.jsonl").read_text().splitlines()]
    val = [r["val_bpb"] for r in metrics if "val_bpb" in r]
    assert shakes["steps"] == 4 and shakes["evaluations"] == 2 == len(val), shakes
    assert shakes["best_val_bpc"] == min(val), (shakes, val)
    assert shakes["reached_target_at_s"] is None, shakes      # 4 toy steps: far above 2.117
    assert shakes["text_sha256_matches_tinyshakespeare"] is False, shakes

    decode = results["decode"]["results"]
    assert [(r["batch"], r["new_tokens"]) for r in decode["rows"]] == [(1, 8), (4, 8)], decode
    has_hf = importlib.util.find_spec("transformers") is not None
    assert all((r["hf"] is not None) == has_hf for r in decode["rows"]), decode
    assert all(r["kv_cache"] > 0 for r in decode["rows"]), decode

    for mode in ("ddp", "fsdp"):
        step = results[f"parallel-{mode}"]
        if has_parallel_flag():
            assert step["status"] == "ok", step
            assert step["results"]["exit_codes"] == [0], step
        else:
            assert step["status"] == "not available", step
            assert "no --parallel flag" in step["note"], step

    # the run's metrics came back to OUT, its checkpoints (hundreds of MB on a GPU) did not
    assert not list(out.rglob("*.safetensors")), list(out.rglob("*.safetensors"))

    md = (out / "gpu.md").read_text()
    assert md == proc.stdout[proc.stdout.index("### GPU"):proc.stdout.rindex("gpu.sh: ")], \
        "gpu.sh printed something else than gpu.md"
    lines = md.splitlines()
    assert lines[0].startswith("### GPU (DRY RUN"), lines[0]
    rows = [line for line in lines if line.startswith("| ") and not line.startswith("| what")]
    both = has_parallel_flag()                   # then a row compares FSDP with DDP
    assert len(rows) == 1 + 1 + 2 + 2 + both, rows  # throughput, shakespeare, 2 decode, ddp, fsdp
    if both:
        ddp, fsdp = (results[f"parallel-{m}"]["results"] for m in ("ddp", "fsdp"))
        assert rows[6].startswith("| FSDP / DDP | tokens/s "
                                  f"{fsdp['tokens_per_s'] / ddp['tokens_per_s']:.2f}x"), rows[6]
    assert f"{speed['tokens_per_s']:,.0f} tok/s" in rows[0], rows[0]
    assert f"{shakes['best_val_bpc']:.3f} at step {shakes['best_at_step']}" in rows[1], rows[1]
    assert f"{decode['rows'][1]['kv_cache']:,.0f} tok/s" in rows[3], rows[3]
