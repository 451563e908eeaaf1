"""Generation benchmark: decode tokens/s with and without the KV cache, against Hugging Face.

For each model size and each number of new tokens N (batch 1, greedy, a 16-token prompt):

    basegpt, KV cache      generate_ids(model, prompt, max_new_tokens=N, temperature=0)
                           (one-token steps on basegpt/fast/decode.py's DecodeStep)
    basegpt, modules       the same with fast_step=False (every step through model.forward)
    basegpt, no cache      the same with use_cache=False (every step reruns the whole context)
    HF transformers        GPT2LMHeadModel(GPT2Config of the same size, random init).generate(
                               do_sample=False, max_new_tokens=N, min_new_tokens=N)

tokens/s = N / wall time of the whole call (prefill included; the prompt is short). "Matrix work
alone" times just the step's matrix-vector products (every weight matrix times one vector, N
times) in torch's F.linear, and again in numpy's matmul: the ceilings of a batch-1 decoder of
that size that multiplies with torch's BLAS (as HF's GPT-2 and basegpt's modules do) or with
numpy's (as DecodeStep does on a CPU in float32 with one torch thread, OpenBLAS held to one
thread; with more torch threads it multiplies with torch). Each
figure is the best of --repeats runs after one warm-up run, basegpt and HF taking turns (the
no-cache path at N >= 256 runs once: it is slow, and its spread is small). Both models are
float32 (or --dtype), eval mode, random weights, on the same device in the same process, with
the same torch thread count (--threads; default 1: at batch 1 the matrices are small, and on
a shared machine one thread gives stable figures). Sizes:

    seed:   4 blocks x 128 wide, 4 heads (n_k = n_v = 32), n_ff 256,  vocab 4096, n_context 1024
    larger: 6 blocks x 256 wide, 8 heads (n_k = n_v = 32), n_ff 1024, vocab 4096, n_context 1024

GPT-2 blocks are pre-norm with GELU and learned positions; the basegpt models use the same
(pre-norm, GELU, learned positions, weight tying like GPT-2) so both do the same arithmetic.

    python benchmarks/bench_generate.py                  # the full table, CPU (7-10 minutes)
    python benchmarks/bench_generate.py --quick          # N = 64 only
    python benchmarks/bench_generate.py --sizes larger --repeats 6   # one size, more rounds
    python benchmarks/bench_generate.py --device cuda
    python benchmarks/bench_generate.py --layouts        # why B2lM stores weights (in, out)
    python benchmarks/bench_generate.py --dtype bfloat16 # both models' weights in bf16
"""

from __future__ import annotations

import argparse
import platform
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from basegpt.config import ModelConfig  # noqa: E402
from basegpt.generate import generate_ids  # noqa: E402
from basegpt import B2lM  # noqa: E402  (laid out as users get it: basegpt.fast)
from basegpt.fast.decode import numpy_blas_threads, numpy_products  # noqa: E402

VOCAB, N_CONTEXT, PROMPT_LEN = 4096, 1024, 16
SIZES = {
    "seed 4x128": dict(n_block=4, n_embed=128, n_head=4, n_ff=256),
    "larger 6x256": dict(n_block=6, n_embed=256, n_head=8, n_ff=1024),
}


def basegpt_model(size: dict, device: str, dtype: torch.dtype = torch.float32) -> B2lM:
    cfg = ModelConfig(vocab_size=VOCAB, n_context=N_CONTEXT, n_k=32, n_v=32, norm_position="pre",
                      activation="gelu", positional="learned", tie_weights=True, **size)
    return B2lM(cfg).to(device, dtype).eval()


def hf_model(size: dict, device: str, dtype: torch.dtype = torch.float32):
    from transformers import GPT2Config, GPT2LMHeadModel
    cfg = GPT2Config(vocab_size=VOCAB, n_positions=N_CONTEXT, n_embd=size["n_embed"],
                     n_layer=size["n_block"], n_head=size["n_head"], n_inner=size["n_ff"],
                     bos_token_id=0, eos_token_id=0, pad_token_id=0)
    return GPT2LMHeadModel(cfg).to(device, dtype).eval()


def sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def best_times(fns, repeats: int, device: str) -> list[float]:
    """Best wall time of each function over `repeats` rounds, after one warm-up round. The
    functions take turns within each round, so a burst of load from elsewhere on the machine
    hits all of them alike instead of one contender's whole measurement."""
    for fn in fns:
        fn()                                                # warm-up: allocator, kernels
    best = [float("inf")] * len(fns)
    for _ in range(repeats):
        for i, fn in enumerate(fns):
            sync(device)
            start = time.perf_counter()
            fn()
            sync(device)
            best[i] = min(best[i], time.perf_counter() - start)
    return best


def matrix_work(model: B2lM, device: str, in_numpy: bool = False):
    """A function doing only the matrix-vector products of one decoding step, n times: every
    weight matrix of the model (and the head) applied to one token's vector, as a batch-1 step
    must, with no attention, norms, Python model code or sampling. Its tokens/s is the ceiling
    of a batch-1 decoder of this size on this machine in the model's dtype, multiplying in
    torch's F.linear, or with in_numpy in numpy's matmul on one OpenBLAS thread (as DecodeStep)."""
    linears = [m for m in model.modules() if isinstance(m, torch.nn.Linear)]
    if not any(m.weight is model.tok_emb.weight for m in linears):
        linears.append(model.lm_head)
    dtype = model.tok_emb.weight.dtype
    inputs = {m.in_features: torch.randn(1, m.in_features, device=device, dtype=dtype)
              for m in linears}
    if in_numpy:
        pairs = [(inputs[m.in_features].numpy(), m.weight.detach().t().numpy()) for m in linears]
        set_threads = numpy_blas_threads()

        def in_numpy_fn(n: int) -> None:
            before = set_threads(1)
            for _ in range(n):
                for x, w in pairs:
                    np.matmul(x, w)
            set_threads(before)
        return in_numpy_fn

    def fn(n: int) -> None:
        with torch.inference_mode():
            for _ in range(n):
                for m in linears:
                    torch.nn.functional.linear(inputs[m.in_features], m.weight, m.bias)
    return fn


