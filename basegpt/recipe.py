"""A whole training run from one spec: tokenizer, data, model, fit, run directory.

`basegpt train` is this module behind argument parsing. A spec has three sections, merged
from a named preset (basegpt/presets/*.json), an optional config file (JSON or TOML) and
command-line flags, later ones winning:

    {"model": {ModelConfig fields but vocab_size},
     "train": {TrainConfig fields},
     "data":  {DataConfig fields}}

Steps of `train_run(spec)`:
1. the tokenizer: the one named by data.tokenizer, or trained on the data and cached under
   the user cache dir by (corpus, vocab size, pattern), so a second run skips it;
2. the data: tokenized into shards (`basegpt.data.prepare`) and cached by (corpus,
   tokenizer hash, validation fraction);
3. the model from the model section, vocab_size = len(tokenizer);
4. fit() into the run directory, evaluating on the held-out split.
"""

from __future__ import annotations

import difflib
import hashlib
import json
import os
import sys
from dataclasses import fields
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

from basegpt.config import DataConfig
from basegpt.corpus import expand_paths
from basegpt.tokenizer import Tokenizer

if TYPE_CHECKING:
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
    """A spec from a .json or .toml file."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such config file")
    text = path.read_text(encoding="utf-8")
    try:
        if path.suffix == ".toml":
            try:
                import tomllib
            except ImportError:                  # Python 3.10
                raise ValueError(f"{path}: TOML config files need Python 3.11+; use JSON") from None
            return tomllib.loads(text)
        return json.loads(text)
    except (json.JSONDecodeError, ValueError) as error:
        raise ValueError(f"{path} is not a valid {path.suffix[1:].upper() or 'JSON'} config "
                         f"({error})") from None


def merge_specs(*specs: dict[str, Any]) -> dict[str, Any]:
    """Merge specs section by section; later values win. Unknown sections are errors."""
    merged: dict[str, dict[str, Any]] = {s: {} for s in SECTIONS}
    for spec in specs:
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
                 overrides: dict[str, Any] | None = None) -> dict[str, Any]:
    """preset (default laptop) < config file < overrides, checked field by field."""
    specs = [load_preset(preset or DEFAULT_PRESET)]
    if config_file is not None:
        specs.append(load_config_file(config_file))
    specs.append(overrides or {})
    spec = merge_specs(*specs)
    check_spec(spec)
    return spec


def check_spec(spec: dict[str, Any]) -> tuple[Any, Any, DataConfig]:
    """Build the three configs to validate every field; errors name the section and key."""
    from basegpt.config import ModelConfig
    from basegpt.config import TrainConfig
    if "vocab_size" in spec["model"]:
        raise ValueError("model.vocab_size comes from the tokenizer; set data.vocab_size instead")
    _check_keys(spec["data"], DataConfig, "data")
    data = DataConfig(**spec["data"])
    try:
        model = ModelConfig.from_dict({**spec["model"], "vocab_size": max(data.vocab_size, 258)})
        train = TrainConfig.from_dict(spec["train"])
    except TypeError as error:
        raise ValueError(str(error)) from None
    return model, train, data


def _check_keys(values: dict[str, Any], cls: type, section: str) -> None:
    valid = [f.name for f in fields(cls)]
    for key in values:
        if key not in valid:
            near = difflib.get_close_matches(key, valid, n=1)
            raise ValueError(f"{section}: unknown key {key!r}"
                             + (f"; did you mean {near[0]!r}?" if near else "")
                             + f" (valid: {', '.join(valid)})")


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
    """The tokenizer named by data.tokenizer, else a cached one, else train and cache it."""
    if data.tokenizer is not None:
        return Tokenizer.load(data.tokenizer)
    from basegpt.data.datasets import cache_dir
    pattern_key = hashlib.sha256(data.pattern.encode()).hexdigest()[:8]
    path = cache_dir() / "tokenizers" / f"{_source_key(data)}-v{data.vocab_size}-{pattern_key}.json"
    if path.is_file():
        log(f"tokenizer: cached {path}")
        return Tokenizer.load(path)
    log(f"tokenizer: training {data.vocab_size} tokens on {_source_key(data)} (cached as {path})")
    documents, _ = _documents(data)
    texts = [doc if isinstance(doc, str) else Path(doc) for doc in documents]
    tokenizer = Tokenizer(vocab_size=data.vocab_size, pattern=data.pattern)
    tokenizer.train(texts, progress=progress)
    tokenizer.save(path)
    return tokenizer


def get_shards(data: DataConfig, tokenizer: Tokenizer, progress: bool,
               log: Callable[[str], None]) -> Path:
    """A folder of prepared shards for this corpus and tokenizer (cached)."""
    from basegpt.data.datasets import cache_dir
    from basegpt.data.pipeline import prepare
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
              overwrite: bool = False, progress: bool = True,
              log: Callable[[str], None] | None = None,
              on_step: Callable[[dict[str, Any]], None] | None = None,
              ) -> tuple[TrainResult, B2lM, Tokenizer]:
    """Run the spec into run directory `out` (or continue it with resume=True).

    With resume=True, `spec` holds only the training flags to change ({"train": {...}});
    the model and data come from the run's config.json. `on_step` is fit's: called with
    each step's metrics record. Under torchrun, process 0 trains the tokenizer and prepares
    the shards into the cache while the others wait, then they read them from there.

    Returns (fit's TrainResult, the trained model, the tokenizer).
    """
    from basegpt import distributed
    from basegpt.config import ModelConfig
    from basegpt.data import ShardDataset
    from basegpt.model import B2lM
    from basegpt.train import fit

    log = log or (lambda m: print(m, file=sys.stderr))
    out = Path(out)
    if resume:
        saved = read_spec(out)
        # The saved spec decides the model and the data; flags may extend training.
        spec = merge_specs(saved, {"train": spec.get("train", {})})
    elif (out / "config.json").exists() and not overwrite:
        raise ValueError(f"{out} already holds a run; continue it with --resume {out}, "
                         "choose another --out, or pass --overwrite")
    _, train_config, data = check_spec(spec)
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
    model = B2lM(model_config)
    T = model_config.n_context
    train_data = ShardDataset(shards, T, "train", tokenizer=tokenizer)
    val_data = ShardDataset(shards, T, "val", tokenizer=tokenizer)
    if overwrite and not resume and out.exists():
        import shutil
        for name in ("checkpoints", "best"):
            shutil.rmtree(out / name, ignore_errors=True)
    result = fit(model, train_data, val_data, train_config, tokenizer=tokenizer, run_dir=out,
                 resume=resume, progress=progress, log=log, on_step=on_step,
                 extra_config={"spec": spec})
    return result, model, tokenizer


def read_spec(run_dir: str | os.PathLike) -> dict[str, Any]:
    """The spec a run was made with (from config.json)."""
    from basegpt.checkpoint import read_config
    config = read_config(run_dir)
    if "spec" not in config:
        raise ValueError(f"{run_dir} was not made by `basegpt train` (no spec in config.json); "
                         "continue it from Python with fit(..., resume=True)")
    return config["spec"]
