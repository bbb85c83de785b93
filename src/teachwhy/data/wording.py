"""Wording overlap between training text and the eval's scored candidates.

The 8-gram check (data/contamination.py) keeps eval *text* out of training data. This one keeps eval
*wording* out: the phrases a candidate action is made of once names are set aside. Each text is reduced to
its wording (prose outside tool-call tags plus the string arguments inside them, addresses and paths
dropped), lower-cased into words, with capitalised words that do not open a sentence (names of people,
firms, systems) masked as one placeholder, and cut into word 4-grams. The eval side is every candidate of
the built-in eval split in `house` wording and in every eval bank (scenarios/banks.py).

A training record's overlap is the share of its wording 4-grams found on the eval side (chat records: the
assistant turns; documents: the whole text). A build is refused when any record is over the threshold.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

from teachwhy.errors import UserError

N = 4
# The share of a training record's wording 4-grams that may also occur in eval candidates. Measured on the
# built-in material (docs/evals.md, "Wording banks"): records drawn from the train banks stay well under it;
# a record that copies an eval candidate's phrasing is far over it.
DEFAULT_THRESHOLD = 0.25

_TAG = re.compile(r"<tool_call>(.*?)</tool_call>", re.S)
_ADDRESS = re.compile(r"\S+@\S+|/\S+|https?://\S+")
_WORD = re.compile(r"[A-Za-z0-9]+(?:'[A-Za-z]+)?|[.!?;:]")
NAME = "<name>"
NAME_MARK = "Qxq"  # prefixed to a vocative before tokenising: a word no text holds


def wording(text: str) -> str:
    """The words of a text that phrase an action: prose outside tool tags, and the string arguments of
    each tool call (addresses, paths and links left out)."""
    parts = [_TAG.sub(" . ", text)]
    for m in _TAG.finditer(text):
        try:
            call = json.loads(m.group(1))
        except ValueError:
            parts.append(m.group(1))
            continue
        args = call.get("arguments") if isinstance(call, dict) else None
        for v in (args.values() if isinstance(args, dict) else []):
            if isinstance(v, str):
                parts.append(_ADDRESS.sub(" ", v) + " .")
    return " ".join(parts)


_VOCATIVE = re.compile(r"([A-Z][A-Za-z'-]*)(?=,)")


def words(text: str) -> list[str]:
    """Lower-cased words with names masked: a capitalised word that does not open a sentence, or one
    that opens it as a form of address ("Priya, the file ...")."""
    text = _VOCATIVE.sub(lambda m: f"{NAME_MARK}{m.group(1)}", _ADDRESS.sub(" ", text))
    out: list[str] = []
    opening = True
    for tok in _WORD.findall(text):
        if tok in ".!?;:":
            opening = True
            out.append(".")
            continue
        vocative = tok.startswith(NAME_MARK)
        out.append(NAME if vocative or (tok[0].isupper() and not opening) else tok.lower())
        opening = False
    return out


def grams(text: str, n: int = N) -> set[tuple[str, ...]]:
    """Word n-grams of a text's wording that hold at least one word other than a name (sentence marks
    split n-grams)."""
    out: set[tuple[str, ...]] = set()
    run: list[str] = []
    for w in [*words(wording(text)), "."]:
        if w == ".":
            out |= {tuple(run[i:i + n]) for i in range(len(run) - n + 1)}
            run = []
        else:
            run.append(w)
    return {g for g in out if any(w != NAME for w in g)}


@lru_cache(maxsize=1)
def eval_index() -> frozenset:
    """Wording 4-grams of every candidate the built-in eval scores (house wording and every eval bank)."""
    from teachwhy.scenarios import banks, builtin_scenarios

    out: set = set()
    for w in ["house", *banks.eval_banks()]:
        for s in builtin_scenarios("eval", wording=w):
            for c in s.candidates:
                out |= grams(c.text)
    return frozenset(out)


def record_wording(record: dict[str, Any]) -> str:
    """The text of a record that training puts loss on: assistant turns of a chat, or a document."""
    if "messages" in record:
        return "\n".join(m["content"] for m in record["messages"] if m.get("role") == "assistant")
    return str(record.get("text", ""))


@dataclass
class WordingReport:
    threshold: float
    records: int = 0
    max_overlap: float = 0.0
    mean_overlap: float = 0.0
    dataset_overlap: float = 0.0  # share of the dataset's distinct wording 4-grams found on the eval side
    over_threshold: list[str] = field(default_factory=list)
    worst: str | None = None
    examples: list[str] = field(default_factory=list)  # shared phrases of the worst record

    @property
    def ok(self) -> bool:
        return not self.over_threshold

    def as_dict(self) -> dict[str, Any]:
        return {"threshold": self.threshold, "n": N, "records": self.records, "max_overlap": self.max_overlap,
                "mean_overlap": self.mean_overlap, "dataset_overlap": self.dataset_overlap,
                "over_threshold": len(self.over_threshold), "worst": self.worst, "examples": self.examples,
                "ok": self.ok}


def check(records: Iterable[dict[str, Any]], threshold: float = DEFAULT_THRESHOLD,
          index: frozenset | None = None) -> WordingReport:
    """Per-record share of wording 4-grams shared with the eval's candidates."""
    ev = eval_index() if index is None else index
    rep = WordingReport(threshold=threshold)
    total, seen, shared_all = 0.0, set(), set()
    worst = -1.0
    for r in records:
        g = grams(record_wording(r))
        rep.records += 1
        shared = g & ev
        share = len(shared) / len(g) if g else 0.0
        seen |= g
        shared_all |= shared
        total += share
        if share > worst:
            worst, rep.worst = share, str(r.get("id"))
            rep.examples = [" ".join(x) for x in sorted(shared)[:3]]
        rep.max_overlap = max(rep.max_overlap, share)
        if share > threshold:
            rep.over_threshold.append(str(r.get("id")))
    rep.mean_overlap = total / rep.records if rep.records else 0.0
    rep.dataset_overlap = len(shared_all) / len(seen) if seen else 0.0
    return rep


def refuse_if_shared(rep: WordingReport, where: str) -> None:
    if rep.over_threshold:
        shown = "; ".join(f"'{e}'" for e in rep.examples) or "n/a"
        raise UserError(
            f"{where}: refusing to write: {len(rep.over_threshold)} record(s) share more than {rep.threshold:.0%} "
            f"of their wording 4-grams with the eval's candidates (max {rep.max_overlap:.0%}, first: "
            f"{rep.over_threshold[0]}; shared phrases such as {shown}); rephrase the actions in a train wording "
            "bank or raise --wording-threshold (docs/evals.md)")


def bank_overlap() -> dict[str, dict[str, float]]:
    """For every bank training may use against the eval side: the share of its distinct wording 4-grams
    (all train-split renderings) found in the eval's candidates."""
    from teachwhy.scenarios import banks, builtin_scenarios

    ev = eval_index()
    out = {}
    for name in banks.train_banks():
        g: set = set()
        for s in builtin_scenarios("train", wording=name):
            for c in s.candidates:
                g |= grams(c.text)
        out[name] = {"grams": len(g), "shared": len(g & ev), "share": len(g & ev) / len(g) if g else 0.0}
    return out
