"""The experiment spec: arms x token budgets x seeds (+ an optional RL stage), the evals to run on
every cell, and the families held out of training. Written in YAML, validated here with one-line
errors; the format is documented in docs/experiments.md.

An arm is one of:
- `kind: base`: the model as it is (one per experiment; added if the spec has none);
- `data: [...]`: SFT on a mixture of why-data kinds, each with a share of the budget;
- `prompt: why_first | constitution_in_prompt`: no training, a system prompt added at eval time.

`resources` (num_cpus, num_gpus per stage: sft, rl, eval) is what each cell asks of a Ray cluster under
`teachwhy experiment run --ray`; a serial run ignores it.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from teachwhy.evals.config import MODES, EvalConfig
from teachwhy.models import DEFAULT_DTYPE, DEFAULT_MODEL
from teachwhy.store import RUNS_DIR

DOCS = "docs/experiments.md"
PROMPTS = ("why_first", "constitution_in_prompt")


def _one_of(value: str, allowed: list[str] | tuple[str, ...], what: str, see_docs: bool = False) -> str:
    """`value` when it is one of `allowed`, else the one-line error naming the choices."""
    if value not in allowed:
        raise ValueError(f"unknown {what} '{value}'; use one of {', '.join(allowed)}"
                         + (f" (see {DOCS})" if see_docs else ""))
    return value


class Component(BaseModel):
    """One dataset of an SFT arm: a why-data kind and its share of the arm's token budget."""

    model_config = ConfigDict(extra="forbid")

    kind: str
    share: float = 1.0
    teacher: str | None = None  # None: the experiment's teacher

    @field_validator("kind")
    @classmethod
    def _kind(cls, v: str) -> str:
        from teachwhy.data.records import KINDS

        return _one_of(v, KINDS, "data kind")

    @field_validator("share")
    @classmethod
    def _share(cls, v: float) -> float:
        if not 0 < v <= 1:
            raise ValueError(f"share must be in (0, 1] (got {v})")
        return v


class Arm(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str
    kind: Literal["base", "sft", "prompt"] | None = None  # inferred from data / prompt when left out
    data: list[Component] = []
    prompt: str | None = None

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        import re

        if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.+-]{0,63}", v):
            raise ValueError(f"arm name '{v}' must be 1-64 letters, digits or _ . + - (it names files)")
        return v

    @field_validator("prompt")
    @classmethod
    def _prompt(cls, v: str | None) -> str | None:
        return None if v is None else _one_of(v, PROMPTS, "prompting arm")

    @model_validator(mode="after")
    def _shape(self) -> Arm:
        given = [k for k, on in (("data", bool(self.data)), ("prompt", self.prompt is not None)) if on]
        if len(given) > 1:
            raise ValueError(f"arm '{self.name}' has both data and prompt; an arm is trained or prompted, not both")
        inferred: Literal["sft", "prompt"] | None = (
            "sft" if self.data else "prompt" if self.prompt is not None else None)
        if self.kind is None:
            if inferred is None:
                raise ValueError(f"arm '{self.name}' needs data (an SFT arm), prompt (a prompting arm) or kind: base")
            self.kind = inferred
        elif self.kind == "base" and given:
            raise ValueError(f"arm '{self.name}' is kind base, which takes no data or prompt")
        elif self.kind != "base" and self.kind != inferred:
            need = "data" if self.kind == "sft" else "prompt"
            raise ValueError(f"arm '{self.name}' is kind {self.kind} but has no {need}")
        if self.data:
            total = sum(c.share for c in self.data)
            if abs(total - 1.0) > 1e-6:
                raise ValueError(f"arm '{self.name}': the shares of its data add up to {total:g}, not 1")
            kinds = [c.kind for c in self.data]
            if len(set(kinds)) != len(kinds):
                raise ValueError(f"arm '{self.name}' lists a data kind twice; give each kind once with its share")
        return self


# where an experiment takes each per-cell key an eval entry may not set
_SET_BY = {"model": "the top-level model, or the cell's trained adapter", "out": "the top-level out",
           "dtype": "the top-level dtype", "constitution": "the top-level constitution",
           "system_prefix": "a prompting arm's prompt", "neutral_cache": "always on in experiments"}


