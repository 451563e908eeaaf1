"""Tokenizer benchmark: basegpt's trainers and encoder against HF tokenizers, rustbpe, tiktoken.

Every contender runs in its own subprocess (clean peak-RSS figures, one thread each:
RAYON_NUM_THREADS=1 for the Rust peers) on the same text, in one run on one machine:

1. training on the first MB megabytes of the built-in corpus (the stdlib sources) to a vocab
   of VOCAB tokens: the same number of merges for everyone and the same pre-split pattern
   (basegpt's gpt4, exported as explicit ranges), so the peers do the same work;
2. encoding that text with one tokenizer (basegpt's), in basegpt, in tiktoken built from
   basegpt's ranks, and in HF tokenizers from basegpt's export; the ids are checked equal;
3. peak RSS while training on a ~30 MB file to a 32768 vocab, basegpt against HF.

The reference trainer is far too slow for a full run: it is timed for a few merges and
extrapolated linearly (its per-merge cost barely changes as the corpus compresses).

    python benchmarks/bench_tokenizer.py            # the full table (about 3 minutes)
    python benchmarks/bench_tokenizer.py --quick    # 1 MB, vocab 1024, no RSS part
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import random
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def peak_rss_mb() -> float:
    """This process's peak resident memory. VmHWM, not getrusage's ru_maxrss: the latter
    survives exec, so a child would report its parent's peak from before the fork."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024   # other systems


def corpus(mb: float) -> list[str]:
    from basegpt.corpus import builtin_corpus
    return list(builtin_corpus(int(mb * 1_000_000)))


def digest(items) -> str:
    return hashlib.sha256(json.dumps(items).encode()).hexdigest()[:12]


# ------------------------------------------------------------------------ jobs (subprocess)

