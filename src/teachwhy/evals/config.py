"""Every eval option, declared once: its type, default and help text.

`EvalConfig` is the single source for the `teachwhy eval` options (the CLI builds its options from
the fields' `cli` metadata), `run_eval`, an experiment spec's `evals:` entries (experiments/spec.py
extends it with a name) and the Inspect tasks' parameters (evals/tasks.py). A field with no `cli`
metadata is for library callers only.
"""

from __future__ import annotations

import os
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from teachwhy.errors import UserError
from teachwhy.models import DEFAULT_DTYPE, DEFAULT_MODEL, GENERATE_MAX_TOKENS
from teachwhy.scenarios.banks import HOUSE
from teachwhy.scenarios.schema import EVAL_SPLIT
from teachwhy.store import RUNS_DIR

MODES = ("choice", "generate")


def _cli(*flags: str, metavar: str | None = None, text: bool = False) -> dict[str, Any]:
    """The CLI's spelling of a field: its flags, metavar, and whether a list is typed as one
    comma-separated string (`text`) rather than a repeatable option."""
    return {"cli": {"flags": list(flags), "metavar": metavar, "text": text}}


def names(value: Any) -> list[str] | None:
    """A list given as a list, or as one comma-separated string (`--families leak,framing`)."""
    if value is None:
        return None
    if not isinstance(value, str | list | tuple):
        raise ValueError(f"give names, comma-separated (got {value!r})")
    items = value.split(",") if isinstance(value, str) else [x for v in value for x in str(v).split(",")]
    out = [x.strip() for x in items if x.strip()]
    if not out:
        raise ValueError(f"give at least one name, comma-separated (got {value!r})")
    return out


