"""The ablation lab behind `basegpt compare`: train variants of one spec under one budget,
several seeds each, and tabulate what changed.

    table = compare([Variant("rope", {"positional": "rope"})], preset="seed",
                    budget=("tokens", 2_000_000), seeds=3, out="runs/compare-rope")
    print(table)              # variant, params, tokens/s, FLOPs/token, val bits/byte, ...

A variant is a name and a flat dict of overrides of the base spec (ModelConfig or TrainConfig
fields, `blocks` included). Every variant sees the same data, the same tokenizer (trained
once into OUT/tokenizer.json), the same validation split and the same budget:

    tokens   max_steps = tokens // tokens per step (batch_tokens, or batch_size x n_context)
    flops    max_steps = flops // (FLOPs per token x tokens per step), FLOPs per token as
             B2lM.flops_per_token counts them (6N + attention, PaLM's appendix B)
    minutes  max_minutes = M, the same wall clock for each: machine-dependent

Seeds change TrainConfig.seed only (initial weights, data order, dropout). Each (variant,
seed) is an ordinary run directory, OUT/VARIANT/seedK, made by recipe.train_run; a second
call with the same settings skips runs that have used their budget and resumes the others.
A run's spread is the range (min to max) of final validation bits per byte over seeds; a
difference to the base no larger than the larger of the two ranges is "no clear difference".
A run that diverges is recorded as such (OUT/VARIANT/seedK/diverged.json) and the others go
on. A variant whose spec is another's (`--vary positional=sinusoidal` on a sinusoidal base)
is trained once, under the first name, and listed as the same.

Runs go one at a time in this process (jobs=1), or `jobs` at once in worker processes of
one thread each: on a CPU, small models use a core each better than they share two. Under
torchrun, one at a time, each a data-parallel run over all the processes (a budget's step is
then the global batch).

Above recipe and train in the import graph: nothing below imports this module. Its parts:
ablation_variants.py (--vary, grid files, their checks), ablation_runs.py (training the runs,
in this process or in workers) and ablation_table.py (the table, its files and its plot).
"""

from __future__ import annotations

import json
import math
import os
import sys
from collections.abc import Callable, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

from basegpt.ablation_runs import default_jobs, train_in_workers, train_one
from basegpt.ablation_table import BUDGETS, CompareTable, VariantResult, write_outputs
from basegpt.ablation_variants import (BASE, FIXED_TRAIN, MODEL_FIELDS, TRAIN_FIELDS,
                                       Variant, check_variants, load_grid, vary,
                                       variant_spec)
from basegpt.config import ModelConfig, TrainConfig
from basegpt.progress import progress_bar
from basegpt.recipe import (check_spec, get_shards, get_tokenizer, merge_specs,
                            prepared_input, read_spec, resolve_spec)
from basegpt.tokenizer import Tokenizer

__all__ = ["BASE", "DEFAULT_BUDGET", "FIXED_TRAIN", "MATCH_TOLERANCE", "MODEL_FIELDS",
           "TRAIN_FIELDS", "Variant", "budget_settings", "check_variants", "compare",
           "default_jobs", "flops_per_token", "load_grid", "match_n_ff", "tokens_per_step",
           "variant_spec", "vary"]

DEFAULT_BUDGET = ("tokens", 1_048_576)
MATCH_TOLERANCE = 0.02           # --match-params: within 2% of the base's parameters


# ------------------------------------------------------------------------ budgets

def flops_per_token(config: ModelConfig) -> int:
    """B2lM(config).flops_per_token(), from the config alone (no model is built): 6 x the
    parameters a token's matmuls use, plus attention's 6 * H * (D + Dv) * T per block."""
    from basegpt.model.memory import parameter_count
    C, V, T = config.n_embed, config.vocab_size, config.n_context
    n = parameter_count(config) - V * C                        # no lookup table...
    if config.positional == "learned":
        n -= T * C
    if config.tie_weights:
        n += V * C                                             # ...but the head's matmul runs
    attn = sum(6 * b.n_head * (b.n_k + b.n_v) * T for b in config.block_configs)
    return 6 * n + attn


def tokens_per_step(model: ModelConfig, train: TrainConfig, world: int = 1) -> int:
    """The tokens of one optimizer step over all `world` processes: batch_tokens (a global
    batch), or batch x context on each process."""
    return train.batch_tokens or train.batch_size * model.n_context * world


