"""The fast decoding step: one new token per row on a KV cache, with B2lM.forward's numbers.

After the prefill, each generation step feeds one token per row (T = 1). B2lM.forward serves
every T and every use (training, scoring, prefill), and at T = 1 on a CPU a step is short
enough (about 2-6 ms at 6 blocks x 256, BENCHMARKS.md) for what surrounds the matrix products
to show: a module call per layer, dropout calls that do nothing in eval mode, split and
transpose views written for T positions and the id check. The
products are matrix-vector products, and at batch 1 on a CPU torch's BLAS (MKL, in the PyTorch
wheels) streams the weights more slowly than numpy's (OpenBLAS, in numpy's wheels).

`DecodeStep` is the same computation written for T = 1, built from the model's own parts:

    x = positional.embed(tok_emb[ids], pos)                                       (B, C)
    per block:  attn(h) = kernel(q, cached keys, cached values) Wo                    (B, C)
                          with q, k, v = h Wqkv, (q, k) rotated, k and v appended to the cache
                pre-norm:  x += attn(norm1(x));   x += ff(norm2(x))
                post-norm: x = norm1(x + attn(x)); x = norm2(x + ff(x))
    logits = final_norm(x) W_head                                                 (B, V)

Positional encodings, activations and the attention kernel are the model's own modules and
functions, called as they are. The Linear layers are replaced, and basegpt's fused LayerNorm
and RMSNorm are called as the one torch op their forward runs (`_norm`): at batch 1 a module
call costs more than the norm's arithmetic. Any other norm is called as its module. On a CPU in float32
with torch on one thread they run in numpy's matmul on each weight's (in, out) view of the
parameter's own memory (no copy), with numpy's OpenBLAS held to one thread too
(`numpy_products` says when, and why not otherwise); elsewhere (CUDA, MPS, bf16, several
threads) in F.linear, as the modules do. A different BLAS sums in a different order, so the
logits then match the module path to float rounding (tests: within 1e-5, and the same greedy
tokens), not bit for bit.

The step is only used where it computes what the modules would: `unsupported(model)`
(support.py) names the
first part it does not know (a subclass of a block, attention, feed-forward or Linear may
compute something else), a forward hook (the step skips the block, attention, feed-forward and
Linear calls, so their hooks would not run) or training mode (dropout), and generation then
runs every step through model.forward.
"""

from __future__ import annotations

import ctypes
import functools
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from basegpt.fast.compiled import CompiledStep, compiled_unsupported
from basegpt.fast.support import unsupported
from basegpt.model.attention import attention_sdpa
from basegpt.model.b2lm import B2lM
from basegpt.model.block import PostNormBlock, PreNormBlock
from basegpt.model.feedforward import SwiGLU
from basegpt.model.norms import LayerNorm, RMSNorm

if TYPE_CHECKING:
    from basegpt.model.kv_cache import KVCache

LinearFn = Callable[[torch.Tensor], torch.Tensor]          # (B, in) -> (B, out)


@functools.cache
def numpy_blas_threads() -> Callable[[int], int] | None:
    """openblas_set_num_threads_local of the OpenBLAS inside numpy's wheel: sets the BLAS
    thread count for calls from the calling thread only and returns the one it replaces. None
    where numpy uses another BLAS (Accelerate on macOS, MKL in some builds) or an OpenBLAS
    older than 0.3.27: the step then multiplies with torch."""
    build = getattr(np.__config__, "CONFIG", {}).get("Build Dependencies", {})  # numpy >= 1.26
    if build.get("blas", {}).get("name") != "scipy-openblas":
        return None
    for path in sorted((Path(np.__file__).resolve().parent.parent / "numpy.libs").glob("*openblas*")):
        try:                                       # numpy has loaded it: the same library
            set_threads = ctypes.CDLL(str(path)).openblas_set_num_threads_local
        except (OSError, AttributeError):
            continue
        set_threads.argtypes, set_threads.restype = [ctypes.c_int], ctypes.c_int
        return set_threads
    return None


def numpy_products(model: nn.Module) -> bool:
    """Whether DecodeStep multiplies in numpy: for a model on a CPU in float32, with torch on
    one thread and numpy's OpenBLAS found (then held to one thread too: `numpy_blas_threads`).

    One thread each, OpenBLAS streams batch-1 weights faster than torch's MKL (BENCHMARKS.md,
    generation: the matrix-only columns). With torch on several threads the products stay in
    torch's thread pool: two pools busy-waiting on the same cores fight (slower than the
    module path, measured there), and one OpenBLAS thread against all of torch's could lose
    on a many-core CPU."""
    weight = next(model.parameters())
    return (weight.device.type == "cpu" and weight.dtype == torch.float32
            and torch.get_num_threads() == 1 and numpy_blas_threads() is not None)


