"""A whole training run from one spec: tokenizer, data, model, fit, run directory.

`basegpt train` is this module behind argument parsing. A spec has three sections, merged
from a named preset (basegpt/presets/*.json), an optional config file (JSON or TOML) and
command-line flags, later ones winning:

    {"model": {ModelConfig fields but vocab_size},
     "train": {TrainConfig fields},
     "data":  {DataConfig fields}}

Steps of `train_run(spec)`:
1. the tokenizer: the one named by data.tokenizer (with init_from: that run's), or trained
   on the data and cached under the user cache dir by (corpus, vocab size, pattern), so a
   second run skips it;
2. the data: tokenized into shards (`basegpt.data.prepare`) and cached by (corpus,
   tokenizer hash, validation fraction);
   a folder made by `basegpt prepare`, given as the only input, is both: its shards are
   trained on as they are, with the tokenizer.json beside them (`prepared_input`);
3. the model from the model section, vocab_size = len(tokenizer) (with init_from: the
   model of that run, starting from its weights, for fine-tuning);
4. fit() into the run directory, evaluating on the held-out split.
"""

from __future__ import annotations

import contextlib
import difflib
import hashlib
import json
import math
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

from basegpt._io import check_writable
from basegpt.config import DataConfig, check_keys
from basegpt.corpus import expand_paths
from basegpt.tokenizer import Tokenizer

if TYPE_CHECKING:
    from basegpt.config import TrainConfig
    from basegpt.model import B2lM
    from basegpt.train import TrainResult

PRESETS_DIR = Path(__file__).parent / "presets"
DEFAULT_PRESET = "laptop"
SECTIONS = ("model", "train", "data")


# ------------------------------------------------------------------------ specs

def preset_names() -> list[str]:
    """The presets shipped with basegpt."""
    return sorted(p.stem for p in PRESETS_DIR.glob("*.json"))


def load_preset(name: str) -> dict[str, Any]:
    """The spec of a shipped preset (basegpt/presets/NAME.json); an unknown name is a
    ValueError suggesting the nearest and listing them all."""
    path = PRESETS_DIR / f"{name}.json"
    if not path.is_file():
        near = difflib.get_close_matches(name, preset_names(), n=1)
        raise ValueError(f"unknown preset {name!r}" + (f"; did you mean {near[0]!r}?" if near else "")
                         + f" (presets: {', '.join(preset_names())})")
    return json.loads(path.read_text(encoding="utf-8"))


def load_config_file(path: str | os.PathLike) -> dict[str, Any]:
    """A spec from a .json or .toml file: a table of sections (model, train, data). Errors
    name the file: missing, not UTF-8, not valid JSON/TOML, or not a table."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such config file")
    kind = "TOML" if path.suffix == ".toml" else "JSON"
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as error:
        raise ValueError(f"{path} is not UTF-8 text (byte {error.start}: {error.reason}); "
                         f"save the {kind} config as UTF-8") from None
    try:
        if kind == "TOML":
            try:
                import tomllib
            except ImportError:                  # Python 3.10
                raise ValueError(f"{path}: TOML config files need Python 3.11+; use JSON") from None
            spec = tomllib.loads(text)
        else:
            spec = json.loads(text)
    except (json.JSONDecodeError, ValueError) as error:
        raise ValueError(f"{path} is not a valid {kind} config ({error})") from None
    if not isinstance(spec, dict):
        raise ValueError(f"{path} holds a {_json_type(spec)}, but a config is an object of "
                         f"sections, e.g. {{\"model\": {{\"n_block\": 2}}, \"train\": "
                         f"{{\"max_steps\": 100}}}}")
    for section, values in spec.items():
        if section in SECTIONS and not isinstance(values, dict):
            raise ValueError(f"{path}: section {section!r} holds a {_json_type(values)}, but "
                             f"it must be an object of settings, e.g. "
                             f"{{\"{section}\": {{...}}}}")
    return spec


def _json_type(value: Any) -> str:
    """The JSON name of a parsed value's type: [1] -> "list", "a" -> "string"."""
    names = {list: "list", str: "string", bool: "boolean", int: "number", float: "number",
             type(None): "null"}
    return names.get(type(value), type(value).__name__)


