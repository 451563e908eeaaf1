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

Above recipe and train in the import graph: nothing below imports this module. The table,
its files and its plot are ablation_table.py's.
"""

from __future__ import annotations

import difflib
import itertools
import json
import math
import multiprocessing
import os
import re
import sys
from collections.abc import Callable, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from basegpt._io import atomic_write_text
from basegpt.ablation_table import (BUDGETS, CompareTable, VariantResult, run_numbers,
                                    write_outputs)
from basegpt.config import ModelConfig, TrainConfig
from basegpt.progress import progress_bar
from basegpt.recipe import (check_spec, get_shards, get_tokenizer, load_config_file,
                            merge_specs, prepared_input, read_spec, resolve_spec,
                            saved_progress, train_run)
from basegpt.tokenizer import Tokenizer

DEFAULT_BUDGET = ("tokens", 1_048_576)
DIVERGED = "diverged.json"       # in a run directory: the run diverged, do not retry it
BASE = "base"
MATCH_TOLERANCE = 0.02           # --match-params: within 2% of the base's parameters

MODEL_FIELDS = tuple(f.name for f in fields(ModelConfig) if f.name != "vocab_size")
FIXED_TRAIN = {"seed": "seeds are the compare's own (seeds=N: 0..N-1)",
               "max_steps": "the budget is the compare's own (--budget-tokens/-flops/-minutes)",
               "epochs": "the budget is the compare's own (--budget-tokens/-flops/-minutes)",
               "max_minutes": "the budget is the compare's own (--budget-minutes)"}
TRAIN_FIELDS = tuple(f.name for f in fields(TrainConfig) if f.name not in FIXED_TRAIN)
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._=,+-]*$")   # a variant's folder name


@dataclass(frozen=True)
class Variant:
    """One arm of a comparison: a name (its folder under OUT) and overrides of the base
    spec, e.g. Variant("rope", {"positional": "rope", "lr": 3e-3})."""

    name: str
    overrides: dict[str, Any] = field(default_factory=dict)


# ------------------------------------------------------------------------ variants

def vary(items: Sequence[str]) -> list[Variant]:
    """The cartesian product of `--vary FIELD=a,b,c` flags, one Variant each, named after
    its choices: vary(["norm=layernorm,rmsnorm", "lr=1e-3"]) -> "norm=layernorm,lr=1e-3" and
    "norm=rmsnorm,lr=1e-3". Values read as JSON where they parse (3, 1e-3, true, null),
    else as text ("rope"); "none" is None unless the field has a choice "none"."""
    axes: list[list[tuple[str, Any, str]]] = []
    seen: set[str] = set()
    for item in items:
        name, eq, values = item.partition("=")
        name = name.strip()
        if not eq or not name or not values.strip():
            raise ValueError(f"--vary {item!r}: write FIELD=VALUE[,VALUE...], e.g. "
                             "--vary positional=sinusoidal,rope")
        if name in seen:
            raise ValueError(f"--vary names {name!r} twice; give all its values in one flag, "
                             f"e.g. --vary {name}=a,b")
        seen.add(name)
        _section(name, f"--vary {item}")
        axes.append([(name, _parse_value(name, v.strip()), v.strip())
                     for v in values.split(",")])
    return [Variant(",".join(f"{n}={text}" for n, _, text in combo),
                    {n: value for n, value, _ in combo})
            for combo in itertools.product(*axes)]


def _parse_value(name: str, text: str) -> Any:
    """A --vary value: a choice of the field's Literal as it is, else JSON, else text."""
    if text in _choices(name):
        return text
    if text.lower() == "none":
        return None
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def _choices(name: str) -> set[str]:
    """The text choices of a field's Literal type (`positional` -> {"none", "rope", ...})."""
    from typing import Literal, get_args, get_origin, get_type_hints
    for cls in (ModelConfig, TrainConfig):
        hint = get_type_hints(cls).get(name)
        if hint is not None:
            members = (hint, *get_args(hint))            # Literal[...] or Literal[...] | None
            return {str(c) for m in members if get_origin(m) is Literal for c in get_args(m)}
    return set()


