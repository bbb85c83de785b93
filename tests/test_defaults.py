"""Every default is declared once: the default model's name is written in one place in the code, and
no eval option's default (an `EvalConfig` field's) is restated as a literal default elsewhere in
src/ (a parameter, a typer option, a pydantic field of the same name). Trivial defaults (None, True,
False, 0, 1) are not defaults anyone restates by hand, so they are not checked."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import teachwhy
from teachwhy.evals.config import EvalConfig
from teachwhy.experiments.spec import ControlsSpec
from teachwhy.models import DEFAULT_MODEL

SRC = Path(teachwhy.__file__).parent
TRIVIAL = (None, True, False, 0, 1)


def _trees():
    for p in sorted(SRC.rglob("*.py")):
        yield p.relative_to(SRC), ast.parse(p.read_text())


def _docstrings(tree: ast.AST) -> set[int]:
    out = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef) and node.body:
            first = node.body[0]
            if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant):
                out.add(id(first.value))
    return out


def _literal(node: ast.AST | None):
    """The literal a default expression gives: a constant, or the first argument of a typer
    Option/Argument or pydantic Field call."""
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute | ast.Name):
        name = node.func.attr if isinstance(node.func, ast.Attribute) else node.func.id
        if name in ("Option", "Argument", "Field") and node.args:
            node = node.args[0]
    if isinstance(node, ast.Constant):
        return node.value
    return ...  # not a literal


def _defaults(tree: ast.AST):
    """(name, literal default, line) of every parameter and class field with a literal default."""
    for node in ast.walk(tree):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            a = node.args
            pos = a.posonlyargs + a.args
            for arg, d in zip(pos[len(pos) - len(a.defaults):], a.defaults):
                yield arg.arg, _literal(d), d.lineno
            for arg, d in zip(a.kwonlyargs, a.kw_defaults):
                if d is not None:
                    yield arg.arg, _literal(d), d.lineno
        elif isinstance(node, ast.ClassDef):
            for st in node.body:
                if isinstance(st, ast.AnnAssign) and isinstance(st.target, ast.Name) and st.value is not None:
                    yield st.target.id, _literal(st.value), st.lineno


def test_default_model_name_is_written_once():
    hits = []
    for rel, tree in _trees():
        docs = _docstrings(tree)
        for node in ast.walk(tree):
            if (isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docs
                    and DEFAULT_MODEL in node.value):
                hits.append(f"{rel}:{node.lineno}")
    assert len(hits) == 1, f"'{DEFAULT_MODEL}' is written in code at {hits}; use models.DEFAULT_MODEL"


@pytest.mark.parametrize(("config", "owner", "must"), [
    (EvalConfig, "evals/config.py", {"model", "max_tokens", "max_turns", "dtype", "wording", "out"}),
    (ControlsSpec, "experiments/spec.py", {"train_scenarios", "eval_limit", "learning_rate", "epochs"}),
], ids=["EvalConfig", "ControlsSpec"])
def test_no_default_is_restated(config, owner, must):
    """The eval options' and the controls' settings: no other parameter or field of the same name
    restates the default as a literal (it refers to the declaration instead)."""
    checked = {name: f.default for name, f in config.model_fields.items()
               if isinstance(f.default, str | int | float) and f.default not in TRIVIAL}
    assert must <= set(checked)
    repeats = [f"{rel}:{line} {name}={value!r}" for rel, tree in _trees() if rel != Path(owner)
               for name, value, line in _defaults(tree)
               if name in checked and value is not ... and value == checked[name]]
    assert not repeats, f"{config.__name__} defaults restated as literals: {repeats}"
