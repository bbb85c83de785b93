"""teachwhy: train models that behave well because they learned why."""

__version__ = "0.1.0"

import os as _os

# On a machine shared with other work (TEACHWHY_SHARED=1), torch's OpenMP threads sleep when idle instead
# of spinning: spinning threads take the cores another process needs (teachwhy/threads.py). It is opt-in:
# alone, the passive wait made a choice eval ~15% slower (docs/performance.md, "Shared machines").
# OpenMP reads this once, as torch is first imported, so it is set here, before any module imports torch.
if _os.environ.get("TEACHWHY_SHARED", "").strip() in ("1", "true", "yes"):
    _os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
