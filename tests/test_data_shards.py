"""Token shards: the file format, prepare() (determinism, splits, bad inputs), and reading
them back with ShardDataset and ResumableSampler.

Most tests use an untrained byte-level tokenizer (ids = UTF-8 bytes, end-of-text 256), so
the expected token streams are just the documents' bytes with 256 after each one.
"""

from __future__ import annotations

import json
import os
import pickle
import stat
import struct
import tracemalloc
import warnings

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch.utils.data import DataLoader, TensorDataset

from basegpt import Tokenizer
from basegpt._io import atomic_write_text
from basegpt.data import (ResumableSampler, ShardDataset, ShardWriter, dtype_for_vocab,
                          open_shard, prepare, read_header, validation_documents, write_shard)
from basegpt.data.pipeline import _blocks
from basegpt.data.streams import BatchStream
from basegpt.tokenizer import EOT, PAD

EOT_ID = 256
DOCS = {f"doc{i:02d}.txt": f"Document {i}: " + "the cat sat on the mat. " * (i + 1)
        for i in range(10)}


@pytest.fixture(scope="module")
def byte_tok() -> Tokenizer:
    return Tokenizer(vocab_size=258)


@pytest.fixture(scope="module")
def trained_tok() -> Tokenizer:
    text = " ".join(DOCS.values()) + " hello world, how are you today?"
    return Tokenizer(vocab_size=300).train(text, progress=False)


@pytest.fixture
def corpus(tmp_path):
    folder = tmp_path / "corpus"
    folder.mkdir()
    for name, text in DOCS.items():
        (folder / name).write_text(text, encoding="utf-8")
    return folder


def stream(tokenizer, texts) -> list[int]:
    """What a split's shards must hold: each document's tokens, then end-of-text."""
    return [t for text in texts for t in tokenizer.encode(text) + [tokenizer.eot_id]]


def shard_tokens(out, split) -> list[int]:
    meta = json.loads((out / "meta.json").read_text())
    return [int(t) for s in meta["shards"][split] for t in open_shard(out / s["file"])]


# ------------------------------------------------------------------------ format

def test_dtype_choice():
    assert dtype_for_vocab(258) == np.uint16, "small vocab: uint16"
    assert dtype_for_vocab(65536) == np.uint16, "ids 0..65535 fit uint16"
    assert dtype_for_vocab(65537) == np.uint32, "id 65536 needs uint32"


@pytest.mark.parametrize("dtype, tokens", [("uint16", [0, 1, 65535, 7]),
                                           ("uint32", [0, 65536, 4_000_000_000])])
def test_header_round_trip(tmp_path, dtype, tokens):
    path = tmp_path / "s.bin"
    write_shard(path, tokens, dtype)
    raw = path.read_bytes()
    size = np.dtype(dtype).itemsize
    assert raw[:24] == b"BGPTTOK\0" + struct.pack("<IIQ", 1, size, len(tokens)), \
        "header: magic, version 1, dtype code = item size, token count"
    assert len(raw) == 24 + size * len(tokens), "tokens right after the header"
    header = read_header(path)
    assert (header.version, header.dtype, header.n_tokens) == (1, np.dtype(dtype), len(tokens))
    assert open_shard(path).tolist() == tokens, "memmap reads the tokens back"


def test_writer_rolls_over_at_shard_tokens(tmp_path):
    with ShardWriter(tmp_path, "t_{:03d}.bin", "uint16", shard_tokens=3) as writer:
        writer.write(np.arange(5))
        writer.write(np.arange(5, 8))
    assert [p.name for p in writer.paths] == ["t_000.bin", "t_001.bin", "t_002.bin"]
    assert [open_shard(p).tolist() for p in writer.paths] == [[0, 1, 2], [3, 4, 5], [6, 7]]
    assert not list(tmp_path.glob(".*.tmp")), "no temporary files left"


def test_writer_refuses_ids_that_do_not_fit(tmp_path):
    with pytest.raises(ValueError, match="do not fit"):
        write_shard(tmp_path / "s.bin", [70000], "uint16")
    assert not list(tmp_path.iterdir()), "a failed write leaves nothing behind"


