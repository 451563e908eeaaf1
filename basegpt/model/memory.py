"""How much memory a B2lM needs, from its config alone, and the check that refuses one that
cannot fit before a single tensor is made.

A size typed one digit too long (`n_context=10**9`) would otherwise ask torch for hundreds of
gigabytes: at best an allocator error deep inside a constructor, at worst a machine that
swaps or an out-of-memory kill. The estimate counts what dominates:

    weights     every parameter (counted exactly from the config, for the built-in parts)
    tables      the sinusoidal / RoPE position tables (n_context rows), at their peak while
                they are built: positional.py computes them in float64, then keeps float32
    training    (with batch_size) the gradients and Adam's two moments (3 more copies of the
                weights), and per micro-batch the float32 logits (batch_size x n_context x
                vocab_size) and the residual stream each block keeps for the backward pass

It leaves out the other activations, attention scores and allocator slack, so the real need
is higher than the estimate and a refusal is no false alarm.

    memory_needed(ModelConfig(n_context=10**9, positional="learned"))   # -> about 477 GiB
"""

from __future__ import annotations

import torch

from basegpt.config import ModelConfig
from basegpt.devices import available_memory, format_bytes

# Peak bytes per table value while positional.py builds a table in float64 and keeps float32:
# sinusoidal holds the angles (half a value each), the float64 table and its float32 copy;
# RoPE the angles, one float64 cos or sin and both float32 tables.
TABLE_BUILD_BYTES = {"sinusoidal": 16, "rope": 12}
ADAM_COPIES = 3                  # a gradient and two moments per parameter
CHECKED_FROM = 256 * 2**20
"""check_fits reads the free memory only for needs from this size up: any machine that runs
torch has that much, and the everyday small model then pays for nothing but the arithmetic."""


def parameter_count(config: ModelConfig) -> int:
    """The number of parameters of B2lM(config), a tied head once, without building it
    (exact for basegpt's own components; tests compare it with the built model)."""
    C, V = config.n_embed, config.vocab_size
    bias = int(config.bias)

    def norm(kind: str) -> int:              # a gain, and a bias for LayerNorm with bias=True
        return C + (C * bias if kind == "layernorm" else 0)

    n = V * C * (1 if config.tie_weights else 2)                     # embedding, head
    if config.positional == "learned":
        n += config.n_context * C
    for b in config.block_configs:
        qkv = b.n_head * b.n_k + b.n_kv_head * (b.n_k + b.n_v)       # fused q, k, v outputs
        n += C * qkv + qkv * bias + b.n_head * b.n_v * C + C * bias  # qkv_proj, out_proj
        inputs = 2 if b.activation == "swiglu" else 1                # SwiGLU: gate and up
        n += (inputs + 1) * C * b.n_ff + (inputs * b.n_ff + C) * bias
        n += 2 * norm(b.norm)
    if config.norm_position == "pre":
        n += norm(config.norm)                                       # the final norm
    return n


def table_values(config: ModelConfig) -> int:
    """Values in the position tables B2lM(config) keeps as buffers: n_context x n_embed for
    sinusoidal, n_context x n_k/2 for each of cos and sin per distinct n_k for RoPE."""
    P = config.n_context
    if config.positional == "sinusoidal":
        return P * config.n_embed
    if config.positional == "rope":
        return sum(2 * P * (n_k // 2) for n_k in {b.n_k for b in config.block_configs})
    return 0


def memory_parts(config: ModelConfig, batch_size: int | None = None,
                 value_bytes: int = 4) -> dict[str, int]:
    """memory_needed, part by part: {description naming the settings it grows with: bytes}."""
    V, C, P = config.vocab_size, config.n_embed, config.n_context
    learned = P * C * value_bytes if config.positional == "learned" else 0
    weights = parameter_count(config) * value_bytes
    parts = {f"weights (vocab_size={V}, n_embed={C}, n_block={config.n_block})": weights - learned}
    if learned:
        parts[f"learned position table (n_context={P} x n_embed={C})"] = learned
    if config.positional in TABLE_BUILD_BYTES:
        parts[f"{config.positional} position tables (n_context={P} rows)"] = (
            table_values(config) * TABLE_BUILD_BYTES[config.positional])
    if batch_size is not None:
        parts["gradients and Adam's moments"] = ADAM_COPIES * weights
        parts[f"activations (batch_size={batch_size} x n_context={P} x (vocab_size={V} + "
              f"n_block={config.n_block} x n_embed={C}))"] = (
            batch_size * P * (V + config.n_block * C) * 4)
    return parts


def memory_needed(config: ModelConfig, batch_size: int | None = None) -> int:
    """Bytes that building B2lM(config) takes at its peak, in the default dtype; with
    `batch_size`, what training it takes at least (module docstring)."""
    return sum(memory_parts(config, batch_size, _value_bytes()).values())


def check_fits(config: ModelConfig, device: torch.device | str | None = None,
               batch_size: int | None = None) -> None:
    """Raise ValueError when B2lM(config) (with `batch_size`: training it) cannot fit in the
    memory `device` has available (default: torch's default device, where B2lM builds its
    tensors). Nothing is refused where the available memory is unknown, or on the meta
    device, which allocates nothing."""
    if device is None:
        device = torch.get_default_device()
    device = torch.device(device)
    if device.type == "meta":
        return
    parts = memory_parts(config, batch_size, _value_bytes())
    needed = sum(parts.values())
    if needed < CHECKED_FROM:
        return
    available = available_memory(device)
    if available is None or needed <= available:
        return
    what = "training this model" if batch_size is not None else "building this model"
    largest = max(parts, key=parts.get)
    raise ValueError(f"{what} needs about {format_bytes(needed)} of memory, but {device} has "
                     f"{format_bytes(available)} available; the largest part is {largest}: "
                     f"{format_bytes(parts[largest])}; lower {_settings(largest)}")


def _settings(part: str) -> str:
    """The settings a part names, with their flags: "(n_context=100 rows)" ->
    "n_context (--n-context)"."""
    names = dict.fromkeys(word.split("=")[0] for word in part.replace("(", " ").split()
                          if "=" in word)
    return " or ".join(f"{name} (--{name.replace('_', '-')})" for name in names)


def _value_bytes() -> int:
    return torch.get_default_dtype().itemsize


__all__ = ["check_fits", "memory_needed", "memory_parts", "parameter_count", "table_values"]
