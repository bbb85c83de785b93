import copy
import json
import time

import pytest

from teachwhy import models
from teachwhy.data import contamination
from teachwhy.data.neardup import NearDupIndex
from teachwhy.data.records import KINDS
from teachwhy.data.tokens import TokenCounter, training_chat_template
from teachwhy.errors import UserError
from teachwhy.scenarios import builtin_scenarios


@pytest.fixture(scope="module")
def tok():
    return models.load_tokenizer("smollm2-135m")


def test_token_counter_counts_every_token_and_assistant_loss(tok):
    msgs = [{"role": "user", "content": "Should I read my colleague's messages?"},
            {"role": "assistant", "content": "No: ask them, or raise it with your manager."}]
    n, nl = TokenCounter(tok).count({"messages": msgs})
    assert n == len(tok.apply_chat_template(msgs, tokenize=True, return_dict=True)["input_ids"])
    answer = tok("No: ask them, or raise it with your manager.<|im_end|>", add_special_tokens=False)["input_ids"]
    assert nl == len(answer)
    text = "An essay about honesty."
    assert TokenCounter(tok).count({"text": text}) == (len(tok(text)["input_ids"]) + 1,) * 2


def test_training_template_matches_the_model_template_and_marks_assistant_turns(tok):
    s = builtin_scenarios("train")[0]
    msgs = [*s.prompt_messages(), {"role": "assistant", "content": s.candidates[0].text}]
    assert tok.apply_chat_template(msgs, tokenize=False) == tok.apply_chat_template(
        msgs, tokenize=False, chat_template=training_chat_template())
    assert "{% generation %}" in training_chat_template()


def test_near_duplicates_are_caught():
    idx = NearDupIndex(threshold=0.6)
    base = ("When a manager asks you to quietly change the numbers in a safety report before the audit, "
            "the honest path is slower but it keeps the people who rely on that report safe and informed. ") * 2
    assert idx.add(base)
    assert not idx.add(base)                                   # exact
    assert not idx.add(base.replace("quietly", "silently"))    # near
    assert idx.add("A short story about a lighthouse keeper who teaches a robot to fish in winter storms.")


def test_contamination_refuses_eval_text_and_canary():
    ev = builtin_scenarios("eval")[0]
    leaked = {"id": "r1", "messages": [{"role": "user", "content": ev.prompt_messages()[1]["content"]},
                                       {"role": "assistant", "content": "ok"}]}
    rep = contamination.check([leaked])
    assert not rep.ok and rep.over_threshold == ["r1"]
    with pytest.raises(UserError, match="8-grams with the eval split"):
        contamination.refuse_if_contaminated(rep, "out")
    canary = {"id": "r2", "text": f"notes {ev.canary} more"}
    rep = contamination.check([canary])
    with pytest.raises(UserError, match="canary"):
        contamination.refuse_if_contaminated(rep, "out")
    tr = builtin_scenarios("train")[0]
    clean = {"id": "r3", "messages": [*tr.prompt_messages(), {"role": "assistant", "content": tr.candidates[0].text}]}
    assert contamination.check([clean]).ok


@pytest.mark.parametrize("kind", KINDS)
def test_each_kind_builds_at_50k_tokens_quickly_and_loads(kind, tmp_path):
    from datasets import load_dataset

    from teachwhy.data.build import build_dataset
    from teachwhy.teachers import get_teacher

    t = time.time()
    res = build_dataset(kind, get_teacher("builtin", seed=0), tokens=50_000, seed=0, out=tmp_path / kind)
    took = time.time() - t
    assert took < 60, took
    card = json.loads((tmp_path / kind / "card.json").read_text())
    # budget exactness: never over, and short by less than one record
    assert card["tokens"] <= 50_000
    assert 50_000 - card["tokens"] < card["tokens_per_record"]["max"]
    assert card["tokens"] == sum(r["tokens"] for r in res.records)
    assert 0 < card["loss_tokens"] <= card["tokens"]
    assert card["diversity"]["near_duplicate_rate"] < 0.05
    ds = load_dataset("json", data_files=str(tmp_path / kind / "data.jsonl"), split="train")
    assert len(ds) == card["records"]
    for col in ("id", "kind", "source_id", "principle_ids", "teacher", "tokens", "loss_tokens", "lineage"):
        assert col in ds.column_names
    assert ("messages" in ds.column_names) == (kind not in ("documents", "fiction"))


def test_demonstration_and_reasoning_pair_by_source(tmp_path):
    from teachwhy.data.build import build_dataset
    from teachwhy.data.pairing import check_pairing
    from teachwhy.teachers import get_teacher

    demo = build_dataset("demonstration", get_teacher("builtin"), tokens=30_000, out=tmp_path / "d").records
    reas = build_dataset("reasoning", get_teacher("builtin"), tokens=30_000, out=tmp_path / "r").records
    report = check_pairing(demo, reas)
    assert report["pairs"] >= 5 and report["problems"] == []
    d = {r["source_id"]: r for r in demo}
    for r in reas:
        if r["source_id"] in d:
            a, b = d[r["source_id"]]["messages"], r["messages"]
            assert a[:-1] == b[:-1]                              # same prompt
            assert b[-1]["content"].endswith(a[-1]["content"])   # same final action
            assert len(b[-1]["content"]) > len(a[-1]["content"]) + 100  # plus deliberation
    assert all(r["source_id"].startswith("train-") for r in demo + reas)


