"""Hugging Face Llama format, both ways: config.json and tensors, basegpt <-> Llama.

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
same way.) Token ids are as for GPT-2 (hf_gpt2.py's docstring); the directory's files are
read and written by hf_files.py, and hf.py's `export_llama` and `import_hf` put the two
together.

Dropout is a training setting: Llama's config has only attention_dropout, so embed_dropout
and resid_dropout are not exported (in eval mode the model computes the same without them).
"""

from __future__ import annotations

import json
from typing import Any

import torch

from basegpt.checkpoint import model_tensors, unwrap
from basegpt.config import ModelConfig
from basegpt.interop.hf_files import HF_CONFIG, HF_WEIGHTS, dtype_keys
from basegpt.model import B2lM

LLAMA_ARCHITECTURES = ("LlamaForCausalLM",)
SILU_NAMES = ("silu", "swish")
"""HF activation names of silu(x) = x * sigmoid(x), the gate of basegpt's SwiGLU."""
_IGNORED_BUFFERS = ("rotary_emb.inv_freq",)
"""RoPE frequencies that early Llama conversions saved with the weights; not weights."""


# ------------------------------------------------------------------------ configs

def llama_model_incompatibilities(config: ModelConfig) -> list[str]:
    """Every field that keeps `config` from computing what a Llama model computes, in any
    runtime (transformers', llama.cpp's), each with the value it would need, e.g.
    "activation='gelu' (needs 'swiglu')": pre-norm RMSNorm blocks with RoPE and SwiGLU, one
    head width, all blocks alike. Each format adds its own needs on top (`llama_incompatibilities`
    here, gguf.py's `gguf_llama_incompatibilities`)."""
    problems = []
    needs = {"norm_position": "pre", "norm": "rmsnorm", "positional": "rope",
             "activation": "swiglu"}
    for name, value in needs.items():
        if getattr(config, name) != value:
            problems.append(f"{name}={getattr(config, name)!r} (needs {value!r})")
    if config.n_v != config.n_k:
        problems.append(f"n_v={config.n_v} (needs n_k={config.n_k}: Llama's heads have one "
                        "width for queries, keys and values)")
    for i, override in enumerate(config.blocks):
        for name, value in override.to_dict().items():
            if name != "attention" and value != getattr(config, name):   # kernels agree
                problems.append(f"blocks[{i}].{name}={value!r} (needs {getattr(config, name)!r}: "
                                "Llama's blocks are all alike)")
    return problems


def llama_incompatibilities(config: ModelConfig) -> list[str]:
    """Every field that keeps `config` from exporting as a Hugging Face Llama: those of
    `llama_model_incompatibilities`, and n_head must divide n_embed. Empty: the model exports
    as Llama."""
    problems = llama_model_incompatibilities(config)
    C, H = config.n_embed, config.n_head
    if C % H:
        problems.append(f"n_head={H} (needs a divisor of n_embed={C}: transformers' "
                        "LlamaConfig refuses others, even with head_dim set)")
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


def tensors_from_llama(hf_tensors: dict[str, torch.Tensor], config: ModelConfig,
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


__all__ = ["LLAMA_ARCHITECTURES", "config_from_llama", "llama_config", "llama_incompatibilities",
           "llama_model_incompatibilities", "llama_tensors", "tensors_from_llama"]