def merge_specs(*specs: dict[str, Any]) -> dict[str, Any]:
    """Merge specs section by section; later values win. Unknown sections are errors."""
    merged: dict[str, dict[str, Any]] = {s: {} for s in SECTIONS}
    for spec in specs:
        if not isinstance(spec, dict):
            raise ValueError(f"a spec must be a dict of sections ({', '.join(SECTIONS)}), got "
                             f"{type(spec).__name__}")
        for section, values in spec.items():
            if section == "description":
                continue
            if section not in SECTIONS:
                near = difflib.get_close_matches(section, SECTIONS, n=1)
                raise ValueError(f"unknown config section {section!r}"
                                 + (f"; did you mean {near[0]!r}?" if near else "")
                                 + f" (sections: {', '.join(SECTIONS)})")
            if not isinstance(values, dict):
                raise ValueError(f"config section {section!r} must be a table of settings")
            merged[section].update(values)
    return merged


def resolve_spec(preset: str | None = None, config_file: str | os.PathLike | None = None,
                 overrides: dict[str, Any] | None = None, *,
                 init_from: str | os.PathLike | None = None) -> dict[str, Any]:
    """preset (default laptop) < config file < overrides, checked field by field.

    With `init_from` (a run directory to fine-tune, see train_run) the model section is that
    run's model and the tokenizer that run's; the config file and overrides may change only
    the model fields that leave its weights valid (checkpoint.INIT_FIELDS: dropout, kernels),
    and any other model setting that differs is a ValueError naming each one.

    A budget the user sets replaces the preset's: `--max-steps 200` on the laptop preset
    (4 minutes) trains 200 steps, however long they take. Otherwise the preset's time budget
    would stay, and the learning-rate schedule, which follows the clock under a time budget,
    would make two runs with the same seed differ.
    """
    specs = [load_preset(preset or DEFAULT_PRESET)]
    if config_file is not None:
        specs.append(load_config_file(config_file))
    specs.append(overrides or {})
    spec = merge_specs(*specs)
    explicit = merge_specs(*specs[1:])               # what the user set, not the preset
    if explicit["train"].keys() & set(BUDGET_FLAGS):
        for budget in BUDGET_FLAGS:
            spec["train"][budget] = explicit["train"].get(budget)
    if init_from is not None:
        spec["model"] = _init_model(init_from, explicit["model"])
        spec["data"]["tokenizer"] = _init_tokenizer(init_from, explicit["data"].get("tokenizer"))
    _, _, data = check_spec(spec)
    folder = prepared_input(data)
    if folder is not None:
        _check_no_text_settings(folder, explicit["data"])
    return spec


TEXT_SETTINGS = ("source", "max_bytes", "vocab_size", "pattern", "val_fraction")
"""The data settings that say how to read, tokenize and split text: a prepared folder has
had all of that done (`basegpt prepare`), so setting one for it is an error."""


def prepared_input(data: DataConfig) -> Path | None:
    """The folder made by `basegpt prepare` that data.inputs names, or None if it names
    text. Such a folder is trained on as it is: its shards, its tokenizer, its validation
    split. It must be the only input (its shards are tokens, not text to add to)."""
    from basegpt.data.pipeline import is_prepared
    folders = [Path(item) for item in data.inputs if is_prepared(item)]
    if not folders:
        return None
    if len(data.inputs) > 1:
        raise ValueError(f"{folders[0]} is a folder of token shards made by `basegpt prepare`, "
                         "which trains as it is; give it as the only input, or give text files "
                         "and folders only")
    return folders[0]


def _check_no_text_settings(folder: Path, given: dict[str, Any]) -> None:
    """Refuse text settings (TEXT_SETTINGS) set for a prepared folder: they would be ignored."""
    from basegpt.data import load_meta
    for name in TEXT_SETTINGS:
        if name in given:
            meta = load_meta(folder)
            flag = _FLAGS.get(name, "--" + name.replace("_", "-"))
            raise ValueError(f"{folder} is already tokenized ({meta['vocab_size']}-token "
                             f"vocabulary) and split (val_fraction {meta['val_fraction']:g}) "
                             f"by `basegpt prepare`, so data.{name} ({flag}) would change "
                             "nothing; drop it, or run `basegpt prepare` again with the "
                             "setting you want")