@pytest.mark.parametrize("damage, message", [
    (lambda raw: b"NOTASHRD" + raw[8:], "not a basegpt token shard"),
    (lambda raw: raw[:8] + struct.pack("<I", 99) + raw[12:], "version 99"),
    (lambda raw: raw[:12] + struct.pack("<I", 3) + raw[16:], "dtype code 3"),
    (lambda raw: raw[:-1], "truncated or corrupt"),
    (lambda raw: raw[:10], "truncated"),
])
def test_corrupt_header_is_a_clear_error(tmp_path, damage, message):
    path = tmp_path / "bad.bin"
    write_shard(path, [1, 2, 3], "uint16")
    path.write_bytes(damage(path.read_bytes()))
    with pytest.raises(ValueError, match=message) as error:
        read_header(path)
    assert str(path) in str(error.value), "the message names the file"


# ------------------------------------------------------------------------ prepare

def test_validation_split_known_answer():
    assert validation_documents(10, 0.2) == {3, 4}, "pinned: sha256 ranks of 'basegpt-val:i'"
    assert validation_documents(10, 0.2) == validation_documents(10, 0.2), "deterministic"
    assert validation_documents(2, 0.01) == {1}, "at least one document when f > 0"
    assert len(validation_documents(3, 0.99)) == 2, "never all documents"
    assert validation_documents(5, 0.0) == set(), "f = 0: no validation"
    assert validation_documents(1, 0.5) == set(), "one document: prepare holds out its tail"


def test_prepare_streams_are_the_documents(byte_tok, corpus, tmp_path):
    out = tmp_path / "out"
    meta = prepare([corpus], byte_tok, out, val_fraction=0.2, workers=1, progress=False)
    texts = [DOCS[name] for name in sorted(DOCS)]
    val = validation_documents(10, 0.2)
    assert shard_tokens(out, "train") == stream(byte_tok, [t for i, t in enumerate(texts)
                                                           if i not in val]), "train stream"
    assert shard_tokens(out, "val") == stream(byte_tok, [texts[i] for i in sorted(val)]), \
        "val stream: whole documents 3 and 4"
    assert meta["documents"] == {"train": 8, "val": 2}, "split by document"
    assert meta["tokenizer_hash"] == byte_tok.hash and meta["dtype"] == "uint16"
    assert meta["vocab_size"] == 258 and meta["inputs"] == [str(corpus)]
    assert Tokenizer.load(out / "tokenizer.json").hash == byte_tok.hash, "tokenizer copied"
    on_disk = json.loads((out / "meta.json").read_text())
    assert on_disk["tokens"] == {"train": len(shard_tokens(out, "train")),
                                 "val": len(shard_tokens(out, "val"))}, "counts in meta.json"


def test_prepare_is_byte_identical_across_runs_and_workers(trained_tok, corpus, tmp_path):
    runs = {}
    for name, workers in (("a", 1), ("b", 1), ("c", 2)):
        out = tmp_path / name
        # small blocks and shards, so blocks, batches and shard boundaries all get exercised
        prepare([corpus], trained_tok, out, val_fraction=0.2, workers=workers,
                shard_tokens=100, block_chars=64, progress=False)
        runs[name] = {p.name: p.read_bytes() for p in sorted(out.iterdir())}
    assert len(runs["a"]) > 4, f"several shards expected, got {sorted(runs['a'])}"
    assert runs["a"] == runs["b"], "re-running gives byte-identical files"
    assert runs["a"] == runs["c"], "workers=2 gives the same bytes as workers=1"


def test_blocks_do_not_change_the_tokens(trained_tok, corpus, tmp_path):
    prepare([corpus], trained_tok, tmp_path / "o", val_fraction=0.0, workers=1,
            block_chars=16, progress=False)
    texts = [DOCS[name] for name in sorted(DOCS)]
    assert shard_tokens(tmp_path / "o", "train") == stream(trained_tok, texts), \
        "encoding 16-character blocks at safe cuts = encoding each file whole"


def test_rerun_removes_stale_shards(byte_tok, corpus, tmp_path):
    out = tmp_path / "o"
    prepare([corpus], byte_tok, out, workers=1, shard_tokens=50, progress=False)
    prepare([corpus], byte_tok, out, workers=1, shard_tokens=10_000, progress=False)
    assert sorted(p.name for p in out.glob("*.bin")) == ["train_000000.bin", "val_000000.bin"]


