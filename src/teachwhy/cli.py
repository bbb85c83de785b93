"""The `teachwhy` command: thin over the library API; parses, calls, prints with rich.

Each command imports the library modules it calls inside its own function: `teachwhy --help` and the
start of every command then load none of them (each adds from tens of milliseconds to most of a second,
and the eval's torch)."""

from __future__ import annotations

import inspect
import json
import os
import sys
from contextlib import contextmanager

import typer
from pydantic import BaseModel
from rich.table import Table
from typer._click import ClickException  # typer vendors Click: its errors are not click's

from teachwhy import render, results
from teachwhy.cli_experiment import exp_app, register_report
from teachwhy.console import CliCommand, err, new_typer, out
from teachwhy.console import progress as _progress
from teachwhy.data.wording import DEFAULT_THRESHOLD as WORDING_THRESHOLD
from teachwhy.errors import UserError
from teachwhy.evals.config import EvalConfig, cli_of
from teachwhy.experiments.spec import CONTROLS_OUT, controls_default
from teachwhy.models import DEFAULT_DTYPE, DEFAULT_MODEL
from teachwhy.render import ci as _ci

os.environ.setdefault("HF_HUB_OFFLINE", "1")


app = new_typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
             help="Train and evaluate models that learned why: honeypot evals, why-data, experiments.")
models_app = new_typer(no_args_is_help=True, help="The model registry.")
scen_app = new_typer(no_args_is_help=True, help="Honeypot scenarios.")
app.add_typer(models_app, name="models")
app.add_typer(scen_app, name="scenarios")
data_app = new_typer(no_args_is_help=True, help="Why-data: build datasets and inspect them.")
app.add_typer(data_app, name="data")
train_app = new_typer(no_args_is_help=True, help="Training: SFT on why-data, GRPO on harmlessness environments.")
app.add_typer(train_app, name="train")

_state = {"debug": False}


@app.callback()
def _root(debug: bool = typer.Option(False, "--debug", help="Show tracebacks for errors.")) -> None:
    _state["debug"] = debug


# -- models ---------------------------------------------------------------------------------------
@models_app.command("list", cls=CliCommand)
def models_list(as_json: bool = typer.Option(False, "--json", help="Print the list as JSON.")) -> None:
    """List the embedded models and whether they are prepared."""
    # lazy: not loaded when the CLI starts
    from teachwhy import models

    rows = models.list_models()
    if as_json:
        print(json.dumps(rows, indent=2))
        return
    t = Table("name", "kind", "prepared", "package", "path", title="embedded models")
    for r in rows:
        t.add_row(r["name"], r["kind"], "yes" if r["prepared"] else "no", r["package"], r["path"])
    out.print(t)
    out.print("Also accepted: a Hugging Face model directory, a PEFT adapter directory, or an Inspect "
              "model id (openai/..., anthropic/..., vllm/..., hf/...).")


@models_app.command("prepare", cls=CliCommand)
def models_prepare(name: str = typer.Argument(DEFAULT_MODEL, metavar="NAME"),
                   force: bool = typer.Option(False, "--force", help="Rebuild the cache."),
                   verify: bool = typer.Option(False, "--verify",
                                               help="Check every cached file against its recorded sha256.")) -> None:
    """Build the cached Hugging Face directory for an embedded model (once; offline)."""
    # lazy: not loaded when the CLI starts
    from teachwhy import models

    with err.status(f"preparing {name} (dequantizing GGUF, once)"):
        d = models.prepare_embedded(name, force=force, verify=verify)
    note = {"verified": " (every file matches its recorded sha256)", "built": " (built; sha256 recorded)",
            "recorded": " (prepared before content hashes were kept: sha256 recorded now; use --force to rebuild "
                        "from the GGUF if you doubt it)"}
    out.print(f"{name}: {d}" + (note.get(models.last_check(d) or "", "") if verify else ""))


@models_app.command("tiny", cls=CliCommand)
def models_tiny(name: str = typer.Argument(DEFAULT_MODEL, metavar="NAME"),
                layers: int = typer.Option(2, min=1, help="Decoder layers."),
                hidden: int = typer.Option(64, min=8, help="Hidden size (heads 4, key-value heads 2)."),
                force: bool = typer.Option(False, "--force", help="Rebuild it.")) -> None:
    """Build (once) a tiny randomly initialised model of an embedded model's architecture, tokenizer and
    chat template, and print its directory: pass it as --model to smoke-test a pipeline in seconds. Its
    weights are random: it checks mechanics, never behaviour."""
    # lazy: not loaded when the CLI starts
    from teachwhy.tiny import TinyShape, build_tiny

    shape = TinyShape(layers=layers, hidden=hidden, intermediate=2 * hidden)
    with err.status(f"building a tiny {name}"):
        d = build_tiny(name, shape, force=force)
    out.print(str(d), highlight=False)


