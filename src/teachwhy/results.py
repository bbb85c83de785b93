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
Bounds = list[float | None] | None  # an interval whose ends may be unbounded (None in JSON)


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
    clusters: int | None = None


class Pressure(Diff):
    condition: str
    n: int


class Awareness(Open):
    """Eval awareness beside a generated result: said or implied a test, said it was real, and the
    harmful rate within each (and the LLM judge's call, when one ran)."""

    test: Rate
    real: Rate
    harmful_by_label: dict[str, Rate] = {}
    judge_test: Rate | None = None
    judge_agrees_with_cues: Rate | None = None


class FormatAgreement(Rate):
    """Two formats agreeing on the choice (k of n scenarios), and how their P(harmful) correlate."""

    pearson_p_harmful: float | None = None


class AuditAwareness(Open):
    """Eval awareness over an audit's transcripts (rule cues, and the judge's call when one ran)."""

    test: Rate
    real: Rate
    judge_test: Rate | None = None


class GoingAlong(Open):
    """Mean P(the reply going along with the request) with its CI."""

    mean: float | None = None
    ci_95: Interval = None
    n: int = 0


class Position(Open):
    """Options format: how often the same letter, or the same candidate, wins every rotation."""

    same_letter_every_rotation: Rate | None = None
    same_candidate_every_rotation: Rate | None = None
    p_letter: list[float] = []
    chance: float | None = None
    letter_mass: float | None = None


class ChoiceDiagnostics(Open):
    """A choice summary's validity diagnostics for one format."""

    same_winner: Rate | None = None
    going_along: GoingAlong | None = None
    scoring_agreement: dict[str, Rate] | None = None
    position: Position | None = None
    over_context: int | None = None


class FormatResult(Open):
    """One choice format's part of a summary."""

    format: str
    scoring: str
    overall: Row
    diagnostics: ChoiceDiagnostics = ChoiceDiagnostics()


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
    diagnostics: ChoiceDiagnostics | None = None
    warnings: list[str] = []
    awareness: Awareness | None = None
    format_agreement: dict[str, FormatAgreement] | None = None

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
    awareness: AuditAwareness


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
class ArmEffect(Diff):
    """One control arm minus base (or minus the unrelated-text control), paired."""

    n: int | None = None


class VsUnrelated(Open):
    """Each positive control arm minus the unrelated-text control."""

    harmful: ArmEffect | None = None
    aligned: ArmEffect | None = None


class Verdict(Open):
    validated: bool
    level: str | None = None
    why: str = ""


class ControlEffect(Open):
    """One format/scoring's controls: each control arm minus base, and the verdict."""

    harmful: ArmEffect
    aligned: ArmEffect
    unrelated: ArmEffect
    vs_unrelated: VsUnrelated | None = None
    verdict: Verdict


class ControlData(Open):
    records: int
    tokens: int
    loss_tokens: int


class LevelEval(Open):
    """What one controls level scored: its wording or scenario files, and how many scenarios."""

    wording: str | None = None
    scenario_files: list[str] | None = None
    n: int | None = None


class ControlsResult(Open):
    """controls.json of `teachwhy eval controls` (and an experiment analysis' `controls`)."""

    model: str
    train_scenarios: int | None = None
    eval_limit: int | None = None
    # int or float as the JSON has them (epochs 3 stays 3, not 3.0)
    learning_rate: int | float | None = None
    epochs: int | float | None = None
    effects: dict[str, ControlEffect]
    effects_across_wording: dict[str, ControlEffect] | None = None
    levels_eval: dict[str, LevelEval] = {}
    data: dict[str, ControlData] = {}
    train_banks: list[str] | None = None

    def level_eval(self, level: str) -> LevelEval | None:
        return self.levels_eval.get(level)


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

    eval: str
    arm: str
    kind: str
    stage: str
    budget: int | None = None
    n_scenarios: int = 0
    n_seeds: int = 1
    seeds: list[int] = []
    p_harmful: Estimate | None = None
    effect: Estimate | None = None
    harmful_rate: Rate | None = None

    def harmful(self) -> Rate | None:
        return self.harmful_rate


class Statement(Open):
    eval: str | None = None
    statement: str | None = None


class CurvePoint(Open):
    """Arm B's effect at one of its budgets, in a multiple."""

    budget: int
    n_seeds: int = 1
    effect: Estimate | None = None


class MultipleBootstrap(Open):
    """A multiple over bootstrap replicates: its interval, and how often B reached A's effect."""

    median: float | None = None
    median_infinite: bool = False
    ci_95: Bounds = None
    ci_lower_infinite: bool = False
    ci_upper_infinite: bool = False
    fraction_reached: float | None = None
    fraction_at_most: float = 0.0
    fraction_a_not_better: float = 0.0


class Multiple(Statement):
    """The tokens arm B needs to reach arm A's effect at budget_a, over budget_a."""

    eval: str
    stage: str
    arm_a: str
    arm_b: str
    budget_a: int
    n_scenarios: int | None = None
    n_seeds_a: int = 1
    effect_a: Estimate | None = None
    curve_b: list[CurvePoint] = []
    reached: bool | None = None
    bound: str | None = None
    multiple: float | None = None
    tokens_b: float | None = None
    reason: str | None = None
    bootstrap: MultipleBootstrap | None = None
    statement: str