def test_single_document_holds_out_its_tail(byte_tok, tmp_path):
    lines = [f"line {i:03d}\n" for i in range(10)]            # 10 lines of 9 bytes
    (tmp_path / "one.txt").write_text("".join(lines))
    meta = prepare([tmp_path / "one.txt"], byte_tok, tmp_path / "o", val_fraction=0.3,
                   workers=1, progress=False)
    # 90 bytes, 27 held out -> budget 63 bytes of train; the last line start before it is 63
    assert shard_tokens(tmp_path / "o", "train") == stream(byte_tok, ["".join(lines[:7])])
    assert shard_tokens(tmp_path / "o", "val") == stream(byte_tok, ["".join(lines[7:])])
    assert meta["documents"] == {"train": 1, "val": 1}, "the tail is the validation document"


def test_large_vocab_uses_uint32(tmp_path):
    specials = (EOT, PAD) + tuple(f"<|s{i}|>" for i in range(65_300))
    big = Tokenizer(vocab_size=256 + len(specials), special_tokens=specials)
    assert len(big) > 65536, "the vocabulary needs 32-bit ids"
    (tmp_path / "a.txt").write_text("hi there")
    meta = prepare([tmp_path / "a.txt"], big, tmp_path / "o", val_fraction=0.0, workers=1,
                   progress=False)
    assert meta["dtype"] == "uint32", "uint32 shards"
    assert read_header(tmp_path / "o" / "train_000000.bin").dtype == np.uint32
    assert shard_tokens(tmp_path / "o", "train") == list(b"hi there") + [big.eot_id]


def test_prepare_bad_inputs(byte_tok, tmp_path):
    with pytest.raises(FileNotFoundError, match="missing.txt"):
        prepare([tmp_path / "missing.txt"], byte_tok, tmp_path / "o", progress=False)
    bad = tmp_path / "latin1.txt"
    bad.write_bytes("ok then caf\u00e9 au lait".encode("latin-1"))
    with pytest.raises(ValueError, match=r"latin1.txt is not valid UTF-8 \(byte 11"):
        prepare([bad], byte_tok, tmp_path / "o", workers=1, progress=False)
    bad.write_bytes("ok then caf\u00e9".encode("latin-1"))
    with pytest.raises(ValueError, match=r"latin1.txt is not valid UTF-8 \(byte 11: the file "
                                         "ends inside a character"):
        prepare([bad], byte_tok, tmp_path / "o", workers=1, progress=False)
    assert not list((tmp_path / "o").glob(".*.tmp")), "a failed run leaves no temporary files"
    (tmp_path / "empty.txt").write_text("")
    with pytest.raises(ValueError, match="corpus is empty"):
        prepare([tmp_path / "empty.txt"], byte_tok, tmp_path / "o", workers=1, progress=False)
    with pytest.raises(ValueError, match="val_fraction"):
        prepare([bad], byte_tok, tmp_path / "o", val_fraction=1.0, progress=False)


def test_prepare_builtin_corpus_by_default(byte_tok, tmp_path):
    meta = prepare(None, byte_tok, tmp_path / "o", max_bytes=20_000, workers=1, progress=False)
    assert meta["inputs"] == ["data:stdlib (max_bytes=20000)"], "the built-in corpus"
    assert meta["bytes"] <= 20_000 and sum(meta["tokens"].values()) == meta["bytes"] + sum(
        meta["documents"].values()), "byte tokenizer: one token per byte, plus one eot per doc"


# No ASCII space anywhere: letters (CJK and kana are letters), digits, CJK punctuation.
CJK = "東京は日本の首都です。人口は約1400万人、面積は2194平方キロメートル！「東京都」とも。\n" * 12


@pytest.fixture(scope="module")
def cut_toks() -> dict[str, Tokenizer]:
    text = CJK + " ".join(DOCS.values()) + ' x = 12345\n\n  {"k":[1,2]} foo_bar'
    return {p: Tokenizer(vocab_size=360, pattern=p).train(text, progress=False)
            for p in ("gpt4", "gpt2")}


def test_text_without_spaces_is_read_in_blocks(cut_toks, tmp_path):
    path = tmp_path / "cjk.txt"
    path.write_text(CJK, encoding="utf-8")
    tok = cut_toks["gpt4"]
    with warnings.catch_warnings():
        warnings.simplefilter("error")            # cuts are found: no warning
        blocks = [block for block, _ in _blocks(path, tok.splitter, 16)]
    assert "".join(blocks) == CJK, "the blocks are the file"
    assert len(blocks) > 30 and max(map(len, blocks)) < 64, \
        f"cut after letters and digits: {len(blocks)} blocks, longest {max(map(len, blocks))}"
    prepare([path], tok, tmp_path / "o", val_fraction=0.0, workers=1, block_chars=16,
            progress=False)
    assert shard_tokens(tmp_path / "o", "train") == tok.encode(CJK) + [tok.eot_id], \
        "encoding 16-character blocks = encoding the file whole"


