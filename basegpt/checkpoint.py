"""The run directory: everything needed to sample from a model or continue training it.

    run_dir/
      config.json          format + version, the ModelConfig, the training config, the
                           tokenizer's hash (checked against tokenizer.json on load)
      model.safetensors    the weights, plain names (no torch.compile / DDP prefixes)
      tokenizer.json       the tokenizer (basegpt.tokenizer format)
      train_state.*        optimizer moments, RNG states, data position (written by train.py)
      metrics.jsonl, run.json, loss.png   (written by train.py)

Open formats only: tensors in safetensors, everything else in JSON. There is no pickle
anywhere, not even `torch.load(weights_only=True)`, whose restricted unpickler has had code
execution bypasses: a run directory someone sends you is safe to open. Every file is written
atomically (`_io.py`), so a crash mid-save leaves the previous checkpoint intact.

`init_from_run` starts a new run from another run's weights (fine-tuning), checking that the
model and tokenizer are the ones those weights belong to.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file
from safetensors.torch import save as safetensors_bytes

from basegpt._io import atomic_write_bytes, atomic_write_text
from basegpt import fast
from basegpt.config import ModelConfig
from basegpt.model import B2lM
from basegpt.sharding import copy_whole
from basegpt.tokenizer import Tokenizer

FORMAT_NAME = "basegpt.run"
FORMAT_VERSION = 1
CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"
TOKENIZER_FILE = "tokenizer.json"

# Prefixes that wrappers add to parameter names: torch.compile and DistributedDataParallel.
_WRAPPER_PREFIXES = ("_orig_mod.", "module.")


@dataclass
class Run:
    """A loaded run directory: the model (in eval mode), its tokenizer and its config.json.

        run = load_run("runs/laptop")
        print(generate(run.model, run.tokenizer, "def ", max_new_tokens=50, seed=0))

    (`from basegpt import load_run` gives a Run with `run.generate(...)` for that.)
    """

    path: Path
    model: B2lM
    tokenizer: Tokenizer
    config: dict[str, Any] = field(default_factory=dict)


def unwrap(model: torch.nn.Module) -> B2lM:
    """The B2lM inside torch.compile and/or DistributedDataParallel wrappers."""
    while hasattr(model, "_orig_mod") or hasattr(model, "module"):
        model = getattr(model, "_orig_mod", None) or model.module
    return model


# ------------------------------------------------------------------------ tensors

def save_tensors(path: str | os.PathLike, tensors: dict[str, torch.Tensor],
                 metadata: dict[str, str] | None = None) -> None:
    """Write tensors to a safetensors file atomically (CPU, contiguous copies)."""
    data = {name: t.detach().to("cpu").contiguous() for name, t in tensors.items()}
    atomic_write_bytes(path, safetensors_bytes(data, metadata=metadata))


def load_tensors(path: str | os.PathLike, device: str | torch.device = "cpu") -> dict[str, torch.Tensor]:
    """Read a safetensors file; a missing or damaged file is an error naming it."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file")
    try:
        return load_file(path, device=str(device))
    except (SafetensorError, OSError, ValueError) as error:
        raise ValueError(f"{path} is not a readable safetensors file ({error}); "
                         "the checkpoint is damaged") from None


