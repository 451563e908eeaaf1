"""Hugging Face Llama format, both ways, and the choice between GPT-2 and Llama for a model.

A Llama-compatible B2lM (pre-norm RMSNorm blocks, RoPE, SwiGLU, one head width D for queries,
keys and values, all blocks alike) computes exactly what HF's LlamaForCausalLM computes:

    RMSNorm    y = g * x / sqrt(mean(x ** 2) + eps)      eps = rms_norm_eps; no bias, no mean
    attention  softmax(q k^T / sqrt(D)) v, causal; G <= H kv heads, kv head g serving query
               heads g*H/G .. (g+1)*H/G - 1 (HF's repeat_kv); biases on q, k, v, o or none
    RoPE       pair (x[i], x[i + D/2]) turned by p * rope_theta ** (-2i / D) ("rotate half")
    SwiGLU     down(silu(gate(x)) * up(x))               hidden_act "silu"
    model      embedding (no scale, nothing added) -> blocks -> final RMSNorm -> head, no bias

Both rotate the same pairs, so q_proj and k_proj rows are copied as they are, without the
row permutation that Meta's original checkpoints (adjacent pairs) need. HF computes RMSNorm
in float32 and casts back, which is basegpt's arithmetic for float32 weights. So the
conversion only renames tensors and cuts the fused qkv_proj in three; nothing is transposed:

    basegpt                             Llama (transformers), model.layers.i.*       rows
    tok_emb.weight         (V, C)       model.embed_tokens.weight      (V, C)
    blocks.i.attn_norm     (C,)         input_layernorm                (C,)
    blocks.i.attn.qkv_proj (HD+2GD, C)  self_attn.q_proj               (HD, C)      first HD
                                        self_attn.k_proj               (GD, C)      next GD
                                        self_attn.v_proj               (GD, C)      last GD
    blocks.i.attn.out_proj (C, HD)      self_attn.o_proj               (C, HD)
    blocks.i.ff_norm       (C,)         post_attention_layernorm       (C,)
    blocks.i.ff.gate       (F, C)       mlp.gate_proj                  (F, C)
    blocks.i.ff.up         (F, C)       mlp.up_proj                    (F, C)
    blocks.i.ff.down       (C, F)       mlp.down_proj                  (C, F)
    final_norm             (C,)         model.norm                     (C,)
    lm_head.weight         (V, C)       lm_head.weight                 absent when tied

(norms: their .weight; with bias=True each projection's .bias follows its weight, cut the
same way.) Token ids, the tokenizer files, reading weights (safetensors only unless
allow_pickle) and the all-or-nothing writer are hf_gpt2.py's; its `import_hf` reads Llama
directories through `config_from_llama` and `basegpt_tensors` here.

Dropout is a training setting: Llama's config has only attention_dropout, so embed_dropout
and resid_dropout are not exported (in eval mode the model computes the same without them).

`hf_format` picks the architecture for a model, GPT-2 first (the format more tools read),
and `export_auto` exports with it; a model that neither expresses is refused with every field
named, the nearest exportable preset and the command that trains one (`export_hint`).
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any

import torch

from basegpt._io import check_writable
from basegpt.checkpoint import model_tensors, unwrap
from basegpt.config import ModelConfig
from basegpt.interop.hf_files import (HF_CONFIG, HF_WEIGHTS, check_folder_target, dtype_keys,
                                      source_model, write_hf_dir)
from basegpt.interop.hf_gpt2 import export_hf, hf_incompatibilities
from basegpt.model import B2lM
from basegpt.tokenizer import Tokenizer

LLAMA_ARCHITECTURES = ("LlamaForCausalLM",)
SILU_NAMES = ("silu", "swish")
"""HF activation names of silu(x) = x * sigmoid(x), the gate of basegpt's SwiGLU."""
_IGNORED_BUFFERS = ("rotary_emb.inv_freq",)
"""RoPE frequencies that early Llama conversions saved with the weights; not weights."""
FORMAT_NAMES = {"gpt2": "GPT-2", "llama": "Llama"}
_KERNELS = ("attention", "norm_kernel", "activation_kernel")
"""ModelConfig fields that choose how, not what, the model computes."""


# ------------------------------------------------------------------------ configs

