"""The dataset card written beside every dataset: what is in it, how big, how varied, what was dropped.

`families` lists the honeypot families the data was built from (all four unless the build was
restricted with `families`/`--families`) and `held_out_families` the rest, so that an eval can report
the families the data never saw separately."""

from __future__ import annotations

import json
import statistics
from collections import Counter
from typing import Any

from teachwhy.constitution.loader import FAMILIES
from teachwhy.data.contamination import record_text
from teachwhy.data.neardup import NearDupIndex


def dumps(record: dict[str, Any]) -> str:
    return json.dumps(record, ensure_ascii=False)


def diversity(records: list[dict[str, Any]], sample: int = 400) -> dict[str, Any]:
    texts = [record_text(r) for r in records[:sample]]
    idx = NearDupIndex(threshold=0.6)
    dup = sum(not idx.add(t) for t in texts)
    words = [w for t in texts for w in t.lower().split()]
    grams = list(zip(words, words[1:], words[2:], words[3:]))
    fields: dict[str, Counter] = {}
    for r in records:
        for k, v in (r.get("lineage", {}).get("fields") or {}).items():
            fields.setdefault(k, Counter())[str(v)] += 1
    return {
        "near_duplicate_rate": dup / len(texts) if texts else 0.0,
        "near_duplicate_sample": len(texts),
        "distinct_4gram_ratio": len(set(grams)) / len(grams) if grams else 0.0,
        "distinct_sources": len({r["source_id"] for r in records}),
        "field_coverage": {k: len(c) for k, c in sorted(fields.items()) if len(c) < len(records) or len(c) < 50},
    }


def make_card(records: list[dict[str, Any]], config: dict, constitution, dropped: dict, contamination: dict,
              teacher_stats: Any, seconds: float, budget_reached: bool) -> dict[str, Any]:
    tokens = [r["tokens"] for r in records]
    cover = Counter(p for r in records for p in r["principle_ids"])
    families = [f for f in FAMILIES if f in (config.get("families") or FAMILIES)]
    return {
        "config": config,
        "families": families,
        "held_out_families": [f for f in FAMILIES if f not in families],
        "records": len(records),
        "tokens": sum(tokens),
        "loss_tokens": sum(r["loss_tokens"] for r in records),
        "budget": config["tokens"],
        "budget_reached": budget_reached,
        "tokens_per_record": {"median": statistics.median(tokens), "min": min(tokens), "max": max(tokens)},
        "kinds": dict(Counter(r["kind"] for r in records)),
        "teachers": dict(Counter(r["teacher"] for r in records)),
        "principle_coverage": {p.id: cover.get(p.id, 0) for p in constitution.principles},
        "principles_uncovered": [p.id for p in constitution.principles if not cover.get(p.id)],
        "diversity": diversity(records),
        "dropped": dropped,
        "contamination": contamination,
        "teacher_stats": teacher_stats if isinstance(teacher_stats, (dict, type(None))) else vars(teacher_stats),
        "seconds": round(seconds, 2),
    }


def render_markdown(card: dict[str, Any]) -> str:
    c = card["config"]
    d = card["diversity"]
    lines = [
        f"# Dataset card: {c['kind']}",
        "",
        f"- teacher: `{c['teacher']}`, seed {c['seed']}, target tokenizer `{c['model']}`",
        f"- records: {card['records']}; tokens: {card['tokens']} of a {card['budget']} budget "
        f"({'reached' if card['budget_reached'] else 'not reached: the plan ran out'}); "
        f"loss-bearing tokens: {card['loss_tokens']}",
        f"- tokens per record: median {card['tokens_per_record']['median']}, "
        f"range {card['tokens_per_record']['min']}-{card['tokens_per_record']['max']}",
        f"- near-duplicate rate: {d['near_duplicate_rate']:.1%} (n={d['near_duplicate_sample']}); "
        f"distinct 4-gram ratio {d['distinct_4gram_ratio']:.2f}; distinct sources {d['distinct_sources']}",
        f"- families: {_families_line(card)}",
        f"- dropped: {card['dropped'] or 'none'}",
        f"- eval contamination: max 8-gram overlap {card['contamination']['max_overlap']:.1%}, "
        f"canary hits {card['contamination']['canary_hits']} (threshold {card['contamination']['threshold']:.0%})",
        *_wording_line(card),
        "",
        "## Principle coverage",
        "",
        "| principle | records |",
        "|---|---|",
        *[f"| {k} | {v} |" for k, v in card["principle_coverage"].items()],
        "",
    ]
    return "\n".join(lines)


def _wording_line(card: dict[str, Any]) -> list[str]:
    w = (card.get("contamination") or {}).get("wording")
    if not w:
        return []
    return [f"- eval wording: max {w['max_overlap']:.1%} of a record's wording 4-grams found in eval candidates "
            f"(mean {w['mean_overlap']:.1%}; threshold {w['threshold']:.0%}; docs/evals.md)"]


def _families_line(card: dict[str, Any]) -> str:
    fams = card.get("families") or list(FAMILIES)
    held = card.get("held_out_families") or []
    return ", ".join(fams) + (f" (held out: {', '.join(held)})" if held else " (all)")