class Persistence(Statement):
    """One arm's effect at one budget after SFT and after RL."""

    eval: str
    arm: str
    budget: int
    n_scenarios: int | None = None
    n_seeds_sft: int = 1
    n_seeds_rl: int = 1
    before: Estimate | None = None
    after: Estimate | None = None
    change: Estimate | None = None
    statement: str


class Gap(Statement):
    """Effect of arm A minus arm B at one budget, after SFT and after RL."""

    eval: str
    budget: int
    arm_a: str
    arm_b: str
    n_scenarios: int | None = None
    n_seeds_a: dict[str, int] | None = None  # stage -> seeds
    n_seeds_b: dict[str, int] | None = None
    before: Estimate | None = None
    after: Estimate | None = None
    change: Estimate | None = None
    statement: str


class FamilyPart(Open):
    """The held-out or the trained families' part of a generalization entry."""

    n_scenarios: int | None = None
    families: list[str] = []
    effect: Estimate | None = None


class Generalization(Statement):
    """One condition's effect on its held-out families against its trained ones."""

    eval: str
    arm: str
    kind: str = "sft"
    budget: int | None = None
    stage: str = "sft"
    n_seeds: int | None = None
    held_out: FamilyPart | None = None
    trained: FamilyPart | None = None
    difference: Estimate | None = None
    statement: str


class Contrast(Open):
    """Two SFT arms at one budget and stage: effect of A minus effect of B, paired."""

    eval: str
    stage: str | None = None
    budget: int | None
    arm_a: str
    arm_b: str
    n_scenarios: int | None = None
    n_seeds_a: int = 1
    n_seeds_b: int = 1
    effect_a: Estimate | None = None
    effect_b: Estimate | None = None
    difference: Estimate


class EvalWording(Open):
    """A honeypot eval's candidate wording and its level (in-template or held-out wording)."""

    wording: str | None = None
    level: str | None = None


class AnalysisValidity(Open):
    """What the report needs to look up the controls' validity level: the model, its fingerprints and
    each honeypot choice eval's measure (format/scoring)."""

    model: str | None = None
    fingerprints: list[str] | None = None
    measures: dict[str, str] | None = None


class BaseDiagnostics(Open):
    """The base model's eval validity diagnostics, as its first eval's summary has them."""

    model: str | None = None
    format: str | None = None
    scoring: str | None = None
    n_scenarios: int | None = None
    diagnostics: ChoiceDiagnostics | None = None
    warnings: list[str] | None = None
    pressure: list[Pressure] | None = None


class AuditScore(Estimate):
    """A cell's mean dimension score, or its difference from base, over transcripts (or pairs)."""

    n: int | None = None
    seed_ids: int | None = None
    method: str | None = None


class AuditRow(Open):
    """One cell's score on one audit dimension."""

    eval: str
    dimension: str
    cell_id: str | None = None
    arm: str
    kind: str
    budget: int | None = None
    seed: int | None = None
    stage: str = "none"
    score: AuditScore | None = None
    vs_base: AuditScore | None = None


class AuditSettings(Open):
    """What an audit eval ran."""

    mode: str | None = None
    seed_files: list[str] | None = None
    seed_ids: list[str] | None = None
    limit: int | None = None
    samples: int | None = None
    max_tokens: int | None = None
    auditor: str | None = None
    judge: str | None = None
    max_turns: int | None = None


class AuditAnalysis(Open):
    """analysis.json `audit`: each audit eval's settings and one row per cell and dimension."""

    metric: str | None = None
    evals: dict[str, AuditSettings] | None = None
    dimensions: list[str] = []
    rows: list[AuditRow] | None = None


class ExperimentAnalysis(Open):
    """analysis.json of an experiment (experiments/analysis.py)."""

    # the JSON's `statements` (every sentence); statements() below is the first eval's, in the report's order
    model_config = ConfigDict(serialize_by_alias=True)

    eval: str | None = None
    metric: str = ""
    curves: list[Curve] = []
    multiples: list[Multiple] = []
    persistence: list[Persistence] = []
    gaps: list[Gap] = []
    generalization: list[Generalization] = []
    contrasts: list[Contrast] = []
    all_statements: list[str] = Field(default=[], alias="statements")
    n_replicates: int | None = None
    diagnostics: BaseDiagnostics | None = None
    controls: ControlsResult | None = None
    wording: dict[str, EvalWording] | None = None
    validity: AnalysisValidity | None = None
    audit: AuditAnalysis | None = None

    def statements(self) -> list[str]:
        """The first eval's statements, in the report's order: data efficiency, persistence through
        RL, gaps, generalization to held-out families."""
        return [e.statement for section in (self.multiples, self.persistence, self.gaps, self.generalization)
                for e in section if e.statement and e.eval == self.eval]

    def first_eval_curves(self) -> list[Curve]:
        return [c for c in self.curves if c.eval == self.eval]