@settings(max_examples=150, deadline=None)
@given(text=st.lists(st.sampled_from(list("ab日本。、05 \n\r\t_.{}:\"'")
                                     + ["'ll", "\r\n", "123456"]), max_size=60).map("".join),
       block_chars=st.integers(1, 12), pattern=st.sampled_from(["gpt4", "gpt2"]))
def test_blocks_encode_like_the_whole_text(cut_toks, text, block_chars, pattern):
    tok = cut_toks[pattern]
    blocks = [block for block, _ in _blocks(text, tok.splitter, block_chars)]
    assert "".join(blocks) == text, "the blocks are the text"
    assert [t for block in blocks for t in tok.encode(block)] == tok.encode(text), \
        f"blocks {blocks!r} encode differently from the whole text"


def test_a_block_without_a_safe_cut_warns_once(byte_tok, tmp_path):
    path = tmp_path / "word.txt"
    path.write_text("a" * 400)
    with pytest.warns(UserWarning, match=r"word.txt: \d+ characters without a safe place to "
                                         r"cut \(it has no letter or digit followed") as record:
        blocks = [block for block, _ in _blocks(path, byte_tok.splitter, 16)]
    assert blocks == ["a" * 400], "one word is one chunk, so it is one block"
    assert len(record) == 1, f"one warning per file, got {len(record)}"
    none = Tokenizer(vocab_size=258, pattern="none")
    path.write_text("a b. " * 40)
    with pytest.warns(UserWarning, match="split pattern 'none' merges across the whole document"):
        assert len(list(_blocks(path, none.splitter, 16))) == 1, "pattern none: read whole"
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert len(list(_blocks(path, none.splitter, 25))) == 1, "200 characters: no warning"


def test_output_folder_that_is_a_file(byte_tok, corpus, tmp_path):
    (tmp_path / "afile").write_text("x")
    for out in (tmp_path / "afile", tmp_path / "afile" / "sub"):
        with pytest.raises(ValueError, match=r"cannot write shards into .*afile.*: .*afile is a "
                                             "file, not a folder; choose a new output folder"):
            prepare([corpus], byte_tok, out, workers=1, progress=False)


def test_folder_input_skips_hidden_files_and_the_output_folder(byte_tok, corpus):
    (corpus / ".DS_Store").write_bytes(b"\xff\x00")           # not UTF-8: reading it would fail
    (corpus / ".git").mkdir()
    (corpus / ".git" / "HEAD").write_text("ref: refs/heads/main\n")
    out = corpus / "shards"
    runs = []
    for _ in range(2):                  # the second run finds the first one's shards in corpus/
        meta = prepare([corpus], byte_tok, out, workers=1, progress=False)
        runs.append({p.name: p.read_bytes() for p in out.iterdir()})
        assert meta["bytes"] == sum(len(t.encode()) for t in DOCS.values()), "only the 10 docs"
    assert runs[0] == runs[1], "re-running over the folder gives the same shards"


@pytest.mark.skipif(os.name == "nt", reason="POSIX file modes")
@pytest.mark.parametrize("mask", [0o022, 0o007])
def test_files_get_the_mode_the_umask_gives(byte_tok, corpus, tmp_path, mask):
    old = os.umask(mask)
    try:
        prepare([corpus], byte_tok, tmp_path / "o", workers=1, progress=False)
        atomic_write_text(tmp_path / "note.txt", "hi")
    finally:
        os.umask(old)
    paths = [*(tmp_path / "o").iterdir(), tmp_path / "note.txt"]
    assert len(paths) == 5, f"2 shards, meta.json, tokenizer.json, note.txt: {paths}"
    for path in paths:
        mode = stat.S_IMODE(path.stat().st_mode)
        assert mode == 0o666 & ~mask, \
            f"{path.name} has mode {oct(mode)}, wanted {oct(0o666 & ~mask)}"


# ------------------------------------------------------------------------ ShardDataset

@pytest.fixture
def prepared(trained_tok, corpus, tmp_path):
    out = tmp_path / "prepared"
    prepare([corpus], trained_tok, out, val_fraction=0.2, workers=1, shard_tokens=37,
            progress=False)
    return out