def load_grid(path: str | os.PathLike) -> tuple[list[Variant], str | None]:
    """Named variants from a TOML (or JSON) file, and the name of the base if it names one:

        base = "post"                  # optional; else a variant "base" with no overrides
        [variants.post]
        norm_position = "post"
        [variants.pre-rope]
        norm_position = "pre"
        positional = "rope"
        blocks = [{}, {n_head = 2}]    # layer-wise overrides, one table per block
    """
    grid = load_config_file(path) if Path(path).suffix in (".toml", ".json") else None
    if grid is None:
        raise ValueError(f"{path}: a grid is a .toml or .json file")
    unknown = set(grid) - {"base", "variants"}
    if unknown:
        raise ValueError(f"{path}: unknown key(s) {', '.join(sorted(unknown))}; a grid has "
                         "`base = \"NAME\"` (optional) and one [variants.NAME] table each")
    table = grid.get("variants")
    if not isinstance(table, dict) or not table:
        raise ValueError(f"{path}: no variants; add one [variants.NAME] table of overrides "
                         "per variant")
    variants = []
    for name, overrides in table.items():
        if not isinstance(overrides, dict):
            raise ValueError(f"{path}: variants.{name} must be a table of overrides, e.g. "
                             f"[variants.{name}] positional = \"rope\"")
        variants.append(Variant(name, dict(overrides)))
    base = grid.get("base")
    if base is not None and base not in table:
        raise ValueError(f"{path}: base = {base!r} names no variant (variants: "
                         f"{', '.join(table)})")
    return variants, base


def _section(name: str, where: str) -> str:
    """"model" or "train" for a field a variant may set; a ValueError naming it otherwise."""
    if name in MODEL_FIELDS:
        return "model"
    if name in TRAIN_FIELDS:
        return "train"
    if name in FIXED_TRAIN:
        raise ValueError(f"{where}: {name} cannot vary: {FIXED_TRAIN[name]}")
    near = difflib.get_close_matches(name, MODEL_FIELDS + TRAIN_FIELDS, n=1)
    raise ValueError(f"{where}: unknown field {name!r}"
                     + (f"; did you mean {near[0]!r}?" if near else "")
                     + " (a variant sets ModelConfig or TrainConfig fields)")


def variant_spec(base: dict[str, Any], variant: Variant) -> dict[str, Any]:
    """The base spec with the variant's overrides, each in its section, checked by the
    configs themselves: a bad field or value is a ValueError naming the variant."""
    where = f"variant {variant.name!r}"
    split: dict[str, dict[str, Any]] = {"model": {}, "train": {}}
    for name, value in variant.overrides.items():
        split[_section(name, where)][name] = value
    spec = merge_specs(base, split)
    try:
        check_spec(spec)
    except (ValueError, TypeError) as error:
        raise ValueError(f"{where}: {error}") from None
    return spec


