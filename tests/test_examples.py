"""Every script in examples/ runs as a user would run it (a subprocess, tiny settings) and
prints / writes what its docstring promises."""

import json
import math
import os
import re
import subprocess
import sys
from pathlib import Path

from helpers import ORIGINAL_SNIPPET

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


def run_example(name: str, *args: str, cwd: Path) -> str:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}          # the examples are tiny: one thread is fastest
    proc = subprocess.run([sys.executable, str(EXAMPLES / name), *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0, f"{name} failed ({proc.returncode}):\n{proc.stderr[-3000:]}"
    return proc.stdout


def test_every_example_is_tested():
    tested = {"seed_snippet.py", "layerwise_config.py", "compare_architectures.py"}
    found = {p.name for p in EXAMPLES.glob("*.py")}
    assert found == tested, f"examples without a test: {sorted(found - tested)}"


def test_seed_snippet_is_verbatim_and_learns(tmp_path):
    source = (EXAMPLES / "seed_snippet.py").read_text(encoding="utf-8")
    assert ORIGINAL_SNIPPET in source, "examples/seed_snippet.py no longer holds the original snippet verbatim"
    out = run_example("seed_snippet.py", "--quick", cwd=tmp_path)
    uniform = float(re.search(r"uniform guess:\s+([\d.]+)", out).group(1))
    after = float(re.search(r"loss after 10 epochs:\s+([\d.]+)", out).group(1))
    assert math.isclose(uniform, math.log(500), rel_tol=1e-4), f"uniform guess printed {uniform}"
    assert after < uniform - 0.5, f"10 epochs should beat a uniform guess clearly: {after} vs {uniform}"


def test_layerwise_config_prints_per_block_counts(tmp_path):
    out = run_example("layerwise_config.py", cwd=tmp_path)
    rows = [line.split() for line in out.splitlines() if re.match(r"^\d\s", line)]
    assert [r[1] for r in rows] == ["4q/4kv", "4q/1kv", "2q/2kv"], f"block rows: {rows}"
    assert [r[4] for r in rows] == ["relu", "swiglu", "relu"], f"activations: {rows}"
    totals = [int(r[-1].replace(",", "")) for r in rows]
    assert len(set(totals)) == 3, f"the three blocks should differ in size: {totals}"

    from basegpt import B2lM, ModelConfig                 # the printed numbers are the model's
    config = ModelConfig(vocab_size=512, n_context=64, n_block=3, n_embed=128, n_head=4, n_k=32,
                         n_v=32, n_ff=256, blocks=[{"n_ff": 512},
                                                   {"n_kv_head": 1, "activation": "swiglu"},
                                                   {"n_head": 2, "n_k": 16, "n_v": 16, "n_ff": 128}])
    model = B2lM(config)
    expected = [sum(p.numel() for p in block.parameters()) for block in model.blocks]
    assert totals == expected, f"printed {totals}, the model has {expected}"
    total = int(re.search(r"total ([\d,]+) parameters", out).group(1).replace(",", ""))
    assert total == model.num_parameters(), f"printed total {total}"
    assert "(1, 2, 10, 10)" in out, "the last layer should show its 2 heads' attention"


def test_compare_architectures_writes_two_runs_and_a_plot(tmp_path):
    out = run_example("compare_architectures.py", "--quick", "--out", str(tmp_path / "cmp"),
                      cwd=tmp_path)
    names = ["post-ln-sinusoidal-relu", "pre-ln-rope-swiglu"]
    for name in names:
        run = tmp_path / "cmp" / name
        assert (run / "model.safetensors").is_file() and (run / "metrics.jsonl").is_file(), \
            f"{run} is not a complete run directory"
        config = json.loads((run / "config.json").read_text())
        assert config["train"]["max_steps"] == 6, f"{name} trained with {config['train']}"
        records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
        assert records[-1]["step"] == 6 and "val_loss" in records[-1], f"{name}: {records[-1]}"
        assert re.search(rf"{name}\s+[\d,]+ parameters\s+val loss [\d.]+", out), \
            f"no result line for {name} in:\n{out}"
    post = json.loads((tmp_path / "cmp" / names[0] / "config.json").read_text())["model"]
    pre = json.loads((tmp_path / "cmp" / names[1] / "config.json").read_text())["model"]
    assert (post["norm_position"], post["positional"], post["activation"]) == ("post", "sinusoidal", "relu")
    assert (pre["norm_position"], pre["positional"], pre["activation"]) == ("pre", "rope", "swiglu")
    png = tmp_path / "cmp" / "compare.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", "compare.png is not a PNG"