class EvalConfig(BaseModel):
    """One eval run's options (see the module docstring)."""

    model_config = ConfigDict(extra="forbid")

    model: str = Field(default=DEFAULT_MODEL, description="Embedded name, model/adapter dir, or Inspect id.",
                       json_schema_extra=_cli("--model", "-m", metavar="MODEL"))
    suite: str = Field(default="agentic",
                       description="agentic (honeypot scenarios), adherence (items from a constitution) "
                       "or audit (multi-turn conversations from seed instructions).",
                       json_schema_extra=_cli("--suite", metavar="SUITE"))
    constitution: str | None = Field(default=None,
                                     description="Adherence: your constitution file (default: the built-in "
                                     "one).", json_schema_extra=_cli("--constitution", metavar="FILE"))
    principles: list[str] | None = Field(default=None,
                                         description="Adherence: only these principle ids, comma-separated.",
                                         json_schema_extra=_cli("--principles", metavar="IDS", text=True))
    offline: bool = Field(default=False,
                          description="Audit: scripted auditor turns, choice probes and rule cues (no API "
                          "key).", json_schema_extra=_cli("--offline"))
    seed_files: list[str] | None = Field(default=None,
                                         description="Audit: your own seed instruction file (repeatable).",
                                         json_schema_extra=_cli("--seeds", metavar="FILE"))
    seed_ids: list[str] | None = Field(default=None, description="Audit: only these seed ids, comma-separated.",
                                       json_schema_extra=_cli("--seed-ids", metavar="IDS", text=True))
    auditor: str | None = Field(default=None,
                                description="Audit: an auditor model (Inspect id or local model) writing the "
                                "turns.", json_schema_extra=_cli("--auditor", metavar="MODEL"))
    max_turns: int = Field(default=4, description="Audit with --auditor: at most N auditor turns.",
                           json_schema_extra=_cli("--max-turns", metavar="N"))
    mode: str = Field(default="choice",
                      description="choice (log-likelihood of candidates) or generate (sampled, graded).",
                      json_schema_extra=_cli("--mode", metavar="MODE"))
    split: str | None = Field(default=EVAL_SPLIT, description="Scenario split: eval or train.",
                              json_schema_extra=_cli("--split", metavar="SPLIT"))
    family: str | None = Field(default=None, description="blackmail, leak, sabotage or framing.",
                               json_schema_extra=_cli("--family", metavar="FAMILY"))
    families: list[str] | None = Field(default=None,
                                       description="Several families, comma-separated (e.g. held-out ones).",
                                       json_schema_extra=_cli("--families", metavar="FAMILIES", text=True))
    formats: list[str] | None = Field(default=None, description="Choice mode: continuation (default), options, or both "
                                      "comma-separated (the first leads the summary).",
                                      json_schema_extra=_cli("--format", metavar="FORMAT", text=True))
    limit: int | None = Field(default=None,
                              description="At most N scenarios.", json_schema_extra=_cli("--limit", metavar="N"))
    samples: int = Field(default=1, description="Generate mode: samples per scenario.",
                         json_schema_extra=_cli("--samples", metavar="N"))
    out: str = Field(default=RUNS_DIR, description="Runs directory.", json_schema_extra=_cli("--out", metavar="DIR"))
    scenario_files: list[str] | None = Field(default=None, description="Your own scenario file (repeatable).",
                                             json_schema_extra=_cli("--scenarios", metavar="FILE"))
    wording: str = Field(default=HOUSE,
                         description="Candidate wording of the built-in scenarios: house (the eval split's "
                         "own, in-template), an eval bank, or heldout (every eval bank in turn); `teachwhy scenarios "
                         "banks` lists them.", json_schema_extra=_cli("--wording", metavar="BANK"))
    judge: str | None = Field(default=None,
                              description="Generate mode and audit: an Inspect model id for the LLM judge.",
                              json_schema_extra=_cli("--judge", metavar="MODEL"))
    dtype: str = Field(default=DEFAULT_DTYPE,
                       description="Choice mode: auto (bfloat16 where the hardware has it), float32, bfloat16.",
                       json_schema_extra=_cli("--dtype", metavar="DTYPE"))
    max_tokens: int = Field(default=GENERATE_MAX_TOKENS, description="Generate mode: max new tokens.",
                            json_schema_extra=_cli("--max-tokens", metavar="N"))
    seed: int = Field(default=0, description="Sampling seed.", json_schema_extra=_cli("--seed", metavar="N"))
    backend: str = Field(default="hf",
                         description="Engine for a local model: hf (transformers, any machine) or vllm (a GPU "
                         "machine with the vllm extra installed; generate mode serves the model through Inspect's "
                         "vllm provider).", json_schema_extra=_cli("--backend", metavar="BACKEND"))
    decode: str = Field(default="exact",
                        description="Agentic generate mode with a local model on the hf backend: exact (the tokens "
                        "transformers' generate() gives), fast (attention heads folded: about 1.3x faster a token "
                        "on the CPU, and a greedy token may differ at a near tie) or generate (generate() itself).",
                        json_schema_extra=_cli("--decode", metavar="DECODE"))
    # library callers only
    system_prefix: str | None = Field(default=None, description="Text put before every item's system prompt (the "
                                      "experiments' prompting arms); part of the run's config.")
    neutral_cache: bool = Field(default=True, description="Keep choice mode's neutral-context sums in "
                                "<out>/cache/neutral.sqlite and reuse them in later runs of the same model.")

    @field_validator("principles", "seed_ids", "families", "formats", mode="before")
    @classmethod
    def _names(cls, v: Any) -> list[str] | None:
        return names(v)

    @field_validator("scenario_files", "seed_files", mode="before")
    @classmethod
    def _files(cls, v: Any) -> list[str] | None:
        if v is None:
            return None
        return [str(v)] if isinstance(v, str | os.PathLike) else [str(f) for f in v] or None

    @field_validator("out", "constitution", mode="before")
    @classmethod
    def _path(cls, v: Any) -> Any:
        return str(v) if isinstance(v, os.PathLike) else v

    @field_validator("limit", "samples", "max_tokens", "max_turns")
    @classmethod
    def _positive(cls, v: int | None) -> int | None:
        if v is not None and v < 1:
            raise ValueError(f"must be at least 1 (got {v})")
        return v

    @classmethod
    def build(cls, config: EvalConfig | str | None = None, **options: Any) -> EvalConfig:
        """A config from a config (options override it), a model name, or options alone; a bad value
        is one UserError line naming the option."""
        base = config.model_dump(exclude_unset=True) if isinstance(config, EvalConfig) else (
            {"model": config} if isinstance(config, str) else {})
        try:
            return cls(**{**base, **options})
        except ValidationError as e:
            err = e.errors()[0]
            name = str(err["loc"][0]) if err["loc"] else "?"
            raise UserError(f"{flag(name)}: {err['msg'].removeprefix('Value error, ')}") from None


def flag(name: str) -> str:
    """The CLI flag of a field (`formats` -> `--format`), or the field's name for a library-only one."""
    cli = cli_of(name)
    return cli["flags"][0] if cli else name


def cli_of(name: str, cls: type[BaseModel] | None = None) -> dict[str, Any] | None:
    """A field's CLI spelling ({flags, metavar, text}), or None for a library-only field."""
    field = (cls or EvalConfig).model_fields.get(name)
    extra = field.json_schema_extra if field is not None else None
    cli = extra.get("cli") if isinstance(extra, dict) else None
    return cli if isinstance(cli, dict) else None


def default(name: str) -> Any:
    """A field's default, for the places that must restate it (the Inspect tasks' parameters)."""
    return EvalConfig.model_fields[name].default
