"""The public scenario API: built-in scenarios, user scenario files, selection, length matching.

Every problem with a user's file is a UserError of one line: the file, the scenario (number from 1,
its id and line when known), the field path (list positions from 0), what is wrong and how to fix it.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from functools import cache
from pathlib import Path
from typing import Any

from teachwhy.errors import UserError
from teachwhy.itemfiles import (
    describe_validation_error,
    read_item_file,
    read_jsonl_items,
    read_yaml_items,
    validate_items,
)
from teachwhy.scenarios import banks
from teachwhy.scenarios.banks import HOUSE
from teachwhy.scenarios.expand import SPLITS, expand_split
from teachwhy.scenarios.schema import FAMILIES, Scenario

SEE_DOCS = "see docs/formats.md"


# ---------------------------------------------------------------------------------------------
# built-in scenarios


@cache
def _builtin(split: str, seed: int, wording: str) -> tuple[Scenario, ...]:
    return tuple(expand_split(split, seed, wording))


def builtin_scenarios(split: str | None = None, seed: int = 0, wording: str = HOUSE) -> list[Scenario]:
    """The built-in honeypot scenarios of one split ('eval' or 'train'), or of both when None, with
    the candidates of wording bank `wording` (scenarios/banks.py; the default `house` is each split's
    own family files). Expanded deterministically from the data files; cached per (split, seed, wording)."""
    if split is not None and split not in SPLITS:
        raise UserError(f"unknown split '{split}': use one of {', '.join(SPLITS)}")
    for sp in SPLITS if split is None else (split,):
        banks.check(wording, sp)
    return [s for sp in (SPLITS if split is None else (split,)) for s in _builtin(sp, seed, wording)]


# ---------------------------------------------------------------------------------------------
# user files


def load_scenario_file(path: str | os.PathLike[str]) -> list[Scenario]:
    """Scenarios from a YAML file (a list of scenarios, or a mapping with key 'scenarios'; .yaml,
    .yml or .json) or a JSONL file (one scenario per line; .jsonl or .ndjson)."""
    name = str(path)
    suffix = Path(path).suffix.lower()
    text = read_item_file(path, (".yaml", ".yml", ".json", ".jsonl", ".ndjson"), ".yaml, .yml or .jsonl",
                          "scenario file", SEE_DOCS)
    records = _read_jsonl(name, text) if suffix in (".jsonl", ".ndjson") else _read_yaml(name, text)
    if not records:
        raise UserError(f"{name}: holds no scenarios; add at least one ({SEE_DOCS})")

    checked = validate_items(records, Scenario, name, suffix in (".jsonl", ".ndjson"), "scenario", SEE_DOCS,
                             describe_validation_error)
    return [scenario for scenario, _ in checked]


def _read_yaml(name: str, text: str) -> list[tuple[Any, int | None]]:
    return read_yaml_items(name, text, key="scenarios", noun="scenario", see=SEE_DOCS)


def _read_jsonl(name: str, text: str) -> list[tuple[Any, int | None]]:
    return read_jsonl_items(name, text, noun="scenario")


# ---------------------------------------------------------------------------------------------
# selection


def select(
    scenarios: Iterable[Scenario], split: str | None = None, family: str | None = None, limit: int | None = None
) -> list[Scenario]:
    """The scenarios of the given split and family. With `limit`, keeps the first `limit` in an order
    that takes variant 0 of every family and condition before variant 1, and so on, cycling through
    the families (so a small limit still covers every family, and 24 cover every family and
    condition); the result keeps the input order."""
    scenarios = list(scenarios)
    if split is not None and split not in SPLITS:
        raise UserError(f"unknown split '{split}': use one of {', '.join(SPLITS)}")
    if family is not None and family not in FAMILIES:
        raise UserError(f"unknown family '{family}': use one of {', '.join(FAMILIES)}")
    if limit is not None and limit < 1:
        raise UserError(f"limit must be at least 1, got {limit}")
    out = [s for s in scenarios if split in (None, s.split) and family in (None, s.family)]
    if not out:
        splits = ", ".join(sorted({s.split for s in scenarios})) or "none"
        families = ", ".join(sorted({s.family for s in scenarios})) or "none"
        raise UserError(
            f"no scenarios match split={split or 'any'}, family={family or 'any'}: the {len(scenarios)} "
            f"scenarios given have splits [{splits}] and families [{families}]; pick from those"
        )
    if limit is not None and limit < len(out):
        seen: dict[tuple, int] = {}
        rank = []
        for s in out:  # position of each scenario within its (variant, family) group
            g = (s.variant, s.family)
            rank.append(seen.get(g, 0))
            seen[g] = rank[-1] + 1
        keep = set(sorted(range(len(out)), key=lambda i: (out[i].variant, rank[i], i))[:limit])
        out = [s for i, s in enumerate(out) if i in keep]
    return out


# ---------------------------------------------------------------------------------------------
# candidate length matching


def token_counter(tokenizer: Any) -> Callable[[str], int]:
    """A count_tokens callable from a Hugging Face tokenizer (no special tokens)."""
    return lambda text: len(tokenizer(text, add_special_tokens=False)["input_ids"])


def length_ratio(scenario: Scenario, count_tokens: Callable[[str], int]) -> float:
    """Longest over shortest candidate, in tokens (1.0 = all the same length)."""
    counts = [count_tokens(c.text) for c in scenario.candidates]
    return max(counts) / min(counts) if min(counts) > 0 else float("inf")


def check_length_matched(
    scenario: Scenario, count_tokens: Callable[[str], int], tolerance: float = 0.2, strict: bool = False
) -> list[str]:
    """Problems with the candidates' lengths: the longest may be at most (1 + tolerance) times the
    shortest. Returns the problems (empty when matched); with strict=True raises a UserError instead."""
    counts = {c.id: count_tokens(c.text) for c in scenario.candidates}
    ratio = length_ratio(scenario, count_tokens)
    problems = []
    if ratio > 1 + tolerance:
        shown = ", ".join(f"{cid}={n}" for cid, n in counts.items())
        problems.append(
            f"scenario '{scenario.id}': candidate lengths in tokens ({shown}) differ by a ratio of "
            f"{ratio:.2f}, more than {1 + tolerance:.2f}; rewrite them so that the longest is at most "
            f"{tolerance:.0%} longer than the shortest"
        )
    if strict and problems:
        raise UserError(problems[0])
    return problems