def check_variants(base: dict[str, Any], variants: Sequence[Variant],
                   base_name: str | None = None) -> list[Variant]:
    """The variants to run, the base first: `base_name`'s, else a Variant("base") with no
    overrides. Duplicate or unusable names and bad overrides are ValueErrors."""
    if not variants and base_name is None:
        raise ValueError("nothing to compare: give variants (--vary FIELD=a,b or --grid FILE)")
    names: set[str] = set()
    for v in variants:
        if v.name in names:
            raise ValueError(f"variant {v.name!r} is named twice; give each variant its own "
                             "name (and each --vary value once)")
        if not _NAME.match(v.name):
            raise ValueError(f"variant {v.name!r}: a name becomes a folder; use letters, "
                             "digits and . _ = , + -")
        names.add(v.name)
        variant_spec(base, v)
    if base_name is None:
        if BASE in names:
            raise ValueError(f"variant {BASE!r} is the base spec's own name; rename it, or "
                             f"name it the base (grid: base = \"{BASE}\")")
        return [Variant(BASE), *variants]
    first = next(v for v in variants if v.name == base_name)
    return [first, *(v for v in variants if v.name != base_name)]


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
    if isinstance(seeds, bool) or not isinstance(seeds, int) or seeds < 1:
        raise ValueError(f"seeds={seeds!r}: must be an integer >= 1")
    if jobs is not None and (isinstance(jobs, bool) or not isinstance(jobs, int) or jobs < 1):
        raise ValueError(f"jobs={jobs!r}: must be an integer >= 1 (or unset: one per CPU core)")
    if int(os.environ.get("WORLD_SIZE", "1")) > 1 and jobs not in (None, 1):
        raise ValueError(f"jobs={jobs}: under torchrun every run trains on all the processes, "
                         "one run at a time; drop --jobs")
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
    if not dist.is_main:
        dist.barrier()                              # process 0 trains and tokenizes first
    tokenizer = _shared_tokenizer(base_spec, out, progress, log)
    if prepared_input(check_spec(base_spec)[2]) is None:
        base_spec = merge_specs(base_spec, {"data": {"tokenizer": str(out / "tokenizer.json")}})
    get_shards(check_spec(base_spec)[2], tokenizer, progress, log)      # once, for all
    if dist.is_main:
        dist.barrier()
    plans = _plan(base_spec, ordered, budget, len(tokenizer), match_params, seeds, out,
                  dist.world)
    for plan in plans:                                                   # before training
        for name in plan["aliases"]:
            log(f"variant {name!r} has the same settings as {plan['variant'].name!r}: "
                "trained once, listed as the same")
        for run_dir, run_spec in plan["runs"]:
            _check_same_settings(run_dir, run_spec)
    results = [VariantResult(p["variant"].name, p["variant"].overrides, p["params"],
                             p["flops_per_token"], p["max_steps"], matched=p["matched"],
                             aliases=p["aliases"]) for p in plans]
    todo = [(i, run_dir, run_spec) for i, plan in enumerate(plans)
            for run_dir, run_spec in plan["runs"]]
    numbers: dict[Path, dict[str, Any]] = {}

    def finished(i: int, run_dir: Path, run: dict[str, Any]) -> None:
        numbers[run_dir] = run
        name = results[i].name
        if run.get("diverged"):
            log(f"{name} seed {run['seed']}: diverged at step {run['steps']:,}, recorded; "
                f"going on ({run['diverged'].splitlines()[0]})")
        else:
            log(f"{name} seed {run['seed']}: val bits/byte {run['val_bpb']:.4f} after "
                f"{run['tokens']:,} tokens -> {run_dir}")
        bar.update(1)

    bar = progress_bar(len(todo), "compare", "run", show=progress, position=0)
    with bar:
        if jobs == 1 or len(todo) == 1:
            for i, run_dir, run_spec in todo:
                finished(i, run_dir, _train_one(run_dir, run_spec, progress, log, dist=dist))
        else:
            _train_in_workers(todo, min(jobs, len(todo)), finished, log, progress)
    for i, run_dir, _ in todo:                                          # in plan order
        results[i].runs.append(numbers[run_dir])
    table = CompareTable(results, budget, seeds, match_params, command, out)
    if dist.is_main:
        write_outputs(table, out)
    return table


def default_jobs(train: TrainConfig) -> int:
    """Runs at once when the caller leaves it to compare: one per CPU core the process may
    use, when the runs train on the CPU; one at a time on an accelerator, which one run
    already fills."""
    from basegpt.devices import pick_device
    if pick_device(train.device).type != "cpu":
        return 1
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (
        os.cpu_count() or 1)


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