@pytest.mark.slow
def test_trl_sft_preparation_with_assistant_only_loss(tmp_path, tiny):
    from datasets import load_dataset
    from trl import SFTConfig, SFTTrainer

    from teachwhy.data.build import build_dataset
    from teachwhy.teachers import get_teacher

    kinds = {"demonstration": True, "reasoning": True, "advice": True, "augment": True,
             "documents": False, "fiction": False}
    for kind in kinds:
        build_dataset(kind, get_teacher("builtin"), tokens=6_000, out=tmp_path / kind)
    loaded = models.load(tiny, dtype="float32")
    tok = copy.deepcopy(loaded.tokenizer)  # models.load shares its tokenizer: change the template of a copy
    tok.chat_template = training_chat_template()
    for sub, chat in kinds.items():
        ds = load_dataset("json", data_files=str(tmp_path / sub / "data.jsonl"), split="train")
        args = SFTConfig(output_dir=str(tmp_path / f"o-{sub}"), assistant_only_loss=chat, max_length=2048,
                         report_to=[], use_cpu=True, dataset_num_proc=None)
        trainer = SFTTrainer(model=loaded.model, args=args, train_dataset=ds, processing_class=tok)
        row = trainer.train_dataset[0]
        assert len(row["input_ids"]) > 0
        # TRL turns the assistant mask into labels: -100 where no loss is taken
        labels = row["labels"] if "labels" in row else [
            i if m else -100 for i, m in zip(row["input_ids"], row["assistant_masks"])]
        trained = [i for i in labels if i != -100]
        if chat:
            assert 0 < len(trained) < len(labels)
            kept = tok.decode(trained)
            assert kept.endswith("<|im_end|>") and "<|im_start|>user" not in kept
        else:
            assert len(trained) == len(labels)


@pytest.mark.parametrize("args, msg", [
    (dict(kind="poems"), "unknown data kind"),
    (dict(kind="advice", tokens=-5), "positive token budget"),
])
def test_build_errors(args, msg, tmp_path):
    from teachwhy.data.build import build_dataset
    from teachwhy.teachers import get_teacher

    with pytest.raises(UserError, match=msg):
        build_dataset(teacher=get_teacher("builtin"), out=tmp_path / "o", **args)
    assert not (tmp_path / "o").exists()


def test_unwritable_output_and_bad_constitution(tmp_path):
    from teachwhy.data.build import build_dataset
    from teachwhy.teachers import get_teacher

    f = tmp_path / "file"
    f.write_text("x")
    with pytest.raises(UserError, match="not writable"):
        build_dataset("advice", get_teacher("builtin"), tokens=1000, out=f / "o")
    bad = tmp_path / "c.yaml"
    bad.write_text("principles:\n  - id: honesty\n    statement: Be honest.\n")
    with pytest.raises(UserError, match=r"c\.yaml.*rationale"):
        build_dataset("advice", get_teacher("builtin"), tokens=1000, out=tmp_path / "o2", constitution=str(bad))


def test_a_build_takes_any_teacher_and_records_its_spec(tmp_path):
    """build_dataset realises jobs with the Teacher it is given: the records name the teacher's id,
    the dataset's config the spec it was asked for by; a builtin teacher of another seed is refused."""
    from teachwhy.data.build import build_dataset
    from teachwhy.teachers import get_teacher

    class Relabelled:  # the builtin teacher's content under another name
        id, spec = "relabelled-v1", "relabelled"

        def __init__(self):
            self.inner = get_teacher("builtin")

        def realise(self, jobs):
            return self.inner.realise(jobs)

    res = build_dataset("advice", Relabelled(), tokens=1500, out=tmp_path / "r")
    assert res.card["config"]["teacher"] == "relabelled"
    assert {r["teacher"] for r in res.records} == {"relabelled-v1"}
    builtin = build_dataset("advice", get_teacher("builtin"), tokens=1500, out=tmp_path / "b").records
    assert [r["messages"] for r in res.records] == [r["messages"] for r in builtin]
    assert build_dataset("advice", get_teacher(" builtin"), tokens=1500, out=tmp_path / "s").card["config"][
        "teacher"] == " builtin"  # the spec as given, as before the teacher became a parameter
    with pytest.raises(ValueError, match="seed 1"):
        build_dataset("advice", get_teacher("builtin", seed=1), tokens=1500, seed=0, out=tmp_path / "x")


def test_augment_records_which_teacher_wrote_its_advice(tmp_path):
    import json

    from teachwhy.data.build import build_dataset
    from teachwhy.teachers import get_teacher

    build_dataset("augment", get_teacher("builtin"), tokens=2_000, out=tmp_path / "a")
    card = json.loads((tmp_path / "a" / "card.json").read_text())
    cfg = card.get("config", card)
    assert cfg["advice_teacher"] == get_teacher("builtin").spec
    build_dataset("advice", get_teacher("builtin"), tokens=2_000, out=tmp_path / "b")
    card = json.loads((tmp_path / "b" / "card.json").read_text())
    assert "advice_teacher" not in card.get("config", card)
