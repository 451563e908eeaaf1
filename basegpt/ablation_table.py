"""The results of a comparison (basegpt/ablation.py): per variant and seed the final
validation bits per byte, curve and speed; the table compare.md prints, compare.json, and
compare.png (validation bits per byte against tokens, a band over seeds).

A variant's spread is the range (min to max) of its seeds' final validation bits per byte.
`verdict` calls a difference to the base that is no larger than the larger of the two ranges
"no clear difference": the seeds cannot tell the two apart. A run that diverged (non-finite
loss) has no final number: it is counted in the table's note and left out of the mean.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from basegpt._io import atomic_write_text

BUDGETS = {"tokens": "tokens seen", "flops": "training FLOPs",
           "minutes": "wall-clock minutes (machine-dependent)"}
SPREAD = "min-max over seeds"


@dataclass
class VariantResult:
    """One variant's numbers: its settings and size, and per seed its final validation bits
    per byte, curve and speed."""

    name: str
    overrides: dict[str, Any]
    params: int
    flops_per_token: int
    max_steps: int | None
    runs: list[dict[str, Any]] = field(default_factory=list)
    matched: dict[str, Any] = field(default_factory=dict)    # --match-params' n_ff
    aliases: list[str] = field(default_factory=list)         # variants with the same spec

    @property
    def label(self) -> str:
        """The table's name for the variant: "activation=swiglu (n_ff 341)", "base (same
        as positional=sinusoidal)"."""
        label = self.name
        if self.matched:
            label += " (" + ", ".join(f"{k} {v}" for k, v in self.matched.items()) + ")"
        if self.aliases:
            label += f" (same as {', '.join(self.aliases)})"
        return label

    @property
    def finished(self) -> list[dict[str, Any]]:
        """The runs that used their budget (not those that diverged)."""
        return [r for r in self.runs if not r.get("diverged")]

    @property
    def finals(self) -> list[float]:
        """Each finished seed's final validation bits per byte."""
        return [r["val_bpb"] for r in self.finished]

    @property
    def mean(self) -> float | None:
        """The mean of `finals`; None when every seed diverged."""
        return sum(self.finals) / len(self.finals) if self.finals else None

    @property
    def spread(self) -> tuple[float, float] | tuple[None, None]:
        """The lowest and highest of `finals`."""
        return (min(self.finals), max(self.finals)) if self.finals else (None, None)

    @property
    def tokens_per_s(self) -> float:
        """Training tokens per second, mean over seeds (evaluations excluded)."""
        return sum(r["tokens_per_s"] for r in self.runs) / len(self.runs)

    @property
    def tokens(self) -> int:
        """The tokens seen by the longest of the variant's runs."""
        return max(r["tokens"] for r in self.runs)

    @property
    def best_step(self) -> int | None:
        """The step of the lowest mean validation bits per byte over the finished seeds
        (steps that every one evaluated); None when every seed diverged."""
        curves = [{step: bpb for step, _, bpb in r["curve"]} for r in self.finished]
        if not curves:
            return None
        common = set.intersection(*(set(c) for c in curves))
        if not common:                      # a time budget: seeds evaluate at other steps
            return min(self.finished[0]["curve"], key=lambda p: p[2])[0]
        return min(sorted(common), key=lambda s: sum(c[s] for c in curves))

    @property
    def diverged_note(self) -> str:
        """"1 of 3 seeds diverged", or "" when none did."""
        n = len(self.runs) - len(self.finished)
        return f"{n} of {len(self.runs)} seeds diverged" if n else ""


def verdict(base: Sequence[float], other: Sequence[float]) -> str:
    """"no clear difference" where |mean(other) - mean(base)| is within the seed spread
    (the larger range, max - min, of the two), "clear" beyond it, "1 seed: no spread"
    where either has one seed. verdict([1.0, 1.2], [1.25, 1.3]) -> "no clear difference"."""
    if len(base) < 2 or len(other) < 2:
        return "1 seed: no spread"
    diff = sum(other) / len(other) - sum(base) / len(base)
    spread = max(max(base) - min(base), max(other) - min(other))
    return "no clear difference" if abs(diff) <= spread else "clear"


