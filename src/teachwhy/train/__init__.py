"""Training: SFT on why-data and GRPO on harmlessness environments, both on TRL, evaluated while training.

    from teachwhy.train import SFTSpec, run_sft
    result = run_sft(SFTSpec(data=[{"path": "runs/data/reasoning", "tokens": 30_000}]))

Heavy imports (torch, transformers, TRL) happen inside the run functions, so importing this package is cheap.
"""

from __future__ import annotations

from typing import Any

from teachwhy.train.config import DataSource, EvalSpec, RLSpec, SFTSpec, load_spec

__all__ = ["DataSource", "EvalSpec", "RLSpec", "SFTSpec", "load_spec", "run_rl", "run_sft"]


def run_sft(spec: SFTSpec, **kw: Any):
    from teachwhy.train.sft import run_sft as _run

    return _run(spec, **kw)


def run_rl(spec: RLSpec, **kw: Any):
    from teachwhy.train.rl import run_rl as _run

    return _run(spec, **kw)
