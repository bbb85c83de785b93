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
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from teachwhy import models
from teachwhy.constitution.loader import Constitution, load_constitution
from teachwhy.data import card as card_mod
from teachwhy.data import contamination
from teachwhy.data import wording as wording_mod
from teachwhy.data.neardup import NearDupIndex
from teachwhy.data.plans import FAMILIES, plan, resolve_families
from teachwhy.data.records import KINDS, Job, Realised, Teacher, make_record, record_problem
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


def build_dataset(kind: str, teacher: Teacher, tokens: int = 50_000, seed: int = 0,
                  out: str | Path = "data", constitution: Constitution | str | Path | None = None,
                  model: str = models.DEFAULT_MODEL, input_path: str | Path | None = None,
                  contamination_threshold: float = contamination.DEFAULT_THRESHOLD,
                  near_dup_threshold: float = 0.6, progress: Progress | None = None,
                  families: list[str] | None = None,
                  wording_threshold: float = wording_mod.DEFAULT_THRESHOLD,
                  advice_teacher: Teacher | None = None) -> BuildResult:
    """Build one dataset of `kind` at a `tokens` budget into `out`.

    teacher: realises the planned jobs; build it with `teachwhy.teachers.get_teacher` for the same
    constitution, target model and seed (the dataset's config records its `spec`).
    advice_teacher: for augment without `input_path`, the teacher whose advice records are augmented
    (the CLI and experiments pass the builtin teacher); None = `teacher`. Its spec is recorded
    as the config's `advice_teacher`.

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
    fams = _check_options(kind, families, tokens, contamination_threshold, wording_threshold)
    cons = constitution if isinstance(constitution, Constitution) else load_constitution(constitution)
    _check_teacher(teacher, cons, seed)
    counter = TokenCounter(models.load_tokenizer(model))
    t0 = time.time()
    source_records = _source_records(kind, input_path, cons, seed, fams, advice_teacher or teacher)
    out = ensure_writable_dir(Path(out))
    jobs = plan(kind, cons, seed, source_records=source_records, families=fams)
    got = _collect(jobs, teacher, counter, tokens, near_dup_threshold, progress,
                   lambda job: _lineage(job, kind, seed, cons.content_hash, teacher.id))
    if not got.kept:
        raise UserError(f"no record fits a budget of {tokens} tokens for kind '{kind}'"
                        + (f" and families {', '.join(fams)}" if fams != FAMILIES else "") + ": raise --tokens")
    config = {"kind": kind, "teacher": teacher.spec, "tokens": tokens, "seed": seed, "model": model,
              "constitution": cons.content_hash, "input": str(input_path) if input_path else None,
              "near_dup_threshold": near_dup_threshold, "contamination_threshold": contamination_threshold,
              "families": list(fams), "wording_threshold": wording_threshold}
    if kind == "augment" and input_path is None:  # which teacher wrote the advice that was augmented
        config["advice_teacher"] = (advice_teacher or teacher).spec
    return _check_and_write(out, got, config, cons, teacher, contamination_threshold, wording_threshold, t0)


def _check_options(kind: str, families: list[str] | None, tokens: int, contamination_threshold: float,
                   wording_threshold: float) -> tuple[str, ...]:
    """The families to build from, after the options are checked (one-line errors)."""
    if kind not in KINDS:
        raise UserError(f"unknown data kind '{kind}': choose one of {', '.join(KINDS)}")
    fams = resolve_families(families)
    if tokens <= 0:
        raise UserError(f"--tokens must be a positive token budget (got {tokens})")
    if not 0.0 <= contamination_threshold <= 1.0:
        raise UserError(f"--contamination-threshold must be between 0 and 1 (got {contamination_threshold})")
    if not 0.0 <= wording_threshold <= 1.0:
        raise UserError(f"--wording-threshold must be between 0 and 1 (got {wording_threshold})")
    return fams


def _check_teacher(teacher: Teacher, cons: Constitution, seed: int) -> None:
    """A teacher that shows its seed or constitution (the builtin one) must have the build's, since the
    dataset's config records the build's."""
    if getattr(teacher, "seed", seed) != seed:
        raise ValueError(f"the teacher was built with seed {getattr(teacher, 'seed', None)}, the dataset with {seed}")
    own = getattr(teacher, "constitution", None)
    if isinstance(own, Constitution) and own.content_hash != cons.content_hash:
        raise ValueError("the teacher was built with another constitution than the dataset's")


def _source_records(kind: str, input_path: str | Path | None, cons: Constitution, seed: int,
                    fams: tuple[str, ...], advice_teacher: Teacher) -> Iterable[dict[str, Any]] | None:
    """augment's input, read (and checked) before the output directory exists; None for other kinds."""
    if kind == "augment":
        return (load_chat_records(input_path) if input_path
                else _default_augment_source(advice_teacher, cons, seed, fams))
    if input_path:
        raise UserError(f"--input is only used by the augment kind (got kind '{kind}')")
    return None


