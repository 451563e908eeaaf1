"""generate / generate_ids / stream / score: cached == uncached decoding, batching, the sliding
window, stops (also across tokens), streaming with multi-byte characters, seeds, validation,
perplexity by hand. Tiny random models; an untrained byte-level tokenizer, so every byte is one
token and an emoji is four."""

from __future__ import annotations

import math

import pytest
import torch

from basegpt import Tokenizer
from basegpt.config import ModelConfig
from basegpt.generate import (Generation, _TextTracker, generate, generate_ids, score, score_ids,
                              score_ids_with_top, sliding_keep, stream)
from basegpt.model import B2lM

TOK = Tokenizer(vocab_size=300)            # untrained: 256 bytes + <|endoftext|> + <|pad|>
V = len(TOK)                               # 258


def tiny_model(n_context: int = 256, seed: int = 0, **kw) -> B2lM:
    torch.manual_seed(seed)
    base = dict(vocab_size=V, n_context=n_context, n_block=2, n_embed=32, n_head=4, n_k=8, n_v=8,
                n_ff=64)
    return B2lM(ModelConfig(**(base | kw))).eval()


@pytest.fixture(scope="module")
def model() -> B2lM:
    return tiny_model()


def greedy(model, rows, n, **kw):
    return [g.ids for g in generate_ids(model, rows, max_new_tokens=n, temperature=0, **kw)]


# -- the cache is an optimisation, never a change ----------------------------------------------

@pytest.mark.parametrize("positional", ["sinusoidal", "learned", "rope", "none"])
@pytest.mark.parametrize("layout", ["mha", "gqa"])
def test_greedy_with_and_without_cache_agree_for_200_steps(positional, layout):
    kw = {"mha": {}, "gqa": {"n_kv_head": 2}}[layout]
    model = tiny_model(n_context=220, positional=positional, **kw)
    prompt = [[72, 101, 108, 108, 111, 33]]
    cached = greedy(model, prompt, 200)
    uncached = greedy(model, prompt, 200, use_cache=False)
    assert len(cached[0]) == 200, "200 new tokens (no eot given, so no early stop)"
    assert cached == uncached, f"{positional}/{layout}: cached and uncached greedy tokens differ"
    assert len(set(cached[0])) > 3, "a degenerate run (one repeated token) would prove little"


@pytest.mark.parametrize("positional", ["learned", "rope"])
def test_sliding_window_past_n_context_agrees_with_the_reference(positional):
    model = tiny_model(n_context=16, positional=positional)
    cached = greedy(model, [[1, 2, 3, 4, 5]], 60)
    assert len(cached[0]) == 60, "generation runs past n_context by sliding the window"
    assert cached == greedy(model, [[1, 2, 3, 4, 5]], 60, use_cache=False), "same windows"


def test_sliding_window_keeps_the_documented_context():
    """After the slide, the next token is predicted from exactly the last sliding_keep tokens."""
    model = tiny_model(n_context=16)
    prompt = list(range(10, 26))                                  # exactly n_context tokens
    out = greedy(model, [prompt], 2)[0]
    with torch.no_grad():
        first = model(torch.tensor([prompt]))[0, -1].argmax().item()
        window = (prompt + [first])[-sliding_keep(16):]          # 17 > 16: keep the last 12
        second = model(torch.tensor([window]))[0, -1].argmax().item()
    assert sliding_keep(16) == 12, "3/4 of n_context"
    assert out == [first, second], f"generated {out}, expected {[first, second]}"
    long_prompt = list(range(10, 40))                             # 30 > n_context: cut to 12
    with torch.no_grad():
        expected = model(torch.tensor([long_prompt[-12:]]))[0, -1].argmax().item()
    assert greedy(model, [long_prompt], 1)[0] == [expected], "long prompts keep their last 12"


def forward_lengths(model, call) -> list[int]:
    """T (the new positions) of every forward pass that call() makes on model."""
    lengths = []
    handle = model.register_forward_pre_hook(lambda module, args: lengths.append(args[0].shape[1]))
    try:
        call()
    finally:
        handle.remove()
    return lengths


def test_the_cache_is_used_prefill_once_then_one_token_per_step():
    model = tiny_model()                                          # n_context 256: no slide
    prompt = [1, 2, 3, 4, 5]
    assert forward_lengths(model, lambda: greedy(model, [prompt], 20)) == [5] + [1] * 19, \
        "prefill the 5 prompt tokens once, then feed only the newest token"
    assert forward_lengths(model, lambda: greedy(model, [prompt], 20, use_cache=False)) == \
        list(range(5, 25)), "the reference path reruns the whole context every step"