def model_tensors(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The model's weights by plain name, each shared tensor once (a tied head is dropped:
    it is the token embedding, and safetensors refuses two names for one storage)."""
    model = unwrap(model)
    tensors = {}
    for name, tensor in model.state_dict().items():
        if model.config.tie_weights and name == "lm_head.weight":
            continue
        tensors[name] = tensor
    return tensors


def load_model_tensors(model: B2lM, tensors: dict[str, torch.Tensor], source: str) -> None:
    """Copy `tensors` into `model`, with errors that name the tensor and the expected shape."""
    expected = model_tensors(model)
    missing = sorted(set(expected) - set(tensors))
    unexpected = sorted(set(tensors) - set(expected))
    if missing or unexpected:
        raise ValueError(f"{source}: weights do not match the config: missing {missing[:5]}, "
                         f"unexpected {unexpected[:5]}")
    for name, tensor in tensors.items():
        if tensor.shape != expected[name].shape:
            raise ValueError(f"{source}: tensor {name} has shape {tuple(tensor.shape)} but the "
                             f"config needs {tuple(expected[name].shape)}")
    for name, param in unwrap(model).state_dict().items():
        if name in tensors:
            copy_whole(param, tensors[name])        # a sharded parameter takes its rows


# ------------------------------------------------------------------------ starting from a run

INIT_FIELDS = ("embed_dropout", "attn_dropout", "resid_dropout", "attention", "norm_kernel",
               "activation_kernel")
"""ModelConfig fields that a model started from another run's weights may set differently:
they change neither the tensors' shapes nor what the model computes in eval mode (dropout acts
only in training; the kernels compute the same numbers)."""


def init_conflicts(source: ModelConfig, config: ModelConfig) -> list[str]:
    """Every field in which `config` differs from `source` outside INIT_FIELDS, each as
    "n_block=2 (the source has 12)". Empty: a model built from `config` can take `source`'s
    weights and compute what it computes."""
    def differences(ours: dict[str, Any], theirs: dict[str, Any], prefix: str) -> list[str]:
        return [f"{prefix}{name}={ours[name]!r} (the source has {theirs[name]!r})"
                for name in ours if name not in INIT_FIELDS and ours[name] != theirs[name]]

    top = {n: v for n, v in config.to_dict().items() if n != "blocks"}
    problems = differences(top, {n: getattr(source, n) for n in top}, "")
    if config.n_block == source.n_block:
        named = {p.split("=")[0] for p in problems}
        for i in range(config.n_block):          # per-block overrides, resolved on both sides
            ours = {n: v for n, v in vars(config.block_config(i)).items() if n not in named}
            problems += differences(ours, vars(source.block_config(i)), f"blocks[{i}].")
    return problems


def init_from_run(model: torch.nn.Module, run_dir: str | os.PathLike,
                  tokenizer: Tokenizer | None = None) -> dict[str, Any]:
    """Copy run directory `run_dir`'s weights into `model`, to train them further as a new run
    (fine-tuning): unlike a resume, no optimizer state, step or data position comes along.

    `run_dir` is any run: one `basegpt train` wrote, its best/, or one `basegpt import hf`
    made. The model's config must equal the run's but in INIT_FIELDS (e.g. dropout), and
    `tokenizer`, when given, must be the run's own: its ids index the embedding rows.
    Returns what a new run records about where it started: {"path": ..., "tokenizer_hash": ...}.
    """
    run_dir = Path(run_dir)
    config = read_config(run_dir)
    source = ModelConfig.from_dict(config["model"])          # read_config checked it
    model = unwrap(model)
    problems = init_conflicts(source, model.config)
    if problems:
        raise ValueError(f"the model cannot start from {run_dir}'s weights: "
                         + "; ".join(problems) + f". Only {', '.join(INIT_FIELDS)} may differ: "
                         "build the model from the run's config.json")
    if tokenizer is not None and tokenizer.hash != config.get("tokenizer_hash"):
        raise ValueError(f"the tokenizer (hash {tokenizer.hash[:12]}) is not {run_dir}'s (hash "
                         f"{str(config.get('tokenizer_hash'))[:12]}): its ids would index the "
                         f"wrong embedding rows; use {run_dir / TOKENIZER_FILE}")
    load_model_tensors(model, load_tensors(run_dir / WEIGHTS_FILE), str(run_dir / WEIGHTS_FILE))
    return {"path": str(run_dir.resolve()), "tokenizer_hash": config.get("tokenizer_hash")}


# ------------------------------------------------------------------------ run directory

def save_run(run_dir: str | os.PathLike, model: torch.nn.Module, tokenizer: Tokenizer,
             train_config: dict[str, Any] | None = None) -> Path:
    """Write config.json, model.safetensors and tokenizer.json into `run_dir`."""
    run_dir = Path(run_dir)
    model = unwrap(model)
    if model.config.vocab_size != len(tokenizer):
        raise ValueError(f"model vocab_size={model.config.vocab_size} but the tokenizer has "
                         f"{len(tokenizer)} tokens; build the model with "
                         "vocab_size=len(tokenizer)")
    run_dir.mkdir(parents=True, exist_ok=True)
    save_config(run_dir, model.config, tokenizer, train_config)
    tokenizer.save(run_dir / TOKENIZER_FILE)
    save_tensors(run_dir / WEIGHTS_FILE, model_tensors(model), metadata={"format": "pt"})
    return run_dir


def save_config(run_dir: Path, model_config: ModelConfig, tokenizer: Tokenizer,
                train_config: dict[str, Any] | None = None,
                extra: dict[str, Any] | None = None) -> None:
    """Write config.json: the model config, the training config, the tokenizer hash, and
    any `extra` entries (e.g. the spec `basegpt train` ran)."""
    config = {"format": FORMAT_NAME, "version": FORMAT_VERSION,
              "model": model_config.to_dict(), "train": train_config or {},
              "tokenizer_hash": tokenizer.hash, **(extra or {})}
    atomic_write_text(run_dir / CONFIG_FILE, json.dumps(config, indent=2) + "\n")


def read_config(run_dir: str | os.PathLike) -> dict[str, Any]:
    """Read and check a run's config.json: format, version, and the sections every reader
    relies on ("model" a valid ModelConfig; "train", if there, an object), so each error
    names the file, whoever reads it."""
    run_dir = Path(run_dir)
    path = run_dir / CONFIG_FILE
    if not run_dir.is_dir():
        raise FileNotFoundError(f"{run_dir}: no such run directory; train one with "
                                "`basegpt train`")
    if not path.is_file():
        raise FileNotFoundError(f"{run_dir} is not a basegpt run directory: it has no "
                                f"{CONFIG_FILE}")
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise ValueError(f"{path} is not valid JSON ({error}); the run directory is damaged") from None
    if not isinstance(config, dict) or config.get("format") != FORMAT_NAME:
        raise ValueError(f"{path} is not a basegpt run config (format should be {FORMAT_NAME!r})")
    if config.get("version") != FORMAT_VERSION:
        raise ValueError(f"{path}: unknown run format version {config.get('version')!r}; this "
                         f"basegpt reads version {FORMAT_VERSION} (upgrade basegpt?)")
    if not isinstance(config.get("model"), dict):
        found = "has none" if "model" not in config else f"has {config['model']!r}"
        raise ValueError(f"{path} must hold the model's settings as an object under \"model\" "
                         f"(ModelConfig fields), but {found}; the run directory is damaged")
    try:
        ModelConfig.from_dict(config["model"])
    except (TypeError, ValueError) as error:
        raise ValueError(f"{path}: bad model config: {error}; the run directory is damaged") from None
    if not isinstance(config.get("train", {}), dict):
        raise ValueError(f"{path}: \"train\" must be an object of TrainConfig fields, got "
                         f"{config['train']!r}; the run directory is damaged")
    return config


def load_run(run_dir: str | os.PathLike, device: str | torch.device = "cpu",
             model_class: type[B2lM] = B2lM) -> Run:
    """Load a run directory's model (eval mode, on `device`) and tokenizer, checking that
    they belong together: the tokenizer's hash and size must match what the model expects.
    `model_class`: B2lM or a subclass to build (basegpt.api's, which can also train)."""
    run_dir = Path(run_dir)
    config = read_config(run_dir)
    tokenizer = Tokenizer.load(run_dir / TOKENIZER_FILE)
    if tokenizer.hash != config.get("tokenizer_hash"):
        raise ValueError(f"{run_dir}: tokenizer.json (hash {tokenizer.hash[:12]}) is not the "
                         f"tokenizer this model was trained with (hash "
                         f"{str(config.get('tokenizer_hash'))[:12]}); restore the run's own "
                         "tokenizer.json")
    model_config = ModelConfig.from_dict(config["model"])    # read_config checked it
    if model_config.vocab_size != len(tokenizer):
        raise ValueError(f"{run_dir}: the model has vocab_size={model_config.vocab_size} but "
                         f"tokenizer.json has {len(tokenizer)} tokens")
    if not (run_dir / WEIGHTS_FILE).exists():
        # config.json is written when training starts, the weights at its first checkpoint.
        raise FileNotFoundError(f"{run_dir} has no weights yet: its training has not saved a "
                                "checkpoint. Wait for the first one (every checkpoint_every "
                                "steps and at the end); if the run was stopped before it, "
                                f"start it again with: basegpt train --resume {run_dir}")
    model = fast.prepare(model_class(model_config))     # before the weights: a layout
    load_model_tensors(model, load_tensors(run_dir / WEIGHTS_FILE), str(run_dir / WEIGHTS_FILE))
    model.weights_file = str(run_dir / WEIGHTS_FILE)       # named if the weights prove non-finite
    model.to(device).eval()
    return Run(path=run_dir, model=model, tokenizer=tokenizer, config=config)