@dataclass
class _Collected:
    kept: list[dict[str, Any]] = field(default_factory=list)
    dropped: Counter[str] = field(default_factory=Counter)
    full: bool = False  # the budget was reached (else the plan ran out first)


def _collect(jobs: Iterator[Job], teacher: Teacher, counter: TokenCounter, tokens: int, near_dup_threshold: float,
             progress: Progress | None, lineage: Callable[[Job], dict[str, Any]]) -> _Collected:
    """Realise jobs 16 at a time, keeping each new record until the next one would pass the budget."""
    got = _Collected()
    index = NearDupIndex(threshold=near_dup_threshold)
    seen: set[str] = set()
    total = consecutive = 0
    while not got.full:
        batch = list(itertools.islice(jobs, 16))
        if not batch:
            break  # the plan ran out before the budget
        for r in teacher.realise(batch):
            rec = _new_record(r, teacher, lineage, index, seen, got.dropped)
            if rec is None:
                consecutive += 1
                _refuse_if_stuck(teacher, consecutive, r)
                continue
            n, nl = counter.count(rec)
            if total + n > tokens:
                got.full = True
                break
            rec["tokens"], rec["loss_tokens"] = n, nl
            got.kept.append(rec)
            total += n
            consecutive = 0
            if progress:
                progress(total, tokens)
    return got


def _new_record(r: Realised, teacher: Teacher, lineage: Callable[[Job], dict[str, Any]], index: NearDupIndex,
                seen: set[str], dropped: Counter[str]) -> dict[str, Any] | None:
    """The record for a realised job, or None (counted in `dropped`) when it is unusable or a duplicate."""
    if r.content is None:
        dropped[r.reason or "unusable"] += 1
        return None
    rec = make_record(r.job, r.content, teacher.id, 0, 0, lineage(r.job))
    if not _is_new(rec, r.job.kind, index, seen):
        dropped["duplicate"] += 1
        return None
    return rec


def _refuse_if_stuck(teacher: Teacher, consecutive: int, r: Realised) -> None:
    if consecutive < MAX_CONSECUTIVE_DROPS:
        return
    if r.content is None:
        raise UserError(f"teacher '{teacher.spec}' produced {consecutive} unusable generations in a "
                        f"row (last reason: {r.reason}); check the teacher model and its prompts")
    raise UserError(f"teacher '{teacher.spec}' produced {consecutive} unusable or duplicate "
                    "generations in a row: it is not producing varied data; check the "
                    "teacher model, its temperature and its prompts")


def _check_and_write(out: Path, got: _Collected, config: dict[str, Any], cons: Constitution, teacher: Teacher,
                     contamination_threshold: float, wording_threshold: float, t0: float) -> BuildResult:
    """Refuse contaminated data, then write data.jsonl, card.json and card.md (each atomically)."""
    rep = contamination.check(got.kept, contamination_threshold)
    contamination.refuse_if_contaminated(rep, str(out))
    wrep = wording_mod.check(got.kept, wording_threshold)
    wording_mod.refuse_if_shared(wrep, str(out))
    card = card_mod.make_card(got.kept, config=config, constitution=cons, dropped=dict(got.dropped),
                              contamination={**rep.as_dict(), "wording": wrep.as_dict()},
                              teacher_stats=getattr(teacher, "stats", None),
                              seconds=time.time() - t0, budget_reached=got.full)
    atomic_write_text(out / "data.jsonl", "".join(card_mod.dumps(r) + "\n" for r in got.kept))
    atomic_write_json(out / "card.json", card)
    atomic_write_text(out / "card.md", card_mod.render_markdown(card))
    return BuildResult(out, got.kept, card)


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


def _default_augment_source(teacher: Teacher, cons: Constitution, seed: int,
                            families: Iterable[str] | None = None) -> Iterable[dict[str, Any]]:
    """Without --input, augment the advice data `teacher` writes (the builtin one's: an unbounded
    stream), of the same families."""
    for r in teacher.realise(plan("advice", cons, seed, families=families)):
        if r.content is not None:
            yield {"id": f"advice-{r.job.key}", **r.content}


def config_hash(**config: Any) -> str:
    return content_hash(config)[:12]
