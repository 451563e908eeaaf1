"""Text generation: the decoding loop on the KV cache, streaming, stop conditions, scoring.

    from basegpt.generate import generate, stream, score
    text = generate(model, tokenizer, "Once upon a time", max_new_tokens=100, temperature=0.8,
                    top_p=0.95, stop=["\\n\\n"], seed=0)
    for piece in stream(model, tokenizer, "Once upon a time", max_new_tokens=100):
        print(piece, end="", flush=True)

Settings: each call's settings are one `GenerationConfig` (basegpt/config.py: every field's
meaning, default and check), given as `config=`, as keywords, or both (a keyword replaces that
field); the public functions build it on entry and the loop reads only it.

The loop (`_Decoder`): encode the prompt, run it through the model once ("prefill"), which
fills a KV cache with every layer's keys and values, then each step feeds only the newest token
(T = 1), picks the next token from the logits (basegpt/sampling.py: temperature, top-k, top-p,
min-p, repetition penalty; greedy at temperature 0) and appends it. The one-token steps run on
`DecodeStep` (basegpt/fast/decode.py: the forward for T = 1 in fewer operations, the same
logits to float rounding; one row in compiled C where basegpt/fast/_decode.c was built)
unless fast_step=False, basegpt.fast is switched off or the model has parts it does not know;
then
model.forward with `logits_for="last"`.
`use_cache=False` is the reference path: every step reruns the whole context; tests hold the two
to the same tokens. generate() owns the cache: the model keeps no decoding state.

Several prompts of different lengths run as one batch: rows are left-padded to the longest, and
the model gets per-row padding counts (`pad_lengths`), from which it makes per-row positions and
an attention mask that hides the padding; each row gets the tokens it would get alone (greedy;
also once windows slide, since every row slides on its own, below).

Context policy. A model attends to at most n_context positions. By default the window slides:
when the next forward would need more than n_context positions, the context is cut to its last
`sliding_keep(n_context)` = 3/4 * n_context tokens and the cache is refilled from them (one
prefill), after which single-token steps continue; so generation runs past n_context, at the
price of one prefill every n_context / 4 tokens, and every token is predicted from at least
3/4 * n_context tokens of context (positions restart at 0 in each window, which is what the
model saw in training). A prompt longer than n_context is cut the same way. In a batch each row
has its own window, which slides when that row's own context is full, exactly as it would
alone; the cache is shared, so a slide refills it for every row, each from its own window (up to
one refill per row every n_context / 4 tokens; a finished row is cut to its last token at the
next refill, after which it causes none). The reference path (use_cache=False) uses exactly the same windows.
`strict_context=True` instead raises a ValueError when prompt + max_new_tokens exceeds n_context.

Stops: the end-of-text token (unless stop_at_eot=False), stop token ids, and stop strings, which
are matched on the decoded text, so a stop string spanning several tokens is found, and the text
is cut exactly before it. Streaming yields text only when it is complete UTF-8 (never half a
multi-byte character) and holds back any tail that could be the start of a stop string; the
concatenation of the pieces equals the non-streaming text.

An empty prompt starts from the end-of-text token (the token that begins every document after
the first in training), so "" means "a new document"; a tokenizer without one rejects "".
`stream` also takes one prompt as token ids, and once its pieces are exhausted its `.result`
is the whole `Generation` (ids, text, finish reason), which a server needs besides the text.
"""

from __future__ import annotations

import codecs
import math
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import torch

from basegpt.config import GenerationConfig
from basegpt.model.b2lm import nonfinite_message
from basegpt import fast
from basegpt.sampling import choose
from basegpt.tokenizer import Tokenizer

FinishReason = Literal["length", "eot", "stop"]


ROOM_IN_CONTEXTS = 2
"""seq's capacity beyond the prompt, in n_context lengths; a full seq is compacted (_make_room),
about once per ROOM_IN_CONTEXTS * n_context - sliding_keep(n_context) tokens."""


