"""GGUF export: one file that llama.cpp runs with nothing beside it (weights, hyper-parameters,
tokenizer), written with the `gguf` package, llama.cpp's own writer.

llama.cpp has no "basegpt" architecture, but two of its architectures compute what some B2lMs
compute, so the export picks the one that fits the config:

    "gpt2"   a GPT-2-compatible config (hf_gpt2.gpt2_incompatibilities is empty): pre-norm
             LayerNorm, learned positions, tanh-GELU, biases, n_k == n_v == n_embed / n_head
    "llama"  a Llama model (hf_llama.llama_model_incompatibilities is empty): pre-norm
             RMSNorm, RoPE, SwiGLU, n_k == n_v; and no biases; any n_kv_head dividing n_head
             (grouped-query, multi-query); tied or untied head

Anything else is a ValueError listing, for each architecture, the fields that keep the model
out of it and the values they would need.

Tensors, as llama.cpp's convert_hf_to_gguf.py names and lays them out. A GGUF file lists a
tensor's dims innermost first, so a PyTorch (out, in) matrix is stored as it is, with ne =
[in, out]; every basegpt matrix is an nn.Linear (out, in), so none is transposed:

    GGUF (gpt2 / llama)              basegpt                        how
    token_embd.weight                tok_emb.weight        (V, C)
    position_embd.weight             positional.weight     (P, C)   gpt2; f32 in an f16 file
    blk.i.attn_norm.weight (/.bias)  blocks.i.attn_norm    (C,)
    blk.i.attn_qkv.weight (/.bias)   blocks.i.attn.qkv_proj         gpt2: q | k | v, as ours
    blk.i.attn_q.weight              qkv_proj rows of q    (H*D, C) llama: RoPE rows permuted
    blk.i.attn_k.weight              qkv_proj rows of k    (G*D, C) llama: RoPE rows permuted
    blk.i.attn_v.weight              qkv_proj rows of v    (G*D, C) llama
    blk.i.attn_output.weight (/.bias) blocks.i.attn.out_proj (C, H*D)
    blk.i.ffn_norm.weight (/.bias)   blocks.i.ff_norm      (C,)
    blk.i.ffn_gate.weight            blocks.i.ff.gate      (F, C)   llama
    blk.i.ffn_up.weight (/.bias)     blocks.i.ff.up        (F, C)
    blk.i.ffn_down.weight (/.bias)   blocks.i.ff.down      (C, F)
    output_norm.weight (/.bias)      final_norm            (C,)
    output.weight                    lm_head.weight        (V, C)   absent when tied: llama.cpp
                                                                    then reuses token_embd

The RoPE permutation. basegpt turns the pairs (x[i], x[i + D/2]) of each head ("rotate half", as
HF's Llama and GPT-NeoX); llama.cpp's llama architecture turns adjacent pairs (x[2i], x[2i+1]).
Reordering the rows of Wq and Wk within each head so that

    new row 2i = old row i,    new row 2i + 1 = old row i + D/2        (i < D/2)

makes llama.cpp's rotation exactly ours, and leaves every q . k unchanged, since q and k are
reordered alike. It is the converter's `LlamaModel.permute`, applied to the HF q_proj and k_proj
that basegpt's qkv_proj rows are (`interleave_rope_rows`).

dtype "f16" stores the matrices in float16 and keeps in float32 what the converter keeps there:
norms, biases, and the position table.

The tokenizer: tokenizer.ggml.model "gpt2" (byte-level BPE); the tokens in id order, spelled
in GPT-2's printable byte alphabet as in HF's tokenizer.json (`byte_to_unicode`); the merges
in order as "a b" strings; special tokens typed CONTROL. tokenizer.ggml.pre names llama.cpp's
pre-tokenizer, which must split text as basegpt's pattern does (`PRE_TOKENIZERS`).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch

from basegpt._io import check_writable, errors_name, fsync_dir, new_folder, open_temp
from basegpt._optional import require
from basegpt.checkpoint import model_tensors, unwrap
from basegpt.config import ModelConfig
from basegpt.interop.hf_files import check_folder_target, source_model
from basegpt.interop.hf_gpt2 import gpt2_incompatibilities
from basegpt.interop.hf_llama import llama_model_incompatibilities
from basegpt.interop.tokenizers import hf_tokenizer_json
from basegpt.tokenizer import Tokenizer
from basegpt.tokenizer.tokenizer import EOT, PAD

DTYPES = ("f32", "f16")
FILE_TYPES = {"f32": 0, "f16": 1}
"""general.file_type: llama.cpp's LLAMA_FTYPE_ALL_F32 and LLAMA_FTYPE_MOSTLY_F16."""
QUANTIZATION_VERSION = 2
"""general.quantization_version, as llama.cpp's converter writes it (GGML_QNT_VERSION)."""

