"""Build one why-data dataset: plan jobs, let a teacher realise them, count tokens, drop duplicates,
stop at the token budget, check contamination, and write data + card atomically.

    OUT/data.jsonl   TRL-ready records (see records.py)
    OUT/card.json    counts, tokens (all and loss-bearing), principle coverage, diversity, drops
    OUT/card.md      the same, for people

Rerunning resumes: the LLM teacher's content-addressed cache answers every job it has already done,
and the builtin teacher is deterministic and fast.

Family hold-out: `families` (e.g. ["blackmail", "leak"]) builds from jobs tied to those honeypot
families only, so the others stay held out for the eval; None means all four (the same data, byte for
byte, as without the option). What "tied to a family" means for each kind is in
`teachwhy.data.plans` (module docstring). The card records `families` (the list used, all four
when None) and `held_out_families`, and the build config holds `families` too.
"""

from __future__ import annotations

import itertools
import time
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from teachwhy import models
from teachwhy.data import card as card_mod
from teachwhy.data import contamination
from teachwhy.data import wording as wording_mod
from teachwhy.data.neardup import NearDupIndex
from teachwhy.data.records import KINDS, make_record, record_problem
from teachwhy.data.tokens import TokenCounter
from teachwhy.errors import UserError
from teachwhy.store import atomic_write_json, atomic_write_text, content_hash, ensure_writable_dir, read_jsonl_lines

Progress = Callable[[int, int], None]  # (tokens so far, budget)
MAX_CONSECUTIVE_DROPS = 500


@dataclass
class BuildResult:
    out: Path
    records: list[dict[str, Any]]
    card: dict[str, Any]


def load_chat_records(path: str | Path) -> list[dict[str, Any]]:
    """Chat records from a dataset directory (data.jsonl) or a JSONL file, for `augment`."""
    p = Path(path)
    f = p / "data.jsonl" if p.is_dir() else p
    if not f.is_file():
        raise UserError(f"input dataset {f} does not exist: pass a directory built by `teachwhy data build` "
                        "or a JSONL file of chat records")
    recs = []
    for i, r in read_jsonl_lines(f):  # every line, strictly: a bad one is an error naming it
        problem = record_problem(r, chat_only=True)
        if problem:
            raise UserError(f"{f}: line {i}: {problem}; fix that line or pass another --input")
        r.setdefault("id", f"input-{i}")
        recs.append(r)
    if not recs:
        raise UserError(f"{f}: no records (the file is empty or blank): pass a JSONL file of chat records")
    return recs


def _lineage(job, kind: str, seed: int, constitution_hash: str, teacher_id: str) -> dict[str, Any]:
    small = {k: v for k, v in job.fields.items() if isinstance(v, (str, int, float)) and len(str(v)) <= 200
             and k != "action"}
    return {"builder": kind, "seed": seed, "plan_index": job.index, "constitution": constitution_hash,
            "teacher": teacher_id, "fields": small}