class EvalSpec(EvalConfig):
    """One eval run on every cell: `teachwhy eval`'s options (EvalConfig, evals/config.py: the same
    names, defaults and meaning) and a name. The experiment sets each cell's model, the runs directory,
    dtype, the prompting arm's system prefix and the constitution (its own top-level keys)."""

    name: str = "honeypots"

    @model_validator(mode="before")
    @classmethod
    def _per_cell(cls, data: Any) -> Any:
        if isinstance(data, dict):
            owned = [k for k in ("model", "out", "dtype", "system_prefix", "constitution", "neutral_cache")
                     if k in data]
            if owned:
                raise ValueError(f"{owned[0]}: is set by the experiment for every cell ({_SET_BY[owned[0]]}); "
                                 "drop it from the eval")
            if data.get("seed_ids") == []:
                raise ValueError("seed_ids is empty: list some seed ids, or leave it out for every seed")
        return data

    @field_validator("suite")
    @classmethod
    def _suite_name(cls, v: str) -> str:
        from teachwhy.evals import suites

        return _one_of(v, suites.names(), "suite", see_docs=True)

    @field_validator("mode")
    @classmethod
    def _mode(cls, v: str) -> str:
        return _one_of(v, MODES, "mode")

    @field_validator("formats")
    @classmethod
    def _formats(cls, v: list[str] | None) -> list[str] | None:
        from teachwhy.evals.choice import FORMATS

        if v is None:
            return v
        bad = [f for f in v if f not in FORMATS]
        if bad or not v:
            raise ValueError(f"formats must list some of {', '.join(FORMATS)}")
        return v

    @field_validator("wording")
    @classmethod
    def _wording(cls, v: str) -> str:
        from teachwhy.scenarios.banks import choices

        return _one_of(v, choices("eval"), "wording", see_docs=True)

    @model_validator(mode="after")
    def _suite(self) -> EvalSpec:
        if self.suite == "audit":
            return self._audit()
        audit_only = self._changed("offline", "seed_files", "seed_ids", "auditor", "max_turns")
        if audit_only:
            raise ValueError(f"{audit_only[0]}: applies to suite: audit; add suite: audit or drop {audit_only[0]}")
        if self.suite == "adherence":
            if self.mode != "choice":
                raise ValueError("the adherence suite runs in choice mode: drop mode: generate")
            if self.families or self.scenario_files:
                raise ValueError("families and scenario_files select honeypot scenarios; an adherence eval "
                                 "selects principles (principles:) of the spec's constitution")
            if self.wording != "house":
                raise ValueError(f"wording: picks the honeypot candidates' wording; an adherence eval has its own "
                                 f"items: drop wording: {self.wording} (see {DOCS})")
        elif self.principles:
            raise ValueError("principles: applies to suite: adherence")
        if self.mode == "generate" and self.formats not in (None, ["continuation"]):
            raise ValueError("formats: applies to choice mode; a generate eval samples free replies: drop formats")
        if self.wording != "house":
            if self.scenario_files:
                raise ValueError(f"wording: picks the built-in scenarios' candidates; scenario_files bring their "
                                 f"own: drop wording: {self.wording} or scenario_files (see {DOCS})")
            if self.split not in (None, "eval"):
                raise ValueError(f"wording: {self.wording} scores held-out candidates on the eval split; drop "
                                 f"split: {self.split} (see {DOCS})")
        return self

    def _changed(self, *keys: str) -> list[str]:
        """The keys among `keys` whose value is not the default."""
        return [k for k in keys if getattr(self, k) != EvalSpec.model_fields[k].default]

    def _audit(self) -> EvalSpec:
        """The audit suite's rules, as `teachwhy eval --suite audit` has them (evals/runner.py)."""
        if not self.offline and self.auditor is None and self.judge is None:
            raise ValueError("the audit suite needs offline: true (scripted auditor, choice probes and rule cues) "
                             f"or an auditor and/or judge model (see {DOCS})")
        if self.offline and (self.auditor or self.judge):
            raise ValueError("offline: true runs without auditor or judge models: drop offline to use them, "
                             "or drop auditor and judge")
        honeypot = self._changed("mode", "formats", "split", "families", "scenario_files", "wording", "principles")
        if honeypot:
            raise ValueError(f"{honeypot[0]}: does not apply to suite: audit, which selects seed instructions "
                             f"(seed_files, seed_ids, limit); drop {honeypot[0]} (see {DOCS})")
        self._seeds()
        return self

    def _seeds(self) -> None:
        """seed_files load and seed_ids name their seeds (else every cell would fail on the same line)."""
        from teachwhy.errors import UserError
        from teachwhy.evals.suites.audit.seeds import load_seeds

        if self.seed_ids == []:
            raise ValueError("seed_ids is empty: list some seed ids, or leave it out for every seed")
        try:
            known = [s.id for s in load_seeds(self.seed_files or None)]
        except UserError as e:
            raise ValueError(str(e)) from None
        unknown = [i for i in self.seed_ids or [] if i not in known]
        if unknown:
            raise ValueError(f"unknown seed '{unknown[0]}' in seed_ids: the seeds are {', '.join(known)}")

    def config_for(self, **cell: Any) -> EvalConfig:
        """The EvalConfig this eval runs with on one cell (`cell`: model, out, dtype, ...)."""
        return EvalConfig.build(**self.model_dump(exclude={"name"}, exclude_unset=True), **cell)

    @property
    def level(self) -> str | None:
        """The eval's wording level (evals/validity.py): 'in-template' or 'held-out wording' for a
        honeypot eval, None for the adherence suite (its items are not honeypot candidates)."""
        from teachwhy.evals.validity import wording_level

        return wording_level(self.wording, self.scenario_files) if self.suite == "agentic" else None


