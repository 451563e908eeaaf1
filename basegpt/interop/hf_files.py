"""The files of a Hugging Face model directory, whatever the architecture, and where an export
comes from and goes.

    config.json                    the architecture's settings (hf_gpt2.py, hf_llama.py); both
                                   state the weights' dtype the same way (`dtype_keys`)
    model.safetensors              the weights; or model.safetensors.index.json + shards; or,
                                   only with allow_pickle, a legacy pytorch_model.bin
    tokenizer.json                 byte-level BPE (interop/tokenizers.py), or GPT-2's original
    (vocab.json + merges.txt)      pair, read into a Tokenizer with HF's ids
    tokenizer_config.json          the special tokens' roles (bos, eos, pad)

`write_hf_dir` writes the four files all or none, given an architecture's config and tensor
mapping; `read_hf_weights` and `read_hf_tokenizer` read them back. Every exporter (GGUF and
tiktoken too) starts from `source_model` (a run directory or a (model, tokenizer) pair) and
checks its target with `check_folder_target` before any work.

Only safetensors weights load by default. A legacy `pytorch_model.bin` is a pickle; it is read
only with allow_pickle=True, through torch.load(weights_only=True), which is the one call of
torch.load in basegpt (checkpoint.py says why pickles are refused everywhere else).
Nothing here downloads: a directory without weights is an error that says so.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Callable

import torch

from basegpt._io import atomic_write_text, file_in_the_way, new_folder, staged
from basegpt.checkpoint import load_run, load_tensors, save_tensors, unwrap
from basegpt.interop.tokenizers import (from_hf_tokenizer_json, hf_json_from_vocab_merges,
                                        hf_tokenizer_json)
from basegpt.model import B2lM
from basegpt.runlock import run_lock
from basegpt.tokenizer import Tokenizer
from basegpt.tokenizer.tokenizer import EOT, PAD

HF_CONFIG = "config.json"
HF_WEIGHTS = "model.safetensors"
HF_WEIGHTS_INDEX = "model.safetensors.index.json"
HF_PICKLE = "pytorch_model.bin"
HF_TOKENIZER = "tokenizer.json"
HF_TOKENIZER_CONFIG = "tokenizer_config.json"

PICKLE_RISK = ("a pytorch_model.bin is a Python pickle: loading it runs an unpickler, and even "
               "torch.load(weights_only=True)'s restricted one has had code-execution bypasses "
               "(CVE-2025-32434, CVE-2026-24747); a safetensors file holds only tensors and "
               "runs no code")


# ------------------------------------------------------------------------ source and target

def source_model(source: str | os.PathLike | tuple[torch.nn.Module, Tokenizer]
                 ) -> tuple[B2lM, Tokenizer]:
    """The (model, tokenizer) to export: a run directory's, loaded, or the pair as given
    (a compiled or wrapped model unwrapped)."""
    if isinstance(source, tuple):
        model, tokenizer = source
        return unwrap(model), tokenizer
    run = load_run(source)
    return run.model, run.tokenizer


def check_folder_target(path: Path, what: str) -> None:
    """A folder can be made at `path`: neither it nor a folder above it is an existing file.
    Checked before any work, so a bad path fails at once, naming it."""
    blocker = file_in_the_way(path)
    if blocker is not None:
        where = "is a file" if blocker == path else f"is inside {blocker}, which is a file"
        raise ValueError(f"{path} {where}, but {what} must go there; move the file away or "
                         "choose another path")


# ------------------------------------------------------------------------ write

def dtype_keys(dtype: torch.dtype) -> dict[str, str]:
    """The weights' dtype as config.json states it: "dtype" (transformers 5) and
    "torch_dtype" (the name older transformers and other tools read)."""
    name = str(dtype).removeprefix("torch.")
    return {"dtype": name, "torch_dtype": name}


def write_hf_dir(out: Path, model: B2lM, tokenizer: Tokenizer,
                 hf_config_of: Callable[..., dict[str, Any]],
                 tensors_of: Callable[[torch.nn.Module], dict[str, torch.Tensor]]) -> None:
    """Write the four files of a Hugging Face model directory into `out`: config.json
    (`hf_config_of(config, bos_id, eos_id, pad_id, dtype)`), model.safetensors
    (`tensors_of(model)`), tokenizer.json and tokenizer_config.json. All four or none: a full
    disk part-way leaves an earlier export whole; and one export at a time into a folder
    (two would mix their files)."""
    config = model.config
    if config.vocab_size != len(tokenizer):
        raise ValueError(f"model vocab_size={config.vocab_size} but the tokenizer has "
                         f"{len(tokenizer)} tokens")
    tok_json = hf_tokenizer_json(tokenizer)
    eot = tokenizer.special_tokens.get(EOT)
    pad = tokenizer.special_tokens.get(PAD)
    tensors = tensors_of(model)
    tok_config = {"tokenizer_class": "PreTrainedTokenizerFast", "model_max_length": config.n_context,
                  "clean_up_tokenization_spaces": False, "add_prefix_space": False}
    if eot is not None:
        tok_config |= {"bos_token": EOT, "eos_token": EOT}
    if pad is not None:
        tok_config["pad_token"] = PAD
    config_json = hf_config_of(config, eot, eot, pad, model.tok_emb.weight.dtype)
    with new_folder(out), run_lock(out, "basegpt export"), staged(out) as stage:
        save_tensors(stage / HF_WEIGHTS, tensors, metadata={"format": "pt"})
        atomic_write_text(stage / HF_CONFIG, json.dumps(config_json, indent=2) + "\n")
        atomic_write_text(stage / HF_TOKENIZER, json.dumps(tok_json, ensure_ascii=False) + "\n")
        atomic_write_text(stage / HF_TOKENIZER_CONFIG, json.dumps(tok_config, indent=2) + "\n")


# ------------------------------------------------------------------------ read

def read_json(path: Path) -> Any:
    """The parsed JSON file at `path`; a file that is not JSON is a ValueError naming it."""
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise ValueError(f"{path} is not valid JSON ({error})") from None


def _check_not_pointer(path: Path) -> None:
    # A Git LFS clone without `git lfs pull` leaves ~130-byte text pointers instead of weights.
    with open(path, "rb") as f:
        head = f.read(64)
    if head.startswith(b"version https://git-lfs"):
        raise ValueError(f"{path} is a Git LFS pointer, not the weights; fetch them (git lfs "
                         "pull) first: basegpt never downloads")


def read_hf_weights(hf_dir: Path, allow_pickle: bool = False
                    ) -> tuple[dict[str, torch.Tensor], Path, bool]:
    """(tensors, file read, pickled?) from model.safetensors, a sharded safetensors index, or,
    with allow_pickle only, pytorch_model.bin."""
    single, index, pickle = hf_dir / HF_WEIGHTS, hf_dir / HF_WEIGHTS_INDEX, hf_dir / HF_PICKLE
    if single.is_file():
        _check_not_pointer(single)
        return load_tensors(single), single, False
    if index.is_file():
        tensors: dict[str, torch.Tensor] = {}
        for shard in sorted(set(read_json(index).get("weight_map", {}).values())):
            if not (hf_dir / shard).is_file():
                raise FileNotFoundError(f"{hf_dir / shard} (listed in {index.name}) is missing; "
                                        "basegpt never downloads: fetch every shard first")
            _check_not_pointer(hf_dir / shard)
            tensors |= load_tensors(hf_dir / shard)
        return tensors, index, False
    if pickle.is_file():
        if not allow_pickle:
            raise ValueError(f"{hf_dir} has weights only as {HF_PICKLE}, a pickle; "
                             f"{PICKLE_RISK}. Convert it to model.safetensors, or, for a file "
                             "you trust, pass allow_pickle=True (--allow-pickle)")
        _check_not_pointer(pickle)
        try:
            state = torch.load(pickle, map_location="cpu", weights_only=True)
        except Exception as error:  # noqa: BLE001 - any unpickling failure is a bad file
            raise ValueError(f"{pickle} could not be loaded with weights_only=True ({error})") from None
        if not isinstance(state, dict) or not all(isinstance(t, torch.Tensor) for t in state.values()):
            raise ValueError(f"{pickle} does not hold a dict of tensors")
        return state, pickle, True
    raise FileNotFoundError(f"{hf_dir} has no weights ({HF_WEIGHTS}, {HF_WEIGHTS_INDEX} or "
                            f"{HF_PICKLE}): only part of the model was downloaded. basegpt "
                            "never downloads; fetch the weights into the directory first (e.g. "
                            f"huggingface-cli download NAME --local-dir {hf_dir})")


def read_hf_tokenizer(hf_dir: Path, n_vocab: int | None = None) -> Tokenizer:
    """A basegpt Tokenizer with HF's ids from tokenizer.json, or else vocab.json + merges.txt
    (GPT-2's original files; special tokens from tokenizer_config.json /
    special_tokens_map.json)."""
    if (hf_dir / HF_TOKENIZER).is_file():
        data, source = read_json(hf_dir / HF_TOKENIZER), hf_dir / HF_TOKENIZER
    elif (hf_dir / "vocab.json").is_file() and (hf_dir / "merges.txt").is_file():
        vocab = read_json(hf_dir / "vocab.json")
        merges = (hf_dir / "merges.txt").read_text(encoding="utf-8")
        settings: dict[str, Any] = {}
        for name in (HF_TOKENIZER_CONFIG, "special_tokens_map.json"):
            if (hf_dir / name).is_file():
                settings = read_json(hf_dir / name) | settings
        specials = [settings.get(k) for k in ("bos_token", "eos_token", "unk_token", "pad_token")]
        specials = [s["content"] if isinstance(s, dict) else s for s in specials if s]
        specials += [t.get("content") for t in (settings.get("added_tokens_decoder") or {}).values()]
        data = hf_json_from_vocab_merges(vocab, merges, list(dict.fromkeys(specials)),
                                         bool(settings.get("add_prefix_space", False)))
        source = hf_dir / "vocab.json"
    else:
        raise FileNotFoundError(f"{hf_dir} has no tokenizer ({HF_TOKENIZER}, or vocab.json + "
                                "merges.txt); basegpt never downloads: copy them there first")
    try:
        return from_hf_tokenizer_json(data, n_vocab)
    except ValueError as error:
        raise ValueError(f"{source}: {error}") from None


__all__ = ["HF_CONFIG", "HF_PICKLE", "HF_TOKENIZER", "HF_TOKENIZER_CONFIG", "HF_WEIGHTS",
           "HF_WEIGHTS_INDEX", "PICKLE_RISK", "check_folder_target", "dtype_keys",
           "read_hf_tokenizer", "read_hf_weights", "read_json", "source_model", "write_hf_dir"]