def llama_incompatibilities(config: ModelConfig) -> list[str]:
    """Every field that keeps `config` from being a Llama model, each with the value it would
    need, e.g. "activation='gelu' (needs 'swiglu')". Empty: the model exports as Llama."""
    problems = []
    needs = {"norm_position": "pre", "norm": "rmsnorm", "positional": "rope",
             "activation": "swiglu"}
    for name, value in needs.items():
        if getattr(config, name) != value:
            problems.append(f"{name}={getattr(config, name)!r} (needs {value!r})")
    if config.n_v != config.n_k:
        problems.append(f"n_v={config.n_v} (needs n_k={config.n_k}: Llama's heads have one "
                        "width for queries, keys and values)")
    C, H = config.n_embed, config.n_head
    if C % H:
        problems.append(f"n_head={H} (needs a divisor of n_embed={C}: transformers' "
                        "LlamaConfig refuses others, even with head_dim set)")
    for i, override in enumerate(config.blocks):
        for name, value in override.to_dict().items():
            if name != "attention" and value != getattr(config, name):   # kernels agree
                problems.append(f"blocks[{i}].{name}={value!r} (needs {getattr(config, name)!r}: "
                                "Llama's blocks are all alike)")
    return problems


def llama_config(config: ModelConfig, bos_id: int | None, eos_id: int | None,
                 pad_id: int | None, dtype: torch.dtype = torch.float32) -> dict[str, Any]:
    """The transformers LlamaConfig (config.json) of a Llama-compatible ModelConfig.

    Every key that `LlamaConfig.save_pretrained` writes, plus rope_theta at the top level
    and torch_dtype, where transformers before 5 (and tools written for it) read them;
    transformers 5 reads rope_parameters and dtype.
    """
    return {
        "architectures": ["LlamaForCausalLM"], "model_type": "llama",
        "vocab_size": config.vocab_size, "hidden_size": config.n_embed,
        "intermediate_size": config.n_ff, "num_hidden_layers": config.n_block,
        "num_attention_heads": config.n_head,
        "num_key_value_heads": config.n_kv_head or config.n_head, "head_dim": config.n_k,
        "hidden_act": "silu", "max_position_embeddings": config.n_context,
        "initializer_range": config.init_std, "rms_norm_eps": config.norm_eps,
        "rope_theta": config.rope_base,
        "rope_parameters": {"rope_theta": config.rope_base, "rope_type": "default"},
        "attention_bias": config.bias, "mlp_bias": config.bias,
        "attention_dropout": config.attn_dropout, "pretraining_tp": 1, "use_cache": True,
        "tie_word_embeddings": config.tie_weights,
        "bos_token_id": bos_id, "eos_token_id": eos_id, "pad_token_id": pad_id,
        **dtype_keys(dtype),
    }