@dataclass
class CompareTable:
    """What compare() returns: one VariantResult per variant, the base first, and how they
    were compared. str() is the Markdown table compare.md holds."""

    variants: list[VariantResult]
    budget: tuple[str, float]
    seeds: int
    match_params: bool
    command: str | None = None
    out: Path | None = None

    @property
    def base(self) -> VariantResult:
        """The variant the others are compared with (the first)."""
        return self.variants[0]

    def rows(self) -> list[dict[str, Any]]:
        """The table's numbers, one dict per variant."""
        base = self.base
        rows = []
        for v in self.variants:
            low, high = v.spread
            both = v.mean is not None and base.mean is not None
            judged = "" if v is base or not both else verdict(base.finals, v.finals)
            rows.append({"variant": v.name, "label": v.label, "params": v.params,
                         "tokens": v.tokens, "tokens_per_s": v.tokens_per_s,
                         "flops_per_token": v.flops_per_token,
                         "val_bpb_mean": v.mean, "val_bpb_min": low, "val_bpb_max": high,
                         "best_step": v.best_step,
                         "diff_vs_base": v.mean - base.mean if both else None,
                         "verdict": "; ".join(x for x in (judged, v.diverged_note) if x)})
        return rows

    def to_dict(self) -> dict[str, Any]:
        """Everything compare.json holds: the command, the budget, every run's numbers."""
        kind, amount = self.budget
        return {"command": self.command, "budget": {"kind": kind, "amount": amount,
                                                    "unit": BUDGETS[kind],
                                                    "machine_dependent": kind == "minutes"},
                "seeds": self.seeds, "match_params": self.match_params, "spread": SPREAD,
                "base": self.base.name, "rows": self.rows(),
                "variants": [{"name": v.name, "overrides": v.overrides, "matched": v.matched,
                              "aliases": v.aliases, "params": v.params,
                              "flops_per_token": v.flops_per_token, "max_steps": v.max_steps,
                              "runs": v.runs} for v in self.variants]}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> CompareTable:
        """The table back from what to_dict() gave (compare.json)."""
        variants = [VariantResult(v["name"], v["overrides"], v["params"],
                                  v["flops_per_token"], v["max_steps"], v["runs"],
                                  v.get("matched", {}), v.get("aliases", []))
                    for v in d["variants"]]
        budget = (d["budget"]["kind"], d["budget"]["amount"])
        return cls(variants, budget, d["seeds"], d["match_params"], d.get("command"))

    def __str__(self) -> str:
        kind, amount = self.budget
        lines = [f"Budget: {_amount(amount)} {BUDGETS[kind]} per run; {self.seeds} seed(s) per "
                 f"variant; val bits/byte is the final validation, mean and range "
                 f"({SPREAD}); diff is against {self.base.name!r}.",
                 "", "| variant | params | tokens | tokens/s | FLOPs/token | val bits/byte "
                 "(min-max) | best step | diff vs base | |",
                 "|---|---:|---:|---:|---:|---|---:|---:|---|"]
        for r in self.rows():
            bpb = ("diverged" if r["val_bpb_mean"] is None else
                   f"{r['val_bpb_mean']:.4f} ({r['val_bpb_min']:.4f}-{r['val_bpb_max']:.4f})")
            diff = "" if r["diff_vs_base"] is None else f"{r['diff_vs_base']:+.4f}"
            best = "" if r["best_step"] is None else r["best_step"]
            lines.append(f"| {r['label']} | {r['params']:,} | {r['tokens']:,} | "
                         f"{r['tokens_per_s']:,.0f} | {r['flops_per_token']:,} | {bpb} | "
                         f"{best} | {diff} | {r['verdict']} |")
        if kind == "minutes":
            lines += ["", "A time budget depends on the machine: another one trains other "
                          "numbers of tokens."]
        if self.command:
            lines = [f"`{self.command}`", "", *lines]
        return "\n".join(lines) + "\n"


def _amount(amount: float) -> str:
    """A budget for people: 1,500,000 (not 1.5e+06), 2.5, 1e+13."""
    if float(amount).is_integer() and abs(amount) < 1e12:
        return f"{int(amount):,}"
    return f"{amount:g}"