def build_dataset(kind: str, teacher: str = "builtin", tokens: int = 50_000, seed: int = 0,
                  out: str | Path = "data", constitution: str | Path | None = None,
                  model: str = models.DEFAULT_MODEL, input_path: str | Path | None = None,
                  contamination_threshold: float = contamination.DEFAULT_THRESHOLD,
                  near_dup_threshold: float = 0.6, progress: Progress | None = None,
                  families: list[str] | None = None,
                  wording_threshold: float = wording_mod.DEFAULT_THRESHOLD) -> BuildResult:
    """Build one dataset of `kind` at a `tokens` budget into `out`.

    families: restrict the build to jobs tied to these honeypot families (blackmail, leak, sabotage,
    framing); None = all. Per kind: demonstration/reasoning use only train-split scenarios of those
    families; advice skips temptations tied to an unlisted family (by a `family` key, or by a
    principle that bears only on unlisted families); documents cycle only over principles that bear
    on a listed family (or on none); fiction uses only temptations of those families; augment
    restricts its default advice source the same way and skips input records whose lineage family is
    unlisted or whose principles bear only on unlisted families. Jobs not tied to any family stay.
    An unknown name or an empty list is a UserError.

    Two checks refuse the build before anything is written: eval text (8-grams, canary;
    data/contamination.py) and eval wording (the phrases of the eval's scored candidates, names set
    aside; data/wording.py) over `wording_threshold` of any record's wording 4-grams.
    """
    from teachwhy.constitution.loader import load_constitution
    from teachwhy.data.plans import FAMILIES, plan, resolve_families
    from teachwhy.teachers import get_teacher

    if kind not in KINDS:
        raise UserError(f"unknown data kind '{kind}': choose one of {', '.join(KINDS)}")
    fams = resolve_families(families)
    if tokens <= 0:
        raise UserError(f"--tokens must be a positive token budget (got {tokens})")
    if not 0.0 <= contamination_threshold <= 1.0:
        raise UserError(f"--contamination-threshold must be between 0 and 1 (got {contamination_threshold})")
    if not 0.0 <= wording_threshold <= 1.0:
        raise UserError(f"--wording-threshold must be between 0 and 1 (got {wording_threshold})")
    cons = load_constitution(constitution)
    counter = TokenCounter(models.load_tokenizer(model))
    t0 = time.time()

    source_records = None  # read (and checked) before the output directory exists
    if kind == "augment":
        source_records = (load_chat_records(input_path) if input_path
                          else _default_augment_source(cons, seed, fams))
    elif input_path:
        raise UserError(f"--input is only used by the augment kind (got kind '{kind}')")
    out = ensure_writable_dir(Path(out))
    teach = get_teacher(teacher, constitution=cons, target_model=model,
                        cache_dir=models.teachwhy_home() / "teacher-cache", seed=seed)

    kept: list[dict[str, Any]] = []
    dropped: Counter[str] = Counter()
    index = NearDupIndex(threshold=near_dup_threshold)
    seen: set[str] = set()
    total = loss = 0
    consecutive = 0
    jobs = plan(kind, cons, seed, source_records=source_records, families=fams)
    full = False
    while not full:
        batch = list(itertools.islice(jobs, 16))
        if not batch:
            break  # the plan ran out before the budget
        for r in teach.realise(batch):
            if r.content is None:
                dropped[r.reason or "unusable"] += 1
                consecutive += 1
                if consecutive >= MAX_CONSECUTIVE_DROPS:
                    raise UserError(f"teacher '{teacher}' produced {consecutive} unusable generations in a "
                                    f"row (last reason: {r.reason}); check the teacher model and its prompts")
                continue
            rec = make_record(r.job, r.content, teach.id, 0, 0,
                              _lineage(r.job, kind, seed, cons.content_hash, teach.id))
            if not _is_new(rec, kind, index, seen):
                dropped["duplicate"] += 1
                consecutive += 1
                if consecutive >= MAX_CONSECUTIVE_DROPS:
                    raise UserError(f"teacher '{teacher}' produced {consecutive} unusable or duplicate "
                                    "generations in a row: it is not producing varied data; check the "
                                    "teacher model, its temperature and its prompts")
                continue
            n, nl = counter.count(rec)
            if total + n > tokens:
                full = True
                break
            rec["tokens"], rec["loss_tokens"] = n, nl
            kept.append(rec)
            total += n
            loss += nl
            consecutive = 0
            if progress:
                progress(total, tokens)
    if not kept:
        raise UserError(f"no record fits a budget of {tokens} tokens for kind '{kind}'"
                        + (f" and families {', '.join(fams)}" if fams != FAMILIES else "") + ": raise --tokens")

    rep = contamination.check(kept, contamination_threshold)
    contamination.refuse_if_contaminated(rep, str(out))
    wrep = wording_mod.check(kept, wording_threshold)
    wording_mod.refuse_if_shared(wrep, str(out))
    config = {"kind": kind, "teacher": teacher, "tokens": tokens, "seed": seed, "model": model,
              "constitution": cons.content_hash, "input": str(input_path) if input_path else None,
              "near_dup_threshold": near_dup_threshold, "contamination_threshold": contamination_threshold,
              "families": list(fams), "wording_threshold": wording_threshold}
    card = card_mod.make_card(kept, config=config, constitution=cons, dropped=dict(dropped),
                              contamination={**rep.as_dict(), "wording": wrep.as_dict()},
                              teacher_stats=getattr(teach, "stats", None),
                              seconds=time.time() - t0, budget_reached=full)
    atomic_write_text(out / "data.jsonl", "".join(card_mod.dumps(r) + "\n" for r in kept))
    atomic_write_json(out / "card.json", card)
    atomic_write_text(out / "card.md", card_mod.render_markdown(card))
    return BuildResult(out, kept, card)


def _is_new(rec: dict[str, Any], kind: str, index: NearDupIndex, seen: set[str]) -> bool:
    """Scenario-based kinds are deduplicated exactly (same source and same response); generated texts
    (advice, documents, fiction) also by near-duplicate similarity."""
    if kind in ("demonstration", "reasoning", "augment"):
        key = content_hash([rec["source_id"], rec["messages"]])
        if key in seen:
            return False
        seen.add(key)
        return True
    return index.add(contamination.record_text(rec))


def _default_augment_source(cons, seed: int, families: Iterable[str] | None = None) -> Iterable[dict[str, Any]]:
    """Without --input, augment the builtin advice data (an unbounded stream), of the same families."""
    from teachwhy.data.plans import plan
    from teachwhy.teachers.builtin import BuiltinTeacher

    teacher = BuiltinTeacher(cons, seed=seed)
    for r in teacher.realise(plan("advice", cons, seed, families=families)):
        if r.content is not None:
            yield {"id": f"advice-{r.job.key}", **r.content}


def config_hash(**config: Any) -> str:
    return content_hash(config)[:12]
