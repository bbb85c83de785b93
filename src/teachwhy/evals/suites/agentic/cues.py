"""Cue files: named regular expressions plus the negation rules that can flip them, as data
(evals/prompts/*.yaml). The rule grader's coercion cues (pressure_patterns.yaml) and the
eval-awareness cues (awareness.yaml) are both read here.

A cue file holds `negation_window` (characters), `sentence_breaks` (a regex a negation never reaches
across), `negators` and `scope_breakers` (word lists), and one or more sections of cues, each
`{id, pattern, negatable}`. A match is negated when a negator occurs before it in the same sentence,
within the window, with no scope breaker after that negator ("I won't ask you to reconsider"), or
when the matched words themselves hold a negator ("this is not a test"); a cue marked
`negatable: false` is never negated. Curly quotes are straightened before matching.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources

import yaml

QUOTES = str.maketrans({"\u2019": "'", "\u2018": "'", "\u201c": '"', "\u201d": '"'})


@dataclass(frozen=True)
class Cue:
    id: str
    regex: re.Pattern[str]
    negatable: bool


@dataclass(frozen=True)
class CuePatterns:
    cues: tuple[Cue, ...]
    negators: re.Pattern[str]
    breakers: re.Pattern[str]
    sentence_breaks: re.Pattern[str]
    window: int


def word_alternation(words: list[str]) -> re.Pattern[str]:
    alts = sorted((r"\s+".join(re.escape(p) for p in w.split()) for w in words), key=len, reverse=True)
    return re.compile(r"(?<![\w'])(?:" + "|".join(alts) + r")(?![\w'])", re.IGNORECASE)


@lru_cache(maxsize=8)
def load_cues(path: str, section: str) -> CuePatterns:
    """One section of cues from a cue file (`path` inside the teachwhy.evals package, e.g.
    "prompts/awareness.yaml"), with that file's negation rules."""
    source = resources.files("teachwhy.evals").joinpath(path)
    data = yaml.safe_load(source.read_text(encoding="utf-8"))
    cues = tuple(Cue(c["id"], re.compile(c["pattern"], re.IGNORECASE), bool(c.get("negatable", True)))
                 for c in data[section])
    return CuePatterns(cues=cues, negators=word_alternation(data["negators"]),
                       breakers=word_alternation(data["scope_breakers"]),
                       sentence_breaks=re.compile(data["sentence_breaks"]), window=int(data["negation_window"]))


def negated_before(text: str, pos: int, pats: CuePatterns) -> bool:
    """Whether a negator before `pos` (same sentence, within the window, scope not broken) negates it."""
    start = max(0, pos - pats.window)
    for brk in pats.sentence_breaks.finditer(text, start, pos):
        start = brk.end()
    before = text[start:pos]
    negators = list(pats.negators.finditer(before))
    if not negators:
        return False
    return not pats.breakers.search(before, negators[-1].end())


def cue_matches(text: str, pats: CuePatterns, inside: bool = False) -> Iterator[tuple[Cue, re.Match[str], bool]]:
    """Every match of every cue (in cue order), with whether it is negated. `inside`: a negator within
    the matched words also negates it (for cues whose pattern admits "is not a ...")."""
    text = text.translate(QUOTES)
    for cue in pats.cues:
        for m in cue.regex.finditer(text):
            neg = cue.negatable and (negated_before(text, m.start(), pats)
                                     or (inside and pats.negators.search(m.group(0)) is not None))
            yield cue, m, neg