PRE_TOKENIZERS = {"gpt2": "gpt-2", "gpt4": "dbrx"}
"""basegpt split pattern -> the tokenizer.ggml.pre that splits text the same way in llama.cpp.

"gpt-2" is GPT-2's pattern. GPT-4's (cl100k_base) pattern has no name of its own in llama.cpp;
"dbrx" is DBRX's, whose tokenizer is cl100k_base, and llama.cpp splits it with exactly the
pattern basegpt's gpt4 renders (contractions in either case, ASCII only). "llama-bpe" splits
the same way but also turns every chunk that is a whole token into that token without merging
(ignore_merges), which gives other ids than merging for the tokens that merging never reaches.
Patterns "none" and custom regexes have no llama.cpp counterpart and are refused."""

TOKEN_NORMAL, TOKEN_CONTROL = 1, 3
"""tokenizer.ggml.token_type values (llama.cpp's LLAMA_TOKEN_TYPE_NORMAL, _CONTROL)."""

_LLAMA_FLAGS = "--norm-position pre --norm rmsnorm --positional rope --activation swiglu --no-bias"
_GPT2_FLAGS = ("--norm-position pre --norm layernorm --positional learned --activation gelu "
               "--bias and n_k = n_v = n_embed / n_head")


# ------------------------------------------------------------------------ configs

def gguf_llama_incompatibilities(config: ModelConfig) -> list[str]:
    """Every field that keeps `config` out of llama.cpp's "llama" architecture as this export
    writes it, each with the value it would need: those of any Llama model
    (`hf_llama.llama_model_incompatibilities`), and no biases (none is written). Unlike
    transformers, n_head need not divide n_embed: the head width is written as
    attention.key_length (`gguf_metadata`). Empty: it fits."""
    problems = llama_model_incompatibilities(config)
    if config.bias:
        problems.append("bias=True (needs False)")
    return problems


def gguf_architecture(config: ModelConfig) -> str:
    """The llama.cpp architecture, "gpt2" or "llama", that computes what `config` computes.
    Neither: a ValueError listing, for each, every field that differs and the value it needs."""
    gpt2, llama = gpt2_incompatibilities(config), gguf_llama_incompatibilities(config)
    if not gpt2:
        return "gpt2"
    if not llama:
        return "llama"
    options = sorted([(llama, "llama", _LLAMA_FLAGS), (gpt2, "gpt2", _GPT2_FLAGS)],
                     key=lambda option: len(option[0]))            # the nearer one first
    reasons = "; ".join(f"as llama.cpp's {arch!r} architecture: {', '.join(problems)}"
                        for problems, arch, _ in options)
    fixes = " or ".join(f"{flags} ({arch})" for _, arch, flags in options)
    raise ValueError(f"this model cannot be exported to GGUF: {reasons}. Train a model with "
                     f"{fixes} to export it")


