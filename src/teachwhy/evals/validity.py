"""What the eval's controls established for a model: a level per format/scoring and per wording.

Two levels of validity, both written by `teachwhy eval controls` into evals/prompts/validated.yaml:

    in_template     the controls were scored on the eval split's own candidates (`house` wording),
                    whose train half shares their template family with the control data;
    across_wording  scored on held-out wording (the eval banks, or a user's scenario file) that no
                    training material draws from.

Each level is `validated`, `partly` or `not` (experiments/controls verdicts). A measure counts as telling the
decision apart from template learning only when it is validated across wording.
"""

from __future__ import annotations

from functools import lru_cache
from importlib import resources
from typing import Any

import yaml

LEVELS = ("in_template", "across_wording")
LEVEL_NAMES = {"in_template": "in-template", "across_wording": "across wording"}
IN_TEMPLATE, HELD_OUT = "in-template", "held-out wording"


@lru_cache(maxsize=1)
def validation_table() -> dict:
    """Which formats passed their controls on which models (written from `teachwhy eval controls`)."""
    text = resources.files("teachwhy.evals").joinpath("prompts/validated.yaml").read_text(encoding="utf-8")
    return yaml.safe_load(text) or {}


def _entry(fingerprints: list[str | None], model: str | None) -> dict | None:
    for entry in validation_table().get("models", []):
        if entry.get("fingerprint") in fingerprints or entry.get("name") == model:
            return entry
    return None


def _level_of(status: dict, level: str) -> dict | None:
    """One level's {level, why} from a format's status (older entries hold a single in-template verdict)."""
    if level in status:
        return status[level]
    if level == "in_template" and "level" in status:
        return {"level": status["level"], "why": status.get("why", "")}
    return None


def levels(fingerprints: list[str | None], model: str | None, fmt: str, scoring: str) -> dict[str, dict | None]:
    """{'in_template': {level, why} | None, 'across_wording': {level, why} | None} for this model (or the
    base of this adapter); None where the controls never checked it."""
    entry = _entry(fingerprints, model)
    status = ((entry or {}).get("formats") or {}).get(f"{fmt}/{scoring}")
    if not status:
        return {lv: None for lv in LEVELS}
    return {lv: _level_of(status, lv) for lv in LEVELS}


def reached(lv: dict[str, dict | None]) -> str:
    """The highest level passed: 'across wording', 'in-template', 'partly in-template' or 'none'."""
    a, i = lv.get("across_wording"), lv.get("in_template")
    if a and a["level"] == "validated":
        return "across wording"
    if i and i["level"] == "validated":
        return "in-template"
    if i and i["level"] == "partly":
        return "partly in-template"
    return "none" if (a or i) else "unchecked"


def note(fingerprints: list[str | None], model: str | None, fmt: str, scoring: str) -> str | None:
    """A one-line warning with the level this format/scoring reached, unless it is validated across
    wording; None when it was never checked."""
    lv = levels(fingerprints, model, fmt, scoring)
    if all(v is None for v in lv.values()):
        return None
    got = reached(lv)
    if got == "across wording":
        return None
    entry = _entry(fingerprints, model) or {}
    parts = [f"{LEVEL_NAMES[k]} {v['level']}" for k, v in lv.items() if v]
    why = next((v.get("why", "") for k, v in reversed(list(lv.items())) if v and v["level"] != "validated"), "")
    meaning = ("effects may be template learning rather than the decision" if got == "in-template"
               else "its effects cannot be read as the decision")
    return (f"{fmt}/{scoring} reached validity level '{got}' for {entry.get('name', model)} by its controls "
            f"({'; '.join(parts)}; docs/evals.md): {meaning}. {why}").strip()


def headline(fingerprints: list[str | None], model: str | None, measures: list[tuple[str, str]]) -> dict[str, Any]:
    """For a report's first line: of the (format, scoring) measures given, those validated across
    wording, and each one's level. {'validated_across': [...], 'levels': {"fmt/scoring": reached}}."""
    out: dict[str, Any] = {"validated_across": [], "levels": {}}
    for fmt, scoring in measures:
        got = reached(levels(fingerprints, model, fmt, scoring))
        out["levels"][f"{fmt}/{scoring}"] = got
        if got == "across wording":
            out["validated_across"].append(f"{fmt}/{scoring}")
    return out


def wording_level(wording: str | None, scenario_files: list[str] | None = None) -> str:
    """'in-template' for the built-in eval's own candidates, 'held-out wording' for an eval bank or a
    user's scenario file."""
    if scenario_files:
        return HELD_OUT
    return IN_TEMPLATE if wording in (None, "house") else HELD_OUT
