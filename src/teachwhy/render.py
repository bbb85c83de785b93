"""The terminal renderer: typed results (results.py) as rich tables and lines on the CLI's consoles.

`eval_summary` (an agentic, adherence or audit run), `compare`, `controls`, `dose` and
`experiment` are what the `teachwhy eval`, `eval compare`, `eval controls` and `experiment` commands
print; each takes the typed result, never a dict key.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from rich.table import Table

from teachwhy.console import err, out
from teachwhy.results import (
    AuditSummary,
    Awareness,
    ChoiceDiagnostics,
    CompareResult,
    ControlsResult,
    DoseResult,
    Estimate,
    EvalSummary,
    ExperimentAnalysis,
    LevelEval,
    Rate,
    Row,
)

LETTERS = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"
LEVEL_TITLES = {"in_template": "in-template (the eval's own candidates)",
                "across_wording": "across wording (held-out candidates)"}


# -- cells -----------------------------------------------------------------------------------------
def ci(v: Sequence[float] | None, pct: bool = True) -> str:
    if not v:
        return "n/a"
    return f"[{v[0]:.1%}, {v[1]:.1%}]" if pct else f"[{v[0]:.3f}, {v[1]:.3f}]"


def diff(mean: float | None, interval: Sequence[float] | None, pct: bool = False) -> str:
    if mean is None:
        return "n/a"
    if interval is None:  # one item: no interval
        return f"{mean:+.1%} [CI n/a]" if pct else f"{mean:+.3f} [CI n/a]"
    if pct:
        return f"{mean:+.1%} [{interval[0]:+.1%}, {interval[1]:+.1%}]"
    return f"{mean:+.3f} [{interval[0]:+.3f}, {interval[1]:+.3f}]"


def rate_cell(r: Rate) -> str:
    return f"{r.k}/{r.n} {ci(r.wilson_95)}" if r.n else "n/a (n=0)"


def estimate(est: Estimate | None) -> str:
    if est is None or est.mean is None:
        return "-"
    lo, hi = est.ci_95 or (None, None)
    return f"{est.mean:.3f} [{lo:.3f}, {hi:.3f}]" if lo is not None and hi is not None else f"{est.mean:.3f}"


def _slice(r: Row, adherence: bool = False) -> str:
    if r.group == "overall":
        return "overall"
    if r.group == "training":
        return r.key
    if r.group == "condition" and r.key.count("=") == 2:
        goal, urg = (part.split("=", 1)[1] for part in r.key.split("/"))
        return f"goal {goal} · urgency {urg}"
    if r.group == "condition":  # adherence: the kind of failure an item tests
        return f"tests {r.key}"
    if r.group == "family" and adherence:
        return f"principle {r.key}"
    return f"{r.group} {r.key}"


# -- one eval run ------------------------------------------------------------------------------------
def eval_summary(summary: EvalSummary | AuditSummary) -> None:
    """A run's summary: the audit's dimensions, or the rates table of a choice or generate run."""
    if isinstance(summary, AuditSummary):
        audit_summary(summary)
    else:
        rates_summary(summary)


def _row_cells(s: EvalSummary, r: Row, judge: bool) -> list[str]:
    rate = "n/a" if r.rate is None else f"{r.rate:.1%}"
    cells = [_slice(r, s.suite == "adherence"), rate, f"{r.k}/{r.n}", ci(r.wilson_95), ci(r.cluster_bootstrap_95)]
    if s.mode == "choice":
        lo, hi = r.mean_p_harmful_95 or (0.0, 1.0)
        cells.append(f"{r.mean_p_harmful:.3f} [{lo:.3f}, {hi:.3f}]" if r.n else "n/a")
    else:
        cells.append(f"{r.invalid}/{r.samples}: {r.unparseable}/{r.no_action}")
        if judge:
            j = r.judge
            cells.append(f"{j.rate:.1%} {ci(j.wilson_95)} {j.n}" if j and j.n and j.rate is not None else "n/a")
    return cells


def rates_summary(s: EvalSummary) -> None:
    t = Table(title=f"{s.model} · {s.suite} · {s.mode}", caption=s.metric)
    for col in ("slice", "rate", "k/n", "95% CI Wilson", "95% CI families"):
        t.add_column(col, no_wrap=True)
    judge = s.mode == "generate" and "judge" in s.overall.model_fields_set
    if s.mode == "choice":
        t.add_column(f"mean P({s.harm_word}) [95% CI]", no_wrap=True)
    else:
        t.add_column("invalid: unparseable/no action", no_wrap=True)
        if judge:
            t.add_column("LLM judge [95% CI] n", no_wrap=True)
    previous = None
    for r in s.rows:
        if t.rows and r.group != previous:
            t.add_section()
        previous = r.group
        t.add_row(*_row_cells(s, r, judge))
    out.print(t)
    if s.mode == "choice":
        _other_scorings_and_formats(s)
        _pressure(s)
        _diagnostics(s)
    elif s.awareness:
        _awareness(s.awareness)
    out.print("95% CI families: cluster bootstrap over scenario families (n/a within one family).")
    for w in s.warnings:
        err.print(f"[yellow]warning:[/] {w}", soft_wrap=True, highlight=False)


def _other_scorings_and_formats(s: EvalSummary) -> None:
    o = s.overall.other_scorings
    if o:
        out.print("overall under the other scorings: " + "; ".join(
            f"{k}: {v.rate:.1%} {ci(v.wilson_95)} (n={v.n})" for k, v in o.items()))
    for fmt, f in s.by_format.items():
        if fmt != s.format:
            ov = f.overall
            out.print(f"{fmt} format ({f.scoring}): {ov.rate:.1%} ({ov.k}/{ov.n}) {ci(ov.wilson_95)}; "
                      f"mean P({s.harm_word}) {ov.mean_p_harmful:.3f} {ci(ov.mean_p_harmful_95, pct=False)}")


def _awareness(a: Awareness) -> None:
    """Eval awareness beside a generated result (evals/suites/agentic/awareness.py)."""
    by = a.harmful_by_label
    out.print(f"eval awareness (rule cues in the reply): said or implied a test {rate_cell(a.test)}; said it was "
              f"real {rate_cell(a.real)}. Harmful rate when it said test: {rate_cell(by['test'])}; said real: "
              f"{rate_cell(by['real'])}; said neither: {rate_cell(by['none'])}", soft_wrap=True, highlight=False)
    if a.judge_test:
        ag = a.judge_agrees_with_cues or Rate()
        out.print(f"eval awareness (LLM judge): said or implied a test {rate_cell(a.judge_test)}; agrees with the "
                  f"rule cues on {ag.k}/{ag.n}", soft_wrap=True, highlight=False)


def _pressure(s: EvalSummary) -> None:
    if not s.pressure:
        return
    t = Table("condition minus control", "n pairs", "Δ P(harmful) [95% CI]", "Δ harmful rate [95% CI]",
              title=f"pressure effects · {s.format}/{s.scoring} · paired, same candidates",
              caption="95% CI: bootstrap over scenario clusters (family x template)")
    for r in s.pressure:
        t.add_row(r.condition, str(r.n), diff(r.p_harmful_diff, r.p_harmful_diff_95),
                  diff(r.rate_diff, r.rate_diff_95, pct=True))
    out.print(t)


def _format_diagnostics(fmt: str, d: ChoiceDiagnostics) -> list[str]:
    bits = []
    ga = d.going_along
    if ga and ga.mean is not None:
        bits.append(f"{fmt}: mean P(the reply going along with the request) {ga.mean:.2f} "
                    f"{ci(ga.ci_95, pct=False)} (n={ga.n})")
    sw = d.same_winner
    if sw is not None and sw.n:
        bits.append(f"{fmt}: same candidate wins within its template {sw.k}/{sw.n} {ci(sw.wilson_95)}")
    for pair, a in (d.scoring_agreement or {}).items():
        bits.append(f"{fmt}: scorings {pair.replace('~', '/')} agree {a.k}/{a.n}")
    pos = d.position
    if pos:
        letters = " ".join(f"{LETTERS[i]} {p:.2f}" for i, p in enumerate(pos.p_letter))
        same_l, same_c = pos.same_letter_every_rotation or Rate(), pos.same_candidate_every_rotation or Rate()
        bits.append(f"options: mean P(letter) {letters} (no bias {pos.chance:.2f}); mass on letters "
                    f"{pos.letter_mass:.2f}; same letter wins every rotation {same_l.k}/{same_l.n}, "
                    f"same option {same_c.k}/{same_c.n}")
    return bits


def _diagnostics(s: EvalSummary) -> None:
    bits = [b for fmt, f in s.by_format.items() for b in _format_diagnostics(fmt, f.diagnostics)]
    for pair, a in (s.format_agreement or {}).items():
        r = a.pearson_p_harmful
        bits.append(f"formats {pair.replace('~', '/')} agree {a.k}/{a.n}"
                    + (f", Pearson r of P(harmful) {r:.2f}" if r is not None else ""))
    if bits:
        out.print("diagnostics: " + "; ".join(bits), soft_wrap=True, highlight=False)


def audit_summary(s: AuditSummary) -> None:
    t = Table(title=f"{s.model} · audit · {s.mode}", caption=s.metric)
    for col in ("dimension", "n (seeds)", "mean score [95% CI]", "concerning (≥5.5) k/n [95% CI]",
                "mean P(concerning probe) [95% CI]"):
        t.add_column(col, no_wrap=True)
    for dim, d in s.dimensions.items():
        interval = d.mean_score_95
        probe = (f"{d.mean_probe:.3f} {ci(d.mean_probe_95, pct=False)} (n={d.n_probe})"
                 if d.mean_probe is not None else "n/a (no probes)")
        score = (f"{d.mean_score:.2f} [{interval[0]:.2f}, {interval[1]:.2f}]" if interval
                 else f"{d.mean_score:.2f} [CI n/a]")
        t.add_row(dim, f"{d.n} ({d.seeds})", score, f"{d.concerning.k}/{d.concerning.n} {ci(d.concerning.wilson_95)}",
                  probe)
    out.print(t)
    judged = {dim: d for dim, d in s.dimensions.items() if d.judged}
    if judged:
        out.print("LLM judge: " + "; ".join(f"{dim} scored {d.judged}/{d.n}, its quote found in the target's "
                                            f"replies {d.judge_quotes_found}/{d.judged}"
                                            for dim, d in judged.items()), soft_wrap=True, highlight=False)
    test, real = s.awareness.test, s.awareness.real
    out.print(f"eval awareness (rule cues in the target's replies): said or implied a test in {test.k}/{test.n} "
              f"transcripts {ci(test.wilson_95)}; said it was real in {real.k}/{real.n} {ci(real.wilson_95)}",
              soft_wrap=True, highlight=False)
    out.print("95% CI of the mean score: bootstrap over seeds (normal within one seed).")


# -- compare ---------------------------------------------------------------------------------------
def compare(res: CompareResult) -> None:
    """`teachwhy eval compare`: B - A per slice with paired CIs, then what the suite adds."""
    t = Table("slice", "n", f"A: {res.a.model}", f"B: {res.b.model}", "Δ P(harmful) B-A [95% CI]",
              "Δ harmful rate B-A [95% CI]", title=f"training effect · {res.format}/{res.scoring} · paired",
              caption="A/B: harmful rate k/n and mean P(harmful); 95% CI: bootstrap over scenario clusters")
    adherence = res.suite == "adherence"
    unit = "principle" if adherence else "family"
    rows = [("overall", res.overall)] + [(f"{unit} {k}", v) for k, v in res.by_family.items()]
    for label, e in (("seen families", res.seen_families), ("held out families", res.held_out_families)):
        if e is not None:
            rows.append((label, e))
    for name, e in rows:
        t.add_row(name, str(e.n), f"{e.a.k}/{e.a.n} · {e.a_mean_p_harmful:.3f}",
                  f"{e.b.k}/{e.b.n} · {e.b_mean_p_harmful:.3f}",
                  diff(e.p_harmful_diff, e.p_harmful_diff_95), diff(e.rate_diff, e.rate_diff_95, pct=True))
    out.print(t)
    if res.trained_families:
        out.print(f"B was trained on data from families: {', '.join(res.trained_families)}")
    if res.validity:
        out.print(f"eval wording: {res.wording}; validity level of {res.format}/{res.scoring} reached by "
                  f"its controls: {res.validity['reached']}", highlight=False)
    for w in res.warnings:
        err.print(f"warning: {w}", markup=False, highlight=False, soft_wrap=True)
    if adherence:
        out.print("Adherence: P(harmful) is P(violating the principle). Principles B moved most: " + "; ".join(
            f"{m.principle} {m.direction} {diff(m.p_violating_diff, m.p_violating_diff_95)} "
            f"(n={m.n}{'' if m.ci_excludes_zero else ', CI includes 0'})" for m in res.moved_most),
            soft_wrap=True, highlight=False)


# -- controls --------------------------------------------------------------------------------------
def controls(r: ControlsResult) -> None:
    verdict_cell = {"validated": "[green]validated[/]", "partly": "[yellow]partly validated[/]"}
    levels = [("in_template", r.effects)]
    if r.effects_across_wording is not None:
        levels.append(("across_wording", r.effects_across_wording))
    for lv, effects in levels:
        info = r.levels_eval.get(lv) or LevelEval()
        what = (", ".join(info.scenario_files) if info.scenario_files
                else f"wording {info.wording if 'wording' in info.model_fields_set else 'house'}")
        n = info.n or r.eval_limit or "all"
        t = Table("format/scoring", "harmful SFT − base", "aligned SFT − base", "unrelated SFT − base", "verdict",
                  title=f"eval controls · {r.model} · {LEVEL_TITLES[lv]} · Δ mean P(harmful), paired, 95% CI",
                  caption=f"n = {n} eval scenarios ({what}); CI: bootstrap over scenario clusters")
        for key, e in effects.items():
            level = e.verdict.level or ("validated" if e.verdict.validated else "not")
            cells = (diff(a.p_harmful_diff, a.p_harmful_diff_95) for a in (e.harmful, e.aligned, e.unrelated))
            t.add_row(key, *cells, verdict_cell.get(level, "[red]not validated[/]"))
        out.print(t)
        for key, e in effects.items():
            if not e.verdict.validated:
                out.print(f"{key} ({lv.replace('_', ' ')}): {e.verdict.why}", highlight=False, soft_wrap=True)
    banks_line = f" (train wording banks: {', '.join(r.train_banks)})" if r.train_banks else ""
    out.print("training data" + banks_line + ": " + "; ".join(
        f"{a} {d.records} records, {d.tokens} tokens ({d.loss_tokens} loss-bearing)" for a, d in r.data.items()))


def dose(d: DoseResult) -> None:
    t = Table("banks", "scenarios", "level", "harmful SFT − base", "aligned SFT − base", "unrelated SFT − base",
              "verdict", title=f"dose of variety · {d.model} · {d.scoring} · Δ mean P(harmful), 95% CI")
    for p in d.points:
        for name, e in (("across wording", p.across_wording), ("in template", p.in_template)):
            t.add_row(str(p.banks), str(p.train_scenarios), name,
                      *(diff(a.diff, a.ci_95) for a in (e.harmful, e.aligned, e.unrelated)), e.verdict)
    out.print(t)


# -- experiments -----------------------------------------------------------------------------------
def tables(items: list[dict]) -> None:
    """Report tables (report/view.py's plain data: title, columns, rows) as terminal tables."""
    for tab in items:
        w = Table(*[c["label"] for c in tab["columns"]], title=tab["title"])
        for row in tab["rows"]:
            w.add_row(*row)
        out.print(w)


def experiment(analysis: ExperimentAnalysis, report_html: str | None = None, exp_dir: str | None = None) -> None:
    """The short version in the terminal, in the report's order: the validity sentence (which measure
    the controls validated across wording, or that none is), one sentence per comparison, the first
    eval's table of mean P(harmful) and effect with CIs, the by-wording table when the study has a
    held-out-wording eval, each audit eval's table per dimension, then the data-efficiency and RL
    statements and where the report is. An experiment with audit evals only prints those tables."""
    wording = None
    audit: list[dict] = []
    if exp_dir:
        from teachwhy.report.load import load_experiment_dir
        from teachwhy.report.view import audit_headline, audit_tables, eval_names, headline, wording_table

        exp = load_experiment_dir(Path(exp_dir))
        evals = eval_names(exp)
        audit = audit_tables(exp)
        only = audit_headline(exp, evals)
        if only:  # audit evals only: no honeypot headline or table to print
            out.print(only, highlight=False)
            tables(audit)
            if report_html:
                out.print(f"report: {report_html}", highlight=False)
            return
        head = headline(exp, evals)
        wording = wording_table(exp, evals)
        out.print(head["validity"]["text"], highlight=False)
        for sentence in head["comparisons"]:
            out.print(f"- {sentence}", highlight=False)
    t = Table("arm", "stage", "tokens", "n", "mean P(harmful) [95% CI]", "effect vs base [95% CI]", "harmful",
              title=f"{analysis.eval}: {analysis.metric}")
    for c in analysis.first_eval_curves():
        hr = c.harmful_rate
        seeds = f" x {c.n_seeds} seeds" if c.n_seeds > 1 else ""
        t.add_row(c.arm, c.stage, f"{c.budget:,}" if c.budget else "-", f"{c.n_scenarios}{seeds}",
                  estimate(c.p_harmful), estimate(c.effect), f"{hr.k}/{hr.n}" if hr else "-/-")
    out.print(t)
    if wording and len(wording["columns"]) > 3:  # arm plus at least two evals' columns
        tables([wording])
    tables(audit)
    for statement in analysis.statements():
        out.print(f"- {statement}", highlight=False)
    if report_html:
        out.print(f"report: {report_html}", highlight=False)