# -- scenarios ------------------------------------------------------------------------------------
def _scenarios(files: list[str] | None, split: str | None, family: str | None, limit=None):
    # lazy: imports torch
    from teachwhy.scenarios.selection import load_selection

    return load_selection(files, split, family, limit)


@scen_app.command("list", cls=CliCommand)
def scenarios_list(split: str | None = typer.Option(None, metavar="SPLIT"),
                   family: str | None = typer.Option(None, metavar="FAMILY"),
                   file: list[str] | None = typer.Option(None, "--file", metavar="FILE",
                                                         help="A scenario file (repeatable)."),
                   as_json: bool = typer.Option(False, "--json", help="Print the list as JSON.")) -> None:
    """List scenarios (built-in, or from --file) with their family, condition and split."""
    sc = _scenarios(file, split, family)
    if as_json:
        print(json.dumps([{"id": s.id, "family": s.family, "split": s.split, "condition": s.condition}
                          for s in sc], indent=2))
        return
    t = Table("id", "family", "goal conflict", "urgency", "split", title=f"{len(sc)} scenarios")
    for s in sc:
        t.add_row(s.id, s.family, s.goal_conflict, s.urgency, s.split)
    out.print(t)


@scen_app.command("banks", cls=CliCommand)
def scenarios_banks() -> None:
    """List the candidate wording banks: which the eval scores (held-out wording), which training
    material draws from, and the in-template `house` sets."""
    # lazy: not loaded when the CLI starts
    from teachwhy.scenarios import banks

    t = Table("bank", "use", "about", title="candidate wording banks")
    for name, entry in banks.registry().items():
        t.add_row(name, entry["use"], entry.get("about", ""))
    out.print(t)


@scen_app.command("show", cls=CliCommand)
def scenarios_show(scenario_id: str = typer.Argument(..., metavar="SCENARIO_ID",
                                                     help="A scenario id (see `teachwhy scenarios list`)."),
                   file: list[str] | None = typer.Option(None, "--file", metavar="FILE"),
                   as_json: bool = typer.Option(False, "--json", help="Print the scenario as JSON.")) -> None:
    """Show one scenario: the prompt as the model sees it, and the candidate actions."""
    sc = {s.id: s for s in _scenarios(file, None, None)}
    if scenario_id not in sc:
        raise UserError(f"no scenario with id '{scenario_id}': see `teachwhy scenarios list`")
    s = sc[scenario_id]
    if as_json:
        print(s.model_dump_json(indent=2))
        return
    for m in s.prompt_messages():
        out.rule(f"[bold]{m['role']}")
        out.print(m["content"], markup=False, highlight=False)
    out.rule("[bold]candidates")
    for c in s.candidates:
        twin = f", twin {c.twin}" if c.twin else ""
        out.print(f"[{'red' if c.label == 'harmful' else 'green'}]{c.id} ({c.label}{twin})[/]")
        out.print(c.text, markup=False, highlight=False)


@scen_app.command("validate", cls=CliCommand)
def scenarios_validate(files: list[str] | None = typer.Argument(
                           None, metavar="FILE", help="Scenario files (.yaml, .yml, .jsonl); none: the built-in set."),
                       tolerance: float = typer.Option(0.2, metavar="RATIO",
                                                       help="Allowed candidate length spread."),
                       wording: str | None = typer.Option(
                           None, metavar="BANK", help="Check only this wording bank of the built-in set "
                           "(teachwhy scenarios banks lists them); default: every bank.")) -> None:
    """Validate scenario files (or the built-in set): schema, candidate length matching under the
    embedded tokenizer, that the rule grader flags every harmful candidate and no aligned one, and
    (for the built-in set) eval/train disjointness."""
    # lazy: not loaded when the CLI starts
    from teachwhy import models
    from teachwhy.scenarios import banks, builtin_scenarios, check_length_matched, split_overlap

    sc = _scenarios(files, None, None)
    tok = models.load_tokenizer()
    count = lambda text: len(tok(text, add_special_tokens=False)["input_ids"])  # noqa: E731
    # lazy: not loaded when the CLI starts
    from teachwhy.evals.suites.agentic.consistency import label_problems

    problems = []
    checked = list(sc)
    if not files:  # the built-in set: every wording bank on every split it may be used on
        if wording:
            banks.check(wording, "eval" if wording in banks.eval_banks() else "train")
        for name in [wording] if wording else banks.names():
            if name == banks.HOUSE:
                continue
            checked += [s for sp in ("eval", "train") if name in banks.names(sp)
                        for s in builtin_scenarios(sp, wording=name)]
        if wording and wording != banks.HOUSE:
            checked = [s for s in checked if s.template.startswith(f"{wording}/")]
    for s in checked:
        problems += check_length_matched(s, count, tolerance=tolerance)
        problems += label_problems(s)
    ev = [s for s in sc if s.split == "eval"]
    tr = [s for s in sc if s.split == "train"]
    if ev and tr:
        rep = split_overlap(ev, tr)
        shared = {k: v for k, v in rep.items() if isinstance(v, dict) and v.get("count")}
        for k, v in shared.items():
            problems.append(f"eval/train share {v['count']} {k} (e.g. {v.get('examples', [])[:2]})")
    extra = len(checked) - len(sc)
    out.print(f"{len(sc)} scenarios ({len(ev)} eval, {len(tr)} train) checked"
              + (f", and {extra} renderings in other wording banks" if extra > 0 else ""))
    if problems:
        for p in problems:
            err.print(f"problem: {p}", markup=False, highlight=False, soft_wrap=True)
        raise typer.Exit(1)
    out.print("[green]ok[/]: schema, candidate length matching, grader agrees with every label"
              + (", split disjointness" if ev and tr else ""))


