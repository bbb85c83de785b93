"""Candidate wording banks: independent phrasings of the same harmful and aligned acts.

The eval's validity across wording rests on one rule: training material (control data, the data
builders' actions) draws only from `train` banks, the eval scores only `eval` banks, and `house` is the
split's own family files (whose train and eval halves share a template family, so an eval on it
measures in-template transfer). A bank file `data/banks/<name>.yaml` maps each family to
`candidate_sets` (the same shape as a family file's) and optional `conditions` (phrases overlaid on
the family's, same keys). data/banks/banks.yaml lists the banks and what each is for.
"""

from __future__ import annotations

from functools import cache
from importlib import resources
from typing import Any

import yaml

from teachwhy.errors import UserError

HOUSE = "house"
HELDOUT = "heldout"  # every eval bank, taken in turn by variant (same prompts as `house`, new wording)
USES = ("eval", "train", "both")


@cache
def registry() -> dict[str, dict[str, Any]]:
    """{bank name: {'use': eval|train|both, 'about': text}} from data/banks/banks.yaml."""
    root = resources.files("teachwhy.scenarios").joinpath("data").joinpath("banks")
    data = yaml.safe_load(root.joinpath("banks.yaml").read_text(encoding="utf-8")) or {}
    banks = data.get("banks") or {}
    for name, entry in banks.items():
        if entry.get("use") not in USES:
            raise ValueError(f"data/banks/banks.yaml: bank '{name}' has use {entry.get('use')!r}; use one of "
                             f"{', '.join(USES)}")
    return banks


def choices(split: str) -> list[str]:
    """What `--wording` accepts on a split."""
    return names(split) + ([HELDOUT] if split == "eval" and eval_banks() else [])


def names(use: str | None = None) -> list[str]:
    """Bank names, `house` first; with `use`, only the banks usable on that split ('eval' or 'train')."""
    return [n for n, e in registry().items() if use is None or e["use"] in (use, "both")]


def eval_banks() -> list[str]:
    """Banks the eval scores and nothing trains on (held-out wording)."""
    return [n for n, e in registry().items() if e["use"] == "eval"]


def train_banks() -> list[str]:
    """Banks training material may draw from: `house` (the train split's own sets) and the `train` banks."""
    return names("train")


def check(name: str, split: str) -> None:
    """A bank may be rendered on a split only when its use allows it: an eval bank is never turned into
    training text, a train bank never scored."""
    reg = registry()
    if name == HELDOUT:
        if split != "eval" or not eval_banks():
            raise UserError(f"wording '{HELDOUT}' (every eval bank) applies to the eval split only")
        return
    if name not in reg:
        raise UserError(f"unknown wording bank '{name}': use one of {', '.join(reg)} "
                        "(teachwhy scenarios banks lists them)")
    use = reg[name]["use"]
    if use not in (split, "both"):
        raise UserError(f"wording bank '{name}' is {'an' if use == 'eval' else 'a'} {use} bank and cannot be used on "
                        f"the {split} split: "
                        f"{'eval banks are never trained on' if use == 'eval' else 'train banks are never scored'}; "
                        f"choose one of {', '.join(choices(split))}")


@cache
def load(name: str) -> dict[str, dict[str, Any]]:
    """{family: {'candidate_sets': [...], 'conditions': {...}}} of a bank other than `house`."""
    if name == HOUSE:
        raise ValueError("the house bank lives in each split's family files")
    root = resources.files("teachwhy.scenarios").joinpath("data").joinpath("banks")
    data = yaml.safe_load(root.joinpath(f"{name}.yaml").read_text(encoding="utf-8")) or {}
    return data


def resolve(wording: str, variant: int, slot: int = 0) -> tuple[str, int]:
    """(bank, variant within that bank) for a scenario variant: `heldout` spreads the scenarios over the
    eval banks in turn, by variant and by the condition's position `slot` in the factorial order (so
    variant 0 of the conditions alone already holds every eval bank); any other wording is one bank."""
    if wording != HELDOUT:
        return wording, variant
    held = eval_banks()
    return held[(variant + slot) % len(held)], variant // len(held)


def family_block(name: str, split: str, family: str, fam_data: dict[str, Any]) -> dict[str, Any]:
    """The candidate sets and condition overlay of one family under bank `name` on `split`."""
    if name == HOUSE:
        return {"candidate_sets": fam_data["candidate_sets"], "conditions": {}}
    check(name, split)
    block = load(name).get(family)
    if not block or not block.get("candidate_sets"):
        raise ValueError(f"data/banks/{name}.yaml has no candidate_sets for family '{family}'")
    return {"candidate_sets": block["candidate_sets"], "conditions": block.get("conditions") or {}}