def gguf_metadata(config: ModelConfig, arch: str, dtype: str) -> dict[str, int | float]:
    """The architecture's hyper-parameters under the keys llama.cpp reads, e.g.
    {"llama.context_length": 256, ...}, plus general.file_type. Integers are written as
    uint32, floats as float32."""
    C, H, D = config.n_embed, config.n_head, config.n_k
    meta: dict[str, int | float] = {
        f"{arch}.context_length": config.n_context,
        f"{arch}.embedding_length": C,
        f"{arch}.block_count": config.n_block,
        f"{arch}.feed_forward_length": config.n_ff,
        f"{arch}.attention.head_count": H,
    }
    if arch == "gpt2":
        meta[f"{arch}.attention.layer_norm_epsilon"] = config.norm_eps
    else:
        meta |= {f"{arch}.vocab_size": config.vocab_size,
                 f"{arch}.attention.head_count_kv": config.n_kv_head or H,
                 f"{arch}.attention.layer_norm_rms_epsilon": config.norm_eps,
                 f"{arch}.rope.dimension_count": D,
                 f"{arch}.rope.freq_base": config.rope_base}
        if C % H or C // H != D:          # llama.cpp's default head width is n_embed / n_head
            meta |= {f"{arch}.attention.key_length": D, f"{arch}.attention.value_length": D}
    meta["general.file_type"] = FILE_TYPES[dtype]
    meta["general.quantization_version"] = QUANTIZATION_VERSION
    return meta


# ------------------------------------------------------------------------ tensors

