"""Hugging Face GPT-2 format, both ways: export a run, import a GPT-2-format directory.

A GPT-2-compatible B2lM (pre-norm LayerNorm blocks, learned positions, tanh-GELU, biases, plain
multi-head attention with n_k == n_v == n_embed / n_head) computes exactly what HF's
GPT2LMHeadModel computes, so the conversion only renames and re-lays tensors:

    basegpt                          GPT-2 (transformers)                 layout
    tok_emb.weight        (V, C)     transformer.wte.weight    (V, C)     rows in id order
    positional.weight     (P, C)     transformer.wpe.weight    (P, C)
    blocks.i.attn_norm    (C,)       transformer.h.i.ln_1      (C,)       eps = layer_norm_epsilon
    blocks.i.attn.qkv_proj (3C, C)   transformer.h.i.attn.c_attn (C, 3C)  transposed (Conv1D)
    blocks.i.attn.out_proj (C, C)    transformer.h.i.attn.c_proj (C, C)   transposed
    blocks.i.ff_norm      (C,)       transformer.h.i.ln_2      (C,)
    blocks.i.ff.up        (F, C)     transformer.h.i.mlp.c_fc  (C, F)     transposed
    blocks.i.ff.down      (C, F)     transformer.h.i.mlp.c_proj (F, C)    transposed
    final_norm            (C,)       transformer.ln_f          (C,)
    lm_head.weight        (V, C)     lm_head.weight            (V, C)     absent when tied

GPT-2's Conv1D stores its weight as (in, out), nn.Linear as (out, in), hence the transposes.
Both pack q, k, v in one matrix in the same order (q | k | v, heads side by side), and both
scale attention by 1/sqrt(D), so c_attn maps to qkv_proj unchanged.

Token ids: basegpt numbers tokens by construction (bytes 0..255, merge i is 256 + i, then the
special tokens), HF by a vocab table that may be in any order: in GPT-2 "!" is id 0, and a
tokenizer trained with `tokenizers` puts its special tokens first. The id a model sees indexes
its embedding and head rows, so two things must agree: the tokenizer's ids and the row order.
There were two ways to make them agree:

1. an explicit id map inside basegpt's Tokenizer, so that it emits HF's ids directly; this
   touches every consumer of ids (encode, decode, the C encoder, vocab, the hash, the file
   format, tiktoken export, whose ranks must follow merge order) for one use case;
2. import into basegpt's own layout: the embedding and head rows are permuted into basegpt id
   order, and the map (`IdMap`: basegpt id -> HF id) is remembered in the run's config.json.

This module does 2. The imported run is an ordinary basegpt run (tokenizer, model and
`len(tokenizer)` all in basegpt ids) that works with every command, and nothing outside
interop/ knows HF ever existed. The exact correspondence is kept: `IdMap.to_hf(ids)` gives
HF's ids for basegpt's (tests check them equal to the HF tokenizer's, token for token, and the
logits equal column for column), and export un-permutes, so export(import(x)) writes x's
tensors bit for bit and x's own ids. Where the HF directory is already in basegpt's layout
(every directory basegpt exports) the map is the identity, is not stored, and the ids are
literally the same. A run saved again by training loses the map: its export then uses
basegpt's layout, still a consistent HF model, only numbered differently from the original.

Only safetensors weights load by default. A legacy `pytorch_model.bin` is a pickle; it is read
only with allow_pickle=True, through torch.load(weights_only=True), which is the one call of
torch.load in basegpt (see DESIGN.md, Checkpoints, for why pickles are refused elsewhere).
Nothing here downloads: a directory without weights is an error that says so.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from basegpt._io import atomic_write_text
from basegpt.checkpoint import (CONFIG_FILE, TOKENIZER_FILE, WEIGHTS_FILE, load_run,
                                load_tensors, model_tensors, save_config, save_tensors, unwrap)
from basegpt.config import ModelConfig
from basegpt.interop.tokenizers import (from_hf_tokenizer_json, hf_json_from_vocab_merges,
                                        hf_tokenizer_json, save_tiktoken)
from basegpt.model import B2lM
from basegpt.tokenizer import Tokenizer
from basegpt.tokenizer.tokenizer import EOT, PAD

HF_CONFIG = "config.json"
HF_WEIGHTS = "model.safetensors"
HF_WEIGHTS_INDEX = "model.safetensors.index.json"
HF_PICKLE = "pytorch_model.bin"
HF_TOKENIZER = "tokenizer.json"
HF_TOKENIZER_CONFIG = "tokenizer_config.json"
ID_MAP_KEY = "hf_token_ids"
"""config.json entry of an imported run: the IdMap as [basegpt_start, hf_start, count] runs."""

GELU_TANH_NAMES = ("gelu_new", "gelu_pytorch_tanh")
"""HF activation names of the tanh-approximated GELU that basegpt's "gelu" computes."""
GPT2_ARCHITECTURES = ("GPT2LMHeadModel", "GPT2Model", "GPT2DoubleHeadsModel")
_IGNORED_BUFFERS = (".attn.bias", ".attn.masked_bias")
"""Causal-mask buffers that old transformers versions saved with the weights; not weights."""
PICKLE_RISK = ("a pytorch_model.bin is a Python pickle: loading it runs an unpickler, and even "
                "torch.load(weights_only=True)'s restricted one has had code-execution bypasses "
                "(CVE-2025-32434, CVE-2026-24747); a safetensors file holds only tensors and "
                "runs no code")