def _train_one(run_dir: Path, spec: dict[str, Any], progress: bool,
               log: Callable[[str], None],
               on_step: Callable[[dict[str, Any]], None] | None = None,
               dist: Any = None) -> dict[str, Any]:
    """Train the run, resume it if it stopped before its budget, or leave it if it is done
    (or diverged before); its numbers. Ctrl-C (the run saved) is a KeyboardInterrupt.
    `on_step` is fit's: called with each step's metrics record. Under torchrun (`dist`, a
    distributed.Dist) every process trains the run and waits for the others after it."""
    from basegpt.distributed import Dist
    dist = dist or Dist()
    from basegpt.optim import stop_reason
    from basegpt.train import TrainingDiverged
    seed = {"seed": spec["train"]["seed"], "run_dir": str(run_dir)}
    marker = run_dir / DIVERGED
    if marker.is_file():
        log(f"{run_dir}: diverged before, kept as diverged")
        return {**seed, **run_numbers(run_dir, json.loads(marker.read_text())["error"])}
    try:
        if not (run_dir / "config.json").is_file():
            result, _, _ = _after_all(dist, train_run, spec, run_dir, progress=progress,
                                      log=log, on_step=on_step)
        else:
            done = saved_progress(run_dir)
            train = check_spec(spec)[1]
            if done is not None and stop_reason(train, done["step"], None, done["seconds"]):
                log(f"{run_dir}: finished before, kept")
                return {**seed, **run_numbers(run_dir)}
            log(f"{run_dir}: unfinished, resuming")
            result, _, _ = _after_all(dist, train_run, {"train": {}}, run_dir, resume=True,
                                      progress=progress, log=log, on_step=on_step)
    except TrainingDiverged as error:
        # Recorded rather than raised: one unstable variant (post-LN at a high learning
        # rate, say) is a result of the comparison, not a reason to stop it.
        if dist.is_main:
            atomic_write_text(marker, json.dumps({"error": str(error)}) + "\n")
        dist.barrier()
        return {**seed, **run_numbers(run_dir, str(error))}
    if result.stopped_by == "signal":
        # fit saved the run and returned on Ctrl-C / SIGTERM; the comparison stops too
        # (the next call resumes it), rather than going on to the next run.
        raise KeyboardInterrupt
    return {**seed, **run_numbers(run_dir)}


# ------------------------------------------------------------------------ worker processes

REPORT_EVERY = 0.5
"""Seconds between two progress reports of a run in a worker."""

_reports: Any = None        # in a worker: the queue its runs report progress on, or None