def job_train(name: str, args: argparse.Namespace) -> dict:
    from basegpt.tokenizer.pretokenize import GPT4_TEMPLATE, render
    n_merges = args.vocab - 256
    source = [Path(args.file)] if args.file else corpus(args.mb)
    pattern = render(GPT4_TEMPLATE, "rust")
    base_rss = peak_rss_mb()
    start = time.perf_counter()
    if name.startswith("basegpt"):
        from basegpt import Tokenizer
        backend = name.split("-")[1]
        tok = Tokenizer(vocab_size=n_merges + 258)       # + <|endoftext|>, <|pad|>
        tok.train(source, backend=backend, progress=False)
        merges = [list(tok.vocab[a] + tok.vocab[b]) for a, b in tok.merges]
    elif name == "reference":
        # Time 1 merge and k merges: the difference is the cost of k - 1 merges, free of the
        # one-off splitting; the estimate is one-off cost + per-merge cost x n_merges.
        from basegpt.tokenizer.pretokenize import Splitter
        from basegpt.tokenizer.trainer import learn_merges
        times = []
        for k in (1, args.reference_merges):
            t0 = time.perf_counter()
            learn_merges(source, Splitter("gpt4"), k, backend="reference", progress=False)
            times.append(time.perf_counter() - t0)
        per_merge = (times[1] - times[0]) / (args.reference_merges - 1)
        return {"seconds": times[0] - per_merge + per_merge * n_merges, "estimated": True,
                "per_merge": per_merge, "rss_mb": peak_rss_mb(), "base_rss_mb": base_rss,
                "merges": None}
    elif name == "hf":
        from tokenizers import Regex, Tokenizer, models, pre_tokenizers, trainers
        hf = Tokenizer(models.BPE())
        hf.pre_tokenizer = pre_tokenizers.Sequence([
            pre_tokenizers.Split(Regex(pattern), behavior="isolated"),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])
        trainer = trainers.BpeTrainer(vocab_size=args.vocab, show_progress=False,
                                      initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
        if args.file:
            hf.train([args.file], trainer)
        else:
            hf.train_from_iterator(source, trainer)
        merges = None
    elif name == "rustbpe":
        import rustbpe
        tok = rustbpe.Tokenizer()
        tok.train_from_iterator(iter(source), args.vocab, pattern=pattern)
        merges = [list(b) for b, rank in sorted(tok.get_mergeable_ranks(), key=lambda x: x[1])
                  if rank >= 256]
    else:
        raise SystemExit(f"unknown job {name}")
    seconds = time.perf_counter() - start
    return {"seconds": seconds, "rss_mb": peak_rss_mb(), "base_rss_mb": base_rss,
            "merges": digest(merges) if merges is not None else None}


def job_encode(name: str, args: argparse.Namespace) -> dict:
    from basegpt import Tokenizer
    tok = Tokenizer.load(args.tokenizer)
    docs = corpus(args.mb)
    n_bytes = sum(len(d.encode()) for d in docs)
    if name == "basegpt":
        encode = tok.encode
    elif name == "basegpt-python":
        tok.use_c_encoder = False                    # force the pure-Python path
        encode = tok.encode
    elif name == "tiktoken":
        from basegpt.interop.tokenizers import to_tiktoken
        encode = to_tiktoken(tok).encode_ordinary
    elif name == "hf":
        from basegpt.interop.tokenizers import to_hf_tokenizer
        hf = to_hf_tokenizer(tok)
        def encode(text: str) -> list[int]:
            return hf.encode(text, add_special_tokens=False).ids
    else:
        raise SystemExit(f"unknown job {name}")
    start = time.perf_counter()
    ids = [encode(d) for d in docs]
    seconds = time.perf_counter() - start
    return {"seconds": seconds, "mb_per_s": n_bytes / seconds / 1e6, "ids": digest(ids),
            "tokens": sum(map(len, ids))}


# ------------------------------------------------------------------------ driver

def run_job(kind: str, name: str, extra: list[str]) -> dict:
    env = dict(os.environ, RAYON_NUM_THREADS="1", OMP_NUM_THREADS="1", TOKENIZERS_PARALLELISM="false")
    out = subprocess.run([sys.executable, __file__, "--job", kind, name, *extra], env=env,
                         capture_output=True, text=True)
    if out.returncode != 0:
        return {"error": out.stderr.strip().splitlines()[-1] if out.stderr else "failed"}
    return json.loads(out.stdout.strip().splitlines()[-1])


def write_big_file(path: Path, target_mb: float) -> None:
    """~target_mb of text: the stdlib, then its lines shuffled (seeded), until big enough."""
    docs = corpus(100)
    text = "".join(docs)
    parts, size, rng = [text], len(text.encode()), random.Random(0)
    lines = text.splitlines(keepends=True)
    while size < target_mb * 1e6:
        rng.shuffle(lines)
        block = "".join(lines)
        parts.append(block)
        size += len(block.encode())
    path.write_text("".join(parts), encoding="utf-8")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--mb", type=float, default=10)
    parser.add_argument("--vocab", type=int, default=4096, help="peers' vocab; basegpt +2 specials")
    parser.add_argument("--rss-mb", type=float, default=30)
    parser.add_argument("--rss-vocab", type=int, default=32768)
    parser.add_argument("--reference-merges", type=int, default=4,
                        help="merges the reference runs to estimate its per-merge cost (>= 2)")
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--job", nargs=2, metavar=("KIND", "NAME"))
    parser.add_argument("--file")
    parser.add_argument("--tokenizer")
    args = parser.parse_args()

    if args.job:
        kind, name = args.job
        result = (job_train if kind == "train" else job_encode)(name, args)
        print(json.dumps(result))
        return

    if args.quick:
        args.mb, args.vocab, args.reference_merges = 1, 1024, 3
    common = ["--mb", str(args.mb), "--vocab", str(args.vocab)]
    print(f"# tokenizer benchmark: {platform.processor() or platform.machine()}, "
          f"{os.cpu_count()} cores, Python {platform.python_version()}")
    try:
        from basegpt.tokenizer import _bpe  # noqa: F401
        print("# basegpt C extension: built")
    except ImportError:
        print("# basegpt C extension: NOT built (auto = python)")

    print(f"\n## Training: {args.mb:g} MB of the built-in corpus, {args.vocab - 256} merges, "
          "gpt4 split, one thread\n")
    print("| trainer | seconds | peak RSS MB | merges digest |")
    print("|---|---:|---:|---|")
    train = {}
    for name in ("basegpt-auto", "basegpt-python", "reference", "hf", "rustbpe"):
        extra = common + ["--reference-merges", str(args.reference_merges)]
        train[name] = r = run_job("train", name, extra)
        if "error" in r:
            print(f"| {name} | error: {r['error']} | | |")
            continue
        secs = (f"~{r['seconds']:.0f} (estimated: {r['per_merge']:.2f} s/merge)"
                if r.get("estimated") else f"{r['seconds']:.2f}")
        print(f"| {name} | {secs} | {r['rss_mb']:.0f} | {r['merges'] or '-'} |")
    fast = train["basegpt-auto"].get("seconds")
    if fast:
        for peer in ("reference", "basegpt-python", "hf", "rustbpe"):
            if "seconds" in train[peer]:
                print(f"\nbasegpt-auto vs {peer}: {train[peer]['seconds'] / fast:.2f}x "
                      f"({'faster' if train[peer]['seconds'] > fast else 'slower'})", end="")
        print()

    with tempfile.TemporaryDirectory() as tmp:
        from basegpt import Tokenizer
        tok_path = Path(tmp, "tok.json")
        Tokenizer(vocab_size=args.vocab).train(corpus(args.mb), progress=False).save(tok_path)
        print(f"\n## Encoding the same {args.mb:g} MB with basegpt's tokenizer "
              f"(vocab {args.vocab}), one thread\n")
        print("| encoder | seconds | MB/s | tokens | ids digest |")
        print("|---|---:|---:|---:|---|")
        enc = {}
        for name in ("basegpt", "basegpt-python", "tiktoken", "hf"):
            enc[name] = r = run_job("encode", name, common + ["--tokenizer", str(tok_path)])
            if "error" in r:
                print(f"| {name} | error: {r['error']} | | | |")
                continue
            print(f"| {name} | {r['seconds']:.2f} | {r['mb_per_s']:.2f} | {r['tokens']:,} | "
                  f"{r['ids']} |")
        digests = {r.get("ids") for r in enc.values() if "ids" in r}
        print(f"\nall encoders give identical ids: {len(digests) == 1}")

        if not args.quick:
            big = Path(tmp, "big.txt")
            write_big_file(big, args.rss_mb)
            size = big.stat().st_size / 1e6
            print(f"\n## Peak memory: training on a {size:.1f} MB file to vocab {args.rss_vocab}\n")
            print("| trainer | seconds | peak RSS MB | RSS before training MB |")
            print("|---|---:|---:|---:|")
            for name in ("basegpt-auto", "hf"):
                r = run_job("train", name, ["--file", str(big), "--vocab", str(args.rss_vocab)])
                if "error" in r:
                    print(f"| {name} | error: {r['error']} | | |")
                    continue
                print(f"| {name} | {r['seconds']:.1f} | {r['rss_mb']:.0f} | "
                      f"{r['base_rss_mb']:.0f} |")


if __name__ == "__main__":
    main()
