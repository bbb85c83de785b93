"""What the command modules (cli.py, cli_experiment.py) share: the rich consoles (`out` for results
on stdout, `err` for progress and messages on stderr), progress for long steps, and the typer app
factory whose commands print their help without typer's `<type>` placeholders."""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

import typer
from rich.console import Console
from typer.core import TyperArgument, TyperCommand, TyperGroup, TyperOption

if TYPE_CHECKING:  # (and its commands take typer._click's contexts and formatters)
    from typer._click import Command, Context, HelpFormatter


# Piped output (logs, CI) gets a wide console so the tables are not folded.
out = Console(width=None if sys.stdout.isatty() else 160)
err = Console(stderr=True)


# -- help without typer's `<type>` placeholders ----------------------------------------------------
# typer prints a `<str>`, `<int>` or `<bool>` column beside every parameter, flags (and --help)
# included. Our help shows a flag as just its name (`--json`, `--merge/--no-merge`), a value option
# with its metavar (`--out DIR`), and an argument by its metavar alone.
_TYPE_METAVARS = {"int": "N", "float": "NUMBER", "str": "TEXT", "Path": "PATH"}


def _argument_type(ctx: Context) -> None:
    return None  # the argument's metavar (its name in the help) says what to give


def _clean_help_params(command: Command, ctx: Context) -> None:
    for p in command.get_params(ctx):
        if isinstance(p, TyperOption):
            if p.is_flag:
                p.metavar = ""
            elif p.metavar is None:
                bare = p.bare_type().removeprefix("list[").removesuffix("]")
                p.metavar = _TYPE_METAVARS.get(bare, "VALUE")
        elif isinstance(p, TyperArgument):
            p.display_type_rich = _argument_type  # type: ignore[method-assign]


class CliCommand(TyperCommand):
    def format_help(self, ctx: Context, formatter: HelpFormatter) -> None:
        _clean_help_params(self, ctx)
        super().format_help(ctx, formatter)


class CliGroup(TyperGroup):
    def format_help(self, ctx: Context, formatter: HelpFormatter) -> None:
        _clean_help_params(self, ctx)
        super().format_help(ctx, formatter)


def new_typer(**kw) -> typer.Typer:
    return typer.Typer(cls=CliGroup, **kw)


# -- progress: a live bar on a terminal, plain lines in a log ---------------------------------------
class ProgressLines:
    """Progress as plain lines, for a stderr that is not a terminal (CI, nohup, a pipe), where a live
    bar shows nothing: `eval choice · smollm2-135m: 12/48 scenarios (25%), 40 s elapsed`. A line is
    written when another tenth of the total is done or `every_s` seconds have passed since the last
    line, whichever comes first, and `finish` writes the last state if no line showed it yet."""

    def __init__(self, label: str, unit: str, write: Callable[[str], None], every_s: float = 10.0,
                 clock: Callable[[], float] = time.monotonic):
        self.label, self.unit, self.write, self.every_s, self.clock = label, unit, write, every_s, clock
        self.t0 = self.last_t = clock()
        self.done, self.note = 0, ""
        self.total: int | None = None
        self.shown_done, self.shown_tenth = 0, 0

    def update(self, done: int, total: int | None = None, note: str | None = None) -> None:
        self.done, self.total = done, total or None
        if note is not None:
            self.note = note
        if done <= self.shown_done:
            return
        tenth = done * 10 // self.total if self.total else 0
        now = self.clock()
        if tenth > self.shown_tenth or now - self.last_t >= self.every_s:
            self._line(now, "elapsed")

    def finish(self) -> None:
        if self.done != self.shown_done:
            self._line(self.clock(), "in all")

    def _line(self, now: float, when: str) -> None:
        of = f"/{self.total} {self.unit} ({self.done / self.total:.0%})" if self.total else f" {self.unit}"
        note = f", {self.note}" if self.note else ""
        self.write(f"{self.label}: {self.done}{of}, {now - self.t0:.0f} s {when}{note}")
        self.shown_done, self.last_t = self.done, now
        self.shown_tenth = self.done * 10 // self.total if self.total else 0


@contextmanager
def progress(label: str, unit: str, total: int | None = None) -> Iterator[Callable[..., None]]:
    """update(done, total=None, note=None) for a long step: a rich bar on stderr when stderr is a
    terminal, else ProgressLines on stderr (stdout stays for results, e.g. --json)."""
    if not err.is_terminal:
        lines = ProgressLines(label, unit, lambda text: err.print(text, markup=False, highlight=False,
                                                                  soft_wrap=True))
        yield lines.update
        lines.finish()
        return
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  TimeRemainingColumn(), TextColumn("{task.fields[note]}"), console=err, transient=True) as prog:
        task = prog.add_task(label, total=total, note="")

        def update(done: int, total: int | None = None, note: str | None = None) -> None:
            if note is None:
                prog.update(task, completed=done, total=total or None)
            else:
                prog.update(task, completed=done, total=total or None, note=note)

        yield update
