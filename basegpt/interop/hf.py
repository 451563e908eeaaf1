"""Hugging Face entry points over both architectures, as `basegpt export` (all formats but
gguf) and `basegpt import hf` call them:

    export_hf        run -> GPT-2 directory (hf_gpt2.py maps config and tensors)
    export_llama     run -> Llama directory (hf_llama.py maps them)
    export_auto      run -> GPT-2 if the model is GPT-2-compatible, else Llama (`hf_format`)
    import_hf        GPT-2 or Llama directory -> run, by config.json (`hf_architecture`)
    export_tiktoken  run's tokenizer -> .tiktoken rank file + JSON (tokenizers.py writes them)

The directory's files are hf_files.py's (one writer, one weights reader, one tokenizer
reader); this module picks the architecture and hands its mapping to them. A model that a
format cannot express is refused with every field named and what to do instead
(`export_hint`): the other format when it fits, else the nearest shipped preset that exports
and the command that trains it.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import torch

from basegpt._io import check_writable, new_folder, staged
from basegpt.checkpoint import CONFIG_FILE, TOKENIZER_FILE, WEIGHTS_FILE, save_config, save_tensors
from basegpt.config import ModelConfig
from basegpt.interop.hf_files import (HF_CONFIG, check_folder_target, read_hf_tokenizer,
                                      read_hf_weights, read_json, source_model, write_hf_dir)
from basegpt.interop.hf_gpt2 import (GPT2_ARCHITECTURES, config_from_gpt2, gpt2_config,
                                     gpt2_incompatibilities, gpt2_tensors, tensors_from_gpt2)
from basegpt.interop.hf_llama import (LLAMA_ARCHITECTURES, config_from_llama, llama_config,
                                      llama_incompatibilities, llama_tensors, tensors_from_llama)
from basegpt.interop.tokenizers import save_tiktoken
from basegpt.model import B2lM
from basegpt.recipe import load_preset, preset_names
from basegpt.rundir import clear_run
from basegpt.runlock import run_lock
from basegpt.tokenizer import Tokenizer

FORMAT_NAMES = {"gpt2": "GPT-2", "llama": "Llama"}
_KERNELS = ("attention", "norm_kernel", "activation_kernel")
"""ModelConfig fields that choose how, not what, the model computes."""
_READERS: dict[str, tuple[Callable[..., ModelConfig], Callable[..., dict[str, torch.Tensor]]]] = {
    "gpt2": (config_from_gpt2, tensors_from_gpt2), "llama": (config_from_llama, tensors_from_llama)}
"""architecture -> (config.json -> ModelConfig, HF tensors -> basegpt tensors)."""
_WRITERS = {"gpt2": (gpt2_incompatibilities, gpt2_config, gpt2_tensors),
            "llama": (llama_incompatibilities, llama_config, llama_tensors)}
"""architecture -> (what keeps a config out, ModelConfig -> config.json, model -> HF tensors)."""


# ------------------------------------------------------------------------ export

def export_hf(source: str | os.PathLike | tuple[torch.nn.Module, Tokenizer],
              out_dir: str | os.PathLike) -> Path:
    """Write a Hugging Face GPT-2 directory for a run directory or a (model, tokenizer) pair:
    config.json, model.safetensors, tokenizer.json, tokenizer_config.json, which
    `GPT2LMHeadModel.from_pretrained(out_dir)` and `AutoTokenizer.from_pretrained(out_dir)`
    load offline with no custom code. The HF ids are the tokenizer's (public) ids, so an
    imported run goes back out with its original ids. Returns out_dir.

    Raises ValueError listing every field that is not GPT-2-compatible (and saying whether
    the model exports as Llama, or which preset trains an exportable model), or naming
    out_dir when it is a file.
    """
    return _export(source, out_dir, "gpt2")


def export_llama(source: str | os.PathLike | tuple[torch.nn.Module, Tokenizer],
                 out_dir: str | os.PathLike) -> Path:
    """Write a Hugging Face Llama directory for a run directory or a (model, tokenizer) pair:
    config.json, model.safetensors, tokenizer.json, tokenizer_config.json, which
    `LlamaForCausalLM.from_pretrained(out_dir)` and `AutoTokenizer.from_pretrained(out_dir)`
    load offline with no custom code, with the tokenizer's ids (as `export_hf`). Returns
    out_dir.

    Raises ValueError listing every field that is not Llama-compatible (and saying whether
    the model exports as GPT-2, or which preset trains an exportable model), or naming
    out_dir when it is a file.
    """
    return _export(source, out_dir, "llama")


def _export(source: str | os.PathLike | tuple[torch.nn.Module, Tokenizer],
            out_dir: str | os.PathLike, architecture: str) -> Path:
    """export_hf's and export_llama's work, for `architecture` ("gpt2" or "llama")."""
    incompatibilities, config_of, tensors_of = _WRITERS[architecture]
    out = Path(out_dir)
    check_folder_target(out, "the output folder")
    check_writable(out)
    model, tokenizer = source_model(source)
    problems = incompatibilities(model.config)
    if problems:
        raise ValueError(f"this model cannot be exported to {FORMAT_NAMES[architecture]} "
                         "format: " + "; ".join(problems) + ". "
                         + export_hint(model.config, refused=architecture))
    write_hf_dir(out, model, tokenizer, config_of, tensors_of)
    return out


def hf_format(config: ModelConfig) -> str:
    """The Hugging Face architecture that expresses `config`: "gpt2" when GPT-2 does
    (`gpt2_incompatibilities` is empty), else "llama" when Llama does. Neither: a ValueError
    listing what each needs, the nearest exportable preset and the command that trains one."""
    gpt2, llama = gpt2_incompatibilities(config), llama_incompatibilities(config)
    if not gpt2:
        return "gpt2"
    if not llama:
        return "llama"
    raise ValueError("this model cannot be exported to a Hugging Face format. As GPT-2: "
                     + "; ".join(gpt2) + ". As Llama: " + "; ".join(llama) + ". "
                     + export_hint(config))


def export_auto(source: str | os.PathLike | tuple[torch.nn.Module, Tokenizer],
                out_dir: str | os.PathLike) -> tuple[Path, str]:
    """Export as GPT-2 when the model is GPT-2-compatible, else as Llama (`hf_format`).
    Returns (out_dir, "gpt2" or "llama"); a model neither expresses is a ValueError."""
    out = Path(out_dir)
    check_folder_target(out, "the output folder")
    model, tokenizer = source_model(source)
    architecture = hf_format(model.config)
    export = export_hf if architecture == "gpt2" else export_llama
    return export((model, tokenizer), out), architecture


def export_hint(config: ModelConfig, refused: str | None = None) -> str:
    """What to do about a model that `refused` ("gpt2", "llama"; None: both) cannot express:
    the other format when it fits, else the shipped preset nearest to `config` among those
    that export, and the command that trains it."""
    if refused == "gpt2" and not llama_incompatibilities(config):
        return ("It exports to Llama format as it is: basegpt export RUN --format llama OUT "
                "(or --format auto; export_llama in Python)")
    if refused == "llama" and not gpt2_incompatibilities(config):
        return ("It exports to GPT-2 format as it is: basegpt export RUN --format hf OUT "
                "(or --format auto; export_hf in Python)")
    name, architecture, differs = nearest_exportable_preset(config)
    return (f"The nearest exportable preset is {name} ({FORMAT_NAMES[architecture]} format; "
            f"it sets {', '.join(differs)} differently); train one with: basegpt train "
            f"--preset {name} (adding the data arguments your run had, if any)")


def nearest_exportable_preset(config: ModelConfig) -> tuple[str, str, list[str]]:
    """(preset, architecture, fields): among the shipped presets that export as GPT-2 or
    Llama, the one nearest to `config` in size (parameters at config's vocabulary, by ratio;
    then in the fewest differing fields), its architecture, and the model fields (kernels
    and vocab_size aside) it sets differently. Size first: a model like yours that exports
    is most use when it trains in about the time yours did."""
    with torch.device("meta"):                         # sizes only: no memory, no init
        n_ours = B2lM(config).num_parameters()
        found = []
        for name in preset_names():
            preset = ModelConfig.from_dict(load_preset(name).get("model", {})).replace(
                vocab_size=config.vocab_size)
            if gpt2_incompatibilities(preset) and llama_incompatibilities(preset):
                continue
            architecture = "llama" if gpt2_incompatibilities(preset) else "gpt2"
            ours, theirs = config.to_dict(), preset.to_dict()
            differs = [key for key in ours if key not in ("vocab_size", *_KERNELS)
                       and ours[key] != theirs[key]]
            size = abs(math.log(B2lM(preset).num_parameters() / n_ours))
            found.append((size, len(differs), name, architecture, differs))
    assert found, "basegpt ships exportable presets (gpt2-small, laptop)"
    *_, name, architecture, differs = min(found)
    return name, architecture, differs


def export_tiktoken(source: str | os.PathLike | tuple[torch.nn.Module, Tokenizer],
                    out: str | os.PathLike) -> tuple[Path, Path]:
    """Write the tokenizer as a tiktoken rank file + JSON (`interop.tokenizers.save_tiktoken`).
    `out` is the .tiktoken file, or a directory (then OUT/tokenizer.tiktoken). Ranks are
    basegpt's ids (tiktoken merges by rank, which must follow merge order); for an imported
    run they are HF's ids, when HF's merge tokens are numbered in merge order (as GPT-2's
    are); other numberings cannot be tiktoken ranks (ValueError)."""
    out = Path(out)
    if out.is_dir() or out.suffix != ".tiktoken":
        out = out / "tokenizer.tiktoken"
    check_folder_target(out.parent, "the output folder")
    check_writable(out)
    if isinstance(source, tuple):
        tokenizer = source[1]
    else:
        tokenizer = Tokenizer.load(Path(source) / TOKENIZER_FILE)
    # Both files or neither: a full disk part-way leaves an earlier export whole.
    with new_folder(out.parent), staged(out.parent) as stage:
        ranks, meta = save_tiktoken(tokenizer, stage / out.name)
    return out.parent / ranks.name, out.parent / meta.name


# ------------------------------------------------------------------------ import

@dataclass
class HFImport:
    """What `import_hf` did: the run written, the weights file read (and whether it was a
    pickle), and the architecture it held ("gpt2" or "llama"). The run's token ids are HF's,
    always."""

    run_dir: Path
    weights: Path
    pickled: bool
    architecture: str = "gpt2"


def hf_architecture(hf: dict[str, Any], source: str = HF_CONFIG) -> str:
    """"gpt2" or "llama": which of the architectures basegpt imports a parsed config.json
    declares, by its model_type, else by its architectures. Any other is a ValueError naming
    both keys and what basegpt imports."""
    if not isinstance(hf, dict):
        raise ValueError(f"{source} holds a {type(hf).__name__}, not a model config (an "
                         "object with model_type, ...)")
    model_type, archs = hf.get("model_type"), hf.get("architectures") or []
    if model_type in ("gpt2", "llama"):
        return model_type
    if model_type is None and set(archs) & set(GPT2_ARCHITECTURES):
        return "gpt2"
    if model_type is None and set(archs) & set(LLAMA_ARCHITECTURES):
        return "llama"
    raise ValueError(f"{source}: unknown architecture (model_type={model_type!r}, "
                     f"architectures={archs}); basegpt imports GPT-2 models "
                     f"({', '.join(GPT2_ARCHITECTURES)}) and Llama models "
                     f"({', '.join(LLAMA_ARCHITECTURES)})")


def import_hf(hf_dir: str | os.PathLike, run_dir: str | os.PathLike, allow_pickle: bool = False,
              overwrite: bool = False) -> HFImport:
    """Build a basegpt run directory (config.json, model.safetensors, tokenizer.json) from a
    local GPT-2- or Llama-format directory (config.json's model_type says which; py
    reads Llama). `load_run(run_dir)` then gives a tokenizer whose ids are exactly HF's and
    a model whose logits equal HF's on the same ids."""
    hf_dir, run_dir = Path(hf_dir), Path(run_dir)
    if not hf_dir.is_dir():
        raise FileNotFoundError(f"{hf_dir}: no such directory. basegpt imports local "
                                "directories only and never downloads; for a hub model, "
                                f"download it first (huggingface-cli download NAME --local-dir DIR)")
    if not (hf_dir / HF_CONFIG).is_file():
        raise FileNotFoundError(f"{hf_dir} has no {HF_CONFIG}; it is not a Hugging Face model "
                                "directory")
    check_folder_target(run_dir, "the run directory")
    check_writable(run_dir)
    if (run_dir / CONFIG_FILE).exists() and not overwrite:     # early: before reading weights
        raise ValueError(f"{run_dir} already holds a run; choose another directory or pass "
                         "overwrite=True (--overwrite)")
    hf = read_json(hf_dir / HF_CONFIG)
    architecture = hf_architecture(hf, str(hf_dir / HF_CONFIG))
    config_of, tensors_of = _READERS[architecture]
    config = config_of(hf, str(hf_dir / HF_CONFIG))
    tokenizer = read_hf_tokenizer(hf_dir, config.vocab_size)
    hf_tensors, weights, pickled = read_hf_weights(hf_dir, allow_pickle)
    tensors = tensors_of(hf_tensors, config, str(weights))

    extra: dict[str, Any] = {"imported_from": {"format": f"hf-{architecture}",
                                               "path": str(hf_dir.resolve()),
                                               "weights": weights.name}}
    # All three files or none (config.json last: a run is complete once it exists), so a
    # full disk part-way leaves a run being overwritten whole, and no half-made folder; and
    # one writer at a time.
    with new_folder(run_dir), run_lock(run_dir, "basegpt import hf"):
        if (run_dir / CONFIG_FILE).exists() and not overwrite:   # again, now as the one writer
            raise ValueError(f"{run_dir} already holds a run; choose another directory or "
                             "pass overwrite=True (--overwrite)")
        with staged(run_dir, commit_record=CONFIG_FILE) as stage:
            tokenizer.save(stage / TOKENIZER_FILE)
            save_tensors(stage / WEIGHTS_FILE, tensors, metadata={"format": "pt"})
            save_config(stage, config, tokenizer, extra=extra)
            # Only now, with the new run written: nothing of the run it replaces may stay
            # (its checkpoints would resume under this config).
            clear_run(run_dir)
    return HFImport(run_dir=run_dir, weights=weights, pickled=pickled, architecture=architecture)


__all__ = ["FORMAT_NAMES", "HFImport", "export_auto", "export_hf", "export_hint", "export_llama",
           "export_tiktoken", "hf_architecture", "hf_format", "import_hf",
           "nearest_exportable_preset"]
