"""Eval suites behind one small protocol, found through a registry.

A suite turns an `EvalConfig` into items (`check`, `items`, `config`), runs them into the run's
samples.jsonl (`run`, in choice or generate mode), summarises the records (`summarise`), and adds its
own part to a comparison of two runs (`compare`). `run_eval` (evals/runner.py) drives every suite the
same way; it never asks which suite it has.

Built in: `agentic` (honeypot scenarios), `adherence` (items written from a constitution) and `audit`
(multi-turn conversations from seed instructions). A suite from your own package registers itself
with `register(MySuite())`, or through the `teachwhy.suites` entry point group (a name pointing at a
Suite object), and then runs with `teachwhy eval --suite <name>`; docs/evals.md shows one.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from importlib import import_module
from importlib.metadata import entry_points
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from teachwhy.errors import UserError

if TYPE_CHECKING:
    from teachwhy.evals.config import EvalConfig
    from teachwhy.models import ModelRef
    from teachwhy.store import JsonlLog

Progress = Callable[[int, int], None]  # (done, total)
Effect = Callable[[Callable[[dict], bool]], dict | None]
BUILTIN = {"agentic": "teachwhy.evals.suites.agentic.suite", "adherence": "teachwhy.evals.suites.adherence.suite",
           "audit": "teachwhy.evals.suites.audit.suite"}
ENTRY_POINTS = "teachwhy.suites"


@dataclass
class RunContext:
    """What a suite's `run` and `summarise` get: the options, the resolved model, where the run lives."""

    cfg: EvalConfig
    ref: ModelRef
    root: Path  # the runs directory (cfg.out)
    run_dir: Path
    run_id: str
    config: dict  # the run's config.json (its hash is the run id)
    log: JsonlLog
    progress: Progress | None = None
    state: dict[str, Any] = field(default_factory=dict)  # what a suite's items step leaves for its run step


@runtime_checkable
class Suite(Protocol):
    name: str
    unit: str  # what progress counts: scenarios, items, transcripts

    def check(self, cfg: EvalConfig) -> EvalConfig:
        """Refuse options that do not apply (one UserError line); return the config to run (a suite may
        settle its mode)."""
        ...

    def items(self, cfg: EvalConfig, state: dict[str, Any]) -> list[Any]:
        """The items to run, in order (`state` keeps what the later steps need, e.g. a constitution)."""
        ...

    def config(self, cfg: EvalConfig, state: dict[str, Any]) -> dict[str, Any]:
        """The suite's part of the run's config (recorded, and hashed into the run id)."""
        ...

    def run(self, ctx: RunContext, items: list[Any]) -> None:
        """Append a record per finished (item, format) or (item, sample) to ctx.log; skip those there."""
        ...

    def summarise(self, ctx: RunContext, items: list[Any], records: list[dict], meta: dict) -> dict:
        """The summary.json of the run (`meta`: what every suite's summary holds)."""
        ...

    def compare(self, a: dict, b: dict, out: dict, effect: Effect) -> dict:
        """Add the suite's own part to the comparison `out` of runs with configs `a` and `b`;
        `effect(keep)` is the paired effect over the scenarios whose A record `keep` accepts."""
        ...


_REGISTRY: dict[str, Suite] = {}


def register(suite: Suite) -> Suite:
    """Add a suite (a later registration of the same name replaces the earlier one)."""
    if not isinstance(suite, Suite):
        raise TypeError(f"{suite!r} does not implement the Suite protocol (teachwhy.evals.suites.Suite)")
    _REGISTRY[suite.name] = suite
    return suite


def names() -> list[str]:
    """Every suite that can run: the built-in ones, registered ones and entry points."""
    eps = [ep.name for ep in entry_points(group=ENTRY_POINTS)]
    return list(dict.fromkeys([*BUILTIN, *_REGISTRY, *eps]))


def get(name: str) -> Suite:
    """The suite called `name` (one UserError line listing the choices when there is none)."""
    if name in _REGISTRY:
        return _REGISTRY[name]
    if name in BUILTIN:
        return register(import_module(BUILTIN[name]).SUITE)
    for ep in entry_points(group=ENTRY_POINTS, name=name):
        return register(ep.load())
    raise UserError(f"unknown suite '{name}': choose one of {', '.join(names())}")