def test_dataset_windows_equal_encoded_tokens(trained_tok, prepared):
    texts = [DOCS[name] for name in sorted(DOCS)]
    val = validation_documents(10, 0.2)
    expected = stream(trained_tok, [t for i, t in enumerate(texts) if i not in val])
    T = 8
    ds = ShardDataset(prepared, n_context=T, tokenizer=trained_tok, vocab_size=len(trained_tok))
    assert len(ds) == (len(expected) - T - 1) // T + 1, "whole windows only"
    for i in range(len(ds)):                   # shards hold 37 tokens: many windows span two
        x, y = ds[i]
        assert x.tolist() == expected[i * T:i * T + T], f"window {i} input"
        assert y.tolist() == expected[i * T + 1:i * T + T + 1], f"window {i} target"
        assert x.dtype == torch.int64
    overlapping = ShardDataset(prepared, n_context=T, stride=3)
    assert overlapping[5][0].tolist() == expected[15:15 + T], "stride 3: window 5 starts at 15"
    val_ds = ShardDataset(prepared, n_context=T, split="val")
    assert val_ds[0][0].tolist() == stream(trained_tok, [texts[min(val)]])[:T], "val split"


def test_dataset_pickles_without_the_data(prepared):
    ds = ShardDataset(prepared, n_context=8)
    ds[0]                                      # opens the memory maps
    clone = pickle.loads(pickle.dumps(ds))
    assert len(pickle.dumps(ds)) < 5_000, "DataLoader workers get paths, not a copy of the shards"
    torch.testing.assert_close(clone[3], ds[3])


def test_tokenizer_hash_mismatch(prepared, byte_tok, trained_tok):
    with pytest.raises(ValueError, match=f"{trained_tok.hash[:12]}.*{byte_tok.hash[:12]}.*"
                                         "re-run `basegpt prepare`"):
        ShardDataset(prepared, n_context=8, tokenizer=byte_tok)


def test_model_vocab_too_small(prepared):
    with pytest.raises(ValueError, match="vocab_size is 299; build the model with vocab_size=300"):
        ShardDataset(prepared, n_context=8, vocab_size=299)
    assert len(ShardDataset(prepared, n_context=8, vocab_size=512)) > 0, "bigger model vocab ok"


def test_dataset_has_the_shards_tokenizer(prepared, trained_tok):
    ds = ShardDataset(prepared, n_context=8)
    assert ds.tokenizer.hash == trained_tok.hash, "not given: the folder's tokenizer.json"
    assert ShardDataset(prepared, n_context=8, tokenizer=trained_tok).tokenizer is trained_tok
    assert pickle.loads(pickle.dumps(ds)).tokenizer.hash == trained_tok.hash, \
        "a copy for a DataLoader worker reloads it"
    (prepared / "tokenizer.json").unlink()
    assert ShardDataset(prepared, n_context=8).tokenizer is None, "a folder without one"


