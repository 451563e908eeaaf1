"""The compiled one-token step: DecodeStep's computation for one sequence, in C.

At batch 1 a small model's decoding step is a few hundred microseconds of arithmetic, and
DecodeStep still makes some forty torch and numpy calls per step, whose dispatch costs more
than their arithmetic. `CompiledStep` runs the whole step as one call into the optional C
extension basegpt/fast/_decode.c (built by setup.py like the tokenizer's _bpe.c), which reads
the parameters and the KV cache in place:

    x = embed(tok_emb[token], pos)                                            (C,)
    per block:  pre-norm:  x += attn(norm1(x));   x += ff(norm2(x))
                post-norm: x = norm1(x + attn(x)); x = norm2(x + ff(x))
    logits = final_norm(x) W_head                                             (V,)

with attn the model's causal attention of the one query over the cache (any G dividing H,
RoPE in its rotate-half pairs, learned, sinusoidal or no positions), LayerNorm or RMSNorm,
and ReLU, GELU (tanh) or SwiGLU feed-forwards: every combination basegpt's config builds.
Each matrix-vector product's outputs are shared between torch.get_num_threads() threads.
It sums in its own order, so its logits match the forward's to float rounding (tests: within
1e-5, the same greedy and sampled tokens), not bit for bit.

DecodeStep uses it for one unpadded row when `compiled_unsupported` finds nothing it does not
cover and the extension was built; otherwise (several rows, other dtypes or devices, a custom
activation or norm, no compiler at install time) DecodeStep runs its torch steps.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from torch import nn

from basegpt.fast.support import unsupported
from basegpt.model.block import PreNormBlock
from basegpt.model.feedforward import ACTIVATIONS, FUSED_ACTIVATIONS, MLP, SwiGLU
from basegpt.model.norms import LayerNorm, RMSNorm
from basegpt.model.positional import Learned, Positional, Rotary, Sinusoidal

try:
    from basegpt.fast import _decode
except ImportError:                 # not compiled (no compiler at install time, Windows)
    _decode = None

if TYPE_CHECKING:
    from basegpt.model.b2lm import B2lM
    from basegpt.model.kv_cache import KVCache

# The codes _decode.c's enums use.
NORM_NONE, NORM_LAYER, NORM_RMS = 0, 1, 2
POS_NONE, POS_LEARNED, POS_SINUSOIDAL, POS_ROPE = 0, 1, 2, 3
FF_RELU, FF_GELU, FF_SWIGLU = 0, 1, 2
_FF_CODES = {id(table[name]): code for table in (ACTIVATIONS, FUSED_ACTIVATIONS)
             for name, code in (("relu", FF_RELU), ("gelu", FF_GELU))}
_SILUS = {id(ACTIVATIONS["silu"]), id(FUSED_ACTIVATIONS["silu"])}
_POSITIONALS = {Positional: POS_NONE, Learned: POS_LEARNED, Sinusoidal: POS_SINUSOIDAL,
                Rotary: POS_ROPE}


def available() -> bool:
    """Whether the C extension basegpt.fast._decode was built at install time."""
    return _decode is not None


def compiled_unsupported(model: B2lM) -> str | None:
    """What in a model that DecodeStep accepts (`basegpt.fast.unsupported`) the compiled step
    does not cover, or None if it covers all of it."""
    if _decode is None:
        return ("the C extension basegpt.fast._decode was not built (reinstall with a C "
                "compiler: pip install -e .)")
    tables = set(model.positional.modules())            # read as one block each, as vectors
    for module in model.modules():                      # one walk: it runs every generation
        for t in (*module._parameters.values(), *module._buffers.values()):
            if t is None:
                continue
            if t.dtype != torch.float32 or t.device.type != "cpu":
                return "its parameters are not all float32 on the CPU"
            if not t.is_contiguous() and (t.dim() != 2 or module in tables):
                return "a vector or position table of its is not contiguous in memory"
    if model.tok_emb.max_norm is not None:
        return "tok_emb renormalises its rows (max_norm)"
    if type(model.positional) not in _POSITIONALS:
        return f"positional is a {type(model.positional).__name__}"
    if _norm_code(model.final_norm) is None:
        return f"final_norm is a {type(model.final_norm).__name__}"
    for i, block in enumerate(model.blocks):
        for what in ("attn_norm", "ff_norm"):
            part = getattr(block, what)
            if _norm_code(part) is None or type(part) is nn.Identity:
                return f"block {i}'s {what} is a {type(part).__name__}"
        ff = block.ff
        if isinstance(ff, MLP) and id(ff.activation) not in _FF_CODES:
            return f"block {i}'s feed-forward activation is {ff.activation!r}"
        if isinstance(ff, SwiGLU) and id(ff.silu) not in _SILUS:
            return f"block {i}'s SwiGLU gate is {ff.silu!r}"
    return None


def _norm_code(module: nn.Module) -> int | None:
    # Both kernels of basegpt's norms compute the same formula (tests/test_model_components).
    return {nn.Identity: NORM_NONE, LayerNorm: NORM_LAYER, RMSNorm: NORM_RMS}.get(type(module))


class CompiledStep:
    """model(ids[:, None], kv_cache=cache, logits_for="last")[:, -1] for one row, in C.

        step = CompiledStep(model)          # once per generation, after the prefill
        logits = step(next_id, cache)       # (1,) id -> (1, V); the cache moves on 1

    Like DecodeStep it reads the parameters' memory as it finds it when built (updates made in
    place are seen; a parameter replaced later is not) and holds on to those tensors, so the
    memory it reads stays alive. Threads: torch.get_num_threads() when built; its buffers are
    its own, so one step object serves one generation at a time, as generate.py uses it.
    """

    def __init__(self, model: B2lM) -> None:
        reason = unsupported(model) or compiled_unsupported(model)
        if reason is not None:
            raise ValueError(f"CompiledStep cannot run this model: {reason}; use DecodeStep")
        self.model, self.keep = model, []           # keep: every tensor whose memory C reads
        self.V, self.n_context = model.config.vocab_size, model.config.n_context
        emb = self._tensor(model.tok_emb.weight)
        positional, pos_kind = model.positional, _POSITIONALS[type(model.positional)]
        table, scale = None, 1.0
        if pos_kind == POS_LEARNED:
            table = positional.weight
        elif pos_kind == POS_SINUSOIDAL:
            table, scale = positional.table, float(positional.scale)
        model_spec = (self.V, model.config.n_embed, self.n_context, emb.data_ptr(),
                      emb.stride(0), emb.stride(1), pos_kind, self._address(table), scale,
                      *self._norm(model.final_norm), *self._linear(model.lm_head))
        layers = tuple(self._layer(block, positional) for block in model.blocks)
        self.n_threads = torch.get_num_threads()
        self.plan = _decode.new(model_spec, layers, self.n_threads)
        self.cache: KVCache | None = None

    def _tensor(self, t: torch.Tensor) -> torch.Tensor:
        t = t.detach()
        self.keep.append(t)
        return t

    def _address(self, t: torch.Tensor | None, contiguous: bool = True) -> int:
        if t is None:
            return 0
        t = self._tensor(t)
        assert not contiguous or t.is_contiguous(), "C reads this tensor as one block"
        return t.data_ptr()

    def _norm(self, module: nn.Module) -> tuple:
        code = _norm_code(module)
        if code == NORM_NONE:
            return (NORM_NONE, 0, 0, 0.0)
        return (code, self._address(module.weight), self._address(getattr(module, "bias", None)),
                float(module.eps))

    def _linear(self, module: nn.Linear) -> tuple:
        w = self._tensor(module.weight)                         # (out, in), any strides
        return (w.data_ptr(), w.stride(0), w.stride(1), self._address(module.bias),
                module.in_features, module.out_features)

    def _layer(self, block: nn.Module, positional: nn.Module) -> tuple:
        attn, ff = block.attn, block.ff
        cos = sin = None
        if isinstance(positional, Rotary):
            table = positional.tables[str(attn.n_k)]
            cos, sin = table.cos, table.sin                    # (n_context, D/2) each
        if isinstance(ff, SwiGLU):
            ff_kind, gate = FF_SWIGLU, self._linear(ff.gate)
        else:
            ff_kind, gate = _FF_CODES[id(ff.activation)], (0, 0, 0, 0, 0, 0)
        return (int(type(block) is PreNormBlock),
                attn.n_head, attn.n_kv_head, attn.n_k, attn.n_v, ff.up.out_features, ff_kind,
                *self._norm(block.attn_norm), *self._norm(block.ff_norm),
                *self._linear(attn.qkv_proj), *self._linear(attn.out_proj), *gate,
                *self._linear(ff.up), *self._linear(ff.down),
                self._address(cos), self._address(sin))

    def _bind(self, cache: KVCache) -> None:
        """Point the C step at this cache's buffers, after checking they are what it writes:
        one row, float32 on the CPU, contiguous (G, max_len, D) per layer."""
        for what in ("keys", "values"):
            for t in getattr(cache, what):
                if t.dtype != torch.float32 or t.device.type != "cpu" or not t.is_contiguous():
                    raise ValueError(f"CompiledStep needs a float32 CPU KV cache, got {what} "
                                     f"{t.dtype} on {t.device}; make it with model.new_kv_cache")
        _decode.bind_cache(self.plan, tuple(k.data_ptr() for k in cache.keys),
                           tuple(v.data_ptr() for v in cache.values), cache.max_len)
        self.cache = cache

    def __call__(self, ids: torch.Tensor, cache: KVCache,
                 pad_lengths: torch.Tensor | None = None) -> torch.Tensor:
        """ids (1,) int64, the row's newest token -> logits (1, V) for the next one."""
        L = cache.length
        if (cache is not self.cache or pad_lengths is not None or ids.shape != (1,)
                or L >= cache.max_len or L >= self.n_context):
            # Anything unusual: the forward's own checks say what is wrong (full cache,
            # wrong batch, n_context), then the cache is bound if it is a new one.
            self.model.positions_and_mask(ids.shape[0], 1, cache, pad_lengths, ids.device)
            if ids.shape != (1,) or pad_lengths is not None:
                raise ValueError(f"CompiledStep runs one unpadded row, got ids of shape "
                                 f"{tuple(ids.shape)}; use DecodeStep for batches")
            self._bind(cache)
        token = ids.item()
        if not 0 <= token < self.V:
            raise ValueError(f"token id {token} is out of range; valid ids are 0..{self.V - 1}")
        logits = torch.empty(1, self.V)
        _decode.step(self.plan, token, L, logits.data_ptr())
        cache.advance(1)
        return logits
