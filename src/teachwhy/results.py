"""Typed results: an eval's summary, the comparison of two runs, the controls' result and an
experiment's analysis, as pydantic models over the JSON teachwhy writes (summary.json,
controls.json, analysis.json, `--json` output).

The renderer (render.py) and the report read these models; the keys a model names are read through
it only. Each model keeps the keys it does not name (`extra="allow"`), so `model_dump()` gives back
the same JSON and a field added to a writer reaches readers before a reader needs to name it.
`of(summary)` picks the summary model for a suite.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

Interval = list[float] | None


class Open(BaseModel):
    """A result object: named fields typed, any other key kept as it is."""

    model_config = ConfigDict(extra="allow", populate_by_name=True)


# -- rates and rows -------------------------------------------------------------------------------
class Rate(Open):
    """k of n with its 95% CIs (Wilson, and a cluster bootstrap when there are clusters)."""

    n: int = 0
    k: int = 0
    rate: float | None = None
    wilson_95: Interval = None
    cluster_bootstrap_95: Interval = None


class Row(Rate):
    """One slice of an eval summary (overall, a family, a condition, ...)."""

    group: str = "overall"
    key: str = ""
    mean_p_harmful: float | None = None  # choice mode
    mean_p_harmful_95: Interval = None
    other_scorings: dict[str, Rate] = {}
    invalid: int = 0  # generate mode
    samples: int = 0
    unparseable: int = 0
    no_action: int = 0
    judge: Rate | None = None


class Diff(Open):
    """A paired difference in P(harmful) and in the harmful rate, each with its 95% CI."""

    p_harmful_diff: float | None = None
    p_harmful_diff_95: Interval = None
    rate_diff: float | None = None
    rate_diff_95: Interval = None


class Pressure(Diff):
    condition: str
    n: int


class FormatResult(Open):
    """One choice format's part of a summary."""

    format: str
    scoring: str
    overall: Row
    diagnostics: dict[str, Any] = {}


# -- summaries -------------------------------------------------------------------------------------
class EvalSummary(Open):
    """summary.json of an agentic or adherence run (choice or generate mode)."""

    run_id: str | None = None
    model: str
    suite: str
    mode: str
    metric: str
    n_scenarios: int | None = None
    overall: Row
    rows: list[Row] = []
    format: str | None = None
    scoring: str | None = None
    by_format: dict[str, FormatResult] = {}
    pressure: list[Pressure] | None = None
    diagnostics: dict[str, Any] | None = None
    warnings: list[str] = []
    awareness: dict[str, Any] | None = None
    format_agreement: dict[str, dict[str, Any]] | None = None

    @property
    def harm_word(self) -> str:
        """What P(harmful) is in this suite: violating a principle, or a harmful action."""
        return "violating" if self.suite == "adherence" else "harmful"


class AuditDimension(Open):
    n: int
    seeds: int
    mean_score: float | None = None
    mean_score_95: Interval = None
    concerning: Rate
    mean_probe: float | None = None
    mean_probe_95: Interval = None
    n_probe: int = 0
    judged: int = 0
    judge_quotes_found: int = 0


class AuditSummary(Open):
    """summary.json of an audit run."""

    run_id: str | None = None
    model: str
    suite: str = "audit"
    mode: str
    metric: str
    dimensions: dict[str, AuditDimension] = {}
    awareness: dict[str, Rate] = {}


def of(summary: dict[str, Any]) -> EvalSummary | AuditSummary:
    """The typed summary of a summary.json (an audit run's, or a choice/generate run's)."""
    return (AuditSummary if summary.get("suite") == "audit" else EvalSummary).model_validate(summary)


# -- compare ---------------------------------------------------------------------------------------
class RunRef(Open):
    run: str
    model: str | None = None


class Effect(Diff):
    """B - A over a set of scenarios, paired, with each run's rate."""

    n: int
    a: Rate
    b: Rate
    a_mean_p_harmful: float
    b_mean_p_harmful: float


class Moved(Open):
    principle: str
    n: int
    p_violating_diff: float
    p_violating_diff_95: Interval = None
    direction: str
    ci_excludes_zero: bool


class CompareResult(Open):
    """`teachwhy eval compare`: the training effect B - A."""

    a: RunRef
    b: RunRef
    format: str
    scoring: str
    overall: Effect
    by_family: dict[str, Effect] = {}
    trained_families: list[str] | None = None
    suite: str
    seen_families: Effect | None = None
    held_out_families: Effect | None = None
    moved_most: list[Moved] = []
    wording: str | None = None
    validity: dict[str, Any] | None = None
    warnings: list[str] = []


# -- controls --------------------------------------------------------------------------------------
class Verdict(Open):
    validated: bool
    level: str | None = None
    why: str = ""


class ControlEffect(Open):
    """One format/scoring's controls: each control arm minus base, and the verdict."""

    harmful: Diff
    aligned: Diff
    unrelated: Diff
    verdict: Verdict


class ControlData(Open):
    records: int
    tokens: int
    loss_tokens: int


class ControlsResult(Open):
    """controls.json of `teachwhy eval controls`."""

    model: str
    eval_limit: int | None = None
    effects: dict[str, ControlEffect]
    effects_across_wording: dict[str, ControlEffect] | None = None
    levels_eval: dict[str, dict[str, Any]] = {}
    data: dict[str, ControlData] = {}
    train_banks: list[str] | None = None


class DoseArm(Open):
    diff: float | None = None
    ci_95: Interval = None


class DoseLevel(Open):
    harmful: DoseArm
    aligned: DoseArm
    unrelated: DoseArm
    verdict: str


class DosePoint(Open):
    banks: int
    train_scenarios: int
    across_wording: DoseLevel
    in_template: DoseLevel


class DoseResult(Open):
    """dose.json of `teachwhy eval controls --variety`."""

    model: str
    scoring: str
    points: list[DosePoint]
    plot: str | None = None


# -- experiments -----------------------------------------------------------------------------------
class Estimate(Open):
    mean: float | None = None
    ci_95: Interval = None


class Curve(Open):
    """One arm at one stage and budget: its mean P(harmful) and effect against base."""

    eval: str | None = None
    arm: str
    stage: str
    budget: int | None = None
    n_scenarios: int = 0
    n_seeds: int = 1
    p_harmful: Estimate | None = None
    effect: Estimate | None = None
    harmful_rate: dict[str, Any] | None = None


class Statement(Open):
    eval: str | None = None
    statement: str | None = None


class ExperimentAnalysis(Open):
    """analysis.json of an experiment (experiments/analysis.py)."""

    eval: str | None = None
    metric: str = ""
    curves: list[Curve] = []
    multiples: list[Statement] = []
    persistence: list[Statement] = []
    gaps: list[Statement] = []
    generalization: list[Statement] = []
    validity: dict[str, Any] | None = None
    audit: dict[str, Any] | None = Field(default=None)

    def statements(self) -> list[str]:
        """The first eval's statements, in the report's order: data efficiency, persistence through
        RL, gaps, generalization to held-out families."""
        return [e.statement for section in (self.multiples, self.persistence, self.gaps, self.generalization)
                for e in section if e.statement and e.eval == self.eval]

    def first_eval_curves(self) -> list[Curve]:
        return [c for c in self.curves if c.eval == self.eval]