# GPT-2 block tensor <- basegpt block tensor; True = Conv1D weight, stored transposed.
_BLOCK_NAMES = (
    ("ln_1.weight", "attn_norm.weight", False), ("ln_1.bias", "attn_norm.bias", False),
    ("attn.c_attn.weight", "attn.qkv_proj.weight", True),
    ("attn.c_attn.bias", "attn.qkv_proj.bias", False),
    ("attn.c_proj.weight", "attn.out_proj.weight", True),
    ("attn.c_proj.bias", "attn.out_proj.bias", False),
    ("ln_2.weight", "ff_norm.weight", False), ("ln_2.bias", "ff_norm.bias", False),
    ("mlp.c_fc.weight", "ff.up.weight", True), ("mlp.c_fc.bias", "ff.up.bias", False),
    ("mlp.c_proj.weight", "ff.down.weight", True), ("mlp.c_proj.bias", "ff.down.bias", False),
)


# ------------------------------------------------------------------------ the id map

@dataclass(frozen=True)
class IdMap:
    """basegpt token id -> HF token id: `hf[i]` is the HF id of basegpt token i.

        m = IdMap((2, 0, 1))     m.to_hf([0, 1]) -> [2, 0]     m.from_hf([2, 0]) -> [0, 1]

    A permutation of range(len(hf)). Rows of the embedding and head move with it:
    `rows_from_hf(W)[i] == W[hf[i]]`.
    """

    hf: tuple[int, ...]

    def __post_init__(self) -> None:
        if sorted(self.hf) != list(range(len(self.hf))):
            raise ValueError("an id map must be a permutation of 0 .. n-1")

    @classmethod
    def identity(cls, n: int) -> IdMap:
        return cls(tuple(range(n)))

    @property
    def is_identity(self) -> bool:
        return all(i == h for i, h in enumerate(self.hf))

    def to_hf(self, ids: list[int]) -> list[int]:
        """basegpt ids -> HF ids."""
        return [self.hf[i] for i in ids]

    def from_hf(self, ids: list[int]) -> list[int]:
        """HF ids -> basegpt ids."""
        inverse = self._inverse()
        return [inverse[i] for i in ids]

    def _inverse(self) -> list[int]:
        inverse = [0] * len(self.hf)
        for i, h in enumerate(self.hf):
            inverse[h] = i
        return inverse

    def rows_from_hf(self, weight: torch.Tensor) -> torch.Tensor:
        """(V, C) rows in HF id order -> rows in basegpt id order (exact copies)."""
        return weight[torch.tensor(self.hf)]

    def rows_to_hf(self, weight: torch.Tensor) -> torch.Tensor:
        """(V, C) rows in basegpt id order -> rows in HF id order (exact copies)."""
        return weight[torch.tensor(self._inverse())]

    def to_runs(self) -> list[list[int]]:
        """Compact form for JSON: [basegpt_start, hf_start, count] per run of consecutive ids
        (GPT-2's 50,257 ids are ~70 runs: its bytes are reordered, its merges are not)."""
        runs: list[list[int]] = []
        for i, h in enumerate(self.hf):
            if runs and runs[-1][0] + runs[-1][2] == i and runs[-1][1] + runs[-1][2] == h:
                runs[-1][2] += 1
            else:
                runs.append([i, h, 1])
        return runs

    @classmethod
    def from_runs(cls, runs: list[list[int]]) -> IdMap:
        hf: list[int] = []
        for start, hf_start, count in runs:
            if start != len(hf):
                raise ValueError(f"id map runs are not contiguous at basegpt id {start}")
            hf += range(hf_start, hf_start + count)
        return cls(tuple(hf))


