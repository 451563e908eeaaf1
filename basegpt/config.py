"""Typed, frozen configs: ModelConfig (rebuilds a model), TrainConfig (how to train it),
DataConfig (where its text comes from) and GenerationConfig (how to write text with it; its
sampling part is SamplingSettings), each validated when it is made.

`ModelConfig` is what a checkpoint stores (as JSON, through `to_dict` / `from_dict`), and what
`B2lM(**kwargs)` builds from its keyword arguments. Every choice of the model is a field with a
`Literal` type, validated in `__post_init__`, so a bad value fails when the config is made, with a
message naming the field and the fix, never deep inside a forward pass.

Layer-wise configuration: `blocks` is either empty (every block uses the model-wide fields) or one
`BlockOverride` per block. An override sets only the per-block fields it names; `block_config(i)`
merges it with the model-wide fields into the fully resolved `BlockConfig` that `Block` is built
from. In JSON the overrides are a list of small dicts:

    {"n_block": 3, "n_head": 4, "blocks": [{}, {"n_head": 2, "n_ff": 512}, {"activation": "gelu"}]}
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import re
from dataclasses import dataclass, field, fields
from collections.abc import Iterable
from types import UnionType
from typing import Any, Literal, Union, get_args, get_origin, get_type_hints

from basegpt.corpus import DEFAULT_BUILTIN_BYTES
from basegpt.tokenizer.pretokenize import DEFAULT_PATTERN

NormPosition = Literal["post", "pre"]
Norm = Literal["layernorm", "rmsnorm"]
Positional = Literal["sinusoidal", "learned", "rope", "none"]
Activation = Literal["relu", "gelu", "swiglu"]
AttentionKernel = Literal["manual", "sdpa"]
NormKernel = Literal["manual", "fused"]
ActivationKernel = Literal["manual", "fused"]


@dataclass(frozen=True)
class BlockOverride:
    """Per-block fields that one block may set differently from the model-wide config.

    None means "use the model-wide value". Only these fields vary per block; the residual width
    `n_embed`, norm placement and positional encoding are shared because every block reads and
    writes the same residual stream.
    """

    n_head: int | None = None                      # H
    n_kv_head: int | None = None                   # G
    n_k: int | None = None                         # query/key head width D
    n_v: int | None = None                         # value head width
    n_ff: int | None = None                        # F
    activation: Activation | None = None
    norm: Norm | None = None
    attention: AttentionKernel | None = None
    attn_dropout: float | None = None
    resid_dropout: float | None = None

    def to_dict(self) -> dict[str, Any]:
        """Only the fields this override sets: `{}` means "exactly like the model-wide config"."""
        return {f.name: getattr(self, f.name) for f in fields(self) if getattr(self, f.name) is not None}

    @classmethod
    def from_dict(cls, d: dict[str, Any], where: str = "blocks[?]") -> BlockOverride:
        """Build from one entry of a config's `blocks` list, e.g. `{"n_head": 2, "n_ff": 512}`.

        A model-wide field (`n_embed`, `positional`, ...) is a ValueError saying a block cannot
        override it; any other unknown key is a ValueError naming the nearest per-block field.
        `where` names the entry in messages ("blocks[2]").
        """
        for key in d:
            if key not in BLOCK_FIELDS and key in {f.name for f in fields(ModelConfig)}:
                raise ValueError(f"{where}: {key!r} is a model-wide field that a block cannot "
                                 f"override (every block shares it); set it at the top level of "
                                 f"the config. A block may set: {', '.join(BLOCK_FIELDS)}")
        check_keys(d, cls, where)
        return cls(**d)


BLOCK_FIELDS: tuple[str, ...] = tuple(f.name for f in fields(BlockOverride))


@dataclass(frozen=True)
class BlockConfig:
    """The fully resolved settings of one block (model-wide fields merged with its override)."""

    n_embed: int
    n_head: int
    n_kv_head: int                                 # always set here: n_head when not grouped
    n_k: int
    n_v: int
    n_ff: int
    activation: Activation
    norm: Norm
    norm_position: NormPosition
    norm_eps: float
    norm_kernel: NormKernel
    activation_kernel: ActivationKernel
    attention: AttentionKernel
    attn_dropout: float
    resid_dropout: float
    bias: bool

    @property
    def kv_groups(self) -> int:
        """Query heads served by each key/value head (H // G); 1 = plain multi-head."""
        return self.n_head // self.n_kv_head


@dataclass(frozen=True)
class ModelConfig:
    """Everything needed to rebuild a B2lM. The defaults are the original design's model."""

    vocab_size: int = 512                          # V, special tokens included
    n_context: int = 256                           # longest sequence (prompt + generated) T
    n_block: int = 4                               # number of residual blocks
    n_embed: int = 128                             # C, the residual stream width
    n_head: int = 4                                # H, query heads
    n_kv_head: int | None = None                   # G; None = n_head (plain multi-head), 1 = multi-query
    n_k: int = 32                                  # per-head query/key width D
    n_v: int = 32                                  # per-head value width
    n_ff: int = 256                                # F, feed-forward hidden width
    norm_position: NormPosition = "post"           # "post" = original Transformer, "pre" = GPT-2
    norm: Norm = "layernorm"
    norm_eps: float = 1e-5                         # keeps the norm's division finite for x ~ 0
    norm_kernel: NormKernel = "fused"              # same numbers as "manual" (the formula), faster
    positional: Positional = "sinusoidal"
    rope_base: float = 10000.0                     # RoPE's theta: wavelengths 2*pi .. 2*pi*base
    activation: Activation = "relu"
    activation_kernel: ActivationKernel = "fused"  # same numbers as "manual" (the formula), faster
    attention: AttentionKernel = "sdpa"            # same numbers as "manual", faster
    embed_dropout: float = 0.0                     # after token + position embedding
    attn_dropout: float = 0.0                      # on the attention weights
    resid_dropout: float = 0.0                     # on each sublayer's output, before the residual add
    bias: bool = True                              # biases in Linear layers and LayerNorm
    tie_weights: bool = False                      # LM head shares the token embedding matrix
    init_std: float = 0.02                         # std of the normal init (GPT-2)
    blocks: tuple[BlockOverride, ...] = field(default_factory=tuple)  # () or one per block

    def __post_init__(self) -> None:
        # Normalisation at construction (not mutation afterwards): JSON gives lists of dicts and
        # ints where floats are meant; store tuples of BlockOverride and floats, so that a config
        # and its JSON round trip compare equal.
        blocks = self.blocks
        if isinstance(blocks, list):
            blocks = tuple(blocks)
        if not isinstance(blocks, tuple):
            raise ValueError(f"blocks={blocks!r}: must be a list of per-block overrides (dicts), "
                             f"one per block, or empty")
        blocks = tuple(BlockOverride.from_dict(b, f"blocks[{i}]") if isinstance(b, dict) else b
                       for i, b in enumerate(blocks))
        object.__setattr__(self, "blocks", blocks)
        for f in fields(self):
            if f.name in _FLOAT_FIELDS and _is_number(getattr(self, f.name)):
                object.__setattr__(self, f.name, float(getattr(self, f.name)))
        _validate(self)

    # Derived values are properties: nothing is stored twice.
    @property
    def kv_groups(self) -> int:
        """Query heads per key/value head of the model-wide setting (H // G)."""
        return self.n_head // (self.n_kv_head or self.n_head)

    def block_config(self, i: int) -> BlockConfig:
        """The resolved settings of block i: model-wide fields, then block i's override on top."""
        if not 0 <= i < self.n_block:
            raise IndexError(f"block index {i} out of range for n_block={self.n_block}")
        over = self.blocks[i].to_dict() if self.blocks else {}
        merged = {name: getattr(self, name) for name in BLOCK_FIELDS} | over
        # n_kv_head None means "plain multi-head", so it follows the block's own n_head.
        merged["n_kv_head"] = merged["n_kv_head"] or merged["n_head"]
        return BlockConfig(n_embed=self.n_embed, norm_position=self.norm_position,
                           norm_eps=self.norm_eps, norm_kernel=self.norm_kernel,
                           activation_kernel=self.activation_kernel, bias=self.bias,
                           **merged)

    @property
    def block_configs(self) -> tuple[BlockConfig, ...]:
        """The resolved settings of every block, `block_config(i)` for i in 0..n_block-1."""
        return tuple(self.block_config(i) for i in range(self.n_block))

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict; `ModelConfig.from_dict(json.loads(json.dumps(d)))` gives self back."""
        d = {f.name: getattr(self, f.name) for f in fields(self)}
        d["blocks"] = [b.to_dict() for b in self.blocks]
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ModelConfig:
        """Build from a dict (e.g. parsed JSON); an unknown key is a ValueError naming the nearest."""
        if not isinstance(d, dict):
            raise ValueError(f"a model config must be a dict, got {type(d).__name__}")
        check_keys(d, cls, "ModelConfig")
        return cls(**d)

    def replace(self, **changes: Any) -> ModelConfig:
        """A copy with some fields changed (validated again; unknown names suggest the nearest)."""
        check_keys(changes, type(self), "ModelConfig")
        return dataclasses.replace(self, **changes)


# ---------------------------------------------------------------------------------------------
# training and data

MAX_SEED = 2**63 - 1
"""The largest TrainConfig.seed: torch seeds take 64 bits, and fit seeds process r with seed + r."""


@dataclass(frozen=True)
class TrainConfig:
    """How to train. Stops at whichever of max_steps, epochs, max_minutes comes first."""

    max_steps: int | None = None        # optimizer steps
    epochs: float | None = None         # passes over the training data
    max_minutes: float | None = None    # wall-clock budget
    batch_size: int = 32                # micro-batch: sequences per forward pass (per process)
    batch_tokens: int | None = None     # global batch in tokens; None = batch_size * n_context
    optimizer: Literal["adam", "adamw"] = "adam"
    lr: float = 1e-3                    # peak learning rate
    min_lr_ratio: float = 0.1           # final lr = lr * min_lr_ratio (cosine / linear)
    schedule: Literal["cosine", "linear", "constant"] = "cosine"
    warmup_steps: int = 0
    weight_decay: float = 0.0           # AdamW only; applied to weight matrices only
    beta1: float = 0.9
    beta2: float = 0.95
    grad_clip: float = 1.0              # max global gradient norm; 0 = no clipping
    eval_every: int = 0                 # steps between evaluations; 0 = only at the end
    eval_tokens: int = 262_144          # validation tokens per evaluation (fixed windows)
    checkpoint_every: int = 0           # steps between checkpoints; 0 = only at the end
    keep_checkpoints: int = 2           # latest checkpoints kept in run_dir/checkpoints/
    seed: int = 0
    device: str = field(default="auto", metadata={
        "help": "auto, cpu, cuda, cuda:N or mps (auto: the first of cuda, mps, cpu here)"})
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = "auto"
    compile: Literal["auto", "on", "off"] = "auto"
    on_nonfinite: Literal["stop", "skip"] = "stop"
    peak_tflops: float | None = None    # for MFU; None = look the device up in PEAK_TFLOPS
    parallel: Literal["auto", "ddp", "fsdp"] = field(default="auto", metadata={
        "help": "under torchrun: ddp (a whole replica per process) or fsdp (each process keeps "
                "1/N of the weights, gradients and Adam state); auto: ddp while a replica fits "
                "in a device's memory, else fsdp. fsdp also runs in one process (for --offload)"})
    activation_checkpointing: bool = field(default=False, metadata={
        "help": "recompute each block's activations in the backward pass instead of keeping "
                "them: less memory, about a third more compute"})
    offload: bool = field(default=False, metadata={
        "help": "fsdp: keep the weights, gradients and Adam state in CPU memory and run the "
                "optimizer there; the GPU holds the blocks being computed"})

    def __post_init__(self) -> None:
        _check_types(self)
        for name in ("max_steps", "batch_size", "batch_tokens", "eval_tokens", "keep_checkpoints"):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value < 1):
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        for name in ("warmup_steps", "eval_every", "checkpoint_every", "seed"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 0:
                raise ValueError(f"{name} must be a non-negative integer, got {value!r}")
        _check_seed(self.seed)
        for name in ("epochs", "max_minutes"):
            value = getattr(self, name)
            if value is not None and not 0 < value < math.inf:
                raise ValueError(f"{name} must be a finite positive number, got {value!r}")
        if not 0 < self.lr < math.inf:
            raise ValueError(f"lr must be positive and finite, got {self.lr}")
        if not 0 <= self.min_lr_ratio <= 1:
            raise ValueError(f"min_lr_ratio must be in [0, 1], got {self.min_lr_ratio}")
        for name in ("beta1", "beta2"):
            # Adam's running averages decay by beta per step: 1 or more would never forget.
            value = getattr(self, name)
            if not 0 <= value < 1:
                raise ValueError(f"{name}={value!r}: Adam's decay rate must be in [0, 1) "
                                 f"(default {_default(TrainConfig, name)})")
        for name in ("weight_decay", "grad_clip"):
            value = getattr(self, name)
            if not 0 <= value < math.inf:
                raise ValueError(f"{name}={value!r}: must be a finite number >= 0 (0 = off)")
        if self.peak_tflops is not None and not 0 < self.peak_tflops < math.inf:
            raise ValueError(f"peak_tflops={self.peak_tflops!r}: must be a finite positive "
                             "number (one device's peak TFLOP/s), or None to look it up")
        if self.weight_decay > 0 and self.optimizer != "adamw":
            raise ValueError(f"weight_decay={self.weight_decay} needs optimizer='adamw' (Adam "
                             "folds decay into the gradient, which is not what you want)")
        hints = get_type_hints(TrainConfig)
        for name in ("optimizer", "schedule", "dtype", "compile", "on_nonfinite", "parallel"):
            _check_choice(name, getattr(self, name), hints[name])
        _check_device(self.device)
        if self.offload and self.parallel != "fsdp":
            raise ValueError(f"offload=True moves FSDP's shards to CPU memory, but parallel="
                             f"{self.parallel!r}; pass parallel='fsdp' (--parallel fsdp) with it")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TrainConfig:
        """Build from a dict; an unknown key is a ValueError naming the nearest."""
        check_keys(d, cls, "TrainConfig")
        return cls(**d)


DEFAULT_VAL_FRACTION = 0.05
"""The share of documents held out for validation, unless set: `basegpt train` (DataConfig)
and `basegpt prepare` (data.pipeline.prepare) both default to it, so a folder prepared by
hand splits like the cached shards of a train run on the same text."""


@dataclass(frozen=True)
class DataConfig:
    """Where the text comes from and how it is tokenized."""

    source: str = field(default="stdlib", metadata={
        "help": "a named dataset: stdlib (the built-in corpus: this Python's standard "
                "library) or shakespeare; INPUT files replace it"})
    inputs: tuple[str, ...] = ()        # files / folders / globs; replace `source` if given
    max_bytes: int | None = field(default=DEFAULT_BUILTIN_BYTES, metadata={
        "help": "cap of the built-in corpus, in bytes"})
    tokenizer: str | None = field(default=None, metadata={
        "help": "an existing tokenizer.json to use (unset: train one on the data, cached)"})
    vocab_size: int = field(default=4096, metadata={
        "help": "of the tokenizer trained on the data, special tokens included"})
    pattern: str = field(default=DEFAULT_PATTERN, metadata={
        "help": "the tokenizer's pre-split: gpt2, gpt4, none, or a regex"})
    val_fraction: float = field(default=DEFAULT_VAL_FRACTION, metadata={
        "help": "share of documents held out for validation (of the text, for one document)"})

    def __post_init__(self) -> None:
        _check_types(self)
        object.__setattr__(self, "inputs", tuple(self.inputs))   # JSON gives a list
        if not 0 < self.val_fraction < 1:
            raise ValueError(f"val_fraction must be in (0, 1): training needs held-out text, "
                             f"got {self.val_fraction}")


# ---------------------------------------------------------------------------------------------
# generation

@dataclass(frozen=True, kw_only=True)
class SamplingSettings:
    """The validated sampling controls (their formulas: basegpt/sampling.py).

    Each control's default is its "off" value: temperature 1, top_k 0, top_p 1.0, min_p 0.0,
    repetition_penalty 1.0 (temperature 0 = greedy). None also means off and is stored as the
    off value, so `SamplingSettings(top_k=None) == SamplingSettings()` and `choose` never
    meets a None. `GenerationConfig` adds the rest of a generation call's settings.
    """

    temperature: float | None = field(default=1.0, metadata={
        "help": "0 = greedy (argmax), 1 = the model's distribution, higher = flatter"})
    top_k: int | None = field(default=0, metadata={
        "help": "sample from the k most likely tokens only (0 = off)"})
    top_p: float | None = field(default=1.0, metadata={
        "help": "nucleus: the most likely tokens with total probability >= p (1 = off)"})
    min_p: float | None = field(default=0.0, metadata={
        "help": "drop tokens below min_p x the top probability (0 = off)"})
    repetition_penalty: float | None = field(default=1.0, metadata={
        "help": "> 1 makes tokens already in the text less likely (CTRL; 1 = off)"})

    def __post_init__(self) -> None:
        for f in fields(SamplingSettings):                # None -> the off value, once
            if getattr(self, f.name) is None:
                object.__setattr__(self, f.name, f.default)
        t, k, p, m, r = (self.temperature, self.top_k, self.top_p, self.min_p,
                         self.repetition_penalty)
        if not _is_real(t) or not t >= 0 or math.isinf(t):
            raise ValueError(f"temperature={t!r}: must be a finite number >= 0 "
                             "(0 = greedy, 1 = the model's own distribution)")
        if isinstance(k, bool) or not isinstance(k, int) or k < 0:
            raise ValueError(f"top_k={k!r}: must be an integer >= 0 (0 or None = off)")
        if not _is_real(p) or not 0 < p <= 1:
            raise ValueError(f"top_p={p!r}: must be in (0, 1] (1 or None = off)")
        if not _is_real(m) or not 0 <= m < 1:
            raise ValueError(f"min_p={m!r}: must be in [0, 1) (0 or None = off)")
        if not _is_real(r) or not r > 0 or math.isinf(r):
            raise ValueError(f"repetition_penalty={r!r}: must be a finite number > 0 "
                             "(1 = off, > 1 discourages repeats, < 1 encourages them)")

    @property
    def greedy(self) -> bool:
        return self.temperature == 0


def _is_real(x: object) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and not math.isnan(x)


@dataclass(frozen=True, kw_only=True)
class GenerationConfig(SamplingSettings):
    """Every setting of one generation call, declared, defaulted and validated here only: the
    sampling controls of `SamplingSettings` (temperature, top_k, top_p, min_p,
    repetition_penalty) plus how many tokens, where to stop, the seed and the decoding path.

        config = GenerationConfig(max_new_tokens=100, temperature=0.8, stop=["\\n\\n"], seed=0)
        text = generate(model, tok, "def ", config=config)
        greedy = generate(model, tok, "def ", config=config, temperature=0)   # one field changed

    `generate`, `stream` and `generate_ids` take these fields as keywords too; either way they
    build one GenerationConfig on entry, and everything below reads only that. `stop` is stored
    as a tuple (a str or int alone becomes a one-item tuple, None an empty one).
    """

    max_new_tokens: int = field(default=256, metadata={"help": "at most this many new tokens"})
    stop: tuple[int | str, ...] = field(default=(), metadata={
        "help": "token ids and/or strings; generation ends at the first, and the text is cut "
                "before it (a string is found also when it spans several tokens)"})
    stop_at_eot: bool = field(default=True, metadata={
        "help": "end at the end-of-text token (not part of the text)"})
    seed: int | None = field(default=None, metadata={
        "help": "the same seed gives the same text (torch's global RNG is not used); "
                "None = random"})
    strict_context: bool = field(default=False, metadata={
        "help": "refuse (ValueError) a prompt + max_new_tokens longer than n_context instead "
                "of sliding the window"})
    use_cache: bool = field(default=True, metadata={
        "help": "decode on the KV cache; off reruns the whole context every step (the "
                "reference path; slow)"})
    fast_step: bool = field(default=True, metadata={
        "help": "one-token steps on DecodeStep (basegpt/fast/decode.py: the model's forward "
                "for T = 1 in fewer operations, one row in compiled C where that extension "
                "was built, the same logits to float rounding) where the "
                "model allows it (any basegpt-built B2lM without forward hooks) and basegpt.fast "
                "is on; off runs every step through the model's forward"})

    def __post_init__(self) -> None:
        super().__post_init__()
        object.__setattr__(self, "stop", _stop_items(self.stop))
        _check_count(self.max_new_tokens)
        _check_seed(self.seed)
        for name in ("stop_at_eot", "strict_context", "use_cache", "fast_step"):
            value = getattr(self, name)
            if not isinstance(value, bool):
                raise TypeError(f"{name} must be True or False, got {type(value).__name__} "
                                f"{value!r}")

    @classmethod
    def build(cls, config: GenerationConfig | None = None, **settings: Any) -> GenerationConfig:
        """`config` (None: the defaults) with the fields named in `settings` replaced, validated
        again. An unknown name is a TypeError that suggests the nearest field."""
        if config is None:
            config = cls()
        elif not isinstance(config, cls):
            raise TypeError(f"config must be a GenerationConfig, got {type(config).__name__}; "
                            "e.g. config=GenerationConfig(temperature=0.8)")
        names = [f.name for f in fields(cls)]
        for name in settings:
            if name not in names:
                near = difflib.get_close_matches(name, names, n=1)
                raise TypeError(f"unknown generation setting {name!r}"
                                + (f"; did you mean {near[0]!r}?" if near else "")
                                + f" (settings: {', '.join(names)})")
        return dataclasses.replace(config, **settings) if settings else config


def _stop_items(stop: int | str | Iterable[int | str] | None) -> tuple[int | str, ...]:
    """The stop setting as a tuple of token ids and strings: 2 -> (2,), "\\n" -> ("\\n",),
    None -> (). Whether an id is in the vocabulary is checked against the model (generate.py)."""
    if stop is None:
        return ()
    items = (stop,) if isinstance(stop, (int, str)) else tuple(stop)
    for s in items:
        if isinstance(s, str) and not s:
            raise ValueError("an empty stop string would stop before the first token; "
                             "remove it")
        if not isinstance(s, (int, str)) or isinstance(s, bool):
            raise TypeError(f"stop must hold token ids (int) and/or strings, got "
                            f"{type(s).__name__} {s!r}")
    return items


def _check_count(max_new_tokens: Any) -> None:
    if isinstance(max_new_tokens, bool) or not isinstance(max_new_tokens, int) or max_new_tokens < 0:
        raise ValueError(f"max_new_tokens={max_new_tokens!r}: must be an integer >= 0")


def _check_seed(seed: Any) -> None:
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int)):
        raise TypeError(f"seed must be an int or None, got {type(seed).__name__} {seed!r}; "
                        "e.g. seed=0")
    if seed is not None and not 0 <= seed <= MAX_SEED:
        raise ValueError(f"seed={seed}: must be in 0..{MAX_SEED} (2**63 - 1), as torch's "
                         "64-bit generators take it; choose a smaller seed")


# ---------------------------------------------------------------------------------------------
# validation

_FLOAT_FIELDS = {"norm_eps", "rope_base", "embed_dropout", "attn_dropout", "resid_dropout", "init_std"}


def _default(cls: type, name: str) -> Any:
    return next(f.default for f in fields(cls) if f.name == name)


def _is_number(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool)


def _check_types(cfg: Any) -> None:
    """Check every field of a dataclass config against its annotation, so a wrongly typed
    value from a config file (`lr = "0.003"`) is a ValueError naming the field, the value and
    the type it needs, not a comparison failing later. Understands the annotations the
    configs use: int, float (an int is a number too), str, bool, None, Literal[...] and
    tuple[X, ...] (JSON gives a list), and unions of them."""
    hints = get_type_hints(type(cfg))
    for f in fields(cfg):
        value = getattr(cfg, f.name)
        if not _has_type(value, hints[f.name]):
            if get_origin(hints[f.name]) is Literal:
                _check_choice(f.name, value, hints[f.name])     # names the choices
            raise ValueError(f"{f.name}={value!r}: must be {_type_name(hints[f.name])}, "
                             f"not {type(value).__name__}")


def _has_type(value: Any, hint: Any) -> bool:
    origin, args = get_origin(hint), get_args(hint)
    if origin in (Union, UnionType):
        return any(_has_type(value, a) for a in args)
    if origin is Literal:
        return value in args
    if origin is tuple:                                  # tuple[X, ...]
        return isinstance(value, (tuple, list)) and all(_has_type(v, args[0]) for v in value)
    if hint is type(None):
        return value is None
    if hint is float:
        return _is_number(value)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    return isinstance(value, hint)                       # str, bool


def _type_name(hint: Any) -> str:
    """int | None -> "an integer or None"; tuple[str, ...] -> "a list of strings"."""
    origin, args = get_origin(hint), get_args(hint)
    if origin in (Union, UnionType):
        return " or ".join(_type_name(a) for a in args)
    if origin is Literal:
        return "one of " + ", ".join(map(repr, args))
    if origin is tuple:
        return f"a list of {_type_name(args[0]).removeprefix('a ').removeprefix('an ')}s"
    names = {int: "an integer", float: "a number", str: "a string", bool: "true or false",
             type(None): "None"}
    return names.get(hint, getattr(hint, "__name__", str(hint)))


def check_keys(d: dict[str, Any], cls: type, where: str) -> None:
    """A ValueError for the first key of `d` that is no field of the dataclass `cls`, naming
    `where` it was found and the nearest field (or, with none near, every field)."""
    valid = [f.name for f in fields(cls)]
    for key in d:
        if key not in valid:
            near = difflib.get_close_matches(str(key), valid, n=1)
            hint = f"did you mean {near[0]!r}?" if near else f"valid keys: {', '.join(valid)}"
            raise ValueError(f"{where}: unknown key {key!r}; {hint}")


def _validate(cfg: ModelConfig) -> None:
    """Check every field of cfg, then each resolved block; raise ValueError naming the field."""
    hints = get_type_hints(ModelConfig)
    for name in ("vocab_size", "n_context", "n_block", "n_embed"):
        _check_positive_int(name, getattr(cfg, name))
    for name in ("norm_position", "norm", "norm_kernel", "positional", "activation",
                 "activation_kernel", "attention"):
        _check_choice(name, getattr(cfg, name), hints[name])
    for name in ("bias", "tie_weights"):
        if not isinstance(getattr(cfg, name), bool):
            raise ValueError(f"{name}={getattr(cfg, name)!r}: must be true or false")
    for name in ("norm_eps", "rope_base", "init_std"):
        value = getattr(cfg, name)
        if not _is_number(value) or not 0 < value < math.inf:
            raise ValueError(f"{name}={value!r}: must be a finite positive number")
    _check_dropout("embed_dropout", cfg.embed_dropout)

    if cfg.blocks and len(cfg.blocks) != cfg.n_block:
        raise ValueError(f"blocks has {len(cfg.blocks)} entries but n_block={cfg.n_block}: give one "
                         f"override per block (use {{}} for a block that keeps the defaults), "
                         f"or none at all")
    for i, b in enumerate(cfg.blocks):
        if not isinstance(b, BlockOverride):
            raise ValueError(f"blocks[{i}]={b!r}: must be a dict of per-block fields "
                             f"({', '.join(BLOCK_FIELDS)})")

    # Every check below runs on the resolved block, and names the field where the user set it:
    # `blocks[2].n_head` if block 2 overrides it, plain `n_head` if it comes from the model-wide value.
    for i in range(cfg.n_block):
        set_here = set(cfg.blocks[i].to_dict()) if cfg.blocks else set()

        def name(f: str, i: int = i, set_here: set[str] = set_here) -> str:
            return f"blocks[{i}].{f}" if f in set_here else f

        over = cfg.blocks[i].to_dict() if cfg.blocks else {}
        for f in ("n_head", "n_k", "n_v", "n_ff"):
            _check_positive_int(name(f), over.get(f, getattr(cfg, f)))
        kv = over.get("n_kv_head", cfg.n_kv_head)
        if kv is not None:
            _check_positive_int(name("n_kv_head"), kv)
        for f in ("activation", "norm", "attention"):
            _check_choice(name(f), over.get(f, getattr(cfg, f)), hints[f])
        for f in ("attn_dropout", "resid_dropout"):
            _check_dropout(name(f), over.get(f, getattr(cfg, f)))

        b = cfg.block_config(i)
        if b.n_head % b.n_kv_head != 0:
            # Blame the field this block changed; with no override, the model-wide n_head.
            culprit = "n_kv_head" if "n_kv_head" in set_here and "n_head" not in set_here else "n_head"
            raise ValueError(f"{name(culprit)}={getattr(b, culprit)}: n_head={b.n_head} must be divisible by "
                             f"n_kv_head={b.n_kv_head}, since each key/value head serves a whole "
                             f"number of query heads; choose n_kv_head among the divisors of n_head")
        if cfg.positional == "rope" and b.n_k % 2 != 0:
            raise ValueError(f"{name('n_k')}={b.n_k}: positional='rope' rotates pairs of "
                             f"query/key dimensions, so n_k must be even")


def _check_positive_int(name: str, value: Any) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise ValueError(f"{name}={value!r}: must be a positive integer")


def _check_choice(name: str, value: Any, literal: Any) -> None:
    choices = [c for c in get_args(literal) if c is not None]
    if not choices:                                # Optional[Literal[...]]: unwrap one level
        choices = [c for a in get_args(literal) for c in get_args(a)]
    if value not in choices:
        near = difflib.get_close_matches(str(value), choices, n=1)
        hint = f" (did you mean {near[0]!r}?)" if near else ""
        raise ValueError(f"{name}={value!r}: choose one of {', '.join(map(repr, choices))}{hint}")


DEVICE_FORMS = ("auto", "cpu", "cuda", "cuda:N", "mps")


def _check_device(value: Any) -> None:
    """The form of a device name only ("cuda:7" passes); whether this machine has it is
    decided when training starts (devices.pick_device)."""
    form = r"auto|cpu|mps|cuda(:\d+)?"
    if isinstance(value, str) and re.fullmatch(form, value):
        return
    text = str(value).strip().lower()
    if re.fullmatch(form, text):
        near = [text]                                     # "CPU", "cuda "
    elif text.startswith("gpu"):
        near = ["cuda" + text[3:]]                        # "gpu", "gpu:1": torch says cuda
    else:
        near = difflib.get_close_matches(text, ["auto", "cpu", "cuda", "mps"], n=1)
    hint = f"; did you mean {near[0]!r}?" if near else ""
    raise ValueError(f"device={value!r}: choose one of {', '.join(DEVICE_FORMS)} "
                     f"(N = the GPU's index){hint}")


def _check_dropout(name: str, value: Any) -> None:
    if not _is_number(value) or not 0.0 <= value < 1.0:
        raise ValueError(f"{name}={value!r}: a dropout probability must be in [0, 1)")
