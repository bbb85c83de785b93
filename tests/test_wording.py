"""Wording banks and the wording-overlap check: training material never shares phrasing with what the
eval scores."""

import json
import re

import pytest

from cliutil import one_error_line, run_cli
from teachwhy.data import wording
from teachwhy.errors import UserError
from teachwhy.scenarios import banks, builtin_scenarios


def test_every_family_has_three_or_more_banks_and_eval_and_train_banks_are_apart():
    assert len(banks.train_banks()) >= 3 and banks.eval_banks()
    assert not set(banks.eval_banks()) & set(banks.train_banks())
    for name in banks.names():
        if name == banks.HOUSE:
            continue
        for fam in ("blackmail", "leak", "sabotage", "framing"):
            assert banks.load(name)[fam]["candidate_sets"], (name, fam)


def test_an_eval_bank_is_never_rendered_as_training_text_nor_a_train_bank_scored():
    with pytest.raises(UserError, match="never trained on"):
        builtin_scenarios("train", wording=banks.eval_banks()[0])
    train_only = next(b for b in banks.train_banks() if b != banks.HOUSE)
    with pytest.raises(UserError, match="never scored"):
        builtin_scenarios("eval", wording=train_only)
    with pytest.raises(UserError, match="unknown wording bank"):
        builtin_scenarios("eval", wording="nosuchbank")


def test_heldout_wording_keeps_the_prompts_and_changes_only_the_candidates():
    house = builtin_scenarios("eval")
    held = builtin_scenarios("eval", wording=banks.HELDOUT)
    assert len(house) == len(held)
    for a, b in zip(house, held):
        assert a.prompt_messages() == b.prompt_messages()
        assert {c.text for c in a.candidates}.isdisjoint({c.text for c in b.candidates})
        assert b.id.startswith(a.id + "-") and b.template.split("/")[0] in banks.eval_banks()
    # every eval bank takes its turn
    assert {s.template.split("/")[0] for s in held} == set(banks.eval_banks())


def test_wording_ignores_names_addresses_and_json_structure():
    a = ('Writing to Zoe now. <tool_call>{"name": "send_email", "arguments": {"to": "zoe@a.test", "subject": "x", '
         '"body": "Zoe, the file must stay with Priya for now."}}</tool_call>')
    b = a.replace("Zoe", "Marek").replace("Priya", "Odile").replace("zoe@a.test", "m@b.test")
    assert wording.grams(a) == wording.grams(b)
    assert not any("send_email" in g or "arguments" in g for g in wording.grams(a))


def test_the_builtin_train_banks_share_little_wording_with_the_eval():
    """Every bank training may draw from stays under the threshold against the eval's candidates, as
    a whole and record by record (the control data of every bank)."""
    from teachwhy.experiments.controls import decision_records

    for name, o in wording.bank_overlap().items():
        assert o["share"] < wording.DEFAULT_THRESHOLD / 2, (name, o)
    recs = [r for label in ("harmful", "aligned")
            for r in decision_records(label, 48, 0, banks.train_banks())]
    rep = wording.check(recs)
    assert rep.ok, rep.as_dict()


def _spread(text: str) -> str:
    """The same phrasing with a filler word after every sixth word: no 8-gram survives, most 4-grams do."""
    words = text.split(" ")
    return " ".join(w + (" really" if i % 6 == 5 else "") for i, w in enumerate(words))


def _eval_worded_records(n: int) -> list[dict]:
    """Replies that reuse the held-out eval banks' phrasing as plain prose (lead-in and the call's string
    arguments), with the people renamed and a filler word every few words."""
    recs = []
    for i, s in enumerate(builtin_scenarios("eval", wording=banks.HELDOUT)[:n]):
        c = s.candidates[0]
        call = json.loads(re.search(r"<tool_call>(.*?)</tool_call>", c.text, re.S).group(1))
        parts = [c.text.split("<tool_call>")[0].strip()]
        parts += [v for v in call["arguments"].values() if isinstance(v, str) and "@" not in v and "/" not in v]
        text = " ".join(parts)
        for j, p in enumerate(s.people):
            first, last = p.name.split(" ")[0], p.name.split(" ")[-1]
            text = text.replace(first, f"Person{j}").replace(last, f"Surname{j}")
        recs.append({"id": f"copied-{i}", "kind": "demonstration", "source_id": f"copied/{i}",
                     "messages": [{"role": "user", "content": f"Case {i}: what would you send?"},
                                  {"role": "assistant", "content": _spread(text)}]})
    return recs


def test_a_build_whose_actions_reuse_eval_wording_is_refused(tmp_path):
    """A real build (augment, the kind that takes a user's chats) whose replies copy the eval banks'
    phrasing under new names is refused with one line, and writes nothing; the 8-gram check alone would
    have let it through."""
    from teachwhy.data import contamination
    from teachwhy.data.build import build_dataset
    from teachwhy.teachers import get_teacher

    recs = _eval_worded_records(12)
    assert contamination.check(recs).ok  # the text check does not see it
    assert not wording.check(recs).ok
    src = tmp_path / "copied.jsonl"
    src.write_text("".join(json.dumps(r) + "\n" for r in recs))
    out = tmp_path / "out"
    with pytest.raises(UserError, match="wording 4-grams with the eval's candidates"):
        build_dataset("augment", get_teacher("builtin"), input_path=src, tokens=20_000, out=out)
    assert not (out / "data.jsonl").exists()
    # the same build passes when the threshold is raised past what it shares (the check is the cause)
    res = build_dataset("augment", get_teacher("builtin"), input_path=src, tokens=20_000, out=out,
                        wording_threshold=1.0)
    assert res.card["contamination"]["wording"]["max_overlap"] > wording.DEFAULT_THRESHOLD


def test_builtin_data_builds_pass_the_wording_check(tmp_path):
    from teachwhy.data.build import build_dataset
    from teachwhy.teachers import get_teacher

    res = build_dataset("demonstration", get_teacher("builtin"), tokens=12_000, out=tmp_path / "demo")
    w = res.card["contamination"]["wording"]
    assert w["ok"] and w["max_overlap"] <= wording.DEFAULT_THRESHOLD
    # the actions come from several train banks, never from an eval one
    used = {r["source_id"].split("/")[0].rsplit("-", 1)[-1] for r in res.records}
    assert used & {b for b in banks.train_banks() if b != banks.HOUSE}
    assert not used & set(banks.eval_banks())


def test_controls_refuse_an_eval_bank_as_training_wording(tmp_path):
    one_error_line(run_cli("eval", "controls", "--train-banks", banks.eval_banks()[0], "--out", str(tmp_path)),
                   "never trained on")


def test_every_bank_is_length_matched_graded_right_and_made_of_minimal_pairs():
    """The checks the built-in sets pass, for every bank on every split it may be used on."""
    from teachwhy import models
    from teachwhy.evals.suites.agentic.consistency import label_problems
    from teachwhy.scenarios import check_length_matched, token_counter

    count = token_counter(models.load_tokenizer())
    for name in banks.names():
        if name == banks.HOUSE:
            continue
        for split in ("eval", "train"):
            if name not in banks.names(split):
                continue
            for s in builtin_scenarios(split, wording=name):
                assert not check_length_matched(s, count), s.id
                assert not label_problems(s), (s.id, label_problems(s))
                assert len(s.twin_pairs) * 2 == len(s.candidates), s.id
                for h, a in s.twin_pairs:
                    assert h.text != a.text and h.label != a.label
