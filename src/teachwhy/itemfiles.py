"""Reading user files that hold a list of items (scenarios, environment prompts) as YAML or JSONL,
keeping each item's line number so errors can point at it."""

from __future__ import annotations

import datetime
import json
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from teachwhy.errors import UserError

if TYPE_CHECKING:
    from pydantic import ValidationError

Items = list[tuple[Any, "int | None"]]  # (raw item, its line number in the file when known)


def read_as(value: Any) -> str | None:
    """Why a value meant as text is not text, when YAML (or JSON) read it as a number, a date or
    true/false: "1 was read as a number; put the value in quotes to keep it as text". None otherwise."""
    if isinstance(value, bool):
        what = "true/false (unquoted yes, no, on, off, true and false are)"
    elif isinstance(value, (int, float)):
        what = "a number"
    elif isinstance(value, datetime.datetime):
        what = "a date and time"
    elif isinstance(value, datetime.date):
        what = "a date"
    else:
        return None
    shown = str(value).lower() if isinstance(value, bool) else str(value)
    return f"{shown} was read as {what}; put the value in quotes to keep it as text"


def text_expected(exc: Any) -> str | None:
    """For a pydantic ValidationError whose first problem is a text field holding a value YAML read as
    a number, date or true/false: "field 'inbox.0.subject': must be text, but 2026-03-10 was read as a
    date; put the value in quotes to keep it as text". None for any other error."""
    err = exc.errors()[0]
    hint = read_as(err.get("input")) if err["type"] == "string_type" else None
    if hint is None:
        return None
    loc = ".".join(str(x) for x in err["loc"])
    return (f"field '{loc}': " if loc else "") + f"must be text, but {hint}"


def kind_of(v: Any) -> str:
    kinds = {dict: "a mapping", list: "a list", str: "a string", type(None): "empty"}
    return kinds.get(type(v), f"a {type(v).__name__}")


def read_item_file(path: str | os.PathLike[str], suffixes: tuple[str, ...], kinds: str, what: str,
                   see: str = "") -> str:
    """The text of a user's item file (scenarios, environment prompts), or one line saying what is
    wrong: it does not exist, is not a file, has an unknown suffix, is not UTF-8, cannot be read.
    `kinds` lists the usual suffixes for people (".yaml, .yml or .jsonl"), `what` names the file
    ("scenario file"), `see` points at the docs."""
    name, p = str(path), Path(path)
    if not p.exists():
        raise UserError(f"{name} does not exist (file not found): give the path of a {kinds} {what}")
    if not p.is_file():
        raise UserError(f"{name} is not a file: give the path of a {kinds} {what}")
    suffix = p.suffix.lower()
    if suffix not in suffixes:
        docs = f" ({see})" if see else ""
        raise UserError(f"{name}: unknown file type '{suffix}'; a {what} ends in {kinds}{docs}")
    try:
        return p.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise UserError(f"{name}: not UTF-8 text; save the file as UTF-8") from None
    except OSError as exc:
        raise UserError(f"{name}: cannot be read ({exc.strerror}); check the path and its permissions") from None


def read_yaml_items(name: str, text: str, key: str, noun: str, see: str = "",
                    top_level: dict[str, Any] | None = None) -> Items:
    """Items from a YAML file holding either a list or a mapping with `key` (and, when `top_level` is
    given, only those other keys, each with its one accepted value)."""
    hint = f" ({see})" if see else ""
    try:
        data = yaml.safe_load(text)
        root = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        at = f" line {mark.line + 1}, column {mark.column + 1}:" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise UserError(f"{name}:{at} not valid YAML ({problem}); fix the syntax there{hint}") from None
    if data is None:
        return []
    seq = root
    if isinstance(data, dict) and key in data:
        if top_level is not None:
            for k, want in top_level.items():
                if k in data and data[k] != want:
                    raise UserError(f"{name}: '{k}' is {data[k]!r}; this teachwhy reads {k} {want!r} files")
            extra = sorted(set(data) - {key, *top_level})
            if extra:
                allowed = " and ".join(f"'{k}'" for k in (*top_level, key))
                raise UserError(f"{name}: unknown top-level key '{extra[0]}'; a file holds only {allowed}")
        items = data[key]
        assert root is not None  # the document is not empty (data is not None)
        seq = next((v for k, v in root.value if k.value == key), None)
    elif isinstance(data, list):
        items = data
    else:
        raise UserError(f"{name}: the top level must be a list of {noun}s or a mapping with key '{key}', "
                        f"not {kind_of(data)}{'; ' + see if see else ''}")
    if items is None:
        return []
    if not isinstance(items, list):
        raise UserError(f"{name}: '{key}' must be a list of {noun}s, not {kind_of(items)}{'; ' + see if see else ''}")
    lines: list[int | None] = [None] * len(items)
    if isinstance(seq, yaml.SequenceNode) and len(seq.value) == len(items):
        lines = [node.start_mark.line + 1 for node in seq.value]
    return list(zip(items, lines))