def _linear(module: nn.Linear, in_numpy: bool) -> LinearFn:
    """x (B, in) -> module(x) (B, out), without the module call: numpy's matmul on the
    parameter's memory, or F.linear."""
    weight, bias = module.weight.detach(), None if module.bias is None else module.bias.detach()
    if not in_numpy:
        return lambda x: F.linear(x, weight, bias)
    w_in_out = weight.t().numpy()                  # (in, out): a view of the parameter's memory

    def linear(x: torch.Tensor) -> torch.Tensor:
        y = torch.from_numpy(np.matmul(x.numpy(), w_in_out))          # (B, out), numpy's BLAS
        return y if bias is None else y.add_(bias)
    return linear


def _norm(module: nn.Module) -> Callable[[torch.Tensor], torch.Tensor]:
    """x -> module(x) for a norm, without the module call where that is exact: basegpt's
    LayerNorm and RMSNorm on their fused kernel become the op their forward calls
    (torch.layer_norm / torch.rms_norm, what F.layer_norm / F.rms_norm call after their Python
    checks) with the same arguments, so the same numbers; nn.Identity (the final norm of
    post-norm models) becomes x itself. At 6 blocks x 256, batch 1, the 13 module calls cost
    about a tenth of a step (BENCHMARKS.md, generation). Any other norm (the manual kernel, a
    subclass, a norm of the user's) is called as its module."""
    if type(module) is nn.Identity:
        return lambda x: x
    fused_op = {LayerNorm: "layer_norm", RMSNorm: "rms_norm"}.get(type(module))
    if fused_op is None or module.kernel != "fused" or not hasattr(torch, fused_op):
        return module                                  # torch.rms_norm: torch >= 2.4, as F's
    weight, eps = module.weight.detach(), module.eps
    shape = tuple(weight.shape)
    if fused_op == "rms_norm":
        return lambda x: torch.rms_norm(x, shape, weight, eps)
    bias = None if module.bias is None else module.bias.detach()
    return lambda x: torch.layer_norm(x, shape, weight, bias, eps)


class _Block:
    """One block's parts, looked up once: its norms, projections, kernel and activation."""

    def __init__(self, block: PostNormBlock, in_numpy: bool) -> None:
        attn, ff = block.attn, block.ff
        self.pre_norm = type(block) is PreNormBlock
        self.attn_norm, self.ff_norm = _norm(block.attn_norm), _norm(block.ff_norm)
        self.layer_idx, self.kernel = attn.layer_idx, attn.kernel
        H, G, D, Dv = attn.n_head, attn.n_kv_head, attn.n_k, attn.n_v
        # For one query, no mask, no gradients and a kv head per query head, the sdpa kernel
        # makes exactly one call, F.scaled_dot_product_attention(q, k, v): make it directly,
        # without the kernel's checks for the cases that do not apply (8 us of 14-40 us a call).
        self.bare_sdpa = attn.kernel is attention_sdpa and G == H
        self.heads, self.split = (H, G, D, Dv), (H * D, H * D + G * D)
        self.qkv, self.out = _linear(attn.qkv_proj, in_numpy), _linear(attn.out_proj, in_numpy)
        self.down, self.up = _linear(ff.down, in_numpy), _linear(ff.up, in_numpy)
        if isinstance(ff, SwiGLU):
            gate, silu, up = _linear(ff.gate, in_numpy), ff.silu, self.up
            self.hidden = lambda h: silu(gate(h)).mul_(up(h))          # (B, F)
        else:
            activation, up = ff.activation, self.up
            self.hidden = lambda h: activation(up(h))                  # (B, F)

    def attend(self, h: torch.Tensor, pos: torch.Tensor, positional: nn.Module, cache: KVCache,
               mask: torch.Tensor | None) -> torch.Tensor:
        """The attention sublayer for h (B, C) at cache position cache.length -> (B, C)."""
        B, (H, G, D, Dv), (q_end, k_end) = h.shape[0], self.heads, self.split
        qkv = self.qkv(h)                                             # (B, H*D + G*D + G*Dv)
        q = qkv[:, :q_end].view(B, H, 1, D)                           # T = 1 between heads and D
        k = qkv[:, q_end:k_end].view(B, G, 1, D)
        v = qkv[:, k_end:].view(B, G, 1, Dv)
        q, k = positional.rotate(q, k, pos)
        L = cache.length
        keys, values = cache.keys[self.layer_idx], cache.values[self.layer_idx]
        keys[:, :, L:L + 1] = k
        values[:, :, L:L + 1] = v
        keys, values = keys[:, :, :L + 1], values[:, :, :L + 1]     # (B, G, S, D), (B, G, S, Dv)
        if mask is None and self.bare_sdpa:
            out = F.scaled_dot_product_attention(q, keys, values)      # (B, H, 1, Dv)
        else:
            out, _ = self.kernel(q, keys, values, mask)               # (B, H, 1, Dv)
        return self.out(out.reshape(B, H * Dv))     # T = 1: (B, H, 1, Dv) is (B, 1, H, Dv) in memory

    def __call__(self, x: torch.Tensor, pos: torch.Tensor, positional: nn.Module,
                 cache: KVCache, mask: torch.Tensor | None) -> torch.Tensor:
        if self.pre_norm:
            x = x.add_(self.attend(self.attn_norm(x), pos, positional, cache, mask))
            return x.add_(self.down(self.hidden(self.ff_norm(x))))
        x = self.attn_norm(x.add_(self.attend(x, pos, positional, cache, mask)))
        return self.ff_norm(x.add_(self.down(self.hidden(x))))