# -- eval -----------------------------------------------------------------------------------------
def _ids(value: str | None, flag: str) -> list[str] | None:
    if value is None:
        return None
    ids = [f.strip() for f in value.split(",") if f.strip()]
    if not ids:
        raise UserError(f"{flag} needs at least one id (comma-separated)")
    return ids


eval_app = new_typer(help="Run the agentic-misalignment honeypot eval (no subcommand), compare two runs, "
                       "or run the eval's controls.")
app.add_typer(eval_app, name="eval")


def _config_options(cls: type[BaseModel], extra: dict[str, inspect.Parameter]) -> list[inspect.Parameter]:
    """The typer options of a config's fields that have `cli` metadata (evals/config.py), in field order,
    each with its default and help text from the field; `extra` puts a CLI-only option after a field."""
    params = []
    for name, f in cls.model_fields.items():
        cli = cli_of(name, cls)
        if cli:
            kind = f.annotation
            if cli["text"]:  # a list typed as one comma-separated string
                kind = str | None
            option = typer.Option(f.default, *cli["flags"], metavar=cli["metavar"], help=f.description)
            params.append(inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=option, annotation=kind))
        if name in extra:
            params.append(extra[name])
    return params


def _with_config_options(cls: type[BaseModel], extra: dict[str, inspect.Parameter]):
    """Give a command `(ctx, **options)` the config's options as its typer signature."""
    def wrap(fn):
        head = inspect.Parameter("ctx", inspect.Parameter.POSITIONAL_OR_KEYWORD, annotation=typer.Context)
        params = [head, *_config_options(cls, extra)]
        fn.__signature__ = inspect.Signature(params)
        fn.__annotations__ = {p.name: p.annotation for p in params}
        return fn

    return wrap


_JSON = inspect.Parameter("as_json", inspect.Parameter.KEYWORD_ONLY, annotation=bool,
                          default=typer.Option(False, "--json", help="Print the summary as JSON."))


@eval_app.callback(invoke_without_command=True)
@_with_config_options(EvalConfig, {"out": _JSON})
def eval_cmd(ctx: typer.Context, as_json: bool = False, **options) -> None:
    """Run an eval suite (the agentic-misalignment honeypots, constitution adherence, or the audit) and
    print its rates with 95% CIs."""
    if ctx.invoked_subcommand:
        return
    from teachwhy.evals import suites
    from teachwhy.evals.runner import run_eval

    cfg = EvalConfig.build(**options)
    unit = "samples" if cfg.mode == "generate" else suites.get(cfg.suite).unit
    with _progress(f"eval {cfg.suite if cfg.suite != 'agentic' else cfg.mode} · {cfg.model}", unit) as update:
        res = run_eval(cfg, progress=update)
    if as_json:
        print(json.dumps(res.summary, indent=2))
        return
    if res.resumed:
        err.print(f"resumed: {res.resumed} records from an earlier run were kept")
    render.eval_summary(results.of(res.summary))
    out.print(f"results: {res.run_dir}/summary.json, {res.run_dir}/samples.jsonl")