def test_the_cache_is_refilled_from_the_last_window_when_it_slides():
    model = tiny_model(n_context=16)
    # Before the step at context length L (5 + steps so far) the window would hold L tokens;
    # at L = 17 > 16 it slides to the last sliding_keep(16) = 12 (positions 5..16) and refills
    # the cache from them; at L = 22 the window 5..21 is 17 again: refill from 10..21.
    expected = [5] + [1] * 11 + [12] + [1] * 4 + [12] + [1] * 2   # 20 forwards, 20 tokens
    assert forward_lengths(model, lambda: greedy(model, [[1, 2, 3, 4, 5]], 20)) == expected, \
        "one prefill per slide of 12 tokens, single tokens in between"
    # A batch: each row slides at its own length, and every slide refills all rows, each from
    # its own window. Row 0 (7 prompt tokens, starts at 0) slides at L = 17, 22, 27, 32 to
    # start L - 12; row 1 (1 token, left-padded by 6) slides at L = 23, 28, 33. The refill
    # covers the widest window: L - (smallest start) = 12, 16, 13, 16, 13, 16, 13.
    rows = [[5, 6, 7, 8, 9, 10, 11], [40]]
    expected = ([7] + [1] * 9 + [12] + [1] * 4 + [16, 13] + [1] * 3 + [16, 13] + [1] * 3
                + [16, 13] + [1] * 3)                                 # L = 7 .. 36: 30 tokens
    assert forward_lengths(model, lambda: greedy(model, rows, 30)) == expected, \
        "per-row slides, one batch refill each"
    # A finished row keeps only its last token at a refill, so it causes no refills of its own
    # and does not widen any: once row 1 stops (at its 3rd token, 96, which row 0 never
    # writes), the batch makes the forward passes of row 0 alone.
    out = []
    lengths = forward_lengths(model, lambda: out.extend(
        generate_ids(model, rows, max_new_tokens=30, temperature=0, stop=[96])))
    assert [len(g.ids) for g in out] == [30, 3] and out[1].finish_reason == "stop", \
        f"row 1 stops at its third token: {[g.ids for g in out]}"
    assert lengths == forward_lengths(model, lambda: greedy(model, rows[:1], 30)), \
        "a finished row must not cost refills"


def test_a_huge_max_new_tokens_allocates_nothing_by_it(model):
    """The token buffer and the cache follow n_context, not max_new_tokens: 10**12 new tokens
    that stop at the first one cost what one does (before: an 8 TB torch.zeros)."""
    first = greedy(model, [[1, 2, 3]], 1)[0][0]
    out = generate_ids(model, [[1, 2, 3]], max_new_tokens=10**12, temperature=0, stop=[first])
    assert out[0].ids == [first] and out[0].finish_reason == "stop", out
    text = generate(model, TOK, "abc", max_new_tokens=10**12, temperature=0,
                    stop=greedy(model, [list(b"abc")], 1)[0])
    assert text == "", f"stopped at the first token: {text!r}"


@pytest.mark.parametrize("use_cache", [True, False])
def test_the_token_buffer_moves_its_windows_back_and_changes_no_token(monkeypatch, use_cache):
    """Past 2 * n_context new tokens the buffer is full and its windows move back to its start
    (_make_room); the tokens and log-probs equal those of a buffer that never fills."""
    import basegpt.generate as gen
    model = tiny_model(n_context=16, positional="rope")
    rows = [[5, 6, 7, 8, 9, 10, 11], [40], [100, 101, 102]]
    kw = dict(max_new_tokens=150, temperature=0, return_logprobs=True, use_cache=use_cache)
    moves, make_room = [], gen._Decoder._make_room

    def counted(self):
        length = self.length
        make_room(self)
        if self.length < length:
            moves.append(self.seq.shape[1])
    monkeypatch.setattr(gen._Decoder, "_make_room", counted)
    compacted = generate_ids(model, rows, **kw)
    assert len(moves) >= 3 and set(moves) == {7 + 2 * 16}, \
        f"the buffer holds the prompt + 2 * n_context and is compacted when full: {moves}"
    monkeypatch.setattr(gen, "ROOM_IN_CONTEXTS", 10**6)       # room for every token: no move
    moves.clear()
    whole = generate_ids(model, rows, **kw)
    assert moves == [], "the reference run never moves its windows"
    for b, (c, w) in enumerate(zip(compacted, whole)):
        assert c.ids == w.ids and c.logprobs == w.logprobs, f"row {b} differs"