def test_dataset_never_loads_a_whole_shard(byte_tok, tmp_path):
    text = "".join(f"line {i:06d}\n" for i in range(100_000))      # 1.2 M tokens, 2.4 MB
    (tmp_path / "big.txt").write_text(text)
    prepare([tmp_path / "big.txt"], byte_tok, tmp_path / "o", val_fraction=0.0, workers=1,
            progress=False)
    ds = ShardDataset(tmp_path / "o", n_context=16)
    shard_bytes = ds.n_tokens * 2                                   # one uint16 shard
    tracemalloc.start()                   # numpy reports its buffers to tracemalloc
    try:
        windows = {i: ds[i] for i in range(0, len(ds), len(ds) // 64)}   # opens the maps too
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < shard_bytes / 20, f"reading 65 windows allocated {peak:,} bytes, the " \
                                    f"shard is {shard_bytes:,}"
    assert all(isinstance(m, np.memmap) for m in ds._maps), "the shards are memory-mapped"
    in_ram = [name for name, value in vars(ds).items() if isinstance(value, np.ndarray)
              and not isinstance(value, np.memmap) and value.size >= ds.n_tokens // 2]
    assert not in_ram, f"attributes holding the shard's tokens in RAM: {in_ram}"
    data = text.encode()
    for i, (x, y) in windows.items():
        assert x.tolist() == list(data[16 * i:16 * i + 16]), f"window {i} is the text"


def test_damaged_shards_are_reported(prepared):
    shard = prepared / "train_000001.bin"
    raw = shard.read_bytes()
    shard.write_bytes(raw[:-2])
    with pytest.raises(ValueError, match="train_000001.bin is .* truncated"):
        ShardDataset(prepared, n_context=8)
    write_shard(shard, [1, 2, 3], "uint16")
    with pytest.raises(ValueError, match="train_000001.bin holds 3 uint16 tokens but meta.json"):
        ShardDataset(prepared, n_context=8)
    with pytest.raises(ValueError, match="too few for one window"):
        ShardDataset(prepared, n_context=10_000, split="val")
    with pytest.raises(FileNotFoundError, match="basegpt prepare"):
        ShardDataset(prepared / "nowhere", n_context=8)


# ------------------------------------------------------------------------ sampler

def test_sampler_visits_every_window_once_per_epoch():
    sampler = ResumableSampler(50, seed=3)
    first, second = list(sampler), list(sampler)
    assert sorted(first) == sorted(second) == list(range(50)), "each index once per epoch"
    assert first != second, "a new permutation each epoch"
    assert first == list(ResumableSampler(50, seed=3)), "same seed, same order"
    assert first != list(ResumableSampler(50, seed=4)), "another seed, another order"
    assert sampler.state_dict() == {"seed": 3, "epoch": 2, "position": 0, "n": 50}


def test_sampler_state_restores_the_remaining_order():
    reference = ResumableSampler(30, seed=7)
    epoch0, epoch1 = list(reference), list(reference)
    sampler = ResumableSampler(30, seed=7)
    it = iter(sampler)
    head = [next(it) for _ in range(11)]
    state = json.loads(json.dumps(sampler.state_dict()))  # survives a trip through JSON
    assert state == {"seed": 7, "epoch": 0, "position": 11, "n": 30}
    resumed = ResumableSampler(30, seed=0)
    resumed.load_state_dict(state)
    assert head + list(resumed) == epoch0, "the rest of the epoch, exactly"
    assert list(resumed) == epoch1, "then the next epoch as if never interrupted"
    with pytest.raises(ValueError, match="30 items but this dataset has 31"):
        ResumableSampler(31).load_state_dict(state)


def test_batch_stream_draws_each_epoch_order_once(monkeypatch):
    calls = []
    permutation = ResumableSampler.permutation
    monkeypatch.setattr(ResumableSampler, "permutation",
                        lambda self, epoch: calls.append(epoch) or permutation(self, epoch))
    data = TensorDataset(torch.arange(10), torch.arange(10))         # item i is (i, i)
    stream = BatchStream(data, batch_size=3, seed=5)
    got = [next(stream)[0].tolist() for _ in range(7)]
    # The documented order: epoch e is PCG64((seed, e))'s permutation; 3 batches of 3 per
    # epoch, the 10th window (the ragged tail) dropped.
    orders = [np.random.default_rng([5, e]).permutation(10).tolist() for e in range(3)]
    expected = [orders[e][b * 3:b * 3 + 3] for e in range(3) for b in range(3)][:7]
    assert got == expected, "batches in ResumableSampler order"
    assert calls == [0, 1, 2], f"one permutation per epoch, not per batch: {calls}"
    rewind = BatchStream(data, batch_size=3, seed=5)
    for _ in range(4):
        next(rewind)
    state = rewind.state_dict()                      # epoch 1, position 3
    stream.load_state_dict(state)                    # stream holds epoch 2's order
    assert [next(stream)[0].tolist() for _ in range(3)] == expected[4:7], \
        "after load_state_dict the restored epoch's order, not the cached one"


def test_sampler_resume_through_a_dataloader(prepared):
    ds = ShardDataset(prepared, n_context=4)
    full = [x for x, _ in DataLoader(ds, batch_size=4, sampler=ResumableSampler(ds, seed=1))]
    sampler = ResumableSampler(ds, seed=1)
    loader = DataLoader(ds, batch_size=4, sampler=sampler)
    got = []
    for x, _ in loader:
        got.append(x)
        if len(got) == 3:
            break
    state = sampler.state_dict()
    assert state["position"] == 12, "num_workers=0: position = batches consumed * batch size"
    restored = ResumableSampler(ds, seed=1)
    restored.load_state_dict(state)
    got += [x for x, _ in DataLoader(ds, batch_size=4, sampler=restored)]
    assert len(got) == len(full) and all(torch.equal(a, b) for a, b in zip(got, full)), \
        "interrupted + resumed batches equal one uninterrupted epoch"
