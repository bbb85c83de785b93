"""What teachwhy registers with Inspect AI (the package's `inspect_ai` entry point).

- the model API `teachwhy/<spec>`: local models (the embedded model, a Hugging Face directory, a
  PEFT adapter) generating inside Inspect (teachwhy.inspect_local);
- the tasks `teachwhy/agentic`, `teachwhy/adherence` and `teachwhy/audit`, for `inspect eval` and
  `inspect eval-set` (teachwhy.evals.tasks).
"""

from teachwhy import inspect_local  # noqa: F401
from teachwhy.evals.tasks import adherence, agentic, audit  # noqa: F401