def test_strict_context_refuses_to_slide():
    model = tiny_model(n_context=16)
    with pytest.raises(ValueError, match=r"prompt of 10 tokens \+ max_new_tokens=7 is 17 positions "
                                         r"but n_context is 16; keep prompt \+ new tokens <= 16"):
        generate_ids(model, [list(range(10))], max_new_tokens=7, strict_context=True)
    assert len(greedy(model, [list(range(10))], 6, strict_context=True)[0]) == 6, "16 fits"


# -- batches ------------------------------------------------------------------------------------

@pytest.mark.parametrize("positional", ["sinusoidal", "learned", "rope"])
def test_batched_prompts_of_different_lengths_equal_one_by_one(positional):
    model = tiny_model(positional=positional, n_kv_head=2)
    rows = [[5, 6, 7, 8, 9, 10, 11], [40], [100, 101, 102], [7, 7]]
    alone = [greedy(model, [r], 40)[0] for r in rows]
    together = greedy(model, rows, 40)
    assert together == alone, "a left-padded batch must give each row its own greedy tokens"
    assert together == greedy(model, rows, 40, use_cache=False), "uncached batch agrees too"


@pytest.mark.parametrize("positional", ["learned", "rope"])
def test_batched_equals_one_by_one_past_n_context(positional):
    """Each row's window slides at its own length, so a batch still gives every row its own
    greedy tokens when the rows (of different lengths) run far past n_context."""
    model = tiny_model(n_context=16, positional=positional)
    rows = [[5, 6, 7, 8, 9, 10, 11], [40], [100, 101, 102]]
    kw = dict(max_new_tokens=60, temperature=0, return_logprobs=True)
    alone = [generate_ids(model, [r], **kw)[0] for r in rows]
    for use_cache in (True, False):
        together = generate_ids(model, rows, use_cache=use_cache, **kw)
        for b, (a, t) in enumerate(zip(alone, together)):
            assert t.ids == a.ids, f"{positional}, use_cache={use_cache}: row {b} differs"
            # The log-probs show the context too (greedy tokens often survive a shorter window;
            # with rope a window cut a few tokens short moves them by ~1e-4, round-off by ~1e-6):
            # each token is predicted from the same window as when the row runs alone.
            torch.testing.assert_close(torch.tensor(t.logprobs), torch.tensor(a.logprobs),
                                       rtol=0, atol=1e-5)
    alone = [g.ids for g in alone]
    stop_id = alone[0][3]                                        # row 0 finishes after 4 tokens
    out = generate_ids(model, rows, max_new_tokens=60, temperature=0, stop=[stop_id])
    for b, row in enumerate(alone):
        cut = row.index(stop_id) + 1 if stop_id in row else 60
        assert out[b].ids == row[:cut], f"row {b}: a finished row does not disturb the others"


def test_batched_rows_stop_independently(model):
    rows = [[5, 6, 7], [40]]
    alone = [greedy(model, [r], 30)[0] for r in rows]
    stop_id = alone[0][4]                                         # row 0's fifth token
    out = generate_ids(model, rows, max_new_tokens=30, temperature=0, stop=[stop_id])
    first = alone[0].index(stop_id)
    assert out[0].ids == alone[0][:first + 1] and out[0].finish_reason == "stop", "row 0 stops"
    cut = alone[1].index(stop_id) + 1 if stop_id in alone[1] else 30
    assert out[1].ids == alone[1][:cut], "row 1 is unaffected by row 0 stopping"


# -- stops --------------------------------------------------------------------------------------

def test_stop_strings_spanning_tokens_are_cut_exactly(model):
    full = generate(model, TOK, "abc", max_new_tokens=40, temperature=0, stop_at_eot=False)
    assert len(full) >= 20, "need enough text to place a stop string inside"
    stop = full[7:11]                                             # 4 characters = 4+ tokens here
    first = full.find(stop)
    got = generate(model, TOK, "abc", max_new_tokens=40, temperature=0, stop=stop,
                   return_logprobs=True, stop_at_eot=False)
    assert got.text == full[:first], f"cut at {first}: {got.text!r} vs {full[:first]!r}"
    assert got.finish_reason == "stop", f"finish_reason {got.finish_reason}"
    assert TOK.decode(got.ids).startswith(full[:first] + stop), "ids run up to the stop's last token"
    assert TOK.decode(got.ids[:-1]).find(stop) < 0, "generation ended at the token completing it"


