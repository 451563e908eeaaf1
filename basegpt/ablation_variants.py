"""The variants of a comparison (basegpt/ablation.py): `--vary` flags and grid files made
into named sets of overrides, each checked against the configs before anything trains.

    vary(["norm=layernorm,rmsnorm"])  ->  [Variant("norm=layernorm", {"norm": "layernorm"}),
                                           Variant("norm=rmsnorm", {"norm": "rmsnorm"})]
"""

from __future__ import annotations

import difflib
import itertools
import json
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from basegpt.config import ModelConfig, TrainConfig
from basegpt.recipe import check_spec, load_config_file, merge_specs

BASE = "base"

MODEL_FIELDS = tuple(f.name for f in fields(ModelConfig) if f.name != "vocab_size")
FIXED_TRAIN = {"seed": "seeds are the compare's own (seeds=N: 0..N-1)",
               "max_steps": "the budget is the compare's own (--budget-tokens/-flops/-minutes)",
               "epochs": "the budget is the compare's own (--budget-tokens/-flops/-minutes)",
               "max_minutes": "the budget is the compare's own (--budget-minutes)"}
TRAIN_FIELDS = tuple(f.name for f in fields(TrainConfig) if f.name not in FIXED_TRAIN)
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._=,+-]*$")   # a variant's folder name


@dataclass(frozen=True)
class Variant:
    """One arm of a comparison: a name (its folder under OUT) and overrides of the base
    spec, e.g. Variant("rope", {"positional": "rope", "lr": 3e-3})."""

    name: str
    overrides: dict[str, Any] = field(default_factory=dict)


# ------------------------------------------------------------------------ variants

def vary(items: Sequence[str]) -> list[Variant]:
    """The cartesian product of `--vary FIELD=a,b,c` flags, one Variant each, named after
    its choices: vary(["norm=layernorm,rmsnorm", "lr=1e-3"]) -> "norm=layernorm,lr=1e-3" and
    "norm=rmsnorm,lr=1e-3". Values read as JSON where they parse (3, 1e-3, true, null),
    else as text ("rope"); "none" is None unless the field has a choice "none"."""
    axes: list[list[tuple[str, Any, str]]] = []
    seen: set[str] = set()
    for item in items:
        name, eq, values = item.partition("=")
        name = name.strip()
        if not eq or not name or not values.strip():
            raise ValueError(f"--vary {item!r}: write FIELD=VALUE[,VALUE...], e.g. "
                             "--vary positional=sinusoidal,rope")
        if name in seen:
            raise ValueError(f"--vary names {name!r} twice; give all its values in one flag, "
                             f"e.g. --vary {name}=a,b")
        seen.add(name)
        _section(name, f"--vary {item}")
        axes.append([(name, _parse_value(name, v.strip()), v.strip())
                     for v in values.split(",")])
    return [Variant(",".join(f"{n}={text}" for n, _, text in combo),
                    {n: value for n, value, _ in combo})
            for combo in itertools.product(*axes)]


def _parse_value(name: str, text: str) -> Any:
    """A --vary value: a choice of the field's Literal as it is, else JSON, else text."""
    if text in _choices(name):
        return text
    if text.lower() == "none":
        return None
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def _choices(name: str) -> set[str]:
    """The text choices of a field's Literal type (`positional` -> {"none", "rope", ...})."""
    from typing import Literal, get_args, get_origin, get_type_hints
    for cls in (ModelConfig, TrainConfig):
        hint = get_type_hints(cls).get(name)
        if hint is not None:
            members = (hint, *get_args(hint))            # Literal[...] or Literal[...] | None
            return {str(c) for m in members if get_origin(m) is Literal for c in get_args(m)}
    return set()


def load_grid(path: str | os.PathLike) -> tuple[list[Variant], str | None]:
    """Named variants from a TOML (or JSON) file, and the name of the base if it names one:

        base = "post"                  # optional; else a variant "base" with no overrides
        [variants.post]
        norm_position = "post"
        [variants.pre-rope]
        norm_position = "pre"
        positional = "rope"
        blocks = [{}, {n_head = 2}]    # layer-wise overrides, one table per block
    """
    grid = load_config_file(path) if Path(path).suffix in (".toml", ".json") else None
    if grid is None:
        raise ValueError(f"{path}: a grid is a .toml or .json file")
    unknown = set(grid) - {"base", "variants"}
    if unknown:
        raise ValueError(f"{path}: unknown key(s) {', '.join(sorted(unknown))}; a grid has "
                         "`base = \"NAME\"` (optional) and one [variants.NAME] table each")
    table = grid.get("variants")
    if not isinstance(table, dict) or not table:
        raise ValueError(f"{path}: no variants; add one [variants.NAME] table of overrides "
                         "per variant")
    variants = []
    for name, overrides in table.items():
        if not isinstance(overrides, dict):
            raise ValueError(f"{path}: variants.{name} must be a table of overrides, e.g. "
                             f"[variants.{name}] positional = \"rope\"")
        variants.append(Variant(name, dict(overrides)))
    base = grid.get("base")
    if base is not None and base not in table:
        raise ValueError(f"{path}: base = {base!r} names no variant (variants: "
                         f"{', '.join(table)})")
    return variants, base


def _section(name: str, where: str) -> str:
    """"model" or "train" for a field a variant may set; a ValueError naming it otherwise."""
    if name in MODEL_FIELDS:
        return "model"
    if name in TRAIN_FIELDS:
        return "train"
    if name in FIXED_TRAIN:
        raise ValueError(f"{where}: {name} cannot vary: {FIXED_TRAIN[name]}")
    near = difflib.get_close_matches(name, MODEL_FIELDS + TRAIN_FIELDS, n=1)
    raise ValueError(f"{where}: unknown field {name!r}"
                     + (f"; did you mean {near[0]!r}?" if near else "")
                     + " (a variant sets ModelConfig or TrainConfig fields)")


def variant_spec(base: dict[str, Any], variant: Variant) -> dict[str, Any]:
    """The base spec with the variant's overrides, each in its section, checked by the
    configs themselves: a bad field or value is a ValueError naming the variant."""
    where = f"variant {variant.name!r}"
    split: dict[str, dict[str, Any]] = {"model": {}, "train": {}}
    for name, value in variant.overrides.items():
        split[_section(name, where)][name] = value
    spec = merge_specs(base, split)
    try:
        check_spec(spec)
    except (ValueError, TypeError) as error:
        raise ValueError(f"{where}: {error}") from None
    return spec


def check_variants(base: dict[str, Any], variants: Sequence[Variant],
                   base_name: str | None = None) -> list[Variant]:
    """The variants to run, the base first: `base_name`'s, else a Variant("base") with no
    overrides. Duplicate or unusable names and bad overrides are ValueErrors."""
    if not variants and base_name is None:
        raise ValueError("nothing to compare: give variants (--vary FIELD=a,b or --grid FILE)")
    names: set[str] = set()
    for v in variants:
        if v.name in names:
            raise ValueError(f"variant {v.name!r} is named twice; give each variant its own "
                             "name (and each --vary value once)")
        if not _NAME.match(v.name):
            raise ValueError(f"variant {v.name!r}: a name becomes a folder; use letters, "
                             "digits and . _ = , + -")
        names.add(v.name)
        variant_spec(base, v)
    if base_name is None:
        if BASE in names:
            raise ValueError(f"variant {BASE!r} is the base spec's own name; rename it, or "
                             f"name it the base (grid: base = \"{BASE}\")")
        return [Variant(BASE), *variants]
    first = next(v for v in variants if v.name == base_name)
    return [first, *(v for v in variants if v.name != base_name)]