def config_from_llama(hf: dict[str, Any], source: str = HF_CONFIG) -> ModelConfig:
    """The ModelConfig of a transformers Llama config.json (parsed), with LlamaConfig's
    defaults for absent keys. Each setting basegpt does not compute the same way (scaled or
    other RoPE types, sliding windows, another activation, ...) is named, key and value, in
    one ValueError."""
    archs = hf.get("architectures") or []
    known = not archs or set(archs) & set(LLAMA_ARCHITECTURES)
    if hf.get("model_type", "llama") != "llama" or not known:
        raise ValueError(f"{source}: unknown architecture (model_type={hf.get('model_type')!r}, "
                         f"architectures={archs}); basegpt imports Llama language models "
                         f"({', '.join(LLAMA_ARCHITECTURES)})")
    C, H = hf.get("hidden_size", 4096), hf.get("num_attention_heads", 32)
    act = hf.get("hidden_act", "silu")
    attention_bias, mlp_bias = hf.get("attention_bias", False), hf.get("mlp_bias", False)
    problems = [] if act in SILU_NAMES else [
        f"hidden_act={act!r} (basegpt's SwiGLU gates with silu)"]
    for key in ("rope_scaling", "rope_parameters"):
        params = hf.get(key)
        rope_type = (params.get("rope_type", params.get("type", "default"))
                     if isinstance(params, dict) else None)
        if params is not None and rope_type != "default":
            problems.append(f"{key}={json.dumps(params)} (basegpt's RoPE is the plain one, "
                            "rope_type 'default': no scaling or long-context variant)")
    if hf.get("sliding_window") is not None or hf.get("use_sliding_window"):
        problems.append(f"sliding_window={hf.get('sliding_window')!r} (basegpt attends to the "
                        "whole context; remove the key if the model was trained that way)")
    layer_types = set(hf.get("layer_types") or []) - {"full_attention"}
    if layer_types:
        problems.append(f"layer_types with {sorted(layer_types)} (basegpt's layers all attend "
                        "to the whole context)")
    if attention_bias != mlp_bias:
        problems.append(f"attention_bias={attention_bias} with mlp_bias={mlp_bias} (basegpt "
                        "has one bias setting for every projection: needs both equal)")
    if not isinstance(H, int) or H < 1 or C % H:
        problems.append(f"num_attention_heads={H} does not divide hidden_size={C}")
    if problems:
        raise ValueError(f"{source}: cannot import: {'; '.join(problems)}")
    G = hf.get("num_key_value_heads") or H
    D = hf.get("head_dim") or C // H
    rope = hf.get("rope_parameters") or {}
    try:
        return ModelConfig(
            vocab_size=hf.get("vocab_size", 32000),
            n_context=hf.get("max_position_embeddings", 2048),
            n_block=hf.get("num_hidden_layers", 32), n_embed=C, n_head=H,
            n_kv_head=None if G == H else G, n_k=D, n_v=D,
            n_ff=hf.get("intermediate_size", 11008), norm_position="pre", norm="rmsnorm",
            norm_eps=hf.get("rms_norm_eps", 1e-6), positional="rope",
            rope_base=rope.get("rope_theta", hf.get("rope_theta", 10000.0)),
            activation="swiglu", bias=attention_bias,
            tie_weights=hf.get("tie_word_embeddings", False),
            attn_dropout=hf.get("attention_dropout", 0.0),
            init_std=hf.get("initializer_range", 0.02))
    except (TypeError, ValueError) as error:
        raise ValueError(f"{source}: {error}") from None


# ------------------------------------------------------------------------ tensors

Rows = tuple[int, int] | None
"""Which rows of a basegpt tensor an HF tensor holds (start, stop), or None: all of it."""


def _tensor_names(config: ModelConfig) -> list[tuple[str, str, Rows]]:
    """(Llama name, basegpt name, rows), in the order that q, k, v rows follow each other."""
    H, G, D = config.n_head, config.n_kv_head or config.n_head, config.n_k
    qkv = {"q_proj": (0, H * D), "k_proj": (H * D, (H + G) * D),
           "v_proj": ((H + G) * D, (H + 2 * G) * D)}
    kinds = ("weight", "bias") if config.bias else ("weight",)
    names: list[tuple[str, str, Rows]] = [("model.embed_tokens.weight", "tok_emb.weight", None)]
    for i in range(config.n_block):
        hf, ours = f"model.layers.{i}.", f"blocks.{i}."
        names.append((hf + "input_layernorm.weight", ours + "attn_norm.weight", None))
        for kind in kinds:
            names += [(f"{hf}self_attn.{proj}.{kind}", f"{ours}attn.qkv_proj.{kind}", rows)
                      for proj, rows in qkv.items()]
            names.append((f"{hf}self_attn.o_proj.{kind}", f"{ours}attn.out_proj.{kind}", None))
        names.append((hf + "post_attention_layernorm.weight", ours + "ff_norm.weight", None))
        for kind in kinds:
            names += [(f"{hf}mlp.{part}_proj.{kind}", f"{ours}ff.{part}.{kind}", None)
                      for part in ("gate", "up", "down")]
    names.append(("model.norm.weight", "final_norm.weight", None))
    if not config.tie_weights:
        names.append(("lm_head.weight", "lm_head.weight", None))
    return names


