"""Mixtures of datasets with per-dataset token budgets, tokenized once for training.

Tokens are counted as the data builders count them (`teachwhy.data.tokens`): every token of a record
(prompt and reply under the training chat template, or the whole document plus end-of-text) counts
toward a dataset's budget; the loss-bearing count (assistant tokens for chats, every token of a
document) is reported beside it. Records are taken in file order until the next one would exceed the
budget, so a source contributes at most its budget and falls short by less than one record.

Chats and documents can share one mixture because each record is tokenized here into `input_ids`
plus `assistant_masks` (1 where the loss applies): TRL's SFTTrainer builds labels from that column,
giving assistant-only loss for chats and LM loss for documents in the same run.
"""

from __future__ import annotations

import hashlib
import random
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from teachwhy.data.records import record_problem, tools_of
from teachwhy.data.tokens import training_chat_template
from teachwhy.errors import UserError
from teachwhy.store import read_jsonl_lines
from teachwhy.train.config import DataSource


@dataclass
class SourceReport:
    path: str
    name: str
    kinds: list[str]
    budget: int | None
    records_available: int
    tokens_available: int
    records: int = 0
    tokens: int = 0
    loss_tokens: int = 0
    content_hash: str = ""

    @property
    def short_of_budget(self) -> bool:
        """True when the dataset ran out before its budget was (nearly) reached."""
        return self.budget is not None and self.records == self.records_available and self.tokens < self.budget


@dataclass
class Mixture:
    rows: list[dict[str, Any]]  # {"input_ids", "assistant_masks", "source", "record_id"}
    sources: list[SourceReport] = field(default_factory=list)

    @property
    def tokens(self) -> int:
        return sum(s.tokens for s in self.sources)

    @property
    def loss_tokens(self) -> int:
        return sum(s.loss_tokens for s in self.sources)

    def report(self) -> list[dict[str, Any]]:
        return [{**asdict(s), "short_of_budget": s.short_of_budget} for s in self.sources]


def data_file(source: DataSource) -> Path:
    p = Path(source.path).expanduser()
    if p.is_dir():
        f = p / "data.jsonl"
        if not f.is_file():
            raise UserError(f"dataset directory {p} has no data.jsonl: build it with "
                            f"`teachwhy data build KIND --out {p}` or point --data at a JSONL file")
        return f
    if p.is_file():
        return p
    raise UserError(f"dataset path {p} does not exist: build one with `teachwhy data build KIND --out {p}` "
                    "or give an existing directory or .jsonl file")


def _file_hash(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()[:16]


def encode_record(record: dict[str, Any], tokenizer: Any) -> tuple[list[int], list[int]]:
    """(input_ids, loss mask) of one record under the training template."""
    if "messages" in record:
        out = tokenizer.apply_chat_template(
            record["messages"], tools=tools_of(record) or None, chat_template=training_chat_template(),
            tokenize=True, return_dict=True, return_assistant_tokens_mask=True)
        return list(out["input_ids"]), [int(b) for b in out["assistant_masks"]]
    ids = [*tokenizer(record["text"], add_special_tokens=False)["input_ids"], tokenizer.eos_token_id]
    return ids, [1] * len(ids)


def _check_record(rec: Any, f: Path, line: int) -> None:
    """The record schema of teachwhy.data.records, checked before anything is tokenized."""
    problem = record_problem(rec)
    if problem:
        raise UserError(f"{f}: line {line}: {problem}; fix that line or rebuild the dataset")
    if "messages" in rec and not any(m["role"] == "assistant" for m in rec["messages"]):
        raise UserError(f"{f}: line {line}: a chat record needs an assistant turn to learn from")


def load_mixture(sources: list[DataSource], tokenizer: Any, seed: int = 0,
                 max_length: int | None = None) -> Mixture:
    """Tokenize every source up to its budget and shuffle the union with `seed`.

    Every line of every source is read and checked first (a bad one is a UserError naming its file
    and line). max_length: the trainer truncates records to it and drops those left without a
    loss-bearing token; when that would leave nothing to train on, this is a UserError instead."""
    if not sources:
        raise UserError("no training data: pass --data DIR[:TOKENS] (a directory built by `teachwhy data build`)")
    rows: list[dict[str, Any]] = []
    earliest_loss = 1 << 62  # the earliest position of a loss-bearing token in any record taken
    shortest: tuple[int, Path, int] | None = None  # (tokens, file, line) of the shortest record taken
    reports: list[SourceReport] = []
    names: set[str] = set()
    for src in sources:
        if src.tokens is not None and src.tokens <= 0:
            raise UserError(f"--data {src.path}: the token budget must be positive (got {src.tokens})")
        f = data_file(src)
        numbered = read_jsonl_lines(f)
        if not numbered:
            raise UserError(f"{f}: no records (the file is empty or blank); "
                            "rebuild the dataset with `teachwhy data build`")
        for line, rec in numbered:
            _check_record(rec, f, line)
        records = [rec for _, rec in numbered]
        name = f.parent.name if f.name == "data.jsonl" else f.stem
        while name in names:
            name += "'"
        names.add(name)
        rep = SourceReport(path=str(f), name=name, kinds=sorted({str(r.get("kind", "?")) for r in records}),
                           budget=src.tokens, records_available=len(records),
                           tokens_available=0, content_hash=_file_hash(f))
        taking = True
        for line, rec in numbered:
            if not taking and isinstance(rec.get("tokens"), int):
                rep.tokens_available += rec["tokens"]  # past the budget: the builder's count is enough
                continue
            ids, mask = encode_record(rec, tokenizer)
            rep.tokens_available += len(ids)
            if not taking:
                continue
            if src.tokens is not None and rep.tokens + len(ids) > src.tokens:
                taking = False  # stop before the record that would exceed the budget
                continue
            if sum(mask) == 0:
                raise UserError(f"{f}: line {line}: the record has no loss-bearing tokens "
                                "(no assistant reply survives the chat template)")
            rows.append({"input_ids": ids, "assistant_masks": mask, "source": name,
                         "record_id": str(rec.get("id", f"{name}-{line}"))})
            earliest_loss = min(earliest_loss, mask.index(1))
            if shortest is None or len(ids) < shortest[0]:
                shortest = (len(ids), f, line)
            rep.records += 1
            rep.tokens += len(ids)
            rep.loss_tokens += sum(mask)
        if rep.records == 0:
            raise UserError(f"--data {src.path}: budget {src.tokens} tokens is smaller than the first record "
                            f"({len(encode_record(records[0], tokenizer)[0])} tokens); raise the budget")
        reports.append(rep)
    if max_length is not None and shortest is not None and earliest_loss >= max_length:
        length, f, line = shortest
        raise UserError(f"--max-length {max_length} leaves nothing to train on: every record is cut before its "
                        f"first loss-bearing token (the shortest record, {f}: line {line}, has {length} "
                        f"tokens); pass --max-length {length} or more")
    random.Random(seed).shuffle(rows)
    return Mixture(rows=rows, sources=reports)
