"""Training configs: what a user writes in YAML (or passes as flags), validated with one-line errors.

    teachwhy train sft --config sft.yaml --data runs/data/reasoning:30000 --lr 5e-4
    teachwhy train rl  --config rl.yaml  --model runs/sft-.../adapter --steps 20

A YAML file holds the same keys as the pydantic models below; flags override the file. The format is
documented in docs/training.md.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from teachwhy.errors import UserError
from teachwhy.itemfiles import read_as
from teachwhy.models import DEFAULT_DTYPE, DEFAULT_MODEL
from teachwhy.scenarios.schema import EVAL_SPLIT
from teachwhy.store import RUNS_DIR

SEE_DOCS = "docs/training.md"

# report_to: the pip package a tracker needs where its name differs from the tracker's, and the
# trackers whose availability transformers does not report (so they are not checked here)
_TRACKER_PACKAGES = {"azure_ml": "azureml-core", "comet_ml": "comet-ml"}
_UNCHECKED_TRACKERS = {"flyte", "kubeflow"}


def check_report_to(value: Any) -> str | list[str]:
    """`report_to` as TrainingArguments takes it: "none" (the default: no tracker), "all" (every
    installed one), or a list of tracker names (a string may list them comma-separated). Each name
    must be one transformers knows and its package must be installed."""
    if isinstance(value, str):
        names = [n.strip() for n in value.split(",") if n.strip()]
    elif isinstance(value, (list, tuple)) and all(isinstance(n, str) for n in value):
        names = [n.strip() for n in value if n.strip()]
    else:
        hint = read_as(value)
        raise ValueError(f"must be text, but {hint}" if hint else
                         "must be none, all, or tracker names such as tensorboard, trackio or wandb")
    if not names or names == ["none"]:
        return "none"
    if names == ["all"]:
        return "all"
    if "none" in names or "all" in names:
        raise ValueError("none and all stand alone; give either one of them or tracker names")
    from transformers.integrations.integration_utils import (
        INTEGRATION_TO_CALLBACK,
        get_available_reporting_integrations,
    )

    known = sorted(INTEGRATION_TO_CALLBACK)
    for n in names:
        if n not in INTEGRATION_TO_CALLBACK:
            raise ValueError(f"unknown tracker '{n}'; use none, all, or from {', '.join(known)}")
    installed = set(get_available_reporting_integrations())
    for n in names:
        if n not in installed and n not in _UNCHECKED_TRACKERS:
            raise ValueError(f"tracker '{n}' is not installed; pip install {_TRACKER_PACKAGES.get(n, n)}, "
                             "or leave report_to at none")
    return names


class DataSource(BaseModel):
    """One dataset of a mixture: a directory built by `teachwhy data build` (or a JSONL file of records)
    and a token budget counted over all tokens of each record, as the builders count them."""

    model_config = ConfigDict(extra="forbid")

    path: str
    tokens: int | None = None  # None: the whole dataset

    @field_validator("tokens")
    @classmethod
    def _positive(cls, v: int | None) -> int | None:
        if v is not None and v <= 0:
            raise ValueError(f"token budget must be a positive number of tokens (got {v})")
        return v

    @classmethod
    def parse(cls, text: str) -> DataSource:
        """`DIR` or `DIR:TOKENS` (as given to --data)."""
        path, sep, tokens = text.rpartition(":")
        if sep and tokens.strip().lstrip("-").isdigit():
            n = int(tokens)
            if n <= 0:
                raise UserError(f"--data {text}: the token budget must be positive (got {n}); "
                                "write DIR:TOKENS with TOKENS > 0, or just DIR for the whole dataset")
            return cls(path=path, tokens=n)
        return cls(path=text)


class EvalSpec(BaseModel):
    """The evaluation run while training (the honeypot choice eval on a fixed scenario subset)."""

    model_config = ConfigDict(extra="forbid")

    every: int | None = None  # steps between eval points; None or 0: no periodic points
    # a point before the first step (the curve's origin) and one after the last. Left out (None), each
    # is on when `every` is set and off otherwise; true takes that point even without `every`.
    at_start: bool | None = None
    at_end: bool | None = None
    split: str = EVAL_SPLIT
    family: str | None = None
    limit: int = 24  # scenarios per point (the first N of the split, the same N every time)
    # pair: minimal-pair span scoring (scenarios with twins; the others fall back to mean)
    scoring: Literal["pair", "mean", "sum", "calibrated"] = "pair"

    @field_validator("every", "limit")
    @classmethod
    def _non_negative(cls, v: int | None) -> int | None:
        if v is not None and v < 0:
            raise ValueError(f"must be 0 or more (got {v})")
        return v

    @model_validator(mode="after")
    def _ends_follow_every(self) -> EvalSpec:
        if self.at_start is None:
            self.at_start = bool(self.every)
        if self.at_end is None:
            self.at_end = bool(self.every)
        return self

    @property
    def enabled(self) -> bool:
        """Whether any eval point is taken: periodic ones, or one at the start or the end."""
        return self.limit > 0 and bool(self.every or self.at_start or self.at_end)


class ScaleSpec(BaseModel):
    """Multi-GPU / cluster options, passed through to TRL/transformers; none is imported on CPU."""

    model_config = ConfigDict(extra="forbid")

    deepspeed: str | None = None  # a DeepSpeed JSON config path
    fsdp: str | None = None  # transformers' fsdp option string, e.g. "full_shard auto_wrap"
    fsdp_config: str | None = None  # a path or JSON string


class LoraSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")

    r: int = 16
    alpha: int = 32
    dropout: float = 0.0
    target_modules: str | list[str] = "all-linear"


class SFTSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")

    model: str = DEFAULT_MODEL
    data: list[DataSource] = []
    out: str = RUNS_DIR
    name: str | None = None  # a label for the run id (default: the datasets' names)
    method: Literal["lora", "full"] = "lora"
    lora: LoraSpec = LoraSpec()
    init_adapter: str | None = None  # continue training this adapter (its base must be `model`)
    merge: bool = False  # also write the adapter merged into the base (a plain HF directory)
    learning_rate: float = 5e-4
    lr_scheduler: str = "constant"
    warmup_steps: int = 0
    weight_decay: float = 0.0
    epochs: float = 1.0
    batch_size: int = 2  # records per optimizer step
    micro_batch_size: int = 1  # records per forward pass (the rest is gradient accumulation)
    max_length: int = 2048
    packing: Literal["auto", "on", "off"] = "auto"
    dtype: Literal["auto", "bfloat16", "float32"] = DEFAULT_DTYPE
    # true: recompute each layer in backward; selective: all but its attention kernel (less time)
    gradient_checkpointing: bool | Literal["selective"] = False
    seed: int = 0
    logging_steps: int = 1
    save_steps: int = 10  # checkpoint cadence for resuming an interrupted run
    eval: EvalSpec = EvalSpec()
    scale: ScaleSpec = ScaleSpec()
    # trackers TRL reports to (tensorboard, trackio, wandb, ...); not part of the run id
    report_to: str | list[str] = Field(default="none", exclude=True)

    @field_validator("report_to", mode="before")
    @classmethod
    def _report_to(cls, v: Any) -> str | list[str]:
        return check_report_to(v)

    @field_validator("batch_size", "micro_batch_size", "max_length", "logging_steps", "save_steps")
    @classmethod
    def _positive_int(cls, v: int) -> int:
        if v < 1:
            raise ValueError(f"must be at least 1 (got {v})")
        return v

    @field_validator("learning_rate", "epochs")
    @classmethod
    def _positive_float(cls, v: float) -> float:
        if v <= 0:
            raise ValueError(f"must be positive (got {v})")
        return v


class RLSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")

    model: str = DEFAULT_MODEL  # a base model or an SFT adapter directory (its LoRA keeps training)
    prompts: str | None = None  # None: the built-in harmlessness environment
    augment: bool = False  # vary system prompts and add unused tools (the augment builder's data)
    reward: str = "rubric"  # "rubric" (offline harm/refusal + constitution adherence) or an Inspect model id
    out: str = RUNS_DIR
    name: str | None = None
    steps: int = 20
    num_generations: int = 4  # completions per prompt (GRPO's group)
    prompts_per_step: int = 1
    max_completion_length: int = 48
    temperature: float = 1.0
    learning_rate: float = 2e-5
    beta: float = 0.0  # KL coefficient; 0 needs no reference model
    lora: LoraSpec = LoraSpec()
    dtype: Literal["auto", "bfloat16", "float32"] = DEFAULT_DTYPE
    seed: int = 0
    logging_steps: int = 1
    save_steps: int = 10
    use_vllm: bool = False
    vllm_mode: Literal["colocate", "server"] = "colocate"
    eval: EvalSpec = EvalSpec(every=10, limit=16)
    scale: ScaleSpec = ScaleSpec()
    report_to: str | list[str] = Field(default="none", exclude=True)  # as in SFTSpec

    @field_validator("report_to", mode="before")
    @classmethod
    def _report_to(cls, v: Any) -> str | list[str]:
        return check_report_to(v)

    @field_validator("steps", "num_generations", "prompts_per_step", "max_completion_length",
                     "logging_steps", "save_steps")
    @classmethod
    def _positive_int(cls, v: int) -> int:
        if v < 1:
            raise ValueError(f"must be at least 1 (got {v})")
        return v

    @field_validator("num_generations")
    @classmethod
    def _group(cls, v: int) -> int:
        if v < 2:
            raise ValueError(f"GRPO needs at least 2 completions per prompt to compare (got {v})")
        return v


_UNION_BRANCH = re.compile(r"^(str|int|float|bool|list\[.*\]|dict\[.*\])$")  # loc parts naming a union's type


def _describe(err: ValidationError, docs: str = SEE_DOCS) -> str:
    errors = err.errors()
    e = errors[0]
    # a value YAML read as a number or date where text belongs (in any branch of a union such as
    # `str | list[str]`) is the problem to report: quoting it is the fix
    unquoted = next((x for x in errors if x["type"] == "string_type" and read_as(x.get("input"))), None)
    if unquoted is not None and unquoted["loc"][:1] == e["loc"][:1]:
        e = unquoted
    where = ".".join(str(p) for p in e["loc"] if not _UNION_BRANCH.match(str(p))) or "(top level)"
    msg = e["msg"].removeprefix("Value error, ")
    if e["type"] == "extra_forbidden":
        msg = f"unknown key (check the spelling against {docs})"
    elif e is unquoted:
        msg = f"must be text, but {read_as(e['input'])}"
    elif e["type"] == "literal_error" and read_as(e.get("input")):  # e.g. `packing: on` read as true
        msg = f"{msg}, but {read_as(e['input'])}"
    return f"'{where}': {msg}"


def load_spec(cls: type[BaseModel], path: str | None, overrides: dict[str, Any], docs: str = SEE_DOCS,
              what: str = "training") -> Any:
    """Build a spec from a YAML file (optional) and flag overrides (None values are ignored); errors
    point to `docs`."""
    raw: dict[str, Any] = {}
    name = str(path)
    if path is not None:
        p = Path(path)
        if not p.is_file():
            raise UserError(f"config {name} does not exist: give the path of a YAML {what} config")
        try:
            loaded = yaml.safe_load(p.read_text(encoding="utf-8"))
        except yaml.YAMLError as exc:
            mark = getattr(exc, "problem_mark", None)
            where = f" at line {mark.line + 1}" if mark is not None else ""
            raise UserError(f"config {name}: not valid YAML{where}; fix the syntax") from None
        if loaded is None:
            loaded = {}
        if not isinstance(loaded, dict):
            raise UserError(f"config {name}: must be a mapping of keys to values (see {docs})")
        raw = loaded
    if isinstance(raw.get("data"), list):
        raw["data"] = [DataSource.parse(d).model_dump() if isinstance(d, str) else d for d in raw["data"]]
    for key, value in overrides.items():
        if value is None:
            continue
        if "." in key:  # nested, e.g. eval.every
            outer, inner = key.split(".", 1)
            section = raw.setdefault(outer, {})
            if not isinstance(section, dict):
                raise UserError(f"config {name}: '{outer}' must be a mapping")
            section[inner] = value
        else:
            raw[key] = value
    try:
        return cls.model_validate(raw)
    except ValidationError as err:
        src = f"config {name}" if path is not None else f"{what} options"
        raise UserError(f"{src}: {_describe(err, docs)}") from None