class DecodeStep:
    """model(ids[:, None], kv_cache=cache, logits_for="last", pad_lengths=pad_lengths)[:, -1]
    for a model that `unsupported` accepts, in fewer operations (module docstring).

        step = DecodeStep(model)                      # once per generation, after the prefill
        logits = step(next_ids, cache, pad_lengths)   # (B,) ids -> (B, V); the cache moves on 1

    It reads the weights it finds when built: their memory, so updates made in place are seen,
    but a module or parameter replaced later (model.to(...), a new Linear) is not; build a new
    one per generation, as generate.py does.
    """

    def __init__(self, model: B2lM, compiled: bool = True) -> None:
        reason = unsupported(model)
        if reason is not None:
            raise ValueError(f"DecodeStep cannot run this model: {reason}; use model.forward")
        # One unpadded row runs in C where the extension covers the model (compiled.py);
        # compiled=False keeps every step on the torch operations below.
        self.compiled = (CompiledStep(model) if compiled and compiled_unsupported(model) is None
                         else None)
        self.embedding = model.tok_emb.weight.detach()
        self.positional, self.final_norm = model.positional, _norm(model.final_norm)
        in_numpy = numpy_products(model)
        self.blocks = [_Block(block, in_numpy) for block in model.blocks]
        self.head = _linear(model.lm_head, in_numpy)
        self.positions_and_mask = model.positions_and_mask     # forward's checks, positions, mask
        self.blas_threads = numpy_blas_threads() if in_numpy else None

    def __call__(self, ids: torch.Tensor, cache: KVCache,
                 pad_lengths: torch.Tensor | None = None) -> torch.Tensor:
        """ids (B,) int64, the newest token of each row -> logits (B, V) for the next one."""
        if self.compiled is not None and ids.shape[0] == 1 and pad_lengths is None:
            return self.compiled(ids, cache)
        return self._torch_step(ids, cache, pad_lengths)

    @torch.inference_mode()
    def _torch_step(self, ids: torch.Tensor, cache: KVCache,
                    pad_lengths: torch.Tensor | None) -> torch.Tensor:
        if self.blas_threads is None:
            return self._step(ids, cache, pad_lengths)
        before = self.blas_threads(1)                # numpy's products on this thread: one
        try:
            return self._step(ids, cache, pad_lengths)
        finally:
            self.blas_threads(before)

    def _step(self, ids: torch.Tensor, cache: KVCache, pad_lengths: torch.Tensor | None
              ) -> torch.Tensor:
        B = ids.shape[0]
        pos, mask = self.positions_and_mask(B, 1, cache, pad_lengths, ids.device)   # (1,) or (B, 1)
        x = self.positional.embed(self.embedding[ids].unsqueeze(1), pos).view(B, -1)   # (B, C)
        for block in self.blocks:
            x = block(x, pos, self.positional, cache, mask)
        cache.advance(1)
        return self.head(self.final_norm(x))                        # (B, V)