def test_the_earliest_of_several_stop_strings_wins():
    tracker = _TextTracker(TOK, ["world", "lo w"])
    for b in "hello world".encode():
        if tracker.push(b):
            break
    assert tracker.final_text == "hel", f"'lo w' starts first: {tracker.final_text!r}"


def test_eot_and_stop_ids_end_the_row_and_are_not_in_the_text():
    model = tiny_model()
    ids = greedy(model, [[65]], 20)[0]
    k = next(i for i in range(1, 20) if ids[i] not in ids[:i])     # first new token after the 1st
    out = generate_ids(model, [[65]], max_new_tokens=20, temperature=0, stop=[ids[k]])
    assert out[0].ids == ids[:k + 1] and out[0].finish_reason == "stop", "a stop id ends the row"
    text = generate(model, TOK, "A", max_new_tokens=20, temperature=0, stop=ids[k],
                    return_logprobs=True)
    assert text.ids == ids[:k + 1], "generate stops on the same id"
    assert text.text == TOK.decode(ids[:k]), "the stop token is not part of the text"
    # Pretend ids[k] is the end-of-text token: same stop, reported as "eot".
    out = generate_ids(model, [[65]], max_new_tokens=20, temperature=0, eot_id=ids[k])
    assert out[0].ids == ids[:k + 1] and out[0].finish_reason == "eot", "eot ends the row"


# -- streaming ----------------------------------------------------------------------------------

def emoji_model() -> B2lM:
    """A model that greedily writes 'é😀' over and over: the LM head maps the embedding of each
    byte to the next byte of the cycle. (No positions, and one block whose sublayers are zeroed,
    so its output is the normalised embedding of the current token alone.)"""
    cycle = list("é😀".encode())                                   # 2 + 4 bytes
    model = tiny_model(positional="none", n_embed=64, n_block=1)
    with torch.no_grad():
        for block in model.blocks:
            for p in block.parameters():
                p.zero_()
            block.attn_norm.weight.fill_(1.0)
            block.ff_norm.weight.fill_(1.0)
        emb = torch.randn(V, 64)
        model.tok_emb.weight.copy_(emb)
        head = torch.zeros(V, 64)
        for i, b in enumerate(cycle):                              # after byte b comes the next one
            nxt = cycle[(i + 1) % len(cycle)]
            e = torch.nn.functional.layer_norm(emb[b], (64,))
            head[nxt] += 10 * e
        model.lm_head.weight.copy_(head)
    return model


def test_streaming_never_splits_a_character_and_equals_the_full_text():
    model = emoji_model()
    full = generate(model, TOK, "x😀", max_new_tokens=30, temperature=0)
    assert full.startswith("é😀é😀"), f"the emoji model writes {full!r}"
    pieces = list(stream(model, TOK, "x😀", max_new_tokens=30, temperature=0))
    assert "".join(pieces) == full, "stream concatenation == generate"
    assert all("\ufffd" not in p for p in pieces[:-1]), "no replacement characters mid-stream"
    assert len(pieces) >= 8, f"pieces come out as characters complete: {pieces}"
    # 30 bytes = 5 cycles of 6 bytes: every piece is whole characters
    assert full == "é😀" * 5, f"full text {full!r}"


@pytest.mark.parametrize("stop", ["😀é", "é😀é😀é", ["é😀X", "😀é😀"], "Z"])
def test_streaming_with_stop_strings_equals_generate(stop):
    model = emoji_model()
    kw = dict(max_new_tokens=40, temperature=0, stop=stop)
    pieces = list(stream(model, TOK, "x😀", **kw))
    full = generate(model, TOK, "x😀", **kw)
    assert "".join(pieces) == full, f"stop {stop!r}: {pieces} vs {full!r}"
    uncut = "é😀" * 7 if stop != "Z" else None
    if uncut:
        first = min(uncut.find(s) for s in ([stop] if isinstance(stop, str) else stop)
                    if uncut.find(s) >= 0)
        assert full == uncut[:first], f"stop {stop!r}: {full!r}"


