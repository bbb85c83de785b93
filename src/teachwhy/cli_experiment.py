"""`teachwhy experiment run|status|analyse SPEC` and `teachwhy report EXP_DIR`: thin over
teachwhy.experiments. cli.py adds `exp_app` as `teachwhy experiment` and calls `register_report` for
the top-level `report` command; this module never imports cli.py."""

from __future__ import annotations

import json
from pathlib import Path

import typer
from rich.table import Table

from teachwhy.console import CliCommand, err, new_typer, out, progress
from teachwhy.errors import UserError

exp_app = new_typer(no_args_is_help=True, help="Experiments: arms x budgets x seeds, analysis and report.")

SPEC_ARG = typer.Argument(..., help="The experiment's YAML spec (docs/experiments.md).")


def _load(spec_path: str):
    # lazy: not loaded when the CLI starts
    from teachwhy.experiments.spec import load_experiment

    return load_experiment(spec_path)


def _fmt_s(s: float | None) -> str:
    if s is None:
        return "-"
    return f"{s / 3600:.1f} h" if s >= 5400 else f"{s / 60:.0f} min" if s >= 90 else f"{s:.0f} s"


def _status_table(st: dict) -> Table:
    t = Table("cell", "arm", "budget", "seed", "stage", "state", "time",
              title=f"{st['done']}/{st['total']} cells done; ETA {_fmt_s(st['eta_seconds'])}")
    colour = {"done": "green", "running": "cyan", "failed": "red", "interrupted": "yellow", "to do": "dim"}
    for r in st["cells"]:
        state = f"[{colour[r['state']]}]{r['state']}[/]"
        if r["error"]:
            state += f" ({r['error']})"
        t.add_row(r["cell"], r["arm"], str(r["budget"] or "-"), str(r["seed"]), r["stage"], state,
                  _fmt_s(r["seconds"]))
    return t


def print_results(analysis: dict, report: dict | None = None, exp_dir: str | None = None) -> None:
    """The experiment's results in the terminal (render.experiment over the typed analysis)."""
    from teachwhy import render
    from teachwhy.results import ExperimentAnalysis

    render.experiment(ExperimentAnalysis.model_validate(analysis), report["html"] if report else None, exp_dir)


@exp_app.command("run", cls=CliCommand)
def experiment_run(spec_path: str = SPEC_ARG,
                   no_report: bool = typer.Option(False, "--no-report", help="Skip the analysis and report."),
                   ray: bool = typer.Option(False, "--ray", help=(
                       "Run the cells as Ray tasks, one cell per task with the spec's `resources`, on a local "
                       "cluster (RAY_ADDRESS, one started here with `ray start`, else a new one for this run). "
                       "Needs pip install 'teachwhy\\[ray]'.")),
                   ray_address: str | None = typer.Option(None, "--ray-address", metavar="ADDRESS", help=(
                       "Attach to this Ray cluster (HOST:PORT of its head, or ray://...); implies --ray. "
                       "Several machines need the working directory and `out` on shared storage."))) -> None:
    """Run every cell not done yet (each resumable), then analyse and write the report."""
    # lazy: not loaded when the CLI starts
    from teachwhy.experiments.analysis import analyse_experiment
    from teachwhy.experiments.runner import plan, run_experiment

    if ray or ray_address:
        # lazy: not loaded when the CLI starts
        from teachwhy.experiments.distributed import import_ray

        import_ray()  # before any work: one line if Ray is missing
    spec = _load(spec_path)
    cells = plan(spec)
    done = {"n": 0}
    with progress(f"experiment {spec.name}", "cells", len(cells)) as update:
        def on_cell(cell, state, info):
            if state in ("done", "skipped", "failed"):
                done["n"] += 1
            if state == "failed":
                err.print(f"[red]cell {cell.cell_id} failed:[/] {info['error']}", highlight=False)
            update(done["n"], len(cells), note=f"{cell.cell_id}: {state}")

        def log(m):
            update(done["n"], len(cells), note=m)

        if ray or ray_address:
            # lazy: not loaded when the CLI starts
            from teachwhy.experiments.distributed import run_experiment_ray

            res = run_experiment_ray(spec, address=ray_address, on_cell=on_cell, log=log)
        else:
            res = run_experiment(spec, on_cell=on_cell, log=log)
    if res["failed"] and len(res["failed"]) == len(cells):
        raise UserError(f"every cell failed; the first: {res['failed'][0][1]}")
    if not no_report:
        a = analyse_experiment(spec)
        print_results(a["analysis"], a["report"], a["dir"])
    if res["failed"]:
        err.print(f"{len(res['failed'])} cell(s) failed; fix the cause and rerun to retry them "
                  f"(`teachwhy experiment status {spec_path}` lists them)", highlight=False)
        raise typer.Exit(1)


@exp_app.command("status", cls=CliCommand)
def experiment_status(spec_path: str = SPEC_ARG,
                      as_json: bool = typer.Option(False, "--json", help="Print the grid as JSON.")) -> None:
    """The grid: done / running / failed / to do per cell, with an ETA from the cells done so far."""
    # lazy: not loaded when the CLI starts
    from teachwhy.experiments.runner import status

    st = status(_load(spec_path))
    if as_json:
        out.print_json(json.dumps(st))
        return
    out.print(_status_table(st))


@exp_app.command("analyse", cls=CliCommand)
def experiment_analyse(spec_path: str = SPEC_ARG,
                       replicates: int = typer.Option(2000, help="Bootstrap replicates."),
                       seed: int = typer.Option(0, help="Bootstrap seed.")) -> None:
    """Analyse the cells finished so far and write analysis.json, report.html and report.md."""
    # lazy: not loaded when the CLI starts
    from teachwhy.experiments.analysis import analyse_experiment

    a = analyse_experiment(_load(spec_path), seed=seed, replicates=replicates)
    print_results(a["analysis"], a["report"], a["dir"])


def register_report(app: typer.Typer) -> None:
    """Add `teachwhy report` to the top-level app."""
    app.command("report", cls=CliCommand)(report)


def report(exp_dir: Path = typer.Argument(..., help="An experiment directory (runs/experiments/<name>)."),
           replicates: int = typer.Option(2000, help="Bootstrap replicates.")) -> None:
    """Write report.html (self-contained) and report.md for an experiment directory."""
    # lazy: not loaded when the CLI starts
    from pydantic import ValidationError

    from teachwhy.experiments.analysis import analyse_experiment
    from teachwhy.experiments.spec import ExperimentSpec

    spec_file = exp_dir / "spec.json"
    if not spec_file.is_file():
        raise UserError(f"{exp_dir} is not an experiment directory (no spec.json): give "
                        "runs/experiments/<name>, written by `teachwhy experiment run`")
    try:
        spec = ExperimentSpec.model_validate(json.loads(spec_file.read_text()))
    except (ValueError, ValidationError) as e:
        raise UserError(f"{spec_file} is not a valid experiment spec ({type(e).__name__}): rerun "
                        "`teachwhy experiment run` on the YAML spec") from None
    # the spec's `out` is where its runs are; an experiment directory that moved keeps them beside it
    spec = spec.model_copy(update={"out": str(exp_dir.resolve().parent.parent)})
    a = analyse_experiment(spec, replicates=replicates)
    print_results(a["analysis"], a["report"], a["dir"])
