"""Which engine runs a local model in an eval: `hf` (transformers/PEFT, any machine; the default) or
`vllm` (vLLM, GPU machines).

- choice mode: `open_choice_backend` returns the scoring backend (choice.HFChoiceBackend or
  vllm_backend.VLLMChoiceBackend); both give the same CandidateScore fields from the same token ids.
- generate mode: `generate_model_id` names the Inspect model the samples come from: teachwhy's own
  `teachwhy/<spec>` (hf) or Inspect's `vllm/<model dir>[:<adapter dir>]` provider (vllm).

Nothing here imports vllm: `require_vllm` (from vllm_backend.py, which sits below this module) only
looks for the package, so a machine without it gets one line before any run directory is written.
"""

from __future__ import annotations

from teachwhy import models
from teachwhy.errors import UserError
from teachwhy.evals.choice import ChoiceBackend, HFChoiceBackend
from teachwhy.evals.vllm_backend import VLLMChoiceBackend, require_vllm

BACKENDS = ("hf", "vllm")
DEFAULT_BACKEND = "hf"


def check_backend(backend: str) -> str:
    """The backend's name, or a one-line UserError for an unknown one."""
    if backend not in BACKENDS:
        raise UserError(f"unknown backend '{backend}': choose one of {', '.join(BACKENDS)}")
    return backend


def check_backend_for(ref: models.ModelRef, backend: str) -> None:
    """Before anything is written: the backend is known, fits the model, and can run here."""
    check_backend(backend)
    if backend == "hf":
        return
    if not ref.is_local:
        raise UserError(f"--backend {backend} applies to local models; '{ref.spec}' is an Inspect model id, "
                        "served by its own provider: drop --backend (or pass vllm/<model> as the model)")
    require_vllm()


def open_choice_backend(model: str, dtype: str = models.DEFAULT_DTYPE, backend: str = DEFAULT_BACKEND) -> ChoiceBackend:
    """Load a local model (embedded name, HF directory or PEFT adapter) for choice-mode scoring."""
    check_backend(backend)
    if backend == "vllm":
        return VLLMChoiceBackend.open(model, dtype=dtype)
    loaded = models.load(model, dtype=dtype)
    return HFChoiceBackend(loaded.model, loaded.tokenizer, name=model)


def generate_model_id(ref: models.ModelRef, backend: str = DEFAULT_BACKEND) -> str:
    """The Inspect model id generate mode samples from. An Inspect id is used as given; a local model
    is `teachwhy/<spec>` under hf, and under vllm Inspect's vLLM provider on the model's directory,
    a PEFT adapter as `vllm/<base dir>:<adapter dir>` (served as a LoRA, not merged)."""
    if ref.inspect_id is not None:
        return ref.inspect_id
    if backend == "hf":
        return f"teachwhy/{ref.spec}"
    if ref.kind == "peft":
        assert ref.path is not None and ref.base is not None  # resolve() sets both for an adapter
        base, adapter = models.model_dir(ref.base).resolve(), ref.path.resolve()
    else:
        base, adapter = models.model_dir(ref).resolve(), None
    if ":" in str(base):
        # Inspect splits `vllm/<base>:<adapter>` at the first colon
        raise UserError(f"model directory {base} has a ':' in its path, which Inspect's vllm provider reads as "
                        "the start of an adapter: move or link it to a path without one, or use --backend hf")
    return f"vllm/{base}" + (f":{adapter}" if adapter is not None else "")
