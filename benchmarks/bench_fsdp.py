"""Memory per process: DDP against FSDP (basegpt/sharding.py), 2 processes on the CPU (gloo).

Each strategy is its own torchrun job of --procs processes training the same model (default
~100M parameters: 14 pre-norm Llama-style blocks x 768, vocabulary 258, context 64) for
--steps steps of batch 1 x 64 tokens per process on random ids, fp32. Every process reports,
after its last step (gradients are freed then, set_to_none):

    weights + Adam   the bytes of the parameters and of the optimizer's state this process
                     holds (its rows under FSDP), counted from the tensors themselves
    peak RSS         the process's peak resident memory (getrusage), everything included:
                     the model built whole before it is sharded, gradients, activations,
                     torch itself

and the table shows each strategy's largest process and FSDP's ratio to DDP (issue target for
weights + Adam: <= 0.6x at 2 processes).

Peak RSS counts what glibc's malloc keeps after a free as well as what is live: by default it
serves large blocks from its heap once a few have been freed, and keeps the heap's freed pages
resident. The jobs therefore run with MALLOC_MMAP_THRESHOLD_=131072 (every block of 128 KiB or
more its own mapping, returned to the system when freed), so that peak RSS follows the live
memory; --malloc-default leaves glibc's defaults (then both strategies peak near the same RSS).

    python benchmarks/bench_fsdp.py                   # ~2 minutes, ~5 GB of RAM
    python benchmarks/bench_fsdp.py --malloc-default
    python benchmarks/bench_fsdp.py --blocks 2 --steps 2   # a smoke run
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import socket
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def worker(args: argparse.Namespace) -> None:
    """One process of a torchrun job: train, then report this process's memory as JSON."""
    import torch
    from torch.utils.data import Dataset

    from basegpt.model import B2lM
    from basegpt.sharding import is_dtensor
    from basegpt.train import TrainConfig, fit

    torch.set_num_threads(1)
    T = 64

    class RandomIds(Dataset):
        def __len__(self) -> int:
            return 64

        def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
            g = torch.Generator().manual_seed(i)
            ids = torch.randint(0, 258, (T + 1,), generator=g)
            return ids[:-1], ids[1:]

    torch.manual_seed(0)
    model = B2lM(vocab_size=258, n_embed=768, n_block=args.blocks, n_head=12, n_k=64, n_v=64,
                 n_ff=2048, n_context=T, norm_position="pre", norm="rmsnorm",
                 positional="rope", activation="swiglu", bias=False, tie_weights=True)
    n_params = model.num_parameters()
    held: dict[str, int] = {}

    def local_bytes(t: torch.Tensor) -> int:
        t = t.to_local() if is_dtensor(t) else t
        return t.numel() * t.element_size()

    def measure(record: dict) -> None:
        if record["step"] < args.steps:
            return
        params = list(model.parameters())
        held["weights"] = sum(local_bytes(p) for p in params)
        held["adam"] = sum(local_bytes(v) for slots in made[-1].state.values()
                           for v in slots.values() if isinstance(v, torch.Tensor))
        held["tokens_per_s"] = record["tokens_per_s"]

    import basegpt.train as train_module
    made: list = []
    real = train_module.make_optimizer

    def keep(model_, config, device):          # the optimizer fit builds, to count its state
        made.append(real(model_, config, device))
        return made[-1]
    train_module.make_optimizer = keep

    config = TrainConfig(max_steps=args.steps, batch_size=1, lr=1e-4, dtype="float32",
                         parallel=args.parallel, grad_clip=1.0)
    fit(model, RandomIds(), config=config, progress=False, on_step=measure)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024        # Linux: KiB
    print("RESULT " + json.dumps({"rank": int(os.environ.get("RANK", "0")),
                                  "parallel": args.parallel, "params": n_params,
                                  "peak_rss": peak, **held}), flush=True)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run_job(parallel: str, args: argparse.Namespace) -> list[dict]:
    cmd = [sys.executable, "-m", "torch.distributed.run", f"--nproc_per_node={args.procs}",
           f"--master_port={free_port()}", __file__, "--worker", "--parallel", parallel,
           "--blocks", str(args.blocks), "--steps", str(args.steps)]
    env = {**os.environ, "OMP_NUM_THREADS": "1",
           "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    if not args.malloc_default:
        env["MALLOC_MMAP_THRESHOLD_"] = "131072"
    with tempfile.TemporaryDirectory() as tmp:
        out = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=tmp)
    if out.returncode != 0:
        sys.exit(f"{parallel} job failed:\n{out.stderr[-3000:]}")
    return [json.loads(line[len("RESULT "):]) for line in out.stdout.splitlines()
            if line.startswith("RESULT ")]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--procs", type=int, default=2)
    p.add_argument("--blocks", type=int, default=14)
    p.add_argument("--steps", type=int, default=3)
    p.add_argument("--malloc-default", action="store_true",
                   help="leave glibc's malloc settings as they are (see above)")
    p.add_argument("--parallel", default="ddp", help=argparse.SUPPRESS)
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.worker:
        worker(args)
        return
    mb = 2 ** 20
    results = {parallel: run_job(parallel, args) for parallel in ("ddp", "fsdp")}
    n = results["ddp"][0]["params"]
    malloc = "glibc defaults" if args.malloc_default else "MALLOC_MMAP_THRESHOLD_=131072"
    print(f"{n:,} parameters, {args.procs} processes (gloo, CPU), fp32, {args.steps} steps, "
          f"malloc: {malloc}; each strategy's largest process:\n")
    print("| strategy | weights + Adam (MB) | peak RSS (MB) | tokens/s |")
    print("|---|---:|---:|---:|")
    worst = {}
    for parallel, ranks in results.items():
        held = max(r["weights"] + r["adam"] for r in ranks)
        rss = max(r["peak_rss"] for r in ranks)
        worst[parallel] = (held, rss)
        print(f"| {parallel} | {held / mb:,.0f} | {rss / mb:,.0f} | "
              f"{ranks[0]['tokens_per_s']:,.0f} |")
    (held_d, rss_d), (held_f, rss_f) = worst["ddp"], worst["fsdp"]
    print(f"\nFSDP / DDP: weights + Adam {held_f / held_d:.2f}x, peak RSS {rss_f / rss_d:.2f}x")


if __name__ == "__main__":
    main()