def read_id_map(run_config: dict[str, Any]) -> IdMap | None:
    """The IdMap stored in a run's config.json (parsed), or None (ids are HF's as they are)."""
    runs = run_config.get(ID_MAP_KEY)
    return IdMap.from_runs(runs) if runs else None


# ------------------------------------------------------------------------ configs

def hf_incompatibilities(config: ModelConfig) -> list[str]:
    """Every field that keeps `config` from being a GPT-2 model, each with the value it would
    need, e.g. "positional='sinusoidal' (needs 'learned')". Empty: the model exports."""
    problems = []
    needs = {"norm_position": "pre", "positional": "learned", "activation": "gelu",
             "norm": "layernorm", "bias": True}
    for name, value in needs.items():
        if getattr(config, name) != value:
            problems.append(f"{name}={getattr(config, name)!r} (needs {value!r})")
    C, H = config.n_embed, config.n_head
    if config.n_kv_head not in (None, H):
        problems.append(f"n_kv_head={config.n_kv_head} (needs None: GPT-2 has as many "
                        f"key/value heads as query heads, {H})")
    if C % H:
        problems.append(f"n_head={H} (needs a divisor of n_embed={C})")
    head = f"{C // H} = n_embed / n_head" if C % H == 0 else "n_embed / n_head"
    for name in ("n_k", "n_v"):
        if C % H or getattr(config, name) != C // H:
            problems.append(f"{name}={getattr(config, name)} (needs {head})")
    for i, override in enumerate(config.blocks):
        for name, value in override.to_dict().items():
            if name != "attention" and value != getattr(config, name):   # kernels agree
                problems.append(f"blocks[{i}].{name}={value!r} (needs {getattr(config, name)!r}: "
                                "GPT-2's blocks are all alike)")
    return problems


def hf_config(config: ModelConfig, bos_id: int | None, eos_id: int | None,
              pad_id: int | None, dtype: torch.dtype = torch.float32) -> dict[str, Any]:
    """The transformers GPT2Config (config.json) of a GPT-2-compatible ModelConfig."""
    return {
        "architectures": ["GPT2LMHeadModel"], "model_type": "gpt2",
        "vocab_size": config.vocab_size, "n_positions": config.n_context,
        "n_embd": config.n_embed, "n_layer": config.n_block, "n_head": config.n_head,
        "n_inner": config.n_ff, "activation_function": "gelu_new",
        "resid_pdrop": config.resid_dropout, "embd_pdrop": config.embed_dropout,
        "attn_pdrop": config.attn_dropout, "layer_norm_epsilon": config.norm_eps,
        "initializer_range": config.init_std, "scale_attn_weights": True,
        "scale_attn_by_inverse_layer_idx": False, "reorder_and_upcast_attn": False,
        "add_cross_attention": False, "use_cache": True,
        "tie_word_embeddings": config.tie_weights,
        "bos_token_id": bos_id, "eos_token_id": eos_id, "pad_token_id": pad_id,
        "dtype": str(dtype).removeprefix("torch."),
    }


def config_from_hf(hf: dict[str, Any], source: str = HF_CONFIG) -> ModelConfig:
    """The ModelConfig of a transformers GPT-2 config.json (parsed). Anything GPT-2 can be
    set to that basegpt does not compute the same way is a ValueError listing each field."""
    model_type, archs = hf.get("model_type"), hf.get("architectures") or []
    if model_type != "gpt2" or (archs and not set(archs) & set(GPT2_ARCHITECTURES)):
        raise ValueError(f"{source}: unknown architecture (model_type={model_type!r}, "
                         f"architectures={archs}); basegpt imports GPT-2 models "
                         f"({', '.join(GPT2_ARCHITECTURES)})")
    C, H = hf.get("n_embd", 768), hf.get("n_head", 12)
    checks = [
        (hf.get("activation_function", "gelu_new") in GELU_TANH_NAMES,
         f"activation_function={hf.get('activation_function')!r} (basegpt's GELU is the tanh "
         "approximation, 'gelu_new')"),
        (hf.get("scale_attn_weights", True), "scale_attn_weights=false (basegpt scales by "
                                             "1/sqrt(head width))"),
        (not hf.get("scale_attn_by_inverse_layer_idx", False),
         "scale_attn_by_inverse_layer_idx=true (not in basegpt)"),
        (not hf.get("add_cross_attention", False), "add_cross_attention=true (decoder only)"),
        (C % H == 0, f"n_head={H} does not divide n_embd={C}"),
    ]
    problems = [message for ok, message in checks if not ok]
    if problems:
        raise ValueError(f"{source}: cannot import: {'; '.join(problems)}")
    try:
        return ModelConfig(
            vocab_size=hf.get("vocab_size", 50257), n_context=hf.get("n_positions", hf.get("n_ctx", 1024)),
            n_block=hf.get("n_layer", 12), n_embed=C, n_head=H, n_k=C // H, n_v=C // H,
            n_ff=hf.get("n_inner") or 4 * C, norm_position="pre", norm="layernorm",
            norm_eps=hf.get("layer_norm_epsilon", 1e-5), positional="learned",
            activation="gelu", bias=True, tie_weights=hf.get("tie_word_embeddings", True),
            embed_dropout=hf.get("embd_pdrop", 0.1), attn_dropout=hf.get("attn_pdrop", 0.1),
            resid_dropout=hf.get("resid_pdrop", 0.1), init_std=hf.get("initializer_range", 0.02))
    except (TypeError, ValueError) as error:
        raise ValueError(f"{source}: {error}") from None


