"""B2lM: the decoder-only language model.

"B2lM" is the name the original design (README, "Where it comes from") gave its model
class; basegpt keeps it so that the design's usage example runs as written.

    ids (B, T) -> token embedding (B, T, C) -> positions (embed hook) -> dropout
               -> n_block residual blocks -> final norm (pre-norm only) -> LM head -> logits (B, T, V)

Defaults are the original design: sinusoidal positions, post-norm LayerNorm blocks with a
ReLU feed-forward, an untied linear head. Every component is chosen by `ModelConfig`
(basegpt/config.py); this file only wires them together, builds a KV cache and counts
parameters and FLOPs. Training it on data is basegpt.B2lM's (api.py), a subclass on top.
"""

from __future__ import annotations

import math
from typing import Any, Literal

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

from basegpt.config import ModelConfig
from basegpt.model.attention import left_padding_mask
from basegpt.model.block import build_block
from basegpt.model.kv_cache import KVCache
from basegpt.model.memory import check_fits
from basegpt.model.norms import build_norm
from basegpt.model.positional import Learned, build_positional

# Linear weights that write into the residual stream; GPT-2 scales their init (see _init_weights).
RESIDUAL_PROJECTIONS = ("attn.out_proj.weight", "ff.down.weight")


class B2lM(nn.Module):
    """A GPT-style decoder-only transformer language model.

        model = B2lM(vocab_size=500, n_embed=128, n_block=4, n_k=32, n_v=32, n_head=4, n_ff=256)
        model = B2lM(ModelConfig(...))          # or B2lM(config=...), or a dict from JSON
        logits = model(ids)                     # ids: (B, T) int64 -> logits: (B, T, V)

    Keyword arguments are `ModelConfig` fields (given alongside a config, they override it).

    Initialisation (GPT-2, Radford et al. 2019, section 2.3; as nanoGPT): every Linear and
    Embedding weight ~ Normal(0, init_std = 0.02), biases 0, norm gains 1. The projections
    that write into the residual stream (attention `out_proj`, feed-forward `down`) get
    std = init_std / sqrt(2 * n_block): each block adds two such outputs to the stream, so its
    variance at the last block stays ~ that of one layer instead of growing with depth.
    The LM head has no bias (as GPT-2); with tie_weights it is the token embedding matrix.

    A config too large for the memory available is a ValueError before anything is allocated
    (model/memory.py).
    """

    weights_file: str | None = None
    """Where the weights were read from (checkpoint.load_run sets it), for error messages."""

    activation_checkpointing: bool = False
    """Training memory for compute: keep only each block's input during the forward pass and
    run the block again in the backward pass for the activations it needs (Chen et al. 2016),
    about one more forward pass of compute for activations of one block instead of all. A
    setting of how to train, not of the model (fit sets it from TrainConfig), so it is not in
    the config; it has no effect without gradients."""

    def __init__(self, config: ModelConfig | dict[str, Any] | None = None, **kwargs: Any) -> None:
        super().__init__()
        if isinstance(config, dict):
            config = ModelConfig.from_dict(config)
        if config is None:
            config = ModelConfig.from_dict(kwargs)
        elif kwargs:
            config = config.replace(**kwargs)
        if not isinstance(config, ModelConfig):
            raise TypeError(f"config must be a ModelConfig or a dict, got {type(config).__name__}")
        check_fits(config)                 # before any tensor: a typo'd size is a clear error
        self.config = config
        C, V = config.n_embed, config.vocab_size

        self.tok_emb = nn.Embedding(V, C)
        self.positional = build_positional(config)
        self.embed_dropout = nn.Dropout(config.embed_dropout)
        self.blocks = nn.ModuleList(build_block(config.block_config(i), i) for i in range(config.n_block))
        # Pre-norm blocks leave the residual stream unnormalised; the head needs a normalised input.
        self.final_norm = (build_norm(config.norm, C, eps=config.norm_eps, bias=config.bias,
                                      kernel=config.norm_kernel)
                           if config.norm_position == "pre" else nn.Identity())
        self.lm_head = nn.Linear(C, V, bias=False)
        self._init_weights()
        if config.tie_weights:
            # Press & Wolf (2017): one matrix maps ids to vectors and vectors back to id scores.
            self.lm_head.weight = self.tok_emb.weight

    def _init_weights(self) -> None:
        std = self.config.init_std
        for module in self.modules():
            if isinstance(module, nn.Linear):
                nn.init.normal_(module.weight, mean=0.0, std=std)
                if module.bias is not None:
                    nn.init.zeros_(module.bias)
            elif isinstance(module, nn.Embedding):
                nn.init.normal_(module.weight, mean=0.0, std=std)
        for name, p in self.named_parameters():
            if name.endswith(RESIDUAL_PROJECTIONS):
                nn.init.normal_(p, mean=0.0, std=std / math.sqrt(2 * self.config.n_block))

    # ------------------------------------------------------------------------------------------
    # forward

    def forward(self, ids: torch.Tensor, kv_cache: KVCache | None = None,
                logits_for: Literal["all", "last"] = "all", return_attention: bool = False,
                pad_lengths: torch.Tensor | None = None
                ) -> torch.Tensor | tuple[torch.Tensor, list[torch.Tensor]]:
        """ids: (B, T) int64 token ids -> logits (B, T, V), or (B, 1, V) with logits_for="last".

        kv_cache: continue after the cache's stored positions (positions start at its length)
        and store this call's keys/values in it. logits_for="last" applies the head to the last
        position only: when decoding, the other positions' logits are never used, and the head
        (C x V) is often the largest matrix. return_attention=True also returns every layer's
        attention weights, a list of n_block tensors (B, H_layer, T, S) (computed with the manual
        kernel, which is the only one that forms them).

        pad_lengths: (B,) int64, for batches of left-padded sequences of different lengths:
        row b's first pad_lengths[b] positions (counted from the start of the cache) are padding.
        Its real tokens then get positions 0, 1, ... as if the row were alone, and no real query
        attends to a padding key, so each row's logits equal those of the row run by itself.
        The caller owns the padding and passes it with every forward (the cache stores none).

        ids that are not a tensor, or of a non-integer dtype, are a TypeError; ids outside
        0..V-1 a ValueError naming the id (checked for CPU tensors: see _check_id_range for why
        not on a GPU).
        """
        if not isinstance(ids, torch.Tensor):
            raise TypeError(f"ids must be a torch.Tensor of token ids, shape (batch, time), got "
                            f"{type(ids).__name__}; wrap it: torch.tensor(ids)")
        if ids.dim() != 2:
            raise ValueError(f"ids must have shape (batch, time), got {tuple(ids.shape)}")
        if ids.dtype not in (torch.int64, torch.int32):
            raise TypeError(f"ids must be integer token ids (int64), got dtype {ids.dtype}; "
                            f"pass the tokenizer's ids, e.g. torch.tensor([tokenizer.encode(text)]), "
                            f"or convert whole-number values with ids.long()")
        _check_id_range(ids, self.config.vocab_size)
        if logits_for not in ("all", "last"):
            raise ValueError(f"logits_for={logits_for!r}: choose 'all' or 'last'")
        B, T = ids.shape
        pos, mask = self.positions_and_mask(B, T, kv_cache, pad_lengths, ids.device)
        x = self.tok_emb(ids)                                       # (B, T, C)
        x = self.embed_dropout(self.positional.embed(x, pos))       # (B, T, C)
        attention = []
        recompute = self.activation_checkpointing and torch.is_grad_enabled()
        for block in self.blocks:
            if recompute:       # dropout masks are drawn again from the same RNG state
                x, weights = checkpoint(block, x, pos, self.positional, kv_cache, mask,
                                        return_attention, use_reentrant=False)
            else:
                x, weights = block(x, pos, self.positional, kv_cache, mask, return_attention)
            attention.append(weights)
        if kv_cache is not None:
            kv_cache.advance(T)                                     # once, after every layer wrote
        if logits_for == "last":
            x = x[:, -1:, :]                                        # (B, 1, C)
        logits = self.lm_head(self.final_norm(x))                  # (B, T or 1, V)
        return (logits, attention) if return_attention else logits

    def positions_and_mask(self, B: int, T: int, kv_cache: KVCache | None,
                           pad_lengths: torch.Tensor | None, device: torch.device
                           ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Where T new positions of B rows go: their positions, (T,) or (B, T) with padding,
        and the attention mask, None (causal) or (B, 1, T, S) with padding. Checks that the
        cache fits this batch and model and has room, and that the positions fit n_context
        (ValueErrors saying how to fix it). Shared by forward and basegpt/fast/decode.py's DecodeStep.
        """
        start = 0
        if kv_cache is not None:
            if B != kv_cache.batch_size or kv_cache.n_layer != len(self.blocks):
                raise ValueError(f"KV cache was made for batch_size={kv_cache.batch_size} and "
                                 f"{kv_cache.n_layer} layers, but ids has batch {B} and the model "
                                 f"{len(self.blocks)} blocks; make one with model.new_kv_cache({B}, ...)")
            kv_cache.check_room(T)
            start = kv_cache.length
        if start + T > self.config.n_context:
            raise ValueError(f"positions {start}..{start + T - 1} go past n_context="
                             f"{self.config.n_context}; shorten the input (keep the last "
                             f"{self.config.n_context} tokens) or build the model with a larger n_context")
        pos = torch.arange(start, start + T, device=device)         # (T,) absolute positions
        if pad_lengths is None:
            return pos, None       # causal: queries are the last T of the S = start + T keys
        if pad_lengths.shape != (B,):
            raise ValueError(f"pad_lengths must have shape (batch,) = ({B},), got "
                             f"{tuple(pad_lengths.shape)}; give one padding count per row")
        # Made once per forward, shared by every layer: per-row positions and the mask.
        pos = (pos.unsqueeze(0) - pad_lengths.unsqueeze(1)).clamp(min=0)   # (B, T)
        return pos, left_padding_mask(pad_lengths, T, start + T)           # (B, 1, T, S)

    def new_kv_cache(self, batch_size: int, max_len: int | None = None) -> KVCache:
        """An empty KV cache for `batch_size` sequences of up to `max_len` (default n_context)
        positions, on the model's device and dtype, with each layer's own head shapes."""
        max_len = self.config.n_context if max_len is None else max_len
        if max_len > self.config.n_context:
            raise ValueError(f"max_len={max_len} exceeds n_context={self.config.n_context}, the "
                             f"longest sequence this model handles; use max_len <= n_context")
        shapes = [(b.n_kv_head, b.n_k, b.n_v) for b in self.config.block_configs]
        w = self.tok_emb.weight
        return KVCache(shapes, batch_size, max_len, device=w.device, dtype=w.dtype)

    # ------------------------------------------------------------------------------------------
    # training mode

    def train(self, mode: bool = True) -> B2lM:
        """PyTorch's meaning: switch training mode on (or off with False); returns the model.

        Training on data, `model.train(loader, epochs=10)`, is the call of basegpt's public
        B2lM (`from basegpt import B2lM`, basegpt/api.py), which adds it on top: this class
        never imports the trainer, so the arrows between modules point one way.
        """
        if not isinstance(mode, bool):
            raise TypeError(f"model.train(mode) takes True or False, got {type(mode).__name__}; "
                            "to train on data, build the model with `from basegpt import B2lM` "
                            "(model.train(loader, epochs=N)) or call basegpt.train.fit(model, "
                            "data, epochs=N)")
        return super().train(mode)

    # ------------------------------------------------------------------------------------------
    # accounting

    def num_parameters(self, exclude_embeddings: bool = False) -> int:
        """Number of distinct parameters (a tied head counts once).

        exclude_embeddings=True leaves out the lookup tables (token embedding and learned
        positions), as scaling-law papers count N (Kaplan et al., 2020): a lookup costs no
        FLOPs. With tie_weights the head is that same matrix, so it is left out too.
        """
        n = sum(p.numel() for p in self.parameters())
        if exclude_embeddings:
            n -= self.tok_emb.weight.numel()
            if isinstance(self.positional, Learned):
                n -= self.positional.weight.numel()
        return n

    def flops_per_token(self, seq_len: int | None = None) -> int:
        """Training FLOPs per token (forward + backward), for MFU. PaLM (Chowdhery et al., 2022),
        appendix B: 6N + 12 * L * H * Q * T, here written per block to allow n_k != n_v and
        layer-wise heads:

            6 * N  +  sum over blocks of 6 * H_l * (D_l + Dv_l) * T

        N = num_parameters(exclude_embeddings=True), plus V*C when the head is tied (the head's
        matmul runs either way): each weight does one multiply-add (2 FLOPs) per token forward and
        two backward (input and weight gradients), hence 6. The attention term: per token and
        head, q.k against T keys (2*D*T FLOPs) and weights @ v (2*Dv*T), times 3 for the backward.
        T = seq_len (default n_context); causal masking is not subtracted (PaLM's convention).
        """
        T = self.config.n_context if seq_len is None else seq_len
        n = self.num_parameters(exclude_embeddings=True)
        if self.config.tie_weights:
            n += self.config.vocab_size * self.config.n_embed
        attn = sum(6 * b.n_head * (b.n_k + b.n_v) * T for b in self.config.block_configs)
        return 6 * n + attn


def _check_id_range(ids: torch.Tensor, vocab_size: int) -> None:
    """Raise ValueError naming the smallest (if negative) or largest id outside 0..vocab_size-1.

    Only for CPU tensors, and not while torch.compile traces. Reading the min and max back to
    Python is free on the CPU (one pass over B*T ints, microseconds beside the model), but on a
    GPU it is a device-to-host sync in every forward: the CPU would wait for all queued work,
    and training loses the overlap of launching the next kernels while the GPU runs. Under
    compile, a branch on tensor values would break the graph. On a GPU a bad id still fails,
    as a device-side assert in the embedding kernel; the same ids on the CPU give this message.
    """
    is_compiling = getattr(torch.compiler, "is_compiling", lambda: False)   # torch >= 2.3
    if ids.device.type != "cpu" or ids.numel() == 0 or is_compiling():
        return
    lo, hi = (int(t) for t in torch.aminmax(ids))             # one reduction for both ends
    if lo < 0:
        raise ValueError(f"token id {lo} is negative; ids must be in 0..{vocab_size - 1} "
                         f"(vocab_size={vocab_size}). -100 marks ignored positions in targets only: "
                         f"fill padded inputs with the tokenizer's pad_id instead")
    if hi >= vocab_size:
        raise ValueError(f"token id {hi} is out of range for vocab_size={vocab_size} (ids must be in "
                         f"0..{vocab_size - 1}); the tokenizer's vocabulary is probably larger than "
                         f"the model's: build the model with vocab_size=len(tokenizer)")


def nonfinite_weights(model: nn.Module) -> list[str]:
    """The model's parameters and buffers that hold NaN or inf, each as "name (k of n values)";
    empty when all are finite. A pass over every weight: call it once something has come out
    non-finite (nonfinite_message), not on every forward."""
    found = []
    for name, tensor in [*model.named_parameters(), *model.named_buffers()]:
        bad = int((~torch.isfinite(tensor)).sum())
        if bad:
            found.append(f"{name} ({bad:,} of {tensor.numel():,} values)")
    return found


def nonfinite_message(model: nn.Module, what: str) -> str:
    """The error for `what` (e.g. "the loss") coming out NaN or inf: which weights are not
    finite and the file they came from, or, when every weight is finite, that a value
    overflowed on the way."""
    bad = nonfinite_weights(model)
    source = getattr(model, "weights_file", None)
    if not bad:
        return (f"{what} came out NaN or inf although every weight is finite: a value "
                "overflowed inside the model (in float16, use float32 or bfloat16)")
    more = f" and {len(bad) - 3} more" if len(bad) > 3 else ""
    return (f"{what} came out NaN or inf because the model's weights are not finite: "
            f"{', '.join(bad[:3])}{more} hold NaN or inf"
            + (f" (read from {source})" if source else "")
            + "; the weights are damaged or training diverged: use an earlier checkpoint "
              "(a run's checkpoints/step_N/ or best/) or train again")