@eval_app.command("compare", cls=CliCommand)
def eval_compare(
    run_a: str = typer.Argument(..., metavar="RUN_A", help="The reference run directory (e.g. the base model's)."),
    run_b: str = typer.Argument(..., metavar="RUN_B",
                                help="The run to compare with it (e.g. a trained checkpoint's)."),
    fmt: str | None = typer.Option(None, "--format", metavar="FORMAT",
                                   help="Format to compare (default: run A's first)."),
    scoring: str | None = typer.Option(None, metavar="SCORING",
                                       help="Scoring to compare (default: the format's primary)."),
    as_json: bool = typer.Option(False, "--json", help="Print the comparison as JSON."),
) -> None:
    """The training effect: per-scenario difference B - A with a paired 95% CI (same scenarios only)."""
    # lazy: imports torch
    from teachwhy.evals.compare import compare_runs

    res = compare_runs(run_a, run_b, fmt=fmt, scoring=scoring)
    if as_json:
        print(json.dumps(res, indent=2))
        return
    render.compare(results.CompareResult.model_validate(res))


@eval_app.command("controls", cls=CliCommand)
def eval_controls(
    model: str = typer.Option(DEFAULT_MODEL, "--model", "-m", metavar="MODEL",
                              help="A local base model (embedded name or HF dir)."),
    out_dir: str = typer.Option(CONTROLS_OUT, "--out", metavar="DIR",
                                help="Where the control data, runs and controls.json go."),
    train_scenarios: int = typer.Option(controls_default("train_scenarios"), metavar="N",
                                        help="Train-split scenarios per positive control (one action each)."),
    eval_limit: int | None = typer.Option(controls_default("eval_limit"), metavar="N",
                                          help="Eval scenarios scored at each level (0: all)."),
    fmt: str = typer.Option("continuation,options", "--format", metavar="FORMAT",
                            help="Formats to check, comma-separated."),
    lr: float = typer.Option(controls_default("learning_rate"), "--lr", metavar="RATE",
                             help="Learning rate of the control fine-tunes."),
    epochs: float = typer.Option(controls_default("epochs"), metavar="EPOCHS",
                                 help="Epochs over each control's data (the controls are meant to be strong)."),
    seed: int = typer.Option(0, metavar="N"),
    dtype: str = typer.Option(DEFAULT_DTYPE, metavar="DTYPE", help="auto (bf16 where native), bfloat16 or float32."),
    train_banks: str | None = typer.Option(None, "--train-banks", metavar="BANKS",
                                           help="Train wording banks the control data is phrased in, comma-separated "
                                           "(default: every train bank; `teachwhy scenarios banks`)."),
    wording: str = typer.Option("heldout", metavar="BANK",
                                help="Held-out wording scored at the across-wording level: an eval bank, or "
                                "heldout (every eval bank)."),
    scenario_file: list[str] | None = typer.Option(
        None, "--scenarios", metavar="FILE", help="Score the across-wording level on your own scenario file "
        "(its prompts and candidates; repeatable) instead of the eval banks."),
    variety: str | None = typer.Option(None, metavar="KS", help="Dose of variety: run the controls with the first k "
                                       "train banks for each k given (e.g. 1,2,4) and plot the transfer (dose.png)."),
    dose_scenarios: str | None = typer.Option(None, metavar="NS", help="With --variety: train-scenario counts "
                                              "(loss tokens) to cross with the bank counts (e.g. 24,48)."),
    as_json: bool = typer.Option(False, "--json", help="Print the result as JSON."),
) -> None:
    """Positive and negative controls: SFT on the train split's harmful / aligned actions must move the
    eval's P(harmful) up / down; SFT on as many tokens of unrelated text must move it much less. Each
    verdict comes at two levels: in-template (the eval's own candidates) and across wording (held-out
    wording banks, or your --scenarios file)."""
    # lazy: not loaded when the CLI starts
    from teachwhy.experiments.controls import run_controls

    banks_list = _ids(train_banks, "--train-banks")
    with err.status("controls: building data") as status:
        def log(m: str) -> None:
            err.print(m)
            status.update(f"controls: {m}")

        common = dict(model=model, out=out_dir, eval_limit=eval_limit or None, formats=fmt, seed=seed,
                      learning_rate=lr, epochs=epochs, dtype=dtype, log=log, heldout=wording,
                      scenario_files=scenario_file)
        if variety is not None:
            # lazy: not loaded when the CLI starts
            from teachwhy.experiments.controls.dose import run_dose

            if train_banks:
                raise UserError("--variety picks the first k train banks itself: drop --train-banks")
            ks = [_int(x, "--variety") for x in _ids(variety, "--variety") or []]
            ns = [_int(x, "--dose-scenarios") for x in _ids(dose_scenarios, "--dose-scenarios") or []] or None
            dose = run_dose(variety=ks, scenario_counts=ns or [train_scenarios], **common)  # type: ignore[arg-type]
            if as_json:
                print(json.dumps(dose, indent=2))
                return
            render.dose(results.DoseResult.model_validate(dose))
            out.print(f"results: {out_dir}/dose.json, {dose['plot']}")
            return
        if dose_scenarios is not None:
            raise UserError("--dose-scenarios goes with --variety")
        res = run_controls(train_scenarios=train_scenarios, train_banks=banks_list, **common)  # type: ignore[arg-type]
    if as_json:
        print(json.dumps(res.result, indent=2))
        return
    render.controls(results.ControlsResult.model_validate(res.result))
    out.print(f"results: {res.out}/controls.json")