# ------------------------------------------------------------------------ tensors

def _tensor_names(config: ModelConfig) -> list[tuple[str, str, str]]:
    """(GPT-2 name, basegpt name, how): how is "copy", "transpose" (Conv1D) or "rows" (vocab
    rows, reordered by the id map)."""
    names = [("transformer.wte.weight", "tok_emb.weight", "rows"),
             ("transformer.wpe.weight", "positional.weight", "copy")]
    for i in range(config.n_block):
        names += [(f"transformer.h.{i}.{hf}", f"blocks.{i}.{ours}",
                   "transpose" if conv else "copy") for hf, ours, conv in _BLOCK_NAMES]
    names += [("transformer.ln_f.weight", "final_norm.weight", "copy"),
              ("transformer.ln_f.bias", "final_norm.bias", "copy")]
    if not config.tie_weights:
        names.append(("lm_head.weight", "lm_head.weight", "rows"))
    return names


def gpt2_tensors(model: torch.nn.Module, id_map: IdMap | None = None) -> dict[str, torch.Tensor]:
    """The model's weights under GPT-2's names and layouts (vocab rows in HF id order)."""
    model = unwrap(model)
    ours = model_tensors(model)
    out = {}
    for hf_name, name, how in _tensor_names(model.config):
        t = ours[name].detach()
        if how == "transpose":
            t = t.t()
        elif how == "rows" and id_map is not None:
            t = id_map.rows_to_hf(t)
        out[hf_name] = t.contiguous()
    return out


def basegpt_tensors(hf_tensors: dict[str, torch.Tensor], config: ModelConfig,
                    id_map: IdMap | None = None, source: str = HF_WEIGHTS
                    ) -> dict[str, torch.Tensor]:
    """GPT-2 tensors -> basegpt's names and layouts; every missing, unexpected or misshapen
    tensor is a ValueError naming it and the shape `config` needs."""
    with torch.device("meta"):                         # shapes only: no memory, no init
        expected = model_tensors(B2lM(config))
    tensors = {}
    for name, t in hf_tensors.items():
        if name.endswith(_IGNORED_BUFFERS):
            continue
        if not name.startswith(("transformer.", "lm_head.")):
            name = "transformer." + name               # the original GPT-2 files' bare names
        tensors[name] = t
    if config.tie_weights:
        tensors.pop("lm_head.weight", None)            # tied: the head is wte (some files repeat it)
    names = _tensor_names(config)
    out = {}
    for hf_name, name, how in names:
        shape = tuple(expected[name].shape)
        if how == "transpose":
            shape = shape[::-1]
        if hf_name not in tensors:
            raise ValueError(f"{source}: tensor {hf_name} is missing (expected shape {shape} "
                             "for this config.json)")
        t = tensors[hf_name]
        if tuple(t.shape) != shape:
            raise ValueError(f"{source}: tensor {hf_name} has shape {tuple(t.shape)} but "
                             f"config.json needs {shape}")
        if how == "transpose":
            t = t.t()
        elif how == "rows" and id_map is not None:
            t = id_map.rows_from_hf(t)
        out[name] = t.contiguous()
    unexpected = sorted(set(tensors) - {hf_name for hf_name, _, _ in names})
    if unexpected:
        raise ValueError(f"{source}: unexpected tensors {unexpected[:5]} (not part of a GPT-2 "
                         f"model with n_layer={config.n_block})")
    return out