def layouts(repeats: int) -> None:
    """Batch-1 matrix-vector products over GPT-2 small's 48 block matrices (~340 MB, so every
    pass streams them from memory), with the weights stored (out, in) as F.linear's default and
    (in, out) as B2lM keeps them (model/b2lm.py: store_transposed). Prints ms per pass."""
    shapes = [(3 * 768, 768), (768, 768), (3072, 768), (768, 3072)] * 12      # (out, in)
    rows = [torch.randn(o, i) for o, i in shapes]
    cols = [w.t().contiguous().t() for w in rows]                          # same values
    x = {768: torch.randn(1, 768), 3072: torch.randn(1, 3072)}
    for name, weights in (("(out, in)", rows), ("(in, out)", cols)):
        def one_pass() -> None:
            for w in weights:
                torch.nn.functional.linear(x[w.shape[1]], w)
        (best,) = best_times([one_pass], repeats, "cpu")
        print(f"weights stored {name}: {best * 1e3:.1f} ms a pass over 48 GPT-2-small matrices")


def run(args: argparse.Namespace) -> list[tuple]:
    torch.manual_seed(0)
    rows = []
    dtype = getattr(torch, args.dtype)
    for name, size in SIZES.items():
        if name.split()[0] not in args.sizes:
            continue
        ours, theirs = basegpt_model(size, args.device, dtype), hf_model(size, args.device, dtype)
        prompt = torch.randint(1, VOCAB, (1, PROMPT_LEN), device=args.device)
        for n in args.new_tokens:
            def cached():
                out = generate_ids(ours, prompt, max_new_tokens=n, temperature=0)
                assert len(out[0].ids) == n, "no early stop: no eot given"

            def modules():
                generate_ids(ours, prompt, max_new_tokens=n, temperature=0, fast_step=False)

            def uncached():
                generate_ids(ours, prompt, max_new_tokens=n, temperature=0, use_cache=False)

            def hf():
                with torch.inference_mode():
                    out = theirs.generate(prompt, attention_mask=torch.ones_like(prompt),
                                          do_sample=False, max_new_tokens=n, min_new_tokens=n)
                assert out.shape[1] == PROMPT_LEN + n, "HF generated fewer tokens"

            floors = [matrix_work(ours, args.device)]
            if numpy_products(ours):
                floors.append(matrix_work(ours, args.device, in_numpy=True))
            t_cache, t_mod, t_hf, *t_mat = best_times(
                [cached, modules, hf, *(lambda f=f: f(n) for f in floors)], args.repeats, args.device)
            (t_none,) = best_times([uncached], args.repeats if n < 256 else 1, args.device)
            mat, mat_np = n / t_mat[0], (n / t_mat[1] if len(t_mat) > 1 else None)
            row = (name, n, n / t_cache, n / t_mod, n / t_none, n / t_hf, mat, mat_np)
            rows.append(row)
            print(f"{name:14s} N={n:4d}  cache {row[2]:8.0f} tok/s  modules {row[3]:7.0f}  "
                  f"no cache {row[4]:7.0f}  HF {row[5]:7.0f}  matrix work alone {mat:7.0f} "
                  f"(torch) {mat_np or 0:7.0f} (numpy)", file=sys.stderr, flush=True)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--new-tokens", type=int, nargs="+", default=[64, 256, 512])
    parser.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    parser.add_argument("--quick", action="store_true", help="N = 64 only")
    parser.add_argument("--sizes", nargs="+", choices=[n.split()[0] for n in SIZES],
                        default=[n.split()[0] for n in SIZES], help="model sizes (default both)")
    parser.add_argument("--dtype", choices=["float32", "bfloat16"], default="float32",
                        help="weights and cache of both models (default float32)")
    parser.add_argument("--layouts", action="store_true",
                        help="only time batch-1 products with weights stored (out, in) vs (in, out)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if args.layouts:
        layouts(max(args.repeats, 5))
        return
    if args.quick:
        args.new_tokens = [64]
    import transformers
    rows = run(args)
    try:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT,
                                capture_output=True, text=True).stdout.strip()
    except OSError:
        commit = "?"
    print(f"\nPython {platform.python_version()}, torch {torch.__version__}, numpy "
          f"{np.__version__}, transformers "
          f"{transformers.__version__}, {torch.get_num_threads()} threads, device {args.device}, "
          f"{args.dtype}, "
          f"commit {commit}\n")
    print("| model | new tokens | basegpt KV cache (tok/s) | modules only (tok/s) | "
          "basegpt no cache (tok/s) | cache speed-up | HF generate (tok/s) | basegpt / HF | "
          "matrix work alone, torch / numpy (tok/s) |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for name, n, cache, mod, none, hf, mat, mat_np in rows:
        in_numpy = "—" if mat_np is None else f"{mat_np:,.0f}"
        print(f"| {name} | {n} | {cache:,.0f} | {mod:,.0f} | {none:,.0f} | {cache / none:.1f}x | "
              f"{hf:,.0f} | {cache / hf:.2f}x | {mat:,.0f} / {in_numpy} |")


if __name__ == "__main__":
    main()