_FLAGS = {"source": "--data"}


def _init_model(init_from: str | os.PathLike, changes: dict[str, Any]) -> dict[str, Any]:
    """The model section of a run that starts from `init_from`'s weights: that run's model,
    with `changes` that may touch only checkpoint.INIT_FIELDS."""
    from basegpt.checkpoint import INIT_FIELDS, init_conflicts, read_config
    from basegpt.config import ModelConfig
    source = ModelConfig.from_dict(read_config(init_from)["model"])
    try:
        wanted = source.replace(**changes)
    except TypeError as error:
        raise ValueError(str(error)) from None
    problems = init_conflicts(source, wanted)
    if problems:
        raise ValueError(f"a run started from {init_from}'s weights (--init-from) keeps its "
                         f"model, but these settings change it: {'; '.join(problems)}. Only "
                         f"{', '.join(INIT_FIELDS)} may change; drop the other model "
                         "settings")
    return {k: v for k, v in wanted.to_dict().items() if k != "vocab_size"}


def _init_tokenizer(init_from: str | os.PathLike, given: str | None) -> str:
    """The tokenizer of a run that starts from `init_from`'s weights: that run's own (the
    model's embedding rows are its ids). A different `given` one is a ValueError."""
    from basegpt.checkpoint import TOKENIZER_FILE, read_config
    own = Path(init_from) / TOKENIZER_FILE
    source_hash = read_config(init_from).get("tokenizer_hash")
    if (given is not None and Path(given).resolve() != own.resolve()   # (resolve_spec set it)
            and Tokenizer.load(given).hash != source_hash):
        raise ValueError(f"data.tokenizer {given} is not the tokenizer of {init_from}, whose "
                         "weights the run starts from (--init-from); its ids index the "
                         f"embedding rows, so the run uses {own}: drop --tokenizer")
    return str(own)


def check_spec(spec: dict[str, Any]) -> tuple[Any, Any, DataConfig]:
    """Build the three configs to validate every field; errors name the section and key."""
    from basegpt.config import ModelConfig
    from basegpt.config import TrainConfig
    if "vocab_size" in spec["model"]:
        raise ValueError("model.vocab_size comes from the tokenizer; set data.vocab_size instead")
    check_keys(spec["data"], DataConfig, "data")
    data = DataConfig(**spec["data"])
    try:
        model = ModelConfig.from_dict({**spec["model"], "vocab_size": max(data.vocab_size, 258)})
        train = TrainConfig.from_dict(spec["train"])
    except TypeError as error:
        raise ValueError(str(error)) from None
    return model, train, data


# ------------------------------------------------------------------------ tokenizer and data