def llama_tensors(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The model's weights under Llama's names, q, k and v cut out of qkv_proj."""
    model = unwrap(model)
    ours = model_tensors(model)
    out = {}
    for hf_name, name, rows in _tensor_names(model.config):
        t = ours[name].detach()
        if rows is not None:
            t = t[rows[0]:rows[1]]
        # A copy of its own: safetensors refuses tensors that share memory (q, k, v would).
        out[hf_name] = t.clone(memory_format=torch.contiguous_format)
    return out


def basegpt_tensors(hf_tensors: dict[str, torch.Tensor], config: ModelConfig,
                    source: str = HF_WEIGHTS) -> dict[str, torch.Tensor]:
    """Llama tensors -> basegpt's names, q, k and v joined into qkv_proj; every missing,
    unexpected or misshapen tensor is a ValueError naming it and the shape `config` needs."""
    with torch.device("meta"):                         # shapes only: no memory, no init
        expected = model_tensors(B2lM(config))
    tensors = {name: t for name, t in hf_tensors.items() if not name.endswith(_IGNORED_BUFFERS)}
    if config.tie_weights:
        tensors.pop("lm_head.weight", None)            # tied: the head is embed_tokens
    names = _tensor_names(config)
    parts: dict[str, list[torch.Tensor]] = {}
    for hf_name, name, rows in names:
        shape = tuple(expected[name].shape)
        if rows is not None:
            shape = (rows[1] - rows[0], *shape[1:])
        if hf_name not in tensors:
            raise ValueError(f"{source}: tensor {hf_name} is missing (expected shape {shape} "
                             "for this config.json)")
        t = tensors[hf_name]
        if tuple(t.shape) != shape:
            raise ValueError(f"{source}: tensor {hf_name} has shape {tuple(t.shape)} but "
                             f"config.json needs {shape}")
        parts.setdefault(name, []).append(t)
    unexpected = sorted(set(tensors) - {hf_name for hf_name, _, _ in names})
    if unexpected:
        raise ValueError(f"{source}: unexpected tensors {unexpected[:5]} (not part of a Llama "
                         f"model with num_hidden_layers={config.n_block}, "
                         f"attention_bias={config.bias})")
    return {name: torch.cat(ts) if len(ts) > 1 else ts[0].contiguous()
            for name, ts in parts.items()}


# ------------------------------------------------------------------------ export

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
    out = Path(out_dir)
    check_folder_target(out, "the output folder")
    check_writable(out)
    model, tokenizer = source_model(source)
    problems = llama_incompatibilities(model.config)
    if problems:
        raise ValueError("this model cannot be exported to Llama format: " + "; ".join(problems)
                         + ". " + export_hint(model.config, refused="llama"))
    write_hf_dir(out, model, tokenizer, llama_config, llama_tensors)
    return out


def hf_format(config: ModelConfig) -> str:
    """The Hugging Face architecture that expresses `config`: "gpt2" when GPT-2 does
    (`hf_incompatibilities` is empty), else "llama" when Llama does. Neither: a ValueError
    listing what each needs, the nearest exportable preset and the command that trains one."""
    gpt2, llama = hf_incompatibilities(config), llama_incompatibilities(config)
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
    if refused == "llama" and not hf_incompatibilities(config):
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
    from basegpt.recipe import load_preset, preset_names
    with torch.device("meta"):                         # sizes only: no memory, no init
        n_ours = B2lM(config).num_parameters()
        found = []
        for name in preset_names():
            preset = ModelConfig.from_dict(load_preset(name).get("model", {})).replace(
                vocab_size=config.vocab_size)
            if hf_incompatibilities(preset) and llama_incompatibilities(preset):
                continue
            architecture = "llama" if hf_incompatibilities(preset) else "gpt2"
            ours, theirs = config.to_dict(), preset.to_dict()
            differs = [key for key in ours if key not in ("vocab_size", *_KERNELS)
                       and ours[key] != theirs[key]]
            size = abs(math.log(B2lM(preset).num_parameters() / n_ours))
            found.append((size, len(differs), name, architecture, differs))
    assert found, "basegpt ships exportable presets (gpt2-small, laptop-llama)"
    *_, name, architecture, differs = min(found)
    return name, architecture, differs


__all__ = ["LLAMA_ARCHITECTURES", "basegpt_tensors", "config_from_llama", "export_auto",
           "export_hint", "export_llama", "hf_format", "llama_config",
           "llama_incompatibilities", "llama_tensors", "nearest_exportable_preset"]