def test_streaming_random_sampling_equals_generate_with_the_same_seed(model):
    kw = dict(max_new_tokens=80, temperature=1.3, seed=11, stop=["ab", "\n\n"])
    assert "".join(stream(model, TOK, "héllo", **kw)) == generate(model, TOK, "héllo", **kw)


def test_stream_takes_token_ids_and_ends_with_the_whole_generation(model):
    kw = dict(max_new_tokens=40, temperature=1.1, seed=4, stop=["a"])
    whole = generate(model, TOK, "héllo", return_logprobs=True, **kw)
    pieces = stream(model, TOK, TOK.encode("héllo"), **kw)           # the prompt as its ids
    assert pieces.result is None, "no result before the pieces are all taken"
    assert "".join(pieces) == whole.text
    assert (pieces.result.ids, pieces.result.text, pieces.result.finish_reason) == \
        (whole.ids, whole.text, whole.finish_reason)
    with pytest.raises(TypeError, match="stream takes one prompt: a str or a list of token ids"):
        stream(model, TOK, [["a"]])
    with pytest.raises(ValueError, match="token id 300 out of range; valid ids are 0..257"):
        stream(model, TOK, [1, 300])


def test_tracker_text_equals_one_shot_decode_of_random_bytes():
    g = torch.Generator().manual_seed(0)
    for _ in range(50):
        ids = torch.randint(0, 256, (30,), generator=g).tolist()
        tracker = _TextTracker(TOK, [])
        pieces = []
        for t in ids:
            tracker.push(t)
            pieces.append(tracker.take())
        tracker.finish()
        pieces.append(tracker.take(done=True))
        assert "".join(pieces) == TOK.decode(ids), f"incremental decode differs for {ids}"


# -- seeds --------------------------------------------------------------------------------------

def test_same_seed_same_text_different_seed_different_text(model):
    kw = dict(max_new_tokens=50, temperature=1.0, top_k=50)
    a = generate(model, TOK, "Once", seed=1, **kw)
    assert a == generate(model, TOK, "Once", seed=1, **kw), "same seed, same text"
    assert a != generate(model, TOK, "Once", seed=2, **kw), "a different seed gives other text"
    torch.manual_seed(0)
    before = torch.get_rng_state()
    generate(model, TOK, "Once", seed=3, **kw)
    assert torch.equal(before, torch.get_rng_state()), "generate must not touch the global RNG"


def test_sampled_cached_and_uncached_agree_with_a_seed(model):
    kw = dict(max_new_tokens=60, temperature=0.9, top_p=0.9, seed=5, repetition_penalty=1.3)
    assert generate_ids(model, [[1, 2, 3]], **kw)[0].ids == \
        generate_ids(model, [[1, 2, 3]], use_cache=False, **kw)[0].ids, "same draws either path"


def test_top_k_1_and_tiny_top_p_decode_exactly_as_greedy_whatever_the_seed(model):
    """Through the whole loop (prefill, cached steps, a batch of two lengths): sampling from a
    filter that keeps one token gives the greedy tokens, and the seed makes no difference."""
    rows = [[72, 101, 108, 108, 111], [1, 2, 3]]
    expected = greedy(model, rows, 30)
    assert all(len(set(ids)) > 3 for ids in expected), f"a degenerate run proves little: {expected}"
    for kw in (dict(top_k=1, seed=1), dict(top_k=1, seed=2), dict(top_k=1, seed=None),
               dict(top_p=1e-9, seed=3), dict(top_p=1e-9, seed=4), dict(top_p=1e-9, seed=None)):
        got = [g.ids for g in generate_ids(model, rows, max_new_tokens=30, temperature=1.0, **kw)]
        assert got == expected, f"{kw}: {got} vs greedy {expected}"
    unfiltered = [g.ids for g in generate_ids(model, rows, max_new_tokens=30, temperature=1.0,
                                              seed=1)]
    assert unfiltered != expected, "without a filter the same seed samples other tokens"


# -- results and logprobs ----------------------------------------------------------------------

def test_logprobs_are_the_model_log_softmax_of_each_generated_token(model):
    out = generate_ids(model, [[10, 20, 30]], max_new_tokens=6, temperature=0.8, seed=0,
                       return_logprobs=True)[0]
    seq = torch.tensor([[10, 20, 30] + out.ids])
    with torch.no_grad():
        logp = torch.log_softmax(model(seq)[0], -1)                # (T, V)
    expected = [logp[2 + i, t].item() for i, t in enumerate(out.ids)]
    assert out.logprobs == pytest.approx(expected, abs=1e-4), "logprobs of the generated tokens"
    assert isinstance(out, Generation) and out.finish_reason == "length", "a Generation"