def sliding_keep(n_context: int) -> int:
    """Tokens kept when the context window slides: 3/4 of n_context (at least 1). Keeping more
    gives each token more context but refills the cache more often (every n_context - keep)."""
    return max(1, n_context * 3 // 4)


@dataclass
class Generation:
    """One generated continuation.

    ids: the new token ids (the prompt is not included), up to and including the token that
    stopped generation (an end-of-text or stop id, or the token completing a stop string).
    text: the new text, without the stop token or stop string (None from `generate_ids`).
    logprobs: log p(ids[i] | everything before) under the model's own distribution (log-softmax
    of the raw logits, before penalty, temperature and filters), if asked for; else None.
    finish_reason: "length" (max_new_tokens reached), "eot" or "stop".
    """

    ids: list[int]
    text: str | None
    logprobs: list[float] | None
    finish_reason: FinishReason

    def __str__(self) -> str:
        return self.text if self.text is not None else str(self.ids)


@dataclass
class Score:
    """The model's log-probabilities of a given text (see `score`).

    ids: the text's token ids; logprobs[i] = log p(ids[i] | ids[:i], preceded by end-of-text);
    nll = -mean(logprobs) (nats per token); perplexity = exp(nll).
    """

    ids: list[int]
    logprobs: list[float]

    @property
    def nll(self) -> float:
        return -sum(self.logprobs) / len(self.logprobs)

    @property
    def perplexity(self) -> float:
        return math.exp(self.nll)


# --------------------------------------------------------------------------- text tracking

class _TextTracker:
    """Turns one row's generated token ids into text incrementally: decodes complete UTF-8
    only, finds stop strings (also across token boundaries) and holds back a tail that could
    still become one, so that what `take()` hands out is final."""

    def __init__(self, tokenizer: Tokenizer, stop_strings: Sequence[str]) -> None:
        self.vocab = tokenizer.vocab                      # id -> bytes
        self.decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self.stop_strings = tuple(stop_strings)
        self.longest_stop = max((len(s) for s in stop_strings), default=0)
        self.text = ""                                    # complete characters decoded so far
        self.stop_at: int | None = None                   # where the first stop string begins
        self.given = 0                                    # characters handed out by take()

    def push(self, token_id: int) -> bool:
        """Add one token's bytes; True if this completed a stop string."""
        return self._add(self.decoder.decode(self.vocab[token_id]))

    def finish(self) -> None:
        """No more tokens: a multi-byte character left incomplete becomes U+FFFD (as decode)."""
        if self.stop_at is None:
            self._add(self.decoder.decode(b"", final=True))

    def _add(self, new: str) -> bool:
        if not new:
            return False
        # A stop string ending in `new` starts at most longest_stop - 1 characters before it.
        search_from = max(0, len(self.text) - self.longest_stop + 1)
        self.text += new
        hits = [i for s in self.stop_strings if (i := self.text.find(s, search_from)) >= 0]
        if hits:
            self.stop_at = min(hits)
            return True
        return False

    @property
    def final_text(self) -> str:
        return self.text if self.stop_at is None else self.text[:self.stop_at]

    def take(self, done: bool = False) -> str:
        """The text that is now certain and was not handed out yet."""
        if self.stop_at is not None:
            end = self.stop_at
        elif done:
            end = len(self.text)
        else:
            end = len(self.text) - self._held_back()
        piece = self.text[self.given:end]
        self.given = max(self.given, end)
        return piece

    def _held_back(self) -> int:
        """Length of the longest tail of the text that is a proper prefix of a stop string."""
        for n in range(min(self.longest_stop - 1, len(self.text) - self.given), 0, -1):
            tail = self.text[-n:]
            if any(s.startswith(tail) for s in self.stop_strings):
                return n
        return 0


# --------------------------------------------------------------------------- the decoding loop

class _Decoder:
    """The state of one generation call, advanced one token per `step()` for every row.

    seq (B, capacity) holds the left-padded prompts and the tokens generated so far;
    row b's context is seq[b, starts[b]:length], and the model sees seq[:, min(starts):length]
    with the first starts[b] - min(starts) positions of row b as padding. Its capacity is
    P + max_new_tokens, but at most P + 2 * n_context: no window is ever longer than n_context,
    so when seq is full the windows move back to its start (`_make_room`; the new ids are kept
    in `ids`). Memory therefore follows n_context, never max_new_tokens, and so does the cache.
    """

    @torch.inference_mode()
    def __init__(self, model: torch.nn.Module, prompts: list[list[int]], config: GenerationConfig,
                 *, stop_ids: frozenset[int], eot_id: int | None, want_logprobs: bool,
                 trackers: list[_TextTracker] | None = None) -> None:
        self.model, self.config = model, config          # `choose` reads its sampling fields
        self.fast_step, self.decode_step = config.fast_step, None   # DecodeStep: at first step
        self.stop_ids, self.eot_id, self.want_logprobs = stop_ids, eot_id, want_logprobs
        self.trackers = trackers
        max_new_tokens, use_cache = config.max_new_tokens, config.use_cache
        self.n_context, V = model.config.n_context, model.config.vocab_size
        device = model.tok_emb.weight.device
        B, P = len(prompts), max(len(p) for p in prompts)
        if config.strict_context and P + max_new_tokens > self.n_context:
            raise ValueError(f"prompt of {P} tokens + max_new_tokens={max_new_tokens} is "
                             f"{P + max_new_tokens} positions but n_context is {self.n_context}; "
                             f"keep prompt + new tokens <= {self.n_context}, or pass "
                             "strict_context=False to slide the window")
        capacity = P + min(max_new_tokens, ROOM_IN_CONTEXTS * self.n_context)
        self.seq = torch.zeros(B, capacity, dtype=torch.long, device=device)
        for b, p in enumerate(prompts):
            self.seq[b, P - len(p):P] = torch.tensor(p, dtype=torch.long)
        self.starts = [P - len(p) for p in prompts]        # each row's window start in seq
        self.length, self.remaining = P, max_new_tokens
        self.cache = (model.new_kv_cache(B, min(self.n_context, P + max_new_tokens))
                      if use_cache else None)
        self.cache_fresh = False                          # does the cache hold seq[:, ws:length-1]?
        self._set_windows()                               # window_start, pad_lengths
        self.seen = None
        if config.repetition_penalty != 1.0:
            self.seen = torch.zeros(B, V, dtype=torch.bool, device=device)   # (B, V)
            for b, p in enumerate(prompts):
                self.seen[b, p] = True
        self.generator = None
        if not config.greedy:
            self.generator = torch.Generator(device=device)
            if config.seed is None:
                self.generator.seed()                     # fresh entropy; global RNG untouched
            else:
                self.generator.manual_seed(config.seed)
        self.ids: list[list[int]] = [[] for _ in range(B)]
        self.logprobs: list[list[float]] | None = [[] for _ in range(B)] if want_logprobs else None
        self.finish: list[FinishReason | None] = [None] * B

    @property
    def done(self) -> bool:
        return self.remaining == 0 or all(f is not None for f in self.finish)

    def _set_windows(self) -> None:
        """The batch's window starts where the widest row's does; the rows that start later are
        left-padded by the difference."""
        self.window_start = min(self.starts)
        pad = [s - self.window_start for s in self.starts]
        self.pad_lengths = (torch.tensor(pad, device=self.seq.device) if any(pad) else None)

    def _make_room(self) -> None:
        """When seq is full, move every row's window back to the start of seq. After
        `_slide` no window is longer than n_context, and seq holds more than n_context
        positions (capacity, in __init__), so this always frees room."""
        if self.length < self.seq.shape[1]:
            return
        shift = self.window_start
        assert shift > 0, "a full seq after _slide holds a window longer than n_context"
        kept = self.length - shift
        self.seq[:, :kept] = self.seq[:, shift:self.length].clone()   # the ranges may overlap
        self.starts = [s - shift for s in self.starts]
        self.length = kept
        self._set_windows()                               # pad_lengths: unchanged

    def _slide(self) -> None:
        """Slide every row whose context would overflow n_context to its last
        sliding_keep(n_context) tokens (the row's own length, as if it ran alone)."""
        L = self.length
        full = [b for b, s in enumerate(self.starts) if L - s > self.n_context]
        if not full:
            return
        for b in full:
            self.starts[b] = L - sliding_keep(self.n_context)
        for b, f in enumerate(self.finish):
            if f is not None:                             # ignored anyway: keep the refill small
                self.starts[b] = L - 1
        self._set_windows()
        self.cache_fresh = False

    @torch.inference_mode()
    def step(self) -> None:
        """Generate one token for every row (rows already finished ignore theirs)."""
        self._slide()                                     # before a row's window overflows
        self._make_room()
        model, ws, L = self.model, self.window_start, self.length
        if self.cache is None:                            # reference path: the whole window
            logits = model(self.seq[:, ws:L], logits_for="last", pad_lengths=self.pad_lengths)[:, -1]
            _check_finite(model, logits)
        elif not self.cache_fresh:                        # prefill (again, after a slide)
            self.cache.reset()
            logits = model(self.seq[:, ws:L], kv_cache=self.cache, logits_for="last",
                           pad_lengths=self.pad_lengths)[:, -1]
            self.cache_fresh = True
            _check_finite(model, logits)
        else:                                             # one new token on the cache
            logits = self._one_token(self.seq[:, L - 1])
        try:
            next_ids = choose(logits, self.config, self.generator, self.seen)     # (B,)
        except RuntimeError:
            # torch.multinomial refuses NaN and inf probabilities: say why they are there.
            _check_finite(model, logits)
            raise
        self.seq[:, L] = next_ids
        self.length, self.remaining = L + 1, self.remaining - 1
        if self.done:
            # Greedy steps pass NaN through argmax unchecked; a non-finite weight that the
            # prefill missed (an embedding row of a generated token) stays in the cache, so
            # one check at the end finds it.
            _check_finite(model, logits)
        if self.seen is not None:
            self.seen.scatter_(1, next_ids.unsqueeze(1), True)
        chosen = next_ids.tolist()                        # the one device sync per step
        if self.logprobs is not None:
            lp = torch.log_softmax(logits.float(), dim=-1).gather(1, next_ids.unsqueeze(1))
            lps = lp.squeeze(1).tolist()
        for b, token in enumerate(chosen):
            if self.finish[b] is not None:
                continue                                  # finished rows ride along, ignored
            self.ids[b].append(token)
            if self.logprobs is not None:
                self.logprobs[b].append(lps[b])
            if token == self.eot_id:
                self.finish[b] = "eot"
            elif token in self.stop_ids:
                self.finish[b] = "stop"
            elif self.trackers is not None and self.trackers[b].push(token):
                self.finish[b] = "stop"
        if self.remaining == 0:
            self.finish = [f or "length" for f in self.finish]

    def _one_token(self, ids: torch.Tensor) -> torch.Tensor:
        """Logits (B, V) after each row's newest token ids (B,), on the cache: DecodeStep
        (basegpt/fast/decode.py) where the model allows it and fast_step and basegpt.fast are
        on, else model.forward."""
        if self.fast_step and self.decode_step is None:
            self.fast_step = fast.enabled() and fast.unsupported(self.model) is None
            if self.fast_step:
                self.decode_step = fast.DecodeStep(self.model)
        if self.decode_step is not None:
            return self.decode_step(ids, self.cache, self.pad_lengths)
        return self.model(ids.unsqueeze(1), kv_cache=self.cache, logits_for="last",
                          pad_lengths=self.pad_lengths)[:, -1]

    def results(self) -> list[Generation]:
        out = []
        for b, ids in enumerate(self.ids):
            text = None
            if self.trackers is not None:
                self.trackers[b].finish()
                text = self.trackers[b].final_text
            out.append(Generation(ids=ids, text=text, finish_reason=self.finish[b] or "length",
                                  logprobs=None if self.logprobs is None else self.logprobs[b]))
        return out


class _EvalMode:
    """Run in eval mode (no dropout) and put the model back as it was afterwards."""

    def __init__(self, model: torch.nn.Module) -> None:
        self.model, self.was_training = model, model.training

    def __enter__(self) -> None:
        if self.was_training:
            self.model.train(False)

    def __exit__(self, *exc: object) -> None:
        if self.was_training:
            self.model.train(True)


# --------------------------------------------------------------------------- validation

def _check_finite(model: torch.nn.Module, logits: torch.Tensor) -> None:
    """A ValueError naming the model's non-finite weights when `logits` hold NaN or inf.
    Called once per full forward (prefill) and once at the end, not on every step: one sum
    over (B, V) is the whole cost when the logits are healthy (a NaN or inf makes it non-finite;
    summed in float32, which float16 logits would overflow)."""
    if not bool(logits.sum(dtype=torch.float32).isfinite()):
        raise ValueError(nonfinite_message(model, "the model's next-token scores (logits)"))


def _check_model(model: torch.nn.Module) -> None:
    if not all(hasattr(model, a) for a in ("config", "new_kv_cache", "tok_emb")):
        raise TypeError(f"model must be a basegpt B2lM, got {type(model).__name__}; unwrap "
                        "torch.compile / DDP wrappers with basegpt.checkpoint.unwrap(model)")


def _check_rows(prompt_ids: torch.Tensor | Sequence[Sequence[int]], vocab_size: int) -> list[list[int]]:
    """(B, T) tensor or list of lists -> list of non-empty lists of ids in [0, vocab_size)."""
    if isinstance(prompt_ids, torch.Tensor):
        if prompt_ids.dim() != 2:
            raise ValueError(f"prompt_ids must be (batch, time), got shape {tuple(prompt_ids.shape)}; "
                             "for one prompt use ids.unsqueeze(0) or [ids]")
        rows = prompt_ids.tolist()
    else:
        rows = [r.tolist() if isinstance(r, torch.Tensor) else
                list(r) if isinstance(r, Sequence) and not isinstance(r, str) else r
                for r in prompt_ids]
        if rows and not all(isinstance(r, list) for r in rows):
            raise ValueError("prompt_ids must be a list of lists of token ids; for one prompt "
                             "pass [ids]")
    if not rows:
        raise ValueError("prompt_ids has no rows; give at least one prompt")
    for b, row in enumerate(rows):
        if not row:
            raise ValueError(f"prompt row {b} is empty; the model needs at least one token to "
                             "condition on: start it with the end-of-text token "
                             "(tokenizer.eot_id)")
        bad = [t for t in row if isinstance(t, bool) or not isinstance(t, int)
               or not 0 <= t < vocab_size]
        if bad:
            raise ValueError(f"prompt row {b} has token id {bad[0]!r} out of range; valid ids "
                             f"are 0..{vocab_size - 1}")
    return rows


def _split_stop(stop: tuple[int | str, ...], vocab_size: int) -> tuple[frozenset[int], list[str]]:
    """GenerationConfig.stop -> (stop token ids, checked against the vocabulary; stop strings)."""
    ids = frozenset(s for s in stop if isinstance(s, int))
    for s in sorted(ids):
        if not 0 <= s < vocab_size:
            raise ValueError(f"stop token id {s} is out of range; valid ids are "
                             f"0..{vocab_size - 1}")
    return ids, [s for s in stop if isinstance(s, str)]


def encode_prompt(tokenizer: Tokenizer, prompt: str, model: torch.nn.Module) -> list[int]:
    """The token ids generation starts from for `prompt`: its encoding, or for "" the
    end-of-text token alone (a new document). Checks that the tokenizer fits the model."""
    if not isinstance(prompt, str):
        raise TypeError(f"prompt must be a str (or a list of str), got {type(prompt).__name__}; "
                        "for token ids use generate_ids")
    if len(tokenizer) != model.config.vocab_size:
        raise ValueError(f"the tokenizer has {len(tokenizer)} tokens but the model's vocab_size "
                         f"is {model.config.vocab_size}; use the tokenizer the model was "
                         "trained with")
    ids = tokenizer.encode(prompt)
    if not ids:                       # "" = a new document: start from end-of-text
        if _eot(tokenizer) is None:
            raise ValueError("the prompt is empty, and an empty prompt starts from the "
                             "<|endoftext|> token, which this tokenizer does not have; give a "
                             "prompt of at least one character")
        ids = [tokenizer.eot_id]
    return ids


def _eot(tokenizer: Tokenizer) -> int | None:
    return tokenizer.special_tokens.get("<|endoftext|>")


# --------------------------------------------------------------------------- public API

def generate_ids(model: torch.nn.Module, prompt_ids: torch.Tensor | Sequence[Sequence[int]], *,
                 config: GenerationConfig | None = None, eot_id: int | None = None,
                 return_logprobs: bool = False, **settings: Any) -> list[Generation]:
    """Continue each row of `prompt_ids` ((B, T) int64 tensor, or a list of B lists of ids of
    any lengths): one `Generation` per row, with `.ids` (and `.logprobs` if asked).

    Token-level: stop holds token ids only, and eot_id (if given, and unless
    stop_at_eot=False) stops a row like a stop id but is reported as finish_reason "eot".
    Rows of different lengths run as one left-padded batch; with greedy decoding each row
    gets the same tokens as run alone, also past n_context (each row's window slides at its
    own length; module docstring). Settings as `generate`.
    """
    config = GenerationConfig.build(config, **settings)
    _check_model(model)
    V = model.config.vocab_size
    rows = _check_rows(prompt_ids, V)
    stop_ids, strings = _split_stop(config.stop, V)
    if strings:
        raise ValueError(f"stop strings {strings} need a tokenizer: use generate(model, "
                         "tokenizer, ...) or give stop token ids")
    if eot_id is not None and not 0 <= eot_id < V:
        raise ValueError(f"eot_id={eot_id} is out of range; valid ids are 0..{V - 1}")
    with _EvalMode(model):
        decoder = _Decoder(model, rows, config, stop_ids=stop_ids,
                           eot_id=eot_id if config.stop_at_eot else None,
                           want_logprobs=return_logprobs)
        while not decoder.done:
            decoder.step()
    return decoder.results()


def _text_decoder(model: torch.nn.Module, tokenizer: Tokenizer, rows: list[list[int]],
                  config: GenerationConfig, want_logprobs: bool) -> _Decoder:
    """The decoder for prompts already encoded (`rows`), with text tracking and stop strings."""
    stop_ids, strings = _split_stop(config.stop, model.config.vocab_size)
    return _Decoder(model, rows, config, stop_ids=stop_ids,
                    eot_id=_eot(tokenizer) if config.stop_at_eot else None,
                    want_logprobs=want_logprobs,
                    trackers=[_TextTracker(tokenizer, strings) for _ in rows])


def generate(model: torch.nn.Module, tokenizer: Tokenizer, prompt: str | Sequence[str], *,
             config: GenerationConfig | None = None, return_logprobs: bool = False,
             **settings: Any) -> str | Generation | list[str] | list[Generation]:
    """The text that `model` writes after `prompt` (the prompt itself is not included).

        generate(model, tok, "def ", max_new_tokens=50, temperature=0.8, top_k=40, seed=0)
        generate(model, tok, "def ", config=GenerationConfig(temperature=0.8, top_k=40))

    The settings are the fields of `GenerationConfig` (max_new_tokens, temperature, top_k,
    top_p, min_p, repetition_penalty, stop, stop_at_eot, seed, strict_context, use_cache,
    fast_step; their meanings and defaults are in basegpt/config.py), given as keywords, as a
    `config`, or both (a keyword replaces that field of `config`). An unknown name is a
    TypeError that suggests the nearest.

    A list of prompts runs as one batch and gives a list. With return_logprobs=True each result
    is a `Generation` (.text, .ids, .logprobs, .finish_reason) instead of a str.
    An empty prompt starts from the end-of-text token. The model runs in eval mode (restored).
    """
    config = GenerationConfig.build(config, **settings)
    if isinstance(prompt, (bytes, bytearray)) or not isinstance(prompt, (str, Iterable)):
        is_bytes = isinstance(prompt, (bytes, bytearray))
        raise TypeError(f"prompt must be a str or a list of str, got {type(prompt).__name__}"
                        + (": decode it first, prompt.decode('utf-8')" if is_bytes else ""))
    prompts = [prompt] if isinstance(prompt, str) else list(prompt)
    if not prompts:
        raise ValueError("no prompts given; pass a str or a non-empty list of str")
    _check_model(model)
    rows = [encode_prompt(tokenizer, p, model) for p in prompts]
    with _EvalMode(model):
        decoder = _text_decoder(model, tokenizer, rows, config, return_logprobs)
        while not decoder.done:
            decoder.step()
    results = decoder.results()
    out = results if return_logprobs else [r.text for r in results]
    return out[0] if isinstance(prompt, str) else out


class TextStream(Iterator[str]):
    """The text pieces of one generation, each as soon as it is certain (what `stream`
    returns). Once the iteration is over, `result` holds the whole `Generation`: its ids, text
    (the pieces joined) and finish_reason; `close()` stops early (no more steps are taken)."""

    def __init__(self, model: torch.nn.Module, decoder: _Decoder) -> None:
        self._decoder = decoder
        self._pieces = _stream_pieces(model, decoder)
        self.result: Generation | None = None

    def __iter__(self) -> TextStream:
        return self

    def __next__(self) -> str:
        try:
            return next(self._pieces)
        except StopIteration:
            if self.result is None:
                self.result = self._decoder.results()[0]
            raise

    def close(self) -> None:
        self._pieces.close()


def stream(model: torch.nn.Module, tokenizer: Tokenizer, prompt: str | Sequence[int], *,
           config: GenerationConfig | None = None, **settings: Any) -> TextStream:
    """`generate` for one prompt, as an iterator of text pieces, each yielded as soon as it is
    certain: complete UTF-8 characters only, and never a tail that could begin a stop string.
    "".join(stream(...)) == generate(...) with the same settings (keywords and/or `config`).

    The prompt is a str, or its token ids (a list of ints: the model continues exactly those
    tokens, even where the tokenizer would encode their text differently). After the last
    piece, `.result` of the returned `TextStream` is the whole `Generation`.
    Settings are checked when stream() is called, not at the first next().
    """
    config = GenerationConfig.build(config, **settings)
    _check_model(model)
    if isinstance(prompt, str):
        row = encode_prompt(tokenizer, prompt, model)
    elif (isinstance(prompt, (Sequence, torch.Tensor)) and not isinstance(prompt, (bytes, bytearray))
          and all(not isinstance(t, (str, Sequence)) for t in prompt)):
        if len(tokenizer) != model.config.vocab_size:
            raise ValueError(f"the tokenizer has {len(tokenizer)} tokens but the model's "
                             f"vocab_size is {model.config.vocab_size}; use the tokenizer the "
                             "model was trained with")
        row = _check_rows([prompt], model.config.vocab_size)[0]
    else:
        raise TypeError(f"stream takes one prompt: a str or a list of token ids, got "
                        f"{type(prompt).__name__}; for several prompts use generate")
    decoder = _text_decoder(model, tokenizer, [row], config, want_logprobs=False)
    return TextStream(model, decoder)


def _stream_pieces(model: torch.nn.Module, decoder: _Decoder) -> Iterator[str]:
    tracker = decoder.trackers[0]
    # Eval mode is held while the iterator runs; grad mode is not (inference_mode wraps each
    # step only), so the caller's code between pieces runs in its own autograd state.
    with _EvalMode(model):
        while not decoder.done:
            decoder.step()
            piece = tracker.take()
            if piece:
                yield piece
    tracker.finish()
    piece = tracker.take(done=True)
    if piece:
        yield piece


def score_ids(model: torch.nn.Module, ids: Sequence[int] | torch.Tensor) -> list[float]:
    """log p(ids[t] | ids[:t]) for t = 1 .. len(ids) - 1 (the first id is only context).

    A sequence of up to n_context + 1 ids takes one forward. A longer one is scored in
    windows of n_context inputs, each scoring the next n_context // 2 targets, so every token is
    predicted from at least n_context - n_context // 2 tokens of context (or all before it).
    """
    return score_ids_with_top(model, ids, 0)[0]


def score_ids_with_top(model: torch.nn.Module, ids: Sequence[int] | torch.Tensor,
                       k: int) -> tuple[list[float], list[list[tuple[int, float]]]]:
    """`score_ids`, and at each scored position t the k most likely tokens of the same
    distribution p(. | ids[:t]) as (id, log p) pairs, most likely first: what a learner (or an
    API's `logprobs`) shows as the alternatives to the token that is there.

        logprobs, top = score_ids_with_top(model, [5, 9, 2], k=2)
        # logprobs[0] = log p(9 | 5); top[0] = [(id_a, log p(id_a | 5)), (id_b, ...)]
    """
    if isinstance(k, bool) or not isinstance(k, int) or k < 0:
        raise ValueError(f"k={k!r}: must be an integer >= 0 (the alternatives to list)")
    logprobs: list[float] = []
    top: list[list[tuple[int, float]]] = []
    for targets, logp in _score_windows(model, ids):
        logprobs += logp.gather(1, targets.unsqueeze(1)).squeeze(1).tolist()
        if k:
            values, indices = logp.topk(min(k, logp.shape[-1]), dim=-1)    # (n, k) each
            top += [list(zip(i, v)) for i, v in zip(indices.tolist(), values.tolist())]
        else:
            top += [[] for _ in range(len(targets))]
    return logprobs, top


@torch.inference_mode()
def _score_windows(model: torch.nn.Module,
                   ids: Sequence[int] | torch.Tensor) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """The windows of `score_ids`: for each, the targets (n,) and the log-probabilities
    (n, V) that predict them."""
    _check_model(model)
    if isinstance(ids, torch.Tensor):
        if ids.dim() != 1:
            raise ValueError(f"score_ids takes one 1-D sequence of ids, got a tensor of shape "
                             f"{tuple(ids.shape)}; for one row of a batch pass ids[b]")
        ids = ids.tolist()
    ids = list(ids)
    if any((isinstance(t, Sequence) and not isinstance(t, str))
           or (isinstance(t, torch.Tensor) and t.dim() > 0) for t in ids):
        raise ValueError("score_ids takes one 1-D sequence of ids, got a nested one; score "
                         "each row separately: score_ids(model, ids[b])")
    row = _check_rows([ids], model.config.vocab_size)[0]
    if len(row) < 2:
        raise ValueError(f"need at least 2 ids to score (the first is only context), got {len(row)}")
    n_context = model.config.n_context
    step = max(1, n_context // 2)
    seq = torch.tensor(row, dtype=torch.long, device=model.tok_emb.weight.device)
    with _EvalMode(model):
        first = 1                                             # the next target to score
        while first < len(row):
            end = min(len(row), first + step) if len(row) > n_context else len(row)
            start = max(0, end - 1 - n_context)               # inputs seq[start:end-1]
            logits = model(seq[start:end - 1].unsqueeze(0))[0]            # (T, V)
            logp = torch.log_softmax(logits.float(), dim=-1)             # (T, V)
            # rows first-1-start .. end-2-start predict targets seq[first:end]
            yield seq[first:end], logp[first - 1 - start:end - 1 - start]   # (n,), (n, V)
            first = end


def score(model: torch.nn.Module, tokenizer: Tokenizer, text: str) -> Score:
    """Per-token log-probabilities and perplexity of `text` under `model`.

    The text is encoded and preceded by the end-of-text token, so its first token is scored too
    (as the first token of a document). perplexity = exp(-mean over tokens of log p).
    """
    if not isinstance(text, str) or not text:
        raise ValueError("score needs a non-empty str")
    ids = encode_prompt(tokenizer, text, model)
    return Score(ids=ids, logprobs=score_ids(model, [tokenizer.eot_id] + ids))


__all__ = ["GenerationConfig", "Generation", "Score", "TextStream", "encode_prompt", "generate",
           "generate_ids", "score", "score_ids", "score_ids_with_top", "sliding_keep", "stream"]
