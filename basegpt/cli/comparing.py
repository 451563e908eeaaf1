"""`basegpt compare`: train variants of one spec under an equal budget, several seeds each,
and print the table (basegpt/ablation.py does the work)."""

from __future__ import annotations

import argparse
import shlex
from pathlib import Path

from basegpt.cli._common import _log
from basegpt.cli.training import _add_spec_flags, _check_folder_path, _overrides


def _add_compare(sub: argparse._SubParsersAction, preset: str) -> None:
    p = sub.add_parser(
        "compare", help="ablation lab: train variants under one budget, tabulate val bits/byte",
        description="Train the base spec (--preset, --config, flags as for `train`) and each "
                    "variant under the same\nbudget, data, tokenizer and validation split, "
                    "--seeds times each, one run directory per\n(variant, seed) under --out; "
                    "then write compare.json, compare.md and compare.png there\nand print the "
                    "table. Run it again to resume: finished runs are kept.",
        epilog="examples:\n"
               "  basegpt compare --preset seed --vary positional=sinusoidal,rope --seeds 3\n"
               "  basegpt compare --preset seed --vary norm_position=post,pre "
               "--vary norm=layernorm,rmsnorm\n"
               "  basegpt compare --preset seed --grid grid.toml --budget-flops 1e13 "
               "--match-params",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    what = p.add_argument_group("the comparison")
    what.add_argument("--vary", action="append", default=[], metavar="FIELD=A,B,...",
                      help="a ModelConfig or TrainConfig field and its values; several --vary "
                           "flags compare every combination, beside the base spec ('base')")
    what.add_argument("--grid", type=Path, default=None, metavar="FILE",
                      help="named variants from a TOML file: [variants.NAME] tables of "
                           "overrides, and `base = \"NAME\"` (optional)")
    what.add_argument("--seeds", type=int, default=1, help="runs per variant (default 1)")
    budget = what.add_mutually_exclusive_group()
    budget.add_argument("--budget-tokens", type=int, default=None, metavar="N",
                        help="tokens each run trains on (the default budget, 1,048,576)")
    budget.add_argument("--budget-flops", type=float, default=None, metavar="F",
                        help="training FLOPs each run spends (6N + attention per token)")
    budget.add_argument("--budget-minutes", type=float, default=None, metavar="M",
                        help="wall-clock minutes each run trains (machine-dependent)")
    what.add_argument("--match-params", action="store_true",
                      help="scale each variant's n_ff to within 2%% of the base's parameters")
    what.add_argument("--jobs", type=int, default=None, metavar="N",
                      help="runs at once, in processes of one thread each (default: one per "
                           "CPU core when training on the CPU, else 1; 1 = one at a time "
                           "with all threads)")
    what.add_argument("--out", type=Path, default=Path("runs/compare"),
                      help="folder for the runs and the results (default runs/compare)")
    what.add_argument("--quiet", action="store_true", help="no progress bar or log")
    _add_spec_flags(p, preset)
    p.set_defaults(run=_run_compare)


def _run_compare(args: argparse.Namespace) -> int:
    from basegpt.ablation import DEFAULT_BUDGET, FIXED_TRAIN, compare, load_grid, vary
    from basegpt.recipe import load_config_file, merge_specs
    overrides = _overrides(args)
    for name in FIXED_TRAIN:
        if name in overrides["train"]:
            raise ValueError(f"--{name.replace('_', '-')}: {FIXED_TRAIN[name]}")
    if bool(args.vary) == (args.grid is not None):
        raise ValueError("give the variants with --vary FIELD=A,B (one or more) or with "
                         "--grid FILE.toml, not both and not neither")
    variants, base = load_grid(args.grid) if args.grid is not None else (vary(args.vary), None)
    budget = (("flops", args.budget_flops) if args.budget_flops is not None
              else ("minutes", args.budget_minutes) if args.budget_minutes is not None
              else ("tokens", args.budget_tokens) if args.budget_tokens is not None
              else DEFAULT_BUDGET)
    spec = merge_specs(load_config_file(args.config) if args.config else {}, overrides)
    _check_folder_path(args.out, "--out")
    command = "basegpt " + shlex.join(args.argv)
    table = compare(variants, spec=spec, preset=args.preset, base=base, seeds=args.seeds,
                    budget=budget, out=args.out, match_params=args.match_params,
                    jobs=args.jobs, progress=not args.quiet, command=command,
                    log=(lambda m: None) if args.quiet else _log)
    print(table)
    print(f"wrote {args.out / 'compare.json'}, {args.out / 'compare.md'}, "
          f"{args.out / 'compare.png'}")
    return 0