def test_generate_returns_text_and_lists_for_lists(model):
    text = generate(model, TOK, "hi", max_new_tokens=5, temperature=0, stop_at_eot=False)
    assert isinstance(text, str), "one prompt -> str"
    many = generate(model, TOK, ["hi", "a longer prompt"], max_new_tokens=5, temperature=0,
                    stop_at_eot=False)
    assert many[0] == text, "batched text == single text"
    assert generate(model, TOK, "hi", max_new_tokens=0) == "", "zero new tokens -> ''"


def test_empty_prompt_starts_from_end_of_text(model):
    a = generate(model, TOK, "", max_new_tokens=8, temperature=0, return_logprobs=True)
    b = generate_ids(model, [[TOK.eot_id]], max_new_tokens=8, temperature=0, eot_id=TOK.eot_id)[0]
    assert a.ids == b.ids, "'' is the end-of-text token as the prompt"


def test_empty_prompt_without_an_end_of_text_token_is_a_value_error():
    """An empty prompt starts from the end-of-text token; without one it cannot start, and the
    error says what is missing and how to get it."""
    tok = Tokenizer(vocab_size=300, special_tokens=())            # untrained: 256 bytes only
    model = tiny_model(vocab_size=len(tok))                        # so the vocab sizes agree
    assert len(generate(model, tok, "a", max_new_tokens=3, temperature=0)) > 0, \
        "model and tokenizer fit: a non-empty prompt generates"
    message = (r"the prompt is empty, and an empty prompt starts from the <\|endoftext\|> "
               r"token, which this tokenizer does not have; give a prompt of at least one")
    for call in (lambda: generate(model, tok, "", max_new_tokens=3),
                 lambda: generate(model, tok, ["a", ""], max_new_tokens=3),
                 lambda: stream(model, tok, "", max_new_tokens=3)):
        with pytest.raises(ValueError, match=message):
            call()


def test_training_mode_is_restored_and_dropout_off_while_generating():
    model = tiny_model(embed_dropout=0.5, resid_dropout=0.5).train()
    a = greedy(model, [[1, 2]], 20)
    b = greedy(model, [[1, 2]], 20, use_cache=False)
    assert a == b, "dropout would make the two paths differ: generation runs in eval mode"
    assert model.training, "the model's training mode is restored"


# -- validation ---------------------------------------------------------------------------------

@pytest.mark.parametrize("call, message", [
    (lambda m: generate_ids(m, [[]]), r"prompt row 0 is empty.*tokenizer.eot_id"),
    (lambda m: generate_ids(m, [[1, 258]]), r"token id 258 out of range; valid ids are 0..257"),
    (lambda m: generate_ids(m, [[1, -1]]), r"token id -1 out of range"),
    (lambda m: generate_ids(m, torch.tensor([1, 2])), r"must be \(batch, time\)"),
    (lambda m: generate_ids(m, [1, 2]), r"must be a list of lists of token ids; for one prompt "
                                        r"pass \[ids\]"),
    (lambda m: generate_ids(m, [torch.tensor(1)]), r"must be a list of lists of token ids"),
    (lambda m: generate_ids(m, [[1]], max_new_tokens=-1), r"max_new_tokens=-1: must be an integer >= 0"),
    (lambda m: generate_ids(m, [[1]], temperature=-1), r"temperature=-1"),
    (lambda m: generate_ids(m, [[1]], top_p=0), r"top_p=0: must be in \(0, 1\]"),
    (lambda m: generate_ids(m, [[1]], top_k=-2), r"top_k=-2"),
    (lambda m: generate_ids(m, [[1]], min_p=1), r"min_p=1"),
    (lambda m: generate_ids(m, [[1]], repetition_penalty=0), r"repetition_penalty=0"),
    (lambda m: generate_ids(m, [[1]], stop=[999]), r"stop token id 999 is out of range"),
    (lambda m: generate_ids(m, [[1]], stop=["x"]), r"stop strings \['x'\] need a tokenizer"),
    (lambda m: generate(m, TOK, "a", stop=""), r"empty stop string"),
    (lambda m: generate(m, TOK, []), r"no prompts given"),
    (lambda m: generate(m, Tokenizer(vocab_size=300, special_tokens=()), "a"),
     r"tokenizer has 256 tokens but the model's vocab_size is 258"),
    (lambda m: generate_ids(m, [[1] * 300], strict_context=True),
     r"prompt of 300 tokens \+ max_new_tokens=256 is 556 positions but n_context is 256"),
])
def test_invalid_arguments_are_value_errors_that_say_the_valid_range(model, call, message):
    with pytest.raises(ValueError, match=message):
        call(model)


