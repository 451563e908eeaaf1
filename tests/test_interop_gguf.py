"""GGUF export: the file holds every tensor, key and token that llama.cpp reads, in its names,
layouts and types, and a forward pass written from llama.cpp's graphs over the file alone gives
basegpt's logits.

llama.cpp itself is not needed: the file is read back with the gguf package's GGUFReader (the
reader of llama.cpp's own project), key names come from its constants, and the reference
forward below follows llama.cpp's gpt2 and llama graphs (adjacent-pair RoPE, GQA by kv head
h // (H/G)). benchmarks/bench_llamacpp.py runs the file in llama.cpp itself.
"""

from __future__ import annotations

import errno
import sys

import numpy as np
import pytest
import torch
import torch.nn.functional as F

gguf = pytest.importorskip("gguf", reason="gguf is a test extra (pip install -e '.[test]')")

from basegpt import B2lM, Tokenizer  # noqa: E402
from basegpt.checkpoint import save_run  # noqa: E402
from basegpt.cli import main  # noqa: E402
from basegpt.corpus import builtin_corpus  # noqa: E402
from basegpt.interop.gguf import export_gguf, interleave_rope_rows  # noqa: E402
from basegpt.interop.renumbered import RenumberedTokenizer  # noqa: E402
from basegpt.interop.tokenizers import byte_to_unicode  # noqa: E402

TEXT = ("Hello, world! Ça va? Grüße. 你好 😀 it's they'LL\n\n  x = 12345678; y = 3.14\r\n")
K, A, R, T_ = gguf.Keys.LLM, gguf.Keys.Attention, gguf.Keys.Rope, gguf.Keys.Tokenizer
V = gguf.GGUFValueType

GPT2 = dict(norm_position="pre", norm="layernorm", positional="learned", activation="gelu",
            bias=True, n_embed=32, n_head=4, n_k=8, n_v=8)
LLAMA = dict(norm_position="pre", norm="rmsnorm", positional="rope", activation="swiglu",
             bias=False, n_embed=32)
SHAPES = {
    "gpt2-untied": GPT2 | dict(tie_weights=False, norm_eps=1e-6),
    "gpt2-tied": GPT2 | dict(tie_weights=True, n_ff=48),
    "llama-mha-untied": LLAMA | dict(n_head=4, n_k=8, n_v=8, tie_weights=False),
    "llama-gqa-tied": LLAMA | dict(n_head=4, n_kv_head=2, n_k=8, n_v=8, tie_weights=True,
                                   rope_base=500.0, norm_eps=1e-6),
    # multi-query, and heads narrower than n_embed / n_head: the file must say key_length
    "llama-mqa-narrow": LLAMA | dict(n_head=2, n_kv_head=1, n_k=6, n_v=6, tie_weights=False),
}


@pytest.fixture(scope="module")
def tok() -> Tokenizer:
    return Tokenizer(vocab_size=320).train(list(builtin_corpus(30_000)) + [TEXT * 5],
                                           progress=False)


def _model(shape: str, vocab_size: int, seed: int = 0) -> B2lM:
    """A tiny model whose every weight is random (norms too, so that swapping two norms, or
    a norm's weight and bias, changes the logits)."""
    torch.manual_seed(seed)
    model = B2lM(vocab_size=vocab_size, n_block=2, n_context=16,
                 **{"n_ff": 64} | SHAPES[shape]).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0.0, 0.3)
    return model


def _value(field):
    """A metadata value as Python: (value, GGUF type, array item type or None)."""
    kind = field.types[0]
    if kind == V.STRING:
        return bytes(field.parts[field.data[0]]).decode("utf-8"), kind, None
    if kind == V.ARRAY:
        item = field.types[1]
        if item == V.STRING:
            return [bytes(field.parts[i]).decode("utf-8") for i in field.data], kind, item
        return [field.parts[i][0].item() for i in field.data], kind, item
    return field.parts[field.data[0]][0].item(), kind, None


