"""Greedy decoding speed of a GPT-2-small model imported from Hugging Face format, against
transformers' own `generate` on the same weights and prompt, CPU, in one process.

    python benchmarks/bench_interop.py                       # 64 new tokens, 3 rounds
    python benchmarks/bench_interop.py --new-tokens 32 --rounds 1

Steps: transformers builds a random-init GPT2LMHeadModel of GPT-2 small's shape (124M
parameters: 12 x 768, 12 heads, context 1024, vocab 50257, tied head) and saves it with
save_pretrained, beside a byte-level BPE trained here with `tokenizers` (4,096 tokens; the model's
other rows become unused tokens); `basegpt.interop.hf.import_hf` turns the directory into
a run, which `load_run` loads. Both then continue the same prompt greedily for --new-tokens
tokens, each on its KV cache: basegpt with `generate_ids(temperature=0)`, transformers with
`generate(do_sample=False)`. The tokens must be identical (the run speaks HF's token ids);
each round times both, alternating, and the best round of each is reported (the machine may be
shared, and the minimum is the least disturbed measurement). Nothing is downloaded.
"""

from __future__ import annotations

import argparse
import os
import platform
import subprocess
import tempfile
import time
from pathlib import Path

import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from basegpt.checkpoint import load_run  # noqa: E402
from basegpt.corpus import builtin_corpus  # noqa: E402
from basegpt.generate import generate_ids  # noqa: E402
from basegpt.interop.hf import import_hf  # noqa: E402

PROMPT = "def greet(name):\n    \"\"\"Say hello to someone by name.\"\"\"\n    return f'Hello, {name}!'\n"


def build_hf_dir(path: Path) -> None:
    import tokenizers
    import transformers

    bpe = tokenizers.ByteLevelBPETokenizer()
    bpe.train_from_iterator(list(builtin_corpus(2_000_000)), vocab_size=4096, show_progress=False,
                            special_tokens=["<|endoftext|>"])
    transformers.PreTrainedTokenizerFast(tokenizer_object=bpe._tokenizer, eos_token="<|endoftext|>",
                                         bos_token="<|endoftext|>").save_pretrained(path)
    torch.manual_seed(0)
    config = transformers.GPT2Config(n_positions=1024, n_embd=768, n_layer=12, n_head=12,
                                     vocab_size=50257, bos_token_id=0, eos_token_id=0)
    transformers.GPT2LMHeadModel(config).save_pretrained(path)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--new-tokens", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    import transformers

    with tempfile.TemporaryDirectory() as tmp:
        hf_dir, run_dir = Path(tmp) / "hf", Path(tmp) / "run"
        build_hf_dir(hf_dir)
        start = time.perf_counter()
        import_hf(hf_dir, run_dir)
        import_s = time.perf_counter() - start
        run = load_run(run_dir)
        hf_model = transformers.GPT2LMHeadModel.from_pretrained(hf_dir).eval()
    model, n = run.model, args.new_tokens
    hf_model.generation_config.eos_token_id = None           # both run the full n tokens
    prompt = run.tokenizer.encode(PROMPT)
    hf_prompt = torch.tensor([prompt])                        # the run's ids are HF's ids

    def ours() -> list[int]:
        return generate_ids(model, [prompt], max_new_tokens=n, temperature=0)[0].ids

    def theirs() -> list[int]:
        with torch.inference_mode():
            out = hf_model.generate(hf_prompt, max_new_tokens=n, min_new_tokens=n,
                                    do_sample=False, pad_token_id=0)
        return out[0, hf_prompt.shape[1]:].tolist()

    ours(), theirs()                                          # warm-up: allocator, kernels
    times: dict[str, list[float]] = {"basegpt": [], "transformers": []}
    tokens = {}
    for _ in range(args.rounds):
        for name, fn in (("transformers", theirs), ("basegpt", ours)):
            start = time.perf_counter()
            tokens[name] = fn()
            times[name].append(time.perf_counter() - start)
    same = tokens["basegpt"] == tokens["transformers"]

    params = sum(p.numel() for p in model.parameters())
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
          f"torch threads {torch.get_num_threads()}, load average "
          f"{', '.join(f'{x:.1f}' for x in os.getloadavg())}")
    print(f"python {platform.python_version()}, torch {torch.__version__}, transformers "
          f"{transformers.__version__}, commit {_commit()}")
    print(f"model: GPT-2 small shape, {params / 1e6:.1f}M parameters, imported in {import_s:.1f} s; "
          f"prompt {len(prompt)} tokens, {n} new tokens, greedy, {args.rounds} rounds")
    print(f"identical tokens: {same}")
    print("| decoder | best s | tokens/s (best) | all rounds, s |")
    print("|---|---|---|---|")
    for name, ts in times.items():
        print(f"| {name} | {min(ts):.2f} | {n / min(ts):.1f} | {', '.join(f'{t:.2f}' for t in ts)} |")
    print(f"ratio basegpt / transformers tokens/s: {min(times['transformers']) / min(times['basegpt']):.2f}")
    if not same:
        raise SystemExit("the two decoders gave different tokens")


def _commit() -> str:
    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True,
                              text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


if __name__ == "__main__":
    main()