def test_wrong_types_are_type_errors(model):
    with pytest.raises(TypeError, match="stop must hold token ids"):
        generate(model, TOK, "a", stop=[1.5])
    with pytest.raises(TypeError, match="for token ids use generate_ids"):
        generate(model, TOK, [[1, 2]])
    with pytest.raises(TypeError, match="model must be a basegpt B2lM"):
        generate_ids(torch.nn.Linear(2, 2), [[1]])
    with pytest.raises(TypeError, match=r"seed must be an int or None, got str 'x'"):
        generate_ids(model, [[1]], seed="x")
    with pytest.raises(TypeError, match=r"seed must be an int or None, got float 1.5"):
        generate(model, TOK, "a", seed=1.5, temperature=0)        # checked even when greedy


def test_score_ids_asks_for_one_1d_sequence(model):
    with pytest.raises(ValueError, match=r"one 1-D sequence of ids, got a tensor of shape \(1, 3\)"):
        score_ids(model, torch.tensor([[1, 2, 3]]))
    with pytest.raises(ValueError, match=r"one 1-D sequence of ids, got a nested one"):
        score_ids(model, [[1, 2, 3]])
    assert score_ids(model, torch.tensor([1, 2, 3])) == score_ids(model, [1, 2, 3]), \
        "a 1-D tensor and a list score the same"


# -- score ------------------------------------------------------------------------------------

def test_score_perplexity_is_exp_mean_nll_by_hand(model):
    text = "To be, or not to be"
    result = score(model, TOK, text)
    ids = [TOK.eot_id] + TOK.encode(text)
    with torch.no_grad():
        logits = model(torch.tensor([ids]))[0]                     # (T, V)
    logp = torch.log_softmax(logits, -1)
    by_hand = [logp[t - 1, ids[t]].item() for t in range(1, len(ids))]
    assert result.ids == ids[1:], "score reports the text's own ids"
    assert result.logprobs == pytest.approx(by_hand, abs=1e-5), "per-token log-probs"
    nll = -sum(by_hand) / len(by_hand)
    assert result.perplexity == pytest.approx(math.exp(nll), rel=1e-5), "exp(mean NLL)"
    assert 100 < result.perplexity < 1000, "an untrained model is near uniform (V=258)"


def test_score_with_top_lists_the_most_likely_tokens_of_the_same_distribution(model):
    ids = TOK.encode("To be, or not")
    logprobs, top = score_ids_with_top(model, ids, 4)
    assert logprobs == score_ids(model, ids)
    with torch.no_grad():
        logp = torch.log_softmax(model(torch.tensor([ids[:-1]]))[0], -1)   # (T, V)
    for t, alternatives in enumerate(top):
        best = torch.topk(logp[t], 4)
        assert [i for i, _ in alternatives] == best.indices.tolist(), f"position {t}"
        assert [v for _, v in alternatives] == pytest.approx(best.values.tolist(), abs=1e-5)
    assert score_ids_with_top(model, ids, 0)[1] == [[]] * (len(ids) - 1)
    with pytest.raises(ValueError, match=r"k=-1: must be an integer >= 0"):
        score_ids_with_top(model, ids, -1)


def test_score_of_a_text_longer_than_the_context_uses_windows():
    model = tiny_model(n_context=16, positional="learned")
    ids = list(range(40, 90))                                       # 50 ids, n_context 16
    got = score_ids(model, ids)
    assert len(got) == 49, "every id after the first gets a log-prob"
    with torch.no_grad():                                           # targets 1..16: one window
        logp = torch.log_softmax(model(torch.tensor([ids[:16]]))[0], -1)
    assert got[:15] == pytest.approx([logp[t - 1, ids[t]].item() for t in range(1, 16)], abs=1e-5)
    with torch.no_grad():                                           # target 49: inputs ids[33:49]
        last = torch.log_softmax(model(torch.tensor([ids[33:49]]))[0, -1], -1)[ids[49]].item()
    assert got[-1] == pytest.approx(last, abs=1e-5), "the last window has the last 16 inputs"