# ------------------------------------------------------------------------ export

def _source(source: str | os.PathLike | tuple[torch.nn.Module, Tokenizer],
            id_map: IdMap | None) -> tuple[B2lM, Tokenizer, IdMap | None]:
    if isinstance(source, tuple):
        model, tokenizer = source
        return unwrap(model), tokenizer, id_map
    run = load_run(source)
    return run.model, run.tokenizer, id_map or read_id_map(run.config)


def export_hf(source: str | os.PathLike | tuple[torch.nn.Module, Tokenizer],
              out_dir: str | os.PathLike, id_map: IdMap | None = None) -> Path:
    """Write a Hugging Face GPT-2 directory for a run directory or a (model, tokenizer) pair:
    config.json, model.safetensors, tokenizer.json, tokenizer_config.json, which
    `GPT2LMHeadModel.from_pretrained(out_dir)` and `AutoTokenizer.from_pretrained(out_dir)`
    load offline with no custom code. An imported run's id map is applied (or pass `id_map`),
    so the HF ids are the original ones. Returns out_dir.

    Raises ValueError listing every field that is not GPT-2-compatible.
    """
    model, tokenizer, id_map = _source(source, id_map)
    config = model.config
    problems = hf_incompatibilities(config)
    if problems:
        raise ValueError("this model cannot be exported to GPT-2 format: "
                         + "; ".join(problems)
                         + " (the gpt2-small preset, or these values, make a model exportable)")
    if config.vocab_size != len(tokenizer):
        raise ValueError(f"model vocab_size={config.vocab_size} but the tokenizer has "
                         f"{len(tokenizer)} tokens")
    id_map = None if id_map is None or id_map.is_identity else id_map
    if id_map is not None and len(id_map.hf) != len(tokenizer):
        raise ValueError(f"the id map has {len(id_map.hf)} ids but the tokenizer "
                         f"{len(tokenizer)}; it belongs to another tokenizer")
    to_hf = (lambda i: i) if id_map is None else (lambda i: id_map.hf[i])
    tok_json = hf_tokenizer_json(tokenizer)
    if id_map is not None:
        model_vocab = tok_json["model"]["vocab"]
        tok_json["model"]["vocab"] = {text: to_hf(i) for text, i in model_vocab.items()}
        for token in tok_json["added_tokens"]:
            token["id"] = to_hf(token["id"])
        tok_json["added_tokens"].sort(key=lambda token: token["id"])
    special = tokenizer.special_tokens
    eot = to_hf(special[EOT]) if EOT in special else None
    pad = to_hf(special[PAD]) if PAD in special else None
    tensors = gpt2_tensors(model, id_map)

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    save_tensors(out / HF_WEIGHTS, tensors, metadata={"format": "pt"})
    dtype = model.tok_emb.weight.dtype
    atomic_write_text(out / HF_CONFIG, json.dumps(hf_config(config, eot, eot, pad, dtype),
                                                  indent=2) + "\n")
    atomic_write_text(out / HF_TOKENIZER, json.dumps(tok_json, ensure_ascii=False) + "\n")
    tok_config = {"tokenizer_class": "PreTrainedTokenizerFast", "model_max_length": config.n_context,
                  "clean_up_tokenization_spaces": False, "add_prefix_space": False}
    if eot is not None:
        tok_config |= {"bos_token": EOT, "eos_token": EOT}
    if pad is not None:
        tok_config["pad_token"] = PAD
    atomic_write_text(out / HF_TOKENIZER_CONFIG, json.dumps(tok_config, indent=2) + "\n")
    return out


def export_tiktoken(source: str | os.PathLike | tuple[torch.nn.Module, Tokenizer],
                    out: str | os.PathLike) -> tuple[Path, Path]:
    """Write the tokenizer as a tiktoken rank file + JSON (`interop.tokenizers.save_tiktoken`).
    `out` is the .tiktoken file, or a directory (then OUT/tokenizer.tiktoken). Ranks are
    basegpt's ids (tiktoken merges by rank, which must follow merge order); for an imported
    run, map them with the run's IdMap to get the HF ids."""
    if isinstance(source, tuple):
        tokenizer = source[1]
    else:
        tokenizer = Tokenizer.load(Path(source) / TOKENIZER_FILE)
    out = Path(out)
    if out.is_dir() or out.suffix != ".tiktoken":
        out = out / "tokenizer.tiktoken"
    out.parent.mkdir(parents=True, exist_ok=True)
    return save_tiktoken(tokenizer, out)


