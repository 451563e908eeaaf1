"""Data pipeline benchmark: loader memory stays flat as the corpus grows; prepare throughput.

    python benchmarks/bench_data.py                       # 30 MB and 300 MB, ~3 minutes
    python benchmarks/bench_data.py --sizes 10 --batches 100   # quick look

1. Generates text of each size under --workdir (default /tmp/basegpt_bench_data, never the
   repository): lines of the built-in corpus (the stdlib sources), shuffled with a fixed
   seed, in files of 1 MB (one document each), so every run makes the same bytes.
2. Prepares each corpus with `prepare()` (default workers, and workers=1) and, as the peer,
   a plain single-process loop: read a file, tokenizer.encode, append uint16 ids to one file.
   Reports MB of text per second.
3. For each corpus, runs the training loader in a fresh subprocess: ShardDataset +
   ResumableSampler + DataLoader(batch_size=32), iterating --batches batches, and reports
   the peak RSS (resource.getrusage ru_maxrss) and the RSS before the first batch. As a
   contrast the same loop reads from the tokens loaded fully into RAM (np.fromfile).

Prints a Markdown table for BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

MB = 1_000_000
FILE_BYTES = 1 * MB


def generate(path: Path, n_bytes: int) -> None:
    """n_bytes of shuffled stdlib lines in 1 MB files under `path` (skipped if present)."""
    from basegpt.corpus import builtin_corpus
    if path.is_dir() and sum(f.stat().st_size for f in path.iterdir()) >= n_bytes - FILE_BYTES:
        return
    path.mkdir(parents=True, exist_ok=True)
    lines = [line for doc in builtin_corpus(None) for line in doc.splitlines(keepends=True)]
    rng = random.Random(0)
    written, index = 0, 0
    while written < n_bytes:
        rng.shuffle(lines)
        out, size = [], 0
        for line in lines:
            out.append(line)
            size += len(line.encode("utf-8"))
            if size >= FILE_BYTES:
                break
        text = "".join(out)
        (path / f"part_{index:05d}.txt").write_text(text, encoding="utf-8")
        written += len(text.encode("utf-8"))
        index += 1


def plain_loop(files: list[Path], tokenizer, out: Path) -> float:
    """The peer: one process, read -> encode -> write, no blocks, no shards. Returns seconds."""
    start = time.perf_counter()
    eot = tokenizer.eot_id
    with open(out, "wb") as f:
        for path in files:
            ids = tokenizer.encode(path.read_text(encoding="utf-8")) + [eot]
            np.array(ids, dtype=np.uint16).tofile(f)
    return time.perf_counter() - start


def loader_rss(data_dir: str, batches: int, batch_size: int, n_context: int, mode: str) -> dict:
    """Run in a subprocess: iterate the training loader, report RSS (MB)."""
    import torch
    from torch.utils.data import DataLoader, Dataset
    from basegpt.data import ResumableSampler, ShardDataset

    dataset = shards = ShardDataset(data_dir, n_context=n_context)
    if mode == "ram":            # the contrast: every token in memory
        tokens = np.concatenate([np.fromfile(p, dtype=np.uint16, offset=24) for p in shards.paths])

        class InRam(Dataset):
            def __len__(self):
                return len(shards)

            def __getitem__(self, i):
                chunk = torch.from_numpy(tokens[i * n_context:(i + 1) * n_context + 1].astype(np.int64))
                return chunk[:-1], chunk[1:]
        dataset = InRam()
    loader = DataLoader(dataset, batch_size=batch_size,
                        sampler=ResumableSampler(len(dataset), seed=0))
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    start = time.perf_counter()
    checksum = 0
    for step, (x, y) in enumerate(loader):
        checksum += int(x[0, 0])
        if step + 1 == batches:
            break
    return {"rss_before_mb": before, "peak_rss_mb": resource.getrusage(
        resource.RUSAGE_SELF).ru_maxrss / 1024, "seconds": time.perf_counter() - start,
        "windows": len(dataset)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", default="30,300", help="corpus sizes in MB (default 30,300)")
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/basegpt_bench_data"))
    parser.add_argument("--vocab-size", type=int, default=4096)
    parser.add_argument("--batches", type=int, default=500)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--n-context", type=int, default=256)
    parser.add_argument("--loader", nargs=2, metavar=("DIR", "MODE"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.loader:
        print(json.dumps(loader_rss(args.loader[0], args.batches, args.batch_size,
                                    args.n_context, args.loader[1])))
        return

    from basegpt.corpus import builtin_corpus
    from basegpt.data import prepare
    from basegpt.tokenizer import Tokenizer
    args.workdir.mkdir(parents=True, exist_ok=True)
    tok_path = args.workdir / f"tok{args.vocab_size}.json"
    if not tok_path.is_file():
        Tokenizer(vocab_size=args.vocab_size).train(list(builtin_corpus(3 * MB)),
                                                    progress=False).save(tok_path)
    tokenizer = Tokenizer.load(tok_path)
    print(f"tokenizer: {tokenizer}; cores: {os.cpu_count()}", file=sys.stderr)

    rows = []
    for size in (int(s) for s in args.sizes.split(",")):
        text_dir = args.workdir / f"text_{size}mb"
        generate(text_dir, size * MB)
        files = sorted(text_dir.iterdir())
        n_bytes = sum(f.stat().st_size for f in files)
        row = {"size_mb": n_bytes / MB}
        out = args.workdir / f"shards_{size}mb"
        for label, workers in (("default", None), ("1", 1), ("2", 2)):
            meta = prepare([text_dir], tokenizer, out, workers=workers, progress=False)
            row[f"prepare_{label}"] = n_bytes / MB / meta["seconds"]
            row[f"workers_{label}"] = meta["workers"]
            print(f"{size} MB prepare workers={meta['workers']}: {meta['seconds']:.1f} s",
                  file=sys.stderr)
        row["tokens"] = sum(meta["tokens"].values())
        seconds = plain_loop(files, tokenizer, args.workdir / "plain.bin")
        row["plain"] = n_bytes / MB / seconds
        for mode in ("memmap", "ram"):
            result = subprocess.run(
                [sys.executable, __file__, "--loader", str(out), mode, "--batches",
                 str(args.batches), "--batch-size", str(args.batch_size), "--n-context",
                 str(args.n_context)], capture_output=True, text=True, check=True)
            row[mode] = json.loads(result.stdout)
        print(json.dumps(row), file=sys.stderr)
        rows.append(row)

    print(f"\nloader: {args.batches} batches of {args.batch_size} x {args.n_context} tokens, "
          "random order, DataLoader(num_workers=0); prepare in MB of text per second\n")
    print("| corpus | tokens | windows | loader RSS before -> peak (memmap) | "
          "same, all tokens in RAM | prepare (default workers) | prepare workers=1 | "
          "prepare workers=2 | plain loop |")
    print("|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        m, ram = r["memmap"], r["ram"]
        print(f"| {r['size_mb']:.0f} MB | {r['tokens'] / 1e6:.1f} M | {m['windows']:,} | "
              f"{m['rss_before_mb']:.0f} -> {m['peak_rss_mb']:.0f} MB | "
              f"{ram['rss_before_mb']:.0f} -> {ram['peak_rss_mb']:.0f} MB | "
              f"{r['prepare_default']:.1f} MB/s ({r['workers_default']}) | "
              f"{r['prepare_1']:.1f} MB/s | {r['prepare_2']:.1f} MB/s | {r['plain']:.1f} MB/s |")


if __name__ == "__main__":
    main()
