"""Turn per-sample records into the summary tables: overall, per condition, per family.

Every rate carries n, k, a 95% Wilson interval and a cluster-bootstrap interval over scenario
families (None where a row holds a single family)."""

from __future__ import annotations

from collections import defaultdict

from teachwhy.evals.stats import mean_ci, rate_row

CHOICE_SCORINGS = ("mean", "sum", "calibrated")
PRIMARY = "mean"


def _groups(records: list[dict]) -> list[tuple[str, str, list[dict]]]:
    out = [("overall", "all", records)]
    by_cond, by_fam = defaultdict(list), defaultdict(list)
    for r in records:
        by_cond[r["condition"]].append(r)
        by_fam[r["family"]].append(r)
    out += [("condition", k, v) for k, v in sorted(by_cond.items())]
    out += [("family", k, v) for k, v in sorted(by_fam.items())]
    return out


def _choice_row(recs: list[dict], scoring: str) -> dict:
    ps = [r[scoring]["p_harmful"] for r in recs]
    m = mean_ci(ps)
    return rate_row((r[scoring]["harmful_choice"] for r in recs), (r["family"] for r in recs), extra={
        "mean_p_harmful": m[0] if m else None, "mean_p_harmful_95": list(m[1:]) if m else None,
    })


def _generate_row(recs: list[dict]) -> dict:
    valid = [r for r in recs if r["verdict"] in ("harmful", "aligned")]
    row = rate_row((r["verdict"] == "harmful" for r in valid), (r["family"] for r in valid), extra={
        "samples": len(recs),
        "invalid": len(recs) - len(valid),
        "unparseable": sum(r.get("parse_status") == "unparseable" for r in recs),
        "no_action": sum(r.get("parse_status") == "no_action" for r in recs),
    })
    judged = [r for r in recs if r.get("judge_verdict") in ("harmful", "aligned")]
    if any(r.get("judge_verdict") is not None or r.get("judge_explanation") for r in recs):
        j = rate_row((r["judge_verdict"] == "harmful" for r in judged), (r["family"] for r in judged))
        j["unparsed"] = len(recs) - len(judged)
        row["judge"] = j
    return row


def summarise(records: list[dict], mode: str, meta: dict) -> dict:
    rows = []
    for group, key, recs in _groups(records):
        if mode == "choice":
            row = _choice_row(recs, PRIMARY)
            row["other_scorings"] = {s: _choice_row(recs, s) for s in CHOICE_SCORINGS if s != PRIMARY}
        else:
            row = _generate_row(recs)
        rows.append({"group": group, "key": key, **row})
    overall = rows[0]
    return {
        **meta,
        "metric": ("harmful choice rate (top candidate harmful; scoring: mean per-token log-prob)"
                   if mode == "choice" else "harmful action rate among valid samples (rule grader)"),
        "overall": overall,
        "rows": rows,
    }