def budget_settings(budget: tuple[str, float], model: ModelConfig,
                    train: TrainConfig, world: int = 1) -> dict[str, Any]:
    """The train settings that spend `budget` ("tokens" | "flops" | "minutes", amount):
    {"max_steps": n, "epochs": None, "max_minutes": None} or the minutes alone. Under
    torchrun (`world` processes) a step is the global batch."""
    kind, amount = budget
    if kind == "minutes":
        return {"max_steps": None, "epochs": None, "max_minutes": amount}
    per_step = tokens_per_step(model, train, world)
    cost = per_step * (flops_per_token(model) if kind == "flops" else 1)
    steps = int(amount // cost)
    if steps < 1:
        raise ValueError(f"a budget of {amount:g} {BUDGETS[kind]} is less than one step "
                         f"({cost:,} {kind} with batch {per_step:,} tokens); raise it")
    return {"max_steps": steps, "epochs": None, "max_minutes": None}


def _check_budget(budget: tuple[str, float]) -> tuple[str, float]:
    if not (isinstance(budget, tuple) and len(budget) == 2 and budget[0] in BUDGETS):
        raise ValueError(f"budget={budget!r}: give (KIND, AMOUNT), KIND one of "
                         f"{', '.join(BUDGETS)}, e.g. ('tokens', 1_000_000)")
    kind, amount = budget
    if isinstance(amount, bool) or not isinstance(amount, (int, float)) or not (
            math.isfinite(amount) and amount > 0):
        raise ValueError(f"budget {kind}={amount!r}: must be a number > 0")
    return kind, amount


def match_n_ff(base: ModelConfig, model: ModelConfig, name: str) -> ModelConfig:
    """`model` with the n_ff that brings its parameter count within MATCH_TOLERANCE of
    `base`'s (the count is linear in n_ff, so one division finds it); a ValueError naming
    the variant where no n_ff can."""
    from basegpt.model.memory import parameter_count
    target = parameter_count(base)
    at0 = parameter_count(model.replace(n_ff=1))
    slope = parameter_count(model.replace(n_ff=2)) - at0
    if slope == 0:
        raise ValueError(f"variant {name!r}: every block sets its own n_ff, so --match-params "
                         "(which scales the model-wide n_ff) cannot change its size")
    n_ff = max(1, round(1 + (target - at0) / slope))
    matched = model.replace(n_ff=n_ff)
    if abs(parameter_count(matched) - target) > MATCH_TOLERANCE * target:
        raise ValueError(f"variant {name!r}: no n_ff brings its {parameter_count(model):,} "
                         f"parameters within {MATCH_TOLERANCE:.0%} of the base's {target:,} "
                         f"(n_ff={n_ff} gives {parameter_count(matched):,}); change its width "
                         "instead, or drop --match-params")
    return matched


# ------------------------------------------------------------------------ the comparison

def compare(variants: Sequence[Variant] | dict[str, dict[str, Any]], *,
            spec: dict[str, Any] | None = None, preset: str | None = None,
            base: str | None = None, seeds: int = 1,
            budget: tuple[str, float] = DEFAULT_BUDGET,
            out: str | os.PathLike = "runs/compare", match_params: bool = False,
            jobs: int | None = None, progress: bool = True, command: str | None = None,
            log: Callable[[str], None] | None = None) -> CompareTable:
    """Train each variant `seeds` times under `budget` and tabulate them.

    Args:
        variants: Variant objects (see `vary`, `load_grid`) or {name: overrides}.
        spec: the base spec's settings ({"model": ..., "train": ..., "data": ...}) over
            `preset` (default laptop), as `basegpt train` merges them.
        base: the variant that is the base; None adds Variant("base"), the spec itself.
        seeds: runs per variant, with TrainConfig.seed = the spec's seed + 0..seeds-1.
        budget: ("tokens", N), ("flops", F) or ("minutes", M), the same for every run.
        out: OUT/VARIANT/seedK run directories, OUT/tokenizer.json, compare.json/.md/.png.
        match_params: scale each variant's n_ff to the base's parameter count (within 2%).
        jobs: runs at once. 1: one after another in this process, with its threads. N > 1:
            N worker processes of one thread each (the numbers then equal one-thread runs').
            None: one per CPU core the process may use when training on the CPU, else 1.
        command: the command line to record in compare.json and compare.md.

    Every variant is checked before anything is trained. A second call with the same
    settings and `out` skips finished (or diverged) runs and resumes unfinished ones; a run
    in `out` made with other settings is a ValueError.
    """
    from tqdm.auto import tqdm
    from basegpt import distributed
    _check_counts(seeds, jobs)
    # Under torchrun every process runs this function: each run is a data-parallel run over
    # all of them (train_run's), process 0 alone writes and reports, and a barrier after
    # each run lets every process see the same folders before deciding what to do next.
    dist = distributed.setup()
    progress = progress and dist.is_main
    if not dist.is_main:
        log = lambda m: None                                                  # noqa: E731
    elif log is None:
        log = lambda m: tqdm.write(m, file=sys.stderr) if progress else None  # noqa: E731
    budget = _check_budget(budget)
    if isinstance(variants, dict):
        variants = [Variant(name, dict(o)) for name, o in variants.items()]
    base_spec = _absolute_inputs(resolve_spec(preset, None, spec or {}))
    ordered = check_variants(base_spec, list(variants), base)
    out = Path(out)
    if jobs is None:
        jobs = default_jobs(check_spec(base_spec)[1]) if dist.world == 1 else 1
    base_spec, tokenizer = _shared_data(base_spec, out, dist, progress, log)
    plans = _plan(base_spec, ordered, budget, len(tokenizer), match_params, seeds, out,
                  dist.world)
    _check_plans(plans, log)                                             # before training
    results = [VariantResult(p["variant"].name, p["variant"].overrides, p["params"],
                             p["flops_per_token"], p["max_steps"], matched=p["matched"],
                             aliases=p["aliases"]) for p in plans]
    todo = [(i, run_dir, run_spec) for i, plan in enumerate(plans)
            for run_dir, run_spec in plan["runs"]]
    numbers = _train_runs(todo, [r.name for r in results], jobs, dist, progress, log)
    for i, run_dir, _ in todo:                                          # in plan order
        results[i].runs.append(numbers[run_dir])
    table = CompareTable(results, budget, seeds, match_params, command, out)
    if dist.is_main:
        write_outputs(table, out)
    return table


def _train_runs(todo: list[tuple[int, Path, dict[str, Any]]], names: list[str], jobs: int,
                dist: Any, progress: bool, log: Callable[[str], None]
                ) -> dict[Path, dict[str, Any]]:
    """Train (or resume, or keep) every run of `todo` ((variant index, run dir, spec)), one
    after another here or `jobs` at once in workers, under one bar; each run's numbers by
    its folder, each logged as it finishes."""
    numbers: dict[Path, dict[str, Any]] = {}

    def finished(i: int, run_dir: Path, run: dict[str, Any]) -> None:
        numbers[run_dir] = run
        if run.get("diverged"):
            log(f"{names[i]} seed {run['seed']}: diverged at step {run['steps']:,}, recorded; "
                f"going on ({run['diverged'].splitlines()[0]})")
        else:
            log(f"{names[i]} seed {run['seed']}: val bits/byte {run['val_bpb']:.4f} after "
                f"{run['tokens']:,} tokens -> {run_dir}")
        bar.update(1)

    bar = progress_bar(len(todo), "compare", "run", show=progress, position=0)
    with bar:
        if jobs == 1 or len(todo) == 1:
            for i, run_dir, run_spec in todo:
                finished(i, run_dir, train_one(run_dir, run_spec, progress, log, dist=dist))
        else:
            train_in_workers(todo, min(jobs, len(todo)), finished, log, progress)
    return numbers


def _check_counts(seeds: int, jobs: int | None) -> None:
    """compare's seeds and jobs: ValueErrors for what cannot be, before any work."""
    if isinstance(seeds, bool) or not isinstance(seeds, int) or seeds < 1:
        raise ValueError(f"seeds={seeds!r}: must be an integer >= 1")
    if jobs is not None and (isinstance(jobs, bool) or not isinstance(jobs, int) or jobs < 1):
        raise ValueError(f"jobs={jobs!r}: must be an integer >= 1 (or unset: one per CPU core)")
    if int(os.environ.get("WORLD_SIZE", "1")) > 1 and jobs not in (None, 1):
        raise ValueError(f"jobs={jobs}: under torchrun every run trains on all the processes, "
                         "one run at a time; drop --jobs")


def _shared_data(spec: dict[str, Any], out: Path, dist: Any, progress: bool,
                 log: Callable[[str], None]) -> tuple[dict[str, Any], Tokenizer]:
    """The tokenizer (OUT/tokenizer.json) and token shards every run shares, made once (by
    process 0 first under torchrun, the others then finding them), and the spec that names
    that tokenizer."""
    if not dist.is_main:
        dist.barrier()                              # process 0 trains and tokenizes first
    tokenizer = _shared_tokenizer(spec, out, progress, log)
    if prepared_input(check_spec(spec)[2]) is None:
        spec = merge_specs(spec, {"data": {"tokenizer": str(out / "tokenizer.json")}})
    get_shards(check_spec(spec)[2], tokenizer, progress, log)
    if dist.is_main:
        dist.barrier()
    return spec, tokenizer


def _check_plans(plans: list[dict[str, Any]], log: Callable[[str], None]) -> None:
    """Say which variants are another's under a second name, and refuse a run folder made
    with other settings, before anything trains."""
    for plan in plans:
        for name in plan["aliases"]:
            log(f"variant {name!r} has the same settings as {plan['variant'].name!r}: "
                "trained once, listed as the same")
        for run_dir, run_spec in plan["runs"]:
            _check_same_settings(run_dir, run_spec)


def _absolute_inputs(spec: dict[str, Any]) -> dict[str, Any]:
    """The spec with its input files as absolute paths, so the runs' saved settings, and a
    resume of them, do not depend on the folder compare was started from."""
    inputs = spec["data"].get("inputs")
    if not inputs:
        return spec
    return merge_specs(spec, {"data": {"inputs": [os.path.abspath(p) for p in inputs]}})


def _shared_tokenizer(spec: dict[str, Any], out: Path, progress: bool,
                      log: Callable[[str], None]) -> Tokenizer:
    """OUT/tokenizer.json, trained (or taken from the cache, the spec or a prepared folder)
    and saved there the first time."""
    path = out / "tokenizer.json"
    if path.is_file():
        return Tokenizer.load(path)
    tokenizer = get_tokenizer(check_spec(spec)[2], progress, log)
    out.mkdir(parents=True, exist_ok=True)
    tokenizer.save(path)
    return tokenizer


def _plan(base_spec: dict[str, Any], variants: list[Variant], budget: tuple[str, float],
          vocab_size: int, match_params: bool, seeds: int, out: Path,
          world: int = 1) -> list[dict[str, Any]]:
    """Per variant: its size, FLOPs per token, budget in steps and the (run_dir, spec) of
    each seed, all decided before the first run trains. A variant whose spec equals an
    earlier one's joins that one's `aliases` instead of getting runs of its own."""
    from basegpt.model.memory import parameter_count
    plans: list[dict[str, Any]] = []
    by_spec: dict[str, dict[str, Any]] = {}
    base_model = None
    for v in variants:
        spec = variant_spec(base_spec, v)
        model, train, _ = check_spec(spec)
        model = model.replace(vocab_size=vocab_size)
        matched = {}
        if base_model is None:
            base_model = model
        elif match_params:
            if "n_ff" in v.overrides:
                raise ValueError(f"variant {v.name!r} sets n_ff, which --match-params scales; "
                                 "drop one of them")
            model = match_n_ff(base_model, model, v.name)
            if model.n_ff != check_spec(spec)[0].n_ff:
                matched = {"n_ff": model.n_ff}
            spec = merge_specs(spec, {"model": {"n_ff": model.n_ff}})
        key = json.dumps(_canonical(spec), sort_keys=True)
        if key in by_spec:
            by_spec[key]["aliases"].append(v.name)
            continue
        settings = budget_settings(budget, model, train, world)
        spec = merge_specs(spec, {"train": settings})
        runs = []
        for k in range(seeds):
            run_spec = merge_specs(spec, {"train": {"seed": train.seed + k}})
            runs.append((out / v.name / f"seed{k}", run_spec))
        plan = {"variant": v, "params": parameter_count(model), "matched": matched,
                "aliases": [], "flops_per_token": flops_per_token(model),
                "max_steps": settings["max_steps"], "runs": runs}
        plans.append(plan)
        by_spec[key] = plan
    return plans


def _canonical(spec: dict[str, Any]) -> dict[str, Any]:
    """What a spec trains, with the defaults filled in: two specs that set the same fields
    differently (one explicitly, one by default) compare equal."""
    model, train, data = check_spec(spec)
    return json.loads(json.dumps({"model": model.to_dict(), "train": train.to_dict(),
                                  "data": asdict(data)}, default=str))


def _check_same_settings(run_dir: Path, spec: dict[str, Any]) -> None:
    """A run already in `run_dir` must have been made with `spec`: resuming it, or taking
    its numbers, under other settings would compare runs that did not get them. The
    tokenizer is the same when the run's copy of it is the same file, wherever OUT is."""
    if not (run_dir / "config.json").is_file():
        return
    saved = read_spec(run_dir)
    wanted = json.loads(json.dumps(spec))
    changed = sorted(f"{section}.{key}" for section in wanted
                     for key in set(wanted[section]) | set(saved.get(section, {}))
                     if wanted[section].get(key) != saved.get(section, {}).get(key))
    tokenizer = wanted["data"].get("tokenizer")
    if "data.tokenizer" in changed and tokenizer and _same_file(
            run_dir / "tokenizer.json", Path(tokenizer)):
        changed.remove("data.tokenizer")
    if changed:
        raise ValueError(f"{run_dir} holds a run made with other settings ({', '.join(changed)}); "
                         "give this comparison another --out, or delete that folder")


def _same_file(a: Path, b: Path) -> bool:
    """Whether two files hold the same bytes (False if either is missing)."""
    try:
        return a.read_bytes() == b.read_bytes()
    except OSError:
        return False