class RLStage(BaseModel):
    """GRPO after SFT on some arms, each evaluated before and after."""

    model_config = ConfigDict(extra="forbid")

    arms: list[str]
    steps: int = 20
    budgets: list[int] | None = None  # the SFT budgets RL continues from; None: every budget
    options: dict[str, Any] = {}  # any other RLSpec key (docs/training.md)

    @field_validator("steps")
    @classmethod
    def _steps(cls, v: int) -> int:
        if v < 1:
            raise ValueError(f"must be at least 1 (got {v})")
        return v


class ControlsSpec(BaseModel):
    """The eval's positive and negative controls (`teachwhy eval controls`, experiments/controls), run once per
    experiment on its model and shown in the report: does the eval move when the decision is trained,
    and much less when unrelated text is? `controls: true` takes every default."""

    model_config = ConfigDict(extra="forbid")

    train_scenarios: int = 24
    eval_limit: int | None = 48
    formats: list[str] | None = None  # None: the first eval's formats (continuation for a generate eval)
    learning_rate: float = 1e-3
    epochs: float = 2.0
    seed: int = 0

    @field_validator("train_scenarios")
    @classmethod
    def _train(cls, v: int) -> int:
        if v < 2:
            raise ValueError(f"must be at least 2 (got {v})")
        return v

    @field_validator("eval_limit")
    @classmethod
    def _limit(cls, v: int | None) -> int | None:
        return EvalSpec._positive(v)

    @field_validator("formats")
    @classmethod
    def _formats(cls, v: list[str] | None) -> list[str] | None:
        return None if v is None else EvalSpec._formats(v)

    @field_validator("learning_rate", "epochs")
    @classmethod
    def _pos(cls, v: float) -> float:
        if v <= 0:
            raise ValueError(f"must be more than 0 (got {v:g})")
        return v


CONTROLS_OUT = f"{RUNS_DIR}/controls"  # `teachwhy eval controls`' own runs directory


def controls_default(name: str) -> Any:
    """A controls setting's default (ControlsSpec, the one place it is declared), for the CLI and
    run_controls."""
    return ControlsSpec.model_fields[name].default


class Resources(BaseModel):
    """What one cell asks of a Ray cluster when the experiment runs with --ray (ignored otherwise);
    the cell's torch threads follow num_cpus."""

    model_config = ConfigDict(extra="forbid")

    num_cpus: float = 1
    num_gpus: float = 0

    @field_validator("num_cpus")
    @classmethod
    def _cpus(cls, v: float) -> float:
        if v <= 0:
            raise ValueError(f"must be more than 0 (got {v:g})")
        return v

    @field_validator("num_gpus")
    @classmethod
    def _gpus(cls, v: float) -> float:
        if v < 0:
            raise ValueError(f"must be 0 or more (got {v:g})")
        return v


class StageResources(BaseModel):
    """Resources per cell stage: SFT cells, RL cells, and eval-only cells (base and prompting arms)."""

    model_config = ConfigDict(extra="forbid")

    sft: Resources = Field(default_factory=Resources)
    rl: Resources = Field(default_factory=Resources)
    eval: Resources = Field(default_factory=Resources)


class ExperimentSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str
    model: str = DEFAULT_MODEL
    out: str = RUNS_DIR  # the experiment lives in <out>/experiments/<name>; its runs in <out>
    teacher: str = "builtin"
    constitution: str | None = None  # None: the built-in constitution
    arms: list[Arm]
    budgets: list[int] = [30_000]
    seeds: list[int] = [0]
    sft: dict[str, Any] = {}  # any other SFTSpec key for every SFT cell (docs/training.md)
    rl: RLStage | None = None
    controls: ControlsSpec | None = None
    evals: list[EvalSpec] = Field(default_factory=lambda: [EvalSpec()])
    holdout_families: list[str] = []
    dtype: Literal["auto", "bfloat16", "float32"] = DEFAULT_DTYPE
    resources: StageResources = Field(default_factory=StageResources)  # per cell under --ray

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        return Arm._name(v)

    @field_validator("controls", mode="before")
    @classmethod
    def _controls(cls, v: Any) -> Any:
        if isinstance(v, bool):  # controls: true | false
            return {} if v else None
        return v

    @field_validator("budgets")
    @classmethod
    def _budgets(cls, v: list[int]) -> list[int]:
        if not v or any(b < 1 for b in v):
            raise ValueError("budgets must be a non-empty list of positive token counts")
        if len(set(v)) != len(v):
            raise ValueError("budgets lists a budget twice")
        return sorted(v)

    @field_validator("seeds")
    @classmethod
    def _seeds(cls, v: list[int]) -> list[int]:
        if not v or len(set(v)) != len(v):
            raise ValueError("seeds must be a non-empty list of distinct integers")
        return v

    @field_validator("holdout_families")
    @classmethod
    def _families(cls, v: list[str]) -> list[str]:
        from teachwhy.scenarios.schema import FAMILIES

        bad = [f for f in v if f not in FAMILIES]
        if bad:
            raise ValueError(f"unknown family '{bad[0]}'; use some of {', '.join(FAMILIES)}")
        if set(v) >= set(FAMILIES):
            raise ValueError("holding out every family leaves nothing to train on")
        return v

    @field_validator("sft")
    @classmethod
    def _sft(cls, v: dict[str, Any]) -> dict[str, Any]:
        from teachwhy.train.config import SFTSpec

        owned = {"model", "data", "out", "name", "seed", "init_adapter"} & set(v)
        if owned:
            raise ValueError(f"'{sorted(owned)[0]}' is set per cell by the experiment; remove it from sft")
        unknown = set(v) - set(SFTSpec.model_fields)
        if unknown:
            raise ValueError(f"unknown SFT key '{sorted(unknown)[0]}' (see docs/training.md)")
        return v

    @model_validator(mode="after")
    def _arms(self) -> ExperimentSpec:
        names = [a.name for a in self.arms]
        dup = next((n for n in names if names.count(n) > 1), None)
        if dup:
            raise ValueError(f"two arms are named '{dup}'; give each arm its own name")
        bases = [a for a in self.arms if a.kind == "base"]
        if len(bases) > 1:
            raise ValueError("more than one arm is kind base; keep one")
        if not bases:
            if "base" in names:
                raise ValueError("an arm named 'base' must be kind base (the experiment adds one under that name)")
            self.arms.insert(0, Arm(name="base", kind="base"))
        if self.controls is not None and "controls" in names:
            raise ValueError("an arm is named 'controls', the name of the controls cell; rename the arm")
        if self.rl is not None:
            sft_arms = {a.name for a in self.arms if a.kind == "sft"}
            missing = [b for b in (self.rl.budgets or []) if b not in self.budgets]
            if missing or self.rl.budgets == []:
                what = f"{missing[0]} is not one of them" if missing else "it is empty"
                raise ValueError(f"rl.budgets must list some of the experiment's budgets "
                                 f"({', '.join(map(str, self.budgets))}): {what}")
            bad = [a for a in self.rl.arms if a not in sft_arms]
            if bad:
                raise ValueError(f"rl.arms names '{bad[0]}', which is not an SFT arm of this experiment")
            unknown = set(self.rl.options) - _rl_keys()
            if unknown:
                raise ValueError(f"unknown RL key '{sorted(unknown)[0]}' in rl.options (see docs/training.md)")
        names_e = [e.name for e in self.evals]
        if not names_e or len(set(names_e)) != len(names_e):
            raise ValueError("evals must list at least one eval, each with its own name")
        return self


def _rl_keys() -> set[str]:
    from teachwhy.train.config import RLSpec

    return set(RLSpec.model_fields) - {"model", "out", "name", "seed", "steps"}


def load_experiment(path: str) -> ExperimentSpec:
    """Read and validate an experiment YAML file (one-line UserError on any problem)."""
    from teachwhy.train.config import load_spec

    spec: ExperimentSpec = load_spec(ExperimentSpec, path, {}, docs=DOCS, what="experiment")
    return spec
