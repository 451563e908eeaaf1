"""Key/value cache for incremental decoding.

Without a cache, generating token t+1 reruns attention over all t previous tokens, whose keys
and values have not changed. The cache keeps every layer's keys and values, so a decoding step
feeds only the new token (T = 1) and attends to the S = length + 1 stored positions.

    cache = model.new_kv_cache(batch_size=2, max_len=64)
    logits = model(prompt_ids, kv_cache=cache)          # prefill: T = prompt length
    logits = model(next_ids, kv_cache=cache)            # decode:  T = 1, positions continue

Storage is preallocated, (B, G, max_len, D) for keys and (B, G, max_len, Dv) for values per
layer, each with that layer's own kv-head count and widths (layer-wise configs may differ), so
decoding never reallocates. Each layer writes only its own slot (`update`); the model advances
the shared position once per forward (`advance`), after all layers have written. The cache is
plain state outside the model: the model keeps no decoding state.
"""

from __future__ import annotations

import torch


class KVCache:
    """Preallocated per-layer keys and values for `batch_size` sequences of up to `max_len`.

    `length` is the number of positions stored so far (the same for every row; left padding
    counts as positions, see B2lM.forward's pad_lengths).
    """

    def __init__(self, layer_shapes: list[tuple[int, int, int]], batch_size: int, max_len: int,
                 device: torch.device | str | None = None, dtype: torch.dtype = torch.float32) -> None:
        """layer_shapes: one (G, D, Dv) per layer."""
        if batch_size < 1 or max_len < 1:
            raise ValueError(f"batch_size={batch_size} and max_len={max_len} must both be >= 1")
        self.batch_size, self.max_len, self.length = batch_size, max_len, 0
        self.keys = [torch.zeros(batch_size, G, max_len, D, device=device, dtype=dtype)
                     for G, D, _ in layer_shapes]           # each (B, G, max_len, D)
        self.values = [torch.zeros(batch_size, G, max_len, Dv, device=device, dtype=dtype)
                       for G, _, Dv in layer_shapes]        # each (B, G, max_len, Dv)
        # Left-padded batches keep the same `length` for every row: the caller (generate.py)
        # owns the per-row padding counts and passes them to each forward as `pad_lengths`,
        # which the model turns into per-row positions and a padding mask.

    @property
    def n_layer(self) -> int:
        """Number of layers the cache has slots for (the model checks it matches its blocks)."""
        return len(self.keys)

    def check_room(self, T: int) -> None:
        """Raise ValueError if T more positions do not fit (called before any layer writes)."""
        if self.length + T > self.max_len:
            raise ValueError(f"KV cache is full: it holds {self.length} of max_len={self.max_len} "
                             f"positions and {T} more were given; make a larger cache with "
                             f"model.new_kv_cache(batch_size, max_len=...) or call cache.reset()")

    def update(self, layer_idx: int, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Store layer `layer_idx`'s new keys (B, G, T, D) and values (B, G, T, Dv) at positions
        length .. length+T-1; return all stored so far, (B, G, S, D) and (B, G, S, Dv), S = length+T.
        Does not move `length`: the other layers of this forward write the same positions."""
        start, end = self.length, self.length + k.shape[2]
        self.keys[layer_idx][:, :, start:end] = k
        self.values[layer_idx][:, :, start:end] = v
        return self.keys[layer_idx][:, :, :end], self.values[layer_idx][:, :, :end]

    def advance(self, T: int) -> None:
        """Move the position on by T, once per forward, after every layer has written."""
        self.length += T

    def reset(self) -> None:
        """Forget the stored positions (the buffers are reused, not zeroed: they are overwritten)."""
        self.length = 0