# ------------------------------------------------------------------------ import

@dataclass
class HFImport:
    """What `import_hf` did: the run written, the weights file read (and whether it was a
    pickle), and the id map (identity when the HF ids already follow basegpt's layout)."""

    run_dir: Path
    weights: Path
    pickled: bool
    id_map: IdMap


def _read_json(path: Path) -> Any:
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
        for shard in sorted(set(_read_json(index).get("weight_map", {}).values())):
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


def read_hf_tokenizer(hf_dir: Path, n_vocab: int | None = None) -> tuple[Tokenizer, IdMap]:
    """basegpt Tokenizer + IdMap from tokenizer.json, or else vocab.json + merges.txt (GPT-2's
    original files; special tokens from tokenizer_config.json / special_tokens_map.json)."""
    if (hf_dir / HF_TOKENIZER).is_file():
        data, source = _read_json(hf_dir / HF_TOKENIZER), hf_dir / HF_TOKENIZER
    elif (hf_dir / "vocab.json").is_file() and (hf_dir / "merges.txt").is_file():
        vocab = _read_json(hf_dir / "vocab.json")
        merges = (hf_dir / "merges.txt").read_text(encoding="utf-8")
        settings: dict[str, Any] = {}
        for name in (HF_TOKENIZER_CONFIG, "special_tokens_map.json"):
            if (hf_dir / name).is_file():
                settings = _read_json(hf_dir / name) | settings
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
        tokenizer, hf_ids = from_hf_tokenizer_json(data, n_vocab)
    except ValueError as error:
        raise ValueError(f"{source}: {error}") from None
    return tokenizer, IdMap(tuple(hf_ids))


def import_hf(hf_dir: str | os.PathLike, run_dir: str | os.PathLike, allow_pickle: bool = False,
              overwrite: bool = False) -> HFImport:
    """Build a basegpt run directory (config.json, model.safetensors, tokenizer.json) from a
    local GPT-2-format directory. `load_run(run_dir)` then gives a model whose logits equal
    HF's (column i of basegpt's = column id_map.hf[i] of HF's) and a tokenizer whose ids map
    to HF's exactly through the IdMap (the identity for basegpt's own exports)."""
    hf_dir, run_dir = Path(hf_dir), Path(run_dir)
    if not hf_dir.is_dir():
        raise FileNotFoundError(f"{hf_dir}: no such directory. basegpt imports local "
                                "directories only and never downloads; for a hub model, "
                                f"download it first (huggingface-cli download NAME --local-dir DIR)")
    if not (hf_dir / HF_CONFIG).is_file():
        raise FileNotFoundError(f"{hf_dir} has no {HF_CONFIG}; it is not a Hugging Face model "
                                "directory")
    if (run_dir / CONFIG_FILE).exists() and not overwrite:
        raise ValueError(f"{run_dir} already holds a run; choose another directory or pass "
                         "overwrite=True (--overwrite)")
    config = config_from_hf(_read_json(hf_dir / HF_CONFIG), str(hf_dir / HF_CONFIG))
    tokenizer, id_map = read_hf_tokenizer(hf_dir, config.vocab_size)
    hf_tensors, weights, pickled = read_hf_weights(hf_dir, allow_pickle)
    identity = id_map.is_identity
    tensors = basegpt_tensors(hf_tensors, config, None if identity else id_map, str(weights))

    run_dir.mkdir(parents=True, exist_ok=True)
    extra: dict[str, Any] = {"imported_from": {"format": "hf-gpt2", "path": str(hf_dir.resolve()),
                                               "weights": weights.name}}
    if not identity:
        extra[ID_MAP_KEY] = id_map.to_runs()
    tokenizer.save(run_dir / TOKENIZER_FILE)
    save_tensors(run_dir / WEIGHTS_FILE, tensors, metadata={"format": "pt"})
    save_config(run_dir, config, tokenizer, extra=extra)   # last: a run is complete once it exists
    return HFImport(run_dir=run_dir, weights=weights, pickled=pickled, id_map=id_map)


__all__ = ["HFImport", "IdMap", "basegpt_tensors", "config_from_hf", "export_hf",
           "export_tiktoken", "gpt2_tensors", "hf_config", "hf_incompatibilities", "import_hf",
           "read_hf_tokenizer", "read_hf_weights", "read_id_map"]
