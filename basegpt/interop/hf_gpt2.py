"""Hugging Face GPT-2 format, both ways: config.json and tensors, basegpt <-> GPT-2.

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

Token ids: basegpt builds tokens in a native order (bytes 0..255, merge i is 256 + i, then the
special tokens), HF numbers them by a vocab table that may be in any order: in GPT-2 "!" is
id 0, and a tokenizer trained with `tokenizers` puts its special tokens first. The id a model
sees indexes its embedding and head rows, so the tokenizer's ids and the row order must agree.
Import gives the tokenizer HF's ids as its numbering (a `RenumberedTokenizer`: token_ids maps
native id -> HF id, stored in tokenizer.json), so basegpt's BPE emits exactly HF's ids and the
rows are copied as they are. The imported run uses HF's ids end to end (tokenizer, prepared shards,
model rows), and export writes the same ids back, so export(import(x)) reproduces x's tensors
and ids bit for bit. Directories that basegpt exported have native ids: no numbering is stored.

hf_llama.py does the same for Llama. The directory's files (tokenizer, weights, the
all-or-nothing writer) are hf_files.py's; hf.py's `export_hf` and `import_hf` put the two
together.
"""

from __future__ import annotations

from typing import Any

import torch

from basegpt.checkpoint import model_tensors, unwrap
from basegpt.config import ModelConfig
from basegpt.interop.hf_files import HF_CONFIG, HF_WEIGHTS, dtype_keys
from basegpt.model import B2lM

GELU_TANH_NAMES = ("gelu_new", "gelu_pytorch_tanh")
"""HF activation names of the tanh-approximated GELU that basegpt's "gelu" computes."""
GPT2_ARCHITECTURES = ("GPT2LMHeadModel", "GPT2Model", "GPT2DoubleHeadsModel")
_IGNORED_BUFFERS = (".attn.bias", ".attn.masked_bias")
"""Causal-mask buffers that old transformers versions saved with the weights; not weights."""

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


# ------------------------------------------------------------------------ configs

def gpt2_incompatibilities(config: ModelConfig) -> list[str]:
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


def gpt2_config(config: ModelConfig, bos_id: int | None, eos_id: int | None,
              pad_id: int | None, dtype: torch.dtype = torch.float32) -> dict[str, Any]:
    """The transformers GPT2Config (config.json) of a GPT-2-compatible ModelConfig.

    Every key that `GPT2Config.save_pretrained` writes is here, and two that it no longer
    writes but other tools read: n_ctx (= n_positions; llama.cpp's convert_hf_to_gguf.py
    stops without it, as the original GPT-2 files have it) and torch_dtype (transformers
    before 4.56 reads the dtype under that name). The summary_* keys configure
    GPT2DoubleHeadsModel's classification head, which this model does not have; they are
    transformers' defaults, so the file reads like one transformers saved.
    """
    return {
        "architectures": ["GPT2LMHeadModel"], "model_type": "gpt2",
        "vocab_size": config.vocab_size, "n_positions": config.n_context,
        "n_ctx": config.n_context,
        "n_embd": config.n_embed, "n_layer": config.n_block, "n_head": config.n_head,
        "n_inner": config.n_ff, "activation_function": "gelu_new",
        "resid_pdrop": config.resid_dropout, "embd_pdrop": config.embed_dropout,
        "attn_pdrop": config.attn_dropout, "layer_norm_epsilon": config.norm_eps,
        "initializer_range": config.init_std, "scale_attn_weights": True,
        "scale_attn_by_inverse_layer_idx": False, "reorder_and_upcast_attn": False,
        "add_cross_attention": False, "use_cache": True,
        "summary_type": "cls_index", "summary_use_proj": True, "summary_activation": None,
        "summary_proj_to_labels": True, "summary_first_dropout": 0.1,
        "tie_word_embeddings": config.tie_weights,
        "bos_token_id": bos_id, "eos_token_id": eos_id, "pad_token_id": pad_id,
        **dtype_keys(dtype),
    }


def config_from_gpt2(hf: dict[str, Any], source: str = HF_CONFIG) -> ModelConfig:
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
    """(GPT-2 name, basegpt name, how): how is "copy" or "transpose" (Conv1D). Vocab rows are
    copied as they are: the tokenizer's ids are HF's (see the module docstring)."""
    names = [("transformer.wte.weight", "tok_emb.weight", "copy"),
             ("transformer.wpe.weight", "positional.weight", "copy")]
    for i in range(config.n_block):
        names += [(f"transformer.h.{i}.{hf}", f"blocks.{i}.{ours}",
                   "transpose" if conv else "copy") for hf, ours, conv in _BLOCK_NAMES]
    names += [("transformer.ln_f.weight", "final_norm.weight", "copy"),
              ("transformer.ln_f.bias", "final_norm.bias", "copy")]
    if not config.tie_weights:
        names.append(("lm_head.weight", "lm_head.weight", "copy"))
    return names


def gpt2_tensors(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The model's weights under GPT-2's names and layouts."""
    model = unwrap(model)
    ours = model_tensors(model)
    out = {}
    for hf_name, name, how in _tensor_names(model.config):
        t = ours[name].detach()
        if how == "transpose":
            t = t.t()
        out[hf_name] = t.contiguous()
    return out


def tensors_from_gpt2(hf_tensors: dict[str, torch.Tensor], config: ModelConfig,
                    source: str = HF_WEIGHTS
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
        out[name] = t.contiguous()
    unexpected = sorted(set(tensors) - {hf_name for hf_name, _, _ in names})
    if unexpected:
        raise ValueError(f"{source}: unexpected tensors {unexpected[:5]} (not part of a GPT-2 "
                         f"model with n_layer={config.n_block})")
    return out


__all__ = ["GPT2_ARCHITECTURES", "config_from_gpt2", "gpt2_config", "gpt2_incompatibilities",
           "gpt2_tensors", "tensors_from_gpt2"]
