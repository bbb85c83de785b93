"""Each suite refuses, in one line, an option it would otherwise ignore (checked before any model
loads), and a name list that names nothing is an error, not "all"."""

from __future__ import annotations

import pytest

from teachwhy.errors import UserError
from teachwhy.evals import suites
from teachwhy.evals.config import EvalConfig
from teachwhy.evals.execute import parse_formats


@pytest.mark.parametrize("suite, kw, msg", [
    ("agentic", {"max_turns": 6}, "--max-turns applies to --suite audit"),
    ("adherence", {"max_turns": 6}, "--max-turns applies to --suite audit"),
    ("audit", {"offline": True, "formats": "options"}, "--format applies to choice-mode"),
])
def test_ignored_option_is_refused(suite, kw, msg):
    with pytest.raises(UserError, match=msg):
        suites.get(suite).check(EvalConfig(suite=suite, **kw))


def test_defaults_pass():
    for suite, kw in (("agentic", {}), ("adherence", {}), ("audit", {"offline": True})):
        suites.get(suite).check(EvalConfig(suite=suite, **kw))


def test_a_list_of_nothing_is_an_error():
    with pytest.raises(ValueError, match="at least one name"):
        EvalConfig(families=",")
    with pytest.raises(UserError, match="--format needs at least one"):
        parse_formats(",")