def _source_key(data: DataConfig) -> str:
    """A name for the corpus that changes whenever its content may have changed."""
    if data.inputs:
        files = expand_paths(data.inputs)
        h = hashlib.sha256()
        for f in files:
            st = f.stat()
            h.update(f"{f.resolve()}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
        return f"files-{h.hexdigest()[:12]}"
    if data.source == "stdlib":
        return f"stdlib-py{sys.version_info.major}{sys.version_info.minor}-{data.max_bytes}"
    return data.source


def _documents(data: DataConfig) -> tuple[list, list[str]]:
    """What the tokenizer trains on: the files (as Paths) or the named dataset's text."""
    from basegpt.data.pipeline import resolve_documents
    return resolve_documents(list(data.inputs) or None, None if data.inputs else data.source,
                             data.max_bytes, None)


def get_tokenizer(data: DataConfig, progress: bool, log: Callable[[str], None]) -> Tokenizer:
    """The tokenizer named by data.tokenizer, else a prepared folder's (the one its shards
    were made with), else a cached one, else train and cache it."""
    if data.tokenizer is not None:
        return Tokenizer.load(data.tokenizer)
    folder = prepared_input(data)
    if folder is not None:
        log(f"tokenizer: {folder / 'tokenizer.json'} (the one its shards were made with)")
        return Tokenizer.load(folder / "tokenizer.json")
    from basegpt.data.datasets import cache_dir
    pattern_key = hashlib.sha256(data.pattern.encode()).hexdigest()[:8]
    path = cache_dir() / "tokenizers" / f"{_source_key(data)}-v{data.vocab_size}-{pattern_key}.json"
    if path.is_file():
        log(f"tokenizer: cached {path}")
        return Tokenizer.load(path)
    check_writable(path.parent)          # a full or read-only cache fails now, not after training
    log(f"tokenizer: training {data.vocab_size} tokens on {_source_key(data)} (cached as {path})")
    documents, _ = _documents(data)
    texts = [doc if isinstance(doc, str) else Path(doc) for doc in documents]
    tokenizer = Tokenizer(vocab_size=data.vocab_size, pattern=data.pattern)
    tokenizer.train(texts, progress=progress)
    tokenizer.save(path)
    return tokenizer


def get_shards(data: DataConfig, tokenizer: Tokenizer, progress: bool,
               log: Callable[[str], None]) -> Path:
    """A folder of prepared shards for this corpus and tokenizer: the one data.inputs
    names if it is one (prepared_input), else the cache's, prepared first if missing."""
    from basegpt.data.datasets import cache_dir
    from basegpt.data.pipeline import prepare
    folder = prepared_input(data)
    if folder is not None:
        log(f"data: the shards prepared in {folder}")
        return folder
    folder = (cache_dir() / "shards" /
              f"{_source_key(data)}-{tokenizer.hash[:12]}-val{data.val_fraction:g}")
    if (folder / "meta.json").is_file():
        log(f"data: cached shards {folder}")
        return folder
    log(f"data: tokenizing into {folder}")
    prepare(list(data.inputs) or None, tokenizer, folder,
            data=None if data.inputs else data.source,
            val_fraction=data.val_fraction, max_bytes=data.max_bytes, progress=progress)
    return folder


# ------------------------------------------------------------------------ the run

def train_run(spec: dict[str, Any], out: str | os.PathLike, *, resume: bool = False,
              init_from: str | os.PathLike | None = None, overwrite: bool = False,
              progress: bool = True,
              log: Callable[[str], None] | None = None,
              on_step: Callable[[dict[str, Any]], None] | None = None,
              ) -> tuple[TrainResult, B2lM, Tokenizer]:
    """Run the spec into run directory `out` (or continue it with resume=True).

    With resume=True, `spec` holds only the training flags to change ({"train": {...}});
    the model and data come from the run's config.json. A run that stopped before its first
    checkpoint starts again from step 0. With overwrite=True, a run already in `out` is
    removed first (all of it); without it, that is an error. While it runs, `out` is locked
    (runlock.py): another train_run on it fails at once, naming this process. The seed
    (train.seed) fixes the initial weights, the data order and dropout: the same spec and
    seed give the same run, bit for bit on a CPU, under a step or epoch budget (under a time
    budget the run's length and its learning rates follow the clock).

    With init_from (a run directory: an imported HF run, any basegpt run, or its best/), a new
    run in `out` starts from that run's weights, model config and tokenizer, and trains on
    the spec's data with its training settings: fine-tuning. The data is tokenized with that
    tokenizer (the shards are cached by its hash); the optimizer starts fresh, at step 0.
    Build the spec with resolve_spec(..., init_from=...), which takes the model section from
    the run:

        spec = resolve_spec("seed", overrides={"train": {"max_steps": 100, "lr": 1e-4},
                                               "data": {"inputs": ["notes.txt"]}},
                            init_from="runs/gpt2")
        train_run(spec, "runs/gpt2-notes", init_from="runs/gpt2")

    config.json and run.json record where the run started. `on_step` is fit's: called with
    each step's metrics record. Under torchrun, process 0 trains the tokenizer and prepares
    the shards into the cache while the others wait, then they read them from there.

    Returns (fit's TrainResult, the trained model, the tokenizer). Under FSDP (torchrun,
    --parallel fsdp) process 0's model is the whole trained model, read back from the run,
    and the other processes' is their sharded part of it.
    """
    from basegpt import distributed
    from basegpt.checkpoint import read_config
    from basegpt.runlock import run_lock

    if log is None:
        from tqdm.auto import tqdm
        log = lambda m: tqdm.write(m, file=sys.stderr)      # noqa: E731 (above any bar)
    out = Path(out)
    if init_from is not None:
        if resume:
            raise ValueError("init_from starts a new run from another run's weights and "
                             "resume continues a run from its own: pass one of them")
        source = Path(init_from).resolve()
        if out.resolve() == source or out.resolve() in source.parents:
            raise ValueError(f"the new run's directory {out} is or contains {init_from}, the "
                             "run whose weights it starts from; choose another --out")
        # Checked before any tokenizing: the model and tokenizer must be the source's.
        spec = merge_specs(spec, {"model": _init_model(init_from, spec["model"]),
                                  "data": {"tokenizer": _init_tokenizer(
                                      init_from, spec["data"].get("tokenizer"))}})
    if resume and not out.is_dir():
        read_config(out)                         # the error for a run that is not there
    # One writer per run directory: process 0 writes, and holds the lock from here (before
    # minutes of tokenizing) to the end, so two `basegpt train --out X` cannot mix runs.
    dist = distributed.setup()
    writer = run_lock(out) if dist.is_main else contextlib.nullcontext()
    with writer:
        return _train_locked(spec, out, resume=resume, init_from=init_from,
                             overwrite=overwrite, progress=progress, log=log, on_step=on_step)


def _train_locked(spec: dict[str, Any], out: Path, *, resume: bool,
                  init_from: str | os.PathLike | None, overwrite: bool, progress: bool,
                  log: Callable[[str], None],
                  on_step: Callable[[dict[str, Any]], None] | None,
                  ) -> tuple[TrainResult, B2lM, Tokenizer]:
    """train_run's work, in process 0 with `out`'s lock held."""
    from basegpt import distributed, fast
    from basegpt.checkpoint import load_run
    from basegpt.config import ModelConfig
    from basegpt.sharding import is_sharded
    from basegpt.data import ShardDataset
    import torch
    from basegpt.model import B2lM
    from basegpt.optim import stop_reason
    from basegpt.train import fit

    if resume:
        saved = read_spec(out)
        # The saved spec decides the model and the data; flags may extend training.
        spec = merge_specs(saved, {"train": spec.get("train", {})})
    elif (out / "config.json").exists() and not overwrite:
        raise ValueError(f"{out} already holds a run; continue it with --resume {out}, "
                         "choose another --out, or pass --overwrite")
    _, train_config, data = check_spec(spec)
    before = saved_progress(out) if resume else None
    if before is not None:                   # a budget already used up would train nothing
        # fit's own test before a resumed run's first step; epochs are left to fit, which
        # alone knows the steps in an epoch (total=None).
        spent = stop_reason(train_config, before["step"], None, before["seconds"])
        if spent:
            raise budget_error(spent, train_config, before["step"], before["seconds"])
    # Under torchrun, process 0 alone trains the tokenizer and tokenizes the data into the
    # cache; the others wait at the barrier, then find both cached. One process: no waiting.
    dist = distributed.setup()
    if not dist.is_main:
        dist.barrier()
    tokenizer = (Tokenizer.load(out / "tokenizer.json") if resume
                 else get_tokenizer(data, progress, log))
    shards = get_shards(data, tokenizer, progress, log)
    if dist.is_main:
        dist.barrier()
    model_config = ModelConfig.from_dict({**spec["model"], "vocab_size": len(tokenizer)})
    # The seed fixes the initial weights too (fit seeds the data order and dropout), without
    # touching the caller's own random state.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(train_config.seed)
        model = fast.prepare(B2lM(model_config))
    T = model_config.n_context
    train_data = ShardDataset(shards, T, "train", tokenizer=tokenizer)
    val_data = ShardDataset(shards, T, "val", tokenizer=tokenizer)
    result = fit(model, train_data, val_data, train_config, tokenizer=tokenizer, run_dir=out,
                 resume=resume, overwrite=overwrite and not resume, progress=progress, log=log,
                 on_step=on_step, extra_config={"spec": spec}, init_from=init_from)
    if before is not None and result.steps == before["step"] and result.stopped_by in BUDGET_FLAGS:
        # Only fit knows the steps in an epoch, so a used-up epochs budget shows here.
        raise budget_error(result.stopped_by, train_config, result.steps, result.seconds)
    if is_sharded(model) and dist.is_main:
        # FSDP left each process its rows, and calling the model is collective: process 0
        # (which prints the sample) gets the whole weights fit saved last; the others keep
        # their rows rather than load the whole model too.
        model = load_run(out).model
    return result, model, tokenizer


def read_spec(run_dir: str | os.PathLike) -> dict[str, Any]:
    """The spec a run was made with (from config.json)."""
    from basegpt.checkpoint import read_config
    config = read_config(run_dir)
    if "spec" not in config:
        raise ValueError(f"{run_dir} was not made by `basegpt train` (no spec in config.json); "
                         "continue it from Python with fit(..., resume=True)")
    if not isinstance(config["spec"], dict):
        raise ValueError(f"{Path(run_dir) / 'config.json'}: 'spec' must be an object of "
                         f"sections ({', '.join(SECTIONS)}), got {_json_type(config['spec'])}; "
                         "the run directory is damaged")
    return config["spec"]


# ------------------------------------------------------------------------ budgets and hints

BUDGET_FLAGS = {"max_steps": "--max-steps", "epochs": "--epochs", "max_minutes": "--max-minutes"}
"""fit's stop reasons and the flags that set them. Each budget counts the whole run, resumes
included: a run trained for 4 minutes and resumed with --max-minutes 2 is already done."""


def saved_progress(run_dir: str | os.PathLike) -> dict[str, Any] | None:
    """The progress record (step, seconds, ...) of a run's newest complete checkpoint; None
    if it has none (a resume then starts it again from step 0)."""
    from basegpt.rundir import latest_checkpoint
    from basegpt.train_state import read_state_json
    folder, _ = latest_checkpoint(Path(run_dir))
    return read_state_json(folder)["progress"] if folder is not None else None


def more_budget(budget: str, config: TrainConfig, steps: int, seconds: float) -> str:
    """The flag that lets a run stopped by `budget` train on when resumed: twice the steps
    or epochs, or 4 more minutes. `more_budget("max_steps", cfg, 20, 9.0) -> "--max-steps 40"`."""
    if budget == "max_steps":
        return f"--max-steps {2 * steps}"
    if budget == "epochs":
        return f"--epochs {2 * config.epochs:g}"
    return f"--max-minutes {math.ceil(seconds / 60) + 4}"


def budget_error(budget: str, config: TrainConfig, steps: int, seconds: float) -> ValueError:
    """The error for resuming a run whose `budget` is already used up."""
    if budget == "max_steps":
        used, needed = f"{steps} of its {config.max_steps}-step budget", f"> {steps}"
    elif budget == "epochs":
        used, needed = f"its {config.epochs:g}-epoch budget ({steps} steps)", f"> {config.epochs:g}"
    else:
        used = f"{seconds / 60:.1f} min of its {config.max_minutes:g}-minute budget"
        needed = f"> {seconds / 60:.1f}"
    return ValueError(f"this run has used {used}; pass {BUDGET_FLAGS[budget]} {needed}, e.g. "
                      f"{more_budget(budget, config, steps, seconds)} (the budget counts the "
                      "whole run)")


CODE_PROMPT = "def "
"""The sample prompt for the built-in corpus, which is Python source code."""


def sample_prompt(run_dir: str | os.PathLike, tokenizer: Tokenizer) -> str:
    """A prompt that fits a run's data, for the sample `basegpt train` prints.

    The built-in corpus is Python code, so "def ". Other text gets the first words (up to
    three, from the first line) of its validation split: the user's own kind of text, which
    the model has not trained on, so the sample shows it continuing a real passage. (An empty
    prompt would start a new document instead, which a single-document corpus such as
    tinyshakespeare shows the model only once.)
    """
    from basegpt.data import ShardDataset
    data = DataConfig(**read_spec(run_dir)["data"])
    if data.source == "stdlib" and not data.inputs:
        return CODE_PROMPT
    val = ShardDataset(get_shards(data, tokenizer, False, lambda m: None), 1, "val")
    text = tokenizer.decode(val.read(0, min(32, val.n_tokens)).tolist())
    first_line = text.lstrip().split("\n", 1)[0]
    return " ".join(first_line.split()[:3])