def read(path):
    """(metadata {key: (value, type, item type)}, tensors {name: ReaderTensor})."""
    reader = gguf.GGUFReader(path)
    meta = {key: _value(f) for key, f in reader.fields.items() if not key.startswith("GGUF.")}
    return meta, {t.name: t for t in reader.tensors}


def array(t) -> torch.Tensor:
    return torch.from_numpy(np.array(t.data, dtype=np.float32))


# ------------------------------------------------------------------------ a reader's forward

def rope_adjacent(x: torch.Tensor, base: float, n_rot: int) -> torch.Tensor:
    """llama.cpp's RoPE of the llama architecture: pairs (x[2i], x[2i+1]) of x (T, heads, D)
    turned by p * base ** (-2i / n_rot) at position p."""
    T = x.shape[0]
    inv = base ** (-torch.arange(0, n_rot, 2, dtype=torch.float64) / n_rot)
    angle = (torch.arange(T, dtype=torch.float64)[:, None] * inv)[:, None, :]   # (T, 1, D/2)
    cos, sin = angle.cos().float(), angle.sin().float()
    a, b = x[..., 0::2], x[..., 1::2]
    return torch.stack([a * cos - b * sin, a * sin + b * cos], dim=-1).flatten(-2)


def file_forward(path, ids: list[int]) -> torch.Tensor:
    """Logits (T, V) computed from the file alone, as llama.cpp's gpt2 / llama graphs do."""
    meta, tensors = read(path)
    arch = meta["general.architecture"][0]
    hp = {key.removeprefix(arch + "."): value for key, (value, _, _) in meta.items()}
    w = {name: array(t) for name, t in tensors.items()}
    L, H, C = hp["block_count"], hp["attention.head_count"], hp["embedding_length"]
    G = hp.get("attention.head_count_kv", H)
    D = hp.get("attention.key_length", C // H)
    T = len(ids)
    x = w["token_embd.weight"][ids]                                            # (T, C)

    def attend(q, k, v):                                       # (T, H, D), (T, G, D) x2
        k, v = (t.repeat_interleave(H // G, dim=1) for t in (k, v))   # query h: kv h // (H/G)
        out = F.scaled_dot_product_attention(*(t.transpose(0, 1) for t in (q, k, v)),
                                             is_causal=True)
        return out.transpose(0, 1).reshape(T, H * D)

    if arch == "gpt2":
        eps = hp["attention.layer_norm_epsilon"]

        def norm(x, name):
            return F.layer_norm(x, (C,), w[name + ".weight"], w[name + ".bias"], eps)

        x = x + w["position_embd.weight"][:T]
        for i in range(L):
            b = f"blk.{i}."
            q, k, v = F.linear(norm(x, b + "attn_norm"), w[b + "attn_qkv.weight"],
                               w[b + "attn_qkv.bias"]).split(C, dim=-1)
            o = attend(q.view(T, H, D), k.view(T, H, D), v.view(T, H, D))
            x = x + F.linear(o, w[b + "attn_output.weight"], w[b + "attn_output.bias"])
            h = F.gelu(F.linear(norm(x, b + "ffn_norm"), w[b + "ffn_up.weight"],
                                w[b + "ffn_up.bias"]), approximate="tanh")
            x = x + F.linear(h, w[b + "ffn_down.weight"], w[b + "ffn_down.bias"])
        x = norm(x, "output_norm")
    else:
        eps, base, n_rot = (hp["attention.layer_norm_rms_epsilon"], hp["rope.freq_base"],
                            hp["rope.dimension_count"])

        def norm(x, name):
            return x * torch.rsqrt((x * x).mean(-1, keepdim=True) + eps) * w[name + ".weight"]

        for i in range(L):
            b = f"blk.{i}."
            h = norm(x, b + "attn_norm")
            q = rope_adjacent(F.linear(h, w[b + "attn_q.weight"]).view(T, H, D), base, n_rot)
            k = rope_adjacent(F.linear(h, w[b + "attn_k.weight"]).view(T, G, D), base, n_rot)
            v = F.linear(h, w[b + "attn_v.weight"]).view(T, G, D)
            x = x + F.linear(attend(q, k, v), w[b + "attn_output.weight"])
            h = norm(x, b + "ffn_norm")
            h = F.silu(F.linear(h, w[b + "ffn_gate.weight"])) * F.linear(h, w[b + "ffn_up.weight"])
            x = x + F.linear(h, w[b + "ffn_down.weight"])
        x = norm(x, "output_norm")
    head = w.get("output.weight", w["token_embd.weight"])     # absent: llama.cpp reuses it
    return x @ head.T


@pytest.mark.parametrize("shape", sorted(SHAPES))
def test_a_forward_over_the_file_alone_gives_our_logits(shape, tok, tmp_path):
    model = _model(shape, len(tok))
    path = export_gguf((model, tok), tmp_path / "m.gguf")
    ids = tok.encode(TEXT)[:16]
    with torch.no_grad():
        ours = model(torch.tensor([ids]))[0]
    torch.testing.assert_close(file_forward(path, ids), ours, atol=1e-4, rtol=1e-4)


def test_the_permutation_turns_llama_cpps_rope_into_ours():
    """Rows permuted as exported, rotated in adjacent pairs, equal our rotate-half rotation
    permuted the same way, so every attention score q . k is unchanged."""
    from basegpt.config import ModelConfig
    from basegpt.model.positional import Rotary
    torch.manual_seed(0)
    H, D, C, T = 2, 8, 16, 5
    rotary = Rotary(ModelConfig(positional="rope", n_context=T, n_head=H, n_k=D, n_v=D,
                                rope_base=100.0))
    wq, wk, x = torch.randn(H * D, C), torch.randn(H * D, C), torch.randn(T, C)
    q, k = (F.linear(x, w).view(T, H, D).transpose(0, 1)[None] for w in (wq, wk))
    q, k = rotary.rotate(q, k, torch.arange(T))                      # ours, (1, H, T, D)
    q, k = q[0].transpose(0, 1), k[0].transpose(0, 1)                # (T, H, D)
    q2, k2 = (rope_adjacent(F.linear(x, interleave_rope_rows(w, H)).view(T, H, D), 100.0, D)
              for w in (wq, wk))
    order = [j for i in range(D // 2) for j in (i, i + D // 2)]     # new column 2i+h = old i+h*D/2
    torch.testing.assert_close(q2, q[..., order])
    torch.testing.assert_close(k2, k[..., order])
    torch.testing.assert_close(torch.einsum("thd,shd->hts", q2, k2),
                               torch.einsum("thd,shd->hts", q, k))


# ------------------------------------------------------------------------ tensors

def expected_tensors(model: B2lM) -> dict[str, torch.Tensor]:
    """Every tensor of the file, from the model, written out name by name."""
    c, out = model.config, {"token_embd.weight": model.tok_emb.weight}
    H, G, D = c.n_head, c.n_kv_head or c.n_head, c.n_k
    if c.positional == "learned":
        out["position_embd.weight"] = model.positional.weight
    for i, blk in enumerate(model.blocks):
        b = f"blk.{i}."
        out |= {b + "attn_norm.weight": blk.attn_norm.weight, b + "ffn_norm.weight": blk.ff_norm.weight,
                b + "attn_output.weight": blk.attn.out_proj.weight,
                b + "ffn_up.weight": blk.ff.up.weight, b + "ffn_down.weight": blk.ff.down.weight}
        if c.bias:                      # gpt2: q | k | v in one matrix, biases everywhere
            out |= {b + "attn_qkv.weight": blk.attn.qkv_proj.weight,
                    b + "attn_qkv.bias": blk.attn.qkv_proj.bias,
                    b + "attn_norm.bias": blk.attn_norm.bias, b + "ffn_norm.bias": blk.ff_norm.bias,
                    b + "attn_output.bias": blk.attn.out_proj.bias,
                    b + "ffn_up.bias": blk.ff.up.bias, b + "ffn_down.bias": blk.ff.down.bias}
            continue
        W = blk.attn.qkv_proj.weight
        # row 2i (+1) of each head is our row i (+ D/2): llama.cpp's adjacent RoPE pairs
        perm = lambda n: [h * D + j for h in range(n) for i in range(D // 2)   # noqa: E731
                          for j in (i, i + D // 2)]
        out |= {b + "attn_q.weight": W[:H * D][perm(H)],
                b + "attn_k.weight": W[H * D:(H + G) * D][perm(G)],
                b + "attn_v.weight": W[(H + G) * D:], b + "ffn_gate.weight": blk.ff.gate.weight}
    out["output_norm.weight"] = model.final_norm.weight
    if c.bias:
        out["output_norm.bias"] = model.final_norm.bias
    if not c.tie_weights:
        out["output.weight"] = model.lm_head.weight
    return {name: t.detach() for name, t in out.items()}


@pytest.mark.parametrize("dtype", ["f32", "f16"])
@pytest.mark.parametrize("shape", sorted(SHAPES))
def test_every_tensor_has_llama_cpps_name_layout_and_dtype(shape, dtype, tok, tmp_path):
    model = _model(shape, len(tok))
    _, tensors = read(export_gguf((model, tok), tmp_path / "m.gguf", dtype=dtype))
    expected = expected_tensors(model)
    assert sorted(tensors) == sorted(expected), "exactly llama.cpp's tensors, no more"
    for name, want in expected.items():
        t = tensors[name]
        assert list(t.shape) == list(want.shape[::-1]), f"{name}: ne is the shape reversed"
        half = dtype == "f16" and want.dim() == 2 and name != "position_embd.weight"
        assert t.tensor_type.name == ("F16" if half else "F32"), \
            f"{name}: {t.tensor_type.name}; matrices f16 in an f16 file, the rest f32"
        got = torch.from_numpy(np.array(t.data)).reshape(want.shape)
        # f16: exactly our value rounded to the nearest float16
        assert torch.equal(got, want.half() if half else want), f"{name} differs"


# ------------------------------------------------------------------------ metadata

def expected_keys(model: B2lM, tok: Tokenizer, arch: str, dtype: str) -> dict:
    """Every key of the file with its value and GGUF type, under gguf's own key names."""
    c, u32, f32 = model.config, V.UINT32, V.FLOAT32
    H = c.n_head
    keys = {gguf.Keys.General.ARCHITECTURE: (arch, V.STRING),
            gguf.Keys.General.NAME: ("basegpt", V.STRING),
            K.CONTEXT_LENGTH.format(arch=arch): (c.n_context, u32),
            K.EMBEDDING_LENGTH.format(arch=arch): (c.n_embed, u32),
            K.BLOCK_COUNT.format(arch=arch): (c.n_block, u32),
            K.FEED_FORWARD_LENGTH.format(arch=arch): (c.n_ff, u32),
            A.HEAD_COUNT.format(arch=arch): (H, u32),
            gguf.Keys.General.FILE_TYPE: ({"f32": 0, "f16": 1}[dtype], u32),
            gguf.Keys.General.QUANTIZATION_VERSION: (2, u32)}
    if arch == "gpt2":
        keys[A.LAYERNORM_EPS.format(arch=arch)] = (np.float32(c.norm_eps).item(), f32)
    else:
        keys |= {K.VOCAB_SIZE.format(arch=arch): (len(tok), u32),
                 A.HEAD_COUNT_KV.format(arch=arch): (c.n_kv_head or H, u32),
                 A.LAYERNORM_RMS_EPS.format(arch=arch): (np.float32(c.norm_eps).item(), f32),
                 R.DIMENSION_COUNT.format(arch=arch): (c.n_k, u32),
                 R.FREQ_BASE.format(arch=arch): (c.rope_base, f32)}
        if c.n_k != c.n_embed // H:
            keys |= {A.KEY_LENGTH.format(arch=arch): (c.n_k, u32),
                     A.VALUE_LENGTH.format(arch=arch): (c.n_k, u32)}
    eot, pad = tok.special_tokens["<|endoftext|>"], tok.special_tokens["<|pad|>"]
    keys |= {T_.MODEL: ("gpt2", V.STRING), T_.PRE: ("dbrx", V.STRING),
             T_.BOS_ID: (eot, u32), T_.EOS_ID: (eot, u32), T_.PAD_ID: (pad, u32),
             T_.ADD_BOS: (False, V.BOOL), T_.ADD_EOS: (False, V.BOOL)}
    return keys


@pytest.mark.parametrize("dtype", ["f32", "f16"])
@pytest.mark.parametrize("shape", sorted(SHAPES))
def test_every_key_llama_cpp_reads_with_its_exact_value_and_type(shape, dtype, tok, tmp_path):
    model = _model(shape, len(tok))
    meta, _ = read(export_gguf((model, tok), tmp_path / "m.gguf", dtype=dtype))
    arch = shape.split("-")[0]
    expected = expected_keys(model, tok, arch, dtype)
    arrays = {T_.LIST, T_.TOKEN_TYPE, T_.MERGES}                  # the next test's
    assert set(meta) == set(expected) | arrays, \
        f"extra {set(meta) - set(expected) - arrays}, missing {set(expected) - set(meta)}"
    for key, (value, kind) in expected.items():
        assert meta[key][:2] == (value, kind), f"{key}: {meta[key][:2]}, want {(value, kind)}"


# ------------------------------------------------------------------------ tokenizer

def _renumbered(tok: Tokenizer) -> RenumberedTokenizer:
    """The same tokenizer under other ids (the special tokens first, bytes reversed), as an
    import from HF may number it."""
    S = len(tok.special_tokens)
    return RenumberedTokenizer.from_tokenizer(
        tok, [S + 255 - b for b in range(256)] + [S + 256 + i for i in range(len(tok.merges))]
        + list(range(S)))


@pytest.mark.parametrize("renumber", [False, True], ids=["native-ids", "renumbered-ids"])
def test_tokens_and_merges_spell_our_tokenizer(renumber, tok, tmp_path):
    t = _renumbered(tok) if renumber else tok
    if renumber:
        assert t.encode(TEXT) != tok.encode(TEXT), "the control: the ids differ"
    model = _model("llama-gqa-tied", len(t))
    meta, _ = read(export_gguf((model, t), tmp_path / "m.gguf"))
    tokens, types, merges = (meta[k][0] for k in (T_.LIST, T_.TOKEN_TYPE, T_.MERGES))
    assert (meta[T_.LIST][1:], meta[T_.TOKEN_TYPE][2], meta[T_.MERGES][2]) == \
        ((V.ARRAY, V.STRING), V.INT32, V.STRING)
    unspell = {c: b for b, c in byte_to_unicode().items()}
    specials = {i: name for name, i in t.special_tokens.items()}
    assert len(tokens) == len(types) == len(t)
    for i, text in enumerate(tokens):
        if i in specials:
            assert (text, types[i]) == (specials[i], gguf.TokenType.CONTROL), i
        else:
            assert bytes(unspell[ch] for ch in text) == t.vocab[i], f"token {i}"
            assert types[i] == gguf.TokenType.NORMAL, i
    # The merges, decoded with the file's own tokens, are our merge list (in native ids).
    file_id = {text: i for i, text in enumerate(tokens)}
    native = {public: native for native, public in enumerate(t.token_ids or range(len(t)))}
    pairs = [tuple(native[file_id[part]] for part in m.split(" ")) for m in merges]
    assert pairs == t.merges
    eot = t.special_tokens["<|endoftext|>"]
    assert (meta[T_.BOS_ID][0], meta[T_.EOS_ID][0]) == (eot, eot)


def _bpe(chunk: bytes, tokens: list[str], merges: list[str]) -> list[int]:
    """GPT-2 byte-level BPE as llama.cpp runs it on one chunk: spell the bytes, merge the
    pair of lowest rank again and again, look the pieces up in the token list."""
    spell, rank = byte_to_unicode(), {tuple(m.split(" ")): r for r, m in enumerate(merges)}
    parts = [spell[b] for b in chunk]
    while len(parts) > 1:
        best = min(range(len(parts) - 1), key=lambda j: rank.get((parts[j], parts[j + 1]), 1e9))
        if (parts[best], parts[best + 1]) not in rank:
            break
        parts[best:best + 2] = [parts[best] + parts[best + 1]]
    ids = {text: i for i, text in enumerate(tokens)}
    return [ids[p] for p in parts]


def test_the_files_bpe_encodes_to_our_ids(tok, tmp_path):
    meta, _ = read(export_gguf((_model("gpt2-tied", len(tok)), tok), tmp_path / "m.gguf"))
    tokens, merges = meta[T_.LIST][0], meta[T_.MERGES][0]
    chunks = tok.splitter.split(TEXT)                     # "dbrx": llama.cpp's same chunks
    assert [i for c in chunks for i in _bpe(c.encode(), tokens, merges)] == tok.encode(TEXT)


@pytest.mark.parametrize("pattern, pre", [("gpt4", "dbrx"), ("gpt2", "gpt-2")])
def test_pre_tokenizer_is_the_llama_cpp_name_for_our_pattern(pattern, pre, tmp_path):
    t = Tokenizer(vocab_size=270, pattern=pattern).train([TEXT * 20], progress=False)
    meta, _ = read(export_gguf((_model("gpt2-tied", len(t)), t), tmp_path / "m.gguf"))
    assert meta[T_.PRE][0] == pre


@pytest.mark.parametrize("pattern", ["none", r"\w+|\W"])
def test_patterns_llama_cpp_cannot_split_are_refused(pattern, tmp_path):
    t = Tokenizer(vocab_size=270, pattern=pattern).train([TEXT * 20], progress=False)
    with pytest.raises(ValueError, match="llama.cpp's pre-tokenizers cannot reproduce") as e:
        export_gguf((_model("gpt2-tied", len(t)), t), tmp_path / "m.gguf")
    assert "--pattern gpt4" in str(e.value), "names the fix"
    assert not (tmp_path / "m.gguf").exists()


# ------------------------------------------------------------------------ refusals

def test_a_model_neither_architecture_computes_is_refused_naming_each_field(tok, tmp_path):
    model = B2lM(vocab_size=len(tok), n_embed=32, n_block=2, n_head=4, n_k=8, n_v=4,
                 n_context=16)                                   # the original design's model
    with pytest.raises(ValueError) as e:
        export_gguf((model, tok), tmp_path / "m.gguf")
    msg = str(e.value)
    assert msg.startswith("this model cannot be exported to GGUF: "), msg
    for part in ("as llama.cpp's 'llama' architecture: norm_position='post' (needs 'pre'), "
                 "norm='layernorm' (needs 'rmsnorm'), positional='sinusoidal' (needs 'rope'), "
                 "activation='relu' (needs 'swiglu'), n_v=4 (needs n_k=8: Llama's heads have one "
                 "width for queries, keys and values), bias=True (needs False)",
                 "as llama.cpp's 'gpt2' architecture: norm_position='post' (needs 'pre')",
                 "positional='sinusoidal' (needs 'learned')", "n_v=4 (needs 8 = n_embed / n_head)",
                 "--norm-position pre --norm rmsnorm --positional rope --activation swiglu "
                 "--no-bias (llama)"):
        assert part in msg, f"{part!r} not in {msg!r}"
    assert not (tmp_path / "m.gguf").exists()


def test_the_nearer_architecture_is_named_first(tok, tmp_path):
    """The default preset's model (pre-norm RMSNorm, RoPE, no biases) is one field from
    llama: that field comes first, alone."""
    model = _model("llama-mha-untied", len(tok))
    model = B2lM(model.config.replace(activation="gelu"))
    with pytest.raises(ValueError, match=r"GGUF: as llama.cpp's 'llama' architecture: "
                                         r"activation='gelu' \(needs 'swiglu'\); as llama"):
        export_gguf((model, tok), tmp_path / "m.gguf")


def test_per_block_overrides_are_refused(tok, tmp_path):
    model = B2lM(_model("llama-mha-untied", len(tok)).config.replace(
        blocks=[{"n_ff": 32}, {"attention": "manual"}]))
    with pytest.raises(ValueError, match=r"blocks\[0\].n_ff=32 \(needs 64: Llama's blocks "
                                         r"are all alike\)") as e:
        export_gguf((model, tok), tmp_path / "m.gguf")
    assert "blocks[1]" not in str(e.value), "a kernel choice computes the same"


def test_bad_dtype_and_a_folder_as_out_path_are_refused(tok, tmp_path):
    model = _model("gpt2-tied", len(tok))
    with pytest.raises(ValueError, match="dtype='bf16'; choose one of: f32, f16"):
        export_gguf((model, tok), tmp_path / "m.gguf", dtype="bf16")
    with pytest.raises(ValueError, match=f"{tmp_path} is a folder, .*give a file path, e.g. "
                                         f"{tmp_path / 'model.gguf'}"):
        export_gguf((model, tok), tmp_path)


def test_a_failed_write_leaves_the_earlier_file_whole(tok, tmp_path, monkeypatch):
    path = tmp_path / "m.gguf"
    export_gguf((_model("gpt2-tied", len(tok)), tok), path)
    before = path.read_bytes()

    def full_disk(self, *args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(gguf.GGUFWriter, "write_tensors_to_file", full_disk)
    with pytest.raises(OSError) as e:
        export_gguf((_model("gpt2-tied", len(tok), seed=1), tok), path)
    assert e.value.filename == str(path), "the error names the file asked for"
    assert path.read_bytes() == before, "the earlier export is untouched"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.gguf"], "no temporary file left"


def test_a_missing_gguf_package_names_the_fix(tok, tmp_path, monkeypatch):
    from basegpt._optional import MissingDependency
    monkeypatch.setitem(sys.modules, "gguf", None)                 # import gguf fails
    with pytest.raises(MissingDependency, match="exporting to GGUF needs gguf: pip install gguf"):
        export_gguf((_model("gpt2-tied", len(tok)), tok), tmp_path / "m.gguf")


# ------------------------------------------------------------------------ command line

def one_error_line(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, f"one line on stderr, got: {err}"
    return err[0]


@pytest.fixture(scope="module")
def runs(tok, tmp_path_factory):
    """Run directories: one llama-compatible, one neither architecture computes."""
    root = tmp_path_factory.mktemp("runs")
    save_run(root / "llama", _model("llama-gqa-tied", len(tok)), tok)
    save_run(root / "post", B2lM(vocab_size=len(tok), n_embed=32, n_block=1, n_head=2,
                                 n_k=16, n_v=16, n_context=16), tok)
    return root


def test_cli_exports_a_run(runs, tmp_path, capsys):
    out = tmp_path / "sub" / "llama.gguf"
    assert main(["export", str(runs / "llama"), "--format", "gguf", str(out),
                 "--dtype", "f16"]) == 0
    assert f"wrote {out} (f16; run it with llama.cpp: llama-cli -m {out})" in capsys.readouterr().out
    meta, tensors = read(out)
    assert (meta["general.architecture"][0], meta["general.file_type"][0]) == ("llama", 1)
    assert meta["general.name"][0] == "llama", "named after the run directory"
    assert tensors["blk.0.attn_q.weight"].tensor_type.name == "F16"


def test_cli_errors_are_one_line_and_write_nothing(runs, tmp_path, capsys, monkeypatch):
    out = tmp_path / "m.gguf"
    assert main(["export", str(runs / "post"), "--format", "gguf", str(out)]) == 2
    assert one_error_line(capsys).startswith(
        "basegpt: error: this model cannot be exported to GGUF: as llama.cpp's 'gpt2' "
        "architecture: norm_position='post' (needs 'pre')")
    assert main(["export", str(runs / "llama"), "--format", "hf", str(tmp_path / "hf"),
                 "--dtype", "f16"]) == 2
    assert one_error_line(capsys) == ("basegpt: error: --dtype is for --format gguf only, "
                                      "not hf; drop --dtype")
    monkeypatch.setitem(sys.modules, "gguf", None)
    assert main(["export", str(runs / "llama"), "--format", "gguf", str(out)]) == 2
    assert one_error_line(capsys) == ("basegpt: error: exporting to GGUF needs gguf: "
                                      "pip install gguf")
    assert sorted(p.name for p in tmp_path.iterdir()) == [], "nothing written"
