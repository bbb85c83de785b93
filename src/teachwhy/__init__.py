"""teachwhy: train models that behave well because they learned why."""

__version__ = "0.1.0"

import os as _os

# torch's OpenMP threads sleep when idle instead of spinning for a while: on a machine another process
# shares, spinning threads take the cores that process needs (teachwhy/threads.py). OpenMP reads this
# once, as torch is first imported, so it is set here, before any teachwhy module imports torch.
_os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