def interleave_rope_rows(w: torch.Tensor, n_heads: int) -> torch.Tensor:
    """The rows of a query or key projection (n_heads * D, ...) reordered from basegpt's RoPE
    pairs (i, i + D/2) to llama.cpp's (2i, 2i + 1), head by head (module docstring):

        one head, D = 4: rows [r0, r1, r2, r3] -> [r0, r2, r1, r3]
    """
    D = w.shape[0] // n_heads
    return (w.reshape(n_heads, 2, D // 2, *w.shape[1:])     # (heads, half, i, ...)
            .transpose(1, 2)                                # (heads, i, half, ...)
            .reshape(w.shape))


def _gpt2_tensors(ours: dict[str, torch.Tensor], config: ModelConfig) -> dict[str, torch.Tensor]:
    out = {"token_embd.weight": ours["tok_emb.weight"],
           "position_embd.weight": ours["positional.weight"]}
    names = (("attn_norm", "attn_norm"), ("attn_qkv", "attn.qkv_proj"),
             ("attn_output", "attn.out_proj"), ("ffn_norm", "ff_norm"), ("ffn_up", "ff.up"),
             ("ffn_down", "ff.down"))
    for i in range(config.n_block):
        for theirs, mine in names:
            for part in ("weight", "bias"):
                out[f"blk.{i}.{theirs}.{part}"] = ours[f"blocks.{i}.{mine}.{part}"]
    out |= {"output_norm.weight": ours["final_norm.weight"],
            "output_norm.bias": ours["final_norm.bias"]}
    return out


def _llama_tensors(ours: dict[str, torch.Tensor], config: ModelConfig) -> dict[str, torch.Tensor]:
    H, G, D = config.n_head, config.n_kv_head or config.n_head, config.n_k
    out = {"token_embd.weight": ours["tok_emb.weight"]}
    for i in range(config.n_block):
        q, k, v = ours[f"blocks.{i}.attn.qkv_proj.weight"].split([H * D, G * D, G * D])
        out |= {f"blk.{i}.attn_norm.weight": ours[f"blocks.{i}.attn_norm.weight"],
                f"blk.{i}.attn_q.weight": interleave_rope_rows(q, H),
                f"blk.{i}.attn_k.weight": interleave_rope_rows(k, G),
                f"blk.{i}.attn_v.weight": v,
                f"blk.{i}.attn_output.weight": ours[f"blocks.{i}.attn.out_proj.weight"],
                f"blk.{i}.ffn_norm.weight": ours[f"blocks.{i}.ff_norm.weight"],
                f"blk.{i}.ffn_gate.weight": ours[f"blocks.{i}.ff.gate.weight"],
                f"blk.{i}.ffn_up.weight": ours[f"blocks.{i}.ff.up.weight"],
                f"blk.{i}.ffn_down.weight": ours[f"blocks.{i}.ff.down.weight"]}
    out["output_norm.weight"] = ours["final_norm.weight"]
    return out


def gguf_tensors(model: torch.nn.Module, arch: str) -> dict[str, torch.Tensor]:
    """The model's weights under llama.cpp's names and layouts for `arch` ("gpt2" or
    "llama"), float32, in the order they are written. A tied head has no output.weight."""
    model = unwrap(model)
    ours = {name: t.detach().float().cpu() for name, t in model_tensors(model).items()}
    build = {"gpt2": _gpt2_tensors, "llama": _llama_tensors}[arch]
    out = build(ours, model.config)
    if not model.config.tie_weights:
        out["output.weight"] = ours["lm_head.weight"]
    return {name: t.contiguous() for name, t in out.items()}


def stored_dtype(name: str, tensor: torch.Tensor, dtype: str) -> np.dtype:
    """float16 for the matrices of an f16 file, float32 for everything else: norms, biases
    (1-D) and the position table stay float32, as llama.cpp's converter keeps them."""
    half = dtype == "f16" and tensor.dim() == 2 and name != "position_embd.weight"
    return np.dtype(np.float16 if half else np.float32)


# ------------------------------------------------------------------------ tokenizer

def gguf_tokenizer(tokenizer: Tokenizer) -> dict[str, str | int | bool | list]:
    """The tokenizer.ggml.* keys that make llama.cpp's BPE give basegpt's ids: model, pre,
    tokens (in id order), token_type, merges, bos/eos/padding ids, add_bos/add_eos (off:
    basegpt adds no token to a prompt). A pattern llama.cpp cannot split like basegpt, a
    tokenizer without an end-of-text token or without merges is a ValueError saying why."""
    pattern = tokenizer.splitter.name
    if pattern not in PRE_TOKENIZERS:
        raise ValueError(f"the tokenizer's split pattern is {pattern!r}, which llama.cpp's "
                         f"pre-tokenizers cannot reproduce (it knows basegpt's "
                         f"{' and '.join(sorted(PRE_TOKENIZERS))}), so its ids would differ "
                         "from basegpt's; train a tokenizer with --pattern gpt4 (or gpt2) "
                         "and a model on it to export to GGUF")
    if EOT not in tokenizer.special_tokens:
        raise ValueError(f"the tokenizer has no {EOT} token; llama.cpp needs an end-of-text id "
                         "(without one it takes token 11 for it); train a tokenizer with the "
                         "default special tokens")
    if not tokenizer.merges:
        raise ValueError("the tokenizer has no merges (its tokens are the 256 bytes); a GGUF "
                         "byte-level BPE needs at least one merge: train it with a larger "
                         "vocab_size")
    hf = hf_tokenizer_json(tokenizer)            # GPT-2's spelling; checks tokens are distinct
    vocab = hf["model"]["vocab"]                 # text -> public id, every id once
    tokens = sorted(vocab, key=vocab.get)
    assert [vocab[t] for t in tokens] == list(range(len(tokenizer))), "ids are not 0..V-1"
    specials = set(tokenizer.special_tokens.values())
    keys: dict[str, str | int | bool | list] = {
        "tokenizer.ggml.model": "gpt2",
        "tokenizer.ggml.pre": PRE_TOKENIZERS[pattern],
        "tokenizer.ggml.tokens": tokens,
        "tokenizer.ggml.token_type": [TOKEN_CONTROL if i in specials else TOKEN_NORMAL
                                      for i in range(len(tokens))],
        "tokenizer.ggml.merges": [f"{a} {b}" for a, b in hf["model"]["merges"]],
        "tokenizer.ggml.bos_token_id": tokenizer.special_tokens[EOT],
        "tokenizer.ggml.eos_token_id": tokenizer.special_tokens[EOT],
    }
    if PAD in tokenizer.special_tokens:
        keys["tokenizer.ggml.padding_token_id"] = tokenizer.special_tokens[PAD]
    keys |= {"tokenizer.ggml.add_bos_token": False, "tokenizer.ggml.add_eos_token": False}
    return keys


# ------------------------------------------------------------------------ export

def export_gguf(source: str | os.PathLike | tuple[torch.nn.Module, Tokenizer],
                out_path: str | os.PathLike, dtype: str = "f32") -> Path:
    """Write one GGUF file for a run directory or a (model, tokenizer) pair, which llama.cpp
    (llama-cli -m OUT, llama-cpp-python's Llama(OUT)) runs with nothing else: architecture
    "gpt2" or "llama" (`gguf_architecture`), its hyper-parameters, the weights in f32 or f16,
    and the tokenizer. Written atomically (a temporary file renamed into place). Returns
    out_path.

    Raises ValueError for a model neither architecture computes (listing every field and the
    value it needs), a tokenizer llama.cpp cannot reproduce, a bad dtype or an out_path that
    is a folder; MissingDependency when the gguf package is not installed.
    """
    if dtype not in DTYPES:
        raise ValueError(f"dtype={dtype!r}; choose one of: {', '.join(DTYPES)}")
    gguf = require("gguf", "exporting to GGUF")
    out = Path(out_path)
    if out.is_dir():
        raise ValueError(f"{out} is a folder, but the GGUF file must go there; give a file "
                         f"path, e.g. {out / 'model.gguf'}")
    check_folder_target(out.parent, "the output folder")
    check_writable(out)
    model, tokenizer = source_model(source)
    config = model.config
    arch = gguf_architecture(config)
    if config.vocab_size != len(tokenizer):
        raise ValueError(f"model vocab_size={config.vocab_size} but the tokenizer has "
                         f"{len(tokenizer)} tokens")
    name = "basegpt" if isinstance(source, tuple) else Path(source).resolve().name
    metadata = {"general.name": name} | gguf_metadata(config, arch, dtype)
    metadata |= gguf_tokenizer(tokenizer)
    tensors = gguf_tensors(model, arch)
    with new_folder(out.parent), errors_name(out):
        fd, tmp = open_temp(out.parent, prefix=f".{out.name}.", suffix=".tmp")
        os.close(fd)
        try:
            _write(gguf, tmp, arch, metadata, tensors, dtype)
            os.replace(tmp, out)
        except BaseException:
            # Ctrl-C included: no half-written file, and an earlier export stays whole.
            if os.path.exists(tmp):
                os.unlink(tmp)
            raise
    fsync_dir(out.parent)
    return out


def _write(gguf, path: str, arch: str, metadata: dict, tensors: dict[str, torch.Tensor],
           dtype: str) -> None:
    writer = gguf.GGUFWriter(path, arch)                    # writes general.architecture
    for key, value in metadata.items():
        if isinstance(value, bool):                         # before int: a bool is an int
            writer.add_bool(key, value)
        elif isinstance(value, int):
            writer.add_uint32(key, value)
        elif isinstance(value, float):
            writer.add_float32(key, value)
        elif isinstance(value, str):
            writer.add_string(key, value)
        else:
            writer.add_array(key, value)                    # str -> STRING, int -> INT32 items
    for name, t in tensors.items():
        writer.add_tensor(name, np.ascontiguousarray(t.numpy(), stored_dtype(name, t, dtype)))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    with open(path, "rb+") as f:                            # durable before the rename
        os.fsync(f.fileno())


__all__ = ["DTYPES", "PRE_TOKENIZERS", "export_gguf", "gguf_architecture",
           "gguf_llama_incompatibilities", "gguf_metadata", "gguf_tensors", "gguf_tokenizer",
           "interleave_rope_rows", "stored_dtype"]