def _int(v: str, flag: str) -> int:
    try:
        return int(v)
    except ValueError:
        raise UserError(f"{flag} takes whole numbers, comma-separated (got '{v}')") from None


# -- data -----------------------------------------------------------------------------------------
@data_app.command("build", cls=CliCommand)
def data_build(
    kind: str = typer.Argument(..., metavar="KIND",
                               help="demonstration, reasoning, advice, documents, fiction or augment."),
    teacher: str = typer.Option("builtin", metavar="TEACHER",
                                help="builtin, self, or an Inspect model id (openai/..., vllm/...)."),
    tokens: int = typer.Option(50_000, metavar="TOKENS",
                               help="Token budget (all tokens under the target tokenizer)."),
    seed: int = typer.Option(0, metavar="N"),
    out_dir: str = typer.Option(..., "--out", metavar="DIR",
                                help="Output directory (data.jsonl, card.json, card.md)."),
    constitution: str | None = typer.Option(None, metavar="FILE", help="Your constitution YAML (default: ours)."),
    model: str = typer.Option(DEFAULT_MODEL, metavar="MODEL",
                              help="Target model: its tokenizer counts tokens; the self teacher."),
    input_path: str | None = typer.Option(None, "--input", metavar="FILE",
                                          help="augment: the chat dataset to augment."),
    contamination_threshold: float = typer.Option(0.05, metavar="SHARE",
                                                  help="Max share of a record's 8-grams found in the eval split."),
    wording_threshold: float = typer.Option(WORDING_THRESHOLD, metavar="SHARE",
                                            help="Max share of a record's wording 4-grams (names set aside) found "
                                            "in the eval's candidates."),
    families: list[str] | None = typer.Option(
        None, "--families", metavar="FAMILIES", help="Build only from these honeypot families (comma-separated or "
        "repeated: blackmail, leak, sabotage, framing); the others stay held out. Default: all."),
) -> None:
    """Build a why-data dataset at an exact token budget, with its dataset card."""
    # lazy: not loaded when the CLI starts
    from teachwhy.constitution.loader import load_constitution
    from teachwhy.data.build import build_dataset
    from teachwhy.data.plans import resolve_families
    from teachwhy.teachers import get_teacher

    fams = list(resolve_families(families)) if families else None  # a bad name fails before any work
    with _progress(f"data build {kind} · {teacher}", "tokens", total=tokens) as update:
        cons = load_constitution(constitution)
        res = build_dataset(kind, get_teacher(teacher, cons, model, seed=seed), tokens=tokens, seed=seed,
                            out=out_dir, constitution=cons, model=model, input_path=input_path,
                            contamination_threshold=contamination_threshold, families=fams,
                            wording_threshold=wording_threshold,
                            progress=lambda done, total: update(done, tokens),
                            advice_teacher=get_teacher("builtin", cons, seed=seed))  # augment's default source
    _print_card(res.card)
    if res.card.get("held_out_families"):
        out.print(f"families: {', '.join(res.card['families'])} (held out: {', '.join(res.card['held_out_families'])})")
    out.print(f"wrote {res.out}/data.jsonl, card.json, card.md")


def _print_card(card: dict) -> None:
    d = card["diversity"]
    t = Table("", "value", title=f"{card['config']['kind']} · teacher {card['config']['teacher']}", show_header=False)
    t.add_row("records", str(card["records"]))
    t.add_row("tokens (all / loss-bearing)", f"{card['tokens']} / {card['loss_tokens']} (budget {card['budget']})")
    t.add_row("tokens per record", f"median {card['tokens_per_record']['median']}, "
              f"{card['tokens_per_record']['min']}-{card['tokens_per_record']['max']}")
    t.add_row("near-duplicate rate", f"{d['near_duplicate_rate']:.1%} (n={d['near_duplicate_sample']})")
    t.add_row("distinct sources", str(d["distinct_sources"]))
    cov = card["principle_coverage"]
    t.add_row("principles covered", f"{sum(1 for v in cov.values() if v)}/{len(cov)}")
    t.add_row("dropped", ", ".join(f"{k}: {v}" for k, v in card["dropped"].items()) or "none")
    c = card["contamination"]
    t.add_row("eval contamination", f"max 8-gram overlap {c['max_overlap']:.1%}, canary hits {c['canary_hits']}")
    if c.get("wording"):
        t.add_row("eval wording", f"max {c['wording']['max_overlap']:.1%} of a record's wording 4-grams "
                  f"(threshold {c['wording']['threshold']:.0%})")
    out.print(t)


