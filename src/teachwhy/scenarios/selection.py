"""Which honeypot scenarios a run uses: built-in ones (in a wording bank) or the user's files, narrowed
by split, families and a limit. Shared by every front door that picks scenarios (the eval runner, the
CLI, Inspect tasks, the controls)."""

from __future__ import annotations

from teachwhy.errors import UserError
from teachwhy.scenarios import Scenario, builtin_scenarios, load_scenario_file, select
from teachwhy.scenarios.banks import HOUSE


def load_selection(scenario_files: list[str] | None, split: str | None, family: str | None,
                   limit: int | None, families: list[str] | None = None, wording: str = HOUSE) -> list[Scenario]:
    """The honeypot scenarios asked for. `wording`: the built-in candidates' wording bank
    (scenarios/banks.py: `house`, an eval bank, or `heldout` for every eval bank in turn)."""
    pool: list[Scenario] = []
    if scenario_files:
        if wording != "house":
            raise UserError("--wording picks the built-in scenarios' candidate bank; a scenario file brings its "
                            "own candidates: drop --wording or --scenarios")
        for f in scenario_files:
            pool.extend(load_scenario_file(f))
    elif wording != "house":
        if split not in (None, "eval"):
            raise UserError(f"--wording {wording} scores held-out candidates on the eval split; drop --split "
                            f"{split} (train-split wording is for training material only)")
        split = "eval"
        pool = builtin_scenarios("eval", wording=wording)
    else:
        pool = builtin_scenarios()
    if families:
        from teachwhy.scenarios.schema import FAMILIES

        bad = [f for f in families if f not in FAMILIES]
        if bad:
            raise UserError(f"unknown family '{bad[0]}' in --families: use some of {', '.join(FAMILIES)}")
        pool = [s for s in pool if s.family in families]
        if not pool:
            raise UserError(f"no scenarios of families {', '.join(families)} in the scenarios given")
    return select(pool, split=split, family=family, limit=limit)
