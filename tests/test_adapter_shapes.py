"""models.adapter_shape_misfit: an adapter from elsewhere is refused only on a positive mismatch, read
from safetensors headers (real files, written here)."""

from __future__ import annotations

import torch
from safetensors.torch import save_file

from teachwhy.models import adapter_shape_misfit


def _dirs(tmp_path, base: dict, lora: dict):
    b, a = tmp_path / "base", tmp_path / "adapter"
    b.mkdir()
    a.mkdir()
    save_file({k: torch.zeros(s) for k, s in base.items()}, str(b / "model.safetensors"))
    save_file({k: torch.zeros(s) for k, s in lora.items()}, str(a / "adapter_model.safetensors"))
    return a, b


def _lora(module: str, r: int, fin: int, fout: int) -> dict:
    k = f"base_model.model.{module}"
    return {f"{k}.lora_A.weight": (r, fin), f"{k}.lora_B.weight": (fout, r)}


def test_fitting_adapter_passes(tmp_path):
    a, b = _dirs(tmp_path, {"model.layers.0.q.weight": (8, 4)}, _lora("model.layers.0.q", 2, 4, 8))
    assert adapter_shape_misfit(a, b) is None


def test_other_features_are_refused(tmp_path):
    a, b = _dirs(tmp_path, {"model.layers.0.q.weight": (8, 4)}, _lora("model.layers.0.q", 2, 6, 8))
    assert adapter_shape_misfit(a, b) == "model.layers.0.q is [8, 4] in the base; the adapter expects in features 6"


def test_prefixless_checkpoint_and_in_out_weights_fit(tmp_path):
    """GPT-2-style: the checkpoint leaves out `transformer.` and stores Conv1D weights as (in, out)."""
    a, b = _dirs(tmp_path, {"h.0.attn.c_attn.weight": (4, 12)}, _lora("transformer.h.0.attn.c_attn", 2, 4, 12))
    assert adapter_shape_misfit(a, b) is None


def test_missing_module_refused_only_when_the_names_otherwise_match(tmp_path):
    base = {"model.layers.0.q.weight": (8, 4)}
    lora = {**_lora("model.layers.0.q", 2, 4, 8), **_lora("model.layers.0.zzz", 2, 4, 8)}
    a, b = _dirs(tmp_path, base, lora)
    assert adapter_shape_misfit(a, b) == "it adapts model.layers.0.zzz, which the base does not have"
    other = tmp_path / "other"
    other.mkdir()
    a2, b2 = _dirs(other, base, _lora("encoder.block.0.q", 2, 4, 8))  # another naming scheme: cannot tell
    assert adapter_shape_misfit(a2, b2) is None