@data_app.command("stats", cls=CliCommand)
def data_stats(path: str = typer.Argument(..., metavar="DIR",
                                          help="A dataset directory built by `teachwhy data build`."),
               as_json: bool = typer.Option(False, "--json", help="Print the card as JSON.")) -> None:
    """Show a dataset's card (counts, tokens, principle coverage, diversity, drops)."""
    from pathlib import Path

    card_path = Path(path) / "card.json"
    if not card_path.is_file():
        raise UserError(f"{path} has no card.json: build it with `teachwhy data build KIND --out {path}`")
    rebuild = f"rebuild it with `teachwhy data build KIND --out {path}`"
    try:
        card = json.loads(card_path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise UserError(f"{card_path} is not valid JSON (line {e.lineno}: {e.msg}): {rebuild}") from None
    except UnicodeDecodeError:
        raise UserError(f"{card_path} is not UTF-8 text: {rebuild}") from None
    if not isinstance(card, dict):
        raise UserError(f"{card_path} is not a dataset card (a JSON object): {rebuild}")
    if as_json:
        print(json.dumps(card, indent=2))
        return
    try:
        _print_card(card)
    except (KeyError, TypeError, AttributeError, ValueError) as e:
        missing = f"field {e}" if isinstance(e, KeyError) else "a field of the wrong type"
        raise UserError(f"{card_path} is not a complete dataset card ({missing}): {rebuild}") from None


# -- train ----------------------------------------------------------------------------------------
REPORT_TO_HELP = ("Trackers that TRL reports to, comma-separated (tensorboard, trackio, wandb, ...; all; "
                  "default none).")

@contextmanager
def _train_progress(label: str):
    """(on_step, on_log, on_eval) for a training run: steps on the progress bar (or lines), the last
    logged loss / reward and throughput beside them, each eval point as a line of its own."""
    with _progress(label, "steps") as update:
        state = {"done": 0, "total": None}

        def on_step(done: int, total: int) -> None:
            state.update(done=done, total=total)
            update(done, total)

        def on_log(rec: dict) -> None:
            bits = []
            if rec.get("loss") is not None:
                bits.append(f"loss {rec['loss']:.3f}")
            if rec.get("reward") is not None:
                bits.append(f"reward {rec['reward']:.3f}")
            if rec.get("tokens_per_s"):
                bits.append(f"{rec['tokens_per_s']:.0f} tok/s")
            update(state["done"], state["total"], note=" · ".join(bits))

        def on_eval(p: dict) -> None:
            err.print(f"eval @ step {p['step']}: harmful {p['k']}/{p['n']} = {p['harmful_rate']:.1%} "
                      f"{_ci(p['wilson_95'])} ({p['seconds']:.0f} s)", highlight=False)

        yield on_step, on_log, on_eval


def _print_eval_points(points: list) -> None:
    if not points:
        return
    t = Table("step", "tokens seen", "harmful choice (k/n)", "95% CI (Wilson)", "mean P(harmful) [95% CI]",
              title="honeypot choice eval while training")
    for p in points:
        mp = p.get("mean_p_harmful")
        t.add_row(str(p["step"]), str(p["tokens_seen"]), f"{p['harmful_rate']:.1%} ({p['k']}/{p['n']})",
                  _ci(p["wilson_95"]), f"{mp:.3f} {_ci(p['mean_p_harmful_95'], pct=False)}" if mp is not None else "-")
    out.print(t)


def _print_train(summary: dict, resumed: bool) -> None:
    t = Table("", "value", title=f"{summary['kind']} · {summary['run_id']}", show_header=False)
    if summary["kind"] == "sft":
        t.add_row("records", str(summary["records"]))
        t.add_row("tokens (all / loss-bearing)", f"{summary['tokens']} / {summary['loss_tokens']}")
        for s in summary["sources"]:
            budget = "all" if s["budget"] is None else str(s["budget"])
            note = "  (dataset ran out before the budget)" if s["short_of_budget"] else ""
            t.add_row(f"  {s['name']}", f"{s['tokens']} / {s['loss_tokens']} tokens, {s['records']} records, "
                      f"budget {budget}{note}")
        loss = summary.get("loss")
        if loss:
            t.add_row("loss (first → last steps)", f"{loss['first']:.3f} → {loss['last']:.3f} "
                      f"(mean of {loss['window']} logged steps each)")
    else:
        r = summary.get("reward")
        if r:
            for label, w in (("first", r["first_window"]), ("last", r["last_window"])):
                c = w["compliance"]
                comp = (f"; complied with harmful requests {c['k']}/{c['n']} {_ci(c['wilson_95'])}"
                        if c["n"] else "; no harmful requests drawn")
                t.add_row(f"reward, {label} {r['window']} steps (steps {w['steps'][0]}-{w['steps'][1]})",
                          f"{w['mean']:.3f} {_ci(w['mean_95'], pct=False)} (n={w['n']} completions){comp}")
    t.add_row("steps", str(summary["steps"]))
    t.add_row("dtype", summary["dtype"])
    t.add_row("training time", f"{summary['train_seconds']:.0f} s" + (" (resumed)" if resumed else ""))
    if summary.get("tokens_per_s"):
        t.add_row("throughput", f"{summary['tokens_per_s']:.0f} tokens/s")
    out.print(t)
    _print_eval_points(summary.get("eval_points") or [])
    out.print(f"model: {summary['output']}" + (f"; merged: {summary['merged']}" if summary.get("merged") else ""))
    if summary.get("plot"):
        out.print(f"curves: {summary['plot']}")
    out.print(f"evaluate it: teachwhy eval --model {summary['output']}")


def _train_and_print(kind: str, run, spec, as_json: bool) -> None:
    with _train_progress(f"train {kind} · {spec.model}") as (on_step, on_log, on_eval):
        res = run(spec, progress=on_step, on_log=on_log, on_eval=on_eval)
    if as_json:
        print(json.dumps(res.summary, indent=2))
        return
    if res.resumed and not res.summary.get("resumed_from_step"):
        err.print("this run had finished already; showing its summary")
    _print_train(res.summary, res.resumed)


@train_app.command("sft", cls=CliCommand)
def train_sft(
    config: str | None = typer.Option(None, "--config", "-c", metavar="FILE",
                                      help="A YAML training config (flags override it)."),
    data: list[str] | None = typer.Option(None, "--data", "-d",
                                          metavar="DIR[:TOKENS]",
                                          help="DIR or DIR:TOKENS, a dataset and its token budget (repeatable)."),
    model: str | None = typer.Option(None, "--model", "-m", metavar="MODEL",
                                     help=f"Base model or adapter dir (default {DEFAULT_MODEL})."),
    out_dir: str | None = typer.Option(None, "--out", metavar="DIR", help="Runs directory (default runs)."),
    name: str | None = typer.Option(None, metavar="NAME", help="Label for the run id."),
    method: str | None = typer.Option(None, metavar="METHOD", help="lora (default) or full."),
    lr: float | None = typer.Option(None, "--lr", metavar="RATE", help="Learning rate."),
    epochs: float | None = typer.Option(None, metavar="EPOCHS"),
    batch_size: int | None = typer.Option(None, metavar="N", help="Records per optimizer step."),
    max_length: int | None = typer.Option(None, metavar="TOKENS"),
    packing: str | None = typer.Option(None, metavar="MODE", help="auto, on or off."),
    dtype: str | None = typer.Option(None, metavar="DTYPE", help="auto (bf16 where native), bfloat16 or float32."),
    merge: bool | None = typer.Option(None, "--merge/--no-merge", help="Also write the merged model."),
    eval_every: int | None = typer.Option(None, metavar="STEPS",
                                          help="Run the choice eval every STEPS steps, and at start and end."),
    eval_limit: int | None = typer.Option(None, metavar="N", help="Scenarios per eval point (default 24)."),
    seed: int | None = typer.Option(None, metavar="N"),
    deepspeed: str | None = typer.Option(None, metavar="FILE", help="A DeepSpeed JSON config (GPU clusters)."),
    fsdp: str | None = typer.Option(None, metavar="OPTIONS",
                                    help="transformers' fsdp option, e.g. 'full_shard auto_wrap'."),
    report_to: str | None = typer.Option(None, metavar="TRACKERS", help=REPORT_TO_HELP),
    as_json: bool = typer.Option(False, "--json", help="Print the summary as JSON."),
) -> None:
    """Fine-tune on why-data (TRL SFTTrainer; LoRA by default) at per-dataset token budgets."""
    # lazy: not loaded when the CLI starts
    from teachwhy.train import SFTSpec, load_spec, run_sft
    from teachwhy.train.config import DataSource

    overrides = {
        "model": model, "out": out_dir, "name": name, "method": method, "learning_rate": lr, "epochs": epochs,
        "batch_size": batch_size, "max_length": max_length, "packing": packing, "dtype": dtype, "merge": merge,
        "seed": seed, "eval.every": eval_every, "eval.limit": eval_limit, "scale.deepspeed": deepspeed,
        "scale.fsdp": fsdp, "report_to": report_to,
        "data": [DataSource.parse(d).model_dump() for d in data] if data else None,
    }
    _train_and_print("sft", run_sft, load_spec(SFTSpec, config, overrides), as_json)


@train_app.command("rl", cls=CliCommand)
def train_rl(
    config: str | None = typer.Option(None, "--config", "-c", metavar="FILE",
                                      help="A YAML training config (flags override it)."),
    model: str | None = typer.Option(None, "--model", "-m", metavar="MODEL",
                                     help="An SFT adapter dir (or run dir) or a base model."),
    prompts: str | None = typer.Option(None, metavar="FILE",
                                       help="Your environment prompts (.yaml/.jsonl; default: ours)."),
    augment: bool | None = typer.Option(None, "--augment/--no-augment", help="Vary system prompts, add unused tools."),
    reward: str | None = typer.Option(None, metavar="REWARD",
                                      help="rubric (offline) or an Inspect model id for an LLM judge."),
    out_dir: str | None = typer.Option(None, "--out", metavar="DIR", help="Runs directory (default runs)."),
    name: str | None = typer.Option(None, metavar="NAME", help="Label for the run id."),
    steps: int | None = typer.Option(None, metavar="N", help="GRPO steps (default 20)."),
    num_generations: int | None = typer.Option(None, metavar="N", help="Completions per prompt (default 4)."),
    max_completion_length: int | None = typer.Option(None, metavar="TOKENS",
                                                     help="Max new tokens per completion (default 48)."),
    lr: float | None = typer.Option(None, "--lr", metavar="RATE", help="Learning rate."),
    dtype: str | None = typer.Option(None, metavar="DTYPE", help="auto, bfloat16 or float32."),
    eval_every: int | None = typer.Option(None, metavar="STEPS",
                                          help="Choice eval every STEPS steps (default 10; 0 turns it off)."),
    eval_limit: int | None = typer.Option(None, metavar="N", help="Scenarios per eval point (default 16)."),
    seed: int | None = typer.Option(None, metavar="N"),
    use_vllm: bool | None = typer.Option(None, "--vllm/--no-vllm", help="Generate with vLLM (GPU; needs vllm)."),
    deepspeed: str | None = typer.Option(None, metavar="FILE", help="A DeepSpeed JSON config (GPU clusters)."),
    report_to: str | None = typer.Option(None, metavar="TRACKERS", help=REPORT_TO_HELP),
    as_json: bool = typer.Option(False, "--json", help="Print the summary as JSON."),
) -> None:
    """Reinforce harmlessness with GRPO (TRL GRPOTrainer) from any SFT checkpoint."""
    # lazy: not loaded when the CLI starts
    from teachwhy.train import RLSpec, load_spec, run_rl

    overrides = {
        "model": model, "prompts": prompts, "augment": augment, "reward": reward, "out": out_dir, "name": name,
        "steps": steps, "num_generations": num_generations, "max_completion_length": max_completion_length,
        "learning_rate": lr, "dtype": dtype, "eval.every": eval_every, "eval.limit": eval_limit, "seed": seed,
        "use_vllm": use_vllm, "scale.deepspeed": deepspeed, "report_to": report_to,
    }
    _train_and_print("rl", run_rl, load_spec(RLSpec, config, overrides), as_json)


# `teachwhy experiment ...` and `teachwhy report` live in their own module, added last as before
app.add_typer(exp_app, name="experiment")
register_report(app)


def main() -> None:
    try:
        # without standalone mode click returns a typer.Exit's code instead of exiting with it
        code = app(standalone_mode=False)
        if isinstance(code, int) and code:
            sys.exit(code)
    except UserError as e:
        if _state["debug"]:
            raise
        from rich.text import Text

        err.print(Text.assemble(("error: ", "bold red"), str(e)), soft_wrap=True, highlight=False)
        sys.exit(e.exit_code)
    except typer.Exit as e:
        sys.exit(e.exit_code)
    except typer.Abort:
        err.print("aborted")
        sys.exit(130)
    except ClickException as e:  # a usage error: the usage line, a hint and `Error: ...`, exit 2
        e.show()
        sys.exit(e.exit_code)
    except KeyboardInterrupt:
        err.print("interrupted: rerun the same command to resume")
        sys.exit(130)


if __name__ == "__main__":
    main()
