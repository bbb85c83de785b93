"""Refuse to write training data that leaks the eval split: 8-gram overlap and the eval canary.

The eval side is every text a model sees or is scored on in the eval split: system prompts, user
turns with their inboxes, and candidate actions (the split's own and every eval wording bank's).
Overlap is measured per record as the share of its
8-grams found on the eval side; the dataset fails when any record exceeds the threshold, or when
the eval canary appears anywhere.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

from teachwhy.errors import UserError
from teachwhy.scenarios import builtin_scenarios
from teachwhy.scenarios.overlap import ngrams

DEFAULT_THRESHOLD = 0.05


@lru_cache(maxsize=1)
def eval_index() -> tuple[frozenset, frozenset]:
    """(8-grams of the eval split, canary strings of the eval split)."""
    from teachwhy.scenarios import banks

    grams: set = set()
    canaries = set()
    scored = [s for w in ["house", *banks.eval_banks()] for s in builtin_scenarios("eval", wording=w)]
    for s in scored:
        canaries.add(s.canary)
        for m in s.prompt_messages():
            grams |= ngrams(m["content"])
        for c in s.candidates:
            grams |= ngrams(c.text)
    return frozenset(grams), frozenset(canaries)


def record_text(record: dict[str, Any]) -> str:
    if "messages" in record:
        return "\n".join(m["content"] for m in record["messages"])
    return record["text"]


@dataclass
class ContaminationReport:
    threshold: float
    records: int = 0
    max_overlap: float = 0.0
    mean_overlap: float = 0.0
    over_threshold: list[str] = field(default_factory=list)
    canary_hits: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.over_threshold and not self.canary_hits

    def as_dict(self) -> dict[str, Any]:
        return {"threshold": self.threshold, "records": self.records, "max_overlap": self.max_overlap,
                "mean_overlap": self.mean_overlap, "over_threshold": len(self.over_threshold),
                "canary_hits": len(self.canary_hits), "ok": self.ok}


def check(records: Iterable[dict[str, Any]], threshold: float = DEFAULT_THRESHOLD) -> ContaminationReport:
    grams, canaries = eval_index()
    rep = ContaminationReport(threshold=threshold)
    total = 0.0
    for r in records:
        text = record_text(r)
        rep.records += 1
        if any(c in text for c in canaries) or "TEACHWHY-CANARY-EVAL" in text:
            rep.canary_hits.append(r["id"])
        g = ngrams(text)
        share = len(g & grams) / len(g) if g else 0.0
        total += share
        rep.max_overlap = max(rep.max_overlap, share)
        if share > threshold:
            rep.over_threshold.append(r["id"])
    rep.mean_overlap = total / rep.records if rep.records else 0.0
    return rep


def refuse_if_contaminated(rep: ContaminationReport, where: str) -> None:
    if rep.canary_hits:
        raise UserError(f"{where}: refusing to write: {len(rep.canary_hits)} record(s) contain the eval "
                        f"canary (first: {rep.canary_hits[0]}); eval-split text must never be trained on")
    if rep.over_threshold:
        raise UserError(
            f"{where}: refusing to write: {len(rep.over_threshold)} record(s) share more than "
            f"{rep.threshold:.0%} of their 8-grams with the eval split (max {rep.max_overlap:.0%}, first: "
            f"{rep.over_threshold[0]}); remove eval text from the source or raise --contamination-threshold")
