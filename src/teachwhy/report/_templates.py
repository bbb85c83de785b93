"""The report's Jinja environment and its static files (package data under report/templates/)."""

from __future__ import annotations

from functools import lru_cache
from importlib import resources

import jinja2


@lru_cache(maxsize=2)
def environment(autoescape: bool) -> jinja2.Environment:
    return jinja2.Environment(loader=jinja2.PackageLoader("teachwhy.report", "templates"),
                              autoescape=autoescape, undefined=jinja2.StrictUndefined, keep_trailing_newline=True)


def static(name: str) -> str:
    return resources.files("teachwhy.report").joinpath("templates").joinpath(name).read_text(encoding="utf-8")
