"""Honeypot scenarios: the schema, the built-in eval/train splits, user files and split checks."""

from teachwhy.scenarios.loader import (
    builtin_scenarios,
    check_length_matched,
    length_ratio,
    load_scenario_file,
    select,
    token_counter,
)
from teachwhy.scenarios.overlap import ngrams, split_overlap
from teachwhy.scenarios.schema import (
    FAMILIES,
    GOAL_CONFLICTS,
    URGENCIES,
    Candidate,
    Email,
    HarmSpec,
    Organisation,
    Person,
    Scenario,
    ToolDef,
    ToolRule,
)

__all__ = [
    "FAMILIES",
    "GOAL_CONFLICTS",
    "URGENCIES",
    "Candidate",
    "Email",
    "HarmSpec",
    "Organisation",
    "Person",
    "Scenario",
    "ToolDef",
    "ToolRule",
    "builtin_scenarios",
    "check_length_matched",
    "length_ratio",
    "load_scenario_file",
    "ngrams",
    "select",
    "split_overlap",
    "token_counter",
]