def _after_all(dist: Any, train: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """train(*args, **kwargs), then a wait until every process has finished it (and so
    process 0 has written the run) before any reads it; a TrainingDiverged, which every
    process raises at the same step, passes through to the caller's own wait."""
    result = train(*args, **kwargs)
    dist.barrier()
    return result


def _start_worker(reports: Any) -> None:
    """A worker process trains with one thread, and leaves Ctrl-C to fit: fit saves the run
    and returns; between runs the worker ignores it, and the parent stops handing out runs.
    Progress goes to `reports` (a queue), where the parent draws each run's bar."""
    import signal
    import torch
    global _reports
    _reports = reports
    torch.set_num_threads(1)
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def _train_in_worker(run_dir: Path, spec: dict[str, Any]) -> dict[str, Any]:
    """_train_one in a worker, quiet but for its reports; {"interrupted": True} when Ctrl-C
    stopped the run."""
    on_step = _Reporter(str(run_dir)) if _reports is not None else None
    try:
        return _train_one(run_dir, spec, progress=False, log=lambda m: None, on_step=on_step)
    except KeyboardInterrupt:
        return {"interrupted": True}


class _Reporter:
    """fit's on_step in a worker: (run_dir, step, seconds) onto the queue, at most every
    REPORT_EVERY seconds."""

    def __init__(self, run_dir: str) -> None:
        self.run_dir, self.last = run_dir, -math.inf

    def __call__(self, record: dict[str, Any]) -> None:
        import time
        now = time.monotonic()
        if now - self.last >= REPORT_EVERY:
            self.last = now
            _reports.put((self.run_dir, record["step"], record["seconds"]))


class _RunBars:
    """The bars of the runs that workers are training, under the overall bar: one per run,
    opened at its first report in the first free row, closed when it ends."""

    def __init__(self, todo: list[tuple[int, Path, dict[str, Any]]], rows: int) -> None:
        self.totals = {str(run_dir): _bar_total(spec) for _, run_dir, spec in todo}
        self.free = list(range(1, rows + 1))
        self.bars: dict[str, Any] = {}

    def report(self, run_dir: str, step: int, seconds: float) -> None:
        total, unit = self.totals[run_dir]
        bar = self.bars.get(run_dir)
        if bar is None:
            name = f"{Path(run_dir).parent.name}/{Path(run_dir).name}"
            bar = self.bars[run_dir] = progress_bar(total, name, unit, leave=False,
                                                    position=self.free.pop(0))
        bar.update((step if unit == "step" else round(seconds)) - bar.n)

    def close(self, run_dir: str) -> None:
        bar = self.bars.pop(run_dir, None)
        if bar is not None:
            bar.update(bar.total - bar.n)
            self.free.insert(0, bar.pos if bar.pos > 0 else -bar.pos)
            self.free.sort()
            bar.close()

    def close_all(self) -> None:
        for run_dir in list(self.bars):
            self.close(run_dir)


def _bar_total(spec: dict[str, Any]) -> tuple[float, str]:
    """A run bar's length and unit: its steps, or the seconds of a time budget."""
    train = spec["train"]
    if train.get("max_steps"):
        return train["max_steps"], "step"
    return train["max_minutes"] * 60, "s"


def _train_in_workers(todo: list[tuple[int, Path, dict[str, Any]]], jobs: int,
                      finished: Callable[[int, Path, dict[str, Any]], None],
                      log: Callable[[str], None], progress: bool) -> None:
    """Every run of `todo` in `jobs` worker processes, `finished` called for each in the
    order they end, and with `progress` a bar per running run. Ctrl-C: the running runs
    save and stop, nothing new starts, and a KeyboardInterrupt follows (a second call
    resumes)."""
    import queue
    # spawn, not fork: a forked copy of a process that has run torch's thread pools can hang.
    context = multiprocessing.get_context("spawn")
    reports = context.Queue() if progress else None
    bars = _RunBars(todo, jobs) if progress else None
    log(f"training {jobs} runs at once, one thread each")
    interrupted = False
    with ProcessPoolExecutor(jobs, mp_context=context, initializer=_start_worker,
                             initargs=(reports,)) as pool:
        running: dict[Future, tuple[int, Path]] = {
            pool.submit(_train_in_worker, run_dir, spec): (i, run_dir)
            for i, run_dir, spec in todo}
        try:
            while running:
                done, _ = wait(running, timeout=REPORT_EVERY if bars else None,
                               return_when=FIRST_COMPLETED)
                while bars is not None:
                    try:
                        bars.report(*reports.get_nowait())
                    except queue.Empty:
                        break
                for future in done:
                    i, run_dir = running.pop(future)
                    run = future.result()
                    if bars is not None:
                        bars.close(str(run_dir))
                    if run.get("interrupted"):
                        interrupted = True
                    else:
                        finished(i, run_dir, run)
                if interrupted:
                    break
        except KeyboardInterrupt:
            interrupted = True
        finally:
            if interrupted or running:
                for future in running:
                    future.cancel()              # not started: stays unstarted
                pool.shutdown(wait=True)         # started: fit saves them and returns
            if bars is not None:
                bars.close_all()
    if interrupted:
        raise KeyboardInterrupt