def run_numbers(run_dir: Path, diverged: str | None = None) -> dict[str, Any]:
    """A run's numbers from its metrics.jsonl: final validation bits per byte, tokens seen,
    training seconds and speed, and the curve [(step, tokens, bpb)]. A run that `diverged`
    (the error's message) has val_bpb None and its curve so far."""
    from basegpt.train_state import read_metrics
    records = read_metrics(run_dir)
    curve = [(r["step"], r["tokens"], r["val_bpb"]) for r in records if "val_bpb" in r]
    if not curve and diverged is None:
        raise ValueError(f"{run_dir}: no validation bits per byte in metrics.jsonl; delete "
                         "the folder to train it again")
    last = records[-1] if records else {"step": 0, "tokens": 0, "seconds": 0.0}
    seconds = last.get("train_seconds") or last["seconds"]
    numbers = {"val_bpb": curve[-1][2] if diverged is None else None,
               "tokens": last["tokens"], "steps": last["step"], "train_seconds": seconds,
               "tokens_per_s": last["tokens"] / max(seconds, 1e-9), "curve": curve}
    if diverged is not None:
        numbers["diverged"] = diverged
    return numbers


def write_outputs(table: CompareTable, out: Path) -> None:
    """compare.json (every number), compare.md (the table) and compare.png (the curves)."""
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / "compare.json", json.dumps(table.to_dict(), indent=2) + "\n")
    atomic_write_text(out / "compare.md", "# Comparison\n\n" + str(table))
    plot_compare(table, out / "compare.png")


def redraw(folder: str | os.PathLike, out: str | os.PathLike | None = None) -> Path:
    """compare.png again (or `out`) from a comparison's compare.json, for `basegpt plot`."""
    path = Path(folder) / "compare.json"
    try:
        table = CompareTable.from_dict(json.loads(path.read_text(encoding="utf-8")))
    except (json.JSONDecodeError, KeyError, TypeError, UnicodeDecodeError) as error:
        raise ValueError(f"{path} is damaged ({type(error).__name__}: {error}); run the "
                         "comparison again to rewrite it") from None
    return plot_compare(table, Path(out) if out is not None else Path(folder) / "compare.png")


def plot_compare(table: CompareTable, out: Path) -> Path:
    """Validation bits per byte against tokens seen: one colour per variant, its mean over
    seeds as a line and the range over seeds as a band; on the right the same curves over
    the second half of the budget, where variants end close together, on their own scale."""
    from basegpt._optional import require
    from basegpt.plot import save_figure
    require("matplotlib", "drawing compare.png").use("Agg")
    import matplotlib.pyplot as plt
    fig, (whole, end) = plt.subplots(1, 2, figsize=(12, 5.5))
    half = max((v.tokens for v in table.variants), default=0) / 2
    tail: list[float] = []
    for i, v in enumerate(table.variants):
        runs = v.finished                               # a diverged run has no curve to end
        if not runs:
            continue
        n = min(len(r["curve"]) for r in runs)          # points every seed has
        tokens = [runs[0]["curve"][j][1] for j in range(n)]
        values = [[r["curve"][j][2] for r in runs] for j in range(n)]
        # Ten colours, then the same ten dashed: a big grid needs more than ten lines.
        colour, style = f"C{i % 10}", "o-" if i < 10 else "s--"
        for ax in (whole, end):
            ax.plot(tokens, [sum(p) / len(p) for p in values], style, color=colour,
                    markersize=3, label=f"{v.label}, {v.params:,} params")
            if len(runs) > 1:
                ax.fill_between(tokens, [min(p) for p in values], [max(p) for p in values],
                                color=colour, alpha=0.2, linewidth=0)
        tail += [x for t, p in zip(tokens, values) if t >= half for x in p]
    if tail:
        low, high = min(tail), max(tail)
        pad = (high - low) * 0.05 or 0.01
        end.set_xlim(left=half)
        end.set_ylim(low - pad, high + pad)
    kind, amount = table.budget
    for ax in (whole, end):
        ax.set_xlabel("tokens seen")
        ax.grid(alpha=0.3)
    whole.set_ylabel("validation bits per byte")
    whole.set_title(f"{_amount(amount)} {BUDGETS[kind]} per run, {table.seeds} seed(s): "
                    f"mean, band = {SPREAD}", fontsize=10)
    end.set_title("the second half, closer", fontsize=10)
    handles, labels = whole.get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=3, fontsize=8, frameon=False)
    fig.tight_layout(rect=(0, 0.05 + 0.035 * math.ceil(len(labels) / 3), 1, 1))
    return save_figure(fig, out)
