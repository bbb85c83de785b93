"""A tiny, randomly initialised model of an embedded model's architecture, for checking mechanics.

It keeps the embedded model's config (architecture, vocabulary, special tokens), tokenizer and chat
template, and shrinks the layer count and widths. Its weights are random (seeded), so it says nothing
about behaviour; it exists so that pipelines can be exercised end to end in seconds: training, resume,
locks, the experiment runner, report building, Inspect plumbing. It is saved as an ordinary Hugging
Face directory and used like any local model (`--model <dir>`). The test suite runs its mechanics
tests on it; `teachwhy models tiny` prints its directory for a user's own smoke tests.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path

from teachwhy.errors import UserError
from teachwhy.models import COMPLETE_RECORD, DEFAULT_MODEL, EMBEDDED, prepare_embedded, teachwhy_home

TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "chat_template.jinja",
                   "generation_config.json")


@dataclass(frozen=True)
class TinyShape:
    """The shrunk sizes; everything else comes from the embedded model's config."""

    layers: int = 2
    hidden: int = 64
    heads: int = 4
    kv_heads: int = 2
    intermediate: int = 128
    seed: int = 0


def tiny_dir(base: str = DEFAULT_MODEL, shape: TinyShape = TinyShape()) -> Path:
    """Where the tiny model of `base` with this shape is cached (a hash of base and shape names it)."""
    key = hashlib.sha256(json.dumps({"base": base, **asdict(shape)}, sort_keys=True).encode()).hexdigest()[:10]
    return teachwhy_home() / "models" / f"{base}-tiny-{key}"


def build_tiny(base: str = DEFAULT_MODEL, shape: TinyShape = TinyShape(), force: bool = False) -> Path:
    """Return the tiny model's directory, building it once (written to a temporary sibling and renamed
    into place, so an interrupted build leaves nothing half-written)."""
    if base not in EMBEDDED:
        raise UserError(f"unknown embedded model '{base}': choose one of {', '.join(EMBEDDED)}")
    if shape.hidden % shape.heads or shape.heads % shape.kv_heads:
        raise UserError(f"tiny model: hidden size {shape.hidden} must be a multiple of its {shape.heads} "
                        f"heads, and {shape.heads} heads a multiple of its {shape.kv_heads} key-value heads: "
                        "pass e.g. --hidden 64")
    d = tiny_dir(base, shape)
    if (d / COMPLETE_RECORD).is_file() and not force:
        return d
    src = prepare_embedded(base)
    d.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{d.name}-", dir=d.parent))
    try:
        import torch
        import transformers
        from transformers import AutoConfig, AutoModelForCausalLM

        cfg = AutoConfig.from_pretrained(src)
        cfg.num_hidden_layers = shape.layers
        cfg.hidden_size = shape.hidden
        cfg.num_attention_heads = shape.heads
        cfg.num_key_value_heads = shape.kv_heads
        cfg.intermediate_size = shape.intermediate
        cfg.head_dim = shape.hidden // shape.heads
        cfg.name_or_path = f"{base}-tiny"
        torch.manual_seed(shape.seed)
        verbosity = transformers.logging.get_verbosity()
        transformers.logging.set_verbosity_error()
        transformers.utils.logging.disable_progress_bar()
        try:
            model = AutoModelForCausalLM.from_config(cfg, dtype=torch.float32)
        finally:
            transformers.logging.set_verbosity(verbosity)
        model.save_pretrained(tmp)
        for name in TOKENIZER_FILES:
            if (src / name).is_file():
                shutil.copy2(src / name, tmp / name)
        files = {p.name: p.stat().st_size for p in tmp.iterdir() if p.is_file()}
        record = {"name": f"{base}-tiny", "base": base, "shape": asdict(shape), "files": files}
        (tmp / COMPLETE_RECORD).write_text(json.dumps(record, indent=2))
        if d.exists() and (d / COMPLETE_RECORD).is_file() and not force:
            shutil.rmtree(tmp)  # another process built it meanwhile (parallel test workers): keep theirs
            return d
        if d.exists():
            shutil.rmtree(d)
        try:
            os.replace(tmp, d)
        except OSError:
            if not (d / COMPLETE_RECORD).is_file():
                raise
            shutil.rmtree(tmp)  # lost the race to another process's complete build
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return d