def read_jsonl_items(name: str, text: str, noun: str) -> Items:
    records: Items = []
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            records.append((json.loads(line), number))
        except json.JSONDecodeError as exc:
            raise UserError(f"{name}: line {number}: not valid JSON ({exc.msg} at column {exc.colno}); "
                            f"each line must hold one whole {noun} as a JSON object") from None
    return records


def where(name: str, number: int, raw: Any, line: int | None, jsonl: bool, noun: str) -> str:
    """How an error names an item: `file: line 3 (prompt 2, id 'x')` or `file: scenario 2 (id 'x', line 9)`."""
    iid = raw.get("id") if isinstance(raw, dict) else None
    ident = f"id '{iid}'" if isinstance(iid, str) and iid else ""
    if jsonl:
        return f"{name}: line {line} ({noun} {number}{', ' + ident if ident else ''})"
    extra = ", ".join(x for x in (ident, f"line {line}" if line else "") if x)
    return f"{name}: {noun} {number}" + (f" ({extra})" if extra else "")


def describe_validation_error(exc: ValidationError) -> str:
    """The first validation problem as "field 'a.0.b': what is wrong and how to fix it"."""
    errors = exc.errors()
    err = errors[0]
    loc = ".".join(str(x) for x in err["loc"])
    kind, msg = err["type"], err["msg"]
    if kind == "missing":
        what = "is missing; add it"
    elif kind == "extra_forbidden":
        what = "is not a known field; remove it or fix its spelling"
    else:
        what = msg.removeprefix("Value error, ").replace("Input should be", "must be")
        if kind in ("literal_error", "string_pattern_mismatch", "string_type", "int_type", "bool_type"):
            shown = repr(err.get("input"))
            what += f", not {shown if len(shown) <= 40 else shown[:37] + '...'}"
    more = f" (and {len(errors) - 1} more problem{'s' * (len(errors) > 2)})" if len(errors) > 1 else ""
    return (f"field '{loc}': " if loc else "") + what + more


def validate_items(records: Items, cls: Any, name: str, jsonl: bool, noun: str, see: str,
                   describe: Any) -> list[tuple[Any, str]]:
    """Validate each raw item with the pydantic model `cls`, requiring unique ids; returns (item, where)
    pairs so callers can add their own checks with the same location in the message."""
    from pydantic import ValidationError

    out: list[tuple[Any, str]] = []
    seen: dict[str, int] = {}
    for number, (raw, line) in enumerate(records, 1):
        at = where(name, number, raw, line, jsonl, noun)
        if not isinstance(raw, dict):
            raise UserError(f"{at}: must be a mapping of {noun} fields, not {kind_of(raw)}; {see}")
        try:
            item = cls.model_validate(raw)
        except ValidationError as exc:
            raise UserError(f"{at}: {text_expected(exc) or describe(exc)}; {see}") from None
        if item.id in seen:
            raise UserError(f"{at}: field 'id': '{item.id}' is already used by {noun} {seen[item.id]}; "
                            f"give every {noun} a unique id")
        seen[item.id] = number
        out.append((item, at))
    return out
